#!/usr/bin/env python3
"""Benchmark: open a dump and list pid, comm, state of every task — kql vs drgn.

Run on demand (not in CI):

    pip install drgn==0.3.0
    python benchmarks/bench_tasks.py [--fixture 6.1-big] [--runs 5] [--drgn-python PY]

Each run is a fresh process (import and open costs count), kql and drgn
alternating, on the same dump.  Reports wall time (min / median / max) and peak
RSS per tool, and checks that both printed the same set of pids.  drgn reads
types from the debug vmlinux (DWARF); kql is measured from the dump alone
(BTF + kallsyms) with a warm cache (decoded kallsyms names and BTF index of
this build-id on disk, as after any earlier query on a dump of that kernel)
and a cold one (those files removed before every run: the first query on a
new kernel; the parser tables, which do not depend on the kernel, stay), and
with --vmlinux cold (empty cache directory: DWARF, kallsyms, BTF and parser
tables) and warm.  kql's packages are byte-compiled first, as an
installed package is (PYTHONDONTWRITEBYTECODE would otherwise make every run
compile them from source).
"""

from __future__ import annotations

import argparse
import compileall
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


def run_with_rusage(cmd, env=None) -> tuple[float, int]:
    """Wall seconds and peak RSS (KiB) of one fresh process (output discarded)."""
    t0 = time.perf_counter()
    pid = os.fork()
    if pid == 0:  # child
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        os.execvpe(cmd[0], cmd, env or os.environ)
    _, status, ru = os.wait4(pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status):
        raise SystemExit(f"{' '.join(cmd[:4])} … failed")
    return wall, ru.ru_maxrss


def main() -> int:
    from fixtures import fixture

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--fixture", default="6.1-big")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--query", default="SELECT pid, comm, state FROM tasks")
    ap.add_argument("--drgn-python", default=sys.executable,
                    help="the Python that has drgn 0.3.0 (e.g. a venv of its own)")
    args = ap.parse_args()
    fx = fixture(args.fixture)
    dump = fx.dump("elf" if "elf" in fx.kinds else None)
    py = sys.executable
    kql = [py, "-m", "kql.cli", dump, args.query, "--format", "csv"]
    drgn = [args.drgn_python, str(HERE / "drgn_tasks.py"), dump, fx.vmlinux]
    for pkg in ("kql", "grammar", "planner"):
        compileall.compile_dir(str(HERE.parent / pkg), quiet=1)
    cache = tempfile.mkdtemp(prefix="kql-bench-cache-")
    env_cold = dict(os.environ, XDG_CACHE_HOME=cache)
    btf_cache = tempfile.mkdtemp(prefix="kql-bench-btf-cache-")
    env_btf = dict(os.environ, XDG_CACHE_HOME=btf_cache)

    # correctness first: same pids (drgn's for_each_task leaves out idle tasks)
    k_out = subprocess.run(kql, capture_output=True, text=True, check=True, env=env_btf).stdout
    d_out = subprocess.run(drgn, capture_output=True, text=True, check=True).stdout
    k_pids = {int(line.split(",")[0]) for line in k_out.splitlines()[1:]}
    d_pids = {int(line.split(",")[0]) for line in d_out.splitlines()[1:]}
    print(f"dump: {args.fixture} ({dump}), {len(k_pids)} pids from kql, {len(d_pids)} from drgn; "
          f"drgn's missing from kql: {len(d_pids - k_pids)}")

    results: dict[str, list[tuple[float, int]]] = {"kql (BTF, no vmlinux)": [], "drgn 0.3.0 (vmlinux)": [],
                                                   "kql (BTF, cold cache)": [],
                                                   "kql --vmlinux (warm cache)": [],
                                                   "kql --vmlinux (cold cache)": []}
    kql_vm = kql + ["--vmlinux", fx.vmlinux]
    for i in range(args.runs):
        results["kql (BTF, no vmlinux)"].append(run_with_rusage(kql, env_btf))
        results["drgn 0.3.0 (vmlinux)"].append(run_with_rusage(drgn))
        for f in Path(btf_cache, "kql").glob("*.pickle"):  # this kernel's; not the grammar's
            f.unlink()
        results["kql (BTF, cold cache)"].append(run_with_rusage(kql, env_btf))
        if i == 0:
            shutil.rmtree(cache, ignore_errors=True)
            os.makedirs(cache)
            results["kql --vmlinux (cold cache)"].append(run_with_rusage(kql_vm, env_cold))
        results["kql --vmlinux (warm cache)"].append(run_with_rusage(kql_vm, env_cold))
    print(f"{'':28} {'min s':>7} {'median s':>9} {'max s':>7} {'peak RSS MiB':>13}")
    for name, rs in results.items():
        walls = [w for w, _ in rs]
        rss = max(r for _, r in rs) / 1024
        print(f"{name:28} {min(walls):7.2f} {statistics.median(walls):9.2f} {max(walls):7.2f} "
              f"{rss:13.0f}")
    shutil.rmtree(cache, ignore_errors=True)
    shutil.rmtree(btf_cache, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
