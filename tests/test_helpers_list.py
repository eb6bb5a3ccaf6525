"""kql.helpers.list: the module list of each fixture against /proc/modules,
and lists corrupted on purpose in the fake kernel (cycles, NULL and
unreadable links: bounded walks with warnings)."""

import struct

import pytest

from fakekernel import FakeKernel, list_types
from kql.helpers.list import (
    hlist_for_each_entry, list_count_nodes, list_empty, list_for_each_entry,
    list_for_each_entry_reverse, validate_list, ValidationError,
)
from kql.object import Object
from kql.types import pointer_to


@pytest.mark.fixtures
def test_modules_list(dump_kernel):
    fx, k = dump_kernel
    head = k.var("modules").address_of_()
    names = [m.name.string_().decode() for m in list_for_each_entry("struct module", head, "list")]
    # /proc/modules lists newest first, like the kernel list
    assert names == fx.truth["modules"]
    rev = [m.name.string_().decode()
           for m in list_for_each_entry_reverse("struct module", head, "list")]
    assert rev == names[::-1]
    assert list_count_nodes(head) == len(names) and not list_empty(head)
    validate_list(head)


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
    m = FakeKernel(0x1000, list_types())
    head, nodes = _items(m, 5)
    m.put(nodes[4], nodes[2])             # 4 -> 2: a loop that never returns to head
    h = Object(m, "struct list_head", head).address_of_()
    ids = [e.id.value_() for e in list_for_each_entry("struct item", h, "node")]
    assert ids == [0, 1, 2, 3, 4]
    assert len(m.warnings) == 1 and "cycle" in m.warnings[0]
    with pytest.raises(ValidationError):
        validate_list(h)


def test_list_null_and_unreadable_next():
    m = FakeKernel(0x1000, list_types())
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
    m = FakeKernel(0x1000, list_types())
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
    m = FakeKernel(0x1000, list_types())
    head, nodes = _items(m, 6)
    m.put(nodes[2], 0xDEAD0000)       # the forward walk breaks after node 2...
    m.put(nodes[3] + 8, 0xDEAD0000)   # ...and the backward one after node 3
    h = Object(m, "struct list_head", head).address_of_()
    ids = [e.id.value_() for e in list_for_each_entry("struct item", h, "node")]
    assert ids == [0, 1, 2, 3, 4, 5]
    assert "recovered 3" in m.warnings[-1]


def test_hlist_cycle():
    m = FakeKernel(0x1000, list_types())
    head = m.BASE
    a, b = m.BASE + 0x100, m.BASE + 0x200
    m.put(head, a + 8)
    m.put(a + 8, b + 8)
    m.put(b + 8, a + 8)
    h = Object(m, pointer_to(m.types.find_type("struct list_head")), value=head)
    ids = [e.value_() for e in hlist_for_each_entry("struct item", h, "node")]
    assert ids == [a, b] and "cycle" in m.warnings[0]
