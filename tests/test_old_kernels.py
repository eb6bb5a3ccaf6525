"""Kernels before 6.0 (Debian 11's 5.10), read without any vmlinux.

VMCOREINFO of these kernels has no kallsyms keys: kql finds the tables in the
dump's memory (kql/kallsyms_find.py).  The layouts that differ from 6.1 are
each detected by a member test in a helper; here each detection is checked to
take the old path on the 5.10 fixtures.  That the results then match the
guest's /proc is checked by the fixture-driven tests, which run over every
recipe, the 5.10 ones included (test_tables, test_helpers_<module>, test_stacks,
test_files_vm, test_net_mem_sched, test_queries ...).
"""

import pytest

from fixtures import FIXTURES, fixture
from kql.arch.orc import LAYOUT_6_1, get_unwinder
from kql.errors import FaultError
from kql.kallsyms import KallsymsError
from kql.kallsyms_find import find_kallsyms
from kql.kernel import DiskCache, Kernel

import build

OLD = [n for n in FIXTURES if build.RECIPES[n]["kernel"] == "5.10"]


@pytest.fixture(scope="module", params=OLD)
def old(request):
    fx = fixture(request.param)
    k = Kernel(fx.dump(), cache_dir=False)
    yield fx, k
    k.close()


def test_there_are_old_fixtures():
    assert OLD == ["5.10-live", "5.10-panic"]


@pytest.mark.fixtures
def test_kallsyms_found_without_vmcoreinfo_keys(old):
    fx, k = old
    assert not any(key.startswith("SYMBOL(kallsyms_") for key in k.vmcoreinfo)
    assert k.symbols.source == "kallsyms" and len(k.symbols) > 50000
    # VMCOREINFO's own symbols are reproduced (load_kallsyms checks _stext)
    for name in ("init_uts_ns", "node_data", "prb", "vmap_area_list"):
        assert k.symbols.address(name) == int(k.vmcoreinfo[f"SYMBOL({name})"], 16), name
    # ... and the BTF between __start_BTF and __stop_BTF loads and names the release
    assert k.btf
    assert k.var("init_uts_ns").name.release.string_().decode() == fx.release


@pytest.mark.fixtures
def test_old_layouts_are_detected(old):
    """Each 5.10 layout takes the pre-change path of its helper."""
    fx, k = old
    T = k.types.find_type
    # task_struct.state, renamed __state in 5.14 (kql/helpers/sched.py)
    assert T("struct task_struct").has_member("state")
    assert not T("struct task_struct").has_member("__state")
    # VMAs on a list and an rbtree before 6.1's maple tree (kql/helpers/mm.py)
    mm = T("struct mm_struct")
    assert mm.has_member("mmap") and mm.has_member("mm_rb") and not mm.has_member("mm_mt")
    # the lockless printk ring buffer (5.10 is its first release), its
    # printk_info records already in desc_ring.infos (kql/helpers/printk.py)
    assert T("struct prb_desc_ring").has_member("infos")
    assert "SYMBOL(prb)" in k.vmcoreinfo
    # TCP listeners also in listening_hash before 5.19 (kql/helpers/net.py)
    assert T("struct inet_hashinfo").has_member("listening_hash")
    # module core_layout before 6.4's mem[] (kql/helpers/module.py)
    assert T("struct module").has_member("core_layout") and not T("struct module").has_member("mem")
    # mounts on a list before 6.8 (kql/helpers/fs.py)
    assert T("struct mnt_namespace").has_member("list")
    # ORC flags without the 6.3 signal bit (kql/arch/orc.py)
    assert get_unwinder(k).tables.layout == LAYOUT_6_1
    # zone stat deltas in zone->pageset before 5.14 (kql/helpers/mmstat.py)
    with pytest.raises(LookupError):
        T("struct per_cpu_zonestat")
    assert T("struct per_cpu_pageset").has_member("vm_stat_diff")


@pytest.mark.fixtures
def test_kallsyms_place_is_cached_by_build_id(tmp_path, monkeypatch):
    fx = fixture(OLD[0])
    k = Kernel(fx.dump(), cache_dir=tmp_path)
    want = k.symbols.address("schedule")
    bid = k.vmcoreinfo["BUILD-ID"].strip().lower()
    k.close()
    assert (tmp_path / f"kallsyms-place-{bid}.pickle").exists()

    import kql.kallsyms_find as kf

    def no_search(*a, **kw):
        raise AssertionError("searched although the place was cached")
    monkeypatch.setattr(kf, "find_kallsyms", no_search)
    k = Kernel(fx.dump(), cache_dir=tmp_path)
    assert k.symbols.address("schedule") == want
    k.close()
    monkeypatch.undo()

    # a cached place that does not decode is searched again
    DiskCache(tmp_path, bid).save("kallsyms-place", {"format": kf.CACHE_FORMAT,
                                                     "pointer_size": 8},
                                  {"at": {"names": 0, "num_syms": 0, "markers": 0,
                                          "token_table": 4096, "token_index": 8192}})
    (tmp_path / f"kallsyms-{bid}.pickle").unlink()
    k = Kernel(fx.dump(), cache_dir=tmp_path)
    assert k.symbols.address("schedule") == want
    k.close()


@pytest.mark.fixtures
def test_search_finds_what_vmcoreinfo_says():
    """On a kernel whose VMCOREINFO states the places (6.12: offsets after the
    token index since 6.4), the search finds the same ones."""
    fx = fixture("6.12-live")
    k = Kernel(fx.dump(), cache_dir=False)
    info = k.vmcoreinfo
    found = find_kallsyms(k.read, int(info["SYMBOL(_stext)"], 16),
                          int(info["SYMBOL(init_uts_ns)"], 16))
    stated = {key: info[key].lower() for key in info if key.startswith("SYMBOL(kallsyms_")}
    assert len(stated) == 6
    assert {key: found[key] for key in stated} == stated
    assert int(found["SYMBOL(kallsyms_markers)"], 16) < int(stated["SYMBOL(kallsyms_token_table)"], 16)
    k.close()


@pytest.mark.fixtures
def test_search_error_names_the_range(old):
    fx, k = old
    start = int(k.vmcoreinfo["SYMBOL(init_uts_ns)"], 16)
    with pytest.raises(KallsymsError) as e:
        find_kallsyms(k.read, start, start + (64 << 10))
    assert str(e.value) == (f"no kallsyms tables found in kernel memory {start:#x}-"
                            f"{start + (64 << 10):#x} (0 candidate token tables)")


def test_search_skips_unreadable_memory():
    """Unmapped pages inside the searched range are skipped, not fatal."""
    data = bytearray(3 * 4096)
    needle_at = 2 * 4096 + 100

    def read(addr, size):
        if addr < 4096 <= addr + size - 1 or 4096 <= addr < 8192:
            raise FaultError(addr, "unmapped")
        return bytes(data[addr:addr + size])
    from kql.kallsyms_find import NEEDLE, scan
    data[needle_at:needle_at + len(NEEDLE)] = NEEDLE
    assert list(scan(read, 0, len(data), NEEDLE)) == [needle_at]
