"""The kql command line.

    kql DUMP "QUERY"                 run a query (several ';'-separated statements run in turn)
    kql DUMP --describe [TABLE]      the tables and their columns
    kql -d a=DUMP1 -d b=DUMP2 "SELECT … FROM a.tasks JOIN b.tasks USING (comm)"

Exit codes: 0 success, 1 query error, 2 dump error (bad file, wrong vmlinux,
unreadable core data), 3 internal error.  Errors are one line on stderr
(query errors add the query line and a caret); set KQL_DEBUG=1 for a
traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from kql.errors import DumpError, KqlError, QueryError

EPILOG = """\
examples:
  kql vmcore "SELECT pid, comm, state FROM tasks WHERE state = 2"
  kql vmcore "SELECT p.comm AS parent, count(*) FROM tasks c JOIN tasks p ON c.ppid = p.pid GROUP BY 1 ORDER BY 2 DESC"
  kql vmcore "SELECT pid, task->mm->map_count FROM tasks WHERE pid = 1"
  kql vmcore "EXPLAIN SELECT comm FROM tasks WHERE pid = 1"
  kql vmcore --describe tasks
  kql vmcore "SELECT * FROM modules" --format json -o modules.json

exit codes: 0 ok, 1 query error, 2 dump error, 3 internal error
"""


def build_parser() -> argparse.ArgumentParser:
    from kql.output import FORMATS

    p = argparse.ArgumentParser(
        prog="kql", description="SQL over Linux kernel memory dumps (vmcores).",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dump", nargs="?", help="the vmcore (ELF, kdump, flattened kdump)")
    p.add_argument("query", nargs="?", help="the SQL query (quote it)")
    p.add_argument("-d", "--dump", dest="named", action="append", default=[], metavar="NAME=DUMP",
                   help="open DUMP as NAME for cross-dump queries (FROM NAME.tasks); repeatable")
    p.add_argument("--vmlinux", metavar="PATH",
                   help="debug vmlinux (DWARF types); must match the dump's build-id")
    p.add_argument("--system-map", metavar="PATH", help="System.map for symbols")
    p.add_argument("-f", "--format", choices=FORMATS, default="table",
                   help="output format (default: table)")
    p.add_argument("-o", "--output", metavar="FILE", help="write the result to FILE (atomically)")
    p.add_argument("--stats", action="store_true",
                   help="print pages read, objects visited and timings to stderr")
    p.add_argument("--describe", nargs="?", const="", metavar="TABLE",
                   help="describe all tables, or one")
    p.add_argument("--zero-excluded", action="store_true",
                   help="read pages the dump level excluded as zeros (like crash)")
    p.add_argument("-v", "--verbose", action="store_true", help="log plans and SQL to stderr")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
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
    except Exception as e:  # noqa: BLE001 - the user never sees a traceback
        if os.environ.get("KQL_DEBUG"):
            raise
        print(f"kql: internal error: {type(e).__name__}: {e} (set KQL_DEBUG=1 for a traceback)",
              file=sys.stderr)
        return 3


def _main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
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
    if named and query is None and dump is not None:
        query, dump = dump, None  # kql -d a=X -d b=Y "QUERY"
    if query is None:
        build_parser().print_usage(sys.stderr)
        print("kql: error: give a dump and a query (kql --help)", file=sys.stderr)
        return 1
    if dump is None and not named:
        print("kql: error: no dump given", file=sys.stderr)
        return 1

    from kql.dump import open_dump
    from kql.execute import Session
    from kql.grammar import parse
    from kql.kernel import Kernel

    statements = parse(query)  # syntax errors before opening any dump
    kernels = {}
    if dump is not None:
        kernels[None] = Kernel(open_dump(dump, zero_excluded=args.zero_excluded),
                               vmlinux=args.vmlinux, system_map=args.system_map)
    for name, path in named.items():
        kernels[name] = Kernel(open_dump(path, zero_excluded=args.zero_excluded),
                               vmlinux=args.vmlinux, system_map=args.system_map)
    session = Session(kernels)
    from kql import output

    for stmt in statements:
        res = session.run_statement(stmt, query)
        if res.explain is not None:
            sys.stdout.write(res.explain + "\n")
            continue
        output.write(res.table, args.format, out=sys.stdout, path=args.output,
                     address_columns=res.address_columns)
        if res.warnings.total:
            for line in res.warnings.lines():
                print(f"kql: warning: {line}", file=sys.stderr)
        if args.stats:
            for line in res.stats.lines():
                print(f"kql: stats: {line}", file=sys.stderr)
            print(f"kql: stats: warnings: {res.warnings.total}", file=sys.stderr)
    for k in kernels.values():
        for w in getattr(k, "warnings", [])[:20]:
            print(f"kql: warning: {w}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
