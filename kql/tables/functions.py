"""Table functions: generic access to kernel memory (crash `p`, `struct -o`,
`list`, `rd`).

    SELECT value->pid, value->comm FROM var('init_task')
    SELECT * FROM members('struct list_head', 0xffffffff82a0b4c0)
    SELECT entry->pid FROM list_walk('init_task.tasks', 'struct task_struct', 'tasks')
    SELECT * FROM memory(0xffffffff81000000, 8)
"""

from __future__ import annotations

import re


from kql.errors import FaultError, PlanError
from kql.helpers.list import list_for_each
from kql.helpers.memory import read_words, resolve_address
from kql.object import Object
from kql.tables.base import (ADDRESS, Column, INT64, STRING, TableSpec)


def _type_arg(ctx, name: str):
    try:
        return ctx.kernel.types.find_type(name)
    except LookupError as e:
        raise PlanError(f"unknown type '{name}': {e}") from None


# ---------------------------------------------------------------- var()

def _var_rows(ctx):
    name = ctx.args[0]
    type_name = ctx.args[1] if len(ctx.args) > 1 else None
    try:
        obj = ctx.kernel.var(name, type_name)
    except LookupError as e:
        raise PlanError(f"var('{name}'): {e}") from None
    yield obj


def _var_object_type(kernel, args) -> str | None:
    if kernel is None:
        return None
    if not isinstance(args[0], str) or (len(args) > 1 and not isinstance(args[1], str)):
        raise PlanError("var(name [, type]) takes strings: var('init_task'), "
                        "var('jiffies', 'unsigned long')")
    if kernel.symbols.get(args[0]) is None:
        raise PlanError(f"var('{args[0]}'): no symbol named '{args[0]}'")
    if len(args) > 1:
        return f"{args[1]} *"
    try:
        return f"{kernel.var_type(args[0]).type_name()} *"
    except LookupError:
        raise PlanError(f"var('{args[0]}'): its type is not known (BTF describes only "
                        f"per-CPU variables): give it, e.g. var('{args[0]}', 'struct foo')"
                        ) from None


class _Named:
    """An Object plus the name it was asked for."""

    __slots__ = ("obj", "name")

    def __init__(self, obj, name):
        self.obj = obj
        self.name = name


def _var_named_rows(ctx):
    for o in _var_rows(ctx):
        yield _Named(o, ctx.args[0])


VAR = TableSpec(
    name="var",
    doc="One row: the global variable NAME (type from BTF/DWARF, or TYPE) as an object.",
    params=("name", "type?"),
    columns=(
        Column("name", STRING, "the variable's name", lambda r: r.name),
        Column("address", ADDRESS, "its address", lambda r: r.obj.address_),
        Column("type", STRING, "its C type", lambda r: r.obj.type_.type_name()),
        Column("value", ADDRESS, "the variable as an object (member paths: value->x)",
               lambda r: r.obj.address_, object_type="void *"),
    ),
    rows=_var_named_rows,
    object_column="value",
    object_type_fn=_var_object_type,
    walk="symbol lookup",
    examples=("SELECT value->pid, value->comm FROM var('init_task')",),
)


# ---------------------------------------------------------------- members()

def _member_rows(ctx):
    t = _type_arg(ctx, ctx.args[0])
    address = resolve_address(ctx.kernel, ctx.args[1])
    obj = Object(ctx.kernel, t, address)
    yield from _flatten(obj, "", 0)


def _flatten(obj: Object, prefix: str, depth: int):
    st = obj.type_.strip_typedefs()
    for m in st.members or ():
        name = m.name
        child = obj.member_(name) if name else Object(
            obj.prog_, m.type, obj.address_ + m.bit_offset // 8)
        path = f"{prefix}{name}" if name else f"{prefix}(anonymous)"
        yield (path, child, m)
        cst = m.type.strip_typedefs()
        if cst.kind in ("struct", "union") and depth < 8:
            yield from _flatten(child, path + "." if name else prefix, depth + 1)


def _member_value(row) -> str | None:
    _path, obj, m = row
    st = obj.type_.strip_typedefs()
    if st.kind in ("struct", "union"):
        return None
    if st.kind == "array":
        if st.target is not None and st.target.is_char():
            return repr(obj.string_().decode("utf-8", "replace"))
        return None
    if st.kind == "pointer":
        return hex(obj.value_())
    v = obj.value_()
    if st.kind == "enum":
        name = obj.type_.enum_name(v)
        return f"{v} ({name})" if name else str(v)
    return str(v)


MEMBERS = TableSpec(
    name="members",
    doc="One row per (nested) member of the TYPE object at ADDRESS, like crash `struct -o`.",
    params=("type", "address"),
    columns=(
        Column("path", STRING, "member path (a.b.c)", lambda r: r[0]),
        Column("type", STRING, "C type of the member", lambda r: r[2].type.type_name()),
        Column("offset", INT64, "byte offset from the start of the object",
               lambda r: r[1].address_ - _base(r)),
        Column("size", INT64, "size in bytes", lambda r: r[2].type.size),
        Column("address", ADDRESS, "address of the member", lambda r: r[1].address_),
        Column("value", STRING, "value as text (NULL for structs and unions)",
               _member_value),
    ),
    rows=lambda ctx: _with_base(ctx),
    walk="members of the type",
    examples=("SELECT path, offset, value FROM members('struct task_struct', addr('init_task'))",),
)


def _with_base(ctx):
    base = resolve_address(ctx.kernel, ctx.args[1])
    for path, obj, m in _member_rows(ctx):
        yield _Row(path, obj, m, base)


class _Row(tuple):
    def __new__(cls, path, obj, m, base):
        r = super().__new__(cls, (path, obj, m))
        r.base = base
        return r


def _base(r) -> int:
    return r.base


# ---------------------------------------------------------------- list_walk()

def _list_walk_rows(ctx):
    head, type_name, member = ctx.args
    t = _type_arg(ctx, type_name)
    try:
        offset = t.offsetof(member)
    except LookupError as e:
        raise PlanError(f"list_walk: {e}") from None
    head_addr = resolve_address(ctx.kernel, head)
    try:
        ctx.kernel.read(head_addr, 2 * ctx.kernel.arch.pointer_size)
    except FaultError as e:  # a wrong HEAD is the query's fault, not the dump's
        raise PlanError(f"list_walk: cannot read the list head at {head_addr:#x}: "
                        f"{e.one_line()}") from None
    head_obj = Object(ctx.kernel, "struct list_head", head_addr)
    for node in list_for_each(head_obj):
        yield node.value_() - offset


LIST_WALK = TableSpec(
    name="list_walk",
    doc="One row per entry of the list_head list at HEAD (an address, a symbol, or "
        "'var.member'), each entry of TYPE linked through MEMBER (cycle-safe).",
    params=("head", "type", "member"),
    columns=(
        Column("address", ADDRESS, "address of the entry", lambda a: a),
        Column("entry", ADDRESS, "the entry as an object (member paths: entry->x)",
               lambda a: a, object_type="void *"),
    ),
    rows=_list_walk_rows,
    object_column="entry",
    object_type_fn=lambda kernel, args: f"{args[1]} *" if len(args) > 1 else None,
    walk="list_for_each from the head",
    examples=("SELECT entry->pid, entry->comm FROM list_walk('init_task.tasks', "
              "'struct task_struct', 'tasks')",),
)


# ---------------------------------------------------------------- memory()

def _int_arg(value, what: str) -> int:
    """An integer argument of a table function: an int, or a string of ASCII
    decimal digits (``'0x..'`` hex)."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise PlanError(f"{what} must be an integer, not {value!r}")
    if isinstance(value, str):
        v = value.strip()
        if re.fullmatch(r"[0-9]+", v, re.A):
            return int(v)
        if re.fullmatch(r"0[xX][0-9a-fA-F]+", v, re.A):
            return int(v, 16)
        raise PlanError(f"{what} must be an integer, not {value!r}")
    return value


def _memory_rows(ctx):
    address = resolve_address(ctx.kernel, ctx.args[0])
    count = _int_arg(ctx.args[1], "memory(): count")
    width = _int_arg(ctx.args[2], "memory(): width") if len(ctx.args) > 2 else 8
    if width not in (1, 2, 4, 8):
        raise PlanError(f"memory(): width must be 1, 2, 4 or 8, not {width}")
    if not 0 < count <= 1 << 20:
        raise PlanError(f"memory(): count must be between 1 and {1 << 20}")
    for addr, value in read_words(ctx.kernel, address, count, width):
        yield (addr, value, ctx.kernel, width)


def _symbol(w) -> str | None:
    addr, value, kernel, _width = w
    return kernel.symbol_text(value)


_PRINTABLE = re.compile(rb"[^\x20-\x7e]")

MEMORY = TableSpec(
    name="memory",
    doc="Raw memory: COUNT words of WIDTH bytes (default 8) from ADDRESS, like crash `rd -s`.",
    params=("address", "count", "width?"),
    columns=(
        Column("address", ADDRESS, "address of the word", lambda w: w[0]),
        Column("value", ADDRESS, "the word (NULL if unreadable)", lambda w: w[1]),
        Column("symbol", STRING, "name+0xoff when the value points into a symbol", _symbol),
        Column("ascii", STRING, "the bytes as ASCII (. for others)",
               lambda w: None if w[1] is None else _PRINTABLE.sub(
                   b".", w[1].to_bytes(w[3], "little")).decode()),
    ),
    rows=_memory_rows,
    walk="read words",
    examples=("SELECT * FROM memory(addr('init_task'), 4)",),
)

TABLES = (VAR, MEMBERS, LIST_WALK, MEMORY)
