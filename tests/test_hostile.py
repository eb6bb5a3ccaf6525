"""Hostile input (issue #13): every defect a fuzz run found, as a test.

Queries must not read files, reach the network or install extensions
unless --allow-files is given; -o never replaces a device or a link;
parameters are values; a damaged dump is exit 2 or a warning; no input is
an internal error (exit 3) or a hang."""

import os
import stat
import subprocess
import sys

import pytest

from fixtures import fixture

SAMPLE = str(fixture("sample").path / "vmcore.kdump")


def kql(*args, check_rc=None, env=None, timeout=120, **kw):
    e = dict(os.environ)
    e.pop("KQL_DEBUG", None)
    e.update(env or {})
    p = subprocess.run([sys.executable, "-m", "kql.cli", *args], capture_output=True,
                       text=True, env=e, timeout=timeout, **kw)
    if check_rc is not None:
        assert p.returncode == check_rc, (p.returncode, p.stdout, p.stderr)
    return p


# ------------------------------------------------------------------ 1. file access

@pytest.fixture
def csv_file(tmp_path):
    f = tmp_path / "s.csv"
    f.write_text("a,b\n1,2\n")
    return str(f)


def test_dump_query_reads_no_file_without_allow_files(csv_file, tmp_path):
    q = f'WITH RECURSIVE "{csv_file}" AS (SELECT * FROM "{csv_file}") SELECT * FROM "{csv_file}"'
    p = kql(SAMPLE, q, check_rc=1)
    assert p.stderr == f"kql: reading files needs --allow-files ({csv_file})\n"
    assert p.stdout == ""
    g = f"{tmp_path}/*.csv"
    p = kql(SAMPLE, f'WITH RECURSIVE "{g}" AS (SELECT * FROM "{g}") SELECT * FROM "{g}"',
            check_rc=1)
    assert p.stderr.startswith("kql: reading files needs --allow-files")


def test_allow_files_reads_the_users_file(csv_file):
    q = f'WITH RECURSIVE "{csv_file}" AS (SELECT * FROM "{csv_file}") SELECT * FROM "{csv_file}"'
    p = kql("--allow-files", SAMPLE, q, "-f", "csv", check_rc=0)
    assert p.stdout == "a,b\n1,2\n"


def test_no_extension_is_installed_or_downloaded(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    p = kql(SAMPLE, "SELECT excel_text(1, 'x') FROM tasks LIMIT 1", check_rc=1,
            env={"HOME": str(home), "XDG_CACHE_HOME": str(tmp_path / "cache")})
    assert p.stderr == ('kql: Catalog Error: Scalar Function with name "excel_text" is not in '
                        'the catalog, but it exists in the excel extension.\n')
    assert not (home / ".duckdb").exists()


def test_duckdb_settings_are_locked():
    from kql import duck
    con = duck.connect()
    import duckdb
    with pytest.raises(duckdb.Error, match="locked"):
        con.execute("SET enable_external_access = true")
    assert con.execute("SELECT current_setting('autoinstall_known_extensions'), "
                   "current_setting('autoload_known_extensions'), "
                   "current_setting('temp_directory')").fetchone() == \
        (False, False, duck.temp_directory())
    assert duck.temp_directory().endswith(os.path.join("kql", "duckdb-tmp"))


@pytest.fixture
def export_dir(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    d = tmp_path / "exp"
    (d / "tasks").mkdir(parents=True)
    pq.write_table(pa.table({"pid": [1, 2]}), d / "tasks" / "x.parquet")
    return str(d)


@pytest.mark.parametrize("q", ["SELECT * FROM read_text('{f}')", "SELECT * FROM read_csv('{f}')",
                               "SELECT * FROM glob('{d}/*')"])
def test_parquet_mode_reads_only_its_directory(export_dir, csv_file, q):
    q = q.format(f=csv_file, d=os.path.dirname(csv_file))
    p = kql("--parquet", export_dir, q, check_rc=1)
    # refused when planned, with a caret under the file-reading call
    start = q.index("FROM ") + 5
    assert p.stderr == (f"kql: reading files needs --allow-files: {q[start:]} (line 1, column "
                        f"{start + 1})\n  {q}\n  {' ' * start}{'^' * (len(q) - start)}\n")
    assert kql("--parquet", export_dir, "SELECT sum(pid) AS s FROM tasks", "-f", "csv",
               check_rc=0).stdout == "s\n3\n"
    kql("--parquet", export_dir, "--allow-files", q, check_rc=0)


# ------------------------------------------------------------------ 2. -o files

def test_output_to_a_full_device_is_an_error_and_the_device_stays():
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full")
    before = os.stat("/dev/full")
    p = kql(SAMPLE, "SELECT 1 AS x", "-o", "/dev/full", check_rc=1)
    assert p.stderr == "kql: cannot write /dev/full: No space left on device\n"
    after = os.stat("/dev/full")
    assert stat.S_ISCHR(after.st_mode) and after.st_rdev == before.st_rdev


def test_output_to_dev_stdout_writes_through():
    p = kql(SAMPLE, "SELECT 1 AS x", "-f", "csv", "-o", "/dev/stdout", check_rc=0)
    assert p.stdout == "x\n1\n"
    assert os.path.islink("/dev/stdout")


def test_output_into_a_fifo_writes_through(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    reader = subprocess.Popen(["cat", str(fifo)], stdout=subprocess.PIPE, text=True)
    kql(SAMPLE, "SELECT 1 AS x", "-f", "csv", "-o", str(fifo), check_rc=0)
    assert reader.communicate(timeout=60)[0] == "x\n1\n"
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)


def test_output_follows_a_symlink_and_keeps_modes(tmp_path):
    target = tmp_path / "out.csv"
    link = tmp_path / "link.csv"
    old = os.umask(0o022)
    try:
        kql(SAMPLE, "SELECT 1 AS x", "-f", "csv", "-o", str(target), check_rc=0)
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o644  # umask 022
    os.chmod(target, 0o640)
    link.symlink_to(target.name)
    kql(SAMPLE, "SELECT 2 AS x", "-f", "csv", "-o", str(link), check_rc=0)
    assert os.path.islink(link) and target.read_text() == "x\n2\n"
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o640
    kql(SAMPLE, "SELECT 3 AS x", "-f", "parquet", "-o", str(link), check_rc=0)
    assert os.path.islink(link) and stat.S_IMODE(os.stat(target).st_mode) == 0o640
    assert sorted(os.listdir(tmp_path)) == ["link.csv", "out.csv"]


# ------------------------------------------------------------------ 3. parameters

def _saved(tmp_path, body, params="-- param: c = x\n"):
    d = tmp_path / "q"
    d.mkdir(exist_ok=True)
    (d / "t.kql").write_text(f"-- name: t\n-- description: test\n{params}{body}\n")
    return {"KQL_QUERY_PATH": str(d)}


def test_placeholder_in_a_quoted_identifier_is_not_substituted(tmp_path):
    env = _saved(tmp_path, 'SELECT 1 AS ":c", :c AS v')
    p = kql(SAMPLE, "@t", "--param", 'c=x" , (SELECT count(*) FROM tasks) AS "injected',
            "-f", "csv", env=env, check_rc=0)
    assert p.stdout == ':c,v\n1,"x"" , (SELECT count(*) FROM tasks) AS ""injected"\n'


def test_placeholders_in_comments_and_casts_stay():
    from kql import queries
    q = queries.SavedQuery("t", "", "SELECT 1 -:a, 2::INT -- :a\n/* :a */ FROM x", "t",
                           (queries.Param("a", None),))
    assert q.render({"a": "-1"}) == "SELECT 1 -(-1), 2::INT -- :a\n/* :a */ FROM x"


def test_param_digits_are_ascii_only():
    from kql import queries
    q = queries.SavedQuery("t", "", "SELECT :a", "t", (queries.Param("a", None),))
    assert q.render({"a": "\u0661"}) == "SELECT '\u0661'"
    assert q.render({"a": "12"}) == "SELECT 12"


# ------------------------------------------------------------ damaged sample dumps

def patched(tmp_path, *edits, name="x.kdump"):
    """A copy of the sample dump with ``edits``: (offset, bytes) or
    (b"old", b"new") replacing the first occurrence in the first 64 KiB."""
    data = bytearray(open(SAMPLE, "rb").read())
    for a, b in edits:
        if isinstance(a, bytes):
            a = data.index(a, 0, 1 << 16)
        data[a:a + len(b)] = b
    out = tmp_path / name
    out.write_bytes(bytes(data))
    return str(out)


def u32(v):
    return v.to_bytes(4, "little")


def u64(v):
    return v.to_bytes(8, "little", signed=v < 0)


STATUS, BITMAP_BLOCKS = 424, 436         # disk_dump_header
SPLIT, START_PFN_64, END_PFN_64 = 4096 + 12, 4096 + 80, 4096 + 88   # kdump_sub_header
BITMAP2 = 3 * 4096 + 4 * 4096            # the sample: sub header 2 blocks, bitmaps 8


def test_sample_layout_is_what_the_offsets_assume():
    import struct
    head = open(SAMPLE, "rb").read(8192)
    assert struct.unpack_from("<8si", head) == (b"KDUMP   ", 6)
    assert struct.unpack_from("<iiI", head, 428) == (4096, 2, 8)


@pytest.mark.parametrize("old,new,message", [
    (b"KERNELOFFSET=37400000", b"KERNELOFFSET=zz", "KERNELOFFSET='zz400000' is not a hex offset"),
    (b"KERNELOFFSET=37400000", b"KERNELOFFSET=-1\n", "KERNELOFFSET='-1' is not a hex offset"),
    (b"PAGESIZE=4096", b"PAGESIZE=0000", "PAGESIZE='0000' is not a page size"),
])
def test_bad_vmcoreinfo_value_is_a_dump_error(tmp_path, old, new, message):
    p = kql(patched(tmp_path, (old, new)), "SELECT count(*) FROM tasks", check_rc=2)
    assert p.stderr == f"kql: error: {tmp_path}/x.kdump: corrupt VMCOREINFO: {message}\n"


@pytest.mark.parametrize("old,new,warning", [
    (b"SYMBOL(swapper_pg_dir)=f", b"SYMBOL(swapper_pg_dir)=q",
     "SYMBOL(swapper_pg_dir)='qfffffffb9e10000' is not a number: ignored"),
    (b"CRASHTIME=1795678004", b"CRASHTIME=17956780zz",
     "CRASHTIME='17956780zz' is not a number: ignored"),
])
def test_bad_optional_vmcoreinfo_value_is_a_warning(tmp_path, old, new, warning):
    p = kql(patched(tmp_path, (old, new)), "SELECT count(*) AS n FROM tasks", "-f", "csv",
            check_rc=0)
    assert p.stderr == f"kql: warning: {tmp_path}/x.kdump: VMCOREINFO {warning}\n"
    assert p.stdout == kql(SAMPLE, "SELECT count(*) AS n FROM tasks", "-f", "csv").stdout


def test_bad_phys_base_is_a_warning_then_a_dump_error(tmp_path):
    p = kql(patched(tmp_path, (b"NUMBER(phys_base)=-656408576", b"NUMBER(phys_base)=abc")),
            "SELECT count(*) FROM tasks", check_rc=2)
    assert p.stderr.startswith(f"kql: warning: {tmp_path}/x.kdump: VMCOREINFO "
                               f"NUMBER(phys_base)='abc6408576' is not a number: ignored\n"
                               f"kql: error: ")


def test_incomplete_flag_is_printed_once(tmp_path):
    p = kql(patched(tmp_path, (STATUS, u32(1 | 8))), "SELECT count(*) AS n FROM tasks; "
            "SELECT 1 AS one", "-f", "csv", check_rc=0)
    assert p.stderr == (f"kql: warning: {tmp_path}/x.kdump: the dump is incomplete (makedumpfile "
                        f"ran out of space): some pages are missing\n")


@pytest.mark.parametrize("bit", [0, 2000 * 8])
def test_flipped_dump_bitmap_bit_is_a_warning(tmp_path, bit):
    data = open(SAMPLE, "rb").read(BITMAP2 + 4096)
    byte = data[BITMAP2 + bit // 8] ^ (1 << (bit % 8))
    p = kql(patched(tmp_path, (BITMAP2 + bit // 8, bytes([byte]))), "SELECT count(*) FROM tasks")
    assert p.returncode in (0, 2), p.stderr
    assert (f"kql: warning: {tmp_path}/x.kdump: the page bitmap does not match the page "
            f"descriptors (") in p.stderr


def test_split_part_outside_the_bitmap_is_a_dump_error(tmp_path):
    p = kql(patched(tmp_path, (SPLIT, u32(1)), (START_PFN_64, u64(0x7fffffff)),
                    (END_PFN_64, u64(0x80000000))), "SELECT 1", check_rc=2)
    assert p.stderr == (f"kql: error: {tmp_path}/x.kdump: corrupt kdump sub header: this part's "
                        f"pfn range [0x7fffffff, 0x20000) is outside the bitmap, which covers "
                        f"0x20000 pfns\n")


def flatten(data: bytes, far: int | None = None) -> bytes:
    """makedumpfile -F of ``data``; ``far``: one more byte written at that offset."""
    import struct
    head = b"makedumpfile".ljust(16, b"\0") + struct.pack(">qq", 1, 1)
    out = [head.ljust(4096, b"\0")]
    for off in range(0, len(data), 1 << 20):
        piece = data[off:off + (1 << 20)]
        out.append(struct.pack(">qq", off, len(piece)) + piece)
    if far is not None:
        out.append(struct.pack(">qq", far, 1) + b"x")
    out.append(struct.pack(">qq", -1, 0))
    return b"".join(out)


def test_huge_bitmap_claim_in_a_flattened_file_is_a_dump_error(tmp_path):
    src = patched(tmp_path, (BITMAP_BLOCKS, u32(1 << 30)))
    flat = tmp_path / "flat"
    flat.write_bytes(flatten(open(src, "rb").read(), far=5 << 40))  # 5 TiB "file"
    p = kql(str(flat), "SELECT 1", check_rc=2)
    assert p.stderr == (f"kql: error: {flat}: corrupt kdump header: bitmap_blocks 1073741824 "
                        f"(4398046511104 bytes) is more than the file holds ("
                        f"{flat.stat().st_size} bytes)\n")


def test_unreadable_printk_info_page_drops_records_with_a_warning(tmp_path):
    from kql.kernel import open_kernel
    with open_kernel(SAMPLE) as k:
        rb = k.read_pointer(k.symbols.get("prb").address)
        ring = k.types.find_type("struct printk_ringbuffer").offsetof("desc_ring")
        infos = k.read_pointer(rb + ring + k.types.find_type("struct prb_desc_ring")
                               .offsetof("infos"))
        pfn = k.memory.translate(infos + 3 * 4096) >> 12
        part = k.dump.phys.parts[0]
        at = part._desc_off + (part._raw_rank(pfn) - part._rank_base) * 24
    broken = patched(tmp_path, (at, u64(0)))
    whole = kql(SAMPLE, "SELECT seq, ts_ns, text FROM dmesg", "-f", "csv", check_rc=0)
    p = kql(broken, "SELECT seq, ts_ns, text FROM dmesg", "-f", "csv", check_rc=0)
    import csv
    all_rows = list(csv.reader(whole.stdout.splitlines(True)))
    rows = list(csv.reader(p.stdout.splitlines(True)))
    dropped = len(all_rows) - len(rows)
    assert 40 <= dropped <= 50
    assert {tuple(r) for r in rows} < {tuple(r) for r in all_rows}  # no made-up rows
    assert f"kql: warning: {dropped} printk records dropped: descriptor or info unreadable\n" \
        in p.stderr


# ------------------------------------------------------ special files, saved queries

def test_fifo_or_device_as_dump_is_refused(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    p = kql(str(fifo), "SELECT 1", check_rc=2, timeout=60)
    assert p.stderr == f"kql: error: {fifo}: cannot open: is a FIFO, not a vmcore\n"
    p = kql("/dev/null", "SELECT 1", check_rc=2, timeout=60)
    assert p.stderr == "kql: error: /dev/null: cannot open: is a device, not a vmcore\n"


def test_bad_saved_query_files_are_skipped_with_a_warning(tmp_path):
    d = tmp_path / "q"
    d.mkdir()
    os.mkfifo(d / "fifo.kql")
    (d / "bad.kql").write_bytes(b"\xff\xfe")
    (d / "dir.kql").mkdir()
    (d / "dangling.kql").symlink_to("nowhere")
    (d / "mine.kql").write_text("-- name: mine\n-- description: mine\nSELECT 7 AS x\n")
    env = {"KQL_QUERY_PATH": str(d)}
    warnings = (f"kql: warning: saved query skipped: {d}/bad.kql: not UTF-8 text (byte 0)\n"
                f"kql: warning: saved query skipped: {d}/dangling.kql: cannot read: No such "
                f"file or directory\n"
                f"kql: warning: saved query skipped: {d}/dir.kql: cannot read: is a directory, "
                f"not a saved query\n"
                f"kql: warning: saved query skipped: {d}/fifo.kql: cannot read: is a FIFO, "
                f"not a saved query\n")
    p = kql("queries", env=env, check_rc=0, timeout=60)
    assert p.stderr == warnings
    assert "@mine" in p.stdout and "@hung-tasks" in p.stdout
    p = kql(SAMPLE, "@mine", "-f", "csv", env=env, check_rc=0, timeout=60)
    assert (p.stdout, p.stderr) == ("x\n7\n", warnings)
    kql(SAMPLE, "@ps", "-f", "csv", env=env, check_rc=0, timeout=60)


# ------------------------------------------------------------------ query errors

DEEP = {
    "unary minus": "SELECT " + "- " * 1000 + "1",
    "NOT": "SELECT " + "NOT " * 1000 + "true",
    "scalar subqueries": "SELECT " + "(SELECT " * 200 + "1" + ")" * 200,
    "OR chain": "SELECT 1 WHERE " + " OR ".join(["pid = 1"] * 5000),
    "+ chain": "SELECT " + " + ".join(["1"] * 20000),
    "UNION ALL": "SELECT 1 AS x" + " UNION ALL SELECT 1" * 600,
}


@pytest.mark.parametrize("name", DEEP)
def test_deep_query_is_refused_at_the_stated_limit(name):
    p = kql(SAMPLE, DEEP[name], check_rc=1)
    assert p.stderr.startswith("kql: query too deeply nested (more than 500 levels of "
                               "expressions, subqueries or set operations) (line 1, column ")


@pytest.mark.parametrize("n", [300])
def test_query_within_the_limit_runs(n):
    q = "SELECT " + " + ".join(["1"] * n) + " AS x FROM tasks LIMIT 1"
    assert kql(SAMPLE, q, "-f", "csv", check_rc=0).stdout == f"x\n{n}\n"
    q = "SELECT 1 AS x" + " UNION ALL SELECT 1" * (n - 1)
    p = kql(SAMPLE, f"SELECT sum(x) AS s FROM ({q})", "-f", "csv", check_rc=0)
    assert p.stdout == f"s\n{n}\n"


@pytest.mark.parametrize("q,err", [
    ("SELECT * FROM memory(addr('jiffies'), 'x')",
     "kql: memory(): count must be an integer, not 'x'\n"),
    ("SELECT * FROM memory(addr('jiffies'), 1, NULL)",
     "kql: memory(): width must be an integer, not None\n"),
    ("SELECT * FROM list_walk(0, 'struct task_struct', 'tasks')",
     "kql: list_walk: cannot read the list head at 0x0: cannot read kernel address 0x0: not "
     "mapped (PGD entry 0 at physical 0x12c10000 is 0x0, not present)\n"),
    ("SELECT pid FROM tasks UNION ALL SELECT pid FROM tasks ORDER BY task->pid",
     "kql: ORDER BY of UNION, INTERSECT or EXCEPT takes output columns: select the member path "
     "or cast as a column and order by its name (line 1, column 64)\n"
     "  SELECT pid FROM tasks UNION ALL SELECT pid FROM tasks ORDER BY task->pid\n"
     "                                                                 ^^^^^^^^^\n"),
    ("SELECT \u0661\u0662\u0663", "kql: syntax error: unexpected character '\u0661' "
     "(line 1, column 8)\n  SELECT \u0661\u0662\u0663\n         ^\n"),
])
def test_bad_arguments_are_query_errors(q, err):
    assert kql(SAMPLE, q, check_rc=1).stderr == err


def test_memory_count_in_hex_text():
    p = kql(SAMPLE, "SELECT count(*) AS n FROM memory(addr('jiffies'), '0x10')", "-f", "csv",
            check_rc=0)
    assert p.stdout == "n\n16\n"


def test_null_arguments_of_kql_functions_are_null():
    p = kql(SAMPLE, "SELECT addr(NULL) AS a, container_of(1, NULL, NULL) AS b", "-f", "csv",
            check_rc=0)
    assert (p.stdout, p.stderr) == ("a,b\n,\n", "")


def test_value_too_large_for_its_column_is_null_with_a_warning():
    p = kql(SAMPLE, "SELECT pid, task->mm[1000000000000] AS x FROM tasks ORDER BY pid DESC "
            "LIMIT 1", "-f", "csv", check_rc=0)
    assert p.stdout.splitlines()[1].endswith(",")
    assert "does not fit uint64" in p.stderr and "internal error" not in p.stderr


def test_huge_literals_parse_in_bounded_memory(tmp_path):
    # the first parse after an install builds the LALR tables (GBs, once, then
    # cached): build them into a cache of this test's own, in a process of
    # their own, first
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "cache"))
    subprocess.run([sys.executable, "-c", "from kql.grammar import parse; parse('SELECT 1')"],
                   check=True, env=env)
    script = tmp_path / "run.py"
    # VmHWM, this process's own peak (ru_maxrss keeps the forking parent's
    # across exec: a long pytest run's GBs)
    script.write_text(
        "import re, sys\n"
        "from kql.grammar import parse\n"
        "parse(\"SELECT '\" + 'a' * 10_000_000 + \"', \\\"\" + 'b' * 10_000_000 + '\\\" FROM x')\n"
        "print(re.search(r'VmHWM:\\s*(\\d+)', open('/proc/self/status').read())[1])\n")
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         check=True, env=env).stdout
    assert int(out) < 600 * 1024, out  # KiB: it took GBs


def test_usage_errors_have_their_own_exit_code():
    p = kql(SAMPLE, "SELECT 1", "--format", "bogus", check_rc=64)
    assert p.stderr.endswith("kql: error: argument -f/--format: invalid choice: 'bogus' "
                             "(choose from 'table', 'csv', 'json', 'jsonl', 'parquet', 'arrow')\n")
    kql(SAMPLE, "SELECT 1", "--no-such-flag", check_rc=64)
    kql("export", "--no-such-flag", check_rc=64)


def test_ctrl_c_during_duckdb_exits_130():
    import signal
    import time
    e = dict(os.environ)
    e.pop("KQL_DEBUG", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "kql.cli", SAMPLE,
         "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) "
         "SELECT count(*) FROM r"], stderr=subprocess.PIPE, stdout=subprocess.PIPE,
        text=True, env=e)
    time.sleep(8)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert (proc.returncode, err) == (130, "kql: interrupted\n")


ENDLESS = "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT * FROM r"


def test_endless_recursive_cte_stops_at_the_time_limit(tmp_path):
    p = kql(SAMPLE, ENDLESS, "--max-time", "1", check_rc=1)
    assert p.stderr == ("kql: query stopped after 1 s, the --max-time limit (a recursive CTE "
                        "without a stop condition?); raise it with --max-time SECONDS, 0 for no "
                        "limit\n")
    assert p.stdout == ""
    # the same bound for a Session of the Python API
    from kql import duck
    from kql.execute import Session
    with pytest.raises(duck.TimeLimitError, match="stopped after 1 s"):
        Session({}, max_seconds=1).execute(ENDLESS)
    kql(SAMPLE, "--max-time", "x", check_rc=64)


def test_default_time_limit_is_stated():
    from kql import cli, duck
    assert duck.MAX_SECONDS == 300
    assert f"(default {duck.MAX_SECONDS}; 0: no limit)" in " ".join(
        cli.build_parser().format_help().split())


@pytest.mark.parametrize("query,rows", [
    # 10,000 iterations
    ("WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 10000) "
     "SELECT count(*) AS n, max(n) AS top FROM r", "n,top\n10000,10000\n"),
    # the process tree from pid 1 and 2 (pid 0 is an idle task: its ppid closes a cycle)
    ("WITH RECURSIVE t(pid, depth) AS (SELECT pid, 0 FROM tasks WHERE ppid = 0 AND pid <> 0 "
     "UNION ALL SELECT c.pid, t.depth + 1 FROM tasks c JOIN t ON c.ppid = t.pid AND c.pid <> 0) "
     "SELECT count(*) AS n FROM t", None),
])
def test_recursive_ctes_that_end_still_run(query, rows):
    p = kql(SAMPLE, query, "-f", "csv", check_rc=0)
    if rows is None:  # every task but the idle ones, once
        rows = kql(SAMPLE, "SELECT count(*) AS n FROM tasks WHERE pid <> 0", "-f", "csv",
                   check_rc=0).stdout
    assert p.stdout == rows and p.stderr == ""


def test_export_into_an_unwritable_directory_is_one_line(tmp_path, monkeypatch, capsys):
    from kql import cli, export
    if os.geteuid() != 0:
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o555)
    else:  # root writes anywhere: make the write fail as it would
        ro = tmp_path / "ro"

        def denied(t, path):
            raise PermissionError(13, "Permission denied")
        monkeypatch.setattr(export, "_write_parquet", denied)
    rc = cli.main(["export", SAMPLE, "-o", str(ro / "sub"), "--tables", "tasks", "-j", "1"])
    err = capsys.readouterr().err
    assert rc == 1
    assert err.splitlines()[-1] == f"kql: export: cannot write {ro}/sub/tasks/" + \
        err.split("/sub/tasks/")[1].split(":")[0] + ": Permission denied"


@pytest.mark.parametrize("case,what,symbol", [
    (100095, "kallsyms: pfn 0x124c9 text 3 at 3747", "runqueues"),
    (101123, "kallsyms: pfn 0x12328 random 15 at 935, pfn 0x124ca zero 4 at 478", "init_task"),
])
def test_damaged_kallsyms_name_is_a_dump_error(tmp_path, case, what, symbol):
    """Fuzz finding: a damaged kallsyms name hid a symbol (LookupError, exit 3)."""
    import fuzzing
    data, done, _q = fuzzing.dump_case(case)
    assert done == what
    f = tmp_path / "x.kdump"
    f.write_bytes(data)
    # a fresh cache: the sample's cached kallsyms (same build-id) would hide the
    # damage; no System.map to fall back to (the fixtures' kernels hold one)
    p = kql(str(f), "SELECT pid FROM tasks", check_rc=2,
            env={"XDG_CACHE_HOME": str(tmp_path / "cache"), "KQL_DEBUG_ROOTS": str(tmp_path)})
    if symbol == "init_task":   # what a kernel without CONFIG_KALLSYMS_ALL looks like
        assert p.stderr == ("kql: error: the dump's kallsyms has no init_task (a kernel built "
                            "without CONFIG_KALLSYMS_ALL, or damaged kallsyms) and no System.map "
                            f"for {fixture('sample').release} was found: give --system-map or "
                            "--vmlinux\n")
    else:
        assert p.stderr == f"kql: error: cannot read tasks: no symbol named '{symbol}'\n"


def test_damaged_btf_is_a_dump_error(tmp_path):
    """Fuzz finding: damaged BTF hid 'struct rq' (TypeNotFoundError, exit 3)."""
    import fuzzing
    data, done, _q = fuzzing.dump_case(203291)
    assert done == "btf: pfn 0x128bc flip bit 5 at 2371, pfn 0x12717 0xff x8 at 2743"
    f = tmp_path / "x.kdump"
    f.write_bytes(data)
    p = kql(str(f), "SELECT pid FROM tasks", check_rc=2,
            env={"XDG_CACHE_HOME": str(tmp_path / "cache")})  # not the sample's cached BTF
    assert p.stderr == "kql: error: cannot read tasks: no type named 'struct rq'\n"


def test_huge_value_from_a_damaged_bitmap_is_null_with_a_warning(tmp_path):
    """Fuzz finding: meminfo computed a 4300-digit integer; its warning text failed."""
    import fuzzing
    data, done, _q = fuzzing.dump_case(101467)
    assert done == "bitmap2: text 4 at 38326"
    f = tmp_path / "x.kdump"
    f.write_bytes(data)
    p = kql(str(f), "SELECT * FROM meminfo", "-f", "csv")
    assert p.returncode in (0, 2), p.stderr
    assert "internal error" not in p.stderr


def test_vmcoreinfo_numbers_may_be_hex():
    """6.12 writes NUMBER(VMALLOC_START)=0x…, arm64 NUMBER(kimage_voffset)=0x…"""
    from kql.dump.base import validate_vmcoreinfo
    info = {"NUMBER(VMALLOC_START)": "0xffffd0da80000000", "NUMBER(phys_base)": "-656408576",
            "NUMBER(x)": "0xzz", "SIZE(y)": "-1"}
    assert validate_vmcoreinfo(info, "d") == [
        "d: VMCOREINFO NUMBER(x)='0xzz' is not a number: ignored",
        "d: VMCOREINFO SIZE(y)='-1' is not a number: ignored"]
    assert info == {"NUMBER(VMALLOC_START)": "0xffffd0da80000000",
                    "NUMBER(phys_base)": "-656408576"}


# ------------------------------------- damaged kallsyms/VMCOREINFO: changed answers

@pytest.mark.parametrize("case,region,what,warning", [
    (85, "vmcoreinfo", "vmcoreinfo: zero 2 at 6250, 0xff x2 at 8120, text 2 at 7133",
     "<fuzz>: VMCOREINFO line 'ÿÿRNELOFFSET=37400000' is damaged: ignored"),
    (92, "kallsyms", "kallsyms: pfn 0x124ca u64 0x8000000000000000 at 432, pfn 0x12326 zero 1 "
     "at 3862, pfn 0x124ca flip bit 0 at 506",
     "kallsyms is damaged: kallsyms_token_index[173] is 614, not 615 (after token 172's NUL)"),
    (322, "kallsyms", "kallsyms: pfn 0x12324 0xff x4 at 1938",
     "kallsyms is damaged: kallsyms_offsets out of order at entry 4535 (kthread_complete_and_exit "
     "at 0xffffffffb84bfb00, kthread at 0xffffffffb840fb20)"),
    (384, "kallsyms", "kallsyms: pfn 0x124c9 flip bit 5 at 4094",
     "kallsyms is damaged: kallsyms_token_index[215] is 759, not 762 (after token 214's NUL)"),
    (1004, "kallsyms", "kallsyms: pfn 0x124c9 u64 0x10000000000 at 4045",
     "kallsyms is damaged: kallsyms_seqs_of_names out of order at 889: "
     "'__BTF_ID__func__bpf_lsm_perf_event_write__893408' (entry 62113) before "
     "'__BTF_ID__func__bpf_lsm_paccess_check__65836' (entry 61878)"),
])
def test_damage_that_changes_an_answer_is_warned_about(case, region, what, warning):
    """Fuzz findings: the answer changed and nothing said so.  Now the
    damage is found (VMCOREINFO's line form; the token table, markers and
    address order of kallsyms) and the answer comes with a warning."""
    import fuzzing
    data, done, q = fuzzing.dump_case(case, region)
    assert done == what
    rows, warnings = fuzzing.run_dump(data, q, cache_dir=False)
    assert rows != fuzzing.run_dump(fuzzing.sample(), q, cache_dir=False)[0]
    if region == "kallsyms":
        warning += ": symbol names and addresses may be wrong"
    assert warning in warnings


def test_damaged_kallsyms_warning_is_printed(tmp_path):
    import fuzzing
    data, _done, q = fuzzing.dump_case(384, "kallsyms")
    f = tmp_path / "x.kdump"
    f.write_bytes(data)
    p = kql(str(f), "SELECT symbol FROM stack_frames WHERE pid = 100 AND level = 2", "-f", "csv",
            check_rc=0, env={"XDG_CACHE_HOME": str(tmp_path / "cache")})
    assert p.stdout == "symbol\n__do_sys_pause c_+0x24\n"
    assert p.stderr == (
        "kql: warning: kallsyms is damaged: kallsyms_token_index[215] is 759, not 762 (after "
        "token 214's NUL): symbol names and addresses may be wrong\n"
        "kql: warning: kallsyms is damaged: kallsyms_seqs_of_names out of order at 767: "
        "'__BTF_ID__func__bpf_lsm_file_send_sigiotask__748179' (entry 61968) before "
        "'__BTF_ID__func__bpf_lsm_file_se c_t_fowner__747178' (entry 61967): symbol names and "
        "addresses may be wrong\n")


def _vmcoreinfo(key):
    from kql.dump import open_dump
    d = open_dump(SAMPLE)
    try:
        return d.vmcoreinfo[key]
    finally:
        d.close()


def test_pagesize_other_than_the_architectures_is_a_dump_error(tmp_path):
    page = _vmcoreinfo("PAGESIZE")
    other = str(int(page) * 2)
    p = kql(patched(tmp_path, (f"PAGESIZE={page}".encode(), f"PAGESIZE={other}".encode())),
            "SELECT memory_bytes FROM sys", check_rc=2)
    assert p.stderr == (f"kql: error: {tmp_path}/x.kdump: VMCOREINFO PAGESIZE={other} is not "
                        f"the x86_64 page size kql reads ({page})\n")


def test_vmcoreinfo_contradicting_memory_is_a_warning(tmp_path):
    """A well-formed but wrong BUILD-ID (sys.build_id) or SYMBOL(x): the
    kernel's own build-id note and symbols say otherwise."""
    bid = _vmcoreinfo("BUILD-ID")
    prb = _vmcoreinfo("SYMBOL(prb)")
    bad_bid = ("0" if bid[0] != "0" else "1") + bid[1:]
    bad_prb = prb[:-3] + ("f" if prb[-3] != "f" else "e") + prb[-2:]
    f = patched(tmp_path, (f"BUILD-ID={bid}".encode(), f"BUILD-ID={bad_bid}".encode()),
                (f"SYMBOL(prb)={prb}".encode(), f"SYMBOL(prb)={bad_prb}".encode()))
    p = kql(f, "SELECT build_id FROM sys", "-f", "csv", check_rc=0,
            env={"XDG_CACHE_HOME": str(tmp_path / "cache")})
    assert p.stdout == f"build_id\n{bad_bid}\n"
    assert p.stderr == (f"kql: warning: VMCOREINFO SYMBOL(prb)={bad_prb}, but the symbols put "
                        f"it at {prb}\n"
                        f"kql: warning: VMCOREINFO BUILD-ID={bad_bid}, but the kernel's build-id "
                        f"note says {bid}\n")


def test_kerneloffset_off_the_kernel_alignment_is_a_dump_error(tmp_path):
    off = _vmcoreinfo("KERNELOFFSET")
    bad = off[:-1] + ("1" if off[-1] != "1" else "2")
    p = kql(patched(tmp_path, (f"KERNELOFFSET={off}".encode(), f"KERNELOFFSET={bad}".encode())),
            "SELECT kaslr_offset FROM sys", check_rc=2)
    assert p.stderr == (f"kql: error: corrupt VMCOREINFO: KERNELOFFSET={bad} is not a multiple "
                        f"of 0x200000 (the least x86_64 kernel alignment)\n")


def test_vmcoreinfo_lines_and_values_of_the_kernels_form():
    from kql.dump.base import parse_vmcoreinfo, validate_vmcoreinfo
    damaged = []
    info = parse_vmcoreinfo(b"OSRELEASE=6.1\x01x\nBUILD-ID=ab\nSYM\xffBOL(x)=1\nSYMBOL(y)=2\n"
                            b"OFFSET(page.flags)=0\nCONFIG_X86_PAE=y\nno key\n\0\0\0", damaged)
    assert damaged == ["SYM\xffBOL(x)=1", "no key"]
    assert validate_vmcoreinfo(info, "d") == ["d: VMCOREINFO OSRELEASE='6.1\\x01x' is damaged: "
                                              "ignored"]
    assert info == {"BUILD-ID": "ab", "SYMBOL(y)": "2", "OFFSET(page.flags)": "0",
                    "CONFIG_X86_PAE": "y"}


# ------------------------------------------- damaged printk ring: changed answers

@pytest.mark.parametrize("case,what,warning", [
    (3156, "printk: pfn 0x12c63 u64 0x7fffffff at 2555",
     ("printk record 66: text block damaged (text_len 0 in a block of 120 bytes)",
      "printk record 66: timestamp 36028797002186752 ns out of order with its "
      "neighbours' (0, 0): damaged, NULL")),
    (3943, "printk: pfn 0x12c63 u64 0x0 at 1678",
     "printk record 56: text block damaged (text_len 0 in a block of 72 bytes)"),
    (4499, "printk: pfn 0x12c66 flip bit 5 at 1962",
     "1 printk record dropped: info->seq out of sequence with the descriptor ids (damaged)"),
    (5037, "printk: pfn 0x12c62 u64 0xffffffff at 3136, pfn 0x12c92 random 16 at 3518",
     "printk record 26: text block damaged (text_len 65535 in a block of 96 bytes)"),
    (8197, "printk: pfn 0x12c84 zero 1 at 1837, pfn 0x12cbb u64 0x8000000000000000 at 1780",
     "1 printk record dropped: still being written (reserved, not committed)"),
    (8329, "printk: pfn 0x12ca1 flip bit 0 at 1391, pfn 0x12cbb random 16 at 3196, "
     "pfn 0x12c7f 0xff x2 at 2824",
     "1 printk record dropped: descriptor between tail and head holds another id "
     "(damaged or overwritten)"),
])
def test_damaged_printk_records_are_warned_about(case, what, warning):
    """Fuzz findings (a 10,000-dump campaign): a damaged printk_info (seq,
    text_len) or descriptor (state, id) changed dmesg silently.  Now the
    kernel's own invariants are checked (seq - id the same for every record,
    a text block no shorter than text_len nor much longer, the block's id
    word, the descriptor's id and state) and each damaged record is dropped or
    its text NULL, with a warning."""
    import fuzzing
    data, done, q = fuzzing.dump_case(case)
    assert (done, q) == (what, "SELECT seq, ts_ns, level, text FROM dmesg")
    rows, warnings = fuzzing.run_dump(data, q, cache_dir=False)
    assert rows != fuzzing.run_dump(fuzzing.sample(), q, cache_dir=False)[0]
    assert warnings == ([warning] if isinstance(warning, str) else list(warning))


def test_damaged_printk_timestamp_is_null_with_a_warning():
    """Fuzz finding (a printk-only campaign): a record's ts_nsec with a high
    bit set came back as a date 39 hours after boot between records of
    second 0.  A stamp off both neighbours' the same way by over a minute is
    NULL now, with a warning; the rest of the record stands."""
    import fuzzing
    data, done, q = fuzzing.dump_case(21292, "printk")
    assert done == ("printk: pfn 0x12c63 u64 0x8000000000000000 at 1582, "
                    "pfn 0x12c8f 0xff x1 at 2164, pfn 0x12c9b 0xff x1 at 2430")
    rows, warnings = fuzzing.run_dump(data, q, cache_dir=False)
    base = fuzzing.run_dump(fuzzing.sample(), q, cache_dir=False)[0]
    [(got, want)] = [(r, b) for r, b in zip(rows, base) if r != b]
    assert (got["seq"], got["ts_ns"]) == (55, None)
    assert {**got, "ts_ns": want["ts_ns"]} == want
    assert warnings == ["printk record 55: timestamp 140737488355328 ns out of order with "
                        "its neighbours' (0, 0): damaged, NULL"]


def test_kallsyms_without_per_cpu_offset_on_an_smp_kernel_is_a_dump_error():
    """Fuzz finding: a bit flipped in kallsyms' names lost __per_cpu_offset;
    kql took the kernel for a UP one and the idle task of CPU 1 ended the
    query in IndexError (exit 3).  Now: exit 2, one line."""
    import fuzzing
    from kql.errors import DumpError
    data, done, q = fuzzing.dump_case(30827)
    assert done == "kallsyms: pfn 0x124c9 flip bit 2 at 3718"
    with pytest.raises(DumpError) as e:
        fuzzing.run_dump(data, q, cache_dir=False)
    assert str(e.value) == ("the kernel's symbols have no __per_cpu_offset, yet nr_cpu_ids "
                            "is 2 (damaged kallsyms?)")
