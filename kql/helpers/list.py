"""Doubly linked lists (``struct list_head``) and hash lists (``struct hlist_head``).

Mirrors include/linux/list.h.  Every walk is bounded and cycle-safe: a node
seen twice, a NULL ``next`` or an unreadable node ends the walk with a
warning on the kernel (``kernel.warn``), never a hang.  Only an unreadable
list *head* raises :class:`~kql.errors.FaultError` (the caller's object is
bad, not the list).
"""

from __future__ import annotations

from typing import Iterator

from kql.errors import FaultError
from kql.object import Object
from kql.types import Type, pointer_to

__all__ = [
    "list_empty", "list_is_singular", "list_first_entry", "list_last_entry",
    "list_for_each", "list_for_each_reverse", "list_for_each_entry",
    "list_for_each_entry_reverse", "list_count_nodes", "hlist_empty",
    "hlist_for_each", "hlist_for_each_entry", "validate_list", "ValidationError",
    "walk_warn", "DEFAULT_LIMIT", "is_list_poison",
]

#: Upper bound on nodes visited by one walk (a cycle is caught much earlier).
DEFAULT_LIMIT = 10_000_000


def is_list_poison(value: int) -> bool:
    """True for LIST_POISON1/2 (0x100/0x122 + POISON_POINTER_DELTA, 0 or
    0xdead000000000000): what list_del() and list_del_rcu() leave behind,
    so a node being walked on a running kernel was just removed."""
    return value & 0xFFFF in (0x100, 0x122) and value >> 16 in (0, 0xDEAD00000000)


class ValidationError(Exception):
    """A list is corrupt (raised by ``validate_*`` helpers only)."""


def walk_warn(kernel, message: str) -> None:
    """Record a walk problem on the kernel (``kernel.warn``) or as a Python warning."""
    warn = getattr(kernel, "warn", None)
    if warn is not None:
        warn(message)
    else:  # pragma: no cover - every Kernel has warn()
        import warnings
        warnings.warn(message, stacklevel=3)


def _addr(obj: "Object") -> int:
    """Address of the list_head/hlist_head: a pointer's value or a reference's address."""
    if obj._t.kind == "pointer":
        return obj.value_()
    if obj.address_ is None:
        raise ValueError("list head must be a reference or a pointer")
    return obj.address_


def _ptr_type(kernel, type: "Type | str") -> tuple[Type, Type]:
    t = kernel.types.find_type(type) if isinstance(type, str) else type
    return t, pointer_to(t)


def _ptr(kernel, ptype: Type, value: int) -> Object:
    return Object._make(kernel, ptype, ptype, None, value)


def _list_head_type(kernel) -> Type:
    return kernel.types.find_type("struct list_head")


def _next_prev(kernel) -> tuple[int, int]:
    cache = kernel.cache
    offs = cache.get("list_head_offsets")
    if offs is None:
        lh = _list_head_type(kernel)
        offs = cache["list_head_offsets"] = (lh.offsetof("next"), lh.offsetof("prev"))
    return offs


def list_empty(head: Object) -> bool:
    """``list_empty()``.

    :param head: ``struct list_head *``
    """
    addr = _addr(head)
    nxt, _ = _next_prev(head.prog_)
    return head.prog_.read_pointer(addr + nxt) == addr


def list_is_singular(head: Object) -> bool:
    """``list_is_singular()``.

    :param head: ``struct list_head *``
    """
    kernel = head.prog_
    addr = _addr(head)
    nxt, prv = _next_prev(kernel)
    first = kernel.read_pointer(addr + nxt)
    return first != addr and first == kernel.read_pointer(addr + prv)


def _walk(kernel, head: int, offset: int, limit: int, what: str) -> Iterator[int]:
    """Addresses of the nodes after ``head`` following the pointer at ``offset``
    (``next`` or ``prev`` of a ``struct list_head``).

    When a node is unreadable (or a pointer is NULL) the rest of the list is
    recovered by walking from ``head`` the other way, so one filtered page
    costs one node, not the tail of the list.
    """
    read_pointer = kernel.read_pointer
    seen = set()
    pos = read_pointer(head + offset)   # an unreadable head is the caller's FaultError
    n = 0
    while pos != head:
        if not pos:
            walk_warn(kernel, f"{what}: NULL pointer in list at {head:#x} after {n} nodes")
            break
        if pos in seen:
            walk_warn(kernel, f"{what}: cycle in list at {head:#x}: node {pos:#x} seen twice "
                            f"after {n} nodes")
            return
        if n >= limit:
            walk_warn(kernel, f"{what}: list at {head:#x} longer than {limit} nodes; stopped")
            return
        seen.add(pos)
        try:
            nxt = read_pointer(pos + offset)   # an unreadable node is not yielded
        except FaultError as e:
            walk_warn(kernel, f"{what}: node {pos:#x} unreadable after {n} nodes: {e}")
            break
        if is_list_poison(nxt):
            # list_del() poisoned it: on a running kernel, removed while we walked
            walk_warn(kernel, f"{what}: node {pos:#x} was removed from the list at {head:#x} "
                              f"after {n} nodes (LIST_POISON)")
            break
        n += 1
        yield pos
        pos = nxt
    else:
        return
    # broken link: collect the tail from the other end
    back = 8 - offset if offset in (0, 8) else None
    if back is None:
        return
    tail = []
    try:
        pos = read_pointer(head + back)
        while pos != head and pos and pos not in seen and n + len(tail) < limit:
            seen.add(pos)
            nxt = read_pointer(pos + back)
            tail.append(pos)
            pos = nxt
    except FaultError:
        pass
    if tail:
        walk_warn(kernel, f"{what}: recovered {len(tail)} nodes of the list at {head:#x} "
                        f"by walking it backwards")
    yield from reversed(tail)


def list_for_each(head: Object, *, limit: int = DEFAULT_LIMIT) -> Iterator[Object]:
    """Iterate over the nodes of a list.

    :param head: ``struct list_head *``
    :return: iterator of ``struct list_head *``
    """
    kernel = head.prog_
    nxt, _ = _next_prev(kernel)
    ptype = pointer_to(_list_head_type(kernel))
    for pos in _walk(kernel, _addr(head), nxt, limit, "list_for_each"):
        yield _ptr(kernel, ptype, pos)


def list_for_each_reverse(head: Object, *, limit: int = DEFAULT_LIMIT) -> Iterator[Object]:
    """Iterate over the nodes of a list backwards.

    :param head: ``struct list_head *``
    :return: iterator of ``struct list_head *``
    """
    kernel = head.prog_
    _, prv = _next_prev(kernel)
    ptype = pointer_to(_list_head_type(kernel))
    for pos in _walk(kernel, _addr(head), prv, limit, "list_for_each_reverse"):
        yield _ptr(kernel, ptype, pos)


def list_for_each_entry(type: "Type | str", head: Object, member: str, *,
                        limit: int = DEFAULT_LIMIT) -> Iterator[Object]:
    """Iterate over the entries of a list.

    :param type: entry type, e.g. ``"struct task_struct"``
    :param head: ``struct list_head *``
    :param member: name of the ``struct list_head`` member of ``type`` (a path
        such as ``"se.group_node"`` works)
    :return: iterator of ``type *``
    """
    kernel = head.prog_
    t, ptype = _ptr_type(kernel, type)
    off = t.offsetof(member)
    nxt, _ = _next_prev(kernel)
    for pos in _walk(kernel, _addr(head), nxt, limit, f"list_for_each_entry({t}.{member})"):
        yield _ptr(kernel, ptype, pos - off)


def list_for_each_entry_reverse(type: "Type | str", head: Object, member: str, *,
                                limit: int = DEFAULT_LIMIT) -> Iterator[Object]:
    """Iterate over the entries of a list backwards.

    :param type: entry type
    :param head: ``struct list_head *``
    :param member: name of the ``struct list_head`` member of ``type``
    :return: iterator of ``type *``
    """
    kernel = head.prog_
    t, ptype = _ptr_type(kernel, type)
    off = t.offsetof(member)
    _, prv = _next_prev(kernel)
    for pos in _walk(kernel, _addr(head), prv, limit,
                     f"list_for_each_entry_reverse({t}.{member})"):
        yield _ptr(kernel, ptype, pos - off)


def list_first_entry(head: Object, type: "Type | str", member: str) -> Object:
    """``list_first_entry()`` (undefined on an empty list, like the kernel's).

    :param head: ``struct list_head *``
    :return: ``type *``
    """
    kernel = head.prog_
    t, ptype = _ptr_type(kernel, type)
    nxt, _ = _next_prev(kernel)
    return _ptr(kernel, ptype, kernel.read_pointer(_addr(head) + nxt) - t.offsetof(member))


def list_last_entry(head: Object, type: "Type | str", member: str) -> Object:
    """``list_last_entry()``.

    :param head: ``struct list_head *``
    :return: ``type *``
    """
    kernel = head.prog_
    t, ptype = _ptr_type(kernel, type)
    _, prv = _next_prev(kernel)
    return _ptr(kernel, ptype, kernel.read_pointer(_addr(head) + prv) - t.offsetof(member))


def list_count_nodes(head: Object) -> int:
    """Number of nodes in a list (``list_count_nodes()``).

    :param head: ``struct list_head *``
    """
    kernel = head.prog_
    nxt, _ = _next_prev(kernel)
    return sum(1 for _ in _walk(kernel, _addr(head), nxt, DEFAULT_LIMIT, "list_count_nodes"))


def validate_list(head: Object) -> None:
    """Check that every node's ``next->prev`` points back at it.

    :param head: ``struct list_head *``
    :raises ValidationError: on a broken link, a cycle or an unreadable node
    """
    kernel = head.prog_
    nxt, prv = _next_prev(kernel)
    start = _addr(head)
    seen = {start}
    pos = start
    while True:
        try:
            n = kernel.read_pointer(pos + nxt)
            back = kernel.read_pointer(n + prv)
        except FaultError as e:
            raise ValidationError(f"list node {pos:#x} unreadable: {e}") from None
        if back != pos:
            raise ValidationError(f"{n:#x}->prev is {back:#x}, expected {pos:#x}")
        if n == start:
            return
        if n in seen:
            raise ValidationError(f"cycle: node {n:#x} seen twice")
        seen.add(n)
        pos = n


# -- hlist ----------------------------------------------------------------------------

def hlist_empty(head: Object) -> bool:
    """``hlist_empty()``.

    :param head: ``struct hlist_head *``
    """
    return head.prog_.read_pointer(_addr(head)) == 0


def _hwalk(kernel, head: int, limit: int, what: str) -> Iterator[int]:
    read_pointer = kernel.read_pointer
    seen = set()
    pos = read_pointer(head)     # hlist_head.first at offset 0; unreadable: FaultError
    n = 0
    while pos:
        if pos in seen:
            walk_warn(kernel, f"{what}: cycle in hlist at {head:#x}: node {pos:#x} seen twice")
            return
        if n >= limit:
            walk_warn(kernel, f"{what}: hlist at {head:#x} longer than {limit} nodes; stopped")
            return
        seen.add(pos)
        try:
            nxt = read_pointer(pos)  # hlist_node.next at offset 0
        except FaultError as e:
            walk_warn(kernel, f"{what}: node {pos:#x} unreadable: {e}")
            return
        n += 1
        yield pos
        pos = nxt


def hlist_for_each(head: Object, *, limit: int = DEFAULT_LIMIT) -> Iterator[Object]:
    """Iterate over the nodes of a hash list.

    :param head: ``struct hlist_head *``
    :return: iterator of ``struct hlist_node *``
    """
    kernel = head.prog_
    ptype = pointer_to(kernel.types.find_type("struct hlist_node"))
    for pos in _hwalk(kernel, _addr(head), limit, "hlist_for_each"):
        yield _ptr(kernel, ptype, pos)


def hlist_for_each_entry(type: "Type | str", head: Object, member: str, *,
                         limit: int = DEFAULT_LIMIT) -> Iterator[Object]:
    """Iterate over the entries of a hash list.

    :param type: entry type
    :param head: ``struct hlist_head *``
    :param member: name of the ``struct hlist_node`` member of ``type``
    :return: iterator of ``type *``
    """
    kernel = head.prog_
    t, ptype = _ptr_type(kernel, type)
    off = t.offsetof(member)
    for pos in _hwalk(kernel, _addr(head), limit, f"hlist_for_each_entry({t}.{member})"):
        yield _ptr(kernel, ptype, pos - off)
