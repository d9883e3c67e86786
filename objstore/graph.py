"""Plain JSON documents <-> Speckle-style detached object graphs.

``decompose`` walks a nested dict the way Speckle's serializer does: members whose key starts
with ``@`` are detached into objects of their own (a dict, or each dict of a list) and replaced
by ``{"referencedId": id, "speckle_type": "reference"}``; ``@(N)name`` lists are split into
``Speckle.Core.Models.DataChunk`` objects of N items. Every object gets an ``id`` (32 hex chars
of xxh3-128 over its JSON without the id), ``totalChildrenCount`` and, when it has children, a
``__closure``. Objects come out children first, root last. ``recompose`` inverts it exactly,
and reads other serializers' graphs as specklepy's receive does (references to an object's
children followed under any key, lists of DataChunk references joined).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

import msgspec
import xxhash

import objstore
from objstore import collector, errors
from objstore.codec import with_id

RESERVED = ("id", "totalChildrenCount", "__closure")
_T = TypeVar("_T")
CHUNK_TYPE = "Speckle.Core.Models.DataChunk"
_CHUNKED = re.compile(r"^@\((\d+)\)")
_encode = msgspec.json.encode
# JSON's scalar types: a list holding nothing else is taken as it is, not walked an item at
# a time (a mesh's vertices are thousands of floats; walking them was 90% of decompose)
_SCALARS = frozenset({str, int, float, bool, type(None)})


def _scalars_only(items: list[Any]) -> bool:
    return _SCALARS.issuperset(map(type, items))


def closure_of(children: Iterable[str], closures: dict[str, dict[str, int]]) -> dict[str, int]:
    """An object's ``__closure`` from its direct children and theirs: {id: minimum depth}."""
    closure: dict[str, int] = {}
    for child in children:
        closure[child] = 1
        for grandchild, depth in closures.get(child, {}).items():
            if closure.get(grandchild, depth + 2) > depth + 1:
                closure[grandchild] = depth + 1
    return closure


def _is_reference(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and value.get("speckle_type") == "reference"
        and isinstance(value.get("referencedId"), str)
        and len(value) == 2
    )


class _Refused(Exception):
    """A member decompose cannot take; ``path`` gathers where, innermost first."""

    def __init__(self, error: type[errors.InvalidObject], message: str) -> None:
        super().__init__(message)
        self.error = error
        self.message = message
        self.path: list[str | int] = []

    def where(self) -> str:
        """Its place as a JSON path (``$.@floors[3].@meta``)."""
        steps = (f"[{s}]" if isinstance(s, int) else f".{s}" for s in reversed(self.path))
        return "$" + "".join(steps)


TICK = 1024  # objects between progress reports


def _advance(progress: object) -> Callable[[int], object] | None:
    """``progress.advance``, as send and receive take it (None: no reports)."""
    return getattr(progress, "advance", None)


def reported(items: Iterable[_T], progress: object) -> Iterator[_T]:
    """``items``, telling ``progress.advance`` of them ``TICK`` at a time and of the rest at
    the end (nothing when it has no ``advance``)."""
    tick = _advance(progress)
    if tick is None:
        yield from items
        return
    count = 0
    for count, item in enumerate(items, 1):
        yield item
        if not count % TICK:
            tick(TICK)
    if count % TICK:
        tick(count % TICK)


class _Decomposer:
    def __init__(self, tick: Callable[[int], object] | None = None) -> None:
        self.objects: list[tuple[str, bytes]] = []
        self.seen: set[str] = set()
        self.closures: dict[str, dict[str, int]] = {}
        self.tick = tick

    def emit(self, body: dict[str, Any], children: list[str]) -> str:
        """Add the object ``body`` (inline's own copy, so completed in place) with these
        children, once; return its id."""
        closure = closure_of(children, self.closures)
        body["totalChildrenCount"] = len(closure)
        if closure:
            body["__closure"] = closure
        data = _encode(body)  # never empty: it has totalChildrenCount
        object_id = xxhash.xxh3_128_hexdigest(data)
        if object_id not in self.seen:
            self.seen.add(object_id)
            self.closures[object_id] = closure
            self.objects.append((object_id, with_id(data, object_id)))
            if self.tick is not None and not len(self.objects) % TICK:
                self.tick(TICK)
        return object_id

    def detach(self, value: dict[str, Any]) -> str:
        body, children = self.inline(value, top=True)
        return self.emit(body, children)

    def inline(self, value: Any, top: bool = False) -> tuple[Any, list[str]]:
        """``value`` with @-members detached, and the ids it now references: a copy where
        anything changes (a list of scalars is taken as it is: it is only encoded)."""
        if isinstance(value, list):
            if _scalars_only(value):
                return value, []
            out_list: list[Any] = []
            refs: list[str] = []
            for n, item in enumerate(value):
                try:
                    new, child_refs = self.inline(item)
                except _Refused as exc:
                    exc.path.append(n)
                    raise
                out_list.append(new)
                refs += child_refs
            return out_list, refs
        if not isinstance(value, dict):
            return value, []
        if top:
            for key in RESERVED:
                if key in value:
                    raise _Refused(
                        errors.ReservedKey, f"key {key!r} is reserved for the decomposer"
                    )
        out: dict[str, Any] = {}
        refs = []
        for key, member in value.items():
            if type(member) in _SCALARS and type(key) is str:  # kept as it is, @-key or not
                out[key] = member
                continue
            try:
                out[key], member_refs = self.member(key, member)
            except _Refused as exc:
                if isinstance(key, str):  # (a key that is not is named by the message)
                    exc.path.append(key)
                raise
            refs += member_refs
        return out, refs

    def member(self, key: Any, member: Any) -> tuple[Any, list[str]]:
        """One member of an object, as it is stored, and the ids it references: @-members
        detached (``@(N)name`` lists in chunks of N), the rest inlined."""
        if not isinstance(key, str):
            raise _Refused(errors.InvalidObject, f"keys must be strings, got {key!r}")
        chunked = _CHUNKED.match(key)
        if chunked and isinstance(member, list):
            size = max(1, int(chunked.group(1)))
            chunk_ids = []
            for start in range(0, len(member), size):
                try:
                    data, data_refs = self.inline(member[start : start + size])
                except _Refused as exc:  # placed in the slice: in the list, then
                    exc.path[-1] = start + int(exc.path[-1])
                    raise
                chunk_ids.append(self.emit({"speckle_type": CHUNK_TYPE, "data": data}, data_refs))
            return [{"referencedId": c, "speckle_type": "reference"} for c in chunk_ids], chunk_ids
        if key.startswith("@") and isinstance(member, dict):
            child = self.detach(member)
            return {"referencedId": child, "speckle_type": "reference"}, [child]
        if key.startswith("@") and isinstance(member, list):
            items: list[Any] = []
            refs: list[str] = []
            for n, item in enumerate(member):
                try:
                    if isinstance(item, dict):
                        child = self.detach(item)
                        items.append({"referencedId": child, "speckle_type": "reference"})
                        refs.append(child)
                    else:
                        new, child_refs = self.inline(item)
                        items.append(new)
                        refs += child_refs
                except _Refused as exc:
                    exc.path.append(n)
                    raise
            return items, refs
        return self.inline(member)


def decompose(
    doc: dict[str, Any], *, progress: object = None
) -> tuple[str, list[tuple[str, bytes]]]:
    """(root id, objects children-first) for a JSON document. A member it cannot take (a
    reserved key in an object it would detach: ReservedKey) is named by its JSON path.
    ``progress``: an object whose ``advance(n)`` is told of objects made, as for ``send``."""
    if not isinstance(doc, dict):
        raise errors.NotAnObject("a document to decompose must be a JSON object")
    tick = _advance(progress)
    d = _Decomposer(tick)
    try:
        root_id = d.detach(doc)
    except _Refused as exc:
        raise exc.error(f"{exc.where()}: {exc.message}") from None
    except RecursionError:
        raise errors.NestingTooDeep(
            "the document nests deeper than Python's recursion limit lets it be decomposed"
        ) from None
    if tick is not None and len(d.objects) % TICK:
        tick(len(d.objects) % TICK)
    return root_id, d.objects


_REFERENCE_KEY = b'"referencedId"'  # in an object's bytes unless it references nothing
_decoder = msgspec.json.Decoder(dict)  # (untyped members: 20% faster than dict[str, Any])


def recompose(
    root_id: str,
    store: objstore.Store,
    project: str,
    *,
    shared: bool = False,
    progress: object = None,
) -> dict[str, Any]:
    """The JSON document whose decomposition has root ``root_id`` in ``project``.

    By default no two places in it share a dict or list, as ``json.loads`` of the whole
    document would give. ``shared``: an object used in several places (repeated geometry) is
    one dict in all of them, as specklepy's receive gives one ``Base`` per id: less memory and
    time where a model repeats itself, but a change made through one place shows in all.
    ``progress``: an object whose ``advance(n)`` is told of objects read, as for ``send``."""
    # GC off while it builds, and what it built handed to the oldest generation: a 100k
    # model, shared, medians of 5 alternating runs against GC off alone, on 3.11/3.12/3.13:
    # 2.32/2.24/2.20 s against 2.62/2.99/2.97, and the caller's next 100k lists 0.57/0.54/0.04 s
    # against 0.99/0.98/0.48 (the young collections no longer walk the whole document)
    with collector.building():
        recomposer = _Recomposer(store, project, root_id, shared, progress)
        try:
            return recomposer.resolve(root_id)
        except RecursionError:
            raise errors.NestingTooDeep(
                "its document nests deeper than Python's recursion limit lets it be rebuilt",
                object_id=root_id,
            ) from None


class _Recomposer:
    """Rebuilds a document from its objects' bytes, each decoded as it is read (so the graph's
    bytes are never all held at once): an object's first use is what msgspec decoded, filled
    in place; each later one (shared geometry) that same dict when ``shared``, else a copy of
    it (copying is cheaper than decoding again)."""

    def __init__(
        self,
        store: objstore.Store,
        project: str,
        root_id: str,
        shared: bool,
        progress: object = None,
    ) -> None:
        self.project = project
        self.shared = shared
        decode = _decoder.decode
        self.decoded: dict[str, dict[str, Any]] = {}
        self.linked: set[str] = set()  # the objects that hold references: only they are filled
        for object_id, data in reported(store.iter_with_children(project, root_id), progress):
            self.decoded[object_id] = decode(data)
            if _REFERENCE_KEY in data or b"\\u" in data:  # (a key escaped could spell it)
                self.linked.add(object_id)
        self.built: dict[str, dict[str, Any]] = {}

    def resolve(self, object_id: str) -> dict[str, Any]:
        done = self.built.get(object_id)
        if done is not None:
            if self.shared:
                return done
            copied: dict[str, Any] = _copy(done)
            return copied
        body = self.decoded.pop(object_id, None)
        if body is None:
            raise errors.ObjectNotFound(self.project, object_id)
        closure = body.get("__closure")
        for key in RESERVED:
            body.pop(key, None)
        if object_id in self.linked:
            self.fill(body, closure if type(closure) is dict else {})
        self.built[object_id] = body
        return body

    def fill(self, value: dict[str, Any], children: dict[str, Any]) -> None:
        """Put each @-member's objects in place of its references (``@(N)name`` chunks as one
        list again), and do the same inside every other member, where a reference is
        followed only to one of ``children`` (the object's ``__closure``)."""
        for key, member in value.items():
            if type(member) in _SCALARS:
                continue
            if not key.startswith("@"):
                value[key] = self.walk(member, children)
            elif (
                isinstance(member, list) and _CHUNKED.match(key) and all(map(_is_reference, member))
            ):
                data: list[Any] = []
                for ref in member:
                    data += self.resolve(ref["referencedId"])["data"]
                value[key] = data
            elif _is_reference(member):
                value[key] = self.resolve(member["referencedId"])
            elif isinstance(member, list):
                for n, item in enumerate(member):
                    if _is_reference(item):
                        member[n] = self.resolve(item["referencedId"])
                    else:
                        member[n] = self.walk(item, children)
            else:
                self.walk(member, children)

    def walk(self, value: Any, children: dict[str, Any]) -> Any:
        """``value`` with what it holds filled. Other serializers detach members without an
        @ (specklepy: a mesh's vertices, faces and colors, each a list of DataChunk
        references): a reference to one of ``children`` is its object, and a list of them
        all DataChunks is their data as one list, as specklepy's receive reads them. Other
        reference-shaped values are left as they are: decompose keeps them as data."""
        if isinstance(value, dict):
            if _is_reference(value):
                target = value["referencedId"]
                return self.resolve(target) if target in children else value
            self.fill(value, children)
        elif isinstance(value, list) and not _scalars_only(value):
            if children and _are_references_to(value, children):
                objects = [self.resolve(ref["referencedId"]) for ref in value]
                if all(map(_is_data_chunk, objects)):
                    return [item for chunk in objects for item in chunk["data"]]
                return objects
            for n, item in enumerate(value):
                value[n] = self.walk(item, children)
        return value


def _are_references_to(items: list[Any], children: dict[str, Any]) -> bool:
    return all(_is_reference(item) and item["referencedId"] in children for item in items)


def _is_data_chunk(value: dict[str, Any]) -> bool:
    return "DataChunk" in str(value.get("speckle_type")) and isinstance(value.get("data"), list)


def _copy(value: Any) -> Any:
    """A copy of a JSON value sharing no list or dict with it."""
    if type(value) is dict:
        return {k: v if type(v) in _SCALARS else _copy(v) for k, v in value.items()}
    if type(value) is list:
        return value[:] if _scalars_only(value) else [_copy(v) for v in value]
    return value
