#!/usr/bin/env bash
# Guest side of the verbs suite: rxe0/rxe1 over a veth pair, then each test executable given as an
# argument with its ignored (device) tests, then ib_write_lat as the baseline.
set -uo pipefail
repo=$(pwd)
"$repo/tools/softroce/setup-rxe.sh" --pair > /tmp/rxe-setup.log 2>&1 || { cat /tmp/rxe-setup.log; exit 1; }
export DECREE_RDMA_DEV_A=rxe0 DECREE_RDMA_DEV_B=rxe1 RUST_BACKTRACE=1
# Device-DAX on the NVDIMM (run-guest.sh -n): the RDMA-target log on pmem.
. "$repo/ci/guest/nvdimm.sh"
if nvdimm_load 2>/dev/null && DECREE_DEVDAX=$(nvdimm_devdax 2>/dev/null); then
  export DECREE_DEVDAX; echo "device-DAX: $DECREE_DEVDAX"
else
  echo "FAILED: no device-DAX namespace (was the guest given -n IMG?)"; fail_devdax=1
fi
fail=${fail_devdax:-0}
for bin in "$@"; do
  echo "--- $(basename "$bin") --ignored"
  "$bin" --ignored --test-threads=1 || { echo "FAILED: $bin"; fail=1; }
done
echo "--- baseline"
"$repo/ci/guest/ib-write-lat.sh" "${IB_ITERS:-1000}" 64 | tail -3 || fail=1
exit $fail
