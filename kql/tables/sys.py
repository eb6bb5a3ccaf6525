"""sys: one row of system facts (crash ``sys``)."""

from __future__ import annotations

from functools import cached_property


from kql.helpers import sys as sysh
from kql.tables.base import (ADDRESS, Column, FLOAT64, INT32, INT64, STRING,
                            ScanContext, TIMESTAMP_UTC, TableSpec)

__all__ = ["TABLES", "SysRow"]


class SysRow:
    """The one row; each fact is read when its column is asked for."""

    def __init__(self, prog):
        self.prog = prog

    def uts(self, field: str) -> str:
        return sysh.utsname(self.prog)[field]

    @cached_property
    def load(self) -> tuple[float, float, float]:
        return sysh.loadavg(self.prog)

    @cached_property
    def panic_task(self):
        return sysh.panic_task(self.prog)

    def date(self):
        ns = sysh.dump_time_ns(self.prog)
        return None if ns is None else ns // 1000

    def panic_pid(self):
        t = self.panic_task
        return None if t is None else t.pid.value_()

    def dump_path(self) -> str:
        d = self.prog.dump
        describe = getattr(d, "describe_path", None)
        return describe() if describe is not None else str(d.path)


def _rows(ctx: ScanContext):
    yield SysRow(ctx.kernel)


def _col(name: str, type, doc: str, fn) -> Column:
    """A column whose kernel symbol or type may be missing on some kernels:
    that value is then NULL with a counted warning, like unreadable memory."""
    def value(r):
        try:
            return fn(r)
        except LookupError as e:
            raise ValueError(f"not available in this kernel: {e}") from None
    value.__name__ = name
    return Column(name, type, doc, value)


TABLES = (
    TableSpec(
        name="sys",
        doc="One row of system facts: uname, clock, load, memory, tasks, panic "
            "(crash `sys`).",
        walk="one row: init_uts_ns, tk_core, avenrun, panic_cpu, dmesg",
        rows=_rows,
        examples=("SELECT release, uptime_s, panic FROM sys",),
        columns=(
            _col("release", STRING, "kernel release (uname -r)",
                   lambda r: r.uts("release")),
            _col("version", STRING, "kernel version string (uname -v)",
                   lambda r: r.uts("version")),
            _col("machine", STRING, "hardware name (uname -m)",
                   lambda r: r.uts("machine")),
            _col("nodename", STRING, "host name (uname -n)",
                   lambda r: r.uts("nodename")),
            _col("domainname", STRING, "NIS domain name",
                   lambda r: r.uts("domainname")),
            _col("cpus", INT32, "online CPUs (__cpu_online_mask)",
                   lambda r: len(r.prog.online_cpus())),
            _col("date", TIMESTAMP_UTC, "wall-clock time of the dump "
                   "from the kernel's clock (timekeeper xtime; else the kdump header)",
                   SysRow.date),
            _col("uptime_s", FLOAT64, "seconds since boot (CLOCK_BOOTTIME, as "
                   "/proc/uptime)", lambda r: sysh.uptime_ns(r.prog) / 1e9),
            _col("load_1", FLOAT64, "1-minute load average (avenrun[0])",
                   lambda r: r.load[0]),
            _col("load_5", FLOAT64, "5-minute load average (avenrun[1])",
                   lambda r: r.load[1]),
            _col("load_15", FLOAT64, "15-minute load average (avenrun[2])",
                   lambda r: r.load[2]),
            _col("tasks", INT64, "tasks, threads and idle tasks included (rows "
                   "of the tasks table)", lambda r: sysh.nr_tasks(r.prog)),
            _col("memory_bytes", INT64, "RAM managed by the kernel "
                   "(totalram_pages, /proc/meminfo MemTotal)",
                   lambda r: sysh.totalram_bytes(r.prog)),
            _col("panic", STRING, "the 'Kernel panic - not syncing: ...' line "
                   "of the log; NULL if none", lambda r: sysh.panic_message(r.prog)),
            _col("panic_cpu", INT32, "CPU that panicked (panic_cpu); NULL if "
                   "none", lambda r: sysh.panic_cpu(r.prog)),
            _col("panic_pid", INT32, "pid of the task running on the panic CPU; "
                   "NULL if no panic", SysRow.panic_pid),
            _col("kaslr_offset", ADDRESS, "KASLR offset of the kernel text",
                   lambda r: r.prog.kaslr_offset),
            _col("page_offset", ADDRESS, "start of the direct map (page_offset_base)",
                   lambda r: r.prog.page_offset),
            _col("pgtable_levels", INT32, "page-table levels (4, or 5 with "
                   "LA57)", lambda r: r.prog.pgtable_levels),
            _col("dump_format", STRING, "dump file format ('elf', 'kdump', ...)",
                   lambda r: r.prog.dump.format),
            _col("dump_path", STRING, "dump file path(s)", SysRow.dump_path),
            _col("build_id", STRING, "kernel build id (VMCOREINFO BUILD-ID)",
                   lambda r: r.prog.vmcoreinfo.get("BUILD-ID")),
        ),
    ),
)
