"""Locate kql's test vmcores (built by tests/vmcores/build.py) and their truth.

    from fixtures import FIXTURES, fixture
    fx = fixture("6.1-live")
    fx.dump("elf")          # path of one dump file (FORMAT[kind] is its Dump.format)
    fx.truth["tasks"]       # what the guest's /proc said
    fx.vmlinux, fx.system_map

``FIXTURES`` lists every recipe; ``DUMPS`` lists every (recipe, dump kind)
pair, for parametrizing tests over all dumps.  A missing fixture is an error,
not a skip: `tests/setup.sh` builds them all before the suite runs.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "vmcores"))
import build  # noqa: E402

SAMPLE_DIR = HERE / "sample"

# A fixture's dump kinds (the builder's file names) and the Dump.format each opens as.
FORMAT = {"elf": "elf", "kdump": "kdump", "kdump-flat": "kdump-flattened"}

# Kernels whose kallsyms lists functions only (no CONFIG_KALLSYMS_ALL: Debian's
# arm64) take their variables from System.map, which kql finds by release
# under $KQL_DEBUG_ROOTS: the unpacked fixture kernels.
os.environ.setdefault("KQL_DEBUG_ROOTS", os.pathsep.join(
    sorted(str(p) for p in (build.CACHE / "kernels").glob("*") if p.is_dir())))


@dataclass(frozen=True)
class Fixture:
    name: str
    path: Path

    @functools.cached_property
    def meta(self) -> dict:
        f = self.path / "fixture.json"
        if not f.exists():
            raise FileNotFoundError(
                f"fixture {self.name} is not built ({self.path}); run tests/setup.sh "
                f"or python tests/vmcores/build.py {self.name}")
        return json.loads(f.read_text())

    @functools.cached_property
    def truth(self) -> dict:
        return json.loads((self.path / "truth.json").read_text())

    @property
    def recipe(self) -> dict:
        """The recipe (from the builder: no dump or file is read)."""
        return build.RECIPES[self.name]

    @property
    def kinds(self) -> list[str]:
        """The dump kinds, from the recipe for a built fixture (collection reads
        no file), from the shipped metadata for the sample."""
        if self.name == "sample":
            return list(self.meta["dumps"])
        return list(build.RECIPES[self.name].get("dumps") or ["kdump-flat", "kdump"])

    def dump(self, kind: str | None = None) -> str:
        dumps = self.meta["dumps"]
        kind = kind or next(iter(dumps))
        return str(self.path / dumps[kind])

    @property
    def vmlinux(self) -> str:
        return self.meta["vmlinux"]

    @property
    def system_map(self) -> str:
        # the real System.map sits beside the debug vmlinux (boot/System.map
        # in the image package is a placeholder)
        return str(Path(self.vmlinux).parent / f"System.map-{self.release}")

    @property
    def release(self) -> str:
        return self.meta["release"]


# The test being set up or run (conftest.py keeps it), so that reading a built
# fixture from a test not marked ``fixtures`` fails: ``-m "not fixtures"`` must
# hold every test that runs without QEMU fixtures.
CURRENT_TEST = None


def fixture(name: str) -> Fixture:
    if name == "sample":
        return Fixture("sample", SAMPLE_DIR)
    item = CURRENT_TEST
    if item is not None and item.get_closest_marker("fixtures") is None:
        raise AssertionError(f"{item.nodeid} reads fixture {name!r} but is not marked "
                             f"@pytest.mark.fixtures")
    return Fixture(name, build.fixture_dir(name))


# 32-bit x86 recipes are read with their vmlinux and checked by tests/test_i386.py
# (what already works there); the fixture-driven tests run over the others.
I386 = [n for n in build.RECIPES if build.RECIPES[n].get("arch") == "i386"]
FIXTURES = [n for n in build.RECIPES if n != "sample" and n not in I386]


def needs_vmlinux(name: str) -> bool:
    """Debian's 32-bit x86 kernels have no BTF: types come from the -dbg vmlinux."""
    return build.RECIPES.get(name, {}).get("arch") == "i386"
# Every dump kind each recipe produces (from the recipe, so no dump is read to
# parametrize the tests).
DUMPS = [(n, k) for n in FIXTURES for k in fixture(n).kinds]


# ---------------------------------------------------------------- shared test helpers

def expected_pgtable_levels(fx: Fixture) -> int:
    """Page-table levels the fixture's kernel runs with: i386: 3 (PAE); x86_64: 5 with LA57
    (a recipe's `cpu max` has it); arm64 (4K pages): 5 for a kernel built for
    52-bit VAs (Debian's 6.12: LPA2, which QEMU's max CPU has), else 4."""
    if fx.recipe.get("arch") == "i386":
        return 3                        # PAE
    if fx.recipe.get("arch") == "arm64":
        config = Path(fx.vmlinux).parents[4] / "boot" / f"config-{fx.release}"
        return 5 if "CONFIG_ARM64_VA_BITS=52\n" in config.read_text() else 4
    return 5 if fx.recipe.get("cpu") == "max" else 4


_kernels: dict = {}


def kernel(name: str, kind: str | None = None, vmlinux: bool = False):
    """A Kernel on one dump of a fixture, opened once per test session
    (closed by conftest.py at the end)."""
    from kql.kernel import Kernel
    fx = fixture(name)
    kind = kind or fx.kinds[0]
    key = (name, kind, vmlinux)
    k = _kernels.get(key)
    if k is None:
        # a kernel without BTF (32-bit x86) is read with its debug vmlinux
        vmlinux = vmlinux or needs_vmlinux(name)
        k = _kernels[key] = Kernel(fx.dump(kind), vmlinux=fx.vmlinux if vmlinux else None)
    return k


def close_kernels() -> None:
    for k in _kernels.values():
        k.close()
    _kernels.clear()


def run(k, table: str, columns=None, **kw):
    """Scan ``table`` directly (no planner) → (list of row dicts, Warnings)."""
    from kql.tables import get_table
    from kql.tables.base import ScanContext, Warnings, scan
    spec = get_table(table)
    w = Warnings()
    ctx = ScanContext(k, list(columns or spec.star_columns()), warnings=w, **kw)
    return scan(spec, ctx).to_pylist(), w


def stable_tasks(truth) -> dict:
    """Tasks the guest printed that still exist, unchanged, at dump time."""
    skip = set(truth["transient_pids"])
    return {int(p): t for p, t in truth["tasks"].items() if int(p) not in skip}


def excluded_values(result, column: str) -> int:
    """Values of ``column`` in a query ``result`` that kql made NULL because
    the dump level excluded their page (its counted ExcludedPageError warnings)."""
    return result.warnings.counts.get((column, "ExcludedPageError"), 0)


def excluded_task(d, pid: int) -> bool:
    """Proof that the dump lacks task ``pid`` (``d``: a kql Dump or a Kernel):
    its lookup through the pid idr (``find_task``) meets a page the dump level
    excluded (ExcludedPageError on an idr node, the struct pid or the
    task_struct itself); for a Dump, kql's own ``WHERE pid = N`` also gives no
    readable row and says why (NULL + an excluded-page warning)."""
    from kql.errors import ExcludedPageError
    from kql.helpers.pid import find_task
    k = getattr(d, "kernel", d)
    try:
        t = find_task(k, pid)
        if t.value_():
            t.pid.value_()
            t.comm.string_()
        return False
    except ExcludedPageError:
        pass
    if k is d:
        return True
    r = d.session.execute(f"SELECT pid, comm FROM tasks WHERE pid = {pid}")[-1]
    rows = [x for x in r.table.to_pylist() if x["comm"] is not None]
    return not rows and any("excluded by the dump level" in w
                            for w in r.warnings.lines() + k.warnings)


def check_missing_tasks(fx: Fixture, d, missing) -> None:
    """Tasks the guest printed but kql did not list: only a makedumpfile-
    filtered dump may lack any, and each must be proven by ``excluded_task``
    (so every task the dump holds readably is listed, however many pages the
    dump level dropped)."""
    missing = sorted(missing)
    if missing:
        assert fx.recipe.get("makedumpfile"), (fx.name, missing)
        assert [p for p in missing if not excluded_task(d, p)] == [], (fx.name, missing)


TASK_RUNNING = 0
_task_files: dict = {}


def truth_task_file(fx: Fixture, tid: int, name: str) -> str | None:
    """The body of /proc/<tgid>/task/<tid>/<name> (stat, status, stack, wchan)
    as the guest printed it, from the raw truth.log."""
    key = (str(fx.path), name)
    files = _task_files.get(key)
    if files is None:
        import re
        files = _task_files[key] = {}
        text = (fx.path / "truth.log").read_bytes().decode(errors="replace")
        for m in re.finditer(rf"^@@ /proc/\d+/task/(\d+)/{name}\n(.*?)\n@@@",
                             text.replace("\r\n", "\n"), re.M | re.S):
            files[int(m.group(1))] = m.group(2).strip()
    return files.get(tid)


def kthread_ran(fx: Fixture, k, t: dict, state: int | None = None) -> bool:
    """May what the dump shows of a task (its state, its stack) differ from
    what the guest printed (truth task ``t``)?  Only for a kernel thread, and
    only if the dump proves it was scheduled since: timers and work wake
    kernel threads (rcu_preempt, kcompactd, ksoftirqd, kworkers) at any
    moment, and on a busy host the window between the print and the dump is
    long.  The proof: its context switches (task->nvcsw + nivcsw) exceed
    those /proc/PID/status printed (it ran and went off the CPU since), or the
    dump shows it runnable (``state`` TASK_RUNNING) on a runqueue (woken
    since).  User tasks of the scenario sleep by construction and must
    match exactly."""
    from kql.helpers.pid import find_task
    if not t["is_kthread"]:
        return False
    status = truth_task_file(fx, t["pid"], "status")
    if status is None:
        return False
    printed = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    task = find_task(k, t["pid"])
    switches = task.nvcsw.value_() + task.nivcsw.value_()
    if switches > int(printed["voluntary_ctxt_switches"]) + \
            int(printed["nonvoluntary_ctxt_switches"]):
        return True
    return state == TASK_RUNNING and bool(task.on_rq.value_())


def skipped_pids(truth) -> set:
    """Pids a helper test skips: the transient ones and the panicking task."""
    return set(truth.get("transient_pids") or []) | {truth.get("panic_pid")}


class Excluded:
    """Counts per-task checks that hit pages makedumpfile filtered out (on the
    6.12 kdump, Debian's makedumpfile drops some slab pages; drgn agrees)."""

    def __init__(self, fx):
        self.filtered = bool(fx.recipe.get("makedumpfile"))
        self.hits = self.total = 0

    def __enter__(self):
        self.total += 1
        return self

    def __exit__(self, typ, value, tb):
        from kql.errors import ExcludedPageError
        if typ is not None and issubclass(typ, ExcludedPageError) and self.filtered:
            self.hits += 1
            return True
        return False

    def check(self):
        assert self.hits <= self.total // 5, f"{self.hits} of {self.total} excluded"
