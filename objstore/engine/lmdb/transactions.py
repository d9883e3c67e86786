"""The LMDB backend's environment: opening it, read and write transactions, map growth,
disk reservations, and the rows every part reads (counters, dictionaries, frames)."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import struct
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import lmdb
import msgspec
from zstandard import ZstdError

from objstore import errors
from objstore.codec import digest_of
from objstore.compression import (
    Codec,
    CodecError,
    MissingDictionary,
)
from objstore.engine import lockwake
from objstore.engine.environment import (
    DAMAGED,
    damage_in_write,
    damaged,
    make_directory,
    open_environment,
    refusing_damage,
)
from objstore.engine.layout import (
    DICT_PREFIX,
    FORMAT_VERSION,
    LOC,
    META_DICT_CURRENT,
    META_VERSION,
    U32,
    U64,
    decode_closure_head,
)

RESERVE_MARGIN = 1024 * 1024  # bytes reserved past a write's estimate (the free-page list)
_RESERVE_STEP = 2 * 1024 * 1024  # the least a reservation runs ahead of the write asking
DEFAULT_MAP_SIZE = 1 << 30


def allocated_bytes(data_file: Path) -> int:
    """Bytes the file takes on disk: with a writable map LMDB sizes the file to the whole
    map, leaving the unused part a hole, so its length says nothing about the data."""
    if not data_file.exists():
        return 0
    st = data_file.stat()
    blocks = getattr(st, "st_blocks", None)  # absent on Windows, whose files are not sparse
    return st.st_size if blocks is None else min(st.st_size, blocks * 512)


class Environment:
    """An LMDB environment and its tables, with the transactions every part of the backend
    uses (see :class:`objstore.engine.lmdb.LMDBBackend`)."""

    def _open(
        self,
        path: str | os.PathLike[str],
        *,
        map_size: int | None,
        compression_level: int,
        readonly: bool,
        readahead: bool,
        writemap: bool,
    ) -> None:
        """Open (or create) the environment under ``path`` and its tables."""
        self.path = Path(path)
        if not readonly:
            make_directory(self.path)
        data_file = self.path / "data.mdb"
        size = map_size or max(DEFAULT_MAP_SIZE, allocated_bytes(data_file) * 2)
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
        self._apply_seconds = 0.0  # how long the last commit took to write its rows
        self._sync_seconds = 0.0  # ... and to sync them
        self._gate_lock = threading.Lock()
        self._helpers: futures.ThreadPoolExecutor | None = None  # made on first bulk read
        self._gate = threading.Condition(threading.Lock())
        self._active = 0
        self._resizing = False
        self._codec = Codec(level=compression_level)
        # with a writable map, disk blocks are reserved before each write (see _reserve)
        self._reserving = writemap and not readonly and hasattr(os, "posix_fallocate")
        self._data_fd: int | None = None  # the data file, opened for the first reservation
        self._reserved_to = 0  # the file's bytes this process has seen allocated
        self._psize: int = self._env.stat()["psize"]
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
            if damage_in_write(exc):
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
        """Add ``delta`` to a byte counter (stats' figures). One that would go below zero was
        damaged: it stops at zero rather than failing the delete that found it."""
        if delta:
            txn.put(key, U64.pack(max(0, self._counter(txn, key) + delta)), db=self._meta)

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

    def _decompressed(self, txn: Any, blob: bytes) -> bytes:
        """A blob's bytes, its dictionary loaded first if need be; unchecked (CodecError)."""
        try:
            return self._codec.decompress(blob)
        except MissingDictionary as missing:
            self._load_dict(txn, missing.dict_id)
            return self._codec.decompress(blob)

    def _decode_blob(self, txn: Any, blob: bytes, digest: bytes, object_id: str | None) -> bytes:
        try:
            data = self._decompressed(txn, blob)
        except CodecError as exc:
            raise errors.CorruptObject(digest.hex(), str(exc), object_id) from None
        if digest_of(data) != digest:
            raise errors.CorruptObject(digest.hex(), "checksum mismatch", object_id)
        return data

    def _closure_at(
        self, txn: Any, place: Any, digest: bytes, object_id: str | None
    ) -> tuple[int, bytes, bytes] | None:
        """:func:`decode_closure_head` of the closure row at ``place`` (None if there is none).
        A row that does not decode, or whose parts disagree, is the object's damage:
        CorruptObject, as for its bytes."""
        value = txn.get(place, db=self._closures)
        if value is None:
            return None
        value = bytes(value)  # a view, from a transaction of views
        try:
            try:
                count, joined, depths = decode_closure_head(value, self._codec)
            except MissingDictionary as missing:
                self._load_dict(txn, missing.dict_id)
                count, joined, depths = decode_closure_head(value, self._codec)
            if not joined.isascii():
                joined.decode()  # ids are UTF-8: a flipped byte may not be
        except (CodecError, ZstdError, msgspec.DecodeError, ValueError, struct.error) as exc:
            raise errors.CorruptObject(digest.hex(), f"closure row: {exc}", object_id) from None
        if len(depths) != 4 * count or joined.count(b"\n") != max(count - 1, 0):
            raise errors.CorruptObject(digest.hex(), "closure row: malformed", object_id)
        return count, joined, depths

    def _read_frame(
        self, txn: Any, digest: bytes, row: Any, at: int, object_id: str | None
    ) -> bytes:
        """The checked bytes of the frame whose location is at ``row[at:]``."""
        return self._decode_blob(
            txn, self._frame_at(txn, digest, row, at, object_id), digest, object_id
        )

    def _frame_at(self, txn: Any, digest: bytes, row: Any, at: int, object_id: str | None) -> Any:
        """The stored frame whose location is at ``row[at:]`` (a view, from a transaction of
        views); CorruptObject, naming ``digest``, when no frame is there."""
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
        return frame

    def _helper(self) -> futures.ThreadPoolExecutor:
        with self._gate_lock:
            if self._helpers is None:
                self._helpers = futures.ThreadPoolExecutor(
                    os.cpu_count() or 2, thread_name_prefix="objstore-helper"
                )
            return self._helpers

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
