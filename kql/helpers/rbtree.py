"""Red-black trees (``struct rb_root``, ``struct rb_root_cached``), lib/rbtree.c.

Walks are bounded and cycle-safe (a node seen twice ends the walk with a
warning on the kernel).
"""

from __future__ import annotations

from typing import Iterator

from kql.errors import FaultError
from kql.helpers.list import DEFAULT_LIMIT, _ptr, _ptr_type, walk_warn
from kql.object import Object
from kql.types import Type, pointer_to

__all__ = ["rb_first", "rb_last", "rb_next", "rb_prev", "rb_parent",
           "rbtree_inorder_for_each", "rbtree_inorder_for_each_entry", "RB_EMPTY_ROOT"]


def _offsets(kernel) -> tuple[int, int, int]:
    offs = kernel.cache.get("rb_node_offsets")
    if offs is None:
        t = kernel.types.find_type("struct rb_node")
        offs = kernel.cache["rb_node_offsets"] = (
            t.offsetof("__rb_parent_color"), t.offsetof("rb_right"), t.offsetof("rb_left"))
    return offs


def _root_node(root: Object) -> int:
    """Address of the top node of an rb_root / rb_root_cached (or pointers to them)."""
    t = root._t
    if t.kind == "pointer":
        t = t.target.strip_typedefs()
        base = root.value_()
    else:
        base = root.address_
    if t.name == "rb_root_cached":
        base += t.offsetof("rb_root")
    # struct rb_root { struct rb_node *rb_node; }
    return root.prog_.read_pointer(base)


def _node_ptr(kernel, addr: int) -> Object:
    pt = pointer_to(kernel.types.find_type("struct rb_node"))
    return _ptr(kernel, pt, addr)


def RB_EMPTY_ROOT(root: Object) -> bool:
    """:param root: ``struct rb_root *``"""
    return _root_node(root) == 0


def _extreme(kernel, node: int, side: int) -> int:
    seen = set()
    while True:
        child = kernel.read_pointer(node + side)
        if not child or child in seen:
            return node
        seen.add(child)
        node = child


def rb_first(root: Object) -> Object:
    """Leftmost node (NULL if empty).

    :param root: ``struct rb_root *``
    :return: ``struct rb_node *``
    """
    kernel = root.prog_
    _, _, left = _offsets(kernel)
    node = _root_node(root)
    return _node_ptr(kernel, _extreme(kernel, node, left) if node else 0)


def rb_last(root: Object) -> Object:
    """Rightmost node (NULL if empty).

    :param root: ``struct rb_root *``
    :return: ``struct rb_node *``
    """
    kernel = root.prog_
    _, right, _ = _offsets(kernel)
    node = _root_node(root)
    return _node_ptr(kernel, _extreme(kernel, node, right) if node else 0)


def rb_parent(node: Object) -> Object:
    """:param node: ``struct rb_node *``
    :return: ``struct rb_node *``"""
    kernel = node.prog_
    pc, _, _ = _offsets(kernel)
    return _node_ptr(kernel, kernel.read_pointer(node.value_() + pc) & ~3)


def _next(kernel, node: int, fwd: bool) -> int:
    pc, right, left = _offsets(kernel)
    a, b = (right, left) if fwd else (left, right)
    child = kernel.read_pointer(node + a)
    if child:
        return _extreme(kernel, child, b)
    for _ in range(128):       # an rb tree is at most 2*log2(n) deep
        parent = kernel.read_pointer(node + pc) & ~3
        if not parent:
            return 0
        if kernel.read_pointer(parent + a) != node:
            return parent
        node = parent
    return 0


def rb_next(node: Object) -> Object:
    """In-order successor (NULL at the end).

    :param node: ``struct rb_node *``
    :return: ``struct rb_node *``
    """
    return _node_ptr(node.prog_, _next(node.prog_, node.value_(), True))


def rb_prev(node: Object) -> Object:
    """In-order predecessor (NULL at the start).

    :param node: ``struct rb_node *``
    :return: ``struct rb_node *``
    """
    return _node_ptr(node.prog_, _next(node.prog_, node.value_(), False))


def _inorder(kernel, top: int, limit: int, what: str) -> Iterator[int]:
    _, right, left = _offsets(kernel)
    read_pointer = kernel.read_pointer
    stack: list[int] = []
    seen: set[int] = set()
    node = top
    n = 0
    try:
        while stack or node:
            while node:
                if node in seen:
                    walk_warn(kernel, f"{what}: cycle at rb_node {node:#x}")
                    return
                seen.add(node)
                stack.append(node)
                node = read_pointer(node + left)
            node = stack.pop()
            if n >= limit:
                walk_warn(kernel, f"{what}: more than {limit} nodes; stopped")
                return
            n += 1
            yield node
            node = read_pointer(node + right)
    except FaultError as e:
        walk_warn(kernel, f"{what}: unreadable rb_node after {n} nodes: {e}")


def rbtree_inorder_for_each(root: Object, *, limit: int = DEFAULT_LIMIT) -> Iterator[Object]:
    """Nodes of an rb tree in order.

    :param root: ``struct rb_root *`` (or ``struct rb_root_cached *``)
    :return: iterator of ``struct rb_node *``
    """
    kernel = root.prog_
    pt = pointer_to(kernel.types.find_type("struct rb_node"))
    for node in _inorder(kernel, _root_node(root), limit, "rbtree_inorder_for_each"):
        yield _ptr(kernel, pt, node)


def rbtree_inorder_for_each_entry(type: "Type | str", root: Object, member: str, *,
                                  limit: int = DEFAULT_LIMIT) -> Iterator[Object]:
    """Entries of an rb tree in order.

    :param type: entry type
    :param root: ``struct rb_root *`` (or ``struct rb_root_cached *``)
    :param member: name of the ``struct rb_node`` member of ``type``
    :return: iterator of ``type *``
    """
    kernel = root.prog_
    t, ptype = _ptr_type(kernel, type)
    off = t.offsetof(member)
    for node in _inorder(kernel, _root_node(root), limit,
                         f"rbtree_inorder_for_each_entry({t}.{member})"):
        yield _ptr(kernel, ptype, node - off)
