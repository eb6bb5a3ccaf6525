"""qualify's columns: names resolved to the scans that hold them (and
recorded on those scans), ``*`` and ``COLUMNS(…)``, lambdas and list
comprehensions (their parameters are not columns), subscripts."""

from __future__ import annotations

from kql.grammar import ast as A

from .context import Ctx, Scope, error, suggest
from .qualify_members import qualify_member
from .rewrite import rewrite, rewrite_fields


def qualify_star(node: A.Star, ctx: Ctx, scope: Scope, fn):
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


def qualify_columns_expr(node: A.ColumnsExpr, ctx: Ctx, scope: Scope, fn):
    """``COLUMNS(*)`` is a star; ``COLUMNS('regex')`` reads the matching
    columns (Python's re stands in for DuckDB's RE2 to choose them); any
    other argument (a lambda, a list) reads every column."""
    if isinstance(node.arg, A.Star):
        return node.replace(arg=qualify_star(node.arg, ctx, scope, fn))
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


def is_arrow_lambda(node) -> bool:
    return isinstance(node, A.Lambda) and not node.python and node.lhs is None


def modern_lambdas(stmt):
    """``f(l, x -> x + 1)`` → ``f(l, lambda x: x + 1)``: DuckDB deprecates
    the arrow; as a function argument it can only be a lambda.  (Elsewhere
    ``a -> b`` is DuckDB's JSON operator: see :func:`qualify_lambda`.)"""
    def fn(node):
        if isinstance(node, A.FuncCall) and any(is_arrow_lambda(a) for a in node.args):
            args = tuple(a.replace(python=True) if is_arrow_lambda(a) else a for a in node.args)
            return rewrite_fields(node.replace(args=args), fn)
        return None
    return rewrite(stmt, fn)




def qualify_lambda(node: A.Lambda, fn):
    """A lambda's parameters are not columns: leave them (and ``x.field``)
    to DuckDB; resolve everything else in the body."""
    if is_arrow_lambda(node):
        # not a function argument: `j -> k` is DuckDB's JSON arrow on column j
        base = A.Column(node.params[0], span=node.span) if len(node.params) == 1 else None
        if base is not None:
            return node.replace(params=(), lhs=rewrite(base, fn), body=rewrite(node.body, fn))
    lhs = rewrite(node.lhs, fn) if node.lhs is not None else None
    return node.replace(body=rewrite(node.body, bound(node.params, fn)), lhs=lhs)


def bound(names, fn):
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
                return None  # let qualify_member report it
            return n
        return fn(n)
    return inner



def qualify_subscript(node: A.Subscript, ctx: Ctx, scope: Scope, fn):
    """``x[i]``: DuckDB's subscript, unless ``x`` is an object column (or a
    C cast): then it indexes the C object (``task[0]``, a member path)."""
    base = node.base
    if not node.slice and ((isinstance(base, A.Column) and scope.object_scan(base))
                           or (isinstance(base, A.Cast) and base.c_type)):
        path = A.MemberPath(base, (("[]", node.index),), span=node.span)
        return qualify_member(path, ctx, scope, fn)
    return node.replace(base=rewrite(base, fn), index=rewrite(node.index, fn),
                        stop=rewrite(node.stop, fn), step=rewrite(node.step, fn))



def qualify_column(node: A.Column, ctx: Ctx, scope: Scope, aliases: set[str]):
    name = node.name
    if node.table is not None:
        t = node.table.lower()
        for sc in scope.visible():
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
        for sc in scope.visible():
            for alias, s in sc.relations:
                if s is not None and s.spec.object_column and \
                        s.spec.object_column.lower() == t:
                    path = A.MemberPath(A.Column(s.spec.object_column, span=node.span),
                                        (('.', name),), span=node.span)
                    return qualify_member(path, ctx, scope)
        if scope.closed:
            raise error(f"unknown table or object '{node.table}'", ctx, node)
        return node
    # unqualified
    found = False
    for sc in scope.visible():
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


