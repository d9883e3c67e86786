"""The LMDB backend: the embedded default.

Layout (named databases in one environment):

- ``projects``: project name -> 4-byte project number (never reused)
- ``objects``:  project number + id -> 16-byte xxh3-128 digest of the object's bytes
- ``blobs``:    digest -> codec tag + (compressed) bytes; one copy per distinct byte string
- ``refs``:     digest -> how many (project, id) rows point at it, and its raw length
- ``closures``: digest -> the object's ``__closure``: sorted ids and their depths
- ``meta``:     format version, project counter, byte counters, zstd dictionaries

One batch is one write transaction (fsync'd on commit), so a returned ``write`` survives
``kill -9`` and readers never see half a batch. Compression runs before the write transaction
where it can, so the lock is held only for the puts.
"""

from __future__ import annotations

import contextlib
import os
import struct
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import lmdb
import msgspec
import xxhash

from objstore import errors
from objstore.codec import Record, digest_of
from objstore.compression import (
    DICT_MAX_SAMPLE_BYTES,
    DICT_MAX_SAMPLES,
    Codec,
    CodecError,
    MissingDictionary,
    train_dictionary,
)
from objstore.engine.base import Backend, PutResult, Stats, VerifyReport

FORMAT_VERSION = 1
CHUNK = 2048
_MAX_KEY = 511
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_REF = struct.Struct(">IQ")  # refcount, raw length
_CLOSURE_HEAD = struct.Struct(">II")  # count, byte length of the joined ids

_META_VERSION = b"version"
_META_NEXT_PID = b"next_pid"
_META_RAW = b"raw_bytes"
_META_STORED = b"stored_bytes"
_META_DICT_CURRENT = b"dict:current"
_META_DICT_NEXT_TRY = b"dict:next_try"
_DICT_PREFIX = b"dict:id:"

DEFAULT_MAP_SIZE = 1 << 30
_json_closure = msgspec.json.Decoder(dict[str, int])


def _object_key(pid: bytes, object_id: str) -> bytes:
    raw = object_id.encode()
    if len(raw) + len(pid) <= _MAX_KEY - 2:
        return pid + raw
    # 0xff never occurs in UTF-8, so hashed keys cannot collide with plain ones
    return pid + b"\xff" + xxhash.xxh3_128_digest(raw)


_SMALL_CLOSURE = 64 * 1024


def _encode_closure(rec: Record, compress: Callable[[bytes], bytes]) -> bytes:
    """Small closures keep their JSON text; big ones are stored as sorted, newline-joined ids."""
    assert rec.closure is not None
    closure = rec.closure
    if len(closure) <= _SMALL_CLOSURE // 40:
        return b"\x02" + msgspec.json.encode(closure)  # compressed with the batch by the caller
    ids = sorted(closure)
    joined = "\n".join(ids).encode()
    depths = struct.pack(f">{len(ids)}I", *(closure[i] for i in ids))
    payload = _CLOSURE_HEAD.pack(len(ids), len(joined)) + joined + depths
    if len(payload) < 256:
        return b"\x00" + payload
    return b"\x01" + compress(payload)


def _decode_closure_head(value: bytes, codec: Codec) -> tuple[int, bytes, bytes]:
    if value[:1] in (b"\x02", b"\x03"):
        text = value[1:] if value[:1] == b"\x02" else codec.decompress(value[1:])
        closure = _json_closure.decode(text)
        ids = sorted(closure)
        joined = "\n".join(ids).encode()
        depths = struct.pack(f">{len(ids)}I", *(closure[i] for i in ids))
        return len(ids), joined, depths
    payload = value[1:] if value[:1] == b"\x00" else codec.decompress_plain(value[1:])
    count, length = _CLOSURE_HEAD.unpack_from(payload)
    start = _CLOSURE_HEAD.size
    return count, payload[start : start + length], payload[start + length :]


def _id_chunks(joined: bytes, chunk: int) -> Iterator[list[str]]:
    """Cut newline-joined ids into lists of about ``chunk`` ids without a Python loop per id."""
    window = max(chunk * 40, 4096)
    pos = 0
    end = len(joined)
    while pos < end:
        stop = min(pos + window, end)
        if stop < end:
            cut = joined.rfind(b"\n", pos, stop)
            if cut <= pos:
                cut = joined.find(b"\n", stop)
                cut = end if cut < 0 else cut
            stop = cut
        yield joined[pos:stop].decode().split("\n")
        pos = stop + 1


class LMDBBackend(Backend):
    """Objects in one LMDB environment under ``path`` (a directory)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        map_size: int | None = None,
        compression_level: int = 1,
        dictionary_threshold: int = 4096,
        readonly: bool = False,
    ) -> None:
        self.path = Path(path)
        if not readonly:
            self.path.mkdir(parents=True, exist_ok=True)
        data_file = self.path / "data.mdb"
        existing = data_file.stat().st_size if data_file.exists() else 0
        size = map_size or max(DEFAULT_MAP_SIZE, existing * 2)
        self._env = lmdb.open(
            str(self.path),
            map_size=size,
            max_dbs=8,
            max_readers=1024,
            readahead=False,
            readonly=readonly,
            subdir=True,
        )
        self._pid = os.getpid()
        self._closed = False
        self._write_lock = threading.Lock()
        self._gate_lock = threading.Lock()
        self._gate = threading.Condition(threading.Lock())
        self._active = 0
        self._resizing = False
        self._codec = Codec(level=compression_level)
        self._dict_threshold = dictionary_threshold
        create = not readonly
        self._meta = self._env.open_db(b"meta", create=create)
        self._projects = self._env.open_db(b"projects", create=create)
        self._objects = self._env.open_db(b"objects", create=create)
        self._blobs = self._env.open_db(b"blobs", create=create)
        self._refs = self._env.open_db(b"refs", create=create)
        self._closures = self._env.open_db(b"closures", create=create)
        if not readonly:
            with self._write() as txn:
                version = txn.get(_META_VERSION, db=self._meta)
                if version is None:
                    txn.put(_META_VERSION, _U32.pack(FORMAT_VERSION), db=self._meta)
                elif _U32.unpack(version)[0] != FORMAT_VERSION:
                    raise errors.ObjstoreError(
                        f"{self.path}: store format {_U32.unpack(version)[0]}, "
                        f"this objstore reads format {FORMAT_VERSION}"
                    )

    # -- transactions, map growth --------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise errors.StoreClosed("the store is closed")
        if os.getpid() != self._pid:
            raise errors.StoreClosed("the store was opened in another process; open it after fork")

    def _enter(self) -> None:
        with self._gate_lock:  # a plain Lock: the common path costs one acquire
            if not self._resizing:
                self._active += 1
                return
        with self._gate:
            while self._resizing:
                self._gate.wait()
            self._active += 1

    def _leave(self) -> None:
        with self._gate_lock:
            self._active -= 1
            wake = self._resizing and self._active == 0
        if wake:
            with self._gate:
                self._gate.notify_all()

    def _resize(self, new_size: int) -> None:
        """Change (or with 0, adopt another process's) map size with no transaction open here."""
        with self._gate:
            while self._resizing:
                self._gate.wait()
            with self._gate_lock:
                self._resizing = True
            try:
                while True:
                    with self._gate_lock:
                        if not self._active:
                            break
                    self._gate.wait(0.05)
                self._env.set_mapsize(new_size)
            finally:
                with self._gate_lock:
                    self._resizing = False
                self._gate.notify_all()

    def _begin_read(self) -> Any:
        """Open a read transaction; pair with :meth:`_end_read` (hot paths avoid a generator)."""
        self._check_open()
        while True:
            self._enter()
            try:
                return self._env.begin(buffers=False)
            except lmdb.MapResizedError:
                self._leave()
                self._resize(0)
            except BaseException:
                self._leave()
                raise

    def _end_read(self, txn: Any) -> None:
        txn.abort()
        self._leave()

    @contextlib.contextmanager
    def _read(self) -> Iterator[Any]:
        txn = self._begin_read()
        try:
            yield txn
        finally:
            self._end_read(txn)

    @contextlib.contextmanager
    def _write(self) -> Iterator[Any]:
        self._check_open()
        self._enter()
        try:
            txn = self._env.begin(write=True)
        except BaseException:
            self._leave()
            raise
        try:
            yield txn
        except BaseException:
            txn.abort()
            raise
        else:
            txn.commit()
        finally:
            self._leave()

    def _write_retrying(self, fn: Any) -> Any:
        """Run ``fn(txn)`` in a write transaction, growing the map and retrying when it is full."""
        with self._write_lock:
            while True:
                try:
                    with self._write() as txn:
                        return fn(txn)
                except lmdb.MapFullError:
                    self._resize(self._env.info()["map_size"] * 2)
                except lmdb.MapResizedError:
                    self._resize(0)

    # -- helpers -------------------------------------------------------------------------------

    def _pid_of(self, txn: Any, project: str) -> bytes | None:
        value: bytes | None = txn.get(project.encode(), db=self._projects)
        return value

    def _counter(self, txn: Any, key: bytes) -> int:
        value = txn.get(key, db=self._meta)
        return _U64.unpack(value)[0] if value else 0

    def _add_counter(self, txn: Any, key: bytes, delta: int) -> None:
        if delta:
            txn.put(key, _U64.pack(self._counter(txn, key) + delta), db=self._meta)

    def _current_dict(self, txn: Any) -> int:
        value = txn.get(_META_DICT_CURRENT, db=self._meta)
        if value is None:
            return 0
        dict_id: int = _U32.unpack(value)[0]
        if not self._codec.has_dictionary(dict_id):
            self._load_dict(txn, dict_id)
        return dict_id

    def _load_dict(self, txn: Any, dict_id: int) -> None:
        data = txn.get(_DICT_PREFIX + _U32.pack(dict_id), db=self._meta)
        if data is None:
            raise CodecError(f"dictionary {dict_id} is missing from the store")
        self._codec.add_dictionary(dict_id, data)

    def _decode_blob(self, txn: Any, blob: bytes, digest: bytes, object_id: str | None) -> bytes:
        try:
            try:
                data = self._codec.decompress(blob)
            except MissingDictionary as missing:
                self._load_dict(txn, missing.dict_id)
                data = self._codec.decompress(blob)
        except CodecError as exc:
            raise errors.CorruptObject(digest.hex(), str(exc), object_id) from None
        if digest_of(data) != digest:
            raise errors.CorruptObject(digest.hex(), "checksum mismatch", object_id)
        return data

    # -- writes --------------------------------------------------------------------------------

    def write(self, project: str, records: Sequence[Record]) -> PutResult:
        bytes_received = sum(len(r.data) for r in records)
        if not records:
            return PutResult(0, 0, 0, 0, 0, 0)
        unique: dict[bytes, Record] = {}
        for rec in records:
            unique.setdefault(rec.digest, rec)
        # Outside the write lock: learn which byte strings are new, and compress those.
        with self._read() as txn:
            known = {k for k, _ in txn.cursor(self._refs).getmulti(sorted(unique))}
            dict_id = self._current_dict(txn)
            blob_count = txn.stat(self._refs)["entries"]
        fresh = [rec for d, rec in unique.items() if d not in known]
        compressed: dict[bytes, bytes] = {}
        closures: dict[bytes, bytes] = {}
        if dict_id or blob_count + len(fresh) < self._dict_threshold:
            blobs = self._codec.compress_many([r.data for r in fresh], dict_id)
            compressed = {r.digest: b for r, b in zip(fresh, blobs, strict=True)}
            closures = self._encode_closures([r for r in fresh if r.closure], dict_id)

        def apply(txn: Any) -> PutResult:
            return self._apply(txn, project, records, unique, compressed, closures, bytes_received)

        result: PutResult = self._write_retrying(apply)
        return result

    def _apply(
        self,
        txn: Any,
        project: str,
        records: Sequence[Record],
        unique: dict[bytes, Record],
        compressed: dict[bytes, bytes],
        closure_values: dict[bytes, bytes],
        bytes_received: int,
    ) -> PutResult:
        pid = self._pid_of(txn, project)
        if pid is None:
            number = self._counter(txn, _META_NEXT_PID) + 1
            txn.put(_META_NEXT_PID, _U64.pack(number), db=self._meta)
            pid = _U32.pack(number)
            txn.put(project.encode(), pid, db=self._projects)
        keys = [_object_key(pid, r.id) for r in records]
        existing = dict(txn.cursor(self._objects).getmulti(sorted(set(keys))))
        new_rows: dict[bytes, bytes] = {}
        added: dict[bytes, int] = {}
        stored = duplicates = conflicts = 0
        for rec, key in zip(records, keys, strict=True):
            prev = existing.get(key) or new_rows.get(key)
            if prev is None:
                new_rows[key] = rec.digest
                added[rec.digest] = added.get(rec.digest, 0) + 1
                stored += 1
            elif prev == rec.digest:
                duplicates += 1
            else:
                conflicts += 1
        refs_cur = txn.cursor(self._refs)
        refs = dict(refs_cur.getmulti(sorted(added)))
        new_digests = [d for d in added if d not in refs]
        missing = [unique[d] for d in new_digests if d not in compressed]
        if missing:
            dict_id = self._current_dict(txn) or self._maybe_train(txn, missing)
            blobs = self._codec.compress_many([r.data for r in missing], dict_id)
            compressed = compressed | {r.digest: b for r, b in zip(missing, blobs, strict=True)}
            closure_values = closure_values | self._encode_closures(
                [r for r in missing if r.closure], dict_id
            )
        raw_added = stored_added = 0
        new_blobs = []
        closures = []
        for digest in sorted(new_digests):
            rec = unique[digest]
            blob = compressed[digest]
            new_blobs.append((digest, blob))
            raw_added += len(rec.data)
            stored_added += len(blob)
            if rec.closure:
                closures.append((digest, closure_values[digest]))
        ref_rows = []
        for digest in sorted(added):
            prev_ref = refs.get(digest)
            count = _REF.unpack(prev_ref)[0] if prev_ref else 0
            ref_rows.append((digest, _REF.pack(count + added[digest], len(unique[digest].data))))
        txn.cursor(self._objects).putmulti(sorted(new_rows.items()))
        txn.cursor(self._blobs).putmulti(new_blobs)
        refs_cur.putmulti(ref_rows)
        if closures:
            txn.cursor(self._closures).putmulti(closures)
        self._add_counter(txn, _META_RAW, raw_added)
        self._add_counter(txn, _META_STORED, stored_added)
        return PutResult(
            received=len(records),
            stored=stored,
            duplicates=duplicates,
            conflicts=conflicts,
            new_blobs=len(new_blobs),
            bytes_received=bytes_received,
        )

    def _encode_closures(self, records: Sequence[Record], dict_id: int) -> dict[bytes, bytes]:
        """Closure rows for records: JSON (zstd'd with the store codec) or sorted id lists."""
        values = {r.digest: _encode_closure(r, self._codec.compress_plain) for r in records}
        medium = [d for d, v in values.items() if v[:1] == b"\x02" and len(v) > 128]
        if medium:
            packed = self._codec.compress_many([values[d][1:] for d in medium], dict_id)
            for digest, blob in zip(medium, packed, strict=True):
                values[digest] = b"\x03" + blob
        return values

    def _maybe_train(self, txn: Any, pending: Sequence[Record]) -> int:
        """Train the store's zstd dictionary once enough objects exist; return its id or 0."""
        blob_count = txn.stat(self._refs)["entries"]
        if blob_count + len(pending) < max(
            self._dict_threshold, self._counter(txn, _META_DICT_NEXT_TRY)
        ):
            return 0
        samples = [r.data for r in pending if len(r.data) <= DICT_MAX_SAMPLE_BYTES]
        if len(samples) < DICT_MAX_SAMPLES:
            for scanned, (digest, blob) in enumerate(txn.cursor(self._blobs)):
                data = self._decode_blob(txn, blob, digest, None)
                if len(data) <= DICT_MAX_SAMPLE_BYTES:
                    samples.append(data)
                if len(samples) >= DICT_MAX_SAMPLES or scanned > 4 * DICT_MAX_SAMPLES:
                    break
        trained = train_dictionary(samples)
        if trained is None:
            next_try = 2 * (blob_count + len(pending))
            txn.put(_META_DICT_NEXT_TRY, _U64.pack(next_try), db=self._meta)
            return 0
        dict_id = 1
        txn.put(_DICT_PREFIX + _U32.pack(dict_id), trained, db=self._meta)
        txn.put(_META_DICT_CURRENT, _U32.pack(dict_id), db=self._meta)
        self._codec.add_dictionary(dict_id, trained)
        return dict_id

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
                    digest = cur.value()
                    removed[digest] = removed.get(digest, 0) + 1
                    rows += 1
                    if not cur.delete():
                        break
            raw_removed = stored_removed = 0
            for digest in sorted(removed):
                ref = txn.get(digest, db=self._refs)
                if ref is None:
                    continue
                count, raw_len = _REF.unpack(ref)
                if count > removed[digest]:
                    txn.put(digest, _REF.pack(count - removed[digest], raw_len), db=self._refs)
                    continue
                blob = txn.get(digest, db=self._blobs)
                stored_removed += len(blob) if blob else 0
                raw_removed += raw_len
                txn.delete(digest, db=self._refs)
                txn.delete(digest, db=self._blobs)
                txn.delete(digest, db=self._closures)
            txn.delete(project.encode(), db=self._projects)
            self._add_counter(txn, _META_RAW, -raw_removed)
            self._add_counter(txn, _META_STORED, -stored_removed)
            return rows

        removed_rows: int = self._write_retrying(drop)
        return removed_rows

    # -- reads ---------------------------------------------------------------------------------

    def has(self, project: str, ids: Sequence[str]) -> list[bool]:
        out: list[bool] = []
        for start in range(0, len(ids), CHUNK * 8):
            chunk = ids[start : start + CHUNK * 8]
            with self._read() as txn:
                pid = self._pid_of(txn, project)
                if pid is None:
                    out.extend([False] * len(chunk))
                    continue
                keys = [_object_key(pid, i) for i in chunk]
                found = {k for k, _ in txn.cursor(self._objects).getmulti(sorted(keys))}
            out.extend(k in found for k in keys)
        return out

    def get_many(self, project: str, ids: Iterable[str]) -> Iterator[tuple[str, bytes]]:
        chunk: list[str] = []
        for object_id in ids:
            chunk.append(object_id)
            if len(chunk) >= CHUNK:
                yield from self._get_chunk(project, chunk)
                chunk = []
        if chunk:
            yield from self._get_chunk(project, chunk)

    def _get_chunk(self, project: str, ids: list[str]) -> list[tuple[str, bytes]]:
        txn = self._begin_read()
        try:
            pid = self._pid_of(txn, project)
            if pid is None:
                return []
            if len(ids) == 1:
                digest = txn.get(_object_key(pid, ids[0]), db=self._objects)
                if digest is None:
                    return []
                blob = txn.get(digest, db=self._blobs)
                if blob is None:
                    raise errors.CorruptObject(digest.hex(), "blob is missing", ids[0])
                return [(ids[0], self._decode_blob(txn, blob, digest, ids[0]))]
            keys = {_object_key(pid, i): i for i in ids}
            rows = txn.cursor(self._objects).getmulti(sorted(keys))
            digest_of_id = {keys[k]: d for k, d in rows}
            blobs = dict(txn.cursor(self._blobs).getmulti(sorted(set(digest_of_id.values()))))
            out = []
            decode = self._codec.decoder()
            checksum = xxhash.xxh3_128_digest
            for object_id in ids:
                digest = digest_of_id.get(object_id)
                if digest is None:
                    continue
                blob = blobs.get(digest)
                if blob is None:
                    raise errors.CorruptObject(digest.hex(), "blob is missing", object_id)
                try:
                    data = decode(blob)
                except CodecError:  # unloaded dictionary, or damage: the slow path says which
                    data = self._decode_blob(txn, blob, digest, object_id)
                if checksum(data) != digest:
                    raise errors.CorruptObject(digest.hex(), "checksum mismatch", object_id)
                out.append((object_id, data))
            return out
        finally:
            self._end_read(txn)

    def _closure_parts(self, project: str, object_id: str) -> tuple[int, bytes, bytes] | None:
        """(count, newline-joined sorted ids, depths) of an object's closure; None if absent."""
        with self._read() as txn:
            pid = self._pid_of(txn, project)
            if pid is None:
                return None
            digest = txn.get(_object_key(pid, object_id), db=self._objects)
            if digest is None:
                return None
            value = txn.get(digest, db=self._closures)
            if value is None:
                return 0, b"", b""
            if value[:1] == b"\x03":
                try:
                    return _decode_closure_head(value, self._codec)
                except MissingDictionary as missing:
                    self._load_dict(txn, missing.dict_id)
            return _decode_closure_head(value, self._codec)

    def children_ids(self, project: str, object_id: str) -> Iterator[list[str]] | None:
        parts = self._closure_parts(project, object_id)
        if parts is None:
            return None
        return _id_chunks(parts[1], CHUNK) if parts[0] else iter(())

    def closure(self, project: str, object_id: str) -> dict[str, int] | None:
        parts = self._closure_parts(project, object_id)
        if parts is None:
            return None
        count, joined, depths = parts
        if not count:
            return {}
        ids = joined.decode().split("\n")
        return dict(zip(ids, struct.unpack(f">{count}I", depths), strict=True))

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
            dicts = sum(1 for k, _ in txn.cursor(self._meta) if bytes(k).startswith(_DICT_PREFIX))
            data_file = self.path / "data.mdb"
            return Stats(
                projects=txn.stat(self._projects)["entries"],
                objects=txn.stat(self._objects)["entries"],
                blobs=txn.stat(self._blobs)["entries"],
                closures=txn.stat(self._closures)["entries"],
                raw_bytes=self._counter(txn, _META_RAW),
                stored_bytes=self._counter(txn, _META_STORED),
                dictionaries=dicts,
                file_bytes=data_file.stat().st_size if data_file.exists() else 0,
            )

    def verify(self) -> VerifyReport:
        report = VerifyReport()
        referenced: dict[bytes, int] = {}
        self._scan(self._objects, lambda k, v: referenced.__setitem__(v, referenced.get(v, 0) + 1))
        report.objects_checked = sum(referenced.values())
        seen: set[bytes] = set()

        def check_blob(txn: Any, digest: bytes, blob: bytes) -> None:
            report.blobs_checked += 1
            seen.add(digest)
            try:
                self._decode_blob(txn, blob, digest, None)
            except errors.CorruptObject as exc:
                report.problems.append(str(exc))

        self._scan(self._blobs, check_blob, with_txn=True)
        refcounts: dict[bytes, int] = {}
        self._scan(self._refs, lambda k, v: refcounts.__setitem__(k, _REF.unpack(v)[0]))
        for digest, count in referenced.items():
            if digest not in seen:
                report.problems.append(f"blob {digest.hex()}: missing, {count} objects use it")
            if refcounts.get(digest) != count:
                report.problems.append(
                    f"blob {digest.hex()}: refcount {refcounts.get(digest)} but {count} objects"
                )
        for digest in seen - referenced.keys():
            report.problems.append(f"blob {digest.hex()}: stored but no object uses it")
        return report

    def _scan(self, db: Any, fn: Any, *, with_txn: bool = False) -> None:
        """Visit every row of ``db`` in short read transactions."""
        after: bytes | None = None
        while True:
            with self._read() as txn:
                cur = txn.cursor(db)
                if not (cur.set_range(after) if after is not None else cur.first()):
                    return
                if after is not None and cur.key() == after and not cur.next():
                    return
                for rows, (key, value) in enumerate(cur, 1):
                    if with_txn:
                        fn(txn, key, value)
                    else:
                        fn(key, value)
                    after = key
                    if rows >= CHUNK * 8:
                        break
                else:
                    return

    def _raw_put(self, db_name: str, key: bytes, value: bytes) -> None:
        """Test hook: overwrite a raw row (used to simulate disk corruption)."""
        db = getattr(self, f"_{db_name}")
        with self._write() as txn:
            txn.put(key, value, db=db)

    def _corrupt(self, digest: bytes) -> None:
        with self._read() as txn:
            blob = txn.get(digest, db=self._blobs)
        self._raw_put("blobs", digest, blob[:-1] + bytes([blob[-1] ^ 0x01]))

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            if os.getpid() == self._pid:
                self._env.close()
