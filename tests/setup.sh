#!/usr/bin/env bash
# Install everything kql's tests need on a fresh Debian 12 machine (as root):
# apt packages (QEMU 10 from bookworm-backports, makedumpfile, kexec-tools,
# busybox-static, a C compiler), kql itself with its test extras, the Debian
# kernel packages and the vmcore fixtures (cached under $KQL_FIXTURES).
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v qemu-system-x86_64 >/dev/null && qemu-system-x86_64 --version | grep -q 'version \(9\|1[0-9]\)\.' || need_apt+=(qemu)
for t in makedumpfile kexec busybox cpio gcc; do command -v $t >/dev/null || need_apt+=($t); done
[ -e /usr/lib/x86_64-linux-gnu/libc.a ] || need_apt+=(libc6-dev)

if [ ${#need_apt[@]} -gt 0 ]; then
    echo "setup: installing apt packages (${need_apt[*]})"
    # bookworm-backports, on the same mirror the machine already uses.
    if ! grep -rqs bookworm-backports /etc/apt/sources.list /etc/apt/sources.list.d/; then
        uri=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
        [ -n "$uri" ] || uri=$(awk '$1 == "deb" && $3 == "bookworm" {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
        [ -n "$uri" ] || { echo "setup: cannot find the machine's Debian mirror in /etc/apt" >&2; exit 1; }
        printf 'Types: deb\nURIs: %s\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
            "$uri" > /etc/apt/sources.list.d/kql-backports.sources
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq -t bookworm-backports qemu-system-x86 >/dev/null
    apt-get install -y -qq makedumpfile kexec-tools busybox-static cpio gcc libc6-dev >/dev/null
fi

# Debian 11 (bullseye) and bullseye-security, for the 5.10 kernel fixtures (issue 17):
# the machine's own Debian and Debian-security URIs, in a sources file of their own.
if ! grep -rqs 'bullseye' /etc/apt/sources.list /etc/apt/sources.list.d/; then
    deb_uri=$(awk '/^URIs:/ && $2 !~ /security/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
    sec_uri=$(awk '/^URIs:/ && $2 ~ /security/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
    [ -n "$deb_uri" ] || deb_uri=$(awk '$1 == "deb" && $3 == "bookworm" {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
    [ -n "$sec_uri" ] || sec_uri=$(awk '$1 == "deb" && $3 == "bookworm-security" {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
    [ -n "$deb_uri" ] && [ -n "$sec_uri" ] || { echo "setup: cannot find the machine's Debian mirrors in /etc/apt" >&2; exit 1; }
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
dpkg -s gcc-multilib >/dev/null 2>&1 || \
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq gcc-multilib >/dev/null

echo "setup: installing kql and test dependencies"
python3 -m pip install -q --disable-pip-version-check -e '.[test]'

echo "setup: building vmcore fixtures (cached in ${KQL_FIXTURES:-/var/cache/kql-fixtures})"
python3 tests/vmcores/build.py --jobs 2
