"""The harness's spawned server: its settings, its output, its failures."""

from __future__ import annotations

import httpx
import pytest

from objstore.bench.targets import SpawnedServer, TargetError


def test_a_spawned_server_takes_its_env_and_keeps_its_output_to_its_log(capfd):
    """``env`` reaches the server (it was dropped: a benchmark's 64 MB limits never applied),
    and its banner (a 2-worker server prints one) goes to ``server.log`` in its store dir, not
    into the harness's terminal."""
    server = SpawnedServer(workers=2, env={"OBJSTORE_MAX_BATCH_MB": "20"}).start()
    try:
        info = httpx.get(f"{server.url}/api/server-info", timeout=10).json()
        assert info["limits"]["max_batch_bytes"] == 20 * 1024 * 1024
        assert "objstore serving" in (server.data / "server.log").read_text()
    finally:
        server.stop()
    out, err = capfd.readouterr()
    assert "objstore serving" not in out + err
    assert not server.data.exists()


def test_a_server_that_cannot_start_is_named_with_what_it_said():
    server = SpawnedServer(env={"OBJSTORE_MAX_BATCH_MB": "lots"})
    with pytest.raises(TargetError, match=r"did not start: .*OBJSTORE_MAX_BATCH_MB"):
        server.start(timeout=30)
    assert server.proc is not None and server.proc.poll() is not None
