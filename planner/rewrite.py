"""Walking and rebuilding the statement (the AST is immutable: a rewrite
returns new nodes and shares the unchanged ones).

>>> from kql.grammar import parse_one
>>> q = parse_one("SELECT a FROM t WHERE a = 1 AND b > 2 AND c")
>>> [e.to_sql() for e in conjuncts(q.where)]
['a = 1', 'b > 2', 'c']
>>> def up(node):
...     return node.replace(name=node.name.upper()) if isinstance(node, A.Column) else None
>>> rewrite(q, up).to_sql()
'SELECT A FROM t WHERE A = 1 AND B > 2 AND C'
>>> q.to_sql()
'SELECT a FROM t WHERE a = 1 AND b > 2 AND c'
"""

from __future__ import annotations

from kql.grammar import ast as A


def rewrite(value, fn):
    """Rebuild ``value`` bottom-up, calling ``fn(node)`` on every Node; ``fn``
    returns a replacement or None (keep).  Queries nested in expressions are
    left to ``fn`` (it sees Subquery/Exists/InSubquery nodes first)."""
    if isinstance(value, tuple):
        new = tuple(rewrite(v, fn) for v in value)
        return value if all(a is b for a, b in zip(new, value)) else new
    if not isinstance(value, A.Node):
        return value
    got = fn(value)
    if got is not None:
        return got
    return rewrite_fields(value, fn)


def rewrite_fields(node, fn):
    """``node`` with ``rewrite(…, fn)`` applied to each of its fields (not
    to ``node`` itself)."""
    return node.map_fields(lambda value: rewrite(value, fn))


def selects(stmt):
    """Every SELECT in the statement, outer ones first."""
    for n in stmt.walk():
        if isinstance(n, A.Select):
            yield n


def conjuncts(e):
    """The terms of ``a AND b AND …``."""
    if isinstance(e, A.BinaryOp) and e.op == "AND":
        yield from conjuncts(e.left)
        yield from conjuncts(e.right)
    elif e is not None:
        yield e
