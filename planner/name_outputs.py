"""Rule ``name_outputs``: an unaliased computed select item is named as the
user wrote it (``count(*)``, ``task->mm->map_count``), not as DuckDB spells
it.

>>> from kql.planner import Env, start
>>> p = start("SELECT pid, count(*), x + 1 AS y FROM t", Env({}))
>>> name_outputs(p).statement.to_sql()
'SELECT pid, count(*) AS "count(*)", x + 1 AS y FROM t'
>>> p.statement.to_sql()  # the input plan is unchanged
'SELECT pid, count(*), x + 1 AS y FROM t'
"""

from __future__ import annotations

from dataclasses import replace

from kql.grammar import ast as A

from .plan import Plan
from .rewrite import rewrite, rewrite_fields


def name_outputs(plan: Plan) -> Plan:
    return replace(plan, statement=name_items(plan.statement, plan.source))


def name_items(stmt, source: str):
    """``stmt`` with its SELECTs' unaliased computed items named from
    ``source`` (also used without a plan, by ``--parquet`` queries).

    >>> from kql.grammar import parse_one
    >>> q = "SELECT a FROM (SELECT upper(comm) FROM t)"
    >>> name_items(parse_one(q), q).to_sql()
    'SELECT a FROM (SELECT upper(comm) AS "upper(comm)" FROM t)'
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
            return rewrite_fields(node, fn)
        return None
    return rewrite(stmt, fn)
