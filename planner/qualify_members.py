"""qualify's member paths: ``task->mm->map_count`` on an object column
becomes a member column of its scan (compiled by :mod:`.members`; the same
path on the same scan is read once), ``CAST(x AS 'struct file *')->f_pos`` a
DuckDB function reading from the computed address; and which output columns
hold addresses (printed in hex)."""

from __future__ import annotations

from kql.grammar import ast as A

from .context import Ctx, Scope, error
from .members import compile_path
from .plan import MemberColumn
from .rewrite import rewrite


def _is_address_member(m: MemberColumn) -> bool:
    """A member read whose value is an address: a pointer, or a struct, union
    or array member (read as the address of the object)."""
    c = m.c_type
    return str(m.type) == "uint64" and (c.endswith("*") or c.startswith(("struct ", "union "))
                                        or c.endswith("]"))


def is_pointer_read(old, new, ctx: Ctx, scope: Scope) -> bool:
    """Does this select item give an address (a C cast, a member read of an
    address, or an address column under another name)?"""
    if isinstance(old, A.Cast) and old.c_type:
        return True
    m = None
    if isinstance(new, A.FuncCall) and new.name in ctx.udfs:
        m = ctx.udfs[new.name][0]
    elif isinstance(new, A.Column) and new.name.startswith("__m"):
        m = next((s.members[new.name] for s in ctx.scans if new.name in s.members), None)
    elif isinstance(new, A.Column):
        cols = [s.spec.column(new.name) for sc in scope.visible() for s in sc.scans
                if new.table is None or new.table.lower() == s.alias.lower()]
        cols = [c for c in cols if c is not None]
        return bool(cols) and all(str(c.type) == "uint64" for c in cols)
    return m is not None and _is_address_member(m)



def _cast_type(node: A.Cast, ctx: Ctx, kernel):
    """The C type of ``CAST(x AS 'struct file *')``: it must name a pointer."""
    text = node.type_text
    try:
        t = kernel.types.find_type(text)
    except LookupError as e:
        raise error(f"unknown C type '{text}': {e}", ctx, node) from None
    if not t.is_pointer():
        raise error(f"CAST to '{text}': cast addresses to a pointer type, e.g. '{text} *'",
                    ctx, node)
    return t


def qualify_c_cast(node: A.Cast, ctx: Ctx, scope: Scope, fn):
    """A bare C cast: the address itself (the type is checked now)."""
    kernel = _one_kernel(ctx, node)
    _cast_type(node, ctx, kernel)
    return A.Cast(rewrite(node.expr, fn), "UBIGINT", span=node.span)


def _one_kernel(ctx: Ctx, node):
    kernel = ctx.env.kernel(None)
    if kernel is None:
        raise error("C types need one open dump (name a table's object column to pick "
                    "a dump)", ctx, node)
    return kernel


def _member_of_cast(node: A.MemberPath, ctx: Ctx, scope: Scope, fn):
    """``CAST(x AS 'struct file *')->f_pos``: a DuckDB function that reads the
    compiled path from the computed address."""
    base = node.base
    kernel = _one_kernel(ctx, node)
    _cast_type(base, ctx, kernel)
    text = ctx.source[node.span[0]:node.span[1]]
    compiled = compile_path(kernel.types, base.type_text, node.steps, text, ctx.source,
                            node.span)
    name = f"kql_read_{len(ctx.udfs)}"
    m = MemberColumn(name=name, text=text, type=compiled.arrow_type,
                     fn=compiled.reader(kernel), c_type=compiled.c_type)
    ctx.udfs[name] = (m, None)
    return A.FuncCall(name, (A.Cast(rewrite(base.expr, fn), "UBIGINT", span=base.span),),
                      span=node.span)


def qualify_member(node: A.MemberPath, ctx: Ctx, scope: Scope, fn=None):
    base = node.base
    if isinstance(base, A.Cast) and base.c_type:
        return _member_of_cast(node, ctx, scope, fn)
    text = ctx.source[node.span[0]:node.span[1]]
    if not isinstance(base, A.Column):
        if not node.has_arrow():  # f(x).a.b: DuckDB's struct fields
            return node.replace(base=rewrite(base, fn))
        raise error(f"{text}: member paths need an object column or a C cast "
                    "(CAST(x AS 'struct file *')->f_pos); for DuckDB's JSON arrow put the "
                    "key in quotes (x->'key')", ctx, node)
    target = scope.object_scan(base)
    if target is None:
        if not node.has_arrow():
            # a.b.c on a value that is not an object: DuckDB's struct field access
            return node.replace(base=rewrite(base, fn))
        objs = sorted({s.spec.object_column for s in scope.scans if s.spec.object_column})
        hint = f" (object columns here: {', '.join(objs)})" if objs else ""
        raise error(f"'{base.name}' is not an object column{hint}: '{text}' reads as a member "
                    f"path; for DuckDB's JSON arrow quote the key ({base.name}->'key'), for a "
                    f"lambda write 'lambda x: …' or put spaces around '->'", ctx, base)
    kernel = ctx.env.kernel(target.dump)
    if kernel is None:
        raise error(f"{text}: member paths need an open dump", ctx, node)
    compiled = compile_path(kernel.types, target.object_type, node.steps, text,
                            ctx.source, node.span)
    key = repr(node.steps)  # the same path on the same scan is read once
    for m in target.members.values():
        if m.key == key:
            break
    else:
        m = MemberColumn(name=f"__m{sum(len(s.members) for s in ctx.scans)}",
                         text=text, type=compiled.arrow_type, fn=None, c_type=compiled.c_type,
                         key=key)
        getter = target.spec.column(target.spec.object_column).fn
        read = compiled.reader(kernel)
        m.fn = lambda row, _g=getter, _r=read: _r(_g(row))
        target.members[m.name] = m
    return A.Column(m.name, target.alias, span=node.span)


def address_columns(ctx: Ctx) -> set[str]:
    """Output names whose values are addresses: the tables' address columns,
    member reads of addresses, and the select items found to be pointers."""
    from kql.tables.base import UINT64
    names = set()
    for s in ctx.scans:
        for c in s.spec.columns:
            if UINT64 == c.type:
                names.add(c.name.lower())
        for m in s.members.values():
            if _is_address_member(m):
                names.add(m.text.lower())
    for m, _dump in ctx.udfs.values():
        if _is_address_member(m):
            names.add(m.text.lower())
    names |= ctx.address_names
    return names

