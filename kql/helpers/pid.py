"""PIDs and PID namespaces (include/linux/pid.h, kernel/pid.c).

Since Linux 4.15 (commit 95846ecf9dac "pid: replace pid bitmap implementation
with IDR API") a namespace maps numbers to ``struct pid`` through
``pid_namespace.idr``.
"""

from __future__ import annotations

from typing import Iterator

from kql.helpers.list import _ptr
from kql.helpers.xarray import idr_find, idr_for_each
from kql.object import Object
from kql.types import pointer_to

__all__ = ["find_pid", "pid_task", "find_task", "for_each_pid", "pid_nr_ns", "PIDTYPE"]


def _ns(prog_or_ns) -> Object:
    if isinstance(prog_or_ns, Object):
        return prog_or_ns
    return prog_or_ns.var("init_pid_ns")


def PIDTYPE(prog, name: str) -> int:
    """Value of an ``enum pid_type`` constant (``"PIDTYPE_PID"`` ...)."""
    cache = prog.cache.setdefault("pidtype", {})
    v = cache.get(name)
    if v is None:
        v = cache[name] = prog.types.find_type("enum pid_type").enum_value(name)
    return v


def find_pid(prog_or_ns, nr: int) -> Object:
    """``find_pid_ns(nr, ns)``.

    :param prog_or_ns: a Kernel (the initial namespace) or ``struct pid_namespace *``
    :return: ``struct pid *`` (NULL if none)
    """
    ns = _ns(prog_or_ns)
    prog = ns.prog_
    pt = pointer_to(prog.types.find_type("struct pid"))
    return _ptr(prog, pt, idr_find(ns.idr.address_of_(), nr))


def for_each_pid(prog_or_ns) -> Iterator[Object]:
    """Every ``struct pid *`` in a namespace, in number order.

    :param prog_or_ns: a Kernel or ``struct pid_namespace *``
    """
    ns = _ns(prog_or_ns)
    prog = ns.prog_
    pt = pointer_to(prog.types.find_type("struct pid"))
    for _, entry in idr_for_each(ns.idr.address_of_()):
        yield _ptr(prog, pt, entry)


def pid_task(pid: Object, pid_type: "int | str" = "PIDTYPE_PID") -> Object:
    """``pid_task()``: the first task using ``pid`` as ``pid_type``.

    :param pid: ``struct pid *``
    :return: ``struct task_struct *`` (NULL if none)
    """
    prog = pid.prog_
    if isinstance(pid_type, str):
        pid_type = PIDTYPE(prog, pid_type)
    task_t = prog.types.find_type("struct task_struct")
    pt = pointer_to(task_t)
    if not pid.value_():
        return _ptr(prog, pt, 0)
    first = pid.tasks[pid_type].first.value_()
    if not first:
        return _ptr(prog, pt, 0)
    return _ptr(prog, pt, first - task_t.offsetof(f"pid_links[{pid_type}]"))


def find_task(prog, nr: int, ns: Object | None = None) -> Object:
    """The task with PID ``nr`` (``find_task_by_pid_ns``).

    :param ns: ``struct pid_namespace *`` (default: the initial namespace)
    :return: ``struct task_struct *`` (NULL if none)
    """
    return pid_task(find_pid(ns if ns is not None else prog, nr), "PIDTYPE_PID")


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
