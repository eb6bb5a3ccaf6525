"""Compile a member path (``task->mm->map_count``) into reads.

The path is resolved against the C types once, at plan time: every step
becomes an offset or a pointer load, and the final type decides how the value
is decoded and which Arrow type holds it.  Per row, a compiled path is a few
additions and one read per pointer hop: ``task->mm->map_count`` on a
``struct task_struct *`` column becomes ``[("off", offsetof(mm)), ("load", 0),
("off", offsetof(map_count))]`` then a 4-byte signed read.

>>> _merge([("off", 8), ("off", 16), ("load", 0), ("off", 0), ("off", 4)])
[('off', 24), ('load', 0), ('off', 4)]
"""

from __future__ import annotations

from typing import Any, Callable

from kql.errors import PlanError
from kql.tables.base import BOOL, FLOAT64, INT64, STRING, UINT64
from kql.types import MemberNotFoundError, Type, TypeNotFoundError


class CompiledPath:
    def __init__(self, ops: list[tuple[str, int]], final: Type, bit: tuple[int, int] | None):
        self.ops = ops
        self.final = final
        self.bit = bit
        self.arrow_type, self.decode = _decoder(final, bit)
        self.c_type = final.type_name()

    def reader(self, kernel) -> Callable[[int | None], Any]:
        ops = self.ops
        decode = self.decode
        size = self.final.strip_typedefs().size or 0
        read = kernel.read

        def fn(address):
            if address is None or address == 0:
                return None
            a = address
            for op, n in ops:
                if op == "off":
                    a += n
                else:  # load a pointer
                    a = int.from_bytes(read(a, 8), "little")
                    if a == 0:
                        return None
            return decode(read, a, size)
        return fn


def _decoder(t: Type, bit):
    st = t.strip_typedefs()
    kind = st.kind
    if bit is not None:
        bit_off, bit_size = bit
        nbytes = (bit_off + bit_size + 7) // 8
        signed = st.kind == "int" and st.signed

        def dec_bits(read, a, size):
            v = int.from_bytes(read(a, nbytes), "little") >> bit_off
            v &= (1 << bit_size) - 1
            if signed and v >> (bit_size - 1):
                v -= 1 << bit_size
            return v
        return INT64, dec_bits
    if kind == "pointer":
        return UINT64, lambda read, a, size: int.from_bytes(read(a, 8), "little")
    if kind in ("int", "enum", "bool"):
        signed = kind != "bool" and bool(st.signed)
        if kind == "bool":
            return BOOL, lambda read, a, size: read(a, size) != b"\0" * size
        if size_of(st) == 8 and not signed:
            # u64 values (counters, masks): int64 when they fit, else NULL is
            # wrong, so keep them unsigned.
            return UINT64, lambda read, a, size: int.from_bytes(read(a, 8), "little")
        return INT64, lambda read, a, size: int.from_bytes(read(a, size), "little",
                                                                signed=signed)
    if kind == "float":
        import struct
        fmt = "<d" if size_of(st) == 8 else "<f"
        return FLOAT64, lambda read, a, size: struct.unpack(fmt, read(a, size))[0]
    if kind == "array" and st.target is not None and st.target.is_char():
        def dec_str(read, a, size):
            raw = read(a, size)
            return raw.split(b"\0", 1)[0].decode("utf-8", "replace")
        return STRING, dec_str
    # struct, union, other arrays: the object's address
    return UINT64, lambda read, a, size: a


def size_of(t: Type) -> int:
    return t.size or 0


def compile_path(types, object_type: str, steps, text: str, source: str, span) -> CompiledPath:
    """Resolve ``steps`` (('->'|'.', name) or ('[]', Literal)) starting from a
    value of C type ``object_type`` (a pointer: the column holds its value)."""
    try:
        t = types.find_type(object_type)
    except (TypeNotFoundError, LookupError) as e:
        raise PlanError(f"unknown type '{object_type}': {e}", source, span[0], span[1]) from None
    ops: list[tuple[str, int]] = []
    # State: the column value is an rvalue of type t.  For a pointer we are
    # "at" the pointed-to object after the first '->'; track whether the
    # current thing is an address of an object of type cur (lvalue) or the
    # pointer value itself (pointer rvalue).
    cur = t
    lvalue = False  # False: the current value is the column's pointer value
    bit = None
    for kind, arg in steps:
        st = cur.strip_typedefs()
        if kind in ("->", "."):
            if st.kind == "pointer":
                if lvalue:
                    ops.append(("load", 0))
                cur = st.target
                st = cur.strip_typedefs()
                lvalue = True
            elif not lvalue:
                raise PlanError(f"{text}: '{cur.type_name()}' is not a pointer or structure",
                                source, span[0], span[1])
            if st.kind not in ("struct", "union"):
                raise PlanError(f"{text}: '{cur.type_name()}' is not a structure or union, "
                                f"it has no member '{arg}'", source, span[0], span[1])
            try:
                member, bit_offset = st.member(arg)
            except MemberNotFoundError:
                raise PlanError(f"{text}: '{st.type_name()}' has no member '{arg}'",
                                source, span[0], span[1]) from None
            if member.bit_size:
                bit = (bit_offset % 8, member.bit_size)
            else:
                bit = None
            ops.append(("off", bit_offset // 8))
            cur = member.type
        else:  # '[]'
            index = getattr(arg, "value", None)
            if not isinstance(index, int):
                raise PlanError(f"{text}: array index must be an integer constant",
                                source, span[0], span[1])
            if st.kind == "array":
                if not lvalue:
                    raise PlanError(f"{text}: cannot index a value", source, span[0], span[1])
                elem = st.target
            elif st.kind == "pointer":
                if lvalue:
                    ops.append(("load", 0))
                elem = st.target
                lvalue = True
            else:
                raise PlanError(f"{text}: '{cur.type_name()}' is not an array or pointer",
                                source, span[0], span[1])
            ops.append(("off", index * (elem.strip_typedefs().size or 0)))
            cur = elem
            bit = None
    if not lvalue:
        raise PlanError(f"{text}: empty member path", source, span[0], span[1])
    return CompiledPath(_merge(ops), cur, bit)


def _merge(ops):
    out: list[tuple[str, int]] = []
    for op, n in ops:
        if op == "off" and out and out[-1][0] == "off":
            out[-1] = ("off", out[-1][1] + n)
        elif op == "off" and n == 0:
            continue
        else:
            out.append((op, n))
    return out
