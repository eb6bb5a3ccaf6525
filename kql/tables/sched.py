"""cpus and runqueue: crash ``runq``."""

from __future__ import annotations


from kql.errors import FaultError
from kql.helpers.list import walk_warn
from kql.helpers.runq import runq_entries
from kql.helpers.sched import cpu_rq, task_comm
from kql.tables.base import (ADDRESS, BOOL, Column, INT32, STRING, ScanContext,
                            TableSpec)

__all__ = ["TABLES"]


class CpuRow:
    def __init__(self, kernel, cpu):
        self.kernel = kernel
        self.cpu = cpu
        self.rq = cpu_rq(kernel, cpu)          # struct rq *

    @property
    def curr(self):
        return self.rq.curr


def _cpu_rows(ctx: ScanContext):
    kernel = ctx.kernel
    for cpu in kernel.possible_cpus():
        yield CpuRow(kernel, cpu)


def _cpu_lookup(ctx: ScanContext, values):
    kernel = ctx.kernel
    possible = set(kernel.possible_cpus())
    for v in dict.fromkeys(values):
        if isinstance(v, int) and v in possible:
            yield CpuRow(kernel, v)


def _runq_rows(ctx: ScanContext, cpus=None):
    kernel = ctx.kernel
    for cpu in (kernel.online_cpus() if cpus is None else cpus):
        try:
            yield from runq_entries(kernel, cpu)
        except FaultError as e:
            walk_warn(kernel, f"runqueue: run queue of CPU {cpu} unreadable: {e}")


def _runq_lookup(ctx: ScanContext, values):
    online = set(ctx.kernel.online_cpus())
    return _runq_rows(ctx, [v for v in dict.fromkeys(values)
                            if isinstance(v, int) and v in online])


CPUS = TableSpec(
    name="cpus",
    doc="One row per possible CPU with its run queue and running task, like the "
        "headers of crash `runq`.",
    object_column="rq",
    walk="per-CPU runqueues of every possible CPU",
    rows=_cpu_rows,
    lookups={"cpu": _cpu_lookup},
    examples=("SELECT cpu, curr_pid, curr_comm, nr_running FROM cpus",),
    columns=(
        Column("cpu", INT32, "CPU number", lambda r: r.cpu),
        Column("online", BOOL, "in __cpu_online_mask",
               lambda r: r.cpu in r.kernel.online_cpus()),
        Column("rq", ADDRESS, "the run queue (struct rq *)", lambda r: r.rq.value_(),
               object_type="struct rq *"),
        Column("curr_pid", INT32, "pid of the running task (rq->curr; 0 when idle)",
               lambda r: r.curr.pid.value_()),
        Column("curr_comm", STRING, "its command name",
               lambda r: task_comm(r.curr)),
        Column("curr", ADDRESS, "the running task (struct task_struct *)",
               lambda r: r.curr.value_(), object_type="struct task_struct *"),
        Column("nr_running", INT32, "runnable tasks of every class, the running one "
               "included (rq->nr_running)", lambda r: r.rq.nr_running.value_()),
    ),
)

RUNQUEUE = TableSpec(
    name="runqueue",
    doc="One row per task on an online CPU's run queue, like crash `runq`: the running "
        "task (current) and the tasks queued in the deadline, real-time and CFS "
        "queues (group queues descended into).  An idle CPU has one row: its idle task.",
    object_column="task",
    walk="per-CPU rq: dl.root rbtree, rt.active.queue[] lists, cfs.tasks_timeline "
         "rbtree (+ group cfs_rqs)",
    rows=_runq_rows,
    lookups={"cpu": _runq_lookup},
    examples=("SELECT cpu, pid, comm, class FROM runqueue WHERE NOT current",),
    columns=(
        Column("cpu", INT32, "CPU of the run queue", lambda e: e.cpu),
        Column("pid", INT32, "task pid (0 for idle tasks)",
               lambda e: e.task.pid.value_()),
        Column("comm", STRING, "command name",
               lambda e: task_comm(e.task)),
        Column("task", ADDRESS, "the task (struct task_struct *)", lambda e: e.task.value_(),
               object_type="struct task_struct *"),
        Column("prio", INT32, "task->prio (0-99 RT, 100-139 normal, -1 DL)",
               lambda e: e.task.prio.value_()),
        Column("class", STRING, "scheduling class: DL, RT, CFS, IDLE (STOP for the "
               "stopper thread)", lambda e: e.sched_class),
        Column("current", BOOL, "running on the CPU (rq->curr)", lambda e: e.current),
        Column("delayed", BOOL, "CFS delayed dequeue: asleep but still queued "
               "(se->sched_delayed, 6.12+)", lambda e: e.delayed),
    ),
)

TABLES = (CPUS, RUNQUEUE)
