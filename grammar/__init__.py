"""kql's query language: grammar (kql.lark), AST (ast.py) and parser (parser.py).

``parse(text) -> list[Statement]`` and ``parse_one(text) -> Statement``; every
error is a :class:`kql.errors.ParseError` with the position of the offending
token.  The AST classes live in :mod:`kql.grammar.ast`.
"""

from . import ast
from .parser import parse, parse_one

__all__ = ["ast", "parse", "parse_one"]
