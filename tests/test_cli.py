"""The kql command: output, exit codes, and one-line errors with carets.

Runs the real CLI (``python -m kql.cli``) on real dumps."""

import json
import os
import subprocess
import sys

import pytest

from fixtures import fixture

SAMPLE = str(fixture("sample").path / "vmcore.kdump")


def kql(*args, check_rc=None):
    env = dict(os.environ)
    env.pop("KQL_DEBUG", None)
    p = subprocess.run([sys.executable, "-m", "kql.cli", *args], capture_output=True,
                       text=True, env=env)
    if check_rc is not None:
        assert p.returncode == check_rc, (p.returncode, p.stdout, p.stderr)
    return p


def test_help_lists_options_and_exit_codes():
    p = kql("--help", check_rc=0)
    for word in ("--vmlinux", "--format", "--stats", "--describe", "exit codes"):
        assert word in p.stdout


def test_syntax_error_has_caret():
    p = kql(SAMPLE, "SELECT pid FORM tasks", check_rc=1)
    assert p.stderr == (
        "kql: syntax error: unexpected 'FORM', expected one of: ',', FROM, WHERE, GROUP, "
        "HAVING, ORDER, … (line 1, column 12)\n"
        "  SELECT pid FORM tasks\n"
        "             ^^^^\n")


def test_unknown_table_suggests():
    p = kql(SAMPLE, "SELECT * FROM list_wallk('modules', 'struct module', 'list')", check_rc=1)
    assert p.stderr == (
        "kql: unknown table function 'list_wallk'; did you mean 'list_walk'? (line 1, column 15)\n"
        "  SELECT * FROM list_wallk('modules', 'struct module', 'list')\n"
        "                ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^\n")


def test_bad_member_names_struct_and_member():
    p = kql(SAMPLE, "SELECT value->comm, value->nope FROM var('init_task')", check_rc=1)
    assert p.stderr == (
        "kql: value->nope: 'struct task_struct' has no member 'nope' (line 1, column 21)\n"
        "  SELECT value->comm, value->nope FROM var('init_task')\n"
        "                      ^^^^^^^^^^^\n")


def test_not_a_dump_is_exit_2_one_line(tmp_path):
    f = tmp_path / "empty"
    f.write_bytes(b"")
    p = kql(str(f), "SELECT 1", check_rc=2)
    assert len(p.stderr.splitlines()) == 1 and p.stderr.startswith("kql: error: ")
    assert "Traceback" not in p.stderr


def test_missing_file_is_exit_2(tmp_path):
    p = kql(str(tmp_path / "nope"), "SELECT 1", check_rc=2)
    assert len(p.stderr.splitlines()) == 1 and str(tmp_path / "nope") in p.stderr


def test_var_and_member_paths_against_truth():
    t = fixture("sample").truth
    p = kql(SAMPLE, "SELECT value->comm, value->pid FROM var('init_task')", "--format", "json",
            check_rc=0)
    rows = json.loads(p.stdout)
    assert rows == [{"value->comm": t["tasks"]["0"]["comm"] if "0" in t["tasks"] else "swapper/0",
                     "value->pid": 0}]


def test_list_walk_finds_every_process_the_guest_printed():
    t = fixture("sample").truth
    p = kql(SAMPLE, "SELECT entry->pid AS pid, entry->comm AS comm FROM "
            "list_walk('init_task.tasks', 'struct task_struct', 'tasks')", "-f", "csv",
            check_rc=0)
    got = {}
    for line in p.stdout.splitlines()[1:]:
        pid, comm = line.split(",", 1)
        got[int(pid)] = comm
    leaders = {int(k): v["comm"] for k, v in t["tasks"].items()
               if v["tgid"] == v["pid"] and int(k) not in t["transient_pids"]}
    assert {k: got.get(k) for k in leaders} == leaders


def test_addresses_print_in_hex_in_tables_and_as_numbers_in_json():
    p = kql(SAMPLE, "SELECT address FROM var('init_task')", check_rc=0)
    assert p.stdout.splitlines()[2].startswith("0xffffffff")
    p = kql(SAMPLE, "SELECT address FROM var('init_task')", "-f", "json", check_rc=0)
    assert isinstance(json.loads(p.stdout)[0]["address"], int)


def test_output_file_written_atomically(tmp_path):
    out = tmp_path / "r.parquet"
    kql(SAMPLE, "SELECT * FROM memory(addr('init_task'), 4)", "-f", "parquet", "-o", str(out),
        check_rc=0)
    import pyarrow.parquet as pq
    t = pq.read_table(out)
    assert t.num_rows == 4 and t.column_names == ["address", "value", "symbol", "ascii"]
    assert [p.name for p in tmp_path.iterdir()] == ["r.parquet"]


def test_describe_lists_every_table_with_docs():
    p = kql("--describe", check_rc=0)
    from kql.tables import catalog
    for name, spec in catalog().items():
        assert name in p.stdout
        for c in spec.columns:
            assert c.doc, f"{name}.{c.name} has no doc"


@pytest.mark.parametrize("q", ["SELECT 1 FROM", "SELECT 'abc", "/* x"])
def test_no_traceback_on_any_syntax_error(q):
    p = kql(SAMPLE, q, check_rc=1)
    assert "Traceback" not in p.stderr and p.stderr.startswith("kql: ")


def test_table_docs_are_generated_from_the_catalog():
    """docs/tables.md is what `python -m kql.describe --markdown` prints."""
    from pathlib import Path
    from kql.describe import describe
    doc = Path(__file__).resolve().parent.parent / "docs" / "tables.md"
    assert doc.read_text() == describe(None, markdown=True), \
        "regenerate: python -m kql.describe --markdown > docs/tables.md"


def test_split_dump_parts_comma_separated(tmp_path):
    """makedumpfile --split output, given as PART1,PART2, reads like the whole."""
    parts = [tmp_path / "p1", tmp_path / "p2"]
    subprocess.run(["makedumpfile", "--split", "-d", "31", SAMPLE, *map(str, parts)],
                   check=True, capture_output=True)
    q = "SELECT pid, comm, state FROM tasks ORDER BY pid, comm"
    whole = kql(SAMPLE, q, "-f", "csv", check_rc=0).stdout
    split = kql(",".join(map(str, parts)), q, "-f", "csv", check_rc=0).stdout
    assert split == whole
    pids = {int(line.split(",")[0]) for line in whole.splitlines()[1:]}
    truth = fixture("sample").truth
    assert {int(p) for p in truth["tasks"]} - set(truth["transient_pids"]) <= pids


# ---------------------------------------------------------------- bad input: exit 2, one line

def _elf_without_vmcoreinfo(tmp_path):
    """A real QEMU core with its VMCOREINFO note renamed (so it is not found)."""
    src = fixture("6.1-live").dump("elf")
    dst = tmp_path / "novmcoreinfo.elf"
    with open(src, "rb") as f:
        head = bytearray(f.read(1 << 20))
    i = head.find(b"VMCOREINFO\0")
    assert i > 0
    head[i:i + 10] = b"XMCOREINFO"
    dst.write_bytes(bytes(head))  # notes are in the first MiB; memory is cut off
    return dst


def _truncated_kdump(tmp_path):
    dst = tmp_path / "truncated.kdump"
    with open(SAMPLE, "rb") as f:
        dst.write_bytes(f.read(6000))
    return dst


def _not_a_core(tmp_path):
    return sys.executable if os.path.realpath(sys.executable).endswith(("python3", "python3.11")) \
        else "/bin/ls"


def _random(tmp_path):
    dst = tmp_path / "random.bin"
    dst.write_bytes(os.urandom(1 << 16))
    return dst


@pytest.mark.parametrize("make,words", [
    (_random, "not a vmcore"),
    (_truncated_kdump, "truncated"),
    (_not_a_core, "not a core"),
    (_elf_without_vmcoreinfo, "VMCOREINFO"),
])
@pytest.mark.fixtures
def test_bad_dumps_are_one_line_exit_2(tmp_path, make, words):
    p = kql(str(make(tmp_path)), "SELECT pid FROM tasks")
    assert p.returncode == 2, p.stderr
    assert len(p.stderr.splitlines()) == 1 and p.stderr.startswith("kql: error: ")
    assert words.lower() in p.stderr.lower(), p.stderr
    assert "Traceback" not in p.stderr


@pytest.mark.fixtures
def test_vmlinux_of_another_kernel_is_refused():
    other = fixture("6.12-live").vmlinux
    p = kql(SAMPLE, "SELECT pid FROM tasks", "--vmlinux", other, check_rc=2)
    assert len(p.stderr.splitlines()) == 1
    assert p.stderr.startswith("kql: error: vmlinux build-id ")
    assert "does not match the dump's build-id" in p.stderr and other in p.stderr


@pytest.mark.parametrize("bad", ["/bin/ls", "/nonexistent/vmlinux"])
def test_bad_vmlinux_is_refused_at_open(bad):
    """Even a query that needs no types refuses a vmlinux that is not one."""
    p = kql(SAMPLE, "SELECT 1 AS one", "--vmlinux", bad, check_rc=2)
    assert len(p.stderr.splitlines()) == 1 and p.stderr.startswith("kql: error: ")
    assert bad in p.stderr


@pytest.mark.parametrize("args,expected", [
    (["-f", "parquet"], "kql: --format parquet is binary: give -o FILE\n"),
    (["-f", "csv", "-o", "/nonexistent/dir/x.csv"],
     "kql: cannot write /nonexistent/dir/x.csv: no directory /nonexistent/dir\n"),
])
def test_output_arguments_are_checked_before_opening_the_dump(args, expected):
    p = kql(SAMPLE, "SELECT 1 AS one", *args, check_rc=1)
    assert p.stderr == expected


def test_var_of_unknown_symbol():
    p = kql(SAMPLE, "SELECT * FROM var('kql_no_such_symbol')", check_rc=1)
    assert p.stderr.splitlines()[0] == "kql: var('kql_no_such_symbol'): no symbol named " \
        "'kql_no_such_symbol'"


# ---------------------------------------------------------------- found in review

def test_two_key_predicates_on_different_columns_both_apply():
    p = kql(SAMPLE, "SELECT pid, tgid FROM open_files WHERE pid = 1 AND tgid = 2", "-f", "csv",
            check_rc=0)
    assert p.stdout == "pid,tgid\n"


def test_qualify_is_applied_and_limits_wait_for_it():
    got = kql(SAMPLE, "SELECT pid FROM tasks QUALIFY row_number() OVER (ORDER BY pid DESC) <= 2 "
              "ORDER BY pid DESC LIMIT 5", "-f", "csv", check_rc=0).stdout
    want = kql(SAMPLE, "SELECT pid FROM tasks ORDER BY pid DESC LIMIT 2", "-f", "csv",
               check_rc=0).stdout
    assert got == want and len(got.splitlines()) == 3


def test_limit_is_not_pushed_below_an_unlisted_aggregate():
    whole = kql(SAMPLE, "SELECT approx_quantile(pid, 0.5) AS q FROM tasks", "-f", "csv",
                check_rc=0).stdout
    limited = kql(SAMPLE, "SELECT approx_quantile(pid, 0.5) AS q FROM tasks LIMIT 1", "-f",
                  "csv", check_rc=0).stdout
    assert whole == limited


def test_string_key_is_left_to_duckdb():
    p = kql(SAMPLE, "SELECT pid FROM tasks WHERE pid = '1'", "-f", "csv", check_rc=0)
    assert p.stdout == "pid\n1\n"


def test_json_keeps_columns_with_the_same_name_and_decimals():
    p = kql(SAMPLE, "SELECT c.pid, p.pid FROM tasks c JOIN tasks p ON c.ppid = p.pid "
            "WHERE c.pid = 1", "-f", "json", check_rc=0)
    assert json.loads(p.stdout) == [{"pid": 1, "pid_1": 0}, {"pid": 1, "pid_1": 0}]
    p = kql(SAMPLE, "SELECT sum(pid) AS s, 1.5 AS x FROM tasks WHERE pid IN (1, 2)", "-f",
            "jsonl", check_rc=0)
    assert p.stdout == '{"s": 3, "x": 1.5}\n'


def test_aliased_address_columns_and_struct_members_print_in_hex():
    p = kql(SAMPLE, "SELECT task AS t2, task->se AS se FROM tasks WHERE pid = 1", check_rc=0)
    row = p.stdout.splitlines()[2].split()
    assert row[0].startswith("0xffff") and row[1].startswith("0xffff")


@pytest.mark.parametrize("q", ["", ";"])
def test_empty_query_is_an_error(q):
    p = kql(SAMPLE, q, check_rc=1)
    assert p.stderr.startswith("kql: empty query")


def test_output_file_holds_every_statement(tmp_path):
    out = tmp_path / "two.csv"
    kql(SAMPLE, "SELECT 1 AS a; EXPLAIN SELECT comm FROM tasks WHERE pid = 1; SELECT 2 AS b",
        "-f", "csv", "-o", str(out), check_rc=0)
    assert out.read_text() == ("a\n1\nScan tasks: find_task(pid IN (1))\n    columns: comm, pid\n"
                               "Output: direct from the scan (no DuckDB)\nb\n2\n")


def test_bad_table_function_arguments_are_query_errors(tmp_path):
    p = kql(SAMPLE, "SELECT * FROM var(1)", check_rc=1)
    assert p.stderr.startswith("kql: var(name [, type]) takes strings")
    f = tmp_path / "afile"
    f.write_text("")
    p = kql("export", SAMPLE, "-o", str(f), check_rc=1)
    assert p.stderr == f"kql: export: {f} exists and is not a directory\n"
