"""kql.helpers.xarray on an XArray / IDR built in the fake kernel: two
levels, sibling and retry entries, a cycle."""

import struct

from fakekernel import FakeKernel
from kql.object import Object
from kql.types import Member, Type, array_of, builtin_type, pointer_to


def _xa_mem():
    """struct xa_node {u8 shift @0; void *slots[64] @40}; struct xarray {xa_head @8};
    struct idr {struct xarray idr_rt @0; unsigned int idr_base @16}."""
    m = FakeKernel(0x10000)
    u8 = builtin_type("unsigned char")
    void_p = pointer_to(Type("void"))
    node = Type("struct", "xa_node", 40 + 64 * 8 + 48, members=[
        Member("shift", u8, 0), Member("slots", array_of(void_p, 64), 40 * 8)])
    xa = Type("struct", "xarray", 16, members=[Member("xa_head", void_p, 64)])
    idr = Type("struct", "idr", 24, members=[Member("idr_rt", xa, 0),
                                             Member("idr_base", builtin_type("unsigned int"), 128),
                                             Member("idr_next", builtin_type("unsigned int"), 160)])
    m.named.update({("struct", "xa_node"): node, ("struct", "xarray"): xa,
                    ("struct", "idr"): idr})
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
