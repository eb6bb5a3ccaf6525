"""Tables are declared as data (osquery/Perfetto style).

A :class:`TableSpec` names the table, documents it and every column, says
which column is the typed object (so member paths work on it), how to produce
rows (a generator of *row sources*, usually kernel Objects, from a helper),
and which key lookups it supports (``pid = N`` → ``find_task``).

Columns are computed lazily, per row, only when the query uses them
(projection pushdown): a column is a function ``fn(row) -> value``.  A
:class:`kql.errors.FaultError` raised while computing one value becomes a NULL
and a counted warning; the row survives.

No table walks lists itself: row generators call helpers in kql.helpers.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator

import pyarrow as pa

from kql.errors import FaultError, KqlError

ADDRESS = pa.uint64()


@dataclass(frozen=True)
class Column:
    name: str
    type: pa.DataType
    doc: str
    fn: Callable[[Any], Any]
    # Expensive columns left out of ``SELECT *`` (still available by name).
    optional: bool = False
    # The C type of an object column ("struct task_struct *"): member paths
    # on it are compiled against this type.
    object_type: str | None = None


@dataclass
class ScanContext:
    """What the planner pushed into one scan."""

    kernel: Any
    columns: list[str]
    keys: dict[str, list[Any]] = field(default_factory=dict)
    limit: int | None = None
    args: tuple = ()
    warnings: "Warnings | None" = None


class Warnings:
    """Counts of unreadable values, by (table.column, reason)."""

    def __init__(self) -> None:
        self.counts: collections.Counter = collections.Counter()
        self.examples: dict[tuple[str, str], str] = {}

    def add(self, where: str, err: Exception) -> None:
        reason = type(err).__name__
        key = (where, reason)
        self.counts[key] += 1
        self.examples.setdefault(key, str(err))

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def lines(self) -> list[str]:
        return [f"{n} value{'s' if n != 1 else ''} of {where} unreadable "
                f"(e.g. {self.examples[(where, reason)]})"
                for (where, reason), n in sorted(self.counts.items())]


@dataclass(frozen=True)
class TableSpec:
    name: str
    doc: str
    columns: tuple[Column, ...]
    # rows(ctx) yields row sources (ctx.keys empty: a full walk)
    rows: Callable[[ScanContext], Iterable[Any]]
    # lookups[col](ctx, values) yields the row sources whose col is in values
    lookups: dict[str, Callable[[ScanContext, list], Iterable[Any]]] = field(default_factory=dict)
    object_column: str | None = None
    # How rows are read, for EXPLAIN ("walk init_task.tasks").
    walk: str = ""
    examples: tuple[str, ...] = ()
    # Table functions: the names of their (constant) arguments.
    params: tuple[str, ...] | None = None
    # Table functions whose object column type depends on the arguments.
    object_type_fn: Callable[[Any, tuple], str] | None = None

    def column(self, name: str) -> Column | None:
        lname = name.lower()
        for c in self.columns:
            if c.name.lower() == lname:
                return c
        return None

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def star_columns(self) -> list[str]:
        return [c.name for c in self.columns if not c.optional]


def row_sources(spec: TableSpec, ctx: ScanContext) -> Iterator[Any]:
    """The rows of one scan: by key lookup when one was pushed down."""
    for col, values in ctx.keys.items():
        if col in spec.lookups:
            return iter(spec.lookups[col](ctx, values))
    return iter(spec.rows(ctx))


def scan(spec: TableSpec, ctx: ScanContext,
         extra: dict[str, tuple[pa.DataType, Callable[[Any], Any]]] | None = None
         ) -> pa.Table:
    """Run one scan into an Arrow table with ``ctx.columns`` (plus ``extra``
    computed columns such as compiled member paths)."""
    cols = [spec.column(n) for n in ctx.columns]
    fns = [(c.name, c.type, c.fn) for c in cols]
    for name, (typ, fn) in (extra or {}).items():
        fns.append((name, typ, fn))
    data: list[list] = [[] for _ in fns]
    warnings = ctx.warnings
    n = 0
    limit = ctx.limit
    for row in row_sources(spec, ctx):
        if limit is not None and n >= limit:
            break
        n += 1
        for i, (name, _typ, fn) in enumerate(fns):
            try:
                v = fn(row)
            except FaultError as e:
                v = None
                if warnings is not None:
                    warnings.add(f"{spec.name}.{name}", e)
            except (ValueError, UnicodeError) as e:
                # A corrupt object: values that make no sense for the type.
                v = None
                if warnings is not None:
                    warnings.add(f"{spec.name}.{name}", e)
            data[i].append(v)
    if not fns:  # count(*): rows without columns (Arrow needs one column)
        return pa.table({"__kql_row": pa.nulls(n, pa.int8())})
    arrays = []
    for (name, typ, _fn), values in zip(fns, data):
        try:
            arrays.append(pa.array(values, type=typ))
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as e:
            raise KqlError(f"internal error: column {spec.name}.{name}: {e}") from None
    return pa.Table.from_arrays(arrays, names=[f[0] for f in fns])
