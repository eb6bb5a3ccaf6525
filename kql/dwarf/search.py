"""Finding a type's DIE by name, without an up-front index (see kql.dwarf):
the CUs up to ``init/main.c`` are indexed exactly; elsewhere the 4-byte
``.debug_str`` offset of the name is looked for in ``.debug_info``, in growing
windows, and each hit is checked against the CU's abbreviations (where a DIE
naming it would start) and confirmed against the CU's top-level DIE list.
:class:`NameSearch` keeps what it learns in a
:class:`~kql.dwarf.cache.SearchCache`.
"""

from __future__ import annotations

import bisect
import struct

from kql.dwarf.dies import COMPOUND, REF_FORMS, die_name

# Windows of .debug_info searched at a time, growing: the definition of a
# common kernel type is usually in the first few CUs.
_WINDOW_MIN = 1 << 20
_WINDOW_MAX = 32 << 20
# When an abbreviation puts a variable-size attribute before DW_AT_name, every
# start this far before the name is tried.
_MAX_NAME_LEAD = 16

TAGS = {
    "struct": ("DW_TAG_structure_type",),
    "union": ("DW_TAG_union_type",),
    "enum": ("DW_TAG_enumeration_type",),
    "base": ("DW_TAG_typedef", "DW_TAG_base_type"),
}
_KIND_OF_TAG = {"DW_TAG_structure_type": "struct", "DW_TAG_union_type": "union",
                "DW_TAG_enumeration_type": "enum", "DW_TAG_typedef": "base",
                "DW_TAG_base_type": "base"}
# How GCC spells the C integer types; a lookup of "unsigned long" must find the
# DWARF base type "long unsigned int".
_GCC_SPELLING = {
    "short": "short int", "unsigned short": "short unsigned int",
    "long": "long int", "unsigned long": "long unsigned int",
    "long long": "long long int", "unsigned long long": "long long unsigned int",
}

INCOMPLETE = -1   # names[...] value: only declarations exist
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


def _defines(idx: dict, key) -> bool:
    hit = idx.get(key)
    return hit is not None and hit[1]


def _top_offsets(idx: dict) -> set:
    return {off for off, _ in idx.values()}


def looks_whole(die) -> bool:
    """A guessed definition DIE whose children parse as members (or
    enumerators): not a chance match in other bytes."""
    want = "DW_TAG_enumerator" if die.tag == "DW_TAG_enumeration_type" else "DW_TAG_member"
    try:
        return all(c.tag == want for c in die.iter_children())
    except Exception:
        return False


def refs_in_cu(die, cu) -> bool:
    """Sanity of a guessed DIE: its sibling and type references stay in
    its CU (random bytes rarely do)."""
    end = cu.cu_offset + cu.size
    for name in ("DW_AT_sibling", "DW_AT_type"):
        attr = die.attributes.get(name)
        if attr is None:
            continue
        if attr.form in REF_FORMS:
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


def is_definition(die) -> bool:
    if die.tag in ("DW_TAG_typedef", "DW_TAG_base_type"):
        return True
    return not die.attributes.get("DW_AT_declaration")


class NameSearch:
    """Name searches over one vmlinux's DWARF (``reader``: a
    :class:`~kql.dwarf.dies.DieReader`; ``cache``: a
    :class:`~kql.dwarf.cache.SearchCache`, loaded on the first search)."""

    def __init__(self, reader, cache, stats: dict):
        self._reader = reader
        self._file = reader.file
        self._store = reader.store
        self._search_cache = cache
        self.stats = stats
        self._lazy_tables: dict[int, _LazyAbbrevs] = {}
        self._gcc: bool | None = None

    def _dwarfinfo(self):
        di = self._reader.dwarfinfo()
        if not self._search_cache.loaded:
            self._search_cache.load()
        return di

    @property
    def _cu_index(self) -> dict:
        return self._search_cache.cu_index

    @property
    def _strp(self) -> dict:
        return self._search_cache.strp

    @property
    def _leads_cache(self) -> dict:
        return self._search_cache.leads

    def search(self, kind: str, name: str) -> int | None:
        """DIE offset of the first complete definition of ``kind name`` in
        ``.debug_info`` order, ``INCOMPLETE`` if only declarations exist, or
        None."""
        di = self._dwarfinfo()
        self.stats["searches"] += 1
        spellings = [name]
        if kind == "base" and name in _GCC_SPELLING:
            spellings.insert(0, _GCC_SPELLING[name])
        found_decl = False
        for spelling in spellings:
            key = (kind, spelling)
            if di.debug_str_offsets_sec is not None:
                hit = self._search_by_scan(key)
            else:
                hit = self._search_by_bytes(key)
            if hit == INCOMPLETE:
                found_decl = True
            elif hit is not None:
                return hit
        return INCOMPLETE if found_decl else None

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
                self._strp.setdefault(die_name(die), attr.raw_value)
            kind = _KIND_OF_TAG.get(die.tag)
            if kind is None:
                continue
            name = die_name(die)
            old = idx.get((kind, name))
            if old is None or (not old[1] and is_definition(die)):
                idx[(kind, name)] = (die.offset, is_definition(die))
        return idx

    def _name_patterns(self, name: str) -> list[bytes]:
        """Byte strings that a DW_AT_name of ``name`` is written as."""
        raw = name.encode()
        if len(raw) + 1 <= 4 or self._file.str is None:
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
            q = self._file.str.find(needle, pos, self._file.str._size)
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
                if die_name(top) == "init/main.c":
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
                if die.tag not in COMPOUND or not die.has_children:
                    continue
                for child in die.iter_children():
                    attr = child.attributes.get("DW_AT_name")
                    if attr is not None and attr.form == "DW_FORM_strp":
                        self._strp.setdefault(die_name(child), attr.raw_value)
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
            return INCOMPLETE if found_decl else None
        tags = TAGS[kind]
        nested = None
        info = self._file.info
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
                    if len(pats) > 1 or is_definition(die):
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
                if (die is not None and nested is None and is_definition(die)
                        and die.offset not in _top_offsets(idx) and looks_whole(die)):
                    # Defined inside a function: used only if no CU defines it
                    # at file scope (BTF has such types too).
                    nested = die.offset
                if idx is not None and _defines(idx, key) or nested is not None:
                    done_cu = cu_end
            start = end
        if nested is not None:
            return nested
        return INCOMPLETE if found_decl else None

    def _die_naming(self, p: int, tags, name: str):
        """A DIE of one of ``tags`` whose DW_AT_name attribute is at section
        offset ``p`` and reads ``name``, or None.  A fast guess: the caller
        confirms definitions with :meth:`_index_cu`."""
        from elftools.dwarf.die import DIE

        cu = self._reader.cu_for(p)
        stream = self._file.info
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
                if attr is None or attr.offset != p or die_name(die) != name:
                    continue
                if refs_in_cu(die, cu):
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
        stream = self._file.info
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
            table = self._lazy_tables[off] = _LazyAbbrevs(self._dwarfinfo(), off)
        return table

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
        return INCOMPLETE if found_decl else None
