"""DuckDB connections locked down for queries.

A query is text from a user, a saved-query file or a script, run with the
user's rights: it must not read the user's files, reach the network or
install code unless asked.  Every connection kql opens for a query comes
from :func:`connect`:

- no file system (``enable_external_access = false``), except the
  directories in ``allowed`` (the export directory of ``--parquet``);
  ``allow_files=True`` (``--allow-files``) lets the query read any file
  the user can;
- no extension is installed or loaded on demand (``autoinstall`` and
  ``autoload_known_extensions`` off), so no download, ever;
- spill files go to kql's cache directory, never ``./.tmp``;
- the DuckDB part of a statement runs at most ``max_seconds``
  (``--max-time``, default :data:`MAX_SECONDS`; 0 = no limit): DuckDB has
  no bound on the iterations of a recursive CTE, so one without a stop
  condition (``WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n+1 FROM r)``)
  would otherwise run until Ctrl-C; it ends with :data:`TIME_LIMIT`, exit 1;
- no progress bar on the terminal;
- then the configuration is locked, so no query can undo any of it.
"""

from __future__ import annotations

import os

from kql.errors import QueryError

FILES_NEEDED = "reading files needs --allow-files"

#: Seconds the DuckDB part of one statement may run (``--max-time``).
MAX_SECONDS = 300
TIME_LIMIT = ("query stopped after {seconds} s, the --max-time limit (a recursive CTE "
              "without a stop condition?); raise it with --max-time SECONDS, 0 for no limit")


class TimeLimitError(QueryError):
    """The DuckDB part of a statement ran longer than ``--max-time``."""


def temp_directory() -> str:
    """Where DuckDB spills: ``<kql cache>/duckdb-tmp`` (created on demand)."""
    from kql.atomic import default_cache_dir
    return str(default_cache_dir() / "duckdb-tmp")


def connect(*, allow_files: bool = False, allowed: tuple[str, ...] = (),
            max_seconds: int = MAX_SECONDS):
    """A DuckDB connection for one query (see the module doc); run the query
    through :func:`run`."""
    import duckdb

    con = duckdb.connect(config={
        "autoinstall_known_extensions": False,
        "autoload_known_extensions": False,
        "temp_directory": temp_directory(),
    })
    con.execute("SET enable_progress_bar = false")
    if max_seconds:
        con.execute(f"SET max_execution_time = {int(max_seconds) * 1000}")  # milliseconds
    if not allow_files:
        if allowed:
            dirs = ", ".join("'" + os.path.join(os.path.realpath(d), "").replace("'", "''") + "'"
                             for d in allowed)
            con.execute(f"SET allowed_directories = [{dirs}]")
        con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")
    return con


def run(con, fn):
    """``fn()`` (a DuckDB call on ``con``) so that Ctrl-C stops it: DuckDB runs
    in a worker thread while the main thread waits, and a KeyboardInterrupt
    there interrupts ``con`` and is raised (exit 130 in the CLI).  Past the
    ``max_seconds`` of :func:`connect`, :class:`TimeLimitError`."""
    import threading

    import duckdb

    if threading.current_thread() is not threading.main_thread():
        try:
            return fn()
        except duckdb.InterruptException as e:
            _time_limit(con, e)
            raise
    box: dict = {}
    done = threading.Event()  # not Thread.join: a join interrupted by Ctrl-C can
    # leave is_alive() False while the thread still runs (Python 3.11)

    def work():
        try:
            box["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - handed to the caller
            box["error"] = e
        finally:
            done.set()

    threading.Thread(target=work, name="kql-duckdb", daemon=True).start()
    try:
        while not done.wait(0.25):
            pass
    except KeyboardInterrupt:
        # DuckDB stops at its next check; the connection must not be closed
        # (nor the process end) while the query still runs in the thread
        while not done.is_set():
            try:
                con.interrupt()
            except duckdb.Error:  # not running yet, or already done
                pass
            done.wait(0.25)
        box.clear()  # the error's frames hold the query's result: free it before close()
        raise
    e = box.pop("error", None)
    if isinstance(e, duckdb.InterruptException):
        _time_limit(con, e)
        del e
        raise KeyboardInterrupt from None
    if e is not None:
        raise e.with_traceback(None)
    return box["value"]


def _time_limit(con, e) -> None:
    """Raise :class:`TimeLimitError` if ``e`` (DuckDB's interrupt) is the time
    limit, not Ctrl-C."""
    if "maximum execution time" in str(e):
        ms = con.execute("SELECT current_setting('max_execution_time')").fetchone()[0]
        raise TimeLimitError(TIME_LIMIT.format(seconds=ms // 1000)) from None


def error_text(e: Exception) -> str:
    """DuckDB's error as one line; a refused file read says how to allow it."""
    import duckdb

    msg = " ".join(line.strip() for line in str(e).splitlines() if line.strip())
    if isinstance(e, duckdb.PermissionException) or "disabled by configuration" in msg:
        import re
        m = re.search(r'Cannot access (?:file|directory) "([^"]*)"', msg)
        return FILES_NEEDED + (f" ({m[1]})" if m else "")
    if "is not in the catalog, but it exists in the" in msg:
        # extensions are never installed or loaded on demand
        return msg.split(" Please try installing")[0].split(" To install")[0]
    return msg

