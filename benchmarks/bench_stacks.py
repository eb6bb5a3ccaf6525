#!/usr/bin/env python3
"""Benchmark: every task's kernel stack — kql's `SELECT pid, stack FROM tasks`
against drgn's `prog.stack_trace(task)` over all tasks.

Run on demand (not in CI):

    pip install drgn==0.3.0
    python benchmarks/bench_stacks.py [--fixture 6.1-big] [--runs 3] [--drgn-python PY]

Each run is a fresh process (import, open and table-loading costs count),
kql and drgn alternating on the same dump.  drgn reads the debug vmlinux
(DWARF, which it also unwinds with); kql works from the dump alone (ORC and
kallsyms from dump memory, BTF types), and is also timed with --vmlinux
(DWARF types from a warm cache).  Before timing, both outputs are compared:
per pid, kql's function list against drgn's non-inline frame names.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
from bench_tasks import run_with_rusage  # noqa: E402  (one measuring function for all benchmarks)


def drgn_main(vmcore: str, vmlinux: str, names_too: bool = True) -> int:
    """The drgn side: print "pid<TAB>name,name,..." for every task (or, with
    ``names_too`` false, only walk the stacks and print frame counts)."""
    import drgn
    from drgn.helpers.linux.pid import for_each_task

    prog = drgn.Program()
    prog.set_core_dump(vmcore)
    prog.load_debug_info([vmlinux])
    out = []
    for task in for_each_task(prog):
        try:
            trace = prog.stack_trace(task)
            if not names_too:
                out.append(f"{task.pid.value_()}\t{len(trace)}")
                continue
            # kernel frames only (drgn goes on into user space through the
            # syscall's pt_regs)
            names = [f.name or hex(f.pc) for f in trace
                     if not f.is_inline and f.pc >= 0xFFFF800000000000]
        except (drgn.FaultError, ValueError) as e:
            names = [f"<{type(e).__name__}>"]
        out.append(f"{task.pid.value_()}\t{','.join(names)}")
    sys.stdout.write("\n".join(out) + "\n")
    return 0


def parse_kql(out: str) -> dict[int, list[list[str]]]:
    import json
    stacks: dict[int, list[list[str]]] = {}
    for line in out.splitlines():
        r = json.loads(line)
        stacks.setdefault(r["pid"], []).append(r["stack"] or [])
    return stacks


def parse_drgn(out: str) -> dict[int, list[list[str]]]:
    stacks: dict[int, list[list[str]]] = {}
    for line in out.splitlines():
        pid, _, names = line.partition("\t")
        stacks.setdefault(int(pid), []).append(names.split(",") if names else [])
    return stacks


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] in ("--drgn", "--drgn-trace-only"):
        return drgn_main(sys.argv[2], sys.argv[3], sys.argv[1] == "--drgn")
    from fixtures import fixture

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--fixture", default="6.1-big")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--query", default="SELECT pid, stack FROM tasks")
    ap.add_argument("--drgn-python", default=os.environ.get("DRGN_PYTHON", sys.executable),
                    help="python with drgn installed (e.g. a separate venv's)")
    args = ap.parse_args()
    fx = fixture(args.fixture)
    dump = fx.dump("elf" if "elf" in fx.kinds else None)
    py = sys.executable
    kql = [py, "-m", "kql.cli", dump, args.query, "--format", "jsonl"]
    kql_vm = kql + ["--vmlinux", fx.vmlinux]
    drgn = [args.drgn_python, str(Path(__file__).resolve()), "--drgn", dump, fx.vmlinux]
    drgn_walk = [args.drgn_python, str(Path(__file__).resolve()), "--drgn-trace-only", dump,
                 fx.vmlinux]

    # correctness first (these runs also warm the page cache and kql's DWARF cache)
    k_out = subprocess.run(kql, capture_output=True, text=True, check=True).stdout
    subprocess.run(kql_vm, capture_output=True, text=True, check=True)
    d_out = subprocess.run(drgn, capture_output=True, text=True, check=True).stdout
    ks, ds = parse_kql(k_out), parse_drgn(d_out)
    n_k = sum(len(v) for v in ks.values())
    n_d = sum(len(v) for v in ds.values())
    same = label = differ = 0
    examples = []
    for pid, dl in ds.items():
        if pid == 0 or pid not in ks:
            continue
        k1, d1 = ks[pid][0], dl[0]
        # DWARF names the syscall entry after its function, kallsyms (and so
        # /proc/PID/stack and kql) after the nearest label.
        d2 = ["entry_SYSCALL_64_after_hwframe" if n == "entry_SYSCALL_64" else n for n in d1]
        # and after the source function, without the compiler's clone
        # suffixes (el0_svc_common.constprop.0 is el0_svc_common in DWARF)
        k2 = [re.sub(r"\.(constprop|isra|part|cold|llvm)\.\d+.*$", "", n) for n in k1]
        if k1 == d1:
            same += 1
        elif k1 == d2 or k2 == d1:
            label += 1
        else:
            differ += 1
            if len(examples) < 3:
                examples.append((pid, k1, d1))
    print(f"dump: {args.fixture} ({dump})")
    print(f"stacks: {n_k} from kql, {n_d} from drgn; of {same + label + differ} pids both "
          f"have (idle tasks aside): {same} identical function lists, {label} identical "
          f"but for kallsyms names (kql, as /proc: entry_SYSCALL_64_after_hwframe, "
          f"name.constprop.0) vs DWARF ones (drgn), {differ} differ")
    for pid, k1, d1 in examples:
        print(f"  e.g. pid {pid}: kql {k1}\n  {'':>{len(str(pid)) + 8}}drgn {d1}")

    results: dict[str, list[tuple[float, int]]] = {
        "kql (dump only: ORC, BTF)": [], "drgn 0.3.0 (vmlinux), names": [],
        "drgn 0.3.0, stack_trace only": [], "kql --vmlinux (warm cache)": []}
    for _ in range(args.runs):
        results["kql (dump only: ORC, BTF)"].append(run_with_rusage(kql))
        results["drgn 0.3.0 (vmlinux), names"].append(run_with_rusage(drgn))
        results["drgn 0.3.0, stack_trace only"].append(run_with_rusage(drgn_walk))
        results["kql --vmlinux (warm cache)"].append(run_with_rusage(kql_vm))
    print(f"{'':30} {'min s':>7} {'median s':>9} {'max s':>7} {'peak RSS MiB':>13}")
    for name, rs in results.items():
        walls = [w for w, _ in rs]
        rss = max(r for _, r in rs) / 1024
        print(f"{name:30} {min(walls):7.2f} {statistics.median(walls):9.2f} {max(walls):7.2f} "
              f"{rss:13.0f}")
    print(f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
