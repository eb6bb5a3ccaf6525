"""Per-CPU variables (include/linux/percpu-defs.h) and per-CPU counters
(include/linux/percpu_counter.h).

A per-CPU variable's symbol is an offset into the per-CPU area; CPU ``n``'s
copy is at ``&var + __per_cpu_offset[n]`` (REFERENCE §9).
"""

from __future__ import annotations

from kql.object import Object

__all__ = ["per_cpu_ptr", "per_cpu", "percpu_counter_sum"]

#: Kernel globals whose type BTF lacks, for Kernel.var() (see kql.helpers).
KERNEL_VARIABLES = {
    "__per_cpu_offset":  "unsigned long [{nr_cpu_ids}]",
}


def per_cpu_ptr(ptr: Object, cpu: int) -> Object:
    """``per_cpu_ptr(ptr, cpu)``.

    :param ptr: ``type __percpu *``
    :return: ``type *`` for that CPU
    """
    kernel = ptr.prog_
    value = kernel.per_cpu_address(ptr.value_(), cpu)
    return Object._make(kernel, ptr.type_, ptr._t, None, value)


def per_cpu(var: "Object | str", cpu: int, kernel=None) -> Object:
    """``per_cpu(var, cpu)``: CPU ``cpu``'s copy of a per-CPU variable.

    :param var: the variable as an Object (``kernel.var("runqueues")``) or its name
        (then ``kernel`` is needed)
    :return: an Object of the variable's type
    """
    if isinstance(var, str):
        var = kernel.var(var)
    kernel = var.prog_
    return Object._make(kernel, var.type_, var._t, kernel.per_cpu_address(var.address_, cpu), None)


def percpu_counter_sum(counter: Object) -> int:
    """``percpu_counter_sum()``: ``count`` plus every possible CPU's delta.

    :param counter: ``struct percpu_counter *``
    """
    kernel = counter.prog_
    total = counter.count.value_()
    counters = counter.counters.value_()
    if counters:
        for cpu in kernel.possible_cpus():
            total += kernel.read_s32(kernel.per_cpu_address(counters, cpu))
    return total
