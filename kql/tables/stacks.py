"""stack_frames and stack_words: every task's kernel stack as rows (crash
``bt``, ``bt -r``).  The walking is in :mod:`kql.helpers.stack`."""

from __future__ import annotations


from kql.errors import FaultError
from kql.helpers.pid import find_tasks, for_each_task_and_pid
from kql.helpers.sched import task_comm
from kql.helpers.stack import (frame_of_word, stack_trace, task_pt_regs, task_stack_words,
                              text_symbol)
from kql.tables.base import (ADDRESS, Column, INT32, INT64, STRING, ScanContext,
                            TableSpec)

__all__ = ["TABLES"]


class _Task:
    """A task and the values every row of it shares, read once."""

    __slots__ = ("task", "addr", "pid", "comm", "_frames")

    def __init__(self, task):
        self.task = task
        self.addr = task.value_()
        self.pid = task.pid.value_()
        self.comm = task_comm(task)
        self._frames = None

    @property
    def frames(self):
        """The task's frames, unwound once (for stack_words' frame columns)."""
        if self._frames is None:
            try:
                self._frames = stack_trace(self.task)
            except ValueError:
                self._frames = []
        return self._frames


class FrameRow:
    __slots__ = ("t", "frame")

    def __init__(self, t: _Task, frame):
        self.t = t
        self.frame = frame


class WordRow:
    __slots__ = ("t", "address", "value")

    def __init__(self, t: _Task, address: int, value: int):
        self.t = t
        self.address = address
        self.value = value

    @property
    def frame(self):
        return frame_of_word(self.t.frames, self.address)

    def frame_size(self):
        """Bytes from this word's frame's sp to the next (outer) frame's."""
        f = self.frame
        frames = self.t.frames
        if f is None or f.level + 1 >= len(frames):
            return None
        return frames[f.level + 1].sp - f.sp


def _frame_attr(name):
    def get(r):
        f = r.frame
        return None if f is None else getattr(f, name)
    return get


def _warn(ctx: ScanContext, where: str, err: Exception) -> None:
    if ctx.warnings is not None:
        ctx.warnings.add(where, err)


def _all_tasks(ctx: ScanContext):
    return for_each_task_and_pid(ctx.kernel)


def _tasks_by_pid(ctx: ScanContext, values: list):
    """Tasks whose pid is in ``values`` (pid 0: every CPU's idle task)."""
    return find_tasks(ctx.kernel, values)


def _frames(ctx: ScanContext, tasks):
    for task in tasks:
        try:
            t = _Task(task)
            frames = stack_trace(task)
        except (FaultError, ValueError) as e:
            _warn(ctx, "stack_frames.task", e)
            continue
        for f in frames:
            yield FrameRow(t, f)


def _words(ctx: ScanContext, tasks):
    for task in tasks:
        try:
            t = _Task(task)
            words = list(task_stack_words(task))
        except FaultError as e:
            _warn(ctx, "stack_words.task", e)
            continue
        for address, value in words:
            yield WordRow(t, address, value)


class _RegRow(tuple):
    """(task, register name, value)."""

    t = property(lambda self: self[0])


def _regs(ctx: ScanContext, tasks):
    for task in tasks:
        try:
            t = _Task(task)
            regs = task_pt_regs(task)
        except FaultError as e:
            _warn(ctx, "user_regs.task", e)
            continue
        for name, value in (regs or {}).items():
            yield _RegRow((t, name, value))


def _per_task(rows):
    """``rows`` and the pid lookup of a table with rows per task:
    ``rows(ctx, tasks)`` over every task, or over the tasks of the pids asked."""
    return {"rows": lambda ctx: rows(ctx, _all_tasks(ctx)),
            "lookups": {"pid": lambda ctx, values: rows(ctx, _tasks_by_pid(ctx, values))}}


def _task_columns():
    return (
        Column("task", ADDRESS, "the task (struct task_struct *)",
               lambda r: r.t.addr, object_type="struct task_struct *"),
        Column("pid", INT32, "thread id (task->pid; 0 for the idle tasks)",
               lambda r: r.t.pid),
        Column("comm", STRING, "command name (task->comm)", lambda r: r.t.comm),
    )


TABLES = (
    TableSpec(
        name="stack_frames",
        doc="One row per frame of every task's kernel stack, innermost first "
            "(crash `bt`): ORC (x86_64) or frame-record (arm64) unwinding from the task's "
            "saved context (sleeping) or "
            "its CPU's registers (running, panicking), across pt_regs frames.",
        object_column="task",
        walk="every task (as tasks), each stack unwound with ORC (x86_64) or frame records "
             "(arm64)",
        **_per_task(_frames),
        examples=(
            "SELECT pid, level, function, offset, kind FROM stack_frames WHERE pid = 1",
            "SELECT function, count(*) AS n FROM stack_frames GROUP BY function "
            "ORDER BY n DESC LIMIT 10",
        ),
        columns=_task_columns() + (
            Column("level", INT32, "frame number, 0 = innermost",
                   lambda r: r.frame.level),
            Column("sp", ADDRESS, "stack pointer in this frame", lambda r: r.frame.sp),
            Column("pc", ADDRESS, "program counter: a return address, or the exact "
                   "address for a running task's first frame and a frame interrupted "
                   "by an exception", lambda r: r.frame.pc),
            Column("function", STRING, "function name as kallsyms names pc "
                   "(/proc/PID/stack's %pB: a return address is looked up at pc - 1); "
                   "NULL if no symbol covers it", lambda r: r.frame.function),
            Column("offset", INT64, "pc - the function's address",
                   lambda r: r.frame.offset if r.frame.function is not None else None),
            Column("module", STRING, "module the function is in; NULL for vmlinux",
                   lambda r: r.frame.module),
            Column("kind", STRING, "'regs' if this frame holds a pt_regs (syscall, "
                   "interrupt or exception entry) the unwinder crossed, else 'call'",
                   lambda r: r.frame.kind),
            Column("symbol", STRING, "pc as 'function+0xoffset' (' [module]')",
                   lambda r: r.frame.symbol),
        ),
    ),
    TableSpec(
        name="stack_words",
        doc="Raw words of the live part of every task's kernel stack, from its stack "
            "pointer to the top, with the function each points into (crash `bt -r`).",
        object_column="task",
        walk="every task (as tasks), stack read from its sp to task->stack + THREAD_SIZE",
        **_per_task(_words),
        examples=(
            "SELECT address, value, symbol FROM stack_words WHERE pid = 1 AND symbol "
            "IS NOT NULL",
        ),
        columns=_task_columns() + (
            Column("address", ADDRESS, "address of the word on the stack",
                   lambda r: r.address),
            Column("value", ADDRESS, "the 8-byte word", lambda r: r.value),
            Column("symbol", STRING, "'name+0xoff' when value points into a kernel "
                   "or module function, else NULL",
                   lambda r: text_symbol(r.t.task.prog_, r.value)),
            Column("level", INT32, "the frame (stack_frames.level) the word belongs to: "
                   "the outermost frame whose sp is at or below the word, 0 below the "
                   "first frame (crash `bt -f` groups words so)", _frame_attr("level")),
            Column("frame_sp", ADDRESS, "that frame's stack pointer", _frame_attr("sp")),
            Column("frame_pc", ADDRESS, "that frame's pc (its return address, RA)",
                   _frame_attr("pc")),
            Column("frame_symbol", STRING, "that frame's pc as 'function+0xoffset'",
                   _frame_attr("symbol")),
            Column("frame_size", INT64, "bytes from that frame's sp to the next outer "
                   "frame's sp (NULL for the outermost)", lambda r: r.frame_size()),
        ),
    ),
    TableSpec(
        name="user_regs",
        doc="The user registers each user task saved at its last kernel entry (the "
            "pt_regs at the top of its kernel stack; crash prints them under `bt`). "
            "One row per register, in the pt_regs layout's order; none for kernel "
            "threads.",
        object_column="task",
        walk="every task (as tasks), pt_regs read from the top of its kernel stack",
        **_per_task(_regs),
        examples=("SELECT name, hex(value) FROM user_regs WHERE pid = 1",),
        columns=_task_columns() + (
            Column("name", STRING, "register name as in struct pt_regs (rip, rsp, "
                   "eflags, orig_rax, …)", lambda r: r[1]),
            Column("value", ADDRESS, "its value", lambda r: r[2]),
        ),
    ),
)
