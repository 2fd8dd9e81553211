#!/usr/bin/env bash
# make bench-pmem: durable append latency per backend and payload size beside the raw medium cost
# (fdatasync, cache-line write-back + sfence) measured in the same run, and group-commit throughput.
# BENCH_DIR picks the filesystem (default: system temp dir); BENCH_DAX_DIR adds the dax backend.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo bench -q -p decree-pmem --bench append
