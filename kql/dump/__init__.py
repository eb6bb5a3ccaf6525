"""Dump formats: ELF cores, kdump-compressed (plain, flattened, split).

``open_dump(paths, zero_excluded=False) -> Dump`` decides the format from the
file contents only (never the name): each format module declares a
:class:`~kql.dump.base.Probe` ``(name, what, sniff, open, part)`` and
``PROBES`` lists them in the order they are tried.  A new format is one
module and one line here.  Several paths make a split kdump (of formats with
a ``part``).

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

from kql.dump import elf, flattened, kcore, kdump
from kql.dump.base import HEAD_SIZE, Dump, DumpStats, Note, Probe, parse_notes, parse_vmcoreinfo
from kql.dump.files import MappedFile
from kql.errors import DumpError

__all__ = ["open_dump", "open_source", "probe_of", "PROBES", "Dump", "DumpStats", "Note",
           "Probe", "parse_notes", "parse_vmcoreinfo"]

PROBES: list[Probe] = [
    kcore.PROBE,      # first: a kcore is an ELF core too
    elf.PROBE,
    kdump.PROBE,
    flattened.PROBE,
]


def probe_of(source) -> Probe:
    """The first probe that recognises ``source`` (a byte source), or a DumpError."""
    if source.size == 0:
        raise DumpError(f"{source.path}: empty file, not a vmcore")
    head = source.head(HEAD_SIZE)
    for probe in PROBES:
        if probe.sniff(head, source.path, source.size):
            return probe
    *others, last = [p.what for p in PROBES]
    raise DumpError(f"{source.path}: not a vmcore: unknown format (not {', '.join(others)} "
                    f"or {last}; starts with {head[:8].hex()})")


def open_source(source, *, zero_excluded: bool = False) -> Dump:
    """The Dump of one byte source, by the first probe that recognises it."""
    return probe_of(source).open(source, zero_excluded=zero_excluded)


def _map(path: str) -> MappedFile:
    if os.path.isdir(path):
        raise DumpError(f"{path}: is a directory, not a vmcore")
    kcore.check_path(path)  # a running kernel's refusals, said as such
    return MappedFile(path)


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
    if len(paths) == 1:
        source = _map(paths[0])
        try:
            return open_source(source, zero_excluded=zero_excluded)
        except BaseException:
            source.close()
            raise
    sources, parts = [], []
    try:
        for path in paths:
            sources.append(_map(path))
            probe = probe_of(sources[-1])
            if probe.part is None:
                raise DumpError(f"{path}: several files were given but this one is in "
                                f"{probe.what} format; only kdump-compressed dumps can be split")
            parts.append(probe.part(sources[-1]))
        return kdump.open_kdump(paths, parts, fmt="kdump-split", zero_excluded=zero_excluded)
    except BaseException:
        for source in sources:
            source.close()
        raise
