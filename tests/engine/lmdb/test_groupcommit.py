"""Group commit and ``put_many``'s batches in flight."""

from __future__ import annotations

import contextlib
import json
import threading

import pytest

import objstore
from objstore import errors, graphgen
from objstore.engine.lmdb import LMDBBackend, groupcommit


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
    monkeypatch.setattr(groupcommit, "GROUP_BYTES", 1)
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
        monkeypatch.setattr(groupcommit, "STAGER_WAIT", 30.0)
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
