"""Kernel symbols decoded from the dump's own kallsyms tables, and SymbolTable.

VMCOREINFO (Linux 6.0+) gives the runtime addresses of ``kallsyms_names``,
``kallsyms_num_syms``, ``kallsyms_token_table``, ``kallsyms_token_index``,
``kallsyms_offsets`` and ``kallsyms_relative_base`` (or
``kallsyms_addresses``).  The tables are read in a few large reads and decoded
here (REFERENCE §5; the layout is kernel/kallsyms.c and scripts/kallsyms.c):

- ``kallsyms_names`` is a stream of ``len, token bytes...``; since Linux 6.1
  (commit 73bbb94466fd "kallsyms: support "big" kernel symbols") a length
  with bit 7 set takes a second byte: ``(len & 0x7f) | (next << 7)``.
- each token byte expands to ``token_table[token_index[b]]``; the first
  character of the expanded name is the nm type letter.
- addresses come from ``kallsyms_offsets`` by one of several rules; the rule
  that reproduces ``SYMBOL(_stext)`` is kept.

Damage that changes names or addresses without breaking the decoding is
found by what scripts/kallsyms.c guarantees (:func:`check_tokens`,
:func:`check_markers`, :func:`check_order`): the 256 tokens are consecutive
non-empty NUL-terminated strings of printable characters that
``kallsyms_token_index`` points at; ``kallsyms_markers`` (right after the
names) holds where every 256th entry starts; the symbols are sorted by
address.  Each finding is a warning ("symbol names may be wrong"): the rest
of the table still serves.

:class:`SymbolTable` is shared with System.map / vmlinux symbol loaders
(:mod:`kql.symbols`).
"""

from __future__ import annotations

import bisect
import zlib
from array import array
from typing import Callable, Iterator, Sequence

from kql.errors import DumpError, FaultError

__all__ = ["Symbol", "SymbolTable", "load_kallsyms", "KallsymsError"]


class KallsymsError(DumpError):
    """The kallsyms tables in the dump cannot be decoded."""


class Symbol:
    """One symbol: ``name``, ``address``, ``size`` (distance to the next higher
    address; 0 for the last one), nm ``kind`` letter (``T``, ``t``, ``D`` ...),
    ``module`` (None for vmlinux)."""

    __slots__ = ("name", "address", "size", "kind", "module")

    def __init__(self, name: str, address: int, size: int, kind: str, module: str | None = None):
        self.name = name
        self.address = address
        self.size = size
        self.kind = kind
        self.module = module

    def __repr__(self) -> str:
        mod = f" [{self.module}]" if self.module else ""
        return f"Symbol({self.name!r}, {self.address:#x}, size={self.size}, kind={self.kind!r}{mod})"

    def __eq__(self, other) -> bool:
        return (isinstance(other, Symbol) and self.name == other.name
                and self.address == other.address and self.module == other.module)

    def __hash__(self) -> int:
        return hash((self.name, self.address))


class SymbolTable:
    """Symbols sorted by address, with name lookup and address symbolization.

    Built from parallel lists; Symbol objects are made on demand.  Extra tables
    (loaded modules) can be attached with :meth:`add_table` and are searched
    after the main one.
    """

    def __init__(self, names: list[str], kinds: str | list[str], addresses: list[int],
                 *, source: str = "kallsyms", module: str | None = None,
                 sizes: list[int] | None = None, name_order: Sequence[int] | None = None):
        n = len(names)
        if addresses != sorted(addresses):
            order = sorted(range(n), key=addresses.__getitem__)  # stable: aliases keep order
            names = [names[i] for i in order]
            kinds = [kinds[i] for i in order]
            addresses = [addresses[i] for i in order]
            if sizes is not None:
                sizes = [sizes[i] for i in order]
            name_order = None
        self.names = names
        self.kinds = kinds
        self.addresses = addresses
        self._sizes = sizes
        self.source = source
        self.module = module
        # indexes of names in name order (ties by index): lookups by bisection
        self._name_order = name_order
        self.extra: list[SymbolTable] = []

    def __len__(self) -> int:
        return len(self.names)

    # -- construction of Symbols -----------------------------------------------------
    def _size(self, i: int) -> int:
        if self._sizes is not None and self._sizes[i]:
            return self._sizes[i]
        addrs = self.addresses
        a = addrs[i]
        j = bisect.bisect_right(addrs, a, i + 1)
        return addrs[j] - a if j < len(addrs) else 0

    def _symbol(self, i: int) -> Symbol:
        return Symbol(self.names[i], self.addresses[i], self._size(i), self.kinds[i], self.module)

    def __iter__(self) -> Iterator[Symbol]:
        for i in range(len(self.names)):
            yield self._symbol(i)

    # -- by name -----------------------------------------------------------------------
    @property
    def name_order(self) -> Sequence[int]:
        """Symbol indexes sorted by name (stable: equal names in address
        order); what name lookups bisect.  Cheap to store, unlike a dict."""
        if self._name_order is None:
            self._name_order = array("I", sorted(range(len(self.names)),
                                                 key=self.names.__getitem__))
        return self._name_order

    def _indexes(self, name: str) -> list[int]:
        """Indexes of the symbols called ``name``, in address order."""
        order = self.name_order
        names = self.names
        key = names.__getitem__
        lo = bisect.bisect_left(order, name, key=key)
        hi = lo
        while hi < len(order) and names[order[hi]] == name:
            hi += 1
        return sorted(order[lo:hi]) if hi - lo > 1 else list(order[lo:hi])

    def _find(self, name: str) -> int | None:
        """Index of ``name``: its first global definition, else its first one."""
        found = self._indexes(name)
        if not found:
            return None
        kinds = self.kinds
        for i in found:
            if kinds[i].isupper():
                return i
        return found[0]

    def get(self, name: str) -> Symbol | None:
        """The symbol called ``name`` (globals preferred), or None."""
        i = self._find(name)
        if i is not None:
            return self._symbol(i)
        for t in self.extra:
            s = t.get(name)
            if s is not None:
                return s
        return None

    def lookup(self, name: str) -> Symbol:
        """The symbol called ``name``; raises LookupError."""
        s = self.get(name)
        if s is None:
            raise LookupError(f"no symbol named '{name}'")
        return s

    def lookup_all(self, name: str) -> list[Symbol]:
        """Every symbol called ``name`` (static functions repeat)."""
        out = [self._symbol(i) for i in self._indexes(name)]
        for t in self.extra:
            out.extend(t.lookup_all(name))
        return out

    def address(self, name: str) -> int:
        return self.lookup(name).address

    def __contains__(self, name: str) -> bool:
        return self.get(name) is not None

    # -- by address -----------------------------------------------------------------
    def _symbolize_here(self, addr: int) -> tuple[Symbol, int] | None:
        addrs = self.addresses
        i = bisect.bisect_right(addrs, addr) - 1
        if i < 0:
            return None
        # like kernel/kallsyms.c get_symbol_pos(): among aliases take the first
        a = addrs[i]
        i = bisect.bisect_left(addrs, a, 0, i)
        size = self._size(i)
        if size == 0 and addr != a:
            return None  # past the last symbol
        if self.kinds[i] in "aA" and addr != a:
            # an absolute symbol (System.map, vmlinux) names a value, not a
            # place: it covers nothing after it (arm64's module area lies
            # between the absolute constants and the kernel text)
            return None
        if self._sizes is not None and self._sizes[i] and addr - a >= size:
            return None
        return self._symbol(i), addr - a

    def symbolize(self, addr: int) -> tuple[Symbol, int] | None:
        """``(symbol, offset)`` for the nearest symbol at or below ``addr``, or
        None when nothing covers it."""
        hit = self._symbolize_here(addr)
        if hit is not None:
            return hit
        for t in self.extra:
            hit = t._symbolize_here(addr)
            if hit is not None:
                return hit
        return None

    def add_table(self, table: "SymbolTable") -> None:
        self.extra.append(table)


# --------------------------------------------------------------------------------------

def _sym_addr(vmcoreinfo: dict, name: str) -> int | None:
    v = vmcoreinfo.get(f"SYMBOL({name})")
    return int(v, 16) if v else None


def _read_names(read: Callable[[int, int], bytes], start: int, count: int,
                limit: int | None) -> tuple[bytes, None]:
    """Read kallsyms_names in chunks until ``count`` entries are covered
    (used when the end of the table is not known)."""
    blob = bytearray()

    def more(need: int) -> None:
        at = start + len(blob)
        size = max(need, 1 << 20)
        if limit is not None:
            size = min(size, limit - len(blob))
            if size < need:
                raise KallsymsError("kallsyms_names ends before kallsyms_num_syms entries")
        try:
            blob.extend(read(at, size))
        except FaultError:
            # the next page may be unmapped: read up to it, then page by page
            size = max(need, 4096 - (at & 4095))
            blob.extend(read(at, size))

    pos = 0
    for _ in range(count):
        if pos + 2 > len(blob):
            more(pos + 2 - len(blob))
        n = blob[pos]
        if n & 0x80:
            n = (n & 0x7F) | (blob[pos + 1] << 7)
            pos += 2
        else:
            pos += 1
        pos += n
        if pos > len(blob):
            more(pos - len(blob))
    return bytes(blob[:pos]), None


DAMAGED = "kallsyms is damaged: "


def check_tokens(token_table: bytes, idx: Sequence[int]) -> str | None:
    """What is wrong with the token table and index, or None: token 0 starts
    the table, each next one starts right after the previous one's NUL, and
    every token is a non-empty string of printable characters."""
    if idx[0] != 0:
        return f"kallsyms_token_index[0] is {idx[0]}, not 0"
    for i in range(256):
        start = idx[i]
        end = token_table.find(b"\0", start)
        if end <= start:
            return f"token {i} of kallsyms_token_table is empty or unterminated"
        if i < 255 and idx[i + 1] != end + 1:
            return (f"kallsyms_token_index[{i + 1}] is {idx[i + 1]}, not {end + 1} (after "
                    f"token {i}'s NUL)")
        bad = next((c for c in token_table[start:end] if not 0x20 < c < 0x7F), None)
        if bad is not None:
            return f"token {i} of kallsyms_token_table holds the byte {bad:#04x}"
    return None


def check_markers(read: Callable[[int, int], bytes], names_end: int, marks: Sequence[int],
                  pointer_size: int, token_table: int | None = None,
                  count: int = 0, names: Sequence[str] | None = None) -> str | None:
    """What is wrong with ``kallsyms_markers`` (u32, or pointer-size before
    Linux 4.20), or None; it follows the names, aligned to the pointer size.
    ``marks``: where entries 0, 256, 512 … start, from the decoded names.
    The markers end at ``token_table``, or (Linux 6.2+, commit 60443c88f3a8
    "kallsyms: Improve the performance of kallsyms_lookup_name()") three
    bytes a symbol of ``kallsyms_seqs_of_names`` before it (then checked by
    :func:`check_name_order` against ``names``): else the count
    (``kallsyms_num_syms``) does not fit the tables."""
    def align(x: int) -> int:
        return (x + pointer_size - 1) & -pointer_size

    at = align(names_end)
    first_bad = None
    for width in (4, pointer_size) if pointer_size != 4 else (4,):
        try:
            raw = read(at, width * len(marks))
        except FaultError:
            continue   # unreadable: nothing to compare (the names decoded)
        got = array("I" if width == 4 else "Q")
        got.frombytes(raw)
        bad = next((k for k, (m, g) in enumerate(zip(marks, got)) if m != g), None)
        if bad is None:
            end = align(at + width * len(marks))
            if token_table is None or end == token_table:
                return None
            if token_table == align(end + 3 * count):
                return check_name_order(read, end, names) if names is not None else None
            return (f"the names and markers of {count} symbols (kallsyms_num_syms) end "
                    f"{token_table - end:+d} bytes from kallsyms_token_table")
        if first_bad is None:
            first_bad = (bad, got[bad])
    if first_bad is None:
        return None
    k, g = first_bad
    return (f"kallsyms_markers[{k}] is {g}, but entry {256 * k} of kallsyms_names starts "
            f"at {marks[k]}")


def check_name_order(read: Callable[[int, int], bytes], at: int, names: Sequence[str]
                     ) -> str | None:
    """``kallsyms_seqs_of_names`` at ``at`` (Linux 6.2+: big-endian 3-byte
    indexes of the symbols sorted by name, as strcmp orders them) against the
    decoded names: a damaged name is out of order, or None."""
    n = len(names)
    try:
        raw = read(at, 3 * n)
    except FaultError:
        return None
    seqs = [(raw[i] << 16) | (raw[i + 1] << 8) | raw[i + 2] for i in range(0, 3 * n, 3)]
    if max(seqs) >= n:
        return f"kallsyms_seqs_of_names holds {max(seqs)}, past the {n} symbols"
    for i in range(n - 1):
        a, b = names[seqs[i]], names[seqs[i + 1]]
        if a > b:
            return (f"kallsyms_seqs_of_names out of order at {i}: {a!r} (entry {seqs[i]}) "
                    f"before {b!r} (entry {seqs[i + 1]})")
    return None


def check_order(addresses: Sequence[int], names: Sequence[str]) -> str | None:
    """scripts/kallsyms.c sorts the symbols by address: the first entry out
    of order, or None."""
    for i in range(len(addresses) - 1):
        if addresses[i] > addresses[i + 1]:
            return (f"kallsyms_offsets out of order at entry {i} ({names[i]} at "
                    f"{addresses[i]:#x}, {names[i + 1]} at {addresses[i + 1]:#x})")
    return None


def _decode_fast(blob: bytes, token_table: bytes, token_index: bytes, count: int,
                 marks: list[int] | None = None) -> tuple[list[str], list[str]]:
    """Names and kind letters of ``count`` entries of ``blob``; ``marks``
    gets where every 256th entry starts, and last the end."""
    idx = array("H")
    idx.frombytes(token_index[:512])
    tokens = []
    for off in idx:
        end = token_table.find(b"\0", off)
        tokens.append(token_table[off:end].decode("latin-1"))
    names: list[str] = []
    kinds: list[str] = []
    append_n = names.append
    append_k = kinds.append
    get = tokens.__getitem__
    join = "".join
    pos = 0
    for i in range(count):
        if marks is not None and not i & 0xFF:
            marks.append(pos)
        n = blob[pos]
        if n & 0x80:
            n = (n & 0x7F) | (blob[pos + 1] << 7)
            pos += 2
        else:
            pos += 1
        s = join(map(get, blob[pos:pos + n]))
        pos += n
        if pos > len(blob):
            raise IndexError("kallsyms_names blob too short")
        append_k(s[:1])
        append_n(s[1:])
    if marks is not None:
        marks.append(pos)
    return names, kinds


#: Bump when what load_kallsyms caches changes: old cache files are ignored.
CACHE_FORMAT = 1


def load_kallsyms(read: Callable[[int, int], bytes], vmcoreinfo: dict[str, str],
                  *, known: dict[str, int] | None = None, cache=None,
                  pointer_size: int = 8, warn: Callable[[str], None] | None = None
                  ) -> SymbolTable:
    """Decode the kernel's kallsyms from dump memory.

    :param read: virtual read function ``read(addr, size) -> bytes``
    :param vmcoreinfo: parsed VMCOREINFO (needs the SYMBOL(kallsyms_*) keys)
    :param known: addresses to check the offset rule against; defaults to
        SYMBOL(_stext) and SYMBOL(init_uts_ns) from VMCOREINFO
    :param cache: a :class:`kql.kernel.DiskCache` of this kernel build, or
        None.  The decoded names (the slow part) are kept there, checked on
        load against a CRC of the dump's own ``kallsyms_names`` ..
        ``kallsyms_token_table`` bytes; addresses are always computed from the
        dump (they move with KASLR) and checked against VMCOREINFO.
    :param warn: called with each inconsistency found in the tables (see
        the module doc); the table is returned all the same
    :raises KallsymsError: tables missing or nothing reproduces a known address
    """
    problems = []
    need = ["kallsyms_names", "kallsyms_num_syms", "kallsyms_token_table",
            "kallsyms_token_index"]
    addr = {n: _sym_addr(vmcoreinfo, n) for n in need + [
        "kallsyms_offsets", "kallsyms_relative_base", "kallsyms_addresses",
        "kallsyms_markers"]}
    missing = [n for n in need if addr[n] is None]
    if missing:
        raise KallsymsError("VMCOREINFO has no kallsyms symbols (" + ", ".join(missing)
                            + "; Linux < 6.0?): give a System.map or vmlinux")
    try:
        count = int.from_bytes(read(addr["kallsyms_num_syms"], 4), "little")
        if not 0 < count < 10_000_000:
            raise KallsymsError(f"implausible kallsyms_num_syms {count}")
        token_index = read(addr["kallsyms_token_index"], 512)
        idx = array("H")
        idx.frombytes(token_index)
        table_len = max(idx) + 256
        token_table = read(addr["kallsyms_token_table"], table_len)
        # scripts/kallsyms.c writes names, markers (, seqs_of_names), then the
        # token table: that span holds every name, and its CRC identifies them.
        span = None
        size = addr["kallsyms_token_table"] - addr["kallsyms_names"]
        if 0 < size <= 64 << 20:
            try:
                span = read(addr["kallsyms_names"], size)
            except FaultError:
                span = None
        header = None
        if cache is not None and span is not None:
            crc = zlib.crc32(span, zlib.crc32(token_table, zlib.crc32(token_index)))
            header = {"format": CACHE_FORMAT, "count": count, "crc": crc}
            table = _from_cache(cache.load("kallsyms", header), read, addr, count,
                                vmcoreinfo, known, pointer_size)
            if table is not None:
                # the names, markers and tokens are those checked when cached
                _report([check_order(table.addresses, table.names)], warn)
                return table
        limit = None
        if addr["kallsyms_markers"] and addr["kallsyms_markers"] > addr["kallsyms_names"]:
            limit = addr["kallsyms_markers"] - addr["kallsyms_names"]
        names = None
        marks: list[int] = []
        if span is not None or limit is None:
            # One optimistic read (names average ~14 bytes; the tables after
            # them are mapped too), decoded in one pass; fall back to careful
            # chunked reading if it faults or comes up short.
            try:
                blob = span if span is not None else read(addr["kallsyms_names"], count * 24)
                names, kinds = _decode_fast(blob, token_table, token_index, count, marks)
            except (FaultError, IndexError):
                names = None
        if names is None:
            marks = []
            blob, _ = _read_names_blob(read, addr["kallsyms_names"], count, limit)
            names, kinds = _decode_fast(blob, token_table, token_index, count, marks)
        addresses = _addresses(read, addr, count, vmcoreinfo, names, known, pointer_size)
        problems = [check_tokens(token_table, idx),
                    check_markers(read, addr["kallsyms_names"] + marks[-1], marks[:-1],
                                  pointer_size, addr["kallsyms_token_table"], count, names),
                    check_order(addresses, names)]
        base = addr["kallsyms_relative_base"]
        if base is not None and base > addr["kallsyms_token_table"]:
            # Since Linux 6.4 (commit 404bad70fcf7 "scripts/kallsyms: change the
            # output order") kallsyms_seqs_of_names follows kallsyms_relative_base
            at = (base + 2 * pointer_size - 1) & -pointer_size
            problems.append(check_name_order(read, at, names))
    except FaultError as e:
        raise KallsymsError(f"cannot read kallsyms tables: {e}") from None
    _report(problems, warn)
    joined = "".join(kinds)   # one letter each: a str is smaller and pickles faster
    table = SymbolTable(names, joined if len(joined) == count else kinds, addresses,
                        source="kallsyms")
    if (header is not None and table.names is names and isinstance(table.kinds, str)
            and not any(problems)):
        cache.save("kallsyms", header, {"names": names, "kinds": table.kinds,
                                        "name_order": table.name_order})
    return table


def _report(problems: list[str | None], warn: Callable[[str], None] | None) -> None:
    for p in problems:
        if p is not None and warn is not None:
            warn(f"{DAMAGED}{p}: symbol names and addresses may be wrong")


def _from_cache(data: dict | None, read, addr: dict, count: int, vmcoreinfo: dict,
                known: dict[str, int] | None, pointer_size: int = 8) -> SymbolTable | None:
    """The SymbolTable from cached names, or None when they do not fit."""
    if data is None:
        return None
    try:
        names, kinds, order = data["names"], data["kinds"], data["name_order"]
        if not (isinstance(names, list) and isinstance(kinds, str) and
                isinstance(order, array) and len(names) == len(kinds) == len(order) == count):
            return None
        addresses = _addresses(read, addr, count, vmcoreinfo, names, known, pointer_size)
        table = SymbolTable(names, kinds, addresses, source="kallsyms", name_order=order)
    except (KallsymsError, FaultError, KeyError, TypeError, ValueError, IndexError):
        return None   # decode the dump instead: it says what is wrong, if anything
    if table.names is not names:
        return None   # not in the order the name index was made for
    return table


def _read_names_blob(read, start: int, count: int, limit: int | None):
    if limit is not None:
        try:
            return read(start, limit), None
        except FaultError:
            pass
    return _read_names(read, start, count, limit)


def _addresses(read, addr: dict, count: int, vmcoreinfo: dict, names: list[str],
               known: dict[str, int] | None, psize: int = 8) -> list[int]:
    if known is None:
        known = {}
        for n in ("_stext", "init_uts_ns", "swapper_pg_dir"):
            a = _sym_addr(vmcoreinfo, n)
            if a is not None:
                known[n] = a
    checks = []
    for n, a in known.items():
        try:
            checks.append((names.index(n), a))
        except ValueError:
            pass
    if not checks:
        raise KallsymsError("cannot check kallsyms addresses: no _stext in kallsyms")

    if addr["kallsyms_addresses"] is not None and addr["kallsyms_offsets"] is None:
        raw = read(addr["kallsyms_addresses"], count * psize)
        a = array("Q" if psize == 8 else "I")
        a.frombytes(raw)
        cands = {"absolute": a.tolist()}
    else:
        if addr["kallsyms_offsets"] is None:
            raise KallsymsError("VMCOREINFO has neither kallsyms_offsets nor kallsyms_addresses")
        raw = read(addr["kallsyms_offsets"], count * 4)
        offs = array("i")
        offs.frombytes(raw)
        base = None
        if addr["kallsyms_relative_base"] is not None:
            base = int.from_bytes(read(addr["kallsyms_relative_base"], psize), "little")
        cands = {}
        mask = (1 << 8 * psize) - 1

        def rule(name):
            def f(i):
                o = offs[i]
                if name == "base-relative":
                    return base + (o & 0xFFFFFFFF)
                if name == "absolute-percpu":
                    return (o if o >= 0 else base - 1 - o) & mask
                return (addr["kallsyms_offsets"] + 4 * i + o) & mask  # place-relative
            return f

        rules = ["place-relative"] if base is None else [
            "base-relative", "absolute-percpu", "place-relative"]
        for r in rules:
            f = rule(r)
            if all(f(i) == want for i, want in checks):
                if r == "base-relative":
                    cands[r] = [base + (o & 0xFFFFFFFF) for o in offs]
                elif r == "absolute-percpu":
                    b1 = base - 1
                    cands[r] = [o if o >= 0 else b1 - o for o in offs]
                else:
                    start = addr["kallsyms_offsets"]
                    cands[r] = [(start + 4 * i + o) & mask for i, o in enumerate(offs)]
                break
    for r, addrs in cands.items():
        if all(addrs[i] == want for i, want in checks):
            return addrs
    raise KallsymsError("no kallsyms address rule reproduces SYMBOL(_stext)")
