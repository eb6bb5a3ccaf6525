"""Rule ``qualify``: table names become scans (unknown names are errors
with a suggestion), columns are resolved to scans and recorded (projection
pushdown: a scan computes only the columns the query names), member paths on
object columns are compiled into reads (:mod:`.qualify_columns`,
:mod:`.qualify_members`).  The scans it returns are new; it records each
SELECT's scope (its relations) for the rules after it.

>>> from kql.planner import Env, start
>>> from kql.tables import catalog
>>> p = qualify(start("SELECT comm FROM tasks t WHERE t.ppid = 1", Env(catalog())))
>>> p.statement.to_sql()
'SELECT comm FROM __kql_scan_0 AS t WHERE t.ppid = 1'
>>> [(s.table, s.alias, s.columns) for s in p.scans]
[('tasks', 't', ['comm', 'ppid'])]
>>> [alias for alias, _scan in p.scope(p.statement).relations]
['t']
>>> qualify(start("SELECT comm FROM tsks", Env(catalog())))
Traceback (most recent call last):
kql.errors.PlanError: unknown table 'tsks'; did you mean 'tasks'? (line 1, column 18)
  SELECT comm FROM tsks
                   ^^^^
"""

from __future__ import annotations

from dataclasses import replace

from kql.duck import FILES_NEEDED as FILES_NEED  # one text for both refusals
from kql.grammar import ast as A

from .context import Ctx, Scope, error, suggest
from .plan import LateralRef, Plan, Scan
from .qualify_columns import (bound, is_arrow_lambda, modern_lambdas, qualify_column,
                              qualify_columns_expr, qualify_lambda, qualify_star,
                              qualify_subscript)
from .qualify_members import address_columns, is_pointer_read, qualify_c_cast, qualify_member
from .rewrite import rewrite, rewrite_fields


def qualify(plan: Plan) -> Plan:
    ctx = Ctx(plan.env, plan.source)
    stmt = plan.statement
    for n in stmt.walk():
        if isinstance(n, (A.TableRef, A.TableFunction)) and n.dump is not None:
            ctx.dump_uses[n.dump] = ctx.dump_uses.get(n.dump, 0) + 1
    stmt = _query(stmt, ctx, None, frozenset())
    return replace(plan, statement=stmt, scans=ctx.scans, scopes=ctx.scopes, udfs=ctx.udfs,
                   address_columns=address_columns(ctx))


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
    hits = [(scan, c.name) for scan, c in scope.columns_named(e)]
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
            return qualify_star(node, ctx, scope, fn)
        if isinstance(node, A.ColumnsExpr):
            return qualify_columns_expr(node, ctx, scope, fn)
        if isinstance(node, A.Lambda):
            return qualify_lambda(node, fn)
        if isinstance(node, A.Syntax) and node.params:  # [x FOR x IN l IF …]
            return rewrite_fields(node, bound(node.params, fn))
        if isinstance(node, A.FuncCall) and any(is_arrow_lambda(a) for a in node.args):
            return rewrite_fields(modern_lambdas(node), fn)
        if isinstance(node, A.Subscript):
            return qualify_subscript(node, ctx, scope, fn)
        if isinstance(node, A.MemberPath):
            return qualify_member(node, ctx, scope, fn)
        if isinstance(node, A.Column):
            return qualify_column(node, ctx, scope, aliases)
        if isinstance(node, A.Cast) and node.c_type:
            return qualify_c_cast(node, ctx, scope, fn)
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
        if item.alias and is_pointer_read(old.expr, item.expr, ctx, scope):
            ctx.address_names.add(item.alias.lower())  # a pointer: print in hex
        if item.alias is None and isinstance(old.expr, A.Column) and item.expr != old.expr:
            item = item.replace(alias=ctx.source[old.expr.span[0]:old.expr.span[1]])
        items.append(item)
    new = new.replace(items=tuple(items))
    ctx.scopes[id(new)] = (new, scope)  # later rules look scopes up by the new node
    return new


def _rewrite_join_on(item, fn):
    if isinstance(item, A.Join):
        return item.replace(left=_rewrite_join_on(item.left, fn),
                            right=_rewrite_join_on(item.right, fn),
                            on=rewrite(item.on, fn))
    return item

