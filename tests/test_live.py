"""Live analysis through /proc/kcore, on the host: a synthetic kcore built from
the 6.1-live fixture's ELF vmcore (tests/kcore_synth.py) in a synthetic root
($KQL_LIVE_ROOT) with the /proc and /sys files a running kernel has.  The
real thing runs inside a QEMU guest (tests/live/).

Expected values come from the same memory read as a dump (the fixture's
ELF, and the guest's /proc in truth.json), never from literals about what
the dump contains.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest

import kcore_synth
from fixtures import fixture, stable_tasks

pytestmark = pytest.mark.fixtures

FIXTURE = "6.1-live"


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    """(kcore path, facts) for the fixture's ELF dump."""
    d = tmp_path_factory.mktemp("kcore")
    path = d / "kcore.img"
    facts = kcore_synth.build_kcore(fixture(FIXTURE).dump("elf"), path)
    yield path, facts
    path.unlink()


@pytest.fixture
def root(synth, tmp_path):
    return kcore_synth.build_root(tmp_path / "root", synth[0])


@pytest.fixture(scope="module", params=["6.1-live", "6.12-live"])
def any_root(request, tmp_path_factory):
    """(fixture name, ROOT) for each x86_64 kernel the live guests run."""
    d = tmp_path_factory.mktemp("kcore-" + request.param)
    kcore_synth.build_kcore(fixture(request.param).dump("elf"), d / "kcore.img")
    yield request.param, kcore_synth.build_root(d / "root", d / "kcore.img")
    (d / "kcore.img").unlink()


@pytest.fixture(scope="module")
def elf_kernel():
    from kql.kernel import Kernel
    k = Kernel(fixture(FIXTURE).dump("elf"))
    yield k
    k.close()


def kql(*args, env=None, stdin=None):
    e = dict(os.environ)
    e.pop("KQL_DEBUG", None)
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "kql.cli", *args], capture_output=True,
                          text=True, env=e, input=stdin)


def sparse_copy(src, dst):
    """A copy of a synthetic kcore that keeps its holes (700 MB apparent)."""
    subprocess.run(["cp", "--sparse=always", str(src), str(dst)], check=True)


def rows(table):
    return table.to_pylist()


# -- the format ---------------------------------------------------------------------

def test_kcore_is_sniffed_by_content(root):
    from kql.dump import open_dump
    with open_dump(str(root / "proc/kcore")) as d:
        assert (d.format, d.live, d.machine) == ("kcore", True, "x86_64")
        assert d.release == fixture(FIXTURE).release
        assert "CRASHTIME" not in d.vmcoreinfo          # nothing panicked
        assert [n.type for n in d.notes if n.name == "CORE"] == [1, 3, 4]
        assert d.prstatus() == []                       # its NT_PRSTATUS is all zeros
    copy = root.parent / "not-called-kcore"
    os.symlink(root / "proc/kcore", copy)               # the name plays no part
    with open_dump(str(copy)) as d:
        assert d.format == "kcore"


def test_an_elf_vmcore_is_not_a_kcore():
    from kql.dump import open_dump
    with open_dump(fixture(FIXTURE).dump("elf")) as d:
        assert (d.format, d.live) == ("elf", False)


def test_virtual_reads_come_from_segments(root, synth, elf_kernel):
    """A direct-map or text address is read from its kcore segment with no
    page-table walk; an address no segment covers (vmemmap) goes through the
    walk over the RAM segments; both read what the ELF dump holds."""
    from kql.kernel import Kernel
    facts = synth[1]
    with Kernel(str(root / "proc/kcore"), cache_dir=False) as k:
        init = k.symbols.get("init_task").address
        task = elf_kernel.symbols.get("init_task").address
        assert init == task
        assert k.read(init, 4096) == elf_kernel.read(init, 4096)
        first_task = elf_kernel.read_u64(init + elf_kernel.find_type(
            "struct task_struct").offsetof("tasks")) - 0      # a direct-map address
        assert facts["page_offset"] <= first_task < facts["page_offset"] + (1 << 40)
        assert k.read(first_task, 256) == elf_kernel.read(first_task, 256)
        assert k.memory.walker._tlb == {}                     # no walk so far
        assert k.memory.translate(first_task) == elf_kernel.memory.translate(first_task)
        vmemmap = k.read_u64(k.symbols.get("vmemmap_base").address)
        assert k.read(vmemmap, 64) == elf_kernel.read(vmemmap, 64)
        assert k.memory.walker._tlb != {}                     # that one walked


# -- tables ---------------------------------------------------------------------------

def test_tasks_match_the_dump_and_the_guest(any_root):
    """Every column of the stable tasks agrees with the ELF dump of the same
    memory and with the guest's /proc; running tasks' stack is NULL with the
    reason, sleeping tasks' stack is the dump's."""
    import kql
    name, root = any_root
    fx = fixture(name)
    q = "SELECT task, pid, comm, ppid, state, active, cpu, stack FROM tasks ORDER BY task"
    with kql.open_live(str(root)) as live:
        res = live.session.execute(q)[-1]
        got = rows(res.table)
        lines = res.warnings.lines()
    with kql.open(fx.dump("elf")) as d:
        want = rows(d.query(q))
    assert len(got) == len(want) > 20
    running = [w for w in want if w["active"]]
    assert running and all(w["stack"] for w in running)    # the dump has their registers
    for g, w in zip(got, want):
        if w["active"]:
            assert g["stack"] is None, g
            g = dict(g, stack=w["stack"])
        assert g == w
    examples = [f"{len(running)} value{'s' if len(running) > 1 else ''} of tasks.stack "
                f"unreadable (e.g. task {w['pid']} is running on CPU {w['cpu']}: a live kernel "
                f"has no saved registers for it)" for w in running]
    assert len(lines) == 1 and lines[0] in examples, lines
    truth = stable_tasks(fx.truth)
    by_pid = {g["pid"]: g for g in got}
    for pid, t in truth.items():
        assert (by_pid[pid]["comm"], by_pid[pid]["ppid"]) == (t["comm"], t["ppid"]), pid


@pytest.mark.parametrize("query", [
    "SELECT * FROM modules ORDER BY name",
    "SELECT * FROM mounts",
    "SELECT pid, fd, path FROM open_files ORDER BY pid, fd",
    "SELECT * FROM net_devices",
])
def test_tables_match_the_dump(any_root, query):
    import kql
    name, root = any_root
    with kql.open_live(str(root)) as live, kql.open(fixture(name).dump("elf")) as d:
        got, want = rows(live.query(query)), rows(d.query(query))
    assert got == want and got


def test_sys_says_live(root):
    import kql
    fx = fixture(FIXTURE)
    with kql.open_live(str(root)) as live:
        r = rows(live.query("SELECT release, nodename, dump_format FROM sys"))
    assert r == [{"release": fx.release, "nodename": fx.truth["hostname"],
                  "dump_format": "kcore"}]


def test_a_task_that_exits_mid_walk_is_skipped(synth, tmp_path):
    """A task whose thread link list_del_rcu() poisoned while we walked it
    (release_task()) is left out, with a warning; the others stay."""
    import kql
    from kql.kernel import Kernel
    path = tmp_path / "kcore"
    sparse_copy(synth[0], path)
    with Kernel(str(path), cache_dir=False) as k:
        t = k.find_type("struct task_struct")
        off = t.offsetof("thread_node") + 8
        from kql.helpers.pid import find_task
        victim = find_task(k, 1).value_()
        where = _file_offset(path, k.memory.translate(victim + off))
    with open(path, "r+b") as f:
        f.seek(where)
        f.write((0xDEAD000000000122).to_bytes(8, "little"))
    root = kcore_synth.build_root(tmp_path / "root", path)
    with kql.open_live(str(root)) as live:
        got = rows(live.query("SELECT pid FROM tasks"))
        warnings = live.kernel.warnings
    assert 1 not in {r["pid"] for r in got} and len(got) > 20
    assert warnings == [f"for_each_task: task {victim:#x} exited during the query: skipped"]


def _file_offset(kcore: Path, paddr: int) -> int:
    """Where physical address ``paddr`` is in a kcore (its RAM segment by p_paddr)."""
    import struct
    data = kcore.read_bytes()[:64 * 1024]
    phoff, = struct.unpack_from("<Q", data, 32)
    phnum, = struct.unpack_from("<H", data, 56)
    for i in range(phnum):
        typ, _fl, off, _va, pa, filesz, _ms, _al = struct.unpack_from("<IIQQQQQQ", data,
                                                                      phoff + 56 * i)
        if typ == 1 and pa != (1 << 64) - 1 and pa <= paddr < pa + filesz:
            return off + paddr - pa
    raise AssertionError(f"{paddr:#x} not in a RAM segment")


def test_each_statement_reads_memory_afresh(synth, tmp_path):
    """Two queries of one session: the second sees memory as it is then (the
    page cache is emptied between statements), within one it is consistent."""
    import kql
    from kql.helpers.pid import find_task
    path = tmp_path / "kcore"
    sparse_copy(synth[0], path)
    root = kcore_synth.build_root(tmp_path / "root", path)
    with kql.open_live(str(root)) as live:
        k = live.kernel
        assert rows(live.query("SELECT comm FROM tasks WHERE pid = 1")) == [{"comm": "init"}]
        comm = find_task(k, 1).comm.address_
        where = _file_offset(path, k.memory.translate(comm))
        with open(path, "r+b") as f:
            f.seek(where)
            f.write(b"tini")
        assert k.read(comm, 4) == b"init"               # cached until the next statement
        assert rows(live.query("SELECT comm FROM tasks WHERE pid = 1")) == [{"comm": "tini"}]


def test_btf_from_sys_kernel_btf(synth, tmp_path, elf_kernel):
    from kql.kernel import Kernel
    start, stop = (elf_kernel.symbols.get(n).address for n in ("__start_BTF", "__stop_BTF"))
    blob = elf_kernel.read(start, stop - start)
    root = kcore_synth.build_root(tmp_path / "good", synth[0], btf=blob)
    with Kernel(str(root / "proc/kcore"), cache_dir=False) as k:
        before = k.dump.stats.pages_read
        assert k.btf.find_type("struct task_struct").size == \
            elf_kernel.find_type("struct task_struct").size
        assert k.dump.stats.pages_read - before < 8     # the file, not kcore pages
        assert k.warnings == []
    root = kcore_synth.build_root(tmp_path / "bad", synth[0], btf=b"not BTF")
    with Kernel(str(root / "proc/kcore"), cache_dir=False) as k:
        assert k.btf.find_type("struct task_struct").size > 0     # from memory instead
        assert [w.split(" (")[0] for w in k.warnings] == ["/sys/kernel/btf/vmlinux unusable"]


def test_module_btf_from_sys_kernel_btf(synth, tmp_path, elf_kernel):
    """/sys/kernel/btf/<module> files are the modules' split BTF (a name the
    kernel's btf_modules list does not have shows it is the files that count)."""
    from kql.kernel import Kernel
    want = elf_kernel.module_btfs()
    assert want
    start, stop = (elf_kernel.symbols.get(n).address for n in ("__start_BTF", "__stop_BTF"))
    root = kcore_synth.build_root(tmp_path / "root", synth[0],
                                  btf=elf_kernel.read(start, stop - start))
    for name, btf in want.items():
        (root / "sys/kernel/btf" / f"copy_of_{name}").write_bytes(btf.data)
    with Kernel(str(root / "proc/kcore"), cache_dir=False) as k:
        got = k.module_btfs()
        assert sorted(got) == sorted(f"copy_of_{n}" for n in want)
        assert [got[f"copy_of_{n}"].data for n in want] == [b.data for b in want.values()]


# -- symbols from /proc/kallsyms (kernels whose VMCOREINFO has no kallsyms) ------------

def _kallsyms_text(k, zero=False) -> str:
    t = k.symbols
    return "".join(f"{0 if zero else a:016x} {kind} {name}\n"
                   for a, kind, name in zip(t.addresses, t.kinds, t.names)) + \
        f"{0 if zero else t.addresses[-1]:016x} t some_fn\t[some_module]\n"


def _without_kallsyms_keys(path):
    from kql.dump import open_dump
    d = open_dump(str(path))
    for key in [k for k in d.vmcoreinfo if "kallsyms" in k]:
        del d.vmcoreinfo[key]
    return d


def test_proc_kallsyms_when_vmcoreinfo_has_none(synth, tmp_path, elf_kernel):
    from kql.kernel import Kernel
    root = kcore_synth.build_root(tmp_path / "root", synth[0],
                                  kallsyms=_kallsyms_text(elf_kernel))
    with Kernel(_without_kallsyms_keys(root / "proc/kcore"), cache_dir=False) as k:
        assert k.symbols.get("init_task").address == \
            elf_kernel.symbols.get("init_task").address
        assert k.symbols.get("some_fn") is None          # a module's: not vmlinux's


def test_kptr_restrict_error(synth, tmp_path, elf_kernel):
    from kql.errors import DumpError
    from kql.kernel import Kernel
    root = kcore_synth.build_root(tmp_path / "root", synth[0], kptr_restrict=2,
                                  kallsyms=_kallsyms_text(elf_kernel, zero=True))
    k = Kernel(_without_kallsyms_keys(root / "proc/kcore"), cache_dir=False)
    with pytest.raises(DumpError) as e:
        k.symbols
    k.close()
    assert str(e.value) == (
        f"{root}/proc/kallsyms shows no addresses (kernel.kptr_restrict=2 hides them): run kql "
        f"as root with kernel.kptr_restrict=0 or 1 (sysctl kernel.kptr_restrict=1), or give "
        f"--system-map")


# -- the command line and the API ---------------------------------------------------------

def test_cli_forms(root):
    env = {"KQL_LIVE_ROOT": str(root)}
    q = "SELECT pid, comm FROM tasks WHERE pid = 1"
    want = "pid,comm\n1,init\n"
    a = kql("live", q, "-f", "csv", env=env)
    b = kql(str(root / "proc/kcore"), q, "-f", "csv")
    c = kql("live", "-f", "csv", env=env, stdin=q + ";\n" + q + ";\n")   # the shell, as a script
    assert (a.returncode, a.stdout, a.stderr) == (0, want, "")
    assert (b.returncode, b.stdout, b.stderr) == (0, want, "")
    assert (c.returncode, c.stdout) == (0, want + want), c.stderr
    saved = kql("live", "@hung-tasks", "-f", "csv", env=env)
    with_dump = kql(fixture(FIXTURE).dump("elf"), "@hung-tasks", "-f", "csv")
    assert saved.returncode == 0 and saved.stdout == with_dump.stdout, saved.stderr


def test_vmlinux_and_system_map_still_apply(root):
    fx = fixture(FIXTURE)
    env = {"KQL_LIVE_ROOT": str(root)}
    q = "SELECT pid, comm, task->mm->map_count AS n FROM tasks WHERE pid = 1"
    plain = kql("live", q, "-f", "csv", env=env)
    assert plain.returncode == 0 and plain.stdout.count("\n") == 2, plain.stderr
    for opt in (["--vmlinux", fx.vmlinux], ["--system-map", fx.system_map]):
        p = kql("live", q, "-f", "csv", *opt, env=env)
        assert (p.returncode, p.stdout) == (0, plain.stdout), (opt, p.stderr)


def test_export_live_twice_is_two_dumps(root, tmp_path):
    """`kql export live`: each export of a running kernel is another moment,
    so another dump_id (the files of one boot are otherwise identical)."""
    import pyarrow.parquet as pq
    env = {"KQL_LIVE_ROOT": str(root)}
    out = tmp_path / "exports"
    for _ in range(2):
        p = kql("export", "live", "-o", str(out), "--tables", "modules", "-j", "1", env=env)
        assert p.returncode == 0, p.stderr
    manifest = pq.read_table(out / "dumps").to_pylist()
    assert len({m["dump_id"] for m in manifest}) == 2
    assert {m["format"] for m in manifest} == {"kcore"}


def test_crash_bt_says_why_a_running_task_has_no_frames(root):
    p = kql("live", "--crash", "bt -a", env={"KQL_LIVE_ROOT": str(root)})
    assert p.returncode == 0, p.stderr
    headers = [line for line in p.stdout.splitlines() if line.startswith("PID: ")]
    assert len(headers) >= 1
    assert not [line for line in p.stdout.splitlines() if line.startswith(" #")]   # no frame
    first = headers[0].split()          # PID: N TASK: … CPU: C COMMAND: …
    pid, cpu = first[1], first[first.index("CPU:") + 1]
    assert p.stdout.splitlines()[-1] == (
        f"bt: {len(headers)} value{'s' if len(headers) > 1 else ''} of stack_frames.task "
        f"unreadable (e.g. task {pid} is running on CPU {cpu}: a live kernel has no saved "
        f"registers for it)")


def test_a_file_called_live_is_a_dump(tmp_path):
    (tmp_path / "live").write_bytes(b"nothing")
    p = subprocess.run([sys.executable, "-m", "kql.cli", "live", "SELECT 1"], cwd=tmp_path,
                       capture_output=True, text=True,
                       env=dict(os.environ, PYTHONPATH=str(Path(__file__).parents[1])))
    assert p.returncode == 2
    assert p.stderr.startswith("kql: error: live: ")


# -- errors: one line saying what to do, exit 2 --------------------------------------------

NO_KCORE = ("no such file: this kernel has no /proc/kcore (built without CONFIG_PROC_KCORE); "
            "take a dump (kdump, or QEMU dump-guest-memory) and query that instead")
LOCKED = ("the kernel is locked down ({}), which refuses /proc/kcore: boot with lockdown=none "
          "(and Secure Boot off) to query it live, or query a kdump dump")
NOT_ROOT = ("permission denied: reading the live kernel needs root (CAP_SYS_RAWIO): run kql as "
            "root (sudo kql live ...)")


def refused(root, why: str) -> str:
    return f"kql: error: {root}/proc/kcore: {why}\n"


@pytest.mark.parametrize("kcore, lockdown, why", [
    (False, None, NO_KCORE),
    (True, "none integrity [confidentiality]", LOCKED.format("confidentiality")),
])
def test_refused_before_reading(synth, tmp_path, kcore, lockdown, why):
    root = kcore_synth.build_root(tmp_path / "root", synth[0] if kcore else None,
                                  lockdown=lockdown)
    p = kql("live", "SELECT 1", env={"KQL_LIVE_ROOT": str(root)})
    assert (p.returncode, p.stdout, p.stderr) == (2, "", refused(root, why))


@pytest.mark.parametrize("mode", ["integrity", None])
def test_eperm(root, monkeypatch, capsys, mode):
    """The kernel's open_kcore() refuses with EPERM without CAP_SYS_RAWIO; lockdown in
    integrity mode does not refuse kcore (LOCKDOWN_KCORE is a confidentiality
    reason), so it is not blamed."""
    import kql.atomic
    from kql.cli import main
    if mode:
        (root / "sys/kernel/security/lockdown").write_text(f"none [{mode}] confidentiality\n")

    def refuse(path, what="file"):
        raise PermissionError(errno.EPERM, os.strerror(errno.EPERM), path)
    monkeypatch.setattr(kql.atomic, "open_regular", refuse)
    monkeypatch.setenv("KQL_LIVE_ROOT", str(root))
    assert main(["live", "SELECT 1"]) == 2
    err = capsys.readouterr().err
    assert err == refused(root, NOT_ROOT)


def test_not_root(tmp_path):
    """/proc/kcore is mode 0400 root: anyone else gets EACCES."""
    root = kcore_synth.build_root(tmp_path / "root", None)
    (root / "proc/kcore").write_bytes(b"")
    os.chmod(root / "proc/kcore", 0)
    cmd = [sys.executable, "-m", "kql.cli", "live", "SELECT 1"]
    if os.geteuid() == 0:        # root reads any file: drop the capabilities that let it
        caps = "-dac_override,-dac_read_search"
        cmd = ["setpriv", f"--inh-caps={caps}", f"--bounding-set={caps}", *cmd]
    p = subprocess.run(cmd, capture_output=True, text=True,
                       env=dict(os.environ, KQL_LIVE_ROOT=str(root)))
    assert (p.returncode, p.stdout) == (2, "")
    assert p.stderr == refused(root, NOT_ROOT)
