#!/usr/bin/env python3
"""Benchmark: the cost of finding kallsyms in a pre-6.0 dump (no VMCOREINFO keys).

Run on demand:

    python benchmarks/bench_kallsyms_find.py [--fixture 5.10-live] [--runs 5]

Reports, each the best of ``--runs`` in this process: the search alone
(:func:`kql.kallsyms_find.find_kallsyms` between SYMBOL(_stext) and
SYMBOL(init_uts_ns)), the whole symbol table without any disk cache (search +
decode), and with a warm cache (the place and the decoded names of this
build-id on disk: no search).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))


def best(fn, runs: int) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> int:
    from fixtures import fixture
    from kql.kallsyms_find import find_kallsyms
    from kql.kernel import Kernel

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--fixture", default="5.10-live")
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    fx = fixture(args.fixture)
    dump = fx.dump()
    cache = tempfile.mkdtemp(prefix="kql-bench-kallsyms-")

    def search():
        k = Kernel(dump, cache_dir=False)
        info = k.vmcoreinfo
        find_kallsyms(k.read, int(info["SYMBOL(_stext)"], 16), int(info["SYMBOL(init_uts_ns)"], 16))
        k.close()

    def symbols(cache_dir):
        def f():
            k = Kernel(dump, cache_dir=cache_dir)
            assert k.symbols.source == "kallsyms"
            k.close()
        return f

    def open_only():
        Kernel(dump, cache_dir=False).close()

    base = best(open_only, args.runs)
    print(f"dump: {args.fixture} ({dump})")
    print(f"open the dump (no symbols):            {base:6.3f} s")
    print(f"+ search for the tables:               {best(search, args.runs) - base:6.3f} s")
    print(f"+ symbols, no disk cache (search+decode): {best(symbols(False), args.runs) - base:6.3f} s")
    symbols(cache)()
    print(f"+ symbols, warm cache (no search):     {best(symbols(cache), args.runs) - base:6.3f} s")
    shutil.rmtree(cache, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
