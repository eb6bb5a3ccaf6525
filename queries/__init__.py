"""Saved queries: ``queries/*.kql`` shipped with kql, plus the user's own.

A saved query is a file with a header of ``--`` comment lines, then one or
more ``;``-separated statements::

    -- name: hung-tasks
    -- description: Tasks in uninterruptible sleep (D state) with their stacks
    -- param: min_count = 1   smallest group to show
    SELECT ... WHERE n >= :min_count

``:name`` placeholders are replaced by the parameter's value as an SQL literal
(numbers of ASCII digits stay numbers, anything else becomes a quoted
string).  A placeholder is a value: ``:name`` inside a string, a quoted
identifier or a comment is left alone, so a value can never become text
of the query.  Run one with
``kql DUMP @hung-tasks --param min_count=2``; ``kql queries`` lists them.
User directories: ``$KQL_QUERY_PATH`` (``:``-separated) and
``~/.config/kql/queries``; a user query with a shipped query's name wins.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from kql.errors import QueryError

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Param:
    name: str
    default: str | None
    doc: str = ""


@dataclass(frozen=True)
class SavedQuery:
    name: str
    description: str
    body: str
    path: str
    params: tuple[Param, ...] = field(default_factory=tuple)

    def render(self, values: dict[str, str] | None = None) -> str:
        """The body with ``:param`` placeholders replaced by SQL literals."""
        values = dict(values or {})
        known = {p.name for p in self.params}
        unknown = sorted(set(values) - known)
        if unknown:
            raise QueryError(f"@{self.name} has no parameter {unknown[0]!r} "
                             f"(parameters: {', '.join(sorted(known)) or 'none'})")
        resolved = {}
        for p in self.params:
            v = values.get(p.name, p.default)
            if v is None:
                raise QueryError(f"@{self.name} needs --param {p.name}=VALUE")
            resolved[p.name] = _literal(v)

        def sub(m):
            if m.group(1) is None:  # a string, quoted identifier or comment
                return m.group(0)
            return resolved.get(m.group(1), m.group(0))
        return _PLACEHOLDER.sub(sub, self.body)


# Strings, quoted identifiers and comments are matched whole (and kept);
# a placeholder is a ``:name`` anywhere else, not after ``:`` (a ``::`` cast)
# or a word character.
_PLACEHOLDER = re.compile(r"'(?:[^']|'')*'?|\"(?:[^\"]|\"\")*\"?|--[^\n]*|/\*.*?(?:\*/|\Z)"
                          r"|(?<![:\w]):([A-Za-z_]\w*)", re.S)


def _literal(v: str) -> str:
    if re.fullmatch(r"-?[0-9]+(\.[0-9]+)?|0x[0-9a-fA-F]+", v.strip(), re.A):
        # parenthesised when negative: `x -:n` must not become a `--` comment
        return f"({v.strip()})" if v.strip().startswith("-") else v.strip()
    return "'" + v.replace("'", "''") + "'"


_HEADER = re.compile(r"^--\s*(name|description|param)\s*:\s*(.*)$")


def parse_file(path: str | os.PathLike) -> SavedQuery:
    """One saved query; QueryError if the file cannot be read as UTF-8 text
    (a FIFO, a directory, a dangling link, unreadable, invalid UTF-8)."""
    from kql.atomic import open_regular
    try:
        with open_regular(path, "saved query") as f:
            text = f.read().decode("utf-8")
    except OSError as e:
        raise QueryError(f"{path}: cannot read: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise QueryError(f"{path}: not UTF-8 text (byte {e.start})") from None
    meta: dict[str, str] = {}
    params: list[Param] = []
    body_lines = []
    in_header = True
    for line in text.splitlines():
        m = _HEADER.match(line.strip()) if in_header else None
        if m:
            key, value = m.group(1), m.group(2).strip()
            if key == "param":
                pm = re.match(r"([A-Za-z_]\w*)\s*(?:=\s*(\S+))?\s*(.*)$", value)
                if not pm:
                    raise QueryError(f"{path}: bad param line: {line!r}")
                params.append(Param(pm.group(1), pm.group(2), pm.group(3).strip()))
            else:
                meta[key] = value
            continue
        if in_header and not line.strip():
            continue
        in_header = False
        body_lines.append(line)
    name = meta.get("name") or Path(path).stem
    return SavedQuery(name=name, description=meta.get("description", ""),
                      body="\n".join(body_lines).strip() + "\n", path=str(path),
                      params=tuple(params))


def search_path() -> list[Path]:
    dirs = [HERE]
    dirs.append(Path(os.path.expanduser("~/.config/kql/queries")))
    for d in os.environ.get("KQL_QUERY_PATH", "").split(":"):
        if d:
            dirs.append(Path(d))
    return dirs


def _print_warning(message: str) -> None:
    import sys
    print(f"kql: warning: {message}", file=sys.stderr)


def all_queries(warn=_print_warning) -> dict[str, SavedQuery]:
    """Every saved query by name; a file that cannot be read or parsed is
    skipped and ``warn(message)`` told why (the others still work)."""
    out: dict[str, SavedQuery] = {}
    for d in search_path():
        try:
            files = sorted(d.glob("*.kql")) if d.is_dir() else []
        except OSError as e:
            warn(f"saved queries in {d} skipped: {e.strerror or e}")
            continue
        for f in files:
            try:
                q = parse_file(f)
            except QueryError as e:
                warn(f"saved query skipped: {e.one_line()}")
                continue
            out[q.name] = q
    return out


def get(name: str, warn=_print_warning) -> SavedQuery:
    qs = all_queries(warn)
    if name in qs:
        return qs[name]
    import difflib
    close = difflib.get_close_matches(name, list(qs), n=1)
    hint = f"; did you mean @{close[0]}?" if close else " (kql queries lists them)"
    raise QueryError(f"no saved query named @{name}{hint}")
