"""What a write puts: dictionary training and compression, and writes racing other writers
between their two phases."""

from __future__ import annotations

import json
import subprocess
import sys
import threading

import pytest

import objstore
from objstore import codec, compression, graphgen
from objstore.codec import digest_of
from objstore.compression import ZSTD_DICT
from objstore.engine.layout import pack_frames
from objstore.engine.lmdb import LMDBBackend, writes

from ..damage import frame
from .helpers import entries


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

        monkeypatch.setattr(writes, "train_dictionary", spy)
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

    monkeypatch.setattr(writes, "train_dictionary", counted)
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

    monkeypatch.setattr(writes, "pack_frames", fail_once)
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
        assert entries(backend, "packs") == 0


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
        assert (entries(backend, "packs"), entries(backend, "index")) == (0, 0)


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
        assert (entries(backend, "packs"), entries(backend, "index")) == (0, 0)


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
        assert entries(store.backend, "packs") == 0  # type: ignore[arg-type]
