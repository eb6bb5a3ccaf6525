"""kql.helpers.mapletree on a maple tree built in the fake kernel (real
64-bit node layouts): ranges, lookups, a cycle."""

from fakekernel import FakeKernel
from kql.object import Object
from kql.types import Member, Type, array_of, builtin_type, pointer_to


def _maple_mem():
    """Real 64-bit layouts: maple_range_64 {parent; pivot[15] @8; slot[16] @128},
    maple_arange_64 {parent; pivot[9] @8; slot[10] @80; ...}, nodes 256 bytes."""
    m = FakeKernel(0x10000)
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
    m.named.update({("struct", "maple_range_64"): r64, ("struct", "maple_arange_64"): a64,
                    ("struct", "maple_node"): node, ("struct", "maple_tree"): tree,
                    ("enum", "maple_type"): enum})
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
