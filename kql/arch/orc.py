"""x86_64 ORC: decode the kernel's ORC unwind tables and unwind a stack with them.

ORC (arch/x86/include/asm/orc_types.h, arch/x86/kernel/unwind_orc.c) gives,
for every kernel text address, how to find the caller's frame: an
``orc_entry`` of 6 packed bytes ``{s16 sp_offset; s16 bp_offset; u16 flags}``,
and a parallel ``.orc_unwind_ip`` array of ``s32`` place-relative addresses
(``ip = &orc_unwind_ip[i] + orc_unwind_ip[i]``), sorted.  The tables are read
from dump memory (``__start_orc_unwind_ip`` .. ``__stop_orc_unwind`` through
kallsyms; modules: ``mod->arch.orc_unwind_ip``, ``orc_unwind``,
``num_orcs``) or, when the dump's copy is unreadable, from a vmlinux's
``.orc_unwind_ip`` / ``.orc_unwind`` sections moved by the KASLR offset.

The ``flags`` layout changed twice; it is detected (never from the kernel
version) and every entry is decoded to one normalized form
(:class:`OrcEntry`):

- up to 6.2: ``sp_reg:4, bp_reg:4, type:2 (CALL 0, REGS 1, REGS_PARTIAL 2),
  end:1``; an entry with ``sp_reg == UNDEFINED`` ends the stack if ``end``
  is set and is an error otherwise.
- Linux 6.3, commit ffb1b4a41016 ("x86/unwind/orc: Add 'signal' field to ORC
  metadata"): ``signal:1`` at bit 10, ``end`` moves to bit 11.
- Linux 6.4, commit fb799447ae29 ("x86,objtool: Split UNWIND_HINT_EMPTY in
  two"): ``type:3`` (UNDEFINED 0, END_OF_STACK 1, CALL 2, REGS 3,
  REGS_PARTIAL 4), ``signal:1`` at bit 11, no ``end`` bit.  The same release
  added the ``.orc_header`` section (commit b9f174c811e3 "x86/unwind/orc:
  Add ELF section with ORC version identifier"), so ``__start_orc_header``
  in kallsyms (or the section in a vmlinux) says "6.4 layout".

Without a header the layout is chosen by decoding the distinct ``flags``
values every way and keeping the layout under which all of them are valid
(see :func:`detect_layout`).

:class:`OrcUnwinder` walks one stack the way the kernel's
``unwind_next_frame()`` does, crossing ``pt_regs`` frames, ending at an
end-of-stack entry or user-mode registers, falling back to frame pointers
where no entry covers an address, and bounded (frame count, direction,
cycles).  Tables are built once per dump and kept on ``kernel.cache``.
"""

from __future__ import annotations

import bisect
import struct
from array import array
from typing import Callable, Iterator, NamedTuple

from kql.errors import DumpError, FaultError

__all__ = ["OrcEntry", "OrcTable", "OrcTables", "OrcUnwinder", "UnwindFrame",
           "detect_layout", "decode_flags", "orc_tables", "get_unwinder",
           "LAYOUT_6_1", "LAYOUT_6_3", "LAYOUT_6_4", "CALL", "REGS", "REGS_PARTIAL",
           "END", "UNDEFINED", "MAX_FRAMES"]

# ORC_REG_* (unchanged since ORC was added in 4.14).
REG_UNDEFINED = 0
REG_PREV_SP = 1
REG_DX = 2
REG_DI = 3
REG_BP = 4
REG_SP = 5
REG_R10 = 6
REG_R13 = 7
REG_BP_INDIRECT = 8
REG_SP_INDIRECT = 9

# Normalized entry types (kql's own numbering, not any kernel's).
UNDEFINED = 0
END = 1
CALL = 2
REGS = 3
REGS_PARTIAL = 4
TYPE_NAMES = {UNDEFINED: "undefined", END: "end", CALL: "call", REGS: "regs",
              REGS_PARTIAL: "regs_partial"}

# Layout names.
LAYOUT_6_1 = "6.1"      # <= 6.2: type:2, end:1
LAYOUT_6_3 = "6.3"      # 6.3: type:2, signal:1, end:1
LAYOUT_6_4 = "6.4"      # >= 6.4: type:3, signal:1
LAYOUTS = (LAYOUT_6_4, LAYOUT_6_3, LAYOUT_6_1)

#: A walk never reports more frames than this (the kernel's /proc/PID/stack
#: stops at 64; deep IRQ-on-task stacks stay well under 128).
MAX_FRAMES = 128

ORC_ENTRY = struct.Struct("<hhH")
ORC_ENTRY_SIZE = ORC_ENTRY.size           # 6


class OrcEntry(NamedTuple):
    """One decoded ORC entry, normalized across layouts."""

    sp_offset: int
    bp_offset: int
    sp_reg: int
    bp_reg: int
    type: int          # UNDEFINED, END, CALL, REGS, REGS_PARTIAL
    signal: bool       # the next lookup uses ip, not ip - 1

    def __repr__(self) -> str:
        return (f"OrcEntry({TYPE_NAMES[self.type]}, sp_reg={self.sp_reg}, "
                f"sp_offset={self.sp_offset}, bp_reg={self.bp_reg}, "
                f"bp_offset={self.bp_offset}, signal={self.signal})")


#: arch/x86/kernel/unwind_orc.c orc_fp_entry: what a frame-pointer function
#: looks like in ORC terms (used where no entry covers an address).
FP_ENTRY = OrcEntry(16, -16, REG_BP, REG_PREV_SP, CALL, False)
#: unwind_orc.c null_orc_entry: ip 0 (a call through a NULL pointer).
NULL_ENTRY = OrcEntry(8, 0, REG_SP, REG_UNDEFINED, CALL, False)


def decode_flags(flags: int, layout: str) -> tuple[int, int, int, bool] | None:
    """``(sp_reg, bp_reg, type, signal)`` of ``flags`` in ``layout``, or None
    if the value is impossible in that layout."""
    sp_reg = flags & 0xF
    bp_reg = (flags >> 4) & 0xF
    if sp_reg > REG_SP_INDIRECT or bp_reg > REG_SP_INDIRECT:
        return None
    if layout == LAYOUT_6_4:
        if flags >> 12:
            return None
        t = (flags >> 8) & 7
        signal = bool(flags >> 11 & 1)
        if t > 4:
            return None
        kind = (UNDEFINED, END, CALL, REGS, REGS_PARTIAL)[t]
        if kind == UNDEFINED and (sp_reg or bp_reg or signal):
            return None
        return sp_reg, bp_reg, kind, signal
    t = (flags >> 8) & 3
    if t == 3:
        return None
    if layout == LAYOUT_6_3:
        if flags >> 12:
            return None
        signal = bool(flags >> 10 & 1)
        end = flags >> 11 & 1
    else:
        if flags >> 11:
            return None
        end = flags >> 10 & 1
        # Before 6.3 the unwinder set state->signal for the regs types.
        signal = t != 0
    if sp_reg == REG_UNDEFINED:
        kind = END if end else UNDEFINED
    elif end:
        return None              # only the "empty" hint sets end
    else:
        kind = (CALL, REGS, REGS_PARTIAL)[t]
    return sp_reg, bp_reg, kind, signal


def detect_layout(distinct_flags: set[int], has_header: bool) -> str:
    """The flags layout that decodes every value in ``distinct_flags``.

    ``has_header``: an ``.orc_header`` exists (6.4+).  Without one, the 6.3
    and 6.1 layouts are told apart by decoding: the 6.1 layout never sets bit
    11 and its bit 10 (``end``) only goes with an undefined ``sp_reg``; the
    6.3 layout sets bit 10 (``signal``) on regs entries and bit 11 on the
    end-of-stack hints.
    """
    order = (LAYOUT_6_4,) if has_header else (LAYOUT_6_1, LAYOUT_6_3, LAYOUT_6_4)
    best, best_bad = None, None
    for layout in order + tuple(x for x in LAYOUTS if x not in order):
        bad = sum(1 for f in distinct_flags if decode_flags(f, layout) is None)
        if bad == 0:
            return layout
        if best_bad is None or bad < best_bad:
            best, best_bad = layout, bad
    raise DumpError(f"ORC table flags fit no known layout (best {best}: "
                    f"{best_bad} of {len(distinct_flags)} distinct values invalid)")


class OrcTable:
    """One sorted ORC table: the vmlinux's or one module's.

    ``ips`` is a sorted list of addresses; entries are decoded on demand from
    the raw ``.orc_unwind`` bytes (and memoized).
    """

    __slots__ = ("name", "ips", "raw", "layout", "start", "end", "_decoded", "_flags")

    def __init__(self, name: str, ips: list[int], raw: bytes, layout: str):
        self.name = name
        self.ips = ips
        self.raw = raw
        self.layout = layout
        self.start = ips[0] if ips else 0
        self.end = ips[-1] if ips else 0
        self._decoded: dict[int, OrcEntry | None] = {}
        self._flags: dict[int, tuple | None] = {}

    def __len__(self) -> int:
        return len(self.ips)

    def entry(self, i: int) -> OrcEntry | None:
        """Entry ``i`` decoded, None if its flags are invalid."""
        hit = self._decoded.get(i, False)
        if hit is not False:
            return hit
        sp_off, bp_off, flags = ORC_ENTRY.unpack_from(self.raw, ORC_ENTRY_SIZE * i)
        dec = self._flags.get(flags, False)
        if dec is False:
            dec = self._flags[flags] = decode_flags(flags, self.layout)
        e = None if dec is None else OrcEntry(sp_off, bp_off, *dec)
        self._decoded[i] = e
        return e

    def find(self, ip: int) -> OrcEntry | None:
        """The entry for ``ip``: the last one whose address is <= ip (as the
        kernel's ``__orc_find``); None outside the table."""
        if not self.start <= ip <= self.end:
            return None
        i = bisect.bisect_right(self.ips, ip) - 1
        if i < 0:
            return None
        return self.entry(i)

    def __iter__(self) -> Iterator[tuple[int, OrcEntry | None]]:
        for i, ip in enumerate(self.ips):
            yield ip, self.entry(i)

    def __repr__(self) -> str:
        return (f"<OrcTable {self.name} {len(self.ips)} entries "
                f"{self.start:#x}-{self.end:#x} layout {self.layout}>")


def build_table(name: str, ip_base: int, ip_raw: bytes, entries_raw: bytes,
                has_header: bool, layout: str | None = None) -> OrcTable:
    """An :class:`OrcTable` from raw ``.orc_unwind_ip`` bytes (at address
    ``ip_base``) and ``.orc_unwind`` bytes."""
    n = len(ip_raw) // 4
    if len(entries_raw) < n * ORC_ENTRY_SIZE:
        raise DumpError(f"ORC table {name}: {n} addresses but only "
                        f"{len(entries_raw) // ORC_ENTRY_SIZE} entries")
    offs = array("i")
    offs.frombytes(ip_raw[:4 * n])
    mask = (1 << 64) - 1
    ips = [(ip_base + 4 * i + o) & mask for i, o in enumerate(offs)]
    entries_raw = bytes(entries_raw[:n * ORC_ENTRY_SIZE])
    if ips != sorted(ips):
        # The kernel sorts vmlinux's tables at build time (scripts/sorttable)
        # and modules' at load time; keep equal addresses in table order.
        order = sorted(range(n), key=ips.__getitem__)
        ips = [ips[i] for i in order]
        entries_raw = b"".join(entries_raw[6 * i:6 * i + 6] for i in order)
    if layout is None:
        distinct = {f for _, _, f in ORC_ENTRY.iter_unpack(entries_raw)}
        layout = detect_layout(distinct, has_header)
    return OrcTable(name, ips, entries_raw, layout)


class OrcTables:
    """Every ORC table of one dump: vmlinux's plus each module's (loaded on
    first use).  Lives on ``kernel.cache["orc_tables"]``."""

    def __init__(self, kernel, vmlinux_table: OrcTable | None, source: str):
        self.kernel = kernel
        self.vmlinux = vmlinux_table
        self.source = source            # "dump" or "vmlinux"
        self._modules: list[OrcTable] | None = None
        self._ranges: list[tuple[int, int, OrcTable]] = []
        self._module_starts: list[int] = []

    @property
    def layout(self) -> str | None:
        return self.vmlinux.layout if self.vmlinux is not None else None

    def modules(self) -> list[OrcTable]:
        """Module tables, loaded on first use."""
        if self._modules is None:
            loaded = load_module_tables(self.kernel, self.layout)
            self._modules = [t for t, _ in loaded]
            # Like the kernel's orc_module_find(), a module's table answers
            # only for addresses in that module's text (__module_address()):
            # a table also lists the module's freed init text, which a
            # later module's text may now occupy.
            ranges = sorted((lo, hi, t) for t, spans in loaded for lo, hi in spans)
            self._ranges = ranges
            self._module_starts = [r[0] for r in ranges]
        return self._modules

    def table_for(self, ip: int) -> OrcTable | None:
        v = self.vmlinux
        if v is not None and v.start <= ip <= v.end:
            return v
        self.modules()
        i = bisect.bisect_right(self._module_starts, ip) - 1
        if i >= 0:
            lo, hi, t = self._ranges[i]
            if ip < hi:
                return t
        return None

    def find(self, ip: int) -> OrcEntry | None:
        """The ORC entry covering ``ip`` (kernel ``orc_find()``), or None."""
        if ip == 0:
            return NULL_ENTRY
        t = self.table_for(ip)
        return None if t is None else t.find(ip)


def _has_header_symbol(kernel) -> bool:
    return kernel.symbols.get("__start_orc_header") is not None


def load_dump_table(kernel) -> OrcTable:
    """vmlinux's ORC table from dump memory (kallsyms ``__start_orc_unwind_ip``
    ...); raises LookupError without the symbols, FaultError if unreadable."""
    syms = kernel.symbols
    names = ("__start_orc_unwind_ip", "__stop_orc_unwind_ip", "__start_orc_unwind",
             "__stop_orc_unwind")
    addrs = []
    for n in names:
        s = syms.get(n)
        if s is None:
            raise LookupError(f"no symbol {n} (kernel built without CONFIG_UNWINDER_ORC?)")
        addrs.append(s.address)
    ip_start, ip_stop, u_start, u_stop = addrs
    n = (ip_stop - ip_start) // 4
    if n <= 0 or (u_stop - u_start) // ORC_ENTRY_SIZE < n or n > 10_000_000:
        raise DumpError(f"implausible ORC table bounds: {n} addresses, "
                        f"{(u_stop - u_start) // ORC_ENTRY_SIZE} entries")
    ip_raw = kernel.read(ip_start, 4 * n)
    u_raw = kernel.read(u_start, ORC_ENTRY_SIZE * n)
    return build_table("vmlinux", ip_start, ip_raw, u_raw, _has_header_symbol(kernel))


def load_vmlinux_table(path: str, kaslr_offset: int) -> OrcTable:
    """vmlinux's ORC table from the ELF file's sections, moved by the KASLR
    offset; raises DumpError if the file has none."""
    try:
        from elftools.elf.elffile import ELFFile
    except ImportError as e:  # pragma: no cover
        raise DumpError(f"pyelftools is needed to read {path}") from e
    with open(path, "rb") as f:
        elf = ELFFile(f)
        ip_sec = elf.get_section_by_name(".orc_unwind_ip")
        u_sec = elf.get_section_by_name(".orc_unwind")
        if ip_sec is None or u_sec is None:
            raise DumpError(f"{path}: no .orc_unwind_ip/.orc_unwind sections")
        has_header = elf.get_section_by_name(".orc_header") is not None
        base = (ip_sec["sh_addr"] + kaslr_offset) & ((1 << 64) - 1)
        return build_table("vmlinux", base, ip_sec.data(), u_sec.data(), has_header)


def module_text_ranges(mod) -> list[tuple[int, int]]:
    """``[(start, end)]`` of a module's text (core, and init while it is
    still loaded).

    :param mod: ``struct module *``
    """
    kernel = mod.prog_
    out = []
    # Since Linux kernel commit ac3b43283923 ("module: replace module_layout
    # with module_memory") (in v6.4) the regions are mod->mem[MOD_TEXT] and
    # mod->mem[MOD_INIT_TEXT]; before, core_layout / init_layout with a
    # text_size.
    if mod.has_member_("mem"):
        enum = kernel.types.find_type("enum mod_mem_type").strip_typedefs()
        values = dict(enum.enumerators)
        for name in ("MOD_TEXT", "MOD_INIT_TEXT"):
            if name in values:
                m = mod.mem[values[name]]
                base, size = m.base.value_(), m.size.value_()
                if base and size:
                    out.append((base, base + size))
    else:
        for name in ("core_layout", "init_layout"):
            lay = mod.member_(name)
            base, size = lay.base.value_(), lay.text_size.value_()
            if base and size:
                out.append((base, base + size))
    return out


def load_module_tables(kernel, layout: str | None) -> list[tuple[OrcTable, list]]:
    """Each loaded module's ORC table (``mod->arch.orc_unwind_ip``,
    ``orc_unwind``, ``num_orcs``; module tables use vmlinux's layout) with
    the module's text ranges.  Unreadable modules are skipped with a
    warning."""
    from kql.helpers.module import for_each_module, module_name
    out: list[tuple[OrcTable, list]] = []
    if kernel.symbols.get("modules") is None:
        return out                      # no CONFIG_MODULES
    has_header = _has_header_symbol(kernel)
    try:
        mods = list(for_each_module(kernel))
    except (FaultError, LookupError) as e:
        kernel.warn(f"ORC: module list unreadable: {e}")
        return out
    for mod in mods:
        try:
            arch = mod.member_("arch")
            n = arch.num_orcs.value_()
            ip_addr = arch.orc_unwind_ip.value_()
            u_addr = arch.orc_unwind.value_()
            if not n or not ip_addr or not u_addr:
                continue
            if n > 1_000_000:
                raise DumpError(f"implausible num_orcs {n}")
            name = module_name(mod)
            table = build_table(name, ip_addr, kernel.read(ip_addr, 4 * n),
                                kernel.read(u_addr, ORC_ENTRY_SIZE * n), has_header, layout)
            out.append((table, module_text_ranges(mod)))
        except (FaultError, DumpError, AttributeError, LookupError) as e:
            kernel.warn(f"ORC: table of module at {mod.value_():#x} unreadable: {e}")
    return out


def orc_tables(kernel) -> OrcTables:
    """The dump's ORC tables, decoded once and kept on ``kernel.cache``.

    The dump's own copy (what the kernel ran with) comes first; a vmlinux
    given to the Kernel is the fallback when the dump's copy cannot be read.
    """
    t = kernel.cache.get("orc_tables")
    if t is not None:
        return t
    table, source, errors = None, None, []
    try:
        table, source = load_dump_table(kernel), "dump"
    except (LookupError, FaultError, DumpError) as e:
        errors.append(f"dump: {e}")
    vmlinux = getattr(kernel, "vmlinux_path", None)
    if table is None and vmlinux:
        try:
            table = load_vmlinux_table(vmlinux, kernel.kaslr_offset)
            source = "vmlinux"
        except (OSError, DumpError) as e:
            errors.append(f"vmlinux: {e}")
    if table is None:
        kernel.warn("ORC tables unavailable, unwinding with frame pointers: "
                    + "; ".join(errors))
    t = kernel.cache["orc_tables"] = OrcTables(kernel, table, source or "none")
    return t


# -- unwinding -------------------------------------------------------------------------

class UnwindFrame(NamedTuple):
    """One frame as the unwinder found it (names are added by the helpers)."""

    pc: int
    sp: int
    kind: str                   # "call" or "regs" (its CFA holds a pt_regs / iret frame)
    exact: bool                 # pc is an exact address (first frame, after regs),
                                # not a return address
    regs: dict | None           # the pt_regs crossed, for kind "regs"


class StackReader:
    """Reads 8-byte words, a page at a time, for the duration of one walk."""

    __slots__ = ("read", "pages")

    def __init__(self, read: Callable[[int, int], bytes]):
        self.read = read
        self.pages: dict[int, bytes] = {}

    def u64(self, addr: int) -> int:
        off = addr & 0xFFF
        if off > 0xFF8:
            return int.from_bytes(self.read(addr, 8), "little")
        page = addr - off
        data = self.pages.get(page)
        if data is None:
            data = self.pages[page] = self.read(page, 0x1000)
        return _U64.unpack_from(data, off)[0]

    def block(self, addr: int, size: int) -> bytes:
        return self.read(addr, size)


_U64 = struct.Struct("<Q")
_PT_REGS_WORDS = struct.Struct("<21Q")
_IRET = struct.Struct("<5Q")


class OrcUnwinder:
    """Walks x86_64 kernel stacks with ORC (frame pointers as the fallback).

    ``pt_regs_names`` / ``pt_regs_size`` come from the arch hook object (the
    pt_regs layout, arch/x86/include/asm/ptrace.h).
    """

    def __init__(self, kernel):
        self.kernel = kernel
        self.tables = orc_tables(kernel)
        arch = kernel.arch
        offs = arch.pt_regs_offsets
        self.pt_regs_names = tuple(sorted(offs, key=offs.__getitem__))
        self.pt_regs_size = arch.pt_regs_size
        if self.pt_regs_size != _PT_REGS_WORDS.size:      # pragma: no cover
            raise DumpError(f"unexpected pt_regs size {self.pt_regs_size}")

    # ORC REG values read from a full pt_regs (unwind_orc.c get_reg()).
    _REG_NAMES = {REG_DX: "rdx", REG_DI: "rdi", REG_R10: "r10", REG_R13: "r13",
                  REG_BP: "rbp"}

    #: How far (in words) to look for the caller of a function without ORC data.
    SCAN_WORDS = 512

    def _scan_for_caller(self, reader: "StackReader", ip: int, sp: int,
                         hi: int) -> tuple[int, int] | None:
        """``(return address, sp after it)`` of the first word above ``sp``
        that returns from a direct call to the function containing ``ip``."""
        hit = self.kernel.symbolize(ip)
        if hit is None:
            return None
        func = hit[0].address
        read = self.kernel.read
        table_for = self.tables.table_for
        end = sp + 8 * self.SCAN_WORDS
        if hi and sp < hi:
            end = min(end, hi)
        addr = sp
        while addr < end:
            try:
                v = reader.u64(addr)
            except FaultError:
                return None
            if v >= 0xFFFF800000000000 and table_for(v) is not None:
                try:
                    code = read(v - 5, 5)
                except FaultError:
                    code = b""
                if _direct_call_target(code, v) == func:
                    return v, addr + 8
            addr += 8
        return None

    def unwind(self, ip: int, sp: int, bp: int, *, regs: dict | None = None,
               exact: bool = False, stack_bounds: tuple[int, int] | None = None,
               max_frames: int = MAX_FRAMES) -> tuple[list[UnwindFrame], str]:
        """Unwind from ``ip``/``sp``/``bp``.

        :param regs: full registers at the start (a running CPU's), used by
            entries whose CFA is in a register other than sp/bp
        :param exact: ``ip`` is where the CPU was, not a return address
        :param stack_bounds: ``(low, high)`` of the task's stack: inside it
            the stack pointer must grow on every step
        :return: the frames and why the walk stopped: ``"end"`` (an
            end-of-stack entry), ``"user"`` (user-mode registers), or an
            error description
        """
        find = self.tables.find
        reader = StackReader(self.kernel.read)
        u64 = reader.u64
        frames: list[UnwindFrame] = []
        signal = exact
        seen: set[tuple[int, int]] = set()
        lo, hi = stack_bounds if stack_bounds else (0, 0)
        stop = "frame limit"
        full_regs = regs
        for _ in range(max_frames):
            if (ip, sp) in seen:
                stop = "loop"
                break
            seen.add((ip, sp))
            orc = find(ip if signal else ip - 1)
            kind = "call"
            fallback = False
            if orc is None:
                orc = FP_ENTRY
                fallback = True
            t = orc.type
            if t == REGS or t == REGS_PARTIAL:
                kind = "regs"
            if t == END:
                frames.append(UnwindFrame(ip, sp, "call", signal, None))
                stop = "end"
                break
            if t == UNDEFINED:
                frames.append(UnwindFrame(ip, sp, "call", signal, None))
                # No unwind information for this function (objtool skips
                # functions marked STACK_FRAME_NON_STANDARD, such as
                # __crash_kexec(), whose registers a panic dump starts
                # from): look for the return address of a call to it.
                found = self._scan_for_caller(reader, ip, sp, hi)
                if found is None:
                    stop = f"undefined ORC entry at {ip:#x}"
                    break
                ip, sp = found
                signal, full_regs = False, None
                continue
            try:
                # Find the previous frame's stack (CFA).
                r = orc.sp_reg
                if r == REG_SP:
                    cfa = sp + orc.sp_offset
                elif r == REG_BP:
                    cfa = bp + orc.sp_offset
                elif r == REG_SP_INDIRECT:
                    cfa = u64(sp) + orc.sp_offset
                elif r == REG_BP_INDIRECT:
                    cfa = u64(bp + orc.sp_offset)
                elif r in self._REG_NAMES and full_regs is not None and \
                        self._REG_NAMES[r] in full_regs:
                    cfa = full_regs[self._REG_NAMES[r]]
                else:
                    frames.append(UnwindFrame(ip, sp, kind, signal, None))
                    stop = f"no value for ORC sp_reg {r} at {ip:#x}"
                    break
                cfa &= (1 << 64) - 1
                crossed = None
                if t == CALL:
                    new_ip = u64(cfa - 8)
                    new_sp = cfa
                    new_regs = None
                    new_signal = orc.signal if not fallback else False
                elif t == REGS:
                    words = _PT_REGS_WORDS.unpack(reader.block(cfa, self.pt_regs_size))
                    crossed = dict(zip(self.pt_regs_names, words))
                    new_ip, new_sp = crossed["rip"], crossed["rsp"]
                    new_regs = crossed
                    # Before 6.3 the unwinder always took the next ip
                    # literally after a pt_regs; since then the entry's own
                    # signal bit says so (decode_flags() normalizes both).
                    new_signal = orc.signal
                else:   # REGS_PARTIAL: an IRET frame at the CFA
                    ip_, cs, flags, sp_, ss = _IRET.unpack(reader.block(cfa, 40))
                    crossed = {"rip": ip_, "cs": cs, "eflags": flags, "rsp": sp_, "ss": ss}
                    new_ip, new_sp = ip_, sp_
                    new_regs = crossed
                    new_signal = orc.signal
                # Find BP.
                br = orc.bp_reg
                if br == REG_UNDEFINED:
                    # unwind_orc.c get_reg(): from a full pt_regs just
                    # crossed, or for an IRET frame from the full pt_regs
                    # crossed one step before (prev_regs).
                    if t == REGS:
                        bp = crossed["rbp"]
                    elif t == REGS_PARTIAL and full_regs is not None and "rbp" in full_regs:
                        bp = full_regs["rbp"]
                elif br == REG_PREV_SP:
                    bp = u64(cfa + orc.bp_offset)
                elif br == REG_BP:
                    bp = u64(bp + orc.bp_offset)
                else:
                    frames.append(UnwindFrame(ip, sp, kind, signal, crossed))
                    stop = f"unknown ORC bp_reg {br} at {ip:#x}"
                    break
            except FaultError as e:
                frames.append(UnwindFrame(ip, sp, kind, signal, None))
                stop = f"unreadable stack: {e}"
                break
            frames.append(UnwindFrame(ip, sp, kind, signal, crossed))
            if crossed is not None and crossed["cs"] & 3:
                stop = "user"
                break
            # Bounds: on the task's stack the stack pointer only grows; a
            # switch to another stack (IRQ, exception) happens via an
            # indirect sp or a pt_regs frame.
            if lo <= sp < hi and lo <= new_sp < hi and new_sp <= sp:
                stop = f"stack going in the wrong direction at {ip:#x}"
                break
            if lo and hi and lo <= sp < hi and not lo <= new_sp < hi:
                stop = f"stack pointer left the task's stack at {ip:#x}"
                break
            if new_ip == 0 or new_ip < 0xFFFF800000000000:
                stop = "end" if new_ip == 0 else f"return address {new_ip:#x} not in the kernel"
                break
            ip, sp, signal, full_regs = new_ip, new_sp, new_signal, new_regs
        return frames, stop


def _direct_call_target(code: bytes, ret: int) -> int | None:
    """Target of a ``call rel32`` (E8) ending at ``ret``, given the 5 bytes
    before it."""
    if len(code) == 5 and code[0] == 0xE8:
        return (ret + int.from_bytes(code[1:], "little", signed=True)) & ((1 << 64) - 1)
    return None


def get_unwinder(kernel) -> OrcUnwinder:
    """The dump's unwinder (one per Kernel, on ``kernel.cache``)."""
    u = kernel.cache.get("orc_unwinder")
    if u is None:
        if kernel.arch.name != "x86_64":       # pragma: no cover - x86_64 only
            raise DumpError(f"no stack unwinder for {kernel.arch.name}")
        u = kernel.cache["orc_unwinder"] = OrcUnwinder(kernel)
    return u
