"""The table catalog: every table and table function kql knows.

Each module under kql/tables/ declares TableSpecs (see base.py) and lists
them in a module-level ``TABLES`` tuple; this catalog collects them (every
module of the package that has ``TABLES``, the ones in ``_ORDER`` first).
Modules are imported lazily, the first time the catalog is asked for.
"""

from __future__ import annotations

import importlib

from kql.tables.base import Column, ScanContext, TableSpec, Warnings  # noqa: F401

# The order --describe lists table modules in; others follow alphabetically.
_ORDER = ("sys", "tasks", "stacks", "modules", "dmesg", "symbols")

_catalog: dict[str, TableSpec] | None = None


def catalog() -> dict[str, TableSpec]:
    global _catalog
    if _catalog is None:
        import pkgutil

        names = sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name != "base")
        names.sort(key=lambda n: (_ORDER.index(n) if n in _ORDER else len(_ORDER),
                                  n == "functions", n))
        cat: dict[str, TableSpec] = {}
        for m in names:
            mod = importlib.import_module(f"kql.tables.{m}")
            for spec in getattr(mod, "TABLES", ()):
                cat[spec.name] = spec
        _catalog = cat
    return _catalog


def get_table(name: str) -> TableSpec | None:
    return catalog().get(name.lower())
