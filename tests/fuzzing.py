"""Fuzz targets for every parser of untrusted input (issue #13).

A dump, a query or a saved-query file is untrusted: whatever it holds, kql
must answer, or fail with a :class:`kql.errors.KqlError` (exit 1 or 2) —
never another exception (exit 3), never hang.  Each target here takes the
fuzzer's bytes, decodes them into one damaged input built from a real seed
(the shipped sample dump, tests/sample/vmcore.kdump, and queries over its
catalog), runs it, and lets any non-KqlError exception through: that is a
finding.

The same targets run three ways:

- ``tests/test_fuzz.py``: hypothesis, a bounded number of examples each
  (about a minute in all), in the normal suite;
- ``python tests/fuzzing.py atheris TARGET [atheris/libFuzzer flags]``:
  coverage-guided, for hours (``-max_total_time=36000``), if the optional
  ``fuzz`` extra (atheris) is installed;
- ``python tests/fuzzing.py campaign --dumps N --queries N``: N random cases
  per kind with a per-case timeout, counting errors, hangs and answers that
  changed without a warning (each printed as a ``SILENT`` line to replay);
  ``--regions kallsyms,vmcoreinfo`` damages only those parts.

Targets: ``dump`` (kdump header, sub header, VMCOREINFO, ELF notes, both
bitmaps, page descriptors, the pages holding BTF, kallsyms, ORC, the printk
ring and tasks; truncation), ``flattened`` (the record stream), ``elf`` (an
ELF core's headers and notes), ``vmcoreinfo``, ``notes``, ``btf``,
``grammar``, ``query`` and ``saved_query``.
"""

from __future__ import annotations

import functools
import os
import random
import struct
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
SAMPLE = HERE / "sample" / "vmcore.kdump"
if str(HERE.parent) not in sys.path:
    sys.path.insert(0, str(HERE.parent))

from kql.errors import KqlError  # noqa: E402


class BytesSource:
    """The :class:`kql.dump.files.MappedFile` interface over bytes in memory."""

    def __init__(self, data, path: str = "<fuzz>"):
        self.path = path
        self._data = data
        self.size = len(data)

    @property
    def buffer(self):
        return self._data

    def read(self, offset: int, size: int) -> bytes:
        return bytes(self._data[offset:offset + size])

    def head(self, size: int) -> bytes:
        return self.read(0, size)

    def close(self) -> None:
        pass


def open_bytes(data, zero_excluded: bool = False):
    """A Dump from bytes, the way :func:`kql.dump.open_dump` opens a file."""
    from kql.dump import open_source

    return open_source(BytesSource(data), zero_excluded=zero_excluded)


# ------------------------------------------------------------------ the seed

@functools.lru_cache(maxsize=None)
def sample() -> bytes:
    return SAMPLE.read_bytes()


@functools.lru_cache(maxsize=None)
def sample_kernel():
    """The sample dump, opened once (for queries and to find regions)."""
    from kql.kernel import open_kernel
    return open_kernel(str(SAMPLE))


@functools.lru_cache(maxsize=None)
def regions() -> dict[str, list[tuple[int, int]]]:
    """name -> [(file offset, length)] of the sample's parts worth damaging."""
    from kql.dump.kdump import HEADER_SIZE, _HEADER_TAIL, _SUB_HEADER

    data = sample()
    k = sample_kernel()
    part = k.dump.phys.parts[0]
    bs = part.block_size
    (_st, _bs, sub_hdr_size, bitmap_blocks, *_rest) = _HEADER_TAIL.unpack_from(data, 424)
    sub = _SUB_HEADER.unpack_from(data, bs)
    off_vmci, size_vmci, off_note, size_note = sub[5], sub[6], sub[7], sub[8]
    bm = (1 + sub_hdr_size) * bs
    half = bitmap_blocks * bs // 2
    desc_off = part._desc_off
    out = {
        "header": [(0, HEADER_SIZE)],
        "subheader": [(bs, _SUB_HEADER.size)],
        "vmcoreinfo": [(off_vmci, size_vmci)],
        "notes": [(off_note, size_note)],
        "bitmap1": [(bm, half)],
        "bitmap2": [(bm + half, half)],
        "descriptors": [(desc_off, part.num_dumped * 24)],
    }

    def pages_of(start: int, stop: int) -> list[tuple[int, int]]:
        # memory regions as (-1 - pfn, span): dump_case rewrites such a page
        # raw at the end of the file and points its descriptor there
        spans = []
        for va in range(start & ~0xFFF, stop, 4096):
            try:
                pfn = k.memory.translate(va) >> 12
            except KqlError:
                continue
            if part.in_dump(pfn):
                lo = max(start, va) - va
                spans.append((-1 - pfn, (lo << 16) | (min(stop, va + 4096) - va - lo)))
        return spans

    syms = k.symbols

    def address(name: str) -> int | None:
        s = syms.get(name)
        if s is not None:
            return s.address
        v = k.vmcoreinfo.get(f"SYMBOL({name})")  # the kallsyms tables are found here
        return int(v, 16) if v else None

    def sym_range(a: str, b: str | None = None, size: int = 4096):
        start = address(a)
        if start is None:
            return []
        end = address(b) if b else None
        return pages_of(start, end if end is not None else start + size)

    out["btf"] = sym_range("__start_BTF", "__stop_BTF")
    out["kallsyms"] = (sym_range("kallsyms_offsets", size=1 << 16)
                       + sym_range("kallsyms_names", size=1 << 16)
                       + sym_range("kallsyms_token_table", size=4096)
                       + sym_range("kallsyms_token_index", size=512)
                       + sym_range("kallsyms_num_syms", size=8))
    out["orc"] = (sym_range("__start_orc_unwind_ip", "__stop_orc_unwind_ip")
                  + sym_range("__start_orc_unwind", "__stop_orc_unwind"))
    out["tasks"] = sym_range("init_task", size=8192)
    rb = syms.get("prb")
    if rb is not None:
        prb = k.read_pointer(rb.address)
        out["printk"] = pages_of(prb, prb + 4096)
        T = k.types.find_type
        dr = prb + T("struct printk_ringbuffer").offsetof("desc_ring")
        ring = T("struct prb_desc_ring")
        n = 1 << k.read_u32(dr + ring.offsetof("count_bits"))
        descs = k.read_pointer(dr + ring.offsetof("descs"))
        infos = k.read_pointer(dr + ring.offsetof("infos"))
        out["printk"] += pages_of(descs, descs + n * T("struct prb_desc").size)
        out["printk"] += pages_of(infos, infos + n * T("struct printk_info").size)
    out["pages"] = [(desc_off + part.num_dumped * 24, len(data) - desc_off
                     - part.num_dumped * 24)]
    return {k2: v for k2, v in out.items() if v}


REGIONS = ("header", "subheader", "vmcoreinfo", "notes", "bitmap1", "bitmap2", "descriptors",
           "btf", "kallsyms", "orc", "tasks", "printk", "pages", "truncate")

DUMP_QUERIES = (
    "SELECT count(*) AS n FROM tasks",
    "SELECT pid, comm, state, ppid FROM tasks ORDER BY pid",
    "SELECT seq, ts_ns, level, text FROM dmesg",
    "SELECT * FROM sys",
    "SELECT name, size FROM modules ORDER BY name",
    "SELECT * FROM meminfo",
    "SELECT pid, level, symbol FROM stack_frames ORDER BY pid, level",
    "SELECT task->mm->map_count AS m, task->comm AS c FROM tasks ORDER BY pid",
)


def _mutate(buf: bytearray, at: int, length: int, r: random.Random) -> str:
    """One random damage to buf[at:at+length]; returns what it did."""
    off = at + r.randrange(max(1, length))
    op = r.randrange(6)
    if op == 0:
        bit = r.randrange(8)
        buf[off] ^= 1 << bit
        return f"flip bit {bit} at {off}"
    if op == 1:
        n = r.choice((1, 2, 4, 8))
        buf[off:off + n] = bytes(n)
        return f"zero {n} at {off}"
    if op == 2:
        n = r.choice((1, 2, 4, 8))
        buf[off:off + n] = b"\xff" * n
        return f"0xff x{n} at {off}"
    if op == 3:
        n = r.randrange(1, 17)
        buf[off:off + n] = bytes(r.randrange(256) for _ in range(n))
        return f"random {n} at {off}"
    if op == 4:  # text damage: VMCOREINFO values
        n = r.randrange(1, 5)
        buf[off:off + n] = bytes(r.choice(b"0123456789abcxz-=\n()_ ") for _ in range(n))
        return f"text {n} at {off}"
    v = r.choice((0, 1, 0x7fffffff, 0xffffffff, 1 << 40, (1 << 63) - 1, 1 << 63))
    buf[off:off + 8] = struct.pack("<Q", v)
    return f"u64 {v:#x} at {off}"


def dump_case(seed: int, region: str | None = None) -> tuple[bytes, str, str]:
    """(damaged dump bytes, what was done, the query to run) for ``seed``."""
    r = random.Random(seed)
    regs = regions()
    region = region or r.choice([x for x in REGIONS if x in regs or x == "truncate"])
    data = bytearray(sample())
    query = r.choice(DUMP_QUERIES)
    if region == "truncate":
        cut = r.choice((r.randrange(len(data)), r.randrange(1 << 16), r.randrange(1 << 20)))
        return bytes(data[:cut]), f"truncate at {cut}", query
    done = []
    for _ in range(r.choice((1, 1, 1, 2, 3))):
        at, length = r.choice(regs[region])
        if at < 0:  # a page of memory: write it raw at the end, damaged
            pfn, lo, n = -1 - at, length >> 16, length & 0xFFFF
            part = sample_kernel().dump.phys.parts[0]
            page = bytearray(part.page(pfn))
            done.append(f"pfn {pfn:#x} " + _mutate(page, lo, n, r))
            desc = part._desc_off + (part._raw_rank(pfn) - part._rank_base) * 24
            data[desc:desc + 16] = struct.pack("<qII", len(data), 4096, 0)
            data += page
        else:
            done.append(_mutate(data, at, length, r))
    return bytes(data), f"{region}: " + ", ".join(done), query


def run_dump(data: bytes, query: str, cache_dir=False):
    """Open ``data`` and run ``query``; (rows or None, warnings)."""
    from kql.execute import Session
    from kql.kernel import Kernel

    dump = open_bytes(data)
    try:
        k = Kernel(dump, cache_dir=cache_dir)
        res = Session({None: k}).execute(query)[-1]
        rows = res.table.to_pylist()
        warnings = list(dump.warnings) + list(k.warnings) + res.warnings.lines()
        return rows, warnings
    finally:
        dump.close()


def open_case(data: bytes):
    """The quick level of a dump case: open it, set up the kernel's address
    translation and read the pages a query would start from (init_task, the
    printk ring); no BTF, kallsyms or query.  (rows, warnings) like run_dump."""
    from kql.kernel import Kernel

    dump = open_bytes(data)
    try:
        k = Kernel(dump, cache_dir=False)
        rows = []
        for name in ("SYMBOL(init_top_pgt)", "SYMBOL(swapper_pg_dir)"):
            if name in k.vmcoreinfo:  # the page-table root the kernel uses
                rows.append(k.read(int(k.vmcoreinfo[name], 16), 64))
                break
        for pfn in range(0, dump.phys.max_pfn, 97):
            if dump.phys.is_mapped(pfn << 12):
                try:
                    rows.append(dump.phys.read(pfn << 12, 4096)[:64])
                except KqlError as e:
                    rows.append(type(e).__name__)
        return rows, list(dump.warnings)
    finally:
        dump.close()


def target_dump(data: bytes) -> None:
    seed = int.from_bytes(data[:8].ljust(8, b"\0"), "little")
    damaged, _what, query = dump_case(seed)
    try:
        run_dump(damaged, query)
    except KqlError:
        pass


def target_flattened(data: bytes) -> None:
    """A flattened stream: records of the sample's first 512 KiB, damaged."""
    r = random.Random(int.from_bytes(data[:8].ljust(8, b"\0"), "little"))
    kd = sample()[:1 << 19]
    head = b"makedumpfile".ljust(16, b"\0") + struct.pack(">qq", 1, 1)
    out = bytearray(head.ljust(4096, b"\0"))
    pos = 0
    while pos < len(kd):
        n = r.choice((512, 4096, 65536))
        out += struct.pack(">qq", pos, len(kd[pos:pos + n])) + kd[pos:pos + n]
        pos += n
    out += struct.pack(">qq", -1, 0)
    for _ in range(r.randrange(1, 4)):
        _mutate(out, 4096, len(out) - 4096, r)
    try:
        d = open_bytes(bytes(out[:r.choice((len(out), r.randrange(len(out))))]))
        d.phys.read(0, 4096)
        d.close()
    except KqlError:
        pass


@functools.lru_cache(maxsize=None)
def elf_seed() -> bytes:
    """A small ELF core: the sample's notes and VMCOREINFO, 16 pages of memory."""
    k = sample_kernel()
    d = k.dump
    notes = b""
    for n in d.notes + ([] if any(x.name == "VMCOREINFO" for x in d.notes) else
                        [type(d.notes[0])("VMCOREINFO", 0, d.vmcoreinfo_raw)]):
        name = n.name.encode() + b"\0"
        notes += struct.pack("<III", len(name), len(n.desc), n.type)
        notes += name.ljust((len(name) + 3) & ~3, b"\0") + n.desc.ljust((len(n.desc) + 3) & ~3,
                                                                         b"\0")
    mem = b"".join(d.phys.read(a, 4096) for a in range(0x100000, 0x110000, 4096))
    phoff, phnum = 64, 2
    note_off = phoff + 56 * phnum
    load_off = note_off + len(notes)
    ehdr = b"\x7fELF\x02\x01\x01" + bytes(9) + struct.pack(
        "<HHIQQQIHHHHHH", 4, 62, 1, 0, phoff, 0, 0, 64, 56, phnum, 64, 0, 0)
    ph_note = struct.pack("<IIQQQQQQ", 4, 0, note_off, 0, 0, len(notes), len(notes), 0)
    ph_load = struct.pack("<IIQQQQQQ", 1, 7, load_off, 0xffff888000100000, 0x100000,
                          len(mem), len(mem), 4096)
    return ehdr + ph_note + ph_load + notes + mem


def target_elf(data: bytes) -> None:
    r = random.Random(int.from_bytes(data[:8].ljust(8, b"\0"), "little"))
    seed = bytearray(elf_seed())
    end = 64 + 112 + 4096  # headers and the notes
    for _ in range(r.randrange(1, 4)):
        _mutate(seed, 0, min(end, len(seed)), r)
    try:
        d = open_bytes(bytes(seed))
        d.prstatus()
        d.phys.read(0x100000, 64)
        d.close()
    except KqlError:
        pass


def target_vmcoreinfo(data: bytes) -> None:
    from kql.dump.base import parse_vmcoreinfo, validate_vmcoreinfo
    from kql.arch import get_arch
    from kql.errors import DumpError

    raw = sample_kernel().dump.vmcoreinfo_raw
    r = random.Random(int.from_bytes(data[:8].ljust(8, b"\0"), "little"))
    buf = bytearray(raw) + bytearray(data[8:])
    for _ in range(r.randrange(1, 4)):
        _mutate(buf, 0, len(buf), r)
    info = parse_vmcoreinfo(bytes(buf))
    try:
        validate_vmcoreinfo(info, "<fuzz>")
        arch = get_arch("x86_64")
        arch.kaslr_offset(info), arch.phys_base(info), arch.pgtable_levels(info)
        arch.kernel_pgtable_root(info)
    except DumpError:
        pass


def target_notes(data: bytes) -> None:
    from kql.dump.base import parse_notes

    raw = b"".join(struct.pack("<III", len(n.name) + 1, len(n.desc), n.type)
                   + (n.name.encode() + b"\0").ljust((len(n.name) + 4) & ~3, b"\0")
                   + n.desc.ljust((len(n.desc) + 3) & ~3, b"\0")
                   for n in sample_kernel().dump.notes)
    r = random.Random(int.from_bytes(data[:8].ljust(8, b"\0"), "little"))
    buf = bytearray(raw)
    for _ in range(r.randrange(1, 4)):
        _mutate(buf, 0, len(buf), r)
    try:
        from kql.arch import get_arch
        arch = get_arch("x86_64")
        for n in parse_notes(bytes(buf), "<fuzz>"):
            if n.type == 1 and n.name == "CORE":
                arch.parse_prstatus(n.desc)
            if n.name == "QEMU":
                arch.parse_qemu_cpu_state(n.desc)
    except KqlError:
        pass


@functools.lru_cache(maxsize=None)
def btf_seed() -> bytes:
    k = sample_kernel()
    s, e = k.symbols.get("__start_BTF"), k.symbols.get("__stop_BTF")
    return k.read(s.address, e.address - s.address)


def target_btf(data: bytes) -> None:
    """The vmlinux BTF with damage in its header, type or string section."""
    from kql.btf import Btf

    r = random.Random(int.from_bytes(data[:8].ljust(8, b"\0"), "little"))
    buf = bytearray(btf_seed())
    hdr_len = struct.unpack_from("<I", buf, 4)[0]
    for _ in range(r.randrange(1, 4)):
        where = r.choice(((0, 24), (hdr_len, 1 << 16), (0, len(buf))))
        _mutate(buf, where[0], min(where[1], len(buf) - where[0]), r)
    try:
        b = Btf(bytes(buf))
        for name in ("struct task_struct", "struct list_head", "struct mm_struct",
                     "struct printk_info", "unsigned long"):
            try:
                t = b.find_type(name)
            except LookupError:
                continue
            t.size, t.members, t.type_name()
    except KqlError:
        pass


# ------------------------------------------------------------------- queries

@functools.lru_cache(maxsize=None)
def _catalog_names():
    from kql.tables import catalog
    return {name: [c.name for c in spec.columns] for name, spec in catalog().items()
            if spec.params is None}


_FUNCS = ("hex", "sym", "addr", "upper", "length", "coalesce", "abs", "count", "min", "max",
          "sum", "container_of", "list_contains", "substr", "cast")
_FRAGMENTS = ("(", ")", "->", ".", "::", "'", '"', "--", "/*", "*/", ";", ",", "[", "]",
              "0x", "NULL", "SELECT", "FROM", "WHERE", "UNION ALL", "ORDER BY", "GROUP BY",
              "JOIN", "ON", "AS", "LIMIT", "WITH", "RECURSIVE", "CASE", "WHEN", "IN", "NOT",
              "\u0661", "\x00", "\U0001F600", "1e999", "99999999999999999999999", ":p",
              "read_text('/etc/passwd')", "'http://x/y.csv'", "current_setting('x')")


def random_query(r: random.Random) -> str:
    """A query over the sample's catalog: valid most of the time, then damaged."""
    cat = _catalog_names()
    table = r.choice(sorted(cat))
    cols = cat[table]
    pick = r.sample(cols, k=min(len(cols), r.randrange(1, 4)))
    exprs = []
    for c in pick:
        kind = r.randrange(8)
        if kind == 0:
            exprs.append(f"{r.choice(('hex', 'upper', 'length', 'abs'))}({c})")
        elif kind == 1:
            exprs.append(f"{c} {r.choice(('+', '-', '*', '/', '%', '||', '&', '<<'))} "
                         f"{r.choice(('1', '0', '-1', '0x10', '2.5', 'NULL', repr('x')))}")
        elif kind == 2 and table == "tasks":
            exprs.append(r.choice(("task->comm", "task->mm->map_count", "task->parent->pid",
                                   "task->mm[3]", "(struct list_head *)task",
                                   "task->nope", "task->cred->uid.val", "task->stack[100]")))
        elif kind == 3:
            exprs.append(r.choice(("count(*)", f"min({c})", f"max({c})", f"count(DISTINCT {c})")))
        else:
            exprs.append(c)
    q = f"SELECT {', '.join(exprs)} FROM {table}"
    if r.random() < 0.4:
        c = r.choice(cols)
        q += f" WHERE {c} {r.choice(('=', '<>', '<', '>=', 'IS', 'IS NOT', 'LIKE'))} " \
             f"{r.choice(('1', 'NULL', repr('a%'), '0x0', '-5', '(SELECT 1)'))}"
    if any(e.startswith(("count(", "min(", "max(")) for e in exprs) and r.random() < 0.5:
        plain = [e for e in exprs if not e.startswith(("count(", "min(", "max("))]
        if plain:
            q += " GROUP BY " + ", ".join(plain)
    if r.random() < 0.3:
        q += f" ORDER BY {r.randrange(1, len(exprs) + 1)}{r.choice(('', ' DESC'))}"
    if r.random() < 0.3:
        q += f" LIMIT {r.choice((0, 1, 5, 1000000, 2 ** 63, -1))}"
    if r.random() < 0.1:
        q = f"WITH x AS ({q}) SELECT * FROM x UNION ALL SELECT * FROM x"
    if r.random() < 0.05:
        q = "EXPLAIN " + q
    for _ in range(r.choice((0, 0, 0, 1, 2, 3))):  # damage
        pos = r.randrange(len(q) + 1)
        op = r.randrange(3)
        if op == 0:
            q = q[:pos] + r.choice(_FRAGMENTS) + q[pos:]
        elif op == 1:
            q = q[:pos] + q[pos + r.randrange(1, 6):]
        else:
            q = q[:pos] + chr(r.randrange(32, 0x250)) + q[pos:]
    return q


def run_query(text: str):
    from kql.execute import Session
    return Session({None: sample_kernel()}).execute(text)


def target_query(data: bytes) -> None:
    if len(data) >= 8 and data[0] & 1:
        text = random_query(random.Random(int.from_bytes(data[1:9], "little")))
    else:
        text = data.decode("utf-8", errors="replace")
    try:
        run_query(text)
    except KqlError:
        pass


def target_grammar(data: bytes) -> None:
    from kql.grammar import parse
    text = data.decode("utf-8", errors="replace")
    try:
        for stmt in parse(text):
            from kql.execute import check_depth
            check_depth(stmt, text)
            try:
                stmt.to_sql()
            except Exception as e:  # noqa: BLE001 - NotLowered is expected here
                from kql.grammar.ast import NotLowered
                if not isinstance(e, NotLowered):
                    raise
    except KqlError:
        pass


def target_saved_query(data: bytes) -> None:
    from kql import queries

    r = random.Random(int.from_bytes(data[:8].ljust(8, b"\0"), "little"))
    shipped = sorted((HERE.parent / "queries").glob("*.kql"))
    buf = bytearray(r.choice(shipped).read_bytes()) + bytearray(data[8:])
    for _ in range(r.randrange(0, 4)):
        _mutate(buf, 0, len(buf), r)
    with tempfile.TemporaryDirectory() as d:
        f = Path(d) / "x.kql"
        f.write_bytes(bytes(buf))
        try:
            q = queries.parse_file(f)
            values = {p.name: r.choice(("1", "-1", "x'y", '"', "0x10", "\u0661", ":a"))
                      for p in q.params}
            from kql.grammar import parse
            parse(q.render(values))
        except KqlError:
            pass


TARGETS = {
    "dump": target_dump, "flattened": target_flattened, "elf": target_elf,
    "vmcoreinfo": target_vmcoreinfo, "notes": target_notes, "btf": target_btf,
    "grammar": target_grammar, "query": target_query, "saved_query": target_saved_query,
}


# ------------------------------------------------------------------ campaign

class Timeout(Exception):
    pass


def _alarm(signum, frame):
    raise Timeout()


def campaign(n_dumps: int, n_queries: int, timeout: int = 60, start: int = 0,
             out=sys.stdout, level: str = "query", only: tuple[str, ...] = ()) -> dict:
    """Random damaged dumps and random queries; counts of each outcome.
    ``only``: damage only these regions (the seed picks one of them)."""
    import collections
    import signal
    import time
    import traceback

    signal.signal(signal.SIGALRM, _alarm)
    counts: collections.Counter = collections.Counter()
    findings = []
    baseline = {}
    cache = tempfile.mkdtemp(prefix="kql-fuzz-cache-")
    if level == "query":
        for q in DUMP_QUERIES:
            baseline[q] = run_dump(sample(), q, cache_dir=cache)[0]
    else:
        baseline = {q: open_case(sample())[0] for q in DUMP_QUERIES}
    t0 = time.time()
    for i in range(start, start + n_dumps):
        data, what, q = dump_case(i, only[i % len(only)] if only else None)
        region = what.split(":")[0].split(" ")[0]
        # BTF and kallsyms are cached by build-id: damage to them needs a fresh parse
        fresh = region in ("btf", "kallsyms")
        signal.alarm(timeout)
        try:
            if level == "query":
                rows, warnings = run_dump(data, q, cache_dir=False if fresh else cache)
            else:
                rows, warnings = open_case(data)
            signal.alarm(0)
            if rows == baseline[q]:
                counts["dump: same answer"] += 1
            elif warnings or any(isinstance(x, str) and x.endswith("Error") for x in rows):
                # a dump warning, or a page read that failed loudly (a FaultError)
                counts["dump: changed answer with warnings"] += 1
            else:
                counts[f"dump: changed answer without warning ({region})"] += 1
                print("SILENT", (i, what, q), file=out, flush=True)
        except KqlError as e:
            signal.alarm(0)
            counts[f"dump: exit {e.exit_code}"] += 1
        except Timeout:
            counts["dump: HANG"] += 1
            findings.append((i, what, q, "hang"))
            print("FINDING", findings[-1], file=out, flush=True)
        except Exception as e:  # noqa: BLE001 - a finding
            signal.alarm(0)
            counts["dump: INTERNAL ERROR"] += 1
            findings.append((i, what, q, "".join(traceback.format_exception(e)).strip()))
            print("FINDING", findings[-1], file=out, flush=True)
        if (i - start + 1) % (500 if level == "open" else 100) == 0:
            print(f"dumps {i - start + 1}/{n_dumps} in {time.time() - t0:.0f} s: "
                  f"{dict(counts)}", file=out, flush=True)
    r = random.Random(start)
    for i in range(n_queries):
        q = random_query(r)
        signal.alarm(timeout)
        try:
            run_query(q)
            signal.alarm(0)
            counts["query: ok"] += 1
        except KqlError as e:
            signal.alarm(0)
            counts[f"query: exit {e.exit_code}"] += 1
        except Timeout:
            counts["query: HANG"] += 1
            findings.append((i, "query", q, "hang"))
            print("FINDING", findings[-1], file=out, flush=True)
        except Exception as e:  # noqa: BLE001 - a finding
            signal.alarm(0)
            counts["query: INTERNAL ERROR"] += 1
            findings.append((i, "query", q, "".join(traceback.format_exception(e)).strip()))
            print("FINDING", findings[-1], file=out, flush=True)
        if (i + 1) % 2000 == 0:
            print(f"queries {i + 1}/{n_queries}: {dict(counts)}", file=out, flush=True)
    print(f"done in {time.time() - t0:.0f} s", file=out)
    for k in sorted(counts):
        print(f"  {k}: {counts[k]}", file=out)
    for f in findings[:200]:
        print("FINDING", f, file=out)
    out.flush()
    return {"counts": dict(counts), "findings": findings}


def main(argv: list[str]) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python tests/fuzzing.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("atheris", help="coverage-guided fuzzing of one target (needs atheris)")
    a.add_argument("target", choices=sorted(TARGETS))
    c = sub.add_parser("campaign", help="N random damaged dumps and N random queries")
    c.add_argument("--dumps", type=int, default=10000)
    c.add_argument("--queries", type=int, default=10000)
    c.add_argument("--start", type=int, default=0, help="first case number (seed)")
    c.add_argument("--timeout", type=int, default=60, help="seconds per case before a hang")
    c.add_argument("--level", choices=("query", "open"), default="query",
                   help="query: open the damaged dump and run a query over it (about 1 s a "
                        "case); open: open it, translate and read pages only (fast)")
    c.add_argument("--regions", default="", metavar="R1,R2",
                   help="damage only these regions (" + ", ".join(REGIONS) + ")")
    args, rest = p.parse_known_args(argv)
    if args.cmd == "campaign":
        only = tuple(x for x in args.regions.split(",") if x)
        bad = [x for x in only if x not in REGIONS]
        if bad:
            p.error(f"unknown region {bad[0]!r}")
        res = campaign(args.dumps, args.queries, args.timeout, args.start, level=args.level,
                       only=only)
        return 1 if res["findings"] else 0
    import atheris  # the optional "fuzz" extra

    fn = TARGETS[args.target]
    fn(bytes(16))  # imports every module the target uses, then instruments them
    atheris.instrument_all()
    atheris.Setup([sys.argv[0], *rest], fn)
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    os.environ.setdefault("XDG_CACHE_HOME", tempfile.mkdtemp(prefix="kql-fuzz-"))
    sys.exit(main(sys.argv[1:]))
