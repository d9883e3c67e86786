"""objstore serve, including a multi-worker server process sharing one store."""

from __future__ import annotations

import argparse
import errno
import gzip
import json
import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest

from objstore import cli
from objstore.cli import serve

from ..conftest import run_threads
from .conftest import run


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_healthy(url: str, proc: subprocess.Popen[str] | subprocess.Popen[bytes]) -> None:
    """Until the served health route answers (at most 60 s; fails if the server exits)."""
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{url}/api/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "server did not start"
        assert proc.poll() is None, "server exited"
        time.sleep(0.2)


@pytest.mark.slow
def test_serve_with_two_workers_shares_one_store(tmp_path, capsys):
    data = str(tmp_path)
    for project in ("p", "q"):
        run(capsys, "project", "create", project, "--owner", "w", "--data", data)
    token = run(capsys, "token", "create", "--user", "w", "--data", data)[1].strip()
    port = _free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "objstore.cli",
            "serve",
            "--data",
            data,
            "--port",
            str(port),
            "--workers",
            "2",
            "--log-level",
            "warning",
        ],
        env={**os.environ, "OBJSTORE_MAX_BATCH_MB": "20"},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, proc)
        headers = {"Authorization": f"Bearer {token}"}
        assert httpx.get(f"{url}/api/server-info").json()["limits"]["max_batch_bytes"] == 20 << 20
        failures: list[str] = []

        def upload(c: httpx.Client, project: str, objects: list[str]) -> None:
            body = gzip.compress(("[" + ",".join(objects) + "]").encode())
            r = c.post(
                f"{url}/objects/{project}",
                headers=headers,
                files={"b": ("b", body, "application/gzip")},
            )
            if r.status_code != 201:
                failures.append(r.text)

        def send(worker: int) -> None:
            with httpx.Client(timeout=60) as c:
                for batch in range(10):
                    own = [
                        json.dumps({"id": f"w{worker}-{batch}-{i}", "pad": "z" * 300})
                        for i in range(200)
                    ]
                    # bytes every worker sends, to both projects: counted across processes
                    shared = [json.dumps({"id": f"s{batch}-{i}", "v": i}) for i in range(50)]
                    upload(c, "p", own + shared)
                    upload(c, "q", shared)

        assert not run_threads(send, [(w,) for w in range(4)])
        assert not failures
        ids = [f"w{w}-{b}-{i}" for w in range(4) for b in range(10) for i in range(200)]
        with httpx.Client(timeout=60) as c:
            diff = c.post(f"{url}/api/diff/p", data={"objects": json.dumps(ids)}, headers=headers)
            assert all(diff.json().values()) and len(diff.json()) == 8000
            ids += [f"s{b}-{i}" for b in range(10) for i in range(50)]
            lines = c.post(
                f"{url}/api/getobjects/p",
                data={"objects": json.dumps(ids)},
                headers={**headers, "Accept": "text/plain"},
            ).text.splitlines()
            assert len(lines) == 8500
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
    assert run(capsys, "verify", "--data", data)[0] == 0
    assert run(capsys, "project", "delete", "q", "--data", data)[0] == 0
    assert run(capsys, "verify", "--data", data)[0] == 0  # p's shared bytes all still there


def test_worker_socket_is_tcp_so_asyncio_sets_nodelay():
    """uvicorn binds worker sockets with proto 0, and asyncio sets TCP_NODELAY only on accepted
    sockets whose proto is TCP: small responses then waited ~40 ms for a delayed ACK (measured
    with objstore bench: single GET p50 44 ms with 2 workers). serve binds the socket itself."""

    sock = serve._tcp_socket(argparse.Namespace(host="127.0.0.1", port=0, workers=2))
    try:
        assert sock.proto == socket.IPPROTO_TCP
        assert sock.get_inheritable()
    finally:
        sock.close()


@pytest.mark.parametrize(
    ("flags", "env", "says"),
    [
        (["--port", "99999"], {}, "argument --port: give a port from 0 to 65535, not '99999'"),
        ([], {"OBJSTORE_PORT": "abc"}, "argument --port: give a port from 0 to 65535, not 'abc'"),
        (["--workers", "0"], {}, "argument --workers: give a whole number of at least 1"),
        ([], {"OBJSTORE_WORKERS": "two"}, "argument --workers: give a whole number of at least"),
    ],
)
def test_serve_refuses_a_port_or_worker_count_that_cannot_be(
    flags, env, says, tmp_path, capsys, monkeypatch
):
    """uvicorn took port 99999 and listened on another while printing it; a bad OBJSTORE_PORT
    was a traceback from every command, as the parser was built."""
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(SystemExit) as stopped:
        cli.main(["serve", "--data", str(tmp_path / "d"), *flags])
    assert stopped.value.code == 2 and says in capsys.readouterr().err
    assert not (tmp_path / "d").exists()
    code, _, err = run(capsys, "stats", "--data", str(tmp_path / "d"))  # other commands run
    assert code == 2 and "no store in" in err


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_port_in_use_is_one_line_whatever_the_worker_count(tmp_path, capsys, workers):
    """With one worker uvicorn bound the port itself: it logged an error and a shutdown and
    exited 3, where two workers gave objstore's one line."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, out, err = run(
            capsys, "serve", "--data", str(tmp_path), "--port", str(port), "--workers", workers
        )
    assert (code, out) == (2, "")
    in_use = errno.EADDRINUSE
    said = f"[Errno {in_use}] cannot listen on 127.0.0.1:{port}: {os.strerror(in_use)}"
    assert err == f"objstore: {said}\n"


def test_serve_logs_the_damage_it_meets_in_one_line_each(tmp_path, capsys):
    """What the operator of ``objstore serve`` sees when a stored object is damaged: a line
    on stderr in uvicorn's format for the 500 a client got, and one for the answer cut
    mid-body, each naming the object; no traceback. --log-level error keeps them; critical
    silences objstore's own lines with uvicorn's. (--cors-origins is checked to reach the
    app on the way: the 500 carries its header.)"""
    import objstore
    from objstore.codec import digest_of

    from ..engine.damage import corrupt

    data = str(tmp_path)
    run(capsys, "project", "create", "p", "--owner", "w", "--data", data)
    token = run(capsys, "token", "create", "--user", "w", "--data", data)[1].strip()
    ids = [f"m{n:04d}" for n in range(300)]
    children = [json.dumps({"id": i, "pad": "x" * 40}).encode() for i in ids]
    with objstore.open(tmp_path / "objects") as store:
        store.put("p", children)
        corrupt(store.backend, digest_of(children[200]))
    headers = {"Authorization": f"Bearer {token}"}

    def serve_and_ask(level: str) -> str:
        port = _free_port()
        argv = ["serve", "--data", data, "--port", str(port), "--log-level", level]
        argv += ["--cors-origins", "http://localhost:3000"]  # reaches each worker's app
        proc = subprocess.Popen(
            [sys.executable, "-m", "objstore.cli", *argv], stderr=subprocess.PIPE, text=True
        )
        url = f"http://127.0.0.1:{port}"
        try:
            _wait_healthy(url, proc)
            with httpx.Client(timeout=30, headers=headers) as c:
                single = c.get(
                    f"{url}/objects/p/m0200/single", headers={"Origin": "http://localhost:3000"}
                )
                assert single.status_code == 500
                assert single.headers["access-control-allow-origin"] == "http://localhost:3000"
                assert single.json()["error"]["code"] == "CORRUPT_OBJECT"
                body = {"objects": json.dumps(ids)}
                with (
                    pytest.raises(httpx.RemoteProtocolError),
                    c.stream("POST", f"{url}/api/getobjects/p", data=body) as r,
                ):
                    for _ in r.iter_bytes():
                        pass
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                _, err = proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                _, err = proc.communicate()
        return str(err)

    err = serve_and_ask("error")
    damage = f"CorruptObject: object 'm0200' (blob {digest_of(children[200]).hex()}) is corrupt"
    errors_said = [line for line in err.splitlines() if line.startswith("ERROR:")]
    assert len(errors_said) == 3, err  # ours twice, and uvicorn's on the response it cut
    assert errors_said[0].startswith("ERROR:    GET /objects/p/m0200/single: 500 CORRUPT_OBJECT: ")
    assert errors_said[1].startswith("ERROR:    POST /api/getobjects/p: answer cut after ")
    assert damage.split(": ", 1)[1] in errors_said[0] and damage in errors_said[1]
    assert "Traceback" not in err
    quiet = serve_and_ask("critical")
    assert "ERROR" not in quiet and "Traceback" not in quiet, quiet


def test_serve_refuses_cors_origins_no_browser_sends(tmp_path, capsys, monkeypatch):
    """An origin with a path (the usual slip) would never match a browser's Origin header:
    refused up front, whether given as a flag or in OBJSTORE_CORS_ORIGINS."""
    with pytest.raises(SystemExit) as stopped:
        cli.main(["serve", "--data", str(tmp_path / "d"), "--cors-origins", "http://h:3000/"])
    err = capsys.readouterr().err
    assert stopped.value.code == 2
    assert "argument --cors-origins: 'http://h:3000/' is not an origin" in err
    monkeypatch.setenv("OBJSTORE_CORS_ORIGINS", "h:3000")
    with pytest.raises(SystemExit):
        cli.main(["serve", "--data", str(tmp_path / "d")])
    assert "'h:3000' is not an origin" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()
