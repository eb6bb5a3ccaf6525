"""SLUB slab caches (mm/slub.c, mm/slab.h, mm/slab_common.c).

``for_each_kmem_cache`` walks ``slab_caches`` in /proc/slabinfo order (newest
first); ``slab_cache_info`` computes a cache's line of /proc/slabinfo the way
get_slabinfo() does: objects and slabs from each node's counters, free
objects counted on each node's partial list (objects in per-CPU slabs and
per-CPU partial slabs count as active, as there).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

from kql.helpers.list import _walk, list_for_each_entry
from kql.helpers.mmstat import nr_node_ids
from kql.object import Object

__all__ = ["for_each_kmem_cache", "find_kmem_cache", "slab_cache_info", "SlabInfo",
           "kmem_cache_name", "for_each_kmem_cache_node", "oo_objects", "oo_order"]

#: Kernel globals whose type BTF lacks, for Kernel.var() (see kql.helpers).
KERNEL_VARIABLES = {
    "slab_caches":  "struct list_head",
}

# mm/slub.c OO_SHIFT (a #define): kmem_cache_order_objects.x = order << 16 | objects
OO_SHIFT = 16
OO_MASK = (1 << OO_SHIFT) - 1


@dataclass(frozen=True)
class SlabInfo:
    """One cache's line of /proc/slabinfo."""
    active_objs: int
    num_objs: int
    objects_per_slab: int
    pages_per_slab: int
    active_slabs: int
    num_slabs: int


def for_each_kmem_cache(kernel) -> Iterator[Object]:
    """Every slab cache on ``slab_caches`` (the order of /proc/slabinfo).

    :return: iterator of ``struct kmem_cache *``
    """
    head = kernel.var("slab_caches").address_of_()
    yield from list_for_each_entry("struct kmem_cache", head, "list")


def kmem_cache_name(s: Object) -> str:
    """:param s: ``struct kmem_cache *``"""
    return s.name.string_(64).decode(errors="replace")


def find_kmem_cache(kernel, name: str) -> Object | None:
    """The cache called ``name`` (``kmem_cache *`` or None).

    :return: ``struct kmem_cache *``
    """
    for s in for_each_kmem_cache(kernel):
        if kmem_cache_name(s) == name:
            return s
    return None


def _check_slub(kernel) -> None:
    if not kernel.types.find_type("struct kmem_cache").has_member("cpu_slab"):
        # SLAB (removed in 6.8) and SLOB keep other counters.
        raise LookupError("only the SLUB allocator is supported (struct kmem_cache "
                          "has no cpu_slab)")


def for_each_kmem_cache_node(s: Object) -> Iterator[tuple[int, Object]]:
    """``for_each_kmem_cache_node()``: ``(node id, struct kmem_cache_node *)``
    for every node the cache has memory on.

    :param s: ``struct kmem_cache *``
    """
    kernel = s.prog_
    n = nr_node_ids(kernel)
    base = s.node.address_
    ptrs = kernel.read(base, 8 * n)
    nt = kernel.types.find_type("struct kmem_cache_node")
    for nid in range(n):
        a = int.from_bytes(ptrs[8 * nid:8 * nid + 8], "little")
        if a:
            yield nid, Object(kernel, nt, a)


def oo_objects(x: int) -> int:
    return x & OO_MASK


def oo_order(x: int) -> int:
    return x >> OO_SHIFT


def _slab_layout(kernel) -> tuple:
    lay = kernel.cache.get("slab_layout")
    if lay is None:
        # Since Linux 5.17 (commit d122019bf061 "mm: Split slab into its own
        # type") slabs are struct slab; before, struct page.
        t = kernel.types.find_type("struct slab" if kernel.has_type("struct slab")
                                 else "struct page")
        inuse_m, inuse_off = t.member("inuse")
        obj_m, obj_off = t.member("objects")
        lay = kernel.cache["slab_layout"] = (
            t.offsetof("slab_list"), inuse_off, inuse_m.bit_size or 8 * inuse_m.type.size,
            obj_off, obj_m.bit_size or 8 * obj_m.type.size)
    return lay


def _count_free(kernel, node: Object) -> int:
    """``count_partial(n, count_free)``: free objects on a node's partial list."""
    list_off, inuse_off, inuse_bits, obj_off, obj_bits = _slab_layout(kernel)
    total = 0
    head = node.partial.address_
    base = min(inuse_off, obj_off) & ~7
    for pos in _walk(kernel, head, 0, 1_000_000, "count_partial"):
        slab = pos - list_off
        bits = int.from_bytes(kernel.read(slab + base // 8, 8), "little")
        inuse = (bits >> (inuse_off - base)) & ((1 << inuse_bits) - 1)
        objects = (bits >> (obj_off - base)) & ((1 << obj_bits) - 1)
        total += objects - inuse
    return total


def slab_cache_info(s: Object) -> SlabInfo:
    """The cache's /proc/slabinfo numbers (mm/slub.c get_slabinfo()).

    :param s: ``struct kmem_cache *``
    """
    kernel = s.prog_
    _check_slub(kernel)
    nr_slabs = nr_objs = nr_free = 0
    for _nid, n in for_each_kmem_cache_node(s):
        nr_slabs += n.nr_slabs.counter.value_()
        nr_objs += n.total_objects.counter.value_()
        nr_free += _count_free(kernel, n)
    oo = s.oo.x.value_()
    return SlabInfo(active_objs=nr_objs - nr_free, num_objs=nr_objs,
                    objects_per_slab=oo_objects(oo), pages_per_slab=1 << oo_order(oo),
                    active_slabs=nr_slabs, num_slabs=nr_slabs)
