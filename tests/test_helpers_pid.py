"""kql.helpers.pid against what the guest's /proc said (truth.json): every
task found (also across pages the dump level dropped), lookup by pid, thread
groups, the process group / session of each task."""

import pytest

from fixtures import Excluded, check_missing_tasks, skipped_pids as _skip, truth_task_file
from kql.errors import FaultError
from kql.helpers.list import list_for_each_entry
from kql.helpers.pid import (
    find_pid, find_task, find_tasks, for_each_pid, for_each_process, for_each_task,
    for_each_thread, task_pid_nr,
)
from kql.helpers.sched import task_cpu, task_is_kthread


def _setup(dump_kernel):
    """(fixture, kernel, truth, pids to skip, excluded-page counter)."""
    fx, k = dump_kernel
    return fx, k, fx.truth, _skip(fx.truth), Excluded(fx)


@pytest.mark.fixtures
def test_for_each_task_matches_proc(dump_kernel):
    fx, k = dump_kernel
    truth = fx.truth
    skip = _skip(truth)
    tasks = {}
    idle = []
    ex = Excluded(fx)
    for t in for_each_task(k):
        pid = None
        with ex:
            pid = t.pid.value_()
        if pid is None:
            continue
        if pid == 0:
            idle.append(t)
        else:
            assert pid not in tasks, f"pid {pid} yielded twice"
            tasks[pid] = t
    # one idle task per CPU, none of them visible in /proc
    assert sorted(task_cpu(t) for t in idle) == list(range(fx.recipe["smp"]))
    assert all(t.comm.string_().startswith(b"swapper/") for t in idle)
    want = {int(p) for p in truth["tasks"]} - skip
    missing = want - set(tasks)
    # only tasks the dump lacks (their idr path or task_struct on a filtered
    # page) may be missing: lists broken by other filtered pages are made up
    # from the PID IDR and the children lists
    check_missing_tasks(fx, k, missing)
    want -= missing
    # anything extra was started after /proc was read (the truth collector's children)
    for pid in set(tasks) - want:
        assert pid > min(skip - {None}, default=0) or pid in skip
    for pid in want:
        t, w = tasks[pid], truth["tasks"][str(pid)]
        assert t.tgid.value_() == w["tgid"]
        assert w["name"].startswith(t.comm.string_().decode())
        assert task_is_kthread(t) == w["is_kthread"]
    assert ex.filtered or k.warnings == []
    ex.check()


@pytest.mark.fixtures
def test_every_task_on_the_process_tree_is_found(dump_kernel):
    """However many pages the dump level dropped (task lists and pid idr
    nodes broken on the 6.12 kdump), every task of the process tree
    (init_task's children, theirs, ...: list_for_each_entry over ->sibling)
    whose task_struct is readable is in for_each_task, and a pid lookup
    (find_tasks) finds it."""
    fx, k = dump_kernel
    found = {t.value_() for t in for_each_task(k)}
    tree = {}
    todo = [k.var("init_task").address_of_()]
    while todo:
        parent = todo.pop()
        try:
            kids = list(list_for_each_entry("struct task_struct",
                                            parent.children.address_of_(), "sibling"))
        except FaultError:
            continue            # the parent's own page: its children stay unknown
        for c in kids:
            if c.value_() in tree:
                continue
            try:
                tree[c.value_()] = c.pid.value_()
            except FaultError:
                continue
            todo.append(c)
    assert {1, 2} <= set(tree.values())
    assert sorted(set(tree) - found) == []
    for addr, pid in tree.items():
        assert [t.value_() for t in find_tasks(k, [pid])] == [addr], pid


@pytest.mark.fixtures
def test_find_task_and_pids(dump_kernel):
    fx, k, truth, skip, ex = _setup(dump_kernel)
    for pid in truth["tasks"]:
        if int(pid) in skip:
            continue
        with ex:
            task = find_task(k, int(pid))
            assert task.pid.value_() == int(pid)
    ex.check()
    all_pids = set()
    for t in for_each_task(k):
        with ex:
            all_pids.add(t.pid.value_())
    absent = max(all_pids) + 1000
    assert find_task(k, absent).value_() == 0
    assert find_pid(k, absent).value_() == 0
    numbers = []
    for p in for_each_pid(k):
        with ex:
            numbers.append(p.numbers[0].nr.value_())
    assert numbers == sorted(numbers)
    if not ex.hits:
        assert set(numbers) == all_pids - {0}


@pytest.mark.fixtures
def test_threads_and_processes(dump_kernel):
    fx, k, truth, skip, ex = _setup(dump_kernel)
    leaders = {}
    for t in for_each_process(k):
        with ex:
            leaders[t.pid.value_()] = t
    for pid, w in truth["tasks"].items():
        if int(pid) in skip or w["tgid"] != int(pid):
            continue
        if int(pid) not in leaders and (ex.hits or (ex.filtered and k.warnings)):
            continue            # it (or the list to it) sits on a filtered page
        threads = None
        warned = len(k.warnings)
        with ex:
            threads = [t.pid.value_() for t in for_each_thread(leaders[int(pid)])]
        if threads is None or (ex.filtered and len(k.warnings) > warned):
            continue            # the thread list crosses a filtered page
        if w["state_letter"] != "Z":
            assert len(threads) == w["num_threads"], pid
        assert all(truth["tasks"].get(str(t), {}).get("tgid", int(pid)) == int(pid)
                   for t in threads)


@pytest.mark.fixtures
def test_task_pid_nr_matches_proc_stat(dump_kernel):
    """The pid, process group and session of each task (task_pid_nr) are
    /proc/PID/stat's fields 1, 5 and 6."""
    fx, k = dump_kernel
    skip = _skip(fx.truth)
    ex = Excluded(fx)
    checked = 0
    for spid, t in fx.truth["tasks"].items():
        pid = int(spid)
        body = truth_task_file(fx, pid, "stat")
        if pid in skip or not body:
            continue
        stat = body[body.rindex(")") + 2:].split()
        with ex:
            task = find_task(k, pid)
            got = tuple(task_pid_nr(task, f"PIDTYPE_{n}") for n in ("PID", "PGID", "SID"))
            assert got == (pid, int(stat[2]), int(stat[3])), (pid, t["comm"])
            checked += 1
    ex.check()
    assert checked > 10
