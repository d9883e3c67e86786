"""Decoding of streamed responses, as Remote's downloads read them."""

from __future__ import annotations

import functools
import gzip
import json
import re
import tracemalloc
from collections.abc import Callable, Generator, Iterator

import httpx
import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from objstore import errors
from objstore.client import remote as remote_module
from objstore.client.remote import (
    ACCEPT_ENCODING,
    WHOLE_ACCEPT_ENCODING,
    Remote,
    _pairs_of,
    _retry_after,
    _whole_lines,
    is_loopback,
    iter_decoded,
)
from objstore.limits import Limits

from ..server.conftest import start_server

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


@settings(max_examples=200, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 3000), min_size=1, max_size=30),
    cuts=st.lists(st.integers(0, 40_000), max_size=40),
    final_newline=st.booleans(),
)
def test_lines_come_whole_and_exact_wherever_the_stream_is_cut(sizes, cuts, final_newline):
    """Lines from pieces cut anywhere (empty pieces, and lines over many pieces, as big
    objects arrive) are the exact lines sent."""
    pairs = [(f"id{n}", b'{"v":"' + b"x" * size + b'"}') for n, size in enumerate(sizes)]
    body = b"\n".join(i.encode() + b"\t" + d for i, d in pairs) + (b"\n" if final_newline else b"")
    points = sorted({min(c, len(body)) for c in cuts})
    pieces = [body[a:b] for a, b in zip([0, *points], [*points, len(body)], strict=True)]
    assert [pair for lines in _whole_lines(pieces) for pair in _pairs_of(lines)] == pairs


def test_download_lines_are_whole_and_never_empty():
    """download_lines hands on the body's lines as sent (a CRLF line keeps its CR), blank
    lines left out; download reads the same lines as (id, json) pairs, the CR cut off."""
    body = b'r\t{"id":"r"}\r\n\n\na\t{"id":"a"}\n' + b"\n" * 5 + b'b\t{"id":"b"}'

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=Pieces(body, size=3))

    remote = Remote("http://127.0.0.1:9", "t", "p", transport=httpx.MockTransport(handler))
    lines = [line for block in remote.download_lines("r") for line in block]
    assert lines == [b'r\t{"id":"r"}\r', b'a\t{"id":"a"}', b'b\t{"id":"b"}']
    assert list(remote.download("r")) == [
        ("r", b'{"id":"r"}'),
        ("a", b'{"id":"a"}'),
        ("b", b'{"id":"b"}'),
    ]
    assert remote.stats.objects_downloaded == 6


def test_a_coding_we_did_not_ask_for_is_an_error_not_garbage():
    with pytest.raises(errors.UnreadableResponse, match="'br'"):
        b"".join(iter_decoded(response(b"\x1b\x00\x00", "br")))


NOT_CODED = b'{"id": "a"} is plain JSON, not compressed at all' * 40


def _mislabelled(coding: str, status: int = 200) -> httpx.MockTransport:
    """A server whose every answer claims ``coding`` but holds plain bytes (a proxy that
    kept the header and undid the coding, say)."""

    def handler(request: httpx.Request) -> httpx.Response:
        headers = {"content-encoding": coding}
        return httpx.Response(status, headers=headers, stream=Pieces(NOT_CODED, size=100))

    return httpx.MockTransport(handler)


@pytest.mark.parametrize("coding", ["zstd", "gzip"])
def test_a_streamed_body_not_in_its_coding_is_unreadable_naming_the_request(coding):
    remote = Remote("http://127.0.0.1:9", "t", "p", transport=_mislabelled(coding))
    says = rf"does not decode as the {coding} its Content-Encoding names"
    where = re.escape("GET http://127.0.0.1:9/objects/p/r: ")
    with pytest.raises(errors.UnreadableResponse, match=f"{where}.*{says}"):
        list(remote.download_lines("r"))
    where = re.escape("POST http://127.0.0.1:9/api/getobjects/p: ")
    with pytest.raises(errors.UnreadableResponse, match=f"{where}.*{says}"):
        list(remote.get_many(["a", "b"]))


@pytest.mark.parametrize("status", [200, 500])
def test_a_whole_body_not_in_its_coding_is_unreadable_and_not_retried(status):
    """httpx decodes whole bodies itself; a body its coding cannot read is the server's
    fault, named by the request, and asked no second time (it would come the same)."""
    remote = Remote("http://127.0.0.1:9", "t", "p", transport=_mislabelled("gzip", status))
    unreadable = functools.partial(pytest.raises, errors.UnreadableResponse)
    with unreadable(match=re.escape("GET http://127.0.0.1:9/objects/p/a/single: ")):
        remote.get("a")
    with unreadable(match=re.escape("POST http://127.0.0.1:9/api/diff/p: ")):
        remote.diff(["a"])
    with unreadable(match=re.escape("GET http://127.0.0.1:9/objects/p/r: ")):
        list(remote.download_lines("r"))  # an error answer's body, read whole
    assert remote.stats.retries == 0


def test_remote_asks_for_the_codings_it_can_decode():
    """Streamed reads decode zstd and gzip themselves; whole bodies are httpx's to decode,
    so those ask only for what this httpx decodes (no zstd before httpx 0.27)."""
    seen: dict[str, str] = {}

    def handler(request: httpx.Request) -> httpx.Response:
        whole = request.url.path.startswith("/api/diff")
        seen["diff" if whole else "download"] = request.headers["accept-encoding"]
        if whole:
            return httpx.Response(200, json={"a": True})
        coded = zstd_frames(b'r\t{"id":"r"}\n')
        return httpx.Response(200, headers={"content-encoding": "zstd"}, stream=Pieces(coded))

    transport = httpx.MockTransport(handler)
    remote = Remote("http://127.0.0.1:9", "t", "p", transport=transport, compression="on")
    assert remote.diff(["a"]) == {"a": True}
    assert list(remote.download("r")) == [("r", b'{"id":"r"}')]
    assert seen == {"diff": WHOLE_ACCEPT_ENCODING, "download": ACCEPT_ENCODING}
    assert ACCEPT_ENCODING == "zstd, gzip"
    whole = WHOLE_ACCEPT_ENCODING.split(", ")
    assert "gzip" in whole
    for coding, coded in [("zstd", zstd_frames(b"{}")), ("gzip", gzip.compress(b"{}"))]:
        answer = httpx.Response(200, headers={"content-encoding": coding}, content=coded)
        assert (answer.content == b"{}") == (coding in whole)


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("localhost", True),
        ("LOCALHOST", True),
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("[::1]", True),
        ("::1", True),
        ("10.0.0.1", False),
        ("objects.example", False),
        ("localhost.example", False),
        ("[2001:db8::1]", False),
    ],
)
def test_is_loopback_reads_names_and_addresses_without_resolving(host, loopback):
    assert is_loopback(host) is loopback


def test_retry_after_reads_seconds_and_http_dates():
    import email.utils
    import time

    def wait(header: str) -> float | None:
        return _retry_after(httpx.Response(503, headers={"Retry-After": header}))

    assert (wait("2"), wait(" 3 "), wait("-4")) == (2.0, 3.0, 0.0)  # never a negative wait
    in_30s = wait(email.utils.formatdate(time.time() + 30, usegmt=True))
    assert in_30s is not None and 25.0 <= in_30s <= 30.0
    assert wait("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # a date gone by: at once


@pytest.mark.parametrize("header", [None, "", "  ", "soon", "Wed, 99 Foo 2015 07:28:00 GMT"])
def test_a_retry_after_neither_seconds_nor_a_date_is_none(header):
    """The retry then backs off as without one (such a header raised ValueError out of the
    request, which no caller expects of a busy server)."""
    headers = {} if header is None else {"Retry-After": header}
    assert _retry_after(httpx.Response(503, headers=headers)) is None


def _recording(seen: list[tuple[str, str, bytes]]) -> httpx.MockTransport:
    """Answers diff (nothing there), server-info (no such route) and uploads; records the
    Accept-Encoding of each request and the content type and bytes of each uploaded part."""

    def handler(request: httpx.Request) -> httpx.Response:
        accept = request.headers["accept-encoding"]
        if request.url.path.startswith("/api/diff/"):
            return httpx.Response(200, json={i: False for i in _asked(request)})
        if request.url.path.startswith("/objects/"):
            boundary = request.headers["content-type"].partition("boundary=")[2].encode()
            for part in request.read().split(b"--" + boundary)[1:-1]:
                head, _, payload = part.partition(b"\r\n\r\n")
                media = head.lower().partition(b"content-type: ")[2].split(b"\r\n")[0]
                seen.append((accept, media.decode(), payload.removesuffix(b"\r\n")))
            return httpx.Response(201)
        return httpx.Response(404)

    return httpx.MockTransport(handler)


@pytest.mark.parametrize(
    ("url", "compression", "compressed"),
    [
        ("http://127.0.0.1:9", "auto", False),  # loopback: the bytes never cross a network
        ("http://localhost:9", "auto", False),
        ("http://objects.example", "auto", True),  # a mock transport: nothing leaves
        ("http://127.0.0.1:9", "on", True),
        ("http://objects.example", "off", False),
    ],
)
def test_compression_follows_the_setting_and_the_host(url, compression, compressed):
    seen: list[tuple[str, str, bytes]] = []
    objects = [("a", b'{"id":"a"}'), ("b", b'{"id":"b"}')]
    with Remote(url, "t", "p", transport=_recording(seen), compression=compression) as remote:
        assert remote.compress is compressed
        assert remote.upload(objects) == 2
    [(accept, media, payload)] = seen
    if compressed:
        assert (accept, media) == (WHOLE_ACCEPT_ENCODING, "application/gzip")
        payload = gzip.decompress(payload)
    else:
        assert (accept, media) == ("identity", "application/json")
    assert payload == b'[{"id":"a"},{"id":"b"}]'


def test_an_unknown_compression_setting_is_refused():
    with pytest.raises(ValueError, match="compression must be auto, on or off"):
        Remote("http://127.0.0.1:9", "t", "p", compression="zstd")  # type: ignore[arg-type]


def test_diff_sends_the_references_json_body_and_reads_its_answer():
    asked: list[list[str]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        asked.append(_asked(request))
        return httpx.Response(200, json={"a": True, "b": False})  # "c" left out

    remote = Remote("http://127.0.0.1:9", "t", "p", transport=httpx.MockTransport(handler))
    assert remote.diff(["a", "b", "c"]) == {"a": True, "b": False, "c": False}
    assert asked == [["a", "b", "c"]]


@pytest.mark.parametrize("answer", [b"<html>proxy error</html>", b'{"a": "yes"}', b"[true]"])
def test_an_unreadable_diff_answer_is_a_clear_error(answer):
    transport = httpx.MockTransport(lambda request: httpx.Response(200, content=answer))
    remote = Remote("http://127.0.0.1:9", "t", "p", transport=transport)
    with pytest.raises(errors.UnreadableResponse, match="diff p: the answer is not a JSON object"):
        remote.diff(["a"])


class _Lines(httpx.SyncByteStream):
    """``count`` lines of about ``size`` bytes each, made as they are read."""

    def __init__(self, ids: list[str], size: int, fail_after: int | None = None) -> None:
        self.ids, self.size, self.fail_after = ids, size, fail_after

    def __iter__(self) -> Iterator[bytes]:
        pad = b"x" * self.size
        for n, object_id in enumerate(self.ids):
            if n == self.fail_after:
                yield object_id.encode() + b'\t{"id":"'  # half a line, then the connection goes
                raise httpx.ReadError("connection lost mid-body")
            yield b'%s\t{"id":"%s","p":"%s"}\n' % (object_id.encode(), object_id.encode(), pad)


def _mocked(handler: Callable[[httpx.Request], httpx.Response], retries: int) -> Remote:
    """A Remote whose requests ``handler`` answers, retrying ``retries`` times at once."""
    return Remote(
        "http://127.0.0.1:9",
        "t",
        "p",
        transport=httpx.MockTransport(handler),
        retries=retries,
        backoff=0.01,
    )


def _asked(request: httpx.Request) -> list[str]:
    """The ids of a diff/getobjects request, sent as the reference's JSON body."""
    assert request.headers["Content-Type"] == "application/json"
    ids: list[str] = json.loads(json.loads(request.content)["objects"])
    return ids


@pytest.mark.parametrize(
    ("compression", "stated", "sent"),
    [
        ("on", ["zstd", "gzip", "deflate"], "zstd"),  # objstore's server
        ("on", ["gzip"], "gzip"),
        ("on", ["br"], None),  # nothing this client makes
        ("on", None, None),  # Speckle's server states none: it may not undo them
        ("off", ["zstd", "gzip", "deflate"], None),
    ],
)
def test_id_lists_go_compressed_only_where_the_server_says_it_takes_them(compression, stated, sent):
    ids = [f"{i:032x}" for i in range(3000)]
    seen: list[tuple[str, str | None, list[str]]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/server-info":
            info: dict[str, object] = {
                "limits": {"max_object_bytes": 10 << 20, "max_batch_bytes": 50 << 20}
            }
            if stated is not None:
                info["request_encodings"] = stated
            return httpx.Response(200, json=info)
        coding = request.headers.get("content-encoding")
        body = request.read()
        if coding == "zstd":
            body = zstandard.ZstdDecompressor().decompressobj().decompress(body)
        elif coding == "gzip":
            body = gzip.decompress(body)
        asked = json.loads(json.loads(body)["objects"])
        seen.append((request.url.path.split("/")[2], coding, asked))
        if request.url.path.startswith("/api/diff/"):
            return httpx.Response(200, json={i: True for i in asked})
        lines = "".join(f"{i}\t{{}}\n" for i in asked).encode()
        return httpx.Response(200, stream=httpx.ByteStream(lines))

    remote = Remote(
        "http://127.0.0.1:9",
        "t",
        "p",
        transport=httpx.MockTransport(handler),
        compression=compression,
    )
    assert remote.diff(ids) == dict.fromkeys(ids, True)
    assert dict(remote.get_many(ids)) == dict.fromkeys(ids, b"{}")
    assert [(route, coding) for route, coding, _ in seen] == [
        ("diff", sent),
        ("getobjects", sent),
    ]
    assert all(asked == ids for _, _, asked in seen)


def test_get_many_holds_a_few_blocks_not_whole_answers():
    ids = [f"mesh{i}" for i in range(80)]

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=_Lines(_asked(request), 1_000_000))

    remote = Remote("http://127.0.0.1:9", "t", "p", transport=httpx.MockTransport(handler))
    tracemalloc.start()
    try:
        count = 0
        for object_id, data in remote.get_many(ids):
            assert object_id == ids[count] and len(data) > 1_000_000
            count += 1
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert count == 80
    assert peak < 30_000_000, f"80 MB of objects held {peak / 1e6:.0f} MB at once"


def test_an_answer_that_always_breaks_off_is_named_by_its_request_not_out_of_reach():
    """A server that answers and cuts its body at the same object every time (one that
    meets an object it cannot read once its answer has begun) is not "out of reach": the
    error names the request and the tries."""
    ids = [f"o{i}" for i in range(200)]

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=_Lines(_asked(request), 50_000, fail_after=0))

    remote = _mocked(handler, retries=2)
    says = re.escape("POST http://127.0.0.1:9/api/getobjects/p: no whole answer in 3 tries (")
    with pytest.raises(errors.ConnectionFailed, match=says + "ReadError"):
        list(remote.get_many(ids))
    assert remote.stats.requests["getobjects"] == 3
    with pytest.raises(errors.ConnectionFailed, match=r"^cannot reach http://127\.0\.0\.1:9 "):
        Remote("http://127.0.0.1:9", "t", "p", retries=0).diff(["a"])  # nothing listens


def test_a_download_that_breaks_off_says_how_far_it_got_and_is_not_asked_again():
    """The object+children stream cannot be resumed from where it broke (receive asks for
    what is lacking by id): the error names the request and the objects delivered. One that
    breaks before its first line is tried again, and named as getobjects' are."""
    ids = ["root", *(f"o{i}" for i in range(200))]
    asked: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        asked.append(request.url.path)
        return httpx.Response(200, stream=_Lines(ids, 50_000, fail_after=fail_after))

    fail_after = 120
    delivered: list[bytes] = []
    says = re.escape(
        "GET http://127.0.0.1:9/objects/p/root: the answer broke off after 120 objects ("
    )
    with pytest.raises(errors.ConnectionFailed, match=says + "ReadError"):
        for lines in _mocked(handler, retries=2).download_lines("root"):
            delivered += lines
    assert len(delivered) == 120 and asked == ["/objects/p/root"]
    fail_after = 0
    says = re.escape("GET http://127.0.0.1:9/objects/p/root: no whole answer in 3 tries (")
    with pytest.raises(errors.ConnectionFailed, match=says + "ReadError"):
        list(_mocked(handler, retries=2).download_lines("root"))
    assert len(asked) == 4
    with pytest.raises(errors.ConnectionFailed, match=r"^cannot reach http://127\.0\.0\.1:9 "):
        list(Remote("http://127.0.0.1:9", "t", "p", retries=0).download_lines("root"))


def test_get_many_resumes_a_lost_body_with_only_the_ids_not_delivered():
    ids = [f"o{i}" for i in range(200)]
    asked: list[list[str]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        asked.append(_asked(request))
        fail_after = 50 if len(asked) == 1 else None
        return httpx.Response(200, stream=_Lines(asked[-1], 50_000, fail_after=fail_after))

    remote = Remote(
        "http://127.0.0.1:9", "t", "p", transport=httpx.MockTransport(handler), backoff=0.01
    )
    got = [object_id for object_id, _ in remote.get_many(ids)]
    assert sorted(got) == sorted(ids)  # each once: no duplicates, no half object
    delivered = len(ids) - len(asked[1])  # whole lines of the MB blocks read before the loss
    assert 0 < delivered <= 50
    assert asked == [ids, ids[delivered:]]
    assert remote.stats.retries == 1 and remote.stats.objects_downloaded == 200


def test_get_many_closed_early_stops_its_fetches():
    ids = [f"o{i}" for i in range(40_000)]  # four requests
    served: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        served.append(len(_asked(request)))
        return httpx.Response(200, stream=_Lines(_asked(request), 1000))

    remote = Remote(
        "http://127.0.0.1:9", "t", "p", concurrency=2, transport=httpx.MockTransport(handler)
    )
    stream = remote.get_many(ids)
    assert isinstance(stream, Generator)
    first = [next(stream) for _ in range(10)]
    stream.close()
    assert len(first) == 10
    assert len(served) <= 3  # two in flight and maybe one more, never the whole list
    assert 10 <= remote.stats.objects_downloaded < 30_000


def test_get_many_raises_what_a_fetch_met():
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(400, json={"error": {"message": "bad ids", "code": "BAD"}})

    remote = Remote("http://127.0.0.1:9", "t", "p", transport=httpx.MockTransport(handler))
    with pytest.raises(errors.RemoteRejected, match="bad ids"):
        list(remote.get_many(["a", "b"]))


_NGINX_413 = (
    b"<html>\r\n<head><title>413 Request Entity Too Large</title></head>\r\n<body>\r\n"
    b"<center><h1>413 Request Entity Too Large</h1></center>\r\n<hr><center>nginx</center>"
    b"\r\n</body>\r\n</html>\r\n"
)


@pytest.mark.parametrize(
    ("status", "headers", "body", "said"),
    [
        (
            413,
            {"content-type": "text/html"},
            _NGINX_413,
            "HTTP 413: 413 Request Entity Too Large (a proxy in front of the server may cap "
            "request bodies, as nginx's client_max_body_size does; objstore's client sends up "
            "to 32 MB in one upload)",
        ),
        (502, {}, b"<html><body><p>Bad\n   gateway</p></body></html>", "HTTP 502: Bad gateway"),
        (400, {}, b'{"error": "plain words"}', 'HTTP 400: {"error": "plain words"}'),
        (404, {}, b"", "HTTP 404: Not Found"),
        (
            413,
            {},
            b'{"error": {"message": "over the 8 byte limit", "code": "PAYLOAD_TOO_LARGE"}}',
            "HTTP 413: over the 8 byte limit",
        ),
    ],
    ids=["proxy-413", "html-502", "json-not-ours", "empty", "our-413"],
)
def test_an_error_body_is_told_on_one_line(status, headers, body, said):
    """A proxy's HTML page by its title, never its markup over several lines; a 413 that is
    not the server's own names the likely cap."""

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, headers=headers, content=body)

    remote = Remote(
        "http://127.0.0.1:9", "t", "p", retries=0, transport=httpx.MockTransport(handler)
    )
    with pytest.raises(errors.RemoteError) as caught:
        remote.upload([("a", b'{"id":"a"}')])
    message = str(caught.value)
    assert message == f"POST http://127.0.0.1:9/objects/p: {said}"
    assert "\n" not in message


@pytest.mark.parametrize(("token", "hint"), [(None, True), ("t", False)])
def test_a_401_to_a_request_without_a_token_says_none_was_sent(token, hint):
    def handler(request: httpx.Request) -> httpx.Response:
        error = {"message": "not permitted: reviewer access needed", "code": "UNAUTHORIZED"}
        return httpx.Response(401, json={"error": error})

    remote = Remote("http://127.0.0.1:9", token, "p", transport=httpx.MockTransport(handler))
    with pytest.raises(errors.PermissionDenied) as caught:
        remote.get("a")
    assert str(caught.value).endswith(
        "reviewer access needed (the request carried no token)"
        if hint
        else "reviewer access needed"
    )


def test_remotes_share_one_tls_context(monkeypatch):
    """Loading the CA bundle is paid once per process, not once per Remote."""
    made: list[int] = []
    real = httpx.create_ssl_context

    def counted() -> object:
        made.append(1)
        return real()

    monkeypatch.setattr(httpx, "create_ssl_context", counted)
    remote_module._tls_context.cache_clear()
    try:
        for _ in range(3):
            Remote("https://example.invalid", "t", "p").close()
        assert made == [1]
    finally:
        remote_module._tls_context.cache_clear()


@pytest.mark.parametrize(
    ("limits", "settings_kw"),
    [
        (Limits(64 * 1024, 256 * 1024), {"max_request_bytes": 256 * 1024}),  # the default pair
        (Limits(64 * 1024, 1024 * 1024), {"max_request_bytes": 200 * 1024}),  # request smaller
    ],
    ids=["batch-limit", "request-limit"],
)
@pytest.mark.parametrize("compression", ["off", "on"])
def test_uploads_fit_the_limits_the_server_states(tmp_path, limits, settings_kw, compression):
    """Batches are cut so that each request fits the server's batch limit (the array as
    inflated, commas included) and its request limit (the body as sent): many small objects
    once came to more than the limit their bytes alone were cut to, and were refused (413)."""
    gen = start_server(tmp_path, limits=limits, **settings_kw)
    run = next(gen)
    run.auth.create_project("p", owner="u")
    _, token = run.auth.create_token("u")
    try:
        pairs = [(f"o{n:06d}", b'{"id":"o%06d","p":"%s"}' % (n, b"x" * 12)) for n in range(30_000)]
        with Remote(run.url, token, "p", compression=compression) as remote:
            assert remote.upload(pairs) == len(pairs)
            assert remote.stats.requests["upload"] > 1_000_000 // settings_kw["max_request_bytes"]
        assert run.store.count("p") == len(pairs)
    finally:
        gen.close()


def test_id_lists_fit_the_id_limit_the_server_states(tmp_path):
    """diff and getobjects ask for no more ids at once than the server says it takes (it
    refuses more with 413, and 25k at a time went over a server set to fewer)."""
    gen = start_server(tmp_path, max_ids=300)
    run = next(gen)
    run.auth.create_project("p", owner="u")
    _, token = run.auth.create_token("u")
    try:
        pairs = [(f"o{n:04d}", b'{"id":"o%04d"}' % n) for n in range(1000)]
        run.store.put("p", [data for _, data in pairs[::2]])
        ids = [object_id for object_id, _ in pairs]
        with Remote(run.url, token, "p") as remote:
            assert remote.diff(ids) == {i: n % 2 == 0 for n, i in enumerate(ids)}
            assert dict(remote.get_many(ids)) == dict(pairs[::2])
            assert remote.stats.requests["diff"] == 4 and remote.stats.requests["getobjects"] == 4
    finally:
        gen.close()


@pytest.mark.parametrize("status", [401, 403, 404, 405, 500])
def test_a_server_info_route_that_refuses_leaves_speckles_default_limits(status):
    """A server whose /api/server-info refuses (Speckle's has none; a proxy may guard it)
    is taken to have Speckle's limits, and the diff goes on."""
    asked: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        asked.append(request.url.path)
        if request.url.path == "/api/server-info":
            return httpx.Response(status, text="no")
        return httpx.Response(200, json={i: i == "a" for i in _asked(request)})

    remote = Remote(
        "http://127.0.0.1:9", "t", "p", retries=0, transport=httpx.MockTransport(handler)
    )
    assert remote.diff(["a", "b"]) == {"a": True, "b": False}
    assert remote.limits == Limits()
    assert asked == ["/api/server-info", "/api/diff/p"]


def test_an_empty_object_id_is_refused_before_any_request():
    """No URL names an empty id: its path would be another route's, whose 404 would say the
    object is missing. get, download and download_lines refuse it, asking nothing."""
    asked: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        asked.append(request)
        return httpx.Response(404, json={"error": "not found"})

    remote = Remote("http://127.0.0.1:9", "t", "p", transport=httpx.MockTransport(handler))
    for call in (
        remote.get,
        lambda i: list(remote.download(i)),
        lambda i: list(remote.download_lines(i)),
    ):
        with pytest.raises(ValueError, match="an object id is needed, got an empty one"):
            call("")
    assert asked == []
    assert remote.get("x") is None and len(asked) == 1  # a real id is asked for
