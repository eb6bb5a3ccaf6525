"""Query AST → :class:`Plan` (kernel scans + the relational remainder).

:func:`plan` starts from the statement (no scans) and runs ``RULES`` in
order; each rule is a function ``rule(plan) -> plan`` in its own module,
which returns a new plan (new scans where it changes one) and leaves its
input as it was:

1. ``name_outputs``: unaliased computed select items are named as the user
   wrote them (``count(*)``), not as DuckDB spells them.
2. ``qualify``: table names become scans (unknown names are errors with a
   suggestion), columns are resolved to scans and recorded (projection
   pushdown: a scan computes only the columns the query names), member paths
   on object columns are compiled into reads.
3. ``hide_internal_columns``: ``*`` and ``COLUMNS(…)`` expand over the
   table's columns only, in its order (not member reads, not columns read
   for another part of the query).
4. ``push_predicates``: ``key = N`` / ``key IN (…)`` on a table with a key
   lookup (tasks.pid → find_task) becomes a lookup instead of a walk.
5. ``push_limits``: a LIMIT over a single scan, with nothing that needs all
   rows first, stops the walk early.
6. ``lower_functions``: kql's functions (``kql.functions.FUNCTIONS``) become
   the UDFs the executor registers in DuckDB, one per dump.
7. ``direct``: a query that is only a projection of one scan needs no DuckDB.

Each rule's doctest shows it alone; ``tests/data/planner/explain.txt`` holds
queries and the EXPLAIN they give on the sample dump, per rule.
"""

from __future__ import annotations

from kql.grammar import ast as A

from .context import Env, start
from .direct import direct
from .hide_internal_columns import hide_internal_columns
from .lower_functions import lower_functions
from .name_outputs import name_items, name_outputs
from .plan import Plan
from .push_limits import push_limits
from .push_predicates import push_predicates
from .qualify import FILES_NEED, qualify, reads_files
from .qualify_columns import modern_lambdas
from .rewrite import rewrite

__all__ = ["Env", "FILES_NEED", "Plan", "RULES", "modern_lambdas", "name_items", "plan",
           "reads_files", "rewrite", "start"]

RULES = (name_outputs, qualify, hide_internal_columns, push_predicates, push_limits,
         lower_functions, direct)


def plan(stmt: A.Node, env: Env, source: str) -> Plan:
    """The plan of one statement (``stmt``, parsed from ``source``).

    >>> from kql.grammar import parse_one
    >>> from kql.tables import catalog
    >>> q = "EXPLAIN SELECT comm FROM tasks WHERE pid = 1"
    >>> print(plan(parse_one(q), Env(catalog()), q).explain())
    Scan tasks: find_task(pid IN (1))
        columns: comm, pid
    Output: direct from the scan (no DuckDB)
    """
    p = start(source, env, stmt)
    for rule in RULES:
        p = rule(p)
    return p
