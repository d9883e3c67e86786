"""LMDBTransport as specklepy's local cache, against objstore's server."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import objstore

from ..client.conftest import server  # noqa: F401 - the module's server fixture
from ..server.test_specklepy_interop import build_model

pytest.importorskip("specklepy")


def test_lmdb_transport_as_cache_round_trip(server, tmp_path, speckle_env):  # noqa: F811
    from specklepy.api import operations
    from specklepy.transports.server import ServerTransport

    from objstore.integrations.specklepy import LMDBTransport

    model = build_model(300)
    send_cache = LMDBTransport(tmp_path / "send-cache")
    remote = ServerTransport("priv", url=server.url, token=server.tokens["alice"])
    root_id = operations.send(model, [send_cache, remote], use_default_cache=False)
    assert send_cache.get_object(root_id) is not None
    assert send_cache.has_objects([root_id, "nope"]) == {root_id: True, "nope": False}

    fresh = LMDBTransport(tmp_path / "fresh-cache")
    received = operations.receive(
        root_id, ServerTransport("priv", url=server.url, token=server.tokens["alice"]), fresh
    )
    assert operations.serialize(received) == operations.serialize(model)
    assert fresh.store.count("specklepy") == send_cache.store.count("specklepy")
    # second receive is served by the cache alone
    again = operations.receive(root_id, None, fresh)
    assert operations.serialize(again) == operations.serialize(model)
    # and the cache can copy a graph into another transport
    other = LMDBTransport(tmp_path / "copy")
    assert fresh.copy_object_and_children(root_id, other).startswith("{")
    assert other.store.count("specklepy") == fresh.store.count("specklepy")
    for t in (send_cache, fresh, other):
        t.close()


def test_transports_opened_on_one_cache_dir_share_it(server, tmp_path, speckle_env):  # noqa: F811
    """As with SQLiteTransport, a script may make a transport per call on one cache dir
    without closing the last one (a second LMDB open in one process was a bare lmdb.Error)."""
    from specklepy.api import operations
    from specklepy.transports.server import ServerTransport

    from objstore.integrations.specklepy import LMDBTransport

    model = build_model(50)
    remote = ServerTransport("priv", url=server.url, token=server.tokens["alice"])
    root_id = operations.send(model, [LMDBTransport(tmp_path / "cache"), remote])
    first = LMDBTransport(tmp_path / "cache")
    assert first.get_object(root_id) is not None  # the send's transport stored it here
    second = LMDBTransport(tmp_path / "cache")
    received = operations.receive(root_id, None, second)  # from the cache alone
    assert operations.serialize(received) == operations.serialize(model)
    second.close()
    assert first.has_objects([root_id]) == {root_id: True}  # still open after the other closed
    first.close()


def test_objects_are_stored_under_the_id_they_were_saved_with(tmp_path):
    """As SQLiteTransport keys them: an object saved under an id its JSON does not carry
    fails the batch by that id (it would sit under its own, the saved one missing), and a
    bad one is named by its id; nothing of the batch is stored, and the next write works."""
    import objstore
    from objstore.integrations.specklepy import LMDBTransport

    transport = LMDBTransport(tmp_path / "cache")
    transport.save_object("keep", '{"id": "keep", "v": 1}')
    transport.save_object("given", '{"id": "other", "v": 2}')
    with pytest.raises(objstore.IdMismatch, match=r"^saved object id 'given': given as 'given'"):
        transport.end_write()
    assert transport.has_objects(["keep", "given", "other"]) == dict.fromkeys(
        ["keep", "given", "other"], False
    )
    transport.save_object("broken", '{"id": "broken", "v": ')
    with pytest.raises(objstore.InvalidJSON, match=r"^saved object id 'broken': "):
        transport.end_write()
    transport.save_object("keep", '{"id": "keep", "v": 1}')
    transport.end_write()
    assert transport.get_object("keep") == '{"id": "keep", "v": 1}'
    transport.close()


def test_saved_objects_read_back_before_end_write_and_copy_from_other_transports(
    tmp_path, speckle_env
):
    """What a write has saved is readable before ``end_write`` (specklepy asks a transport
    about objects within a write): pending objects are stored first, once. An object copied
    from another transport (``save_object_from_transport``) is stored as that one holds it;
    an id the other lacks raises ObjectNotFound naming it, and adds nothing."""
    from specklepy.transports.memory import MemoryTransport

    from objstore.integrations.specklepy import LMDBTransport

    transport = LMDBTransport(tmp_path / "cache", scope="p", name="mine")
    assert transport.name == "mine"
    assert repr(transport) == "LMDBTransport(scope='p')"
    transport.begin_write()
    transport.save_object("a", '{"id": "a", "v": 1}')
    assert transport.has_objects(["a", "b"]) == {"a": True, "b": False}
    transport.save_object("b", '{"id": "b", "v": 2}')
    assert transport.get_object("b") == '{"id": "b", "v": 2}'
    source = MemoryTransport()
    source.save_object("c", '{"id": "c", "v": 3}')
    transport.save_object_from_transport("c", source)
    with pytest.raises(objstore.ObjectNotFound, match="'absent'"):
        transport.save_object_from_transport("absent", source)
    transport.end_write()
    assert transport.saved_obj_count == 3
    assert transport.get_object("c") == '{"id": "c", "v": 3}'
    assert transport.store.count("p") == 3
    assert transport.has_objects(["absent"]) == {"absent": False}
    transport.close()


def test_a_transport_takes_a_path_or_a_store_not_both(tmp_path):
    from objstore.integrations.specklepy import LMDBTransport

    with pytest.raises(ValueError, match="path or a store"):
        LMDBTransport(tmp_path / "cache", store=objstore.open_memory())
    with pytest.raises(ValueError, match="path or base_path"):
        LMDBTransport(tmp_path / "a", base_path=tmp_path / "b")
    given = objstore.open_memory()
    shared = LMDBTransport(store=given, scope="p")
    shared.save_object("a", '{"id": "a"}')
    shared.close()  # stores what it buffered; the store given stays open
    assert given.get("p", "a") == b'{"id": "a"}'


def test_a_flush_leaves_the_callers_heap_out_of_collections(tmp_path):
    """specklepy's caller holds the model (millions of containers): each batch stored is
    made with what was alive before it frozen out of collections, thawed after, as in
    objstore's own send and receive."""
    import gc

    from objstore import collector
    from objstore.integrations.specklepy import LMDBTransport

    assert not collector.frozen_by_others()
    held = [[n] for n in range(5_000)]
    transport = LMDBTransport(tmp_path / "cache")
    store_batch = transport.store.iter_put_records
    frozen: list[int] = []

    def recording(*args, **kwargs):
        frozen.append(gc.get_freeze_count())
        return store_batch(*args, **kwargs)

    transport.store.iter_put_records = recording  # type: ignore[method-assign]
    transport.begin_write()
    transport.save_object("a", '{"id":"a","v":1}')
    transport.end_write()
    assert frozen and frozen[0] >= len(held)
    assert not collector.frozen_by_others()  # thawed
    assert transport.get_object("a") == '{"id":"a","v":1}'
    transport.close()


def store_dir(transport: Any) -> Path:
    from objstore.engine.lmdb import LMDBBackend

    backend = transport.store.backend
    assert isinstance(backend, LMDBBackend)
    return backend.path


def test_lmdb_transport_takes_sqlite_transports_arguments(tmp_path, speckle_env):
    """Replacing the class name is the whole change: with no arguments it keeps its store
    in specklepy's user data folder, as SQLiteTransport() keeps Objects.db there (and
    SPECKLE_USERDATA_PATH moves both); base_path, app_name, scope and max_batch_size_mb
    mean what they mean there."""
    from specklepy.api import operations
    from specklepy.transports.sqlite import SQLiteTransport

    from objstore.integrations.specklepy import LMDBTransport

    model = build_model(20)
    sqlite = SQLiteTransport()
    default = LMDBTransport()
    root_id = operations.send(model, [sqlite, default], use_default_cache=False)
    assert store_dir(default) == tmp_path / "userdata" / "Speckle" / "objstore"
    assert (tmp_path / "userdata" / "Speckle" / "Objects.db").exists()
    assert operations.serialize(operations.receive(root_id, None, default)) == (
        operations.serialize(model)
    )
    default.close()

    named = LMDBTransport(app_name="MyApp", scope="Models", max_batch_size_mb=0.001)
    named.begin_write()
    named.save_object("a", '{"id": "a", "pad": "' + "x" * 2000 + '"}')  # over 1 kB: stored
    assert named.store.count("Models") == 1 and named.store.count("specklepy") == 0
    assert store_dir(named) == tmp_path / "userdata" / "MyApp" / "objstore"
    named.close()
    elsewhere = LMDBTransport(base_path=tmp_path / "elsewhere", scope="Models")
    assert store_dir(elsewhere) == tmp_path / "elsewhere"
    elsewhere.close()
    with pytest.raises(ValueError, match="not both"):
        LMDBTransport(tmp_path / "a", base_path=tmp_path / "b")
    with pytest.raises(objstore.InvalidProject):
        LMDBTransport(tmp_path / "c", scope="has space")
    assert not (tmp_path / "c").exists()  # refused before the store was made


def test_a_model_specklepy_sent_pulls_as_a_whole_document(server, tmp_path, speckle_env):  # noqa: F811
    """A mesh specklepy sends keeps its vertices and faces in DataChunks referenced from
    plain members; receive + recompose (what ``objstore pull -o model.json`` writes) gives
    them back as the lists they were, with no reference left in the document."""
    from specklepy.api import operations
    from specklepy.objects.base import Base
    from specklepy.objects.geometry import Mesh
    from specklepy.transports.server import ServerTransport

    from objstore import graph
    from objstore.client import Remote, receive

    vertices = [i / 3 for i in range(3 * 40_000)]  # more than one chunk's worth
    faces = [3, 0, 1, 2] * 20_000
    model = Base()
    model.name = "meshes"
    model["@mesh"] = Mesh(vertices=vertices, faces=faces, units="m")
    remote = ServerTransport("priv", url=server.url, token=server.tokens["alice"])
    root_id = operations.send(model, [remote], use_default_cache=False)

    with objstore.open(tmp_path / "cache") as cache:
        with Remote(server.url, server.tokens["alice"], "priv") as r:
            receive(root_id, r, cache)
        stored_root = json.loads(cache.get("priv", root_id) or b"")
        stored_mesh = json.loads(cache.get("priv", stored_root["@mesh"]["referencedId"]) or b"")
        doc = graph.recompose(root_id, cache, "priv")
    assert "referencedId" not in json.dumps(doc)
    assert doc["name"] == "meshes"
    assert doc["@mesh"]["vertices"] == vertices and doc["@mesh"]["faces"] == faces
    assert doc["@mesh"]["units"] == "m"
    # as stored, the mesh's lists are references to chunks under plain names
    assert {item["speckle_type"] for item in stored_mesh["vertices"]} == {"reference"}
    assert len(stored_mesh["vertices"]) > 1
