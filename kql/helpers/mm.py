"""Address spaces: VMAs, their /proc/PID/maps rendering, and user memory
(include/linux/mm_types.h, fs/proc/task_mmu.c, fs/proc/base.c, mm/memory.c).

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
from kql.helpers.maple import mt_for_each
from kql.object import Object
from kql.types import pointer_to

__all__ = [
    "for_each_vma", "vma_flags_str", "vma_name", "vma_file_offset", "vma_dev", "vma_ino",
    "vma_maps_line", "get_gate_vma", "mm_user_memory", "access_remote_vm",
    "task_cmdline_bytes", "task_environ_bytes", "task_environ", "VM_FLAGS",
]

# include/linux/mm.h VM_* (#defines, not in BTF; unchanged for decades).
VM_FLAGS = {"READ": 0x1, "WRITE": 0x2, "EXEC": 0x4, "SHARED": 0x8, "MAYSHARE": 0x80}

#: vm_operations_struct.name functions kql can evaluate: name -> how.
_VM_OPS_NAMES = {
    # mm/mmap.c: ((struct vm_special_mapping *)vma->vm_private_data)->name
    "special_mapping_name": "special",
    # arch/x86/entry/vsyscall/vsyscall_64.c
    "gate_vma_name": "[vsyscall]",
}


def _page_shift(prog) -> int:
    return int(prog.vmcoreinfo.get("PAGESIZE", "4096")).bit_length() - 1


def _vma_type(prog):
    t = prog.cache.get("vma_ptr_type")
    if t is None:
        t = prog.cache["vma_ptr_type"] = pointer_to(
            prog.types.find_type("struct vm_area_struct"))
    return t


# -- VMAs ----------------------------------------------------------------------------------

def for_each_vma(mm: Object) -> Iterator[Object]:
    """The VMAs of an address space in address order.

    :param mm: ``struct mm_struct *``
    :return: iterator of ``struct vm_area_struct *``
    """
    prog = mm.prog_
    pt = _vma_type(prog)
    # Since Linux kernel commit d4af56c5c7c6 ("mm: start tracking VMAs with
    # maple tree") (in v6.1) VMAs are in mm->mm_mt; the mm->mmap list
    # (vm_next) went away in the same release ("mm: remove the vma linked list").
    if mm.has_member_("mm_mt"):
        for first, last, entry in mt_for_each(mm.mm_mt.address_of_()):
            yield _ptr(prog, pt, entry)
        return
    off = prog.types.find_type("struct vm_area_struct").offsetof("vm_next")
    seen = set()
    vma = mm.mmap.value_()
    while vma:
        if vma in seen:
            walk_warn(prog, f"for_each_vma: cycle at vma {vma:#x}")
            return
        seen.add(vma)
        yield _ptr(prog, pt, vma)
        try:
            vma = prog.read_pointer(vma + off)
        except FaultError as e:
            walk_warn(prog, f"for_each_vma: vma {vma:#x} unreadable: {e}")
            return


def get_gate_vma(mm: Object) -> Object | None:
    """``get_gate_vma()``: x86_64's ``[vsyscall]`` page, shown after the last
    VMA unless vsyscall=none (then None).

    :param mm: ``struct mm_struct *``
    :return: ``struct vm_area_struct *`` or None
    """
    prog = mm.prog_
    if "gate_vma" not in prog.cache:
        gate = None
        mode = prog.symbols.get("vsyscall_mode")
        sym = prog.symbols.get("gate_vma")
        # arch/x86/entry/vsyscall/vsyscall_64.c: enum { EMULATE, XONLY, NONE }
        # (NATIVE, EMULATE, NONE before 5.3: NONE is 2 in both).
        if mode is not None and sym is not None and prog.read_u32(mode.address) != 2:
            gate = sym.address
        prog.cache["gate_vma"] = gate
    gate = prog.cache["gate_vma"]
    return None if gate is None else _ptr(prog, _vma_type(prog), gate)


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
    return vma.vm_pgoff.value_() << _page_shift(vma.prog_)


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
    prog = vma.prog_
    off = prog.types.find_type("struct anon_vma_name").offsetof("name")
    return prog.read_cstring(p + off, 256)


def vma_name(vma: Object, mm: Object | None = None) -> str:
    """The name column of /proc/PID/maps (fs/proc/task_mmu.c
    get_vma_name()/show_map_vma()): the file's path (``\\n`` escaped, with
    `` (deleted)``), else ``[vdso]``/``[vvar]`` (special mappings),
    ``[heap]``, ``[stack]``, ``[anon:NAME]``, or ``""``.

    :param vma: ``struct vm_area_struct *``
    :param mm: ``struct mm_struct *`` owning it (default ``vma->vm_mm``)
    """
    prog = vma.prog_
    v = vma.read_()
    file = v.vm_file.value_()
    if file:
        anon = _anon_name(vma, file=True)
        if anon is not None:
            return "[anon_shmem:%s]" % anon.decode(errors="replace")
        f = Object(prog, "struct file", file)
        path = f.f_path.read_()
        s = _d_path(prog, path.mnt.value_(), path.dentry.value_())
        return s.replace(b"\n", b"\\012").decode(errors="surrogateescape")
    ops = v.vm_ops.value_()
    if ops:
        fn = Object(prog, "struct vm_operations_struct", ops).name.value_()
        if fn:
            fname = _sym_name(prog, fn)
            how = _VM_OPS_NAMES.get(fname)
            if how is None:
                raise ValueError(f"vma {vma.value_():#x} is named by {fname or hex(fn)}(), "
                                 f"which kql does not know")
            if how == "special":
                sm = Object(prog, "struct vm_special_mapping", v.vm_private_data.value_())
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
    prog = mm.prog_
    layers = prog.cache.setdefault("user_layers", {})
    pgd = mm.pgd.value_()
    layer = layers.get(pgd)
    if layer is None:
        if len(layers) > 256:
            layers.clear()
        kv = prog.memory
        layer = layers[pgd] = UserVirtual(
            prog.dump.phys, prog.arch, kv.translate(pgd), levels=kv.levels,
            sme_mask=int(prog.vmcoreinfo.get("NUMBER(sme_mask)", "0") or 0))
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
        page = 1 << _page_shift(mm.prog_)
        for va in range(addr & ~(page - 1), addr + size, page):
            pa = layer.translate(va)
            if excluded(pa):
                raise ExcludedPageError(va, f"cannot read user address {va:#x} (physical "
                                            f"{pa:#x}): excluded by the dump level")
    return data


def _excluded_test(prog):
    """``fn(paddr) -> bool`` telling filtered pages when the dump reads them
    as zeros (zero_excluded); None otherwise."""
    if "excluded_test" not in prog.cache:
        phys = prog.dump.phys
        fn = None
        zero = getattr(phys, "_zero_excluded", None)
        if zero is None:
            zero = any(getattr(p, "zero_excluded", False) for p in getattr(phys, "parts", ()))
        if zero:
            fn = getattr(phys, "is_excluded", None)
            if fn is None and hasattr(phys, "excluded_ranges"):
                ranges = phys.excluded_ranges()
                fn = lambda pa: any(s <= pa < e for s, e in ranges)   # noqa: E731
        prog.cache["excluded_test"] = fn
    return prog.cache["excluded_test"]


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
    page = 1 << _page_shift(task.prog_)
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
