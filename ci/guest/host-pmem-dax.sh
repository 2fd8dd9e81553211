#!/usr/bin/env bash
# Host side of the pmem power-loss suite: for fsdax (ext4 -o dax, MAP_SYNC), device-DAX
# (/dev/daxX.Y, 2 MiB-aligned whole-device mapping) and the file backend (ext4 without dax on the
# same NVDIMM: the guest page cache dies with the VM), boot a guest on a fresh NVDIMM image, append
# log entries durably (dax: stores + clwb/clflushopt + sfence, no syscall; file: pwrite +
# fdatasync), SIGKILL qemu mid-stream, boot again on the same image, recover, and check every entry
# acknowledged on the console before the kill is present and intact; then, with rxe up, check that
# the device-DAX mapping registers as an RDMA memory region and the fsdax one is refused.
# Exit 0 iff all pass.
# DECREE_GUEST_TIMEOUT bounds each boot (default 300 s); PMEM_GUEST_MODES picks a subset.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/../.."
cargo build --release -q -p decree-pmem --features rdma-check --bin pmem-guest
bin=$(realpath "${CARGO_TARGET_DIR:-target}/release/pmem-guest")
work=$(mktemp -d "${TMPDIR:-/tmp}/decree-pmem-dax.XXXXXX")
trap 'rm -rf "$work"' EXIT
tmo=${DECREE_GUEST_TIMEOUT:-300}
marker=PMEM-READY-TO-DIE-$$
fail=0
for mode in ${PMEM_GUEST_MODES:-fsdax devdax file}; do
  img=$work/$mode.img
  truncate -s 256M "$img"
  echo "--- $mode: write, then SIGKILL qemu"
  rc=0; "$here/run-guest.sh" -q -t "$tmo" -n "$img" -N 256M -k "$marker" -f "$here/suite-pmem-dax.sh" -- write "$mode" "$bin" "$marker" > "$work/boot1.out" || rc=$?
  run=$(sed -n 's/^host: run dir //p' "$work/boot1.out")
  grep -h "pmem-guest\|FAILED\|/mnt/pmem" "$run/console" 2>/dev/null | head -5 || true
  if [ $rc != 0 ]; then cat "$work/boot1.out"; echo "$mode: writer boot failed (rc=$rc)"; fail=1; continue; fi
  # Whole console lines only (the serial console ends each with CR LF): the kill can cut the last
  # one short, and "acked-upto 2700" cut to "acked-upto 270" once failed the check below.
  acked=$(grep -ao $'acked-upto [0-9]*\r' "$run/console" | tail -1 | tr -d '\r' | awk '{print $2}')
  echo "$mode: qemu SIGKILLed after $acked acknowledged appends (the last line the console showed)"
  [ "${acked:-0}" -ge 500 ] || { echo "$mode: fewer acknowledged appends than the marker needs"; fail=1; continue; }
  # The superblock must have reached the backing file of the NVDIMM itself.
  grep -qaF DECREEPM "$img" || { echo "$mode: log superblock not in the NVDIMM image after the kill"; fail=1; continue; }
  echo "--- $mode: boot again, recover, verify"
  rc=0; "$here/run-guest.sh" -q -t "$tmo" -n "$img" -N 256M -f "$here/suite-pmem-dax.sh" -- verify "$mode" "$bin" "$acked" > "$work/boot2.out" || rc=$?
  run=$(sed -n 's/^host: run dir //p' "$work/boot2.out")
  grep -h "pmem-guest" "$run/console" 2>/dev/null || true
  if [ $rc != 0 ]; then cat "$work/boot2.out"; echo "$mode: recovery check failed (rc=$rc)"; fail=1; continue; fi
  echo "$mode: passed"
done
exit $fail
