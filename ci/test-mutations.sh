#!/usr/bin/env bash
# Mutation check: deliberately broken protocol variants must each be caught by the simulator.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --release -q -p decree-engine --features mutations --test mutations -- --nocapture --test-threads 2
