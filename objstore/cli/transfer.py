"""``objstore push``, ``pull`` and ``cp``: moving graphs through the local cache."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec

import objstore
from objstore import errors, graph
from objstore.cli import progress
from objstore.cli.source import Source
from objstore.cli.stores import holds_store, is_server_dir, writable


def _cache_dir(args: argparse.Namespace) -> Path:
    """The local cache: --cache, OBJSTORE_CACHE or the user data dir; never a server's data
    dir, whose top a cache would share with its auth/ and objects/."""
    given = args.cache or os.environ.get("OBJSTORE_CACHE")
    if given:
        path = Path(given)
    else:
        import platformdirs

        path = Path(platformdirs.user_data_dir("objstore")) / "cache"
    if is_server_dir(path):
        raise ValueError(
            f"{path} is a server's data dir, not a cache (its store is {path / 'objects'}): "
            "give --cache (or OBJSTORE_CACHE) a directory of its own"
        )
    return path


def _remote(
    args: argparse.Namespace,
    url: str | None = None,
    *,
    token: str | None = None,
    project: str | None = None,
) -> Any:
    from objstore.client import Remote

    token = token or args.token or os.environ.get("OBJSTORE_TOKEN")
    return Remote(
        url or args.url, token, project or args.project, retries=3, compression=args.compression
    )


def cmd_push(args: argparse.Namespace) -> int:
    """Upload a JSON document or a dump, skipping what the server has."""
    from objstore.client import send

    stdin = args.file == "-"
    path = Path("<stdin>" if stdin else args.file)
    with contextlib.nullcontext(sys.stdin.buffer) if stdin else path.open("rb") as fh:
        source = Source(path, fh, progress.bar)
        with (
            _remote(args) as remote,
            objstore.open(_cache_dir(args)) as cache,
            progress.bar("push", source.count) as tick,
        ):
            try:
                result = send(source.objects, remote, cache, progress=tick)
            except errors.InvalidObject as exc:  # placed by its line, not its place in the send
                if exc.index is None:
                    raise
                raise exc.located(source.where(exc.index)) from None
    print(result.root_id)
    print(result.summary(), file=sys.stderr)
    return 0


@contextlib.contextmanager
def _output(path: str | None) -> Iterator[Any]:
    """Where ``pull`` writes: stdout (no path, or ``-``), or a file that appears whole or not
    at all (written beside it under a temporary name, renamed once complete). A place that
    cannot take the file fails here, before anything is downloaded."""
    if path is None or path == "-":
        yield sys.stdout.buffer
        return
    writable(path, "cannot write")
    target = Path(path)
    # the umask's mode, as open's; the name cut so that a long one's part is a legal name too
    part = target.parent / f".{target.name[:200]}.{os.getpid()}.part"
    try:
        out = open(part, "xb")  # noqa: SIM115
    except OSError as exc:  # named for the file asked for, not the temporary one beside it
        raise type(exc)(f"cannot write {path}: {exc.strerror or exc}") from None
    try:
        with out:
            yield out
        os.replace(part, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(part)
        raise


def cmd_pull(args: argparse.Namespace) -> int:
    """Receive a graph through the local cache; write it as a dump or a JSON document."""
    from objstore.client import receive

    as_json = args.format == "json" or (
        args.format is None and args.output and args.output.endswith(".json")
    )
    with (
        _output(args.output) as out,
        _remote(args) as remote,
        objstore.open(_cache_dir(args)) as cache,
    ):
        with progress.bar("pull", None) as tick:
            result = receive(args.root_id, remote, cache, progress=tick)
        with progress.bar("rebuild" if as_json else "write", result.total) as tick:
            if as_json:
                # only encoded, never changed: a repeated object may be one dict in every place
                doc = graph.recompose(
                    args.root_id, cache, remote.project, shared=True, progress=tick
                )
                out.write(msgspec.json.encode(doc) + b"\n")
            else:
                stream = cache.iter_with_children(remote.project, args.root_id)
                for object_id, data in graph.reported(stream, tick):
                    out.write(object_id.encode() + b"\t" + data + b"\n")
    print(result.summary(), file=sys.stderr)
    return 0


def cmd_cp(args: argparse.Namespace) -> int:
    """Copy a graph between a local store directory and a server (either direction)."""
    from objstore.client import receive, send

    src_remote = args.src.startswith(("http://", "https://"))
    dst_remote = args.dst.startswith(("http://", "https://"))
    if not src_remote and not dst_remote:
        print("objstore: cp needs an http(s) URL on at least one side", file=sys.stderr)
        return 2
    if src_remote and dst_remote:
        return _cp_between_servers(args)
    if args.to_project or args.to_token:
        print(
            "objstore: --to-project and --to-token are for cp between two servers", file=sys.stderr
        )
        return 2
    url, local = (args.src, args.dst) if src_remote else (args.dst, args.src)
    # a server's data dir stands for its store, not a new one beside its auth/ and objects/
    path = Path(local) / "objects" if is_server_dir(Path(local)) else Path(local)
    if not src_remote and not holds_store(path):
        raise errors.StoreNotFound(f"no store in {local} (no {local}/data.mdb) to copy from")
    project = args.local_project or args.project
    with (
        _remote(args, url) as remote,
        objstore.open(path) as store,
        progress.bar("cp", None) as tick,
    ):
        if src_remote:
            got = receive(args.root, remote, store, cache_project=project, progress=tick)
            print(got.summary(), file=sys.stderr)
        else:
            try:
                sent = send(args.root, remote, store, cache_project=project, progress=tick)
            except errors.ObjectNotFound as exc:
                if exc.object_id != args.root:  # the root is there, part of its graph is not
                    raise
                where = f"the local store {local} (--local-project picks another project)"
                raise errors.ObjectNotFound(exc.project, exc.object_id, where) from None
            print(sent.summary(), file=sys.stderr)
    return 0


def _cp_between_servers(args: argparse.Namespace) -> int:
    """Copy a graph from one server to another through the local cache: received there
    (only what the cache lacks), then sent from it (only what the destination lacks); both
    halves resume where an interrupted run stopped."""
    from objstore.client import receive, send

    if args.local_project:
        print("objstore: --local-project is for cp with a local store", file=sys.stderr)
        return 2
    with (
        _remote(args, args.src) as src,
        _remote(args, args.dst, token=args.to_token, project=args.to_project) as dst,
        objstore.open(_cache_dir(args)) as cache,
    ):
        with progress.bar("receive", None) as tick:
            got = receive(args.root, src, cache, progress=tick)
        print(f"from {src.url}: {got.summary()}", file=sys.stderr)
        with progress.bar("send", None) as tick:
            sent = send(args.root, dst, cache, cache_project=src.project, progress=tick)
        print(f"to {dst.url}: {sent.summary()}", file=sys.stderr)
    return 0
