"""Rule ``push_limits``: a LIMIT over a single scan, with nothing that needs
all rows first (ORDER BY, an aggregate, a filter DuckDB applies), stops the
walk early: the scan reads LIMIT + OFFSET rows.

>>> from kql.planner import Env, start
>>> from kql.planner.qualify import qualify
>>> from kql.tables import catalog
>>> p = qualify(start("SELECT upper(comm) FROM tasks LIMIT 5 OFFSET 2", Env(catalog())))
>>> push_limits(p).scans[0].limit
7
>>> p.scans[0].limit is None  # the input plan is unchanged
True
>>> p = qualify(start("SELECT comm FROM tasks ORDER BY pid LIMIT 5", Env(catalog())))
>>> push_limits(p).scans[0].limit is None
True
"""

from __future__ import annotations

from dataclasses import replace

from kql.functions import FUNCTIONS
from kql.grammar import ast as A

from .context import replace_scans
from .plan import Plan
from .push_predicates import where_is_pushed

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


def push_limits(plan: Plan) -> Plan:
    sel = plan.statement
    if not isinstance(sel, A.Select):
        return plan
    if len(sel.from_) != 1 or not isinstance(sel.from_[0], A.TableRef):
        return plan
    scope = plan.scope(sel)
    if scope is None or not scope.scans or len(scope.relations) != 1:
        return plan
    scan = scope.scans[0]
    if needs_all_rows(sel):
        return plan
    limit = _int_literal(sel.limit)
    offset = 0 if sel.offset is None else _int_literal(sel.offset)
    if _has_aggregate(sel.items) or limit is None or offset is None:
        return plan
    # a WHERE is fine only if it is entirely a pushed key lookup
    if sel.where is not None and not where_is_pushed(sel.where, scope):
        return plan
    return replace_scans(plan, {scan.id: replace(scan, limit=limit + offset)})


def needs_all_rows(sel: A.Select) -> bool:
    """Does this SELECT group, sort, de-duplicate or filter groups (so no
    row can be output before the scan has read them all)?"""
    return bool(sel.group_by or sel.group_by_all or sel.having or sel.order_by or sel.distinct
                or sel.qualify is not None)


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
