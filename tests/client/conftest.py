"""A real objstore server for the client tests, and an httpx transport that injects faults."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import httpx
import pytest

from objstore import graphgen

from ..server.conftest import Running, setup_auth, start_server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    gen = start_server(tmp_path_factory.mktemp("client-server"))
    run = next(gen)
    setup_auth(run)
    yield run
    gen.close()


@pytest.fixture(scope="module")
def model() -> graphgen.Graph:
    return graphgen.generate(50_000, seed=11)


class Faults(httpx.HTTPTransport):
    """Real HTTP, except where ``rule(request, n)`` returns a response or raises."""

    def __init__(self, rule: Callable[[httpx.Request, int], httpx.Response | None]) -> None:
        super().__init__()
        self.rule = rule
        self.calls = 0
        self.paths: list[str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        self.paths.append(request.url.path)
        injected = self.rule(request, self.calls)
        if injected is not None:
            return injected
        return super().handle_request(request)
