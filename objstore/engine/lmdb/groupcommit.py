"""Group commit: writes queued while a commit syncs share the next transaction, and
``write_many`` keeps batches in flight."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent import futures
from functools import partial
from typing import Any

from objstore import errors
from objstore.codec import Record
from objstore.engine.base import PutResult
from objstore.engine.lmdb.writes import IdTaken, Staged, Writes

# Received bytes one group commit takes at most (a few uploads of 32 MB): a commit rewrites
# every B-tree page its random keys land on, so on a big store fewer, bigger commits write
# less. Five 100k sends into one 1-worker server, the fifth: 22k objects/s with 32 MB, 29-32k
# with 96 MB or more.
GROUP_BYTES = 128 * 1024 * 1024
_GROUP_AHEAD = 2  # batches a single writer stages for the one transaction after a commit
STAGER_WAIT = 0.05  # seconds a commit waits at most for writers still staging a batch
_ROW_ALLOWANCE = 256  # bytes of new B-tree pages a record's rows may add, on top of its data


def _set_event(event: threading.Event, _: object) -> None:
    event.set()


class _Queued:
    """A staged write waiting for the write lock, its frames tagged, and how it ended."""

    __slots__ = ("applied", "error", "frames", "result", "staged", "trained")

    def __init__(
        self,
        staged: Staged,
        frames: dict[bytes, bytes],
        trained: bytes | None,
        applied: threading.Event | None,
    ) -> None:
        self.staged = staged
        self.frames = frames
        self.trained = trained
        self.applied = applied
        self.result: PutResult | None = None
        self.error: Exception | None = None

    @property
    def done(self) -> bool:
        return self.result is not None or self.error is not None

    def outcome(self) -> PutResult:
        """The result, or the write's failure raised."""
        if self.error is not None:
            raise self.error
        assert self.result is not None, "a write asked for before it was done"
        return self.result


def _adds(group: Sequence[_Queued]) -> int:
    """Bytes that committing ``group`` may add to the file, at most: its new frames (raw
    bytes for those not compressed yet, as when a dictionary was due), closures and rows."""
    total = 0
    for q in group:
        staged = q.staged
        unframed = [d for d in staged.fresh if d not in q.frames]
        data = sum(map(len, q.frames.values())) + sum(len(staged.unique[d].data) for d in unframed)
        total += data + data // 16  # a pack's last page is a part one: 4 KB per 64 KB at most
        total += sum(map(len, staged.closures.values()))
        total += _ROW_ALLOWANCE * len(staged.records)
    return total


class GroupCommit(Writes):
    """Writes queued while a commit holds the write lock, committed together by the next
    writer to take it (:meth:`_lead`)."""

    def _start_queue(self) -> None:
        self._queue: list[_Queued] = []  # writes waiting for the write lock: see _lead
        self._queue_lock = threading.Lock()
        self._queued = threading.Condition(self._queue_lock)  # notified as writes queue
        self._staging = 0  # write() calls staging a batch, not queued yet

    def write(self, project: str, records: Sequence[Record]) -> PutResult:
        with self._queued:
            self._staging += 1
        try:
            mine = self._enqueue([self._stage(project, records)])
        finally:
            with self._queued:
                self._staging -= 1
                self._queued.notify_all()
        return self._lead(mine)[0]

    def write_many(self, project: str, batches: Iterable[Sequence[Record]]) -> Iterator[PutResult]:
        """Each batch's result once it is committed, with batches in flight: while one commit
        is written on a helper thread, the next batches' frames compress (zstd, outside the
        GIL) and, once its rows are in and only the disk is left, this thread checks the
        ones after. Python never runs on both sides at once: py-lmdb lets go of the GIL for
        every row it puts, and a thread fighting for it then waits each time.

        When commits wait on the disk (the last one took longer to sync than to write) and
        one is still syncing once the next batch is staged, one more is staged and the two
        share a transaction (at most _GROUP_AHEAD wait beside the one committing). On a big
        store a commit costs the B-tree pages its random keys land on, so fewer, bigger ones
        write less: five 100k receives into one cache, the fifth, 20.5-23.2k -> 24.3-25.4k
        objects/s.

        When ``batches`` raises, the batches it gave before are stored and yielded first."""
        committing: futures.Future[list[PutResult]] | None = None
        waiting: list[Staged] = []  # staged, for the transaction after the one committing
        failure: Exception | None = None
        batches = iter(batches)
        more = True
        first = True
        try:
            # Each step stages the next batch (none once the input ends), yields the results
            # of the commit in flight once it is done and starts one with the batches staged
            # in the steps before. The first batch starts once staged: with nothing ahead of
            # it to overlap, it would wait for the next batch to arrive (a network's worth,
            # when streamed).
            while more or waiting or committing is not None:
                following: Staged | None = None
                if more:
                    try:
                        following = self._stage(project, next(batches), self._helper())
                    except StopIteration:
                        more = False
                    except Exception as exc:  # a bad batch: the ones before it are still stored
                        failure, more = exc, False
                if committing is not None:
                    disk_bound = self._sync_seconds > self._apply_seconds
                    gather = disk_bound and more and len(waiting) < _GROUP_AHEAD
                    if not gather or committing.done():
                        done, committing = committing, None
                        yield from done.result()
                if committing is None and waiting:
                    committing, waiting = self._commit_aside(waiting), []
                elif committing is None and first and following is not None:
                    committing, following = self._commit_aside([following]), None
                first = False
                if following is not None:
                    waiting.append(following)
        finally:
            for staged in waiting:
                if staged.compressed is not None:
                    staged.compressed.cancel()
            if committing is not None:  # stopped early or failed: the commit in flight completes
                futures.wait([committing])
        if failure is not None:
            raise failure

    def _commit_aside(self, group: list[Staged]) -> futures.Future[list[PutResult]]:
        """Start committing staged batches on a helper thread; return once their rows are
        put."""
        applied = threading.Event()
        try:
            committing = self._helper().submit(self._commit_staged, group, applied)
        except RuntimeError:  # shut down by close() on another thread
            raise errors.StoreClosed("the store is closed") from None
        committing.add_done_callback(partial(_set_event, applied))
        applied.wait()
        return committing

    def _commit_staged(
        self, group: list[Staged], applied: threading.Event | None = None
    ) -> list[PutResult]:
        """Commit staged batches, in order, in as few transactions as the queue allows;
        ``applied`` is set once the last one's rows are in and only the disk is left."""
        return self._lead(self._enqueue(group, applied))

    def _enqueue(
        self, group: list[Staged], applied: threading.Event | None = None
    ) -> list[_Queued]:
        """Queue staged batches for the write lock, in order, once their frames are tagged;
        an empty one is done at once. ``applied`` goes to the last."""
        last = len(group) - 1
        mine = [
            self._queued_write(staged, applied if n == last else None)
            for n, staged in enumerate(group)
        ]
        for queued in mine:
            if not queued.staged.records:
                queued.result = PutResult(0, 0, 0, 0, 0, 0)
                if queued.applied is not None:
                    queued.applied.set()
        with self._queue_lock:
            self._queue.extend(queued for queued in mine if not queued.done)
        return mine

    def _lead(self, mine: list[_Queued]) -> list[PutResult]:
        """The results of queued writes ``mine``, committed under the write lock in groups
        with whatever else is queued until all of them are.

        Group commit: batches that other threads queue while a commit holds the write lock
        are written by the next one to get it, in one transaction with one disk sync. A
        sync costs milliseconds, so concurrent small writes (many clients uploading at
        once) would otherwise spend their time waiting on each other's syncs."""
        todo = [queued for queued in mine if not queued.done]
        ours = set(map(id, todo))
        with self._write_lock:
            while not all(queued.done for queued in todo):
                self._await_stagers()
                taken = self._next_group()
                try:
                    self._commit_group(taken)
                except BaseException:  # interrupted: ours still queued are taken back
                    with self._queue_lock:
                        self._queue[:] = [q for q in self._queue if id(q) not in ours]
                    raise
                finally:  # and the others' own threads commit theirs
                    others = [q for q in taken if id(q) not in ours and not q.done]
                    if others:
                        with self._queue_lock:
                            self._queue[:0] = others
        return [queued.outcome() for queued in mine]

    def _await_stagers(self) -> None:
        """Give writers still staging a batch (``write`` calls) the time of one sync, at
        most STAGER_WAIT, to queue it for this transaction: writers released together by
        one commit otherwise split into a lone one and the rest, a sync each."""
        limit = min(self._sync_seconds, STAGER_WAIT)
        deadline = time.monotonic() + limit
        with self._queued:
            while self._staging and (left := deadline - time.monotonic()) > 0:
                self._queued.wait(left)

    def _queued_write(self, staged: Staged, applied: threading.Event | None) -> _Queued:
        """A staged batch with its frames tagged (waiting for them to compress first)."""
        done = staged.compressed.result() if staged.compressed is not None else None
        if done is None:
            return _Queued(staged, {}, None, applied)
        datas = [staged.unique[digest].data for digest in staged.fresh]
        blobs = self._codec.tag_frames(datas, done.dict_id, done.frames)
        return _Queued(staged, dict(zip(staged.fresh, blobs, strict=True)), done.trained, applied)

    def _next_group(self) -> list[_Queued]:
        """The queued writes the next transaction takes: the oldest, and those after it up
        to GROUP_BYTES received in all (one transaction's pages stay bounded)."""
        with self._queue_lock:
            taken, total = 0, 0
            for queued in self._queue:
                total += queued.staged.bytes_received
                if taken and total > GROUP_BYTES:
                    break
                taken += 1
            group, self._queue[:taken] = self._queue[:taken], []
        return group

    def _commit_group(self, group: list[_Queued]) -> None:
        """Commit queued writes in one transaction; should that fail, each in its own, so a
        write that fails costs the others nothing and stores nothing itself."""
        if len(group) > 1:
            try:
                results = self._write_loop(
                    partial(self._apply_group, group), self._log_commit, _adds(group)
                )
            except Exception:  # rolled back: each alone below finds which one fails, and why
                pass
            else:
                for queued, result in zip(group, results[0], strict=True):
                    queued.result = result
                return
        for queued in group:
            try:
                queued.result = self._commit_alone(queued)
            except Exception as exc:
                queued.error = exc

    def _commit_alone(self, queued: _Queued) -> PutResult:
        done: tuple[list[PutResult], int, list[bytes]]
        try:
            apply = partial(self._apply_group, [queued])
            done = self._write_loop(apply, self._log_commit, _adds([queued]))
        except IdTaken:  # rolled back: decide record by record
            apply = partial(self._apply_group, [queued], optimistic=False)
            done = self._write_loop(apply, self._log_commit, _adds([queued]))
        return done[0][0]

    def _apply_group(
        self, group: list[_Queued], txn: Any, optimistic: bool = True
    ) -> tuple[list[PutResult], int, list[bytes]]:
        """Put each queued write's rows in ``txn``, in queue order; return their results,
        the transaction's id and the byte strings whose index rows it wrote."""
        results: list[PutResult] = []
        touched: set[bytes] = set()
        for queued in group:
            staged = queued.staged
            frames = queued.frames
            # frames made with a dictionary not stored yet hold only if the store has none
            # or that same one: another writer may have stored its own since (then they are
            # compressed again, with that one)
            if queued.trained is not None and not self._adopt_dictionary(txn, queued.trained):
                frames = {}
            # a batch's guess that its ids are free does not hold where one before it in
            # this transaction wrote the same objects
            guess = optimistic and staged.optimistic and touched.isdisjoint(staged.unique)
            result, wrote = self._apply(txn, staged, frames, guess, touched)
            touched.update(wrote)
            results.append(result)
            if queued.applied is not None:
                queued.applied.set()
        return results, txn.id(), list(touched)
