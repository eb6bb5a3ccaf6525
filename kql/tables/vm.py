"""vmas and environ: crash ``vm``, /proc/PID/maps and /proc/PID/environ."""

from __future__ import annotations

from functools import cached_property


from kql.errors import FaultError
from kql.helpers.list import walk_warn
from kql.helpers.mm import (for_each_vma, get_gate_vma, task_environ, vma_dev,
                            vma_file_offset, vma_flags_str, vma_ino, vma_name)
from kql.helpers.pid import find_processes, for_each_task_and_pid
from kql.helpers.sched import task_comm
from kql.tables.base import (ADDRESS, Column, INT32, INT64, STRING, ScanContext,
                            TableSpec)

__all__ = ["TABLES", "VmaRow", "EnvRow"]


def _processes(ctx: ScanContext):
    """Every process, or those whose tgid was pushed down as ``pid``/``tgid``."""
    kernel = ctx.kernel
    wanted = None
    for col in ("pid", "tgid"):          # both pushed down: their intersection
        if col in ctx.keys:
            vals = {v for v in ctx.keys[col] if isinstance(v, int) and 0 < v < 1 << 31}
            wanted = vals if wanted is None else wanted & vals
    if wanted is None:
        yield from for_each_task_and_pid(kernel, leaders_only=True)
        return
    yield from find_processes(kernel, wanted)


class VmaRow:
    """One mapping of one process."""

    def __init__(self, task, mm, vma):
        self.task = task        # struct task_struct * (thread-group leader)
        self.mm = mm            # struct mm_struct *
        self.vma = vma          # struct vm_area_struct *

    @cached_property
    def v(self):
        return self.vma.read_()

    def name(self) -> str:
        return vma_name(self.vma, self.mm)

    def dev(self) -> str:
        d = vma_dev(self.vma)
        return "%02x:%02x" % (d >> 20, d & 0xFFFFF)


def _vma_rows(ctx: ScanContext):
    kernel = ctx.kernel
    for task in _processes(ctx):
        try:
            mm = task.mm
            if not mm.value_():
                continue
            for vma in for_each_vma(mm):
                yield VmaRow(task, mm, vma)
            gate = get_gate_vma(mm)
        except FaultError as e:
            walk_warn(kernel, f"vmas: address space of task {task.value_():#x} unreadable: {e}")
            continue
        if gate is not None:
            yield VmaRow(task, mm, gate)


class EnvRow:
    """One environment variable of one process (``err`` set, name and value
    NULL, when the process's environment is not in the dump)."""

    def __init__(self, task, name=None, value=None, err=None):
        self.task = task
        self._name = name
        self._value = value
        self.err = err

    def name(self):
        if self.err is not None:
            raise self.err
        return self._name

    def value(self):
        if self.err is not None:
            raise self.err
        return self._value


def _env_rows(ctx: ScanContext):
    for task in _processes(ctx):
        try:
            env = task_environ(task)
        except FaultError as e:
            yield EnvRow(task, err=e)
            continue
        for name, value in env or ():
            yield EnvRow(task, name, value)


def _lookup(rows):
    """A key lookup (``pid = N``): the rows of the processes found by
    find_task() (``_processes`` reads the pushed-down keys)."""
    def find_task(ctx, values):
        return rows(ctx)
    return find_task


TABLES = (
    TableSpec(
        name="vmas",
        doc="Every mapping of every process (crash `vm`, /proc/PID/maps), in "
            "address order; the maple tree mm->mm_mt (6.1+) or the mm->mmap list.",
        object_column="vma",
        walk="for each process: mm->mm_mt (maple tree) or mm->mmap, then the gate "
             "VMA ([vsyscall]) unless vsyscall=none",
        rows=_vma_rows,
        lookups={"pid": _lookup(_vma_rows), "tgid": _lookup(_vma_rows)},
        examples=(
            "SELECT pid, start, end, flags, path FROM vmas WHERE pid = 1",
            "SELECT pid, sum(\"end\" - start) AS bytes FROM vmas GROUP BY pid",
        ),
        columns=(
            Column("pid", INT32, "process id (the thread-group leader's pid)",
                   lambda r: r.task.pid.value_()),
            Column("tgid", INT32, "thread-group id (= pid)",
                   lambda r: r.task.tgid.value_()),
            Column("comm", STRING, "the process's command name",
                   lambda r: task_comm(r.task)),
            Column("vma", ADDRESS, "the mapping (struct vm_area_struct *)",
                   lambda r: r.vma.value_(), object_type="struct vm_area_struct *"),
            Column("start", ADDRESS, "first address (vm_start)", lambda r: r.v.vm_start.value_()),
            Column("end", ADDRESS, "address after the last (vm_end)",
                   lambda r: r.v.vm_end.value_()),
            Column("flags", STRING, "permissions as /proc/PID/maps: 'r-xp', 'rw-s' ...",
                   lambda r: vma_flags_str(r.v)),
            Column("pgoff", INT64, "vma->vm_pgoff (in pages; for anonymous mappings "
                   "the kernel sets it to vm_start >> PAGE_SHIFT)",
                   lambda r: r.v.vm_pgoff.value_()),
            Column("offset", INT64, "file offset in bytes as /proc/PID/maps shows it "
                   "(vm_pgoff << PAGE_SHIFT; 0 for anonymous mappings)",
                   lambda r: vma_file_offset(r.vma)),
            Column("dev", STRING, "device of the mapped file as /proc/PID/maps "
                   "('fd:01'; '00:00' when anonymous)", VmaRow.dev),
            Column("ino", INT64, "inode number of the mapped file (0 when anonymous)",
                   lambda r: vma_ino(r.vma)),
            Column("path", STRING, "the name column of /proc/PID/maps: the file's "
                   "path (' (deleted)' when unlinked), '[heap]', '[stack]', '[vdso]', "
                   "'[vvar]', '[anon:NAME]', or '' for other anonymous memory",
                   VmaRow.name),
            Column("vm_flags", INT64, "vma->vm_flags (VM_* bits)",
                   lambda r: r.v.vm_flags.value_()),
            Column("file", ADDRESS, "the mapped file (vm_file, struct file *; NULL when "
                   "anonymous)", lambda r: r.v.vm_file.value_() or None),
        ),
    ),
    TableSpec(
        name="environ",
        doc="Environment variables of every process (/proc/PID/environ), read from "
            "user memory through the process's page tables.  A process whose "
            "environment is not in the dump (makedumpfile -d 31 drops user pages) "
            "has one row with NULL name and value.",
        walk="for each process: user memory mm->env_start..env_end",
        rows=_env_rows,
        lookups={"pid": _lookup(_env_rows)},
        examples=("SELECT pid, value FROM environ WHERE name = 'PATH'",),
        columns=(
            Column("pid", INT32, "process id", lambda r: r.task.pid.value_()),
            Column("comm", STRING, "the process's command name",
                   lambda r: task_comm(r.task)),
            Column("name", STRING, "variable name (text before the first '='); NULL "
                   "when the environment is not in the dump", EnvRow.name),
            Column("value", STRING, "value (text after the first '='; NULL for an "
                   "entry without '=' or when not in the dump)", EnvRow.value),
        ),
    ),
)
