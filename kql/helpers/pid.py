"""PIDs, PID namespaces and tasks: lookup by number and iteration over every
task (include/linux/pid.h, kernel/pid.c, include/linux/sched/signal.h).

Since Linux 4.15 (commit 95846ecf9dac "pid: replace pid bitmap implementation
with IDR API") a namespace maps numbers to ``struct pid`` through
``pid_namespace.idr``.

``for_each_task`` visits every thread the kernel has: ``init_task`` (CPU 0's
idle task), the other CPUs' idle tasks (``rq->idle``; they are on no list),
then each process on ``init_task.tasks`` followed by its threads.
"""

from __future__ import annotations

from typing import Iterator

from kql.errors import FaultError
from kql.helpers.list import _ptr, _walk, is_list_poison, walk_warn
from kql.helpers.sched import _task_layout, cpu_rq
from kql.helpers.xarray import idr_find, idr_for_each
from kql.object import Object
from kql.types import pointer_to

__all__ = ["find_pid", "pid_task", "find_task", "for_each_pid", "pid_nr_ns", "PIDTYPE",
           "for_each_task", "for_each_process", "for_each_thread", "sweep_children",
           "for_each_task_and_pid", "find_tasks", "find_processes", "is_group_leader",
           "task_pid_ptr", "task_pid_nr"]

#: Kernel globals whose type BTF lacks, for Kernel.var() (see kql.helpers):
#: init/init_task.c and what init_task points at.
KERNEL_VARIABLES = {
    "init_task":        "struct task_struct",
    "init_pid_ns":      "struct pid_namespace",
    "init_struct_pid":  "struct pid",
    "pid_max":          "int",
    "init_signals":     "struct signal_struct",
    "init_sighand":     "struct sighand_struct",
    "init_nsproxy":     "struct nsproxy",
    "init_ipc_ns":      "struct ipc_namespace",
    "init_user_ns":     "struct user_namespace",
    "init_cred":        "struct cred",
}


def _ns(kernel_or_ns) -> Object:
    if isinstance(kernel_or_ns, Object):
        return kernel_or_ns
    return kernel_or_ns.var("init_pid_ns")


def PIDTYPE(kernel, name: str) -> int:
    """Value of an ``enum pid_type`` constant (``"PIDTYPE_PID"`` ...)."""
    cache = kernel.cache.setdefault("pidtype", {})
    v = cache.get(name)
    if v is None:
        v = cache[name] = kernel.types.find_type("enum pid_type").enum_value(name)
    return v


def find_pid(kernel_or_ns, nr: int) -> Object:
    """``find_pid_ns(nr, ns)``.

    :param kernel_or_ns: a Kernel (the initial namespace) or ``struct pid_namespace *``
    :return: ``struct pid *`` (NULL if none)
    """
    ns = _ns(kernel_or_ns)
    kernel = ns.prog_
    pt = pointer_to(kernel.types.find_type("struct pid"))
    return _ptr(kernel, pt, idr_find(ns.idr.address_of_(), nr))


def for_each_pid(kernel_or_ns) -> Iterator[Object]:
    """Every ``struct pid *`` in a namespace, in number order.

    :param kernel_or_ns: a Kernel or ``struct pid_namespace *``
    """
    ns = _ns(kernel_or_ns)
    kernel = ns.prog_
    pt = pointer_to(kernel.types.find_type("struct pid"))
    for _, entry in idr_for_each(ns.idr.address_of_()):
        yield _ptr(kernel, pt, entry)


def pid_task(pid: Object, pid_type: "int | str" = "PIDTYPE_PID") -> Object:
    """``pid_task()``: the first task using ``pid`` as ``pid_type``.

    :param pid: ``struct pid *``
    :return: ``struct task_struct *`` (NULL if none)
    """
    kernel = pid.prog_
    if isinstance(pid_type, str):
        pid_type = PIDTYPE(kernel, pid_type)
    task_t = kernel.types.find_type("struct task_struct")
    pt = pointer_to(task_t)
    if not pid.value_():
        return _ptr(kernel, pt, 0)
    first = pid.tasks[pid_type].first.value_()
    if not first:
        return _ptr(kernel, pt, 0)
    return _ptr(kernel, pt, first - task_t.offsetof(f"pid_links[{pid_type}]"))


def find_task(kernel, nr: int, ns: Object | None = None) -> Object:
    """The task with PID ``nr`` (``find_task_by_pid_ns``).

    :param ns: ``struct pid_namespace *`` (default: the initial namespace)
    :return: ``struct task_struct *`` (NULL if none)
    """
    return pid_task(find_pid(ns if ns is not None else kernel, nr), "PIDTYPE_PID")


def pid_nr_ns(pid: Object, ns: Object) -> int:
    """``pid_nr_ns()``: the number of ``pid`` in ``ns`` (0 if not visible there).

    :param pid: ``struct pid *``
    :param ns: ``struct pid_namespace *``
    """
    level = ns.level.value_()
    if not pid.value_() or level > pid.level.value_():
        return 0
    upid = pid.numbers[level]
    if upid.ns.value_() != ns.value_():
        return 0
    return upid.nr.value_()


def task_pid_ptr(task: Object, pid_type: "int | str") -> Object:
    """``task_pid_ptr()`` (kernel/pid.c), dereferenced: the ``struct pid``
    the task uses as ``pid_type`` (``"PIDTYPE_PGID"``, ``"PIDTYPE_SID"`` ...).

    :param task: ``struct task_struct *``
    :return: ``struct pid *`` (NULL if none)
    """
    if isinstance(pid_type, str):
        pid_type = PIDTYPE(task.prog_, pid_type)
    # Since Linux 4.19 (commit 2c4704756cab "pids: Move the pgrp and session
    # pid pointers from task_struct to signal_struct") they are in
    # signal->pids[] (the task's own pid is task->thread_pid); before,
    # task->pids[type].pid.
    if task.signal.has_member_("pids"):
        if pid_type == PIDTYPE(task.prog_, "PIDTYPE_PID"):
            return task.thread_pid.read_()
        return task.signal.pids[pid_type].read_()
    return task.pids[pid_type].pid.read_()


def task_pid_nr(task: Object, pid_type: "int | str") -> int:
    """``pid_nr(task_pid_ptr(task, pid_type))``: the number in the initial
    namespace of the task's pid, process group or session (0 if none).

    :param task: ``struct task_struct *``
    """
    pid = task_pid_ptr(task, pid_type)
    return pid.numbers[0].nr.value_() if pid.value_() else 0


def _task_ptr_type(kernel):
    pt = kernel.cache.get("task_ptr_type")
    if pt is None:
        pt = kernel.cache["task_ptr_type"] = pointer_to(kernel.types.find_type("struct task_struct"))
    return pt


def for_each_process(kernel) -> Iterator[Object]:
    """Every thread-group leader, starting with ``init_task`` (``for_each_process``).

    :return: iterator of ``struct task_struct *``
    """
    pt = _task_ptr_type(kernel)
    lay = _task_layout(kernel)
    init = kernel.symbols.lookup("init_task").address
    yield _ptr(kernel, pt, init)
    off = lay["tasks"]
    for pos in _walk(kernel, init + off, 0, 10_000_000, "for_each_process"):
        yield _ptr(kernel, pt, pos - off)


def _threads(kernel, leader: int, lay: dict) -> Iterator[int]:
    if "thread_node" in lay:
        signal = kernel.read_pointer(leader + lay["signal"])
        if not signal:
            yield leader
            return
        off = lay["thread_node"]
        yield from (pos - off for pos in _walk(kernel, signal + lay["thread_head"], 0,
                                                10_000_000, "for_each_thread"))
    else:
        off = lay["thread_group"]
        yield leader
        yield from (pos - off for pos in _walk(kernel, leader + off, 0, 10_000_000,
                                                "for_each_thread"))


def for_each_thread(task: Object) -> Iterator[Object]:
    """Every thread in ``task``'s thread group (``for_each_thread``).

    :param task: ``struct task_struct *``
    :return: iterator of ``struct task_struct *``
    """
    kernel = task.prog_
    pt = _task_ptr_type(kernel)
    for addr in _threads(kernel, task.value_(), _task_layout(kernel)):
        yield _ptr(kernel, pt, addr)


def for_each_task(kernel, *, idle: bool = True) -> Iterator[Object]:
    """Every thread of every process, plus each CPU's idle task.

    When the process or thread lists are broken (a filtered or corrupt page),
    the PID IDR of the initial namespace is swept as well, then the children
    lists of every task found (a stretch of the process list between two
    unreadable tasks whose IDR node is unreadable too is still on its parent's
    list), so only tasks whose own ``task_struct`` is unreadable, or that no
    readable link reaches, go missing (with warnings).  On a running kernel a
    task that exits while it is walked (its thread link poisoned by
    list_del_rcu()) is skipped with a warning.

    :param idle: include the idle tasks of CPUs other than 0 (``rq->idle``)
    :return: iterator of ``struct task_struct *``
    """
    pt = _task_ptr_type(kernel)
    lay = _task_layout(kernel)
    seen: set[int] = set()
    init = kernel.symbols.lookup("init_task").address
    seen.add(init)
    yield _ptr(kernel, pt, init)
    if idle:
        for cpu in kernel.possible_cpus():
            try:
                addr = cpu_rq(kernel, cpu).idle.value_()
            except FaultError as e:
                walk_warn(kernel, f"for_each_task: rq->idle of CPU {cpu} unreadable: {e}")
                continue
            if addr and addr not in seen:
                seen.add(addr)
                yield _ptr(kernel, pt, addr)
    off = lay["tasks"]
    broken = False
    live = getattr(getattr(kernel, "dump", None), "live", False)
    exited = 0          # tasks that exited while walked: not a broken list
    warnings = getattr(kernel, "warnings", None)
    before = len(warnings) if warnings is not None else 0
    for pos in _walk(kernel, init + off, 0, 10_000_000, "for_each_task"):
        leader = pos - off
        try:
            threads = list(_threads(kernel, leader, lay))
        except FaultError as e:
            walk_warn(kernel, f"for_each_task: threads of task {leader:#x} unreadable: {e}")
            threads = [leader]
            broken = True
        if leader not in threads:
            threads.insert(0, leader)   # e.g. a zombie leader already off its thread list
        for addr in threads:
            if addr not in seen:
                seen.add(addr)
                if live and _exited(kernel, addr, lay):
                    exited += 1
                    continue
                yield _ptr(kernel, pt, addr)
    if warnings is not None and len(warnings) > before + exited:
        broken = True
    if broken:
        yield from _sweep_pids(kernel, pt, seen)
        yield from sweep_children(kernel, seen)


def _exited(kernel, addr: int, lay: dict) -> bool:
    """On a running kernel: True (with a warning) if the task at ``addr``
    left its thread list while we walked it (release_task() ->
    __unhash_process() list_del_rcu()s it, poisoning ``prev``)."""
    link = lay["thread_node"] if "thread_node" in lay else lay["thread_group"]
    try:
        prev = kernel.read_pointer(addr + link + kernel.arch.pointer_size)
    except FaultError:
        return False                    # unreadable: its rows say so
    if not is_list_poison(prev):
        return False
    walk_warn(kernel, f"for_each_task: task {addr:#x} exited during the query: skipped")
    kernel.cache.setdefault("exited_tasks", set()).add(addr)
    return True


def _sweep_pids(kernel, pt, seen: set) -> Iterator[Object]:
    """Tasks reachable from init_pid_ns.idr but not yet seen (readable ones)."""
    found = lost = 0
    try:
        pids = list(for_each_pid(kernel))
    except FaultError as e:
        walk_warn(kernel, f"for_each_task: PID IDR unreadable: {e}")
        return
    pid_off = kernel.types.find_type("struct task_struct").offsetof("pid")
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
            kernel.read(addr + pid_off, 4)
        except FaultError as e:
            lost += 1
            walk_warn(kernel, f"for_each_task: task_struct at {addr:#x} unreadable: {e}")
            continue
        found += 1
        yield _ptr(kernel, pt, addr)
    walk_warn(kernel, f"for_each_task: task lists were broken; the PID IDR gave {found} more "
                    f"tasks ({lost} unreadable)")


def sweep_children(kernel, seen: set) -> Iterator[Object]:
    """Tasks on the children lists (``task->children``, linked by ``->sibling``:
    thread-group leaders only, see copy_process()) of the tasks whose
    addresses are in ``seen``, with their threads, until nothing new turns up
    (``seen`` grows with each).  For walks that met broken task lists.

    :return: iterator of ``struct task_struct *``
    """
    pt = _task_ptr_type(kernel)
    lay = _task_layout(kernel)
    t = kernel.types.find_type("struct task_struct")
    children, sibling, pid_off = t.offsetof("children"), t.offsetof("sibling"), t.offsetof("pid")
    todo = list(seen)
    found = 0
    while todo:
        parent = todo.pop()
        try:
            kids = [pos - sibling for pos in _walk(kernel, parent + children, 0, 10_000_000,
                                                    "for_each_task(children)")]
        except FaultError:
            continue            # the parent itself is unreadable: warned where it was found
        for leader in kids:
            if leader in seen:
                continue
            try:
                kernel.read(leader + pid_off, 4)
            except FaultError as e:
                walk_warn(kernel, f"for_each_task: task_struct at {leader:#x} unreadable: {e}")
                seen.add(leader)
                continue
            try:
                threads = list(_threads(kernel, leader, lay))
            except FaultError as e:
                walk_warn(kernel, f"for_each_task: threads of task {leader:#x} unreadable: {e}")
                threads = []
            for addr in [leader] + threads:
                if addr not in seen:
                    seen.add(addr)
                    todo.append(addr)
                    found += 1
                    yield _ptr(kernel, pt, addr)
    if found:
        walk_warn(kernel, f"for_each_task: recovered {found} more tasks from the children lists")


def for_each_task_and_pid(kernel, *, leaders_only: bool = False) -> Iterator[Object]:
    """Every task as :func:`for_each_task` visits them
    (``leaders_only``: thread-group leaders, as ``for_each_process``); if
    that walk met damage (unreadable or filtered pages, a warning on the
    kernel), also the tasks of the pid idr it could not reach: every task
    has a struct pid there (crash builds its task table from both too).

    :return: iterator of ``struct task_struct *``
    """
    warnings = getattr(kernel, "warnings", None)
    before = len(warnings) if warnings is not None else 0
    seen: set[int] = set()
    exited = kernel.cache.setdefault("exited_tasks", set())   # on a live kernel
    gone = len(exited)
    for task in (for_each_process if leaders_only else for_each_task)(kernel):
        seen.add(task.value_())
        yield task
    if warnings is None or len(warnings) - before == len(exited) - gone:
        return
    seen |= exited
    try:
        for pid in for_each_pid(kernel):
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
                walk_warn(kernel, f"for_each_task_and_pid: task of pid {nr} unreadable: {e}")
                continue
            seen.add(addr)
            yield task
    except FaultError as e:
        walk_warn(kernel, f"for_each_task_and_pid: pid idr unreadable: {e}")
    if leaders_only:
        # the children lists, as for_each_task() sweeps them (leaders only)
        for task in sweep_children(kernel, seen):
            try:
                if task.group_leader.value_() == task.value_():
                    yield task
            except FaultError as e:
                walk_warn(kernel, f"for_each_task_and_pid: task {task.value_():#x} unreadable: {e}")


def find_tasks(kernel, pids) -> Iterator[Object]:
    """The tasks whose pid is in ``pids``, each once: ``find_task`` through
    the pid idr; pid 0 (the idle tasks, in no pid table) is init_task and
    every CPU's ``rq->idle``.  Values that are not pids are skipped.  A pid
    whose idr path is unreadable (a filtered page) is looked for in the full
    walk (:func:`for_each_task_and_pid`), so a lookup finds what a scan finds;
    one found nowhere is a warning.

    :return: iterator of ``struct task_struct *``
    """
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
            addrs = [kernel.symbols.lookup("init_task").address]
            for cpu in kernel.possible_cpus():
                try:
                    addrs.append(cpu_rq(kernel, cpu).idle.value_())
                except FaultError:
                    continue
            tasks = [kernel.object("struct task_struct", a).address_of_() for a in addrs if a]
        else:
            try:
                t = find_task(kernel, nr)
            except FaultError as e:
                unreadable[nr] = e
                continue
            tasks = [t] if t.value_() else []
        for t in tasks:
            if t.value_() not in seen:
                seen.add(t.value_())
                yield t
    if unreadable:
        for t in for_each_task_and_pid(kernel):
            try:
                nr = t.pid.value_()
            except FaultError:
                continue            # warned by the walk
            if unreadable.pop(nr, None) is not None and t.value_() not in seen:
                seen.add(t.value_())
                yield t
        for nr, e in unreadable.items():
            walk_warn(kernel, f"find_tasks: pid {nr} unreadable: {e}")


def find_processes(kernel, tgids) -> Iterator[Object]:
    """The thread-group leaders whose tgid is in ``tgids``, in tgid order
    (per-process tables: their ``pid`` is the tgid), looked up as
    :func:`find_tasks` does.  Values that are not pids, and pids whose task
    is unreadable (a warning), are skipped.

    :return: iterator of ``struct task_struct *``
    """
    for task in find_tasks(kernel, sorted({v for v in tgids
                                         if isinstance(v, int) and 0 < v < 1 << 31})):
        try:
            if task.tgid.value_() == task.pid.value_():
                yield task
        except FaultError as e:
            walk_warn(kernel, f"find_processes: task {task.value_():#x} unreadable: {e}")


def is_group_leader(task: Object) -> bool:
    """``thread_group_leader()``.

    :param task: ``struct task_struct *``
    """
    return task.group_leader.value_() == task.value_()
