"""zstd compression of stored objects, with dictionaries trained from the store's own objects.

Each stored blob starts with a one-byte codec tag (and, for dictionary frames, the 4-byte
dictionary id), so objects written before a dictionary existed stay readable forever.
Small JSON objects compress ~1.2x alone and ~3.7x with a dictionary trained on their peers.
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Callable, Iterable, Sequence
from itertools import islice
from typing import Any, cast

import zstandard

RAW = 0
ZSTD = 1
ZSTD_DICT = 2

DICT_SIZE = 16 * 1024
DICT_MAX_SAMPLES = 1000  # 0.09 s to train with zstd's search, ratio 0.320 vs 0.316 with 4000
DICT_MAX_SAMPLE_BYTES = 4096  # the dictionary serves small objects; big ones compress alone
# fastCOVER's segment and d-mer sizes, fixed (0 for either has zstd search it): its search over
# k in [50, 2000] and d in {6, 8} took 4x as long here (68-130 ms against 18-31 ms for 1000
# samples) for dictionaries that compress unseen objects 0.7% smaller on average over 16
# generated graphs (-1.2% to +2.7%). A new store trains before its first batch compresses, so
# a 10k put_many into one took 0.262 s against 0.305, 0.291 against 0.334 (medians of 8 and
# 10 alternating runs: benchmarks/bench_dictionary).
DICT_K = 512
DICT_D = 8
_MULTI_MIN = 64
_GROUP_BYTES = 128 * 1024
_DICT_HEADER = struct.Struct(">BI")
DICT_TAG_SIZE = _DICT_HEADER.size  # codec tag and dictionary id before a dictionary frame


_PLAIN = -1  # the compressor key of checksummed plain frames


class CodecError(Exception):
    """A blob cannot be decoded (unknown tag, missing dictionary, bad zstd frame)."""


class MissingDictionary(CodecError):
    """The blob needs a dictionary this codec has not loaded yet."""

    def __init__(self, dict_id: int) -> None:
        self.dict_id = dict_id
        super().__init__(f"dictionary {dict_id} is not loaded")


class Codec:
    """Compresses blobs for storage and decompresses them back; thread-safe for reads."""

    def __init__(self, level: int = 1, threads: int = 2) -> None:
        self.threads = threads
        self.level = level
        self._dicts: dict[int, zstandard.ZstdCompressionDict] = {}
        self._local = threading.local()  # zstd contexts are not thread-safe: one set per thread
        self._lock = threading.Lock()

    def add_dictionary(self, dict_id: int, data: bytes) -> None:
        """Make a stored dictionary usable for compression (writes) and decompression (reads)."""
        with self._lock:
            if dict_id not in self._dicts:
                zdict = zstandard.ZstdCompressionDict(data)
                zdict.precompute_compress(level=self.level)
                self._dicts[dict_id] = zdict

    def has_dictionary(self, dict_id: int) -> bool:
        return dict_id in self._dicts

    def _compressor(self, dict_id: int) -> zstandard.ZstdCompressor:
        cache: dict[int, zstandard.ZstdCompressor] | None = getattr(self._local, "c", None)
        if cache is None:
            cache = self._local.c = {}
        comp = cache.get(dict_id)
        if comp is None:
            if dict_id > 0:
                comp = zstandard.ZstdCompressor(dict_data=self._dicts[dict_id])
            else:  # objects have their own xxh3 checksum; plain frames carry zstd's
                comp = zstandard.ZstdCompressor(level=self.level, write_checksum=dict_id < 0)
            cache[dict_id] = comp
        return comp

    def compress_plain(self, data: bytes) -> bytes:
        """A bare zstd frame (no tag, no dictionary): for the store's own bookkeeping values.
        It carries zstd's checksum of its content, which nothing else checks: a flipped bit
        in a big closure row decoded silently to other ids in 98% of places tried, and
        fails to decode with it."""
        return self._compressor(_PLAIN).compress(data)

    def compress_many(self, items: Sequence[bytes], dict_id: int = 0) -> list[bytes]:
        """Encode each item as a tagged blob."""
        return self.tag_frames(items, dict_id, self.compress_frames(items, dict_id))

    def compress_frames(
        self, items: Sequence[bytes], dict_id: int = 0, threads: int | None = None
    ) -> Sequence[Any]:
        """The bare zstd frame of each item (a buffer), for :meth:`tag_frames`: the part of
        :meth:`compress_many` that holds no GIL for long, so a writer's helper thread can run it
        beside the thread that writes rows. ``threads`` defaults to the codec's."""
        return self._frames(self._compressor(dict_id), items, threads)

    def compress_frames_with(
        self, dictionary: bytes, items: Sequence[bytes], threads: int | None = None
    ) -> Sequence[Any]:
        """:meth:`compress_frames` with a dictionary not added to this codec: one just trained,
        that the commit storing these frames stores too (and only then may it be used)."""
        zdict = zstandard.ZstdCompressionDict(dictionary)
        zdict.precompute_compress(level=self.level)
        return self._frames(zstandard.ZstdCompressor(dict_data=zdict), items, threads)

    def _frames(
        self, comp: zstandard.ZstdCompressor, items: Sequence[bytes], threads: int | None
    ) -> Sequence[Any]:
        threads = self.threads if threads is None else threads
        if len(items) >= _MULTI_MIN:  # in zstd's own threads, outside the GIL
            multi: Any = comp.multi_compress_to_buffer
            frames: Sequence[Any] = multi(list(items), threads=max(threads, 1))
            return frames
        return list(map(comp.compress, items))

    def tag_frames(
        self, items: Sequence[bytes], dict_id: int, frames: Sequence[Any]
    ) -> list[bytes]:
        """Tagged blobs from :meth:`compress_frames`' output; an item zstd cannot shrink is
        kept raw."""
        tag = _DICT_HEADER.pack(ZSTD_DICT, dict_id) if dict_id else bytes([ZSTD])
        raw_tag = bytes([RAW])
        room = len(tag)
        return [
            tag + packed if len(packed) + room < len(data) else raw_tag + data
            for data, packed in zip(items, frames, strict=True)
        ]

    def _decompressor(self, dict_id: int) -> zstandard.ZstdDecompressor:
        cache: dict[int, zstandard.ZstdDecompressor] | None = getattr(self._local, "d", None)
        if cache is None:
            cache = self._local.d = {}
        dec = cache.get(dict_id)
        if dec is None:
            if dict_id:
                zdict = self._dicts.get(dict_id)
                if zdict is None:
                    raise MissingDictionary(dict_id)
                dec = zstandard.ZstdDecompressor(dict_data=zdict)
            else:
                dec = zstandard.ZstdDecompressor()
            cache[dict_id] = dec
        return dec

    def decoder(self) -> Callable[[bytes], bytes]:
        """A decompress function bound to this thread's contexts (made once per thread)."""
        decode: Callable[[bytes], bytes] | None = getattr(self._local, "decode", None)
        if decode is None:
            decode = self._local.decode = self._make_decoder()
        return decode

    def _make_decoder(self) -> Callable[[bytes], bytes]:
        plain = self._decompressor(0).decompress
        by_dict: dict[int, Callable[[Any], bytes]] = {}
        unpack = _DICT_HEADER.unpack_from
        start = _DICT_HEADER.size

        def decode(blob: bytes) -> bytes:
            if not blob:
                raise CodecError("empty blob")
            tag = blob[0]
            try:
                if tag == ZSTD_DICT:
                    dict_id = unpack(blob)[1]
                    fn = by_dict.get(dict_id)
                    if fn is None:
                        fn = by_dict[dict_id] = self._decompressor(dict_id).decompress
                    return fn(memoryview(blob)[start:])
                if tag == ZSTD:
                    return plain(memoryview(blob)[1:])
                if tag == RAW:
                    return bytes(blob[1:])  # a copy: ``blob`` may be a view into the map
            except (zstandard.ZstdError, struct.error) as exc:
                raise CodecError(str(exc)) from None
            raise CodecError(f"unknown codec tag {tag}")

        return decode

    def dict_frame_decoder(self, dict_id: int) -> Callable[[Any], bytes]:
        """This thread's decompress for the bare zstd frame of a ``dict_id`` blob (the 5-byte
        tag already cut off): the hot path of bulk reads. Raises MissingDictionary."""
        return self._decompressor(dict_id).decompress

    def decompress_segments(self, dict_id: int, runs: Sequence[tuple[Any, bytes]]) -> list[Any]:
        """Decompress bare ``dict_id`` frames cut out of buffers, in calls that hold no GIL
        while zstd works: bulk reads run this on a helper thread while they read the next
        chunk. Returns sequences of decompressed segments, in the order of ``runs``.

        ``runs`` pairs a buffer with its frames' segments, native-endian (offset, length) u64
        pairs. Each call takes about ``_GROUP_BYTES`` of buffers, so its output stays a few
        hundred KB: one output of a whole chunk (megabytes, freed at once) made glibc raise its
        mmap threshold and keep the heap it then grew, 100 MB more with each 1M-object stream
        read. Raises CodecError (MissingDictionary when ``dict_id`` is not loaded)."""
        multi = self._decompressor(dict_id).multi_decompress_to_buffer
        collection = cast(Any, zstandard.BufferWithSegmentsCollection)  # untyped in stubs
        out = []
        group: list[Any] = []
        size = 0
        try:
            for buffer, offsets in runs:
                group.append(zstandard.BufferWithSegments(buffer, offsets))
                size += len(buffer)
                if size >= _GROUP_BYTES:
                    out.append(multi(collection(*group), threads=1))
                    group, size = [], 0
            if group:
                out.append(multi(collection(*group), threads=1))
        except (zstandard.ZstdError, ValueError) as exc:
            raise CodecError(str(exc)) from None
        return out

    def decompress(self, blob: bytes) -> bytes:
        """Inverse of :meth:`compress_many` for one blob."""
        return self.decoder()(blob)

    def decompress_plain(self, frame: bytes) -> bytes:
        """Inverse of :meth:`compress_plain`."""
        try:
            return self._decompressor(0).decompress(frame)
        except zstandard.ZstdError as exc:
            raise CodecError(str(exc)) from None


def dictionary_samples(items: Iterable[bytes]) -> list[bytes]:
    """The first DICT_MAX_SAMPLES items small enough to train a dictionary on."""
    small = (item for item in items if len(item) <= DICT_MAX_SAMPLE_BYTES)
    return list(islice(small, DICT_MAX_SAMPLES))


def train_dictionary(samples: Sequence[bytes], size: int = DICT_SIZE) -> bytes | None:
    """Train a zstd dictionary from sample objects; None when zstd finds nothing to learn.
    Holds no GIL while zstd trains."""
    picked: list[bytes | bytearray | memoryview] = list(dictionary_samples(samples))
    if len(picked) < 100:
        return None
    try:
        return zstandard.train_dictionary(size, picked, k=DICT_K, d=DICT_D).as_bytes()
    except zstandard.ZstdError:
        return None
