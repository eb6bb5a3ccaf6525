"""What every architecture's page-table walk shares: reading one entry, and
the errors that name the level, the entry and where it is."""

from __future__ import annotations

from kql.errors import DumpError, FaultError


def read_entry(read, table: int, index: int, va: int, name: str, space: str) -> tuple[int, int]:
    """``(entry, entry's physical address)`` of entry ``index`` of the
    ``name`` table at physical ``table``; a table that cannot be read raises
    (the physical layer's FaultError class) naming ``va`` and the level."""
    entry_pa = table + 8 * index
    try:
        return int.from_bytes(read(entry_pa, 8), "little"), entry_pa
    except FaultError as e:
        raise type(e)(va, f"cannot read {space} address {va:#x}: {name} table "
                          f"at physical {table:#x} is unreadable: {e}") from None


def not_mapped(va: int, name: str, index: int, entry_pa: int, entry: int, space: str,
               why: str) -> FaultError:
    """The error for an entry that maps nothing (``why``: "not present")."""
    return FaultError(va, f"cannot read {space} address {va:#x}: not mapped "
                          f"({name} entry {index} at physical {entry_pa:#x} "
                          f"is {entry:#x}, {why})")


def swapper_pg_dir_pa(arch, vmcoreinfo: dict[str, str]) -> int:
    """Physical address of ``swapper_pg_dir`` (the kernel's page tables on
    arm64 and 32-bit x86), through the arch's ``kernel_symbol_pa``."""
    value = vmcoreinfo.get("SYMBOL(swapper_pg_dir)")
    if not value:
        raise DumpError("VMCOREINFO has no SYMBOL(swapper_pg_dir): cannot find the "
                        "kernel page tables")
    return arch.kernel_symbol_pa(int(value, 16), vmcoreinfo)
