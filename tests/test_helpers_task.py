"""Task, pid, list, maple-tree, rbtree and per-CPU helpers against what the
guest's /proc said (truth.json), plus corrupted lists built on purpose."""

import struct

import pytest

from fixtures import FIXTURES, check_missing_tasks, fixture
from kql.errors import ExcludedPageError, FaultError
from kql.helpers.list import (
    hlist_for_each_entry, list_count_nodes, list_empty, list_for_each_entry,
    list_for_each_entry_reverse, validate_list, ValidationError,
)
from kql.helpers.mapletree import mt_for_each_entry
from kql.helpers.pid import (
    find_pid, find_task, find_tasks, for_each_pid, for_each_process, for_each_task,
    for_each_thread,
)
from kql.helpers.rbtree import rb_first, rb_next, rbtree_inorder_for_each
from kql.helpers.sched import (
    cpu_curr, idle_task, task_cpu, task_is_kthread, task_state_letter, task_state_letters,
)
from kql.kernel import open_kernel
from kql.object import Object
from kql.types import Member, Type, TypeSourceBase, builtin_type, pointer_to


@pytest.fixture(scope="module", params=FIXTURES)
def kernel(request):
    fx = fixture(request.param)
    k = open_kernel(fx.dump())
    yield fx, k
    k.close()


def _skip(truth) -> set:
    return set(truth.get("transient_pids") or []) | {truth.get("panic_pid")}


class Excluded:
    """Counts per-task checks that hit pages makedumpfile filtered out (on the
    6.12 kdump, Debian's makedumpfile drops some slab pages; drgn agrees)."""

    def __init__(self, fx):
        self.filtered = bool(fx.recipe.get("makedumpfile"))
        self.hits = self.total = 0

    def __enter__(self):
        self.total += 1
        return self

    def __exit__(self, typ, value, tb):
        if typ is not None and issubclass(typ, ExcludedPageError) and self.filtered:
            self.hits += 1
            return True
        return False

    def check(self):
        assert self.hits <= self.total // 5, f"{self.hits} of {self.total} excluded"


@pytest.mark.fixtures
def test_for_each_task_matches_proc(kernel):
    fx, k = kernel
    truth = fx.truth
    skip = _skip(truth)
    tasks = {}
    idle = []
    ex = Excluded(fx)
    for t in for_each_task(k):
        pid = None
        with ex:
            pid = t.pid.value_()
        if pid is None:
            continue
        if pid == 0:
            idle.append(t)
        else:
            assert pid not in tasks, f"pid {pid} yielded twice"
            tasks[pid] = t
    # one idle task per CPU, none of them visible in /proc
    assert sorted(task_cpu(t) for t in idle) == list(range(fx.recipe["smp"]))
    assert all(t.comm.string_().startswith(b"swapper/") for t in idle)
    want = {int(p) for p in truth["tasks"]} - skip
    missing = want - set(tasks)
    # only tasks the dump lacks (their idr path or task_struct on a filtered
    # page) may be missing: lists broken by other filtered pages are made up
    # from the PID IDR and the children lists
    check_missing_tasks(fx, k, missing)
    want -= missing
    # anything extra was started after /proc was read (the truth collector's children)
    for pid in set(tasks) - want:
        assert pid > min(skip - {None}, default=0) or pid in skip
    for pid in want:
        t, w = tasks[pid], truth["tasks"][str(pid)]
        assert t.tgid.value_() == w["tgid"]
        assert w["name"].startswith(t.comm.string_().decode())
        assert task_is_kthread(t) == w["is_kthread"]
    assert ex.filtered or k.warnings == []
    ex.check()


@pytest.mark.fixtures
def test_every_task_on_the_process_tree_is_found(kernel):
    """However many pages the dump level dropped (task lists and pid idr
    nodes broken on the 6.12 kdump), every task of the process tree
    (init_task's children, theirs, ...: list_for_each_entry over ->sibling)
    whose task_struct is readable is in for_each_task, and a pid lookup
    (find_tasks) finds it."""
    fx, k = kernel
    found = {t.value_() for t in for_each_task(k)}
    tree = {}
    todo = [k.var("init_task").address_of_()]
    while todo:
        parent = todo.pop()
        try:
            kids = list(list_for_each_entry("struct task_struct",
                                            parent.children.address_of_(), "sibling"))
        except FaultError:
            continue            # the parent's own page: its children stay unknown
        for c in kids:
            if c.value_() in tree:
                continue
            try:
                tree[c.value_()] = c.pid.value_()
            except FaultError:
                continue
            todo.append(c)
    assert {1, 2} <= set(tree.values())
    assert sorted(set(tree) - found) == []
    for addr, pid in tree.items():
        assert [t.value_() for t in find_tasks(k, [pid])] == [addr], pid


@pytest.mark.fixtures
def test_task_states(kernel):
    fx, k = kernel
    truth = fx.truth
    skip = _skip(truth)
    assert [s[0] for s in task_state_letters(k)] == list("RSDTtXZPI")
    letters = {}
    ex = Excluded(fx)
    for pid, w in truth["tasks"].items():
        if int(pid) in skip or w["is_kthread"]:
            continue        # kthreads wake and sleep between /proc and the dump
        with ex:
            letters[pid] = (task_state_letter(find_task(k, int(pid))), w["state_letter"])
    ex.check()
    assert {p: v for p, v in letters.items() if v[0] != v[1]} == {}
    # the scenario holds a stopped task, a zombie and a vfork parent in D
    assert {"T", "Z", "D", "S"} <= {v[1] for v in letters.values()}


@pytest.mark.fixtures
def test_find_task_and_pids(kernel):
    fx, k = kernel
    truth = fx.truth
    skip = _skip(truth)
    ex = Excluded(fx)
    for pid in truth["tasks"]:
        if int(pid) in skip:
            continue
        with ex:
            task = find_task(k, int(pid))
            assert task.pid.value_() == int(pid)
    ex.check()
    all_pids = set()
    for t in for_each_task(k):
        with ex:
            all_pids.add(t.pid.value_())
    absent = max(all_pids) + 1000
    assert find_task(k, absent).value_() == 0
    assert find_pid(k, absent).value_() == 0
    numbers = []
    for p in for_each_pid(k):
        with ex:
            numbers.append(p.numbers[0].nr.value_())
    assert numbers == sorted(numbers)
    if not ex.hits:
        assert set(numbers) == all_pids - {0}


@pytest.mark.fixtures
def test_threads_and_processes(kernel):
    fx, k = kernel
    truth = fx.truth
    skip = _skip(truth)
    ex = Excluded(fx)
    leaders = {}
    for t in for_each_process(k):
        with ex:
            leaders[t.pid.value_()] = t
    for pid, w in truth["tasks"].items():
        if int(pid) in skip or w["tgid"] != int(pid):
            continue
        if int(pid) not in leaders and (ex.hits or (ex.filtered and k.warnings)):
            continue            # it (or the list to it) sits on a filtered page
        threads = None
        warned = len(k.warnings)
        with ex:
            threads = [t.pid.value_() for t in for_each_thread(leaders[int(pid)])]
        if threads is None or (ex.filtered and len(k.warnings) > warned):
            continue            # the thread list crosses a filtered page
        if w["state_letter"] != "Z":
            assert len(threads) == w["num_threads"], pid
        assert all(truth["tasks"].get(str(t), {}).get("tgid", int(pid)) == int(pid)
                   for t in threads)


def _vma_span(v):
    return v.vm_start.value_(), v.vm_end.value_()


@pytest.mark.fixtures
def test_vmas_from_maple_tree_or_list_and_rbtree(kernel):
    """/proc/<pid>/maps from the maple tree (6.1+), or before it from both the
    mm->mmap list and the mm->mm_rb tree (each must give every VMA)."""
    fx, k = kernel
    truth = fx.truth
    n = 0
    ex = Excluded(fx)
    maple = k.types.find_type("struct mm_struct").has_member("mm_mt")
    assert maple == (not fx.release.startswith("5.10"))
    for pid, proc in truth["processes"].items():
        if int(pid) in _skip(truth) or not proc.get("maps"):
            continue
        task = find_task(k, int(pid))
        vmas = None
        with ex:
            mm = task.mm
            if maple:
                # Since Linux 6.1 (commit 524e00b36e8c "mm: remove rb tree.") VMAs
                # are only in the maple tree mm->mm_mt.
                vmas = [_vma_span(v) for _, _, v in mt_for_each_entry(
                    mm.mm_mt.address_of_(), "struct vm_area_struct")]
            else:
                listed, v = [], mm.mmap
                while v.value_() and len(listed) < 100_000:
                    listed.append(_vma_span(v))
                    v = v.vm_next
                tree = [_vma_span(Object(k, "struct vm_area_struct",
                                         node.value_() - k.types.find_type(
                                             "struct vm_area_struct").offsetof("vm_rb")))
                        for node in rbtree_inorder_for_each(mm.mm_rb.address_of_())]
                assert tree == listed, pid
                vmas = listed
            if ex.filtered and k.warnings:
                vmas = None     # part of the tree sat on a filtered page
                k.warnings.clear()
        if vmas is None:
            continue
        want = [tuple(int(x, 16) for x in line.split()[0].split("-")) for line in proc["maps"]]
        assert vmas == want, pid
        n += 1
    assert n >= 1 or ex.filtered    # 6.12 kdump: maple nodes sit on filtered slab pages


@pytest.mark.fixtures
def test_modules_list(kernel):
    fx, k = kernel
    head = k.var("modules").address_of_()
    names = [m.name.string_().decode() for m in list_for_each_entry("struct module", head, "list")]
    # /proc/modules lists newest first, like the kernel list
    assert names == fx.truth["modules"]
    rev = [m.name.string_().decode()
           for m in list_for_each_entry_reverse("struct module", head, "list")]
    assert rev == names[::-1]
    assert list_count_nodes(head) == len(names) and not list_empty(head)
    validate_list(head)


@pytest.mark.fixtures
def test_running_tasks(kernel):
    fx, k = kernel
    for cpu in k.online_cpus():
        assert idle_task(k, cpu).pid.value_() == 0
        curr = cpu_curr(k, cpu)
        assert task_cpu(curr) == cpu
    panic_pid = fx.truth.get("panic_pid")
    if panic_pid:
        assert panic_pid in {cpu_curr(k, c).pid.value_() for c in k.online_cpus()}


@pytest.mark.fixtures
def test_rbtree_inorder_agrees_with_rb_next(kernel):
    fx, k = kernel
    # every CPU's CFS timeline is an rb_root_cached of sched_entity run_node
    from kql.helpers.sched import cpu_rq
    total = 0
    for cpu in k.online_cpus():
        root = cpu_rq(k, cpu).cfs.tasks_timeline.address_of_()
        nodes = [n.value_() for n in rbtree_inorder_for_each(root)]
        walked = []
        node = rb_first(root)
        while node.value_() and len(walked) < 10000:
            walked.append(node.value_())
            node = rb_next(node)
        assert nodes == walked
        total += len(nodes)
    # 6.1 vmalloc areas sit in one rbtree sorted by address (6.9+ split it per node)
    if k.symbols.get("vmap_area_root") is not None:
        from kql.helpers.rbtree import rbtree_inorder_for_each_entry
        root = k.var("vmap_area_root", "struct rb_root").address_of_()
        starts = [va.va_start.value_()
                  for va in rbtree_inorder_for_each_entry("struct vmap_area", root, "rb_node")]
        assert len(starts) > 10 and starts == sorted(starts)
        nodes = [n.value_() for n in rbtree_inorder_for_each(root)]
        walked = []
        node = rb_first(root)
        while node.value_() and len(walked) < 100000:
            walked.append(node.value_())
            node = rb_next(node)
        assert walked == nodes
        from kql.helpers.rbtree import rb_last, rb_prev
        back = []
        node = rb_last(root)
        while node.value_() and len(back) < 100000:
            back.append(node.value_())
            node = rb_prev(node)
        assert back == nodes[::-1]


# -- corrupted lists, on purpose ----------------------------------------------------------

class _Mem:
    BASE = 0x1000
    from kql.arch.x86_64 import ARCH as arch    # word size of the walks

    def __init__(self, size):
        self.mem = bytearray(size)
        self.cache = {}
        self.warnings = []
        lh = Type("struct", "list_head", 16)
        lh._members = [Member("next", pointer_to(lh), 0), Member("prev", pointer_to(lh), 64)]
        hn = Type("struct", "hlist_node", 16)
        hn._members = [Member("next", pointer_to(hn), 0), Member("pprev", pointer_to(pointer_to(hn)), 64)]
        item = Type("struct", "item", 24, members=[Member("id", builtin_type("int"), 0),
                                                   Member("node", lh, 64)])
        named = {("struct", "list_head"): lh, ("struct", "item"): item,
                 ("struct", "hlist_node"): hn}

        class Types(TypeSourceBase):
            def _find_named(self, kind, name):
                return named.get((kind, name))

        self.types = Types()

    def read(self, addr, size):
        off = addr - self.BASE
        if off < 0 or off + size > len(self.mem):
            raise FaultError(addr, f"cannot read {addr:#x}")
        return bytes(self.mem[off:off + size])

    def read_pointer(self, addr):
        return struct.unpack("<Q", self.read(addr, 8))[0]

    def put(self, addr, value):
        struct.pack_into("<Q", self.mem, addr - self.BASE, value)

    def warn(self, msg):
        self.warnings.append(msg)


def _items(m, n):
    """head at BASE, item i at BASE + 0x100 + 0x20*i, linked in a ring."""
    head = m.BASE
    nodes = [m.BASE + 0x100 + 0x20 * i + 8 for i in range(n)]
    ring = [head] + nodes
    for i, a in enumerate(ring):
        m.put(a, ring[(i + 1) % len(ring)])
        m.put(a + 8, ring[i - 1])
    for i in range(n):
        struct.pack_into("<i", m.mem, nodes[i] - 8 - m.BASE, i)
    return head, nodes


def test_list_cycle_not_through_head_terminates():
    m = _Mem(0x1000)
    head, nodes = _items(m, 5)
    m.put(nodes[4], nodes[2])             # 4 -> 2: a loop that never returns to head
    h = Object(m, "struct list_head", head).address_of_()
    ids = [e.id.value_() for e in list_for_each_entry("struct item", h, "node")]
    assert ids == [0, 1, 2, 3, 4]
    assert len(m.warnings) == 1 and "cycle" in m.warnings[0]
    with pytest.raises(ValidationError):
        validate_list(h)


def test_list_null_and_unreadable_next():
    m = _Mem(0x1000)
    head, nodes = _items(m, 3)
    m.put(nodes[1], 0)
    h = Object(m, "struct list_head", head).address_of_()
    # node 2 comes back through head->prev
    assert [e.id.value_() for e in list_for_each_entry("struct item", h, "node")] == [0, 1, 2]
    assert "NULL" in m.warnings[0] and "recovered 1" in m.warnings[1]
    m.put(nodes[1], 0xDEAD0000)       # an unreadable node is not yielded
    assert [e.id.value_() for e in list_for_each_entry("struct item", h, "node")] == [0, 1, 2]
    assert "unreadable" in m.warnings[2]


def test_list_node_removed_while_walked():
    """A running kernel list_del()s node 2 after we read node 1's next: its
    poisoned next ends the forward walk (node 2 is not yielded) and the
    neighbours' new links give the rest backwards."""
    m = _Mem(0x1000)
    head, nodes = _items(m, 5)
    h = Object(m, "struct list_head", head).address_of_()
    it = list_for_each_entry("struct item", h, "node")
    first = [next(it).id.value_(), next(it).id.value_()]   # at node 1, its next (2) read
    m.put(nodes[1], nodes[3])                     # __list_del(): the neighbours skip it ...
    m.put(nodes[3] + 8, nodes[1])
    m.put(nodes[2], 0xDEAD000000000100)           # ... and its own links are poisoned
    m.put(nodes[2] + 8, 0xDEAD000000000122)
    assert first + [e.id.value_() for e in it] == [0, 1, 3, 4]
    assert m.warnings == [
        f"list_for_each_entry(struct item.node): node {nodes[2]:#x} was removed from the list "
        f"at {head:#x} after 2 nodes (LIST_POISON)",
        f"list_for_each_entry(struct item.node): recovered 2 nodes of the list at {head:#x} "
        f"by walking it backwards"]


def test_list_tail_recovered_backwards():
    m = _Mem(0x1000)
    head, nodes = _items(m, 6)
    m.put(nodes[2], 0xDEAD0000)       # the forward walk breaks after node 2...
    m.put(nodes[3] + 8, 0xDEAD0000)   # ...and the backward one after node 3
    h = Object(m, "struct list_head", head).address_of_()
    ids = [e.id.value_() for e in list_for_each_entry("struct item", h, "node")]
    assert ids == [0, 1, 2, 3, 4, 5]
    assert "recovered 3" in m.warnings[-1]


def test_hlist_cycle():
    m = _Mem(0x1000)
    head = m.BASE
    a, b = m.BASE + 0x100, m.BASE + 0x200
    m.put(head, a + 8)
    m.put(a + 8, b + 8)
    m.put(b + 8, a + 8)
    h = Object(m, pointer_to(m.types.find_type("struct list_head")), value=head)
    ids = [e.value_() for e in hlist_for_each_entry("struct item", h, "node")]
    assert ids == [a, b] and "cycle" in m.warnings[0]


# -- xarray on synthetic memory ---------------------------------------------------------

def _xa_mem():
    """struct xa_node {u8 shift @0; void *slots[64] @40}; struct xarray {xa_head @8};
    struct idr {struct xarray idr_rt @0; unsigned int idr_base @16}."""
    m = _Mem(0x10000)
    u8 = builtin_type("unsigned char")
    void_p = pointer_to(Type("void"))
    from kql.types import array_of
    node = Type("struct", "xa_node", 40 + 64 * 8 + 48, members=[
        Member("shift", u8, 0), Member("slots", array_of(void_p, 64), 40 * 8)])
    xa = Type("struct", "xarray", 16, members=[Member("xa_head", void_p, 64)])
    idr = Type("struct", "idr", 24, members=[Member("idr_rt", xa, 0),
                                             Member("idr_base", builtin_type("unsigned int"), 128),
                                             Member("idr_next", builtin_type("unsigned int"), 160)])
    named = {("struct", "xa_node"): node, ("struct", "xarray"): xa, ("struct", "idr"): idr}
    old = m.types._find_named

    class Types(TypeSourceBase):
        def _find_named(self, kind, name):
            return named.get((kind, name)) or old(kind, name)

    m.types = Types()
    m.read_u8 = lambda a: m.read(a, 1)[0]
    m.read_u32 = lambda a: struct.unpack("<I", m.read(a, 4))[0]
    return m


def test_xarray_two_levels_siblings_and_cycle():
    from kql.helpers.xarray import idr_find, idr_for_each, xa_for_each, xa_load
    m = _xa_mem()
    base = m.BASE
    idr_addr = base
    root, leaf0, leaf2 = base + 0x1000, base + 0x2000, base + 0x3000
    m.put(idr_addr + 8, root + 2)                 # xa_head -> root node (internal tag 2)
    struct.pack_into("<I", m.mem, idr_addr + 16 - base, 1)     # idr_base = 1
    m.mem[root - base] = 6                        # root: shift 6, slots 0 and 2 -> leaves
    m.put(root + 40, leaf0 + 2)
    m.put(root + 40 + 16, leaf2 + 2)
    m.mem[leaf0 - base] = 0
    m.mem[leaf2 - base] = 0
    m.put(leaf0 + 40 + 8 * 5, 0xAAAA0)            # index 5
    m.put(leaf0 + 40 + 8 * 6, (5 << 2) | 2)       # index 6: sibling of slot 5
    m.put(leaf2 + 40 + 8 * 1, 0xBBBB0)            # index 2*64 + 1 = 129
    m.put(leaf2 + 40 + 8 * 2, (256 << 2) | 2)       # retry entry: skipped
    xa = Object(m, "struct xarray", idr_addr).address_of_()
    assert list(xa_for_each(xa)) == [(5, 0xAAAA0), (129, 0xBBBB0)]
    assert xa_load(xa, 5) == 0xAAAA0 and xa_load(xa, 6) == 0xAAAA0   # sibling resolves
    assert xa_load(xa, 129) == 0xBBBB0 and xa_load(xa, 7) == 0 and xa_load(xa, 1 << 20) == 0
    idr = Object(m, "struct idr", idr_addr).address_of_()
    assert list(idr_for_each(idr)) == [(6, 0xAAAA0), (130, 0xBBBB0)]
    assert idr_find(idr, 6) == 0xAAAA0 and idr_find(idr, 5) == 0 and idr_find(idr, 0) == 0
    # a child pointing back at the root: the walk ends with a warning
    m.put(leaf2 + 40 + 8 * 3, root + 2)
    m.mem[leaf2 - base] = 6
    entries = list(xa_for_each(xa))
    assert entries[0] == (5, 0xAAAA0) and any("cycle" in w for w in m.warnings)


# -- maple tree on synthetic memory -------------------------------------------------------

def _maple_mem():
    """Real 64-bit layouts: maple_range_64 {parent; pivot[15] @8; slot[16] @128},
    maple_arange_64 {parent; pivot[9] @8; slot[10] @80; ...}, nodes 256 bytes."""
    from kql.types import array_of
    m = _Mem(0x10000)
    ulong = builtin_type("unsigned long")
    void_p = pointer_to(Type("void"))
    r64 = Type("struct", "maple_range_64", 256, members=[
        Member("pivot", array_of(ulong, 15), 64), Member("slot", array_of(void_p, 16), 128 * 8)])
    a64 = Type("struct", "maple_arange_64", 256, members=[
        Member("pivot", array_of(ulong, 9), 64), Member("slot", array_of(void_p, 10), 80 * 8)])
    node = Type("struct", "maple_node", 256, members=[Member("slot", array_of(void_p, 31), 64)])
    tree = Type("struct", "maple_tree", 16, members=[Member("ma_root", void_p, 64)])
    enum = Type("enum", "maple_type", 4, enumerators=[
        ("maple_dense", 0), ("maple_leaf_64", 1), ("maple_range_64", 2), ("maple_arange_64", 3)])
    named = {("struct", "maple_range_64"): r64, ("struct", "maple_arange_64"): a64,
             ("struct", "maple_node"): node, ("struct", "maple_tree"): tree,
             ("enum", "maple_type"): enum}

    class Types(TypeSourceBase):
        def _find_named(self, kind, name):
            return named.get((kind, name))

    m.types = Types()
    return m


def test_maple_tree_ranges_and_cycle():
    from kql.helpers.mapletree import mt_for_each, mtree_load
    m = _maple_mem()
    tree = m.BASE
    root, leaf_a, leaf_b = m.BASE + 0x1000, m.BASE + 0x1100, m.BASE + 0x1200
    enc = lambda node, typ: node | (typ << 3)            # noqa: E731
    m.put(tree + 8, enc(root, 3) | 2)                    # ma_root: arange_64 root, xa tag
    m.put(root + 8, 0x1FFF)                              # pivot[0]: leaf_a covers 0..0x1fff
    m.put(root + 16, (1 << 64) - 1)                      # pivot[1]: leaf_b up to the max
    m.put(root + 80, enc(leaf_a, 1))                     # children: bare enodes
    m.put(root + 88, enc(leaf_b, 1))                     # slot 1: leaf_b covers 0x2000..max
    # leaf_a: [0, 0xfff] empty, [0x1000, 0x1fff] -> A
    m.put(leaf_a + 8, 0xFFF)
    m.put(leaf_a + 16, 0x1FFF)
    m.put(leaf_a + 128 + 8, 0xA000)
    # leaf_b: [0x2000, 0x2fff] -> B, [0x3000, max] empty; pivot 0 ends the data
    m.put(leaf_b + 8, 0x2FFF)
    m.put(leaf_b + 16, (1 << 64) - 1)
    m.put(leaf_b + 128, 0xB000)
    t = Object(m, "struct maple_tree", tree).address_of_()
    assert list(mt_for_each(t)) == [(0x1000, 0x1FFF, 0xA000), (0x2000, 0x2FFF, 0xB000)]
    assert mtree_load(t, 0x1800) == 0xA000 and mtree_load(t, 0x10) == 0
    assert m.warnings == []
    m.put(leaf_b + 128 + 8, enc(root, 3))     # corrupt: a leaf slot is not followed
    m.put(root + 96, enc(root, 3))            # an internal slot pointing at its own node
    m.put(root + 16, 0x3FFF)                  # (slot 1 now ends early so slot 2 is reached)
    m.put(root + 24, (1 << 64) - 1)
    list(mt_for_each(t))
    assert any("cycle" in w for w in m.warnings)
