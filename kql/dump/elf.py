"""ELF vmcores: /proc/vmcore copies (kdump), makedumpfile -E, QEMU dump-guest-memory.

The ELF header is unpacked with struct (pyelftools costs ~40 ms to import
and is asked only to name an unsupported machine); the segment count is
e_phnum, or section 0's sh_info when e_phnum is 0xffff.  The program headers
are then unpacked in one go and physical reads go through a sorted segment list with
bisect.  Only p_paddr is used (QEMU's p_vaddr == p_paddr; kdump's p_vaddr is
the direct-map address, which gives ``direct_map_hint``).
"""

from __future__ import annotations

import struct
from bisect import bisect_right
from collections import Counter

from kql.arch import detect_machine
from kql.dump.base import Dump, Probe, parse_notes
from kql.dump.files import MappedFile
from kql.errors import DumpError, ExcludedPageError, FaultError
from kql.memory import Layer

ELF_MAGIC = b"\x7fELF"
PT_LOAD = 1
PT_NOTE = 4
_PHDR = struct.Struct("<IIQQQQQQ")    # type, flags, offset, vaddr, paddr, filesz, memsz, align
# Elf64_Ehdr after e_ident: type, machine, version, entry, phoff, shoff, flags,
# ehsize, phentsize, phnum, shentsize, shnum, shstrndx
_EHDR = struct.Struct("<HHIQQQIHHHHHH")
# ELF32 (32-bit x86 vmcores): the same fields with 4-byte addresses; a program
# header puts p_flags after p_memsz
_EHDR32 = struct.Struct("<HHIIIIIHHHHHH")
_PHDR32 = struct.Struct("<IIIIIIII")  # type, offset, vaddr, paddr, filesz, memsz, flags, align
_ET_NAMES = {0: "ET_NONE", 1: "ET_REL", 2: "ET_EXEC", 3: "ET_DYN", 4: "ET_CORE"}
EM_X86_64 = 62
PN_XNUM = 0xFFFF

# Kernel direct map lives below the kernel-text mapping at 0xffffffff80000000.
_KERNEL_HALF = 0xFFFF800000000000
_KERNEL_TEXT = 0xFFFFFFFF80000000


def is_elf(head: bytes) -> bool:
    return head[:4] == ELF_MAGIC


class ElfPhysical(Layer):
    """Physical memory backed by PT_LOAD segments."""

    name = "physical"

    def __init__(self, mfile: MappedFile, segments, *, zero_excluded: bool, stats,
                 file_end: int):
        # segments: sorted, non-overlapping (start, data_end, file_end, mem_end, file_offset):
        # [start, data_end) is in the file, [data_end, file_end) was cut off by a
        # truncated file, [file_end, mem_end) was filtered out (p_filesz < p_memsz).
        self._buf = mfile.buffer
        self._segs = segments
        self._starts = [s[0] for s in segments]
        self._zero_excluded = zero_excluded
        self._stats = stats
        self._file_end = file_end

    def read(self, paddr: int, size: int) -> bytes:
        i = bisect_right(self._starts, paddr) - 1
        if i >= 0:
            start, dend, _fend, _mend, foff = self._segs[i]
            if paddr + size <= dend and 0 <= size <= 4096:
                self._stats.pages_read += 1      # in-page reads are the hot path
                at = foff + paddr - start
                return self._buf[at:at + size]
        return self._read_slow(paddr, size)

    def _read_slow(self, paddr: int, size: int) -> bytes:
        if size <= 0:
            if size == 0:
                return b""
            raise ValueError(f"negative read size {size}")
        out = []
        addr = paddr
        end = paddr + size
        while addr < end:
            i = bisect_right(self._starts, addr) - 1
            seg = self._segs[i] if i >= 0 else None
            if seg is None or addr >= seg[3]:
                raise FaultError(addr, f"physical address {addr:#x} is not in the dump "
                                       f"(no ELF segment covers it)", physical=True)
            start, dend, fend, mend, foff = seg
            if addr < dend:
                stop = min(end, dend)
                at = foff + addr - start
                out.append(self._buf[at:at + stop - addr])
                addr = stop
                continue
            if addr < fend:
                raise FaultError(addr, f"physical address {addr:#x} is beyond the end of the "
                                       f"truncated dump file (file ends at offset "
                                       f"{self._file_end})", physical=True)
            # In the segment's memory but not its file data: filtered out.
            stop = min(end, mend)
            if not self._zero_excluded:
                raise ExcludedPageError(addr, f"physical address {addr:#x} is excluded from the "
                                              f"dump (filtered ELF: segment data ends at "
                                              f"{fend:#x}, makedumpfile -E with a dump level)",
                                        physical=True)
            out.append(bytes(stop - addr))
            addr = stop
        self._stats.pages_read += ((end - 1) >> 12) - (paddr >> 12) + 1
        return b"".join(out)

    def is_mapped(self, paddr: int) -> bool:
        i = bisect_right(self._starts, paddr) - 1
        if i < 0:
            return False
        start, dend, fend, mend, foff = self._segs[i]
        if paddr < dend:
            return True
        return fend <= paddr < mend and self._zero_excluded

    def ranges(self) -> list[tuple[int, int]]:
        """[start, end) physical ranges with file data."""
        return [(s[0], s[1]) for s in self._segs if s[1] > s[0]]

    def excluded_ranges(self) -> list[tuple[int, int]]:
        """[start, end) physical ranges filtered out (p_filesz < p_memsz)."""
        return [(s[2], s[3]) for s in self._segs if s[3] > s[2]]


def open_elf(mfile: MappedFile, *, zero_excluded: bool = False) -> Dump:
    path = mfile.path
    buf = mfile.buffer
    if mfile.size < 64:
        raise DumpError(f"{path}: truncated ELF file: header needs 64 bytes, file has {mfile.size}")
    if buf[4] not in (1, 2):
        raise DumpError(f"{path}: ELF class {buf[4]} is neither 32- nor 64-bit")
    if buf[5] != 1:
        raise DumpError(f"{path}: big-endian ELF file; kql reads little-endian (x86_64, arm64, i386) vmcores only")
    elf32 = buf[4] == 1
    ehdr, phdr = (_EHDR32, _PHDR32) if elf32 else (_EHDR, _PHDR)
    (e_type, e_machine, _version, _entry, e_phoff, e_shoff, _flags, _ehsize, e_phentsize,
     e_phnum, _shentsize, _shnum, _shstrndx) = ehdr.unpack_from(buf, 16)
    phnum = e_phnum
    if e_phnum == PN_XNUM:
        shdr_size = 40 if elf32 else 64
        if e_shoff + shdr_size > mfile.size:
            raise DumpError(f"{path}: truncated ELF core: e_phnum is 0xffff but section 0 "
                            f"(at offset {e_shoff}) is missing")
        # section 0's sh_info
        phnum = struct.unpack_from("<I", buf, e_shoff + (28 if elf32 else 44))[0]
    e_type = _ET_NAMES.get(e_type, e_type)
    e_machine = "EM_X86_64" if e_machine == EM_X86_64 else _machine_name(e_machine)
    if e_type != "ET_CORE":
        raise DumpError(f"{path}: ELF file is not a core dump (e_type {e_type}); "
                        f"is this a vmlinux or module instead of a vmcore?")
    machine = detect_machine(e_machine)
    if machine is None:
        raise DumpError(f"{path}: unsupported ELF machine {e_machine}: "
                        f"kql reads x86_64, arm64 and i386 vmcores only")
    if e_phentsize != phdr.size:
        raise DumpError(f"{path}: ELF program headers are {e_phentsize} bytes, "
                        f"expected {phdr.size}")
    table_end = e_phoff + phnum * phdr.size
    if table_end > mfile.size:
        raise DumpError(f"{path}: truncated ELF core: {phnum} program headers need bytes "
                        f"{e_phoff}..{table_end}, file has {mfile.size}")

    warnings: list[str] = []
    notes = []
    loads = []
    deltas: Counter[int] = Counter()
    headers = phdr.iter_unpack(buf[e_phoff:table_end])
    if elf32:
        headers = ((t, fl, o, v, p, fs, ms, al) for t, o, v, p, fs, ms, fl, al in headers)
    for p_type, _flags, offset, vaddr, paddr, filesz, memsz, _align in headers:
        if p_type == PT_NOTE:
            if offset + filesz > mfile.size:
                raise DumpError(f"{path}: truncated ELF core: PT_NOTE needs bytes "
                                f"{offset}..{offset + filesz}, file has {mfile.size}")
            notes.extend(parse_notes(buf[offset:offset + filesz], f"{path}: PT_NOTE"))
        elif p_type == PT_LOAD:
            if memsz == 0:
                continue
            if filesz > memsz:
                filesz = memsz
            if offset + filesz > mfile.size:
                have = max(0, mfile.size - offset)
                warnings.append(f"file is truncated: segment at physical {paddr:#x} needs "
                                f"{filesz} bytes at offset {offset}, file has {have}")
            avail = min(filesz, max(0, mfile.size - offset))
            loads.append((paddr, paddr + avail, paddr + filesz, paddr + memsz, offset))
            if vaddr != paddr and _KERNEL_HALF <= vaddr < _KERNEL_TEXT:
                deltas[vaddr - paddr] += 1
    if not loads:
        raise DumpError(f"{path}: ELF core has no PT_LOAD segments (no memory in it)")

    segments = _non_overlapping(sorted(loads))
    vmcoreinfo_raw = b""
    for note in notes:
        if note.name == "VMCOREINFO":
            vmcoreinfo_raw = note.desc.rstrip(b"\0")
    direct_map_hint = deltas.most_common(1)[0][0] if deltas else None

    dump = Dump(path=path, format="elf", machine=machine, phys=None, notes=notes,
                vmcoreinfo_raw=vmcoreinfo_raw, direct_map_hint=direct_map_hint,
                warnings=warnings)
    dump.phys = ElfPhysical(mfile, segments, zero_excluded=zero_excluded, stats=dump.stats,
                            file_end=mfile.size)
    dump._closers.append(mfile.close)
    return dump


def _machine_name(code: int) -> str | int:
    """pyelftools' name for an ELF e_machine (EM_AARCH64), for messages."""
    try:
        from elftools.elf.enums import ENUM_E_MACHINE
    except ImportError:
        return code
    for name, value in ENUM_E_MACHINE.items():
        if value == code:
            return name
    return code


def _non_overlapping(loads):
    """Sorted (start, dend, fend, mend, off) -> same, overlaps trimmed (lower start wins)."""
    out = []
    prev_end = -1
    for start, dend, fend, mend, off in loads:
        if mend <= prev_end:
            continue
        if start < prev_end:
            cut = prev_end - start
            start, off = prev_end, off + cut
            dend = max(dend, start)
            fend = max(fend, start)
        out.append((start, dend, fend, mend, off))
        prev_end = mend
    return out


PROBE = Probe("elf", "ELF", lambda head, path, size: is_elf(head), open_elf)
