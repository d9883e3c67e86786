"""Opening LMDB environments (the store's, the auth store's) so that damaged files fail
with StoreCorrupt instead of a bare lmdb error or a crash."""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lmdb

from objstore import errors

# what LMDB raises for files that are not an LMDB environment, or a damaged one
DAMAGED = (
    lmdb.InvalidError,
    lmdb.CorruptedError,
    lmdb.PageNotFoundError,
    lmdb.IncompatibleError,
    lmdb.VersionMismatchError,
    getattr(lmdb, "BadChecksumError", lmdb.CorruptedError),  # py-lmdb 3.0 on
)


# what LMDB raises inside a write that meets damaged pages: its internal errors (a page's free
# space miscounted; the transaction invalidated by such a failure), which py-lmdb's cursor
# delete can also surface as a SystemError over them
_DAMAGED_IN_WRITE = (*DAMAGED, lmdb.PageFullError, lmdb.BadTxnError)


def damage_in_write(exc: BaseException) -> bool:
    """Whether ``exc``, raised inside a write transaction, is LMDB meeting damaged pages."""
    if isinstance(exc, SystemError):
        exc = exc.__context__ or exc.__cause__ or exc
    return isinstance(exc, _DAMAGED_IN_WRITE)


# how lmdb.open words the OS errors of a store that cannot be written
_UNWRITABLE = tuple(os.strerror(code) for code in (errno.EROFS, errno.EACCES, errno.EPERM))


def damaged(path: Path, exc: BaseException) -> errors.StoreCorrupt:
    return errors.StoreCorrupt(
        f"{path} is damaged or not an objstore store ({exc}); a cache can be moved aside "
        "and received again, a server's store restored from a backup"
    )


def make_directory(path: Path) -> None:
    """Make the directory a writable store lives in; a file there is StoreNotFound, other
    failures keep their OSError class, with a message that says what was being made."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:  # mkdir's answer when ``path`` is a file
        raise errors.StoreNotFound(f"{path} is a file, not a store's directory") from None
    except OSError as exc:
        raise type(exc)(
            exc.errno, f"cannot make the store's directory {path}: {exc.strerror}"
        ) from exc


def open_environment(path: Path, **options: Any) -> Any:
    """``lmdb.open`` of the directory ``path``, refusing files that are not an environment
    or hold fewer bytes than the pages their header counts (cut short by a copy or a disk):
    reading past a file's end through the map kills the process (SIGBUS) instead of
    failing. (A writable map has LMDB lengthen the file at open; missing pages then read
    as zeros, which LMDB reports as corrupt when its tables are opened.)"""
    try:
        env = lmdb.open(str(path), subdir=True, **options)
    except DAMAGED as exc:
        raise damaged(path, exc) from exc
    except lmdb.Error as exc:
        if options.get("readonly") and not (path / "data.mdb").exists():
            raise errors.StoreNotFound(f"no store in {path} to open read-only") from exc
        if not options.get("readonly") and str(exc).endswith(_UNWRITABLE):
            raise errors.StoreReadOnly(
                f"{path} cannot be opened for writing ({exc}); open it read-only to read it"
            ) from exc
        if "already open in this process" in str(exc):  # py-lmdb's guard, by its words
            raise errors.StoreInUse(
                f"{path} is already open in this process, or in the one it was forked from "
                "(objstore.open shares a store within a process; open stores after a fork, or "
                "start processes with spawn)"
            ) from exc
        raise
    with refusing_damage(path, env):
        need = (env.info()["last_pgno"] + 1) * env.stat()["psize"]
        have = os.stat(path / "data.mdb").st_size
        if have < need:
            raise lmdb.CorruptedError(f"data.mdb is {have:,} bytes, its pages take {need:,}")
    return env


@contextlib.contextmanager
def refusing_damage(path: Path, env: Any) -> Iterator[None]:
    """Around the first reads of a just-opened ``env`` (its tables): on any failure close it;
    LMDB's errors for damaged files become StoreCorrupt."""
    try:
        yield
    except BaseException as exc:
        env.close()
        if isinstance(exc, DAMAGED):
            raise damaged(path, exc) from exc
        raise
