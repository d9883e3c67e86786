"""A real uvicorn server on 127.0.0.1 (random port) over a temporary store, per test module."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import uvicorn

import objstore
from objstore.auth import AuthStore
from objstore.limits import MB, Limits
from objstore.server import Settings, create_app


@dataclass
class Running:
    url: str
    store: objstore.Store
    auth: AuthStore
    app: object
    tokens: dict[str, str] = field(default_factory=dict)

    def headers(self, who: str | None = None, **extra: str) -> dict[str, str]:
        h = dict(extra)
        if who is not None:
            h["Authorization"] = f"Bearer {self.tokens.get(who, who)}"
        return h


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(
    path: Path, limits: Limits | None = None, **settings_kw: object
) -> Generator[Running]:
    """Run uvicorn in a thread on 127.0.0.1 until the generator is closed; bounded waits."""
    store = objstore.open(path / "objects", limits=limits or Limits())
    auth = AuthStore(path / "auth")
    settings = Settings(data=path, limits=store.limits, **settings_kw)  # type: ignore[arg-type]
    app = create_app(store, settings, auth)
    port = _free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield Running(f"http://127.0.0.1:{port}", store, auth, app)
    finally:
        server.should_exit = True
        thread.join(timeout=20)
        store.close()
        auth.close()


def setup_auth(run: Running) -> None:
    """Projects and tokens for the auth matrix."""
    auth = run.auth
    auth.create_project("priv", owner="alice", members={"bob": "contributor", "carol": "reviewer"})
    auth.create_project("pub", owner="alice", public=True)
    auth.create_project("other", owner="alice")
    run.tokens["alice"] = auth.create_token("alice")[1]
    run.tokens["bob"] = auth.create_token("bob")[1]
    run.tokens["carol"] = auth.create_token("carol")[1]
    run.tokens["dave"] = auth.create_token("dave")[1]  # no role anywhere
    run.tokens["alice_ro"] = auth.create_token("alice", scopes=["streams:read"])[1]
    run.tokens["alice_other"] = auth.create_token("alice", projects=["other"])[1]
    run.tokens["expired"] = auth.create_token("alice", expires_in=-1)[1]
    revoked, secret = auth.create_token("alice")
    auth.revoke_token(revoked.id)
    run.tokens["revoked"] = secret


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    gen = start_server(
        tmp_path_factory.mktemp("server"),
        Limits(max_object_bytes=2 * MB, max_batch_bytes=20 * MB),
        max_request_bytes=8 * MB,
        block_bytes=64 * 1024,
    )
    run = next(gen)
    setup_auth(run)
    yield run
    gen.close()
