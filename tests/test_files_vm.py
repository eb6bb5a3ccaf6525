"""open_files, mounts, vmas, environ and the file-system helpers (kql.helpers.fs;
kql.helpers.mm's are in test_helpers_mm.py) against what the guest's /proc
said (truth.json), plus lists, trees and dentry chains corrupted on purpose in
memory.

Expected values come from each fixture's truth, never from the dumps.  Known
differences between the moment the guest printed /proc and the dump are
derived from the truth and explained where they are applied:

* the printer (``transient_pids``) is gone; processes started after it (the
  final ``kql-initwait sleep``, the panic crasher) are not in the truth;
* pid 1 printed the truth with ``kql-initwait dumpproc > /dev/ttyS1``: while
  the printer ran, busybox sh had saved its fd 1 in a new fd >= 10 and
  pointed fd 1 at /dev/ttyS1; it restored fd 1 and closed the copy after.
* makedumpfile ``-d 31`` drops user pages (cmdline/environ must be NULL) and,
  on the 6.12 kdump, some slab pages (a NULL must then be explained by an
  ExcludedPageError warning, as in test_tables.py).
"""

from __future__ import annotations

from collections import defaultdict

import pytest

from fixtures import DUMPS, FIXTURES, I386, check_missing_tasks, fixture, kernel, run
from kql.errors import ExcludedPageError
from kql.helpers.fs import (d_path, for_each_file, for_each_mount, mount_devname,
                            mount_fstype, mount_options, mount_path)
from kql.helpers.mm import task_cmdline_bytes, task_environ_bytes
from kql.helpers.pid import find_task, for_each_process
from kql.kernel import Kernel, open_kernel
from kql.tables.base import Warnings

# (i386's filtered dumps too: tests/test_i386.py calls these checks on them)
FILTERED = {n for n in FIXTURES + I386 + ["sample"] if fixture(n).recipe.get("makedumpfile")}
LIVE = [n for n in FIXTURES if n not in FILTERED]
PROCESS_FIXTURES = LIVE + sorted(FILTERED - set(I386))
# Debian's makedumpfile (-d 31) also drops most slab pages of the 6.12 kdump
# (dentries, files, VMAs, maple nodes; see fixtures.Excluded): there
# only what was read is checked.  The 6.1 kdumps keep every slab page.
SLAB_FILTERED = {"6.12-panic"}
ALL_DUMPS = DUMPS + [("sample", k) for k in fixture("sample").kinds]


def excluded(w: Warnings, table: str, column: str) -> int:
    return w.counts.get((f"{table}.{column}", ExcludedPageError.__name__), 0)


def _gone(truth) -> set[int]:
    return set(truth.get("transient_pids") or []) | {truth.get("panic_pid")}


def _late(truth, pid: int) -> bool:
    """Started after the printer (so absent from the truth)."""
    return pid > truth["self_pid"]


def expected_fds(truth) -> dict[int, dict[int, str]]:
    """pid -> {fd: link target} as it should be at dump time (module docstring)."""
    out = {}
    printer_parent = truth["tasks"][str(truth["self_pid"])]["ppid"]
    for pid, p in truth["processes"].items():
        pid = int(pid)
        if pid in _gone(truth):
            continue
        fds = {int(fd): target for fd, target in p["fds"].items()}
        if pid == printer_parent:
            # the copy was the shell's last open, so its highest fd >= 10
            saved = max(fd for fd in fds if fd >= 10)
            fds[1] = fds.pop(saved)
        out[pid] = fds
    return out


# -- open_files -------------------------------------------------------------------------------

def check_open_files(name: str, k: Kernel) -> tuple[int, int]:
    """(links equal, links not read: NULL or lost with their task, only on
    filtered dumps and explained by warnings)."""
    truth = fixture(name).truth
    rows, w = run(k, "open_files", ["pid", "fd", "path", "type", "ino"])
    got: dict[int, dict[int, str | None]] = defaultdict(dict)
    for r in rows:
        assert r["fd"] not in got[r["pid"]], f"pid {r['pid']} fd {r['fd']} twice"
        got[r["pid"]][r["fd"]] = r["path"]
        path, typ = r["path"], r["type"]
        if path is None:
            continue
        # the type and inode number agree with the link text
        if path.startswith("socket:["):
            assert typ == "SOCK" and r["ino"] == int(path[8:-1])
        elif path.startswith("pipe:["):
            assert typ == "FIFO" and r["ino"] == int(path[6:-1])
        elif path.startswith("/dev/"):
            assert typ == "CHR"
        elif path.startswith("/mnt/data/"):
            assert typ == "REG"
    want = expected_fds(truth)
    ok = nulls = lost = 0
    for pid, fds in want.items():
        have = got.pop(pid, {})
        if name in FILTERED and fds and not have:
            # its task or fd table sits on a filtered slab page: a warning says so
            lost += len(fds)
            continue
        assert set(have) == set(fds), f"{name} pid {pid}"
        for fd, target in fds.items():
            if have[fd] is None and name in FILTERED:
                nulls += 1          # the dentry was filtered: explained below
            else:
                assert have[fd] == target, f"{name} pid {pid} fd {fd}"
                ok += 1
    for pid in got:
        assert _late(truth, pid), f"pid {pid} has files but is not in the truth"
    assert nulls <= excluded(w, "open_files", "path")
    assert not lost or k.warnings       # an unreadable task or fd table is a warning
    if name not in FILTERED:
        assert w.total == 0, w.lines()
    return ok, nulls + lost


@pytest.mark.parametrize("name,kind", ALL_DUMPS)
@pytest.mark.fixtures
def test_open_files_match_proc_fd(name, kind):
    """Unfiltered dumps: every link.  Filtered ones: every path read is right;
    all of them unless slab pages were filtered too (SLAB_FILTERED)."""
    ok, unread = check_open_files(name, kernel(name, kind))
    total = sum(len(f) for f in expected_fds(fixture(name).truth).values())
    assert ok + unread == total
    if name not in SLAB_FILTERED:
        assert ok == total


@pytest.mark.fixtures
def test_open_files_pid_lookup():
    name = "6.1-live"
    k = kernel(name)
    want = expected_fds(fixture(name).truth)
    pid = max(want, key=lambda p: len(want[p]))
    rows, _ = run(k, "open_files", ["pid", "fd", "path"], keys={"pid": [pid]})
    assert {r["fd"]: r["path"] for r in rows} == want[pid]
    # a thread id is not a process: no rows (rows are per thread group)
    threads = [int(t) for t, v in fixture(name).truth["tasks"].items()
               if v["tgid"] != v["pid"]]
    rows, _ = run(k, "open_files", ["pid"], keys={"pid": threads[:3]})
    assert rows == []


# -- mounts -------------------------------------------------------------------------------------

def check_mounts(name: str, k: Kernel) -> int:
    want = fixture(name).truth["files"]["/proc/mounts"].splitlines()
    rows, w = run(k, "mounts", ["device", "path", "fstype", "options", "readonly",
                                "mnt_id", "parent_id"])
    lines = [f"{r['device']} {r['path']} {r['fstype']} {r['options']} 0 0" for r in rows]
    if name in SLAB_FILTERED:
        # a field on a filtered page is NULL, explained by an ExcludedPageError
        assert len(lines) == len(want)
        for r, line in zip(rows, want):
            fields = line.split(" ")
            for i, c in enumerate(("device", "path", "fstype", "options")):
                if r[c] is None:
                    assert excluded(w, "mounts", c)
                else:
                    assert r[c] == fields[i], (r, line)
    else:
        assert lines == want
    if name not in SLAB_FILTERED:
        assert w.total == 0 and not k.warnings, (w.lines(), k.warnings)
    by_path = {r["path"]: r for r in rows}
    for r in rows:
        if r["path"] is None or r["options"] is None:
            continue
        assert r["readonly"] == r["options"].startswith("ro")
        # the parent is the mount with the longest path prefix (the root: itself)
        parents = [p for p in by_path if p is not None and p != r["path"] and
                   (r["path"].startswith(p.rstrip("/") + "/"))]
        parent = max(parents, key=len) if parents else r["path"]
        if parent not in by_path:
            continue
        assert r["parent_id"] == by_path[parent]["mnt_id"]
    assert len({r["mnt_id"] for r in rows}) == len(rows)
    return len(lines)


@pytest.mark.parametrize("name,kind", ALL_DUMPS)
@pytest.mark.fixtures
def test_mounts_match_proc_mounts(name, kind):
    assert check_mounts(name, kernel(name, kind)) == \
        len(fixture(name).truth["files"]["/proc/mounts"].splitlines())


# -- vmas ----------------------------------------------------------------------------------------

def maps_line(r, pointer_size: int = 8) -> str:
    """A /proc/PID/maps line from vmas columns (fs/proc/task_mmu.c: the
    header padded to 25 + 6 * sizeof(void *) - 1 characters before a name)."""
    head = "%08x-%08x %s %08x %s %d " % (r["start"], r["end"], r["flags"], r["offset"],
                                        r["dev"], r["ino"])
    return head.ljust(24 + 6 * pointer_size) + " " + r["path"] if r["path"] else head


def check_vmas(name: str, k: Kernel) -> tuple[int, int]:
    """(lines equal, lines not read).  On unfiltered dumps every process's
    rows equal its maps.  On filtered dumps a row with NULLs, or a process
    whose task/maple nodes were dropped, is explained by warnings; the rows
    that were read are an in-order subset of the truth."""
    truth = fixture(name).truth
    cols = ["pid", "start", "end", "flags", "offset", "dev", "ino", "path"]
    rows, w = run(k, "vmas", cols)
    got = defaultdict(list)
    for r in rows:
        got[r["pid"]].append(r)
    ok = missing = 0
    for pid, p in truth["processes"].items():
        pid = int(pid)
        if pid in _gone(truth):
            continue
        want = p["maps"]
        have = got.pop(pid, [])
        if name in FILTERED:
            complete = [r for r in have if all(r[c] is not None for c in cols)]
            it = iter(want)
            for r in complete:
                line = maps_line(r, k.arch.pointer_size)
                assert any(line == x for x in it), f"{name} pid {pid}: {line!r} not in order"
            ok += len(complete)
            missing += len(want) - len(complete)
            continue
        assert [maps_line(r, k.arch.pointer_size) for r in have] == want, f"{name} pid {pid}"
        ok += len(want)
    for pid in got:
        assert _late(truth, pid), f"pid {pid} has mappings but is not in the truth"
    if missing:
        assert name in FILTERED
        assert k.warnings or excluded(w, "vmas", "path")
    if name not in FILTERED:
        assert w.total == 0 and not k.warnings
    return ok, missing


@pytest.mark.parametrize("name,kind", ALL_DUMPS)
@pytest.mark.fixtures
def test_vmas_match_proc_maps(name, kind):
    ok, missing = check_vmas(name, kernel(name, kind))
    truth = fixture(name).truth
    total = sum(len(p["maps"]) for pid, p in truth["processes"].items()
                if int(pid) not in _gone(truth))
    assert ok + missing == total
    if name not in SLAB_FILTERED:
        assert not missing


@pytest.mark.fixtures
def test_vmas_pid_lookup():
    name = "6.1-live"
    rows, _ = run(kernel(name), "vmas", ["pid", "start", "end", "flags", "offset", "dev",
                                         "ino", "path"], keys={"pid": [1]})
    assert [maps_line(r) for r in rows] == fixture(name).truth["processes"]["1"]["maps"]


# -- cmdline and environ -----------------------------------------------------------------------


@pytest.mark.parametrize("name", PROCESS_FIXTURES)
@pytest.mark.fixtures
def test_tasks_cmdline_column(name):
    """tasks.cmdline (helpers in kql.helpers.mm) equals /proc/PID/cmdline
    with arguments joined by spaces; NULL on -d 31 dumps."""
    k = kernel(name)
    truth = fixture(name).truth
    rows, w = run(k, "tasks", ["pid", "tgid", "mm", "cmdline"])
    seen = 0
    for r in rows:
        p = truth["processes"].get(str(r["pid"]))
        if p is None or r["pid"] != r["tgid"] or r["pid"] in _gone(truth):
            continue
        if r["mm"] is None:
            assert r["cmdline"] is None
        elif name in FILTERED:
            assert r["cmdline"] is None
            seen += 1
        else:
            assert r["cmdline"] == " ".join(p["cmdline"].rstrip("\0").split("\0"))
            seen += 1
    assert seen >= 10
    if name in FILTERED:
        assert excluded(w, "tasks", "cmdline") >= seen


def _environ_pairs(text: str) -> list[tuple[str, str | None]]:
    out = []
    for entry in text.split("\0"):
        if entry:
            n, eq, v = entry.partition("=")
            out.append((n, v if eq else None))
    return out


@pytest.mark.parametrize("name", PROCESS_FIXTURES)
@pytest.mark.fixtures
def test_environ_table(name):
    k = kernel(name)
    truth = fixture(name).truth
    rows, w = run(k, "environ", ["pid", "name", "value"])
    got = defaultdict(list)
    for r in rows:
        got[r["pid"]].append((r["name"], r["value"]))
    n = 0
    lost = []
    for pid, p in truth["processes"].items():
        pid = int(pid)
        if pid in _gone(truth) or not p["maps"]:
            continue                          # no mm: no rows
        if not got[pid]:
            lost.append(pid)                  # proven below
            continue
        if name in FILTERED:
            assert got[pid] == [(None, None)], pid
        else:
            assert got[pid] == _environ_pairs(p["environ"]), pid
        n += 1
    # a process without rows is one the dump lacks (its task on a filtered page)
    check_missing_tasks(fixture(name), k, lost)
    if name in FILTERED:
        assert excluded(w, "environ", "name") >= n
    else:
        assert w.total == 0
    assert n >= 10


# -- with a debug vmlinux ------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["6.1-live", "6.12-live"])
@pytest.mark.fixtures
def test_with_vmlinux(name):
    """The same truth with DWARF types from the debug vmlinux (BTF after it)."""
    k = kernel(name, vmlinux=True)
    check_mounts(name, k)
    assert check_open_files(name, k)[1] == 0
    ok, missing = check_vmas(name, k)
    assert ok and not missing


# -- corrupted on purpose ------------------------------------------------------------------------

class Corrupt:
    """Patch kernel memory as a fresh Kernel reads it: the physical reads of
    the kernel's address space see the patched bytes; the dump file is not
    touched.  ``put(vaddr, value, size=8)`` stores an integer."""

    def __init__(self, name: str, kind: str | None = None):
        fx = fixture(name)
        self.k = Kernel(fx.dump(kind or fx.kinds[0]))
        self.patches: dict[int, bytes] = {}
        mem = self.k.memory
        orig = mem._phys_read

        def read(paddr, size):
            data = orig(paddr, size)
            for p, b in self.patches.items():
                if p < paddr + size and p + len(b) > paddr:
                    buf = bytearray(data)
                    for i, byte in enumerate(b):
                        if 0 <= p + i - paddr < size:
                            buf[p + i - paddr] = byte
                    data = bytes(buf)
            return data

        mem._phys_read = read
        mem.flush()

    def put(self, vaddr: int, value: int, size: int = 8) -> None:
        self.patches[self.k.memory.translate(vaddr)] = value.to_bytes(size, "little")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.k.close()


@pytest.mark.fixtures
def test_mount_list_cycle():
    """6.1 keeps mounts on a list: a cycle ends the walk with a warning."""
    with Corrupt("6.1-live") as c:
        k = c.k
        mounts = list(for_each_mount(k))
        assert len(mounts) >= 4
        off = k.types.find_type("struct mount").offsetof("mnt_list")
        c.put(mounts[2].value_() + off, mounts[1].value_() + off)     # 3rd -> 2nd
        rows, _ = run(k, "mounts", ["path"])
        want = fixture("6.1-live").truth["files"]["/proc/mounts"].splitlines()[:3]
        assert [r["path"] for r in rows] == [line.split()[1] for line in want]
        assert any("cycle" in m for m in k.warnings)


@pytest.mark.fixtures
def test_mount_rbtree_cycle():
    """6.8+ keeps mounts in an rbtree: a child pointing back at the root ends
    the walk with a warning."""
    with Corrupt("6.12-live") as c:
        k = c.k
        ns = find_task(k, 1).nsproxy.mnt_ns
        assert not ns.has_member_("list")
        root = ns.mounts.rb_node.value_()
        node = root
        right = k.types.find_type("struct rb_node").offsetof("rb_right")
        while k.read_pointer(node + right):          # the rightmost node
            node = k.read_pointer(node + right)
        c.put(node + right, root)
        rows, _ = run(k, "mounts", ["path"])
        n = len(fixture("6.12-live").truth["files"]["/proc/mounts"].splitlines())
        assert n <= len(rows) < 2 * n
        assert any("cycle" in m for m in k.warnings)


@pytest.mark.fixtures
def test_maple_tree_cycle():
    """A maple node whose child slot points back at the root: each node is
    walked once, with a warning."""
    name = "6.1-live"
    with Corrupt(name) as c:
        k = c.k
        lay = None
        for task in for_each_process(k):
            mm = task.mm
            if not mm.value_():
                continue
            root = mm.mm_mt.ma_root.value_()
            ntype = (root >> 3) & 0xF
            enum = k.types.find_type("enum maple_type")
            if ntype in (enum.enum_value("maple_range_64"), enum.enum_value("maple_arange_64")):
                lay = (task, mm, root, ntype == enum.enum_value("maple_arange_64"))
                break
        assert lay, "no process with a two-level maple tree"
        task, mm, root, arange = lay
        t = k.types.find_type("struct maple_arange_64" if arange else "struct maple_range_64")
        node = root & ~0xFF
        c.put(node + t.offsetof("slot") + 8, root & ~3)     # slot 1 -> the root node
        pid = task.pid.value_()
        rows, _ = run(k, "vmas", ["pid", "start"], keys={"pid": [pid]})
        starts = [r["start"] for r in rows]
        assert starts == sorted(starts) and len(starts) < len(
            fixture(name).truth["processes"][str(pid)]["maps"])
        assert any("cycle at maple node" in m for m in k.warnings)


@pytest.mark.fixtures
def test_dentry_cycle_path_is_null():
    """Two dentries each other's parent: d_path stops with a warning and the
    path is NULL (counted), the other files are unaffected."""
    name = "6.1-live"
    truth = fixture(name).truth
    pid, fds = next((p, f) for p, f in expected_fds(truth).items()
                    if sum(1 for x in f.values() if x.startswith("/mnt/data/")) >= 2)
    with Corrupt(name) as c:
        k = c.k
        task = find_task(k, pid)
        files = {fd: f for fd, f in for_each_file(task)}
        a, b = [fd for fd in sorted(fds) if fds[fd].startswith("/mnt/data/")][:2]
        off = k.types.find_type("struct dentry").offsetof("d_parent")
        da = files[a].f_path.dentry.value_()
        db = files[b].f_path.dentry.value_()
        c.put(da + off, db)
        c.put(db + off, da)
        rows, w = run(k, "open_files", ["fd", "path"], keys={"pid": [pid]})
        got = {r["fd"]: r["path"] for r in rows}
        assert got[a] is None and got[b] is None
        assert {fd: p for fd, p in got.items() if fd not in (a, b)} == \
            {fd: p for fd, p in fds.items() if fd not in (a, b)}
        assert w.counts[("open_files.path", "ValueError")] == 2
        assert any("d_path" in m for m in k.warnings)
        with pytest.raises(ValueError):
            d_path(files[a].f_path)


@pytest.mark.fixtures
def test_corrupt_fdtable_size():
    """An absurd max_fds: that process's files end with a warning; the walk
    does not try to read 2**31 pointers."""
    name = "6.1-live"
    want = expected_fds(fixture(name).truth)
    with Corrupt(name) as c:
        k = c.k
        task = find_task(k, 1)
        fdt = task.files.fdt.value_()
        off = k.types.find_type("struct fdtable").offsetof("max_fds")
        c.put(fdt + off, 0x7FFFFFFF, 4)
        rows, _ = run(k, "open_files", ["pid", "fd", "path"])
        got = defaultdict(dict)
        for r in rows:
            got[r["pid"]][r["fd"]] = r["path"]
        assert 1 not in got
        assert got[max(want)] == want[max(want)]
        assert any("max_fds" in m for m in k.warnings)


@pytest.mark.fixtures
def test_helpers_directly():
    """The helpers under the tables, on one fixture: mount fields and d_path
    of every open file."""
    name = "6.12-live"
    k = kernel(name)
    truth = fixture(name).truth
    lines = [f"{mount_devname(m)} {mount_path(m)} {mount_fstype(m)} {mount_options(m)} 0 0"
             for m in for_each_mount(k)]
    assert lines == truth["files"]["/proc/mounts"].splitlines()
    want = expected_fds(truth)
    for task in for_each_process(k):
        pid = task.pid.value_()
        if pid in want:
            assert {fd: d_path(f.f_path).decode() for fd, f in for_each_file(task)} == want[pid]


# -- names the fixtures do not show, through the kernel's own operation tables ---------------

@pytest.mark.parametrize("name", ["6.1-live", "6.12-live"])
@pytest.mark.fixtures
def test_pseudo_file_names_from_kernel_dentry_operations(name):
    """A dentry given the kernel's own anon-inode / pidfs ``dentry_operations``
    is named by that ``d_dname`` (anon_inode:NAME, anon_inode:[pidfd]); an
    unhashed dentry gets `` (deleted)``."""
    truth = fixture(name).truth
    pid, fds = next((p, f) for p, f in expected_fds(truth).items()
                    if sum(1 for x in f.values() if x.startswith("/mnt/data/")) >= 2)
    a, b = [fd for fd in sorted(fds) if fds[fd].startswith("/mnt/data/")][:2]
    with Corrupt(name) as c:
        k = c.k
        files = dict(for_each_file(find_task(k, pid)))
        dt = k.types.find_type("struct dentry")
        da = files[a].f_path.dentry.value_()
        db = files[b].f_path.dentry.value_()
        c.put(da + dt.offsetof("d_op"), k.symbol("anon_inodefs_dentry_operations").address)
        c.put(db + dt.offsetof("d_hash") + 8, 0)        # d_hash.pprev: unhashed
        rows, w = run(k, "open_files", ["fd", "path"], keys={"pid": [pid]})
        got = {r["fd"]: r["path"] for r in rows}
        assert got[a] == "anon_inode:" + fds[a].rsplit("/", 1)[1]
        assert got[b] == fds[b] + " (deleted)"
        assert w.total == 0
        pidfs = k.symbols.get("pidfs_dentry_operations")
        if pidfs is not None:                          # Linux 6.9+
            c.put(da + dt.offsetof("d_op"), pidfs.address)
            assert d_path(files[a].f_path) == b"anon_inode:[pidfd]"


@pytest.mark.parametrize("name", ["6.1-live", "6.12-live"])
@pytest.mark.fixtures
def test_mount_flags_in_options(name):
    """Mount and superblock flags print in show_vfsmnt()'s order, before the
    filesystem's own options."""
    want = fixture(name).truth["files"]["/proc/mounts"].splitlines()
    line = next(x for x in want if x.split()[2] == "tmpfs" and x.split()[3].startswith("rw,"))
    dev, path, fstype, opts = line.split()[:4]
    with Corrupt(name) as c:
        k = c.k
        m = next(m for m in for_each_mount(k) if mount_path(m) == path)
        flags = m.mnt.mnt_flags
        # MNT_NOSUID | MNT_NODEV | MNT_NOEXEC | MNT_NOSYMFOLLOW
        c.put(flags.address_, flags.value_() | 0x01 | 0x02 | 0x04 | 0x80, 4)
        rest = opts[len("rw,"):]
        assert mount_options(m) == "rw,nosuid,nodev,noexec," + rest.replace(
            "relatime", "relatime,nosymfollow", 1)


@pytest.mark.fixtures
def test_user_memory_never_zeros_with_zero_excluded():
    """zero_excluded reads filtered kernel pages as zeros; user memory still
    reports them as missing, so cmdline/environ stay NULL, never ''."""
    name = sorted(FILTERED - SLAB_FILTERED - set(I386))[0]
    fx = fixture(name)
    with open_kernel(fx.dump(), zero_excluded=True) as k:
        for pid in (1, max(int(p) for p, v in fx.truth["processes"].items() if v["maps"]
                           and int(p) not in _gone(fx.truth))):
            task = find_task(k, pid)
            with pytest.raises(ExcludedPageError):
                task_cmdline_bytes(task)
            with pytest.raises(ExcludedPageError):
                task_environ_bytes(task)
        rows, w = run(k, "environ", ["pid", "name"], keys={"pid": [1]})
        assert rows == [{"pid": 1, "name": None}]
        assert excluded(w, "environ", "name") == 1
