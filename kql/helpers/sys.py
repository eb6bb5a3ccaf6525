"""System-wide facts: uname, the kernel's clock, uptime, load average,
memory size, task count and panic information (crash ``sys``).
"""

from __future__ import annotations

from kql.errors import FaultError
from kql.helpers.mm import page_size
from kql.helpers.sched import cpu_rq
from kql.object import Object

__all__ = ["utsname", "timekeeper", "dump_time_ns", "uptime_ns", "loadavg",
           "totalram_bytes", "nr_tasks", "panic_cpu", "panic_task", "panic_message",
           "FSHIFT"]

#: Kernel globals whose type BTF lacks, for Kernel.var() (see kql.helpers).
KERNEL_VARIABLES = {
    "init_uts_ns":      "struct uts_namespace",
    "crashing_cpu":     "int",
    "panic_cpu":        "atomic_t",
    "system_state":     "enum system_states",
    "jiffies":          "unsigned long",
    "jiffies_64":       "u64",
    "timekeeper_data":  "struct tk_data",
    "tk_core":          "struct tk_data",
    "sys_tz":           "struct timezone",
    "tick_cpu_device":  "struct tick_device",
}

#: include/linux/sched/loadavg.h: avenrun[] is fixed point with 11 fraction bits.
FSHIFT = 11


def utsname(kernel) -> dict[str, str]:
    """``init_uts_ns.name`` as text: sysname, nodename, release, version,
    machine, domainname."""
    u = kernel.cache.get("utsname")
    if u is None:
        name = kernel.var("init_uts_ns").name.read_()
        u = {m.name: name.member_(m.name).string_().decode(errors="replace")
             for m in name.type_.strip_typedefs().members if m.name}
        kernel.cache["utsname"] = u
    return u


def timekeeper(kernel) -> Object:
    """The live ``struct timekeeper`` (``tk_core.timekeeper``).

    :return: ``struct timekeeper``
    """
    sym = kernel.symbols.lookup("tk_core")
    # Since Linux 6.13 (commit "timekeeping: Define a struct type for tk_core
    # to make it reusable") tk_core is a struct tk_data; before, an anonymous
    # struct { seqcount_raw_spinlock_t seq; struct timekeeper timekeeper; }
    # that BTF cannot name: the timekeeper follows the seqcount, aligned as
    # its u64 members are (8 bytes; 4 on i386).
    types = kernel.types
    try:
        off = types.find_type("struct tk_data").offsetof("timekeeper")
    except LookupError:
        seq = types.find_type("seqcount_raw_spinlock_t").size
        align = kernel.arch.u64_align
        off = (seq + align - 1) & -align
    return kernel.object("struct timekeeper", sym.address + off)


def _tk_values(kernel) -> dict:
    v = kernel.cache.get("timekeeper_values")
    if v is None:
        tk = timekeeper(kernel).read_()
        mono = tk.tkr_mono
        shift = mono.shift.value_()
        v = {
            "xtime_sec": tk.xtime_sec.value_(),
            "nsec": mono.xtime_nsec.value_() >> shift,
            "mono_base": mono.base.value_(),
            "offs_boot": tk.offs_boot.value_(),
        }
        kernel.cache["timekeeper_values"] = v
    return v


def dump_time_ns(kernel) -> int | None:
    """Wall-clock time of the dump in ns since the epoch: the kernel's
    CLOCK_REALTIME at its last timekeeping update (``xtime_sec`` and the
    shifted ``tkr_mono.xtime_nsec``), else the kdump header's timestamp."""
    try:
        v = _tk_values(kernel)
        if v["xtime_sec"] > 0:
            return v["xtime_sec"] * 1_000_000_000 + v["nsec"]
    except (FaultError, LookupError):
        pass
    ts = getattr(kernel.dump, "timestamp", None)
    return None if ts is None else int(ts * 1_000_000_000)


def uptime_ns(kernel) -> int:
    """CLOCK_BOOTTIME at the last timekeeping update (what /proc/uptime shows):
    ``tkr_mono.base + xtime_nsec >> shift + offs_boot``."""
    v = _tk_values(kernel)
    return v["mono_base"] + v["nsec"] + v["offs_boot"]


def loadavg(kernel) -> tuple[float, float, float]:
    """The 1, 5 and 15 minute load averages (``avenrun[]`` / FIXED_1)."""
    addr = kernel.symbols.lookup("avenrun").address
    size = kernel.arch.pointer_size
    return tuple(kernel.read_ulong(addr + size * i) / (1 << FSHIFT) for i in range(3))


def totalram_bytes(kernel) -> int:
    """``totalram_pages() << PAGE_SHIFT``."""
    # Since Linux 5.0 (commit ca79b0c211af "mm: convert totalram_pages and
    # totalhigh_pages variables to atomic") the variable is _totalram_pages.
    sym = kernel.symbols.get("_totalram_pages") or kernel.symbols.lookup("totalram_pages")
    return kernel.read_ulong(sym.address) * page_size(kernel)


def nr_tasks(kernel) -> int:
    """Number of tasks (threads and idle tasks included; the rows of the
    tasks table), counted once per dump."""
    n = kernel.cache.get("nr_tasks")
    if n is None:
        from kql.helpers.pid import for_each_task_and_pid
        n = kernel.cache["nr_tasks"] = sum(1 for _ in for_each_task_and_pid(kernel))
    return n


def panic_cpu(kernel) -> int | None:
    """The CPU that panicked (``panic_cpu``, set by panic() and crash_kexec()),
    None if no CPU did."""
    sym = kernel.symbols.get("panic_cpu")
    if sym is not None:
        cpu = kernel.read_s32(sym.address)
        if cpu >= 0:
            return cpu
    # A crash dump taken without going through panic_cpu (e.g. an NMI
    # crash_kexec): the CPU that shot the others down.
    if "CRASHTIME" in kernel.vmcoreinfo:
        sym = kernel.symbols.get("crashing_cpu")
        if sym is not None:
            cpu = kernel.read_s32(sym.address)
            if cpu >= 0:
                return cpu
    return None


def panic_task(kernel) -> Object | None:
    """The task running on the panicking CPU (its ``rq->curr``), or None.

    :return: ``struct task_struct *``
    """
    cpu = panic_cpu(kernel)
    if cpu is None:
        return None
    task = cpu_rq(kernel, cpu).curr.read_()
    return task if task.value_() else None


_PANIC_PREFIX = "Kernel panic - not syncing"


def panic_message(kernel) -> str | None:
    """The last "Kernel panic - not syncing: ..." line of the kernel log, or
    None."""
    from kql.helpers.printk import get_printk_records
    for rec in reversed(get_printk_records(kernel)):
        text = rec.text
        if text and _PANIC_PREFIX in text:
            for line in text.splitlines():
                if _PANIC_PREFIX in line:
                    return line[line.index(_PANIC_PREFIX):].rstrip()
    return None
