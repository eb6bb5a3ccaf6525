"""kql on a running kernel: what a Debian guest's kql said about its own
/proc/kcore (tests/live/build_live.py) against the guest's own /proc,
printed just before the queries (truth.json) and just after them
(truth-after.json).

Only what held still is compared: a task's state counts when /proc showed
the same state before and after the queries, and only non-kernel threads
(kernel threads wake on timers: rcu, kworkers); the printers and the query
process itself are transient.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

from fixtures import fixture as _fixture_marker_check  # noqa: F401  (sets up sys.path)
from test_live import NOT_ROOT
from test_net_mem_sched import _guest_addresses, _proc_net_inet, _proc_net_unix
from test_stacks import ends_with
from test_tables import comm_matches

sys.path.insert(0, str(Path(__file__).resolve().parent / "live"))
import build_live  # noqa: E402

LIVE = list(build_live.RECIPES)
SCENARIO_PREFIX = "kql-"


class Live:
    def __init__(self, name: str):
        self.name = name
        self.path = build_live.fixture_dir(name)
        if not (self.path / "fixture.json").exists():
            raise FileNotFoundError(
                f"live guest {name} has not run ({self.path}); run tests/setup.sh or "
                f"python tests/vmcores/build.py {name}")
        self.meta = json.loads((self.path / "fixture.json").read_text())
        self.truth = json.loads((self.path / "truth.json").read_text())
        self.after = json.loads((self.path / "truth-after.json").read_text())
        self.records = json.loads((self.path / "results.json").read_text())

    def kernel_config(self) -> str:
        kdir = build_live.build.kernel_dir_of(self.meta["release"])
        return (kdir["root"] / "boot" / f"config-{self.meta['release']}").read_text()

    def query(self, name: str) -> dict:
        hits = [r for r in self.records if r.get("kind") == "query" and r["name"] == name]
        assert len(hits) == 1, f"{self.name}: no single result for {name} " \
                               f"({len(hits)}; guest stopped early?)"
        r = hits[0]
        assert r["error"] is None, f"{self.name} {name}: {r['error']}"
        return r

    def cli(self, name: str) -> dict:
        hits = [r for r in self.records if r.get("kind") == "cli" and r["name"] == name]
        assert len(hits) == 1, f"{self.name}: no result for the command line {name}"
        return hits[0]

    def stable_tasks(self) -> dict[int, dict]:
        """Tasks /proc listed before and after the queries, identical in pid,
        comm and parent (the printers excluded)."""
        skip = {self.truth["self_pid"], self.after["self_pid"]}
        out = {}
        for spid, t in self.truth["tasks"].items():
            a = self.after["tasks"].get(spid)
            if int(spid) in skip or a is None:
                continue
            if (a["name"], a["ppid"], a["tgid"]) == (t["name"], t["ppid"], t["tgid"]):
                out[int(spid)] = dict(t, state_after=a["state"])
        return out

    def scenario_pids(self) -> set[int]:
        return {pid for pid, t in self.stable_tasks().items()
                if t["name"].startswith(SCENARIO_PREFIX)}


_cache: dict[str, Live] = {}


@pytest.fixture(params=LIVE)
def live(request) -> Live:
    if request.param not in _cache:
        _cache[request.param] = Live(request.param)
    return _cache[request.param]


# -- it ran -----------------------------------------------------------------------------------

@pytest.mark.fixtures
def test_guest_ran_kql_on_its_own_kcore(live):
    assert live.truth["complete"] and live.after["complete"]
    assert live.truth["release"] == live.meta["release"]
    opened = [r for r in live.records if r.get("kind") == "open"]
    assert len(opened) == 1 and opened[0]["error"] is None, opened
    assert not [r for r in live.records if r.get("kind") in ("garbled", "error")]


@pytest.mark.fixtures
def test_every_catalog_table_runs_live(live):
    from kql.tables import catalog
    ran = {r["name"][8:]: r for r in live.records
           if r.get("kind") == "query" and r["name"].startswith("catalog:")}
    assert set(ran) == set(catalog()), "the guest's catalog differs from the checkout's"
    failed = {n: r["error"] for n, r in ran.items() if r["error"] is not None}
    # Debian's cloud kernels are built without CONFIG_IKCONFIG: `config` says so,
    # as it does on their dumps
    if "CONFIG_IKCONFIG=y" not in live.kernel_config():
        assert failed.pop("config", "").startswith(
            "NotInThisKernel: config: kernel_config_data does not exist in this kernel")
    assert not failed
    # every other table has rows on a running kernel with the scenario
    assert not [n for n, r in ran.items() if not r["rows"] and n != "config"]


# -- compared with /proc ------------------------------------------------------------------------

@pytest.mark.fixtures
def test_tasks_match_proc(live):
    rows = live.query("tasks")["rows"]
    by_pid = {r["pid"]: r for r in rows if r["pid"]}
    assert len(by_pid) == len([r for r in rows if r["pid"]]), "a pid listed twice"
    stable = live.stable_tasks()
    assert len(stable) > 50 and live.scenario_pids()
    for pid, t in stable.items():
        r = by_pid.get(pid)
        assert r is not None, (pid, t["name"])
        assert (r["tgid"], r["ppid"], r["is_kthread"]) == \
            (t["tgid"], t["ppid"], t["is_kthread"]), pid
        assert comm_matches(r["comm"], t), (pid, r["comm"], t["name"])
        if not t["is_kthread"] and t["state"] == t["state_after"]:
            assert r["state"] == t["state"], (pid, t["name"], r["state"], t["state"])
    # the scenario's states: three sleepers, a stopped task, a zombie, a D-state vforker
    states = {(t["name"], t["state_letter"]) for t in stable.values()}
    assert {("kql-sleeper", "S"), ("kql-stopped", "T"), ("kql-vforker", "D")} <= states


@pytest.mark.fixtures
def test_modules_match_proc_modules(live):
    rows = live.query("modules")["rows"]
    lines = live.truth["files"]["/proc/modules"].splitlines()
    assert [r["name"] for r in rows] == [ln.split()[0] for ln in lines]
    for r, line in zip(rows, lines):
        f = line.split()   # name size refcnt deps state address [taint]
        assert (r["size"], r["refcount"], r["state"], int(str(r["base"]), 0)) == \
            (int(f[1]), int(f[2]), f[4].lower(), int(f[5], 16)), line


@pytest.mark.fixtures
def test_mounts_match_proc_mounts(live):
    r = live.query("mounts")
    want = [ln.split(" ")[:4] for ln in live.truth["files"]["/proc/mounts"].splitlines()]
    got = [[m["device"], m["path"], m["fstype"], m["options"]] for m in r["rows"]]
    assert [g[:3] for g in got] == [w[:3] for w in want]
    # ext4's own options are not decoded (a warning says so): the flags part matches
    for g, w in zip(got, want):
        if g[2] == "ext4":
            assert w[3].startswith(g[3]), (g, w)
        else:
            assert g[3] == w[3], (g, w)
    assert any(m["path"] == build_live.DEBIAN and m["fstype"] == "ext4" for m in r["rows"])


@pytest.mark.fixtures
def test_open_files_of_the_scenario_match_proc_fd(live):
    rows = live.query("open_files")["rows"]
    got: dict[int, dict[int, str]] = {}
    for r in rows:
        got.setdefault(r["pid"], {})[r["fd"]] = r["path"]
    leaders = {pid for pid in live.scenario_pids() if live.truth["tasks"][str(pid)]["tgid"] == pid}
    want = {pid: {int(fd): target for fd, target in
                  live.truth["processes"][str(pid)]["fds"].items()} for pid in leaders}
    assert {pid: got.get(pid, {}) for pid in leaders} == want
    files = next(pid for pid in leaders if live.truth["tasks"][str(pid)]["name"] == "kql-files")
    assert got[files][10] == "/mnt/data/kql-file-0"


@pytest.mark.fixtures
def test_listening_sockets_match_proc_net(live):
    rows = live.query("sockets")["rows"]
    for name, family, protocol in (("tcp", "INET", "TCP"), ("tcp6", "INET6", "TCP"),
                                   ("udp", "INET", "UDP"), ("udp6", "INET6", "UDP")):
        want = {(st, la, lp, ino) for _, _, st, la, lp, _, _, ino
                in _proc_net_inet(live.truth, name, family, protocol)
                if st == "LISTEN" or (protocol == "UDP" and lp > 0)}
        got = {(r["state"], r["local_addr"], r["local_port"], r["ino"]) for r in rows
               if (r["family"], r["protocol"]) == (family, protocol)}
        assert got == want, name
        assert want, f"the scenario's {name} socket"
    want = {(ino, path) for _, listening, ino, path in _proc_net_unix(live.truth) if listening}
    got = {(r["ino"], r["local_addr"]) for r in rows if r["family"] == "UNIX"}
    assert got == want and (any(p == "/tmp/kql.sock" for _, p in want))


@pytest.mark.fixtures
def test_net_devices_match_proc_net_dev(live):
    rows = live.query("net_devices")["rows"]
    want = [ln.split(":")[0].strip()
            for ln in live.truth["files"]["/proc/net/dev"].splitlines()[2:]]
    assert sorted(r["name"] for r in rows) == sorted(want)
    dev = {r["name"]: r for r in rows}
    assert dev["lo"]["up"]
    scenario = _guest_addresses()           # the init script's `ip addr add A dev D`
    assert scenario
    for name, addrs in scenario.items():
        assert dev[name]["up"] and set(addrs) <= set(dev[name]["addresses"]), name


@pytest.mark.fixtures
def test_sys_matches_proc(live):
    [s] = live.query("sys")["rows"]
    files = live.truth["files"]
    assert s["release"] == live.truth["release"] == live.meta["release"]
    assert live.truth["version"].endswith(" " + s["version"])
    assert s["nodename"] == live.truth["hostname"] == "kql-guest"
    assert s["cpus"] == files["/proc/cpuinfo"].count("processor\t:") == \
        live.meta["recipe"]["smp"]
    mem_kb = int(re.search(r"MemTotal:\s+(\d+) kB", files["/proc/meminfo"]).group(1))
    assert s["memory_bytes"] == mem_kb * 1024
    # the kernel's clock while the queries ran: after the first print, before the second
    assert live.truth["uptime_s"] <= s["uptime_s"] <= live.after["uptime_s"]


# -- stacks -----------------------------------------------------------------------------------

@pytest.mark.fixtures
def test_sleeping_scenario_stacks_end_with_proc_stack(live):
    r = live.query("stacks")
    rows = {row["pid"]: row for row in r["rows"]}
    checked = 0
    for pid in live.scenario_pids():
        t = live.truth["tasks"][str(pid)]
        a = live.after["tasks"][str(pid)]
        if t["state_letter"] not in "SDT" or not t.get("stack") or t.get("stack") != a.get("stack"):
            continue
        got = rows[pid]["stack"]
        assert got is not None and ends_with(got, t["stack"]), (pid, t["name"], got, t["stack"])
        checked += 1
    assert checked >= 10


@pytest.mark.fixtures
def test_running_tasks_have_no_stack_and_a_warning(live):
    r = live.query("stacks")
    running = [row for row in r["rows"] if row["active"]]
    # at least the query process itself runs on a CPU
    assert running and all(row["stack"] is None for row in running), running
    # "2 values of tasks.stack unreadable (e.g. task 0 is running on CPU 1: a live
    # kernel has no saved registers for it)"
    counts = [int(m.group(1)) for w in r["warnings"] for m in [re.fullmatch(
        r"(\d+) values? of tasks\.stack unreadable \(e\.g\. task \d+ is running on CPU \d+: "
        r"a live kernel has no saved registers for it\)", w)] if m]
    assert counts and counts[0] >= len(running), r["warnings"]


# -- the command line ---------------------------------------------------------------------------

@pytest.mark.fixtures
def test_cli_short_form_and_kcore_path(live):
    short = live.cli("short")
    assert short["rc"] == 0, short["stderr"]
    assert json.loads(short["stdout"]) == [{"release": live.truth["release"],
                                            "nodename": "kql-guest",
                                            "cpus": live.meta["recipe"]["smp"]}]
    saved = live.cli("kcore-saved")         # kql /proc/kcore @hung-tasks
    assert saved["rc"] == 0, saved["stderr"]
    hung = {(row["pid"], row["comm"]) for row in json.loads(saved["stdout"])}
    assert hung == {(pid, t["name"]) for pid, t in live.stable_tasks().items()
                    if t["state_letter"] == "D" and t["state_after"] == 2}
    assert {comm for _, comm in hung} == {"kql-vforker"}


@pytest.mark.fixtures
def test_unprivileged_user_gets_one_line_and_exit_2(live):
    r = live.cli("unprivileged")
    assert r["user"] == "nobody" and r["rc"] == 2, r
    assert r["stdout"] == ""
    assert r["stderr"] == f"kql: error: /proc/kcore: {NOT_ROOT}\n"


# -- the builder's own pieces (no guest needed) ------------------------------------------------

def test_init_script_is_the_scenario_then_the_live_part():
    """PID 1 of the live guest: the fixtures' scenario, every @WORD@ filled in, the
    queries (or a benchmark's command instead), the power-off."""
    init = build_live.init_script(["dummy", "virtio_blk"], "")
    assert not [ln for ln in init.splitlines()
                if re.search(r"@[A-Z_]+@", ln) and not ln.startswith("#")]
    assert init.startswith("#!/bin/sh\n") and "kql-vforker vfork &" in init
    assert "kexec" not in init and "for m in dummy virtio_blk; do insmod" in init
    assert init.index("KQL-MARKER-2") < init.index("dumpproc") < init.index("guest_queries.py api")
    assert init.rstrip().endswith("poweroff -f")
    assert 'if [ -z "" ]; then' in init
    bench = build_live.init_script([], "run-the-benchmark > $R")
    assert 'if [ -z "run-the-benchmark > $R" ]; then' in bench


def test_results_parser_keeps_records_and_flags_garbled_lines():
    raw = (b'{"kind": "time", "label": "queries", "uptime": 1.5}\r\n'
           b'[   12.3] a kernel message\n{"kind": "query", "name": "sys", "rows": []\n'
           b'@@done\n')
    assert build_live.parse_results(raw) == [
        {"kind": "time", "label": "queries", "uptime": 1.5},
        {"kind": "garbled", "text": '{"kind": "query", "name": "sys", "rows": []'}]
