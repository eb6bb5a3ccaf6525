"""meminfo and slabs: crash ``kmem -i`` and ``kmem -s``."""

from __future__ import annotations

from functools import cached_property


from kql.errors import DumpError
from kql.helpers.mmstat import meminfo
from kql.helpers.slab import for_each_kmem_cache, kmem_cache_name, slab_cache_info
from kql.tables.base import (ADDRESS, Column, INT32, INT64, STRING, ScanContext,
                            TableSpec)

__all__ = ["TABLES"]


def _meminfo_rows(ctx: ScanContext):
    return meminfo(ctx.kernel)


MEMINFO = TableSpec(
    name="meminfo",
    doc="/proc/meminfo computed from the dump as the kernel's meminfo_proc_show() "
        "computes it (vm_stat counters with per-CPU deltas folded in, totalram, "
        "watermarks, hugetlb pools ...), one row per line, in /proc's order; like "
        "crash `kmem -i`.",
    walk="global vm_zone_stat / vm_node_stat + per-CPU deltas of every node and zone",
    rows=_meminfo_rows,
    examples=("SELECT name, bytes / 1048576 AS mib FROM meminfo",),
    columns=(
        Column("name", STRING, "the /proc/meminfo name (MemTotal, MemFree, Cached, "
               "Slab, ...)", lambda r: r[0]),
        Column("bytes", INT64, "the value in bytes (NULL for the HugePages_* counts)",
               lambda r: r[1] * 1024 if r[2] == "kB" and r[1] is not None else None),
        Column("value", INT64, "the number as /proc/meminfo prints it (kB, or a count)",
               lambda r: r[1]),
        Column("unit", STRING, "'kB', or NULL for a count", lambda r: r[2] or None),
    ),
)


class SlabRow:
    def __init__(self, s):
        self.s = s                  # struct kmem_cache *

    @cached_property
    def info(self):
        return slab_cache_info(self.s)


def _slab_rows(ctx: ScanContext):
    if not ctx.kernel.types.find_type("struct kmem_cache").has_member("cpu_slab"):
        # SLAB (removed in Linux 6.8) and SLOB count objects differently.
        raise DumpError("slabs: this kernel does not use the SLUB allocator "
                        "(struct kmem_cache has no cpu_slab); only SLUB is supported")
    for s in for_each_kmem_cache(ctx.kernel):
        yield SlabRow(s)


SLABS = TableSpec(
    name="slabs",
    doc="One row per slab cache (every kmem_cache on slab_caches, in /proc/slabinfo "
        "order), with /proc/slabinfo's counts computed as SLUB's get_slabinfo() does: "
        "per-node slab and object counters, free objects on the per-node partial lists "
        "(objects in per-CPU slabs count as active); like crash `kmem -s`.",
    object_column="cache",
    walk="slab_caches list; each cache's kmem_cache_node partial lists",
    rows=_slab_rows,
    examples=("SELECT name, objects * size AS bytes FROM slabs ORDER BY bytes DESC LIMIT 10",),
    columns=(
        Column("cache", ADDRESS, "the cache (struct kmem_cache *)", lambda r: r.s.value_(),
               object_type="struct kmem_cache *"),
        Column("name", STRING, "cache name", lambda r: kmem_cache_name(r.s)),
        Column("object_size", INT64, "bytes the caller asked for per object "
               "(s->object_size)", lambda r: r.s.object_size.value_()),
        Column("size", INT64, "bytes per object with metadata and padding "
               "(s->size; /proc/slabinfo's <objsize>)", lambda r: r.s.size.value_()),
        Column("objects", INT64, "allocated object slots (<num_objs>)",
               lambda r: r.info.num_objs),
        Column("active_objects", INT64, "objects in use (<active_objs>: all but the "
               "free ones on node partial lists)", lambda r: r.info.active_objs),
        Column("slabs", INT64, "slabs (<num_slabs>)", lambda r: r.info.num_slabs),
        Column("objects_per_slab", INT32, "<objperslab>",
               lambda r: r.info.objects_per_slab),
        Column("pages_per_slab", INT32, "<pagesperslab>",
               lambda r: r.info.pages_per_slab),
    ),
)

TABLES = (MEMINFO, SLABS)
