"""The LMDB environment: persistence, map growth, writable maps, formats, damage at open,
forks, full disks and read-only stores."""

from __future__ import annotations

import errno
import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import lmdb
import pytest

import objstore
from objstore import errors, graphgen
from objstore.engine import lmdb as lmdb_backend
from objstore.engine.lmdb import LMDBBackend, transactions

from ...conftest import tmpfs
from ..damage import raw_put
from .helpers import map_size


def test_reopen_keeps_everything(tmp_path):
    g = graphgen.generate(200, seed=3)
    with objstore.open(tmp_path / "s") as store:
        for batch in graphgen.batches(g.objects, max_objects=50):
            store.put("p", batch)
    with objstore.open(tmp_path / "s") as store:
        assert dict(store.get_many("p", [i for i, _ in g.objects])) == dict(g.objects)
        assert len(list(store.iter_with_children("p", g.root_id))) == len(g)
        assert store.verify().ok


def test_map_grows_without_user_visible_error(tmp_path):
    with objstore.open(tmp_path / "s", map_size=256 * 1024) as store:
        objs = [
            json.dumps({"id": f"o{i}", "pad": os.urandom(2000).hex()}).encode() for i in range(600)
        ]
        for start in range(0, 600, 100):
            store.put("p", b"[" + b",".join(objs[start : start + 100]) + b"]")
        assert store.count("p") == 600
        assert store.get("p", "o599") == objs[599]
        assert store.backend._env.info()["map_size"] > 256 * 1024  # type: ignore[attr-defined]


def test_writable_map_file_size_is_not_taken_for_data(tmp_path):
    # With writemap the data file is as long as the map: a hole past the data. Stats and the
    # next open must look at what is allocated, or each reopen would double the map.
    objs = [json.dumps({"id": f"o{i}", "pad": "x" * 500}).encode() for i in range(200)]
    with objstore.open(tmp_path / "s", writemap=True) as store:
        assert store.backend._env.flags()["writemap"]  # type: ignore[attr-defined]
        store.put("p", objs)
        first_map = map_size(store)
        assert store.stats().file_bytes < first_map // 8
    assert (tmp_path / "s" / "data.mdb").stat().st_size == first_map
    for _ in range(3):
        with objstore.open(tmp_path / "s", writemap=True) as store:
            assert map_size(store) == first_map
            assert store.get("p", "o199") == objs[199]


def _map_size_after(path: Path, code: str) -> int:
    """The map size of the store at ``path`` as another process leaves it after running
    ``code`` (``s`` the store it opened there, ``os`` and ``sys`` imported)."""
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            f"import os, sys, objstore\n{code}    print(s.backend._env.info()['map_size'])",
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return int(done.stdout)


def test_a_later_writer_asking_for_a_smaller_map_does_not_shrink_the_file(tmp_path):
    # LMDB truncates a writable map's file to the map size; had the second process done so,
    # the first one's next writes past the cut would kill it with SIGBUS.
    path = tmp_path / "s"
    with objstore.open(path, map_size=64 << 20, writemap=True) as store:
        store.put("p", [b'{"id":"a"}'])
        size = (path / "data.mdb").stat().st_size
        assert size == 64 << 20
        other = _map_size_after(
            path,
            "with objstore.open(sys.argv[1], map_size=1 << 20, writemap=True) as s:\n"
            "    s.put('q', [b'{\"id\":\"b\"}'])\n",
        )
        assert other == size
        assert (path / "data.mdb").stat().st_size == size
        pad = "x" * 4000
        store.put("p", [f'{{"id":"o{i}","p":"{pad}{i}"}}'.encode() for i in range(5000)])
        assert store.get("q", "b") == b'{"id":"b"}'
        assert store.verify().ok


@pytest.mark.parametrize("writemap", [True, False])
def test_a_map_another_process_grew_is_taken_up_by_the_next_write(tmp_path, writemap):
    """A server's workers share one store: when one grows the map, the others' next
    transaction (here a write's read of what it holds) meets LMDB's MapResizedError and
    adopts the new size, with no error shown."""
    path = tmp_path / "s"
    with objstore.open(path, map_size=1 << 20, writemap=writemap) as store:
        store.put("p", [b'{"id":"a"}'])
        assert map_size(store) == 1 << 20
        grown = _map_size_after(
            path,
            f"with objstore.open(sys.argv[1], map_size=1 << 20, writemap={writemap}) as s:\n"
            "    pads = [os.urandom(1500).hex().encode() for _ in range(3000)]\n"
            '    s.put("q", [b\'{"id":"o%d","p":"%s"}\' % x for x in enumerate(pads)])\n',
        )
        assert grown > 1 << 20  # (3000 objects of 3 KB that do not compress)
        store.put("p", [b'{"id":"b"}'])
        assert map_size(store) == grown
        assert store.get("q", "o2999") is not None
        assert store.count("q") == 3000 and store.count("p") == 2
        assert store.verify().ok


def test_writemap_is_on_by_default_only_on_linux(tmp_path, monkeypatch):
    with objstore.open(tmp_path / "a") as store:
        on = store.backend._env.flags()["writemap"]  # type: ignore[attr-defined]
        assert on is sys.platform.startswith("linux")
    monkeypatch.setattr(lmdb_backend, "WRITEMAP_DEFAULT", False)
    with objstore.open(tmp_path / "b") as store:
        assert store.backend._env.flags()["writemap"] is False  # type: ignore[attr-defined]
    with objstore.open(tmp_path / "b", readonly=True, writemap=True) as store:
        assert store.backend._env.flags()["writemap"] is False  # type: ignore[attr-defined]


def test_stores_written_with_and_without_writemap_read_alike(tmp_path):
    g = graphgen.generate(500, seed=4)
    body = b"[" + b",".join(d for _, d in g.objects) + b"]"
    for writemap in (False, True):
        with objstore.open(tmp_path / str(writemap), writemap=writemap) as store:
            assert store.backend._env.flags()["writemap"] is writemap  # type: ignore[attr-defined]
            store.put("p", body)
    for writemap in (False, True):  # each reopened the other way round
        with objstore.open(tmp_path / str(writemap), writemap=not writemap) as store:
            assert dict(store.iter_with_children("p", g.root_id)) == dict(g.objects)
            assert store.verify().ok


def test_unknown_format_version_refused(tmp_path):
    with objstore.open(tmp_path / "s") as store:
        raw_put(store.backend, "meta", b"version", (99).to_bytes(4, "big"))
    with pytest.raises(errors.UnsupportedFormat, match="format 99"):
        objstore.open(tmp_path / "s")
    with pytest.raises(errors.UnsupportedFormat, match="format 99"):
        objstore.open(tmp_path / "s", readonly=True)


def _damage_by_truncating(path) -> None:
    (path / "data.mdb").write_bytes((path / "data.mdb").read_bytes()[: 2 * 4096])


def _damage_with_noise(path) -> None:
    (path / "data.mdb").write_bytes(random.Random(0).randbytes(100_000))


@pytest.mark.parametrize("damage", [_damage_by_truncating, _damage_with_noise])
@pytest.mark.parametrize("mode", ["readonly", "writemap", "pwrite"])
def test_a_damaged_store_is_refused_with_store_corrupt(tmp_path, damage, mode):
    """Files that are not an LMDB environment (noise), or one cut short after its headers,
    are StoreCorrupt naming the path, not a bare lmdb error (nor, opened without a writable
    map, a SIGBUS reading past the file's end: the open runs in a child to see that)."""
    with objstore.open(tmp_path / "s", writemap=mode == "writemap") as store:
        store.put("p", [json.dumps({"id": f"o{n}", "pad": "x" * 900}).encode() for n in range(50)])
    damage(tmp_path / "s")
    opening = (
        "import sys, objstore\n"
        "try:\n"
        f"    objstore.open(sys.argv[1], readonly={mode == 'readonly'}, "
        f"writemap={mode == 'writemap'})\n"
        "except objstore.StoreCorrupt as exc:\n"
        "    print(exc)\n"
    )
    child = subprocess.run(
        [sys.executable, "-c", opening, str(tmp_path / "s")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert child.returncode == 0, (child.returncode, child.stderr[-500:])  # -7: SIGBUS
    assert f"{tmp_path / 's'} is damaged or not an objstore store (" in child.stdout


# a store's helper threads make the process multi-threaded, and a fork of it (a prefork
# server, multiprocessing's fork start) is the case under test: Python 3.12+ warns about it
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_use_after_fork_is_refused(tmp_path):
    store = objstore.open(tmp_path / "s")
    store.put("p", b'[{"id":"a"}]')
    pid = os.fork()
    if pid == 0:  # child: the inherited environment must not be used
        try:
            store.get("p", "a")
        except errors.StoreClosed:
            os._exit(0)
        os._exit(1)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0
    assert store.get("p", "a") == b'{"id":"a"}'
    store.close()


def _disk_full(monkeypatch, backend: LMDBBackend) -> list[tuple[int, int]]:
    """Make every block reservation fail as on a full disk; return the ranges asked for."""
    if not backend._reserving:
        pytest.skip("reservations are made only with a writable map (Linux)")
    asked: list[tuple[int, int]] = []

    def full(fd: int, offset: int, length: int) -> None:
        asked.append((offset, length))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", full)
    backend._reserved_to = 0  # forget what was reserved before
    return asked


def test_a_full_disk_refuses_the_write_and_keeps_the_store(tmp_path, monkeypatch):
    """With a writable map, a write into blocks the disk cannot give kills the process
    (SIGBUS); blocks are reserved first, and a disk that has none left refuses the write."""
    a, b = b'{"id":"a","v":1}', b'{"id":"b","v":2}'
    with objstore.open(tmp_path / "s") as store:
        backend = store.backend
        assert isinstance(backend, LMDBBackend)
        store.put("p", [a])
        asked = _disk_full(monkeypatch, backend)
        with pytest.raises(errors.StoreFull, match="no space left for this write"):
            store.put("p", [b])
        with pytest.raises(errors.StoreFull):
            store.put_many("p", [[b], [b'{"id":"c"}']])
        assert asked and all(length >= transactions.RESERVE_MARGIN for _, length in asked)
        assert store.has("p", ["a", "b", "c"]) == {"a": True, "b": False, "c": False}
        assert store.verify().ok
        monkeypatch.undo()  # room again
        assert store.put("p", [b]).stored == 1
        assert store.get("p", "b") == b


def test_a_reservation_the_free_space_cannot_cover_is_not_tried(tmp_path, monkeypatch):
    """A failed fallocate keeps the blocks it got (the disk is left full for everyone); a
    disk reporting too little free space is refused before any is asked for."""
    with objstore.open(tmp_path / "s") as store:
        backend = store.backend
        assert isinstance(backend, LMDBBackend)
        store.put("p", [b'{"id":"a"}'])
        asked = _disk_full(monkeypatch, backend)
        real = os.statvfs(tmp_path)
        tiny = os.statvfs_result((*real[:4], 1, *real[5:]))  # one free block
        monkeypatch.setattr(os, "statvfs", lambda path: tiny)
        big = [
            json.dumps({"id": f"b{n}", "pad": os.urandom(2000).hex()}).encode() for n in range(2000)
        ]
        with pytest.raises(errors.StoreFull):
            store.put("p", big)  # more than the file holds already
        assert asked == []
        assert store.has("p", ["a", "b0"]) == {"a": True, "b0": False}


class _FailingCommits:
    """An LMDB environment whose write transactions fail to commit as ``pwrite`` on a full
    disk makes them fail (no writable map): aborted, with a plain lmdb.Error."""

    def __init__(self, env: Any, message: str) -> None:
        self._env, self._message = env, message

    def __getattr__(self, name: str) -> object:
        return getattr(self._env, name)

    def begin(self, write: bool = False, **kwargs: Any) -> Any:
        txn = self._env.begin(write=write, **kwargs)
        return _FailingCommit(txn, self._message) if write else txn


class _FailingCommit:
    def __init__(self, txn: Any, message: str) -> None:
        self._txn, self._message = txn, message

    def __getattr__(self, name: str) -> object:
        return getattr(self._txn, name)

    def commit(self) -> None:
        self._txn.abort()
        raise lmdb.Error(self._message)


@pytest.mark.parametrize("error", ["Input/output error", "No space left on device"])
def test_without_a_writable_map_a_full_disk_is_store_full(tmp_path, monkeypatch, error):
    """Off Linux (no writable map) LMDB writes pages with pwrite, which on a full disk fails
    (ENOSPC, or EIO when cut short) and the commit is aborted: that is StoreFull, naming the
    free space, and the store keeps what it had."""
    backend = LMDBBackend(tmp_path / "s", writemap=False)
    store = objstore.Store(backend)
    store.put("p", [b'{"id":"a"}'])
    env = backend._env
    monkeypatch.setattr(backend, "_env", _FailingCommits(env, f"mdb_txn_commit: {error}"))
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage._replace(free=4096))
    with pytest.raises(errors.StoreFull, match=r"disk has 0\.0 MB free; nothing was stored") as e:
        store.put("p", [b'{"id":"b","v":1}'])
    assert isinstance(e.value.__cause__, lmdb.Error)
    monkeypatch.undo()
    assert store.has("p", ["a", "b"]) == {"a": True, "b": False}
    assert store.verify().ok
    assert store.put("p", [b'{"id":"b","v":1}']).stored == 1
    store.close()


def test_an_io_error_with_room_on_the_disk_stays_an_io_error(tmp_path, monkeypatch):
    backend = LMDBBackend(tmp_path / "s", writemap=False)
    store = objstore.Store(backend)
    monkeypatch.setattr(
        backend, "_env", _FailingCommits(backend._env, "mdb_txn_commit: Input/output error")
    )
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage._replace(free=10**12))
    with pytest.raises(lmdb.Error, match="Input/output error") as e:
        store.put("p", [b'{"id":"a"}'])
    assert not isinstance(e.value, errors.StoreFull)
    monkeypatch.undo()
    store.close()


def test_a_full_map_leaves_the_write_to_grow_it_not_to_reserve(tmp_path, monkeypatch):
    """With no room left in the map there is nothing to reserve (a zero-length fallocate is
    EINVAL): the write goes on, meets MapFullError and grows the map, as it always did."""
    with objstore.open(tmp_path / "s") as store:
        backend = store.backend
        assert isinstance(backend, LMDBBackend)
        if not backend._reserving:
            pytest.skip("reservations are made only with a writable map (Linux)")
        env = backend._env

        class FullMap:
            def __getattr__(self, name: str) -> object:
                return getattr(env, name)

            def info(self) -> dict[str, int]:  # the fields _reserve reads: no page left
                map_size = env.info()["map_size"]
                return {"map_size": map_size, "last_pgno": map_size // env.stat()["psize"] - 1}

        monkeypatch.setattr(backend, "_env", FullMap())
        backend._reserved_to = 0
        assert store.put("p", [b'{"id":"a"}']).stored == 1
        monkeypatch.undo()
        assert store.get("p", "a") == b'{"id":"a"}'


def test_reservations_are_made_ahead_not_for_every_commit(tmp_path, monkeypatch):
    with objstore.open(tmp_path / "s") as store:
        backend = store.backend
        assert isinstance(backend, LMDBBackend)
        if not backend._reserving:
            pytest.skip("reservations are made only with a writable map (Linux)")
        calls: list[int] = []
        real = os.posix_fallocate

        def counted(fd: int, offset: int, length: int) -> None:
            calls.append(length)
            real(fd, offset, length)

        monkeypatch.setattr(os, "posix_fallocate", counted)
        for n in range(200):
            store.put("p", [json.dumps({"id": f"o{n}", "pad": "x" * 500}).encode()])
        assert 1 <= len(calls) <= 3


_FILL_UNTIL_FULL = """
import json, os, sys, objstore
from objstore import errors
store = objstore.open(sys.argv[1], writemap=sys.argv[2] == "writemap")
stored = 0
try:
    for batch in range(10_000):
        store.put("p", [json.dumps({"id": f"b{batch}-{i}", "pad": os.urandom(500).hex()}).encode()
                        for i in range(200)])
        stored += 200
except errors.StoreFull:
    print(stored)
"""


@pytest.mark.parametrize("mode", ["writemap", "pwrite"])
def test_writing_until_the_disk_is_full_ends_in_store_full(tmp_path, mode):
    """On a real 24 MB tmpfs (skipped where one cannot be mounted): the writer gets
    StoreFull (not SIGBUS with a writable map, not a bare lmdb.Error without), and every
    batch it was told was stored reads back."""
    with tmpfs(tmp_path / "small", "24m") as mount:
        path = str(mount / "s")
        writer = subprocess.run(
            [sys.executable, "-c", _FILL_UNTIL_FULL, path, mode],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert writer.returncode == 0, (writer.returncode, writer.stderr[-500:])  # -7: SIGBUS
        stored = int(writer.stdout)
        assert stored > 1000
        with objstore.open(path, readonly=True) as store:
            assert store.count("p") == stored
            assert store.verify().ok


def test_readonly_open_reads_everything_and_refuses_writes(tmp_path):
    g = graphgen.generate(500, seed=4)
    with objstore.open(tmp_path / "s") as store:
        store.put("p", b"[" + b",".join(d for _, d in g.objects) + b"]")
    with objstore.open(tmp_path / "s", readonly=True) as store:
        assert dict(store.iter_with_children("p", g.root_id)) == dict(g.objects)
        assert store.verify().ok
        with pytest.raises(errors.StoreReadOnly):
            store.put("p", b'[{"id":"new"}]')
        for count in (1, 3):
            with pytest.raises(errors.StoreReadOnly):
                store.put_many("p", [b'[{"id":"new"}]'] * count)
        with pytest.raises(errors.StoreReadOnly):
            store.delete_project("p")
        assert store.count("p") == len(g)


def test_readahead_is_on_by_default_and_can_be_turned_off(tmp_path):
    with objstore.open(tmp_path / "s") as store:
        store.put("p", b'[{"id":"a"}]')
        assert store.backend._env.flags()["readahead"] is True  # type: ignore[attr-defined]
    with objstore.open(tmp_path / "s", readahead=False) as store:
        assert store.backend._env.flags()["readahead"] is False  # type: ignore[attr-defined]
        assert store.get("p", "a") == b'{"id":"a"}'
