"""The on-disk cache of what is parsed from a kernel build (kallsyms names, the
BTF index): a hit gives the same answers without decoding, a corrupt or
foreign file is ignored (decoded again, never an error), and another kernel
never takes a kernel's entries."""

import os
import pickle

import pytest

from kql import btf as btf_mod
from kql import kallsyms as kallsyms_mod
from kql.kallsyms import load_kallsyms
from kql.kernel import DiskCache, open_kernel
from test_kallsyms import _synthetic

BASE = 0xFFFFFFFF81000000
SYMS = [("T", "_stext", BASE), ("t", "alpha", BASE + 0x10), ("t", "dup", BASE + 0x20),
        ("T", "dup", BASE + 0x30), ("D", "last", BASE + 0x100)]


def _no_decode(monkeypatch):
    def fail(*a, **k):
        raise AssertionError("decoded although the cache should have answered")
    monkeypatch.setattr(kallsyms_mod, "_decode_fast", fail)


def _table(t):
    return [(s.name, s.address, s.kind) for s in t]


# -- kallsyms -------------------------------------------------------------------------

def test_kallsyms_cache_hit(tmp_path, monkeypatch):
    cache = DiskCache(tmp_path, "ab12")
    read, info = _synthetic(SYMS)
    first = load_kallsyms(read, info, cache=cache)
    assert cache.path("kallsyms").exists()
    _no_decode(monkeypatch)
    second = load_kallsyms(read, info, cache=cache)
    assert _table(second) == _table(first) == [(n, a, k) for k, n, a in SYMS]
    assert second.lookup("dup").kind == "T"          # global preferred, as decoded
    assert [s.address for s in second.lookup_all("dup")] == [BASE + 0x20, BASE + 0x30]


@pytest.mark.parametrize("content", [
    b"", b"not a pickle", b"\x80\x05garbage",
    "wrong types", "truncated",
])
def test_kallsyms_corrupt_cache_decodes_again(tmp_path, content):
    cache = DiskCache(tmp_path, "ab12")
    read, info = _synthetic(SYMS)
    want = _table(load_kallsyms(read, info, cache=cache))
    path = cache.path("kallsyms")
    good = path.read_bytes()
    if content == "truncated":
        content = good[:len(good) // 2]
    elif content == "wrong types":
        data = pickle.loads(good)
        data["names"] = "not a list"
        data["name_order"] = [0, 1]
        content = pickle.dumps(data)
    path.write_bytes(content)
    assert _table(load_kallsyms(read, info, cache=cache)) == want
    assert path.read_bytes() != content                # rewritten with good data


def test_kallsyms_cache_names_checked_against_vmcoreinfo(tmp_path):
    """A cached name list that does not reproduce SYMBOL(_stext) is not used."""
    cache = DiskCache(tmp_path, "ab12")
    read, info = _synthetic(SYMS)
    load_kallsyms(read, info, cache=cache)
    path = cache.path("kallsyms")
    data = pickle.loads(path.read_bytes())
    data["names"] = ["x" + n for n in data["names"]]     # _stext no longer found
    path.write_bytes(pickle.dumps(data))
    assert _table(load_kallsyms(read, info, cache=cache)) == [(n, a, k) for k, n, a in SYMS]


def test_kallsyms_other_kernel_same_build_id(tmp_path):
    """Different tables under one build-id (CRC differs): decoded, not reused."""
    cache = DiskCache(tmp_path, "ab12")
    read, info = _synthetic(SYMS)
    load_kallsyms(read, info, cache=cache)
    other = [("T", "_stext", BASE), ("t", "beta", BASE + 0x10), ("t", "gamma", BASE + 0x20),
             ("T", "delta", BASE + 0x30), ("D", "omega", BASE + 0x100)]
    read2, info2 = _synthetic(other)
    assert _table(load_kallsyms(read2, info2, cache=cache)) == [(n, a, k) for k, n, a in other]


def test_unwritable_cache_dir(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    cache = DiskCache(blocker / "kql", "ab12")     # a file where the directory should be
    read, info = _synthetic(SYMS)
    assert _table(load_kallsyms(read, info, cache=cache)) == [(n, a, k) for k, n, a in SYMS]
    assert cache.load("kallsyms", {"format": 1}) is None


# -- BTF --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def btf_blob():
    from fixtures import fixture
    from kql.symbols import VmlinuxFile
    v = VmlinuxFile(fixture("6.1-live").vmlinux)
    data = v.section_data(".BTF")
    v.close()
    return data


def _btf_facts(b):
    t = b.find_type("struct task_struct")
    return (b.count, t.size, t.offsetof("comm"), b.find_type("pid_t").size,
            sorted(b.type_ids("struct", "list_head")))


@pytest.mark.fixtures
def test_btf_cache_hit(tmp_path, monkeypatch, btf_blob):
    cache = DiskCache(tmp_path, "cd34")
    want = _btf_facts(btf_mod.Btf(btf_blob, cache=cache))
    assert cache.path("btf").exists()
    monkeypatch.setattr(btf_mod.Btf, "_index", lambda self: pytest.fail("indexed again"))
    assert _btf_facts(btf_mod.Btf(btf_blob, cache=cache)) == want


@pytest.mark.parametrize("content", [b"", b"junk", "wrong types", "truncated"])
@pytest.mark.fixtures
def test_btf_corrupt_cache_indexes_again(tmp_path, btf_blob, content):
    cache = DiskCache(tmp_path, "cd34")
    want = _btf_facts(btf_mod.Btf(btf_blob, cache=cache))
    path = cache.path("btf")
    good = path.read_bytes()
    if content == "truncated":
        content = good[:-100]
    elif content == "wrong types":
        data = pickle.loads(good)
        data["offsets"] = list(data["offsets"])
        content = pickle.dumps(data)
    path.write_bytes(content)
    assert _btf_facts(btf_mod.Btf(btf_blob, cache=cache)) == want


@pytest.mark.fixtures
def test_btf_other_blob_same_build_id(tmp_path, btf_blob):
    """Another BTF blob under the same build-id is indexed, not given the cached index."""
    from fixtures import fixture
    from kql.symbols import VmlinuxFile
    others = []
    for path in [fixture("6.12-live").vmlinux]:
        v = VmlinuxFile(path)
        data = v.section_data(".BTF")
        v.close()
        if data != btf_blob:
            others.append(data)
            break
    assert others, "the fixtures hold two kernels (6.1 and 6.12)"
    cache = DiskCache(tmp_path, "cd34")
    btf_mod.Btf(btf_blob, cache=cache)
    assert _btf_facts(btf_mod.Btf(others[0], cache=cache)) == _btf_facts(btf_mod.Btf(others[0]))


# -- real dumps through Kernel ---------------------------------------------------------

def _kernel_facts(k):
    syms = k.symbols
    return (len(syms), syms.address("init_task"), syms.address("schedule"),
            k.find_type("struct task_struct").size, k.release)


@pytest.mark.fixtures
def test_kernels_use_their_own_build_ids(tmp_path, monkeypatch):
    """Two kernels sharing a cache directory: each gets its own files, warm
    opens agree with cold ones, and with the cache disabled nothing is written."""
    from fixtures import fixture
    fxs = [fixture(name) for name in ("6.1-live", "6.12-live")]  # built by tests/setup.sh
    cold = []
    for fx in fxs:
        with open_kernel(fx.dump(), cache_dir=tmp_path) as k:
            cold.append((k.vmcoreinfo["BUILD-ID"], _kernel_facts(k)))
    assert cold[0][0] != cold[1][0]
    files = sorted(os.listdir(tmp_path))
    assert files == sorted(f"{what}-{bid}.pickle" for bid, _ in cold for what in ("btf", "kallsyms"))
    _no_decode(monkeypatch)
    monkeypatch.setattr(btf_mod.Btf, "_index", lambda self: pytest.fail("indexed again"))
    for fx, (bid, facts) in zip(fxs, cold):
        with open_kernel(fx.dump(), cache_dir=tmp_path) as k:
            assert _kernel_facts(k) == facts
    # a cache file moved to the other kernel's name is not taken
    a, b = (cold[0][0], cold[1][0])
    for what in ("btf", "kallsyms"):
        os.replace(tmp_path / f"{what}-{a}.pickle", tmp_path / f"{what}-{b}.pickle")
    monkeypatch.undo()
    with open_kernel(fxs[1].dump(), cache_dir=tmp_path) as k:
        assert _kernel_facts(k) == cold[1][1]
    for f in tmp_path.iterdir():
        f.unlink()
    with open_kernel(fxs[0].dump(), cache_dir=False) as k:
        assert k.disk_cache is None
        assert _kernel_facts(k) == cold[0][1]
    assert list(tmp_path.iterdir()) == []
