"""Rule ``push_predicates``: ``key = N`` / ``key IN (…)`` in a WHERE, on a
table with a key lookup (tasks.pid → find_task), makes the scan a lookup
instead of a walk; DuckDB still applies the WHERE.

>>> from kql.planner import Env, start
>>> from kql.planner.qualify import qualify
>>> from kql.tables import catalog
>>> q = "SELECT comm FROM tasks WHERE pid IN (3, 1, 3) AND comm <> 'x'"
>>> p = qualify(start(q, Env(catalog())))
>>> push_predicates(p).scans[0].explain()
'Scan tasks: find_task(pid IN (1, 3))\\n    columns: comm, pid'
>>> p.scans[0].keys  # the input plan is unchanged
{}
>>> q = "SELECT comm FROM tasks WHERE pid = 1 OR pid = 2"
>>> push_predicates(qualify(start(q, Env(catalog())))).scans[0].keys
{}
"""

from __future__ import annotations

from dataclasses import replace

from kql.grammar import ast as A

from .context import Scope, replace_scans
from .plan import Plan
from .rewrite import conjuncts, selects


def push_predicates(plan: Plan) -> Plan:
    keys = {s.id: dict(s.keys) for s in plan.scans}  # the new scans' keys
    for node in selects(plan.statement):
        scope = plan.scope(node)
        if scope is None:
            continue
        for c in conjuncts(node.where):
            hit = key_predicate(c, scope)
            if hit:
                scan, col, values = hit
                have = keys[scan.id]
                if have and col not in have:
                    continue  # one lookup per scan; DuckDB applies the rest
                if col in have:
                    values = [v for v in have[col] if v in values]
                have[col] = sorted(set(values))
    return replace_scans(plan, {s.id: replace(s, keys=keys[s.id]) for s in plan.scans
                                if keys[s.id] != s.keys})


def key_predicate(e, scope: Scope):
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
    # only values of the column's own kind (pid = '1' is DuckDB's to cast)
    hits = [(s, c.name) for s, c in scope.columns_named(col)
            if c.name in s.spec.lookups and isinstance(values[0], str) == (str(c.type) == "string")]
    if len(hits) != 1 or hits[0][0].alias.lower() in scope.outer_join_aliases:
        return None
    return hits[0][0], hits[0][1], values


def where_is_pushed(where, scope: Scope) -> bool:
    """Is the WHERE nothing but key predicates on the one column the scan
    looks up (so the lookup's rows are exactly the answer)?"""
    hits = [key_predicate(c, scope) for c in conjuncts(where)]
    if not hits or not all(hits):
        return False
    if len({(id(scan), col) for scan, col, _ in hits}) != 1:
        return False
    scan, col, _ = hits[0]
    return col in scan.keys
