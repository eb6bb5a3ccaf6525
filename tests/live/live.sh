# The live guest's part of PID 1 (build_live.py appends it to guest/init.sh's
# scenario): mount the Debian root, print /proc to ttyS1, run kql on
# /proc/kcore (JSON records to ttyS2), print /proc again, power off; or, for
# benchmarks/live_vs_drgn.py, run its command (@BENCH@) instead.
# @WORDS@ are filled in by build_live.py.
R=/dev/ttyS2
stty -F /dev/ttyS1 raw -echo 2>/dev/null
stty -F $R raw -echo 2>/dev/null
stamp() { echo "{\"kind\": \"time\", \"label\": \"$1\", \"uptime\": $(cut -d' ' -f1 /proc/uptime)}" > $R; }
stamp scenario
for i in $(seq 1 30); do [ -b /dev/vda ] && break; sleep 1; done
mkdir -p @DEBIAN@
mount -t ext4 /dev/vda @DEBIAN@ || echo '{"kind": "error", "text": "cannot mount /dev/vda"}' > $R
mount -t proc proc @DEBIAN@/proc
mount -t sysfs sysfs @DEBIAN@/sys
mount -o bind /dev @DEBIAN@/dev
mount -t tmpfs -o size=64m tmpfs @DEBIAN@/tmp
IN="chroot @DEBIAN@ /usr/bin/env -i PATH=/usr/bin:/bin HOME=/root LANG=C.UTF-8"
sleep 1
/bin/kql-initwait dumpproc > /dev/ttyS1
echo "@@ready" > /dev/ttyS1
if [ -z "@BENCH@" ]; then
	stamp queries
	$IN @VENV@/bin/python /opt/kql-test/guest_queries.py api > $R
	stamp after
	echo "@@phase after" > /dev/ttyS1
	/bin/kql-initwait dumpproc > /dev/ttyS1
	stamp cli
	$IN @VENV@/bin/python /opt/kql-test/guest_queries.py cli > $R
else
	# benchmarks/live_vs_drgn.py's run instead of the tests' queries
	stamp bench
	@BENCH@
fi
stamp end
umount @DEBIAN@/tmp @DEBIAN@/dev @DEBIAN@/sys @DEBIAN@/proc
umount @DEBIAN@
echo "@@done" > $R
sync
poweroff -f
