"""The model generator: deterministic, correct closures, children before parents."""

from __future__ import annotations

import itertools
import json

import msgspec
import pytest
import xxhash
from hypothesis import given, settings
from hypothesis import strategies as st

from objstore import errors, graphgen


def test_deterministic_and_sized():
    a, b = graphgen.generate(2000, seed=4), graphgen.generate(2000, seed=4)
    assert a.objects == b.objects
    assert graphgen.generate(2000, seed=5).root_id != a.root_id
    assert 1900 <= len(a) <= 2200


def test_closures_are_correct_and_children_come_first():
    g = graphgen.generate(1500, seed=1)
    docs = {i: json.loads(d) for i, d in g.objects}
    position = {i: n for n, (i, _) in enumerate(g.objects)}

    def refs(value):
        if isinstance(value, dict):
            if value.get("speckle_type") == "reference":
                yield value["referencedId"]
            for v in value.values():
                yield from refs(v)
        elif isinstance(value, list):
            for v in value:
                yield from refs(v)

    for object_id, doc in docs.items():
        expected: dict[str, int] = {}
        frontier = [(c, 1) for c in refs({k: v for k, v in doc.items() if k != "__closure"})]
        while frontier:
            child, depth = frontier.pop()
            if expected.get(child, 10**9) <= depth:
                continue
            expected[child] = depth
            assert position[child] < position[object_id]
            frontier += [
                (c, depth + 1)
                for c in refs({k: v for k, v in docs[child].items() if k != "__closure"})
            ]
        assert doc.get("__closure", {}) == expected
        assert doc["totalChildrenCount"] == len(expected)
    assert g.objects[-1][0] == g.root_id
    assert len(docs[g.root_id]["__closure"]) == len(g) - 1


def test_objects_are_compact_json_id_first_and_meshes_are_valid_geometry():
    """Each object is what msgspec encodes for its content with the id first, and hashes to
    its id without it; a mesh's vertices lie within 5 m of one point, to the micrometre, and
    its faces are triangles over those vertices."""
    g = graphgen.generate(1500, seed=6)
    bodies = {}
    for object_id, data in g.objects:
        body = msgspec.json.decode(data)
        assert next(iter(body)) == "id" and body["id"] == object_id
        assert msgspec.json.encode(body) == data
        del body["id"]
        assert xxhash.xxh3_128_hexdigest(msgspec.json.encode(body)) == object_id
        bodies[object_id] = body
    meshes = [b for b in bodies.values() if b["speckle_type"] == "Objects.Geometry.Mesh"]
    assert len(meshes) > 100

    def joined(refs):
        return [v for r in refs for v in bodies[r["referencedId"]]["data"]]

    for mesh in meshes:
        vertices, faces = joined(mesh["@(31250)vertices"]), joined(mesh["@(62500)faces"])
        count = len(vertices) // 3
        assert len(vertices) == 3 * count and count >= 4
        for axis in range(3):
            values = vertices[axis::3]
            assert all(type(v) is float and -105 <= v <= 105 for v in values)
            assert max(values) - min(values) <= 10
            assert all(round(v, 6) == v for v in values)
        assert len(set(vertices[0::3])) > 1  # not all one point
        triangles = [faces[n : n + 4] for n in range(0, len(faces), 4)]
        assert len(triangles) == count - 2
        for n, (size, *corners) in enumerate(triangles):
            assert size == 3 and corners == [n % count, (n + 1) % count, (n + 2) % count]


def test_batches_and_dump_roundtrip(tmp_path):
    g = graphgen.generate(500, seed=2)
    parts = list(graphgen.batches(g.objects, max_objects=100))
    assert sum(len(json.loads(p)) for p in parts) == len(g)
    graphgen.write_dump(g.objects, tmp_path / "g.dump")
    assert list(graphgen.read_dump(tmp_path / "g.dump")) == g.objects


def test_salt_changes_every_id_but_not_the_shape():
    plain, salted = graphgen.generate(300, seed=3), graphgen.generate(300, seed=3, salt="run-1")
    assert len(plain) == len(salted)
    assert not {i for i, _ in plain.objects} & {i for i, _ in salted.objects}
    assert json.loads(salted.objects[0][1])["benchRun"] == "run-1"


def test_dump_lines_are_numbered_and_a_bad_line_is_named(tmp_path):
    path = tmp_path / "g.dump"
    path.write_bytes(b'a\t{"id": "a"}\r\n\nb\t{"id": "b"}\n')
    assert list(graphgen.read_dump_lines(path)) == [
        (1, "a", b'{"id": "a"}'),
        (3, "b", b'{"id": "b"}'),
    ]
    path.write_bytes(b'a\t{"id": "a"}\nno tab here\n')
    with pytest.raises(errors.InvalidBatch, match="line 2 is not an id<TAB>json line"):
        list(graphgen.read_dump_lines(path))
    path.write_bytes(b'\xff\xfe\t{"id": "a"}\n')
    with pytest.raises(errors.InvalidBatch, match="line 1: the id is not UTF-8"):
        list(graphgen.read_dump_lines(path))


def test_read_array_sends_the_root_last_and_children_deepest_first():
    root = b'{"id": "r", "__closure": {"a": 1, "b": 2}}'
    array = b"[" + b",".join([root, b'{"id": "a"}', b'{"id": "b"}', b'{"n": 1}']) + b"]"
    read = graphgen.read_array(array, "a.json")
    hashed = xxhash.xxh3_128_hexdigest(b'{"n": 1}')  # no id: its hash, as a store names it
    assert [i for i, _ in read.objects] == ["b", "a", hashed, "r"]
    assert read.places == [2, 1, 3, 0] and read.outside == 1
    assert read.objects[-1] == ("r", root)


def test_salted_moves_a_graph_to_new_ids_and_changes_nothing_else():
    g = graphgen.generate(600, seed=5)
    a, again, b = (graphgen.salted(g, salt) for salt in ("run-a", "run-a", "run-b"))
    assert a is not None and again is not None and b is not None
    assert a.objects == again.objects and a.root_id == again.root_id  # same salt, same ids
    old_ids = {i for i, _ in g.objects}
    for moved in (a, b):
        assert len(moved.objects) == len(g.objects) and moved.root_id == moved.objects[-1][0]
        assert not old_ids & {i for i, _ in moved.objects}
        assert not any(g.root_id.encode() in data for _, data in moved.objects)
    assert not {i for i, _ in a.objects} & {i for i, _ in b.objects}
    # mapping each new id back gives the original bytes exactly: ids moved, nothing else
    back = {
        new.encode(): old.encode() for (new, _), (old, _) in zip(a.objects, g.objects, strict=True)
    }
    restored = [
        graphgen._QUOTED_HEX_ID.sub(lambda m: b'"' + back.get(m.group(1), m.group(1)) + b'"', data)
        for _, data in a.objects
    ]
    assert restored == [data for _, data in g.objects]
    root = json.loads(a.objects[-1][1])
    assert root["id"] == a.root_id and set(root["__closure"]) <= {i for i, _ in a.objects}


def test_salted_declines_ids_it_cannot_replace():
    named = graphgen.Graph([("a", b'{"id":"a"}'), ("root", b'{"id":"root"}')], "root")
    assert graphgen.salted(named, "s") is None  # not 32 hex characters
    hashed = b'{"speckle_type":"x"}'  # no id of its own: known by its hash
    own = xxhash.xxh3_128_hexdigest(hashed)
    assert graphgen.salted(graphgen.Graph([(own, hashed)], own), "s") is None


@settings(max_examples=100, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 50), max_size=40),
    max_objects=st.integers(1, 8),
    max_bytes=st.integers(1, 120),
    each=st.sampled_from([0, 1]),
)
def test_groups_are_the_input_in_runs_under_both_caps(sizes, max_objects, max_bytes, each):
    """groups gives every object once, in order, in runs of at most ``max_objects`` whose
    bytes (each object's own plus ``each``) stay within ``max_bytes`` unless one object alone
    exceeds it; a run ends only where the next object would break a cap."""
    pairs = [(f"o{n}", b"x" * size) for n, size in enumerate(sizes)]
    runs = list(graphgen.groups(iter(pairs), max_objects, max_bytes, each=each))
    assert [pair for run in runs for pair in run] == pairs
    weight = [sum(len(d) + each for _, d in run) for run in runs]
    for run, total in zip(runs, weight, strict=True):
        assert run and len(run) <= max_objects
        assert total <= max_bytes or len(run) == 1
    for run, following in itertools.pairwise(runs):
        grown = sum(len(d) + each for _, d in run) + len(following[0][1]) + each
        assert len(run) == max_objects or grown > max_bytes
