"""Memory layers and the x86_64 page-table walk.

Synthetic: page tables built here in a dict-backed physical memory (4 and 5
levels, 4 KiB / 2 MiB / 1 GiB leaves), so every translation is known.
Real: the tests/vmcores dumps, checked against what the guest's /proc said
(truth.json) and across the formats of one capture.
"""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from fixtures import DUMPS, FIXTURES, expected_pgtable_levels, fixture
from kql.arch import detect_machine, get_arch
from kql.arch.x86_64 import PRSTATUS_REGS, PT_REGS_OFFSETS
from kql.dump import Note, open_dump
from kql.errors import DumpError, ExcludedPageError, FaultError
from kql.memory import KernelVirtual, Layer, UserVirtual

ARCH = get_arch("x86_64")
ARM64 = get_arch("arm64")
PAGE = 4096
MASK = 0x000FFFFFFFFFF000


class DictPhys(Layer):
    """Physical memory made of the pages in a dict (pfn -> bytearray)."""

    name = "physical"

    def __init__(self):
        self.pages: dict[int, bytearray] = {}
        self.excluded: set[int] = set()

    def page(self, pfn: int) -> bytearray:
        return self.pages.setdefault(pfn, bytearray(PAGE))

    def write(self, paddr: int, data: bytes) -> None:
        for i, b in enumerate(data):
            self.page((paddr + i) >> 12)[(paddr + i) & 0xFFF] = b

    def read(self, paddr: int, size: int) -> bytes:
        out = bytearray()
        while size > 0:
            pfn, off = paddr >> 12, paddr & 0xFFF
            n = min(size, PAGE - off)
            if pfn in self.excluded:
                raise ExcludedPageError(paddr, f"physical address {paddr:#x} excluded",
                                        physical=True)
            if pfn not in self.pages:
                raise FaultError(paddr, f"physical address {paddr:#x} not in the dump",
                                 physical=True)
            out += self.pages[pfn][off:off + n]
            paddr += n
            size -= n
        return bytes(out)


class Tables:
    """Builds x86_64 page tables in a DictPhys (independently of kql.arch)."""

    def __init__(self, phys: DictPhys, levels: int = 4, first_pfn: int = 0x100,
                 extra_bits: int = 0):
        self.phys = phys
        self.levels = levels
        self.next_pfn = first_pfn
        self.extra_bits = extra_bits            # e.g. an SME C-bit on every entry
        self.root = self.alloc()

    def alloc(self) -> int:
        pfn = self.next_pfn
        self.next_pfn += 1
        self.phys.page(pfn)
        return pfn << 12

    def _entry_addr(self, table: int, va: int, shift: int) -> int:
        return table + 8 * ((va >> shift) & 0x1FF)

    def map(self, va: int, pa: int, size: int = PAGE, flags: int = 0x63) -> int:
        """Map [va, va+size) to pa; returns the physical address of the leaf entry."""
        shifts = [48, 39, 30, 21, 12][-self.levels:]
        leaf = {PAGE: 12, 2 << 20: 21, 1 << 30: 30}[size]
        table = self.root
        for shift in shifts:
            at = self._entry_addr(table, va, shift)
            if shift == leaf:
                entry = pa | flags | self.extra_bits | (0x80 if shift > 12 else 0)
                self.phys.write(at, struct.pack("<Q", entry))
                return at
            entry = struct.unpack("<Q", self.phys.read(at, 8))[0]
            if not entry & 1:
                entry = self.alloc() | 0x63 | self.extra_bits
                self.phys.write(at, struct.pack("<Q", entry))
            table = entry & MASK & ~self.extra_bits
        raise AssertionError("unreachable")


KVA = 0xFFFF888000000000


@pytest.fixture
def mem():
    phys = DictPhys()
    t = Tables(phys)
    # Data pages: 0x5000 "AAAA...", 0x9000 "BBBB..." (not contiguous with 0x5000).
    phys.write(0x5000, b"A" * PAGE)
    phys.write(0x9000, b"B" * PAGE)
    t.map(KVA + 0x1000, 0x5000)
    t.map(KVA + 0x2000, 0x9000)
    return phys, t


# ---------------------------------------------------------------------------------
# synthetic page tables


def test_walk_4k_pages_and_cross_page_read(mem):
    phys, t = mem
    kv = KernelVirtual(phys, ARCH, t.root)
    assert kv.translate(KVA + 0x1234) == 0x5234
    assert kv.translate(KVA + 0x2FFF) == 0x9FFF
    assert kv.read(KVA + 0x1FFE, 4) == b"AABB"          # two non-contiguous frames
    assert kv.read(KVA + 0x1000, 2 * PAGE) == b"A" * PAGE + b"B" * PAGE
    assert kv.read(KVA + 0x1000, 0) == b""


def test_walk_large_pages():
    phys = DictPhys()
    t = Tables(phys)
    t.map(0xFFFFFFFF80000000, 0x40000000, size=2 << 20)     # 2 MiB at PMD
    t.map(0xFFFFC90000000000, 0x80000000, size=1 << 30)     # 1 GiB at PUD
    phys.write(0x40000000 + 0x1FF000 + 8, b"2M-tail!")
    phys.write(0x80000000 + 0x3FFFF000, b"1G-tail!")
    kv = KernelVirtual(phys, ARCH, t.root)
    assert kv.translate(0xFFFFFFFF801FF008) == 0x401FF008
    assert kv.read(0xFFFFFFFF801FF008, 8) == b"2M-tail!"
    assert kv.translate(0xFFFFC9003FFFF000) == 0xBFFFF000
    assert kv.read(0xFFFFC9003FFFF000, 8) == b"1G-tail!"
    # The 2 MiB leaf covers its whole range, nothing beyond it.
    with pytest.raises(FaultError) as e:
        kv.read(0xFFFFFFFF80200000, 1)
    assert "PMD entry 1 " in str(e.value)


def test_pat_bit_at_pte_level_is_not_a_large_page():
    phys = DictPhys()
    t = Tables(phys)
    at = t.map(KVA, 0x7000)
    phys.write(at, struct.pack("<Q", 0x7000 | 0x80 | 0x63))   # bit 7 at PTE = PAT
    phys.write(0x7010, b"pat")
    assert KernelVirtual(phys, ARCH, t.root).read(KVA + 0x10, 3) == b"pat"


def test_not_present_names_level_and_entry(mem):
    phys, t = mem
    kv = KernelVirtual(phys, ARCH, t.root)
    pte_table = struct.unpack("<Q", phys.read(_walk_entry(phys, t.root, KVA, [39, 30, 21]), 8))[0] & MASK
    with pytest.raises(FaultError) as e:
        kv.read(KVA + 0x3000, 8)
    assert e.value.address == KVA + 0x3000
    assert str(e.value) == (f"cannot read kernel address 0xffff888000003000: not mapped (PTE entry 3 "
                            f"at physical {pte_table + 24:#x} is 0x0, not present)")
    with pytest.raises(FaultError) as e:
        kv.read(0xFFFFC90000000000, 8)
    assert str(e.value) == (f"cannot read kernel address 0xffffc90000000000: not mapped (PGD entry "
                            f"402 at physical {t.root + 402 * 8:#x} is 0x0, not present)")
    with pytest.raises(FaultError) as e:
        kv.read(0x0000900000000000, 8)
    assert str(e.value) == ("cannot read kernel address 0x900000000000: not canonical for 48-bit "
                            "virtual addresses")
    with pytest.raises(FaultError):
        kv.read(-8, 8)
    assert kv.is_mapped(KVA + 0x1000) and not kv.is_mapped(KVA + 0x3000)


def _walk_entry(phys, root, va, shifts):
    """Physical address of the entry at the last of ``shifts`` (test-side walk)."""
    table = root
    at = None
    for shift in shifts:
        at = table + 8 * ((va >> shift) & 0x1FF)
        table = struct.unpack("<Q", phys.read(at, 8))[0] & MASK
    return at


def test_read_that_faults_midway_names_the_virtual_address(mem):
    phys, t = mem
    kv = KernelVirtual(phys, ARCH, t.root)
    with pytest.raises(FaultError) as e:
        kv.read(KVA + 0x2FF0, 32)                       # runs into the unmapped page
    assert e.value.address == KVA + 0x3000


def test_physical_fault_keeps_its_class_and_names_both_addresses(mem):
    phys, t = mem
    phys.excluded.add(9)
    kv = KernelVirtual(phys, ARCH, t.root)
    with pytest.raises(ExcludedPageError) as e:
        kv.read(KVA + 0x2010, 8)
    assert e.value.address == KVA + 0x2010
    assert str(e.value) == ("cannot read kernel address 0xffff888000002010 (physical 0x9010): "
                            "physical address 0x9010 excluded")
    t.map(KVA + 0x4000, 0x77000)                        # frame not in the dump
    with pytest.raises(FaultError) as e:
        kv.read(KVA + 0x4000, 8)
    assert type(e.value) is FaultError
    assert str(e.value) == ("cannot read kernel address 0xffff888000004000 (physical 0x77000): "
                            "physical address 0x77000 not in the dump")


def test_unreadable_table_names_the_level():
    phys = DictPhys()
    t = Tables(phys)
    t.map(KVA, 0x5000)
    # Point the PGD entry at a frame that is not in the dump.
    at = t.root + 8 * ((KVA >> 39) & 0x1FF)
    phys.write(at, struct.pack("<Q", 0xABC000 | 0x63))
    with pytest.raises(FaultError) as e:
        KernelVirtual(phys, ARCH, t.root).read(KVA, 1)
    assert str(e.value) == ("cannot read kernel address 0xffff888000000000: PUD table at physical "
                            "0xabc000 is unreadable: physical address 0xabc000 not in the dump")


def test_five_levels():
    phys = DictPhys()
    t = Tables(phys, levels=5)
    va = 0xFF11000000001000                             # 5-level direct map
    t.map(va, 0x6000)
    phys.write(0x6000, b"la57")
    kv = KernelVirtual(phys, ARCH, t.root, levels=5)
    assert kv.levels == 5
    assert kv.read(va, 4) == b"la57"
    # The same tables walked as 4-level miss: the address is not canonical there.
    with pytest.raises(FaultError) as e:
        KernelVirtual(phys, ARCH, t.root, levels=4).read(va, 4)
    assert "not canonical for 48-bit" in str(e.value)
    with pytest.raises(FaultError) as e:
        kv.read(0xFF11000000002000, 1)
    assert "PTE entry 2 " in str(e.value)
    with pytest.raises(DumpError):
        KernelVirtual(phys, ARCH, t.root, levels=3)


def test_sme_mask_is_cleared_from_entries():
    phys = DictPhys()
    c_bit = 1 << 47
    t = Tables(phys, extra_bits=c_bit)
    t.map(KVA, 0x5000)
    phys.write(0x5000, b"sme")
    assert KernelVirtual(phys, ARCH, t.root, sme_mask=c_bit).read(KVA, 3) == b"sme"
    with pytest.raises(FaultError):                      # without the mask: wrong frame
        KernelVirtual(phys, ARCH, t.root).read(KVA, 3)


def test_translations_are_cached_per_page(mem):
    phys, t = mem
    kv = KernelVirtual(phys, ARCH, t.root)
    assert kv.read(KVA + 0x1000, 1) == b"A"
    # Remove the mapping from the tables: the cached translation still answers,
    # a flush makes the layer walk again and miss.
    leaf = _walk_entry(phys, t.root, KVA + 0x1000, [39, 30, 21, 12])
    phys.write(leaf, bytes(8))
    assert kv.read(KVA + 0x1800, 1) == b"A"
    kv.flush()
    with pytest.raises(FaultError):
        kv.read(KVA + 0x1800, 1)


def test_large_leaf_is_walked_once():
    phys = DictPhys()
    t = Tables(phys)
    leaf = t.map(0xFFFFFFFF80000000, 0x40000000, size=2 << 20)
    phys.write(0x40000000 + 0x1234, b"first")
    phys.write(0x40000000 + 0x1FF000, b"last")
    kv = KernelVirtual(phys, ARCH, t.root)
    assert kv.read(0xFFFFFFFF80001234, 5) == b"first"
    phys.write(leaf, bytes(8))       # unmap: later pages under the same leaf still translate
    assert kv.read(0xFFFFFFFF801FF000, 4) == b"last"
    with pytest.raises(FaultError) as e:   # ... but nothing outside it
        kv.read(0xFFFFFFFF80200000, 4)
    assert "PMD entry 1 " in str(e.value)
    kv.flush()
    with pytest.raises(FaultError) as e:
        kv.read(0xFFFFFFFF801FF000, 4)
    assert "PMD entry 0 " in str(e.value)


def test_user_virtual_is_another_root(mem):
    phys, t = mem
    user = Tables(phys, first_pfn=0x200)
    phys.write(0x30000, b"user data")
    user.map(0x400000, 0x30000)
    uv = UserVirtual(phys, ARCH, user.root)
    assert uv.read(0x400000, 9) == b"user data"
    with pytest.raises(FaultError) as e:
        uv.read(KVA + 0x1000, 1)                         # kernel half not in this root
    assert str(e.value).startswith("cannot read user address 0xffff888000001000: not mapped (PGD")


class Arm64Tables(Tables):
    """Builds arm64 4 KiB-granule tables (ARM ARM D8.3): bit 0 valid, bit 1
    table (levels 0-2) or page (level 3); a valid entry without bit 1 above
    level 3 is a block."""

    def map(self, va: int, pa: int, size: int = PAGE, flags: int = 0x703) -> int:
        shifts = [48, 39, 30, 21, 12][-self.levels:]
        leaf = {PAGE: 12, 2 << 20: 21, 1 << 30: 30}[size]
        table = self.root
        for i, shift in enumerate(shifts):
            width = 0xF if i == 0 and self.levels == 5 else 0x1FF
            at = table + 8 * ((va >> shift) & width)
            if shift == leaf:
                entry = pa | (flags if shift == 12 else flags & ~2)
                self.phys.write(at, struct.pack("<Q", entry))
                return at
            entry = struct.unpack("<Q", self.phys.read(at, 8))[0]
            if not entry & 1:
                entry = self.alloc() | 3
                self.phys.write(at, struct.pack("<Q", entry))
            table = entry & MASK
        raise AssertionError("unreachable")


def test_arm64_walk_pages_blocks_and_both_halves():
    phys = DictPhys()
    t = Arm64Tables(phys)
    fmt = ARM64.page_table_format(4)
    phys.write(0x40005000, b"A" * PAGE)
    kva = 0xFFFF000000000000                   # the linear map of a 48-bit kernel
    t.map(kva + 0x1000, 0x40005000)
    t.map(kva + (2 << 20), 0x40200000, 2 << 20)
    t.map(kva + (1 << 30), 0x80000000, 1 << 30)
    t.map(0x400000, 0x40005000)                 # a user address (TTBR0's half)
    assert ARM64.walk_leaf(phys, t.root, kva + 0x1234, fmt) == (0x40005234, PAGE)
    assert ARM64.walk_leaf(phys, t.root, kva + (2 << 20) + 0x1234, fmt) == \
        (0x40201234, 2 << 20)
    assert ARM64.walk_leaf(phys, t.root, kva + (1 << 30) + 0x123456, fmt) == \
        (0x80123456, 1 << 30)
    assert ARM64.walk(phys, t.root, 0x400010, fmt) == 0x40005010
    kv = KernelVirtual(phys, ARM64, t.root, levels=4)
    assert kv.read(kva + 0x1ffe, 2) == b"AA"
    with pytest.raises(FaultError) as e:
        kv.read(kva + 0x3000, 1)
    assert "not mapped (PTE entry 3 at physical" in str(e.value)
    with pytest.raises(FaultError) as e:
        kv.read(0x0001000000000000, 1)
    assert str(e.value) == ("cannot read kernel address 0x1000000000000: outside the 48-bit "
                            "virtual address ranges")
    # 39-bit (3 levels): the root resolves bits 30-38
    t3 = Arm64Tables(DictPhys(), levels=3)
    t3.phys.write(0x40007000, b"C" * PAGE)
    t3.map(0xFFFFFF8000001000, 0x40007000)
    assert ARM64.walk(t3.phys, t3.root, 0xFFFFFF8000001008, ARM64.page_table_format(3)) == \
        0x40007008


def test_arm64_vmcoreinfo_and_pac():
    info = {"NUMBER(VA_BITS)": "48", "NUMBER(TCR_EL1_T1SZ)": "0x10",
            "NUMBER(kimage_voffset)": "0xffffb00332400000", "NUMBER(PHYS_OFFSET)": "0x40000000",
            "KERNELOFFSET": "30036a600000", "NUMBER(KERNELPACMASK)": "0xff7f000000000000",
            "SYMBOL(swapper_pg_dir)": "ffffb0037398f000"}
    assert ARM64.pgtable_levels(info) == 4
    assert ARM64.pgtable_levels({"NUMBER(VA_BITS)": "39"}) == 3
    assert ARM64.kernel_pgtable_root(info) == 0x4158F000
    assert ARM64.kaslr_offset(info) == 0x30036A600000
    assert ARM64.phys_offset(info) == 0x40000000

    class Prog:
        vmcoreinfo = info
        cache: dict = {}
    # a signed kernel return address gets its top bits back; a user one loses them
    assert ARM64.strip_pac(Prog, 0x3A2EB0037261F2C4 | (1 << 55)) == 0xFFFFB0037261F2C4
    assert ARM64.strip_pac(Prog, 0x002E00000040F2C4) == 0x40F2C4
    assert ARM64.user_mode({"pstate": 0x80000000}) and not ARM64.user_mode({"pstate": 0x3C5})


def test_integer_helpers_and_cstring(mem):
    phys, t = mem
    phys.write(0x5000 + 0xFF8, struct.pack("<q", -2))
    phys.write(0x9000, b"tail\0rest")
    phys.write(0x5000 + 0xFFC, b"str-")
    kv = KernelVirtual(phys, ARCH, t.root)
    assert kv.read_u32(KVA + 0x1FF8) == 0xFFFFFFFE
    assert kv.read_s32(KVA + 0x1FF8) == -2
    assert kv.read_u16(KVA + 0x1FF8) == 0xFFFE
    assert kv.read_s16(KVA + 0x1FF8) == -2
    assert kv.read_u8(KVA + 0x1FF8) == 0xFE
    assert kv.read_s8(KVA + 0x1FF8) == -2
    # u64 spanning the two frames: 4 bytes "str-" + 4 bytes "tail"
    assert kv.read_u64(KVA + 0x1FFC) == struct.unpack("<Q", b"str-tail")[0]
    assert kv.read_s64(KVA + 0x1FF8) == struct.unpack("<q", b"\xfe\xff\xff\xffstr-")[0]
    assert kv.read_cstring(KVA + 0x1FFC) == b"str-tail"
    assert kv.read_cstring(KVA + 0x1FFC, max_size=6) == b"str-ta"
    assert phys.read_u64(0x9000) == struct.unpack("<Q", b"tail\0res")[0]


def test_read_cstring_stops_at_the_layers_page():
    """read_cstring reads in pages of the layer's arch (Layer.page_size), never
    past the page holding the NUL: the next page may be unmapped."""
    from kql.arch import MIN_PAGE_SIZE
    from kql.memory import read_cstring
    assert Layer.page_size == MIN_PAGE_SIZE == ARCH.page_size

    class Paged(Layer):
        page_size = 16              # a made-up arch with 16-byte pages
        mem = b"0123456789abcdef" + b"ghij\0" + bytes(11)

        def read(self, addr, size):
            if addr + size > 32:
                raise FaultError(addr, "unmapped")
            reads.append((addr, size))
            return self.mem[addr:addr + size]

    reads = []
    assert Paged().read_cstring(4, 1000) == b"456789abcdefghij"
    assert reads == [(4, 12), (16, 16)]
    reads.clear()
    assert read_cstring(Paged().read, 4, 1000, 32) == b"456789abcdefghij"
    assert reads == [(4, 28)]


# ---------------------------------------------------------------------------------
# arch hooks


def test_arch_selection():
    assert get_arch("x86_64") is ARCH and get_arch("amd64") is ARCH
    assert get_arch("aarch64") is get_arch("arm64") is ARM64
    with pytest.raises(DumpError) as e:
        get_arch("riscv64")
    assert str(e.value) == ("unsupported architecture 'riscv64': kql reads x86_64, arm64 and "
                            "i386 dumps only")
    # arm64: QEMU's kdump says "Unknown"; its VMCOREINFO and NT_PRSTATUS size tell
    assert detect_machine("Unknown", [], {"NUMBER(kimage_voffset)": "0xffff8000"}) == "arm64"
    assert detect_machine("Unknown", [Note("CORE", 1, bytes(392))], {}) == "arm64"
    assert detect_machine("EM_AARCH64") == "arm64"
    assert detect_machine("Unknown", [], {"SYMBOL(init_top_pgt)": "ffffffff82a0a000"}) == "x86_64"
    assert detect_machine("Unknown", [Note("CORE", 1, bytes(336))], {}) == "x86_64"
    assert detect_machine("Unknown", [Note("CORE", 1, bytes(200))], {}) is None


def test_arch_vmcoreinfo_helpers():
    info = {"SYMBOL(init_top_pgt)": "ffffffffa9e10000", "NUMBER(phys_base)": "-1879048192",
            "KERNELOFFSET": "28000000", "NUMBER(pgtable_l5_enabled)": "0"}
    # pa = sym - 0xffffffff80000000 + phys_base
    assert ARCH.kernel_pgtable_root(info) == 0x29E10000 - 1879048192
    assert ARCH.kaslr_offset(info) == 0x28000000
    assert ARCH.pgtable_levels(info) == 4
    assert ARCH.pgtable_levels({"NUMBER(pgtable_l5_enabled)": "1"}) == 5
    assert ARCH.kernel_pgtable_root({"SYMBOL(swapper_pg_dir)": "ffffffff82a0a000"}) == 0x2A0A000
    with pytest.raises(DumpError) as e:
        ARCH.kernel_pgtable_root({})
    assert str(e.value) == ("VMCOREINFO has neither SYMBOL(init_top_pgt) nor SYMBOL(swapper_pg_dir): "
                            "cannot find the kernel page tables")
    assert ARCH.pgd_from_cr3(0x800000000366A801) == 0x366A000


def test_register_layouts():
    assert PRSTATUS_REGS[16] == "rip" and PRSTATUS_REGS[19] == "rsp" and len(PRSTATUS_REGS) == 27
    assert PT_REGS_OFFSETS["rip"] == 128 and PT_REGS_OFFSETS["rsp"] == 152
    assert PT_REGS_OFFSETS["orig_rax"] == 120 and ARCH.pt_regs_size == 168
    with pytest.raises(DumpError) as e:
        ARCH.parse_prstatus(bytes(100))
    assert str(e.value) == "NT_PRSTATUS note is 100 bytes; x86_64 needs 336"


# ---------------------------------------------------------------------------------
# real dumps

UTS_RELEASE = 2 * 65          # struct uts_namespace starts with struct new_utsname
UTS_VERSION = 3 * 65


def _kernel_virtual(dump):
    arch = dump.arch
    info = dump.require_vmcoreinfo()
    return KernelVirtual(dump.phys, arch, arch.kernel_pgtable_root(info),
                         levels=arch.pgtable_levels(info))


def _real_registers_arm64(fx):
    with open_dump(fx.dump()) as dump:
        pids = [pid for pid, _regs in dump.prstatus()]
        assert dump.qemu_cpu_states() == []            # QEMU writes those for x86 only
        if fx.recipe["mode"] == "live":
            assert pids == list(range(1, fx.recipe["smp"] + 1))
        else:
            assert sorted(pids) == [0, fx.truth["panic_pid"]]
        for _pid, regs in dump.prstatus():
            # every CPU stopped in the kernel, at EL1 on SP_EL1 (PSTATE.M = EL1h)
            assert regs["pc"] >> 48 == 0xFFFF and regs["sp"] >> 48 == 0xFFFF
            assert regs["pstate"] & 0xF == 0x5


@pytest.mark.parametrize("name,kind", DUMPS, ids=[f"{n}:{k}" for n, k in DUMPS])
@pytest.mark.fixtures
def test_real_init_uts_ns_through_page_tables(name, kind):
    fx = fixture(name)
    with open_dump(fx.dump(kind)) as dump:
        assert dump.machine == fx.recipe.get("arch", "x86_64")
        assert dump.release == fx.truth["release"]
        kv = _kernel_virtual(dump)
        uts = int(dump.vmcoreinfo["SYMBOL(init_uts_ns)"], 16)
        if kv.read(uts, 6) != b"Linux\0":
            # before Linux 5.11 (commit 9a56493f6942 "uts: Use generic
            # ns_common::count") a struct kref came first
            uts += 4
        assert kv.read(uts, 6) == b"Linux\0"
        assert kv.read_cstring(uts + UTS_RELEASE, 65).decode() == fx.truth["release"]
        version = kv.read_cstring(uts + UTS_VERSION, 65).decode()
        assert fx.truth["version"].endswith(" " + version)
        assert dump.vmcoreinfo["OSRELEASE"] == fx.truth["release"]
        assert kv.levels == expected_pgtable_levels(fx)


@pytest.mark.parametrize("name", FIXTURES)
@pytest.mark.fixtures
def test_real_registers(name):
    fx = fixture(name)
    if fx.recipe.get("arch") == "arm64":
        return _real_registers_arm64(fx)
    with open_dump(fx.dump()) as dump:
        pids = [pid for pid, _regs in dump.prstatus()]
        states = dump.qemu_cpu_states()
        smp = fx.recipe["smp"]
        if fx.recipe["mode"] == "live":
            # QEMU: one NT_PRSTATUS per vCPU with pr_pid = cpu_index + 1, one QEMU note each.
            assert pids == list(range(1, smp + 1))
            assert len(states) == smp
            la57 = name.endswith("la57")
            for s in states:
                assert s["cr0"] & 0x80000001 == 0x80000001          # PG and PE
                assert bool(s["cr4"] & (1 << 12)) == la57            # CR4.LA57
                assert s["cs"] & 3 in (0, 3)
        else:
            # kdump: the panicking task's pid on its CPU, the other CPU idle (pid 0).
            assert sorted(pids) == [0, fx.truth["panic_pid"]]
            assert states == []
        for _pid, regs in dump.prstatus():
            assert regs["rip"] >= 0xFFFFFFFF80000000       # every CPU stopped in the kernel
            assert regs["cs"] == 0x10


@pytest.mark.fixtures
def test_real_formats_of_one_capture_agree():
    """6.1-live was written as ELF, kdump and flattened kdump by one QEMU dump:
    every page of the kdump files equals the ELF's (sampled: every 5th page)."""
    fx = fixture("6.1-live")
    elf = open_dump(fx.dump("elf"))
    kdump = open_dump(fx.dump("kdump"))
    flat = open_dump(fx.dump("kdump-flat"))
    assert kdump.format == "kdump" and flat.format == "kdump-flattened"
    assert kdump.vmcoreinfo_raw == elf.vmcoreinfo_raw == flat.vmcoreinfo_raw
    checked = 0
    for start, end in elf.phys.ranges():
        for pa in range(start, end, 5 * PAGE):
            page = elf.phys.read(pa, PAGE)
            assert kdump.phys.read(pa, PAGE) == page, hex(pa)
            assert flat.phys.read(pa, PAGE) == page, hex(pa)
            checked += 1
    assert checked > 30000
    for d in (elf, kdump, flat):
        d.close()


@pytest.mark.parametrize("name", [n for n in FIXTURES if "panic" in n])
@pytest.mark.fixtures
def test_real_excluded_pages(name):
    fx = fixture(name)
    path = fx.dump("kdump")
    dump = open_dump(path)
    level = int(fx.recipe["makedumpfile"].split("-d ")[1].split()[0])
    assert dump.dump_level == level
    part = dump.phys.parts[0]
    pfn = next(p for p in range(part.max_mapnr) if part.in_ram(p) and not part.in_dump(p))
    with pytest.raises(ExcludedPageError) as e:
        dump.phys.read(pfn * PAGE + 8, 8)
    assert str(e.value) == (f"physical address {pfn * PAGE:#x} (pfn {pfn:#x}) is excluded by the "
                            f"dump level (makedumpfile -d {level}); use zero_excluded to read it "
                            f"as zeros")
    assert open_dump(path, zero_excluded=True).phys.read(pfn * PAGE + 8, 8) == bytes(8)


def _system_map(path: str) -> dict[str, int]:
    syms = {}
    with open(path) as f:
        for line in f:
            addr, _kind, sym = line.split()[:3]
            syms.setdefault(sym, int(addr, 16))
    return syms


@pytest.mark.parametrize("name", ["6.1-live", "6.12-live", "6.1-panic-lzo", "arm64-6.1-live",
                                  "arm64-6.1-panic"])
@pytest.mark.fixtures
def test_real_user_virtual_reads_init_cmdline(name):
    """pid 1's argv through its own page tables (mm->pgd) equals /proc/1/cmdline."""
    from kql.btf import load_btf

    fx = fixture(name)
    dump = open_dump(fx.dump())
    kv = _kernel_virtual(dump)
    offset = dump.arch.kaslr_offset(dump.vmcoreinfo)
    # The debug package's System.map beside the vmlinux (the one in /boot of the
    # unsigned package is a one-line placeholder).
    system_map = Path(fx.vmlinux).parent / f"System.map-{fx.release}"
    syms = {k: v + offset for k, v in _system_map(str(system_map)).items()}
    btf = load_btf(kv.read, syms["__start_BTF"], syms["__stop_BTF"])
    task_t = btf.find_type("struct task_struct")
    mm_t = btf.find_type("struct mm_struct")
    tasks_off = task_t.offsetof("tasks")
    # init_task.tasks.next is pid 1 (the first task forked).
    init = kv.read_u64(syms["init_task"] + tasks_off) - tasks_off
    assert kv.read_s32(init + task_t.offsetof("pid")) == 1
    mm = kv.read_u64(init + task_t.offsetof("mm"))
    pgd = kv.read_u64(mm + mm_t.offsetof("pgd"))
    uv = UserVirtual(dump.phys, dump.arch, kv.translate(pgd), levels=kv.levels)
    arg_start = kv.read_u64(mm + mm_t.offsetof("arg_start"))
    arg_end = kv.read_u64(mm + mm_t.offsetof("arg_end"))
    if fx.recipe["mode"] == "panic":
        # makedumpfile -d 31 drops user pages (bit 8): the walk works, the page is excluded.
        with pytest.raises(ExcludedPageError) as e:
            uv.read(arg_start, arg_end - arg_start)
        assert str(e.value).startswith(f"cannot read user address {arg_start:#x} (physical ")
        assert str(e.value).endswith("is excluded by the dump level (makedumpfile -d 31); "
                                     "use zero_excluded to read it as zeros")
    else:
        cmdline = uv.read(arg_start, arg_end - arg_start).decode()
        assert cmdline == fx.truth["processes"]["1"]["cmdline"]
    if fx.recipe.get("arch") == "arm64":
        # arm64 translates the kernel half through TTBR1 (swapper_pg_dir):
        # mm->pgd maps user addresses only.
        with pytest.raises(FaultError):
            uv.read(syms["init_task"], 8)
        return
    # The kernel half is not reachable through the user layer's name but is mapped
    # in the same root (mm->pgd holds the kernel mappings too).
    assert uv.read(syms["init_task"], 8) == kv.read(syms["init_task"], 8)
