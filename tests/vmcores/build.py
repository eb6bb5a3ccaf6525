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

# Debian kernel packages, pinned so fixtures are reproducible.  The 6.12
# kernels come from bookworm-backports (added by tests/setup.sh).
KERNELS = {
    "6.1": "6.1.0-56-cloud-amd64",
    "6.12": "6.12.117+deb12-cloud-amd64",
    # Debian 11's 5.10 (suites bullseye and bullseye-security, added by
    # tests/setup.sh): no kallsyms in VMCOREINFO, pre-maple-tree layouts.
    "5.10": "5.10.0-43-cloud-amd64",
    # Debian 12's 32-bit x86 kernel (PAE, no BTF): packages of architecture i386
    "6.1-i386": "6.1.0-57-686-pae",
}

# Guests of another architecture than the host's (issue 17): the Debian
# architecture of their packages (dpkg --add-architecture, done by
# tests/setup.sh), the QEMU that runs them, the compiler flags of the scenario
# program; their busybox comes from the busybox-static package of that
# architecture, unpacked under $KQL_FIXTURES/sysroot-<arch>.
GUEST_ARCHES = {
    "i386": dict(qemu="qemu-system-i386", cflags=["-m32"]),
}

# Series whose pool drops files the index still lists (bullseye-security
# answers 404 for some): the download falls back to older ABIs of the series.
FALLBACK_SERIES = {"5.10": r"5\.10\.0-(\d+)-cloud-amd64"}

QEMU = "qemu-system-x86_64"

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
    "5.10-live": dict(kernel="5.10", mem=640, smp=2, mode="live", dumps=["elf"]),
    "5.10-panic": dict(kernel="5.10", mem=640, smp=2, mode="panic",
                       makedumpfile="-c -d 31"),
    "i386-6.1-live": dict(kernel="6.1-i386", arch="i386", mem=640, smp=2, mode="live",
                          dumps=["elf"]),
    "6.1-big": dict(kernel="6.1", mem=2048, smp=2, mode="live", dumps=["elf"],
                    extra_threads=4000),
    # The sample shipped in the repository (tests/sample/): small and filtered.
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


class BuildError(Exception):
    pass


def log(msg: str) -> None:
    print(f"[build {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def run(cmd, **kw):
    kw.setdefault("check", True)
    return subprocess.run(cmd, **kw)


# ---------------------------------------------------------------- kernels

def resolve_kernels() -> None:
    """Keep the pinned kernels when they are cached or the mirror has them;
    else (Debian dropped that ABI) take the newest of the same series, with a
    warning.  Fixture folders are keyed by the release, so this rebuilds."""
    import shutil as _sh
    if not _sh.which("apt-cache"):
        return
    for series, kver in list(KERNELS.items()):
        if ((CACHE / "kernels" / kver / ".done").exists() or series in FALLBACK_SERIES
                or series_arch(series)):
            continue
        r = run(["apt-cache", "show", f"linux-image-{kver}-unsigned"], capture_output=True,
                text=True, check=False)
        if r.returncode == 0 and r.stdout.strip():
            continue
        flavour = kver.split("-", 1)[1] if series == "6.1" else kver.split("+", 1)[1]
        pattern = (rf"^linux-image-(6\.1\.0-\d+-{re.escape(flavour.split('-', 1)[1])})-unsigned$"
                   if series == "6.1" else
                   rf"^linux-image-(6\.12\.\d+\+{re.escape(flavour)})-unsigned$")
        names = run(["apt-cache", "pkgnames", "linux-image-"], capture_output=True, text=True,
                    check=False).stdout.split()
        found = sorted((m.group(1) for m in map(re.compile(pattern).match, names) if m),
                       key=lambda v: [int(x) for x in re.findall(r"\d+", v)])
        if found:
            log(f"warning: {kver} is not on the mirror; using {found[-1]}")
            KERNELS[series] = found[-1]


def series_arch(series: str) -> str | None:
    """The foreign Debian architecture of a kernel series ("6.1-i386"), or None."""
    arch = series.rpartition("-")[2]
    return arch if arch in GUEST_ARCHES else None


def _download(kver: str, debs: Path, arch: str | None = None) -> str | None:
    """apt-get download the image and -dbg packages; None, or the error."""
    for pkg in (f"linux-image-{kver}-unsigned", f"linux-image-{kver}-dbg"):
        if not glob.glob(str(debs / f"{pkg}_*.deb")):
            log(f"downloading {pkg}")
            r = run(["apt-get", "download", f"{pkg}:{arch}" if arch else pkg], cwd=debs,
                    capture_output=True,
                    text=True, check=False)
            if r.returncode:
                return f"apt-get download {pkg} failed: {r.stderr.strip().splitlines()[-1:]}"
    return None


def download_kernel(series: str, debs: Path) -> str:
    """Download the pinned kernel of a series; for FALLBACK_SERIES, older
    ABIs of the series in turn when the pool answers 404 (with a warning:
    pin the one that worked in KERNELS)."""
    kver = KERNELS[series]
    err = _download(kver, debs, series_arch(series))
    if err is None:
        return kver
    pattern = FALLBACK_SERIES.get(series)
    if pattern is None:
        raise BuildError(err)
    names = run(["apt-cache", "pkgnames", "linux-image-"], capture_output=True, text=True,
                check=False).stdout.split()
    abis = sorted((int(m.group(1)) for m in (re.fullmatch(rf"linux-image-{pattern}-unsigned", n)
                                              for n in names) if m), reverse=True)
    for abi in abis:
        cand = re.sub(r"-\d+-", f"-{abi}-", kver, count=1)
        if cand == kver or _download(cand, debs) is not None:
            continue
        log(f"warning: {kver} could not be downloaded ({err}); using {cand} — pin it in KERNELS")
        KERNELS[series] = cand
        return cand
    raise BuildError(f"{err}; no other {series} kernel could be downloaded either")


def kernel_dir(series: str) -> dict[str, Path]:
    """Download and unpack the Debian kernel (unsigned image + -dbg) once."""
    kver = KERNELS[series]
    arch = series_arch(series)
    debs = CACHE / (f"debs-{arch}" if arch else "debs")
    root = CACHE / "kernels" / kver
    done = root / ".done"
    if not done.exists():
        debs.mkdir(parents=True, exist_ok=True)
        kver = download_kernel(series, debs)
        root = CACHE / "kernels" / kver
        done = root / ".done"
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

def copy_binary(path: str, root: Path) -> None:
    """Copy a dynamically linked binary and the libraries ldd names."""
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


def foreign_busybox(arch: str) -> str:
    """busybox of a foreign architecture, from its busybox-static package."""
    sysroot = CACHE / f"sysroot-{arch}"
    busybox = sysroot / "bin/busybox"
    if not busybox.exists():
        debs = CACHE / f"debs-{arch}"
        debs.mkdir(parents=True, exist_ok=True)
        if not glob.glob(str(debs / "busybox-static_*.deb")):
            run(["apt-get", "download", f"busybox-static:{arch}"], cwd=debs,
                capture_output=True)
        run(["dpkg-deb", "-x", glob.glob(str(debs / "busybox-static_*.deb"))[0], str(sysroot)])
    return str(busybox)


def base_tree(root: Path, arch: str | None = None) -> None:
    for d in ("bin", "sbin", "proc", "sys", "dev", "tmp", "mnt", "etc", "boot", "lib64"):
        (root / d).mkdir(parents=True, exist_ok=True)
    busybox = foreign_busybox(arch) if arch else shutil.which("busybox")
    if not busybox:
        raise BuildError("busybox not found (apt-get install busybox-static)")
    shutil.copy2(busybox, root / "bin/busybox")
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


def kqlproc_binary(work: Path, arch: str | None = None) -> Path:
    out = work / "kqlproc"
    cflags = GUEST_ARCHES[arch]["cflags"] if arch else []
    run(["gcc", *cflags, "-static", "-O2", "-o", str(out), str(HERE / "guest/kqlproc.c"),
         "-lpthread"])
    return out


def capture_initramfs(kdir: dict, recipe: dict, work: Path) -> Path:
    root = work / "capture-root"
    base_tree(root)
    copy_binary(shutil.which("makedumpfile"), root)
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
    base_tree(root, recipe.get("arch"))
    kqlproc = kqlproc_binary(work, recipe.get("arch"))
    for name in PROC_NAMES:
        shutil.copy2(kqlproc, root / "bin" / name)
    order = install_modules(kdir, GUEST_MODULES, root / "lib/modules")
    params = {
        "@MODULES@": " ".join(order),
        "@MODE@": recipe["mode"],
        "@EXTRA_THREADS@": str(recipe.get("extra_threads", 0)),
        "@CAPTURE_CMDLINE@": "console=ttyS0 irqpoll nr_cpus=1 maxcpus=1 reset_devices "
                             "rdinit=/init panic=1",
    }
    if recipe["mode"] == "panic":
        copy_binary(shutil.which("kexec"), root)
        shutil.copy2(kdir["vmlinuz"], root / "boot/vmlinuz")
        shutil.copy2(capture_initramfs(kdir, recipe, work), root / "boot/capture.cpio")
    init = (HERE / "guest/init.sh").read_text()
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
    append = "console=ttyS0 loglevel=6 panic=-1 rdinit=/init"
    if recipe["mode"] == "panic":
        append += f" crashkernel={recipe.get('crashkernel', '256M')}"
    qemu = GUEST_ARCHES[recipe["arch"]]["qemu"] if recipe.get("arch") else QEMU
    cmd = [qemu, "-accel", "tcg", "-m", str(recipe["mem"]), "-smp", str(recipe["smp"]),
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
        deadline = t0 + BOOT_TIMEOUT[recipe["mode"]] + recipe["mem"] // 20
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
    r = dict(RECIPES[name], kernel_release=KERNELS[RECIPES[name]["kernel"]], name=name)
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
    tmp_out = Path(tempfile.mkdtemp(dir=CACHE, prefix=f".{name}-"))
    work = Path(tempfile.mkdtemp(prefix=f"kql-{name}-"))
    try:
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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Build kql's QEMU vmcore fixtures.")
    ap.add_argument("names", nargs="*",
                    help="recipes to build (default: all but 'sample', whose dump is shipped "
                         "in tests/sample)")
    ap.add_argument("--list", action="store_true", help="list recipes and their folders")
    ap.add_argument("--force", action="store_true", help="rebuild even if cached")
    ap.add_argument("--jobs", type=int, default=2, help="guests to run at once (default 2)")
    args = ap.parse_args(argv)
    # `sample` is built on request only: its output is shipped in tests/sample.
    names = args.names or [n for n in RECIPES if n != "sample"]
    for n in names:
        if n not in RECIPES:
            ap.error(f"unknown recipe {n!r} (known: {', '.join(RECIPES)})")
    if args.list:
        for n in names:
            d = fixture_dir(n)
            print(f"{n:16} {'ok   ' if (d / 'fixture.json').exists() else 'missing'} {d}")
        return 0
    CACHE.mkdir(parents=True, exist_ok=True)
    resolve_kernels()
    for series in sorted({RECIPES[n]["kernel"] for n in names}):
        kernel_dir(series)  # download once, before parallel builds
    t0 = time.time()
    failed = 0
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        futs = {pool.submit(build, n, args.force): n for n in names}
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
