#!/usr/bin/env bash
# Guest side of the verbs suite: rxe0/rxe1 over a veth pair, then each test executable given as an
# argument with its ignored (device) tests, then ib_write_lat as the baseline.
set -uo pipefail
repo=$(pwd)
"$repo/tools/softroce/setup-rxe.sh" --pair > /tmp/rxe-setup.log 2>&1 || { cat /tmp/rxe-setup.log; exit 1; }
export DECREE_RDMA_DEV_A=rxe0 DECREE_RDMA_DEV_B=rxe1 DECREE_RDMA_GID_INDEX=1 RUST_BACKTRACE=1
fail=0
for bin in "$@"; do
  echo "--- $(basename "$bin") --ignored"
  "$bin" --ignored --test-threads=1 || { echo "FAILED: $bin"; fail=1; }
done
echo "--- baseline"
"$repo/ci/guest/ib-write-lat.sh" "${IB_ITERS:-1000}" 64 | tail -3 || fail=1
exit $fail
