#!/usr/bin/env bash
# Host side of the verbs suite: builds decree-verbs' tests with --features rdma on the host, then
# in one guest sets up rxe0/rxe1 and runs the device tests (#[ignore]d on hosts without rxe) and
# perftest's ib_write_lat baseline. Exit 0 iff every test and the baseline passed.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/common.sh"
cd "$here/../.."
bins=$("$here/test-binaries.sh" decree-verbs --features rdma 2>/tmp/decree-verbs-build.$$.log) \
  || { cat /tmp/decree-verbs-build.$$.log; rm -f /tmp/decree-verbs-build.$$.log; exit 1; }
rm -f /tmp/decree-verbs-build.$$.log
[ -n "$bins" ] || { echo "host-verbs-rdma: no test executables built"; exit 1; }
# An NVDIMM for the device-DAX registration test; fresh each run (the namespace is re-made).
img=$DECREE_GUEST_DIR/verbs-devdax.img
rm -f "$img"
# shellcheck disable=SC2086
"$here/run-guest.sh" -q -m 512M -t "${DECREE_GUEST_TIMEOUT:-300}" -n "$img" -N 256M -f "$here/suite-verbs-rdma.sh" -- $bins
rc=$?
rm -f "$img"
log=$(ls -td "$DECREE_GUEST_DIR"/runs/*/ | head -1)log
grep -E "^(test |test result|---|FAILED|baseline)" "$log" || true
exit $rc
