"""XArrays and IDRs (include/linux/xarray.h, lib/xarray.c, lib/idr.c).

An xarray entry with low bits ``10`` above 4096 is an internal node pointer
(node = entry - 2); other internal entries (siblings, retry, zero) are
skipped.  Walks are bounded and cycle-safe.
"""

from __future__ import annotations

from typing import Iterator

from kql.errors import FaultError
from kql.helpers.list import _ptr, walk_warn
from kql.object import Object
from kql.types import Type, pointer_to

__all__ = ["xa_load", "xa_for_each", "xa_is_node", "xa_is_value", "xa_to_value",
           "idr_find", "idr_for_each", "idr_for_each_entry"]

_MAX = (1 << 64) - 1


def xa_is_node(entry: int) -> bool:
    return (entry & 3) == 2 and entry > 4096


def xa_is_internal(entry: int) -> bool:
    return (entry & 3) == 2


def xa_is_value(entry: int) -> bool:
    return bool(entry & 1)


def xa_to_value(entry: int) -> int:
    return entry >> 1


def _layout(kernel):
    lay = kernel.cache.get("xa_node_layout")
    if lay is None:
        t = kernel.types.find_type("struct xa_node")
        slots = t.member("slots")[0].type.strip_typedefs()
        lay = kernel.cache["xa_node_layout"] = (
            t.offsetof("shift"), t.offsetof("slots"), slots.length,
            kernel.types.find_type("struct xarray").offsetof("xa_head"))
    return lay


def _xa_head(xa: Object) -> int:
    kernel = xa.prog_
    _, _, _, head_off = _layout(kernel)
    base = xa.value_() if xa._t.kind == "pointer" else xa.address_
    return kernel.read_pointer(base + head_off)


def _xa_load_raw(kernel, head: int, index: int) -> int:
    shift_off, slots_off, nslots, _ = _layout(kernel)
    chunk_shift = nslots.bit_length() - 1
    entry = head
    if not xa_is_node(entry):
        return entry if index == 0 and not xa_is_internal(entry) else 0
    node = entry - 2
    if (index >> kernel.read_u8(node + shift_off)) >> chunk_shift:
        return 0               # beyond what the root node covers
    for _depth in range(16):   # 64-bit indexes need at most 11 levels
        node = entry - 2
        shift = kernel.read_u8(node + shift_off)
        offset = (index >> shift) & (nslots - 1)
        psize = kernel.arch.pointer_size
        entry = kernel.read_pointer(node + slots_off + psize * offset)
        if xa_is_internal(entry) and not xa_is_node(entry) and entry < ((nslots - 1) << 2) | 2:
            # sibling entry: the canonical slot holds the value
            entry = kernel.read_pointer(node + slots_off + psize * (entry >> 2))
        if not xa_is_node(entry) or shift == 0:
            return 0 if xa_is_internal(entry) else entry
    return 0


def xa_load(xa: Object, index: int) -> int:
    """The entry at ``index`` (0 if none), as an int.

    :param xa: ``struct xarray *``
    """
    return _xa_load_raw(xa.prog_, _xa_head(xa), index)


def _walk(kernel, head: int, what: str) -> Iterator[tuple[int, int]]:
    if not xa_is_node(head):
        if head and not xa_is_internal(head):
            yield 0, head
        return
    try:
        yield from _walk_node(kernel, head - 2, 0, set(), what, 0)
    except FaultError as e:
        walk_warn(kernel, f"{what}: unreadable xa_node: {e}")


def _walk_node(kernel, node: int, base: int, seen: set, what: str, depth: int
               ) -> Iterator[tuple[int, int]]:
    shift_off, slots_off, nslots, _ = _layout(kernel)
    seen.add(node)
    shift = kernel.read_u8(node + shift_off)
    psize = kernel.arch.pointer_size
    raw = kernel.read(node + slots_off, psize * nslots)
    for i in range(nslots):
        e = int.from_bytes(raw[psize * i:psize * (i + 1)], "little")
        if not e:
            continue
        idx = base + (i << shift)
        if xa_is_node(e):
            child = e - 2
            if not shift or depth > 16:
                walk_warn(kernel, f"{what}: xa_node {node:#x} too deep")
            elif child in seen:
                walk_warn(kernel, f"{what}: cycle at xa_node {child:#x}")
            else:
                try:
                    yield from _walk_node(kernel, child, idx, seen, what, depth + 1)
                except FaultError as e:
                    # one unreadable node costs its own subtree, not its siblings
                    walk_warn(kernel, f"{what}: unreadable xa_node (indexes from {idx}): {e}")
        elif not xa_is_internal(e):
            yield idx, e       # (sibling / retry / zero entries are internal: skipped)


def xa_for_each(xa: Object) -> Iterator[tuple[int, int]]:
    """Present entries in index order.

    :param xa: ``struct xarray *``
    :return: iterator of ``(index, entry)`` with the entry as an int (a pointer,
        or a value entry: test with :func:`xa_is_value`)
    """
    return _walk(xa.prog_, _xa_head(xa), "xa_for_each")


# -- IDR --------------------------------------------------------------------------------

def _idr_parts(idr: Object) -> tuple[int, int]:
    """(address of idr_rt, idr_base)."""
    kernel = idr.prog_
    lay = kernel.cache.get("idr_layout")
    if lay is None:
        t = kernel.types.find_type("struct idr")
        # Since Linux 4.16 (commit 6ce711f27500 "idr: Make 1-based IDRs more
        # efficient") an IDR may number from idr_base.
        base_off = t.offsetof("idr_base") if t.has_member("idr_base") else None
        lay = kernel.cache["idr_layout"] = (t.offsetof("idr_rt"), base_off)
    rt_off, base_off = lay
    addr = idr.value_() if idr._t.kind == "pointer" else idr.address_
    # idr_base arrived in Linux 4.16 (commit 6ce711f27500 "idr: Make 1-based IDRs more efficient")
    base = kernel.read_u32(addr + base_off) if base_off is not None else 0
    return addr + rt_off, base


def idr_find(idr: Object, id: int) -> int:
    """The pointer stored under ``id`` (0 if none), as an int.

    :param idr: ``struct idr *``
    """
    kernel = idr.prog_
    rt, base = _idr_parts(idr)
    if id < base:
        return 0
    _, _, _, head_off = _layout(kernel)
    return _xa_load_raw(kernel, kernel.read_pointer(rt + head_off), id - base)


def idr_for_each(idr: Object) -> Iterator[tuple[int, int]]:
    """All entries of an IDR in id order.

    :param idr: ``struct idr *``
    :return: iterator of ``(id, pointer as int)``
    """
    kernel = idr.prog_
    rt, base = _idr_parts(idr)
    _, _, _, head_off = _layout(kernel)
    for index, entry in _walk(kernel, kernel.read_pointer(rt + head_off), "idr_for_each"):
        yield index + base, entry


def idr_for_each_entry(idr: Object, type: "Type | str") -> Iterator[tuple[int, Object]]:
    """All entries of an IDR as typed pointers.

    :param idr: ``struct idr *``
    :param type: entry type, e.g. ``"struct pid"``
    :return: iterator of ``(id, type *)``
    """
    kernel = idr.prog_
    t = kernel.types.find_type(type) if isinstance(type, str) else type
    pt = pointer_to(t)
    for i, entry in idr_for_each(idr):
        yield i, _ptr(kernel, pt, entry)
