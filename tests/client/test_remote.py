"""Decoding of streamed responses, as Remote's downloads read them."""

from __future__ import annotations

import gzip
from collections.abc import Iterator

import httpx
import pytest
import zstandard

from objstore import errors
from objstore.client.remote import ACCEPT_ENCODING, Remote, iter_decoded

BODY = b"".join(b'o%05d\t{"id":"o%05d","n":%d}\n' % (i, i, i) for i in range(4000))
HALF = BODY.index(b"o02000")


class Pieces(httpx.SyncByteStream):
    """A body that arrives in small pieces, cut across frame and member boundaries."""

    def __init__(self, data: bytes, size: int = 7) -> None:
        self.data, self.size = data, size

    def __iter__(self) -> Iterator[bytes]:
        for start in range(0, len(self.data), self.size):
            yield self.data[start : start + self.size]


def response(data: bytes, coding: str | None) -> httpx.Response:
    headers = {"content-encoding": coding} if coding else {}
    return httpx.Response(200, headers=headers, stream=Pieces(data))


def zstd_frames(*parts: bytes) -> bytes:
    return b"".join(zstandard.ZstdCompressor(level=1).compress(p) for p in parts)


@pytest.mark.parametrize(
    ("coding", "encoded"),
    [
        ("zstd", zstd_frames(BODY)),
        ("zstd", zstd_frames(BODY[:HALF], BODY[HALF:])),  # two frames back to back
        ("gzip", gzip.compress(BODY)),
        ("gzip", gzip.compress(BODY[:HALF]) + gzip.compress(BODY[HALF:])),  # two members
        (None, BODY),
        ("identity", BODY),
    ],
)
def test_streamed_bodies_decode_whatever_the_cuts(coding, encoded):
    assert b"".join(iter_decoded(response(encoded, coding))) == BODY


def test_a_coding_we_did_not_ask_for_is_an_error_not_garbage():
    with pytest.raises(errors.UnreadableResponse, match="'br'"):
        b"".join(iter_decoded(response(b"\x1b\x00\x00", "br")))


def test_remote_asks_for_the_codings_it_can_decode():
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["accept-encoding"])
        return httpx.Response(200, json={"a": True})

    remote = Remote("http://127.0.0.1:9", "t", "p", transport=httpx.MockTransport(handler))
    assert remote.diff(["a"]) == {"a": True}
    assert seen == [ACCEPT_ENCODING] == ["zstd, gzip"]
