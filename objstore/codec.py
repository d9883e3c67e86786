"""The byte work of ingest: split a batch into raw objects, read each object's head, validate.

Nothing here builds a dict of a whole object: ``msgspec`` slices the batch array into raw byte
ranges and decodes only ``id`` and ``__closure`` from each, skipping every other field in C.
The result is a list of :class:`Record` ready for a backend to store.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from itertools import chain
from typing import Annotated, NamedTuple, cast

import msgspec
import xxhash

from objstore import errors
from objstore.limits import Limits

ID_MAX_CHARS = 255
# Whitespace or control characters in an id would corrupt the `id\tjson` line format.
_BAD_ID_CHAR = re.compile(r"[\s\x00-\x1f\x7f-\x9f]")
_ID_IN_BYTES = re.compile(rb'"id"\s*:\s*"([^"\\]{1,255})"')
_JSON_TOKEN = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{},]')
_MSGSPEC_OFFSET = re.compile(r"\(byte (\d+)\)")
_EMPTY_REST = re.compile(rb"[ \t\n\r]*}")  # what follows the brace of an object with no members

Depth = Annotated[int, msgspec.Meta(ge=1, le=2**31 - 1)]
ClosureKey = Annotated[str, msgspec.Meta(min_length=1, max_length=ID_MAX_CHARS)]


class _Head(msgspec.Struct, gc=False):
    id: str | msgspec.UnsetType = msgspec.UNSET
    closure: dict[ClosureKey, Depth] | msgspec.UnsetType | None = msgspec.field(
        default=msgspec.UNSET, name="__closure"
    )


class _Id(msgspec.Struct, gc=False):
    id: str | msgspec.UnsetType = msgspec.UNSET


_split_decoder = msgspec.json.Decoder(list[msgspec.Raw])
_head_decoder = msgspec.json.Decoder(_Head)
_id_decoder = msgspec.json.Decoder(_Id)
_heads_decoder = msgspec.json.Decoder(list[_Head])


class Record(NamedTuple):
    """One validated object: id, exact bytes, xxh3-128 digest of those bytes, and closure
    (the validated ``__closure`` as a dict, None when the object has none)."""

    id: str
    data: bytes
    digest: bytes
    closure: dict[str, int] | None


def digest_of(data: bytes) -> bytes:
    """The 16-byte xxh3-128 checksum objstore keeps for stored bytes."""
    return xxhash.xxh3_128_digest(data)


def _has_bad_id_char(text: str) -> bool:
    """Whether ``text`` holds whitespace or a control character. ASCII letters and digits
    (the usual hex ids, and the joined ids of a closure) are answered by one bytes scan, five
    times faster than ``str.isprintable``; other printable ASCII without a space by that,
    still four times faster than the regex."""
    if text.isascii() and (text.encode().isalnum() or (text.isprintable() and " " not in text)):
        return False
    return _BAD_ID_CHAR.search(text) is not None


def id_type_error(ids: Iterable[object]) -> TypeError:
    """The error for a read given an id that is not a str (an int, None, bytes): a caller's
    mistake, not an id the store lacks."""
    bad = next((i for i in ids if not isinstance(i, str)), None)
    return TypeError(f"object ids must be str, got {type(bad).__name__} {bad!r:.60}")


def one_id(object_id: str) -> str:
    """``object_id``, or the TypeError for one that is not a str."""
    if not isinstance(object_id, str):
        raise id_type_error([object_id])
    return object_id


def refuse_one_id(ids: Iterable[str]) -> None:
    """TypeError for one id given where a list of them belongs: a str is an iterable of its
    characters, and would be asked for one character at a time."""
    if isinstance(ids, str | bytes | bytearray | memoryview):
        raise TypeError(f"ids must be an iterable of ids, not one {type(ids).__name__}: use [id]")


def id_list(ids: Iterable[str]) -> list[str]:
    """``ids`` as a list, each a str (TypeError otherwise, see :func:`refuse_one_id`)."""
    refuse_one_id(ids)
    listed = list(ids)
    if not all(map(isinstance, listed, itertools.repeat(str))):
        raise id_type_error(listed)
    return listed


def check_id(value: object) -> str | None:
    """Return why ``value`` is not a valid object id, or None when it is."""
    if not isinstance(value, str):
        return f"id must be a string, got {type(value).__name__}"
    if not 1 <= len(value) <= ID_MAX_CHARS:
        return f"id must be 1-{ID_MAX_CHARS} characters, got {len(value)}"
    if _has_bad_id_char(value):
        return "id must not contain whitespace or control characters"
    return None


def _starts_array(data: bytes | bytearray | memoryview) -> bool:
    """Whether the first non-whitespace byte is ``[``, without copying a view's bytes."""
    view = memoryview(data)
    for start in range(0, len(view), 4096):
        head = bytes(view[start : start + 4096]).lstrip()
        if head:
            return head.startswith(b"[")
    return False


def json_array(items: Sequence[bytes]) -> bytes:
    """The JSON array of objects' bytes (the inverse of :func:`split_array`), copied once:
    ``b"[" + b",".join(items) + b"]"`` copies a 32 MB batch three times."""
    if not items:
        return b"[]"
    if len(items) == 1:
        return b"[" + items[0] + b"]"
    return b",".join([b"[" + items[0], *items[1:-1], items[-1] + b"]"])


def split_array(data: bytes | bytearray | memoryview) -> list[msgspec.Raw]:
    """Split the bytes of a JSON array into the exact byte slices of its elements."""
    if not _starts_array(data):
        raise errors.InvalidBatch("batch must be a JSON array of objects")
    try:
        return _split_decoder.decode(data)
    except RecursionError:
        index, element = _too_deep(bytes(data))
        raise errors.NestingTooDeep(
            "nesting is too deep", index=index, object_id=_guess_id(element)
        ) from None
    except msgspec.DecodeError as exc:
        match = _MSGSPEC_OFFSET.search(str(exc))
        offset = int(match.group(1)) if match else len(data)
        index, element = _locate(bytes(data), offset)
        reason = str(exc).split(" (byte")[0]
        if index is None:
            raise errors.InvalidBatch(f"batch is not a valid JSON array: {reason}") from None
        raise errors.InvalidJSON(reason, index=index, object_id=_guess_id(element)) from None


def _elements(data: bytes) -> Iterator[tuple[int, int, int, int]]:
    """(index, start, end, deepest nesting) of each element of the JSON array ``data`` as
    its tokens place them; one cut off ends at ``len(data)``. Error path."""
    depth = deepest = index = start = 0
    for tok in _JSON_TOKEN.finditer(data):
        pos = tok.start()
        ch = data[pos : pos + 1]
        if ch in (b"[", b"{"):
            depth += 1
            if depth == 1:  # the batch's own array
                start = pos + 1
            deepest = max(deepest, depth)
            continue
        if ch in (b"]", b"}"):
            depth -= 1
        if depth == 0 or (ch == b"," and depth == 1):  # the end of an element
            yield index, start, pos, deepest
            if depth == 0:
                return
            deepest = 0
            index += 1
            start = pos + 1
    if depth >= 1:
        yield index, start, len(data), deepest


def _locate(data: bytes, offset: int) -> tuple[int | None, bytes]:
    """Find the array element holding byte ``offset``: error path."""
    for index, start, end, _ in _elements(data):
        if start > offset:  # before the array
            break
        if end >= offset:
            return index, data[start : start + 4096]
    return None, b""


# nesting that msgspec decodes on every Python (its recursion guard stops a decode at about
# 1000 levels on 3.11, 1500 on 3.12, 10000 on 3.13)
_SURELY_DECODED_DEPTH = 900


def _too_deep(data: bytes) -> tuple[int | None, bytes]:
    """Find the first array element msgspec refuses for its nesting: error path. How deep its
    guard lets a decode go depends on the Python, so each element nested deeper than any
    surely allows is decoded alone (in an array, as in the batch) to see."""
    for index, start, end, deepest in _elements(data):
        if deepest <= _SURELY_DECODED_DEPTH:
            continue
        try:
            _split_decoder.decode(b"[" + data[start:end] + b"]")
        except RecursionError:
            return index, data[start : start + 4096]
        except msgspec.DecodeError:
            pass
    return None, b""


def _guess_id(element: bytes) -> str | None:
    match = _ID_IN_BYTES.search(element)
    return match.group(1).decode("utf-8", "replace") if match else None


def with_id(data: bytes, object_id: str) -> bytes:
    """One JSON object's bytes with ``"id": object_id`` inserted as its first member, as
    encoding ``{"id": object_id, **obj}`` would put it, the rest left byte for byte: how an
    object sent without an id is stored, and how a decomposer names the objects it makes.
    ``object_id`` goes in as it is, so it must need no JSON escaping (both callers give an
    xxh3 hex digest)."""
    after = data.index(b"{") + 1
    comma = b"" if _EMPTY_REST.match(data, after) else b","
    return b"".join(
        (data[:after], b'"id":"', object_id.encode(), b'"', comma, memoryview(data)[after:])
    )


def decode_record(raw: bytes, index: int, limits: Limits, head: _Head | None = None) -> Record:
    """Validate one object's bytes and read its head (unless already decoded with its batch);
    raise the specific InvalidObject."""
    size = len(raw)
    if size > limits.max_object_bytes:
        raise errors.ObjectTooLarge(
            f"object is {size} bytes, over the {limits.max_object_bytes} byte object limit",
            limit=limits.max_object_bytes,
            size=size,
            index=index,
            object_id=_guess_id(raw[:4096]),
        )
    if not raw.isascii():
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise errors.InvalidUTF8(
                f"invalid UTF-8 at byte {exc.start} of the object",
                index=index,
                object_id=_guess_id(raw[:4096]),
            ) from None
    if head is None:
        try:
            head = _head_decoder.decode(raw)
        except RecursionError:
            raise errors.NestingTooDeep(
                "nesting is too deep", index=index, object_id=_guess_id(raw[:4096])
            ) from None
        except msgspec.ValidationError as exc:
            raise _validation_error(str(exc), raw, index) from None
        except msgspec.DecodeError as exc:
            raise errors.InvalidJSON(
                str(exc), index=index, object_id=_guess_id(raw[:4096])
            ) from None
    closure = head.closure or None
    if closure and _has_bad_id_char("".join(closure)):
        raise errors.InvalidClosure(
            "__closure keys must not contain whitespace or control characters",
            index=index,
            object_id=_str_or_none(head.id),
        )
    if head.id is msgspec.UNSET:
        object_id = xxhash.xxh3_128_hexdigest(raw)
        raw = with_id(raw, object_id)
    else:
        object_id = head.id
        problem = check_id(object_id)
        if problem:
            raise errors.InvalidId(problem, index=index, object_id=object_id[:300])
    return Record(object_id, raw, digest_of(raw), closure)


def stored_head(data: bytes) -> tuple[str, dict[str, int] | None]:
    """The id and ``__closure`` (None when empty or absent) of an object as a store holds
    it: checked when it was stored, its id written into it. The specific InvalidObject if
    it is not such an object."""
    try:
        head = _head_decoder.decode(data)
    except (msgspec.DecodeError, RecursionError):
        head = None
    if head is None or not isinstance(head.id, str):
        record = decode_record(data, 0, UNLIMITED)  # raises what is wrong, or names the id
        raise errors.InvalidId("stored without an id", object_id=record.id)
    return head.id, head.closure or None


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _validation_error(message: str, raw: bytes, index: int) -> errors.InvalidObject:
    guessed = _guess_id(raw[:4096])
    if message.startswith("Expected `object`"):
        return errors.NotAnObject(f"batch elements must be JSON objects ({message})", index=index)
    if "$.id" in message:
        return errors.InvalidId(f"id must be a string ({message})", index=index)
    if "$.__closure" in message:
        return errors.InvalidClosure(
            f"__closure must map ids of 1-{ID_MAX_CHARS} characters to positive integer depths "
            f"({message})",
            index=index,
            object_id=guessed,
        )
    return errors.InvalidJSON(message, index=index, object_id=guessed)


def _batch_heads(data: bytes | bytearray | memoryview, count: int) -> list[_Head] | None:
    """Every element's head in one C call, or None when any element is bad (the per-object
    path then finds and names it)."""
    try:
        heads = _heads_decoder.decode(data)
    except (msgspec.DecodeError, RecursionError):
        return None
    return heads if len(heads) == count else None


def _check_total(total: int, limits: Limits, index: int) -> None:
    if total > limits.max_batch_bytes:
        raise errors.BatchTooLarge(
            f"batch objects total more than the {limits.max_batch_bytes} byte batch limit",
            limit=limits.max_batch_bytes,
            size=total,
            index=index,
        )


def prepare_arrays(
    arrays: Iterable[bytes | bytearray | memoryview], limits: Limits, *, label: str = "part"
) -> list[Record]:
    """Validated records of several JSON arrays taken as one batch (e.g. multipart parts).

    Errors name the array (``part 2 object 17``) and count the batch limit over all arrays.
    """
    one = isinstance(arrays, str | bytes | bytearray | memoryview)
    if one or not isinstance(arrays, Iterable):
        raise errors.InvalidBatch(
            f"arrays must be an iterable of JSON arrays' bytes, got {type(arrays).__name__}"
            + (" (one array is a batch: put it)" if one else "")
        )
    records: list[Record] = []
    total = 0
    for number, data in enumerate(arrays):
        if not isinstance(data, bytes | bytearray | memoryview):
            raise errors.InvalidBatch(
                f"{label} {number} must be the bytes of a JSON array, got {type(data).__name__}"
            )
        try:
            total = _prepare_array(data, limits, records, total)
        except errors.InvalidObject as exc:
            raise exc.located(f"{label} {number} object {exc.index}") from None
        except errors.InvalidBatch as exc:
            raise errors.InvalidBatch(f"{label} {number}: {exc}") from None
    return records


def _clean_records(
    datas: list[bytes], heads: list[_Head], limits: Limits, total: int
) -> tuple[list[Record], int] | None:
    """Every record of an array (its elements' bytes and heads) whose objects all pass, checked
    a list at a time in C; None when any object breaks a rule or lacks an id (the per-object
    path then names it)."""
    sizes = list(map(len, datas))
    total += sum(sizes)
    if total > limits.max_batch_bytes or max(sizes, default=0) > limits.max_object_bytes:
        return None
    if not all(map(bytes.isascii, datas)):
        try:
            for raw in datas:
                if not raw.isascii():
                    raw.decode("utf-8")
        except UnicodeDecodeError:
            return None
    maybe_ids = [h.id for h in heads]
    if msgspec.UNSET in maybe_ids:
        return None
    ids = cast(list[str], maybe_ids)
    lengths = list(map(len, ids))
    if lengths and (min(lengths) < 1 or max(lengths) > ID_MAX_CHARS):
        return None
    if _has_bad_id_char("".join(ids)):
        return None
    closures = [h.closure or None for h in heads]
    if _has_bad_id_char("".join(chain.from_iterable(filter(None, closures)))):
        return None
    digests = list(map(xxhash.xxh3_128_digest, datas))
    return list(map(Record, ids, datas, digests, closures)), total


def _prepare_array(
    data: bytes | bytearray | memoryview, limits: Limits, records: list[Record], total: int
) -> int:
    raws = split_array(data)
    heads = _batch_heads(data, len(raws))
    if heads is not None:
        clean = _clean_records(list(map(bytes, raws)), heads, limits, total)
        if clean is not None:
            records.extend(clean[0])
            return clean[1]
    for index, item in enumerate(raws):
        raw = bytes(item)
        total += len(raw)
        _check_total(total, limits, index)
        records.append(decode_record(raw, index, limits, heads[index] if heads else None))
    return total


_BYTES = (bytes, bytearray, memoryview)
_AS_BYTES = "each a list of objects' bytes, such as [data for _, data in pairs]"


def _element_hint(item: object, batch: list[object]) -> str:
    """Why an element is not an object's bytes, when its shape tells: a dict not encoded, or
    the (id, bytes) pairs the client and graphgen deal in, given where bytes belong."""
    if isinstance(item, dict):
        return " (encode it: msgspec.json.encode(obj))"
    if isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], _BYTES):
        return f" (an (id, bytes) pair: batches are {_AS_BYTES})"
    if isinstance(item, str) and len(batch) == 2 and isinstance(batch[1], _BYTES):
        return f" (this batch is an (id, bytes) pair: put_many takes batches, {_AS_BYTES})"
    return ""


def prepare(
    batch: bytes | bytearray | memoryview | Iterable[bytes], limits: Limits
) -> list[Record]:
    """Turn a batch (JSON array bytes, or an iterable of object bytes) into validated records.

    Raises a specific :mod:`objstore.errors` exception naming the first offending object.
    """
    if isinstance(batch, bytes | bytearray | memoryview):
        records: list[Record] = []
        _prepare_array(batch, limits, records, 0)
        return records
    if isinstance(batch, str):
        raise errors.InvalidBatch("batch must be bytes (UTF-8 JSON), not str")
    if isinstance(batch, Mapping) or not isinstance(batch, Iterable):  # a dict: its keys
        raise errors.InvalidBatch(
            "batch must be the bytes of a JSON array or an iterable of each object's bytes, "
            f"got {type(batch).__name__}"
        )
    given = list(batch)
    if set(map(type, given)) <= {bytes}:  # the common case, checked a list at a time, in C
        stripped = list(map(bytes.strip, given))
        if sum(map(len, stripped)) <= limits.max_batch_bytes:
            clean = _clean_items(stripped, limits)
            if clean is not None:
                return clean
    items: list[bytes] = []
    total = 0
    for index, item in enumerate(given):
        if isinstance(item, msgspec.Raw):
            raw = bytes(item)
        elif isinstance(item, bytes | bytearray | memoryview):
            raw = bytes(item).strip()
        else:
            raise errors.InvalidBatch(
                f"batch element {index} must be bytes of one JSON object, got "
                f"{type(item).__name__}{_element_hint(item, given)}"
            )
        total += len(raw)
        _check_total(total, limits, index)
        items.append(raw)
    clean = _clean_items(items, limits)
    if clean is not None:
        return clean
    return [decode_record(raw, index, limits) for index, raw in enumerate(items)]


def prepare_numbered(
    batch: bytes | bytearray | memoryview | Iterable[bytes], limits: Limits, number: int
) -> list[Record]:
    """:func:`prepare` of one batch of several, its errors placing the object as "batch N
    object M"."""
    try:
        return prepare(batch, limits)
    except errors.InvalidObject as exc:
        index = "" if exc.index is None else f" object {exc.index}"
        raise exc.located(f"batch {number}{index}") from None
    except errors.InvalidBatch as exc:
        raise errors.InvalidBatch(f"batch {number}: {exc}") from None


def prepare_pairs(pairs: Sequence[tuple[str, bytes]], limits: Limits) -> list[Record]:
    """Validated records of objects handed over with their ids (a dump's lines, what
    ``send`` is given), each of which must be the object's own id. Errors place an object as
    ``object N`` of ``pairs`` and name it by the id it came with. ``pairs`` must fit one
    batch."""
    try:
        records = prepare([data for _, data in pairs], limits)
    except errors.InvalidObject as exc:
        if exc.index is None:
            raise
        given = pairs[exc.index][0]
        raise exc.located(f"object {exc.index}", object_id=given) from None
    ids = [record.id for record in records]
    _check_ids(pairs, ids, lambda n: records[n].data == pairs[n][1].strip())
    return records


UNLIMITED = Limits(2**62, 2**62)  # an object's own checks only: its store applies limits


def check_pairs(pairs: Sequence[tuple[str, bytes]]) -> None:
    """That each object handed over with an id is one JSON object whose id that is: the part
    of :func:`prepare_pairs` a sender that keeps no copy needs (the receiver checks the rest,
    sizes included), at a third of its cost. Errors as :func:`prepare_pairs` raises them."""
    try:
        found = [_id_decoder.decode(data).id for _, data in pairs]
    except (msgspec.DecodeError, RecursionError):  # the full checks find and name it
        for index, pair in enumerate(pairs):
            try:
                prepare_pairs([pair], UNLIMITED)
            except errors.InvalidObject as exc:
                raise exc.located(f"object {index}", index=index) from None
        return
    if found != [object_id for object_id, _ in pairs]:
        ids = [
            xxhash.xxh3_128_hexdigest(data.strip()) if own is msgspec.UNSET else own
            for (_, data), own in zip(pairs, found, strict=True)
        ]
        _check_ids(pairs, ids, lambda n: found[n] is not msgspec.UNSET)


def _check_ids(
    pairs: Sequence[tuple[str, bytes]], ids: list[str], named: Callable[[int], bool]
) -> None:
    """IdMismatch for the first pair whose object's own id (``ids``: the one its JSON names,
    when ``named`` says it does, else its hash) is not the one it came with."""
    if ids == [object_id for object_id, _ in pairs]:
        return
    for index, ((given, _), own) in enumerate(zip(pairs, ids, strict=True)):
        if own != given:
            said = (
                f"its JSON says id {own!r}"
                if named(index)
                else f"it has no id and its bytes hash to {own!r}"
            )
            raise errors.IdMismatch(f"given as {given!r}, but {said}", index=index, object_id=given)


def _clean_items(items: list[bytes], limits: Limits) -> list[Record] | None:
    """The list-at-a-time path for separate objects: each item's head decoded on its own, which
    also proves the item is exactly one JSON value (an item holding two objects, or half of one,
    fails); None sends them down the per-object path to be named."""
    try:
        heads = list(map(_head_decoder.decode, items))
    except (msgspec.DecodeError, RecursionError):
        return None
    clean = _clean_records(items, heads, limits, 0)
    return clean[0] if clean is not None else None
