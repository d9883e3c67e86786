"""Streamed object bodies, driven directly (no server): what the blocks add up to in each
format and coding, where they are cut, and how a stream ends when its reader fails or its
consumer goes away."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
import zlib
from collections.abc import AsyncIterable, Iterator

import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from objstore import errors
from objstore.server.encoding import encoder
from objstore.server.streaming import StreamStats, stream_objects

_values = st.none() | st.booleans() | st.integers() | st.text(max_size=8)
_objects = st.lists(
    st.tuples(
        st.text("abcdef0123456789", min_size=1, max_size=8),
        st.dictionaries(st.text(max_size=4), _values, max_size=3),
        st.booleans(),  # pretty-printed (newlines inside the stored bytes)
    ),
    max_size=25,
)


def _stored(obj: dict[str, object], pretty: bool) -> bytes:
    return json.dumps(obj, indent=2 if pretty else None).encode()


async def _collect(body: AsyncIterable[bytes]) -> list[bytes]:
    return [block async for block in body]


def _decoded(blocks: list[bytes], coding: str | None) -> bytes:
    data = b"".join(blocks)
    if coding == "zstd":
        return zstandard.ZstdDecompressor().decompressobj().decompress(data)
    if coding == "gzip":
        return zlib.decompress(data, 31)
    return data


@settings(max_examples=60, deadline=None)
@given(
    objects=_objects,
    text=st.booleans(),
    coding=st.sampled_from([None, "zstd", "gzip"]),
    block_bytes=st.integers(1, 120),
)
def test_the_blocks_add_up_to_the_whole_body(objects, text, coding, block_bytes):
    """In any block size and coding, the body is every object once, in order: ``id\\tjson``
    lines (pretty-printed objects made one line) or a JSON array of the stored bytes."""
    pairs = [(object_id, _stored(obj, pretty)) for object_id, obj, pretty in objects]
    stats = StreamStats()
    body = stream_objects(
        lambda: iter(pairs),
        text=text,
        encoder=encoder(coding, gzip_level=1, zstd_level=1) if coding else None,
        block_bytes=block_bytes,
        stats=stats,
    )
    whole = _decoded(asyncio.run(_collect(body)), coding)
    if text:
        lines = whole.split(b"\n")
        assert lines.pop() == b""
        got = [line.split(b"\t", 1) for line in lines]
        assert [i.decode() for i, _ in got] == [i for i, _ in pairs]
        assert [json.loads(d) for _, d in got] == [obj for _, obj, _ in objects]
    else:
        assert whole == b"[" + b",".join(data for _, data in pairs) + b"]"
    assert (stats.started, stats.finished, stats.aborted) == (1, 1, 0)
    assert stats.objects == len(pairs)


def test_blocks_are_cut_at_object_ends_once_they_reach_the_block_size():
    """Plain, every block but the last holds whole lines and at least ``block_bytes`` of
    objects: a client gets objects as they are read, not the body at the end."""
    pairs = [(f"o{n}", b'{"v":"' + b"x" * (n % 7 * 10) + b'"}') for n in range(200)]
    body = stream_objects(
        lambda: iter(pairs), text=True, encoder=None, block_bytes=100, stats=StreamStats()
    )
    blocks = asyncio.run(_collect(body))
    assert len(blocks) > 20
    for block in blocks[:-1]:
        assert block.endswith(b"\n")
        datas = [line.split(b"\t", 1)[1] for line in block.split(b"\n")[:-1]]
        assert sum(map(len, datas)) >= 100
    assert b"".join(blocks).count(b"\n") == 200


def test_a_failing_read_fails_the_stream_after_what_it_sent():
    """An error from the store read reaches the response, which ends aborted, and the
    objects read before it are the ones counted."""

    def objects() -> Iterator[tuple[str, bytes]]:
        for n in range(5):
            yield f"o{n}", b'{"n":%d}' % n
        raise RuntimeError("disk gone")

    stats = StreamStats()
    body = stream_objects(objects, text=True, encoder=None, block_bytes=1, stats=stats)
    got: list[bytes] = []

    async def consume() -> None:
        async for block in body:
            got.append(block)

    with pytest.raises(RuntimeError, match="disk gone"):
        asyncio.run(consume())
    assert got == [b'o%d\t{"n":%d}\n' % (n, n) for n in range(5)]
    assert (stats.finished, stats.aborted, stats.objects) == (0, 1, 5)


def test_a_store_failure_cuts_the_stream_and_logs_it_in_one_line(caplog):
    """A damaged object met after the answer began cannot change its status: the stream ends
    (no exception for the server to print a traceback of), marked cut so that its response
    sends no last chunk, and one error line names the request and the damage."""

    def objects() -> Iterator[tuple[str, bytes]]:
        for n in range(5):
            yield f"o{n}", b'{"n":%d}' % n
        raise errors.CorruptObject("ab" * 16, "checksum mismatch", "o5")

    stats = StreamStats()
    stream = stream_objects(
        objects, text=True, encoder=None, block_bytes=1, stats=stats, label="GET /objects/p/r"
    )
    with caplog.at_level(logging.ERROR, logger="objstore.server"):
        got = asyncio.run(_collect(stream))
    assert got == [b'o%d\t{"n":%d}\n' % (n, n) for n in range(5)]
    assert stream.cut
    assert (stats.finished, stats.aborted, stats.objects) == (0, 1, 5)
    [record] = caplog.records
    assert record.name == "objstore.server.streaming"
    message = record.getMessage()
    assert message.startswith("GET /objects/p/r: answer cut after 55 bytes of its body:")
    assert "CorruptObject: object 'o5' (blob abab" in message
    assert record.exc_info is None


def test_a_stream_that_ends_whole_is_not_cut():
    stream = stream_objects(
        lambda: iter([("a", b"{}")]), text=True, encoder=None, block_bytes=1, stats=StreamStats()
    )
    assert asyncio.run(_collect(stream)) == [b"a\t{}\n"]
    assert not stream.cut


def test_a_consumer_that_goes_away_stops_and_closes_the_read():
    """Closing the body after one block (a client that disconnected) stops the producer
    within a few blocks and closes the store's iterator, which ends its read."""
    closed = threading.Event()
    produced = [0]

    def objects() -> Iterator[tuple[str, bytes]]:
        try:
            for n in range(100_000):
                produced[0] += 1
                yield f"o{n}", b'{"n":%d}' % n
        finally:
            closed.set()

    stats = StreamStats()

    async def first_block_only() -> bytes:
        body = stream_objects(objects, text=True, encoder=None, block_bytes=64, stats=stats)
        async for block in body:
            await body.aclose()
            return block
        raise AssertionError("no block")

    assert asyncio.run(first_block_only()).startswith(b"o0\t")
    assert closed.wait(5)
    deadline = time.monotonic() + 5  # the reader counts what it read as it ends
    while any(t.name == "objstore-stream" for t in threading.enumerate()):
        assert time.monotonic() < deadline, "the stream's reader thread still runs"
        time.sleep(0.01)
    assert produced[0] < 1_000  # a few blocks of ~6 objects, not the 100k
    assert (stats.finished, stats.aborted) == (0, 1)
    assert stats.objects == produced[0]
