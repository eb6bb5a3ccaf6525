"""The interactive kql shell (``kql DUMP`` on a terminal) and script mode
(``kql DUMP < triage.sql``).

One open dump serves every statement: symbols and types are read once.
The prompt is prompt_toolkit's (emacs or vi keys, history in
``$XDG_STATE_HOME/kql/history`` with Ctrl-R search, pygments SQL colours);
a statement runs when it ends with ``;``, a crash command (``bt -f 1``,
``ps | grep UN``), a saved query (``@hung-tasks``) or a backslash command
(``\\set format vertical``) when its line ends.  Completion reads only
types and symbols (:mod:`kql.completion`).
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, fields
from pathlib import Path

from kql.crashcmd import COMMANDS, Crash, command_help, is_crash_command, split_pipe
from kql.errors import KqlError, QueryError
from kql.functions import FUNCTIONS as SQL_FUNCTIONS

__all__ = ["Shell", "Settings", "help_text", "is_complete", "history_path"]

DEFAULT_PAGER = "less -SRFX"
TEXT_FORMATS = ("table", "vertical", "csv", "json", "jsonl")


@dataclass
class Settings:
    """What ``\\set NAME VALUE`` changes."""

    format: str = "table"     # table, vertical, csv, json, jsonl
    output: str = ""          # a file results are appended to ('' = the terminal)
    timing: bool = False      # print each statement's time
    stats: bool = False       # pages read, objects visited (as --stats)
    sql: bool = False         # print the SQL a crash command runs
    pager: bool = True        # page results taller or wider than the terminal
    editing: str = "emacs"    # emacs or vi keys

    def set(self, name: str, value: str) -> None:
        f = {f.name: f for f in fields(self)}.get(name)
        if f is None:
            raise QueryError(f"\\set: no setting '{name}' (settings: "
                             f"{', '.join(x.name for x in fields(self))})")
        if f.type == "bool":
            if value.lower() not in ("on", "off", "true", "false", "1", "0"):
                raise QueryError(f"\\set {name}: give on or off, not '{value}'")
            setattr(self, name, value.lower() in ("on", "true", "1"))
        elif name == "format" and value not in TEXT_FORMATS:
            raise QueryError(f"\\set format: one of {', '.join(TEXT_FORMATS)}, not '{value}'")
        elif name == "editing" and value not in ("emacs", "vi"):
            raise QueryError(f"\\set editing: emacs or vi, not '{value}'")
        else:
            setattr(self, name, "" if name == "output" and value == "off" else value)

    def lines(self) -> list[str]:
        out = []
        for f in fields(self):
            v = getattr(self, f.name)
            out.append(f"{f.name:8} {('on' if v else 'off') if isinstance(v, bool) else v or 'off'}")
        return out


def history_path() -> Path:
    """``$XDG_STATE_HOME/kql/history`` (``~/.local/state/kql/history``)."""
    base = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return Path(base) / "kql" / "history"


# ---------------------------------------------------------------- input units

BACKSLASH = ("\\set", "\\q", "\\quit", "\\help", "\\?", "\\o", "\\x", "\\timing")
LINE_WORDS = ("quit", "exit")


def is_line_command(text: str) -> bool:
    """A unit that ends with its line: crash command, saved query,
    backslash command, quit."""
    s = text.strip()
    return (s.startswith(("\\", "@")) or is_crash_command(s)
            or s.lower().rstrip(";") in LINE_WORDS)


def is_complete(text: str) -> bool:
    """Is the buffer one whole unit to run (Enter runs it, else adds a line)?"""
    s = text.strip()
    if not s:
        return True
    if is_line_command(s):
        return True
    return _ends_statement(s)


def _ends_statement(s: str) -> bool:
    """Does SQL text end with a ';' outside strings and comments?"""
    quote = None
    last = ""
    i = 0
    while i < len(s):
        ch = s[i]
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif s.startswith("--", i):
            j = s.find("\n", i)
            i = len(s) if j < 0 else j
            continue
        elif not ch.isspace():
            last = ch
        i += 1
    return quote is None and last == ";"


# ---------------------------------------------------------------- help

SHELL_HELP = """\
kql shell: SQL statements end with ';' (several lines are fine); crash commands,
@saved-queries and \\commands run at the end of their line.

  \\set [NAME VALUE]   settings: format table|vertical|csv|json|jsonl, output FILE
                      (appended to) or off, timing on|off, stats on|off, sql on|off
                      (the SQL crash commands run), pager on|off, editing emacs|vi
  \\q, quit, Ctrl-D    leave          Ctrl-C   cancel the input or a running query
  CMD | SHELLCMD      pipe a crash command's output (ps | grep UN)
  help NAME           a crash command, a table or a function
"""


def help_text(topic: str | None = None) -> str:
    """``help`` / ``help bt`` / ``help tasks``: generated from the crash
    command table and the catalog (as ``--describe`` is)."""
    from kql.tables import catalog
    if topic:
        text = command_help(topic)
        if text is not None:
            return text
        name = topic.lower().rstrip("()")
        if name in FUNCTIONS:
            sig, doc = FUNCTIONS[name]
            return f"{sig}\n\n  {doc}\n"
        from kql.describe import describe
        try:
            return describe(name)
        except KqlError:
            raise QueryError(f"help: no command, table or function named '{topic}'") from None
    cat = catalog()
    tables = [n for n, s in cat.items() if s.params is None]
    funcs = [f"{n}({', '.join(s.params)})" for n, s in cat.items() if s.params is not None]
    out = [SHELL_HELP, "crash commands (help CMD for its SQL):"]
    out += [f"  {c.usage:28} {c.doc.split('. ')[0].rstrip('.')}" for c in COMMANDS.values()]
    out += ["", "tables (help TABLE):", _wrap(tables), "",
            "table functions:", _wrap(funcs), "",
            "SQL functions:", _wrap([sig for sig, _ in FUNCTIONS.values()]), ""]
    return "\n".join(out)


# kql's SQL functions: (usage, doc), from the one registry
FUNCTIONS = {f.name: (f.usage, f.doc) for f in SQL_FUNCTIONS.values()}


def _wrap(words: list[str], width: int = 78) -> str:
    lines, line = [], "  "
    for w in words:
        if len(line) + len(w) + 2 > width and line.strip():
            lines.append(line.rstrip())
            line = "  "
        line += w + "  "
    lines.append(line.rstrip())
    return "\n".join(lines)


# ---------------------------------------------------------------- the shell

class Shell:
    """Runs units (statements, crash commands, settings) on one session."""

    def __init__(self, session, settings: Settings | None = None, *, out=None, err=None,
                 interactive: bool = False):
        self.session = session
        self.settings = settings or Settings()
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.interactive = interactive
        self.crash = Crash(session)

    # -- one unit ------------------------------------------------------------------------
    def run(self, text: str) -> int:
        """Run one unit; errors are printed as one line.  Returns an exit code
        (0 ok, 1 query error, 2 dump error), or -1 to leave."""
        s = text.strip()
        if not s:
            return 0
        try:
            with _sigint_cancels():
                return self._run(s)
        except KeyboardInterrupt:
            self.err.write("cancelled\n")
            return 1 if self.interactive else 130
        except KqlError as e:
            if isinstance(e, QueryError):
                self.err.write(f"kql: {e}\n")
            else:
                self.err.write(f"kql: error: {e.one_line()}\n")
            return e.exit_code
        except BrokenPipeError:
            return 0

    def _run(self, s: str) -> int:
        low = s.lower().rstrip(";").strip()
        if low in LINE_WORDS or low in ("\\q", "\\quit"):
            return -1
        if s.startswith("\\"):
            return self._backslash(s)
        if s.startswith("@"):
            return self._saved(s)
        if is_crash_command(s):
            return self._crash(s)
        return self._sql(s)

    def _backslash(self, s: str) -> int:
        cmd, _, rest = s.partition(" ")
        try:
            words = [cmd] + shlex.split(rest)
        except ValueError as e:
            raise QueryError(f"{cmd}: {e}") from None
        if cmd in ("\\?", "\\help"):
            self.emit(SHELL_HELP)
        elif cmd == "\\set":
            if len(words) == 1:
                self.emit("\n".join(self.settings.lines()) + "\n")
            elif len(words) == 3:
                self.settings.set(words[1], words[2])
                if words[1] == "editing" and getattr(self, "_prompt", None) is not None:
                    from prompt_toolkit.enums import EditingMode
                    self._prompt.app.editing_mode = (EditingMode.VI if words[2] == "vi"
                                                     else EditingMode.EMACS)
            else:
                raise QueryError("\\set takes NAME VALUE (\\set format vertical)")
        elif cmd == "\\x":
            self.settings.format = "table" if self.settings.format == "vertical" else "vertical"
            self.emit(f"format {self.settings.format}\n")
        elif cmd == "\\o":
            self.settings.output = words[1] if len(words) > 1 else ""
        elif cmd == "\\timing":
            self.settings.timing = not self.settings.timing
            self.emit(f"timing {'on' if self.settings.timing else 'off'}\n")
        else:
            raise QueryError(f"unknown command {cmd} (\\? lists them)")
        return 0

    def _saved(self, s: str) -> int:
        from kql import queries
        words = shlex.split(s)
        params = {}
        for w in words[1:]:
            k, sep, v = w.removeprefix("--param=").partition("=")
            if not sep:
                raise QueryError(f"{words[0]}: parameters are NAME=VALUE, got {w!r}")
            params[k] = v
        return self._sql(queries.get(words[0][1:].rstrip(";")).render(params))

    def _crash(self, s: str) -> int:
        line, pipe = split_pipe(s)
        t0 = time.perf_counter()
        try:
            text = self._cancellable(self.crash.run, line)
        finally:
            if self.settings.sql and self.crash.last_sql:
                self.err.write("".join(f"-- {q};\n" for q in self.crash.last_sql))
        if pipe:
            self.out.flush()
            subprocess.run(pipe, shell=True, input=text, text=True, stdout=self.out,
                           check=False)
        else:
            self.emit(text)
        self._timing(t0)
        return 0

    def _sql(self, text: str) -> int:
        from kql.grammar import parse
        statements = parse(text)
        for stmt in statements:
            t0 = time.perf_counter()
            res = self._cancellable(self.session.run_statement, stmt, text)
            if res.explain is not None:
                out = res.explain + "\n"
            else:
                out = render(res.columns, self.settings.format, res.address_columns)
            self.emit(out)
            for line in res.warnings.lines() if res.warnings.total else ():
                self.err.write(f"kql: warning: {line}\n")
            if self.settings.stats:
                for line in res.stats.lines():
                    self.err.write(f"kql: stats: {line}\n")
            self._timing(t0)
        return 0

    def _cancellable(self, fn, *args):
        """``fn(*args)`` in a worker thread that Ctrl-C stops: the main thread
        waits, and on KeyboardInterrupt interrupts DuckDB (which holds no GIL
        and sees no signal) and raises KeyboardInterrupt in the worker (for
        the Python scans), waits for it to stop, and re-raises."""
        import ctypes
        import threading
        box = {}

        def work():
            try:
                box["value"] = fn(*args)
            except BaseException as e:  # noqa: BLE001 - handed to the main thread
                box["error"] = e
        t = threading.Thread(target=work, name="kql-statement", daemon=True)
        t.start()
        try:
            while t.is_alive():
                t.join(0.05)
        except KeyboardInterrupt:
            self.session.interrupt()
            ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(t.ident),
                                                       ctypes.py_object(KeyboardInterrupt))
            t.join()
            raise
        if "error" in box:
            raise box["error"]
        return box["value"]

    def _timing(self, t0: float) -> None:
        if self.settings.timing:
            self.err.write(f"Time: {time.perf_counter() - t0:.3f} s\n")

    # -- output --------------------------------------------------------------------------
    def emit(self, text: str) -> None:
        if self.settings.output:
            try:
                with open(self.settings.output, "a") as f:
                    f.write(text)
            except OSError as e:
                raise QueryError(f"cannot write {self.settings.output}: "
                                 f"{e.strerror or e}") from None
            return
        if self.interactive and self.settings.pager and self._too_big(text):
            self._page(text)
            return
        self.out.write(text)
        self.out.flush()

    def _too_big(self, text: str) -> bool:
        try:
            size = os.get_terminal_size(self.out.fileno())
        except (OSError, ValueError, AttributeError):
            return False
        lines = text.splitlines()
        return len(lines) > size.lines - 2 or any(len(x) > size.columns for x in lines)

    def _page(self, text: str) -> None:
        pager = os.environ.get("PAGER") or DEFAULT_PAGER
        env = dict(os.environ)
        env.setdefault("LESS", "")
        old = signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C belongs to the pager
        try:
            p = subprocess.Popen(pager, shell=True, stdin=subprocess.PIPE, env=env,
                                 text=True)
            try:
                p.stdin.write(text)
                p.stdin.close()
            except BrokenPipeError:
                pass
            p.wait()
        finally:
            signal.signal(signal.SIGINT, old)

    # -- loops ---------------------------------------------------------------------------
    def script(self, stream) -> int:
        """Run units read from a non-terminal stream; stop at the first error
        and return its exit code."""
        buf = []
        for line in stream:
            buf.append(line)
            text = "".join(buf)
            if text.strip() and is_complete(text):
                buf = []
                code = self.run(text)
                if code < 0:
                    return 0
                if code:
                    return code
            elif not text.strip():
                buf = []
        text = "".join(buf)
        if text.strip():  # a last statement without ';'
            code = self.run(text)
            return max(code, 0)
        return 0

    def loop(self, kernel) -> int:
        """The interactive prompt; returns at Ctrl-D, \\q or quit."""
        from prompt_toolkit import PromptSession
        from prompt_toolkit.enums import EditingMode
        from prompt_toolkit.filters import is_searching
        from prompt_toolkit.history import FileHistory
        from prompt_toolkit.key_binding import KeyBindings
        from prompt_toolkit.lexers import PygmentsLexer
        from pygments.lexers.sql import SqlLexer

        from kql.completion import KqlCompleter

        path = history_path()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            history = FileHistory(str(path))
        except OSError:
            from prompt_toolkit.history import InMemoryHistory
            history = InMemoryHistory()

        kb = KeyBindings()

        @kb.add("enter", filter=~is_searching)
        def _enter(event):
            buf = event.current_buffer
            if buf.complete_state and buf.complete_state.current_completion:
                buf.apply_completion(buf.complete_state.current_completion)
                return
            if is_complete(buf.text):
                buf.validate_and_handle()
            else:
                buf.insert_text("\n")

        self._prompt = PromptSession(
            history=history, lexer=PygmentsLexer(SqlLexer),
            completer=KqlCompleter(kernel, self.session), complete_while_typing=False,
            enable_history_search=False, key_bindings=kb, multiline=True,
            prompt_continuation=lambda width, line_number, wrap_count: "...> ".rjust(width),
            editing_mode=EditingMode.VI if self.settings.editing == "vi" else EditingMode.EMACS)
        from kql.completion import warm
        warm(kernel)
        release = getattr(kernel, "release", "") or ""
        self.out.write(f"kql {release}: SQL ending in ';', crash commands (help), "
                       f"Ctrl-D to leave\n")
        while True:
            try:
                text = self._prompt.prompt("kql> ")
            except KeyboardInterrupt:
                continue
            except EOFError:
                return 0
            if self.run(text) < 0:
                return 0


class _sigint_cancels:
    """While a unit runs, Ctrl-C raises KeyboardInterrupt (Python's default;
    restored because prompt_toolkit installs its own handler)."""

    def __enter__(self):
        try:
            self.old = signal.signal(signal.SIGINT, signal.default_int_handler)
        except ValueError:  # not the main thread
            self.old = None
        return self

    def __exit__(self, *exc):
        if self.old is not None:
            signal.signal(signal.SIGINT, self.old)
        return False


def render(columns, fmt: str, address_columns) -> str:
    """A result as text: kql's formats plus ``vertical`` (one column per
    line, one block per row: the natural view of a wide single row)."""
    from kql import output
    if fmt != "vertical":
        return output.render(columns, fmt, address_columns)
    names = columns.column_names
    data = [columns.pylist(i) for i in range(len(names))]
    width = max((len(n) for n in names), default=0)
    out = []
    for i, row in enumerate(zip(*data)):
        out.append(f"-[ RECORD {i + 1} ]" + "-" * max(0, width - 5))
        for n, v in zip(names, row):
            cell = output._cell(v, n in address_columns)
            cell = str(cell).replace("\n", "\n" + " " * (width + 3))
            out.append(f"{n:<{width}} | {cell}")
    out.append(f"({columns.num_rows} row{'s' if columns.num_rows != 1 else ''})")
    return "\n".join(out) + "\n"


def run_crash_command(session, line: str, show_sql: bool, out=None, err=None) -> int:
    """``kql DUMP --crash "bt -f 1"``: one crash command (with ``| cmd``)."""
    settings = Settings(sql=show_sql, pager=False)
    shell = Shell(session, settings, out=out, err=err)
    if not is_crash_command(line):
        raise QueryError(f"--crash: '{line.split()[0] if line.split() else line}' is not a "
                         f"crash command ({', '.join(COMMANDS)})")
    return max(shell.run(line), 0)
