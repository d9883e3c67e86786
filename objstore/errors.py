"""Every failure objstore reports, one class each.

Batch rejections carry the offending object's position (``index``) and ``object_id`` when known,
so a caller (or the HTTP layer) can say exactly what was wrong. A rejected batch stores nothing.
"""

from __future__ import annotations


class ObjstoreError(Exception):
    """Base class of every objstore error."""


class InvalidBatch(ObjstoreError):
    """The batch as a whole is unusable (not a JSON array, not bytes, ...)."""


class InvalidObject(ObjstoreError):
    """One object of a batch breaks a rule; the whole batch is rejected."""

    def __init__(self, message: str, *, index: int | None = None, object_id: str | None = None):
        self.index = index
        self.object_id = object_id
        where = []
        if index is not None:
            where.append(f"object {index}")
        if object_id is not None:
            where.append(f"id {object_id!r}")
        prefix = f"{' '.join(where)}: " if where else ""
        super().__init__(prefix + message)
        self.reason = message

    def located(
        self, where: str, *, index: int | None = None, object_id: str | None = None
    ) -> InvalidObject:
        """A copy whose message places the object by ``where`` (e.g. "part 1 object 4"), with
        ``index`` and ``object_id`` replaced when given (its place and id in the caller's input)."""
        clone = type(self).__new__(type(self))
        clone.__dict__.update(self.__dict__)
        if index is not None:
            clone.index = index
        if object_id is not None:
            clone.object_id = object_id
        named = f" id {clone.object_id!r}" if clone.object_id is not None else ""
        clone.args = (f"{where}{named}: {self.reason}",)
        return clone


class InvalidJSON(InvalidObject):
    """An object is not well-formed JSON."""


class InvalidUTF8(InvalidObject):
    """An object's bytes are not valid UTF-8."""


class NotAnObject(InvalidObject):
    """A batch element is valid JSON but not a JSON object."""


class InvalidId(InvalidObject):
    """An ``id`` is not a 1-255 character string free of whitespace and control characters."""


class IdMismatch(InvalidObject):
    """An object handed over with an id (a dump line, an (id, bytes) pair) says another id in
    its JSON, or has none there and hashes to another: stored, it would sit under its own."""


class ReservedKey(InvalidObject):
    """A document given to ``graph.decompose`` holds a key the decomposer writes itself
    (``id``, ``totalChildrenCount``, ``__closure``) in an object it would detach."""


class InvalidClosure(InvalidObject):
    """``__closure`` is not an object mapping valid ids to positive integer depths."""


class NestingTooDeep(InvalidObject):
    """An object nests arrays/objects deeper than the decoder allows."""


class LimitExceeded(InvalidObject):
    """A size limit was exceeded; ``limit`` and ``size`` are in bytes."""

    def __init__(
        self,
        message: str,
        *,
        limit: int,
        size: int,
        index: int | None = None,
        object_id: str | None = None,
    ):
        self.limit = limit
        self.size = size
        super().__init__(message, index=index, object_id=object_id)


class ObjectTooLarge(LimitExceeded):
    """One object's JSON is larger than the per-object limit."""


class BatchTooLarge(LimitExceeded):
    """A batch's objects add up to more than the per-batch limit."""


class InvalidProject(ObjstoreError):
    """A project name is empty, too long, or contains control characters."""


class ObjectNotFound(ObjstoreError, KeyError):
    """The object is not in the project."""

    def __init__(self, project: str, object_id: str, where: str = ""):
        self.project = project
        self.object_id = object_id
        place = f" of {where}" if where else ""
        super().__init__(f"object {object_id!r} not found in project {project!r}{place}")

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class CorruptObject(ObjstoreError):
    """Stored bytes fail their checksum or cannot be decompressed; never returned as data."""

    def __init__(self, digest: str, detail: str, object_id: str | None = None):
        self.digest = digest
        self.object_id = object_id
        self.detail = detail
        name = f"object {object_id!r} (blob {digest})" if object_id else f"blob {digest}"
        super().__init__(f"{name} is corrupt: {detail}")


class StoreClosed(ObjstoreError):
    """The store was closed, or is used from a process it was not opened in."""


class StoreFull(ObjstoreError):
    """The disk has no room for a write; nothing of it was stored and the store is intact."""


class StoreCorrupt(ObjstoreError):
    """A store's files are damaged or are not an objstore store at all (opening it failed)."""


class StoreInUse(ObjstoreError):
    """The store is open in this process already, in a way this open cannot share."""


class StoreNotFound(ObjstoreError):
    """No store is where one was expected (a command that inspects or repairs one)."""


class StoreReadOnly(ObjstoreError):
    """A write was attempted on a store opened with ``readonly=True``, or a store whose
    files cannot be written (a read-only disk, no permission) was opened for writing."""


class UnsupportedFormat(ObjstoreError):
    """The store was written in a format this version of objstore does not read."""


class TargetMisbehaved(ObjstoreError):
    """A benchmark target answered a workload wrongly (objects lost from a download, a
    re-send that uploaded, a diff that missed what was sent): its figures would mean nothing,
    so ``objstore bench`` stops and names the target, client and workload."""


class InvalidResults(ObjstoreError):
    """A file given to ``objstore bench compare`` is not a bench result (``--out``), or two
    results have nothing in common to compare."""


class RemoteError(ObjstoreError):
    """A server answered with an error (``status``, ``code``) or could not be reached."""

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None):
        self.status = status
        self.code = code
        super().__init__(message)


class ConnectionFailed(RemoteError):
    """The server could not be reached (refused, DNS, timeout) even after retries."""


class AuthenticationFailed(RemoteError):
    """The token was refused (HTTP 403: invalid, revoked or expired)."""


class PermissionDenied(RemoteError):
    """The token lacks the scope or role for this project (HTTP 401)."""


class RemoteNotFound(RemoteError):
    """The project or object does not exist on the server (HTTP 404)."""


class RemoteRejected(RemoteError):
    """The server refused the input (HTTP 400 or 413); retrying would not help."""


class UnreadableResponse(RemoteError):
    """The server's response body cannot be decoded (a content coding we did not ask for)."""


class InvalidRemoteObject(RemoteError):
    """The server sent an object the cache refuses (not JSON, a bad id or ``__closure``, over
    a limit); ``cause`` is the cache's :class:`InvalidObject`. What came before it is kept."""

    def __init__(self, message: str, cause: InvalidObject) -> None:
        self.cause = cause
        super().__init__(message)
