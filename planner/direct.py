"""Rule ``direct``: a query that is only a projection of one scan (its
columns, renamed; a WHERE that is the scan's key lookup; a LIMIT the scan
applies) needs no DuckDB: ``Plan.direct`` lists the scan columns to output
under their names.

>>> from kql.planner import Env, start
>>> from kql.planner.push_predicates import push_predicates
>>> from kql.planner.qualify import qualify
>>> from kql.tables import catalog
>>> def planned(q):
...     return push_predicates(qualify(start(q, Env(catalog()))))
>>> direct(planned("SELECT comm AS name, pid FROM tasks WHERE pid = 1")).direct
[('comm', 'name'), ('pid', 'pid')]
>>> direct(planned("SELECT comm FROM tasks WHERE comm = 'init'")).direct is None
True
>>> direct(planned("SELECT upper(comm) FROM tasks")).direct is None
True
"""

from __future__ import annotations

from dataclasses import replace

from kql.grammar import ast as A

from .plan import Plan
from .push_limits import needs_all_rows
from .push_predicates import where_is_pushed


def direct(plan: Plan) -> Plan:
    return replace(plan, direct=_direct_columns(plan))


def _direct_columns(plan: Plan):
    """Output columns if the query is a plain projection of one scan."""
    sel = plan.statement
    if not isinstance(sel, A.Select) or len(plan.scans) != 1:
        return None
    scope = plan.scope(sel)
    if scope is None or len(scope.relations) != 1 or scope.scans != plan.scans:
        return None
    if needs_all_rows(sel):
        return None
    if sel.offset is not None:
        return None
    scan = plan.scans[0]
    if sel.limit is not None and scan.limit is None:
        return None
    if sel.where is not None and not where_is_pushed(sel.where, scope):
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
