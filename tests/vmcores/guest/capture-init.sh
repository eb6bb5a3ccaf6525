#!/bin/sh
# PID 1 of the kdump capture kernel: save /proc/vmcore with makedumpfile
# (flattened, onto the raw virtio disk), then power off.
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in @MODULES@; do insmod /lib/modules/$m.ko; done
for i in $(seq 1 60); do [ -b /dev/vda ] && break; sleep 1; done
if [ ! -b /dev/vda ]; then echo "kql-capture: no /dev/vda"; poweroff -f; fi
echo "kql-capture: makedumpfile @MAKEDUMPFILE@"
makedumpfile -F @MAKEDUMPFILE@ /proc/vmcore > /dev/vda
echo "kql-capture: makedumpfile exit $?"
sync
poweroff -f
