#!/bin/sh
# PID 1 of the fixture guest (busybox sh).  Sets up a known scenario, prints
# the guest's own /proc view to the second serial port (ttyS1), then either
# waits for the host to dump memory (live) or panics into kdump (panic).
# @WORDS@ are filled in by build.py.
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs -o size=16m tmpfs /tmp
mkdir -p /mnt/ro /mnt/data
mount -t tmpfs -o size=8m kqldata /mnt/data
mount -t tmpfs -o ro,size=1m kqlro /mnt/ro
hostname kql-guest
for m in @MODULES@; do insmod /lib/modules/$m.ko || echo "insmod $m failed"; done
ip link set lo up
ip link set dummy0 up 2>/dev/null && ip addr add 10.77.0.1/24 dev dummy0
echo "<6>KQL-MARKER-1 scenario starting" > /dev/kmsg

# Named processes (each a copy of kqlproc, so comm differs).
kql-sleeper sleep & kql-sleeper sleep & kql-sleeper sleep &
kql-threads threads 4 &
kql-vforker vfork &
kql-zombie zombie &
kql-files files /mnt/data &
kql-tcp tcp 7001 &
kql-tcp6 tcp6 7002 &
kql-udp udp 7003 &
kql-udp6 udp6 7004 &
kql-unix unix /tmp/kql.sock &
kql-stopped sleep &
STOPPED=$!
if [ @EXTRA_THREADS@ -gt 0 ]; then
	# 50 tasks per process (leader + 49 threads) until the count is reached
	kql-spawner spawn $((@EXTRA_THREADS@ / 50)) /bin/kql-many threads 49 &
fi
sleep 2
kill -STOP $STOPPED
if [ @EXTRA_THREADS@ -gt 0 ]; then
	want=$((@EXTRA_THREADS@ / 50 * 50))
	for i in $(seq 1 120); do
		n=$(ls -d /proc/[0-9]*/task/[0-9]* | wc -l)
		[ "$n" -ge "$want" ] && break
		sleep 1
	done
fi
echo "<6>KQL-MARKER-2 scenario ready" > /dev/kmsg

if [ "@MODE@" = panic ]; then
	kexec -p /boot/vmlinuz --initrd=/boot/capture.cpio \
		--append="@CAPTURE_CMDLINE@" || echo "@@error kexec failed" > /dev/ttyS1
fi
sleep 1
stty -F /dev/ttyS1 raw -echo 2>/dev/null
/bin/kql-initwait dumpproc > /dev/ttyS1
echo "@@ready" > /dev/ttyS1

if [ "@MODE@" = panic ]; then
	echo "<6>KQL-MARKER-3 panicking now" > /dev/kmsg
	# The crasher records its own pid, then writes 'c' from that same pid.
	sh -c 'echo "@@panic_pid $$" > /dev/ttyS1; echo c > /proc/sysrq-trigger'
fi
# PID 1 waits for a child, as it did while the /proc view was printed.
/bin/kql-initwait sleep
