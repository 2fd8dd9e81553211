#!/usr/bin/env bash
# make trace-commit: where a one-client put's time goes on this host. Runs `decree-bench run
# --clients 1` (tcp, file log, no peer), records TRACE_MS of the sendto/recvfrom, log write and
# sync tracepoints on every CPU in the middle of its measured seconds, and has `decree-bench
# commit-trace` follow each put through them: the four one-way hops, each replica's log write and
# sync, the replicas' CPU between those calls. The run's own baselines are printed beside it.
# Needs perf (Debian: linux-perf) and the right to trace (root). Tracing slows every syscall by a
# microsecond or so: compare segments with each other, not the total with an untraced run.
# Env: TRACE_MS (30), TRACE_ROUNDS (1), TRACE_ARGS (extra `decree-bench run` flags).
set -euo pipefail
cd "$(dirname "$0")/.."
: "${CARGO_TARGET_DIR:=$PWD/target}"
export CARGO_TARGET_DIR
command -v perf >/dev/null || { echo "trace-commit: perf is not installed (Debian: apt-get install linux-perf)" >&2; exit 1; }
cargo build --release -q -p decree-tools -p decree-bench
bin=$CARGO_TARGET_DIR/release/decree-bench
out=$CARGO_TARGET_DIR/trace-commit
mkdir -p "$out"
events=()
for call in sendto recvfrom pwritev pwritev2 pwrite64 fdatasync fsync; do
  events+=(-e "syscalls:sys_enter_$call" -e "syscalls:sys_exit_$call")
done
seconds=$(awk "BEGIN { print ${TRACE_MS:-30} / 1000 }")
for round in $(seq 1 "${TRACE_ROUNDS:-1}"); do
  log=$out/bench-$round.txt
  # shellcheck disable=SC2086
  "$bin" run --clients 1 --duration-s 4 --warmup-s 1 --peer none --out "$out/results" \
    --decree-bin "$CARGO_TARGET_DIR/release/decree" ${TRACE_ARGS:-} >"$log" 2>&1 &
  bench=$!
  # Progress prints once a second from the start of the warm-up: second 2 is measured load.
  until grep -q "\[decree 1 clients\] *2/" "$log"; do
    kill -0 "$bench" 2>/dev/null || { cat "$log" >&2; echo "trace-commit: the benchmark ended early" >&2; exit 1; }
    sleep 0.1
  done
  perf record -a -q -o "$out/trace-$round.data" "${events[@]}" -- sleep "$seconds"
  wait "$bench"
  echo "== round $round: the benchmark (untraced but for ${TRACE_MS:-30} ms)"
  grep -m1 -E "^ decree +closed" "$log" || true
  grep -E "tcp loopback|write\+fdatasync|writers released|one-client commit floor" "$log" || true
  perf script --ns -i "$out/trace-$round.data" -F comm,pid,tid,time,event,trace >"$out/trace-$round.txt" 2>/dev/null
  "$bin" commit-trace --perf-script "$out/trace-$round.txt"
done
