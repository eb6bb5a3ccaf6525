"""Find the kallsyms tables in a dump's memory by their shapes (Linux < 6.0).

Before Linux 6.0 (commit f09bddbd8661 "vmcoreinfo: add kallsyms_num_syms
symbol" and its series) VMCOREINFO does not say where kallsyms lives, but the tables are in
the kernel image's read-only data, written by scripts/kallsyms.c in this
order, each label aligned to the pointer size::

    kallsyms_offsets (s32 × N)   or kallsyms_addresses (pointer × N)
    kallsyms_relative_base (pointer)
    kallsyms_num_syms (u32 N)
    kallsyms_names (N × [len, len token bytes])
    kallsyms_markers (u32 × ⌈N/256⌉: offset in names of every 256th entry)
    kallsyms_token_table (256 NUL-terminated strings)
    kallsyms_token_index (u16 × 256: offset of each token in the table)

Every character used in a symbol name stands for itself in the token table,
so tokens 0x30..0x39 are the strings "0".."9": ``0\\x001\\x00…9\\x00`` is the
needle.  From it the token table's end and the index after it follow; the
index gives the table's start; the markers end just before it and count back
to their leading 0; the last marker and the entry count then pin down where
the names (and the count, the base and the offsets before them) start.  Each
step is checked (the index against the table's strings, the markers against
the decoded entries); :func:`kql.kallsyms.load_kallsyms` then checks the
decoded symbols against VMCOREINFO's ``SYMBOL()`` addresses.
"""

from __future__ import annotations

from array import array
from typing import Callable

from kql.errors import FaultError
from kql.kallsyms import KallsymsError, check_tokens

__all__ = ["find_kallsyms", "NEEDLE"]

NEEDLE = b"".join(bytes([c, 0]) for c in range(0x30, 0x3A))   # "0\0" "1\0" … "9\0"
_CHUNK = 4 << 20
_MAX_SYMS = 10_000_000


def _align(x: int, a: int) -> int:
    return (x + a - 1) & -a


def _mapped_backwards(read: Callable[[int, int], bytes], start: int, end: int):
    """Yield ``(address, bytes)`` for the readable parts of [start, end), the
    highest first: in large chunks, page by page where a chunk has a hole."""
    pos = end
    while pos > start:
        lo = max(start, (pos - 1) - (pos - 1) % _CHUNK)
        try:
            yield lo, read(lo, pos - lo)
        except FaultError:
            p = pos
            while p > lo:
                q = max(lo, (p - 1) - (p - 1) % 4096)
                try:
                    yield q, read(q, p - q)
                except FaultError:
                    pass
                p = q
        pos = lo


def scan(read: Callable[[int, int], bytes], start: int, end: int, needle: bytes):
    """Yield the addresses of ``needle`` in the readable parts of [start, end),
    the highest first (kallsyms sits at the end of the read-only data, near
    ``end``: searching down reads the least)."""
    keep = len(needle) - 1
    head, head_at = b"", None
    for at, data in _mapped_backwards(read, start, end):
        buf = data + head if at + len(data) == head_at else data
        i = buf.rfind(needle)
        while i >= 0:
            yield at + i
            i = buf.rfind(needle, 0, i + len(needle) - 1)
        head, head_at = data[:keep], at


def find_kallsyms(read: Callable[[int, int], bytes], start: int, end: int,
                  pointer_size: int = 8) -> dict[str, int]:
    """Addresses of the kallsyms tables in [start, end) of kernel virtual
    memory, keyed like VMCOREINFO (``SYMBOL(kallsyms_names)`` …).

    :raises KallsymsError: no candidate passes every check
    """
    tried = 0
    for hit in scan(read, start, end, NEEDLE):
        tried += 1
        try:
            found = _from_needle(read, hit, pointer_size)
        except (FaultError, ValueError, IndexError):
            found = None
        if found is not None:
            return {f"SYMBOL({k})": f"{v:x}" for k, v in found.items()}
    raise KallsymsError(f"no kallsyms tables found in kernel memory {start:#x}-{end:#x} "
                        f"({tried} candidate token tables)")


def _from_needle(read, hit: int, psize: int) -> dict[str, int] | None:
    # -- token table and index --------------------------------------------------
    tail = read(hit, 8192)
    pos = 0
    for _ in range(0x30, 0x100):
        nul = tail.index(b"\0", pos)
        if nul == pos:
            return None          # tokens are never empty
        pos = nul + 1
    table_end = hit + pos
    index = None
    for a in (psize, 4, 2):
        at = _align(table_end, a)
        idx = array("H")
        idx.frombytes(read(at, 512))
        if idx[0] == 0 and list(idx) == sorted(idx) and len(set(idx)) == 256:
            index, index_at = idx, at
            break
    if index is None:
        return None
    table = hit - index[0x30]
    if table >= hit or (table_end - table) != _token_table_len(read, table, index):
        return None
    # -- markers ---------------------------------------------------------------
    markers = _markers_before(read, table, psize)
    if markers is None:
        return None
    marks, markers_at = markers
    m = len(marks)
    # -- names, and the count before them ---------------------------------------
    last = marks[-1]
    # the names end at most psize-1 bytes of padding before the markers; the
    # entries after the last marker are 1..256, each 2..255 bytes long
    lo_start = markers_at - last - 256 * 256 - psize
    hi_start = markers_at - last - 2
    window_lo = max(lo_start - psize, 0) & -psize   # offsets in blob keep their alignment
    blob_start = window_lo
    blob = read(blob_start, markers_at - blob_start)
    names_at = _align(hi_start, psize)
    while names_at > hi_start:
        names_at -= psize
    while names_at >= lo_start:
        cnt_off = names_at - psize - blob_start
        if cnt_off >= 0:
            n = int.from_bytes(blob[cnt_off:cnt_off + 4], "little")
            if 256 * (m - 1) < n <= 256 * m and _names_fit(blob, names_at - blob_start, n,
                                                            marks, markers_at - blob_start, psize):
                return _with_addresses(read, names_at, n, markers_at, table, index_at, psize)
        names_at -= psize
    return None


def _token_table_len(read, table: int, index) -> int:
    """The token table's length, or -1 if ``index`` does not fit it."""
    data = read(table, index[255] + 256)
    if check_tokens(data, index) is not None:
        return -1
    return data.index(b"\0", index[255]) + 1


def _markers_before(read, table: int, psize: int):
    """(markers, address) of the u32 markers ending at ``table`` (after up to
    psize-1 bytes of padding), counted back to the leading 0."""
    for width in (4, 8):
        code = "I" if width == 4 else "Q"
        back = 64 << 10
        at = max(table - back, 0) & -8
        vals = array(code)
        raw = read(at, table - at)
        vals.frombytes(raw[:len(raw) - len(raw) % width])
        i = len(vals) - 1
        if width == 4 and psize == 8 and vals[i] == 0 and vals[i - 1] != 0:
            i -= 1     # padding to the next 8-byte label
        out = []
        while i >= 0 and vals[i] != 0:
            if out and not vals[i] < out[-1]:
                break
            out.append(vals[i])
            i -= 1
        if i < 0 or vals[i] != 0 or len(out) < 1:
            continue
        out.append(0)
        out.reverse()
        deltas = [b - a for a, b in zip(out, out[1:])]
        if all(2 * 256 <= d <= 256 * 256 for d in deltas):
            return out, at + i * width
    return None


def _skip(blob: bytes, pos: int, count: int) -> int:
    """Position after ``count`` names entries starting at ``pos``."""
    for _ in range(count):
        n = blob[pos]
        if n & 0x80:     # since 6.1 a long entry takes two length bytes
            n = (n & 0x7F) | (blob[pos + 1] << 7)
            pos += 2
        else:
            pos += 1
        if n == 0:
            raise ValueError("empty kallsyms entry")
        pos += n
    return pos


def _names_fit(blob: bytes, names: int, n: int, marks: list[int], markers: int,
               psize: int) -> bool:
    """Do ``n`` entries from ``names`` match every marker and end (with
    padding) exactly at the markers?"""
    try:
        m = len(marks)
        end = _skip(blob, names + marks[-1], n - 256 * (m - 1))
        if not (markers - psize < end <= markers) or _align(end, psize) != markers:
            return False
        for k in range(min(m - 1, 4)):
            if _skip(blob, names + marks[k], 256) != names + marks[k + 1]:
                return False
    except (IndexError, ValueError):
        return False
    return True


def _with_addresses(read, names: int, n: int, markers: int, table: int, index: int,
                    psize: int) -> dict[str, int]:
    num = names - psize
    out = {"kallsyms_names": names, "kallsyms_num_syms": num, "kallsyms_markers": markers,
           "kallsyms_token_table": table, "kallsyms_token_index": index}
    # CONFIG_KALLSYMS_BASE_RELATIVE: s32 offsets, then the base; else absolute
    # addresses.  load_kallsyms checks whichever is given against VMCOREINFO.
    def kernel_address(at: int) -> bool:     # the top bit is set
        return bool(int.from_bytes(read(at, psize), "little") >> (8 * psize - 1))

    if kernel_address(num - psize):
        out["kallsyms_relative_base"] = num - psize
        out["kallsyms_offsets"] = num - psize - _align(4 * n, psize)
        return out
    # Since Linux 6.4 (commit 404bad70fcf7 "scripts/kallsyms: change the output
    # order") the offsets and the base follow the token index.
    offsets = _align(index + 512, psize)
    if kernel_address(offsets + _align(4 * n, psize)):
        out["kallsyms_offsets"] = offsets
        out["kallsyms_relative_base"] = offsets + _align(4 * n, psize)
        return out
    out["kallsyms_addresses"] = num - _align(psize * n, psize)
    return out


#: Bump when what locate_kallsyms caches changes.
CACHE_FORMAT = 1
_KEYS = ("names", "num_syms", "markers", "token_table", "token_index", "offsets",
         "relative_base", "addresses")


def locate_kallsyms(read: Callable[[int, int], bytes], vmcoreinfo: dict[str, str],
                    pointer_size: int = 8, cache=None, load=None, warn=None):
    """The kernel's symbols for a dump whose VMCOREINFO has no kallsyms keys:
    the tables found by :func:`find_kallsyms` between ``SYMBOL(_stext)`` and
    ``SYMBOL(init_uts_ns)`` (read-only data lies between text and data),
    decoded and checked by ``load`` (:func:`kql.kallsyms.load_kallsyms`).
    Where they were found is cached by build-id, relative to ``_stext`` (it
    moves with KASLR); a cached place that no longer decodes is searched
    again.

    :raises KallsymsError: not found, or what was found does not decode
    """
    from kql.kallsyms import load_kallsyms
    load = load or load_kallsyms
    stext = vmcoreinfo.get("SYMBOL(_stext)")
    if not stext:
        raise KallsymsError("VMCOREINFO has neither kallsyms symbols nor SYMBOL(_stext) "
                            "to search from")
    start = int(stext, 16)
    end = int(vmcoreinfo.get("SYMBOL(init_uts_ns)", "0"), 16)
    if not start < end <= start + (1 << 30):
        end = start + (256 << 20)
    header = {"format": CACHE_FORMAT, "pointer_size": pointer_size}
    if cache is not None:
        data = cache.load("kallsyms-place", header)
        rel = data.get("at") if isinstance(data, dict) else None
        if isinstance(rel, dict) and rel and all(
                k in _KEYS and isinstance(v, int) for k, v in rel.items()):
            found = {f"SYMBOL(kallsyms_{k})": f"{start + v:x}" for k, v in rel.items()}
            try:
                return load(read, {**vmcoreinfo, **found}, cache=cache,
                            pointer_size=pointer_size, warn=warn)
            except (KallsymsError, FaultError):
                pass
    found = find_kallsyms(read, start, end, pointer_size)
    table = load(read, {**vmcoreinfo, **found}, cache=cache, pointer_size=pointer_size,
                 warn=warn)
    if cache is not None:
        cache.save("kallsyms-place", header, {"at": {
            k[len("SYMBOL(kallsyms_"):-1]: int(v, 16) - start for k, v in found.items()}})
    return table
