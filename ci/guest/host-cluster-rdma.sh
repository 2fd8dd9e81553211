#!/usr/bin/env bash
# Host side of the rdma cluster suite: builds `decree` with --features rdma on the host, then in
# one guest runs three replicas replicating over rxe with clients checking their writes
# (suite-cluster-rdma.sh). Exit 0 iff the guest suite passed.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/common.sh"
cd "$here/../.."
cargo build --release -q -p decree-tools --features rdma || { echo "host-cluster-rdma: build failed"; exit 1; }
decree=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release/decree
out=$("$here/run-guest.sh" -q -m 768M -t "${DECREE_GUEST_TIMEOUT:-400}" -f "$here/suite-cluster-rdma.sh" -- "$decree")
rc=$?
echo "$out"
# This run's console log (not the newest run's: another guest may have started since).
log=$(echo "$out" | sed -n 's/^host: run dir //p' | head -1)/log
grep -E "^(leader|new leader|FAILED|20 writes|every acknowledged|---|  (operations|throughput|latency))|^r[0-9][ :]" "$log" || true
exit $rc
