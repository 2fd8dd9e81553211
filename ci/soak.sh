#!/usr/bin/env bash
# make soak: the long runs, one script per area (ci/soak-*.sh).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
for s in "$here"/soak-*.sh; do [ -f "$s" ] && { echo "=== $(basename "$s")"; bash "$s"; }; done
