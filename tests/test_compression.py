"""The blob codec."""

from __future__ import annotations

import pytest

from objstore import graphgen
from objstore.compression import Codec, CodecError, MissingDictionary, train_dictionary


def test_roundtrip_with_and_without_dictionary():
    samples = [d for _, d in graphgen.generate(3000, seed=9).objects if len(d) < 4096]
    trained = train_dictionary(samples)
    assert trained is not None
    codec = Codec()
    codec.add_dictionary(7, trained)
    for dict_id in (0, 7):
        blobs = codec.compress_many(samples[:200], dict_id)  # multi-threaded path
        assert [codec.decompress(b) for b in blobs] == samples[:200]
        decode = codec.decoder()
        assert [decode(b) for b in codec.compress_many(samples[:3], dict_id)] == samples[:3]
    incompressible = [bytes(range(7))]
    assert codec.compress_many(incompressible)[0][0] == 0  # stored raw


def test_unknown_dictionary_and_damage():
    writer = Codec()
    writer.add_dictionary(
        3, train_dictionary([b'{"id":"%d","v":[1,2,3]}' % i for i in range(500)]) or b""
    )
    blob = writer.compress_many([b'{"id":"x","v":[1,2,3]}' * 20], 3)[0]
    with pytest.raises(MissingDictionary):
        Codec().decompress(blob)
    with pytest.raises(CodecError):
        writer.decompress(blob[:8] + b"garbage")
    with pytest.raises(CodecError):
        writer.decompress(b"\x09abc")
