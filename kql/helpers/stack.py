"""Kernel stack traces of tasks (crash ``bt``, drgn ``kernel.stack_trace(task)``).

Where a walk starts (arch/x86/kernel/unwind_orc.c ``__unwind_start()``,
REFERENCE §1 and §7):

- on a live kernel (/proc/kcore), a task running on a CPU has no stack: a
  FaultError (NULL plus a warning in tables), since its registers are
  nowhere in memory;

- a task that is some CPU's ``rq->curr``: that CPU's registers from the
  dump's NT_PRSTATUS notes.  A kdump (VMCOREINFO has CRASHTIME) saved them
  in the per-CPU ``crash_notes`` buffer, read here from memory, since kdump
  skips offline CPUs and every idle task has pr_pid 0; QEMU writes one note
  per vCPU with ``pr_pid = cpu + 1``.  The panicking CPU's note holds the
  registers ``crash_setup_regs()`` took in ``__crash_kexec()``; the other
  CPUs' hold where the crash NMI stopped them.  User-mode registers mean an
  empty kernel stack.
- any other task: where the context switch saved it, as the arch object's
  ``saved_task_start()`` reads it: on x86_64 ``task->thread.sp`` points at
  its ``struct inactive_task_frame`` (the walk starts at ``ret_addr`` with
  ``sp = thread.sp + sizeof(frame)`` and ``bp = frame.bp``); on arm64
  ``task->thread.cpu_context`` holds pc, sp and fp.

The walk itself is arch code (``arch.get_unwinder()``: :mod:`kql.arch.orc`
on x86_64, frame records on arm64).  Frames are named as
the kernel's ``%pB`` names them in /proc/PID/stack: a return address is
looked up at ``pc - 1`` (so a call at the very end of a function is named
after its caller) and exact addresses (the first frame of a running task,
an address taken from pt_regs) at ``pc``; among symbols at one address the
one the kernel's kallsyms lookup finds first.
"""

from __future__ import annotations

import bisect
import struct
from typing import Iterator

from kql.errors import DumpError, FaultError
from kql.object import Object

__all__ = ["Frame", "stack_trace", "task_stack_names", "task_stack_words",
           "task_stack_bounds", "task_unwind_start", "cpu_registers", "thread_size",
           "frame_symbol", "kallsyms_name", "SCHED_TEXT"]


SCHED_TEXT = ("__sched_text_start", "__sched_text_end")


class Frame:
    """One stack frame.

    ``level`` 0 is the innermost; ``pc`` the return (or exact) address;
    ``sp`` the stack pointer in that frame; ``function`` / ``offset`` /
    ``module`` name ``pc`` as kallsyms does (``module`` None for vmlinux,
    ``function`` None when no symbol covers it); ``kind`` is ``"regs"`` when
    this frame's caller state was a ``pt_regs`` (syscall, interrupt,
    exception entry), else ``"call"``; ``regs`` are the registers of that
    pt_regs (or of the CPU, for a running task's first frame).
    """

    __slots__ = ("level", "pc", "sp", "function", "offset", "module", "kind", "exact",
                 "regs")

    def __init__(self, level, pc, sp, function, offset, module, kind, exact, regs=None):
        self.level = level
        self.pc = pc
        self.sp = sp
        self.function = function
        self.offset = offset
        self.module = module
        self.kind = kind
        self.exact = exact
        self.regs = regs

    @property
    def symbol(self) -> str | None:
        """``name+0xoff`` (with `` [module]``), as crash and /proc print it."""
        if self.function is None:
            return None
        mod = f" [{self.module}]" if self.module else ""
        return f"{self.function}+{self.offset:#x}{mod}"

    def __repr__(self) -> str:
        name = self.symbol or f"{self.pc:#x}"
        return f"#{self.level} {name} sp={self.sp:#x} ({self.kind})"


# -- layout ---------------------------------------------------------------------------

def thread_size(kernel) -> int:
    """THREAD_SIZE: the size of ``init_task``'s stack (``__end_init_task -
    __start_init_task``, vmlinux.lds.h INIT_TASK_DATA)."""
    n = kernel.cache.get("thread_size")
    if n is None:
        n = kernel.arch.default_thread_size
        start = kernel.symbols.get("__start_init_task") or kernel.symbols.get("init_stack")
        end = kernel.symbols.get("__end_init_task")
        if start is not None and end is not None and 0 < end.address - start.address <= 1 << 20:
            n = end.address - start.address
        kernel.cache["thread_size"] = n
    return n


def _layout(kernel) -> dict:
    lay = kernel.cache.get("stack_layout")
    if lay is None:
        t = kernel.types.find_type("struct task_struct")
        lay = {"stack": t.offsetof("stack"), "refcount": None}
        # Since Linux 4.9 ("sched/core: Free the stack early if
        # CONFIG_THREAD_INFO_IN_TASK") a dead task's stack is freed when
        # stack_refcount drops to 0 (and task->stack set to NULL).
        if t.has_member("stack_refcount"):
            lay["refcount"] = t.offsetof("stack_refcount")
        kernel.cache["stack_layout"] = lay
    return lay


def task_stack_bounds(task: Object) -> tuple[int, int] | None:
    """``(low, high)`` of the task's kernel stack (``task->stack`` and
    ``+ THREAD_SIZE``), None if it has none (a reaped task frees its stack).

    :param task: ``struct task_struct *``
    """
    kernel = task.prog_
    lay = _layout(kernel)
    addr = task.value_()
    base = kernel.read_pointer(addr + lay["stack"])
    if not base:
        return None
    if lay["refcount"] is not None and kernel.read_u32(addr + lay["refcount"]) == 0:
        return None
    return base, base + thread_size(kernel)


# -- registers of CPUs ------------------------------------------------------------------

_NHDR = struct.Struct("<III")


def _crash_note_registers(kernel, cpu: int) -> dict | None:
    """The NT_PRSTATUS registers a kdump kernel saved for ``cpu`` in the
    per-CPU ``crash_notes`` buffer (kernel/crash_core.c crash_save_cpu())."""
    sym = kernel.symbols.get("crash_notes")
    if sym is None:
        return None
    arch = kernel.arch
    base = kernel.read_u64(sym.address)
    if not base:
        return None
    addr = kernel.per_cpu_address(base, cpu)
    namesz, descsz, ntype = _NHDR.unpack(kernel.read(addr, 12))
    if ntype != 1 or namesz != 5 or not 0 < descsz <= 4096:
        return None      # CPU offline or never saved: the buffer is empty
    name_pad = (namesz + 3) & ~3
    if kernel.read(addr + 12, 4) != b"CORE":
        return None
    desc = kernel.read(addr + 12 + name_pad, descsz)
    return arch.parse_prstatus(desc)[1]


def cpu_registers(kernel, cpu: int) -> dict | None:
    """Registers of ``cpu`` at dump time (``{"rip": ..., "rsp": ..., ...}``),
    or None if the dump has none for it."""
    cache = kernel.cache.setdefault("cpu_registers", {})
    if cpu in cache:
        return cache[cpu]
    regs = None
    notes = None
    try:
        notes = kernel.dump.prstatus()
    except DumpError as e:          # a malformed note: no registers from notes
        kernel.warn(f"NT_PRSTATUS notes unreadable: {e}")
        notes = []
    if "CRASHTIME" in kernel.vmcoreinfo:
        try:
            regs = _crash_note_registers(kernel, cpu)
        except (FaultError, DumpError):
            regs = None
        if regs is None:
            # crash_notes unreadable: kdump wrote the online CPUs' notes in CPU order.
            online = kernel.online_cpus()
            if len(notes) == len(online) and cpu in online:
                regs = notes[online.index(cpu)][1]
    else:
        # QEMU dump-guest-memory: pr_pid is cpu_index + 1 (qemu dump/dump.c).
        for pid, r in notes:
            if pid == cpu + 1:
                regs = r
                break
    cache[cpu] = regs
    return regs


def _running_cpu(task: Object) -> int | None:
    from kql.helpers.sched import running_tasks
    return running_tasks(task.prog_).get(task.value_())


def task_unwind_start(task: Object) -> tuple | None:
    """Where to start unwinding ``task``: ``(ip, sp, bp, regs, exact)``, or
    None when it has no kernel stack to walk (reaped, or running in user
    mode).

    :param task: ``struct task_struct *``
    """
    kernel = task.prog_
    bounds = task_stack_bounds(task)
    if bounds is None:
        return None
    arch = kernel.arch
    cpu = _running_cpu(task)
    if kernel.dump.live and cpu is None and task.has_member_("on_cpu") and task.on_cpu.value_():
        from kql.helpers.sched import task_cpu
        cpu = task_cpu(task)        # scheduled in since rq->curr was read
    if cpu is not None and kernel.dump.live:
        # A running task's registers are on its CPU, not in memory: like drgn
        # and /proc/PID/stack, no trace rather than a stale one.
        raise FaultError(task.value_(), f"task {task.pid.value_()} is running on CPU {cpu}: "
                                        f"a live kernel has no saved registers for it")
    if cpu is not None:
        regs = cpu_registers(kernel, cpu)
        if regs is not None:
            if arch.user_mode(regs):
                return None          # in user mode: nothing on the kernel stack
            return regs[arch.pc_reg], regs[arch.sp_reg], regs[arch.fp_reg], regs, True
    return arch.saved_task_start(kernel, task.value_(), bounds)


# -- names ----------------------------------------------------------------------------

def _linker_provided(name: str) -> bool:
    # scripts/kallsyms.c may_be_linker_script_provide_symbol()
    if len(name) < 8 or not name.startswith("__"):
        return False
    return (name.startswith(("__start_", "__stop_", "__end_"))
            or name.endswith(("_start", "_end")))


def kallsyms_name(table, sym) -> str:
    """The name the kernel's kallsyms lookup gives ``sym``'s address.

    kallsyms (the dump's own) is already in the kernel's order, where the
    first of several symbols at one address wins.  Tables from a vmlinux or
    System.map are reordered among aliases as scripts/kallsyms.c
    ``compare_symbols()`` orders them: non-weak first, then not
    linker-provided, then fewer leading underscores, then ``nm -n``'s name
    order.
    """
    if getattr(table, "source", "kallsyms") == "kallsyms" or sym.module:
        return sym.name
    addrs = table.addresses
    lo = bisect.bisect_left(addrs, sym.address)
    hi = bisect.bisect_right(addrs, sym.address, lo)
    if hi - lo < 2:
        return sym.name
    cands = []
    for i in range(lo, hi):
        kind = table.kinds[i]
        if kind not in "tTwW":
            continue
        name = table.names[i]
        cands.append((kind in "wW", _linker_provided(name), len(name) - len(name.lstrip("_")),
                      name))
    return min(cands)[3] if cands else sym.name


def frame_symbol(kernel, pc: int, exact: bool) -> tuple[str | None, int, str | None]:
    """``(function, offset, module)`` for a frame's pc, as ``%pB`` names it
    (cached per dump)."""
    cache = kernel.cache.get("frame_symbols")
    if cache is None:
        cache = kernel.cache["frame_symbols"] = {}
    key = pc if exact else -pc
    hit = cache.get(key)
    if hit is not None:
        return hit
    look = pc if exact else pc - 1
    s = kernel.symbolize(look)
    if s is None:
        hit = (None, 0, None)
    else:
        sym = s[0]
        name = kallsyms_name(kernel.symbols, sym) if sym.module is None else sym.name
        hit = (name, pc - sym.address, sym.module)
    cache[key] = hit
    return hit


# -- traces ---------------------------------------------------------------------------

def _unwind(task: Object):
    start = task_unwind_start(task)
    if start is None:
        return [], "no kernel stack"
    ip, sp, bp, regs, exact = start
    bounds = task_stack_bounds(task)
    return task.prog_.arch.get_unwinder(task.prog_).unwind(ip, sp, bp, regs=regs, exact=exact,
                                           stack_bounds=bounds)


def stack_trace(task: Object) -> list[Frame]:
    """The task's kernel stack, innermost frame first (scheduler frames
    included, as crash ``bt`` shows them).

    :param task: ``struct task_struct *``
    :raises FaultError: if the task's start registers cannot be read
    :raises ValueError: if its saved stack pointer is not on its stack
    """
    kernel = task.prog_
    raw, _stop = _unwind(task)
    out = []
    for level, f in enumerate(raw):
        name, off, mod = frame_symbol(kernel, f.pc, f.exact)
        out.append(Frame(level, f.pc, f.sp, name, off, mod, f.kind, f.exact, f.regs))
    return out


def task_stack_names(task: Object) -> list[str]:
    """Function names of the task's stack, innermost first (``tasks.stack``);
    an address no symbol covers appears as hex.

    :param task: ``struct task_struct *``
    """
    kernel = task.prog_
    raw, _stop = _unwind(task)
    out = []
    for f in raw:
        name = frame_symbol(kernel, f.pc, f.exact)[0]
        out.append(name if name is not None else f"{f.pc:#x}")
    return out


def task_stack_words(task: Object) -> Iterator[tuple[int, int]]:
    """``(address, value)`` of each word of the live part of the task's kernel
    stack: from its stack pointer (the saved ``thread.sp`` of a sleeping
    task, the CPU's rsp of a running one) to the top of the stack.

    :param task: ``struct task_struct *``
    """
    kernel = task.prog_
    bounds = task_stack_bounds(task)
    if bounds is None:
        return
    lo, hi = bounds
    arch = kernel.arch
    cpu = _running_cpu(task)
    sp = None
    if cpu is not None:
        regs = cpu_registers(kernel, cpu)
        if regs is not None and not arch.user_mode(regs) and lo <= regs[arch.sp_reg] < hi:
            sp = regs[arch.sp_reg]
    if sp is None:
        try:
            sp = arch.saved_task_start(kernel, task.value_(), bounds)[1]
        except ValueError:
            sp = lo
    if not lo <= sp < hi:
        sp = lo
    psize = kernel.arch.pointer_size
    sp &= ~(psize - 1)
    data = kernel.read(sp, hi - sp)
    for i, (v,) in enumerate(struct.iter_unpack("<Q" if psize == 8 else "<I", data)):
        yield sp + psize * i, v


def text_symbol(kernel, value: int) -> str | None:
    """``name+0xoff`` if ``value`` points into a kernel or module function,
    else None."""
    if value < kernel.page_offset:  # user and per-CPU-offset values
        return None
    s = kernel.symbolize(value)
    if s is None:
        return None
    sym, off = s
    if sym.kind not in "tTwW" or (sym.size and off >= sym.size):
        return None
    mod = f" [{sym.module}]" if sym.module else ""
    return f"{sym.name}+{off:#x}{mod}"


def task_pt_regs(task: Object) -> dict | None:
    """The user registers saved at the task's last kernel entry: the
    ``struct pt_regs`` at the top of its kernel stack (``task_pt_regs()``),
    as ``{register: value}`` in the layout's order; None for a kernel thread
    (it never came from user mode) or a task without a stack.

    :param task: ``struct task_struct *``
    """
    from kql.helpers.sched import task_is_kthread
    if task_is_kthread(task):
        return None
    bounds = task_stack_bounds(task)
    if bounds is None:
        return None
    kernel = task.prog_
    arch = kernel.arch
    offsets = arch.pt_regs_offsets
    size = arch.pt_regs_size
    word = arch.pointer_size
    # TOP_OF_KERNEL_STACK_PADDING (0 on x86_64 and arm64): pt_regs ends at the top
    base = bounds[1] - size - getattr(arch, "top_of_stack_padding", 0)
    data = kernel.read(base, size)
    return {name: int.from_bytes(data[off:off + word], arch.byteorder)
            for name, off in sorted(offsets.items(), key=lambda kv: kv[1])}


def frame_of_word(frames: list[Frame], address: int) -> Frame | None:
    """The frame a stack word belongs to: the outermost frame whose stack
    pointer is at or below ``address``; words below the innermost frame's sp
    (a sleeping task's switch frame) are the innermost frame's.  None when
    there are no frames.  ``frames`` as :func:`stack_trace` returns them (sp
    ascending)."""
    hit = frames[0] if frames else None
    for f in frames:
        if f.sp <= address:
            hit = f
        else:
            break
    return hit
