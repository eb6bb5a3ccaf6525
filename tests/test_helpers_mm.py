"""kql.helpers.mm and the trees under it (maple tree, rbtree) against the
guest's /proc/PID/maps, cmdline and environ (truth.json)."""

import pytest

from fixtures import (Excluded, check_missing_tasks, fixture, kernel,
                      skipped_pids as _skip)
from kql.errors import FaultError, ExcludedPageError
from kql.helpers.mapletree import mt_for_each_entry
from kql.helpers.mm import for_each_vma, task_cmdline_bytes, task_environ_bytes, vma_maps_line
from kql.helpers.pid import find_task
from kql.helpers.rbtree import rbtree_inorder_for_each
from kql.object import Object

# the fixtures whose processes the truth lists, those whose user pages were
# filtered (-d 31) among them (tests/test_files_vm.py)
from test_files_vm import FILTERED, PROCESS_FIXTURES, _gone  # noqa: E402


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


@pytest.mark.fixtures
def test_vma_maps_line_helper():
    """vma_maps_line() renders whole lines exactly, pid 1 included."""
    name = "6.12-live"
    k = kernel(name)
    truth = fixture(name).truth
    for pid in (1, max(int(p) for p, v in truth["processes"].items() if v["maps"]
                       and int(p) not in _gone(truth))):
        task = find_task(k, pid)
        assert [vma_maps_line(v, task.mm) for v in for_each_vma(task.mm)] == \
            truth["processes"][str(pid)]["maps"]


@pytest.mark.parametrize("name", PROCESS_FIXTURES)
@pytest.mark.fixtures
def test_cmdline_environ_helpers(name):
    """/proc/PID/cmdline and environ byte for byte on unfiltered dumps; on
    -d 31 dumps every process with an mm raises (-> NULL), never garbage."""
    k = kernel(name)
    truth = fixture(name).truth
    checked = 0
    unreadable = []
    for pid, p in truth["processes"].items():
        pid = int(pid)
        if pid in _gone(truth):
            continue
        try:
            task = find_task(k, pid)  # a helper raises; tables make it NULL + a warning
            has_mm = bool(task.mm.value_())
        except ExcludedPageError:
            unreadable.append(pid)    # its pid idr path or task_struct was filtered
            continue
        if name in FILTERED and has_mm:
            with pytest.raises(FaultError):
                task_cmdline_bytes(task)
            with pytest.raises(FaultError):
                task_environ_bytes(task)
            checked += 1
            continue
        cmd = task_cmdline_bytes(task)
        env = task_environ_bytes(task)
        if not has_mm:            # kernel thread or zombie: /proc shows nothing
            assert cmd is None and env is None and p["cmdline"] == ""
            continue
        assert cmd == p["cmdline"].encode("latin-1"), pid
        if "environ" in p:
            assert env == p["environ"].encode("latin-1"), pid
        checked += 1
    check_missing_tasks(fixture(name), k, unreadable)
    assert checked + len(unreadable) >= sum(1 for v in truth["processes"].values() if v["maps"]) - 1
