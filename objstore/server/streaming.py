"""Streamed object responses: `id\\tjson` lines or a JSON array, compressed in ~1 MB blocks.

Blocks are built in one thread and compressed in another (zstd or ISA-L gzip, both outside the
GIL), so reading the store and compressing overlap on two cores while the event loop
only moves finished blocks. A client that disconnects stops the store read within a few blocks.
A store failure met after the answer began (a damaged object) cannot change its status: it is
logged in one line and the body ends without its last chunk, so the connection closes mid-body
and every client fails the read.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import AsyncGenerator, Callable, Generator, Iterator
from dataclasses import dataclass
from typing import Any

import msgspec
from starlette.concurrency import run_in_threadpool
from starlette.responses import StreamingResponse
from starlette.types import Send

from objstore import errors
from objstore.server.encoding import Encoder

Objects = Iterator[tuple[str, bytes]]
log = logging.getLogger(__name__)


@dataclass
class StreamStats:
    """Counters the tests and the health route read: started, finished, aborted, objects."""

    started: int = 0
    finished: int = 0
    aborted: int = 0
    objects: int = 0

    def __post_init__(self) -> None:
        self._lock = threading.Lock()

    def add(self, **counts: int) -> None:
        with self._lock:
            for key, value in counts.items():
                setattr(self, key, getattr(self, key) + value)


def _one_line(data: bytes) -> bytes:
    """Pretty-printed JSON compacted onto one line: for the line format only."""
    return msgspec.json.format(data, indent=-1)


def _blocks(
    objects: Objects, text: bool, block_bytes: int, stop: threading.Event, counted: list[int]
) -> Generator[bytes, None, None]:
    """The body's blocks, each once it holds ``block_bytes`` of objects. Every object read is
    added to ``counted`` when the blocks end, however they end (done, stopped, failed or
    closed)."""
    parts: list[bytes] = [] if text else [b"["]
    size = 0
    n = 0
    try:
        for object_id, data in objects:
            if text:
                if b"\n" in data or b"\r" in data:
                    data = _one_line(data)
                parts += (object_id.encode(), b"\t", data, b"\n")  # one copy, in the join
            else:
                if n:
                    parts.append(b",")
                parts.append(data)
            n += 1
            size += len(data)
            if size >= block_bytes:
                yield b"".join(parts)
                parts.clear()
                size = 0
                if stop.is_set():  # checked per block: the reader stops within one more block
                    return
    finally:
        counted[0] += n
    if not text:
        parts.append(b"]")
    if parts:
        yield b"".join(parts)


class ObjectStream:
    """The async byte stream of one streamed answer. ``cut`` is True once the store failed
    after the answer began: its body must then end without the last chunk."""

    def __init__(self, make_body: Callable[[ObjectStream], AsyncGenerator[bytes, None]]) -> None:
        self.cut = False
        self._body = make_body(self)

    def __aiter__(self) -> AsyncGenerator[bytes, None]:
        return self._body

    async def aclose(self) -> None:
        await self._body.aclose()


class ObjectStreamResponse(StreamingResponse):
    """A StreamingResponse of an :class:`ObjectStream` that sends no last chunk when the stream
    is cut: the server then closes the connection mid-body, and no client takes the objects
    before the failure for the whole answer (specklepy's would, silently)."""

    def __init__(self, stream: ObjectStream, **kwargs: Any) -> None:
        super().__init__(stream, **kwargs)
        self._stream = stream

    async def stream_response(self, send: Send) -> None:
        start = {"type": "http.response.start", "status": self.status_code}
        await send({**start, "headers": self.raw_headers})
        async for chunk in self._stream:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        if not self._stream.cut:
            await send({"type": "http.response.body", "body": b"", "more_body": False})


def stream_objects(
    make_objects: Callable[[], Objects],
    *,
    text: bool,
    encoder: Encoder | None,
    block_bytes: int,
    stats: StreamStats,
    label: str = "stream",
) -> ObjectStream:
    """The byte stream of an answer (for :class:`ObjectStreamResponse`); ``encoder`` None sends
    it plain. A store failure (an objstore error) cuts it, logged with ``label`` (the request);
    any other error is raised."""
    stop = threading.Event()
    counted = [0]
    ready: queue.Queue[bytes | BaseException | None] = queue.Queue(maxsize=4)

    def offer(item: bytes | BaseException | None) -> bool:
        """Queue an item unless the response has stopped listening (never blocks forever)."""
        while not stop.is_set():
            try:
                ready.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def read() -> None:
        """Producer thread: store -> raw blocks, until done, stopped or failed. It alone
        touches the object iterator, and closes it (ending any store read) when it stops."""
        objects: Objects | None = None
        blocks: Generator[bytes, None, None] | None = None
        try:
            objects = make_objects()
            blocks = _blocks(objects, text, block_bytes, stop, counted)
            for block in blocks:
                if not offer(block):
                    return
            offer(None)
        except BaseException as exc:  # handed to the response, which fails the stream
            offer(exc)
        finally:
            if blocks is not None:  # one left mid-body counts the objects it read
                blocks.close()
            close = getattr(objects, "close", None)
            if close is not None:
                close()
            stats.add(objects=counted[0])

    def next_block() -> bytes | None:
        """Worker thread: the next raw block, compressed ("" while it buffers; None at end)."""
        item = ready.get()
        if isinstance(item, BaseException):
            raise item
        if item is None:
            return None
        return encoder.compress(item) if encoder else item

    async def body(stream: ObjectStream) -> AsyncGenerator[bytes, None]:
        stats.add(started=1)
        producer = threading.Thread(target=read, name="objstore-stream", daemon=True)
        producer.start()
        done = False
        sent = 0
        try:
            while True:
                try:
                    block = await run_in_threadpool(next_block)
                except errors.ObjstoreError as exc:  # the status is sent: all we can do is cut
                    log.error(
                        "%s: answer cut after %d bytes of its body: %s: %s",
                        label,
                        sent,
                        type(exc).__name__,
                        exc,
                    )
                    stream.cut = True
                    return
                if block is None:
                    break
                if block:
                    sent += len(block)
                    yield block
            if encoder is not None:
                yield encoder.flush()
            done = True
        finally:
            stop.set()  # the producer notices within one block or 0.1 s, then exits
            stats.add(**({"finished": 1} if done else {"aborted": 1}))

    return ObjectStream(body)
