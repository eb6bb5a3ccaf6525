"""kql.helpers.rbtree on each fixture: in-order walks agree with
rb_first/rb_next and rb_last/rb_prev (CFS timelines, vmalloc areas)."""

import pytest

from kql.helpers.rbtree import rb_first, rb_next, rbtree_inorder_for_each


@pytest.mark.fixtures
def test_rbtree_inorder_agrees_with_rb_next(dump_kernel):
    fx, k = dump_kernel
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
