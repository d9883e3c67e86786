"""The two queries of Speckle's GraphQL API that its SDKs ask before any object moves:
``serverInfo`` and ``activeUser``.

specklepy's ``SpeckleClient.authenticate_with_token`` asks them as it signs in (3.x and on;
2.x when its ``server.get()`` and ``active_user.get()`` are called), and
``ServerTransport(project, client=client)`` needs a client so signed in: without them a script
written against Speckle's server fails on objstore's before it sends a byte. The rest of
Speckle's GraphQL API (projects, models, versions, comments) is an application on top of
an object store, not one: a query for it is refused with a message naming what is served.
Fields and types follow Speckle's schema, so the queries its SDKs send validate here as there.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import msgspec
from graphql import (
    GraphQLError,
    GraphQLSchema,
    OperationType,
    build_schema,
    execute_sync,
    get_operation_ast,
    parse,
    validate,
)

SCHEMA = """
scalar JSONObject

type Query {
  serverInfo: ServerInfo!
  activeUser: User
}

type ServerInfo {
  name: String!
  company: String
  description: String
  adminContact: String
  canonicalUrl: String
  termsOfService: String
  inviteOnly: Boolean
  guestModeEnabled: Boolean!
  version: String
  roles: [Role!]!
  serverRoles: [ServerRoleItem!]!
  scopes: [Scope!]!
  authStrategies: [AuthStrategy!]!
  automateUrl: String
  migration: ServerMigration
  configuration: ServerConfiguration!
  workspaces: ServerWorkspacesInfo!
}

type Role {
  name: String!
  description: String!
  resourceTarget: String!
}

type ServerRoleItem {
  id: String!
  title: String!
}

type Scope {
  name: String!
  description: String!
}

type AuthStrategy {
  id: String!
  name: String!
  icon: String!
  url: String!
  color: String
}

type ServerMigration {
  movedFrom: String
  movedTo: String
}

type ServerConfiguration {
  objectSizeLimitBytes: Int!
  objectMultipartUploadSizeLimitBytes: Int!
  blobSizeLimitBytes: Int!
}

type ServerWorkspacesInfo {
  workspacesEnabled: Boolean!
}

type User {
  id: ID!
  email: String
  name: String!
  bio: String
  company: String
  avatar: String
  verified: Boolean
  profiles: JSONObject
  role: String
}
"""

SERVED = (
    "objstore serves Speckle's object routes and, of its GraphQL API, the serverInfo and "
    "activeUser queries only"
)

# Speckle's project roles, as its SDKs name them, and what each may do here
ROLE_DESCRIPTIONS = {
    "reviewer": "Can read the project's objects.",
    "contributor": "Can read and write the project's objects.",
    "owner": "Can read and write the project's objects, and owns the project.",
}
SCOPE_DESCRIPTIONS = {
    "streams:read": "Read the objects of projects the token's user has a role on, and public ones.",
    "streams:write": "Write objects to projects the token's user contributes to or owns.",
}
_INT_MAX = 2**31 - 1  # GraphQL's Int is 32-bit


@dataclass(frozen=True)
class ServerFacts:
    """What serverInfo says of this server."""

    name: str
    version: str
    canonical_url: str
    max_object_bytes: int
    max_request_bytes: int
    roles: tuple[str, ...]
    scopes: tuple[str, ...]


class QueryRefused(Exception):
    """A request that is not one GraphQL operation this server can run: a 400, with the
    GraphQL errors that say why."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__(errors[0]["message"])
        self.errors = errors


@functools.cache
def schema() -> GraphQLSchema:
    return build_schema(SCHEMA)


def _server_info(facts: ServerFacts) -> dict[str, Any]:
    return {
        "name": facts.name,
        "company": None,
        "description": "An objstore server: Speckle's object routes on an objstore engine.",
        "adminContact": None,
        "canonicalUrl": facts.canonical_url,
        "termsOfService": None,
        "inviteOnly": True,  # members are added by its operator, never by invitation
        "guestModeEnabled": False,
        "version": facts.version,
        "roles": [
            {
                "name": f"stream:{role}",
                "description": ROLE_DESCRIPTIONS.get(role, ""),
                "resourceTarget": "streams",
            }
            for role in facts.roles
        ],
        "serverRoles": [],
        "scopes": [
            {"name": scope, "description": SCOPE_DESCRIPTIONS.get(scope, "")}
            for scope in facts.scopes
        ],
        "authStrategies": [],  # tokens only: `objstore token create`
        "automateUrl": None,
        "migration": None,
        "configuration": {
            "objectSizeLimitBytes": min(facts.max_object_bytes, _INT_MAX),
            "objectMultipartUploadSizeLimitBytes": min(facts.max_request_bytes, _INT_MAX),
            "blobSizeLimitBytes": 0,  # no file blobs here
        },
        "workspaces": {"workspacesEnabled": False},
    }


def _user(name: str) -> dict[str, Any]:
    """A token's user: objstore knows users by name only."""
    return {
        "id": name,
        "email": None,
        "name": name,
        "bio": None,
        "company": None,
        "avatar": None,
        "verified": None,
        "profiles": None,
        "role": None,
    }


def _refused(message: str) -> QueryRefused:
    return QueryRefused([{"message": message}])


def _request(body: bytes) -> tuple[str, dict[str, Any] | None, str | None]:
    """The query, variables and operation name of a GraphQL-over-HTTP POST body."""
    try:
        request = msgspec.json.decode(body)
    except msgspec.DecodeError as exc:
        raise _refused(f"the body is not JSON: {exc}") from None
    if isinstance(request, list):
        raise _refused("batched operations are not served: send one operation per request")
    if not isinstance(request, dict) or not isinstance(request.get("query"), str):
        raise _refused('the body must be a JSON object with the operation text in "query"')
    variables = request.get("variables")
    if variables is not None and not isinstance(variables, dict):
        raise _refused('"variables" must be a JSON object')
    operation = request.get("operationName")
    if operation is not None and not isinstance(operation, str):
        raise _refused('"operationName" must be a string')
    return request["query"], variables, operation


def _errors(found: list[GraphQLError], hint: bool) -> list[dict[str, Any]]:
    formatted = [dict(error.formatted) for error in found]
    if hint:
        for error in formatted:
            error["message"] = f"{error['message']} ({SERVED})"
    return formatted


def answer(body: bytes, user: str | None, facts: ServerFacts) -> dict[str, Any]:
    """The GraphQL answer (``data`` and any ``errors``) to a POST body; ``user``: the
    authenticated token's, None without a token (activeUser is then null, as on Speckle's).
    QueryRefused when the body is not one operation this schema validates."""
    query, variables, operation = _request(body)
    try:
        document = parse(query)
    except GraphQLError as exc:
        raise QueryRefused(_errors([exc], hint=False)) from None
    invalid = validate(schema(), document)
    if invalid:
        raise QueryRefused(_errors(invalid, hint=True))
    chosen = get_operation_ast(document, operation)
    if chosen is not None and chosen.operation is not OperationType.QUERY:
        raise _refused(f"{chosen.operation.value} operations are not served ({SERVED})")
    root: Mapping[str, Any] = {
        "serverInfo": _server_info(facts),
        "activeUser": _user(user) if user is not None else None,
    }
    result = execute_sync(
        schema(), document, root, variable_values=variables, operation_name=operation
    )
    if result.data is None and result.errors:  # no operation to run: the request's fault
        raise QueryRefused(_errors(result.errors, hint=False))
    return dict(result.formatted)
