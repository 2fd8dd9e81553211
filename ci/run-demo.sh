#!/usr/bin/env bash
# make run: build release, start a 3-replica local cluster on loopback (tcp between replicas, file
# log, generated secret), run a short closed-loop benchmark, print latency and throughput, tear down.
# Env: DEMO_CLIENTS (8), DEMO_SECONDS (5), DEMO_PAYLOAD (64), DEMO_BASE_PORT (7400), DEMO_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
clients=${DEMO_CLIENTS:-8}
seconds=${DEMO_SECONDS:-5}
payload=${DEMO_PAYLOAD:-64}
base_port=${DEMO_BASE_PORT:-7400}
# Under the checkout (gitignored), not /tmp: /tmp may be tmpfs, where fdatasync costs nothing and
# the numbers would flatter the log.
dir=${DEMO_DIR:-.decree-data/demo-$$}

echo "== building decree (release)"
cargo build --release -q -p decree-tools
bin="${CARGO_TARGET_DIR:-target}/release/decree"

cleanup() {
  echo "== tearing the cluster down"
  "$bin" cluster down --dir "$dir/cluster" --purge || true
  rmdir "$dir" .decree-data 2>/dev/null || true
}
trap cleanup EXIT

echo "== starting a 3-replica cluster under $dir/cluster"
"$bin" cluster up --replicas 3 --dir "$dir/cluster" --base-port "$base_port" --metrics-base-port $((base_port + 2000))
"$bin" status --cluster "$dir/cluster"

echo "== a few operations"
"$bin" put --cluster "$dir/cluster" greeting hello
"$bin" get --cluster "$dir/cluster" greeting
"$bin" cas --cluster "$dir/cluster" greeting --expect hello world

echo "== decree bench: $clients clients, $seconds s, $payload-byte puts"
"$bin" bench --cluster "$dir/cluster" --clients "$clients" --duration-s "$seconds" --payload-bytes "$payload"
"$bin" status --cluster "$dir/cluster"
echo "metrics: curl -s 127.0.0.1:$((base_port + 2000))/metrics (while a cluster runs)"
