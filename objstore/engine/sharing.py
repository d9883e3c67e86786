"""One open backend per store directory in a process, shared by every ``objstore.open`` of it.

LMDB allows an environment to be open once per process (py-lmdb refuses a second open), yet
callers open a store where they need it: two specklepy transports on one cache, a script and
the library it calls. Each open gets its own Store on the one backend, which closes when the
last of them does.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable, Mapping

from objstore import errors
from objstore.engine.base import Backend


class _Entry:
    def __init__(self, backend: Backend, options: Mapping[str, object]) -> None:
        self.backend = weakref.ref(backend)  # a store dropped unclosed still frees its backend
        self.options = options
        self.users = 1


_OPEN: dict[tuple[int, str], _Entry] = {}
_LOCK = threading.Lock()


def acquire(
    path: str | os.PathLike[str],
    options: Mapping[str, object],
    make: Callable[[], Backend],
) -> tuple[Backend, Callable[[], None]]:
    """The backend open on ``path`` in this process (made with ``make`` if none is), and the
    function that gives this use of it back. ``options`` must equal those it was opened
    with, else StoreInUse names the difference."""
    key = (os.getpid(), os.path.realpath(path))
    with _LOCK:
        entry = _OPEN.get(key)
        backend = entry.backend() if entry is not None else None
        if entry is not None and backend is not None and not backend.closed:
            if entry.options != options:
                differ = ", ".join(
                    f"{name}={entry.options[name]!r} (asked {options[name]!r})"
                    for name in options
                    if entry.options.get(name) != options[name]
                )
                raise errors.StoreInUse(
                    f"{path} is already open in this process with {differ}; open it with the "
                    "same options, or close the other store first"
                )
            entry.users += 1
        else:
            backend = make()
            entry = _OPEN[key] = _Entry(backend, options)
    return backend, _releaser(key, entry, backend)


def _releaser(key: tuple[int, str], entry: _Entry, backend: Backend) -> Callable[[], None]:
    done = False

    def release() -> None:
        nonlocal done
        with _LOCK:
            if done:
                return
            done = True
            entry.users -= 1
            last = entry.users == 0
            if last and _OPEN.get(key) is entry:
                del _OPEN[key]
        if last:
            backend.close()

    return release
