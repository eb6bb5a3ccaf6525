"""kdump-compressed vmcores (makedumpfile "diskdump" format, also QEMU's kdump).

Layout (makedumpfile IMPLEMENTATION; see docs/../REFERENCE.md section 2):
block 0 ``disk_dump_header``, block 1.. ``kdump_sub_header`` (+ vmcoreinfo,
notes), then two bitmaps (1st: pfn is RAM, 2nd: pfn is in the dump), then
one 24-byte ``page_desc`` per dumped page, then the page data.

The page_desc of a pfn is at index popcount(2nd bitmap in [start_pfn, pfn));
prefix counts per block of pfns make that a short popcount.  Decompressed
pages go into a small LRU cache.
"""

from __future__ import annotations

import re
import struct
import zlib
from bisect import bisect_right
from functools import lru_cache

from kql.dump.base import Dump, Probe, parse_notes
from kql.errors import DumpError, ExcludedPageError, FaultError
from kql.memory import Layer

SIGNATURES = (b"KDUMP   ", b"DISKDUMP")
HEADER_SIZE = 464
_HEADER = struct.Struct("<8si")                # signature, header_version
_UTS_FIELD = 65
_UTS_OFFSET = 12
_TIMESTAMP = struct.Struct("<qq")              # at 408
_HEADER_TAIL = struct.Struct("<IiiIIIIIIi")    # at 424: status .. nr_cpus
_SUB_HEADER = struct.Struct("<qiiQQQQQQQQQQQ")  # 104 bytes
# A 32-bit kernel's makedumpfile writes its longs (timeval, phys_base, the
# 32-bit pfns, sizes) in 4 bytes and aligns 8-byte off_t to 4 (i386 ABI).
_TIMESTAMP32 = struct.Struct("<ii")            # at 404, the tail at 412
_SUB_HEADER32 = struct.Struct("<IiiIIqIqIqIQQQ")  # 80 bytes
_PAGE_DESC = struct.Struct("<qIIQ")            # offset, size, flags, page_flags

DUMP_DH_COMPRESSED_ZLIB = 0x1
DUMP_DH_COMPRESSED_LZO = 0x2
DUMP_DH_COMPRESSED_SNAPPY = 0x4
DUMP_DH_COMPRESSED_INCOMPLETE = 0x8          # header status: dump was cut short
DUMP_DH_COMPRESSED_ZSTD = 0x20
_COMPRESSION_NAMES = {
    DUMP_DH_COMPRESSED_ZLIB: "zlib",
    DUMP_DH_COMPRESSED_LZO: "lzo",
    DUMP_DH_COMPRESSED_SNAPPY: "snappy",
    DUMP_DH_COMPRESSED_ZSTD: "zstd",
}

RANK_BLOCK_PFNS = 1024                        # prefix count every 1024 pfns (128 bitmap bytes)
PAGE_CACHE_SIZE = 8192                        # decompressed pages kept (32 MiB at 4 KiB)


def is_kdump(head: bytes) -> bool:
    return head[:8] in SIGNATURES


class _Decompressors:
    """flag -> function(data, page_size) -> bytes, one set per open file.

    The libraries are imported and their (reusable, not thread-safe) objects
    made on first use: a new LZO or zstd context per page costs 2-4x the
    decompression itself.
    """

    def __init__(self):
        self._funcs: dict[int, object] = {DUMP_DH_COMPRESSED_ZLIB: self._zlib}

    @staticmethod
    def _zlib(data, size):
        return zlib.decompress(data)

    def get(self, flag: int):
        func = self._funcs.get(flag)
        if func is None:
            if flag == DUMP_DH_COMPRESSED_LZO:
                import lzallright
                lzo = lzallright.LZOCompressor()

                def func(data, size):
                    return lzo.decompress(data, output_size_hint=size)
            elif flag == DUMP_DH_COMPRESSED_SNAPPY:
                import snappy
                func = lambda data, size: snappy.uncompress(data)  # noqa: E731
            elif flag == DUMP_DH_COMPRESSED_ZSTD:
                import zstandard
                zstd = zstandard.ZstdDecompressor()

                def func(data, size):
                    return zstd.decompress(data, max_output_size=size)
            else:
                return None
            self._funcs[flag] = func
        return func


def _long_size(machine: str) -> int:
    """sizeof(long) of the kernel (and so of the makedumpfile) that wrote the
    header: its layout depends on it.  8 when the machine is not named (QEMU's
    kdump says "Unknown" and writes 64-bit headers for 64-bit guests)."""
    from kql.arch import get_arch
    try:
        return get_arch(machine).pointer_size
    except DumpError:
        return 8


def _cstr(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("latin-1")


class KdumpFile:
    """One kdump-compressed file (or one part of a split dump) over a byte source.

    ``source`` offers ``read(offset, size)`` and ``size`` (a MappedFile or a
    FlattenedFile).  All structure checks happen here, at open, so a damaged
    file fails with a message naming what is missing and where.
    """

    def __init__(self, path: str, source, *, zero_excluded: bool = False, stats=None):
        self.path = path
        self.source = source
        self.zero_excluded = zero_excluded
        self.stats = stats
        self.warnings: list[str] = []
        fsize = source.size

        head = source.read(0, HEADER_SIZE)
        if len(head) < HEADER_SIZE:
            raise DumpError(f"{path}: truncated kdump: the header needs {HEADER_SIZE} bytes, "
                            f"file has {len(head)}")
        signature, version = _HEADER.unpack_from(head, 0)
        self.signature = signature.decode("latin-1").strip()
        if not 1 <= version <= 6 and signature == b"KDUMP   ":
            raise DumpError(f"{path}: unsupported kdump header version {version} "
                            f"(kql reads 1 to 6)")
        self.header_version = version
        uts = [_cstr(head[_UTS_OFFSET + i * _UTS_FIELD:_UTS_OFFSET + (i + 1) * _UTS_FIELD])
               for i in range(6)]
        self.utsname = dict(zip(("sysname", "nodename", "release", "version", "machine",
                                 "domainname"), uts))
        wide = _long_size(self.utsname["machine"]) == 8
        timestamp, timestamp_at, tail_at, sub_header = (
            (_TIMESTAMP, 408, 424, _SUB_HEADER) if wide
            else (_TIMESTAMP32, 404, 412, _SUB_HEADER32))
        sec, usec = timestamp.unpack_from(head, timestamp_at)
        self.timestamp = sec + usec / 1e6 if (sec or usec) else None
        (self.status, block_size, sub_hdr_size, bitmap_blocks, max_mapnr, _total_ram,
         _device, _written, _current_cpu, self.nr_cpus) = _HEADER_TAIL.unpack_from(head, tail_at)
        if block_size < 1024 or block_size > (1 << 20) or block_size & (block_size - 1):
            raise DumpError(f"{path}: corrupt kdump header: block_size {block_size} "
                            f"is not a page size")
        if sub_hdr_size < 0 or bitmap_blocks == 0:
            raise DumpError(f"{path}: corrupt kdump header: sub_hdr_size {sub_hdr_size}, "
                            f"bitmap_blocks {bitmap_blocks}")
        self.block_size = block_size
        self.page_shift = block_size.bit_length() - 1
        if self.status & DUMP_DH_COMPRESSED_INCOMPLETE:
            self.warnings.append("the dump is incomplete (makedumpfile ran out of space): "
                                 "some pages are missing")

        # Sub header (kdump only; legacy DISKDUMP has its own, not read here).
        self.phys_base = None
        self.dump_level = None
        self.split = False
        start_pfn, end_pfn = 0, max_mapnr
        vmcoreinfo_raw = b""
        notes = []
        if signature == b"KDUMP   " and sub_hdr_size > 0:
            sub = source.read(block_size, sub_header.size)
            if len(sub) < sub_header.size:
                raise DumpError(f"{path}: truncated kdump: the sub header at offset {block_size} "
                                f"needs {sub_header.size} bytes, file has {fsize}")
            (phys_base, dump_level, split, s_start, s_end, off_vmci, size_vmci, off_note,
             size_note, _off_erase, _size_erase, s_start64, s_end64, max_mapnr64) = \
                sub_header.unpack_from(sub, 0)
            self.phys_base = phys_base
            self.dump_level = dump_level
            if version >= 2 and split:
                self.split = True
                start_pfn, end_pfn = s_start, s_end
            if version >= 6:
                max_mapnr = max_mapnr64
                if self.split:
                    start_pfn, end_pfn = s_start64, s_end64
            if version >= 3 and size_vmci:
                vmcoreinfo_raw = self._region(off_vmci, size_vmci, "VMCOREINFO")
            if version >= 4 and size_note:
                notes = parse_notes(self._region(off_note, size_note, "ELF notes"),
                                    f"{path}: kdump notes")
        if not self.split:
            end_pfn = max_mapnr
        self.max_mapnr = max_mapnr
        self.start_pfn = start_pfn
        self.end_pfn = end_pfn
        self.notes = notes
        if not vmcoreinfo_raw:
            for note in notes:
                if note.name == "VMCOREINFO":
                    vmcoreinfo_raw = note.desc
        self.vmcoreinfo_raw = vmcoreinfo_raw.rstrip(b"\0")

        # Bitmaps.
        bitmap_off = (1 + sub_hdr_size) * block_size
        bitmap_len = bitmap_blocks * block_size
        stored = getattr(source, "source", source).size  # bytes really in the file
        if source is not getattr(source, "source", source) and bitmap_len > stored:
            # a flattened stream has holes (read as zeros): a bitmap larger than
            # the file is a damaged header, refused before it is materialised
            raise DumpError(f"{path}: corrupt kdump header: bitmap_blocks {bitmap_blocks} "
                            f"({bitmap_len} bytes) is more than the file holds ({stored} bytes)")
        bitmaps = source.read(bitmap_off, bitmap_len)
        if len(bitmaps) < bitmap_len:
            raise DumpError(f"{path}: truncated kdump: the page bitmaps need bytes "
                            f"{bitmap_off}..{bitmap_off + bitmap_len}, file has {fsize}")
        half = bitmap_len // 2
        if half * 8 < end_pfn:
            # The header claims more pfns than the bitmaps describe: read what the
            # bitmaps cover and say so.
            self.warnings.append(f"bitmap covers {half * 8} pfns but the header says "
                                 f"max_mapnr {max_mapnr}")
            end_pfn = self.end_pfn = min(end_pfn, half * 8)
            self.max_mapnr = min(self.max_mapnr, half * 8)
        if not 0 <= start_pfn <= end_pfn:
            raise DumpError(f"{path}: corrupt kdump sub header: this part's pfn range "
                            f"[{start_pfn:#x}, {end_pfn:#x}) is outside the bitmap, which "
                            f"covers {half * 8:#x} pfns")
        self._bm_ram = bitmaps[:half]
        self._bm_dump = bitmaps[half:]
        self._build_ranks()

        # Page descriptors.
        self._desc_off = (1 + sub_hdr_size + bitmap_blocks) * block_size
        desc_end = self._desc_off + self.num_dumped * _PAGE_DESC.size
        if desc_end > fsize:
            raise DumpError(f"{path}: truncated kdump: {self.num_dumped} page descriptors need "
                            f"bytes {self._desc_off}..{desc_end}, file has {fsize}")
        self.compression: set[str] = set()
        self._sample_compression()
        self._check_descriptors(desc_end)

        self._decompress = _Decompressors()
        self.page = lru_cache(maxsize=PAGE_CACHE_SIZE)(self._load_page)
        self._zero_page = bytes(block_size)

    # -- helpers ---------------------------------------------------------------------
    def _region(self, offset: int, size: int, what: str) -> bytes:
        data = self.source.read(offset, size)
        if len(data) < size:
            raise DumpError(f"{self.path}: truncated kdump: {what} needs bytes "
                            f"{offset}..{offset + size}, file has {self.source.size}")
        return data

    def _build_ranks(self) -> None:
        """Prefix popcounts of the dump bitmap: ranks[b] = dumped pfns in [start_pfn, b*1024)."""
        bm = self._bm_dump
        step = RANK_BLOCK_PFNS // 8
        start, end = self.start_pfn, self.end_pfn
        ranks = []
        total = 0
        from_bytes = int.from_bytes
        for off in range(0, len(bm), step):
            ranks.append(total)
            total += from_bytes(bm[off:off + step], "little").bit_count()
        ranks.append(total)
        self._ranks = ranks
        # pfns below start_pfn / at or above end_pfn are not in this file's table.
        self._rank_base = self._raw_rank(start) if start else 0
        self.num_dumped = self._raw_rank(end) - self._rank_base

    def _raw_rank(self, pfn: int) -> int:
        """Set bits of the dump bitmap below ``pfn`` (from pfn 0)."""
        block = pfn // RANK_BLOCK_PFNS
        byte0 = block * (RANK_BLOCK_PFNS // 8)
        byte = pfn >> 3
        count = self._ranks[block]
        bm = self._bm_dump
        if byte > byte0:
            count += int.from_bytes(bm[byte0:byte], "little").bit_count()
        bits = pfn & 7
        if bits and byte < len(bm):
            count += (bm[byte] & ((1 << bits) - 1)).bit_count()
        return count

    def _desc(self, pfn: int) -> tuple[int, int, int, int]:
        index = self._raw_rank(pfn) - self._rank_base
        at = self._desc_off + index * _PAGE_DESC.size
        return _PAGE_DESC.unpack(self.source.read(at, _PAGE_DESC.size))

    def _sample_compression(self) -> None:
        """Record which compressions the dump uses (from up to 64 spread page_descs)."""
        n = self.num_dumped
        if not n:
            return
        step = max(1, n // 64)
        for index in range(0, n, step):
            at = self._desc_off + index * _PAGE_DESC.size
            _off, _size, flags, _pf = _PAGE_DESC.unpack(self.source.read(at, _PAGE_DESC.size))
            self._note_compression(flags)

    def _check_descriptors(self, desc_end: int) -> None:
        """Warn when the dump bitmap and the descriptor table disagree.

        makedumpfile and QEMU write the page data right after the table (the
        shared zero page first), so the smallest data offset is the table's
        end; one bit too many or too few in the dump bitmap moves that end by
        a descriptor and every page after the bit would be read from its
        neighbour's data.  A pfn in the dump but not in RAM is damage too."""
        low = None
        chunk = 1 << 20  # descriptors per read
        step = _PAGE_DESC.size // 8
        for first in range(0, self.num_dumped, chunk):
            n = min(chunk, self.num_dumped - first)
            raw = self.source.read(self._desc_off + first * _PAGE_DESC.size, n * _PAGE_DESC.size)
            # each descriptor starts with its data offset (int64); 0: never
            # written (an incomplete dump)
            offsets = [o for o in memoryview(raw[:n * _PAGE_DESC.size]).cast("q")[::step] if o > 0]
            if offsets:
                m = min(offsets)
                low = m if low is None else min(low, m)
        if low is not None and low != desc_end:
            self.warnings.append(
                f"the page bitmap does not match the page descriptors ({self.num_dumped} "
                f"descriptors end at file offset {desc_end}, page data starts at {low}): "
                f"the bitmap is damaged and pages may be read from the wrong place")
        extra = (int.from_bytes(self._bm_dump, "little")
                 & ~int.from_bytes(self._bm_ram, "little")).bit_count()
        if extra:
            self.warnings.append(f"{extra} pfn{'s are' if extra != 1 else ' is'} in the dump "
                                 f"bitmap but not in the RAM bitmap: the bitmaps are damaged")

    def _note_compression(self, flags: int) -> None:
        for bit, name in _COMPRESSION_NAMES.items():
            if flags & bit:
                self.compression.add(name)

    # -- pages -----------------------------------------------------------------------
    def in_dump(self, pfn: int) -> bool:
        return (self.start_pfn <= pfn < self.end_pfn
                and bool(self._bm_dump[pfn >> 3] & (1 << (pfn & 7))))

    def in_ram(self, pfn: int) -> bool:
        return 0 <= pfn < self.max_mapnr and bool(self._bm_ram[pfn >> 3] & (1 << (pfn & 7)))

    def _load_page(self, pfn: int) -> bytes:
        """Page ``pfn`` decompressed (wrapped in an LRU cache as ``self.page``)."""
        if not self.in_dump(pfn):
            return self._missing(pfn)
        offset, size, flags, _pf = self._desc(pfn)
        bs = self.block_size
        data = self.source.read(offset, size)
        if self.stats is not None:
            self.stats.pages_read += 1
        where = f"pfn {pfn:#x} (physical address {pfn << self.page_shift:#x})"
        if offset <= 0 or len(data) < size:
            if offset <= 0 or offset >= self.source.size:
                what = "was never written (incomplete dump)" if offset <= 0 else \
                    f"is at file offset {offset}, past the end of the file ({self.source.size})"
            else:
                what = (f"needs bytes {offset}..{offset + size} but the file ends at "
                        f"{self.source.size} (truncated dump)")
            raise FaultError(pfn << self.page_shift, f"{self.path}: page data of {where} {what}",
                             physical=True)
        if flags == 0:
            page = data
            method = "raw"
        else:
            func = self._decompress.get(flags)
            if func is None:
                raise FaultError(pfn << self.page_shift,
                                 f"{self.path}: {where}: unknown page compression flags {flags:#x}",
                                 physical=True)
            method = _COMPRESSION_NAMES[flags]
            self.compression.add(method)
            try:
                page = func(data, bs)
            except Exception as e:  # each library has its own error types
                raise FaultError(pfn << self.page_shift,
                                 f"{self.path}: cannot decompress {method} data of {where} "
                                 f"({size} bytes at file offset {offset}): "
                                 f"{type(e).__name__}: {e}", physical=True) from None
        if len(page) != bs:
            raise FaultError(pfn << self.page_shift,
                             f"{self.path}: {method} data of {where} is {len(page)} bytes "
                             f"after decompression, expected {bs}", physical=True)
        return bytes(page)

    def _missing(self, pfn: int) -> bytes:
        addr = pfn << self.page_shift
        if self.start_pfn <= pfn < self.end_pfn and self.in_ram(pfn):
            if self.zero_excluded:
                return self._zero_page
            level = "" if self.dump_level is None else f" -d {self.dump_level}"
            raise ExcludedPageError(addr, f"physical address {addr:#x} (pfn {pfn:#x}) is excluded "
                                          f"by the dump level (makedumpfile{level}); "
                                          f"use zero_excluded to read it as zeros",
                                    physical=True)
        if pfn >= self.max_mapnr:
            why = f"beyond the last pfn {self.max_mapnr - 1:#x} of the dump"
        elif not self.start_pfn <= pfn < self.end_pfn:
            why = f"outside this part's pfn range [{self.start_pfn:#x}, {self.end_pfn:#x})"
        else:
            why = "not RAM (a hole in the memory map)"
        raise FaultError(addr, f"physical address {addr:#x} (pfn {pfn:#x}) is not in the dump: "
                               f"{why}", physical=True)

    def dumped_runs(self) -> list[tuple[int, int]]:
        """[start_pfn, end_pfn) runs of pfns whose data is in this file."""
        return _bit_runs(self._bm_dump, self.start_pfn, self.end_pfn)

    def close(self) -> None:
        self.page.cache_clear()
        self.source.close()


def _bit_runs(bitmap: bytes, lo: int, hi: int) -> list[tuple[int, int]]:
    """Runs of set bits (LSB-first bitmap) clipped to [lo, hi)."""
    runs: list[tuple[int, int]] = []
    for m in re.finditer(rb"[^\x00]+", bitmap):
        base = m.start() * 8
        v = int.from_bytes(m.group(), "little")
        shift = 0
        while v:
            low = (v & -v).bit_length() - 1
            v >>= low
            ones = (~v & (v + 1)).bit_length() - 1
            start = base + shift + low
            end = start + ones
            v >>= ones
            shift += low + ones
            start, end = max(start, lo), min(end, hi)
            if start >= end:
                continue
            if runs and runs[-1][1] == start:
                runs[-1] = (runs[-1][0], end)
            else:
                runs.append((start, end))
    return runs


class KdumpPhysical(Layer):
    """Physical memory of one kdump file, or of several split parts by pfn."""

    name = "physical"

    def __init__(self, parts: list[KdumpFile]):
        parts = sorted(parts, key=lambda p: (p.start_pfn, p.end_pfn))
        self.parts = parts
        first = parts[0]
        self._shift = first.page_shift
        self._size = first.block_size
        self._mask = first.block_size - 1
        if len(parts) == 1:
            self._page = first.page
        else:
            self._starts = [p.start_pfn for p in parts]
            self._page = self._split_page

    def _split_page(self, pfn: int) -> bytes:
        i = bisect_right(self._starts, pfn) - 1
        if i >= 0 and pfn < self.parts[i].end_pfn:
            return self.parts[i].page(pfn)
        addr = pfn << self._shift
        raise FaultError(addr, f"physical address {addr:#x} (pfn {pfn:#x}) is not in any part "
                               f"of the split dump", physical=True)

    def read(self, paddr: int, size: int) -> bytes:
        off = paddr & self._mask
        if off + size <= self._size and paddr >= 0 and size >= 0:
            return self._page(paddr >> self._shift)[off:off + size]
        if size == 0:
            return b""
        if size < 0 or paddr < 0:
            raise FaultError(paddr, f"invalid physical read of {size} bytes at {paddr:#x}",
                             physical=True)
        out = []
        while size > 0:
            off = paddr & self._mask
            n = min(size, self._size - off)
            out.append(self._page(paddr >> self._shift)[off:off + n])
            paddr += n
            size -= n
        return b"".join(out)

    def is_mapped(self, paddr: int) -> bool:
        if paddr < 0:
            return False
        pfn = paddr >> self._shift
        for part in self.parts:
            if part.in_dump(pfn):
                return True
            if part.zero_excluded and part.start_pfn <= pfn < part.end_pfn and part.in_ram(pfn):
                return True
        return False

    def is_excluded(self, paddr: int) -> bool:
        """True if the page is RAM that the dump level filtered out."""
        pfn = paddr >> self._shift
        return any(p.start_pfn <= pfn < p.end_pfn and p.in_ram(pfn) and not p.in_dump(pfn)
                   for p in self.parts)

    def ranges(self) -> list[tuple[int, int]]:
        """[start, end) physical address ranges whose pages are in the dump."""
        out: list[tuple[int, int]] = []
        for part in self.parts:
            for a, b in part.dumped_runs():
                a, b = a << self._shift, b << self._shift
                if out and out[-1][1] == a:
                    out[-1] = (out[-1][0], b)
                else:
                    out.append((a, b))
        return out

    @property
    def max_pfn(self) -> int:
        return max(p.max_mapnr for p in self.parts)


def open_kdump(paths: list[str], sources: list, *, fmt: str, zero_excluded: bool = False) -> Dump:
    """Build a Dump from one kdump file or the parts of a split dump."""
    from kql.dump.base import DumpStats

    stats = DumpStats()
    parts = [KdumpFile(p, s, zero_excluded=zero_excluded, stats=stats)
             for p, s in zip(paths, sources)]
    first = parts[0]
    if len(parts) > 1 or first.split:
        for part in parts:
            if not part.split:
                raise DumpError(f"{part.path}: several files were given but this one is not part "
                                f"of a split kdump (its header has split=0)")
        parts.sort(key=lambda p: (p.start_pfn, p.end_pfn))
        for a, b in zip(parts, parts[1:]):
            if b.start_pfn < a.end_pfn:
                raise DumpError(f"{b.path}: split dump parts overlap: pfns "
                                f"[{a.start_pfn:#x}, {a.end_pfn:#x}) in {a.path} and "
                                f"[{b.start_pfn:#x}, {b.end_pfn:#x}) in {b.path}")
            if b.start_pfn > a.end_pfn:
                raise DumpError(f"{b.path}: split dump is missing a part: no file covers pfns "
                                f"[{a.end_pfn:#x}, {b.start_pfn:#x})")
        if parts[0].start_pfn != 0 or parts[-1].end_pfn < parts[-1].max_mapnr:
            lo, hi = parts[0].start_pfn, parts[-1].end_pfn
            raise DumpError(f"{parts[0].path}: split dump is missing a part: the files cover pfns "
                            f"[{lo:#x}, {hi:#x}) of [0, {parts[-1].max_mapnr:#x})")
        first = parts[0]
    from kql.arch import detect_machine
    from kql.dump.base import parse_vmcoreinfo

    stated = first.utsname.get("machine") or ""
    machine = detect_machine(stated, first.notes, parse_vmcoreinfo(first.vmcoreinfo_raw))
    if machine is None:
        raise DumpError(f"{first.path}: cannot tell the dump's architecture (utsname.machine is "
                        f"{stated!r} and no x86_64 notes or VMCOREINFO keys)")
    warnings = []
    compression: set[str] = first.compression if len(parts) == 1 else set()
    for part in parts:
        warnings.extend(f"{part.path}: {w}" for w in part.warnings)
        compression |= part.compression
        truncated = getattr(part.source, "truncated", None)
        if truncated:
            warnings.append(f"{part.path}: flattened stream is truncated: {truncated}")
    dump = Dump(path=paths[0] if len(paths) == 1 else [p.path for p in parts],
                format=fmt, machine=machine, phys=KdumpPhysical(parts), notes=first.notes,
                vmcoreinfo_raw=first.vmcoreinfo_raw, compression=compression,
                timestamp=first.timestamp, dump_level=first.dump_level,
                release=first.utsname.get("release") or None, stats=stats, warnings=warnings)
    dump.header_version = first.header_version
    dump.phys_base = first.phys_base
    dump.nr_cpus = first.nr_cpus
    dump.utsname = first.utsname
    for part in parts:
        dump._closers.append(part.close)
    return dump


def _open_one(source, *, zero_excluded: bool = False) -> Dump:
    return open_kdump([source.path], [source], fmt="kdump", zero_excluded=zero_excluded)


PROBE = Probe("kdump", "kdump-compressed", lambda head, path, size: is_kdump(head), _open_one,
              part=lambda source: source)
