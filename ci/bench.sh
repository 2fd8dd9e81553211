#!/usr/bin/env bash
# make bench: a 3-replica decree cluster on loopback (tcp, file log under the checkout's
# .decree-data, not a possibly-tmpfs /tmp), closed-loop puts at several client counts, each beside
# the raw baselines measured in the same run (loopback TCP and cache-line round trips, fdatasync in
# the log's directory); etcd side by side when it is installed (`make bench-peers` installs it);
# then instructions per committed operation under callgrind.
# Env: BENCH_CLIENTS (1,4,16,64,256), BENCH_SECONDS (10), BENCH_WARMUP (2), BENCH_PAYLOAD (64),
# BENCH_RATE (open loop, ops/s), BENCH_PEER (etcd|none), BENCH_OUT (target-bench/results),
# BENCH_CALLGRIND (1; 0 skips), BENCH_CALLGRIND_OPS (20000), BENCH_RUNS (1: whole runs, then a
# summary of each point's median and each target's met count), BENCH_ARGS (passed through).
set -euo pipefail
cd "$(dirname "$0")/.."
: "${CARGO_TARGET_DIR:=$PWD/target}"
export CARGO_TARGET_DIR
echo "== building decree and decree-bench (release)"
cargo build --release -q -p decree-tools -p decree-bench
bin=$CARGO_TARGET_DIR/release/decree-bench
echo "== host: $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg) (numbers are noisy while the machine is shared)"
rate=()
[ -n "${BENCH_RATE:-}" ] && rate=(--rate "$BENCH_RATE")
# shellcheck disable=SC2086
"$bin" run --clients "${BENCH_CLIENTS:-1,4,16,64,256}" --duration-s "${BENCH_SECONDS:-10}" \
  --warmup-s "${BENCH_WARMUP:-2}" --payload-bytes "${BENCH_PAYLOAD:-64}" --peer "${BENCH_PEER:-etcd}" \
  --runs "${BENCH_RUNS:-1}" --out "${BENCH_OUT:-$CARGO_TARGET_DIR/results}" \
  --decree-bin "$CARGO_TARGET_DIR/release/decree" "${rate[@]}" ${BENCH_ARGS:-}
if [ "${BENCH_CALLGRIND:-1}" = 1 ]; then
  if command -v valgrind >/dev/null; then
    echo "== callgrind: instructions per committed operation (deterministic, in-process)"
    "$bin" callgrind --ops "${BENCH_CALLGRIND_OPS:-20000}" --out "$CARGO_TARGET_DIR/callgrind"
  else
    echo "== callgrind: skipped (valgrind not installed; make deps installs it)"
  fi
fi
