#!/usr/bin/env bash
# make test: every suite CI runs, in order, stopping at the first failure.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
for suite in test-unit test-sim test-mutations test-crash test-cluster test-guest; do
  if [ -f "$here/$suite.sh" ]; then
    echo "=== $suite"
    start=$(date +%s)
    bash "$here/$suite.sh"
    echo "=== $suite passed in $(( $(date +%s) - start )) s"
  fi
done
