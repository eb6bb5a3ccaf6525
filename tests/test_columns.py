"""Scan results as Python columns (kql.tables.base.Columns), the lazy catalog,
and the direct CLI path that never imports pyarrow."""

import os
import subprocess
import sys

import pyarrow as pa
import pytest

from kql.errors import KqlError
from kql.tables import Catalog, catalog
from kql.tables.base import (ADDRESS, BOOL, FLOAT64, INT32, INT64, STRING, STRING_LIST,
                             Columns, arrow_type, list_of)


def test_column_types_equal_the_arrow_types_they_name():
    pairs = [(INT32, pa.int32()), (INT64, pa.int64()), (ADDRESS, pa.uint64()),
             (BOOL, pa.bool_()), (STRING, pa.string()), (FLOAT64, pa.float64()),
             (STRING_LIST, pa.list_(pa.string())), (list_of(INT64), pa.list_(pa.int64()))]
    for ours, theirs in pairs:
        assert ours == theirs and theirs == ours
        assert arrow_type(ours) == theirs and isinstance(arrow_type(ours), pa.DataType)
        assert str(ours) == str(theirs)
    assert INT32 != pa.int64() and ADDRESS != INT64
    assert arrow_type(pa.int8()) == pa.int8()


def _values_as_arrow_gives_them(types, data):
    c = Columns([f"c{i}" for i in range(len(types))], types, data, len(data[0]))
    got = [c.pylist(i) for i in range(len(types))]
    want = pa.Table.from_arrays([pa.array(d, type=arrow_type(t)) for t, d in zip(types, data)],
                                names=c.names).to_pydict()
    assert got == list(want.values())
    return c


def test_plain_values_pass_through_without_arrow():
    data = [[1, None, -5], ["a", None, "é"], [True, False, None], [1.5, None, 2.0],
            [["x", None], None, []], [0, 2**64 - 1, None]]
    c = _values_as_arrow_gives_them([INT32, STRING, BOOL, FLOAT64, STRING_LIST, ADDRESS], data)
    assert c._arrow is None                      # nothing needed pyarrow
    assert c.pylist(0) is data[0]


def test_values_arrow_would_convert_go_through_arrow():
    # an int in a float column comes back a float; a bool in an int column is refused
    c = _values_as_arrow_gives_them([INT64, FLOAT64], [[1, 2], [1, 2.5]])
    assert c._arrow is not None and c.pylist(1) == [1.0, 2.5]
    assert type(c.pylist(1)[0]) is float
    with pytest.raises(KqlError):
        Columns(["x"], [INT64], [[True]], 1).pylist(0)


@pytest.mark.parametrize("typ,values", [(INT32, [1 << 31]), (ADDRESS, [-1]),
                                        (STRING, ["\udcff"])])
def test_values_arrow_refuses_are_internal_errors(typ, values):
    c = Columns(["x"], [typ], [values], 1)
    c.where = "tasks"
    with pytest.raises(KqlError, match=r"internal error: column tasks\.x"):
        c.pylist(0)


def test_select_renames_and_repeats():
    c = Columns(["a", "b"], [INT32, STRING], [[1, 2], ["x", "y"]], 2)
    s = c.select([("b", "B"), ("a", "a"), ("b", "b2")])
    assert s.names == ["B", "a", "b2"]
    assert s.to_arrow().to_pydict() == {"B": ["x", "y"], "a": [1, 2], "b2": ["x", "y"]}


def test_lazy_catalog_agrees_with_the_full_one():
    full = dict(Catalog().items())
    assert full == dict(catalog().items())
    for name, spec in full.items():
        assert Catalog().get(name) is spec, name
        assert name in Catalog()
    assert Catalog().get("no_such_table") is None
    assert "base" not in Catalog()


def test_table_index_names_the_module_of_every_table():
    """The static index (read from the modules' source, nothing imported)
    names, for each table of the full catalog, the module whose TABLES holds
    it; a table declared so the index cannot see it fails here."""
    import importlib

    from kql.tables import table_index
    index = table_index()
    assert sorted(index) == sorted(Catalog())
    for name, module in index.items():
        mod = importlib.import_module(f"kql.tables.{module}")
        assert any(s.name == name for s in mod.TABLES), (name, module)


def test_catalog_doctests():
    import doctest

    import kql.tables
    failures, tests = doctest.testmod(kql.tables)
    assert failures == 0 and tests > 0


def test_table_index_cache_is_checked(tmp_path, monkeypatch):
    from kql import tables
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    want = tables.table_index()
    [cache] = (tmp_path / "kql").glob("tables-*.pickle")
    cache.write_bytes(b"not a pickle")                # corrupt: read the sources again
    assert tables.table_index() == want
    import pickle
    data = pickle.loads(cache.read_bytes())
    data["index"] = {"vmas": "tasks"}                # another version of the sources
    data["files"] = data["files"][:-1]
    cache.write_bytes(pickle.dumps(data))
    assert tables.table_index() == want
    assert tables.table_index()["vmas"] == "vm"


def test_one_table_imports_only_its_module():
    """``FROM vmas`` imports kql/tables/vm.py and no other table module."""
    from fixtures import fixture
    sample = str(fixture("sample").path / "vmcore.kdump")
    code = ("import sys, io, contextlib; from kql.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            f"    assert main([{sample!r}, 'SELECT count(*) FROM vmas', '-f', 'csv']) == 0\n"
            "print(sorted(m for m in sys.modules if m.startswith('kql.tables.')))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["['kql.tables.base',", "'kql.tables.vm']"]


def test_direct_query_does_not_import_pyarrow():
    """csv/json/table output of a direct scan needs no pyarrow (nor numpy)."""
    from fixtures import fixture
    sample = str(fixture("sample").path / "vmcore.kdump")
    code = ("import sys, io, contextlib; from kql.cli import main\n"
            "for f in ('csv', 'json', 'table'):\n"
            "    with contextlib.redirect_stdout(io.StringIO()):\n"
            f"        assert main([{sample!r}, 'SELECT pid, comm, state FROM tasks', '-f', f]) == 0\n"
            "print(sorted(m for m in ('pyarrow', 'numpy', 'duckdb') if m in sys.modules))")
    env = dict(os.environ)
    env.pop("KQL_DEBUG", None)
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "[]"
