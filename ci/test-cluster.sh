#!/usr/bin/env bash
# Multi-process tests of a real 3-replica cluster on loopback: kill -9 of the leader under client
# load (new leader, clients continue, every acknowledged write readable, linearizable history,
# the victim restarts and catches up), wrong-secret refusal, malformed/oversize/unknown-version
# frames, graceful shutdown + recovery. Then, if this host allows network namespaces (root),
# the partition test between replicas in namespaces joined by veth with nftables drop rules.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo nextest run -p decree-tools --test cluster --run-ignored only --no-fail-fast
# decree-bench's load generator against a real cluster (uses the `decree` binary built above)
cargo nextest run -p decree-bench --test load_cluster --run-ignored only --no-fail-fast
if [ -f ci/test-netns.sh ]; then
  bash ci/test-netns.sh
fi
