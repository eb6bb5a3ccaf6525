"""Rule ``lower_functions``: kql's functions (:mod:`kql.functions`) become
the DuckDB UDFs the executor registers, one per dump, each call bound to the
dump its arguments come from:

>>> from kql.planner import Env, start
>>> from kql.planner.qualify import qualify
>>> from kql.tables import catalog
>>> q = "SELECT sym(t.task), hex(b.pid) FROM a.tasks t, b.tasks b"
>>> p = qualify(start(q, Env(catalog(), {"a": None, "b": None})))
>>> lower_functions(p).statement.to_sql()
'SELECT kql_sym__a(t.task), kql_hex(b.pid) FROM __kql_scan_0 AS t, __kql_scan_1 AS b'
>>> p.statement.to_sql()  # the input plan is unchanged
'SELECT sym(t.task), hex(b.pid) FROM __kql_scan_0 AS t, __kql_scan_1 AS b'
"""

from __future__ import annotations

from kql.functions import FUNCTIONS
from kql.grammar import ast as A

from .context import Scope, with_statement
from .plan import Plan
from .rewrite import rewrite, selects


def lower_functions(plan: Plan) -> Plan:
    dumps = {}
    for sel in selects(plan.statement):  # outer SELECTs first: an inner one decides for its calls
        scope = plan.scope(sel)
        for n in sel.walk():
            if isinstance(n, A.FuncCall) and n.name in FUNCTIONS:
                dumps[id(n)] = _function_dump(n, scope)

    def fn(node):
        if isinstance(node, A.FuncCall) and node.name in FUNCTIONS:
            return node.replace(name=FUNCTIONS[node.name].udf(dumps.get(id(node))),
                                args=rewrite(node.args, fn))
        return None
    return with_statement(plan, rewrite(plan.statement, fn))


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
