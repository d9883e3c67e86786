"""Helpers the LMDB backend's tests share."""

from __future__ import annotations

import contextlib
import json
import random
from collections.abc import Iterator
from pathlib import Path

import objstore
from objstore.engine.lmdb import LMDBBackend


def map_size(store: objstore.Store) -> int:
    return int(store.backend._env.info()["map_size"])  # type: ignore[attr-defined]


def entries(backend: LMDBBackend, db_name: str) -> int:
    with backend._read() as txn:
        return int(txn.stat(getattr(backend, f"_{db_name}"))["entries"])


def children_in_order(g):
    by_id = dict(g.objects)
    closure = json.loads(by_id[g.root_id])["__closure"]
    return [(g.root_id, by_id[g.root_id])] + [(i, by_id[i]) for i in closure if i in by_id]


def padded(object_id: str, rng: random.Random, **extra: object) -> bytes:
    """An object of about 1 KB that compresses poorly, so a few hundred fill several packs."""
    body = {"id": object_id, "pad": rng.randbytes(400).hex(), **extra}
    return json.dumps(body).encode()


@contextlib.contextmanager
def holding(path: Path, *objects: bytes) -> Iterator[tuple[objstore.Store, LMDBBackend]]:
    """An LMDB store at ``path`` holding ``objects`` in project ``p``, and its backend."""
    with objstore.open(path) as store:
        if objects:
            store.put("p", list(objects))
        backend = store.backend
        assert isinstance(backend, LMDBBackend)
        yield store, backend
