"""drgn-style Objects: a typed value in (or read from) the dump.

An :class:`Object` is either a *reference* (it has an ``address_``; bytes are
read when needed) or a *value* (it holds its bytes or its int).  Struct
members are attributes (``task.comm``); a pointer's attribute access
dereferences it first (``task.signal.nr_threads``), like drgn.  API names end
in ``_`` so they never hide a member.

Reading a scalar member is one small ``kernel.read``; ``obj.read_()`` reads a
whole struct once, after which member access slices the saved bytes.
Unreadable memory raises :class:`kql.errors.FaultError`.
"""

from __future__ import annotations

import struct
from typing import Any

from kql.errors import FaultError
from kql.types import MemberNotFoundError, NoMemberError, Type, pointer_to

__all__ = ["Object", "container_of", "NULL", "cast"]

_FLOAT = {4: struct.Struct("<f"), 8: struct.Struct("<d")}


def _resolve_type(kernel, t) -> Type:
    if isinstance(t, Type):
        return t
    return kernel.types.find_type(t)


class Object:
    """A typed object.  See the module docstring."""

    __slots__ = ("prog_", "type_", "_t", "address_", "_value", "_bitpos", "bit_field_size_")

    def __init__(self, kernel, type: "Type | str", address: int | None = None,
                 value: Any = None, *, bit_offset: int = 0, bit_field_size: int | None = None):
        t = _resolve_type(kernel, type)
        self.prog_ = kernel
        self.type_ = t
        self._t = t.strip_typedefs()
        self.address_ = address
        if value is not None and not isinstance(value, (bytes, bytearray)):
            value = _normalize_value(self._t, value)
        self._value = value
        self._bitpos = bit_offset
        self.bit_field_size_ = bit_field_size
        if address is None and value is None:
            raise ValueError("an Object needs an address or a value")

    # -- construction --------------------------------------------------------------
    @staticmethod
    def _make(kernel, t: Type, st: Type, address, value, bitpos=0, bitsize=None) -> "Object":
        o = object.__new__(Object)
        o.prog_ = kernel
        o.type_ = t
        o._t = st
        o.address_ = address
        o._value = value
        o._bitpos = bitpos
        o.bit_field_size_ = bitsize
        return o

    # -- raw bytes ------------------------------------------------------------------
    def _size(self) -> int:
        size = self._t.size
        if size is None:
            raise TypeError(f"cannot read object of incomplete type '{self.type_.type_name()}'")
        return size

    def _bytes(self) -> bytes:
        v = self._value
        if isinstance(v, (bytes, bytearray)):
            return v
        if v is not None:
            size = self._size()
            return (v & ((1 << (8 * size)) - 1)).to_bytes(size, "little")
        return self.prog_.read(self.address_, self._size())

    def read_(self) -> "Object":
        """A value copy of this object (one read; members then come from the copy)."""
        if self.address_ is None:
            return self
        if self._t.kind in ("int", "enum", "pointer", "bool"):
            return Object._make(self.prog_, self.type_, self._t, None, self.value_())
        if self.bit_field_size_:
            return self
        return Object._make(self.prog_, self.type_, self._t, None, self._bytes())

    # -- values -----------------------------------------------------------------------
    def value_(self):
        """The Python value: int (integers, enums, pointers), bool, float,
        list (arrays), dict (structs/unions)."""
        t = self._t
        kind = t.kind
        v = self._value
        if v is None:
            if kind == "pointer":
                return int.from_bytes(self.prog_.read(self.address_, t.size or 8), "little")
        elif type(v) is int or type(v) is bool:
            return v
        elif not isinstance(v, (bytes, bytearray)):
            return v
        if kind in ("int", "enum", "pointer", "bool"):
            if self.bit_field_size_:
                return self._bitfield_value()
            raw = self._bytes()
            if kind == "pointer":
                return int.from_bytes(raw, "little")
            val = int.from_bytes(raw, "little", signed=t.signed)
            return bool(val) if kind == "bool" else val
        if kind == "float":
            return _FLOAT[t.size].unpack(self._bytes())[0]
        if kind == "array":
            raw = self._bytes()
            esize = t.target.size
            et = t.target
            est = et.strip_typedefs()
            return [Object._make(self.prog_, et, est, None, raw[i * esize:(i + 1) * esize]).value_()
                    for i in range(t.length or 0)]
        if kind in ("struct", "union"):
            raw = self._bytes()
            out = {}
            for m in t.members:
                if m.name is None:
                    sub = self._member_obj(m, m.bit_offset, raw)
                    out.update(sub.value_())
                else:
                    out[m.name] = self._member_obj(m, m.bit_offset, raw).value_()
            return out
        raise TypeError(f"cannot get the value of '{self.type_.type_name()}'")

    def _bitfield_value(self) -> int:
        bitpos = self._bitpos
        nbits = self.bit_field_size_
        nbytes = (bitpos + nbits + 7) >> 3
        v = self._value
        raw = v[:nbytes] if v is not None else self.prog_.read(self.address_, nbytes)
        val = (int.from_bytes(raw, "little") >> bitpos) & ((1 << nbits) - 1)
        if self._t.signed and val >> (nbits - 1):
            val -= 1 << nbits
        return bool(val) if self._t.kind == "bool" else val

    def __int__(self) -> int:
        v = self.value_()
        if isinstance(v, (list, dict)):
            raise TypeError(f"cannot convert '{self.type_.type_name()}' to int")
        return int(v)

    __index__ = __int__

    def __bool__(self) -> bool:
        if self._t.kind in ("struct", "union", "array"):
            raise TypeError(f"cannot convert '{self.type_.type_name()}' to bool")
        return bool(self.value_())

    def __float__(self) -> float:
        return float(self.value_())

    # -- members --------------------------------------------------------------------
    def _member_obj(self, m, bit_offset: int, raw=None) -> "Object":
        mt = m.type
        st = mt.strip_typedefs()
        byte_off = bit_offset >> 3
        bitpos = bit_offset & 7
        bitsize = m.bit_size
        if raw is None:
            raw = self._value
        if raw is not None:
            if bitsize:
                nbytes = (bitpos + bitsize + 7) >> 3
            else:
                nbytes = st.size or 0
            return Object._make(self.prog_, mt, st, None, raw[byte_off:byte_off + nbytes],
                                bitpos, bitsize)
        return Object._make(self.prog_, mt, st, self.address_ + byte_off, None, bitpos, bitsize)

    def member_(self, name: str) -> "Object":
        """The member called ``name`` (a path like ``"a.b"`` works); pointers to
        structs are dereferenced first.  Raises AttributeError."""
        t = self._t
        if t.kind == "pointer":
            v = self._value
            base = v if type(v) is int else self.value_()
            raw = None
            st = t._cache
            if st is None:
                st = t._cache = t.target.strip_typedefs()
        else:
            base = self.address_
            raw = self._value
            st = t
        plans = st._cache
        if plans is None:
            if st.kind not in ("struct", "union"):
                raise NoMemberError(f"'{self.type_.type_name()}' has no member '{name}'")
            plans = st._cache = {}
        plan = plans.get(name)
        if plan is None:
            if st.kind not in ("struct", "union"):
                raise NoMemberError(f"'{self.type_.type_name()}' has no member '{name}'")
            try:
                m, bit_offset = st.member(name)
            except MemberNotFoundError as e:
                raise NoMemberError(str(e)) from None
            mt = m.type
            plan = plans[name] = (mt, mt.strip_typedefs(), bit_offset >> 3, bit_offset & 7,
                                  m.bit_size)
        mt, mst, off, bitpos, bitsize = plan
        if raw is not None:
            nbytes = ((bitpos + bitsize + 7) >> 3) if bitsize else (mst.size or 0)
            return Object._make(self.prog_, mt, mst, None, raw[off:off + nbytes], bitpos, bitsize)
        return Object._make(self.prog_, mt, mst, base + off, None, bitpos, bitsize)

    def __getattr__(self, name: str) -> "Object":
        if name[:2] == "__" and name[-2:] == "__":
            raise AttributeError(name)      # dunders only: __state is a member
        return self.member_(name)

    def has_member_(self, name: str) -> bool:
        t = self._t
        if t.kind == "pointer":
            t = t.target.strip_typedefs()
        return t.kind in ("struct", "union") and t.has_member(name)

    # -- pointers and arrays ----------------------------------------------------------
    def deref_(self) -> "Object":
        """``*ptr`` (or the first element of an array)."""
        t = self._t
        if t.kind == "pointer":
            target = t.target
            return Object._make(self.prog_, target, target.strip_typedefs(), self.value_(), None)
        if t.kind == "array":
            return self[0]
        raise TypeError(f"cannot dereference '{self.type_.type_name()}'")

    def __getitem__(self, i: int) -> "Object":
        t = self._t
        i = int(i)
        if t.kind == "pointer":
            et = t.target
            est = et.strip_typedefs()
            return Object._make(self.prog_, et, est, self.value_() + i * (est.size or 0), None)
        if t.kind == "array":
            et = t.target
            est = et.strip_typedefs()
            esize = est.size or 0
            if self._value is not None:
                return Object._make(self.prog_, et, est, None,
                                    self._value[i * esize:(i + 1) * esize])
            return Object._make(self.prog_, et, est, self.address_ + i * esize, None)
        raise TypeError(f"'{self.type_.type_name()}' is not subscriptable")

    def __len__(self) -> int:
        if self._t.kind == "array":
            return self._t.length or 0
        raise TypeError(f"'{self.type_.type_name()}' has no length")

    def __iter__(self):
        if self._t.kind != "array":
            raise TypeError(f"'{self.type_.type_name()}' is not iterable")
        for i in range(self._t.length or 0):
            yield self[i]

    def address_of_(self) -> "Object":
        """``&obj`` as a pointer Object."""
        if self.address_ is None:
            raise ValueError("cannot take the address of a value")
        pt = pointer_to(self.type_)
        return Object._make(self.prog_, pt, pt, None, self.address_)

    def cast_(self, type: "Type | str") -> "Object":
        """Reinterpret: scalars convert by value, others by address."""
        t = _resolve_type(self.prog_, type)
        st = t.strip_typedefs()
        if st.kind in ("int", "enum", "pointer", "bool") and \
                self._t.kind in ("int", "enum", "pointer", "bool"):
            v = self.value_()
            return Object._make(self.prog_, t, st, None, _normalize_value(st, int(v)))
        if self.address_ is not None:
            return Object._make(self.prog_, t, st, self.address_, None)
        return Object._make(self.prog_, t, st, None, self._bytes()[:st.size])

    def __add__(self, n: int) -> "Object":
        t = self._t
        if t.kind != "pointer":
            return self._scalar() + _plain(n)
        return Object._make(self.prog_, self.type_, t, None,
                            (self.value_() + int(n) * (t.target.size or 1)) & ((1 << 64) - 1))

    def __sub__(self, n):
        if isinstance(n, Object) and n._t.kind == "pointer" and self._t.kind == "pointer":
            return (self.value_() - n.value_()) // (self._t.target.size or 1)
        if self._t.kind != "pointer":
            return self._scalar() - _plain(n)
        return self + (-int(n))

    # -- comparisons and integer arithmetic (scalars; results are plain ints) ------------
    def _scalar(self):
        if self._t.kind not in ("int", "enum", "pointer", "bool", "float"):
            raise TypeError(f"'{self.type_.type_name()}' is not a scalar")
        return self.value_()

    def __eq__(self, other):
        if self._t.kind not in ("int", "enum", "pointer", "bool", "float"):
            return self is other
        if isinstance(other, Object):
            if other._t.kind not in ("int", "enum", "pointer", "bool", "float"):
                return False
            other = other.value_()
        return self.value_() == other

    def __ne__(self, other):
        return not self.__eq__(other)

    def __hash__(self):
        if self._t.kind in ("int", "enum", "pointer", "bool", "float"):
            return hash(self.value_())
        return id(self)

    def __lt__(self, other):
        return self._scalar() < _plain(other)

    def __le__(self, other):
        return self._scalar() <= _plain(other)

    def __gt__(self, other):
        return self._scalar() > _plain(other)

    def __ge__(self, other):
        return self._scalar() >= _plain(other)

    def __radd__(self, n):
        return _plain(n) + self._scalar()

    def __rsub__(self, n):
        return _plain(n) - self._scalar()

    def __mul__(self, n):
        return self._scalar() * _plain(n)

    __rmul__ = __mul__

    def __floordiv__(self, n):
        return self._scalar() // _plain(n)

    def __mod__(self, n):
        return self._scalar() % _plain(n)

    def __and__(self, n):
        return self._scalar() & _plain(n)

    __rand__ = __and__

    def __or__(self, n):
        return self._scalar() | _plain(n)

    __ror__ = __or__

    def __xor__(self, n):
        return self._scalar() ^ _plain(n)

    __rxor__ = __xor__

    def __lshift__(self, n):
        return self._scalar() << _plain(n)

    def __rshift__(self, n):
        return self._scalar() >> _plain(n)

    def __neg__(self):
        return -self._scalar()

    def __invert__(self):
        return ~self._scalar()

    # -- strings ----------------------------------------------------------------------
    def string_(self, max_size: int = 4096) -> bytes:
        """Bytes up to the first NUL: char arrays (within the array) and char pointers."""
        t = self._t
        if t.kind == "array":
            raw = self._bytes()
            nul = raw.find(b"\0")
            return bytes(raw if nul < 0 else raw[:nul])
        if t.kind == "pointer":
            addr = self.value_()
            if not addr:
                raise FaultError(0, "cannot read string at NULL pointer")
            return _read_cstring(self.prog_, addr, max_size)
        raise TypeError(f"'{self.type_.type_name()}' is not a string")

    # -- enums ---------------------------------------------------------------------------
    def enum_name_(self) -> str | None:
        """The enumerator name of an enum value (None if it has none)."""
        if self._t.kind != "enum":
            raise TypeError(f"'{self.type_.type_name()}' is not an enum")
        return self._t.enum_name(self.value_())

    # -- display ---------------------------------------------------------------------
    def __repr__(self) -> str:
        if self.address_ is not None:
            return f"Object(type='{self.type_.type_name()}', address={self.address_:#x})"
        try:
            v = self.value_()
        except Exception:  # noqa: BLE001 - repr must not fail
            v = "?"
        if isinstance(v, int) and self._t.kind == "pointer":
            v = hex(v)
        return f"Object(type='{self.type_.type_name()}', value={v})"


def _plain(v):
    """An Object operand as its Python value."""
    return v.value_() if isinstance(v, Object) else v


def _read_cstring(kernel, addr: int, max_size: int) -> bytes:
    fn = getattr(kernel, "read_cstring", None)
    if fn is not None:
        return fn(addr, max_size)
    from kql.memory import Layer, read_cstring
    page_size = getattr(getattr(kernel, "arch", None), "page_size", Layer.page_size)
    return read_cstring(kernel.read, addr, max_size, page_size)


def _normalize_value(st: Type, v):
    kind = st.kind
    if kind == "pointer":
        return int(v) & ((1 << 8 * (st.size or 8)) - 1)
    if kind in ("int", "enum"):
        bits = 8 * (st.size or 8)
        v = int(v) & ((1 << bits) - 1)
        if st.signed and v >> (bits - 1):
            v -= 1 << bits
        return v
    if kind == "bool":
        return bool(v)
    return v


def cast(type, obj: Object) -> Object:
    """drgn-style ``cast(type, obj)``."""
    return obj.cast_(type)


def NULL(kernel, type) -> Object:
    """A NULL pointer of ``type`` (a pointer type or its name)."""
    t = _resolve_type(kernel, type)
    return Object(kernel, t, value=0)


def container_of(ptr: "Object | int", type: "Type | str", member: str, kernel=None) -> Object:
    """``container_of(ptr, type, member)``: a ``type *`` pointing at the struct
    whose ``member`` is at ``ptr`` (an Object pointer/reference, or an int
    address with ``kernel`` given)."""
    if isinstance(ptr, Object):
        kernel = ptr.prog_
        addr = ptr.value_() if ptr._t.kind == "pointer" else ptr.address_
    else:
        addr = int(ptr)
    t = _resolve_type(kernel, type)
    off = t.offsetof(member)
    pt = pointer_to(t)
    return Object._make(kernel, pt, pt, None, (addr - off) & ((1 << 64) - 1))
