#!/usr/bin/env bash
# Host side of the verbs suite: builds decree-verbs' tests with --features rdma on the host, then
# in one guest sets up rxe0/rxe1 and runs the device tests (#[ignore]d on hosts without rxe) and
# perftest's ib_write_lat baseline. Exit 0 iff every test and the baseline passed.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/../.."
bins=$("$here/test-binaries.sh" decree-verbs --features rdma 2>/tmp/decree-verbs-build.$$.log) \
  || { cat /tmp/decree-verbs-build.$$.log; rm -f /tmp/decree-verbs-build.$$.log; exit 1; }
rm -f /tmp/decree-verbs-build.$$.log
[ -n "$bins" ] || { echo "host-verbs-rdma: no test executables built"; exit 1; }
# shellcheck disable=SC2086
exec "$here/run-guest.sh" -m 512M -t "${DECREE_GUEST_TIMEOUT:-300}" -f "$here/suite-verbs-rdma.sh" -- $bins
