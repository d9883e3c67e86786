"""LMDB-specific behaviour: persistence, map growth, dictionary compression, process safety."""

from __future__ import annotations

import json
import os

import pytest

import objstore
from objstore import errors, graphgen
from objstore.engine.lmdb import LMDBBackend


def test_reopen_keeps_everything(tmp_path):
    g = graphgen.generate(200, seed=3)
    with objstore.open(tmp_path / "s") as store:
        for batch in graphgen.batches(g.objects, max_objects=50):
            store.put("p", batch)
    with objstore.open(tmp_path / "s") as store:
        assert dict(store.get_many("p", [i for i, _ in g.objects])) == dict(g.objects)
        assert len(list(store.iter_with_children("p", g.root_id))) == len(g)
        assert store.verify().ok


def test_map_grows_without_user_visible_error(tmp_path):
    with objstore.open(tmp_path / "s", map_size=256 * 1024) as store:
        objs = [
            json.dumps({"id": f"o{i}", "pad": os.urandom(2000).hex()}).encode() for i in range(600)
        ]
        for start in range(0, 600, 100):
            store.put("p", b"[" + b",".join(objs[start : start + 100]) + b"]")
        assert store.count("p") == 600
        assert store.get("p", "o599") == objs[599]
        assert store.backend._env.info()["map_size"] > 256 * 1024  # type: ignore[attr-defined]


def test_dictionary_trained_and_older_objects_stay_readable(tmp_path):
    g = graphgen.generate(3000, seed=5)
    with objstore.open(tmp_path / "s", dictionary_threshold=1000) as store:
        early = g.objects[:300]
        store.put("p", b"[" + b",".join(d for _, d in early) + b"]")
        assert store.stats().dictionaries == 0
        for batch in graphgen.batches(g.objects[300:], max_objects=1000):
            store.put("p", batch)
        stats = store.stats()
        assert stats.dictionaries == 1
        assert dict(store.get_many("p", [i for i, _ in early])) == dict(early)
        assert dict(store.get_many("p", [i for i, _ in g.objects])) == dict(g.objects)
        assert store.verify().ok
    with objstore.open(tmp_path / "s") as store:  # dictionary reloaded from the store
        assert dict(store.get_many("p", [i for i, _ in g.objects])) == dict(g.objects)
    with objstore.open(tmp_path / "s") as store:  # closures compressed with it decode too
        assert dict(store.iter_with_children("p", g.root_id)) == dict(g.objects)
        some_parent = next(i for i, d in g.objects[300:] if b'"__closure"' in d)
        assert (
            store.closure("p", some_parent) == json.loads(dict(g.objects)[some_parent])["__closure"]
        )


def test_dictionary_beats_plain_zstd(tmp_path):
    g = graphgen.generate(6000, seed=2)
    small = [(i, d) for i, d in g.objects if len(d) < 2000]
    ratios = {}
    for name, threshold in (("plain", 10**9), ("dict", 500)):
        with objstore.open(tmp_path / name, dictionary_threshold=threshold) as store:
            for batch in graphgen.batches(small, max_objects=2000):
                store.put("p", batch)
            ratios[name] = store.stats().ratio
    assert ratios["dict"] < ratios["plain"] * 0.8, ratios


def test_corrupt_compressed_frame_raises(tmp_path):
    with objstore.open(tmp_path / "s") as store:
        big = json.dumps({"id": "big", "v": ["same"] * 500}).encode()
        store.put("p", b"[" + big + b"]")
        backend = store.backend
        assert isinstance(backend, LMDBBackend)
        with backend._read() as txn:
            digest = txn.get(b"\x00\x00\x00\x01big", db=backend._objects)
            blob = txn.get(digest, db=backend._blobs)
        backend._raw_put("blobs", digest, blob[:5] + b"garbage" + blob[12:])
        with pytest.raises(errors.CorruptObject):
            store.get("p", "big")
        assert not store.verify().ok


def test_unknown_format_version_refused(tmp_path):
    with objstore.open(tmp_path / "s") as store:
        store.backend._raw_put("meta", b"version", (99).to_bytes(4, "big"))  # type: ignore[attr-defined]
    with pytest.raises(errors.ObjstoreError, match="format 99"):
        objstore.open(tmp_path / "s")


def test_use_after_fork_is_refused(tmp_path):
    store = objstore.open(tmp_path / "s")
    store.put("p", b'[{"id":"a"}]')
    pid = os.fork()
    if pid == 0:  # child: the inherited environment must not be used
        try:
            store.get("p", "a")
        except errors.StoreClosed:
            os._exit(0)
        os._exit(1)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0
    assert store.get("p", "a") == b'{"id":"a"}'
    store.close()


def test_empty_stored_value_is_reported_as_corrupt_in_batch_reads(tmp_path):
    with objstore.open(tmp_path / "s") as store:
        store.put("p", b'[{"id":"a","v":1},{"id":"b","v":2}]')
        backend = store.backend
        assert isinstance(backend, LMDBBackend)
        with backend._read() as txn:
            digest = txn.get(b"\x00\x00\x00\x01a", db=backend._objects)
        backend._raw_put("blobs", digest, b"")
        with pytest.raises(errors.CorruptObject):
            list(store.get_many("p", ["a", "b"]))
        with pytest.raises(errors.CorruptObject):
            store.get("p", "a")
