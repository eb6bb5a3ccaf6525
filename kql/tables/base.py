"""Tables are declared as data (osquery/Perfetto style).

A :class:`TableSpec` names the table, documents it and every column, says
which column is the typed object (so member paths work on it), how to produce
rows (a generator of *row sources*, usually kernel Objects, from a helper),
and which key lookups it supports (``pid = N`` → ``find_task``).

Columns are computed lazily, per row, only when the query uses them
(projection pushdown): a column is a function ``fn(row) -> value``.  A
:class:`kql.errors.FaultError` raised while computing one value becomes a NULL
and a counted warning; the row survives.  So does a member, symbol or type
this kernel does not have (:func:`not_in_kernel`): one policy for every
table, decided in :func:`scan_columns`, so no column guards against it.

No table walks lists itself: row generators call helpers in kql.helpers.

A scan's values stay Python lists (:class:`Columns`) until something needs
Arrow (DuckDB, the Python API, Parquet): ``kql DUMP "SELECT ... FROM tasks"
-f csv`` never imports pyarrow (and numpy with it, ~0.15 s).  Column types
may be pyarrow types or the :class:`ColumnType` names below.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator

from kql.errors import FaultError, KqlError, PlanError


class ColumnType:
    """An Arrow type named without importing pyarrow: ``INT32`` stands for
    ``pa.int32()``.  Compares equal to the pyarrow type it names (``str``
    is Arrow's spelling); :func:`arrow_type` gives that type."""

    __slots__ = ("factory", "item", "_str", "args")

    def __init__(self, factory: str, spelled: str, item: "ColumnType | None" = None,
                 args: tuple = ()):
        self.factory = factory      # the pyarrow function: "int32", "list_"
        self.item = item
        self._str = spelled
        self.args = args            # its arguments: timestamp("us", "UTC")

    def arrow(self):
        import pyarrow as pa
        if self.item is not None:
            return getattr(pa, self.factory)(arrow_type(self.item))
        return getattr(pa, self.factory)(*self.args)

    def __str__(self) -> str:
        return self._str

    def __repr__(self) -> str:
        return f"ColumnType({self._str})"

    def __eq__(self, other) -> bool:
        if isinstance(other, ColumnType) or type(other).__module__.startswith("pyarrow"):
            return self._str == str(other)
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._str)


INT8 = ColumnType("int8", "int8")
INT32 = ColumnType("int32", "int32")
INT64 = ColumnType("int64", "int64")
UINT64 = ColumnType("uint64", "uint64")
BOOL = ColumnType("bool_", "bool")
STRING = ColumnType("string", "string")
FLOAT64 = ColumnType("float64", "double")
TIMESTAMP_UTC = ColumnType("timestamp", "timestamp[us, tz=UTC]", args=("us", "UTC"))


def list_of(item: ColumnType) -> ColumnType:
    return ColumnType("list_", f"list<item: {item}>", item)


ADDRESS = UINT64
STRING_LIST = list_of(STRING)

_INT_RANGE = {"int8": (-1 << 7, 1 << 7), "int16": (-1 << 15, 1 << 15),
              "int32": (-1 << 31, 1 << 31), "int64": (-1 << 63, 1 << 63),
              "uint8": (0, 1 << 8), "uint16": (0, 1 << 16), "uint32": (0, 1 << 32),
              "uint64": (0, 1 << 64)}


def arrow_type(t):
    """The pyarrow type for a column type (ColumnType or pyarrow type)."""
    return t.arrow() if isinstance(t, ColumnType) else t


@dataclass(frozen=True)
class Column:
    name: str
    type: Any           # ColumnType or a pyarrow DataType
    doc: str
    fn: Callable[[Any], Any]
    # Expensive columns left out of ``SELECT *`` (still available by name).
    optional: bool = False
    # The C type of an object column ("struct task_struct *"): member paths
    # on it are compiled against this type.
    object_type: str | None = None


class NotInThisKernel(PlanError):
    """The kernel has no such thing at all (``config`` without
    CONFIG_IKCONFIG): a query error, but no failure of an export, which
    writes the table with no rows for that dump."""


@dataclass
class ScanContext:
    """What the planner pushed into one scan."""

    kernel: Any
    columns: list[str]
    keys: dict[str, list[Any]] = field(default_factory=dict)
    limit: int | None = None
    args: tuple = ()
    warnings: "Warnings | None" = None


def not_in_kernel(err: BaseException) -> bool:
    """Whether ``err`` says this kernel has no such member, symbol or type
    (kql.types' MemberNotFoundError/TypeNotFoundError, an Object's missing
    member, Kernel.symbol/var, a helper's "no such counter"): a LookupError,
    but not a KeyError or IndexError, which are bugs."""
    return isinstance(err, LookupError) and not isinstance(err, (KeyError, IndexError))


#: The reason :class:`Warnings` files a :func:`not_in_kernel` error under.
NOT_IN_KERNEL = "not in this kernel"


class Warnings:
    """Counts of NULL values, by (table.column, reason): unreadable memory
    (the error's class name) or :data:`NOT_IN_KERNEL`."""

    def __init__(self) -> None:
        self.counts: collections.Counter = collections.Counter()
        self.examples: dict[tuple[str, str], str] = {}

    def add(self, where: str, err: Exception, reason: str | None = None) -> None:
        key = (where, reason or type(err).__name__)
        self.counts[key] += 1
        self.examples.setdefault(key, str(err))

    def not_in_kernel(self, where: str, err: Exception) -> None:
        """A value NULL because this kernel lacks what it needs (``err``)."""
        self.add(where, err, NOT_IN_KERNEL)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def lines(self) -> list[str]:
        return [f"{n} value{'s' if n != 1 else ''} of {where} "
                + (f"NULL: not in this kernel ({self.examples[(where, reason)]})"
                   if reason == NOT_IN_KERNEL else
                   f"unreadable (e.g. {self.examples[(where, reason)]})")
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


class Columns:
    """A result as Python lists: ``names``, ``types`` (ColumnType or pyarrow
    types) and one list of values per column.  :meth:`pylist` gives a column's
    values as pyarrow would hand them back; :meth:`to_arrow` the pyarrow.Table
    (whose conversion also checks every value against its type)."""

    def __init__(self, names: list[str], types: list, data: list[list], num_rows: int,
                 table=None):
        self.names = list(names)
        self.types = list(types)
        self.data = data
        self.num_rows = num_rows
        self._arrow = table

    @classmethod
    def from_arrow(cls, table) -> "Columns":
        return cls(table.column_names, [f.type for f in table.schema],
                   [None] * table.num_columns, table.num_rows, table)

    @property
    def column_names(self) -> list[str]:
        return self.names

    def select(self, pairs: list[tuple[str, str]]) -> "Columns":
        """Columns ``src`` renamed ``out`` for each ``(src, out)``."""
        at = {n: i for i, n in enumerate(self.names)}
        idx = [at[src] for src, _ in pairs]
        out = Columns([out for _, out in pairs], [self.types[i] for i in idx],
                      [self.data[i] for i in idx], self.num_rows)
        out.where, out.warnings = self.where, self.warnings
        return out

    def pylist(self, i: int) -> list:
        """Column ``i``'s values (ints, strs, bools, floats, lists, None) as
        pyarrow would give them back; without pyarrow when every value is
        already of the plain Python type its column holds."""
        values = self.data[i]
        if self._arrow is None and values is not None:
            kind = _PLAIN.get(str(self.types[i]))
            if kind is not None and _plain(kind, str(self.types[i]), values):
                return values
        return self.to_arrow().column(i).to_pylist()

    where = ""
    warnings: "Warnings | None" = None  # where a value that does not fit its type is counted

    def _where(self, name: str) -> str:
        return f"{self.where}.{name}" if self.where else name

    def to_arrow(self):
        if self._arrow is None:
            import pyarrow as pa
            arrays = []
            for name, typ, values in zip(self.names, self.types, self.data):
                try:
                    arrays.append(pa.array(values, type=arrow_type(typ)))
                except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError, UnicodeError) as e:
                    if self.warnings is None:
                        raise KqlError(f"internal error: column {self._where(name)}: {e}"
                                       ) from None
                    arrays.append(self._fit(name, arrow_type(typ), values))
            self._arrow = pa.Table.from_arrays(arrays, names=self.names)
        return self._arrow


    def _fit(self, name: str, typ, values: list):
        """``values`` as an Arrow array of ``typ``, each value that does not fit
        (an int out of range, from a damaged object) NULL plus a warning."""
        import pyarrow as pa
        fitted = []
        for v in values:
            try:
                pa.array([v], type=typ)
            except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError, UnicodeError):
                shown = (f"an integer of {v.bit_length()} bits"
                         if isinstance(v, int) and v.bit_length() > 128 else str(v)[:40])
                self.warnings.add(self._where(name), ValueError(f"{shown} does not fit {typ}"))
                v = None
            fitted.append(v)
        return pa.array(fitted, type=typ)


# Types whose plain Python values come back from pyarrow as they went in: the
# kind of check (_plain) each needs.
_PLAIN = {**{n: "int" for n in _INT_RANGE}, "bool": "bool", "string": "str",
          "double": "float", "list<item: string>": "strlist"}


def _plain(kind: str, typ: str, values: list) -> bool:
    """Whether pyarrow would hand ``values`` back unchanged (else it converts
    or refuses them: let it)."""
    if kind == "int":
        lo, hi = _INT_RANGE[typ]
        return all(v is None or (type(v) is int and lo <= v < hi) for v in values)
    if kind == "str":
        return all(v is None or (type(v) is str and (v.isascii() or _utf8(v)))
                   for v in values)
    if kind == "bool":
        return all(v is None or type(v) is bool for v in values)
    if kind == "float":
        return all(v is None or type(v) is float for v in values)
    return all(v is None or (type(v) is list and all(
        x is None or (type(x) is str and (x.isascii() or _utf8(x))) for x in v))
        for v in values)


def _utf8(s: str) -> bool:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: pyarrow refuses them
        return False
    return True


def scan_columns(spec: TableSpec, ctx: ScanContext,
                 extra: dict[str, tuple[Any, Callable[[Any], Any]]] | None = None
                 ) -> Columns:
    """Run one scan into :class:`Columns` with ``ctx.columns`` (plus ``extra``
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
            except LookupError as e:
                if not not_in_kernel(e):
                    raise
                v = None
                if warnings is not None:
                    warnings.not_in_kernel(f"{spec.name}.{name}", e)
            data[i].append(v)
    if not fns:  # count(*): rows without columns (Arrow needs one column)
        fns, data = [("__kql_row", INT8, None)], [[None] * n]
    out = Columns([f[0] for f in fns], [f[1] for f in fns], data, n)
    out.where, out.warnings = spec.name, warnings
    return out


def scan(spec: TableSpec, ctx: ScanContext,
         extra: dict[str, tuple[Any, Callable[[Any], Any]]] | None = None):
    """:func:`scan_columns` as a pyarrow.Table."""
    return scan_columns(spec, ctx, extra).to_arrow()
