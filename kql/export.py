"""Export dumps to Parquet, and query a directory of exports.

Layout of an export directory (plain Parquet, readable without kql)::

    DIR/<table>/<dump_id>.parquet     one file per table per dump
    DIR/dumps/<dump_id>.parquet       the manifest row of each dump

Every exported row carries provenance columns: dump_id, release, build_id,
dump_time, dump_path.  Files are written atomically: a temporary file
``.<dump_id>.parquet.<host>-<pid>.<random>.tmp`` beside the target, then a
rename, so an interrupted export never leaves a partial Parquet file under a
``*.parquet`` name (temporary names start with a dot and end in ``.tmp``, so
no ``*.parquet`` glob reads them).  A temporary file left by a killed export
(SIGKILL, power loss) is removed by the next export of the same dump into the
directory once its writer process is gone.  The manifest row is written
last: a dump with table files but no ``dumps/<dump_id>.parquet`` was
interrupted.  Each dump is independent, so a fleet can export on many
machines into one directory or object-store prefix and query it with any
engine:

    SELECT release, st, count(*) FROM read_parquet('DIR/tasks/*.parquet') GROUP BY ALL
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import datetime
import hashlib
import os
import re
import signal
import socket
import sys
import time
from pathlib import Path

import pyarrow as pa

from kql.atomic import atomic_file
from kql.errors import KqlError, QueryError
from kql.tables.base import NotInThisKernel

PROVENANCE = ("dump_id", "release", "build_id", "dump_time", "dump_path")


def dump_id(kernel) -> str:
    """A stable id for a dump, the same on every machine: a hash of its
    VMCOREINFO (release, build-id, crash time, KASLR offset…), its size, and
    the first MiB of each file (headers and notes: kdump's timestamp, ELF's
    per-CPU registers), so two live dumps of one boot (same VMCOREINFO, same
    size) still get different ids; a live kernel's (/proc/kcore) includes
    when it was opened."""
    h = hashlib.sha256(kernel.dump.vmcoreinfo_raw)
    if kernel.dump.live:        # a running kernel: each export is of another moment
        h.update(repr(kernel.dump.timestamp).encode())
    for p in _paths(kernel.dump.path):
        try:
            h.update(str(os.path.getsize(p)).encode())
            with open(p, "rb") as f:
                h.update(f.read(1 << 20))
        except OSError:
            pass
    return h.hexdigest()[:16]


def _paths(p):
    return p if isinstance(p, (list, tuple)) else [p]


def exportable_tables(only=None) -> list[str]:
    from kql.tables import catalog
    names = [n for n, s in catalog().items() if s.params is None]
    if only:
        unknown = [t for t in only if t not in names]
        if unknown:
            raise QueryError(f"unknown table '{unknown[0]}' (tables: {', '.join(names)})")
        names = [n for n in names if n in only]
    return names


def _empty(name: str):
    """A table the kernel does not have, as zero rows of its columns."""
    from kql.tables import catalog
    from kql.tables.base import Columns
    spec = catalog()[name]
    cols = [spec.column(n) for n in spec.star_columns()]
    return Columns([c.name for c in cols], [c.type for c in cols],
                   [[] for _ in cols], 0).to_arrow()


def _dump_time(session, kernel) -> datetime.datetime | None:
    """When the dump was taken: the kernel's own clock (``sys.date``), the
    same for every format of one crash; else the kdump header's timestamp;
    else NULL (ELF cores have no header time)."""
    try:
        date = session.query("SELECT date FROM sys").column(0)[0].as_py()
    except KqlError:
        date = None
    if date is not None:
        return date
    ts = getattr(kernel.dump, "timestamp", None)
    if ts:
        return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc)
    return None


class Progress:
    """A progress bar per dump on a terminal, plain lines otherwise.

    Several dumps exported at once each own one terminal line (``slot`` of
    ``slots``, counted from the top of the block the parent reserved): a
    worker redraws only its line (save cursor, move up, redraw, restore), in
    one write, so parallel workers never garble each other's bars."""

    def __init__(self, label: str, total: int, stream=None, slot: int = 0, slots: int = 0):
        self.label = label
        self.total = total
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.slot, self.slots = slot, slots
        self.done = 0

    def step(self, what: str) -> None:
        self.done += 1
        width = 20
        filled = width * self.done // max(1, self.total)
        line = f"kql export: {self.label} [{'#' * filled}{'.' * (width - filled)}] " \
               f"{self.done}/{self.total} {what}"
        if not self.tty:
            self.stream.write(line + "\n")
        elif self.slots:
            up = self.slots - self.slot
            self.stream.write(f"\x1b7\x1b[{up}A\r{line[:120]}\x1b[K\x1b8")
        else:
            self.stream.write("\r" + line[:120].ljust(120))
            if self.done == self.total:
                self.stream.write("\n")
        self.stream.flush()


def export_dump(path, outdir: str, tables=None, vmlinux=None, zero_excluded=False,
                progress: bool = True, slot: int = 0, slots: int = 0) -> dict:
    """Export one dump; returns its manifest row."""
    from kql.execute import Session
    from kql.kernel import open_kernel

    t0 = time.time()
    kernel = open_kernel(path, vmlinux, zero_excluded=zero_excluded)
    did = dump_id(kernel)
    session = Session({None: kernel})
    prov = {
        "dump_id": did,
        "release": kernel.release,
        "build_id": kernel.vmcoreinfo.get("BUILD-ID"),
        "dump_time": _dump_time(session, kernel),
        "dump_path": os.path.abspath(path if isinstance(path, str) else path[0]),
    }
    names = exportable_tables(tables)
    remove_stale_temps(outdir, did)
    bar = Progress(os.path.basename(prov["dump_path"]), len(names), slot=slot,
                   slots=slots) if progress else None
    rows, errors, warnings = {}, {}, 0
    for name in names:
        try:
            res = session.execute(f"SELECT * FROM {name}")[-1]
            table = res.table
            warnings += res.warnings.total
        except NotInThisKernel:  # config without CONFIG_IKCONFIG: no rows, not an error
            table = _empty(name)
        except KqlError as e:
            errors[name] = e.one_line()
            if bar:
                bar.step(f"{name}: FAILED")
            continue
        t = _with_provenance(table, prov)
        _write_table(t, Path(outdir) / name / f"{did}.parquet")
        rows[name] = t.num_rows
        if bar:
            bar.step(name)
    manifest = {**prov, "format": kernel.dump.format, "tables": ",".join(rows),
                "rows": sum(rows.values()), "warnings": warnings,
                "errors": "; ".join(f"{k}: {v}" for k, v in errors.items()) or None,
                "seconds": round(time.time() - t0, 3)}
    _write_table(pa.Table.from_pylist([manifest], schema=_MANIFEST_SCHEMA),
                 Path(outdir) / "dumps" / f"{did}.parquet")
    kernel.close()
    return manifest


def _write_table(t: pa.Table, path: Path) -> None:
    """:func:`_write_parquet` into a directory made on demand; a directory
    that cannot be written is a QueryError (exit 1), which stops the export."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_parquet(t, path)
    except OSError as e:
        raise QueryError(f"export: cannot write {path}: {e.strerror or e}") from None


_MANIFEST_SCHEMA = pa.schema([
    ("dump_id", pa.string()), ("release", pa.string()), ("build_id", pa.string()),
    ("dump_time", pa.timestamp("us", tz="UTC")), ("dump_path", pa.string()),
    ("format", pa.string()), ("tables", pa.string()), ("rows", pa.int64()),
    ("warnings", pa.int64()), ("errors", pa.string()), ("seconds", pa.float64()),
])


def _with_provenance(t: pa.Table, prov: dict) -> pa.Table:
    n = t.num_rows
    cols = [pa.array([prov["dump_id"]] * n, pa.string()),
            pa.array([prov["release"]] * n, pa.string()),
            pa.array([prov["build_id"]] * n, pa.string()),
            pa.array([prov["dump_time"]] * n, pa.timestamp("us", tz="UTC")),
            pa.array([prov["dump_path"]] * n, pa.string())]
    for name, col in zip(PROVENANCE, cols):
        if name in t.column_names:
            t = t.drop_columns([name])
        t = t.append_column(name, col)
    return t


def _temp_tag() -> str:
    # host and pid of the writer, so a later export can tell a stale
    # temporary file (writer gone) from one being written right now
    return f"{socket.gethostname().replace('.', '_')}-{os.getpid()}"


_TEMP = re.compile(r"^\.(?P<target>.+\.parquet)\.(?P<host>[^.]+)-(?P<pid>\d+)\.[^.]+\.tmp$")


def _write_parquet(t: pa.Table, path: Path) -> None:
    """Write ``t`` to ``path`` atomically: a hidden temporary file beside it
    (``.<name>.<host>-<pid>.<random>.tmp``: never matches ``*.parquet``),
    flushed to disk, then renamed over ``path``.  On any exception, including
    KeyboardInterrupt, the temporary file is removed."""
    import pyarrow.parquet as pq

    with atomic_file(path, "wb", tag=_temp_tag(), fsync=True) as f:
        pq.write_table(t, f, compression="zstd")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temps(outdir, did: str | None = None) -> list[str]:
    """Remove temporary files that killed exports left in ``outdir``: those
    of dump ``did`` (all dumps if None) whose writer, on this host, is gone.
    Another host's temporary files are left alone (its writer may be alive);
    no ``*.parquet`` glob reads them either way.  Returns the removed paths."""
    host = socket.gethostname().replace(".", "_")
    removed = []
    d = Path(outdir)
    if not d.is_dir():
        return removed
    for sub in d.iterdir():
        if not sub.is_dir():
            continue
        for f in sub.glob(".*.tmp"):
            m = _TEMP.match(f.name)
            if not m or m["host"] != host or _pid_alive(int(m["pid"])):
                continue
            if did is not None and m["target"] != f"{did}.parquet":
                continue
            with contextlib.suppress(FileNotFoundError):
                f.unlink()
                removed.append(str(f))
    return removed


def _terminate(signum, frame):
    # SIGTERM (batch schedulers, timeout(1)) unwinds like Ctrl-C, so the
    # temporary file being written is removed
    raise KeyboardInterrupt


def export(paths, outdir: str, tables=None, jobs: int | None = None, vmlinux=None,
           zero_excluded=False) -> list[dict]:
    """Export several dumps, in parallel processes; one manifest row each, in
    the order given.  A dump that cannot be exported (bad file, unreadable
    core data) gets a row with ``errors`` set and no files; the others go on.
    SIGINT or SIGTERM stops every worker, each removing the temporary file
    it was writing."""
    if os.path.exists(outdir) and not os.path.isdir(outdir):
        raise QueryError(f"export: {outdir} exists and is not a directory")
    try:
        os.makedirs(outdir, exist_ok=True)
    except OSError as e:
        raise QueryError(f"export: cannot create {outdir}: {e.strerror or e}") from None
    exportable_tables(tables)  # unknown names fail before any work
    jobs = max(1, min(jobs or os.cpu_count() or 1, len(paths)))
    slots = len(paths) if len(paths) > 1 and sys.stderr.isatty() else 0
    if slots:
        sys.stderr.write("\n" * slots)  # one line per dump for the bars
        sys.stderr.flush()
    old = signal.signal(signal.SIGTERM, _terminate) if _in_main_thread() else None
    try:
        if jobs == 1:
            return [_export_one(p, outdir, tables, vmlinux, zero_excluded, i, slots)
                    for i, p in enumerate(paths)]
        return _export_parallel(paths, outdir, tables, jobs, vmlinux, zero_excluded, slots)
    finally:
        if old is not None:
            signal.signal(signal.SIGTERM, old)


def _export_one(path, outdir, tables, vmlinux, zero_excluded, slot=0, slots=0) -> dict:
    t0 = time.time()
    try:
        return export_dump(path, outdir, tables, vmlinux, zero_excluded, slot=slot, slots=slots)
    except QueryError:  # the export directory cannot be written: no dump will do better
        raise
    except KqlError as e:
        return {"dump_id": None, "release": None, "build_id": None, "dump_time": None,
                "dump_path": os.path.abspath(path if isinstance(path, str) else path[0]),
                "format": None, "tables": "", "rows": 0, "warnings": 0,
                "errors": e.one_line(), "seconds": round(time.time() - t0, 3), "failed": True}


def _in_main_thread() -> bool:
    import threading
    return threading.current_thread() is threading.main_thread()


def _worker_init() -> None:
    signal.signal(signal.SIGTERM, _terminate)


def _export_parallel(paths, outdir, tables, jobs, vmlinux, zero_excluded, slots) -> list[dict]:
    pool = concurrent.futures.ProcessPoolExecutor(max_workers=jobs, initializer=_worker_init)
    futs = []
    try:
        futs = [pool.submit(_export_one, p, outdir, tables, vmlinux, zero_excluded, i, slots)
                for i, p in enumerate(paths)]
        out = [f.result() for f in futs]
    except BaseException:
        # Interrupted (or a worker died): stop the other workers the way
        # Ctrl-C would, so each removes its temporary file, then wait.
        for f in futs:
            f.cancel()
        for proc in list((getattr(pool, "_processes", None) or {}).values()):
            with contextlib.suppress(ProcessLookupError, AttributeError):
                os.kill(proc.pid, signal.SIGINT)
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    return out


# ---------------------------------------------------------------- query exports

def parquet_connection(directory: str, text: str | None = None, *, allow_files: bool = False,
                       max_seconds: int | None = None):
    """A DuckDB connection with one view per exported table of ``directory``
    (only the tables whose names occur in ``text``, when given: binding a
    view reads the schema of every file of its table).  It reads that
    directory and no other file unless ``allow_files``."""
    from kql import duck, functions
    d = Path(directory)
    if not d.is_dir():
        raise QueryError(f"--parquet: {directory} is not a directory")
    con = duck.connect(allow_files=allow_files, allowed=(str(d),),
                       max_seconds=duck.MAX_SECONDS if max_seconds is None else max_seconds)
    views = []
    words = set(re.findall(r"\w+", text.lower())) if text is not None else None
    for sub in sorted(p for p in d.iterdir() if p.is_dir()):
        if words is not None and sub.name.lower() not in words:
            continue
        if any(sub.glob("*.parquet")):
            glob = str(Path(os.path.realpath(sub)) / "*.parquet").replace("'", "''")
            con.execute(f'CREATE VIEW "{sub.name}" AS SELECT * FROM '
                        f"read_parquet('{glob}', union_by_name = true)")
            views.append(sub.name)
    if not views and (words is None or not any(p.is_dir() and any(p.glob("*.parquet"))
                                                for p in d.iterdir())):
        raise QueryError(f"--parquet: no exported tables in {directory}")
    functions.register(con, {}, None, None, with_dump=False)
    return con, views


def query_parquet(directory: str, text: str, *, allow_files: bool = False,
                  max_seconds: int | None = None) -> list[pa.Table]:
    """Run kql SQL over an export directory (no dump is opened); only
    ``allow_files`` lets the query read files outside it."""
    import duckdb

    from kql import duck, functions
    from kql.errors import ExecuteError
    from kql.grammar import ast as A
    from kql.grammar import parse
    from kql.planner import FILES_NEED, modern_lambdas, name_items, reads_files, rewrite

    con, _ = parquet_connection(directory, text, allow_files=allow_files,
                                max_seconds=max_seconds)
    out = []
    from kql.execute import check_depth
    for stmt in parse(text):
        check_depth(stmt, text)

        def lower(node):
            if reads_files(node) and not allow_files:
                raise QueryError(f"{FILES_NEED}: {text[node.span[0]:node.span[1]]}", text,
                                 node.span[0], node.span[1])
            if isinstance(node, A.MemberPath) and node.has_arrow():
                raise QueryError("member paths need a live dump, not an export", text,
                                 node.span[0], node.span[1])
            f = functions.FUNCTIONS.get(node.name) if isinstance(node, A.FuncCall) else None
            if f is not None and not f.needs_dump:
                return node.replace(name=f.udf(), args=rewrite(node.args, lower))
            return None
        sql = rewrite(modern_lambdas(name_items(stmt, text)), lower).to_sql()
        try:
            rel = duck.run(con, lambda: con.sql(sql))
        except duckdb.Error as e:
            msg = duck.error_text(e)
            m = re.match(r"Catalog Error: Table with name (\w+) does not exist", msg)
            if m:
                have = sorted(p.name for p in Path(directory).iterdir()
                              if p.is_dir() and any(p.glob("*.parquet")))
                msg = f"no exported table '{m[1]}' in {directory} (tables: {', '.join(have)})"
            raise ExecuteError(msg, text, None) from None
        try:
            out.append(duck.run(con, rel.to_arrow_table) if rel is not None else pa.table({}))
        except duckdb.Error as e:  # errors found while producing rows
            msg = duck.error_text(e)
            raise ExecuteError(msg, text, None) from None
    return out
