"""objstore: a content-addressed object store for design/BIM object graphs.

>>> import objstore
>>> with objstore.open("data") as store:                       # doctest: +SKIP
...     store.put("proj1", b'[{"id": "a", "speckle_type": "Base"}]')
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from objstore import errors
from objstore.engine.base import CompactReport, PutResult, Stats, VerifyReport
from objstore.errors import (
    BatchTooLarge,
    CorruptObject,
    IdMismatch,
    InvalidBatch,
    InvalidClosure,
    InvalidId,
    InvalidJSON,
    InvalidObject,
    InvalidProject,
    InvalidUTF8,
    NestingTooDeep,
    NotAnObject,
    ObjectNotFound,
    ObjectTooLarge,
    ObjstoreError,
    ReservedKey,
    StoreClosed,
    StoreCorrupt,
    StoreFull,
    StoreInUse,
    UnsupportedFormat,
)
from objstore.limits import Limits
from objstore.store import ChildrenStream, Store, open, open_memory

__version__ = "0.1.0"


if TYPE_CHECKING:
    from objstore.client.transfer import ReceiveResult, SendResult


def send(*args: Any, **kwargs: Any) -> SendResult:
    """:func:`objstore.client.send`, imported on use: the client needs the ``client`` extra."""
    from objstore.client.transfer import send as _send

    return _send(*args, **kwargs)


def receive(*args: Any, **kwargs: Any) -> ReceiveResult:
    """:func:`objstore.client.receive`, imported on use: the client needs the ``client`` extra."""
    from objstore.client.transfer import receive as _receive

    return _receive(*args, **kwargs)


__all__ = [
    "BatchTooLarge",
    "ChildrenStream",
    "CompactReport",
    "CorruptObject",
    "IdMismatch",
    "InvalidBatch",
    "InvalidClosure",
    "InvalidId",
    "InvalidJSON",
    "InvalidObject",
    "InvalidProject",
    "InvalidUTF8",
    "Limits",
    "NestingTooDeep",
    "NotAnObject",
    "ObjectNotFound",
    "ObjectTooLarge",
    "ObjstoreError",
    "PutResult",
    "ReservedKey",
    "Stats",
    "Store",
    "StoreClosed",
    "StoreCorrupt",
    "StoreFull",
    "StoreInUse",
    "UnsupportedFormat",
    "VerifyReport",
    "__version__",
    "errors",
    "open",
    "open_memory",
    "receive",
    "send",
]
