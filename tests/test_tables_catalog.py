"""Every TableSpec of the catalog, checked the same way on the sample dump
(documentation, walk, object type, examples, every column read), and the one
"not in this kernel" policy of the scan machinery: a member, symbol or type a
column needs that the kernel lacks is a NULL plus one counted warning, in
every table."""

from __future__ import annotations

import contextlib
import dataclasses
import io

import pytest

from fixtures import fixture, kernel
from kql.execute import Session
from kql.tables import catalog
from kql.tables.base import (ADDRESS, INT64, NOT_IN_KERNEL, Column, NotInThisKernel,
                             ScanContext, Warnings, arrow_type, scan_columns)

SAMPLE = str(fixture("sample").path / "vmcore.kdump")
TABLES = list(catalog())
EXAMPLES = [(name, ex) for name in TABLES for ex in catalog()[name].examples]


@pytest.fixture(scope="module")
def sample():
    return Session({None: kernel("sample")})


def no_kernel_config(k) -> bool:
    """Whether the kernel was built without CONFIG_IKCONFIG (Debian's are):
    the ``config`` table then refuses every query."""
    return k.symbols.get("kernel_config_data") is None


def not_in_kernel_warnings(res) -> list[str]:
    return [where for where, reason in res.warnings.counts if reason == NOT_IN_KERNEL]


# -- the specs ----------------------------------------------------------------

@pytest.mark.parametrize("name", TABLES)
def test_spec_is_documented(name):
    import pyarrow as pa
    spec = catalog()[name]
    assert spec.name == name
    assert spec.doc.strip() and spec.walk.strip(), f"{name}: doc and walk"
    assert spec.examples, f"{name} has no example query"
    for ex in spec.examples:
        assert f" {name}" in ex.replace("(", " ("), f"{name}: example {ex!r} is not about it"
    names = [c.name.lower() for c in spec.columns]
    assert names and len(set(names)) == len(names), f"{name}: columns repeated"
    for c in spec.columns:
        assert c.doc.strip(), f"{name}.{c.name} has no doc"
        assert isinstance(arrow_type(c.type), pa.DataType), f"{name}.{c.name}: type"
        assert callable(c.fn)
        if c.object_type is not None:
            assert c.object_type.endswith("*") and ADDRESS == c.type, f"{name}.{c.name}"
    assert spec.star_columns(), f"{name}: SELECT * selects nothing"
    assert set(spec.lookups) <= set(spec.column_names), f"{name}: lookup on no column"
    if spec.object_column is not None:
        assert spec.column(spec.object_column).object_type or spec.object_type_fn, name
    assert (spec.params is not None) == any(f"{name}(" in ex for ex in spec.examples)


@pytest.mark.parametrize("name", TABLES)
def test_object_type_exists_in_the_sample(name):
    """The C type of each object column is a type of the sample's kernel (a
    table function's comes from its arguments: checked by its examples)."""
    k = kernel("sample")
    for c in catalog()[name].columns:
        if c.object_type is not None:
            assert k.types.find_type(c.object_type).kind == "pointer", f"{name}.{c.name}"


# -- on the sample dump ---------------------------------------------------------

@pytest.mark.parametrize("name,example", EXAMPLES)
def test_example_runs_on_the_sample(sample, name, example):
    """Each example query of the docs runs on the sample; a table function's
    reads an object every kernel has, so it gives rows."""
    if name == "config" and no_kernel_config(sample.default_kernel()):
        with pytest.raises(NotInThisKernel) as e:
            sample.execute(example)
        assert e.value.one_line() == ("config: kernel_config_data does not exist in this "
                                      "kernel (it was built without CONFIG_IKCONFIG)")
        return
    [res] = sample.execute(example)
    assert res.columns.num_rows >= 0 and res.columns.names
    assert not not_in_kernel_warnings(res)
    if catalog()[name].params is not None:
        assert res.columns.num_rows >= 1


@pytest.mark.parametrize("name", [n for n in TABLES if catalog()[n].params is None])
def test_every_column_reads_on_the_sample(sample, name):
    """A full scan of every column (the optional ones too): rows, and no
    column the sample's kernel (a Debian 6.1 kql supports) lacks.  Every
    table has rows on a running kernel (a task, its stack, a CPU, a
    mount ...), the sample's modules are in its truth."""
    spec = catalog()[name]
    query = f"SELECT {', '.join(repr(c.name).replace(chr(39), chr(34)) for c in spec.columns)} " \
            f"FROM {name}"
    if name == "config" and no_kernel_config(sample.default_kernel()):
        with pytest.raises(NotInThisKernel):
            sample.execute(query)
        return
    [res] = sample.execute(query)
    assert res.columns.names == spec.column_names
    if name != "modules" or fixture("sample").truth["modules"]:
        assert res.columns.num_rows >= 1
    assert not not_in_kernel_warnings(res)


# -- "not in this kernel": one policy --------------------------------------------

def _scan_with(table: str, column: Column, *others: str):
    """``table`` scanned on the sample with one more column."""
    spec = catalog()[table]
    spec = dataclasses.replace(spec, columns=spec.columns + (column,))
    w = Warnings()
    out = scan_columns(spec, ScanContext(kernel("sample"), [*others, column.name],
                                         warnings=w))
    return out, w


def test_missing_member_is_null_plus_one_counted_warning():
    # task_struct.state became __state in Linux 5.14 (commit 2f064a59a11f):
    # the sample's 6.1 has no 'state'
    out, w = _scan_with("tasks", Column("old_state", INT64, "task->state before 5.14",
                                        lambda r: r.task.state.value_()), "pid")
    n = out.num_rows
    assert n > 1 and out.data[1] == [None] * n
    assert None not in out.data[0]                  # the other column and the rows survive
    assert w.lines() == [f"{n} values of tasks.old_state NULL: not in this kernel "
                         f"('struct task_struct' has no member 'state')"]


def test_missing_symbol_is_null_plus_one_counted_warning():
    # totalram_pages became an atomic _totalram_pages in Linux 5.0 (commit ca79b0c211af)
    assert kernel("sample").symbols.get("totalram_pages") is None
    k = kernel("sample")
    out, w = _scan_with("sys", Column("old_totalram", INT64, "totalram_pages before 5.0",
                                      lambda r: k.var("totalram_pages").value_()),
                        "release")
    assert out.data == [[fixture("sample").truth["release"]], [None]]
    assert w.lines() == ["1 value of sys.old_totalram NULL: not in this kernel "
                         "(no symbol named 'totalram_pages')"]


def test_missing_type_is_null_plus_one_counted_warning():
    k = kernel("sample")
    out, w = _scan_with("cpus", Column("t", INT64, "size of a type 6.1 lacks",
                                       lambda r: k.types.find_type("struct no_such").size))
    assert out.num_rows >= 1 and out.data == [[None] * out.num_rows]
    [line] = w.lines()
    assert line.startswith(f"{out.num_rows} value") and \
        "of cpus.t NULL: not in this kernel (" in line and "struct no_such" in line


def test_a_bug_is_not_a_missing_member():
    """KeyError and IndexError are LookupErrors too, but bugs: they end the
    query (exit 3), never a NULL."""
    with pytest.raises(KeyError):
        _scan_with("cpus", Column("t", INT64, "a bug", lambda r: {}["x"]))


def test_cli_missing_member_exits_0_with_the_warning(monkeypatch, capsys):
    """Through the CLI: a tasks column whose helper reads a member this
    kernel lacks (task->state, a pre-5.14 kernel's) is NULL, the query
    succeeds and stderr says which column and member."""
    import kql.tables.tasks as tasks
    from kql.cli import main
    monkeypatch.setattr(tasks, "task_state_value", lambda task: task.state.value_())
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = main([SAMPLE, "SELECT pid, state, comm FROM tasks WHERE pid = 1", "-f", "csv"])
    assert rc == 0
    assert out.getvalue() == f"pid,state,comm\n1,,{fixture('sample').truth['tasks']['1']['comm']}\n"
    assert capsys.readouterr().err == (
        "kql: warning: 1 value of tasks.state NULL: not in this kernel "
        "('struct task_struct' has no member 'state')\n")


def test_missing_member_in_a_walk_is_a_dump_error(monkeypatch, capsys):
    """The rows themselves need it (a walk of a list this kernel does not
    have): no rows to put NULLs in, so the query fails as a dump error
    (exit 2) naming the table and the member, never an internal error."""
    import kql.tables.vm as vm
    from kql.cli import main
    # mm->mmap, the VMA list, went in Linux 6.1 (commit 763ecb035029, the maple tree)
    assert not kernel("sample").types.find_type("struct mm_struct").has_member("mmap")
    monkeypatch.setattr(vm, "for_each_vma", lambda mm: iter([mm.mmap]))
    with contextlib.redirect_stdout(io.StringIO()):
        rc = main([SAMPLE, "SELECT start FROM vmas WHERE pid = 1", "-f", "csv"])
    assert rc == 2
    assert capsys.readouterr().err == (
        "kql: error: cannot read vmas: 'struct mm_struct' has no member 'mmap'\n")
