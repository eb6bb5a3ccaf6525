"""DuckDB parity over a corpus of SQL statements.

For each statement DuckDB parses: does kql parse it, and does
``parse_one(text).to_sql()`` give DuckDB the same parse tree as the original
text (``json_serialize_sql``, ignoring positions and identifier case)?

    python tests/sql_corpus.py [corpus.jsonl.gz] [--show parse|tree|crash] [--limit N]

prints the parse rate, the tree-equality rate and (with ``--show``) the
statements that failed.  The corpus is JSON lines with ``corpus``, ``src``
and ``sql``.  ``tests/test_sql_corpus.py`` runs the same check.
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json
import os
import sys
import time

# The dev corpus (shared/sql-corpus/dev.jsonl.gz: SELECT-family statements from
# DuckDB's tests, sqlglot's fixtures and TPC-H/TPC-DS, all parsed by DuckDB),
# kept in the repository so the suite runs on any machine.
DEFAULT_CORPUS = os.environ.get(
    "KQL_SQL_CORPUS", os.path.join(os.path.dirname(os.path.abspath(__file__)), "data",
                                   "sql-corpus-dev.jsonl.gz"))

# Keys of json_serialize_sql's output that hold identifiers (compared
# case-insensitively) and keys that only say where a node was written.
_IDENT_KEYS = frozenset(("column_names", "table_name", "alias", "schema_name", "catalog_name",
                         "function_name", "ctename", "cte_name", "column_name_alias",
                         "exclude_list", "name", "relation_name", "expected_names", "path"))
_DROP_KEYS = frozenset(("query_location", "query_location_length"))


def load(path: str = DEFAULT_CORPUS) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _norm(value, key=None):
    if isinstance(value, dict):
        return {k: _norm(v, k) for k, v in value.items() if k not in _DROP_KEYS}
    if isinstance(value, list):
        return [_norm(v, key) for v in value]
    if isinstance(value, str) and key in _IDENT_KEYS:
        return value.lower()
    return value


class Serializer:
    """``json_serialize_sql`` through one in-memory DuckDB connection."""

    def __init__(self):
        import duckdb
        self.con = duckdb.connect()

    def tree(self, sql: str):
        """The normalised parse tree, or None if DuckDB cannot serialize it."""
        try:
            raw = self.con.execute("SELECT json_serialize_sql(?::VARCHAR)", [sql]).fetchone()[0]
        except Exception:
            return None
        got = json.loads(raw)
        if got.get("error"):
            return None
        return _norm(got["statements"])


def check(sql: str, ser: Serializer) -> tuple[str, str]:
    """('ok'|'parse'|'tree'|'crash'|'skip', detail) for one statement."""
    from kql.errors import ParseError
    from kql.grammar import parse_one

    try:
        stmt = parse_one(sql)
    except ParseError as e:
        return "parse", str(e).splitlines()[0]
    except Exception as e:  # anything else from the parser is a bug
        return "crash", repr(e)
    from kql.grammar.ast import NotLowered
    try:
        out = stmt.to_sql()
    except NotLowered as e:  # a member path: the planner decides (docs/SQL.md)
        return "kernel", str(e)
    except Exception as e:
        return "crash", f"to_sql: {e!r}"
    want = ser.tree(sql)
    if want is None:
        # DuckDB serializes SELECT-like statements only: compare what EXPLAIN
        # explains, and a PIVOT statement as a subquery
        from kql.grammar import ast as A
        if isinstance(stmt, (A.Explain, A.Describe)):
            inner = stmt.statement
            sql, out = sql[inner.span[0]:inner.span[1]], inner.to_sql()
        elif isinstance(stmt, A.Syntax):
            sql, out = (f"SELECT * FROM ({x.strip().rstrip(';')})" for x in (sql, out))
        want = ser.tree(sql)
    if want is None:
        return "skip", "DuckDB cannot serialize it"
    got = ser.tree(out)
    if got != want:
        return "tree", out
    return "ok", ""


def run(rows, show=(), out=sys.stdout) -> dict:
    ser = Serializer()
    counts = collections.Counter()
    failures = collections.defaultdict(list)
    for row in rows:
        status, detail = check(row["sql"], ser)
        counts[status] += 1
        if status != "ok":
            failures[status].append((row, detail))
    total = sum(counts.values())
    parsed = total - counts["parse"] - counts["crash"]
    compared = parsed - counts["skip"] - counts["kernel"]
    stats = {
        "total": total,
        "parsed": parsed,
        "parse_rate": parsed / total if total else 1.0,
        "tree_rate": counts["ok"] / compared if compared else 1.0,
        "counts": dict(counts),
        "failures": failures,
    }
    for kind in show:
        for row, detail in failures.get(kind, ()):
            print(f"--- {kind} {row['corpus']}:{row['src']}\n{row['sql']}\n>>> {detail}", file=out)
    return stats


def tpch_timings(rows) -> tuple[float, list[float]]:
    """Median parse time (ms) of the TPC-H queries in the corpus."""
    from kql.grammar import parse_one
    times = []
    for row in rows:
        if row["corpus"] not in ("tpch22", "sqlglot_tpch"):
            continue
        best = min(_time(parse_one, row["sql"]) for _ in range(5))
        times.append(best * 1000)
    times.sort()
    return (times[len(times) // 2] if times else 0.0), times


def _time(fn, arg) -> float:
    t = time.perf_counter()
    try:
        fn(arg)
    except Exception:
        pass
    return time.perf_counter() - t


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("corpus", nargs="?", default=DEFAULT_CORPUS)
    ap.add_argument("--show", action="append", default=[],
                    choices=["parse", "tree", "crash", "skip"])
    ap.add_argument("--limit", type=int)
    ap.add_argument("--only", help="only rows whose corpus field equals this")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    from kql.grammar.parser import get_parser
    get_parser()
    load_ms = (time.perf_counter() - t0) * 1000
    rows = load(args.corpus)
    if args.only:
        rows = [r for r in rows if r["corpus"] == args.only]
    if args.limit:
        rows = rows[:args.limit]
    stats = run(rows, args.show)
    median, _ = tpch_timings(rows)
    c = stats["counts"]
    print(f"statements: {stats['total']}  parsed: {stats['parsed']} "
          f"({stats['parse_rate']:.2%})  same tree: {c.get('ok', 0)} "
          f"({stats['tree_rate']:.2%} of those DuckDB serializes)  "
          f"tree diffs: {c.get('tree', 0)}  crashes: {c.get('crash', 0)}  "
          f"unserializable: {c.get('skip', 0)}")
    print(f"grammar load: {load_ms:.1f} ms  TPC-H median parse: {median:.2f} ms")
    return 0 if not c.get("crash") else 1


if __name__ == "__main__":
    sys.exit(main())
