"""sys: one row of system facts (crash ``sys``)."""

from __future__ import annotations

from functools import cached_property


from kql.helpers import sys as sysh
from kql.tables.base import (ADDRESS, Column, FLOAT64, INT32, INT64, STRING,
                            ScanContext, TIMESTAMP_UTC, TableSpec)

__all__ = ["TABLES", "SysRow"]


class SysRow:
    """The one row; each fact is read when its column is asked for."""

    def __init__(self, kernel):
        self.kernel = kernel

    def uts(self, field: str) -> str:
        return sysh.utsname(self.kernel)[field]

    @cached_property
    def load(self) -> tuple[float, float, float]:
        return sysh.loadavg(self.kernel)

    @cached_property
    def panic_task(self):
        return sysh.panic_task(self.kernel)

    def date(self):
        ns = sysh.dump_time_ns(self.kernel)
        return None if ns is None else ns // 1000

    def panic_pid(self):
        t = self.panic_task
        return None if t is None else t.pid.value_()

    def dump_path(self) -> str:
        d = self.kernel.dump
        describe = getattr(d, "describe_path", None)
        return describe() if describe is not None else str(d.path)


def _rows(ctx: ScanContext):
    yield SysRow(ctx.kernel)


TABLES = (
    TableSpec(
        name="sys",
        doc="One row of system facts: uname, clock, load, memory, tasks, panic "
            "(crash `sys`).",
        walk="one row: init_uts_ns, tk_core, avenrun, panic_cpu, dmesg",
        rows=_rows,
        examples=("SELECT release, uptime_s, panic FROM sys",),
        columns=(
            Column("release", STRING, "kernel release (uname -r)",
                   lambda r: r.uts("release")),
            Column("version", STRING, "kernel version string (uname -v)",
                   lambda r: r.uts("version")),
            Column("machine", STRING, "hardware name (uname -m)",
                   lambda r: r.uts("machine")),
            Column("nodename", STRING, "host name (uname -n)",
                   lambda r: r.uts("nodename")),
            Column("domainname", STRING, "NIS domain name",
                   lambda r: r.uts("domainname")),
            Column("cpus", INT32, "online CPUs (__cpu_online_mask)",
                   lambda r: len(r.kernel.online_cpus())),
            Column("date", TIMESTAMP_UTC, "wall-clock time of the dump "
                   "from the kernel's clock (timekeeper xtime; else the kdump header)",
                   SysRow.date),
            Column("uptime_s", FLOAT64, "seconds since boot (CLOCK_BOOTTIME, as "
                   "/proc/uptime)", lambda r: sysh.uptime_ns(r.kernel) / 1e9),
            Column("load_1", FLOAT64, "1-minute load average (avenrun[0])",
                   lambda r: r.load[0]),
            Column("load_5", FLOAT64, "5-minute load average (avenrun[1])",
                   lambda r: r.load[1]),
            Column("load_15", FLOAT64, "15-minute load average (avenrun[2])",
                   lambda r: r.load[2]),
            Column("tasks", INT64, "tasks, threads and idle tasks included (rows "
                   "of the tasks table)", lambda r: sysh.nr_tasks(r.kernel)),
            Column("memory_bytes", INT64, "RAM managed by the kernel "
                   "(totalram_pages, /proc/meminfo MemTotal)",
                   lambda r: sysh.totalram_bytes(r.kernel)),
            Column("panic", STRING, "the 'Kernel panic - not syncing: ...' line "
                   "of the log; NULL if none", lambda r: sysh.panic_message(r.kernel)),
            Column("panic_cpu", INT32, "CPU that panicked (panic_cpu); NULL if "
                   "none", lambda r: sysh.panic_cpu(r.kernel)),
            Column("panic_pid", INT32, "pid of the task running on the panic CPU; "
                   "NULL if no panic", SysRow.panic_pid),
            Column("kaslr_offset", ADDRESS, "KASLR offset of the kernel text",
                   lambda r: r.kernel.kaslr_offset),
            Column("page_offset", ADDRESS, "start of the direct map (page_offset_base)",
                   lambda r: r.kernel.page_offset),
            Column("pgtable_levels", INT32, "page-table levels (4, or 5 with "
                   "LA57)", lambda r: r.kernel.pgtable_levels),
            Column("dump_format", STRING, "dump file format ('elf', 'kdump', ...)",
                   lambda r: r.kernel.dump.format),
            Column("dump_path", STRING, "dump file path(s)", SysRow.dump_path),
            Column("build_id", STRING, "kernel build id (VMCOREINFO BUILD-ID)",
                   lambda r: r.kernel.vmcoreinfo.get("BUILD-ID")),
        ),
    ),
)
