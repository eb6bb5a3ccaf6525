"""sockets, net_devices, meminfo, slabs, cpus and runqueue against what the
guest's /proc said (truth.json: /proc/net/*, /proc/meminfo, /proc/slabinfo,
/proc/PID/fd links), plus run queues and lists altered in memory on purpose.

The guest printed /proc a few seconds before the dump was taken (on panic
fixtures: before `sh` triggered the panic), so counters that move by
themselves are compared within the tolerances stated next to each check;
everything else is exact.
"""

import ipaddress
import re
import struct
import time
from pathlib import Path

import pytest

from fixtures import DUMPS, excluded_values, fixture
from kql.execute import Session
from kql.helpers.mmstat import global_node_page_state, global_zone_page_state
from kql.helpers.net import for_each_socket, socket_owners
from kql.helpers.sched import cpu_rq
from kql.helpers.pid import find_task
from kql.helpers.runq import runq_entries
from kql.helpers.slab import for_each_kmem_cache
from kql.kernel import open_kernel

GUEST_INIT = Path(__file__).resolve().parent / "vmcores" / "guest" / "init.sh"

# include/net/tcp_states.h (user-visible ABI: /proc/net/tcp's "st" column)
TCP_STATES = {1: "ESTABLISHED", 2: "SYN_SENT", 3: "SYN_RECV", 4: "FIN_WAIT1",
              5: "FIN_WAIT2", 6: "TIME_WAIT", 7: "CLOSE", 8: "CLOSE_WAIT", 9: "LAST_ACK",
              10: "LISTEN", 11: "CLOSING"}
# include/linux/net.h sock_type (ABI), for /proc/net/unix's "Type" column
SOCK_TYPES = {1: "STREAM", 2: "DGRAM", 5: "SEQPACKET"}
__SO_ACCEPTCON = 1 << 16        # /proc/net/unix "Flags": a listening socket

ALL = DUMPS + [("sample", "kdump")]


@pytest.fixture(scope="module", params=ALL, ids=[f"{n}-{k}" for n, k in ALL])
def dump(request):
    name, kind = request.param
    fx = fixture(name)
    k = open_kernel(fx.dump(kind))
    yield fx, k, Session({None: k})
    k.close()


def _filtered(fx) -> bool:
    return bool(fx.recipe.get("makedumpfile"))


def _clean(fx, warnings) -> bool:
    """No walk warnings, except on makedumpfile -d 31 dumps reads of pages the
    dump level excluded (Debian's 6.12 makedumpfile drops some slab pages)."""
    return all(_filtered(fx) and ("excluded by the dump level" in w or "recovered" in w)
               for w in warnings)


def _excluded_nulls(fx, res, column: str) -> int:
    """How many values of ``column`` in result ``res`` are NULL because the
    dump level excluded their page, as kql counted them (only
    makedumpfile-filtered dumps have any)."""
    n = excluded_values(res, column)
    assert not n or _filtered(fx), (column, n)
    return n


def _transient(truth) -> set:
    return set(truth.get("transient_pids") or []) | {truth.get("panic_pid")}


# -- /proc/net parsers --------------------------------------------------------------------

def _proc_ip(text: str) -> str:
    """/proc/net/{tcp,udp}[6] print each 32-bit word of the address with %08X
    in host (little-endian) order."""
    raw = b"".join(int(text[i:i + 8], 16).to_bytes(4, "little") for i in range(0, len(text), 8))
    return str(ipaddress.ip_address(raw))


def _proc_net_inet(truth, name: str, family: str, protocol: str) -> set:
    rows = set()
    for line in truth["files"][f"/proc/net/{name}"].splitlines()[1:]:
        f = line.split()
        if not f:
            continue
        (la, lp), (ra, rp) = f[1].split(":"), f[2].split(":")
        rows.add((family, protocol, TCP_STATES[int(f[3], 16)], _proc_ip(la), int(lp, 16),
                  _proc_ip(ra), int(rp, 16), int(f[9])))
    return rows


def _proc_net_unix(truth) -> set:
    rows = set()
    for line in truth["files"]["/proc/net/unix"].splitlines()[1:]:
        f = line.split()
        flags, typ, ino = int(f[3], 16), int(f[4], 16), int(f[6])
        path = f[7] if len(f) > 7 else None
        rows.add((SOCK_TYPES[typ], bool(flags & __SO_ACCEPTCON), ino, path))
    return rows


def _fd_sockets(truth) -> dict[tuple[int, int], int]:
    """{(pid, fd): ino} of every socket:[ino] fd link of every process."""
    out = {}
    for pid, proc in truth["processes"].items():
        for fd, link in (proc.get("fds") or {}).items():
            m = re.fullmatch(r"socket:\[(\d+)\]", link)
            if m:
                out[(int(pid), int(fd))] = int(m.group(1))
    return out


# -- sockets --------------------------------------------------------------------------------

@pytest.mark.fixtures
def test_sockets_match_proc_net(dump):
    """Exact: every /proc/net/tcp, tcp6, udp, udp6 entry (state, addresses,
    ports, inode) and nothing else of those protocols; UNIX sockets by type,
    listening flag, inode and path."""
    fx, k, s = dump
    truth = fx.truth
    n0 = len(k.warnings)
    [res] = s.execute("SELECT * FROM sockets")
    rows = res.table.to_pylist()
    for name, family, protocol in (("tcp", "INET", "TCP"), ("tcp6", "INET6", "TCP"),
                                   ("udp", "INET", "UDP"), ("udp6", "INET6", "UDP")):
        want = _proc_net_inet(truth, name, family, protocol)
        got = {(r["family"], r["protocol"], r["state"], r["local_addr"], r["local_port"],
                r["remote_addr"], r["remote_port"], r["ino"])
               for r in rows if r["family"] == family and r["protocol"] == protocol}
        assert got == want, name
    want = _proc_net_unix(truth)
    got = {(r["type"], r["state"] == "LISTEN", r["ino"], r["local_addr"])
           for r in rows if r["family"] == "UNIX"}
    # a bound socket's path is NULL only where its page was excluded, as kql says
    named = {w[:3]: w for w in want if w[3] is not None}
    hidden = {g for g in got if g[3] is None and g[:3] in named}
    assert len(hidden) <= _excluded_nulls(fx, res, "sockets.local_addr")
    assert (got - hidden) | {named[g[:3]] for g in hidden} == want
    assert _clean(fx, k.warnings[n0:]), k.warnings[n0:]


@pytest.mark.fixtures
def test_socket_owners_match_fd_links(dump):
    """Exact: each socket:[ino] link in /proc/PID/fd is a row (pid, fd, ino),
    and every owned inet/unix row of a process /proc listed is such a link."""
    fx, k, s = dump
    truth = fx.truth
    links = _fd_sockets(truth)
    assert links, "the scenario's processes hold sockets"
    rows = s.query("SELECT pid, fd, ino FROM sockets WHERE pid IS NOT NULL").to_pylist()
    got = {(r["pid"], r["fd"]): r["ino"] for r in rows}
    for (pid, fd), ino in links.items():
        if pid in _transient(truth):
            continue
        if got.get((pid, fd)) != ino:
            # only a file on a page makedumpfile excluded may hide an owner
            assert _filtered(fx) and any(
                (f"(pid {pid} fd {fd})" in w or f"task of pid {pid} " in w) and "excluded" in w
                for w in k.warnings), (pid, fd)
    for (pid, fd), ino in got.items():
        if str(pid) in truth["processes"] and pid not in _transient(truth):
            assert links.get((pid, fd)) == ino, (pid, fd)
    # pid = N visits only that process's fd table, with the same rows
    pids = sorted({pid for pid, _ in got})
    for pid in pids:
        one = s.query(f"SELECT pid, fd, ino FROM sockets WHERE pid = {pid}").to_pylist()
        assert sorted((r["fd"], r["ino"]) for r in one) == \
            sorted((fd, ino) for (p, fd), ino in got.items() if p == pid)
    assert s.query("SELECT * FROM sockets WHERE pid = 0").num_rows == 0


@pytest.mark.fixtures
def test_socket_helpers_each_socket_once(dump):
    fx, k, _ = dump
    socks = [sk.value_() for sk in for_each_socket(k)]
    assert len(socks) == len(set(socks))
    owners = socket_owners(k)
    assert all(pid > 0 and fd >= 0 for v in owners.values() for pid, fd in v)
    # the scenario's sockets are all bound: each owned one is in a hash table
    for sk in owners:
        fam = k.object("struct sock", sk).member_("__sk_common").skc_family.value_()
        if fam in (1, 2, 10):
            assert sk in socks


# -- net_devices ------------------------------------------------------------------------

def _guest_addresses() -> dict[str, list[str]]:
    """The addresses the guest's init script assigns (`ip addr add A dev D`)."""
    out: dict[str, list[str]] = {}
    for m in re.finditer(r"ip addr add (\S+) dev (\S+)", GUEST_INIT.read_text()):
        out.setdefault(m.group(2), []).append(m.group(1))
    return out


@pytest.mark.fixtures
def test_net_devices_match_proc_net_dev(dump):
    """Exact: the names of init_net's devices in /proc/net/dev order; lo is
    127.0.0.1/8 and the scenario's addresses are on their devices."""
    fx, k, s = dump
    want = [line.split(":")[0].strip()
            for line in fx.truth["files"]["/proc/net/dev"].splitlines()[2:]]
    init_net = k.symbols.lookup("init_net").address
    [res] = s.execute("SELECT * FROM net_devices")
    rows = res.table.to_pylist()
    mine = [r for r in rows if r["netns"] == init_net]
    assert [r["name"] for r in mine] == want
    by_name = {r["name"]: r for r in mine}
    assert by_name["lo"]["up"] and "127.0.0.1/8" in by_name["lo"]["addresses"]
    # a MAC is NULL only where its page was excluded, as kql says
    macs = [r["mac"] for r in mine]
    assert macs.count(None) == _excluded_nulls(fx, res, "net_devices.mac")
    assert by_name["lo"]["ifindex"] == 1 and by_name["lo"]["mac"] in ("00:00:00:00:00:00", None)
    for dev, addrs in _guest_addresses().items():
        assert set(addrs) <= set(by_name[dev]["addresses"]), dev
        assert by_name[dev]["up"]
        assert by_name[dev]["mac"] is None or \
            re.fullmatch(r"([0-9a-f]{2}:){5}[0-9a-f]{2}", by_name[dev]["mac"])
    assert len({r["ifindex"] for r in mine}) == len(mine)


# -- meminfo -------------------------------------------------------------------------------

# Tolerances (kB).  /proc/meminfo was printed a few seconds before the dump:
# - exact: totals fixed at boot or by sysctl (MemTotal, SwapTotal, CommitLimit,
#   VmallocTotal, hugetlb pool sizes, direct-map page counts);
# - MemFree and MemAvailable: 16 MiB.  After the print the truth collector
#   exits, and the dump trigger (panic: the shell writing to sysrq; live: the
#   host pausing the guest) allocates; a live dump usually shows exactly 4 MiB
#   less free memory than /proc printed, but with the host loaded (fixtures
#   built two at a time beside other work) 6.1 guests showed 15.4 MiB more:
#   memory held at the print, in no other meminfo counter, freed before the
#   dump;
# - every other counter: 2 MiB.  Anonymous/shmem pages rotate between the
#   active and inactive lists (up to 0.75 MiB seen), slab and page-table pages
#   come and go with the collector's processes, Committed_AS drops when they
#   exit (1.7 MiB seen on panic dumps).
EXACT = {"MemTotal", "SwapTotal", "CommitLimit", "VmallocTotal", "VmallocChunk",
         "NFS_Unstable", "HugePages_Total", "HugePages_Free", "HugePages_Rsvd",
         "HugePages_Surp", "Hugepagesize", "Hugetlb", "DirectMap4k", "DirectMap2M",
         "DirectMap1G", "HighTotal", "LowTotal"}
# LowFree is MemFree less the (here empty) highmem zone's free pages
LOOSE_KB = {"MemFree": 16384, "MemAvailable": 16384, "LowFree": 16384}
DEFAULT_KB = 2048


def _proc_meminfo(truth) -> dict[str, int]:
    out = {}
    for line in truth["files"]["/proc/meminfo"].splitlines():
        m = re.match(r"(\S+):\s+(\d+)", line)
        out[m.group(1)] = int(m.group(2))
    return out


@pytest.mark.fixtures
def test_meminfo_matches_proc(dump):
    fx, k, s = dump
    want = _proc_meminfo(fx.truth)
    rows = s.query("SELECT name, bytes, value, unit FROM meminfo").to_pylist()
    assert [r["name"] for r in rows] == list(want)       # same lines, same order
    for r in rows:
        name, got, w = r["name"], r["value"], want[r["name"]]
        if r["unit"] == "kB":
            assert r["bytes"] == got * 1024
        else:
            assert r["bytes"] is None and name.startswith("HugePages_")
        if name in EXACT:
            assert got == w, name
        else:
            tol = LOOSE_KB.get(name, DEFAULT_KB)
            assert abs(got - w) <= tol, (name, got, w)
    got = {r["name"]: r["value"] for r in rows}
    # the kernel's own sums hold exactly in what we computed
    assert got["Slab"] == got["SReclaimable"] + got["SUnreclaim"]
    assert got["Active"] == got["Active(anon)"] + got["Active(file)"]
    assert got["Inactive"] == got["Inactive(anon)"] + got["Inactive(file)"]
    assert got["MemFree"] <= got["MemTotal"]


@pytest.mark.fixtures
def test_vm_stat_deltas_are_folded(dump):
    fx, k, _ = dump
    node = k.symbols.lookup("vm_node_stat").address
    idx = k.find_type("enum node_stat_item").enum_value("NR_FILE_PAGES")
    raw = k.read_slong(node + k.arch.pointer_size * idx)      # atomic_long_t
    exact = global_node_page_state(k, "NR_FILE_PAGES")
    assert exact == global_node_page_state(k, "NR_FILE_PAGES", exact=True)
    assert global_node_page_state(k, "NR_FILE_PAGES", exact=False) == max(raw, 0)
    # each CPU holds at most stat_threshold (< 128) pages of delta per node
    assert abs(exact - raw) <= 127 * len(k.possible_cpus())
    assert 0 < global_zone_page_state(k, "NR_FREE_PAGES") * 4 <= \
        _proc_meminfo(fx.truth)["MemTotal"]


# -- slabs ------------------------------------------------------------------------------------

def _proc_slabinfo(truth) -> list[dict]:
    out = []
    for line in truth["files"]["/proc/slabinfo"].splitlines()[2:]:
        f = line.split()
        out.append({"name": f[0], "active": int(f[1]), "objs": int(f[2]), "size": int(f[3]),
                    "per_slab": int(f[4]), "pages": int(f[5]), "slabs": int(f[14])})
    return out


@pytest.mark.fixtures
def test_slabs_match_proc_slabinfo(dump):
    """Exact: cache names in /proc/slabinfo order, <objsize> (s->size),
    <objperslab>, <pagesperslab>.  Counts: caches grow and shrink between the
    print and the dump (dentry and inode caches as the collector reads /proc,
    kmalloc caches), so object counts may differ by 5% plus two slabs' worth
    and slab counts by 5% plus two; most caches match exactly.  Two caches
    may churn more (filp lost 3 of its 13 slabs on a loaded host: the
    collector's files closed before the dump).

    On makedumpfile -d 31 dumps of 6.12, a few cache names (kmalloc'd
    strings) sit on excluded pages: those names are NULL and counted as
    warnings, and the caches are compared by position."""
    fx, k, s = dump
    want = _proc_slabinfo(fx.truth)
    [res] = s.execute("SELECT * FROM slabs")
    rows = res.table.to_pylist()
    assert len(rows) == len(want)
    exact, churned = 0, []
    for r, w in zip(rows, want):
        if r["name"] is None:
            assert _filtered(fx)
        else:
            assert r["name"] == w["name"]
        assert (r["size"], r["objects_per_slab"], r["pages_per_slab"]) == \
            (w["size"], w["per_slab"], w["pages"]), w["name"]
        assert r["object_size"] <= r["size"]
        slack = 2 * w["per_slab"] + w["objs"] // 20
        if abs(r["objects"] - w["objs"]) > slack or \
                abs(r["active_objects"] - w["active"]) > slack or \
                abs(r["slabs"] - w["slabs"]) > 2 + w["slabs"] // 20:
            churned.append((w["name"], r["objects"], r["active_objects"], r["slabs"], w))
        assert r["active_objects"] <= r["objects"] <= r["slabs"] * r["objects_per_slab"]
        exact += (r["objects"], r["active_objects"], r["slabs"]) == \
            (w["objs"], w["active"], w["slabs"])
    assert len(churned) <= 2, churned
    assert exact >= len(want) * 9 // 10
    # each NULL name is one the dump level excluded, as kql says
    names = sum(r["name"] is None for r in rows)
    assert excluded_values(res, "slabs.name") == names
    assert res.warnings.total == names


# -- cpus and runqueue ---------------------------------------------------------------------

@pytest.mark.fixtures
def test_cpus(dump):
    fx, k, s = dump
    rows = s.query("SELECT * FROM cpus ORDER BY cpu").to_pylist()
    assert [r["cpu"] for r in rows] == list(range(fx.recipe["smp"]))
    assert all(r["online"] for r in rows)
    active = {r["pid"]: r for r in s.query(
        "SELECT pid, comm, cpu FROM tasks WHERE active AND pid > 0").to_pylist()}
    for r in rows:
        if r["curr_pid"]:
            assert active[r["curr_pid"]]["cpu"] == r["cpu"]
            assert active[r["curr_pid"]]["comm"] == r["curr_comm"]
        else:
            assert r["curr_comm"] == f"swapper/{r['cpu']}"
    panic = fx.truth.get("panic_pid")
    if panic:
        assert panic in {r["curr_pid"] for r in rows}
    one = s.query("SELECT cpu, rq FROM cpus WHERE cpu = 1").to_pylist()
    assert one == [{"cpu": 1, "rq": rows[1]["rq"]}]


@pytest.mark.fixtures
def test_runqueue(dump):
    fx, k, s = dump
    n0 = len(k.warnings)
    cpus = {r["cpu"]: r for r in s.query("SELECT * FROM cpus").to_pylist()}
    rows = s.query("SELECT * FROM runqueue").to_pylist()
    for cpu, c in cpus.items():
        mine = [r for r in rows if r["cpu"] == cpu]
        cur = [r for r in mine if r["current"]]
        assert len(cur) == 1 and cur[0]["pid"] == c["curr_pid"]
        if c["curr_pid"] == 0:
            assert cur[0]["class"] == "IDLE"
        # rq->nr_running counts every queued task of every class, the running
        # one included, but not the idle task (delayed-dequeue entities count
        # until they are dequeued)
        assert sum(r["class"] != "IDLE" for r in mine) == c["nr_running"], cpu
        assert all(r["class"] in ("DL", "RT", "CFS", "IDLE", "STOP") for r in mine)
    assert k.warnings[n0:] == []


# -- altered memory ---------------------------------------------------------------------------

class Patched:
    """Make a Kernel read some words differently (the dump file is untouched):
    every read function of the Kernel goes through :meth:`read`."""

    def __init__(self, k):
        self.k = k
        self.words: dict[int, bytes] = {}
        self._orig = k.memory.read
        k.read = self.read
        for name, fmt in (("read_u8", "<B"), ("read_s8", "<b"), ("read_u16", "<H"),
                          ("read_s16", "<h"), ("read_u32", "<I"), ("read_s32", "<i"),
                          ("read_u64", "<Q"), ("read_s64", "<q"), ("read_pointer", "<Q")):
            st = struct.Struct(fmt)
            setattr(k, name, lambda addr, st=st: st.unpack(self.read(addr, st.size))[0])

    def put(self, addr: int, value: int, size: int = 8) -> None:
        for i, b in enumerate(value.to_bytes(size, "little")):
            self.words[addr + i] = bytes([b])

    def read(self, addr: int, size: int) -> bytes:
        data = self._orig(addr, size)
        if self.words and any(addr <= a < addr + size for a in self.words):
            buf = bytearray(data)
            for a, b in self.words.items():
                if addr <= a < addr + size:
                    buf[a - addr] = b[0]
            data = bytes(buf)
        return data


@pytest.fixture()
def fresh():
    """A Kernel of its own (the patched reads and caches die with it)."""
    fx = fixture("6.1-live")
    k = open_kernel(fx.dump("elf"))
    yield fx, k
    k.close()


def _sleepers(k, truth, n):
    """n sleeping user tasks (pids from truth, state S)."""
    out = []
    for pid, t in sorted(truth["tasks"].items(), key=lambda x: int(x[0])):
        if t["state_letter"] == "S" and not t["is_kthread"] and int(pid) not in _transient(truth):
            out.append(find_task(k, int(pid)))
        if len(out) == n:
            return out
    raise AssertionError("not enough sleeping tasks")


@pytest.mark.fixtures
def test_runqueue_walks_queued_tasks(fresh):
    """Queue three sleeping tasks by rewriting pointers: one on CPU 1's CFS
    timeline, one on its RT priority-10 list, one in its deadline tree."""
    fx, k = fresh
    if k.find_type("struct sched_dl_entity").has_member("dl_server"):
        pytest.skip("6.8+ dl servers")       # the fixture is 6.1
    cfs_t, rt_t, dl_t = _sleepers(k, fx.truth, 3)
    p = Patched(k)
    rq = cpu_rq(k, 1)
    rb = k.find_type("struct rb_node")
    task_t = k.find_type("struct task_struct")
    # CFS: a one-node tree; the entity is a task (no my_q)
    node = cfs_t.value_() + task_t.offsetof("se.run_node")
    p.put(rq.cfs.tasks_timeline.address_, node)
    p.put(node + rb.offsetof("rb_left"), 0)
    p.put(node + rb.offsetof("rb_right"), 0)
    p.put(cfs_t.value_() + task_t.offsetof("se.my_q"), 0)
    # RT: bit 10 of the bitmap and queue[10] -> the task's run_list -> back
    prio = 10
    arr = rq.rt.active
    p.put(arr.bitmap.address_, 1 << prio)
    head = arr.queue[prio].address_
    rl = rt_t.value_() + task_t.offsetof("rt.run_list")
    p.put(head, rl)
    p.put(head + 8, rl)
    p.put(rl, head)
    p.put(rl + 8, head)
    if task_t.member("rt")[0].type.strip_typedefs().has_member("my_q"):
        p.put(rt_t.value_() + task_t.offsetof("rt.my_q"), 0)
    # DL: a one-node tree of the task's dl entity
    dnode = dl_t.value_() + task_t.offsetof("dl.rb_node")
    p.put(rq.dl.root.address_, dnode)
    p.put(dnode + rb.offsetof("rb_left"), 0)
    p.put(dnode + rb.offsetof("rb_right"), 0)
    got = [(e.task.value_(), e.sched_class, e.current) for e in runq_entries(k, 1)]
    assert got[:3] == [(dl_t.value_(), "DL", False), (rt_t.value_(), "RT", False),
                       (cfs_t.value_(), "CFS", False)]
    assert got[3][2] and len(got) == 4
    assert k.warnings == []


@pytest.mark.fixtures
def test_corrupted_slab_list_ends_with_warning(fresh):
    """A cycle in slab_caches (the 5th cache's next points back at the 2nd):
    the walk stops after the 5 caches with a warning, the query succeeds."""
    fx, k = fresh
    caches = [c.value_() for c in for_each_kmem_cache(k)]
    off = k.find_type("struct kmem_cache").offsetof("list")
    p = Patched(k)
    p.put(caches[4] + off, caches[1] + off)
    start = time.monotonic()
    rows = Session({None: k}).query("SELECT name FROM slabs").to_pylist()
    assert time.monotonic() - start < 30
    want = [w["name"] for w in _proc_slabinfo(fx.truth)]
    assert [r["name"] for r in rows] == want[:5]
    assert any("cycle" in w for w in k.warnings)


@pytest.mark.fixtures
def test_corrupted_hash_chain_ends_with_warning(fresh):
    """A UDP socket whose sk_node.next points at itself: the chain walk stops
    with a warning and every socket is still listed once."""
    fx, k = fresh
    udp = [sk for sk in for_each_socket(k)
           if sk.member_("__sk_common").skc_family.value_() == 2
           and sk.sk_protocol.value_() == 17]
    assert udp
    sk = udp[0].value_()
    node = sk + k.find_type("struct sock").offsetof("__sk_common.skc_node")
    p = Patched(k)
    p.put(node, node)
    rows = Session({None: k}).query("SELECT ino FROM sockets").to_pylist()
    inos = [r["ino"] for r in rows]
    assert len(inos) == len(set(inos))
    assert any("cycle" in w for w in k.warnings)
    truth_udp = _proc_net_inet(fx.truth, "udp", "INET", "UDP")
    assert {t[-1] for t in truth_udp} <= set(inos)


@pytest.mark.fixtures
def test_unreadable_socket_file_is_a_warning(fresh):
    """A process whose fd table points at an unmapped file: that fd is skipped
    with a warning, the other owners are found."""
    fx, k = fresh
    links = _fd_sockets(fx.truth)
    (pid, fd), ino = sorted(links.items())[0]
    before = dict(socket_owners(k))
    k.cache.pop("socket_owners")
    task = find_task(k, pid)
    fdt = task.files.fdt
    p = Patched(k)
    # a direct-map address 32 TiB up: far beyond the guest's RAM
    p.put(fdt.fd.value_() + 8 * fd, k.page_offset + (32 << 40))
    owners = socket_owners(k)
    assert all(pid not in [o for o, _ in v] for v in owners.values())
    assert len(owners) == len(before) - 1
    assert any("unreadable" in w for w in k.warnings)


# -- --vmlinux (DWARF types) ---------------------------------------------------------------------

@pytest.mark.parametrize("name", ["6.1-live", "6.12-live"])
@pytest.mark.fixtures
def test_with_vmlinux(name):
    """The same tables with DWARF types from the debug vmlinux."""
    fx = fixture(name)
    k = open_kernel(fx.dump(), vmlinux=fx.vmlinux)
    try:
        s = Session({None: k})
        rows = s.query("SELECT family, protocol, state, local_port, ino FROM sockets "
                       "WHERE family LIKE 'INET%'").to_pylist()
        want = set()
        for n, fam, proto in (("tcp", "INET", "TCP"), ("tcp6", "INET6", "TCP"),
                              ("udp", "INET", "UDP"), ("udp6", "INET6", "UDP")):
            want |= {(t[0], t[1], t[2], t[4], t[7]) for t in _proc_net_inet(fx.truth, n, fam, proto)}
        assert {tuple(r.values()) for r in rows} == want
        mi = {r["name"]: r["value"] for r in s.query("SELECT name, value FROM meminfo").to_pylist()}
        assert list(mi) == list(_proc_meminfo(fx.truth))
        assert mi["MemTotal"] == _proc_meminfo(fx.truth)["MemTotal"]
        slabs = s.query("SELECT name, size FROM slabs").to_pylist()
        assert [(r["name"], r["size"]) for r in slabs] == \
            [(w["name"], w["size"]) for w in _proc_slabinfo(fx.truth)]
        devs = s.query("SELECT name FROM net_devices").to_pylist()
        assert [d["name"] for d in devs] == [
            line.split(":")[0].strip()
            for line in fx.truth["files"]["/proc/net/dev"].splitlines()[2:]]
        assert s.query("SELECT count(*) AS n FROM runqueue").to_pylist()[0]["n"] >= \
            fx.recipe["smp"]
        assert k.warnings == []
    finally:
        k.close()


@pytest.mark.fixtures
def test_meminfo_unreadable_value_is_null(fresh):
    """blockdev_superblock pointing at unmapped memory: Buffers (and Cached,
    which subtracts it) are NULL with a warning; the other lines stand."""
    fx, k = fresh
    p = Patched(k)
    p.put(k.symbols.lookup("blockdev_superblock").address, k.page_offset + (32 << 40))
    rows = {r["name"]: r for r in Session({None: k}).query("SELECT * FROM meminfo").to_pylist()}
    assert list(rows) == list(_proc_meminfo(fx.truth))
    assert rows["Buffers"]["bytes"] is None and rows["Cached"]["value"] is None
    assert rows["MemTotal"]["value"] == _proc_meminfo(fx.truth)["MemTotal"]
    assert sum(r["value"] is None for r in rows.values()) == 2
    assert any(w.startswith("meminfo: nr_blockdev_pages") for w in k.warnings)


@pytest.mark.fixtures
def test_runqueue_descends_into_group_queues(fresh):
    """A CFS entity with my_q is a task group: CPU 1's timeline gets one
    entity whose my_q is CPU 0's cfs_rq, whose timeline holds a task."""
    fx, k = fresh
    group_t, task_t_ = _sleepers(k, fx.truth, 2)
    p = Patched(k)
    rb = k.find_type("struct rb_node")
    tt = k.find_type("struct task_struct")
    rq0, rq1 = cpu_rq(k, 0), cpu_rq(k, 1)
    node = group_t.value_() + tt.offsetof("se.run_node")
    p.put(rq1.cfs.tasks_timeline.address_, node)
    p.put(node + rb.offsetof("rb_left"), 0)
    p.put(node + rb.offsetof("rb_right"), 0)
    p.put(group_t.value_() + tt.offsetof("se.my_q"), rq0.cfs.address_)
    inner = task_t_.value_() + tt.offsetof("se.run_node")
    p.put(rq0.cfs.tasks_timeline.address_, inner)
    p.put(inner + rb.offsetof("rb_left"), 0)
    p.put(inner + rb.offsetof("rb_right"), 0)
    p.put(task_t_.value_() + tt.offsetof("se.my_q"), 0)
    p.put(rq0.cfs.curr.address_, 0)
    got = [(e.task.value_(), e.sched_class) for e in runq_entries(k, 1) if not e.current]
    assert got == [(task_t_.value_(), "CFS")]     # the group entity itself is no task
    assert k.warnings == []


@pytest.mark.fixtures
def test_connected_inet_socket_fields(fresh):
    """A UDP socket 'connected' by rewriting its sock_common: the peer address
    and port come out in host order, the state follows sk_state."""
    fx, k = fresh
    udp4 = [sk for sk in for_each_socket(k)
            if sk.member_("__sk_common").skc_family.value_() == 2
            and sk.sk_protocol.value_() == 17]
    sk = udp4[0]
    st = k.find_type("struct sock")
    p = Patched(k)
    p.put(sk.value_() + st.offsetof("__sk_common.skc_daddr"),
          int.from_bytes(ipaddress.IPv4Address("10.77.0.2").packed, "little"), 4)
    # __be16: network byte order in memory
    p.put(sk.value_() + st.offsetof("__sk_common.skc_dport"),
          int.from_bytes((4242).to_bytes(2, "big"), "little"), 2)
    p.put(sk.value_() + st.offsetof("__sk_common.skc_state"), 1, 1)
    rows = Session({None: k}).query(
        f"SELECT * FROM sockets WHERE sock = {sk.value_()}").to_pylist()
    assert [(r["remote_addr"], r["remote_port"], r["state"], r["protocol"]) for r in rows] == \
        [("10.77.0.2", 4242, "ESTABLISHED", "UDP")]
