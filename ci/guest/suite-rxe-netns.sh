#!/usr/bin/env bash
# Guest side of the rxe-across-network-namespaces check ("one container per replica").
# Three namespaces replica0..2, each with eth0 (veth) on a bridge br0 in the initial namespace,
# 10.1.0.1-3/24, and its own soft-RoCE device rxensN added inside it (`rdma link add rxensN type
# rxe netdev eth0` run in the namespace). Then perftest between namespaces, each run bounded:
#   ib_write_lat  replica1/rxens1 -> replica0/rxens0
#   ib_send_lat   replica2/rxens2 -> replica1/rxens1
# Control (shared mode only): the same namespaces, but the rxe devices rxe0/rxe1 live in the initial
# namespace on a veth pair (tools/softroce/setup-rxe.sh --pair); only perftest's TCP exchange
# crosses namespaces. It separates "rxe cannot cross namespaces" from "rxe/perftest broken here".
#
# Env: RXE_NETNS_MODE=shared|exclusive (default shared; exclusive loads ib_core netns_mode=0, which
#      must happen before any namespace exists, then tries `rdma dev set rxensN netns replicaN`);
#      RXE_NETNS_ITERS (default 200).
# Prints "rxe-netns: kernel=... mode=... per-namespace=PASS|FAIL control=PASS|FAIL|skipped".
# Exit: 0 RDMA traffic flowed between every namespace pair; 1 it did not (the control passed or
#       was skipped); 2 the control failed too (the guest set-up itself is broken).
set -uo pipefail
repo=$(pwd)
mode=${RXE_NETNS_MODE:-shared}; iters=${RXE_NETNS_ITERS:-200}
kver=$(uname -r)
echo "rxe-netns: kernel $kver, rdma netns mode wanted: $mode"
modprobe veth && modprobe bridge || { echo "FAILED: veth/bridge modules"; exit 2; }
# ib_core's netns mode can only change while no other namespace exists: set it at module load.
if [ "$mode" = exclusive ]; then modprobe ib_core netns_mode=0; fi
modprobe rdma_rxe && modprobe rdma_ucm || { echo "FAILED: rdma_rxe"; exit 2; }
echo "rdma system: $(rdma system show)"

ip link add br0 type bridge && ip link set br0 up
for i in 0 1 2; do
  ns=replica$i
  ip netns add $ns
  ip link add vb$i type veth peer name eth0 netns $ns
  ip link set vb$i master br0 up
  ip -n $ns addr add 10.1.0.$((i+1))/24 dev eth0
  ip -n $ns link set eth0 up; ip -n $ns link set lo up
done

setup_fail=0
for i in 0 1 2; do
  out=$(ip netns exec replica$i rdma link add rxens$i type rxe netdev eth0 2>&1); rc=$?
  echo "replica$i: rdma link add rxens$i type rxe netdev eth0: rc=$rc ${out:+($out)}"
  [ $rc = 0 ] || setup_fail=1
done
if [ "$mode" = exclusive ]; then
  # In exclusive mode a new rxe device is born in the initial namespace; move it.
  for i in 0 1 2; do
    out=$(rdma dev set rxens$i netns replica$i 2>&1); rc=$?
    echo "rdma dev set rxens$i netns replica$i: rc=$rc ${out:+($out)}"
  done
fi
echo "initial ns sees: $(rdma link show | awk '{print $2}' | tr '\n' ' ')"
for i in 0 1 2; do
  echo "replica$i sees: $(ip netns exec replica$i rdma link show | awk '{print $2 ($NF=="eth0" ? "(eth0)" : "")}' | tr '\n' ' ')"
done
# The IPv4-mapped GID (index 1) appears asynchronously after the address (bounded wait).
for _ in $(seq 100); do
  n=$(grep -l 'ffff:0a01:000[123]$' /sys/class/infiniband/rxens*/ports/1/gids/1 2>/dev/null | wc -l)
  [ "$n" = 3 ] && break; sleep 0.05
done
grep -H . /sys/class/infiniband/rxens*/ports/1/gids/1 2>/dev/null | sed 's|/sys/class/infiniband/||'

counters() { # dev...: what rxe itself sent and received
  local d; for d in "$@"; do
    printf '%s sent_pkts=%s rcvd_pkts=%s  ' "$d" \
      "$(cat /sys/class/infiniband/$d/ports/1/hw_counters/sent_pkts 2>/dev/null || echo -)" \
      "$(cat /sys/class/infiniband/$d/ports/1/hw_counters/rcvd_pkts 2>/dev/null || echo -)"
  done; echo
}
# pair TOOL SRV_NS SRV_DEV CLI_NS CLI_DEV SRV_ADDR: perftest server in one namespace, client in
# another; both bounded. 0 iff both ends finished and the client printed its result row.
pair() {
  local tool=$1 sns=$2 sdev=$3 cns=$4 cdev=$5 addr=$6 srv out rc src t0
  t0=$(date +%s)
  timeout 30 ip netns exec "$sns" "$tool" -d "$sdev" -x 1 -F -s 64 -n "$iters" > /tmp/$tool.srv 2>&1 & srv=$!
  for _ in $(seq 40); do  # the server takes a while to listen under TCG: retry the connect
    sleep 0.5
    out=$(timeout 20 ip netns exec "$cns" "$tool" -d "$cdev" -x 1 -F -s 64 -n "$iters" "$addr" 2>&1); rc=$?
    echo "$out" | grep -q "Couldn't connect" || break
  done
  wait $srv; src=$?
  if [ $rc = 0 ] && [ $src = 0 ] && echo "$out" | awk -v n="$iters" '$2==n && NF>=9 {f=1} END{exit !f}'; then
    echo "$tool $cns/$cdev -> $sns/$sdev: PASS in $(( $(date +%s) - t0 )) s: $(echo "$out" | awk -v n="$iters" '$2==n && NF>=9 {print "bytes=" $1 " t_typical_us=" $5 " t_avg_us=" $6}')"
    return 0
  fi
  echo "$tool $cns/$cdev -> $sns/$sdev: FAIL in $(( $(date +%s) - t0 )) s (client rc=$rc$([ $rc = 124 ] && echo ' timed out'), server rc=$src)"
  echo "$out" | grep -iE 'error|fail|unable|did not|couldn' | sed 's/^/  client: /' | head -5
  grep -iE 'error|fail|unable|did not|couldn' /tmp/$tool.srv | sed 's/^/  server: /' | head -5
  echo "  rxe counters: $(counters "$sdev" "$cdev")"
  return 1
}

per_ns=PASS
if [ $setup_fail = 1 ]; then per_ns=FAIL; else
  pair ib_write_lat replica0 rxens0 replica1 rxens1 10.1.0.1 || per_ns=FAIL
  pair ib_send_lat replica1 rxens1 replica2 rxens2 10.1.0.2 || per_ns=FAIL
fi

control=skipped
if [ "$mode" = shared ]; then
  echo "--- control: rxe0/rxe1 in the initial namespace (setup-rxe.sh --pair), processes in replica0/1"
  if "$repo/tools/softroce/setup-rxe.sh" --pair > /tmp/rxe-pair.log 2>&1; then
    pair ib_write_lat replica0 rxe0 replica1 rxe1 10.1.0.1 && control=PASS || control=FAIL
  else
    cat /tmp/rxe-pair.log; control=FAIL
  fi
fi

echo "rxe-netns: kernel=$kver mode=$mode per-namespace=$per_ns control=$control"
[ $per_ns = PASS ] && exit 0
[ $control = FAIL ] && exit 2
exit 1
