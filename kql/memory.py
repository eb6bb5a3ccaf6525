"""Memory layers: physical (from kql.dump) -> virtual (page tables).

Every layer has ``read(addr, size) -> bytes``, ``translate(addr) -> int`` and
``is_mapped(addr) -> bool`` plus ``read_u8`` ... ``read_s64`` helpers.  A read
that cannot be satisfied raises :class:`~kql.errors.FaultError` (or its
subclass :class:`~kql.errors.ExcludedPageError`) naming the address.

The physical layers live in ``kql.dump`` (only that package sees file
offsets); :class:`PageTableLayer` here stacks on any of them and walks page
tables with the architecture's hook object (``kql.arch``).  Translations are
cached per page, so reading many small objects costs one dict lookup plus
one physical read each.
"""

from __future__ import annotations

import struct

from kql.arch import MIN_PAGE_SIZE
from kql.errors import FaultError

_U16 = struct.Struct("<H").unpack_from
_U32 = struct.Struct("<I").unpack_from
_U64 = struct.Struct("<Q").unpack_from
_S8 = struct.Struct("<b").unpack_from
_S16 = struct.Struct("<h").unpack_from
_S32 = struct.Struct("<i").unpack_from
_S64 = struct.Struct("<q").unpack_from

U64_MAX = (1 << 64) - 1


class Layer:
    """Base of all memory layers: subclasses implement ``read`` (and ``translate``)."""

    name = "memory"

    def read(self, addr: int, size: int) -> bytes:  # pragma: no cover - abstract
        raise NotImplementedError

    def translate(self, addr: int) -> int:
        """Address in the layer below (identity for a physical layer)."""
        return addr

    def is_mapped(self, addr: int) -> bool:
        """True if one byte at ``addr`` can be read."""
        try:
            self.read(addr, 1)
        except FaultError:
            return False
        return True

    # Fixed-size little-endian helpers (x86_64 is the only arch; if another
    # one arrives, these move behind the arch hook object).
    def read_u8(self, addr: int) -> int:
        return self.read(addr, 1)[0]

    def read_s8(self, addr: int) -> int:
        return _S8(self.read(addr, 1))[0]

    def read_u16(self, addr: int) -> int:
        return _U16(self.read(addr, 2))[0]

    def read_s16(self, addr: int) -> int:
        return _S16(self.read(addr, 2))[0]

    def read_u32(self, addr: int) -> int:
        return _U32(self.read(addr, 4))[0]

    def read_s32(self, addr: int) -> int:
        return _S32(self.read(addr, 4))[0]

    def read_u64(self, addr: int) -> int:
        return _U64(self.read(addr, 8))[0]

    def read_s64(self, addr: int) -> int:
        return _S64(self.read(addr, 8))[0]

    def read_pointer(self, addr: int) -> int:
        return _U64(self.read(addr, 8))[0]

    #: The unit in which reads of this layer may fault (a page table layer:
    #: its arch's page; other layers: kql.arch.MIN_PAGE_SIZE).
    page_size = MIN_PAGE_SIZE

    def read_cstring(self, addr: int, max_size: int = 4096) -> bytes:
        """Bytes up to (not including) the first NUL, at most ``max_size``."""
        return read_cstring(self.read, addr, max_size, self.page_size)


class PageTableLayer(Layer):
    """Virtual addresses translated by walking page tables rooted at ``pgd_paddr``.

    ``arch`` is the hook object from :func:`kql.arch.get_arch`; ``levels`` the
    number of paging levels (4 or 5 on x86_64; default the arch's); ``sme_mask``
    (VMCOREINFO NUMBER(sme_mask)) is cleared from every entry's address bits.
    A failed read raises FaultError naming the virtual address (and, when the
    physical layer failed, the physical one and the reason).
    """

    name = "virtual"

    def __init__(self, phys: Layer, arch, pgd_paddr: int, *, levels: int | None = None,
                 sme_mask: int = 0, name: str | None = None):
        self.phys = phys
        self.arch = arch
        self.pgd_paddr = pgd_paddr
        self.levels = levels or arch.default_pgtable_levels
        self._format = arch.page_table_format(self.levels, sme_mask=sme_mask)
        if name is not None:
            self.name = name
        self._page_size = self.page_size = arch.page_size
        self._page_mask = arch.page_size - 1
        self._tlb: dict[int, int] = {}          # virtual page -> physical page
        self._tlb_limit = 1 << 20
        # Large (2M/1G) leaves seen so far: (size, {virtual base: physical base}),
        # so the 512 (or 262144) small pages under one leaf need a single walk.
        self._large = [(size, {}) for size in arch.large_page_sizes]
        self._phys_read = phys.read
        if arch.pointer_size == 4:          # 32-bit kernels (kql/arch/i386.py)
            self.read_pointer = self.read_u32

    def _fill(self, vpage: int) -> int:
        if not 0 <= vpage <= U64_MAX:
            raise FaultError(vpage, f"cannot read {self.name} address {vpage:#x}: "
                                    f"not a 64-bit address")
        tlb = self._tlb
        if len(tlb) >= self._tlb_limit:
            tlb.clear()
        for size, leaves in self._large:
            base = leaves.get(vpage & -size)
            if base is not None:
                ppage = tlb[vpage] = base + (vpage & (size - 1))
                return ppage
        ppage, size = self.arch.walk_leaf(self.phys, self.pgd_paddr, vpage, self._format,
                                          self.name)
        if size > self._page_size:
            for lsize, leaves in self._large:
                if lsize == size:
                    leaves[vpage & -size] = ppage - (vpage & (size - 1))
        tlb[vpage] = ppage
        return ppage

    def translate(self, addr: int) -> int:
        off = addr & self._page_mask
        base = self._tlb.get(addr - off)
        if base is None:
            base = self._fill(addr - off)
        return base + off

    def read(self, addr: int, size: int) -> bytes:
        off = addr & self._page_mask
        if off + size <= self._page_size:
            base = self._tlb.get(addr - off)
            if base is None:
                base = self._fill(addr - off)
            try:
                return self._phys_read(base + off, size)
            except FaultError as e:
                raise self._rewrap(e, addr, base + off) from None
        if size <= 0:
            if size == 0:
                return b""
            raise ValueError(f"negative read size {size}")
        parts = []
        while size > 0:
            n = min(size, self._page_size - (addr & self._page_mask))
            parts.append(self.read(addr, n))
            addr += n
            size -= n
        return b"".join(parts)

    # Hot helpers: the common in-page case without the extra call through read().
    def read_u64(self, addr: int) -> int:
        off = addr & self._page_mask
        if off <= self._page_size - 8:
            base = self._tlb.get(addr - off)
            if base is not None:
                try:
                    return _U64(self._phys_read(base + off, 8))[0]
                except FaultError as e:
                    raise self._rewrap(e, addr, base + off) from None
        return _U64(self.read(addr, 8))[0]

    read_pointer = read_u64

    def read_u32(self, addr: int) -> int:
        off = addr & self._page_mask
        if off <= self._page_size - 4:
            base = self._tlb.get(addr - off)
            if base is not None:
                try:
                    return _U32(self._phys_read(base + off, 4))[0]
                except FaultError as e:
                    raise self._rewrap(e, addr, base + off) from None
        return _U32(self.read(addr, 4))[0]

    def _rewrap(self, e: FaultError, vaddr: int, paddr: int) -> FaultError:
        return type(e)(vaddr, f"cannot read {self.name} address {vaddr:#x} "
                              f"(physical {paddr:#x}): {e}")

    def flush(self) -> None:
        """Forget cached translations."""
        self._tlb.clear()
        for _size, leaves in self._large:
            leaves.clear()


class KernelVirtual(PageTableLayer):
    """Kernel virtual address space (root: swapper_pg_dir / init_top_pgt)."""

    name = "kernel"


class UserVirtual(PageTableLayer):
    """A task's user address space (root: physical address of ``mm->pgd``)."""

    name = "user"


def read_cstring(read, addr: int, max_size: int, page_size: int) -> bytes:
    """Bytes up to (not including) the first NUL, at most ``max_size``, from
    ``read(addr, size)``.  Reads page by page (``page_size``: the arch's, see
    :attr:`Layer.page_size`) so a string near the end of a mapping does not
    fault on the bytes after its NUL."""
    out = []
    total = 0
    while total < max_size:
        chunk = min(max_size - total, page_size - (addr & (page_size - 1)))
        data = read(addr, chunk)
        nul = data.find(b"\0")
        if nul >= 0:
            out.append(data[:nul])
            break
        out.append(data)
        total += chunk
        addr += chunk
    return b"".join(out)
