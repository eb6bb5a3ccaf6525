#!/usr/bin/env python3
"""Benchmark: `kql export` of the 4,000-task fixture, and cross-dump queries
over 20 copies of the export.

Run on demand (not in CI):

    python benchmarks/bench_export.py [--fixture 6.1-big] [--runs 3] [--copies 20]

1. Export: `kql export DUMP -o DIR` (every table) in a fresh process per run;
   wall time (min / median / max), peak RSS, and the export's size and rows
   per table.
2. Fleet: every table file of the export copied under N different dump_ids
   (the dump_id column rewritten, one file per table per copy, as N
   independent export jobs would leave them) into one directory; then
   cross-dump GROUP BY queries timed two ways: `kql --parquet DIR "SQL"` in a
   fresh process (import + views + query), and DuckDB alone in this process
   over `read_parquet('DIR/<table>/*.parquet')`.  Each result is checked: N
   times the single export's answer.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE))

from bench_tasks import run_with_rusage  # noqa: E402

QUERIES = {
    "tasks per dump and state":
        "SELECT dump_id, st, count(*) AS n FROM tasks GROUP BY ALL",
    "stack signatures across dumps":
        "SELECT stack_sig, count(*) AS tasks, count(DISTINCT dump_id) AS dumps "
        "FROM tasks GROUP BY stack_sig",
    "hottest functions on stacks":
        "SELECT function, count(*) AS frames FROM stack_frames GROUP BY function",
    "open file types per release":
        "SELECT release, type, count(*) AS n FROM open_files GROUP BY ALL",
}


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def export_sizes(d: Path) -> dict[str, tuple[int, int]]:
    import pyarrow.parquet as pq
    out = {}
    for sub in sorted(p for p in d.iterdir() if p.is_dir()):
        files = list(sub.glob("*.parquet"))
        out[sub.name] = (sum(pq.read_metadata(f).num_rows for f in files),
                         sum(f.stat().st_size for f in files))
    return out


def make_fleet(src: Path, dst: Path, copies: int) -> list[str]:
    """``copies`` exports of the same dump under different dump_ids."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    ids = []
    for sub in sorted(p for p in src.iterdir() if p.is_dir()):
        (dst / sub.name).mkdir(parents=True, exist_ok=True)
        for f in sub.glob("*.parquet"):
            t = pq.read_table(f)
            i = t.column_names.index("dump_id")
            for c in range(copies):
                did = f"{f.stem[:11]}-c{c:03d}"
                t2 = t.set_column(i, "dump_id", pa.array([did] * t.num_rows, pa.string()))
                pq.write_table(t2, dst / sub.name / f"{did}.parquet", compression="zstd")
                if sub.name == "tasks":
                    ids.append(did)
    return ids


def time_cli(args: list[str], runs: int) -> tuple[list[float], str]:
    walls = []
    out = ""
    for _ in range(runs):
        t0 = time.perf_counter()
        p = subprocess.run([sys.executable, "-m", "kql.cli", *args], capture_output=True,
                           text=True)
        walls.append(time.perf_counter() - t0)
        if p.returncode:
            raise SystemExit(f"kql {' '.join(args[:2])} failed: {p.stderr}")
        out = p.stdout
    return walls, out


def stats(walls: list[float]) -> str:
    return (f"min {min(walls):.2f} s, median {statistics.median(walls):.2f} s, "
            f"max {max(walls):.2f} s")


def main() -> int:
    from fixtures import fixture

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--fixture", default="6.1-big")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--copies", type=int, default=20)
    ap.add_argument("--keep", metavar="DIR", help="work in DIR and keep it")
    args = ap.parse_args()
    fx = fixture(args.fixture)
    dump = fx.dump("elf" if "elf" in fx.kinds else None)
    work = Path(args.keep or tempfile.mkdtemp(prefix="kql-bench-export-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"dump: {dump} ({human(os.path.getsize(dump))}, "
          f"{len(fx.truth['tasks'])} tasks in the guest's /proc), {os.cpu_count()} CPUs")
    try:
        # 1. export
        walls, rss = [], []
        for r in range(args.runs):
            out = work / f"export-{r}"
            shutil.rmtree(out, ignore_errors=True)
            w, m = run_with_rusage([sys.executable, "-m", "kql.cli", "export", dump,
                                    "-o", str(out)])
            walls.append(w)
            rss.append(m)
        out = work / "export-0"
        sizes = export_sizes(out)
        import pyarrow.parquet as pq
        manifest = pq.read_table(out / "dumps").to_pylist()[0]
        print(f"\nexport, all {len(sizes) - 1} tables, {args.runs} runs: {stats(walls)}; "
              f"peak RSS {max(rss) / 1024:.0f} MiB")
        print(f"  manifest: {manifest['rows']} rows, {manifest['warnings']} warnings, "
              f"errors: {manifest['errors']}, export_dump {manifest['seconds']:.2f} s")
        total = sum(b for _, b in sizes.values())
        print(f"  size on disk: {human(total)} (dump {human(os.path.getsize(dump))})")
        for t, (n, b) in sorted(sizes.items(), key=lambda kv: -kv[1][1]):
            print(f"    {t:14} {n:>9} rows {human(b):>10}")

        # 2. fleet of copies
        fleet = work / "fleet"
        shutil.rmtree(fleet, ignore_errors=True)
        t0 = time.perf_counter()
        ids = make_fleet(out, fleet, args.copies)
        print(f"\nfleet: {len(ids)} copies under distinct dump_ids in {fleet} "
              f"({human(sum(f.stat().st_size for f in fleet.rglob('*.parquet')))}, "
              f"{len(list(fleet.rglob('*.parquet')))} files, built in "
              f"{time.perf_counter() - t0:.1f} s)")
        import duckdb
        con = duckdb.connect()
        for label, sql in QUERIES.items():
            single = json.loads(time_cli(["--parquet", str(out), sql, "-f", "json"], 1)[1])
            walls, text = time_cli(["--parquet", str(fleet), sql, "-f", "json"], args.runs)
            rows = json.loads(text)
            check_fleet(label, single, rows, args.copies)
            table = sql.split(" FROM ")[1].split()[0]
            direct = sql.replace(f"FROM {table}",
                                 f"FROM read_parquet('{fleet}/{table}/*.parquet')")
            dwalls = []
            for _ in range(args.runs):
                t0 = time.perf_counter()
                con.execute(direct).fetchall()
                dwalls.append(time.perf_counter() - t0)
            scanned = args.copies * sizes[table][0]
            print(f"  {label}: {scanned} rows -> {len(rows)} groups; kql --parquet "
                  f"(fresh process) {stats(walls)}; DuckDB alone median "
                  f"{statistics.median(dwalls) * 1000:.0f} ms")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


def check_fleet(label, single, rows, copies):
    """The fleet's answer is the single export's, ``copies`` times."""
    def key(r):
        return tuple((k, v) for k, v in sorted(r.items())
                     if k not in ("dump_id", "n", "tasks", "frames", "dumps"))
    counts = {}
    for r in rows:
        k = key(r)
        n = r.get("n", r.get("tasks", r.get("frames")))
        counts[k] = counts.get(k, 0) + n
    want = {}
    for r in single:
        want[key(r)] = want.get(key(r), 0) + copies * r.get("n", r.get("tasks", r.get("frames")))
    if counts != want:
        raise SystemExit(f"{label}: fleet result is not {copies} x the single export's")
    if "dumps" in (rows[0] if rows else {}) and any(r["dumps"] != copies for r in rows):
        raise SystemExit(f"{label}: a stack signature missing from some copies")


if __name__ == "__main__":
    sys.exit(main())
