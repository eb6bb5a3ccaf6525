"""Per-CPU variables (include/linux/percpu-defs.h) and run queues.

A per-CPU variable's symbol is an offset into the per-CPU area; CPU ``n``'s
copy is at ``&var + __per_cpu_offset[n]`` (REFERENCE §9).
"""

from __future__ import annotations

from typing import Iterator

from kql.object import Object
from kql.types import pointer_to

__all__ = ["per_cpu_ptr", "per_cpu", "for_each_online_cpu", "for_each_possible_cpu",
           "cpu_rq", "cpu_curr", "idle_task"]


def per_cpu_ptr(ptr: Object, cpu: int) -> Object:
    """``per_cpu_ptr(ptr, cpu)``.

    :param ptr: ``type __percpu *``
    :return: ``type *`` for that CPU
    """
    prog = ptr.prog_
    value = prog.per_cpu_address(ptr.value_(), cpu)
    return Object._make(prog, ptr.type_, ptr._t, None, value)


def per_cpu(var: "Object | str", cpu: int, prog=None) -> Object:
    """``per_cpu(var, cpu)``: CPU ``cpu``'s copy of a per-CPU variable.

    :param var: the variable as an Object (``prog.var("runqueues")``) or its name
        (then ``prog`` is needed)
    :return: an Object of the variable's type
    """
    if isinstance(var, str):
        var = prog.var(var)
    prog = var.prog_
    return Object._make(prog, var.type_, var._t, prog.per_cpu_address(var.address_, cpu), None)


def for_each_online_cpu(prog) -> Iterator[int]:
    """CPU numbers in ``__cpu_online_mask``."""
    return iter(prog.online_cpus())


def for_each_possible_cpu(prog) -> Iterator[int]:
    """CPU numbers in ``__cpu_possible_mask``."""
    return iter(prog.possible_cpus())


def cpu_rq(prog, cpu: int) -> Object:
    """``cpu_rq(cpu)``.

    :return: ``struct rq *``
    """
    rq = per_cpu("runqueues", cpu, prog)
    pt = pointer_to(rq.type_)
    return Object._make(prog, pt, pt, None, rq.address_)


def cpu_curr(prog, cpu: int) -> Object:
    """The task running on ``cpu`` (``rq->curr``).

    :return: ``struct task_struct *``
    """
    return cpu_rq(prog, cpu).curr.read_()


def idle_task(prog, cpu: int) -> Object:
    """``idle_task(cpu)`` (``rq->idle``).

    :return: ``struct task_struct *``
    """
    return cpu_rq(prog, cpu).idle.read_()
