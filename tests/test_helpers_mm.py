"""kql.helpers.mm and the trees under it (maple tree, rbtree) against the
guest's /proc/PID/maps (truth.json)."""

import pytest

from fixtures import Excluded, skipped_pids as _skip
from kql.helpers.mapletree import mt_for_each_entry
from kql.helpers.pid import find_task
from kql.helpers.rbtree import rbtree_inorder_for_each
from kql.object import Object


def _vma_span(v):
    return v.vm_start.value_(), v.vm_end.value_()


@pytest.mark.fixtures
def test_vmas_from_maple_tree_or_list_and_rbtree(dump_kernel):
    """/proc/<pid>/maps from the maple tree (6.1+), or before it from both the
    mm->mmap list and the mm->mm_rb tree (each must give every VMA)."""
    fx, k = dump_kernel
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
