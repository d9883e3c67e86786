"""Reads: ``has``, ``get``, bulk reads decompressing on helper threads, closures."""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent import futures
from itertools import chain, groupby, repeat
from operator import add, sub
from typing import Any, NamedTuple

import xxhash
from zstandard import ZstdError

from objstore import errors
from objstore.codec import id_type_error
from objstore.compression import (
    DICT_TAG_SIZE,
    ZSTD_DICT,
    CodecError,
    MissingDictionary,
)
from objstore.engine.environment import DAMAGED, damaged
from objstore.engine.layout import (
    DIGEST_SIZE,
    PLACE,
    ROW,
    U64,
    Rows,
    closure_dict,
    id_chunks,
    object_key,
    object_keys,
    present_rows,
)
from objstore.engine.lmdb.transactions import Environment

CHUNK = 2048
# A bulk read decodes at most this many stored bytes at a time (one object may exceed it):
# 2,048 small objects come to about 1.2 MB, while 2,048 meshes of 1 MB would otherwise all be
# held decoded at once.
CHUNK_STORED_BYTES = 4 * 1024 * 1024

_NEAR = 8  # a chunk averaging this many objects per pack copies its packs
_HELPER_MIN = 256  # smaller chunks are not worth a hand-off to the helper thread


def _near(rows: Rows) -> bool:
    """Whether a chunk's objects lie close together: on average ``_NEAR`` or more a pack."""
    return len(set(rows.numbers)) * _NEAR <= len(rows.numbers)


def _parts_within(found: list[str], lengths: Sequence[int], limit: int) -> list[list[str]]:
    """``found`` cut, in order, into runs whose stored ``lengths`` sum to at most ``limit``
    (a run of one object may exceed it)."""
    parts: list[list[str]] = []
    start = size = 0
    for index, length in enumerate(lengths):
        if size and size + length > limit:
            parts.append(found[start:index])
            start, size = index, 0
        size += length
    parts.append(found[start:])
    return parts


def _chunked(ids: Iterable[str], size: int) -> Iterator[list[str]]:
    chunk: list[str] = []
    for object_id in ids:
        chunk.append(object_id)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


class _Decoding(NamedTuple):
    """A chunk whose frames the helper thread is decompressing, from packs copied out of the
    map: no transaction stays open while the chunk waits, so a consumer that writes to the
    store between chunks (and grows its map) never waits on a reader it holds itself."""

    project: str
    ids: list[str]
    found: list[str]
    digests: list[bytes]
    frames: futures.Future[Any]


class _Split(NamedTuple):
    """A chunk whose stored bytes exceed the budget, to be read as these smaller parts."""

    parts: list[list[str]]


class Reads(Environment):
    """``has``, ``get``, bulk reads and closures."""

    def has(self, project: str, ids: Sequence[str]) -> list[bool]:
        out: list[bool] = []
        for start in range(0, len(ids), CHUNK * 8):
            chunk = ids[start : start + CHUNK * 8]
            with self._read() as txn:
                pid = self._pid_of(txn, project)
                if pid is None:
                    if not all(map(isinstance, chunk, repeat(str))):  # as where it is
                        raise id_type_error(chunk)
                    out.extend([False] * len(chunk))
                    continue
                # a cursor seek per key in request order, mapped in C: 0.7 us an id against
                # 1.15 for a sorted getmulti and a set (the sort alone costs 0.35)
                seek = txn.cursor(self._objects).set_key
                out.extend(map(seek, object_keys(pid, list(chunk))))
        return out

    def get_many(self, project: str, ids: Iterable[str]) -> Iterator[tuple[str, bytes]]:
        for pairs in self.read_chunks(project, _chunked(ids, CHUNK)):
            yield from pairs

    def read_chunk(self, project: str, ids: list[str]) -> list[tuple[str, bytes]]:
        if len(ids) <= CHUNK:
            return self._get_chunk(project, ids)
        out: list[tuple[str, bytes]] = []
        for pairs in self.read_chunks(project, _chunked(ids, CHUNK)):
            out += pairs
        return out

    def read_chunks(
        self, project: str, chunks: Iterable[list[str]]
    ) -> Iterator[list[tuple[str, bytes]]]:
        """Each chunk's pairs in turn. While the helper thread decompresses one chunk, this
        thread reads the next one's rows: zstd and Python work then run on two cores."""
        pending: _Decoding | None = None
        try:
            for started in self._started(project, chunks):
                done, pending = pending, None
                if isinstance(started, _Decoding):
                    pending = started
                if done is not None:
                    pairs = self._finish_chunk(done)
                    done = None  # its decompressed buffers go before the consumer runs
                    yield pairs
                if not isinstance(started, _Decoding):
                    yield started
            if pending is not None:
                done, pending = pending, None
                pairs = self._finish_chunk(done)
                done = None
                yield pairs
        finally:
            if pending is not None:  # the consumer stopped early
                pending.frames.cancel()

    def _started(
        self, project: str, chunks: Iterable[list[str]]
    ) -> Iterator[list[tuple[str, bytes]] | _Decoding]:
        """:meth:`_start_chunk` of each chunk, a chunk over the stored-bytes budget started
        part by part, each part when the one before it is taken."""
        for ids in chunks:
            started = self._start_chunk(project, ids)
            if isinstance(started, _Split):
                yield from self._started(project, started.parts)
            else:
                yield started

    def _fast_decoder(self, txn: Any) -> Callable[[Any], bytes] | None:
        """The current dictionary's bare-frame decompress (loading it if needed), or None."""
        dict_id = self._current_dict(txn)
        if not dict_id:
            return None
        try:
            return self._codec.dict_frame_decoder(dict_id)
        except MissingDictionary:
            self._load_dict(txn, dict_id)
            return self._codec.dict_frame_decoder(dict_id)

    def get(self, project: str, object_id: str) -> bytes | None:
        if not isinstance(object_id, str):
            raise id_type_error([object_id])
        txn = self._begin_read(buffers=True)
        try:
            pid = self._pid_of(txn, project)
            return None if pid is None else self._get_one(txn, pid, object_id)
        except DAMAGED as exc:
            raise damaged(self.path, exc) from exc
        finally:
            self._end_read(txn)

    def _get_one(self, txn: Any, pid: bytes, object_id: str) -> bytes | None:
        row = txn.get(object_key(pid, object_id), db=self._objects)
        if row is None:
            return None
        return self._read_frame(txn, bytes(row[:DIGEST_SIZE]), row, DIGEST_SIZE, object_id)

    def _get_chunk(self, project: str, ids: list[str]) -> list[tuple[str, bytes]]:
        """A chunk's pairs, decoded on this thread."""
        pairs = self._start_chunk(project, ids, hand_off=False)
        if isinstance(pairs, _Split):
            return [pair for part in pairs.parts for pair in self._get_chunk(project, part)]
        assert not isinstance(pairs, _Decoding)
        return pairs

    def _start_chunk(
        self, project: str, ids: list[str], *, hand_off: bool = True
    ) -> list[tuple[str, bytes]] | _Decoding | _Split:
        """Read a chunk's rows and, with ``hand_off``, give its frames to the helper thread
        when they are current-dictionary frames lying close together (finish it with
        :meth:`_finish_chunk`); otherwise decode the chunk here. A chunk of more than
        ``CHUNK_STORED_BYTES`` of frames is not decoded but cut into parts that are not."""
        if len(ids) == 1:
            data = self.get(project, ids[0])
            return [] if data is None else [(ids[0], data)]
        hand_off = hand_off and len(ids) >= _HELPER_MIN
        txn = self._begin_read(db=self._objects)
        try:
            pid = self._pid_of(txn, project)
            if pid is None:
                if not all(map(isinstance, ids, repeat(str))):  # as where it is
                    raise id_type_error(ids)
                return []
            keys = object_keys(pid, ids)
            try:
                found, rows = present_rows(txn.get, ids, keys)
            except CodecError:
                return self._slow_chunk(txn, ids, keys)
            if len(found) > 1 and sum(rows.lengths) > CHUNK_STORED_BYTES:
                return _Split(_parts_within(found, rows.lengths, CHUNK_STORED_BYTES))
            near = _near(rows)
            dict_id = self._current_dict(txn) if hand_off and found and near else 0
            runs = self._frame_runs(txn, rows) if dict_id else None
            if runs is None:
                return self._decode_chunk(txn, ids, keys, found, rows, near=near)
        except DAMAGED as exc:
            raise damaged(self.path, exc) from exc
        finally:
            self._end_read(txn)
        try:
            frames = self._helper().submit(self._codec.decompress_segments, dict_id, runs)
        except RuntimeError:  # closed by another thread since the rows were read
            raise errors.StoreClosed("the store is closed") from None
        return _Decoding(project, ids, found, list(rows.digests), frames)

    def _frame_runs(self, txn: Any, rows: Rows) -> list[Any] | None:
        """(pack, segments of its frames) for each run of rows in one pack, the codec tag cut
        off each frame; packs are copied, so the helper reads no map. None when a frame is
        not a dictionary frame (decoding here handles it), or a pack is missing or a frame is
        shorter than its tag or starts outside its pack (decoding here then names the
        object). Python loops once per run, not per frame."""
        _, numbers, offsets, lengths = rows
        segments = [0] * (2 * len(numbers))
        segments[0::2] = map(add, offsets, repeat(DICT_TAG_SIZE))
        segments[1::2] = map(sub, lengths, repeat(DICT_TAG_SIZE))
        try:
            packed = struct.pack(f"={len(segments)}Q", *segments)
        except struct.error:
            return None
        runs = []
        packs: dict[int, bytes | None] = {}
        start = 0
        for number, run in groupby(numbers):
            stop = start + len(list(run))
            pack = packs.get(number)
            if pack is None:
                pack = packs[number] = txn.get(U64.pack(number), db=self._packs)
                if pack is None:
                    return None
            try:
                tags = bytes(map(pack.__getitem__, offsets[start:stop]))
            except IndexError:  # a frame outside its pack
                return None
            if tags.count(ZSTD_DICT) != len(tags):  # raw or plain frames: decode here
                return None
            runs.append((pack, packed[16 * start : 16 * stop]))
            start = stop
        return runs

    def _finish_chunk(self, done: _Decoding) -> list[tuple[str, bytes]]:
        """The pairs of a chunk the helper decompressed, checked against their digests; on any
        failure the chunk is read again here, frame by frame, which names the damage."""
        try:
            datas = list(map(bytes, chain.from_iterable(done.frames.result())))
        except CodecError:
            return self._get_chunk(done.project, done.ids)
        if list(map(xxhash.xxh3_128_digest, datas)) != done.digests:
            return self._get_chunk(done.project, done.ids)
        return list(zip(done.found, datas, strict=True))

    def _decode_chunk(
        self,
        txn: Any,
        ids: list[str],
        keys: list[bytes],
        found: list[str],
        rows: Rows,
        *,
        near: bool,
    ) -> list[tuple[str, bytes]]:
        """Decode a chunk's frames one by one. Packs of a chunk whose objects lie close
        together (a children stream) are copied: small bytes slice and decompress faster than
        views. Packs of a scattered chunk are read through views of the same snapshot, never
        copied whole for one frame."""
        views = None if near else self._views_of(txn)
        try:
            out = []
            packs: dict[int, Any] = {}
            decode = self._codec.decoder()
            # Frames of the current dictionary skip the tag parsing. A frame that is not one
            # (another dictionary: zstd refuses it) or any damage fails the checksum or raises,
            # and the careful path then reads the whole chunk again and names the object.
            fast = self._fast_decoder(txn)
            fast_tag = ZSTD_DICT if fast is not None else -1
            checksum = xxhash.xxh3_128_digest
            get = txn.get if views is None else views.get
            packs_db, pack_key = self._packs, U64.pack
            try:
                columns = zip(found, *rows, strict=True)
                for object_id, digest, number, offset, length in columns:
                    pack = packs.get(number)
                    if pack is None:
                        pack = packs[number] = get(pack_key(number), db=packs_db)
                        if pack is None:
                            raise CodecError(f"pack {number} is missing")
                    if pack[offset] == fast_tag:
                        data = fast(pack[offset + DICT_TAG_SIZE : offset + length])  # type: ignore[misc]
                    else:
                        data = decode(pack[offset : offset + length])
                    if checksum(data) != digest:
                        raise CodecError("checksum mismatch")
                    out.append((object_id, data))
            except (CodecError, ZstdError, struct.error, IndexError):
                return self._slow_chunk(txn, ids, keys)
            return out
        finally:
            if views is not None:
                views.abort()

    def _slow_chunk(self, txn: Any, ids: list[str], keys: list[bytes]) -> list[tuple[str, bytes]]:
        """The careful path, taken on damage: raises CorruptObject naming the object."""
        out = []
        for object_id, key in zip(ids, keys, strict=True):
            row = txn.get(key, db=self._objects)
            if row is not None:
                digest = bytes(row[:DIGEST_SIZE])
                if len(row) != ROW.size:
                    raise errors.CorruptObject(digest.hex(), "malformed object row", object_id)
                out.append((object_id, self._read_frame(txn, digest, row, DIGEST_SIZE, object_id)))
        return out

    def _closure_parts(self, project: str, object_id: str) -> tuple[int, bytes, bytes] | None:
        """(count, newline-joined ids, depths) of an object's closure; None if absent."""
        with self._read() as txn:
            pid = self._pid_of(txn, project)
            if pid is None:
                return None
            row = txn.get(object_key(pid, object_id), db=self._objects)
            if row is None:
                return None
            digest = bytes(row[:DIGEST_SIZE])
            if len(row) != ROW.size:
                raise errors.CorruptObject(digest.hex(), "malformed object row", object_id)
            parts = self._closure_at(txn, row[DIGEST_SIZE : DIGEST_SIZE + PLACE], digest, object_id)
            return parts or (0, b"", b"")

    def children_ids(self, project: str, object_id: str) -> Iterator[list[str]] | None:
        parts = self._closure_parts(project, object_id)
        if parts is None:
            return None
        return id_chunks(parts[1], CHUNK) if parts[0] else iter(())

    def closure(self, project: str, object_id: str) -> dict[str, int] | None:
        parts = self._closure_parts(project, object_id)
        if parts is None:
            return None
        return closure_dict(*parts)
