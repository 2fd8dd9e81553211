#!/usr/bin/env bash
# make test: every suite CI runs, in order, stopping at the first failure.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# Disk is the one resource a fresh machine may lack (a run once failed with "No space left on device"),
# so every suite's start and failure shows what is free.
free_disk() { df -h --output=avail "$here/.." | tail -1 | tr -d ' '; }
for suite in test-unit test-sim test-mutations test-crash test-cluster test-guest; do
  if [ -f "$here/$suite.sh" ]; then
    echo "=== $suite ($(free_disk) free)"
    start=$(date +%s)
    # No suite may hang CI: each gets 25 minutes (the whole run takes about 6 on a warm machine).
    timeout -k 10 1500 bash "$here/$suite.sh" || { rc=$?; echo "=== $suite FAILED (exit $rc; 124 = timed out; $(free_disk) free)"; exit "$rc"; }
    echo "=== $suite passed in $(( $(date +%s) - start )) s"
  fi
done
