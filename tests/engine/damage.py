"""Damage done to a store's bytes on purpose, the way a failing disk or a bad copy would, for
tests of how reads, verify and repair find it. Reaches into the backends' private tables:
test code only."""

from __future__ import annotations

from typing import Any

from objstore.codec import digest_of
from objstore.engine.layout import DIGEST_SIZE, LOC, REF, U32, U64
from objstore.engine.lmdb import LMDBBackend
from objstore.engine.memory import MemoryBackend


def _place(key: bytes) -> tuple[int, int]:
    """The pack number and offset a ``closures`` key names."""
    return U64.unpack_from(key)[0], U32.unpack_from(key, 8)[0]


def raw_put(backend: Any, db_name: str, key: bytes, value: bytes) -> None:
    """Overwrite one raw row of an LMDB store's table ``db_name`` (``objects``, ``index``,
    ``packs``, ``packrefs``, ``closures``, ``meta``)."""
    assert isinstance(backend, LMDBBackend)
    with backend._write() as txn:
        txn.put(key, value, db=getattr(backend, f"_{db_name}"))


def frame(backend: Any, digest: bytes) -> bytes:
    """The stored frame (codec tag and compressed bytes) of a byte string in an LMDB store."""
    assert isinstance(backend, LMDBBackend)
    with backend._read() as txn:
        row = txn.get(digest, db=backend._index)
        number, offset, length = LOC.unpack_from(row, REF.size)
        pack: bytes = txn.get(U64.pack(number), db=backend._packs)
    return pack[offset : offset + length]


def replace_frame(backend: Any, digest: bytes, new: bytes) -> None:
    """Store ``new`` in place of a byte string's frame in an LMDB store, shifting what follows
    it in its pack (and their rows) so that only this frame is wrong."""
    assert isinstance(backend, LMDBBackend)
    with backend._write() as txn:
        row = txn.get(digest, db=backend._index)
        number, offset, length = LOC.unpack_from(row, REF.size)
        key = U64.pack(number)
        pack = txn.get(key, db=backend._packs)
        moved = len(new) - length
        txn.put(key, pack[:offset] + new + pack[offset + length :], db=backend._packs)
        for table, at in ((backend._index, REF.size), (backend._objects, DIGEST_SIZE)):
            for k, v in list(txn.cursor(table)):
                pack_no, off, size = LOC.unpack_from(v, at)
                if pack_no != number or off < offset:
                    continue
                if off == offset:
                    size = len(new)
                else:
                    off += moved
                txn.put(k, v[:at] + LOC.pack(pack_no, off, size), db=table)
        shifted = [
            (k, v, _place(k)[1])
            for k, v in txn.cursor(backend._closures)
            if _place(k)[0] == number and _place(k)[1] > offset
        ]
        for k, _, _ in shifted:
            txn.delete(k, db=backend._closures)
        for _, v, off in shifted:
            txn.put(U64.pack(number) + U32.pack(off + moved), v, db=backend._closures)


def corrupt(backend: Any, digest: bytes) -> None:
    """Flip one bit at the end of a byte string's stored form, on any backend."""
    if isinstance(backend, MemoryBackend):
        data = backend._blobs[digest]
        backend._blobs[digest] = data[:-1] + bytes([data[-1] ^ 0x01])
        assert digest_of(backend._blobs[digest]) != digest
        return
    stored = frame(backend, digest)
    replace_frame(backend, digest, stored[:-1] + bytes([stored[-1] ^ 0x01]))
