"""Upkeep of a store: deleting projects, recounting references, compaction, counts and
stats."""

from __future__ import annotations

from itertools import chain
from operator import itemgetter
from typing import Any, NamedTuple

import lmdb

from objstore import errors
from objstore.engine.base import CompactReport, Stats
from objstore.engine.environment import DAMAGED, damaged
from objstore.engine.layout import (
    DICT_PREFIX,
    DIGEST_SIZE,
    INDEX_ROW,
    LOC,
    META_NEXT_PACK,
    META_RAW,
    META_STORED,
    PLACE,
    REF,
    ROW,
    U32,
    U64,
    pack_frames,
    pack_stops,
)
from objstore.engine.lmdb.transactions import Environment, allocated_bytes

_Entry = tuple[int, int, bytes, bytes]  # a live frame in a pack: offset, length, digest, head
_LENGTH = itemgetter(1)
COMPACT_GROUP = 256  # packs a compaction holds in memory at once (about 16 MB)


class _Plan(NamedTuple):
    """What a compaction would rewrite: the sparse packs and the live entries of each."""

    sparse: list[bytes]
    entries: dict[bytes, list[_Entry]]


def _planned(plan: _Plan, sizes: dict[bytes, int]) -> CompactReport:
    """The report of carrying out ``plan``: the packs its live frames would fill (laid out
    as the compaction lays them, COMPACT_GROUP packs at a time) and the bytes it would free."""
    written = moved = kept = 0
    for start in range(0, len(plan.sparse), COMPACT_GROUP):
        group = plan.sparse[start : start + COMPACT_GROUP]
        lengths = [e[1] for key in group for e in plan.entries[key]]
        written += len(pack_stops(lengths))
        moved += len(lengths)
        kept += sum(lengths)
    freed = sum(sizes[k] for k in plan.sparse) - kept
    return CompactReport(len(plan.sparse), written, moved, freed)


class Maintenance(Environment):
    """Deletes, reference recounts, compaction, counts, stats and verification."""

    def delete_project(self, project: str) -> int:
        def drop(txn: Any) -> int:
            pid = self._pid_of(txn, project)
            if pid is None:
                return 0
            removed: dict[bytes, int] = {}
            cur = txn.cursor(self._objects)
            rows = 0
            if cur.set_range(pid):
                while cur.key()[:4] == pid:
                    if len(cur.value()) != ROW.size:  # LMDB keeps no checksums of its own
                        raise lmdb.CorruptedError(f"object row {cur.key()!r} is cut or grown")
                    digest = cur.value()[:DIGEST_SIZE]
                    removed[digest] = removed.get(digest, 0) + 1
                    rows += 1
                    if not cur.delete():
                        break
            self._release(txn, removed)
            txn.delete(project.encode(), db=self._projects)
            return rows

        removed_rows: int = self._write_retrying(drop)
        return removed_rows

    def _release(self, txn: Any, removed: dict[bytes, int]) -> None:
        """Drop ``removed[d]`` references to each byte string ``d``, freeing those left with
        none (their closure rows, and their packs once no live frame is left in them)."""
        raw_removed = stored_removed = 0
        emptied: dict[bytes, int] = {}  # pack key -> entries that died in it
        for digest in sorted(removed):
            row = txn.get(digest, db=self._index)
            if row is None:
                continue
            count, raw_len = REF.unpack_from(row)
            if count > removed[digest]:
                head = REF.pack(count - removed[digest], raw_len)
                txn.put(digest, head + row[REF.size :], db=self._index)
                continue
            raw_removed += raw_len
            txn.delete(digest, db=self._index)
            txn.delete(row[REF.size : REF.size + PLACE], db=self._closures)
            pack_key = row[REF.size : REF.size + 8]
            emptied[pack_key] = emptied.get(pack_key, 0) + 1
        for pack_key, dead in sorted(emptied.items()):
            live_row = txn.get(pack_key, db=self._packrefs)
            live = (U32.unpack(live_row)[0] if live_row else 0) - dead
            if live > 0:
                txn.put(pack_key, U32.pack(live), db=self._packrefs)
                continue
            pack = txn.get(pack_key, db=self._packs)
            stored_removed += len(pack) if pack else 0
            txn.delete(pack_key, db=self._packs)
            txn.delete(pack_key, db=self._packrefs)
        self._add_counter(txn, META_RAW, -raw_removed)
        self._add_counter(txn, META_STORED, -stored_removed)

    def recount(self) -> int:
        """Set each stored byte string's reference count to the number of objects that use
        it, freeing those no object uses; return how many counts were wrong. One write
        transaction over every object row: writers wait while it runs."""

        def run(txn: Any) -> int:
            referenced: dict[bytes, int] = {}
            for row in txn.cursor(self._objects).iternext(keys=False, values=True):
                digest = row[:DIGEST_SIZE]
                referenced[digest] = referenced.get(digest, 0) + 1
            wrong: list[tuple[bytes, bytes]] = []
            unused: dict[bytes, int] = {}
            for digest, row in txn.cursor(self._index):
                if len(row) != INDEX_ROW:
                    continue  # damaged: verify names it, a count cannot mend it
                count, raw_len = REF.unpack_from(row)
                uses = referenced.get(digest, 0)
                if uses and uses != count:
                    wrong.append((digest, REF.pack(uses, raw_len) + row[REF.size :]))
                elif not uses:
                    unused[digest] = count
            if unused:  # one an object row still places is not unused: a damaged digest
                placed = {  # (its row's or the entry's) hides the use; freeing it would lose
                    row[DIGEST_SIZE:]  # the object's frame and closure for good
                    for row in txn.cursor(self._objects).iternext(keys=False, values=True)
                }
                for digest in list(unused):
                    if txn.get(digest, db=self._index)[REF.size :] in placed:
                        del unused[digest]
            for digest, value in wrong:
                txn.put(digest, value, db=self._index)
            self._release(txn, unused)
            return len(wrong) + len(unused)

        fixed: int = self._write_retrying(run)
        return fixed

    def compact(self, min_dead: float = 0.25, *, dry_run: bool = False) -> CompactReport:
        """Rewrite every pack whose dead frames (left by :meth:`delete_project` when other
        projects still use some of its objects) take at least ``min_dead`` of it, moving its
        live frames, in order, into new packs. One write transaction: readers keep their
        snapshot, writers wait, and an interruption leaves the store as it was. ``dry_run``:
        the report of the compaction that would run now, from a read transaction, writing
        nothing. ``min_dead`` is checked by :meth:`objstore.Store.compact`."""
        txn = self._begin_read(buffers=True)  # pack sizes only: no pack is copied out
        try:
            sizes = {bytes(k): len(v) for k, v in txn.cursor(self._packs)}
            if dry_run:
                return _planned(self._compaction_plan(txn, sizes, min_dead), sizes)
        except DAMAGED as exc:
            raise damaged(self.path, exc) from exc
        finally:
            self._end_read(txn)

        def run(txn: Any) -> CompactReport:
            # a pack never changes size once written, so the sizes read above hold here
            sparse, entries = self._compaction_plan(txn, sizes, min_dead)
            if not sparse:
                return CompactReport()
            self._reserve(txn, sum(map(_LENGTH, chain.from_iterable(entries.values()))))
            wanted = set(sparse)
            locations: dict[bytes, bytes] = {}  # digest -> its new location
            written = 0
            for start in range(0, len(sparse), COMPACT_GROUP):  # ~16 MB of packs in memory
                frames: dict[bytes, bytes] = {}
                heads: dict[bytes, bytes] = {}
                closures: dict[bytes, bytes] = {}
                for pack_key in sparse[start : start + COMPACT_GROUP]:
                    pack = txn.get(pack_key, db=self._packs)
                    for offset, length, digest, head in entries.pop(pack_key):
                        frame = pack[offset : offset + length] if pack is not None else b""
                        if len(frame) != length:
                            number = U64.unpack(pack_key)[0]
                            raise errors.CorruptObject(
                                digest.hex(), f"frame outside pack {number}", None
                            )
                        frames[digest] = frame
                        heads[digest] = head
                        closure = txn.pop(pack_key + U32.pack(offset), db=self._closures)
                        if closure is not None:
                            closures[digest] = closure
                    txn.delete(pack_key, db=self._packs)
                    txn.delete(pack_key, db=self._packrefs)
                first = self._counter(txn, META_NEXT_PACK) + 1
                packs, counts, placed = pack_frames(list(frames), frames, first)
                txn.cursor(self._packs).putmulti(packs)
                txn.cursor(self._packrefs).putmulti(counts)
                txn.put(META_NEXT_PACK, U64.pack(first + len(packs) - 1), db=self._meta)
                txn.cursor(self._index).putmulti(sorted((d, heads[d] + placed[d]) for d in placed))
                txn.cursor(self._closures).putmulti(
                    [(placed[d][:PLACE], value) for d, value in closures.items()]
                )
                locations.update(placed)
                written += len(packs)
            rows = []
            for key, row in txn.cursor(self._objects):
                if row[DIGEST_SIZE : DIGEST_SIZE + 8] in wanted:
                    place = locations.get(row[:DIGEST_SIZE])
                    if place is None:
                        raise errors.CorruptObject(
                            row[:DIGEST_SIZE].hex(),
                            "object row points into a pack its blob is not in",
                        )
                    rows.append((key, row[:DIGEST_SIZE] + place))
            txn.cursor(self._objects).putmulti(rows)
            freed = sum(sizes[k] for k in sparse) - sum(
                LOC.unpack_from(place)[2] for place in locations.values()
            )
            self._add_counter(txn, META_STORED, -freed)
            return CompactReport(len(sparse), written, len(locations), freed)

        report: CompactReport = self._write_retrying(run)
        return report

    def _compaction_plan(self, txn: Any, sizes: dict[bytes, int], min_dead: float) -> _Plan:
        """The packs at least ``min_dead`` dead (by key, in order) and the live entries of
        each, in pack order: (offset, length, digest, index row head)."""
        live: dict[bytes, int] = {}  # bytes copied out: a dry run reads through buffers
        for _, row in txn.cursor(self._index):
            pack_key = bytes(row[REF.size : REF.size + 8])
            live[pack_key] = live.get(pack_key, 0) + LOC.unpack_from(row, REF.size)[2]
        sparse = sorted(
            key
            for key, used in live.items()
            if key in sizes and sizes[key] - used >= min_dead * sizes[key]
        )
        wanted = set(sparse)
        entries: dict[bytes, list[_Entry]] = {k: [] for k in sparse}
        if sparse:
            for digest, row in txn.cursor(self._index):
                pack_key = bytes(row[REF.size : REF.size + 8])
                if pack_key in wanted:
                    _, offset, length = LOC.unpack_from(row, REF.size)
                    entries[pack_key].append(
                        (offset, length, bytes(digest), bytes(row[: REF.size]))
                    )
        for found in entries.values():
            found.sort()
        return _Plan(sparse, entries)

    def projects(self) -> list[str]:
        with self._read() as txn:
            names = [bytes(k).decode() for k, _ in txn.cursor(self._projects)]
        return [n for n in names if self.count(n)]

    def count(self, project: str) -> int:
        with self._read() as txn:
            pid = self._pid_of(txn, project)
            if pid is None:
                return 0
            cur = txn.cursor(self._objects)
            rows = 0
            if cur.set_range(pid):
                for key in cur.iternext(keys=True, values=False):
                    if key[:4] != pid:
                        break
                    rows += 1
            return rows

    def stats(self) -> Stats:
        with self._read() as txn:
            dicts = sum(1 for k, _ in txn.cursor(self._meta) if bytes(k).startswith(DICT_PREFIX))
            data_file = self.path / "data.mdb"
            return Stats(
                projects=txn.stat(self._projects)["entries"],
                objects=txn.stat(self._objects)["entries"],
                blobs=txn.stat(self._index)["entries"],
                closures=txn.stat(self._closures)["entries"],
                raw_bytes=self._counter(txn, META_RAW),
                stored_bytes=self._counter(txn, META_STORED),
                dictionaries=dicts,
                file_bytes=allocated_bytes(data_file),
            )
