"""Store behaviour every backend must have (run once per backend via the ``store`` fixture)."""

from __future__ import annotations

import json
import random
import re

import pytest

from objstore import errors
from objstore.codec import digest_of
from objstore.limits import Limits

from ..conftest import make_store, run_threads
from .damage import corrupt


def arr(*objs: bytes) -> bytes:
    return b"[" + b",".join(objs) + b"]"


A = b'{"id":"a","speckle_type":"Base","x":1}'
B = b'{"id": "b", "speckle_type": "Base",  "y": [1, 2.50, "\\u00e9"]}'
ROOT = b'{"id":"root","__closure":{"a":1,"b":2,"ghost":3},"@c":{"referencedId":"a"}}'


def test_roundtrip_is_byte_exact(store):
    res = store.put("p1", arr(A, B, ROOT))
    assert (res.received, res.stored, res.duplicates, res.conflicts) == (3, 3, 0, 0)
    assert store.get("p1", "a") == A
    assert store.get("p1", "b") == B  # spacing, number spelling and escapes untouched
    assert store.get("p1", "root") == ROOT
    assert store.get("p1", "nope") is None
    assert store.get("other", "a") is None


def test_put_accepts_iterable_of_objects(store):
    res = store.put("p1", [A, B])
    assert res.stored == 2
    assert store.get("p1", "b") == B


def test_has_answers_every_id(store):
    store.put("p1", arr(A, B))
    assert store.has("p1", ["a", "zz", "b"]) == {"a": True, "zz": False, "b": True}
    assert store.has("unknown-project", ["a"]) == {"a": False}


def test_get_many_in_request_order_skipping_absent(store):
    store.put("p1", arr(A, B, ROOT))
    got = list(store.get_many("p1", ["root", "missing", "a", "b"]))
    assert got == [("root", ROOT), ("a", A), ("b", B)]


def test_get_many_streams_more_than_one_chunk(store):
    objs = [json.dumps({"id": f"o{i:05d}", "n": i}).encode() for i in range(5000)]
    store.put("p1", arr(*objs))
    ids = [f"o{i:05d}" for i in reversed(range(5000))]
    got = list(store.get_many("p1", ids))
    assert [i for i, _ in got] == ids
    assert got[0][1] == objs[-1]
    # the backend's list-at-a-time read of as many ids, absent ones among them, as one list
    asked = [*ids[:2500], "absent", *ids[2500:]]
    assert store.backend.read_chunk("p1", asked) == got


def test_missing_id_is_assigned_from_xxh3(store):
    import xxhash

    raw = b'{"speckle_type":"Base","v":2}'
    res = store.put("p1", arr(raw, b"{}"))
    assert res.stored == 2
    expected = xxhash.xxh3_128_hexdigest(raw)
    data = store.get("p1", expected)
    assert data is not None
    assert json.loads(data) == {"id": expected, "speckle_type": "Base", "v": 2}
    empty_id = xxhash.xxh3_128_hexdigest(b"{}")
    assert json.loads(store.get("p1", empty_id) or b"") == {"id": empty_id}


def test_iter_with_children_root_first_then_each_descendant_once(store):
    store.put("p1", arr(A, B, ROOT))
    stream = store.iter_with_children("p1", "root")
    got = list(stream)
    assert got[0] == ("root", ROOT)
    assert sorted(got[1:]) == [("a", A), ("b", B)]
    assert stream.missing == 1  # "ghost" is in the closure but not stored
    assert stream.found == 2


@pytest.mark.parametrize("count", [5, 50, 3000])  # closure rows: plain JSON, zstd JSON, id list
def test_children_follow_the_order_the_closure_lists(store, count):
    """Clients list a closure as they serialized it, so reading in that order reads storage
    in order; ids here run against sort order to catch any sorting."""
    ids = [f"c{count - i:05d}" for i in range(count)]
    children = [json.dumps({"id": i}).encode() for i in ids]
    closure = {i: 1 + n % 3 for n, i in enumerate(ids)}
    root = json.dumps({"id": "top", "__closure": closure}).encode()
    store.put("p1", arr(*children, root))
    assert [i for i, _ in store.iter_with_children("p1", "top")] == ["top", *ids]
    assert list(store.closure("p1", "top").items()) == list(closure.items())


def test_an_object_listing_itself_in_its_closure_streams_once(store):
    """A serializer's mistake, not a cycle to follow: the root comes first, and only then."""
    looped = b'{"id":"loop","__closure":{"a":1,"loop":1,"b":2}}'
    store.put("p1", arr(A, B, looped))
    stream = store.iter_with_children("p1", "loop")
    assert list(stream) == [("loop", looped), ("a", A), ("b", B)]
    assert (stream.found, stream.missing) == (2, 0)


def test_iter_with_children_of_leaf_and_absent_root(store):
    store.put("p1", arr(A))
    assert list(store.iter_with_children("p1", "a")) == [("a", A)]
    with pytest.raises(errors.ObjectNotFound):
        store.iter_with_children("p1", "zzz")
    with pytest.raises(errors.ObjectNotFound):
        store.iter_with_children("p2", "a")


def test_children_only_from_the_same_project(store):
    store.put("p1", arr(ROOT))
    store.put("p2", arr(A, B))
    assert [i for i, _ in store.iter_with_children("p1", "root")] == ["root"]


def test_closure_is_stored(store):
    store.put("p1", arr(ROOT))
    assert store.closure("p1", "root") == {"a": 1, "b": 2, "ghost": 3}
    with pytest.raises(errors.ObjectNotFound):
        store.closure("p1", "a")


def test_reupload_counts_duplicates(store):
    store.put("p1", arr(A, B))
    res = store.put("p1", arr(A, B, A))
    assert (res.stored, res.duplicates, res.conflicts) == (0, 3, 0)
    assert store.stats().blobs == 2


def test_duplicate_within_one_batch(store):
    res = store.put("p1", arr(A, A))
    assert (res.stored, res.duplicates) == (1, 1)


def test_first_write_wins_and_conflict_is_counted(store):
    store.put("p1", arr(A))
    other = b'{"id":"a","speckle_type":"Base","x":999}'
    res = store.put("p1", arr(other))
    assert (res.stored, res.duplicates, res.conflicts) == (0, 0, 1)
    assert store.get("p1", "a") == A


def test_dedupe_across_projects_keeps_isolation(store):
    store.put("p1", arr(A, B))
    res = store.put("p2", arr(A))
    assert res.stored == 1 and res.new_blobs == 0
    stats = store.stats()
    assert (stats.objects, stats.blobs, stats.projects) == (3, 2, 2)
    other = b'{"id":"b","v":"p3 version"}'
    store.put("p3", arr(other))
    assert store.get("p1", "b") == B
    assert store.get("p3", "b") == other
    assert store.get("p2", "b") is None


def test_delete_project_keeps_shared_bytes(store):
    store.put("p1", arr(A, B, ROOT))
    store.put("p2", arr(A))
    assert store.delete_project("p1") == 3
    assert store.get("p1", "a") is None
    assert store.get("p2", "a") == A
    stats = store.stats()
    assert (stats.projects, stats.objects, stats.blobs, stats.closures) == (1, 1, 1, 0)
    assert store.projects() == ["p2"]
    assert store.delete_project("p1") == 0
    assert store.verify().ok


def test_compact_after_delete_keeps_what_other_projects_use(store):
    store.put("p1", arr(A, B, ROOT))
    store.put("p2", arr(A, ROOT))
    store.delete_project("p1")
    before = store.stats()
    report = store.compact(min_dead=0.01)
    assert store.get("p2", "a") == A
    assert list(store.iter_with_children("p2", "root")) == [("root", ROOT), ("a", A)]
    assert store.get("p1", "b") is None
    after = store.stats()
    assert after.stored_bytes == before.stored_bytes - report.bytes_freed
    assert (after.objects, after.blobs, after.closures) == (2, 2, 1)
    assert store.verify().ok
    with pytest.raises(ValueError, match="min_dead"):
        store.compact(min_dead=1.5)


def test_project_recreated_after_delete_is_empty(store):
    store.put("p1", arr(A))
    store.delete_project("p1")
    store.put("p1", arr(B))
    assert store.get("p1", "a") is None
    assert store.count("p1") == 1


# deeper than msgspec's recursion guard lets a decode go on any Python (10000 levels on 3.13)
DEEPER_THAN_ANY_GUARD = b"[" * 20_000 + b"]" * 20_000

BAD_BATCHES = [
    (b'{"id":"a"}', errors.InvalidBatch, "JSON array"),
    (b"[" + A + b',{"id":"x",}]', errors.InvalidJSON, "object 1"),
    (b"[" + A + b',{"id":"x","s":"\xff\xfe"}]', errors.InvalidUTF8, "object 1"),
    (b"[" + A + b",42]", errors.NotAnObject, "object 1"),
    (b'[{"id":"has space"}]', errors.InvalidId, "whitespace"),
    (b'[{"id":"tab\\there"}]', errors.InvalidId, "whitespace"),
    (b'[{"id":""}]', errors.InvalidId, "1-255"),
    (b'[{"id":"' + b"x" * 256 + b'"}]', errors.InvalidId, "1-255"),
    (b'[{"id":12}]', errors.InvalidId, "object 0"),
    (b'[{"id":null}]', errors.InvalidId, "object 0"),
    (b'[{"id":"r","__closure":[1]}]', errors.InvalidClosure, "'r'"),
    (b'[{"id":"r","__closure":{"a":0}}]', errors.InvalidClosure, "positive"),
    (b'[{"id":"r","__closure":{"a":1.5}}]', errors.InvalidClosure, "positive"),
    (b'[{"id":"r","__closure":{"a b":1}}]', errors.InvalidClosure, "whitespace"),
    (b'[{"id":"deep","v":' + DEEPER_THAN_ANY_GUARD + b"}]", errors.NestingTooDeep, "object 0"),
]


@pytest.mark.parametrize(("batch", "exc", "needle"), BAD_BATCHES)
def test_bad_batch_stores_nothing(store, batch, exc, needle):
    store.put("p1", arr(A))
    before = store.stats()
    with pytest.raises(exc) as info:
        store.put("p1", batch)
    assert needle in str(info.value)
    assert store.stats() == before
    assert store.get("p1", "a") == A
    assert store.get("p1", "x") is None


def test_bad_object_after_good_ones_stores_none_of_them(store):
    with pytest.raises(errors.InvalidId):
        store.put("p1", arr(A, B, b'{"id":"bad id"}'))
    assert store.get("p1", "a") is None
    assert store.stats().objects == 0


def test_object_limit(backend_kind, tmp_path):
    s = make_store(backend_kind, tmp_path, Limits(max_object_bytes=100, max_batch_bytes=1000))
    big = b'{"id":"big","pad":"' + b"x" * 100 + b'"}'
    with pytest.raises(errors.ObjectTooLarge) as info:
        s.put("p1", arr(A, big))
    assert info.value.index == 1 and info.value.object_id == "big" and info.value.limit == 100
    assert "100 byte" in str(info.value)
    assert s.stats().objects == 0
    s.close()


def test_batch_limit(backend_kind, tmp_path):
    s = make_store(backend_kind, tmp_path, Limits(max_object_bytes=100, max_batch_bytes=200))
    objs = [json.dumps({"id": f"o{i}", "pad": "x" * 40}).encode() for i in range(6)]
    with pytest.raises(errors.BatchTooLarge) as info:
        s.put("p1", arr(*objs))
    assert info.value.limit == 200
    assert s.stats().objects == 0
    assert s.put("p1", arr(*objs[:3])).stored == 3
    s.close()


def test_exactly_at_limit_is_accepted(backend_kind, tmp_path):
    obj = b'{"id":"edge","pad":"' + b"x" * 50 + b'"}'
    s = make_store(
        backend_kind, tmp_path, Limits(max_object_bytes=len(obj), max_batch_bytes=len(obj))
    )
    assert s.put("p1", arr(obj)).stored == 1
    s.close()


def test_invalid_project_names(store):
    for bad in ["", "has space", "x" * 256, "nl\n"]:
        with pytest.raises(errors.InvalidProject):
            store.put(bad, arr(A))


def test_unicode_ids_and_long_ids(store):
    uid = "é" * 255  # 510 bytes of UTF-8: longer than an LMDB key allows
    obj = json.dumps({"id": uid, "v": 1}, ensure_ascii=False).encode()
    obj2 = json.dumps({"id": "é" * 254 + "f", "v": 2}, ensure_ascii=False).encode()
    store.put("p1", arr(obj, obj2))
    assert store.get("p1", uid) == obj
    assert store.get("p1", "é" * 254 + "f") == obj2
    assert store.has("p1", [uid]) == {uid: True}


def test_stats_counts(store):
    store.put("p1", arr(A, B, ROOT))
    s = store.stats()
    assert (s.projects, s.objects, s.blobs, s.closures) == (1, 3, 3, 1)
    assert s.raw_bytes == len(A) + len(B) + len(ROOT)
    assert s.stored_bytes > 0


def test_corruption_is_detected_not_returned(store):
    store.put("p1", arr(A, B))
    assert store.verify().ok
    corrupt(store.backend, digest_of(A))
    with pytest.raises(errors.CorruptObject) as info:
        store.get("p1", "a")
    assert "a" in str(info.value)
    assert store.get("p1", "b") == B
    report = store.verify()
    assert not report.ok
    assert any(digest_of(A).hex() in p for p in report.problems)


def test_verify_tells_its_progress_as_it_goes(store):
    """A verify of a big store runs for minutes: it says how many byte strings it has checked
    as it goes (for a progress bar), adding up to all of them."""
    objects = [b'{"id":"v%d","n":%d}' % (n, n) for n in range(20_000)]
    store.put("p1", objects[:10_000])
    store.put("p1", objects[10_000:])
    told: list[int] = []
    report = store.verify(told.append)
    assert report.ok
    assert sum(told) == report.blobs_checked == store.stats().blobs == 20_000
    assert len(told) >= 2 and max(told) < 20_000  # in steps, not once at the end


def test_repair_and_recount_of_a_sound_store_change_nothing(store):
    store.put("p1", arr(A, B, ROOT))
    store.put("p2", arr(A))
    before = store.stats()
    assert store.repair_rows() == 0
    assert store.recount() == 0
    assert store.stats() == before
    assert store.closure("p1", "root") == json.loads(ROOT)["__closure"]
    assert dict(store.get_many("p1", ["a", "b", "root"])) == {"a": A, "b": B, "root": ROOT}
    assert store.verify().ok


def test_close_and_context_manager(backend_kind, tmp_path):
    with make_store(backend_kind, tmp_path) as s:
        s.put("p1", arr(A))
    if backend_kind == "lmdb":
        with pytest.raises(errors.StoreClosed):
            s.get("p1", "a")


def test_threads_writing_and_reading_concurrently(store):
    from objstore import graphgen

    g = graphgen.generate(6000, seed=8)
    parts = list(graphgen.batches(g.objects, max_objects=500))

    def writer(mine: list[bytes], project: str) -> None:
        for body in mine:
            store.put(project, body)
            store.get_many(project, ["x"])

    assert not run_threads(writer, [(parts[i::4], f"t{i % 2}") for i in range(4)])
    expected = dict(g.objects)
    for project in ("t0", "t1"):
        got = dict(store.get_many(project, list(expected)))
        assert got and all(expected[i] == d for i, d in got.items())
    assert store.count("t0") + store.count("t1") == len(g)
    assert store.verify().ok


def test_concurrent_writers_of_the_same_ids_store_each_once(store):
    """Threads writing overlapping batches, some ids with other bytes: each id ends with the
    bytes of exactly one write, every other write of it counts as a duplicate or a conflict,
    and the bookkeeping of shared byte strings holds (verify, then a delete)."""
    ids = [f"o{n}" for n in range(400)]
    results: list[object] = []

    def body(object_id: str, version: int) -> bytes:
        return json.dumps({"id": object_id, "v": version % 2}).encode()

    def writer(k: int) -> None:
        for start in range(0, len(ids), 50):
            offset = (start + 100 * k) % len(ids)
            chunk = ids[offset : offset + 50]
            results.append(store.put("p", [body(i, k) for i in chunk]))
            results.append(store.put(f"q{k}", [body(i, 0) for i in chunk]))

    assert not run_threads(writer, [(k,) for k in range(4)])
    stored = dict(store.get_many("p", ids))
    assert sorted(stored) == sorted(ids)
    assert all(data in (body(i, 0), body(i, 1)) for i, data in stored.items())
    received = sum(r.received for r in results)  # type: ignore[attr-defined]
    counted = sum(r.stored + r.duplicates + r.conflicts for r in results)  # type: ignore[attr-defined]
    assert counted == received
    assert sum(r.stored for r in results) == sum(  # type: ignore[attr-defined]
        store.count(project) for project in ("p", "q0", "q1", "q2", "q3")
    )
    assert store.verify().ok
    for project in ("q0", "q1", "q2", "q3"):
        store.delete_project(project)
    assert dict(store.get_many("p", ids)) == stored
    assert store.verify().ok


_POOL = [f"o{n}" for n in range(300)]


def _variant_body(object_id: str, variant: int) -> bytes:
    """Object ``object_id`` in one of a few versions, some with a closure."""
    n = int(object_id[1:])
    closure = {_POOL[(n * 7 + k + 1) % len(_POOL)]: k + 1 for k in range(variant % 3)}
    doc: dict[str, object] = {"id": object_id, "speckle_type": "Base", "v": variant}
    if closure:
        doc["__closure"] = closure
    return json.dumps(doc).encode()


def _random_plan(
    rng: random.Random, ops: int
) -> list[tuple[str, str, list[list[tuple[str, int]]], int]]:
    """One writer's operations: (put or many, project, batches of (id, variant), the index
    of the batch made bad, or -1). Project q only gets versions 0 and 1, whose bytes p has
    too."""
    plan = []
    for _ in range(ops):
        project = rng.choice("pq")
        top = 3 if project == "p" else 1
        count = 1 if rng.random() < 0.5 else rng.randint(2, 4)
        batches = [
            [(rng.choice(_POOL), rng.randint(0, top)) for _ in range(rng.randint(1, 40))]
            for _ in range(count)
        ]
        bad = rng.randrange(count) if rng.random() < 0.2 else -1
        plan.append(("put" if count == 1 else "many", project, batches, bad))
    return plan


@pytest.mark.parametrize("seed", range(3))
def test_random_concurrent_writes_match_a_model(store, seed):
    """Threads putting random batches at once (put and put_many; repeated, conflicting and
    shared bytes; closures; now and then a bad batch): each id ends with the bytes of one
    accepted write, the counts add up id by id, a rejected batch stores nothing, and the
    shared-bytes bookkeeping survives a delete and a compaction."""
    rng = random.Random(seed)
    plans = [_random_plan(rng, 25) for _ in range(4)]
    accepted: list[tuple[str, str, int]] = []  # (project, id, variant) of every accepted write
    results: list[object] = []

    def encoded(batch: list[tuple[str, int]], bad: bool) -> bytes:
        bodies = [_variant_body(i, v) for i, v in batch]
        if bad:
            bodies.insert(len(bodies) // 2, b'{"id": "o1", "v": }')
        return arr(*bodies)

    def writer(plan: list[tuple[str, str, list[list[tuple[str, int]]], int]]) -> None:
        for kind, project, batches, bad in plan:
            bodies = [encoded(b, n == bad) for n, b in enumerate(batches)]
            if kind == "put":
                try:
                    results.append(store.put(project, bodies[0]))
                except errors.InvalidObject:
                    assert bad == 0
                else:
                    accepted.extend((project, i, v) for i, v in batches[0])
                continue
            done = 0
            try:
                for result in store.iter_put(project, bodies):
                    results.append(result)
                    accepted.extend((project, i, v) for i, v in batches[done])
                    done += 1
            except errors.InvalidObject:
                assert done == bad
            else:
                assert bad == -1

    assert not run_threads(writer, [(plan,) for plan in plans])
    written: dict[tuple[str, str], list[int]] = {}
    for project, object_id, variant in accepted:
        written.setdefault((project, object_id), []).append(variant)
    duplicates = conflicts = 0
    for project in "pq":
        stored = dict(store.get_many(project, _POOL))
        assert set(stored) == {i for (p, i) in written if p == project}
        for object_id, data in stored.items():
            variants = written[project, object_id]
            final = json.loads(data)["v"]
            assert data == _variant_body(object_id, final) and final in variants
            assert store.closure(project, object_id) == json.loads(data).get("__closure", {})
            duplicates += variants.count(final) - 1
            conflicts += len(variants) - variants.count(final)
    totals = [sum(getattr(r, f) for r in results) for f in ("stored", "duplicates", "conflicts")]
    assert totals == [len(written), duplicates, conflicts]
    assert store.verify().ok
    kept = dict(store.get_many("p", _POOL))
    store.delete_project("q")
    store.compact(min_dead=0.01)
    assert dict(store.get_many("p", _POOL)) == kept
    assert store.verify().ok


def test_put_many_stores_batches_in_order_with_totals(store):
    other_a = b'{"id":"a","speckle_type":"Base","x":999}'
    res = store.put_many("p1", [arr(A), arr(other_a, B), arr(B, ROOT)])
    assert (res.received, res.stored, res.duplicates, res.conflicts) == (5, 3, 1, 1)
    assert res.bytes_received == len(A) + len(other_a) + 2 * len(B) + len(ROOT)
    assert store.get("p1", "a") == A  # the first write of an id wins, batch by batch
    assert [i for i, _ in store.iter_with_children("p1", "root")] == ["root", "a", "b"]


def test_iter_put_yields_each_batch_result(store):
    results = list(store.iter_put("p1", [arr(A, B), arr(A), [ROOT]]))
    assert [(r.received, r.stored, r.duplicates) for r in results] == [
        (2, 2, 0),
        (1, 0, 1),
        (1, 1, 0),
    ]


def test_put_many_bad_batch_keeps_the_batches_before_it(store):
    batches = [arr(A), arr(B), arr(b'{"id":"c"}', b'{"id":"bad id"}'), arr(ROOT)]
    with pytest.raises(errors.InvalidId) as info:
        store.put_many("p1", batches)
    assert str(info.value).startswith("batch 2 object 1 id 'bad id': ")
    assert store.get("p1", "a") == A
    assert store.get("p1", "b") == B
    assert store.has("p1", ["c", "root"]) == {"c": False, "root": False}
    with pytest.raises(errors.InvalidBatch, match=r"^batch 1: batch must be bytes"):
        store.put_many("p2", [arr(A), "not bytes"])
    assert store.get("p2", "a") == A


def test_iter_put_stopped_early_stores_only_what_it_yielded(store):
    batches = [arr(A), arr(B), arr(ROOT), arr(b'{"id":"c"}')]
    results = store.iter_put("p1", batches)
    assert next(results).stored == 1
    results.close()
    assert store.has("p1", ["a", "b", "root", "c"]) == {
        "a": True,
        "b": False,
        "root": False,
        "c": False,
    }
    assert store.stats().objects == 1


@pytest.mark.parametrize(
    ("call", "says"),
    [
        (lambda s: s.has("p1", "a"), "not one str: use [id]"),
        (lambda s: s.has("p1", b"a"), "not one bytes: use [id]"),
        (lambda s: s.has("p1", ["a", 7]), "object ids must be str, got int 7"),
        (lambda s: s.has("nowhere", [None]), "object ids must be str, got NoneType None"),
        (lambda s: list(s.get_many("p1", "ab")), "not one str: use [id]"),
        (lambda s: list(s.get_many("p1", ["a", b"b"])), "got bytes b'b'"),
        (lambda s: list(s.get_many("p1", [b"a", b"b"])), "got bytes b'a'"),
        (lambda s: list(s.get_many("nowhere", ["a", 3])), "got int 3"),
        (lambda s: s.get("p1", 12), "object ids must be str, got int 12"),
        (lambda s: s.get("nowhere", None), "got NoneType"),
        (lambda s: s.closure("p1", 12), "got int"),
        (lambda s: s.iter_with_children("p1", b"a"), "got bytes"),
    ],
)
def test_a_read_given_ids_of_the_wrong_type_says_so(store, call, says):
    """A read given an id that is not a str, or one id in place of the list, is the caller's
    mistake: a TypeError naming it on every backend, not "absent" on one and an
    AttributeError on another, nor a lookup of each character of the id."""
    store.put("p1", arr(A, B))
    with pytest.raises(TypeError, match=re.escape(says)):
        call(store)
    assert store.has("p1", ["a", "b"]) == {"a": True, "b": True}


@pytest.mark.parametrize(
    ("call", "says"),
    [
        (lambda s: s.put("p1", {"id": "x"}), "iterable of each object's bytes, got dict"),
        (lambda s: s.put("p1", None), "got NoneType"),
        (lambda s: s.put("p1", [{"id": "x"}]), "got dict (encode it: msgspec.json.encode"),
        (lambda s: s.put_arrays("p1", b'[{"id":"x"}]'), "got bytes (one array is a batch"),
        (lambda s: s.put_arrays("p1", None), "iterable of JSON arrays' bytes, got NoneType"),
        (lambda s: s.put_arrays("p1", [arr(A), '[{"id":"x"}]']), "part 1 must be the bytes"),
        (lambda s: s.put_many("p1", b'[{"id":"x"}]'), "iterable of batches, got bytes"),
        (lambda s: s.put_many("p1", [arr(A), None]), "batch 1: batch must be the bytes"),
        (  # the (id, bytes) pairs send, Remote.upload and graphgen take, given to put
            lambda s: s.put("p1", [("x", b'{"id":"x"}')]),
            "got tuple (an (id, bytes) pair: batches are each a list of objects' bytes, "
            "such as [data for _, data in pairs])",
        ),
        (  # ... and to put_many, which reads each pair as a batch of two
            lambda s: s.put_many("p1", [("x", b'{"id":"x"}')]),
            "batch 0: batch element 0 must be bytes of one JSON object, got str (this batch "
            "is an (id, bytes) pair: put_many takes batches, each a list of objects' bytes",
        ),
    ],
)
def test_a_write_given_the_wrong_shape_says_so_and_stores_nothing(store, call, says):
    store.put("p1", arr(A))
    before = store.stats()
    with pytest.raises(errors.InvalidBatch, match=re.escape(says)):
        call(store)
    assert store.stats() == before
    assert store.get("p1", "x") is None


def test_strings_that_are_not_a_pair_get_no_pair_hint(store):
    with pytest.raises(errors.InvalidBatch) as caught:
        store.put("p1", ["x", "y"])
    assert str(caught.value) == "batch element 0 must be bytes of one JSON object, got str"
