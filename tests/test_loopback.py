"""The guard conftest puts on every test's sockets refuses other addresses before any
packet leaves, and remembers each try so that the test fails."""

from __future__ import annotations

import socket

import pytest

from . import loopback


def test_lookups_and_connections_off_the_machine_are_refused_and_remembered():
    before = len(loopback.attempts)
    with pytest.raises(OSError, match=r"refused a lookup of 'example\.com'"):
        socket.getaddrinfo("example.com", 80)
    for connect in ("connect", "connect_ex"):
        with socket.socket() as sock, pytest.raises(OSError, match=r"connection to '10\.1\.2\.3'"):
            sock.settimeout(1)  # bounded, were the guard ever to let it through
            getattr(sock, connect)(("10.1.2.3", 9))
    assert loopback.attempts[before:] == [
        "a lookup of 'example.com'",
        "a connection to '10.1.2.3'",
        "a connection to '10.1.2.3'",
    ]
    del loopback.attempts[before:]  # seen: this test's own tries are not a failure


def test_the_loopback_still_works():
    assert socket.getaddrinfo("localhost", 80)
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        with socket.socket() as sock:
            sock.connect(listening.getsockname())
