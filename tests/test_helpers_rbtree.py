"""kql.helpers.rbtree on each fixture: in-order walks agree with
rb_first/rb_next and rb_last/rb_prev (CFS timelines, vmalloc areas)."""

import pytest

from kql.helpers.rbtree import (rb_first, rb_last, rb_next, rb_prev, rbtree_inorder_for_each,
                                rbtree_inorder_for_each_entry)
from kql.helpers.sched import cpu_rq


def _stepped(node, step, limit: int = 100_000) -> list[int]:
    """Node addresses from ``node`` on, by ``step`` (rb_next / rb_prev)."""
    out = []
    while node.value_() and len(out) < limit:
        out.append(node.value_())
        node = step(node)
    return out


@pytest.mark.fixtures
def test_rbtree_inorder_agrees_with_rb_next(dump_kernel):
    fx, k = dump_kernel
    # every CPU's CFS timeline is an rb_root_cached of sched_entity run_node
    for cpu in k.online_cpus():
        root = cpu_rq(k, cpu).cfs.tasks_timeline.address_of_()
        nodes = [n.value_() for n in rbtree_inorder_for_each(root)]
        assert nodes == _stepped(rb_first(root), rb_next)
    # 6.1 vmalloc areas sit in one rbtree sorted by address (6.9+ split it per node)
    if k.symbols.get("vmap_area_root") is not None:
        root = k.var("vmap_area_root").address_of_()
        starts = [va.va_start.value_()
                  for va in rbtree_inorder_for_each_entry("struct vmap_area", root, "rb_node")]
        assert len(starts) > 10 and starts == sorted(starts)
        nodes = [n.value_() for n in rbtree_inorder_for_each(root)]
        assert _stepped(rb_first(root), rb_next) == nodes
        assert _stepped(rb_last(root), rb_prev) == nodes[::-1]
