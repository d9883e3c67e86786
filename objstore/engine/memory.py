"""A plain in-memory backend: the reference model every other backend is tested against."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import repeat

from objstore import errors
from objstore.codec import Record, digest_of, id_type_error
from objstore.engine.base import Backend, PutResult, Stats, VerifyReport

CHUNK = 1024


class MemoryBackend(Backend):
    """Dicts guarded by one lock; a batch is applied under the lock, so readers see all or none."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._rows: dict[str, dict[str, bytes]] = {}  # project -> id -> digest
        self._blobs: dict[bytes, bytes] = {}  # digest -> exact bytes
        self._closures: dict[bytes, dict[str, int]] = {}
        self._refs: dict[bytes, int] = {}

    def write(self, project: str, records: Sequence[Record]) -> PutResult:
        stored = duplicates = conflicts = new_blobs = 0
        with self._lock:
            rows = self._rows.get(project, {})
            new_rows: dict[str, bytes] = {}
            for rec in records:
                prev = rows.get(rec.id) or new_rows.get(rec.id)
                if prev is None:
                    new_rows[rec.id] = rec.digest
                    stored += 1
                elif prev == rec.digest:
                    duplicates += 1
                else:
                    conflicts += 1
            by_digest = {rec.digest: rec for rec in records}
            for digest in new_rows.values():
                if digest not in self._refs:
                    rec = by_digest[digest]
                    self._blobs[digest] = rec.data
                    if rec.closure:
                        self._closures[digest] = dict(rec.closure)
                    self._refs[digest] = 0
                    new_blobs += 1
                self._refs[digest] += 1
            if new_rows:
                self._rows[project] = rows | new_rows
        return PutResult(
            received=len(records),
            stored=stored,
            duplicates=duplicates,
            conflicts=conflicts,
            new_blobs=new_blobs,
            bytes_received=sum(len(r.data) for r in records),
        )

    def has(self, project: str, ids: Sequence[str]) -> list[bool]:
        if not all(map(isinstance, ids, repeat(str))):
            raise id_type_error(ids)
        rows = self._rows.get(project, {})
        return [i in rows for i in ids]

    def _read(self, digest: bytes, object_id: str) -> bytes:
        data = self._blobs.get(digest)
        if data is None or digest_of(data) != digest:
            raise errors.CorruptObject(digest.hex(), "checksum mismatch or missing", object_id)
        return data

    def get_many(self, project: str, ids: Iterable[str]) -> Iterator[tuple[str, bytes]]:
        for object_id in ids:
            if not isinstance(object_id, str):
                raise id_type_error([object_id])
            with self._lock:
                digest = self._rows.get(project, {}).get(object_id)
                if digest is None:
                    continue
                data = self._read(digest, object_id)
            yield object_id, data

    def closure(self, project: str, object_id: str) -> dict[str, int] | None:
        with self._lock:
            digest = self._rows.get(project, {}).get(object_id)
            if digest is None:
                return None
            return dict(self._closures.get(digest, {}))

    def children_ids(self, project: str, object_id: str) -> Iterator[list[str]] | None:
        closure = self.closure(project, object_id)
        if closure is None:
            return None
        ids = list(closure)  # in the order the object listed them, as the LMDB backend
        return iter([ids[i : i + CHUNK] for i in range(0, len(ids), CHUNK)])

    def projects(self) -> list[str]:
        with self._lock:
            return sorted(p for p, rows in self._rows.items() if rows)

    def count(self, project: str) -> int:
        return len(self._rows.get(project, {}))

    def delete_project(self, project: str) -> int:
        with self._lock:
            rows = self._rows.pop(project, {})
            for digest in rows.values():
                self._refs[digest] -= 1
                if self._refs[digest] == 0:
                    del self._refs[digest]
                    self._blobs.pop(digest, None)
                    self._closures.pop(digest, None)
            return len(rows)

    def stats(self) -> Stats:
        with self._lock:
            raw = sum(len(b) for b in self._blobs.values())
            return Stats(
                projects=sum(1 for rows in self._rows.values() if rows),
                objects=sum(len(rows) for rows in self._rows.values()),
                blobs=len(self._blobs),
                closures=len(self._closures),
                raw_bytes=raw,
                stored_bytes=raw,
                dictionaries=0,
                file_bytes=0,
            )

    def verify(self, progress: Callable[[int], None] | None = None) -> VerifyReport:
        report = VerifyReport()
        with self._lock:
            for digest, data in self._blobs.items():
                report.blobs_checked += 1
                if digest_of(data) != digest:
                    report.problems.append(f"blob {digest.hex()}: checksum mismatch")
                if progress is not None:
                    progress(1)
            for project, rows in self._rows.items():
                for object_id, digest in rows.items():
                    report.objects_checked += 1
                    if digest not in self._blobs:
                        report.problems.append(
                            f"object {object_id!r} in {project!r}: blob {digest.hex()} missing"
                        )
        return report
