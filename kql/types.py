"""The C type model shared by every type loader (BTF, DWARF) and by Object.

A :class:`Type` has a ``kind`` (one of :data:`KINDS`), a ``name`` (``None`` for
anonymous types; the bare tag for structs, e.g. ``"task_struct"``), a ``size``
in bytes and kind-specific fields:

- ``int`` / ``bool`` / ``float``: ``signed``
- ``pointer``: ``target``
- ``array``: ``target``, ``length`` (``None`` for a flexible array)
- ``struct`` / ``union``: ``members`` (list of :class:`Member`; anonymous
  members have ``name`` None and are searched through by :meth:`Type.member`)
- ``enum``: ``enumerators`` (list of ``(name, value)``), ``signed``
- ``typedef``: ``target``
- ``function``: ``target`` (return type), ``params`` (list of ``(name, type)``),
  ``variadic``
- ``void``: nothing

``qualifiers`` is a frozenset of ``"const"``, ``"volatile"``, ``"restrict"``.

Loaders may build types lazily: ``target``, ``members`` and a member's ``type``
accept a zero-argument callable that is called once, on first use.  This is how
the BTF loader builds ``struct task_struct`` without building every type it can
reach.

A :class:`TypeSource` answers ``find_type("struct file *")``; the C spelling is
parsed by :func:`parse_type_name`.  :class:`TypeSourceBase` does the parsing and
leaves only ``_find_named(kind, name)`` to loaders.
"""

from __future__ import annotations

import re
from typing import Callable, Iterator, Protocol

__all__ = [
    "KINDS", "Type", "Member", "TypeName", "TypeSource", "TypeSourceBase",
    "MemberNotFoundError", "TypeNotFoundError", "parse_type_name",
    "normalize_base_name", "int_type", "bool_type", "float_type", "void_type",
    "pointer_to", "array_of", "sizeof", "builtin_type", "POINTER_SIZE",
]

KINDS = ("int", "bool", "float", "pointer", "array", "struct", "union", "enum",
         "typedef", "function", "void")

#: x86_64 is the only architecture kql reads; loaders may pass another size.
POINTER_SIZE = 8

_NO_QUALS: frozenset = frozenset()


class TypeNotFoundError(LookupError):
    """No type by that name in the type source."""


class MemberNotFoundError(LookupError):
    """A struct/union has no member by that name."""


class NoMemberError(MemberNotFoundError, AttributeError):
    """An Object's missing member (``task.no_such``): an AttributeError, so
    ``getattr(obj, name, default)`` works, and a MemberNotFoundError, so a
    scan treats it like every other thing this kernel does not have."""


class _Lazy:
    """Marks a value computed on first use (a zero-argument callable)."""

    __slots__ = ("fn",)

    def __init__(self, fn: Callable):
        self.fn = fn


class Member:
    """One struct/union member.

    ``bit_offset`` counts from the start of the enclosing struct; ``bit_size``
    is the width of a bitfield, or ``None`` for an ordinary member.
    """

    __slots__ = ("name", "_type", "bit_offset", "bit_size")

    def __init__(self, name: str | None, type: "Type | Callable[[], Type]",
                 bit_offset: int = 0, bit_size: int | None = None):
        self.name = name
        self._type = _Lazy(type) if callable(type) and not isinstance(type, Type) else type
        self.bit_offset = bit_offset
        self.bit_size = bit_size or None

    @property
    def type(self) -> "Type":
        t = self._type
        if type(t) is _Lazy:
            t = self._type = t.fn()
        return t

    @property
    def offset(self) -> int:
        """Byte offset (bitfields: the byte holding the first bit)."""
        return self.bit_offset >> 3

    def __repr__(self) -> str:
        bits = f", bit_size={self.bit_size}" if self.bit_size else ""
        return f"Member({self.name!r}, {self.type.type_name()!r}, bit_offset={self.bit_offset}{bits})"


class Type:
    """A C type.  Treat as immutable once built."""

    __slots__ = ("kind", "name", "_size", "_target", "_members", "length", "signed",
                 "enumerators", "params", "variadic", "qualifiers", "complete",
                 "_member_index", "_enum_by_value", "_cache", "_pointer", "__weakref__")

    def __init__(self, kind: str, name: str | None = None, size: int | None = None, *,
                 target=None, members=None, length: int | None = None,
                 signed: bool = False, enumerators=None, params=None,
                 variadic: bool = False, qualifiers: frozenset = _NO_QUALS,
                 complete: bool = True):
        assert kind in KINDS, kind
        self.kind = kind
        self.name = name
        self._size = size
        self._target = _Lazy(target) if callable(target) and not isinstance(target, Type) else target
        self._members = _Lazy(members) if callable(members) else members
        self.length = length
        self.signed = signed
        self.enumerators = enumerators
        self.params = params
        self.variadic = variadic
        self.qualifiers = qualifiers
        self.complete = complete
        self._member_index = None
        self._enum_by_value = None
        self._cache = None      # per-type scratch for kql.object (member access plans)
        self._pointer = None    # the cached ``self *`` type

    # -- lazily resolved fields ------------------------------------------------
    @property
    def target(self) -> "Type | None":
        t = self._target
        if type(t) is _Lazy:
            t = self._target = t.fn()
        return t

    @property
    def members(self) -> "list[Member] | None":
        m = self._members
        if type(m) is _Lazy:
            m = self._members = m.fn()
        return m

    @property
    def size(self) -> int | None:
        """Size in bytes (through typedefs and arrays); None if unknown."""
        if self._size is not None:
            return self._size
        if self.kind == "typedef":
            return self.target.size
        if self.kind == "array":
            if self.length is None:
                return 0
            ts = self.target.size
            return None if ts is None else ts * self.length
        if self.kind == "pointer":
            return POINTER_SIZE
        return None

    # -- derived types -------------------------------------------------------------
    def qualified(self, qualifiers) -> "Type":
        """A copy with ``qualifiers`` added (const/volatile/restrict)."""
        quals = self.qualifiers | frozenset(qualifiers)
        if quals == self.qualifiers:
            return self
        t = object.__new__(Type)
        for slot in Type.__slots__:
            if slot != "__weakref__":
                object.__setattr__(t, slot, getattr(self, slot))
        t.qualifiers = quals
        t._cache = None
        t._pointer = None
        return t

    def unqualified(self) -> "Type":
        """This type without const/volatile/restrict."""
        if not self.qualifiers:
            return self
        # a copy: qualified(()) returns self, which other users share
        t = object.__new__(Type)
        for slot in Type.__slots__:
            if slot != "__weakref__":
                object.__setattr__(t, slot, getattr(self, slot))
        t.qualifiers = _NO_QUALS
        t._cache = None
        t._pointer = None
        return t

    def strip_typedefs(self) -> "Type":
        """Follow typedefs down to the underlying type (qualifiers kept from the
        outermost level are not carried over)."""
        t = self
        while t.kind == "typedef":
            t = t.target
        return t

    # -- predicates ---------------------------------------------------------------
    def is_integer(self) -> bool:
        """int, bool, enum (through typedefs)."""
        return self.strip_typedefs().kind in ("int", "bool", "enum")

    def is_pointer(self) -> bool:
        return self.strip_typedefs().kind == "pointer"

    def is_char(self) -> bool:
        """char / signed char / unsigned char (through typedefs)."""
        t = self.strip_typedefs()
        return t.kind == "int" and t._size == 1 and t.name is not None and "char" in t.name

    # -- members --------------------------------------------------------------------
    def _build_member_index(self) -> dict:
        index: dict[str, tuple[Member, int]] = {}

        def walk(t: Type, base: int) -> None:
            for m in t.members or ():
                if m.name:
                    index.setdefault(m.name, (m, base + m.bit_offset))
                else:
                    mt = m.type.strip_typedefs()
                    if mt.kind in ("struct", "union"):
                        walk(mt, base + m.bit_offset)

        walk(self, 0)
        self._member_index = index
        return index

    def member(self, name: str) -> tuple[Member, int]:
        """Find a member by name, searching through anonymous struct/union members.

        ``name`` may be a path, ``"a.b.c"``, or index an array, ``"a[3].b"``.
        Returns ``(Member, total_bit_offset)`` where the offset counts from the
        start of this type.  Raises :class:`MemberNotFoundError`.
        """
        t = self.strip_typedefs()
        if t.kind not in ("struct", "union"):
            raise MemberNotFoundError(f"'{self.type_name()}' is not a structure or union")
        index = t._member_index
        if index is None:
            index = t._build_member_index()
        hit = index.get(name)
        if hit is not None:
            return hit
        if "." in name or "[" in name:
            return t._member_path(name)
        raise MemberNotFoundError(f"'{t.type_name()}' has no member '{name}'")

    def _member_path(self, path: str) -> tuple[Member, int]:
        t: Type = self
        offset = 0
        member = None
        for part in re.findall(r"[A-Za-z_]\w*|\[\s*\d+\s*\]", path):
            if part[0] == "[":
                at = t.strip_typedefs()
                if at.kind != "array":
                    raise MemberNotFoundError(f"'{t.type_name()}' is not an array")
                offset += int(part[1:-1]) * at.target.size * 8
                t = at.target
                member = Member(None, t, offset)
            else:
                member, off = t.member(part)
                offset += off
                t = member.type
        if member is None:
            raise MemberNotFoundError(f"bad member path '{path}'")
        return Member(member.name, member.type, offset, member.bit_size), offset

    def has_member(self, name: str) -> bool:
        try:
            self.member(name)
            return True
        except MemberNotFoundError:
            return False

    def offsetof(self, name: str) -> int:
        """Byte offset of a member (``offsetof(type, name)``)."""
        return self.member(name)[1] >> 3

    # -- enums -------------------------------------------------------------------------
    def enum_value(self, name: str) -> int:
        """Value of an enumerator; raises KeyError."""
        for n, v in self.strip_typedefs().enumerators or ():
            if n == name:
                return v
        raise KeyError(name)

    def enum_name(self, value: int) -> str | None:
        """Name of the enumerator with that value, or None."""
        t = self.strip_typedefs()
        by_value = t._enum_by_value
        if by_value is None:
            by_value = {}
            for n, v in t.enumerators or ():
                by_value.setdefault(v, n)
            t._enum_by_value = by_value
        return by_value.get(value)

    # -- names -------------------------------------------------------------------------
    def type_name(self) -> str:
        """The C spelling: ``struct task_struct *``, ``char [16]``, ``int (*)(void)``."""
        return _declare(self, "").strip()

    def __str__(self) -> str:
        return self.type_name()

    def __repr__(self) -> str:
        return f"<Type {self.kind} {self.type_name()!r} size={self.size}>"


def _base_name(t: Type) -> str:
    quals = " ".join(q for q in ("const", "volatile") if q in t.qualifiers)
    if t.kind in ("struct", "union", "enum"):
        name = f"{t.kind} {t.name or '<anonymous>'}"
    elif t.kind == "void":
        name = "void"
    else:
        name = t.name or "<anonymous>"
    return f"{quals} {name}" if quals else name


def _declare(t: Type, inner: str) -> str:
    """C declarator spelling of ``t`` around ``inner`` (the thing being declared)."""
    if t.kind == "pointer":
        quals = "".join(" " + q for q in ("const", "volatile", "restrict") if q in t.qualifiers)
        target = t.target
        s = "*" + quals + (" " if quals and inner else "") + inner
        if target.kind in ("array", "function"):
            s = "(" + s + ")"
        return _declare(target, s)
    if t.kind == "array":
        n = "" if t.length is None else str(t.length)
        return _declare(t.target, inner + f"[{n}]")
    if t.kind == "function":
        params = ", ".join(p[1].type_name() for p in t.params or ())
        if t.variadic:
            params = params + ", ..." if params else "..."
        return _declare(t.target, f"{inner}({params or 'void'})")
    base = _base_name(t)
    if not inner:
        return base
    return base + " " + inner


# -- constructors ---------------------------------------------------------------------

def int_type(name: str, size: int, signed: bool) -> Type:
    return Type("int", name, size, signed=signed)


def bool_type(name: str = "_Bool", size: int = 1) -> Type:
    return Type("bool", name, size)


def float_type(name: str, size: int) -> Type:
    return Type("float", name, size, signed=True)


def void_type() -> Type:
    return Type("void", None, None)


def pointer_to(target: Type, size: int = POINTER_SIZE) -> Type:
    """``target *`` (one shared Type per target, so per-type caches stay warm)."""
    p = target._pointer
    if p is None or p._size != size:
        p = Type("pointer", None, size, target=target)
        if size == POINTER_SIZE:
            target._pointer = p
    return p


def array_of(target: Type, length: int | None) -> Type:
    return Type("array", None, None, target=target, length=length)


def sizeof(t: Type) -> int:
    """``sizeof(t)``; raises ValueError for incomplete types (void, functions,
    forward-declared structs)."""
    size = t.size
    if size is None or (not t.strip_typedefs().complete):
        raise ValueError(f"cannot get size of incomplete type '{t.type_name()}'")
    return size


# -- names ----------------------------------------------------------------------------

_INT_WORDS = {"signed", "unsigned", "char", "short", "int", "long"}

# canonical spelling -> (size, signed) on x86_64 (LP64)
_BUILTIN_INTS = {
    "char": (1, True), "signed char": (1, True), "unsigned char": (1, False),
    "short": (2, True), "unsigned short": (2, False),
    "int": (4, True), "unsigned int": (4, False),
    "long": (8, True), "unsigned long": (8, False),
    "long long": (8, True), "unsigned long long": (8, False),
}


def normalize_base_name(name: str) -> str:
    """Canonical spelling of a base type name so that ``long unsigned int``
    (what gcc writes into BTF/DWARF), ``unsigned long int`` and ``unsigned long``
    all match.  Non-integer names are returned with whitespace collapsed."""
    words = name.split()
    if not words or not set(words) <= _INT_WORDS:
        return " ".join(words)
    longs = words.count("long")
    unsigned = "unsigned" in words
    signed_kw = "signed" in words
    if "char" in words:
        return "unsigned char" if unsigned else ("signed char" if signed_kw else "char")
    if "short" in words:
        base = "short"
    elif longs >= 2:
        base = "long long"
    elif longs == 1:
        base = "long"
    else:
        base = "int"
    return ("unsigned " + base) if unsigned else base


def builtin_type(name: str) -> Type | None:
    """x86_64 C base types by (any) spelling, for when a type source lacks them."""
    canon = normalize_base_name(name)
    if canon in _BUILTIN_INTS:
        size, signed = _BUILTIN_INTS[canon]
        return int_type(canon, size, signed)
    if canon in ("_Bool", "bool"):
        return bool_type(canon)
    if canon == "void":
        return void_type()
    if canon == "float":
        return float_type("float", 4)
    if canon == "double":
        return float_type("double", 8)
    return None


class TypeName:
    """A parsed C type name: a base (``kind`` + ``name``), qualifiers, and
    declarator suffixes applied inside out (``("pointer",)``, ``("array", n)``).

    ``kind`` is ``"struct"``, ``"union"``, ``"enum"`` or ``"base"`` (an integer,
    typedef or other named type; ``name`` is then normalized)."""

    __slots__ = ("kind", "name", "qualifiers", "suffixes")

    def __init__(self, kind: str, name: str, qualifiers: frozenset, suffixes: list):
        self.kind = kind
        self.name = name
        self.qualifiers = qualifiers
        self.suffixes = suffixes

    def build(self, base: Type) -> Type:
        t = base.qualified(self.qualifiers) if self.qualifiers else base
        for s in self.suffixes:
            if s[0] == "pointer":
                t = pointer_to(t)
                if len(s) > 1 and s[1]:
                    t = t.qualified(s[1])
            else:
                t = array_of(t, s[1])
        return t

    def __repr__(self) -> str:
        return f"TypeName({self.kind!r}, {self.name!r}, {sorted(self.qualifiers)}, {self.suffixes})"


_TOKEN_RE = re.compile(r"\s*(?:([A-Za-z_]\w*)|(\*)|\[\s*(\d*|0x[0-9a-fA-F]+)\s*\]|(\()|(\)))")
_QUALS = {"const", "volatile", "restrict", "__restrict"}


def parse_type_name(text: str) -> TypeName:
    """Parse a C type name such as ``"struct file *"``, ``"const char *"``,
    ``"unsigned long [4]"``, ``"struct list_head *[2]"``.

    Supports pointers, arrays and qualifiers (function-pointer syntax is not
    supported).  Raises ValueError on anything else.
    """
    pos = 0
    words: list[str] = []
    quals: set[str] = set()
    suffixes: list = []
    arrays: list = []
    text = text.strip()
    ptr_quals: set | None = None
    while pos < len(text):
        m = _TOKEN_RE.match(text, pos)
        if not m or m.end() == pos:
            raise ValueError(f"cannot parse type name {text!r}")
        pos = m.end()
        word, star, arr = m.group(1), m.group(2), m.group(3)
        if word:
            if word in _QUALS:
                q = "restrict" if word == "__restrict" else word
                if ptr_quals is None and not arrays:
                    quals.add(q)
                elif ptr_quals is not None:
                    ptr_quals.add(q)
                continue
            if suffixes or arrays:
                raise ValueError(f"cannot parse type name {text!r}")
            words.append(word)
        elif star:
            if arrays:
                raise ValueError(f"cannot parse type name {text!r}")
            if ptr_quals is not None:
                suffixes[-1] = ("pointer", frozenset(ptr_quals))
            ptr_quals = set()
            suffixes.append(("pointer", frozenset()))
        elif arr is not None:
            arrays.append(int(arr, 0) if arr else None)
        else:
            raise ValueError(f"function types are not supported: {text!r}")
    if ptr_quals:
        suffixes[-1] = ("pointer", frozenset(ptr_quals))
    if not words:
        raise ValueError(f"cannot parse type name {text!r}")
    # int a[2][3] is an array of 2 arrays of 3: apply the innermost (last) first
    suffixes.extend(("array", n) for n in reversed(arrays))
    if words[0] in ("struct", "union", "enum"):
        if len(words) != 2:
            raise ValueError(f"cannot parse type name {text!r}")
        return TypeName(words[0], words[1], frozenset(quals), suffixes)
    return TypeName("base", normalize_base_name(" ".join(words)), frozenset(quals), suffixes)


class TypeSource(Protocol):
    def find_type(self, name: str) -> Type: ...


class TypeSourceBase:
    """Common ``find_type`` for loaders: subclasses implement
    ``_find_named(kind, name) -> Type | None`` where kind is struct/union/enum
    or ``"base"`` (typedefs, ints, floats, bool, void, by normalized name)."""

    def __init__(self) -> None:
        self._parsed: dict[str, Type] = {}

    def _find_named(self, kind: str, name: str) -> Type | None:  # pragma: no cover
        raise NotImplementedError

    def find_type(self, name: "str | Type") -> Type:
        """The type spelled ``name`` (C syntax); raises TypeNotFoundError."""
        if isinstance(name, Type):
            return name
        hit = self._parsed.get(name)
        if hit is not None:
            return hit
        try:
            tn = parse_type_name(name)
        except ValueError as e:
            raise TypeNotFoundError(str(e)) from None
        if tn.kind == "base" and tn.name == "void":
            base = void_type()
        else:
            base = self._find_named(tn.kind, tn.name)
            if base is None and tn.kind == "base":
                base = builtin_type(tn.name)
            if base is None:
                raise TypeNotFoundError(f"no type named '{name}'")
        t = tn.build(base)
        self._parsed[name] = t
        return t

    def has_type(self, name: str) -> bool:
        try:
            self.find_type(name)
            return True
        except TypeNotFoundError:
            return False


class ChainTypeSource(TypeSourceBase):
    """Ask several type sources in order (e.g. DWARF, then BTF)."""

    def __init__(self, sources: list) -> None:
        super().__init__()
        self.sources = list(sources)

    def _find_named(self, kind: str, name: str) -> Type | None:
        for s in self.sources:
            t = s._find_named(kind, name)
            if t is not None:
                return t
        return None


def iter_members_flat(t: Type) -> Iterator[tuple[str, Member, int]]:
    """Every named member reachable without dereferencing (anonymous members
    flattened): ``(name, Member, total_bit_offset)`` in declaration order."""
    t = t.strip_typedefs()
    for m in t.members or ():
        if m.name:
            yield m.name, m, m.bit_offset
        else:
            mt = m.type.strip_typedefs()
            if mt.kind in ("struct", "union"):
                for n, mm, off in iter_members_flat(mt):
                    yield n, mm, m.bit_offset + off
