"""kql: declarative SQL queries over Linux kernel memory dumps.

    import kql
    dump = kql.open("vmcore")
    dump.query("SELECT pid, comm, state FROM tasks WHERE state = 2")
    kql.open_live().query("SELECT pid, comm FROM tasks")   # the running kernel (root)
"""

__version__ = "0.1.0"

# Imported from a source checkout (python3 -c "import kql" in the repository
# root, where this folder shadows an installed kql), kql.grammar, kql.planner
# and kql.queries are the top-level folders beside this one; setup.py maps
# them the same way when it builds a wheel.
def _source_tree_subpackages(path):
    import os
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(here)
    if not os.path.isdir(os.path.join(here, "grammar")) and all(
            os.path.isfile(os.path.join(root, d, "__init__.py"))
            for d in ("grammar", "planner", "queries")):
        path.append(root)
    return path


__path__ = _source_tree_subpackages(__path__)
del _source_tree_subpackages


def open(path, vmlinux=None, system_map=None, zero_excluded=False):
    """Open a vmcore; see :class:`kql.api.Dump`."""
    from kql.api import open as _open
    return _open(path, vmlinux=vmlinux, system_map=system_map, zero_excluded=zero_excluded)


def open_live(root=None, vmlinux=None, system_map=None):
    """The running kernel (ROOT/proc/kcore, ROOT ``$KQL_LIVE_ROOT`` or ``/``);
    see :class:`kql.api.Dump`."""
    from kql.api import open_live as _open_live
    return _open_live(root, vmlinux=vmlinux, system_map=system_map)
