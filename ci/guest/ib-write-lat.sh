#!/usr/bin/env bash
# Guest: perftest's ib_write_lat between rxe0 (server) and rxe1 (client) over the --pair set-up,
# the raw baseline for the rdma transport. Usage: ib-write-lat.sh [ITERS] [SIZE_BYTES]
# Prints perftest's table and a line "baseline ib_write_lat size=S t_typical_us=X" on success.
set -uo pipefail
iters=${1:-1000}; size=${2:-64}
rdma link show rxe1/1 >/dev/null 2>&1 || "$(dirname "$0")/../../tools/softroce/setup-rxe.sh" --pair >/dev/null
timeout 120 ib_write_lat -d rxe0 -x 1 -F -s "$size" -n "$iters" > /tmp/ib_write_lat.srv 2>&1 & srv=$!
out=""; rc=1
for _ in $(seq 30); do  # the server takes a while to listen under TCG: retry the connect
  sleep 0.5
  out=$(timeout 120 ib_write_lat -d rxe1 -x 1 -F -s "$size" -n "$iters" 10.0.0.1 2>&1); rc=$?
  echo "$out" | grep -q "Couldn't connect" || break
done
wait $srv; srv_rc=$?
echo "$out"
[ $rc = 0 ] && [ $srv_rc = 0 ] || { echo "ib_write_lat failed: client rc=$rc server rc=$srv_rc"; cat /tmp/ib_write_lat.srv; exit 1; }
# columns: #bytes #iterations t_min t_max t_typical t_avg t_stdev 99% 99.9%
echo "$out" | awk -v s="$size" '$1==s && NF>=9 {print "baseline ib_write_lat size=" $1 " t_typical_us=" $5 " t_avg_us=" $6 " t_99_us=" $8; found=1} END{exit !found}'
