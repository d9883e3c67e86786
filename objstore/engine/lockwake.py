"""Waking LMDB lock waiters whose wake-up was lost.

LMDB guards its writer and reader tables with process-shared robust pthread mutexes that
live in ``lock.mdb``. When a process is killed -9 around such a mutex's release, another
process can be left asleep on it for ever: the mutex reads free (no owner, no waiters bit)
yet its waiter's wake-up never came. objstore's multi-process durability test met this
(Linux 6.18, glibc 2.36, LMDB 0.9.36; about 1 round in 60 with a kill at a random moment),
with the survivor's write asleep in ``FUTEX_WAIT`` on the writer mutex's word.

Waking a futex is always safe: a glibc waiter re-reads the word and sleeps again while the
mutex is held. So one thread per process looks at the mutexes of every open store once a
second, and wakes the sleepers of any that has no owner. That costs a read and a system call
a second per store, and it rescues sleepers in any process, not only this one.

Only where the layout is known and checked: 64-bit Linux on x86-64 or aarch64 with glibc,
and a lock file whose header and both mutexes read as LMDB's (robust, process-shared).
Elsewhere :func:`watch` returns a watch that does nothing.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import functools
import logging
import os
import platform
import sys
import threading
import weakref
from pathlib import Path

log = logging.getLogger(__name__)

INTERVAL = 1.0  # seconds between looks

_MAGIC = 0xBEEFC0DE  # LMDB's lock file header
# Where lock.mdb keeps the reader and writer mutexes, and the futex system call's number, by
# machine. LMDB pads its header (magic, format, reader mutex, transaction id, counts) to
# 64-byte cache lines and a glibc mutex is 40 bytes on x86-64, 48 on aarch64: the writer
# mutex starts at 64 on one, 128 on the other (as read from lock files LMDB made on each).
_LAYOUTS: dict[str, tuple[tuple[int, ...], int]] = {
    "x86_64": ((8, 64), 202),
    "aarch64": ((8, 128), 98),
}
_KIND = 16  # a glibc mutex's __kind, from its start (on both)
_ROBUST, _PSHARED = 16, 128  # __kind bits
_TID_MASK = 0x3FFFFFFF  # the owner's thread id in a robust mutex's word
_FUTEX_WAKE = 1  # a shared (not private) wake
_MAP_LENGTH = 4096  # the least of the lock file a watch reads

_LAYOUT = (
    _LAYOUTS.get(platform.machine())
    if sys.platform == "linux" and platform.libc_ver()[0] == "glibc" and sys.maxsize > 2**32
    else None
)  # (a 32-bit Python on a 64-bit kernel has the machine's name but 32-bit mutexes)
_SUPPORTED = _LAYOUT is not None
_MUTEXES, _SYS_FUTEX = _LAYOUT if _LAYOUT is not None else ((), 0)


class Watch:
    """The mutexes of one ``lock.mdb``, looked at until :meth:`close`, through the map LMDB
    made of it: close the watch before the environment, which unmaps it."""

    def __init__(self, path: Path, address: int | None = None, env: object = None) -> None:
        self.path = path
        self._address = address
        # the environment whose map is read: its freeing closes the watch (see watch)
        self._env = None if env is None else weakref.ref(env, lambda _: self.close())
        self.woken = 0  # sleepers woken on a mutex with no owner

    @property
    def active(self) -> bool:
        return self._address is not None

    def close(self) -> None:
        # Once it returns, no look is under way or to come. At exit the lock is not waited
        # for: the thread was stopped, or is frozen for want of the interpreter (maybe
        # holding the lock), and looks no more.
        with contextlib.nullcontext() if _finalizing() else _lock:
            _watches.discard(self)
            self._address = None

    def look(self) -> int:
        """Wake the sleepers of each mutex that has no owner; how many woke."""
        # The environment is held meanwhile, so that it cannot be freed (and its map let go
        # of) between a check and a read: a garbage collection may run at any allocation.
        env = self._env() if self._env is not None else None
        address = self._address
        if address is None or (self._env is not None and env is None):
            return 0
        woken = 0
        for offset in _MUTEXES:
            word = ctypes.c_uint32.from_address(address + offset).value
            if word & _TID_MASK == 0:
                woken += max(0, _wake(address + offset))
        if woken:
            self.woken += woken
            log.warning(
                "woke %d thread(s) asleep on a free LMDB lock in %s: a wake-up was lost "
                "(or came just then)",
                woken,
                self.path,
            )
        return woken


def watch(path: Path, env: object) -> Watch:
    """Look at the mutexes of ``env``, the environment open in this process at ``path`` (a
    directory), until the watch is closed or ``env`` is freed; a watch that does nothing
    where the layout is not known.

    It reads LMDB's own map of the lock file: opening the file here and closing it would
    drop the POSIX locks LMDB holds on it for this process (they belong to the process, and
    any close of the file lets go of them), and the next process to open the environment
    would then reset its lock table under everyone's feet. A store dropped unclosed frees
    its environment, and with it that map: the watch ends first (a weak reference's
    callback, which py-lmdb runs before it closes the environment)."""
    address = _mapped(path / "lock.mdb") if _SUPPORTED else None
    if address is None or not _known(address):
        return Watch(path)
    found = Watch(path, address, env)
    with _lock:
        _watches.add(found)
        global _thread
        if (_thread is None or not _thread.is_alive()) and not _stopping.is_set():
            _thread = threading.Thread(target=_run, name="objstore-lockwake", daemon=True)
            _thread.start()
    return found


# Held by the looks, so that a close waits for a look under way. Reentrant: a collection
# in the thread's own look can free a dropped store, whose close then runs in that thread.
_lock = threading.RLock()
_watches: set[Watch] = set()
_thread: threading.Thread | None = None
_stopping = threading.Event()  # set at exit
_finalizing = sys.is_finalizing


def _mapped(lock_file: Path) -> int | None:
    """Where this process maps ``lock_file`` whole and shared from its start, if it does."""
    try:
        stat = os.stat(lock_file)
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            lines = maps.read().splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split(maxsplit=5)
        if len(fields) < 6 or fields[1][3] != "s" or int(fields[2], 16) != 0:
            continue
        span, device, inode = fields[0], fields[3], int(fields[4])
        major, minor = (int(part, 16) for part in device.split(":"))
        if inode != stat.st_ino or os.makedev(major, minor) != stat.st_dev:
            continue
        start, end = (int(part, 16) for part in span.split("-"))
        if end - start >= _MAP_LENGTH:
            return start
    return None


def _known(address: int) -> bool:
    """Whether the map at ``address`` reads as LMDB's lock file with glibc robust,
    process-shared mutexes where this module expects them."""
    return ctypes.c_uint32.from_address(address).value == _MAGIC and all(
        ctypes.c_int32.from_address(address + offset + _KIND).value & (_ROBUST | _PSHARED)
        == _ROBUST | _PSHARED
        for offset in _MUTEXES
    )


@functools.cache
def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    return libc


def _wake(address: int) -> int:
    return int(
        _libc().syscall(
            _SYS_FUTEX, ctypes.c_void_p(address), _FUTEX_WAKE, 0x7FFFFFFF, None, None, 0
        )
    )


def _run() -> None:
    """Look at every watched lock file once an interval; end when none is left, or at exit."""
    while True:
        with _lock:
            if not _watches or _stopping.is_set():
                global _thread
                _thread = None
                return
            for each in list(_watches):
                each.look()
        _stopping.wait(INTERVAL)


@atexit.register
def _stop() -> None:
    """End the thread before the interpreter does. Frozen by the interpreter's exit while
    it held the lock, it would leave the lock held for ever, and the close of a store left
    open till then (from its environment's weak reference) would wait for it for ever."""
    _stopping.set()
    thread = _thread
    if thread is not None:
        thread.join(timeout=10)


def _after_fork_in_child() -> None:
    """A forked child has none of the thread, and a lock the thread held stays held in it;
    it watches the stores it opens itself (a parent's store is refused in a child)."""
    global _lock, _thread
    _lock = threading.RLock()
    _watches.clear()
    _thread = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
