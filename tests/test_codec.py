"""Splitting and head decoding."""

from __future__ import annotations

import pytest

from objstore import codec, errors
from objstore.limits import Limits


def test_split_keeps_exact_element_bytes():
    data = b' [ {"a": 1 } ,\n{"b":[1, 2]}\t] '
    assert [bytes(r) for r in codec.split_array(data)] == [b'{"a": 1 }', b'{"b":[1, 2]}']


def test_split_names_the_broken_element_and_its_id():
    data = b'[{"id":"ok"},{"id":"fine"},{"id":"bad-one","x":[1,2,}]'
    with pytest.raises(errors.InvalidJSON) as info:
        codec.split_array(data)
    assert info.value.index == 2 and info.value.object_id == "bad-one"


def test_split_rejects_non_arrays():
    for data in (b'{"id":"x"}', b"", b"42", b'"[..."'):
        with pytest.raises(errors.InvalidBatch):
            codec.split_array(data)
    with pytest.raises(errors.InvalidJSON, match="truncated"):
        codec.split_array(b'[{"id":"a"}, {"id":"b"')  # cut off inside the last element


def test_nesting_names_the_deep_element():
    deep = b'{"id":"deep","v":' + b"[" * 2000 + b"]" * 2000 + b"}"
    with pytest.raises(errors.NestingTooDeep) as info:
        codec.split_array(b'[{"id":"a"},' + deep + b"]")
    assert info.value.index == 1 and info.value.object_id == "deep"


def test_id_insertion_for_objects_without_one():
    rec = codec.decode_record(b'{ "x": 1 }', 0, Limits())
    assert rec.data.startswith(b'{"id":"' + rec.id.encode() + b'", "x": 1 }')
    empty = codec.decode_record(b"{ }", 0, Limits())
    assert empty.data == b'{"id":"' + empty.id.encode() + b'" }'


def test_closure_read_as_dict():
    rec = codec.decode_record(b'{"id":"r","__closure": {"a": 1, "b": 3}}', 0, Limits())
    assert rec.closure == {"a": 1, "b": 3}
    assert codec.decode_record(b'{"id":"r","__closure":{}}', 0, Limits()).closure is None
    assert codec.decode_record(b'{"id":"r","__closure":null}', 0, Limits()).closure is None


def test_check_id():
    assert codec.check_id("abc") is None
    assert codec.check_id("é" * 255) is None
    for bad in ("", "a b", "a\u00a0b", "x\x7f", "y" * 256, 5, None):
        assert codec.check_id(bad) is not None


def test_prepare_rejects_str_and_non_bytes_elements():
    with pytest.raises(errors.InvalidBatch):
        codec.prepare("[]", Limits())  # type: ignore[arg-type]
    with pytest.raises(errors.InvalidBatch):
        codec.prepare([b'{"id":"a"}', 5], Limits())  # type: ignore[list-item]


def test_iterable_elements_are_validated_like_array_elements():
    with pytest.raises(errors.InvalidJSON):
        codec.prepare([b'{"id":"a"} trailing'], Limits())
    with pytest.raises(errors.InvalidUTF8):
        codec.prepare([b'{"id":"a","s":"\xff"}'], Limits())


def test_batch_and_per_object_paths_agree():
    batch = b'[{"id":"a","__closure":{"b":2}},{"x":1},{"id":"c","v":"\xc3\xa9"}]'
    fast = codec.prepare(batch, Limits())
    slow = codec.prepare([bytes(r) for r in codec.split_array(batch)], Limits())
    assert fast == slow
    assert fast[0].closure == {"b": 2} and fast[1].id == slow[1].id


def test_arrays_name_the_part():
    good = b'[{"id":"a"}]'
    with pytest.raises(errors.InvalidId, match=r"part 1 object 1 id 'b c'"):
        codec.prepare_arrays([good, b'[{"id":"ok"},{"id":"b c"}]'], Limits())
    with pytest.raises(errors.InvalidBatch, match="part 0: batch must be a JSON array"):
        codec.prepare_arrays([b'{"id":"a"}'], Limits())
    with pytest.raises(errors.BatchTooLarge):
        codec.prepare_arrays([good] * 10, Limits(max_batch_bytes=50))
