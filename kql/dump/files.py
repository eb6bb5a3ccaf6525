"""Byte sources for the dump formats: a memory-mapped file.

``read(offset, size)`` returns at most ``size`` bytes (short at end of file);
callers check the length and report truncation themselves.  ``head(size)``
reads the first bytes without mapping the file (what the format probes sniff;
the file is mapped on first use of ``buffer`` or ``read``).
"""

from __future__ import annotations

import mmap
import os

from kql.errors import DumpError


class MappedFile:
    """A read-only file mapped into memory (slicing an mmap is the fast read)."""

    def __init__(self, path: str):
        self.path = path
        from kql.atomic import open_regular
        try:
            self._file = open_regular(path, "vmcore")
        except OSError as e:
            raise DumpError(f"{path}: cannot open: {e.strerror or e}") from None
        try:
            self.size = os.fstat(self._file.fileno()).st_size
        except OSError as e:
            self._file.close()
            raise DumpError(f"{path}: cannot open: {e.strerror or e}") from None
        self._map = None

    def head(self, size: int) -> bytes:
        """The first ``size`` bytes (fewer if the file is shorter), read without mapping."""
        try:
            return os.pread(self._file.fileno(), size, 0)
        except OSError as e:
            raise DumpError(f"{self.path}: cannot read: {e.strerror or e}") from None

    @property
    def buffer(self):
        """The mapped bytes (supports slicing and struct.unpack_from)."""
        if self._map is None:
            try:
                self._map = (mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ)
                             if self.size else b"")
            except (OSError, ValueError) as e:
                raise DumpError(f"{self.path}: cannot map the file: {e}") from None
        return self._map

    def read(self, offset: int, size: int) -> bytes:
        buf = self._map if self._map is not None else self.buffer
        return buf[offset:offset + size]

    def close(self) -> None:
        if isinstance(self._map, mmap.mmap):
            try:
                self._map.close()
            except BufferError:
                pass  # a memoryview is still alive; the mapping goes with the GC
        self._file.close()
