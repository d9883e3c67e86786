"""Checks against the objects' bytes: verify's row checks, and repair_rows."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import objstore
from objstore import errors, graphgen
from objstore.codec import digest_of, json_array
from objstore.engine.lmdb import LMDBBackend

from ..damage import raw_put, replace_frame
from .helpers import holding


def _object_row(backend: LMDBBackend, key: bytes) -> bytes:
    with backend._read() as txn:
        return bytes(txn.get(key, db=backend._objects))


def test_verify_names_an_object_row_under_another_id_than_its_object_carries(tmp_path):
    """A flipped bit in an ``objects`` key moves an object to an id nobody asked for: its own
    id then reads as missing while every checksum still holds. verify compares each row's
    id with the one its object's bytes carry."""
    with objstore.open(tmp_path / "s") as store:
        store.put("p", [b'{"id":"abc","v":1}', b'{"id":"abd","v":2}'])
        store.put("q", [b'{"id":"abc","v":1}'])  # the same bytes in a second project
        backend = store.backend
        assert isinstance(backend, LMDBBackend)
        assert store.verify().ok
        row = _object_row(backend, b"\0\0\0\1abc")
        with backend._write() as txn:
            txn.delete(b"\0\0\0\1abc", db=backend._objects)
            txn.put(b"\0\0\0\1abu", row, db=backend._objects)
        assert store.get("p", "abc") is None  # what a reader sees: no error, the object gone
        report = store.verify()
        assert report.problems == [
            "object row b'\\x00\\x00\\x00\\x01abu': under another id than its object's 'abc'"
        ]
        assert report.disagreeing == 1
        assert store.repair_rows() == 1 and store.recount() == 0
        assert store.get("p", "abc") == b'{"id":"abc","v":1}' and store.get("p", "abu") is None
        assert store.verify().ok and store.count("p") == 2


def test_verify_names_a_moved_row_that_is_the_only_one_of_its_object(tmp_path):
    with holding(tmp_path / "s", b'{"id":"abc","v":1}') as (store, backend):
        row = _object_row(backend, b"\0\0\0\1abc")
        with backend._write() as txn:
            txn.delete(b"\0\0\0\1abc", db=backend._objects)
            txn.put(b"\0\0\0\1abs", row, db=backend._objects)
        assert store.verify().problems == [
            "object row b'\\x00\\x00\\x00\\x01abs': under another id than its object's 'abc'"
        ]


def test_verify_compares_each_closure_row_with_its_objects_closure(tmp_path):
    """Closure rows carry no checksum of their own: a changed id or depth in one makes
    children streams and closures wrong, silently. verify reads each object's ``__closure``
    from its (checksummed) bytes and compares: a row that disagrees, one missing, and one
    where the object has no ``__closure`` are each named."""
    parent = b'{"id":"parent","__closure":{"c1":1,"c2":2}}'
    other = b'{"id":"other","__closure":{"c1":1}}'
    leaf = b'{"id":"c1","v":1}'
    with holding(tmp_path / "s", leaf, b'{"id":"c2","v":2}', parent, other) as (store, backend):
        assert store.verify().ok

        def place(object_id: str) -> bytes:
            return _object_row(backend, b"\0\0\0\1" + object_id.encode())[16:28]

        with backend._write() as txn:
            txn.put(place("parent"), b'\x02{"c1":1,"c3":2}', db=backend._closures)
            txn.delete(place("other"), db=backend._closures)
            txn.put(place("c1"), b'\x02{"c2":1}', db=backend._closures)
        assert store.closure("p", "parent") == {"c1": 1, "c3": 2}  # served as it is
        said = "\n".join(store.verify().problems)
        assert "object 'parent' (blob " in said
        assert "its closure row disagrees with its __closure" in said
        assert "object 'other' (blob " in said and "its __closure has no closure row" in said
        assert "object 'c1' (blob " in said and "a closure row, where it has no __closure" in said
        assert len(store.verify().problems) == 3 and store.verify().disagreeing == 3
        assert store.repair_rows() == 3 and store.recount() == 0
        assert store.verify().ok
        assert store.closure("p", "parent") == {"c1": 1, "c2": 2}
        assert store.closure("p", "other") == {"c1": 1} and store.closure("p", "c1") == {}
        assert dict(store.iter_with_children("p", "parent")) == {
            "parent": parent, "c1": leaf, "c2": b'{"id":"c2","v":2}',
        }  # fmt: skip
        assert store.repair_rows() == 0  # nothing left to rewrite


_FLIP_READ_VERIFY = """
import json, random, shutil, sys
from pathlib import Path
import lmdb
import objstore
from objstore import errors, graphgen

base, work, root, first, copies, bits = sys.argv[1:7]
stored = dict(graphgen.read_dump(Path(work) / "stored.dump"))
env = lmdb.open(base, readonly=True, lock=False)
last, page = env.info()["last_pgno"], env.stat()["psize"]
env.close()
for seed in range(int(first), int(first) + int(copies)):
    rng = random.Random(seed)
    path = Path(work) / f"copy{seed}"
    path.mkdir()
    shutil.copyfile(Path(base) / "data.mdb", path / "data.mdb")
    with open(path / "data.mdb", "r+b") as f:
        for _ in range(int(bits)):  # past the two meta pages, inside the used ones
            at = rng.randrange(2 * page, (last + 1) * page)
            f.seek(at)
            byte = f.read(1)[0]
            f.seek(at)
            f.write(bytes([byte ^ (1 << rng.randrange(8))]))
    seen = {"seed": seed, "wrong": [], "bare": [], "verified": None}

    def attempt(what, read):
        try:
            read()
        except errors.ObjstoreError:
            pass
        except Exception as exc:
            seen["bare"].append(f"{what}: {type(exc).__name__}: {exc}"[:300])

    try:
        store = objstore.open(path)
    except errors.ObjstoreError:
        print(json.dumps(seen), flush=True)
        continue

    def each():
        for i, data in stored.items():
            attempt("get", lambda: store.get("p", i) == data or seen["wrong"].append("get " + i))

    def many():
        got = dict(store.get_many("p", list(stored)))
        if got != stored:
            seen["wrong"].append("get_many")

    def stream():
        got = dict(store.iter_with_children("p", root))
        if got != stored:
            seen["wrong"].append("children stream")

    def closures():
        for i, data in stored.items():
            want = json.loads(data).get("__closure", {})
            attempt("closure", lambda: store.closure("p", i) == want
                    or seen["wrong"].append("closure " + i))

    def has():
        if not all(store.has("p", list(stored)).values()):
            seen["wrong"].append("has")

    reads = (("get", each), ("get_many", many), ("stream", stream),
             ("closure", closures), ("has", has))
    for what, read in reads:
        attempt(what, read)
    try:
        seen["verified"] = store.verify().ok
    except Exception as exc:
        seen["bare"].append(f"verify: {type(exc).__name__}: {exc}"[:300])
    if seen["verified"] is False:  # what verify --repair does, then everything again
        first = seen["wrong"]
        seen["wrong"] = []
        attempt("repair", lambda: (store.repair_rows(), store.recount()))
        for what, read in reads:
            attempt(what, read)
        seen["repaired"] = store.verify().ok
        seen["wrong"], seen["wrong_after_repair"] = first, seen["wrong"]
    store.close()
    shutil.rmtree(path)
    print(json.dumps(seen), flush=True)
"""


def test_a_flipped_bit_anywhere_is_read_right_refused_or_found_by_verify(tmp_path):
    """One random bit flipped in a store's used pages, in each of 40 copies (LMDB keeps no
    checksums; objstore checksums an object's bytes, and verify checks the rows around them
    against those bytes). Every read returns what was stored, or raises an objstore error;
    no read raises a bare error; whenever a read went wrong, verify says so; and where
    verify is ok after verify --repair's steps, every read is right again. Run in a process
    of its own, where a crash on a damaged page would fail the test, not end it.
    Before eec77c5, 22 of 150 such copies read wrong with verify ok."""
    g = graphgen.generate(400, seed=12)
    base = tmp_path / "base"
    with objstore.open(base, map_size=1 << 20) as store:
        store.put("p", json_array([d for _, d in g.objects]))
        store.put("q", json_array([d for _, d in g.objects[:150]]))
    graphgen.write_dump(g.objects, tmp_path / "stored.dump")
    args = [str(base), str(tmp_path), g.root_id, "0", "40", "1"]
    proc = subprocess.run(
        [sys.executable, "-c", _FLIP_READ_VERIFY, *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-5000:]
    copies = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(copies) == 40
    for copy in copies:
        assert copy["bare"] == [], copy
        if copy["wrong"]:
            assert copy["verified"] is False, copy
        if copy.get("repaired"):  # verify ok after a repair: every read right again
            assert copy["wrong_after_repair"] == [], copy
    # the flips reach what matters: some copies read wrong, so verify had to find them, and
    # a repair mends some of those (the rows it derives; not a damaged object or B-tree page)
    assert sum(bool(c["wrong"]) for c in copies) >= 2, copies
    assert sum(bool(c["wrong"]) and c.get("repaired") is True for c in copies) >= 1, copies


def test_repair_rows_drops_a_moved_row_whose_id_is_taken_and_mends_a_damaged_closure_row(
    tmp_path,
):
    """A row under another id, whose own id the project already holds, is dropped (the id
    keeps its row), and a closure row that does not decode is written again from its
    object."""
    with objstore.open(tmp_path / "s") as store:
        store.put("p", [b'{"id":"a","v":1}', b'{"id":"b","v":2}'])
        store.put("p", [b'{"id":"r","__closure":{"a":1}}'])
        backend = store.backend
        assert isinstance(backend, LMDBBackend)
        row_a = _object_row(backend, b"\0\0\0\1a")
        raw_put(backend, "objects", b"\0\0\0\1q", row_a)  # a copy of a's row under "q"
        place = _object_row(backend, b"\0\0\0\1r")[16:28]
        raw_put(backend, "closures", place, b'\x02{"a":')
        with pytest.raises(errors.CorruptObject):
            store.closure("p", "r")
        report = store.verify()
        assert report.disagreeing == 2 and report.miscounted == 1, report.problems
        assert store.repair_rows() == 2 and store.recount() == 0  # the copy held no count
        assert store.verify().ok
        assert store.get("p", "q") is None and store.get("p", "a") == b'{"id":"a","v":1}'
        assert store.closure("p", "r") == {"a": 1}
        assert store.count("p") == 3


def test_repair_rows_leaves_an_object_whose_bytes_are_damaged(tmp_path):
    """Rows are derived from an object's bytes only when they pass their checksum."""
    with holding(tmp_path / "s", b'{"id":"a","v":1}', b'{"id":"r","__closure":{"a":1}}') as (
        store,
        backend,
    ):
        r_digest = digest_of(b'{"id":"r","__closure":{"a":1}}')
        replace_frame(backend, r_digest, b"\x00" + b'{"id":"r","__closure":{"b":1}}')
        place = _object_row(backend, b"\0\0\0\1r")[16:28]
        raw_put(backend, "closures", place, b'\x02{"z":1}')
        assert store.repair_rows() == 0
        assert not store.verify().ok
        assert store.closure("p", "r") == {"z": 1}  # left as it was


def _edit_file(store_dir, old: bytes, new: bytes) -> None:
    """Change bytes in a closed store's data file, as a failing disk would: wherever ``old``
    occurs (a page a commit replaced may hold it too). Stores made for it are opened with a
    small map, so the file is small."""
    data = store_dir / "data.mdb"
    raw = data.read_bytes()
    assert old in raw and len(old) == len(new)
    data.write_bytes(raw.replace(old, new))


def test_keys_out_of_order_are_reported_and_block_a_repair_of_rows_beside_them(tmp_path):
    """A key changed in place to sort after its neighbours breaks the B-tree's order:
    lookups near it miss rows that a cursor still walks. verify names the table; repair,
    whose writes there would spread the damage, refuses with StoreCorrupt and changes
    nothing."""
    ids = [f"key-{n:04}" for n in range(40)]
    with objstore.open(tmp_path / "s", map_size=1 << 20) as store:
        store.put("p", [json.dumps({"id": i}).encode() for i in ids])
        backend = store.backend
        assert isinstance(backend, LMDBBackend)
        row = _object_row(backend, b"\0\0\0\1key-0001")
        raw_put(backend, "objects", b"\0\0\0\1stray", row)  # a row for repair to move
    _edit_file(tmp_path / "s", b"\0\0\0\1key-0002", b"\0\0\0\1key-0092")
    with objstore.open(tmp_path / "s") as store:
        report = store.verify()
        said = "\n".join(report.problems)
        assert "the objects table's key b'\\x00\\x00\\x00\\x01key-0003' follows" in said
        assert "out of order, a damaged B-tree page (lookups near it can miss rows)" in said
        with pytest.raises(errors.StoreCorrupt, match=r"objects table.*repair cannot rewrite"):
            store.repair_rows()
        assert store.verify().problems == report.problems  # nothing changed


def test_a_closure_table_out_of_order_or_with_rows_where_no_object_is_is_rebuilt(tmp_path):
    """The closure table is derived from the objects whole: a key of it damaged out of
    order, and a row at a place where no object is, are rebuilt away by repair_rows."""
    objs = [b'{"id":"c%d"}' % n for n in range(30)]
    parents = [b'{"id":"r%d","__closure":{"c%d":1}}' % (n, n) for n in range(30)]
    with objstore.open(tmp_path / "s", map_size=1 << 20) as store:
        store.put("p", objs + parents)
        backend = store.backend
        assert isinstance(backend, LMDBBackend)
        places = [_object_row(backend, b"\0\0\0\1r%d" % n)[16:28] for n in range(30)]
        raw_put(backend, "closures", b"\x7f" * 12, b'\x02{"x":1}')  # where nothing is
    assert places == sorted(places)
    # a leaf node holds its key, then its value: the sixth key's offset made to sort last
    row = b'\x02{"c5":1}'
    _edit_file(tmp_path / "s", places[5] + row, places[5][:8] + b"\xff" + places[5][9:] + row)
    with objstore.open(tmp_path / "s") as store:
        report = store.verify()
        said = "\n".join(report.problems)
        assert "the closures table's key" in said and "out of order" in said
        assert "closure row b'\\x7f" in said and "no object is stored there" in said
        assert report.disagreeing >= 2
        assert store.repair_rows() >= 2 and store.recount() == 0
        assert store.verify().ok
        for n in range(30):
            assert store.closure("p", f"r{n}") == {f"c{n}": 1}


def test_an_object_row_whose_location_disagrees_is_set_to_its_index_entrys(tmp_path):
    with holding(tmp_path / "s", b'{"id":"a","v":1}', b'{"id":"b","v":2}') as (store, backend):
        row_a = _object_row(backend, b"\0\0\0\1a")
        row_b = _object_row(backend, b"\0\0\0\1b")
        raw_put(backend, "objects", b"\0\0\0\1a", row_a[:16] + row_b[16:])  # b's place
        with pytest.raises(errors.CorruptObject):
            store.get("p", "a")
        report = store.verify()
        assert "object rows disagree on its location" in "\n".join(report.problems)
        assert report.disagreeing == 1
        assert store.repair_rows() == 1
        assert store.verify().ok and store.get("p", "a") == b'{"id":"a","v":1}'


def _flipped(value: bytes) -> bytes:
    return bytes([value[0] ^ 0x01]) + value[1:]


_PARENT = b'{"id":"a","__closure":{"b":1}}'
_CHILD = b'{"id":"b","v":2}'


def test_an_index_entry_under_a_damaged_digest_is_kept_by_recount_and_moved_back(tmp_path):
    """A flipped bit in an index key leaves an entry no object row names and a digest the
    rows name missing. recount took the entry for unused and freed it, and with it the
    object's closure row (and its frame, had its pack held nothing else); it now keeps an
    entry whose location an object row holds. repair_rows moves it back under the digest
    its frame has."""
    with holding(tmp_path / "s", _CHILD, _PARENT) as (store, backend):
        digest = digest_of(_PARENT)
        with backend._write() as txn:
            row = txn.pop(digest, db=backend._index)
            txn.put(_flipped(digest), row, db=backend._index)
        assert not store.verify().ok
        assert store.recount() == 0  # nothing freed
        assert store.closure("p", "a") == {"b": 1} and store.get("p", "a") == _PARENT
        assert store.repair_rows() == 1
        assert store.verify().ok
        store.delete_project("p")  # the counts hold: everything is freed, nothing is left
        assert store.verify().ok and store.stats().blobs == 0


def test_an_object_row_with_a_damaged_digest_is_set_from_the_frame_it_places(tmp_path):
    with holding(tmp_path / "s", _CHILD, _PARENT) as (store, backend):
        row = _object_row(backend, b"\0\0\0\1a")
        raw_put(backend, "objects", b"\0\0\0\1a", _flipped(row[:16]) + row[16:])
        with pytest.raises(errors.CorruptObject):
            store.get("p", "a")
        assert not store.verify().ok
        assert store.recount() == 0  # the blob the row places is not unused
        assert store.repair_rows() == 1
        assert store.verify().ok
        assert store.get("p", "a") == _PARENT and store.closure("p", "a") == {"b": 1}
