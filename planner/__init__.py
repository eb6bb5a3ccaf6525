"""Query AST → :class:`Plan` (kernel scans + the relational remainder).

The planner runs rules in order, each a function ``rule(stmt, ctx) -> stmt``
(see ``RULES``):

1. ``qualify``: table names become scans (unknown names are errors with a
   suggestion), columns are resolved to scans and recorded (projection
   pushdown: a scan computes only the columns the query names), member paths
   on object columns are compiled into reads.
2. ``push_predicates``: ``key = N`` / ``key IN (…)`` on a table with a key
   lookup (tasks.pid → find_task) becomes a lookup instead of a walk.
3. ``push_limits``: a LIMIT over a single scan, with nothing that needs all
   rows first, stops the walk early.
4. ``lower_functions``: kql's functions (``kql.functions.FUNCTIONS``) become
   the UDFs the executor registers in DuckDB, one per dump.
5. ``direct``: a query that is only a projection of one scan needs no DuckDB.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any

from kql.errors import PlanError
from kql.functions import FUNCTIONS
from kql.grammar import ast as A

from .members import compile_path
from .plan import LateralRef, MemberColumn, Plan, Scan



@dataclass
class Env:
    """What the planner may look at: the catalog and the open dumps.

    ``kernels`` maps a dump name (None = the default dump) to a Kernel whose
    types compile member paths."""

    catalog: dict
    kernels: dict[str | None, Any] = field(default_factory=dict)
    allow_files: bool = False   # --allow-files: FROM 'x.csv', read_csv(...) go to DuckDB

    def kernel(self, dump: str | None):
        if dump in self.kernels:
            return self.kernels[dump]
        if dump is None and len(self.kernels) == 1:
            return next(iter(self.kernels.values()))
        return None


@dataclass
class Ctx:
    env: Env
    source: str
    scans: list[Scan] = field(default_factory=list)
    # per rewritten Select (by id): the relations visible in its FROM
    scopes: dict[int, "Scope"] = field(default_factory=dict)
    # how many FROM items name each dump (for default aliases)
    dump_uses: dict[str, int] = field(default_factory=dict)
    # member reads on computed addresses (see Plan.udfs)
    udfs: dict = field(default_factory=dict)
    # output names that hold addresses besides the tables' address columns
    address_names: set = field(default_factory=set)


@dataclass
class Scope:
    relations: list[tuple[str, Scan | None]]  # (alias lower, scan or None if opaque)
    parent: "Scope | None" = None
    outer_join_aliases: set[str] = field(default_factory=set)

    @property
    def scans(self) -> list[Scan]:
        return [s for _, s in self.relations if s is not None]

    @property
    def closed(self) -> bool:
        return all(s is not None for _, s in self.relations)


def error(msg: str, ctx: Ctx, node: A.Node) -> PlanError:
    return PlanError(msg, ctx.source, node.span[0], node.span[1])


def suggest(name: str, names) -> str:
    close = difflib.get_close_matches(name.lower(), [n.lower() for n in names], n=1, cutoff=0.6)
    if close:
        orig = {n.lower(): n for n in names}[close[0]]
        return f"; did you mean '{orig}'?"
    return ""


# ---------------------------------------------------------------- rewriting

def rewrite(value, fn):
    """Rebuild ``value`` bottom-up, calling ``fn(node)`` on every Node; ``fn``
    returns a replacement or None (keep).  Queries nested in expressions are
    left to ``fn`` (it sees Subquery/Exists/InSubquery nodes first)."""
    if isinstance(value, tuple):
        new = tuple(rewrite(v, fn) for v in value)
        return value if all(a is b for a, b in zip(new, value)) else new
    if not isinstance(value, A.Node):
        return value
    got = fn(value)
    if got is not None:
        return got
    return _rewrite_fields(value, fn)


# ---------------------------------------------------------------- naming

def name_outputs(stmt, source: str):
    """Name unaliased computed select items as the user wrote them
    (``count(*)``, ``task->mm->map_count``) instead of DuckDB's spelling.

    >>> from kql.grammar import parse_one
    >>> q = "SELECT pid, count(*) FROM t"
    >>> name_outputs(parse_one(q), q).to_sql()
    'SELECT pid, count(*) AS "count(*)" FROM t'
    """
    def name(item):
        if item.alias is None and not isinstance(item.expr, (A.Star, A.Column)) and \
                not any(isinstance(n, A.ColumnsExpr) for n in item.expr.walk()):
            # (COLUMNS(…) stands for several columns: DuckDB names them)
            return item.replace(alias=source[item.expr.span[0]:item.expr.span[1]])
        return item

    def fn(node):
        # only a SELECT's own items (not PIVOT's aggregates: DuckDB names those)
        if isinstance(node, A.Select):
            items = tuple(name(i) for i in node.items)
            if any(a is not b for a, b in zip(items, node.items)):
                node = node.replace(items=items)
            return _rewrite_fields(node, fn)
        return None
    return rewrite(stmt, fn)


# ---------------------------------------------------------------- qualify

def qualify(stmt, ctx: Ctx):
    for n in stmt.walk():
        if isinstance(n, (A.TableRef, A.TableFunction)) and n.dump is not None:
            ctx.dump_uses[n.dump] = ctx.dump_uses.get(n.dump, 0) + 1
    return _query(stmt, ctx, None, frozenset())


def _query(q, ctx: Ctx, parent: Scope | None, ctes: frozenset):
    if isinstance(q, (A.Explain, A.Describe)):
        return q.replace(statement=_query(q.statement, ctx, parent, ctes))
    if isinstance(q, A.Values):
        return q.replace(rows=rewrite(q.rows, _nested_queries(ctx, Scope([], parent), ctes)))
    if isinstance(q, A.With):
        names = set(ctes)
        new_ctes = []
        for c in q.ctes:
            # a CTE sees the ones before it (and itself, if recursive)
            if q.recursive:
                names.add(c.name.lower())
            new_ctes.append(c.replace(query=_query(c.query, ctx, parent, frozenset(names))))
            names.add(c.name.lower())
        return q.replace(ctes=tuple(new_ctes), body=_query(q.body, ctx, parent, frozenset(names)))
    if isinstance(q, A.SetOp):
        return q.replace(left=_query(q.left, ctx, parent, ctes),
                         right=_query(q.right, ctx, parent, ctes))
    if isinstance(q, A.Select):
        return _select(q, ctx, parent, ctes)
    if isinstance(q, A.Syntax) and q.kind == "pivot_stmt":
        # PIVOT/UNPIVOT t …: plan the tables it reads, DuckDB does the rest
        return rewrite(q, _nested_queries(ctx, Scope([], parent), ctes))
    raise error(f"unsupported statement {type(q).__name__}", ctx, q)


def _nested_queries(ctx: Ctx, scope, ctes: frozenset):
    """A rewrite function that plans the queries inside an expression (and
    leaves the rest to DuckDB)."""
    def fn(node):
        if isinstance(node, (A.Select, A.SetOp, A.With, A.Values)):
            return _query(node, ctx, scope.parent if scope else None, ctes)
        if isinstance(node, (A.TableRef, A.TableFunction, A.Join)) and scope is not None:
            # a table inside DuckDB-only syntax (PIVOT t …): kql cannot tell
            # which columns it uses, so it reads them all
            n = len(ctx.scans)
            new = _from_item(node, ctx, scope, ctes, False)
            for s in ctx.scans[n:]:
                for c in s.spec.star_columns():
                    s.use(c)
            return new
        return None
    return fn


# Functions that read files or the network: they run only with the file
# access option (issue #13); without it, an error instead of a read.
FILE_FUNCTIONS = frozenset("""
read_csv read_csv_auto read_parquet parquet_scan read_json read_json_auto read_json_objects
read_ndjson read_ndjson_auto read_ndjson_objects read_json_objects_auto read_text read_blob
sniff_csv parquet_metadata parquet_schema parquet_file_metadata parquet_kv_metadata glob
read_xlsx st_read iceberg_scan delta_scan
""".split())
# DuckDB table functions that read nothing but their arguments.
DUCKDB_TABLE_FUNCTIONS = frozenset("range generate_series unnest".split())
from kql.duck import FILES_NEEDED as FILES_NEED  # noqa: E402  (one text for both refusals)


def reads_files(node) -> bool:
    """Is this FROM item a file (``'x.parquet'``) or a file-reading function?"""
    if isinstance(node, A.Syntax):
        return node.kind == "file_ref"
    return isinstance(node, A.TableFunction) and node.name.lower() in FILE_FUNCTIONS


def _from_item(item, ctx: Ctx, scope: Scope, ctes: frozenset, outer: bool):
    if isinstance(item, A.Syntax):
        # DuckDB-only FROM items (a file path, FROM VALUES, PIVOT, …)
        if item.kind == "file_ref" and not ctx.env.allow_files:
            raise error(f"{FILES_NEED}: {ctx.source[item.span[0]:item.span[1]].split()[0]} "
                        "is a file", ctx, item)
        new = rewrite(item, _nested_queries(ctx, scope, ctes))
        scope.relations.append(("", None))
        return new
    if isinstance(item, A.TableFunction) and item.name.lower() not in ctx.env.catalog and \
            item.dump is None:
        if item.name.lower() in FILE_FUNCTIONS and not ctx.env.allow_files:
            raise error(f"{FILES_NEED}: {item.name}() reads files", ctx, item)
        if item.name.lower() in DUCKDB_TABLE_FUNCTIONS | FILE_FUNCTIONS:
            scope.relations.append(((item.alias or item.name).lower(), None))
            return item
    if isinstance(item, A.TableRef):
        if item.dump is None and item.catalog is None and item.name.lower() in ctes:
            scope.relations.append(((item.alias or item.name).lower(), None))
            return item
        if item.columns:
            raise error("column aliases (AS t(a, b)) on a kernel table: name columns in the "
                        "select list instead", ctx, item)
        scan = _new_scan(item, item.name, (), ctx)
        scope.relations.append((scan.alias.lower(), scan))
        if outer:
            scope.outer_join_aliases.add(scan.alias.lower())
        return A.TableRef(scan.id, alias=scan.alias, span=item.span)
    if isinstance(item, A.TableFunction):
        args, lateral = [], []
        for i, a in enumerate(item.args):
            ref = _lateral_ref(a, scope)
            if ref is None:
                args.append(_constant(a, ctx, item.dump))
            else:  # a column of an earlier FROM item: a lateral join
                outer, col = ref
                outer.use(col)
                args.append(None)
                lateral.append((i, outer.id, outer.alias, col))
        scan = _new_scan(item, item.name, tuple(args), ctx)
        scan.lateral = lateral
        scope.relations.append((scan.alias.lower(), scan))
        if lateral:
            return LateralRef(scan.id, scan.alias, tuple(
                (f"__kql_arg{i}", alias, col) for i, _id, alias, col in lateral), span=item.span)
        return A.TableRef(scan.id, alias=scan.alias, span=item.span)
    if isinstance(item, A.Subquery):
        scope.relations.append(((item.alias or "").lower(), None))
        # LATERAL sees the FROM items before it
        return item.replace(query=_query(item.query, ctx, scope if item.lateral else scope.parent,
                                         ctes))
    if isinstance(item, A.Join):
        words = item.kind.split()
        left_outer = "RIGHT" in words or "FULL" in words
        right_outer = "LEFT" in words or "FULL" in words
        left = _from_item(item.left, ctx, scope, ctes, outer or left_outer)
        right = _from_item(item.right, ctx, scope, ctes, outer or right_outer)
        if words[0] == "NATURAL":  # joins on every column the two sides share
            for s in scope.scans:
                for c in s.spec.star_columns():
                    s.use(c)
        if item.using:
            for name in item.using:
                for s in scope.scans:
                    if s.spec.column(name):
                        s.use(s.spec.column(name).name)
        return item.replace(left=left, right=right)
    raise error(f"unsupported FROM item {type(item).__name__}", ctx, item)


def _default_alias(dump: str | None, table: str, ctx: Ctx) -> str:
    """``tasks`` for ``FROM tasks``; for a dump-qualified table the dump name
    (``FROM a.tasks JOIN b.tasks`` → ``a``, ``b``), or ``a_tasks`` when the
    query names several tables of that dump."""
    if dump is None:
        return table
    return dump if ctx.dump_uses.get(dump, 0) <= 1 else f"{dump}_{table}"


def _new_scan(node, name: str, args: tuple, ctx: Ctx) -> Scan:
    spec = ctx.env.catalog.get(name.lower())
    is_func = isinstance(node, A.TableFunction)
    if spec is None or (spec.params is not None) != is_func:
        kinds = [n for n, s in ctx.env.catalog.items() if (s.params is not None) == is_func]
        what = "table function" if is_func else "table"
        raise error(f"unknown {what} '{name}'{suggest(name, kinds)}", ctx, node)
    dump = getattr(node, "dump", None)
    if dump is not None and ctx.env.kernels and dump not in ctx.env.kernels:
        raise error(f"unknown dump '{dump}' (dumps: {', '.join(sorted(k for k in ctx.env.kernels if k))})",
                    ctx, node)
    if spec is not None and not is_func and getattr(node, "catalog", None) is not None:
        raise error(f"unknown table '{node.catalog}.{node.dump}.{name}'", ctx, node)
    if is_func and len(args) != len(spec.params):
        required = [p for p in spec.params if not p.endswith("?")]
        if not (len(required) <= len(args) <= len(spec.params)):
            raise error(f"{name}() takes ({', '.join(p.rstrip('?') for p in spec.params)}), "
                        f"got {len(args)} argument{'s' if len(args) != 1 else ''}", ctx, node)
    scan = Scan(id=f"__kql_scan_{len(ctx.scans)}", table=spec.name, spec=spec, dump=dump,
                alias=node.alias or _default_alias(dump, spec.name, ctx), args=args)
    obj = spec.column(spec.object_column) if spec.object_column else None
    if obj is not None:
        scan.object_type = obj.object_type
    if spec.object_type_fn is not None:
        scan.object_type = spec.object_type_fn(ctx.env.kernel(dump), args)
    ctx.scans.append(scan)
    return scan


def _lateral_ref(e, scope: Scope):
    """``(scan, column)`` when a table-function argument names a plain column
    of a table earlier in the same FROM (``members('struct task_struct',
    t.task)``), else None."""
    if not isinstance(e, A.Column):
        return None
    hits = []
    for alias, scan in scope.relations:
        if scan is None or (e.table is not None and e.table.lower() != alias):
            continue
        c = scan.spec.column(e.name)
        if c is not None:
            hits.append((scan, c.name))
    return hits[0] if len(hits) == 1 else None


def _constant(e, ctx: Ctx, dump: str | None = None):
    """Evaluate a table-function argument at plan time: literals, ``addr('sym')``
    and integer arithmetic on those."""
    if isinstance(e, (A.Literal, A.HexLiteral)):
        return e.value
    if isinstance(e, A.UnaryOp) and e.op == "-":
        v = _constant(e.operand, ctx, dump)
        if isinstance(v, int):
            return -v
    if isinstance(e, A.BinaryOp) and e.op in ("+", "-", "*"):
        a, b = _constant(e.left, ctx, dump), _constant(e.right, ctx, dump)
        if isinstance(a, int) and isinstance(b, int):
            return a + b if e.op == "+" else a - b if e.op == "-" else a * b
    if isinstance(e, A.FuncCall) and e.name == "addr" and len(e.args) == 1:
        name = _constant(e.args[0], ctx, dump)
        kernel = ctx.env.kernel(dump)
        if isinstance(name, str) and kernel is not None:
            try:
                return kernel.symbol(name).address
            except LookupError:
                raise error(f"no symbol named '{name}'", ctx, e.args[0]) from None
    raise error("table function arguments must be constants (literals, addr('symbol'), "
                "and + - * of those) or columns of a table before it in FROM", ctx, e)


def _select(sel: A.Select, ctx: Ctx, parent: Scope | None, ctes: frozenset):
    scope = Scope([], parent)
    new_from = tuple(_from_item(f, ctx, scope, ctes, False) for f in sel.from_)
    aliases = {i.alias.lower() for i in sel.items if i.alias}
    for i in sel.items:  # * RENAME (a AS b) / REPLACE (… AS c): output names too
        if isinstance(i.expr, A.Star):
            aliases |= {n.lower() for kind, items in i.expr.modifiers
                        if kind in ("RENAME", "REPLACE") for _, n in items}

    def fn(node):
        if isinstance(node, (A.Subquery,)):
            return node.replace(query=_query(node.query, ctx, scope, ctes))
        if isinstance(node, A.Exists):
            return node.replace(query=_query(node.query, ctx, scope, ctes))
        if isinstance(node, A.InSubquery):
            return node.replace(expr=rewrite(node.expr, fn),
                                query=_query(node.query, ctx, scope, ctes))
        if isinstance(node, (A.Select, A.SetOp, A.With, A.Values)):  # inside DuckDB syntax
            return _query(node, ctx, scope, ctes)
        if isinstance(node, A.Star):
            return _star(node, ctx, scope, fn)
        if isinstance(node, A.ColumnsExpr):
            return _columns_expr(node, ctx, scope, fn)
        if isinstance(node, A.Lambda):
            return _lambda(node, fn)
        if isinstance(node, A.Syntax) and node.params:  # [x FOR x IN l IF …]
            return _rewrite_fields(node, _bound(node.params, fn))
        if isinstance(node, A.FuncCall) and any(_is_arrow_lambda(a) for a in node.args):
            return _rewrite_fields(modern_lambdas(node), fn)
        if isinstance(node, A.Subscript):
            return _subscript(node, ctx, scope, fn)
        if isinstance(node, A.MemberPath):
            return _member(node, ctx, scope, fn)
        if isinstance(node, A.Column):
            return _column(node, ctx, scope, aliases)
        if isinstance(node, A.Cast) and node.c_type:
            return _c_cast(node, ctx, scope, fn)
        return None

    new = sel.replace(
        from_=new_from,
        items=rewrite(sel.items, fn),
        where=rewrite(sel.where, fn),
        group_by=rewrite(sel.group_by, fn),
        having=rewrite(sel.having, fn),
        qualify=rewrite(sel.qualify, fn),
        order_by=rewrite(sel.order_by, fn),
        distinct_on=rewrite(sel.distinct_on, fn),
        windows=rewrite(sel.windows, fn),
        limit=rewrite(sel.limit, fn),
        offset=rewrite(sel.offset, fn),
    )
    # Join conditions see the whole scope.
    new = new.replace(from_=tuple(_rewrite_join_on(f, fn) for f in new.from_))
    # Bare member paths in the select list keep what the user wrote as name.
    # `task.pid` became a member read: keep what the user wrote as its name.
    items = []
    for old, item in zip(sel.items, new.items):
        if item.alias and _is_pointer_read(old.expr, item.expr, ctx, scope):
            ctx.address_names.add(item.alias.lower())  # a pointer: print in hex
        if item.alias is None and isinstance(old.expr, A.Column) and item.expr != old.expr:
            item = item.replace(alias=ctx.source[old.expr.span[0]:old.expr.span[1]])
        items.append(item)
    new = new.replace(items=tuple(items))
    ctx.scopes[id(new)] = scope  # later rules look scopes up by the new node
    return new


def _star(node: A.Star, ctx: Ctx, scope: Scope, fn):
    """``*`` / ``t.*`` [EXCLUDE …] [REPLACE …]: the scans' star columns (not
    the ones excluded) are read; internal columns are excluded later
    (:func:`hide_internal_columns`)."""
    excluded = node.excluded()
    for alias, s in scope.relations:
        if s is not None and (node.table is None or node.table.lower() == alias):
            for c in s.spec.star_columns():
                if c.lower() not in excluded:
                    s.use(c)
    mods = tuple((kind, tuple((rewrite(e, fn), n) for e, n in items)) if kind == "REPLACE"
                 else (kind, items) for kind, items in node.modifiers)
    return node.replace(modifiers=mods) if mods != node.modifiers else node


def _columns_expr(node: A.ColumnsExpr, ctx: Ctx, scope: Scope, fn):
    """``COLUMNS(*)`` is a star; ``COLUMNS('regex')`` reads the matching
    columns (Python's re stands in for DuckDB's RE2 to choose them); any
    other argument (a lambda, a list) reads every column."""
    if isinstance(node.arg, A.Star):
        return node.replace(arg=_star(node.arg, ctx, scope, fn))
    import re
    arg = node.arg
    scans = [s for _, s in scope.relations if s is not None]
    if isinstance(arg, A.Literal) and arg.kind == "string":
        try:
            pattern = re.compile(arg.value)
        except re.error:
            pattern = None
        names = [(s, c) for s in scans for c in s.spec.star_columns()
                 if pattern is None or pattern.search(c)]
        if not names and scope.closed and scans:
            tables = ", ".join(sorted({s.table for s in scans}))
            raise error(f"COLUMNS('{arg.value}') matches no column of {tables}", ctx, node)
        for s, c in names:
            s.use(c)
        return node
    for s in scans:
        for c in s.spec.star_columns():
            s.use(c)
    return node.replace(arg=rewrite(arg, fn))


def _is_arrow_lambda(node) -> bool:
    return isinstance(node, A.Lambda) and not node.python and node.lhs is None


def modern_lambdas(stmt):
    """``f(l, x -> x + 1)`` → ``f(l, lambda x: x + 1)``: DuckDB deprecates
    the arrow; as a function argument it can only be a lambda.  (Elsewhere
    ``a -> b`` is DuckDB's JSON operator: see :func:`_lambda`.)"""
    def fn(node):
        if isinstance(node, A.FuncCall) and any(_is_arrow_lambda(a) for a in node.args):
            args = tuple(a.replace(python=True) if _is_arrow_lambda(a) else a for a in node.args)
            return _rewrite_fields(node.replace(args=args), fn)
        return None
    return rewrite(stmt, fn)


def _rewrite_fields(node, fn):
    """``node`` with ``rewrite(…, fn)`` applied to each of its fields (not
    to ``node`` itself)."""
    return node.map_fields(lambda value: rewrite(value, fn))


def _lambda(node: A.Lambda, fn):
    """A lambda's parameters are not columns: leave them (and ``x.field``)
    to DuckDB; resolve everything else in the body."""
    if _is_arrow_lambda(node):
        # not a function argument: `j -> k` is DuckDB's JSON arrow on column j
        base = A.Column(node.params[0], span=node.span) if len(node.params) == 1 else None
        if base is not None:
            return node.replace(params=(), lhs=rewrite(base, fn), body=rewrite(node.body, fn))
    lhs = rewrite(node.lhs, fn) if node.lhs is not None else None
    return node.replace(body=rewrite(node.body, _bound(node.params, fn)), lhs=lhs)


def _bound(names, fn):
    """``fn`` for an expression where ``names`` are bound (a lambda's
    parameters, a list comprehension's variables): those, and their fields
    (``x.a``), are left to DuckDB."""
    params = {p.lower() for p in names}

    def inner(n):
        if isinstance(n, A.Column) and (n.name.lower() in params and n.table is None
                                        or (n.table or "").lower() in params):
            return n
        if isinstance(n, A.MemberPath) and isinstance(n.base, A.Column) and \
                n.base.table is None and n.base.name.lower() in params:
            if n.has_arrow():
                return None  # let _member report it
            return n
        return fn(n)
    return inner


def _object_scan(col: A.Column, scope: Scope):
    """The scan whose object column ``col`` names, or None."""
    for sc in _visible(scope):
        for alias, s in sc.relations:
            if s is None or not s.spec.object_column:
                continue
            if col.table is not None and col.table.lower() != alias:
                continue
            if s.spec.object_column.lower() == col.name.lower():
                return s
    return None


def _subscript(node: A.Subscript, ctx: Ctx, scope: Scope, fn):
    """``x[i]``: DuckDB's subscript, unless ``x`` is an object column (or a
    C cast): then it indexes the C object (``task[0]``, a member path)."""
    base = node.base
    if not node.slice and ((isinstance(base, A.Column) and _object_scan(base, scope))
                           or (isinstance(base, A.Cast) and base.c_type)):
        return _member(A.MemberPath(base, (("[]", node.index),), span=node.span), ctx, scope, fn)
    return node.replace(base=rewrite(base, fn), index=rewrite(node.index, fn),
                        stop=rewrite(node.stop, fn), step=rewrite(node.step, fn))


def _is_address_member(m: MemberColumn) -> bool:
    """A member read whose value is an address: a pointer, or a struct, union
    or array member (read as the address of the object)."""
    c = m.c_type
    return str(m.type) == "uint64" and (c.endswith("*") or c.startswith(("struct ", "union "))
                                        or c.endswith("]"))


def _is_pointer_read(old, new, ctx: Ctx, scope: Scope) -> bool:
    """Does this select item give an address (a C cast, a member read of an
    address, or an address column under another name)?"""
    if isinstance(old, A.Cast) and old.c_type:
        return True
    m = None
    if isinstance(new, A.FuncCall) and new.name in ctx.udfs:
        m = ctx.udfs[new.name][0]
    elif isinstance(new, A.Column) and new.name.startswith("__m"):
        m = next((s.members[new.name] for s in ctx.scans if new.name in s.members), None)
    elif isinstance(new, A.Column):
        cols = [s.spec.column(new.name) for sc in _visible(scope) for s in sc.scans
                if new.table is None or new.table.lower() == s.alias.lower()]
        cols = [c for c in cols if c is not None]
        return bool(cols) and all(str(c.type) == "uint64" for c in cols)
    return m is not None and _is_address_member(m)


def _rewrite_join_on(item, fn):
    if isinstance(item, A.Join):
        return item.replace(left=_rewrite_join_on(item.left, fn),
                            right=_rewrite_join_on(item.right, fn),
                            on=rewrite(item.on, fn))
    return item


def _visible(scope: Scope | None):
    while scope is not None:
        yield scope
        scope = scope.parent


def _column(node: A.Column, ctx: Ctx, scope: Scope, aliases: set[str]):
    name = node.name
    if node.table is not None:
        t = node.table.lower()
        for sc in _visible(scope):
            for alias, s in sc.relations:
                if alias == t:
                    if s is None:
                        return node
                    col = s.spec.column(name)
                    if col is None:
                        # `tasks.comm` style is a column; `alias.member` of the
                        # object column is not: report the table's columns.
                        raise error(f"unknown column '{name}' in {s.table}"
                                    f"{suggest(name, s.spec.column_names)}", ctx, node)
                    s.use(col.name)
                    return node
        # not a relation: maybe `objcol.member` (task.pid)
        for sc in _visible(scope):
            for alias, s in sc.relations:
                if s is not None and s.spec.object_column and \
                        s.spec.object_column.lower() == t:
                    path = A.MemberPath(A.Column(s.spec.object_column, span=node.span),
                                        (('.', name),), span=node.span)
                    return _member(path, ctx, scope)
        if scope.closed:
            raise error(f"unknown table or object '{node.table}'", ctx, node)
        return node
    # unqualified
    found = False
    for sc in _visible(scope):
        for alias, s in sc.relations:
            if s is not None:
                col = s.spec.column(name)
                if col is not None:
                    s.use(col.name)
                    found = True
        if found:
            return node
    if name.lower() in aliases or not scope.closed:
        return node
    names = [c for s in scope.scans for c in s.spec.column_names]
    tables = ", ".join(sorted({s.table for s in scope.scans})) or "the query"
    raise error(f"unknown column '{name}' in {tables}{suggest(name, names)}", ctx, node)


def _cast_type(node: A.Cast, ctx: Ctx, kernel):
    """The C type of ``CAST(x AS 'struct file *')``: it must name a pointer."""
    text = node.type_text
    try:
        t = kernel.types.find_type(text)
    except LookupError as e:
        raise error(f"unknown C type '{text}': {e}", ctx, node) from None
    if not t.is_pointer():
        raise error(f"CAST to '{text}': cast addresses to a pointer type, e.g. '{text} *'",
                    ctx, node)
    return t


def _c_cast(node: A.Cast, ctx: Ctx, scope: Scope, fn):
    """A bare C cast: the address itself (the type is checked now)."""
    kernel = _one_kernel(ctx, node)
    _cast_type(node, ctx, kernel)
    return A.Cast(rewrite(node.expr, fn), "UBIGINT", span=node.span)


def _one_kernel(ctx: Ctx, node):
    kernel = ctx.env.kernel(None)
    if kernel is None:
        raise error("C types need one open dump (name a table's object column to pick "
                    "a dump)", ctx, node)
    return kernel


def _member_of_cast(node: A.MemberPath, ctx: Ctx, scope: Scope, fn):
    """``CAST(x AS 'struct file *')->f_pos``: a DuckDB function that reads the
    compiled path from the computed address."""
    base = node.base
    kernel = _one_kernel(ctx, node)
    _cast_type(base, ctx, kernel)
    text = ctx.source[node.span[0]:node.span[1]]
    compiled = compile_path(kernel.types, base.type_text, node.steps, text, ctx.source,
                            node.span)
    name = f"kql_read_{len(ctx.udfs)}"
    m = MemberColumn(name=name, text=text, type=compiled.arrow_type,
                     fn=compiled.reader(kernel), c_type=compiled.c_type)
    ctx.udfs[name] = (m, None)
    return A.FuncCall(name, (A.Cast(rewrite(base.expr, fn), "UBIGINT", span=base.span),),
                      span=node.span)


def _member(node: A.MemberPath, ctx: Ctx, scope: Scope, fn=None):
    base = node.base
    if isinstance(base, A.Cast) and base.c_type:
        return _member_of_cast(node, ctx, scope, fn)
    text = ctx.source[node.span[0]:node.span[1]]
    if not isinstance(base, A.Column):
        if not node.has_arrow():  # f(x).a.b: DuckDB's struct fields
            return node.replace(base=rewrite(base, fn))
        raise error(f"{text}: member paths need an object column or a C cast "
                    "(CAST(x AS 'struct file *')->f_pos); for DuckDB's JSON arrow put the "
                    "key in quotes (x->'key')", ctx, node)
    target = _object_scan(base, scope)
    if target is None:
        if not node.has_arrow():
            # a.b.c on a value that is not an object: DuckDB's struct field access
            return node.replace(base=rewrite(base, fn))
        objs = sorted({s.spec.object_column for s in scope.scans if s.spec.object_column})
        hint = f" (object columns here: {', '.join(objs)})" if objs else ""
        raise error(f"'{base.name}' is not an object column{hint}: '{text}' reads as a member "
                    f"path; for DuckDB's JSON arrow quote the key ({base.name}->'key'), for a "
                    f"lambda write 'lambda x: …' or put spaces around '->'", ctx, base)
    kernel = ctx.env.kernel(target.dump)
    if kernel is None:
        raise error(f"{text}: member paths need an open dump", ctx, node)
    compiled = compile_path(kernel.types, target.object_type, node.steps, text,
                            ctx.source, node.span)
    key = repr(node.steps)  # the same path on the same scan is read once
    for m in target.members.values():
        if m.key == key:
            break
    else:
        m = MemberColumn(name=f"__m{sum(len(s.members) for s in ctx.scans)}",
                         text=text, type=compiled.arrow_type, fn=None, c_type=compiled.c_type,
                         key=key)
        getter = target.spec.column(target.spec.object_column).fn
        read = compiled.reader(kernel)
        m.fn = lambda row, _g=getter, _r=read: _r(_g(row))
        target.members[m.name] = m
    return A.Column(m.name, target.alias, span=node.span)


# ---------------------------------------------------------------- pushdowns

def _conjuncts(e):
    if isinstance(e, A.BinaryOp) and e.op == "AND":
        yield from _conjuncts(e.left)
        yield from _conjuncts(e.right)
    elif e is not None:
        yield e


def _key_predicate(e, scope: Scope):
    """(scan, column, values) for ``col = const`` / ``col IN (consts)``."""
    if isinstance(e, A.BinaryOp) and e.op == "=":
        col, val = e.left, e.right
        if not isinstance(col, A.Column):
            col, val = val, col
        items = (val,)
    elif isinstance(e, A.InList) and not e.negated:
        col, items = e.expr, e.items
    else:
        return None
    if not isinstance(col, A.Column):
        return None
    values = []
    for v in items:
        if isinstance(v, (A.Literal, A.HexLiteral)) and isinstance(v.value, (int, str)) \
                and not isinstance(v.value, bool):
            values.append(v.value)
        else:
            return None
    if len({type(v) for v in values}) > 1:
        return None
    hits = []
    for alias, s in scope.relations:
        if s is None or (col.table is not None and col.table.lower() != alias):
            continue
        c = s.spec.column(col.name)
        # only values of the column's own kind (pid = '1' is DuckDB's to cast)
        if c is not None and c.name in s.spec.lookups and \
                isinstance(values[0], str) == (str(c.type) == "string"):
            hits.append((s, c.name))
    if len(hits) != 1 or hits[0][0].alias.lower() in scope.outer_join_aliases:
        return None
    return hits[0][0], hits[0][1], values


def push_predicates(stmt, ctx: Ctx):
    for node in _selects(stmt):
        scope = ctx.scopes.get(id(node))
        if scope is None:
            continue
        for c in _conjuncts(node.where):
            hit = _key_predicate(c, scope)
            if hit:
                scan, col, values = hit
                if scan.keys and col not in scan.keys:
                    continue  # one lookup per scan; DuckDB applies the rest
                if col in scan.keys:
                    values = [v for v in scan.keys[col] if v in values]
                scan.keys[col] = sorted(set(values))
    return stmt


def _selects(stmt):
    for n in stmt.walk():
        if isinstance(n, A.Select):
            yield n


# Functions known to be scalar (row by row): a LIMIT may stop the scan early
# under them.  Any other function might aggregate (DuckDB has hundreds), so
# a LIMIT is not pushed below it.
SCALAR_FUNCTIONS = frozenset(FUNCTIONS) | frozenset("""
lower upper length strlen substr substring concat coalesce
ifnull nullif abs round floor ceil greatest least trim ltrim rtrim replace contains
starts_with ends_with prefix suffix regexp_matches regexp_replace regexp_extract
left right lpad rpad reverse repeat split_part string_split len array_length
list_contains list_extract list_slice array_to_string list_aggregate to_hex
""".split())


def _has_aggregate(items) -> bool:
    """Could these items need more than one row at a time (an aggregate, a
    window, or a function not known to be scalar)?"""
    for it in items:
        for n in it.walk():
            if isinstance(n, A.FuncCall) and (n.name not in SCALAR_FUNCTIONS
                                              or n.window is not None):
                return True
    return False


def _int_literal(e) -> int | None:
    if isinstance(e, (A.Literal, A.HexLiteral)) and isinstance(e.value, int) \
            and not isinstance(e.value, bool) and e.value >= 0:
        return e.value
    return None


def push_limits(stmt, ctx: Ctx):
    body = stmt.statement if isinstance(stmt, A.Explain) else stmt
    if not isinstance(body, A.Select):
        return stmt
    sel = body
    if len(sel.from_) != 1 or not isinstance(sel.from_[0], A.TableRef):
        return stmt
    scope = ctx.scopes.get(id(sel))
    if scope is None or not scope.scans or len(scope.relations) != 1:
        return stmt
    scan = scope.scans[0]
    if sel.group_by or sel.group_by_all or sel.having or sel.order_by or sel.distinct \
            or sel.qualify is not None:
        return stmt
    limit = _int_literal(sel.limit)
    offset = 0 if sel.offset is None else _int_literal(sel.offset)
    if _has_aggregate(sel.items) or limit is None or offset is None:
        return stmt
    # a WHERE is fine only if it is entirely a pushed key lookup
    if sel.where is not None and not _where_is_pushed(sel.where, scope):
        return stmt
    scan.limit = limit + offset
    return stmt


def _where_is_pushed(where, scope) -> bool:
    """Is the WHERE nothing but key predicates on the one column the scan
    looks up (so the lookup's rows are exactly the answer)?"""
    hits = [_key_predicate(c, scope) for c in _conjuncts(where)]
    if not hits or not all(hits):
        return False
    if len({(id(scan), col) for scan, col, _ in hits}) != 1:
        return False
    scan, col, _ = hits[0]
    return col in scan.keys


def _function_dump(call: A.FuncCall, scope: Scope | None):
    """The dump a kql function call reads: that of the scans its arguments
    name, else that of its SELECT's scans, if there is just one (None: the
    default dump)."""
    if scope is None:
        return None
    dumps = set()
    for n in call.walk():
        if isinstance(n, A.Column):
            for alias, s in scope.relations:
                if s is not None and (alias == n.table.lower() if n.table is not None
                                      else s.spec.column(n.name) is not None):
                    dumps.add(s.dump)
    if len(dumps) != 1:
        dumps = {s.dump for s in scope.scans}
    return dumps.pop() if len(dumps) == 1 else None


def lower_functions(stmt, ctx: Ctx):
    """kql's functions (:mod:`kql.functions`) become the DuckDB UDFs the
    executor registers, bound to the dump their arguments come from:

    >>> from kql.grammar import parse_one
    >>> from kql.tables import catalog
    >>> q = "SELECT sym(t.task) FROM a.tasks t"
    >>> env = Env(catalog(), {"a": None, "b": None})
    >>> plan(parse_one(q), env, q).sql
    'SELECT kql_sym__a(t.task) AS "sym(t.task)" FROM __kql_scan_0 AS t'
    """
    dumps = {}
    for sel in _selects(stmt):  # outer SELECTs first: an inner one decides for its calls
        scope = ctx.scopes.get(id(sel))
        for n in sel.walk():
            if isinstance(n, A.FuncCall) and n.name in FUNCTIONS:
                dumps[id(n)] = _function_dump(n, scope)

    def fn(node):
        if isinstance(node, A.FuncCall) and node.name in FUNCTIONS:
            return node.replace(name=FUNCTIONS[node.name].udf(dumps.get(id(node))),
                                args=rewrite(node.args, fn))
        return None
    return rewrite(stmt, fn)


def hide_internal_columns(stmt, ctx: Ctx):
    """``*`` and ``COLUMNS(…)`` expand over what a scan really is: its
    columns in the table's order, never kql's own (member reads ``__m0``,
    ``__kql_row``) nor columns read only for another part of the query."""
    def hidden(scans) -> list[str]:
        out = []
        for s in scans:
            star = {c.lower() for c in s.spec.star_columns()}
            out += [c for c in s.columns if c.lower() not in star]
            out += list(s.members)
        return out

    def fix_star(star: A.Star, scope: Scope):
        scans = [s for alias, s in scope.relations if s is not None and
                 (star.table is None or star.table.lower() == alias)]
        for s in scans:  # the star's columns in the table's order
            order = {c.name: i for i, c in enumerate(s.spec.columns)}
            s.columns.sort(key=lambda c: order.get(c, len(order)))
        names = [n for n in hidden(scans) if n.lower() not in star.excluded()]
        # the user's EXCLUDE names columns kql did not read at all: drop those
        unread = {c.lower() for s in scans for c in s.spec.star_columns() if c not in s.columns}
        mods = []
        for kind, items in star.modifiers:
            if kind == "EXCLUDE":
                items = tuple(i for i in items if i.split(".")[-1].strip('"').lower() not in unread)
                if not items:
                    continue
            mods.append((kind, items))
        if not names:
            return star.replace(modifiers=tuple(mods)) if len(mods) != len(star.modifiers) \
                or mods != list(star.modifiers) else star
        quoted = tuple(A.quote_ident(n) for n in names)
        for i, (kind, items) in enumerate(mods):
            if kind == "EXCLUDE":
                mods[i] = (kind, items + quoted)
                break
        else:
            mods.insert(0, ("EXCLUDE", quoted))
        return star.replace(modifiers=tuple(mods))

    def this_level(scope: Scope):
        def fn(node):
            if isinstance(node, (A.Subquery, A.Exists, A.InSubquery, A.Select, A.SetOp,
                                 A.With, A.Values)):
                return node  # their own scope
            if isinstance(node, A.Star):
                return fix_star(node, scope)
            if isinstance(node, A.ColumnsExpr) and isinstance(node.arg, A.Literal):
                names = hidden(scope.scans)
                if not names:
                    return node
                # COLUMNS('re') over the real columns only
                c = "__kql_c"
                cond = A.BinaryOp("AND", A.FuncCall("regexp_matches", (A.Column(c), node.arg)),
                                  A.InList(A.Column(c), tuple(A.Literal(n, "string")
                                                              for n in names), negated=True))
                return node.replace(arg=A.Lambda((c,), cond, python=True))
            return None
        return fn

    def fix(node):
        if not isinstance(node, A.Select):
            return None
        scope = ctx.scopes.get(id(node))
        new = node
        if scope is not None:
            items = rewrite(node.items, this_level(scope))
            if items is not node.items:
                new = node.replace(items=items)
        changes = {}
        for f in ("items", "from_", "where", "group_by", "having", "qualify", "order_by",
                  "limit", "offset", "windows"):
            old = getattr(new, f)
            val = rewrite(old, fix)
            if val is not old:
                changes[f] = val
        if changes:
            new = new.replace(**changes)
        if new is not node and scope is not None:
            ctx.scopes[id(new)] = scope
        return new
    return rewrite(stmt, fix)


RULES = (qualify, hide_internal_columns, push_predicates, push_limits, lower_functions)


# ---------------------------------------------------------------- entry

def plan(stmt, env: Env, source: str) -> Plan:
    ctx = Ctx(env, source)
    explain = isinstance(stmt, A.Explain)
    stmt = name_outputs(stmt, source)
    for rule in RULES:
        stmt = rule(stmt, ctx)
    body = stmt.statement if explain else stmt
    p = Plan(statement=body, scans=ctx.scans, source=source, explain_only=explain,
             udfs=ctx.udfs)
    p.direct = _direct(body, ctx)
    p.address_columns = _address_columns(body, ctx)
    return p


def _direct(sel, ctx: Ctx):
    """Output columns if the query is a plain projection of one scan."""
    if not isinstance(sel, A.Select) or len(ctx.scans) != 1:
        return None
    scope = ctx.scopes.get(id(sel))
    if scope is None or len(scope.relations) != 1 or scope.scans != ctx.scans:
        return None
    if sel.group_by or sel.group_by_all or sel.having or sel.order_by or sel.distinct \
            or sel.qualify is not None:
        return None
    if sel.offset is not None:
        return None
    scan = ctx.scans[0]
    if sel.limit is not None and scan.limit is None:
        return None
    if sel.where is not None and not _where_is_pushed(sel.where, scope):
        return None
    out = []
    for it in sel.items:
        e = it.expr
        if isinstance(e, A.Star):
            if e.modifiers:
                return None
            # (the ones read: EXCLUDE (a, b) reads neither)
            out += [(c, c) for c in scan.spec.star_columns() if c in scan.columns]
        elif isinstance(e, A.Column):
            col = scan.spec.column(e.name)
            src = col.name if col else (e.name if e.name in scan.members else None)
            if src is None:
                return None
            out.append((src, it.alias or (col.name if col else e.name)))
        else:
            return None
    return out


def _address_columns(sel, ctx: Ctx) -> set[str]:
    from kql.tables.base import UINT64
    names = set()
    for s in ctx.scans:
        for c in s.spec.columns:
            if UINT64 == c.type:
                names.add(c.name.lower())
        for m in s.members.values():
            if _is_address_member(m):
                names.add(m.text.lower())
    for m, _dump in ctx.udfs.values():
        if _is_address_member(m):
            names.add(m.text.lower())
    names |= ctx.address_names
    return names
