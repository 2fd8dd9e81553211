#!/usr/bin/env bash
# make test-guest: the soft-RoCE + NVDIMM suites. Prepares the QEMU guest once (cached kernel and
# initramfs), then runs every ci/guest/host-*.sh (each builds what it needs on the host and boots
# the guest through ci/guest/run-guest.sh). Fails if any fails. Prints "N passed, N failed".
set -uo pipefail
cd "$(dirname "$0")/.."
command -v qemu-system-x86_64 >/dev/null || { echo "test-guest: qemu-system-x86_64 missing: run 'make deps'"; exit 1; }
ci/guest/setup.sh >/dev/null || { echo "test-guest: guest set-up failed"; exit 1; }
pass=0; fail=0; failed=()
for s in ci/guest/host-*.sh; do
  [ -f "$s" ] || continue
  name=$(basename "$s" .sh); t0=$(date +%s)
  echo "=== guest: $name"
  if bash "$s"; then pass=$((pass+1)); r=ok; else rc=$?; fail=$((fail+1)); failed+=("$name"); r="FAILED rc=$rc"; fi
  echo "=== guest: $name $r in $(( $(date +%s) - t0 )) s"
done
((fail)) && echo "test-guest: failed: ${failed[*]}"
echo "guest: $pass passed, $fail failed"
[ $fail = 0 ]
