"""32-bit x86 (PAE) dumps: Debian 12's 686-pae kernel in QEMU (recipes
i386-6.1-live, QEMU's ELF core, and i386-6.1-panic, a real kdump written by
i386 makedumpfile -c -d 31), read with the debug vmlinux of its -dbg:i386
package (the kernel has no BTF).

The fixture-driven checks are the existing tests, called here on the i386
fixtures: sys (uptime, clock, the kdump header's time), tasks, stacks, open
files, cmdline/environ, modules, dmesg, mounts, vmas, sockets, net devices,
meminfo (with its highmem lines), slabs, cpus, runqueue; on the panic dump
also the panicking task's stack, sys.panic and the panic-summary query.
(The generic test modules' own parametrizations leave i386 out: many of
their other tests open dumps without a vmlinux.)
"""

import inspect

import pytest

from fixtures import I386, fixture, kernel
from kql.dump import open_dump
from kql.errors import DumpError
from kql.kernel import Kernel

from test_helpers_mm import test_cmdline_environ_helpers as cmdline_environ_helpers
from test_files_vm import test_environ_table as environ_table
from test_files_vm import test_open_files_match_proc_fd as open_files_match_proc_fd
from test_stacks import test_dstate_vfork_parent_and_kthreads as dstate_vfork_parent_and_kthreads
from test_stacks import test_stacks_match_proc as stacks_match_proc
from test_files_vm import test_mounts_match_proc_mounts as mounts_match_proc_mounts
from test_files_vm import test_vmas_match_proc_maps as vmas_match_proc_maps
import test_net_mem_sched
from test_tables import test_dmesg as dmesg_matches
from test_tables import test_sys as sys_matches
from test_tables import test_tasks_match_proc as tasks_match_proc
from test_tables import test_modules_match_proc_modules as modules_match_proc_modules
from test_tables import test_tasks_pid_lookup as tasks_pid_lookup
from test_tables import test_tasks_state_codes_and_active as tasks_state_codes_and_active
from test_stacks import test_panicking_task as panicking_task
from test_memory import test_real_excluded_pages as real_excluded_pages
from test_saved_queries import dumps  # noqa: F401  (the fixture test_panic_summary takes)
from test_saved_queries import test_panic_summary as panic_summary

pytestmark = pytest.mark.fixtures
NAME = "i386-6.1-live"
PANIC = "i386-6.1-panic"
# each fixture with the dump kind the checks read (QEMU's ELF core; the kdump)
DUMPS = [(NAME, "elf"), (PANIC, "kdump"), (PANIC, "kdump-flat")]


def test_recipes():
    assert I386 == [NAME, PANIC]
    assert sorted(k for n, k in DUMPS if n == PANIC) == sorted(fixture(PANIC).kinds)


def test_qemu_core_with_pae_page_tables():
    fx = fixture(NAME)
    with open_dump(fx.dump("elf")) as dump:
        with open(fx.dump("elf"), "rb") as f:
            head = f.read(20)
        # QEMU writes an ELF64 core with e_machine EM_386 (3) for this guest
        assert head[4] == 2 and int.from_bytes(head[18:20], "little") == 3
        assert dump.machine == "i386" and dump.release == fx.truth["release"]
    k = Kernel(fx.dump(), cache_dir=False)
    assert k.pgtable_levels == 3 and k.arch.pointer_size == 4
    uts = int(k.vmcoreinfo["SYMBOL(init_uts_ns)"], 16)
    assert k.read(uts, 6) == b"Linux\0"                # through the PAE tables
    k.close()


@pytest.mark.parametrize("name", I386)
def test_without_vmlinux_names_the_debug_package(name):
    fx = fixture(name)
    k = Kernel(fx.dump(), cache_dir=False)
    with pytest.raises(DumpError) as e:
        k.types
    r = fx.release
    assert str(e.value) == (
        f"no type information: this kernel ({r}, i386) has no BTF (built without "
        f"CONFIG_DEBUG_INFO_BTF); give --vmlinux with its debug vmlinux (Debian: "
        f"/usr/lib/debug/boot/vmlinux-{r} in package linux-image-{r}-dbg:i386)")
    k.close()


@pytest.mark.parametrize("name", I386)
def test_sys_and_addresses(name):
    fx = fixture(name)
    k = kernel(name)
    from fixtures import run
    (row,), _w = run(k, "sys")
    assert row["release"] == fx.truth["release"]
    assert fx.truth["version"].endswith(" " + row["version"])
    assert row["machine"] == "i686" and row["nodename"] == fx.truth["hostname"]
    assert row["cpus"] == fx.recipe["smp"] and row["pgtable_levels"] == 3
    tasks, _w = run(k, "tasks", ["pid", "task"])
    assert all(0xC0000000 <= r["task"] < 1 << 32 for r in tasks)
    import re
    import subprocess
    import sys
    out = subprocess.run([sys.executable, "-m", "kql.cli", "--vmlinux", fx.vmlinux, fx.dump(),
                          "SELECT task FROM tasks WHERE pid = 1"],
                         capture_output=True, text=True, check=True).stdout.split()
    # the table format prints addresses in hex: 8 digits on a 32-bit kernel
    assert out[0] == "task" and re.fullmatch(r"0x[0-9a-f]{8}", out[2]), out


CHECKS = {
    "stacks": lambda name, kind: stacks_match_proc(name, kind),
    "dstate-vfork-kthreads": lambda name, kind: dstate_vfork_parent_and_kthreads(name),
    "open-files": lambda name, kind: open_files_match_proc_fd(name, kind),
    "cmdline-environ": lambda name, kind: cmdline_environ_helpers(name),
    "environ": lambda name, kind: environ_table(name),
    "modules": lambda name, kind: modules_match_proc_modules(name),
    "dmesg": lambda name, kind: dmesg_matches(name, kind),
    "pid-lookup": lambda name, kind: tasks_pid_lookup(name),
    "task-states": lambda name, kind: tasks_state_codes_and_active(name),
    "tasks": lambda name, kind: tasks_match_proc(name, kind),
    "mounts": lambda name, kind: mounts_match_proc_mounts(name, kind),
    "vmas": lambda name, kind: vmas_match_proc_maps(name, kind),
    "sys": lambda name, kind: sys_matches(name, kind),
}
# the checks that take no dump kind run once per fixture
PER_DUMP = {"stacks", "open-files", "dmesg", "tasks", "mounts", "vmas", "sys"}
CASES = [(c, n, k) for c in CHECKS for n, k in DUMPS
         if c in PER_DUMP or k == dict(DUMPS)[n]]


@pytest.mark.parametrize("check,name,kind", CASES)
def test_fixture_checks_that_hold_on_i386(check, name, kind):
    CHECKS[check](name, kind)


def test_panicking_task():
    """The sysrq crash's own stack (the sysrq chain up to the int 0x80 /
    sysenter entry), sys.panic_pid/panic_cpu (tests/test_stacks.py)."""
    panicking_task(PANIC)


def test_panic_summary(dumps):  # noqa: F811
    """sys.panic holds the message, the panicking task and the dmesg tail
    (the panic-summary query; tests/test_saved_queries.py)."""
    panic_summary(dumps, PANIC)


def test_real_excluded_pages():
    real_excluded_pages(PANIC)


# test_net_mem_sched's checks of one dump (sockets, net devices, meminfo,
# vm stat deltas, slabs, cpus, runqueue)
DUMP_CHECKS = sorted(n for n in dir(test_net_mem_sched) if n.startswith("test_")
                     and list(inspect.signature(getattr(test_net_mem_sched, n)).parameters)
                     == ["dump"])


@pytest.mark.parametrize("check", DUMP_CHECKS)
@pytest.mark.parametrize("name", I386)
def test_dump_checks_hold_on_i386(name, check):
    from kql.execute import Session
    fx, k = fixture(name), kernel(name)
    k.warnings.clear()
    getattr(test_net_mem_sched, check)((fx, k, Session({None: k})))


def test_every_dump_check_is_run():
    assert len(DUMP_CHECKS) >= 9


def _elf32_core(path, vmcoreinfo: bytes, paddr: int, data: bytes) -> None:
    """A minimal ELF32 core: a VMCOREINFO note and one PT_LOAD."""
    import struct
    name = b"VMCOREINFO\0\0"
    note = struct.pack("<III", 11, len(vmcoreinfo), 0) + name + vmcoreinfo
    note += bytes(-len(note) % 4)
    phoff, phnum = 52, 2
    note_off = phoff + 32 * phnum
    load_off = (note_off + len(note) + 4095) & ~4095
    ehdr = (b"\x7fELF\x01\x01\x01" + bytes(9)
            + struct.pack("<HHIIIIIHHHHHH", 4, 3, 1, 0, phoff, 0, 0, 52, 32, phnum, 0, 0, 0))
    ph = struct.pack("<IIIIIIII", 4, note_off, 0, 0, len(note), len(note), 0, 4)
    ph += struct.pack("<IIIIIIII", 1, load_off, 0xC0000000 + paddr, paddr, len(data),
                      len(data), 7, 4096)
    body = ehdr + ph + note
    path.write_bytes(body + bytes(load_off - len(body)) + data)


def test_elf32_core(tmp_path):
    """ELF32 cores (kexec-tools writes them for 32-bit kernels below 4 GiB)."""
    info = b"OSRELEASE=6.1.0-test\nPAGESIZE=4096\nCONFIG_X86_PAE=y\n"
    data = bytes(range(256)) * 16
    p = tmp_path / "core32"
    _elf32_core(p, info, 0x100000, data)
    with open_dump(str(p)) as dump:
        assert dump.machine == "i386" and dump.release == "6.1.0-test"
        assert dump.phys.read(0x100000 + 4095, 1) == data[4095:4096]
