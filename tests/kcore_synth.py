"""A synthetic /proc/kcore (and the /proc and /sys around it) built from a
fixture's ELF vmcore, for testing live analysis on a machine without one.

The layout follows fs/proc/kcore.c read_kcore_iter(): ET_CORE, one PT_NOTE
("CORE" NT_PRSTATUS all zeros, "CORE" NT_PRPSINFO with pr_fname "vmlinux",
"CORE" NT_TASKSTRUCT, "VMCOREINFO" type 0) then PT_LOADs at kernel virtual
addresses: KCORE_TEXT (``_text`` .. ``_end``, p_paddr = __pa_symbol), KCORE_RAM
(one per physical range of the dump at PAGE_OFFSET + paddr, p_paddr = paddr) and
the mapped stretches of vmalloc and module space (p_paddr = -1).  The real
file spaces segments by their virtual addresses (~128 TiB of holes); this one
packs them (a reader must only follow p_offset).  The real kcore has one
segment for all of vmalloc space, where a read of an unmapped page gives
zeros; here only stretches with mapped pages are segments, so the rest goes
through the page-table walk.  Zero pages are left as holes (sparse file).
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

PT_LOAD, PT_NOTE = 1, 4
NO_PADDR = (1 << 64) - 1
_EHDR = struct.Struct("<16sHHIQQQIHHHHHH")
_PHDR = struct.Struct("<IIQQQQQQ")
PRSTATUS_SIZE = 336      # x86_64 struct elf_prstatus
# struct elf_prpsinfo (64-bit): state, sname, zomb, nice, flag, uid, gid, pid,
# ppid, pgrp, sid, fname[16], psargs[80]
_PRPSINFO = struct.Struct("<cccbQIIiiii16s80s")
_ZERO = bytes(1 << 20)


def note(name: bytes, ntype: int, desc: bytes) -> bytes:
    name = name + b"\0"
    pad = lambda b: b + bytes(-len(b) % 4)  # noqa: E731
    return struct.pack("<III", len(name), len(desc), ntype) + pad(name) + pad(desc)


def kcore_notes(vmcoreinfo: bytes, cmdline: bytes = b"BOOT_IMAGE=/vmlinuz root=/dev/vda",
                fname: bytes = b"vmlinux") -> bytes:
    psinfo = _PRPSINFO.pack(b"\0", b"R", b"\0", 0, 0, 0, 0, 0, 0, 0, 0, fname, cmdline[:79])
    return (note(b"CORE", 1, bytes(PRSTATUS_SIZE)) + note(b"CORE", 3, psinfo)
            + note(b"CORE", 4, bytes(64)) + note(b"VMCOREINFO", 0, vmcoreinfo))


def _leaves(phys, table_pa: int, level: int, base: int, lo: int, hi: int):
    """(vaddr, paddr, size) of each present leaf of an x86_64 4-level table
    within [lo, hi)."""
    shift = 12 + 9 * (level - 1)
    entries = struct.unpack("<512Q", phys.read(table_pa, 4096))
    for i, e in enumerate(entries):
        va = base + (i << shift)
        if level == 4 and i >= 256:
            va |= 0xFFFF000000000000
        if va + (1 << shift) <= lo or va >= hi or not e & 1:
            continue
        pa = e & 0x000FFFFFFFFFF000
        if level == 1 or (level in (2, 3) and e & 0x80):
            yield va, pa & ~((1 << shift) - 1), 1 << shift
        else:
            yield from _leaves(phys, pa, level - 1, va, lo, hi)


def _runs(leaves, gap: int = 1 << 20):
    """Merge (vaddr, paddr, size) leaves into segments [(vstart, [(va, pa, size)…])]
    whose pieces are less than ``gap`` apart."""
    out = []
    for va, pa, size in sorted(leaves):
        if out and va - out[-1][1] < gap:
            out[-1][1] = va + size
            out[-1][2].append((va, pa, size))
        else:
            out.append([va, va + size, [(va, pa, size)]])
    return out


def build_kcore(dump_path: str, out: str | Path, *, vmcoreinfo: bytes | None = None) -> dict:
    """Write a kcore for the ELF vmcore ``dump_path`` to ``out``; returns facts
    about it (segments, page_offset, text range) for tests."""
    from kql.kernel import Kernel
    kernel = Kernel(dump_path, cache_dir=False)
    try:
        phys = kernel.dump.phys
        info = vmcoreinfo if vmcoreinfo is not None else kernel.dump.vmcoreinfo_raw
        page_offset = kernel.page_offset
        text = kernel.symbols.get("_text").address
        end = kernel.symbols.get("_end").address
        arch = kernel.arch
        text_pa = arch.kernel_symbol_pa(text, kernel.vmcoreinfo)
        vmalloc = kernel.read_u64(kernel.symbols.get("vmalloc_base").address)
        root_pa = arch.kernel_pgtable_root(kernel.vmcoreinfo)
        # KCORE_TEXT, then vmalloc and module space (mapped stretches), then RAM
        segs = [(text, text_pa, end - text, [(text, text_pa, end - text)])]
        areas = [(vmalloc, vmalloc + (32 << 40)), (0xFFFFFFFFC0000000, 0xFFFFFFFFFF000000)]
        for lo, hi in areas:
            for vs, ve, pieces in _runs(_leaves(phys, root_pa, 4, 0, lo, hi)):
                segs.append((vs, NO_PADDR, ve - vs, pieces))
        for ps, pe in phys.ranges():
            segs.append((page_offset + ps, ps, pe - ps, [(page_offset + ps, ps, pe - ps)]))
        notes = kcore_notes(info)
        nphdr = 1 + len(segs)
        notes_off = 64 + nphdr * _PHDR.size
        data_off = (notes_off + len(notes) + 4095) & ~4095
        phdrs = [_PHDR.pack(PT_NOTE, 0, notes_off, 0, 0, len(notes), 0, 0)]
        placed = []
        cursor = data_off
        for vaddr, paddr, size, pieces in segs:
            phdrs.append(_PHDR.pack(PT_LOAD, 7, cursor, vaddr, paddr, size, size, 4096))
            placed.append((cursor, vaddr, pieces))
            cursor = (cursor + size + 4095) & ~4095
        with open(out, "wb") as f:
            f.write(_EHDR.pack(b"\x7fELF\x02\x01\x01" + bytes(9), 4, 62, 1, 0, 64, 0, 0, 64,
                               _PHDR.size, nphdr, 0, 0, 0))
            f.write(b"".join(phdrs))
            f.write(notes)
            for foff, vaddr, pieces in placed:
                for va, pa, size in pieces:
                    done = 0
                    while done < size:
                        n = min(1 << 20, size - done)
                        try:
                            chunk = phys.read(pa + done, n)
                        except Exception:  # noqa: BLE001 - outside the dump: a hole
                            chunk = _ZERO[:n]
                        if chunk != _ZERO[:n]:
                            f.seek(foff + va - vaddr + done)
                            f.write(chunk)
                        done += n
            f.truncate(cursor)
        return {"page_offset": page_offset, "text": (text, end), "vmalloc_base": vmalloc,
                "segments": [(v, p, s) for v, p, s, _ in segs], "size": cursor}
    finally:
        kernel.close()


def build_root(root: Path, kcore: Path, *, btf: bytes | None = None,
               kallsyms: str | None = None, lockdown: str | None = None,
               kptr_restrict: int | None = None) -> Path:
    """ROOT/proc/kcore (a symlink to ``kcore``) with the optional companions a
    running kernel has: sys/kernel/btf/vmlinux, proc/kallsyms,
    sys/kernel/security/lockdown, proc/sys/kernel/kptr_restrict."""
    (root / "proc/sys/kernel").mkdir(parents=True, exist_ok=True)
    (root / "sys/kernel/security").mkdir(parents=True, exist_ok=True)
    if kcore is not None:
        os.symlink(kcore, root / "proc/kcore")
    if btf is not None:
        (root / "sys/kernel/btf").mkdir(parents=True, exist_ok=True)
        (root / "sys/kernel/btf/vmlinux").write_bytes(btf)
    if kallsyms is not None:
        (root / "proc/kallsyms").write_text(kallsyms)
    if lockdown is not None:
        (root / "sys/kernel/security/lockdown").write_text(lockdown + "\n")
    if kptr_restrict is not None:
        (root / "proc/sys/kernel/kptr_restrict").write_text(f"{kptr_restrict}\n")
    return root
