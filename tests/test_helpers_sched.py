"""kql.helpers.sched against the guest's /proc (truth.json): task states,
what each CPU runs, idle tasks."""

import pytest

from fixtures import Excluded, skipped_pids as _skip
from kql.helpers.pid import find_task
from kql.helpers.sched import (cpu_curr, idle_task, task_cpu, task_state_letter,
                               task_state_letters)


@pytest.mark.fixtures
def test_task_states(dump_kernel):
    fx, k = dump_kernel
    truth = fx.truth
    skip = _skip(truth)
    assert [s[0] for s in task_state_letters(k)] == list("RSDTtXZPI")
    letters = {}
    ex = Excluded(fx)
    for pid, w in truth["tasks"].items():
        if int(pid) in skip or w["is_kthread"]:
            continue        # kthreads wake and sleep between /proc and the dump
        with ex:
            letters[pid] = (task_state_letter(find_task(k, int(pid))), w["state_letter"])
    ex.check()
    assert {p: v for p, v in letters.items() if v[0] != v[1]} == {}
    # the scenario holds a stopped task, a zombie and a vfork parent in D
    assert {"T", "Z", "D", "S"} <= {v[1] for v in letters.values()}


@pytest.mark.fixtures
def test_running_tasks(dump_kernel):
    fx, k = dump_kernel
    for cpu in k.online_cpus():
        assert idle_task(k, cpu).pid.value_() == 0
        curr = cpu_curr(k, cpu)
        assert task_cpu(curr) == cpu
    panic_pid = fx.truth.get("panic_pid")
    if panic_pid:
        assert panic_pid in {cpu_curr(k, c).pid.value_() for c in k.online_cpus()}
