"""DuckDB parity over real SQL (issue #12): of the SELECT-family statements
DuckDB parses, kql parses ≥ 99%, and for ≥ 99.9% of those
``parse_one(text).to_sql()`` gives DuckDB the same parse tree; the parser
raises nothing but ParseError.  The corpus (JSON lines: corpus, src, sql) is
``$KQL_SQL_CORPUS`` or the shared dev corpus; the normal suite checks every
10th statement, ``pytest -m corpus`` all of them (see tests/sql_corpus.py)."""

from __future__ import annotations

import os

import pytest

import sql_corpus


def _rows():
    path = sql_corpus.DEFAULT_CORPUS
    if not os.path.exists(path):
        pytest.fail(f"SQL corpus {path} is missing (set KQL_SQL_CORPUS)")
    return sql_corpus.load(path)


def _check(rows, parse_rate):
    stats = sql_corpus.run(rows)
    c = stats["counts"]
    failures = {k: [(r["src"], d) for r, d in v[:5]] for k, v in stats["failures"].items()
                if k in ("crash", "tree")}
    assert c.get("crash", 0) == 0, failures
    assert stats["parse_rate"] >= parse_rate, stats["counts"]
    assert stats["tree_rate"] >= 0.999, failures


def test_corpus_sample():
    _check(_rows()[::10], 0.985)


@pytest.mark.corpus
def test_corpus_full():
    _check(_rows(), 0.99)
