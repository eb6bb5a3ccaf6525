"""Helpers: Python functions that walk one kernel's data structures, in the
style of drgn's ``drgn.helpers.linux`` and placed as it places them.

Tables call helpers; helpers walk memory (docs/ARCHITECTURE.md).  A helper
module is one kernel concept, named as drgn names it (``drgn/helpers/linux/``):

===========  ================================================================
list         ``list_head`` / ``hlist_head`` walks (include/linux/list.h)
rbtree       red-black trees (include/linux/rbtree.h)
xarray       XArray and IDR (include/linux/xarray.h, idr.h)
mapletree    maple trees (include/linux/maple_tree.h)
cpumask      online / possible CPUs (include/linux/cpumask.h)
percpu       per-CPU variables and ``percpu_counter`` (include/linux/percpu*.h)
pid          PIDs, lookup by number, iteration over every task (kernel/pid.c)
sched        run queues, ``task_cpu``, task state (kernel/sched, fs/proc/array.c)
mm           page size, VMAs, user memory, a task's RSS (include/linux/mm.h)
fs           dentries, mounts, open files (fs/d_path.c, fs/namespace.c)
net          network namespaces, devices, sockets (net/)
slab         SLUB caches (mm/slub.c)
module       loaded modules (kernel/module/)
printk       the printk ring buffer (kernel/printk/)
kconfig      the embedded ``.config`` (kernel/configs.c)
runq         run-queue contents per scheduling class (kernel/sched/)
stack        stack traces and registers (arch unwinders in kql/arch/)
===========  ================================================================

and kql's own, with no drgn counterpart: ``sys`` (uname, clock, panic facts),
``mmstat`` (vm_stat counters, /proc/meminfo), ``memory`` (addresses the SQL
functions accept), ``printer`` (objects printed as crash / gdb print them).

Conventions every helper follows:

- **The kernel argument.**  A helper that needs the kernel but no object
  takes it as its first argument, named ``kernel``: a :class:`kql.kernel.Kernel`
  (memory, symbols, types, ``cache``, ``warn``).  A helper given an object
  takes the kernel from it (``obj.prog_``, the attribute keeps drgn's name).
  No other name (``prog``) is used for it.
- **Types in docstrings.**  Each object parameter and result names its C type
  as drgn does::

      :param task: ``struct task_struct *``
      :return: iterator of ``struct task_struct *``

- **Kernel versions.**  A difference between kernel versions is detected
  (does the member / symbol / enumerator exist?), never decided by comparing
  version numbers, and carries a one-line comment naming the kernel commit::

      # Since Linux 5.14 (commit 2f064a59a11f "sched: Change task_struct::state")

- **Kernel variables.**  A module that reads a global whose type BTF does not
  give (vmlinux BTF has VAR records for per-CPU variables only) declares it
  next to its helpers, ``KERNEL_VARIABLES = {"init_task": "struct task_struct"}``;
  :func:`kernel_variables` gathers them for :meth:`kql.kernel.Kernel.var`, so
  ``kernel.var("init_task")`` needs no type.  ``{nr_cpu_ids}``,
  ``{nr_node_ids}`` and ``{task_state_array_len}`` in a type are filled in per
  kernel.
- **State per dump.**  What a helper learns about a kernel (offsets, decoded
  tables) is cached in ``kernel.cache`` under a key named after it, never in a
  module global: several dumps can be open at once.
- **Damage.**  A walk is bounded; a broken link, a cycle or an unreadable page
  in the middle of a walk is a warning on the kernel (:func:`kql.helpers.list.walk_warn`)
  and the walk goes on or stops, never hangs.  An unreadable object raises
  :class:`kql.errors.FaultError`, which the table turns into NULL plus a warning.
- **Architecture.**  No ``if arch ==`` here: word size, page tables and
  unwinding come from ``kernel.arch`` (kql/arch/).

Tests are by module, as drgn's ``tests/linux_kernel/helpers/test_<module>.py``:
``tests/test_helpers_<module>.py``, against the fixture dumps' truth.json (the
``dump_kernel`` fixture of tests/conftest.py) and the one fake in-memory kernel
of ``tests/fakekernel.py``; ``tests/test_helpers.py`` checks these conventions.
"""

from __future__ import annotations

import importlib
import pkgutil

__all__ = ["kernel_variables"]

_variables: dict[str, str] | None = None


def kernel_variables() -> dict[str, str]:
    """Every helper module's ``KERNEL_VARIABLES`` merged: global name -> C type
    (static declarations, the same for every kernel, so gathered once).

    >>> kernel_variables()["init_task"]
    'struct task_struct'
    """
    global _variables
    if _variables is None:
        merged: dict[str, str] = {}
        where: dict[str, str] = {}
        for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
            module = importlib.import_module(f"{__name__}.{info.name}")
            for name, spelled in getattr(module, "KERNEL_VARIABLES", {}).items():
                if merged.setdefault(name, spelled) != spelled:
                    raise RuntimeError(f"kernel variable {name!r} declared as {merged[name]!r} "
                                       f"in {where[name]} and as {spelled!r} in {info.name}")
                where.setdefault(name, info.name)
        _variables = merged
    return _variables
