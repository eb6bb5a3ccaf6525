"""The kernel log: records of the lockless printk ring buffer (Linux 5.10+).

Mirrors kernel/printk/printk_ringbuffer.c (REFERENCE §8).  ``prb`` points at
a ``struct printk_ringbuffer``: a descriptor ring (``descs[]`` with a state
word and the text block's logical positions, and since 5.11 a parallel
``infos[]`` of ``struct printk_info``) and a text data ring.  Records are
read as ``/dev/kmsg`` reads them: one record per message (continuation lines
were already merged into their record by ``prb_reserve_in_last()`` when the
same caller continued it; a continuation that could not be merged stays a
record of its own, flagged ``LOG_CONT``), with the device info
(SUBSYSTEM=/DEVICE=, the former "dict") kept apart from the text.

The rings are read in a few large reads, not object by object.
"""

from __future__ import annotations

import collections
import dataclasses
import struct
from dataclasses import dataclass
from typing import Iterator

from kql.errors import FaultError

__all__ = ["PrintkRecord", "get_printk_records", "for_each_printk_record",
           "format_caller_id", "LOG_NEWLINE", "LOG_CONT"]

#: Kernel globals whose type BTF lacks, for Kernel.var() (see kql.helpers).
KERNEL_VARIABLES = {
    "prb":               "struct printk_ringbuffer *",
    "printk_rb_static":  "struct printk_ringbuffer",
}

# enum printk_info_flags (kernel/printk/printk_ringbuffer.h)
LOG_NEWLINE = 2
LOG_CONT = 8

# prb_desc.state_var: the top two bits are the state, the rest the id
# (DESC_SV_BITS = BITS_PER_LONG, DESC_FLAGS_SHIFT = DESC_SV_BITS - 2).
_DESC_RESERVED = 0
_DESC_COMMITTED = 1
_DESC_FINALIZED = 2
# printk_info.caller_id: bit 31 set = a CPU number, else a task id
# (printk_caller_id()).
_CALLER_CPU = 0x80000000
# A data-less block has bit 0 set in both lpos values (LPOS_DATALESS);
# NO_LPOS (0x3) marks an empty message.
_NO_LPOS = 0x3
# how much longer than its text a block may be (see _get_data())
_TEXT_SLACK = 40
# how far a record's stamp may stray from its neighbours' (see for_each_printk_record())
_TS_SKEW_NS = 60 * 10**9


@dataclass(frozen=True)
class PrintkRecord:
    """One record: ``text`` without the trailing newline (bytes decoded as
    UTF-8 with replacement), ``ts_nsec`` (local_clock() ns since boot; None if damaged),
    ``level`` (0-7), ``facility``, ``flags`` (LOG_* bits), ``caller_id``
    (raw), ``subsystem``/``device`` (dev_printk_info, "" if none)."""

    seq: int
    ts_nsec: int | None
    level: int
    facility: int
    flags: int
    caller_id: int
    text: str
    subsystem: str = ""
    device: str = ""

    @property
    def caller(self) -> str:
        return format_caller_id(self.caller_id)


def format_caller_id(caller_id: int) -> str:
    """``"T<tid>"`` or ``"C<cpu>"`` as printk's caller prefix shows it."""
    if caller_id & _CALLER_CPU:
        return f"C{caller_id & ~_CALLER_CPU}"
    return f"T{caller_id}"


def _read_maybe(kernel, addr: int, size: int) -> tuple[bytes, set[int]]:
    """Bytes at ``addr`` with unreadable pages zeroed, and the set of page
    indexes (relative to ``addr``'s page) that were unreadable."""
    try:
        return kernel.read(addr, size), set()
    except FaultError:
        pass
    out = bytearray(size)
    bad = set()
    pos = 0
    shift = kernel.arch.page_shift
    page = 1 << shift
    while pos < size:
        chunk = min(size - pos, page - ((addr + pos) & (page - 1)))
        try:
            out[pos:pos + chunk] = kernel.read(addr + pos, chunk)
        except FaultError:
            bad.add(((addr + pos) >> shift) - (addr >> shift))
        pos += chunk
    return bytes(out), bad


def _layout(kernel) -> dict:
    cache = kernel.cache
    lay = cache.get("printk_layout")
    if lay is not None:
        return lay
    T = kernel.types.find_type
    rb = T("struct printk_ringbuffer")
    dr = T("struct prb_desc_ring")
    desc = T("struct prb_desc")
    info = T("struct printk_info")
    data = T("struct prb_data_ring")
    lpos = T("struct prb_data_blk_lpos")
    lay = {
        "desc_ring": rb.offsetof("desc_ring"),
        "text_data_ring": rb.offsetof("text_data_ring"),
        "count_bits": dr.offsetof("count_bits"),
        "descs": dr.offsetof("descs"),
        "head_id": dr.offsetof("head_id"),
        "tail_id": dr.offsetof("tail_id"),
        "desc_size": desc.size,
        "state_var": desc.offsetof("state_var"),
        "lpos": desc.offsetof("text_blk_lpos"),
        "lpos_begin": lpos.offsetof("begin"),
        "lpos_next": lpos.offsetof("next"),
        "size_bits": data.offsetof("size_bits"),
        "data": data.offsetof("data"),
        "info_size": info.size,
        "seq": info.offsetof("seq"),
        "ts_nsec": info.offsetof("ts_nsec"),
        "text_len": info.offsetof("text_len"),
        "facility": info.offsetof("facility"),
        "caller_id": info.offsetof("caller_id"),
    }
    # flags:5 and level:3 are bitfields sharing one byte.
    fm, fbit = info.member("flags")
    lm, lbit = info.member("level")
    lay["flags_bit"], lay["flags_bits"] = fbit, fm.bit_size or 8
    lay["level_bit"], lay["level_bits"] = lbit, lm.bit_size or 8
    # Since Linux kernel commit cfe2790b163a ("printk: move printk_info into
    # separate array") (in v5.11), the printk_info records are in
    # desc_ring.infos[]; in v5.10 each prb_desc holds its own ``info``.
    if dr.has_member("infos"):
        lay["infos"] = dr.offsetof("infos")
        lay["info_in_desc"] = None
    else:
        lay["infos"] = None
        lay["info_in_desc"] = desc.offsetof("info")
    if info.has_member("dev_info"):
        dev = T("struct dev_printk_info")
        base = info.offsetof("dev_info")
        sm, _ = dev.member("subsystem")
        dm, _ = dev.member("device")
        lay["subsystem"] = (base + dev.offsetof("subsystem"), sm.type.strip_typedefs().size)
        lay["device"] = (base + dev.offsetof("device"), dm.type.strip_typedefs().size)
    else:
        lay["subsystem"] = lay["device"] = None
    cache["printk_layout"] = lay
    return lay


def _cstr(raw: bytes) -> str:
    nul = raw.find(b"\0")
    return (raw if nul < 0 else raw[:nul]).decode(errors="replace")


def for_each_printk_record(kernel, *, warn=None) -> Iterator[PrintkRecord]:
    """The records of the printk ring buffer in ring order (oldest first);
    records that are reserved or already reused are skipped, as the kernel's
    readers skip them.  ``warn(msg)`` is told about unreadable text.

    Raises :class:`LookupError` if the kernel has no ``prb`` (log_buf kernels
    before 5.10 are not supported).
    """
    sym = kernel.symbols.get("prb")
    if sym is None:
        raise LookupError("no printk ring buffer (prb): kernels before 5.10 are not supported")
    lay = _layout(kernel)
    rb = kernel.read_pointer(sym.address)
    dr = rb + lay["desc_ring"]
    tr = rb + lay["text_data_ring"]
    count_bits = kernel.read_u32(dr + lay["count_bits"])
    count = 1 << count_bits
    descs = kernel.read_pointer(dr + lay["descs"])
    # state_var, ids and lpos are unsigned longs: DESC_SV_BITS = BITS_PER_LONG
    word = kernel.arch.pointer_size
    flags_shift = 8 * word - 2
    id_mask = (1 << flags_shift) - 1
    head_id = kernel.read_ulong(dr + lay["head_id"]) & id_mask
    tail_id = kernel.read_ulong(dr + lay["tail_id"]) & id_mask
    size_bits = kernel.read_u32(tr + lay["size_bits"])
    data_size = 1 << size_bits
    data_addr = kernel.read_pointer(tr + lay["data"])

    dsize = lay["desc_size"]
    isize = lay["info_size"]
    desc_raw, desc_bad = _read_maybe(kernel, descs, count * dsize)
    if lay["infos"] is not None:
        infos = kernel.read_pointer(dr + lay["infos"])
        info_raw, info_bad = _read_maybe(kernel, infos, count * isize)
        info_base, info_stride = 0, isize
    else:
        infos, info_bad = descs, desc_bad
        info_raw, info_base, info_stride = desc_raw, lay["info_in_desc"], dsize
    text, bad_pages = _read_maybe(kernel, data_addr, data_size)
    shift = kernel.arch.page_shift          # the pages _read_maybe counted in

    u64 = struct.Struct("<Q").unpack_from
    ulong = struct.Struct("<Q" if word == 8 else "<I").unpack_from
    u32 = struct.Struct("<I").unpack_from
    u16 = struct.Struct("<H").unpack_from
    sv_off, b_off, n_off = lay["state_var"], lay["lpos"] + lay["lpos_begin"], \
        lay["lpos"] + lay["lpos_next"]
    fbyte, fshift = divmod(lay["flags_bit"], 8)
    fmask = (1 << lay["flags_bits"]) - 1
    lbyte, lshift = divmod(lay["level_bit"], 8)
    lmask = (1 << lay["level_bits"]) - 1
    sub, dev = lay["subsystem"], lay["device"]

    n = (head_id - tail_id) & id_mask
    if n >= count:  # a corrupt head/tail: look at every slot once
        n = count - 1
        tail_id = (head_id - n) & id_mask
    lost = 0  # records whose descriptor or info is on an unreadable page
    missed = 0  # descriptors between tail and head holding another id
    reserved = 0  # records still being written (reserved, not committed)
    found = []
    for k in range(n + 1):
        rid = (tail_id + k) & id_mask
        slot = rid % count
        d = slot * dsize
        i = info_base + slot * info_stride
        if (_on_bad_page(desc_bad, descs, d, dsize, shift)
                or _on_bad_page(info_bad, infos, i - info_base, isize, shift)):
            lost += 1
            continue
        sv = ulong(desc_raw, d + sv_off)[0]
        if sv & id_mask != rid:
            missed += 1
            continue
        state = sv >> flags_shift
        if state not in (_DESC_COMMITTED, _DESC_FINALIZED):
            reserved += state == _DESC_RESERVED
            continue
        seq = u64(info_raw, i + lay["seq"])[0]
        ts = u64(info_raw, i + lay["ts_nsec"])[0]
        text_len = u16(info_raw, i + lay["text_len"])[0]
        facility = info_raw[i + lay["facility"]]
        flags = (info_raw[i + fbyte] >> fshift) & fmask
        level = (info_raw[i + lbyte] >> lshift) & lmask
        caller_id = u32(info_raw, i + lay["caller_id"])[0]
        msg = _get_data(ulong(desc_raw, d + b_off)[0], ulong(desc_raw, d + n_off)[0],
                        data_size, text, bad_pages, text_len, shift, data_addr, word, rid)
        if isinstance(msg, str):
            if warn is not None:
                warn(f"printk record {seq}: text {msg}")
            body = None
        else:
            body = msg.decode(errors="replace")
        found.append((rid, PrintkRecord(
            seq=seq, ts_nsec=ts, level=level, facility=facility, flags=flags,
            caller_id=caller_id, text=body,
            subsystem=_cstr(info_raw[i + sub[0]:i + sub[0] + sub[1]]) if sub else "",
            device=_cstr(info_raw[i + dev[0]:i + dev[0] + dev[1]]) if dev else "")))
    # Each new record takes the next id and the next seq (prb_reserve(),
    # desc_reserve()), so seq - id is the same for every record in the ring;
    # a record off it has a damaged info (prb_read() checks info->seq too).
    offsets = collections.Counter(r.seq - rid for rid, r in found)
    offset = offsets.most_common(1)[0][0] if offsets else 0
    good = [r for rid, r in found if r.seq - rid == offset]
    damaged = len(found) - len(good)
    # Records are stamped (local_clock()) just before they are reserved, so
    # consecutive stamps are in order but for the CPUs' clock skew and a
    # stalled vCPU: a stamp off both neighbours' the same way by more than a
    # minute is damage; it becomes NULL.
    ts = [r.ts_nsec for r in good]
    for j in range(1, len(good) - 1):
        lo, hi = sorted((ts[j - 1], ts[j + 1]))
        if not lo - _TS_SKEW_NS <= ts[j] <= hi + _TS_SKEW_NS:
            if warn is not None:
                warn(f"printk record {good[j].seq}: timestamp {ts[j]} ns out of order with "
                     f"its neighbours' ({ts[j - 1]}, {ts[j + 1]}): damaged, NULL")
            good[j] = dataclasses.replace(good[j], ts_nsec=None)
    yield from good
    if warn is not None:
        for n, why in ((lost, "descriptor or info unreadable"),
                       (damaged, "info->seq out of sequence with the descriptor ids (damaged)"),
                       (missed, "descriptor between tail and head holds another id "
                                "(damaged or overwritten)"),
                       (reserved, "still being written (reserved, not committed)")):
            if n:
                warn(f"{n} printk record{'s' if n != 1 else ''} dropped: {why}")


def _on_bad_page(bad: set[int], base: int, off: int, size: int, shift: int) -> bool:
    """Whether bytes [off, off+size) of a _read_maybe(base, ...) read touch an
    unreadable page (pages of ``1 << shift`` bytes)."""
    if not bad:
        return False
    skew = base & ((1 << shift) - 1)
    first = (skew + off) >> shift
    last = (skew + off + size - 1) >> shift
    return any(p in bad for p in range(first, last + 1))


def _get_data(begin: int, nxt: int, size: int, text: bytes, bad_pages: set[int],
              text_len: int, shift: int, base: int = 0, word: int = 8,
              rid: int | None = None) -> bytes | str:
    """The text of one block (kernel get_data(), copy_data()), or why there is
    none: ``"unreadable"`` (its pages, ``bad_pages``: pages of ``1 << shift``
    bytes of the ring at ``base``, are not in the dump; or its text was lost)
    or ``"block damaged (...)"`` (the checks the kernel's readers make, and the
    block's id word against the descriptor's id ``rid``)."""
    if begin & 1 and nxt & 1:
        # Data-less block: an empty message (NO_LPOS) or lost text.
        return b"" if begin == _NO_LPOS and nxt == _NO_LPOS else "unreadable"
    # a valid data block is aligned to its id word (get_data())
    if begin % word or nxt % word:
        return f"block damaged (lpos {begin:#x}..{nxt:#x} not aligned)"
    wraps = size.bit_length() - 1

    def data_wraps(lpos: int) -> int:
        return lpos >> wraps

    if data_wraps(begin) == data_wraps(nxt) and begin < nxt:
        start = begin & (size - 1)
        length = nxt - begin
    elif data_wraps(begin + size) == data_wraps(nxt):
        # Wrapping block: the text starts again at the beginning of the ring.
        start = 0
        length = nxt & (size - 1)
    else:
        return f"block damaged (lpos {begin:#x}..{nxt:#x} not one block)"
    # The block starts with its id word (unsigned long); text_len may be
    # shorter than the rest but never longer (copy_data()), and shorter only
    # by what vprintk_store() reserved and printk_sprint() then dropped: the
    # alignment padding, the NUL, a trailing newline and KERN_* prefixes
    # (at most 11 bytes on every fixture; _TEXT_SLACK allows more).
    if length < word or not length - word - _TEXT_SLACK <= text_len <= length - word:
        return f"block damaged (text_len {text_len} in a block of {length} bytes)"
    skew = base & ((1 << shift) - 1)
    if bad_pages and any(p in bad_pages for p in
                         range((skew + start) >> shift, ((skew + start + word + text_len) >> shift) + 1)):
        return "unreadable"
    if rid is not None:
        blk_id = int.from_bytes(text[start:start + word], "little") & ((1 << (8 * word - 2)) - 1)
        if blk_id != rid:
            return f"block damaged (its id {blk_id:#x} is not the descriptor's {rid:#x})"
    start += word
    return text[start:start + text_len]


def get_printk_records(kernel) -> list[PrintkRecord]:
    """All readable records sorted by sequence number (cached per dump)."""
    cache = kernel.cache
    recs = cache.get("printk_records")
    if recs is None:
        warn = getattr(kernel, "warn", None)
        recs = sorted(for_each_printk_record(kernel, warn=warn), key=lambda r: r.seq)
        cache["printk_records"] = recs
    return recs
