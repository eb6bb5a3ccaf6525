"""The saved query library (queries/*.kql): every query runs on every fixture,
and its result is checked against what the guest's /proc said (truth.json)."""

import collections
import os
import re
import subprocess
import sys

import pytest

import kql
from fixtures import (FIXTURES, I386, check_missing_tasks, excluded_task, excluded_values,
                      fixture, needs_vmlinux, stable_tasks)
from kql import queries
from kql.errors import QueryError

NAMES = [n for n in FIXTURES if n != "6.1-big"] + ["sample"]
SHIPPED = sorted(p.stem for p in queries.HERE.glob("*.kql"))
# (i386's too: tests/test_i386.py runs test_panic_summary on them)
PANIC = {n for n in NAMES + I386 if fixture(n).recipe["mode"] == "panic"}


@pytest.fixture(scope="module")
def dumps():
    opened = {}

    def get(name):
        if name not in opened:
            fx = fixture(name)
            opened[name] = kql.open(fx.dump(), vmlinux=fx.vmlinux if needs_vmlinux(name) else None)
        return opened[name]
    yield get
    for d in opened.values():
        d.close()


@pytest.fixture(autouse=True)
def only_shipped_queries(monkeypatch, tmp_path):
    # the user's own ~/.config/kql/queries must not change what is tested
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("KQL_QUERY_PATH", raising=False)


def run(d, qname, **params):
    """Every statement's rows."""
    q = queries.get(qname)
    return [r.table.to_pylist() for r in d.session.execute(
        q.render({k: str(v) for k, v in params.items()}))]


def results(d, qname, **params):
    """Every statement's Result (rows and warnings)."""
    q = queries.get(qname)
    return d.session.execute(q.render({k: str(v) for k, v in params.items()}))


def present(d, name):
    """Stable truth tasks, minus those the dump proves it lacks."""
    want = stable_tasks(fixture(name).truth)
    got = {r["pid"] for r in d.query("SELECT pid FROM tasks WHERE pid > 0").to_pylist()}
    missing = set(want) - got
    check_missing_tasks(fixture(name), d, missing)
    return {p: w for p, w in want.items() if p not in missing}


def kb(s):
    return int(s.split()[0]) * 1024


def subsequence(small, big):
    it = iter(big)
    return all(x in it for x in small)


def files_pid(truth):
    return next(int(p) for p, w in truth["tasks"].items() if w["comm"] == "kql-files")


def default_params(name, qname):
    return {"pid": files_pid(fixture(name).truth)} if qname == "open-files" else {}


# -------------------------------------------------------------- library and CLI

def test_at_least_12_triage_queries_with_descriptions():
    qs = queries.all_queries()
    assert sorted(qs) == SHIPPED and len(SHIPPED) >= 12
    for q in qs.values():
        assert q.description and q.body.strip()
        # every :placeholder is a declared parameter and vice versa
        used = set(re.findall(r"(?<![:\w]):([A-Za-z_]\w*)", q.body))
        assert used == {p.name for p in q.params}, q.name


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("qname", SHIPPED)
@pytest.mark.fixtures
def test_every_query_runs_on_every_fixture(dumps, name, qname):
    d = dumps(name)
    q = queries.get(qname)
    results = d.session.execute(q.render({k: str(v) for k, v in
                                          default_params(name, qname).items()}))
    assert len(results) == q.body.count(";") + 1
    for r in results:
        assert r.table.num_columns > 0


def test_kql_queries_lists_them():
    p = subprocess.run([sys.executable, "-m", "kql.cli", "queries"], capture_output=True,
                       text=True, check=True, env={**os.environ, "HOME": "/nonexistent"})
    lines = p.stdout.splitlines()
    assert [ln.split()[0] for ln in lines] == [f"@{n}" for n in SHIPPED]
    for ln, n in zip(lines, SHIPPED):
        q = queries.get(n)
        assert q.description in ln
        for prm in q.params:
            assert f"--param {prm.name}={prm.default if prm.default is not None else '…'}" in ln


@pytest.mark.fixtures
def test_user_directories_add_and_override(tmp_path, dumps):
    home = tmp_path / "home"
    (home / ".config/kql/queries").mkdir(parents=True)
    (home / ".config/kql/queries/my-comm.kql").write_text(
        "-- name: my-comm\n-- description: Tasks with one comm (mine)\n"
        "-- param: comm = kql-sleeper   the comm\n"
        "SELECT pid FROM tasks WHERE comm = :comm ORDER BY pid\n")
    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "ps.kql").write_text("-- name: ps\n-- description: My own ps\nSELECT 42 AS answer\n")
    env = {**os.environ, "HOME": str(home), "KQL_QUERY_PATH": f"/nonexistent:{extra}"}
    p = subprocess.run([sys.executable, "-m", "kql.cli", "queries"], capture_output=True,
                       text=True, check=True, env=env)
    listed = {ln.split()[0]: ln for ln in p.stdout.splitlines()}
    assert set(listed) == {f"@{n}" for n in SHIPPED} | {"@my-comm"}
    assert "Tasks with one comm (mine)  [--param comm=kql-sleeper]" in listed["@my-comm"]
    assert "My own ps" in listed["@ps"]  # a user query with a shipped name wins
    fx = fixture("6.1-live")
    want = sorted(p for p, w in stable_tasks(fx.truth).items() if w["comm"] == "kql-threads")
    for args, rows in ((["@my-comm"], None), (["@my-comm", "--param", "comm=kql-threads"], want)):
        p = subprocess.run([sys.executable, "-m", "kql.cli", fx.dump(), *args, "-f", "csv"],
                           capture_output=True, text=True, env=env)
        assert p.returncode == 0, p.stderr
        got = [int(x) for x in p.stdout.split()[1:]]
        expect = rows or sorted(p_ for p_, w in stable_tasks(fx.truth).items()
                                if w["comm"] == "kql-sleeper")
        assert got == expect and len(got) >= 3
    p = subprocess.run([sys.executable, "-m", "kql.cli", fx.dump(), "@ps", "-f", "csv"],
                       capture_output=True, text=True, env=env)
    assert p.stdout == "answer\n42\n"


def test_saved_query_errors(tmp_path):
    dump = fixture("sample").dump()

    def err(*args):
        p = subprocess.run([sys.executable, "-m", "kql.cli", dump, *args], capture_output=True,
                           text=True, env={**os.environ, "HOME": str(tmp_path)})
        return p.returncode, p.stderr.strip()
    assert err("@hung-task") == (1, "kql: no saved query named @hung-task; did you mean @hung-tasks?")
    assert err("@open-files") == (1, "kql: @open-files needs --param pid=VALUE")
    assert err("@top-memory", "--param", "nope=1") == \
        (1, "kql: @top-memory has no parameter 'nope' (parameters: limit)")
    assert err("SELECT 1", "--param", "a=1") == (1, "kql: --param goes with a saved query (@NAME)")
    with pytest.raises(QueryError):
        queries.get("no-such-query")


def test_params_are_sql_literals():
    q = queries.SavedQuery("t", "", "SELECT :a, :b, ':a' FROM x WHERE c = :b\n", "t",
                           (queries.Param("a", "1"), queries.Param("b", None)))
    assert q.render({"b": "it's"}) == "SELECT 1, 'it''s', ':a' FROM x WHERE c = 'it''s'\n"
    assert q.render({"a": "0x10", "b": "-3"}) == "SELECT 0x10, (-3), ':a' FROM x WHERE c = (-3)\n"


@pytest.mark.fixtures
def test_cli_runs_saved_query_with_param():
    fx = fixture("6.1-live")
    pid = files_pid(fx.truth)
    p = subprocess.run([sys.executable, "-m", "kql.cli", fx.dump(), "@open-files", "--param",
                        f"pid={pid}", "-f", "csv"], capture_output=True, text=True, check=True)
    fds = fx.truth["processes"][str(pid)]["fds"]
    rows = p.stdout.splitlines()
    assert rows[0] == "fd,type,path,ino,pos,flags"
    assert [(int(r.split(",")[0]), r.split(",")[2]) for r in rows[1:]] == \
        sorted((int(fd), path) for fd, path in fds.items())


# -------------------------------------------------------------- results vs truth

@pytest.mark.parametrize("name", NAMES)
@pytest.mark.fixtures
def test_hung_tasks(dumps, name):
    d = dumps(name)
    want = {p: w for p, w in present(d, name).items() if w["state_letter"] == "D"}
    [rows] = run(d, "hung-tasks")
    assert {r["pid"]: r["comm"] for r in rows} == {p: w["comm"] for p, w in want.items()}
    assert want  # the guest's vforker waits in D state
    for r in rows:
        assert r["st"] == "UN" and subsequence(want[r["pid"]]["stack"], r["stack"]), r
    assert [r["started_s"] for r in rows] == sorted(r["started_s"] for r in rows)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.fixtures
def test_d_state_clusters(dumps, name):
    d = dumps(name)
    want = {p: w for p, w in present(d, name).items() if w["state_letter"] == "D"}
    [rows] = run(d, "d-state-clusters")
    groups = collections.defaultdict(list)
    for p, w in want.items():
        groups[tuple(w["stack"])].append(p)
    assert sorted(sorted(r["pids"]) for r in rows) == sorted(sorted(g) for g in groups.values())
    for r in rows:
        assert r["tasks"] == len(r["pids"]) and r["stack_sig"]
        assert subsequence(want[r["pids"][0]]["stack"], r["stack"])


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.fixtures
def test_zombies(dumps, name):
    d = dumps(name)
    want = present(d, name)
    [rows] = run(d, "zombies")
    expect = [{"pid": p, "comm": w["comm"], "ppid": w["ppid"],
               "parent_comm": want[w["ppid"]]["comm"], "parent_state": "IN"}
              for p, w in sorted(want.items()) if w["state_letter"] == "Z"]
    assert want[expect[0]["ppid"]]["state_letter"] == "S"  # the parent sleeps in pause()
    assert rows == expect and len(rows) == 1


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.fixtures
def test_top_memory(dumps, name):
    d = dumps(name)
    want = {p: w for p, w in present(d, name).items()
            if not w["is_kthread"] and w["pid"] == w["tgid"]}
    [rows] = run(d, "top-memory", limit=100000)
    got = {r["pid"]: r for r in rows}
    for p, w in want.items():
        r = got[p]
        if w["state_letter"] == "Z":  # no mm: no memory
            assert (r["comm"], r["rss_bytes"], r["vsz_bytes"]) == (w["comm"], None, None)
            continue
        assert (r["comm"], r["rss_bytes"], r["vsz_bytes"], r["threads"]) == \
            (w["comm"], kb(w["status"]["VmRSS"]), kb(w["status"]["VmSize"]),
             int(w["status"]["Threads"])), p
    # besides the truth, only the one process init.sh starts after printing
    assert len(set(got) - set(want)) == 1
    key = [(-(r["rss_bytes"] or -1), r["pid"]) for r in rows]
    assert key == sorted(key)
    [top] = run(d, "top-memory")
    assert top == rows[:10]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.fixtures
def test_most_threads(dumps, name):
    d = dumps(name)
    tasks = present(d, name)
    threads = collections.Counter(w["tgid"] for w in tasks.values() if not w["is_kthread"])
    [rows] = run(d, "most-threads", limit=100000)
    got = {r["pid"]: r for r in rows}
    for tgid, n in threads.items():
        # a leader the dump lacks (proven by present()) has no comm
        comm = tasks[tgid]["comm"] if tgid in tasks else None
        assert got[tgid]["threads"] == n and got[tgid]["comm"] == comm, tgid
        if all(p in tasks for p in [p for p, w in stable_tasks(fixture(name).truth).items()
                                    if w["tgid"] == tgid]):
            assert n == int(tasks[tgid]["status"]["Threads"])
    assert len(set(got) - set(threads)) == 1
    assert max(threads.values()) == rows[0]["threads"]
    if len(tasks) == len(stable_tasks(fixture(name).truth)):
        assert rows[0]["threads"] == 5  # kql-threads: leader + 4
    key = [(-r["threads"], r["pid"]) for r in rows]
    assert key == sorted(key)
    assert run(d, "most-threads")[0] == rows[:10]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.fixtures
def test_open_files(dumps, name):
    d = dumps(name)
    truth = fixture(name).truth
    pid = files_pid(truth)
    [res] = results(d, "open-files", pid=pid)
    rows = res.table.to_pylist()
    fds = truth["processes"][str(pid)]["fds"]
    if not rows and excluded_task(d, pid):
        # its task_struct is on a page the dump level excluded (Debian 12's
        # makedumpfile takes some 6.12 slab pages for free ones): no process
        return
    assert [r["fd"] for r in rows] == sorted(int(f) for f in fds)
    # a path is the guest's fd link, or NULL because its page was excluded
    unread = [r for r in rows if r["path"] is None]
    assert len(unread) <= excluded_values(res, "open_files.path")
    assert [(r["fd"], r["path"]) for r in rows if r["path"] is not None] == \
        sorted((int(f), p) for f, p in fds.items() if int(f) not in {r["fd"] for r in unread})
    if "excluded" not in " ".join(d.kernel.warnings):
        assert not unread
    kinds = {"/mnt/data/": "REG", "pipe:": "FIFO", "/dev/": "CHR"}
    for r in rows:
        link = fds[str(r["fd"])]
        want = next(t for prefix, t in kinds.items() if link.startswith(prefix))
        assert r["type"] == want or (r["type"] is None and excluded_values(res, "open_files.type")), r
    assert sum(r["type"] is None for r in rows) == excluded_values(res, "open_files.type")


def _truth_listeners(truth):
    owner = {}
    for pid, proc in truth["processes"].items():
        for link in proc["fds"].values():
            m = re.fullmatch(r"socket:\[(\d+)\]", link)
            if m:
                owner.setdefault(int(m[1]), int(pid))
    want = set()
    for proto, fam, f in (("TCP", "INET", "tcp"), ("TCP", "INET6", "tcp6"),
                          ("UDP", "INET", "udp"), ("UDP", "INET6", "udp6")):
        for line in truth["files"][f"/proc/net/{f}"].splitlines()[1:]:
            x = line.split()
            port, st, ino = int(x[1].split(":")[1], 16), x[3], int(x[9])
            if (proto == "TCP" and st == "0A") or (proto == "UDP" and port > 0):
                pid = owner[ino]
                want.add((proto, fam, port, ino, pid, truth["tasks"][str(pid)]["comm"]))
    return want


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.fixtures
def test_listening_sockets(dumps, name):
    d = dumps(name)
    want = _truth_listeners(fixture(name).truth)
    [rows] = run(d, "listening-sockets")
    by_ino = {w[3]: w for w in want}
    got = set()
    for r in rows:
        w = by_ino[r["ino"]]
        if r["pid"] is None:
            # the owner is unknown only when the dump lost its task or file
            owner = w[4]
            assert any(("(pid %d fd" % owner in x or "task of pid %d " % owner in x)
                       and "excluded by the dump level" in x for x in d.kernel.warnings), w
            got.add(w)
        else:
            got.add((r["protocol"], r["family"], r["local_port"], r["ino"], r["pid"], r["comm"]))
    assert got == want
    assert {(p, f, port) for p, f, port, *_ in want} == \
        {("TCP", "INET", 7001), ("TCP", "INET6", 7002), ("UDP", "INET", 7003),
         ("UDP", "INET6", 7004)}
    assert len(rows) == len(want)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.fixtures
def test_tainted_modules(dumps, name):
    d = dumps(name)
    truth = fixture(name).truth
    kernel, mods = run(d, "tainted-modules")
    assert kernel == [{"tainted_mask": int(truth["files"]["/proc/sys/kernel/tainted"])}]
    # /proc/modules shows a tainting module's letters in parentheses
    want = sorted(line.split()[0] for line in truth["files"]["/proc/modules"].splitlines()
                  if re.search(r"\([A-Z]+\)", line))
    assert [r["name"] for r in mods] == want
    every = {r["name"] for r in d.query("SELECT name FROM modules").to_pylist()}
    assert every == set(truth["modules"]) and len(every) == 3


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.fixtures
def test_dmesg_errors(dumps, name):
    d = dumps(name)
    truth = fixture(name).truth
    [rows] = run(d, "dmesg-errors")
    assert rows and all(r["level"] <= 4 for r in rows)
    assert [r["seq"] for r in rows] == sorted(r["seq"] for r in rows)
    text = "\n".join(r["text"] for r in rows)
    # the scenario's markers are KERN_INFO (<6>): not errors; shown at max_level=6
    for m in truth["markers"]:
        assert m not in text
    [info] = run(d, "dmesg-errors", max_level=6)
    assert all(m in "\n".join(r["text"] for r in info) for m in truth["markers"])
    assert set(r["seq"] for r in rows) < set(r["seq"] for r in info)
    if name in PANIC:
        assert any(r["level"] == 0 and r["text"].startswith("Kernel panic - not syncing: "
                                                            "sysrq triggered crash")
                   for r in rows)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.fixtures
def test_panic_summary(dumps, name):
    d = dumps(name)
    truth = fixture(name).truth
    sysrow, task, tail = run(d, "panic-summary")
    assert [(r["release"], r["nodename"]) for r in sysrow] == [(truth["release"], truth["hostname"])]
    assert sysrow[0]["cpus"] == truth["files"]["/proc/cpuinfo"].count("processor\t:")
    assert sysrow[0]["panic_pid"] == truth["panic_pid"]
    log = d.query("SELECT seq, text FROM dmesg ORDER BY seq").to_pylist()
    seqs = [r["seq"] for r in log]
    if name in PANIC:
        assert sysrow[0]["panic"].startswith("Kernel panic - not syncing: sysrq triggered crash")
        assert [r["pid"] for r in task] == [truth["panic_pid"]]
        # the kernel's own Call Trace (in dmesg) names the sysrq path
        assert subsequence(["sysrq_handle_crash", "write_sysrq_trigger"], task[0]["stack"])
        # messages: the 20 up to the panic message, then everything after it
        at = max(i for i, r in enumerate(log) if r["text"] == sysrow[0]["panic"])
        assert [r["seq"] for r in tail] == seqs[at - 19:]
        assert tail[19]["text"] == sysrow[0]["panic"] and tail[19]["level"] == 0
        assert "KQL-MARKER-3 panicking now" in [r["text"] for r in tail]
        assert tail[19]["caller"] == f"T{truth['panic_pid']}"
    else:
        assert sysrow[0]["panic"] is None and task == []
        assert [r["seq"] for r in tail] == seqs[-20:]
    [short] = run(d, "panic-summary", lines=3)[2:]
    assert short == tail[17:] if name in PANIC else short == tail[-3:]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.fixtures
def test_ps(dumps, name):
    d = dumps(name)
    want = present(d, name)
    [rows] = run(d, "ps")
    got = {r["pid"]: r for r in rows if r["pid"]}
    assert {p: (w["ppid"], w["comm"]) for p, w in want.items()} == \
        {p: (got[p]["ppid"], got[p]["comm"]) for p in want}
    assert len(set(got) - set(want)) == 1
    ncpu = fixture(name).truth["files"]["/proc/cpuinfo"].count("processor\t:")
    assert [r["comm"] for r in rows if r["pid"] == 0] == [f"swapper/{i}" for i in range(ncpu)]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.fixtures
def test_kernel_threads(dumps, name):
    d = dumps(name)
    want = {p: w for p, w in present(d, name).items() if w["is_kthread"]}
    ncpu = fixture(name).truth["files"]["/proc/cpuinfo"].count("processor\t:")
    [rows] = run(d, "kernel-threads")
    # every kernel thread the guest printed, plus one idle task per CPU
    assert sum(r["threads"] for r in rows) == len(want) + ncpu
    comms = {w["comm"] for w in want.values()} | {f"swapper/{i}" for i in range(ncpu)}
    for r in rows:
        assert len(r["examples"]) == min(10, r["threads"]) and set(r["examples"]) <= comms
    # kthreadd sleeps, so the IN group exists
    assert "IN" in {r["st"] for r in rows}


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.fixtures
def test_runnable_per_cpu(dumps, name):
    d = dumps(name)
    truth = fixture(name).truth
    ncpu = truth["files"]["/proc/cpuinfo"].count("processor\t:")
    [rows] = run(d, "runnable-per-cpu")
    assert [r["cpu"] for r in rows] == list(range(ncpu))
    for r in rows:
        assert r["queued"] == len(r["queued_comms"] or [])
    if name in PANIC:
        # the panicking task was on its CPU when it crashed
        panic_cpu = d.query("SELECT panic_cpu FROM sys").to_pylist()[0]["panic_cpu"]
        assert rows[panic_cpu]["curr_pid"] == truth["panic_pid"]
        assert rows[panic_cpu]["curr_comm"] == "sh"


def _slabinfo(truth):
    out = {}
    for line in truth["files"]["/proc/slabinfo"].splitlines()[2:]:
        f = line.split()
        out[f[0]] = {"objs": int(f[2]), "size": int(f[3])}
    return out


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.fixtures
def test_biggest_slabs(dumps, name):
    d = dumps(name)
    want = _slabinfo(fixture(name).truth)
    [rows] = run(d, "biggest-slabs")
    assert len(rows) == 15
    for r in rows:
        assert r["size"] == want[r["name"]]["size"] and r["bytes"] == r["objects"] * r["size"]
    key = [(-r["bytes"], r["name"]) for r in rows]
    assert key == sorted(key)
    # the guest's five biggest caches (objects x objsize) are among them; the
    # counts move a little between printing and dumping, the ranking's head does not
    top = sorted(want, key=lambda n: -want[n]["objs"] * want[n]["size"])[:5]
    assert set(top) <= {r["name"] for r in rows}
    assert len(run(d, "biggest-slabs", limit=3)[0]) == 3
