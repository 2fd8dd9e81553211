#!/usr/bin/env bash
# Sets up soft-RoCE (rdma_rxe) devices on a Linux host whose kernel has the module. Run as root.
#
#   setup-rxe.sh NETDEV [NAME]   add one rxe device (default name rxe0) on an existing netdev
#   setup-rxe.sh --pair          a self-contained loopback pair: vethA(10.0.0.1)/vethB(10.0.0.2),
#                                rxe0 on vethA, rxe1 on vethB, traffic forced over the veth
#   setup-rxe.sh --remove        delete every rxe link (and the veth pair if --pair made it)
#   setup-rxe.sh --status        rdma links, devices and the IPv4 RoCE v2 GIDs
#
# Why the policy routing in --pair: both addresses are local, so the kernel would route
# 10.0.0.1 <-> 10.0.0.2 over lo and rxe would never see the packets; and in kernel 6.1 rxe only
# receives in the initial network namespace (6.12 too: make test-guest-netns), so the two ends
# cannot live in separate netns.
# The pair uses GID index 1 (the IPv4-mapped RoCE v2 GID): perftest needs `-x 1`.
set -euo pipefail
need() { command -v "$1" >/dev/null || { echo "setup-rxe: '$1' missing (apt-get install $2)" >&2; exit 3; }; }
need rdma iproute2; need ip iproute2
[ "$(id -u)" = 0 ] || { echo "setup-rxe: must run as root" >&2; exit 3; }
load() {
  modprobe rdma_rxe 2>/dev/null || { echo "setup-rxe: this kernel has no rdma_rxe module; use the QEMU guest (ci/guest/run-guest.sh)" >&2; exit 4; }
  modprobe rdma_ucm 2>/dev/null || true
}
status() {
  rdma link show
  command -v ibv_devices >/dev/null && ibv_devices
  # One grep over all GID files: a per-file loop costs minutes under TCG.
  grep -H . /sys/class/infiniband/rxe*/ports/1/gids/* 2>/dev/null \
    | grep -v '0000:0000:0000:0000:0000:0000:0000:0000$' | sed 's|/sys/class/infiniband/||' || true
}
case "${1:-}" in
  --pair)
    load; modprobe veth
    ip link show vethA >/dev/null 2>&1 || ip link add vethA type veth peer name vethB
    ip addr replace 10.0.0.1/24 dev vethA; ip addr replace 10.0.0.2/24 dev vethB
    ip link set vethA up; ip link set vethB up
    for c in all vethA vethB; do
      sysctl -qw net.ipv4.conf.$c.accept_local=1 net.ipv4.conf.$c.rp_filter=0
    done
    ip rule add pref 10 iif lo to 10.0.0.2 table 100; ip route replace 10.0.0.2 dev vethA src 10.0.0.1 table 100
    ip rule add pref 11 iif lo to 10.0.0.1 table 101; ip route replace 10.0.0.1 dev vethB src 10.0.0.2 table 101
    # The local table must come after the two rules above, or it answers first.
    ip rule del pref 0 lookup local 2>/dev/null || true
    ip rule show | grep -q '^100:.*lookup local' || ip rule add pref 100 lookup local
    rdma link show rxe0/1 >/dev/null 2>&1 || rdma link add rxe0 type rxe netdev vethA
    rdma link show rxe1/1 >/dev/null 2>&1 || rdma link add rxe1 type rxe netdev vethB
    # The IPv4 GID appears asynchronously after the address; wait for it (bounded).
    for _ in $(seq 100); do
      grep -q 'ffff:0a00:000[12]$' /sys/class/infiniband/rxe1/ports/1/gids/1 2>/dev/null && break; sleep 0.05
    done
    ;;
  --remove)
    for l in $(rdma link show 2>/dev/null | awk '/ rxe/{print $2}' | cut -d/ -f1); do rdma link delete "$l"; done
    if ip link show vethA >/dev/null 2>&1; then
      ip link delete vethA
      ip rule del pref 10 2>/dev/null || true; ip rule del pref 11 2>/dev/null || true
      ip rule show | grep -q '^0:.*lookup local' || ip rule add pref 0 lookup local
      ip rule del pref 100 2>/dev/null || true
    fi
    exit 0;;
  --status) status; exit 0;;
  ""|-h|--help) sed -n '2,16p' "$0"; exit 2;;
  *)
    load; ip link show "$1" >/dev/null || { echo "setup-rxe: no netdev '$1'" >&2; exit 3; }
    rdma link add "${2:-rxe0}" type rxe netdev "$1";;
esac
status
