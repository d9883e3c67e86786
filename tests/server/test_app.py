"""The object routes against a real uvicorn server on 127.0.0.1."""

from __future__ import annotations

import errno
import gzip
import json
import logging
import os
import socket
import threading
import time
import zlib
from collections.abc import Callable
from typing import Any, NamedTuple

import httpx
import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from objstore import errors

from .conftest import Running

N = 5001


def objs(prefix: str, n: int, pad: int = 20) -> list[bytes]:
    return [
        json.dumps({"id": f"{prefix}{i:05d}", "speckle_type": "Base", "v": i, "pad": "x" * pad})
        .replace(" ", "")
        .encode()
        for i in range(n)
    ]


def array(items: list[bytes]) -> bytes:
    return b"[" + b",".join(items) + b"]"


def upload(server: Running, project: str, parts: list[tuple[str, bytes, str]], who: str = "alice"):
    files = [(name, (name, data, ctype)) for name, data, ctype in parts]
    with httpx.Client(timeout=60) as c:
        return c.post(f"{server.url}/objects/{project}", files=files, headers=server.headers(who))


def ids_body(ids: list[str]) -> dict[str, str]:
    return {"objects": json.dumps(ids)}


@pytest.fixture(scope="module")
def loaded(server: Running) -> dict[str, list[bytes]]:
    """3 parts x 5,001 objects (gzip, JSON, text) plus a root whose closure lists them all."""
    a, b, c = objs("a", N), objs("b", N), objs("c", N)
    r = upload(
        server,
        "priv",
        [
            ("batch-1", gzip.compress(array(a)), "application/gzip"),
            ("batch-2", array(b), "application/json"),
            ("batch-3", array(c), "text/plain"),
        ],
    )
    assert r.status_code == 201, r.text
    assert r.content == b""
    all_ids = [json.loads(o)["id"] for o in a + b + c]
    root = json.dumps({"id": "root", "__closure": {i: 1 for i in all_ids}}).encode()
    assert (
        upload(server, "priv", [("batch-1", array([root]), "application/json")]).status_code == 201
    )
    return {"a": a, "b": b, "c": c, "root": [root]}


def test_single_returns_exact_bytes(server, loaded):
    with httpx.Client() as c:
        r = c.get(f"{server.url}/objects/priv/a00007/single", headers=server.headers("alice"))
        assert r.status_code == 200
        assert r.content == loaded["a"][7]
        assert r.headers["content-type"].startswith("application/json")
        missing = c.get(f"{server.url}/objects/priv/nope/single", headers=server.headers("alice"))
        assert missing.status_code == 404
        assert missing.json()["error"]["code"] == "OBJECT_NOT_FOUND"


def test_diff_real_and_fake_ids_json_and_form(server, loaded):
    ids = ["a00000", "b05000", "fake1", "c00042", "fake2"]
    with httpx.Client() as c:
        form = c.post(
            f"{server.url}/api/diff/priv", data=ids_body(ids), headers=server.headers("alice")
        )
        js = c.post(
            f"{server.url}/api/diff/priv", json=ids_body(ids), headers=server.headers("alice")
        )
    expected = {"a00000": True, "b05000": True, "fake1": False, "c00042": True, "fake2": False}
    assert form.status_code == js.status_code == 200
    assert form.json() == js.json() == expected
    assert list(form.json()) == ids


@pytest.mark.parametrize("coding", ["zstd", "gzip", "identity"])
def test_a_diff_answer_comes_compressed_when_the_client_accepts_it(server, loaded, coding):
    """Speckle's server gzips every diff answer; this one answers in the coding asked for."""
    ids = [f"a{i:05d}" for i in range(0, N, 7)] + [f"fake{i}" for i in range(300)]
    with httpx.Client() as c:
        got = _decoded(
            c,
            "POST",
            f"{server.url}/api/diff/priv",
            json=ids_body(ids),
            headers=server.headers("alice", **{"Accept-Encoding": coding}),
        )
    assert json.loads(got.content) == {i: not i.startswith("fake") for i in ids}
    assert got.headers.get("content-encoding") == (None if coding == "identity" else coding)
    if coding != "identity":
        assert "accept-encoding" in got.headers["vary"].lower()
        assert len(got.raw) < len(got.content) / 3


def test_getobjects_text_and_json(server, loaded):
    everything = loaded["a"] + loaded["b"] + loaded["c"]
    ids = [json.loads(o)["id"] for o in everything] + ["unknown-id"]
    with httpx.Client(timeout=60) as c:
        text = c.post(
            f"{server.url}/api/getobjects/priv",
            data=ids_body(ids),
            headers=server.headers("alice", Accept="text/plain", **{"Accept-Encoding": "gzip"}),
        )
        assert text.status_code == 200
        assert text.headers["content-encoding"] == "gzip"
        lines = text.content.decode().splitlines()
        assert len(lines) == 3 * N
        got = dict(line.split("\t", 1) for line in lines)
        assert got["b01234"].encode() == loaded["b"][1234]
        assert "unknown-id" not in got
        js = c.post(
            f"{server.url}/api/getobjects/priv",
            json=ids_body([*ids[:10], "unknown-id"]),
            headers=server.headers("alice", Accept="application/json"),
        )
        assert js.status_code == 200
        assert [o["id"] for o in js.json()] == ids[:10]


class _Decoded(NamedTuple):
    headers: httpx.Headers
    raw: bytes  # as it came over the wire
    content: bytes  # decoded here: httpx decodes zstd only from 0.27 on


def _decoded(c: httpx.Client, method: str, url: str, **kwargs: Any) -> _Decoded:
    with c.stream(method, url, **kwargs) as r:
        raw = b"".join(r.iter_raw())
    coding = r.headers.get("content-encoding")
    if coding == "zstd":
        body = zstandard.ZstdDecompressor().decompressobj().decompress(raw)
    elif coding == "gzip":
        body = gzip.decompress(raw)
    else:
        body = raw
    return _Decoded(r.headers, raw, body)


def test_streams_and_single_answer_in_zstd_when_the_client_lists_it(server, loaded):
    url = f"{server.url}/objects/priv/root"

    def headers(coding: str) -> dict[str, str]:
        sent: dict[str, str] = server.headers(
            "alice", Accept="text/plain", **{"Accept-Encoding": coding}
        )
        return sent

    with httpx.Client(timeout=60) as c:
        plain = c.get(url, headers=headers("identity"))
        assert "content-encoding" not in plain.headers
        with c.stream("GET", url, headers=headers("gzip, zstd")) as r:
            assert r.headers["content-encoding"] == "zstd"
            assert "accept-encoding" in r.headers["vary"].split(", ")  # (and Origin, for CORS)
            raw = b"".join(r.iter_raw())
        assert zstandard.ZstdDecompressor().decompressobj().decompress(raw) == plain.content
        assert len(raw) < len(plain.content) // 3
        refused = c.get(url, headers=headers("zstd;q=0, gzip"))
        assert refused.headers["content-encoding"] == "gzip"
        assert refused.content == plain.content  # httpx gunzips
        single = _decoded(c, "GET", f"{url}/single", headers=headers("zstd"))
        assert single.headers["content-encoding"] == "zstd"
        assert single.content == loaded["root"][0]


@pytest.mark.parametrize("coding", ["zstd", "gzip"])
def test_a_big_single_object_comes_back_exact_in_either_coding(server, coding):
    big = b'{"id":"big-%s","data":[%s]}' % (
        coding.encode(),
        b",".join(b"%d.%03d" % (i, i % 997) for i in range(150_000)),
    )
    assert len(big) > 1 << 20  # compressed off the event loop
    r = upload(server, "other", [("b", array([big]), "application/json")])
    assert r.status_code == 201, r.text
    with httpx.Client(timeout=60) as c:
        got = _decoded(
            c,
            "GET",
            f"{server.url}/objects/other/big-{coding}/single",
            headers=server.headers("alice", **{"Accept-Encoding": coding}),
        )
    assert got.headers["content-encoding"] == coding
    assert int(got.headers["content-length"]) == len(got.raw) < len(big) // 2
    assert got.content == big


def test_object_and_children_root_first_both_formats(server, loaded):
    with httpx.Client(timeout=60) as c:
        text = c.get(
            f"{server.url}/objects/priv/root",
            headers=server.headers("alice", Accept="text/plain"),
        )
        lines = text.content.decode().splitlines()
        assert lines[0].split("\t", 1) == ["root", loaded["root"][0].decode()]
        assert len(lines) == 3 * N + 1
        assert len({line.split("\t", 1)[0] for line in lines}) == 3 * N + 1
        js = c.get(f"{server.url}/objects/priv/root", headers=server.headers("alice"))
        arr = js.json()
        assert arr[0]["id"] == "root" and len(arr) == 3 * N + 1
        plain = c.get(
            f"{server.url}/objects/priv/a00001",
            headers=server.headers("alice", Accept="text/plain", **{"Accept-Encoding": "identity"}),
        )
        assert "content-encoding" not in plain.headers
        assert plain.content == b"a00001\t" + loaded["a"][1] + b"\n"
        missing = c.get(f"{server.url}/objects/priv/nope", headers=server.headers("alice"))
        assert missing.status_code == 404


ODD_IDS = ["wall/1", "q?x", "h#1", "50%", "p%2F", "..", ".", "é/ü", "x/single"]


def test_ids_and_projects_holding_url_characters_are_served_by_their_escapes(server):
    """An id (or project) may hold ``/ ? # %`` or be ``..``: sent escaped as one path
    segment, it names that object; routes match the path as sent, so ``%2F`` is not a
    separator (Starlette alone routes the decoded path, and answered 404)."""
    from urllib.parse import quote

    server.auth.create_project("odd/one", owner="alice")
    children = [json.dumps({"id": i, "n": n}).encode() for n, i in enumerate(ODD_IDS)]
    root = json.dumps({"id": "root/odd", "__closure": dict.fromkeys(ODD_IDS, 1)}).encode()
    for project in ("priv", "odd/one"):
        where = quote(project, safe="")
        with httpx.Client(timeout=60) as c:
            r = c.post(
                f"{server.url}/objects/{where}",
                files={"batch-1": ("batch-1", array([*children, root]), "application/json")},
                headers=server.headers("alice"),
            )
            assert r.status_code == 201, r.text
            for object_id, data in zip([*ODD_IDS, "root/odd"], [*children, root], strict=True):
                segment = quote(object_id, safe="").replace(".", "%2E")
                got = httpx.get(  # (a Client would drop "." and ".." segments)
                    f"{server.url}/objects/{where}/{segment}/single",
                    headers=server.headers("alice"),
                )
                assert got.status_code == 200 and got.content == data, (object_id, got.text)
            r = c.get(
                f"{server.url}/objects/{where}/root%2Fodd",
                headers=server.headers("alice", Accept="text/plain"),
            )
            assert r.status_code == 200, r.text
            lines = r.content.decode().splitlines()
            assert [line.split("\t")[0] for line in lines] == ["root/odd", *ODD_IDS]
            r = c.post(
                f"{server.url}/api/getobjects/{where}",
                json=ids_body(["h#1", "50%"]),
                headers=server.headers("alice", Accept="text/plain"),
            )
            assert r.content.decode().splitlines()[1].split("\t")[0] == "50%"
            missing = c.get(
                f"{server.url}/objects/{where}/wall%2F2/single", headers=server.headers("alice")
            )
            assert missing.status_code == 404
            assert (
                missing.json()["error"]["message"]
                == f"object 'wall/2' not found in project {project!r}"
            )
    assert server.store.get("odd/one", "wall/1") == children[0]


def test_pretty_printed_objects_stay_one_line_in_text_format(server):
    pretty = b'{\n  "id": "pretty1",\n  "v": [1,\n 2]\n}'
    assert upload(server, "other", [("b", array([pretty]), "application/json")]).status_code == 201
    with httpx.Client() as c:
        single = c.get(
            f"{server.url}/objects/other/pretty1/single", headers=server.headers("alice")
        )
        assert single.content == pretty  # stored and served byte-exact
        text = c.post(
            f"{server.url}/api/getobjects/other",
            data=ids_body(["pretty1"]),
            headers=server.headers("alice", Accept="text/plain"),
        )
    assert text.content == b'pretty1\t{"id":"pretty1","v":[1,2]}\n'


def _count(server: Running) -> int:
    return server.store.stats().objects


BAD_UPLOADS = [
    (
        "not multipart",
        {"content": b"[]", "headers": {"content-type": "application/json"}},
        400,
        "NOT_MULTIPART",
    ),
    (
        "no boundary",
        {"content": b"--x\r\n", "headers": {"content-type": "multipart/form-data"}},
        400,
        "NO_BOUNDARY",
    ),
    (
        "cut before its closing boundary",  # the whole first part too is refused
        {
            "content": b'--x\r\nContent-Type: application/json\r\n\r\n[{"id":"cut1"}]\r\n'
            b'--x\r\nContent-Type: application/json\r\n\r\n[{"id":"cut2"}]',
            "headers": {"content-type": "multipart/form-data; boundary=x"},
        },
        400,
        "BAD_MULTIPART",
    ),
]


@pytest.mark.parametrize(("name", "kwargs", "status", "code"), BAD_UPLOADS)
def test_bad_request_shapes(server, loaded, name, kwargs, status, code):
    before = _count(server)
    headers = {**kwargs["headers"], **server.headers("alice")}
    with httpx.Client() as c:
        r = c.post(f"{server.url}/objects/priv", content=kwargs["content"], headers=headers)
    assert (r.status_code, r.json()["error"]["code"]) == (status, code), r.text
    assert _count(server) == before


GOOD_PART = ("batch-1", array(objs("g", 3)), "application/json")

BAD_PARTS = [
    ("unsupported type", ("b", b"[]", "image/png"), 400, "UNSUPPORTED_PART_TYPE", "image/png"),
    ("bad gzip", ("b", b"\x1f\x8bnot really gzip", "application/gzip"), 400, "BAD_GZIP", "gzip"),
    (
        "truncated gzip",
        ("b", gzip.compress(array(objs("t", 50)))[:-30], "application/gzip"),
        400,
        "BAD_GZIP",
        "truncated",
    ),
    ("not JSON", ("b", b"[{nope", "application/json"), 400, "INVALID_OBJECT", "malformed"),
    ("not an array", ("b", b'{"id":"x"}', "application/json"), 400, "INVALID_BATCH", "part 1"),
    (
        "invalid id",
        ("b", b'[{"id":"has space"}]', "application/json"),
        400,
        "INVALID_OBJECT",
        "whitespace",
    ),
    ("element not object", ("b", b"[1]", "application/json"), 400, "INVALID_OBJECT", "object"),
    (
        "object too large",
        ("b", array([b'{"id":"big","p":"' + b"x" * (3 << 20) + b'"}']), "application/gzip"),
        413,
        "OBJECT_TOO_LARGE",
        "object limit",
    ),
]


@pytest.mark.parametrize(("name", "part", "status", "code", "needle"), BAD_PARTS)
def test_rejected_upload_stores_nothing_not_even_earlier_parts(
    server, loaded, name, part, status, code, needle
):
    before = _count(server)
    pname, data, ctype = part
    if ctype == "application/gzip" and name == "object too large":
        data = gzip.compress(data)
    r = upload(server, "priv", [GOOD_PART, (pname, data, ctype)])
    assert r.status_code == status, r.text
    body = r.json()["error"]
    assert body["code"] == code
    assert needle in body["message"]
    assert _count(server) == before
    with httpx.Client() as c:
        assert (
            c.get(
                f"{server.url}/objects/priv/g00000/single", headers=server.headers("alice")
            ).status_code
            == 404
        )


def test_a_full_disk_is_507_and_stores_nothing(server, loaded, monkeypatch):
    backend = server.store.backend
    if not getattr(backend, "_reserving", False):
        pytest.skip("reservations are made only with a writable map (Linux)")

    def full(fd: int, offset: int, length: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", full)
    monkeypatch.setattr(backend, "_reserved_to", 0)
    before = _count(server)
    r = upload(server, "priv", [("b", array(objs("F", 3)), "application/json")])
    assert r.status_code == 507, r.text
    assert r.json()["error"]["code"] == "STORE_FULL"
    assert "no space left" in r.json()["error"]["message"]
    assert _count(server) == before


def test_damaged_store_pages_are_a_500_naming_the_damage(server, loaded, monkeypatch, caplog):
    """The client gets the damage in its 500; the operator, in one line of the server's log
    (a 4xx, the request's fault, is not logged)."""

    def damaged(*args: object, **kwargs: object) -> None:
        raise errors.StoreCorrupt("/data/objects is damaged or not an objstore store (MDB_X)")

    monkeypatch.setattr(server.store.backend, "closure", damaged)
    monkeypatch.setattr(server.store.backend, "children_ids", damaged)
    with caplog.at_level(logging.ERROR, logger="objstore.server"), httpx.Client() as c:
        r = c.get(f"{server.url}/objects/priv/g00000", headers=server.headers("alice"))
        missing = c.get(
            f"{server.url}/objects/priv/nothing/single", headers=server.headers("alice")
        )
    assert r.status_code == 500, r.text
    assert r.json()["error"]["code"] == "STORE_CORRUPT"
    assert "is damaged" in r.json()["error"]["message"]
    assert missing.status_code == 404
    assert [rec.getMessage() for rec in caplog.records] == [
        "GET /objects/priv/g00000: 500 STORE_CORRUPT: /data/objects is damaged or not an "
        "objstore store (MDB_X)"
    ]


def test_gzip_bomb_is_refused_at_the_batch_limit(server, loaded):
    bomb = gzip.compress(b"[" + b" " * (200 << 20) + b"]", 9)  # 200 MB of spaces, ~200 KB sent
    assert len(bomb) < 1 << 20
    before = _count(server)
    start = time.monotonic()
    r = upload(server, "priv", [("b", bomb, "application/gzip")])
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "BATCH_TOO_LARGE"
    assert "after decompression" in r.json()["error"]["message"]
    assert time.monotonic() - start < 10
    assert _count(server) == before


def test_parts_together_over_batch_limit(server, loaded):
    part = gzip.compress(array(objs("L", 6000, pad=1200)))  # ~7.7 MB inflated each, 3 > 20 MB
    before = _count(server)
    r = upload(server, "priv", [(f"b{i}", part, "application/gzip") for i in range(3)])
    assert r.status_code == 413, r.text
    assert _count(server) == before


def test_body_over_request_limit(server, loaded):
    r = upload(server, "priv", [("b", b"[" + b" " * (9 << 20) + b"]", "application/json")])
    assert r.status_code == 413
    assert "request body" in r.json()["error"]["message"]


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"data": {"objects": "not json"}}, "JSON-encoded list"),
        ({"data": {"objects": "[1, 2]"}}, "JSON-encoded list"),
        ({"data": {"other": "[]"}}, "missing"),
        ({"json": {"objects": "{]"}}, "JSON-encoded list"),
        ({"content": b"{oops", "headers": {"content-type": "application/json"}}, "JSON object"),
        ({"content": b"x", "headers": {"content-type": "image/png"}}, "unsupported"),
    ],
)
def test_malformed_objects_field(server, loaded, kwargs, needle):
    headers = {**kwargs.pop("headers", {}), **server.headers("alice")}
    with httpx.Client() as c:
        for route in ("api/diff", "api/getobjects"):
            r = c.post(f"{server.url}/{route}/priv", headers=headers, **kwargs)
            assert r.status_code == 400, (route, r.text)
            assert needle in r.json()["error"]["message"]


_ENCODE: dict[str, Callable[[bytes], bytes]] = {
    "gzip": gzip.compress,
    "deflate": zlib.compress,
    "zstd": zstandard.ZstdCompressor().compress,
}


@pytest.mark.parametrize("coding", sorted(_ENCODE))
def test_bodies_sent_compressed_are_read_as_speckles_server_reads_them(server, loaded, coding):
    """Speckle's server inflates gzip and deflate JSON bodies (express.json); so does this one,
    and zstd, on every route, and an upload may come encoded as a whole."""
    encode = _ENCODE[coding]
    headers = server.headers("alice", **{"Content-Encoding": coding})
    json_headers = {**headers, "Content-Type": "application/json"}
    ids = ["a00000", "fake1", "c00042"]
    body = encode(json.dumps(ids_body(ids)).encode())
    with httpx.Client(timeout=60) as c:
        diff = c.post(f"{server.url}/api/diff/priv", content=body, headers=json_headers)
        assert diff.json() == {"a00000": True, "fake1": False, "c00042": True}
        got = c.post(
            f"{server.url}/api/getobjects/priv",
            content=body,
            headers={**json_headers, "Accept": "text/plain"},
        )
        assert got.content.splitlines() == [
            b"a00000\t" + loaded["a"][0],
            b"c00042\t" + loaded["c"][42],
        ]
        query = encode(b'{"query": "{ serverInfo { name } }"}')
        answer = c.post(f"{server.url}/graphql", content=query, headers=json_headers)
        assert answer.json()["data"]["serverInfo"]["name"] == "objstore"
        new = objs(f"enc{coding}", 3)
        request = httpx.Request(
            "POST", "http://x", files=[("batch-1", ("b", array(new), "application/json"))]
        )
        multipart = request.read()
        up = c.post(
            f"{server.url}/objects/priv",
            content=encode(multipart),
            headers={**headers, "Content-Type": request.headers["content-type"]},
        )
        assert up.status_code == 201, up.text
        for item in new:
            object_id = json.loads(item)["id"]
            single = c.get(f"{server.url}/objects/priv/{object_id}/single", headers=headers)
            assert single.content == item


def test_a_body_not_in_a_coding_undone_or_not_as_said_is_refused(server, loaded):
    before = _count(server)
    request = httpx.Request(
        "POST", "http://x", files=[("batch-1", ("b", array(objs("nope", 3)), "application/json"))]
    )
    multipart = request.read()
    cases = [
        ("br", multipart, 415, "UNSUPPORTED_CONTENT_ENCODING", "'br'"),
        ("gzip", multipart, 400, "BAD_CONTENT_ENCODING", "not valid gzip"),
        ("gzip", gzip.compress(multipart)[:-8], 400, "BAD_CONTENT_ENCODING", "ends before"),
        # a bomb is cut off at the request limit plus the batch limit (8 + 20 MB here)
        ("gzip", gzip.compress(b" " * (40 << 20)), 413, "PAYLOAD_TOO_LARGE", "once decoded"),
    ]
    with httpx.Client(timeout=60) as c:
        for coding, body, status, code, needle in cases:
            r = c.post(
                f"{server.url}/objects/priv",
                content=body,
                headers=server.headers(
                    "alice",
                    **{"Content-Encoding": coding, "Content-Type": request.headers["content-type"]},
                ),
            )
            assert (r.status_code, r.json()["error"]["code"]) == (status, code), r.text
            assert needle in r.json()["error"]["message"]
        bomb = gzip.compress(b'{"objects": "[' + b" " * (170 << 20) + b']"}', 9)  # cap: 160 MB
        r = c.post(
            f"{server.url}/api/diff/priv",
            content=bomb,
            headers=server.headers(
                "alice", **{"Content-Encoding": "gzip", "Content-Type": "application/json"}
            ),
        )
        assert r.status_code == 413 and "once decoded" in r.json()["error"]["message"]
    assert _count(server) == before


@pytest.mark.slow
def test_a_million_ids_in_one_diff(server, loaded):
    ids = [f"{i:032x}" for i in range(1_000_000)] + ["a00003"]
    with httpx.Client(timeout=120) as c:
        r = c.post(
            f"{server.url}/api/diff/priv", data=ids_body(ids), headers=server.headers("alice")
        )
    assert r.status_code == 200
    answer = r.json()
    assert len(answer) == len(ids)
    assert answer["a00003"] is True and answer[ids[0]] is False


AUTH_MATRIX = [
    # who, method, route, status
    ("garbage", "GET", "/objects/priv/a00000/single", 403),
    ("expired", "GET", "/objects/priv/a00000/single", 403),
    ("revoked", "GET", "/objects/priv/a00000/single", 403),
    (None, "GET", "/objects/priv/a00000/single", 401),
    (None, "POST", "/api/diff/priv", 401),
    ("dave", "GET", "/objects/priv/a00000/single", 401),
    ("carol", "GET", "/objects/priv/a00000/single", 200),
    ("carol", "POST", "/api/diff/priv", 401),
    ("carol", "UPLOAD", "/objects/priv", 401),
    ("bob", "UPLOAD", "/objects/priv", 201),
    ("alice_ro", "GET", "/objects/priv/a00000/single", 200),
    ("alice_ro", "UPLOAD", "/objects/priv", 401),
    ("alice_other", "GET", "/objects/priv/a00000/single", 401),
    ("alice_other", "POST", "/api/diff/other", 200),
    (None, "GET", "/objects/pub/x/single", 404),  # public project: allowed, object absent
    (None, "POST", "/api/getobjects/pub", 200),
    (None, "UPLOAD", "/objects/pub", 401),
    ("alice", "GET", "/objects/nope/a/single", 404),
    ("alice", "POST", "/api/diff/nope", 404),
]


@pytest.mark.parametrize(("who", "method", "route", "status"), AUTH_MATRIX)
def test_auth_matrix(server, loaded, who, method, route, status):
    headers = server.headers(who)
    with httpx.Client() as c:
        if method == "UPLOAD":
            r = c.post(
                server.url + route,
                files=[("b", ("b", array(objs(f"u{who}", 2)), "application/json"))],
                headers=headers,
            )
        elif method == "POST":
            r = c.post(server.url + route, data=ids_body(["a00000"]), headers=headers)
        else:
            r = c.get(server.url + route, headers=headers)
    assert r.status_code == status, r.text
    if status >= 400:
        assert set(r.json()["error"]) == {"message", "code"}


@pytest.mark.parametrize(
    ("header", "status", "code"),
    [
        ("{token}", 200, None),  # bare, as Speckle's server also takes it
        ("Bearer   {token}", 200, None),
        ("bearer {token}", 200, None),
        ("", 401, "UNAUTHORIZED"),  # empty: no token, as on Speckle's server
        ("Bearer", 403, "INVALID_TOKEN"),
        ("Basic {token}", 403, "INVALID_TOKEN"),
        ("{token} extra", 403, "INVALID_TOKEN"),
        ("not-a-token", 403, "INVALID_TOKEN"),
    ],
)
def test_the_authorization_header_forms_speckles_server_takes(server, loaded, header, status, code):
    value = header.format(token=server.tokens["carol"])
    with httpx.Client() as c:
        r = c.get(f"{server.url}/objects/priv/a00000/single", headers={"Authorization": value})
    assert r.status_code == status, r.text
    if code is not None:
        assert r.json()["error"]["code"] == code
    else:
        assert r.content == loaded["a"][0]


def test_public_project_anonymous_read(server):
    assert (
        upload(server, "pub", [("b", array(objs("p", 3)), "application/json")]).status_code == 201
    )
    with httpx.Client() as c:
        r = c.get(f"{server.url}/objects/pub/p00001/single")
    assert r.status_code == 200 and json.loads(r.content)["id"] == "p00001"


def test_client_disconnect_stops_the_store_read(server, loaded):
    info = lambda: httpx.get(f"{server.url}/api/server-info").json()["streams"]  # noqa: E731
    before = info()
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            f"GET /objects/priv/root HTTP/1.1\r\nHost: x\r\nAccept: text/plain\r\n"
            f"Authorization: Bearer {server.tokens['alice']}\r\n\r\n".encode()
        )
        assert sock.recv(65536)  # the stream has started
    deadline = time.monotonic() + 10
    while info()["aborted"] == before["aborted"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert info()["aborted"] == before["aborted"] + 1
    deadline = time.monotonic() + 10  # and the thread reading the store has ended
    while any(t.name == "objstore-stream" for t in threading.enumerate()):
        assert time.monotonic() < deadline, "stream producer thread still running"
        time.sleep(0.05)
    # counted once the reader stopped (it adds what it read as it ends, after the response)
    assert 0 < info()["objects"] - before["objects"] < 3 * N  # stopped well before the end


def test_health_and_server_info(server):
    with httpx.Client() as c:
        assert c.get(f"{server.url}/api/health").json() == {"status": "ok"}
        info = c.get(f"{server.url}/api/server-info").json()
    limits = info["limits"]
    assert info["request_encodings"] == ["zstd", "gzip", "deflate"]  # what bodies may come in
    assert limits["max_object_bytes"] == 2 << 20
    assert limits["max_batch_bytes"] == 20 << 20


def test_an_object_found_damaged_mid_stream_cuts_the_body_for_every_client(tmp_path, caplog):
    """Once a streamed answer has begun, its status is sent: an object found damaged after
    that must cut the connection, not end the body cleanly, or a client would take the
    objects before it for the whole answer (specklepy's, silently). httpx and requests (under
    specklepy) both fail the read, on getobjects in both formats and on object+children.
    The server logs each cut in one line naming the object, and no traceback."""
    from objstore.codec import digest_of

    from ..engine.damage import corrupt
    from .conftest import setup_auth, start_server

    requests = pytest.importorskip("requests")
    gen = start_server(tmp_path, block_bytes=4096)
    run = next(gen)
    uvicorn_log = logging.getLogger("uvicorn.error")  # uvicorn's own: not propagated to caplog
    uvicorn_log.addHandler(caplog.handler)
    try:
        setup_auth(run)
        ids = [f"m{n:04d}" for n in range(300)]
        children = [json.dumps({"id": i, "pad": i * 40}).encode() for i in ids]
        root = json.dumps({"id": "root", "__closure": dict.fromkeys(ids, 1)}).encode()
        run.store.put("priv", [*children, root])
        corrupt(run.store.backend, digest_of(children[200]))
        body = {"objects": json.dumps(ids)}
        for accept in ("text/plain", "application/json"):
            headers = run.headers("alice", Accept=accept)
            with (
                pytest.raises(httpx.RemoteProtocolError, match="incomplete chunked read"),
                httpx.stream(
                    "POST", f"{run.url}/api/getobjects/priv", json=body, headers=headers
                ) as r,
            ):
                assert r.status_code == 200  # sent before the damage was met
                for _ in r.iter_bytes():
                    pass
        with pytest.raises(requests.exceptions.ChunkedEncodingError):
            requests.get(f"{run.url}/objects/priv/root", headers=run.headers("alice"), timeout=30)
        with pytest.raises(requests.exceptions.ChunkedEncodingError):
            requests.post(
                f"{run.url}/api/getobjects/priv",
                data=body,
                headers=run.headers("alice", Accept="text/plain"),
                timeout=30,
            )
    finally:
        uvicorn_log.removeHandler(caplog.handler)
        gen.close()
    ours = [r for r in caplog.records if r.name == "objstore.server.streaming"]
    said = [r.getMessage() for r in ours]
    assert len(said) == 4, said
    assert said[0].startswith("POST /api/getobjects/priv: answer cut after ")
    assert said[2].startswith("GET /objects/priv/root: answer cut after ")
    assert all(
        f"CorruptObject: object 'm0200' (blob {digest_of(children[200]).hex()})" in m for m in said
    ), said
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)
_OBJECTS = st.lists(  # arrays of objects, some of them wrong (an id not a str, a bad closure)
    st.dictionaries(st.sampled_from(["id", "__closure", "x", "speckle_type"]), _JSON),
    max_size=3,
).map(lambda v: json.dumps(v).encode())
_CONTENT_TYPES = [None, "application/json", "application/json", "text/plain"]
_CONTENT_TYPES += ["multipart/form-data", "application/gzip"]
_BODIES = st.one_of(
    st.binary(max_size=200),
    _JSON.map(lambda v: json.dumps(v).encode()),
    _OBJECTS,
    _OBJECTS,
    st.lists(st.text(max_size=8), max_size=3).map(
        lambda v: json.dumps({"objects": json.dumps(v)}).encode()
    ),
)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    route=st.sampled_from(
        ["diff", "getobjects", "upload", "multipart", "multipart", "single", "children"]
    ),
    project=st.sampled_from(["priv"] * 4 + ["pub", "nope", "%2E%2E", "a%2Fb", "x" * 300]),
    object_id=st.sampled_from(["keep", "%2E%2E", "a%2Fb", "%00", "%ff", "x" * 300, "gone"]),
    body=_BODIES,
    content_type=st.sampled_from(_CONTENT_TYPES),
    coding=st.sampled_from([None, None, "gzip", "zstd", "br", "bogus"]),
    squeezed=st.booleans(),
    accept=st.sampled_from([None, "text/plain", "application/json", "text/html"]),
    who=st.sampled_from(["alice"] * 3 + ["bob", "garbage", None]),
)
def test_any_request_gets_an_answer_or_a_json_4xx_and_changes_nothing_stored(
    hostile_target, route, project, object_id, body, content_type, coding, squeezed, accept, who
):
    """Random requests to the five object routes (bodies, content types and codings, ids,
    projects, tokens): never a 5xx, every 4xx a JSON error with a message, and the object
    stored before untouched. (A multipart part gets ``content_type`` as its own type.)"""
    run, client = hostile_target
    headers = run.headers(who) if who else {}
    given_headers = (
        ("Content-Type", content_type),
        ("Content-Encoding", coding),
        ("Accept", accept),
    )
    headers.update({k: v for k, v in given_headers if v})
    body = gzip.compress(body) if squeezed else body
    objects, one = f"/objects/{project}", f"/objects/{project}/{object_id}"
    if route == "multipart":
        part = content_type or "application/json"
        headers.pop("Content-Type", None)
        headers.pop("Content-Encoding", None)
        r = client.post(objects, files={"b": ("b", body, part)}, headers=headers)
    elif route in ("diff", "getobjects", "upload"):
        path = objects if route == "upload" else f"/api/{route}/{project}"
        r = client.post(path, content=body, headers=headers)
    else:
        r = client.get(one + "/single" if route == "single" else one, headers=headers)
    assert r.status_code < 500, r.text
    if r.status_code >= 400:
        message = r.json()["error"]["message"]
        assert isinstance(message, str) and message
    assert run.store.get("priv", "keep") == b'{"id":"keep","v":1}'


@pytest.fixture(scope="module")
def hostile_target(tmp_path_factory):
    """A server of its own for the random requests, and a client for it."""
    from .conftest import setup_auth, start_server

    gen = start_server(tmp_path_factory.mktemp("hostile"))
    run = next(gen)
    setup_auth(run)
    run.store.put("priv", [b'{"id":"keep","v":1}'])
    try:
        with httpx.Client(base_url=run.url, timeout=30) as client:
            yield run, client
        assert run.store.verify().ok
    finally:
        gen.close()


_VIEWER = "http://localhost:3000"  # a browser app on another origin, as Speckle's viewer is


def _preflight(c: httpx.Client, url: str, method: str) -> httpx.Response:
    return c.options(
        url,
        headers={
            "Origin": _VIEWER,
            "Access-Control-Request-Method": method,
            "Access-Control-Request-Headers": "authorization,content-type",
        },
    )


def test_browser_apps_on_any_origin_may_call_the_routes_as_on_speckles_server(server, loaded):
    """Speckle's server answers CORS for every origin, so its viewer and web SDKs load objects
    from any page; a browser sends the token in a header, so it first asks (a preflight)."""
    with httpx.Client(timeout=30) as c:
        for path, method in [
            ("/objects/priv", "POST"),
            ("/api/getobjects/priv", "POST"),
            ("/api/diff/priv", "POST"),
            ("/objects/priv/root", "GET"),
        ]:
            pre = _preflight(c, f"{server.url}{path}", method)
            assert pre.status_code == 200, (path, pre.text)
            assert pre.headers["access-control-allow-origin"] == "*"
            assert method in pre.headers["access-control-allow-methods"]
            assert "authorization" in pre.headers["access-control-allow-headers"].lower()
        headers = server.headers("alice", Origin=_VIEWER, Accept="text/plain")
        streamed = c.get(f"{server.url}/objects/priv/root", headers=headers)
        single = c.get(f"{server.url}/objects/priv/a00001/single", headers=headers)
        denied = c.get(
            f"{server.url}/objects/priv/a00001/single",
            headers={"Origin": _VIEWER, "Authorization": "Bearer wrong"},
        )
        uploaded = c.post(  # to a project of its own: the others' tests count theirs
            f"{server.url}/objects/other",
            files=[("b", ("b", array(objs("cors", 2)), "application/json"))],
            headers=server.headers("alice", Origin=_VIEWER),
        )
    assert streamed.status_code == 200 and len(streamed.text.splitlines()) == 3 * N + 1
    assert single.json()["id"] == "a00001"
    assert uploaded.status_code == 201
    assert denied.status_code == 403  # the page can read why: the error carries the header too
    for r in (streamed, single, denied, uploaded):
        assert r.headers["access-control-allow-origin"] == "*"


@pytest.mark.parametrize("origins", [(), ("https://viewer.example",)])
def test_cross_origin_access_is_only_for_the_origins_configured(tmp_path, origins):
    """OBJSTORE_CORS_ORIGINS narrows it to some origins, or none: a browser then refuses a
    page elsewhere (no header for it; a preflight fails). Clients outside browsers are not
    affected."""
    from .conftest import setup_auth, start_server

    gen = start_server(tmp_path, cors_origins=origins)
    run = next(gen)
    try:
        setup_auth(run)
        url = f"{run.url}/objects/pub/nothing/single"
        with httpx.Client(timeout=30) as c:
            other = c.get(url, headers={"Origin": _VIEWER})
            pre = _preflight(c, url, "GET")
            plain = c.get(url)
            allowed = c.get(url, headers={"Origin": "https://viewer.example"})
    finally:
        gen.close()
    assert other.status_code == plain.status_code == 404
    assert "access-control-allow-origin" not in other.headers
    assert pre.status_code in (400, 405) and "access-control-allow-origin" not in pre.headers
    if origins:
        assert allowed.headers["access-control-allow-origin"] == "https://viewer.example"
    else:
        assert "access-control-allow-origin" not in allowed.headers
