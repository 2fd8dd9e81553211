#!/usr/bin/env bash
# Unit, property and in-process integration tests of every crate (default features).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo nextest run --workspace --no-fail-fast
