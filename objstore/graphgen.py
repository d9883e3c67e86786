"""Deterministic, realistic Speckle-like object graphs for benchmarks, tests and demos.

Shape (as specklepy and Speckle connectors write them): a model root collection -> level
collections -> building elements with inline parameters -> detached display meshes whose vertex
and face lists are split into ``Speckle.Core.Models.DataChunk`` objects; render materials and a
share of meshes (instances) are reused, so several parents reference the same child. Every parent
carries a correct ``__closure`` and ``totalChildrenCount``; children come before parents and the
root comes last. Object sizes range from ~150 B to ~100 KB, but for the collections, whose
``__closure`` lists their whole subtree (the root's, every object: 3.7 MB at 100k objects).
"""

from __future__ import annotations

import array
import random
import re
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import chain, cycle, repeat
from operator import add, mod, truediv
from pathlib import Path
from typing import Any, NamedTuple

import msgspec
import xxhash

from objstore import codec, errors
from objstore.codec import json_array, with_id
from objstore.graph import closure_of, reported

_encode = msgspec.json.encode

MIN_OBJECTS = 10  # the smallest graph generate() makes
_HALF_SPREAD = 5_000_000  # a mesh's vertices lie within this many micrometres of its origin

ELEMENT_TYPES = [
    "Objects.BuiltElements.Wall:Objects.BuiltElements.Revit.RevitWall",
    "Objects.BuiltElements.Floor:Objects.BuiltElements.Revit.RevitFloor",
    "Objects.BuiltElements.Column:Objects.BuiltElements.Revit.RevitColumn",
    "Objects.BuiltElements.Beam:Objects.BuiltElements.Revit.RevitBeam",
    "Objects.BuiltElements.Revit.FamilyInstance",
    "Objects.BuiltElements.Pipe:Objects.BuiltElements.Revit.RevitPipe",
    "Objects.BuiltElements.Duct:Objects.BuiltElements.Revit.RevitDuct",
]
PARAMETER_NAMES = [
    "Area", "Volume", "Length", "Width", "Height", "Base Offset", "Top Offset", "Comments",
    "Mark", "Phase Created", "Structural", "Fire Rating", "Assembly Code", "Type Mark",
    "Cost", "Manufacturer", "Model", "Keynote", "Description", "Function",
]  # fmt: skip


@dataclass(slots=True)
class Graph:
    """A generated model: objects in upload order (children first) and the root id."""

    objects: list[tuple[str, bytes]]
    root_id: str

    @property
    def total_bytes(self) -> int:
        return sum(len(b) for _, b in self.objects)

    def __len__(self) -> int:
        return len(self.objects)


def _coordinates(rng: random.Random, n_vertices: int) -> list[float]:
    """x, y, z of ``n_vertices`` points within 5 m of a random origin within 100 m, to the
    micrometre (6 decimals), drawn as one block of random bytes: a draw and a round per
    coordinate in Python took most of a graph's generation."""
    origin = [rng.randrange(-100_000_000, 100_000_001) - _HALF_SPREAD for _ in range(3)]
    offsets = array.array("I", rng.randbytes(4 * 3 * n_vertices))
    if sys.byteorder == "big":  # the same graph on any machine
        offsets.byteswap()
    micrometres = map(add, map(mod, offsets, repeat(2 * _HALF_SPREAD + 1)), cycle(origin))
    return list(map(truediv, micrometres, repeat(1e6)))


class _Builder:
    def __init__(self, seed: int, salt: str = "") -> None:
        self.rng = random.Random(seed)
        self.salt = salt
        self.objects: list[tuple[str, bytes]] = []
        self.closures: dict[str, dict[str, int]] = {}
        self.seen: set[str] = set()

    def add(self, body: dict[str, Any], children: Iterable[str]) -> str:
        """Serialize an object with its closure (from its direct children); return its id."""
        closure = closure_of(children, self.closures)
        body["totalChildrenCount"] = len(closure)
        if closure:
            body["__closure"] = closure
        if self.salt:
            body["benchRun"] = self.salt
        data = _encode(body)  # never empty: it has totalChildrenCount
        object_id = xxhash.xxh3_128_hexdigest(data)
        if object_id in self.seen:  # identical content (e.g. equal face lists): sent once
            return object_id
        self.seen.add(object_id)
        if closure:
            self.closures[object_id] = closure
        self.objects.append((object_id, with_id(data, object_id)))
        return object_id

    @staticmethod
    def ref(object_id: str) -> dict[str, str]:
        return {"referencedId": object_id, "speckle_type": "reference"}

    def chunk(self, values: list[float] | list[int]) -> str:
        return self.add({"speckle_type": "Speckle.Core.Models.DataChunk", "data": values}, ())

    def chunked(self, values: list[Any], size: int) -> list[str]:
        return [self.chunk(values[i : i + size]) for i in range(0, len(values), size)]

    def material(self, index: int) -> str:
        rng = random.Random(index)
        return self.add(
            {
                "speckle_type": "Objects.Other.RenderMaterial",
                "name": f"Material {index}",
                "opacity": 1.0,
                "metalness": round(rng.random(), 2),
                "roughness": round(rng.random(), 2),
                "diffuse": rng.randrange(1 << 24),
                "emissive": 0,
                "units": "m",
            },
            (),
        )

    def mesh(self, material_id: str) -> tuple[str, int]:
        """A display mesh with chunked vertices/faces; returns (id, objects added)."""
        rng = self.rng
        before = len(self.objects)
        kind = rng.random()
        if kind < 0.7:
            n_vertices = rng.randint(4, 24)
        elif kind < 0.98:
            n_vertices = rng.randint(24, 200)
        else:
            n_vertices = rng.randint(200, 3000)
        vertices = _coordinates(rng, n_vertices)
        n_faces = max(1, n_vertices - 2)
        corners = (map(mod, range(k, n_faces + k), repeat(n_vertices)) for k in range(3))
        faces: list[int] = list(chain.from_iterable(zip(repeat(3), *corners)))
        vertex_chunks = self.chunked(vertices, 5000)
        face_chunks = self.chunked(faces, 20000)
        mesh_id = self.add(
            {
                "speckle_type": "Objects.Geometry.Mesh",
                "units": "m",
                "area": round(rng.uniform(1, 50), 3),
                "volume": round(rng.uniform(0, 20), 3),
                "bbox": None,
                "@(31250)vertices": [self.ref(c) for c in vertex_chunks],
                "@(62500)faces": [self.ref(c) for c in face_chunks],
                "@renderMaterial": self.ref(material_id),
                "colors": [],
                "textureCoordinates": [],
            },
            [*vertex_chunks, *face_chunks, material_id],
        )
        return mesh_id, len(self.objects) - before

    def element(self, index: int, materials: list[str], meshes: list[str]) -> str:
        rng = self.rng
        display: list[str] = []
        for _ in range(rng.choice((1, 1, 1, 2, 3))):
            if meshes and rng.random() < 0.3:
                display.append(rng.choice(meshes))  # an instance reusing geometry
            else:
                mesh_id, _ = self.mesh(rng.choice(materials))
                meshes.append(mesh_id)
                display.append(mesh_id)
        display = list(dict.fromkeys(display))
        params = {
            name: {
                "speckle_type": "Objects.BuiltElements.Revit.Parameter",
                "name": name,
                "value": round(rng.uniform(0, 1000), 3) if rng.random() < 0.7 else f"v{index}",
                "units": rng.choice(("m", "m2", "m3", None)),
                "isReadOnly": rng.random() < 0.3,
                "applicationInternalName": name.upper().replace(" ", "_"),
            }
            for name in rng.sample(PARAMETER_NAMES, rng.randint(2, 8))
        }
        return self.add(
            {
                "speckle_type": rng.choice(ELEMENT_TYPES),
                "applicationId": f"{index:08x}-{rng.getrandbits(32):08x}",
                "elementId": str(100000 + index),
                "category": rng.choice(("Walls", "Floors", "Columns", "Doors", "Pipes")),
                "family": f"Family {rng.randint(1, 40)}",
                "units": "m",
                "parameters": {"speckle_type": "Base", **params},
                "@displayValue": [self.ref(m) for m in display],
            },
            display,
        )


def generate(n_objects: int, seed: int = 0, salt: str = "") -> Graph:
    """A graph of about ``n_objects`` objects (exactly reproducible from ``seed``).

    A ``salt`` is written into every object, so the same shape gets ids no server has seen
    (a benchmark's cold send into a project that already holds an earlier run).
    """
    if n_objects < MIN_OBJECTS:
        raise ValueError(f"a generated graph has at least {MIN_OBJECTS} objects, not {n_objects}")
    b = _Builder(seed, salt)
    materials = [b.material(i) for i in range(min(40, max(2, n_objects // 500)))]
    n_levels = max(1, min(50, n_objects // 5000))
    per_level_target = (n_objects - len(materials) - n_levels - 1) / n_levels
    level_ids: list[str] = []
    meshes: list[str] = []
    for level in range(n_levels):
        start = len(b.objects)
        elements: list[str] = []
        index = level * 1_000_000
        while len(b.objects) - start < per_level_target - 1:
            elements.append(b.element(index, materials, meshes))
            index += 1
            if len(meshes) > 2000:
                del meshes[:1000]
        level_ids.append(
            b.add(
                {
                    "speckle_type": "Speckle.Core.Models.Collection",
                    "name": f"Level {level}",
                    "collectionType": "level",
                    "@elements": [b.ref(e) for e in elements],
                },
                elements,
            )
        )
    root_id = b.add(
        {
            "speckle_type": "Speckle.Core.Models.Collection",
            "name": f"Generated model {n_objects}/{seed}",
            "collectionType": "model",
            "@elements": [b.ref(level) for level in level_ids],
        },
        level_ids,
    )
    return Graph(b.objects, root_id)


_HEX_ID = re.compile("[0-9a-f]{32}")
_QUOTED_HEX_ID = re.compile(rb'"([0-9a-f]{32})"')


def salted(graph: Graph, salt: str) -> Graph | None:
    """``graph`` under new ids derived from ``salt`` (the same salt, the same ids): each id
    replaced wherever it is quoted (its object's ``id``, ``__closure`` keys, references), so
    a server that holds the graph already has none of the salted one. None when that cannot
    be done by replacing ids alone: ids that are not 32 lowercase hex characters (Speckle's
    and objstore's are), or an object whose bytes do not carry its id."""
    if not all(_HEX_ID.fullmatch(i) for i, _ in graph.objects):
        return None
    seed = salt.encode()
    new = {i.encode(): xxhash.xxh3_128_hexdigest(seed + i.encode()) for i, _ in graph.objects}

    def swap(match: re.Match[bytes]) -> bytes:
        found = new.get(match.group(1))
        return match.group(0) if found is None else b'"' + found.encode() + b'"'

    objects = [(new[i.encode()], _QUOTED_HEX_ID.sub(swap, data)) for i, data in graph.objects]
    try:
        codec.check_pairs(objects)
    except errors.InvalidObject:  # an object without its id in its bytes
        return None
    return Graph(objects, new[graph.root_id.encode()])


def groups(
    objects: Iterable[tuple[str, bytes]], max_objects: int, max_bytes: int, *, each: int = 0
) -> Iterator[list[tuple[str, bytes]]]:
    """Consecutive runs of objects under both caps, taken lazily (an object bigger than
    ``max_bytes`` makes a run of its own); ``each``: bytes counted beside every object's
    own (the comma a JSON array puts after it)."""
    group: list[tuple[str, bytes]] = []
    size = done = 0
    for pair in objects:
        try:
            length = len(pair[1]) + each
        except (TypeError, IndexError, KeyError):
            raise not_a_pair(pair, done + len(group)) from None
        if group and (len(group) >= max_objects or size + length > max_bytes):
            done += len(group)
            yield group
            group, size = [], 0
        group.append(pair)
        size += length
    if group:
        yield group


def not_a_pair(item: object, index: int) -> errors.InvalidBatch:
    """The error for an object given without its id: objects to send or upload are
    ``(id, bytes)`` pairs, as :func:`objstore.graph.decompose` makes them."""
    return errors.InvalidBatch(
        f"object {index} must be an (id, bytes) pair, got {type(item).__name__} {item!r:.60}"
    )


def check_pair(pair: object, index: int) -> None:
    """InvalidBatch unless ``pair`` is an object to send: an (id, bytes) tuple or list, the
    bytes also a bytearray or memoryview. The slow path, for what a fast type test did not
    pass; ``index`` places it in its caller's input."""
    if not isinstance(pair, tuple | list) or len(pair) != 2 or not isinstance(pair[0], str):
        raise not_a_pair(pair, index)
    object_id, data = pair
    if not isinstance(data, bytes | bytearray | memoryview):
        raise errors.InvalidBatch(
            f"object {index} id {object_id!r} must be bytes of one JSON object, "
            f"got {type(data).__name__}"
        )


def batches(
    objects: Iterable[tuple[str, bytes]], max_objects: int = 10_000, max_bytes: int = 25 << 20
) -> Iterator[bytes]:
    """Group objects into JSON-array batches under both caps (as a client uploads them)."""
    for group in groups(objects, max_objects, max_bytes):
        yield json_array([data for _, data in group])


def write_dump(objects: Iterable[tuple[str, bytes]], path: str | Path) -> None:
    """Write objects as ``id\\tjson`` lines (the format getobjects serves)."""
    with Path(path).open("wb") as fh:
        for object_id, data in objects:
            fh.write(object_id.encode() + b"\t" + data + b"\n")


def read_dump(path: str | Path) -> Iterator[tuple[str, bytes]]:
    """Read ``id\\tjson`` lines back."""
    for _, object_id, data in read_dump_lines(path):
        yield object_id, data


def read_dump_lines(path: str | Path) -> Iterator[tuple[int, str, bytes]]:
    """(line number, id, json) of each ``id\\tjson`` line, blank lines skipped; a line that is
    not one raises InvalidBatch naming it."""
    with Path(path).open("rb") as fh:
        yield from dump_lines(fh, str(path))


def dump_lines(fh: Iterable[bytes], name: str) -> Iterator[tuple[int, str, bytes]]:
    """:func:`read_dump_lines` of an open binary file (a pipe too), named ``name`` in errors."""
    for number, line in enumerate(fh, 1):
        line = line.rstrip(b"\r\n")
        if not line:
            continue
        object_id, tab, data = line.partition(b"\t")
        try:
            text = object_id.decode() if tab else None
        except UnicodeDecodeError as exc:
            raise errors.InvalidBatch(
                f"{name} line {number}: the id is not UTF-8 ({exc})"
            ) from None
        if text is None:
            raise errors.InvalidBatch(f"{name} line {number} is not an id<TAB>json line")
        yield number, text, data


class ArrayGraph(NamedTuple):
    """A JSON array of stored objects, root first (the object+children route's
    application/json), as objects to send: ``objects`` children before parents (deepest
    first by the root's ``__closure``, those it does not list next), the root last;
    ``places`` each one's index in the array; ``outside`` how many the root's ``__closure``
    does not list (a getobjects answer, say, rather than one graph)."""

    objects: list[tuple[str, bytes]]
    places: list[int]
    outside: int


def read_array(data: bytes, name: str, progress: object = None) -> ArrayGraph:
    """:class:`ArrayGraph` of the array ``data``, each object under its own id (one without
    an id under its hash, as a store names it); a bad one raises its InvalidObject placed as
    ``name: element N``. ``progress.advance`` is told of objects read."""
    try:
        elements = [bytes(element) for element in codec.split_array(data)]
    except errors.InvalidObject as exc:
        where = "the array" if exc.index is None else f"element {exc.index}"
        raise exc.located(f"{name}: {where}") from None
    except errors.InvalidBatch as exc:
        raise errors.InvalidBatch(f"{name}: {exc}") from None
    if not elements:
        raise errors.InvalidBatch(f"{name}: empty array")
    ids: list[str] = []
    depths: dict[str, int] = {}  # the root's __closure
    for index, element in enumerate(reported(elements, progress)):
        try:
            record = codec.decode_record(element, index, codec.UNLIMITED)
        except errors.InvalidObject as exc:
            raise exc.located(f"{name}: element {index}") from None
        ids.append(record.id)
        if index == 0:
            depths = record.closure or {}
    order = sorted(range(1, len(ids)), key=lambda n: -depths.get(ids[n], 0))
    outside = sum(1 for n in order if ids[n] not in depths)
    places = [*order, 0]
    return ArrayGraph([(ids[n], elements[n]) for n in places], places, outside)
