"""Tests reach this machine's loopback only: name lookups and connections to any other
address are refused before anything leaves the machine, and remembered, so that the test
during which one was tried fails (see conftest) even when the code that tried swallowed the
error, as a library's background telemetry thread does."""

from __future__ import annotations

import socket
from typing import Any

from objstore.client.remote import is_loopback

attempts: list[str] = []  # what was refused, in order

_getaddrinfo = socket.getaddrinfo
_connect = socket.socket.connect
_connect_ex = socket.socket.connect_ex


def _refused(what: str) -> OSError:
    attempts.append(what)
    return OSError(f"tests reach 127.0.0.1 only: refused {what}")


def _lookup(host: Any, *args: Any, **kwargs: Any) -> Any:
    name = host.decode() if isinstance(host, bytes) else host
    if name and not is_loopback(name):  # None or "": a listening socket's wildcard
        raise _refused(f"a lookup of {name!r}")
    return _getaddrinfo(host, *args, **kwargs)


def _check(sock: socket.socket, address: Any) -> None:
    if sock.family in (socket.AF_INET, socket.AF_INET6) and not is_loopback(str(address[0])):
        raise _refused(f"a connection to {address[0]!r}")


def _guarded_connect(self: socket.socket, address: Any) -> None:
    _check(self, address)
    _connect(self, address)


def _guarded_connect_ex(self: socket.socket, address: Any) -> int:
    _check(self, address)
    return _connect_ex(self, address)


def install() -> None:
    """Guard this process's sockets (once; a second call changes nothing)."""
    socket.getaddrinfo = _lookup
    socket.socket.connect = _guarded_connect  # type: ignore[method-assign, assignment]
    socket.socket.connect_ex = _guarded_connect_ex  # type: ignore[method-assign, assignment]
