"""Types from the DWARF of a debug vmlinux (``--vmlinux PATH``), via pyelftools.

A Debian debug vmlinux holds ~160-210 MB of ``.debug_info`` in ~2,400 CUs, and
the kernel repeats most types in every CU.  Parsing every CU's top-level DIEs
with pyelftools takes ~90 s, so there is no up-front index:

- **Finding a name** (``struct task_struct``): the CUs up to ``init/main.c``
  (which includes most core headers) are indexed exactly.  Elsewhere, GCC
  writes a name of 4+ bytes as a ``DW_FORM_strp`` offset into ``.debug_str``
  (shorter ones inline), so we look for those 4 bytes in ``.debug_info``, in
  growing windows, in file order.  At each hit, the CU's abbreviation table
  (parsed by pyelftools) tells where a struct/union/enum/typedef DIE naming it
  would start; pyelftools parses that DIE.  A definition found that way is
  confirmed against the CU's own top-level DIE list before it is used.  The
  first file-scope definition in file order wins (a type defined only inside
  a function is a last resort), so answers do not depend on what was looked
  up before.  A name the linker tail-merged into longer strings has several
  candidate offsets; the one DIEs use is learned from member names of
  ``init/main.c`` or from the first confirmed DIE.
- **Building types**: a DIE becomes a small plain-tuple *record*; ``Type``
  objects are built from records on demand, with pointer/typedef targets,
  member lists and member types lazy (see ``kql.types``).  A struct a CU only
  declares is a ``_DeclType``: it spells ``struct foo`` for free and looks the
  definition up by name (as drgn does) only when its size or members are used.
- **Disk cache** (``<cache_dir>/dwarf-<build-id>.pickle``, temp file +
  rename): records, member lists and name lookups including misses.  A warm
  open reads that file and never opens the DWARF.  What searches learn (CU
  indexes, abbreviation layouts, string offsets) goes to
  ``dwarf-<build-id>.search.pickle``, read only when a new name must be found.

The ELF symbol table (name -> link-time address) is decoded and cached the
same way, in ``symbols-<build-id>.pickle``, only when asked for.
"""

from __future__ import annotations

import bisect
import errno
import functools
import hashlib
import io
import mmap
import os
import struct
import weakref
from pathlib import Path

from kql.atomic import atomic_pickle, default_cache_dir, load_pickle
from kql.errors import DumpError
from kql.types import Member, Type, TypeSourceBase, normalize_base_name

__all__ = ["DwarfTypes", "default_cache_dir", "check_build_id"]

#: Bump when the record layout or the search rules change: old caches are ignored.
CACHE_FORMAT = 4

# Windows of .debug_info searched at a time, growing: the definition of a
# common kernel type is usually in the first few CUs.
_WINDOW_MIN = 1 << 20
_WINDOW_MAX = 32 << 20
# When an abbreviation puts a variable-size attribute before DW_AT_name, every
# start this far before the name is tried.
_MAX_NAME_LEAD = 16

_TAGS = {
    "struct": ("DW_TAG_structure_type",),
    "union": ("DW_TAG_union_type",),
    "enum": ("DW_TAG_enumeration_type",),
    "base": ("DW_TAG_typedef", "DW_TAG_base_type"),
}
_COMPOUND = {"DW_TAG_structure_type": "struct", "DW_TAG_union_type": "union",
             "DW_TAG_enumeration_type": "enum"}
_KIND_OF_TAG = {"DW_TAG_structure_type": "struct", "DW_TAG_union_type": "union",
                "DW_TAG_enumeration_type": "enum", "DW_TAG_typedef": "base",
                "DW_TAG_base_type": "base"}
_QUALIFIER = {"DW_TAG_const_type": "const", "DW_TAG_volatile_type": "volatile",
              "DW_TAG_restrict_type": "restrict", "DW_TAG_atomic_type": None}
_REF_FORMS = frozenset(("DW_FORM_ref1", "DW_FORM_ref2", "DW_FORM_ref4", "DW_FORM_ref8",
                        "DW_FORM_ref_udata"))
_DATA_SIZES = {"DW_FORM_data1": 1, "DW_FORM_data2": 2, "DW_FORM_data4": 4,
               "DW_FORM_data8": 8}
# DW_ATE_*
_ATE_BOOLEAN, _ATE_COMPLEX_FLOAT, _ATE_FLOAT = 0x2, 0x3, 0x4
_ATE_SIGNED, _ATE_SIGNED_CHAR = 0x5, 0x6

# How GCC spells the C integer types; a lookup of "unsigned long" must find the
# DWARF base type "long unsigned int".
_GCC_SPELLING = {
    "short": "short int", "unsigned short": "short unsigned int",
    "long": "long int", "unsigned long": "long unsigned int",
    "long long": "long long int", "unsigned long long": "long long unsigned int",
}

_INCOMPLETE = -1   # names[...] value: only declarations exist
# More copies of a name in .debug_str than this and we look harder for the
# one DIEs use before searching .debug_info for all of them.
_FEW_PATTERNS = 4
# init/main.c is looked for among this many leading CUs.
_PREFIX_MAX = 16

# Attribute forms of a fixed size in 32-bit DWARF (strp & co. are added per CU).
_FIXED_FORM_SIZE = {
    "DW_FORM_data1": 1, "DW_FORM_data2": 2, "DW_FORM_data4": 4, "DW_FORM_data8": 8,
    "DW_FORM_data16": 16, "DW_FORM_ref1": 1, "DW_FORM_ref2": 2, "DW_FORM_ref4": 4,
    "DW_FORM_ref8": 8, "DW_FORM_ref_sig8": 8, "DW_FORM_flag": 1,
    "DW_FORM_flag_present": 0, "DW_FORM_implicit_const": 0, "DW_FORM_strx1": 1,
    "DW_FORM_strx2": 2, "DW_FORM_strx3": 3, "DW_FORM_strx4": 4,
}


def check_build_id(vmlinux_build_id: str | None, dump_build_id: str | None,
                   path: str | os.PathLike) -> None:
    """Raise DumpError unless the two build-ids agree (either unknown: pass)."""
    if not vmlinux_build_id or not dump_build_id:
        return
    if vmlinux_build_id.lower() != dump_build_id.lower():
        raise DumpError(f"vmlinux build-id {vmlinux_build_id} does not match the dump's "
                        f"build-id {dump_build_id} ({path})")


# -- small helpers --------------------------------------------------------------------

class _SectionStream:
    """A read-only file-like view of one section inside an mmap (no copy);
    positions are section offsets, which is what pyelftools expects."""

    __slots__ = ("_buf", "_base", "_size", "_pos", "limit")

    def __init__(self, buf, base: int, size: int):
        self._buf = buf
        self._base = base
        self._size = size
        self._pos = 0
        #: While probing for a DIE at a guessed offset, reads past this
        #: section offset fail (a garbage block length must not copy 100 MB).
        self.limit: int | None = None

    def seek(self, pos: int, whence: int = 0) -> int:
        if whence == 0:
            self._pos = pos
        elif whence == 1:
            self._pos += pos
        else:
            self._pos = self._size + pos
        return self._pos

    def tell(self) -> int:
        return self._pos

    def read(self, n: int = -1) -> bytes:
        pos = self._pos
        end = self._size if n is None or n < 0 else min(pos + n, self._size)
        if self.limit is not None and end > self.limit:
            raise EOFError("read past the probe limit")
        if end <= pos:
            return b""
        self._pos = end
        return self._buf[self._base + pos:self._base + end]

    def find(self, sub: bytes, start: int, end: int) -> int:
        """Section-relative ``find``."""
        hit = self._buf.find(sub, self._base + start, self._base + min(end, self._size))
        return -1 if hit < 0 else hit - self._base


class _Store:
    """What goes to disk.  Kept apart from DwarfTypes so a finalizer can save
    it without holding the DwarfTypes alive."""

    def __init__(self, path: Path | None, header: dict):
        self.path = path
        self.header = header
        self.records: dict[int, tuple] = {}
        self.members: dict[int, list] = {}
        self.names: dict[tuple[str, str], int | None] = {}
        self.cu_offsets: list[int] | None = None
        self.dirty = False

    def load(self) -> bool:
        if self.path is None:
            return False
        data = load_pickle(self.path, self.header)
        if data is None:
            return False
        self.records = data["records"]
        self.members = data["members"]
        self.names = data["names"]
        self.cu_offsets = data["cu_offsets"]
        return True

    def save(self) -> None:
        if not self.dirty or self.path is None:
            return
        # Another process (kql export -j, a second query) may have added
        # entries since we loaded: keep them.
        disk = load_pickle(self.path, self.header)
        if disk is not None:
            for name in ("records", "members", "names"):
                mine = getattr(self, name)
                for k, v in disk[name].items():
                    mine.setdefault(k, v)
        data = dict(self.header, records=self.records, members=self.members,
                    names=self.names, cu_offsets=self.cu_offsets)
        try:
            atomic_pickle(self.path, data)
        except OSError:
            return   # a cache we cannot write is only slower, never wrong
        self.dirty = False


class _LazyAbbrevs:
    """One abbreviation table, parsed by pyelftools' own structs only as far
    as the codes asked for so far."""

    def __init__(self, dwarfinfo, offset: int):
        self._structs = dwarfinfo.structs
        self._stream = dwarfinfo.debug_abbrev_sec.stream
        self._pos = offset
        self._decls: dict = {}
        self._done = False

    def get(self, code: int):
        from elftools.common.utils import struct_parse

        decls = self._decls
        while code not in decls and not self._done:
            got = struct_parse(self._structs.the_Dwarf_uleb128, self._stream, self._pos)
            if got == 0:
                self._done = True
                break
            decls[got] = struct_parse(self._structs.Dwarf_abbrev_declaration, self._stream)
            self._pos = self._stream.tell()
            if got > code and code not in decls:
                # GCC numbers codes 1, 2, ... in order; past it means absent.
                break
        return decls.get(code)


class _DeclarationHit:
    """A probe's answer "a declaration names it here" (no DIE parsed)."""

    tag = None
    offset = None
    attributes = {"DW_AT_declaration": True}


_DECLARATION = _DeclarationHit()


class _DeclType(Type):
    """A struct/union that the DIE only declares (``struct foo;``).  Its name
    and qualifiers are known without a search, so spelling it (``struct foo *``)
    costs nothing; size, members and completeness come from the definition
    found by name on first use."""

    __slots__ = ("_resolve", "_real")

    def __init__(self, kind: str, name: str, resolve, qualifiers: frozenset = frozenset()):
        super().__init__(kind, name, None, members=self._real_members, qualifiers=qualifiers)
        self._resolve = resolve
        self._real = None

    def _definition(self) -> Type:
        if self._real is None:
            self._real = self._resolve()
        return self._real

    def _real_members(self):
        return self._definition().members

    @property
    def size(self):
        return self._definition().size

    @property
    def complete(self):
        return self._definition().complete

    @complete.setter
    def complete(self, value):   # Type.__init__ sets it; the definition decides
        pass

    def qualified(self, qualifiers) -> Type:
        quals = self.qualifiers | frozenset(qualifiers)
        if quals == self.qualifiers:
            return self
        return _DeclType(self.kind, self.name, self._resolve, quals)

    def unqualified(self) -> Type:
        if not self.qualifiers:
            return self
        return _DeclType(self.kind, self.name, self._resolve)


class _SearchCache:
    """What name searches learn about the DWARF (per-CU type indexes, string
    offsets of names, abbreviation layouts).  Saved next to the records but in
    its own file, read only when a search is needed, so that a later query
    that meets a new type skips the slow parts (pyelftools parsing abbrev
    tables and CUs)."""

    def __init__(self, path: Path | None, header: dict):
        self.path = path
        self.header = header
        self.cu_index: dict[int, dict] = {}
        self.strp: dict[str, int] = {}
        self.leads: dict = {}
        self.learned_members = False
        self.prefix: int | None = None
        self.dirty = False
        self.loaded = False

    def load(self) -> None:
        self.loaded = True
        data = load_pickle(self.path, self.header) if self.path else None
        if data is not None:
            self.cu_index = data["cu_index"]
            self.strp = data["strp"]
            self.leads = data["leads"]
            self.learned_members = data["learned_members"]
            self.prefix = data["prefix"]

    def save(self) -> None:
        if not self.dirty or self.path is None:
            return
        disk = load_pickle(self.path, self.header)
        if disk is not None:
            for name in ("cu_index", "strp", "leads"):
                mine = getattr(self, name)
                for k, v in disk[name].items():
                    mine.setdefault(k, v)
            self.learned_members = self.learned_members or disk["learned_members"]
            if self.prefix is None:
                self.prefix = disk["prefix"]
        data = dict(self.header, cu_index=self.cu_index, strp=self.strp, leads=self.leads,
                    learned_members=self.learned_members, prefix=self.prefix)
        try:
            atomic_pickle(self.path, data)
        except OSError:
            return
        self.dirty = False


def _defines(idx: dict, key) -> bool:
    hit = idx.get(key)
    return hit is not None and hit[1]


def _top_offsets(idx: dict) -> set:
    return {off for off, _ in idx.values()}


def _save_all(store: _Store, search: _SearchCache) -> None:
    store.save()
    search.save()


# -- the type source ---------------------------------------------------------------------

class DwarfTypes(TypeSourceBase):
    """A :class:`kql.types.TypeSource` over the DWARF of a debug vmlinux.

    ``cache_dir`` defaults to :func:`default_cache_dir`; pass ``False`` to
    disable the disk cache.  Raises :class:`DumpError` for a file that cannot be
    read, is not ELF or has no DWARF.
    """

    def __init__(self, vmlinux_path: str | os.PathLike, cache_dir=None):
        super().__init__()
        self.path = os.fspath(vmlinux_path)
        try:
            self._file = open(self.path, "rb")
        except OSError as e:
            raise DumpError(f"cannot open vmlinux {self.path}: "
                            f"{e.strerror or errno.errorcode.get(e.errno, e)}") from None
        try:
            self._open_elf()
        except BaseException:
            self._file.close()
            raise
        self._build_id = self._read_build_id()
        if cache_dir is None:
            cache_dir = default_cache_dir()
        key = self._build_id or self._file_key()
        self._cache_dir = Path(cache_dir) if cache_dir is not False else None
        header = {"format": CACHE_FORMAT, "build_id": key}
        store_path = self._cache_dir / f"dwarf-{key}.pickle" if self._cache_dir else None
        self._store = _Store(store_path, header)
        self.cache_hit = self._store.load()
        self._search_cache = _SearchCache(
            self._cache_dir / f"dwarf-{key}.search.pickle" if self._cache_dir else None, header)
        self._finalizer = weakref.finalize(self, _save_all, self._store, self._search_cache)
        self._types: dict[int, Type] = {}
        self._incomplete: dict[tuple[str, str], Type] = {}
        self._void = Type("void")
        self._symbols: dict[str, int] | None = None
        self._closed = False
        self._lazy_tables: dict[int, _LazyAbbrevs] = {}
        self._gcc: bool | None = None
        self._dwarf = None
        self._info = None      # _SectionStream over .debug_info
        self._str = None       # _SectionStream over .debug_str
        self.stats = {"dies_parsed": 0, "dies_probed": 0, "dies_indexed": 0,
                      "searches": 0, "bytes_searched": 0}

    # -- ELF ---------------------------------------------------------------------------
    def _open_elf(self) -> None:
        from elftools.common.exceptions import ELFError
        from elftools.elf.elffile import ELFFile

        magic = self._file.read(4)
        if magic != b"\x7fELF":
            raise DumpError(f"{self.path} is not an ELF file (not a vmlinux)")
        self._file.seek(0)
        try:
            self._elf = ELFFile(self._file)
            has_info = self._elf.get_section_by_name(".debug_info") is not None
        except (ELFError, ValueError, struct.error) as e:
            raise DumpError(f"{self.path}: cannot parse ELF: {e}") from None
        if not has_info:
            raise DumpError(f"{self.path} has no DWARF debug info (.debug_info); "
                            f"pass the debug vmlinux, e.g. from linux-image-*-dbg")
        if self._elf["e_type"] == "ET_REL":
            # Its DWARF only makes sense after relocation (a module, an object
            # file); a vmlinux is linked.
            raise DumpError(f"{self.path} is a relocatable object (a module?), not a vmlinux")
        try:
            self._mm = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError) as e:
            raise DumpError(f"cannot map vmlinux {self.path}: {e}") from None

    def _read_build_id(self) -> str | None:
        for sec in self._elf.iter_sections():
            if sec["sh_type"] != "SHT_NOTE":
                continue
            for note in sec.iter_notes():
                if note["n_type"] == "NT_GNU_BUILD_ID" and note["n_name"] == "GNU":
                    return note["n_desc"]
        return None

    def _file_key(self) -> str:
        st = os.stat(self.path)
        raw = f"{os.path.abspath(self.path)}\0{st.st_size}\0{st.st_mtime_ns}"
        return "nobuildid-" + hashlib.sha1(raw.encode()).hexdigest()[:20]

    def build_id(self) -> str | None:
        """The GNU build-id of the vmlinux as lowercase hex, or None."""
        return self._build_id

    def check_build_id(self, dump_build_id: str | None) -> None:
        """Raise DumpError when the dump's build-id differs from this vmlinux's."""
        check_build_id(self._build_id, dump_build_id, self.path)

    def symbols(self) -> dict[str, int]:
        """ELF ``.symtab``: name -> address as linked (no KASLR).  A global
        symbol wins over a local one of the same name, else the first one."""
        if self._symbols is None:
            path = (self._cache_dir / f"symbols-{self._store.header['build_id']}.pickle"
                    if self._cache_dir else None)
            header = {"format": CACHE_FORMAT, "build_id": self._store.header["build_id"]}
            data = load_pickle(path, header) if path else None
            if data is not None:
                self._symbols = data["symbols"]
            else:
                self._symbols = self._read_symtab()
                if path is not None:
                    try:
                        atomic_pickle(path, dict(header, symbols=self._symbols))
                    except OSError:
                        pass
        return self._symbols

    def _read_symtab(self) -> dict[str, int]:
        symtab = self._elf.get_section_by_name(".symtab")
        if symtab is None or symtab["sh_type"] != "SHT_SYMTAB":
            return {}
        strtab = self._elf.get_section(symtab["sh_link"])
        if symtab["sh_entsize"] != 24 or not self._elf.elfclass == 64:
            # Not an x86_64 vmlinux: take pyelftools' slow path.
            return {s.name: s["st_value"] for s in symtab.iter_symbols()
                    if s.name and s["st_shndx"] != "SHN_UNDEF"}
        strs = strtab.data()
        data = self._mm[symtab["sh_offset"]:symtab["sh_offset"] + symtab["sh_size"]]
        out: dict[str, int] = {}
        for st_name, st_info, _other, shndx, value, _size in struct.iter_unpack("<IBBHQQ", data):
            if not st_name or shndx == 0:
                continue
            stype = st_info & 0xF
            if stype in (3, 4):           # STT_SECTION, STT_FILE
                continue
            end = strs.find(b"\0", st_name)
            name = strs[st_name:end].decode("utf-8", "replace")
            if (st_info >> 4) == 1 or name not in out:   # STB_GLOBAL wins
                out[name] = value
        return out

    # Search state lives in self._search_cache (see _SearchCache).
    @property
    def _cu_index(self) -> dict:
        return self._search_cache.cu_index

    @property
    def _strp(self) -> dict:
        return self._search_cache.strp

    @property
    def _leads_cache(self) -> dict:
        return self._search_cache.leads

    # -- lifecycle ---------------------------------------------------------------------
    def flush(self) -> None:
        """Write new records to the disk cache (also done at exit)."""
        _save_all(self._store, self._search_cache)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.flush()
        try:
            self._mm.close()
        except (BufferError, ValueError):
            pass
        self._file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- TypeSourceBase ------------------------------------------------------------------
    def _find_named(self, kind: str, name: str) -> Type | None:
        if kind not in _TAGS:
            return None
        key = (kind, name)
        names = self._store.names
        if key in names:
            hit = names[key]
        else:
            hit = self._search(kind, name)
            names[key] = hit
            self._store.dirty = True
        if self._store.dirty:
            # Small: saved as we go.  The search state is saved by flush(),
            # close() and at exit.
            self._store.save()
        if hit is None:
            return None
        if hit == _INCOMPLETE:
            return self._incomplete_type(kind, name)
        return self._type(hit)

    def _incomplete_type(self, kind: str, name: str) -> Type:
        key = (kind, name)
        t = self._incomplete.get(key)
        if t is None:
            if kind == "enum":      # "enum foo;" (a GCC extension) or a module's enum
                t = Type(kind, name, None, enumerators=[], complete=False)
            else:
                t = Type(kind, name, None, members=[], complete=False)
            self._incomplete[key] = t
        return t

    # -- records -> Type -------------------------------------------------------------------
    def _record(self, off: int) -> tuple:
        rec = self._store.records.get(off)
        if rec is None:
            rec = self._store.records[off] = self._parse_record(off)
            self._store.dirty = True
        return rec

    def _type(self, off: int | None) -> Type:
        if off is None:
            return self._void
        t = self._types.get(off)
        if t is None:
            t = self._types[off] = self._build(off)
        return t

    def _lazy(self, off: int | None):
        return functools.partial(self._type, off) if off is not None else self._void

    def _build(self, off: int) -> Type:
        rec = self._record(off)
        tag = rec[0]
        if tag == "base":
            _, kind, name, size, signed = rec
            return Type(kind, name, size, signed=signed)
        if tag == "ptr":
            return Type("pointer", None, rec[2], target=self._lazy(rec[1]))
        if tag == "array":
            _, target, lengths = rec
            t = self._lazy(target)
            for n in reversed(lengths):
                t = Type("array", None, None, target=t, length=n)
            return t
        if tag in ("struct", "union"):
            _, name, size = rec
            return Type(tag, name, size, members=functools.partial(self._members, off))
        if tag == "enum":
            _, name, size, signed, enumerators = rec
            return Type("enum", name, size, signed=signed, enumerators=list(enumerators))
        if tag == "typedef":
            return Type("typedef", rec[1], None, target=self._lazy(rec[2]))
        if tag == "func":
            _, ret, params, variadic = rec
            return Type("function", None, None, target=self._lazy(ret),
                        params=[(n, self._type(p)) for n, p in params], variadic=variadic)
        if tag == "qual":
            _, quals, target = rec
            t = self._type(target)
            return t.qualified(quals) if quals else t
        if tag == "decl":
            _, kind, name = rec
            resolve = functools.partial(self._definition, kind, name)
            if kind == "enum" or not name:
                return resolve()
            return _DeclType(kind, name, resolve)
        if tag == "void":
            return self._void
        raise AssertionError(rec)

    def _definition(self, kind: str, name: str | None) -> Type:
        """The definition of a declared-only struct/union/enum, else an
        incomplete type."""
        found = self._find_named(kind, name) if name else None
        return found if found is not None else self._incomplete_type(kind, name)

    def _members(self, off: int) -> list[Member]:
        mems = self._store.members.get(off)
        if mems is None:
            mems = self._store.members[off] = self._parse_members(off)
            self._store.dirty = True
        return [Member(name, functools.partial(self._type, t) if t is not None else self._void,
                       bit_offset, bit_size)
                for name, t, bit_offset, bit_size in mems]

    # -- DWARF access (cold path only) ---------------------------------------------------------
    def _section(self, name: str) -> _SectionStream | None:
        sec = self._elf.get_section_by_name(name)
        if sec is None:
            return None
        if sec["sh_flags"] & 0x800:     # SHF_COMPRESSED: pyelftools inflates
            data = sec.data()
            return _SectionStream(data, 0, len(data))
        return _SectionStream(self._mm, sec["sh_offset"], sec["sh_size"])

    def _dwarfinfo(self):
        if self._closed:
            raise DumpError(f"vmlinux {self.path} was closed; its types cannot be read")
        if self._dwarf is not None:
            return self._dwarf
        from elftools.dwarf.dwarfinfo import DebugSectionDescriptor, DwarfConfig, DWARFInfo

        def desc(name, copy=True):
            sec = self._elf.get_section_by_name(name)
            if sec is None:
                return None
            stream = self._section(name)
            size = stream._size
            if copy:    # small sections: a BytesIO reads faster than the mmap view
                stream = io.BytesIO(stream.read())
            return DebugSectionDescriptor(stream=stream, name=name,
                                          global_offset=sec["sh_offset"],
                                          size=size, address=sec["sh_addr"])

        # Only what type DIEs need; the vmlinux's .rela.debug_* are already
        # applied (ET_EXEC linked with --emit-relocs), so nothing is relocated.
        info = desc(".debug_info", copy=False)
        self._dwarf = DWARFInfo(
            config=DwarfConfig(little_endian=self._elf.little_endian,
                               machine_arch=self._elf.get_machine_arch(),
                               default_address_size=self._elf.elfclass // 8),
            debug_info_sec=info, debug_aranges_sec=None,
            debug_abbrev_sec=desc(".debug_abbrev"), debug_frame_sec=None,
            eh_frame_sec=None, debug_str_sec=desc(".debug_str"), debug_loc_sec=None,
            debug_ranges_sec=None, debug_line_sec=None, debug_pubtypes_sec=None,
            debug_pubnames_sec=None, debug_addr_sec=desc(".debug_addr"),
            debug_str_offsets_sec=desc(".debug_str_offsets"),
            debug_line_str_sec=desc(".debug_line_str"), debug_loclists_sec=None,
            debug_rnglists_sec=None, debug_sup_sec=None, gnu_debugaltlink_sec=None,
            debug_types_sec=None)
        self._info = info.stream
        if not self._search_cache.loaded:
            self._search_cache.load()
        self._str = self._section(".debug_str")
        if self._store.cu_offsets is None:
            self._store.cu_offsets = [cu.cu_offset for cu in self._dwarf.iter_CUs()]
            self._store.dirty = True
        return self._dwarf

    def _cu_for(self, off: int):
        offsets = self._store.cu_offsets
        i = bisect.bisect_right(offsets, off) - 1
        return self._dwarfinfo().get_CU_at(offsets[i])

    def _die(self, off: int):
        self.stats["dies_parsed"] += 1
        return self._cu_for(off).get_DIE_from_refaddr(off)

    @staticmethod
    def _ref(die, attr_name: str) -> int | None:
        attr = die.attributes.get(attr_name)
        if attr is None:
            return None
        if attr.form in _REF_FORMS:
            return attr.raw_value + die.cu.cu_offset
        if attr.form == "DW_FORM_ref_addr":
            return attr.raw_value
        raise DumpError(f"unsupported DWARF reference form {attr.form} at DIE 0x{die.offset:x}")

    @staticmethod
    def _name(die) -> str | None:
        attr = die.attributes.get("DW_AT_name")
        if attr is None:
            return None
        v = attr.value
        return v.decode("utf-8", "replace") if isinstance(v, bytes) else v

    @staticmethod
    def _udata(die, attr_name: str, default=None):
        attr = die.attributes.get(attr_name)
        if attr is None or not isinstance(attr.value, int):
            return default
        return attr.value

    def _parse_record(self, off: int) -> tuple:
        self._dwarfinfo()
        die = self._die(off)
        tag = die.tag
        name = self._name(die)
        if tag == "DW_TAG_base_type":
            enc = self._udata(die, "DW_AT_encoding", _ATE_SIGNED)
            size = self._udata(die, "DW_AT_byte_size")
            if enc == _ATE_BOOLEAN:
                return ("base", "bool", name, size, False)
            if enc in (_ATE_FLOAT, _ATE_COMPLEX_FLOAT):
                return ("base", "float", name, size, True)
            # Spelled like kql.btf does: "unsigned long", not "long unsigned int".
            return ("base", "int", normalize_base_name(name) if name else None, size,
                    enc in (_ATE_SIGNED, _ATE_SIGNED_CHAR))
        if tag == "DW_TAG_pointer_type":
            return ("ptr", self._ref(die, "DW_AT_type"), self._udata(die, "DW_AT_byte_size", 8))
        if tag in _QUALIFIER:
            q = _QUALIFIER[tag]
            return ("qual", frozenset((q,)) if q else frozenset(), self._ref(die, "DW_AT_type"))
        if tag == "DW_TAG_typedef":
            return ("typedef", name, self._ref(die, "DW_AT_type"))
        if tag in ("DW_TAG_structure_type", "DW_TAG_union_type"):
            kind = _COMPOUND[tag]
            if die.attributes.get("DW_AT_declaration") or "DW_AT_byte_size" not in die.attributes:
                return ("decl", kind, name)
            return (kind, name, self._udata(die, "DW_AT_byte_size"))
        if tag == "DW_TAG_enumeration_type":
            if die.attributes.get("DW_AT_declaration"):
                return ("decl", "enum", name)
            return self._parse_enum(die, name)
        if tag == "DW_TAG_array_type":
            lengths = []
            for child in die.iter_children():
                if child.tag in ("DW_TAG_subrange_type", "DW_TAG_enumeration_type"):
                    lengths.append(self._subrange_length(child))
            return ("array", self._ref(die, "DW_AT_type"), tuple(lengths or (None,)))
        if tag == "DW_TAG_subroutine_type":
            params, variadic = [], False
            for child in die.iter_children():
                if child.tag == "DW_TAG_formal_parameter":
                    params.append((self._name(child), self._ref(child, "DW_AT_type")))
                elif child.tag == "DW_TAG_unspecified_parameters":
                    variadic = True
            return ("func", self._ref(die, "DW_AT_type"), tuple(params), variadic)
        if tag == "DW_TAG_unspecified_type":
            return ("void",)
        raise DumpError(f"{self.path}: unsupported DWARF type tag {tag} at DIE 0x{off:x}")

    def _parse_enum(self, die, name) -> tuple:
        signed = None
        under = self._ref(die, "DW_AT_type")
        if under is not None:
            rec = self._record(under)
            while rec[0] in ("typedef", "qual"):
                rec = self._record(rec[2])
            if rec[0] == "base":
                signed = rec[4]
        attrs = [(self._name(c), c.attributes["DW_AT_const_value"])
                 for c in die.iter_children() if c.tag == "DW_TAG_enumerator"]
        if signed is None:
            signed = any(a.form == "DW_FORM_sdata" and a.value < 0 for _, a in attrs)
        # GCC writes negative values as DW_FORM_sdata and the others as
        # data1..8, unsigned: NF_IP_PRI_SELINUX_LAST = 225 is data1 0xe1 in a
        # signed enum.
        enumerators = tuple((n, a.value) for n, a in attrs)
        return ("enum", name, self._udata(die, "DW_AT_byte_size"), signed, enumerators)

    def _subrange_length(self, die) -> int | None:
        count = die.attributes.get("DW_AT_count")
        if count is not None:
            return count.value if count.form in _DATA_SIZES or count.form in (
                "DW_FORM_udata", "DW_FORM_sdata", "DW_FORM_implicit_const") else None
        upper = die.attributes.get("DW_AT_upper_bound")
        if upper is None:
            return None          # flexible array member: "[]"
        if upper.form not in _DATA_SIZES and upper.form not in ("DW_FORM_udata",
                                                                  "DW_FORM_sdata"):
            return None          # variable length (an expression or a reference)
        hi = upper.value   # data1..8 read unsigned: "[256]" is data1 255
        if upper.form == "DW_FORM_data8" and hi == (1 << 64) - 1:
            hi = -1            # an old way to write "[0]" (GCC now uses DW_AT_count 0)
        lo = self._udata(die, "DW_AT_lower_bound", 0)
        return max(0, hi - lo + 1)

    def _parse_members(self, off: int) -> list[tuple]:
        self._dwarfinfo()
        die = self._die(off)
        out = []
        for child in die.iter_children():
            if child.tag != "DW_TAG_member":
                continue
            t = self._ref(child, "DW_AT_type")
            bit_size = self._udata(child, "DW_AT_bit_size")
            out.append((self._name(child), t, self._member_bit_offset(child, t, bit_size),
                        bit_size))
        return out

    def _member_bit_offset(self, die, type_off, bit_size) -> int:
        attrs = die.attributes
        if "DW_AT_data_bit_offset" in attrs:
            return attrs["DW_AT_data_bit_offset"].value
        byte_off = 0
        loc = attrs.get("DW_AT_data_member_location")
        if loc is not None:
            if isinstance(loc.value, int):
                byte_off = loc.value
            else:   # DWARF 2 location expression, e.g. DW_OP_plus_uconst N
                byte_off = self._eval_member_location(die, loc.value)
        bit_off = byte_off * 8
        if "DW_AT_bit_offset" in attrs and bit_size:
            # DWARF 2/3: bits counted from the most significant bit of the
            # storage unit; on little-endian that is the far end.
            storage = self._udata(die, "DW_AT_byte_size")
            if storage is None:
                storage = self._type(type_off).size
            bit_off += storage * 8 - attrs["DW_AT_bit_offset"].value - bit_size
        return bit_off

    def _eval_member_location(self, die, expr) -> int:
        from elftools.dwarf.dwarf_expr import DWARFExprParser

        stack = [0]
        for op in DWARFExprParser(die.cu.structs).parse_expr(expr):
            if op.op_name == "DW_OP_plus_uconst":
                stack[-1] += op.args[0]
            elif op.op_name in ("DW_OP_constu", "DW_OP_consts") or op.op_name.startswith(
                    "DW_OP_const"):
                stack.append(op.args[0])
            elif op.op_name == "DW_OP_plus":
                b = stack.pop()
                stack[-1] += b
            else:
                raise DumpError(f"{self.path}: unsupported member location {op.op_name} "
                                f"at DIE 0x{die.offset:x}")
        return stack[-1]

    # -- name search ---------------------------------------------------------------------------
    def _search(self, kind: str, name: str) -> int | None:
        """DIE offset of the first complete definition of ``kind name`` in
        ``.debug_info`` order, ``_INCOMPLETE`` if only declarations exist, or
        None."""
        self._dwarfinfo()
        self.stats["searches"] += 1
        spellings = [name]
        if kind == "base" and name in _GCC_SPELLING:
            spellings.insert(0, _GCC_SPELLING[name])
        found_decl = False
        for spelling in spellings:
            key = (kind, spelling)
            if self._dwarf.debug_str_offsets_sec is not None:
                hit = self._search_by_scan(key)
            else:
                hit = self._search_by_bytes(key)
            if hit == _INCOMPLETE:
                found_decl = True
            elif hit is not None:
                return hit
        return _INCOMPLETE if found_decl else None

    def _index_cu(self, cu_off: int) -> dict:
        """Top-level named type DIEs of one CU: ``(kind, name) -> (offset,
        is_definition)``, the first definition winning.  Exact, and ~30 us
        per top-level DIE, so done only for the CUs up to init/main.c and for
        CUs where a probe saw the name."""
        idx = self._cu_index.get(cu_off)
        if idx is not None:
            return idx
        idx = self._cu_index[cu_off] = {}
        self._search_cache.dirty = True
        cu = self._dwarfinfo().get_CU_at(cu_off)
        for die in cu.get_top_DIE().iter_children():
            attr = die.attributes.get("DW_AT_name")
            if attr is None:
                continue
            self.stats["dies_indexed"] += 1
            if attr.form == "DW_FORM_strp":
                # Functions and variables too: the name of a type may be
                # one of theirs, and then we know which copy DIEs use.
                self._strp.setdefault(self._name(die), attr.raw_value)
            kind = _KIND_OF_TAG.get(die.tag)
            if kind is None:
                continue
            name = self._name(die)
            old = idx.get((kind, name))
            if old is None or (not old[1] and self._is_definition(die)):
                idx[(kind, name)] = (die.offset, self._is_definition(die))
        return idx

    def _name_patterns(self, name: str) -> list[bytes]:
        """Byte strings that a DW_AT_name of ``name`` is written as."""
        raw = name.encode()
        if len(raw) + 1 <= 4 or self._str is None:
            # GCC writes a name inline (DW_FORM_string) when it is no longer
            # than the strp offset it would otherwise need.
            return [raw + b"\0"]
        known = self._strp.get(name)
        if known is not None:
            return [struct.pack("<I", known)]
        # The linker merged equal strings and tail-merged suffixes, so the one
        # offset all DIEs use is one of the places the bytes occur.
        pats = []
        pos = 0
        needle = raw + b"\0"
        while True:
            q = self._str.find(needle, pos, self._str._size)
            if q < 0:
                break
            pats.append(struct.pack("<I", q))
            pos = q + 1
        if len(pats) > _FEW_PATTERNS and self._learn_member_names():
            # A common word ("mount", "slot") ends hundreds of strings;
            # searching for every copy is slow, so learn the right one from
            # the member names of init/main.c if it is there.
            known = self._strp.get(name)
            if known is not None:
                return [struct.pack("<I", known)]
        return pats

    def _prefix_cus(self) -> int:
        """How many leading CUs to index exactly: up to init/main.c if it is
        among the first few, else just the first."""
        sc = self._search_cache
        if sc.prefix is None:
            sc.prefix = 1
            sc.dirty = True
            di = self._dwarfinfo()
            for i, cu_off in enumerate(self._store.cu_offsets[:_PREFIX_MAX]):
                top = di.get_CU_at(cu_off).get_top_DIE()
                if self._name(top) == "init/main.c":
                    sc.prefix = i + 1
                    break
        return sc.prefix

    def _learn_member_names(self) -> bool:
        """Once: record the string offsets of the member and enumerator names
        of the types in the CUs up to init/main.c (exact: read from real
        DIEs)."""
        if self._search_cache.learned_members:
            return False
        self._search_cache.learned_members = True
        self._search_cache.dirty = True
        for cu_off in self._store.cu_offsets[:self._prefix_cus()]:
            self._index_cu(cu_off)
            cu = self._dwarfinfo().get_CU_at(cu_off)
            for die in cu.get_top_DIE().iter_children():
                if die.tag not in _COMPOUND or not die.has_children:
                    continue
                for child in die.iter_children():
                    attr = child.attributes.get("DW_AT_name")
                    if attr is not None and attr.form == "DW_FORM_strp":
                        self._strp.setdefault(self._name(child), attr.raw_value)
        return True

    def _search_by_bytes(self, key: tuple[str, str]) -> int | None:
        kind, name = key
        offsets = self._store.cu_offsets
        # init/main.c includes most core headers: index it (and the few small
        # CUs before it) exactly; search the bytes of the rest.
        found_decl = False
        prefix = self._prefix_cus()
        for cu_off in offsets[:prefix]:
            hit = self._index_cu(cu_off).get(key)
            if hit is not None:
                if hit[1]:
                    return hit[0]
                found_decl = True
        pats = self._name_patterns(name)
        if not pats:
            return _INCOMPLETE if found_decl else None
        tags = _TAGS[kind]
        nested = None
        info = self._info
        size = info._size
        start = offsets[prefix] if prefix < len(offsets) else size
        window = _WINDOW_MIN
        while start < size:
            end = min(size, start + window)
            window = min(window * 2, _WINDOW_MAX)
            hits = []
            for pat in pats:
                pos = start
                limit = min(size, end + len(pat) - 1)
                while True:
                    p = info.find(pat, pos, limit)
                    if p < 0:
                        break
                    hits.append(p)
                    pos = p + 1
            self.stats["bytes_searched"] += (end - start) * len(pats)
            hits.sort()
            done_cu = -1
            for p in hits:
                if p < done_cu:
                    continue
                if len(pats) == 1 and info._buf[info._base + p:
                                                info._base + p + len(pats[0])] != pats[0]:
                    continue       # a hit of a pattern dropped below
                i = bisect.bisect_right(offsets, p) - 1
                cu_off = offsets[i]
                cu_end = offsets[i + 1] if i + 1 < len(offsets) else size
                idx = self._cu_index.get(cu_off)
                die = None
                if idx is None or (nested is None and not _defines(idx, key)):
                    die = self._die_naming(p, tags, name)
                    if die is None:
                        continue
                if idx is None:
                    if len(pats) > 1 or self._is_definition(die):
                        # A probe can be fooled by bytes that happen to parse
                        # as a DIE; the CU's own top-level list cannot.  It
                        # also tells which copy of the string DIEs use.
                        idx = self._index_cu(cu_off)
                        q = self._strp.get(name)
                        if q is not None and len(pats) > 1:
                            pats = [struct.pack("<I", q)]
                    else:
                        found_decl = True
                        done_cu = cu_end
                        continue
                hit = idx.get(key)
                if hit is not None:
                    if hit[1]:
                        return hit[0]
                    found_decl = True
                if (die is not None and nested is None and self._is_definition(die)
                        and die.offset not in _top_offsets(idx) and self._looks_whole(die)):
                    # Defined inside a function: used only if no CU defines it
                    # at file scope (BTF has such types too).
                    nested = die.offset
                if idx is not None and _defines(idx, key) or nested is not None:
                    done_cu = cu_end
            start = end
        if nested is not None:
            return nested
        return _INCOMPLETE if found_decl else None

    @staticmethod
    def _looks_whole(die) -> bool:
        """A guessed definition DIE whose children parse as members (or
        enumerators): not a chance match in other bytes."""
        want = "DW_TAG_enumerator" if die.tag == "DW_TAG_enumeration_type" else "DW_TAG_member"
        try:
            return all(c.tag == want for c in die.iter_children())
        except Exception:
            return False

    def _die_naming(self, p: int, tags, name: str):
        """A DIE of one of ``tags`` whose DW_AT_name attribute is at section
        offset ``p`` and reads ``name``, or None.  A fast guess: the caller
        confirms definitions with :meth:`_index_cu`."""
        from elftools.dwarf.die import DIE

        cu = self._cu_for(p)
        stream = self._info
        key = (cu["debug_abbrev_offset"], tags, cu.structs.dwarf_format, cu["address_size"])
        if key not in self._leads_cache and "_abbrev_table" not in vars(cu):
            # Parsing a CU's whole abbreviation table costs ~10 ms; most hits
            # are members or declarations, which a few entries tell apart.
            verdict = self._quick_probe(cu, p, tags)
            if verdict is None:
                return None
            if verdict == "declaration":
                return _DECLARATION
        leads = self._name_leads(cu, tags)
        if leads is None:
            starts = range(p - 1, max(cu.cu_die_offset, p - _MAX_NAME_LEAD) - 1, -1)
        else:
            buf, base = stream._buf, stream._base
            starts = [p - lead for code, lead in leads
                      if p - lead >= cu.cu_die_offset
                      and buf[base + p - lead:base + p - lead + len(code)] == code]
        # A type DIE's attributes after its name are a few small constants.
        stream.limit = min(cu.cu_offset + cu.size, p + 256)
        try:
            for start in starts:
                try:
                    die = DIE(cu, stream, start)
                except Exception:    # not a DIE boundary: any parse error means "no"
                    continue
                self.stats["dies_probed"] += 1
                if die.tag not in tags:
                    continue
                attr = die.attributes.get("DW_AT_name")
                if attr is None or attr.offset != p or self._name(die) != name:
                    continue
                if self._refs_in_cu(die, cu):
                    return die
        finally:
            stream.limit = None
        return None

    def _quick_probe(self, cu, p: int, tags) -> str | None:
        """Without the CU's whole abbreviation table: could a DIE of ``tags``
        have its name at ``p``?  None (no), ``"declaration"`` or ``"maybe"``.

        GCC puts DW_AT_name first in struct/union/enum/typedef abbreviations
        and after two data1 attributes in base types, and numbers codes 1, 2,
        ... in table order (true of all 4,573 tables of the 6.1 and 6.12
        Debian kernels); for other producers this answers ``"maybe"`` and the
        caller looks properly."""
        from elftools.common.utils import struct_parse

        if not self._cu_is_gcc(cu):
            return "maybe"
        table = self._lazy_abbrevs(cu)
        stream = self._info
        leads = (0, 2) if "DW_TAG_base_type" in tags else (0,)
        verdict = None
        stream.limit = p
        try:
            for start in range(p - 1, max(cu.cu_die_offset, p - 6) - 1, -1):
                try:
                    code = struct_parse(cu.structs.the_Dwarf_uleb128, stream, start)
                except Exception:
                    continue
                lead = p - stream.tell()
                if lead not in leads:
                    continue
                decl = table.get(code)
                if decl is None or decl["tag"] not in tags:
                    continue
                names = [spec.name for spec in decl["attr_spec"]]
                if "DW_AT_name" not in names:
                    continue
                before = decl["attr_spec"][:names.index("DW_AT_name")]
                if sum(_FIXED_FORM_SIZE.get(spec.form, 99) for spec in before) != lead:
                    continue
                if "DW_AT_declaration" in names:
                    verdict = verdict or "declaration"
                else:
                    return "maybe"
        finally:
            stream.limit = None
        return verdict

    def _cu_is_gcc(self, cu) -> bool:
        """Whether GCC built the kernel, judged once from the CUs up to
        init/main.c (asking each CU would parse its abbreviation table)."""
        if self._gcc is None:
            di = self._dwarfinfo()
            self._gcc = False
            for cu_off in self._store.cu_offsets[:self._prefix_cus()]:
                attr = di.get_CU_at(cu_off).get_top_DIE().attributes.get("DW_AT_producer")
                value = attr.value if attr is not None else b""
                if isinstance(value, bytes) and value.startswith(b"GNU C"):
                    self._gcc = True
        return self._gcc

    def _lazy_abbrevs(self, cu) -> "_LazyAbbrevs":
        off = cu["debug_abbrev_offset"]
        table = self._lazy_tables.get(off)
        if table is None:
            table = self._lazy_tables[off] = _LazyAbbrevs(self._dwarf, off)
        return table

    @staticmethod
    def _refs_in_cu(die, cu) -> bool:
        """Sanity of a guessed DIE: its sibling and type references stay in
        its CU (random bytes rarely do)."""
        end = cu.cu_offset + cu.size
        for name in ("DW_AT_sibling", "DW_AT_type"):
            attr = die.attributes.get(name)
            if attr is None:
                continue
            if attr.form in _REF_FORMS:
                target = cu.cu_offset + attr.raw_value
            elif attr.form == "DW_FORM_ref_addr":
                continue
            else:
                return False
            if not cu.cu_die_offset <= target < end:
                return False
            if name == "DW_AT_sibling" and target <= die.offset:
                return False
        return True

    def _name_leads(self, cu, tags) -> list[tuple[bytes, int]] | None:
        """For each abbreviation of ``tags`` in the CU's table: its code as
        ULEB128 bytes and how many bytes before DW_AT_name the DIE starts.
        None when a variable-size attribute precedes the name (then every
        start is tried)."""
        key = (cu["debug_abbrev_offset"], tags, cu.structs.dwarf_format,
               cu["address_size"])
        leads = self._leads_cache.get(key, False)
        if leads is not False:
            return leads
        leads = []
        # pyelftools has no public iterator over an abbrev table.
        amap = getattr(cu.get_abbrev_table(), "_abbrev_map", None)
        if not isinstance(amap, dict):
            leads = None
        else:
            off = 4 if cu.structs.dwarf_format == 32 else 8
            sizes = dict(_FIXED_FORM_SIZE, DW_FORM_strp=off, DW_FORM_line_strp=off,
                         DW_FORM_sec_offset=off, DW_FORM_ref_addr=off,
                         DW_FORM_addr=cu["address_size"])
            for code, decl in amap.items():
                if decl["tag"] not in tags:
                    continue
                lead = 0
                for spec in decl["attr_spec"]:
                    if spec.name == "DW_AT_name":
                        break
                    size = sizes.get(spec.form)
                    if size is None:
                        leads = None
                        break
                    lead += size
                else:
                    continue       # no name attribute
                if leads is None:
                    break
                uleb = bytearray()
                while True:
                    byte = code & 0x7F
                    code >>= 7
                    uleb.append(byte | (0x80 if code else 0))
                    if not code:
                        break
                leads.append((bytes(uleb), len(uleb) + lead))
        self._leads_cache[key] = leads
        self._search_cache.dirty = True
        return leads

    @staticmethod
    def _is_definition(die) -> bool:
        if die.tag in ("DW_TAG_typedef", "DW_TAG_base_type"):
            return True
        return not die.attributes.get("DW_AT_declaration")

    def _search_by_scan(self, key: tuple[str, str]) -> int | None:
        """Fallback for producers that name DIEs through .debug_str_offsets
        (DW_FORM_strx*, e.g. clang): index every CU in order.  Slow (a minute
        or more on a distribution kernel) but exact."""
        found_decl = False
        for cu_off in self._store.cu_offsets:
            hit = self._index_cu(cu_off).get(key)
            if hit is not None:
                if hit[1]:
                    return hit[0]
                found_decl = True
        return _INCOMPLETE if found_decl else None
