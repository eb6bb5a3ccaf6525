"""One error hierarchy for kql.

Every error a user can cause ends as one line on stderr (plus, for query
errors, the query line and a caret) and an exit code: 1 for a query error,
2 for a dump error.  Nothing here may leak a traceback to the user.
"""

from __future__ import annotations


class KqlError(Exception):
    """Base of every error kql reports to a user."""

    exit_code = 1

    def one_line(self) -> str:
        return str(self)


class DumpError(KqlError):
    """The dump (or vmlinux, or System.map) cannot be used: exit code 2."""

    exit_code = 2


class FaultError(DumpError):
    """Memory at an address cannot be read.

    Raised by memory layers.  Table scans catch it per object and turn it into
    a NULL plus a counted warning; it only reaches the user when the dump as a
    whole is unusable (e.g. init_task is unreadable).
    """

    def __init__(self, address: int, message: str, *, physical: bool = False):
        self.address = address
        self.physical = physical
        super().__init__(message)


class ExcludedPageError(FaultError):
    """The page exists but the dump level filtered it (makedumpfile -d)."""


class QueryError(KqlError):
    """Anything wrong with the query text: exit code 1.

    ``source`` is the whole query, ``pos`` a 0-based character offset into it
    (or None).  ``one_line`` gives the message, ``__str__`` adds the query line
    and a caret under the column.
    """

    exit_code = 1

    def __init__(self, message: str, source: str | None = None, pos: int | None = None,
                 end: int | None = None):
        self.message = message
        self.source = source
        self.pos = pos
        self.end = end
        super().__init__(message)

    @property
    def line_col(self) -> tuple[int, int] | None:
        if self.source is None or self.pos is None:
            return None
        line = self.source.count("\n", 0, self.pos) + 1
        col = self.pos - (self.source.rfind("\n", 0, self.pos) + 1) + 1
        return line, col

    def one_line(self) -> str:
        lc = self.line_col
        if lc is None:
            return self.message
        return f"{self.message} (line {lc[0]}, column {lc[1]})"

    def __str__(self) -> str:
        lc = self.line_col
        if lc is None:
            return self.message
        line_no, col = lc
        text = self.source.split("\n")[line_no - 1]
        width = 1
        if self.end is not None and self.end > self.pos:
            width = max(1, min(self.end - self.pos, len(text) - col + 1))
        return f"{self.one_line()}\n  {text}\n  {' ' * (col - 1)}{'^' * width}"


class ParseError(QueryError):
    """Syntax error in the query."""


class PlanError(QueryError):
    """Unknown table/column/member, bad types: found while planning."""


class ExecuteError(QueryError):
    """Failure while running the relational part of a plan."""
