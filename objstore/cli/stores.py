"""Where the commands find their stores: a server's data dir (its store in objects/, its
auth state in auth/) or a store itself (a client cache)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import objstore
from objstore import errors
from objstore.auth import AuthStore


def holds_store(path: Path) -> bool:
    return (path / "data.mdb").exists()


def is_server_dir(path: Path) -> bool:
    """Whether ``path`` is a server's data dir (auth state in auth/, its store in objects/);
    a store itself is not, even with an auth/ beside (older objstores made one in a cache
    given to ``project list``)."""
    if holds_store(path):
        return False
    return (path / "auth").is_dir() or holds_store(path / "objects")


def store_dir(data: str) -> Path:
    """Objects live in DATA/objects, auth state in DATA/auth; DATA may also be a store
    itself (a client cache)."""
    path = Path(data)
    return path if holds_store(path) else path / "objects"


def open_store(
    args: argparse.Namespace, *, create: bool = False, readonly: bool = False
) -> objstore.Store:
    """The store under --data; unless ``create``, one must be there already (a mistyped
    path would otherwise get a new empty store, which verifies ok). Commands that only
    read open it ``readonly``: they work where it cannot be written (a read-only disk)."""
    path = store_dir(args.data)
    if not create and not holds_store(path):
        raise errors.StoreNotFound(
            f"no store in {args.data} (neither {args.data}/objects nor {args.data} holds a "
            "data.mdb): check --data or OBJSTORE_DATA"
        )
    return objstore.open(path, readonly=readonly)


def is_cache(args: argparse.Namespace) -> bool:
    """Whether --data is a store itself (a client cache): projects, but no users or tokens."""
    return holds_store(Path(args.data))


def auth_store(args: argparse.Namespace) -> AuthStore:
    return AuthStore(Path(args.data) / "auth")


def admin_auth(args: argparse.Namespace) -> AuthStore:
    """The auth store for ``project``/``token`` commands, refused on a client cache (an auth
    store made there would only litter it). Only ``create`` makes one where there is none:
    a mistyped --data given to ``list`` or ``revoke`` used to get a new, empty one."""
    if is_cache(args):
        raise ValueError(
            f"{args.data} is a client cache (a store with no users or tokens; send and receive "
            f"make its projects): {args.command} {args.action} needs a server's data dir"
        )
    if args.action != "create" and not (Path(args.data) / "auth").is_dir():
        raise errors.StoreNotFound(
            f"no server data in {args.data} (no {Path(args.data) / 'auth'}; `objstore serve` "
            "or a create makes it): check --data or OBJSTORE_DATA"
        )
    return auth_store(args)


def writable(path: str | None, label: str) -> None:
    """Refuse, before a long run, a file that could not be written at its end (``label``
    starts the message: the flag that named it)."""
    if path is None:
        return
    target = Path(path)
    if target.is_dir():
        raise IsADirectoryError(f"{label} {path}: it is a directory")
    if not target.parent.is_dir():
        raise FileNotFoundError(f"{label} {path}: no directory {target.parent}")
    if not os.access(target.parent, os.W_OK):
        raise PermissionError(f"{label} {path}: {target.parent} is not writable")
