"""Request bodies: id lists (JSON or form-encoded) and multipart object uploads.

Every reader is capped while it streams: a body larger than allowed, or a gzip part that inflates
past the batch limit, is refused as soon as the limit is crossed, so a gzip bomb costs nothing.
"""

from __future__ import annotations

import urllib.parse
import zlib
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Any, cast

import msgspec
import zstandard
from isal import isal_zlib
from python_multipart.multipart import MultipartParser, parse_options_header

from objstore import errors


class BadRequest(Exception):
    """Maps to HTTP 400 with ``code``."""

    status = 400

    def __init__(self, message: str, code: str = "BAD_REQUEST") -> None:
        super().__init__(message)
        self.code = code


class TooLarge(BadRequest):
    """Maps to HTTP 413."""

    status = 413

    def __init__(self, message: str, code: str = "PAYLOAD_TOO_LARGE") -> None:
        super().__init__(message, code)


async def read_capped(stream: AsyncIterator[bytes], cap: int, what: str) -> bytes:
    """The whole body, or TooLarge as soon as it passes ``cap`` bytes. Pieces are joined
    once at the end (a growing bytearray, then bytes of it, copied a 32 MB body 2-3 times)."""
    pieces: list[bytes] = []
    size = 0
    async for chunk in stream:
        size += len(chunk)
        if size > cap:
            raise TooLarge(f"{what} is larger than the {cap} byte limit")
        pieces.append(chunk)
    return b"".join(pieces)


class UnsupportedEncoding(BadRequest):
    """Maps to HTTP 415: a request ``Content-Encoding`` this server cannot undo."""

    status = 415

    def __init__(self, message: str) -> None:
        super().__init__(message, "UNSUPPORTED_CONTENT_ENCODING")


_INFLATE_ERRORS = cast(tuple[type[Exception], ...], (isal_zlib.error, zlib.error))
_DECODE_ERRORS = (*_INFLATE_ERRORS, cast(type[Exception], zstandard.ZstdError))
REQUEST_ENCODINGS = ("zstd", "gzip", "deflate")  # as server-info states them
_UNDONE = {*REQUEST_ENCODINGS, "x-gzip"}


def request_codings(header: str) -> list[str]:
    """The codings a ``Content-Encoding`` header lists, in the order they were applied
    (``identity`` dropped); UnsupportedEncoding for one this server cannot undo."""
    codings = [c.strip().lower() for c in header.split(",") if c.strip()]
    codings = [c for c in codings if c != "identity"]
    for coding in codings:
        if coding not in _UNDONE:
            raise UnsupportedEncoding(
                f"Content-Encoding {coding!r} is not supported: "
                "send the body as it is, or gzip, deflate or zstd it"
            )
    return codings


def decode_body(body: bytes, codings: list[str], cap: int, what: str) -> bytes:
    """A body sent in ``codings`` (as :func:`request_codings` reads its header) as its plain
    bytes, as Speckle's server (body-parser) inflates gzip and deflate JSON bodies; zstd too.
    TooLarge as soon as the plain bytes pass ``cap``, so a bomb costs no more than the cap."""
    for coding in reversed(codings):
        try:
            body = _zstd_decode(body, cap) if coding == "zstd" else _inflate(body, coding, cap)
        except _DECODE_ERRORS as exc:
            raise BadRequest(
                f"{what} is not valid {coding} data, as its Content-Encoding says ({exc})",
                "BAD_CONTENT_ENCODING",
            ) from None
        if len(body) > cap:
            raise TooLarge(f"{what} is larger than the {cap} byte limit once decoded")
    return body


def _inflate(body: bytes, coding: str, cap: int) -> bytes:
    """gzip (members one after another, as gzip files may be) or deflate: zlib-wrapped as
    HTTP defines it, or raw as some clients send it."""
    if coding == "deflate":  # a zlib header: method 8, and a check that makes it a multiple of 31
        wrapped = len(body) > 1 and body[0] & 0x0F == 8 and (body[0] << 8 | body[1]) % 31 == 0
        wbits = zlib.MAX_WBITS if wrapped else -zlib.MAX_WBITS
    elif body[:2] != b"\x1f\x8b":
        raise zlib.error("it does not start with gzip's magic bytes 1f 8b")
    else:
        wbits = zlib.MAX_WBITS | 16
    out: list[bytes] = []
    size = 0
    rest = body
    while rest and size <= cap:
        inflater = isal_zlib.decompressobj(wbits=wbits)
        piece = inflater.decompress(rest, cap + 1 - size)
        out.append(piece)
        size += len(piece)
        if not inflater.eof:
            if size > cap:  # stopped there: the caller says so
                break
            raise zlib.error("the data ends before its end of stream")
        rest = inflater.unused_data
        if rest and coding == "deflate":  # one stream only; gzip members may follow each other
            raise zlib.error(f"{len(rest)} bytes follow the end of its stream")
    return b"".join(out)


def _zstd_decode(body: bytes, cap: int) -> bytes:
    """zstd frames one after another. Input goes in slices no one of which can make more than
    what is left of ``cap`` (a zstd block makes at most 32768 bytes per byte), so a bomb
    stops at the cap; a frame cut short is an error, where zstd's readers end quietly."""
    view = memoryview(body)
    out: list[bytes] = []
    size = pos = 0
    decoder = zstandard.ZstdDecompressor().decompressobj()
    while pos < len(view) and size <= cap:
        step = max(1024, (cap + 1 - size) // 32768)
        piece = decoder.decompress(view[pos : pos + step])
        pos = min(pos + step, len(view))
        out.append(piece)
        size += len(piece)
        if decoder.eof:  # the next frame starts with what this one left over
            pos -= len(decoder.unused_data)
            decoder = zstandard.ZstdDecompressor().decompressobj()
            if pos >= len(view):
                return b"".join(out)
    if size <= cap and not decoder.eof:
        raise zstandard.ZstdError("the data ends before its frame does")
    return b"".join(out)


_ids_decoder = msgspec.json.Decoder(list[str])
_ids_or_text = msgspec.json.Decoder(dict[str, str | list[str]])


def parse_ids(body: bytes, content_type: str, max_ids: int) -> list[str]:
    """The ``objects`` field of a diff/getobjects body: a JSON-encoded list of ids.

    Accepts ``application/json`` (``{"objects": "[...]"}``, or the list itself) and
    ``application/x-www-form-urlencoded`` (``objects=[...]``, as specklepy sends it).
    """
    media = content_type.split(";")[0].strip().lower()
    raw: str | list[str] | None
    if media == "application/x-www-form-urlencoded":
        fields = urllib.parse.parse_qs(body.decode("utf-8", "replace"), max_num_fields=16)
        values = fields.get("objects")
        raw = values[0] if values else None
    elif media in ("application/json", ""):
        try:
            doc = _ids_or_text.decode(body)
        except msgspec.DecodeError as exc:
            raise BadRequest(
                f'body must be a JSON object {{"objects": "<JSON list of ids>"}}: {exc}',
                "INVALID_OBJECTS_FIELD",
            ) from None
        raw = doc.get("objects")
    else:
        raise BadRequest(
            f"unsupported content type {media!r}: send application/json or form-encoded",
            "UNSUPPORTED_MEDIA_TYPE",
        )
    if raw is None:
        raise BadRequest(
            'missing "objects" field (a JSON-encoded list of ids)', "INVALID_OBJECTS_FIELD"
        )
    if isinstance(raw, str):
        try:
            ids = _ids_decoder.decode(raw)
        except msgspec.DecodeError as exc:
            raise BadRequest(
                f'"objects" must be a JSON-encoded list of id strings: {exc}',
                "INVALID_OBJECTS_FIELD",
            ) from None
    else:
        ids = raw
    if len(ids) > max_ids:
        raise TooLarge(
            f"{len(ids)} ids in one request, over the {max_ids} id limit", "TOO_MANY_IDS"
        )
    return ids


GZIP_TYPES = {"application/gzip", "application/x-gzip"}
PLAIN_TYPES = {"application/json", "text/plain", "application/octet-stream", ""}


@dataclass
class _Part:
    index: int
    headers: dict[bytes, bytes] = field(default_factory=dict)
    media: str = ""
    gzip: bool = False
    inflater: Any = None
    pieces: list[bytes | memoryview] = field(default_factory=list)  # joined at the part's end
    sniffed: bool = False


class UploadParser:
    """Streams a multipart/form-data upload into raw objects, enforcing the batch limit."""

    def __init__(self, content_type: str, max_request: int, max_batch: int) -> None:
        media, params = parse_options_header(content_type)
        if media != b"multipart/form-data":
            raise BadRequest(
                f"upload must be multipart/form-data, got {media.decode(errors='replace')!r}",
                "NOT_MULTIPART",
            )
        boundary = params.get(b"boundary")
        if not boundary:
            raise BadRequest("multipart upload without a boundary", "NO_BOUNDARY")
        self._boundary = boundary.decode("latin-1")
        self.max_request = max_request
        self.max_batch = max_batch
        self.received = 0
        self.inflated = 0
        self.parts: list[_Part] = []
        self.arrays: list[bytes | memoryview] = []
        self._field = b""
        self._value = b""
        self._closed = False  # the close delimiter (--boundary--) was read
        self._parser = MultipartParser(
            boundary,
            {
                "on_part_begin": self._on_part_begin,
                "on_header_field": self._on_header_field,
                "on_header_value": self._on_header_value,
                "on_header_end": self._on_header_end,
                "on_headers_finished": self._on_headers_finished,
                "on_part_data": self._on_part_data,
                "on_part_end": self._on_part_end,
                "on_end": self._on_end,
            },
        )

    def feed(self, chunk: bytes) -> None:
        if type(chunk) is not bytes:  # parts keep views into what is fed: it must not change
            chunk = bytes(chunk)
        self.received += len(chunk)
        if self.received > self.max_request:
            raise TooLarge(f"request body is larger than the {self.max_request} byte limit")
        try:
            self._parser.write(chunk)
        except (BadRequest, errors.ObjstoreError):
            raise
        except Exception as exc:  # python-multipart's own parse errors
            raise BadRequest(f"malformed multipart body: {exc}", "BAD_MULTIPART") from None

    def parse(self, chunks: Iterable[bytes]) -> list[bytes | memoryview]:
        """Feed every chunk and finish: the inflated JSON array of each part (run off-loop)."""
        for chunk in chunks:
            self.feed(chunk)
        return self.finish()

    def finish(self) -> list[bytes | memoryview]:
        try:
            self._parser.finalize()
        except Exception as exc:
            raise BadRequest(f"malformed multipart body: {exc}", "BAD_MULTIPART") from None
        if not self.parts:
            raise BadRequest("multipart upload has no parts", "NO_PARTS")
        if not self._closed:  # python-multipart's finalize does not check (it says so)
            raise BadRequest(
                f"multipart body ends in part {len(self.parts) - 1}, before its closing "
                f"boundary '--{self._boundary}--': it was cut short, so none of it is stored",
                "BAD_MULTIPART",
            )
        return self.arrays

    # -- python-multipart callbacks ------------------------------------------------------------

    def _on_end(self) -> None:
        self._closed = True

    def _on_part_begin(self) -> None:
        self.parts.append(_Part(index=len(self.parts)))

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _on_header_end(self) -> None:
        self.parts[-1].headers[self._field.lower()] = self._value
        self._field = self._value = b""

    def _on_headers_finished(self) -> None:
        part = self.parts[-1]
        media = part.headers.get(b"content-type", b"").split(b";")[0].strip().lower().decode()
        part.media = media
        if media in GZIP_TYPES:
            part.gzip = True
            part.inflater = isal_zlib.decompressobj(wbits=isal_zlib.MAX_WBITS | 16)
        elif media not in PLAIN_TYPES:
            raise BadRequest(
                f"part {part.index}: unsupported content type {media!r} "
                f"(use application/gzip, application/json, text/plain or application/octet-stream)",
                "UNSUPPORTED_PART_TYPE",
            )

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        part = self.parts[-1]
        # a view, not a copy: ``data`` is bytes (the body fed, or the parser's boundary)
        chunk = memoryview(data)[start:end]
        if not part.sniffed and chunk:
            part.sniffed = True
            if part.media == "application/octet-stream" and bytes(chunk[:2]) == b"\x1f\x8b":
                part.gzip = True
                part.inflater = isal_zlib.decompressobj(wbits=isal_zlib.MAX_WBITS | 16)
        if part.gzip:
            self._inflate(part, bytes(chunk))  # compressed: the copy is the small side
        else:
            self._append(part, chunk)

    def _append(self, part: _Part, chunk: bytes | memoryview) -> None:
        self.inflated += len(chunk)
        if self.inflated > self.max_batch:
            raise errors.BatchTooLarge(
                f"request objects total more than the {self.max_batch} byte batch limit "
                f"(counted after decompression, in part {part.index})",
                limit=self.max_batch,
                size=self.inflated,
            )
        if chunk:
            part.pieces.append(chunk)

    def _inflate(self, part: _Part, chunk: bytes) -> None:
        inflater = part.inflater
        assert inflater is not None
        try:
            while chunk:
                if inflater.eof:  # concatenated gzip members
                    chunk = inflater.unused_data + chunk
                    inflater = part.inflater = isal_zlib.decompressobj(
                        wbits=isal_zlib.MAX_WBITS | 16
                    )
                budget = self.max_batch - self.inflated + 1
                self._append(part, inflater.decompress(chunk, budget))
                chunk = inflater.unconsumed_tail
                if inflater.eof and inflater.unused_data:
                    chunk = inflater.unused_data + chunk
                    inflater = part.inflater = isal_zlib.decompressobj(
                        wbits=isal_zlib.MAX_WBITS | 16
                    )
        except _INFLATE_ERRORS as exc:
            raise BadRequest(f"part {part.index}: invalid gzip data ({exc})", "BAD_GZIP") from None

    def _on_part_end(self) -> None:
        part = self.parts[-1]
        if part.gzip:
            inflater = part.inflater
            assert inflater is not None
            if not inflater.eof:
                raise BadRequest(f"part {part.index}: gzip stream is truncated", "BAD_GZIP")
        pieces = part.pieces
        # one plain piece (the usual part) stays a view into the body: the records copy
        # each object's bytes out of it
        self.arrays.append(pieces[0] if len(pieces) == 1 else b"".join(pieces))
        part.pieces = []
