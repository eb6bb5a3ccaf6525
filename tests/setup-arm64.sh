#!/usr/bin/env bash
# arm64 part of the test setup (run as root by tests/setup.sh, before the
# fixtures are built): what build.py needs for the arm64 recipes.
#
# - the arm64 package architecture, so apt knows the arm64 kernels
#   (linux-image-*-cloud-arm64-unsigned/-dbg; build.py downloads them) and the
#   guest's arm64 userland (busybox-static, makedumpfile, kexec-tools and their
#   shared libraries: build.py's ARM64_DEBS, downloaded with apt-get download
#   into $KQL_FIXTURES/debs-arm64 and unpacked into $KQL_FIXTURES/sysroot-arm64);
# - QEMU 10's qemu-system-aarch64 (qemu-system-arm from bookworm-backports,
#   which tests/setup.sh adds to the machine's sources);
# - a cross compiler for the scenario program (gcc-aarch64-linux-gnu,
#   libc6-dev-arm64-cross for the static libc).  Debian's gcc-multilib
#   metapackage conflicts with every cross gcc: 32-bit builds need only
#   gcc-12-multilib, which does not.
set -euo pipefail

APT=(apt-get -o DPkg::Lock::Timeout=600 -y -qq)
export DEBIAN_FRONTEND=noninteractive

need=()
dpkg --print-foreign-architectures | grep -qx arm64 || need+=(arch)
command -v qemu-system-aarch64 >/dev/null && qemu-system-aarch64 --version | grep -q 'version \(9\|1[0-9]\)\.' \
    || need+=(qemu-system-arm)
command -v aarch64-linux-gnu-gcc >/dev/null || need+=(gcc-aarch64-linux-gnu)
[ -e /usr/aarch64-linux-gnu/lib/libc.a ] || need+=(libc6-dev-arm64-cross)

if [ ${#need[@]} -gt 0 ]; then
    echo "setup-arm64: installing ${need[*]}"
    dpkg --add-architecture arm64
    apt-get -o DPkg::Lock::Timeout=600 update -qq
    "${APT[@]}" install -t bookworm-backports qemu-system-arm >/dev/null
    "${APT[@]}" install gcc-aarch64-linux-gnu libc6-dev-arm64-cross >/dev/null
fi
