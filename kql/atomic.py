"""Atomic files and kql's on-disk cache.

Every file kql writes — query output, Parquet exports, parsed-kernel caches,
the grammar's parser tables — appears under its name complete or not at all:
it is written to a hidden temporary file beside the target and renamed over
it.  The temporary name is ``.<name>.[<tag>.]<random>.tmp``, so it never
matches a ``*.parquet`` (or any ``*.<ext>``) glob.

Only a regular file is replaced: a symbolic link is followed (the file it
names is replaced, the link stays), and a device, pipe or socket
(``-o /dev/stdout``, ``-o /dev/null``, a FIFO) is written through.  A
replaced file keeps its permission bits; a new one gets ``0666`` less the
umask, as ``open()`` would give it.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import stat
import tempfile
from pathlib import Path


@contextlib.contextmanager
def atomic_file(path, mode: str = "wb", *, tag: str = "", fsync: bool = False):
    """Open a temporary file beside ``path``; rename it over ``path`` when the
    block ends without an exception (including KeyboardInterrupt), else
    remove it.  ``tag`` goes into the temporary name (e.g. host and pid of
    the writer); ``fsync`` flushes the data to disk before the rename."""
    path = os.fspath(path)
    text = {} if "b" in mode else {"encoding": "utf-8", "newline": ""}
    try:
        st = os.stat(path)  # follows links
    except FileNotFoundError:
        st = None
    real = os.path.realpath(path)
    if st is not None and (not stat.S_ISREG(st.st_mode) or real.startswith("/proc/")):
        # a device, pipe or socket (or /dev/stdout onto a file): written through
        with open(path, mode, **text) as f:
            yield f
        return
    path = real  # a symbolic link stays; the file it names is replaced
    d = os.path.dirname(path) or "."
    prefix = f".{os.path.basename(path)}." + (f"{tag}." if tag else "")
    fd, tmp = tempfile.mkstemp(dir=d, prefix=prefix, suffix=".tmp")
    try:
        os.fchmod(fd, stat.S_IMODE(st.st_mode) if st is not None else 0o666 & ~_umask())
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


def open_regular(path, what: str = "file"):
    """``path`` opened for reading (a binary file object) if it is a regular
    file; else OSError.  Opened without blocking first, so a FIFO named as a
    dump or a saved query is refused instead of waiting forever for a writer."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = ("a directory" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode)
                    else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
                    else "a socket" if stat.S_ISSOCK(mode) else "not a regular file")
            raise OSError(f"is {kind}, not a {what}")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _umask() -> int:
    """The process's umask (read without changing it where /proc allows)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


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
