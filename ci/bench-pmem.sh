#!/usr/bin/env bash
# make bench-pmem: durable append latency per backend and payload size beside the raw medium cost
# (fdatasync, cache-line write-back + sfence) measured in the same run, and group-commit throughput.
# BENCH_DIR picks the filesystem (default: system temp dir); BENCH_DAX_DIR adds the dax backend.
# BENCH_PMEM_GUEST=1 also runs it in the QEMU NVDIMM guest (fsdax, MAP_SYNC) for the dax rows.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo bench -q -p decree-pmem --bench append
if [ "${BENCH_PMEM_GUEST:-0}" = 1 ]; then
  exe=$(cargo bench -q -p decree-pmem --bench append --no-run --message-format=json \
    | python3 -c 'import json,sys
for l in sys.stdin:
    try: m=json.loads(l)
    except ValueError: continue
    if m.get("reason")=="compiler-artifact" and m.get("executable"): print(m["executable"])' | tail -1)
  img=$(mktemp -u "${TMPDIR:-/tmp}/decree-bench-nvdimm.XXXXXX.img")
  truncate -s 1G "$img"; trap 'rm -f "$img"' EXIT
  echo "=== in the NVDIMM guest (TCG emulation: relative costs only)"
  out=$(mktemp); trap 'rm -f "$img" "$out"' EXIT
  rc=0; ci/guest/run-guest.sh -q -m 1G -N 1G -t 600 -n "$img" -f ci/guest/suite-pmem-bench.sh -- "$exe" > "$out" || rc=$?
  run=$(sed -n 's/^host: run dir //p' "$out")
  grep -a -E 'bench|raw|p50|ratio|group|durable' "$run/console" || true
  [ $rc = 0 ] || { cat "$out"; echo "bench-pmem: guest run failed (rc=$rc)"; exit 1; }
fi
