"""The kql command line.

    kql DUMP "QUERY"                 run a query (several ';'-separated statements run in turn)
    kql DUMP --describe [TABLE]      the tables and their columns
    kql DUMP @NAME [--param k=v]     run a saved query (kql queries lists them)
    kql DUMP                         the interactive shell (a terminal), or a script
                                     from stdin: kql DUMP < triage.sql
    kql DUMP --crash "bt -f 1"       a crash command, translated to SQL (--sql shows it)
    kql live "QUERY"                 the running kernel (/proc/kcore; root); `kql live`
                                     alone is the shell, as for a dump
    kql -d a=DUMP1 -d b=DUMP2 "SELECT … FROM a.tasks JOIN b.tasks USING (comm)"
    kql export DUMP… -o DIR          Parquet per table per dump, with provenance
    kql --parquet DIR "QUERY"        query a directory of exports (no dump needed)

Exit codes: 0 success, 1 query error, 2 dump error (bad file, wrong vmlinux,
unreadable core data), 3 internal error, 64 usage error, 130 interrupted.  Errors are one line on stderr
(query errors add the query line and a caret); set KQL_DEBUG=1 for a
traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from kql.errors import KqlError, QueryError

EPILOG = """\
examples:
  kql vmcore "SELECT pid, comm, state FROM tasks WHERE state = 2"
  kql vmcore "SELECT p.comm AS parent, count(*) FROM tasks c JOIN tasks p ON c.ppid = p.pid GROUP BY 1 ORDER BY 2 DESC"
  kql vmcore "SELECT pid, task->mm->map_count FROM tasks WHERE pid = 1"
  kql vmcore "EXPLAIN SELECT comm FROM tasks WHERE pid = 1"
  kql vmcore --describe tasks
  kql vmcore "SELECT * FROM modules" --format json -o modules.json
  kql vmcore @hung-tasks
  kql live "SELECT pid, comm, stack FROM tasks WHERE state = 2"   (as root: /proc/kcore)
  kql queries
  kql export vmcore1 vmcore2 -o exports/
  kql --parquet exports/ "SELECT release, st, count(*) FROM tasks GROUP BY ALL"

exit codes: 0 ok, 1 query error, 2 dump error, 3 internal error (a bug),
            64 usage error (unknown option, bad option value), 130 interrupted
"""

LIVE = "live"     # `kql live "QUERY"`: the running kernel's /proc/kcore
USAGE_ERROR = 64  # EX_USAGE (sysexits.h): argparse's own 2 is kql's "dump error"


class ArgumentParser(argparse.ArgumentParser):
    """argparse with kql's exit code for usage errors."""

    def error(self, message):
        self.print_usage(sys.stderr)
        self.exit(USAGE_ERROR, f"{self.prog}: error: {message}\n")


def _seconds(text: str) -> int:
    """--max-time: a whole number of seconds, 0 or more."""
    if not (text.isascii() and text.isdigit()):
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}")
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    from kql.dump import PROBES
    from kql.duck import MAX_SECONDS
    from kql.output import FORMATS

    p = ArgumentParser(
        prog="kql", description="SQL over Linux kernel memory dumps (vmcores).",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dump", nargs="?",
                   help=f"the vmcore ({', '.join(p.what for p in PROBES)}; split kdump "
                        f"parts comma-separated), or `live` for the running kernel")
    p.add_argument("query", nargs="?", help="the SQL query (quote it)")
    p.add_argument("-d", "--dump", dest="named", action="append", default=[], metavar="NAME=DUMP",
                   help="open DUMP as NAME for cross-dump queries (FROM NAME.tasks); repeatable")
    p.add_argument("--vmlinux", metavar="PATH",
                   help="debug vmlinux (DWARF types); must match the dump's build-id")
    p.add_argument("--system-map", metavar="PATH",
                   help="System.map for symbols (when kallsyms lacks variables, the "
                        "release's is looked for under $KQL_DEBUG_ROOTS, default /)")
    p.add_argument("-f", "--format", choices=FORMATS, default="table",
                   help="output format (default: table)")
    p.add_argument("-o", "--output", metavar="FILE", help="write the result to FILE (atomically)")
    p.add_argument("--stats", action="store_true",
                   help="print pages read, objects visited and timings to stderr")
    p.add_argument("--describe", nargs="?", const="", metavar="TABLE",
                   help="describe all tables, or one")
    p.add_argument("--zero-excluded", action="store_true",
                   help="read pages the dump level excluded as zeros (like crash)")
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="a parameter of a saved query (@NAME); repeatable")
    p.add_argument("--parquet", metavar="DIR",
                   help="query a directory written by `kql export` instead of a dump")
    p.add_argument("--allow-files", action="store_true",
                   help="let the query read files (FROM 'x.csv', read_csv(...)); off by "
                        "default: a query reads only the dump, or the --parquet directory")
    p.add_argument("--max-time", type=_seconds, default=None, metavar="SECONDS",
                   help=f"stop a statement whose SQL part (joins, sorts, recursive CTEs) runs "
                        f"longer than SECONDS (default {MAX_SECONDS}; 0: no limit)")
    p.add_argument("--crash", metavar="CMD",
                   help="run a crash command (sys, ps, bt -f 1, …; `help` lists them)")
    p.add_argument("--sql", action="store_true",
                   help="with --crash or in the shell: print the SQL each crash command runs")
    p.add_argument("-e", "--editing", choices=("emacs", "vi"), default=None,
                   help="the shell's key bindings (default emacs, as crash -e)")
    p.add_argument("-v", "--verbose", action="store_true", help="log plans and SQL to stderr")
    p.add_argument("-V", "--version", action="version", version=_version())
    return p


def _version() -> str:
    import platform

    import kql
    return f"kql {kql.__version__} (Python {platform.python_version()})"


def export_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog="kql export",
        description="Write every table of each dump as Parquet (DIR/<table>/<dump_id>.parquet) "
                    "with provenance columns, plus a manifest (DIR/dumps/). Atomic writes; "
                    "dumps are exported in parallel processes.")
    p.add_argument("dumps", nargs="+", help="vmcores to export")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="export directory")
    p.add_argument("--tables", metavar="T1,T2", help="only these tables (default: all)")
    p.add_argument("-j", "--jobs", type=int, default=None,
                   help="dumps exported at once (default: number of CPUs)")
    p.add_argument("--vmlinux", metavar="PATH", help="debug vmlinux (DWARF types)")
    p.add_argument("--zero-excluded", action="store_true",
                   help="read pages the dump level excluded as zeros")
    return p


def queries_parser() -> argparse.ArgumentParser:
    return ArgumentParser(
        prog="kql queries",
        description="List the saved queries (shipped ones, ~/.config/kql/queries and "
                    "$KQL_QUERY_PATH); run one with `kql DUMP @NAME [--param k=v]`.")


def _list_queries(argv) -> int:
    queries_parser().parse_args(argv)
    from kql.queries import all_queries
    for q in all_queries().values():
        params = " ".join(f"--param {p.name}={p.default if p.default is not None else '…'}"
                          for p in q.params)
        print(f"@{q.name:22} {q.description}" + (f"  [{params}]" if params else ""))
    return 0


def _export(argv) -> int:
    args = export_parser().parse_args(argv)
    from kql.export import export
    tables = [t.strip() for t in args.tables.split(",")] if args.tables else None
    dumps = [dump_parts(d) if d == LIVE else d for d in args.dumps]   # `kql export live`
    rows = export(dumps, args.output, tables=tables, jobs=args.jobs, vmlinux=args.vmlinux,
                  zero_excluded=args.zero_excluded)
    failed = 0
    for m in rows:
        if m.get("failed"):  # the dump could not be exported at all
            named = os.path.basename(m["dump_path"]) in m["errors"]
            print(f"kql: error: {'' if named else m['dump_path'] + ': '}{m['errors']}",
                  file=sys.stderr)
        else:
            print(f"{m['dump_path']}: {m['dump_id']} {m['release']} {m['rows']} rows "
                  f"in {m['seconds']:.1f} s" + (f"; errors: {m['errors']}" if m["errors"] else ""))
        failed += bool(m["errors"])
    return 2 if failed else 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    from kql.execute import RECURSION_LIMIT
    sys.setrecursionlimit(max(sys.getrecursionlimit(), RECURSION_LIMIT))
    try:
        return _main(argv)
    except KqlError as e:
        if isinstance(e, QueryError):
            print(f"kql: {e}", file=sys.stderr)
        else:
            print(f"kql: error: {e.one_line()}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("kql: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except RecursionError:  # a safety net: check_depth refuses deep queries first
        print("kql: error: query too deeply nested", file=sys.stderr)
        return 1
    except Exception as e:  # noqa: BLE001 - the user never sees a traceback
        if isinstance(e, RuntimeError) and "interrupted" in str(e).lower():
            print("kql: interrupted", file=sys.stderr)  # DuckDB saw the Ctrl-C first
            return 130
        if os.environ.get("KQL_DEBUG"):
            raise
        print(f"kql: internal error: {type(e).__name__}: {e} (set KQL_DEBUG=1 for a traceback)",
              file=sys.stderr)
        return 3


def dump_parts(spec: str):
    """A dump argument: one file, or the parts of a split kdump comma-separated
    (``dump.1,dump.2``) when no file has that literal name; ``live`` (when no
    file has that name) is the running kernel, $KQL_LIVE_ROOT/proc/kcore."""
    if spec == LIVE and not os.path.exists(spec):
        from kql.dump.kcore import live_kcore_path
        return live_kcore_path()
    if "," in spec and not os.path.exists(spec):
        return [p for p in spec.split(",") if p]
    return spec


def _open_kernel(args, dump: str):
    """The dump argument ``dump`` opened with the command line's options."""
    from kql.kernel import open_kernel
    return open_kernel(dump_parts(dump), args.vmlinux, args.system_map,
                       zero_excluded=args.zero_excluded)


def _main(argv: list[str]) -> int:
    if argv and argv[0] in ("queries", "export") and not os.path.isfile(argv[0]):
        return {"queries": _list_queries, "export": _export}[argv[0]](argv[1:])
    args = build_parser().parse_intermixed_args(argv)  # DUMP --opt QUERY too
    if args.verbose:
        logging.basicConfig(level=logging.DEBUG, format="kql: %(message)s")
    if args.describe is not None:
        from kql.describe import describe
        # `kql DUMP --describe [TABLE]`; the catalog needs no dump
        sys.stdout.write(describe(args.describe or None))
        return 0
    named = {}
    for spec in args.named:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise QueryError(f"-d takes NAME=DUMP, got {spec!r}")
        named[name] = path
    query = args.query
    dump = args.dump
    if (named or args.parquet) and query is None and dump is not None:
        query, dump = dump, None  # kql -d a=X -d b=Y "QUERY"
    params = {}
    for spec in args.param:
        k, sep, v = spec.partition("=")
        if not sep or not k:
            raise QueryError(f"--param takes KEY=VALUE, got {spec!r}")
        params[k] = v
    if query is not None and query.startswith("@"):
        from kql import queries
        query = queries.get(query[1:]).render(params)
    elif params:
        raise QueryError("--param goes with a saved query (@NAME)")
    if args.parquet:
        if query is None:
            raise QueryError("--parquet DIR needs a query")
        _check_output(args)
        return _run_parquet(args, query)
    if query is None and dump is not None and not named:
        return _shell(args, dump)
    if query is None:
        build_parser().print_usage(sys.stderr)
        print("kql: error: give a dump and a query (kql --help)", file=sys.stderr)
        return 1
    if dump is None and not named:
        print("kql: error: no dump given", file=sys.stderr)
        return 1

    _check_output(args)
    from kql.execute import Session
    from kql.grammar import parse

    statements = parse(query)  # syntax errors before opening any dump
    if not statements:
        raise QueryError("empty query: give a statement such as SELECT … (kql --help)")
    from kql.output import BINARY_FORMATS
    if args.output and args.format in BINARY_FORMATS and len(statements) > 1:
        raise QueryError(f"-o with --format {args.format} takes one statement, "
                         f"not {len(statements)}")
    kernels = {}
    if dump is not None:
        kernels[None] = _open_kernel(args, dump)
    for name, path in named.items():
        kernels[name] = _open_kernel(args, path)
    for k in kernels.values():  # dump-level warnings: once per dump, before any result
        for w in k.dump.warnings:
            print(f"kql: warning: {w}", file=sys.stderr)
    session = Session(kernels, allow_files=args.allow_files, max_seconds=args.max_time)

    texts = []  # with -o and a text format, every statement's output goes to the file
    for stmt in statements:
        res = session.run_statement(stmt, query)
        if res.explain is not None:
            if args.output:
                texts.append(res.explain + "\n")
            else:
                sys.stdout.write(res.explain + "\n")
        elif args.output and args.format not in BINARY_FORMATS:
            from kql.output import render
            texts.append(render(res.columns, args.format, res.address_columns))
        else:
            _write(args, res.columns, res.address_columns)
        if res.warnings.total:
            for line in res.warnings.lines():
                print(f"kql: warning: {line}", file=sys.stderr)
        if args.stats:
            for line in res.stats.lines():
                print(f"kql: stats: {line}", file=sys.stderr)
            print(f"kql: stats: warnings: {res.warnings.total}", file=sys.stderr)
    if texts:
        _write_text(args, "".join(texts))
    for k in kernels.values():
        for w in getattr(k, "warnings", [])[:20]:
            print(f"kql: warning: {w}", file=sys.stderr)
    return 0


def _shell(args, dump: str) -> int:
    """No query: a crash command (--crash), the interactive shell on a
    terminal, or the statements of a non-terminal stdin as a script."""
    from kql.execute import Session
    from kql import shell

    kernel = _open_kernel(args, dump)
    session = Session({None: kernel}, allow_files=args.allow_files, max_seconds=args.max_time)
    if args.crash is not None:
        return shell.run_crash_command(session, args.crash, args.sql)
    fmt = args.format if args.format in shell.TEXT_FORMATS else "table"
    settings = shell.Settings(format=fmt, stats=args.stats, sql=args.sql,
                              editing=args.editing or "emacs")
    if sys.stdin.isatty() and sys.stdout.isatty() and not args.output:
        return shell.Shell(session, settings, interactive=True).loop(kernel)
    if not args.output:
        return shell.Shell(session, settings).script(sys.stdin)
    import io  # -o: the script's whole output, written atomically as for a query
    out = io.StringIO()
    code = shell.Shell(session, settings, out=out).script(sys.stdin)
    _write_text(args, out.getvalue())
    return code


def _write_text(args, text: str) -> None:
    if not args.output:
        sys.stdout.write(text)
        return
    from kql.atomic import atomic_file
    try:
        with atomic_file(args.output, "w") as f:
            f.write(text)
    except OSError as e:
        raise QueryError(f"cannot write {args.output}: {e.strerror or e}") from None


def _check_output(args) -> None:
    """Output arguments that cannot work fail before any dump is opened."""
    from kql.output import BINARY_FORMATS
    if args.format in BINARY_FORMATS and not args.output:
        raise QueryError(f"--format {args.format} is binary: give -o FILE")
    if args.output:
        d = os.path.dirname(os.path.abspath(args.output))
        if not os.path.isdir(d):
            raise QueryError(f"cannot write {args.output}: no directory {d}")


def _write(args, table, address_columns) -> None:
    from kql import output
    try:
        output.write(table, args.format, out=sys.stdout, path=args.output,
                     address_columns=address_columns)
    except OSError as e:
        raise QueryError(f"cannot write {args.output or 'the output'}: {e.strerror or e}") from None


def _run_parquet(args, query: str) -> int:
    from kql.export import query_parquet
    from kql.tables import catalog
    import pyarrow as pa

    addresses = {c.name.lower() for s in catalog().values() for c in s.columns
                 if c.type == pa.uint64()}
    for t in query_parquet(args.parquet, query, allow_files=args.allow_files,
                           max_seconds=args.max_time):
        cols = {n for n in t.column_names if n.lower() in addresses
                and t.schema.field(n).type == pa.uint64()}
        _write(args, t, cols)
    return 0


if __name__ == "__main__":
    sys.exit(main())
