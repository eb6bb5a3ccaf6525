"""The Python API.

    import kql
    d = kql.open("vmcore")                      # BTF + kallsyms from the dump
    t = d.query("SELECT pid, comm FROM tasks")   # a pyarrow.Table
    d.register(con, ["tasks", "modules"])        # into your own DuckDB connection
    live = kql.open_live()                       # the running kernel (/proc/kcore; root)
"""

from __future__ import annotations

import pyarrow as pa

from kql.execute import Session


class Dump:
    """An open dump you can query."""

    def __init__(self, path, vmlinux: str | None = None, system_map: str | None = None,
                 zero_excluded: bool = False):
        from kql.kernel import open_kernel

        self.path = path
        self.kernel = open_kernel(path, vmlinux, system_map, zero_excluded=zero_excluded)
        self.session = Session({None: self.kernel})

    def query(self, sql: str) -> pa.Table:
        """Run ``sql`` (the last statement's result is returned; on a live
        kernel each call reads memory afresh)."""
        return self.session.query(sql)

    def register(self, con, tables=None, prefix: str = "") -> list[str]:
        """Materialize kql tables into a DuckDB connection the caller owns
        (``prefix`` + table name); returns the registered names."""
        from kql.tables import catalog

        names = []
        for name in tables or [n for n, s in catalog().items() if s.params is None]:
            t = self.query(f"SELECT * FROM {name}")
            con.register(prefix + name, t)
            names.append(prefix + name)
        return names

    def close(self) -> None:
        self.kernel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def open(path, vmlinux: str | None = None, system_map: str | None = None,
         zero_excluded: bool = False) -> Dump:
    return Dump(path, vmlinux=vmlinux, system_map=system_map, zero_excluded=zero_excluded)


def open_live(root: str | None = None, vmlinux: str | None = None,
              system_map: str | None = None) -> Dump:
    """The running kernel through ROOT/proc/kcore (ROOT: ``root``,
    ``$KQL_LIVE_ROOT`` or ``/``); needs root (CAP_SYS_RAWIO)."""
    from kql.dump.kcore import live_kcore_path
    return Dump(live_kcore_path(root), vmlinux=vmlinux, system_map=system_map)
