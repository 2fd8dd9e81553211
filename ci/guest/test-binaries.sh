#!/usr/bin/env bash
# Builds the test executables of one package on the host and prints their paths, one a line, so a
# guest (which sees the host root read-only) can run them unchanged.
# Usage: ci/guest/test-binaries.sh PACKAGE [CARGO ARGS...]   e.g. test-binaries.sh decree-verbs --features rdma
# Honors CARGO_TARGET_DIR. Build output goes to stderr.
set -euo pipefail
cd "$(dirname "$0")/../.."
pkg=$1; shift
cargo test -p "$pkg" "$@" --no-run --message-format=json \
  | python3 -c '
import json, sys
for line in sys.stdin:
    try: m = json.loads(line)
    except ValueError: continue
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m.get("profile", {}).get("test"):
        print(m["executable"])
'
