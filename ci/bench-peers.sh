#!/usr/bin/env bash
# make bench-peers: installs etcd (Debian's etcd-server and etcd-client; CI does not need them, so
# they are not in ci/apt-packages.txt), then runs decree and a 3-node etcd side by side on loopback
# with the same workload and prints the decree/etcd ratios. Same env knobs as ci/bench.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
bash ci/install-deps.sh etcd-server etcd-client
# Debian starts a single-node etcd service on 2379/2380; the benchmark runs its own members on
# other ports, but a stray daemon would share the disk: stop it where a service manager exists.
if command -v systemctl >/dev/null && systemctl is-active --quiet etcd 2>/dev/null; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO systemctl stop etcd
fi
echo "== $(etcd --version | head -1)"
BENCH_PEER=etcd BENCH_CALLGRIND=${BENCH_CALLGRIND:-0} exec bash ci/bench.sh
