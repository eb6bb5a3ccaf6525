"""Kernel: one open dump with its memory, symbols, types and per-dump cache.

Works without a vmlinux: symbols are decoded from the dump's kallsyms and
types from the BTF inside the dump.  ``vmlinux`` (DWARF types, symtab) and
``system_map`` are optional extras and fallbacks for kernels whose
VMCOREINFO lacks the kallsyms keys (< 6.0).

Everything learnt about a dump lives on its Kernel (``kernel.cache`` for
helpers), never in module globals, so several dumps can be open at once.
"""

from __future__ import annotations

import os
import struct

from kql.errors import DumpError, FaultError
from kql.kallsyms import KallsymsError, Symbol, SymbolTable, load_kallsyms
from kql.object import Object
from kql.types import ChainTypeSource, Type, TypeNotFoundError, TypeSourceBase

__all__ = ["Kernel", "DiskCache", "open_kernel"]


# kernel.cache entries a live kernel keeps across queries (Kernel.refresh):
# facts of the build or of boot, never of the moment.
_STATIC_CACHE = frozenset({"disk_cache", "page_offset", "nr_cpu_ids", "per_cpu_offsets",
                           "possible_cpus", "thread_size", "task_state_array",
                           "task_state_bits"})
_STATIC_SUFFIXES = ("_layout", "_ptr_type", "_offsets", "_offset", "_fields")


class DiskCache:
    """What was parsed from one kernel build, kept between runs in
    ``<directory>/<what>-<build-id>.pickle`` (the directory and the atomic
    writes of :mod:`kql.dwarf`'s cache).  Each ``header`` (format version,
    sizes, CRCs of the dump bytes it was parsed from) must match on load;
    anything wrong with a file (missing, corrupt, another format, unwritable
    directory) is a miss: the cache only ever saves time."""

    def __init__(self, directory, build_id: str):
        from pathlib import Path
        self.directory = Path(directory)
        self.build_id = build_id

    def path(self, what: str):
        return self.directory / f"{what}-{self.build_id}.pickle"

    def load(self, what: str, header: dict) -> dict | None:
        import gc
        from kql.atomic import load_pickle
        header = dict(header, build_id=self.build_id)
        paused = gc.isenabled()
        gc.disable()  # unpickling many small objects would trigger collections for nothing
        try:
            return load_pickle(self.path(what), header)
        except Exception:  # noqa: BLE001 - a cache file is never worth failing for
            return None
        finally:
            if paused:
                gc.enable()

    def save(self, what: str, header: dict, data: dict) -> None:
        from kql.atomic import atomic_pickle
        try:
            atomic_pickle(self.path(what), dict(header, build_id=self.build_id, **data))
        except Exception:  # noqa: BLE001 - unwritable: only slower next time
            pass


class ModuleBtfTypes(TypeSourceBase):
    """Types defined only in loaded modules' split BTF (asked after vmlinux)."""

    def __init__(self, kernel: "Kernel"):
        super().__init__()
        self.kernel = kernel

    def _find_named(self, kind: str, name: str) -> Type | None:
        for btf in self.kernel.module_btfs().values():
            ids = btf._named.get((kind, name))
            if ids:
                return btf.type(ids[0])
        return None


class Kernel:
    """One open dump.  See docs/ARCHITECTURE.md "Kernel"."""

    def __init__(self, dump, vmlinux: str | None = None, system_map: str | None = None,
                 *, cache_dir=None, dwarf_cache_dir=None):
        """``cache_dir``: where what is parsed from this kernel build (kallsyms
        names, the BTF index, DWARF) is cached by build-id; None for
        :func:`kql.atomic.default_cache_dir`, False for no disk cache.
        ``dwarf_cache_dir`` overrides it for DWARF alone."""
        if isinstance(dump, (str, os.PathLike, list)):
            from kql.dump import open_dump
            dump = open_dump(dump)
        self.dump = dump
        self.vmcoreinfo = dump.require_vmcoreinfo()
        self.arch = dump.arch
        self.cache: dict = {}
        self.vmlinux_path = vmlinux
        self.system_map_path = system_map
        self._cache_dir = cache_dir
        self._dwarf_cache_dir = cache_dir if dwarf_cache_dir is None else dwarf_cache_dir
        self._symbols: SymbolTable | None = None
        self._types = None
        self._btf = None
        self._dwarf = None
        self._var_types: dict[str, Type] = {}
        #: problems met while walking kernel data (cycles, unreadable nodes ...)
        self.warnings: list[str] = []
        info = self.vmcoreinfo
        self.kaslr_offset: int = self.arch.kaslr_offset(info)
        self.pgtable_levels: int = self.arch.pgtable_levels(info)
        from kql.memory import KernelVirtual
        sme = int(info.get("NUMBER(sme_mask)", "0") or 0)
        walker = KernelVirtual(dump.phys, self.arch, self.arch.kernel_pgtable_root(info),
                               levels=self.pgtable_levels, sme_mask=sme)
        self.memory = dump.kernel_layer(walker)  # kcore: segments first, then the walk
        self.read = self.memory.read
        self.read_u8 = self.memory.read_u8
        self.read_s8 = self.memory.read_s8
        self.read_u16 = self.memory.read_u16
        self.read_s16 = self.memory.read_s16
        self.read_u32 = self.memory.read_u32
        self.read_s32 = self.memory.read_s32
        self.read_u64 = self.memory.read_u64
        self.read_s64 = self.memory.read_s64
        self._long4 = self.arch.pointer_size == 4      # 32-bit x86
        self.read_pointer = self.memory.read_pointer
        self.read_cstring = self.memory.read_cstring
        if vmlinux:
            self._open_dwarf()  # refuse a wrong vmlinux at open, not at a first type lookup

    def read_ulong(self, addr: int) -> int:
        """A C ``unsigned long`` (the pointer's size: 4 bytes on 32-bit x86)."""
        return self.read_u32(addr) if self._long4 else self.read_u64(addr)

    def read_slong(self, addr: int) -> int:
        """A C ``long``."""
        return self.read_s32(addr) if self._long4 else self.read_s64(addr)

    def _open_dwarf(self):
        if self._dwarf is None:
            from kql.dwarf import DwarfTypes
            self._dwarf = DwarfTypes(self.vmlinux_path, cache_dir=self._dwarf_cache_dir)
            bid = self.vmcoreinfo.get("BUILD-ID")
            if bid and hasattr(self._dwarf, "check_build_id"):
                self._dwarf.check_build_id(bid)
        return self._dwarf

    # -- symbols ------------------------------------------------------------------
    @property
    def symbols(self) -> SymbolTable:
        """The kernel's symbols (kallsyms from the dump; else System.map/vmlinux,
        shifted by the KASLR offset)."""
        if self._symbols is None:
            self._symbols = self._load_symbols()
            for w in self._vmcoreinfo_mismatches(self._symbols):
                self.warn(w)
        return self._symbols

    def _vmcoreinfo_mismatches(self, table: SymbolTable) -> list[str]:
        """VMCOREINFO values that contradict the kernel's own memory:
        ``SYMBOL(x)`` against where the symbols put x (or, for an array the
        kernel allocates, VMCOREINFO_SYMBOL_ARRAY: the pointer stored there),
        ``BUILD-ID`` against the GNU build-id note among the kernel's notes
        (``__start_notes``)."""
        out = []
        for key, value in self.vmcoreinfo.items():
            if key.startswith("SYMBOL(") and not key.startswith("SYMBOL(kallsyms_"):
                sym = table.get(key[7:-1])
                if sym is None or sym.address == int(value, 16):
                    continue
                try:
                    if self.read_pointer(sym.address) == int(value, 16):
                        continue   # e.g. SYMBOL(mem_section)
                except FaultError:
                    pass
                out.append(f"VMCOREINFO {key}={value}, but the symbols put it at "
                           f"{sym.address:x}")
        bid, start, stop = (self.vmcoreinfo.get("BUILD-ID"), table.get("__start_notes"),
                            table.get("__stop_notes"))
        if bid and start is not None and stop is not None and \
                0 < stop.address - start.address <= 1 << 16:
            from kql.dump.base import parse_notes
            try:
                notes = parse_notes(self.read(start.address, stop.address - start.address))
            except DumpError:   # FaultError included: nothing to compare
                notes = []
            own = [n.desc.hex() for n in notes if (n.name, n.type) == ("GNU", 3)]
            if own and bid.lower() not in own:
                out.append(f"VMCOREINFO BUILD-ID={bid}, but the kernel's build-id note says "
                           f"{own[0]}")
        return out

    def _load_symbols(self) -> SymbolTable:
        from kql.symbols import VmlinuxFile, find_system_map, load_system_map, shifted
        errors = []
        try:
            table = load_kallsyms(self.read, self.vmcoreinfo, cache=self.disk_cache,
                                  pointer_size=self.arch.pointer_size, warn=self.warn)
            # Without CONFIG_KALLSYMS_ALL (Debian's arm64 and 686-pae kernels)
            # kallsyms lists functions only: variables need System.map or vmlinux.
            if table.get("init_task") is not None:
                return table
            if not (self.system_map_path or self.vmlinux_path):
                self.system_map_path = find_system_map(self.vmcoreinfo.get("OSRELEASE", ""))
            if not (self.system_map_path or self.vmlinux_path):
                raise DumpError("the dump's kallsyms has no init_task (a kernel built "
                                "without CONFIG_KALLSYMS_ALL, or damaged kallsyms) and no "
                                "System.map for "
                                f"{self.vmcoreinfo.get('OSRELEASE', '?')} was found: "
                                "give --system-map or --vmlinux")
            errors.append("kallsyms has no variables (CONFIG_KALLSYMS_ALL is off)")
        except KallsymsError as e:
            errors.append(str(e))
        if self.system_map_path:
            table = load_system_map(self.system_map_path)
            table = shifted(table, self._link_offset(table),
                            getattr(self.arch, "kernel_space_start", None))
            self._check_symbols(table, "System.map")
            return table
        if self.vmlinux_path:
            v = VmlinuxFile(self.vmlinux_path)
            try:
                table = v.symbols()
            finally:
                v.close()
            table = shifted(table, self._link_offset(table),
                            getattr(self.arch, "kernel_space_start", None))
            self._check_symbols(table, "vmlinux")
            return table
        kallsyms_file = self.dump.kallsyms_file()
        if kallsyms_file is not None and "SYMBOL(kallsyms_names)" not in self.vmcoreinfo:
            # a running kernel before Linux 6.0: its /proc/kallsyms
            from kql.dump.kcore import load_proc_kallsyms
            table = load_proc_kallsyms(kallsyms_file)
            self._check_symbols(table, kallsyms_file)
            return table
        if "SYMBOL(kallsyms_names)" not in self.vmcoreinfo:
            # before Linux 6.0 VMCOREINFO does not say where kallsyms is: search
            # the dump (after a given System.map or vmlinux: they cost less)
            from kql.kallsyms_find import locate_kallsyms
            try:
                return locate_kallsyms(self.read, self.vmcoreinfo, self.arch.pointer_size,
                                       cache=self.disk_cache, warn=self.warn)
            except (KallsymsError, FaultError) as e:
                errors[0] = (f"VMCOREINFO has no kallsyms symbols (Linux < 6.0) and the "
                             f"dump's own were not found ({e}); give --vmlinux or "
                             f"--system-map")
        raise DumpError(f"no kernel symbols: {errors[0]}")

    def _link_offset(self, table: SymbolTable) -> int:
        """Runtime minus link-time address: from SYMBOL(_stext) when both know
        it (works without KERNELOFFSET), else KERNELOFFSET."""
        want = self.vmcoreinfo.get("SYMBOL(_stext)")
        got = table.get("_stext")
        if want and got is not None:
            return int(want, 16) - got.address
        return self.kaslr_offset

    def _check_symbols(self, table: SymbolTable, what: str) -> None:
        for name in ("_stext", "init_uts_ns"):
            want = self.vmcoreinfo.get(f"SYMBOL({name})")
            got = table.get(name)
            if want and got is not None and got.address != int(want, 16):
                raise DumpError(f"{what} does not match the dump: {name} is "
                                f"{got.address:#x} there but {int(want, 16):#x} in VMCOREINFO")

    def symbol(self, name: str) -> Symbol:
        """The symbol called ``name`` (vmlinux first, then loaded modules);
        raises LookupError."""
        sym = self.symbols.get(name)
        if sym is None and self.load_module_symbols():
            sym = self.symbols.get(name)
        if sym is None:
            raise LookupError(f"no symbol named '{name}'")
        return sym

    def symbolize(self, addr: int) -> tuple[Symbol, int] | None:
        """``(symbol, offset)`` for a kernel or module address, or None."""
        hit = self.symbols.symbolize(addr)
        if hit is None and self.load_module_symbols():
            hit = self.symbols.symbolize(addr)
        return hit

    def symbol_text(self, addr: int) -> str | None:
        """``name+0xoff`` (or ``name``) for a kernel address, None for anything
        else (per-CPU symbols sit at small offsets: they are not addresses)."""
        if addr is None or addr < self.page_offset:
            return None
        hit = self.symbolize(addr)
        if hit is None:
            return None
        sym, off = hit
        return f"{sym.name}+{off:#x}" if off else sym.name

    def load_module_symbols(self) -> bool:
        """Attach every loaded module's own symbols (``mod->kallsyms``) to
        :attr:`symbols` as extra tables, once.  Returns True if anything new
        was added."""
        if self.cache.get("module_symbols_loaded"):
            return False
        self.cache["module_symbols_loaded"] = True
        from kql.symbols import module_symbol_tables
        table = self.symbols
        have = {t.module for t in table.extra if t.module}
        added = False
        for t in module_symbol_tables(self):
            if t.module not in have:
                table.add_table(t)
                added = True
        return added

    @property
    def disk_cache(self) -> DiskCache | None:
        """This kernel build's :class:`DiskCache` (None without a BUILD-ID in
        VMCOREINFO or with ``cache_dir=False``)."""
        if "disk_cache" not in self.cache:
            bid = (self.vmcoreinfo.get("BUILD-ID") or "").strip().lower()
            dc = None
            if self._cache_dir is not False and bid and all(
                    c in "0123456789abcdef" for c in bid):
                if self._cache_dir is None:
                    from kql.atomic import default_cache_dir
                    dc = DiskCache(default_cache_dir(), bid)
                else:
                    dc = DiskCache(self._cache_dir, bid)
            self.cache["disk_cache"] = dc
        return self.cache["disk_cache"]

    # -- types --------------------------------------------------------------------
    @property
    def btf(self):
        """The vmlinux BTF in the dump (None if it has none)."""
        if self._btf is None and self.dump.live:
            blob = self.dump.btf_blob("vmlinux")    # /sys/kernel/btf/vmlinux: no memory reads
            if blob is not None:
                from kql.btf import Btf, BtfError
                try:
                    self._btf = Btf(blob, name="vmlinux", cache=self.disk_cache)
                except BtfError as e:
                    self.warn(f"/sys/kernel/btf/vmlinux unusable ({e}): reading the BTF "
                              f"from memory")
        if self._btf is None:
            from kql.btf import load_btf
            syms = self.symbols
            start, stop = syms.get("__start_BTF"), syms.get("__stop_BTF")
            if start is None or stop is None:
                self._btf = False
            else:
                try:
                    self._btf = load_btf(self.read, start.address, stop.address,
                                         cache=self.disk_cache)
                except FaultError as e:
                    raise DumpError(f"cannot read the kernel's BTF: {e}") from None
        return self._btf or None

    @property
    def types(self) -> TypeSourceBase:
        """Type source: DWARF from ``vmlinux`` if given, then the dump's BTF."""
        if self._types is None:
            sources = []
            if self.vmlinux_path:
                sources.append(self._open_dwarf())
            btf = self.btf
            if btf is not None:
                sources.append(btf)
                sources.append(ModuleBtfTypes(self))
            if not sources:
                release = self.vmcoreinfo.get("OSRELEASE", "").strip() or "RELEASE"
                deb_arch = getattr(self.arch, "debian_arch", None)
                raise DumpError(
                    f"no type information: this kernel ({release}, {self.arch.name}) has no "
                    f"BTF (built without CONFIG_DEBUG_INFO_BTF); give --vmlinux with its debug "
                    f"vmlinux (Debian: /usr/lib/debug/boot/vmlinux-{release} in package "
                    f"linux-image-{release}-dbg{':' + deb_arch if deb_arch else ''})")
            self._types = sources[0] if len(sources) == 1 else ChainTypeSource(sources)
        return self._types

    def module_btfs(self) -> dict:
        """Split BTF of every loaded module (``btf_modules``), by module name."""
        btfs = self.cache.get("module_btfs")
        if btfs is None:
            btfs = self.cache["module_btfs"] = {}
            base = self.btf
            if base is None or self.symbols.get("btf_modules") is None:
                return btfs
            from kql.btf import Btf, BtfError
            names = self.dump.btf_module_names() if self.dump.live else None
            if names is not None:       # a running kernel: /sys/kernel/btf/<module>
                for name in names:
                    blob = self.dump.btf_blob(name)
                    try:
                        if blob:
                            btfs[name] = Btf(blob, base=base, name=name)
                    except BtfError as e:
                        self.warn(f"module BTF {name} unusable: {e}")
                return btfs
            from kql.helpers.list import list_for_each_entry
            head = self.var("btf_modules", "struct list_head").address_of_()
            for bm in list_for_each_entry("struct btf_module", head, "list"):
                try:
                    btf = bm.btf
                    name = btf.name.string_().decode(errors="replace")
                    size = btf.data_size.value_()
                    if not 0 < size < 64 << 20:
                        continue
                    btfs[name] = Btf(self.read(btf.data.value_(), size), base=base, name=name)
                except (FaultError, BtfError) as e:
                    self.warn(f"module BTF at {bm.value_():#x} unusable: {e}")
        return btfs

    def find_type(self, name: "str | Type") -> Type:
        return self.types.find_type(name)

    def has_type(self, name: str) -> bool:
        try:
            self.types.find_type(name)
            return True
        except TypeNotFoundError:
            return False

    # -- objects --------------------------------------------------------------------
    def object(self, type: "Type | str", address: int) -> Object:
        """The object of ``type`` at ``address``."""
        return Object(self, type, address)

    def value(self, type: "Type | str", value) -> Object:
        return Object(self, type, value=value)

    def var_type(self, name: str) -> Type:
        """The C type of global variable ``name``."""
        t = self._var_types.get(name)
        if t is not None:
            return t
        btf = self.btf
        # vmlinux BTF has VAR records for per-CPU variables only; trust them first
        t = btf.find_var_type(name) if btf is not None else None
        # the helper modules declare the globals they read (KERNEL_VARIABLES)
        from kql.helpers import kernel_variables
        spelled = kernel_variables().get(name)
        if t is None and spelled is not None:
            if "{" in spelled:
                spelled = spelled.format(nr_cpu_ids=self.nr_cpu_ids,
                                         nr_node_ids=self._nr_node_ids(),
                                         task_state_array_len=self._symbol_len(
                                             "task_state_array", 8))
            t = self.types.find_type(spelled)
        if t is None:
            raise LookupError(f"type of variable '{name}' unknown (BTF describes only "
                              f"per-CPU variables): pass type=")
        self._var_types[name] = t
        return t

    def var(self, name: str, type: "Type | str | None" = None) -> Object:
        """Global variable ``name`` as an Object (per-CPU variables: the CPU-0
        template address; use :func:`kql.helpers.percpu.per_cpu`)."""
        sym = self.symbols.get(name)
        if sym is None:
            raise LookupError(f"no symbol named '{name}'")
        t = self.types.find_type(type) if type is not None else self.var_type(name)
        return Object(self, t, sym.address)

    def _symbol_len(self, name: str, elem: int) -> int:
        sym = self.symbols.get(name)
        return max(1, sym.size // elem) if sym is not None and sym.size else 1

    def _nr_node_ids(self) -> int:
        sym = self.symbols.get("nr_node_ids")
        if sym is None:
            return 1
        try:
            return max(1, self.read_u32(sym.address))
        except FaultError:
            return 1

    # -- facts ------------------------------------------------------------------------
    @property
    def release(self) -> str:
        r = self.vmcoreinfo.get("OSRELEASE") or self.dump.release
        if r:
            return r
        return self.var("init_uts_ns").name.release.string_().decode()

    @property
    def page_offset(self) -> int:
        """Start of the direct map: page_offset_base (KASLR'd memory layout) or
        the default for the number of page-table levels."""
        if "page_offset" not in self.cache:
            value = None
            sym = self.symbols.get("page_offset_base")
            if sym is not None:
                try:
                    value = self.read_u64(sym.address)
                except FaultError:
                    value = None
            if value is None:
                value = self.arch.default_bases[self.pgtable_levels]["page_offset_base"]
            self.cache["page_offset"] = value
        return self.cache["page_offset"]

    @property
    def nr_cpu_ids(self) -> int:
        if "nr_cpu_ids" not in self.cache:
            n = None
            sym = self.symbols.get("nr_cpu_ids")
            if sym is not None:
                try:
                    n = self.read_u32(sym.address)
                except FaultError:
                    n = None
            if not n or n > 8192:
                po = self.symbols.get("__per_cpu_offset")
                n = max(1, po.size // 8) if po is not None and po.size else 1
            self.cache["nr_cpu_ids"] = n
        return self.cache["nr_cpu_ids"]

    def per_cpu_offset(self, cpu: int) -> int:
        """``__per_cpu_offset[cpu]`` (0 on a UP kernel without the array)."""
        offs = self.cache.get("per_cpu_offsets")
        if offs is None:
            sym = self.symbols.get("__per_cpu_offset")
            if sym is None:
                # a UP kernel has no __per_cpu_offset (and one CPU)
                if self.nr_cpu_ids > 1:
                    raise DumpError(f"the kernel's symbols have no __per_cpu_offset, yet "
                                    f"nr_cpu_ids is {self.nr_cpu_ids} (damaged kallsyms?)")
                offs = [0]
            else:
                n = self.nr_cpu_ids
                psize = self.arch.pointer_size
                offs = list(struct.unpack(f"<{n}{'I' if psize == 4 else 'Q'}",
                                          self.read(sym.address, psize * n)))
            self.cache["per_cpu_offsets"] = offs
        if not 0 <= cpu < len(offs):
            raise IndexError(f"CPU {cpu} out of range (nr_cpu_ids {len(offs)})")
        return offs[cpu]

    def per_cpu_address(self, addr: int, cpu: int) -> int:
        """``per_cpu_ptr()``'s address arithmetic: ``addr`` plus CPU ``cpu``'s
        offset, modulo 2**64 (arm64's per-CPU addresses are the image's, and
        its offsets wrap around)."""
        return (addr + self.per_cpu_offset(cpu)) & 0xFFFFFFFFFFFFFFFF

    def _cpumask(self, name: str) -> list[int]:
        sym = self.symbols.get(name)
        if sym is None:
            return [0]
        n = self.nr_cpu_ids
        raw = self.read(sym.address, ((n + 63) // 64) * 8)
        bits = int.from_bytes(raw, "little")
        return [cpu for cpu in range(n) if bits >> cpu & 1]

    def online_cpus(self) -> list[int]:
        """CPU numbers set in ``__cpu_online_mask``."""
        if "online_cpus" not in self.cache:
            self.cache["online_cpus"] = self._cpumask("__cpu_online_mask")
        return self.cache["online_cpus"]

    def possible_cpus(self) -> list[int]:
        if "possible_cpus" not in self.cache:
            self.cache["possible_cpus"] = self._cpumask("__cpu_possible_mask")
        return self.cache["possible_cpus"]

    # -- misc ------------------------------------------------------------------------
    def refresh(self) -> None:
        """Before each query on a live kernel: forget the pages, translations
        and per-kernel facts read so far (tasks, CPUs running them, loaded
        modules and their symbols), so nothing stale is served.  What the
        kernel build fixes (types, layouts, vmlinux symbols) is kept.  A dump
        never changes: nothing to do."""
        if not self.dump.live:
            return
        self.dump.refresh()
        self.memory.flush()
        keep = {k: v for k, v in self.cache.items()
                if k in _STATIC_CACHE or k.endswith(_STATIC_SUFFIXES)}
        self.cache.clear()
        self.cache.update(keep)
        if self._symbols is not None:      # module symbols are loaded again on demand
            self._symbols.extra = [t for t in self._symbols.extra if not t.module]

    def warn(self, message: str) -> None:
        """Record a problem met while walking kernel data (bounded list)."""
        if len(self.warnings) < 1000:
            self.warnings.append(message)

    def close(self) -> None:
        if self._dwarf is not None and hasattr(self._dwarf, "close"):
            self._dwarf.close()
        self.dump.close()

    def __enter__(self) -> "Kernel":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Kernel {self.dump.describe_path()} {self.release}>"


def open_kernel(path, vmlinux: str | None = None, system_map: str | None = None, *,
                zero_excluded: bool = False, **kw) -> Kernel:
    """Open a dump (path or list of split-dump paths) as a :class:`Kernel`: the
    one way kql opens a kernel (``kw``: ``cache_dir``, ``dwarf_cache_dir``).
    The dump is closed again if no kernel can be made of it."""
    from kql.dump import open_dump
    dump = open_dump(path, zero_excluded=zero_excluded)
    try:
        return Kernel(dump, vmlinux=vmlinux, system_map=system_map, **kw)
    except BaseException:
        dump.close()
        raise
