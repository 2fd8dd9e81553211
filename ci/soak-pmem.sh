#!/usr/bin/env bash
# make soak (pmem part): thousands of kill -9 crash iterations over every file strategy, and the
# recovery property tests with many more cases.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/.."
ITERATIONS=${PMEM_SOAK_ITERATIONS:-5000} MAX_KILL_MS=${MAX_KILL_MS:-60} bash "$here/test-crash.sh"
PROPTEST_CASES=${PMEM_SOAK_CASES:-5000} cargo nextest run --profile soak -p decree-pmem --release --test recovery_props --test model_props
