"""The kql AST: frozen dataclasses built by :mod:`kql.grammar.parser`.

Every node has a keyword-only ``span``: ``(start, end)`` 0-based character
offsets into the query text, excluded from equality so tests can compare trees
built by hand (``Column("pid")``) with parsed ones.

Every node renders itself as DuckDB SQL with ``to_sql()``.  Kernel-only nodes
(:class:`MemberPath`, :class:`Cast` with a C type) raise :class:`NotLowered`
there: the planner replaces them before handing SQL to DuckDB.  Hex literals
render as plain integers (``CAST(... AS UBIGINT)`` above 2**63-1).

Names are kept as written (unquoted identifiers are not case-folded: the
planner compares table and column names case-insensitively; C member names are
case-sensitive).  Function names are lower-cased; SQL type names in ``CAST``
are upper-cased; C type strings are kept verbatim.

``Column(name, table)`` is what ``a.b`` parses to.  Whether ``a`` is a relation
or an object column whose member ``b`` is read cannot be known by the parser:
the planner decides.  Likewise ``x[i]`` parses as DuckDB's :class:`Subscript`
and becomes a member path only on an object column; after a ``->`` step it is
part of the :class:`MemberPath` (``task->fd[3]``).  See docs/SQL.md.

Literals keep their source text (``Literal.text``) and render it, so DuckDB
types them as written.  DuckDB syntax kql does not model is a :class:`Syntax`
node: source text with child nodes in the holes.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Union


class NotLowered(Exception):
    """A kernel-only node reached ``to_sql()``: the planner must rewrite it first."""


# Nodes are frozen dataclasses.  Equality, hashing and repr are written once
# here (over the fields with compare=True / repr=True, as dataclasses would)
# instead of generated per class: that halves the import time of this module.
node = dataclass(frozen=True, eq=False, repr=False)


@node
class Node:
    span: tuple[int, int] = field(default=(0, 0), compare=False, repr=False, kw_only=True)

    @classmethod
    def _field_names(cls) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
        """(compared fields, repr fields, all fields but span), cached per class."""
        names = cls.__dict__.get("_kql_field_names")
        if names is None:
            fields = dataclasses.fields(cls)
            names = (tuple(f.name for f in fields if f.compare),
                     tuple(f.name for f in fields if f.repr),
                     tuple(f.name for f in fields if f.name != "span"))
            setattr(cls, "_kql_field_names", names)  # a class attribute: not frozen
        return names

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return all(getattr(self, n) == getattr(other, n) for n in self._field_names()[0])

    def __hash__(self) -> int:
        return hash((self.__class__.__name__,) + tuple(getattr(self, n) for n in self._field_names()[0]))

    def __repr__(self) -> str:
        args = ", ".join(f"{n}={getattr(self, n)!r}" for n in self._field_names()[1])
        return f"{self.__class__.__qualname__}({args})"

    def to_sql(self) -> str:  # pragma: no cover - every subclass overrides
        raise NotImplementedError(type(self).__name__)

    def children(self) -> Iterator["Node"]:
        """Direct child nodes, in field order (looking inside tuples)."""
        for name in self._field_names()[2]:
            yield from _nodes_in(getattr(self, name))

    def walk(self) -> Iterator["Node"]:
        """This node and all nodes below it, pre-order (no recursion: long
        ``OR`` chains nest thousands deep)."""
        stack: list[Node] = [self]
        while stack:
            node = stack.pop()
            yield node
            stack.extend(reversed(list(node.children())))

    def replace(self, **changes: Any) -> "Node":
        """A copy with some fields changed (keeps the span unless given)."""
        return dataclasses.replace(self, **changes)

    def transform(self, fn: "Callable[[Node], Node]") -> "Node":
        """Rebuild the tree bottom-up: children first, then ``fn(node)``.

        ``fn`` returns the node itself to keep it, or a replacement.  Unchanged
        subtrees are not copied.  Like sqlglot's ``Expression.transform``."""
        return fn(self.map_fields(lambda value: _transform_value(value, fn)))

    def map_fields(self, f: "Callable[[Any], Any]") -> "Node":
        """A copy with ``f(value)`` in each field but the span (``self`` if
        ``f`` changed nothing)."""
        changes = {}
        for name in self._field_names()[2]:
            old = getattr(self, name)
            new = f(old)
            if new is not old:
                changes[name] = new
        return dataclasses.replace(self, **changes) if changes else self

    def find_all(self, *types: type) -> Iterator["Node"]:
        """Nodes of the given types in this subtree, pre-order."""
        return (n for n in self.walk() if isinstance(n, types))


def _nodes_in(value: Any) -> Iterator[Node]:
    if isinstance(value, Node):
        yield value
    elif isinstance(value, tuple):
        for v in value:
            yield from _nodes_in(v)


def _transform_value(value: Any, fn: "Callable[[Node], Node]") -> Any:
    if isinstance(value, Node):
        return value.transform(fn)
    if isinstance(value, tuple):
        items = tuple(_transform_value(v, fn) for v in value)
        if all(a is b for a, b in zip(items, value)):
            return value
        return items
    return value


# ------------------------------------------------------------------ helpers

# Words that must be quoted when used as identifiers in generated SQL: kql's
# keywords plus DuckDB's reserved words.
RESERVED = frozenset("""
ALL ANALYSE ANALYZE AND ANY ARRAY AS ASC ASYMMETRIC BETWEEN BOTH BY CASE CAST CHECK
COLLATE COLUMN CONSTRAINT CREATE CROSS CURRENT CURRENT_CATALOG CURRENT_DATE CURRENT_ROLE
CURRENT_TIME CURRENT_TIMESTAMP CURRENT_USER DEFAULT DEFERRABLE DESC DESCRIBE DISTINCT DO
ELSE END EXCEPT EXISTS EXPLAIN FALSE FETCH FILTER FIRST FOLLOWING FOR FOREIGN FROM FULL
GRANT GROUP GROUPS HAVING ILIKE IN INITIALLY INNER INTERSECT INTO IS JOIN LAST LATERAL
LEADING LEFT LIKE LIMIT NATURAL NOT NULL NULLS OFFSET ON ONLY OR ORDER OUTER OVER
PARTITION PIVOT PLACING PRECEDING PRIMARY QUALIFY RANGE RECURSIVE REFERENCES RETURNING
RIGHT ROW ROWS SELECT SHOW SOME SUMMARIZE SYMMETRIC TABLE THEN TO TRAILING TRUE TRY_CAST
UNBOUNDED UNION UNIQUE UNPIVOT USING VARIADIC WHEN WHERE WINDOW WITH
""".split())

_PLAIN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def quote_ident(name: str) -> str:
    """An identifier as SQL: bare when possible, else double-quoted."""
    if _PLAIN.match(name) and name.upper() not in RESERVED:
        return name
    return '"' + name.replace('"', '""') + '"'


def quote_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


# Binding strength, loosest first; the same ladder as the grammar and DuckDB.
(P_LAMBDA, P_OR, P_AND, P_NOT, P_IS, P_CMP, P_PRED, P_BIT, P_ADD, P_MUL, P_POW, P_COLLATE,
 P_UNARY, P_POSTFIX, P_ATOM) = range(15)

_BINARY_PREC = {
    "OR": P_OR, "AND": P_AND, "IS DISTINCT FROM": P_IS, "IS NOT DISTINCT FROM": P_IS,
    "=": P_CMP, "<>": P_CMP, "<": P_CMP, "<=": P_CMP, ">": P_CMP, ">=": P_CMP,
    "|": P_BIT, "&": P_BIT, "<<": P_BIT, ">>": P_BIT, "||": P_BIT,
    "+": P_ADD, "-": P_ADD, "*": P_MUL, "/": P_MUL, "%": P_MUL, "//": P_MUL,
    "^": P_POW, "**": P_POW,
}
# Levels where DuckDB does not chain operators: parenthesise equal levels too.
_NONASSOC = {P_IS, P_CMP, P_PRED}


def prec(node: Node) -> int:
    return getattr(node, "precedence", P_ATOM)


def _operand(node: Node, level: int, *, strict: bool = False) -> str:
    """``node`` as SQL, parenthesised if it binds looser than ``level``."""
    sql = node.to_sql()
    p = prec(node)
    if p < level or (strict and p == level):
        return f"({sql})"
    return sql


def _list(nodes: tuple[Node, ...]) -> str:
    return ", ".join(n.to_sql() for n in nodes)


# -------------------------------------------------------------- expressions

class Expr(Node):
    """Marker base for expressions (not a dataclass of its own)."""

    precedence = P_ATOM


@node
class Column(Expr):
    """``name`` or ``table.name`` (``table`` may turn out to be an object column)."""

    name: str
    table: str | None = None
    # "name" was double-quoted: a likely mistake for a 'string' when no such
    # column exists (for the planner's error message); not compared.
    quoted: bool = field(default=False, compare=False, repr=False)

    def to_sql(self) -> str:
        if self.table is None:
            return quote_ident(self.name)
        return f"{quote_ident(self.table)}.{quote_ident(self.name)}"


@node
class Star(Expr):
    """``*`` or ``t.*`` as a select item, with DuckDB's modifiers in the
    order written: ``('EXCLUDE', (name, …))``, ``('REPLACE', ((expr, name), …))``,
    ``('RENAME', ((name, new), …))``.  Excluded/renamed names are kept as
    written (``t.col`` allowed)."""

    table: str | None = None
    modifiers: tuple = ()

    def excluded(self) -> set[str]:
        return {n.split(".")[-1].strip('"').lower() for kind, names in self.modifiers
                if kind == "EXCLUDE" for n in names}

    def to_sql(self) -> str:
        out = "*" if self.table is None else f"{quote_ident(self.table)}.*"
        for kind, items in self.modifiers:
            if kind == "EXCLUDE":
                out += " EXCLUDE (" + ", ".join(items) + ")"
            elif kind == "PATTERN":
                out += " " + items
            elif kind == "REPLACE":
                out += " REPLACE (" + ", ".join(f"{e.to_sql()} AS {quote_ident(n)}"
                                                for e, n in items) + ")"
            else:
                out += " RENAME (" + ", ".join(f"{o} AS {quote_ident(n)}" for o, n in items) + ")"
        return out


@node
class ColumnsExpr(Expr):
    """DuckDB's ``COLUMNS(*)``, ``COLUMNS('regex')``, ``COLUMNS(lambda c: …)``:
    ``arg`` is a :class:`Star` or an expression."""

    arg: Expr
    unpack: bool = False

    def to_sql(self) -> str:
        return ("*" if self.unpack else "") + f"COLUMNS({self.arg.to_sql()})"


@node
class Subscript(Expr):
    """DuckDB's ``x[i]`` (list, map, struct, string); ``stop``/``step`` set
    (or ``slice`` true) for ``x[a:b]`` / ``x[a:b:c]``."""

    base: Expr
    index: Expr | None
    stop: Expr | None = None
    step: Expr | None = None
    slice: bool = False
    has_step: bool = False
    precedence = P_POSTFIX

    def to_sql(self) -> str:
        base = _operand(self.base, P_POSTFIX)
        if not self.slice:
            return f"{base}[{self.index.to_sql()}]"
        parts = [p.to_sql() if p is not None else "" for p in (self.index, self.stop)]
        if self.has_step:
            parts.append(self.step.to_sql() if self.step is not None else "")
        return f"{base}[{':'.join(parts)}]"


@node
class Lambda(Expr):
    """``lambda x, y: body`` (``python=True``) or DuckDB's older
    ``x -> body`` / ``(x, y) -> body``; ``params`` are the names.  A ``->``
    whose left side is not a name or a tuple of names is DuckDB's JSON
    operator: ``params`` is empty and ``lhs`` holds the left side."""

    params: tuple[str, ...]
    body: Expr
    python: bool = False
    lhs: Expr | None = None
    precedence = P_LAMBDA

    def to_sql(self) -> str:
        if self.python:
            return f"lambda {', '.join(quote_ident(p) for p in self.params)}: {self.body.to_sql()}"
        if self.lhs is not None:
            left = _operand(self.lhs, P_OR)
        elif len(self.params) == 1:
            left = quote_ident(self.params[0])
        else:
            left = "(" + ", ".join(quote_ident(p) for p in self.params) + ")"
        return f"{left} -> {_operand(self.body, P_LAMBDA)}"


@node
class Syntax(Expr):
    """DuckDB syntax kql has no node for (INTERVAL, struct literals, GROUPING
    SETS, …): the source text with its child nodes in the holes.  ``parts``
    alternate text and nodes; ``to_sql`` puts the children's SQL in the
    holes, so the planner can still rewrite columns inside."""

    parts: tuple
    kind: str = ""
    prec: int = field(default=P_ATOM, compare=False, repr=False)
    # names bound inside (a list comprehension's variables): not columns
    params: tuple[str, ...] = ()

    @property
    def precedence(self) -> int:  # type: ignore[override]
        return self.prec

    def to_sql(self) -> str:
        return "".join(p if isinstance(p, str) else p.to_sql() for p in self.parts)


@node
class MemberPath(Expr):
    """``task->mm->map_count``, ``task->se.vruntime``, ``x.arr[3]``.

    ``steps`` is a tuple of ``('->', member)``, ``('.', member)`` and
    ``('[]', index_expr)``.
    """

    base: Expr
    steps: tuple[tuple[str, Any], ...]
    precedence = P_POSTFIX

    def path_text(self) -> str:
        """The steps as C text, e.g. ``->mm->map_count`` (index exprs as SQL)."""
        out = []
        for kind, arg in self.steps:
            if kind == "[]":
                out.append(f"[{arg.to_sql()}]")
            else:
                out.append(f"{kind}{arg}")
        return "".join(out)

    def has_arrow(self) -> bool:
        return any(kind == "->" for kind, _ in self.steps)

    def to_sql(self) -> str:
        if self.has_arrow():
            raise NotLowered(f"member path {self.path_text()!r} must be rewritten by the planner")
        # `a.b.c` without `->`: DuckDB's struct field access
        return _operand(self.base, P_POSTFIX) + "".join(
            f".{quote_ident(arg)}" if kind == "." else f"[{arg.to_sql()}]"
            for kind, arg in self.steps)


@node
class Literal(Expr):
    """``value`` is int, float, str, bool or None; ``kind`` one of
    ``'int'``, ``'float'``, ``'string'``, ``'bool'``, ``'null'``."""

    value: Any
    kind: str
    # The literal as written (`0.00`, `1E2`, `1_000`, `$$x$$`): what DuckDB
    # gets, so the literal keeps its exact value and type (DECIMAL vs DOUBLE).
    text: str | None = field(default=None, compare=False, repr=False)

    def to_sql(self) -> str:
        if self.text is not None:
            return self.text
        if self.kind == "null":
            return "NULL"
        if self.kind == "bool":
            return "TRUE" if self.value else "FALSE"
        if self.kind == "string":
            return quote_string(self.value)
        if self.kind == "float" and not math.isfinite(self.value):
            return f"CAST('{self.value}' AS DOUBLE)"
        return repr(self.value)


@node
class HexLiteral(Expr):
    """``0xffffffff81000000``: an unsigned 64-bit integer."""

    value: int

    def to_sql(self) -> str:
        if self.value > 0x7FFF_FFFF_FFFF_FFFF:
            return f"CAST({self.value} AS UBIGINT)"
        return str(self.value)


@node
class BinaryOp(Expr):
    """``op`` is ``OR AND = <> < <= > >= | & << >> || + - * / %`` or
    ``IS [NOT] DISTINCT FROM``."""

    op: str
    left: Expr
    right: Expr

    @property
    def precedence(self) -> int:  # type: ignore[override]
        # any other operator (->>, @>, &&, ~~, …) binds like DuckDB's generic Op
        return _BINARY_PREC.get(self.op, P_BIT)

    def to_sql(self) -> str:
        p = self.precedence
        if p in _NONASSOC:
            return f"{_operand(self.left, p, strict=True)} {self.op} {_operand(self.right, p, strict=True)}"
        # Left-deep chains (a OR b OR c …) iteratively: they can be thousands long.
        chain = []
        node: Expr = self
        while isinstance(node, BinaryOp) and node.precedence == p:
            chain.append(node)
            node = node.left
        out = _operand(node, p)
        for b in reversed(chain):
            out += f" {b.op} {_operand(b.right, p, strict=True)}"
        return out


@node
class UnaryOp(Expr):
    """``op`` is ``-``, ``+``, ``~`` or ``NOT``."""

    op: str
    operand: Expr

    @property
    def precedence(self) -> int:  # type: ignore[override]
        return P_NOT if self.op == "NOT" else P_UNARY

    def to_sql(self) -> str:
        if self.op == "NOT":
            return f"NOT {_operand(self.operand, P_NOT)}"
        if self.op == "~":
            # kql binds ~ like C (tightly); DuckDB reads `~a + b` as `~(a + b)`
            return f"(~{_operand(self.operand, P_POSTFIX)})"
        inner = _operand(self.operand, P_UNARY)
        if inner[:1] in "-+~":  # never emit '--' (a comment)
            inner = f"({inner})"
        return f"{self.op}{inner}"


@node
class OrderItem(Node):
    expr: Expr
    desc: bool = False
    nulls_first: bool | None = None
    # ASC written out (DuckDB keeps "ascending" apart from "default order")
    asc: bool = field(default=False, compare=False, repr=False)

    def to_sql(self) -> str:
        out = self.expr.to_sql()
        if self.desc:
            out += " DESC"
        elif self.asc:
            out += " ASC"
        if self.nulls_first is not None:
            out += " NULLS FIRST" if self.nulls_first else " NULLS LAST"
        return out


@node
class FrameBound(Node):
    """``kind``: ``'UNBOUNDED PRECEDING'``, ``'PRECEDING'``, ``'CURRENT ROW'``,
    ``'FOLLOWING'`` or ``'UNBOUNDED FOLLOWING'``; ``offset`` for the bare ones."""

    kind: str
    offset: Expr | None = None

    def to_sql(self) -> str:
        if self.offset is None:
            return self.kind
        return f"{_operand(self.offset, P_BIT)} {self.kind}"


@node
class Frame(Node):
    """``unit`` is ``'ROWS'``, ``'RANGE'`` or ``'GROUPS'``."""

    unit: str
    start: FrameBound
    end: FrameBound | None = None
    exclude: str | None = None

    def to_sql(self) -> str:
        if self.end is None:
            out = f"{self.unit} {self.start.to_sql()}"
        else:
            out = f"{self.unit} BETWEEN {self.start.to_sql()} AND {self.end.to_sql()}"
        return out + (f" EXCLUDE {self.exclude}" if self.exclude else "")


@node
class Window(Node):
    """``OVER (PARTITION BY … ORDER BY … frame)``."""

    partition_by: tuple[Expr, ...] = ()
    order_by: tuple[OrderItem, ...] = ()
    frame: Frame | None = None
    # OVER w (``ref``) or OVER (w ORDER BY …) (``base``): a named window
    ref: str | None = None
    base: str | None = None

    def to_sql(self) -> str:
        if self.ref is not None:
            return f"OVER {quote_ident(self.ref)}"
        return "OVER " + self.spec_sql()

    def spec_sql(self) -> str:
        parts = [quote_ident(self.base)] if self.base is not None else []
        if self.partition_by:
            parts.append("PARTITION BY " + _list(self.partition_by))
        if self.order_by:
            parts.append("ORDER BY " + _list(self.order_by))
        if self.frame is not None:
            parts.append(self.frame.to_sql())
        return "(" + " ".join(parts) + ")"


@node
class FuncCall(Expr):
    """``name(args)``; ``count(*)`` has ``star=True``; aggregates may carry
    ``distinct``, ``order_by`` (``list(x ORDER BY y)``) and ``filter``;
    window functions a ``window``.  ``name`` is lower-case."""

    name: str
    args: tuple[Expr, ...] = ()
    distinct: bool = False
    star: bool = False
    order_by: tuple[OrderItem, ...] = ()
    filter: Expr | None = None
    window: Window | None = None
    # IGNORE NULLS / RESPECT NULLS inside the parentheses
    null_treatment: str | None = None
    within_group: tuple[OrderItem, ...] = ()
    export_state: bool = False

    def to_sql(self) -> str:
        name = self.name if _PLAIN.match(self.name) else quote_ident(self.name)
        if self.star:
            inner = "*"
        else:
            inner = ("DISTINCT " if self.distinct else "") + _list(self.args)
            if self.order_by:
                inner += " ORDER BY " + _list(self.order_by)
            if self.null_treatment:
                inner += f" {self.null_treatment}"
        out = f"{name}({inner})"
        if self.within_group:
            out += " WITHIN GROUP (ORDER BY " + _list(self.within_group) + ")"
        if self.export_state:
            out += " EXPORT_STATE"
        if self.filter is not None:
            out += f" FILTER (WHERE {self.filter.to_sql()})"
        if self.window is not None:
            out += " " + self.window.to_sql()
        return out


@node
class Case(Expr):
    """``CASE [operand] WHEN a THEN b … [ELSE e] END``; ``whens`` holds
    ``(condition, result)`` pairs."""

    operand: Expr | None
    whens: tuple[tuple[Expr, Expr], ...]
    else_: Expr | None = None

    def to_sql(self) -> str:
        out = ["CASE"]
        if self.operand is not None:
            out.append(self.operand.to_sql())
        for cond, result in self.whens:
            out.append(f"WHEN {cond.to_sql()} THEN {result.to_sql()}")
        if self.else_ is not None:
            out.append(f"ELSE {self.else_.to_sql()}")
        out.append("END")
        return " ".join(out)


@node
class Cast(Expr):
    """``CAST(x AS BIGINT)``, ``x::int`` (``type_text='INT'``) or
    ``CAST(addr AS 'struct file *')`` (``c_type=True``, text verbatim)."""

    expr: Expr
    type_text: str
    c_type: bool = False
    try_: bool = False

    def to_sql(self) -> str:
        if self.c_type:
            raise NotLowered(f"C cast to {self.type_text!r} must be rewritten by the planner")
        kw = "TRY_CAST" if self.try_ else "CAST"
        return f"{kw}({self.expr.to_sql()} AS {self.type_text})"


@node
class InList(Expr):
    expr: Expr
    items: tuple[Expr, ...]
    negated: bool = False
    precedence = P_PRED

    def to_sql(self) -> str:
        neg = " NOT" if self.negated else ""
        return f"{_operand(self.expr, P_PRED, strict=True)}{neg} IN ({_list(self.items)})"


@node
class InSubquery(Expr):
    expr: Expr
    query: "Query"
    negated: bool = False
    precedence = P_PRED

    def to_sql(self) -> str:
        neg = " NOT" if self.negated else ""
        return f"{_operand(self.expr, P_PRED, strict=True)}{neg} IN ({self.query.to_sql()})"


@node
class Between(Expr):
    expr: Expr
    low: Expr
    high: Expr
    negated: bool = False
    precedence = P_PRED

    def to_sql(self) -> str:
        neg = " NOT" if self.negated else ""
        return (f"{_operand(self.expr, P_PRED, strict=True)}{neg} BETWEEN "
                f"{_operand(self.low, P_PRED, strict=True)} AND {_operand(self.high, P_PRED, strict=True)}")


@node
class Like(Expr):
    expr: Expr
    pattern: Expr
    negated: bool = False
    case_insensitive: bool = False
    precedence = P_PRED

    def to_sql(self) -> str:
        neg = " NOT" if self.negated else ""
        kw = "ILIKE" if self.case_insensitive else "LIKE"
        return f"{_operand(self.expr, P_PRED, strict=True)}{neg} {kw} {_operand(self.pattern, P_PRED, strict=True)}"


@node
class IsNull(Expr):
    expr: Expr
    negated: bool = False
    precedence = P_IS

    def to_sql(self) -> str:
        return f"{_operand(self.expr, P_IS, strict=True)} IS {'NOT ' if self.negated else ''}NULL"


@node
class Exists(Expr):
    query: "Query"

    def to_sql(self) -> str:
        return f"EXISTS ({self.query.to_sql()})"


@node
class Subquery(Expr):
    """A parenthesised query: in FROM (with an optional ``alias``) or as a
    scalar expression."""

    query: "Query"
    alias: str | None = None
    columns: tuple[str, ...] = ()
    lateral: bool = False

    def to_sql(self) -> str:
        out = ("LATERAL " if self.lateral else "") + f"({self.query.to_sql()})"
        return out + _alias_sql(self.alias, self.columns)


# ---------------------------------------------------------------- relations

@node
class TableRef(Node):
    """``tasks``, ``a.tasks`` (``dump='a'``: a table of the dump named ``a``)."""

    name: str
    dump: str | None = None
    alias: str | None = None
    columns: tuple[str, ...] = ()
    catalog: str | None = None

    def to_sql(self) -> str:
        out = quote_ident(self.name)
        if self.dump is not None:
            out = f"{quote_ident(self.dump)}.{out}"
        if self.catalog is not None:
            out = f"{quote_ident(self.catalog)}.{out}"
        return out + _alias_sql(self.alias, self.columns)


@node
class TableFunction(Node):
    """``list_walk('init_task.tasks', 'struct task_struct', 'tasks') AS t``."""

    name: str
    args: tuple[Expr, ...] = ()
    dump: str | None = None
    alias: str | None = None
    columns: tuple[str, ...] = ()
    lateral: bool = False

    def to_sql(self) -> str:
        out = f"{quote_ident(self.name)}({_list(self.args)})"
        if self.dump is not None:
            out = f"{quote_ident(self.dump)}.{out}"
        if self.lateral:
            out = "LATERAL " + out
        return out + _alias_sql(self.alias, self.columns)


def _alias_sql(alias: str | None, columns: tuple[str, ...]) -> str:
    out = ""
    if alias is not None:
        out += f" AS {quote_ident(alias)}"
    if columns:
        out += "(" + ", ".join(quote_ident(c) for c in columns) + ")"
    return out


@node
class Values(Node):
    """``VALUES (1, 'a'), (2, 'b')``: a query of constant rows."""

    rows: tuple[tuple[Expr, ...], ...]

    def to_sql(self) -> str:
        return "VALUES " + ", ".join(f"({_list(r)})" for r in self.rows)


@node
class Join(Node):
    """``kind``: ``'INNER'``, ``'LEFT'``, ``'RIGHT'``, ``'FULL'``, ``'CROSS'``,
    ``'SEMI'``, ``'ANTI'``, ``'POSITIONAL'``, or ``'ASOF …'`` / ``'NATURAL …'``
    followed by one of the first ones."""

    kind: str
    left: "FromItem"
    right: "FromItem"
    on: Expr | None = None
    using: tuple[str, ...] | None = None

    def to_sql(self) -> str:
        right = self.right.to_sql()
        if isinstance(self.right, Join):
            right = f"({right})"
        kind = self.kind[:-len(" INNER")] if self.kind.endswith(" INNER") else self.kind
        kw = "JOIN" if kind == "INNER" else f"{kind} JOIN"
        out = f"{self.left.to_sql()} {kw} {right}"
        if self.on is not None:
            out += f" ON {self.on.to_sql()}"
        if self.using is not None:
            out += " USING (" + ", ".join(quote_ident(n) for n in self.using) + ")"
        return out


FromItem = Union[TableRef, TableFunction, Subquery, Join]


# ------------------------------------------------------------------ queries

@node
class SelectItem(Node):
    """One item of the select list: an expression (or :class:`Star`) and its alias."""

    expr: Expr
    alias: str | None = None

    def to_sql(self) -> str:
        out = self.expr.to_sql()
        if self.alias is not None:
            out += f" AS {quote_ident(self.alias)}"
        return out


def _tail_sql(order_by: tuple[OrderItem, ...], limit: Expr | None, offset: Expr | None) -> str:
    out = ""
    if order_by:
        out += " ORDER BY " + _list(order_by)
    if limit is not None:
        out += f" LIMIT {limit.to_sql()}"
    if offset is not None:
        out += f" OFFSET {offset.to_sql()}"
    return out


@node
class Select(Node):
    """One SELECT.  ``from_`` holds the comma-separated FROM items (several
    mean a cross product); ``group_by_all`` is ``GROUP BY ALL``; ordinal
    numbers in GROUP BY / ORDER BY stay integer literals."""

    items: tuple[SelectItem, ...]
    from_: tuple[FromItem, ...] = ()
    where: Expr | None = None
    group_by: tuple[Expr, ...] = ()
    group_by_all: bool = False
    having: Expr | None = None
    qualify: Expr | None = None
    order_by: tuple[OrderItem, ...] = ()
    limit: Expr | None = None
    offset: Expr | None = None
    distinct: bool = False
    distinct_on: tuple[Expr, ...] = ()
    # WINDOW w AS (…): (name, Window) pairs
    windows: tuple[tuple[str, Window], ...] = ()
    sample: Expr | None = None

    def to_sql(self) -> str:
        quant = "DISTINCT " if self.distinct else ""
        if self.distinct_on:
            quant = f"DISTINCT ON ({_list(self.distinct_on)}) "
        out = "SELECT " + quant + _list(self.items)
        if self.from_:
            out += " FROM " + _list(self.from_)
        if self.where is not None:
            out += f" WHERE {self.where.to_sql()}"
        if self.group_by_all:
            out += " GROUP BY ALL"
        elif self.group_by:
            out += " GROUP BY " + _list(self.group_by)
        if self.having is not None:
            out += f" HAVING {self.having.to_sql()}"
        if self.windows:
            out += " WINDOW " + ", ".join(f"{quote_ident(n)} AS {w.spec_sql()}"
                                          for n, w in self.windows)
        if self.qualify is not None:
            out += f" QUALIFY {self.qualify.to_sql()}"
        if self.sample is not None:
            out += f" USING SAMPLE {self.sample.to_sql()}"
        return out + _tail_sql(self.order_by, self.limit, self.offset)


_SETOP_PREC = {"UNION": 0, "EXCEPT": 0, "INTERSECT": 1}


@node
class SetOp(Node):
    """``left UNION [ALL] right`` (also ``INTERSECT``, ``EXCEPT``); ORDER BY and
    LIMIT after the last SELECT apply to the whole set operation."""

    op: str
    left: "Query"
    right: "Query"
    all: bool = False
    order_by: tuple[OrderItem, ...] = ()
    limit: Expr | None = None
    offset: Expr | None = None
    by_name: bool = False

    def _side(self, q: "Query", right: bool) -> str:
        sql = q.to_sql()
        if isinstance(q, (Select, Values)):
            if isinstance(q, Select) and (q.order_by or q.limit is not None or q.offset is not None):
                return f"({sql})"
            return sql
        if isinstance(q, SetOp) and not (q.order_by or q.limit is not None or q.offset is not None):
            mine, theirs = _SETOP_PREC[self.op], _SETOP_PREC[q.op]
            if theirs > mine or (theirs == mine and not right):
                return sql
        return f"({sql})"

    def to_sql(self) -> str:
        op = self.op + (" ALL" if self.all else "") + (" BY NAME" if self.by_name else "")
        out = f"{self._side(self.left, False)} {op} {self._side(self.right, True)}"
        return out + _tail_sql(self.order_by, self.limit, self.offset)


@node
class CTE(Node):
    """``name [(columns)] AS (query)`` in a WITH clause."""

    name: str
    query: "Query"
    columns: tuple[str, ...] = ()
    materialized: bool | None = None
    using_key: tuple["SelectItem", ...] = ()

    def to_sql(self) -> str:
        cols = ""
        if self.columns:
            cols = "(" + ", ".join(quote_ident(c) for c in self.columns) + ")"
        if self.using_key:
            cols += " USING KEY (" + _list(self.using_key) + ")"
        mat = {None: "", True: "MATERIALIZED ", False: "NOT MATERIALIZED "}[self.materialized]
        return f"{quote_ident(self.name)}{cols} AS {mat}({self.query.to_sql()})"


@node
class With(Node):
    """``WITH [RECURSIVE] ctes body``."""

    ctes: tuple[CTE, ...]
    body: "Query"
    recursive: bool = False

    def to_sql(self) -> str:
        kw = "WITH RECURSIVE " if self.recursive else "WITH "
        return kw + _list(self.ctes) + " " + self.body.to_sql()


@node
class Explain(Node):
    statement: "Query"
    analyze: bool = False

    def to_sql(self) -> str:
        return ("EXPLAIN ANALYZE " if self.analyze else "EXPLAIN ") + self.statement.to_sql()


@node
class Describe(Node):
    """``DESCRIBE query`` / ``SUMMARIZE query``: DuckDB describes the result."""

    statement: "Query"
    kind: str = "DESCRIBE"

    def to_sql(self) -> str:
        return f"{self.kind} {self.statement.to_sql()}"


Query = Union[Select, SetOp, With, Values]
Statement = Union[Select, SetOp, With, Explain, Values, Describe]

__all__ = [
    "Node", "Expr", "NotLowered", "Column", "Star", "MemberPath", "Literal", "HexLiteral",
    "BinaryOp", "UnaryOp", "OrderItem", "FrameBound", "Frame", "Window", "FuncCall", "Case",
    "Cast", "InList", "InSubquery", "Between", "Like", "IsNull", "Exists", "Subquery",
    "TableRef", "TableFunction", "Join", "FromItem", "SelectItem", "Select", "SetOp", "CTE",
    "With", "Explain", "Query", "Statement", "quote_ident", "quote_string", "ColumnsExpr",
    "Subscript", "Lambda", "Syntax", "Values", "Describe",
]
