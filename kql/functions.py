"""kql's SQL functions, each declared once.

A :class:`Function` says everything the rest of kql needs: its SQL name, its
arguments (name and DuckDB type), its result type, whether it reads a dump,
its implementation and its one-line doc.  From ``FUNCTIONS`` derive:

- the planner: ``lower_functions`` turns ``sym(x)`` into the DuckDB UDF of
  the dump ``x`` comes from (``kql_sym`` for the default dump,
  ``kql_sym__a`` for dump ``a``), and these functions count as scalar (a
  LIMIT may be pushed under them);
- execution: :func:`register` creates the UDFs of every open dump;
- ``--parquet`` mode: the functions that need no dump;
- the docs: ``kql --describe`` / docs/tables.md and the shell's help.

Adding a function is one declaration below plus its test.  ``impl`` is
called as ``impl(kernel, warnings, *args)`` (``kernel`` is None when no dump
is open for it); it returns None for NULL.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable


@dataclass(frozen=True)
class Function:
    name: str
    args: tuple[tuple[str, str], ...]   # (argument name, DuckDB type)
    result: str                         # DuckDB type
    doc: str
    impl: Callable[..., Any]
    needs_dump: bool = True

    @property
    def usage(self) -> str:
        return f"{self.name}({', '.join(a for a, _ in self.args)})"

    def udf(self, dump: str | None = None) -> str:
        """The DuckDB name of this function bound to ``dump`` (None: the
        default dump; functions without a dump have one name)."""
        if dump is None or not self.needs_dump:
            return f"kql_{self.name}"
        tag = dump if dump.isidentifier() else "x" + dump.encode().hex()
        return f"kql_{self.name}__{tag}"


# ---------------------------------------------------------------- implementations

def _sym(kernel, warnings, address):
    return None if kernel is None or address is None else kernel.symbol_text(address)


def _addr(kernel, warnings, name):
    if kernel is None or name is None:
        return None
    try:
        return kernel.symbol(name).address
    except LookupError:
        return None


def _hex(kernel, warnings, value):
    return None if value is None else hex(value)


def _container_of(kernel, warnings, address, type_name, member):
    if address is None or kernel is None or type_name is None or member is None:
        return None
    try:
        return address - kernel.types.find_type(type_name).offsetof(member)
    except LookupError as e:  # an unknown type or member: NULL, counted
        warnings.add("container_of", e)
        return None


def _struct_text(kernel, warnings, type_name, address):
    if address is None or type_name is None or kernel is None:
        return None
    from kql.helpers.printer import format_object
    from kql.object import Object
    try:
        obj = Object(kernel, kernel.types.find_type(type_name), address)
    except LookupError as e:
        raise ValueError(f"struct_text: unknown type '{type_name}': {e}") from None
    return format_object(obj)


FUNCTIONS: dict[str, Function] = {f.name: f for f in (
    Function("sym", (("address", "UBIGINT"),), "VARCHAR",
             "'name+0xoff' of the symbol an address is in", _sym),
    Function("addr", (("symbol", "VARCHAR"),), "UBIGINT",
             "a symbol's address", _addr),
    Function("container_of", (("address", "UBIGINT"), ("type", "VARCHAR"),
                              ("member", "VARCHAR")), "UBIGINT",
             "the address of the TYPE whose MEMBER is at ADDRESS", _container_of),
    Function("hex", (("x", "UBIGINT"),), "VARCHAR",
             "a number in hex", _hex, needs_dump=False),
    Function("struct_text", (("type", "VARCHAR"), ("address", "UBIGINT")), "VARCHAR",
             "the object printed nested, as crash `struct` and gdb `p *` do", _struct_text),
)}


# ---------------------------------------------------------------- DuckDB

def register(con, kernels: dict, default, warnings, *, with_dump: bool = True) -> None:
    """Create the UDFs on ``con``: each function bound to ``default`` (the
    default dump's kernel, or None) and, when it reads a dump, once more per
    named dump in ``kernels``.  ``with_dump=False`` (``--parquet``): only
    the functions that need no dump."""
    from duckdb import sqltypes

    for f in FUNCTIONS.values():
        if f.needs_dump and not with_dump:
            continue
        bindings = {None: default}
        if f.needs_dump:
            bindings.update((d, k) for d, k in kernels.items() if d is not None)
        for dump, kernel in bindings.items():
            con.create_function(
                f.udf(dump), _bind(f, kernel, warnings),
                [getattr(sqltypes, t) for _, t in f.args], getattr(sqltypes, f.result),
                side_effects=False, null_handling="special")


def _bind(f: Function, kernel, warnings):
    """``f.impl`` with the kernel and warnings bound, taking exactly the
    function's arguments (DuckDB counts them)."""
    import inspect

    def fn(*args):
        return f.impl(kernel, warnings, *args)
    fn.__signature__ = inspect.Signature(
        [inspect.Parameter(a, inspect.Parameter.POSITIONAL_ONLY) for a, _ in f.args])
    return fn


def markdown() -> list[str]:
    """The "Functions" section of docs/tables.md."""
    out = ["## Functions", "",
           "kql's own SQL functions (besides DuckDB's); see `kql/functions.py`.", "",
           "| function | result | description |", "|---|---|---|"]
    for f in FUNCTIONS.values():
        args = ", ".join(f"{a} {t}" for a, t in f.args)
        doc = f.doc.replace("|", "\\|") + ("" if f.needs_dump else " (no dump needed)")
        out.append(f"| {f.name}({args}) | {f.result} | {doc} |")
    out.append("")
    return out


def text() -> list[str]:
    """The "Functions" section of ``kql --describe``."""
    width = max(len(f.usage) for f in FUNCTIONS.values())
    return ["SQL functions", ""] + [f"  {f.usage:<{width}}  {f.result:<8} {f.doc}"
                                    for f in FUNCTIONS.values()] + [""]
