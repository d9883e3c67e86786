"""Upkeep: freeing packs, verify, recount and compaction."""

from __future__ import annotations

import contextlib
import json
import random
import subprocess
import sys

import lmdb
import pytest

import objstore
from objstore import errors, graphgen
from objstore.codec import digest_of, json_array
from objstore.engine.layout import META_RAW, REF, U64
from objstore.engine.lmdb import LMDBBackend, maintenance

from ..damage import raw_put, replace_frame
from .helpers import entries, padded


def test_damaged_tables_are_store_corrupt_and_verify_reports_them(tmp_path):
    """Pages overwritten inside a store (its headers intact): verify reports where it had to
    stop instead of raising, and reads raise objstore errors, not bare lmdb ones."""
    ids = [f"o{b}-{n}" for b in range(10) for n in range(500)]
    with objstore.open(tmp_path / "s", writemap=False) as store:
        for b in range(10):
            store.put("p", [json.dumps({"id": i, "pad": i * 40}).encode() for i in ids[b::10]])
    data = tmp_path / "s" / "data.mdb"
    rng = random.Random(1)
    with data.open("r+b") as f:
        for page in rng.sample(range(2, data.stat().st_size // 4096), 40):
            f.seek(page * 4096 + 16)
            f.write(rng.randbytes(4000))
    with objstore.open(tmp_path / "s", readonly=True) as store:
        report = store.verify()
        assert not report.ok
        assert any(
            p.startswith("stopped: ") and "is damaged or not an objstore store" in p
            for p in report.problems
        )
        with pytest.raises(errors.StoreCorrupt):
            store.count("p")
        for read in (
            lambda: list(store.get_many("p", ids)),
            lambda: [store.get("p", i) for i in ids],
            lambda: store.has("p", ids),
            lambda: store.closure("p", ids[0]),
            store.stats,
        ):
            # StoreCorrupt, or CorruptObject for a damaged frame; a bare lmdb.Error fails
            with contextlib.suppress(errors.ObjstoreError):
                read()


def test_packs_are_freed_when_their_last_object_goes(tmp_path):
    g = graphgen.generate(400, seed=9)
    with objstore.open(tmp_path / "s") as store:
        backend = store.backend
        assert isinstance(backend, LMDBBackend)
        store.put("p1", b"[" + b",".join(d for _, d in g.objects) + b"]")
        store.put("p2", b"[" + b",".join(d for _, d in g.objects[:100]) + b"]")  # all shared
        packs_before = entries(backend, "packs")
        assert packs_before > 1
        store.delete_project("p1")
        assert dict(store.get_many("p2", [i for i, _ in g.objects[:100]])) == dict(g.objects[:100])
        assert store.get("p1", g.objects[0][0]) is None
        assert 0 < entries(backend, "packs") < packs_before
        assert store.verify().ok
        store.delete_project("p2")
        assert entries(backend, "packs") == entries(backend, "packrefs") == 0
        stats = store.stats()
        assert (stats.objects, stats.blobs, stats.raw_bytes, stats.stored_bytes) == (0, 0, 0, 0)


def test_verify_reports_a_wrong_pack_count(tmp_path):
    with objstore.open(tmp_path / "s") as store:
        store.put("p", b'[{"id":"a","v":1},{"id":"b","v":2}]')
        backend = store.backend
        assert isinstance(backend, LMDBBackend)
        raw_put(backend, "packrefs", U64.pack(1), (5).to_bytes(4, "big"))
        report = store.verify()
        assert any("pack 1: counted 5 live entries, found 2" in p for p in report.problems)


def test_recount_repairs_wrong_reference_counts_and_frees_unused_bytes(tmp_path):
    a, b, c = b'{"id":"a","v":1}', b'{"id":"b","v":2}', b'{"id":"c","v":3}'
    with objstore.open(tmp_path / "s") as store:
        store.put("p", [a, b, c])
        store.put("q", [a])
        backend = store.backend
        assert isinstance(backend, LMDBBackend)
        rows = {}
        with backend._read() as txn:
            for data in (a, b):
                rows[data] = txn.get(digest_of(data), db=backend._index)
        ref = REF
        for data, wrong in ((a, 1), (b, 3)):  # a one short (what the bug left), b too many
            _, raw_len = ref.unpack_from(rows[data])
            head = ref.pack(wrong, raw_len) + rows[data][ref.size :]
            raw_put(backend, "index", digest_of(data), head)
        with backend._write() as txn:  # c's only object row lost: its bytes are unused
            assert txn.delete(b"\x00\x00\x00\x01c", db=backend._objects)
        report = store.verify()
        assert len(report.problems) == 3 and report.miscounted == 3
        assert any("refcount 1 but 2 objects" in p for p in report.problems)
        assert store.recount() == 3
        assert store.verify().ok
        assert store.stats().blobs == 2
        assert store.recount() == 0
        store.delete_project("p")  # with a's count one short this freed bytes q still uses
        assert store.get("q", "a") == a
        assert store.verify().ok


def test_compact_gives_back_what_a_deleted_project_left_and_moves_closures(tmp_path):
    rng = random.Random(5)
    kids = [padded(f"kid{i}", rng) for i in range(2)]
    parent = padded("parent", rng, __closure={"kid0": 1, "kid1": 2})
    filler = [padded(f"fill{i}", rng) for i in range(300)]
    shared = [*kids, parent]
    with objstore.open(tmp_path / "s") as store:
        store.put("a", b"[" + b",".join(filler[:150] + shared + filler[150:]) + b"]")
        own = [padded(f"own{i}", rng) for i in range(20)]
        store.put("b", b"[" + b",".join(own + shared) + b"]")  # shares a's frames
        store.delete_project("a")
        before = store.stats()
        report = store.compact()
        assert report.packs_rewritten == 1  # the one pack of a's holding the shared frames
        assert report.frames_moved == 3 and report.packs_written == 1
        assert report.bytes_freed > 40_000  # most of a 64 KB pack was a's alone
        assert store.stats().stored_bytes == before.stored_bytes - report.bytes_freed
        assert store.compact() == objstore.CompactReport()  # nothing left to do
        assert store.verify().ok  # among others: no pack left that nothing is in
    with objstore.open(tmp_path / "s") as store:
        assert store.verify().ok
        assert list(store.iter_with_children("b", "parent")) == [
            ("parent", parent),
            ("kid0", kids[0]),
            ("kid1", kids[1]),
        ]
        assert store.closure("b", "parent") == {"kid0": 1, "kid1": 2}
        ids = [f"own{i}" for i in range(20)] + ["kid0", "kid1", "parent"]
        assert [d for _, d in store.get_many("b", ids)] == own + shared
        assert store.get("a", "fill0") is None


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_compact_after_random_deletes_reads_like_the_reference_model(tmp_path, seed):
    rng = random.Random(seed)
    pool = [padded(f"o{i}", rng) for i in range(400)]
    ops: list[tuple[str, list[bytes]]] = []
    for n in range(6):
        picked = rng.sample(pool, rng.randint(50, 200))
        ops.append((f"p{n}", picked))
    doomed = rng.sample([name for name, _ in ops], 3)
    model = objstore.open_memory()
    with objstore.open(tmp_path / "s") as store:
        for target in (store, model):
            for name, objs in ops:
                target.put(name, b"[" + b",".join(objs) + b"]")
            for name in doomed:
                target.delete_project(name)
        report = store.compact(min_dead=0.1)
        assert report.packs_rewritten > 0
        assert store.verify().ok
        for name, objs in ops:
            ids = [json.loads(o)["id"] for o in objs]
            assert list(store.get_many(name, ids)) == list(model.get_many(name, ids))
        assert store.stats().objects == model.stats().objects


@pytest.mark.parametrize("group", [maintenance.COMPACT_GROUP, 2])
def test_a_dry_run_reports_the_compaction_that_follows_and_changes_nothing(
    tmp_path, monkeypatch, group
):
    """With packs rewritten 256 at a time and 2 at a time (several groups, each packing
    its frames anew), the dry run's report is the compaction's own, and it writes nothing:
    even a store opened read-only takes one."""
    monkeypatch.setattr(maintenance, "COMPACT_GROUP", group)
    rng = random.Random(11)
    pool = [padded(f"o{i}", rng) for i in range(400)]
    with objstore.open(tmp_path / "s") as store:
        for n in range(6):
            store.put(f"p{n}", b"[" + b",".join(rng.sample(pool, 150)) + b"]")
        for n in (1, 3, 4):
            store.delete_project(f"p{n}")
        before = store.stats()
    with objstore.open(tmp_path / "s", readonly=True) as store:
        planned = store.compact(0.1, dry_run=True)
    with objstore.open(tmp_path / "s") as store:
        assert store.stats() == before
        assert planned.packs_rewritten > 2  # with groups of 2: more than one group
        assert store.compact(0.5, dry_run=True).packs_rewritten < planned.packs_rewritten
        assert store.compact(0.1) == planned
        assert store.stats().stored_bytes == before.stored_bytes - planned.bytes_freed
        assert store.compact(0.1, dry_run=True) == objstore.CompactReport()
        assert store.verify().ok


def test_readers_see_every_object_byte_exact_while_compaction_runs(tmp_path):
    import threading

    rng = random.Random(8)
    objs = [padded(f"o{i}", rng) for i in range(600)]
    kept = objs[::7]
    with objstore.open(tmp_path / "s") as store:
        store.put("a", b"[" + b",".join(objs) + b"]")
        store.put("b", b"[" + b",".join(kept) + b"]")
        store.delete_project("a")
        ids = [json.loads(o)["id"] for o in kept]
        expected = list(zip(ids, kept, strict=True))
        stop = threading.Event()
        rounds: list[bool] = []

        def read() -> None:
            while not stop.is_set() and len(rounds) < 10_000:
                rounds.append(list(store.get_many("b", ids)) == expected)

        reader = threading.Thread(target=read)
        reader.start()
        try:
            report = store.compact()
        finally:
            stop.set()
            reader.join(timeout=30)
        assert report.frames_moved == len(kept)
        assert rounds and all(rounds)
        assert list(store.get_many("b", ids)) == expected


def test_verify_reports_a_pack_nothing_is_in(tmp_path):
    with objstore.open(tmp_path / "s") as store:
        store.put("p", b'[{"id":"a"}]')
        raw_put(store.backend, "packs", U64.pack(999), b"stray")
        assert "pack 999: stored but no object is in it" in store.verify().problems


def test_compact_refuses_a_threshold_outside_0_to_1(tmp_path):
    with objstore.open(tmp_path / "s") as store, pytest.raises(ValueError, match="min_dead"):
        store.compact(min_dead=0)


def test_rows_of_the_wrong_length_are_verify_problems_not_a_crash(tmp_path):
    """A flipped length on disk (LMDB keeps no checksums) leaves rows cut or grown: verify
    names each and goes on, where it raised struct.error on a cut pack key."""
    with objstore.open(tmp_path / "s") as store:
        store.put("p", [b'{"id":"a","v":1}', b'{"id":"b","v":2}', b'{"id":"c","v":3}'])
        backend = store.backend
        assert isinstance(backend, LMDBBackend)
        raw_put(backend, "objects", b"\0\0\0\1a", b"cut")
        raw_put(backend, "index", digest_of(b'{"id":"b","v":2}'), b"\0\0\0\1")
        raw_put(backend, "packrefs", b"\1\2", b"\0\0\0\1")
        raw_put(backend, "packs", b"\7", b"x")
        report = store.verify()
        said = "\n".join(report.problems)
        assert "object row b'\\x00\\x00\\x00\\x01a': 3 bytes, not 32" in said
        b_digest = digest_of(b'{"id":"b","v":2}').hex()
        assert f"index row {b_digest}: 4 bytes, not 28" in said
        assert "pack count row b'\\x01\\x02': damaged" in said
        assert "pack row b'\\x07': damaged key" in said
        assert report.objects_checked == 2 and not report.ok


def test_deleting_a_project_over_a_damaged_row_is_store_corrupt_and_changes_nothing(tmp_path):
    with objstore.open(tmp_path / "s") as store:
        store.put("p", [b'{"id":"a","v":1}', b'{"id":"b","v":2}'])
        backend = store.backend
        assert isinstance(backend, LMDBBackend)
        raw_put(backend, "objects", b"\0\0\0\1b", b"cut short")
        with pytest.raises(errors.StoreCorrupt, match=r"is damaged .*object row b'.*b' is cut"):
            store.delete_project("p")
        assert store.count("p") == 2 and store.get("p", "a") == b'{"id":"a","v":1}'


@pytest.mark.parametrize(
    "fault",
    [
        lmdb.PageFullError("mdb_del: MDB_PAGE_FULL: Internal error - page has no more space"),
        lmdb.BadTxnError("mdb_get: MDB_BAD_TXN: Transaction must abort"),
    ],
)
def test_lmdb_meeting_damaged_pages_in_a_write_is_store_corrupt(tmp_path, monkeypatch, fault):
    """LMDB's internal errors inside a write are damaged pages (a page's free space
    miscounted), however py-lmdb surfaces them (its cursor delete: a SystemError over one)."""
    with objstore.open(tmp_path / "s") as store:
        store.put("p", [b'{"id":"a","v":1}'])
        backend = store.backend
        assert isinstance(backend, LMDBBackend)

        def failing(txn, removed):
            raise fault

        monkeypatch.setattr(backend, "_release", failing)
        with pytest.raises(errors.StoreCorrupt, match="is damaged or not an objstore store"):
            store.delete_project("p")

        def wrapped(txn, removed):
            try:
                raise fault
            except lmdb.Error:
                raise SystemError("returned a result with an exception set")  # noqa: B904

        monkeypatch.setattr(backend, "_release", wrapped)
        with pytest.raises(errors.StoreCorrupt, match="returned a result"):
            store.delete_project("p")
        monkeypatch.undo()
        assert store.count("p") == 1


def test_a_byte_counter_damaged_low_stops_at_zero_instead_of_failing_deletes(tmp_path):
    with objstore.open(tmp_path / "s") as store:
        store.put("p", [b'{"id":"a","v":1}', b'{"id":"b","v":2}'])
        backend = store.backend
        assert isinstance(backend, LMDBBackend)
        raw_put(backend, "meta", META_RAW, U64.pack(3))  # holds 32 bytes of JSON
        assert store.delete_project("p") == 2
        assert store.stats().raw_bytes == 0 and store.count("p") == 0


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
    with objstore.open(tmp_path / "s") as store:
        store.put("p", [b'{"id":"abc","v":1}'])
        backend = store.backend
        assert isinstance(backend, LMDBBackend)
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
    with objstore.open(tmp_path / "s") as store:
        store.put("p", [leaf, b'{"id":"c2","v":2}', parent, other])
        backend = store.backend
        assert isinstance(backend, LMDBBackend)
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
    with objstore.open(tmp_path / "s") as store:
        store.put("p", [b'{"id":"a","v":1}', b'{"id":"r","__closure":{"a":1}}'])
        backend = store.backend
        assert isinstance(backend, LMDBBackend)
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
    with objstore.open(tmp_path / "s") as store:
        store.put("p", [b'{"id":"a","v":1}', b'{"id":"b","v":2}'])
        backend = store.backend
        assert isinstance(backend, LMDBBackend)
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
    with objstore.open(tmp_path / "s") as store:
        store.put("p", [_CHILD, _PARENT])
        backend = store.backend
        assert isinstance(backend, LMDBBackend)
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
    with objstore.open(tmp_path / "s") as store:
        store.put("p", [_CHILD, _PARENT])
        backend = store.backend
        assert isinstance(backend, LMDBBackend)
        row = _object_row(backend, b"\0\0\0\1a")
        raw_put(backend, "objects", b"\0\0\0\1a", _flipped(row[:16]) + row[16:])
        with pytest.raises(errors.CorruptObject):
            store.get("p", "a")
        assert not store.verify().ok
        assert store.recount() == 0  # the blob the row places is not unused
        assert store.repair_rows() == 1
        assert store.verify().ok
        assert store.get("p", "a") == _PARENT and store.closure("p", "a") == {"b": 1}
