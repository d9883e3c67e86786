"""An httpx client for Speckle's object routes, on objstore's server or Speckle's own.

Requests are batched under the limits the server states (``/api/server-info``; Speckle's
10 MB / 50 MB when it has no such route), id lists go in chunks of at most 25k ids (Speckle's
own loader cap), uploads go as multipart parts with several requests in flight, and
failures that may pass (connection errors, 429, 5xx) are retried with backoff, honouring
``Retry-After``. A 4xx that says the input is wrong is raised at once, never retried.

Bodies are compressed both ways (zstd or gzip down, gzip up) unless the server is on this
machine's loopback: there compression only spends both ends' CPU on bytes that never cross
a network (a 100k-object download here: 77k objects/s with zstd, 108k without).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import email.utils
import functools
import ipaddress
import queue
import random
import re
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, cast, get_args

import httpx
import msgspec
import zstandard
from isal import igzip, isal_zlib

from objstore import codec, errors, graphgen
from objstore.limits import Limits

ID_CHUNK = 25_000
# Upload batches of up to 32 MB (under the server's batch limit): each batch is one write
# transaction on an objstore server, and one commit rewrites every B-tree page its randomly
# keyed rows land on. On a store filling up from 0 to 500k objects, 10 MB batches fell from
# 20.7k to 9.8k objects/s over five 100k sends; 32 MB ones held 18-22k.
UPLOAD_BATCH_BYTES = 32 * 1024 * 1024
UPLOAD_BATCH_OBJECTS = 50_000
# An upload's bytes beside its objects' and their commas: the multipart part's boundaries and
# headers (about 200) and the array's brackets.
MULTIPART_ROOM = 1024
RETRY_STATUSES = {429, 500, 502, 503, 504}
USER_AGENT = "objstore-client"


@dataclass
class RemoteStats:
    """What this client has done so far (tests count requests with it)."""

    requests: dict[str, int] = field(default_factory=dict)
    retries: int = 0
    objects_uploaded: int = 0
    bytes_uploaded: int = 0
    objects_downloaded: int = 0

    def __post_init__(self) -> None:
        self._lock = threading.Lock()

    def count(self, kind: str, n: int = 1) -> None:
        with self._lock:
            self.requests[kind] = self.requests.get(kind, 0) + n

    def add(self, **counts: int) -> None:
        with self._lock:
            for key, value in counts.items():
                setattr(self, key, getattr(self, key) + value)


def _named(request: httpx.Request) -> str:
    """A request as errors name it: method and URL, without the query."""
    return f"{request.method} {request.url.copy_with(query=None)}"


def _failed(url: str, exc: httpx.TransportError, tries: int) -> errors.ConnectionFailed:
    """ConnectionFailed for the last of ``tries`` that failed with ``exc``: a server out of
    reach is said so; one that answered and broke off (a dropped connection, or a server that
    met an object it cannot read after its answer had begun) is named by the request."""
    said = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
        return errors.ConnectionFailed(f"cannot reach {url} ({said})")
    return errors.ConnectionFailed(
        f"{_named(exc.request)}: no whole answer in {tries} tries ({said})"
    )


def _retry_after(response: httpx.Response) -> float | None:
    """Seconds the answer's Retry-After asks to wait (a number or an HTTP date); None when it
    has none, or one neither (the retry then backs off as without one)."""
    value = response.headers.get("retry-after", "").strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (ValueError, TypeError, IndexError, OverflowError):
        return None
    return max(0.0, parsed.timestamp() - time.time())


_TITLE = re.compile(r"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)
_TAG = re.compile(r"<[^>]*>")


def _said(response: httpx.Response) -> str:
    """What an error body that is not the server's JSON error says, on one line: an HTML
    page (a proxy's, say) by its title, else its text without tags; at most 300 characters."""
    text = response.text
    if "html" in response.headers.get("content-type", "") or text.lstrip().startswith("<"):
        title = _TITLE.search(text)
        text = title.group(1) if title else _TAG.sub(" ", text)
    return " ".join(text.split())[:300] or response.reason_phrase


def _error_from(response: httpx.Response) -> errors.RemoteError:
    """The error a refused request raises, naming the request (method and URL) it answers."""
    try:
        body = response.json()
        message = body["error"]["message"]
        code = body["error"].get("code")
    except (ValueError, KeyError, TypeError):
        message = _said(response)
        code = None
    status = response.status_code
    if status == 401 and "authorization" not in response.request.headers:
        message += " (the request carried no token)"
    if status == 413 and code is None:  # not the server's own refusal, which names its limit
        message += (
            " (a proxy in front of the server may cap request bodies, as nginx's "
            f"client_max_body_size does; objstore's client sends up to "
            f"{UPLOAD_BATCH_BYTES >> 20} MB in one upload)"
        )
    cls: type[errors.RemoteError] = {
        401: errors.PermissionDenied,
        403: errors.AuthenticationFailed,
        404: errors.RemoteNotFound,
        400: errors.RemoteRejected,
        413: errors.RemoteRejected,
    }.get(status, errors.RemoteError)
    return cls(f"{_named(response.request)}: HTTP {status}: {message}", status=status, code=code)


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """The TLS context (httpx's default) that every Remote shares: making one loads the CA
    bundle, 35 ms here, which each Remote paid before."""
    return httpx.create_ssl_context()


def _gzip_inflater() -> Any:
    return isal_zlib.decompressobj(wbits=isal_zlib.MAX_WBITS | 16)


def _zstd_inflater() -> Any:
    return zstandard.ZstdDecompressor().decompressobj()


_INFLATERS: dict[str, Callable[[], Any]] = {"zstd": _zstd_inflater, "gzip": _gzip_inflater}
ACCEPT_ENCODING = ", ".join(_INFLATERS)  # what the streamed reads below can decode


_PROBE = {"zstd": zstandard.compress(b"{}"), "gzip": igzip.compress(b"{}")}


def _httpx_decodes(coding: str, encoded: bytes) -> bool:
    """Whether httpx itself decodes ``coding`` (``encoded``: ``{}`` so coded). httpx reads
    whole (not streamed) bodies, decodes zstd only from 0.27 on (specklepy 2.x holds it below
    0.26), and hands on a coding it does not know undecoded."""
    response = httpx.Response(200, headers={"Content-Encoding": coding}, content=encoded)
    try:
        return response.content == b"{}"
    except httpx.DecodingError:
        return False


# what whole-body requests ask for: the codings this httpx decodes
WHOLE_ACCEPT_ENCODING = ", ".join(c for c, body in _PROBE.items() if _httpx_decodes(c, body))


def _undecodable(request: httpx.Request, coding: str, exc: Exception) -> errors.UnreadableResponse:
    """The error for a body that is not in the coding its response names."""
    said = f"the {coding} its Content-Encoding names" if coding else "its Content-Encoding"
    return errors.UnreadableResponse(
        f"{_named(request)}: the answer's body does not decode as {said} "
        f"({type(exc).__name__}: {exc})"
    )


# (isal's stub types its error class as an instance)
_INFLATE_ERRORS = (zstandard.ZstdError, cast(type[Exception], isal_zlib.error))


def iter_decoded(response: httpx.Response) -> Iterator[bytes]:
    """The body of a streamed response, decoded when it is zstd or gzip (ISA-L, ~3x zlib).

    Pieces come as the connection reads them (64 KB): gathering them into bigger chunks
    copied every byte once more for nothing, since lines are cut from pieces as well.
    A body that is not in the coding it claims raises UnreadableResponse."""
    coding = response.headers.get("content-encoding", "").strip().lower()
    make = _INFLATERS.get(coding)
    if make is None:
        if coding not in ("", "identity"):
            raise errors.UnreadableResponse(
                f"the server answered in a coding we did not ask for: {coding!r}"
            )
        yield from response.iter_raw()
        return
    try:
        inflater = make()
        for chunk in response.iter_raw():
            yield inflater.decompress(chunk)
            while inflater.eof and inflater.unused_data:  # concatenated gzip members / frames
                rest = inflater.unused_data
                inflater = make()
                yield inflater.decompress(rest)
        yield inflater.flush()
    except _INFLATE_ERRORS as exc:
        raise _undecodable(response.request, coding, exc) from None


def _whole_lines(chunks: Iterable[bytes]) -> Iterator[list[bytes]]:
    """The lines of a byte stream cut anywhere, a list per chunk that ends one, only whole
    ones: a stream broken off never yields half a line (the last line may lack its newline).

    A line's pieces from earlier chunks wait in a list, joined once its end arrives: a
    10 MB object over 64 KB pieces is then copied once, not once per piece."""
    pending: list[bytes] = []
    for chunk in chunks:
        lines = chunk.split(b"\n")
        if len(lines) == 1:  # no line ends here (or an empty chunk)
            if chunk:
                pending.append(chunk)
            continue
        if pending:
            pending.append(lines[0])
            lines[0] = b"".join(pending)
            pending = []
        last = lines.pop()
        if last:
            pending.append(last)
        yield lines
    rest = b"".join(pending)
    if rest.strip():
        yield [rest]


def _pairs_of(lines: list[bytes]) -> Iterator[tuple[str, bytes]]:
    """(id, json) of each ``id\\tjson`` line, one at a time: streamed like this a pair cost
    1.5 us here, gathered into a list of the chunk's pairs 1.7 us."""
    for line in lines:
        if line:
            object_id, _, data = line.partition(b"\t")
            yield object_id.decode(), data.rstrip(b"\r")


class _Stopped(Exception):
    """The consumer of a :meth:`Remote.get_many` went away: its fetches stop."""


class _Handoff:
    """Blocks of pairs from fetching threads to one consumer, a few at a time, so memory holds
    a few decoded blocks per request whatever the objects weigh. Each fetch ends with ``None``
    or its exception; :meth:`stop` makes every waiting and later ``put`` raise _Stopped."""

    def __init__(self, blocks: int) -> None:
        self._queue: queue.Queue[list[tuple[str, bytes]] | BaseException | None] = queue.Queue(
            blocks
        )
        self._stop = threading.Event()

    def put(self, item: list[tuple[str, bytes]] | BaseException | None) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue
        raise _Stopped

    def get(self) -> list[tuple[str, bytes]] | BaseException | None:
        return self._queue.get()

    def stop(self) -> None:
        self._stop.set()


_JSON_BODY = {"Content-Type": "application/json"}
# request codings for id lists, preferred first, each with its compressor (level 1: an id
# list is a few MB at most, and hex ids compress to about half whatever the level)
_ID_CODINGS: dict[str, Callable[[bytes], bytes]] = {
    "zstd": lambda body: zstandard.compress(body, 1),
    "gzip": lambda body: igzip.compress(body, 1),
}
_diff_answer = msgspec.json.Decoder(dict[str, bool])


def _ids_body(ids: list[str]) -> bytes:
    """A diff/getobjects body, ``{"objects": "<JSON list of ids>"}``, the reference's JSON
    schema (specklepy's form encoding cost this client about 4 us an id to quote)."""
    return msgspec.json.encode({"objects": msgspec.json.encode(ids).decode()})


Compression = Literal["auto", "on", "off"]
COMPRESSIONS: tuple[Compression, ...] = get_args(Compression)


def _path_segment(name: str) -> str:
    """``name`` (an object id or project) as one URL path segment: every reserved character
    escaped (an id may hold ``/``, ``?``, ``#`` or ``%``), and ``.``/``..``, which URL
    normalisation would drop, spelt ``%2E``."""
    quoted = urllib.parse.quote(name, safe="")
    return quoted.replace(".", "%2E") if quoted in (".", "..") else quoted


def _id_segment(object_id: str) -> str:
    """``object_id`` as a path segment; an empty one refused (ValueError), as no URL names it:
    the route would be another's, and its 404 would say the object is missing."""
    if not codec.one_id(object_id):
        raise ValueError("an object id is needed, got an empty one")
    return _path_segment(object_id)


def _is_http_url(url: str) -> bool:
    """Whether ``url`` is one httpx can send to: http(s), with a host (as it is given, a
    mistake like ``localhost:8000`` would fail each request as an unreachable server)."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError):
        return False
    return parsed.scheme in ("http", "https") and bool(parsed.host)


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address, without resolving it) is this machine's
    loopback: ``localhost``, 127.0.0.0/8 or ::1."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class Remote:
    """One project on one server.

    ``compression`` "auto" compresses unless the URL's host is loopback; "on" and "off"
    force it either way ("on" for a tunnel, such as ``ssh -L``, to another machine).
    """

    def __init__(
        self,
        url: str,
        token: str | None = None,
        project: str = "",
        *,
        concurrency: int = 4,
        retries: int = 5,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        timeout: float = 120.0,
        batch_bytes: int = UPLOAD_BATCH_BYTES,
        batch_objects: int = UPLOAD_BATCH_OBJECTS,
        transport: httpx.BaseTransport | None = None,
        compression: Compression = "auto",
    ) -> None:
        if not project:
            raise ValueError("a project is needed")
        if compression not in COMPRESSIONS:
            raise ValueError(f"compression must be auto, on or off, not {compression!r}")
        if not _is_http_url(url):
            raise ValueError(f"server URL {url!r} is not an http:// or https:// URL with a host")
        self.url = url.rstrip("/")
        self.project = project
        self._project_path = _path_segment(project)
        self.concurrency = max(1, concurrency)
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.batch_bytes = batch_bytes
        self.batch_objects = batch_objects
        host = urllib.parse.urlsplit(self.url).hostname or ""
        self.compress = compression == "on" or (compression == "auto" and not is_loopback(host))
        accept = WHOLE_ACCEPT_ENCODING if self.compress else "identity"
        headers = {"User-Agent": USER_AGENT, "Accept-Encoding": accept}
        # streamed bodies are decoded by iter_decoded, which knows more codings than httpx may
        self._stream_accept = ACCEPT_ENCODING if self.compress else "identity"
        if token:
            headers["Authorization"] = f"Bearer {token}"
        limits = httpx.Limits(max_connections=self.concurrency + 2)
        self._http = httpx.Client(
            headers=headers,
            timeout=timeout,
            limits=limits,
            transport=transport,
            verify=_tls_context(),
        )
        self._limits: Limits | None = None
        self._max_request: int | None = None  # a request body's limit, when the server says
        self._ids_coding: str | None = None  # how id lists go, once the server says it takes it
        self._max_ids: int | None = None  # ids one diff or getobjects may ask for, likewise
        self.stats = RemoteStats()

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Remote:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plumbing ------------------------------------------------------------------------------

    def _request(self, kind: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One request with retries; the response is read fully."""
        return self._with_retries(
            kind, lambda: self._http.request(method, self.url + path, **kwargs)
        )

    def _with_retries(self, kind: str, send: Callable[[], httpx.Response]) -> httpx.Response:
        attempt = 0
        while True:
            self.stats.count(kind)
            try:
                response = send()
            except httpx.DecodingError as exc:  # a corrupt body would come the same again
                raise _undecodable(exc.request, "", exc) from None
            except httpx.TransportError as exc:
                if attempt >= self.retries:
                    raise _failed(self.url, exc, attempt + 1) from None
                delay = None
            else:
                if response.status_code < 400:
                    return response
                if response.status_code not in RETRY_STATUSES or attempt >= self.retries:
                    raise _error_from(response)
                delay = _retry_after(response)
                response.close()
            attempt += 1
            self._pause(attempt, delay)

    def _pause(self, attempt: int, retry_after: float | None) -> None:
        """Wait before retry number ``attempt``: Retry-After when the server gave one,
        otherwise jittered exponential backoff; never longer than ``max_backoff``."""
        self.stats.add(retries=1)
        delay = retry_after
        if delay is None:
            delay = min(self.max_backoff, self.backoff * 2 ** (attempt - 1))
            delay *= 0.5 + random.random() / 2
        time.sleep(min(delay, self.max_backoff))

    @property
    def limits(self) -> Limits:
        """The server's limits (objstore states them; otherwise Speckle's defaults)."""
        if self._limits is None:
            self._learn_limits()
        assert self._limits is not None
        return self._limits

    def _learn_limits(self) -> None:
        """Ask the server once for what it states: object and batch limits, and objstore's
        request body and ids-per-request limits (None where it states none)."""
        try:
            info = self._request("server-info", "GET", "/api/server-info").json()
            stated = info["limits"]
            limits = Limits(stated["max_object_bytes"], stated["max_batch_bytes"])
        except errors.ConnectionFailed:
            raise
        except (errors.RemoteError, KeyError, TypeError, ValueError):  # not objstore's route
            self._limits = Limits()
            return
        request, ids = stated.get("max_request_bytes"), stated.get("max_ids_per_request")
        self._max_request = request if type(request) is int and request > MULTIPART_ROOM else None
        self._max_ids = ids if type(ids) is int and ids > 0 else None
        codings = info.get("request_encodings")
        if self.compress and isinstance(codings, list):  # Speckle's server states none
            self._ids_coding = next((c for c in _ID_CODINGS if c in codings), None)
        self._limits = limits

    def _ids_request(self, ids: list[str]) -> tuple[bytes, dict[str, str]]:
        """A diff/getobjects body and its headers: compressed when compression is on and the
        server states it takes the coding (a resend over a network is nothing but its id
        lists up and its diff answers down; 100k ids are 3.7 MB of JSON, 1.7 MB in zstd)."""
        body = _ids_body(ids)
        if self._ids_coding is None:
            return body, _JSON_BODY
        encoded = _ID_CODINGS[self._ids_coding](body)
        return encoded, {**_JSON_BODY, "Content-Encoding": self._ids_coding}

    def _id_chunk(self, size: int) -> int:
        """Ids per diff or getobjects request: ``size``, or fewer if the server takes fewer."""
        if self._limits is None:
            self._learn_limits()
        return size if self._max_ids is None else min(size, self._max_ids)

    # -- routes --------------------------------------------------------------------------------

    def diff(self, ids: Iterable[str]) -> dict[str, bool]:
        """{id: whether the server has it} for every id (chunked, chunks in parallel)."""
        id_list = codec.id_list(ids)
        size = self._id_chunk(ID_CHUNK) if id_list else ID_CHUNK
        chunks = [id_list[i : i + size] for i in range(0, len(id_list), size)]

        def one(chunk: list[str]) -> dict[str, bool]:
            body, headers = self._ids_request(chunk)
            r = self._request(
                "diff", "POST", f"/api/diff/{self._project_path}", content=body, headers=headers
            )
            try:
                return _diff_answer.decode(r.content)
            except msgspec.DecodeError as exc:
                raise errors.UnreadableResponse(
                    f"diff {self.project}: the answer is not a JSON object of id to bool ({exc})"
                ) from None

        found: dict[str, bool] = {}
        if len(chunks) <= 1:
            for chunk in chunks:
                found.update(one(chunk))
        else:
            with concurrent.futures.ThreadPoolExecutor(self.concurrency) as pool:
                for answer in pool.map(one, chunks):
                    found.update(answer)
        return {i: found.get(i, False) for i in id_list}

    def upload(
        self,
        objects: Iterable[tuple[str, bytes]],
        on_sent: Callable[[int], object] | None = None,
    ) -> int:
        """Upload objects in batches under the server's limits (gzip'd unless compression is
        off); returns objects sent.

        Order is kept per batch and batches are started in order, so children sent before
        their parents land first within this call's concurrency window. ``objects`` is read
        while earlier batches are in flight; ``on_sent`` is told each batch's count as it lands.
        """
        limits = self.limits
        sent = 0
        with concurrent.futures.ThreadPoolExecutor(self.concurrency) as pool:
            pending: set[concurrent.futures.Future[int]] = set()
            for batch in self._batches(objects, self._upload_room(), limits.max_object_bytes):
                if len(pending) >= self.concurrency * 2:  # bounded memory: wait for one
                    done, pending = concurrent.futures.wait(
                        pending, return_when=concurrent.futures.FIRST_COMPLETED
                    )
                    for future in done:
                        sent += self._landed(future, on_sent)
                pending.add(pool.submit(self._upload_batch, batch))
            for future in concurrent.futures.as_completed(pending):
                sent += self._landed(future, on_sent)
        return sent

    @staticmethod
    def _landed(
        future: concurrent.futures.Future[int], on_sent: Callable[[int], object] | None
    ) -> int:
        count = future.result()
        if on_sent is not None:
            on_sent(count)
        return count

    def _upload_room(self) -> int:
        """Bytes of objects, each counted with its comma, that one upload may carry: the
        server's batch limit counts the JSON array as inflated, its request limit (objstore
        states one; it may be the smaller) the body as sent, framing included. Compressed
        bodies are sent smaller, but not by a ratio known beforehand."""
        cap = self.limits.max_batch_bytes
        if self._max_request is not None:
            cap = min(cap, self._max_request)
        return max(1, min(self.batch_bytes, cap - MULTIPART_ROOM))

    def _batches(
        self, objects: Iterable[tuple[str, bytes]], max_bytes: int, max_object: int
    ) -> Iterator[list[bytes]]:
        def checked() -> Iterator[tuple[str, bytes]]:
            for index, pair in enumerate(objects):
                if type(pair) is not tuple or len(pair) != 2 or type(pair[1]) is not bytes:
                    graphgen.check_pair(pair, index)  # raises, unless its bytes are a view
                object_id, data = pair
                size = len(data)
                if size > max_object:
                    raise errors.ObjectTooLarge(
                        f"object is {size} bytes, over the server's {max_object} byte limit",
                        limit=max_object,
                        size=size,
                        object_id=object_id,
                    )
                yield object_id, data

        for group in graphgen.groups(checked(), self.batch_objects, max_bytes, each=1):
            yield [data for _, data in group]

    def _upload_batch(self, batch: list[bytes]) -> int:
        body = codec.json_array(batch)
        media = "application/json"
        if self.compress:
            body, media = igzip.compress(body, 1), "application/gzip"
        part = {"batch-1": ("batch-1", body, media)}
        self._request("upload", "POST", f"/objects/{self._project_path}", files=part)
        self.stats.add(objects_uploaded=len(batch), bytes_uploaded=len(body))
        return len(batch)

    def get(self, object_id: str) -> bytes | None:
        """One object's bytes, or None if the server does not have it."""
        try:
            where = f"/objects/{self._project_path}/{_id_segment(object_id)}"
            r = self._request("single", "GET", where + "/single")
        except errors.RemoteNotFound as exc:
            if exc.code == "PROJECT_NOT_FOUND":
                raise
            return None
        return r.content

    def get_many(self, ids: Iterable[str]) -> Iterator[tuple[str, bytes]]:
        """(id, bytes) for each id the server has, in the order they arrive: chunks of ids
        fetched a few at a time, each streamed as it comes.

        A body lost midway is asked again for the ids it had not delivered yet, so nothing
        comes twice. Memory holds a few decoded blocks (about a MB each) per request in
        flight, not whole answers: objects of megabytes each cost no more than small ones.
        """
        id_list = codec.id_list(ids)
        chunk = self._id_chunk(min(ID_CHUNK, 10_000)) if id_list else 1
        chunks = [id_list[i : i + chunk] for i in range(0, len(id_list), chunk)]
        if not chunks:
            return
        handoff = _Handoff(2 * self.concurrency)

        def fetch(part: list[str]) -> None:
            ending: BaseException | None = None
            try:
                self._fetch_streamed(part, handoff)
            except _Stopped:
                return
            except BaseException as exc:
                ending = exc
            with contextlib.suppress(_Stopped):
                handoff.put(ending)

        pool = concurrent.futures.ThreadPoolExecutor(self.concurrency)
        try:
            for part in chunks:
                pool.submit(fetch, part)
            ended = 0
            while ended < len(chunks):
                item = handoff.get()
                if item is None:
                    ended += 1
                elif isinstance(item, BaseException):
                    raise item
                else:
                    yield from item
        finally:
            handoff.stop()
            pool.shutdown(wait=True, cancel_futures=True)

    def _fetch_streamed(self, part: list[str], handoff: _Handoff) -> None:
        """getobjects of ``part``, each block of pairs handed off as it is decoded; a retry
        asks only for the ids not delivered yet."""
        remaining = part

        def send() -> httpx.Response:
            nonlocal remaining
            body, headers = self._ids_request(remaining)
            with self._http.stream(
                "POST",
                f"{self.url}/api/getobjects/{self._project_path}",
                content=body,
                headers={**headers, "Accept": "text/plain", "Accept-Encoding": self._stream_accept},
            ) as response:
                if response.status_code >= 400:
                    response.read()
                    return response
                delivered: set[str] = set()
                try:
                    for lines in _whole_lines(iter_decoded(response)):
                        pairs = list(_pairs_of(lines))
                        handoff.put(pairs)
                        delivered.update(object_id for object_id, _ in pairs)
                        self.stats.add(objects_downloaded=len(pairs))
                finally:
                    if delivered:
                        remaining = [i for i in remaining if i not in delivered]
                return response

        self._with_retries("getobjects", send)

    def download(self, root_id: str) -> Iterator[tuple[str, bytes]]:
        """The object and all its children (root first), streamed in one request.

        Retried only until the first object arrives; after that a failure is raised.
        """
        for lines in self.download_lines(root_id):
            yield from _pairs_of(lines)

    def download_lines(self, root_id: str) -> Iterator[list[bytes]]:
        """:meth:`download` as its ``id\tjson`` lines, a list per piece read: whole lines,
        none empty, a carriage return before a newline kept. For consumers that take objects
        a block at a time, with no Python step per object."""
        root_segment = _id_segment(root_id)
        attempt = 0
        while True:
            started = False
            count = 0
            try:
                self.stats.count("download")
                with self._http.stream(
                    "GET",
                    f"{self.url}/objects/{self._project_path}/{root_segment}",
                    headers={"Accept": "text/plain", "Accept-Encoding": self._stream_accept},
                ) as r:
                    if r.status_code >= 400:
                        r.read()
                        if r.status_code in RETRY_STATUSES and attempt < self.retries:
                            attempt += 1
                            self._pause(attempt, _retry_after(r))
                            continue
                        raise _error_from(r)
                    try:
                        for lines in _whole_lines(iter_decoded(r)):
                            if not all(lines):
                                lines = list(filter(None, lines))
                            if lines:
                                started = True
                                count += len(lines)
                                yield lines
                    finally:
                        self.stats.add(objects_downloaded=count)
                return
            except httpx.DecodingError as exc:  # an error answer's body, read whole
                raise _undecodable(exc.request, "", exc) from None
            except httpx.TransportError as exc:
                if started:  # not asked again: a caller resumes by id (receive does)
                    raise errors.ConnectionFailed(
                        f"{_named(exc.request)}: the answer broke off after {count:,} objects "
                        f"({type(exc).__name__}: {exc})"
                    ) from None
                if attempt >= self.retries:
                    raise _failed(self.url, exc, attempt + 1) from None
                attempt += 1
                self._pause(attempt, None)
