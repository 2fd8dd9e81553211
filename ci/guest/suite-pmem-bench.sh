#!/usr/bin/env bash
# Guest side of `BENCH_PMEM_GUEST=1 make bench-pmem`: mounts the NVDIMM as ext4 -o dax and runs the
# pmem bench executable (argument 1) with the dax backend added. Under TCG the numbers show
# relative costs only, not real persistent-memory latency.
set -uo pipefail
. "$PWD/ci/guest/nvdimm.sh"
nvdimm_load && nvdimm_fsdax_mount /mnt/pmem || exit 1
mkdir -p /tmp/bench
BENCH_DIR=/tmp/bench BENCH_DAX_DIR=/mnt/pmem BENCH_SAMPLES=${BENCH_SAMPLES:-500} exec "$1" --bench
