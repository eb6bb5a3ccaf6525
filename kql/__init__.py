"""kql: declarative SQL queries over Linux kernel memory dumps.

    import kql
    dump = kql.open("vmcore")
    dump.query("SELECT pid, comm, state FROM tasks WHERE state = 2")
"""

__version__ = "0.1.0"


def open(path, vmlinux=None, system_map=None, zero_excluded=False):
    """Open a vmcore; see :class:`kql.api.Dump`."""
    from kql.api import open as _open
    return _open(path, vmlinux=vmlinux, system_map=system_map, zero_excluded=zero_excluded)
