# Guest-side helpers for the emulated NVDIMMs (run-guest.sh -n IMG [-D IMG2]); source, then call.
# A label-less NVDIMM comes up in raw mode (no DAX). Converting it writes an info block into the
# backing image, so a second boot with the same image finds the namespace already converted.
# Two NVDIMMs may swap names between boots: pick namespaces by mode, never by number.

# Loads the NVDIMM drivers and waits (bounded) for the first namespace to appear.
nvdimm_load() {
  modprobe nfit; modprobe nd_pmem; modprobe dax_pmem 2>/dev/null; modprobe device_dax 2>/dev/null
  for _ in $(seq 50); do ls /sys/bus/nd/devices/namespace*.0 >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "nvdimm: no namespace appeared (was run-guest.sh given -n IMG?)" >&2; return 1
}

# Prints the block device of an fsdax namespace, converting the first raw one if none exists.
nvdimm_fsdax_dev() {
  local dev; dev=$(ndctl list -N -m fsdax 2>/dev/null | grep -o '"blockdev":"[^"]*"' | head -1 | cut -d'"' -f4)
  if [ -z "$dev" ]; then
    local raw; raw=$(ndctl list -N -m raw 2>/dev/null | grep -o '"dev":"[^"]*"' | head -1 | cut -d'"' -f4)
    [ -n "$raw" ] || { echo "nvdimm: no raw or fsdax namespace" >&2; return 1; }
    ndctl create-namespace -f -e "$raw" -m fsdax -M dev >/dev/null 2>&1 || { echo "nvdimm: fsdax conversion of $raw failed" >&2; return 1; }
    dev=$(ndctl list -N -m fsdax 2>/dev/null | grep -o '"blockdev":"[^"]*"' | head -1 | cut -d'"' -f4)
  fi
  echo "/dev/$dev"
}

# Mounts an ext4 -o dax filesystem of an fsdax namespace at DIR (mkfs only when it has none).
nvdimm_fsdax_mount() {
  local dir=$1 dev; dev=$(nvdimm_fsdax_dev) || return 1
  blkid "$dev" 2>/dev/null | grep -q ext4 || mkfs.ext4 -F -q -b 4096 "$dev" || return 1
  mkdir -p "$dir" && mount -o dax "$dev" "$dir"
}

# Prints a device-DAX char device (/dev/daxN.M), converting the first raw namespace if none exists.
# Map it in 2 MiB units; unlike fsdax, it can be registered as an RDMA memory region.
nvdimm_devdax() {
  local d; d=$(ls /dev/dax*.* 2>/dev/null | head -1)
  if [ -z "$d" ]; then
    local raw; raw=$(ndctl list -N -m raw 2>/dev/null | grep -o '"dev":"[^"]*"' | head -1 | cut -d'"' -f4)
    [ -n "$raw" ] || { echo "nvdimm: no raw or devdax namespace" >&2; return 1; }
    ndctl create-namespace -f -e "$raw" -m devdax >/dev/null 2>&1 || { echo "nvdimm: devdax conversion of $raw failed" >&2; return 1; }
    d=$(ls /dev/dax*.* 2>/dev/null | head -1)
  fi
  echo "$d"
}
