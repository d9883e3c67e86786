"""The ``objstore`` command line."""

from __future__ import annotations

import argparse
import codecs
import contextlib
import importlib.util
import inspect
import itertools
import os
import socket
import sys
import time
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import msgspec

import objstore
from objstore import codec, errors, graph, graphgen
from objstore.auth import ROLES, AuthStore

DEFAULT_DATA = os.environ.get("OBJSTORE_DATA", "data")
# bench.WORKLOADS, for --help without importing the bench package (httpx, rich)
BENCH_WORKLOADS = (
    "cold send", "re-send", "download", "getobjects", "single GET", "diff 100k", "mixed",
)  # fmt: skip

Handler = Callable[[argparse.Namespace], int]


def _holds_store(path: Path) -> bool:
    return (path / "data.mdb").exists()


def _is_server_dir(path: Path) -> bool:
    """Whether ``path`` is a server's data dir (auth state in auth/, its store in objects/);
    a store itself is not, even with an auth/ beside (older objstores made one in a cache
    given to ``project list``)."""
    if _holds_store(path):
        return False
    return (path / "auth").is_dir() or _holds_store(path / "objects")


def _store_dir(data: str) -> Path:
    """Objects live in DATA/objects, auth state in DATA/auth; DATA may also be a store
    itself (a client cache)."""
    path = Path(data)
    return path if _holds_store(path) else path / "objects"


def _open(
    args: argparse.Namespace, *, create: bool = False, readonly: bool = False
) -> objstore.Store:
    """The store under --data; unless ``create``, one must be there already (a mistyped
    path would otherwise get a new empty store, which verifies ok). Commands that only
    read open it ``readonly``: they work where it cannot be written (a read-only disk)."""
    path = _store_dir(args.data)
    if not create and not _holds_store(path):
        raise errors.StoreNotFound(
            f"no store in {args.data} (neither {args.data}/objects nor {args.data} holds a "
            "data.mdb): check --data or OBJSTORE_DATA"
        )
    return objstore.open(path, readonly=readonly)


def _is_cache(args: argparse.Namespace) -> bool:
    """Whether --data is a store itself (a client cache): projects, but no users or tokens."""
    return _holds_store(Path(args.data))


def _auth(args: argparse.Namespace) -> AuthStore:
    return AuthStore(Path(args.data) / "auth")


def _admin_auth(args: argparse.Namespace) -> AuthStore:
    """The auth store for ``project``/``token`` commands, refused on a client cache (an auth
    store made there would only litter it)."""
    if _is_cache(args):
        raise ValueError(
            f"{args.data} is a client cache (a store with no users or tokens; send and receive "
            f"make its projects): {args.command} {args.action} needs a server's data dir"
        )
    return _auth(args)


def _cache_project(args: argparse.Namespace) -> int:
    """``project list|delete`` on a client cache: its store's projects, no auth (``create``
    and ``member`` are refused, naming why)."""
    if args.action not in ("list", "delete"):
        _admin_auth(args).close()  # raises
    with _open(args) as store:
        if args.action == "list":
            for project in store.projects():
                print(f"{project}\t{store.count(project):,} objects")
            return 0
        if args.name not in store.projects():
            print(f"no project {args.name!r} in {args.data}", file=sys.stderr)
            return 1
        removed = store.delete_project(args.name)
    print(f"deleted project {args.name} ({removed:,} objects)")
    return 0


_DURATION = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _duration(text: str) -> float:
    """'90s', '15m', '12h', '30d' or plain seconds."""
    unit = text[-1:].lower()
    try:
        seconds = float(text[:-1]) * _DURATION[unit] if unit in _DURATION else float(text)
    except ValueError:
        raise ValueError(
            f"--expires takes a duration such as 90s, 15m, 12h, 30d or seconds, got {text!r}"
        ) from None
    if seconds <= 0:
        raise ValueError(f"--expires must be more than 0, got {text!r}")
    return seconds


def _positive(text: str) -> int:
    """An argparse type: a whole number of at least 1."""
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"give a whole number of at least 1, not {text!r}")
    return int(text)


def _port(text: str) -> int:
    """An argparse type: a TCP port, 0 (any free one) to 65535."""
    if not text.strip().isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"give a port from 0 to 65535, not {text!r}")
    return int(text)


def _positives(text: str) -> list[int]:
    """An argparse type: comma separated whole numbers of at least 1 (``1,4,16``)."""
    try:
        return [_positive(part) for part in text.split(",")]
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"give whole numbers of at least 1, comma separated (1,4,16), not {text!r}"
        ) from None


def _seconds(text: str) -> float:
    """An argparse type: a number of seconds above 0."""
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"give a number of seconds above 0, not {text!r}")
    return value


def _writable(path: str | None, label: str) -> None:
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


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the HTTP server (uvicorn) on the store in --data."""
    import uvicorn

    os.environ["OBJSTORE_DATA"] = str(args.data)
    # create it (and fail early) in this process; the server's store is always DATA/objects
    objstore.open(Path(args.data) / "objects").close()
    _auth(args).close()
    config = uvicorn.Config(
        "objstore.server:create_app_from_env",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level=args.log_level,
    )
    from uvicorn.supervisors import Multiprocess

    try:
        if args.workers <= 1:
            uvicorn.Server(config).run()
        elif "target" in inspect.signature(Multiprocess).parameters:  # older uvicorn
            legacy: Any = Multiprocess
            legacy(config, target=uvicorn.Server(config).run, sockets=[_tcp_socket(args)]).run()
        else:
            Multiprocess(config, sockets=[_tcp_socket(args)]).run()
    except KeyboardInterrupt:
        pass
    return 0


def _tcp_socket(args: argparse.Namespace) -> socket.socket:
    """The shared listening socket for workers, created with proto=IPPROTO_TCP.

    uvicorn binds it with proto 0, and asyncio sets TCP_NODELAY only on accepted sockets whose
    proto is TCP: without it every small response waited ~40 ms (Nagle + delayed ACK).
    """
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    sock.set_inheritable(True)
    print(
        f"objstore serving http://{args.host}:{sock.getsockname()[1]} with {args.workers} "
        "workers (Ctrl+C to stop)",
        file=sys.stderr,
    )
    return sock


def cmd_project(args: argparse.Namespace) -> int:
    if _is_cache(args):
        return _cache_project(args)
    auth = _admin_auth(args)
    try:
        if args.action == "create":
            members = dict(m.split("=", 1) for m in args.member or [])
            project = auth.create_project(
                args.name, owner=args.owner, public=args.public, members=members
            )
            print(
                f"created project {project.name} (public={project.public}, "
                f"members={project.members})"
            )
        elif args.action == "list":
            for project in auth.list_projects():
                print(f"{project.name}\tpublic={project.public}\tmembers={project.members}")
        elif args.action == "delete":
            existed = auth.delete_project(args.name)
            with _open(args, create=True) as store:
                removed = store.delete_project(args.name)
            if not existed and not removed:
                print(f"no project {args.name!r}", file=sys.stderr)
                return 1
            print(f"deleted project {args.name} ({removed:,} objects)")
        elif args.action == "member":
            if args.role != "none" and args.role not in ROLES:
                roles = ", ".join([*ROLES, "none"])
                raise errors.ObjstoreError(f"unknown role {args.role!r}: use one of {roles}")
            role = None if args.role == "none" else args.role
            project = auth.update_project(args.name, members={args.user: role})
            print(f"{project.name} members: {project.members}")
    finally:
        auth.close()
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    auth = _admin_auth(args)
    try:
        if args.action == "create":
            if args.replace:
                for old in auth.list_tokens():
                    if old.user == args.user and old.name == (args.name or ""):
                        auth.revoke_token(old.id)
            token, secret = auth.create_token(
                args.user,
                scopes=args.scopes.split(","),
                projects=args.projects.split(",") if args.projects else None,
                expires_in=_duration(args.expires) if args.expires else None,
                name=args.name or "",
            )
            print(secret)
            print(
                f"token {token.id} for {token.user}: scopes {','.join(token.scopes)}"
                + (f", projects {','.join(token.projects)}" if token.projects else "")
                + (f", expires in {args.expires}" if args.expires else ""),
                file=sys.stderr,
            )
            for note in _token_reach(auth, token.user, token.projects):
                print(f"note: {note}", file=sys.stderr)
        elif args.action == "list":
            for token in auth.list_tokens():
                state = "expired" if token.expired() else "live"
                print(
                    f"{token.id}\t{token.user}\t{','.join(token.scopes)}\t"
                    f"{','.join(token.projects or ['*'])}\t{state}\t{token.name}"
                )
        elif args.action == "revoke":
            if not auth.revoke_token(args.token_id[:10]):
                print(f"no token {args.token_id!r}", file=sys.stderr)
                return 1
            print(f"revoked {args.token_id[:10]}")
    finally:
        auth.close()
    return 0


def _token_reach(auth: AuthStore, user: str, projects: list[str] | None) -> list[str]:
    """What a new token's projects do not give its user yet: a token reaches a project only
    as far as the user's role there (or its public read) lets it, so an admin is told."""
    notes = []
    if projects is None and not any(user in p.members for p in auth.list_projects()):
        notes.append(
            f"{user!r} is a member of no project yet: the token can only read public ones "
            f"(objstore project member NAME {user} ROLE)"
        )
    for name in projects or []:
        project = auth.get_project(name)
        if project is None:
            notes.append(f"there is no project {name!r} yet")
        elif user not in project.members:
            reach = "can only read it (it is public)" if project.public else "cannot use it"
            notes.append(
                f"{user!r} is not a member of {name!r}: the token {reach} until {user!r} has a "
                f"role there (objstore project member {name} {user} ROLE)"
            )
    return notes


def cmd_demo(args: argparse.Namespace) -> int:
    """Ingest a generated model into a store and print what the engine did."""
    graph = graphgen.generate(args.objects, seed=args.seed)
    print(
        f"generated {len(graph):,} objects, {graph.total_bytes / 1e6:.1f} MB, root {graph.root_id}"
    )
    with _open(args, create=True) as store:
        start = time.perf_counter()
        stored = store.put_many(args.project, graphgen.batches(graph.objects)).stored
        took = time.perf_counter() - start
        print(
            f"ingested into {args.data!s}/ project {args.project!r}: {stored:,} new objects "
            f"in {took:.2f}s ({len(graph) / took:,.0f} objects/s)"
        )
        start = time.perf_counter()
        stream = store.iter_with_children(args.project, graph.root_id)
        count = sum(1 for _ in stream)
        took = time.perf_counter() - start
        print(
            f"read root + children: {count:,} objects in {took:.2f}s "
            f"({count / took:,.0f} objects/s), {stream.missing} missing"
        )
        _print_stats(store)
    return 0


def _print_stats(store: objstore.Store) -> None:
    s = store.stats()
    print(
        f"projects {s.projects}, objects {s.objects:,}, distinct blobs {s.blobs:,}, "
        f"closures {s.closures:,}\nraw JSON {s.raw_bytes / 1e6:,.1f} MB, stored "
        f"{s.stored_bytes / 1e6:,.1f} MB ({s.ratio:.0%}), file {s.file_bytes / 1e6:,.1f} MB, "
        f"dictionaries {s.dictionaries}"
    )


def cmd_stats(args: argparse.Namespace) -> int:
    with _open(args, readonly=True) as store:
        _print_stats(store)
        for project in store.projects():
            print(f"  {project}: {store.count(project):,} objects")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    with _open(args, readonly=not args.repair) as store:
        if args.repair:
            print(f"repaired {store.recount():,} reference counts")
        report = store.verify()
    print(f"checked {report.blobs_checked:,} blobs, {report.objects_checked:,} objects")
    for problem in report.problems:
        print(f"PROBLEM: {problem}")
    print("ok" if report.ok else f"{len(report.problems)} problems")
    if report.miscounted:
        print(
            f"{report.miscounted:,} reference counts are wrong: `objstore verify --repair` "
            "sets them from the objects"
        )
    return 0 if report.ok else 1


def cmd_compact(args: argparse.Namespace) -> int:
    if not 0 < args.min_dead <= 1:
        print("error: --min-dead must be more than 0 and at most 1", file=sys.stderr)
        return 2
    with _open(args, readonly=args.dry_run) as store:
        before = store.stats().stored_bytes
        report = store.compact(args.min_dead, dry_run=args.dry_run)
    rewrote, moved, freed = (
        ("would rewrite", "move", "free") if args.dry_run else ("rewrote", "moved", "freed")
    )
    print(
        f"{rewrote} {report.packs_rewritten:,} packs into {report.packs_written:,}, {moved} "
        f"{report.frames_moved:,} objects, {freed} {report.bytes_freed / 1e6:,.1f} MB of "
        f"{before / 1e6:,.1f} MB stored"
    )
    return 0


def _cache_dir(args: argparse.Namespace) -> Path:
    """The local cache: --cache, OBJSTORE_CACHE or the user data dir; never a server's data
    dir, whose top a cache would share with its auth/ and objects/."""
    given = args.cache or os.environ.get("OBJSTORE_CACHE")
    if given:
        path = Path(given)
    else:
        import platformdirs

        path = Path(platformdirs.user_data_dir("objstore")) / "cache"
    if _is_server_dir(path):
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


Bars = Callable[..., contextlib.AbstractContextManager[Any]]  # as _progress


@contextlib.contextmanager
def _no_bars(label: str, total: int | None, counted: bool = True) -> Iterator[None]:
    yield None


@contextlib.contextmanager
def _progress(label: str, total: int | None, counted: bool = True) -> Iterator[Any]:
    """A rich progress bar on stderr (hidden when stderr is not a terminal); ``counted``:
    with a count of objects done (a step that cannot count shows only that it runs)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    console = Console(stderr=True)
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        *([MofNCompleteColumn()] if counted else []),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    ) as bar:
        task = bar.add_task(label, total=total)

        class _Tick:
            def advance(self, n: int) -> None:
                bar.advance(task, n)

            def total(self, n: int) -> None:
                bar.update(task, total=n)

        yield _Tick()


def _count_lines(path: Path) -> int | None:
    """Lines in a regular file (blank ones too), counted a megabyte at a time, for a progress
    total; None for a pipe, which can be read only once."""
    if not path.is_file():
        return None
    count, last = 0, b"\n"
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            count += chunk.count(b"\n")
            last = chunk[-1:]
    return count + (last != b"\n")


_SCALAR_STARTS = frozenset(b'"-0123456789tfn')  # JSON values other than objects and arrays


def _has_children(data: bytes) -> bool:
    """Whether an object's JSON lists children (a non-empty ``__closure``); one that is not
    valid says no here, and is named by its line when it is sent."""
    try:
        return bool(codec.decode_record(data, 0, codec.UNLIMITED).closure)
    except errors.InvalidObject:
        return False


class _Source:
    """What ``push`` sends: a JSON document's objects (decomposed); a JSON array of stored
    objects, root first (what the download route serves as application/json); or an
    ``id\\tjson`` dump's, read as they are sent, a window at a time: a push of millions of
    objects holds a few windows of them, not the file. A dump is sent in its order, its last
    line the root, unless its first object has children: then it is root first (as ``pull``
    and the download route write it) and that root is sent last. ``lines`` keeps each dump
    object's line number (4 bytes an object) to name a bad one by; ``elements`` each array
    object's place in the array. A UTF-8 byte order mark before the JSON is skipped."""

    def __init__(self, path: Path, fh: Any, progress: Bars | None = None) -> None:
        self.path = path
        self.lines: array[int] | None = None
        self.elements: list[int] | None = None
        bar = progress or _no_bars
        if fh.peek(3)[:3] == codecs.BOM_UTF8:  # Windows editors and PowerShell write one
            fh.read(3)
        head = fh.peek(1 << 16).lstrip()
        if head[:1] == b"[":
            with bar(f"read {path.name}", None) as tick:
                self._read_array(fh.read(), tick)
            return
        if head and head[0] in _SCALAR_STARTS and b"\t" not in head.split(b"\n", 1)[0]:
            raise objstore.InvalidBatch(
                f"{path} is neither a JSON document (an object), a JSON array of objects, "
                f"nor an id<TAB>json dump: it starts {head[:40]!r}"
            )
        if head[:1] == b"{":
            with bar(f"read {path.name}", None, False):
                try:
                    doc = msgspec.json.decode(fh.read())
                except msgspec.DecodeError as exc:
                    raise objstore.InvalidJSON(f"{path} is not valid JSON: {exc}") from None
                except RecursionError:
                    deep = f"{path}: the document nests too deeply to read"
                    raise errors.NestingTooDeep(deep) from None
            try:
                with bar("decompose", None) as tick:
                    _, decomposed = graph.decompose(doc, progress=tick)
            except errors.InvalidObject as exc:
                raise exc.located(str(path)) from None
            self.objects: Iterable[tuple[str, bytes]] = decomposed
            self.count: int | None = len(decomposed)
            return
        self.lines = array("I")
        numbered = graphgen.dump_lines(fh, str(path))
        first = next(numbered, None)
        if first is None:
            raise objstore.InvalidBatch(f"{path}: empty dump")
        if _has_children(first[2]):
            ordered = itertools.chain(numbered, [first])
        else:
            ordered = itertools.chain([first], numbered)
        self.objects = self._objects(ordered)
        self.count = _count_lines(path)

    def _read_array(self, data: bytes, tick: Any) -> None:
        read = graphgen.read_array(data, str(self.path), tick)
        if read.outside:  # all still go up; the root printed may not be the one meant
            print(
                f"note: {read.outside:,} of the {len(read.objects):,} objects in {self.path} are"
                " not in its first object's __closure: it may not be one graph with its root "
                "first",
                file=sys.stderr,
            )
        self.elements = read.places
        self.objects = read.objects
        self.count = len(read.objects)

    def _objects(self, numbered: Iterator[tuple[int, str, bytes]]) -> Iterator[tuple[str, bytes]]:
        assert self.lines is not None
        for number, object_id, data in numbered:
            self.lines.append(number)
            yield object_id, data

    def where(self, index: int) -> str:
        """The place of the ``index``-th object: its line, or its place in the document."""
        if self.elements is not None:
            return f"{self.path}: element {self.elements[index]}"
        if self.lines is None:
            return f"{self.path}: object {index}"
        return f"{self.path} line {self.lines[index]}"


def cmd_push(args: argparse.Namespace) -> int:
    """Upload a JSON document or a dump, skipping what the server has."""
    from objstore.client import send

    stdin = args.file == "-"
    path = Path("<stdin>" if stdin else args.file)
    with contextlib.nullcontext(sys.stdin.buffer) if stdin else path.open("rb") as fh:
        source = _Source(path, fh, _progress)
        with (
            _remote(args) as remote,
            objstore.open(_cache_dir(args)) as cache,
            _progress("push", source.count) as tick,
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
    _writable(path, "cannot write")
    target = Path(path)
    part = target.parent / f".{target.name}.{os.getpid()}.part"  # the umask's mode, as open's
    out = open(part, "xb")  # noqa: SIM115
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
        with _progress("pull", None) as tick:
            result = receive(args.root_id, remote, cache, progress=tick)
        with _progress("rebuild" if as_json else "write", result.total) as tick:
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
    path = Path(local) / "objects" if _is_server_dir(Path(local)) else Path(local)
    if not src_remote and not _holds_store(path):
        raise errors.StoreNotFound(f"no store in {local} (no {local}/data.mdb) to copy from")
    project = args.local_project or args.project
    with (
        _remote(args, url) as remote,
        objstore.open(path) as store,
        _progress("cp", None) as tick,
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
                where = f"the local store {local} (--local-project names another)"
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
        with _progress("receive", None) as tick:
            got = receive(args.root, src, cache, progress=tick)
        print(f"from {src.url}: {got.summary()}", file=sys.stderr)
        with _progress("send", None) as tick:
            sent = send(args.root, dst, cache, cache_project=src.project, progress=tick)
        print(f"to {dst.url}: {sent.summary()}", file=sys.stderr)
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    """Benchmark servers and the engine side by side, or compare two result files."""
    import json as _json

    from rich.console import Console

    from objstore import bench

    console = Console(stderr=True)
    if args.words:
        if args.words[0] != "compare" or len(args.words) != 3:
            print("objstore: use 'objstore bench compare OLD.json NEW.json'", file=sys.stderr)
            return 2
        old, new = (bench.report.load(Path(p)) for p in args.words[1:])
        rows, regressions = bench.compare(old, new, args.threshold)
        if not rows:
            raise errors.InvalidResults(
                f"{args.words[1]} and {args.words[2]} measure no target, client, workload and "
                "concurrency in common: nothing to compare"
            )
        bench.report.print_compare(rows)
        if regressions:
            print(f"{len(regressions)} regression(s) beyond {args.threshold:.0%}", file=sys.stderr)
            return 1
        print(f"no regression beyond {args.threshold:.0%}", file=sys.stderr)
        return 0
    specs = [bench.parse_target(t, allow_remote=args.allow_remote) for t in args.target or []]
    if args.spawn:
        specs.append(bench.TargetSpec(f"objstore-{args.spawn}w", "spawn", workers=args.spawn))
    if not specs:
        print("objstore: give at least one --target (or --spawn)", file=sys.stderr)
        return 2
    try:
        chosen = args.workloads.split(",") if args.workloads else bench.WORKLOADS
        workloads = bench.workloads_named(chosen)
    except bench.TargetError as exc:
        print(f"objstore: {exc}", file=sys.stderr)
        return 2
    _writable(args.out, "--out")
    _writable(args.chart, "--chart")
    if args.chart and importlib.util.find_spec("matplotlib") is None:  # not after the run
        print("objstore: --chart needs matplotlib: pip install 'objstore[bench]'", file=sys.stderr)
        return 2
    with console.status("objstore bench") as status:
        runner = bench.Runner(
            specs,
            bench.GraphSource.parse(args.graph, seed=args.seed),
            workloads=workloads,
            clients=args.clients.split(","),
            concurrency=args.concurrency,
            repeat=args.repeat,
            max_seconds=args.max_seconds,
            keep=args.keep,
            progress=lambda label: status.update(f"objstore bench: {label}"),
        )
        doc = runner.run()
    shape = doc["graph"]
    print(
        f"graph: {shape['objects']:,} objects, {shape['bytes'] / 1e6:,.1f} MB, depth "
        f"{shape['depth']}, object size p50 {shape['size_p50']:,} B, p90 {shape['size_p90']:,}"
        f" B, p99 {shape['size_p99']:,} B, max {shape['size_max']:,} B",
        file=sys.stderr,
    )
    bench.print_table(doc)
    for note in doc["notes"]:
        print(note, file=sys.stderr)
    if args.out:
        Path(args.out).write_text(_json.dumps(doc, indent=1))
    if args.chart:
        bench.chart(doc, Path(args.chart))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="objstore", description="objstore object store")
    parser.add_argument("--version", action="version", version=objstore.__version__)
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, fn: Handler, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--data", default=DEFAULT_DATA, help="store directory (env OBJSTORE_DATA)")
        p.set_defaults(func=fn)
        return p

    demo = add("demo", cmd_demo, "ingest a generated model and print stats")
    demo.add_argument(
        "--objects", type=int, default=20_000, help="about this many objects (default 20000)"
    )
    demo.add_argument("--seed", type=int, default=0, help="generator seed: same seed, same model")
    demo.add_argument("--project", default="demo", help="project to ingest into (default demo)")
    add("stats", cmd_stats, "print store statistics")
    verify = add("verify", cmd_verify, "re-check every checksum and reference")
    verify.add_argument(
        "--repair",
        action="store_true",
        help="first set every reference count from the objects that use it",
    )
    compact = add(
        "compact",
        cmd_compact,
        "give back the space deleted projects left among objects other projects still use",
    )
    compact.add_argument(
        "--min-dead",
        type=float,
        default=0.25,
        help="rewrite packs at least this share dead (default 0.25)",
    )
    compact.add_argument(
        "--dry-run", action="store_true", help="say what it would do, and change nothing"
    )

    serve = add("serve", cmd_serve, "serve Speckle's object REST routes over HTTP")
    serve.add_argument(
        "--host",
        default=os.environ.get("OBJSTORE_HOST", "127.0.0.1"),
        help="address to bind (OBJSTORE_HOST; default 127.0.0.1)",
    )
    # string defaults go through the type too: a bad OBJSTORE_PORT is named, not a traceback
    serve.add_argument(
        "--port",
        type=_port,
        default=os.environ.get("OBJSTORE_PORT", "8000"),
        help="port to listen on (OBJSTORE_PORT; default 8000)",
    )
    serve.add_argument(
        "--workers",
        type=_positive,
        default=os.environ.get("OBJSTORE_WORKERS", "1"),
        help="worker processes (OBJSTORE_WORKERS; default 1)",
    )
    serve.add_argument(
        "--log-level",
        default="info",
        choices=("critical", "error", "warning", "info", "debug", "trace"),
        help="uvicorn's log level (default info)",
    )

    project = add("project", cmd_project, "create, list, delete projects or set members")
    project.add_argument("action", choices=["create", "list", "delete", "member"])
    project.add_argument("name", nargs="?", help="the project (all but list)")
    project.add_argument("user", nargs="?", help="member: the user")
    project.add_argument("role", nargs="?", help="member: owner|contributor|reviewer|none")
    project.add_argument("--owner", help="create: the owning user")
    project.add_argument("--member", action="append", help="create: USER=ROLE (repeatable)")
    project.add_argument("--public", action="store_true", help="create: anyone may read")

    token = add("token", cmd_token, "create, list or revoke API tokens")
    token.add_argument("action", choices=["create", "list", "revoke"])
    token.add_argument("token_id", nargs="?", help="revoke: the token (or its 10-char id)")
    token.add_argument("--user", default="admin", help="create: the token's user (default admin)")
    token.add_argument(
        "--scopes",
        default="streams:read,streams:write",
        help="create: comma separated (default streams:read,streams:write)",
    )
    token.add_argument("--projects", help="limit to these projects (comma separated)")
    token.add_argument("--expires", help="e.g. 30d, 12h, 3600")
    token.add_argument("--name", help="create: a label shown by list")
    token.add_argument(
        "--replace",
        action="store_true",
        help="create: revoke this user's tokens of the same --name first",
    )

    def remote_flags(p: argparse.ArgumentParser, url: bool = True) -> None:
        if url:
            p.add_argument("--url", required=True, help="server base URL")
        p.add_argument("--token", help="API token (env OBJSTORE_TOKEN)")
        p.add_argument("--project", required=True, help="the project on the server")
        p.add_argument(
            "--cache", help="local cache store (env OBJSTORE_CACHE; default: the user data dir)"
        )
        p.add_argument(
            "--compression",
            choices=("auto", "on", "off"),  # remote.COMPRESSIONS; the CLI imports httpx lazily
            default="auto",
            help="compress request and response bodies (auto: unless the server is on loopback)",
        )

    push = sub.add_parser("push", help="upload a JSON document, array of objects or dump")
    push.add_argument(
        "file",
        help="a JSON document, a JSON array of objects with the root first (the download "
        "route's application/json), or an id<TAB>json dump (root first, as pull writes it, "
        "or last); - for stdin",
    )
    remote_flags(push)
    push.set_defaults(func=cmd_push)
    pull = sub.add_parser("pull", help="download a graph through the local cache")
    pull.add_argument("root_id", help="the graph's root object id")
    pull.add_argument("-o", "--output", help="file to write (default, or -: stdout)")
    pull.add_argument(
        "--format",
        choices=["dump", "json"],
        help="id<TAB>json lines, or the recomposed document (default: json when OUTPUT ends "
        "in .json, else dump)",
    )
    remote_flags(pull)
    pull.set_defaults(func=cmd_pull)
    cp = sub.add_parser(
        "cp", help="copy a graph between a local store dir and a server URL, or two servers"
    )
    cp.add_argument("src", help="a local store directory or a server URL")
    cp.add_argument("dst", help="a server URL, or a local store directory if src is a URL")
    cp.add_argument("--root", required=True, help="root object id")
    cp.add_argument(
        "--local-project", help="the graph's project in the local store (default: --project)"
    )
    cp.add_argument("--to-project", help="between servers: the project on dst (default: --project)")
    cp.add_argument("--to-token", help="between servers: the token for dst (default: --token)")
    remote_flags(cp, url=False)
    cp.set_defaults(func=cmd_cp)

    bench = sub.add_parser(
        "bench",
        help="benchmark object transport of servers and the engine, or compare two runs",
        description="objstore bench --target NAME=URL[,token=T,project=P] | NAME=lmdb:DIR | "
        "NAME=spawn[:WORKERS] ... ;  objstore bench compare OLD.json NEW.json",
    )
    bench.add_argument("words", nargs="*", help="'compare OLD.json NEW.json'")
    bench.add_argument(
        "--target",
        action="append",
        help="NAME=URL[,token=T,project=P], NAME=lmdb:DIR or NAME=spawn[:WORKERS]; repeatable",
    )
    bench.add_argument(
        "--spawn",
        type=_positive,
        nargs="?",
        const=1,
        metavar="WORKERS",
        help="also start a local objstore server with a temp store",
    )
    bench.add_argument(
        "--graph",
        default="small",
        help="small|medium|large (10k, 100k, 1M objects), a size (5000, 50k, 2M) or a dump",
    )
    bench.add_argument("--seed", type=int, default=0, help="generator seed (default 0)")
    bench.add_argument("--workloads", help=f"comma separated, of: {', '.join(BENCH_WORKLOADS)}")
    bench.add_argument(
        "--clients",
        default="objstore,specklepy",
        help="comma separated, of: objstore, specklepy (where installed); default both",
    )
    bench.add_argument("--concurrency", type=_positives, default=[4], help="e.g. 1,4,16")
    bench.add_argument(
        "--repeat", type=_positive, default=1, help="runs of each workload (the table: medians)"
    )
    bench.add_argument(
        "--max-seconds", type=_seconds, default=300.0, help="cap per workload (default 300)"
    )
    bench.add_argument("--out", help="write every figure as JSON here")
    bench.add_argument("--chart", help="write a PNG chart here (needs matplotlib)")
    bench.add_argument("--allow-remote", action="store_true", help="allow non-loopback target URLs")
    bench.add_argument("--keep", action="store_true", help="keep spawned stores and projects")
    bench.add_argument(
        "--threshold",
        type=float,
        default=0.2,
        help="compare: flag changes worse than this fraction",
    )
    bench.set_defaults(func=cmd_bench)
    return parser


_COMMAND_EXTRA = {
    "serve": "server",
    "push": "client",
    "pull": "client",
    "cp": "client",
    "bench": "bench",
}
_MODULE_EXTRA = {
    "httpx": "client",
    "rich": "client",
    "platformdirs": "client",
    "isal": "client",
    "starlette": "server",
    "uvicorn": "server",
    "multipart": "server",
    "python_multipart": "server",
    "matplotlib": "bench",
    "specklepy": "specklepy",
}


def _missing_extra(command: str, exc: ModuleNotFoundError) -> str | None:
    """The install line for the optional extra a command lacks, or None if that is not it."""
    module = (exc.name or "").split(".")[0]
    if module not in _MODULE_EXTRA:
        return None
    extra = _COMMAND_EXTRA.get(command) or _MODULE_EXTRA[module]
    return (
        f"objstore {command} needs {module}, from the {extra!r} extra: "
        f"pip install 'objstore[{extra}]'"
    )


_RESUMABLE = {"push", "pull", "cp"}  # commands a rerun continues (see main's Ctrl+C)


def _refuse_unplaced_words(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Exit with a usage error for a word an admin action has no place for, which argparse
    would otherwise drop without a word (`token create alice` made a token for admin)."""
    if args.command == "token" and args.action != "revoke" and args.token_id:
        hint = ""
        if args.action == "create":
            hint = f" (a token for {args.token_id}: --user {args.token_id})"
        parser.error(f"token {args.action} takes no {args.token_id!r}{hint}")
    if args.command == "project" and args.action != "member":
        listed = args.name if args.action == "list" else None
        extra = [w for w in (listed, args.user, args.role) if w]
        if extra:
            hint = f" (the owner: --owner {args.user})" if args.action == "create" else ""
            parser.error(f"project {args.action} takes no {' '.join(map(repr, extra))}{hint}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "project" and args.action != "list" and not args.name:
        parser.error(f"project {args.action} needs a project name")
    if args.command == "project" and args.action == "member" and not (args.user and args.role):
        parser.error("project member NAME USER ROLE")
    if args.command == "token" and args.action == "revoke" and not args.token_id:
        parser.error("token revoke needs the token or its id")
    _refuse_unplaced_words(parser, args)
    try:
        code: int = args.func(args)
    except BrokenPipeError:  # output piped into head & co.: stop quietly, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except KeyboardInterrupt:  # Ctrl+C: requests in flight were let finish; no traceback
        again = " (run it again: it moves only what is still missing)"
        print(
            f"objstore: interrupted{again if args.command in _RESUMABLE else ''}", file=sys.stderr
        )
        return 130
    except ModuleNotFoundError as exc:
        hint = _missing_extra(args.command, exc)
        if hint is None:
            raise
        print(hint, file=sys.stderr)
        return 2
    except (objstore.ObjstoreError, ValueError, OSError) as exc:
        print(f"objstore: {exc}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
