"""Run a plan: kernel scans → Arrow → DuckDB (only when needed) → pyarrow.Table.

The whole pipeline reads as one method, :meth:`Session.run_statement`:
plan → scans → relational remainder → result (``Session.execute`` parses).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from kql.errors import ExecuteError, FaultError, QueryError
from kql.grammar import ast as A
from kql.grammar import parse
from kql.planner import Env, plan as make_plan
from kql.planner.plan import Plan
from kql.tables import ScanContext, Warnings, catalog
from kql.tables.base import STRING, UINT64, Columns, not_in_kernel
from kql.tables.base import scan_columns as run_scan

log = logging.getLogger("kql")

#: Deepest expression/subquery/set-operation nesting a statement may have
#: (DuckDB's own max_expression_depth is 1000); the CLI raises Python's
#: recursion limit to RECURSION_LIMIT so planning this deep is safe.
MAX_DEPTH = 500
RECURSION_LIMIT = 20 * MAX_DEPTH


def check_depth(stmt, source: str | None = None) -> None:
    """Refuse a statement nested deeper than :data:`MAX_DEPTH` (counted
    without recursion) with one clear error instead of a RecursionError."""
    stack = [(stmt, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            span = getattr(node, "span", None) or (None, None)
            raise QueryError(f"query too deeply nested (more than {MAX_DEPTH} levels of "
                             f"expressions, subqueries or set operations)",
                             source, span[0], span[1])
        stack.extend((c, depth + 1) for c in node.children())


def check_set_order(stmt, source: str | None = None) -> None:
    """ORDER BY of a UNION/INTERSECT/EXCEPT sorts the combined rows: it takes
    their output columns, not member paths or C casts (those need a table's
    rows; the planner cannot lower them there)."""
    for node in stmt.walk():
        if isinstance(node, A.SetOp):
            for item in node.order_by:
                try:
                    item.to_sql()
                except A.NotLowered:
                    raise QueryError("ORDER BY of UNION, INTERSECT or EXCEPT takes output "
                                     "columns: select the member path or cast as a column "
                                     "and order by its name", source, *item.span) from None


@dataclass
class Stats:
    pages_read: int = 0
    rows_scanned: dict[str, int] = field(default_factory=dict)
    scan_seconds: float = 0.0
    duckdb_seconds: float = 0.0
    used_duckdb: bool = False

    def lines(self) -> list[str]:
        out = [f"pages read: {self.pages_read}"]
        for name, n in self.rows_scanned.items():
            out.append(f"objects visited: {n} ({name})")
        out.append(f"scan time: {self.scan_seconds:.3f} s")
        if self.used_duckdb:
            out.append(f"duckdb time: {self.duckdb_seconds:.3f} s")
        return out


@dataclass
class Result:
    columns: Columns     # the result as Python lists (pyarrow only if asked)
    plan: Plan
    warnings: Warnings
    stats: Stats
    explain: str | None = None

    @property
    def table(self):
        """The result as a pyarrow.Table."""
        return self.columns.to_arrow()

    @property
    def address_columns(self) -> set[str]:
        return {n for n, t in zip(self.columns.names, self.columns.types)
                if n.lower() in self.plan.address_columns and UINT64 == t}


class Session:
    """One or more open dumps that queries run against.

    ``kernels`` maps a dump name to a :class:`kql.kernel.Kernel`; the name
    ``None`` is the default dump (``FROM tasks``); named ones are reached as
    ``FROM a.tasks``."""

    def __init__(self, kernels: dict[str | None, Any], *, allow_files: bool = False,
                 max_seconds: int | None = None):
        from kql.duck import MAX_SECONDS
        self.kernels = kernels
        self.allow_files = allow_files  # --allow-files: DuckDB may read the user's files
        # --max-time: seconds the DuckDB part of a statement may run (0 = no limit)
        self.max_seconds = MAX_SECONDS if max_seconds is None else max_seconds
        self._running = None  # the DuckDB connection of the statement running now

    def interrupt(self) -> None:
        """Stop the DuckDB part of the statement running in another thread
        (the shell's Ctrl-C); it then fails with DuckDB's interrupt error."""
        con = self._running
        if con is not None:
            con.interrupt()

    def default_kernel(self):
        if None in self.kernels:
            return self.kernels[None]
        if len(self.kernels) == 1:
            return next(iter(self.kernels.values()))
        return None

    def kernel_for(self, dump: str | None):
        return self.kernels.get(dump) if dump is not None else self.default_kernel()

    def execute(self, text: str) -> list[Result]:
        """Run every statement in ``text``; one Result each."""
        return [self.run_statement(stmt, text) for stmt in parse(text)]

    def query(self, text: str):
        """The last statement's result as a pyarrow.Table."""
        results = self.execute(text)
        if not results:
            raise QueryError("empty query", text, 0)
        return results[-1].table

    def run_statement(self, stmt, source: str) -> Result:
        check_depth(stmt, source)
        check_set_order(stmt, source)
        env = Env(catalog(), self.kernels, allow_files=self.allow_files)
        p = make_plan(stmt, env, source)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("plan:\n%s", p.explain())
        warnings = Warnings()
        stats = Stats()
        if p.explain_only:
            text = p.explain()
            lines = text.split("\n")
            return Result(Columns(["plan"], [STRING], [lines], len(lines)), p, warnings, stats,
                          explain=text)
        for k in self.kernels.values():  # a live kernel: nothing read by an earlier statement
            if k is not None:
                k.refresh()
        for s in p.scans:  # symbols and types first: not the scan's cost
            k = self.kernel_for(s.dump)
            if k is not None:
                k.symbols, k.types
        pages0 = self._pages_read()
        t0 = time.perf_counter()
        tables = {}
        for s in p.scans:
            kernel = self.kernel_for(s.dump)
            if kernel is None:
                raise QueryError(f"no dump for {s.table}", source, 0)
            ctx = ScanContext(kernel=kernel, columns=list(s.columns), keys=s.keys,
                              limit=s.limit, args=s.args, warnings=warnings)
            extra = {m.name: (m.type, m.fn) for m in s.members.values()}
            try:
                if s.lateral:
                    tables[s.id] = _lateral_scan(s, ctx, extra, tables)
                else:
                    tables[s.id] = run_scan(s.spec, ctx, extra)
            except LookupError as e:
                if not not_in_kernel(e):  # KeyError, IndexError: a bug, not the dump
                    raise
                # a symbol, type or member the walk needs is missing (damaged
                # kallsyms or BTF, or a kernel kql cannot read)
                from kql.errors import DumpError
                raise DumpError(f"cannot read {s.table}: {e}") from None
            stats.rows_scanned[s.alias] = tables[s.id].num_rows
        stats.scan_seconds = time.perf_counter() - t0
        stats.pages_read = self._pages_read() - pages0
        if p.direct is not None:
            table = tables[p.scans[0].id].select(p.direct)
        else:
            t1 = time.perf_counter()
            table = Columns.from_arrow(self._duckdb(p, tables, source, warnings))
            stats.duckdb_seconds = time.perf_counter() - t1
            stats.used_duckdb = True
        return Result(table, p, warnings, stats)

    def _pages_read(self) -> int:
        n = 0
        for k in self.kernels.values():
            st = getattr(getattr(k, "dump", None), "stats", None)
            n += getattr(st, "pages_read", 0) if st is not None else 0
        return n

    # ------------------------------------------------------------ DuckDB
    def _duckdb(self, p: Plan, tables: dict[str, Columns], source: str, warnings):
        import duckdb  # loaded only for queries that need it
        import pyarrow as pa

        from kql import duck
        con = duck.connect(allow_files=self.allow_files, max_seconds=self.max_seconds)
        self._running = con
        try:
            self._register_functions(con, p, warnings)
            for name, t in tables.items():
                con.register(name, t.to_arrow())
            try:
                sql = p.sql
            except A.NotLowered as e:
                raise ExecuteError(str(e), source, 0) from None
            log.debug("duckdb: %s", sql)
            try:
                def fetch():
                    rel = con.sql(sql)
                    if rel is None:  # a statement without a result
                        return pa.table({})
                    return rel.to_arrow_table() if hasattr(rel, "to_arrow_table") else rel.arrow()
                return duck.run(con, fetch)
            except duckdb.Error as e:
                msg = duck.error_text(e)
                for s in p.scans:
                    msg = msg.replace(s.id, s.alias)
                raise ExecuteError(msg, source, None) from None
        finally:
            self._running = None
            con.close()

    @staticmethod
    def _guarded(m, warnings):
        """A member read for DuckDB: an unreadable value is NULL plus a warning."""
        read = m.fn

        def fn(address):
            try:
                return read(address)
            except FaultError as e:
                warnings.add(m.text, e)
                return None
        return fn

    def _register_functions(self, con, p: Plan, warnings) -> None:
        from duckdb.sqltypes import UBIGINT

        from kql import functions
        for name, (m, dump) in p.udfs.items():
            con.create_function(name, self._guarded(m, warnings), [UBIGINT],
                                _duckdb_type(m.type), side_effects=False,
                                null_handling="special")
        functions.register(con, self.kernels, self.default_kernel(), warnings)


def _lateral_scan(s, ctx: ScanContext, extra, tables: dict) -> Columns:
    """A table function with arguments from earlier scans: run once per
    distinct argument tuple, each row tagged with its arguments in hidden
    ``__kql_arg<i>`` columns (what the lateral SQL joins on)."""
    from dataclasses import replace
    sources = []
    for i, scan_id, _alias, col in s.lateral:
        t = tables[scan_id]
        j = t.names.index(col)
        sources.append((i, t.pylist(j), t.types[j]))
    seen = {}
    for combo in zip(*(vals for _i, vals, _t in sources)):
        if None not in combo:
            seen.setdefault(combo, None)
    parts = []
    for combo in seen:
        args = list(s.args)
        for (i, _vals, _t), v in zip(sources, combo):
            args[i] = v
        parts.append((combo, run_scan(s.spec, replace(ctx, args=tuple(args)), extra)))
    if parts:
        names, types = parts[0][1].names, parts[0][1].types
    else:
        names = list(ctx.columns) + list(extra)
        types = [s.spec.column(n).type for n in ctx.columns] + [t for t, _fn in extra.values()]
    data = [[] for _ in names] + [[] for _ in sources]
    n = 0
    for combo, part in parts:
        for k in range(len(names)):
            data[k].extend(part.data[k])
        for k, v in enumerate(combo):
            data[len(names) + k].extend([v] * part.num_rows)
        n += part.num_rows
    return Columns(list(names) + [f"__kql_arg{i}" for i, _v, _t in sources],
                   list(types) + [t for _i, _v, t in sources], data, n)


def _duckdb_type(t):
    """The DuckDB type of a member read's Arrow type."""
    from duckdb import sqltypes as T
    return {"int64": T.BIGINT, "uint64": T.UBIGINT, "string": T.VARCHAR,
            "bool": T.BOOLEAN, "double": T.DOUBLE}.get(str(t), T.BIGINT)
