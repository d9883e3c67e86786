"""send/receive through a local cache against a real objstore server."""

from __future__ import annotations

import gc
import gzip
import itertools
import json
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

import objstore
from objstore import codec, collector, errors, graphgen
from objstore.client import Remote, receive, send, transfer
from objstore.limits import DEFAULT_MAX_OBJECT_BYTES, Limits

from ..server.conftest import setup_auth, start_server
from .conftest import Faults


def remote(server, project="priv", who="alice", **kw) -> Remote:
    return Remote(server.url, server.tokens[who], project, **kw)


def test_send_then_receive_round_trip(server, model, tmp_path):
    with remote(server) as r:
        result = send(model.objects, r)
    assert (result.root_id, result.total, result.uploaded) == (
        model.root_id,
        len(model),
        len(model),
    )
    assert r.stats.objects_uploaded == len(model)
    with objstore.open(tmp_path / "cache") as cache, remote(server) as r2:
        got = receive(model.root_id, r2, cache)
        assert (got.total, got.downloaded, got.from_cache) == (len(model), len(model), 0)
        assert dict(cache.iter_with_children("priv", model.root_id)) == dict(model.objects)
        # warm cache: no object requests at all
        with remote(server) as r3:
            warm = receive(model.root_id, r3, cache)
        assert warm.from_cache == len(model) and warm.downloaded == 0
        assert r3.stats.requests == {}
    # sending again uploads nothing
    with remote(server) as r4:
        again = send(model.objects, r4)
    assert again.uploaded == 0 and again.skipped == len(model)
    assert "upload" not in r4.stats.requests


def test_compressed_bodies_round_trip_against_the_server(server, tmp_path):
    g = graphgen.generate(3_000, seed=5, salt="compressed")
    with remote(server, compression="on") as r:
        assert send(g.objects, r).uploaded == len(g)  # gzip'd upload parts
    assert 0 < r.stats.bytes_uploaded < sum(len(d) for _, d in g.objects) / 2
    with objstore.open(tmp_path / "cache") as cache, remote(server, compression="on") as r2:
        assert receive(g.root_id, r2, cache).downloaded == len(g)  # a zstd download
        assert dict(cache.iter_with_children("priv", g.root_id)) == dict(g.objects)


def test_resume_after_a_send_killed_midway(server):
    g = graphgen.generate(12_000, seed=12)

    def die_after_three_uploads(request: httpx.Request, n: int) -> httpx.Response | None:
        if request.url.path.startswith("/objects/"):
            die_after_three_uploads.uploads += 1  # type: ignore[attr-defined]
            if die_after_three_uploads.uploads > 3:  # type: ignore[attr-defined]
                raise httpx.ConnectError("killed")
        return None

    die_after_three_uploads.uploads = 0  # type: ignore[attr-defined]
    faulty = Remote(
        server.url,
        server.tokens["alice"],
        "other",
        transport=Faults(die_after_three_uploads),
        retries=0,
        batch_objects=1000,
        concurrency=1,
    )
    with pytest.raises(errors.ConnectionFailed):
        send(g.objects, faulty)
    landed = sum(server.store.has("other", [i for i, _ in g.objects]).values())
    assert landed == 3000
    assert server.store.get("other", g.root_id) is None  # the root waits for its children
    with Remote(server.url, server.tokens["alice"], "other", batch_objects=1000) as again:
        result = send(g.objects, again)
    assert result.uploaded == len(g) - 3000 and result.skipped == 3000
    assert again.stats.objects_uploaded == len(g) - 3000
    assert server.store.count("other") >= len(g)


def test_receive_with_partly_filled_cache_fetches_only_missing(server, model, tmp_path):
    with remote(server) as r:
        send(model.objects, r)  # already there from the round trip, or now
    have = model.objects[: int(len(model) * 0.7)]
    with objstore.open(tmp_path / "partial") as cache:
        for batch in graphgen.batches(have):
            cache.put("priv", batch)
        with remote(server) as r2:
            got = receive(model.root_id, r2, cache)
        missing = len(model) - len(have)
        assert got.from_cache == len(have)
        assert r2.stats.objects_downloaded == missing - 1  # all lacking children, via getobjects
        assert "download" not in r2.stats.requests and r2.stats.requests["getobjects"] >= 1
        assert dict(cache.iter_with_children("priv", model.root_id)) == dict(model.objects)


@pytest.mark.parametrize(("held", "way"), [(0.2, "getobjects"), (0.05, "download")])
def test_receive_streams_all_children_only_when_the_cache_lacks_nearly_all(
    server, tmp_path, held, way
):
    """A cache holding a fifth of a graph asks for the other four fifths by id (the stream
    would send it everything again); one holding a twentieth takes the children stream, and
    its progress counts the objects it held once, not again as the stream brings them."""
    g = graphgen.generate(2_000, seed=23)
    server.store.put_many("other", graphgen.batches(g.objects))
    children = g.objects[:-1]
    have = children[: int(len(children) * held)]
    with objstore.open(tmp_path / "cache") as cache:
        cache.put_many("other", graphgen.batches(have))
        with remote(server, "other") as r:
            got = receive(g.root_id, r, cache, progress=(bar := _Progress()))
        assert (got.from_cache, got.downloaded) == (len(have), len(g) - len(have))
        assert (bar.totals, bar.done) == ([len(g)], len(g))
        other = "download" if way == "getobjects" else "getobjects"
        assert r.stats.requests[way] >= 1 and other not in r.stats.requests
        lacking = len(children) - len(have)  # the stream serves the root and every child
        assert r.stats.objects_downloaded == (lacking if way == "getobjects" else len(g))
        assert dict(cache.iter_with_children("other", g.root_id)) == dict(g.objects)


def _fail_first(status: int, times: int, retry_after: str | None):
    def rule(request: httpx.Request, n: int) -> httpx.Response | None:
        if "/api/diff/" in request.url.path and rule.left > 0:  # type: ignore[attr-defined]
            rule.left -= 1  # type: ignore[attr-defined]
            headers = {"Retry-After": retry_after} if retry_after else {}
            return httpx.Response(status, headers=headers, json={"error": {"message": "busy"}})
        return None

    rule.left = times  # type: ignore[attr-defined]
    return rule


@pytest.mark.parametrize("status", [429, 503])
def test_retries_honour_retry_after(server, status):
    faults = Faults(_fail_first(status, 2, "1"))
    with Remote(server.url, server.tokens["alice"], "priv", transport=faults, backoff=0.01) as r:
        start = time.monotonic()
        assert r.diff(["a", "b"]) == {"a": False, "b": False}
        elapsed = time.monotonic() - start
    assert r.stats.retries == 2
    assert r.stats.requests["diff"] == 3
    assert elapsed >= 2.0  # two waits of Retry-After: 1


def test_a_retry_after_that_is_no_wait_backs_off_instead(server):
    faults = Faults(_fail_first(503, 2, "soon"))
    with Remote(server.url, server.tokens["alice"], "priv", transport=faults, backoff=0.01) as r:
        assert r.diff(["a"]) == {"a": False}
    assert r.stats.retries == 2 and r.stats.requests["diff"] == 3


def test_the_children_stream_is_asked_again_while_the_server_is_busy(server, tmp_path):
    """A 429/503 before the object+children stream starts is retried as every other
    request is (Retry-After honoured); once it has started, a break is resumed by id."""
    g = graphgen.generate(300, seed=41)
    server.store.put_many("other", graphgen.batches(g.objects))
    busy = [2]

    def rule(request: httpx.Request, n: int) -> httpx.Response | None:
        if request.url.path == f"/objects/other/{g.root_id}" and busy[0] > 0:
            busy[0] -= 1
            return httpx.Response(503, headers={"Retry-After": "0"}, json={"error": {}})
        return None

    with (
        objstore.open(tmp_path / "cache") as cache,
        Remote(server.url, server.tokens["alice"], "other", transport=Faults(rule)) as r,
    ):
        got = receive(g.root_id, r, cache)
        assert (got.total, got.downloaded) == (len(g), len(g))
        assert r.stats.retries == 2 and r.stats.requests["download"] == 3
        assert "getobjects" not in r.stats.requests
        assert dict(cache.iter_with_children("other", g.root_id)) == dict(g.objects)


def test_backoff_without_retry_after_then_gives_up(server):
    faults = Faults(_fail_first(502, 10, None))
    with (
        Remote(
            server.url, server.tokens["alice"], "priv", transport=faults, retries=2, backoff=0.01
        ) as r,
        pytest.raises(errors.RemoteError) as info,
    ):
        r.diff(["a"])
    assert info.value.status == 502 and r.stats.requests["diff"] == 3


def test_no_retry_when_the_input_is_wrong(server):
    with Remote(server.url, server.tokens["alice"], "priv") as r:
        with pytest.raises(errors.RemoteRejected) as info:
            r.upload([("bad id", b'{"id":"bad id"}')])
        assert info.value.status == 400
        assert r.stats.requests["upload"] == 1 and r.stats.retries == 0


def test_auth_and_connection_errors(server):
    with Remote(server.url, "x" * 42, "priv") as r, pytest.raises(errors.AuthenticationFailed):
        r.diff(["a"])
    with (
        Remote(server.url, server.tokens["carol"], "priv") as r,
        pytest.raises(errors.PermissionDenied),
    ):
        r.diff(["a"])
    with (
        Remote(server.url, server.tokens["alice"], "nope") as r,
        pytest.raises(errors.RemoteNotFound),
    ):
        r.get("a")
    with (
        Remote("http://127.0.0.1:9", None, "p", retries=1, backoff=0.01) as r,
        pytest.raises(errors.ConnectionFailed, match="cannot reach"),
    ):
        r.diff(["a"])


def test_limits_learned_from_server_split_uploads(server):
    objs = [
        (f"lim{i}", json.dumps({"id": f"lim{i}", "pad": "q" * 5000}).encode()) for i in range(300)
    ]
    with Remote(server.url, server.tokens["alice"], "other", batch_bytes=200_000) as r:
        assert r.limits.max_object_bytes == 10 * 1024 * 1024
        assert r.upload(objs) == 300
        assert r.stats.requests["upload"] >= 8
        with pytest.raises(errors.ObjectTooLarge):
            r.upload([("huge", b'{"id":"huge","p":"' + b"x" * (11 << 20) + b'"}')])


def test_send_writes_the_cache_in_batches_under_its_limit(server, tmp_path):
    g = graphgen.generate(2000, seed=31)
    assert g.total_bytes > 1_000_000
    cache = objstore.open_memory(objstore.Limits(max_object_bytes=1 << 20, max_batch_bytes=400_000))
    with remote(server, "other") as r:
        result = send(g.objects, r, cache)  # one 20k-object window, many cache batches
    assert result.total == len(g)
    assert cache.count("other") == len(g)


def test_receive_writes_the_cache_in_batches_under_its_limit(server):
    g = graphgen.generate(2000, seed=32)
    with remote(server, "other") as r:
        send(g.objects, r)
    limits = objstore.Limits(max_object_bytes=DEFAULT_MAX_OBJECT_BYTES, max_batch_bytes=400_000)
    cache = objstore.open_memory(limits)
    ticks: list[int] = []
    with remote(server, "other") as r:
        got = receive(g.root_id, r, cache, progress=type("P", (), {"advance": ticks.append}))
    assert got.total == got.downloaded == len(g)
    assert dict(cache.iter_with_children("other", g.root_id)) == dict(g.objects)
    batches = ticks[1:-1]  # the cache's writes, between the count from the cache and the root
    assert len(batches) > g.total_bytes // 200_000 and max(batches) < len(g)


def test_receive_cuts_stream_blocks_bigger_than_a_cache_batch(server):
    """A cache whose batch limit is below one streamed block (64 KB) still gets batches
    under it: such blocks are cut object by object."""
    children = [
        (f"c{n}", json.dumps({"id": f"c{n}", "pad": "x" * 20_000}).encode()) for n in range(40)
    ]
    closure = {object_id: 1 for object_id, _ in children}
    root = ("root", json.dumps({"id": "root", "__closure": closure}).encode())
    with remote(server, "other") as r:
        send([*children, root], r)
    cache = objstore.open_memory(objstore.Limits(max_object_bytes=25_000, max_batch_bytes=50_000))
    with remote(server, "other") as r:
        got = receive("root", r, cache)
    assert got.total == got.downloaded == len(children) + 1
    assert dict(cache.iter_with_children("other", "root")) == dict([root, *children])


def test_children_data_leaves_out_the_root_wherever_it_comes():
    blocks = [[b'a\t{"id":"a"}', b'root\t{"id":"root"}\r'], [b'b\t{"id":"b"}\r']]
    got = list(transfer._children_data(blocks, "root"))
    assert got == [[b'{"id":"a"}'], [b'{"id":"b"}\r']]


def test_top_level_send_and_receive_wrappers(server, tmp_path):
    g = graphgen.generate(300, seed=41)
    with remote(server, "other") as r:
        sent = objstore.send(g.objects, r)
    assert sent.root_id == g.root_id and sent.total == len(g)
    with remote(server, "other") as r, objstore.open(tmp_path / "c") as cache:
        got = objstore.receive(g.root_id, r, cache)
        assert got.total == len(g)
        assert dict(cache.iter_with_children("other", g.root_id)) == dict(g.objects)


class _BreaksMidBody(httpx.SyncByteStream):
    def __iter__(self):
        yield b'partial-id\t{"id":'
        raise httpx.ReadError("connection lost mid-body")


def test_getobjects_retries_a_body_lost_midway(server, model):
    def rule(request: httpx.Request, n: int) -> httpx.Response | None:
        if "/api/getobjects/" in request.url.path and rule.left > 0:  # type: ignore[attr-defined]
            rule.left -= 1  # type: ignore[attr-defined]
            return httpx.Response(200, stream=_BreaksMidBody())
        return None

    rule.left = 1  # type: ignore[attr-defined]
    with remote(server) as r:
        send(model.objects[:200], r)
    ids = [i for i, _ in model.objects[:200]]
    with Remote(
        server.url, server.tokens["alice"], "priv", transport=Faults(rule), backoff=0.01
    ) as r:
        got = dict(r.get_many(ids))
    assert got == dict(model.objects[:200])
    assert r.stats.retries == 1 and r.stats.requests["getobjects"] == 2


def test_a_cache_that_refuses_a_batch_fails_the_send(server, tmp_path):
    g = graphgen.generate(300, seed=14)
    objstore.open(tmp_path / "cache").close()
    with (
        objstore.open(tmp_path / "cache", readonly=True) as cache,
        remote(server, "other") as r,
        pytest.raises(errors.StoreReadOnly),
    ):
        send(g.objects, r, cache)


def _pair(obj: dict[str, Any]) -> tuple[str, bytes]:
    return obj["id"], json.dumps(obj).encode()


def _graph_of(tag: str, children: list[dict[str, Any]]) -> list[tuple[str, bytes]]:
    root = {"id": f"root-{tag}", "__closure": {c["id"]: 1 for c in children}}
    return [*map(_pair, children), _pair(root)]


def test_an_id_sent_again_with_other_bytes_is_told_not_passed_over(server, tmp_path):
    """A hand-made dump that keeps an object's id while its content changes: the cache and
    the server keep the first bytes (an id names one content), and send says so instead
    of counting the new bytes as already on the server."""
    with remote(server, "other") as r, objstore.open(tmp_path / "c") as cache:
        first = send(_graph_of("v1", [{"id": "wall-7", "height": 3}]), r, cache)
        assert (first.uploaded, first.conflicts) == (2, 0)
        assert "already held" not in first.summary()
        again = send(_graph_of("v2", [{"id": "wall-7", "height": 4}]), r, cache)
        assert (again.total, again.uploaded, again.skipped, again.conflicts) == (2, 1, 1, 1)
        assert "1 came under an id the cache already held with other bytes" in again.summary()
        assert json.loads(cache.get("other", "wall-7") or b"") == {"id": "wall-7", "height": 3}
        assert json.loads(r.get("wall-7") or b"") == {"id": "wall-7", "height": 3}
    with remote(server, "other") as r, objstore.open(tmp_path / "d") as cache:
        twice = [_pair({"id": "door-2", "w": 1}), _pair({"id": "door-2", "w": 2})]
        within = send([*twice, _pair({"id": "root-doors", "__closure": {"door-2": 1}})], r, cache)
        assert within.conflicts == 1  # the same id twice in one input, the bytes differing


def test_a_receive_says_what_the_server_sent_under_ids_held_with_other_bytes(server, tmp_path):
    children = [{"id": f"pane-{n}", "n": n} for n in range(20)]
    with remote(server, "other") as r:
        send(_graph_of("panes", children), r)
    with remote(server, "other") as r, objstore.open(tmp_path / "c") as cache:
        cache.put("other", [json.dumps({"id": "pane-0", "n": "edited here"}).encode()])
        got = receive("root-panes", r, cache)  # 19 of 20 lacking: the whole children stream
        assert got.conflicts == 1 and "1 came under an id" in got.summary()
        assert json.loads(cache.get("other", "pane-0") or b"") == {
            "id": "pane-0",
            "n": "edited here",
        }
    with remote(server, "other") as r, objstore.open(tmp_path / "d") as cache:
        got = receive("root-panes", r, cache)
        assert got.conflicts == 0 and "came under" not in got.summary()


def test_a_cache_takes_every_object_the_server_takes(tmp_path):
    """A server whose object limit is above the cache's: send and receive still go through
    that cache (objects the server holds must fit in it), and its own limits stay as they
    were."""
    gen = start_server(tmp_path / "big", limits=objstore.Limits(3 << 20, 8 << 20))
    run = next(gen)
    setup_auth(run)
    try:
        big = json.dumps({"id": "big", "pad": "x" * (2 << 20)}).encode()
        root = json.dumps({"id": "root", "__closure": {"big": 1}}).encode()
        small = objstore.Limits(max_object_bytes=1 << 20, max_batch_bytes=1 << 20)
        with objstore.open_memory(small) as cache, remote(run, "other") as r:
            assert send([("big", big), ("root", root)], r, cache).uploaded == 2
            assert cache.get("other", "big") == big
        with objstore.open_memory(small) as cache, remote(run, "other") as r:
            assert receive("root", r, cache).downloaded == 2
            assert dict(cache.iter_with_children("other", "root")) == {"root": root, "big": big}
            assert cache.limits == small
            with pytest.raises(errors.LimitExceeded):
                cache.put("mine", [big])  # outside a transfer the cache keeps its limits
    finally:
        gen.close()


class _CutAfter(httpx.SyncByteStream):
    def __init__(self, body: bytes, keep: int) -> None:
        self.body, self.keep = body, keep

    def __iter__(self):
        yield self.body[: self.keep]  # ends inside a line: that object is not taken
        raise httpx.ReadError("connection lost mid-body")


def _sent(server, objects: int, seed: int) -> graphgen.Graph:
    g = graphgen.generate(objects, seed=seed)
    with remote(server, "other") as r:
        send(g.objects, r)
    return g


def test_receive_keeps_what_a_broken_download_delivered_and_fetches_only_the_rest(server, tmp_path):
    g = _sent(server, 20_000, seed=52)
    lines = [b"%s\t%s\n" % (i.encode(), d) for i, d in [g.objects[-1], *g.objects[:-1]]]
    body = b"".join(lines)  # what the download route would send: root first
    keep = sum(map(len, lines[:8_001])) + 40
    asked: list[int] = []

    def rule(request: httpx.Request, n: int) -> httpx.Response | None:
        if request.url.path == f"/objects/other/{g.root_id}":
            return httpx.Response(200, stream=_CutAfter(body, keep))
        if "/api/getobjects/" in request.url.path:
            asked.append(len(json.loads(json.loads(request.content)["objects"])))
        return None

    with (
        objstore.open(tmp_path / "cache") as cache,
        remote(server, "other", transport=Faults(rule), backoff=0.01) as r,
    ):
        got = receive(g.root_id, r, cache)
        assert (got.total, got.downloaded) == (len(g), len(g))
        assert r.stats.requests["download"] == 1  # not started again
        kept = len(g) - 1 - sum(asked)  # children the stream delivered (in whole MB reads)
        assert 7_000 < kept <= 8_000
        assert r.stats.objects_downloaded == 1 + kept + sum(asked)  # nothing came twice
        assert dict(cache.iter_with_children("other", g.root_id)) == dict(g.objects)


def test_receive_falls_back_to_getobjects_when_the_download_route_fails(server, tmp_path):
    g = _sent(server, 3_000, seed=53)

    def rule(request: httpx.Request, n: int) -> httpx.Response | None:
        if request.url.path == f"/objects/other/{g.root_id}":
            raise httpx.ConnectError("refused")
        return None

    with (
        objstore.open(tmp_path / "cache") as cache,
        remote(server, "other", transport=Faults(rule), backoff=0.01) as r,
    ):
        got = receive(g.root_id, r, cache)
        assert got.downloaded == len(g)
        assert r.stats.requests["download"] == 6  # tried, with its five retries
        assert r.stats.objects_downloaded == len(g) - 1  # the children, by id
        assert dict(cache.iter_with_children("other", g.root_id)) == dict(g.objects)


def test_receive_from_a_server_out_of_reach_fails_once_it_has_tried(tmp_path):
    with (
        objstore.open(tmp_path / "cache") as cache,
        Remote("http://127.0.0.1:9", "t", "p", retries=1, backoff=0.01) as r,
        pytest.raises(errors.ConnectionFailed, match="cannot reach"),
    ):
        receive("root", r, cache)


def test_send_windows_hold_a_bounded_number_of_bytes(server, tmp_path, monkeypatch):
    monkeypatch.setattr(transfer, "WINDOW_BYTES", 100_000)
    meshes = [
        (f"win{i}", json.dumps({"id": f"win{i}", "v": "m" * 20_000}).encode()) for i in range(40)
    ]
    root = {"id": "winroot", "__closure": {i: 1 for i, _ in meshes}}
    objects = [*meshes, ("winroot", json.dumps(root).encode())]
    with objstore.open(tmp_path / "cache") as cache:
        cache.put("other", [d for _, d in objects])
        with remote(server, "other") as r:
            result = send("winroot", r, cache)  # read from the cache as a stream, by root id
        assert (result.total, result.uploaded) == (41, 41)
        # ten windows of four 20 KB objects (a fifth would pass 100 KB), the small root in
        # the last, then the held root's own diff
        assert r.stats.requests["diff"] == 11
    assert server.store.get("other", "winroot") == objects[-1][1]


def test_send_diffs_the_next_window_while_uploads_are_in_flight(server, monkeypatch):
    monkeypatch.setattr(transfer, "WINDOW", 10)
    objects = [(f"pipe{i}", json.dumps({"id": f"pipe{i}", "n": i}).encode()) for i in range(40)]
    diffs: list[int] = []
    second_diff = threading.Event()
    overlapped: list[bool] = []
    first = threading.Lock()
    with remote(server, "pub", batch_objects=5) as r:
        real_diff, real_upload = r.diff, r._upload_batch

        def diff(ids):
            answer = real_diff(list(ids))
            diffs.append(len(answer))
            if len(diffs) == 2:
                second_diff.set()
            return answer

        def upload_batch(batch):
            if first.acquire(blocking=False):  # the first batch waits for the second diff
                overlapped.append(second_diff.wait(timeout=10))
            return real_upload(batch)

        monkeypatch.setattr(r, "diff", diff)
        monkeypatch.setattr(r, "_upload_batch", upload_batch)
        ticks: list[int] = []
        result = send(objects, r, progress=type("P", (), {"advance": staticmethod(ticks.append)}))
    assert overlapped == [True]
    assert sum(ticks) == 40  # skipped ones as diffed, uploaded ones as their batch lands
    assert (result.total, result.uploaded, result.skipped) == (40, 40, 0)
    assert [server.store.get("pub", i) for i, _ in objects] == [d for _, d in objects]


def test_send_uploads_batches_of_up_to_32_mb(server):
    """Each upload is one write transaction on the server: fewer, larger ones keep a growing
    store's commits from rewriting a B-tree page per row."""
    pad = "m" * 1_000_000
    meshes = [(f"big{i}", json.dumps({"id": f"big{i}", "v": pad}).encode()) for i in range(40)]
    root = {"id": "bigroot", "__closure": {i: 1 for i, _ in meshes}}
    objects = [*meshes, ("bigroot", json.dumps(root).encode())]
    with remote(server, "other") as r:
        assert send(objects, r).uploaded == 41
    # 40 MB of meshes: 31 under 32 MB, then the other 9; the root alone after them
    assert r.stats.requests["upload"] == 3
    assert server.store.get("other", "big39") == meshes[-1][1]


def _broken(data: bytes) -> bytes:
    return data[: len(data) // 2]  # cut inside the object: not JSON any more


def test_an_object_the_cache_refuses_is_the_servers_fault_named_by_id(server, tmp_path):
    g = _sent(server, 2_000, seed=54)
    bad_id = g.objects[700][0]
    lines = [
        b"%s\t%s\n" % (i.encode(), _broken(d) if i == bad_id else d)
        for i, d in [g.objects[-1], *g.objects[:-1]]
    ]

    def rule(request: httpx.Request, n: int) -> httpx.Response | None:
        if request.url.path == f"/objects/other/{g.root_id}":
            return httpx.Response(200, stream=httpx.ByteStream(b"".join(lines)))
        return None

    with objstore.open(tmp_path / "cache") as cache:
        with (
            remote(server, "other", transport=Faults(rule)) as r,
            pytest.raises(errors.InvalidRemoteObject) as caught,
        ):
            receive(g.root_id, r, cache)
        message = str(caught.value)
        named = f"{server.url} sent object {bad_id!r}, which the cache refuses (InvalidJSON:"
        assert named in message
        assert "batch" not in message  # the cache's own batching is not the user's business
        assert isinstance(caught.value.cause, errors.InvalidJSON)
        assert isinstance(caught.value, errors.RemoteError)
        assert cache.get("other", bad_id) is None
        assert cache.get("other", g.root_id) is None  # the graph is not claimed whole
        with remote(server, "other") as r:  # the server fixed: the next receive completes
            assert receive(g.root_id, r, cache).total == len(g)
        assert dict(cache.iter_with_children("other", g.root_id)) == dict(g.objects)


def test_a_bad_object_by_id_or_a_bad_root_is_the_servers_fault_too(server, tmp_path):
    g = _sent(server, 2_000, seed=55)
    child_id = g.objects[5][0]
    bad_closure = json.dumps({"id": child_id, "__closure": {"x y": 1}}).encode()
    root_path = f"/objects/other/{g.root_id}/single"

    def rule(request: httpx.Request, n: int) -> httpx.Response | None:
        if "/api/getobjects/" in request.url.path:
            line = b"%s\t%s\n" % (child_id.encode(), bad_closure)
            return httpx.Response(200, stream=httpx.ByteStream(line))
        return None

    with objstore.open(tmp_path / "cache") as cache:
        cache.put("other", [d for i, d in g.objects[:-1] if i != child_id])  # one child lacks
        with (
            remote(server, "other", transport=Faults(rule)) as r,
            pytest.raises(errors.InvalidRemoteObject, match=f"sent object '{child_id}'"),
        ):
            receive(g.root_id, r, cache)
        assert cache.get("other", child_id) is None

        def bad_root(request: httpx.Request, n: int) -> httpx.Response | None:
            if request.url.path == root_path:
                return httpx.Response(200, content=b'{"id": "' + g.root_id.encode() + b'", ')
            return None

        with (
            remote(server, "other", transport=Faults(bad_root)) as r,
            pytest.raises(errors.InvalidRemoteObject) as caught,
        ):
            receive(g.root_id, r, cache)
        assert isinstance(caught.value.cause, errors.InvalidJSON)
        assert cache.get("other", g.root_id) is None


def _window_of_ten_with_a_bad_one(tag: str) -> list[tuple[str, bytes]]:
    objects = [(f"{tag}{i}", json.dumps({"id": f"{tag}{i}", "n": i}).encode()) for i in range(30)]
    objects[23] = (f"{tag}23", f'{{"id": "{tag}23", "n": '.encode())  # cut off mid-object
    root = {"id": f"{tag}root", "__closure": {i: 1 for i, _ in objects}}
    return [*objects, (f"{tag}root", json.dumps(root).encode())]


@pytest.mark.parametrize("cached", [True, False])
def test_a_bad_object_given_to_send_is_named_by_its_place_and_id(
    server, tmp_path, monkeypatch, cached
):
    """A bad object given to send fails it named by its place in the input and the id it
    came with (not by the server's 400 or the cache's batch), even when the server refuses
    its upload first; the root is not uploaded, nothing of its window is cached, and once
    fixed a second send moves only the rest."""
    monkeypatch.setattr(transfer, "WINDOW", 10)
    tag = f"chk{int(cached)}-"
    objects = _window_of_ten_with_a_bad_one(tag)
    with objstore.open(tmp_path / "cache") as cache, remote(server, "other") as r:
        with pytest.raises(errors.InvalidJSON) as caught:
            send(objects, r, cache if cached else None)
        assert (caught.value.index, caught.value.object_id) == (23, f"{tag}23")
        assert str(caught.value).startswith(f"object 23 id '{tag}23': ")
        third = [i for i, _ in objects[20:]]
        if cached:  # the cache checks on its thread while the window uploads: the server
            # may hold the window's good objects, never the bad one or the root
            assert not any(server.store.has("other", [f"{tag}23", f"{tag}root"]).values())
        else:  # checked before the upload
            assert not any(server.store.has("other", third).values())  # nor the root
        assert not any(cache.has("other", third).values())
        if cached:  # the windows before it are kept
            assert all(cache.has("other", [i for i, _ in objects[:20]]).values())
        on_server = sum(server.store.has("other", [i for i, _ in objects]).values())
        objects[23] = (f"{tag}23", json.dumps({"id": f"{tag}23", "n": 23}).encode())
        with remote(server, "other") as again:
            result = send(objects, again, cache if cached else None)
        assert (result.uploaded, result.skipped) == (len(objects) - on_server, on_server)
    assert server.store.get("other", f"{tag}root") == objects[-1][1]


def test_an_object_given_under_another_id_is_refused(server):
    """A pair whose id is not its object's would be stored under the object's own id, the
    given one still missing on the server: the send fails naming both, uploading nothing."""
    mine = json.dumps({"id": "given-zz", "v": 1}).encode()
    root = json.dumps({"id": "given-root", "__closure": {"given-a": 1}}).encode()
    with remote(server, "other") as r:
        with pytest.raises(errors.IdMismatch, match="given as 'given-a', but its JSON says"):
            send([("given-a", mine), ("given-root", root)], r)
        assert "upload" not in r.stats.requests
        anonymous = b'{"v": 2}'
        with pytest.raises(errors.IdMismatch, match="has no id and its bytes hash to") as caught:
            send([("given-b", anonymous), ("given-root", root)], r)
        assert (caught.value.index, caught.value.object_id) == (0, "given-b")
        own = codec.digest_of(anonymous).hex()
        assert send([(own, anonymous), ("given-root2", b'{"id": "given-root2"}')], r).uploaded == 2
    assert json.loads(server.store.get("other", own)) == {"id": own, "v": 2}  # id written in
    assert not any(server.store.has("other", ["given-a", "given-zz", "given-root"]).values())


@pytest.mark.parametrize("cached", [True, False])
def test_an_object_given_as_text_is_refused_by_its_place(server, cached):
    objects: list[Any] = [("text-0", b'{"id": "text-0"}'), ("text-1", '{"id": "text-1"}')]
    with remote(server, "other") as r, objstore.open_memory() as cache:
        with pytest.raises(errors.InvalidBatch, match=r"^object 1 id 'text-1' must be bytes.*str"):
            send([*objects, ("text-root", b'{"id": "text-root"}')], r, cache if cached else None)
        assert "upload" not in r.stats.requests


@pytest.mark.parametrize(
    ("source", "says"),
    [
        (b'[{"id": "x"}]', "send takes a root id or the graph's objects .* got bytes"),
        (None, "send takes a root id .* got NoneType"),
        ([b'{"id": "x"}'], r"object 0 must be an \(id, bytes\) pair, got bytes"),
        ([("x", b'{"id": "x"}'), {"id": "y"}], "object 1 must be an .* got dict"),
        ([("x", b'{"id": "x"}', 3)], "object 0 must be an .* got tuple"),
    ],
)
@pytest.mark.parametrize("cached", [False, True])
def test_objects_given_in_the_wrong_shape_are_refused_naming_it(server, cached, source, says):
    with remote(server, "other") as r, objstore.open_memory() as cache:
        with pytest.raises(errors.InvalidBatch, match=says):
            send(source, r, cache if cached else None)
        assert "upload" not in r.stats.requests
        assert not cache.projects()


def test_ids_and_projects_holding_url_characters_go_both_ways(server, tmp_path):
    """Objects whose ids hold ``/ ? # %`` (or are ``..``), in a project whose name holds a
    ``/``, are sent and received like any others: each request names them escaped."""
    server.auth.create_project("odd/two", owner="alice")
    odd = ["wall/1", "q?x", "h#1", "50%", "..", ".", "é/ü", "x/single"]
    children = [(i, json.dumps({"id": i, "n": n}).encode()) for n, i in enumerate(odd)]
    root = ("root/odd?#", json.dumps({"id": "root/odd?#", "__closure": dict.fromkeys(odd, 1)}))
    graph = [*children, (root[0], root[1].encode())]
    with remote(server, "odd/two") as r:
        assert send(graph, r).uploaded == len(graph)
        assert r.diff([i for i, _ in graph]) == dict.fromkeys([i for i, _ in graph], True)
        for object_id, data in graph:
            assert r.get(object_id) == data, object_id
        assert r.get("wall/2") is None
        assert list(r.download(root[0])) == [graph[-1], *children]
        assert sorted(r.get_many(odd)) == sorted(children)
    with remote(server, "odd/two") as r, objstore.open(tmp_path / "c") as cache:
        got = receive(root[0], r, cache)
        assert (got.total, got.downloaded) == (len(graph), len(graph))
        assert dict(cache.iter_with_children("odd/two", root[0])) == dict(graph)
    assert server.store.get("odd/two", "..") == children[4][1]


@pytest.mark.parametrize(
    "call",
    [
        lambda r: r.diff("abc"),
        lambda r: r.diff(["a", 1]),
        lambda r: list(r.get_many("abc")),
        lambda r: list(r.get_many([None])),
        lambda r: r.get(5),
        lambda r: list(r.download(b"root")),
        lambda r: receive(cast(Any, 5), r, objstore.open_memory()),
    ],
)
def test_a_remote_given_ids_of_the_wrong_type_says_so_before_asking(server, call):
    with remote(server, "other") as r:
        with pytest.raises(TypeError, match=r"use \[id\]|object ids must be str"):
            call(r)
        assert sum(r.stats.requests.values()) == 0


@pytest.mark.parametrize("how", ["stream", "getobjects"])
def test_objects_the_server_lacks_fail_the_receive_and_the_root_is_not_cached(
    server, tmp_path, how
):
    """A root whose closure names objects the server does not have: the receive fails naming
    them (as specklepy's would, at the first missing child), keeps what came, and does not
    write the root, so "the root is there" still means "the graph is there". Once the server
    has them, a second receive fetches only those and the root."""
    kids = [
        (f"lack-{how}-{i}", json.dumps({"id": f"lack-{how}-{i}", "n": i}).encode())
        for i in range(6)
    ]
    ghosts = [f"lack-{how}-ghost{i}" for i in range(4)]
    closure = {i: 1 for i in [*(k for k, _ in kids), *ghosts]}
    root = (
        f"lack-{how}-root",
        json.dumps({"id": f"lack-{how}-root", "__closure": closure}).encode(),
    )
    server.store.put("other", [d for _, d in [*kids, root]])
    with objstore.open(tmp_path / "cache") as cache:
        if how == "getobjects":  # most of the closure cached already: asked for by id
            cache.put("other", [d for _, d in kids[:5]])
        with remote(server, "other") as r, pytest.raises(errors.RemoteNotFound) as caught:
            receive(root[0], r, cache)
        message = str(caught.value)
        assert f"4 of the 10 objects under {root[0]!r} are not in project 'other'" in message
        assert f"{ghosts[0]!r}" in message and "and 1 more" in message
        assert cache.get("other", root[0]) is None
        assert all(cache.has("other", [k for k, _ in kids]).values())
        server.store.put("other", [json.dumps({"id": g}).encode() for g in ghosts])
        with remote(server, "other") as r:
            got = receive(root[0], r, cache)
        assert (got.total, got.downloaded, got.from_cache) == (11, 5, 6)
        assert cache.get("other", root[0]) == root[1]


def test_sending_a_root_the_cache_holds_without_all_its_graph_fails_before_the_root(
    server, tmp_path
):
    kids = [(f"part-{i}", json.dumps({"id": f"part-{i}"}).encode()) for i in range(5)]
    closure = {i: 1 for i in [*(k for k, _ in kids), "part-gone"]}
    root = json.dumps({"id": "part-root", "__closure": closure}).encode()
    with objstore.open(tmp_path / "cache") as cache:
        cache.put("other", [*(d for _, d in kids), root])  # put by hand, not received
        with remote(server, "other") as r, pytest.raises(errors.ObjectNotFound) as caught:
            send("part-root", r, cache)
        assert caught.value.object_id == "part-gone"
        assert "holds 'part-root' without 1 of its closure" in str(caught.value)
    assert server.store.get("other", "part-root") is None


class _Progress:
    def __init__(self) -> None:
        self.totals: list[int] = []
        self.done = 0

    def total(self, n: int) -> None:
        self.totals.append(n)

    def advance(self, n: int) -> None:
        self.done += n


def test_progress_learns_the_total_once_known(server, tmp_path):
    """A bar gets its total as soon as the count is known (the root's closure on receive, the
    cache's graph on a send by root id), and advances to exactly it."""
    g = graphgen.generate(1_500, seed=57)
    with remote(server, "other") as r:
        send(g.objects, r, progress=(sent := _Progress()))
    assert (sent.totals, sent.done) == ([len(g)], len(g))
    with objstore.open(tmp_path / "cache") as cache:
        for _ in range(2):  # cold, then warm from the cache
            with remote(server, "other") as r:
                receive(g.root_id, r, cache, progress=(got := _Progress()))
            assert (got.totals, got.done) == ([len(g)], len(g))
        with remote(server, "priv") as r:
            send(g.root_id, r, cache, cache_project="other", progress=(up := _Progress()))
        assert (up.totals, up.done) == ([len(g)], len(g))


def test_send_and_receive_leave_the_callers_heap_out_of_collections(server, tmp_path):
    """What the caller holds (a model: millions of containers) is frozen out of collections
    for the length of a transfer and thawed after, so the transfer's own young objects do not
    set off full passes over it."""
    assert not collector.frozen_by_others()
    held = [[n] for n in range(5_000)]
    seen: list[int] = []
    g = graphgen.generate(1_500, seed=58)
    progress = type(
        "P", (), {"advance": staticmethod(lambda n: seen.append(gc.get_freeze_count()))}
    )
    with remote(server, "other") as r:
        send(g.objects, r, progress=progress)
    assert seen and min(seen) >= len(held)
    assert not collector.frozen_by_others()  # thawed
    seen.clear()
    with objstore.open(tmp_path / "cache") as cache, remote(server, "other") as r:
        receive(g.root_id, r, cache, progress=progress)
    assert seen and min(seen) >= len(held)
    assert not collector.frozen_by_others()  # thawed


_GRAPH = graphgen.generate(300, seed=5)
_ROOT = _GRAPH.root_id
_CHILDREN = {i for i, _ in _GRAPH.objects} - {_ROOT}
_ALL = [i for i, _ in _GRAPH.objects]
_machines = itertools.count()
_N = len(_GRAPH)
_some = st.one_of(  # which of the graph's objects (by place, children first) a step takes
    st.sets(st.integers(0, _N - 1), min_size=1, max_size=20).map(sorted),
    st.tuples(st.integers(0, _N - 1), st.integers(0, _N - 1)).map(
        lambda ends: list(range(min(ends), max(ends) + 1))
    ),
    st.integers(0, _N - 1).map(lambda k: [n for n in range(_N) if n != k]),  # all but one
    st.just(list(range(_N))),
)


class _TransferMachine(RuleBasedStateMachine):
    """send and receive in random order through one cache, against one project of a real
    server, while a model tracks which of a graph's objects each side holds."""

    server: Any = None

    def __init__(self) -> None:
        super().__init__()
        self.project = f"machine-{next(_machines)}"
        self.server.auth.create_project(self.project, owner="alice")
        self.remote = Remote(self.server.url, self.server.tokens["alice"], self.project)
        self.dir = Path(tempfile.mkdtemp(prefix="objstore-transfer-"))
        self.cache = objstore.open(self.dir / "cache")
        self.on_server: set[str] = set()
        self.in_cache: set[str] = set()

    def teardown(self) -> None:
        self.remote.close()
        self.cache.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    @rule(picks=_some, via_cache=st.booleans())
    def send_objects(self, picks: list[int], via_cache: bool) -> None:
        objects = [_GRAPH.objects[n] for n in picks]  # children before parents
        ids = {i for i, _ in objects}
        result = send(objects, self.remote, self.cache if via_cache else None)
        assert (result.total, result.uploaded, result.skipped) == (
            len(objects),
            len(ids - self.on_server),
            len(ids & self.on_server),
        )
        self.on_server |= ids
        if via_cache:
            self.in_cache |= ids

    @rule(picks=_some)
    def cache_objects(self, picks: list[int]) -> None:
        """Objects that came into the cache some other way (an earlier model's receive)."""
        objects = [_GRAPH.objects[n] for n in picks]
        self.cache.put(self.project, [data for _, data in objects])
        self.in_cache |= {i for i, _ in objects}

    @rule()
    def drop_cache(self) -> None:
        self.cache.delete_project(self.project)
        self.in_cache = set()

    @initialize(picks=st.one_of(st.just(list(range(_N))), _some))
    def server_starts_with(self, picks: list[int]) -> None:
        self.send_objects(picks, via_cache=False)

    @rule(cache=st.sampled_from(["as it is", "emptied", "refilled"]), picks=_some)
    def receive_root(self, cache: str, picks: list[int]) -> None:
        if cache != "as it is":
            self.drop_cache()
        if cache == "refilled":
            self.cache_objects(picks)
        if _ROOT in self.in_cache and self.in_cache >= _CHILDREN:
            result = receive(_ROOT, self.remote, self.cache)
            assert (result.from_cache, result.downloaded) == (len(_GRAPH), 0)
            return
        held = len(_CHILDREN & self.in_cache)
        if _ROOT not in self.on_server or not (self.on_server | self.in_cache) >= _CHILDREN:
            with pytest.raises(errors.RemoteNotFound):
                receive(_ROOT, self.remote, self.cache)
            if _ROOT in self.on_server:  # what the server had came, the root did not
                self.in_cache |= _CHILDREN & self.on_server
            return
        result = receive(_ROOT, self.remote, self.cache)
        assert (result.total, result.from_cache) == (len(_GRAPH), held)
        assert result.downloaded == len(_GRAPH) - held  # the root is always fetched
        self.in_cache |= _CHILDREN | {_ROOT}

    @rule()
    def send_root_from_cache(self) -> None:
        if _ROOT not in self.in_cache or not self.in_cache >= _CHILDREN:
            had_root = _ROOT in self.on_server
            with pytest.raises(errors.ObjectNotFound):
                send(_ROOT, self.remote, self.cache)
            # what was read before the gap may have gone up: ask the server what it holds
            held = self.server.store.has(self.project, _ALL)
            self.on_server = {i for i, ok in held.items() if ok}
            assert (_ROOT in self.on_server) == had_root  # never a root without its graph
            return
        result = send(_ROOT, self.remote, self.cache)
        lacking = (_CHILDREN | {_ROOT}) - self.on_server
        assert (result.total, result.uploaded) == (len(_GRAPH), len(lacking))
        self.on_server |= _CHILDREN | {_ROOT}

    @invariant()
    def each_side_holds_what_the_model_says(self) -> None:
        assert self.cache.has(self.project, _ALL) == {i: i in self.in_cache for i in _ALL}
        assert self.server.store.has(self.project, _ALL) == {i: i in self.on_server for i in _ALL}
        expected = {i: d for i, d in _GRAPH.objects if i in self.in_cache}
        assert dict(self.cache.get_many(self.project, _ALL)) == expected


def test_random_sends_and_receives_keep_cache_and_server_whole(server):
    machine = type("TransferMachine", (_TransferMachine,), {"server": server})
    run_state_machine_as_test(
        machine,
        settings=settings(
            max_examples=60,
            stateful_step_count=12,
            deadline=None,
            suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
        ),
    )


@settings(max_examples=80, deadline=None)
@given(
    blocks=st.lists(
        st.lists(st.integers(0, 1400), max_size=12),  # each object's padding, in bytes
        max_size=10,
    ),
    max_batch=st.integers(1600, 6000),
)
def test_cache_writes_from_stream_blocks_stay_under_the_cache_limits(blocks, max_batch):
    """However a stream's blocks come (empty, small, over the cache's batch size, holding
    objects near its object limit), the writer stores every object once and never hands the
    cache a batch its limits refuse."""
    cache = objstore.open_memory(Limits(1500, max_batch))
    made = 0
    sent: list[list[bytes]] = []
    for sizes in blocks:
        block = []
        for size in sizes:
            block.append(b'{"id":"o%d","p":"%s"}' % (made, b"x" * size))
            made += 1
        sent.append(block)
    with transfer._CacheWriter(cache, "p") as writer:
        writer.put_blocks(iter(sent))
    stored = dict(cache.get_many("p", [f"o{n}" for n in range(made)]))
    assert stored == {f"o{n}": data for n, data in enumerate(itertools.chain(*sent))}


_KIDS: list[dict[str, Any]] = [{"id": f"k{n}", "n": n} for n in range(12)]
_CLOSURE = {f"k{n}": 1 for n in range(12)}
_GOOD = {o["id"]: json.dumps(o).encode() for o in [*_KIDS, {"id": "root", "__closure": _CLOSURE}]}


class _Hostile:
    """A server (an httpx transport) that answers each route as ``plan`` says: the right
    answer, garbage, an error status, a mislabelled coding, or object lines gone wrong."""

    def __init__(self, plan: dict[str, Any]) -> None:
        self.plan = plan

    def _lines(self, ids: list[str]) -> bytes:
        out = []
        for n, object_id in enumerate(ids):
            data = _GOOD.get(object_id)
            if data is None:
                continue
            key = object_id.encode()
            how = self.plan["lines"][n % len(self.plan["lines"])]
            if how == "good":
                out.append(key + b"\t" + data)
            elif how == "other id":
                out.append(key + b"\t" + data.replace(b'"id": "', b'"id": "x'))
            elif how == "bad json":
                out.append(key + b"\t" + data[:-1])
            elif how == "no tab":
                out.append(data)
            elif how == "dropped":
                continue
            elif how == "twice":
                out += [key + b"\t" + data] * 2
            elif how == "bad closure":
                out.append(key + b"\t" + data.replace(b'"n"', b'"__closure": {"a": "b"}, "n"'))
            elif how == "cut":
                out.append(key + b"\t" + data[: len(data) // 2])
                break
        return b"\n".join(out) + b"\n"

    def _answer(self, spec: object, good: bytes) -> httpx.Response:
        if isinstance(spec, int):
            return httpx.Response(
                spec, json={"error": {"message": "no"}}, headers={"retry-after": "0"}
            )
        body = good if spec == "good" else cast(bytes, spec)
        headers = {}
        coding = self.plan["coding"]
        if coding == "gzip":
            body = gzip.compress(body)
        if coding is not None:
            headers["content-encoding"] = "gzip"  # "liar": plain bytes said to be gzip
        return httpx.Response(200, stream=_Chunks(body), headers=headers)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path, plan = request.url.path, self.plan
        if path == "/api/server-info":
            limits = {"limits": {"max_object_bytes": 10_000_000, "max_batch_bytes": 50_000_000}}
            return self._answer(plan["server-info"], json.dumps(limits).encode())
        if path.endswith("/single"):
            return self._answer(plan["single"], _GOOD["root"])
        if request.method == "POST" and path.startswith("/objects/"):
            return httpx.Response(plan["upload"], json={"error": {"message": "no"}})
        asked = json.loads(json.loads(request.content)["objects"]) if request.content else []
        if path.startswith("/api/diff/"):
            return self._answer(plan["diff"], json.dumps(dict.fromkeys(asked, False)).encode())
        if path.startswith("/api/getobjects/"):
            return self._answer("good", self._lines(asked))
        return self._answer(plan["stream"], self._lines(list(_GOOD)[::-1]))


class _Chunks(httpx.SyncByteStream):
    def __init__(self, data: bytes) -> None:
        self.data = data

    def __iter__(self):
        for at in range(0, len(self.data), 97):
            yield self.data[at : at + 97]


_GARBAGE = st.one_of(
    st.binary(max_size=60),
    st.sampled_from([b"", b"null", b"[]", b"{}", b'{"limits": 5}', b'{"k0": "yes"}']),
    st.sampled_from([400, 401, 403, 404, 413, 429, 500, 503]),
)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    plan=st.fixed_dictionaries(
        {
            "server-info": st.one_of(st.just("good"), _GARBAGE),
            "single": st.one_of(st.just("good"), _GARBAGE),
            "diff": st.one_of(st.just("good"), _GARBAGE),
            "stream": st.one_of(st.just("good"), _GARBAGE),
            "upload": st.sampled_from([201, 201, 400, 413, 500, 507]),
            "coding": st.sampled_from([None, None, "gzip", "liar"]),
            "lines": st.lists(
                st.sampled_from(
                    ["good"] * 4
                    + ["other id", "bad json", "no tab", "dropped", "twice", "bad closure", "cut"]
                ),
                min_size=1,
                max_size=13,
            ),
        }
    ),
    sending=st.booleans(),
    held=st.integers(0, 12),
)
def test_a_hostile_server_gets_an_objstore_error_or_a_whole_graph(plan, sending, held):
    """Whatever a server answers (garbage, error statuses, a coding it does not hold to,
    object lines under other ids, cut, doubled, broken), send and receive end in an
    ``objstore.errors`` class or a whole transfer: the cache never holds an object under
    the wrong bytes, nor a root without its closure, and verifies after."""
    cache = objstore.open_memory()
    kids = [_GOOD[k["id"]] for k in _KIDS]
    if sending or held:
        cache.put("p", [*kids, _GOOD["root"]] if sending else kids[:held])
    transport = httpx.MockTransport(_Hostile(plan))
    with Remote(
        "http://127.0.0.1:9",
        "t",
        "p",
        transport=transport,
        retries=1,
        backoff=0.001,
        max_backoff=0.001,
        compression="on",
    ) as r:
        try:
            (send if sending else receive)("root", r, cache)
        except errors.ObjstoreError as exc:
            assert str(exc)
    assert cache.verify().ok
    for object_id, data in _GOOD.items():
        assert cache.get("p", object_id) in (None, data)
    if cache.get("p", "root") is not None:
        assert all(cache.has("p", list(_CLOSURE)).values())
