"""kql's SQL functions (kql/functions.py): each is declared once and every
user of the registry sees it; each works per dump (two dumps, two kernels)."""

import pytest
from fixtures import fixture

from kql.execute import Session
from kql.functions import FUNCTIONS
from kql.kernel import Kernel


@pytest.fixture(scope="module")
def two_dumps():
    """The sample dump opened twice, as dumps `a` and `b` (`-d a=… -d b=…`)."""
    a, b = Kernel(fixture("sample").dump()), Kernel(fixture("sample").dump())
    yield a, b, Session({"a": a, "b": b})
    for k in (a, b):
        k.close()


def _rows(session, q):
    return session.query(q).to_pylist()


def test_functions_read_their_own_dump(two_dumps):
    """sym(), addr(), container_of() and struct_text() under -d a= -d b= read
    the dump their FROM names (they read no dump at all before: NULL)."""
    a, b, s = two_dumps
    where = a.symbol("init_task").address
    want = a.symbol_text(where)
    off = a.types.find_type("struct task_struct").offsetof("tasks")
    for dump in ("a", "b"):
        got = _rows(s, f"SELECT sym(addr('init_task')) AS s, addr('init_task') AS a, "
                       f"container_of(address + {off}, 'struct task_struct', 'tasks') AS c, "
                       f"struct_text('struct task_struct', address) IS NOT NULL AS t "
                       f"FROM {dump}.var('init_task')")
        assert got == [{"s": want, "a": where, "c": where, "t": True}], dump


def test_a_function_follows_its_argument_across_a_join(two_dumps):
    a, b, s = two_dumps
    want = a.symbol_text(a.symbol("init_task").address)
    q = ("SELECT sym(x.address) AS sa, sym(y.address) AS sb "
         "FROM a.var('init_task') x JOIN b.var('init_task') y ON x.name = y.name")
    assert _rows(s, q) == [{"sa": want, "sb": want}]
    assert s.execute("EXPLAIN " + q)[-1].explain.splitlines()[-1] == (
        "DuckDB: SELECT kql_sym__a(x.address) AS sa, kql_sym__b(y.address) AS sb "
        "FROM __kql_scan_0 AS x JOIN __kql_scan_1 AS y ON x.name = y.name")


def test_every_function_is_documented():
    from kql.describe import describe
    from kql.shell import FUNCTIONS as SHELL
    md, text = describe(None, markdown=True), describe(None)
    for f in FUNCTIONS.values():
        assert f"| {f.name}(" in md.split("## Functions")[1], f.name
        assert f"  {f.usage}" in text.split("SQL functions")[1], f.name
        assert SHELL[f.name] == (f.usage, f.doc)
        assert f.doc and f.doc == f.doc.strip() and "\n" not in f.doc
