#!/usr/bin/env python3
"""Build kql's test vmcores: real dumps of real Debian kernels booted in QEMU.

Each fixture is a recipe (kernel, guest size, scenario, how the dump is
taken).  The builder boots a busybox initramfs whose PID 1 sets up a known
scenario (named processes, threads, a zombie, a stopped and a D-state task,
files, sockets, mounts, modules, dmesg markers), prints the guest's own /proc
view to a second serial port, and then either

* ``live``: the host stops the VM and takes ``dump-guest-memory`` (ELF and
  QEMU's kdump formats), or
* ``panic``: the guest panics through sysrq and a real kdump capture kernel
  runs makedumpfile onto a virtio disk.

The serial output becomes ``truth.json`` (see truth.py).  Results are cached
outside the repository under ``$KQL_FIXTURES`` (default
/var/cache/kql-fixtures), in a folder named after the recipe and a hash of the
recipe and of the builder's own sources, so a warm cache costs nothing.

Usage: build.py [--list] [--force] [--jobs N] [NAME …]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import glob
import hashlib
import io
import json
import lzma
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import truth as truth_mod  # noqa: E402

CACHE = Path(os.environ.get("KQL_FIXTURES", "/var/cache/kql-fixtures"))

# Debian kernel series: a pattern of package releases.  The builder takes the
# newest release of each series that the machine's apt sources offer (bookworm,
# -updates, -security; 6.12 from bookworm-backports, added by tests/setup.sh) and
# that downloads, falling back through older ones, and records its choice in
# $KQL_FIXTURES/kernels/<series>.selected, which fixture_dir() and the tests read.
KERNEL_SERIES = {
    "6.1": r"6\.1\.0-\d+-cloud-amd64",
    "6.12": r"6\.12\.\d+\+deb12-cloud-amd64",
    # arm64 (dpkg --add-architecture arm64): same series, arm64 packages.
    "6.1-arm64": r"6\.1\.0-\d+-cloud-arm64",
    "6.12-arm64": r"6\.12\.\d+\+deb12-cloud-arm64",
    # Debian 11's 5.10 (suites bullseye and bullseye-security, added by
    # tests/setup.sh): no kallsyms in VMCOREINFO, pre-maple-tree layouts.
    "5.10": r"5\.10\.0-\d+-cloud-amd64",
    # Debian 12's 32-bit x86 kernel (PAE, no BTF): packages of architecture i386
    "6.1-i386": r"6\.1\.0-\d+-686-pae",
}

QEMU = "qemu-system-x86_64"

# What differs per guest architecture (a recipe's "arch", default x86_64).
# arm64 guests: QEMU's virt board with a PAC-capable CPU (pauth-impdef: the
# fast PAC algorithm under TCG), PL011 serial ports, the scenario program
# cross-compiled, and userland taken from arm64 .debs (see foreign_sysroot()).
ARCHES = {
    "x86_64": dict(machine=[], tty="ttyS", cc="gcc", deb_arch=None),     # qemu: QEMU
    "arm64": dict(qemu="qemu-system-aarch64",
                  machine=["-M", "virt,gic-version=3", "-cpu", "max,pauth-impdef=on"],
                  tty="ttyAMA", cc="aarch64-linux-gnu-gcc", deb_arch="arm64",
                  # kexec-tools 2.0.25 derives PAGE_OFFSET from _text in
                  # /proc/kallsyms, which a kernel without KALLSYMS_ALL does not
                  # list (it starts at _stext): without it the elfcorehdr's
                  # PT_LOADs are garbage and makedumpfile cannot read the dump.
                  # Hand it _stext's address under that name (only its half of
                  # the address space matters).
                  kexec_prep="{ cat /proc/kallsyms; awk '$3 == \"_stext\" "
                             "{ print $1 \" T _text\" }' /proc/kallsyms; } > /tmp/kallsyms "
                             "&& mount --bind /tmp/kallsyms /proc/kallsyms; "),
    # 32-bit x86 with PAE (dpkg --add-architecture i386): the scenario program
    # built with gcc -m32 (gcc-12-multilib), busybox from busybox-static:i386.
    # <asm/*.h> from the amd64 kernel headers (they serve both word sizes):
    # gcc-multilib's /usr/include/asm link, without that package (it conflicts
    # with the arm64 cross gcc) and without linux-libc-dev:i386.
    "i386": dict(qemu="qemu-system-i386", machine=[], tty="ttyS", cc="gcc", cflags=["-m32"],
                 asm="/usr/include/x86_64-linux-gnu/asm", deb_arch="i386"),
}
# arm64 userland for the guest and the capture initramfs (with the shared
# libraries makedumpfile and kexec need), downloaded with `apt-get download`.
ARM64_DEBS = ["busybox-static", "makedumpfile", "kexec-tools", "libc6", "libdw1", "libelf1",
              "liblzo2-2", "zlib1g", "libbz2-1.0", "liblzma5", "libzstd1", "libxenmisc4.17",
              "libext2fs2", "libfdt1", "libuuid1", "libxencall1", "libxendevicemodel1",
              "libxenevtchn1", "libxenforeignmemory1", "libxengnttab1", "libxenhypfs1",
              "libxenstore4", "libxentoollog1", "libxentoolcore1", "libyajl2"]
# i386's makedumpfile and kexec (kexec-tools:i386 is built without Xen)
I386_DEBS = ["busybox-static", "makedumpfile", "kexec-tools", "libc6", "libdw1", "libelf1",
             "liblzo2-2", "zlib1g", "libbz2-1.0", "liblzma5", "libzstd1"]
# a foreign guest's userland, by Debian architecture
GUEST_DEBS = {"arm64": ARM64_DEBS, "i386": I386_DEBS}

# Bump when a change to this file changes what a fixture contains.
BUILDER_VERSION = 1

# The recipes.  mode: live (QEMU dump-guest-memory) or panic (real kdump).
RECIPES: dict[str, dict] = {
    "6.1-live": dict(kernel="6.1", mem=640, smp=2, mode="live",
                     dumps=["elf", "kdump-flat", "kdump"]),
    "6.1-panic-zlib": dict(kernel="6.1", mem=640, smp=2, mode="panic",
                           makedumpfile="-c -d 31"),
    "6.1-panic-lzo": dict(kernel="6.1", mem=640, smp=2, mode="panic",
                          makedumpfile="-l -d 31"),
    "6.1-la57": dict(kernel="6.1", mem=640, smp=2, mode="live", cpu="max",
                     dumps=["elf"]),
    "6.12-live": dict(kernel="6.12", mem=640, smp=2, mode="live",
                      dumps=["elf", "kdump-flat"]),
    "6.12-panic": dict(kernel="6.12", mem=640, smp=2, mode="panic",
                       makedumpfile="-c -d 31"),
    "6.1-big": dict(kernel="6.1", mem=2048, smp=2, mode="live", dumps=["elf"],
                    extra_threads=4000),
    # Debian 11's 5.10: kallsyms found in the dump (VMCOREINFO has none before 6.0)
    "5.10-live": dict(kernel="5.10", mem=640, smp=2, mode="live", dumps=["elf"]),
    "5.10-panic": dict(kernel="5.10", mem=640, smp=2, mode="panic",
                       makedumpfile="-c -d 31"),
    # 32-bit x86 (PAE), read with --vmlinux (no BTF)
    "i386-6.1-live": dict(kernel="6.1-i386", arch="i386", mem=640, smp=2, mode="live",
                          dumps=["elf"]),
    "i386-6.1-panic": dict(kernel="6.1-i386", arch="i386", mem=640, smp=2, mode="panic",
                           makedumpfile="-c -d 31"),
    # The sample shipped in the repository (tests/sample/): small and filtered.
    # arm64 (QEMU virt under TCG: several times slower than x86, so small).
    "arm64-6.1-live": dict(arch="arm64", kernel="6.1-arm64", mem=768, smp=2, mode="live",
                           dumps=["elf", "kdump"]),
    "arm64-6.1-panic": dict(arch="arm64", kernel="6.1-arm64", mem=768, smp=2, mode="panic",
                            makedumpfile="-c -d 31"),
    "arm64-6.12-live": dict(arch="arm64", kernel="6.12-arm64", mem=768, smp=2, mode="live",
                            dumps=["elf"]),
    "sample": dict(kernel="6.1", mem=400, smp=2, mode="panic", crashkernel="192M",
                   makedumpfile="-c -d 31"),
}

# The scenario's module set (loaded in this order, dependencies first).
GUEST_MODULES = ["qemu_fw_cfg", "dummy", "loop"]
CAPTURE_MODULES = ["virtio", "virtio_ring", "virtio_pci_legacy_dev",
                   "virtio_pci_modern_dev", "virtio_pci", "virtio_blk"]

# Names under which kqlproc runs (comm must differ per role).
PROC_NAMES = ["kql-sleeper", "kql-threads", "kql-vforker", "kql-zombie", "kql-files",
              "kql-tcp", "kql-tcp6", "kql-udp", "kql-udp6", "kql-unix", "kql-stopped",
              "kql-initwait", "kql-crasher", "kql-spawner", "kql-many"]

BOOT_TIMEOUT = {"live": 240, "panic": 300}
SLOWDOWN = {"x86_64": 1, "arm64": 4, "i386": 1}        # TCG boot-time factor per guest arch


def arch_of(recipe: dict) -> dict:
    return ARCHES[recipe.get("arch", "x86_64")]


class BuildError(Exception):
    pass


def log(msg: str) -> None:
    print(f"[build {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def run(cmd, **kw):
    kw.setdefault("check", True)
    return subprocess.run(cmd, **kw)


# ---------------------------------------------------------------- kernels

def _release_key(release: str) -> list[int]:
    return [int(x) for x in re.findall(r"\d+", release)]


def _selection_file(series: str) -> Path:
    return CACHE / "kernels" / f"{series}.selected"


def selected_release(series: str) -> str:
    """The release build.py chose for a series ('unresolved' before it ran,
    so that collecting tests never needs the mirror)."""
    try:
        return _selection_file(series).read_text().strip() or "unresolved"
    except OSError:
        return "unresolved"


def _cached_releases(series: str) -> list[str]:
    pat = re.compile(KERNEL_SERIES[series])
    return [d.name for d in (CACHE / "kernels").glob("*")
            if pat.fullmatch(d.name) and (d / ".done").exists()]


def _offered_releases(series: str) -> list[str]:
    """Releases of the series whose image and -dbg packages apt knows, from
    every suite in the machine's sources."""
    if not shutil.which("apt-cache"):
        return []
    names = set(run(["apt-cache", "pkgnames", "linux-image-"], capture_output=True, text=True,
                    check=False).stdout.split())
    pat = re.compile(rf"linux-image-({KERNEL_SERIES[series]})-unsigned")
    return [m.group(1) for m in map(pat.fullmatch, names)
            if m and f"linux-image-{m.group(1)}-dbg" in names]


def resolve_kernel(series: str) -> str:
    """Pick (and download) the newest release of ``series`` the mirror serves:
    some files listed by a suite answer 404 while older versions download, so
    fall back through versions.  Without apt, the newest one already cached."""
    offered = sorted(set(_offered_releases(series)), key=_release_key, reverse=True)
    cached = set(_cached_releases(series))
    errors = []
    for release in offered or sorted(cached, key=_release_key, reverse=True):
        try:
            kernel_dir_of(release)
        except BuildError as e:
            errors.append(str(e))
            log(f"warning: {release}: {e}; trying an older one")
            continue
        sel = _selection_file(series)
        if selected_release(series) != release:
            tmp = sel.with_suffix(".tmp")
            tmp.write_text(release + "\n")
            tmp.rename(sel)
        return release
    raise BuildError(f"no {series} kernel with its -dbg package could be downloaded "
                     f"(offered: {', '.join(offered) or 'none'}; {'; '.join(errors[-2:])})")


def kernel_dir(series: str) -> dict[str, Path]:
    return kernel_dir_of(selected_release(series))


def kernel_dir_of(kver: str) -> dict[str, Path]:
    """Download and unpack the Debian kernel (unsigned image + -dbg) once."""
    debs = CACHE / "debs"
    root = CACHE / "kernels" / kver
    done = root / ".done"
    if not done.exists():
        debs.mkdir(parents=True, exist_ok=True)
        for pkg in (f"linux-image-{kver}-unsigned", f"linux-image-{kver}-dbg"):
            if not glob.glob(str(debs / f"{pkg}_*.deb")):
                apt_download(pkg, debs)
        tmp = Path(tempfile.mkdtemp(dir=CACHE, prefix=".unpack-"))
        for deb in glob.glob(str(debs / f"linux-image-{kver}-*.deb")):
            run(["dpkg-deb", "-x", deb, str(tmp)])
        if root.exists():
            shutil.rmtree(root)
        root.parent.mkdir(parents=True, exist_ok=True)
        tmp.rename(root)
        done.touch()
    return {
        "root": root,
        "vmlinuz": root / "boot" / f"vmlinuz-{kver}",
        "vmlinux": root / "usr/lib/debug/boot" / f"vmlinux-{kver}",
        # boot/System.map is Debian's placeholder; the real one ships with -dbg
        "system_map": root / "usr/lib/debug/boot" / f"System.map-{kver}",
        "modules": root / "lib/modules" / kver,
        "release": kver,
    }


def apt_download(pkg: str, dest: Path) -> None:
    log(f"downloading {pkg}")
    r = run(["apt-get", "download", *pkg.split()], cwd=dest, capture_output=True, text=True,
            check=False)
    if r.returncode:
        raise BuildError(f"apt-get download {pkg} failed: "
                         f"{' '.join(r.stderr.strip().splitlines()[-1:])}")


def foreign_sysroot(deb_arch: str) -> Path:
    """A foreign guest's userland (GUEST_DEBS unpacked), downloaded once."""
    pkgs = GUEST_DEBS[deb_arch]
    root = CACHE / f"sysroot-{deb_arch}"
    if (root / ".done").exists() and (root / ".done").read_text() == " ".join(pkgs):
        return root
    debs = CACHE / f"debs-{deb_arch}"
    debs.mkdir(parents=True, exist_ok=True)
    missing = [f"{pkg}:{deb_arch}" for pkg in pkgs
               if not glob.glob(str(debs / f"{pkg}_*_{deb_arch}.deb"))]
    if missing:
        apt_download(" ".join(missing), debs)
    tmp = Path(tempfile.mkdtemp(dir=CACHE, prefix=".sysroot-"))
    for pkg in pkgs:
        for deb in glob.glob(str(debs / f"{pkg}_*_{deb_arch}.deb")):
            run(["dpkg-deb", "-x", deb, str(tmp)])
    if root.exists():
        shutil.rmtree(root)
    tmp.rename(root)
    (root / ".done").write_text(" ".join(pkgs))
    return root


def find_module(kdir: dict, name: str) -> Path:
    for pat in (f"{name}.ko", f"{name}.ko.xz", f"{name}.ko.zst"):
        hits = list(kdir["modules"].rglob(pat))
        if hits:
            return hits[0]
    raise BuildError(f"module {name} not found in {kdir['modules']}")


def _has_module(kdir: dict, name: str) -> bool:
    try:
        find_module(kdir, name)
        return True
    except BuildError:
        return re.search(rf"/{name}\.ko$", (kdir["modules"] / "modules.builtin").read_text(),
                         re.M) is not None


def module_bytes(kdir: dict, name: str) -> bytes:
    src = find_module(kdir, name)
    data = src.read_bytes()
    if src.name.endswith(".xz"):
        data = lzma.decompress(data)
    elif src.name.endswith(".zst"):
        import zstandard
        data = zstandard.ZstdDecompressor().decompress(data, max_output_size=64 << 20)
    return data


def module_depends(data: bytes) -> list[str]:
    """The depends= entry of a module's .modinfo section."""
    from elftools.elf.elffile import ELFFile
    sec = ELFFile(io.BytesIO(data)).get_section_by_name(".modinfo")
    for entry in sec.data().split(b"\0") if sec else []:
        if entry.startswith(b"depends="):
            return [d for d in entry[8:].decode().split(",") if d]
    return []


def install_modules(kdir: dict, names: list[str], dest: Path) -> list[str]:
    """Copy modules and their dependencies; return the load order."""
    order: list[str] = []

    builtin = (kdir["modules"] / "modules.builtin").read_text()

    def visit(name: str) -> None:
        if name in order or re.search(rf"/{name}\.ko$", builtin, re.M):
            return
        data = module_bytes(kdir, name)
        for dep in module_depends(data):
            visit(dep.replace("-", "_"))
        dest.mkdir(parents=True, exist_ok=True)
        (dest / f"{name}.ko").write_bytes(data)
        order.append(name)

    for n in names:
        visit(n)
    return order


# ---------------------------------------------------------------- initramfs

def copy_binary(path: str, root: Path, sysroot: Path | None = None) -> None:
    """Copy a dynamically linked binary and the libraries ldd names (or, for
    a foreign binary from ``sysroot``, the libraries its DT_NEEDED entries name)."""
    if sysroot is not None:
        return copy_foreign_binary(path, root, sysroot)
    dst = root / path.lstrip("/")
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(path, dst)
    out = run(["ldd", path], capture_output=True, text=True, check=False).stdout
    for m in re.finditer(r"(/\S+\.so[^\s]*)", out):
        lib = m.group(1)
        for p in {lib, os.path.realpath(lib)}:
            d = root / p.lstrip("/")
            d.parent.mkdir(parents=True, exist_ok=True)
            if not d.exists():
                shutil.copy2(p, d)


def copy_foreign_binary(path: str, root: Path, sysroot: Path) -> None:
    """Copy ``sysroot/path`` and, transitively, the shared libraries it needs
    (and the dynamic loader) to the same paths under ``root``."""
    from elftools.elf.dynamic import DynamicSection
    from elftools.elf.elffile import ELFFile
    # the sysroot's multiarch directories (lib/aarch64-linux-gnu, lib/i386-linux-gnu)
    libdirs = [str(d.relative_to(sysroot)) for pat in ("lib/*-linux-gnu", "usr/lib/*-linux-gnu")
               for d in sorted(sysroot.glob(pat))] + ["lib", "usr/lib"]
    todo, seen = [path.lstrip("/")], set()
    while todo:
        rel = todo.pop()
        if rel in seen:
            continue
        seen.add(rel)
        src = sysroot / rel
        dst = root / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(os.path.realpath(src), dst)
        with open(os.path.realpath(src), "rb") as f:
            elf = ELFFile(f)
            for seg in elf.iter_segments():
                if seg["p_type"] == "PT_INTERP":
                    todo.append(seg.get_interp_name().lstrip("/"))
            for sec in elf.iter_sections():
                if isinstance(sec, DynamicSection):
                    for tag in sec.iter_tags("DT_NEEDED"):
                        hit = next((f"{d}/{tag.needed}" for d in libdirs
                                    if (sysroot / d / tag.needed).exists()), None)
                        if hit is None:
                            raise BuildError(f"{rel}: {tag.needed} not in {sysroot}")
                        todo.append(hit)


def base_tree(root: Path, sysroot: Path | None = None) -> None:
    for d in ("bin", "sbin", "proc", "sys", "dev", "tmp", "mnt", "etc", "boot", "lib64"):
        (root / d).mkdir(parents=True, exist_ok=True)
    busybox = shutil.which("busybox")
    if not busybox:
        raise BuildError("busybox not found (apt-get install busybox-static)")
    # the host's busybox lists the applets; a foreign guest gets its own binary
    shutil.copy2(sysroot / "bin/busybox" if sysroot else busybox, root / "bin/busybox")
    applets = run([busybox, "--list"], capture_output=True, text=True).stdout.split()
    for a in applets:
        link = root / "bin" / a
        if not link.exists():
            link.symlink_to("busybox")


def pack_cpio(root: Path, out: Path) -> None:
    files = run("find . | sort", shell=True, cwd=root, capture_output=True).stdout
    cpio = run(["cpio", "-o", "-H", "newc", "--quiet"], cwd=root, input=files,
               capture_output=True).stdout
    out.write_bytes(cpio)


def kqlproc_binary(work: Path, cc: str = "gcc", cflags=(), asm: str | None = None) -> Path:
    out = work / "kqlproc"
    if asm:
        (work / "include").mkdir(exist_ok=True)
        (work / "include/asm").symlink_to(asm)
        cflags = [*cflags, "-idirafter", str(work / "include")]
    run([cc, *cflags, "-static", "-O2", "-o", str(out), str(HERE / "guest/kqlproc.c"),
         "-lpthread"])
    return out


def capture_initramfs(kdir: dict, recipe: dict, work: Path, sysroot: Path | None) -> Path:
    root = work / "capture-root"
    base_tree(root, sysroot)
    copy_binary("/usr/bin/makedumpfile" if sysroot else shutil.which("makedumpfile"), root,
                sysroot)
    # virtio_pci_modern_dev and _legacy_dev were split out of virtio_pci in 5.14
    present = [m for m in CAPTURE_MODULES if _has_module(kdir, m)]
    order = install_modules(kdir, present, root / "lib/modules")
    init = (HERE / "guest/capture-init.sh").read_text()
    init = init.replace("@MODULES@", " ".join(order))
    init = init.replace("@MAKEDUMPFILE@", recipe["makedumpfile"])
    (root / "init").write_text(init)
    (root / "init").chmod(0o755)
    out = work / "capture.cpio"
    pack_cpio(root, out)
    return out


def guest_initramfs(kdir: dict, recipe: dict, work: Path) -> Path:
    root = work / "guest-root"
    arch = arch_of(recipe)
    sysroot = foreign_sysroot(arch["deb_arch"]) if arch["deb_arch"] else None
    base_tree(root, sysroot)
    kqlproc = kqlproc_binary(work, arch["cc"], arch.get("cflags", ()), arch.get("asm"))
    for name in PROC_NAMES:
        shutil.copy2(kqlproc, root / "bin" / name)
    order = install_modules(kdir, GUEST_MODULES, root / "lib/modules")
    params = {
        "@MODULES@": " ".join(order),
        "@MODE@": recipe["mode"],
        "@EXTRA_THREADS@": str(recipe.get("extra_threads", 0)),
        "@CAPTURE_CMDLINE@": f"console={arch['tty']}0 irqpoll nr_cpus=1 maxcpus=1 reset_devices "
                             "rdinit=/init panic=1",
    }
    if recipe["mode"] == "panic":
        copy_binary("/sbin/kexec" if sysroot else shutil.which("kexec"), root, sysroot)
        shutil.copy2(kdir["vmlinuz"], root / "boot/vmlinuz")
        shutil.copy2(capture_initramfs(kdir, recipe, work, sysroot), root / "boot/capture.cpio")
    init = (HERE / "guest/init.sh").read_text()
    # the truth port is the second serial port: ttyS1 on x86, ttyAMA1 on arm64
    init = init.replace("/dev/ttyS1", f"/dev/{arch['tty']}1")
    init = init.replace("\tkexec -p ", "\t" + arch.get("kexec_prep", "") + "kexec -p ")
    for k, v in params.items():
        init = init.replace(k, v)
    (root / "init").write_text(init)
    (root / "init").chmod(0o755)
    out = work / "guest.cpio"
    pack_cpio(root, out)
    return out


# ---------------------------------------------------------------- QEMU

class Qmp:
    def __init__(self, path: Path):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(600)
        self.sock.connect(str(path))
        self.file = self.sock.makefile("rwb")
        self._read()  # greeting
        self.cmd("qmp_capabilities")

    def _read(self):
        while True:
            line = self.file.readline()
            if not line:
                raise BuildError("QEMU closed its QMP socket")
            msg = json.loads(line)
            if "event" not in msg:
                return msg

    def cmd(self, name, **args):
        self.file.write(json.dumps({"execute": name, "arguments": args}).encode() + b"\n")
        self.file.flush()
        reply = self._read()
        if "error" in reply:
            raise BuildError(f"QMP {name}: {reply['error'].get('desc')}")
        return reply.get("return")


def tail(path: Path, n: int = 40) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return "(no serial log)"
    return "\n".join(lines[-n:])


def boot_and_dump(name: str, recipe: dict, kdir: dict, out: Path, work: Path) -> dict:
    initrd = guest_initramfs(kdir, recipe, work)
    console = out / "console.log"
    truth_log = work / "truth.log"
    qmp_path = work / "qmp.sock"
    for stale in (truth_log, qmp_path):
        stale.unlink(missing_ok=True)
    arch = arch_of(recipe)
    # no_timer_check: under TCG on a busy host the x86 IO-APIC timer check can
    # fail and panic the boot ("IO-APIC + timer doesn't work!"), seen building 6.1-big
    append = f"console={arch['tty']}0 loglevel=6 panic=-1 rdinit=/init no_timer_check"
    if recipe["mode"] == "panic":
        append += f" crashkernel={recipe.get('crashkernel', '256M')}"
    cmd = [arch.get("qemu", QEMU), *arch["machine"], "-accel", "tcg", "-m", str(recipe["mem"]), "-smp", str(recipe["smp"]),
           "-kernel", str(kdir["vmlinuz"]), "-initrd", str(initrd), "-append", append,
           "-device", "vmcoreinfo", "-display", "none", "-no-reboot", "-nodefaults",
           "-serial", f"file:{console}", "-serial", f"file:{truth_log}",
           "-qmp", f"unix:{qmp_path},server=on,wait=off",
           "-netdev", "user,id=n0,restrict=on", "-device", "virtio-net-pci,netdev=n0"]
    if recipe.get("cpu"):
        cmd += ["-cpu", recipe["cpu"]]
    disk = work / "disk.img"
    if recipe["mode"] == "panic":
        with open(disk, "wb") as f:
            f.truncate(512 << 20)
        cmd += ["-drive", f"file={disk},format=raw,if=virtio"]
    log(f"{name}: booting {kdir['release']} ({recipe['mem']} MB)")
    t0 = time.time()
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    files = {}
    try:
        deadline = t0 + (BOOT_TIMEOUT[recipe["mode"]] + recipe["mem"] // 20) * SLOWDOWN[
            recipe.get("arch", "x86_64")]
        if recipe["mode"] == "live":
            while b"@@ready" not in _read(truth_log):
                if proc.poll() is not None:
                    raise BuildError(f"{name}: QEMU exited ({proc.returncode}) before the "
                                     f"guest was ready: {proc.stdout.read().decode()[-500:]}")
                if time.time() > deadline:
                    raise BuildError(f"{name}: guest not ready after {deadline - t0:.0f} s")
                time.sleep(0.5)
            time.sleep(3)  # let PID 1 go back to waiting for its child
            qmp = Qmp(qmp_path)
            qmp.cmd("stop")
            for kind in recipe["dumps"]:
                fname, fmt = {"elf": ("vmcore.elf", "elf"),
                              "kdump-flat": ("vmcore.kdump-flat", "kdump-zlib"),
                              "kdump": ("vmcore.kdump", "kdump-raw-zlib")}[kind]
                log(f"{name}: dump-guest-memory {fmt}")
                qmp.cmd("dump-guest-memory", paging=False, protocol=f"file:{out / fname}",
                        format=fmt)
                files[kind] = fname
            qmp.cmd("quit")
            proc.wait(60)
        else:
            try:
                proc.wait(max(1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                raise BuildError(f"{name}: guest did not panic and power off in time")
            if b"@@ready" not in _read(truth_log):
                raise BuildError(f"{name}: guest stopped before printing its /proc view")
            size = flattened_length(disk)
            if size is None:
                raise BuildError(f"{name}: the capture kernel wrote no dump")
            with open(disk, "rb") as src, open(out / "vmcore.kdump-flat", "wb") as dst:
                _copy_n(src, dst, size)
            files["kdump-flat"] = "vmcore.kdump-flat"
            run(["makedumpfile", "-R", str(out / "vmcore.kdump")],
                stdin=open(out / "vmcore.kdump-flat", "rb"), capture_output=True)
            files["kdump"] = "vmcore.kdump"
    except BaseException as e:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if isinstance(e, BuildError):
            raise BuildError(f"{e}\n--- tail of {console} ---\n{tail(console)}") from None
        raise
    log(f"{name}: done in {time.time() - t0:.0f} s")
    shutil.copy2(truth_log, out / "truth.log")
    return files


# With KASLR the kernel sometimes lands where crashkernel= cannot find room:
# the guest then panics without a capture kernel.  That is the machine's luck,
# not a builder bug, so such a boot is tried again.
TRANSIENT_BOOT_FAILURES = ("Memory for crashkernel is not reserved",)


def boot_with_retries(name, recipe, kdir, out: Path, work: Path, attempts: int = 5) -> dict:
    for attempt in range(1, attempts + 1):
        try:
            return boot_and_dump(name, recipe, kdir, out, work)
        except BuildError:
            console = _read(out / "console.log").decode(errors="replace")
            if attempt == attempts or not any(m in console for m in TRANSIENT_BOOT_FAILURES):
                raise
            log(f"{name}: crashkernel memory not reserved (attempt {attempt}); booting again")
            for f in out.iterdir():
                f.unlink()


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return b""


def _copy_n(src, dst, n: int) -> None:
    while n > 0:
        chunk = src.read(min(n, 1 << 20))
        if not chunk:
            break
        dst.write(chunk)
        n -= len(chunk)


def flattened_length(path: Path) -> int | None:
    """Length of the makedumpfile flattened stream at the start of a disk."""
    with open(path, "rb") as f:
        if not f.read(16).startswith(b"makedumpfile"):
            return None
        pos = 4096
        while True:
            f.seek(pos)
            hdr = f.read(16)
            if len(hdr) < 16:
                return None
            off = int.from_bytes(hdr[:8], "big", signed=True)
            size = int.from_bytes(hdr[8:], "big", signed=True)
            pos += 16
            if off == -1:
                return pos
            pos += size


# ---------------------------------------------------------------- driver

def sources_hash() -> str:
    """Hash of what shapes a fixture's dumps: the guest's programs and
    scripts and BUILDER_VERSION (bump it when build.py changes how a
    dump is made)."""
    h = hashlib.sha256(str(BUILDER_VERSION).encode())
    for p in sorted(HERE.glob("guest/*")):
        h.update(p.name.encode() + p.read_bytes())
    return h.hexdigest()


def truth_hash() -> str:
    return hashlib.sha256((HERE / "truth.py").read_bytes()).hexdigest()[:12]


def refresh_truth(out: Path) -> None:
    """Re-derive truth.json from the guest's raw truth.log when the parser
    changed (the dumps themselves stay valid)."""
    meta_path = out / "fixture.json"
    meta = json.loads(meta_path.read_text())
    if meta.get("truth_hash") == truth_hash() and (out / "truth.json").exists():
        return
    truth = truth_mod.parse_log((out / "truth.log").read_bytes())
    (out / "truth.json").write_text(json.dumps(truth, indent=1, sort_keys=True))
    meta["truth_hash"] = truth_hash()
    meta_path.write_text(json.dumps(meta, indent=1))


def recipe_hash(name: str) -> str:
    r = dict(RECIPES[name], kernel_release=selected_release(RECIPES[name]["kernel"]), name=name)
    h = hashlib.sha256(json.dumps(r, sort_keys=True).encode())
    h.update(sources_hash().encode())
    return h.hexdigest()[:12]


def fixture_dir(name: str) -> Path:
    return CACHE / f"{name}-{recipe_hash(name)}"


def build(name: str, force: bool = False) -> Path:
    out = fixture_dir(name)
    if (out / "fixture.json").exists() and not force:
        refresh_truth(out)
        return out
    recipe = RECIPES[name]
    kdir = kernel_dir(recipe["kernel"])

    def fill(tmp_out: Path, work: Path) -> None:
        files = boot_with_retries(name, recipe, kdir, tmp_out, work)
        truth = truth_mod.parse_log((tmp_out / "truth.log").read_bytes())
        (tmp_out / "truth.json").write_text(json.dumps(truth, indent=1, sort_keys=True))
        meta = {
            "name": name, "recipe": recipe, "release": kdir["release"],
            "dumps": files,
            "vmlinux": str(kdir["vmlinux"]), "system_map": str(kdir["system_map"]),
            "truth_hash": truth_hash(),
            "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        (tmp_out / "fixture.json").write_text(json.dumps(meta, indent=1))

    return publish(name, out, fill)


def publish(name: str, out: Path, fill) -> Path:
    """Run ``fill(tmp_out, work)`` (it writes the fixture's files into tmp_out,
    with scratch space in work) and rename tmp_out to ``out``; on failure keep
    the guest's console log as $KQL_FIXTURES/<name>.failed-console.log."""
    tmp_out = Path(tempfile.mkdtemp(dir=CACHE, prefix=f".{name}-"))
    work = Path(tempfile.mkdtemp(prefix=f"kql-{name}-"))
    try:
        fill(tmp_out, work)
        if out.exists():
            shutil.rmtree(out)
        tmp_out.rename(out)
        # Fixtures of older recipes or builders are stale: drop them.
        for old in CACHE.glob(f"{name}-*"):
            if old.is_dir() and old != out and re.fullmatch(rf"{re.escape(name)}-[0-9a-f]{{12}}", old.name):
                shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        if (tmp_out / "console.log").exists():
            shutil.copy2(tmp_out / "console.log", CACHE / f"{name}.failed-console.log")
        shutil.rmtree(tmp_out, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out


def live_guests():
    """The guests that run kql on their own /proc/kcore (tests/live/build_live.py),
    built with the fixtures."""
    sys.path.insert(0, str(HERE.parent / "live"))
    import build_live
    return build_live


def main(argv=None) -> int:
    live = live_guests()
    ap = argparse.ArgumentParser(description="Build kql's QEMU vmcore fixtures.")
    ap.add_argument("names", nargs="*",
                    help="recipes to build (default: all but 'sample', whose dump is shipped "
                         "in tests/sample)")
    ap.add_argument("--list", action="store_true", help="list recipes and their folders")
    ap.add_argument("--force", action="store_true", help="rebuild even if cached")
    ap.add_argument("--jobs", type=int, default=2, help="guests to run at once (default 2)")
    args = ap.parse_args(argv)
    # `sample` is built on request only: its output is shipped in tests/sample.
    names = args.names or [n for n in RECIPES if n != "sample"] + list(live.RECIPES)
    recipes = {**RECIPES, **live.RECIPES}
    for n in names:
        if n not in recipes:
            ap.error(f"unknown recipe {n!r} (known: {', '.join(recipes)})")
    if args.list:
        for n in names:
            d = fixture_dir(n) if n in RECIPES else live.fixture_dir(n)
            print(f"{n:16} {'ok   ' if (d / 'fixture.json').exists() else 'missing'} {d}")
        return 0
    (CACHE / "kernels").mkdir(parents=True, exist_ok=True)
    # choose and download each kernel once, before parallel builds
    for series in sorted({recipes[n]["kernel"] for n in names}):
        try:
            resolve_kernel(series)
        except BuildError as e:
            print(f"build.py: {e}", file=sys.stderr)
            return 1
    # the shipped sample's kernel too: tests read its debug vmlinux
    sample_release = json.loads((HERE.parent / "sample" / "fixture.json").read_text())["release"]
    try:
        kernel_dir_of(sample_release)
    except BuildError as e:
        log(f"warning: the sample's kernel {sample_release}: {e}")
    t0 = time.time()
    failed = 0
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        futs = {pool.submit(build if n in RECIPES else live.build_live, n, args.force): n
                for n in names}
        for fut in concurrent.futures.as_completed(futs):
            try:
                print(f"{futs[fut]}: {fut.result()}")
            except BuildError as e:
                failed += 1
                print(f"{futs[fut]}: FAILED: {e}", file=sys.stderr)
    log(f"all done in {time.time() - t0:.0f} s, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
