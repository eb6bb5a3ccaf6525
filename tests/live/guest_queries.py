"""Run by the live guest (tests/live/build_live.py) with the Debian root's
venv python, chrooted, as root: kql on the guest's own /proc/kcore.

Writes one JSON record per line to stdout (the third serial port):

    {"kind": "open", "seconds": …, "error": …, "warnings": […]}
    {"kind": "query", "name": …, "sql": …, "rows": [...] | null,
     "error": "…" | null, "warnings": […], "seconds": …}
    {"kind": "cli", "name": …, "argv": […], "user": "root"|"nobody",
     "rc": …, "stdout": …, "stderr": …, "seconds": …}

Few queries (TCG is slow): every catalog table once with a LIMIT, then
the ones tests/test_live_guest.py compares with /proc, then the command line
(the short form, the /proc/kcore path, a saved query) as root and once as an
unprivileged user.  One process runs the API queries, so Python, DuckDB and
kql's tables are loaded once.

Usage: python guest_queries.py api | cli
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

LIMIT = 3
# Arguments of the catalog's table functions (one call each).
TABLE_FUNCTION_CALLS = {
    "var": "var('jiffies')",
    "members": "members('struct task_struct', addr('init_task'))",
    "list_walk": "list_walk('init_task.tasks', 'struct task_struct', 'tasks')",
    "memory": "memory(addr('init_task'), 4)",
}
SCENARIO = "comm LIKE 'kql-%'"
# The queries the host compares with the guest's /proc (no LIMIT).
COMPARED = {
    "tasks": "SELECT pid, tgid, ppid, comm, state, is_kthread, active, threads FROM tasks",
    "modules": "SELECT name, size, refcount, state, base FROM modules",
    "mounts": "SELECT device, path, fstype, options, readonly FROM mounts",
    "open_files": f"SELECT pid, fd, path, type, ino FROM open_files WHERE {SCENARIO}",
    "sockets": "SELECT pid, family, protocol, state, local_addr, local_port, ino FROM sockets "
               "WHERE state = 'LISTEN' OR (protocol = 'UDP' AND local_port > 0)",
    "net_devices": "SELECT * FROM net_devices",
    "sys": "SELECT release, version, machine, nodename, cpus, tasks, uptime_s, "
           "memory_bytes, dump_format, dump_path FROM sys",
    "stacks": "SELECT pid, comm, state, active, stack FROM tasks WHERE pid > 0 AND "
              f"({SCENARIO} OR active)",
}
KQL = os.path.join(os.path.dirname(sys.executable), "kql")
# The command line (argv after kql) run as root: the short form, and the
# /proc/kcore path with a saved query (each run costs a Python start under TCG).
CLI = {
    "short": ["live", "SELECT release, nodename, cpus FROM sys", "-f", "json"],
    "kcore-saved": ["/proc/kcore", "@hung-tasks", "-f", "json"],
}
UNPRIVILEGED = ["live", "SELECT release FROM sys"]
NOBODY = 65534


def emit(record: dict) -> None:
    sys.stdout.write(json.dumps(record, default=str) + "\n")
    sys.stdout.flush()


def open_live():
    import kql
    if hasattr(kql, "open_live"):
        return kql.open_live()
    return kql.open("/proc/kcore")


def kernel_warnings(d, seen: int) -> list[str]:
    return [str(w) for w in getattr(d.kernel, "warnings", [])[seen:]]


def run_query(d, name: str, sql: str) -> None:
    from kql.errors import KqlError
    from kql.grammar import parse
    from kql.output import render

    t0 = time.monotonic()
    seen = len(getattr(d.kernel, "warnings", []))
    rec = {"kind": "query", "name": name, "sql": sql, "rows": None, "error": None,
           "warnings": []}
    try:
        for stmt in parse(sql):
            res = d.session.run_statement(stmt, sql)
            rec["rows"] = json.loads(render(res.columns, "json", res.address_columns))
            rec["warnings"] += list(res.warnings.lines())
    except KqlError as e:
        rec["error"] = f"{type(e).__name__}: {e}"
    except Exception as e:  # noqa: BLE001 - a crash is a result the host reports
        import traceback
        rec["error"] = f"internal {type(e).__name__}: {e}\n{traceback.format_exc()[-1500:]}"
    rec["warnings"] += kernel_warnings(d, seen)
    rec["seconds"] = round(time.monotonic() - t0, 2)
    emit(rec)


def api() -> None:
    t0 = time.monotonic()
    try:
        d = open_live()
    except Exception as e:  # noqa: BLE001
        emit({"kind": "open", "error": f"{type(e).__name__}: {e}",
              "seconds": round(time.monotonic() - t0, 2)})
        return
    emit({"kind": "open", "error": None, "warnings": kernel_warnings(d, 0),
          "seconds": round(time.monotonic() - t0, 2)})
    from kql.tables import catalog
    for name, spec in catalog().items():
        source = name if spec.params is None else TABLE_FUNCTION_CALLS.get(name)
        if source is None:
            emit({"kind": "query", "name": f"catalog:{name}", "sql": None, "rows": None,
                  "error": f"no call for table function {name} in guest_queries.py",
                  "warnings": [], "seconds": 0})
            continue
        run_query(d, f"catalog:{name}", f"SELECT * FROM {source} LIMIT {LIMIT}")
    for name, sql in COMPARED.items():
        run_query(d, name, sql)


def cli_run(name: str, argv: list[str], user: str, home: str = "/root") -> None:
    def drop():
        os.setgroups([])
        os.setgid(NOBODY)
        os.setuid(NOBODY)
    t0 = time.monotonic()
    p = subprocess.run([KQL, *argv], capture_output=True, text=True,
                       preexec_fn=drop if user == "nobody" else None,
                       env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": home})
    emit({"kind": "cli", "name": name, "argv": argv, "user": user, "rc": p.returncode,
          "stdout": p.stdout[-20000:], "stderr": p.stderr[-4000:],
          "seconds": round(time.monotonic() - t0, 2)})


def cli() -> None:
    # root's kql cache (parser tables, kallsyms, BTF) is the API run's
    for name, argv in CLI.items():
        cli_run(name, argv, "root")
    # nobody gets a copy of it (building the parser tables again costs a minute
    # under TCG, and the refusal comes before any of it)
    import shutil
    home = "/tmp/nobody"
    shutil.copytree("/root/.cache", f"{home}/.cache")
    for d, _, files in os.walk(home):
        for f in [d, *(os.path.join(d, f) for f in files)]:
            os.chown(f, NOBODY, NOBODY)
    cli_run("unprivileged", UNPRIVILEGED, "nobody", home)


if __name__ == "__main__":
    {"api": api, "cli": cli}[sys.argv[1]]()
