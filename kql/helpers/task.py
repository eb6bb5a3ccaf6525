"""Tasks: iteration over every thread, state, CPU (include/linux/sched.h,
fs/proc/array.c).

``for_each_task`` visits every thread the kernel has: ``init_task`` (CPU 0's
idle task), the other CPUs' idle tasks (``rq->idle``; they are on no list),
then each process on ``init_task.tasks`` followed by its threads.
"""

from __future__ import annotations

from typing import Iterator

from kql.errors import FaultError
from kql.helpers.list import _ptr, _walk, is_list_poison, walk_warn
from kql.helpers.percpu import cpu_rq
from kql.object import Object
from kql.types import pointer_to

__all__ = ["for_each_task", "for_each_process", "for_each_thread", "task_state_letter",
           "task_state_index", "task_state_name", "task_cpu", "task_is_kthread",
           "task_state_letters", "task_state_to_char", "PF_KTHREAD", "is_group_leader",
           "sweep_children"]

#: include/linux/sched.h; a #define, so not in BTF (unchanged since Linux 2.6).
PF_KTHREAD = 0x00200000
# include/linux/sched.h bits that /proc does not list in task_state_array
# (#defines, so not in BTF; unchanged from 4.14 to 6.12).
TASK_NOLOAD = 0x0400
TASK_UNINTERRUPTIBLE = 0x0002
TASK_IDLE = TASK_UNINTERRUPTIBLE | TASK_NOLOAD
TASK_RTLOCK_WAIT = 0x1000

# fs/proc/array.c task_state_array, used when the kernel's own copy is unreadable
_DEFAULT_STATES = ("R (running)", "S (sleeping)", "D (disk sleep)", "T (stopped)",
                   "t (tracing stop)", "X (dead)", "Z (zombie)", "P (parked)", "I (idle)")


def _task_ptr_type(prog):
    pt = prog.cache.get("task_ptr_type")
    if pt is None:
        pt = prog.cache["task_ptr_type"] = pointer_to(prog.types.find_type("struct task_struct"))
    return pt


def _layout(prog) -> dict:
    lay = prog.cache.get("task_layout")
    if lay is None:
        t = prog.types.find_type("struct task_struct")
        lay = {"tasks": t.offsetof("tasks"), "signal": t.offsetof("signal")}
        # Since Linux 6.7 (commit 8e1f385104ac "kill task_struct->thread_group"),
        # threads are only on signal->thread_head (linked by thread_node, which
        # exists since 3.14); older kernels also have task->thread_group.
        if t.has_member("thread_node"):
            lay["thread_node"] = t.offsetof("thread_node")
            lay["thread_head"] = prog.types.find_type("struct signal_struct").offsetof(
                "thread_head")
        else:
            lay["thread_group"] = t.offsetof("thread_group")
        # Linux 5.14 (commit 2f064a59a11f "sched: Change task_struct::state")
        # renamed state to __state.
        lay["state"] = t.member("__state" if t.has_member("__state") else "state")
        lay["exit_state"] = t.offsetof("exit_state")
        prog.cache["task_layout"] = lay
    return lay


def for_each_process(prog) -> Iterator[Object]:
    """Every thread-group leader, starting with ``init_task`` (``for_each_process``).

    :return: iterator of ``struct task_struct *``
    """
    pt = _task_ptr_type(prog)
    lay = _layout(prog)
    init = prog.symbols.lookup("init_task").address
    yield _ptr(prog, pt, init)
    off = lay["tasks"]
    for pos in _walk(prog, init + off, 0, 10_000_000, "for_each_process"):
        yield _ptr(prog, pt, pos - off)


def _threads(prog, leader: int, lay: dict) -> Iterator[int]:
    if "thread_node" in lay:
        signal = prog.read_pointer(leader + lay["signal"])
        if not signal:
            yield leader
            return
        off = lay["thread_node"]
        yield from (pos - off for pos in _walk(prog, signal + lay["thread_head"], 0,
                                                10_000_000, "for_each_thread"))
    else:
        off = lay["thread_group"]
        yield leader
        yield from (pos - off for pos in _walk(prog, leader + off, 0, 10_000_000,
                                                "for_each_thread"))


def for_each_thread(task: Object) -> Iterator[Object]:
    """Every thread in ``task``'s thread group (``for_each_thread``).

    :param task: ``struct task_struct *``
    :return: iterator of ``struct task_struct *``
    """
    prog = task.prog_
    pt = _task_ptr_type(prog)
    for addr in _threads(prog, task.value_(), _layout(prog)):
        yield _ptr(prog, pt, addr)


def for_each_task(prog, *, idle: bool = True) -> Iterator[Object]:
    """Every thread of every process, plus each CPU's idle task.

    When the process or thread lists are broken (a filtered or corrupt page),
    the PID IDR of the initial namespace is swept as well, then the children
    lists of every task found (a stretch of the process list between two
    unreadable tasks whose IDR node is unreadable too is still on its parent's
    list), so only tasks whose own ``task_struct`` is unreadable, or that no
    readable link reaches, go missing (with warnings).

    :param idle: include the idle tasks of CPUs other than 0 (``rq->idle``)
    :return: iterator of ``struct task_struct *``
    """
    pt = _task_ptr_type(prog)
    lay = _layout(prog)
    seen: set[int] = set()
    init = prog.symbols.lookup("init_task").address
    seen.add(init)
    yield _ptr(prog, pt, init)
    if idle:
        for cpu in prog.possible_cpus():
            try:
                addr = cpu_rq(prog, cpu).idle.value_()
            except FaultError as e:
                walk_warn(prog, f"for_each_task: rq->idle of CPU {cpu} unreadable: {e}")
                continue
            if addr and addr not in seen:
                seen.add(addr)
                yield _ptr(prog, pt, addr)
    off = lay["tasks"]
    broken = False
    live = getattr(getattr(prog, "dump", None), "live", False)
    exited = 0          # tasks that exited while walked: not a broken list
    warnings = getattr(prog, "warnings", None)
    before = len(warnings) if warnings is not None else 0
    for pos in _walk(prog, init + off, 0, 10_000_000, "for_each_task"):
        leader = pos - off
        try:
            threads = list(_threads(prog, leader, lay))
        except FaultError as e:
            walk_warn(prog, f"for_each_task: threads of task {leader:#x} unreadable: {e}")
            threads = [leader]
            broken = True
        if leader not in threads:
            threads.insert(0, leader)   # e.g. a zombie leader already off its thread list
        for addr in threads:
            if addr not in seen:
                seen.add(addr)
                if live and _exited(prog, addr, lay):
                    exited += 1
                    continue
                yield _ptr(prog, pt, addr)
    if warnings is not None and len(warnings) > before + exited:
        broken = True
    if broken:
        yield from _sweep_pids(prog, pt, seen)
        yield from sweep_children(prog, seen)


def _exited(prog, addr: int, lay: dict) -> bool:
    """On a running kernel: True (with a warning) if the task at ``addr``
    left its thread list while we walked it (release_task() ->
    __unhash_process() list_del_rcu()s it, poisoning ``prev``)."""
    link = lay["thread_node"] if "thread_node" in lay else lay["thread_group"]
    try:
        prev = prog.read_pointer(addr + link + prog.arch.pointer_size)
    except FaultError:
        return False                    # unreadable: its rows say so
    if not is_list_poison(prev):
        return False
    walk_warn(prog, f"for_each_task: task {addr:#x} exited during the query: skipped")
    prog.cache.setdefault("exited_tasks", set()).add(addr)
    return True


def _sweep_pids(prog, pt, seen: set) -> Iterator[Object]:
    """Tasks reachable from init_pid_ns.idr but not yet seen (readable ones)."""
    from kql.helpers.pid import for_each_pid, pid_task
    found = lost = 0
    try:
        pids = list(for_each_pid(prog))
    except FaultError as e:
        walk_warn(prog, f"for_each_task: PID IDR unreadable: {e}")
        return
    pid_off = prog.types.find_type("struct task_struct").offsetof("pid")
    for pid in pids:
        try:
            addr = pid_task(pid, "PIDTYPE_PID").value_()
        except FaultError:
            lost += 1
            continue
        if not addr or addr in seen:
            continue
        seen.add(addr)
        try:
            prog.read(addr + pid_off, 4)
        except FaultError as e:
            lost += 1
            walk_warn(prog, f"for_each_task: task_struct at {addr:#x} unreadable: {e}")
            continue
        found += 1
        yield _ptr(prog, pt, addr)
    walk_warn(prog, f"for_each_task: task lists were broken; the PID IDR gave {found} more "
                    f"tasks ({lost} unreadable)")


def sweep_children(prog, seen: set) -> Iterator[Object]:
    """Tasks on the children lists (``task->children``, linked by ``->sibling``:
    thread-group leaders only, see copy_process()) of the tasks whose
    addresses are in ``seen``, with their threads, until nothing new turns up
    (``seen`` grows with each).  For walks that met broken task lists.

    :return: iterator of ``struct task_struct *``
    """
    pt = _task_ptr_type(prog)
    lay = _layout(prog)
    t = prog.types.find_type("struct task_struct")
    children, sibling, pid_off = t.offsetof("children"), t.offsetof("sibling"), t.offsetof("pid")
    todo = list(seen)
    found = 0
    while todo:
        parent = todo.pop()
        try:
            kids = [pos - sibling for pos in _walk(prog, parent + children, 0, 10_000_000,
                                                    "for_each_task(children)")]
        except FaultError:
            continue            # the parent itself is unreadable: warned where it was found
        for leader in kids:
            if leader in seen:
                continue
            try:
                prog.read(leader + pid_off, 4)
            except FaultError as e:
                walk_warn(prog, f"for_each_task: task_struct at {leader:#x} unreadable: {e}")
                seen.add(leader)
                continue
            try:
                threads = list(_threads(prog, leader, lay))
            except FaultError as e:
                walk_warn(prog, f"for_each_task: threads of task {leader:#x} unreadable: {e}")
                threads = []
            for addr in [leader] + threads:
                if addr not in seen:
                    seen.add(addr)
                    todo.append(addr)
                    found += 1
                    yield _ptr(prog, pt, addr)
    if found:
        walk_warn(prog, f"for_each_task: recovered {found} more tasks from the children lists")


def is_group_leader(task: Object) -> bool:
    """``thread_group_leader()``.

    :param task: ``struct task_struct *``
    """
    return task.group_leader.value_() == task.value_()


def task_is_kthread(task: Object) -> bool:
    """True for kernel threads (``PF_KTHREAD`` in ``task->flags``).

    :param task: ``struct task_struct *``
    """
    return bool(task.flags.value_() & PF_KTHREAD)


def task_cpu(task: Object) -> int:
    """``task_cpu()``.

    :param task: ``struct task_struct *``
    """
    # Since Linux 5.16 (commit bcf9033e5449 "sched: move CPU field back into
    # thread_info if THREAD_INFO_IN_TASK") the CPU is thread_info.cpu again.
    if task.has_member_("cpu"):
        return task.cpu.value_()
    return task.thread_info.cpu.value_()


def task_state_letters(prog) -> tuple[str, ...]:
    """The kernel's own ``task_state_array`` ("R (running)", ...)."""
    states = prog.cache.get("task_state_array")
    if states is None:
        states = _DEFAULT_STATES
        sym = prog.symbols.get("task_state_array")
        if sym is not None and sym.size and sym.size % 8 == 0:
            try:
                ptrs = prog.read(sym.address, sym.size)
                states = tuple(prog.read_cstring(int.from_bytes(ptrs[i:i + 8], "little"), 64)
                               .decode("latin-1") for i in range(0, len(ptrs), 8))
            except FaultError:
                states = _DEFAULT_STATES
        prog.cache["task_state_array"] = states
    return states


def task_state_index(task: Object) -> int:
    """``task_state_index()``: index into ``task_state_array`` (0 = running).

    :param task: ``struct task_struct *``
    """
    prog = task.prog_
    lay = _layout(prog)
    m, bitoff = lay["state"]
    addr = task.value_()
    state = int.from_bytes(prog.read(addr + (bitoff >> 3), m.type.size), "little")
    exit_state = prog.read_u32(addr + lay["exit_state"])
    n = len(task_state_letters(prog))
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
