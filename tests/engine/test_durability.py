"""Crash safety and multi-process readers, with real processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import objstore
from objstore.engine.lmdb import LMDBBackend

BATCH = 300

WRITER = textwrap.dedent(
    """
    import json, sys, objstore
    store = objstore.open(sys.argv[1])
    n = int(sys.argv[2])
    BATCH = int(sys.argv[3])
    for i in range(n):
        objs = [json.dumps({"id": f"b{i}-{j}", "pad": "x" * 2000, "j": j}).encode()
                for j in range(BATCH)]
        closure = {f"b{i}-{j}": 1 for j in range(BATCH)}
        objs.append(json.dumps({"id": f"m{i}", "__closure": closure}).encode())
        store.put("p", b"[" + b",".join(objs) + b"]")
        print(f"ack {i}", flush=True)
    """
)


def _batch_state(store: objstore.Store, i: int) -> int:
    """How many of batch i's objects are visible (0 or BATCH+1 when atomic)."""
    ids = [f"b{i}-{j}" for j in range(BATCH)] + [f"m{i}"]
    return sum(store.has("p", ids).values())


def test_sigkill_mid_ingest_keeps_acknowledged_batches(tmp_path):
    path = str(tmp_path / "s")
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, path, "1000", str(BATCH)], stdout=subprocess.PIPE, text=True
    )
    acked = -1
    assert proc.stdout is not None
    deadline = time.monotonic() + 60
    while acked < 15 and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        acked = int(line.split()[1])
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert acked >= 15, "writer made no progress"
    with objstore.open(path) as store:
        for i in range(acked + 1):
            assert _batch_state(store, i) == BATCH + 1, f"acknowledged batch {i} incomplete"
            assert len(list(store.iter_with_children("p", f"m{i}"))) == BATCH + 1
        for i in range(acked + 1, acked + 5):
            assert _batch_state(store, i) in (0, BATCH + 1), f"batch {i} partially visible"
        assert store.verify().ok


READER = textwrap.dedent(
    """
    import sys, time, objstore
    batch = int(sys.argv[2])
    store = objstore.open(sys.argv[1])
    deadline = time.monotonic() + float(sys.argv[3])
    checks = 0
    while time.monotonic() < deadline:
        for i in range(0, 10_000):
            ids = [f"b{i}-{j}" for j in range(batch)] + [f"m{i}"]
            seen = sum(store.has("p", ids).values())
            if seen == 0:
                break
            if seen != batch + 1:
                print(f"PARTIAL {i} {seen}", flush=True)
                sys.exit(1)
            got = sum(1 for _ in store.iter_with_children("p", f"m{i}"))
            if got != batch + 1:
                print(f"SHORT {i} {got}", flush=True)
                sys.exit(1)
            checks += 1
    print(f"checks {checks}", flush=True)
    """
)


@pytest.mark.slow
def test_readers_in_other_processes_never_see_half_a_batch(tmp_path):
    path = str(tmp_path / "s")
    objstore.open(path).close()
    readers = [
        subprocess.Popen(
            [sys.executable, "-c", READER, path, str(BATCH), "6"], stdout=subprocess.PIPE, text=True
        )
        for _ in range(3)
    ]
    writer = subprocess.run(
        [sys.executable, "-c", WRITER, path, "40", str(BATCH)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert writer.returncode == 0, writer.stderr
    total_checks = 0
    for reader in readers:
        out, _ = reader.communicate(timeout=60)
        assert reader.returncode == 0, out
        total_checks += int(out.split()[-1])
    assert total_checks > 40  # readers really overlapped the writer and read finished batches
    with objstore.open(path) as store:
        assert all(_batch_state(store, i) == BATCH + 1 for i in range(40))


def test_two_writer_processes_share_one_store(tmp_path):
    path = str(tmp_path / "s")
    script = textwrap.dedent(
        """
        import json, sys, objstore
        store = objstore.open(sys.argv[1], map_size=1 << 20)
        tag = sys.argv[2]
        for i in range(30):
            objs = [json.dumps({"id": f"{tag}{i}-{j}", "pad": "y" * 3000}).encode()
                    for j in range(50)]
            store.put("p", b"[" + b",".join(objs) + b"]")
        """
    )
    procs = [subprocess.Popen([sys.executable, "-c", script, path, tag]) for tag in "xy"]
    for p in procs:
        assert p.wait(timeout=120) == 0
    with objstore.open(path) as store:
        assert store.count("p") == 2 * 30 * 50
        assert store.verify().ok
    assert os.path.getsize(os.path.join(path, "data.mdb")) > 1 << 20


def test_writer_processes_sharing_bytes_keep_every_count_exact(tmp_path):
    """Two processes, three writing threads each, put the same objects into a shared project
    and into one of their own: their commits interleave, so each must read again the rows
    the other changed. Reference counts, object rows and packs must all agree (verify), and
    a delete must leave the shared project whole."""
    path = str(tmp_path / "s")
    script = textwrap.dedent(
        """
        import json, random, sys, threading, objstore
        store = objstore.open(sys.argv[1])
        tag = sys.argv[2]
        pool = [json.dumps({"id": f"o{n}", "pad": "z" * (n % 97) * 9}).encode()
                for n in range(1500)]

        def write(k):
            rng = random.Random(f"{tag}{k}")
            for _ in range(40):
                batch = rng.sample(pool, rng.randint(1, 120))
                store.put("shared", b"[" + b",".join(batch) + b"]")
                store.put("own-" + tag, b"[" + b",".join(batch[::2]) + b"]")

        threads = [threading.Thread(target=write, args=(k,)) for k in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not any(t.is_alive() for t in threads)
        store.close()
        """
    )
    procs = [subprocess.Popen([sys.executable, "-c", script, path, tag]) for tag in "xy"]
    for p in procs:
        assert p.wait(timeout=180) == 0
    pool = {
        f"o{n}": json.dumps({"id": f"o{n}", "pad": "z" * (n % 97) * 9}).encode()
        for n in range(1500)
    }
    with objstore.open(path) as store:
        report = store.verify()
        assert report.ok, report.problems[:5]
        shared = dict(store.get_many("shared", list(pool)))
        assert len(shared) > 1000 and all(pool[i] == data for i, data in shared.items())
        own = dict(store.get_many("own-x", list(pool)))
        assert own and all(pool[i] == data for i, data in own.items())
        store.delete_project("own-x")
        store.delete_project("own-y")
        assert dict(store.get_many("shared", list(pool))) == shared
        assert store.verify().ok


_READ_AND_WAIT = """
import sys, time, objstore
store = objstore.open(sys.argv[1])
txn = store.backend._begin_read()  # a read in flight, as a children stream holds one
print("reading", flush=True)
time.sleep(120)
"""


def test_a_reader_killed_mid_read_does_not_pin_the_store_forever(tmp_path):
    """A process killed inside a read leaves its LMDB reader slot behind; unless cleared, its
    old snapshot keeps every page freed since from reuse, and the file grows with each write
    for as long as this (still running) process keeps the store open."""
    store = objstore.open(tmp_path / "s")
    backend = store.backend
    assert isinstance(backend, LMDBBackend)

    def batch(tag: str) -> list[bytes]:
        return [
            json.dumps({"id": f"{tag}-{n}", "pad": "y" * 800 + tag}).encode() for n in range(2000)
        ]

    def used_mb() -> float:
        pages: int = backend._env.info()["last_pgno"] + 1
        return pages * backend._psize / 1e6

    store.put("base", batch("base"))
    reader = subprocess.Popen(
        [sys.executable, "-c", _READ_AND_WAIT, str(tmp_path / "s")],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert reader.stdout is not None and reader.stdout.readline().strip() == "reading"
    reader.kill()
    reader.wait(timeout=30)
    start = used_mb()
    for n in range(30):
        store.put("p", batch(f"r{n}"))
        store.delete_project("p")
    # each round writes ~2 MB and frees it; pinned, the file grew ~30 MB here
    assert used_mb() - start < 6, (start, used_mb())
    assert str(reader.pid) not in backend._env.readers()
    store.close()


_CHURN = textwrap.dedent(
    """
    import faulthandler, json, random, signal, sys, threading, time, objstore
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # where it waits, if it hangs
    store = objstore.open(sys.argv[1])
    tag, seconds = sys.argv[2], float(sys.argv[3])
    pick = random.Random(7)  # the same pool in every process: byte strings are shared
    pool = {f"o{n}": json.dumps({"id": f"o{n}", "pad": "z" * pick.randint(0, 2500)}).encode()
            for n in range(1500)}
    for n in range(100):
        kids = pick.sample(sorted(pool), pick.randint(1, 30))  # (only the o-objects so far)
        pool[f"P{n}"] = json.dumps({"id": f"P{n}", "__closure": dict.fromkeys(kids, 1)}).encode()
    names = list(pool)
    failures = []

    def array(ids):
        return b"[" + b",".join(pool[i] for i in ids) + b"]"

    def churn(t):
        rng = random.Random(f"{tag}{t}")
        project = [f"{tag}{t}-{k}" for k in range(3)]
        held = [set(i for i, _ in store.get_many(p, names)) for p in project]  # a run before
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not failures:
            k, op = rng.randrange(3), rng.random()
            if op < 0.35:
                ids = rng.sample(names, rng.randint(1, 300))
                store.put(project[k], array(ids))
                held[k].update(ids)
            elif op < 0.55:
                groups = [rng.sample(names, rng.randint(1, 400)) for _ in range(rng.randint(1, 4))]
                store.put_many(project[k], [array(ids) for ids in groups])
                held[k].update(*groups)
            elif op < 0.65:
                store.delete_project(project[k])
                held[k] = set()
            elif op < 0.70:
                store.compact(rng.choice([0.01, 0.25, 1.0]))
            else:
                got = dict(store.get_many(project[k], names))
                if set(got) != held[k] or any(pool[i] != data for i, data in got.items()):
                    failures.append(f"{project[k]} holds other objects than were put")
                for parent in [i for i in held[k] if i.startswith("P")][:2]:
                    stream = [i for i, _ in store.iter_with_children(project[k], parent)]
                    kids = set(json.loads(pool[parent])["__closure"]) & held[k]
                    if stream[0] != parent or sorted(stream[1:]) != sorted(kids):
                        failures.append(f"{project[k]}: the children of {parent} are wrong")

    threads = [threading.Thread(target=churn, args=(t,)) for t in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    print("\\n".join(failures) or "ok", flush=True)
    sys.exit(1 if failures else 0)
    """
)


def _finished(proc: subprocess.Popen[str], timeout: float = 120) -> str:
    """A churn process's output once it ends; one still running after ``timeout`` fails the
    test with every thread's stack (faulthandler, on SIGUSR1), so a hang says where."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGUSR1)
        time.sleep(2)
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(
            f"a churn process still ran after {timeout} s (it printed {out!r}); its threads:\n"
            + err[-20000:]
        )
    return out + err


@pytest.mark.slow
def test_writer_processes_deleting_and_compacting_keep_every_count_exact(tmp_path):
    """Three processes, two threads each, put, put_many, delete and compact their own projects
    over byte strings they all share, while checking what each project holds; then one such
    run is killed midway. Every project must hold exactly what was put in it, and the store's
    reference counts, packs and rows must agree (verify, and recount finding nothing to fix):
    each commit reads again the index rows the others' deletes and compactions changed."""
    path = str(tmp_path / "s")
    objstore.open(path).close()

    def run(seconds: float) -> list[subprocess.Popen[str]]:
        return [
            subprocess.Popen(
                [sys.executable, "-c", _CHURN, path, tag, str(seconds)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for tag in "xyz"
        ]

    for proc in run(6):
        out = _finished(proc)
        assert proc.returncode == 0, out
    with objstore.open(path) as store:
        report = store.verify()
        assert report.ok, report.problems[:5]
        assert store.recount() == 0
        assert len(store.projects()) > 3  # the runs really wrote (and not all got deleted)
    procs = run(8)
    time.sleep(3)
    procs[0].kill()  # mid-write, as likely as not
    for proc in procs[1:]:
        out = _finished(proc)
        assert proc.returncode == 0, out
    procs[0].wait(timeout=10)
    with objstore.open(path) as store:
        report = store.verify()
        assert report.ok, report.problems[:5]
        assert store.recount() == 0
