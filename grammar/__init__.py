"""kql's query language: grammar (kql.lark), AST (ast.py) and parser (parser.py).

``parse(text) -> list[Statement]`` and ``parse_one(text) -> Statement``; every
error is a :class:`kql.errors.ParseError`.
"""

from .parser import parse, parse_one

__all__ = ["parse", "parse_one"]
