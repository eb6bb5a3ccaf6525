"""Atomic files and kql's on-disk cache.

Every file kql writes — query output, Parquet exports, parsed-kernel caches,
the grammar's parser tables — appears under its name complete or not at all:
it is written to a hidden temporary file beside the target and renamed over
it.  The temporary name is ``.<name>.[<tag>.]<random>.tmp``, so it never
matches a ``*.parquet`` (or any ``*.<ext>``) glob.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import tempfile
from pathlib import Path


@contextlib.contextmanager
def atomic_file(path, mode: str = "wb", *, tag: str = "", fsync: bool = False):
    """Open a temporary file beside ``path``; rename it over ``path`` when the
    block ends without an exception (including KeyboardInterrupt), else
    remove it.  ``tag`` goes into the temporary name (e.g. host and pid of
    the writer); ``fsync`` flushes the data to disk before the rename."""
    path = os.fspath(path)
    d = os.path.dirname(os.path.abspath(path)) or "."
    prefix = f".{os.path.basename(path)}." + (f"{tag}." if tag else "")
    fd, tmp = tempfile.mkstemp(dir=d, prefix=prefix, suffix=".tmp")
    try:
        text = {} if "b" in mode else {"encoding": "utf-8", "newline": ""}
        with os.fdopen(fd, mode, **text) as f:
            yield f
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/kql``, else ``~/.cache/kql``."""
    base = os.environ.get("XDG_CACHE_HOME")
    return Path(base) / "kql" if base else Path.home() / ".cache" / "kql"


def atomic_pickle(path: Path, obj) -> None:
    """Pickle ``obj`` to ``path`` atomically (creating the directory)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path, "wb") as f:
        pickle.dump(obj, f, protocol=pickle.HIGHEST_PROTOCOL)


def load_pickle(path: Path, check: dict):
    """The dict pickled at ``path`` if it holds every ``check`` item, else None
    (missing, unreadable, corrupt or another kernel's file)."""
    try:
        with open(path, "rb") as f:
            data = pickle.load(f)
    except (OSError, EOFError, pickle.UnpicklingError, AttributeError, ImportError,
            IndexError, ValueError, TypeError):
        return None
    if not isinstance(data, dict) or any(data.get(k) != v for k, v in check.items()):
        return None
    return data
