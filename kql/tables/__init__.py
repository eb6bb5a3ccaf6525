"""The table catalog: every table and table function kql knows.

Each module under kql/tables/ declares TableSpecs (see base.py) and lists
them in a module-level ``TABLES`` tuple; this catalog collects them.
Modules are imported lazily, the first time the catalog is asked for.
"""

from __future__ import annotations

import importlib

from kql.tables.base import Column, ScanContext, TableSpec, Warnings  # noqa: F401

# Modules holding table specs, in the order --describe lists them.
_MODULES = ("sys", "tasks", "stacks", "modules", "dmesg", "symbols", "functions")

_catalog: dict[str, TableSpec] | None = None


def catalog() -> dict[str, TableSpec]:
    global _catalog
    if _catalog is None:
        cat: dict[str, TableSpec] = {}
        for m in _MODULES:
            try:
                mod = importlib.import_module(f"kql.tables.{m}")
            except ModuleNotFoundError as e:
                if e.name == f"kql.tables.{m}":
                    continue  # not written yet
                raise
            for spec in mod.TABLES:
                cat[spec.name] = spec
        _catalog = cat
    return _catalog


def get_table(name: str) -> TableSpec | None:
    return catalog().get(name.lower())
