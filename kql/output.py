"""Write results: table (tabulate), csv, json, jsonl, parquet, arrow.

Table output shows addresses in hex and lists one item per line; machine
formats keep raw values (addresses as integers).  Files are written
atomically: a temporary file in the same directory, then a rename, so an
interrupted export never leaves a partial file under the real name.
"""

from __future__ import annotations

import csv
import decimal
import io
import json
import sys

from kql.atomic import atomic_file  # noqa: F401  (re-exported for callers)

FORMATS = ("table", "csv", "json", "jsonl", "parquet", "arrow")
BINARY_FORMATS = ("parquet", "arrow")


def _cell(v, is_addr: bool):
    if v is None:
        return "NULL"
    if is_addr and isinstance(v, int):
        return f"{v:#x}"
    if isinstance(v, list):
        return "\n".join("NULL" if x is None else str(x) for x in v)
    if isinstance(v, float):
        return f"{v:g}" if abs(v) < 1e15 else str(v)
    if isinstance(v, bool):
        return "true" if v else "false"
    return v


def _columns(table):
    """A pyarrow.Table or kql Columns as Columns (what the writers read)."""
    from kql.tables.base import Columns
    return table if isinstance(table, Columns) else Columns.from_arrow(table)


def _is_number(t) -> bool:
    name = str(t)
    return name.startswith(("int", "uint")) or name in ("halffloat", "float", "double")


def format_table(table, address_columns: set[str]) -> str:
    from tabulate import tabulate

    table = _columns(table)
    cols = table.column_names
    addr = [c in address_columns for c in cols]
    rows = [[_cell(v, a) for v, a in zip(row, addr)]
            for row in zip(*(table.pylist(i) for i in range(len(cols))))] if cols else []
    numeric = [_is_number(t) for t in table.types]
    colalign = ["left" if a or not n else "right" for a, n in zip(addr, numeric)]
    text = tabulate(rows, headers=cols, tablefmt="simple", disable_numparse=True,
                    colalign=colalign or None)
    return text + f"\n({table.num_rows} row{'s' if table.num_rows != 1 else ''})\n"


def _jsonable(v):
    if isinstance(v, decimal.Decimal):  # DuckDB's sum() of integers, 1.5 literals
        return int(v) if v == v.to_integral_value() else float(v)
    if isinstance(v, (bytes, bytearray)):
        return v.hex()
    if hasattr(v, "isoformat"):
        return v.isoformat()
    if isinstance(v, list):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    return v


def write(table, fmt: str, out=None, path: str | None = None,
          address_columns: set[str] = frozenset()) -> None:
    """Write ``table`` (a pyarrow.Table or kql Columns) in ``fmt`` to ``path``
    (atomically) or the text stream ``out``."""
    if fmt in BINARY_FORMATS:
        if path is None:
            raise ValueError(f"--format {fmt} needs -o FILE")
        import pyarrow as pa
        table = _columns(table).to_arrow()
        with atomic_file(path, "wb") as f:
            if fmt == "parquet":
                import pyarrow.parquet as pq
                pq.write_table(table, f)
            else:
                with pa.ipc.new_file(f, table.schema) as w:
                    w.write_table(table)
        return
    text = render(table, fmt, address_columns)
    if path is not None:
        with atomic_file(path, "w") as f:
            f.write(text)
    else:
        (out or sys.stdout).write(text)


def render(table, fmt: str, address_columns: set[str] = frozenset()) -> str:
    table = _columns(table)
    if fmt == "table":
        return format_table(table, address_columns)
    names = table.column_names
    tuples = zip(*(table.pylist(i) for i in range(len(names))))
    if fmt in ("json", "jsonl"):
        names = _unique(names)  # object keys: a second "pid" becomes "pid_1"
    if fmt == "json":
        return json.dumps([_jsonable(dict(zip(names, r))) for r in tuples], indent=1) + "\n"
    if fmt == "jsonl":
        return "".join(json.dumps(_jsonable(dict(zip(names, r)))) + "\n" for r in tuples)
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(names)
        # one field per column, even when two columns share a name
        w.writerows(["" if v is None else json.dumps(v) if isinstance(v, list) else v
                     for v in r] for r in tuples)
        return buf.getvalue()
    raise ValueError(f"unknown format {fmt!r} (one of {', '.join(FORMATS)})")


def _unique(names: list[str]) -> list[str]:
    seen: set[str] = set()
    out = []
    for n in names:
        u, i = n, 0
        while u in seen:
            i += 1
            u = f"{n}_{i}"
        seen.add(u)
        out.append(u)
    return out
