from __future__ import annotations

import gc
import os
import threading

import pytest

import objstore
from objstore import errors
from objstore.engine import lmdb as lmdb_backend
from objstore.engine.lmdb import LMDBBackend


def test_two_opens_of_a_store_share_one_backend_until_the_last_closes(tmp_path):
    first = objstore.open(tmp_path / "s")
    second = objstore.open(tmp_path / "s")
    assert second.backend is first.backend
    first.put("p", [b'{"id":"a"}'])
    assert second.get("p", "a") == b'{"id":"a"}'
    first.close()
    first.close()  # a second close of one store gives nothing more back
    assert not second.backend.closed
    second.put("p", [b'{"id":"b"}'])
    second.close()
    assert second.backend.closed
    with pytest.raises(errors.StoreClosed):
        second.get("p", "a")
    with objstore.open(tmp_path / "s") as again:  # a fresh backend once all were closed
        assert again.backend is not first.backend
        assert again.has("p", ["a", "b"]) == {"a": True, "b": True}


def test_another_spelling_of_the_path_is_the_same_store(tmp_path, monkeypatch):
    (tmp_path / "s").mkdir()
    os.symlink(tmp_path / "s", tmp_path / "link")
    monkeypatch.chdir(tmp_path)
    with objstore.open(tmp_path / "s") as a, objstore.open("link") as b:
        assert a.backend is b.backend
    with objstore.open("s/../s") as c:
        assert c.backend is not a.backend


def test_an_open_with_other_options_is_store_in_use_naming_them(tmp_path):
    with objstore.open(tmp_path / "s") as store:
        with pytest.raises(errors.StoreInUse, match=r"readonly=False \(asked True\)"):
            objstore.open(tmp_path / "s", readonly=True)
        with pytest.raises(errors.StoreInUse, match="compression_level=1 \\(asked 3\\)"):
            objstore.open(tmp_path / "s", compression_level=3)
        store.put("p", [b'{"id":"a"}'])  # the refused opens took nothing from it
        default = lmdb_backend.WRITEMAP_DEFAULT
        with objstore.open(tmp_path / "s", writemap=default) as same:  # the default, spelt out
            assert same.backend is store.backend
    with objstore.open(tmp_path / "s", readonly=True) as reader:
        assert reader.get("p", "a") == b'{"id":"a"}'


def test_a_backend_made_directly_on_an_open_store_is_store_in_use(tmp_path):
    with (
        objstore.open(tmp_path / "s"),
        pytest.raises(errors.StoreInUse, match="already open in this process"),
    ):
        LMDBBackend(tmp_path / "s")


def test_a_store_dropped_unclosed_does_not_block_the_next_open(tmp_path):
    store = objstore.open(tmp_path / "s")
    store.put("p", [b'{"id":"a"}'])
    del store
    gc.collect()
    with objstore.open(tmp_path / "s") as store:
        assert store.get("p", "a") == b'{"id":"a"}'


def test_a_backend_closed_under_its_store_is_replaced_at_the_next_open(tmp_path):
    store = objstore.open(tmp_path / "s")
    store.put("p", [b'{"id":"a"}'])
    store.backend.close()
    with objstore.open(tmp_path / "s") as again:
        assert again.backend is not store.backend
        assert again.get("p", "a") == b'{"id":"a"}'
    store.close()  # its release finds the entry replaced: the new backend stays as it was


def test_threads_opening_at_once_get_one_backend(tmp_path):
    stores: list[objstore.Store] = []
    lock = threading.Lock()
    start = threading.Barrier(4)

    def opener(n: int) -> None:
        start.wait()
        store = objstore.open(tmp_path / "s")
        store.put("p", [f'{{"id":"t{n}"}}'.encode()])
        with lock:
            stores.append(store)

    threads = [threading.Thread(target=opener, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(stores) == 4 and len({id(s.backend) for s in stores}) == 1
    for store in stores[:-1]:
        store.close()
    assert stores[-1].count("p") == 4
    stores[-1].close()
    assert stores[-1].backend.closed
