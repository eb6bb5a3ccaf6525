#!/usr/bin/env bash
# A new user's first command, on a fresh Debian 12 (not part of the test suite;
# a few minutes; run as root):
#
#   1. debootstrap a minimal bookworm root (--variant=minbase, plus python3 and
#      nothing else) from the machine's own Debian mirror;
#   2. copy in the machine's pip configuration and CA bundle (so pip reaches
#      the same package index, as any machine behind a proxy would), its
#      resolv.conf, and the checkout's tracked files;
#   3. run README command 1 (the first command of its Set-up section) in a
#      chroot with a clean environment, and check it answers with 10 rows.
#
#   KQL_FRESH_ROOT  where the root is built (default /var/tmp/kql-fresh; removed first)
set -euo pipefail
cd "$(dirname "$0")/../.."
REPO=$PWD
ROOT=${KQL_FRESH_ROOT:-/var/tmp/kql-fresh}
[ "$(id -u)" = 0 ] || { echo "fresh: run as root (debootstrap, chroot)" >&2; exit 1; }
command -v debootstrap >/dev/null || apt-get -o DPkg::Lock::Timeout=600 install -y -qq debootstrap >/dev/null

. tests/debian-mirror.sh
mirror=$(debian_mirror)

# README command 1: the first indented command line after "## Set-up".
cmd=$(awk '/^## Set-up/ {s=1; next} s && /^## / {exit} s && /^    [^ ]/ {sub(/^    /, ""); print; exit}' README.md)
[ -n "$cmd" ] || { echo "fresh: no command in README's Set-up section" >&2; exit 1; }

cleanup() {
    for m in dev/pts dev proc sys; do mountpoint -q "$ROOT/$m" && umount -l "$ROOT/$m"; done
    return 0
}
trap cleanup EXIT
cleanup
rm -rf "$ROOT"
echo "fresh: debootstrap bookworm (minbase + python3) from $mirror into $ROOT"
debootstrap --variant=minbase --include=python3 bookworm "$ROOT" "$mirror" > "$ROOT.debootstrap.log" 2>&1 \
    || { tail -5 "$ROOT.debootstrap.log" >&2; exit 1; }

# what a machine behind this network has: its pip configuration and CA bundle
for f in /etc/pip.conf /etc/xdg/pip/* /root/.config/pip/* /root/.pip/pip.conf; do
    [ -f "$f" ] && install -D -m 644 "$f" "$ROOT$f"
done
for f in /etc/ssl/certs/ca-certificates.crt /usr/local/share/ca-certificates/*; do
    [ -f "$f" ] && install -D -m 644 "$f" "$ROOT$f"
done
cp -L /etc/resolv.conf "$ROOT/etc/resolv.conf"
mkdir -p "$ROOT/root/kql"
git -C "$REPO" ls-files -z | tar --null -T - -cf - | tar -xf - -C "$ROOT/root/kql"
mount -t proc proc "$ROOT/proc"
mount --rbind /dev "$ROOT/dev"
mount -t sysfs sys "$ROOT/sys"

echo "fresh: python3 only? $(chroot "$ROOT" sh -c 'command -v pip pip3 || echo no pip'); $(chroot "$ROOT" python3 -c 'import venv, ensurepip' 2>&1 | tail -1 || true)"
echo "fresh: running README command 1:"
echo "    $cmd"
set +e
chroot "$ROOT" /usr/bin/env -i HOME=/root LANG=C.UTF-8 TERM=dumb \
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    bash -c "cd /root/kql && $cmd" > "$ROOT.out" 2> "$ROOT.err"
rc=$?
set -e
tail -15 "$ROOT.out"
if [ $rc -ne 0 ]; then
    echo "fresh: FAILED (exit $rc); stderr tail:" >&2
    tail -20 "$ROOT.err" >&2
    exit 1
fi
grep -q '^(10 rows)$' "$ROOT.out" || { echo "fresh: FAILED: no '(10 rows)' in the output" >&2; exit 1; }
# and a query that goes through DuckDB (its Python functions need numpy)
q="SELECT st, count(*) AS n FROM tasks GROUP BY st ORDER BY n DESC"
chroot "$ROOT" /usr/bin/env -i HOME=/root LANG=C.UTF-8 PATH=/usr/bin:/bin \
    bash -c "cd /root/kql && .venv/bin/kql tests/sample/vmcore.kdump '$q'" || {
    echo "fresh: FAILED: $q" >&2; exit 1; }
echo "fresh: ok — README command 1 answered with 10 rows on a debootstrap'd Debian 12"
