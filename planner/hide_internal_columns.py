"""Rule ``hide_internal_columns``: ``*`` and ``COLUMNS(…)`` expand over what
a scan really is: its columns in the table's order, never kql's own (member
reads ``__m0``, ``__kql_row``) nor columns read only for another part of the
query.

>>> from kql.planner import Env, start
>>> from kql.planner.qualify import qualify
>>> from kql.tables import catalog
>>> q = "SELECT size, * FROM modules WHERE refcount > 0 AND taint IS NULL"
>>> p = qualify(start(q.replace("*", "* EXCLUDE (taint_mask, refcount)"), Env(catalog())))
>>> p.scans[0].columns
['size', 'module', 'name', 'base', 'state', 'taint', 'refcount']
>>> h = hide_internal_columns(p)
>>> h.statement.items[1].expr.to_sql()  # taint_mask was not read: not excluded
'* EXCLUDE (refcount)'
>>> h.scans[0].columns  # in the table's order
['module', 'name', 'base', 'size', 'refcount', 'state', 'taint']
>>> p.scans[0].columns  # the input plan is unchanged
['size', 'module', 'name', 'base', 'state', 'taint', 'refcount']
"""

from __future__ import annotations

from dataclasses import replace

from kql.grammar import ast as A

from .context import Scope, replace_scans, with_statement
from .plan import Plan
from .rewrite import rewrite


def hide_internal_columns(plan: Plan) -> Plan:
    # the scans' columns as this rule reorders them (the plan's stay as they are)
    columns = {s.id: list(s.columns) for s in plan.scans}

    def hidden(scans) -> list[str]:
        out = []
        for s in scans:
            star = {c.lower() for c in s.spec.star_columns()}
            out += [c for c in columns[s.id] if c.lower() not in star]
            out += list(s.members)
        return out

    def fix_star(star: A.Star, scope: Scope):
        scans = [s for alias, s in scope.relations if s is not None and
                 (star.table is None or star.table.lower() == alias)]
        for s in scans:  # the star's columns in the table's order
            order = {c.name: i for i, c in enumerate(s.spec.columns)}
            columns[s.id].sort(key=lambda c: order.get(c, len(order)))
        names = [n for n in hidden(scans) if n.lower() not in star.excluded()]
        # the user's EXCLUDE names columns kql did not read at all: drop those
        unread = {c.lower() for s in scans for c in s.spec.star_columns()
                  if c not in columns[s.id]}
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
        scope = plan.scope(node)
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
        return new

    out = with_statement(plan, rewrite(plan.statement, fix))
    return replace_scans(out, {s.id: replace(s, columns=columns[s.id]) for s in plan.scans
                               if columns[s.id] != s.columns})
