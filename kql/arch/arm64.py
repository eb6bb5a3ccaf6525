"""arm64 (AArch64): page-table format, register layouts, address-space layout,
and the frame-pointer stack unwinder.

Everything kql knows about arm64 lives here, behind one hook object
(:data:`ARCH`, returned by ``kql.arch.get_arch("aarch64")``).
Sources: Linux arch/arm64/include/asm/memory.h, pgtable-hwdef.h, ptrace.h,
kexec.h (crash_setup_regs), arch/arm64/kernel/crash_core.c (VMCOREINFO),
arch/arm64/kernel/stacktrace.c, entry.S; QEMU target/arm/arch_dump.c.

The translation regime comes from VMCOREINFO: ``NUMBER(VA_BITS)`` (and
``NUMBER(TCR_EL1_T1SZ)``, the VA size the kernel really runs with, since
5.9), ``NUMBER(kimage_voffset)`` (kernel image VA - PA),
``NUMBER(PHYS_OFFSET)`` (start of RAM = linear-map base) and ``KERNELOFFSET``.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from kql.arch.pagewalk import not_mapped, read_entry, swapper_pg_dir_pa
from kql.errors import DumpError, FaultError

PAGE_SHIFT = 12                 # 4 KiB granule (Debian's arm64 kernels)
PAGE_SIZE = 1 << PAGE_SHIFT

# Descriptor bits (pgtable-hwdef.h): bit 0 valid; bit 1 "table" at levels
# 0-2 (else a block), "page" at the last level.
DESC_VALID = 1 << 0
DESC_TABLE = 1 << 1
# Output address bits [47:12]; with 52-bit PA on a 4K granule (FEAT_LPA2)
# bits [9:8] of the descriptor hold PA[51:50].
DESC_ADDR_MASK = 0x0000FFFFFFFFF000
LPA2_HIGH_MASK = 0x300


class Level(NamedTuple):
    name: str
    shift: int          # va bits [shift, shift + bits) index this level
    bits: int           # index width (9, or fewer at the root)
    leaf_ok: bool       # a block descriptor may end the walk here


class PageTableFormat(NamedTuple):
    levels: tuple[Level, ...]
    addr_mask: int
    va_bits: int
    lpa2: bool


_NAMES = {5: ("PGD", "P4D", "PUD", "PMD", "PTE"), 4: ("PGD", "PUD", "PMD", "PTE"),
          3: ("PGD", "PMD", "PTE"), 2: ("PGD", "PTE")}


def _levels_for(va_bits: int) -> tuple[Level, ...]:
    """Levels of a 4 KiB-granule table for ``va_bits`` (ARM ARM D8.2):
    each level resolves 9 bits, the root what is left."""
    n = -(-(va_bits - PAGE_SHIFT) // 9)
    out = []
    for i, name in enumerate(_NAMES[n]):
        shift = PAGE_SHIFT + 9 * (n - 1 - i)
        bits = min(9, va_bits - shift)
        # blocks: 1 GiB (level 1) and 2 MiB (level 2) only
        out.append(Level(name, shift, bits, shift in (21, 30)))
    return tuple(out)


# struct elf_prstatus (arm64): pr_pid at 32, pr_reg = user_pt_regs
# (x0..x30, sp, pc, pstate) at 112, 392 bytes.
PRSTATUS_SIZE = 392
PRSTATUS_PID_OFFSET = 32
PRSTATUS_REG_OFFSET = 112
PRSTATUS_REGS = tuple(f"x{i}" for i in range(31)) + ("sp", "pc", "pstate")
_PRSTATUS_REGS_STRUCT = struct.Struct("<34Q")

# struct pt_regs starts with user_pt_regs (then orig_x0, syscallno, ... and
# the exception's frame record `stackframe`, whose offset is read from types).
PT_REGS_OFFSETS = {name: 8 * i for i, name in enumerate(PRSTATUS_REGS)}
PT_REGS_SIZE = 336              # 6.1; the unwinder takes the real size from types

# PSTATE.M[3:0] == 0 (EL0t): the registers are user mode.
PSR_MODE_MASK = 0xF

U64_MASK = (1 << 64) - 1


def _u64(read, addr: int) -> int:
    return int.from_bytes(read(addr, 8), "little")


class Arm64:
    """The arm64 hook object.  Stateless: one instance serves every dump."""

    name = "arm64"
    page_shift = PAGE_SHIFT
    page_size = PAGE_SIZE
    pointer_size = 8
    u64_align = 8                       # alignment of a u64 member in a struct
    byteorder = "little"
    default_pgtable_levels = 4
    large_page_sizes = (1 << 21, 1 << 30)      # level-2 and level-1 blocks
    prstatus_regs = PRSTATUS_REGS
    pt_regs_offsets = PT_REGS_OFFSETS
    pt_regs_size = PT_REGS_SIZE
    # THREAD_SIZE (16 KiB with 4K pages), used only when the kernel's init
    # stack bounds are not in kallsyms.
    default_thread_size = 16384
    # registers a walk starts from (pc, stack pointer, frame pointer)
    pc_reg, sp_reg, fp_reg = "pc", "sp", "x29"

    # Direct-map base by page-table levels (PAGE_OFFSET = -(1 << VA_BITS),
    # memory.h since 5.4's "flip" of the kernel VA space); used for
    # Kernel.page_offset, arm64 has no page_offset_base variable.
    default_bases = {
        3: {"page_offset_base": (-(1 << 39)) & U64_MASK},
        4: {"page_offset_base": (-(1 << 48)) & U64_MASK},
        5: {"page_offset_base": (-(1 << 52)) & U64_MASK},
    }

    # -- VMCOREINFO ----------------------------------------------------------------
    @staticmethod
    def _number(vmcoreinfo: dict[str, str], key: str) -> int | None:
        value = vmcoreinfo.get(key)
        if value is None:
            return None
        value = value.strip()
        # arch/arm64/kernel/crash_core.c prints kimage_voffset, PHYS_OFFSET,
        # KERNELPACMASK and TCR_EL1_T1SZ as 0x%llx, VA_BITS as %d
        return int(value, 16) if value.lower().startswith("0x") else int(value, 10)

    def va_bits(self, vmcoreinfo: dict[str, str]) -> int:
        """The VA size the kernel translates with: 64 - TCR_EL1.T1SZ (5.9+),
        else NUMBER(VA_BITS) (48 if absent)."""
        t1sz = self._number(vmcoreinfo, "NUMBER(TCR_EL1_T1SZ)")
        if t1sz:
            return 64 - t1sz
        return self._number(vmcoreinfo, "NUMBER(VA_BITS)") or 48

    def pgtable_levels(self, vmcoreinfo: dict[str, str]) -> int:
        return len(_levels_for(self.va_bits(vmcoreinfo)))

    def kimage_voffset(self, vmcoreinfo: dict[str, str]) -> int:
        value = self._number(vmcoreinfo, "NUMBER(kimage_voffset)")
        if value is None:
            raise DumpError("VMCOREINFO has no NUMBER(kimage_voffset): cannot place the "
                            "arm64 kernel image in physical memory")
        return value

    def phys_offset(self, vmcoreinfo: dict[str, str]) -> int:
        """NUMBER(PHYS_OFFSET): physical start of RAM (the linear map's base)."""
        return self._number(vmcoreinfo, "NUMBER(PHYS_OFFSET)") or 0

    def kaslr_offset(self, vmcoreinfo: dict[str, str]) -> int:
        value = vmcoreinfo.get("KERNELOFFSET")
        return int(value, 16) if value is not None else 0

    def pac_mask(self, vmcoreinfo: dict[str, str]) -> int:
        """Bits a pointer-authentication code occupies in a kernel return
        address: NUMBER(KERNELPACMASK) (5.7+), else none."""
        return self._number(vmcoreinfo, "NUMBER(KERNELPACMASK)") or 0

    def kernel_symbol_pa(self, vaddr: int, vmcoreinfo: dict[str, str]) -> int:
        """__pa_symbol(): a kernel-image address minus kimage_voffset."""
        return (vaddr - self.kimage_voffset(vmcoreinfo)) & U64_MASK

    def kernel_pgtable_root(self, vmcoreinfo: dict[str, str]) -> int:
        """Physical address of swapper_pg_dir (TTBR1's tables)."""
        return swapper_pg_dir_pa(self, vmcoreinfo)

    def vmalloc_size(self, levels: int, kernel=None) -> int | None:
        """VMALLOC_END - VMALLOC_START + 1: NUMBER(VMALLOC_START) and
        NUMBER(VMALLOC_END) from VMCOREINFO (arm64 exports them since 6.1,
        "arm64: crash_core: Export MODULES, VMALLOC, and VMEMMAP ranges");
        else unknown."""
        if kernel is None:
            return None
        start = self._number(kernel.vmcoreinfo, "NUMBER(VMALLOC_START)")
        end = self._number(kernel.vmcoreinfo, "NUMBER(VMALLOC_END)")
        if start is None or end is None:
            return None
        return end - start + 1

    # -- page tables ---------------------------------------------------------------
    def page_table_format(self, levels: int = 4, *, sme_mask: int = 0) -> PageTableFormat:
        va_bits = {2: 30, 3: 39, 4: 48, 5: 52}.get(levels)
        if va_bits is None:
            raise DumpError(f"arm64 (4K pages) has 2 to 5 page-table levels, not {levels}")
        return PageTableFormat(_levels_for(va_bits), DESC_ADDR_MASK, va_bits, va_bits > 48)

    def walk(self, phys, root: int, va: int, fmt: PageTableFormat, space: str = "virtual") -> int:
        return self.walk_leaf(phys, root, va, fmt, space)[0]

    def walk_leaf(self, phys, root: int, va: int, fmt: PageTableFormat,
                  space: str = "virtual") -> tuple[int, int]:
        """Translate ``va`` through the tables at physical ``root``; returns the
        physical address and the leaf size (4K, 2M or 1G).  The caller picks
        the root (TTBR1's swapper_pg_dir for kernel addresses, an mm's pgd
        for user ones)."""
        top = va >> fmt.va_bits
        if top != 0 and top != (1 << (64 - fmt.va_bits)) - 1:
            raise FaultError(va, f"cannot read {space} address {va:#x}: outside the "
                                 f"{fmt.va_bits}-bit virtual address ranges")
        mask = fmt.addr_mask
        table = root
        read = phys.read
        last = len(fmt.levels) - 1
        for i, (name, shift, bits, leaf_ok) in enumerate(fmt.levels):
            index = (va >> shift) & ((1 << bits) - 1)
            entry, entry_pa = read_entry(read, table, index, va, name, space)
            if not entry & DESC_VALID:
                raise not_mapped(va, name, index, entry_pa, entry, space, "not valid")
            addr = entry & mask
            if fmt.lpa2:
                addr |= (entry & LPA2_HIGH_MASK) << 42
            if i == last:
                return addr | (va & (PAGE_SIZE - 1)), PAGE_SIZE
            if not entry & DESC_TABLE:
                if not leaf_ok:
                    raise FaultError(va, f"cannot read {space} address {va:#x}: {name} "
                                         f"entry {index} at physical {entry_pa:#x} is a "
                                         f"block ({entry:#x}) where none may be")
                size_mask = (1 << shift) - 1
                return (addr & ~size_mask) | (va & size_mask), size_mask + 1
            table = addr
        raise AssertionError("unreachable")      # pragma: no cover

    # -- register notes --------------------------------------------------------------
    def parse_prstatus(self, desc: bytes) -> tuple[int, dict[str, int]]:
        """NT_PRSTATUS desc -> (pr_pid, {x0..x30, sp, pc, pstate})."""
        if len(desc) < PRSTATUS_REG_OFFSET + _PRSTATUS_REGS_STRUCT.size:
            raise DumpError(f"NT_PRSTATUS note is {len(desc)} bytes; arm64 needs {PRSTATUS_SIZE}")
        pid = struct.unpack_from("<i", desc, PRSTATUS_PID_OFFSET)[0]
        regs = _PRSTATUS_REGS_STRUCT.unpack_from(desc, PRSTATUS_REG_OFFSET)
        return pid, dict(zip(PRSTATUS_REGS, regs))

    def parse_qemu_cpu_state(self, desc: bytes) -> dict[str, int]:
        # QEMU writes its "QEMU" CPU-state note for x86 only.
        raise DumpError("arm64 dumps have no QEMU CPU-state notes")

    def user_mode(self, regs: dict) -> bool:
        """True if ``regs`` (a pt_regs or NT_PRSTATUS) were taken in EL0."""
        return regs.get("pstate", 0) & PSR_MODE_MASK == 0

    # -- stacks ----------------------------------------------------------------------
    def saved_task_start(self, kernel, task: int, bounds: tuple[int, int]):
        """Where a task that is not running resumes: ``thread.cpu_context``
        (cpu_switch_to() saved x19-x28, fp, sp and the return address as pc).
        Returns ``(pc, sp, fp, regs, exact)``."""
        lay = kernel.cache.get("arm64_cpu_context")
        if lay is None:
            t = kernel.types.find_type("struct task_struct")
            ts = kernel.types.find_type("struct thread_struct")
            cc = kernel.types.find_type("struct cpu_context")
            base = t.offsetof("thread") + ts.offsetof("cpu_context")
            lay = kernel.cache["arm64_cpu_context"] = tuple(
                base + cc.offsetof(m) for m in ("pc", "sp", "fp"))
        pc, sp, fp = (kernel.read_u64(task + off) for off in lay)
        if not bounds[0] <= sp <= bounds[1]:
            raise ValueError(f"task {task:#x}: cpu_context.sp {sp:#x} is outside its "
                             f"stack {bounds[0]:#x}-{bounds[1]:#x}")
        return self.strip_pac(kernel, pc), sp, fp, None, False

    def strip_pac(self, kernel, addr: int) -> int:
        """ptrauth_strip_kernel_insn_pac(): a kernel return address without its
        PAC (the PAC bits set again, as in every kernel address; a user
        address gets them cleared)."""
        mask = kernel.cache.get("arm64_pac_mask")
        if mask is None:
            mask = kernel.cache["arm64_pac_mask"] = self.pac_mask(kernel.vmcoreinfo)
        if not mask:
            return addr
        return addr | mask if addr >> 55 & 1 else addr & ~mask

    def get_unwinder(self, kernel):
        u = kernel.cache.get("arm64_unwinder")
        if u is None:
            u = kernel.cache["arm64_unwinder"] = FramePointerUnwinder(kernel, self)
        return u

    def __repr__(self) -> str:
        return "<arch arm64>"


# -- unwinding -------------------------------------------------------------------------

MAX_FRAMES = 128


class FramePointerUnwinder:
    """arm64 kernel stacks by their frame records (``stp x29, x30, [sp, ...]``;
    arch/arm64/kernel/stacktrace.c unwind_next()).

    A frame record is ``{fp, lr}``: the caller's record and the return
    address (with its PAC stripped).  An exception from EL1 saves a pt_regs
    whose ``stackframe`` record is ``{x29, elr}`` of the interrupted code,
    so the walk crosses it like any record; the frame that holds it is
    reported as ``"regs"`` and the next pc as exact.  An entry from EL0
    ends in the task's pt_regs, whose record is ``{0, 0}`` (the final
    frame); that frame is ``"regs"`` with the user registers.
    """

    def __init__(self, kernel, arch: Arm64):
        from kql.arch.orc import UnwindFrame
        self.kernel = kernel
        self.arch = arch
        self.Frame = UnwindFrame
        t = kernel.types.find_type("struct pt_regs")
        self.pt_regs_size = t.size
        self.stackframe = t.offsetof("stackframe")
        self.names = PRSTATUS_REGS

    def _pt_regs(self, read, addr: int) -> dict:
        words = struct.unpack("<34Q", read(addr, 34 * 8))
        return dict(zip(self.names, words))

    def unwind(self, ip: int, sp: int, bp: int, *, regs: dict | None = None,
               exact: bool = False, stack_bounds: tuple[int, int] | None = None,
               max_frames: int = MAX_FRAMES):
        """Unwind from ``ip`` / ``sp`` / frame pointer ``bp``; same contract
        as :meth:`kql.arch.orc.OrcUnwinder.unwind`."""
        kernel = self.kernel
        read = kernel.read
        strip = self.arch.strip_pac
        Frame = self.Frame
        frames = []
        pc, fp, signal = strip(kernel, ip), bp, exact
        # the final frame record of an entry from EL0 (task_pt_regs(task))
        final = None
        if stack_bounds:
            final = stack_bounds[1] - self.pt_regs_size + self.stackframe
        seen = set()
        stop = "frame limit"
        for _ in range(max_frames):
            if pc == 0:
                stop = "end"
                break
            if fp == final:
                # the task's own pt_regs from its entry from EL0
                try:
                    user = self._pt_regs(read, final - self.stackframe)
                except FaultError as e:
                    user = None
                    stop = f"unreadable stack: {e}"
                frames.append(Frame(pc, sp, "regs" if user else "call", signal, user))
                if user is not None:
                    stop = "user" if self.arch.user_mode(user) else "end"
                break
            if fp == 0 or fp & 0x7:
                frames.append(Frame(pc, sp, "call", signal, None))
                stop = "end" if fp == 0 else f"misaligned frame pointer {fp:#x}"
                break
            if fp in seen:
                frames.append(Frame(pc, sp, "call", signal, None))
                stop = "loop"
                break
            seen.add(fp)
            try:
                rec_fp = _u64(read, fp)
                rec_lr = _u64(read, fp + 8)
            except FaultError as e:
                frames.append(Frame(pc, sp, "call", signal, None))
                stop = f"unreadable stack: {e}"
                break
            crossed = None
            new_signal = False
            # A pt_regs saved by an exception from EL1: its stackframe is
            # {x29, elr} of the interrupted code (entry.S kernel_entry).
            try:
                cand = self._pt_regs(read, fp - self.stackframe)
                if (cand["pc"] == rec_lr and cand["x29"] == rec_fp and rec_lr
                        and not self.arch.user_mode(cand)):
                    crossed = cand
                    new_signal = True
            except FaultError:
                pass
            frames.append(Frame(pc, sp, "regs" if crossed else "call", signal, crossed))
            new_pc = strip(kernel, rec_lr) if not crossed else rec_lr
            if crossed is not None:
                new_sp = crossed["sp"]
            else:
                new_sp = fp + 16
            if new_pc == 0:
                stop = "end"
                break
            if new_pc >> 63 == 0:
                stop = f"return address {new_pc:#x} not in the kernel"
                break
            pc, fp, sp, signal = new_pc, rec_fp, new_sp, new_signal
        return frames, stop


ARCH = Arm64()
