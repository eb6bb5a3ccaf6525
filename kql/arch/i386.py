"""32-bit x86 with PAE (Debian's 686-pae kernels): the i386 hook object.

What differs from x86_64 (kql/arch/x86_64.py), all here:

- page tables: PAE's three levels of 64-bit entries (arch/x86/include/asm/
  pgtable-3level_types.h): a 4-entry PDPT indexed by va bits 30-31, then
  512-entry PMD and PTE tables; a PMD entry with PSE maps 2 MiB.  Virtual
  addresses are 32 bits.  Kernels without PAE (two levels of 32-bit entries)
  are not read.
- the kernel image is in the direct map: ``__pa(x) = x - PAGE_OFFSET``
  (0xC0000000, CONFIG_VMSPLIT_3G); memory above the direct map (highmem) is
  reached only through page tables.
- 4-byte pointers and ``long``; the register notes of 32-bit ``elf_prstatus``
  (``struct user_regs_struct`` of i386).
- no BTF in Debian's 686-pae kernels: types come from the debug vmlinux.
"""

from __future__ import annotations

import struct

from kql.arch.pagewalk import swapper_pg_dir_pa
from kql.arch.x86_64 import PTE_ADDR_MASK, Level, PageTableFormat, X86_64
from kql.errors import DumpError, FaultError

PAGE_OFFSET = 0xC0000000

# Levels as data, root first; (name, shift, leaf_ok).  The PDPT has 4 entries.
LEVELS_PAE = (
    Level("PDPT", 30, False),
    Level("PMD", 21, True),
    Level("PTE", 12, False),
)

# include/uapi/asm/ptrace.h (i386) struct pt_regs == user_regs_struct order
PRSTATUS_REGS = ("ebx", "ecx", "edx", "esi", "edi", "ebp", "eax", "ds", "es", "fs", "gs",
                 "orig_eax", "eip", "cs", "eflags", "esp", "ss")
PRSTATUS_SIZE = 144
PRSTATUS_PID_OFFSET = 24
PRSTATUS_REG_OFFSET = 72
_PRSTATUS_REGS_STRUCT = struct.Struct("<17I")
PT_REGS_OFFSETS = {name: 4 * i for i, name in enumerate(PRSTATUS_REGS)}
PT_REGS_SIZE = 4 * len(PRSTATUS_REGS)


class I386(X86_64):
    """The i386 (PAE) hook object.  Stateless."""

    name = "i386"
    pointer_size = 4
    u64_align = 4                       # the i386 ABI aligns 8-byte members to 4
    default_pgtable_levels = 3
    large_page_sizes = (1 << 21,)
    kernel_align = 0x2000               # CONFIG_PHYSICAL_ALIGN's least value on 32-bit
    kernel_space_start = PAGE_OFFSET    # symbols below it are not moved by KASLR
    default_bases = {3: {"page_offset_base": PAGE_OFFSET}}
    prstatus_regs = PRSTATUS_REGS
    pt_regs_offsets = PT_REGS_OFFSETS
    pt_regs_size = PT_REGS_SIZE
    default_thread_size = 8192
    #: Debian's name for the architecture of the kernel's -dbg package
    debian_arch = "i386"

    def vmalloc_size(self, levels: int, kernel=None) -> int | None:
        """VMALLOC_END - VMALLOC_START + 1, from the memory layout (below)."""
        return None if kernel is None else self.vmalloc_total(kernel) + 1

    def page_table_format(self, levels: int = 3, *, sme_mask: int = 0) -> PageTableFormat:
        if levels == 3:
            return PageTableFormat(LEVELS_PAE, PTE_ADDR_MASK, 32)
        raise DumpError("kql reads 32-bit x86 kernels with PAE (3 page-table levels) only")

    def check_address(self, va: int, fmt: PageTableFormat, space: str) -> None:
        # the walk itself is x86_64's: the PDPT index (va bits 30-31 under the
        # 9-bit index mask) of a 32-bit address is 0..3
        if not 0 <= va < 1 << 32:
            raise FaultError(va, f"cannot read {space} address {va:#x}: not a 32-bit address")

    def vmalloc_total(self, kernel) -> int:
        """VMALLOC_END - VMALLOC_START (arch/x86/include/asm/pgtable_32_areas.h):
        from high_memory + 8 MiB up to two pages below the kmap area, which
        sits below the LDT remap and the CPU entry areas under the fixmap."""
        read = kernel.read_u32
        page, pmd_mask = 4096, 0xFFFFFFFF & ~((1 << 21) - 1)
        fixaddr_top = read(kernel.symbol("__FIXADDR_TOP").address)
        fixmap = kernel.find_type("enum fixed_addresses").enum_value("__end_of_fixed_addresses")
        nr_cpus = max(1, kernel.symbol("__per_cpu_offset").size // 4)     # CONFIG_NR_CPUS
        entry_pages = nr_cpus * -(-kernel.find_type("struct cpu_entry_area").size // page)
        cpu_entry_area_base = (fixaddr_top - (fixmap << 12) - page * (entry_pages + 1)) & pmd_mask
        ldt_base = cpu_entry_area_base - 512 * page                  # PTRS_PER_PMD pages
        pkmap_base = (ldt_base - page) & pmd_mask
        vmalloc_start = read(kernel.symbol("high_memory").address) + (8 << 20)
        return pkmap_base - 2 * page - vmalloc_start

    def pgtable_levels(self, vmcoreinfo: dict[str, str]) -> int:
        if vmcoreinfo.get("CONFIG_X86_PAE", "").strip() != "y":
            raise DumpError("this 32-bit x86 kernel has no PAE (CONFIG_X86_PAE): "
                            "kql reads only PAE kernels")
        return 3

    def phys_base(self, vmcoreinfo: dict[str, str]) -> int:
        return 0

    def kernel_symbol_pa(self, vaddr: int, vmcoreinfo: dict[str, str]) -> int:
        """__pa(): the kernel image sits in the direct map."""
        return vaddr - PAGE_OFFSET

    def kernel_pgtable_root(self, vmcoreinfo: dict[str, str]) -> int:
        """Physical address of swapper_pg_dir (the PAE PDPT)."""
        return swapper_pg_dir_pa(self, vmcoreinfo)

    def pgd_from_cr3(self, cr3: int) -> int:
        return cr3 & 0xFFFFFFE0         # the PDPT is 32-byte aligned

    def parse_prstatus(self, desc: bytes) -> tuple[int, dict[str, int]]:
        if len(desc) < PRSTATUS_REG_OFFSET + _PRSTATUS_REGS_STRUCT.size:
            raise DumpError(f"NT_PRSTATUS note is {len(desc)} bytes; i386 needs {PRSTATUS_SIZE}")
        pid = struct.unpack_from("<i", desc, PRSTATUS_PID_OFFSET)[0]
        regs = _PRSTATUS_REGS_STRUCT.unpack_from(desc, PRSTATUS_REG_OFFSET)
        return pid, dict(zip(PRSTATUS_REGS, regs))

    pc_reg, sp_reg, fp_reg = "eip", "esp", "ebp"

    def get_unwinder(self, kernel):
        """Frame pointers (Debian's 686-pae has no ORC), one per Kernel."""
        u = kernel.cache.get("fp_unwinder")
        if u is None:
            from kql.arch.i386_unwind import FramePointerUnwinder
            u = kernel.cache["fp_unwinder"] = FramePointerUnwinder(kernel)
        return u

    def __repr__(self) -> str:
        return "<arch i386 (PAE)>"


ARCH = I386()
