"""Parse what the fixture guest printed about itself into truth.json.

The guest's printer (kqlproc dumpproc) writes records:

    @@ <path>\\n<contents>\\n@@@      text files
    @@hex <path>\\n<hex>\\n@@@        binary files (cmdline, environ)
    @@link <path> <target>           /proc/PID/fd/N links
    @@self <pid>                     the printer's own pid (gone at dump time)
    @@panic_pid <pid>                the task that wrote 'c' to sysrq-trigger
    @@ready / @@end

truth.json keeps what /proc said, plus a few derived fields the tests need,
each documented below.  /proc differs from task_struct in known ways, which
are recorded rather than papered over:

* ``name`` is what /proc/PID/stat shows; workqueue workers show
  ``kworker/0:1-events`` (their current workqueue appended) and kernel threads
  may show more than the 15 characters task->comm holds.  ``comm`` is the
  expected task->comm: the name cut to 15 characters and, for workqueue
  workers, without the ``-workqueue`` suffix.
* ``transient`` pids (the printer) are gone or changed by the time of the dump.
"""

from __future__ import annotations

import re

# /proc state letters → the value kql's tasks.state reports (TABLES.md).
STATE_VALUES = {"R": 0, "S": 1, "D": 2, "T": 4, "t": 8, "X": 16, "Z": 32, "P": 64, "I": 128}

PF_WQ_WORKER = 0x00000020
PF_KTHREAD = 0x00200000
TASK_COMM_LEN = 16


def parse_stat(text: str) -> dict:
    """Fields of /proc/PID/stat (man 5 proc numbering)."""
    lpar, rpar = text.index("("), text.rindex(")")
    rest = text[rpar + 2:].split()
    f = {"pid": int(text[:lpar]), "name": text[lpar + 1:rpar], "state_letter": rest[0]}
    num = [int(x) for x in rest[1:]]
    # rest[0] is field 3 (state); num[i] is field i + 4
    f.update(ppid=num[0], pgrp=num[1], session=num[2], flags=num[5],
             utime=num[10], stime=num[11], priority=num[14], nice=num[15],
             num_threads=num[16], starttime=num[18], vsize=num[19], rss_pages=num[20],
             processor=num[35], rt_priority=num[36], policy=num[37])
    return f


def parse_status(text: str) -> dict:
    out = {}
    for line in text.splitlines():
        k, _, v = line.partition(":")
        out[k.strip()] = v.strip()
    return out


def expected_comm(name: str, flags: int) -> str:
    # wq_worker_comm() appends "-<workqueue>" to a busy or named kworker
    # ("kworker/0:1-events", "kworker/u4:2H-kblockd"); rescuers keep their own
    # names, which may hold a '-' (6.12: "kworker/R-kvfree_rcu_reclaim").
    m = re.match(r"(kworker/u?\d+:\d+H?)-", name)
    if flags & PF_WQ_WORKER and m:
        name = m.group(1)
    return name.encode()[:TASK_COMM_LEN - 1].decode(errors="replace")


def parse_log(raw: bytes) -> dict:
    text = raw.replace(b"\r\n", b"\n").decode(errors="replace")
    files: dict[str, str] = {}
    links: dict[str, str] = {}
    meta: dict[str, object] = {"self_pid": None, "panic_pid": None, "complete": False,
                               "errors": []}
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if line.startswith("@@link "):
            _, path, target = line.split(" ", 2)
            links[path] = target
        elif line.startswith("@@self "):
            meta["self_pid"] = int(line.split()[1])
        elif line.startswith("@@panic_pid "):
            meta["panic_pid"] = int(line.split()[1])
        elif line.startswith("@@error "):
            meta["errors"].append(line[8:])
        elif line == "@@end":
            meta["complete"] = True
        elif line.startswith("@@hex ") or line.startswith("@@ "):
            path = line.split(" ", 1)[1]
            body = []
            while i < len(lines) and lines[i] != "@@@":
                body.append(lines[i])
                i += 1
            i += 1
            content = "\n".join(body)
            if line.startswith("@@hex "):
                content = bytes.fromhex(content.strip()).decode(errors="replace")
            files[path] = content
    return build_truth(files, links, meta)


def build_truth(files: dict[str, str], links: dict[str, str], meta: dict) -> dict:
    tasks: dict[int, dict] = {}
    processes: dict[int, dict] = {}
    task_re = re.compile(r"^/proc/(\d+)/task/(\d+)/(\w+)$")
    for path, content in files.items():
        m = task_re.match(path)
        if not m:
            continue
        tgid, tid, what = int(m.group(1)), int(m.group(2)), m.group(3)
        t = tasks.setdefault(tid, {"pid": tid, "tgid": tgid})
        if what == "stat" and content.strip():
            st = parse_stat(content.strip())
            t.update(name=st["name"], state=STATE_VALUES[st["state_letter"]],
                     state_letter=st["state_letter"], ppid=st["ppid"], flags=st["flags"],
                     is_kthread=bool(st["flags"] & PF_KTHREAD),
                     comm=expected_comm(st["name"], st["flags"]),
                     processor=st["processor"], policy=st["policy"],
                     priority=st["priority"], nice=st["nice"],
                     num_threads=st["num_threads"], starttime=st["starttime"])
        elif what == "status":
            s = parse_status(content)
            t["status"] = {k: s[k] for k in ("Name", "State", "Tgid", "Pid", "PPid", "Uid",
                                              "Gid", "Threads", "VmRSS", "VmSize")
                           if k in s}
            t["uid"] = [int(x) for x in s.get("Uid", "").split()] or None
            t["gid"] = [int(x) for x in s.get("Gid", "").split()] or None
        elif what == "stack":
            # "[<0>] do_wait+0x160/0x2f0" → "do_wait"
            t["stack"] = [re.sub(r"^\[<[0-9a-f]+>\]\s+", "", ln).split("+")[0].split()[0]
                          for ln in content.splitlines() if ln.strip()]
        elif what == "wchan":
            t["wchan"] = content.strip()
    for path, content in files.items():
        m = re.match(r"^/proc/(\d+)/(cmdline|environ|maps)$", path)
        if not m:
            continue
        p = processes.setdefault(int(m.group(1)), {"fds": {}})
        if m.group(2) == "maps":
            p["maps"] = [ln for ln in content.splitlines() if ln.strip()]
        elif m.group(2) == "cmdline":
            p["cmdline"] = content
        else:
            p["environ"] = content
    for path, target in links.items():
        m = re.match(r"^/proc/(\d+)/fd/(\d+)$", path)
        if m:
            processes.setdefault(int(m.group(1)), {"fds": {}})["fds"][m.group(2)] = target
    # Only tasks whose stat was read are tasks the guest saw.
    tasks = {tid: t for tid, t in tasks.items() if "state" in t}
    transient = sorted({meta["self_pid"]} - {None})
    version = files.get("/proc/version", "").strip()
    glob = {k: v for k, v in files.items() if not re.match(r"^/proc/\d+/", k)}
    uptime = glob.get("/proc/uptime", "0 0").split()
    load = glob.get("/proc/loadavg", "0 0 0").split()
    return {
        "complete": meta["complete"],
        "errors": meta["errors"],
        "self_pid": meta["self_pid"],
        "panic_pid": meta["panic_pid"],
        "transient_pids": transient,
        "release": glob.get("/proc/sys/kernel/osrelease", "").strip(),
        "version": version,
        "hostname": glob.get("/proc/sys/kernel/hostname", "").strip(),
        "uptime_s": float(uptime[0]) if uptime else None,
        "loadavg": [float(x) for x in load[:3]],
        "tasks": {str(k): v for k, v in sorted(tasks.items())},
        "processes": {str(k): v for k, v in sorted(processes.items())},
        "files": glob,
        "modules": [ln.split()[0] for ln in glob.get("/proc/modules", "").splitlines()
                    if ln.strip()],
        "markers": ["KQL-MARKER-1 scenario starting", "KQL-MARKER-2 scenario ready"],
    }
