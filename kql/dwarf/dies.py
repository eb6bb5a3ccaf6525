"""DWARF DIEs to records: a type DIE becomes a small plain tuple (cached on
disk by :mod:`kql.dwarf.cache`, turned into :class:`kql.types.Type` by
:class:`kql.dwarf.DwarfTypes`):

``("base", kind, name, size, signed)``, ``("ptr", target, size)``,
``("qual", qualifiers, target)``, ``("typedef", name, target)``,
``(struct|union, name, size)`` (members parsed apart), ``("decl", kind, name)``,
``("enum", name, size, signed, enumerators)``, ``("array", target, lengths)``,
``("func", return, params, variadic)``, ``("void",)``; targets are DIE offsets
(None: void).
"""

from __future__ import annotations

import bisect

from kql.errors import DumpError
from kql.types import normalize_base_name

COMPOUND = {"DW_TAG_structure_type": "struct", "DW_TAG_union_type": "union",
             "DW_TAG_enumeration_type": "enum"}
_QUALIFIER = {"DW_TAG_const_type": "const", "DW_TAG_volatile_type": "volatile",
              "DW_TAG_restrict_type": "restrict", "DW_TAG_atomic_type": None}
REF_FORMS = frozenset(("DW_FORM_ref1", "DW_FORM_ref2", "DW_FORM_ref4", "DW_FORM_ref8",
                       "DW_FORM_ref_udata"))
_DATA_SIZES = {"DW_FORM_data1": 1, "DW_FORM_data2": 2, "DW_FORM_data4": 4,
               "DW_FORM_data8": 8}
# DW_ATE_*
_ATE_BOOLEAN, _ATE_COMPLEX_FLOAT, _ATE_FLOAT = 0x2, 0x3, 0x4
_ATE_SIGNED, _ATE_SIGNED_CHAR = 0x5, 0x6


def die_ref(die, attr_name: str) -> int | None:
    attr = die.attributes.get(attr_name)
    if attr is None:
        return None
    if attr.form in REF_FORMS:
        return attr.raw_value + die.cu.cu_offset
    if attr.form == "DW_FORM_ref_addr":
        return attr.raw_value
    raise DumpError(f"unsupported DWARF reference form {attr.form} at DIE 0x{die.offset:x}")


def die_name(die) -> str | None:
    attr = die.attributes.get("DW_AT_name")
    if attr is None:
        return None
    v = attr.value
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else v


def die_udata(die, attr_name: str, default=None):
    attr = die.attributes.get(attr_name)
    if attr is None or not isinstance(attr.value, int):
        return default
    return attr.value


class DieReader:
    """Reads type DIEs by offset.  ``record(off)`` gives another DIE's record
    (an enum's underlying type), ``type_size(off)`` a type's size (a DWARF 2
    bitfield's storage unit): both from the caller's caches."""

    def __init__(self, file, store, stats: dict, record, type_size):
        self.file = file          # kql.dwarf.sections.DebugFile
        self.store = store        # kql.dwarf.cache.RecordStore (cu_offsets)
        self.stats = stats
        self._record = record
        self._type_size = type_size

    def dwarfinfo(self):
        """pyelftools' DWARFInfo (opened on first use), with the CU offsets known."""
        di = self.file.dwarfinfo()
        if self.store.cu_offsets is None:
            self.store.cu_offsets = [cu.cu_offset for cu in di.iter_CUs()]
            self.store.dirty = True
        return di

    def cu_for(self, off: int):
        """The CU holding section offset ``off``."""
        di = self.dwarfinfo()
        offsets = self.store.cu_offsets
        return di.get_CU_at(offsets[bisect.bisect_right(offsets, off) - 1])

    def die(self, off: int):
        self.stats["dies_parsed"] += 1
        return self.cu_for(off).get_DIE_from_refaddr(off)

    def parse_record(self, off: int) -> tuple:
        """The DIE at ``off`` as a record (a small tuple; see kql.dwarf)."""
        die = self.die(off)
        tag = die.tag
        name = die_name(die)
        if tag == "DW_TAG_base_type":
            enc = die_udata(die, "DW_AT_encoding", _ATE_SIGNED)
            size = die_udata(die, "DW_AT_byte_size")
            if enc == _ATE_BOOLEAN:
                return ("base", "bool", name, size, False)
            if enc in (_ATE_FLOAT, _ATE_COMPLEX_FLOAT):
                return ("base", "float", name, size, True)
            # Spelled like kql.btf does: "unsigned long", not "long unsigned int".
            return ("base", "int", normalize_base_name(name) if name else None, size,
                    enc in (_ATE_SIGNED, _ATE_SIGNED_CHAR))
        if tag == "DW_TAG_pointer_type":
            return ("ptr", die_ref(die, "DW_AT_type"), die_udata(die, "DW_AT_byte_size", 8))
        if tag in _QUALIFIER:
            q = _QUALIFIER[tag]
            return ("qual", frozenset((q,)) if q else frozenset(), die_ref(die, "DW_AT_type"))
        if tag == "DW_TAG_typedef":
            return ("typedef", name, die_ref(die, "DW_AT_type"))
        if tag in ("DW_TAG_structure_type", "DW_TAG_union_type"):
            kind = COMPOUND[tag]
            if die.attributes.get("DW_AT_declaration") or "DW_AT_byte_size" not in die.attributes:
                return ("decl", kind, name)
            return (kind, name, die_udata(die, "DW_AT_byte_size"))
        if tag == "DW_TAG_enumeration_type":
            if die.attributes.get("DW_AT_declaration"):
                return ("decl", "enum", name)
            return self._parse_enum(die, name)
        if tag == "DW_TAG_array_type":
            lengths = []
            for child in die.iter_children():
                if child.tag in ("DW_TAG_subrange_type", "DW_TAG_enumeration_type"):
                    lengths.append(self._subrange_length(child))
            return ("array", die_ref(die, "DW_AT_type"), tuple(lengths or (None,)))
        if tag == "DW_TAG_subroutine_type":
            params, variadic = [], False
            for child in die.iter_children():
                if child.tag == "DW_TAG_formal_parameter":
                    params.append((die_name(child), die_ref(child, "DW_AT_type")))
                elif child.tag == "DW_TAG_unspecified_parameters":
                    variadic = True
            return ("func", die_ref(die, "DW_AT_type"), tuple(params), variadic)
        if tag == "DW_TAG_unspecified_type":
            return ("void",)
        raise DumpError(f"{self.file.path}: unsupported DWARF type tag {tag} at DIE 0x{off:x}")

    def _parse_enum(self, die, name) -> tuple:
        signed = None
        under = die_ref(die, "DW_AT_type")
        if under is not None:
            rec = self._record(under)
            while rec[0] in ("typedef", "qual"):
                rec = self._record(rec[2])
            if rec[0] == "base":
                signed = rec[4]
        attrs = [(die_name(c), c.attributes["DW_AT_const_value"])
                 for c in die.iter_children() if c.tag == "DW_TAG_enumerator"]
        if signed is None:
            signed = any(a.form == "DW_FORM_sdata" and a.value < 0 for _, a in attrs)
        # GCC writes negative values as DW_FORM_sdata and the others as
        # data1..8, unsigned: NF_IP_PRI_SELINUX_LAST = 225 is data1 0xe1 in a
        # signed enum.
        enumerators = tuple((n, a.value) for n, a in attrs)
        return ("enum", name, die_udata(die, "DW_AT_byte_size"), signed, enumerators)

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
        lo = die_udata(die, "DW_AT_lower_bound", 0)
        return max(0, hi - lo + 1)

    def parse_members(self, off: int) -> list[tuple]:
        """``(name, type DIE offset, bit offset, bit size)`` of each member."""
        die = self.die(off)
        out = []
        for child in die.iter_children():
            if child.tag != "DW_TAG_member":
                continue
            t = die_ref(child, "DW_AT_type")
            bit_size = die_udata(child, "DW_AT_bit_size")
            out.append((die_name(child), t, self._member_bit_offset(child, t, bit_size),
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
            storage = die_udata(die, "DW_AT_byte_size")
            if storage is None:
                storage = self._type_size(type_off)
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
                raise DumpError(f"{self.file.path}: unsupported member location {op.op_name} "
                                f"at DIE 0x{die.offset:x}")
        return stack[-1]
