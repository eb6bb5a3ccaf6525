"""Dump formats: ELF cores, kdump-compressed, flattened, split.

Synthetic dumps are built here byte by byte (the layouts in REFERENCE.md
sections 1-2) from real page data (pages of libpython / the Python binary), so every
expected value is known.  The flattened builder is cross-checked against
makedumpfile -R.  Real dumps from tests/vmcores are checked in
test_real_dumps_* when present.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from fixtures import DUMPS, FORMAT, fixture
from kql.dump import Note, open_dump, parse_notes, parse_vmcoreinfo
from kql.errors import DumpError, ExcludedPageError, FaultError

BS = 4096

# ---------------------------------------------------------------------------------
# Real page data: 8 distinct non-zero pages of the running Python interpreter.


def _real_pages(n: int = 8) -> list[bytes]:
    import sysconfig
    import zstandard
    libpython = os.path.join(sysconfig.get_config_var("LIBDIR") or "",
                             sysconfig.get_config_var("LDLIBRARY") or "")
    for candidate in (libpython, sys.executable, zstandard.backend_c.__file__):
        if not os.path.isfile(candidate):
            continue
        data = Path(candidate).resolve().read_bytes()
        pages: list[bytes] = []
        # Pages from the middle of the binary (code and data, not ELF headers).
        for off in range(len(data) // 3 & ~(BS - 1), len(data) - BS, 5 * BS):
            page = data[off:off + BS]
            if page.count(0) < BS // 2 and page not in pages:
                pages.append(page)
            if len(pages) == n:
                return pages
    raise RuntimeError("no binary with enough real page data found")


PAGES = _real_pages()

VMCOREINFO = (b"OSRELEASE=6.1.0-test\nPAGESIZE=4096\nSYMBOL(init_top_pgt)=ffffffff9a80a000\n"
              b"NUMBER(phys_base)=-2147483648\nKERNELOFFSET=19000000\n")


def _note(name: bytes, ntype: int, desc: bytes) -> bytes:
    name_z = name + b"\0"
    pad = lambda b: b + b"\0" * (-len(b) % 4)  # noqa: E731
    return struct.pack("<III", len(name_z), len(desc), ntype) + pad(name_z) + pad(desc)


def _prstatus(pid: int, regs: list[int]) -> bytes:
    desc = bytearray(336)
    struct.pack_into("<i", desc, 32, pid)
    struct.pack_into("<27Q", desc, 112, *regs)
    return bytes(desc)


PRSTATUS_REGS = [0x1000 + i for i in range(27)]
NOTES = (_note(b"CORE", 1, _prstatus(0, PRSTATUS_REGS))
         + _note(b"VMCOREINFO", 0, VMCOREINFO))


# ---------------------------------------------------------------------------------
# kdump builder


def _compress(method: str, page: bytes) -> tuple[bytes, int]:
    if method == "raw":
        return page, 0
    if method == "zlib":
        return zlib.compress(page), 0x1
    if method == "lzo":
        import lzallright
        return lzallright.LZOCompressor().compress(page), 0x2
    if method == "snappy":
        import snappy
        return snappy.compress(page), 0x4
    if method == "zstd":
        import zstandard
        return zstandard.ZstdCompressor().compress(page), 0x20
    raise ValueError(method)


def build_kdump(pages: dict[int, bytes], *, max_mapnr: int, ram=None, comp="zlib",
                version: int = 6, dump_level: int = 31, vmcoreinfo: bytes = VMCOREINFO,
                notes: bytes = NOTES, split: tuple[int, int] | None = None,
                machine: bytes = b"x86_64", release: bytes = b"6.1.0-test",
                timestamp=(1700000000, 250000), status: int = 0,
                bad_pages: dict[int, bytes] | None = None) -> bytes:
    """A kdump-compressed file.  ``comp`` is a method or {pfn: method}.

    ``bad_pages`` replaces the stored (compressed) data of a pfn.
    Returns the file bytes; the layout follows makedumpfile's diskdump_mod.h
    (with 4-byte longs, 8-byte members 4-aligned, for a 32-bit ``machine``).
    """
    long32 = machine == b"i686"
    ram = set(pages) if ram is None else set(ram) | set(pages)
    start, end = split if split else (0, max_mapnr)
    # header
    head = bytearray(BS)
    head[0:8] = b"KDUMP   "
    struct.pack_into("<i", head, 8, version)
    uts = [b"Linux", b"testhost", release, b"#1 SMP", machine, b"(none)"]
    for i, field in enumerate(uts):
        head[12 + 65 * i:12 + 65 * i + len(field)] = field
    struct.pack_into("<ii" if long32 else "<qq", head, 404 if long32 else 408, *timestamp)
    tail = 412 if long32 else 424
    sub_len = 80 if long32 else 104
    sub_body_len = sub_len + len(vmcoreinfo) + len(notes)
    sub_hdr_size = -(-sub_body_len // BS)
    half = -(-max_mapnr // 8)
    half += -half % BS
    bitmap_blocks = 2 * half // BS
    struct.pack_into("<IiiIII", head, tail, status, BS, sub_hdr_size, bitmap_blocks,
                     min(max_mapnr, 0xFFFFFFFF), 0)
    struct.pack_into("<i", head, tail + 36, 2)  # nr_cpus
    # sub header + vmcoreinfo + notes
    sub = bytearray(sub_hdr_size * BS)
    off_vmci = BS + sub_len
    off_note = off_vmci + len(vmcoreinfo)
    struct.pack_into("<IiiIIqIqIqIQQQ" if long32 else "<QiiQQQQQQQQQQQ", sub, 0, 0, dump_level,
                     1 if split else 0, start, end, off_vmci, len(vmcoreinfo), off_note,
                     len(notes), 0, 0, start, end, max_mapnr)
    sub[sub_len:sub_len + len(vmcoreinfo)] = vmcoreinfo
    sub[sub_len + len(vmcoreinfo):sub_body_len] = notes
    # bitmaps
    bm1 = bytearray(half)
    bm2 = bytearray(half)
    for pfn in ram:
        bm1[pfn >> 3] |= 1 << (pfn & 7)
    for pfn in pages:
        bm2[pfn >> 3] |= 1 << (pfn & 7)
    # descriptors and data
    in_range = [pfn for pfn in sorted(pages) if start <= pfn < end]
    desc_off = (1 + sub_hdr_size + bitmap_blocks) * BS
    data_off = desc_off + 24 * len(in_range)
    descs = bytearray()
    data = bytearray()
    for pfn in in_range:
        method = comp.get(pfn, "zlib") if isinstance(comp, dict) else comp
        stored, flags = _compress(method, pages[pfn])
        if bad_pages and pfn in bad_pages:
            stored = bad_pages[pfn]
        descs += struct.pack("<qIIQ", data_off + len(data), len(stored), flags, 0)
        data += stored
    return bytes(head + sub + bm1 + bm2 + descs + data)


def flatten(kdump: bytes, *, chunk: int = 3000, junk: bool = True) -> bytes:
    """makedumpfile -F layout: records in a scrambled order, some overwritten later."""
    out = bytearray(BS)
    out[0:12] = b"makedumpfile"
    struct.pack_into(">qq", out, 16, 1, 1)
    pieces = [(off, min(chunk, len(kdump) - off)) for off in range(0, len(kdump), chunk)]
    order = pieces[1::2] + pieces[0::2]          # odd pieces first, then even ones
    if junk:
        # Garbage over the start of the header and over piece 3: later records fix it.
        out += struct.pack(">qq", 0, 600) + b"\xaa" * 600
        o, n = pieces[3]
        out += struct.pack(">qq", o + 10, n) + b"\x55" * n
        order.remove(pieces[3])
        order.append(pieces[3])
    for off, size in order:
        out += struct.pack(">qq", off, size) + kdump[off:off + size]
    out += struct.pack(">qq", -1, -1)
    return bytes(out)


# ---------------------------------------------------------------------------------
# ELF builder


def build_elf(segments, notes: bytes = NOTES, *, e_type: int = 4, machine: int = 62,
              xnum: bool = False) -> bytes:
    """segments: list of (paddr, vaddr, data, memsz).  Notes in one PT_NOTE first."""
    phnum = len(segments) + 1
    phoff = 64
    shoff = 0
    data_off = phoff + 56 * phnum
    if xnum:
        shoff = data_off
        data_off += 64
    phdrs = bytearray()
    body = bytearray()
    cursor = data_off
    phdrs += struct.pack("<IIQQQQQQ", 4, 0, cursor, 0, 0, len(notes), len(notes), 1)
    body += notes
    cursor += len(notes)
    for paddr, vaddr, data, memsz in segments:
        phdrs += struct.pack("<IIQQQQQQ", 1, 7, cursor, vaddr, paddr, len(data), memsz, 0)
        body += data
        cursor += len(data)
    ident = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8)
    head = ident + struct.pack("<HHIQQQIHHHHHH", e_type, machine, 1, 0, phoff, shoff, 0, 64,
                               56, 0xFFFF if xnum else phnum, 64, 1 if xnum else 0, 0)
    section0 = b""
    if xnum:
        section0 = struct.pack("<IIQQQQIIQQ", 0, 0, 0, 0, 0, 0, 0, phnum, 0, 0)
    return head + bytes(phdrs) + section0 + bytes(body)


def _write(tmp_path: Path, name: str, data: bytes) -> str:
    p = tmp_path / name
    p.write_bytes(data)
    return str(p)


# ---------------------------------------------------------------------------------
# Notes and VMCOREINFO


def test_parse_notes_and_vmcoreinfo():
    notes = parse_notes(NOTES + bytes(24))
    assert [(n.name, n.type, len(n.desc)) for n in notes] == [
        ("CORE", 1, 336), ("VMCOREINFO", 0, len(VMCOREINFO))]
    assert notes[1] == Note("VMCOREINFO", 0, VMCOREINFO)
    info = parse_vmcoreinfo(VMCOREINFO)
    assert info == {"OSRELEASE": "6.1.0-test", "PAGESIZE": "4096",
                    "SYMBOL(init_top_pgt)": "ffffffff9a80a000",
                    "NUMBER(phys_base)": "-2147483648", "KERNELOFFSET": "19000000"}


def test_parse_notes_overrun_is_one_line_error():
    bad = struct.pack("<III", 5, 400, 1) + b"CORE\0\0\0\0" + bytes(100)
    with pytest.raises(DumpError) as e:
        parse_notes(bad, "x: PT_NOTE")
    assert str(e.value) == ("x: PT_NOTE: note at offset 0 claims name 5 + desc 400 bytes "
                            "but only 108 remain (corrupt or truncated notes)")


# ---------------------------------------------------------------------------------
# kdump


@pytest.mark.parametrize("method", ["raw", "zlib", "lzo", "snappy", "zstd"])
def test_kdump_each_compression(tmp_path, method):
    pages = {1: PAGES[0], 2: PAGES[1], 7: PAGES[2], 4100: PAGES[3], 4101: bytes(BS)}
    path = _write(tmp_path, "dump", build_kdump(pages, max_mapnr=5000, comp=method))
    with open_dump(path) as dump:
        assert dump.format == "kdump"
        assert dump.compression == (set() if method == "raw" else {method})
        for pfn, page in pages.items():
            assert dump.phys.read(pfn * BS, BS) == page
        assert dump.phys.read(7 * BS + 100, 16) == PAGES[2][100:116]
        assert dump.stats.pages_read == 5
        dump.phys.read(7 * BS, 8)                     # cached: no new page read
        assert dump.stats.pages_read == 5


def test_kdump_header_of_a_32bit_kernel(tmp_path):
    """i386's makedumpfile writes 4-byte longs (timeval, the sub header's
    phys_base, pfns and sizes): the fields come from their own offsets."""
    info = b"OSRELEASE=6.1.0-test\nPAGESIZE=4096\nCONFIG_X86_PAE=y\n"
    path = _write(tmp_path, "dump", build_kdump({3: PAGES[0], 70: PAGES[1]}, max_mapnr=100,
                                                dump_level=17, machine=b"i686",
                                                vmcoreinfo=info, notes=b""))
    dump = open_dump(path)
    assert dump.machine == "i386" and dump.release == "6.1.0-test"
    assert dump.timestamp == 1700000000.25
    assert dump.dump_level == 17 and dump.header_version == 6
    assert dump.vmcoreinfo["CONFIG_X86_PAE"] == "y"
    assert dump.phys.read(70 * BS, BS) == PAGES[1]
    assert dump.warnings == []
    dump.close()


def test_kdump_header_fields(tmp_path):
    path = _write(tmp_path, "dump", build_kdump({3: PAGES[0]}, max_mapnr=100, dump_level=17))
    dump = open_dump(path)
    assert dump.machine == "x86_64"
    assert dump.release == "6.1.0-test"
    assert dump.timestamp == 1700000000.25
    assert dump.dump_level == 17
    assert dump.header_version == 6
    assert dump.vmcoreinfo_raw == VMCOREINFO.rstrip(b"\n") + b"\n"
    assert dump.vmcoreinfo["KERNELOFFSET"] == "19000000"
    assert [n.name for n in dump.notes] == ["CORE", "VMCOREINFO"]
    assert dump.prstatus() == [(0, dict(zip(
        ["r15", "r14", "r13", "r12", "rbp", "rbx", "r11", "r10", "r9", "r8", "rax", "rcx",
         "rdx", "rsi", "rdi", "orig_rax", "rip", "cs", "eflags", "rsp", "ss", "fs_base",
         "gs_base", "ds", "es", "fs", "gs"], PRSTATUS_REGS)))]
    assert dump.prstatus()[0][1]["rip"] == 0x1010
    assert dump.direct_map_hint is None
    assert dump.warnings == []
    dump.close()


def test_kdump_ranges(tmp_path):
    pages = {pfn: PAGES[0] for pfn in (0, 1, 2, 7, 8, 15, 16, 17, 1023, 1024, 1500)}
    path = _write(tmp_path, "dump", build_kdump(pages, max_mapnr=2000, ram=range(2000)))
    assert open_dump(path).phys.ranges() == [(0, 3 * BS), (7 * BS, 9 * BS), (15 * BS, 18 * BS),
                                             (1023 * BS, 1025 * BS), (1500 * BS, 1501 * BS)]
    a = _write(tmp_path, "a", build_kdump(pages, max_mapnr=2000, split=(0, 16)))
    b = _write(tmp_path, "b", build_kdump(pages, max_mapnr=2000, split=(16, 2000)))
    assert open_dump([a, b]).phys.ranges() == open_dump(path).phys.ranges()


def test_kdump_cross_page_read(tmp_path):
    pages = {10: PAGES[0], 11: PAGES[1], 12: PAGES[2]}
    path = _write(tmp_path, "dump", build_kdump(pages, max_mapnr=64, comp="zstd"))
    dump = open_dump(path)
    assert dump.phys.read(10 * BS + 4000, 96 + 4096 + 106) == (PAGES[0][4000:] + PAGES[1]
                                                               + PAGES[2][:106])
    assert dump.phys.read_u64(11 * BS + 8) == struct.unpack_from("<Q", PAGES[1], 8)[0]
    assert dump.phys.read(11 * BS, 0) == b""


def test_kdump_rank_across_blocks(tmp_path):
    # Many dumped pfns spread over several 1024-pfn rank blocks: the page_desc
    # index must count every set bit below the pfn.
    pages = {pfn: PAGES[pfn % 8][:BS - 8] + struct.pack("<Q", pfn)
             for pfn in list(range(0, 3000, 7)) + list(range(5000, 5100))}
    path = _write(tmp_path, "dump", build_kdump(pages, max_mapnr=6000, comp="snappy"))
    dump = open_dump(path)
    for pfn in (0, 7, 1015, 1022, 1029, 2044, 2051, 2996, 5000, 5099):
        assert dump.phys.read_u64(pfn * BS + BS - 8) == pfn


def test_kdump_excluded_page(tmp_path):
    path = _write(tmp_path, "dump", build_kdump({1: PAGES[0]}, max_mapnr=64, ram=range(0, 32),
                                                dump_level=31))
    dump = open_dump(path)
    with pytest.raises(ExcludedPageError) as e:
        dump.phys.read(5 * BS + 16, 8)
    assert e.value.address == 5 * BS
    assert str(e.value) == ("physical address 0x5000 (pfn 0x5) is excluded by the dump level "
                            "(makedumpfile -d 31); use zero_excluded to read it as zeros")
    assert not dump.phys.is_mapped(5 * BS)
    assert dump.phys.is_mapped(1 * BS + 5)
    assert dump.phys.is_excluded(5 * BS)
    # a hole (not RAM) is a plain FaultError, also with zero_excluded
    with pytest.raises(FaultError) as e:
        dump.phys.read(40 * BS, 8)
    assert type(e.value) is FaultError
    assert str(e.value) == ("physical address 0x28000 (pfn 0x28) is not in the dump: "
                            "not RAM (a hole in the memory map)")
    with pytest.raises(FaultError) as e:
        dump.phys.read(64 * BS, 8)
    assert str(e.value) == ("physical address 0x40000 (pfn 0x40) is not in the dump: "
                            "beyond the last pfn 0x3f of the dump")

    zdump = open_dump(path, zero_excluded=True)
    assert zdump.phys.read(5 * BS + 16, 8) == bytes(8)
    assert zdump.phys.is_mapped(5 * BS)
    assert zdump.phys.read(BS - 4, 8) == bytes(4) + PAGES[0][:4]
    with pytest.raises(FaultError):
        zdump.phys.read(40 * BS, 8)


def test_kdump_corrupt_page_names_pfn(tmp_path):
    pages = {1: PAGES[0], 2: PAGES[1], 3: PAGES[2]}
    comp = {1: "zlib", 2: "lzo", 3: "zstd"}
    path = _write(tmp_path, "dump", build_kdump(
        pages, max_mapnr=64, comp=comp,
        bad_pages={2: b"\x00\x01garbage-not-lzo" * 4, 3: zlib.compress(PAGES[2][:100])}))
    dump = open_dump(path)
    assert dump.phys.read(BS, BS) == PAGES[0]
    with pytest.raises(DumpError) as e:
        dump.phys.read(2 * BS, 8)
    assert isinstance(e.value, FaultError) and e.value.address == 2 * BS
    msg = str(e.value)
    assert msg.startswith(f"{path}: cannot decompress lzo data of pfn 0x2 (physical address "
                          f"0x2000) (68 bytes at file offset ")
    assert "\n" not in msg
    with pytest.raises(FaultError) as e:
        dump.phys.read(3 * BS, 8)
    assert str(e.value).startswith(f"{path}: cannot decompress zstd data of pfn 0x3 ")


def test_kdump_unknown_compression_flag(tmp_path):
    data = bytearray(build_kdump({4: PAGES[0]}, max_mapnr=64, comp="zlib"))
    desc = 4 * BS                            # header, sub header, 2 bitmap blocks
    struct.pack_into("<I", data, desc + 12, 0x40)
    path = _write(tmp_path, "dump", bytes(data))
    with pytest.raises(FaultError) as e:
        open_dump(path).phys.read(4 * BS, 1)
    assert str(e.value) == (f"{path}: pfn 0x4 (physical address 0x4000): unknown page "
                            f"compression flags 0x40")


def test_kdump_short_page_after_decompression(tmp_path):
    path = _write(tmp_path, "dump", build_kdump(
        {4: PAGES[0]}, max_mapnr=64, comp="zlib", bad_pages={4: zlib.compress(b"x" * 100)}))
    with pytest.raises(FaultError) as e:
        open_dump(path).phys.read(4 * BS, 1)
    assert str(e.value) == (f"{path}: zlib data of pfn 0x4 (physical address 0x4000) is 100 "
                            f"bytes after decompression, expected 4096")


def test_kdump_truncated(tmp_path):
    full = build_kdump({1: PAGES[0], 2: PAGES[1]}, max_mapnr=64, comp="zlib")
    # header
    p = _write(tmp_path, "t1", full[:200])
    with pytest.raises(DumpError) as e:
        open_dump(p)
    assert str(e.value) == f"{p}: truncated kdump: the header needs 464 bytes, file has 200"
    # sub header
    p = _write(tmp_path, "t2", full[:BS + 50])
    with pytest.raises(DumpError) as e:
        open_dump(p)
    assert str(e.value) == (f"{p}: truncated kdump: the sub header at offset 4096 needs 104 "
                            f"bytes, file has 4146")
    # bitmaps: header 1 block + sub header 1 block, bitmaps 2 blocks at 8192
    p = _write(tmp_path, "t3", full[:3 * BS])
    with pytest.raises(DumpError) as e:
        open_dump(p)
    assert str(e.value) == (f"{p}: truncated kdump: the page bitmaps need bytes 8192..16384, "
                            f"file has 12288")
    # page descriptors
    p = _write(tmp_path, "t4", full[:4 * BS + 30])
    with pytest.raises(DumpError) as e:
        open_dump(p)
    assert str(e.value) == (f"{p}: truncated kdump: 2 page descriptors need bytes "
                            f"16384..16432, file has 16414")
    # page data: opens, the first page reads, the cut one names its pfn
    first_len = len(zlib.compress(PAGES[0]))
    p = _write(tmp_path, "t5", full[:4 * BS + 48 + first_len + 10])
    dump = open_dump(p)
    assert dump.phys.read(BS, BS) == PAGES[0]
    with pytest.raises(FaultError) as e:
        dump.phys.read(2 * BS, 8)
    second_off = 4 * BS + 48 + first_len
    assert str(e.value) == (
        f"{p}: page data of pfn 0x2 (physical address 0x2000) needs bytes {second_off}.."
        f"{second_off + len(zlib.compress(PAGES[1]))} but the file ends at {second_off + 10} "
        f"(truncated dump)")


def test_kdump_incomplete_status_is_a_warning(tmp_path):
    path = _write(tmp_path, "dump", build_kdump({1: PAGES[0]}, max_mapnr=64, status=0x8))
    dump = open_dump(path)
    assert dump.warnings == [f"{path}: the dump is incomplete (makedumpfile ran out of space): "
                             f"some pages are missing"]


def test_kdump_old_header_versions(tmp_path):
    # v3: vmcoreinfo but no notes, 32-bit max_mapnr; v2: neither.
    path = _write(tmp_path, "v3", build_kdump({1: PAGES[0]}, max_mapnr=64, version=3))
    dump = open_dump(path)
    assert dump.vmcoreinfo["OSRELEASE"] == "6.1.0-test" and dump.notes == []
    assert dump.phys.read(BS, BS) == PAGES[0]
    path = _write(tmp_path, "v2", build_kdump({1: PAGES[0]}, max_mapnr=64, version=2))
    dump = open_dump(path)
    assert dump.vmcoreinfo == {} and dump.release == "6.1.0-test"
    with pytest.raises(DumpError) as e:
        dump.require_vmcoreinfo()
    assert str(e.value) == f"{path}: kdump dump has no VMCOREINFO"


def test_legacy_diskdump_signature(tmp_path):
    # "DISKDUMP": same header, bitmaps and page descriptors; its sub header is
    # not the kdump one, so no dump level, VMCOREINFO or notes come from it.
    data = bytearray(build_kdump({1: PAGES[0], 5: PAGES[1]}, max_mapnr=64))
    data[0:8] = b"DISKDUMP"
    dump = open_dump(_write(tmp_path, "dd", bytes(data)))
    assert (dump.format, dump.machine, dump.dump_level, dump.notes) == ("kdump", "x86_64", None, [])
    assert dump.vmcoreinfo == {} and dump.release == "6.1.0-test"
    assert dump.phys.read(5 * BS, BS) == PAGES[1]


@pytest.mark.parametrize("version", [1, 2, 3, 4, 5, 6])
def test_kdump_header_versions(tmp_path, version):
    # vmcoreinfo from v3, notes from v4, 64-bit pfn fields from v6.
    path = _write(tmp_path, "d", build_kdump({1: PAGES[0], 63: PAGES[1]}, max_mapnr=64,
                                             version=version))
    dump = open_dump(path)
    assert dump.header_version == version
    assert bool(dump.vmcoreinfo) == (version >= 3)
    assert [n.name for n in dump.notes] == (["CORE", "VMCOREINFO"] if version >= 4 else [])
    assert dump.phys.read(63 * BS, BS) == PAGES[1]
    assert dump.dump_level == 31


def test_kdump_bad_version_and_block_size(tmp_path):
    data = bytearray(build_kdump({1: PAGES[0]}, max_mapnr=64))
    struct.pack_into("<i", data, 8, 9)
    p = _write(tmp_path, "v9", bytes(data))
    with pytest.raises(DumpError) as e:
        open_dump(p)
    assert str(e.value) == f"{p}: unsupported kdump header version 9 (kql reads 1 to 6)"
    struct.pack_into("<i", data, 8, 6)
    struct.pack_into("<i", data, 428, 3000)
    p = _write(tmp_path, "bs", bytes(data))
    with pytest.raises(DumpError) as e:
        open_dump(p)
    assert str(e.value) == f"{p}: corrupt kdump header: block_size 3000 is not a page size"


def test_qemu_style_kdump_without_release(tmp_path):
    # QEMU fills only utsname.machine, with "Unknown": the release comes from
    # VMCOREINFO and the arch from the x86_64-only VMCOREINFO keys / NT_PRSTATUS size.
    path = _write(tmp_path, "q", build_kdump({1: PAGES[0]}, max_mapnr=64, release=b"",
                                             machine=b"Unknown"))
    dump = open_dump(path)
    assert (dump.release, dump.machine, dump.utsname["machine"]) == ("6.1.0-test", "x86_64",
                                                                     "Unknown")
    path = _write(tmp_path, "m", build_kdump({1: PAGES[0]}, max_mapnr=64, machine=b"Unknown",
                                             vmcoreinfo=b"OSRELEASE=6.1.0-test\n", notes=b""))
    with pytest.raises(DumpError) as e:
        open_dump(path)
    assert str(e.value) == (f"{path}: cannot tell the dump's architecture (utsname.machine is "
                            f"'Unknown' and no x86_64 notes or VMCOREINFO keys)")


# ---------------------------------------------------------------------------------
# flattened


def _flat_pages():
    return {pfn: PAGES[pfn % 8] for pfn in (0, 1, 2, 3, 9, 30, 31, 1500)}


def test_flattened_reads_like_kdump(tmp_path):
    pages = _flat_pages()
    kd = build_kdump(pages, max_mapnr=2000, comp="lzo", ram=range(40), dump_level=1)
    path = _write(tmp_path, "flat", flatten(kd))
    before = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    dump = open_dump(path)
    assert dump.format == "kdump-flattened"
    assert dump.compression == {"lzo"}
    for pfn, page in pages.items():
        assert dump.phys.read(pfn * BS, BS) == page
    assert dump.vmcoreinfo["OSRELEASE"] == "6.1.0-test"
    with pytest.raises(ExcludedPageError) as e:
        dump.phys.read(4 * BS, 1)
    assert str(e.value) == ("physical address 0x4000 (pfn 0x4) is excluded by the dump level "
                            "(makedumpfile -d 1); use zero_excluded to read it as zeros")
    dump.close()
    # indexed in place: the file is unchanged and nothing was written beside it
    assert hashlib.sha256(Path(path).read_bytes()).hexdigest() == before
    assert sorted(os.listdir(tmp_path)) == ["flat"]


def test_flattened_later_records_win_and_holes_are_zero(tmp_path):
    from kql.dump.files import MappedFile
    from kql.dump.flattened import FlattenedFile

    kd = build_kdump(_flat_pages(), max_mapnr=2000, comp="zlib")
    path = _write(tmp_path, "flat", flatten(kd))
    flat = FlattenedFile(MappedFile(path))
    assert flat.size == len(kd)
    assert flat.read(0, len(kd)) == kd            # every junk byte was overwritten
    assert flat.read(5990, 40) == kd[5990:6030]   # across pieces
    assert flat.read(len(kd) - 5, 100) == kd[-5:]  # short only at the end
    assert flat.truncated is None
    flat.close()

    # A record stream with a gap: the gap reads as zeros (as makedumpfile -R leaves it).
    out = bytearray(flatten(b"", junk=False)[:BS])
    out += struct.pack(">qq", 0, 4) + b"abcd" + struct.pack(">qq", 10, 3) + b"xyz"
    out += struct.pack(">qq", 2, 1) + b"Q" + struct.pack(">qq", -1, -1)
    flat = FlattenedFile(MappedFile(_write(tmp_path, "gap", bytes(out))))
    assert flat.read(0, 13) == b"abQd" + bytes(6) + b"xyz"
    assert flat.read(1, 2) == b"bQ"


@pytest.mark.skipif(shutil.which("makedumpfile") is None, reason="makedumpfile not installed")
def test_flattened_builder_matches_makedumpfile_R(tmp_path):
    """Our flattened test files are what makedumpfile -R understands."""
    kd = build_kdump(_flat_pages(), max_mapnr=2000, comp="zlib")
    flat = _write(tmp_path, "flat", flatten(kd))
    out = tmp_path / "rebuilt"
    with open(flat, "rb") as stdin:
        subprocess.run(["makedumpfile", "-R", str(out)], stdin=stdin, check=True,
                       capture_output=True)
    assert out.read_bytes() == kd


def test_flattened_truncated(tmp_path):
    kd = build_kdump(_flat_pages(), max_mapnr=2000, comp="zlib")
    full = flatten(kd, junk=False)
    p = _write(tmp_path, "short", full[:1000])
    with pytest.raises(DumpError) as e:
        open_dump(p)
    assert str(e.value) == f"{p}: truncated flattened kdump: header needs 4096 bytes, file has 1000"
    # Cut inside the last records: the header and bitmaps are there, pages at the
    # end are not; the dump opens with a warning.
    cut = len(full) - 16 - 2000
    p = _write(tmp_path, "cut", full[:cut])
    dump = open_dump(p)
    assert len(dump.warnings) == 1
    assert dump.warnings[0].startswith(f"{p}: flattened stream is truncated: record at file offset ")
    assert dump.phys.read(0, BS) == PAGES[0]


# ---------------------------------------------------------------------------------
# split


def test_split_kdump(tmp_path):
    pages = {pfn: PAGES[pfn % 8] for pfn in (1, 2, 100, 101, 1200, 1999)}
    a = _write(tmp_path, "a", build_kdump(pages, max_mapnr=2000, split=(0, 101), comp="zlib"))
    b = _write(tmp_path, "b", build_kdump(pages, max_mapnr=2000, split=(101, 2000), comp="snappy"))
    dump = open_dump([b, a])                           # order does not matter
    assert dump.format == "kdump-split"
    assert dump.path == [a, b]
    assert dump.compression == {"zlib", "snappy"}
    for pfn, page in pages.items():
        assert dump.phys.read(pfn * BS, BS) == page, pfn
    assert dump.phys.read(101 * BS - 8, 16) == PAGES[100 % 8][-8:] + PAGES[101 % 8][:8]
    with pytest.raises(FaultError) as e:
        dump.phys.read(3 * BS, 8)
    assert str(e.value) == ("physical address 0x3000 (pfn 0x3) is not in the dump: "
                            "not RAM (a hole in the memory map)")


def test_split_kdump_errors(tmp_path):
    pages = {1: PAGES[0], 1500: PAGES[1]}
    a = _write(tmp_path, "a", build_kdump(pages, max_mapnr=2000, split=(0, 1000)))
    b = _write(tmp_path, "b", build_kdump(pages, max_mapnr=2000, split=(1200, 2000)))
    whole = _write(tmp_path, "w", build_kdump(pages, max_mapnr=2000))
    with pytest.raises(DumpError) as e:
        open_dump([a, b])
    assert str(e.value) == f"{b}: split dump is missing a part: no file covers pfns [0x3e8, 0x4b0)"
    with pytest.raises(DumpError) as e:
        open_dump([a])
    assert str(e.value) == (f"{a}: split dump is missing a part: the files cover pfns "
                            f"[0x0, 0x3e8) of [0, 0x7d0)")
    with pytest.raises(DumpError) as e:
        open_dump([a, whole])
    assert str(e.value) == (f"{whole}: several files were given but this one is not part of a "
                            f"split kdump (its header has split=0)")
    core = _write(tmp_path, "core", build_elf(_elf_segments()))
    with pytest.raises(DumpError) as e:
        open_dump([a, core])
    assert str(e.value) == (f"{core}: several files were given but this one is in ELF format; "
                            f"only kdump-compressed dumps can be split")


# ---------------------------------------------------------------------------------
# ELF

DIRECT_MAP = 0xFFFF888000000000


def _elf_segments():
    # RAM at [0, 3 pages) and [0x100000, +2 pages, memsz 4 pages: tail excluded),
    # plus a kernel-text segment (vaddr 0xffffffff81000000) that aliases page 1.
    return [
        (0x0, DIRECT_MAP, PAGES[0] + PAGES[1] + PAGES[2], 3 * BS),
        (0x100000, DIRECT_MAP + 0x100000, PAGES[3] + PAGES[4], 4 * BS),
        (0x1000, 0xFFFFFFFF81000000, PAGES[1], BS),
    ]


def test_elf_kdump_style(tmp_path):
    path = _write(tmp_path, "core", build_elf(_elf_segments()))
    dump = open_dump(path)
    assert dump.format == "elf" and dump.machine == "x86_64"
    assert dump.direct_map_hint == DIRECT_MAP
    assert dump.vmcoreinfo["OSRELEASE"] == "6.1.0-test" and dump.release == "6.1.0-test"
    assert dump.timestamp is None and dump.compression == set()
    assert dump.phys.read(0, 3 * BS) == PAGES[0] + PAGES[1] + PAGES[2]
    assert dump.phys.read(0x100000 + BS - 3, 6) == PAGES[3][-3:] + PAGES[4][:3]
    assert dump.phys.read_u32(0x1004) == struct.unpack_from("<I", PAGES[1], 4)[0]
    assert dump.prstatus()[0][0] == 0
    with pytest.raises(ExcludedPageError) as e:
        dump.phys.read(0x102000, 8)
    assert str(e.value) == ("physical address 0x102000 is excluded from the dump (filtered ELF: "
                            "segment data ends at 0x102000, makedumpfile -E with a dump level)")
    with pytest.raises(FaultError) as e:
        dump.phys.read(0x50000, 8)
    assert str(e.value) == "physical address 0x50000 is not in the dump (no ELF segment covers it)"
    with pytest.raises(FaultError):
        dump.phys.read(0x104000, 1)                    # just past memsz
    assert dump.phys.is_mapped(0x101fff) and not dump.phys.is_mapped(0x102000)
    assert open_dump(path, zero_excluded=True).phys.read(0x101ffc, 8) == PAGES[4][-4:] + bytes(4)


def test_elf_qemu_style_xnum_and_cpu_state(tmp_path):
    qemu = bytearray(440)
    struct.pack_into("<II", qemu, 0, 1, 440)
    struct.pack_into("<18Q", qemu, 8, *range(100, 118))        # rax..r15, rip, rflags
    for i in range(10):                                         # segments
        struct.pack_into("<IIIIQ", qemu, 152 + 24 * i, 0x10 + i, 0xFFFF, 0, 0, 0x1000 * i)
    struct.pack_into("<5Q", qemu, 392, 0x80050033, 0, 0xDEAD, 0x10A000, 0x3506F0)
    struct.pack_into("<Q", qemu, 432, 0xFFFF88807DC00000)
    notes = (_note(b"CORE", 1, _prstatus(1, PRSTATUS_REGS))
             + _note(b"CORE", 1, _prstatus(2, PRSTATUS_REGS[::-1]))
             + _note(b"QEMU", 0, bytes(qemu)) + _note(b"QEMU", 0, bytes(qemu)))
    segs = [(0, 0, PAGES[0] + PAGES[1], 2 * BS), (0x200000, 0x200000, PAGES[2], BS)]
    path = _write(tmp_path, "qemu", build_elf(segs, notes, xnum=True))
    dump = open_dump(path)
    assert dump.direct_map_hint is None
    assert dump.phys.read(0x200000, BS) == PAGES[2]
    assert [pid for pid, _ in dump.prstatus()] == [1, 2]
    assert dump.prstatus()[1][1]["r15"] == PRSTATUS_REGS[-1]
    states = dump.qemu_cpu_states()
    assert len(states) == 2
    s = states[0]
    assert (s["rax"], s["r15"], s["rip"], s["rflags"]) == (100, 115, 116, 117)
    assert (s["cs"], s["ss"], s["gs_base"], s["idt_base"]) == (0x10, 0x15, 0x4000, 0x9000)
    assert (s["cr0"], s["cr2"], s["cr3"], s["cr4"]) == (0x80050033, 0xDEAD, 0x10A000, 0x3506F0)
    assert s["kernel_gs_base"] == 0xFFFF88807DC00000
    assert dump.vmcoreinfo == {}
    with pytest.raises(DumpError) as e:
        dump.require_vmcoreinfo()
    assert str(e.value) == (f"{path}: elf dump has no VMCOREINFO (QEMU dump-guest-memory only "
                            f"writes it with '-device vmcoreinfo' and the guest's qemu_fw_cfg "
                            f"module loaded)")


def test_elf_errors(tmp_path):
    p = _write(tmp_path, "exec", build_elf(_elf_segments(), e_type=2))
    with pytest.raises(DumpError) as e:
        open_dump(p)
    assert str(e.value) == (f"{p}: ELF file is not a core dump (e_type ET_EXEC); is this a "
                            f"vmlinux or module instead of a vmcore?")
    p = _write(tmp_path, "riscv", build_elf(_elf_segments(), machine=243))
    with pytest.raises(DumpError) as e:
        open_dump(p)
    assert str(e.value) == f"{p}: unsupported ELF machine EM_RISCV: kql reads x86_64, arm64 and i386 vmcores only"
    full = build_elf(_elf_segments())
    p = _write(tmp_path, "cutph", full[:100])
    with pytest.raises(DumpError) as e:
        open_dump(p)
    assert str(e.value) == (f"{p}: truncated ELF core: 4 program headers need bytes 64..288, "
                            f"file has 100")
    p = _write(tmp_path, "nomem", build_elf([]))
    with pytest.raises(DumpError) as e:
        open_dump(p)
    assert str(e.value) == f"{p}: ELF core has no PT_LOAD segments (no memory in it)"


def test_elf_truncated_data(tmp_path):
    full = build_elf(_elf_segments())
    p = _write(tmp_path, "cut", full[:-BS - BS // 2])    # cuts into the 2nd RAM segment
    dump = open_dump(p)
    assert dump.warnings[0].startswith("file is truncated: segment at physical 0x100000")
    assert dump.phys.read(0x100000, 8) == PAGES[3][:8]
    assert dump.phys.read(0x101000, 2048) == PAGES[4][:2048]
    with pytest.raises(FaultError) as e:
        dump.phys.read(0x101000 + 2040, 16)
    assert str(e.value) == (f"physical address 0x101800 is beyond the end of the truncated dump "
                            f"file (file ends at offset {len(full) - BS - BS // 2})")


# ---------------------------------------------------------------------------------
# probing


def test_probe_errors(tmp_path):
    p = _write(tmp_path, "empty", b"")
    with pytest.raises(DumpError) as e:
        open_dump(p)
    assert str(e.value) == f"{p}: empty file, not a vmcore"
    p = _write(tmp_path, "random", bytes(range(256)) * 20)
    with pytest.raises(DumpError) as e:
        open_dump(p)
    assert str(e.value) == (f"{p}: not a vmcore: unknown format (not /proc/kcore, ELF, "
                            f"kdump-compressed or makedumpfile flattened; starts with "
                            f"0001020304050607)")
    with pytest.raises(DumpError) as e:
        open_dump(str(tmp_path / "missing"))
    assert str(e.value) == f"{tmp_path / 'missing'}: cannot open: No such file or directory"
    with pytest.raises(DumpError) as e:
        open_dump(str(tmp_path))
    assert str(e.value) == f"{tmp_path}: is a directory, not a vmcore"


def test_probe_is_by_content_not_name(tmp_path):
    kd = build_kdump({1: PAGES[0]}, max_mapnr=64)
    assert open_dump(_write(tmp_path, "vmcore.elf", kd)).format == "kdump"
    assert open_dump(_write(tmp_path, "x.kdump", flatten(kd))).format == "kdump-flattened"
    assert open_dump(_write(tmp_path, "x.flat", build_elf(_elf_segments()))).format == "elf"


def test_open_kernel_closes_a_dump_it_cannot_use(tmp_path):
    """open_kernel (how the CLI, API and export open a dump) closes the file
    again when no kernel can be made of the dump (here: no VMCOREINFO)."""
    from kql.kernel import open_kernel

    p = _write(tmp_path, "core", build_elf(_elf_segments(), notes=b""))
    with pytest.raises(DumpError) as e:
        open_kernel(p)
    assert str(e.value) == f"{p}: elf dump has no VMCOREINFO"
    fds = [os.readlink(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd")
           if os.path.exists(f"/proc/self/fd/{fd}")]
    assert p not in fds


def test_probes_are_tried_in_order(tmp_path, monkeypatch):
    """PROBES is the one list of formats: a probe put first wins over the others
    (sniffing has not mapped the file: a source that cannot be mapped, like
    /proc/kcore, can still be probed), and the unknown-format message names
    every probe."""
    import kql.dump as dump_mod
    from kql.dump.base import Probe

    opened = []
    fake = Probe("fake", "fake", lambda head, path, size: head[:4] == b"\x7fELF",
                 lambda source, zero_excluded: opened.append((source.path, source._map))
                 or source.close())
    monkeypatch.setattr(dump_mod, "PROBES", [fake] + dump_mod.PROBES)
    p = _write(tmp_path, "x", build_elf(_elf_segments()))
    assert open_dump(p) is None and opened == [(p, None)]
    p = _write(tmp_path, "random", bytes(range(256)))
    with pytest.raises(DumpError) as e:
        open_dump(p)
    assert str(e.value) == (f"{p}: not a vmcore: unknown format (not fake, /proc/kcore, ELF, "
                            f"kdump-compressed or makedumpfile flattened; starts with "
                            f"0001020304050607)")


# ---------------------------------------------------------------------------------
# real dumps (tests/vmcores fixtures)


# What a guest architecture's dumps hold: kql's name for it, the kernel's
# utsname.machine, QEMU's notes per vCPU (arm64: NT_PRSTATUS, NT_PRFPREG,
# NT_ARM_SVE; x86: NT_PRSTATUS, then the QEMU CPU states), where RAM is.
ARCH_DUMPS = {
    "x86_64": dict(machine="x86_64", uname="x86_64",
                   qemu_notes=lambda smp: ["CORE"] * smp + ["QEMU"] * smp,
                   # all guest RAM from 0, and the 256 KiB BIOS ROM below 4 GiB
                   ram=lambda mem: [(0, mem << 20), (0xFFFC0000, 1 << 32)]),
    "arm64": dict(machine="arm64", uname="aarch64",
                  qemu_notes=lambda smp: ["CORE", "CORE", "LINUX"] * smp,
                  # the virt board's RAM starts at 1 GiB
                  ram=lambda mem: [(1 << 30, (1 << 30) + (mem << 20))]),
}


@pytest.mark.parametrize("name,kind", DUMPS, ids=[f"{n}:{k}" for n, k in DUMPS])
@pytest.mark.fixtures
def test_real_dump_header(name, kind):
    fx = fixture(name)
    path = fx.dump(kind)
    arch = ARCH_DUMPS[fx.recipe.get("arch", "x86_64")]
    with open_dump(path) as dump:
        assert dump.format == FORMAT[kind]
        assert dump.machine == arch["machine"]
        assert dump.release == fx.release == dump.vmcoreinfo["OSRELEASE"]
        assert dump.vmcoreinfo["PAGESIZE"] == "4096"
        assert dump.warnings == []
        names = [n.name for n in dump.notes]
        smp = fx.recipe["smp"]
        if fx.recipe["mode"] == "live":
            # QEMU: its notes per vCPU, then VMCOREINFO.
            assert names == arch["qemu_notes"](smp) + ["VMCOREINFO"]
            assert dump.timestamp is None
            if kind != "elf":
                assert dump.compression == {"zlib"}
                assert dump.header_version == 6 and dump.utsname["machine"] == "Unknown"
        else:
            assert names == ["CORE"] * smp + ["VMCOREINFO"]
            flags = fx.recipe["makedumpfile"]
            assert dump.compression == ({"lzo"} if "-l" in flags else {"zlib"})
            assert dump.dump_level == int(flags.split("-d ")[1].split()[0])
            assert dump.utsname["machine"] == arch["uname"]
            # the header timestamp is the crash time: within the guest's uptime of the build
            assert abs(dump.timestamp - int(dump.vmcoreinfo["CRASHTIME"])) < 1
        if kind == "elf":
            assert dump.direct_map_hint is None          # QEMU: p_vaddr == p_paddr
            assert dump.phys.ranges() == arch["ram"](fx.recipe["mem"])


@pytest.mark.fixtures
def test_real_flattened_is_indexed_not_rewritten():
    fx = fixture("6.1-live")
    path = fx.dump("kdump-flat")
    st = os.stat(path)
    with open_dump(path) as flat, open_dump(fx.dump("kdump")) as plain:
        src = flat.phys.parts[0].source
        assert src.records > 1 and src.truncated is None
        # the logical file the records describe is the plain kdump file, byte for byte
        size = os.path.getsize(fx.dump("kdump"))
        assert src.size == size
        with open(fx.dump("kdump"), "rb") as f:
            for off in (0, 4096, 8192, size // 3, size // 2, size - 4096):
                f.seek(off)
                assert src.read(off, 4096) == f.read(4096), off
        assert flat.vmcoreinfo == plain.vmcoreinfo
        # QEMU's kdump keeps every RAM page: the same ranges as its ELF dump
        with open_dump(fx.dump("elf")) as elf:
            assert plain.phys.ranges() == flat.phys.ranges() == elf.phys.ranges()
    assert os.stat(path).st_mtime_ns == st.st_mtime_ns


@pytest.mark.skipif(shutil.which("makedumpfile") is None, reason="makedumpfile not installed")
@pytest.mark.fixtures
def test_real_split_made_by_makedumpfile(tmp_path):
    """makedumpfile --split of a real kdump reads page for page like the original."""
    fx = fixture("6.1-panic-lzo")
    src = fx.dump("kdump")
    parts = [str(tmp_path / f"part{i}") for i in range(3)]
    subprocess.run(["makedumpfile", "-l", "-d", "31", "--split", src, *parts], check=True,
                   capture_output=True)
    whole = open_dump(src)
    split = open_dump(parts[::-1])
    assert split.format == "kdump-split"
    assert split.path[0] == parts[0] and sorted(split.path) == parts   # in pfn order
    assert split.compression == {"lzo"}
    assert split.vmcoreinfo == whole.vmcoreinfo
    ranges = [(p.start_pfn, p.end_pfn) for p in split.phys.parts]
    assert ranges[0][0] == 0 and ranges[-1][1] == whole.phys.parts[0].max_mapnr
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
    ref = whole.phys.parts[0]
    counts = {"same": 0, "excluded": 0, "hole": 0}
    for pfn in range(0, ref.max_mapnr, 3):
        pa = pfn * BS
        try:
            page = whole.phys.read(pa, BS)
        except ExcludedPageError:
            with pytest.raises(ExcludedPageError):
                split.phys.read(pa, BS)
            counts["excluded"] += 1
            continue
        except FaultError:
            with pytest.raises(FaultError):
                split.phys.read(pa, BS)
            counts["hole"] += 1
            continue
        assert split.phys.read(pa, BS) == page, hex(pfn)
        counts["same"] += 1
    assert min(counts.values()) > 1000, counts


def _proc_vmcore_from_qemu_elf(src: str, dst: str, page_offset_base: int) -> None:
    """Rewrite a QEMU ELF dump the way /proc/vmcore lays it out: program headers
    right after the ELF header (makedumpfile reads them there), RAM PT_LOADs
    with direct-map p_vaddr, no page 0.  Data is copied by the kernel."""
    with open(src, "rb") as f:
        ehdr = bytearray(f.read(64))
        phoff, = struct.unpack_from("<Q", ehdr, 32)
        phnum, = struct.unpack_from("<H", ehdr, 56)
        f.seek(phoff)
        phdrs = [list(struct.unpack("<IIQQQQQQ", f.read(56))) for _ in range(phnum)]
    struct.pack_into("<QQ", ehdr, 32, 64, 0)             # e_phoff, e_shoff
    struct.pack_into("<HH", ehdr, 60, 0, 0)              # e_shnum, e_shstrndx
    for ph in phdrs:
        if ph[0] == 1:
            if ph[4] == 0:                               # drop page 0, as kexec does
                ph[2] += BS
                ph[4] += BS
                ph[5] -= BS
                ph[6] -= BS
            ph[3] = page_offset_base + ph[4]
    table = b"".join(struct.pack("<IIQQQQQQ", *ph) for ph in phdrs)
    assert 64 + len(table) <= min(ph[2] for ph in phdrs)
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        fout.truncate(os.fstat(fin.fileno()).st_size)
        fout.write(ehdr + table)
        for ph in phdrs:
            fout.seek(ph[2])
            fin.seek(ph[2])
            left = ph[5]
            while left:
                n = os.copy_file_range(fin.fileno(), fout.fileno(), left)
                assert n > 0
                left -= n


@pytest.mark.skipif(shutil.which("makedumpfile") is None, reason="makedumpfile not installed")
@pytest.mark.fixtures
def test_real_makedumpfile_E_filtered_elf(tmp_path):
    """makedumpfile -E -d 31 of a /proc/vmcore-style copy of the 6.1-live capture:
    kept pages equal the original's, filtered ones (p_filesz < p_memsz) raise
    ExcludedPageError, and direct_map_hint is the kernel's page_offset_base."""
    from kql.memory import KernelVirtual

    fx = fixture("6.1-live")
    orig = open_dump(fx.dump("elf"))
    info = orig.vmcoreinfo
    kv = KernelVirtual(orig.phys, orig.arch, orig.arch.kernel_pgtable_root(info))
    system_map = Path(fx.vmlinux).parent / f"System.map-{fx.release}"
    sym = next(int(line.split()[0], 16) for line in open(system_map)
               if line.rstrip().endswith(" page_offset_base"))
    page_offset_base = kv.read_u64(sym + orig.arch.kaslr_offset(info))
    proc = str(tmp_path / "proc-vmcore")
    _proc_vmcore_from_qemu_elf(fx.dump("elf"), proc, page_offset_base)
    filtered = str(tmp_path / "filtered.elf")
    try:
        subprocess.run(["makedumpfile", "-E", "-d", "31", proc, filtered], check=True,
                       capture_output=True)
    finally:
        os.unlink(proc)
    dump = open_dump(filtered)
    assert dump.format == "elf"
    assert dump.direct_map_hint == page_offset_base
    assert dump.vmcoreinfo == orig.vmcoreinfo
    counts = {"kept": 0, "excluded": 0}
    for pfn in range(1, fx.recipe["mem"] << 8):
        pa = pfn * BS
        try:
            page = dump.phys.read(pa, BS)
        except ExcludedPageError:
            counts["excluded"] += 1
            continue
        assert page == orig.phys.read(pa, BS), hex(pa)
        counts["kept"] += 1
    assert counts["kept"] > 5000 and counts["excluded"] > 50000, counts
    with pytest.raises(FaultError):
        dump.phys.read(0, 8)                             # page 0 is not in a /proc/vmcore
    assert dump.phys.excluded_ranges()[0][1] > dump.phys.excluded_ranges()[0][0]
    # the kernel itself is intact: init_uts_ns through the page tables
    kv2 = KernelVirtual(dump.phys, dump.arch, dump.arch.kernel_pgtable_root(dump.vmcoreinfo))
    uts = int(dump.vmcoreinfo["SYMBOL(init_uts_ns)"], 16)
    assert kv2.read_cstring(uts + 130, 65).decode() == fx.release
    dump.close()
    os.unlink(filtered)
