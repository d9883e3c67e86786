"""LMDB-specific behaviour: persistence, map growth, dictionary compression, process safety."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import random
import shutil
import subprocess
import sys
import threading
import tracemalloc
from typing import Any

import lmdb
import pytest

import objstore
from objstore import codec, compression, errors, graphgen
from objstore.codec import digest_of
from objstore.compression import ZSTD_DICT
from objstore.engine import lmdb as lmdb_backend
from objstore.engine.layout import LOC, REF, U64, pack_frames
from objstore.engine.lmdb import LMDBBackend

from ..conftest import tmpfs
from .damage import corrupt, frame, raw_put, replace_frame


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


def _map_size(store: objstore.Store) -> int:
    return int(store.backend._env.info()["map_size"])  # type: ignore[attr-defined]


def test_writable_map_file_size_is_not_taken_for_data(tmp_path):
    # With writemap the data file is as long as the map: a hole past the data. Stats and the
    # next open must look at what is allocated, or each reopen would double the map.
    objs = [json.dumps({"id": f"o{i}", "pad": "x" * 500}).encode() for i in range(200)]
    with objstore.open(tmp_path / "s", writemap=True) as store:
        assert store.backend._env.flags()["writemap"]  # type: ignore[attr-defined]
        store.put("p", objs)
        first_map = _map_size(store)
        assert store.stats().file_bytes < first_map // 8
    assert (tmp_path / "s" / "data.mdb").stat().st_size == first_map
    for _ in range(3):
        with objstore.open(tmp_path / "s", writemap=True) as store:
            assert _map_size(store) == first_map
            assert store.get("p", "o199") == objs[199]


def test_a_later_writer_asking_for_a_smaller_map_does_not_shrink_the_file(tmp_path):
    # LMDB truncates a writable map's file to the map size; had the second process done so,
    # the first one's next writes past the cut would kill it with SIGBUS.
    path = tmp_path / "s"
    with objstore.open(path, map_size=64 << 20, writemap=True) as store:
        store.put("p", [b'{"id":"a"}'])
        size = (path / "data.mdb").stat().st_size
        assert size == 64 << 20
        other = subprocess.run(
            [
                sys.executable,
                "-c",
                "import sys, objstore\n"
                "with objstore.open(sys.argv[1], map_size=1 << 20, writemap=True) as s:\n"
                "    s.put('q', [b'{\"id\":\"b\"}'])\n"
                "    print(s.backend._env.info()['map_size'])",
                str(path),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        assert int(other.stdout) == size
        assert (path / "data.mdb").stat().st_size == size
        pad = "x" * 4000
        store.put("p", [f'{{"id":"o{i}","p":"{pad}{i}"}}'.encode() for i in range(5000)])
        assert store.get("q", "b") == b'{"id":"b"}'
        assert store.verify().ok


def test_writemap_is_on_by_default_only_on_linux(tmp_path, monkeypatch):
    from objstore.engine import lmdb as lmdb_backend

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


def test_dictionary_trained_and_older_objects_stay_readable(tmp_path):
    g = graphgen.generate(3000, seed=5)
    with objstore.open(tmp_path / "s", dictionary_threshold=1000) as store:
        early = g.objects[:300]
        store.put("p", b"[" + b",".join(d for _, d in early) + b"]")
        assert store.stats().dictionaries == 0
        for batch in graphgen.batches(g.objects[300:], max_objects=1000):
            store.put("p", batch)
        stats = store.stats()
        assert stats.dictionaries == 1
        assert dict(store.get_many("p", [i for i, _ in early])) == dict(early)
        assert dict(store.get_many("p", [i for i, _ in g.objects])) == dict(g.objects)
        assert store.verify().ok
    with objstore.open(tmp_path / "s") as store:  # dictionary reloaded from the store
        assert dict(store.get_many("p", [i for i, _ in g.objects])) == dict(g.objects)
    with objstore.open(tmp_path / "s") as store:  # closures compressed with it decode too
        assert dict(store.iter_with_children("p", g.root_id)) == dict(g.objects)
        some_parent = next(i for i, d in g.objects[300:] if b'"__closure"' in d)
        assert (
            store.closure("p", some_parent) == json.loads(dict(g.objects)[some_parent])["__closure"]
        )


def _small_objects(n: int, seed: int) -> list[tuple[str, bytes]]:
    g = graphgen.generate(n, seed=seed)
    return [(i, d) for i, d in g.objects if len(d) < 2000]


def _dict_frames(backend: LMDBBackend, objects: list[tuple[str, bytes]]) -> int:
    return sum(frame(backend, digest_of(d))[0] == ZSTD_DICT for _, d in objects)


def test_first_dictionary_is_trained_outside_the_write_lock(tmp_path, monkeypatch):
    """A batch that makes the first dictionary due trains it before its commit, so other
    writers do not wait on zstd's training, and is compressed with it."""
    objects = _small_objects(3000, seed=21)
    held: list[bool] = []
    real = compression.train_dictionary

    with objstore.open(tmp_path / "s", dictionary_threshold=1000) as store:
        backend = store.backend
        assert isinstance(backend, LMDBBackend)

        def spy(samples):
            held.append(backend._write_lock.locked())
            return real(samples)

        monkeypatch.setattr(lmdb_backend, "train_dictionary", spy)
        store.put("p", [d for _, d in objects])
        assert held == [False]
        assert store.stats().dictionaries == 1
        assert _dict_frames(backend, objects) == len(objects)
        assert dict(store.get_many("p", [i for i, _ in objects])) == dict(objects)
        assert store.verify().ok


def _count_training(monkeypatch, delay: float = 0.0) -> list[int]:
    """Patch the engine's dictionary training to count its calls (and take ``delay`` s)."""
    trained: list[int] = []
    real = compression.train_dictionary

    def counted(samples):
        trained.append(1)
        threading.Event().wait(delay)
        return real(samples)

    monkeypatch.setattr(lmdb_backend, "train_dictionary", counted)
    return trained


def test_batches_staged_before_the_first_dictionary_commits_share_it(tmp_path, monkeypatch):
    """Pipelined writes stage the next batch before the one before commits: both use the
    one dictionary trained, so neither is trained or compressed twice."""
    objects = _small_objects(6000, seed=22)
    halves = objects[: len(objects) // 2], objects[len(objects) // 2 :]
    trained = _count_training(monkeypatch)
    with objstore.open(tmp_path / "s", dictionary_threshold=1000) as store:
        backend = store.backend
        assert isinstance(backend, LMDBBackend)
        staged = [
            backend._stage("p", codec.prepare([d for _, d in half], store.limits))
            for half in halves
        ]
        for one in staged:
            backend._commit_staged([one])
        assert trained == [1]
        assert _dict_frames(backend, objects) == len(objects)
        assert dict(store.get_many("p", [i for i, _ in objects])) == dict(objects)
        assert store.verify().ok


def test_writers_staging_at_once_on_a_new_store_train_one_dictionary(tmp_path, monkeypatch):
    """A server's first uploads arrive together: the second waits for the first's training
    instead of training its own, which its commit would then have to throw away."""
    objects = _small_objects(6000, seed=26)
    halves = objects[: len(objects) // 2], objects[len(objects) // 2 :]
    trained = _count_training(monkeypatch, delay=0.3)  # the other writer stages meanwhile
    with objstore.open(tmp_path / "s", dictionary_threshold=1000) as store:
        start = threading.Barrier(2)

        def upload(half):
            start.wait()
            store.put("p", [d for _, d in half])

        threads = [threading.Thread(target=upload, args=(half,)) for half in halves]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert trained == [1]
        assert _dict_frames(store.backend, objects) == len(objects)  # type: ignore[arg-type]
        assert dict(store.get_many("p", [i for i, _ in objects])) == dict(objects)
        assert store.verify().ok


def test_frames_for_a_dictionary_another_writer_beat_are_compressed_again(tmp_path):
    """Staged with the dictionary it trained, a batch whose commit finds another one stored
    meanwhile must not keep frames that only its own dictionary decodes."""
    mine, theirs = _small_objects(3000, seed=23), _small_objects(3000, seed=24)
    with objstore.open(tmp_path / "s", dictionary_threshold=1000) as store:
        backend = store.backend
        assert isinstance(backend, LMDBBackend)
        staged = backend._stage("p", codec.prepare([d for _, d in mine], store.limits))
        assert staged.compressed is not None and staged.compressed.result().trained
        backend._candidate = None  # as if another process trained (from other objects)
        store.put("q", [d for _, d in theirs])
        backend._commit_staged([staged])
        assert store.stats().dictionaries == 1
        assert dict(store.get_many("p", [i for i, _ in mine])) == dict(mine)
        assert dict(store.get_many("q", [i for i, _ in theirs])) == dict(theirs)
        assert store.verify().ok


def test_a_dictionary_trained_in_a_rolled_back_commit_is_forgotten(tmp_path, monkeypatch):
    """A commit that trains the first dictionary and then fails leaves no trace of it: the
    next commit trains its own, and what it compresses decodes after reopening."""
    objects = _small_objects(4000, seed=27)
    early, failing, later = objects[:300], objects[300:1200], objects[1200:2100]
    real = pack_frames
    calls: list[int] = []

    def fail_once(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # the second commit: the one that trains
            raise OSError("disk gone")
        return real(*args, **kwargs)

    monkeypatch.setattr(lmdb_backend, "pack_frames", fail_once)
    with objstore.open(tmp_path / "s", dictionary_threshold=1000) as store:
        store.put("p", [d for _, d in early])
        with pytest.raises(OSError):
            store.put("p", [d for _, d in failing])
        assert store.stats().dictionaries == 0
        assert not any(store.has("p", [i for i, _ in failing]).values())
        store.put("p", [d for _, d in later])
        assert store.stats().dictionaries == 1
        assert _dict_frames(store.backend, later) > 0  # type: ignore[arg-type]
    with objstore.open(tmp_path / "s") as store:
        assert dict(store.get_many("p", [i for i, _ in early + later])) == dict(early + later)
        assert store.verify().ok


def test_put_many_commits_the_first_batch_before_the_next_arrives(tmp_path):
    """A streamed first batch is stored while the next is still on its way (a receive's
    cache writes): it does not wait for the batch after it to arrive."""
    g = graphgen.generate(600, seed=25)
    first, rest = g.objects[:300], g.objects[300:]
    seen: list[bool] = []
    with objstore.open(tmp_path / "s") as store:

        def arriving():
            yield [d for _, d in first]
            for _ in range(200):  # up to 10 s for the first commit
                if all(store.has("p", [i for i, _ in first]).values()):
                    break
                threading.Event().wait(0.05)
            seen.append(all(store.has("p", [i for i, _ in first]).values()))
            yield [d for _, d in rest]

        assert store.put_many("p", arriving()).stored == len(g.objects)
        assert seen == [True]


def _put_while_a_commit_holds_the_lock(store, jobs):
    """Run ``store.put(project, objects)`` for each job on its own thread while the write
    lock is held (as by a commit syncing), release it once all are queued; return each
    job's result or exception and how many transactions were committed."""
    backend = store.backend
    env = backend._env
    outcomes: dict[int, object] = {}

    def put(k, project, objects):
        try:
            outcomes[k] = store.put(project, [d for _, d in objects])
        except BaseException as exc:
            outcomes[k] = exc

    before = env.info()["last_txnid"]
    threads = [threading.Thread(target=put, args=(k, *job)) for k, job in enumerate(jobs)]
    with backend._write_lock:
        for thread in threads:
            thread.start()
        for _ in range(400):  # up to 20 s for every write to stage and queue
            if len(backend._queue) == len(jobs):
                break
            threading.Event().wait(0.05)
        assert len(backend._queue) == len(jobs)
    for thread in threads:
        thread.join(60)
    return [outcomes[k] for k in range(len(jobs))], env.info()["last_txnid"] - before


def test_writes_queued_behind_a_commit_share_one_transaction(tmp_path):
    """Group commit: concurrent writes waiting for the write lock are committed together,
    one disk sync for all, each with its own result."""
    g = graphgen.generate(900, seed=30)
    parts = [g.objects[k::3] for k in range(3)]
    with objstore.open(tmp_path / "s") as store:
        results, txns = _put_while_a_commit_holds_the_lock(store, [("p", part) for part in parts])
        assert txns == 1
        assert [r.stored for r in results] == [len(part) for part in parts]
        assert dict(store.iter_with_children("p", g.root_id)) == dict(g.objects)
        assert store.verify().ok
    with objstore.open(tmp_path / "s") as store:
        assert dict(store.get_many("p", [i for i, _ in g.objects])) == dict(g.objects)


def test_a_group_commit_is_bounded_in_bytes(tmp_path, monkeypatch):
    monkeypatch.setattr(lmdb_backend, "GROUP_BYTES", 1)
    g = graphgen.generate(300, seed=31)
    with objstore.open(tmp_path / "s") as store:
        jobs = [("p", g.objects[k::3]) for k in range(3)]
        results, txns = _put_while_a_commit_holds_the_lock(store, jobs)
        assert txns == 3
        assert sum(r.stored for r in results) == len(g.objects)


def test_the_same_objects_twice_in_one_group_are_stored_once(tmp_path):
    g = graphgen.generate(400, seed=32)
    with objstore.open(tmp_path / "s") as store:
        jobs = [("p", g.objects), ("p", g.objects), ("q", g.objects)]
        results, txns = _put_while_a_commit_holds_the_lock(store, jobs)
        assert txns == 1  # no write had to be rolled back and redone alone
        assert sorted((r.stored, r.duplicates) for r in results) == [
            (0, len(g.objects)),
            (len(g.objects), 0),
            (len(g.objects), 0),
        ]
        assert store.stats().blobs == len(g.objects)
        store.delete_project("p")  # q's references keep every byte string alive
        assert dict(store.iter_with_children("q", g.root_id)) == dict(g.objects)
        assert store.verify().ok


def test_a_write_failing_in_a_group_fails_alone(tmp_path, monkeypatch):
    """The group's transaction rolls back; the others are committed without it, and it
    stores nothing."""
    g = graphgen.generate(300, seed=33)
    real = LMDBBackend._apply

    def apply(self, txn, staged, *args):
        if staged.project == "bad":
            raise OSError("disk gone")
        return real(self, txn, staged, *args)

    monkeypatch.setattr(LMDBBackend, "_apply", apply)
    with objstore.open(tmp_path / "s") as store:
        jobs = [("good", g.objects[::2]), ("bad", g.objects), ("good", g.objects[1::2])]
        results, txns = _put_while_a_commit_holds_the_lock(store, jobs)
        assert isinstance(results[1], OSError)
        assert results[0].stored + results[2].stored == len(g.objects)
        assert txns == 2
        assert store.count("bad") == 0
        assert dict(store.iter_with_children("good", g.root_id)) == dict(g.objects)
        assert store.verify().ok


class _Interrupt(BaseException):
    pass


def test_writes_in_an_interrupted_group_are_committed_by_their_own_threads(tmp_path, monkeypatch):
    """A commit interrupted (KeyboardInterrupt, say) fails its own write only: the writes it
    had taken from the queue are put back, and their threads commit them."""
    g = graphgen.generate(300, seed=34)
    real = LMDBBackend._commit_group
    interrupted: list[int] = []

    def commit_group(self, group):
        if not interrupted:
            interrupted.append(len(group))
            raise _Interrupt
        return real(self, group)

    monkeypatch.setattr(LMDBBackend, "_commit_group", commit_group)
    with objstore.open(tmp_path / "s") as store:
        jobs = [(f"p{k}", g.objects) for k in range(3)]
        results, _ = _put_while_a_commit_holds_the_lock(store, jobs)
        assert interrupted == [3]
        failed = [k for k, r in enumerate(results) if isinstance(r, _Interrupt)]
        assert len(failed) == 1
        for k, result in enumerate(results):
            expected = 0 if k in failed else len(g.objects)
            assert store.count(f"p{k}") == expected
            if k not in failed:
                assert result.stored == len(g.objects)
        assert store.verify().ok


def _slow_staging(monkeypatch, project, release):
    """Make staging a batch for ``project`` signal, then wait for ``release``; return the
    event it sets once it has begun."""
    real = LMDBBackend._stage
    begun = threading.Event()

    def stage(self, name, records, helper=None):
        if name == project:
            begun.set()
            release.wait(60)
        return real(self, name, records, helper)

    monkeypatch.setattr(LMDBBackend, "_stage", stage)
    return begun


def test_a_commit_waits_for_a_writer_still_staging(tmp_path, monkeypatch):
    """Writers released together by one commit stage again at once: the first to queue
    waits (about one sync) for the others, so they share a transaction instead of the
    first going alone."""
    release = threading.Event()
    begun = _slow_staging(monkeypatch, "late", release)
    g = graphgen.generate(200, seed=36)
    with objstore.open(tmp_path / "s") as store:
        backend = store.backend
        assert isinstance(backend, LMDBBackend)
        env = backend._env
        before = env.info()["last_txnid"]
        late = threading.Thread(target=store.put, args=("late", [d for _, d in g.objects]))
        late.start()
        assert begun.wait(30)
        backend._sync_seconds = 10.0  # as after a slow sync: wait the most (STAGER_WAIT)
        monkeypatch.setattr(lmdb_backend, "STAGER_WAIT", 30.0)
        threading.Timer(0.2, release.set).start()  # the late one queues while the other waits
        store.put("early", [b'{"id":"e"}'])
        late.join(60)
        assert env.info()["last_txnid"] - before == 1
        assert store.count("late") == len(g.objects) and store.count("early") == 1


def test_the_wait_for_writers_staging_is_bounded(tmp_path, monkeypatch):
    release = threading.Event()
    begun = _slow_staging(monkeypatch, "stuck", release)
    with objstore.open(tmp_path / "s") as store:
        backend = store.backend
        assert isinstance(backend, LMDBBackend)
        stuck = threading.Thread(target=store.put, args=("stuck", [b'{"id":"s"}']))
        stuck.start()
        safety = threading.Timer(20, release.set)  # ends the test should the wait not end
        safety.start()
        try:
            assert begun.wait(30)
            backend._sync_seconds = 1e9  # as after an endless sync: STAGER_WAIT still bounds it
            assert store.put("other", [b'{"id":"o"}']).stored == 1
            assert not release.is_set()  # it returned while the other was still staging
            assert store.count("stuck") == 0
        finally:
            release.set()
            safety.cancel()
            stuck.join(60)
        assert store.count("stuck") == 1


def test_put_many_gathers_batches_while_commits_wait_on_the_disk(tmp_path, monkeypatch):
    """A single writer whose commits take longer to sync than to write stages one more
    batch while a commit syncs and commits the two in one transaction: results still come
    per batch, in order, and an id written twice keeps its first bytes."""
    real = LMDBBackend._write

    @contextlib.contextmanager
    def slow_sync(self):
        with real(self) as txn:
            yield txn
        threading.Event().wait(0.2)  # the commit's sync, as on a big store's disk

    monkeypatch.setattr(LMDBBackend, "_write", slow_sync)
    g = graphgen.generate(1200, seed=35)
    parts = [g.objects[k : k + 150] for k in range(0, len(g.objects), 150)]
    first = json.loads(parts[1][0][1])
    twice = json.dumps({**first, "again": True}).encode()  # the same id, other bytes
    batches = [[d for _, d in part] for part in parts] + [[twice]]
    with objstore.open(tmp_path / "s") as store:
        env = store.backend._env  # type: ignore[attr-defined]
        store.put("warm", [b'{"id":"w"}'])  # one slow commit: the store is disk-bound now
        before = env.info()["last_txnid"]
        results = list(store.iter_put("p", batches))
        txns = env.info()["last_txnid"] - before
        assert [r.stored for r in results] == [len(part) for part in parts] + [0]
        assert results[-1].conflicts == 1
        assert txns < len(parts), txns  # (the last batch, all conflict, writes nothing)
        assert store.get("p", first["id"]) == parts[1][0][1]
        assert dict(store.iter_with_children("p", g.root_id)) == dict(g.objects)
        assert store.verify().ok


def test_dictionary_beats_plain_zstd(tmp_path):
    g = graphgen.generate(6000, seed=2)
    small = [(i, d) for i, d in g.objects if len(d) < 2000]
    ratios = {}
    for name, threshold in (("plain", 10**9), ("dict", 500)):
        with objstore.open(tmp_path / name, dictionary_threshold=threshold) as store:
            for batch in graphgen.batches(small, max_objects=2000):
                store.put("p", batch)
            ratios[name] = store.stats().ratio
    assert ratios["dict"] < ratios["plain"] * 0.8, ratios


def test_corrupt_compressed_frame_raises(tmp_path):
    with objstore.open(tmp_path / "s") as store:
        big = json.dumps({"id": "big", "v": ["same"] * 500}).encode()
        store.put("p", b"[" + big + b"]")
        backend = store.backend
        assert isinstance(backend, LMDBBackend)
        digest = digest_of(big)
        blob = frame(backend, digest)
        replace_frame(backend, digest, blob[:5] + b"garbage" + blob[12:])
        with pytest.raises(errors.CorruptObject):
            store.get("p", "big")
        assert not store.verify().ok


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


def test_damaged_tables_are_store_corrupt_and_verify_reports_them(tmp_path):
    """Pages overwritten inside a store (its headers intact): verify reports where it had to
    stop instead of raising, and reads raise objstore errors, not bare lmdb ones."""
    ids = [f"o{b}-{n}" for b in range(10) for n in range(500)]
    with objstore.open(tmp_path / "s", writemap=False) as store:
        for b in range(10):
            store.put("p", [json.dumps({"id": i, "pad": i * 40}).encode() for i in ids[b::10]])
    data = tmp_path / "s" / "data.mdb"
    rng = random.Random(1)
    with data.open("r+b") as f:
        for page in rng.sample(range(2, data.stat().st_size // 4096), 40):
            f.seek(page * 4096 + 16)
            f.write(rng.randbytes(4000))
    with objstore.open(tmp_path / "s", readonly=True) as store:
        report = store.verify()
        assert not report.ok
        assert any(
            p.startswith("stopped: ") and "is damaged or not an objstore store" in p
            for p in report.problems
        )
        with pytest.raises(errors.StoreCorrupt):
            store.count("p")
        for read in (
            lambda: list(store.get_many("p", ids)),
            lambda: [store.get("p", i) for i in ids],
            lambda: store.has("p", ids),
            lambda: store.closure("p", ids[0]),
            store.stats,
        ):
            # StoreCorrupt, or CorruptObject for a damaged frame; a bare lmdb.Error fails
            with contextlib.suppress(errors.ObjstoreError):
                read()


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


def test_empty_stored_value_is_reported_as_corrupt_in_batch_reads(tmp_path):
    with objstore.open(tmp_path / "s") as store:
        store.put("p", b'[{"id":"a","v":1},{"id":"b","v":2}]')
        backend = store.backend
        assert isinstance(backend, LMDBBackend)
        replace_frame(backend, digest_of(b'{"id":"a","v":1}'), b"")
        with pytest.raises(errors.CorruptObject):
            list(store.get_many("p", ["a", "b"]))
        with pytest.raises(errors.CorruptObject):
            store.get("p", "a")


def _between_phases(monkeypatch, backend: LMDBBackend, other_write) -> None:
    """Run ``other_write`` once, after the next write's read phase and before its transaction
    (where another thread or process could commit)."""
    compress = backend._codec.compress_frames
    pending = [other_write]

    def hooked(items, dict_id=0, threads=None):
        if pending:
            pending.pop()()
        return compress(items, dict_id, threads)

    monkeypatch.setattr(backend._codec, "compress_frames", hooked)


def test_bytes_stored_by_a_racing_writer_are_shared_not_stored_twice(tmp_path, monkeypatch):
    x, y = b'{"id":"x","v":1}', b'{"id":"y","v":2}'
    with objstore.open(tmp_path / "s") as store:
        backend = store.backend
        assert isinstance(backend, LMDBBackend)
        _between_phases(monkeypatch, backend, lambda: store.put("p2", [x]))
        res = store.put("p1", [x, y])
        assert (res.stored, res.new_blobs) == (2, 1)
        assert store.stats().blobs == 2
        store.delete_project("p1")
        assert store.get("p2", "x") == x
        assert store.verify().ok
        store.delete_project("p2")
        assert _entries(backend, "packs") == 0


def test_an_id_taken_by_a_racing_writer_keeps_its_first_body(tmp_path, monkeypatch):
    first, later, y = b'{"id":"x","v":0}', b'{"id":"x","v":1}', b'{"id":"y"}'
    with objstore.open(tmp_path / "s") as store:
        backend = store.backend
        assert isinstance(backend, LMDBBackend)
        _between_phases(monkeypatch, backend, lambda: store.put("p", [first]))
        res = store.put("p", [later, y])
        assert (res.stored, res.duplicates, res.conflicts) == (1, 0, 1)
        assert store.get("p", "x") == first
        assert store.stats().blobs == 2
        assert store.verify().ok


def test_a_delete_between_phases_makes_the_write_read_its_rows_again(tmp_path, monkeypatch):
    x, y = b'{"id":"x","v":1}', b'{"id":"y","v":2}'
    with objstore.open(tmp_path / "s") as store:
        backend = store.backend
        assert isinstance(backend, LMDBBackend)
        store.put("p2", [x])
        # the read phase sees x stored; the delete (a commit no write logged) frees it
        _between_phases(monkeypatch, backend, lambda: store.delete_project("p2"))
        res = store.put("p1", [x, y])
        assert (res.stored, res.new_blobs) == (2, 2)
        assert store.get("p1", "x") == x
        assert store.verify().ok
        store.delete_project("p1")
        assert (_entries(backend, "packs"), _entries(backend, "index")) == (0, 0)


def test_a_compaction_between_phases_makes_the_write_read_its_rows_again(tmp_path, monkeypatch):
    """A compaction moves a byte string still in use to a new pack: a write whose read phase
    saw it in the old one must read its row again, or its object row points into a pack the
    compaction deleted."""
    x, z = b'{"id":"x","v":1}', b'{"id":"z","v":3}'
    dead = [json.dumps({"id": f"d{n}", "pad": "q" * 500}).encode() for n in range(20)]
    with objstore.open(tmp_path / "s") as store:
        backend = store.backend
        assert isinstance(backend, LMDBBackend)
        store.put("a", [x, *dead])  # one pack
        store.put("keep", [x])
        store.delete_project("a")  # x lives on in a pack that is mostly dead frames
        compacted: list[objstore.CompactReport] = []
        _between_phases(monkeypatch, backend, lambda: compacted.append(store.compact(0.5)))
        res = store.put("p1", [x, z])
        assert (res.stored, res.new_blobs) == (2, 1)
        assert compacted[0].frames_moved == 1  # x, into a new pack, between the phases
        assert store.get("p1", "x") == x
        assert dict(store.get_many("p1", ["x", "z"])) == {"x": x, "z": z}
        assert store.verify().ok


def test_a_commit_that_changed_nothing_does_not_hide_another_process_commit(tmp_path, monkeypatch):
    """LMDB gives a write that changed nothing no transaction id of its own: the next commit,
    here another process's, takes the one it had. A write whose read phase came before both
    must still read the rows that process changed (it once trusted the log, and the shared
    byte string's refcount came out one short: a delete would then free bytes in use)."""
    x = b'{"id":"x","v":1}'
    path = tmp_path / "s"
    other = f"import objstore; objstore.open({str(path)!r}).put('r', [{x!r}])"

    def meanwhile() -> None:
        assert store.put("p", [x]).duplicates == 1  # changes nothing
        subprocess.run([sys.executable, "-c", other], check=True, timeout=60)

    with objstore.open(path) as store:
        backend = store.backend
        assert isinstance(backend, LMDBBackend)
        store.put("p", [x])
        _between_phases(monkeypatch, backend, meanwhile)
        assert store.put("q", [x]).stored == 1
        assert store.verify().ok
        for project in ("p", "r"):
            store.delete_project(project)
        assert store.get("q", "x") == x
        assert store.verify().ok


def test_pipelined_batches_sharing_bytes_count_every_reference(tmp_path, monkeypatch):
    """put_many reads batch N+2's stored rows before N and N+1 commit: rows those commits
    changed are read again, the rest trusted, and every refcount comes out exact."""
    g = graphgen.generate(3000, seed=4)
    objs = [d for _, d in g.objects]
    overlapping = [objs[i : i + 300] for i in range(0, len(objs), 200)]  # 100 shared
    with (
        objstore.open(tmp_path / "one", dictionary_threshold=500) as one,
        objstore.open(tmp_path / "many", dictionary_threshold=500) as many,
    ):
        backend = many.backend
        assert isinstance(backend, LMDBBackend)
        touched: list[set[bytes] | None] = []
        real = backend._touched_since

        def spy(seen: int, now: int) -> set[bytes] | None:
            touched.append(real(seen, now))
            return touched[-1]

        monkeypatch.setattr(backend, "_touched_since", spy)
        for store in (one, many):
            for batch in overlapping[1::3]:
                store.put("q", batch)
        expected = [one.put("p", batch) for batch in overlapping]
        assert list(many.iter_put("p", overlapping)) == expected
        assert any(touched)  # the log served: some rows were read again, not all
        assert dict(many.get_many("p", [i for i, _ in g.objects])) == dict(g.objects)
        got, want = many.stats(), one.stats()
        assert (got.objects, got.blobs, got.raw_bytes, got.stored_bytes) == (
            want.objects,
            want.blobs,
            want.raw_bytes,
            want.stored_bytes,
        )
        assert many.verify().ok
        many.delete_project("q")
        assert many.verify().ok
        many.delete_project("p")
        assert (_entries(backend, "packs"), _entries(backend, "index")) == (0, 0)


def test_put_many_beside_another_writing_thread_keeps_counts_exact(tmp_path):
    g = graphgen.generate(2000, seed=5)
    objs = [d for _, d in g.objects]
    with objstore.open(tmp_path / "s", dictionary_threshold=500) as store:
        other = threading.Thread(
            target=lambda: [store.put("r", objs[i : i + 150]) for i in range(0, len(objs), 150)]
        )
        other.start()
        res = store.put_many("p", [objs[i : i + 250] for i in range(0, len(objs), 200)])
        other.join()
        assert res.stored == len(objs)
        for project in ("p", "r"):
            assert dict(store.get_many(project, [i for i, _ in g.objects])) == dict(g.objects)
        assert store.verify().ok
        store.delete_project("p")
        store.delete_project("r")
        assert _entries(store.backend, "packs") == 0  # type: ignore[arg-type]


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
        assert asked and all(length >= lmdb_backend.RESERVE_MARGIN for _, length in asked)
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


def test_put_many_on_a_store_closed_midway_raises_and_keeps_what_committed(tmp_path):
    store = objstore.open(tmp_path / "s")

    def batches():
        yield b'[{"id":"a"}]'
        yield b'[{"id":"b"}]'
        store.close()  # batch a is committing on a helper: close waits for it
        yield b'[{"id":"c"}]'

    with pytest.raises(errors.StoreClosed):
        store.put_many("p", batches())
    with objstore.open(tmp_path / "s") as reopened:
        assert reopened.has("p", ["a", "b", "c"]) == {"a": True, "b": False, "c": False}
        assert reopened.verify().ok


def _entries(backend: LMDBBackend, db_name: str) -> int:
    with backend._read() as txn:
        return int(txn.stat(getattr(backend, f"_{db_name}"))["entries"])


def test_packs_are_freed_when_their_last_object_goes(tmp_path):
    g = graphgen.generate(400, seed=9)
    with objstore.open(tmp_path / "s") as store:
        backend = store.backend
        assert isinstance(backend, LMDBBackend)
        store.put("p1", b"[" + b",".join(d for _, d in g.objects) + b"]")
        store.put("p2", b"[" + b",".join(d for _, d in g.objects[:100]) + b"]")  # all shared
        packs_before = _entries(backend, "packs")
        assert packs_before > 1
        store.delete_project("p1")
        assert dict(store.get_many("p2", [i for i, _ in g.objects[:100]])) == dict(g.objects[:100])
        assert store.get("p1", g.objects[0][0]) is None
        assert 0 < _entries(backend, "packs") < packs_before
        assert store.verify().ok
        store.delete_project("p2")
        assert _entries(backend, "packs") == _entries(backend, "packrefs") == 0
        stats = store.stats()
        assert (stats.objects, stats.blobs, stats.raw_bytes, stats.stored_bytes) == (0, 0, 0, 0)


def test_verify_reports_a_wrong_pack_count(tmp_path):
    with objstore.open(tmp_path / "s") as store:
        store.put("p", b'[{"id":"a","v":1},{"id":"b","v":2}]')
        backend = store.backend
        assert isinstance(backend, LMDBBackend)
        raw_put(backend, "packrefs", U64.pack(1), (5).to_bytes(4, "big"))
        report = store.verify()
        assert any("pack 1: counted 5 live entries, found 2" in p for p in report.problems)


def test_recount_repairs_wrong_reference_counts_and_frees_unused_bytes(tmp_path):
    a, b, c = b'{"id":"a","v":1}', b'{"id":"b","v":2}', b'{"id":"c","v":3}'
    with objstore.open(tmp_path / "s") as store:
        store.put("p", [a, b, c])
        store.put("q", [a])
        backend = store.backend
        assert isinstance(backend, LMDBBackend)
        rows = {}
        with backend._read() as txn:
            for data in (a, b):
                rows[data] = txn.get(digest_of(data), db=backend._index)
        ref = REF
        for data, wrong in ((a, 1), (b, 3)):  # a one short (what the bug left), b too many
            _, raw_len = ref.unpack_from(rows[data])
            head = ref.pack(wrong, raw_len) + rows[data][ref.size :]
            raw_put(backend, "index", digest_of(data), head)
        with backend._write() as txn:  # c's only object row lost: its bytes are unused
            assert txn.delete(b"\x00\x00\x00\x01c", db=backend._objects)
        report = store.verify()
        assert len(report.problems) == 3 and report.miscounted == 3
        assert any("refcount 1 but 2 objects" in p for p in report.problems)
        assert store.recount() == 3
        assert store.verify().ok
        assert store.stats().blobs == 2
        assert store.recount() == 0
        store.delete_project("p")  # with a's count one short this freed bytes q still uses
        assert store.get("q", "a") == a
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


def test_a_malformed_object_row_is_reported_as_corrupt(tmp_path):
    with objstore.open(tmp_path / "s") as store:
        store.put("p", b'[{"id":"a","v":1},{"id":"b","v":2}]')
        backend = store.backend
        assert isinstance(backend, LMDBBackend)
        raw_put(backend, "objects", b"\x00\x00\x00\x01a", b"too short")
        with pytest.raises(errors.CorruptObject, match="'a'"):
            store.get("p", "a")
        with pytest.raises(errors.CorruptObject, match="'a'"):
            list(store.get_many("p", ["b", "a"]))
        assert store.get("p", "b") == b'{"id":"b","v":2}'


def test_object_rows_of_wrong_sizes_that_add_up_are_still_caught(tmp_path):
    """Bulk reads unpack rows joined end to end; a short row next to a long one must not
    shift the others into a plausible read."""
    with objstore.open(tmp_path / "s") as store:
        store.put("p", b'[{"id":"a","v":1},{"id":"b","v":2}]')
        backend = store.backend
        assert isinstance(backend, LMDBBackend)
        with backend._read() as txn:
            row_a = bytes(txn.get(b"\x00\x00\x00\x01a", db=backend._objects))
            row_b = bytes(txn.get(b"\x00\x00\x00\x01b", db=backend._objects))
        raw_put(backend, "objects", b"\x00\x00\x00\x01a", row_a[:-1])
        raw_put(backend, "objects", b"\x00\x00\x00\x01b", row_b + b"\x00")
        with pytest.raises(errors.CorruptObject, match="'a'"):
            list(store.get_many("p", ["a", "b"]))


@contextlib.contextmanager
def _dictionary_store(tmp_path, seed):
    """A store whose objects are dictionary frames (what bulk reads decode on their fast path)."""
    g = graphgen.generate(3000, seed=seed)
    with objstore.open(tmp_path / "s", dictionary_threshold=500) as store:
        store.put("p", b"[" + b",".join(d for _, d in g.objects) + b"]")
        backend = store.backend
        assert isinstance(backend, LMDBBackend)
        yield store, backend, g


def test_bulk_reads_name_a_damaged_dictionary_frame(tmp_path):
    with _dictionary_store(tmp_path, 5) as (store, backend, g):
        victim_id, victim = g.objects[len(g.objects) // 2]
        digest = digest_of(victim)
        assert frame(backend, digest)[0] == ZSTD_DICT
        corrupt(backend, digest)
        with pytest.raises(errors.CorruptObject, match=victim_id):
            list(store.iter_with_children("p", g.root_id))
        with pytest.raises(errors.CorruptObject, match=victim_id):
            list(store.get_many("p", [i for i, _ in g.objects]))
        others = {i: d for i, d in g.objects if i != victim_id}
        assert dict(store.get_many("p", list(others))) == others


def test_bulk_reads_find_a_missing_pack(tmp_path):
    with _dictionary_store(tmp_path, 6) as (store, backend, g):
        with backend._write() as txn:
            txn.delete(U64.pack(2), db=backend._packs)
        with pytest.raises(errors.CorruptObject, match="pack 2 is missing"):
            list(store.iter_with_children("p", g.root_id))


def test_bulk_reads_refuse_a_valid_frame_of_other_bytes(tmp_path):
    with _dictionary_store(tmp_path, 7) as (store, backend, g):
        (victim_id, victim), (_, other) = g.objects[100], g.objects[101]
        swapped = frame(backend, digest_of(other))  # decodes cleanly, to the wrong bytes
        assert swapped[0] == ZSTD_DICT
        replace_frame(backend, digest_of(victim), swapped)
        with pytest.raises(errors.CorruptObject, match="checksum mismatch") as info:
            list(store.iter_with_children("p", g.root_id))
        assert victim_id in str(info.value)


def _spy(monkeypatch, owner, name):
    """Record each call of ``owner.name`` and let it run."""
    calls = []
    real = getattr(owner, name)

    def spy(*args):
        calls.append(args)
        return real(*args)

    monkeypatch.setattr(owner, name, spy)
    return calls


def test_bulk_reads_choose_helper_copies_or_views_by_where_objects_lie(tmp_path, monkeypatch):
    with _dictionary_store(tmp_path, 8) as (store, backend, g):
        helped = _spy(monkeypatch, backend._codec, "decompress_segments")
        viewed = _spy(monkeypatch, backend, "_views_of")
        near = g.objects[:400]  # stored together: a few packs, a chunk worth a hand-off
        assert dict(store.get_many("p", [i for i, _ in near])) == dict(near)
        assert (len(helped), len(viewed)) == (1, 0)  # the helper gets copied packs
        small = g.objects[:100]  # near, but too few to hand off: decoded here from copies
        assert dict(store.get_many("p", [i for i, _ in small])) == dict(small)
        assert (len(helped), len(viewed)) == (1, 0)
        scattered = g.objects[::150]  # about one object a pack: decoded here, through views
        assert dict(store.get_many("p", [i for i, _ in scattered])) == dict(scattered)
        assert (len(helped), len(viewed)) == (1, 1)


def test_a_consumer_can_grow_the_map_between_chunks_of_a_stream(tmp_path):
    """A chunk read ahead holds no transaction: a write that must grow the map (which waits
    for every reader of this process) goes through while the stream is suspended."""
    g = graphgen.generate(3000, seed=9)
    rng = random.Random(9)
    big = [_padded(f"big{i}", rng) for i in range(3000)]  # about 3 MB, poorly compressible
    with objstore.open(tmp_path / "s", dictionary_threshold=500, map_size=4 << 20) as store:
        store.put("p", b"[" + b",".join(d for _, d in g.objects) + b"]")
        size = _map_size(store)
        stream = store.iter_with_children("p", g.root_id)
        got = [next(stream) for _ in range(1500)]  # into the first chunk; the next is read
        writer = threading.Thread(target=store.put, args=("q", big), daemon=True)
        writer.start()
        writer.join(timeout=30)
        assert not writer.is_alive(), "the write waited on the suspended stream"
        assert _map_size(store) > size
        got += list(stream)
        assert got == _children_in_order(g)
        assert store.count("q") == len(big)


def test_bulk_reads_of_only_absent_ids_in_a_dictionary_store_return_nothing(tmp_path):
    with _dictionary_store(tmp_path, 11) as (store, _, g):
        assert list(store.get_many("p", [f"absent{i}" for i in range(600)])) == []
        present = g.objects[:300]
        asked = [i for i, _ in present] + [f"absent{i}" for i in range(300)]
        assert dict(store.get_many("p", asked)) == dict(present)


def test_bulk_reads_name_an_object_whose_row_points_outside_its_pack(tmp_path):
    with _dictionary_store(tmp_path, 12) as (store, backend, g):
        victim_id = g.objects[50][0]
        with backend._write() as txn:
            key = b"\x00\x00\x00\x01" + victim_id.encode()
            row = bytes(txn.get(key, db=backend._objects))
            number = LOC.unpack_from(row, 16)[0]
            txn.put(key, row[:16] + LOC.pack(number, 1 << 20, 100), db=backend._objects)
        with pytest.raises(errors.CorruptObject, match=victim_id):
            list(store.get_many("p", [i for i, _ in g.objects[:400]]))


def test_objects_stored_before_the_dictionary_stream_through_the_fallback(tmp_path):
    g = graphgen.generate(3000, seed=10)
    with objstore.open(tmp_path / "s", dictionary_threshold=1500) as store:
        store.put("p", b"[" + b",".join(d for _, d in g.objects[:1000]) + b"]")  # no dict yet
        store.put("p", b"[" + b",".join(d for _, d in g.objects[1000:]) + b"]")
        assert list(store.iter_with_children("p", g.root_id)) == _children_in_order(g)


def _mesh(object_id: str, raw_bytes: int) -> bytes:
    """An object of about ``raw_bytes`` that compresses about 2x (hex of random bytes)."""
    return json.dumps({"id": object_id, "vertices": os.urandom(raw_bytes // 2).hex()}).encode()


def _meshes_under_a_root(store, count: int, raw_bytes: int) -> list[tuple[str, bytes]]:
    meshes = [(f"mesh{i}", _mesh(f"mesh{i}", raw_bytes)) for i in range(count)]
    for start in range(0, count, 20):
        store.put("p", [d for _, d in meshes[start : start + 20]])
    root = {"id": "root", "__closure": {i: 1 for i, _ in meshes} | {"ghost": 1}}
    store.put("p", [json.dumps(root).encode()])
    return meshes


def test_a_chunk_of_big_objects_is_read_in_parts_within_the_byte_budget(tmp_path, monkeypatch):
    monkeypatch.setattr(lmdb_backend, "CHUNK_STORED_BYTES", 60_000)
    with objstore.open(tmp_path / "s", dictionary_threshold=10**9) as store:
        meshes = _meshes_under_a_root(store, 40, 50_000)  # ~25 KB stored each: 2 a part
        backend = store.backend
        ids = [i for i, _ in meshes]
        lists = list(backend.read_chunks("p", [ids[:25], ["absent", *ids[25:]]]))
        assert [pair for pairs in lists for pair in pairs] == meshes
        assert [len(pairs) for pairs in lists] == [2] * 12 + [1] + [2] * 7 + [1]
        assert backend.read_chunk("p", ids) == meshes  # the list API joins the parts
        stream = store.iter_with_children("p", "root")
        assert list(stream)[1:] == meshes
        assert (stream.found, stream.missing) == (40, 1)


def test_a_children_stream_of_big_objects_holds_a_budget_not_a_chunk(tmp_path):
    """200 objects of 400 KB are one 2,048-id chunk: read whole, 80 MB would be decoded at
    once; within the 4 MB stored budget (about 8 MB decoded) only a part or two is."""
    with objstore.open(tmp_path / "s") as store:
        meshes = _meshes_under_a_root(store, 200, 400_000)
        tracemalloc.start()
        try:
            stream = store.iter_with_children("p", "root")
            next(stream)
            base = tracemalloc.get_traced_memory()[0]
            tracemalloc.reset_peak()
            count = 0
            for object_id, data in stream:
                assert data == meshes[count][1], object_id
                count += 1
            peak = tracemalloc.get_traced_memory()[1] - base
        finally:
            tracemalloc.stop()
        assert count == 200
        assert peak < 30_000_000, f"a stream of 80 MB held {peak / 1e6:.0f} MB at once"


def _children_in_order(g):
    by_id = dict(g.objects)
    closure = json.loads(by_id[g.root_id])["__closure"]
    return [(g.root_id, by_id[g.root_id])] + [(i, by_id[i]) for i in closure if i in by_id]


def test_views_are_only_taken_on_the_same_snapshot(tmp_path):
    with objstore.open(tmp_path / "s") as store:
        store.put("p", [b'{"id":"a"}'])
        backend = store.backend
        assert isinstance(backend, LMDBBackend)
        txn = backend._begin_read()
        try:
            views = backend._views_of(txn)
            assert views is not None and views.id() == txn.id()
            views.abort()
            store.put("p", [b'{"id":"b"}'])  # a commit after ``txn`` began
            assert backend._views_of(txn) is None
        finally:
            backend._end_read(txn)


def _padded(object_id: str, rng: random.Random, **extra: object) -> bytes:
    """An object of about 1 KB that compresses poorly, so a few hundred fill several packs."""
    body = {"id": object_id, "pad": rng.randbytes(400).hex(), **extra}
    return json.dumps(body).encode()


def test_compact_gives_back_what_a_deleted_project_left_and_moves_closures(tmp_path):
    rng = random.Random(5)
    kids = [_padded(f"kid{i}", rng) for i in range(2)]
    parent = _padded("parent", rng, __closure={"kid0": 1, "kid1": 2})
    filler = [_padded(f"fill{i}", rng) for i in range(300)]
    shared = [*kids, parent]
    with objstore.open(tmp_path / "s") as store:
        store.put("a", b"[" + b",".join(filler[:150] + shared + filler[150:]) + b"]")
        own = [_padded(f"own{i}", rng) for i in range(20)]
        store.put("b", b"[" + b",".join(own + shared) + b"]")  # shares a's frames
        store.delete_project("a")
        before = store.stats()
        report = store.compact()
        assert report.packs_rewritten == 1  # the one pack of a's holding the shared frames
        assert report.frames_moved == 3 and report.packs_written == 1
        assert report.bytes_freed > 40_000  # most of a 64 KB pack was a's alone
        assert store.stats().stored_bytes == before.stored_bytes - report.bytes_freed
        assert store.compact() == objstore.CompactReport()  # nothing left to do
        assert store.verify().ok  # among others: no pack left that nothing is in
    with objstore.open(tmp_path / "s") as store:
        assert store.verify().ok
        assert list(store.iter_with_children("b", "parent")) == [
            ("parent", parent),
            ("kid0", kids[0]),
            ("kid1", kids[1]),
        ]
        assert store.closure("b", "parent") == {"kid0": 1, "kid1": 2}
        ids = [f"own{i}" for i in range(20)] + ["kid0", "kid1", "parent"]
        assert [d for _, d in store.get_many("b", ids)] == own + shared
        assert store.get("a", "fill0") is None


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_compact_after_random_deletes_reads_like_the_reference_model(tmp_path, seed):
    rng = random.Random(seed)
    pool = [_padded(f"o{i}", rng) for i in range(400)]
    ops: list[tuple[str, list[bytes]]] = []
    for n in range(6):
        picked = rng.sample(pool, rng.randint(50, 200))
        ops.append((f"p{n}", picked))
    doomed = rng.sample([name for name, _ in ops], 3)
    model = objstore.open_memory()
    with objstore.open(tmp_path / "s") as store:
        for target in (store, model):
            for name, objs in ops:
                target.put(name, b"[" + b",".join(objs) + b"]")
            for name in doomed:
                target.delete_project(name)
        report = store.compact(min_dead=0.1)
        assert report.packs_rewritten > 0
        assert store.verify().ok
        for name, objs in ops:
            ids = [json.loads(o)["id"] for o in objs]
            assert list(store.get_many(name, ids)) == list(model.get_many(name, ids))
        assert store.stats().objects == model.stats().objects


@pytest.mark.parametrize("group", [lmdb_backend.COMPACT_GROUP, 2])
def test_a_dry_run_reports_the_compaction_that_follows_and_changes_nothing(
    tmp_path, monkeypatch, group
):
    """With packs rewritten 256 at a time and 2 at a time (several groups, each packing
    its frames anew), the dry run's report is the compaction's own, and it writes nothing:
    even a store opened read-only takes one."""
    monkeypatch.setattr(lmdb_backend, "COMPACT_GROUP", group)
    rng = random.Random(11)
    pool = [_padded(f"o{i}", rng) for i in range(400)]
    with objstore.open(tmp_path / "s") as store:
        for n in range(6):
            store.put(f"p{n}", b"[" + b",".join(rng.sample(pool, 150)) + b"]")
        for n in (1, 3, 4):
            store.delete_project(f"p{n}")
        before = store.stats()
    with objstore.open(tmp_path / "s", readonly=True) as store:
        planned = store.compact(0.1, dry_run=True)
    with objstore.open(tmp_path / "s") as store:
        assert store.stats() == before
        assert planned.packs_rewritten > 2  # with groups of 2: more than one group
        assert store.compact(0.5, dry_run=True).packs_rewritten < planned.packs_rewritten
        assert store.compact(0.1) == planned
        assert store.stats().stored_bytes == before.stored_bytes - planned.bytes_freed
        assert store.compact(0.1, dry_run=True) == objstore.CompactReport()
        assert store.verify().ok


def test_readers_see_every_object_byte_exact_while_compaction_runs(tmp_path):
    import threading

    rng = random.Random(8)
    objs = [_padded(f"o{i}", rng) for i in range(600)]
    kept = objs[::7]
    with objstore.open(tmp_path / "s") as store:
        store.put("a", b"[" + b",".join(objs) + b"]")
        store.put("b", b"[" + b",".join(kept) + b"]")
        store.delete_project("a")
        ids = [json.loads(o)["id"] for o in kept]
        expected = list(zip(ids, kept, strict=True))
        stop = threading.Event()
        rounds: list[bool] = []

        def read() -> None:
            while not stop.is_set() and len(rounds) < 10_000:
                rounds.append(list(store.get_many("b", ids)) == expected)

        reader = threading.Thread(target=read)
        reader.start()
        try:
            report = store.compact()
        finally:
            stop.set()
            reader.join(timeout=30)
        assert report.frames_moved == len(kept)
        assert rounds and all(rounds)
        assert list(store.get_many("b", ids)) == expected


def test_verify_reports_a_pack_nothing_is_in(tmp_path):
    with objstore.open(tmp_path / "s") as store:
        store.put("p", b'[{"id":"a"}]')
        raw_put(store.backend, "packs", U64.pack(999), b"stray")
        assert "pack 999: stored but no object is in it" in store.verify().problems


def test_compact_refuses_a_threshold_outside_0_to_1(tmp_path):
    with objstore.open(tmp_path / "s") as store, pytest.raises(ValueError, match="min_dead"):
        store.compact(min_dead=0)
