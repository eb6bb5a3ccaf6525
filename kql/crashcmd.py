"""crash's commands, translated to kql SQL.

Each command runs one or more SQL statements on the open dump and prints
the rows as crash prints them::

    >>> Crash(session).run("bt -f 1")          # doctest: +SKIP
    PID: 1        TASK: ffff8919c11eb000  CPU: 0    COMMAND: "systemd"
     #0 [ffffcc84c0013a68] __schedule at ffffffffb8e10e3d
        ffffcc84c0013a68: 0000000000002001 0000000000000000
    ...

The SQL each command ran is kept (``Crash.last_sql``) so the shell can show
it (``\\set sql on``, ``kql DUMP --crash CMD --sql``): the commands are a way
to learn the tables.  Nothing here reads the dump: every fact comes from a
query, so each command prints what its SQL twin returns.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Callable

from kql.errors import QueryError

__all__ = ["Crash", "COMMANDS", "is_crash_command", "split_pipe"]


@dataclass(frozen=True)
class Command:
    name: str
    usage: str
    doc: str
    fn: Callable
    examples: tuple[str, ...] = ()


COMMANDS: dict[str, Command] = {}


def command(name: str, usage: str, doc: str, examples: tuple[str, ...] = ()):
    def register(fn):
        COMMANDS[name] = Command(name, usage, doc, fn, examples)
        return fn
    return register


def is_crash_command(line: str) -> bool:
    """Does ``line`` start with a crash command word?  No SQL statement
    starts with one (SQL starts with SELECT, WITH, EXPLAIN, FROM, …)."""
    word = line.strip().split(None, 1)[0].lower() if line.strip() else ""
    return word in COMMANDS


def split_pipe(line: str) -> tuple[str, str | None]:
    """``ps | grep UN`` → ``("ps", "grep UN")``: crash's pipe to a shell
    command (the first ``|`` outside quotes)."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch == "|":
            return line[:i].rstrip(), line[i + 1:].strip() or None
    return line, None


class CommandError(QueryError):
    """A crash command used wrongly (exit 1, one line)."""

    def __init__(self, msg: str):
        super().__init__(msg)


class Crash:
    """Runs crash commands on a :class:`kql.execute.Session`."""

    def __init__(self, session):
        self.session = session
        self.last_sql: list[str] = []

    # -- running SQL -------------------------------------------------------------------
    def sql(self, text: str) -> list[dict]:
        """Run one statement; its rows as dicts (and remember the SQL)."""
        self.last_sql.append(text)
        res = self.session.execute(text)[-1]
        self.last_warnings = res.warnings
        cols = res.columns
        names = cols.column_names
        data = [cols.pylist(i) for i in range(len(names))]
        return [dict(zip(names, row)) for row in zip(*data)]

    def run(self, line: str) -> str:
        """The output of one command line (without its ``| cmd``)."""
        self.last_sql = []
        words = _split(line)
        if not words:
            return ""
        cmd = COMMANDS.get(words[0].lower())
        if cmd is None:
            raise CommandError(f"{words[0]}: not a crash command (help lists them)")
        return cmd.fn(self, words[1:])

    # -- shared pieces -----------------------------------------------------------------
    def default_pid(self) -> int:
        """crash's current context: the panic task, else pid 1."""
        rows = self.sql("SELECT panic_pid FROM sys")
        pid = rows[0]["panic_pid"] if rows else None
        return 1 if pid is None else pid

    def task_arg(self, cmd: str, args: list[str]) -> tuple[int, dict]:
        """The PID argument of ``files``, ``vm``… (default: the current
        context) and its task's row."""
        pid = _pid(cmd, args[0]) if args else self.default_pid()
        return pid, self.tasks(pid)[0]

    def tasks(self, pid: int) -> list[dict]:
        rows = self.sql(f"SELECT pid, task, cpu, comm FROM tasks WHERE pid = {pid} "
                        f"ORDER BY cpu")
        if not rows:
            raise CommandError(f"invalid task or pid value: {pid}")
        return rows


def _split(line: str) -> list[str]:
    try:
        return shlex.split(line)
    except ValueError as e:
        raise CommandError(f"{line.split()[0]}: {e}") from None


def _pid(cmd: str, arg: str) -> int:
    try:
        return int(arg, 0)
    except ValueError:
        raise CommandError(f"{cmd}: invalid task or pid value: {arg}") from None


def _count(cmd: str, arg: str) -> int:
    try:
        n = int(arg)
    except ValueError:
        n = 0
    if n <= 0:
        raise CommandError(f"{cmd}: invalid count: {arg}")
    return n


def _address_sql(cmd: str, arg: str) -> str:
    """An address argument as SQL: hex (crash reads bare hex too) or a symbol."""
    try:
        return hex(int(arg, 16))
    except ValueError:
        if not arg.replace("_", "").replace(".", "").isalnum():
            raise CommandError(f"{cmd}: invalid address or symbol: {arg}") from None
        return f"addr('{arg}')"


def _x(v) -> str:
    return "NULL" if v is None else f"{v:016x}"


def _header(t: dict) -> str:
    cpu = "-" if t["cpu"] is None else t["cpu"]
    return (f"PID: {t['pid']:<8} TASK: {_x(t['task'])}  CPU: {cpu:<4} "
            f"COMMAND: \"{t['comm']}\"")


def _grouped(rows: list[dict], key: str) -> dict:
    out: dict = {}
    for r in rows:
        out.setdefault(r[key], []).append(r)
    return out


def _mb(n: int | None) -> str:
    if n is None:
        return "NULL"
    for unit, size in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} bytes"


# ---------------------------------------------------------------- sys

@command("sys", "sys [config]",
         "System facts: kernel, dump, CPUs, date, uptime, load, tasks, memory, panic. "
         "`sys config` prints the kernel's build configuration (CONFIG_IKCONFIG).",
         ("sys", "sys config"))
def _sys(c: Crash, args: list[str]) -> str:
    if args and args[0] == "config":
        rows = c.sql("SELECT name, value FROM config")
        return "".join(f"# {r['name']} is not set\n" if r["value"] == "n" else
                       f"{r['name']}={r['value']}\n" for r in rows)
    if args:
        raise CommandError(f"sys: unknown option {args[0]} (sys, sys config)")
    r = c.sql("SELECT * FROM sys")[0]
    up = int(r["uptime_s"] or 0)
    d, rem = divmod(up, 86400)
    uptime = (f"{d} days, " if d else "") + f"{rem // 3600:02}:{rem % 3600 // 60:02}:{rem % 60:02}"
    date = r["date"].strftime("%a %b %e %H:%M:%S UTC %Y") if r["date"] else "NULL"
    lines = [("DUMPFILE", f"{r['dump_path']}  [{r['dump_format']}]"),
             ("CPUS", r["cpus"]), ("DATE", date), ("UPTIME", uptime),
             ("LOAD AVERAGE", f"{r['load_1']:.2f}, {r['load_5']:.2f}, {r['load_15']:.2f}"),
             ("TASKS", r["tasks"]), ("NODENAME", r["nodename"]), ("RELEASE", r["release"]),
             ("VERSION", r["version"]), ("MACHINE", r["machine"]),
             ("MEMORY", _mb(r["memory_bytes"]))]
    if r["panic"]:
        lines.append(("PANIC", f"\"{r['panic']}\""))
    return "".join(f"{k:>12}: {v}\n" for k, v in lines)


# ---------------------------------------------------------------- ps

@command("ps", "ps [PID…]",
         "Processes: PID PPID CPU TASK ST %MEM VSZ RSS COMM; '>' marks a task running "
         "on a CPU; kernel threads' names in [brackets].", ("ps", "ps 1", "ps | grep UN"))
def _ps(c: Crash, args: list[str]) -> str:
    where = ""
    if args:
        where = f" WHERE pid IN ({', '.join(str(_pid('ps', a)) for a in args)})"
    total = c.sql("SELECT bytes FROM meminfo WHERE name = 'MemTotal'")
    total = total[0]["bytes"] if total else None
    rows = c.sql("SELECT pid, ppid, cpu, task, st, rss_bytes, vsz_bytes, comm, active, "
                 f"is_kthread FROM tasks{where} ORDER BY pid, cpu")
    out = ["   PID    PPID  CPU       TASK        ST  %MEM      VSZ      RSS  COMM"]
    for r in rows:
        rss, vsz = r["rss_bytes"] or 0, r["vsz_bytes"] or 0
        mem = f"{100 * rss / total:.1f}" if total else "-"
        comm = f"[{r['comm']}]" if r["is_kthread"] or r["pid"] == 0 else r["comm"]
        cpu = "-" if r["cpu"] is None else r["cpu"]
        out.append(f"{'>' if r['active'] else ' '}{r['pid']:>6} {r['ppid'] or 0:>7} {cpu:>4}  "
                   f"{_x(r['task'])}  {r['st'] or '??':2} {mem:>5} {vsz // 1024:>8} "
                   f"{rss // 1024:>8}  {comm}")
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------- bt

FRAME_SQL = ("SELECT task, level, sp, pc, function, offset, module, kind FROM stack_frames "
             "WHERE pid = {pid} ORDER BY task, level")


@command("bt", "bt [-a | -f | -r] [PID]",
         "A task's kernel stack (default: the panic task): #N [sp] function at pc, then "
         "the user registers it entered the kernel with. -a: every task running on a "
         "CPU; -f: each frame's stack words under it; -r: the raw stack words with "
         "symbols.", ("bt", "bt 1", "bt -a", "bt -f 1", "bt -r 1"))
def _bt(c: Crash, args: list[str]) -> str:
    flags = {a for a in args if a.startswith("-")}
    pids = [_pid("bt", a) for a in args if not a.startswith("-")]
    unknown = flags - {"-a", "-f", "-r"}
    if unknown:
        raise CommandError(f"bt: unknown option {sorted(unknown)[0]} (bt [-a|-f|-r] [PID])")
    if "-a" in flags:
        tasks = c.sql("SELECT pid, task, cpu, comm FROM tasks WHERE active ORDER BY cpu")
    else:
        tasks = []
        for pid in pids or [c.default_pid()]:
            tasks += c.tasks(pid)
    pids = sorted({t["pid"] for t in tasks})
    pid_list = ", ".join(map(str, pids))
    if "-r" in flags:
        words = _grouped(c.sql(
            "SELECT task, address, value, symbol FROM stack_words "
            f"WHERE pid IN ({pid_list}) ORDER BY task, address"), "task")
        out = []
        for t in tasks:
            out.append(_header(t))
            ws = words.get(t["task"], [])
            for i in range(0, len(ws), 2):
                pair = ws[i:i + 2]
                out.append(f"{_x(pair[0]['address'])}:  " + " ".join(
                    f"{w['symbol'] or _x(w['value']):<16}" for w in pair).rstrip())
            out.append("")
        return "\n".join(out)
    frames = _grouped(c.sql(FRAME_SQL.replace("= {pid}", f"IN ({pid_list})")), "task")
    # why a task has no frames (a live kernel's running task: no saved registers)
    why = [f"bt: {line}" for line in c.last_warnings.lines()
           if line.split(" of ", 1)[-1].startswith("stack_frames.task ")]
    words = {}
    if "-f" in flags:
        words = _grouped(c.sql(
            "SELECT task, level, address, value FROM stack_words "
            f"WHERE pid IN ({pid_list}) ORDER BY task, address"), "task")
    regs = _grouped(c.sql("SELECT task, name, value FROM user_regs "
                          f"WHERE pid IN ({pid_list})"), "task")
    out = []
    for t in tasks:
        out.append(_header(t))
        by_level = _grouped(words.get(t["task"], []), "level")
        for f in frames.get(t["task"], []):
            name = f["function"] or "(unknown)"
            mod = f" [{f['module']}]" if f["module"] else ""
            out.append(f" #{f['level']:<2}[{_x(f['sp'])}] {name} at {_x(f['pc'])}{mod}")
            ws = by_level.get(f["level"], [])
            for i in range(0, len(ws), 2):
                pair = ws[i:i + 2]
                out.append(f"    {_x(pair[0]['address'])}: "
                           + " ".join(_x(w["value"]) for w in pair))
        rs = regs.get(t["task"], [])
        for i in range(0, len(rs), 3):
            out.append("    " + "  ".join(f"{r['name'].upper():>8}: {_x(r['value'])}"
                                          for r in rs[i:i + 3]))
        out.append("")
    return "\n".join(out + why) + ("\n" if why else "")


# ---------------------------------------------------------------- log, mod

@command("log", "log", "The kernel log (dmesg) with timestamps.", ("log", "log | tail"))
def _log(c: Crash, args: list[str]) -> str:
    rows = c.sql("SELECT ts_ns, text FROM dmesg ORDER BY seq")
    out = []
    for r in rows:
        s, ns = divmod(r["ts_ns"] or 0, 1_000_000_000)
        out.append(f"[{s:5}.{ns // 1000:06}] {r['text']}")
    return "\n".join(out) + "\n"


@command("mod", "mod", "Loaded modules: MODULE NAME BASE SIZE.", ("mod",))
def _mod(c: Crash, args: list[str]) -> str:
    rows = c.sql("SELECT module, name, base, size FROM modules ORDER BY name")
    w = max([len(r["name"]) for r in rows] + [4])
    out = [f"     MODULE       {'NAME':<{w}}       BASE          SIZE"]
    out += [f"{_x(r['module'])}  {r['name']:<{w}}  {_x(r['base'])}  {r['size']:>8}"
            for r in rows]
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------- files, vm

@command("files", "files [PID]", "A task's open files: FD FILE DENTRY INODE TYPE PATH.",
         ("files 1",))
def _files(c: Crash, args: list[str]) -> str:
    pid, t = c.task_arg("files", args)
    rows = c.sql("SELECT fd, file, dentry, inode, type, path FROM open_files "
                 f"WHERE pid = {pid} ORDER BY fd")
    out = [_header(t), " FD       FILE            DENTRY           INODE       TYPE PATH"]
    out += [f"{r['fd']:>3} {_x(r['file'])} {_x(r['dentry'])} {_x(r['inode'])} "
            f"{r['type'] or '?':<4} {r['path'] or ''}" for r in rows]
    return "\n".join(out) + "\n"


@command("vm", "vm [PID]", "A task's memory: MM, RSS, TOTAL_VM, then each VMA: "
         "VMA START END FLAGS FILE.", ("vm 1",))
def _vm(c: Crash, args: list[str]) -> str:
    pid, t = c.task_arg("vm", args)
    mm = c.sql(f"SELECT mm, rss_bytes, vsz_bytes FROM tasks WHERE pid = {pid}")[0]
    rows = c.sql("SELECT vma, start, \"end\", vm_flags, path FROM vmas "
                 f"WHERE pid = {pid} ORDER BY start")
    out = [_header(t), "       MM               RSS       TOTAL_VM",
           f"{_x(mm['mm'])}  {(mm['rss_bytes'] or 0) // 1024:>8}k  "
           f"{(mm['vsz_bytes'] or 0) // 1024:>8}k",
           "      VMA           START       END     FLAGS FILE"]
    out += [f"{_x(r['vma'])} {r['start']:>12x} {r['end']:>12x} {r['vm_flags'] or 0:>8x} "
            f"{r['path'] or ''}".rstrip() for r in rows]
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------- net, mount

@command("net", "net", "Network devices: NET_DEVICE NAME IP ADDRESS(ES).", ("net",))
def _net(c: Crash, args: list[str]) -> str:
    rows = c.sql("SELECT net_device, name, addresses FROM net_devices ORDER BY ifindex")
    out = ["   NET_DEVICE     NAME   IP ADDRESS(ES)"]
    out += [f"{_x(r['net_device'])}  {r['name']:<6} {', '.join(r['addresses'] or [])}"
            for r in rows]
    return "\n".join(out) + "\n"


@command("mount", "mount", "Mounted filesystems: MOUNT SUPERBLK TYPE DEVNAME DIRNAME.",
         ("mount",))
def _mount(c: Crash, args: list[str]) -> str:
    rows = c.sql("SELECT mount, superblock, fstype, device, path FROM mounts ORDER BY mnt_id")
    out = ["     MOUNT           SUPERBLK     TYPE   DEVNAME   DIRNAME"]
    out += [f"{_x(r['mount'])} {_x(r['superblock'])} {r['fstype'] or '':<6} "
            f"{r['device'] or '':<9} {r['path'] or ''}" for r in rows]
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------- kmem -i

KMEM_ROWS = (("TOTAL MEM", "MemTotal"), ("FREE", "MemFree"), ("USED", None),
             ("BUFFERS", "Buffers"), ("CACHED", "Cached"), ("SLAB", "Slab"),
             ("TOTAL SWAP", "SwapTotal"), ("SWAP FREE", "SwapFree"),
             ("COMMIT LIMIT", "CommitLimit"), ("COMMITTED", "Committed_AS"))


@command("kmem", "kmem -i", "Memory usage (kmem -i): PAGES TOTAL PERCENTAGE of total memory.",
         ("kmem -i",))
def _kmem(c: Crash, args: list[str]) -> str:
    if args != ["-i"]:
        raise CommandError("kmem: only kmem -i is translated (see meminfo and slabs)")
    v = {r["name"]: r["bytes"] for r in c.sql("SELECT name, bytes FROM meminfo")}
    total = v.get("MemTotal")
    if total is not None and v.get("MemFree") is not None:
        v["USED"] = total - v["MemFree"]
    out = ["                 PAGES        TOTAL      PERCENTAGE"]
    for label, name in KMEM_ROWS:
        n = v.get(name or label)
        if n is None:
            continue
        pct = "----" if name == "MemTotal" or not total else f"{100 * n / total:3.0f}% of TOTAL MEM"
        out.append(f"{label:>13}  {n // 4096:>8}  {_mb(n):>11}  {pct}")
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------- runq

@command("runq", "runq", "Each CPU's run queue: the current task, then the queued ones "
         "by class with their priority.", ("runq",))
def _runq(c: Crash, args: list[str]) -> str:
    cpus = c.sql("SELECT cpu, rq, curr_pid, curr_comm, curr FROM cpus ORDER BY cpu")
    queued = _grouped(c.sql("SELECT cpu, pid, comm, task, prio, class FROM runqueue "
                            "WHERE NOT current ORDER BY cpu, class, prio, pid"), "cpu")
    out = []
    for cpu in cpus:
        out.append(f"CPU {cpu['cpu']} RUNQUEUE: {_x(cpu['rq'])}")
        out.append(f"  CURRENT: PID: {cpu['curr_pid']:<6} TASK: {_x(cpu['curr'])}  "
                   f"COMMAND: \"{cpu['curr_comm']}\"")
        rows = queued.get(cpu["cpu"], [])
        if not rows:
            out.append("     [no tasks queued]")
        for r in rows:
            out.append(f"  {r['class']:<4} [{r['prio']:3}] PID: {r['pid']:<6} "
                       f"TASK: {_x(r['task'])}  COMMAND: \"{r['comm']}\"")
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------- task, struct, p

@command("task", "task [PID]", "The whole struct task_struct of a task (default: the "
         "panic task), nested as crash and gdb print it.", ("task 1",))
def _task(c: Crash, args: list[str]) -> str:
    pid = _pid("task", args[0]) if args else c.default_pid()
    rows = c.sql("SELECT pid, task, cpu, comm, struct_text('struct task_struct', task) AS text "
                 f"FROM tasks WHERE pid = {pid} ORDER BY cpu")
    if not rows:
        raise CommandError(f"task: invalid task or pid value: {pid}")
    return "".join(_header(r) + "\n" + r["text"] for r in rows)


def _type_sql(name: str) -> str:
    return name.replace("'", "''")


@command("struct", "struct TYPE ADDRESS", "The object of TYPE at ADDRESS, nested "
         "('struct' is added when TYPE does not name one: struct list_head 0x…, "
         "struct task_struct 0x…).", ("struct list_head ffffffff82a0b4c0",))
def _struct(c: Crash, args: list[str]) -> str:
    if len(args) < 2:
        raise CommandError("struct: give TYPE ADDRESS (struct task_struct ffff…)")
    type_name = " ".join(args[:-1])
    if type_name.split()[0] not in ("struct", "union", "enum"):
        type_name = f"struct {type_name}"
    addr = _address_sql("struct", args[-1])
    try:  # the type is catalog knowledge, not a fact of the dump: checked before the SQL
        c.session.default_kernel().types.find_type(type_name)
    except LookupError:
        raise CommandError(f"struct: invalid data structure reference: {type_name}") from None
    return c.sql(f"SELECT struct_text('{_type_sql(type_name)}', {addr}) AS text")[0]["text"]


@command("p", "p SYMBOL", "A global variable's value (nested for structs).",
         ("p jiffies", "p init_task"))
def _p(c: Crash, args: list[str]) -> str:
    if len(args) != 1:
        raise CommandError("p: give one SYMBOL (p jiffies)")
    name = args[0]
    if not name.replace("_", "").isalnum():
        raise CommandError(f"p: only plain symbols are translated, not {name!r}")
    r = c.sql(f"SELECT type, struct_text(type, address) AS text FROM var('{name}')")[0]
    text = r["text"]
    prefix = f"{r['type']} = "
    if text.startswith(prefix):
        return f"{name} = " + text[len(prefix):]
    return f"{name} = " + text[len(r["type"]) + 1:] if text.startswith(r["type"]) else text


# ---------------------------------------------------------------- rd, sym

@command("rd", "rd ADDRESS [COUNT]", "COUNT (default 1) 8-byte words from ADDRESS "
         "(hex or a symbol), two a line with their ASCII.", ("rd jiffies", "rd ffffffff81000000 8"))
def _rd(c: Crash, args: list[str]) -> str:
    if not 1 <= len(args) <= 2:
        raise CommandError("rd: give ADDRESS [COUNT]")
    addr = _address_sql("rd", args[0])
    count = _count("rd", args[1]) if len(args) > 1 else 1
    rows = c.sql(f"SELECT address, value, ascii FROM memory({addr}, {count}) ORDER BY address")
    out = []
    for i in range(0, len(rows), 2):
        pair = rows[i:i + 2]
        vals = " ".join("????????????????" if w["value"] is None else _x(w["value"])
                        for w in pair)
        asc = "".join(w["ascii"] or "........" for w in pair)
        out.append(f"{_x(pair[0]['address'])}:  {vals:<33}  {asc}")
    return "\n".join(out) + "\n"


@command("sym", "sym NAME | ADDRESS", "A symbol's address and type, or the symbol an "
         "address is in.", ("sym init_task", "sym ffffffff81000000"))
def _sym(c: Crash, args: list[str]) -> str:
    if len(args) != 1:
        raise CommandError("sym: give one NAME or ADDRESS")
    arg = args[0]
    if all(ch in "0123456789abcdefABCDEFx" for ch in arg):
        addr = int(arg, 16)
        r = c.sql(f"SELECT sym({addr:#x}) AS symbol")[0]
        if r["symbol"] is None:
            raise CommandError(f"sym: {arg}: no symbol found")
        return f"{addr:016x} {r['symbol']}\n"
    if not arg.replace("_", "").replace(".", "").isalnum():
        raise CommandError(f"sym: invalid symbol name {arg!r}")
    rows = c.sql(f"SELECT address, type, name, module FROM symbols WHERE name = '{arg}' "
                 "ORDER BY address")
    if not rows:
        raise CommandError(f"sym: {arg}: symbol not found")
    return "".join(f"{_x(r['address'])} ({r['type']}) {r['name']}"
                   + (f" [{r['module']}]" if r["module"] else "") + "\n" for r in rows)


# ---------------------------------------------------------------- help

@command("help", "help [COMMAND | TABLE]", "Lists the commands, tables and functions; "
         "help COMMAND shows its use and the SQL it runs; help TABLE its columns.",
         ("help", "help bt", "help tasks"))
def _help(c: Crash, args: list[str]) -> str:
    from kql.shell import help_text
    return help_text(args[0] if args else None)


def command_help(name: str) -> str | None:
    cmd = COMMANDS.get(name.lower())
    if cmd is None:
        return None
    import textwrap
    out = [f"{cmd.usage}", "", textwrap.fill(cmd.doc, 78, initial_indent="  ",
                                            subsequent_indent="  "), ""]
    out += [f"  e.g. {e}" for e in cmd.examples]
    out.append("  (\\set sql on shows the SQL each command runs)")
    return "\n".join(out) + "\n"

