"""Shared fixtures: every engine test runs against each storage backend."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import objstore
from objstore.limits import Limits

BACKENDS = ["lmdb", "memory"]


def make_store(
    kind: str, path: Path, limits: Limits | None = None, **opts: object
) -> objstore.Store:
    if kind == "lmdb":
        return objstore.open(path / "store", limits=limits or Limits(), **opts)  # type: ignore[arg-type]
    return objstore.open_memory(limits or Limits())


@pytest.fixture(params=BACKENDS)
def backend_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def store(backend_kind: str, tmp_path: Path) -> Iterator[objstore.Store]:
    s = make_store(backend_kind, tmp_path)
    yield s
    s.close()
