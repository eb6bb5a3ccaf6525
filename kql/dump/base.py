"""What every dump format has in common: notes, VMCOREINFO, the Dump object.

A format module (``elf.py``, ``kdump.py``) builds a :class:`Dump` with a
physical-memory layer in ``phys`` and declares the :class:`Probe` that
:func:`kql.dump.open_dump` tries.  Nothing above ``kql.dump`` sees a file
offset: the layer takes physical addresses only.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass, field
from typing import Callable, NamedTuple

from kql.errors import DumpError


class Note(NamedTuple):
    """One ELF note: ``name`` without its NUL, ``type``, raw ``desc`` bytes."""

    name: str
    type: int
    desc: bytes


class Probe(NamedTuple):
    """One dump format, tried in the order of ``kql.dump.PROBES`` (like
    Volatility's stackers): the first whose ``sniff`` says yes opens the file.

    - ``name``: the ``Dump.format`` it opens ("elf", "kdump", ...)
    - ``what``: what the format is called in "unknown format (not ELF, ...)"
    - ``sniff(head, path, size) -> bool``: the file's first bytes (up to
      ``HEAD_SIZE``), its path and size; no other reading
    - ``open(source, *, zero_excluded) -> Dump``: ``source`` is a byte source
      (:class:`~kql.dump.files.MappedFile`: ``path``, ``size``, ``buffer``,
      ``read``, ``close``) that the Dump closes; on error the caller closes it
    - ``part(source)``: for a format a split kdump's parts can have, the kdump
      byte source of one part (None: this format cannot be split)
    """

    name: str
    what: str
    sniff: Callable[[bytes, str, int], bool]
    open: Callable[..., "Dump"]
    part: Callable | None = None


HEAD_SIZE = 4096

NT_PRSTATUS = 1
_NHDR = struct.Struct("<III")


def parse_notes(data: bytes, where: str = "notes") -> list[Note]:
    """Split a PT_NOTE blob (``Elf64_Nhdr`` + name + desc, each 4-aligned).

    Stops at trailing zero padding (kdump pads its note buffer).  A note whose
    sizes run past the end is a :class:`DumpError` naming its offset.
    """
    notes: list[Note] = []
    pos = 0
    end = len(data)
    while pos + 12 <= end:
        namesz, descsz, ntype = _NHDR.unpack_from(data, pos)
        if namesz == 0 and descsz == 0 and ntype == 0:
            break  # zero padding: end of the note list
        name_start = pos + 12
        desc_start = name_start + ((namesz + 3) & ~3)
        next_pos = desc_start + ((descsz + 3) & ~3)
        if desc_start + descsz > end:
            raise DumpError(
                f"{where}: note at offset {pos} claims name {namesz} + desc {descsz} bytes "
                f"but only {end - name_start} remain (corrupt or truncated notes)")
        name = data[name_start:name_start + namesz].split(b"\0", 1)[0].decode("latin-1")
        notes.append(Note(name, ntype, bytes(data[desc_start:desc_start + descsz])))
        pos = next_pos
    return notes


#: A VMCOREINFO line as the kernel writes it (kernel/vmcore_info.c and the
#: arch_crash_save_vmcoreinfo()s): ``OSRELEASE=…``, ``BUILD-ID=…``,
#: ``CONFIG_X86_PAE=y``, or ``SYMBOL|SIZE|OFFSET|LENGTH|NUMBER(name)=…``; the
#: value printable ASCII without spaces.  Anything else is damage.
_LINE = re.compile(rb"(?:[A-Z][A-Z0-9_-]*|(?:SYMBOL|SIZE|OFFSET|LENGTH|NUMBER)"
                   rb"\([A-Za-z0-9_.]+\))=[\x21-\x7e]*")


def parse_vmcoreinfo(raw: bytes, damaged: list[str] | None = None) -> dict[str, str]:
    """``KEY=VALUE`` lines to a dict (later duplicates win, like the kernel's
    readers).  A line not of the kernel's form is left out, and added to
    ``damaged`` when given."""
    info: dict[str, str] = {}
    for line in raw.split(b"\n"):
        line = line.rstrip(b"\0\r")
        if not line:
            continue
        if not _LINE.fullmatch(line):
            if damaged is not None:
                damaged.append(line.decode("latin-1"))
            continue
        key, _sep, value = line.partition(b"=")
        info[key.decode("latin-1")] = value.decode("latin-1")
    return info


_DEC = re.compile(r"-?[0-9]+", re.A)
_HEX = re.compile(r"(?:0x)?[0-9a-fA-F]+", re.A)


def validate_vmcoreinfo(info: dict[str, str], where: str) -> list[str]:
    """Check the values kql reads as numbers; the warnings to report.

    ``PAGESIZE`` (a power of two) and ``KERNELOFFSET`` (a hex offset below
    2**64) are used for every address: a bad one is a :class:`DumpError`.
    A bad ``SYMBOL(x)`` (hex), ``NUMBER(x)`` (decimal or 0x-hex), ``SIZE(x)``,
    ``OFFSET(x)``, ``LENGTH(x)`` (decimal) or ``CRASHTIME`` is dropped from ``info`` with a
    warning, so readers fall back as if it were absent."""
    warnings = []
    page = info.get("PAGESIZE")
    if page is not None and not (_DEC.fullmatch(page) and 1024 <= int(page) <= 1 << 20
                                 and int(page) & (int(page) - 1) == 0):
        raise DumpError(f"{where}: corrupt VMCOREINFO: PAGESIZE={page[:40]!r} is not a page size")
    off = info.get("KERNELOFFSET")
    if off is not None and not (_HEX.fullmatch(off) and int(off, 16) < 1 << 64):
        raise DumpError(f"{where}: corrupt VMCOREINFO: KERNELOFFSET={off[:40]!r} is not a "
                        f"hex offset")
    for key, value in list(info.items()):
        kind = key.split("(", 1)[0] if key.endswith(")") else key
        if kind == "SYMBOL":
            ok = _HEX.fullmatch(value) and int(value, 16) < 1 << 64
        elif kind == "NUMBER":  # decimal, or 0x-hex (VMALLOC_START on 6.12, arm64 kimage_voffset)
            ok = (_DEC.fullmatch(value) and -(1 << 63) <= int(value) < 1 << 64) or (
                value[:2] in ("0x", "0X") and _HEX.fullmatch(value) and int(value, 16) < 1 << 64)
        elif kind in ("SIZE", "OFFSET", "LENGTH"):
            ok = _DEC.fullmatch(value) and 0 <= int(value) < 1 << 63
        elif kind == "CRASHTIME":
            ok = _DEC.fullmatch(value) and 0 <= int(value) < 1 << 63
        else:
            continue
        if not ok:
            warnings.append(f"{where}: VMCOREINFO {key}={value[:40]!r} is not a number: ignored")
            if kind != "CRASHTIME":  # CRASHTIME: its presence says "a kdump kernel wrote this"
                del info[key]
    return warnings


@dataclass
class DumpStats:
    """Counters for one open dump (read by benchmarks and ``--stats``)."""

    # kdump: pages read from the file and decompressed (page-cache misses);
    # ELF: physical reads, counting each page a read touches (no cache to miss).
    pages_read: int = 0


@dataclass(repr=False)
class Dump:
    """One open vmcore.  See docs/ARCHITECTURE.md "Dumps" for the contract."""

    path: str | list[str]
    format: str                      # the Probe.name that opened it ("elf", ...) or "kdump-split"
    machine: str                     # "x86_64"
    phys: object                     # a kql.memory.Layer over physical addresses
    notes: list[Note] = field(default_factory=list)
    vmcoreinfo_raw: bytes = b""
    compression: set[str] = field(default_factory=set)
    timestamp: float | None = None
    direct_map_hint: int | None = None
    dump_level: int | None = None    # makedumpfile -d N (kdump only)
    release: str | None = None       # utsname.release (kdump header) or OSRELEASE
    stats: DumpStats = field(default_factory=DumpStats)
    warnings: list[str] = field(default_factory=list)   # e.g. "file is truncated: ..."
    _closers: list = field(default_factory=list, repr=False)
    #: a running kernel (kql/dump/kcore.py): memory changes between reads
    live = False

    def __post_init__(self) -> None:
        damaged: list[str] = []
        self.vmcoreinfo: dict[str, str] = parse_vmcoreinfo(self.vmcoreinfo_raw, damaged)
        self.warnings.extend(f"{self.describe_path()}: VMCOREINFO line {line[:60]!r} is "
                             f"damaged: ignored" for line in damaged)
        self.warnings.extend(validate_vmcoreinfo(self.vmcoreinfo, self.describe_path()))
        page = self.vmcoreinfo.get("PAGESIZE")
        if page is not None and self.machine:
            try:
                size = self.arch.page_size
            except DumpError:   # an unsupported machine: said when it is used
                size = None
            if size is not None and int(page) != size:
                raise DumpError(f"{self.describe_path()}: VMCOREINFO PAGESIZE={page} is not "
                                f"the {self.arch.name} page size kql reads ({size})")
        if not self.release:
            self.release = self.vmcoreinfo.get("OSRELEASE") or None

    # -- registers --------------------------------------------------------------
    @property
    def arch(self):
        from kql.arch import get_arch
        return get_arch(self.machine)

    def prstatus(self) -> list[tuple[int, dict[str, int]]]:
        """``(pr_pid, {register: value})`` for each NT_PRSTATUS ("CORE") note, in order."""
        arch = self.arch
        return [arch.parse_prstatus(n.desc) for n in self.notes
                if n.type == NT_PRSTATUS and n.name == "CORE"]

    def qemu_cpu_states(self) -> list[dict[str, int]]:
        """Registers of each "QEMU" CPU-state note (QEMU dump-guest-memory), in CPU order.

        Each dict has the general registers, ``rip``, ``rflags``, ``cr0``..``cr4``,
        segment bases as ``<seg>_base`` and selectors as ``<seg>``.
        """
        arch = self.arch
        return [arch.parse_qemu_cpu_state(n.desc) for n in self.notes if n.name == "QEMU"]

    def require_vmcoreinfo(self) -> dict[str, str]:
        """The VMCOREINFO dict, or a one-line :class:`DumpError` saying it is missing.

        Opening a dump without VMCOREINFO works (physical memory can still be
        read); whoever needs symbols calls this.
        """
        if not self.vmcoreinfo:
            hint = ""
            if any(n.name == "QEMU" for n in self.notes):
                hint = (" (QEMU dump-guest-memory only writes it with '-device vmcoreinfo'"
                        " and the guest's qemu_fw_cfg module loaded)")
            raise DumpError(f"{self.describe_path()}: {self.format} dump has no VMCOREINFO{hint}")
        return self.vmcoreinfo

    # -- hooks a live source overrides (kql/dump/kcore.py) --------------------------
    def kernel_layer(self, walker):
        """The layer for kernel virtual reads, given the page-table walk."""
        return walker

    def refresh(self) -> None:
        """Forget cached memory (a live kernel; a dump never changes)."""

    def btf_blob(self, name: str) -> bytes | None:
        """The running kernel's BTF file for ``name`` (vmlinux or a module), if any."""
        return None

    def btf_module_names(self) -> list[str] | None:
        """Modules whose BTF files the running kernel shows, None for a dump."""
        return None

    def kallsyms_file(self) -> str | None:
        """The running kernel's /proc/kallsyms, None for a dump."""
        return None

    def describe_path(self) -> str:
        if isinstance(self.path, str):
            return self.path
        return " + ".join(self.path)

    def close(self) -> None:
        closers, self._closers = self._closers, []
        for close in closers:
            close()

    def __repr__(self) -> str:
        return f"<Dump {self.format} {self.describe_path()} {self.release or '?'}>"

    def __enter__(self) -> "Dump":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
