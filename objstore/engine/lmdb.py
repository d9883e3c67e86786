"""The LMDB backend: the embedded default.

Its rows are laid out as :mod:`objstore.engine.layout` describes; this module holds the
transactions that write and read them.

A batch is written whole in one write transaction (fsync'd on commit), so a returned
``write`` survives ``kill -9`` and readers never see half a batch; batches that threads queue
while another commit syncs share the next transaction (group commit). Compression runs before
the write transaction where it can, so the lock is held only for the puts.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import struct
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent import futures
from functools import partial
from itertools import chain, groupby, repeat
from operator import add, itemgetter, sub
from pathlib import Path
from typing import Any, NamedTuple

import lmdb
import xxhash
from zstandard import ZstdError

from objstore import errors
from objstore.codec import Record, digest_of, id_type_error
from objstore.compression import (
    DICT_MAX_SAMPLE_BYTES,
    DICT_MAX_SAMPLES,
    DICT_TAG_SIZE,
    ZSTD_DICT,
    Codec,
    CodecError,
    MissingDictionary,
    dictionary_samples,
    train_dictionary,
)
from objstore.engine import lockwake
from objstore.engine.base import Backend, CompactReport, PutResult, Stats, VerifyReport
from objstore.engine.environment import DAMAGED, damaged, open_environment, refusing_damage
from objstore.engine.layout import (
    CLOSURE_JSON_ZSTD,
    DICT_PREFIX,
    DIGEST_SIZE,
    FIRST_DICT,
    FORMAT_VERSION,
    LOC,
    META_DICT_CURRENT,
    META_DICT_NEXT_TRY,
    META_NEXT_PACK,
    META_NEXT_PID,
    META_RAW,
    META_STORED,
    META_VERSION,
    PLACE,
    REF,
    ROW,
    U32,
    U64,
    Rows,
    decode_closure_head,
    encode_closures,
    id_chunks,
    object_key,
    object_keys,
    pack_frames,
    pack_stops,
    present_rows,
)

CHUNK = 2048
# A bulk read decodes at most this many stored bytes at a time (one object may exceed it):
# 2,048 small objects come to about 1.2 MB, while 2,048 meshes of 1 MB would otherwise all be
# held decoded at once.
CHUNK_STORED_BYTES = 4 * 1024 * 1024
# Received bytes one group commit takes at most (a few uploads of 32 MB): a commit rewrites
# every B-tree page its random keys land on, so on a big store fewer, bigger commits write
# less. Five 100k sends into one 1-worker server, the fifth: 22k objects/s with 32 MB, 29-32k
# with 96 MB or more.
GROUP_BYTES = 128 * 1024 * 1024
_GROUP_AHEAD = 2  # batches a single writer stages for the one transaction after a commit
STAGER_WAIT = 0.05  # seconds a commit waits at most for writers still staging a batch
RESERVE_MARGIN = 1024 * 1024  # bytes reserved past a write's estimate (the free-page list)
_ROW_ALLOWANCE = 256  # bytes of new B-tree pages a record's rows may add, on top of its data
_RESERVE_STEP = 2 * 1024 * 1024  # the least a reservation runs ahead of the write asking
DEFAULT_MAP_SIZE = 1 << 30
# A writable map sizes the data file to the whole map. Linux filesystems leave the unused part
# a hole; elsewhere (NTFS, HFS+) it could take the map's full size on disk from the start.
WRITEMAP_DEFAULT = sys.platform.startswith("linux")


_ID = itemgetter(0)  # Record fields, read in C loops
_DATA = itemgetter(1)
_DIGEST_OF = itemgetter(2)
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


class _Seen(NamedTuple):
    """What a write's read phase saw: its transaction id and the index rows of the batch's
    byte strings that were stored already."""

    txn_id: int
    index_rows: dict[bytes, bytes]


def _set_event(event: threading.Event, _: object) -> None:
    event.set()


class _Frames(NamedTuple):
    """A staged write's compressed frames and the dictionary they use; ``trained`` holds that
    dictionary when the store has none yet, for the commit to store."""

    frames: Sequence[Any]
    dict_id: int
    trained: bytes | None = None


class _Staged(NamedTuple):
    """A write prepared outside the write lock, ready for :meth:`LMDBBackend._commit_staged`: the
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


class _Queued:
    """A staged write waiting for the write lock, its frames tagged, and how it ended."""

    __slots__ = ("applied", "error", "frames", "result", "staged", "trained")

    def __init__(
        self,
        staged: _Staged,
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


class _IdTaken(Exception):
    """An optimistic write found one of its ids stored: roll back and decide per record."""


def _allocated(data_file: Path) -> int:
    """Bytes the file takes on disk: with a writable map LMDB sizes the file to the whole
    map, leaving the unused part a hole, so its length says nothing about the data."""
    if not data_file.exists():
        return 0
    st = data_file.stat()
    blocks = getattr(st, "st_blocks", None)  # absent on Windows, whose files are not sparse
    return st.st_size if blocks is None else min(st.st_size, blocks * 512)


class LMDBBackend(Backend):
    """Objects in one LMDB environment under ``path`` (a directory).

    On Linux writers use a writable memory map (``writemap``): a commit syncs pages the
    transaction wrote in place instead of one ``pwrite`` per dirty page, which at a million
    objects is thousands of calls per batch. Every process writing one store must use the
    same setting.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        map_size: int | None = None,
        compression_level: int = 1,
        dictionary_threshold: int = 4096,
        readonly: bool = False,
        readahead: bool = True,
        writemap: bool | None = None,
    ) -> None:
        self.path = Path(path)
        if writemap is None:
            writemap = WRITEMAP_DEFAULT
        if not readonly:
            self.path.mkdir(parents=True, exist_ok=True)
        data_file = self.path / "data.mdb"
        size = map_size or max(DEFAULT_MAP_SIZE, _allocated(data_file) * 2)
        if writemap and not readonly and data_file.exists():
            # LMDB truncates a writable map's file to the map size: a smaller map here would cut
            # the file under another process's bigger map, and its next write there faults.
            size = max(size, data_file.stat().st_size)
        self._env = open_environment(
            self.path,
            map_size=size,
            max_dbs=8,
            max_readers=1024,
            readahead=readahead,
            readonly=readonly,
            writemap=writemap and not readonly,
        )
        self._pid = os.getpid()
        self._closed = False
        self._readonly = readonly
        self._write_lock = threading.Lock()
        self._queue: list[_Queued] = []  # writes waiting for the write lock: see _lead
        self._queue_lock = threading.Lock()
        self._queued = threading.Condition(self._queue_lock)  # notified as writes queue
        self._staging = 0  # write() calls staging a batch, not queued yet
        self._apply_seconds = 0.0  # how long the last commit took to write its rows
        self._sync_seconds = 0.0  # ... and to sync them
        self._gate_lock = threading.Lock()
        self._helpers: futures.ThreadPoolExecutor | None = None  # made on first bulk read
        # (transaction id, byte strings whose index rows it wrote) of this process's last writes
        self._commits: deque[tuple[int, list[bytes]]] = deque(maxlen=16)
        self._gate = threading.Condition(threading.Lock())
        self._active = 0
        self._resizing = False
        self._codec = Codec(level=compression_level)
        # with a writable map, disk blocks are reserved before each write (see _reserve)
        self._reserving = writemap and not readonly and hasattr(os, "posix_fallocate")
        self._data_fd: int | None = None  # the data file, opened for the first reservation
        self._reserved_to = 0  # the file's bytes this process has seen allocated
        self._psize: int = self._env.stat()["psize"]
        self._dict_threshold = dictionary_threshold
        self._candidate: bytes | None = None  # see _candidate_dictionary
        self._training = threading.Lock()
        create = not readonly
        with refusing_damage(self.path, self._env):
            self._meta = self._env.open_db(b"meta", create=create)
            self._check_format()
            self._projects = self._env.open_db(b"projects", create=create)
            self._objects = self._env.open_db(b"objects", create=create)
            self._index = self._env.open_db(b"index", create=create)
            self._packs = self._env.open_db(b"packs", create=create)
            self._packrefs = self._env.open_db(b"packrefs", create=create)
            self._closures = self._env.open_db(b"closures", create=create)
        # wakes writers a killed process left asleep on the lock; closed before the env
        self._lockwatch = lockwake.watch(self.path, self._env)

    def _check_format(self) -> None:
        """Stamp a new store with this format; refuse one written in another (before any
        other table is created in it)."""
        if self._readonly:
            with self._read() as txn:
                version = txn.get(META_VERSION, db=self._meta)
        else:
            with self._write() as txn:
                version = txn.get(META_VERSION, db=self._meta)
                if version is None:
                    txn.put(META_VERSION, U32.pack(FORMAT_VERSION), db=self._meta)
        if version is not None and len(version) != U32.size:
            raise lmdb.CorruptedError(f"format version stamp of {len(version)} bytes")
        if version is not None and U32.unpack(version)[0] != FORMAT_VERSION:
            raise errors.UnsupportedFormat(
                f"{self.path}: store format {U32.unpack(version)[0]}, "
                f"this objstore reads format {FORMAT_VERSION}; pull its projects with "
                "the objstore that wrote it, or move it aside and send them again"
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

    def _begin_read(self, *, buffers: bool = False, db: Any = None) -> Any:
        """Open a read transaction; pair with :meth:`_end_read` (hot paths avoid a generator).

        With ``buffers`` its values are views into the map, valid until the transaction ends;
        ``db`` is the table its calls read when they name none.
        """
        self._check_open()
        while True:
            self._enter()
            try:
                if buffers:
                    return self._env.begin(db=db, buffers=True)
                return self._env.begin(db=db)
            except lmdb.MapResizedError:
                self._leave()
                self._resize(0)
            except BaseException:
                self._leave()
                raise

    def _views_of(self, txn: Any) -> Any | None:
        """A view-returning read transaction on ``txn``'s snapshot, or None when a commit came
        in between (or the map grew). Opened inside ``txn``'s gate entry; abort it before
        ending ``txn``."""
        try:
            views = self._env.begin(buffers=True)
        except lmdb.MapResizedError:
            return None
        if views.id() != txn.id():
            views.abort()
            return None
        return views

    def _end_read(self, txn: Any) -> None:
        txn.abort()
        self._leave()

    @contextlib.contextmanager
    def _read(self) -> Iterator[Any]:
        txn = self._begin_read()
        try:
            yield txn
        except DAMAGED as exc:
            raise damaged(self.path, exc) from exc
        finally:
            self._end_read(txn)

    @contextlib.contextmanager
    def _write(self) -> Iterator[Any]:
        self._check_open()
        if self._readonly:
            raise errors.StoreReadOnly(f"{self.path} was opened read-only")
        self._enter()
        try:
            # Each write first frees the reader slots of processes that died inside a read
            # (a worker killed mid-stream): LMDB frees them only when asked, and until then
            # their snapshot keeps every page freed since from reuse, so the file grows with
            # every write, for as long as any process keeps the store open. ~2 us a call
            # with four other processes reading.
            self._env.reader_check()
            txn = self._env.begin(write=True)
        except BaseException:
            self._leave()
            raise
        try:
            yield txn
        except BaseException as exc:
            txn.abort()
            if isinstance(exc, DAMAGED):
                raise damaged(self.path, exc) from exc
            raise
        else:
            txn.commit()
        finally:
            self._leave()

    def _write_retrying(self, fn: Any, committed: Callable[[Any], None] | None = None) -> Any:
        """Run ``fn(txn)`` in a write transaction, growing the map and retrying when it is full;
        ``committed`` gets its result once the commit is done, before another write begins."""
        with self._write_lock:
            return self._write_loop(fn, committed)

    def _write_loop(
        self, fn: Any, committed: Callable[[Any], None] | None = None, adds: int = 0
    ) -> Any:
        """:meth:`_write_retrying` for a caller that holds the write lock; ``adds``: bytes of
        new data the write may put (see :meth:`_reserve`)."""
        while True:
            try:
                started = time.perf_counter()
                with self._write() as txn:
                    self._reserve(txn, adds)
                    out = fn(txn)
                    applied = time.perf_counter()
                self._apply_seconds = applied - started
                self._sync_seconds = time.perf_counter() - applied
            except lmdb.MapFullError:
                self._resize(self._env.info()["map_size"] * 2)
                continue
            except lmdb.MapResizedError:
                self._resize(0)
                continue
            except lmdb.Error as exc:
                # a full disk: lmdb.Error from py-lmdb 3.0 on, DiskError (ENOSPC) before
                plain = type(exc) in (lmdb.Error, lmdb.DiskError)
                free = self._free_if_short(adds) if plain else None
                if free is not None:
                    raise errors.StoreFull(
                        f"no space left for this write in {self.path}: the disk has "
                        f"{free / 1e6:,.1f} MB free; nothing was stored ({exc})"
                    ) from exc
                raise
            if committed is not None:
                committed(out)
            return out

    def _reserve(self, txn: Any, adds: int) -> None:
        """Have the disk blocks under every page the write in ``txn`` may add allocated
        before it adds them, or raise StoreFull with nothing written. With a writable map
        LMDB writes new pages straight into the file's unallocated tail, and on a full disk
        such a write kills the process (SIGBUS) instead of failing. A write may add its new
        data (``adds``), a copy of each tree page it changes (at most all of them) and their
        splits, hence the estimate; blocks already allocated cost nothing again."""
        if not self._reserving:
            return
        if self._data_fd is None:
            self._data_fd = os.open(self.path / "data.mdb", os.O_RDWR)
        info = self._env.info()
        used = (info["last_pgno"] + 1) * self._psize
        room = info["map_size"] - used  # past the map the write fails (MapFullError) instead
        need = min(self._need(txn, adds), room)
        if need <= 0 or used + need <= self._reserved_to:
            return  # (a full map: the write fails with MapFullError and the map grows)
        # ahead by an eighth of the store more (2 MB at least), so that the file's allocation
        # (and with it the metadata each sync must write) changes once in many commits
        ahead = min(need + max(need, _RESERVE_STEP, used // 8), room)
        for length in (ahead, need):
            # a reservation the disk cannot give is not tried: a failed one keeps what it
            # got, and would leave the disk full for every other program too
            if not self._disk_has(used + length):
                continue
            try:
                os.posix_fallocate(self._data_fd, used, length)
            except OSError as exc:
                if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                    raise
                continue
            self._reserved_to = used + length
            return
        raise errors.StoreFull(
            f"no space left for this write in {self.path}: it may need "
            f"{need / 1e6:,.1f} MB past the {used / 1e6:,.1f} MB in use; nothing was stored"
        )

    def _need(self, txn: Any, adds: int) -> int:
        """The most new file space a write of ``adds`` new bytes in ``txn`` may take."""
        trees = (
            self._objects, self._index, self._closures, self._packs, self._packrefs,
            self._projects, self._meta,
        )  # fmt: skip
        tree_pages: int = sum(
            stat["branch_pages"] + stat["leaf_pages"] for stat in map(txn.stat, trees)
        )
        return adds + tree_pages * self._psize + RESERVE_MARGIN

    def _free_if_short(self, adds: int) -> int | None:
        """The disk's free bytes when they are fewer than a write of ``adds`` new bytes may
        need, else None: how a write that failed without a reservation (no writable map:
        LMDB's ``pwrite`` of its pages fails on a full disk, with ENOSPC or, cut short, EIO)
        is told from another I/O error. LMDB aborts such a write whole; the store stays as
        it was."""
        try:
            free = shutil.disk_usage(self.path).free
        except OSError:
            return None
        with self._read() as txn:
            return free if free < self._need(txn, adds) else None

    def _disk_has(self, end: int) -> bool:
        """Whether the disk has the free blocks to allocate the data file up to ``end``
        (what the file already holds, by this process's reservations or its size on disk,
        counted as there)."""
        assert self._data_fd is not None
        held = max(self._reserved_to, os.fstat(self._data_fd).st_blocks * 512)
        return end - held <= shutil.disk_usage(self.path).free

    # -- helpers -------------------------------------------------------------------------------

    def _pid_of(self, txn: Any, project: str) -> bytes | None:
        value = txn.get(project.encode(), db=self._projects)
        return None if value is None else bytes(value)

    def _counter(self, txn: Any, key: bytes) -> int:
        value = txn.get(key, db=self._meta)
        return U64.unpack(value)[0] if value else 0

    def _add_counter(self, txn: Any, key: bytes, delta: int) -> None:
        if delta:
            txn.put(key, U64.pack(self._counter(txn, key) + delta), db=self._meta)

    def _current_dict(self, txn: Any) -> int:
        value = txn.get(META_DICT_CURRENT, db=self._meta)
        if value is None:
            return 0
        dict_id: int = U32.unpack(value)[0]
        if not self._codec.has_dictionary(dict_id):
            self._load_dict(txn, dict_id)
        return dict_id

    def _load_dict(self, txn: Any, dict_id: int) -> None:
        data = txn.get(DICT_PREFIX + U32.pack(dict_id), db=self._meta)
        if data is None:
            raise CodecError(f"dictionary {dict_id} is missing from the store")
        self._codec.add_dictionary(dict_id, bytes(data))  # data may be a view into the map

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

    def _read_frame(
        self, txn: Any, digest: bytes, row: Any, at: int, object_id: str | None
    ) -> bytes:
        """The checked bytes of the frame whose location is at ``row[at:]``."""
        try:
            number, offset, length = LOC.unpack_from(row, at)
        except struct.error:
            raise errors.CorruptObject(digest.hex(), "malformed location", object_id) from None
        pack = txn.get(U64.pack(number), db=self._packs)
        if pack is None:
            raise errors.CorruptObject(digest.hex(), f"pack {number} is missing", object_id)
        frame = pack[offset : offset + length]
        if len(frame) != length:
            raise errors.CorruptObject(digest.hex(), f"frame outside pack {number}", object_id)
        return self._decode_blob(txn, frame, digest, object_id)

    # -- writes --------------------------------------------------------------------------------

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
        waiting: list[_Staged] = []  # staged, for the transaction after the one committing
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
                following: _Staged | None = None
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

    def _commit_aside(self, group: list[_Staged]) -> futures.Future[list[PutResult]]:
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

    def _stage(
        self,
        project: str,
        records: Sequence[Record],
        helper: futures.Executor | None = None,
    ) -> _Staged:
        """A write's work outside the write lock: learn which byte strings are new and
        compress those (on ``helper`` when given)."""
        bytes_received = sum(map(len, map(_DATA, records)))
        # one record per byte string (duplicates carry the same bytes, so any one will do)
        unique = dict(zip(map(_DIGEST_OF, records), records, strict=True))
        if not records:
            return _Staged(project, records, unique, [], None, {}, 0, _Seen(0, {}), False)
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
        return _Staged(
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

    def _commit_staged(
        self, group: list[_Staged], applied: threading.Event | None = None
    ) -> list[PutResult]:
        """Commit staged batches, in order, in as few transactions as the queue allows;
        ``applied`` is set once the last one's rows are in and only the disk is left."""
        return self._lead(self._enqueue(group, applied))

    def _enqueue(
        self, group: list[_Staged], applied: threading.Event | None = None
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

    def _queued_write(self, staged: _Staged, applied: threading.Event | None) -> _Queued:
        """A staged batch with its frames tagged (waiting for them to compress first)."""
        done = staged.compressed.result() if staged.compressed is not None else None
        if done is None:
            return _Queued(staged, {}, None, applied)
        datas = map(_DATA, map(staged.unique.__getitem__, staged.fresh))
        blobs = self._codec.tag_frames(list(datas), done.dict_id, done.frames)
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
        except _IdTaken:  # rolled back: decide record by record
            apply = partial(self._apply_group, [queued], optimistic=False)
            done = self._write_loop(apply, self._log_commit, _adds([queued]))
        return done[0][0]

    def _log_commit(self, done: tuple[list[PutResult], int, list[bytes]]) -> None:
        """Remember which byte strings a commit changed, for :meth:`_touched_since`. Only a
        commit that put index rows is remembered: LMDB gives a transaction that changed
        nothing no id of its own, so the next commit, maybe another process's, takes the
        same one; trusting the log for it would skip rows that process changed."""
        if done[2]:
            self._commits.append(done[1:])

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
        staged: _Staged,
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
            raise _IdTaken  # another writer stored one of these ids since the read phase
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
                count, raw_len = REF.unpack_from(row)
                uses = referenced.get(digest, 0)
                if uses and uses != count:
                    wrong.append((digest, REF.pack(uses, raw_len) + row[REF.size :]))
                elif not uses:
                    unused[digest] = count
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

    # -- reads ---------------------------------------------------------------------------------

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

    def _helper(self) -> futures.ThreadPoolExecutor:
        with self._gate_lock:
            if self._helpers is None:
                self._helpers = futures.ThreadPoolExecutor(
                    os.cpu_count() or 2, thread_name_prefix="objstore-helper"
                )
            return self._helpers

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
            value = txn.get(row[DIGEST_SIZE : DIGEST_SIZE + PLACE], db=self._closures)
            if value is None:
                return 0, b"", b""
            if value[:1] == CLOSURE_JSON_ZSTD:
                try:
                    return decode_closure_head(value, self._codec)
                except MissingDictionary as missing:
                    self._load_dict(txn, missing.dict_id)
            return decode_closure_head(value, self._codec)

    def children_ids(self, project: str, object_id: str) -> Iterator[list[str]] | None:
        parts = self._closure_parts(project, object_id)
        if parts is None:
            return None
        return id_chunks(parts[1], CHUNK) if parts[0] else iter(())

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
                file_bytes=_allocated(data_file),
            )

    def verify(self) -> VerifyReport:
        report = VerifyReport()
        try:
            return self._verify(report)
        except (errors.StoreCorrupt, *DAMAGED) as exc:  # a table's pages: no walking on
            report.problems.append(f"stopped: {exc}")
            return report

    def _verify(self, report: VerifyReport) -> VerifyReport:
        referenced: dict[bytes, int] = {}
        misplaced: set[bytes] = set()
        locations: dict[bytes, bytes] = {}

        def visit_object(key: bytes, row: bytes) -> None:
            digest = row[:DIGEST_SIZE]
            referenced[digest] = referenced.get(digest, 0) + 1
            locations.setdefault(digest, row[DIGEST_SIZE:])
            if locations[digest] != row[DIGEST_SIZE:]:
                misplaced.add(digest)

        self._scan(self._objects, visit_object)
        report.objects_checked = sum(referenced.values())
        refcounts: dict[bytes, int] = {}
        per_pack: dict[bytes, int] = {}

        def check_entry(txn: Any, digest: bytes, row: bytes) -> None:
            report.blobs_checked += 1
            refcounts[digest] = REF.unpack_from(row)[0]
            pack_key = row[REF.size : REF.size + 8]
            per_pack[pack_key] = per_pack.get(pack_key, 0) + 1
            if digest in locations and locations[digest] != row[REF.size :]:
                misplaced.add(digest)
            try:
                self._read_frame(txn, digest, row, REF.size, None)
            except errors.CorruptObject as exc:
                report.problems.append(str(exc))

        self._scan(self._index, check_entry, with_txn=True)
        for digest in sorted(misplaced):
            report.problems.append(f"blob {digest.hex()}: object rows disagree on its location")
        for digest, count in referenced.items():
            if digest not in refcounts:
                report.problems.append(f"blob {digest.hex()}: missing, {count} objects use it")
            elif refcounts[digest] != count:
                report.miscounted += 1
                report.problems.append(
                    f"blob {digest.hex()}: refcount {refcounts[digest]} but {count} objects"
                )
        for digest in refcounts.keys() - referenced.keys():
            report.miscounted += 1
            report.problems.append(f"blob {digest.hex()}: stored but no object uses it")
        live: dict[bytes, int] = {}
        self._scan(self._packrefs, lambda k, v: live.__setitem__(k, U32.unpack(v)[0]))
        for pack_key in sorted(live.keys() | per_pack.keys()):
            if live.get(pack_key) != per_pack.get(pack_key):
                number = U64.unpack(pack_key)[0]
                report.problems.append(
                    f"pack {number}: counted {live.get(pack_key)} live entries, "
                    f"found {per_pack.get(pack_key, 0)}"
                )
        txn = self._begin_read(buffers=True)  # keys only: no pack is copied out
        try:
            stored = [bytes(k) for k in txn.cursor(self._packs).iternext(keys=True, values=False)]
        finally:
            self._end_read(txn)
        for pack_key in stored:
            if pack_key not in per_pack:
                number = U64.unpack(pack_key)[0]
                report.problems.append(f"pack {number}: stored but no object is in it")
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

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            if os.getpid() == self._pid:
                if self._helpers is not None:  # no helper may read the map once it is gone
                    self._helpers.shutdown(wait=True)
                self._lockwatch.close()
                self._env.close()
                if self._data_fd is not None:
                    os.close(self._data_fd)
