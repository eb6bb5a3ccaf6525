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

The parts, by concern: :mod:`kql.dwarf.sections` (the file: ELF checks,
build-id, mapped sections, pyelftools' DWARFInfo), :mod:`kql.dwarf.cache`
(the two disk caches), :mod:`kql.dwarf.dies` (DIE -> record),
:mod:`kql.dwarf.search` (name -> DIE offset), and here records -> ``Type``.
"""

from __future__ import annotations

import functools
import os
import weakref
from pathlib import Path

from kql.atomic import default_cache_dir
from kql.dwarf.cache import CACHE_FORMAT, RecordStore, SearchCache, save_all
from kql.dwarf.dies import DieReader
from kql.dwarf.search import INCOMPLETE, TAGS, NameSearch
from kql.dwarf.sections import DebugFile
from kql.errors import DumpError
from kql.types import Member, Type, TypeSourceBase

__all__ = ["DwarfTypes", "default_cache_dir", "check_build_id"]


def check_build_id(vmlinux_build_id: str | None, dump_build_id: str | None,
                   path: str | os.PathLike) -> None:
    """Raise DumpError unless the two build-ids agree (either unknown: pass)."""
    if not vmlinux_build_id or not dump_build_id:
        return
    if vmlinux_build_id.lower() != dump_build_id.lower():
        raise DumpError(f"vmlinux build-id {vmlinux_build_id} does not match the dump's "
                        f"build-id {dump_build_id} ({path})")


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


class DwarfTypes(TypeSourceBase):
    """A :class:`kql.types.TypeSource` over the DWARF of a debug vmlinux.

    ``cache_dir`` defaults to :func:`default_cache_dir`; pass ``False`` to
    disable the disk cache.  Raises :class:`DumpError` for a file that cannot be
    read, is not ELF or has no DWARF.
    """

    def __init__(self, vmlinux_path: str | os.PathLike, cache_dir=None):
        super().__init__()
        self.path = os.fspath(vmlinux_path)
        self._file = DebugFile(self.path)
        if cache_dir is None:
            cache_dir = default_cache_dir()
        key = self._file.cache_key()
        cache_dir = Path(cache_dir) if cache_dir is not False else None
        header = {"format": CACHE_FORMAT, "build_id": key}
        self._store = RecordStore(cache_dir / f"dwarf-{key}.pickle" if cache_dir else None, header)
        self.cache_hit = self._store.load()
        search_cache = SearchCache(
            cache_dir / f"dwarf-{key}.search.pickle" if cache_dir else None, header)
        self._finalizer = weakref.finalize(self, save_all, self._store, search_cache)
        self._types: dict[int, Type] = {}
        self._incomplete: dict[tuple[str, str], Type] = {}
        self._void = Type("void")
        self.stats = {"dies_parsed": 0, "dies_probed": 0, "dies_indexed": 0,
                      "searches": 0, "bytes_searched": 0}
        self._dies = DieReader(self._file, self._store, self.stats, record=self._record,
                               type_size=lambda off: self._type(off).size)
        self._search = NameSearch(self._dies, search_cache, self.stats).search
        self._search_cache = search_cache

    def build_id(self) -> str | None:
        """The GNU build-id of the vmlinux as lowercase hex, or None."""
        return self._file.build_id

    def check_build_id(self, dump_build_id: str | None) -> None:
        """Raise DumpError when the dump's build-id differs from this vmlinux's."""
        check_build_id(self._file.build_id, dump_build_id, self.path)

    @property
    def dwarf_opened(self) -> bool:
        """Whether the DWARF sections were read (a warm cache never reads them)."""
        return self._file.dwarf is not None

    # -- lifecycle ---------------------------------------------------------------------
    def flush(self) -> None:
        """Write new records to the disk cache (also done at exit)."""
        save_all(self._store, self._search_cache)

    def close(self) -> None:
        if self._file.closed:
            return
        self.flush()
        self._file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- TypeSourceBase ------------------------------------------------------------------
    def _find_named(self, kind: str, name: str) -> Type | None:
        if kind not in TAGS:
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
        if hit == INCOMPLETE:
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
            rec = self._store.records[off] = self._dies.parse_record(off)
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
            mems = self._store.members[off] = self._dies.parse_members(off)
            self._store.dirty = True
        return [Member(name, functools.partial(self._type, t) if t is not None else self._void,
                       bit_offset, bit_size)
                for name, t, bit_offset, bit_size in mems]
