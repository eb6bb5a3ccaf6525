"""System-wide facts: uname, the kernel's clock, uptime, load average,
memory size, task count and panic information (crash ``sys``).
"""

from __future__ import annotations

from kql.errors import FaultError
from kql.helpers.percpu import cpu_rq
from kql.object import Object

__all__ = ["utsname", "timekeeper", "dump_time_ns", "uptime_ns", "loadavg",
           "totalram_bytes", "nr_tasks", "panic_cpu", "panic_task", "panic_message",
           "FSHIFT"]

#: include/linux/sched/loadavg.h: avenrun[] is fixed point with 11 fraction bits.
FSHIFT = 11


def utsname(prog) -> dict[str, str]:
    """``init_uts_ns.name`` as text: sysname, nodename, release, version,
    machine, domainname."""
    u = prog.cache.get("utsname")
    if u is None:
        name = prog.var("init_uts_ns").name.read_()
        u = {m.name: name.member_(m.name).string_().decode(errors="replace")
             for m in name.type_.strip_typedefs().members if m.name}
        prog.cache["utsname"] = u
    return u


def timekeeper(prog) -> Object:
    """The live ``struct timekeeper`` (``tk_core.timekeeper``).

    :return: ``struct timekeeper``
    """
    sym = prog.symbols.lookup("tk_core")
    # Since Linux 6.13 (commit "timekeeping: Define a struct type for tk_core
    # to make it reusable") tk_core is a struct tk_data; before, an anonymous
    # struct { seqcount_raw_spinlock_t seq; struct timekeeper timekeeper; }
    # that BTF cannot name: the timekeeper follows the seqcount, aligned as
    # its u64 members are (8 bytes; 4 on i386).
    types = prog.types
    try:
        off = types.find_type("struct tk_data").offsetof("timekeeper")
    except LookupError:
        seq = types.find_type("seqcount_raw_spinlock_t").size
        align = prog.arch.u64_align
        off = (seq + align - 1) & -align
    return prog.object("struct timekeeper", sym.address + off)


def _tk_values(prog) -> dict:
    v = prog.cache.get("timekeeper_values")
    if v is None:
        tk = timekeeper(prog).read_()
        mono = tk.tkr_mono
        shift = mono.shift.value_()
        v = {
            "xtime_sec": tk.xtime_sec.value_(),
            "nsec": mono.xtime_nsec.value_() >> shift,
            "mono_base": mono.base.value_(),
            "offs_boot": tk.offs_boot.value_(),
        }
        prog.cache["timekeeper_values"] = v
    return v


def dump_time_ns(prog) -> int | None:
    """Wall-clock time of the dump in ns since the epoch: the kernel's
    CLOCK_REALTIME at its last timekeeping update (``xtime_sec`` and the
    shifted ``tkr_mono.xtime_nsec``), else the kdump header's timestamp."""
    try:
        v = _tk_values(prog)
        if v["xtime_sec"] > 0:
            return v["xtime_sec"] * 1_000_000_000 + v["nsec"]
    except (FaultError, LookupError):
        pass
    ts = getattr(prog.dump, "timestamp", None)
    return None if ts is None else int(ts * 1_000_000_000)


def uptime_ns(prog) -> int:
    """CLOCK_BOOTTIME at the last timekeeping update (what /proc/uptime shows):
    ``tkr_mono.base + xtime_nsec >> shift + offs_boot``."""
    v = _tk_values(prog)
    return v["mono_base"] + v["nsec"] + v["offs_boot"]


def loadavg(prog) -> tuple[float, float, float]:
    """The 1, 5 and 15 minute load averages (``avenrun[]`` / FIXED_1)."""
    addr = prog.symbols.lookup("avenrun").address
    size = prog.arch.pointer_size
    return tuple(prog.read_ulong(addr + size * i) / (1 << FSHIFT) for i in range(3))


def totalram_bytes(prog) -> int:
    """``totalram_pages() << PAGE_SHIFT``."""
    # Since Linux 5.0 (commit ca79b0c211af "mm: convert totalram_pages and
    # totalhigh_pages variables to atomic") the variable is _totalram_pages.
    sym = prog.symbols.get("_totalram_pages") or prog.symbols.lookup("totalram_pages")
    return prog.read_ulong(sym.address) * int(prog.vmcoreinfo.get("PAGESIZE", "4096"))


def nr_tasks(prog) -> int:
    """Number of tasks (threads and idle tasks included; the rows of the
    tasks table), counted once per dump."""
    n = prog.cache.get("nr_tasks")
    if n is None:
        from kql.helpers.sched import for_each_task_and_pid
        n = prog.cache["nr_tasks"] = sum(1 for _ in for_each_task_and_pid(prog))
    return n


def panic_cpu(prog) -> int | None:
    """The CPU that panicked (``panic_cpu``, set by panic() and crash_kexec()),
    None if no CPU did."""
    sym = prog.symbols.get("panic_cpu")
    if sym is not None:
        cpu = prog.read_s32(sym.address)
        if cpu >= 0:
            return cpu
    # A crash dump taken without going through panic_cpu (e.g. an NMI
    # crash_kexec): the CPU that shot the others down.
    if "CRASHTIME" in prog.vmcoreinfo:
        sym = prog.symbols.get("crashing_cpu")
        if sym is not None:
            cpu = prog.read_s32(sym.address)
            if cpu >= 0:
                return cpu
    return None


def panic_task(prog) -> Object | None:
    """The task running on the panicking CPU (its ``rq->curr``), or None.

    :return: ``struct task_struct *``
    """
    cpu = panic_cpu(prog)
    if cpu is None:
        return None
    task = cpu_rq(prog, cpu).curr.read_()
    return task if task.value_() else None


_PANIC_PREFIX = "Kernel panic - not syncing"


def panic_message(prog) -> str | None:
    """The last "Kernel panic - not syncing: ..." line of the kernel log, or
    None."""
    from kql.helpers.printk import get_printk_records
    for rec in reversed(get_printk_records(prog)):
        text = rec.text
        if text and _PANIC_PREFIX in text:
            for line in text.splitlines():
                if _PANIC_PREFIX in line:
                    return line[line.index(_PANIC_PREFIX):].rstrip()
    return None
