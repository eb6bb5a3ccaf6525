"""The plan: kernel scans plus the relational remainder DuckDB runs.

A :class:`Plan` prints itself (that is what EXPLAIN shows): one line per scan
saying how the table is read — a key lookup (``find_task(pid IN (1))``) or a
walk, the columns computed, a pushed LIMIT — then the SQL handed to DuckDB,
or ``direct`` when the scan's rows are the answer and DuckDB is not loaded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from kql.grammar import ast as A


@dataclass
class MemberColumn:
    """A member path compiled into a read on the scan's object column."""

    name: str            # the generated column name (__m0)
    text: str            # what the user wrote (task->mm->map_count)
    type: Any            # kql.tables.base.ColumnType
    fn: Callable[[Any], Any]
    c_type: str          # the C type of the result
    key: str = ""        # the path's steps, to read a repeated path once


@dataclass
class Scan:
    """How one FROM item is read.  ``qualify`` builds it (``use()`` records a
    column); the rules after it return changed copies (``dataclasses.replace``
    through ``context.replace_scans``), never change one in place."""

    id: str                          # name registered in DuckDB (__kql_scan_0)
    table: str                       # catalog name (tasks)
    spec: Any                        # kql.tables.TableSpec
    dump: str | None                 # dump name for cross-dump queries
    alias: str                       # how the query refers to it
    args: tuple = ()                 # table function arguments (constants)
    columns: list[str] = field(default_factory=list)
    members: dict[str, MemberColumn] = field(default_factory=dict)
    keys: dict[str, list] = field(default_factory=dict)
    limit: int | None = None
    object_type: str | None = None   # C type of the object column
    # Table function arguments taken from an earlier FROM item (a lateral
    # join): (argument index, that scan's id, its alias, its column).  The
    # function runs once per distinct value; its rows carry the value in a
    # hidden column ``__kql_arg<index>`` that the SQL joins on.
    lateral: list[tuple[int, str, str, str]] = field(default_factory=list)

    def use(self, column: str) -> None:
        if column not in self.columns:
            self.columns.append(column)

    def how(self) -> str:
        if self.lateral:
            each = ", ".join(f"{alias}.{col}" for _i, _id, alias, col in self.lateral)
            return f"for each {each}: {self.spec.walk or 'scan ' + self.table}"
        for col, values in self.keys.items():
            if col in self.spec.lookups:
                vals = ", ".join(_fmt(v) for v in values)
                fn = getattr(self.spec.lookups[col], "__name__", "lookup")
                return f"{fn}({col} IN ({vals}))"
        return self.spec.walk or f"scan {self.table}"

    def explain(self) -> str:
        args = list(self.args)
        for i, _id, alias, col in self.lateral:
            args[i] = _Ref(f"{alias}.{col}")
        name = self.table if not args else f"{self.table}({', '.join(_fmt(a) for a in args)})"
        if self.dump:
            name = f"{self.dump}.{name}"
        out = f"Scan {name}"
        if self.alias != self.table:
            out += f" AS {self.alias}"
        out += f": {self.how()}"
        cols = list(self.columns) + [f"{m.text} ({m.c_type})" for m in self.members.values()]
        out += f"\n    columns: {', '.join(cols) if cols else '(none)'}"
        if self.limit is not None:
            out += f"\n    limit: {self.limit}"
        return out


class _Ref(str):
    """A column reference among printed arguments (not quoted)."""


@A.node
class LateralRef(A.Node):
    """A table function whose arguments come from an earlier FROM item, as
    DuckDB SQL: its scan's rows for the current outer row (DuckDB detects the
    lateral reference by itself), the hidden argument columns left out."""

    scan_id: str
    alias: str
    on: tuple[tuple[str, str, str], ...]   # (hidden column, outer alias, outer column)

    def to_sql(self) -> str:
        q = A.quote_ident
        hidden = ", ".join(q(c) for c, _a, _col in self.on)
        cond = " AND ".join(f"{q(c)} = {q(a)}.{q(col)}" for c, a, col in self.on)
        return (f"(SELECT * EXCLUDE ({hidden}) FROM {q(self.scan_id)} WHERE {cond}) "
                f"AS {q(self.alias)}")


def _fmt(v) -> str:
    if isinstance(v, _Ref):
        return str(v)
    if isinstance(v, int) and v > 0xFFFFFFFF:
        return hex(v)
    return repr(v) if isinstance(v, str) else str(v)


@dataclass
class Plan:
    statement: A.Node                # the lowered statement (scans replaced)
    scans: list[Scan]
    source: str
    # When not None, the query is just these scan columns of scans[0]
    # (renamed to the output names): no DuckDB needed.
    direct: list[tuple[str, str]] | None = None
    # Output columns that hold addresses (printed in hex).
    address_columns: set[str] = field(default_factory=set)
    explain_only: bool = False
    # Member paths on computed addresses (CAST(x AS 'struct file *')->f_pos):
    # DuckDB functions name -> (MemberColumn with fn(address) -> value, dump).
    udfs: dict[str, tuple[MemberColumn, str | None]] = field(default_factory=dict)
    # While the rules run: what the planner may look at (planner.context.Env)
    # and each SELECT's relations (id(select) -> (select, Scope)), from qualify.
    env: Any = field(default=None, repr=False, compare=False)
    scopes: dict = field(default_factory=dict, repr=False, compare=False)

    def scope(self, select):
        """The relations visible in ``select``'s FROM (None: not qualified)."""
        got = self.scopes.get(id(select))
        return got[1] if got is not None and got[0] is select else None

    @property
    def sql(self) -> str:
        return self.statement.to_sql()

    def explain(self) -> str:
        lines = [s.explain() for s in self.scans]
        for name, (m, _dump) in self.udfs.items():
            lines.append(f"Read {name}: {m.text} ({m.c_type})")
        if self.direct is not None:
            lines.append("Output: direct from the scan (no DuckDB)")
        else:
            lines.append(f"DuckDB: {self.sql}")
        return "\n".join(lines)
