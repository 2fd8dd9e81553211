#!/usr/bin/env bash
# Guest side: a 3-replica decree cluster replicating over soft-RoCE. rxe0/rxe1 over a veth pair;
# r0 and r2 on rxe0 (10.0.0.1), r1 on rxe1 (10.0.0.2); Accepts travel as RDMA WRITE_WITH_IMM into
# the peers' registered mailboxes. Clients write and read back keys, a short benchmark runs, then
# the leader is killed and the survivors must keep serving every acknowledged write.
# Usage (in the guest): suite-cluster-rdma.sh DECREE_BINARY
set -uo pipefail
repo=$(pwd); decree=$1
"$repo/tools/softroce/setup-rxe.sh" --pair > /tmp/rxe-setup.log 2>&1 || { cat /tmp/rxe-setup.log; exit 1; }
dir=/tmp/rdma-cluster; rm -rf "$dir"; mkdir -p "$dir"
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$dir/secret"; chmod 600 "$dir/secret"
ips=(10.0.0.1 10.0.0.2 10.0.0.1); devs=(rxe0 rxe1 rxe0)
addrs="${ips[0]}:7400,${ips[1]}:7401,${ips[2]}:7402"
for i in 0 1 2; do
  cat > "$dir/r$i.toml" <<TOML
id = $i
data_dir = "r$i"
secret_file = "secret"
[[members]]
id = 0
addr = "${ips[0]}:7400"
[[members]]
id = 1
addr = "${ips[1]}:7401"
[[members]]
id = 2
addr = "${ips[2]}:7402"
[log]
size_mib = 64
[transport]
kind = "rdma"
rdma_device = "${devs[$i]}"
mailbox_mib = 4
[timeouts]
# TCG runs every instruction in software: generous timers, so elections settle.
heartbeat_interval_ms = 100
election_timeout_min_ms = 1500
election_timeout_max_ms = 3000
tick_ms = 10
[placement]
pin = false
TOML
done
pids=()
for i in 0 1 2; do
  RUST_LOG=info "$decree" replica --config "$dir/r$i.toml" > "$dir/r$i.log" 2>&1 &
  pids+=($!)
done
fail=0
cli() { "$decree" "$@" --addrs "$addrs" --secret-file "$dir/secret"; }
leader() { for i in 0 1 2; do "$decree" status --addrs "${ips[$i]}:740$i" --secret-file "$dir/secret" 2>/dev/null | grep -q "^leader: r$i" && echo $i && return; done; }
wait_leader() {
  for _ in $(seq 120); do l=$(leader); [ -n "$l" ] && [ "$l" != "${1:-}" ] && echo "$l" && return 0; sleep 0.5; done; return 1; }
if l=$(wait_leader); then echo "leader: r$l"; else echo "FAILED: no leader within 60 s"; fail=1; fi
if [ $fail = 0 ]; then
  for k in $(seq 1 20); do cli put "k$k" "v$k" >/dev/null || { echo "FAILED: put k$k"; fail=1; }; done
  for k in $(seq 1 20); do [ "$(cli get "k$k")" = "v$k" ] || { echo "FAILED: get k$k"; fail=1; }; done
  [ $fail = 0 ] && echo "20 writes acknowledged and read back over rdma"
  echo "--- decree bench over rdma (TCG: functional, not performance)"
  cli bench --duration-s 5 --clients 2 --no-baseline || { echo "FAILED: bench"; fail=1; }
  "$decree" status --addrs "$addrs" --secret-file "$dir/secret" 2>/dev/null | head -5
  for i in 0 1 2; do
    grep -q 'replicating with one-sided writes transport="rdma"' "$dir/r$i.log" || { echo "FAILED: r$i did not start the rdma transport"; fail=1; }
    [ "$(grep -c "linked to peer's mailbox" "$dir/r$i.log")" -ge 2 ] || { echo "FAILED: r$i did not link to both peers"; fail=1; }
  done
  echo "--- kill -9 the leader r$l"
  kill -9 "${pids[$l]}"
  if l2=$(wait_leader "$l"); then
    echo "new leader: r$l2"
    for k in $(seq 1 20); do [ "$(cli get "k$k")" = "v$k" ] || { echo "FAILED: k$k lost after the leader was killed"; fail=1; }; done
    cli put after-kill yes >/dev/null && [ "$(cli get after-kill)" = yes ] || { echo "FAILED: no writes after the kill"; fail=1; }
    [ $fail = 0 ] && echo "every acknowledged write survived the leader's kill; writes continue on r$l2"
  else
    echo "FAILED: no new leader after killing r$l"; fail=1
  fi
fi
kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null
# The survivors stopped gracefully and logged their transport totals: as followers they must have
# read Accepts out of their mailboxes, i.e. the log really travelled by one-sided RDMA writes.
for i in 0 1 2; do
  [ "$i" = "${l:-x}" ] && continue
  totals=$(grep 'one-sided transport stopped' "$dir/r$i.log" | sed 's/.*transport="rdma" //')
  echo "r$i: $totals"
  received=$(echo "$totals" | sed -n 's/.*received=\([0-9]*\).*/\1/p')
  [ "${received:-0}" -gt 0 ] || { echo "FAILED: r$i read no frame from its mailbox"; fail=1; }
done
if [ $fail != 0 ]; then for i in 0 1 2; do echo "--- r$i.log"; tail -30 "$dir/r$i.log"; done; fi
exit $fail
