"""Maple trees (include/linux/maple_tree.h, lib/maple_tree.c; Linux 6.1+).

An encoded node pointer ("enode") has the node type in bits 3-6 and the node
at ``enode & ~0xff``; ``ma_root`` also carries the xarray node tag (low bits
``10``), child slots of internal nodes do not.  Range nodes hold
``pivot[]`` (inclusive upper bounds) and ``slot[]``; slot ``i`` covers
``(pivot[i-1], pivot[i]]`` and the last slot runs to the node's maximum.  A
pivot of 0 after the first slot marks the end of the node's data.
"""

from __future__ import annotations

from typing import Iterator

from kql.errors import FaultError
from kql.helpers.list import _ptr, walk_warn
from kql.object import Object
from kql.types import Type, pointer_to

__all__ = ["mt_for_each", "mtree_load", "mt_for_each_entry"]

_MAPLE_NODE_MASK = 0xFF
_TYPE_SHIFT, _TYPE_MASK = 3, 0xF


def _layout(kernel) -> dict:
    """Offsets and enum values of the maple tree types, read once per kernel."""
    if "maple_layout" not in kernel.cache:
        kernel.cache["maple_layout"] = _read_layout(kernel.types, kernel.arch.pointer_size)
    return kernel.cache["maple_layout"]


def _read_layout(types, pointer_size: int) -> dict:
    enum = types.find_type("enum maple_type")
    lay = {"dense": enum.enum_value("maple_dense"),
           "leaf_64": enum.enum_value("maple_leaf_64"),
           "range_64": enum.enum_value("maple_range_64"),
           "arange_64": enum.enum_value("maple_arange_64"),
           "root_off": types.find_type("struct maple_tree").offsetof("ma_root"),
           "max": (1 << 8 * pointer_size) - 1}                   # ULONG_MAX
    for key, name in (("range", "struct maple_range_64"), ("arange", "struct maple_arange_64")):
        t = types.find_type(name)
        piv = t.member("pivot")[0].type.strip_typedefs()
        slot = t.member("slot")[0].type.strip_typedefs()
        lay[key] = (t.offsetof("pivot"), piv.length, t.offsetof("slot"), slot.length)
    node = types.find_type("struct maple_node")
    slot = node.member("slot")[0].type.strip_typedefs()
    lay["dense_slots"] = (node.offsetof("slot"), slot.length)
    return lay


def _is_node(entry: int) -> bool:
    return (entry & 3) == 2 and entry > 4096


def _walk(kernel, enode: int, lo: int, hi: int, seen: set, depth: int, what: str
          ) -> Iterator[tuple[int, int, int]]:
    lay = _layout(kernel)
    node = enode & ~_MAPLE_NODE_MASK
    ntype = (enode >> _TYPE_SHIFT) & _TYPE_MASK
    if node in seen:
        walk_warn(kernel, f"{what}: cycle at maple node {node:#x}")
        return
    if depth > 32:
        walk_warn(kernel, f"{what}: maple tree deeper than 32 levels at {node:#x}")
        return
    seen.add(node)
    w = kernel.arch.pointer_size      # pivots and slots are unsigned longs and pointers
    if ntype == lay["dense"]:
        off, n = lay["dense_slots"]
        raw = kernel.read(node + off, w * n)
        for i in range(n):
            e = int.from_bytes(raw[w * i:w * (i + 1)], "little")
            if e and lo + i <= hi and not (e & 3) == 2:
                yield lo + i, lo + i, e
        return
    if ntype in (lay["leaf_64"], lay["range_64"]):
        piv_off, npiv, slot_off, nslots = lay["range"]
    elif ntype == lay["arange_64"]:
        piv_off, npiv, slot_off, nslots = lay["arange"]
    else:
        walk_warn(kernel, f"{what}: maple node {node:#x} has unknown type {ntype}")
        return
    leaf = ntype == lay["leaf_64"]
    pivots = kernel.read(node + piv_off, w * npiv)
    slots = kernel.read(node + slot_off, w * nslots)
    start = lo
    for i in range(nslots):
        pivot = int.from_bytes(pivots[w * i:w * (i + 1)], "little") if i < npiv else hi
        if i and not pivot:
            break
        if pivot > hi or pivot < start:
            pivot = hi if i >= npiv else pivot
            if pivot < start:
                break
        e = int.from_bytes(slots[w * i:w * (i + 1)], "little")
        if e:
            if leaf:
                if (e & 3) != 2:        # skip XA_ZERO_ENTRY and other internal entries
                    yield start, pivot, e
            elif e > 4096:
                # child slots hold bare enodes (only the root carries the xa "node" tag)
                yield from _walk(kernel, e, start, pivot, seen, depth + 1, what)
        if pivot >= hi:
            break
        start = pivot + 1


def mt_for_each(mt: Object) -> Iterator[tuple[int, int, int]]:
    """Entries of a maple tree in index order.

    :param mt: ``struct maple_tree *``
    :return: iterator of ``(first index, last index, entry as int)``
    """
    kernel = mt.prog_
    lay = _layout(kernel)
    base = mt.value_() if mt._t.kind == "pointer" else mt.address_
    what = "mt_for_each"
    root = kernel.read_pointer(base + lay["root_off"])   # unreadable tree: FaultError
    try:
        if _is_node(root):
            yield from _walk(kernel, root, 0, lay["max"], set(), 0, what)
        elif root and (root & 3) != 2:
            yield 0, 0, root
    except FaultError as e:
        walk_warn(kernel, f"{what}: unreadable maple node: {e}")


def mt_for_each_entry(mt: Object, type: "Type | str") -> Iterator[tuple[int, int, Object]]:
    """Entries of a maple tree as typed pointers.

    :param mt: ``struct maple_tree *``
    :param type: entry type, e.g. ``"struct vm_area_struct"``
    :return: iterator of ``(first, last, type *)``
    """
    kernel = mt.prog_
    t = kernel.types.find_type(type) if isinstance(type, str) else type
    pt = pointer_to(t)
    for first, last, e in mt_for_each(mt):
        yield first, last, _ptr(kernel, pt, e)


def mtree_load(mt: Object, index: int) -> int:
    """The entry covering ``index`` (0 if none), as an int.

    :param mt: ``struct maple_tree *``
    """
    for first, last, e in mt_for_each(mt):
        if first <= index <= last:
            return e
        if first > index:
            break
    return 0
