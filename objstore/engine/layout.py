"""How the LMDB backend lays out its rows: the named databases, their key and value formats,
and the encodings of packs and closures.

Databases (in one environment):

- ``projects``: project name -> 4-byte project number (never reused)
- ``objects``:  project number + id -> digest (16-byte xxh3-128 of the object's bytes) and the
  location of its stored frame: pack number, offset, length
- ``index``:    digest -> how many (project, id) rows use it, its raw length, its location;
  one entry per distinct byte string
- ``packs``:    pack number -> frames (codec-tagged, separately compressed objects) laid end to
  end, in arrival order; a pack holds about 64 KB
- ``packrefs``: pack number -> how many index entries still point into it
- ``closures``: pack number + offset of a frame -> that object's ``__closure``: its ids and
  depths (keyed by place, so a batch's closures append instead of touching random pages)
- ``meta``:     format version, project and pack counters, byte counters, zstd dictionaries

Packing many small frames into one value saves a B-tree lookup and a copy per object on
reads (an object's location rides in its ``objects`` row) and many page writes at ingest,
while every object stays separately decompressible, so a single ``get`` decodes one frame.
A pack is freed when its last entry goes; frames of deleted objects inside a live pack (one
whose other objects another project still uses) stay until the backend's ``compact``
rewrites it.

Nothing here opens a transaction (``present_rows`` is handed a reader's ``get``). A change to
any format here is a change of FORMAT_VERSION.
"""

from __future__ import annotations

import struct
from bisect import bisect_right
from collections.abc import Callable, Iterator, Sequence
from itertools import accumulate, repeat
from operator import sub
from typing import Any, NamedTuple

import msgspec
import xxhash

from objstore.codec import Record, id_type_error, split_array
from objstore.compression import Codec, CodecError

FORMAT_VERSION = 2
PACK_BYTES = 64 * 1024
MAX_KEY = 511  # LMDB's longest key
U32 = struct.Struct(">I")
U64 = struct.Struct(">Q")
LOC = struct.Struct(">QII")  # pack number, offset, length
ROW = struct.Struct(">16sQII")  # objects value: digest, then its location
REF = struct.Struct(">IQ")  # index value head: refcount, raw length; its location follows
INDEX_ROW = REF.size + LOC.size  # an index value's bytes: its head, then its location
DIGEST_SIZE = 16
PLACE = 12  # pack number and offset: where a frame starts, the key of its closure row
CLOSURE_HEAD = struct.Struct(">II")  # count, byte length of the joined ids

META_VERSION = b"version"
META_NEXT_PID = b"next_pid"
META_NEXT_PACK = b"next_pack"
META_RAW = b"raw_bytes"
META_STORED = b"stored_bytes"
META_DICT_CURRENT = b"dict:current"
META_DICT_NEXT_TRY = b"dict:next_try"
DICT_PREFIX = b"dict:id:"
FIRST_DICT = 1  # the id of a store's first dictionary (the only one trained so far)

_json_closure = msgspec.json.Decoder(dict[str, int])


def object_key(pid: bytes, object_id: str) -> bytes:
    """The ``objects`` key of an id in a project: the project number and the id's UTF-8, or
    its xxh3-128 digest when that would make the key too long for LMDB."""
    raw = object_id.encode()
    if len(raw) + len(pid) <= MAX_KEY - 2:
        return pid + raw
    # 0xff never occurs in UTF-8, so hashed keys cannot collide with plain ones
    return pid + b"\xff" + xxhash.xxh3_128_digest(raw)


def object_keys(pid: bytes, ids: list[str]) -> list[bytes]:
    """:func:`object_key` of each id, without a Python call per id when none needs hashing."""
    try:
        encoded = [i.encode() for i in ids]
    except AttributeError:  # an int, None or bytes among them
        raise id_type_error(ids) from None
    if encoded and max(map(len, encoded)) + len(pid) > MAX_KEY - 2:
        return [object_key(pid, i) for i in ids]
    return [pid + raw for raw in encoded]


class Rows(NamedTuple):
    """A chunk's object rows as columns: one flat unpack, no tuple per row (a tuple per row
    is an allocation the cyclic GC counts, and a 1M-object stream then triggers full passes
    over the heap)."""

    digests: tuple[bytes, ...]
    numbers: tuple[int, ...]  # pack
    offsets: tuple[int, ...]
    lengths: tuple[int, ...]


def present_rows(
    get: Callable[[bytes], Any], ids: list[str], keys: list[bytes]
) -> tuple[list[str], Rows]:
    """The ids found and their rows (digest, pack, offset, length), unpacked in one C call.

    ``get`` reads the objects table of a copying transaction: one ``get`` per key in request
    order, mapped in C, beats a sorted getmulti and beats views (a memoryview costs more to
    make than a 40-byte copy: 1.0 vs 1.6 us a row at a million objects). A row of the wrong
    size raises CodecError (or misreads, which the frame's checksum then catches): the
    careful path takes over."""
    rows = list(map(get, keys))
    if None in rows:  # absent ids are left out
        ids = [i for i, row in zip(ids, rows, strict=True) if row is not None]
        rows = [row for row in rows if row is not None]
    joined = b"".join(rows)
    if len(joined) != ROW.size * len(rows):
        raise CodecError("malformed object row")
    flat = struct.unpack(">" + ROW.format.lstrip(">") * len(rows), joined)
    return ids, Rows(flat[0::4], flat[1::4], flat[2::4], flat[3::4])


# A closure row starts with a tag byte saying how the rest is encoded.
CLOSURE_COLUMNS = b"\x00"  # count, joined ids and depths (closure_columns), as they are
CLOSURE_COLUMNS_ZSTD = b"\x01"  # the same, one bare zstd frame
CLOSURE_JSON = b"\x02"  # the closure's JSON text, as it is
CLOSURE_JSON_ZSTD = b"\x03"  # the JSON text as a codec blob (it may use a dictionary)
JSON_CLOSURE_MAX = 64 * 1024 // 40  # closures of up to this many ids keep their JSON text
_JSON_CLOSURE_PLAIN = 128  # JSON texts up to this many bytes are not worth compressing


def closure_columns(closure: dict[str, int]) -> tuple[int, bytes, bytes]:
    """(count, newline-joined ids, big-endian u32 depths) of a closure, ids in the order the
    object listed them: the form children streams read without building a dict."""
    joined = "\n".join(closure).encode()
    return len(closure), joined, struct.pack(f">{len(closure)}I", *closure.values())


def encode_big_closure(closure: dict[str, int], compress: Callable[[bytes], bytes]) -> bytes:
    """A closure too big for JSON rows, stored as its :func:`closure_columns`."""
    count, joined, depths = closure_columns(closure)
    return CLOSURE_COLUMNS_ZSTD + compress(CLOSURE_HEAD.pack(count, len(joined)) + joined + depths)


def encode_closures(records: Sequence[Record], codec: Codec, dict_id: int) -> dict[bytes, bytes]:
    """Closure rows for records, by digest: JSON (compressed with ``codec`` and ``dict_id``
    when long) or, for big closures, id columns."""
    small = [r for r in records if r.closure and len(r.closure) <= JSON_CLOSURE_MAX]
    values = {
        r.digest: encode_big_closure(r.closure, codec.compress_plain)
        for r in records
        if r.closure and len(r.closure) > JSON_CLOSURE_MAX
    }
    if not small:
        return values
    # every small closure's JSON in one encode, cut back apart in one decode
    encoded = msgspec.json.encode([r.closure for r in small])
    texts = list(map(bytes, split_array(encoded)))
    rows = list(map(CLOSURE_JSON.__add__, texts))
    medium = [i for i, text in enumerate(texts) if len(text) > _JSON_CLOSURE_PLAIN]
    if medium:
        packed = codec.compress_many([texts[i] for i in medium], dict_id)
        for i, blob in zip(medium, packed, strict=True):
            rows[i] = CLOSURE_JSON_ZSTD + blob
    values.update(zip([r.digest for r in small], rows, strict=True))
    return values


def decode_closure_head(value: bytes, codec: Codec) -> tuple[int, bytes, bytes]:
    """:func:`closure_columns` of a closure row. Raises MissingDictionary (a
    CLOSURE_JSON_ZSTD row whose dictionary ``codec`` has not loaded) or CodecError."""
    tag = value[:1]
    if tag in (CLOSURE_JSON, CLOSURE_JSON_ZSTD):
        text = value[1:] if tag == CLOSURE_JSON else codec.decompress(value[1:])
        return closure_columns(_json_closure.decode(text))
    payload = value[1:] if tag == CLOSURE_COLUMNS else codec.decompress_plain(value[1:])
    count, length = CLOSURE_HEAD.unpack_from(payload)
    start = CLOSURE_HEAD.size
    return count, payload[start : start + length], payload[start + length :]


def closure_dict(count: int, joined: bytes, depths: bytes) -> dict[str, int]:
    """The closure :func:`closure_columns` made these columns from."""
    if not count:
        return {}
    ids = joined.decode().split("\n")
    return dict(zip(ids, struct.unpack(f">{count}I", depths), strict=True))


def id_chunks(joined: bytes, chunk: int) -> Iterator[list[str]]:
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


def pack_stops(sizes: Sequence[int], limit: int = PACK_BYTES) -> list[int]:
    """Where each pack ends (an index into ``sizes``) when frames of these sizes are laid end
    to end, in order, in packs of about ``limit`` bytes: the next frame starts a new pack when
    it would take this one past ``limit``, and a frame bigger than ``limit`` gets a pack of its
    own. Python loops once per pack, not per frame."""
    return _stops(list(accumulate(sizes)), limit)


def _stops(ends: list[int], limit: int) -> list[int]:
    """:func:`pack_stops` from where each frame ends, as if all were one pack."""
    stops: list[int] = []
    start = base = 0
    while start < len(ends):
        stop = max(bisect_right(ends, base + limit, start), start + 1)
        stops.append(stop)
        base = ends[stop - 1]
        start = stop
    return stops


def pack_frames(
    digests: Sequence[bytes], frames: dict[bytes, bytes], first: int, limit: int = PACK_BYTES
) -> tuple[list[tuple[bytes, bytes]], list[tuple[bytes, bytes]], dict[bytes, bytes]]:
    """The frames of ``digests``, in order, laid in packs (:func:`pack_stops`) numbered from
    ``first``. Returns the pack rows, their live-entry counts and each digest's location."""
    blobs = list(map(frames.__getitem__, digests))
    sizes = list(map(len, blobs))
    ends = list(accumulate(sizes))  # where each frame ends, as if all were one pack
    packs: list[tuple[bytes, bytes]] = []
    counts: list[tuple[bytes, bytes]] = []
    numbers: list[int] = []
    bases: list[int] = []  # where each frame's pack starts, on the same scale as ``ends``
    start = 0
    for number, stop in enumerate(_stops(ends, limit), first):
        key = U64.pack(number)
        packs.append((key, b"".join(blobs[start:stop])))
        counts.append((key, U32.pack(stop - start)))
        numbers.extend(repeat(number, stop - start))
        bases.extend(repeat(ends[start - 1] if start else 0, stop - start))
        start = stop
    offsets = map(sub, map(sub, ends, sizes), bases)
    return packs, counts, dict(zip(digests, map(LOC.pack, numbers, offsets, sizes), strict=True))
