#!/bin/busybox sh
# /init of the guest initramfs: load virtio/9p/overlay, mount the host root read-only (9p) under a
# tmpfs overlay, switch_root into it and exec the harness's guest init named on the kernel command
# line (decree_init=PATH, a path on the host root).
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
for m in $(cat /mods/order); do insmod /mods/$m || echo "initramfs: insmod $m failed"; done
init=/sbin/init
for a in $(cat /proc/cmdline); do case $a in decree_init=*) init=${a#decree_init=};; esac; done
mkdir -p /lower /upper
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=524288,cache=loose hostroot /lower \
  || { echo "initramfs: 9p mount of the host root failed"; poweroff -f; }
mount -t tmpfs -o size=512m tmpfs /upper; mkdir -p /upper/u /upper/w
mount -t overlay overlay -o lowerdir=/lower,upperdir=/upper/u,workdir=/upper/w /newroot \
  || { echo "initramfs: overlay failed, using the plain read-only root"; mount --move /lower /newroot; }
mount --move /dev /newroot/dev; umount /proc /sys
exec switch_root /newroot "$init"
