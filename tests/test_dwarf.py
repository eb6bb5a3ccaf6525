"""kql.dwarf on the real Debian debug vmlinux files of the fixtures.

Ground truth is the same kernel's BTF (the vmlinux ``.BTF`` section, read by
kql.btf): sizes, member offsets, bitfields and type spellings of the structs
kql's tables read, followed through embedded structs and unions.  The build-id
is checked against the VMCOREINFO ``BUILD-ID`` of a dump of that kernel.
"""

import os
import shutil
import subprocess
from collections import namedtuple

import pytest

from fixtures import fixture
from kql.btf import Btf
from kql.dump import open_dump
from kql.dwarf import DwarfTypes
from kql.dwarf.dies import DieReader
from kql.errors import DumpError
from kql.kernel import Kernel
from kql.symbols import VmlinuxFile
from kql.types import TypeNotFoundError

KERNELS = {"6.1": "6.1-live", "6.12": "6.12-live"}

STRUCTS = ["struct task_struct", "struct mm_struct", "struct file", "struct dentry",
           "struct inode", "struct module", "struct sock", "struct net_device"]


def _vmlinux(kernel: str) -> str:
    return fixture(KERNELS[kernel]).vmlinux


@pytest.fixture(scope="module", params=sorted(KERNELS))
def kernel(request, tmp_path_factory):
    """(DwarfTypes with a cold cache, Btf of the same vmlinux, cache dir)."""
    path = _vmlinux(request.param)
    cache = tmp_path_factory.mktemp(f"dwarf-{request.param}")
    v = VmlinuxFile(path)
    btf = Btf(v.section_data(".BTF"))
    v.close()
    dwarf = DwarfTypes(path, cache_dir=cache)
    assert not dwarf.cache_hit
    yield dwarf, btf, cache
    dwarf.close()


def _size(t):
    s = t.strip_typedefs()
    if s.kind == "array" and not s.length:
        return 0          # BTF cannot tell "[]" from "[0]"
    return t.size


def _spelling(t) -> str:
    # BTF writes a flexible array "[]" as "[0]".
    return t.type_name().replace("[]", "[0]")


def _layout(t, base=0, depth=0, out=None):
    """Every member reachable without a dereference:
    (name, bit offset, bit size, spelling, size)."""
    out = [] if out is None else out
    for m in t.strip_typedefs().members:
        off = base + m.bit_offset
        mt = m.type
        st = mt.strip_typedefs()
        size = _size(mt) if st.kind not in ("function", "void") else None
        out.append((m.name, off, m.bit_size, _spelling(mt), size))
        if st.kind in ("struct", "union") and st.complete and depth < 4:
            _layout(st, off, depth + 1, out)
    return out


@pytest.mark.parametrize("name", STRUCTS)
@pytest.mark.fixtures
def test_layout_matches_btf(kernel, name):
    dwarf, btf, _ = kernel
    d, b = dwarf.find_type(name), btf.find_type(name)
    assert d.size == b.size
    assert d.complete
    dl, bl = _layout(d), _layout(b)
    assert len(dl) > 10
    assert dl == bl


@pytest.mark.fixtures
def test_pointer_targets_resolve_like_btf(kernel):
    """Pointers to structs that a CU only declares resolve by name."""
    dwarf, btf, _ = kernel
    task = dwarf.find_type("struct task_struct")
    for member in ("mm", "files", "fs", "nsproxy", "signal", "cred", "real_parent"):
        # (not .unqualified(): in kql.types it strips the qualifiers in place)
        dt = task.member(member)[0].type.strip_typedefs().target
        bt = btf.find_type("struct task_struct").member(member)[0].type.strip_typedefs()
        bt = bt.target
        assert dt.qualifiers == bt.qualifiers
        assert (dt.kind, dt.name, dt.size, dt.complete) == (bt.kind, bt.name, bt.size, True)
        assert [m.name for m in dt.members] == [m.name for m in bt.members]


@pytest.mark.fixtures
def test_anonymous_members_and_paths(kernel):
    dwarf, btf, _ = kernel
    for type_name, path in [("struct mm_struct", "mmap_base"), ("struct mm_struct", "pgd"),
                            ("struct task_struct", "__state"),
                            ("struct task_struct", "se.vruntime"),
                            ("struct sock", "__sk_common.skc_family"),
                            ("struct file", "f_path.dentry")]:
        assert (dwarf.find_type(type_name).member(path)[1]
                == btf.find_type(type_name).member(path)[1]), path


@pytest.mark.fixtures
def test_function_pointer_enum_typedef(kernel):
    dwarf, btf, _ = kernel
    fops_d = dwarf.find_type("struct file_operations")
    fops_b = btf.find_type("struct file_operations")
    for m in ("read", "write", "open", "mmap"):
        assert fops_d.member(m)[0].type.type_name() == fops_b.member(m)[0].type.type_name()
        assert fops_d.member(m)[0].type.target.kind == "function"
    pid_type = dwarf.find_type("enum pid_type")
    assert pid_type.enumerators == btf.find_type("enum pid_type").enumerators
    assert pid_type.enum_value("PIDTYPE_PID") == 0
    # Signed enums: negative values (sdata) and 225 written as data1 0xe1.
    for name in ("enum nf_ip_hook_priorities", "enum perf_event_state"):
        d, b = dwarf.find_type(name), btf.find_type(name)
        assert (d.signed, d.size, d.enumerators) == (True, b.size, b.enumerators)
    assert dwarf.find_type("enum nf_ip_hook_priorities").enum_value(
        "NF_IP_PRI_SELINUX_LAST") == 225
    for name in ("pid_t", "u64", "atomic_t", "bool", "size_t"):
        d, b = dwarf.find_type(name), btf.find_type(name)
        assert d.kind == b.kind == "typedef"
        assert d.strip_typedefs().type_name() == b.strip_typedefs().type_name()
        assert d.size == b.size
    assert dwarf.find_type("unsigned long").type_name() == "unsigned long"
    assert dwarf.find_type("long unsigned int").size == 8
    assert dwarf.find_type("char").size == 1
    assert dwarf.find_type("_Bool").kind == "bool"


@pytest.mark.fixtures
def test_arrays_and_function_local_types(kernel):
    dwarf, btf, _ = kernel
    # DW_AT_upper_bound 255 as data1: 256 elements, not "-1 + 1".
    upper = dwarf.find_type("union upper_chunk")
    assert upper.member("data")[0].type.type_name() == "union lower_chunk *[256]"
    assert upper.size == btf.find_type("union upper_chunk").size == 2048
    # "[0]" (DW_AT_count 0) and "[]" (no bound) stay apart; BTF says [0] for both.
    skb = dwarf.find_type("struct sk_buff")
    assert skb.member("__cloned_offset")[0].type.length == 0
    assert dwarf.find_type("struct mm_struct").member("cpu_bitmap")[0].type.length is None
    # Multi-dimensional arrays keep their shape (kql.btf flattens them).
    cntr = dwarf.find_type("struct p4_event_bind").member("cntr")[0].type
    assert (cntr.length, cntr.target.length, cntr.size) == (2, 3, 6)
    # A union declared inside a function body: no CU has it at file scope.
    uu = dwarf.find_type("union uu")
    assert [(m.name, m.type.type_name()) for m in uu.members] == [
        (m.name, m.type.type_name()) for m in btf.find_type("union uu").members]


@pytest.mark.fixtures
def test_type_names(kernel):
    dwarf, _, _ = kernel
    f = dwarf.find_type("struct file")
    assert dwarf.find_type("struct file *").target is f
    assert dwarf.find_type("struct file *").type_name() == "struct file *"
    assert dwarf.find_type("const char *").type_name() == "const char *"
    assert dwarf.find_type("char [16]").size == 16
    assert dwarf.find_type("struct task_struct").member("comm")[0].type.type_name() == "char [16]"
    with pytest.raises(TypeNotFoundError):
        dwarf.find_type("struct kql_no_such_struct")
    with pytest.raises(TypeNotFoundError):
        dwarf.find_type("kql_no_such_typedef_t")


@pytest.mark.fixtures
def test_warm_cache_reads_no_dwarf(kernel):
    """A warm open answers from the cache alone (speed is measured in
    benchmarks/, not asserted here)."""
    dwarf, _, cache = kernel
    for name in STRUCTS:
        _layout(dwarf.find_type(name))
    dwarf.flush()
    assert not [p for p in os.listdir(cache) if p.endswith(".tmp")]
    cold = {name: _layout(dwarf.find_type(name)) for name in STRUCTS}

    warm = DwarfTypes(dwarf.path, cache_dir=cache)
    try:
        got = {name: _layout(warm.find_type(name)) for name in STRUCTS}
        assert warm.cache_hit
        assert warm.stats["dies_parsed"] == 0 and warm.stats["searches"] == 0
        assert not warm.dwarf_opened    # the DWARF sections were never read
    finally:
        warm.close()
    assert got == cold


@pytest.mark.fixtures
def test_two_writers_share_the_cache(kernel, tmp_path):
    dwarf, _, _ = kernel
    a = DwarfTypes(dwarf.path, cache_dir=tmp_path)
    b = DwarfTypes(dwarf.path, cache_dir=tmp_path)
    try:
        a.find_type("struct file").members
        b.find_type("struct dentry").members
        a.flush()
        b.flush()
    finally:
        a.close()
        b.close()
    c = DwarfTypes(dwarf.path, cache_dir=tmp_path)
    try:
        assert len(c.find_type("struct file").members) > 10
        assert len(c.find_type("struct dentry").members) > 10
        assert c.stats["searches"] == 0 and not c.dwarf_opened
    finally:
        c.close()


@pytest.mark.fixtures
def test_build_id_matches_the_dump(kernel):
    dwarf, _, _ = kernel
    kname = next(k for k in KERNELS if _vmlinux(k) == dwarf.path)
    dump = open_dump(fixture(KERNELS[kname]).dump())
    try:
        assert dwarf.build_id() == dump.vmcoreinfo["BUILD-ID"]
    finally:
        dump.close()
    dwarf.check_build_id(dwarf.build_id().upper())


@pytest.mark.fixtures
def test_build_id_mismatch_is_one_clear_line(kernel):
    dwarf, _, _ = kernel
    with pytest.raises(DumpError) as e:
        dwarf.check_build_id("00" * 20)
    assert str(e.value) == (f"vmlinux build-id {dwarf.build_id()} does not match the "
                            f"dump's build-id {'00' * 20} ({dwarf.path})")


@pytest.mark.fixtures
def test_kernel_refuses_another_kernels_vmlinux():
    dump = open_dump(fixture(KERNELS["6.12"]).dump())
    other = _vmlinux("6.1")
    with pytest.raises(DumpError) as e:   # refused when the Kernel is opened
        Kernel(dump, vmlinux=other, dwarf_cache_dir=False)
    bid = dump.vmcoreinfo["BUILD-ID"]
    own = open_dump(fixture(KERNELS["6.1"]).dump())      # the 6.1 kernel says its own
    vbid = own.vmcoreinfo["BUILD-ID"]
    own.close()
    dump.close()
    assert str(e.value) == (f"vmlinux build-id {vbid} does not match the dump's "
                            f"build-id {bid} ({other})")


@pytest.mark.fixtures
def test_lazy_parts_after_close_are_a_dump_error(kernel):
    dwarf, _, _ = kernel
    d = DwarfTypes(dwarf.path, cache_dir=False)
    task = d.find_type("struct task_struct")
    d.close()
    d.close()
    with pytest.raises(DumpError, match="was closed"):
        task.members


def test_not_elf_and_no_dwarf(tmp_path):
    junk = tmp_path / "vmlinux"
    junk.write_bytes(b"this is not a kernel\n" * 10)
    with pytest.raises(DumpError, match=r"is not an ELF file"):
        DwarfTypes(junk, cache_dir=False)
    with pytest.raises(DumpError, match=r"cannot open vmlinux .*missing"):
        DwarfTypes(tmp_path / "missing", cache_dir=False)
    # A stripped ELF: the kernel's System.map is text, so use a system binary.
    true = "/bin/true"
    from elftools.elf.elffile import ELFFile
    with open(true, "rb") as f:
        if ELFFile(f).get_section_by_name(".debug_info") is not None:
            pytest.skip("/bin/true has debug info here")
    with pytest.raises(DumpError, match=r"has no DWARF debug info"):
        DwarfTypes(true, cache_dir=False)


def test_relocatable_object_is_refused(tmp_path):
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("no gcc to build an object file")
    src = tmp_path / "m.c"
    src.write_text("struct s { int a; } v;\n")
    obj = tmp_path / "m.o"
    subprocess.run([gcc, "-g", "-c", str(src), "-o", str(obj)], check=True)
    with pytest.raises(DumpError, match=r"is a relocatable object \(a module\?\), not a vmlinux"):
        DwarfTypes(obj, cache_dir=False)


# -- DWARF 2/3 bitfields (DW_AT_bit_offset), which GCC 12 no longer writes --------

_Attr = namedtuple("_Attr", "value form")


class _FakeDie:
    def __init__(self, **attrs):
        self.attributes = {f"DW_AT_{k}": _Attr(v, "DW_FORM_data1") for k, v in attrs.items()}


def test_dwarf2_bit_offset_is_counted_from_the_msb():
    src = object.__new__(DieReader)
    # struct { unsigned int a:3, b:5; } on little-endian: a is bits 0-2, b bits 3-7.
    a = _FakeDie(data_member_location=0, byte_size=4, bit_offset=29, bit_size=3)
    b = _FakeDie(data_member_location=0, byte_size=4, bit_offset=24, bit_size=5)
    assert src._member_bit_offset(a, None, 3) == 0
    assert src._member_bit_offset(b, None, 5) == 3
    # The same layout in the DWARF 4+ form.
    c = _FakeDie(data_bit_offset=35, bit_size=2)
    assert src._member_bit_offset(c, None, 2) == 35
