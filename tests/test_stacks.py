"""Backtraces (kql.arch.orc, kql.helpers.stack, stack_frames / stack_words)
against what the guest's own /proc/PID/stack said (truth.json).

/proc/PID/stack leaves out scheduler functions (stack_trace_save_tsk() skips
__sched text), so a kql stack must END WITH exactly the /proc list: the
frames above it may only be __sched functions, nothing may be missing or
extra below.  Expected values come from the truth files, never from the
dumps.  Known differences, each checked for its cause:

- a task whose task_struct page makedumpfile excluded (Debian 12's
  makedumpfile 1.7.2 misclassifies some 6.12 slab pages at -d 31) has no
  stack at all: the dump does not hold the task;
- a kernel thread the dump proves was scheduled since the print (more
  context switches than /proc/PID/status printed: fixtures.kthread_ran, the
  rule of the task-state tests) may sleep elsewhere in its thread function,
  e.g. rcu_preempt: /proc saw it in rcu_gp_fqs_loop (a grace period
  running), the dump in rcu_gp_kthread itself (waiting for the next one).
"""

from __future__ import annotations

import struct

import pytest

import kql
from fixtures import (DUMPS, FIXTURES, check_missing_tasks, fixture, kernel, kthread_ran,
                      needs_vmlinux, run)
from kql.arch import orc
from kql.errors import ExcludedPageError, FaultError
from kql.helpers.pid import find_task, for_each_task_and_pid
from kql.helpers.sched import running_tasks
from kql.helpers.stack import (Frame, cpu_registers, kallsyms_name, stack_trace,
                               task_stack_bounds, task_stack_names, task_stack_words)
from kql.kallsyms import SymbolTable
from kql.kernel import Kernel
from kql.tables import get_table

ALL_DUMPS = DUMPS + [("sample", "kdump")]
PANIC = [n for n in FIXTURES if "panic" in n] + ["sample"]
SYSCALL_ENTRY = "entry_SYSCALL_64_after_hwframe"
PANIC_CHAIN = ["sysrq_handle_crash", "write_sysrq_trigger", "vfs_write", "ksys_write",
               "do_syscall_64", SYSCALL_ENTRY]
# What stacks look like per architecture: the frames the context switch
# leaves above __schedule (arm64's /proc/PID/stack starts at __switch_to),
# the syscall path, the outermost (entry) frame and user-mode registers.
ARCH_STACKS = {
    "x86_64": dict(switch=[], panic_chain=PANIC_CHAIN, entry=SYSCALL_ENTRY,
                   user=lambda r: r["cs"] & 3 == 3),
    "arm64": dict(switch=["__switch_to"],
                  panic_chain=["sysrq_handle_crash", "write_sysrq_trigger", "vfs_write",
                               "ksys_write", "invoke_syscall", "el0_svc", "el0t_64_sync"],
                  entry="el0t_64_sync", user=lambda r: r["pstate"] & 0xF == 0),
    # 32-bit x86 (frame pointers from the switch frame; the chain of the real
    # dump of i386-6.1-panic, as the guest's own panic Call Trace printed it)
    "i386": dict(switch=[],
                 panic_chain=["sysrq_handle_crash", "__handle_sysrq.cold", "write_sysrq_trigger",
                              "proc_reg_write", "vfs_write", "ksys_write", "__ia32_sys_write",
                              "ia32_sys_call", "__do_fast_syscall_32", "do_fast_syscall_32",
                              "do_SYSENTER_32"],
                 entry="entry_SYSENTER_32", user=lambda r: r["cs"] & 3 == 3),
}



def sched_names(k: Kernel) -> set[str]:
    """Functions in __sched text (what /proc/PID/stack leaves out)."""
    syms = k.symbols
    lo = syms.lookup("__sched_text_start").address
    hi = syms.lookup("__sched_text_end").address
    return {n for n, a in zip(syms.names, syms.addresses) if lo <= a < hi}


def ends_with(stack: list[str], want: list[str]) -> bool:
    return len(stack) >= len(want) and stack[len(stack) - len(want):] == want


def compare(k: Kernel, truth: dict) -> dict:
    """Compare every task's kql stack with /proc's; returns counts and misses."""
    skip = set(truth.get("transient_pids") or [])
    want = {int(p): t["stack"] for p, t in truth["tasks"].items()
            if t.get("stack") and int(p) not in skip}
    got: dict[int, list[str]] = {}
    for task in for_each_task_and_pid(k):
        try:
            pid = task.pid.value_()
        except ExcludedPageError:
            continue            # found through the pid idr, struct not in the dump
        if pid in want and pid not in got:
            got[pid] = task_stack_names(task)
    excluded, misses = [], {}
    for pid in want:
        if pid not in got:
            try:
                t = find_task(k, pid)
                got[pid] = task_stack_names(t)
            except ExcludedPageError:
                excluded.append(pid)
                continue
    sched = sched_names(k)
    exact = 0
    for pid, w in want.items():
        if pid in excluded:
            continue
        g = got[pid]
        if ends_with(g, w) and all(f in sched for f in g[:len(g) - len(w)]):
            exact += 1
        else:
            misses[pid] = (w, g)
    return {"total": len(want), "present": len(want) - len(excluded), "exact": exact,
            "excluded": excluded, "misses": misses}


def explained_miss(fx, k: Kernel, pid: int, w: list[str], g: list[str]) -> bool:
    """A kernel thread the dump proves was scheduled since the print
    (fixtures.kthread_ran: the rule the task-state tests use too) may sleep
    elsewhere now, but in the same thread function: both stacks agree from it
    down (e.g. rcu_preempt, seen in rcu_gp_fqs_loop by /proc, waiting for the
    next grace period in rcu_gp_kthread itself in the dump)."""
    t = fx.truth["tasks"][str(pid)]
    if "kthread" not in w or not kthread_ran(fx, k, t):
        return False
    return ends_with(g, w[w.index("kthread") - 1:])


def check_stacks(fx, k: Kernel) -> dict:
    """Every task's kql stack is /proc's, or the difference is explained."""
    r = compare(k, fx.truth)
    # A missing task is one the dump lacks (its pid idr path or task_struct
    # on a page the dump level dropped), each proven.
    check_missing_tasks(fx, k, r["excluded"])
    assert r["exact"] + len(r["misses"]) == r["present"] > 0
    for pid, (w, g) in r["misses"].items():
        assert explained_miss(fx, k, pid, w, g), (pid, w, g)
    return r


@pytest.mark.parametrize("name,kind", ALL_DUMPS)
@pytest.mark.fixtures
def test_stacks_match_proc(name, kind):
    fx = fixture(name)
    r = check_stacks(fx, kernel(name, kind))
    print(f"{name}/{kind}: {r['exact']}/{r['present']} exact ({r['total']} with a /proc "
          f"stack, {len(r['excluded'])} not in the dump)")


@pytest.mark.parametrize("name", ["6.1-live", "6.12-live", "6.12-panic", "arm64-6.1-live",
                                  "arm64-6.12-live"])
@pytest.mark.fixtures
def test_stacks_with_vmlinux_equal_btf_only(name):
    """Kernel(dump, vmlinux=...) (DWARF types first) walks the same stacks."""
    fx = fixture(name)
    a, b = kernel(name), kernel(name, vmlinux=True)
    for task in for_each_task_and_pid(a):
        try:
            task.pid.value_()
            want = [(f.pc, f.sp, f.function, f.kind) for f in stack_trace(task)]
        except FaultError:
            continue
        other = b.object("struct task_struct", task.value_()).address_of_()
        assert [(f.pc, f.sp, f.function, f.kind) for f in stack_trace(other)] == want
    check_stacks(fx, b)


@pytest.mark.parametrize("name", PANIC)
@pytest.mark.fixtures
def test_panicking_task(name):
    fx = fixture(name)
    k = kernel(name)
    pid = fx.truth["panic_pid"]
    task = find_task(k, pid)
    frames = stack_trace(task)
    names = [f.function for f in frames]
    # __crash_kexec() has no ORC data (STACK_FRAME_NON_STANDARD): the walk
    # finds its caller on the stack and goes on from panic().
    # Kernels with vpanic() (panic() became a wrapper of it; 6.12.118 has it)
    # show vpanic then panic.
    after = names[2:] if names[1] == "vpanic" else names[1:]
    assert names[0] == "__crash_kexec" and after[0] == "panic", names
    arch = ARCH_STACKS[k.arch.name]
    it = iter(names)
    assert all(any(n == want for n in it) for want in arch["panic_chain"]), names
    # Nothing after the syscall entry: its pt_regs are user mode.
    assert names[-1] == arch["entry"]
    assert frames[-1].kind == "regs" and arch["user"](frames[-1].regs)
    assert [f.kind for f in frames[:-1]] == ["call"] * (len(frames) - 1)
    # The frames climb the stack.
    sps = [f.sp for f in frames]
    assert sps == sorted(sps) and len(set(sps)) == len(sps)
    lo, hi = task_stack_bounds(task)
    assert all(lo <= sp < hi for sp in sps)
    # It is the panicking CPU's current task, as sys reports it.
    d = kql.open(fx.dump(), vmlinux=fx.vmlinux if needs_vmlinux(name) else None)
    try:
        row = d.query("SELECT panic_pid, panic_cpu FROM sys").to_pylist()[0]
    finally:
        d.close()
    assert row["panic_pid"] == pid
    assert running_tasks(k)[task.value_()] == row["panic_cpu"]


@pytest.mark.parametrize("name", FIXTURES + ["sample"])
@pytest.mark.fixtures
def test_dstate_vfork_parent_and_kthreads(name):
    fx = fixture(name)
    k = kernel(name)
    truth = fx.truth["tasks"]
    sched = sched_names(k)
    vforkers = [int(p) for p, t in truth.items() if t["comm"] == "kql-vforker"
                and t["state"] == 2]
    assert vforkers
    for pid in vforkers:
        names = task_stack_names(find_task(k, pid))
        switch = ARCH_STACKS[k.arch.name]["switch"]
        assert names[:len(switch)] == switch
        names = names[len(switch):]
        # D state in kernel_clone() waiting for the vfork child
        # (wait_for_vfork_done -> wait_for_completion_state/killable).
        assert names[0] == "__schedule" and "schedule" in names
        assert ends_with(names, truth[str(pid)]["stack"])
        top = names[:len(names) - len(truth[str(pid)]["stack"])]
        assert any(n.startswith("wait_for_completion") for n in top), names
        assert all(n in sched for n in top), names
    kthreadd = find_task(k, 2)
    names = task_stack_names(kthreadd)
    assert ends_with(names, truth["2"]["stack"]) and "kthreadd" in names
    # Kernel threads end cleanly at ret_from_fork (ret_from_fork_asm since
    # ret_from_fork() was rewritten in C; 6.12 has it).
    end = names[-1]
    assert end in ("ret_from_fork", "ret_from_fork_asm")
    for p, t in truth.items():
        if t["is_kthread"] and t.get("stack") and int(p) not in fx.truth["transient_pids"]:
            try:
                got = task_stack_names(find_task(k, int(p)))
            except ExcludedPageError:
                continue
            assert got[-1] == end, (p, got)


@pytest.mark.parametrize("name", ["6.1-live", "6.12-live", "6.1-la57"])
@pytest.mark.fixtures
def test_running_idle_tasks_from_cpu_registers(name):
    """On a live (QEMU) dump the CPUs' registers come from the note with
    pr_pid == cpu + 1; both CPUs idle: stacks start at the halt and end at
    the startup code."""
    k = kernel(name)
    notes = dict(k.dump.prstatus())
    for addr, cpu in running_tasks(k).items():
        regs = cpu_registers(k, cpu)
        assert regs == notes[cpu + 1]
        task = k.object("struct task_struct", addr).address_of_()
        frames = stack_trace(task)
        assert frames[0].pc == regs["rip"] and frames[0].sp == regs["rsp"]
        names = [f.function for f in frames]
        assert "do_idle" in names and "cpu_startup_entry" in names, names
        assert names[-1] in ("secondary_startup_64_no_verify", "common_startup_64")


@pytest.mark.parametrize("name", PANIC)
@pytest.mark.fixtures
def test_kdump_cpu_registers_from_crash_notes(name):
    """A kdump's notes are the online CPUs' in CPU order, pr_pid the task's
    pid (0 for every idle task): kql reads each CPU's crash_notes buffer."""
    fx = fixture(name)
    k = kernel(name)
    assert "CRASHTIME" in k.vmcoreinfo
    notes = k.dump.prstatus()
    got = [cpu_registers(k, cpu) for cpu in k.online_cpus()]
    assert got == [r for _, r in notes]
    pids = [p for p, _ in notes]
    assert fx.truth["panic_pid"] in pids and 0 in pids


# -- ORC tables -----------------------------------------------------------------------

@pytest.mark.parametrize("name,layout", [("6.1-live", orc.LAYOUT_6_1),
                                         ("6.12-live", orc.LAYOUT_6_4)])
@pytest.mark.fixtures
def test_orc_layout_detected_and_vmlinux_table_equal(name, layout):
    fx = fixture(name)
    k = kernel(name)
    mine = orc.orc_tables(k)
    assert mine.source == "dump" and mine.layout == layout
    # The 6.4 layout comes with .orc_header; the 6.1 kernel has none.
    assert (k.symbols.get("__start_orc_header") is not None) == (layout == orc.LAYOUT_6_4)
    theirs = orc.load_vmlinux_table(fx.vmlinux, k.kaslr_offset)
    assert theirs.layout == layout
    assert theirs.ips == mine.vmlinux.ips and theirs.raw == mine.vmlinux.raw
    # Every entry decodes; a table read in the other layout does not.
    distinct = {f for _, _, f in orc.ORC_ENTRY.iter_unpack(mine.vmlinux.raw)}
    assert all(orc.decode_flags(f, layout) for f in distinct)
    other = orc.LAYOUT_6_4 if layout == orc.LAYOUT_6_1 else orc.LAYOUT_6_1
    assert any(orc.decode_flags(f, other) is None for f in distinct)


@pytest.mark.fixtures
def test_orc_from_vmlinux_when_dump_table_unreadable():
    fx = fixture("6.1-live")
    k = Kernel(fx.dump("elf"), vmlinux=fx.vmlinux)
    try:
        real_read = k.read
        lo = k.symbols.lookup("__start_orc_unwind_ip").address
        hi = k.symbols.lookup("__stop_orc_unwind").address

        def read(addr, size):
            if addr < hi and addr + size > lo:
                raise FaultError(addr, "test: ORC pages missing")
            return real_read(addr, size)
        k.read = read
        tables = orc.orc_tables(k)
        assert tables.source == "vmlinux" and len(tables.vmlinux) > 100_000
        k.read = real_read
        check_stacks(fx, k)
    finally:
        k.close()


@pytest.mark.parametrize("name", ["6.1-live", "6.12-live"])
@pytest.mark.fixtures
def test_module_orc_tables(name):
    fx = fixture(name)
    k = kernel(name)
    tables = orc.orc_tables(k)
    mods = {t.name: t for t in tables.modules()}
    assert set(mods) == set(fx.truth["modules"])
    assert all(t.layout == tables.layout for t in mods.values())
    k.load_module_symbols()
    n = 0
    for table in k.symbols.extra:
        for sname, addr, kind in zip(table.names, table.addresses, table.kinds):
            if kind in "tT" and not sname.startswith("__pfx_") and ".cold" not in sname:
                # A function's first instruction: a CALL entry, CFA = sp + 8.
                assert tables.table_for(addr) is mods[table.module]
                e = tables.find(addr)
                assert e.type == orc.CALL and e.sp_reg == orc.REG_SP and e.sp_offset == 8, \
                    (sname, e)
                n += 1
    assert n > 20


def test_decode_flags_layouts():
    # 6.1: sp_reg SP(5), bp_reg PREV_SP(1), type REGS(1); end-of-stack = UNDEFINED + end.
    assert orc.decode_flags(0x115, orc.LAYOUT_6_1) == (5, 1, orc.REGS, True)
    assert orc.decode_flags(0x400, orc.LAYOUT_6_1) == (0, 0, orc.END, False)
    assert orc.decode_flags(0x000, orc.LAYOUT_6_1) == (0, 0, orc.UNDEFINED, False)
    assert orc.decode_flags(0x405, orc.LAYOUT_6_1) is None        # end with an sp_reg
    # 6.3: signal at bit 10, end at bit 11.
    assert orc.decode_flags(0x515, orc.LAYOUT_6_3) == (5, 1, orc.REGS, True)
    assert orc.decode_flags(0x800, orc.LAYOUT_6_3) == (0, 0, orc.END, False)
    # 6.4+: type:3 (CALL 2, REGS 3, REGS_PARTIAL 4, END 1), signal bit 11.
    assert orc.decode_flags(0x205, orc.LAYOUT_6_4) == (5, 0, orc.CALL, False)
    assert orc.decode_flags(0xb05, orc.LAYOUT_6_4) == (5, 0, orc.REGS, True)
    assert orc.decode_flags(0x100, orc.LAYOUT_6_4) == (0, 0, orc.END, False)
    assert orc.decode_flags(0x505, orc.LAYOUT_6_4) is None         # type 5
    assert orc.detect_layout({0x005, 0x015, 0x115, 0x400, 0x000}, False) == orc.LAYOUT_6_1
    assert orc.detect_layout({0x005, 0x515, 0x800, 0x000}, False) == orc.LAYOUT_6_3
    assert orc.detect_layout({0x205, 0xb05, 0x100, 0x000}, True) == orc.LAYOUT_6_4
    with pytest.raises(Exception):
        orc.detect_layout({0xF0FF}, False)


def test_orc_find_is_rightmost_not_above():
    base = 0xFFFFFFFF81000000
    ips = [base, base + 0x10, base + 0x10, base + 0x40]
    ip_raw = b"".join(struct.pack("<i", ip - (base + 4 * i)) for i, ip in enumerate(ips))
    entries = b"".join(orc.ORC_ENTRY.pack(off, 0, 0x005) for off in (8, 16, 24, 0))
    entries = entries[:-6] + orc.ORC_ENTRY.pack(0, 0, 0x000)
    t = orc.build_table("t", base, ip_raw, entries, False)
    assert t.find(base - 1) is None and t.find(base + 0x41) is None
    assert t.find(base + 0xF).sp_offset == 8
    assert t.find(base + 0x10).sp_offset == 24       # the last of equal addresses
    assert t.find(base + 0x3F).sp_offset == 24
    assert t.find(base + 0x40).type == orc.UNDEFINED


# -- bounded walks on corrupt stacks ---------------------------------------------------------

class FakeArch:
    name = "x86_64"
    pt_regs_offsets = {n: 8 * i for i, n in enumerate((
        "r15", "r14", "r13", "r12", "rbp", "rbx", "r11", "r10", "r9", "r8", "rax", "rcx",
        "rdx", "rsi", "rdi", "orig_rax", "rip", "cs", "eflags", "rsp", "ss"))}
    pt_regs_size = 168


class FakeKernel:
    """Memory is a dict of words; one ORC table covers [TEXT, TEXT + 0x1000)."""

    TEXT = 0xFFFFFFFF81000000

    def __init__(self, words: dict[int, int], entry_flags=0x005, sp_offset=8):
        self.words = words
        self.cache = {}
        self.arch = FakeArch()
        self.warnings = []
        raw_ip = struct.pack("<ii", 0, 0x1000 - 4)
        raw = orc.ORC_ENTRY.pack(sp_offset, 0, entry_flags) + orc.ORC_ENTRY.pack(0, 0, 0)
        table = orc.build_table("vmlinux", self.TEXT, raw_ip, raw, False)
        self.cache["orc_tables"] = orc.OrcTables(self, table, "dump")
        self.cache["orc_tables"]._modules = []

    def read(self, addr, size):
        span = range(addr, addr + size, 8)
        if not any(a in self.words for a in span):
            raise FaultError(addr, f"unmapped {addr:#x}")
        return b"".join(struct.pack("<Q", self.words.get(a, 0)) for a in span)

    def symbolize(self, addr):
        return None

    def warn(self, msg):
        self.warnings.append(msg)


def test_unwind_bounded_on_cyclic_stack():
    # Every frame returns into the same function with the same stack pointer.
    sp = 0xFFFFC90000010000
    k = FakeKernel({sp + 8 * i: FakeKernel.TEXT + 0x10 for i in range(-4, 512)},
                   sp_offset=0)
    frames, stop = orc.OrcUnwinder(k).unwind(FakeKernel.TEXT + 0x10, sp, 0)
    assert stop == "loop" and len(frames) == 1


def test_unwind_bounded_on_runaway_stack():
    # Return addresses forever up the stack: stops at MAX_FRAMES, or at the
    # task's stack bounds when given.
    sp = 0xFFFFC90000010000
    words = {sp + 8 * i: FakeKernel.TEXT + 0x10 for i in range(-1, 4096)}
    k = FakeKernel(words)
    frames, stop = orc.OrcUnwinder(k).unwind(FakeKernel.TEXT + 0x10, sp, 0)
    assert len(frames) == orc.MAX_FRAMES and stop == "frame limit"
    frames, stop = orc.OrcUnwinder(k).unwind(FakeKernel.TEXT + 0x10, sp, 0,
                                             stack_bounds=(sp, sp + 0x40))
    assert len(frames) == 8 and "left the task's stack" in stop


def test_unwind_stops_on_unreadable_and_wrong_direction():
    sp = 0xFFFFC90000010000
    k = FakeKernel({})
    frames, stop = orc.OrcUnwinder(k).unwind(FakeKernel.TEXT + 0x10, sp, 0)
    assert len(frames) == 1 and stop.startswith("unreadable stack")
    # sp_offset -8: the "caller" frame would be below this one.
    k = FakeKernel({sp - 16: FakeKernel.TEXT + 0x20}, sp_offset=-8)
    frames, stop = orc.OrcUnwinder(k).unwind(FakeKernel.TEXT + 0x10, sp, 0,
                                             stack_bounds=(sp - 0x1000, sp + 0x1000))
    assert len(frames) == 1 and "wrong direction" in stop


def test_unwind_crosses_kernel_regs_and_stops_at_user_regs():
    sp = 0xFFFFC90000010000
    text = FakeKernel.TEXT
    # A REGS entry (6.1 flags 0x105: sp_reg SP, type REGS): pt_regs at sp.
    regs = dict.fromkeys(FakeArch.pt_regs_offsets, 0)
    regs.update(rip=text + 0x30, rsp=sp + 0x400, cs=0x10, rbp=0x1234)
    words = {sp + off: regs[n] for n, off in FakeArch.pt_regs_offsets.items()}
    user = dict(regs, rip=0x401000, rsp=0x7FFC0000, cs=0x33)
    words.update({sp + 0x400 + off: user[n] for n, off in FakeArch.pt_regs_offsets.items()})
    k = FakeKernel(words, entry_flags=0x105, sp_offset=0)
    frames, stop = orc.OrcUnwinder(k).unwind(text + 0x10, sp, 0)
    assert stop == "user"
    assert [(f.pc, f.kind, f.exact) for f in frames] == [
        (text + 0x10, "regs", False), (text + 0x30, "regs", True)]
    assert frames[0].regs["rbp"] == 0x1234 and frames[1].regs["cs"] == 0x33


# -- names ----------------------------------------------------------------------------

@pytest.mark.fixtures
def test_alias_names_as_kallsyms():
    """Among symbols at one address the kernel names the first in kallsyms
    order; from a vmlinux symtab, scripts/kallsyms.c's order is rebuilt."""
    k = kernel("6.1-live")
    pause = k.symbols.lookup("__do_sys_pause")
    assert k.symbols.lookup("__x64_sys_pause").address == pause.address
    assert k.symbolize(pause.address + 4)[0].name == "__do_sys_pause"
    a = pause.address
    # symtab order: the global alias first, as a vmlinux lists them
    table = SymbolTable(["__x64_sys_pause", "__do_sys_pause", "__weak_one", "x"],
                        ["T", "t", "W", "T"], [a, a, a, a + 0x50], source="vmlinux")
    sym = table.symbolize(a + 4)[0]
    assert kallsyms_name(table, sym) == "__do_sys_pause"
    table = SymbolTable(["__start_foo_section", "zz", "_a"], ["T", "T", "t"], [a, a, a],
                        source="System.map")
    # (fewer leading underscores first; linker-provided __start_* names last)
    assert kallsyms_name(table, table.symbolize(a)[0]) == "zz"


@pytest.mark.fixtures
def test_return_address_named_at_pc_minus_one():
    """A return address right after a call at a function's end is named
    after the calling function (%pB looks up pc - 1)."""
    k = kernel("6.1-live")
    nxt = k.symbols.lookup("__do_sys_pause")
    prev = k.symbolize(nxt.address - 1)[0]
    from kql.helpers.stack import frame_symbol
    assert frame_symbol(k, nxt.address, False)[0] == prev.name
    assert frame_symbol(k, nxt.address, True) == ("__do_sys_pause", 0, None)


# -- tables ---------------------------------------------------------------------------



@pytest.mark.parametrize("name", ["6.1-panic-zlib", "6.12-live"])
@pytest.mark.fixtures
def test_stack_frames_table(name):
    fx = fixture(name)
    k = kernel(name)
    rows, w = run(k, "stack_frames")
    by_pid: dict[int, list] = {}
    for r in rows:
        by_pid.setdefault(r["pid"], []).append(r)
    for p, t in fx.truth["tasks"].items():
        if not t.get("stack") or int(p) in fx.truth["transient_pids"]:
            continue
        frames = by_pid[int(p)]
        assert [f["level"] for f in frames] == list(range(len(frames)))
        assert ends_with([f["function"] for f in frames], t["stack"])
        assert all(f["comm"] == frames[0]["comm"] and f["task"] == frames[0]["task"]
                   for f in frames)
    for r in rows:
        assert r["kind"] in ("call", "regs")
        assert r["symbol"] == f"{r['function']}+{r['offset']:#x}"
        if r["function"] == SYSCALL_ENTRY:
            assert r["kind"] == "regs"
    # pid lookup gives the same rows as the walk
    pid = int(next(iter(fx.truth["tasks"])))
    got, _ = run(k, "stack_frames", keys={"pid": [pid]})
    assert got == by_pid[pid]


@pytest.mark.fixtures
def test_stack_words_table():
    k = kernel("6.1-live")
    task = find_task(k, 1)
    rows, w = run(k, "stack_words", keys={"pid": [1]})
    lo, hi = task_stack_bounds(task)
    words = list(task_stack_words(task))
    assert [(r["address"], r["value"]) for r in rows] == words
    assert rows[-1]["address"] == hi - 8
    assert all(lo <= r["address"] < hi for r in rows)
    # Every return address the unwinder used is a word with a function symbol.
    syms = {r["address"]: r["symbol"] for r in rows}
    frames = stack_trace(task)
    for f in frames[1:]:
        if f.kind == "call" and not f.exact:
            assert syms[f.sp - 8] == f.symbol
    assert sum(1 for r in rows if r["symbol"] is None) > 0


@pytest.mark.fixtures
def test_tasks_stack_column():
    assert get_table("tasks").column("stack") is not None
    fx = fixture("6.1-live")
    k = kernel("6.1-live")
    rows, w = run(k, "tasks", ["pid", "stack"])
    got = {r["pid"]: r["stack"] for r in rows}
    for p, t in fx.truth["tasks"].items():
        if t.get("stack") and int(p) not in fx.truth["transient_pids"]:
            assert ends_with(got[int(p)], t["stack"]) or \
                explained_miss(fx, k, int(p), t["stack"], got[int(p)]), p


def test_frame_repr_and_symbol():
    f = Frame(0, 0xFFFFFFFF81000010, 0xFFFFC90000010000, "foo", 0x10, "loop", "call", False)
    assert f.symbol == "foo+0x10 [loop]"
    assert repr(f) == "#0 foo+0x10 [loop] sp=0xffffc90000010000 (call)"


# -- more shapes ----------------------------------------------------------------------

@pytest.mark.parametrize("name", ["6.1-live", "6.12-live", "6.1-big"])
@pytest.mark.fixtures
def test_zombie_has_no_stack(name):
    """A zombie's stack was freed at its last switch (task->stack NULL);
    /proc printed nothing and kql gives [] rather than stale frames."""
    fx = fixture(name)
    k = kernel(name)
    zombies = [int(p) for p, t in fx.truth["tasks"].items() if t["state_letter"] == "Z"]
    assert zombies
    for pid in zombies:
        task = find_task(k, pid)
        assert task_stack_bounds(task) is None
        assert stack_trace(task) == [] and task_stack_names(task) == []
        assert list(task_stack_words(task)) == []


def test_frame_pointer_fallback_outside_orc():
    """An address no ORC table covers (BPF JIT, trampolines) is unwound as a
    frame-pointer function: CFA = bp + 16, return address at bp + 8,
    caller's bp at bp."""
    sp = 0xFFFFC90000010000
    bp = sp + 0x40
    jit = 0xFFFFFFFFA0000010                    # below the fake table
    k = FakeKernel({bp: sp + 0x100, bp + 8: FakeKernel.TEXT + 0x20, sp + 0x100: 0,
                    sp + 0x108: 0}, sp_offset=8)
    frames, stop = orc.OrcUnwinder(k).unwind(jit, sp, bp, exact=True)
    assert [(f.pc, f.sp) for f in frames][:2] == [(jit, sp), (FakeKernel.TEXT + 0x20, bp + 16)]


def test_unwind_crosses_iret_frame():
    """REGS_PARTIAL (6.1 type 2): an IRET frame (ip, cs, flags, sp, ss) at
    the CFA; the next lookup uses the exact ip."""
    sp = 0xFFFFC90000010000
    text = FakeKernel.TEXT
    words = {sp: text + 0x30, sp + 8: 0x10, sp + 16: 0x246, sp + 24: sp + 0x800,
             sp + 32: 0x18, sp + 0x800: 0, sp + 0x7F8: 0}
    k = FakeKernel(words, entry_flags=0x205, sp_offset=0)
    frames, stop = orc.OrcUnwinder(k).unwind(text + 0x10, sp, 0)
    assert frames[0].kind == "regs" and frames[0].regs["rsp"] == sp + 0x800
    assert (frames[1].pc, frames[1].sp, frames[1].exact) == (text + 0x30, sp + 0x800, True)


STACK_CONTRACT = {
    "stack_frames": "task pid comm level sp pc function offset module kind",
    "stack_words": "task pid address value symbol",
}


@pytest.mark.parametrize("table", sorted(STACK_CONTRACT))
def test_stack_tables_contract(table):
    spec = get_table(table)
    assert spec.doc and spec.walk and spec.object_column == "task"
    for name in STACK_CONTRACT[table].split():
        assert spec.column(name) is not None, name
    assert all(c.doc for c in spec.columns)
    assert spec.column("task").object_type == "struct task_struct *"
    assert "pid" in spec.lookups
    assert get_table("tasks").column("stack") is not None


@pytest.mark.fixtures
def test_names_from_vmlinux_symtab_match_kallsyms():
    """Symbols from a vmlinux's .symtab name every frame (and every alias
    group of functions) as the dump's kallsyms does."""
    from kql.symbols import VmlinuxFile, shifted
    fx = fixture("6.1-live")
    k = kernel("6.1-live")
    v = VmlinuxFile(fx.vmlinux)
    try:
        table = shifted(v.symbols(), k.kaslr_offset)
    finally:
        v.close()
    for task in for_each_task_and_pid(k):
        for f in stack_trace(task):
            sym = table.symbolize(f.pc if f.exact else f.pc - 1)[0]
            assert kallsyms_name(table, sym) == f.function
    ks = k.symbols
    addrs = ks.addresses
    groups = 0
    for i in range(1, len(addrs)):
        if addrs[i] == addrs[i - 1] and ks.kinds[i] in "tT" and addrs[i - 2] != addrs[i]:
            hit = table.symbolize(addrs[i])
            if hit is not None:
                groups += 1
                assert kallsyms_name(table, hit[0]) == ks.symbolize(addrs[i])[0].name
    assert groups > 20


@pytest.mark.fixtures
def test_corrupt_saved_sp_is_null_and_warning():
    """A thread.sp outside the task's stack is a corrupt task: tasks.stack is
    NULL with a counted warning, stack_frames has no rows for it."""
    fx = fixture("6.1-live")
    k = Kernel(fx.dump("elf"))
    try:
        task = find_task(k, 1)
        types = k.types
        where = task.value_() + types.find_type("struct task_struct").offsetof("thread") + \
            types.find_type("struct thread_struct").offsetof("sp")
        real = k.read_u64
        k.read_u64 = lambda addr: 0xFFFF888000001000 if addr == where else real(addr)
        with pytest.raises(ValueError, match="outside its stack"):
            stack_trace(task)
        rows, w = run(k, "tasks", ["pid", "stack"], keys={"pid": [1]})
        assert rows == [{"pid": 1, "stack": None}]
        assert ("tasks.stack", "ValueError") in w.counts
        rows, w = run(k, "stack_frames", ["pid", "function"], keys={"pid": [1]})
        assert rows == [] and ("stack_frames.task", "ValueError") in w.counts
        k.read_u64 = real
        assert run(k, "stack_frames", ["pid"], keys={"pid": [1]})[0]
    finally:
        k.close()


def test_kdump_registers_fall_back_to_note_order():
    """Without a readable crash_notes buffer, a kdump's notes are taken as
    the online CPUs' in CPU order (kdump writes one per online CPU)."""
    fx = fixture("sample")
    k = Kernel(fx.dump())
    try:
        want = [cpu_registers(k, cpu) for cpu in k.online_cpus()]
        k.cache.pop("cpu_registers")
        real = k.read_u64
        notes_ptr = k.symbols.lookup("crash_notes").address
        k.read_u64 = lambda addr: (_ for _ in ()).throw(FaultError(addr, "test")) \
            if addr == notes_ptr else real(addr)
        assert [cpu_registers(k, cpu) for cpu in k.online_cpus()] == want
        # the panicking task (on CPU 1 in the sample) still unwinds from panic
        names = task_stack_names(find_task(k, fx.truth["panic_pid"]))
        assert names[:2] == ["__crash_kexec", "panic"] and names[-1] == SYSCALL_ENTRY
    finally:
        k.close()


# -- arm64 frame records (synthetic) ----------------------------------------------------

class _Arm64Prog:
    """Just enough of a Kernel for the arm64 unwinder: words in a dict, a
    pt_regs of 6.1's layout (stackframe at 0x130, 0x150 bytes) and a PAC mask."""

    PT_REGS_SIZE, STACKFRAME = 0x150, 0x130

    def __init__(self, words: dict[int, int]):
        self.words = words
        self.cache: dict = {}
        self.vmcoreinfo = {"NUMBER(KERNELPACMASK)": "0xff7f000000000000"}
        outer = self

        class _T:
            size = outer.PT_REGS_SIZE

            @staticmethod
            def offsetof(name):
                return {"stackframe": outer.STACKFRAME}[name]

        class _Types:
            @staticmethod
            def find_type(name):
                assert name == "struct pt_regs"
                return _T

        self.types = _Types

    def read(self, addr: int, size: int) -> bytes:
        out = b""
        for a in range(addr, addr + size, 8):
            if a not in self.words:
                raise FaultError(a, f"cannot read kernel address {a:#x}")
            out += self.words[a].to_bytes(8, "little")
        return out


def test_arm64_unwinder_crosses_el1_pt_regs_and_strips_pac():
    """Frame records {fp, lr} with PAC-signed return addresses; an EL1
    exception's pt_regs (its stackframe record is {x29, elr}) is a "regs"
    frame and the interrupted pc is exact; the task's own pt_regs at the top
    of the stack (entry from EL0) ends the walk with the user registers."""
    from kql.arch.arm64 import ARCH as ARM64
    lo, hi = 0xFFFF800008000000, 0xFFFF800008004000
    text = 0xFFFFB00372610000
    sign = lambda a: (a & ~0xFF7F000000000000) | 0x0035000000000000   # noqa: E731
    words = {}
    P = _Arm64Prog
    # innermost: fp0 -> record {fp1, lr into handler}
    fp0, exc_regs = lo + 0x1000, lo + 0x2000
    fp1 = exc_regs + P.STACKFRAME                      # the exception's record
    words[fp0], words[fp0 + 8] = fp1, sign(text + 0x104)
    # the exception's pt_regs: x29 = fp2, pc = text + 0x200 (interrupted), EL1h
    for i in range(0, P.PT_REGS_SIZE, 8):
        words[exc_regs + i] = 0
    fp2 = lo + 0x3000
    words[exc_regs + 29 * 8] = fp2
    words[exc_regs + 31 * 8] = lo + 0x2f00            # sp
    words[exc_regs + 32 * 8] = text + 0x200           # pc (elr)
    words[exc_regs + 33 * 8] = 0x3C5                  # pstate: EL1h
    words[fp1], words[fp1 + 8] = fp2, text + 0x200
    # the interrupted function's record leads to the final frame
    user_regs = hi - P.PT_REGS_SIZE
    final = user_regs + P.STACKFRAME
    for i in range(0, P.PT_REGS_SIZE, 8):
        words[user_regs + i] = 0
    words[user_regs + 32 * 8] = 0x400123              # user pc, pstate EL0t
    words[fp2], words[fp2 + 8] = final, sign(text + 0x304)
    prog = P(words)
    frames, stop = ARM64.get_unwinder(prog).unwind(text + 0x10, lo + 0xff0, fp0, exact=True,
                                                  stack_bounds=(lo, hi))
    assert [(f.pc - text, f.kind, f.exact) for f in frames] == [
        (0x10, "call", True), (0x104, "regs", False), (0x200, "call", True),
        (0x304, "regs", False)]
    assert frames[1].regs["pc"] == text + 0x200 and frames[1].regs["pstate"] == 0x3C5
    assert frames[3].regs["pc"] == 0x400123 and stop == "user"
