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
4. ``lower_functions``: kql's functions (sym, addr, container_of, hex) become
   the UDFs the executor registers in DuckDB.
5. ``direct``: a query that is only a projection of one scan needs no DuckDB.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any

from kql.errors import PlanError
from kql.grammar import ast as A

from .members import compile_path
from .plan import LateralRef, MemberColumn, Plan, Scan

# kql functions → the executor's DuckDB UDFs.
KQL_FUNCTIONS = {"sym": "kql_sym", "addr": "kql_addr", "container_of": "kql_container_of",
                 "hex": "kql_hex", "struct_text": "kql_struct_text"}


@dataclass
class Env:
    """What the planner may look at: the catalog and the open dumps.

    ``kernels`` maps a dump name (None = the default dump) to a Kernel whose
    types compile member paths."""

    catalog: dict
    kernels: dict[str | None, Any] = field(default_factory=dict)

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
    changes = {}
    import dataclasses
    for f in dataclasses.fields(value):
        if f.name == "span":
            continue
        old = getattr(value, f.name)
        new = rewrite(old, fn)
        if new is not old:
            changes[f.name] = new
    return value.replace(**changes) if changes else value


# ---------------------------------------------------------------- naming

def name_outputs(stmt, source: str):
    """Name unaliased computed select items as the user wrote them
    (``count(*)``, ``task->mm->map_count``) instead of DuckDB's spelling.

    >>> from kql.grammar import parse_one
    >>> q = "SELECT pid, count(*) FROM t"
    >>> name_outputs(parse_one(q), q).to_sql()
    'SELECT pid, count(*) AS "count(*)" FROM t'
    """
    def fn(node):
        if isinstance(node, A.SelectItem) and node.alias is None and \
                not isinstance(node.expr, (A.Star, A.Column)):
            return node.replace(alias=source[node.expr.span[0]:node.expr.span[1]],
                                expr=rewrite(node.expr, fn))
        return None
    return rewrite(stmt, fn)


# ---------------------------------------------------------------- qualify

def qualify(stmt, ctx: Ctx):
    for n in stmt.walk():
        if isinstance(n, (A.TableRef, A.TableFunction)) and n.dump is not None:
            ctx.dump_uses[n.dump] = ctx.dump_uses.get(n.dump, 0) + 1
    return _query(stmt, ctx, None, frozenset())


def _query(q, ctx: Ctx, parent: Scope | None, ctes: frozenset):
    if isinstance(q, A.Explain):
        return q.replace(statement=_query(q.statement, ctx, parent, ctes))
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
    raise error(f"unsupported statement {type(q).__name__}", ctx, q)


def _from_item(item, ctx: Ctx, scope: Scope, ctes: frozenset, outer: bool):
    if isinstance(item, A.TableRef):
        if item.dump is None and item.name.lower() in ctes:
            scope.relations.append(((item.alias or item.name).lower(), None))
            return item
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
        return item.replace(query=_query(item.query, ctx, scope.parent, ctes))
    if isinstance(item, A.Join):
        left_outer = item.kind in ("RIGHT", "FULL")
        right_outer = item.kind in ("LEFT", "FULL")
        left = _from_item(item.left, ctx, scope, ctes, outer or left_outer)
        right = _from_item(item.right, ctx, scope, ctes, outer or right_outer)
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

    def fn(node):
        if isinstance(node, (A.Subquery,)):
            return node.replace(query=_query(node.query, ctx, scope, ctes))
        if isinstance(node, A.Exists):
            return node.replace(query=_query(node.query, ctx, scope, ctes))
        if isinstance(node, A.InSubquery):
            return node.replace(expr=rewrite(node.expr, fn),
                                query=_query(node.query, ctx, scope, ctes))
        if isinstance(node, A.Star):
            for alias, s in scope.relations:
                if s is not None and (node.table is None or node.table.lower() == alias):
                    for c in s.spec.star_columns():
                        s.use(c)
            return node
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
    if not isinstance(base, A.Column):
        raise error("member paths need an object column or a C cast "
                    "(CAST(x AS 'struct file *')->f_pos)", ctx, node)
    target = None
    for sc in _visible(scope):
        for alias, s in sc.relations:
            if s is None or not s.spec.object_column:
                continue
            if base.table is not None and base.table.lower() != alias:
                continue
            if s.spec.object_column.lower() == base.name.lower():
                target = s
                break
        if target:
            break
    if target is None:
        objs = sorted({s.spec.object_column for s in scope.scans if s.spec.object_column})
        hint = f" (object columns here: {', '.join(objs)})" if objs else ""
        raise error(f"'{base.name}' is not an object column{hint}", ctx, base)
    kernel = ctx.env.kernel(target.dump)
    text = ctx.source[node.span[0]:node.span[1]]
    if kernel is None:
        raise error(f"{text}: member paths need an open dump", ctx, node)
    compiled = compile_path(kernel.types, target.object_type, node.steps, text,
                            ctx.source, node.span)
    key = (target.spec.object_column, repr(node.steps))
    for m in target.members.values():
        if m.text == key:
            break
    else:
        m = MemberColumn(name=f"__m{sum(len(s.members) for s in ctx.scans)}",
                         text=text, type=compiled.arrow_type, fn=None, c_type=compiled.c_type)
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
SCALAR_FUNCTIONS = frozenset("""
sym addr hex container_of struct_text lower upper length strlen substr substring concat coalesce
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


def lower_functions(stmt, ctx: Ctx):
    def fn(node):
        if isinstance(node, A.FuncCall) and node.name in KQL_FUNCTIONS:
            return node.replace(name=KQL_FUNCTIONS[node.name],
                                args=rewrite(node.args, fn))
        return None
    return rewrite(stmt, fn)


RULES = (qualify, push_predicates, push_limits, lower_functions)


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
            out += [(c, c) for c in scan.spec.star_columns()]
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
