"""Print a kernel object the way crash and gdb do (crash ``struct``,
``task``, ``p``)::

    struct list_head {
      next = 0xffff888003a4c0d0,
      prev = 0xffff888003a4c0d0
    }

Nested structs and unions open a brace; char arrays print as strings;
pointers in hex, with ``<symbol>`` when they point into kernel text or data;
enums by name; runs of equal array elements as ``<repeats N times>`` (gdb's
``repeat_count_threshold`` is 10).  A member that cannot be read prints as
``<unreadable>``: one bad page does not lose the rest.
"""

from __future__ import annotations

from kql.errors import FaultError
from kql.object import Object

__all__ = ["format_object"]

REPEAT_THRESHOLD = 10     # gdb: runs of 10+ equal elements are collapsed
MAX_ELEMENTS = 200        # gdb's default `print elements` limit
MAX_DEPTH = 12            # nesting bound (anonymous unions nest deeply)


def format_object(obj: Object, name: str | None = None) -> str:
    """``obj`` as gdb prints ``p *obj`` (``struct`` header for a struct,
    ``name = value`` for anything else when ``name`` is given).

    :param obj: any object with an address (``struct task_struct``, ``int``, …)
    """
    try:
        obj = obj.read_()  # one read for the whole object (members come from the copy)
    except FaultError:
        pass
    st = obj.type_.strip_typedefs()
    if st.kind in ("struct", "union") and name is None:
        return f"{obj.type_.type_name()} " + _value(obj, 0) + "\n"
    return f"{name or obj.type_.type_name()} = {_value(obj, 0)}\n"


def _value(obj: Object, depth: int) -> str:
    try:
        return _value_or_fault(obj, depth)
    except (FaultError, ValueError, TypeError):
        return "<unreadable>"


def _value_or_fault(obj: Object, depth: int) -> str:
    st = obj.type_.strip_typedefs()
    kind = st.kind
    if kind in ("struct", "union"):
        if depth >= MAX_DEPTH:
            return "{...}"
        pad = "  " * (depth + 1)
        lines = []
        for m in st.members or ():
            child = obj._member_obj(m, m.bit_offset)
            text = _value(child, depth + 1)
            lines.append(f"{pad}{m.name} = {text}" if m.name else f"{pad}{text}")
        if not lines:
            return "{}"
        return "{\n" + ",\n".join(lines) + "\n" + "  " * depth + "}"
    if kind == "array":
        return _array(obj, st, depth)
    if kind == "pointer":
        v = obj.value_()
        if v == 0:
            return "0x0"
        sym = _symbol(obj.prog_, v)
        return f"{v:#x}" + (f" <{sym}>" if sym else "")
    if kind == "enum":
        v = obj.value_()
        return st.enum_name(v) or str(v)
    if kind == "bool":
        return "true" if obj.value_() else "false"
    if kind in ("int", "float"):
        return str(obj.value_())
    return f"<{st.kind}>"


def _array(obj: Object, st, depth: int) -> str:
    n = st.length or 0
    et = st.target.strip_typedefs() if st.target is not None else None
    if et is not None and st.target.is_char() and et.size == 1:
        raw = obj._bytes()
        return _c_string(raw)
    items = []
    for i in range(min(n, MAX_ELEMENTS)):
        items.append(_value(obj[i], depth + 1))
    out = []
    i = 0
    while i < len(items):
        j = i
        while j < len(items) and items[j] == items[i]:
            j += 1
        if j - i >= REPEAT_THRESHOLD:
            out.append(f"{items[i]} <repeats {j - i} times>")
        else:
            out.extend(items[i:j])
        i = j
    more = "..." if n > MAX_ELEMENTS else ""
    if any("\n" in x for x in out):
        pad = "  " * (depth + 1)
        return "{\n" + ",\n".join(pad + x for x in out) + (",\n" + pad + more if more else "") \
            + "\n" + "  " * depth + "}"
    return "{" + ", ".join(out) + (", " + more if more else "") + "}"


def _c_string(raw: bytes) -> str:
    """A char array as gdb prints it: the text up to the NULs, then
    ``'\\000' <repeats N times>`` for the trailing zeros."""
    text = raw.rstrip(b"\0")
    zeros = len(raw) - len(text)
    body = "".join(chr(b) if 0x20 <= b < 0x7f and b not in (0x22, 0x5c) else
                   f"\\{b:03o}" if b not in (0x22, 0x5c) else "\\" + chr(b) for b in text)
    s = f'"{body}"'
    if zeros >= REPEAT_THRESHOLD:
        rep = f"'\\000' <repeats {zeros - 1} times>"
        return f"{s}, {rep}" if text else rep
    return f'"{body}' + "\\000" * max(0, zeros - 1) + '"'


def _symbol(kernel, value: int) -> str | None:
    if value < kernel.page_offset:
        return None
    s = kernel.symbolize(value)
    if s is None:
        return None
    sym, off = s
    # past the symbol's end, or a per-CPU offset symbol (__per_cpu_end): not its address
    if not sym.size or off >= sym.size or sym.address < kernel.page_offset:
        return None
    return sym.name if off == 0 else f"{sym.name}+{off}"
