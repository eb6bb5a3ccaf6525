"""Dump formats: ELF cores, kdump-compressed (plain, flattened, split).

``open_dump(paths, zero_excluded=False) -> Dump`` decides the format from the
file contents only (never the name), trying in order: ELF core, kdump,
makedumpfile flattened kdump; several paths make a split kdump.  A running
kernel's /proc/kcore (kql/dump/kcore.py) is tried first.

A :class:`Dump` has (beyond docs/ARCHITECTURE.md "Dumps"):

- ``machine`` ("x86_64"; the arch hooks are ``dump.arch``), ``release``,
  ``dump_level`` (kdump sub-header), ``warnings`` (truncated/incomplete files)
- ``prstatus()`` -> [(pr_pid, {register: value})] from the NT_PRSTATUS notes
- ``qemu_cpu_states()`` -> [{rax.., rip, rflags, cs.., <seg>_base, cr0..cr4}]
- ``require_vmcoreinfo()`` -> the dict, or a one-line DumpError if missing
- ``phys.read / is_mapped / ranges()``; kdump also ``phys.is_excluded(paddr)``
- kdump only: ``header_version``, ``utsname``, ``phys_base``, ``nr_cpus``

Errors are one-line :class:`~kql.errors.DumpError` messages that name the
file and what is wrong with it.  Structure damage (truncated header, bitmaps
or descriptor table; not a core; unknown format) fails at open.  Damage to
one page's data (cut off, undecompressable) is a :class:`~kql.errors.FaultError`
(a DumpError) for reads of that page only, naming the pfn, so a table scan
can count it and go on.  A dump without VMCOREINFO opens (physical memory is
still readable); ``dump.require_vmcoreinfo()`` raises for callers that need it.
"""

from __future__ import annotations

import os

from kql.dump.base import Dump, DumpStats, Note, parse_notes, parse_vmcoreinfo
from kql.dump.elf import is_elf, open_elf
from kql.dump.files import MappedFile
from kql.dump.flattened import FlattenedFile, is_flattened
from kql.dump.kcore import sniff_kcore
from kql.dump.kdump import is_kdump, open_kdump
from kql.errors import DumpError

__all__ = ["open_dump", "Dump", "DumpStats", "Note", "parse_notes", "parse_vmcoreinfo"]


def _open_one(path: str, *, zero_excluded: bool):
    """-> ("elf", Dump) or (format, kdump byte source)."""
    if os.path.isdir(path):
        raise DumpError(f"{path}: is a directory, not a vmcore")
    kcore = sniff_kcore(path)  # before mapping: /proc/kcore is read, never mapped
    if kcore is not None:
        return "elf", kcore
    mfile = MappedFile(path)
    try:
        if mfile.size == 0:
            raise DumpError(f"{path}: empty file, not a vmcore")
        head = mfile.read(0, 16)
        if is_elf(head):
            return "elf", open_elf(path, mfile, zero_excluded=zero_excluded)
        if is_kdump(head):
            return "kdump", mfile
        if is_flattened(head):
            return "kdump-flattened", FlattenedFile(mfile)
        raise DumpError(f"{path}: not a vmcore: unknown format (not ELF, kdump-compressed "
                        f"or makedumpfile flattened; starts with {head[:8].hex()})")
    except BaseException:
        mfile.close()
        raise


def open_dump(paths: str | os.PathLike | list, *, zero_excluded: bool = False) -> Dump:
    """Open a vmcore (or the parts of a split kdump) by content.

    ``zero_excluded``: pages the dump level filtered out read as zeros instead
    of raising :class:`~kql.errors.ExcludedPageError`.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    paths = [os.fspath(p) for p in paths]
    if not paths:
        raise DumpError("no dump file given")
    opened = []
    try:
        for path in paths:
            opened.append((path, *_open_one(path, zero_excluded=zero_excluded)))
        if len(opened) == 1:
            path, fmt, obj = opened[0]
            if fmt == "elf":
                return obj
            return open_kdump([path], [obj], fmt=fmt, zero_excluded=zero_excluded)
        for path, fmt, _obj in opened:
            if fmt == "elf":
                raise DumpError(f"{path}: several files were given but this one is an ELF core; "
                                f"only kdump-compressed dumps can be split")
        return open_kdump([p for p, _f, _o in opened], [o for _p, _f, o in opened],
                          fmt="kdump-split", zero_excluded=zero_excluded)
    except BaseException:
        for _path, _fmt, obj in opened:
            obj.close()
        raise
