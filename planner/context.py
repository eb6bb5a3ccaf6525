"""What the rules share: the environment, scopes, the plan before any rule,
and the two ways a rule returns a changed plan without touching its input
(:func:`replace_scans`, :func:`with_statement`)."""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field, replace
from typing import Any

from kql.errors import PlanError
from kql.grammar import ast as A

from .plan import Plan, Scan
from .rewrite import selects


@dataclass
class Env:
    """What the planner may look at: the catalog and the open dumps.

    ``kernels`` maps a dump name (None = the default dump) to a Kernel whose
    types compile member paths."""

    catalog: dict
    kernels: dict[str | None, Any] = field(default_factory=dict)
    allow_files: bool = False   # --allow-files: FROM 'x.csv', read_csv(...) go to DuckDB

    def kernel(self, dump: str | None):
        if dump in self.kernels:
            return self.kernels[dump]
        if dump is None and len(self.kernels) == 1:
            return next(iter(self.kernels.values()))
        return None


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

    def columns_named(self, col: A.Column) -> list:
        """``(scan, its Column)`` for each relation here that has the column
        ``col`` names (``t.pid``: t's only)."""
        out = []
        for alias, s in self.relations:
            if s is None or (col.table is not None and col.table.lower() != alias):
                continue
            c = s.spec.column(col.name)
            if c is not None:
                out.append((s, c))
        return out

    def visible(self):
        """This scope and the ones around it, innermost first."""
        scope = self
        while scope is not None:
            yield scope
            scope = scope.parent

    def object_scan(self, col: A.Column) -> Scan | None:
        """The scan whose object column ``col`` names, or None."""
        for sc in self.visible():
            for alias, s in sc.relations:
                if s is None or not s.spec.object_column:
                    continue
                if col.table is not None and col.table.lower() != alias:
                    continue
                if s.spec.object_column.lower() == col.name.lower():
                    return s
        return None


@dataclass
class Ctx:
    """qualify's working state while it builds the scans."""

    env: Env
    source: str
    scans: list[Scan] = field(default_factory=list)
    # per rewritten Select (by id): (the Select, the relations visible in its FROM)
    scopes: dict[int, tuple[A.Node, Scope]] = field(default_factory=dict)
    # how many FROM items name each dump (for default aliases)
    dump_uses: dict[str, int] = field(default_factory=dict)
    # member reads on computed addresses (see Plan.udfs)
    udfs: dict = field(default_factory=dict)
    # output names that hold addresses besides the tables' address columns
    address_names: set = field(default_factory=set)


def error(msg: str, ctx: Ctx, node: A.Node) -> PlanError:
    return PlanError(msg, ctx.source, node.span[0], node.span[1])


def suggest(name: str, names) -> str:
    close = difflib.get_close_matches(name.lower(), [n.lower() for n in names], n=1, cutoff=0.6)
    if close:
        orig = {n.lower(): n for n in names}[close[0]]
        return f"; did you mean '{orig}'?"
    return ""


def start(source: str, env: Env, stmt: A.Node | None = None) -> Plan:
    """The plan before any rule: the statement (``source`` parsed unless
    given; EXPLAIN's statement, marked ``explain_only``), no scans."""
    if stmt is None:
        from kql.grammar import parse_one
        stmt = parse_one(source)
    explain = isinstance(stmt, A.Explain)
    return Plan(statement=stmt.statement if explain else stmt, scans=[], source=source,
                explain_only=explain, env=env)


def replace_scans(plan: Plan, new: dict[str, Scan]) -> Plan:
    """``plan`` with the scans ``new`` names (by id) replaced, its scopes
    pointing at the new ones; ``plan`` itself is left as it was."""
    if not new:
        return plan
    copies: dict[int, Scope] = {}

    def copy(scope):
        if scope is None:
            return None
        if id(scope) not in copies:
            copies[id(scope)] = replace(
                scope, parent=copy(scope.parent),
                relations=[(a, None if s is None else new.get(s.id, s))
                           for a, s in scope.relations])
        return copies[id(scope)]
    return replace(plan, scans=[new.get(s.id, s) for s in plan.scans],
                   scopes={k: (node, copy(scope)) for k, (node, scope) in plan.scopes.items()})


def with_statement(plan: Plan, stmt: A.Node) -> Plan:
    """``plan`` with a rewritten statement, each SELECT keeping its scope
    (the rewrite keeps the SELECTs, in the same order)."""
    if stmt is plan.statement:
        return plan
    old, new = list(selects(plan.statement)), list(selects(stmt))
    assert len(old) == len(new), "a rule's rewrite added or removed a SELECT"
    scopes = {}
    for a, b in zip(old, new):
        scope = plan.scope(a)
        if scope is not None:
            scopes[id(b)] = (b, scope)
    return replace(plan, statement=stmt, scopes=scopes)
