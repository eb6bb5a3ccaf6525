"""Query text → AST (:mod:`kql.grammar.ast`), with kql's own errors.

``parse(text)`` returns the statements (separated by ``;``); ``parse_one``
insists on exactly one.  Every failure is a :class:`kql.errors.ParseError`
whose ``pos``/``end`` point at the offending token; no Lark exception leaves
this module.

The Lark parser (LALR over kql.lark, fed by :class:`KqlLexer`) is built once
per process, on first use, from a pickled table cached in
``$XDG_CACHE_HOME/kql`` (``~/.cache/kql``); without a usable cache it is
built in memory (~0.3 s).
"""

from __future__ import annotations

import difflib
import os
import re
import threading

from lark import Lark, Token
from lark.lexer import Lexer
from lark.visitors import Transformer_NonRecursive
from lark.exceptions import UnexpectedInput, UnexpectedToken, VisitError

from kql.errors import ParseError

from . import ast as A

GRAMMAR_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "kql.lark")

_lock = threading.Lock()
_parser: Lark | None = None


# Keywords reserved everywhere: the lexer always reads them as keywords, so
# `SELECT FROM t` is an error rather than a column named "from".  Every other
# keyword (OFFSET, END, LEFT, FIRST, ROWS, FILTER, …) is a keyword only where
# the parser state accepts it and a plain name elsewhere (`SELECT offset, end
# FROM vmas`, `left(comm, 3)`).
RESERVED_TERMINALS = frozenset((
    "_SELECT", "_FROM", "_WHERE", "_GROUP", "_HAVING", "_ORDER", "_LIMIT", "_BY", "UNION",
    "INTERSECT", "EXCEPT", "_JOIN", "_ON", "_USING", "_AND", "_OR", "NOT", "_CASE", "_WHEN",
    "_THEN", "_ELSE", "_AS", "_IN", "_IS", "NULL", "TRUE", "FALSE", "_BETWEEN", "LIKE",
    "ILIKE", "CAST", "_EXISTS", "_WITH", "DISTINCT", "ALL",
))

# One regex for the whole token set.  Order matters only where a prefix of one
# alternative matches another (HEX before FLOAT before INT; longer operators
# before their prefixes).  Digits are ASCII only (\d would read other scripts'
# digits as numbers); strings are unrolled loops, which the regex engine matches
# in constant memory (a 10 MB literal took GBs).
_TOKEN_RE = re.compile(r"""
    (?P<WS>\s+)
  | (?P<LINE_COMMENT>--[^\n]*)
  | (?P<BLOCK_COMMENT>/\*[\s\S]*?\*/)
  | (?P<OPEN_COMMENT>/\*)
  | (?P<DOLLAR_STRING>\$\$[\s\S]*?\$\$|\$(?P<tag>[^\s$'"(),;0-9][^\s$'"(),;]*)\$[\s\S]*?\$(?P=tag)\$)
  | (?P<POSITIONAL_REF>\#[0-9]+)
  | (?P<PARAM>\?[0-9]*|\$[0-9]+|\$[A-Za-z_][A-Za-z0-9_]*)
  | (?P<HEX>0[xX][0-9a-fA-F]+)
  | (?P<FLOAT>(?:[0-9][0-9_]*\.(?:[0-9][0-9_]*)?|\.[0-9][0-9_]*)(?:[eE][+-]?[0-9][0-9_]*)?|[0-9][0-9_]*[eE][+-]?[0-9][0-9_]*)
  | (?P<INT>[0-9][0-9_]*)
  | (?P<PREFIXED_STRING>[eE]'[^'\\]*(?:(?:\\[\s\S]|'')[^'\\]*)*'|[xXbB]'[^']*')
  | (?P<STRING>'[^']*(?:''[^']*)*')
  | (?P<QUOTED_NAME>"[^"]*(?:""[^"]*)*")
  | (?P<NAME>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<OP>->>|<->|<=>|!~~\*|!~~|~~\*|!~\*|->|::|:=|=>|==|!=|<>|<=|>=|<<|>>|\|\||//|\*\*|~~|!~|~\*|\^@|@>|<@|&&
          |[-+*/%~=<>|&(),;.\[\]{}:^@!])
""", re.VERBOSE)

# Operator text → terminal name in kql.lark.
_OP_TERMINALS = {
    "->": "_ARROW", "::": "_DCOLON", "(": "LPAR", ")": "RPAR", ",": "COMMA", ";": "SEMICOLON",
    ".": "DOT", "[": "LSQB", "]": "RSQB", "{": "LBRACE", "}": "RBRACE", ":": "COLON",
    ":=": "COLON_EQ", "=>": "FAT_ARROW", "*": "STAR", "~": "TILDE",
    "+": "ADD_OP", "-": "ADD_OP", "/": "MUL_OP", "%": "MUL_OP", "//": "IDIV_OP",
    "^": "POW_OP", "**": "POW_OP",
    "=": "COMP_OP", "==": "COMP_OP", "!=": "COMP_OP", "<>": "COMP_OP", "<": "COMP_OP",
    "<=": "COMP_OP", ">": "COMP_OP", ">=": "COMP_OP",
    "|": "BIT_OP", "&": "BIT_OP", "<<": "BIT_OP", ">>": "BIT_OP", "||": "BIT_OP",
    "->>": "OTHER_OP", "@>": "OTHER_OP", "<@": "OTHER_OP", "&&": "OTHER_OP", "^@": "OTHER_OP",
    "~~": "OTHER_OP", "!~~": "OTHER_OP", "~~*": "OTHER_OP", "!~~*": "OTHER_OP", "!~": "OTHER_OP",
    "~*": "OTHER_OP", "!~*": "OTHER_OP", "<->": "OTHER_OP", "<=>": "OTHER_OP", "@": "OTHER_OP",
    "!": "OTHER_OP",
}
_SKIP = frozenset(("WS", "LINE_COMMENT", "BLOCK_COMMENT"))

# Keywords that are keywords only when the next character says so: a
# function-like form `extract(`, `columns(`; `interval '1' day`; `lambda x:`.
# Elsewhere they are names (`SELECT position, trim FROM t`).
_NEEDS_NEXT = {
    "EXTRACT": "(", "SUBSTRING": "(", "POSITION": "(", "TRIM": "(", "OVERLAY": "(",
    "COLUMNS_KW": "(", "ARRAY": "[(", "MAP": "{", "INTERVAL": "'(0123456789-", "TRY_CAST": "(",
}
_UNIT = re.compile(r"(?i:(year|month|day|hour|minute|second|millisecond|microsecond|week|quarter"
                   r"|decade|century|centuries|millennium|millennia)s?)\Z")
_EXCEPT_COLUMNS = re.compile(r"(?>\s*)(?:\((?>\s*)(?!(?i:select|with|from|values|table)\b|\()"
                             r"|(?!(?i:select|with|from|values|table|all|distinct)\b)[A-Za-z_\"])")
_UNPACK = re.compile(r"(?i:columns)\s*\(")
_NEXT_PAREN = re.compile(r"(?>\s*)\(")
_PERCENT = re.compile(r"(?>\s*)(?:$|[;)]|(?i:offset|limit)\b)")
_TRAILING_COMMA = re.compile(r"(?:\s|--[^\n]*|/\*[\s\S]*?\*/)*(?:[)\]}]|(?i:from)\b)")
_LAMBDA_NEXT = re.compile(r'\s*(?:[A-Za-z_][A-Za-z0-9_]*|"(?:[^"]|"")*")\s*[:,]')
# The first word of statements that are not queries.
NON_QUERY_WORDS = frozenset("""
create insert update delete drop alter copy attach detach set reset pragma install load
use checkpoint force vacuum begin start commit rollback abort end export import call
prepare execute deallocate truncate comment merge show analyze upsert replace
""".split())


class KqlLexer(Lexer):
    """A one-regex lexer that asks the LALR parser state which keywords it
    accepts (what Lark's contextual lexer does, without building a scanner
    per parser state: that took most of the start-up time).

    Unterminated strings, quoted names and comments, and stray characters,
    are reported here with their own messages; so are statements that are
    not queries (CREATE, COPY, SET, …).
    """

    __future_interface__ = 2

    def __init__(self, lexer_conf):
        self.keywords: dict[str, str] = {}
        for term in lexer_conf.terminals:
            pattern = term.pattern
            if pattern.type == "str" and pattern.value[:1].isalpha():
                self.keywords[pattern.value.lower()] = term.name

    def lex(self, lexer_state, parser_state):
        text = lexer_state.text.text if hasattr(lexer_state.text, "text") else lexer_state.text
        keywords = self.keywords
        states = parser_state.parse_conf.states if parser_state is not None else None
        match = _TOKEN_RE.match
        pos, n = 0, len(text)
        line, line_start = 1, 0
        prev, prev_end = None, -1
        while pos < n:
            m = match(text, pos)
            if m is None:
                raise _lex_error(text, pos)
            kind = m.lastgroup
            if kind == "tag":
                kind = "DOLLAR_STRING"
            value = m.group()
            end = m.end()
            if kind == "OPEN_COMMENT":
                raise _lex_error(text, pos)
            if kind in _SKIP:
                if kind == "BLOCK_COMMENT" or kind == "WS":
                    nl = value.count("\n")
                    if nl:
                        line += nl
                        line_start = pos + value.rfind("\n") + 1
                pos = end
                continue
            # A word right after '->' or '.' (no space between) is a member
            # name even if it is a keyword: task->order, x.in
            if kind == "NAME" and not (prev_end == pos and prev in ("DOT", "_ARROW")):
                term = keywords.get(value.lower())
                if term is not None:
                    accepted = states is None or term in states[parser_state.position]
                    if term in RESERVED_TERMINALS:
                        kind = term
                    elif accepted and _next_allows(term, text, end):
                        kind = term
                if kind == "EXCEPT" and states is not None and _EXCEPT_COLUMNS.match(text, end) \
                        and "EXCLUDE" in states[parser_state.position]:
                    kind = "EXCLUDE"  # * EXCEPT (a, b): DuckDB's other spelling
                if kind == "NAME" and states is not None and _UNIT.match(value) \
                        and "INTERVAL_UNIT" in states[parser_state.position]:
                    kind = "INTERVAL_UNIT"
                if kind == "NAME" and states is not None and value.lower() in NON_QUERY_WORDS \
                        and "NON_QUERY" in states[parser_state.position]:
                    raise ParseError(f"kql runs queries only (SELECT, WITH, FROM, VALUES, "
                                     f"EXPLAIN, …): {value.upper()} is not a query",
                                     text, pos, end)
            elif kind == "OP":
                kind = _OP_TERMINALS[value]
                if value == "%" and states is not None and _PERCENT.match(text, end) \
                        and "PERCENT" in states[parser_state.position]:
                    kind = "PERCENT"  # LIMIT 10%
                if kind == "STAR" and _UNPACK.match(text, end):
                    kind = "UNPACK_STAR"  # *COLUMNS(…)
                if kind == "COMMA" and states is not None \
                        and "VALUES_COMMA" in states[parser_state.position] \
                        and _NEXT_PAREN.match(text, end):
                    kind = "VALUES_COMMA"  # FROM VALUES (1), (2): one more row
                if kind == "COMMA" and _TRAILING_COMMA.match(text, end):
                    pos = end  # a trailing comma: [1, 2,], f(a,), SELECT a, FROM
                    continue
                if kind == "_ARROW" and not (end < n and (text[end].isalpha() or text[end] == "_")):
                    # `x -> x + 1`, `j->'$.a'`: DuckDB's lambda / JSON arrow
                    kind = "LAMBDA_ARROW"
            yield Token(kind, value, pos, line, pos - line_start + 1, line,
                        end - line_start + 1, end)
            prev, prev_end = kind, end
            pos = end


def _next_allows(term: str, text: str, end: int) -> bool:
    need = _NEEDS_NEXT.get(term)
    if need is None:
        if term == "LAMBDA":
            return _LAMBDA_NEXT.match(text, end) is not None
        return True
    i = end
    while i < len(text) and text[i].isspace():
        i += 1
    return i < len(text) and text[i] in need


def _lex_error(text: str, pos: int) -> ParseError:
    ch = text[pos]
    if ch == "'":
        msg = "syntax error: unterminated string literal: missing closing '"
    elif ch == '"':
        msg = 'syntax error: unterminated quoted identifier: missing closing "'
    elif text.startswith("/*", pos):
        msg = "syntax error: unterminated comment: '/*' without '*/'"
    else:
        msg = f"syntax error: unexpected character {ch!r}"
    return ParseError(msg, text, pos, pos + 1)


_OPTIONS = dict(parser="lalr", propagate_positions=True, maybe_placeholders=True)
# Bump when KqlLexer or the tree shape changes in a way a cached table would miss.
_CACHE_VERSION = "2"


def _cache_path(grammar: str) -> str:
    import hashlib

    import lark

    key = f"{grammar}\0{lark.__version__}\0{sorted(_OPTIONS.items())}\0{_CACHE_VERSION}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "kql", f"grammar-{digest}.lark")


def _build() -> Lark:
    """Load the LALR tables from the user's cache, or build and cache them.

    Building takes ~0.3 s; loading ~15 ms.  The cache file is written
    atomically; any problem with it just means building again.
    """
    import pickle

    with open(GRAMMAR_PATH, encoding="utf-8") as f:
        grammar = f.read()
    path = _cache_path(grammar)
    try:
        with open(path, "rb") as f:
            return Lark.load(f)
    except Exception:  # missing, unreadable, truncated, from another lark: rebuild
        pass
    parser = Lark(grammar, lexer=KqlLexer, **_OPTIONS)
    try:
        from kql.atomic import atomic_file
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with atomic_file(path, "wb") as f:
            parser.save(f)
    except (OSError, pickle.PicklingError):
        pass  # no cache this time: the parser is built and works
    return parser


def get_parser() -> Lark:
    """The process-wide Lark parser, built on first use."""
    global _parser
    if _parser is None:
        with _lock:
            if _parser is None:
                _parser = _build()
    return _parser


# ------------------------------------------------------------------- public

def parse(text: str) -> list[A.Statement]:
    """Parse ``;``-separated statements.  Empty statements are skipped."""
    parser = get_parser()
    try:
        tree = parser.parse(text)
        statements = _Builder(text).transform(tree)
        for stmt in statements:
            _check_stars(stmt, text)
    except UnexpectedInput as e:
        raise _syntax_error(text, e) from None
    except VisitError as e:
        if isinstance(e.orig_exc, ParseError):
            raise e.orig_exc from None
        if isinstance(e.orig_exc, RecursionError):
            raise ParseError("query is nested too deeply", text, 0) from None
        raise ParseError(f"internal parser error: {e.orig_exc!r}", text, 0) from None
    except RecursionError:
        raise ParseError("query is nested too deeply", text, 0) from None
    return statements


def parse_one(text: str) -> A.Statement:
    """Parse exactly one statement (a trailing ``;`` is fine)."""
    statements = parse(text)
    if not statements:
        raise ParseError("empty query: expected a statement such as SELECT …", text, 0)
    if len(statements) > 1:
        second = statements[1]
        raise ParseError("expected one statement, found several", text, second.span[0], second.span[1])
    return statements[0]


# ------------------------------------------------------------- transformer

_COMP = {"==": "=", "!=": "<>"}


def _span(meta) -> tuple[int, int]:
    return (meta.start_pos, meta.end_pos)


def _tok_span(tok: Token) -> tuple[int, int]:
    return (tok.start_pos, tok.end_pos)


def _unquote_name(tok: Token) -> str:
    if tok.type == "QUOTED_NAME":
        return tok.value[1:-1].replace('""', '"')
    return tok.value


# Precedence of generic nodes that are operators (the rest are atoms).
_SYNTAX_PREC = {
    "collate": A.P_COLLATE, "is_bool": A.P_IS, "isnull_kw": A.P_IS, "quantified": A.P_CMP,
    "in_empty": A.P_PRED, "in_expr": A.P_PRED, "like_escape": A.P_PRED, "glob": A.P_PRED, "similar": A.P_PRED,
}


def _nodes(children):
    """The AST nodes among a rule's children, in order (looking into tuples,
    tags and lists)."""
    for c in children:
        if isinstance(c, A.Node):
            yield c
        elif isinstance(c, _Tag):
            yield from _nodes([c.value])
        elif isinstance(c, (tuple, list)):
            yield from _nodes(c)
        elif isinstance(c, dict):
            yield from _nodes(list(c.values()))


class _Tag:
    """A clause or optional part on its way into its parent node."""

    __slots__ = ("kind", "value")

    def __init__(self, kind: str, value):
        self.kind = kind
        self.value = value


class _Builder(Transformer_NonRecursive):
    """Every handler is ``rule(self, meta, children)``.  (Dispatch is done
    here, not by Lark's v_args, which wraps the method on every call.)"""

    def __init__(self, text: str):
        super().__init__(visit_tokens=False)
        self.text = text

    def _call_userfunc(self, tree, new_children=None):
        children = new_children if new_children is not None else tree.children
        f = _HANDLERS.get(tree.data)
        try:
            if f is None:
                return self.__default__(tree.data, children, tree.meta)
            return f(self, tree.meta, children)
        except Exception as e:
            raise VisitError(tree.data, tree, e)

    def _error(self, message: str, span: tuple[int, int]) -> ParseError:
        return ParseError(message, self.text, span[0], span[1])

    # ---- generic: DuckDB syntax without a node of its own

    def __default__(self, data, children, meta):
        return self._syntax(data, children, meta)

    def _syntax(self, kind, children, meta, prec=None, keep=()):
        """An :class:`A.Syntax` of the rule's source text with its child
        nodes as holes (``keep``: nodes to leave as text)."""
        if meta.empty:
            return None
        start, end = meta.start_pos, meta.end_pos
        parts: list = []
        pos = start
        for n in _nodes(children):
            s, e = n.span
            if s < pos or e > end or s == e or any(n is k for k in keep):
                continue
            parts.append(self.text[pos:s])
            parts.append(n)
            pos = e
        parts.append(self.text[pos:end])
        parts = tuple(p for p in parts if p != "")
        return A.Syntax(parts, str(kind), prec=_SYNTAX_PREC.get(str(kind), A.P_ATOM) if prec is None else prec,
                        span=(start, end))

    # ---- statements

    def start(self, meta, children):
        return [c for c in children if c is not None]

    def explain_opts(self, meta, children):
        return A.Explain(children[-1], span=_span(meta))

    def explain(self, meta, children):
        analyze, query = children
        return A.Explain(query, analyze is not None, span=_span(meta))

    def describe(self, meta, children):
        kw, query = children
        return A.Describe(query, kw.value.upper(), span=_span(meta))

    def describe_table(self, meta, children):
        kw, (catalog, dump, name) = children
        ref = A.TableRef(name, dump, catalog=catalog, span=_span(meta))
        return A.Describe(A.Select((A.SelectItem(A.Star(span=ref.span), span=ref.span),),
                                   from_=(ref,), span=ref.span), kw.value.upper(), span=_span(meta))

    def query(self, meta, children):
        with_, body, order_by, limit, offset = children
        if order_by is not None or limit is not None or offset is not None:
            if not isinstance(body, (A.Select, A.SetOp)):
                raise self._error("syntax error: ORDER BY / LIMIT after VALUES: write "
                                  "SELECT * FROM (VALUES …) ORDER BY …", body.span)
            body = body.replace(order_by=order_by.value if order_by else (),
                                limit=limit.value if limit else None,
                                offset=offset.value if offset else None,
                                span=(body.span[0], meta.end_pos))
        if with_ is not None:
            recursive, ctes = with_.value
            return A.With(ctes, body, recursive, span=_span(meta))
        return body

    def with_clause(self, meta, children):
        return _Tag("with", (children[0] is not None, tuple(children[1:])))

    def cte(self, meta, children):
        name, cols, using_key, materialized, query = children
        return A.CTE(name.value, query, tuple(cols) if cols else (), materialized,
                     using_key or (), span=_span(meta))

    def using_key(self, meta, children):
        return tuple(children[1:])

    def materialized(self, meta, children):
        return children[0] is None

    def set_op(self, meta, children):
        left, op, quant, right = children
        all_ = quant is not None and quant in ("ALL", "BY NAME ALL")
        by_name = quant is not None and quant.startswith("BY NAME")
        return A.SetOp(op.value.upper(), left, right, all_, by_name=by_name, span=_span(meta))

    def set_quant(self, meta, children):
        return children[0].type

    def by_name(self, meta, children):
        return "BY NAME"

    def by_name_all(self, meta, children):
        return "BY NAME ALL"

    def paren_query(self, meta, children):
        return children[0]

    def values_clause(self, meta, children):
        return A.Values(tuple(c for c in children[1:] if c is not None), span=_span(meta))

    def row_values(self, meta, children):
        return children[0]

    def select_quant(self, meta, children):
        return children[0]

    def distinct_on(self, meta, children):
        return _Tag("distinct_on", children[-1])

    def select_list(self, meta, children):
        return _Tag("items", tuple(children))

    def select_core(self, meta, children):
        quant = children[0]
        kw = {}
        for c in children[1:]:
            if isinstance(c, _Tag):
                kw[c.kind] = c.value
        if isinstance(quant, _Tag):
            kw["distinct_on"] = quant.value
        items = kw.pop("items")
        return A.Select(items, distinct=isinstance(quant, Token) and quant.type == "DISTINCT",
                        span=_span(meta), **kw)

    def from_first(self, meta, children):
        # FROM t [SELECT …]: the same query as SELECT … FROM t (SELECT * without one)
        from_, quant, *rest = children
        kw = {}
        for c in rest:
            if isinstance(c, _Tag):
                kw[c.kind] = c.value
        if isinstance(quant, _Tag):
            kw["distinct_on"] = quant.value
        items = kw.pop("items", None)
        if items is None:
            items = (A.SelectItem(A.Star(span=_span(meta)), span=_span(meta)),)
        return A.Select(items, from_=from_.value,
                        distinct=isinstance(quant, Token) and quant.type == "DISTINCT",
                        span=_span(meta), **kw)

    def star(self, meta, children):
        return A.Star(span=_span(meta))

    def star_item(self, meta, children):
        star, mods = children
        if mods:
            star = star.replace(modifiers=mods)
        return A.SelectItem(star, span=_span(meta))

    def star_item_mods(self, meta, children):
        expr, mods = children
        if not isinstance(expr, A.Star):
            raise self._error("syntax error: EXCLUDE, REPLACE and RENAME follow '*' or 't.*'",
                              expr.span)
        return A.SelectItem(expr.replace(modifiers=mods), span=_span(meta))

    def star_mods(self, meta, children):
        return tuple(children)

    def dot_star_mods(self, meta, children):
        return tuple(children)

    def star_pattern(self, meta, children):
        text = self.text[meta.start_pos:meta.end_pos]
        return ("PATTERN", " ".join(text[:text.index("'")].split()).upper() + " " + children[-1].value)

    def table_query(self, meta, children):
        _kw, (catalog, dump, name) = children
        ref = A.TableRef(name, dump, catalog=catalog, span=_span(meta))
        return A.Select((A.SelectItem(A.Star(span=ref.span), span=ref.span),), from_=(ref,),
                        span=_span(meta))

    def query_offset_first(self, meta, children):
        with_, body, order_by, offset, limit = children
        return self.query(meta, [with_, body, order_by, limit, offset])

    def fetch(self, meta, children):
        expr = children[2]
        if expr is None:
            expr = A.Literal(1, "int", text="1", span=_span(meta))
        return _Tag("limit", expr)

    def positional_ref(self, meta, children):
        return self._syntax("positional_ref", children, meta)

    def unpack_columns_star(self, meta, children):
        _star, _kw, mods = children
        return A.ColumnsExpr(A.Star(modifiers=mods or (), span=_span(meta)), unpack=True,
                             span=_span(meta))

    def star_mod(self, meta, children):
        kw, *items = children
        return (kw.type, tuple(i for i in items if i is not None))

    def exclude_item(self, meta, children):
        return self.text[meta.start_pos:meta.end_pos]

    def replace_item(self, meta, children):
        return (children[0], children[1].value)

    def rename_item(self, meta, children):
        return (self.text[meta.start_pos:children[-1].start_pos].strip()[:-2].strip(),
                children[-1].value)

    def expr_item(self, meta, children):
        expr, alias = children
        if isinstance(expr, A.Like) and isinstance(expr.expr, A.Star) and alias is None \
                and isinstance(expr.pattern, A.Literal) and expr.pattern.kind == "string":
            # t.* LIKE 'col%': the columns whose name matches
            kw = ("NOT " if expr.negated else "") + ("ILIKE" if expr.case_insensitive else "LIKE")
            star = expr.expr.replace(modifiers=(("PATTERN", f"{kw} {expr.pattern.to_sql()}"),),
                                     span=_span(meta))
            return A.SelectItem(star, span=_span(meta))
        return A.SelectItem(expr, alias.value if alias is not None else None, span=_span(meta))

    def expr_item_str(self, meta, children):
        expr, alias = children
        return A.SelectItem(expr, alias.value[1:-1].replace("''", "'"), span=_span(meta))

    def prefix_alias(self, meta, children):
        name, expr = children
        return A.SelectItem(expr, name.value, span=_span(meta))

    def from_clause(self, meta, children):
        return _Tag("from_", tuple(children))

    def where(self, meta, children):
        return _Tag("where", children[0])

    def group_by_all(self, meta, children):
        return _Tag("group_by_all", True)

    def group_by(self, meta, children):
        return _Tag("group_by", tuple(c for c in children if c is not None))

    def window_clause(self, meta, children):
        return _Tag("windows", tuple(children[1:]))

    def named_window(self, meta, children):
        name, spec = children
        return (name.value, spec)

    def sample(self, meta, children):
        return _Tag("sample", children[-1])

    def sample_spec(self, meta, children):
        return self._syntax("sample_spec", children, meta)

    def having(self, meta, children):
        return _Tag("having", children[0])

    def qualify(self, meta, children):
        return _Tag("qualify", children[0])

    def order_by(self, meta, children):
        return _Tag("order_by", tuple(children))

    def order_by_all(self, meta, children):
        _all, direction, nulls = children
        all_ = A.Syntax(("ALL",), "all", span=_tok_span(_all))
        desc = direction is not None and direction.type == "DESC"
        nulls_first = None if nulls is None else nulls.type == "FIRST"
        return _Tag("order_by", (A.OrderItem(all_, desc, nulls_first,
                                             asc=direction is not None and not desc,
                                             span=(_all.start_pos, meta.end_pos)),))

    def limit(self, meta, children):
        expr, percent = children
        if percent is not None:  # LIMIT 10% / LIMIT (x) PERCENT, kept as written
            start = meta.start_pos + len("limit")
            parts = (self.text[start:expr.span[0]].strip(), expr, self.text[expr.span[1]:meta.end_pos])
            return _Tag("limit", A.Syntax(tuple(p for p in parts if p != ""), "limit_percent",
                                          span=(start, meta.end_pos)))
        return _Tag("limit", expr)

    def limit_all(self, meta, children):
        return _Tag("limit", A.Syntax(("ALL",), "all", span=_tok_span(children[0])))

    def offset(self, meta, children):
        return _Tag("offset", children[0])

    def order_item(self, meta, children):
        expr, direction, nulls = children
        desc = direction is not None and direction.type == "DESC"
        nulls_first = None if nulls is None else nulls.type == "FIRST"
        return A.OrderItem(expr, desc, nulls_first, asc=direction is not None and not desc,
                           span=_span(meta))

    def name_list(self, meta, children):
        return tuple(t.value for t in children)

    def expr_list(self, meta, children):
        return tuple(children)

    def name(self, meta, children):
        tok = children[0]
        return Token(tok.type, _unquote_name(tok), start_pos=tok.start_pos, end_pos=tok.end_pos)

    def alias(self, meta, children):
        name, cols = children
        return (name.value, tuple(cols) if cols else ())

    # ---- FROM

    def table_name(self, meta, children):
        names = [c.value for c in children if c is not None]
        return (None,) * (3 - len(names)) + tuple(names)

    def table_ref(self, meta, children):
        (catalog, dump, name), alias = children
        alias, cols = alias or (None, ())
        return A.TableRef(name, dump, alias, cols, catalog, span=_span(meta))

    def _table_function(self, meta, children, lateral):
        (catalog, dump, name), args, alias = children
        if catalog is not None:
            return self._syntax("table_function", children, meta)
        alias, cols = alias or (None, ())
        if args.get("star") or args.get("distinct") or args.get("order_by"):
            return self._syntax("table_function", children, meta)
        return A.TableFunction(name.lower(), args.get("args", ()), dump, alias, cols,
                               lateral, span=_span(meta))

    def table_function(self, meta, children):
        return self._table_function(meta, children, False)

    def lateral_function(self, meta, children):
        return self._table_function(meta, children[1:], True)

    def subquery_ref(self, meta, children):
        query, alias = children
        alias, cols = alias or (None, ())
        return A.Subquery(query, alias, cols, span=_span(meta))

    def lateral_ref(self, meta, children):
        _lateral, query, alias = children
        alias, cols = alias or (None, ())
        return A.Subquery(query, alias, cols, lateral=True, span=_span(meta))

    def paren_join(self, meta, children):
        join, alias = children
        if alias is None:
            return join
        return self._syntax("paren_join", children, meta)

    def join_kind(self, meta, children):
        return children[0].type

    def join(self, meta, children):
        left, kind, right, cond = children
        on, using = cond
        return A.Join(kind or "INNER", left, right, on, using, span=_span(meta))

    def asof_join(self, meta, children):
        left, _asof, kind, right, cond = children
        on, using = cond
        return A.Join("ASOF " + (kind or "INNER"), left, right, on, using, span=_span(meta))

    def natural_join(self, meta, children):
        left, _natural, kind, right = children
        return A.Join("NATURAL " + (kind or "INNER"), left, right, span=_span(meta))

    def positional_join(self, meta, children):
        left, _pos, right = children
        return A.Join("POSITIONAL", left, right, span=_span(meta))

    def cross_join(self, meta, children):
        left, _cross, right = children
        return A.Join("CROSS", left, right, span=_span(meta))

    def join_on(self, meta, children):
        return (children[0], None)

    def join_using(self, meta, children):
        return (None, children[0])

    # ---- expressions

    def or_(self, meta, children):
        return A.BinaryOp("OR", children[0], children[1], span=_span(meta))

    def and_(self, meta, children):
        return A.BinaryOp("AND", children[0], children[1], span=_span(meta))

    def not_(self, meta, children):
        return A.UnaryOp("NOT", children[1], span=_span(meta))

    def is_null(self, meta, children):
        expr, neg, _null = children
        return A.IsNull(expr, neg is not None, span=_span(meta))

    def is_distinct(self, meta, children):
        left, neg, _distinct, right = children
        op = "IS NOT DISTINCT FROM" if neg is not None else "IS DISTINCT FROM"
        return A.BinaryOp(op, left, right, span=_span(meta))

    def compare(self, meta, children):
        left, op, right = children
        return A.BinaryOp(_COMP.get(op.value, op.value), left, right, span=_span(meta))

    def binop(self, meta, children):
        left, op, right = children
        return A.BinaryOp(op.value, left, right, span=_span(meta))

    def unop(self, meta, children):
        op, operand = children
        return A.UnaryOp(op.value, operand, span=_span(meta))

    def in_list(self, meta, children):
        expr, neg, items = children
        return A.InList(expr, items, neg is not None, span=_span(meta))

    def in_subquery(self, meta, children):
        expr, neg, query = children
        return A.InSubquery(expr, query, neg is not None, span=_span(meta))

    def between(self, meta, children):
        expr, neg, sym, low, high = children
        if sym is not None:
            return self._syntax("between", children, meta, A.P_PRED)
        return A.Between(expr, low, high, neg is not None, span=_span(meta))

    def other_op(self, meta, children):
        left, op, right = children
        return A.BinaryOp(op.value, left, right, span=_span(meta))

    def arrow_lambda(self, meta, children):
        lhs, _arrow, body = children
        if isinstance(lhs, A.Column) and lhs.table is None:
            return A.Lambda((lhs.name,), body, span=_span(meta))
        if isinstance(lhs, A.Syntax) and lhs.kind == "row_ctor" and all(
                isinstance(p, A.Column) and p.table is None for p in lhs.parts if isinstance(p, A.Node)):
            names = tuple(p.name for p in lhs.parts if isinstance(p, A.Node))
            return A.Lambda(names, body, span=_span(meta))
        return A.Lambda((), body, lhs=lhs, span=_span(meta))

    def py_lambda(self, meta, children):
        _kw, names, body = children
        return A.Lambda(tuple(names), body, python=True, span=_span(meta))

    def like(self, meta, children):
        expr, neg, op, pattern = children
        return A.Like(expr, pattern, neg is not None, op.type == "ILIKE", span=_span(meta))

    # ---- postfix: member paths, qualified columns, casts

    def _extend(self, meta, base, step):
        if isinstance(base, A.MemberPath):
            return A.MemberPath(base.base, base.steps + (step,), span=_span(meta))
        return A.MemberPath(base, (step,), span=_span(meta))

    def arrow(self, meta, children):
        base, name = children
        return self._extend(meta, base, ("->", name.value))

    def slice(self, meta, children):
        base, *bounds = children
        has_step = len(bounds) == 3
        start, stop, step = (bounds + [None])[:3]
        return A.Subscript(base, start, stop, step, slice=True, has_step=has_step,
                           span=_span(meta))

    def dot(self, meta, children):
        base, name = children
        if base.span[0] > meta.start_pos:  # (a).b: a field of a value
            return self._syntax("dot", [base], meta, A.P_POSTFIX)
        if isinstance(base, A.Column) and base.table is None:
            return A.Column(name.value, base.name, quoted=name.type == "QUOTED_NAME",
                            span=_span(meta))
        if isinstance(base, A.Subscript) and not base.slice and \
                isinstance(base.base, (A.Column, A.MemberPath)):
            # task[0].pid / l[1].name: a path the planner reads as C or as DuckDB
            path = self._extend(meta, base.base, ("[]", base.index))
            return self._extend(meta, path, (".", name.value))
        if isinstance(base, (A.Column, A.MemberPath)):
            return self._extend(meta, base, (".", name.value))
        # a field of any other value: f(x).a, (x).a, l[1].a
        return self._syntax("dot", [base], meta, A.P_POSTFIX)

    def method_call(self, meta, children):
        return self._syntax("method_call", children, meta, A.P_POSTFIX)

    def dot_star(self, meta, children):
        base, star = children
        if isinstance(base, A.Column) and base.table is None:
            return A.Star(base.name, span=_span(meta))
        raise self._error("syntax error: '.*' must follow a table name", _tok_span(star))

    def index(self, meta, children):
        base, idx = children
        if isinstance(base, A.MemberPath) and base.has_arrow():
            return self._extend(meta, base, ("[]", idx))
        # DuckDB's subscript; the planner turns it into a member path when
        # the base is an object column (task[0]) -- see docs/SQL.md
        return A.Subscript(base, idx, span=_span(meta))

    def pg_cast(self, meta, children):
        expr, (type_text, c_type) = children
        return A.Cast(expr, type_text, c_type, span=_span(meta))

    def cast_expr(self, meta, children):
        kw, expr, (type_text, c_type) = children
        return A.Cast(expr, type_text, c_type, kw.type == "TRY_CAST", span=_span(meta))

    def cast_target(self, meta, children):
        return children[0]

    def c_type(self, meta, children):
        tok = children[0]
        text = tok.value[1:-1].replace("''", "'").strip()
        if not text:
            raise self._error("syntax error: empty C type in cast", _tok_span(tok))
        return (text, True)

    def sql_type(self, meta, children):
        # kept as written: DuckDB reads the type, kql never needs to
        return (self.text[meta.start_pos:meta.end_pos], False)

    # ---- atoms

    def column(self, meta, children):
        tok = children[0]
        return A.Column(tok.value, quoted=tok.type == "QUOTED_NAME", span=_span(meta))

    def scalar_subquery(self, meta, children):
        return A.Subquery(children[0], span=_span(meta))

    def exists(self, meta, children):
        return A.Exists(children[0], span=_span(meta))

    def literal(self, meta, children):
        tok = children[0]
        span = _tok_span(tok)
        t = tok.type
        text = tok.value
        if t == "INT":
            return A.Literal(int(text.replace("_", "")), "int", text=text, span=span)
        if t == "FLOAT":
            return A.Literal(float(text.replace("_", "")), "float", text=text, span=span)
        if t == "DOLLAR_STRING":
            body = text[text.index("$", 1) + 1:text.rindex("$", 0, len(text) - 1)]
            return A.Literal(body, "string", text=text, span=span)
        if t == "PREFIXED_STRING":
            # E'a\tb', X'41', B'01': DuckDB decodes them; kql keeps no value
            # (so never pushes one down as a key)
            return A.Literal(None, "string", text=text, span=span)
        if t == "HEX":
            value = int(tok.value, 16)
            if value > 0xFFFF_FFFF_FFFF_FFFF:
                raise self._error(f"syntax error: hex literal {tok.value} does not fit in 64 bits", span)
            return A.HexLiteral(value, span=span)
        if t == "STRING":
            return A.Literal(text[1:-1].replace("''", "'"), "string", text=text, span=span)
        if t == "TRUE":
            return A.Literal(True, "bool", span=span)
        if t == "FALSE":
            return A.Literal(False, "bool", span=span)
        return A.Literal(None, "null", span=span)

    def func_call(self, meta, children):
        name, args, within, filter_, window, export = children
        if within is not None:
            args = dict(args, within_group=within)
        return A.FuncCall(name.lower(), filter=filter_, window=window,
                          export_state=export is not None, span=_span(meta), **args)

    def func_name(self, meta, children):
        if children and children[0] is not None:
            return children[0].value
        return self.text[meta.start_pos:meta.end_pos]

    def keyword_call(self, meta, children):
        kw, args = children
        return A.FuncCall(kw.value.lower(), span=_span(meta), **args)

    def within_group(self, meta, children):
        return children[-1].value

    def no_args(self, meta, children):
        return {}

    def star_arg(self, meta, children):
        return {"star": True}

    def args_order_only(self, meta, children):
        return {"order_by": children[0].value}

    def args(self, meta, children):
        distinct, exprs, order_by, nulls = children
        out = {"args": exprs, "distinct": distinct is not None and distinct.type == "DISTINCT"}
        if order_by is not None:
            out["order_by"] = order_by.value
        if nulls is not None:
            out["null_treatment"] = nulls
        return out

    def arg_list(self, meta, children):
        return tuple(children)

    def named_arg(self, meta, children):
        return self._syntax("named_arg", children, meta, A.P_LAMBDA)

    def null_treatment(self, meta, children):
        return f"{children[0].value.upper()} NULLS"

    def filter_clause(self, meta, children):
        return children[-1]

    def over_clause(self, meta, children):
        return children[0].replace(span=_span(meta))

    def over_name(self, meta, children):
        return A.Window(ref=children[0].value, span=_span(meta))

    def window_spec(self, meta, children):
        base, partition, order_by, frame = children
        return A.Window(partition or (), order_by.value if order_by else (), frame,
                        base=base.value if base is not None else None, span=_span(meta))

    def columns_expr(self, meta, children):
        return A.ColumnsExpr(children[-1], span=_span(meta))

    def columns_star_expr(self, meta, children):
        _kw, mods = children
        return A.ColumnsExpr(A.Star(modifiers=mods or (), span=_span(meta)), span=_span(meta))

    def unpack_columns(self, meta, children):
        return A.ColumnsExpr(children[-1], unpack=True, span=_span(meta))

    def list_comprehension(self, meta, children):
        node = self._syntax("list_comprehension", children, meta)
        names = next(c for c in children if isinstance(c, tuple))
        return node.replace(params=names)

    def struct_literal(self, meta, children):
        return self._syntax("struct_literal", children, meta)

    def struct_entry(self, meta, children):
        key, value = children
        # {name: v}: the key is a field name, not a column
        keep = (key,) if isinstance(key, A.Column) and key.table is None else ()
        return self._syntax("struct_entry", children, meta, keep=keep)

    def partition_by(self, meta, children):
        return children[0]

    def frame(self, meta, children):
        unit, start, *rest = children
        end = rest[0] if len(rest) == 2 else None
        exclude = rest[-1] if rest else None
        return A.Frame(unit.value.upper(), start, end, exclude, span=_span(meta))

    def frame_exclude(self, meta, children):
        return " ".join(self.text[meta.start_pos:meta.end_pos].split()[1:]).upper()

    def unbounded_preceding(self, meta, children):
        return A.FrameBound("UNBOUNDED PRECEDING", span=_span(meta))

    def unbounded_following(self, meta, children):
        return A.FrameBound("UNBOUNDED FOLLOWING", span=_span(meta))

    def current_row(self, meta, children):
        return A.FrameBound("CURRENT ROW", span=_span(meta))

    def preceding(self, meta, children):
        return A.FrameBound("PRECEDING", children[0], span=_span(meta))

    def following(self, meta, children):
        return A.FrameBound("FOLLOWING", children[0], span=_span(meta))

    def case_expr(self, meta, children):
        operand, *whens, else_ = children
        return A.Case(operand, tuple(whens), else_, span=_span(meta))

    def when(self, meta, children):
        return (children[0], children[1])


_HANDLERS = {name: f for name, f in vars(_Builder).items()
             if not name.startswith("_") and callable(f)}


def _check_stars(stmt: A.Node, text: str) -> None:
    """``*`` / ``t.*`` only as a whole select item (or in COLUMNS)."""
    allowed: set[int] = set()
    for node in stmt.walk():  # pre-order: a Select comes before its items
        if isinstance(node, A.Select):
            allowed.update(id(item.expr) for item in node.items)
        elif isinstance(node, A.ColumnsExpr):
            allowed.add(id(node.arg))
        elif isinstance(node, A.Star) and id(node) not in allowed:
            raise ParseError("syntax error: '*' is only allowed as a select item or in count(*)",
                             text, node.span[0], node.span[1])


# ------------------------------------------------------------------ errors

# How terminals read in messages.  Keywords are shown by their upper-case
# spelling; these are the rest.
_EXPR_START = {"LPAR", "NAME", "QUOTED_NAME", "INT", "FLOAT", "HEX", "STRING", "TRUE", "FALSE",
               "NULL", "NOT", "ADD_OP", "TILDE", "_CASE", "CAST", "TRY_CAST", "_EXISTS",
               "ARRAY", "COLUMNS_KW", "DOLLAR_STRING", "PREFIXED_STRING", "EXTRACT", "INTERVAL",
               "LAMBDA", "LBRACE", "LSQB", "MAP", "PARAM", "POSITIONAL_REF", "OVERLAY",
               "POSITION", "SUBSTRING", "TRIM", "_FILTER", "UNPACK_STAR"}
# DuckDB's rarer words: listed only when nothing else is expected.
_QUIET = {"PIVOT", "UNPIVOT", "PIVOT_WIDER", "TABLESAMPLE", "LATERAL", "VALUES", "VALUES_COMMA",
          "NON_QUERY", "TABLE", "DESCRIBE", "SUMMARIZE", "SHOW", "EXPORT_STATE", "WITHIN",
          "COLLATE", "AT", "ISNULL", "NOTNULL", "GLOB", "SIMILAR", "ESCAPE", "EXCLUDE", "REPLACE",
          "RENAME", "PERCENT", "FETCH", "WINDOW", "ASOF", "NATURAL", "POSITIONAL", "SEMI", "ANTI",
          "ARRAY", "PRECISION", "VARYING", "ORDINALITY", "LIKE", "ILIKE", "NOT", "IGNORE", "RESPECT",
          "KEY", "MATERIALIZED", "INTERVAL_UNIT", "PARAM", "POSITIONAL_REF", "STRING", "ANY", "SOME"}
_TERMINAL_WORDS = {"<expression>": "expression", "<operator>": "an operator",
    "NAME": "identifier", "QUOTED_NAME": "identifier", "STRING": "string",
    "INT": "number", "FLOAT": "number", "HEX": "number", "$END": "end of input",
}
# Symbolic operators are summed up as "an operator"; keyword operators (AND,
# IS, IN, …) are listed by name after the clause keywords.
_OPERATORS = {"COMP_OP", "BIT_OP", "ADD_OP", "MUL_OP", "STAR", "TILDE", "_ARROW", "DOT",
              "LSQB", "_DCOLON", "OTHER_OP", "IDIV_OP", "POW_OP", "LAMBDA_ARROW", "COLON"}
# Order of the expected list: the likeliest fixes first.
_ORDER = ["COMMA", "RPAR", "_FROM", "_WHERE", "_GROUP", "_HAVING", "_ORDER", "_LIMIT",
          "_OFFSET", "_JOIN", "INNER", "LEFT", "RIGHT", "FULL", "CROSS", "_ON", "_USING",
          "_QUALIFY", "_AS", "_BY", "_SELECT", "_WITH", "UNION", "INTERSECT", "EXCEPT", "_THEN", "_WHEN",
          "_ELSE", "_END", "STAR", "DISTINCT", "ALL", "<expression>", "LPAR", "NAME", "STRING",
          "INT", "FLOAT", "HEX", "_AND", "_OR", "NOT", "_IS", "_IN", "_BETWEEN", "LIKE", "ILIKE"]
_LAST = {"<operator>": 0, "SEMICOLON": 1, "$END": 2}
_MAX_EXPECTED = 6


def _describe_terminals(names: set[str], parser: Lark) -> list[str]:
    """Terminal names → short human words, likeliest first, no duplicates."""
    by_name = {t.name: t for t in parser.terminals}
    names = set(names)
    if {"LPAR", "NAME", "STRING", "INT"} <= names:
        names = (names - _EXPR_START) | {"<expression>"}
    if "ANY" in names:  # x = ANY (…): not worth listing
        names -= {"ALL", "STAR"}
    if names - _QUIET:
        names -= _QUIET
    # '*' right after SELECT is a select item, not multiplication
    operators = {n for n in names if n in _OPERATORS and not (n == "STAR" and len(names & _OPERATORS) == 1)}
    if operators:
        names = (names - operators) | {"<operator>"}
    rank = {n: i for i, n in enumerate(_ORDER)}
    ordered = sorted(names, key=lambda n: (_LAST.get(n, -1), rank.get(n, len(rank)), n))
    words: list[str] = []
    for n in ordered:
        if n in _TERMINAL_WORDS:
            word = _TERMINAL_WORDS[n]
        else:
            term = by_name.get(n)
            value = term.pattern.value if term is not None and term.pattern.type == "str" else None
            if value is None:
                word = n.lstrip("_")
            elif value[0].isalpha():
                word = value.upper()
            else:
                word = repr(value)
        if word not in words:
            words.append(word)
    return words


def _format_expected(words: list[str]) -> str:
    if not words:
        return ""
    if len(words) == 1:
        return f", expected {words[0]}"
    if len(words) > _MAX_EXPECTED:
        words = words[:_MAX_EXPECTED] + ["…"]
    return ", expected one of: " + ", ".join(words)


def _found(text: str, start: int, end: int) -> str:
    s = text[start:end]
    if len(s) > 24:
        s = s[:21] + "..."
    if s.startswith("'"):
        return f"string {s}"
    if s.startswith('"'):
        return f"identifier {s}"
    return f"'{s}'"


_CLAUSE_KEYWORDS = {"_FROM": "FROM", "_WHERE": "WHERE", "_GROUP": "GROUP", "_ORDER": "ORDER",
                    "_HAVING": "HAVING", "_LIMIT": "LIMIT", "_OFFSET": "OFFSET", "_JOIN": "JOIN",
                    "_ON": "ON", "_USING": "USING", "UNION": "UNION", "_SELECT": "SELECT",
                    "_AS": "AS"}
_PREV_WORD = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*\Z")


def _misspelled_keyword(text: str, parser: Lark, error_pos: int):
    """``SELECT pid FORM tasks`` fails at ``tasks`` because ``FORM`` was taken
    as an alias.  If the word before the error looks like a keyword that was
    allowed there, blame that word instead: (start, end, accepted terminals)."""
    m = _PREV_WORD.search(text, 0, error_pos)
    if m is None:
        return None
    word = m.group(1)
    try:
        ip = parser.parse_interactive(text[:m.start(1)])
        ip.exhaust_lexer()
        accepts = ip.accepts()
    except (UnexpectedInput, ParseError):
        return None
    candidates = [kw for t, kw in _CLAUSE_KEYWORDS.items() if t in accepts]
    if word.upper() in candidates or not difflib.get_close_matches(word.upper(), candidates, 1, 0.7):
        return None
    return m.start(1), m.end(1), set(accepts)


def _syntax_error(text: str, e: UnexpectedInput) -> ParseError:
    parser = get_parser()
    if isinstance(e, UnexpectedToken) and e.token.type != "$END":
        start, end = e.token.start_pos, e.token.end_pos
    else:
        start = end = len(text)
    expected = set(getattr(e, "accepts", None) or getattr(e, "expected", None) or ())
    if start < len(text):
        guess = _misspelled_keyword(text, parser, start)
        if guess is not None:
            start, end, expected = guess
    if start >= len(text):
        # point just after the last character that is not blank
        stripped = len(text.rstrip())
        return ParseError("syntax error: unexpected end of input"
                          + _format_expected(_describe_terminals(expected, parser)),
                          text, stripped, stripped + 1)
    return ParseError(f"syntax error: unexpected {_found(text, start, end)}"
                      + _format_expected(_describe_terminals(expected, parser)),
                      text, start, end)


__all__ = ["parse", "parse_one", "get_parser", "GRAMMAR_PATH"]
