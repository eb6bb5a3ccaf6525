"""The table catalog: every table and table function kql knows.

Each module under kql/tables/ declares TableSpecs (see base.py) and lists
them in a module-level ``TABLES`` tuple; this catalog collects them (every
module of the package that has ``TABLES``, the ones in ``_ORDER`` first).
Modules are imported lazily: asking for one table imports only the module
that declares it, whatever its name, found in a static index read from the
modules' source (see :class:`Catalog`).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping

from kql.tables.base import Column, ScanContext, TableSpec, Warnings  # noqa: F401

# The order --describe lists table modules in; others follow alphabetically.
_ORDER = ("sys", "tasks", "stacks", "modules", "dmesg", "symbols")


def _modules() -> list[str]:
    """The table modules (every module of this package but base), in
    --describe order."""
    import pkgutil

    names = sorted(m.name for m in pkgutil.iter_modules(__path__)
                   if m.name != "base" and not m.ispkg)
    names.sort(key=lambda n: (_ORDER.index(n) if n in _ORDER else len(_ORDER),
                              n == "functions", n))
    return names


def declared_tables(source: str) -> list[str]:
    """The table names a module's source declares: the literal ``name`` of
    each ``TableSpec(...)`` call, read with :mod:`ast` (nothing is imported).

    >>> declared_tables('T = (TableSpec(name="vmas", doc=""), TableSpec("environ"))')
    ['vmas', 'environ']
    """
    import ast

    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        if (f.id if isinstance(f, ast.Name) else getattr(f, "attr", None)) != "TableSpec":
            continue
        arg = next((k.value for k in node.keywords if k.arg == "name"),
                   node.args[0] if node.args else None)
        if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
            found.append(arg.value)
    return found


def table_index() -> dict[str, str] | None:
    """Table name -> the module declaring it, from the modules' source
    without importing them; None when a module has no readable source (then
    the catalog imports every module).  Kept in the kql cache directory,
    checked by each source file's size and mtime."""
    import os
    import zlib
    from pathlib import Path

    from kql.atomic import atomic_pickle, default_cache_dir, load_pickle

    files = []
    for m in _modules():
        path = os.path.join(__path__[0], f"{m}.py")
        try:
            st = os.stat(path)
        except OSError:
            return None
        files.append((m, path, st.st_size, st.st_mtime_ns))
    key = tuple(files)
    cache = default_cache_dir() / f"tables-{zlib.crc32(__path__[0].encode()):08x}.pickle"
    got = load_pickle(cache, {"files": key})
    if got is not None and isinstance(got.get("index"), dict):
        return got["index"]
    index: dict[str, str] = {}
    for m, path, _size, _mtime in files:
        try:
            source = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeError):
            return None
        for name in declared_tables(source):
            index.setdefault(name, m)
    try:
        atomic_pickle(cache, {"files": key, "index": index})
    except OSError:
        pass  # a read-only cache directory: read the sources each time
    return index


class Catalog(Mapping):
    """Table name -> TableSpec.  Asking for one name imports only the module
    that declares it (``vmas`` -> kql/tables/vm.py; see :func:`table_index`),
    so a query imports what it uses; listing, or a name the index does not
    know, imports every module."""

    def __init__(self) -> None:
        self._all: dict[str, TableSpec] | None = None
        self._index: dict[str, str] | None = None

    def _load_all(self) -> dict[str, TableSpec]:
        if self._all is None:
            cat: dict[str, TableSpec] = {}
            for m in _modules():
                mod = importlib.import_module(f"kql.tables.{m}")
                for spec in getattr(mod, "TABLES", ()):
                    cat[spec.name] = spec
            self._all = cat
        return self._all

    def get(self, name, default=None):
        if self._all is None and isinstance(name, str):
            if self._index is None:
                self._index = table_index() or {}
            module = self._index.get(name)
            if module is not None:
                mod = importlib.import_module(f"kql.tables.{module}")
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
