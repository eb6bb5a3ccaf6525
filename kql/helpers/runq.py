"""Run queues: the tasks each CPU's scheduler classes have queued
(kernel/sched/sched.h, fair.c, rt.c, deadline.c), like crash ``runq``.

- CFS: ``rq->cfs.tasks_timeline`` is an rbtree of ``sched_entity.run_node``;
  with group scheduling an entity with ``my_q`` is a group whose own cfs_rq
  is walked in turn.  The running entity of a cfs_rq (``cfs_rq->curr``) is
  not in its tree (set_next_entity() takes it out), so it is visited too.
- RT: ``rq->rt.active.queue[prio]`` lists of ``sched_rt_entity.run_list``
  (group entities have ``my_q``).
- DL: ``rq->dl.root`` is an rbtree of ``sched_dl_entity.rb_node``.

Every walk is bounded and cycle-safe (the list and rbtree helpers warn).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

from kql.errors import FaultError
from kql.helpers.list import list_for_each_entry, walk_warn
from kql.helpers.sched import cpu_rq
from kql.helpers.rbtree import rbtree_inorder_for_each_entry
from kql.object import Object, container_of

__all__ = ["RunqEntry", "runq_entries", "task_sched_class", "for_each_cfs_task",
           "for_each_rt_task", "for_each_dl_task", "sched_class_names"]

_CLASSES = (("stop_sched_class", "STOP"), ("dl_sched_class", "DL"),
            ("rt_sched_class", "RT"), ("fair_sched_class", "CFS"),
            ("ext_sched_class", "EXT"), ("idle_sched_class", "IDLE"))


@dataclass(frozen=True)
class RunqEntry:
    cpu: int
    task: Object        # struct task_struct *
    sched_class: str    # 'RT', 'CFS', 'DL', 'IDLE', 'STOP', 'EXT'
    current: bool       # rq->curr
    delayed: bool       # CFS entity kept queued by delayed dequeue (6.12+)


def sched_class_names(kernel) -> dict[int, str]:
    """``{&fair_sched_class: 'CFS', ...}``."""
    names = kernel.cache.get("sched_class_names")
    if names is None:
        names = {}
        for sym, name in _CLASSES:
            s = kernel.symbols.get(sym)
            if s is not None:
                names[s.address] = name
        kernel.cache["sched_class_names"] = names
    return names


def task_sched_class(task: Object) -> str | None:
    """'CFS', 'RT', 'DL', 'IDLE', 'STOP' or 'EXT' from ``task->sched_class``.

    :param task: ``struct task_struct *``
    """
    return sched_class_names(task.prog_).get(task.sched_class.value_())


def _task_of(kernel, ptr: Object, member: str) -> Object:
    return container_of(ptr, kernel.types.find_type("struct task_struct"), member)


def for_each_cfs_task(cfs_rq: Object, *, depth: int = 0) -> Iterator[tuple[Object, bool]]:
    """Tasks queued on a CFS run queue and its group run queues (the running
    one included), leftmost (earliest) first per queue.

    :param cfs_rq: ``struct cfs_rq *``
    :return: iterator of ``(struct task_struct *, delayed)``
    """
    kernel = cfs_rq.prog_
    if depth > 32:
        walk_warn(kernel, f"for_each_cfs_task: cfs_rq {cfs_rq.value_():#x} nested too deep")
        return
    ents = list(rbtree_inorder_for_each_entry("struct sched_entity",
                                              cfs_rq.tasks_timeline.address_of_(),
                                              "run_node"))
    curr = cfs_rq.curr.value_()
    if curr and curr not in {e.value_() for e in ents}:
        se = Object(kernel, "struct sched_entity", curr).address_of_()
        try:
            on_rq = se.on_rq.value_()
        except FaultError:
            on_rq = 0
        if on_rq:
            ents.insert(0, se)
    has_my_q = kernel.types.find_type("struct sched_entity").has_member("my_q")
    has_delayed = kernel.types.find_type("struct sched_entity").has_member("sched_delayed")
    for se in ents:
        try:
            my_q = se.my_q.value_() if has_my_q else 0
            if my_q:
                yield from for_each_cfs_task(
                    Object(kernel, "struct cfs_rq", my_q).address_of_(), depth=depth + 1)
                continue
            # Since Linux 6.12 (commit 152e11f6df29 "sched/fair: Implement delayed
            # dequeue") a sleeping task may stay queued until its lag is spent.
            delayed = bool(se.sched_delayed.value_()) if has_delayed else False
        except FaultError as e:
            walk_warn(kernel, f"for_each_cfs_task: sched_entity {se.value_():#x}: {e}")
            continue
        yield _task_of(kernel, se, "se"), delayed


def for_each_rt_task(rt_rq: Object, *, depth: int = 0) -> Iterator[Object]:
    """Tasks queued on an RT run queue, highest priority first.

    :param rt_rq: ``struct rt_rq *``
    :return: iterator of ``struct task_struct *``
    """
    kernel = rt_rq.prog_
    if depth > 32:
        walk_warn(kernel, f"for_each_rt_task: rt_rq {rt_rq.value_():#x} nested too deep")
        return
    array = rt_rq.active
    # bitmap of non-empty priority queues (MAX_RT_PRIO bits, then the delimiter)
    nq = len(array.queue)
    bits = int.from_bytes(kernel.read(array.bitmap.address_, (nq + 63) // 64 * 8), "little")
    has_my_q = kernel.types.find_type("struct sched_rt_entity").has_member("my_q")
    for prio in range(nq):
        if not bits >> prio & 1:
            continue
        for rt_se in list_for_each_entry("struct sched_rt_entity",
                                         array.queue[prio].address_of_(), "run_list"):
            my_q = rt_se.my_q.value_() if has_my_q else 0
            if my_q:
                yield from for_each_rt_task(Object(kernel, "struct rt_rq", my_q).address_of_(),
                                            depth=depth + 1)
            else:
                yield _task_of(kernel, rt_se, "rt")


def for_each_dl_task(dl_rq: Object) -> Iterator[Object]:
    """Tasks queued on a deadline run queue, earliest deadline first (entities
    that are not tasks, such as 6.8+ fair servers, are skipped).

    :param dl_rq: ``struct dl_rq *``
    :return: iterator of ``struct task_struct *``
    """
    kernel = dl_rq.prog_
    t = kernel.types.find_type("struct sched_dl_entity")
    # Since Linux 6.8 (commit 63ba8422f876 "sched/deadline: Introduce deadline
    # servers") a dl entity may be a server (dl_server set) embedded in a rq.
    server = t.has_member("dl_server")
    for dl_se in rbtree_inorder_for_each_entry(t, dl_rq.root.address_of_(), "rb_node"):
        if server and dl_se.dl_server.value_():
            continue
        yield _task_of(kernel, dl_se, "dl")


def runq_entries(kernel, cpu: int) -> Iterator[RunqEntry]:
    """The running task and every queued task of one CPU: DL, RT, CFS queues
    in that order, then the current task if no queue held it (the idle or stop
    task).

    :return: iterator of :class:`RunqEntry`
    """
    rq = cpu_rq(kernel, cpu)
    curr = rq.curr.value_()
    seen = set()

    def entry(task, cls, delayed=False):
        a = task.value_()
        seen.add(a)
        return RunqEntry(cpu, task, cls, a == curr, delayed)

    walks = (("DL", lambda: ((t, False) for t in for_each_dl_task(rq.dl.address_of_()))),
             ("RT", lambda: ((t, False) for t in for_each_rt_task(rq.rt.address_of_()))),
             ("CFS", lambda: for_each_cfs_task(rq.cfs.address_of_())))
    for cls, walk in walks:
        try:
            for task, delayed in walk():
                if task.value_() not in seen:
                    yield entry(task, cls, delayed)
        except FaultError as e:
            walk_warn(kernel, f"runq: CPU {cpu} {cls} queue unreadable: {e}")
    if curr and curr not in seen:
        task = Object(kernel, "struct task_struct", curr).address_of_()
        try:
            cls = task_sched_class(task) or "?"
        except FaultError:
            cls = None
        yield entry(task, cls)
