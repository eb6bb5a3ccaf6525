"""Planner: (query, expected EXPLAIN) pairs, and planning errors with carets.

The first cases use a small catalog of stand-in tables (no dump needed);
member paths are tested on the real sample dump, and so are the rule
fixtures (tests/data/planner/explain.txt: each rule's cases, query → EXPLAIN)."""

from pathlib import Path

import pyarrow as pa
import pytest

from kql.errors import PlanError
from kql.grammar import parse_one
from kql.planner import Env, plan
from kql.tables import catalog
from kql.tables.base import Column, TableSpec


def _lookup(ctx, values):
    return []


_lookup.__name__ = "find_task"

PROCS = TableSpec(
    name="procs", doc="stand-in for tasks",
    columns=(Column("task", pa.uint64(), "obj", lambda r: r, object_type="struct task_struct *"),
             Column("pid", pa.int64(), "pid", lambda r: r),
             Column("ppid", pa.int64(), "ppid", lambda r: r),
             Column("comm", pa.string(), "comm", lambda r: r),
             Column("cmdline", pa.string(), "expensive", lambda r: r, optional=True)),
    rows=lambda ctx: [], lookups={"pid": _lookup}, object_column="task",
    walk="walk init_task.tasks")
MODS = TableSpec(
    name="mods", doc="stand-in for modules",
    columns=(Column("name", pa.string(), "name", lambda r: r),
             Column("size", pa.int64(), "size", lambda r: r)),
    rows=lambda ctx: [], walk="walk modules")
ENV = Env({"procs": PROCS, "mods": MODS})


def explain(q: str) -> str:
    return plan(parse_one(q), ENV, q).explain()


CASES = [
    ("SELECT pid, comm FROM procs",
     "Scan procs: walk init_task.tasks\n    columns: pid, comm\n"
     "Output: direct from the scan (no DuckDB)"),
    ("SELECT comm FROM procs WHERE pid = 1",
     "Scan procs: find_task(pid IN (1))\n    columns: comm, pid\n"
     "Output: direct from the scan (no DuckDB)"),
    ("SELECT comm FROM procs WHERE pid IN (3, 1, 3) AND pid = 1",
     "Scan procs: find_task(pid IN (1))\n    columns: comm, pid\n"
     "Output: direct from the scan (no DuckDB)"),
    ("SELECT pid FROM procs LIMIT 5",
     "Scan procs: walk init_task.tasks\n    columns: pid\n    limit: 5\n"
     "Output: direct from the scan (no DuckDB)"),
    ("SELECT pid FROM procs LIMIT 5 OFFSET 2",
     "Scan procs: walk init_task.tasks\n    columns: pid\n    limit: 7\n"
     'DuckDB: SELECT pid FROM __kql_scan_0 AS procs LIMIT 5 OFFSET 2'),
    # ORDER BY, aggregates and non-key filters need every row: no limit pushed
    ("SELECT pid FROM procs ORDER BY pid LIMIT 5",
     "Scan procs: walk init_task.tasks\n    columns: pid\n"
     "DuckDB: SELECT pid FROM __kql_scan_0 AS procs ORDER BY pid LIMIT 5"),
    ("SELECT comm, count(*) FROM procs GROUP BY comm LIMIT 3",
     "Scan procs: walk init_task.tasks\n    columns: comm\n"
     'DuckDB: SELECT comm, count(*) AS "count(*)" FROM __kql_scan_0 AS procs GROUP BY comm LIMIT 3'),
    ("SELECT pid FROM procs WHERE comm = 'init' LIMIT 1",
     "Scan procs: walk init_task.tasks\n    columns: pid, comm\n"
     "DuckDB: SELECT pid FROM __kql_scan_0 AS procs WHERE comm = 'init' LIMIT 1"),
    # * leaves out optional (expensive) columns
    ("SELECT * FROM procs",
     "Scan procs: walk init_task.tasks\n    columns: task, pid, ppid, comm\n"
     "Output: direct from the scan (no DuckDB)"),
    # self-join: two scans, each with its own columns
    ("SELECT p.comm, count(*) FROM procs c JOIN procs p ON c.ppid = p.pid GROUP BY 1",
     "Scan procs AS c: walk init_task.tasks\n    columns: ppid\n"
     "Scan procs AS p: walk init_task.tasks\n    columns: comm, pid\n"
     'DuckDB: SELECT p.comm, count(*) AS "count(*)" FROM __kql_scan_0 AS c JOIN __kql_scan_1 AS p '
     "ON c.ppid = p.pid GROUP BY 1"),
    # a key filter on the nullable side of an outer join is not pushed
    ("SELECT c.pid FROM procs c LEFT JOIN procs p ON c.ppid = p.pid WHERE p.pid = 1",
     "Scan procs AS c: walk init_task.tasks\n    columns: pid, ppid\n"
     "Scan procs AS p: walk init_task.tasks\n    columns: pid\n"
     "DuckDB: SELECT c.pid FROM __kql_scan_0 AS c LEFT JOIN __kql_scan_1 AS p ON c.ppid = p.pid "
     "WHERE p.pid = 1"),
    ("WITH t AS (SELECT pid, comm FROM procs) SELECT comm FROM t WHERE pid = 1",
     "Scan procs: walk init_task.tasks\n    columns: pid, comm\n"
     "DuckDB: WITH t AS (SELECT pid, comm FROM __kql_scan_0 AS procs) SELECT comm FROM t WHERE pid = 1"),
    ("SELECT name FROM mods WHERE size > (SELECT count(*) FROM procs)",
     "Scan mods: walk modules\n    columns: name, size\n"
     "Scan procs: walk init_task.tasks\n    columns: (none)\n"
     'DuckDB: SELECT name FROM __kql_scan_0 AS mods WHERE size > (SELECT count(*) AS "count(*)" '
     "FROM __kql_scan_1 AS procs)"),
    # dump-qualified tables default to the dump's name as alias
    ("SELECT a.pid, b.pid FROM a.procs JOIN b.procs USING (comm)",
     "Scan a.procs AS a: walk init_task.tasks\n    columns: comm, pid\n"
     "Scan b.procs AS b: walk init_task.tasks\n    columns: comm, pid\n"
     "DuckDB: SELECT a.pid, b.pid FROM __kql_scan_0 AS a JOIN __kql_scan_1 AS b USING (comm)"),
    ("SELECT count(*) FROM a.procs, a.mods",
     "Scan a.procs AS a_procs: walk init_task.tasks\n    columns: (none)\n"
     "Scan a.mods AS a_mods: walk modules\n    columns: (none)\n"
     'DuckDB: SELECT count(*) AS "count(*)" FROM __kql_scan_0 AS a_procs, __kql_scan_1 AS a_mods'),
    ("SELECT hex(pid) FROM procs",
     "Scan procs: walk init_task.tasks\n    columns: pid\n"
     'DuckDB: SELECT kql_hex(pid) AS "hex(pid)" FROM __kql_scan_0 AS procs'),
]


@pytest.mark.parametrize("query,expected", CASES)
def test_explain(query, expected):
    assert explain(query) == expected


ERRORS = [
    ("SELECT pid FROM prcs",
     "unknown table 'prcs'; did you mean 'procs'? (line 1, column 17)\n"
     "  SELECT pid FROM prcs\n"
     "                  ^^^^"),
    ("SELECT pdi FROM procs",
     "unknown column 'pdi' in procs; did you mean 'pid'? (line 1, column 8)\n"
     "  SELECT pdi FROM procs\n"
     "         ^^^"),
    ("SELECT c.pidd FROM procs c",
     "unknown column 'pidd' in procs; did you mean 'pid'? (line 1, column 8)\n"
     "  SELECT c.pidd FROM procs c\n"
     "         ^^^^^^"),
    ("SELECT x.pid FROM procs",
     "unknown table or object 'x' (line 1, column 8)\n"
     "  SELECT x.pid FROM procs\n"
     "         ^^^^^"),
    ("SELECT comm->x FROM procs",
     "'comm' is not an object column (object columns here: task): 'comm->x' reads as a member "
     "path; for DuckDB's JSON arrow quote the key (comm->'key'), for a lambda write "
     "'lambda x: …' or put spaces around '->' (line 1, column 8)\n"
     "  SELECT comm->x FROM procs\n"
     "         ^^^^"),
    ("SELECT * FROM procs(1)",
     "unknown table function 'procs' (line 1, column 15)\n"
     "  SELECT * FROM procs(1)\n"
     "                ^^^^^^^^"),
]


@pytest.mark.parametrize("query,expected", ERRORS)
def test_plan_errors(query, expected):
    with pytest.raises(PlanError) as e:
        explain(query)
    assert str(e.value) == expected


# ---------------------------------------------------------------- real dump

@pytest.fixture(scope="module")
def sample_env():
    from fixtures import fixture
    from kql.kernel import Kernel
    k = Kernel(fixture("sample").dump())
    return Env(catalog(), {None: k})


def test_member_path_compiles_against_dump_types(sample_env):
    q = "SELECT value->mm->map_count, value->se.vruntime, value->comm FROM var('init_task')"
    p = plan(parse_one(q), sample_env, q)
    assert p.explain() == (
        "Scan var('init_task'): symbol lookup\n"
        "    columns: value->mm->map_count (int), value->se.vruntime (u64), "
        "value->comm (char [16])\n"
        "Output: direct from the scan (no DuckDB)")


def test_repeated_member_path_is_read_once(sample_env):
    q = ("EXPLAIN SELECT task->mm->map_count AS a, task->mm->map_count AS b FROM tasks "
         "WHERE task->mm->map_count > 0")
    assert plan(parse_one(q), sample_env, q).explain() == (
        "Scan tasks: walk init_task.tasks + thread groups (signal->thread_head) + "
        "per-CPU idle tasks (rq->idle)\n"
        "    columns: task->mm->map_count (int)\n"
        "DuckDB: SELECT tasks.__m0 AS a, tasks.__m0 AS b FROM __kql_scan_0 AS tasks "
        "WHERE tasks.__m0 > 0")


def test_bad_member_path_names_struct(sample_env):
    q = "SELECT value->se.vrntime FROM var('init_task')"
    with pytest.raises(PlanError) as e:
        plan(parse_one(q), sample_env, q)
    assert str(e.value) == (
        "value->se.vrntime: 'struct sched_entity' has no member 'vrntime' (line 1, column 8)\n"
        "  SELECT value->se.vrntime FROM var('init_task')\n"
        "         ^^^^^^^^^^^^^^^^^")


def test_c_cast_member_path_reads_through_a_function(sample_env):
    q = "SELECT CAST(address AS 'struct task_struct *')->se.vruntime AS v FROM var('init_task')"
    p = plan(parse_one(q), sample_env, q)
    assert p.explain() == (
        "Scan var('init_task'): symbol lookup\n"
        "    columns: address\n"
        "Read kql_read_0: CAST(address AS 'struct task_struct *')->se.vruntime (u64)\n"
        'DuckDB: SELECT kql_read_0(CAST(address AS UBIGINT)) AS v FROM __kql_scan_0 AS var')


@pytest.mark.parametrize("q,expected", [
    ("SELECT CAST(address AS 'struct nope *')->x FROM var('init_task')",
     "unknown C type 'struct nope *'"),
    ("SELECT CAST(address AS 'struct task_struct') FROM var('init_task')",
     "CAST to 'struct task_struct': cast addresses to a pointer type, e.g. "
     "'struct task_struct *'"),
])
def test_c_cast_errors(sample_env, q, expected):
    with pytest.raises(PlanError) as e:
        plan(parse_one(q), sample_env, q)
    assert e.value.message.startswith(expected)


# ---------------------------------------------------------------- rule fixtures

RULE_FIXTURES = Path(__file__).parent / "data" / "planner" / "explain.txt"


def read_rule_fixtures(path=RULE_FIXTURES):
    """``(name, query, expected EXPLAIN)`` from the fixture file: cases are
    separated by blank lines; each is a ``-- rule: what`` line, the query,
    ``----``, then the EXPLAIN the sample dump gives."""
    cases = []
    for block in path.read_text().strip().split("\n\n"):
        lines = block.split("\n")
        assert lines[0].startswith("-- "), f"a case starts with '-- rule: what': {block!r}"
        name = lines[0][3:]
        if "----" in lines:
            i = lines.index("----")
            query, expected = "\n".join(lines[1:i]), "\n".join(lines[i + 1:])
        else:  # not yet generated (see __main__ below)
            query, expected = "\n".join(lines[1:]), None
        cases.append((name, query, expected))
    return cases


@pytest.mark.parametrize("name,query,expected", read_rule_fixtures(),
                         ids=[f"{i}-{c[0].split(':')[0]}"
                              for i, c in enumerate(read_rule_fixtures())])
def test_rule_fixtures(sample_env, name, query, expected):
    """Each planner rule's cases (tests/data/planner/explain.txt) give the
    EXPLAIN written there, on the sample dump; no rule changes the plan it
    is given."""
    import kql.planner
    p = kql.planner.start(query, sample_env, parse_one(query))
    for rule in kql.planner.RULES:
        before = _snapshot(p)
        out = rule(p)
        assert _snapshot(p) == before, f"{rule.__name__} changed its input"
        p = out
    assert p.explain() == expected
    assert p.explain() == plan(parse_one(query), sample_env, query).explain()


def _snapshot(p):
    """What a rule could change in place in a plan."""
    scopes = [(k, node, [(a, s and s.id) for a, s in scope.relations], scope.parent,
               set(scope.outer_join_aliases)) for k, (node, scope) in p.scopes.items()]
    return (p.statement, p.direct, set(p.address_columns), dict(p.udfs), scopes,
            [(s, list(s.columns), {k: list(v) for k, v in s.keys.items()}, s.limit,
              dict(s.members), list(s.lateral), s.object_type) for s in p.scans])


def test_rules_are_documented_in_order():
    """The planner's docstring and ARCHITECTURE.md list exactly RULES."""
    import re

    import kql.planner
    rules = [r.__name__ for r in kql.planner.RULES]
    assert re.findall(r"^\d+\. ``(\w+)``", kql.planner.__doc__, re.M) == rules
    arch = (Path(__file__).parent.parent / "docs" / "ARCHITECTURE.md").read_text()
    assert re.findall(r"^\| `(\w+)` \|", arch, re.M) == rules
    names = {name for name, *_ in read_rule_fixtures()}
    assert {n.split(":")[0] for n in names} == set(rules)  # each rule has cases


if __name__ == "__main__":
    # python tests/test_planner.py: (re)write the expected EXPLAINs of the
    # rule fixtures from the planner as it is, to review with git diff
    import sys
    sys.path.insert(0, str(Path(__file__).parent))
    from fixtures import fixture
    from kql.kernel import Kernel
    env = Env(catalog(), {None: Kernel(fixture("sample").dump())})
    out = []
    for name, query, _ in read_rule_fixtures():
        out.append(f"-- {name}\n{query}\n----\n{plan(parse_one(query), env, query).explain()}")
    RULE_FIXTURES.write_text("\n\n".join(out) + "\n")
