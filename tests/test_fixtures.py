"""The fixtures exist, are the format they claim, and truth.json holds what the
guest printed about its scenario (tests/vmcores/guest/init.sh)."""

import json
import re

import pytest

from fixtures import DUMPS, FIXTURES, fixture

MAGIC = {
    "elf": b"\x7fELF",
    "kdump": b"KDUMP   ",
    "kdump-flat": b"makedumpfile\0",
}

SCENARIO_NAMES = ["kql-sleeper", "kql-threads", "kql-vforker", "kql-zombie", "kql-files",
                  "kql-tcp", "kql-tcp6", "kql-udp", "kql-udp6", "kql-unix", "kql-stopped"]


@pytest.mark.parametrize("name,kind", DUMPS)
@pytest.mark.fixtures
def test_dump_has_claimed_format(name, kind):
    fx = fixture(name)
    with open(fx.dump(kind), "rb") as f:
        head = f.read(16)
    assert head.startswith(MAGIC[kind]), (name, kind, head)
    if kind == "elf":
        assert head[4] == 2 and head[5] == 1  # ELFCLASS64, little-endian
        with open(fx.dump(kind), "rb") as f:
            f.seek(16)
            assert int.from_bytes(f.read(2), "little") == 4  # ET_CORE


@pytest.mark.parametrize("name", FIXTURES + ["sample"])
@pytest.mark.fixtures
def test_truth_is_complete(name):
    t = fixture(name).truth
    assert t["complete"] and not t["errors"]
    assert t["release"] == fixture(name).release
    assert re.match(r"Linux version " + re.escape(t["release"]), t["version"])
    assert t["hostname"] == "kql-guest"


@pytest.mark.parametrize("name", FIXTURES + ["sample"])
@pytest.mark.fixtures
def test_truth_has_scenario(name):
    fx = fixture(name)
    t = fx.truth
    tasks = t["tasks"].values()
    by_comm = {}
    for task in tasks:
        by_comm.setdefault(task["comm"], []).append(task)
    for n in SCENARIO_NAMES:
        assert n in by_comm, n
    assert len(by_comm["kql-sleeper"]) == 3
    # 4 extra threads share the group leader's tgid
    threads = by_comm["kql-threads"]
    assert len(threads) == 5 and len({x["tgid"] for x in threads}) == 1
    assert {x["state_letter"] for x in by_comm["kql-zombie"]} == {"S", "Z"}
    assert [x["state_letter"] for x in by_comm["kql-stopped"]] == ["T"]
    # the vfork parent sleeps uninterruptibly until its child execs
    vf = sorted(by_comm["kql-vforker"], key=lambda x: x["pid"])
    assert vf[0]["state_letter"] == "D" and vf[1]["ppid"] == vf[0]["pid"]
    # (arm64 has no vfork syscall: glibc's vfork() is clone(CLONE_VM | CLONE_VFORK))
    vfork = {"x86_64": "__do_sys_vfork", "arm64": "__do_sys_clone"}
    assert vfork[fx.recipe.get("arch", "x86_64")] in vf[0]["stack"]
    # PID 1 waits for a child both while printing and at dump time
    assert t["tasks"]["1"]["stack"][0] == "do_wait"
    assert t["self_pid"] in t["transient_pids"]
    # files and sockets
    files_pid = str(by_comm["kql-files"][0]["pid"])
    fds = t["processes"][files_pid]["fds"]
    assert fds["10"] == "/mnt/data/kql-file-0" and fds["12"] == "/mnt/data/kql-file-2"
    assert re.fullmatch(r"pipe:\[\d+\]", fds["13"]) and fds["13"] == fds["14"]
    tcp = t["files"]["/proc/net/tcp"]
    assert ":1B59 00000000:0000 0A" in tcp  # 7001 listening
    assert ":1B5B " in t["files"]["/proc/net/udp"]  # 7003
    assert "/tmp/kql.sock" in t["files"]["/proc/net/unix"]
    assert "kqlro /mnt/ro tmpfs ro," in t["files"]["/proc/mounts"]
    assert {"qemu_fw_cfg", "dummy", "loop"} <= set(t["modules"])
    assert "dummy0" in t["files"]["/proc/net/dev"]
    # kernel threads are marked, and their expected comm fits task->comm
    assert any(x["is_kthread"] for x in tasks)
    assert all(len(x["comm"].encode()) <= 15 for x in tasks)


@pytest.mark.parametrize("name", [n for n in FIXTURES if fixture(n).recipe["mode"] == "panic"]
                         + ["sample"])
@pytest.mark.fixtures
def test_panic_fixture_records_panicking_task(name):
    t = fixture(name).truth
    assert isinstance(t["panic_pid"], int) and str(t["panic_pid"]) not in t["tasks"]


@pytest.mark.fixtures
def test_big_fixture_has_4000_tasks():
    t = fixture("6.1-big").truth
    assert len(t["tasks"]) >= 4000


@pytest.mark.fixtures
def test_la57_fixture_is_five_level():
    fx = fixture("6.1-la57")
    assert "la57" in fx.truth["files"]["/proc/cpuinfo"].split("flags")[1].split("\n")[0]


@pytest.mark.fixtures
def test_fixture_metadata_names_real_files():
    for name in FIXTURES:
        meta = json.loads((fixture(name).path / "fixture.json").read_text())
        assert meta["name"] == name
        for f in meta["dumps"].values():
            assert (fixture(name).path / f).stat().st_size > 1 << 20


def test_shipped_sample_truth_matches_its_log():
    """tests/sample/truth.json is derived from the guest's raw output by the
    current parser (regenerate it with truth.parse_log when truth.py changes)."""
    import truth as truth_mod
    d = fixture("sample").path
    assert json.loads((d / "truth.json").read_text()) == \
        json.loads(json.dumps(truth_mod.parse_log((d / "truth.log").read_bytes())))


# ---------------------------------------------------------------- builder failures

FAKE_QEMU = r'''#!/usr/bin/env python3
import sys, time
args = sys.argv[1:]
console = [a[5:] for a in args if a.startswith("file:")][0]
with open(console, "w") as f:
    f.write("[    0.1] booting\n[    0.2] Kernel panic - not syncing: fake boot failure\n")
if "{mode}" == "hang":
    time.sleep(3600)
sys.exit(1)
'''


@pytest.mark.fixtures   # the builder boots a downloaded kernel (with a fake QEMU)
@pytest.mark.parametrize("mode", ["exit", "hang"])
def test_failed_boot_stops_with_serial_tail(tmp_path, monkeypatch, mode):
    """A guest that dies or hangs stops the builder with the console's tail."""
    import time

    import build
    fake = tmp_path / "qemu"
    fake.write_text(FAKE_QEMU.replace("{mode}", mode))
    fake.chmod(0o755)
    monkeypatch.setattr(build, "QEMU", str(fake))
    monkeypatch.setattr(build, "BOOT_TIMEOUT", {"live": 3, "panic": 3})
    recipe = dict(build.RECIPES["6.1-live"], mem=20)
    out, work = tmp_path / "out", tmp_path / "work"
    out.mkdir()
    work.mkdir()
    t0 = time.time()
    with pytest.raises(build.BuildError) as e:
        build.boot_and_dump("fake", recipe, build.kernel_dir("6.1"), out, work)
    assert time.time() - t0 < 120  # bounded, not a hang (generous: the initramfs is built first)
    msg = str(e.value)
    assert ("QEMU exited (1)" if mode == "exit" else "guest not ready after") in msg
    assert "--- tail of" in msg and "Kernel panic - not syncing: fake boot failure" in msg
