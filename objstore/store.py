"""The public face of the engine: validate, then hand records to a backend."""

from __future__ import annotations

import os
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from types import TracebackType

from objstore import codec, errors
from objstore.engine.base import Backend, CompactReport, PutResult, Stats, VerifyReport
from objstore.limits import Limits

Batch = bytes | bytearray | memoryview | Iterable[bytes]


_VALID_PROJECTS: set[str] = set()


def check_project(project: object) -> str:
    """Return ``project`` if it is a valid project name, else raise InvalidProject."""
    if type(project) is str and project in _VALID_PROJECTS:
        return project
    problem = codec.check_id(project)
    if problem:
        raise errors.InvalidProject("project " + problem.removeprefix("id "))
    assert isinstance(project, str)
    if len(_VALID_PROJECTS) < 10_000:
        _VALID_PROJECTS.add(project)
    return project


class ChildrenStream(Iterator[tuple[str, bytes]]):
    """Root first, then each stored descendant once; ``found`` counts the descendants read so
    far and, once the stream is exhausted, ``missing`` the closure ids not stored."""

    def __init__(
        self, backend: Backend, project: str, root: tuple[str, bytes], chunks: Iterator[list[str]]
    ) -> None:
        self._backend = backend
        self._project = project
        self.root_id = root[0]
        self.found = 0
        self.missing = 0
        self._iter = self._run(root, chunks)

    def _run(
        self, root: tuple[str, bytes], chunks: Iterator[list[str]]
    ) -> Generator[tuple[str, bytes]]:
        yield root
        asked = 0  # ids handed to the backend; it may split a chunk into several lists

        def requested() -> Iterator[list[str]]:
            nonlocal asked
            for chunk in chunks:
                if self.root_id in chunk:
                    chunk = [i for i in chunk if i != self.root_id]
                asked += len(chunk)
                yield chunk

        reader = self._backend.read_chunks(self._project, requested())
        try:
            for pairs in reader:
                self.found += len(pairs)
                yield from pairs
            self.missing = asked - self.found
        finally:
            if isinstance(reader, Generator):
                reader.close()

    def __iter__(self) -> Iterator[tuple[str, bytes]]:
        return self._iter  # a for loop runs the generator itself, no method call per object

    def __next__(self) -> tuple[str, bytes]:
        return next(self._iter)

    def close(self) -> None:
        """Stop early; no further store reads happen."""
        self._iter.close()


class Store:
    """A content-addressed, deduplicated object store of JSON objects grouped in projects."""

    def __init__(
        self,
        backend: Backend,
        limits: Limits | None = None,
        *,
        release: Callable[[], None] | None = None,
    ) -> None:
        """``release``: what :meth:`close` calls instead of closing ``backend`` (a backend
        shared with other stores, see :mod:`objstore.engine.sharing`)."""
        self.backend = backend
        self.limits = limits or Limits.from_env()
        self._release = release

    def put(self, project: str, batch: Batch) -> PutResult:
        """Store a batch atomically: all objects, or on any invalid object none (and raise)."""
        check_project(project)
        records = codec.prepare(batch, self.limits)
        return self.backend.write(project, records)

    def put_many(self, project: str, batches: Iterable[Batch]) -> PutResult:
        """Store batches in order, each atomically as :meth:`put` would; the next batch is
        checked and compressed while the last one commits. Returns the totals.

        On an invalid batch, every batch before it is stored and its error is raised, its
        message placing the object as "batch N object M".
        """
        received = stored = duplicates = conflicts = new_blobs = bytes_received = 0
        for result in self.iter_put(project, batches):
            received += result.received
            stored += result.stored
            duplicates += result.duplicates
            conflicts += result.conflicts
            new_blobs += result.new_blobs
            bytes_received += result.bytes_received
        return PutResult(received, stored, duplicates, conflicts, new_blobs, bytes_received)

    def iter_put(self, project: str, batches: Iterable[Batch]) -> Iterator[PutResult]:
        """:meth:`put_many`, yielding each batch's result once it is stored (for progress)."""
        if isinstance(batches, str | bytes | bytearray | memoryview):
            raise errors.InvalidBatch(
                f"batches must be an iterable of batches, got {type(batches).__name__} (one "
                "batch: put it)"
            )
        limits = self.limits
        return self.iter_put_records(
            project, (codec.prepare_numbered(b, limits, n) for n, b in enumerate(batches))
        )

    def iter_put_records(
        self, project: str, batches: Iterable[Sequence[codec.Record]]
    ) -> Iterator[PutResult]:
        """:meth:`iter_put` for batches already validated, by :func:`codec.prepare` or
        :func:`codec.prepare_pairs` against this store's limits: for a caller that checks
        them its own way (``send`` places an error in its input, not in a batch)."""
        check_project(project)
        return self.backend.write_many(project, batches)

    def put_arrays(
        self, project: str, arrays: Iterable[bytes | bytearray | memoryview]
    ) -> PutResult:
        """Store several JSON arrays (e.g. the parts of one upload) as one atomic batch."""
        check_project(project)
        records = codec.prepare_arrays(arrays, self.limits)
        return self.backend.write(project, records)

    def has(self, project: str, ids: Iterable[str]) -> dict[str, bool]:
        """{id: whether the project holds it} for every requested id."""
        codec.refuse_one_id(ids)  # (each id's type: by the backend, off the per-id path)
        ids = list(ids)
        check_project(project)
        return dict(zip(ids, self.backend.has(project, ids), strict=True))

    def get(self, project: str, object_id: str) -> bytes | None:
        """The object's bytes exactly as sent, or None when the project does not hold it."""
        check_project(project)
        return self.backend.get(project, object_id)  # (which names an id not a str)

    def get_many(self, project: str, ids: Iterable[str]) -> Iterator[tuple[str, bytes]]:
        """(id, bytes) for each id the project holds, in request order; absent ids left out."""
        check_project(project)
        codec.refuse_one_id(ids)
        return self.backend.get_many(project, ids)

    def iter_with_children(self, project: str, object_id: str) -> ChildrenStream:
        """The object then every descendant in its ``__closure`` that the project holds, in the
        order the closure lists them.

        Raises ObjectNotFound when the root itself is absent. Reads the closure table, never
        the root's JSON.
        """
        check_project(project)
        root = self.get(project, object_id)
        chunks = self.backend.children_ids(project, object_id)
        if root is None or chunks is None:
            raise errors.ObjectNotFound(project, object_id)
        return ChildrenStream(self.backend, project, (object_id, root), chunks)

    def closure(self, project: str, object_id: str) -> dict[str, int]:
        """The stored closure of an object: {descendant id: minimum depth}."""
        check_project(project)
        closure = self.backend.closure(project, codec.one_id(object_id))
        if closure is None:
            raise errors.ObjectNotFound(project, object_id)
        return closure

    def projects(self) -> list[str]:
        return self.backend.projects()

    def count(self, project: str) -> int:
        check_project(project)
        return self.backend.count(project)

    def delete_project(self, project: str) -> int:
        """Remove a project; bytes still used by other projects stay. Returns objects removed."""
        check_project(project)
        return self.backend.delete_project(project)

    def compact(self, min_dead: float = 0.25, *, dry_run: bool = False) -> CompactReport:
        """Give back space that deleted projects left among objects other projects still use:
        every pack at least ``min_dead`` dead is rewritten. Writers wait while it runs.
        ``dry_run``: report what it would do now, and change nothing."""
        if not 0 < min_dead <= 1:
            raise ValueError(f"min_dead must be in (0, 1], got {min_dead}")
        return self.backend.compact(min_dead, dry_run=dry_run)

    def stats(self) -> Stats:
        return self.backend.stats()

    def verify(self, progress: Callable[[int], None] | None = None) -> VerifyReport:
        """Every problem found, as a report (see Backend.verify); ``progress`` is called with
        how many more byte strings were checked as it goes, ``stats().blobs`` in all."""
        return self.backend.verify(progress)

    def recount(self) -> int:
        """Repair the reference counts :meth:`verify` reports wrong (see Backend.recount)."""
        return self.backend.recount()

    def repair_rows(self) -> int:
        """Repair the closure and object rows :meth:`verify` reports disagreeing with their
        objects' bytes (see Backend.repair_rows); :meth:`recount` after it sets the counts."""
        return self.backend.repair_rows()

    def close(self) -> None:
        """Close the store; its backend closes once no other store opened on it is open."""
        if self._release is not None:
            self._release()
        else:
            self.backend.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def open(
    path: str | os.PathLike[str],
    *,
    limits: Limits | None = None,
    map_size: int | None = None,
    compression_level: int = 1,
    dictionary_threshold: int = 4096,
    readonly: bool = False,
    readahead: bool = True,
    writemap: bool | None = None,
) -> Store:
    """Open (creating if needed) an LMDB-backed store in directory ``path``.

    ``readahead`` lets the OS read neighbouring pages on a page fault: reads from a store
    that is not yet in the page cache run several times faster with it (packs hold objects
    in arrival order). Turn it off only for a store much larger than RAM read at random.
    ``writemap`` lets writes go straight into LMDB's memory map (faster commits; the data
    file then shows the whole map size, as a sparse file). None means on for Linux, whose
    filesystems keep the unused part a hole, and off elsewhere. Every process that writes one
    store must use the same setting.
    """
    from objstore.engine import sharing
    from objstore.engine.lmdb import WRITEMAP_DEFAULT, LMDBBackend, LMDBOptions

    options = LMDBOptions(
        compression_level=compression_level,
        dictionary_threshold=dictionary_threshold,
        readonly=readonly,
        readahead=readahead,
        writemap=WRITEMAP_DEFAULT if writemap is None else writemap,
    )
    backend, release = sharing.acquire(
        path, options, lambda: LMDBBackend(path, map_size=map_size, **options)
    )
    return Store(backend, limits, release=release)


def open_memory(limits: Limits | None = None) -> Store:
    """A store held in memory only: for tests and throwaway work."""
    from objstore.engine.memory import MemoryBackend

    return Store(MemoryBackend(), limits)


__all__ = ["Batch", "ChildrenStream", "Store", "check_project", "open", "open_memory"]
