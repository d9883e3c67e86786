"""Upkeep: freeing packs, verify, recount and compaction."""

from __future__ import annotations

import contextlib
import json
import random

import lmdb
import pytest

import objstore
from objstore import errors, graphgen
from objstore.codec import digest_of
from objstore.engine.layout import META_RAW, REF, U64
from objstore.engine.lmdb import LMDBBackend, maintenance

from ..damage import raw_put
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
