"""What a storage backend must do, and the records it returns.

A backend stores validated :class:`~objstore.codec.Record` batches for named projects with
Speckle's semantics: the first write of an id in a project wins, identical bytes are kept once
across projects, each batch is atomic, and closures are kept per stored byte string so that
``children_ids`` never parses an object at read time. Every backend runs the same test suite
(``tests/engine``); :mod:`objstore.engine.memory` is the plain reference model.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from objstore.codec import Record


@dataclass(frozen=True, slots=True)
class PutResult:
    """What one batch did: every received object is exactly one of stored/duplicate/conflict."""

    received: int
    stored: int
    duplicates: int
    conflicts: int
    new_blobs: int
    bytes_received: int


@dataclass(frozen=True, slots=True)
class Stats:
    """Store-wide counts. ``raw_bytes``/``stored_bytes`` are over unique byte strings."""

    projects: int
    objects: int
    blobs: int
    closures: int
    raw_bytes: int
    stored_bytes: int
    dictionaries: int
    file_bytes: int

    @property
    def ratio(self) -> float:
        """Stored size over raw JSON size of the unique objects (lower is better)."""
        return self.stored_bytes / self.raw_bytes if self.raw_bytes else 1.0


@dataclass(slots=True)
class VerifyReport:
    """Result of re-checking every stored checksum and reference."""

    blobs_checked: int = 0
    objects_checked: int = 0
    problems: list[str] = field(default_factory=list)
    miscounted: int = 0  # byte strings whose reference count is wrong: recount() repairs them
    # closure rows, and object rows under another id, that disagree with the objects' bytes:
    # repair_rows() rewrites them
    disagreeing: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass(frozen=True, slots=True)
class CompactReport:
    """What :meth:`Backend.compact` did: sparse packs rewritten into fewer, and the bytes freed."""

    packs_rewritten: int = 0
    packs_written: int = 0
    frames_moved: int = 0
    bytes_freed: int = 0


class Backend(abc.ABC):
    """Storage behind :class:`objstore.Store`. Thread-safe; ids and projects already validated."""

    @abc.abstractmethod
    def write(self, project: str, records: Sequence[Record]) -> PutResult:
        """Store a batch atomically: all of it becomes visible at once, or none of it."""

    def write_many(self, project: str, batches: Iterable[Sequence[Record]]) -> Iterator[PutResult]:
        """:meth:`write` of each batch in order, yielding each result once the batch is stored.
        A backend may prepare the next batch while it stores one; stopping early still lets
        the batch being stored finish."""
        for records in batches:
            yield self.write(project, records)

    @abc.abstractmethod
    def has(self, project: str, ids: Sequence[str]) -> list[bool]:
        """For each id, whether the project holds it (same order)."""

    @abc.abstractmethod
    def get_many(self, project: str, ids: Iterable[str]) -> Iterator[tuple[str, bytes]]:
        """Yield (id, bytes) for the ids the project holds, in request order; checksums verified.

        Raises :class:`~objstore.errors.CorruptObject` rather than return bad bytes.
        """

    def get(self, project: str, object_id: str) -> bytes | None:
        """One object's checked bytes, or None: :meth:`get_many` of one id, minus its setup."""
        for _, data in self.get_many(project, [object_id]):
            return data
        return None

    def read_chunk(self, project: str, ids: list[str]) -> list[tuple[str, bytes]]:
        """:meth:`get_many` of a bounded list of ids, as a list: one call per chunk for hot
        loops (children streams) instead of one generator step per object."""
        return list(self.get_many(project, ids))

    def read_chunks(
        self, project: str, chunks: Iterable[list[str]]
    ) -> Iterator[list[tuple[str, bytes]]]:
        """The pairs of each chunk in turn, in order, as lists. A backend may read ahead, and
        may split a chunk of large objects into several lists to bound the memory it holds;
        closing the iterator early releases what it holds."""
        for ids in chunks:
            yield self.read_chunk(project, ids)

    @abc.abstractmethod
    def children_ids(self, project: str, object_id: str) -> Iterator[list[str]] | None:
        """The object's ``__closure`` ids in chunks, in the order the object lists them (clients
        list them as they send them, so reads follow storage order); None if it is absent."""

    @abc.abstractmethod
    def closure(self, project: str, object_id: str) -> dict[str, int] | None:
        """The object's closure {descendant id: min depth}; None if the object is absent."""

    @abc.abstractmethod
    def projects(self) -> list[str]:
        """Names of projects holding at least one object, sorted."""

    @abc.abstractmethod
    def count(self, project: str) -> int:
        """How many objects the project holds."""

    @abc.abstractmethod
    def delete_project(self, project: str) -> int:
        """Drop a project and every byte string no other project uses; return objects dropped."""

    def compact(self, min_dead: float = 0.25, *, dry_run: bool = False) -> CompactReport:
        """Give back the space of deleted objects that still sits among live ones (with
        ``dry_run``, only report what that would do); a backend that frees each object on its
        own (the memory one) has nothing to do."""
        return CompactReport()

    @abc.abstractmethod
    def stats(self) -> Stats:
        """Store-wide counts."""

    @abc.abstractmethod
    def verify(self, progress: Callable[[int], None] | None = None) -> VerifyReport:
        """Re-check every checksum and every reference; report, never raise, on damage.
        ``progress`` is called with how many more byte strings were checked, as it goes."""

    def recount(self) -> int:
        """Set every byte string's reference count from the objects that use it, freeing
        unused ones; return how many were wrong. A backend that keeps no stored counts
        (the memory one) has none to repair."""
        return 0

    def repair_rows(self) -> int:
        """Rewrite the rows a backend derives from objects' bytes (closures, the ids objects
        are stored under) where they disagree with those bytes; return how many changed. A
        backend that derives no stored rows (the memory one) has none to repair."""
        return 0

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has run (backends with nothing to release are never)."""
        return False

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources; the backend is unusable afterwards."""
