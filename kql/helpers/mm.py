"""Address spaces: the page size, VMAs, their /proc/PID/maps rendering, user
memory (command line, environment) and a task's memory counters (RSS, VSZ)
(include/linux/mm_types.h, include/linux/mm.h, fs/proc/task_mmu.c,
fs/proc/base.c, mm/memory.c).

User memory is read through the task's own page tables (``mm->pgd``), so a
page that is not in the dump (makedumpfile ``-d 31`` drops user pages,
swapped-out pages are nowhere) raises :class:`~kql.errors.FaultError`:
callers turn that into NULL, never into made-up bytes.
"""

from __future__ import annotations

from typing import Iterator

from kql.errors import ExcludedPageError, FaultError
from kql.helpers.fs import _d_path, _sym_name
from kql.helpers.list import _ptr, walk_warn
from kql.helpers.mapletree import mt_for_each
from kql.helpers.percpu import percpu_counter_sum
from kql.object import Object
from kql.types import pointer_to

__all__ = [
    "for_each_vma", "vma_flags_str", "vma_name", "vma_file_offset", "vma_dev", "vma_ino",
    "vma_maps_line", "get_gate_vma", "mm_user_memory", "access_remote_vm",
    "task_cmdline_bytes", "task_environ_bytes", "task_environ", "VM_FLAGS",
    "page_size", "page_shift", "get_mm_counter", "get_mm_counter_sum", "get_mm_rss",
    "task_rss_bytes", "task_vsz_bytes", "task_cmdline", "task_argv", "MM_COUNTERS",
]

#: Kernel globals whose type BTF lacks, for Kernel.var() (see kql.helpers):
#: the kernel's own address space and its layout.
KERNEL_VARIABLES = {
    "init_mm":           "struct mm_struct",
    "swapper_pg_dir":    "pgd_t [512]",
    "init_top_pgt":      "pgd_t [512]",
    "page_offset_base":  "unsigned long",
    "vmalloc_base":      "unsigned long",
    "vmemmap_base":      "unsigned long",
    "phys_base":         "unsigned long",
    "max_pfn":           "unsigned long",
    "mem_section":       "struct mem_section **",
    "vmap_area_list":    "struct list_head",
    "vmap_area_root":    "struct rb_root",
}

# include/linux/mm.h VM_* (#defines, not in BTF; unchanged for decades).
VM_FLAGS = {"READ": 0x1, "WRITE": 0x2, "EXEC": 0x4, "SHARED": 0x8, "MAYSHARE": 0x80}

#: vm_operations_struct.name functions kql can evaluate: name -> how.
_VM_OPS_NAMES = {
    # mm/mmap.c: ((struct vm_special_mapping *)vma->vm_private_data)->name
    "special_mapping_name": "special",
    # arch/x86/entry/vsyscall/vsyscall_64.c
    "gate_vma_name": "[vsyscall]",
}


def page_size(kernel) -> int:
    """The kernel's ``PAGE_SIZE`` (VMCOREINFO ``PAGESIZE``, else the arch's)."""
    return int(kernel.vmcoreinfo.get("PAGESIZE", 0)) or kernel.arch.page_size


def page_shift(kernel) -> int:
    """The kernel's ``PAGE_SHIFT``."""
    return page_size(kernel).bit_length() - 1


def _vma_type(kernel):
    t = kernel.cache.get("vma_ptr_type")
    if t is None:
        t = kernel.cache["vma_ptr_type"] = pointer_to(
            kernel.types.find_type("struct vm_area_struct"))
    return t


# -- VMAs ----------------------------------------------------------------------------------

def for_each_vma(mm: Object) -> Iterator[Object]:
    """The VMAs of an address space in address order.

    :param mm: ``struct mm_struct *``
    :return: iterator of ``struct vm_area_struct *``
    """
    kernel = mm.prog_
    pt = _vma_type(kernel)
    # Since Linux kernel commit d4af56c5c7c6 ("mm: start tracking VMAs with
    # maple tree") (in v6.1) VMAs are in mm->mm_mt; the mm->mmap list
    # (vm_next) went away in the same release ("mm: remove the vma linked list").
    if mm.has_member_("mm_mt"):
        for first, last, entry in mt_for_each(mm.mm_mt.address_of_()):
            yield _ptr(kernel, pt, entry)
        return
    off = kernel.types.find_type("struct vm_area_struct").offsetof("vm_next")
    seen = set()
    vma = mm.mmap.value_()
    while vma:
        if vma in seen:
            walk_warn(kernel, f"for_each_vma: cycle at vma {vma:#x}")
            return
        seen.add(vma)
        yield _ptr(kernel, pt, vma)
        try:
            vma = kernel.read_pointer(vma + off)
        except FaultError as e:
            walk_warn(kernel, f"for_each_vma: vma {vma:#x} unreadable: {e}")
            return


def get_gate_vma(mm: Object) -> Object | None:
    """``get_gate_vma()``: x86_64's ``[vsyscall]`` page, shown after the last
    VMA unless vsyscall=none (then None).

    :param mm: ``struct mm_struct *``
    :return: ``struct vm_area_struct *`` or None
    """
    kernel = mm.prog_
    if "gate_vma" not in kernel.cache:
        gate = None
        mode = kernel.symbols.get("vsyscall_mode")
        sym = kernel.symbols.get("gate_vma")
        # arch/x86/entry/vsyscall/vsyscall_64.c: enum { EMULATE, XONLY, NONE }
        # (NATIVE, EMULATE, NONE before 5.3: NONE is 2 in both).
        if mode is not None and sym is not None and kernel.read_u32(mode.address) != 2:
            gate = sym.address
        kernel.cache["gate_vma"] = gate
    gate = kernel.cache["gate_vma"]
    return None if gate is None else _ptr(kernel, _vma_type(kernel), gate)


def _vm_flags(vma: Object) -> int:
    return vma.vm_flags.value_()


def vma_flags_str(vma: Object) -> str:
    """The permissions column of /proc/PID/maps: ``r-xp``, ``rw-s`` ...

    :param vma: ``struct vm_area_struct *``
    """
    f = _vm_flags(vma)
    return ("r" if f & VM_FLAGS["READ"] else "-") + ("w" if f & VM_FLAGS["WRITE"] else "-") + \
        ("x" if f & VM_FLAGS["EXEC"] else "-") + ("s" if f & VM_FLAGS["MAYSHARE"] else "p")


def _file_inode(vma: Object):
    return vma.vm_file.f_inode


def vma_file_offset(vma: Object) -> int:
    """The offset column of /proc/PID/maps in bytes (``vm_pgoff << PAGE_SHIFT``
    for file mappings, 0 for anonymous ones).

    :param vma: ``struct vm_area_struct *``
    """
    if not vma.vm_file.value_():
        return 0
    return vma.vm_pgoff.value_() << page_shift(vma.prog_)


def vma_dev(vma: Object) -> int:
    """``inode->i_sb->s_dev`` of the mapped file (0 if anonymous).

    :param vma: ``struct vm_area_struct *``
    """
    if not vma.vm_file.value_():
        return 0
    return _file_inode(vma).i_sb.s_dev.value_()


def vma_ino(vma: Object) -> int:
    """Inode number of the mapped file (0 if anonymous).

    :param vma: ``struct vm_area_struct *``
    """
    if not vma.vm_file.value_():
        return 0
    return _file_inode(vma).i_ino.value_()


def _anon_name(vma: Object, file: bool = False) -> bytes | None:
    # CONFIG_ANON_VMA_NAME (5.17+): vma->anon_name, set by prctl(PR_SET_VMA).
    # Until "mm: anonymous shared memory naming" (v6.2) it shares a union
    # with vma->shared and is valid only without a vm_file.
    if not vma.has_member_("anon_name"):
        return None
    if file:
        t = vma.prog_.types.find_type("struct vm_area_struct")
        if t.has_member("shared") and t.offsetof("shared") == t.offsetof("anon_name"):
            return None
    p = vma.anon_name.value_()
    if not p:
        return None
    kernel = vma.prog_
    off = kernel.types.find_type("struct anon_vma_name").offsetof("name")
    return kernel.read_cstring(p + off, 256)


def vma_name(vma: Object, mm: Object | None = None) -> str:
    """The name column of /proc/PID/maps (fs/proc/task_mmu.c
    get_vma_name()/show_map_vma()): the file's path (``\\n`` escaped, with
    `` (deleted)``), else ``[vdso]``/``[vvar]`` (special mappings),
    ``[heap]``, ``[stack]``, ``[anon:NAME]``, or ``""``.

    :param vma: ``struct vm_area_struct *``
    :param mm: ``struct mm_struct *`` owning it (default ``vma->vm_mm``)
    """
    kernel = vma.prog_
    v = vma.read_()
    file = v.vm_file.value_()
    if file:
        anon = _anon_name(vma, file=True)
        if anon is not None:
            return "[anon_shmem:%s]" % anon.decode(errors="replace")
        f = Object(kernel, "struct file", file)
        path = f.f_path.read_()
        s = _d_path(kernel, path.mnt.value_(), path.dentry.value_())
        return s.replace(b"\n", b"\\012").decode(errors="surrogateescape")
    ops = v.vm_ops.value_()
    if ops:
        fn = Object(kernel, "struct vm_operations_struct", ops).name.value_()
        if fn:
            fname = _sym_name(kernel, fn)
            how = _VM_OPS_NAMES.get(fname)
            if how is None:
                raise ValueError(f"vma {vma.value_():#x} is named by {fname or hex(fn)}(), "
                                 f"which kql does not know")
            if how == "special":
                sm = Object(kernel, "struct vm_special_mapping", v.vm_private_data.value_())
                return sm.name.string_(256).decode(errors="replace")
            return how
    vm_mm = v.vm_mm.value_()
    if not vm_mm:
        return "[vdso]"
    m = (mm if mm is not None else v.vm_mm).read_()
    start, end = v.vm_start.value_(), v.vm_end.value_()
    if start <= m.brk.value_() and end >= m.start_brk.value_():
        return "[heap]"
    stack = m.start_stack.value_()
    if start <= stack and end >= stack:
        return "[stack]"
    anon = _anon_name(vma)
    if anon is not None:
        return "[anon:%s]" % anon.decode(errors="replace")
    return ""


def vma_maps_line(vma: Object, mm: Object | None = None) -> str:
    """The VMA as one line of /proc/PID/maps (without the newline).

    :param vma: ``struct vm_area_struct *``
    :param mm: ``struct mm_struct *`` owning it (default ``vma->vm_mm``)
    """
    flags = vma_flags_str(vma)
    dev = vma_dev(vma)
    head = "%08x-%08x %s %08x %02x:%02x %d " % (
        vma.vm_start.value_(), vma.vm_end.value_(), flags, vma_file_offset(vma),
        dev >> 20, dev & 0xFFFFF, vma_ino(vma))
    name = vma_name(vma, mm)
    if not name:
        return head
    # seq_setwidth(m, 25 + sizeof(void *) * 6 - 1) then seq_pad(m, ' ')
    return head.ljust(24 + vma.prog_.arch.pointer_size * 6) + " " + name


# -- user memory -----------------------------------------------------------------------------

def mm_user_memory(mm: Object):
    """A memory layer reading ``mm``'s user address space through its page
    tables (``mm->pgd``); cached per address space on the kernel.

    :param mm: ``struct mm_struct *``
    :return: a :class:`kql.memory.UserVirtual`
    """
    from kql.memory import UserVirtual
    kernel = mm.prog_
    layers = kernel.cache.setdefault("user_layers", {})
    pgd = mm.pgd.value_()
    layer = layers.get(pgd)
    if layer is None:
        if len(layers) > 256:
            layers.clear()
        kv = kernel.memory
        layer = layers[pgd] = UserVirtual(
            kernel.dump.phys, kernel.arch, kv.translate(pgd), levels=kv.levels,
            sme_mask=int(kernel.vmcoreinfo.get("NUMBER(sme_mask)", "0") or 0))
    return layer


def access_remote_vm(mm: Object, addr: int, size: int) -> bytes:
    """``size`` bytes of user memory at ``addr`` in ``mm``; raises FaultError
    if any of those pages is not in the dump (never partial data).

    :param mm: ``struct mm_struct *``
    """
    if size < 0 or size > 1 << 26:
        raise ValueError(f"access_remote_vm: bad size {size}")
    layer = mm_user_memory(mm)
    data = layer.read(addr, size)
    excluded = _excluded_test(mm.prog_)
    if excluded is not None and size:
        # With zero_excluded a filtered page reads as zeros: user memory must
        # not turn that into an empty command line.
        page = 1 << page_shift(mm.prog_)
        for va in range(addr & ~(page - 1), addr + size, page):
            pa = layer.translate(va)
            if excluded(pa):
                raise ExcludedPageError(va, f"cannot read user address {va:#x} (physical "
                                            f"{pa:#x}): excluded by the dump level")
    return data


def _excluded_test(kernel):
    """``fn(paddr) -> bool`` telling filtered pages when the dump reads them
    as zeros (zero_excluded); None otherwise."""
    if "excluded_test" not in kernel.cache:
        phys = kernel.dump.phys
        fn = None
        zero = getattr(phys, "_zero_excluded", None)
        if zero is None:
            zero = any(getattr(p, "zero_excluded", False) for p in getattr(phys, "parts", ()))
        if zero:
            fn = getattr(phys, "is_excluded", None)
            if fn is None and hasattr(phys, "excluded_ranges"):
                ranges = phys.excluded_ranges()
                fn = lambda pa: any(s <= pa < e for s, e in ranges)   # noqa: E731
        kernel.cache["excluded_test"] = fn
    return kernel.cache["excluded_test"]


def task_cmdline_bytes(task: Object) -> bytes | None:
    """``/proc/PID/cmdline`` exactly (fs/proc/base.c get_mm_cmdline()): the
    argument area with its NULs, or with setproctitle() (last byte of the
    area not NUL) the string at arg_start up to its NUL, at most one page;
    None for tasks without an mm.

    :param task: ``struct task_struct *``
    """
    mm = task.mm
    if not mm.value_():
        return None
    m = mm.read_()
    start, end = m.arg_start.value_(), m.arg_end.value_()
    env_start, env_end = m.env_start.value_(), m.env_end.value_()
    if start >= end:
        return b""
    # setproctitle() may run past arg_end into the environment
    if env_start != end or env_end < env_start:
        env_start = env_end = end
    raw = access_remote_vm(mm, start, min(env_end - start, 1 << 20))
    if raw[end - start - 1] == 0:
        return raw[:end - start]
    page = 1 << page_shift(task.prog_)
    title = raw[:page]
    nul = title.find(b"\0")
    return title if nul < 0 else title[:nul + 1]


def task_environ_bytes(task: Object) -> bytes | None:
    """``/proc/PID/environ`` exactly (``mm->env_start .. env_end``); None
    for tasks without an mm.

    :param task: ``struct task_struct *``
    """
    mm = task.mm
    if not mm.value_():
        return None
    m = mm.read_()
    start, end = m.env_start.value_(), m.env_end.value_()
    if start >= end:
        return b""
    return access_remote_vm(mm, start, min(end - start, 1 << 20))


def task_environ(task: Object) -> list[tuple[str, str | None]] | None:
    """The environment as ``(name, value)`` pairs, split at the first ``=``
    (value None for an entry without one); None without an mm.

    :param task: ``struct task_struct *``
    """
    raw = task_environ_bytes(task)
    if raw is None:
        return None
    out = []
    for entry in raw.split(b"\0"):
        if not entry:
            continue
        name, eq, value = entry.partition(b"=")
        out.append((name.decode(errors="replace"),
                    value.decode(errors="replace") if eq else None))
    return out


def _enumerator(kernel, name: str, default: int) -> int:
    cache = kernel.cache.setdefault("enumerators", {})
    v = cache.get(name)
    if v is None:
        btf = kernel.btf
        hit = btf.find_enumerator(name) if btf is not None else None
        v = cache[name] = hit[1] if hit is not None else default
    return v


#: include/linux/mm_types_task.h (an anonymous enum; values read from BTF,
#: these are the defaults since 4.5).
MM_COUNTERS = {"MM_FILEPAGES": 0, "MM_ANONPAGES": 1, "MM_SWAPENTS": 2, "MM_SHMEMPAGES": 3}


def _rss_counter(mm: Object, member: str):
    i = _enumerator(mm.prog_, member, MM_COUNTERS[member])
    rss = mm.rss_stat
    # Since Linux kernel commit f1a7941243c1 ("mm: convert mm's rss stats into
    # percpu_counter") (in v6.2), rss_stat is an array of percpu_counter;
    # before, it is struct mm_rss_stat { atomic_long_t count[]; }.
    if rss.type_.strip_typedefs().kind == "array":
        return rss[i], True
    return rss.count[i].counter, False


def get_mm_counter(mm: Object, member: str) -> int:
    """``get_mm_counter(mm, member)`` (``member`` like ``"MM_ANONPAGES"``), in
    pages, clamped at 0 as the kernel does; on 6.2+ only the shared count of
    the percpu_counter (``percpu_counter_read_positive()``).

    :param mm: ``struct mm_struct *``
    """
    c, percpu = _rss_counter(mm, member)
    return max((c.count if percpu else c).value_(), 0)


def get_mm_counter_sum(mm: Object, member: str) -> int:
    """``get_mm_counter_sum()``: the exact counter, per-CPU deltas included
    (``percpu_counter_sum_positive()``), in pages.

    :param mm: ``struct mm_struct *``
    """
    c, percpu = _rss_counter(mm, member)
    if not percpu:
        return max(c.value_(), 0)
    return max(percpu_counter_sum(c), 0)


def get_mm_rss(mm: Object) -> int:
    """File + anon + shmem pages, exact (per-CPU deltas summed), as /proc
    VmRSS counts them (fs/proc/task_mmu.c task_mem(); kernels whose /proc
    uses get_mm_counter() may show up to a batch per CPU less).

    :param mm: ``struct mm_struct *``
    """
    return sum(get_mm_counter_sum(mm, m) for m in ("MM_FILEPAGES", "MM_ANONPAGES",
                                                   "MM_SHMEMPAGES"))


def task_rss_bytes(task: Object) -> int | None:
    """Resident set size in bytes (/proc VmRSS); None without an mm.

    :param task: ``struct task_struct *``
    """
    mm = task.mm
    if not mm.value_():
        return None
    return get_mm_rss(mm) * page_size(task.prog_)


def task_vsz_bytes(task: Object) -> int | None:
    """Virtual size in bytes (``mm->total_vm``, /proc VmSize); None without an mm.

    :param task: ``struct task_struct *``
    """
    mm = task.mm
    if not mm.value_():
        return None
    return mm.total_vm.value_() * page_size(task.prog_)


def task_argv(task: Object) -> list[str] | None:
    """The task's argv as /proc/PID/cmdline gives it, read from user memory
    through the task's own page tables; None for tasks without an mm.
    Raises FaultError when the pages are not in the dump (makedumpfile
    -d 31 drops user pages), also when the dump reads them as zeros.

    :param task: ``struct task_struct *``
    """
    raw = task_cmdline_bytes(task)
    if raw is None:
        return None
    if raw.endswith(b"\0"):
        raw = raw[:-1]
    return [a.decode(errors="replace") for a in raw.split(b"\0")] if raw else []


def task_cmdline(task: Object) -> str | None:
    """The command line with arguments joined by spaces (as ps shows it).

    :param task: ``struct task_struct *``
    """
    argv = task_argv(task)
    return None if argv is None else " ".join(argv)
