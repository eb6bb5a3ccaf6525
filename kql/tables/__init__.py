"""The table catalog: every table and table function kql knows.

Each module under kql/tables/ declares TableSpecs (see base.py) and lists
them in a module-level ``TABLES`` tuple; this catalog collects them (every
module of the package that has ``TABLES``, the ones in ``_ORDER`` first).
Modules are imported lazily: asking for one table imports the module of
that name first (see :class:`Catalog`).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping

from kql.tables.base import Column, ScanContext, TableSpec, Warnings  # noqa: F401

# The order --describe lists table modules in; others follow alphabetically.
_ORDER = ("sys", "tasks", "stacks", "modules", "dmesg", "symbols")



class Catalog(Mapping):
    """Table name -> TableSpec.  Asking for one name imports only the module
    of that name when it defines the table (``tasks`` -> kql/tables/tasks.py),
    so a query imports what it uses; listing or a name defined elsewhere
    imports every module."""

    def __init__(self) -> None:
        self._all: dict[str, TableSpec] | None = None

    def _load_all(self) -> dict[str, TableSpec]:
        if self._all is None:
            import pkgutil

            names = sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name != "base")
            names.sort(key=lambda n: (_ORDER.index(n) if n in _ORDER else len(_ORDER),
                                      n == "functions", n))
            cat: dict[str, TableSpec] = {}
            for m in names:
                mod = importlib.import_module(f"kql.tables.{m}")
                for spec in getattr(mod, "TABLES", ()):
                    cat[spec.name] = spec
            self._all = cat
        return self._all

    def get(self, name, default=None):
        if self._all is None and isinstance(name, str) and name.isidentifier() \
                and name != "base" and name.islower():
            try:
                mod = importlib.import_module(f"kql.tables.{name}")
            except ModuleNotFoundError as e:
                if e.name != f"kql.tables.{name}":
                    raise
                mod = None
            for spec in getattr(mod, "TABLES", ()):
                if spec.name == name:
                    return spec
        return self._load_all().get(name, default)

    def __getitem__(self, name: str) -> TableSpec:
        spec = self.get(name)
        if spec is None:
            raise KeyError(name)
        return spec

    def __contains__(self, name) -> bool:
        return self.get(name) is not None

    def __iter__(self):
        return iter(self._load_all())

    def __len__(self) -> int:
        return len(self._load_all())


_catalog: Catalog | None = None


def catalog() -> Catalog:
    global _catalog
    if _catalog is None:
        _catalog = Catalog()
    return _catalog


def get_table(name: str) -> TableSpec | None:
    return catalog().get(name.lower())
