"""The wheel holds every module and data file of the source tree, and kql
imports from the repository root as well as from anywhere else."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# source folder -> package it installs as (setup.py ROOTS)
FOLDERS = {"kql": "kql", "grammar": "kql/grammar", "planner": "kql/planner",
           "queries": "kql/queries"}


def source_files() -> set[str]:
    want = set()
    for folder, pkg in FOLDERS.items():
        for f in (ROOT / folder).rglob("*"):
            if f.is_file() and f.suffix in (".py", ".lark", ".kql") and "__pycache__" not in f.parts:
                want.add(f"{pkg}/{f.relative_to(ROOT / folder).as_posix()}")
    return want


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    p = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                        "--no-build-isolation", "-w", str(out), str(ROOT)],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    (whl,) = out.glob("kql-*.whl")
    return whl


def test_wheel_holds_every_source_file(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = sorted(source_files() - names)
    assert not missing, f"left out of the wheel: {missing}"
    assert any(n.startswith("kql/grammar/") and n.endswith(".lark") for n in names)


def test_wheel_finds_a_new_subpackage(tmp_path):
    """Discovery, not a hand-kept list: a new subpackage goes into the wheel."""
    import shutil
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(
        ".git", "tests", "benchmarks", "__pycache__", "*.egg-info", "build", ".venv"))
    (src / "planner" / "newrules").mkdir()
    (src / "planner" / "newrules" / "__init__.py").write_text("X = 1\n")
    p = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                        "--no-build-isolation", "-w", str(tmp_path / "out"), str(src)],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    (whl,) = (tmp_path / "out").glob("kql-*.whl")
    assert "kql/planner/newrules/__init__.py" in zipfile.ZipFile(whl).namelist()


@pytest.mark.parametrize("cwd", [ROOT, Path("/")])
def test_import_from_root_and_elsewhere(cwd):
    """As a user types it: `python3 -c` puts the working directory first on
    sys.path, so in the repository root the checkout's kql/ is what imports."""
    import os
    env = {k: v for k, v in os.environ.items() if k != "PYTHONSAFEPATH"}
    p = subprocess.run([sys.executable, "-c",
                        "import kql, kql.grammar, kql.planner, kql.queries; "
                        "print(kql.grammar.parse_one('SELECT 1').to_sql())"],
                       cwd=cwd, capture_output=True, text=True, env=env)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "SELECT 1"


def test_version():
    import kql
    p = subprocess.run([sys.executable, "-m", "kql.cli", "--version"], capture_output=True,
                       text=True, cwd="/")
    assert p.returncode == 0, p.stderr
    assert p.stdout.split()[:2] == ["kql", kql.__version__]
