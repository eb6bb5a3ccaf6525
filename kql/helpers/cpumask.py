"""CPU masks (include/linux/cpumask.h): the CPUs a kernel has.

The Kernel reads ``__cpu_online_mask`` / ``__cpu_possible_mask`` once
(``kernel.online_cpus()``, ``kernel.possible_cpus()``); these are the
drgn-named iterators over them.
"""

from __future__ import annotations

from typing import Iterator

__all__ = ["for_each_online_cpu", "for_each_possible_cpu"]


def for_each_online_cpu(kernel) -> Iterator[int]:
    """CPU numbers in ``__cpu_online_mask``."""
    return iter(kernel.online_cpus())


def for_each_possible_cpu(kernel) -> Iterator[int]:
    """CPU numbers in ``__cpu_possible_mask``."""
    return iter(kernel.possible_cpus())
