"""Body parsing in isolation: id lists and multipart uploads with caps."""

from __future__ import annotations

import gzip
import json

import pytest

from objstore import errors
from objstore.server.bodies import BadRequest, TooLarge, UploadParser, parse_ids


def multipart(parts: list[tuple[bytes, str]], boundary: str = "XyZ") -> bytes:
    out = b""
    for i, (data, ctype) in enumerate(parts):
        out += (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="b{i}"; '
                f'filename="b{i}"\r\nContent-Type: {ctype}\r\n\r\n'
            ).encode()
            + data
            + b"\r\n"
        )
    return out + f"--{boundary}--\r\n".encode()


def parse(body: bytes, max_request: int = 1 << 20, max_batch: int = 1 << 20, step: int = 7):
    p = UploadParser("multipart/form-data; boundary=XyZ", max_request, max_batch)
    for i in range(0, len(body), step):  # tiny chunks: boundaries split anywhere
        p.feed(body[i : i + step])
    return p, p.finish()


def test_parts_split_in_order_across_chunk_boundaries():
    body = multipart(
        [
            (gzip.compress(b'[{"id":"a"},{"id":"b"}]'), "application/gzip"),
            (b'[{"id":"c"}]', "text/plain"),
        ]
    )
    _, arrays = parse(body)
    assert arrays == [b'[{"id":"a"},{"id":"b"}]', b'[{"id":"c"}]']


def test_a_body_fed_whole_gives_each_plain_part_exactly():
    """As the app feeds it: one chunk, each plain part cut out of it without copies."""
    first, second = b'[{"id":"a"},{"id":"b"}]', b'[{"id":"c"}]'
    body = multipart([(first, "application/json"), (second, "text/plain")])
    p = UploadParser("multipart/form-data; boundary=XyZ", 1 << 20, 1 << 20)
    p.feed(body)
    assert [bytes(a) for a in p.finish()] == [first, second]
    fed = bytearray(body)  # a buffer the caller may reuse: the parts must not change with it
    p = UploadParser("multipart/form-data; boundary=XyZ", 1 << 20, 1 << 20)
    p.feed(fed)  # type: ignore[arg-type]
    fed[:] = b"x" * len(fed)
    assert [bytes(a) for a in p.finish()] == [first, second]


def test_concatenated_gzip_members_and_sniffed_octet_stream():
    data = gzip.compress(b'[{"id":"a"},') + gzip.compress(b'{"id":"b"}]')
    _, arrays = parse(multipart([(data, "application/octet-stream")]))
    assert arrays == [b'[{"id":"a"},{"id":"b"}]']


def test_inflation_stops_at_the_batch_limit():
    bomb = gzip.compress(b"[" + b" " * (50 << 20) + b"]")
    with pytest.raises(errors.BatchTooLarge):
        parse(multipart([(bomb, "application/gzip")]), max_request=1 << 30, step=1 << 16)


def test_request_cap_counts_bytes_as_sent():
    with pytest.raises(TooLarge):
        parse(multipart([(b"[" + b" " * 5000 + b"]", "application/json")]), max_request=4000)


def test_headers_and_shapes():
    with pytest.raises(BadRequest, match="multipart/form-data"):
        UploadParser("application/json", 10, 10)
    with pytest.raises(BadRequest, match="boundary"):
        UploadParser("multipart/form-data", 10, 10)
    with pytest.raises(BadRequest, match="no parts"):
        parse(b"--XyZ--\r\n")


def test_parse_ids_forms():
    ids = ["a", "b"]
    assert (
        parse_ids(json.dumps({"objects": json.dumps(ids)}).encode(), "application/json", 5) == ids
    )
    assert parse_ids(json.dumps({"objects": ids}).encode(), "application/json", 5) == ids
    form = b"objects=" + json.dumps(ids).replace(" ", "").encode().replace(b'"', b"%22")
    assert parse_ids(form, "application/x-www-form-urlencoded; charset=utf-8", 5) == ids
    with pytest.raises(TooLarge):
        parse_ids(json.dumps({"objects": ids}).encode(), "application/json", 1)
