"""Speckle's object REST routes on Starlette: HTTP only, storage stays in the engine."""

from __future__ import annotations

import contextlib
import gc
import logging
import urllib.parse
from collections.abc import AsyncIterator
from typing import Any

import msgspec
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

import objstore
from objstore import errors
from objstore.auth import ROLES, SCOPES, Access, AuthStore, Token
from objstore.server import encoding, graphql_api
from objstore.server.bodies import (
    REQUEST_ENCODINGS,
    BadRequest,
    TooLarge,
    UploadParser,
    decode_body,
    parse_ids,
    read_capped,
    request_codings,
)
from objstore.server.settings import Settings
from objstore.server.streaming import ObjectStreamResponse, StreamStats, stream_objects

log = logging.getLogger(__name__)


def error_response(status: int, message: str, code: str) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "code": code}}, status_code=status)


class Denied(Exception):
    def __init__(self, status: int, message: str, code: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


_ERROR_STATUS: list[tuple[type[Exception], int, str]] = [
    (errors.ObjectTooLarge, 413, "OBJECT_TOO_LARGE"),
    (errors.BatchTooLarge, 413, "BATCH_TOO_LARGE"),
    (errors.InvalidObject, 400, "INVALID_OBJECT"),
    (errors.InvalidBatch, 400, "INVALID_BATCH"),
    (errors.InvalidProject, 400, "INVALID_PROJECT"),
    (errors.ObjectNotFound, 404, "OBJECT_NOT_FOUND"),
    (errors.CorruptObject, 500, "CORRUPT_OBJECT"),
    (errors.StoreCorrupt, 500, "STORE_CORRUPT"),
    (errors.StoreFull, 507, "STORE_FULL"),
]


_GRAPHQL_BODY_BYTES = 64 * 1024  # sign-in queries are a few hundred bytes
_INLINE_COMPRESS_BYTES = 64 * 1024  # ~0.1 ms of zstd or gzip here; bigger bodies go to a thread


def _coding(request: Request) -> encoding.Coding | None:
    return encoding.pick(request.headers.get("accept-encoding", ""))


class RoutedAsSent:
    """Match routes against the path as sent, escapes kept, so an id or project holding
    ``/`` (sent as ``%2F``) stays one segment; :func:`_param` unescapes each parameter.
    Starlette routes the decoded path, where ``a%2Fb`` is two segments."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            raw = scope.get("raw_path")
            path = raw.decode("latin-1") if raw else urllib.parse.quote(scope["path"])
            scope = {**scope, "path": path}
        await self.app(scope, receive, send)


def _param(request: Request, name: str) -> str:
    return urllib.parse.unquote(request.path_params[name])


def _wants_text(request: Request) -> bool:
    return "text/plain" in request.headers.get("accept", "").lower()


class ObjectRoutes:
    """The route handlers, bound to one store, one auth registry and settings."""

    def __init__(self, store: objstore.Store, auth: AuthStore, settings: Settings) -> None:
        self.store = store
        self.auth = auth
        self.settings = settings
        self.streams = StreamStats()

    # -- auth ----------------------------------------------------------------------------------

    def _token(self, request: Request) -> Token | None:
        """The request's token; None without one. A token given but not valid is a 403, on
        every route, as on Speckle's server, which also takes the token bare, with no
        ``Bearer`` before it (and an empty header as none)."""
        words = request.headers.get("authorization", "").split()
        if not words:
            return None
        if len(words) == 2 and words[0].lower() == "bearer":
            secret = words[1]
        elif len(words) == 1 and words[0].lower() != "bearer":
            secret = words[0]  # bare; another scheme (Basic ...) is not ours
        else:
            raise Denied(
                403, "malformed Authorization header: use 'Bearer <token>'", "INVALID_TOKEN"
            )
        token = self.auth.authenticate(secret)
        if token is None:
            raise Denied(403, "token is invalid, revoked or expired", "INVALID_TOKEN")
        return token

    def _authorize(self, request: Request, project: str, write: bool) -> Token | None:
        token = self._token(request)
        access = self.auth.check(token, project, write)
        if access is Access.NO_PROJECT:
            raise Denied(404, f"project {project!r} not found", "PROJECT_NOT_FOUND")
        if access is Access.NOT_PERMITTED:
            need = "streams:write and contributor" if write else "streams:read and reviewer"
            raise Denied(
                401, f"not permitted: {need} access to project {project!r} needed", "UNAUTHORIZED"
            )
        return token

    # -- routes --------------------------------------------------------------------------------

    async def diff(self, request: Request) -> Response:
        project = _param(request, "project")
        self._authorize(request, project, write=True)
        ids = await self._ids(request)
        # compressed when the client accepts it, as Speckle's server does: a resend moves
        # nothing else (its ids up, this answer down; a million ids answer in ~44 MB)
        answer = await run_in_threadpool(lambda: msgspec.json.encode(self.store.has(project, ids)))
        return await self._json(request, answer)

    async def upload(self, request: Request) -> Response:
        project = _param(request, "project")
        self._authorize(request, project, write=True)
        limit = self.settings.max_request_bytes
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > limit:
            raise TooLarge(f"request body of {length} bytes is over the {limit} byte limit")
        # a body encoded as a whole decodes to at most a full batch and its multipart framing
        decoded = limit + self.store.limits.max_batch_bytes
        encoded = bool(request_codings(request.headers.get("content-encoding", "")))
        parser = UploadParser(
            request.headers.get("content-type", ""),
            decoded if encoded else limit,
            self.store.limits.max_batch_bytes,
        )
        # the event loop only collects the (capped) body; parsing and inflating run off-loop
        body = await self._body(request, limit, "request body", decoded_cap=decoded)
        arrays = await run_in_threadpool(parser.parse, [body])
        del body  # the compressed copy is no longer needed while the batch is stored
        await run_in_threadpool(self.store.put_arrays, project, arrays)
        return Response(status_code=201)

    async def single(self, request: Request) -> Response:
        project = _param(request, "project")
        object_id = _param(request, "object_id")
        self._authorize(request, project, write=False)
        data = await run_in_threadpool(self.store.get, project, object_id)
        if data is None:
            raise errors.ObjectNotFound(project, object_id)
        return await self._json(request, data)

    async def getobjects(self, request: Request) -> Response:
        project = _param(request, "project")
        self._authorize(request, project, write=False)
        ids = await self._ids(request)
        return self._stream(request, lambda: self.store.get_many(project, ids))

    async def with_children(self, request: Request) -> Response:
        project = _param(request, "project")
        object_id = _param(request, "object_id")
        self._authorize(request, project, write=False)
        children = await run_in_threadpool(self.store.iter_with_children, project, object_id)
        return self._stream(request, lambda: children)

    async def health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def server_info(self, request: Request) -> Response:
        limits = self.store.limits
        return JSONResponse(
            {
                "name": "objstore",
                "version": objstore.__version__,
                "limits": {
                    "max_object_bytes": limits.max_object_bytes,
                    "max_batch_bytes": limits.max_batch_bytes,
                    "max_request_bytes": self.settings.max_request_bytes,
                    "max_ids_per_request": self.settings.max_ids,
                },
                # codings a request body may come in (objstore's client compresses id lists
                # in one of these only when it is listed: a server that does not list any
                # may not undo them)
                "request_encodings": list(REQUEST_ENCODINGS),
                "streams": {
                    "started": self.streams.started,
                    "finished": self.streams.finished,
                    "aborted": self.streams.aborted,
                    "objects": self.streams.objects,
                },
            }
        )

    async def graphql(self, request: Request) -> Response:
        """Speckle's sign-in queries (see :mod:`objstore.server.graphql_api`)."""
        token = self._token(request)
        body = await self._body(request, _GRAPHQL_BODY_BYTES, "GraphQL request")
        limits = self.store.limits
        facts = graphql_api.ServerFacts(
            name="objstore",
            version=objstore.__version__,
            canonical_url=str(request.base_url).rstrip("/"),
            max_object_bytes=limits.max_object_bytes,
            max_request_bytes=self.settings.max_request_bytes,
            roles=tuple(ROLES),
            scopes=SCOPES,
        )
        try:
            user = token.user if token else None  # off the loop: a long query takes a while
            answer = await run_in_threadpool(graphql_api.answer, body, user, facts)
        except graphql_api.QueryRefused as exc:
            return JSONResponse({"errors": exc.errors}, status_code=400)
        return JSONResponse(answer)

    # -- helpers -------------------------------------------------------------------------------

    async def _json(self, request: Request, data: bytes) -> Response:
        """A whole JSON answer, compressed in the coding the request accepts (bodies over a
        KB: below that the coding's framing outweighs what it saves)."""
        coding = _coding(request)
        if coding is None or len(data) <= 1024:
            return Response(data, media_type="application/json")
        levels = self._levels()
        if len(data) > _INLINE_COMPRESS_BYTES:  # a big body would stall the event loop
            body = await run_in_threadpool(encoding.compress, data, coding, **levels)
        else:
            body = encoding.compress(data, coding, **levels)
        return Response(
            body,
            media_type="application/json",
            headers={"content-encoding": coding, "vary": "accept-encoding"},
        )

    def _levels(self) -> dict[str, int]:
        return {"gzip_level": self.settings.gzip_level, "zstd_level": self.settings.zstd_level}

    async def _body(
        self, request: Request, cap: int, what: str, decoded_cap: int | None = None
    ) -> bytes:
        """The request's body, capped at ``cap`` bytes as sent and ``decoded_cap`` (else
        ``cap``) once its ``Content-Encoding`` is undone (in a thread: it may be megabytes)."""
        # an unknown coding is refused before the body is read
        codings = request_codings(request.headers.get("content-encoding", ""))
        body = await read_capped(request.stream(), cap, what)
        if not codings:
            return body
        return await run_in_threadpool(decode_body, body, codings, decoded_cap or cap, what)

    async def _ids(self, request: Request) -> list[str]:
        body = await self._body(request, self.settings.max_ids_body_bytes, "id list")
        return parse_ids(body, request.headers.get("content-type", ""), self.settings.max_ids)

    def _stream(self, request: Request, make: Any) -> Response:
        text = _wants_text(request)
        coding = _coding(request)
        headers = {"vary": "accept-encoding"}
        if coding is not None:
            headers["content-encoding"] = coding
        return ObjectStreamResponse(
            stream_objects(
                make,
                text=text,
                encoder=encoding.encoder(coding, **self._levels()) if coding else None,
                block_bytes=self.settings.block_bytes,
                stats=self.streams,
                label=f"{request.method} {request.url.path}",
            ),
            media_type="text/plain; charset=utf-8" if text else "application/json",
            headers=headers,
        )


async def _handle_error(request: Request, exc: Exception) -> Response:
    if isinstance(exc, Denied):
        return error_response(exc.status, str(exc), exc.code)
    if isinstance(exc, BadRequest):
        return error_response(exc.status, str(exc), exc.code)
    if isinstance(exc, HTTPException):
        return error_response(exc.status_code, str(exc.detail), "HTTP_ERROR")
    for cls, status, code in _ERROR_STATUS:
        if isinstance(exc, cls):
            if status >= 500:  # the server's fault, not the request's: its operator must know
                log.error("%s %s: %d %s: %s", request.method, request.url.path, status, code, exc)
            return error_response(status, str(exc), code)
    raise exc


def _cors(settings: Settings) -> list[Middleware]:
    """Cross-origin access for browser apps on ``settings.cors_origins`` (none: no middleware).
    Preflights allow every header a request asks for (Authorization among them)."""
    if not settings.cors_origins:
        return []
    return [
        Middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "HEAD", "POST"],
            allow_headers=["*"],
            max_age=86400,
        )
    ]


def create_app(
    store: objstore.Store, settings: Settings | None = None, auth: AuthStore | None = None
) -> Starlette:
    """The ASGI app serving ``store``; auth state defaults to ``<settings.data>/auth``."""
    settings = settings or Settings()
    auth = auth or AuthStore(settings.data / "auth")
    routes = ObjectRoutes(store, auth, settings)
    app = Starlette(
        routes=[
            Route("/api/diff/{project}", routes.diff, methods=["POST"]),
            Route("/objects/{project}", routes.upload, methods=["POST"]),
            Route("/objects/{project}/{object_id}/single", routes.single, methods=["GET"]),
            Route("/objects/{project}/{object_id}", routes.with_children, methods=["GET"]),
            Route("/api/getobjects/{project}", routes.getobjects, methods=["POST"]),
            Route("/api/health", routes.health, methods=["GET"]),
            Route("/api/server-info", routes.server_info, methods=["GET"]),
            Route("/graphql", routes.graphql, methods=["POST"]),
        ],
        middleware=[*_cors(settings), Middleware(RoutedAsSent)],
        exception_handlers={
            Exception: _handle_error,
            HTTPException: _handle_error,
            Denied: _handle_error,
            BadRequest: _handle_error,
            errors.ObjstoreError: _handle_error,
        },
    )
    app.state.routes = routes
    app.state.auth = auth
    return app


# A young collection every 50k new containers instead of CPython's 700: an upload of 10 MB
# makes a few containers per object (records, tuples, closure dicts), all short-lived, and
# with the default a 1-worker server spent 5-7% of a cold send collecting them.
SERVING_GC_THRESHOLD = (50_000, 10, 10)


def tune_gc_for_serving() -> None:
    """Set this process's collector for serving: objects alive at startup (modules, the
    app) are frozen out of every later collection, young ones are collected less often.
    Only for a process that does nothing but serve: the engine, embedded, leaves it alone."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*SERVING_GC_THRESHOLD)


def create_app_from_env() -> Starlette:
    """Factory for uvicorn (each worker process opens the store itself, after it starts)."""
    settings = Settings.from_env()
    store = objstore.open(
        settings.data / "objects", limits=settings.limits, readahead=settings.readahead
    )
    auth = AuthStore(settings.data / "auth")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        tune_gc_for_serving()
        yield
        store.close()
        auth.close()

    app = create_app(store, settings, auth)
    app.router.lifespan_context = lifespan
    return app
