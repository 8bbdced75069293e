"""Files and folders only their owner can read: the target's SQLite file, staged data, the
mapping cache hold personal data (ID numbers, phones, names) and units' business records.

Two layers, because either alone leaks. The CLI and every Airflow task body run under umask
077 (`umask()`), so whatever they or the libraries they call create (SQLite journals, Parquet
files, Airflow's own files under `etl airflow`) is 0600 / 0700. And the places that create
sensitive files say so themselves (`makedirs`, `create`, `tighten`), since an Airflow worker
runs other code with its own umask and may call ours from there.
"""

from __future__ import annotations

import functools
import os
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TypeVar

FILE_MODE, DIR_MODE, UMASK = 0o600, 0o700, 0o077

F = TypeVar("F", bound=Callable)


@contextmanager
def umask() -> Iterator[None]:
    """Run with umask 077, then restore the caller's (tests and `dag.test()` share a process)."""
    old = os.umask(UMASK)
    try:
        yield
    finally:
        os.umask(old)


def private_files(fn: F) -> F:
    """`fn` runs under `umask()`: for the entry points of Airflow tasks."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with umask():
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def makedirs(folder: str | os.PathLike[str]) -> None:
    """`folder` and its missing parents, each created 0700 (`os.makedirs` gives intermediate
    folders the umask's mode); folders that exist are left as they are."""
    path = Path(folder)
    missing = []
    while not path.exists():
        missing.append(path)
        if path.parent == path:
            break
        path = path.parent
    for p in reversed(missing):
        try:
            p.mkdir(mode=DIR_MODE)
        except FileExistsError:  # made by a concurrent process meanwhile
            pass


def tighten(path: str | os.PathLike[str]) -> None:
    """Take group and other permissions away from a file or folder we own (one we created
    before this rule, or that something else created under a looser umask): 0644 -> 0600,
    0755 -> 0700. Others' files are left alone."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return
    if st.st_uid == os.getuid() and stat.S_IMODE(st.st_mode) & 0o077:
        os.chmod(path, stat.S_IMODE(st.st_mode) & 0o700)


def private_dir(folder: str | os.PathLike[str]) -> None:
    """A folder of ours (a staging root, the mapping cache): made 0700, or tightened to it."""
    makedirs(folder)
    tighten(folder)


def create(path: str | os.PathLike[str], *, exclusive: bool = True) -> IO[bytes]:
    """Open a new file for writing, 0600 from its first byte (no window where others may read
    it); `exclusive=False` also opens one that exists (and leaves its mode)."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_EXCL if exclusive else os.O_TRUNC)
    return os.fdopen(os.open(path, flags | getattr(os, "O_CLOEXEC", 0), FILE_MODE), "wb")


def touch(path: str | os.PathLike[str]) -> None:
    """Make sure `path` exists, and is 0600 if we own it: for files another library creates
    (SQLite's database file)."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE))
    except FileExistsError:
        tighten(path)
    except OSError:
        pass  # a folder, no permission ...: the library opening it says what is wrong
