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
    assert p.stderr.startswith("kql: reading files needs --allow-files (")
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
