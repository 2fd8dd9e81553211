#!/usr/bin/env bash
# Network faults between real replica processes in network namespaces (veth + bridge, nftables
# drop rules), history checked for linearizability. Needs root, ip and nft (ci/apt-packages.txt).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ] || ! command -v nft >/dev/null || ! ip netns list >/dev/null 2>&1; then
  echo "SKIPPED: test-netns needs root, iproute2 and nftables (network namespaces); run ci/install-deps.sh as root" >&2
  exit 0
fi
cargo nextest run -p decree-tools --test netns --run-ignored only --no-capture
