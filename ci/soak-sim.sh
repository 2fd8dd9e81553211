#!/usr/bin/env bash
# Long simulation soak: SOAK_SEEDS seeds (default 200,000) past the ones make test runs.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p decree-tools
./target/release/decree sim --start 20000 --seeds "${SOAK_SEEDS:-200000}" --jobs "${SIM_JOBS:-2}"
