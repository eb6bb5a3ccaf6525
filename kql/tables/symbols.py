"""symbols: the kernel's symbol table (crash ``sym``, /proc/kallsyms)."""

from __future__ import annotations

from typing import Iterator

import pyarrow as pa

from kql.errors import FaultError
from kql.helpers.list import walk_warn
from kql.helpers.module import for_each_module, module_name, module_symbols
from kql.tables.base import ADDRESS, Column, ScanContext, TableSpec

__all__ = ["TABLES", "all_symbols"]

# A row: (name, address, nm letter, size, module or None)


def _module_rows(prog) -> list[tuple]:
    """Every loaded module's own symbols (cached per dump)."""
    rows = prog.cache.get("module_symbol_rows")
    if rows is None:
        rows = []
        covered = {t.module for t in prog.symbols.extra if t.module}
        try:
            mods = list(for_each_module(prog))
        except (FaultError, LookupError) as e:
            walk_warn(prog, f"symbols: module list unreadable: {e}")
            mods = []
        for mod in mods:
            try:
                name = module_name(mod)
                if name in covered:
                    continue
                for sname, addr, size, letter in module_symbols(mod):
                    rows.append((sname, addr, letter, size, name))
            except FaultError as e:
                walk_warn(prog, f"symbols: symbols of module at {mod.value_():#x} "
                                f"unreadable: {e}")
        prog.cache["module_symbol_rows"] = rows
    return rows


def all_symbols(prog) -> Iterator[tuple]:
    """vmlinux symbols (kallsyms from the dump, or System.map/vmlinux), then
    each module's."""
    table = prog.symbols
    for t in (table, *table.extra):
        mod = t.module
        names, kinds, addrs = t.names, t.kinds, t.addresses
        size = t._size
        for i in range(len(names)):
            a = addrs[i]
            n = size(i)
            # The distance to the next symbol means nothing across regions
            # (the last per-CPU offset symbol is followed by kernel text).
            if (a ^ (a + n)) >> 63:
                n = None
            yield (names[i], a, kinds[i], n, mod)
    yield from _module_rows(prog)


def _rows(ctx: ScanContext):
    return all_symbols(ctx.kernel)


def kallsyms_lookup_name(ctx: ScanContext, values: list):
    """``name = '...'``: the symbol table's name index, then module symbols."""
    prog = ctx.kernel
    for v in dict.fromkeys(v for v in values if isinstance(v, str)):
        for s in prog.symbols.lookup_all(v):
            a, n = s.address, s.size
            yield (s.name, a, s.kind, None if (a ^ (a + n)) >> 63 else n, s.module)
        for row in _module_rows(prog):
            if row[0] == v:
                yield row


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
            Column("name", pa.string(), "symbol name", lambda r: r[0]),
            Column("address", ADDRESS, "address (KASLR applied)", lambda r: r[1]),
            Column("type", pa.string(), "nm type letter (T t D d R r B b V W ...)",
                   lambda r: r[2]),
            Column("size", pa.int64(), "size in bytes (the distance to the next "
                   "symbol for kallsyms, st_size for module symbols; NULL when the next "
                   "symbol is in another region)", lambda r: r[3]),
            Column("module", pa.string(), "module name; NULL for vmlinux",
                   lambda r: r[4]),
        ),
    ),
)
