"""CPU masks (include/linux/cpumask.h): the CPUs a kernel has.

The Kernel reads ``__cpu_online_mask`` / ``__cpu_possible_mask`` once
(``kernel.online_cpus()``, ``kernel.possible_cpus()``); these are the
drgn-named iterators over them.
"""

from __future__ import annotations

from typing import Iterator

__all__ = ["for_each_online_cpu", "for_each_possible_cpu"]

#: Kernel globals whose type BTF lacks, for Kernel.var() (see kql.helpers).
KERNEL_VARIABLES = {
    "nr_cpu_ids":           "unsigned int",
    "__cpu_online_mask":    "struct cpumask",
    "__cpu_possible_mask":  "struct cpumask",
    "__cpu_present_mask":   "struct cpumask",
    "__cpu_active_mask":    "struct cpumask",
}


def for_each_online_cpu(kernel) -> Iterator[int]:
    """CPU numbers in ``__cpu_online_mask``."""
    return iter(kernel.online_cpus())


def for_each_possible_cpu(kernel) -> Iterator[int]:
    """CPU numbers in ``__cpu_possible_mask``."""
    return iter(kernel.possible_cpus())
