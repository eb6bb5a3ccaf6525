"""Per-task scheduler and accounting facts as ps / /proc report them:
state value and crash code, running-on-CPU, credentials, memory counters,
command line (include/linux/sched.h, fs/proc/array.c, fs/proc/base.c,
include/linux/mm.h).

Task iteration, ``task_state_index()`` and ``task_cpu()`` are in
:mod:`kql.helpers.task`; this module builds on them.
"""

from __future__ import annotations

from typing import Iterator

from kql.errors import FaultError
from kql.helpers.percpu import cpu_rq
from kql.helpers.list import walk_warn
from kql.helpers.pid import for_each_pid, pid_task
from kql.helpers.task import (for_each_process, for_each_task, sweep_children,
                              task_state_index, task_state_letters)
from kql.object import Object

__all__ = ["for_each_task_and_pid", "find_tasks", "find_processes", "task_comm", "task_state_raw", "task_state_value", "task_state_code",
           "running_tasks", "task_is_running", "get_mm_counter", "get_mm_counter_sum",
           "get_mm_rss", "task_rss_bytes", "task_vsz_bytes", "task_cmdline", "task_argv",
           "page_size", "MM_COUNTERS"]

def for_each_task_and_pid(prog, *, leaders_only: bool = False) -> Iterator[Object]:
    """Every task as :func:`kql.helpers.task.for_each_task` visits them
    (``leaders_only``: thread-group leaders, as ``for_each_process``); if
    that walk met damage (unreadable or filtered pages, a warning on the
    kernel), also the tasks of the pid idr it could not reach: every task
    has a struct pid there (crash builds its task table from both too).

    :return: iterator of ``struct task_struct *``
    """
    warnings = getattr(prog, "warnings", None)
    before = len(warnings) if warnings is not None else 0
    seen: set[int] = set()
    exited = prog.cache.setdefault("exited_tasks", set())   # on a live kernel
    gone = len(exited)
    for task in (for_each_process if leaders_only else for_each_task)(prog):
        seen.add(task.value_())
        yield task
    if warnings is None or len(warnings) - before == len(exited) - gone:
        return
    seen |= exited
    try:
        for pid in for_each_pid(prog):
            try:
                task = pid_task(pid, "PIDTYPE_PID")
                addr = task.value_()
                if not addr or addr in seen or (
                        leaders_only and task.group_leader.value_() != addr):
                    continue
            except FaultError as e:
                try:
                    nr = pid.numbers[0].nr.value_()
                except FaultError:
                    nr = "?"
                walk_warn(prog, f"for_each_task_and_pid: task of pid {nr} unreadable: {e}")
                continue
            seen.add(addr)
            yield task
    except FaultError as e:
        walk_warn(prog, f"for_each_task_and_pid: pid idr unreadable: {e}")
    if leaders_only:
        # the children lists, as for_each_task() sweeps them (leaders only)
        for task in sweep_children(prog, seen):
            try:
                if task.group_leader.value_() == task.value_():
                    yield task
            except FaultError as e:
                walk_warn(prog, f"for_each_task_and_pid: task {task.value_():#x} unreadable: {e}")


# include/linux/sched.h bits beyond TASK_PARKED, which task_state_array does
# not list (#defines, not in BTF).  They sit right above TASK_PARKED, in this
# order, from Linux 4.14 (commit 06eb61844d84 "sched/debug: Add explicit
# TASK_IDLE printing") to 6.12: TASK_DEAD, TASK_WAKEKILL, TASK_WAKING,
# TASK_NOLOAD, TASK_NEW, TASK_RTLOCK_WAIT (5.15+).
_ABOVE_PARKED = ("DEAD", "WAKEKILL", "WAKING", "NOLOAD", "NEW", "RTLOCK_WAIT")


def find_tasks(prog, pids) -> Iterator[Object]:
    """The tasks whose pid is in ``pids``, each once: ``find_task`` through
    the pid idr; pid 0 (the idle tasks, in no pid table) is init_task and
    every CPU's ``rq->idle``.  Values that are not pids are skipped.  A pid
    whose idr path is unreadable (a filtered page) is looked for in the full
    walk (:func:`for_each_task_and_pid`), so a lookup finds what a scan finds;
    one found nowhere is a warning.

    :return: iterator of ``struct task_struct *``
    """
    from kql.helpers import pid as pid_helpers
    seen: set[int] = set()
    unreadable: dict[int, FaultError] = {}
    for v in pids:
        try:
            nr = int(v)
        except (TypeError, ValueError):
            continue
        if nr != v or nr < 0 or nr >= 1 << 31:
            continue
        if nr == 0:
            addrs = [prog.symbols.lookup("init_task").address]
            for cpu in prog.possible_cpus():
                try:
                    addrs.append(cpu_rq(prog, cpu).idle.value_())
                except FaultError:
                    continue
            tasks = [prog.object("struct task_struct", a).address_of_() for a in addrs if a]
        else:
            try:
                t = pid_helpers.find_task(prog, nr)
            except FaultError as e:
                unreadable[nr] = e
                continue
            tasks = [t] if t.value_() else []
        for t in tasks:
            if t.value_() not in seen:
                seen.add(t.value_())
                yield t
    if unreadable:
        for t in for_each_task_and_pid(prog):
            try:
                nr = t.pid.value_()
            except FaultError:
                continue            # warned by the walk
            if unreadable.pop(nr, None) is not None and t.value_() not in seen:
                seen.add(t.value_())
                yield t
        for nr, e in unreadable.items():
            walk_warn(prog, f"find_tasks: pid {nr} unreadable: {e}")


def find_processes(prog, tgids) -> Iterator[Object]:
    """The thread-group leaders whose tgid is in ``tgids``, in tgid order
    (per-process tables: their ``pid`` is the tgid), looked up as
    :func:`find_tasks` does.  Values that are not pids, and pids whose task
    is unreadable (a warning), are skipped.

    :return: iterator of ``struct task_struct *``
    """
    for task in find_tasks(prog, sorted({v for v in tgids
                                         if isinstance(v, int) and 0 < v < 1 << 31})):
        try:
            if task.tgid.value_() == task.pid.value_():
                yield task
        except FaultError as e:
            walk_warn(prog, f"find_processes: task {task.value_():#x} unreadable: {e}")


def task_comm(task: Object) -> str:
    """``task->comm`` as text.

    :param task: ``struct task_struct *``
    """
    return task.comm.string_().decode(errors="replace")


def _state_bits(prog) -> dict[str, int]:
    """State bit values by name, from the kernel's task_state_array: its
    entries after "R" are the TASK_REPORT bits in bit order (fs/proc/array.c
    checks this with BUILD_BUG_ON), the last one ("I") being TASK_REPORT_IDLE."""
    bits = prog.cache.get("task_state_bits")
    if bits is None:
        letters = [s[:1] for s in task_state_letters(prog)]
        names = {"S": "INTERRUPTIBLE", "D": "UNINTERRUPTIBLE", "T": "STOPPED",
                 "t": "TRACED", "X": "EXIT_DEAD", "Z": "EXIT_ZOMBIE", "P": "PARKED"}
        bits = {}
        for i, letter in enumerate(letters[1:-1]):
            if letter in names:
                bits[names[letter]] = 1 << i
        parked = bits.get("PARKED", 0x40)
        for i, name in enumerate(_ABOVE_PARKED, 1):
            bits[name] = parked << i
        prog.cache["task_state_bits"] = bits
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


def running_tasks(prog) -> dict[int, int]:
    """``{task address: cpu}`` of each online CPU's ``rq->curr`` (cached)."""
    cur = prog.cache.get("running_tasks")
    if cur is None:
        cur = {}
        for cpu in prog.online_cpus():
            try:
                cur.setdefault(cpu_rq(prog, cpu).curr.value_(), cpu)
            except FaultError:
                continue
        prog.cache["running_tasks"] = cur
    return cur


def task_is_running(task: Object) -> bool:
    """True if ``task`` is some online CPU's ``rq->curr``.

    :param task: ``struct task_struct *``
    """
    return task.value_() in running_tasks(task.prog_)


def page_size(prog) -> int:
    return int(prog.vmcoreinfo.get("PAGESIZE", "4096"))


def _enumerator(prog, name: str, default: int) -> int:
    cache = prog.cache.setdefault("enumerators", {})
    v = cache.get(name)
    if v is None:
        btf = prog.btf
        hit = btf.find_enumerator(name) if btf is not None else None
        v = cache[name] = hit[1] if hit is not None else default
    return v


#: include/linux/mm_types_task.h (an anonymous enum; values read from BTF,
#: these are the defaults since 4.5).
MM_COUNTERS = {"MM_FILEPAGES": 0, "MM_ANONPAGES": 1, "MM_SWAPENTS": 2, "MM_SHMEMPAGES": 3}


def _rss_counter(mm: Object, member: str):
    i = _enumerator(mm.prog_, member, MM_COUNTERS[member])
    rss = mm.rss_stat
    # Since Linux kernel commit f1a7941243c1 ("mm: convert mm's rss stats into
    # percpu_counter") (in v6.2), rss_stat is an array of percpu_counter;
    # before, it is struct mm_rss_stat { atomic_long_t count[]; }.
    if rss.type_.strip_typedefs().kind == "array":
        return rss[i], True
    return rss.count[i].counter, False


def get_mm_counter(mm: Object, member: str) -> int:
    """``get_mm_counter(mm, member)`` (``member`` like ``"MM_ANONPAGES"``), in
    pages, clamped at 0 as the kernel does; on 6.2+ only the shared count of
    the percpu_counter (``percpu_counter_read_positive()``).

    :param mm: ``struct mm_struct *``
    """
    c, percpu = _rss_counter(mm, member)
    return max((c.count if percpu else c).value_(), 0)


def get_mm_counter_sum(mm: Object, member: str) -> int:
    """``get_mm_counter_sum()``: the exact counter, per-CPU deltas included
    (``percpu_counter_sum_positive()``), in pages.

    :param mm: ``struct mm_struct *``
    """
    c, percpu = _rss_counter(mm, member)
    if not percpu:
        return max(c.value_(), 0)
    prog = mm.prog_
    total = c.count.value_()
    counters = c.counters.value_()
    if counters:
        for cpu in prog.possible_cpus():
            total += prog.read_s32(prog.per_cpu_address(counters, cpu))
    return max(total, 0)


def get_mm_rss(mm: Object) -> int:
    """File + anon + shmem pages, exact (per-CPU deltas summed), as /proc
    VmRSS counts them (fs/proc/task_mmu.c task_mem(); kernels whose /proc
    uses get_mm_counter() may show up to a batch per CPU less).

    :param mm: ``struct mm_struct *``
    """
    return sum(get_mm_counter_sum(mm, m) for m in ("MM_FILEPAGES", "MM_ANONPAGES",
                                                   "MM_SHMEMPAGES"))


def task_rss_bytes(task: Object) -> int | None:
    """Resident set size in bytes (/proc VmRSS); None without an mm.

    :param task: ``struct task_struct *``
    """
    mm = task.mm
    if not mm.value_():
        return None
    return get_mm_rss(mm) * page_size(task.prog_)


def task_vsz_bytes(task: Object) -> int | None:
    """Virtual size in bytes (``mm->total_vm``, /proc VmSize); None without an mm.

    :param task: ``struct task_struct *``
    """
    mm = task.mm
    if not mm.value_():
        return None
    return mm.total_vm.value_() * page_size(task.prog_)


def task_argv(task: Object) -> list[str] | None:
    """The task's argv as /proc/PID/cmdline gives it, read from user memory
    through the task's own page tables; None for tasks without an mm.
    Raises FaultError when the pages are not in the dump (makedumpfile
    -d 31 drops user pages), also when the dump reads them as zeros.

    :param task: ``struct task_struct *``
    """
    from kql.helpers.mm import task_cmdline_bytes
    raw = task_cmdline_bytes(task)
    if raw is None:
        return None
    if raw.endswith(b"\0"):
        raw = raw[:-1]
    return [a.decode(errors="replace") for a in raw.split(b"\0")] if raw else []


def task_cmdline(task: Object) -> str | None:
    """The command line with arguments joined by spaces (as ps shows it).

    :param task: ``struct task_struct *``
    """
    argv = task_argv(task)
    return None if argv is None else " ".join(argv)
