"""send and receive object graphs between a local objstore cache and a remote server.

Invariant on both sides: a root is written only after all of its children, so "the root is
there" means "the whole graph is there" unless something was deleted. Interrupted transfers
resume by asking what is still missing and moving only that.
"""

from __future__ import annotations

import contextlib
import itertools
import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Sized
from dataclasses import dataclass
from operator import itemgetter
from typing import NamedTuple, TypeVar

import objstore
from objstore import codec, collector, errors, graphgen
from objstore.client.remote import Remote
from objstore.limits import Limits

WINDOW = 20_000  # objects diffed/uploaded per step: bounds memory on any graph size
WINDOW_BYTES = 64 * 1024 * 1024  # ... and at most this many bytes of them (or one object)
# Objects per cache write (one transaction each), as for uploads: a commit rewrites each
# B-tree page its random keys land on, so small ones get dearer as the cache grows. Five
# 100k receives into one cache: 10k/16 MB batches 30.1k -> 18.8k objects/s, 50k/32 MB
# batches 29.9k -> 27.2k.
CACHE_BATCH = 50_000
CACHE_BATCH_BYTES = 32 * 1024 * 1024
# The share of a root's children a cache must lack before a receive takes the whole children
# stream (objects it holds included) instead of getobjects for just those it lacks. Over
# loopback the two take about as long from 67% to 90% lacking (benchmarks/bench_receive_paths,
# 100k, three receives each: 67% 1.79-3.10 s vs 1.92-3.16, 80% 2.04-3.12 vs 1.98-3.00), and
# getobjects moves a third to a tenth fewer bytes, which over a network is what costs.
STREAM_SHARE = 0.9
_AFTER_TAB = itemgetter(2)
_T = TypeVar("_T")


def _conflicts_said(conflicts: int) -> str:
    if not conflicts:
        return ""
    return (
        f"; {conflicts:,} came under an id the cache already held with other bytes, which it "
        "kept (an id names one content: give a changed object a new id)"
    )


@dataclass(frozen=True, slots=True)
class SendResult:
    """``conflicts``: objects given under an id the cache held with other bytes (from an
    earlier send or receive, or earlier in the same input); the cache keeps what it held,
    as a server that has the id keeps its own."""

    root_id: str
    total: int
    uploaded: int
    skipped: int
    conflicts: int = 0

    def summary(self) -> str:
        return (
            f"{self.total:,} objects: {self.uploaded:,} uploaded, {self.skipped:,} already "
            f"on the server{_conflicts_said(self.conflicts)}"
        )


@dataclass(frozen=True, slots=True)
class ReceiveResult:
    """``conflicts``: objects the server sent under an id the cache held with other bytes,
    which the cache kept."""

    root_id: str
    total: int
    from_cache: int
    downloaded: int
    conflicts: int = 0

    def summary(self) -> str:
        return (
            f"{self.total:,} objects: {self.downloaded:,} downloaded, {self.from_cache:,} from "
            f"the cache{_conflicts_said(self.conflicts)}"
        )


def _admitting(cache: objstore.Store, remote: Remote) -> objstore.Store:
    """``cache`` as a store that takes every object the server takes: a view on the same
    backend with the server's object limit, when that is the larger, and a batch limit
    raised only as far as one such object needs. A cache refusing objects the server holds
    could never hold their graphs."""
    mine, theirs = cache.limits, remote.limits
    if theirs.max_object_bytes <= mine.max_object_bytes:
        return cache
    batch = max(mine.max_batch_bytes, theirs.max_object_bytes)
    return objstore.Store(cache.backend, Limits(theirs.max_object_bytes, batch))


def _cache_project(remote: Remote, cache_project: str | None) -> str:
    return cache_project or remote.project


def _ordered_from_cache(
    cache: objstore.Store, project: str, root_id: str
) -> tuple[int, Iterator[tuple[str, bytes]]]:
    """How many objects the graph has, and its root's descendants deepest-first (children
    before parents), then the root; a descendant the cache lacks raises ObjectNotFound before
    the root is reached. A root the cache lacks raises it at once."""
    root = cache.get(project, root_id)
    if root is None:
        raise errors.ObjectNotFound(project, root_id)
    closure = cache.closure(project, root_id)
    closure.pop(root_id, None)
    ordered = sorted(closure, key=lambda i: -closure[i])

    def objects() -> Iterator[tuple[str, bytes]]:
        found = 0
        for pair in cache.get_many(project, ordered):
            found += 1
            yield pair
        if found < len(ordered):  # never send a root without its whole graph
            lacking = [i for i, ok in cache.has(project, ordered).items() if not ok]
            where = f"the cache, which holds {root_id!r} without {len(lacking):,} of its closure"
            raise errors.ObjectNotFound(project, lacking[0], where)
        yield root_id, root

    return len(ordered) + 1, objects()


@collector.sparing_heap()  # (what the caller holds, often a model, is not rescanned)
def send(
    source: str | Iterable[tuple[str, bytes]],
    remote: Remote,
    cache: objstore.Store | None = None,
    *,
    cache_project: str | None = None,
    progress: object = None,
) -> SendResult:
    """Upload a graph, skipping what the server already has.

    ``source`` is a root id (read from ``cache``) or objects as (id, bytes), children before
    parents and root last (``graph.decompose`` order); those are also written to ``cache``.
    The root is uploaded last, after every other object has landed.

    An object given that is not one JSON object under the id it came with (IdMismatch), or
    that the cache refuses, fails the send with the InvalidObject placing it in the input
    (``index``, ``object_id``: the id it came with), and the root is not uploaded.

    ``progress``: an object whose ``advance(n)`` is called as objects are done, and whose
    ``total(n)``, if it has one, once their number is known (a root id's graph, a list).
    """
    if isinstance(source, bytes | bytearray | memoryview) or not isinstance(source, Iterable):
        raise errors.InvalidBatch(
            "send takes a root id or the graph's objects as (id, bytes) pairs "
            f"(graph.decompose makes them), got {type(source).__name__}"
        )
    project = _cache_project(remote, cache_project)
    tick = getattr(progress, "advance", None)
    counted = getattr(progress, "total", None)
    if isinstance(source, str):
        if cache is None:
            raise ValueError("sending by root id needs the cache that holds it")
        root_id = source
        count, objects = _ordered_from_cache(cache, project, root_id)
        if counted:
            counted(count)
    else:
        if counted and isinstance(source, Sized):
            counted(len(source))
        objects = iter(source)
        root_id = ""
    total = skipped = 0
    held: list[tuple[str, bytes]] = []  # the last object so far: the root, once input ends
    given = not isinstance(source, str)  # objects given, not read from the cache: checked
    checked = given and cache is None  # here before uploading; else by the cache, all, once
    writer = (
        _CacheWriter(_admitting(cache, remote), project) if given and cache is not None else None
    )

    def missing() -> Iterator[tuple[str, bytes]]:
        """Each window's objects the server lacks. The upload pulls this while the windows
        before it are still in flight, so one window's diff overlaps the last one's uploads."""
        nonlocal total, skipped
        for window in graphgen.groups(objects, WINDOW, WINDOW_BYTES):
            first = total + len(held)  # the window's place in the input
            if given:
                _check_types(window, first)
            if writer is not None:  # checked and stored on its thread while the window uploads
                writer.put(_Given(window, first))
            window = [*held, *window]  # now in place from ``total`` on (the cache's is kept)
            held[:] = [window.pop()]  # the last object (the root, at the end) waits for the rest
            have = remote.diff(i for i, _ in window)
            lacking = [n for n, (i, _) in enumerate(window) if not have[i]]
            todo = [window[n] for n in lacking]
            if checked:  # the objects about to be uploaded
                _check_given(todo, [total + n for n in lacking].__getitem__)
            total += len(window)
            skipped += len(window) - len(todo)
            if tick:
                tick(len(window) - len(todo))
            yield from todo

    try:
        with writer or contextlib.nullcontext():
            uploaded = remote.upload(missing(), on_sent=tick)
    except errors.RemoteRejected:  # the server refused what the cache did: say what it was
        refused = writer.refused if writer is not None else None
        if refused is not None:
            raise refused from None
        raise
    root_id = held[0][0] if held else root_id
    if held:
        if remote.diff([root_id])[root_id]:
            skipped += 1
        else:
            if checked:
                _check_given(held, [total].__getitem__)
            remote.upload(held)
            uploaded += 1
        total += 1
        if tick:
            tick(1)
    conflicts = writer.conflicts if writer is not None else 0
    return SendResult(root_id, total, uploaded, skipped, conflicts)


def _check_types(window: list[tuple[str, bytes]], first: int) -> None:
    """InvalidBatch for a given object that is not bytes (the checks that name every other
    fault run beside the upload, which would fail on it first)."""
    try:
        if all(type(data) is bytes for _, data in window):
            return
    except (TypeError, ValueError):  # not all pairs
        pass
    for number, pair in enumerate(window, first):
        graphgen.check_pair(pair, number)


@contextlib.contextmanager
def _placed(place: Callable[[int], int]) -> Iterator[None]:
    """An object ``send`` was given that fails its checks, placed in the whole input: ``place``
    maps its index in what was checked to that."""
    try:
        yield
    except errors.InvalidObject as exc:
        if exc.index is None:
            raise
        number = place(exc.index)
        raise exc.located(f"object {number}", index=number) from None


def _check_given(pairs: list[tuple[str, bytes]], place: Callable[[int], int]) -> None:
    """Check objects about to be uploaded from no cache: each one JSON object under its own
    id (the server checks the rest, sizes too, and names what it refuses by id)."""
    with _placed(place):
        codec.check_pairs(pairs)


def _checked(given: _Given, limits: Limits) -> Iterator[list[codec.Record]]:
    """The records of a window of objects ``send`` was given, validated in cache-sized batches."""
    cap = min(CACHE_BATCH_BYTES, limits.max_batch_bytes // 2)
    done = given.first
    for group in graphgen.groups(given.pairs, CACHE_BATCH, cap):
        with _placed(done.__add__):
            records = codec.prepare_pairs(group, limits)
        done += len(group)
        yield records


class _Given(NamedTuple):
    """A window of the objects ``send`` was given, for the cache to check and store;
    ``first``: its first one's place in the input."""

    pairs: list[tuple[str, bytes]]
    first: int


class _CacheWriter:
    """Writes batches to the cache in order on a second thread, so storing overlaps the
    network; the cache's ``iter_put`` in turn commits one batch while it checks the next.
    The first failure is raised by ``put`` or ``close``; batches after it are dropped."""

    def __init__(self, cache: objstore.Store, project: str, tick: object = None) -> None:
        self._cache = cache
        self._project = project
        self._tick = tick
        self._queue: queue.Queue[bytes | list[bytes] | _Given | None] = queue.Queue(maxsize=2)
        self._failure: list[BaseException] = []
        self.conflicts = 0  # objects under an id the cache held with other bytes
        self._ended = False  # the end marker was taken off the queue (on the writer thread)
        self._thread = threading.Thread(target=self._run, name="objstore-cache-writer", daemon=True)
        self._thread.start()

    def _batches(self) -> Iterator[bytes | list[bytes] | _Given]:
        while (batch := self._queue.get()) is not None:
            yield batch
        self._ended = True

    def _records(self) -> Iterator[list[codec.Record]]:
        limits = self._cache.limits
        for number, batch in enumerate(self._batches()):
            if isinstance(batch, _Given):
                yield from _checked(batch, limits)
            else:
                yield codec.prepare_numbered(batch, limits, number)

    def _run(self) -> None:
        try:
            for result in self._cache.iter_put_records(self._project, self._records()):
                self.conflicts += result.conflicts
                if self._tick is not None:  # new ones only: those it held were counted up front
                    self._tick(result.stored)  # type: ignore[operator]
        except BaseException as exc:
            self._failure.append(exc)
            # drop the rest, so put() never blocks on a full queue; a failure in the last
            # commit comes after the end marker, and waiting for another would hang close()
            if not self._ended:
                for _ in self._batches():
                    pass

    @property
    def refused(self) -> errors.InvalidObject | None:
        """The object the cache refused, when that is what stopped it."""
        failure = self._failure[0] if self._failure else None
        return failure if isinstance(failure, errors.InvalidObject) else None

    def _check(self) -> None:
        if self._failure:
            raise self._failure[0]

    def put(self, batch: bytes | list[bytes] | _Given) -> None:
        self._check()
        self._queue.put(batch)

    def put_objects(self, objects: Iterable[tuple[str, bytes]]) -> None:
        """Queue (id, bytes) pairs in cache-sized batches: lists of the objects' bytes, not
        JSON arrays, which would be joined here only to be split again by the cache."""
        for group in graphgen.groups(objects, CACHE_BATCH, _cache_cap(self._cache)):
            self.put([data for _, data in group])

    def put_blocks(self, blocks: Iterable[list[bytes]]) -> None:
        """:meth:`put_objects` for lists of objects' bytes (a stream's blocks), batched a
        block at a time: no Python step per object, which a receive's thread spends its GIL
        on while the cache's threads wait for it."""
        cap = _cache_cap(self._cache)
        batch: list[bytes] = []
        size = 0
        for datas in blocks:
            block_size = sum(map(len, datas))
            if batch and (len(batch) + len(datas) > CACHE_BATCH or size + block_size > cap):
                self.put(batch)
                batch, size = [], 0
            if block_size > cap or len(datas) > CACHE_BATCH:  # big objects: one at a time
                self.put_objects(zip(itertools.repeat(""), datas))
                continue
            batch += datas
            size += block_size
        if batch:
            self.put(batch)

    def close(self) -> None:
        """Wait for every queued batch to be stored; raise the first failure."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        self._check()

    def __enter__(self) -> _CacheWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.close()
        else:  # the body's error wins; still stop the thread
            self._queue.put(None)
            self._thread.join()


def _cache_cap(cache: objstore.Store) -> int:
    """Bytes of objects per cache write: CACHE_BATCH_BYTES, or half the cache's batch limit
    when that is smaller (well clear of it)."""
    return min(CACHE_BATCH_BYTES, cache.limits.max_batch_bytes // 2)


def _store_while_streaming(
    cache: objstore.Store,
    project: str,
    stream: Iterator[_T],
    tick: object,
    feed: Callable[[_CacheWriter, Iterable[_T]], None],
    conflicts: list[int],
) -> None:
    """Write streamed objects to the cache in batches (``feed``: the writer's method that
    takes them) while the download goes on, adding to ``conflicts`` how many came under an
    id the cache held with other bytes. A stream that breaks off (ConnectionFailed) has
    every object it delivered stored before the error is raised."""
    broken: list[errors.ConnectionFailed] = []

    def until_broken() -> Iterator[_T]:
        try:
            yield from stream
        except errors.ConnectionFailed as exc:  # end the last batch here; raised once stored
            broken.append(exc)

    writer = _CacheWriter(cache, project, tick)
    try:
        with writer:
            feed(writer, until_broken())
            if broken:
                raise broken[0]
    finally:  # the writer's thread has ended either way: its count is whole
        conflicts.append(writer.conflicts)


@contextlib.contextmanager
def _served_by(remote: Remote) -> Iterator[None]:
    """Objects the cache refuses while receiving are the server's fault, not the caller's:
    InvalidObject becomes InvalidRemoteObject, named by id, not by the cache's batch."""
    try:
        yield
    except errors.InvalidObject as exc:
        named = f"object {exc.object_id!r}" if exc.object_id is not None else "an object"
        raise errors.InvalidRemoteObject(
            f"{remote.url} sent {named}, which the cache refuses "
            f"({type(exc).__name__}: {exc.reason})",
            exc,
        ) from None


def _children_data(blocks: Iterable[list[bytes]], root_id: str) -> Iterator[list[bytes]]:
    """The JSON of every ``id\\tjson`` line but the root's, a list per block, cut in C."""
    root = root_id.encode() + b"\t"
    for lines in blocks:
        if any(map(bytes.startswith, lines, itertools.repeat(root))):
            lines = [line for line in lines if not line.startswith(root)]
        yield list(map(_AFTER_TAB, map(bytes.partition, lines, itertools.repeat(b"\t"))))


@collector.sparing_heap()
def receive(
    root_id: str,
    remote: Remote,
    cache: objstore.Store | None = None,
    *,
    cache_project: str | None = None,
    progress: object = None,
) -> ReceiveResult:
    """Make ``root_id`` and all its children present in ``cache``, downloading only what lacks.

    Served from the cache when the root and its whole closure are there (no object requests).
    Otherwise fetches the root, asks the cache which closure ids it lacks, and downloads those
    (getobjects in batches; the single object+children stream when nearly all are missing:
    STREAM_SHARE of them or more), writing them to the cache as they arrive; the root is
    written last. A children stream that fails is not started again: what it delivered is
    kept, and the rest is asked for by id.
    Objects of the closure the server does not have fail it with RemoteNotFound naming them;
    the rest stay cached and the root is not written. ``progress`` as for :func:`send`
    (``total`` once the root's closure is known).
    With no ``cache`` the objects go to a store in memory that is dropped on return: the call
    then only proves the whole graph can be downloaded. To keep them in memory, pass
    ``objstore.open_memory()``; to read them as they come, :meth:`Remote.download`.
    """
    if cache is None:
        cache = objstore.open_memory()
    project = _cache_project(remote, cache_project)
    tick = getattr(progress, "advance", None)
    counted = getattr(progress, "total", None)
    if cache.get(project, root_id) is not None:
        closure_ids = list(cache.closure(project, root_id))
        present = cache.has(project, closure_ids)
        if all(present.values()):
            if counted:
                counted(len(closure_ids) + 1)
            if tick:
                tick(len(closure_ids) + 1)
            return ReceiveResult(root_id, len(closure_ids) + 1, len(closure_ids) + 1, 0)
    root = remote.get(root_id)
    cache = _admitting(cache, remote)
    if root is None:
        raise errors.RemoteNotFound(
            f"object {root_id!r} not found in project {remote.project!r} on {remote.url}",
            status=404,
        )
    with _served_by(remote):
        record = codec.decode_record(root, 0, cache.limits)
        closure_ids = [i for i in (record.closure or {}) if i != root_id]
        if counted:
            counted(len(closure_ids) + 1)
        present = cache.has(project, closure_ids)
        missing = [i for i, ok in present.items() if not ok]
        from_cache = len(closure_ids) - len(missing)
        if tick:
            tick(from_cache)
        conflicts: list[int] = []  # one count per cache writer
        if missing and len(missing) >= STREAM_SHARE * len(closure_ids):
            blocks = _children_data(remote.download_lines(root_id), root_id)
            try:
                _store_while_streaming(
                    cache, project, blocks, tick, _CacheWriter.put_blocks, conflicts
                )
            except errors.ConnectionFailed:  # the stream broke off (after its own retries)
                lacking = [i for i, ok in cache.has(project, missing).items() if not ok]
                _store_while_streaming(
                    cache,
                    project,
                    remote.get_many(lacking),
                    tick,
                    _CacheWriter.put_objects,
                    conflicts,
                )
        elif missing:
            _store_while_streaming(
                cache,
                project,
                remote.get_many(missing),
                tick,
                _CacheWriter.put_objects,
                conflicts,
            )
        still = [i for i, ok in cache.has(project, missing).items() if not ok] if missing else []
        downloaded = len(missing) - len(still)
        if still:  # no root without its whole graph: what came is kept for the next receive
            more = f" and {len(still) - 3:,} more" if len(still) > 3 else ""
            raise errors.RemoteNotFound(
                f"{len(still):,} of the {len(closure_ids):,} objects under {root_id!r} are not "
                f"in project {remote.project!r} on {remote.url}: "
                f"{', '.join(map(repr, still[:3]))}{more}; the {downloaded:,} found are cached "
                "(the root is not), so a receive once the server has them fetches only those"
            )
        conflicts.append(cache.put(project, [root]).conflicts)
    if tick:
        tick(1)
    total = len(closure_ids) + 1
    return ReceiveResult(root_id, total, from_cache, downloaded + 1, sum(conflicts))
