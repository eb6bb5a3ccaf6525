#!/usr/bin/env bash
# Install everything kql's tests need on a fresh Debian 12 machine (as root):
# apt packages (QEMU 10 from bookworm-backports, makedumpfile, kexec-tools,
# busybox-static, a C compiler, python3-venv, debootstrap and e2fsprogs for the
# live guests' Debian root), a fresh venv holding kql (installed
# from this checkout, not editable) with its test extras and nothing else, the
# Debian kernel packages and the vmcore fixtures (cached under $KQL_FIXTURES).
#
#   KQL_PYTHON  the Python the venv is made from (default: Debian's /usr/bin/python3)
#   KQL_VENV    where the venv goes (default: .venv in the checkout); it is
#               re-created on every run, so no test passes on a leftover package
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${KQL_PYTHON:-/usr/bin/python3}
VENV=${KQL_VENV:-$PWD/.venv}
APT=(apt-get -o DPkg::Lock::Timeout=600 -y -qq)
export DEBIAN_FRONTEND=noninteractive

. tests/debian-mirror.sh

need_apt=()
command -v qemu-system-x86_64 >/dev/null && qemu-system-x86_64 --version | grep -q 'version \(9\|1[0-9]\)\.' || need_apt+=(qemu)
for t in makedumpfile kexec busybox cpio gcc; do command -v $t >/dev/null || need_apt+=($t); done
# the live guests' Debian root and disk (tests/live/build_live.py)
for t in debootstrap mkfs.ext4; do PATH=$PATH:/usr/sbin:/sbin command -v $t >/dev/null || need_apt+=($t); done
[ -e /usr/lib/x86_64-linux-gnu/libc.a ] || need_apt+=(libc6-dev)
"$PY" -c 'import ensurepip, venv' 2>/dev/null || need_apt+=(python3-venv)
for t in tmux less; do command -v $t >/dev/null || need_apt+=($t); done   # the shell's terminal tests

if [ ${#need_apt[@]} -gt 0 ]; then
    echo "setup: installing apt packages (${need_apt[*]})"
    # bookworm-backports, on the same mirror the machine already uses.
    if ! grep -rqs bookworm-backports /etc/apt/sources.list /etc/apt/sources.list.d/; then
        uri=$(debian_mirror)
        printf 'Types: deb\nURIs: %s\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
            "$uri" > /etc/apt/sources.list.d/kql-backports.sources
    fi
    apt-get -o DPkg::Lock::Timeout=600 update -qq
    "${APT[@]}" install -t bookworm-backports qemu-system-x86 >/dev/null
    "${APT[@]}" install makedumpfile kexec-tools busybox-static cpio gcc libc6-dev python3-venv \
        tmux less debootstrap e2fsprogs >/dev/null
fi

# Debian 11 (bullseye) and bullseye-security, for the 5.10 kernel fixtures (issue 17):
# the machine's own Debian and Debian-security URIs, in a sources file of their own.
if ! grep -rqs 'bullseye' /etc/apt/sources.list /etc/apt/sources.list.d/; then
    deb_uri=$(debian_mirror)
    sec_uri=$(debian_mirror security)
    printf 'Types: deb\nURIs: %s\nSuites: bullseye\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\nTypes: deb\nURIs: %s\nSuites: bullseye-security\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
        "$deb_uri" "$sec_uri" > /etc/apt/sources.list.d/kql-bullseye.sources
    apt-get -o DPkg::Lock::Timeout=600 update -qq
fi

# 32-bit x86 guests (issue 17): i386 packages (the 686-pae kernel and its -dbg,
# busybox-static:i386 are downloaded by build.py) and gcc -m32 for the scenario.
if ! dpkg --print-foreign-architectures | grep -qx i386; then
    dpkg --add-architecture i386
    apt-get -o DPkg::Lock::Timeout=600 update -qq
fi
# gcc-12-multilib, not gcc-multilib: that metapackage conflicts with the arm64 cross gcc
dpkg -s gcc-12-multilib >/dev/null 2>&1 || \
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq gcc-12-multilib >/dev/null

# the other guest architectures' tools (cross compilers, their QEMUs, apt architectures)
bash tests/setup-arm64.sh

echo "setup: a fresh venv in $VENV with kql and its test dependencies"
"$PY" -m venv --clear "$VENV"
# setuptools builds in ./build and keeps what a checkout no longer has
# (a module moved or deleted since the last install would be installed again)
rm -rf build
"$VENV/bin/python" -m pip install -q --disable-pip-version-check '.[test]'

echo "setup: building vmcore fixtures (cached in ${KQL_FIXTURES:-/var/cache/kql-fixtures})"
"$VENV/bin/python" tests/vmcores/build.py --jobs 2
