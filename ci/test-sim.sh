#!/usr/bin/env bash
# Deterministic simulation: SIM_SEEDS seeds (default 20,000) on both cores. A failure prints the
# seed and the command that replays it.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p decree-tools
./target/release/decree sim --seeds "${SIM_SEEDS:-20000}" --jobs "${SIM_JOBS:-2}"
