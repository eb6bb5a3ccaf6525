#!/usr/bin/env python3
"""Live-kernel guests: kql run on a real Debian guest's own /proc/kcore.

The host has no /proc/kcore to test kql's live mode on, so a guest of each
fixture kernel (6.1, 6.12) does it:

* a Debian 12 root (``debootstrap --variant=minbase`` with python3 and
  python3-venv, from the machine's own mirror) holding a venv with kql's
  dependencies and drgn (for benchmarks/live_vs_drgn.py), installed from a
  wheelhouse ``pip download``-ed on the host.  It does not depend on kql's
  source and is cached under ``$KQL_FIXTURES/live-root-<hash>``;
* per run, kql's wheel built from the checkout is installed into a
  hard-linked copy of that root, which ``mkfs.ext4 -d`` packs into a disk;
* the guest boots a busybox initramfs (the fixtures' own: guest/init.sh's
  scenario, kqlproc under its names, the scenario modules plus virtio_blk),
  mounts the Debian disk on /debian, prints its /proc (truth.py's records) to
  the second serial port, runs guest_queries.py with the root's python,
  chrooted, as root (every catalog table, then the comparable queries, then
  the CLI) and once as an unprivileged user, writing JSON records to the
  third serial port, prints its /proc again and powers off.

The result folder ($KQL_FIXTURES/live-<series>-<hash>) holds truth.json
(/proc before the queries), truth-after.json, results.json (one record per
query) and fixture.json (release, timings).  Its hash covers the kernel
release, the root, kql's sources, the guest's files (GUEST_FILES) and
LIVE_VERSION, so a changed kql reruns the guests.  tests/vmcores/build.py
builds these with the other fixtures.

Usage: build_live.py [build.py's options] [live-6.1 live-6.12]   (benchmarks/live_vs_drgn.py boots
the same guest with its own command instead of the queries)
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(HERE.parent / "vmcores"))
import build  # noqa: E402
import truth as truth_mod  # noqa: E402
from build import CACHE, BuildError, log, run  # noqa: E402

# Recipes: the kernel series booted and the guest's size (kql, DuckDB and
# pyarrow in the guest want more than the dump fixtures' 640 MB).
RECIPES = {
    "live-6.1": dict(kernel="6.1", mem=1536, smp=2),
    "live-6.12": dict(kernel="6.12", mem=1536, smp=2),
}
# Bump when the root's recipe changes (packages, venv layout).
ROOT_VERSION = 1
# Bump when a change to this file changes what a guest run does or records
# (the guest's own files, GUEST_FILES, are hashed).
LIVE_VERSION = 1
GUEST_FILES = [HERE / "live.sh", HERE / "guest_queries.py"]
DRGN = "drgn==0.3.0"
GUEST_PYTHON = "3.11"            # bookworm's python3
GUEST_GLIBC = 36                 # bookworm's glibc 2.36
# pip download --platform takes each tag a wheel may carry (bookworm's pip 23 does
# not expand manylinux_2_36 to the older ones): every manylinux up to glibc 2.36
GUEST_PLATFORMS = [f"manylinux_2_{m}_x86_64" for m in range(5, GUEST_GLIBC + 1)] + \
    ["manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64"]
VENV = "/opt/kql"                # the venv inside the root
DEBIAN = "/debian"               # where the guest mounts the root
# a clean environment for commands run chrooted into the root (from the host)
CHROOT_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root", "LANG": "C.UTF-8"}
RUN_TIMEOUT = 1500               # seconds for boot, queries and poweroff under TCG


# ---------------------------------------------------------------- the Debian root

def dependencies() -> list[str]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]


def root_hash() -> str:
    h = hashlib.sha256(json.dumps([ROOT_VERSION, DRGN, GUEST_PYTHON, GUEST_GLIBC,
                                   dependencies()]).encode())
    return h.hexdigest()[:12]


def root_dir() -> Path:
    return CACHE / f"live-root-{root_hash()}"


def debian_mirror() -> str:
    out = run(["bash", "-c", f". {REPO}/tests/debian-mirror.sh && debian_mirror"],
              capture_output=True, text=True, check=False)
    if out.returncode or not out.stdout.strip():
        raise BuildError(f"no Debian mirror: {out.stderr.strip()}")
    return out.stdout.strip()


def debian_root() -> Path:
    """The cached Debian 12 root with the venv (built once, under a lock)."""
    out = root_dir()
    if (out / ".done").exists():
        return out / "root"
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / ".live-root.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (out / ".done").exists():
            return out / "root"
        if os.geteuid() != 0:
            raise BuildError("the live guests' Debian root needs root (debootstrap, chroot)")
        if not shutil.which("debootstrap"):
            raise BuildError("debootstrap not found (apt-get install debootstrap)")
        t0 = time.time()
        tmp = Path(tempfile.mkdtemp(dir=CACHE, prefix=".live-root-"))
        try:
            root = tmp / "root"
            mirror = debian_mirror()
            log(f"live root: debootstrap bookworm from {mirror}")
            r = run(["debootstrap", "--variant=minbase", "--include=python3,python3-venv",
                     "bookworm", str(root), mirror], capture_output=True, text=True, check=False)
            if r.returncode:
                raise BuildError(f"debootstrap failed: {r.stdout[-800:]}{r.stderr[-800:]}")
            wheels = root / "tmp/wheelhouse"
            wheels.mkdir(parents=True)
            log("live root: pip download (python 3.11, manylinux x86_64)")
            r = run([sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check",
                     "--only-binary=:all:", *(f"--platform={p}" for p in GUEST_PLATFORMS),
                     "--python-version", GUEST_PYTHON, "--implementation", "cp",
                     "-d", str(wheels), *dependencies(), DRGN],
                    capture_output=True, text=True, check=False)
            if r.returncode:
                raise BuildError(f"pip download failed: {r.stderr.strip()[-800:]}")
            log("live root: venv with kql's dependencies and drgn")
            for cmd in (["python3", "-m", "venv", VENV],
                        [f"{VENV}/bin/pip", "install", "-q", "--disable-pip-version-check",
                         "--no-index", "--find-links", "/tmp/wheelhouse", *dependencies(), DRGN]):
                r = run(["chroot", str(root), *cmd], env=CHROOT_ENV, capture_output=True, text=True,
                        check=False)
                if r.returncode:
                    raise BuildError(f"{' '.join(cmd[:3])} in the root failed: "
                                     f"{r.stderr.strip()[-800:]}")
            shutil.rmtree(wheels)
            # what the guest does not need: apt's downloads, documentation
            for junk in ("var/cache/apt", "var/lib/apt/lists", "usr/share/doc", "usr/share/man",
                         "usr/share/locale", "usr/share/info"):
                shutil.rmtree(root / junk, ignore_errors=True)
            meta = {"root_hash": root_hash(), "dependencies": dependencies(), "drgn": DRGN,
                    "build_seconds": round(time.time() - t0),
                    "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
            (tmp / "root.json").write_text(json.dumps(meta, indent=1))
            (tmp / ".done").touch()
            tmp.rename(out)
            log(f"live root: done in {meta['build_seconds']} s")
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        for old in CACHE.glob("live-root-*"):
            if old != out and re.fullmatch(r"live-root-[0-9a-f]{12}", old.name):
                shutil.rmtree(old, ignore_errors=True)
    return out / "root"


# ---------------------------------------------------------------- one guest run

# What kql's wheel is built from (the checkout's tracked files under these).
KQL_SOURCES = ["kql", "grammar", "planner", "queries", "pyproject.toml", "setup.py", "README.md"]
SCENARIO_END = '\nif [ "@MODE@" = panic ]; then\n\tkexec'


def tracked_files(paths: list[str]) -> list[str]:
    out = run(["git", "-C", str(REPO), "ls-files", "-z", "--", *paths], capture_output=True)
    return sorted(p for p in out.stdout.decode().split("\0") if p and (REPO / p).is_file())


def recipe_hash(name: str) -> str:
    recipe = dict(RECIPES[name], name=name,
                  kernel_release=build.selected_release(RECIPES[name]["kernel"]))
    h = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode())
    h.update(root_hash().encode() + build.sources_hash().encode())
    h.update(str(LIVE_VERSION).encode())
    for p in tracked_files(KQL_SOURCES) + [str(f.relative_to(REPO)) for f in GUEST_FILES]:
        h.update(p.encode() + (REPO / p).read_bytes())
    return h.hexdigest()[:12]


def fixture_dir(name: str) -> Path:
    return CACHE / f"{name}-{recipe_hash(name)}"


def kql_wheel(work: Path) -> Path:
    """kql's wheel, built from the checkout's tracked files (what a user's
    `pip install .` would install; not editable)."""
    src = work / "kql-src"
    src.mkdir()
    files = tracked_files(KQL_SOURCES)
    tar = run(["tar", "-C", str(REPO), "-cf", "-", *files], capture_output=True).stdout
    run(["tar", "-C", str(src), "-xf", "-"], input=tar)
    r = run([sys.executable, "-m", "pip", "wheel", "-q", "--disable-pip-version-check",
             "--no-deps", "--no-build-isolation", "-w", str(work / "wheel"), str(src)],
            capture_output=True, text=True, check=False)
    if r.returncode:
        raise BuildError(f"building kql's wheel failed: {r.stderr.strip()[-800:]}")
    return next((work / "wheel").glob("kql-*.whl"))


def guest_disk(work: Path, extra: dict[str, Path] | None = None) -> Path:
    """The Debian root with kql's wheel installed and the guest's scripts
    (plus ``extra``: path in the root -> host file), as an ext4 image."""
    tree = work / "debian"
    run(["cp", "-al", str(debian_root()), str(tree)])   # hard links: the cache is not written
    wheel = kql_wheel(work)
    shutil.copy2(wheel, tree / "tmp" / wheel.name)
    r = run(["chroot", str(tree), f"{VENV}/bin/pip", "install", "-q", "--no-deps", "--no-index",
             "--disable-pip-version-check", f"/tmp/{wheel.name}"],
            env=CHROOT_ENV,
            capture_output=True, text=True, check=False)
    if r.returncode:
        raise BuildError(f"installing kql's wheel in the root failed: {r.stderr.strip()[-800:]}")
    (tree / "tmp" / wheel.name).unlink()
    files = {"opt/kql-test/guest_queries.py": HERE / "guest_queries.py", **(extra or {})}
    for dst, src in files.items():
        (tree / dst).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, tree / dst)
    size = int(run(["du", "-sm", str(tree)], capture_output=True, text=True).stdout.split()[0])
    disk = work / "debian.ext4"
    r = run(["mkfs.ext4", "-q", "-F", "-L", "kqldebian", "-d", str(tree), str(disk),
             f"{size * 5 // 4 + 256}M"], capture_output=True, text=True, check=False)
    if r.returncode:
        raise BuildError(f"mkfs.ext4 -d failed: {r.stderr.strip()[-800:]}")
    shutil.rmtree(tree)
    return disk


def init_script(modules: list[str], bench: str) -> str:
    """PID 1: guest/init.sh's scenario (up to its panic/live tail), then live.sh."""
    scenario = (build.HERE / "guest/init.sh").read_text()
    if SCENARIO_END not in scenario:
        raise BuildError("guest/init.sh changed: its scenario no longer ends where "
                         "build_live.SCENARIO_END says")
    init = scenario.split(SCENARIO_END)[0] + "\n" + (HERE / "live.sh").read_text()
    for k, v in {"@MODULES@": " ".join(modules), "@MODE@": "live", "@EXTRA_THREADS@": "0",
                 "@DEBIAN@": DEBIAN, "@VENV@": VENV, "@BENCH@": bench}.items():
        init = init.replace(k, v)
    return init


def guest_initramfs(kdir: dict, work: Path, bench: str) -> Path:
    """The fixtures' busybox initramfs and scenario (guest/init.sh up to its
    panic/live tail), then live.sh's part, which runs kql."""
    root = work / "guest-root"
    build.base_tree(root)
    kqlproc = build.kqlproc_binary(work)
    for name in build.PROC_NAMES:
        shutil.copy2(kqlproc, root / "bin" / name)
    disk_modules = [m for m in build.CAPTURE_MODULES if build._has_module(kdir, m)]
    order = build.install_modules(kdir, build.GUEST_MODULES + disk_modules, root / "lib/modules")
    init = init_script(order, bench)
    (root / "init").write_text(init)
    (root / "init").chmod(0o755)
    out = work / "guest.cpio"
    build.pack_cpio(root, out)
    return out


def boot(name: str, recipe: dict, kdir: dict, out: Path, work: Path,
         extra: dict[str, Path] | None = None, bench: str = "") -> float:
    """Boot the guest until it powers off; its serial ports go to out/
    (console.log, truth.log, results.log).  Returns the guest's run time."""
    t0 = time.time()
    disk = guest_disk(work, extra)
    initrd = guest_initramfs(kdir, work, bench)
    log(f"{name}: guest disk and initramfs ready in {time.time() - t0:.0f} s")
    console, truth_log, results = out / "console.log", out / "truth.log", out / "results.log"
    append = "console=ttyS0 loglevel=6 panic=-1 rdinit=/init no_timer_check"
    # -cpu max: numpy 2 and pyarrow wheels need x86-64-v2 (qemu64 lacks SSE4.2: SIGILL);
    # la57=off keeps the fixtures' 4-level paging
    cmd = [build.QEMU, "-accel", "tcg", "-cpu", "max,la57=off", "-m", str(recipe["mem"]),
           "-smp", str(recipe["smp"]),
           "-kernel", str(kdir["vmlinuz"]), "-initrd", str(initrd), "-append", append,
           "-display", "none", "-no-reboot", "-nodefaults",
           "-serial", f"file:{console}", "-serial", f"file:{truth_log}",
           "-serial", f"file:{results}",
           "-drive", f"file={disk},format=raw,if=virtio",
           "-netdev", "user,id=n0,restrict=on", "-device", "virtio-net-pci,netdev=n0"]
    log(f"{name}: booting {kdir['release']} ({recipe['mem']} MB)")
    t1 = time.time()
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    try:
        proc.wait(RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise BuildError(f"{name}: guest did not power off in {RUN_TIMEOUT} s\n"
                         f"--- tail of {console} ---\n{build.tail(console)}") from None
    if b"@@done" not in build._read(results):
        raise BuildError(f"{name}: guest stopped before it finished (QEMU exit "
                         f"{proc.returncode}: {proc.stdout.read().decode()[-300:]})\n"
                         f"--- tail of {console} ---\n{build.tail(console)}")
    log(f"{name}: guest ran {time.time() - t1:.0f} s")
    return time.time() - t1


def parse_results(raw: bytes) -> list[dict]:
    out = []
    for line in raw.replace(b"\r\n", b"\n").decode(errors="replace").splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                out.append({"kind": "garbled", "text": line[:200]})
    return out


def build_live(name: str, force: bool = False) -> Path:
    """Build (or find cached) one live guest's results."""
    out = fixture_dir(name)
    if (out / "fixture.json").exists() and not force:
        return out
    recipe = RECIPES[name]
    kdir = build.kernel_dir(recipe["kernel"])
    root_t0 = time.time()
    debian_root()
    root_seconds = time.time() - root_t0

    def fill(tmp_out: Path, work: Path) -> None:
        seconds = boot(name, recipe, kdir, tmp_out, work)
        before, _, after = build._read(tmp_out / "truth.log").partition(b"@@phase after")
        for fname, raw in (("truth.json", before), ("truth-after.json", after)):
            (tmp_out / fname).write_text(json.dumps(truth_mod.parse_log(raw), indent=1,
                                                    sort_keys=True))
        results = parse_results(build._read(tmp_out / "results.log"))
        (tmp_out / "results.json").write_text(json.dumps(results, indent=1))
        meta = {"name": name, "recipe": recipe, "release": kdir["release"],
                "root": str(root_dir()), "guest_seconds": round(seconds),
                "root_seconds_this_build": round(root_seconds),
                "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        (tmp_out / "fixture.json").write_text(json.dumps(meta, indent=1))

    return build.publish(name, out, fill)


def main(argv=None) -> int:
    """tests/vmcores/build.py's command line (the same options and parallel
    builds), over the live recipes unless some are named."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if not any(a in RECIPES for a in argv):
        argv += list(RECIPES)
    return build.main(argv)


if __name__ == "__main__":
    sys.exit(main())
