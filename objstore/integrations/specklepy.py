"""A drop-in for specklepy's SQLiteTransport, on an objstore store.

    from objstore.integrations.specklepy import LMDBTransport
    cache = LMDBTransport()  # where SQLiteTransport() keeps its Objects.db; or a directory
    operations.send(base, [server_transport], use_default_cache=False)  # or as a cache:
    operations.receive(obj_id, server_transport, local_transport=cache)

It takes SQLiteTransport's arguments (``base_path``, ``app_name``, ``scope``,
``max_batch_size_mb``, ``name``), so replacing the class name is the whole change. Writes are
buffered and stored in batches (one LMDB transaction each) on ``end_write`` or when the buffer
fills. specklepy stays an optional extra: this module imports it on use.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from specklepy.transports.abstract_transport import AbstractTransport

import objstore
from objstore import codec, collector
from objstore.store import check_project

BATCH_OBJECTS = 10_000
BATCH_BYTES = 25 * 1024 * 1024


STORE_DIR = "objstore"  # the store's directory in specklepy's app folder (beside Objects.db)


def default_path(app_name: str | None = None) -> Path:
    """Where ``LMDBTransport()`` keeps its store: specklepy's user data folder for the app
    (``SPECKLE_USERDATA_PATH`` overrides it), as SQLiteTransport() does."""
    from specklepy.core.helpers import speckle_path_provider

    base = Path(speckle_path_provider.user_application_data_path())
    return base / (app_name or "Speckle") / STORE_DIR


class LMDBTransport(AbstractTransport):  # type: ignore[misc]
    """specklepy transport over an objstore store (one project of it: ``scope``).

    ``path`` (or SQLiteTransport's ``base_path``) is the store's directory; without one, or
    a ``store``, it is :func:`default_path` of ``app_name``."""

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        app_name: str | None = None,
        scope: str | None = None,
        max_batch_size_mb: float | None = None,
        name: str = "LMDB",
        *,
        base_path: str | os.PathLike[str] | None = None,
        store: objstore.Store | None = None,
    ) -> None:
        if path is not None and base_path is not None:
            raise ValueError("give path or base_path, not both")
        path = path if path is not None else base_path
        if path is not None and store is not None:
            raise ValueError("give a path or a store, not both")
        self.scope = check_project(scope or "specklepy")
        self._owns_store = store is None
        if store is None:
            store = objstore.open(Path(path).expanduser() if path else default_path(app_name))
        self.store = store
        self._name = name
        self._batch_bytes = (
            BATCH_BYTES if max_batch_size_mb is None else max(1, int(max_batch_size_mb * 1e6))
        )
        self._pending: list[tuple[str, bytes]] = []
        self._pending_ids: set[str] = set()
        self._pending_bytes = 0
        self.saved_obj_count = 0

    @property
    def name(self) -> str:
        return self._name

    def __repr__(self) -> str:
        return f"LMDBTransport(scope={self.scope!r})"

    def begin_write(self) -> None:
        self.saved_obj_count = 0

    def end_write(self) -> None:
        self._flush()

    @collector.sparing_heap()  # (specklepy's caller holds the model: not rescanned)
    def _flush(self) -> None:
        """Store the buffered objects as one batch, each under the id it was saved with (as
        SQLiteTransport keys them): one whose JSON says another fails it (IdMismatch), and a
        bad one is named by that id. A failed batch is dropped with its error, stored in
        none of its part, so the transport stays usable for the next write."""
        if not self._pending:
            return
        pending = self._pending
        self._pending = []
        self._pending_ids = set()
        self._pending_bytes = 0
        try:
            records = codec.prepare_pairs(pending, self.store.limits)
        except objstore.InvalidObject as exc:
            raise exc.located("saved object") from None
        for _ in self.store.iter_put_records(self.scope, [records]):
            pass

    def save_object(self, id: str, serialized_object: str) -> None:
        data = serialized_object.encode()
        self._pending.append((id, data))
        self._pending_ids.add(id)
        self._pending_bytes += len(data)
        self.saved_obj_count += 1
        if len(self._pending) >= BATCH_OBJECTS or self._pending_bytes >= self._batch_bytes:
            self._flush()

    def save_object_from_transport(self, id: str, source_transport: Any) -> None:
        text = source_transport.get_object(id)
        if text is None:
            raise objstore.ObjectNotFound(self.scope, id)
        self.save_object(id, text)

    def get_object(self, id: str) -> str | None:
        if id in self._pending_ids:
            self._flush()
        data = self.store.get(self.scope, id)
        return data.decode() if data is not None else None

    def has_objects(self, id_list: list[str]) -> dict[str, bool]:
        if self._pending_ids.intersection(id_list):
            self._flush()
        return self.store.has(self.scope, id_list)

    def copy_object_and_children(self, id: str, target_transport: Any) -> str:
        self._flush()
        stream = self.store.iter_with_children(self.scope, id)
        root_id, root = next(stream)
        target_transport.begin_write()
        for object_id, data in stream:
            target_transport.save_object(object_id, data.decode())
        target_transport.save_object(root_id, root.decode())
        target_transport.end_write()
        return root.decode()

    def close(self) -> None:
        self._flush()
        if self._owns_store:
            self.store.close()
