"""decompose/recompose: exact round trip, Speckle-shaped output."""

from __future__ import annotations

import gc
import itertools
import json

import msgspec
import pytest
import xxhash
from hypothesis import given, settings
from hypothesis import strategies as st

import objstore
from objstore import collector, errors, graph

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
)
keys = st.sampled_from(["a", "b", "name", "@child", "@items", "@(3)values", "@(1)v", "x y", "é"])


# data shaped like a reference (a document about Speckle objects, say): decompose keeps it
# as it is, and recompose must give it back as it is
literal_references = st.fixed_dictionaries(
    {
        "referencedId": st.text("0123456789abcdef", min_size=1, max_size=32),
        "speckle_type": st.just("reference"),
    }
)


def docs() -> st.SearchStrategy[dict[str, object]]:
    return st.recursive(
        st.dictionaries(keys, scalars, max_size=4),
        lambda inner: st.dictionaries(
            keys,
            inner
            | st.lists(inner | scalars | literal_references, max_size=5)
            | scalars
            | literal_references,
            max_size=5,
        ),
        max_leaves=25,
    )


@settings(max_examples=150, deadline=None)
@given(doc=docs())
def test_round_trip_is_exact(doc):
    root_id, objects = graph.decompose(doc)
    store = objstore.open_memory()
    store.put("p", [d for _, d in objects])
    back = graph.recompose(root_id, store, "p")
    assert json.dumps(back, sort_keys=False) == json.dumps(doc, sort_keys=False)
    shared = graph.recompose(root_id, store, "p", shared=True)
    assert json.dumps(shared, sort_keys=False) == json.dumps(doc, sort_keys=False)
    assert objects[-1][0] == root_id
    seen: set[str] = set()
    for object_id, data in objects:  # children before parents
        body = json.loads(data)
        assert len(object_id) == 32 and body["id"] == object_id
        assert data == msgspec.json.encode(body)  # compact, id first
        rest = {k: v for k, v in body.items() if k != "id"}
        assert xxhash.xxh3_128_hexdigest(msgspec.json.encode(rest)) == object_id
        for child in body.get("__closure", {}):
            assert child in seen
        assert body["totalChildrenCount"] == len(body.get("__closure", {}))
        seen.add(object_id)


def test_speckle_shape():
    doc = {
        "name": "m",
        "@elements": [{"w": 1}, {"w": 2}],
        "@(2)vertices": [1, 2, 3],
        "@meta": {"@deep": {"k": True}},
    }
    root_id, objects = graph.decompose(doc)
    bodies = {i: json.loads(d) for i, d in objects}
    root = bodies[root_id]
    assert root["@elements"][0] == {
        "referencedId": root["@elements"][0]["referencedId"],
        "speckle_type": "reference",
    }
    chunks = [bodies[r["referencedId"]] for r in root["@(2)vertices"]]
    assert [c["data"] for c in chunks] == [[1, 2], [3]]
    assert all(c["speckle_type"] == "Speckle.Core.Models.DataChunk" for c in chunks)
    assert len(root["__closure"]) == root["totalChildrenCount"] == 6
    deep_id = bodies[root["@meta"]["referencedId"]]["@deep"]["referencedId"]
    assert root["__closure"][deep_id] == 2


def test_ids_are_stable_across_versions():
    """Content addressing: the same document must give the same ids in every release, or a
    re-push would upload everything again (this id is what 0.x has always given)."""
    doc = {
        "name": "house",
        "@floors": [{"level": 1, "@rooms": [{"area": 12.5}, {"area": 7}]}],
        "@(2)v": [1, 2.5, None],
        "meta": {"ok": True, "@tag": {"t": "é"}},
    }
    root_id, objects = graph.decompose(doc)
    assert root_id == "90e106a71f59cff3667f14453eac527f"
    assert len(objects) == 7
    assert objects[0] == (
        "0071cf81fee0b480b4f0d9b19a76e8b1",
        b'{"id":"0071cf81fee0b480b4f0d9b19a76e8b1","area":12.5,"totalChildrenCount":0}',
    )


def test_long_scalar_lists_round_trip_as_copies():
    """Lists of scalars are taken whole (a mesh's vertices), mixed ones item by item."""
    vertices = [0.5, 1, None, True, "s"] * 1000
    doc = {"@(64)vertices": vertices, "mixed": [1, {"@c": {"x": [2, 3]}}, [4, 5]]}
    root_id, objects = graph.decompose(doc)
    store = objstore.open_memory()
    store.put("p", [d for _, d in objects])
    back = graph.recompose(root_id, store, "p")
    assert back == doc
    assert back["@(64)vertices"] is not vertices
    again = graph.recompose(root_id, store, "p")
    again["mixed"][2].append(6)
    assert back["mixed"][2] == [4, 5]  # each recompose is a document of its own


def test_recompose_follows_references_other_clients_wrote_differently():
    """Objects sent by other serializers: a reference key spelled with a JSON escape, or
    with spaces around its colon, is still a reference (only objects with none are not
    walked)."""
    leaf = b'{"id": "c0ffee00c0ffee00c0ffee00c0ffee00", "x": [1, 2]}'
    escaped = (  # a mesh whose one reference has its key escaped
        b'{"id":"e1","@a":{"referenc\\u0065dId":"c0ffee00c0ffee00c0ffee00c0ffee00",'
        b'"speckle_type":"reference"},"__closure":{"c0ffee00c0ffee00c0ffee00c0ffee00":1}}'
    )
    root = (
        b'{"id":"r0","b":{"@c":{"referencedId" : "e1","speckle_type":"reference"}},'
        b'"__closure":{"e1":1,"c0ffee00c0ffee00c0ffee00c0ffee00":2}}'
    )
    store = objstore.open_memory()
    store.put("p", [leaf, escaped, root])
    back = graph.recompose("r0", store, "p")
    assert back == {"b": {"@c": {"@a": {"x": [1, 2]}}}}


def test_recompose_resolves_what_specklepy_detaches_without_an_at():
    """specklepy stores a mesh's vertices and faces under their own names as lists of
    references to DataChunks (no @), and may put a reference in a plain dict: references to
    the object's children are followed wherever they are, chunk lists joined, as specklepy's
    receive reads them. A reference-shaped value naming no child of its object is data."""
    chunks = [
        b'{"id":"v1","speckle_type":"Speckle.Core.Models.DataChunk","data":[0.0,1.0,2.0]}',
        b'{"id":"v2","speckle_type":"Speckle.Core.Models.DataChunk","data":[3.0]}',
        b'{"id":"f1","speckle_type":"Speckle.Core.Models.DataChunk","data":[3,0,1,2]}',
        b'{"id":"s1","speckle_type":"Objects.Other.RenderMaterial","name":"steel"}',
    ]

    def ref(object_id: str) -> dict[str, str]:
        return {"referencedId": object_id, "speckle_type": "reference"}

    mesh = {
        "id": "m1",
        "speckle_type": "Objects.Geometry.Mesh",
        "vertices": [ref("v1"), ref("v2")],
        "faces": [ref("f1")],
        "colors": [],
        "props": {"material": ref("s1"), "note": ref("elsewhere")},
        "parts": [ref("s1"), 7],
        "__closure": {"v1": 1, "v2": 1, "f1": 1, "s1": 1},
        "totalChildrenCount": 4,
    }
    closure = {"m1": 1, "v1": 2, "v2": 2, "f1": 2, "s1": 2}
    root = {"id": "r", "@mesh": ref("m1"), "__closure": closure}
    store = objstore.open_memory()
    store.put("p", [*chunks, json.dumps(mesh).encode(), json.dumps(root).encode()])
    steel = {"speckle_type": "Objects.Other.RenderMaterial", "name": "steel"}
    for shared in (False, True):
        back = graph.recompose("r", store, "p", shared=shared)
        assert back == {
            "@mesh": {
                "speckle_type": "Objects.Geometry.Mesh",
                "vertices": [0.0, 1.0, 2.0, 3.0],
                "faces": [3, 0, 1, 2],
                "colors": [],
                "props": {"material": steel, "note": ref("elsewhere")},
                "parts": [steel, 7],
            }
        }


def test_recompose_names_a_child_the_store_lacks():
    """A graph stored without one of its children is not rebuilt with a hole in it."""
    doc = {"@a": {"x": 1}, "@b": [{"y": 2}, {"z": [3, 4]}]}
    root_id, objects = graph.decompose(doc)
    lost_id, _ = objects[1]
    store = objstore.open_memory()
    store.put("p", [d for i, d in objects if i != lost_id])
    with pytest.raises(objstore.ObjectNotFound) as caught:
        graph.recompose(root_id, store, "p")
    assert lost_id in str(caught.value)


def _chain(levels: int) -> dict[str, object]:
    """A document of ``levels`` objects, each the @-child of the one before."""
    doc: dict[str, object] = {"leaf": True}
    for n in range(levels):
        doc = {"n": n, "@child": doc}
    return doc


def test_a_document_nesting_past_the_recursion_limit_is_refused_by_name():
    """Decomposing and rebuilding walk a document by recursion: one nested past Python's
    limit is NestingTooDeep, not a bare RecursionError (a traceback in the CLI)."""
    assert graph.decompose(_chain(100))[1]
    with pytest.raises(errors.NestingTooDeep, match="recursion limit"):
        graph.decompose(_chain(5_000))
    # a chain that deep, as another client may have stored it: each object shallow, the root's
    # __closure naming them all
    ids = [f"c{n:05d}" for n in range(5_000)]
    objects = [
        json.dumps({"id": i, "@child": {"referencedId": c, "speckle_type": "reference"}}).encode()
        for i, c in itertools.pairwise(ids)
    ] + [json.dumps({"id": ids[-1], "leaf": True}).encode()]
    root = json.loads(objects[0])
    root["__closure"] = {c: d for d, c in enumerate(ids[1:], 1)}
    objects[0] = json.dumps(root).encode()
    store = objstore.open_memory()
    store.put("p", objects)
    with pytest.raises(errors.NestingTooDeep, match="recursion limit") as caught:
        graph.recompose(ids[0], store, "p")
    assert caught.value.object_id == ids[0]


def test_an_object_used_twice_is_two_objects_in_the_document():
    """Shared geometry is stored once; recomposed, each use is its own dicts and lists."""
    mesh = {"vertices": [0.0, 1.5, 2.0], "faces": [[0, 1, 2]]}
    doc = {"@a": dict(mesh), "@(2)b": [mesh, mesh], "c": {"@d": dict(mesh)}}
    root_id, objects = graph.decompose(doc)
    assert len(objects) == 1 + 1 + 1  # the mesh once, the chunk [mesh, mesh] once, the root
    store = objstore.open_memory()
    store.put("p", [d for _, d in objects])
    back = graph.recompose(root_id, store, "p")
    assert back == doc
    uses = [back["@a"], *back["@(2)b"], back["c"]["@d"]]
    assert len({id(u) for u in uses}) == len({id(u["vertices"]) for u in uses}) == 4
    assert len({id(u["faces"][0]) for u in uses}) == 4
    uses[0]["vertices"].append(9.0)
    assert [len(u["vertices"]) for u in uses] == [4, 3, 3, 3]


def test_shared_recompose_gives_an_object_used_twice_as_one_dict():
    """As specklepy gives one Base per id: each place the detached mesh is used holds the
    same dict, the document still equal to the one decomposed. (The chunk's two meshes are
    items of one object's list, not detached: two dicts, as without sharing.)"""
    mesh = {"vertices": [0.0, 1.5, 2.0], "faces": [[0, 1, 2]]}
    doc = {"@a": dict(mesh), "@(2)b": [mesh, mesh], "c": {"@d": dict(mesh)}}
    root_id, objects = graph.decompose(doc)
    store = objstore.open_memory()
    store.put("p", [d for _, d in objects])
    back = graph.recompose(root_id, store, "p", shared=True)
    assert back == doc
    uses = [back["@a"], *back["@(2)b"], back["c"]["@d"]]
    assert back["@a"] is back["c"]["@d"]
    assert len({id(u) for u in uses}) == 3
    uses[0]["vertices"].append(9.0)
    assert [len(u["vertices"]) for u in uses] == [4, 3, 3, 4]
    again = graph.recompose(root_id, store, "p", shared=True)
    assert again["@a"] is not back["@a"] and again == doc  # each call a document of its own


@pytest.mark.parametrize("shared", [False, True])
def test_recompose_leaves_its_document_to_the_oldest_gc_generation(shared):
    """Built with the cyclic GC off, the document is handed to the oldest generation, so the
    caller's next young collections do not walk all of it."""
    if collector.frozen_by_others():
        pytest.skip("objects frozen by earlier code: recompose leaves them be")
    root_id, objects = graph.decompose({"@parts": [{"n": n, "v": [n, [n]]} for n in range(50)]})
    store = objstore.open_memory()
    store.put("p", [d for _, d in objects])
    back = graph.recompose(root_id, store, "p", shared=shared)
    inner = back["@parts"][7]["v"]
    assert any(o is inner for o in gc.get_objects(2))
    assert not collector.frozen_by_others()


def test_reserved_keys_and_non_objects_are_refused():
    with pytest.raises(errors.ReservedKey, match=r"^\$: key 'id' is reserved"):
        graph.decompose({"id": 1})
    with pytest.raises(errors.ReservedKey, match=r"^\$\.@c: key 'totalChildrenCount'"):
        graph.decompose({"@c": {"totalChildrenCount": 1}})
    with pytest.raises(errors.NotAnObject):
        graph.decompose([1, 2])  # type: ignore[arg-type]
    assert graph.decompose({"nested": {"id": "fine: not a detached object"}})


@pytest.mark.parametrize(
    ("doc", "where"),
    [
        ({"@floors": [{"a": 1}, {"b": {"@m": {"__closure": {}}}}]}, "$.@floors[1].b.@m"),
        ({"@(2)h": [1, 2, 3, {"@x": {"id": 1}}]}, "$.@(2)h[3].@x"),  # in its third chunk
        ({"a": {"b": [0, {"@c": {"totalChildrenCount": 1}}]}}, "$.a.b[1].@c"),
    ],
)
def test_a_refused_member_is_named_by_its_json_path(doc, where):
    with pytest.raises(errors.ReservedKey) as caught:
        graph.decompose(doc)
    assert str(caught.value).startswith(f"{where}: key ")


class _Counted:
    def __init__(self) -> None:
        self.steps: list[int] = []

    def advance(self, n: int) -> None:
        self.steps.append(n)


def test_decompose_and_recompose_report_progress_in_steps_of_objects():
    """A big document's decompose and recompose each take seconds: both tell ``progress``
    of every object, a step of ``graph.TICK`` at a time (the last one what is left)."""
    doc = {"name": "site", "@parts": [{"n": i, "@sub": {"m": i}} for i in range(1500)]}
    made = _Counted()
    root_id, objects = graph.decompose(doc, progress=made)
    assert sum(made.steps) == len(objects) == 3001
    assert made.steps == [graph.TICK, graph.TICK, 3001 - 2 * graph.TICK]
    store = objstore.open_memory()
    store.put("p", [data for _, data in objects])
    read = _Counted()
    assert graph.recompose(root_id, store, "p", progress=read) == doc
    assert sum(read.steps) == 3001 and read.steps[:2] == [graph.TICK, graph.TICK]
    assert graph.decompose(doc, progress=object()) == (root_id, objects)  # no advance: none
