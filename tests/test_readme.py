"""Every `kql …` and `python3 -c …` example in README.md runs on the shipped
sample dump and answers.

Examples are the lines of README code blocks (indented or fenced) that start
with ``kql `` or ``python3 -c ``; a new one is picked up without editing this
file.  They run in README order (an export before the queries of its
directory), through bash, with the venv's ``kql`` and ``python3`` first on PATH,
in a scratch directory.  Placeholders: ``vmcore`` (and ``vmcore.monday`` …,
``/var/crash/*/vmcore``) is the sample dump; ``/srv/kql-exports`` and ``/tmp/x``
are scratch directories.  A code block right after a line
``<!-- readme-test: skip -->`` is not run.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from fixtures import SAMPLE_DIR

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = str(SAMPLE_DIR / "vmcore.kdump")
SKIP = "<!-- readme-test: skip -->"


def examples(text: str) -> list[tuple[int, str]]:
    out, fenced, skip_block, prev_blank, in_block = [], False, False, True, False
    lines = text.splitlines()
    for no, line in enumerate(lines, 1):
        if line.strip().startswith("```"):
            if not fenced:
                skip_block = no > 1 and lines[no - 2].strip() == SKIP
            fenced = not fenced
            continue
        indented = line.startswith("    ") and (prev_blank or in_block)
        if not fenced and not line.startswith("    ") and line.strip():
            in_block = False
        if indented and not in_block:
            in_block = True
            back = no - 2
            while back >= 0 and not lines[back].strip():
                back -= 1
            skip_block = back >= 0 and lines[back].strip() == SKIP
        prev_blank = not line.strip()
        if (fenced or indented) and not skip_block:
            cmd = line.strip()
            if cmd.startswith(("kql ", "python3 -c ")):
                out.append((no, cmd))
    return out


EXAMPLES = examples((ROOT / "README.md").read_text())


def substitute(cmd: str, scratch: Path) -> str:
    cmd = cmd.replace("/var/crash/*/vmcore", SAMPLE)
    cmd = cmd.replace("/srv/kql-exports", str(scratch / "exports"))
    cmd = cmd.replace("/tmp/x", str(scratch / "x"))
    return re.sub(r"(?<![\w/.-])vmcore(\.\w+)?(?![\w/-])", SAMPLE, cmd)


def test_readme_has_examples():
    kinds = {cmd.split()[0] for _, cmd in EXAMPLES}
    assert len(EXAMPLES) >= 20 and kinds == {"kql", "python3"}, EXAMPLES


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    return tmp_path_factory.mktemp("readme")


@pytest.mark.parametrize("line,cmd", EXAMPLES, ids=[f"L{no}" for no, _ in EXAMPLES])
def test_readme_example(line, cmd, scratch):
    bindir = os.path.dirname(sys.executable)
    env = dict(os.environ, PATH=f"{bindir}:{os.environ.get('PATH', '')}")
    env.pop("KQL_DEBUG", None)
    run = substitute(cmd, scratch)
    p = subprocess.run(["bash", "-c", run], cwd=scratch, capture_output=True, text=True,
                       env=env, stdin=subprocess.DEVNULL, timeout=300)
    where = f"README.md line {line}: {cmd}\n{p.stderr}"
    assert p.returncode == 0, where
    out = re.search(r"(?:^|\s)-o\s+(\S+)", run)
    if out and " export " not in f" {run} ":
        target = Path(scratch, out.group(1))
        assert target.is_file() and target.stat().st_size > 0, where
    elif out:
        assert any(Path(scratch, out.group(1)).rglob("*.parquet")), where
    else:
        assert p.stdout.strip(), where
        assert "(0 rows)" not in p.stdout and p.stdout.strip() not in ("[]", "0"), where
