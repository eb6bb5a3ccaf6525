"""tasks: one row per task (threads and per-CPU idle tasks included), like
crash ``ps``."""

from __future__ import annotations

import hashlib
from functools import cached_property

from kql.helpers.mm import get_mm_rss, page_size, task_argv
from kql.helpers.pid import find_tasks, for_each_task_and_pid, task_pid_nr
from kql.helpers.sched import (PF_KTHREAD, running_tasks, task_cpu, task_state_code,
                               task_state_raw, task_state_value)
from kql.helpers.stack import task_stack_names
from kql.tables.base import (ADDRESS, BOOL, INT32, INT64, STRING, STRING_LIST, Column,
                             ScanContext, TableSpec)

__all__ = ["TABLES", "TaskRow"]


def _fields(kernel) -> dict:
    """Where the members the common columns read sit in struct task_struct:
    name -> (offset, size, signed), found once per kernel."""
    fields = kernel.cache.get("tasks_table_fields")
    if fields is None:
        t = kernel.types.find_type("struct task_struct")
        fields = {}
        for name in ("pid", "tgid", "comm"):
            m, bit = t.member(name)
            mt = m.type.strip_typedefs()
            fields[name] = (bit >> 3, mt.size, bool(mt.signed) if mt.kind == "int" else False)
        kernel.cache["tasks_table_fields"] = fields
    return fields


class TaskRow:
    """One task; values shared by several columns are read once, on demand."""

    def __init__(self, task):
        self.task = task            # struct task_struct *

    def _int(self, name: str) -> int:
        off, size, signed = _fields(self.task.prog_)[name]
        return int.from_bytes(self.task.prog_.read(self.addr + off, size), "little",
                              signed=signed)

    def pid(self) -> int:
        return self._int("pid")

    def tgid(self) -> int:
        return self._int("tgid")

    @cached_property
    def addr(self) -> int:
        return self.task.value_()

    @cached_property
    def state_raw(self) -> int:
        return task_state_raw(self.task)

    @cached_property
    def flags(self) -> int:
        return self.task.flags.value_()

    @cached_property
    def cred(self):
        # /proc reports the objective credentials (real_cred, __task_cred()).
        return self.task.real_cred.read_()

    @cached_property
    def mm(self):
        """struct mm_struct (a value copy) or None for kernel threads."""
        mm = self.task.mm
        return mm.read_() if mm.value_() else None

    def comm(self) -> str:
        off, size, _ = _fields(self.task.prog_)["comm"]
        raw = self.task.prog_.read(self.addr + off, size)
        return raw.split(b"\0", 1)[0].decode(errors="replace")

    def ppid(self) -> int:
        # fs/proc/array.c: task_tgid_nr_ns(real_parent) (0 for pid 0/1/2,
        # whose real parent is init_task).
        return self.task.real_parent.tgid.value_()

    def cred_id(self, name: str) -> int:
        return self.cred.member_(name).val.value_()

    def rss_bytes(self) -> int | None:
        mm = self.mm
        return None if mm is None else get_mm_rss(mm) * page_size(self.task.prog_)

    def vsz_bytes(self) -> int | None:
        mm = self.mm
        return None if mm is None else mm.total_vm.value_() * page_size(self.task.prog_)

    def start_time_ns(self) -> int:
        t = self.task
        # Since Linux 5.5 (commit cf25e24db61c "time: Rename tsk->real_start_time
        # to ->start_boottime") the boot-based start time is start_boottime.
        for name in ("start_boottime", "real_start_time"):
            if t.has_member_(name):
                return t.member_(name).value_()
        return t.start_time.value_()

    def group_id(self, pidtype: str) -> int | None:
        """pid_nr() of the task's process group / session (0 if none)."""
        return task_pid_nr(self.task, pidtype)

    @cached_property
    def stack(self) -> list[str]:
        return task_stack_names(self.task)

    def cmdline(self) -> str | None:
        argv = task_argv(self.task)
        return None if argv is None else " ".join(argv)

    def __repr__(self) -> str:
        return f"TaskRow({self.addr:#x})"


def stack_signature(names: list[str] | None) -> str | None:
    """``tasks.stack_sig``: sha1 of ``'\\n'.join(names)``, 16 hex digits;
    None for no stack (NULL or empty).

    >>> stack_signature(["__do_sys_pause", "do_syscall_64"])
    '253cc5e32cfcfaea'
    """
    if not names:
        return None
    return hashlib.sha1("\n".join(names).encode()).hexdigest()[:16]


def _rows(ctx: ScanContext):
    for task in for_each_task_and_pid(ctx.kernel):
        yield TaskRow(task)


def find_task(ctx: ScanContext, values: list):
    """``pid = N`` / ``pid IN (...)``: find_task through the pid idr; pid 0
    (the idle tasks, which are in no pid table) from each CPU's rq->idle."""
    for t in find_tasks(ctx.kernel, values):
        yield TaskRow(t)


def _cpu(r: TaskRow) -> int:
    return task_cpu(r.task)


TABLES = (
    TableSpec(
        name="tasks",
        doc="One row per task: every thread of every process, kernel threads and "
            "each CPU's idle task (pid 0), like crash `ps`.",
        object_column="task",
        walk="walk init_task.tasks + thread groups (signal->thread_head) + per-CPU "
             "idle tasks (rq->idle)",
        rows=_rows,
        lookups={"pid": find_task},
        examples=(
            "SELECT pid, comm, state FROM tasks WHERE state = 2",
            "SELECT pid, comm, task->se.vruntime FROM tasks WHERE NOT is_kthread",
        ),
        columns=(
            Column("task", ADDRESS, "the task (struct task_struct *)",
                   lambda r: r.addr, object_type="struct task_struct *"),
            Column("pid", INT32, "thread id (task->pid; 0 for the idle tasks)", TaskRow.pid),
            Column("tgid", INT32, "process id (task->tgid)", TaskRow.tgid),
            Column("ppid", INT32, "parent's process id (task->real_parent->tgid), "
                   "as /proc reports it", TaskRow.ppid),
            Column("comm", STRING, "command name (task->comm, at most 15 bytes)",
                   TaskRow.comm),
            Column("state", INT32,
                   "state as /proc reports it: 0 R, 1 S, 2 D, 4 T, 8 t, 16 X, 32 Z, 64 P, "
                   "128 I (task_state_index())", lambda r: task_state_value(r.task)),
            Column("st", STRING,
                   "crash's state code: RU IN UN ID ZO ST TR DE PA WA NE",
                   lambda r: task_state_code(r.task, r.state_raw)),
            Column("state_raw", INT64, "task->__state | task->exit_state",
                   lambda r: r.state_raw),
            Column("cpu", INT32, "CPU the task last ran on (task_cpu())", _cpu),
            Column("active", BOOL, "running on a CPU at dump time (some online "
                   "CPU's rq->curr)", lambda r: r.addr in running_tasks(r.task.prog_)),
            Column("uid", INT64, "real user id (real_cred->uid)",
                   lambda r: r.cred_id("uid")),
            Column("gid", INT64, "real group id (real_cred->gid)",
                   lambda r: r.cred_id("gid")),
            Column("euid", INT64, "effective user id (real_cred->euid)",
                   lambda r: r.cred_id("euid")),
            Column("prio", INT32, "task->prio (0-99 real-time, 100-139 normal; "
                   "/proc's priority + 100)", lambda r: r.task.prio.value_()),
            Column("policy", INT32, "scheduling policy (task->policy: 0 NORMAL, "
                   "1 FIFO, 2 RR, 3 BATCH, 5 IDLE, 6 DEADLINE)",
                   lambda r: r.task.policy.value_()),
            Column("threads", INT32, "threads in its thread group "
                   "(signal->nr_threads)", lambda r: r.task.signal.nr_threads.value_()),
            Column("rss_bytes", INT64, "resident set size in bytes (mm rss counters "
                   "file+anon+shmem, as /proc VmRSS); NULL without an mm",
                   TaskRow.rss_bytes),
            Column("vsz_bytes", INT64, "virtual memory size in bytes "
                   "(mm->total_vm, as /proc VmSize); NULL without an mm",
                   TaskRow.vsz_bytes),
            Column("start_time_ns", INT64, "start time in ns since boot, suspend "
                   "included (task->start_boottime, as /proc/PID/stat starttime)",
                   TaskRow.start_time_ns),
            Column("utime_ns", INT64, "user CPU time in ns (task->utime, not "
                   "scaled as /proc scales it)", lambda r: r.task.utime.value_()),
            Column("stime_ns", INT64, "system CPU time in ns (task->stime)",
                   lambda r: r.task.stime.value_()),
            Column("flags", INT64, "task->flags (PF_* bits)", lambda r: r.flags),
            Column("is_kthread", BOOL, "kernel thread (PF_KTHREAD)",
                   lambda r: bool(r.flags & PF_KTHREAD)),
            Column("nice", INT32, "nice value (task->static_prio - 120)",
                   lambda r: r.task.static_prio.value_() - 120),
            Column("rt_priority", INT32, "real-time priority (task->rt_priority)",
                   lambda r: r.task.rt_priority.value_()),
            Column("pgid", INT32, "process group id (signal->pids[PIDTYPE_PGID])",
                   lambda r: r.group_id("PIDTYPE_PGID")),
            Column("sid", INT32, "session id (signal->pids[PIDTYPE_SID])",
                   lambda r: r.group_id("PIDTYPE_SID")),
            Column("mm", ADDRESS, "address space (task->mm; NULL for kernel threads)",
                   lambda r: r.task.mm.value_() or None),
            Column("stack", STRING_LIST, "kernel stack: function names, "
                   "innermost first, as crash `bt` lists them (scheduler frames "
                   "included; /proc/PID/stack omits those); [] without a kernel stack",
                   lambda r: r.stack),
            Column("stack_sig", STRING, "signature of the stack for grouping across "
                   "tasks and dumps: the first 16 hex digits of the sha1 of the function "
                   "names joined by newlines (offsets excluded, so the same code path has "
                   "the same signature on every dump of a build); NULL without a stack",
                   lambda r: stack_signature(r.stack)),
            Column("cmdline", STRING, "command line, arguments joined by spaces, "
                   "read from user memory (mm->arg_start..arg_end); NULL when the pages "
                   "are not in the dump or without an mm", TaskRow.cmdline, optional=True),
            Column("argv", STRING_LIST, "the arguments as a list, as "
                   "/proc/PID/cmdline has them", lambda r: task_argv(r.task), optional=True),
        ),
    ),
)
