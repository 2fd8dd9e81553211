#!/usr/bin/env bash
# Real-process crash loop for the persistent log: a child appends and reports every acknowledged
# write, the parent SIGKILLs it at random moments, recovers and checks nothing acknowledged is
# lost. ITERATIONS (default 200) and SEED (default random, printed for replay) may be set.
set -euo pipefail
cd "$(dirname "$0")/.."
iterations=${ITERATIONS:-200}
seed=${SEED:-$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')}
cargo build --release -q -p decree-pmem --bin pmem-crash
bin="${CARGO_TARGET_DIR:-target}/release/pmem-crash"
dir=$(mktemp -d "${TMPDIR:-/tmp}/decree-crash.XXXXXX")
trap 'rm -rf "$dir"' EXIT
echo "pmem crash loop: $iterations iterations, seed $seed (replay: SEED=$seed ITERATIONS=$iterations bash ci/test-crash.sh)"
"$bin" loop --dir "$dir" --iterations "$iterations" --seed "$seed" --max-kill-ms "${MAX_KILL_MS:-40}"
