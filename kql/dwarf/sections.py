"""The debug vmlinux as a file: opened and checked (ELF, linked, has
``.debug_info``), mapped, its build-id, its sections as streams, and
pyelftools' ``DWARFInfo`` over them (built on first use: a warm disk cache
never needs it)."""

from __future__ import annotations

import errno
import hashlib
import io
import mmap
import os
import struct

from kql.errors import DumpError
from kql.symbols import elf_build_id


class SectionStream:
    """A read-only file-like view of one section inside an mmap (no copy);
    positions are section offsets, which is what pyelftools expects."""

    __slots__ = ("_buf", "_base", "_size", "_pos", "limit")

    def __init__(self, buf, base: int, size: int):
        self._buf = buf
        self._base = base
        self._size = size
        self._pos = 0
        #: While probing for a DIE at a guessed offset, reads past this
        #: section offset fail (a garbage block length must not copy 100 MB).
        self.limit: int | None = None

    def seek(self, pos: int, whence: int = 0) -> int:
        if whence == 0:
            self._pos = pos
        elif whence == 1:
            self._pos += pos
        else:
            self._pos = self._size + pos
        return self._pos

    def tell(self) -> int:
        return self._pos

    def read(self, n: int = -1) -> bytes:
        pos = self._pos
        end = self._size if n is None or n < 0 else min(pos + n, self._size)
        if self.limit is not None and end > self.limit:
            raise EOFError("read past the probe limit")
        if end <= pos:
            return b""
        self._pos = end
        return self._buf[self._base + pos:self._base + end]

    def find(self, sub: bytes, start: int, end: int) -> int:
        """Section-relative ``find``."""
        hit = self._buf.find(sub, self._base + start, self._base + min(end, self._size))
        return -1 if hit < 0 else hit - self._base


class DebugFile:
    """A debug vmlinux.  Raises :class:`DumpError` for a file that cannot be
    read, is not ELF, has no DWARF or is a relocatable object."""

    def __init__(self, path: str):
        self.path = path
        try:
            self._file = open(self.path, "rb")
        except OSError as e:
            raise DumpError(f"cannot open vmlinux {self.path}: "
                            f"{e.strerror or errno.errorcode.get(e.errno, e)}") from None
        try:
            self._open_elf()
        except BaseException:
            self._file.close()
            raise
        #: The GNU build-id as lowercase hex, or None.
        self.build_id: str | None = elf_build_id(self.elf)
        self.closed = False
        self.dwarf = None      # pyelftools' DWARFInfo, once built
        self.info = None       # SectionStream over .debug_info
        self.str = None        # SectionStream over .debug_str

    def _open_elf(self) -> None:
        from elftools.common.exceptions import ELFError
        from elftools.elf.elffile import ELFFile

        magic = self._file.read(4)
        if magic != b"\x7fELF":
            raise DumpError(f"{self.path} is not an ELF file (not a vmlinux)")
        self._file.seek(0)
        try:
            self.elf = ELFFile(self._file)
            has_info = self.elf.get_section_by_name(".debug_info") is not None
        except (ELFError, ValueError, struct.error) as e:
            raise DumpError(f"{self.path}: cannot parse ELF: {e}") from None
        if not has_info:
            raise DumpError(f"{self.path} has no DWARF debug info (.debug_info); "
                            f"pass the debug vmlinux, e.g. from linux-image-*-dbg")
        if self.elf["e_type"] == "ET_REL":
            # Its DWARF only makes sense after relocation (a module, an object
            # file); a vmlinux is linked.
            raise DumpError(f"{self.path} is a relocatable object (a module?), not a vmlinux")
        try:
            self._mm = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError) as e:
            raise DumpError(f"cannot map vmlinux {self.path}: {e}") from None

    def cache_key(self) -> str:
        """What the disk caches are named by: the build-id, else the path,
        size and modification time."""
        if self.build_id:
            return self.build_id
        st = os.stat(self.path)
        raw = f"{os.path.abspath(self.path)}\0{st.st_size}\0{st.st_mtime_ns}"
        return "nobuildid-" + hashlib.sha1(raw.encode()).hexdigest()[:20]

    def section(self, name: str) -> SectionStream | None:
        sec = self.elf.get_section_by_name(name)
        if sec is None:
            return None
        if sec["sh_flags"] & 0x800:     # SHF_COMPRESSED: pyelftools inflates
            data = sec.data()
            return SectionStream(data, 0, len(data))
        return SectionStream(self._mm, sec["sh_offset"], sec["sh_size"])

    def dwarfinfo(self):
        """pyelftools' DWARFInfo over the type sections (built once)."""
        if self.closed:
            raise DumpError(f"vmlinux {self.path} was closed; its types cannot be read")
        if self.dwarf is not None:
            return self.dwarf
        from elftools.dwarf.dwarfinfo import DebugSectionDescriptor, DwarfConfig, DWARFInfo

        def desc(name, copy=True):
            sec = self.elf.get_section_by_name(name)
            if sec is None:
                return None
            stream = self.section(name)
            size = stream._size
            if copy:    # small sections: a BytesIO reads faster than the mmap view
                stream = io.BytesIO(stream.read())
            return DebugSectionDescriptor(stream=stream, name=name,
                                          global_offset=sec["sh_offset"],
                                          size=size, address=sec["sh_addr"])

        # Only what type DIEs need; the vmlinux's .rela.debug_* are already
        # applied (ET_EXEC linked with --emit-relocs), so nothing is relocated.
        info = desc(".debug_info", copy=False)
        elf = self.elf
        self.dwarf = DWARFInfo(
            config=DwarfConfig(little_endian=elf.little_endian,
                               machine_arch=elf.get_machine_arch(),
                               default_address_size=elf.elfclass // 8),
            debug_info_sec=info, debug_aranges_sec=None,
            debug_abbrev_sec=desc(".debug_abbrev"), debug_frame_sec=None,
            eh_frame_sec=None, debug_str_sec=desc(".debug_str"), debug_loc_sec=None,
            debug_ranges_sec=None, debug_line_sec=None, debug_pubtypes_sec=None,
            debug_pubnames_sec=None, debug_addr_sec=desc(".debug_addr"),
            debug_str_offsets_sec=desc(".debug_str_offsets"),
            debug_line_str_sec=desc(".debug_line_str"), debug_loclists_sec=None,
            debug_rnglists_sec=None, debug_sup_sec=None, gnu_debugaltlink_sec=None,
            debug_types_sec=None)
        self.info = info.stream
        self.str = self.section(".debug_str")
        return self.dwarf

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            self._mm.close()
        except (BufferError, ValueError):
            pass
        self._file.close()
