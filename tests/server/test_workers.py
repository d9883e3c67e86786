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


def test_a_worker_killed_mid_upload_loses_nothing_acknowledged(tmp_path: Path) -> None:
    server = SpawnedServer(workers=2, data=tmp_path / "server", keep=True).start()
    assert server.proc is not None
    acknowledged: set[str] = set()
    failures: list[str] = []
    stop = time.monotonic() + 6

    def upload(tag: str) -> None:
        remote = Remote(server.url, server.token, server.project)
        try:
            for n in range(100_000):  # bounded; ends at `stop`
                if time.monotonic() > stop:
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
        finally:
            retried.append(remote.stats.retries)
            remote.close()

    retried: list[int] = []
    try:
        threads = [threading.Thread(target=upload, args=(tag,)) for tag in "abc"]
        for thread in threads:
            thread.start()
        time.sleep(2)
        workers = _workers(server.proc.pid)
        assert len(workers) == 2, workers
        assert acknowledged  # uploads are under way
        os.kill(workers[0], signal.SIGKILL)
        for thread in threads:
            thread.join(60)
        assert not any(thread.is_alive() for thread in threads), "an upload never returned"
        assert failures == []
        assert sum(retried) >= 1  # the kill cut uploads in flight, and they were sent again
        remote = Remote(server.url, server.token, server.project)
        try:
            assert [i for i, has in remote.diff(sorted(acknowledged)).items() if not has] == []
        finally:
            remote.close()
        assert httpx.get(f"{server.url}/api/health", timeout=10).status_code == 200
    finally:
        server.stop()
    with objstore.open(tmp_path / "server" / "objects") as store:
        report = store.verify()
        assert report.ok, report.problems
        assert report.objects_checked >= len(acknowledged)
