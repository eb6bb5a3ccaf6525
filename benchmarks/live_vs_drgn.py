#!/usr/bin/env python3
"""Benchmark: kql live vs drgn 0.3.0 live, inside the 6.1 guest of
tests/live/build_live.py (both read the guest's own /proc/kcore).

Run on demand (not in CI; as root, like the fixture builder):

    python benchmarks/live_vs_drgn.py [--runs 2] [--series 6.1]

Queries: ``SELECT pid, comm, state FROM tasks`` and ``SELECT pid, stack FROM
tasks``; drgn's equivalents walk for_each_task() and print pid, comm,
task_state_to_char() / the function names of prog.stack_trace() (a running
task's trace raises: NULL, as kql's).  Each run is a fresh process (import and
open costs count), kql and drgn alternating, after one warm-up run of each
(kql's on-disk cache of the kernel's kallsyms and BTF is then warm, and the
guest's page cache holds both tools' files).  kql
reads types from the kernel's BTF; drgn from the -dbg vmlinux (DWARF), put on
the guest's disk for it.  Reports wall time (min / median) and peak RSS per
tool and the kql/drgn ratios.  The same file runs in the guest (--in-guest)
and as drgn's side (--drgn tasks|stack VMLINUX).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
QUERIES = {"tasks": "SELECT pid, comm, state FROM tasks",
           "stack": "SELECT pid, stack FROM tasks"}
GUEST_DIR = "/opt/kql-bench"


# ---------------------------------------------------------------- drgn's side (in the guest)

def drgn_side(what: str, vmlinux: str) -> None:
    import drgn
    from drgn.helpers.linux.pid import for_each_task
    from drgn.helpers.linux.sched import task_state_to_char

    prog = drgn.Program()
    prog.set_kernel()                       # /proc/kcore
    prog.load_debug_info([vmlinux])
    out = []
    for task in for_each_task(prog):
        pid = task.pid.value_()
        if what == "tasks":
            out.append(f"{pid},{task.comm.string_().decode()},{task_state_to_char(task)}")
        else:
            try:
                names = [frame.name or "?" for frame in prog.stack_trace(task)]
            except ValueError:              # a running task: no saved registers
                names = None
            out.append(f"{pid},{names}")
    sys.stdout.write("\n".join(out) + "\n")


# ---------------------------------------------------------------- the guest's driver

def in_guest(runs: int, vmlinux: str) -> None:
    sys.path.insert(0, GUEST_DIR)
    from bench_tasks import run_with_rusage

    kql = os.path.join(os.path.dirname(sys.executable), "kql")
    cases = {}
    for q, sql in QUERIES.items():
        cases[("kql", q)] = [kql, "live", sql, "-f", "csv"]
        cases[("drgn", q)] = [sys.executable, os.path.abspath(__file__), "--drgn", q, vmlinux]
    for tool in ("kql", "drgn"):      # warm-up: kql's kallsyms/BTF cache, the page cache
        run_with_rusage(cases[(tool, "tasks")])
    samples = {key: [] for key in cases}
    for _ in range(runs):
        for key, cmd in cases.items():
            samples[key].append(run_with_rusage(cmd))
    for (tool, q), s in samples.items():
        print(json.dumps({"kind": "bench", "tool": tool, "query": q,
                          "wall": [round(w, 3) for w, _ in s], "rss_kib": [r for _, r in s]}),
              flush=True)
    # both listed the same tasks (pids of the tasks query; a task may come or go between runs)
    pids = {}
    for tool in ("kql", "drgn"):
        lines = subprocess.run(cases[(tool, "tasks")], capture_output=True,
                               text=True).stdout.splitlines()
        if tool == "kql":
            lines = lines[1:]                 # the CSV header
        pids[tool] = sorted({int(ln.split(",")[0]) for ln in lines if ln.strip()})
    print(json.dumps({"kind": "bench-pids", **pids}), flush=True)


# ---------------------------------------------------------------- the host

def host(runs: int, series: str) -> int:
    sys.path.insert(0, str(HERE.parent / "tests" / "live"))
    import build_live
    from build_live import build

    name = f"live-{series}"
    recipe = dict(build_live.RECIPES[name], mem=3072)   # drgn's DWARF index wants room
    build.resolve_kernel(recipe["kernel"])
    kdir = build.kernel_dir(recipe["kernel"])
    vmlinux = f"{GUEST_DIR}/vmlinux"
    extra = {f"{GUEST_DIR[1:]}/live_vs_drgn.py": Path(__file__),
             f"{GUEST_DIR[1:]}/bench_tasks.py": HERE / "bench_tasks.py",
             f"{GUEST_DIR[1:]}/vmlinux": kdir["vmlinux"]}
    cmd = (f"$IN {build_live.VENV}/bin/python {GUEST_DIR}/live_vs_drgn.py --in-guest "
           f"--runs {runs} --vmlinux {vmlinux} > $R")
    with tempfile.TemporaryDirectory(prefix="kql-bench-") as tmp:
        out, work = Path(tmp, "out"), Path(tmp, "work")
        out.mkdir()
        work.mkdir()
        t0 = time.time()
        build_live.boot(name, recipe, kdir, out, work, extra=extra, bench=cmd)
        records = build_live.parse_results((out / "results.log").read_bytes())
    bench = {(r["tool"], r["query"]): r for r in records if r.get("kind") == "bench"}
    pids = next((r for r in records if r.get("kind") == "bench-pids"), None)
    if len(bench) != 2 * len(QUERIES):
        print(f"the guest gave {len(bench)} results, not {2 * len(QUERIES)}", file=sys.stderr)
        return 1
    print(f"kql vs drgn 0.3.0, live (/proc/kcore) in a {kdir['release']} guest under TCG, "
          f"{runs} runs each after a warm-up (guest {time.time() - t0:.0f} s)")
    if pids:
        # expected in one only: pid 0 (kql lists the idle tasks, drgn's for_each_task()
        # does not) and each run's own processes
        k, d = set(pids["kql"]), set(pids["drgn"])
        print(f"tasks listed: kql {len(k)}, drgn {len(d)}, in one only: {sorted(k ^ d)}")
    print(f"{'query':8} {'tool':5} {'wall min':>9} {'median':>8} {'peak RSS':>10}")
    for q in QUERIES:
        for tool in ("kql", "drgn"):
            r = bench[(tool, q)]
            print(f"{q:8} {tool:5} {min(r['wall']):8.2f}s {statistics.median(r['wall']):7.2f}s "
                  f"{max(r['rss_kib']) / 1024:8.0f} MB")
        k, d = bench[("kql", q)], bench[("drgn", q)]
        wall = statistics.median(k["wall"]) / statistics.median(d["wall"])
        print(f"{q:8} ratio kql/drgn: wall {wall:.2f}x, "
              f"peak RSS {max(k['rss_kib']) / max(d['rss_kib']):.2f}x")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=2, help="runs of each (default 2: TCG is slow)")
    ap.add_argument("--series", default="6.1", help="guest kernel series (default 6.1)")
    ap.add_argument("--in-guest", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--vmlinux", help=argparse.SUPPRESS)
    ap.add_argument("--drgn", nargs=2, metavar=("WHAT", "VMLINUX"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.drgn:
        drgn_side(*args.drgn)
        return 0
    if args.in_guest:
        in_guest(args.runs, args.vmlinux)
        return 0
    return host(args.runs, args.series)


if __name__ == "__main__":
    sys.exit(main())
