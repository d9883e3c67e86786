"""Splitting and head decoding."""

from __future__ import annotations

import json

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from objstore import codec, errors
from objstore.limits import Limits


def test_split_keeps_exact_element_bytes():
    data = b' [ {"a": 1 } ,\n{"b":[1, 2]}\t] '
    assert [bytes(r) for r in codec.split_array(data)] == [b'{"a": 1 }', b'{"b":[1, 2]}']


@given(st.lists(st.dictionaries(st.text(max_size=5), st.integers()), max_size=6))
def test_json_array_is_what_split_array_splits(objects):
    items = [json.dumps(o).encode() for o in objects]
    body = codec.json_array(items)
    assert json.loads(body) == objects
    assert [bytes(r) for r in codec.split_array(body)] == items


_SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()


@settings(max_examples=100, deadline=None)
@given(
    body=st.dictionaries(st.text(max_size=5), _SCALARS, max_size=4),
    object_id=st.text("0123456789abcdef", min_size=1, max_size=32),
)
def test_with_id_of_compact_json_is_the_encoding_with_the_id_first(body, object_id):
    """On a compact body, with_id gives the bytes encoding the id in first would give."""
    rest = {k: v for k, v in body.items() if k != "id"}
    expected = msgspec.json.encode({"id": object_id, **rest})
    assert codec.with_id(msgspec.json.encode(rest), object_id) == expected


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"{}", b'{"id":"ab"}'),
        (b" { \t\n} ", b' {"id":"ab" \t\n} '),
        (b'{"a":1}', b'{"id":"ab","a":1}'),
        (b'\n{ "a" : [1, {}] }\n', b'\n{"id":"ab", "a" : [1, {}] }\n'),
    ],
)
def test_with_id_leaves_every_other_byte_as_sent(data, expected):
    """The id goes in after the opening brace, with a comma only before another member;
    whitespace anywhere stays where it was, and the result is the object with its id."""
    out = codec.with_id(data, "ab")
    assert out == expected
    assert json.loads(out) == {"id": "ab", **json.loads(data)}
    assert next(iter(json.loads(out))) == "id"


def test_split_names_the_broken_element_and_its_id():
    data = b'[{"id":"ok"},{"id":"fine"},{"id":"bad-one","x":[1,2,}]'
    with pytest.raises(errors.InvalidJSON) as info:
        codec.split_array(data)
    assert info.value.index == 2 and info.value.object_id == "bad-one"


# text that a scan for element ends could mistake for structure: brackets, braces, commas,
# colons and quotes inside strings, escapes, newlines
_tricky = st.text(alphabet='ab[]{},:"\\ \n\u00e9', max_size=12)
_tricky_objects = st.dictionaries(
    _tricky, st.none() | st.integers() | _tricky | st.lists(_tricky, max_size=3), max_size=3
)
_BROKEN = [
    b'{"id":"bad","a": }',
    b'{"id":"bad","a":1,}',
    b'{"id":"bad","a": tru}',
    b'{"id":"bad","a": [1, 2}',
    b'{"id":"bad" "a":1}',
    b'{"id":"bad","a":01}',
    b'{"id":"bad","a":"x\\q"}',
    b'{"id":"bad","a":"x\x01y"}',
    b'{"id":"bad","a":"\xff"}',
    b'{"id":"bad","a":1e}',
    b'{"id":"bad",,"a":1}',
    b'{"id":"bad","a":[1,]}',
]


@settings(max_examples=200, deadline=None)
@given(
    before=st.lists(_tricky_objects, max_size=4),
    after=st.lists(_tricky_objects, max_size=4),
    broken=st.sampled_from(_BROKEN),
    indent=st.sampled_from([None, 1]),
)
def test_a_broken_object_is_named_by_its_place_and_id_among_any_others(
    before, after, broken, indent
):
    """Whatever the valid objects around it hold, a batch is refused naming the broken one."""

    def encoded(obj: dict[str, object]) -> bytes:
        return json.dumps({"id": "x", **obj}, indent=indent).encode()

    data = b"[" + b",".join([*map(encoded, before), broken, *map(encoded, after)]) + b"]"
    with pytest.raises(errors.InvalidObject) as info:
        codec.prepare(data, Limits())
    assert (info.value.index, info.value.object_id) == (len(before), "bad")


def test_split_rejects_non_arrays():
    for data in (b'{"id":"x"}', b"", b"42", b'"[..."'):
        with pytest.raises(errors.InvalidBatch):
            codec.split_array(data)
    with pytest.raises(errors.InvalidJSON, match="truncated"):
        codec.split_array(b'[{"id":"a"}, {"id":"b"')  # cut off inside the last element


def test_split_takes_views_and_long_leading_whitespace():
    """A server's upload part arrives as a view into the request body."""
    padded = b" " * 10_000 + b'[{"id":"a"},{"id":"b"}]'
    body = b"junk" + padded + b"junk"
    view = memoryview(body)[4:-4]
    assert [bytes(r) for r in codec.split_array(view)] == [b'{"id":"a"}', b'{"id":"b"}']
    assert [r.data for r in codec.prepare_arrays([view], Limits())] == [
        b'{"id":"a"}',
        b'{"id":"b"}',
    ]
    for bad in (b" " * 10_000 + b'{"id":"x"}', b" " * 10_000):
        with pytest.raises(errors.InvalidBatch, match="JSON array"):
            codec.split_array(memoryview(bad))


def _nested(object_id: str, depth: int) -> bytes:
    return b'{"id":"' + object_id.encode() + b'","v":' + b"[" * depth + b"]" * depth + b"}"


# deeper than msgspec's recursion guard lets a decode go on any Python (10000 levels on 3.13)
TOO_DEEP = 20_000


def test_nesting_names_the_deep_element():
    with pytest.raises(errors.NestingTooDeep) as info:
        codec.split_array(b'[{"id":"a"},' + _nested("deep", TOO_DEEP) + b"]")
    assert info.value.index == 1 and info.value.object_id == "deep"


@pytest.mark.parametrize("cut", [False, True])  # the batch whole, or cut off in the deep one
def test_nesting_names_the_element_the_decoder_refuses_not_a_merely_deep_one(cut):
    """How deep a decode may nest depends on the Python (msgspec's guard follows its
    recursion limits): the element named is one the decoder refuses, not the first deep one."""
    merely_deep = _nested("fine", 905)
    assert len(codec.split_array(b"[" + merely_deep + b"]")) == 1
    deep = _nested("deep", TOO_DEEP)
    last = deep[: len(deep) // 2 + 10] if cut else deep + b"]"
    batch = b"[" + merely_deep + b',{"id":"a"},' + last
    with pytest.raises(errors.NestingTooDeep) as info:
        codec.split_array(batch)
    assert info.value.index == 2 and info.value.object_id == "deep"


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
    slow = [
        codec.decode_record(bytes(r), i, Limits()) for i, r in enumerate(codec.split_array(batch))
    ]
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


_ids = st.text(
    alphabet=st.characters(blacklist_categories=("Cc", "Cs", "Zs", "Zl", "Zp")),
    min_size=1,
    max_size=20,
).filter(lambda s: not any(c.isspace() for c in s))
_objects = st.lists(
    st.tuples(
        _ids,
        st.dictionaries(st.text(max_size=6).filter(lambda k: k != "id"), st.text(max_size=8)),
        st.none() | st.dictionaries(_ids, st.integers(1, 5), max_size=3),
    ),
    min_size=1,
    max_size=8,
)


@settings(max_examples=60, deadline=None)
@given(objects=_objects, ascii_only=st.booleans())
def test_whole_array_checks_give_the_per_object_records(objects, ascii_only):
    docs = []
    for oid, body, closure in objects:
        doc = {"id": oid, **body} | ({"__closure": closure} if closure is not None else {})
        docs.append(json.dumps(doc, ensure_ascii=ascii_only).encode())
    batch = b"[" + b",".join(docs) + b"]"
    raws = codec.split_array(batch)
    heads = codec._batch_heads(batch, len(raws))
    assert heads is not None
    clean = codec._clean_records(list(map(bytes, raws)), heads, Limits(), 0)
    assert clean is not None  # every object here passes: the list-at-a-time path takes them
    per_object = [codec.decode_record(d, i, Limits()) for i, d in enumerate(docs)]
    assert clean[0] == per_object
    assert codec.prepare(docs, Limits()) == per_object  # separate items take the clean path too
    assert clean[1] == sum(map(len, docs))


@pytest.mark.parametrize(
    ("element", "error"),
    [
        (b'{"id":"b c"}', errors.InvalidId),
        (b'{"id":""}', errors.InvalidId),
        (b'{"id":"b","__closure":{"x\\ty":1}}', errors.InvalidClosure),
        (b'{"id":"b","s":"\xff"}', errors.InvalidUTF8),
        (b'{"id":"' + b"x" * 300 + b'"}', errors.InvalidId),
        (b'{"id":"b","pad":"' + b"x" * 2000 + b'"}', errors.ObjectTooLarge),
    ],
)
def test_a_bad_object_in_a_clean_looking_array_is_named(element, error):
    batch = b'[{"id":"a"},' + element + b',{"id":"z"}]'
    with pytest.raises(error) as info:
        codec.prepare(batch, Limits(max_object_bytes=1000))
    assert info.value.index == 1


def test_separate_items_must_each_be_exactly_one_object():
    # joined with commas these read as three clean objects; item by item they are not
    items = [b'{"id":"a","x":1', b'"y":2}', b'{"id":"c"},{"id":"d"}']
    with pytest.raises(errors.InvalidJSON) as info:
        codec.prepare(items, Limits())
    assert info.value.index == 0
    with pytest.raises(errors.InvalidJSON):
        codec.prepare([b'{"id":"a"},{"id":"b"}'], Limits())
    records = codec.prepare([b' {"id":"a"}\n', b'{"id":"b","v":"\xc3\xa9"}'], Limits())
    assert [(r.id, r.data) for r in records] == [
        ("a", b'{"id":"a"}'),
        ("b", b'{"id":"b","v":"\xc3\xa9"}'),
    ]


def test_separate_items_of_any_bytes_kind_and_the_batch_limit_named_where_it_passes():
    items = [b'{"id":"a"}', bytearray(b' {"id":"b"}'), msgspec.Raw(b'{"id":"c"}')]
    records = codec.prepare(iter(items), Limits())  # type: ignore[arg-type]  # any bytes-like
    assert [(r.id, r.data) for r in records] == [
        ("a", b'{"id":"a"}'),
        ("b", b'{"id":"b"}'),
        ("c", b'{"id":"c"}'),
    ]
    same_size = [f'{{"id":"{i}","p":"xxxxxxxx"}}'.encode() for i in range(10)]  # 25 bytes each
    with pytest.raises(errors.BatchTooLarge) as info:
        codec.prepare(same_size, Limits(max_batch_bytes=60))
    assert info.value.index == 2


@settings(max_examples=300, deadline=None)
@given(
    text=st.text(max_size=12)
    | st.text(alphabet=st.characters(max_codepoint=0x7F))
    | st.text(alphabet="0123456789abcdefXYZ-_ \t\n\x00\x7f\x85\xa0")  # mostly id-like
)
def test_the_quick_id_character_check_agrees_with_the_rule(text):
    assert codec._has_bad_id_char(text) == (codec._BAD_ID_CHAR.search(text) is not None)
    assert codec._has_bad_id_char("ab" + text + " ") is True


@pytest.mark.parametrize("check", [codec.prepare_pairs, lambda pairs, _: codec.check_pairs(pairs)])
def test_pairs_are_checked_each_under_the_id_it_came_with(check):
    limits = Limits()
    good = [(f"p{i}", json.dumps({"id": f"p{i}"}).encode()) for i in range(3)]
    check(good, limits)
    assert [r.id for r in codec.prepare_pairs(good, limits)] == ["p0", "p1", "p2"]
    broken = [*good[:2], ("p2", b'{"id": "p2", ')]
    with pytest.raises(errors.InvalidJSON) as caught:
        check(broken, limits)
    assert (caught.value.index, caught.value.object_id) == (2, "p2")
    assert str(caught.value).startswith("object 2 id 'p2': ")
    with pytest.raises(errors.NotAnObject, match=r"^object 1 id 'p1': "):
        check([good[0], ("p1", b"[1, 2]")], limits)
    with pytest.raises(errors.IdMismatch) as mismatch:
        check([*good[:1], ("p9", good[1][1])], limits)
    assert (mismatch.value.index, mismatch.value.object_id) == (1, "p9")
    assert "given as 'p9', but its JSON says id 'p1'" in str(mismatch.value)
    anonymous = b' {"v": 1} '
    own = codec.digest_of(anonymous.strip()).hex()
    check([(own, anonymous)], limits)
    with pytest.raises(errors.IdMismatch, match=f"has no id and its bytes hash to '{own}'"):
        check([("p0", anonymous)], limits)


def test_prepare_numbered_places_errors_in_their_batch():
    with pytest.raises(errors.InvalidJSON, match=r"^batch 3 object 1 "):
        codec.prepare_numbered([b'{"id": "n0"}', b'{"id": "n1",'], Limits(), 3)
    with pytest.raises(errors.InvalidBatch, match=r"^batch 2: "):
        codec.prepare_numbered(b'{"not": "an array"}', Limits(), 2)


def test_check_pairs_leaves_sizes_to_the_receiver():
    """A big object before a broken one: the broken one is named, not the size (the server
    or cache that takes them has its own limits)."""
    big = ("big", json.dumps({"id": "big", "pad": "x" * (11 << 20)}).encode())
    codec.check_pairs([big])
    with pytest.raises(errors.InvalidJSON, match=r"^object 1 id 'bad': "):
        codec.check_pairs([big, ("bad", b'{"id": "bad",')])


def test_stored_head_reads_the_id_and_closure_a_store_checks_rows_against():
    assert codec.stored_head(b'{"id":"a","__closure":{"b":1,"c":2},"v":[1]}') == (
        "a",
        {"b": 1, "c": 2},
    )
    assert codec.stored_head(b'{"__closure":{},"id":"a"}') == ("a", None)
    with pytest.raises(errors.InvalidId, match="stored without an id"):
        codec.stored_head(b'{"v":1}')
    with pytest.raises(errors.InvalidJSON):
        codec.stored_head(b'{"id":"a",')
    with pytest.raises(errors.InvalidClosure):
        codec.stored_head(b'{"id":"a","__closure":{"b":0}}')
