"""Content-coding negotiation and the response compressors."""

from __future__ import annotations

import gzip

import pytest
import zstandard

from objstore.server import encoding


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("", None),
        ("identity", None),
        ("gzip", "gzip"),
        ("gzip, deflate", "gzip"),
        ("gzip, deflate, zstd", "zstd"),
        ("ZSTD", "zstd"),
        ("zstd;q=0, gzip", "gzip"),
        ("zstd;q=0.5, gzip;q=0.8", "gzip"),
        ("zstd;q=0.8, gzip;q=0.8", "zstd"),
        ("gzip;q=0", None),
        ("br", None),
        ("*", "zstd"),
        ("*;q=0.1, gzip", "gzip"),
        ("gzip;q=nonsense", None),
    ],
)
def test_pick_follows_the_clients_q_values(header, expected):
    assert encoding.pick(header) == expected


BLOCKS = [
    b"".join(b'id%06d\t{"id":"id%06d","v":%d}\n' % (i, i, i) for i in range(k, k + 3000))
    for k in range(0, 12000, 3000)
]


def test_zstd_stream_decodes_block_by_block():
    enc = encoding.encoder("zstd", gzip_level=1, zstd_level=1)
    dec = zstandard.ZstdDecompressor().decompressobj()
    for block in BLOCKS:
        # each block is flushed: the client can decode it before the next one is built
        assert dec.decompress(enc.compress(block)) == block
    assert dec.decompress(enc.flush()) == b""
    assert dec.eof


def test_gzip_stream_round_trips():
    enc = encoding.encoder("gzip", gzip_level=1, zstd_level=1)
    body = b"".join(enc.compress(block) for block in BLOCKS) + enc.flush()
    assert gzip.decompress(body) == b"".join(BLOCKS)


@pytest.mark.parametrize("coding", ["zstd", "gzip"])
def test_whole_body_compression_round_trips(coding):
    data = BLOCKS[0]
    packed = encoding.compress(data, coding, gzip_level=1, zstd_level=3)
    assert len(packed) < len(data) // 3
    assert encoding.compress(data, coding, gzip_level=1, zstd_level=3) == packed  # reused context
    if coding == "zstd":
        assert zstandard.ZstdDecompressor().decompress(packed) == data
    else:
        assert gzip.decompress(packed) == data
