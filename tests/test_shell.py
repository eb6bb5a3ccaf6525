"""The interactive shell as a person uses it: kql runs in a real terminal
(tmux), keys are typed with send-keys and the screen is read with
capture-pane.  Also script mode (stdin not a terminal) and completion.

tmux is a test requirement (tests/setup.sh installs it); a missing tmux
fails these tests rather than skipping them.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import uuid

import pytest

from fixtures import fixture, kernel
from kql.completion import candidates
from kql.shell import is_complete

SAMPLE = str(fixture("sample").dump())


def sql(text: str) -> list[dict]:
    from kql.execute import Session
    res = Session({None: kernel("sample")}).execute(text)[-1]
    cols = res.columns
    names = cols.column_names
    return [dict(zip(names, r)) for r in zip(*(cols.pylist(i) for i in range(len(names))))]


class Term:
    """kql in a 120x40 tmux pane on a private tmux server."""

    def __init__(self, tmp_path, *args, env=None):
        assert shutil.which("tmux"), "tmux is needed (apt-get install tmux; tests/setup.sh)"
        self.sock = str(tmp_path / f"tmux-{uuid.uuid4().hex[:8]}")  # a private server
        self.state = tmp_path / "state"
        envs = {"XDG_STATE_HOME": str(self.state), "TERM": "xterm", "PAGER": "less -SRFX",
                "PYTHONPATH": os.pathsep.join(sys.path), **(env or {})}
        cmd = " ".join(["env"] + [f"{k}='{v}'" for k, v in envs.items()]
                       + [sys.executable, "-m", "kql.cli", SAMPLE, *args])
        self.tmux("new-session", "-d", "-s", "k", "-x", "120", "-y", "40", cmd)
        self.tmux("set-option", "-t", "k", "remain-on-exit", "on")

    def tmux(self, *args) -> str:
        return subprocess.run(["tmux", "-S", self.sock, *args], capture_output=True,
                              text=True, check=False).stdout

    def type(self, text: str) -> None:
        # tmux takes a trailing ';' of an argument for its command separator:
        # send each ';' as a hex key
        for i, part in enumerate(text.split(";")):
            if i:
                self.tmux("send-keys", "-t", "k", "-H", "3b")
            if part:
                self.tmux("send-keys", "-t", "k", "-l", part)

    def keys(self, *keys: str) -> None:
        self.tmux("send-keys", "-t", "k", *keys)

    def screen(self, history: bool = False) -> str:
        args = ["-S", "-"] if history else []
        return self.tmux("capture-pane", "-t", "k", "-p", "-J", *args)

    def wait_for(self, pattern: str, timeout: float = 30, history: bool = False) -> str:
        end = time.monotonic() + timeout
        while True:
            s = self.screen(history)
            if re.search(pattern, s, re.M):
                return s
            if time.monotonic() > end:
                raise AssertionError(f"{pattern!r} not on the screen:\n{s}")
            time.sleep(0.1)

    def dead(self) -> bool:
        return self.tmux("display-message", "-t", "k", "-p", "#{pane_dead}").strip() == "1"

    def close(self) -> None:
        self.tmux("kill-server")


@pytest.fixture
def term(tmp_path):
    terms = []

    def start(*args, env=None):
        t = Term(tmp_path, *args, env=env)
        terms.append(t)  # killed at the end even if kql never shows its prompt
        t.wait_for(r"kql>\s*$", timeout=60)
        return t
    yield start
    for t in terms:
        t.close()


def test_typing_a_multiline_statement_history_and_ctrl_d(term, tmp_path):
    t = term()
    t.type("SELECT pid, comm FROM tasks")
    t.keys("Enter")
    t.wait_for(r"^\s*\.\.\.>\s*$")         # not complete without ';': a second line
    t.type("WHERE pid = 1;")
    t.keys("Enter")
    s = t.wait_for(r"^\(1 row\)$")
    assert re.search(r"^\s+1\s+init$", s, re.M)
    # history: Up recalls the statement, Ctrl-R finds it by a word in it
    t.keys("Up")
    t.wait_for(r"kql> SELECT pid, comm FROM tasks\n\s*\.\.\.> WHERE pid = 1;")
    t.keys("C-c")
    t.wait_for(r"kql>\s*$")
    t.keys("C-r")
    t.type("WHERE pid")
    t.wait_for(r"WHERE pid = 1;")
    t.keys("C-g", "C-c")
    hist = (tmp_path / "state" / "kql" / "history").read_text()
    assert "+SELECT pid, comm FROM tasks\n+WHERE pid = 1;" in hist
    t.wait_for(r"kql>\s*$")
    # let the new prompt take over the terminal before Ctrl-D (under load a
    # Ctrl-D sent while the cancelled prompt was being replaced was lost once)
    time.sleep(1)
    t.keys("C-d")
    end = time.monotonic() + 10
    while not t.dead():
        assert time.monotonic() < end, t.screen()
        time.sleep(0.1)


def test_tab_completes_member_paths(term):
    t = term()
    t.type("SELECT pid, task->mm->map_c")
    t.keys("Tab")
    t.wait_for(r"kql> SELECT pid, task->mm->map_count")
    t.keys("C-c")
    t.type("SELECT task->m")
    t.keys("Tab")
    s = t.wait_for(r"migration_pending")
    assert re.search(r"\bmm\s+struct mm_struct \*", s)
    t.keys("C-c")


def test_vi_mode(term):
    t = term("-e", "vi")
    t.type("xSELECT 4242 AS answer;")
    t.keys("Escape")
    t.type("0x")                    # vi: go to the start, delete a character
    t.keys("Enter")
    s = t.wait_for(r"^\(1 row\)$")
    assert re.search(r"^\s*4242$", s, re.M)


def test_pager_opens_and_quits(term):
    t = term()
    t.type("log")
    t.keys("Enter")
    s = t.wait_for(r"^:$|\(END\)")      # less's prompt on the last line
    assert "Linux version" in s and "kql> " not in s.splitlines()[-1]
    t.keys("q")
    t.wait_for(r"kql>\s*$")


def test_ctrl_c_cancels_a_long_query(term):
    t = term()
    t.type("SELECT count(*) FROM memory(addr('init_task'), 1048576);")
    t.keys("Enter")
    time.sleep(1.5)
    t.keys("C-c")
    t.wait_for(r"^(\^C)?cancelled$", timeout=20)
    t.type("SELECT 7 AS after;")
    t.keys("Enter")
    t.wait_for(r"^\s*7$")
    t.keys("C-l")
    # a long DuckDB part (74 million joined rows): DuckDB itself is interrupted
    t.type("SELECT count(DISTINCT a.address % 100000 * 7 + b.address % 1000 + "
           "c.address % 997 * 1000000) FROM stack_words a, stack_words b, stack_words c;")
    t.keys("Enter")
    time.sleep(2)
    t.keys("C-c")
    t0 = time.monotonic()
    t.wait_for(r"^(\^C)?cancelled$", timeout=20)
    assert time.monotonic() - t0 < 10
    t.type("SELECT 8 AS again;")
    t.keys("Enter")
    t.wait_for(r"^\s*8$")


def test_syntax_error_has_a_caret_and_help_bt(term):
    t = term()
    t.type("SELEC pid FROM tasks;")
    t.keys("Enter")
    s = t.wait_for(r"^\s*\^\^\^\^\^$")
    assert "kql: syntax error: unexpected 'SELEC'" in s
    t.type("help bt")
    t.keys("Enter")
    t.wait_for(r"^bt \[-a \| -f \| -r\] \[PID\]$")


def test_bt_f_in_the_shell_is_the_sql(term):
    t = term()
    t.type("\\set pager off")
    t.keys("Enter")
    t.type("bt -f 1")
    t.keys("Enter")
    s = t.wait_for(r" RSP: [0-9a-f]{16}", history=True)
    frames = sql("SELECT level, sp, pc, function FROM stack_frames WHERE pid = 1 ORDER BY level")
    words = sql("SELECT address, value FROM stack_words WHERE pid = 1 ORDER BY address")
    got_frames = [(int(m[0]), int(m[1], 16), m[2], int(m[3], 16)) for m in re.findall(
        r"^ #(\d+) *\[([0-9a-f]{16})\] (\S+) at ([0-9a-f]{16})$", s, re.M)]
    assert got_frames == [(f["level"], f["sp"], f["function"], f["pc"]) for f in frames]
    got_words = []
    for a, vals in re.findall(r"^    ([0-9a-f]{16}): ((?:[0-9a-f]{16} ?){1,2})$", s, re.M):
        got_words += [(int(a, 16) + 8 * i, int(v, 16)) for i, v in enumerate(vals.split())]
    assert got_words == [(w["address"], w["value"]) for w in words]


def test_settings_vertical_sql_and_pipe(term):
    t = term()
    t.type("\\set format vertical")
    t.keys("Enter")
    t.type("SELECT release, cpus FROM sys;")
    t.keys("Enter")
    release = sql("SELECT release FROM sys")[0]["release"]
    t.wait_for(rf"^release \| {re.escape(release)}$")
    t.type("\\set sql on")
    t.keys("Enter")
    t.type("ps | grep -c IN")
    t.keys("Enter")
    n = len(sql("SELECT pid FROM tasks WHERE st = 'IN'"))
    s = t.wait_for(rf"^{n}$")
    assert "-- SELECT pid, ppid, cpu, task, st," in s


# ---------------------------------------------------------------- script mode

def test_script_from_stdin(tmp_path):
    script = ("SELECT pid, comm FROM tasks\n WHERE pid = 1;\n"
              "sym init_task\n\\set format csv\nSELECT pid FROM tasks WHERE pid = 2;\n"
              "SELEC 1;\nSELECT 3;\n")
    p = subprocess.run([sys.executable, "-m", "kql.cli", SAMPLE], input=script,
                       capture_output=True, text=True)
    head = sql("SELECT address FROM var('init_task')")[0]["address"]
    assert p.stdout.endswith(f"(1 row)\n{head:016x} (D) init_task\npid\n2\n")
    assert p.stderr.startswith("kql: syntax error: unexpected 'SELEC'")
    assert p.returncode == 1  # stops at the first error
    out = tmp_path / "out.csv"
    out.write_text("old\n")
    p = subprocess.run([sys.executable, "-m", "kql.cli", SAMPLE, "-o", str(out), "-f", "csv"],
                       input="SELECT 1 AS a;\nsym init_task\n", capture_output=True, text=True)
    assert (p.returncode, p.stdout, out.read_text()) == (
        0, "", f"a\n1\n{head:016x} (D) init_task\n")   # replaced atomically, not appended
    p = subprocess.run([sys.executable, "-m", "kql.cli", SAMPLE], input="SELECT 5 AS n",
                       capture_output=True, text=True)
    assert (p.returncode, p.stdout) == (0, "  n\n---\n  5\n(1 row)\n")


def test_units_end_with_semicolon_or_their_line():
    assert not is_complete("SELECT 1")
    assert is_complete("SELECT 1;") and is_complete("SELECT 1 ;  -- done")
    assert not is_complete("SELECT ';'") and is_complete("SELECT ';';")
    assert is_complete("bt -f 1") and is_complete("ps | grep UN")
    assert is_complete("\\set format csv") and is_complete("@hung-tasks")
    assert is_complete("quit") and is_complete("")


# ---------------------------------------------------------------- completion

@pytest.mark.parametrize("name", ["sample"] + [pytest.param(n, marks=pytest.mark.fixtures)
                                                for n in ("6.1-live", "6.12-live")])
def test_completion_knows_the_kernel(name):
    from kql.completion import warm
    k = kernel(name)
    warm(k)
    pages = k.dump.stats.pages_read
    types = k.types
    task = types.find_type("struct task_struct")
    from kql.types import iter_members_flat
    members = [n for n, _m, _o in iter_members_flat(task)]

    def names(before, after=""):
        return [c[0] for c in candidates(k, before, before + after)]
    assert names("SELECT task->", " FROM tasks") == members
    assert names("SELECT t.task->m", " FROM tasks t") == [m for m in members if m.startswith("m")]
    mm = [n for n, _m, _o in iter_members_flat(types.find_type("struct mm_struct"))]
    assert names("SELECT task->mm->", " FROM tasks") == mm
    assert names("SELECT value->pi", " FROM var('init_task')") == \
        [m for m in members if m.startswith("pi")]
    assert "init_task" in names("SELECT addr('init_t")
    assert "struct task_struct" in names("SELECT CAST(x AS 'struct task_s")
    assert "struct mm_struct" in names("SELECT * FROM members('mm_str")
    assert names("SELECT pi", " FROM tasks")[0] == "pid"
    assert "bt" in names("b") and "@hung-tasks" in names("@hung")
    assert names("@open-files ") == ["pid="]
    assert k.dump.stats.pages_read == pages  # types and symbols only: no scan, no read
