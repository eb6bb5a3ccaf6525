"""Symbols from outside the dump's kallsyms: System.map, a vmlinux ELF's symtab.

Both give link-time addresses; :func:`shifted` moves a table by the KASLR
offset.  :class:`VmlinuxFile` also reads a vmlinux by virtual address (its
PT_LOAD segments), which tests use as a stand-in for dump memory.
"""

from __future__ import annotations

import os

import struct

from kql.errors import DumpError, FaultError
from kql.kallsyms import SymbolTable

__all__ = ["load_system_map", "VmlinuxFile", "elf_build_id", "decode_elf_syms", "ELF_SYM",
           "shifted", "module_symbol_tables"]

#: The symbol table entry of each ELF class (little-endian): Elf64_Sym is st_name,
#: st_info, st_other, st_shndx, st_value, st_size; Elf32_Sym puts st_value and
#: st_size after st_name.
ELF_SYM = {64: struct.Struct("<IBBHQQ"), 32: struct.Struct("<IIIBBH")}


def decode_elf_syms(data, elfclass: int):
    """The entries of a symbol table (a vmlinux's .symtab, a module's
    ``kallsyms->symtab`` in memory) as ``(st_name, st_info, st_other,
    st_shndx, st_value, st_size)`` tuples, for either ELF class.  Unpacked
    with ``struct``: pyelftools' per-symbol objects take ~15 s for a kernel's
    120k symbols, ``struct`` 0.05 s."""
    entries = ELF_SYM[elfclass].iter_unpack(data)
    if elfclass == 64:
        return entries
    return ((name, info, other, shndx, value, size)
            for name, value, size, info, other, shndx in entries)


def load_system_map(path: str) -> SymbolTable:
    """Parse ``System.map`` (``ADDR TYPE NAME`` lines; /proc/kallsyms too, whose
    module symbols, ``ADDR TYPE NAME [MODULE]``, are left out)."""
    names: list[str] = []
    kinds: list[str] = []
    addrs: list[int] = []
    try:
        with open(path, "rb") as f:
            data = f.read().decode("latin-1")
    except OSError as e:
        raise DumpError(f"cannot read System.map {path}: {e.strerror}") from None
    for lineno, line in enumerate(data.splitlines(), 1):
        parts = line.split()
        if len(parts) < 3:
            if line.strip():
                raise DumpError(f"{path}:{lineno}: not a System.map line: {line[:60]!r}")
            continue
        try:
            addrs.append(int(parts[0], 16))
        except ValueError:
            raise DumpError(f"{path}:{lineno}: bad address {parts[0][:20]!r}") from None
        if len(parts) > 3 and parts[3].startswith("["):
            addrs.pop()             # /proc/kallsyms: a module's symbol
            continue
        kinds.append(parts[1])
        names.append(parts[2])
    if len(names) < 100:
        # Debian's /boot/System.map is a one-line stub pointing at the -dbg package
        raise DumpError(f"{path}: not a real System.map ({len(names)} symbols)")
    return SymbolTable(names, kinds, addrs, source="System.map")


#: Where a kernel's System.map is looked for, under each root of
#: $KQL_DEBUG_ROOTS (os.pathsep-separated; default "/"), as crash and drgn
#: look for a vmlinux by release.
SYSTEM_MAP_PATHS = ("usr/lib/debug/boot/System.map-{release}", "boot/System.map-{release}",
                    "lib/modules/{release}/System.map")


def find_system_map(release: str) -> str | None:
    """The first System.map for ``release`` in the standard places that
    has variables (Debian's /boot/System.map is a one-line placeholder)."""
    if not release or "/" in release:
        return None
    roots = (os.environ.get("KQL_DEBUG_ROOTS") or "/").split(os.pathsep)
    for root in roots:
        for rel in SYSTEM_MAP_PATHS:
            path = os.path.join(root or "/", rel.format(release=release))
            try:
                with open(path, "rb") as f:
                    if b" init_task\n" in f.read():
                        return path
            except OSError:
                continue
    return None


def shifted(table: SymbolTable, offset: int, kernel_start: int | None = None) -> SymbolTable:
    """The table with every address moved by ``offset`` (KASLR), except
    what lies below the kernel text: absolute constants and x86_64's
    zero-based per-CPU symbols.  Absolute symbols in the image (x86_64's
    init_per_cpu__*, arm64's __kvm_nvhe_* aliases) move with it.  A table
    without text symbols moves what is at or above ``kernel_start`` (the
    start of kernel space; x86_64's by default)."""
    if not offset:
        return table
    floor = 0xFFFF800000000000 if kernel_start is None else kernel_start
    mask = (1 << 64) - 1
    text = [a for a, k in zip(table.addresses, table.kinds) if k in "tT"]
    low = min(text) if text else floor
    addrs = [a if a < low else (a + offset) & mask for a in table.addresses]
    return SymbolTable(table.names, table.kinds, addrs, source=table.source,
                       module=table.module, sizes=table._sizes)


def elf_build_id(elf) -> str | None:
    """The GNU build-id of a pyelftools ``ELFFile`` as lowercase hex, or None."""
    for sec in elf.iter_sections():
        if sec["sh_type"] != "SHT_NOTE":
            continue
        for note in sec.iter_notes():
            # a vmlinux's .notes also holds Xen notes; only GNU's type 3 is the build-id
            if note["n_type"] == "NT_GNU_BUILD_ID" and note["n_name"] == "GNU":
                return note["n_desc"]
    return None


class VmlinuxFile:
    """A vmlinux ELF: sections, symtab, and reads by virtual address."""

    def __init__(self, path: str):
        try:
            from elftools.elf.elffile import ELFFile
        except ImportError as e:  # pragma: no cover
            raise DumpError(f"pyelftools is needed to read {path}") from e
        self.path = path
        try:
            self._file = open(path, "rb")
            self.elf = ELFFile(self._file)
        except (OSError, Exception) as e:
            raise DumpError(f"cannot read vmlinux {path}: {e}") from None
        self.segments = []
        for seg in self.elf.iter_segments():
            if seg["p_type"] == "PT_LOAD":
                self.segments.append((seg["p_vaddr"], seg["p_filesz"], seg["p_memsz"],
                                      seg["p_offset"]))

    def close(self) -> None:
        self._file.close()

    def section_data(self, name: str) -> bytes | None:
        sec = self.elf.get_section_by_name(name)
        return None if sec is None else sec.data()

    def build_id(self) -> str | None:
        return elf_build_id(self.elf)

    def read(self, addr: int, size: int) -> bytes:
        """Bytes at a link-time virtual address (zero-filled bss)."""
        for vaddr, filesz, memsz, off in self.segments:
            if vaddr <= addr and addr + size <= vaddr + memsz:
                rel = addr - vaddr
                out = b""
                if rel < filesz:
                    self._file.seek(off + rel)
                    out = self._file.read(min(size, filesz - rel))
                return out + bytes(size - len(out))
        raise FaultError(addr, f"address {addr:#x} not in any vmlinux segment")

    def symbols(self) -> SymbolTable:
        """Function and object symbols from .symtab, nm-style kind letters."""
        symtab = self.elf.get_section_by_name(".symtab")
        if symtab is None:
            raise DumpError(f"{self.path}: no .symtab")
        elfclass = next((c for c, sym in ELF_SYM.items() if sym.size == symtab["sh_entsize"]),
                        None)
        if elfclass is None:
            raise DumpError(f"{self.path}: .symtab entries are neither Elf64_Sym nor Elf32_Sym")
        entries = decode_elf_syms(symtab.data(), elfclass)
        strtab = self.elf.get_section(symtab["sh_link"]).data()
        letters = {}
        for i, sec in enumerate(self.elf.iter_sections()):
            flags = sec["sh_flags"]
            if flags & 0x4:                         # SHF_EXECINSTR
                letters[i] = "t"
            elif sec["sh_type"] == "SHT_NOBITS":
                letters[i] = "b"
            elif flags & 0x1:                       # SHF_WRITE
                letters[i] = "d"
            else:
                letters[i] = "r"
        names, kinds, addrs, sizes = [], [], [], []
        find = strtab.find
        for st_name, st_info, _other, shndx, value, size in entries:
            stype = st_info & 0xF
            bind = st_info >> 4
            if not st_name or stype in (3, 4) or shndx == 0:   # SECTION, FILE, UNDEF
                continue
            if strtab[st_name] == 0x24:             # "$": an ARM mapping symbol
                continue                            # ($x, $d), as nm and kallsyms skip them
            letter = "a" if shndx == 0xFFF1 else letters.get(shndx, "?")
            if bind == 2:                           # STB_WEAK
                letter = "W" if letter == "t" else "V"
            elif bind == 1:                         # STB_GLOBAL
                letter = letter.upper()
            names.append(strtab[st_name:find(b"\0", st_name)].decode("latin-1"))
            kinds.append(letter)
            addrs.append(value)
            sizes.append(size)
        return SymbolTable(names, kinds, addrs, source="vmlinux", sizes=sizes)


def module_symbol_tables(kernel) -> list[SymbolTable]:
    """One SymbolTable per loaded module, from its own ``mod->kallsyms``
    (what /proc/kallsyms lists for it).  Unreadable modules are skipped with a
    warning on the kernel."""
    try:
        from kql.helpers.module import for_each_module, module_name, module_symbols
    except ImportError:      # pragma: no cover - kql.helpers.module is optional
        return []
    try:
        mods = list(for_each_module(kernel))
    except (FaultError, LookupError) as e:
        kernel.warn(f"module symbols: module list unreadable: {e}")
        return []
    tables = []
    for mod in mods:
        try:
            name = module_name(mod)
            names, kinds, addrs, sizes = [], [], [], []
            for sname, addr, size, letter in module_symbols(mod):
                if addr < 0xFFFF800000000000:
                    continue      # absolute / CRC symbols are not addresses
                names.append(sname)
                kinds.append(letter)
                addrs.append(addr)
                sizes.append(size)
        except FaultError as e:
            kernel.warn(f"module symbols: symbols of module at {mod.value_():#x} "
                        f"unreadable: {e}")
            continue
        if names:
            tables.append(SymbolTable(names, kinds, addrs, source="module kallsyms",
                                      module=name, sizes=sizes))
    return tables
