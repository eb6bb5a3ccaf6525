"""BTF (the kernel's compact type format) → kql.types, lazily.

The dump holds vmlinux BTF at ``[__start_BTF, __stop_BTF)`` (addresses from
kallsyms, REFERENCE §6).  :class:`Btf` parses the header, makes one fast pass
over the type records to learn each id's offset and to index names of the
kinds a user can ask for (struct, union, enum, typedef, int, float, var), and
builds :class:`kql.types.Type` objects only when asked, caching them by id.
Pointer targets, typedef targets, array elements and struct members are
resolved on first use, so building ``struct task_struct`` costs one record.

Split BTF (modules) is supported by passing the vmlinux ``Btf`` as ``base``:
ids and string offsets continue where the base ends.
"""

from __future__ import annotations

import struct
import zlib
from array import array
from typing import Iterator

from kql.errors import DumpError
from kql.types import (
    Member, Type, TypeSourceBase, array_of, normalize_base_name, void_type,
)

__all__ = ["Btf", "BtfError", "load_btf"]

BTF_MAGIC = 0xEB9F

#: Bump when what Btf caches (its index) changes: old cache files are ignored.
CACHE_FORMAT = 1

KIND_INT, KIND_PTR, KIND_ARRAY, KIND_STRUCT, KIND_UNION, KIND_ENUM, KIND_FWD, \
    KIND_TYPEDEF, KIND_VOLATILE, KIND_CONST, KIND_RESTRICT, KIND_FUNC, \
    KIND_FUNC_PROTO, KIND_VAR, KIND_DATASEC, KIND_FLOAT, KIND_DECL_TAG, \
    KIND_TYPE_TAG, KIND_ENUM64 = range(1, 20)

# bytes following the 12-byte btf_type: (fixed, per vlen entry)
_EXTRA = {
    KIND_INT: (4, 0), KIND_PTR: (0, 0), KIND_ARRAY: (12, 0), KIND_STRUCT: (0, 12),
    KIND_UNION: (0, 12), KIND_ENUM: (0, 8), KIND_FWD: (0, 0), KIND_TYPEDEF: (0, 0),
    KIND_VOLATILE: (0, 0), KIND_CONST: (0, 0), KIND_RESTRICT: (0, 0), KIND_FUNC: (0, 0),
    KIND_FUNC_PROTO: (0, 8), KIND_VAR: (4, 0), KIND_DATASEC: (0, 12), KIND_FLOAT: (0, 0),
    KIND_DECL_TAG: (4, 0), KIND_TYPE_TAG: (0, 0), KIND_ENUM64: (0, 12),
}

_QUAL = {KIND_VOLATILE: "volatile", KIND_CONST: "const", KIND_RESTRICT: "restrict"}

_HDR = struct.Struct("<HBBIIIII")
_TYPE = struct.Struct("<III")
_U32 = struct.Struct("<I")
_I32 = struct.Struct("<i")


class BtfError(DumpError):
    """The BTF blob is malformed."""


class Btf(TypeSourceBase):
    """One BTF blob as a type source (``find_type("struct task_struct")``)."""

    def __init__(self, data: bytes, base: "Btf | None" = None, name: str = "vmlinux",
                 cache=None):
        """``cache``: a :class:`kql.kernel.DiskCache` of this kernel build for
        the index (what ``_index`` learns), kept for blobs of the same size
        and CRC; None to always index."""
        super().__init__()
        self.name = name
        self.data = data = bytes(data)
        if len(data) < _HDR.size:
            raise BtfError(f"BTF ({name}): {len(data)} bytes is too short for a header")
        magic, version, _flags, hdr_len, type_off, type_len, str_off, str_len = \
            _HDR.unpack_from(data, 0)
        if magic != BTF_MAGIC:
            raise BtfError(f"BTF ({name}): bad magic {magic:#06x} (expected 0xeb9f)")
        if version != 1:
            raise BtfError(f"BTF ({name}): unsupported version {version}")
        self.type_start = hdr_len + type_off
        self.type_end = self.type_start + type_len
        self.str_start = hdr_len + str_off
        self.str_end = self.str_start + str_len
        if self.type_end > len(data) or self.str_end > len(data):
            raise BtfError(f"BTF ({name}): sections run past the end of {len(data)} bytes")
        self.base = base
        self.first_id = 1 if base is None else base.first_id + base.count
        self.str_base = 0 if base is None else base.str_base + (base.str_end - base.str_start)
        self._types: dict[int, Type] = {}
        header = cached = None
        if cache is not None and base is None:
            header = {"format": CACHE_FORMAT, "size": len(data), "crc": zlib.crc32(data)}
            cached = cache.load("btf", header)
        if not self._use_index(cached):
            self._index()
            if header is not None:
                cache.save("btf", header, {"offsets": self._offsets, "named": self._named})
        self._enumerators: dict[str, tuple[int, int]] | None = None

    # -- indexing -------------------------------------------------------------------
    def _index(self) -> None:
        data = self.data
        unpack = _TYPE.unpack_from
        extra = _EXTRA
        offsets: list[int] = []
        named: dict[tuple[str, str], list[int]] = {}
        pos = self.type_start
        end = self.type_end
        tid = self.first_id
        want = {KIND_STRUCT: "struct", KIND_UNION: "union", KIND_ENUM: "enum",
                KIND_ENUM64: "enum", KIND_TYPEDEF: "base", KIND_INT: "base",
                KIND_FLOAT: "base", KIND_VAR: "var", KIND_FWD: "fwd"}
        strs = self.data
        s0 = self.str_start
        find = strs.find
        while pos < end:
            name_off, info, _ = unpack(data, pos)
            kind = (info >> 24) & 0x1F
            try:
                fixed, per = extra[kind]
            except KeyError:
                raise BtfError(f"BTF ({self.name}): type id {tid} at offset {pos} has "
                               f"unknown kind {kind}") from None
            offsets.append(pos)
            if name_off and kind in want:
                if name_off >= self.str_base:
                    a = s0 + name_off - self.str_base
                    nm = strs[a:find(b"\0", a)].decode("latin-1")
                else:
                    nm = self.base._string(name_off)
                k = want[kind]
                if kind == KIND_FWD:
                    k = "fwd union" if info >> 31 else "fwd struct"
                elif kind == KIND_INT:
                    nm = normalize_base_name(nm)
                named.setdefault((k, nm), []).append(tid)
            pos += 12 + fixed + per * (info & 0xFFFF)
            tid += 1
        if pos != end:
            raise BtfError(f"BTF ({self.name}): type section ends mid-record")
        self._offsets = array("I", offsets)
        self.count = len(offsets)
        self._named = named

    def _use_index(self, cached: dict | None) -> bool:
        """Take an index from the cache if it looks like this blob's."""
        if cached is None:
            return False
        offsets, named = cached.get("offsets"), cached.get("named")
        if not (isinstance(offsets, array) and offsets.typecode == "I" and offsets
                and isinstance(named, dict)):
            return False
        if offsets[0] != self.type_start or not offsets[-1] < self.type_end:
            return False
        self._offsets = offsets
        self.count = len(offsets)
        self._named = named
        return True

    def _string(self, off: int) -> str:
        if off < self.str_base:
            return self.base._string(off)
        a = self.str_start + off - self.str_base
        if a >= self.str_end:
            raise BtfError(f"BTF ({self.name}): string offset {off} out of range")
        return self.data[a:self.data.find(b"\0", a)].decode("latin-1")

    def type_ids(self, kind: str, name: str) -> list[int]:
        """Ids of the types with that name (kind: struct, union, enum, base, var)."""
        ids = self._named.get((kind, name), [])
        if self.base is not None:
            ids = self.base.type_ids(kind, name) + ids
        return ids

    # -- TypeSource -----------------------------------------------------------------
    def _find_named(self, kind: str, name: str) -> Type | None:
        ids = self.type_ids(kind, name)
        if not ids and kind in ("struct", "union"):
            ids = self.type_ids("fwd " + kind, name)  # only declared, never defined
        return self.type(ids[0]) if ids else None

    def find_var_type(self, name: str) -> Type | None:
        """Type of a BTF VAR (only per-CPU variables have one in vmlinux BTF)."""
        ids = self.type_ids("var", name)
        return self.type(ids[0]) if ids else None

    def find_enumerator(self, name: str) -> tuple[Type, int] | None:
        """``(enum type, value)`` of an enumerator constant such as ``PIDTYPE_PID``."""
        if self._enumerators is None:
            enums: dict[str, tuple[int, int]] = {}
            for (k, _n), ids in self._named.items():
                if k != "enum":
                    continue
                for tid in ids:
                    for ename, value in self.type(tid).enumerators:
                        enums.setdefault(ename, (tid, value))
            # anonymous enums are not in the name index: scan for them
            data = self.data
            for i, pos in enumerate(self._offsets):
                name_off, info, _ = _TYPE.unpack_from(data, pos)
                kind = (info >> 24) & 0x1F
                if not name_off and kind in (KIND_ENUM, KIND_ENUM64):
                    tid = self.first_id + i
                    for ename, value in self.type(tid).enumerators:
                        enums.setdefault(ename, (tid, value))
            self._enumerators = enums
        hit = self._enumerators.get(name)
        if hit is None:
            if self.base is not None:
                return self.base.find_enumerator(name)
            return None
        return self.type(hit[0]), hit[1]

    # -- building ---------------------------------------------------------------------
    def type(self, tid: int) -> Type:
        """The kql Type for a BTF type id (0 is void)."""
        t = self._types.get(tid)
        if t is not None:
            return t
        if tid < self.first_id:
            if tid == 0:
                t = void_type()
                self._types[0] = t
                return t
            return self.base.type(tid)
        t = self._build(tid)
        self._types[tid] = t
        return t

    def _lazy(self, tid: int):
        return lambda: self.type(tid)

    def _build(self, tid: int) -> Type:
        i = tid - self.first_id
        if not 0 <= i < self.count:
            raise BtfError(f"BTF ({self.name}): type id {tid} out of range")
        data = self.data
        pos = self._offsets[i]
        name_off, info, size_type = _TYPE.unpack_from(data, pos)
        kind = (info >> 24) & 0x1F
        vlen = info & 0xFFFF
        kflag = info >> 31
        name = self._string(name_off) if name_off else None
        p = pos + 12
        if kind == KIND_INT:
            enc = _U32.unpack_from(data, p)[0]
            encoding = (enc >> 24) & 0xF
            if encoding & 4:
                return Type("bool", name, size_type)
            return Type("int", normalize_base_name(name) if name else None, size_type,
                        signed=bool(encoding & 1))
        if kind == KIND_PTR:
            return Type("pointer", None, 8, target=self._lazy(size_type))
        if kind == KIND_ARRAY:
            elem, _index, nelems = struct.unpack_from("<III", data, p)
            return array_of(self._lazy(elem), nelems)
        if kind in (KIND_STRUCT, KIND_UNION):
            return Type("struct" if kind == KIND_STRUCT else "union", name, size_type,
                        members=lambda: self._members(p, vlen, kflag))
        if kind in (KIND_ENUM, KIND_ENUM64):
            enumerators = []
            signed = bool(kflag)
            for j in range(vlen):
                if kind == KIND_ENUM:
                    n_off, val = struct.unpack_from("<Ii" if signed else "<II", data, p + 8 * j)
                else:
                    n_off, lo, hi = struct.unpack_from("<III", data, p + 12 * j)
                    val = lo | (hi << 32)
                    if signed and val >> 63:
                        val -= 1 << 64
                enumerators.append((self._string(n_off), val))
            return Type("enum", name, size_type, enumerators=enumerators, signed=signed)
        if kind == KIND_FWD:
            return Type("union" if kflag else "struct", name, None, members=[],
                        complete=False)
        if kind == KIND_TYPEDEF:
            return Type("typedef", name, None, target=self._lazy(size_type))
        if kind in _QUAL:
            return self.type(size_type).qualified((_QUAL[kind],))
        if kind in (KIND_TYPE_TAG, KIND_FUNC, KIND_VAR):
            return self.type(size_type)
        if kind == KIND_FUNC_PROTO:
            params = []
            variadic = False
            for j in range(vlen):
                n_off, ptype = struct.unpack_from("<II", data, p + 8 * j)
                if ptype == 0 and j == vlen - 1:
                    variadic = True
                    continue
                params.append((self._string(n_off) if n_off else None, self._lazy(ptype)))
            t = Type("function", None, None, target=self._lazy(size_type), variadic=variadic)
            t.params = _LazyParams(params)
            return t
        if kind == KIND_FLOAT:
            return Type("float", name, size_type, signed=True)
        if kind == KIND_DATASEC:
            return Type("struct", name, size_type, members=[])
        if kind == KIND_DECL_TAG:
            return self.type(size_type)
        raise BtfError(f"BTF ({self.name}): cannot build kind {kind} (id {tid})")

    def _members(self, p: int, vlen: int, kflag: int) -> list[Member]:
        data = self.data
        out = []
        for j in range(vlen):
            n_off, mtype, off = struct.unpack_from("<III", data, p + 12 * j)
            if kflag:
                bit_size, bit_off = off >> 24, off & 0xFFFFFF
            else:
                bit_size, bit_off = 0, off
            out.append(Member(self._string(n_off) if n_off else None, self._lazy(mtype),
                              bit_off, bit_size or None))
        return out

    def iter_named(self, kind: str) -> Iterator[tuple[str, int]]:
        """``(name, id)`` of every named type of a kind (struct, union, enum, base, var)."""
        for (k, n), ids in self._named.items():
            if k == kind:
                for tid in ids:
                    yield n, tid


class _LazyParams(list):
    """Function parameters whose types resolve on first access."""

    def __getitem__(self, i):
        item = super().__getitem__(i)
        if isinstance(i, slice):
            return [(n, t() if callable(t) else t) for n, t in item]
        n, t = item
        return (n, t() if callable(t) else t)

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]


def load_btf(read, start: int, stop: int, name: str = "vmlinux", cache=None) -> Btf:
    """Read ``[start, stop)`` through ``read(addr, size)`` and parse it
    (``cache``: see :class:`Btf`)."""
    if not 0 < stop - start < 256 << 20:
        raise BtfError(f"implausible BTF bounds {start:#x}..{stop:#x}")
    return Btf(read(start, stop - start), name=name, cache=cache)
