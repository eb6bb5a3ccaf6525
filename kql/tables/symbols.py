"""symbols: the kernel's symbol table (crash ``sym``, /proc/kallsyms)."""

from __future__ import annotations

from typing import Iterator


from kql.tables.base import (ADDRESS, Column, INT64, STRING, ScanContext, TableSpec)

__all__ = ["TABLES", "all_symbols"]

# A row: (name, address, nm letter, size, module or None)


def _size(address: int, size: int) -> int | None:
    # The distance to the next symbol means nothing across regions (the last
    # per-CPU offset symbol is followed by kernel text).
    return None if (address ^ (address + size)) >> 63 else size


def _symbol_tables(kernel):
    """vmlinux's table, then each loaded module's (mod->kallsyms, attached to
    the kernel's symbols once per dump by Kernel.load_module_symbols())."""
    kernel.load_module_symbols()
    table = kernel.symbols
    return (table, *table.extra)


def all_symbols(kernel) -> Iterator[tuple]:
    """vmlinux symbols (kallsyms from the dump, or System.map/vmlinux), then
    each module's."""
    for t in _symbol_tables(kernel):
        mod = t.module
        names, kinds, addrs = t.names, t.kinds, t.addresses
        size = t._size
        for i in range(len(names)):
            a = addrs[i]
            yield (names[i], a, kinds[i], _size(a, size(i)), mod)


def _rows(ctx: ScanContext):
    return all_symbols(ctx.kernel)


def kallsyms_lookup_name(ctx: ScanContext, values: list):
    """``name = '...'``: the symbol tables' name index (modules' included)."""
    kernel = ctx.kernel
    table = _symbol_tables(kernel)[0]
    for v in dict.fromkeys(v for v in values if isinstance(v, str)):
        for s in table.lookup_all(v):
            yield (s.name, s.address, s.kind, _size(s.address, s.size), s.module)


TABLES = (
    TableSpec(
        name="symbols",
        doc="Kernel symbols: vmlinux's (from the dump's kallsyms, or System.map / "
            "vmlinux) and each loaded module's own (mod->kallsyms), like "
            "/proc/kallsyms and crash `sym -l`.",
        walk="kallsyms table + each module's mod->kallsyms",
        rows=_rows,
        lookups={"name": kallsyms_lookup_name},
        examples=("SELECT name, address FROM symbols WHERE name LIKE 'sys_%'",
                  "SELECT module, count(*) FROM symbols GROUP BY module"),
        columns=(
            Column("name", STRING, "symbol name", lambda r: r[0]),
            Column("address", ADDRESS, "address (KASLR applied)", lambda r: r[1]),
            Column("type", STRING, "nm type letter (T t D d R r B b V W ...)",
                   lambda r: r[2]),
            Column("size", INT64, "size in bytes (the distance to the next "
                   "symbol for kallsyms, st_size for module symbols; NULL when the "
                   "next symbol is in another region)", lambda r: r[3]),
            Column("module", STRING, "module name; NULL for vmlinux",
                   lambda r: r[4]),
        ),
    ),
)
