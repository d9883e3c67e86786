"""zstd compression of stored objects, with dictionaries trained from the store's own objects.

Each stored blob starts with a one-byte codec tag (and, for dictionary frames, the 4-byte
dictionary id), so objects written before a dictionary existed stay readable forever.
Small JSON objects compress ~1.2x alone and ~3.7x with a dictionary trained on their peers.
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Sequence

import zstandard

RAW = 0
ZSTD = 1
ZSTD_DICT = 2

DICT_SIZE = 16 * 1024
_DICT_HEADER = struct.Struct(">BI")


class CodecError(Exception):
    """A blob cannot be decoded (unknown tag, missing dictionary, bad zstd frame)."""


class Codec:
    """Compresses blobs for storage and decompresses them back; thread-safe for reads."""

    def __init__(self, level: int = 3) -> None:
        self.level = level
        self._dicts: dict[int, zstandard.ZstdCompressionDict] = {}
        self._local = threading.local()
        self._compressors: dict[int, zstandard.ZstdCompressor] = {}
        self._lock = threading.Lock()

    def add_dictionary(self, dict_id: int, data: bytes) -> None:
        """Make a stored dictionary usable for compression (writes) and decompression (reads)."""
        with self._lock:
            if dict_id not in self._dicts:
                self._dicts[dict_id] = zstandard.ZstdCompressionDict(data)

    def has_dictionary(self, dict_id: int) -> bool:
        return dict_id in self._dicts

    def _compressor(self, dict_id: int) -> zstandard.ZstdCompressor:
        comp = self._compressors.get(dict_id)
        if comp is None:
            if dict_id:
                comp = zstandard.ZstdCompressor(
                    level=self.level, dict_data=self._dicts[dict_id], write_checksum=False
                )
            else:
                comp = zstandard.ZstdCompressor(level=self.level, write_checksum=False)
            self._compressors[dict_id] = comp
        return comp

    def compress_many(self, items: Sequence[bytes], dict_id: int = 0) -> list[bytes]:
        """Encode each item as a tagged blob. Not thread-safe: called by the single writer."""
        comp = self._compressor(dict_id)
        tag = _DICT_HEADER.pack(ZSTD_DICT, dict_id) if dict_id else bytes([ZSTD])
        out: list[bytes] = []
        raw_tag = bytes([RAW])
        compress = comp.compress
        for data in items:
            packed = compress(data)
            if len(packed) + len(tag) < len(data):
                out.append(tag + packed)
            else:
                out.append(raw_tag + data)
        return out

    def _decompressor(self, dict_id: int) -> zstandard.ZstdDecompressor:
        cache: dict[int, zstandard.ZstdDecompressor] | None = getattr(self._local, "d", None)
        if cache is None:
            cache = self._local.d = {}
        dec = cache.get(dict_id)
        if dec is None:
            if dict_id:
                zdict = self._dicts.get(dict_id)
                if zdict is None:
                    raise CodecError(f"dictionary {dict_id} is not loaded")
                dec = zstandard.ZstdDecompressor(dict_data=zdict)
            else:
                dec = zstandard.ZstdDecompressor()
            cache[dict_id] = dec
        return dec

    def decompress(self, blob: bytes) -> bytes:
        """Inverse of :meth:`compress_many` for one blob."""
        if not blob:
            raise CodecError("empty blob")
        tag = blob[0]
        try:
            if tag == RAW:
                return blob[1:]
            if tag == ZSTD:
                return self._decompressor(0).decompress(blob[1:])
            if tag == ZSTD_DICT:
                _, dict_id = _DICT_HEADER.unpack_from(blob)
                return self._decompressor(dict_id).decompress(blob[_DICT_HEADER.size :])
        except (zstandard.ZstdError, struct.error) as exc:
            raise CodecError(str(exc)) from None
        raise CodecError(f"unknown codec tag {tag}")

    def dict_id_of(self, blob: bytes) -> int:
        """The dictionary a blob needs (0 for none)."""
        if blob[:1] == bytes([ZSTD_DICT]) and len(blob) >= _DICT_HEADER.size:
            return int(_DICT_HEADER.unpack_from(blob)[1])
        return 0


def train_dictionary(samples: Sequence[bytes], size: int = DICT_SIZE) -> bytes | None:
    """Train a zstd dictionary from sample objects; None when zstd finds nothing to learn."""
    try:
        return zstandard.train_dictionary(size, list(samples)).as_bytes()
    except zstandard.ZstdError:
        return None
