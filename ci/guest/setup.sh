#!/usr/bin/env bash
# Prepares (once, cached) what the QEMU guest boots: a Debian kernel package (default: this
# release's linux-image-amd64), downloaded with apt-get (not installed), extracted, depmod'ed, its
# ELF vmlinux pulled out for a PVH direct boot (skips real mode and decompression under TCG), and a
# busybox initramfs that mounts the host root read-only over 9p under a tmpfs overlay.
# Usage: ci/guest/setup.sh [-w WORKDIR] [-K KERNEL_PACKAGE] [-f]     (-f: rebuild the initramfs)
#  -K PKG  the kernel package (or a metapackage such as linux-image-6.12-amd64); default
#          $DECREE_GUEST_KERNEL, else linux-image-amd64. Looked up in the system's apt sources,
#          then (private apt state under WORKDIR/apt, the system's sources untouched) in
#          <codename>-backports. Each kernel version is cached side by side in WORKDIR.
# Prints KVER=<version> on success. Needs: apt-get, dpkg-deb, python3, busybox-static, kmod, cpio
# (and zstd for kernels >= 6.12, whose image and modules are zstd/xz-compressed).
set -euo pipefail
. "$(dirname "$0")/common.sh"
force=0; KPKG=${DECREE_GUEST_KERNEL:-linux-image-amd64}
while getopts "w:K:f" o; do case $o in w) DECREE_GUEST_DIR=$OPTARG;; K) KPKG=$OPTARG;; f) force=1;; *) exit 2;; esac; done
W=$DECREE_GUEST_DIR; mkdir -p "$W"
exec 9>"$W/setup.lock"; flock 9   # two callers at once build once

for tool in qemu-system-x86_64 busybox depmod modprobe cpio dpkg-deb python3; do
  command -v "$tool" >/dev/null || [ -x "/bin/$tool" ] || [ -x "/sbin/$tool" ] || {
    echo "setup: '$tool' not found: run 'make deps' (installs ci/apt-packages.txt)" >&2; exit 3; }
done

# The default kernel keeps the historical cache key (kver); a chosen one gets kver.<package>.
if [ "$KPKG" = linux-image-amd64 ]; then KVER_FILE=$W/kver; else KVER_FILE=$W/kver.$KPKG; fi
APTO=()   # extra apt options: empty = the system's sources and lists
# A metapackage resolves to the versioned image it depends on; a versioned name to itself.
resolve() {
  local dep
  dep=$(apt-cache "${APTO[@]}" depends "$KPKG" 2>/dev/null | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
  if [ -n "$dep" ]; then echo "$dep"
  elif apt-cache "${APTO[@]}" show "$KPKG" 2>/dev/null | grep -q '^Package: '; then echo "$KPKG"; fi
}
backports_apt() { # private apt state with <codename>-backports only; the system's config is not changed
  local codename; codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
  [ -n "$codename" ] || return 1
  mkdir -p "$W/apt/lists/partial" "$W/apt/cache/archives/partial"
  echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian $codename-backports main" > "$W/apt/sources.list"
  APTO=(-o "Dir::Etc::sourcelist=$W/apt/sources.list" -o Dir::Etc::sourceparts=- \
        -o "Dir::State::Lists=$W/apt/lists" -o "Dir::Cache=$W/apt/cache")
  apt-get "${APTO[@]}" update -qq >&2
}
if [ ! -s "$KVER_FILE" ]; then
  kpkg=$(resolve)
  if [ -z "$kpkg" ]; then apt-get update -qq >&2 || true; kpkg=$(resolve); fi
  if [ -z "$kpkg" ] && [ "$KPKG" != linux-image-amd64 ]; then
    backports_apt && kpkg=$(resolve) || true; fi
  [ -n "$kpkg" ] || { echo "setup: cannot resolve kernel package '$KPKG' (apt lists missing? 'apt-get update' needs root here; then try: apt-cache search '^linux-image-')" >&2; exit 3; }
  echo "setup: kernel package $kpkg (for $KPKG)" >&2
  X=$W/kx.tmp; rm -rf "$W/debs" "$X"; mkdir -p "$W/debs" "$X" "$W/kroot/boot" "$W/kroot/lib/modules"
  (cd "$W/debs" && apt-get "${APTO[@]}" download -q "$kpkg" >&2)
  dpkg-deb -x "$W"/debs/"${kpkg}"_*.deb "$X"
  rm -rf "$W/debs"
  vmlinuz=$(ls "$X"/boot/vmlinuz-* | head -1); kver=${vmlinuz##*/vmlinuz-}
  mdir=$X/lib/modules/$kver; [ -d "$mdir" ] || mdir=$X/usr/lib/modules/$kver   # usrmerged packages
  [ -d "$mdir" ] || { echo "setup: no modules for $kver in $kpkg" >&2; exit 3; }
  # Versions live side by side in kroot/ (run-guest.sh hands the guest kroot/lib/modules).
  rm -rf "$W/kroot/lib/modules/$kver"
  mv "$mdir" "$W/kroot/lib/modules/$kver"; mv "$vmlinuz" "$W/kroot/boot/vmlinuz-$kver"
  rm -rf "$X"
  echo "$kver" > "$KVER_FILE"
fi
KVER=$(cat "$KVER_FILE")
MODDIR=$W/kroot/lib/modules/$KVER
# The extracted package ships no modules.dep: build it against the extracted tree.
[ -s "$MODDIR/modules.dep" ] || depmod -b "$W/kroot" "$KVER"

if [ ! -s "$W/vmlinux-$KVER" ]; then
  # bzImage: the compressed ELF payload sits at (setup_sects+1)*512 + payload_offset. 6.1 is XZ
  # (python's lzma), 6.12 zstd (the zstd tool: python has no zstd module here).
  python3 - "$W/kroot/boot/vmlinuz-$KVER" "$W/vmlinux-$KVER.tmp" <<'PY'
import lzma, struct, subprocess, sys
d = open(sys.argv[1], 'rb').read()
assert d[0x202:0x206] == b'HdrS', "not a bzImage"
off = (d[0x1f1] + 1) * 512 + struct.unpack('<I', d[0x248:0x24c])[0]
p = d[off:off + struct.unpack('<I', d[0x24c:0x250])[0]]
if p[:6] == b'\xfd7zXZ\x00':
    out = lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(p)
elif p[:4] == b'\x28\xb5\x2f\xfd':  # the kernel appends a 4-byte size after the frame
    try:
        out = subprocess.run(['zstd', '-dcq'], input=p[:-4], stdout=subprocess.PIPE, check=True).stdout
    except FileNotFoundError:
        raise SystemExit("setup: this kernel is zstd-compressed and 'zstd' is missing: run 'make deps'")
else:
    raise SystemExit("unknown kernel compression %r (need XZ or zstd)" % p[:6])
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
      b=$(basename "$f"); b=${b%.xz}; b=${b%.zst}; grep -qx "$b" "$T/mods/order" && continue
      # busybox insmod wants plain .ko: decompress 6.12's .ko.xz / .ko.zst
      case $f in *.xz) python3 -c 'import lzma,sys; sys.stdout.buffer.write(lzma.open(sys.argv[1]).read())' "$f";; *.zst) zstd -dcq "$f";; *) cat "$f";; esac > "$T/mods/$b"
      echo "$b" >> "$T/mods/order"
    done
  done
  cp "$(dirname "$0")/initramfs-init.sh" "$T/init"; chmod +x "$T/init"
  (cd "$T" && find . -print0 | cpio --null -o -H newc --quiet | gzip -1) > "$INITRD.tmp"
  mv "$INITRD.tmp" "$INITRD"; rm -rf "$T"
fi
echo "KVER=$KVER"
