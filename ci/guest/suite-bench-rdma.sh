#!/usr/bin/env bash
# Guest half of `make bench-verbs`'s rdma row: ib_write_lat first (the baseline), then the
# transport's own benchmark on the same devices, given the baseline's typical latency.
set -uo pipefail
bin=$1; iters=$2
tools/softroce/setup-rxe.sh --pair > /dev/null || exit 1
out=$(ci/guest/ib-write-lat.sh "$iters" 64 2>&1)
echo "$out" | tail -4
base=$(echo "$out" | sed -n 's/.*t_typical_us=\([0-9.]*\).*/\1/p')
[ -n "$base" ] || { echo "no ib_write_lat baseline:"; echo "$out" | tail -20; exit 1; }
DECREE_RDMA_DEV_A=rxe0 DECREE_RDMA_DEV_B=rxe1 "$bin" rdma "$iters" --baseline-us "$base"
