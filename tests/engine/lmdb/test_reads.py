"""Reads: single and bulk, their helper threads and views, and the damage they name."""

from __future__ import annotations

import contextlib
import json
import os
import random
import threading
import tracemalloc

import pytest
import xxhash

import objstore
from objstore import errors, graphgen
from objstore.codec import digest_of
from objstore.compression import ZSTD_DICT
from objstore.engine.layout import LOC, U64
from objstore.engine.lmdb import LMDBBackend, reads

from ..damage import corrupt, frame, raw_put, replace_frame
from .helpers import children_in_order, map_size, padded


def test_corrupt_compressed_frame_raises(tmp_path):
    with objstore.open(tmp_path / "s") as store:
        big = json.dumps({"id": "big", "v": ["same"] * 500}).encode()
        store.put("p", b"[" + big + b"]")
        backend = store.backend
        assert isinstance(backend, LMDBBackend)
        digest = digest_of(big)
        blob = frame(backend, digest)
        replace_frame(backend, digest, blob[:5] + b"garbage" + blob[12:])
        with pytest.raises(errors.CorruptObject):
            store.get("p", "big")
        assert not store.verify().ok


def test_empty_stored_value_is_reported_as_corrupt_in_batch_reads(tmp_path):
    with objstore.open(tmp_path / "s") as store:
        store.put("p", b'[{"id":"a","v":1},{"id":"b","v":2}]')
        backend = store.backend
        assert isinstance(backend, LMDBBackend)
        replace_frame(backend, digest_of(b'{"id":"a","v":1}'), b"")
        with pytest.raises(errors.CorruptObject):
            list(store.get_many("p", ["a", "b"]))
        with pytest.raises(errors.CorruptObject):
            store.get("p", "a")


def test_a_malformed_object_row_is_reported_as_corrupt(tmp_path):
    with objstore.open(tmp_path / "s") as store:
        store.put("p", b'[{"id":"a","v":1},{"id":"b","v":2}]')
        backend = store.backend
        assert isinstance(backend, LMDBBackend)
        raw_put(backend, "objects", b"\x00\x00\x00\x01a", b"too short")
        with pytest.raises(errors.CorruptObject, match="'a'"):
            store.get("p", "a")
        with pytest.raises(errors.CorruptObject, match="'a'"):
            list(store.get_many("p", ["b", "a"]))
        assert store.get("p", "b") == b'{"id":"b","v":2}'


def test_object_rows_of_wrong_sizes_that_add_up_are_still_caught(tmp_path):
    """Bulk reads unpack rows joined end to end; a short row next to a long one must not
    shift the others into a plausible read."""
    with objstore.open(tmp_path / "s") as store:
        store.put("p", b'[{"id":"a","v":1},{"id":"b","v":2}]')
        backend = store.backend
        assert isinstance(backend, LMDBBackend)
        with backend._read() as txn:
            row_a = bytes(txn.get(b"\x00\x00\x00\x01a", db=backend._objects))
            row_b = bytes(txn.get(b"\x00\x00\x00\x01b", db=backend._objects))
        raw_put(backend, "objects", b"\x00\x00\x00\x01a", row_a[:-1])
        raw_put(backend, "objects", b"\x00\x00\x00\x01b", row_b + b"\x00")
        with pytest.raises(errors.CorruptObject, match="'a'"):
            list(store.get_many("p", ["a", "b"]))


@contextlib.contextmanager
def _dictionary_store(tmp_path, seed):
    """A store whose objects are dictionary frames (what bulk reads decode on their fast path)."""
    g = graphgen.generate(3000, seed=seed)
    with objstore.open(tmp_path / "s", dictionary_threshold=500) as store:
        store.put("p", b"[" + b",".join(d for _, d in g.objects) + b"]")
        backend = store.backend
        assert isinstance(backend, LMDBBackend)
        yield store, backend, g


def test_bulk_reads_name_a_damaged_dictionary_frame(tmp_path):
    with _dictionary_store(tmp_path, 5) as (store, backend, g):
        victim_id, victim = g.objects[len(g.objects) // 2]
        digest = digest_of(victim)
        assert frame(backend, digest)[0] == ZSTD_DICT
        corrupt(backend, digest)
        with pytest.raises(errors.CorruptObject, match=victim_id):
            list(store.iter_with_children("p", g.root_id))
        with pytest.raises(errors.CorruptObject, match=victim_id):
            list(store.get_many("p", [i for i, _ in g.objects]))
        others = {i: d for i, d in g.objects if i != victim_id}
        assert dict(store.get_many("p", list(others))) == others


def test_bulk_reads_find_a_missing_pack(tmp_path):
    with _dictionary_store(tmp_path, 6) as (store, backend, g):
        with backend._write() as txn:
            txn.delete(U64.pack(2), db=backend._packs)
        with pytest.raises(errors.CorruptObject, match="pack 2 is missing"):
            list(store.iter_with_children("p", g.root_id))


def test_bulk_reads_refuse_a_valid_frame_of_other_bytes(tmp_path):
    with _dictionary_store(tmp_path, 7) as (store, backend, g):
        (victim_id, victim), (_, other) = g.objects[100], g.objects[101]
        swapped = frame(backend, digest_of(other))  # decodes cleanly, to the wrong bytes
        assert swapped[0] == ZSTD_DICT
        replace_frame(backend, digest_of(victim), swapped)
        with pytest.raises(errors.CorruptObject, match="checksum mismatch") as info:
            list(store.iter_with_children("p", g.root_id))
        assert victim_id in str(info.value)


def _spy(monkeypatch, owner, name):
    """Record each call of ``owner.name`` and let it run."""
    calls = []
    real = getattr(owner, name)

    def spy(*args):
        calls.append(args)
        return real(*args)

    monkeypatch.setattr(owner, name, spy)
    return calls


def test_bulk_reads_choose_helper_copies_or_views_by_where_objects_lie(tmp_path, monkeypatch):
    with _dictionary_store(tmp_path, 8) as (store, backend, g):
        helped = _spy(monkeypatch, backend._codec, "decompress_segments")
        viewed = _spy(monkeypatch, backend, "_views_of")
        near = g.objects[:400]  # stored together: a few packs, a chunk worth a hand-off
        assert dict(store.get_many("p", [i for i, _ in near])) == dict(near)
        assert (len(helped), len(viewed)) == (1, 0)  # the helper gets copied packs
        small = g.objects[:100]  # near, but too few to hand off: decoded here from copies
        assert dict(store.get_many("p", [i for i, _ in small])) == dict(small)
        assert (len(helped), len(viewed)) == (1, 0)
        scattered = g.objects[::150]  # about one object a pack: decoded here, through views
        assert dict(store.get_many("p", [i for i, _ in scattered])) == dict(scattered)
        assert (len(helped), len(viewed)) == (1, 1)


def test_a_consumer_can_grow_the_map_between_chunks_of_a_stream(tmp_path):
    """A chunk read ahead holds no transaction: a write that must grow the map (which waits
    for every reader of this process) goes through while the stream is suspended."""
    g = graphgen.generate(3000, seed=9)
    rng = random.Random(9)
    big = [padded(f"big{i}", rng) for i in range(3000)]  # about 3 MB, poorly compressible
    with objstore.open(tmp_path / "s", dictionary_threshold=500, map_size=4 << 20) as store:
        store.put("p", b"[" + b",".join(d for _, d in g.objects) + b"]")
        size = map_size(store)
        stream = store.iter_with_children("p", g.root_id)
        got = [next(stream) for _ in range(1500)]  # into the first chunk; the next is read
        writer = threading.Thread(target=store.put, args=("q", big), daemon=True)
        writer.start()
        writer.join(timeout=30)
        assert not writer.is_alive(), "the write waited on the suspended stream"
        assert map_size(store) > size
        got += list(stream)
        assert got == children_in_order(g)
        assert store.count("q") == len(big)


def test_bulk_reads_of_only_absent_ids_in_a_dictionary_store_return_nothing(tmp_path):
    with _dictionary_store(tmp_path, 11) as (store, _, g):
        assert list(store.get_many("p", [f"absent{i}" for i in range(600)])) == []
        present = g.objects[:300]
        asked = [i for i, _ in present] + [f"absent{i}" for i in range(300)]
        assert dict(store.get_many("p", asked)) == dict(present)


def test_bulk_reads_name_an_object_whose_row_points_outside_its_pack(tmp_path):
    with _dictionary_store(tmp_path, 12) as (store, backend, g):
        victim_id = g.objects[50][0]
        with backend._write() as txn:
            key = b"\x00\x00\x00\x01" + victim_id.encode()
            row = bytes(txn.get(key, db=backend._objects))
            number = LOC.unpack_from(row, 16)[0]
            txn.put(key, row[:16] + LOC.pack(number, 1 << 20, 100), db=backend._objects)
        with pytest.raises(errors.CorruptObject, match=victim_id):
            list(store.get_many("p", [i for i, _ in g.objects[:400]]))


def test_objects_stored_before_the_dictionary_stream_through_the_fallback(tmp_path):
    g = graphgen.generate(3000, seed=10)
    with objstore.open(tmp_path / "s", dictionary_threshold=1500) as store:
        store.put("p", b"[" + b",".join(d for _, d in g.objects[:1000]) + b"]")  # no dict yet
        store.put("p", b"[" + b",".join(d for _, d in g.objects[1000:]) + b"]")
        assert list(store.iter_with_children("p", g.root_id)) == children_in_order(g)


def _mesh(object_id: str, raw_bytes: int) -> bytes:
    """An object of about ``raw_bytes`` that compresses about 2x (hex of random bytes)."""
    return json.dumps({"id": object_id, "vertices": os.urandom(raw_bytes // 2).hex()}).encode()


def _meshes_under_a_root(store, count: int, raw_bytes: int) -> list[tuple[str, bytes]]:
    meshes = [(f"mesh{i}", _mesh(f"mesh{i}", raw_bytes)) for i in range(count)]
    for start in range(0, count, 20):
        store.put("p", [d for _, d in meshes[start : start + 20]])
    root = {"id": "root", "__closure": {i: 1 for i, _ in meshes} | {"ghost": 1}}
    store.put("p", [json.dumps(root).encode()])
    return meshes


def test_a_chunk_of_big_objects_is_read_in_parts_within_the_byte_budget(tmp_path, monkeypatch):
    monkeypatch.setattr(reads, "CHUNK_STORED_BYTES", 60_000)
    with objstore.open(tmp_path / "s", dictionary_threshold=10**9) as store:
        meshes = _meshes_under_a_root(store, 40, 50_000)  # ~25 KB stored each: 2 a part
        backend = store.backend
        ids = [i for i, _ in meshes]
        lists = list(backend.read_chunks("p", [ids[:25], ["absent", *ids[25:]]]))
        assert [pair for pairs in lists for pair in pairs] == meshes
        assert [len(pairs) for pairs in lists] == [2] * 12 + [1] + [2] * 7 + [1]
        assert backend.read_chunk("p", ids) == meshes  # the list API joins the parts
        stream = store.iter_with_children("p", "root")
        assert list(stream)[1:] == meshes
        assert (stream.found, stream.missing) == (40, 1)


def test_a_children_stream_of_big_objects_holds_a_budget_not_a_chunk(tmp_path):
    """200 objects of 400 KB are one 2,048-id chunk: read whole, 80 MB would be decoded at
    once; within the 4 MB stored budget (about 8 MB decoded) only a part or two is."""
    with objstore.open(tmp_path / "s") as store:
        meshes = _meshes_under_a_root(store, 200, 400_000)
        tracemalloc.start()
        try:
            stream = store.iter_with_children("p", "root")
            next(stream)
            base = tracemalloc.get_traced_memory()[0]
            tracemalloc.reset_peak()
            count = 0
            for object_id, data in stream:
                assert data == meshes[count][1], object_id
                count += 1
            peak = tracemalloc.get_traced_memory()[1] - base
        finally:
            tracemalloc.stop()
        assert count == 200
        assert peak < 30_000_000, f"a stream of 80 MB held {peak / 1e6:.0f} MB at once"


def test_views_are_only_taken_on_the_same_snapshot(tmp_path):
    with objstore.open(tmp_path / "s") as store:
        store.put("p", [b'{"id":"a"}'])
        backend = store.backend
        assert isinstance(backend, LMDBBackend)
        txn = backend._begin_read()
        try:
            views = backend._views_of(txn)
            assert views is not None and views.id() == txn.id()
            views.abort()
            store.put("p", [b'{"id":"b"}'])  # a commit after ``txn`` began
            assert backend._views_of(txn) is None
        finally:
            backend._end_read(txn)


@pytest.mark.parametrize(
    "row",
    [b'\x02{"c1":1,', b'\x02{"c1":"x"}', b"\x00" + b"\0\0\0\3\0\0\0\2c1" + b"\0\0\0\1", b"\x07"],
    ids=["cut-json", "bad-depth", "columns-disagree", "unknown-tag"],
)
def test_a_damaged_closure_row_is_the_objects_corruption(tmp_path, row):
    """A closure row that does not decode, or whose columns disagree (count, ids, depths),
    raises CorruptObject naming the object from closure and the children stream, as damaged
    bytes do; they raised msgspec's, struct's or zip's errors."""
    with objstore.open(tmp_path / "s") as store:
        store.put("p", [b'{"id":"c1"}', b'{"id":"r","__closure":{"c1":1}}'])
        backend = store.backend
        assert isinstance(backend, LMDBBackend)
        with backend._read() as txn:
            place = bytes(txn.get(b"\0\0\0\1r", db=backend._objects))[16:28]
        raw_put(backend, "closures", place, row)
        with pytest.raises(errors.CorruptObject, match=r"'r'.*closure row"):
            store.closure("p", "r")
        with pytest.raises(errors.CorruptObject, match=r"'r'.*closure row"):
            list(store.iter_with_children("p", "r"))
        assert store.get("p", "r") == b'{"id":"r","__closure":{"c1":1}}'


def test_a_cut_object_row_is_corruption_for_closures_too(tmp_path):
    """A row cut short made LMDB's BadValsizeError escape closure(): the place it names
    is no key."""
    with objstore.open(tmp_path / "s") as store:
        store.put("p", [b'{"id":"c1"}', b'{"id":"r","__closure":{"c1":1}}'])
        raw_put(store.backend, "objects", b"\0\0\0\1r", b"\1" * 16)
        with pytest.raises(errors.CorruptObject, match=r"'r'.*malformed object row"):
            store.closure("p", "r")


def test_a_flipped_bit_in_a_big_closure_row_is_the_objects_corruption(tmp_path):
    """A closure of thousands of ids is stored as a zstd frame. A bit flipped inside it
    decoded to other ids, served as the closure, before the frame carried zstd's checksum."""
    ids = [xxhash.xxh3_128_hexdigest(b"%d" % n) for n in range(2000)]
    children = [b'{"id":"%s"}' % i.encode() for i in ids]
    root = json.dumps({"id": "r", "__closure": dict.fromkeys(ids, 1)}).encode()
    with objstore.open(tmp_path / "s") as store:
        store.put("p", [*children, root])
        backend = store.backend
        assert isinstance(backend, LMDBBackend)
        with backend._read() as txn:
            place = bytes(txn.get(b"\0\0\0\1r", db=backend._objects))[16:28]
            row = bytearray(txn.get(place, db=backend._closures))
        assert row[:1] == b"\x01"  # id columns, one zstd frame
        row[len(row) // 2] ^= 0x10  # inside the ids' literals, as most of the frame is
        raw_put(backend, "closures", place, bytes(row))
        with pytest.raises(errors.CorruptObject, match=r"'r'.*closure row"):
            store.closure("p", "r")
        with pytest.raises(errors.CorruptObject, match=r"'r'.*closure row"):
            list(store.iter_with_children("p", "r"))
