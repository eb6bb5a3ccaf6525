"""makedumpfile flattened format (``makedumpfile -F``, every QEMU kdump).

The file is a 4096-byte header (signature "makedumpfile", type 1, version 1,
big-endian i64s) followed by records ``{i64 BE offset, i64 BE size, data}``
until an offset of -1.  Each record says "these bytes go at this offset of the
real kdump file"; a later record overwrites an earlier one.

:class:`FlattenedFile` indexes the records in place (the file is never
rewritten) and offers the same ``read(offset, size)`` as a plain file, so the
kdump reader does not know the difference.  Bytes no record wrote read as
zeros (what ``makedumpfile -R`` would leave in the rebuilt file).
"""

from __future__ import annotations

import heapq
import struct
from bisect import bisect_right

from kql.dump.base import Dump, Probe
from kql.dump.kdump import open_kdump
from kql.errors import DumpError

SIGNATURE = b"makedumpfile"
HEADER_SIZE = 4096
_FLAT_HEADER = struct.Struct(">16sqq")
_RECORD = struct.Struct(">qq")
END_FLAG = -1


def is_flattened(head: bytes) -> bool:
    return head[:16].rstrip(b"\0") == SIGNATURE


class FlattenedFile:
    """Logical view of the kdump file rebuilt from a flattened stream."""

    def __init__(self, source):
        """``source`` is a :class:`~kql.dump.files.MappedFile` of the flattened file."""
        self.source = source
        self.path = source.path
        self.truncated: str | None = None      # why, if the record stream ended early
        buf = source.buffer
        fsize = source.size
        if fsize < HEADER_SIZE:
            raise DumpError(f"{self.path}: truncated flattened kdump: header needs "
                            f"{HEADER_SIZE} bytes, file has {fsize}")
        _sig, ftype, version = _FLAT_HEADER.unpack_from(buf, 0)
        if ftype != 1:
            raise DumpError(f"{self.path}: flattened kdump header type is {ftype}, expected 1")
        records = []           # (logical offset, size, position of data in the file)
        pos = HEADER_SIZE
        unpack = _RECORD.unpack_from
        ended = False
        while pos + 16 <= fsize:
            offset, size = unpack(buf, pos)
            if offset == END_FLAG:
                ended = True
                break
            if offset < 0 or size < 0:
                raise DumpError(f"{self.path}: corrupt flattened kdump: record at file offset "
                                f"{pos} has offset {offset} and size {size}")
            data = pos + 16
            if data + size > fsize:
                self.truncated = (f"record at file offset {pos} needs {size} bytes of data, "
                                  f"only {fsize - data} remain")
                if fsize > data:
                    records.append((offset, fsize - data, data))
                pos = fsize
                break
            if size:
                records.append((offset, size, data))
            pos = data + size
        if not ended and self.truncated is None:
            self.truncated = (f"no end-of-stream record (file ends at offset {fsize} "
                              f"after {len(records)} records)")
        self.records = len(records)
        self._starts, self._pieces = _resolve(records)
        self.size = (self._pieces[-1][0] + self._pieces[-1][1]) if self._pieces else 0

    def read(self, offset: int, size: int) -> bytes:
        """Bytes of the rebuilt file at ``offset``; short only past the last record."""
        end = min(offset + size, self.size)
        if end <= offset:
            return b""
        starts = self._starts
        pieces = self._pieces
        buf = self.source.buffer
        i = bisect_right(starts, offset) - 1
        if i >= 0:
            start, length, fpos = pieces[i]
            if end <= start + length:          # fast path: one piece
                at = fpos + offset - start
                return buf[at:at + end - offset]
        out = []
        pos = offset
        if i < 0:
            i = 0
        while pos < end:
            if i < len(pieces):
                start, length, fpos = pieces[i]
            else:
                start, length, fpos = end, 0, 0
            if pos < start:                    # a hole: zeros
                gap = min(start, end) - pos
                out.append(bytes(gap))
                pos += gap
                continue
            if pos < start + length:
                stop = min(start + length, end)
                at = fpos + pos - start
                out.append(buf[at:at + stop - pos])
                pos = stop
            i += 1
        return b"".join(out)

    def close(self) -> None:
        self.source.close()


def _resolve(records):
    """Records (offset, size, fpos) in stream order -> sorted non-overlapping pieces.

    Later records win where they overlap.  Returns (starts, pieces) where
    pieces[i] = (start, length, fpos).
    """
    order = sorted(range(len(records)), key=lambda k: records[k][0])
    overlap = False
    prev_end = -1
    for k in order:
        off, size, _ = records[k]
        if off < prev_end:
            overlap = True
            break
        prev_end = off + size
    if not overlap:
        pieces = _merge([records[k] for k in order])
        return [p[0] for p in pieces], pieces

    # Sweep over the boundaries; the active record with the highest sequence
    # number owns each elementary interval.
    bounds = sorted({b for off, size, _ in records for b in (off, off + size)})
    starting: dict[int, list[int]] = {}
    for seq, (off, size, _) in enumerate(records):
        starting.setdefault(off, []).append(seq)
    heap: list[tuple[int, int]] = []          # (-seq, end)
    raw = []
    for b, nxt in zip(bounds, bounds[1:]):
        for seq in starting.get(b, ()):
            off, size, _ = records[seq]
            heapq.heappush(heap, (-seq, off + size))
        while heap and heap[0][1] <= b:
            heapq.heappop(heap)
        # Entries that ended earlier but are not on top stay until they surface.
        if not heap:
            continue
        seq = -heap[0][0]
        off, size, fpos = records[seq]
        raw.append((b, nxt - b, fpos + b - off))
    pieces = _merge(raw)
    return [p[0] for p in pieces], pieces


def _merge(pieces):
    """Join pieces that are contiguous both in the logical and in the flattened file."""
    out = []
    for start, length, fpos in pieces:
        if out:
            pstart, plen, pfpos = out[-1]
            if pstart + plen == start and pfpos + plen == fpos:
                out[-1] = (pstart, plen + length, pfpos)
                continue
        out.append((start, length, fpos))
    return out


def _open(source, *, zero_excluded: bool = False) -> Dump:
    return open_kdump([source.path], [FlattenedFile(source)], fmt="kdump-flattened",
                      zero_excluded=zero_excluded)


PROBE = Probe("kdump-flattened", "makedumpfile flattened",
              lambda head, path, size: is_flattened(head), _open, part=FlattenedFile)
