"""crash's commands (kql.crashcmd): each prints the same facts as its SQL twin,
and ps / bt / mod / log agree with what the guest's /proc said (truth.json).
Also the catalog pieces they stand on: stack_words' frame columns, user_regs,
struct_text, the config table.

The SQL twins are written here independently of the commands' own SQL; the
expected values of the truth checks come from truth.json, never the dump.
"""

from __future__ import annotations

import gzip
import re
import subprocess
import sys

import pytest

from fixtures import fixture, kernel
from kql.crashcmd import COMMANDS, Crash, split_pipe, is_crash_command
from kql.errors import QueryError
from kql.execute import Session

# the shipped sample plus a dump of each kernel series (marked: they read built fixtures)
DUMPS = ["sample"] + [pytest.param(n, marks=pytest.mark.fixtures)
                     for n in ("6.1-live", "6.12-live")]


def crash(name: str) -> Crash:
    return Crash(Session({None: kernel(name)}))


def sql(name: str, text: str) -> list[dict]:
    res = Session({None: kernel(name)}).execute(text)[-1]
    cols = res.columns
    names = cols.column_names
    return [dict(zip(names, r)) for r in zip(*(cols.pylist(i) for i in range(len(names))))]


def hexint(s: str) -> int:
    return int(s, 16)


# ---------------------------------------------------------------- parsing input

def test_pipe_split_and_command_words():
    assert split_pipe("ps | grep UN") == ("ps", "grep UN")
    assert split_pipe("sym 'a|b'") == ("sym 'a|b'", None)
    assert split_pipe("log") == ("log", None)
    assert is_crash_command("bt -f 1") and is_crash_command("  ps")
    # no SQL statement starts with a command word
    for s in ("SELECT 1", "WITH x AS (SELECT 1) SELECT * FROM x", "EXPLAIN SELECT 1", ""):
        assert not is_crash_command(s)


def test_bad_arguments_are_one_line_errors():
    c = crash("sample")
    for line, msg in [("bt -x 1", "bt: unknown option -x (bt [-a|-f|-r] [PID])"),
                      ("bt abc", "bt: invalid task or pid value: abc"),
                      ("bt 99999", "invalid task or pid value: 99999"),
                      ("kmem -s", "kmem: only kmem -i is translated (see meminfo and slabs)"),
                      ("struct task_struct", "struct: give TYPE ADDRESS (struct task_struct ffff…)"),
                      ("struct nosuch ffff", "struct: invalid data structure reference: struct nosuch"),
                      ("rd jiffies x", "rd: invalid count: x"),
                      ("sym no_such_symbol_here", "sym: no_such_symbol_here: symbol not found"),
                      ("nosuch", "nosuch: not a crash command (help lists them)")]:
        with pytest.raises(QueryError) as e:
            c.run(line)
        assert str(e.value) == msg


# ---------------------------------------------------------------- commands vs SQL

@pytest.mark.parametrize("name", DUMPS)
def test_ps_is_tasks(name):
    out = crash(name).run("ps").splitlines()
    assert out[0].split() == ["PID", "PPID", "CPU", "TASK", "ST", "%MEM", "VSZ", "RSS", "COMM"]
    got = []
    for line in out[1:]:
        active, rest = line[0] == ">", line[1:].split()
        got.append((active, int(rest[0]), int(rest[1]), hexint(rest[3]), rest[4],
                    int(rest[6]), int(rest[7]), rest[8]))
    rows = sql(name, "SELECT active, pid, ppid, task, st, vsz_bytes, rss_bytes, comm, "
                     "is_kthread FROM tasks ORDER BY pid, cpu")
    want = [(r["active"], r["pid"], r["ppid"] or 0, r["task"], r["st"],
             (r["vsz_bytes"] or 0) // 1024, (r["rss_bytes"] or 0) // 1024,
             f"[{r['comm']}]" if r["is_kthread"] or r["pid"] == 0 else r["comm"]) for r in rows]
    assert got == want
    # and what the guest said: every task it listed (but the printer) is there
    truth = fixture(name).truth
    shown = {(p, c.strip("[]")) for _a, p, _pp, _t, _s, _v, _r, c in got}
    for pid, t in truth["tasks"].items():
        if int(pid) not in truth["transient_pids"]:
            assert (int(pid), t["comm"]) in shown


@pytest.mark.parametrize("name", DUMPS)
def test_bt_f_is_stack_frames_and_words(name):
    c = crash(name)
    out = c.run("bt -f 1")
    frames = sql(name, "SELECT level, sp, pc, function FROM stack_frames WHERE pid = 1 "
                       "ORDER BY level")
    words = sql(name, "SELECT level, address, value FROM stack_words WHERE pid = 1 "
                      "ORDER BY address")
    lines = out.splitlines()
    assert lines[0].startswith("PID: 1 ")
    got_frames, got_words, level = [], [], None
    for line in lines[1:]:
        m = re.match(r" #(\d+) *\[([0-9a-f]{16})\] (\S+) at ([0-9a-f]{16})$", line)
        if m:
            level = int(m.group(1))
            got_frames.append((level, hexint(m.group(2)), hexint(m.group(4)), m.group(3)))
            continue
        m = re.match(r"    ([0-9a-f]{16}): ((?:[0-9a-f]{16} ?){1,2})$", line)
        if m:
            a = hexint(m.group(1))
            for i, v in enumerate(m.group(2).split()):
                got_words.append((level, a + 8 * i, hexint(v)))
    assert got_frames == [(f["level"], f["sp"], f["pc"], f["function"]) for f in frames]
    assert got_words == [(w["level"], w["address"], w["value"]) for w in words]
    # /proc/1/stack (no scheduler frames) is the tail of bt's functions, in order
    names = [f[3] for f in got_frames]
    want = fixture(name).truth["tasks"]["1"]["stack"]
    assert names[len(names) - len(want):] == want


@pytest.mark.parametrize("name", DUMPS)
def test_bt_r_is_stack_words(name):
    out = crash(name).run("bt -r 1").splitlines()[1:]
    words = sql(name, "SELECT address, value, symbol FROM stack_words WHERE pid = 1 "
                      "ORDER BY address")
    cells = []
    for line in out:
        if line:
            a, _, rest = line.partition(":  ")
            cells += [(hexint(a) + 8 * i, v) for i, v in enumerate(rest.split())]
    assert cells == [(w["address"], w["symbol"] or f"{w['value']:016x}") for w in words]


def test_bt_default_and_user_registers():
    c = crash("sample")
    out = c.run("bt")
    panic = fixture("sample").truth["panic_pid"]
    assert out.startswith(f"PID: {panic} ")
    regs = {r["name"]: r["value"] for r in sql(
        "sample", f"SELECT name, value FROM user_regs WHERE pid = {panic}")}
    for name, value in regs.items():
        assert f"{name.upper()}: {value:016x}" in out


@pytest.mark.parametrize("name", DUMPS)
def test_user_regs_are_user_mode_entries(name):
    """The saved user stack pointer of every user task is in its [stack] or
    another of its VMAs, and its code/stack selectors are user mode (CPL 3)."""
    regs = sql(name, "SELECT pid, name, value FROM user_regs")
    by_pid = {}
    for r in regs:
        by_pid.setdefault(r["pid"], {})[r["name"]] = r["value"]
    users = {r["pid"] for r in sql(name, "SELECT pid FROM tasks WHERE NOT is_kthread "
                                         "AND pid > 0 AND mm IS NOT NULL")}
    assert users and set(by_pid) == users
    vmas = sql(name, "SELECT pid, start, \"end\" FROM vmas")
    for pid, r in by_pid.items():
        assert r["cs"] & 3 == 3 and r["ss"] & 3 == 3
        spans = [(v["start"], v["end"]) for v in vmas if v["pid"] == pid]
        assert not spans or any(s <= r["rsp"] < e for s, e in spans), pid
    assert not sql(name, "SELECT * FROM user_regs WHERE pid = 2")  # kthreadd: none


@pytest.mark.parametrize("name", DUMPS)
def test_mod_log_are_modules_and_dmesg(name):
    c = crash(name)
    mods = sql(name, "SELECT module, name, base, size FROM modules ORDER BY name")
    lines = c.run("mod").splitlines()[1:]
    assert [tuple(x.split()) for x in lines] == [
        (f"{m['module']:016x}", m["name"], f"{m['base']:016x}", str(m["size"])) for m in mods]
    assert sorted(m["name"] for m in mods) == sorted(fixture(name).truth["modules"])
    log = c.run("log")
    recs = sql(name, "SELECT ts_ns, text FROM dmesg ORDER BY seq")
    assert log == "".join(f"[{r['ts_ns'] // 10**9:5}.{r['ts_ns'] % 10**9 // 1000:06}] "
                          f"{r['text']}\n" for r in recs)
    log = log.splitlines()
    for marker in fixture(name).truth["markers"]:
        assert any(marker in x for x in log)


@pytest.mark.parametrize("name", DUMPS)
def test_files_vm_net_mount(name):
    c = crash(name)
    files = sql(name, "SELECT fd, file, type, path FROM open_files WHERE pid = 1 ORDER BY fd")
    got = [x.split() for x in c.run("files 1").splitlines()[2:]]
    assert [(int(g[0]), hexint(g[1]), g[4], g[5] if len(g) > 5 else None) for g in got] == \
        [(f["fd"], f["file"], f["type"] or "?", f["path"]) for f in files]
    vmas = sql(name, "SELECT vma, start, \"end\", path FROM vmas WHERE pid = 1 ORDER BY start")
    got = [x.split() for x in c.run("vm 1").splitlines()[4:]]
    assert [(hexint(g[0]), hexint(g[1]), hexint(g[2]), g[4] if len(g) > 4 else None)
            for g in got] == [(v["vma"], v["start"], v["end"], v["path"] or None) for v in vmas]
    devs = sql(name, "SELECT net_device, name FROM net_devices ORDER BY ifindex")
    got = [x.split()[:2] for x in c.run("net").splitlines()[1:]]
    assert got == [[f"{d['net_device']:016x}", d["name"]] for d in devs]
    mounts = sql(name, "SELECT mount, fstype, path FROM mounts ORDER BY mnt_id")
    got = [x.split() for x in c.run("mount").splitlines()[1:]]
    assert [(g[0], g[2], g[-1]) for g in got] == [
        (f"{m['mount']:016x}", m["fstype"], m["path"]) for m in mounts]


@pytest.mark.parametrize("name", DUMPS)
def test_sys_kmem_runq(name):
    c = crash(name)
    s = sql(name, "SELECT * FROM sys")[0]
    out = dict(line.strip().split(": ", 1) for line in c.run("sys").splitlines())
    assert out["RELEASE"] == s["release"] == fixture(name).truth["release"]
    assert out["NODENAME"] == s["nodename"] and int(out["TASKS"]) == s["tasks"]
    assert int(out["CPUS"]) == s["cpus"]
    mem = {r["name"]: r["bytes"] for r in sql(name, "SELECT name, bytes FROM meminfo")}
    kmem = {line[:13].strip(): line[13:].split() for line in c.run("kmem -i").splitlines()[1:]}
    assert int(kmem["TOTAL MEM"][0]) == mem["MemTotal"] // 4096
    assert int(kmem["FREE"][0]) == mem["MemFree"] // 4096
    cpus = sql(name, "SELECT cpu, rq, curr_pid FROM cpus ORDER BY cpu")
    runq = c.run("runq")
    for cpu in cpus:
        assert f"CPU {cpu['cpu']} RUNQUEUE: {cpu['rq']:016x}\n  CURRENT: PID: " \
               f"{cpu['curr_pid']:<6}" in runq


def test_task_struct_p_rd_sym():
    c = crash("sample")
    t = sql("sample", "SELECT task, comm, struct_text('struct task_struct', task) AS s "
                      "FROM tasks WHERE pid = 1")[0]
    out = c.run("task 1")
    assert out.splitlines()[0].startswith(f"PID: 1        TASK: {t['task']:016x}")
    assert out.split("\n", 1)[1] == t["s"]
    assert t["s"].startswith("struct task_struct {\n  thread_info = {\n")
    assert f'  comm = "{t["comm"]}' in t["s"]
    assert c.run(f"struct task_struct {t['task']:x}") == t["s"]
    head = sql("sample", "SELECT address FROM var('init_task')")[0]["address"]
    words = sql("sample", "SELECT address, value FROM memory(addr('jiffies'), 3)")
    jiffies = words[0]["value"]
    assert c.run("p jiffies") == f"jiffies = {jiffies}\n"
    rd = c.run("rd jiffies 3").splitlines()
    assert rd[0].split()[:3] == [f"{words[0]['address']:016x}:", f"{words[0]['value']:016x}",
                                 f"{words[1]['value']:016x}"]
    assert rd[1].split()[:2] == [f"{words[2]['address']:016x}:", f"{words[2]['value']:016x}"]
    assert c.run("sym init_task") == f"{head:016x} (D) init_task\n"
    assert c.run(f"sym {head + 8:x}") == f"{head + 8:016x} init_task+0x8\n"
    assert c.last_sql == [f"SELECT sym({head + 8:#x}) AS symbol"]


def test_struct_text_prints_nested_structs():
    head = sql("sample", "SELECT address FROM var('init_task')")[0]["address"]
    off = sql("sample", "SELECT offset FROM members('struct task_struct', "
                        "addr('init_task')) WHERE path = 'tasks'")[0]["offset"]
    nxt, prev = [r["value"] for r in sql(
        "sample", f"SELECT value FROM memory({head + off}, 2)")]
    got = sql("sample", f"SELECT struct_text('struct list_head', {head + off}) AS s")[0]["s"]
    assert got == f"struct list_head {{\n  next = {nxt:#x},\n  prev = {prev:#x}\n}}\n"


def test_sys_config_is_not_in_debian_kernels():
    with pytest.raises(QueryError) as e:
        crash("sample").run("sys config")
    assert str(e.value) == ("config: kernel_config_data does not exist in this kernel "
                            "(it was built without CONFIG_IKCONFIG)")


def test_config_decodes_a_synthetic_blob():
    from kql.helpers.kconfig import decode_ikconfig, parse_config
    text = ('# comment\nCONFIG_HZ=250\n# CONFIG_KASAN is not set\nCONFIG_IKCONFIG=y\n'
            'CONFIG_LOCALVERSION="-kql \\"x\\""\nCONFIG_EXT4_FS=m\n')
    blob = b"IKCFG_ST" + gzip.compress(text.encode()) + b"IKCFG_ED"
    assert decode_ikconfig(blob) == text
    assert list(parse_config(decode_ikconfig(blob))) == [
        ("CONFIG_HZ", "250"), ("CONFIG_KASAN", "n"), ("CONFIG_IKCONFIG", "y"),
        ("CONFIG_LOCALVERSION", '-kql "x"'), ("CONFIG_EXT4_FS", "m")]
    with pytest.raises(ValueError, match="kernel_config_data is not gzip data"):
        decode_ikconfig(b"IKCFG_STnot gzipIKCFG_ED")


def test_config_table_reads_kernel_config_data():
    """The table on a kernel that has the symbols: a fake kernel whose memory
    holds a blob between kernel_config_data and kernel_config_data_end."""
    from kql.kallsyms import SymbolTable
    from kql.tables.base import ScanContext, scan
    from kql.tables import get_table
    blob = gzip.compress(b"CONFIG_SMP=y\n# CONFIG_X is not set\n")

    class Fake:
        cache: dict = {}
        symbols = SymbolTable(["kernel_config_data", "kernel_config_data_end"], "dd",
                              [0x1000, 0x1000 + len(blob)])

        def read(self, addr, size):
            assert (addr, size) == (0x1000, len(blob))
            return blob
    spec = get_table("config")
    rows = scan(spec, ScanContext(Fake(), ["name", "value"])).to_pylist()
    assert rows == [{"name": "CONFIG_SMP", "value": "y"}, {"name": "CONFIG_X", "value": "n"}]


def test_help_lists_commands_and_explains_one():
    c = crash("sample")
    text = c.run("help")
    for name in COMMANDS:
        assert f"\n  {COMMANDS[name].usage}" in text
    for table in ("tasks", "stack_words", "user_regs", "config"):
        assert table in text
    assert "struct_text(type, address)" in text
    bt = c.run("help bt")
    assert bt.startswith("bt [-a | -f | -r] [PID]\n") and "e.g. bt -f 1" in bt
    assert c.run("help tasks").startswith("tasks\n")


def test_cli_crash_with_sql_and_pipe(tmp_path):
    dump = str(fixture("sample").dump())
    p = subprocess.run([sys.executable, "-m", "kql.cli", dump, "--crash", "ps | grep -c IN",
                        "--sql"], capture_output=True, text=True)
    n = len(sql("sample", "SELECT pid FROM tasks WHERE st = 'IN'"))
    assert p.returncode == 0 and p.stdout == f"{n}\n"
    assert "-- SELECT pid, ppid, cpu, task, st, rss_bytes" in p.stderr
    p = subprocess.run([sys.executable, "-m", "kql.cli", dump, "--crash", "SELECT 1"],
                       capture_output=True, text=True)
    assert p.returncode == 1 and p.stderr.startswith("kql: --crash: 'SELECT' is not a crash command")


# ---------------------------------------------------------------- lateral table functions

def test_table_function_arguments_from_an_earlier_table():
    task1 = sql("sample", "SELECT task FROM tasks WHERE pid = 1")[0]["task"]
    got = sql("sample", "SELECT t.pid, m.* FROM tasks t, members('struct task_struct', t.task) m "
                        "WHERE t.pid = 1")
    want = sql("sample", f"SELECT * FROM members('struct task_struct', {task1})")
    assert got == [{"pid": 1, **w} for w in want]      # no hidden argument column
    rows = sql("sample", "SELECT t.pid, t.comm, m.value FROM tasks t, "
                         "members('struct task_struct', t.task) m "
                         "WHERE t.pid IN (1, 2) AND m.path = 'comm' ORDER BY t.pid")
    assert [(r["pid"], r["value"]) for r in rows] == [(r["pid"], repr(r["comm"])) for r in rows]
    assert [r["pid"] for r in rows] == [1, 2]
    # JOIN … ON, and an outer side with no rows
    n = sql("sample", "SELECT count(*) AS n FROM modules m JOIN memory(m.base, 2) w ON true")
    assert n == [{"n": 2 * len(fixture("sample").truth["modules"])}]
    assert sql("sample", "SELECT w.* FROM modules m, memory(m.base, 2) w "
                         "WHERE m.name = 'nosuch'") == []
    plan = sql("sample", "EXPLAIN SELECT m.path FROM tasks t, "
                         "members('struct task_struct', t.task) m WHERE t.pid = 1")
    assert plan[2]["plan"] == ("Scan members('struct task_struct', t.task) AS m: "
                               "for each t.task: members of the type")


def test_table_function_argument_expression_is_an_error():
    q = ("SELECT e.address FROM tasks t, list_walk(t.task + 8, 'struct task_struct', "
         "'tasks') e")
    with pytest.raises(QueryError) as e:
        sql("sample", q)
    assert str(e.value) == (
        "table function arguments must be constants (literals, addr('symbol'), and + - * of "
        "those) or columns of a table before it in FROM (line 1, column 42)\n"
        f"  {q}\n" + " " * 43 + "^" * 6)  # the part that is not a constant


@pytest.mark.parametrize("name", DUMPS)
def test_stack_words_belong_to_the_frame_below_them(name):
    """Each word's level is the frame whose sp is the closest at or below it
    (words under the first frame's sp are frame 0's); frame_sp/pc/size are
    that frame's, as stack_frames has it."""
    frames = {}
    for f in sql(name, "SELECT pid, task, level, sp, pc FROM stack_frames WHERE pid IN (1, 2)"):
        frames.setdefault(f["task"], []).append(f)
    words = sql(name, "SELECT task, address, level, frame_sp, frame_pc, frame_size "
                      "FROM stack_words WHERE pid IN (1, 2)")
    assert words and frames
    for w in words:
        fs = sorted(frames[w["task"]], key=lambda f: f["level"])
        f = fs[w["level"]]
        nxt = fs[w["level"] + 1] if w["level"] + 1 < len(fs) else None
        assert (w["frame_sp"], w["frame_pc"]) == (f["sp"], f["pc"])
        assert w["frame_size"] == (None if nxt is None else nxt["sp"] - f["sp"])
        assert w["level"] == 0 or f["sp"] <= w["address"]
        assert nxt is None or w["address"] < nxt["sp"]


def test_export_has_no_rows_of_a_table_the_kernel_lacks(tmp_path):
    """config on a kernel without CONFIG_IKCONFIG: an empty file (so queries
    over a fleet's exports find the table) and no error in the manifest."""
    import pyarrow.parquet as pq
    from kql.export import export
    [m] = export([str(fixture("sample").dump())], str(tmp_path), tables=["sys", "config"],
                 jobs=1)
    assert (m["errors"], m["tables"]) == (None, "sys,config")
    [f] = (tmp_path / "config").iterdir()
    t = pq.read_table(f)
    assert t.num_rows == 0 and t.column_names[:2] == ["name", "value"]
