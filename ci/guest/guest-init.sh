#!/bin/bash
# PID 1 in the guest (after the initramfs switch_roots into overlay(host root read-only, tmpfs)).
# Mounts the run dir (writable 9p share of the host's runs/<id>), the extracted kernel's modules,
# runs <run>/cmd.sh, writes its exit code to <run>/rc and powers off.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root TERM=dumb LANG=C.UTF-8
run=; mods=
mount -t proc proc /proc
mount -t sysfs sys /sys
for a in $(cat /proc/cmdline); do
  case $a in decree_run=*) run=${a#decree_run=};; decree_mods=*) mods=${a#decree_mods=};; esac
done
# devtmpfs has no /dev/fd or /dev/std* (udev makes them on a normal boot); scripts expect them.
ln -sfn /proc/self/fd /dev/fd
ln -sf /proc/self/fd/0 /dev/stdin; ln -sf /proc/self/fd/1 /dev/stdout; ln -sf /proc/self/fd/2 /dev/stderr
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /var/tmp
mount -t configfs none /sys/kernel/config 2>/dev/null
mkdir -p "$run" && mount -t 9p -o trans=virtio,version=9p2000.L,msize=524288,cache=none run "$run"
KVER=$(uname -r)
mkdir -p "/lib/modules/$KVER" && mount --bind "$mods/$KVER" "/lib/modules/$KVER"
echo /usr/sbin/modprobe > /proc/sys/kernel/modprobe
ulimit -l unlimited   # RDMA memory registration pins pages
ip link set lo up
hostname decree-guest
echo "GUEST-READY uptime=$(cut -d' ' -f1 /proc/uptime)s"
rc=127
if [ -f "$run/cmd.sh" ]; then
  bash "$run/cmd.sh" < /dev/null 2>&1 | tee "$run/log"
  rc=${PIPESTATUS[0]}
  echo "$rc" > "$run/rc.tmp" && mv "$run/rc.tmp" "$run/rc"
else
  echo "guest-init: no $run/cmd.sh"
fi
echo "GUEST-DONE rc=$rc uptime=$(cut -d' ' -f1 /proc/uptime)s"
sync
/bin/busybox poweroff -f
