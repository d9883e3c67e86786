"""The LMDB backend's row formats: packs, closure encodings, object keys."""

from __future__ import annotations

import pytest
import xxhash
from hypothesis import given, settings
from hypothesis import strategies as st

from objstore.codec import Record
from objstore.compression import Codec, MissingDictionary
from objstore.engine.layout import (
    CLOSURE_COLUMNS,
    CLOSURE_COLUMNS_ZSTD,
    CLOSURE_HEAD,
    CLOSURE_JSON,
    CLOSURE_JSON_ZSTD,
    JSON_CLOSURE_MAX,
    LOC,
    MAX_KEY,
    U32,
    U64,
    closure_columns,
    decode_closure_head,
    encode_closures,
    id_chunks,
    object_key,
    object_keys,
    pack_frames,
)


def test_pack_frames_fill_packs_in_order_and_give_big_frames_their_own():
    frames = {b"a": b"x" * 40, b"b": b"y" * 30, b"c": b"z" * 100, b"d": b"w" * 10}
    packs, counts, locations = pack_frames([b"a", b"b", b"c", b"d"], frames, 7, limit=64)
    # a then b would pass 64 bytes: b starts pack 8; c is over the limit alone; d follows it
    assert [(U64.unpack(k)[0], len(v)) for k, v in packs] == [(7, 40), (8, 30), (9, 100), (10, 10)]
    packs, counts, locations = pack_frames([b"a", b"d", b"b", b"c"], frames, 1, limit=64)
    assert [v for _, v in packs] == [b"x" * 40 + b"w" * 10, b"y" * 30, b"z" * 100]
    assert [int.from_bytes(c, "big") for _, c in counts] == [2, 1, 1]
    assert locations[b"d"] == LOC.pack(1, 40, 10)
    assert locations[b"c"] == LOC.pack(3, 0, 100)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(1, 300), max_size=60), st.integers(1, 400))
def test_pack_frames_packs_like_the_greedy_loop(sizes, limit):
    digests = [i.to_bytes(4, "big") for i in range(len(sizes))]
    frames = {d: bytes([i % 251]) * n for i, (d, n) in enumerate(zip(digests, sizes, strict=True))}
    expected: list[list[bytes]] = []
    for d in digests:  # the reference: start a new pack when the next frame would not fit
        if not expected or (expected[-1] and sum(map(len, expected[-1])) + len(frames[d]) > limit):
            expected.append([])
        expected[-1].append(frames[d])
    packs, counts, locations = pack_frames(digests, frames, 5, limit=limit)
    assert [v for _, v in packs] == [b"".join(p) for p in expected]
    assert [U64.unpack(k)[0] for k, _ in packs] == list(range(5, 5 + len(expected)))
    assert [int.from_bytes(c, "big") for _, c in counts] == list(map(len, expected))
    for d in digests:
        number, offset, length = LOC.unpack(locations[d])
        assert packs[number - 5][1][offset : offset + length] == frames[d]


_ids = st.text("0123456789abcdef", min_size=1, max_size=32)


def _closure_record(n: int, closure: dict[str, int]) -> Record:
    return Record(f"o{n}", b"{}", n.to_bytes(16, "big"), closure)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.dictionaries(_ids, st.integers(1, 2**32 - 1), min_size=1, max_size=60)))
def test_closure_rows_decode_to_the_closures_columns(closures):
    """Every closure row decodes to its ids in the object's order and their depths, whichever
    encoding its size picked."""
    codec = Codec()
    records = [_closure_record(n, c) for n, c in enumerate(closures)]
    rows = encode_closures(records, codec, 0)
    assert set(rows) == {r.digest for r in records}
    for record, closure in zip(records, closures, strict=True):
        assert decode_closure_head(rows[record.digest], codec) == closure_columns(closure)


def test_each_closure_encoding_is_picked_by_size_and_decodes():
    codec = Codec()
    short = {"a": 1}  # a few bytes of JSON: kept as text
    medium = {f"{n:032x}": 1 for n in range(10)}  # over 128 bytes of JSON: compressed
    big = {f"{n:032x}": n % 7 + 1 for n in range(JSON_CLOSURE_MAX + 1)}  # too big for JSON
    closures = (short, medium, big)
    records = [_closure_record(n, c) for n, c in enumerate(closures)]
    rows = encode_closures(records, codec, 0)
    tags = [rows[r.digest][:1] for r in records]
    assert tags == [CLOSURE_JSON, CLOSURE_JSON_ZSTD, CLOSURE_COLUMNS_ZSTD]
    assert len(rows[records[2].digest]) < len("".join(big)) // 2  # compressed
    for record, closure in zip(records, closures, strict=True):
        assert decode_closure_head(rows[record.digest], codec) == closure_columns(closure)
    # uncompressed columns (rows no writer makes now) still decode
    count, joined, depths = closure_columns(big)
    plain = CLOSURE_COLUMNS + CLOSURE_HEAD.pack(count, len(joined)) + joined + depths
    assert decode_closure_head(plain, codec) == (count, joined, depths)


def test_closures_compressed_with_a_dictionary_need_it_to_decode():
    writer = Codec()
    dictionary = bytes(range(256)) * 40
    writer.add_dictionary(3, dictionary)
    closure = {f"{n:032x}": 2 for n in range(20)}
    row = encode_closures([_closure_record(0, closure)], writer, 3)[(0).to_bytes(16, "big")]
    assert row[:1] == CLOSURE_JSON_ZSTD
    reader = Codec()
    with pytest.raises(MissingDictionary):
        decode_closure_head(row, reader)
    reader.add_dictionary(3, dictionary)
    assert decode_closure_head(row, reader) == closure_columns(closure)


def test_object_keys_are_the_project_and_id_or_its_hash_when_too_long():
    pid = U32.pack(7)
    room = MAX_KEY - 2 - len(pid)  # the longest id kept as it is
    kept, hashed = "k" * room, "h" * (room + 1)
    assert object_key(pid, kept) == pid + kept.encode()
    assert object_key(pid, hashed) == pid + b"\xff" + xxhash.xxh3_128_digest(hashed.encode())
    assert len(object_key(pid, "é" * room)) <= MAX_KEY  # counted in bytes, not characters
    assert object_keys(pid, ["a", kept]) == [pid + b"a", pid + kept.encode()]
    assert object_keys(pid, ["a", hashed]) == [object_key(pid, "a"), object_key(pid, hashed)]
    assert object_keys(pid, []) == []
    with pytest.raises(TypeError, match="must be str, got int"):
        object_keys(pid, ["a", 5])  # type: ignore[list-item]


@settings(max_examples=200, deadline=None)
@given(st.lists(_ids, min_size=1, max_size=300), st.integers(1, 100))
def test_id_chunks_cut_joined_ids_into_whole_ids_in_order(ids, chunk):
    chunks = list(id_chunks("\n".join(ids).encode(), chunk))
    assert [i for c in chunks for i in c] == ids
    assert all(chunks)
    assert len(chunks) <= len(ids)


def test_id_chunks_cut_many_ids_into_about_chunk_sized_lists():
    ids = [f"{n:x}" * (n % 5 + 1) for n in range(10_000)]  # 1 to 20 characters
    chunks = list(id_chunks("\n".join(ids).encode(), 100))
    assert [i for c in chunks for i in c] == ids
    assert len(chunks) > 10
    assert max(map(len, chunks)) <= 4096  # a window of 4096 bytes holds fewer ids than that
