"""kql.grammar: exact ASTs, exact error text, to_sql round trips."""

from __future__ import annotations

import logging

import pytest

from kql.errors import ParseError
from kql.grammar import parse, parse_one
from kql.grammar.ast import (CTE, Between, BinaryOp, Case, Cast, Column, Exists, Explain, Frame,
                             FrameBound, FuncCall, HexLiteral, InList, InSubquery, IsNull, Join,
                             Like, Literal, MemberPath, NotLowered, OrderItem, Select, SelectItem,
                             SetOp, Star, Subquery, Subscript, TableFunction, TableRef, UnaryOp,
                             Window, With)


# ------------------------------------------------------------------ helpers

def col(name, table=None):
    return Column(name, table)


def lit(value):
    if value is None:
        return Literal(None, "null")
    if isinstance(value, bool):
        return Literal(value, "bool")
    if isinstance(value, int):
        return Literal(value, "int")
    if isinstance(value, float):
        return Literal(value, "float")
    return Literal(value, "string")


def item(expr, alias=None):
    return SelectItem(expr, alias)


def sel(*items, **kw):
    return Select(tuple(i if isinstance(i, SelectItem) else item(i) for i in items), **kw)


def tab(name, alias=None, dump=None):
    return TableRef(name, dump, alias)


def op(o, left, right):
    return BinaryOp(o, left, right)


def one(text):
    return parse_one(text)


# ------------------------------------------------------------ basic queries

def test_simple_select():
    assert one("SELECT pid, comm, stack FROM tasks WHERE state = 1") == sel(
        col("pid"), col("comm"), col("stack"),
        from_=(tab("tasks"),),
        where=op("=", col("state"), lit(1)))


def test_keywords_case_insensitive_and_aliases():
    assert one("select Distinct pid AS p, comm c from Tasks t") == sel(
        item(col("pid"), "p"), item(col("comm"), "c"),
        from_=(tab("Tasks", "t"),), distinct=True)


def test_select_without_from_and_literals():
    assert one("SELECT 1, 2.5, 1e3, 'it''s', TRUE, false, NULL") == sel(
        lit(1), lit(2.5), lit(1000.0), lit("it's"), lit(True), lit(False), lit(None))


def test_stars():
    assert one("SELECT *, t.* FROM tasks t") == sel(
        Star(), Star("t"), from_=(tab("tasks", "t"),))


def test_quoted_identifiers():
    assert one('SELECT "weird ""x""", "select" FROM "My Table"') == sel(
        col('weird "x"'), col("select"), from_=(tab("My Table"),))


def test_non_reserved_keywords_are_names_where_no_keyword_fits():
    # vmas.end, stack_frames.offset, left()/right() functions
    assert one("SELECT start, end, offset, left(comm, 3), first FROM vmas ORDER BY end") == sel(
        col("start"), col("end"), col("offset"),
        FuncCall("left", (col("comm"), lit(3))), col("first"),
        from_=(tab("vmas"),), order_by=(OrderItem(col("end")),))


def test_where_group_having_order_limit_offset():
    q = ("SELECT comm, count(*) AS n FROM tasks WHERE NOT is_kthread GROUP BY comm "
         "HAVING count(*) > 1 ORDER BY n DESC, comm ASC NULLS FIRST LIMIT 10 OFFSET 5")
    assert one(q) == sel(
        col("comm"), item(FuncCall("count", star=True), "n"),
        from_=(tab("tasks"),),
        where=UnaryOp("NOT", col("is_kthread")),
        group_by=(col("comm"),),
        having=op(">", FuncCall("count", star=True), lit(1)),
        order_by=(OrderItem(col("n"), desc=True), OrderItem(col("comm"), nulls_first=True)),
        limit=lit(10), offset=lit(5))


def test_group_by_all_and_ordinals():
    assert one("SELECT comm, count(*) FROM tasks GROUP BY ALL ORDER BY 2 DESC NULLS LAST") == sel(
        col("comm"), FuncCall("count", star=True), from_=(tab("tasks"),), group_by_all=True,
        order_by=(OrderItem(lit(2), desc=True, nulls_first=False),))
    assert one("SELECT comm, st FROM tasks GROUP BY 1, 2").group_by == (lit(1), lit(2))


def test_offset_without_limit():
    assert one("SELECT pid FROM tasks OFFSET 3") == sel(col("pid"), from_=(tab("tasks"),),
                                                      offset=lit(3))


# ------------------------------------------------------------------- joins

def test_joins():
    q = ("SELECT t.pid, f.path FROM tasks t JOIN open_files f ON f.pid = t.pid "
         "LEFT OUTER JOIN sockets s USING (pid, fd) CROSS JOIN sys "
         "RIGHT JOIN modules m ON TRUE FULL JOIN mounts ON FALSE INNER JOIN cpus c ON c.cpu = t.cpu")
    j1 = Join("INNER", tab("tasks", "t"), tab("open_files", "f"),
              on=op("=", col("pid", "f"), col("pid", "t")))
    j2 = Join("LEFT", j1, tab("sockets", "s"), using=("pid", "fd"))
    j3 = Join("CROSS", j2, tab("sys"))
    j4 = Join("RIGHT", j3, tab("modules", "m"), on=lit(True))
    j5 = Join("FULL", j4, tab("mounts"), on=lit(False))
    j6 = Join("INNER", j5, tab("cpus", "c"), on=op("=", col("cpu", "c"), col("cpu", "t")))
    assert one(q) == sel(col("pid", "t"), col("path", "f"), from_=(j6,))


def test_comma_join_and_cross_dump_tables():
    q = "SELECT a.pid FROM a.tasks AS a, b.tasks b WHERE a.pid = b.pid"
    assert one(q) == sel(col("pid", "a"),
                         from_=(tab("tasks", "a", dump="a"), tab("tasks", "b", dump="b")),
                         where=op("=", col("pid", "a"), col("pid", "b")))


def test_table_functions():
    q = ("SELECT e.entry->pid FROM list_walk('init_task.tasks', 'struct task_struct', 'tasks') e, "
         "VAR('jiffies'), a.members('struct file', 0xffff888003a1b000) AS m")
    assert one(q) == sel(
        MemberPath(col("entry", "e"), (("->", "pid"),)),
        from_=(TableFunction("list_walk", (lit("init_task.tasks"), lit("struct task_struct"),
                                           lit("tasks")), alias="e"),
               TableFunction("var", (lit("jiffies"),)),
               TableFunction("members", (lit("struct file"), HexLiteral(0xffff888003a1b000)),
                             dump="a", alias="m")))


# -------------------------------------------------------------- subqueries

def test_subqueries():
    q = ("SELECT pid, (SELECT count(*) FROM open_files f WHERE f.pid = t.pid) AS nfiles "
         "FROM (SELECT * FROM tasks WHERE ppid = 1) AS t "
         "WHERE pid IN (SELECT pid FROM sockets) AND NOT EXISTS (SELECT 1 FROM vmas v WHERE v.pid = t.pid) "
         "AND tgid NOT IN (SELECT tgid FROM tasks)")
    count_files = sel(FuncCall("count", star=True), from_=(tab("open_files", "f"),),
                      where=op("=", col("pid", "f"), col("pid", "t")))
    inner = sel(Star(), from_=(tab("tasks"),), where=op("=", col("ppid"), lit(1)))
    exists = Exists(sel(lit(1), from_=(tab("vmas", "v"),),
                        where=op("=", col("pid", "v"), col("pid", "t"))))
    where = op("AND", op("AND",
                         InSubquery(col("pid"), sel(col("pid"), from_=(tab("sockets"),))),
                         UnaryOp("NOT", exists)),
               InSubquery(col("tgid"), sel(col("tgid"), from_=(tab("tasks"),)), negated=True))
    assert one(q) == sel(col("pid"), item(Subquery(count_files), "nfiles"),
                         from_=(Subquery(inner, "t"),), where=where)


def test_with_ctes():
    q = ("WITH RECURSIVE tree(pid, depth) AS (SELECT 1, 0), kids AS (SELECT pid FROM tasks) "
         "SELECT * FROM tree JOIN kids USING (pid) ORDER BY depth LIMIT 3")
    assert one(q) == With(
        (CTE("tree", sel(lit(1), lit(0)), ("pid", "depth")),
         CTE("kids", sel(col("pid"), from_=(tab("tasks"),)))),
        sel(Star(), from_=(Join("INNER", tab("tree"), tab("kids"), using=("pid",)),),
            order_by=(OrderItem(col("depth")),), limit=lit(3)),
        recursive=True)


def test_set_operations():
    q = "SELECT 1 UNION ALL SELECT 2 INTERSECT SELECT 3 EXCEPT SELECT 4 ORDER BY 1 LIMIT 2"
    assert one(q) == SetOp(
        "EXCEPT",
        SetOp("UNION", sel(lit(1)), SetOp("INTERSECT", sel(lit(2)), sel(lit(3))), all=True),
        sel(lit(4)), order_by=(OrderItem(lit(1)),), limit=lit(2))
    assert one("SELECT 1 UNION DISTINCT SELECT 2") == SetOp("UNION", sel(lit(1)), sel(lit(2)))


def test_explain_and_several_statements():
    stmts = parse("EXPLAIN SELECT 1; -- first\n;; EXPLAIN ANALYZE SELECT 2;\n")
    assert stmts == [Explain(sel(lit(1))), Explain(sel(lit(2)), analyze=True)]
    assert parse("") == []
    assert parse("  -- nothing\n /* at all */ ; ") == []


# ------------------------------------------------------------- expressions

def test_precedence_ladder():
    q = "SELECT a OR b AND NOT c = d + e * -f | g"
    assert one(q).items[0].expr == op(
        "OR", col("a"),
        op("AND", col("b"),
           UnaryOp("NOT", op("=", col("c"),
                             op("|", op("+", col("d"), op("*", col("e"), UnaryOp("-", col("f")))),
                                col("g"))))))


def test_left_associativity_and_parentheses():
    assert one("SELECT a - b - c, a - (b - c), a / b % c").items == (
        item(op("-", op("-", col("a"), col("b")), col("c"))),
        item(op("-", col("a"), op("-", col("b"), col("c")))),
        item(op("%", op("/", col("a"), col("b")), col("c"))),
    )


def test_comparisons_and_bit_operators():
    q = "SELECT a == 1, a != 2, a <> 3, a <= 4, a >= 5, a < 6, a > 7, f & 0x8 << 2, 'x' || comm, ~f"
    assert [i.expr for i in one(q).items] == [
        op("=", col("a"), lit(1)), op("<>", col("a"), lit(2)), op("<>", col("a"), lit(3)),
        op("<=", col("a"), lit(4)), op(">=", col("a"), lit(5)), op("<", col("a"), lit(6)),
        op(">", col("a"), lit(7)), op("<<", op("&", col("f"), HexLiteral(8)), lit(2)),
        op("||", lit("x"), col("comm")), UnaryOp("~", col("f")),
    ]


def test_predicates():
    q = ("SELECT * FROM t WHERE a IN (1, 2, 3) AND b NOT IN ('x') AND c BETWEEN 1 AND 2 + 3 "
         "AND d NOT BETWEEN 0 AND 1 AND e LIKE 'k%' AND f NOT ILIKE '%D' AND g IS NULL AND h IS NOT NULL")
    preds = [
        InList(col("a"), (lit(1), lit(2), lit(3))),
        InList(col("b"), (lit("x"),), negated=True),
        Between(col("c"), lit(1), op("+", lit(2), lit(3))),
        Between(col("d"), lit(0), lit(1), negated=True),
        Like(col("e"), lit("k%")),
        Like(col("f"), lit("%D"), negated=True, case_insensitive=True),
        IsNull(col("g")),
        IsNull(col("h"), negated=True),
    ]
    where = preds[0]
    for p in preds[1:]:
        where = op("AND", where, p)
    assert one(q).where == where


def test_case():
    q = "SELECT CASE WHEN state = 0 THEN 'R' WHEN state = 1 THEN 'S' ELSE '?' END, CASE st WHEN 'RU' THEN 1 END"
    assert [i.expr for i in one(q).items] == [
        Case(None, ((op("=", col("state"), lit(0)), lit("R")),
                    (op("=", col("state"), lit(1)), lit("S"))), lit("?")),
        Case(col("st"), ((lit("RU"), lit(1)),)),
    ]


def test_function_calls():
    q = ("SELECT count(*), COUNT(DISTINCT comm), now(), coalesce(a, b, 0), "
         "string_agg(comm, ',' ORDER BY pid DESC), sum(rss_bytes) FILTER (WHERE is_kthread)")
    assert [i.expr for i in one(q).items] == [
        FuncCall("count", star=True),
        FuncCall("count", (col("comm"),), distinct=True),
        FuncCall("now"),
        FuncCall("coalesce", (col("a"), col("b"), lit(0))),
        FuncCall("string_agg", (col("comm"), lit(",")),
                 order_by=(OrderItem(col("pid"), desc=True),)),
        FuncCall("sum", (col("rss_bytes"),), filter=col("is_kthread")),
    ]


def test_window_functions():
    q = ("SELECT row_number() OVER (PARTITION BY tgid, cpu ORDER BY pid), "
         "sum(rss_bytes) OVER (ORDER BY pid ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW), "
         "avg(x) OVER (RANGE BETWEEN 2 PRECEDING AND UNBOUNDED FOLLOWING), "
         "lag(x) OVER (), first_value(x) OVER (ROWS 3 FOLLOWING) FROM tasks")
    assert [i.expr for i in one(q).items] == [
        FuncCall("row_number", window=Window((col("tgid"), col("cpu")), (OrderItem(col("pid")),))),
        FuncCall("sum", (col("rss_bytes"),), window=Window(
            (), (OrderItem(col("pid")),),
            Frame("ROWS", FrameBound("UNBOUNDED PRECEDING"), FrameBound("CURRENT ROW")))),
        FuncCall("avg", (col("x"),), window=Window(frame=Frame(
            "RANGE", FrameBound("PRECEDING", lit(2)), FrameBound("UNBOUNDED FOLLOWING")))),
        FuncCall("lag", (col("x"),), window=Window()),
        FuncCall("first_value", (col("x"),), window=Window(frame=Frame(
            "ROWS", FrameBound("FOLLOWING", lit(3))))),
    ]


def test_sql_casts():
    q = "SELECT CAST(pid AS BIGINT), TRY_CAST(x AS decimal(10, 2)), pid::int, '5'::varchar"
    assert [i.expr for i in one(q).items] == [
        Cast(col("pid"), "BIGINT"),
        Cast(col("x"), "decimal(10, 2)", try_=True),  # types kept as written
        Cast(col("pid"), "int"),
        Cast(lit("5"), "varchar"),
    ]


def test_qualify_and_is_distinct_from():
    s = one("SELECT pid FROM tasks QUALIFY row_number() OVER () = 1 AND a IS NOT DISTINCT FROM b")
    assert s.qualify == op("AND", op("=", FuncCall("row_number", window=Window()), lit(1)),
                           op("IS NOT DISTINCT FROM", col("a"), col("b")))
    assert one("SELECT a IS DISTINCT FROM b").items[0].expr == op("IS DISTINCT FROM", col("a"), col("b"))


def test_comments():
    q = "SELECT /* the pid */ pid -- and nothing else\nFROM tasks /* done */"
    assert one(q) == sel(col("pid"), from_=(tab("tasks"),))


# --------------------------------------------------------- kernel extensions

def test_hex_literals():
    assert one("SELECT 0xffffffff81000000, 0X10, 0xFFFFFFFFFFFFFFFF").items == (
        item(HexLiteral(0xFFFFFFFF81000000)), item(HexLiteral(16)),
        item(HexLiteral(2**64 - 1)))


def test_member_paths():
    q = "SELECT task->mm->map_count, task->se.vruntime, t.task->comm, x.arr[3], task->files->fdt->fd[i + 1]->f_pos FROM tasks t"
    assert [i.expr for i in one(q).items] == [
        MemberPath(col("task"), (("->", "mm"), ("->", "map_count"))),
        MemberPath(col("task"), (("->", "se"), (".", "vruntime"))),
        MemberPath(col("task", "t"), (("->", "comm"),)),
        # x.arr[3] is DuckDB's subscript until the planner finds an object column
        Subscript(col("arr", "x"), lit(3)),
        MemberPath(col("task"), (("->", "files"), ("->", "fdt"), ("->", "fd"),
                                 ("[]", op("+", col("i"), lit(1))), ("->", "f_pos"))),
    ]


def test_member_names_may_be_keywords():
    q = "SELECT task->signal->rlim[0].end, x->in, page->lru.next FROM t"
    assert [i.expr for i in one(q).items] == [
        MemberPath(col("task"), (("->", "signal"), ("->", "rlim"), ("[]", lit(0)), (".", "end"))),
        MemberPath(col("x"), (("->", "in"),)),
        MemberPath(col("page"), (("->", "lru"), (".", "next"))),
    ]


def test_dotted_chains():
    # a.b is a Column; the planner decides whether 'a' is a relation or an object
    assert one("SELECT a.b.c, a.b").items == (
        item(MemberPath(col("b", "a"), ((".", "c"),))), item(col("b", "a")))


def test_c_casts_and_kernel_functions():
    q = ("SELECT CAST(addr AS 'struct file *')->f_path.dentry, x::'struct list_head *', "
         "container_of(head, 'struct task_struct', 'tasks')->pid, sym(pc), addr('init_task'), hex(flags) "
         "FROM t WHERE pc = addr('schedule') + 0x10")
    s = one(q)
    assert [i.expr for i in s.items] == [
        MemberPath(Cast(col("addr"), "struct file *", c_type=True),
                   (("->", "f_path"), (".", "dentry"))),
        Cast(col("x"), "struct list_head *", c_type=True),
        MemberPath(FuncCall("container_of", (col("head"), lit("struct task_struct"), lit("tasks"))),
                   (("->", "pid"),)),
        FuncCall("sym", (col("pc"),)),
        FuncCall("addr", (lit("init_task"),)),
        FuncCall("hex", (col("flags"),)),
    ]
    assert s.where == op("=", col("pc"), op("+", FuncCall("addr", (lit("schedule"),)), HexLiteral(16)))


def test_spans():
    q = "SELECT t.task->mm AS m, count(*) FROM a.tasks t WHERE pid IN (1, 2) ORDER BY 1 LIMIT 3"
    s = one(q)

    def text(node):
        return q[node.span[0]:node.span[1]]

    assert text(s) == q
    assert text(s.items[0]) == "t.task->mm AS m"
    assert text(s.items[0].expr) == "t.task->mm"
    assert text(s.items[0].expr.base) == "t.task"
    assert text(s.items[1].expr) == "count(*)"
    assert text(s.from_[0]) == "a.tasks t"
    assert text(s.where) == "pid IN (1, 2)"
    assert text(s.where.items[1]) == "2"
    assert text(s.order_by[0]) == "1"
    assert text(s.limit) == "3"
    stmts = parse("SELECT 1;\n  EXPLAIN SELECT x FROM y")
    assert [q2 for q2 in stmts[1:]] and stmts[1].span == (12, 35)


def test_every_node_has_a_span():
    q = ("WITH c AS (SELECT 1) SELECT DISTINCT a.b->c[0], CASE WHEN x THEN y END, "
         "CAST(z AS 'int *'), sum(q) OVER (PARTITION BY r ORDER BY s ROWS 1 PRECEDING) "
         "FROM c JOIN list_walk('a', 'b', 'c') w ON TRUE WHERE EXISTS (SELECT 1) "
         "GROUP BY ALL HAVING count(*) > 0 UNION SELECT 1, 2, 3, 4 ORDER BY 1")
    for node in one(q).walk():
        start, end = node.span
        assert 0 <= start < end <= len(q), node


# ------------------------------------------------------------------ to_sql

ROUND_TRIP = [
    "SELECT pid, comm FROM tasks WHERE state = 1",
    "SELECT DISTINCT comm AS c FROM tasks AS t WHERE NOT is_kthread AND (pid < 10 OR pid > 100)",
    "SELECT comm, count(*) FROM tasks GROUP BY ALL HAVING count(*) > 1 ORDER BY 2 DESC NULLS FIRST LIMIT 5 OFFSET 1",
    "SELECT a - (b - c), (a + b) * c, -(-a), NOT (a AND b), (a = b) IS NULL, a || 'x' || b",
    "SELECT * FROM a.tasks AS t LEFT JOIN b.tasks AS u USING (pid) CROSS JOIN sys",
    "SELECT x FROM t WHERE x IN (1, 2) AND y NOT IN (SELECT y FROM u) AND z NOT BETWEEN 1 AND 2",
    "SELECT CASE WHEN a THEN 'x' ELSE NULL END, CASE b WHEN 1 THEN 2 END FROM t",
    "SELECT count(DISTINCT comm), string_agg(comm, ',' ORDER BY pid), sum(x) FILTER (WHERE y) FROM t",
    "SELECT row_number() OVER (PARTITION BY a ORDER BY b DESC ROWS BETWEEN 1 PRECEDING AND CURRENT ROW) FROM t",
    "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 5) SELECT n FROM r",
    "SELECT 1 UNION SELECT 2 INTERSECT SELECT 3 EXCEPT SELECT 4 ORDER BY 1 LIMIT 2",
    "SELECT t.*, \"select\", \"a b\" FROM (SELECT 1 AS \"select\", 2 AS \"a b\") AS t",
    "SELECT CAST(x AS BIGINT), TRY_CAST(y AS DECIMAL(10, 2)) FROM t",
    "SELECT offset, \"end\", left(comm, 2) FROM stack_frames",
    "SELECT x FROM t WHERE EXISTS (SELECT 1) AND a LIKE 'x%' AND b NOT ILIKE '%y'",
    "EXPLAIN SELECT 1",
    "SELECT 1.5, 'it''s', 1e300",
    "SELECT pid, row_number() OVER (PARTITION BY comm ORDER BY pid) AS rn FROM tasks QUALIFY rn = 1",
    "SELECT a IS NOT DISTINCT FROM b, (a IS DISTINCT FROM b) IS NULL FROM t",
]


@pytest.mark.parametrize("q", ROUND_TRIP)
def test_round_trip(q):
    stmt = parse_one(q)
    sql = stmt.to_sql()
    assert parse_one(sql) == stmt, sql
    assert parse_one(sql).to_sql() == sql


def test_to_sql_text():
    assert one("select a+b*c as x from T where not a=b or c is not null").to_sql() == \
        "SELECT a + b * c AS x FROM T WHERE NOT a = b OR c IS NOT NULL"
    assert one("SELECT (a - b) - c, a - (b - c), (a | b) & c, a | (b & c)").to_sql() == \
        "SELECT a - b - c, a - (b - c), a | b & c, a | (b & c)"
    assert one("SELECT 0xffffffff81000000 + 0x10").to_sql() == \
        "SELECT CAST(18446744071578845184 AS UBIGINT) + 16"
    assert one("SELECT x::int, - -1, ~a + 1, ~(a + 1)").to_sql() == \
        "SELECT CAST(x AS int), -(-1), (~a) + 1, (~(a + 1))"
    assert one("SELECT * FROM t JOIN u ON t.a = u.a, v").to_sql() == \
        "SELECT * FROM t JOIN u ON t.a = u.a, v"


def test_to_sql_refuses_kernel_nodes():
    with pytest.raises(NotLowered, match="member path '->mm->map_count'"):
        one("SELECT task->mm->map_count FROM tasks").to_sql()
    with pytest.raises(NotLowered, match="C cast to 'struct file \\*'"):
        one("SELECT CAST(a AS 'struct file *') FROM t").to_sql()


def test_to_sql_runs_in_duckdb():
    duckdb = pytest.importorskip("duckdb")
    con = duckdb.connect()
    con.execute("CREATE TABLE t AS SELECT * FROM (VALUES (1, 2, 3, 'a'), (4, 5, 6, 'b')) v(a, b, c, s)")
    queries = {
        "SELECT a - (b - c), (a + b) * c, -(-a), a | 6 & 3, a % 3, s || 'x' FROM t ORDER BY a":
            [(2, 9, 1, 3, 1, "ax"), (5, 54, 4, 2, 1, "bx")],
        "SELECT count(*), count(DISTINCT s), sum(a) FILTER (WHERE b > 2) FROM t": [(2, 2, 4)],
        "SELECT a, row_number() OVER (ORDER BY a DESC) FROM t ORDER BY 1": [(1, 2), (4, 1)],
        "SELECT 0xffffffff81000000, 0x10 + 1": [(0xFFFFFFFF81000000, 17)],
        "SELECT NOT a = 1, a BETWEEN 1 AND 2, s LIKE 'a%', a IN (4, 5) FROM t ORDER BY a":
            [(False, True, True, False), (True, False, False, True)],
        "WITH r(n) AS (SELECT 1) SELECT n FROM r UNION ALL SELECT 2 ORDER BY 1": [(1,), (2,)],
        "SELECT CASE WHEN a > 1 THEN 'big' ELSE 'small' END FROM t ORDER BY a": [("small",), ("big",)],
        "SELECT a, row_number() OVER (ORDER BY a) AS rn FROM t QUALIFY rn = 2": [(4, 2)],
        "SELECT ~1 + 1, ~(1 + 1), -2 * 3, 1 << 2 + 1, 2 = 1 IS NULL, 1 IN (1) = TRUE":
            [(-1, -3, -6, 8, False, True)],
        "SELECT NULL IS NOT DISTINCT FROM NULL, 1 IS DISTINCT FROM 1 + 1, 1e999": [(True, True, float("inf"))],
    }
    for q, expected in queries.items():
        assert con.execute(one(q).to_sql()).fetchall() == expected, q


# ------------------------------------------------------------------ errors

def err(text):
    with pytest.raises(ParseError) as info:
        parse(text)
    return str(info.value)


def test_error_misspelled_keyword():
    assert err("SELECT pid, comm FORM tasks") == (
        "syntax error: unexpected 'FORM', expected one of: ',', FROM, WHERE, GROUP, HAVING, ORDER, … "
        "(line 1, column 18)\n"
        "  SELECT pid, comm FORM tasks\n"
        "                   ^^^^")
    assert err("SELECT pid FROM tasks WHER state = 1") == (
        "syntax error: unexpected 'WHER', expected one of: ',', WHERE, GROUP, HAVING, ORDER, LIMIT, … "
        "(line 1, column 23)\n"
        "  SELECT pid FROM tasks WHER state = 1\n"
        "                        ^^^^")


def test_error_reserved_keyword_as_column():
    assert err("SELECT FROM tasks") == (
        "syntax error: unexpected 'FROM', expected one of: '*', DISTINCT, ALL, expression "
        "(line 1, column 8)\n"
        "  SELECT FROM tasks\n"
        "         ^^^^")
    # DuckDB allows a trailing comma
    assert one("SELECT pid, FROM tasks") == one("SELECT pid FROM tasks")
    assert err("SELECT pid, , FROM tasks") == (
        "syntax error: unexpected 'FROM', expected one of: '*', expression (line 1, column 15)\n"
        "  SELECT pid, , FROM tasks\n"
        "                ^^^^")


def test_error_end_of_input():
    assert err("SELECT pid FROM") == (
        "syntax error: unexpected end of input, expected one of: '(', identifier (line 1, column 16)\n"
        "  SELECT pid FROM\n"
        "                 ^")
    assert err("SELECT pid FROM tasks WHERE\n  state = ") == (
        "syntax error: unexpected end of input, expected expression (line 2, column 10)\n"
        "    state = \n"
        "           ^")
    assert err("SELECT count(*) FROM t WHERE (a = 1") == (
        "syntax error: unexpected end of input, expected one of: ',', ')' (line 1, column 36)\n"
        "  SELECT count(*) FROM t WHERE (a = 1\n"
        "                                     ^")


def test_error_unexpected_tokens():
    assert err("SELECT pid FROM tasks GROUP pid") == (
        "syntax error: unexpected 'pid', expected BY (line 1, column 29)\n"
        "  SELECT pid FROM tasks GROUP pid\n"
        "                              ^^^")
    assert err("SELECT a FROM t JOIN u WHERE x") == (
        "syntax error: unexpected 'WHERE', expected one of: ON, USING (line 1, column 24)\n"
        "  SELECT a FROM t JOIN u WHERE x\n"
        "                         ^^^^^")
    assert err("SELECT 'a' 'b'") == (
        "syntax error: unexpected string 'b', expected one of: ',', FROM, WHERE, GROUP, HAVING, ORDER, … "
        "(line 1, column 12)\n"
        "  SELECT 'a' 'b'\n"
        "             ^^^")
    # `->` then a space: DuckDB's lambda / JSON arrow, which wants an expression
    assert err("SELECT task-> FROM tasks") == (
        "syntax error: unexpected 'FROM', expected expression (line 1, column 15)\n"
        "  SELECT task-> FROM tasks\n"
        "                ^^^^")
    assert err("SELECT a +* 2") == (
        "syntax error: unexpected '*', expected expression (line 1, column 11)\n"
        "  SELECT a +* 2\n"
        "            ^")


def test_error_in_second_statement():
    assert err("SELECT 1;\nSELECT x y z FROM t") == (
        "syntax error: unexpected 'z', expected one of: ',', FROM, WHERE, GROUP, HAVING, ORDER, … "
        "(line 2, column 12)\n"
        "  SELECT x y z FROM t\n"
        "             ^")


def test_error_unterminated():
    assert err("SELECT 'abc FROM t") == (
        "syntax error: unterminated string literal: missing closing ' (line 1, column 8)\n"
        "  SELECT 'abc FROM t\n"
        "         ^")
    assert err('SELECT "abc FROM t') == (
        'syntax error: unterminated quoted identifier: missing closing " (line 1, column 8)\n'
        '  SELECT "abc FROM t\n'
        "         ^")
    assert err("SELECT 1 /* comment\n more") == (
        "syntax error: unterminated comment: '/*' without '*/' (line 1, column 10)\n"
        "  SELECT 1 /* comment\n"
        "           ^")


def test_error_bad_character_and_literals():
    assert err("SELECT `a`") == (
        "syntax error: unexpected character '`' (line 1, column 8)\n"
        "  SELECT `a`\n"
        "         ^")
    assert err("SELECT 0x1ffffffffffffffff") == (
        "syntax error: hex literal 0x1ffffffffffffffff does not fit in 64 bits (line 1, column 8)\n"
        "  SELECT 0x1ffffffffffffffff\n"
        "         ^^^^^^^^^^^^^^^^^^^")
    assert err("SELECT CAST(x AS '  ')") == (
        "syntax error: empty C type in cast (line 1, column 18)\n"
        "  SELECT CAST(x AS '  ')\n"
        "                   ^^^^")


def test_error_misplaced_star():
    assert err("SELECT t.* + 1 FROM t") == (
        "syntax error: '*' is only allowed as a select item or in count(*) (line 1, column 8)\n"
        "  SELECT t.* + 1 FROM t\n"
        "         ^^^")
    assert err("SELECT f(x)->y.* FROM t") == (
        "syntax error: '.*' must follow a table name (line 1, column 16)\n"
        "  SELECT f(x)->y.* FROM t\n"
        "                 ^")


def test_parse_one():
    assert parse_one("SELECT 1;") == sel(lit(1))
    with pytest.raises(ParseError) as info:
        parse_one("SELECT 1; SELECT 2")
    assert str(info.value) == (
        "expected one statement, found several (line 1, column 11)\n"
        "  SELECT 1; SELECT 2\n"
        "            ^^^^^^^^")
    with pytest.raises(ParseError) as info:
        parse_one("  -- nothing")
    assert info.value.one_line() == \
        "empty query: expected a statement such as SELECT … (line 1, column 1)"


def test_errors_carry_position():
    with pytest.raises(ParseError) as info:
        parse("SELECT a FROM t WHERE")
    e = info.value
    assert (e.source, e.pos, e.exit_code) == ("SELECT a FROM t WHERE", 21, 1)


# ------------------------------------------------------------------ grammar

def test_grammar_has_no_conflicts(caplog):
    from lark import Lark, logger

    from kql.grammar.parser import GRAMMAR_PATH, KqlLexer

    with open(GRAMMAR_PATH) as f:
        grammar = f.read()
    old = logger.level
    logger.setLevel(logging.DEBUG)
    try:
        with caplog.at_level(logging.DEBUG, logger="lark"):
            Lark(grammar, parser="lalr", lexer=KqlLexer, debug=True)
    finally:
        logger.setLevel(old)
    conflicts = [r.getMessage() for r in caplog.records if "conflict" in r.getMessage().lower()]
    assert conflicts == []


def test_lexer_covers_every_terminal():
    from kql.grammar.parser import _OP_TERMINALS, RESERVED_TERMINALS, get_parser

    parser = get_parser()
    names = {t.name for t in parser.terminals}
    keywords = {t.name for t in parser.terminals
                if t.pattern.type == "str" and t.pattern.value[:1].isalpha()}
    produced = set(_OP_TERMINALS.values()) | keywords | {
        "HEX", "FLOAT", "INT", "STRING", "QUOTED_NAME", "NAME", "DOLLAR_STRING", "PREFIXED_STRING",
        "PARAM", "POSITIONAL_REF", "LAMBDA_ARROW", "VALUES_COMMA", "INTERVAL_UNIT", "PERCENT",
        "NON_QUERY", "UNPACK_STAR"}
    ignored = {"WS", "LINE_COMMENT", "BLOCK_COMMENT"}
    assert names - ignored <= produced
    assert set(_OP_TERMINALS.values()) <= names
    assert RESERVED_TERMINALS <= keywords


def test_quoted_column_is_marked():
    # for the planner: "bash" is probably meant as the string 'bash'
    where = one('SELECT * FROM tasks WHERE comm = "bash" AND t."x" = 1').where
    assert where.left.right.quoted and where.right.left.quoted
    assert not one("SELECT comm").items[0].expr.quoted


def test_long_chains_do_not_recurse():
    q = "SELECT * FROM t WHERE " + " OR ".join(f"pid = {i}" for i in range(2000))
    stmt = parse_one(q)
    assert stmt.to_sql() == q
    assert sum(1 for n in stmt.walk() if isinstance(n, Literal)) == 2000
    assert parse_one("SELECT " + " - ".join(["x"] * 2000)).items[0].expr.right == col("x")


def test_walk_find_all_transform():
    stmt = one("SELECT task->mm->map_count, pid + 1 FROM tasks WHERE comm = 'x' AND pid > 0x10")
    assert [type(n).__name__ for n in stmt.walk()][:6] == [
        "Select", "SelectItem", "MemberPath", "Column", "SelectItem", "BinaryOp"]
    assert [c.name for c in stmt.find_all(Column)] == ["task", "pid", "comm", "pid"]

    # a planner-style rule: member paths become columns, hex literals plain ints
    def lower(node):
        if isinstance(node, MemberPath):
            return Column("__m0", span=node.span)
        if isinstance(node, HexLiteral):
            return Literal(node.value, "int", span=node.span)
        return node

    lowered = stmt.transform(lower)
    assert lowered.to_sql() == \
        "SELECT __m0, pid + 1 FROM tasks WHERE comm = 'x' AND pid > 16"
    assert lowered.items[0].expr.span == stmt.items[0].expr.span
    assert lowered.from_ is stmt.from_  # untouched subtrees are shared
    assert stmt.transform(lambda n: n) is stmt


def test_parser_cache(tmp_path, monkeypatch):
    from kql.grammar import parser as P

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    built = P._build()                      # no cache yet: builds and saves
    files = list((tmp_path / "kql").iterdir())
    assert len(files) == 1 and files[0].name.startswith("grammar-")
    loaded = P._build()                     # from the cache
    q = "SELECT task->comm FROM tasks WHERE offset = 0x10"
    assert built.parse(q) == loaded.parse(q)
    files[0].write_bytes(b"garbage")        # a broken cache is rebuilt
    assert P._build().parse(q) == built.parse(q)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "file"))
    (tmp_path / "file").write_text("not a directory")
    assert P._build().parse(q) == built.parse(q)   # unwritable cache: still works
