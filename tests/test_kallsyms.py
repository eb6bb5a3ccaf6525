"""kallsyms decoding: synthetic tables, and the real tables inside Debian vmlinux
images checked against the System.map shipped beside them."""

import glob
import os
import struct

import pytest

from kql.errors import FaultError
from kql.kallsyms import KallsymsError, SymbolTable, load_kallsyms
from kql.symbols import VmlinuxFile, load_system_map

# a debug vmlinux of each kernel series the fixtures boot (fixtures' .vmlinux)
VMLINUX_OF = ["6.1-live", "6.12-live"]


# -- synthetic ----------------------------------------------------------------------

def _synthetic(symbols, base=0xFFFFFFFF81000000):
    """Tables with one token per printable character (token byte ==
    character; the other bytes are two-character tokens no name uses),
    markers and base-relative offsets; returns (read, vmcoreinfo)."""
    toks = [bytes([i]) if 0x20 < i < 0x7F else b"~%02x" % i for i in range(256)]
    tokens = b"".join(t + b"\0" for t in toks)
    token_index = struct.pack("<256H", *(sum(len(t) + 1 for t in toks[:i]) for i in range(256)))
    names = bytearray()
    marks = []
    for i, (kind, name, _) in enumerate(symbols):
        if i % 256 == 0:
            marks.append(len(names))
        enc = (kind + name).encode()
        n = len(enc)
        names += bytes([n]) if n < 0x80 else bytes([(n & 0x7F) | 0x80, n >> 7])
        names += enc
    names += bytes(-len(names) % 8)   # the markers follow, aligned
    names += struct.pack(f"<{len(marks)}I", *marks)
    offsets = struct.pack(f"<{len(symbols)}i", *(a - base for _, _, a in symbols))
    layout = {}
    mem = bytearray()
    at = 0x1000
    for key, blob in [("kallsyms_num_syms", struct.pack("<I", len(symbols)) + bytes(4)),
                      ("kallsyms_names", bytes(names)), ("kallsyms_token_table", tokens),
                      ("kallsyms_token_index", token_index), ("kallsyms_offsets", offsets),
                      ("kallsyms_relative_base", struct.pack("<Q", base))]:
        layout[key] = at + len(mem)
        mem += blob + bytes(-len(blob) % 8)   # each label aligned, as scripts/kallsyms.c does
    mem += bytes(1 << 16)

    def read(addr, size):
        off = addr - at
        if not (0 <= off and off + size <= len(mem)):
            raise FaultError(addr, "unmapped")
        return bytes(mem[off:off + size])

    info = {f"SYMBOL({k})": f"{v:x}" for k, v in layout.items()}
    info["SYMBOL(_stext)"] = f"{base:x}"
    return read, info


def test_synthetic_long_names_and_aliases():
    base = 0xFFFFFFFF81000000
    long_name = "x" * 300   # needs the 6.1+ two-byte length
    syms = [("T", "_stext", base), ("T", "_text", base), ("t", "alpha", base + 0x10),
            ("T", long_name, base + 0x40), ("t", "dup", base + 0x50), ("T", "dup", base + 0x60),
            ("D", "last", base + 0x100)]
    read, info = _synthetic(syms)
    table = load_kallsyms(read, info)
    assert table.names == [n for _, n, _ in syms]
    assert table.lookup(long_name).address == base + 0x40
    # aliases: the first one in kallsyms order wins, like get_symbol_pos()
    sym, off = table.symbolize(base + 8)
    assert (sym.name, off, sym.size) == ("_stext", 8, 0x10)
    assert table.symbolize(base - 1) is None
    assert table.lookup("dup").kind == "T"          # global preferred
    assert [s.address for s in table.lookup_all("dup")] == [base + 0x50, base + 0x60]
    assert table.lookup("alpha").size == 0x30
    with pytest.raises(LookupError):
        table.lookup("nope")


def test_wrong_stext_rejected():
    read, info = _synthetic([("T", "_stext", 0xFFFFFFFF81000000)])
    info["SYMBOL(_stext)"] = "ffffffff81000040"
    with pytest.raises(KallsymsError):
        load_kallsyms(read, info)


def test_missing_vmcoreinfo_keys():
    with pytest.raises(KallsymsError, match="System.map"):
        load_kallsyms(lambda a, s: b"", {})


# -- real tables inside vmlinux --------------------------------------------------------

@pytest.mark.fixtures
@pytest.mark.parametrize("of", VMLINUX_OF)
def test_vmlinux_kallsyms_match_system_map(of):
    from fixtures import fixture
    vmlinux = fixture(of).vmlinux
    smap = load_system_map(glob.glob(os.path.join(os.path.dirname(vmlinux), "System.map-*"))[0])
    image = VmlinuxFile(vmlinux)
    info = {f"SYMBOL({n})": f"{smap.address(n):x}" for n in [
        "kallsyms_names", "kallsyms_num_syms", "kallsyms_token_table",
        "kallsyms_token_index", "kallsyms_offsets", "kallsyms_relative_base",
        "kallsyms_markers", "_stext", "init_uts_ns"]}
    problems = []
    table = load_kallsyms(image.read, info, warn=problems.append)
    assert problems == []   # tokens, markers and address order as scripts/kallsyms.c wrote them
    # kallsyms marks per-CPU symbols absolute ('A') where System.map says 'D'
    in_map = {(s.name, s.address, s.kind) for s in smap} | {
        (s.name, s.address, "A") for s in smap}
    decoded = [(s.name, s.address, s.kind) for s in table]
    assert len(decoded) > 50000
    assert [d for d in decoded if d not in in_map] == []
    for name in ("init_task", "schedule", "__per_cpu_offset", "__start_BTF"):
        assert table.address(name) == smap.address(name)
    sched = table.lookup("schedule")
    assert table.symbolize(sched.address + 3) == (sched, 3)
    image.close()


def test_damaged_synthetic_tables_are_warned_about():
    base = 0xFFFFFFFF81000000
    syms = [("T", "_stext", base)] + [("t", f"f{i}", base + 16 * i) for i in range(1, 600)]
    read, info = _synthetic(syms)
    problems = []
    assert len(load_kallsyms(read, info, warn=problems.append)) == 600
    assert problems == []

    def damaged(at, data):
        def read2(addr, size):
            b = bytearray(read(addr, size))
            lo = at - addr
            if 0 <= lo < size:
                b[lo:lo + len(data)] = data[:size - lo]
            return bytes(b)
        return read2
    token = int(info["SYMBOL(kallsyms_token_table)"], 16)
    at_a = token + struct.unpack_from("<H", read(int(info["SYMBOL(kallsyms_token_index)"], 16)
                                                 + 2 * 0x41, 2))[0]   # the token "A"
    names = int(info["SYMBOL(kallsyms_names)"], 16)
    offsets = int(info["SYMBOL(kallsyms_offsets)"], 16)
    for at, data, want in [
            (at_a + 1, b"B", "kallsyms_token_index[66] is 198, not 200 (after token 65's NUL)"),
            (at_a, b"\x01", "token 65 of kallsyms_token_table holds the byte 0x01"),
            # entry 1's length: the names decode longer, the markers are not after them
            (names + 8, b"\x04", "kallsyms_markers[1] is 0, but entry 256 of kallsyms_names "
                                 "starts at 1886"),
            (int(info["SYMBOL(kallsyms_num_syms)"], 16), b"\x50\x02",   # 592: the markers are not after the names
             "kallsyms_markers[0] is 842610022, but entry 0 of kallsyms_names starts at 0"),
            (offsets + 4 * 7, b"\xff\xff\x00\x00", "kallsyms_offsets out of order at "
             "entry 7 (f7 at 0xffffffff8100ffff, f8 at 0xffffffff81000080)")]:
        problems = []
        load_kallsyms(damaged(at, data), info, warn=problems.append)
        assert problems[0] == f"kallsyms is damaged: {want}: symbol names and addresses may be wrong"


def test_seqs_of_names_order_the_names():
    from kql.kallsyms import check_name_order
    seqs = b"".join(i.to_bytes(3, "big") for i in (1, 0, 2))   # "a", "b", "c"
    read = lambda at, size: seqs[at:at + size]   # noqa: E731
    assert check_name_order(read, 0, ["b", "a", "c"]) is None
    assert check_name_order(read, 0, ["b", "d", "c"]) == (   # "a" damaged into "d"
        "kallsyms_seqs_of_names out of order at 0: 'd' (entry 1) before 'b' (entry 0)")
    assert check_name_order(lambda at, size: b"\xff" * size, 0, ["a", "b"]) == (
        "kallsyms_seqs_of_names holds 16777215, past the 2 symbols")


def test_symbol_table_unsorted_input():
    t = SymbolTable(["b", "a"], ["T", "T"], [0x20, 0x10])
    assert t.names == ["a", "b"]
    assert t.lookup("a").size == 0x10


# -- real dumps ---------------------------------------------------------------------

def _dump_params():
    from fixtures import FIXTURES
    return FIXTURES


@pytest.fixture(scope="module", params=_dump_params())
def dump_kernel(request):
    from fixtures import fixture
    from kql.kernel import open_kernel
    fx = fixture(request.param)
    k = open_kernel(fx.dump())
    yield fx, k
    k.close()


@pytest.mark.fixtures
def test_dump_kallsyms_tables_are_consistent(dump_kernel):
    """Decoded afresh (no cache), the dump's kallsyms passes every check."""
    fx, k = dump_kernel
    from kql.kernel import Kernel
    fresh = Kernel(k.dump, cache_dir=False)
    assert len(fresh.symbols) > 10000
    assert fresh.warnings == []


@pytest.mark.fixtures
def test_dump_kallsyms_match_system_map(dump_kernel):
    """Every symbol decoded from the dump is in the real System.map, moved by
    the KASLR offset (per-CPU symbols are not moved)."""
    fx, k = dump_kernel
    smap = load_system_map(glob.glob(os.path.join(os.path.dirname(fx.vmlinux),
                                                  "System.map-*"))[0])
    off = k.kaslr_offset
    assert off == int(k.vmcoreinfo["KERNELOFFSET"], 16)
    expected = {}
    for s in smap:
        expected.setdefault(s.name, set()).add(s.address)
    table = k.symbols
    assert len(table) > 50000
    bad = []
    for name, addr, kind in zip(table.names, table.addresses, table.kinds):
        if name.startswith(".L"):
            continue   # 5.10's kallsyms keeps .LC* labels that scripts/mksysmap drops
        want = expected.get(name, set())
        if addr - off not in want and addr not in want:
            bad.append((name, hex(addr), kind))
    assert bad == []


@pytest.mark.fixtures
def test_module_symbolize(dump_kernel):
    """/proc/modules gives each module's base address; it symbolizes to that module."""
    fx, k = dump_kernel
    lines = fx.truth["files"]["/proc/modules"].splitlines()
    assert lines
    for line in lines:
        fields = line.split()
        name, base = fields[0], int(fields[-1], 16)
        if base == 0:
            continue           # kptr_restrict hid it
        hit = k.symbolize(base + 1)
        assert hit is not None and hit[0].module == name, (name, hit)
    sched = k.symbol("schedule")
    assert k.symbolize(sched.address + 2) == (sched, 2)


@pytest.mark.fixtures
def test_system_map_fallback_without_kallsyms_keys(dump_kernel):
    """A kernel older than 6.0 has no SYMBOL(kallsyms_*) keys: System.map,
    moved by KERNELOFFSET, must give the same addresses as the dump's kallsyms."""
    from kql.dump import open_dump
    from kql.kernel import Kernel
    fx, k = dump_kernel
    smap_path = glob.glob(os.path.join(os.path.dirname(fx.vmlinux), "System.map-*"))[0]
    dump = open_dump(fx.dump())
    for key in [key for key in dump.vmcoreinfo if key.startswith("SYMBOL(kallsyms_")]:
        del dump.vmcoreinfo[key]
    old = Kernel(dump, system_map=smap_path)
    assert old.symbols.source == "System.map"
    for name in ("init_task", "schedule", "init_uts_ns", "__start_BTF", "runqueues"):
        assert old.symbols.address(name) == k.symbols.address(name)
    assert old.var("init_uts_ns").name.release.string_().decode() == fx.release
    old.close()
    dump2 = open_dump(fx.dump())
    for key in [key for key in dump2.vmcoreinfo if key.startswith("SYMBOL(kallsyms_")]:
        del dump2.vmcoreinfo[key]
    del dump2.vmcoreinfo["SYMBOL(_stext)"]     # nothing to search kallsyms from
    from kql.errors import DumpError
    with pytest.raises(DumpError) as e:
        Kernel(dump2, cache_dir=False).symbols
    assert str(e.value) == (
        "no kernel symbols: VMCOREINFO has no kallsyms symbols (Linux < 6.0) and the dump's "
        "own were not found (VMCOREINFO has neither kallsyms symbols nor SYMBOL(_stext) to "
        "search from); give --vmlinux or --system-map")
    dump2.close()


@pytest.mark.fixtures
@pytest.mark.parametrize("of", VMLINUX_OF)
def test_vmlinux_symtab_matches_system_map(of):
    from fixtures import fixture
    vmlinux = fixture(of).vmlinux
    """The ELF .symtab loader (fallback when a dump has no kallsyms keys) agrees
    with System.map on addresses and nm letters of globals."""
    smap = load_system_map(glob.glob(os.path.join(os.path.dirname(vmlinux), "System.map-*"))[0])
    image = VmlinuxFile(vmlinux)
    table = image.symbols()
    image.close()
    checked = 0
    for s in smap:
        if s.kind not in "TDRB":
            continue
        got = table.lookup_all(s.name)
        assert any(g.address == s.address for g in got), s
        assert any(g.kind == s.kind for g in got if g.address == s.address), s
        checked += 1
    assert checked > 10000
    # ELF sizes are real object sizes
    assert table.lookup("init_task").size == smap.lookup("init_task").size


@pytest.mark.fixtures
def test_vmlinux_build_id_is_the_gnu_note():
    """The 6.1 vmlinux's .notes starts with Xen notes: only GNU's counts."""
    from fixtures import fixture
    from kql.dump import open_dump
    from kql.symbols import VmlinuxFile
    fx = fixture("6.1-live")
    with open_dump(fx.dump()) as d:
        want = d.vmcoreinfo["BUILD-ID"]
    bid = VmlinuxFile(fx.vmlinux).build_id()
    assert (bid.hex() if isinstance(bid, bytes) else bid) == want
