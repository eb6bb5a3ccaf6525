"""DuckDB's dialect end to end (issue #12): every construct gives, through
kql, the answer DuckDB gives when it runs the same SQL directly over the same
tables (``kql.open(...).register(con, ...)``); kql's own errors are exact."""

from __future__ import annotations

import decimal

import duckdb
import pytest

import kql
from fixtures import fixture
from kql.errors import QueryError

# Each query must give the same columns and rows through kql as in DuckDB.
SAME_AS_DUCKDB = {
    # joins DuckDB has and kql used to take for aliases
    "semi_join": "SELECT pid FROM tasks SEMI JOIN modules ON tasks.pid = modules.refcount "
                 "ORDER BY pid",
    "anti_join": "SELECT count(*) AS n FROM tasks ANTI JOIN modules ON tasks.pid = modules.refcount",
    "asof_join": "SELECT t.task, m.name FROM tasks t ASOF JOIN modules m ON t.pid >= m.refcount "
                 "ORDER BY ALL",
    "natural_join": "SELECT count(*) AS n FROM tasks NATURAL JOIN (SELECT 1 AS pid) AS x",
    "export_state": "SELECT finalize(sum(pid) EXPORT_STATE) AS s FROM tasks",
    # literals keep their text and type
    "numbers": "SELECT 1_000_000 AS a, 0.6666666666666666666666666667 AS b, 1E2 AS c, 0.00 AS d, "
               "typeof(0.6666666666666666666666666667) AS tb, typeof(1E2) AS tc, "
               "typeof(0.00) AS td",
    "strings": "SELECT $$it's$$ AS a, $q$x$q$ AS b, E'a\\tb' AS e, 'x''y' AS q",
    # star and COLUMNS over the table's real columns
    "star": "SELECT * FROM modules ORDER BY name",
    "star_and_column": "SELECT *, name AS n2 FROM modules ORDER BY name",
    "star_modifiers": "SELECT * EXCLUDE (taint, taint_mask) REPLACE (size // 4096 AS size) "
                      "RENAME (name AS module_name) FROM modules ORDER BY module_name",
    "star_except": "SELECT * EXCEPT (stack, stack_sig) FROM tasks ORDER BY task",
    "star_like": "SELECT * LIKE 's%' FROM modules ORDER BY ALL",
    "qualified_star": "SELECT m.* EXCLUDE (module), t.pid FROM modules m JOIN tasks t "
                      "ON t.pid = m.refcount ORDER BY ALL",
    "columns_star": "SELECT COLUMNS(*) FROM modules ORDER BY name",
    "columns_regex": "SELECT COLUMNS('^(name|size)$') FROM modules ORDER BY name",
    "columns_lambda": "SELECT COLUMNS(lambda c: c LIKE '%size%') FROM modules ORDER BY ALL",
    "columns_unpack": "SELECT greatest(*COLUMNS('^(pid|tgid)$')) AS g FROM tasks ORDER BY task",
    # list subscripts and slices, not member paths
    "subscripts": "SELECT pid, stack[1] AS top, stack[1:3] AS top3, stack[-1] AS last, "
                  "list_reverse(stack)[1] AS bottom, stack[:2] AS head, comm[1:2] AS c2 "
                  "FROM tasks ORDER BY task",
    "lambdas": "SELECT list_filter(stack, lambda x: x LIKE '%sched%') AS f, "
               "list_transform(stack, x -> upper(x)) AS u, "
               "list_reduce([pid, 1, 2], lambda a, b: a + b) AS r FROM tasks ORDER BY task",
    "list_comprehension": "SELECT [upper(x) FOR x IN stack IF x LIKE '%sched%'] AS s, "
                          "[x || i::VARCHAR FOR x, i IN stack] AS t FROM tasks ORDER BY task",
    # literals of composite values
    "list_literals": "SELECT [pid, tgid] AS l, [1, 2, 3][2] AS two, [] AS e, ARRAY[pid] AS a "
                     "FROM tasks ORDER BY task",
    "struct_map_literals": "SELECT {'pid': pid, comm: comm} AS s, MAP {'a': 1} AS m, "
                           "{'x': 1}.x AS x, (pid, comm) AS r FROM tasks ORDER BY task",
    # FROM-first, VALUES, aliases with column lists
    "from_first": "FROM modules SELECT name ORDER BY name",
    "from_only": "FROM modules ORDER BY name",
    "values": "VALUES (1, 'a'), (2, 'b')",
    "values_join": "SELECT v.s, t.comm FROM (VALUES (1, 'a'), (2, 'b')) AS v(n, s) "
                   "JOIN tasks t ON t.pid = v.n ORDER BY ALL",
    "from_values": "FROM VALUES (1, 2), (3, 4) AS t(a, b) SELECT a + b AS s ORDER BY s",
    "column_aliases": "SELECT a, b FROM (SELECT pid, comm FROM tasks) AS t(a, b) ORDER BY a, b",
    "order_by_all": "SELECT name, size FROM modules ORDER BY ALL DESC",
    "table": "TABLE modules ORDER BY name",
    # typed literals, intervals, special forms
    "typed_literals": "SELECT DATE '1994-01-01' + INTERVAL '30' DAY AS d, "
                      "TIMESTAMP '2020-01-01 10:00:00' AS ts, INTERVAL 1 HOUR AS h, "
                      "INTERVAL '1 day' AS d2, INTERVAL (pid) MINUTE AS m FROM tasks ORDER BY task",
    "special_forms": "SELECT extract(year FROM DATE '1994-05-06') AS y, "
                     "substring(comm FROM 1 FOR 3) AS c3, position('a' IN comm) AS p, "
                     "trim(BOTH 'x' FROM 'xaxx') AS t, substring(comm, 2) AS s2 "
                     "FROM tasks ORDER BY task",
    "cast_types": "SELECT pid::DOUBLE PRECISION AS d, [pid]::INT[] AS li, "
                  "{'a': pid}::STRUCT(a BIGINT) AS s, CAST(comm AS CHARACTER VARYING) AS v, "
                  "TRY_CAST(comm AS INTEGER) AS i FROM tasks ORDER BY task",
    "named_args": "SELECT struct_pack(a := pid, b := comm) AS s FROM tasks ORDER BY task",
    "materialized_cte": "WITH c AS MATERIALIZED (SELECT pid FROM tasks), "
                        "d AS NOT MATERIALIZED (SELECT 1 AS one) SELECT count(*) AS n FROM c, d",
    "recursive_using_key": "WITH RECURSIVE r(n, v) USING KEY (n) AS (SELECT 1, 1 UNION "
                           "SELECT n + 1, v * 2 FROM r WHERE n < 5) SELECT * FROM r ORDER BY n",
    "collate": "SELECT name FROM modules ORDER BY name COLLATE NOCASE, name",
    "any_subquery": "SELECT pid FROM tasks WHERE pid = ANY (SELECT refcount FROM modules) "
                    "ORDER BY task",
    "paren_set_ops": "(SELECT pid FROM tasks WHERE pid < 3) UNION (SELECT refcount FROM modules) "
                     "ORDER BY 1",
    "union_by_name": "SELECT pid FROM tasks UNION ALL BY NAME SELECT size AS pid FROM modules "
                     "ORDER BY ALL",
    "pivot": "PIVOT (SELECT st, cpu FROM tasks) ON st USING count(*) GROUP BY cpu ORDER BY cpu",
    "pivot_in_from": "SELECT * FROM tasks PIVOT (count(*) FOR st IN ('RU', 'IN') GROUP BY cpu) "
                     "ORDER BY ALL",
    "unpivot": "UNPIVOT (SELECT pid, tgid, ppid FROM tasks WHERE pid < 3) ON tgid, ppid "
               "INTO NAME k VALUE v ORDER BY ALL",
    "method_call": "SELECT comm.upper() AS u, comm.len() AS n FROM tasks ORDER BY task",
    "similar_glob": "SELECT comm FROM tasks WHERE comm SIMILAR TO 'k.*' OR comm GLOB 'sys*' "
                    "OR comm ~~ '%d' ORDER BY task",
    "distinct_on": "SELECT DISTINCT ON (st) pid FROM tasks ORDER BY st, pid",
    # (columns read only by DISTINCT ON or a named window are read too)
    "named_window": "SELECT pid, row_number() OVER w AS rn, sum(pid) OVER (w ROWS 2 PRECEDING) "
                    "AS s FROM tasks WINDOW w AS (ORDER BY task, start_time_ns) ORDER BY task",
    "lateral": "SELECT t.pid, f.x FROM tasks t, LATERAL (SELECT t.pid * 2 AS x) f ORDER BY t.task",
    "grouping_sets": "SELECT st, cpu, count(*) AS n FROM tasks "
                     "GROUP BY GROUPING SETS ((st), (cpu), ()) ORDER BY ALL",
    "rollup": "SELECT st, cpu, count(*) AS n FROM tasks GROUP BY ROLLUP (st, cpu) ORDER BY ALL",
    "trailing_commas": "SELECT pid, comm, FROM tasks ORDER BY task",
    "is_true": "SELECT count(*) FILTER (WHERE is_kthread IS TRUE) AS k, "
               "count(*) FILTER (WHERE is_kthread IS NOT FALSE) AS nf FROM tasks",
    "ignore_nulls": "SELECT last_value(mm IGNORE NULLS) OVER (ORDER BY task) AS m FROM tasks "
                    "ORDER BY task",
    "operators": "SELECT pid // 2 AS h, 2 ** 3 AS p, -2 ^ 2 AS q, comm ^@ 'k' AS sw "
                 "FROM tasks ORDER BY task",
    "json_arrow": """SELECT '{"a": {"b": 1}}'::JSON -> '$.a' AS j, """
                  """'{"a": 2}'::JSON ->> 'a' AS k""",
    "qualify": "SELECT pid, comm FROM tasks QUALIFY row_number() OVER (ORDER BY task) <= 3 "
               "ORDER BY task",
    "limit_percent": "SELECT name FROM (SELECT name FROM modules ORDER BY name) LIMIT 50%",
    "fetch_first": "SELECT name FROM modules ORDER BY name OFFSET 1 ROWS FETCH FIRST 2 ROWS ONLY",
    "sample": "SELECT count(*) AS n FROM tasks USING SAMPLE 100%",
    "range": "SELECT * FROM range(3) t(i) ORDER BY i",
    "describe": "DESCRIBE SELECT pid, comm, stack FROM tasks",
}


@pytest.fixture(scope="module")
def sample():
    d = kql.open(fixture("sample").dump("kdump"))
    con = duckdb.connect()
    d.register(con, ["tasks", "modules"])
    con.execute("SET lambda_syntax = 'ENABLE_SINGLE_ARROW'")  # `x -> …` in DuckDB directly
    yield d, con
    con.close()
    d.close()


def _rows(table):
    return [tuple(_plain(v) for v in r.values()) for r in table.to_pylist()]


def _plain(v):
    return str(v) if isinstance(v, decimal.Decimal) else v


@pytest.mark.parametrize("query", SAME_AS_DUCKDB.values(), ids=SAME_AS_DUCKDB.keys())
def test_same_answer_as_duckdb(sample, query):
    d, con = sample
    got = d.query(query)
    want = con.sql(query).to_arrow_table()
    assert got.column_names == want.column_names
    assert _rows(got) == _rows(want)
    assert got.num_rows > 0


def test_literals_keep_type(sample):
    d, _ = sample
    r = d.query("SELECT 0.6666666666666666666666666667 AS b, 1E2 AS c, 0.00 AS d, "
                "1_000_000 AS e").to_pylist()[0]
    assert r == {"b": decimal.Decimal("0.6666666666666666666666666667"), "c": 100.0,
                 "d": decimal.Decimal("0.00"), "e": 1000000}
    assert isinstance(r["c"], float)


def _scan_columns(d, query):
    plan = d.session.execute(query)[-1].plan
    return [s.columns for s in plan.scans]


def test_star_reads_only_what_it_shows(sample):
    d, _ = sample
    # EXCLUDE: the excluded columns are never computed
    cols = _scan_columns(d, "SELECT * EXCLUDE (stack, stack_sig) FROM tasks")[0]
    assert "stack" not in cols and "pid" in cols
    assert _scan_columns(d, "SELECT COLUMNS('^s') FROM modules") == [["size", "state"]]
    assert _scan_columns(d, "SELECT count(*) FROM tasks") == [[]]


def test_star_never_shows_internal_columns(sample):
    d, con = sample
    names = con.sql("SELECT * FROM modules").columns
    # a member path and an extra column beside a star: neither joins the star
    t = d.query("SELECT module->name AS n, *, COLUMNS('a') FROM modules")
    assert t.column_names == ["n"] + names + [c for c in names if "a" in c]
    t = d.query("SELECT * FROM (SELECT module->name AS n, * FROM modules)")
    assert t.column_names == ["n"] + names
    t = d.query("SELECT COLUMNS('m') FROM modules WHERE module->state >= 0")
    assert t.column_names == [c for c in names if "m" in c]


def test_member_paths_beside_subscripts(sample):
    d, _ = sample
    r = d.query("SELECT pid, task->pid AS p, task[0].pid AS p0, stack[1] AS top, "
                "task->comm AS c, comm FROM tasks WHERE pid = 1").to_pylist()
    assert r and all(x["p"] == x["p0"] == x["pid"] == 1 and x["c"] == x["comm"] for x in r)
    assert all(isinstance(x["top"], str) for x in r)


ERRORS = [
    ("SELECT COLUMNS('zzz') FROM modules",
     "COLUMNS('zzz') matches no column of modules (line 1, column 8)\n"
     "  SELECT COLUMNS('zzz') FROM modules\n"
     "         ^^^^^^^^^^^^^^"),
    ("SELECT * FROM 'x.parquet'",
     "reading files needs --allow-files: 'x.parquet' is a file (line 1, column 15)\n"
     "  SELECT * FROM 'x.parquet'\n"
     "                ^^^^^^^^^^^"),
    ("SELECT * FROM read_csv('/etc/passwd')",
     "reading files needs --allow-files: read_csv() reads files (line 1, column 15)\n"
     "  SELECT * FROM read_csv('/etc/passwd')\n"
     "                ^^^^^^^^^^^^^^^^^^^^^^^"),
    ("CREATE TABLE x (a INT)",
     "kql runs queries only (SELECT, WITH, FROM, VALUES, EXPLAIN, …): CREATE is not a query "
     "(line 1, column 1)\n"
     "  CREATE TABLE x (a INT)\n"
     "  ^^^^^^"),
    ("SELECT 1; COPY tasks TO 'x.csv'",
     "kql runs queries only (SELECT, WITH, FROM, VALUES, EXPLAIN, …): COPY is not a query "
     "(line 1, column 11)\n"
     "  SELECT 1; COPY tasks TO 'x.csv'\n"
     "            ^^^^"),
    ("WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d",
     "kql runs queries only (SELECT, WITH, FROM, VALUES, EXPLAIN, …): DELETE is not a query "
     "(line 1, column 12)\n"
     "  WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d\n"
     "             ^^^^^^"),
    # `comm->x`: a member path on something that is not an object: both readings
    ("SELECT comm->x FROM tasks",
     "'comm' is not an object column (object columns here: task): 'comm->x' reads as a "
     "member path; for DuckDB's JSON arrow quote the key (comm->'key'), for a lambda "
     "write 'lambda x: …' or put spaces around '->' (line 1, column 8)\n"
     "  SELECT comm->x FROM tasks\n"
     "         ^^^^"),
    ("SELECT * FROM tasks AS t(a, b)",
     "column aliases (AS t(a, b)) on a kernel table: name columns in the select list "
     "instead (line 1, column 15)\n"
     "  SELECT * FROM tasks AS t(a, b)\n"
     "                ^^^^^^^^^^^^^^^^"),
]


@pytest.mark.parametrize("query,message", ERRORS)
def test_errors(sample, query, message):
    d, _ = sample
    with pytest.raises(QueryError) as e:
        d.query(query)
    assert str(e.value) == message


def test_parquet_mode_accepts_the_dialect(tmp_path):
    from kql.export import export, query_parquet
    export([fixture("sample").dump("kdump")], str(tmp_path), tables=["tasks", "modules"])
    d = kql.open(fixture("sample").dump("kdump"))
    try:
        for name in ("subscripts", "lambdas", "columns_regex", "star_modifiers", "from_first",
                     "struct_map_literals", "order_by_all", "numbers", "semi_join"):
            q = SAME_AS_DUCKDB[name]
            got = query_parquet(str(tmp_path), q)[-1]
            want = d.query(q)
            # exports add provenance columns; the query's own columns must agree
            cols = [c for c in want.column_names if c in got.column_names]
            assert cols == want.column_names, name
            assert _rows(got.select(cols)) == _rows(want), name
    finally:
        d.close()


def test_parquet_mode_reads_no_files(tmp_path):
    from kql.export import export, query_parquet
    export([fixture("sample").dump("kdump")], str(tmp_path), tables=["modules"])
    q = "SELECT count(*) FROM modules, read_csv('/etc/passwd')"
    with pytest.raises(QueryError) as e:
        query_parquet(str(tmp_path), q)
    assert str(e.value) == (
        "reading files needs --allow-files: read_csv('/etc/passwd') (line 1, column 31)\n"
        "  SELECT count(*) FROM modules, read_csv('/etc/passwd')\n"
        "                                ^^^^^^^^^^^^^^^^^^^^^^^")
