"""Tab completion that knows the kernel, for the shell.

What it offers depends on where the cursor is:

- after ``->`` (or ``.`` after one): the members of the C type the path has
  reached, from BTF/DWARF (``task->mm->`` offers ``struct mm_struct``'s);
- inside ``'…'`` after ``addr(``, ``var(``, ``sym(``: symbol names; after
  ``CAST(x AS``, ``members(``, ``list_walk(``, ``struct_text(``,
  ``container_of(``: type names;
- after ``@``: saved queries; at the start: SQL, crash and ``\\`` commands;
- elsewhere: keywords, tables, the columns of the tables in the statement,
  functions.

It reads types and symbols only, never scans a table: it stays instant on a
dump with thousands of tasks.  Name lists are built once per dump and kept
on the kernel's cache (``kernel.cache``).
"""

from __future__ import annotations

import bisect
import re

from prompt_toolkit.completion import Completer, Completion

from kql.functions import FUNCTIONS

__all__ = ["KqlCompleter", "candidates", "warm"]

KEYWORDS = """SELECT FROM WHERE GROUP BY ORDER HAVING LIMIT OFFSET JOIN LEFT RIGHT FULL
INNER OUTER CROSS ON USING AS AND OR NOT IN IS NULL LIKE ILIKE BETWEEN CASE WHEN THEN ELSE
END DISTINCT ALL ASC DESC WITH UNION INTERSECT EXCEPT EXPLAIN CAST QUALIFY OVER PARTITION
COUNT SUM MIN MAX AVG TRUE FALSE""".split()
STARTERS = ("SELECT", "WITH", "EXPLAIN", "FROM")
BACKSLASH = ("\\set", "\\q", "\\x", "\\o", "\\timing", "\\?")
SETTINGS = ("format", "output", "timing", "stats", "sql", "pager", "editing")
SQL_FUNCTIONS = tuple(FUNCTIONS) + ("count", "sum", "min",
                 "max", "avg", "lower", "upper", "length", "coalesce", "list_contains",
                 "string_agg", "array_to_string", "regexp_matches")

_TYPE_FUNCS = re.compile(r"(?:\bAS|\b(?:members|list_walk|struct_text|container_of)\s*\(.*?,?)\s*'([^']*)$",
                         re.I | re.S)
_SYMBOL_FUNCS = re.compile(r"\b(?:addr|var|sym|memory)\s*\(\s*'([^']*)$", re.I)
_PATH = re.compile(r"((?:[A-Za-z_]\w*\.)?[A-Za-z_]\w*)((?:(?:->|\.)[A-Za-z_]\w*|\[\d*\])*)"
                   r"(?:->|\.)(\w*)$")
_FROM = re.compile(r"\b(?:FROM|JOIN)\s+(?:(\w+)\.)?([A-Za-z_]\w*)(\s*\(([^)]*)\))?"
                   r"(?:\s+(?:AS\s+)?(?!(?:WHERE|JOIN|ON|GROUP|ORDER|LIMIT|LEFT|INNER|CROSS|"
                   r"USING|HAVING|UNION)\b)([A-Za-z_]\w*))?", re.I)
_WORD = re.compile(r"[\w\\@]*$")


def warm(kernel) -> None:
    """Read what completion needs once (the symbol table's name order, the
    type index, the catalog), as the shell does before its first prompt, so
    the first Tab is as quick as the rest."""
    from kql.tables import catalog
    try:
        kernel.symbols.name_order
        kernel.types.find_type("struct task_struct")
        type_names(kernel)
        list(catalog().items())
    except Exception:  # noqa: BLE001 - completion degrades; queries report errors
        pass


class KqlCompleter(Completer):
    """prompt_toolkit completer over one open kernel."""

    def __init__(self, kernel, session=None):
        self.kernel = kernel
        self.session = session

    def get_completions(self, document, complete_event):
        for text, start, meta in candidates(self.kernel, document.text_before_cursor,
                                            document.text):
            yield Completion(text, start_position=start, display_meta=meta)


def candidates(kernel, before: str, whole: str | None = None):
    """``(text, start_position, meta)`` completions for the cursor at the end
    of ``before`` (``whole`` is the entire buffer, for the tables in scope)."""
    whole = before if whole is None else whole
    in_string = before.count("'") % 2 == 1
    if in_string:
        m = _SYMBOL_FUNCS.search(before)
        if m:
            return _symbols(kernel, m.group(1))
        m = _TYPE_FUNCS.search(before)
        if m:
            return _types(kernel, m.group(1))
        return []
    stmt_start = before.rfind(";") + 1
    head = before[stmt_start:].lstrip()
    m = _PATH.search(before)
    if m and "->" in m.group(0):
        return _members(kernel, whole, m.group(1), m.group(2), m.group(3))
    word = _WORD.search(before).group(0)
    if head.startswith("@") and " " not in head:
        from kql.queries import all_queries
        return [("@" + n, -len(word), q.description[:40]) for n, q in all_queries().items()
                if ("@" + n).startswith(word)]
    if head.startswith("@") and " " in head:  # @name key=value …: its parameters
        from kql.queries import all_queries
        q = all_queries().get(head[1:].split()[0])
        return [] if q is None else [
            (f"{p.name}=", -len(word), p.doc[:40] or "parameter") for p in q.params
            if p.name.startswith(word) and f" {p.name}=" not in head]
    if head.startswith("\\set ") and head.count(" ") == 1:
        return _prefixed(SETTINGS, word, "setting")
    if head.lower().startswith("help ") and head.count(" ") == 1:
        from kql.crashcmd import COMMANDS
        from kql.tables import catalog
        return _prefixed(list(COMMANDS) + list(catalog()), word, "help")
    if head == word:  # the first word
        from kql.crashcmd import COMMANDS
        return (_prefixed(STARTERS, word, "SQL", upper=True)
                + _prefixed(COMMANDS, word, "crash command")
                + _prefixed(BACKSLASH, word, "shell"))
    return _words(whole[stmt_start:] if len(whole) > stmt_start else head, word)


def _prefixed(names, word: str, meta: str, upper: bool = False):
    w = word.upper() if upper else word.lower()
    out = []
    for n in names:
        key = n.upper() if upper else n.lower()
        if key.startswith(w):
            out.append((n if not upper or word.isupper() or not word else n.lower(),
                        -len(word), meta))
    return out


def _scope(stmt: str):
    """The table specs the statement's FROM/JOIN name: (alias, spec, args)."""
    from kql.tables import catalog
    cat = catalog()
    out = []
    for m in _FROM.finditer(stmt):
        spec = cat.get(m.group(2).lower())
        if spec is None:
            continue
        args = re.findall(r"'([^']*)'", m.group(4) or "")
        out.append(((m.group(5) or m.group(2)).lower(), spec, args))
    return out


def _words(stmt: str, word: str):
    from kql.tables import catalog
    cat = catalog()
    out = []
    seen = set()
    lw = word.lower()
    for alias, spec, _args in _scope(stmt):
        for c in spec.columns:
            if c.name.lower().startswith(lw) and c.name not in seen:
                seen.add(c.name)
                out.append((c.name, -len(word), f"{spec.name} column"))
    for name, spec in cat.items():
        if name.startswith(lw):
            out.append((name, -len(word), "table" if spec.params is None else "table function"))
    out += _prefixed(SQL_FUNCTIONS, word, "function")
    out += _prefixed(KEYWORDS, word, "keyword", upper=True)
    return out


# ---------------------------------------------------------------- members

def _object_type(kernel, stmt: str, ref: str) -> str | None:
    """The C type of the object column ``ref`` (``task``, ``t.task``)."""
    qual, _, col = ref.rpartition(".")
    for alias, spec, args in _scope(stmt):
        if qual and qual.lower() != alias:
            continue
        c = spec.column(col)
        if c is None or not c.object_type:
            continue
        if spec.object_type_fn is not None and spec.object_column == c.name:
            try:
                t = spec.object_type_fn(kernel, tuple(args))
            except Exception:  # noqa: BLE001 - a half-typed statement
                t = None
            if t:
                return t
        return c.object_type
    # before FROM is typed: a column name that is one C type in every table
    from kql.tables import catalog
    found = {c.object_type for spec in catalog().values() if spec.params is None
             for c in spec.columns if c.name == col and c.object_type}
    return found.pop() if len(found) == 1 else None


def _members(kernel, whole: str, ref: str, path: str, partial: str):
    stmt = whole
    type_name = _object_type(kernel, stmt, ref)
    if type_name is None:
        return []
    try:
        t = kernel.types.find_type(type_name)
        for seg in re.findall(r"(?:->|\.)(\w+)|\[\d*\]", path):
            t = _target(t)
            if seg:
                m, _off = t.member(seg)
                t = m.type
        t = _target(t)
    except (LookupError, AttributeError, TypeError):
        return []
    if t.kind not in ("struct", "union"):
        return []
    from kql.types import iter_members_flat
    tname = t.type_name()
    return [(name, -len(partial), f"{m.type.type_name()}  ({tname})")
            for name, m, _off in iter_members_flat(t) if name.startswith(partial)]


def _target(t):
    """Through typedefs, pointers and arrays to the struct a path continues in."""
    t = t.strip_typedefs()
    while t.kind in ("pointer", "array") and t.target is not None:
        t = t.target.strip_typedefs()
    return t


# ---------------------------------------------------------------- names

def _symbols(kernel, prefix: str, limit: int = 200):
    table = kernel.symbols
    names = table.names
    order = table.name_order
    i = bisect.bisect_left(order, prefix, key=names.__getitem__)
    out = []
    last = None
    while i < len(order) and len(out) < limit:
        n = names[order[i]]
        if not n.startswith(prefix):
            break
        if n != last:
            out.append((n, -len(prefix), "symbol"))
            last = n
        i += 1
    return out


def type_names(kernel) -> list[str]:
    """Every named type of the dump's BTF as C spells it, sorted (cached)."""
    names = kernel.cache.get("completion_type_names")
    if names is None:
        found = set()
        btf = getattr(kernel, "btf", None)
        for kind, name in getattr(btf, "_named", {}) or {}:
            if kind in ("struct", "union", "enum"):
                found.add(f"{kind} {name}")
            elif kind == "base":
                found.add(name)
        names = kernel.cache["completion_type_names"] = sorted(found)
    return names


def _types(kernel, prefix: str, limit: int = 200):
    names = type_names(kernel)
    out = []
    i = bisect.bisect_left(names, prefix)
    while i < len(names) and names[i].startswith(prefix) and len(out) < limit:
        out.append((names[i], -len(prefix), "type"))
        i += 1
    if len(out) < limit and " " not in prefix:  # 'task_s' → 'struct task_struct'
        for kind in ("struct ", "union "):
            j = bisect.bisect_left(names, kind + prefix)
            while j < len(names) and names[j].startswith(kind + prefix) and len(out) < limit:
                out.append((names[j], -len(prefix), "type"))
                j += 1
    return out
