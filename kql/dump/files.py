"""Byte sources for the dump formats: a memory-mapped file.

``read(offset, size)`` returns at most ``size`` bytes (short at end of file);
callers check the length and report truncation themselves.
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
            if self.size:
                self._map = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ)
            else:
                self._map = b""
        except (OSError, ValueError) as e:
            self._file.close()
            raise DumpError(f"{path}: cannot map the file: {e}") from None

    @property
    def buffer(self):
        """The mapped bytes (supports slicing and struct.unpack_from)."""
        return self._map

    def read(self, offset: int, size: int) -> bytes:
        return self._map[offset:offset + size]

    def close(self) -> None:
        if isinstance(self._map, mmap.mmap):
            try:
                self._map.close()
            except BufferError:
                pass  # a memoryview is still alive; the mapping goes with the GC
        self._file.close()
