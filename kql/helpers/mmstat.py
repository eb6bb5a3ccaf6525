"""Memory counters: the vm_stat families and /proc/meminfo as the kernel
computes it (include/linux/vmstat.h, mm/vmstat.c, fs/proc/meminfo.c,
mm/page_alloc.c si_mem_available(), mm/util.c, mm/hugetlb.c,
arch/x86/mm/pat/set_memory.c arch_report_meminfo()).

The kernel keeps each counter as a global ``atomic_long_t`` plus per-CPU
``s8`` deltas that vmstat_update() folds in about once a second; the
``global_*_page_state`` helpers here add the deltas (``exact=True``, the
default) so the value is the one the kernel would see after folding.

Item names are the kernel's enumerators (``"NR_FREE_PAGES"``), looked up in
its own ``enum zone_stat_item`` / ``enum node_stat_item``, so counters that
moved between kernel versions are found by name.
"""

from __future__ import annotations

from kql.errors import FaultError
from kql.helpers.list import list_for_each_entry, walk_warn
from kql.helpers.mm import page_shift
from kql.helpers.percpu import percpu_counter_sum
from kql.object import Object

__all__ = ["enum_items", "global_zone_page_state", "global_node_page_state",
           "totalram_pages", "totalreserve_pages", "nr_blockdev_pages",
           "total_swapcache_pages", "si_mem_available", "vm_commit_limit",
           "vm_memory_committed", "hugetlb_total_pages",
           "for_each_online_pgdat", "for_each_zone", "meminfo", "nr_node_ids"]

#: Kernel globals whose type BTF lacks, for Kernel.var() (see kql.helpers).
KERNEL_VARIABLES = {
    "totalram_pages":    "atomic_long_t",
    "nr_node_ids":       "unsigned int",
    "node_data":         "struct pglist_data *[{nr_node_ids}]",
    "contig_page_data":  "struct pglist_data",
    "vm_committed_as":   "struct percpu_counter",
}


def enum_items(kernel, enum: str) -> dict[str, int]:
    """``{enumerator: value}`` of a kernel enum such as ``"enum node_stat_item"``
    ({} if the kernel has no such enum)."""
    cache = kernel.cache.setdefault("mmstat_enums", {})
    items = cache.get(enum)
    if items is None:
        try:
            items = dict(kernel.types.find_type(enum).strip_typedefs().enumerators or ())
        except LookupError:
            items = {}
        cache[enum] = items
    return items


def _ulong(kernel, name: str, default: int | None = 0) -> int | None:
    sym = kernel.symbols.get(name)
    if sym is None:
        return default
    return kernel.read_ulong(sym.address)


def _slong(kernel, name: str) -> int:
    sym = kernel.symbols.get(name)
    return kernel.read_slong(sym.address) if sym is not None else 0


def nr_node_ids(kernel) -> int:
    """``nr_node_ids`` (1 on kernels without NUMA)."""
    n = kernel.cache.get("mmstat_nr_node_ids")
    if n is None:
        sym = kernel.symbols.get("nr_node_ids")
        try:
            n = kernel.read_u32(sym.address) if sym is not None else 1
        except FaultError:
            n = 1
        n = n if 0 < n <= 1 << 10 else 1
        kernel.cache["mmstat_nr_node_ids"] = n
    return n


def for_each_online_pgdat(kernel):
    """Every node's ``pg_data_t`` (``node_data[]`` on NUMA kernels, else
    ``contig_page_data``).

    :return: iterator of ``struct pglist_data *``
    """
    sym = kernel.symbols.get("node_data")
    pgt = kernel.types.find_type("struct pglist_data")
    if sym is None:
        yield kernel.var("contig_page_data", pgt).address_of_()
        return
    nodes = kernel.var("node_data", f"struct pglist_data *[{nr_node_ids(kernel)}]")
    for p in nodes:
        if p.value_():
            yield p.read_()


def for_each_zone(kernel):
    """Every zone of every node, populated or not (``for_each_zone``).

    :return: iterator of ``struct zone *``
    """
    for pgdat in for_each_online_pgdat(kernel):
        for z in pgdat.node_zones:
            yield z.address_of_()


def _global_state(kernel, kind: str, item: str, exact: bool) -> int:
    """kind 'zone' or 'node'."""
    enum = "enum zone_stat_item" if kind == "zone" else "enum node_stat_item"
    idx = enum_items(kernel, enum).get(item)
    if idx is None:
        raise LookupError(f"this kernel has no {kind} counter {item}")
    sym = kernel.symbols.get(f"vm_{kind}_stat")
    if sym is None:
        raise LookupError(f"no symbol vm_{kind}_stat")
    value = kernel.read_slong(sym.address + kernel.arch.pointer_size * idx)
    if exact:
        value += _deltas(kernel, kind)[idx]
    # include/linux/vmstat.h: CONFIG_SMP clamps transient negatives to 0
    return max(value, 0)


def _deltas(kernel, kind: str) -> list[int]:
    """Sum over every node/zone and possible CPU of the per-CPU ``s8`` deltas
    (``vm_node_stat_diff`` / ``vm_stat_diff``), per item (cached)."""
    key = f"mmstat_{kind}_deltas"
    out = kernel.cache.get(key)
    if out is not None:
        return out
    if kind == "node":
        pct = kernel.types.find_type("struct per_cpu_nodestat")
        member, field = "per_cpu_nodestats", "vm_node_stat_diff"
        owners = list(for_each_online_pgdat(kernel))
    else:
        # Since Linux 5.14 (commit 28f836b6777b "mm/page_alloc: split per cpu
        # page lists and zone stats") the zone deltas have a per-CPU struct of
        # their own; before, they sit in zone->pageset.
        try:
            pct = kernel.types.find_type("struct per_cpu_zonestat")
            member = "per_cpu_zonestats"
        except LookupError:
            pct = kernel.types.find_type("struct per_cpu_pageset")
            member = "pageset"
        field = "vm_stat_diff"
        owners = list(for_each_zone(kernel))
    m, off = pct.member(field)
    n = m.type.strip_typedefs().length
    out = [0] * n
    cpus = kernel.possible_cpus()
    for owner in owners:
        try:
            base = owner.member_(member).value_()
        except FaultError as e:
            walk_warn(kernel, f"vm {kind} stat deltas: {e}")
            continue
        if not base:
            continue
        for cpu in cpus:
            try:
                raw = kernel.read(kernel.per_cpu_address(base, cpu) + off // 8, n)
            except FaultError as e:
                walk_warn(kernel, f"vm {kind} stat deltas of CPU {cpu}: {e}")
                continue
            for i, b in enumerate(raw):
                out[i] += b - 256 if b > 127 else b
    kernel.cache[key] = out
    return out


def global_zone_page_state(kernel, item: str, *, exact: bool = True) -> int:
    """``global_zone_page_state(item)`` in pages (per-CPU deltas added when
    ``exact``).  Raises LookupError for a counter this kernel does not have."""
    return _global_state(kernel, "zone", item, exact)


def global_node_page_state(kernel, item: str, *, exact: bool = True) -> int:
    """``global_node_page_state(item)`` (pages; kB for NR_KERNEL_STACK_KB;
    the NR_SLAB_*_B counters are kept in pages too)."""
    return _global_state(kernel, "node", item, exact)


def _node(kernel, item: str, default: int = 0) -> int:
    try:
        return global_node_page_state(kernel, item)
    except LookupError:
        return default


def _zone(kernel, item: str, default: int = 0) -> int:
    try:
        return global_zone_page_state(kernel, item)
    except LookupError:
        return default


def totalram_pages(kernel) -> int:
    """``totalram_pages()``: pages managed by the buddy allocator."""
    # Since Linux 5.0 (commit ca79b0c211af "mm: convert totalram_pages and
    # totalhigh_pages variables to atomic") the variable is _totalram_pages.
    for name in ("_totalram_pages", "totalram_pages"):
        sym = kernel.symbols.get(name)
        if sym is not None:
            return kernel.read_ulong(sym.address)
    raise LookupError("no totalram_pages symbol")


def totalhigh_pages(kernel) -> int:
    """``totalhigh_pages()``: highmem pages (32-bit CONFIG_HIGHMEM; else 0)."""
    sym = kernel.symbols.get("_totalhigh_pages")
    return kernel.read_ulong(sym.address) if sym is not None else 0


def nr_free_highpages(kernel) -> int:
    """``nr_free_highpages()``: free pages of the populated highmem zones."""
    zone_t = kernel.types.find_type("struct zone")
    highmem = enum_items(kernel, "enum zone_type").get("ZONE_HIGHMEM")
    idx = enum_items(kernel, "enum zone_stat_item")["NR_FREE_PAGES"]
    total = 0
    for pgdat in for_each_online_pgdat(kernel):
        zones = pgdat.node_zones
        for i in range(len(zones)):
            z = zones[i]
            if i == highmem and z.present_pages.value_():
                total += max(z.vm_stat[idx].counter.value_(), 0)
    return total


def totalreserve_pages(kernel) -> int:
    return _ulong(kernel, "totalreserve_pages")


def nr_blockdev_pages(kernel) -> int:
    """``nr_blockdev_pages()``: page-cache pages of block devices (Buffers)."""
    sb = _ulong(kernel, "blockdev_superblock", 0)
    if not sb:
        return 0
    sbo = Object(kernel, "struct super_block", sb)
    total = 0
    for inode in list_for_each_entry("struct inode", sbo.s_inodes.address_of_(), "i_sb_list"):
        try:
            total += inode.i_mapping.nrpages.value_()
        except FaultError as e:
            walk_warn(kernel, f"nr_blockdev_pages: inode {inode.value_():#x}: {e}")
    return total


def total_swapcache_pages(kernel) -> int:
    """``total_swapcache_pages()``."""
    # Since Linux commit b6038942480e ("mm: memcg: add swapcache stat for memcg
    # v2") it is the NR_SWAPCACHE node counter; older kernels sum their swap
    # address spaces, which kql does not do.
    if "NR_SWAPCACHE" in enum_items(kernel, "enum node_stat_item"):
        return global_node_page_state(kernel, "NR_SWAPCACHE")
    # before it: every swap file's address spaces, swapper_spaces[type][0..n)
    spaces, counts = kernel.symbols.get("swapper_spaces"), kernel.symbols.get("nr_swapper_spaces")
    if spaces is None or counts is None:
        raise LookupError("total_swapcache_pages: this kernel has no NR_SWAPCACHE counter "
                          "nor swapper_spaces")
    asp = kernel.types.find_type("struct address_space")
    total = 0
    nr = kernel.read_u32(kernel.symbols.lookup("nr_swapfiles").address)
    for i in range(min(nr, 64)):
        base = kernel.read_pointer(spaces.address + kernel.arch.pointer_size * i)
        n = kernel.read_u32(counts.address + 4 * i)
        for j in range(min(n, 1 << 20) if base else 0):
            total += Object(kernel, asp, base + j * asp.size).nrpages.value_()
    return total


def _low_wmark_total(kernel) -> int:
    zt = kernel.types.find_type("struct zone")
    # Since Linux 5.0 (commit a921444382b4 "mm: move zone watermark accesses
    # behind an accessor") zone->watermark is zone->_watermark.
    wm_off = zt.offsetof("_watermark") if zt.has_member("_watermark") else zt.offsetof("watermark")
    low = enum_items(kernel, "enum zone_watermarks").get("WMARK_LOW", 1)
    boost_off = zt.offsetof("watermark_boost") if zt.has_member("watermark_boost") else None
    total = 0
    for z in for_each_zone(kernel):
        a = z.value_()
        total += kernel.read_ulong(a + wm_off + kernel.arch.pointer_size * low)
        if boost_off is not None:
            total += kernel.read_ulong(a + boost_off)
    return total


def si_mem_available(kernel) -> int:
    """``si_mem_available()`` in pages (MemAvailable)."""
    wmark_low = _low_wmark_total(kernel)
    available = global_zone_page_state(kernel, "NR_FREE_PAGES") - totalreserve_pages(kernel)
    pagecache = _node(kernel, "NR_ACTIVE_FILE") + _node(kernel, "NR_INACTIVE_FILE")
    pagecache -= min(pagecache // 2, wmark_low)
    available += pagecache
    reclaimable = _node(kernel, "NR_SLAB_RECLAIMABLE_B") + _node(kernel, "NR_KERNEL_MISC_RECLAIMABLE")
    available += reclaimable - min(reclaimable // 2, wmark_low)
    return max(available, 0)


def _hstates(kernel):
    sym = kernel.symbols.get("hstates")
    if sym is None:
        return []
    n = kernel.read_s32(kernel.symbols.lookup("hugetlb_max_hstate").address)
    ht = kernel.types.find_type("struct hstate")
    return [Object(kernel, ht, sym.address + i * ht.size) for i in range(max(0, min(n, 16)))]


def hugetlb_total_pages(kernel) -> int:
    """``hugetlb_total_pages()``: base pages held by huge page pools."""
    return sum(h.nr_huge_pages.value_() << h.order.value_() for h in _hstates(kernel))


def vm_commit_limit(kernel) -> int:
    """``vm_commit_limit()`` in pages (CommitLimit)."""
    kbytes = _ulong(kernel, "sysctl_overcommit_kbytes")
    if kbytes:
        allowed = kbytes >> (page_shift(kernel) - 10)
    else:
        ratio = kernel.read_s32(kernel.symbols.lookup("sysctl_overcommit_ratio").address)
        allowed = (totalram_pages(kernel) - hugetlb_total_pages(kernel)) * ratio // 100
    return allowed + _slong(kernel, "total_swap_pages")


def vm_memory_committed(kernel) -> int:
    """``vm_memory_committed()``: ``percpu_counter_sum_positive(&vm_committed_as)``
    in pages (Committed_AS)."""
    c = kernel.var("vm_committed_as")
    return max(percpu_counter_sum(c.address_of_()), 0)


def _vmalloc_total_kb(kernel) -> int | None:
    # VMALLOC_END - VMALLOC_START in kB, as /proc/meminfo's VmallocTotal
    size = kernel.arch.vmalloc_size(kernel.pgtable_levels, kernel)
    return None if size is None else (size - 1) >> 10


def _vmalloc_used_pages(kernel) -> int:
    # mm/vmalloc.c vmalloc_nr_pages(): atomic_long_t nr_vmalloc_pages (5.13+)
    sym = kernel.symbols.get("nr_vmalloc_pages")
    if sym is None:
        raise LookupError("no nr_vmalloc_pages (kernel before 5.13)")
    return kernel.read_slong(sym.address)


def _percpu_pages(kernel) -> int:
    # mm/percpu.c pcpu_nr_pages(): pcpu_nr_populated * pcpu_nr_units
    return _ulong(kernel, "pcpu_nr_populated") * kernel.read_s32(
        kernel.symbols.lookup("pcpu_nr_units").address)


def _direct_map(kernel) -> list[tuple[str, int, str]]:
    sym = kernel.symbols.get("direct_pages_count")
    if sym is None:
        return []
    lv = enum_items(kernel, "enum pg_level")
    w = kernel.arch.pointer_size
    counts = [kernel.read_ulong(sym.address + w * i) for i in range(lv.get("PG_LEVEL_1G", 3) + 1)]
    out = [("DirectMap4k", counts[lv.get("PG_LEVEL_4K", 1)] << 2, "kB"),
           ("DirectMap2M", counts[lv.get("PG_LEVEL_2M", 2)] << 11, "kB")]
    gb = kernel.symbols.get("direct_gbpages")
    if gb is not None and kernel.read_s32(gb.address):
        out.append(("DirectMap1G", counts[lv.get("PG_LEVEL_1G", 3)] << 20, "kB"))
    return out


def meminfo(kernel) -> list[tuple[str, int | None, str]]:
    """/proc/meminfo as ``[(name, value, unit)]`` in the kernel's order, unit
    ``"kB"`` or ``""`` (the HugePages_* counts), computed as
    meminfo_proc_show() does with per-CPU counter deltas folded in.  Lines that
    depend on kernel configuration appear when the dump shows the option is
    built in (its symbol or enumerator exists).  A value that cannot be
    computed (unreadable memory, a counter this kernel lacks) is None, with a
    warning on the kernel."""
    sh = page_shift(kernel) - 10
    out: list[tuple[str, int | None, str]] = []

    def get(what, fn, *args):
        try:
            return fn(*args)
        except (FaultError, LookupError) as e:
            walk_warn(kernel, f"meminfo: {what}: {e}")
            return None

    def add(*xs):
        return None if any(x is None for x in xs) else sum(xs)

    def kb(name, pages):
        out.append((name, None if pages is None else pages << sh, "kB"))

    def has(sym):
        return kernel.symbols.get(sym) is not None

    def node(item):
        return get(item, global_node_page_state, kernel, item)

    def zone(item):
        return get(item, global_zone_page_state, kernel, item)

    zone_items = enum_items(kernel, "enum zone_stat_item")
    node_items = enum_items(kernel, "enum node_stat_item")
    bufferram = get("nr_blockdev_pages", nr_blockdev_pages, kernel)
    swapcache = get("total_swapcache_pages", total_swapcache_pages, kernel)
    file_pages = node("NR_FILE_PAGES")
    cached = None if None in (file_pages, swapcache, bufferram) else \
        max(file_pages - swapcache - bufferram, 0)
    lru = {n: node(n) for n in ("NR_INACTIVE_ANON", "NR_ACTIVE_ANON", "NR_INACTIVE_FILE",
                                "NR_ACTIVE_FILE", "NR_UNEVICTABLE")}
    srecl = node("NR_SLAB_RECLAIMABLE_B")
    sunrecl = node("NR_SLAB_UNRECLAIMABLE_B")

    kb("MemTotal", get("totalram_pages", totalram_pages, kernel))
    kb("MemFree", zone("NR_FREE_PAGES"))
    kb("MemAvailable", get("si_mem_available", si_mem_available, kernel))
    kb("Buffers", bufferram)
    kb("Cached", cached)
    kb("SwapCached", swapcache)
    kb("Active", add(lru["NR_ACTIVE_ANON"], lru["NR_ACTIVE_FILE"]))
    kb("Inactive", add(lru["NR_INACTIVE_ANON"], lru["NR_INACTIVE_FILE"]))
    kb("Active(anon)", lru["NR_ACTIVE_ANON"])
    kb("Inactive(anon)", lru["NR_INACTIVE_ANON"])
    kb("Active(file)", lru["NR_ACTIVE_FILE"])
    kb("Inactive(file)", lru["NR_INACTIVE_FILE"])
    kb("Unevictable", lru["NR_UNEVICTABLE"])
    kb("Mlocked", zone("NR_MLOCK"))
    if has("_totalhigh_pages"):           # CONFIG_HIGHMEM (32-bit)
        high = get("totalhigh_pages", totalhigh_pages, kernel)
        high_free = get("nr_free_highpages", nr_free_highpages, kernel)
        total = get("totalram_pages", totalram_pages, kernel)
        free = zone("NR_FREE_PAGES")
        kb("HighTotal", high)
        kb("HighFree", high_free)
        kb("LowTotal", None if None in (total, high) else total - high)
        kb("LowFree", None if None in (free, high_free) else free - high_free)
    # mm/swapfile.c si_swapinfo() (nr_to_be_unused only during swapoff: ignored)
    kb("SwapTotal", get("total_swap_pages", _slong, kernel, "total_swap_pages"))
    kb("SwapFree", get("nr_swap_pages", _slong, kernel, "nr_swap_pages"))
    if has("zswap_pool_total_size"):      # CONFIG_ZSWAP
        out.append(("Zswap", get("zswap_pool_total_size", lambda: kernel.read_u64(
            kernel.symbols.lookup("zswap_pool_total_size").address) >> 10), "kB"))
        kb("Zswapped", get("zswap_stored_pages", lambda: kernel.read_s32(
            kernel.symbols.lookup("zswap_stored_pages").address)))
    kb("Dirty", node("NR_FILE_DIRTY"))
    kb("Writeback", node("NR_WRITEBACK"))
    kb("AnonPages", node("NR_ANON_MAPPED"))
    kb("Mapped", node("NR_FILE_MAPPED"))
    kb("Shmem", node("NR_SHMEM"))
    kb("KReclaimable", add(srecl, node("NR_KERNEL_MISC_RECLAIMABLE")))
    kb("Slab", add(srecl, sunrecl))
    kb("SReclaimable", srecl)
    kb("SUnreclaim", sunrecl)
    out.append(("KernelStack", node("NR_KERNEL_STACK_KB"), "kB"))
    # Since Linux 5.11 (commit f0c0c115fb81 "mm: memcontrol: account pagetables
    # per node") NR_PAGETABLE is a node counter; a zone counter before.
    kb("PageTables", node("NR_PAGETABLE") if "NR_PAGETABLE" in node_items
       else zone("NR_PAGETABLE"))
    # Since Linux 6.0 (commit ebc97a52b5d6 "mm: add NR_SECONDARY_PAGETABLE")
    if "NR_SECONDARY_PAGETABLE" in node_items:
        kb("SecPageTables", node("NR_SECONDARY_PAGETABLE"))
    kb("NFS_Unstable", 0)
    kb("Bounce", zone("NR_BOUNCE"))
    kb("WritebackTmp", node("NR_WRITEBACK_TEMP"))
    kb("CommitLimit", get("vm_commit_limit", vm_commit_limit, kernel))
    kb("Committed_AS", get("vm_memory_committed", vm_memory_committed, kernel))
    vt = _vmalloc_total_kb(kernel)
    if vt is not None:
        out.append(("VmallocTotal", vt, "kB"))
    kb("VmallocUsed", get("vmalloc_nr_pages", _vmalloc_used_pages, kernel))
    kb("VmallocChunk", 0)
    kb("Percpu", get("pcpu_nr_pages", _percpu_pages, kernel))
    if has("num_poisoned_pages"):          # CONFIG_MEMORY_FAILURE
        kb("HardwareCorrupted", get("num_poisoned_pages", _slong, kernel, "num_poisoned_pages"))
    if has("transparent_hugepage_flags"):  # CONFIG_TRANSPARENT_HUGEPAGE
        for name, item in (("AnonHugePages", "NR_ANON_THPS"),
                           ("ShmemHugePages", "NR_SHMEM_THPS"),
                           ("ShmemPmdMapped", "NR_SHMEM_PMDMAPPED"),
                           ("FileHugePages", "NR_FILE_THPS"),
                           ("FilePmdMapped", "NR_FILE_PMDMAPPED")):
            kb(name, node(item))
    if has("cma_areas"):                   # CONFIG_CMA
        kb("CmaTotal", get("totalcma_pages", _ulong, kernel, "totalcma_pages"))
        kb("CmaFree", zone("NR_FREE_CMA_PAGES"))
    if "NR_UNACCEPTED" in zone_items:      # CONFIG_UNACCEPTED_MEMORY (6.5+)
        kb("Unaccepted", zone("NR_UNACCEPTED"))
    hs = get("hstates", _hstates, kernel)
    if hs:                                 # CONFIG_HUGETLB_PAGE: hugetlb_report_meminfo()
        out.extend(get("hugetlb_report_meminfo", _hugetlb_lines, kernel, hs, sh) or ())
    out.extend(get("arch_report_meminfo", _direct_map, kernel) or ())
    return out


def _hugetlb_lines(kernel, hs, sh) -> list[tuple[str, int, str]]:
    out = []
    idx = kernel.read_s32(kernel.symbols.lookup("default_hstate_idx").address)
    total_kb = 0
    for i, h in enumerate(hs):
        h = h.read_()
        size_kb = (1 << h.order.value_()) << sh
        total_kb += size_kb * h.nr_huge_pages.value_()
        if i == idx:
            out.append(("HugePages_Total", h.nr_huge_pages.value_(), ""))
            out.append(("HugePages_Free", h.free_huge_pages.value_(), ""))
            out.append(("HugePages_Rsvd", h.resv_huge_pages.value_(), ""))
            out.append(("HugePages_Surp", h.surplus_huge_pages.value_(), ""))
            out.append(("Hugepagesize", size_kb, "kB"))
    out.append(("Hugetlb", total_kb, "kB"))
    return out
