#!/usr/bin/env python3
"""Benchmark: the shell's Tab completion (kql.completion) on a dump.

Run on demand (not in CI):

    python benchmarks/bench_completion.py [--fixture 6.1-big] [--dump PATH] [--runs 20]

Times the warm-up (the symbol table's name order, the BTF index and the
catalog: the shell does this once before its first prompt) and then each
kind of completion (member paths through pointers, symbols, types,
columns), reporting the median and worst of ``--runs`` calls.  Completion
reads types and symbols only, so the number of tasks in the dump does not
enter; the pages read after the first call are printed to show it (0).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

CASES = [
    ("SELECT task->", " FROM tasks"),
    ("SELECT task->mm->", " FROM tasks"),
    ("SELECT t.task->signal->rlim[0].", " FROM tasks t"),
    ("SELECT task->m", ""),
    ("SELECT addr('init_t", ""),
    ("SELECT CAST(file AS 'struct fi", ""),
    ("SELECT pi", " FROM tasks"),
]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fixture", default="sample")
    ap.add_argument("--dump", help="a dump path instead of a fixture")
    ap.add_argument("--runs", type=int, default=20)
    args = ap.parse_args()
    from kql.completion import candidates, warm
    from kql.kernel import Kernel
    if args.dump:
        path = args.dump
    else:
        from fixtures import fixture
        path = fixture(args.fixture).dump()
    t0 = time.perf_counter()
    k = Kernel(path)
    opened = time.perf_counter() - t0
    t0 = time.perf_counter()
    warm(k)
    warm_ms = (time.perf_counter() - t0) * 1000
    print(f"{path}: opened in {opened:.2f} s; warm-up before the first prompt {warm_ms:.0f} ms")
    pages0 = k.dump.stats.pages_read
    for before, after in CASES:
        times = []
        for _ in range(args.runs):
            t0 = time.perf_counter()
            n = len(list(candidates(k, before, before + after)))
            times.append((time.perf_counter() - t0) * 1000)
        print(f"  {before!r:40} {n:4} candidates  median {statistics.median(times):6.2f} ms  "
              f"first {times[0]:6.2f} ms  worst {max(times):6.2f} ms")
    print(f"pages read by completion after the warm-up: {k.dump.stats.pages_read - pages0}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
