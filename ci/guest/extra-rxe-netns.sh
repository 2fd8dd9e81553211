#!/usr/bin/env bash
# Host side of the rxe-across-network-namespaces check (`make test-guest-netns`; not part of
# `make test-guest`, which runs only host-*.sh: with Debian's 6.1 and 6.12 kernels it fails, see
# docs/deploy.md section 8). For each kernel package given (default: $DECREE_GUEST_KERNEL, else
# the release's linux-image-amd64 and linux-image-6.12-amd64) boots one guest running
# suite-rxe-netns.sh: three namespaces on a bridge, an rxe device inside each, perftest between
# them. Exit 0 iff RDMA traffic flowed between namespaces on every kernel tried.
# Usage: ci/guest/extra-rxe-netns.sh [-M shared|exclusive] [KERNEL_PACKAGE...]
# DECREE_GUEST_TIMEOUT bounds each boot (default 240 s).
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/common.sh"
cd "$here/../.."
mode=shared
while getopts "M:" o; do case $o in M) mode=$OPTARG;; *) exit 2;; esac; done
shift $((OPTIND-1))
if [ $# = 0 ]; then
  if [ -n "${DECREE_GUEST_KERNEL:-}" ]; then set -- "$DECREE_GUEST_KERNEL"
  else set -- linux-image-amd64 linux-image-6.12-amd64; fi
fi
fail=0
for k in "$@"; do
  echo "--- kernel package $k, rdma netns mode $mode"
  t0=$(date +%s)
  out=$("$here/run-guest.sh" -q -m 512M -t "${DECREE_GUEST_TIMEOUT:-240}" -K "$k" \
    -e RXE_NETNS_MODE="$mode" -f "$here/suite-rxe-netns.sh" 2>&1); rc=$?
  run=$(echo "$out" | sed -n 's/^host: run dir //p')
  if [ -n "$run" ] && [ -f "$run/log" ]; then cat "$run/log"; else echo "$out"; fi
  echo "$out" | grep '^host: wall'
  case $rc in
    0) r=PASS;; 1) r="FAIL (no RDMA traffic between namespaces)";;
    2) r="FAIL (the in-namespace control failed too: guest set-up problem)";;
    *) r="FAIL (run-guest rc=$rc)"; echo "$out" | tail -5;;
  esac
  echo "=== rxe-netns $k ($mode): $r in $(( $(date +%s) - t0 )) s"
  [ $rc = 0 ] || fail=1
done
exit $fail
