"""Speckle's sign-in queries: serverInfo and activeUser, alone and through the served route,
and specklepy's SpeckleClient signing in with them before its transports send and receive."""

from __future__ import annotations

import json

import httpx
import pytest

from objstore.server import graphql_api
from objstore.server.graphql_api import QueryRefused, ServerFacts, answer

from .conftest import Running

FACTS = ServerFacts(
    name="objstore",
    version="0.1.0",
    canonical_url="http://127.0.0.1:8000",
    max_object_bytes=10 << 20,
    max_request_bytes=50 << 20,
    roles=("reviewer", "contributor", "owner"),
    scopes=("streams:read", "streams:write"),
)

# the queries specklepy 2026.9 sends as SpeckleClient.authenticate_with_token (its text)
SERVER_QUERY = """
query Server {
    data:serverInfo {
        name company description adminContact canonicalUrl version
        scopes { name description }
        authStrategies { id name icon }
        workspaces { workspacesEnabled }
    }
}"""
USER_QUERY = """
query User {
    data:activeUser { id email name bio company avatar verified role }
}"""


def asked(query: str, user: str | None = "alice", **extra: object) -> dict[str, object]:
    return answer(json.dumps({"query": query, **extra}).encode(), user, FACTS)


def test_server_info_answers_what_sdks_ask_with_this_servers_facts():
    info = asked(SERVER_QUERY)["data"]["data"]  # type: ignore[index]
    assert info["name"] == "objstore" and info["version"] == "0.1.0"
    assert info["canonicalUrl"] == "http://127.0.0.1:8000"
    assert [s["name"] for s in info["scopes"]] == ["streams:read", "streams:write"]
    assert info["authStrategies"] == [] and info["workspaces"] == {"workspacesEnabled": False}
    # specklepy 2.19 asks roles too; Speckle names project roles stream:*
    roles = asked("{ serverInfo { roles { name resourceTarget } } }")["data"]["serverInfo"]  # type: ignore[index]
    assert roles["roles"] == [
        {"name": f"stream:{r}", "resourceTarget": "streams"}
        for r in ("reviewer", "contributor", "owner")
    ]
    limits = asked(
        "{ serverInfo { configuration { objectSizeLimitBytes objectMultipartUploadSizeLimitBytes"
        " blobSizeLimitBytes } } }"
    )["data"]["serverInfo"]["configuration"]  # type: ignore[index]
    assert limits == {
        "objectSizeLimitBytes": 10 << 20,
        "objectMultipartUploadSizeLimitBytes": 50 << 20,
        "blobSizeLimitBytes": 0,
    }


def test_active_user_is_the_tokens_user_and_null_without_a_token():
    user = asked(USER_QUERY)["data"]["data"]  # type: ignore[index]
    assert user["id"] == "alice" and user["name"] == "alice" and user["email"] is None
    assert asked(USER_QUERY, user=None) == {"data": {"data": None}}


def test_variables_and_operation_names_are_honoured():
    two = "query A { serverInfo { name } } query B { activeUser { name } }"
    assert asked(two, operationName="B") == {"data": {"activeUser": {"name": "alice"}}}
    with_var = "query Q($on: Boolean!) { serverInfo { name @include(if: $on) version } }"
    got = asked(with_var, variables={"on": False})["data"]["serverInfo"]  # type: ignore[index]
    assert got == {"version": "0.1.0"}


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b"{not json", "the body is not JSON"),
        (b'[{"query": "{ serverInfo { name } }"}]', "batched operations are not served"),
        (b'{"variables": {}}', 'operation text in "query"'),
        (b'{"query": "{ serverInfo { name } }", "variables": [1]}', '"variables" must be'),
        (b'{"query": "{ serverInfo { name }"}', "Syntax Error"),
        (
            b'{"query": "query A { serverInfo { name } } query B { activeUser { id } }"}',
            "Must provide operation name",
        ),
    ],
)
def test_a_request_that_is_not_one_operation_is_refused_naming_why(body, says):
    with pytest.raises(QueryRefused) as refused:
        answer(body, "alice", FACTS)
    assert says in refused.value.errors[0]["message"]


@pytest.mark.parametrize(
    "query",
    [
        '{ project(id: "p") { name } }',  # projects, models, versions: not an object store's
        "mutation { versionMutations { create { id } } }",
        "{ serverInfo { name notAField } }",
    ],
)
def test_what_objstore_does_not_serve_is_refused_saying_what_it_serves(query):
    with pytest.raises(QueryRefused) as refused:
        asked(query)
    assert refused.value.errors[0]["message"].endswith(f"({graphql_api.SERVED})")


# -- through the server ---------------------------------------------------------------------


def post(server: Running, query: str, who: str | None = None) -> httpx.Response:
    return httpx.post(f"{server.url}/graphql", json={"query": query}, headers=server.headers(who))


def test_the_route_answers_with_the_tokens_user_and_the_servers_limits(server: Running):
    got = post(
        server,
        "{ activeUser { name } serverInfo { canonicalUrl configuration "
        "{ objectSizeLimitBytes objectMultipartUploadSizeLimitBytes } } }",
        "bob",
    )
    assert got.status_code == 200
    data = got.json()["data"]
    assert data["activeUser"] == {"name": "bob"}
    assert data["serverInfo"]["canonicalUrl"] == server.url
    assert data["serverInfo"]["configuration"] == {
        "objectSizeLimitBytes": 2 << 20,  # the test server's limits (conftest)
        "objectMultipartUploadSizeLimitBytes": 8 << 20,
    }
    assert post(server, "{ activeUser { name } }").json() == {"data": {"activeUser": None}}


def test_the_route_refuses_a_bad_token_and_what_it_does_not_serve(server: Running):
    for bad in ("revoked", "expired", "not-a-token"):
        refused = post(server, "{ activeUser { name } }", bad)
        assert refused.status_code == 403
        assert refused.json()["error"]["code"] == "INVALID_TOKEN"
    unserved = post(server, '{ project(id: "priv") { name } }', "alice")
    assert unserved.status_code == 400
    assert "serverInfo and activeUser queries only" in unserved.json()["errors"][0]["message"]
    too_big = httpx.post(f"{server.url}/graphql", content=b" " * (65 << 10))
    assert too_big.status_code == 413


def test_specklepy_signs_in_then_sends_and_receives_through_its_client(
    server: Running, speckle_env
):
    """SpeckleClient.authenticate_with_token asks activeUser and serverInfo (specklepy 3.x
    and on; 2.x asks them in server.get() and active_user.get()); ServerTransport takes the
    signed-in client, as Speckle's own docs write it."""
    from specklepy.api import operations
    from specklepy.api.client import SpeckleClient
    from specklepy.objects.base import Base
    from specklepy.transports.server import ServerTransport

    client = SpeckleClient(host=server.url.removeprefix("http://"), use_ssl=False)
    client.authenticate_with_token(server.tokens["bob"])
    assert client.server.get().name == "objstore"
    assert client.active_user.get().name == "bob"
    assert client.server.version() == (0, 1, 0)

    model = Base()
    model.name = "signed in"
    children = []
    for i in range(3):
        child = Base()
        child.index = i
        children.append(child)
    model["@children"] = children
    root_id = operations.send(model, [ServerTransport("priv", client=client)], False)
    assert server.store.get("priv", root_id) is not None
    back = operations.receive(root_id, ServerTransport("priv", client=client))
    assert back.name == "signed in" and [c.index for c in back["@children"]] == [0, 1, 2]
