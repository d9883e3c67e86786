"""The server run with several workers (``objstore serve --workers 2``) losing one to kill -9
in the middle of uploads, as an out-of-memory killer would."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import httpx
import pytest

import objstore
from objstore.bench.targets import SpawnedServer
from objstore.client import Remote


def _workers(supervisor: int) -> list[int]:
    """The supervisor's worker processes (multiprocessing spawns them; its resource tracker
    is a child too, and no worker)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                parent = int(stat.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                command = cmdline.read()
        except (OSError, IndexError, ValueError):
            continue
        if parent == supervisor and b"spawn_main" in command:
            found.append(int(entry))
    return found


@pytest.mark.slow
def test_a_worker_killed_mid_upload_loses_nothing_acknowledged(tmp_path: Path) -> None:
    """Uploads run on while a worker is killed (again, up to 4 times, once uvicorn has
    started another, until a kill cuts an upload in flight, which a kill between two
    requests does not). Every upload must then have returned, none failed, every object
    acknowledged is there, and the store verifies."""
    server = SpawnedServer(workers=2, data=tmp_path / "server", keep=True).start()
    assert server.proc is not None
    acknowledged: set[str] = set()
    failures: list[str] = []
    remotes = [Remote(server.url, server.token, server.project) for _ in range(3)]
    done = threading.Event()

    def upload(tag: str, remote: Remote) -> None:
        for n in range(100_000):  # bounded; ends when the test is done killing
            if done.is_set():
                return
            ids = [f"{tag}{n:05d}{k:04d}".ljust(32, "0") for k in range(200)]
            batch = [
                (i, json.dumps({"id": i, "pad": "x" * (k * 13)}).encode())
                for k, i in enumerate(ids)
            ]
            try:
                remote.upload(batch)
            except Exception as exc:  # every failure is one: the client retries cut-offs
                failures.append(repr(exc))
                return
            acknowledged.update(ids)

    def retried() -> int:
        return sum(remote.stats.retries for remote in remotes)

    threads = [
        threading.Thread(target=upload, args=(tag, remote))
        for tag, remote in zip("abc", remotes, strict=True)
    ]
    try:
        for thread in threads:
            thread.start()
        for _ in range(4):
            deadline = time.monotonic() + 30
            while len(workers := _workers(server.proc.pid)) < 2:
                assert time.monotonic() < deadline, f"workers: {workers}"
                time.sleep(0.2)
            time.sleep(1.5)  # uploads under way on both
            os.kill(workers[0], signal.SIGKILL)
            time.sleep(1.5)
            if retried():
                break
        done.set()
        for thread in threads:
            thread.join(60)
        assert not any(thread.is_alive() for thread in threads), "an upload never returned"
        assert failures == []
        assert acknowledged
        assert retried() >= 1  # a kill cut uploads in flight, and they were sent again
        assert [i for i, has in remotes[0].diff(sorted(acknowledged)).items() if not has] == []
        assert httpx.get(f"{server.url}/api/health", timeout=10).status_code == 200
    finally:
        done.set()
        for remote in remotes:
            remote.close()
        server.stop()
    with objstore.open(tmp_path / "server" / "objects") as store:
        report = store.verify()
        assert report.ok, report.problems
        assert report.objects_checked >= len(acknowledged)
