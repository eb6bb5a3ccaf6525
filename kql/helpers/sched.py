"""The CPU scheduler as ps / /proc / crash report it: run queues, a task's
CPU, its state (letter, /proc text, crash's two-letter code), whether it is
running (include/linux/sched.h, kernel/sched/sched.h, fs/proc/array.c).

Task iteration and lookup by pid are in :mod:`kql.helpers.pid`, a task's
memory counters and command line in :mod:`kql.helpers.mm` (drgn's placement).
"""

from __future__ import annotations

from kql.errors import FaultError
from kql.helpers.percpu import per_cpu
from kql.object import Object
from kql.types import pointer_to

__all__ = ["cpu_rq", "cpu_curr", "idle_task", "task_cpu", "task_is_kthread", "task_comm",
           "task_state_letters", "task_state_index", "task_state_name", "task_state_letter",
           "task_state_to_char", "task_state_raw", "task_state_value", "task_state_code",
           "running_tasks", "task_is_running", "PF_KTHREAD"]

#: Kernel globals whose type BTF lacks, for Kernel.var() (see kql.helpers):
#: kernel/sched, kernel/fork.c, fs/proc/array.c; the cgroup roots (no cgroup helper yet).
KERNEL_VARIABLES = {
    "runqueues":         "struct rq",
    "task_state_array":  "const char * const [{task_state_array_len}]",
    "nr_threads":        "int",
    "total_forks":       "unsigned long",
    "kernel_cpustat":    "struct kernel_cpustat",
    "cpu_number":        "int",
    "current_task":      "struct task_struct *",
    "pcpu_hot":          "struct pcpu_hot",
    "cgroup_roots":      "struct list_head",
    "init_css_set":      "struct css_set",
    "cgrp_dfl_root":     "struct cgroup_root",
    "blkcg_root":        "struct blkcg",
}

#: include/linux/sched.h; a #define, so not in BTF (unchanged since Linux 2.6).
PF_KTHREAD = 0x00200000
# include/linux/sched.h bits that /proc does not list in task_state_array
# (#defines, so not in BTF; unchanged from 4.14 to 6.12).
TASK_NOLOAD = 0x0400
TASK_UNINTERRUPTIBLE = 0x0002
TASK_IDLE = TASK_UNINTERRUPTIBLE | TASK_NOLOAD
TASK_RTLOCK_WAIT = 0x1000


def cpu_rq(kernel, cpu: int) -> Object:
    """``cpu_rq(cpu)``.

    :return: ``struct rq *``
    """
    rq = per_cpu("runqueues", cpu, kernel)
    pt = pointer_to(rq.type_)
    return Object._make(kernel, pt, pt, None, rq.address_)


def cpu_curr(kernel, cpu: int) -> Object:
    """The task running on ``cpu`` (``rq->curr``).

    :return: ``struct task_struct *``
    """
    return cpu_rq(kernel, cpu).curr.read_()


def idle_task(kernel, cpu: int) -> Object:
    """``idle_task(cpu)`` (``rq->idle``).

    :return: ``struct task_struct *``
    """
    return cpu_rq(kernel, cpu).idle.read_()


def task_cpu(task: Object) -> int:
    """``task_cpu()``.

    :param task: ``struct task_struct *``
    """
    # Since Linux 5.16 (commit bcf9033e5449 "sched: move CPU field back into
    # thread_info if THREAD_INFO_IN_TASK") the CPU is thread_info.cpu again.
    if task.has_member_("cpu"):
        return task.cpu.value_()
    return task.thread_info.cpu.value_()


def task_is_kthread(task: Object) -> bool:
    """True for kernel threads (``PF_KTHREAD`` in ``task->flags``).

    :param task: ``struct task_struct *``
    """
    return bool(task.flags.value_() & PF_KTHREAD)


def task_comm(task: Object) -> str:
    """``task->comm`` as text.

    :param task: ``struct task_struct *``
    """
    return task.comm.string_().decode(errors="replace")


# fs/proc/array.c task_state_array, used when the kernel's own copy is unreadable
_DEFAULT_STATES = ("R (running)", "S (sleeping)", "D (disk sleep)", "T (stopped)",
                   "t (tracing stop)", "X (dead)", "Z (zombie)", "P (parked)", "I (idle)")


def task_state_letters(kernel) -> tuple[str, ...]:
    """The kernel's own ``task_state_array`` ("R (running)", ...)."""
    states = kernel.cache.get("task_state_array")
    if states is None:
        states = _DEFAULT_STATES
        sym = kernel.symbols.get("task_state_array")
        if sym is not None and sym.size and sym.size % 8 == 0:
            try:
                ptrs = kernel.read(sym.address, sym.size)
                states = tuple(kernel.read_cstring(int.from_bytes(ptrs[i:i + 8], "little"), 64)
                               .decode("latin-1") for i in range(0, len(ptrs), 8))
            except FaultError:
                states = _DEFAULT_STATES
        kernel.cache["task_state_array"] = states
    return states


def _task_layout(kernel) -> dict:
    """Offsets in struct task_struct that the task walks (kql.helpers.pid) and
    task_state_index() read, found once per kernel."""
    lay = kernel.cache.get("task_layout")
    if lay is None:
        t = kernel.types.find_type("struct task_struct")
        lay = {"tasks": t.offsetof("tasks"), "signal": t.offsetof("signal")}
        # Since Linux 6.7 (commit 8e1f385104ac "kill task_struct->thread_group"),
        # threads are only on signal->thread_head (linked by thread_node, which
        # exists since 3.14); older kernels also have task->thread_group.
        if t.has_member("thread_node"):
            lay["thread_node"] = t.offsetof("thread_node")
            lay["thread_head"] = kernel.types.find_type("struct signal_struct").offsetof(
                "thread_head")
        else:
            lay["thread_group"] = t.offsetof("thread_group")
        # Linux 5.14 (commit 2f064a59a11f "sched: Change task_struct::state")
        # renamed state to __state.
        lay["state"] = t.member("__state" if t.has_member("__state") else "state")
        lay["exit_state"] = t.offsetof("exit_state")
        kernel.cache["task_layout"] = lay
    return lay


def task_state_index(task: Object) -> int:
    """``task_state_index()``: index into ``task_state_array`` (0 = running).

    :param task: ``struct task_struct *``
    """
    kernel = task.prog_
    lay = _task_layout(kernel)
    m, bitoff = lay["state"]
    addr = task.value_()
    state = int.from_bytes(kernel.read(addr + (bitoff >> 3), m.type.size), "little")
    exit_state = kernel.read_u32(addr + lay["exit_state"])
    n = len(task_state_letters(kernel))
    report = (1 << (n - 2)) - 1           # every listed state but R and I
    report_idle = report + 1
    value = (state | exit_state) & report
    if (state & TASK_IDLE) == TASK_IDLE:
        value = report_idle
    if state & TASK_RTLOCK_WAIT:
        value = TASK_UNINTERRUPTIBLE
    return value.bit_length()


def task_state_name(task: Object) -> str:
    """The /proc state text, e.g. ``"S (sleeping)"``.

    :param task: ``struct task_struct *``
    """
    states = task_state_letters(task.prog_)
    i = task_state_index(task)
    return states[i] if i < len(states) else "?"


def task_state_letter(task: Object) -> str:
    """The /proc state letter (R S D T t X Z P I).

    :param task: ``struct task_struct *``
    """
    return task_state_name(task)[:1]


#: drgn's name for :func:`task_state_letter`.
task_state_to_char = task_state_letter


# include/linux/sched.h bits beyond TASK_PARKED, which task_state_array does
# not list (#defines, not in BTF).  They sit right above TASK_PARKED, in this
# order, from Linux 4.14 (commit 06eb61844d84 "sched/debug: Add explicit
# TASK_IDLE printing") to 6.12: TASK_DEAD, TASK_WAKEKILL, TASK_WAKING,
# TASK_NOLOAD, TASK_NEW, TASK_RTLOCK_WAIT (5.15+).
_ABOVE_PARKED = ("DEAD", "WAKEKILL", "WAKING", "NOLOAD", "NEW", "RTLOCK_WAIT")


def _state_bits(kernel) -> dict[str, int]:
    """State bit values by name, from the kernel's task_state_array: its
    entries after "R" are the TASK_REPORT bits in bit order (fs/proc/array.c
    checks this with BUILD_BUG_ON), the last one ("I") being TASK_REPORT_IDLE."""
    bits = kernel.cache.get("task_state_bits")
    if bits is None:
        letters = [s[:1] for s in task_state_letters(kernel)]
        names = {"S": "INTERRUPTIBLE", "D": "UNINTERRUPTIBLE", "T": "STOPPED",
                 "t": "TRACED", "X": "EXIT_DEAD", "Z": "EXIT_ZOMBIE", "P": "PARKED"}
        bits = {}
        for i, letter in enumerate(letters[1:-1]):
            if letter in names:
                bits[names[letter]] = 1 << i
        parked = bits.get("PARKED", 0x40)
        for i, name in enumerate(_ABOVE_PARKED, 1):
            bits[name] = parked << i
        kernel.cache["task_state_bits"] = bits
    return bits


def task_state_raw(task: Object) -> int:
    """``task->__state | task->exit_state``.

    :param task: ``struct task_struct *``
    """
    # Linux 5.14 (commit 2f064a59a11f "sched: Change task_struct::state")
    # renamed state to __state.
    state = task.member_("__state" if task.has_member_("__state") else "state")
    return (state.value_() | task.exit_state.value_()) & 0xFFFFFFFF


def task_state_value(task: Object) -> int:
    """The state as /proc reports it, as a bit value: 0 R, 1 S, 2 D, 4 T, 8 t,
    16 X, 32 Z, 64 P, 128 I (``1 << (task_state_index() - 1)``).

    :param task: ``struct task_struct *``
    """
    i = task_state_index(task)
    return 0 if i == 0 else 1 << (i - 1)


def task_state_code(task: Object, raw: int | None = None) -> str:
    """crash's two-letter state (``ps`` ST column): RU IN UN ID ZO ST TR DE PA
    WA NE, from the raw state bits; later tests win, as in crash's
    task_state_string().

    :param task: ``struct task_struct *``
    """
    b = _state_bits(task.prog_)
    s = task_state_raw(task) if raw is None else raw
    code = "??"
    if s == 0:
        code = "RU"
    if s & b["INTERRUPTIBLE"]:
        code = "IN"
    if s & b["UNINTERRUPTIBLE"]:
        code = "ID" if s & b["NOLOAD"] else "UN"
    if s & b["STOPPED"]:
        code = "ST"
    if s & b["TRACED"]:
        code = "TR"
    # An exited task has __state TASK_DEAD; exit_state says whether it is a
    # zombie (EXIT_ZOMBIE) or being reaped (EXIT_DEAD).
    if s & (b["EXIT_DEAD"] | b["DEAD"]):
        code = "DE"
    if s & b["EXIT_ZOMBIE"]:
        code = "ZO"
    if s & b["PARKED"]:
        code = "PA"
    if s == b["WAKING"]:
        code = "WA"
    if s == b["NEW"]:
        code = "NE"
    if code == "??" and s & b["RTLOCK_WAIT"]:
        code = "UN"
    return code


def running_tasks(kernel) -> dict[int, int]:
    """``{task address: cpu}`` of each online CPU's ``rq->curr`` (cached)."""
    cur = kernel.cache.get("running_tasks")
    if cur is None:
        cur = {}
        for cpu in kernel.online_cpus():
            try:
                cur.setdefault(cpu_rq(kernel, cpu).curr.value_(), cpu)
            except FaultError:
                continue
        kernel.cache["running_tasks"] = cur
    return cur


def task_is_running(task: Object) -> bool:
    """True if ``task`` is some online CPU's ``rq->curr``.

    :param task: ``struct task_struct *``
    """
    return task.value_() in running_tasks(task.prog_)
