"""The first tables (sys, tasks, modules, dmesg, symbols) against the guest's
own /proc view (truth.json), scanned directly through kql.tables.base.scan.

Expected values come from the truth of each fixture, never from the dumps.
Where the dump cannot hold a value (makedumpfile -d 31 filters pages), the
test demands the NULL be explained by an ExcludedPageError warning.
"""

from __future__ import annotations

import re

import pytest

from fixtures import (DUMPS, check_missing_tasks, expected_pgtable_levels, fixture, kernel,
                      kthread_ran, run, truth_task_file)
from kql.errors import ExcludedPageError
from kql.tables import catalog
from kql.tables.base import Warnings

BIG = "6.1-big"
# The sample shipped in the repository (a filtered 6.1 panic kdump) too.
SMALL_DUMPS = [d for d in DUMPS if d[0] != BIG] + [("sample", "kdump")]
SMALL_FIXTURES = sorted({n for n, _ in SMALL_DUMPS})
PANIC_FIXTURES = [n for n in SMALL_FIXTURES if "panic" in n]

PF_KTHREAD = 0x00200000
PF_WQ_WORKER = 0x00000020
TASK_COMM_LEN = 16





def null_explained(w: Warnings, table: str, column: str) -> bool:
    """A NULL is acceptable only where the dump lacks the page (filtered)."""
    return (f"{table}.{column}", ExcludedPageError.__name__) in w.counts


def comm_matches(comm: str, t: dict) -> bool:
    """task->comm against /proc's name for the task.  /proc decorates it
    (fs/proc/array.c proc_task_name()): kernel threads show their full name
    (task->comm holds its first 15 bytes) and workqueue threads get
    "-<workqueue>" / "+<work>" appended (wq_worker_comm()), so truth's
    ``comm`` (its guess at task->comm) is checked first, then those rules."""
    name = t["name"]
    if comm == t["comm"] or comm == name:
        return True
    if t["flags"] & PF_KTHREAD and len(comm.encode()) == TASK_COMM_LEN - 1 \
            and name.encode().startswith(comm.encode()):
        return True
    return bool(t["flags"] & PF_WQ_WORKER) and (name.startswith(comm + "-")
                                                or name.startswith(comm + "+"))


def proc_stat_fields(fx, tid: int) -> list[str] | None:
    """Fields 3.. of /proc/<tgid>/task/<tid>/stat from the guest's raw
    truth.log (man 5 proc numbering: fields[0] is field 3)."""
    body = truth_task_file(fx, tid, "stat")
    return body[body.rindex(")") + 2:].split() if body else None


TASK_COLUMNS = ["task", "pid", "tgid", "ppid", "comm", "state", "st", "state_raw", "cpu",
                "active", "uid", "gid", "euid", "prio", "policy", "threads", "rss_bytes",
                "vsz_bytes", "start_time_ns", "is_kthread", "nice", "rt_priority", "pgid", "sid"]


# -- the catalog ---------------------------------------------------------------------

# TABLES.md: names and meanings are binding (tasks.stack comes with backtraces).
CONTRACT = {
    "sys": "release version machine nodename domainname cpus date uptime_s load_1 load_5 "
           "load_15 tasks memory_bytes panic panic_cpu panic_pid kaslr_offset page_offset "
           "pgtable_levels dump_format dump_path build_id",
    "tasks": "task pid tgid ppid comm state st state_raw cpu active uid gid euid prio "
             "policy threads rss_bytes vsz_bytes start_time_ns utime_ns stime_ns flags "
             "is_kthread cmdline",
    "modules": "module name base size refcount state taint",
    "dmesg": "seq ts_ns level facility caller text",
    "symbols": "name address type size module",
}


@pytest.mark.parametrize("table", sorted(CONTRACT))
def test_contract_columns_exist(table):
    """The contract's column names (docs, types and object columns of every
    table: tests/test_tables_catalog.py)."""
    spec = catalog()[table]
    for name in CONTRACT[table].split():
        col = spec.column(name)
        assert col is not None, f"{table}.{name} missing"
    assert "cmdline" not in catalog()["tasks"].star_columns()


# -- tasks ---------------------------------------------------------------------------

@pytest.mark.parametrize("name,kind", SMALL_DUMPS)
@pytest.mark.fixtures
def test_tasks_match_proc(name, kind):
    fx = fixture(name)
    truth = fx.truth
    k = kernel(name, kind)
    rows, w = run(k, "tasks", TASK_COLUMNS)
    by_pid: dict[int, dict] = {}
    for r in rows:
        if r["pid"] is not None and r["pid"] != 0:
            assert r["pid"] not in by_pid, f"pid {r['pid']} listed twice"
            by_pid[r["pid"]] = r
    idle = [r for r in rows if r["pid"] == 0]
    assert len(idle) == len(k.possible_cpus())
    assert all(r["comm"].startswith("swapper/") and r["is_kthread"] for r in idle)

    skip = set(truth["transient_pids"])
    printer_parents = {truth["tasks"][str(p)]["ppid"] for p in skip
                       if str(p) in truth["tasks"]}
    checked = 0
    missing = []
    for spid, t in truth["tasks"].items():
        pid = int(spid)
        if pid in skip:
            continue
        r = by_pid.get(pid)
        if r is None:
            missing.append(pid)
            continue
        checked += 1
        expect = {"tgid": t["tgid"], "ppid": t["ppid"], "state": t["state"],
                  "is_kthread": t["is_kthread"], "threads": t["num_threads"],
                  "nice": t["nice"], "prio": t["priority"] + 100,
                  "start_time_ns": t["starttime"]}
        if t.get("uid"):
            expect.update(uid=t["uid"][0], euid=t["uid"][1], gid=t["gid"][0])
        st = t.get("status", {})
        for col, key in (("rss_bytes", "VmRSS"), ("vsz_bytes", "VmSize")):
            if key in st:
                expect[col] = int(st[key].split()[0]) * 1024
        if pid in printer_parents:
            # it ran on after the print (reaped the printer): its cached RSS
            # deltas reached mm->rss_stat since (seen on the i386 fixture)
            expect.pop("rss_bytes", None)
        stat = proc_stat_fields(fx, pid)
        if stat is not None:
            # fields 40 rt_priority, 41 policy
            expect.update(rt_priority=int(stat[37]), policy=int(stat[38]))
            # fields 5 pgrp, 6 session
            expect.update(pgid=int(stat[2]), sid=int(stat[3]))
            # field 39, the CPU it last ran on, holds at dump time for tasks
            # that did not run since the print: not kernel threads (rcu,
            # kworkers, kcompactd wake on timers; seen moving) and not the
            # parents of the printer, which reaped it and went on (pid 1).
            if not t["is_kthread"] and pid not in printer_parents:
                expect["cpu"] = int(stat[36])
        got = dict(r)
        if got["state"] != t["state"] and kthread_ran(fx, k, t, got["state"]):
            del expect["state"]
        # /proc starttime is in USER_HZ (100) ticks of start_boottime.
        if got["start_time_ns"] is not None:
            got["start_time_ns"] //= 10_000_000
        for col, want in expect.items():
            v = got[col]
            if v is None:
                assert null_explained(w, "tasks", col), (pid, col)
            else:
                assert v == want, (pid, t["comm"], col, v, want)
        if r["comm"] is None:
            assert null_explained(w, "tasks", "comm"), pid
        else:
            assert comm_matches(r["comm"], t), (pid, r["comm"], t["name"])
    # Only a task whose memory the dump does not hold may be missing.
    check_missing_tasks(fx, k, missing)
    assert checked + len(missing) == len(set(map(int, truth["tasks"])) - skip)


@pytest.mark.parametrize("name", SMALL_FIXTURES)
@pytest.mark.fixtures
def test_tasks_state_codes_and_active(name):
    k = kernel(name)
    rows, w = run(k, "tasks", ["pid", "state", "st", "state_raw", "active", "cpu"])
    # /proc letter → crash code (ID is UN with TASK_NOLOAD, /proc's I).
    allowed = {0: {"RU", "WA", "NE"}, 1: {"IN"}, 2: {"UN"}, 4: {"ST"}, 8: {"TR"},
               16: {"DE"}, 32: {"ZO"}, 64: {"PA"}, 128: {"ID"}}
    for r in rows:
        if r["state"] is None:
            assert null_explained(w, "tasks", "state")
            continue
        assert r["st"] in allowed[r["state"]], r
        assert (r["state_raw"] == 0) == (r["st"] == "RU"), r
    active = [r for r in rows if r["active"]]
    # One task per online CPU is its rq->curr, each on its own CPU.
    assert len(active) == len(k.online_cpus())
    assert sorted(r["cpu"] for r in active) == k.online_cpus()
    truth = fixture(name).truth
    if truth["panic_pid"]:
        assert truth["panic_pid"] in [r["pid"] for r in active]


@pytest.mark.parametrize("name", SMALL_FIXTURES)
@pytest.mark.fixtures
def test_tasks_pid_lookup(name):
    """``pid = N`` goes through find_task (the pid idr) and agrees with the scan."""
    k = kernel(name)
    truth = fixture(name).truth
    cols = ["task", "pid", "tgid", "comm", "state"]
    scan_rows, _ = run(k, "tasks", cols)
    by_pid = {r["pid"]: r for r in scan_rows if r["pid"]}
    # pid 1, every thread the guest printed (the scenario's kql-threads) and
    # a pid that does not exist
    threads = [int(p) for p, t in truth["tasks"].items() if t["tgid"] != int(p)
               and int(p) not in truth["transient_pids"]]
    assert threads
    check_missing_tasks(fixture(name), k, set(threads + [1]) - set(by_pid))
    rows, _ = run(k, "tasks", cols, keys={"pid": [1] + threads + [99999]})
    assert sorted(r["pid"] for r in rows if r["pid"]) == \
        sorted(p for p in [1] + threads if p in by_pid)
    # (a task_struct the dump lacks is a row of NULLs in both, by address)
    by_task = {r["task"]: r for r in scan_rows}
    for r in rows:
        assert r == by_task[r["task"]]
    idle, _ = run(k, "tasks", cols, keys={"pid": [0]})
    assert sorted(r["task"] for r in idle) == sorted(r["task"] for r in scan_rows
                                                      if r["pid"] == 0)


@pytest.mark.fixtures
def test_tasks_cmdline_from_user_memory():
    """Unfiltered dump: every user process's argv as /proc/PID/cmdline had it."""
    name = "6.1-live"
    k = kernel(name, "elf")
    truth = fixture(name).truth
    rows, w = run(k, "tasks", ["pid", "tgid", "is_kthread", "cmdline", "argv"])
    checked = 0
    for r in rows:
        p = truth["processes"].get(str(r["pid"]))
        if r["pid"] in truth["transient_pids"] or r["pid"] != r["tgid"] or p is None:
            continue
        if r["is_kthread"]:
            assert r["cmdline"] is None
            continue
        want = p["cmdline"].rstrip("\0").split("\0")
        if r["argv"] is None and want == [""]:
            continue        # a zombie: no mm left, /proc's cmdline is empty
        assert r["argv"] == want, r["pid"]
        assert r["cmdline"] == " ".join(want)
        checked += 1
    assert checked >= 5
    assert w.total == 0


@pytest.mark.parametrize("name", PANIC_FIXTURES)
@pytest.mark.fixtures
def test_tasks_cmdline_filtered_dump_is_null(name):
    """makedumpfile -d 31 drops user pages: cmdline is NULL with a warning,
    never a made-up value."""
    k = kernel(name)
    rows, w = run(k, "tasks", ["pid", "is_kthread", "cmdline"])
    users = [r for r in rows if r["is_kthread"] is False and r["pid"] != 0]
    assert users
    nulls = [r for r in users if r["cmdline"] is None]
    assert nulls and ("tasks.cmdline", ExcludedPageError.__name__) in w.counts


@pytest.mark.fixtures
def test_big_fixture_tasks():
    """4,000+ tasks: every task the guest printed, with the same identity and state."""
    truth = fixture(BIG).truth
    k = kernel(BIG)
    rows, w = run(k, "tasks", ["pid", "tgid", "ppid", "comm", "state", "threads"])
    assert w.total == 0
    by_pid = {r["pid"]: r for r in rows if r["pid"]}
    assert len(by_pid) == len(rows) - len(k.possible_cpus())
    skip = set(truth["transient_pids"])
    for spid, t in truth["tasks"].items():
        if int(spid) in skip:
            continue
        r = by_pid[int(spid)]
        assert (r["tgid"], r["ppid"], r["state"], r["threads"]) == \
            (t["tgid"], t["ppid"], t["state"], t["num_threads"]), spid
        assert comm_matches(r["comm"], t), spid
    assert len(rows) >= 4000


# -- sys -----------------------------------------------------------------------------

@pytest.mark.parametrize("name,kind", SMALL_DUMPS)
@pytest.mark.fixtures
def test_sys(name, kind):
    fx = fixture(name)
    truth = fx.truth
    k = kernel(name, kind)
    rows, w = run(k, "sys")
    assert len(rows) == 1 and w.total == 0
    s = rows[0]
    files = truth["files"]
    assert s["release"] == truth["release"] == fx.release
    assert truth["version"].endswith(" " + s["version"])
    assert s["nodename"] == truth["hostname"]
    assert s["domainname"] == files["/proc/sys/kernel/domainname"].strip()
    # utsname.machine of the recipe's guest architecture
    assert s["machine"] == {"x86_64": "x86_64", "arm64": "aarch64",
                            "i386": "i686"}[fx.recipe.get("arch", "x86_64")]
    assert s["cpus"] == files["/proc/cpuinfo"].count("processor\t:")
    mem_kb = int(re.search(r"MemTotal:\s+(\d+) kB", files["/proc/meminfo"]).group(1))
    assert s["memory_bytes"] == mem_kb * 1024
    tasks, _ = run(k, "tasks", ["pid"])
    assert s["tasks"] == len(tasks)
    # The dump is taken after the guest printed its /proc view (a few seconds
    # of printing and dumping, never a minute).
    assert truth["uptime_s"] <= s["uptime_s"] < truth["uptime_s"] + 60
    # avenrun moves every 5 s (LOAD_FREQ) between the print and the dump.
    for got, want in zip((s["load_1"], s["load_5"], s["load_15"]), truth["loadavg"]):
        assert abs(got - want) < 1.0
        assert (got * 2048).is_integer()
    if getattr(k.dump, "timestamp", None):
        # the kdump header's clock and the kernel's agree to the second or so
        assert abs(s["date"].timestamp() - k.dump.timestamp) < 5
    assert s["kaslr_offset"] == k.kaslr_offset
    assert s["pgtable_levels"] == expected_pgtable_levels(fx)
    assert s["dump_format"] == k.dump.format
    assert s["build_id"] == k.vmcoreinfo["BUILD-ID"]
    if truth["panic_pid"]:
        assert s["panic"].startswith("Kernel panic - not syncing: ")
        assert s["panic_pid"] == truth["panic_pid"]
        assert s["panic_cpu"] in k.online_cpus()
    else:
        assert s["panic"] is None and s["panic_cpu"] is None and s["panic_pid"] is None


# -- modules -------------------------------------------------------------------------

@pytest.mark.parametrize("name", SMALL_FIXTURES)
@pytest.mark.fixtures
def test_modules_match_proc_modules(name):
    truth = fixture(name).truth
    rows, w = run(kernel(name), "modules")
    assert w.total == 0
    assert [r["name"] for r in rows] == truth["modules"]
    for r, line in zip(rows, truth["files"]["/proc/modules"].splitlines()):
        # name size refcnt deps state address [taint]
        f = line.split()
        assert (r["name"], r["size"], r["refcount"], r["state"], r["base"]) == \
            (f[0], int(f[1]), int(f[2]), f[4].lower(), int(f[5], 16))
        assert r["taint"] == (f[6].strip("()") if len(f) > 6 else "")


# -- dmesg ---------------------------------------------------------------------------

@pytest.mark.parametrize("name,kind", SMALL_DUMPS)
@pytest.mark.fixtures
def test_dmesg(name, kind):
    truth = fixture(name).truth
    rows, w = run(kernel(name, kind), "dmesg")
    assert w.total == 0
    seqs = [r["seq"] for r in rows]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert all(0 <= r["level"] <= 7 for r in rows)
    # the banner opens the log (arm64 logs "Booting Linux on physical CPU" first)
    assert any(r["text"].startswith("Linux version ") for r in rows[:2]) or rows[0]["seq"] > 0
    texts = [r["text"] for r in rows]
    for marker in truth["markers"]:
        hits = [r for r in rows if r["text"] == marker]
        assert len(hits) == 1, marker
        # init.sh writes "<6>KQL-MARKER..." to /dev/kmsg: user facility, level 6.
        assert (hits[0]["facility"], hits[0]["level"]) == (1, 6)
        assert re.fullmatch(r"T\d+", hits[0]["caller"])
    ts = {r["text"]: r["ts_ns"] for r in rows}
    assert ts[truth["markers"][0]] <= ts[truth["markers"][1]]
    if truth["panic_pid"]:
        panic = [r for r in rows if r["text"].startswith("Kernel panic - not syncing")]
        assert panic and panic[-1]["caller"] == f"T{truth['panic_pid']}"
    assert any(truth["version"] in t for t in texts[:2]) or rows[0]["seq"] > 0


# -- symbols -------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["6.1-live", "6.12-live"])
@pytest.mark.fixtures
def test_symbols(name):
    k = kernel(name)
    truth = fixture(name).truth
    rows, w = run(k, "symbols")
    assert w.total == 0
    vmlinux = [r for r in rows if r["module"] is None]
    assert len(vmlinux) == len(k.symbols)
    info = k.vmcoreinfo
    by_name = {r["name"]: r for r in vmlinux}
    # VMCOREINFO's SYMBOL(x) lines are the kernel's own view of addresses
    # (except mem_section: VMCOREINFO_SYMBOL_ARRAY gives the pointer's value).
    checked = 0
    for key, value in info.items():
        m = re.fullmatch(r"SYMBOL\((\w+)\)", key)
        if m and m.group(1) in by_name and m.group(1) != "mem_section":
            assert int(value, 16) in [r["address"] for r in vmlinux
                                      if r["name"] == m.group(1)], key
            checked += 1
    assert checked >= 5
    assert by_name["_stext"]["type"] in "Tt"
    # every loaded module brings its own symbols, inside the module area
    mods = {r["name"]: r for r in run(k, "modules")[0]}
    modsyms = [r for r in rows if r["module"] is not None]
    assert {r["module"] for r in modsyms} == set(truth["modules"])
    lo = min(m["base"] for m in mods.values())
    assert all(r["address"] >= lo - (1 << 30) for r in modsyms)
    assert all(r["type"] in "TtDdRrBbVvWw" for r in modsyms)
    # name = ... is a lookup, equal to the scan's rows
    got, _ = run(k, "symbols", keys={"name": ["init_task", modsyms[0]["name"]]})
    want = [r for r in vmlinux if r["name"] == "init_task"] + \
           [r for r in modsyms if r["name"] == modsyms[0]["name"]]
    assert sorted(map(str, got)) == sorted(map(str, want))
