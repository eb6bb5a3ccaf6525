"""The running kernel through ``/proc/kcore`` (fs/proc/kcore.c).

/proc/kcore is an ELF core generated on every read: one PT_NOTE ("CORE"
NT_PRSTATUS, all zeros; "CORE" NT_PRPSINFO with ``pr_fname`` "vmlinux";
"CORE" NT_TASKSTRUCT, the reader's own task; "VMCOREINFO") and one PT_LOAD per
``kclist`` entry at its *kernel virtual* address: KCORE_TEXT (the kernel
image, ``p_paddr = __pa_symbol``), KCORE_RAM (the direct map, one segment per
System RAM range, ``p_paddr = __pa``), KCORE_VMALLOC (vmalloc and module
space), KCORE_VMEMMAP and KCORE_USER (``p_paddr = -1``).  File offsets are
``vaddr - PAGE_OFFSET + data_offset``: the file is ~128 TiB of holes, cannot
be mapped, and is read with ``pread`` into a page cache that
:meth:`KcoreDump.refresh` empties (the memory changes under us; a shell never
serves a page read by a previous query).

Kernel virtual reads are served straight from the segment holding the
address (:class:`KcoreVirtual`); an address no segment covers (user space
through ``mm->pgd``, or a kernel address outside the kclist) is translated by
the page-table walk, whose physical reads go through the RAM and TEXT
segments by ``p_paddr`` (:class:`KcorePhysical`).  Like the kernel, a read of
a vmalloc address nothing maps returns zeros.

Nothing here assumes a panic: there are no CPU registers (the NT_PRSTATUS
note is empty), no dump level and no crash time.  Companions of the live
kernel are looked up under the same root as the kcore (``ROOT/proc/kcore`` ->
``ROOT/sys/kernel/btf/vmlinux``, ``ROOT/proc/kallsyms``,
``ROOT/sys/kernel/security/lockdown``); ``kql live`` takes ROOT from
``$KQL_LIVE_ROOT`` (default ``/``) so tests can point it at a synthetic tree.
"""

from __future__ import annotations

import errno
import os
import time
from bisect import bisect_right
from functools import lru_cache

from kql.arch import detect_machine
from kql.dump.base import Dump, Probe, parse_notes
from kql.dump.elf import (_EHDR, _PHDR, EM_X86_64, PT_LOAD, PT_NOTE, _machine_name,
                          _non_overlapping)
from kql.dump.kdump import PAGE_CACHE_SIZE
from kql.errors import DumpError, FaultError
from kql.memory import Layer

__all__ = ["KcoreDump", "PROBE", "check_path", "load_proc_kallsyms", "live_kcore_path",
           "live_root", "kcore_error", "lockdown_mode"]

NT_PRPSINFO = 3
_NO_PADDR = (1 << 64) - 1          # (elf_addr_t)-1: vmalloc, vmemmap, user segments
_KERNEL_HALF = 1 << 63            # kernel virtual addresses have the top bit set
_BLOCK = 4096                      # the page cache's unit (kcore copies page by page)
_DIRECT_READ = 64 << 10            # reads this large bypass the cache


def live_root() -> str:
    """The root under which ``kql live`` finds proc/kcore, sys/kernel/btf ...:
    ``$KQL_LIVE_ROOT`` or ``/``."""
    return os.environ.get("KQL_LIVE_ROOT") or "/"


def _root_of(path: str) -> str | None:
    """``ROOT`` for a path spelled ``ROOT/proc/kcore`` (where the companions
    are), else None.  Used for the companion files and error texts only: the
    format is decided by content."""
    p = os.path.abspath(path)
    if os.path.basename(p) != "kcore" or os.path.basename(os.path.dirname(p)) != "proc":
        return None
    return os.path.dirname(os.path.dirname(p))


def _read_text(path: str) -> str | None:
    try:
        with open(path, encoding="latin-1") as f:
            return f.read()
    except OSError:
        return None


def lockdown_mode(root: str) -> str | None:
    """The active lockdown mode from ROOT/sys/kernel/security/lockdown
    (``none [integrity] confidentiality``), or None when unknown."""
    text = _read_text(os.path.join(root, "sys/kernel/security/lockdown"))
    if not text or "[" not in text:
        return None
    return text.split("[", 1)[1].split("]", 1)[0].strip() or None


def kcore_error(path: str, err: OSError, root: str) -> DumpError:
    """The one-line error for a kcore that cannot be opened: what to do."""
    if err.errno == errno.ENOENT:
        return DumpError(f"{path}: no such file: this kernel has no /proc/kcore (built without "
                         f"CONFIG_PROC_KCORE); take a dump (kdump, or QEMU dump-guest-memory) "
                         f"and query that instead")
    if err.errno in (errno.EPERM, errno.EACCES):
        # LOCKDOWN_KCORE sits above LOCKDOWN_INTEGRITY_MAX (include/linux/security.h):
        # "confidentiality" refuses kcore, "integrity" does not (an EPERM then is
        # open_kcore()'s missing CAP_SYS_RAWIO).
        if err.errno == errno.EPERM and lockdown_mode(root) == "confidentiality":
            return DumpError(f"{path}: the kernel is locked down (confidentiality), which refuses "
                             f"/proc/kcore: boot with lockdown=none (and Secure Boot off) to "
                             f"query it live, or query a kdump dump")
        return DumpError(f"{path}: permission denied: reading the live kernel needs root "
                         f"(CAP_SYS_RAWIO): run kql as root (sudo kql live ...)")
    return DumpError(f"{path}: cannot open: {err.strerror or err}")


class KcoreFile:
    """``pread`` on the kcore, through an LRU page cache of ``_BLOCK``-sized
    blocks (kdump's: ``PAGE_CACHE_SIZE`` entries)."""

    def __init__(self, fd: int, path: str, stats):
        self.fd = fd
        self.path = path
        self._stats = stats
        self._block = lru_cache(maxsize=PAGE_CACHE_SIZE)(self._load_block)

    def _pread(self, offset: int, size: int) -> bytes:
        try:
            data = os.pread(self.fd, size, offset)
        except OSError as e:
            raise DumpError(f"{self.path}: read of {size} bytes at offset {offset:#x} failed: "
                            f"{e.strerror or e}") from None
        self._stats.pages_read += (size + _BLOCK - 1) // _BLOCK
        return data

    def _load_block(self, blk: int) -> bytes:
        return self._pread(blk, _BLOCK)

    def read(self, offset: int, size: int) -> bytes:
        """Up to ``size`` bytes at ``offset`` (short only at the end of the file)."""
        off = offset & (_BLOCK - 1)
        if off + size <= _BLOCK:
            return self._block(offset - off)[off:off + size]
        if size >= _DIRECT_READ:
            return self._pread(offset, size)
        parts = []
        while size > 0:
            off = offset & (_BLOCK - 1)
            n = min(size, _BLOCK - off)
            part = self._block(offset - off)[off:off + n]
            parts.append(part)
            if len(part) < n:
                break
            offset += n
            size -= n
        return b"".join(parts)

    def invalidate(self) -> None:
        self._block.cache_clear()

    def close(self) -> None:
        self._block.cache_clear()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class _Segments:
    """Sorted, non-overlapping ``(start, end, file_offset)`` ranges -> file reads."""

    def __init__(self, kfile: KcoreFile, ranges):
        self._file = kfile
        self.ranges = ranges
        self._starts = [r[0] for r in ranges]

    def find(self, addr: int):
        i = bisect_right(self._starts, addr) - 1
        if i >= 0 and addr < self.ranges[i][1]:
            return self.ranges[i]
        return None

    def read_in(self, seg, addr: int, size: int) -> bytes:
        start, end, foff = seg[0], seg[1], seg[2]
        data = self._file.read(foff + addr - start, size)
        if len(data) != size:
            raise FaultError(addr, f"cannot read {size} bytes at {addr:#x}: the kcore ends "
                                   f"at offset {foff + addr - start + len(data):#x}")
        return data


class KcorePhysical(Layer):
    """Physical memory: the RAM (and kernel text) segments by ``p_paddr``."""

    name = "physical"

    def __init__(self, segments: _Segments):
        self._segs = segments

    def read(self, paddr: int, size: int) -> bytes:
        segs = self._segs
        seg = segs.find(paddr)
        if seg is not None and paddr + size <= seg[1]:
            return segs.read_in(seg, paddr, size)
        out = []
        end = paddr + size
        addr = paddr
        while addr < end:
            seg = segs.find(addr)
            if seg is None:
                raise FaultError(addr, f"physical address {addr:#x} is not in the live "
                                       f"kernel's RAM (no /proc/kcore segment)", physical=True)
            n = min(end, seg[1]) - addr
            out.append(segs.read_in(seg, addr, n))
            addr += n
        return b"".join(out)

    def is_mapped(self, paddr: int) -> bool:
        return self._segs.find(paddr) is not None

    def ranges(self) -> list[tuple[int, int]]:
        return [(s, e) for s, e, _o in self._segs.ranges]

    def excluded_ranges(self) -> list[tuple[int, int]]:
        return []


class KcoreVirtual(Layer):
    """Kernel virtual memory: the kcore segment holding an address serves it;
    other addresses go through ``walker`` (a page-table layer over
    :class:`KcorePhysical`)."""

    name = "kernel"

    def __init__(self, segments: _Segments, paddrs: dict, walker: Layer):
        self._segs = segments
        self._paddrs = paddrs          # segment start -> p_paddr (RAM and text only)
        self.walker = walker
        self.phys = walker.phys
        self.arch = walker.arch
        self.pgd_paddr = walker.pgd_paddr
        self.levels = walker.levels
        if getattr(walker.arch, "pointer_size", 8) == 4:
            self.read_pointer = self.read_u32

    def read(self, addr: int, size: int) -> bytes:
        segs = self._segs
        seg = segs.find(addr)
        if seg is not None and addr + size <= seg[1]:
            return segs.read_in(seg, addr, size)
        if size <= 0:
            if size == 0:
                return b""
            raise ValueError(f"negative read size {size}")
        out = []
        end = addr + size
        while addr < end:
            seg = segs.find(addr)
            if seg is not None:
                n = min(end, seg[1]) - addr
                out.append(segs.read_in(seg, addr, n))
            else:
                n = min(end - addr, _BLOCK - (addr & (_BLOCK - 1)))
                nxt = bisect_right(segs._starts, addr)
                if nxt < len(segs._starts):
                    n = min(n, segs._starts[nxt] - addr)
                out.append(self.walker.read(addr, n))
            addr += n
        return b"".join(out)

    def translate(self, addr: int) -> int:
        seg = self._segs.find(addr)
        if seg is not None:
            pa = self._paddrs.get(seg[0])
            if pa is not None:
                return pa + addr - seg[0]
        return self.walker.translate(addr)

    def is_mapped(self, addr: int) -> bool:
        seg = self._segs.find(addr)
        if seg is not None and seg[0] in self._paddrs:
            return True
        return self.walker.is_mapped(addr)     # vmalloc holes read as zeros: ask the tables

    def flush(self) -> None:
        self.walker.flush()


class KcoreDump(Dump):
    """A live kernel (see the module docstring)."""

    live = True
    root: str | None = None

    def kernel_layer(self, walker: Layer) -> Layer:
        return KcoreVirtual(self._vsegs, self._paddrs, walker)

    def prstatus(self) -> list:
        """No registers: kcore's NT_PRSTATUS note is all zeros."""
        return []

    def refresh(self) -> None:
        """Forget every page read so far (the next read sees the kernel as it is now)."""
        self._file.invalidate()
        self.timestamp = time.time()

    def btf_blob(self, name: str) -> bytes | None:
        """ROOT/sys/kernel/btf/NAME (vmlinux or a module), None if absent."""
        if self.root is None or "/" in name:
            return None
        try:
            with open(os.path.join(self.root, "sys/kernel/btf", name), "rb") as f:
                return f.read()
        except OSError:
            return None

    def btf_module_names(self) -> list[str] | None:
        """Modules with split BTF under ROOT/sys/kernel/btf, None without that directory."""
        if self.root is None:
            return None
        try:
            names = os.listdir(os.path.join(self.root, "sys/kernel/btf"))
        except OSError:
            return None
        return sorted(n for n in names if n != "vmlinux")

    def kallsyms_file(self) -> str | None:
        return os.path.join(self.root, "proc/kallsyms") if self.root is not None else None


def load_proc_kallsyms(path: str):
    """The vmlinux symbols of a running kernel's /proc/kallsyms; a one-line
    DumpError when ``kernel.kptr_restrict`` hides the addresses (all zero)."""
    from kql.symbols import load_system_map
    if not os.path.exists(path):
        raise DumpError(f"{path}: no such file: give --system-map or --vmlinux for this kernel")
    table = load_system_map(path)
    if not any(table.addresses):
        root = os.path.dirname(os.path.dirname(os.path.abspath(path)))
        level = (_read_text(os.path.join(root, "proc/sys/kernel/kptr_restrict")) or "?").strip()
        raise DumpError(f"{path} shows no addresses (kernel.kptr_restrict={level} hides them): "
                        f"run kql as root with kernel.kptr_restrict=0 or 1 "
                        f"(sysctl kernel.kptr_restrict=1), or give --system-map")
    return table


def _read_header(fd: int, path: str):
    """-> (machine, phdrs, notes) of a kcore, or None if the file is not one."""
    head = os.pread(fd, 64, 0)
    if len(head) < 64 or head[:4] != b"\x7fELF" or head[4] != 2 or head[5] != 1:
        return None
    (e_type, e_machine, _v, _entry, e_phoff, _shoff, _flags, _ehsize, e_phentsize,
     e_phnum, *_rest) = _EHDR.unpack_from(head, 16)
    if e_type != 4 or e_phentsize != _PHDR.size or not 0 < e_phnum < 0xFFFF:
        return None
    table = os.pread(fd, e_phnum * _PHDR.size, e_phoff)
    if len(table) != e_phnum * _PHDR.size:
        return None
    phdrs = list(_PHDR.iter_unpack(table))
    # kcore's signature: every segment at a kernel virtual address and the
    # "vmlinux" process-info note (a /proc/vmcore copy has neither).
    loads = [p for p in phdrs if p[0] == PT_LOAD and p[6]]
    if not loads or any(p[3] < _KERNEL_HALF for p in loads):
        return None
    notes = []
    for p_type, _fl, offset, _va, _pa, filesz, _ms, _al in phdrs:
        if p_type == PT_NOTE and 0 < filesz < 1 << 24:
            notes.extend(parse_notes(os.pread(fd, filesz, offset), f"{path}: PT_NOTE"))
    psinfo = [n for n in notes if n.name == "CORE" and n.type == NT_PRPSINFO]
    if not psinfo or b"vmlinux\0" not in psinfo[0].desc:
        return None
    machine = "EM_X86_64" if e_machine == EM_X86_64 else _machine_name(e_machine)
    return machine, loads, notes


def check_path(path: str) -> None:
    """Before anything opens a path spelled ROOT/proc/kcore: the live-kernel
    errors of :func:`kcore_error` (lockdown in confidentiality mode refuses
    it, no kcore, not allowed to open it), each one line saying what to do."""
    root = _root_of(path)
    if root is None:
        return
    if lockdown_mode(root) == "confidentiality":
        raise kcore_error(path, OSError(errno.EPERM, os.strerror(errno.EPERM)), root)
    from kql.atomic import open_regular
    try:
        open_regular(path, "vmcore").close()
    except OSError as e:
        if e.errno in (errno.ENOENT, errno.EPERM, errno.EACCES):
            raise kcore_error(path, e, root) from None
        # the byte source reports anything else


def _sniff(head: bytes, path: str, size: int) -> bool:
    """A kcore: an ELF64 core whose segments all sit at kernel virtual
    addresses (seen in ``head``) with the "vmlinux" process-info note.  A
    /proc/vmcore copy passes the first test, not the second, which reads the
    notes from the file (``head`` may end before them)."""
    if len(head) < 64 or head[:4] != b"\x7fELF" or head[4] != 2 or head[5] != 1:
        return False
    e_type, _m, _v, _e, phoff, _s, _f, _eh, phentsize, phnum = _EHDR.unpack_from(head, 16)[:10]
    if e_type != 4 or phentsize != _PHDR.size:
        return False
    end = phoff + phnum * _PHDR.size
    if end <= len(head):
        loads = [p for p in _PHDR.iter_unpack(head[phoff:end]) if p[0] == PT_LOAD and p[6]]
        if not loads or any(p[3] < _KERNEL_HALF for p in loads):
            return False
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        return _read_header(fd, path) is not None
    except DumpError:
        return False                    # damaged notes: the ELF probe says what is wrong
    finally:
        os.close(fd)


def _open(source, *, zero_excluded: bool = False) -> "KcoreDump":
    """The kcore behind ``source`` (read with pread: /proc/kcore cannot be
    mapped); the Dump closes ``source``."""
    from kql.atomic import open_regular
    path = source.path
    root = _root_of(path)
    try:
        f = open_regular(path, "vmcore")
    except OSError as e:
        raise kcore_error(path, e, root or "/") from None
    fd = os.dup(f.fileno())
    f.close()
    try:
        hdr = _read_header(fd, path)
        if hdr is None:
            raise DumpError(f"{path}: changed while being opened: no longer a kcore")
        dump = _build(fd, path, root, *hdr)
    except BaseException:
        os.close(fd)
        raise
    dump._closers.append(source.close)
    return dump


def _build(fd: int, path: str, root: str | None, machine_name, loads, notes) -> KcoreDump:
    machine = detect_machine(machine_name)
    if machine is None:
        raise DumpError(f"{path}: unsupported ELF machine {machine_name}: kql reads x86_64, "
                        f"arm64 and i386 kernels only")
    vranges = []
    pranges = []
    paddrs = {}
    for _t, _fl, offset, vaddr, paddr, filesz, _memsz, _al in loads:
        vranges.append((vaddr, vaddr + filesz, vaddr + filesz, vaddr + filesz, offset))
        if paddr != _NO_PADDR:
            pranges.append((paddr, paddr + filesz, paddr + filesz, paddr + filesz, offset))
            paddrs[vaddr] = paddr
    vmcoreinfo_raw = b""
    for note in notes:
        if note.name == "VMCOREINFO":
            vmcoreinfo_raw = note.desc.rstrip(b"\0")
    dump = KcoreDump(path=path, format="kcore", machine=machine, phys=None, notes=notes,
                     vmcoreinfo_raw=vmcoreinfo_raw, timestamp=time.time())
    dump.root = root
    kfile = dump._file = KcoreFile(fd, path, dump.stats)
    vsegs = [(s, e, o) for s, e, _f, _m, o in _non_overlapping(sorted(vranges))]
    psegs = [(s, e, o) for s, e, _f, _m, o in _non_overlapping(sorted(pranges))]
    dump._vsegs = _Segments(kfile, vsegs)
    dump._paddrs = {s: paddrs[s] for s, _e, _o in vsegs if s in paddrs}
    dump.phys = KcorePhysical(_Segments(kfile, psegs))
    dump._closers.append(kfile.close)
    return dump


def live_kcore_path(root: str | None = None) -> str:
    """ROOT/proc/kcore, ROOT being ``root``, ``$KQL_LIVE_ROOT`` or ``/``."""
    return os.path.join(root if root is not None else live_root(), "proc/kcore")


PROBE = Probe("kcore", "/proc/kcore", _sniff, _open)
