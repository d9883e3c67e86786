"""What one write puts: staging a batch outside the write lock, then its rows in a write
transaction (objects, index, packs, closures), the first dictionary, and the log of this
process's commits that lets a staged batch trust what it read."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Sequence
from concurrent import futures
from functools import partial
from operator import itemgetter
from typing import Any, NamedTuple

from objstore import errors
from objstore.codec import Record
from objstore.compression import (
    DICT_MAX_SAMPLE_BYTES,
    DICT_MAX_SAMPLES,
    dictionary_samples,
    train_dictionary,
)
from objstore.engine.base import PutResult
from objstore.engine.layout import (
    DICT_PREFIX,
    DIGEST_SIZE,
    FIRST_DICT,
    META_DICT_CURRENT,
    META_DICT_NEXT_TRY,
    META_NEXT_PACK,
    META_NEXT_PID,
    META_RAW,
    META_STORED,
    PLACE,
    REF,
    U32,
    U64,
    encode_closures,
    object_keys,
    pack_frames,
)
from objstore.engine.lmdb.transactions import Environment

_ID = itemgetter(0)  # Record fields, read in C loops
_DATA = itemgetter(1)
_DIGEST_OF = itemgetter(2)


class _Seen(NamedTuple):
    """What a write's read phase saw: its transaction id and the index rows of the batch's
    byte strings that were stored already."""

    txn_id: int
    index_rows: dict[bytes, bytes]


class _Frames(NamedTuple):
    """A staged write's compressed frames and the dictionary they use; ``trained`` holds that
    dictionary when the store has none yet, for the commit to store."""

    frames: Sequence[Any]
    dict_id: int
    trained: bytes | None = None


class Staged(NamedTuple):
    """A write prepared outside the write lock, ready for :meth:`GroupCommit._commit_staged`: the
    byte strings it found new (``fresh``) and their frames, compressed or compressing."""

    project: str
    records: Sequence[Record]
    unique: dict[bytes, Record]
    fresh: list[bytes]
    compressed: futures.Future[_Frames] | None
    closures: dict[bytes, bytes]
    bytes_received: int
    seen: _Seen
    optimistic: bool


class IdTaken(Exception):
    """An optimistic write found one of its ids stored: roll back and decide per record."""


class Writes(Environment):
    """What one write puts: :meth:`_stage` outside the write lock, :meth:`_apply` inside it."""

    def _start_writes(self, dictionary_threshold: int) -> None:
        # (transaction id, byte strings whose index rows it wrote) of this process's last writes
        self._commits: deque[tuple[int, list[bytes]]] = deque(maxlen=16)
        self._dict_threshold = dictionary_threshold
        self._candidate: bytes | None = None  # see _candidate_dictionary
        self._training = threading.Lock()

    def _stage(
        self,
        project: str,
        records: Sequence[Record],
        helper: futures.Executor | None = None,
    ) -> Staged:
        """A write's work outside the write lock: learn which byte strings are new and
        compress those (on ``helper`` when given)."""
        bytes_received = sum(map(len, map(_DATA, records)))
        # one record per byte string (duplicates carry the same bytes, so any one will do)
        unique = dict(zip(map(_DIGEST_OF, records), records, strict=True))
        if not records:
            return Staged(project, records, unique, [], None, {}, 0, _Seen(0, {}), False)
        with self._read() as txn:
            seen = _Seen(txn.id(), dict(txn.cursor(self._index).getmulti(sorted(unique))))
            dict_id = self._current_dict(txn)
            blob_count = txn.stat(self._index)["entries"]
            next_try = self._counter(txn, META_DICT_NEXT_TRY)
        fresh = [rec for d, rec in unique.items() if d not in seen.index_rows]
        datas = list(map(_DATA, fresh))
        due = not dict_id and blob_count + len(fresh) >= max(self._dict_threshold, next_try)
        # A dictionary that is due is trained here, outside the write lock, so the batch
        # compresses with it before its commit; without samples enough the commit trains.
        trained = self._candidate_dictionary(datas) if due else None
        compressed: futures.Future[_Frames] | None = None
        closures: dict[bytes, bytes] = {}
        if not due or trained is not None:
            if helper is None:
                compressed = futures.Future()
                compressed.set_result(self._compress_staged(datas, dict_id, trained, None))
            else:
                try:  # one zstd thread: the other core writes the batch before
                    compressed = helper.submit(self._compress_staged, datas, dict_id, trained, 1)
                except RuntimeError:  # shut down by close() on another thread
                    raise errors.StoreClosed("the store is closed") from None
            closures = encode_closures([r for r in fresh if r.closure], self._codec, dict_id)
        # None of this batch's byte strings is stored yet and none repeats: put the rows on the
        # guess that no id is taken either, checked by the put itself (a lookup fewer per id).
        optimistic = not seen.index_rows and len(unique) == len(records)
        fresh_digests = list(map(_DIGEST_OF, fresh))
        return Staged(
            project,
            records,
            unique,
            fresh_digests,
            compressed,
            closures,
            bytes_received,
            seen,
            optimistic,
        )

    def _candidate_dictionary(self, datas: list[bytes]) -> bytes | None:
        """The first dictionary for a store that has none: the one this process trained for
        a batch not committed yet, so batches staged together share it, or one trained from
        ``datas`` (zstd holds no GIL meanwhile). None without samples enough."""
        with self._training:  # writers staging at once (a server's uploads) train once
            if self._candidate is None:
                samples = dictionary_samples(datas)
                if len(samples) >= DICT_MAX_SAMPLES:
                    self._candidate = train_dictionary(samples)
            return self._candidate

    def _compress_staged(
        self, datas: list[bytes], dict_id: int, trained: bytes | None, threads: int | None
    ) -> _Frames:
        if trained is None:
            return _Frames(self._codec.compress_frames(datas, dict_id, threads), dict_id)
        frames = self._codec.compress_frames_with(trained, datas, threads)
        return _Frames(frames, FIRST_DICT, trained)

    def _log_commit(self, done: tuple[list[PutResult], int, list[bytes]]) -> None:
        """Remember which byte strings a commit changed, for :meth:`_touched_since`. Only a
        commit that put index rows is remembered: LMDB gives a transaction that changed
        nothing no id of its own, so the next commit, maybe another process's, takes the
        same one; trusting the log for it would skip rows that process changed."""
        if done[2]:
            self._commits.append(done[1:])

    def _touched_since(self, seen: int, now: int) -> set[bytes] | None:
        """The byte strings whose index rows this process's writes changed in the commits
        after transaction ``seen`` and before ``now``; None if any of those commits is not
        one it logged (another process's, a delete, a compaction)."""
        logged = dict(list(self._commits))
        between = range(seen + 1, now)
        if any(txn_id not in logged for txn_id in between):
            return None
        return set().union(*(logged[txn_id] for txn_id in between))

    def _apply(
        self,
        txn: Any,
        staged: Staged,
        frames: dict[bytes, bytes],
        optimistic: bool,
        earlier: set[bytes],
    ) -> tuple[PutResult, list[bytes]]:
        """Put a staged batch's rows in ``txn``; return the result and the byte strings whose
        index rows it wrote. ``earlier``: those that writes before it in ``txn`` wrote."""
        project, records, unique, seen = staged.project, staged.records, staged.unique, staged.seen
        closure_values = staged.closures
        pid = self._pid_of(txn, project)
        if pid is None:
            number = self._counter(txn, META_NEXT_PID) + 1
            txn.put(META_NEXT_PID, U64.pack(number), db=self._meta)
            pid = U32.pack(number)
            txn.put(project.encode(), pid, db=self._projects)
        keys = object_keys(pid, list(map(_ID, records)))
        new_rows: dict[bytes, bytes]
        added: dict[bytes, int]  # in arrival order, so packs keep children near parents
        key_set = set(keys)
        existing: dict[bytes, bytes] = {}
        if not optimistic:
            existing = dict(txn.cursor(self._objects).getmulti(sorted(key_set)))
        if not existing and len(key_set) == len(keys) == len(unique):
            # every id new and once, every byte string once: no per-record decisions
            new_rows = dict(zip(keys, unique, strict=True))
            added = dict.fromkeys(unique, 1)
            stored, duplicates, conflicts = len(keys), 0, 0
        else:
            new_rows, added = {}, {}
            stored = duplicates = conflicts = 0
            for rec, key in zip(records, keys, strict=True):
                prev = existing.get(key)
                prev_digest = prev[:DIGEST_SIZE] if prev is not None else new_rows.get(key)
                if prev_digest is None:
                    new_rows[key] = rec.digest
                    added[rec.digest] = added.get(rec.digest, 0) + 1
                    stored += 1
                elif prev_digest == rec.digest:
                    duplicates += 1
                else:
                    conflicts += 1
        index_cur = txn.cursor(self._index)
        added_sorted = sorted(added)
        touched = (
            set() if txn.id() == seen.txn_id + 1 else self._touched_since(seen.txn_id, txn.id())
        )
        if touched is not None:
            touched |= earlier
        if touched is None:  # commits not ours since the read phase: read the rows again
            index = dict(index_cur.getmulti(added_sorted))
        else:  # the read phase's rows hold, but for those our own commits since then changed
            index = {
                d: seen.index_rows[d]
                for d in added_sorted
                if d in seen.index_rows and d not in touched
            }
            if touched:
                index.update(index_cur.getmulti([d for d in added_sorted if d in touched]))
        new_digests = [d for d in added if d not in index]
        missing = [unique[d] for d in new_digests if d not in frames]
        if missing:  # a dictionary was due, or another writer deleted what we saw
            datas = list(map(_DATA, missing))
            dict_id = self._current_dict(txn)
            trained = None if dict_id else self._maybe_train(txn, missing)
            if trained is None:
                compressed = self._codec.compress_many(datas, dict_id)
            else:  # the codec loads it from the store once committed; closures go without
                found = self._codec.compress_frames_with(trained, datas)
                compressed = self._codec.tag_frames(datas, FIRST_DICT, found)
            frames = frames | dict(zip(map(_DIGEST_OF, missing), compressed, strict=True))
            closure_values = closure_values | encode_closures(
                [r for r in missing if r.closure], self._codec, dict_id
            )
        first_pack = self._counter(txn, META_NEXT_PACK) + 1
        packs, pack_counts, locations = pack_frames(new_digests, frames, first_pack)
        for digest, row in index.items():
            locations[digest] = row[REF.size :]
        at = partial(map, locations.__getitem__)  # each digest's location, in a C loop
        raw_added = sum(map(len, map(_DATA, map(unique.__getitem__, new_digests))))
        stored_added = sum(len(value) for _, value in packs)
        # keyed by pack and offset: new closures land at the end of the tree, not all over it
        closures = [
            (locations[d][:PLACE], closure_values[d]) for d in new_digests if d in closure_values
        ]
        counts = list(map(added.__getitem__, added_sorted))
        if index:
            counts = [
                n + REF.unpack_from(index[d])[0] if d in index else n
                for d, n in zip(added_sorted, counts, strict=True)
            ]
        raw_lengths = map(len, map(_DATA, map(unique.__getitem__, added_sorted)))
        index_values = map(bytes.__add__, map(REF.pack, counts, raw_lengths), at(added_sorted))
        row_keys = sorted(new_rows)
        row_digests = list(map(new_rows.__getitem__, row_keys))
        row_values = map(bytes.__add__, row_digests, at(row_digests))
        # Rows go to putmulti as zips, which reuse one tuple: no list of 10k pairs per table
        # for the cyclic GC to count (it then scans the whole heap less often).
        rows = zip(row_keys, row_values, strict=True)
        put = txn.cursor(self._objects).putmulti(rows, overwrite=not optimistic)[1]
        if optimistic and put != len(row_keys):
            raise IdTaken  # another writer stored one of these ids since the read phase
        if packs:
            txn.cursor(self._packs).putmulti(packs)
            txn.cursor(self._packrefs).putmulti(pack_counts)
            txn.put(META_NEXT_PACK, U64.pack(first_pack + len(packs) - 1), db=self._meta)
        index_cur.putmulti(zip(added_sorted, index_values, strict=True))
        if closures:
            txn.cursor(self._closures).putmulti(closures)
        self._add_counter(txn, META_RAW, raw_added)
        self._add_counter(txn, META_STORED, stored_added)
        result = PutResult(
            received=len(records),
            stored=stored,
            duplicates=duplicates,
            conflicts=conflicts,
            new_blobs=len(new_digests),
            bytes_received=staged.bytes_received,
        )
        return result, added_sorted

    def _maybe_train(self, txn: Any, pending: Sequence[Record]) -> bytes | None:
        """Train the store's first zstd dictionary once enough objects exist and store it in
        ``txn``; return it, or None. The codec is not told: should ``txn`` roll back, it would
        hold a dictionary the store does not (it loads stored ones when it meets them)."""
        blob_count = txn.stat(self._index)["entries"]
        if blob_count + len(pending) < max(
            self._dict_threshold, self._counter(txn, META_DICT_NEXT_TRY)
        ):
            return None
        samples = dictionary_samples(r.data for r in pending)
        if len(samples) < DICT_MAX_SAMPLES:
            for scanned, (digest, row) in enumerate(txn.cursor(self._index)):
                raw_len = REF.unpack_from(row)[1]
                if raw_len <= DICT_MAX_SAMPLE_BYTES:
                    samples.append(self._read_frame(txn, digest, row, REF.size, None))
                if len(samples) >= DICT_MAX_SAMPLES or scanned > 4 * DICT_MAX_SAMPLES:
                    break
        trained = train_dictionary(samples)
        if trained is None:
            next_try = 2 * (blob_count + len(pending))
            txn.put(META_DICT_NEXT_TRY, U64.pack(next_try), db=self._meta)
            return None
        self._adopt_dictionary(txn, trained)
        return trained

    def _adopt_dictionary(self, txn: Any, trained: bytes) -> bool:
        """Store ``trained`` as the store's first dictionary; whether the store's current
        dictionary is now ``trained`` (False when another one was stored before)."""
        key = DICT_PREFIX + U32.pack(FIRST_DICT)
        current = txn.get(META_DICT_CURRENT, db=self._meta)
        if current is None:
            txn.put(key, trained, db=self._meta)
            txn.put(META_DICT_CURRENT, U32.pack(FIRST_DICT), db=self._meta)
            return True
        stored = txn.get(key, db=self._meta)
        return bool(U32.unpack(current)[0] == FIRST_DICT and stored == trained)
