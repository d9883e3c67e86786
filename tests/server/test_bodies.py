"""Body parsing in isolation: id lists and multipart uploads with caps."""

from __future__ import annotations

import gzip
import json
import zlib

import pytest
import zstandard
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from objstore import errors
from objstore.server.bodies import (
    BadRequest,
    TooLarge,
    UnsupportedEncoding,
    UploadParser,
    decode_body,
    parse_ids,
    request_codings,
)


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


# payload bytes that look like the start of a boundary, so the parser must hold them back
# and give them up again as data
_near_boundary = st.sampled_from([b"\r\n--XyQ", b"\r\n--Xy", b"\r\n-", b"\r", b"--XyZ", b"\r\n"])
_payload = st.lists(st.binary(max_size=40) | _near_boundary, max_size=12).map(b"".join)


def _gzip_members(data: bytes, cuts: list[int]) -> bytes:
    """``data`` gzip'd as several concatenated members, cut at ``cuts``."""
    points = sorted({min(c, len(data)) for c in cuts})
    pieces = [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]
    return b"".join(gzip.compress(piece, 1) for piece in pieces)


@settings(max_examples=150, deadline=None)
@given(
    parts=st.lists(
        st.tuples(
            _payload,
            st.sampled_from(
                ["application/json", "text/plain", "application/octet-stream", "application/gzip"]
            ),
            st.lists(st.integers(0, 200), max_size=3),  # gzip member cuts
        ),
        min_size=1,
        max_size=4,
    ),
    step=st.integers(1, 300),
)
def test_every_part_comes_out_as_sent_however_the_body_is_cut(parts, step):
    """Each part's bytes (inflated from one gzip member or several) come out exactly, in
    order, for any chunking of the body, with payloads that mimic the boundary."""
    sent = []
    for payload, ctype, cuts in parts:
        if ctype == "application/gzip":
            sent.append((_gzip_members(payload, cuts), ctype))
        elif ctype == "application/octet-stream" and payload[:2] == b"\x1f\x8b":
            sent.append((gzip.compress(payload), ctype))  # it would be taken for gzip: say so
        else:
            sent.append((payload, ctype))
    for data, _ in sent:  # a sender picks a boundary its data does not hold
        framed = b"\r\n" + data + b"\r\n--XyZ"
        assume(framed.find(b"\r\n--XyZ") == len(data) + 2)
    p, arrays = parse(multipart(sent), step=step)
    assert [bytes(a) for a in arrays] == [payload for payload, _, _ in parts]
    assert p.inflated == sum(len(payload) for payload, _, _ in parts)


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


@pytest.mark.parametrize("cut", [3, 7, 9, 11, 13])
def test_a_body_cut_short_before_its_closing_boundary_is_refused(cut):
    """python-multipart's finalize takes a body that stops anywhere: the parts before the cut
    came out and the one cut short was dropped, and the upload was stored as if whole."""
    body = multipart([(b'[{"id":"a"}]', "application/json"), (b'[{"id":"b"}]', "text/plain")])
    whole = len(body)
    with pytest.raises(BadRequest, match=r"^multipart body ends in part 1, before its closing "):
        parse(body[: whole - cut])
    assert [bytes(a) for a in parse(body)[1]] == [b'[{"id":"a"}]', b'[{"id":"b"}]']
    assert parse(body[:-2])[1]  # the CRLF after the close delimiter may be left off


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


# -- request Content-Encoding ------------------------------------------------------------------

_JSON = b'{"objects": "[\\"a\\", \\"b\\"]"}' * 40
_ZSTD = zstandard.ZstdCompressor()


@pytest.mark.parametrize(
    ("header", "encoded"),
    [
        ("gzip", gzip.compress(_JSON)),
        ("x-gzip", gzip.compress(_JSON)),
        ("gzip", gzip.compress(_JSON[:300]) + gzip.compress(_JSON[300:])),  # two members
        ("deflate", zlib.compress(_JSON)),  # zlib-wrapped, as HTTP defines deflate
        ("deflate", zlib.compress(_JSON)[2:-4]),  # raw, as some clients send it
        ("zstd", _ZSTD.compress(_JSON)),
        ("zstd", _ZSTD.compress(_JSON[:300]) + _ZSTD.compress(_JSON[300:])),  # two frames
        ("ZSTD", _ZSTD.compress(_JSON)),
        ("identity", _JSON),
        ("", _JSON),
        ("gzip, zstd", _ZSTD.compress(gzip.compress(_JSON))),  # applied in that order
        ("identity, gzip", gzip.compress(_JSON)),
    ],
    ids=[
        "gzip",
        "x-gzip",
        "gzip-members",
        "deflate-zlib",
        "deflate-raw",
        "zstd",
        "zstd-frames",
        "ZSTD",
        "identity",
        "none",
        "gzip-then-zstd",
        "identity-gzip",
    ],
)
def test_a_body_sent_encoded_decodes_to_what_was_encoded(header, encoded):
    assert decode_body(encoded, request_codings(header), len(_JSON), "id list") == _JSON


@pytest.mark.parametrize(
    ("header", "encoded", "needle"),
    [
        ("gzip", _JSON, "magic bytes"),
        ("gzip", gzip.compress(_JSON)[:-6], "ends before"),
        ("gzip", gzip.compress(_JSON) + b"junk", "ends before"),
        ("deflate", b"\x78\x9cnot deflate at all", "deflate"),
        ("deflate", zlib.compress(_JSON) + b"junk", "4 bytes follow the end"),
        ("zstd", _JSON, "zstd"),
        ("zstd", _ZSTD.compress(_JSON)[:-3], "ends before"),
        ("zstd", _ZSTD.compress(_JSON) + b"junk", "zstd"),
        ("gzip, zstd", _ZSTD.compress(_JSON), "gzip"),
    ],
    ids=[
        "not-gzip",
        "gzip-cut",
        "gzip-junk",
        "not-deflate",
        "deflate-junk",
        "not-zstd",
        "zstd-cut",
        "zstd-junk",
        "one-coding-missing",
    ],
)
def test_a_body_that_is_not_what_its_encoding_says_is_a_400(header, encoded, needle):
    with pytest.raises(BadRequest) as caught:
        decode_body(encoded, request_codings(header), 1 << 20, "id list")
    assert (caught.value.status, caught.value.code) == (400, "BAD_CONTENT_ENCODING")
    assert "id list" in str(caught.value) and needle in str(caught.value)


@pytest.mark.parametrize("header", ["br", "compress", "gzip, br", "zstd;q=1"])
def test_an_encoding_this_server_cannot_undo_is_a_415(header):
    with pytest.raises(UnsupportedEncoding) as caught:
        request_codings(header)
    assert caught.value.status == 415
    assert repr(header.split(", ")[-1]) in str(caught.value)


@pytest.mark.parametrize(
    ("header", "compress"),
    [
        ("gzip", lambda data: gzip.compress(data, 9)),
        ("deflate", lambda data: zlib.compress(data, 9)),
        ("zstd", lambda data: zstandard.ZstdCompressor(level=19).compress(data)),
    ],
    ids=["gzip", "deflate", "zstd"],
)
def test_decoding_stops_at_the_cap_so_a_bomb_costs_no_more(header, compress):
    bomb = compress(b" " * (64 << 20))  # 64 MB of spaces, a few KB sent
    assert len(bomb) < 1 << 20
    with pytest.raises(TooLarge) as caught:
        decode_body(bomb, [header], 1 << 20, "id list")
    assert "1048576 byte limit once decoded" in str(caught.value)
    # exactly at the cap is still taken
    assert decode_body(compress(b" " * (1 << 20)), [header], 1 << 20, "id list") == b" " * (1 << 20)
