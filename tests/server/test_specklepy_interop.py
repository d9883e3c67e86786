"""Real specklepy (ServerTransport) sending to and receiving from objstore's server."""

from __future__ import annotations

import pytest

from .conftest import Running

specklepy = pytest.importorskip("specklepy")


def build_model(n_elements: int):
    """A specklepy graph with detached children and chunked lists (> 10k objects)."""
    from specklepy.objects.base import Base

    root = Base()
    root.name = "interop model"
    elements = []
    for i in range(n_elements):
        element = Base()
        element.name = f"element {i}"
        element["@(40)values"] = [i + k / 7 for k in range(100)]  # 3 DataChunks each
        detail = Base()
        detail.index = i
        element["@detail"] = detail
        elements.append(element)
    root["@elements"] = elements
    return root


def test_send_then_receive_into_fresh_cache(server: Running, speckle_env):
    from specklepy.api import operations
    from specklepy.transports.server import ServerTransport
    from specklepy.transports.sqlite import SQLiteTransport

    model = build_model(2000)  # 1 root + 2000 x (element + detail + 3 chunks) = 10,001 objects
    send_transport = ServerTransport("priv", url=server.url, token=server.tokens["alice"])
    before = server.store.count("priv")
    root_id = operations.send(model, [send_transport], use_default_cache=False)
    assert server.store.count("priv") - before == 10_001
    assert server.store.get("priv", root_id) is not None

    receive_transport = ServerTransport("priv", url=server.url, token=server.tokens["alice"])
    cache = SQLiteTransport(base_path=str(speckle_env / "fresh-cache"), scope="received")
    received = operations.receive(root_id, receive_transport, local_transport=cache)
    assert received.id == root_id
    got = received["@elements"]
    assert len(got) == 2000
    assert got[1234]["@(40)values"] == model["@elements"][1234]["@(40)values"]
    assert got[77]["@detail"].index == 77
    # re-serialising what came back gives the same root id and bytes as what was sent
    assert operations.serialize(received) == operations.serialize(model)

    # sending again: everything is already there, diff says so, nothing new stored
    again = operations.send(
        model,
        [ServerTransport("priv", url=server.url, token=server.tokens["alice"])],
        use_default_cache=False,
    )
    assert again == root_id
    assert server.store.count("priv") - before == 10_001


def test_specklepy_send_with_bad_token_fails(server: Running, speckle_env):
    from specklepy.api import operations
    from specklepy.logging.exceptions import SpeckleException
    from specklepy.transports.server import ServerTransport

    transport = ServerTransport("priv", url=server.url, token="x" * 42)
    with pytest.raises(SpeckleException):
        operations.send(build_model(3), [transport], use_default_cache=False)


@pytest.mark.parametrize("kind", ["projects", "streams"])
def test_a_stream_wrapper_on_a_project_url_sends_and_receives(server: Running, speckle_env, kind):
    """StreamWrapper takes a project's URL as Speckle's web app shows it (``/projects/ID``,
    or v2's ``/streams/ID``) and makes the transport from it."""
    from specklepy.api import operations
    from specklepy.api.wrapper import StreamWrapper

    wrapper = StreamWrapper(f"{server.url}/{kind}/priv")
    model = build_model(5)
    token = server.tokens["bob"]
    root_id = operations.send(model, [wrapper.get_transport(token)], use_default_cache=False)
    assert server.store.get("priv", root_id) is not None
    received = operations.receive(root_id, wrapper.get_transport(token))
    assert operations.serialize(received) == operations.serialize(model)
