"""Clients the harness drives: the in-process engine, objstore's HTTP client, specklepy's.

Each driver does the same operations its own way; an operation a client cannot do raises
NotImplementedError and the harness reports it as not applicable.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import objstore
from objstore.graphgen import batches

if TYPE_CHECKING:
    from objstore.client.remote import Compression

Objects = Sequence[tuple[str, bytes]]


class Driver:
    client = "?"
    compression: str | None = None  # objstore's client: whether its bodies were compressed

    def cold_send(self, objects: Objects) -> int:
        raise NotImplementedError

    def resend(self, objects: Objects) -> int:
        raise NotImplementedError

    def download(self, root_id: str) -> Iterator[tuple[str, bytes]]:
        raise NotImplementedError

    def getobjects(self, ids: list[str]) -> Iterator[tuple[str, bytes]]:
        raise NotImplementedError

    def single(self, object_id: str) -> bytes | None:
        raise NotImplementedError

    def diff(self, ids: list[str]) -> dict[str, bool]:
        raise NotImplementedError

    def writer(self) -> Driver:
        """A driver safe to use from another thread at the same time (mixed workload)."""
        return self

    def close(self) -> None:
        pass


class EngineDriver(Driver):
    """objstore's engine in this process: the ceiling for every HTTP target."""

    client = "engine"

    def __init__(self, store: objstore.Store, project: str) -> None:
        self.store = store
        self.project = project

    def cold_send(self, objects: Objects) -> int:
        return self.store.put_many(self.project, batches(objects)).received

    def resend(self, objects: Objects) -> int:
        return len(self.store.has(self.project, [i for i, _ in objects]))

    def download(self, root_id: str) -> Iterator[tuple[str, bytes]]:
        return self.store.iter_with_children(self.project, root_id)

    def getobjects(self, ids: list[str]) -> Iterator[tuple[str, bytes]]:
        for start in range(0, len(ids), 10_000):
            yield from self.store.get_many(self.project, ids[start : start + 10_000])

    def single(self, object_id: str) -> bytes | None:
        return self.store.get(self.project, object_id)

    def diff(self, ids: list[str]) -> dict[str, bool]:
        return self.store.has(self.project, ids)


class ObjstoreClientDriver(Driver):
    """objstore.client.Remote against any server speaking the routes."""

    client = "objstore"

    def __init__(
        self,
        url: str,
        token: str | None,
        project: str,
        concurrency: int,
        compression: Compression = "auto",
    ) -> None:
        from objstore.client import Remote

        self.args = (url, token, project, concurrency, compression)
        self.remote = Remote(url, token, project, concurrency=concurrency, compression=compression)
        self.compression = "on" if self.remote.compress else "off"

    def cold_send(self, objects: Objects) -> int:
        from objstore.client import send

        return send(objects, self.remote).uploaded

    def resend(self, objects: Objects) -> int:
        from objstore.client import send

        result = send(objects, self.remote)
        if result.uploaded:
            raise objstore.errors.TargetMisbehaved(
                f"uploaded {result.uploaded:,} of the {len(objects):,} objects it had taken "
                "before (a re-send uploads none)"
            )
        return result.skipped

    def download(self, root_id: str) -> Iterator[tuple[str, bytes]]:
        return self.remote.download(root_id)

    def getobjects(self, ids: list[str]) -> Iterator[tuple[str, bytes]]:
        return self.remote.get_many(ids)

    def single(self, object_id: str) -> bytes | None:
        return self.remote.get(object_id)

    def diff(self, ids: list[str]) -> dict[str, bool]:
        return self.remote.diff(ids)

    def writer(self) -> Driver:
        return ObjstoreClientDriver(*self.args)

    def close(self) -> None:
        self.remote.close()


USERDATA_ENV = "SPECKLE_USERDATA_PATH"


class SpecklepyDriver(Driver):
    """specklepy's ServerTransport: what Speckle's Python users run today."""

    client = "specklepy"

    def __init__(self, url: str, token: str | None, project: str) -> None:
        # specklepy keeps an accounts database in its user data folder: a temporary one for
        # this driver's life, unless the caller chose one. (Left set, it named a deleted
        # folder that specklepy made again, in /tmp and in the caller's own later use.)
        self._userdata: tempfile.TemporaryDirectory[str] | None = None
        if USERDATA_ENV not in os.environ:
            self._userdata = tempfile.TemporaryDirectory(prefix="bench-speckle-")
            os.environ[USERDATA_ENV] = self._userdata.name
        warnings.simplefilter("ignore", DeprecationWarning)
        quiet_specklepy()
        from specklepy.transports.server import ServerTransport

        self.url, self.token, self.project = url, token, project
        self._transport_cls: Any = ServerTransport

    def _transport(self) -> Any:
        return self._transport_cls(self.project, url=self.url, token=self.token)

    def _save_all(self, objects: Objects) -> int:
        transport = self._transport()
        transport.begin_write()
        for object_id, data in objects:
            transport.save_object(object_id, data.decode())
        transport.end_write()
        return len(objects)

    def cold_send(self, objects: Objects) -> int:
        return self._save_all(objects)

    def resend(self, objects: Objects) -> int:
        return self._save_all(objects)  # specklepy diffs every batch before uploading

    def download(self, root_id: str) -> Iterator[tuple[str, bytes]]:
        from specklepy.transports.memory import MemoryTransport

        target = MemoryTransport()
        root = self._transport().copy_object_and_children(root_id, target)
        yield root_id, root.encode()
        for object_id, text in target.objects.items():
            if object_id != root_id:
                yield object_id, text.encode()

    def close(self) -> None:
        if self._userdata is not None:
            if os.environ.get(USERDATA_ENV) == self._userdata.name:
                del os.environ[USERDATA_ENV]
            self._userdata.cleanup()
            self._userdata = None


def quiet_specklepy() -> None:
    """Turn specklepy's usage telemetry off in this process. specklepy 2.x's ``operations``
    post an event to Speckle's analytics from a thread on every send and receive, whatever
    server they talk to (its transports, which the driver calls, do not): a benchmark of
    servers on this machine sends nothing beyond it, and no thread of specklepy's own
    competes with the run it measures."""
    from specklepy.logging import metrics

    metrics.disable()


def specklepy_available() -> bool:
    try:
        import specklepy.transports.server  # noqa: F401
    except ImportError:
        return False
    return True
