"""What ``objstore push`` reads: a JSON document, a JSON array of objects or a dump."""

from __future__ import annotations

import codecs
import contextlib
import itertools
import sys
from array import array
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import msgspec

import objstore
from objstore import codec, errors, graph, graphgen

# a progress bar maker, as progress.bar (label, total, counted) -> context of a ticker
Bars = Callable[..., contextlib.AbstractContextManager[Any]]


@contextlib.contextmanager
def _no_bars(label: str, total: int | None, counted: bool = True) -> Iterator[None]:
    yield None


def _count_lines(path: Path) -> int | None:
    """Lines in a regular file (blank ones too), counted a megabyte at a time, for a progress
    total; None for a pipe, which can be read only once."""
    if not path.is_file():
        return None
    count, last = 0, b"\n"
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            count += chunk.count(b"\n")
            last = chunk[-1:]
    return count + (last != b"\n")


_SCALAR_STARTS = frozenset(b'"-0123456789tfn')  # JSON values other than objects and arrays


def _has_children(data: bytes) -> bool:
    """Whether an object's JSON lists children (a non-empty ``__closure``); one that is not
    valid says no here, and is named by its line when it is sent."""
    try:
        return bool(codec.decode_record(data, 0, codec.UNLIMITED).closure)
    except errors.InvalidObject:
        return False


class Source:
    """What ``push`` sends: a JSON document's objects (decomposed); a JSON array of stored
    objects, root first (what the download route serves as application/json); or an
    ``id\\tjson`` dump's, read as they are sent, a window at a time: a push of millions of
    objects holds a few windows of them, not the file. A dump is sent in its order, its last
    line the root, unless its first object has children: then it is root first (as ``pull``
    and the download route write it) and that root is sent last. ``lines`` keeps each dump
    object's line number (4 bytes an object) to name a bad one by; ``elements`` each array
    object's place in the array. A UTF-8 byte order mark before the JSON is skipped."""

    def __init__(self, path: Path, fh: Any, progress: Bars | None = None) -> None:
        self.path = path
        self.lines: array[int] | None = None
        self.elements: list[int] | None = None
        bar = progress or _no_bars
        if fh.peek(3)[:3] == codecs.BOM_UTF8:  # Windows editors and PowerShell write one
            fh.read(3)
        head = fh.peek(1 << 16).lstrip()
        if head[:1] == b"[":
            with bar(f"read {path.name}", None) as tick:
                self._read_array(fh.read(), tick)
            return
        if head and head[0] in _SCALAR_STARTS and b"\t" not in head.split(b"\n", 1)[0]:
            raise objstore.InvalidBatch(
                f"{path} is neither a JSON document (an object), a JSON array of objects, "
                f"nor an id<TAB>json dump: it starts {head[:40]!r}"
            )
        if head[:1] == b"{":
            with bar(f"read {path.name}", None, False):
                try:
                    doc = msgspec.json.decode(fh.read())
                except msgspec.DecodeError as exc:
                    raise objstore.InvalidJSON(f"{path} is not valid JSON: {exc}") from None
                except RecursionError:
                    deep = f"{path}: the document nests too deeply to read"
                    raise errors.NestingTooDeep(deep) from None
            try:
                with bar("decompose", None) as tick:
                    _, decomposed = graph.decompose(doc, progress=tick)
            except errors.InvalidObject as exc:
                raise exc.located(str(path)) from None
            self.objects: Iterable[tuple[str, bytes]] = decomposed
            self.count: int | None = len(decomposed)
            return
        self.lines = array("I")
        numbered = graphgen.dump_lines(fh, str(path))
        first = next(numbered, None)
        if first is None:
            raise objstore.InvalidBatch(f"{path}: empty dump")
        if _has_children(first[2]):
            ordered = itertools.chain(numbered, [first])
        else:
            ordered = itertools.chain([first], numbered)
        self.objects = self._objects(ordered)
        self.count = _count_lines(path)

    def _read_array(self, data: bytes, tick: Any) -> None:
        read = graphgen.read_array(data, str(self.path), tick)
        if read.outside:  # all still go up; the root printed may not be the one meant
            print(
                f"note: {read.outside:,} of the {len(read.objects):,} objects in {self.path} are"
                " not in its first object's __closure: it may not be one graph with its root "
                "first",
                file=sys.stderr,
            )
        self.elements = read.places
        self.objects = read.objects
        self.count = len(read.objects)

    def _objects(self, numbered: Iterator[tuple[int, str, bytes]]) -> Iterator[tuple[str, bytes]]:
        assert self.lines is not None
        for number, object_id, data in numbered:
            self.lines.append(number)
            yield object_id, data

    def where(self, index: int) -> str:
        """The place of the ``index``-th object: its line, or its place in the document."""
        if self.elements is not None:
            return f"{self.path}: element {self.elements[index]}"
        if self.lines is None:
            return f"{self.path}: object {index}"
        return f"{self.path} line {self.lines[index]}"
