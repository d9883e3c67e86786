"""Hypothesis properties of the store, run against every backend."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from objstore import errors

from ..conftest import BACKENDS, make_store

ids = st.text(
    alphabet=st.characters(blacklist_categories=("Cc", "Cs", "Zs", "Zl", "Zp")),
    min_size=1,
    max_size=40,
).filter(lambda s: not any(c.isspace() for c in s))
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
bodies = st.dictionaries(
    st.text(max_size=10).filter(lambda k: k not in ("id", "__closure")), values, max_size=5
)
dumps_styles = st.sampled_from(
    [
        lambda d: json.dumps(d).encode(),
        lambda d: json.dumps(d, indent=1, ensure_ascii=False).encode(),
        lambda d: json.dumps(d, separators=(",", ":"), ensure_ascii=False).encode(),
    ]
)

SETTINGS = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def _serialize(objects, style):
    return [style({"id": oid, **body}) for oid, body in objects]


@SETTINGS
@given(
    objects=st.lists(st.tuples(ids, bodies), min_size=1, max_size=8, unique_by=lambda t: t[0]),
    style=dumps_styles,
)
def test_roundtrip_byte_exact(tmp_path_factory, objects, style):
    raws = _serialize(objects, style)
    for kind in BACKENDS:
        store = make_store(kind, tmp_path_factory.mktemp(kind))
        batch = b"[\n" + b" ,\n".join(raws) + b"\n]"
        res = store.put("p", batch)
        assert res.stored == len(raws)
        for (oid, _), raw in zip(objects, raws, strict=True):
            assert store.get("p", oid) == raw
        store.close()


@SETTINGS
@given(
    pool=st.lists(st.tuples(ids, bodies), min_size=1, max_size=6, unique_by=lambda t: t[0]),
    picks=st.lists(st.lists(st.integers(0, 5), max_size=6), min_size=1, max_size=4),
)
def test_dedupe_counts_match_model(tmp_path_factory, pool, picks):
    raws = _serialize(pool, lambda d: json.dumps(d).encode())
    for kind in BACKENDS:
        store = make_store(kind, tmp_path_factory.mktemp(kind))
        seen: set[int] = set()
        for batch in picks:
            chosen = [i % len(pool) for i in batch]
            if not chosen:
                continue
            res = store.put("p", b"[" + b",".join(raws[i] for i in chosen) + b"]")
            new = len(set(chosen) - seen)
            assert (res.received, res.stored, res.duplicates, res.conflicts) == (
                len(chosen),
                new,
                len(chosen) - new,
                0,
            )
            seen |= set(chosen)
        assert store.stats().blobs == len(seen)
        store.close()


@st.composite
def dags(draw):
    """A random DAG (edges from later to earlier nodes) and the reference closures."""
    n = draw(st.integers(1, 15))
    children = [
        sorted(set(draw(st.lists(st.integers(0, i - 1), max_size=3)))) if i else []
        for i in range(n)
    ]
    closures: list[dict[int, int]] = []
    for i in range(n):
        c: dict[int, int] = {}
        for ch in children[i]:
            c[ch] = 1
            for d, depth in closures[ch].items():
                c[d] = min(c.get(d, depth + 1), depth + 1)
        closures.append(c)
    stored = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    return n, closures, stored


@SETTINGS
@given(dag=dags())
def test_iter_with_children_matches_reference(tmp_path_factory, dag):
    n, closures, stored = dag
    stored[-1] = True
    objs = []
    for i in range(n):
        body: dict[str, object] = {"id": f"n{i}", "speckle_type": "Base"}
        if closures[i]:
            body["__closure"] = {f"n{k}": v for k, v in closures[i].items()}
        objs.append(msgspec.json.encode(body))
    root = f"n{n - 1}"
    expected_children = {f"n{k}" for k in closures[-1] if stored[k]}
    for kind in BACKENDS:
        store = make_store(kind, tmp_path_factory.mktemp(kind))
        store.put(
            "p", b"[" + b",".join(o for o, keep in zip(objs, stored, strict=True) if keep) + b"]"
        )
        stream = store.iter_with_children("p", root)
        got = list(stream)
        assert got[0] == (root, objs[-1])
        assert [i for i, _ in got[1:]].count(root) == 0
        assert {i for i, _ in got[1:]} == expected_children
        assert len(got) - 1 == len(expected_children)
        assert stream.missing == len(closures[-1]) - len(expected_children)
        assert store.closure("p", root) == {f"n{k}": v for k, v in closures[-1].items()}
        store.close()


bad_objects = st.sampled_from(
    [
        b'{"id":"x y"}',
        b"[1]",
        b'{"id":"ok","__closure":{"a":-1}}',
        b'{"id":',
        b'"str"',
        b'{"id":"u","v":"\xc3\x28"}',
        b'{"id":"n","v":' + b"[" * 20_000 + b"]" * 20_000 + b"}",  # deeper than any guard
    ]
)


@SETTINGS
@given(
    good=st.lists(st.tuples(ids, bodies), min_size=0, max_size=5, unique_by=lambda t: t[0]),
    bad=bad_objects,
    where=st.integers(0, 5),
)
def test_one_bad_object_leaves_store_unchanged(tmp_path_factory, good, bad, where):
    raws = _serialize(good, lambda d: json.dumps(d).encode())
    for kind in BACKENDS:
        store = make_store(kind, tmp_path_factory.mktemp(kind))
        store.put("p", b'[{"id":"existing","v":1}]')
        before = store.stats()
        batch = list(raws)
        batch.insert(min(where, len(batch)), bad)
        try:
            store.put("p", b"[" + b",".join(batch) + b"]")
        except (errors.InvalidObject, errors.InvalidBatch):
            pass
        else:
            raise AssertionError("bad batch accepted")
        assert store.stats() == before
        assert store.get("p", "existing") == b'{"id":"existing","v":1}'
        for oid, _ in good:
            if oid != "existing":
                assert store.get("p", oid) is None
        store.close()


def test_tmp_path_factory_is_used(tmp_path: Path):
    assert tmp_path.exists()


@SETTINGS
@given(
    pool=st.lists(st.tuples(ids, bodies), min_size=1, max_size=6, unique_by=lambda t: t[0]),
    calls=st.lists(
        st.tuples(
            st.sampled_from(["p", "q"]),
            st.lists(st.lists(st.tuples(st.integers(0, 5), st.booleans()), max_size=5), max_size=5),
        ),
        min_size=1,
        max_size=3,
    ),
)
def test_put_many_equals_puts_one_at_a_time(tmp_path_factory, pool, calls):
    """Batch results, reads, stats and refcounts (verify, then delete everything) match."""
    variants = [
        _serialize(pool, lambda d: json.dumps(d).encode()),
        _serialize(pool, lambda d: json.dumps({**d, "variant": 2}).encode()),  # conflicts
    ]
    for kind in BACKENDS:
        one = make_store(kind, tmp_path_factory.mktemp(kind))
        many = make_store(kind, tmp_path_factory.mktemp(kind))
        for project, batches in calls:
            bodies = [
                b"[" + b",".join(variants[v][i % len(pool)] for i, v in batch) + b"]"
                for batch in batches
            ]
            expected = [one.put(project, body) for body in bodies]
            assert list(many.iter_put(project, bodies)) == expected
        for project in ("p", "q"):
            for oid, _ in pool:
                assert many.get(project, oid) == one.get(project, oid)
        got, want = many.stats(), one.stats()
        assert (got.objects, got.blobs, got.raw_bytes) == (want.objects, want.blobs, want.raw_bytes)
        assert many.verify().ok
        for project in ("p", "q"):
            many.delete_project(project)
        assert (many.stats().objects, many.stats().blobs) == (0, 0)
        assert many.verify().ok
        one.close()
        many.close()
