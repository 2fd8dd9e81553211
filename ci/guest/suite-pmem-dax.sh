#!/usr/bin/env bash
# Guest side of the pmem DAX suite (host side: host-pmem-dax.sh).
# Usage: suite-pmem-dax.sh write|verify fsdax|devdax|file PMEM_GUEST_BIN ARG
#   fsdax: ext4 -o dax, MAP_SYNC; devdax: /dev/daxX.Y; file: the same NVDIMM with ext4 mounted
#   without dax, so the guest page cache is lost with the VM (power loss for the file backend)
#   write: ARG is the marker printed once 500 appends are durable (the host then SIGKILLs qemu)
#   verify: ARG is the highest acknowledged count the host saw on the console before the kill
set -uo pipefail
step=$1 mode=$2 bin=$3 arg=$4
repo=$(cd "$(dirname "$0")/../.." 2>/dev/null && pwd)
# The script runs from a copy in the run dir; the helpers come from the repo (the cwd).
. "$PWD/ci/guest/nvdimm.sh" || { echo "suite-pmem-dax: run from the repo root (cwd $PWD, script $repo)"; exit 1; }
nvdimm_load || exit 1
case $mode in
  fsdax)
    nvdimm_fsdax_mount /mnt/pmem || { echo "suite-pmem-dax: fsdax mount failed"; exit 1; }
    grep ' /mnt/pmem ' /proc/mounts
    path=/mnt/pmem/decree.log backend=dax;;
  file)
    dev=$(nvdimm_fsdax_dev) || exit 1
    blkid "$dev" 2>/dev/null | grep -q ext4 || mkfs.ext4 -F -q -b 4096 "$dev" || exit 1
    mkdir -p /mnt/pmem && mount "$dev" /mnt/pmem || { echo "suite-pmem-dax: mount failed"; exit 1; }
    grep ' /mnt/pmem ' /proc/mounts
    path=/mnt/pmem/decree.log backend=file;;
  devdax)
    path=$(nvdimm_devdax) || exit 1
    backend=devdax
    "$bin" devdax-map --path "$path" || exit 1;;
  *) echo "suite-pmem-dax: unknown mode $mode"; exit 2;;
esac
case $step in
  write) exec "$bin" write --path "$path" --backend "$backend" --marker "$arg" --marker-after 500;;
  verify)
    "$bin" verify --path "$path" --backend "$backend" --acked "$arg" || exit 1
    [ "$mode" = file ] && exit 0
    # The RDMA-target question: device-DAX must register as a memory region, fsdax must not.
    "$PWD/tools/softroce/setup-rxe.sh" --pair > /tmp/rxe-setup.log 2>&1 || { cat /tmp/rxe-setup.log; exit 1; }
    expect=ok; [ "$mode" = fsdax ] && expect=refused
    exec "$bin" rdma-register --path "$path" --backend "$backend" --expect "$expect";;
  *) echo "suite-pmem-dax: unknown step $step"; exit 2;;
esac
