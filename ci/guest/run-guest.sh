#!/usr/bin/env bash
# Boots Debian's kernel under QEMU (TCG) with the host root shared read-only, runs one command in
# the guest as root and exits with that command's exit code.
#
# Usage: ci/guest/run-guest.sh [options] -- CMD [ARGS...]
#        ci/guest/run-guest.sh [options] -f SCRIPT [-- ARGS...]
#  -w DIR     work dir (kernel, initramfs, runs/); default $DECREE_GUEST_DIR or $TMPDIR/decree-guest-$UID
#  -m MEM     guest RAM (default 512M)          -s SMP   guest CPUs (default 2)
#  -t SECS    bound on the whole boot+run (default 300); past it qemu is SIGKILLed, exit 124
#  -n IMG     NVDIMM backing file (created sparse if missing), -N SIZE its size (default 512M)
#  -n2 is spelled -D IMG: a second NVDIMM (same size), e.g. for device-DAX beside fsdax
#  -e NAME=VALUE  environment for the guest command (repeatable)
#  -k MARKER  crash mode: SIGKILL qemu as soon as a console line contains MARKER; exit 0 then
#  -q         quiet: do not copy the guest console to stdout (it is kept in the run dir)
#  -K PKG     boot this Debian kernel package (e.g. linux-image-6.12-amd64); default
#             $DECREE_GUEST_KERNEL, else linux-image-amd64 (see setup.sh; -k is the crash marker)
# Exit: the guest command's code; 123 (-k) the guest ended without printing MARKER; 124 timeout;
#       125 no result (boot failure, kernel panic, harness set-up failure).
# The guest's cwd is the caller's cwd (host files read-only under a tmpfs overlay: writes vanish);
# $GUEST_RUN_DIR is a writable dir shared with the host (printed as "host: run dir ...").
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/common.sh"
MEM=512M; SMP=2; TMO=300; NVIMG=""; NV2IMG=""; NVSIZE=512M; SCRIPT=""; MARKER=""; QUIET=0; ENVS=()
KPKG=${DECREE_GUEST_KERNEL:-linux-image-amd64}
while getopts "w:m:s:t:n:D:N:e:f:k:qK:" o; do
  case $o in
    w) DECREE_GUEST_DIR=$OPTARG;; m) MEM=$OPTARG;; s) SMP=$OPTARG;; t) TMO=$OPTARG;;
    n) NVIMG=$OPTARG;; D) NV2IMG=$OPTARG;; N) NVSIZE=$OPTARG;; e) ENVS+=("$OPTARG");;
    f) SCRIPT=$OPTARG;; k) MARKER=$OPTARG;; q) QUIET=1;; K) KPKG=$OPTARG;;
    *) echo "run-guest: bad option (see the header of $0)" >&2; exit 2;;
  esac
done
shift $((OPTIND-1)); [ "${1:-}" = "--" ] && shift
[ -n "$SCRIPT" ] || [ $# -gt 0 ] || { echo "run-guest: nothing to run (-- CMD or -f SCRIPT)" >&2; exit 2; }
export DECREE_GUEST_DIR
W=$DECREE_GUEST_DIR
KVER=$("$here/setup.sh" -w "$W" -K "$KPKG" 2>"$W.setup.err" | sed -n 's/^KVER=//p') || true
[ -n "$KVER" ] || { echo "run-guest: guest set-up failed:" >&2; cat "$W.setup.err" >&2; exit $GUEST_RC_NO_RESULT; }
rm -f "$W.setup.err"

ID=$(date +%Y%m%d-%H%M%S)-$$; R=$W/runs/$ID; mkdir -p "$R"
# Keep the 30 newest runs (each holds a console log; kept for post-mortems).
ls -1dt "$W"/runs/*/ 2>/dev/null | tail -n +31 | xargs -r rm -rf
{
  echo "export GUEST_RUN_DIR=$(printf %q "$R")"
  for kv in "${ENVS[@]}"; do echo "export $(printf %q "$kv")"; done
  echo "cd $(printf %q "$PWD") 2>/dev/null || cd \"\$GUEST_RUN_DIR\""
  if [ -n "$SCRIPT" ]; then
    cp "$SCRIPT" "$R/script.sh"; printf 'exec bash %q' "$R/script.sh"; printf ' %q' "$@"; echo
  else
    printf 'exec'; printf ' %q' "$@"; echo
  fi
} > "$R/cmd.sh"

if [ "${DECREE_GUEST_ACCEL:-tcg}" = kvm ]; then ACCEL=kvm; CPU=host; else ACCEL=tcg,thread=multi; CPU=max; fi
MACH=pc; MEMARG=$MEM; NVARGS=()
add_nvdimm() { # index image
  [ -f "$2" ] || truncate -s "$NVSIZE" "$2" || exit $GUEST_RC_NO_RESULT
  NVARGS+=(-object "memory-backend-file,id=mem$1,share=on,mem-path=$2,size=$NVSIZE"
           -device "nvdimm,id=nvdimm$1,memdev=mem$1")
}
if [ -n "$NVIMG" ]; then
  MACH=pc,nvdimm=on; MEMARG="$MEM,slots=2,maxmem=8G"
  add_nvdimm 1 "$NVIMG"; [ -n "$NV2IMG" ] && add_nvdimm 2 "$NV2IMG"
fi
CMD=(qemu-system-x86_64 -nodefaults -no-user-config -machine "$MACH" -accel "$ACCEL" -cpu "$CPU"
  -smp "$SMP" -m "$MEMARG" -kernel "$W/vmlinux-$KVER" -initrd "$W/initramfs-$KVER.cpio.gz"
  -append "console=ttyS0 quiet loglevel=3 panic=-1 decree_init=$here/guest-init.sh decree_run=$R decree_mods=$W/kroot/lib/modules"
  -display none -serial stdio -no-reboot
  -virtfs local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap
  -virtfs "local,path=$R,mount_tag=run,security_model=none"
  "${NVARGS[@]}")

# One guest at a time per work dir: TCG needs both cores; the bound starts after the wait.
exec 8>"$W/qemu.lock"
flock -w "${DECREE_GUEST_LOCK_WAIT:-1200}" 8 || { echo "run-guest: another guest held $W/qemu.lock too long" >&2; exit $GUEST_RC_NO_RESULT; }

echo "host: run dir $R"
t0=$(date +%s.%N)
"${CMD[@]}" < /dev/null > "$R/console" 2>&1 & QPID=$!
[ $QUIET = 1 ] || { tail -n +1 -f --pid=$QPID "$R/console" & TPID=$!; }
end=$(( $(date +%s) + TMO )); killed=""
while kill -0 $QPID 2>/dev/null; do
  if [ -n "$MARKER" ] && grep -qF -- "$MARKER" "$R/console"; then kill -9 $QPID; killed=marker; break; fi
  [ "$(date +%s)" -ge $end ] && { kill -9 $QPID; killed=timeout; break; }
  sleep 0.05
done
wait $QPID 2>/dev/null
[ -n "${TPID:-}" ] && { sleep 0.2; kill $TPID 2>/dev/null; wait $TPID 2>/dev/null; }
printf 'host: wall %.1fs\n' "$(echo "$(date +%s.%N) - $t0" | bc)"
case $killed in
  marker)  echo "host: saw '$MARKER', SIGKILLed qemu pid $QPID"; exit 0;;
  timeout) [ $QUIET = 1 ] && tail -n 30 "$R/console"; echo "host: TIMEOUT after ${TMO}s, SIGKILLed qemu pid $QPID"; exit $GUEST_RC_TIMEOUT;;
esac
[ -n "$MARKER" ] && [ -f "$R/rc" ] && { echo "host: guest ended (rc=$(cat "$R/rc")) without printing '$MARKER'"; exit $GUEST_RC_NO_MARKER; }
[ -f "$R/rc" ] || { [ $QUIET = 1 ] && tail -n 30 "$R/console"; echo "host: no result from the guest (see $R/console)"; exit $GUEST_RC_NO_RESULT; }
rc=$(cat "$R/rc")
[ "$rc" != 0 ] && [ $QUIET = 1 ] && { echo "host: guest command failed (rc=$rc); last console lines:"; tail -n 30 "$R/console"; }
exit "$rc"
