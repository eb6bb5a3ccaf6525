"""BTF parsing on the .BTF section of real Debian vmlinux images.

Ground truth: the ELF symbol table of the same vmlinux (st_size of objects
whose type BTF knows), and — when KQL_SLOW=1 and gdb is installed — gdb's
reading of the DWARF for sizes and member offsets.
"""

import os
import shutil
import struct
import subprocess

import pytest

from kql.btf import Btf, BtfError
from kql.symbols import VmlinuxFile

from fixtures import fixture

# the debug vmlinux of each kernel series the fixtures boot
IMAGES = ["6.1-live", "6.12-live"]


@pytest.fixture(scope="module", params=IMAGES)
def image(request):
    v = VmlinuxFile(fixture(request.param).vmlinux)
    btf = Btf(v.section_data(".BTF"))
    yield v, btf, v.symbols()
    v.close()


@pytest.mark.fixtures
def test_percpu_var_sizes_match_symtab(image):
    _, btf, syms = image
    n = 0
    for name, tid in btf.iter_named("var"):
        sym = syms.get(name)
        if sym is None:
            continue
        n += 1
        assert btf.type(tid).size == sym.size, name
    assert n > 100


@pytest.mark.parametrize("sym,type_name", [
    ("init_task", "struct task_struct"), ("init_uts_ns", "struct uts_namespace"),
])
@pytest.mark.fixtures
def test_global_sizes_match_symtab(image, sym, type_name):
    _, btf, syms = image
    assert btf.find_type(type_name).size == syms.lookup(sym).size


@pytest.mark.fixtures
def test_types_and_members(image):
    _, btf, _ = image
    task = btf.find_type("struct task_struct")
    comm_member, _ = task.member("comm")
    assert comm_member.type.type_name() == "char [16]"
    assert btf.find_type("struct task_struct *").target is task
    assert btf.find_type("long unsigned int") is btf.find_type("unsigned long")
    assert btf.find_type("u64").strip_typedefs().type_name() == "unsigned long long"
    # struct list_head is the classic two pointers
    lh = btf.find_type("struct list_head")
    assert (lh.size, lh.offsetof("next"), lh.offsetof("prev")) == (16, 0, 8)
    assert lh.member("next")[0].type.target is lh
    # rq->curr exists whether or not it sits in an anonymous union (6.12: donor/curr)
    assert btf.find_type("struct rq").member("curr")[0].type.type_name() == \
        "struct task_struct *"
    enum, value = btf.find_enumerator("PIDTYPE_TGID")
    assert enum.type_name() == "enum pid_type" and value == 1
    assert btf.find_var_type("runqueues").type_name() == "struct rq"


@pytest.mark.fixtures
def test_bitfields(image):
    _, btf, _ = image
    # task_struct has 1-bit fields next to each other (sched_reset_on_fork ...)
    task = btf.find_type("struct task_struct")
    m, off = task.member("sched_reset_on_fork")
    assert m.bit_size == 1
    m2, off2 = task.member("sched_contributes_to_load")
    assert m2.bit_size == 1 and off2 == off + 1


def test_bad_magic():
    with pytest.raises(BtfError, match="magic"):
        Btf(struct.pack("<HBBIIIII", 0x1234, 1, 0, 24, 0, 0, 0, 0))
    with pytest.raises(BtfError):
        Btf(b"\x9f\xeb")


@pytest.mark.skipif(not os.environ.get("KQL_SLOW") or not shutil.which("gdb"),
                    reason="KQL_SLOW=1 and gdb needed (reads the DWARF, ~1 min)")
@pytest.mark.fixtures
def test_offsets_match_gdb_dwarf(image):
    v, btf, _ = image
    checks = []
    for st, members in {
        "task_struct": ["comm", "tasks", "pid", "tgid", "thread_node", "signal", "mm",
                        "exit_state", "real_parent", "stack", "thread", "pid_links"],
        "rq": ["curr", "idle", "cpu"], "pid": ["tasks", "numbers", "level"],
        "signal_struct": ["thread_head"], "xa_node": ["shift", "slots"],
        "module": ["list", "name", "state"], "maple_node": ["slot"],
    }.items():
        t = btf.find_type("struct " + st)
        checks.append((f"p/d sizeof(struct {st})", t.size))
        for m in members:
            checks.append((f"p/d (unsigned long)&((struct {st} *)0)->{m}", t.offsetof(m)))
    args = ["gdb", "-batch", "-nx", v.path]
    for cmd, _ in checks:
        args += ["-ex", cmd]
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    got = [int(line.split("=")[1]) for line in out.splitlines() if line.startswith("$")]
    assert got == [want for _, want in checks]


@pytest.mark.fixtures
def test_module_split_btf_matches_ko():
    """A module's BTF read from the dump is the .BTF section of its .ko (split
    BTF on top of vmlinux's); types only a module defines are found."""
    from elftools.elf.elffile import ELFFile

    from fixtures import fixture
    from kql.kernel import open_kernel
    fx = fixture("6.1-live")
    k = open_kernel(fx.dump())
    btfs = k.module_btfs()
    assert set(btfs) == set(fx.truth["modules"])
    import io

    import build
    ko = build.module_bytes(build.kernel_dir_of(k.release), "loop")  # .ko, .ko.xz or .ko.zst
    sec = ELFFile(io.BytesIO(ko)).get_section_by_name(".BTF").data()
    assert btfs["loop"].data == sec
    ko_btf = Btf(sec, base=k.btf, name="loop.ko")
    t = k.find_type("struct loop_device")
    assert t.size == ko_btf.find_type("struct loop_device").size
    assert t.member("lo_disk")[0].type.type_name() == "struct gendisk *"
    assert k.find_type("struct task_struct") is k.btf.find_type("struct task_struct")
    k.close()
