"""lockwake: a process asleep on an LMDB mutex whose wake-up was lost is woken.

The lost wake-up is made on purpose: a process holds the writer mutex, another goes to sleep
on it, and the test then frees the mutex's word the way the holder's unlock would, without
its wake, and kills the holder. A plain LMDB writer then sleeps for ever; an objstore store
open on the environment, in any process, wakes it.
"""

from __future__ import annotations

import ctypes
import mmap
import struct
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import objstore
from objstore.engine import lockwake

pytestmark = pytest.mark.skipif(
    not lockwake._SUPPORTED,
    reason="lockwake knows the lock layout of 64-bit x86 and aarch64 glibc Linux only",
)

_WRITER_WORD = lockwake._MUTEXES[-1] if lockwake._SUPPORTED else 0  # the writer mutex's word
_WAITERS = 0x80000000

_HOLD = textwrap.dedent(
    """
    import lmdb, sys
    env = lmdb.open(sys.argv[1], max_dbs=8)
    txn = env.begin(write=True)
    print("held", flush=True)
    sys.stdin.read()  # until killed
    """
)
_PLAIN_WRITE = textwrap.dedent(
    """
    import lmdb, sys
    env = lmdb.open(sys.argv[1], max_dbs=8)
    print("writing", flush=True)
    with env.begin(write=True) as txn:
        txn.put(b"plain", b"1")
    print("written", flush=True)
    """
)
_STORE_WRITE = textwrap.dedent(
    """
    import sys, objstore
    store = objstore.open(sys.argv[1])  # (its open writes too: before the mutex is held)
    print("opened", flush=True)
    sys.stdin.readline()
    store.put("p", b'[{"id": "a1", "n": 1}]')
    print("written", flush=True)
    store.close()
    """
)


def _start(script: str, path: Path, says: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", script, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == says
    return proc


@pytest.fixture
def word(tmp_path: Path) -> Iterator[mmap.mmap]:
    """The lock file of a new store at tmp_path/s, mapped for writing."""
    objstore.open(tmp_path / "s").close()
    with open(tmp_path / "s" / "lock.mdb", "r+b") as file:
        mapped = mmap.mmap(file.fileno(), 4096)
    yield mapped
    mapped.close()


def _read(mapped: mmap.mmap) -> int:
    value: int = struct.unpack_from("<I", mapped, _WRITER_WORD)[0]
    return value


def _await_sleeper(mapped: mmap.mmap) -> None:
    """Until a process sleeps on the writer mutex (it has set the waiters bit)."""
    deadline = time.monotonic() + 20
    while not _read(mapped) & _WAITERS:
        assert time.monotonic() < deadline, "no process went to sleep on the writer mutex"
        time.sleep(0.02)


def _lose_wake_up(mapped: mmap.mmap, holder: subprocess.Popen[str]) -> None:
    """Once a waiter sleeps on the holder's mutex, free it without a wake and kill the holder."""
    _await_sleeper(mapped)
    time.sleep(0.2)
    struct.pack_into("<I", mapped, _WRITER_WORD, 0)
    holder.kill()
    holder.wait(timeout=10)
    assert _read(mapped) == 0  # free: the dead holder no longer owned it


def _run_script(script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def _ended(proc: subprocess.Popen[str], timeout: float) -> str:
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise
    assert proc.returncode == 0
    return out


def test_a_store_open_anywhere_wakes_a_writer_whose_wake_up_was_lost(
    tmp_path: Path, word: mmap.mmap
) -> None:
    path = tmp_path / "s"
    holder = _start(_HOLD, path, "held")
    plain = _start(_PLAIN_WRITE, path, "writing")
    try:
        _lose_wake_up(word, holder)
        with pytest.raises(subprocess.TimeoutExpired):  # the hang is real: nothing wakes it
            plain.communicate(timeout=2 + lockwake.INTERVAL)
        store = objstore.open(path)
        try:
            assert _ended(plain, 10 * lockwake.INTERVAL).split() == ["written"]
        finally:
            store.close()
    finally:
        for proc in (holder, plain):
            proc.kill()
            proc.communicate()


def test_a_store_write_whose_wake_up_was_lost_wakes_itself(tmp_path: Path, word: mmap.mmap) -> None:
    path = tmp_path / "s"
    writer = _start(_STORE_WRITE, path, "opened")
    holder = _start(_HOLD, path, "held")
    try:
        assert writer.stdin is not None
        writer.stdin.write("write\n")
        writer.stdin.flush()
        _lose_wake_up(word, holder)
        assert _ended(writer, 10 * lockwake.INTERVAL).split() == ["written"]
    finally:
        for proc in (holder, writer):
            proc.kill()
            proc.communicate()
    with objstore.open(path) as store:
        assert dict(store.get_many("p", ["a1"])) == {"a1": b'{"id": "a1", "n": 1}'}


def _address(mapped: mmap.mmap) -> int:
    view = ctypes.c_char.from_buffer(mapped)
    try:
        return ctypes.addressof(view)
    finally:
        del view  # (an exported buffer keeps the map from closing)


def test_a_held_mutex_is_left_asleep(tmp_path: Path, word: mmap.mmap) -> None:
    """A look at a mutex with an owner wakes no one: its sleepers would only sleep again."""
    path = tmp_path / "s"
    holder = _start(_HOLD, path, "held")
    plain = _start(_PLAIN_WRITE, path, "writing")
    watch = lockwake.Watch(path, _address(word))  # on the test's map, not in the thread's set
    try:
        _await_sleeper(word)
        assert watch.look() == 0
        assert plain.poll() is None
        struct.pack_into("<I", word, _WRITER_WORD, 0)  # freed, its wake lost
        assert watch.look() == 1  # the one sleeper
        assert watch.woken == 1
        assert _ended(plain, 10).split() == ["written"]
    finally:
        watch.close()
        for proc in (holder, plain):
            proc.kill()
            proc.communicate()
    assert not watch.active
    assert watch.look() == 0


def test_a_watched_store_keeps_lmdbs_locks(tmp_path: Path) -> None:
    """LMDB's POSIX lock on its lock file, which tells the next process opening the store
    that others have it open, stays held while the store is watched: opening and closing
    the file to watch it would drop it, and the next opener would reset the lock table
    under the processes using it."""
    check = textwrap.dedent(
        """
        import fcntl, sys
        with open(sys.argv[1], "r+b") as file:
            try:
                fcntl.lockf(file, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 0)
            except BlockingIOError:
                print("held")
            else:
                print("free")
        """
    )

    def lock_is() -> str:
        out = subprocess.run(
            [sys.executable, "-c", check, str(tmp_path / "s" / "lock.mdb")],
            capture_output=True,
            text=True,
            timeout=60,
        )
        return out.stdout.strip()

    store = objstore.open(tmp_path / "s")
    try:
        assert any(t.name == "objstore-lockwake" for t in threading.enumerate())
        time.sleep(lockwake.INTERVAL * 1.5)  # a look or more
        assert lock_is() == "held"
    finally:
        store.close()
    assert lock_is() == "free"  # (so the check can tell)


class _Owner:
    """Stands for the environment whose map a watch reads."""


def test_only_a_mapped_lmdb_lock_file_is_watched(tmp_path: Path) -> None:
    owner = _Owner()
    assert not lockwake.watch(tmp_path, owner).active  # no lock file
    lock_file = tmp_path / "lock.mdb"
    lock_file.write_bytes(bytes(8192))
    assert not lockwake.watch(tmp_path, owner).active  # not mapped in this process
    with open(lock_file, "r+b") as file:
        mapped = mmap.mmap(file.fileno(), 8192)
    try:
        assert not lockwake.watch(tmp_path, owner).active  # mapped, but not LMDB's header
    finally:
        mapped.close()
    objstore.open(tmp_path / "s").close()
    with open(tmp_path / "s" / "lock.mdb", "r+b") as file:
        mapped = mmap.mmap(file.fileno(), 4096)
    try:
        watch = lockwake.watch(tmp_path / "s", owner)
        assert watch.active  # LMDB's, mapped (here by the test)
        watch.close()
        struct.pack_into("<i", mapped, _WRITER_WORD + 16, 0)  # the writer mutex not a robust one
        assert not lockwake.watch(tmp_path / "s", owner).active
    finally:
        mapped.close()


def test_the_watching_thread_ends_with_the_last_store_closed_or_dropped() -> None:
    script = textwrap.dedent(
        """
        import gc, sys, tempfile, threading, time, objstore
        def watching():
            return any(t.name == "objstore-lockwake" for t in threading.enumerate())
        with tempfile.TemporaryDirectory() as tmp:
            first, second = objstore.open(tmp + "/a"), objstore.open(tmp + "/b")
            assert watching()
            first.close()
            time.sleep(2.5)
            assert watching()
            second.close()
            deadline = time.monotonic() + 5
            while watching():
                assert time.monotonic() < deadline, "the thread outlived its stores"
                time.sleep(0.05)
            objstore.open(tmp + "/a").close()  # and starts again for the next store
            dropped = objstore.open(tmp + "/c")
            assert watching()
            del dropped  # unclosed: its environment is freed, and the map looked at with it
            gc.collect()
            deadline = time.monotonic() + 5
            while watching():
                assert time.monotonic() < deadline, "a freed store's watch went on"
                time.sleep(0.05)
        print("ok")
        """
    )
    out = _run_script(script)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["ok"]


_SLOW_LOOKS = """
import os, sys, tempfile, threading, time, objstore
from objstore.engine import lockwake
inside = threading.Event()
wake = lockwake._wake
def slow(address):  # a look that holds the lock a while (a free mutex is woken each look)
    inside.set()
    time.sleep(0.5)
    return wake(address)
lockwake._wake = slow
tmp = tempfile.mkdtemp()
store = objstore.open(tmp + "/a")
assert inside.wait(10)  # the thread is inside a look
"""


def test_the_thread_ends_at_exit_and_lets_go_of_its_lock() -> None:
    """Left to the interpreter's exit, the thread would be frozen inside a look, holding
    the lock that the close of a store still open then (from its environment's weak
    reference, as the interpreter frees it) waits for: a process that never ends."""
    script = _SLOW_LOOKS + textwrap.dedent(
        """
        lockwake._stop()  # what atexit runs
        free = lockwake._lock.acquire(blocking=False)  # (the thread would hold it)
        print(free, [t.name for t in threading.enumerate()])
        objstore.open(tmp + "/b").close()
        print(any(t.name == "objstore-lockwake" for t in threading.enumerate()))
        """
    )
    out = _run_script(script)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["True ['MainThread']", "False"]


def test_a_store_freed_by_a_collection_in_the_threads_own_look_is_let_go_of() -> None:
    """A dropped store caught in a reference cycle is freed by whichever thread's
    allocation sets off the collection, the watching thread's too, in the middle of a look
    and holding the lock. Its close runs there and then: it must neither wait for that
    lock (the thread would wait for itself, and every open and close of a store in the
    process after it) nor let the look read the map it lets go of."""
    script = textwrap.dedent(
        """
        import gc, os, tempfile, threading, objstore
        from objstore.engine import lockwake
        wake, armed, collected = lockwake._wake, threading.Event(), threading.Event()
        def collecting(address):  # as an allocation in the look may: in the dropped
            # store's own look, between its reader mutex and its writer mutex
            if armed.is_set() and address == base + 8:
                gc.collect()
                collected.set()
            return wake(address)
        lockwake._wake = collecting
        tmp = tempfile.mkdtemp()
        kept, dropped = objstore.open(tmp + "/a"), objstore.open(tmp + "/b")
        base = dropped.backend._lockwatch._address
        gc.disable()  # the cycle waits for the thread's collection
        cycle = [dropped]
        cycle.append(cycle)
        del dropped, cycle
        armed.set()
        if not collected.wait(10):
            print("the thread waits for itself", flush=True)
            os._exit(1)
        kept.close()
        watched = [str(w.path) for w in lockwake._watches]
        print("ok", watched, flush=True)
        """
    )
    out = _run_script(script)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.split() == ["ok", "[]"]


def test_a_close_at_exit_does_not_wait_for_a_frozen_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At exit a daemon thread that wants the interpreter back is frozen where it stands,
    maybe holding the lock; a close then must not wait for it (nor need to: it looks no
    more)."""
    store = objstore.open(tmp_path / "s")
    watch = store.backend._lockwatch  # type: ignore[attr-defined]
    assert watch.active
    monkeypatch.setattr(lockwake, "_finalizing", lambda: True)
    closing = threading.Thread(target=watch.close)
    with lockwake._lock:  # as the frozen thread would hold it
        closing.start()
        closing.join(5)
        assert not closing.is_alive(), "the close waited for the lock"
    assert not watch.active
    assert watch not in lockwake._watches
    monkeypatch.undo()
    store.close()


def test_a_process_left_with_a_store_open_ends_the_thread_at_exit() -> None:
    script = """
    import atexit, threading
    def after_objstores_exit_hook():  # registered first: run last
        alive = [t.name for t in threading.enumerate() if t.name == "objstore-lockwake"]
        print("at exit:", alive, flush=True)
    atexit.register(after_objstores_exit_hook)
    import tempfile, objstore
    store = objstore.open(tempfile.mkdtemp() + "/a")
    assert any(t.name == "objstore-lockwake" for t in threading.enumerate())
    """
    out = _run_script(script)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["at exit: []"]


def test_a_forked_child_watches_its_own_stores() -> None:
    """Forked while the parent's thread held the lock, the child opens and closes a store
    of its own, and watches it."""
    script = _SLOW_LOOKS + textwrap.dedent(
        """
        import warnings
        warnings.simplefilter("ignore", DeprecationWarning)  # (fork with threads, 3.12 on)
        pid = os.fork()
        if pid == 0:
            child = objstore.open(tmp + "/b")
            watching = any(t.name == "objstore-lockwake" for t in threading.enumerate())
            child.close()
            os._exit(0 if watching else 3)
        _, status = os.waitpid(pid, 0)
        print("child", os.waitstatus_to_exitcode(status), flush=True)
        store.close()
        """
    )
    out = _run_script(script)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["child", "0"]
