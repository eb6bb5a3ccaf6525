"""x86_64: page-table format, register layouts, default address-space bases.

Everything kql knows about x86_64 lives here, behind one hook object
(:data:`ARCH`, returned by ``kql.arch.get_arch("x86_64")``).
Sources: Linux arch/x86/include/asm/pgtable_64_types.h, page_64_types.h,
ptrace.h, include/linux/elfcore.h; QEMU target/i386/arch_dump.c.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from kql.arch.pagewalk import not_mapped, read_entry
from kql.errors import DumpError, FaultError

PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT

# Page-table entry bits.
PTE_PRESENT = 1 << 0
PTE_PSE = 1 << 7            # leaf at PUD (1 GiB) or PMD (2 MiB)
PTE_ADDR_MASK = 0x000FFFFFFFFFF000

# Kernel text is mapped at __START_KERNEL_map; __pa_symbol(x) = x - it + phys_base.
START_KERNEL_MAP = 0xFFFFFFFF80000000

# Default bases without KASLR memory randomization (Documentation/arch/x86/x86_64/mm.rst).
DEFAULT_BASES = {
    4: {"page_offset_base": 0xFFFF888000000000,
        "vmalloc_base": 0xFFFFC90000000000,
        "vmemmap_base": 0xFFFFEA0000000000},
    5: {"page_offset_base": 0xFF11000000000000,
        "vmalloc_base": 0xFFA0000000000000,
        "vmemmap_base": 0xFFD4000000000000},
}


class Level(NamedTuple):
    name: str
    shift: int          # va bits [shift, shift+9) index this level
    leaf_ok: bool       # PSE may make this entry a leaf


# Levels as data, root first.  The walk below is one loop over these.
LEVELS_4 = (
    Level("PGD", 39, False),
    Level("PUD", 30, True),
    Level("PMD", 21, True),
    Level("PTE", 12, False),
)
LEVELS_5 = (
    Level("PGD", 48, False),
    Level("P4D", 39, False),
    Level("PUD", 30, True),
    Level("PMD", 21, True),
    Level("PTE", 12, False),
)


class PageTableFormat(NamedTuple):
    levels: tuple[Level, ...]
    addr_mask: int       # entry bits holding the next table / page address
    va_bits: int         # 48 or 57: canonical check


# struct elf_prstatus (x86_64): pr_pid at 32, pr_reg[27] at 112, 336 bytes.
PRSTATUS_SIZE = 336
PRSTATUS_PID_OFFSET = 32
PRSTATUS_REG_OFFSET = 112
PRSTATUS_REGS = (
    "r15", "r14", "r13", "r12", "rbp", "rbx", "r11", "r10", "r9", "r8",
    "rax", "rcx", "rdx", "rsi", "rdi", "orig_rax", "rip", "cs", "eflags",
    "rsp", "ss", "fs_base", "gs_base", "ds", "es", "fs", "gs",
)
_PRSTATUS_REGS_STRUCT = struct.Struct("<27Q")

# struct pt_regs (arch/x86/include/asm/ptrace.h): member -> byte offset; 168 bytes.
PT_REGS_SIZE = 168
PT_REGS_OFFSETS = {
    name: 8 * i for i, name in enumerate((
        "r15", "r14", "r13", "r12", "rbp", "rbx", "r11", "r10", "r9", "r8",
        "rax", "rcx", "rdx", "rsi", "rdi", "orig_rax", "rip", "cs", "eflags",
        "rsp", "ss"))
}

# QEMUCPUState (QEMU target/i386/arch_dump.c), note name "QEMU".
_QEMU_GPRS = ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rsp", "rbp",
              "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15", "rip", "rflags")
_QEMU_SEGS = ("cs", "ds", "es", "fs", "gs", "ss", "ldt", "tr", "gdt", "idt")
_QEMU_HEAD = struct.Struct("<II18Q")          # version, size, 18 registers: 152 bytes
_QEMU_SEG = struct.Struct("<IIIIQ")           # selector, limit, flags, pad, base
_QEMU_CR = struct.Struct("<5Q")               # at 392
_QEMU_CR_OFFSET = 152 + 10 * _QEMU_SEG.size   # 392
_QEMU_MIN_SIZE = _QEMU_CR_OFFSET + _QEMU_CR.size   # 432 (v1 without kernel_gs_base)


class X86_64:
    """The x86_64 hook object.  Stateless: one instance serves every dump."""

    name = "x86_64"
    page_shift = PAGE_SHIFT
    page_size = PAGE_SIZE
    pointer_size = 8
    u64_align = 8                       # alignment of a u64 member in a struct
    byteorder = "little"
    default_pgtable_levels = 4
    large_page_sizes = (1 << 21, 1 << 30)      # PMD and PUD leaves
    # the kernel moves by multiples of CONFIG_PHYSICAL_ALIGN, at least 2 MiB
    # on x86_64 (arch/x86/Kconfig): KERNELOFFSET is one of them
    kernel_align = 0x200000
    default_bases = DEFAULT_BASES
    prstatus_regs = PRSTATUS_REGS
    pt_regs_offsets = PT_REGS_OFFSETS
    pt_regs_size = PT_REGS_SIZE
    # THREAD_SIZE (16 KiB; 32 KiB with KASAN), used only when the kernel's
    # init stack bounds are not in kallsyms.
    default_thread_size = 16384
    # arch/x86/include/asm/pgtable_64_types.h VMALLOC_SIZE_TB_L4 / _L5:
    # VMALLOC_END = VMALLOC_START + (size << 40) - 1.
    vmalloc_size_tb = {4: 32, 5: 12800}

    # registers a stack walk starts from (pc, stack pointer, frame pointer)
    pc_reg, sp_reg, fp_reg = "rip", "rsp", "rbp"

    def vmalloc_size(self, levels: int, kernel=None) -> int | None:
        """Bytes of the vmalloc area (VMALLOC_END - VMALLOC_START + 1)."""
        tb = self.vmalloc_size_tb.get(levels)
        return None if tb is None else tb << 40

    # -- page tables ---------------------------------------------------------------
    def page_table_format(self, levels: int = 4, *, sme_mask: int = 0) -> PageTableFormat:
        if levels == 4:
            return PageTableFormat(LEVELS_4, PTE_ADDR_MASK & ~sme_mask, 48)
        if levels == 5:
            return PageTableFormat(LEVELS_5, PTE_ADDR_MASK & ~sme_mask, 57)
        raise DumpError(f"x86_64 has 4 or 5 page-table levels, not {levels}")

    def walk(self, phys, root: int, va: int, fmt: PageTableFormat, space: str = "virtual") -> int:
        """Translate ``va`` through the tables at physical ``root``; returns the physical address.

        A non-present entry raises :class:`FaultError` naming the level, the
        entry index, where the entry is and its value.
        """
        return self.walk_leaf(phys, root, va, fmt, space)[0]

    def walk_leaf(self, phys, root: int, va: int, fmt: PageTableFormat,
                  space: str = "virtual") -> tuple[int, int]:
        """Like :meth:`walk`, also returning the size of the leaf (4K, 2M or 1G)."""
        self.check_address(va, fmt, space)
        mask = fmt.addr_mask
        table = root
        read = phys.read
        for name, shift, leaf_ok in fmt.levels:
            index = (va >> shift) & 0x1FF
            entry, entry_pa = read_entry(read, table, index, va, name, space)
            if not entry & PTE_PRESENT:
                raise not_mapped(va, name, index, entry_pa, entry, space, "not present")
            if leaf_ok and entry & PTE_PSE:
                size_mask = (1 << shift) - 1
                return (entry & mask & ~size_mask) | (va & size_mask), size_mask + 1
            table = entry & mask
        return table | (va & (PAGE_SIZE - 1)), PAGE_SIZE

    def check_address(self, va: int, fmt: PageTableFormat, space: str) -> None:
        """FaultError unless ``va`` is canonical for the format's address width."""
        top = va >> (fmt.va_bits - 1)
        if top != 0 and top != (1 << (65 - fmt.va_bits)) - 1:
            raise FaultError(va, f"cannot read {space} address {va:#x}: not canonical "
                                 f"for {fmt.va_bits}-bit virtual addresses")

    # -- VMCOREINFO ----------------------------------------------------------------
    def pgtable_levels(self, vmcoreinfo: dict[str, str]) -> int:
        """5 if NUMBER(pgtable_l5_enabled) is 1, else 4."""
        return 5 if vmcoreinfo.get("NUMBER(pgtable_l5_enabled)", "0").strip() == "1" else 4

    def phys_base(self, vmcoreinfo: dict[str, str]) -> int:
        """NUMBER(phys_base) (decimal, may be negative); 0 if absent."""
        value = vmcoreinfo.get("NUMBER(phys_base)")
        return int(value, 10) if value is not None else 0

    def kaslr_offset(self, vmcoreinfo: dict[str, str]) -> int:
        """KERNELOFFSET (hex, no 0x); 0 if absent.  DumpError if it is not a
        multiple of :attr:`kernel_align`."""
        value = vmcoreinfo.get("KERNELOFFSET")
        off = int(value, 16) if value is not None else 0
        if off % self.kernel_align:
            raise DumpError(f"corrupt VMCOREINFO: KERNELOFFSET={value} is not a multiple of "
                            f"{self.kernel_align:#x} (the least {self.name} kernel alignment)")
        return off

    def kernel_symbol_pa(self, vaddr: int, vmcoreinfo: dict[str, str]) -> int:
        """__pa_symbol(): physical address of a kernel-image (text/data/bss) address."""
        return vaddr - START_KERNEL_MAP + self.phys_base(vmcoreinfo)

    def kernel_pgtable_root(self, vmcoreinfo: dict[str, str]) -> int:
        """Physical address of the kernel's top-level page table.

        SYMBOL(init_top_pgt) (x86_64 since 4.13) or SYMBOL(swapper_pg_dir); both
        are runtime (KASLR-relocated) addresses in the kernel image, so
        pa = sym - __START_KERNEL_map + phys_base (KERNELOFFSET is already in sym).
        """
        for key in ("SYMBOL(init_top_pgt)", "SYMBOL(swapper_pg_dir)"):
            value = vmcoreinfo.get(key)
            if value:
                return self.kernel_symbol_pa(int(value, 16), vmcoreinfo)
        raise DumpError("VMCOREINFO has neither SYMBOL(init_top_pgt) nor SYMBOL(swapper_pg_dir): "
                        "cannot find the kernel page tables")

    def pgd_from_cr3(self, cr3: int) -> int:
        """Physical page-table root from a CR3 value (drops PCID bits and bit 63)."""
        return cr3 & PTE_ADDR_MASK

    # -- register notes --------------------------------------------------------------
    def parse_prstatus(self, desc: bytes) -> tuple[int, dict[str, int]]:
        """NT_PRSTATUS desc -> (pr_pid, {register: value}) in pr_reg order."""
        if len(desc) < PRSTATUS_REG_OFFSET + _PRSTATUS_REGS_STRUCT.size:
            raise DumpError(f"NT_PRSTATUS note is {len(desc)} bytes; x86_64 needs {PRSTATUS_SIZE}")
        pid = struct.unpack_from("<i", desc, PRSTATUS_PID_OFFSET)[0]
        regs = _PRSTATUS_REGS_STRUCT.unpack_from(desc, PRSTATUS_REG_OFFSET)
        return pid, dict(zip(PRSTATUS_REGS, regs))

    def parse_qemu_cpu_state(self, desc: bytes) -> dict[str, int]:
        """A "QEMU" note (QEMUCPUState) -> registers, segments, cr0..cr4."""
        if len(desc) < _QEMU_MIN_SIZE:
            raise DumpError(f"QEMU CPU-state note is {len(desc)} bytes; "
                            f"expected at least {_QEMU_MIN_SIZE}")
        version, size, *gprs = _QEMU_HEAD.unpack_from(desc, 0)
        state = {"version": version, "size": size}
        state.update(zip(_QEMU_GPRS, gprs))
        for i, seg in enumerate(_QEMU_SEGS):
            at = 152 + i * _QEMU_SEG.size
            selector, limit, flags, _pad, base = _QEMU_SEG.unpack_from(desc, at)
            state[seg] = selector
            state[f"{seg}_base"] = base
            state[f"{seg}_limit"] = limit
            state[f"{seg}_flags"] = flags
        for i, value in enumerate(_QEMU_CR.unpack_from(desc, _QEMU_CR_OFFSET)):
            state[f"cr{i}"] = value
        if len(desc) >= _QEMU_MIN_SIZE + 8:
            state["kernel_gs_base"] = struct.unpack_from("<Q", desc, _QEMU_MIN_SIZE)[0]
        return state

    # -- stacks ----------------------------------------------------------------------
    def user_mode(self, regs: dict) -> bool:
        """True if ``regs`` (pt_regs or NT_PRSTATUS) were taken in user mode (CPL 3)."""
        return bool(regs.get("cs", 0) & 3)

    def saved_task_start(self, kernel, task: int, bounds: tuple[int, int]):
        """Where a task that is not running resumes: ``task->thread.sp`` points
        at its ``struct inactive_task_frame``; the walk starts at ``ret_addr``
        with ``sp = thread.sp + sizeof(frame)`` and ``bp = frame.bp``.
        Returns ``(ip, sp, bp, regs, exact)``."""
        lay = kernel.cache.get("x86_switch_frame")
        if lay is None:
            types = kernel.types
            t = types.find_type("struct task_struct")
            ts = types.find_type("struct thread_struct")
            f = types.find_type("struct inactive_task_frame")
            # ret_from_fork is where a never-run task "returns" to; the kernel
            # looks its ORC entry up at the exact address.  Since the 2023
            # rewrite of ret_from_fork() in C ("x86: Rewrite ret_from_fork() in
            # C"; 6.12 has it) the assembly part is ret_from_fork_asm.
            syms = kernel.symbols
            rf = syms.get("ret_from_fork_asm") or syms.get("ret_from_fork")
            lay = kernel.cache["x86_switch_frame"] = (
                t.offsetof("thread") + ts.offsetof("sp"), f.offsetof("bp"),
                f.offsetof("ret_addr"), f.size, rf.address if rf is not None else None)
        thread_sp, frame_bp, frame_ret, frame_size, ret_from_fork = lay
        sp = kernel.read_ulong(task + thread_sp)
        if not bounds[0] <= sp < bounds[1]:
            raise ValueError(f"task {task:#x}: thread.sp {sp:#x} is outside its "
                             f"stack {bounds[0]:#x}-{bounds[1]:#x}")
        frame = kernel.read(sp, frame_size)
        word = self.pointer_size        # the same frame on 32-bit x86 (I386 below)
        bp = int.from_bytes(frame[frame_bp:frame_bp + word], "little")
        ip = int.from_bytes(frame[frame_ret:frame_ret + word], "little")
        return ip, sp + frame_size, bp, None, ip == ret_from_fork

    def get_unwinder(self, kernel):
        """The dump's stack unwinder (ORC, frame pointers as the fallback)."""
        from kql.arch.orc import get_unwinder
        return get_unwinder(kernel)

    def __repr__(self) -> str:
        return "<arch x86_64>"


ARCH = X86_64()
