#!/usr/bin/env bash
# Prepares (once, cached) what the QEMU guest boots: Debian's kernel package for this release,
# downloaded with apt-get (not installed), extracted, depmod'ed, its ELF vmlinux pulled out for a
# PVH direct boot (skips real mode and decompression under TCG), and a busybox initramfs that
# mounts the host root read-only over 9p under a tmpfs overlay.
# Usage: ci/guest/setup.sh [-w WORKDIR] [-f]     (-f: rebuild the initramfs)
# Prints KVER=<version> on success. Needs: apt-get, dpkg-deb, python3, busybox-static, kmod, cpio.
set -euo pipefail
. "$(dirname "$0")/common.sh"
force=0
while getopts "w:f" o; do case $o in w) DECREE_GUEST_DIR=$OPTARG;; f) force=1;; *) exit 2;; esac; done
W=$DECREE_GUEST_DIR; mkdir -p "$W"
exec 9>"$W/setup.lock"; flock 9   # two callers at once build once

for tool in qemu-system-x86_64 busybox depmod modprobe cpio dpkg-deb python3; do
  command -v "$tool" >/dev/null || [ -x "/bin/$tool" ] || [ -x "/sbin/$tool" ] || {
    echo "setup: '$tool' not found: run 'make deps' (installs ci/apt-packages.txt)" >&2; exit 3; }
done

KVER_FILE=$W/kver
if [ ! -s "$KVER_FILE" ]; then
  kpkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
  if [ -z "$kpkg" ]; then apt-get update -qq >&2 || true
    kpkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/{print $2; exit}'); fi
  [ -n "$kpkg" ] || { echo "setup: cannot resolve linux-image-amd64 (apt lists missing?)" >&2; exit 3; }
  rm -rf "$W/debs" "$W/kroot"; mkdir -p "$W/debs" "$W/kroot"
  (cd "$W/debs" && apt-get download -q "$kpkg" >&2)
  dpkg-deb -x "$W"/debs/"${kpkg}"_*.deb "$W/kroot"
  rm -rf "$W/debs"
  echo "${kpkg#linux-image-}" > "$KVER_FILE"
fi
KVER=$(cat "$KVER_FILE")
MODDIR=$W/kroot/lib/modules/$KVER
# The extracted package ships no modules.dep: build it against the extracted tree.
[ -s "$MODDIR/modules.dep" ] || depmod -b "$W/kroot" "$KVER"

if [ ! -s "$W/vmlinux-$KVER" ]; then
  python3 - "$W/kroot/boot/vmlinuz-$KVER" "$W/vmlinux-$KVER.tmp" <<'PY'
import lzma, sys
d = open(sys.argv[1], 'rb').read()
off = d.find(b'\xfd7zXZ\x00')  # Debian amd64 kernels are XZ-compressed
assert off >= 0, "no XZ stream in vmlinuz"
out = lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(d[off:])
assert out[:4] == b'\x7fELF', "decompressed kernel is not an ELF image"
open(sys.argv[2], 'wb').write(out)
PY
  mv "$W/vmlinux-$KVER.tmp" "$W/vmlinux-$KVER"
fi

INITRD=$W/initramfs-$KVER.cpio.gz
if [ $force = 1 ] || [ ! -s "$INITRD" ] || [ "$(dirname "$0")/initramfs-init.sh" -nt "$INITRD" ]; then
  T=$W/initramfs.d; rm -rf "$T"; mkdir -p "$T"/{bin,dev,proc,sys,newroot,mods}
  cp "$(command -v busybox || echo /bin/busybox)" "$T/bin/busybox"
  : > "$T/mods/order"
  # Modules needed before the root exists, in dependency order (insmod has no resolver).
  for m in virtio_pci 9pnet_virtio 9p overlay; do
    for f in $(modprobe -d "$W/kroot" -S "$KVER" --show-depends "$m" | awk '$1=="insmod"{print $2}'); do
      b=$(basename "$f"); grep -qx "$b" "$T/mods/order" && continue
      cp "$f" "$T/mods/"; echo "$b" >> "$T/mods/order"
    done
  done
  cp "$(dirname "$0")/initramfs-init.sh" "$T/init"; chmod +x "$T/init"
  (cd "$T" && find . -print0 | cpio --null -o -H newc --quiet | gzip -1) > "$INITRD.tmp"
  mv "$INITRD.tmp" "$INITRD"; rm -rf "$T"
fi
echo "KVER=$KVER"
