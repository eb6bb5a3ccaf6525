"""Export dumps to Parquet, and query a directory of exports.

Layout of an export directory (plain Parquet, readable without kql)::

    DIR/<table>/<dump_id>.parquet     one file per table per dump
    DIR/dumps/<dump_id>.parquet       the manifest row of each dump

Every exported row carries provenance columns: dump_id, release, build_id,
dump_time, dump_path.  Files are written atomically (temporary file, then
rename), so an interrupted export never leaves a partial Parquet file; each
dump is independent, so a fleet can export on many machines into one
directory or object-store prefix and query it with any engine:

    SELECT release, st, count(*) FROM read_parquet('DIR/tasks/*.parquet') GROUP BY ALL
"""

from __future__ import annotations

import concurrent.futures
import datetime
import hashlib
import os
import sys
import time
from pathlib import Path

import pyarrow as pa

from kql.errors import KqlError, QueryError
from kql.output import atomic_file

PROVENANCE = ("dump_id", "release", "build_id", "dump_time", "dump_path")


def dump_id(kernel) -> str:
    """A stable id for a dump: its VMCOREINFO (release, build-id, crash time,
    KASLR offset…) and size hashed, so the same dump gets the same id on
    every machine."""
    h = hashlib.sha256(kernel.dump.vmcoreinfo_raw)
    try:
        size = sum(os.path.getsize(p) for p in _paths(kernel.dump.path))
    except OSError:
        size = 0
    h.update(str(size).encode())
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


def _dump_time(kernel) -> datetime.datetime | None:
    ts = getattr(kernel.dump, "timestamp", None)
    if ts:
        return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc)
    return None


class Progress:
    """One status line per dump on a terminal, plain lines otherwise."""

    def __init__(self, label: str, total: int, stream=None):
        self.label = label
        self.total = total
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.done = 0

    def step(self, what: str) -> None:
        self.done += 1
        width = 20
        filled = width * self.done // max(1, self.total)
        line = f"kql export: {self.label} [{'#' * filled}{'.' * (width - filled)}] " \
               f"{self.done}/{self.total} {what}"
        if self.tty:
            self.stream.write("\r" + line[:120].ljust(120))
            if self.done == self.total:
                self.stream.write("\n")
        else:
            self.stream.write(line + "\n")
        self.stream.flush()


def export_dump(path, outdir: str, tables=None, vmlinux=None, zero_excluded=False,
                progress: bool = True) -> dict:
    """Export one dump; returns its manifest row."""
    from kql.dump import open_dump
    from kql.execute import Session
    from kql.kernel import Kernel

    t0 = time.time()
    kernel = Kernel(open_dump(path, zero_excluded=zero_excluded), vmlinux=vmlinux)
    did = dump_id(kernel)
    prov = {
        "dump_id": did,
        "release": kernel.release,
        "build_id": kernel.vmcoreinfo.get("BUILD-ID"),
        "dump_time": _dump_time(kernel),
        "dump_path": os.path.abspath(path if isinstance(path, str) else path[0]),
    }
    session = Session({None: kernel})
    names = exportable_tables(tables)
    bar = Progress(os.path.basename(prov["dump_path"]), len(names)) if progress else None
    rows, errors, warnings = {}, {}, 0
    for name in names:
        try:
            res = session.execute(f"SELECT * FROM {name}")[-1]
        except KqlError as e:
            errors[name] = e.one_line()
            if bar:
                bar.step(f"{name}: FAILED")
            continue
        warnings += res.warnings.total
        t = _with_provenance(res.table, prov)
        d = Path(outdir) / name
        d.mkdir(parents=True, exist_ok=True)
        _write_parquet(t, d / f"{did}.parquet")
        rows[name] = t.num_rows
        if bar:
            bar.step(name)
    manifest = {**prov, "format": kernel.dump.format, "tables": ",".join(rows),
                "rows": sum(rows.values()), "warnings": warnings,
                "errors": "; ".join(f"{k}: {v}" for k, v in errors.items()) or None,
                "seconds": round(time.time() - t0, 3)}
    d = Path(outdir) / "dumps"
    d.mkdir(parents=True, exist_ok=True)
    _write_parquet(pa.Table.from_pylist([manifest], schema=_MANIFEST_SCHEMA), d / f"{did}.parquet")
    kernel.close()
    return manifest


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


def _write_parquet(t: pa.Table, path: Path) -> None:
    import pyarrow.parquet as pq
    with atomic_file(str(path), "wb") as f:
        pq.write_table(t, f, compression="zstd")


def export(paths, outdir: str, tables=None, jobs: int | None = None, vmlinux=None,
           zero_excluded=False) -> list[dict]:
    """Export several dumps, in parallel processes."""
    os.makedirs(outdir, exist_ok=True)
    exportable_tables(tables)  # unknown names fail before any work
    jobs = max(1, min(jobs or os.cpu_count() or 1, len(paths)))
    if jobs == 1:
        return [export_dump(p, outdir, tables, vmlinux, zero_excluded) for p in paths]
    out = []
    with concurrent.futures.ProcessPoolExecutor(max_workers=jobs) as pool:
        futs = [pool.submit(export_dump, p, outdir, tables, vmlinux, zero_excluded) for p in paths]
        for f in futs:
            out.append(f.result())
    return out


# ---------------------------------------------------------------- query exports

def parquet_connection(directory: str):
    """A DuckDB connection with one view per exported table of ``directory``."""
    import duckdb

    d = Path(directory)
    if not d.is_dir():
        raise QueryError(f"--parquet: {directory} is not a directory")
    con = duckdb.connect()
    views = []
    for sub in sorted(p for p in d.iterdir() if p.is_dir()):
        if any(sub.glob("*.parquet")):
            glob = str(sub / "*.parquet").replace("'", "''")
            con.execute(f'CREATE VIEW "{sub.name}" AS SELECT * FROM '
                        f"read_parquet('{glob}', union_by_name = true)")
            views.append(sub.name)
    if not views:
        raise QueryError(f"--parquet: no exported tables in {directory}")
    con.create_function("kql_hex", lambda v: None if v is None else hex(v),
                        [duckdb.sqltypes.UBIGINT], duckdb.sqltypes.VARCHAR)
    return con, views


def query_parquet(directory: str, text: str) -> list[pa.Table]:
    """Run kql SQL over an export directory (no dump is opened)."""
    import duckdb

    from kql.errors import ExecuteError
    from kql.grammar import ast as A
    from kql.grammar import parse
    from kql.planner import KQL_FUNCTIONS, name_outputs, rewrite

    con, _ = parquet_connection(directory)
    out = []
    for stmt in parse(text):
        def lower(node):
            if isinstance(node, A.MemberPath):
                raise QueryError("member paths need a live dump, not an export", text,
                                 node.span[0], node.span[1])
            if isinstance(node, A.FuncCall) and node.name == "hex":
                return node.replace(name=KQL_FUNCTIONS["hex"], args=rewrite(node.args, lower))
            return None
        sql = rewrite(name_outputs(stmt, text), lower).to_sql()
        try:
            rel = con.sql(sql)
        except duckdb.Error as e:
            raise ExecuteError(str(e).split("\n")[0], text, None) from None
        out.append(rel.to_arrow_table() if rel is not None else pa.table({}))
    return out
