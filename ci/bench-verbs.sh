#!/usr/bin/env bash
# make bench-verbs: one-sided write latency and replication round trip per transport, each beside
# its raw baseline measured in the same run (shm: cross-process cache-line ping-pong; tcp: raw
# loopback ping-pong; rdma: perftest ib_write_lat on the same rxe devices, in the QEMU guest).
# ITERS_SHM / ITERS_TCP / ITERS_RDMA override the iteration counts.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${CARGO_TARGET_DIR:=$PWD/target}"
export CARGO_TARGET_DIR
bin=$CARGO_TARGET_DIR/release/examples/bench_verbs
echo "=== host: shm and tcp ($(nproc) cores; noisy when the machine is shared)"
cargo build -q --release -p decree-verbs --example bench_verbs
"$bin" shm "${ITERS_SHM:-20000}"
"$bin" tcp "${ITERS_TCP:-5000}"
echo "=== guest: rdma over soft-RoCE (rxe1 -> rxe0), QEMU TCG"
cargo build -q --release -p decree-verbs --features rdma --example bench_verbs
ci/guest/run-guest.sh -q -m 512M -t 400 -f ci/guest/suite-bench-rdma.sh -- "$bin" "${ITERS_RDMA:-1000}"
log=$(ls -td "${DECREE_GUEST_DIR:-${TMPDIR:-/tmp}/decree-guest-$(id -u)}"/runs/*/ | head -1)log
grep -E "^(rdma|baseline)" "$log"
