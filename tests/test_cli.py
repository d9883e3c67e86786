"""The command line, including a multi-worker server process sharing one store."""

from __future__ import annotations

import gzip
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest

from objstore import cli, errors

from .conftest import run_threads, tmpfs
from .engine.damage import raw_put


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_project_and_token_admin(tmp_path, capsys):
    data = str(tmp_path)
    assert run(capsys, "project", "create", "p1", "--owner", "alice", "--data", data)[0] == 0
    code, _, err = run(capsys, "project", "create", "p1", "--data", data)
    assert code == 2 and "already exists" in err
    code, out, _ = run(capsys, "project", "list", "--data", data)
    assert "p1\tpublic=False\tmembers={'alice': 'owner'}" in out
    assert run(capsys, "project", "member", "p1", "bob", "reviewer", "--data", data)[0] == 0
    code, _, err = run(capsys, "project", "member", "p1", "bob", "boss", "--data", data)
    assert code == 2 and "unknown role 'boss': use one of reviewer, contributor, owner, none" in err
    code, secret, err = run(
        capsys,
        "token",
        "create",
        "--user",
        "bob",
        "--scopes",
        "streams:read",
        "--projects",
        "p1",
        "--expires",
        "1d",
        "--data",
        data,
    )
    secret = secret.strip()
    assert code == 0 and len(secret) == 42 and "streams:read" in err
    assert "note:" not in err  # bob is p1's reviewer: the token reaches what it names
    code, _, err = run(
        capsys, "token", "create", "--user", "carol", "--projects", "p1,p9", "--data", data
    )
    assert code == 0 and err.count("note:") == 2, err
    assert "'carol' is not a member of 'p1': the token cannot use it until 'carol'" in err
    assert "there is no project 'p9' yet" in err
    code, _, err = run(capsys, "token", "create", "--user", "dave", "--data", data)
    assert code == 0 and "'dave' is a member of no project yet" in err, err
    code, out, _ = run(capsys, "token", "list", "--data", data)
    assert secret[:10] in out and "live" in out and secret[10:] not in out
    code, _, err = run(capsys, "token", "create", "--scopes", "streams:admin", "--data", data)
    assert code == 2 and "unknown scope" in err
    for bad in ("3x", "-1h", "0"):
        code, _, err = run(capsys, "token", "create", f"--expires={bad}", "--data", data)
        assert code == 2 and err.startswith("objstore: --expires ") and repr(bad) in err
    assert run(capsys, "token", "revoke", secret, "--data", data)[0] == 0
    assert run(capsys, "token", "revoke", secret, "--data", data)[0] == 1
    assert run(capsys, "project", "delete", "p1", "--data", data)[0] == 0
    assert run(capsys, "project", "list", "--data", data)[1] == ""


def test_admin_commands_refuse_words_they_would_drop(tmp_path, capsys):
    """A word an action has no place for is an error, not ignored: `token create alice`
    once made a token for admin."""
    data = str(tmp_path)
    for argv, says in (
        (
            ("token", "create", "alice"),
            "token create takes no 'alice' (a token for alice: --user alice)",
        ),
        (("token", "list", "x"), "token list takes no 'x'"),
        (("project", "list", "p1"), "project list takes no 'p1'"),
        (
            ("project", "create", "p1", "alice"),
            "project create takes no 'alice' (the owner: --owner alice)",
        ),
        (("project", "delete", "p1", "x", "y"), "project delete takes no 'x' 'y'"),
    ):
        with pytest.raises(SystemExit) as exit_:
            cli.main([*argv, "--data", data])
        assert exit_.value.code == 2 and says in capsys.readouterr().err, argv
    assert run(capsys, "token", "list", "--data", data)[1] == ""  # nothing was made
    assert run(capsys, "project", "list", "--data", data)[1] == ""


def test_demo_stats_verify(tmp_path, capsys):
    data = str(tmp_path)
    code, out, _ = run(capsys, "demo", "--objects", "500", "--data", data)
    assert code == 0 and "0 missing" in out
    code, out, _ = run(capsys, "stats", "--data", data)
    assert code == 0 and "demo:" in out
    code, out, _ = run(capsys, "verify", "--data", data)
    assert code == 0 and out.strip().endswith("ok")
    code, _, err = run(capsys, "demo", "--objects", "5", "--data", data)
    assert code == 2 and "a generated graph has at least 10 objects, not 5" in err


def test_compact_reports_what_it_freed(tmp_path, capsys):
    import objstore

    data = tmp_path / "d"
    shared = json.dumps({"id": "shared", "v": 1}).encode()
    own = [json.dumps({"id": f"o{i}", "pad": f"x{i}" * 200}).encode() for i in range(100)]
    with objstore.open(data / "objects") as store:
        store.put("a", b"[" + b",".join([*own, shared]) + b"]")
        store.put("b", b"[" + shared + b"]")
        store.delete_project("a")
    code, planned, _ = run(capsys, "compact", "--dry-run", "--data", str(data))
    assert code == 0 and planned.startswith("would rewrite 1 packs into 1, move 1 objects, free ")
    code, out, _ = run(capsys, "compact", "--data", str(data))
    assert code == 0 and out.startswith("rewrote 1 packs into 1, moved 1 objects, freed ")
    assert out.split("freed ")[1] == planned.split("free ")[1]  # the same MB of the same
    code, out, _ = run(capsys, "compact", "--data", str(data))
    assert code == 0 and out.startswith("rewrote 0 packs into 0, moved 0 objects, freed 0.0 MB")
    code, _, err = run(capsys, "compact", "--min-dead", "2", "--data", str(data))
    assert code == 2 and "--min-dead" in err
    assert run(capsys, "verify", "--data", str(data))[0] == 0


def test_verify_repair_sets_reference_counts_right(tmp_path, capsys):
    import objstore
    from objstore.codec import digest_of
    from objstore.engine.layout import REF

    data = tmp_path / "d"
    shared = json.dumps({"id": "shared", "v": 1}).encode()
    with objstore.open(data / "objects") as store:
        store.put("a", [shared])
        store.put("b", [shared])
        backend = store.backend
        with backend._read() as txn:  # type: ignore[attr-defined]
            row = txn.get(digest_of(shared), db=backend._index)  # type: ignore[attr-defined]
        head = REF.pack(1, REF.unpack_from(row)[1]) + row[REF.size :]
        raw_put(backend, "index", digest_of(shared), head)
    code, out, _ = run(capsys, "verify", "--data", str(data))
    assert code == 1 and "refcount 1 but 2 objects" in out and "verify --repair" in out
    code, out, _ = run(capsys, "verify", "--repair", "--data", str(data))
    assert (
        code == 0 and out.startswith("repaired 1 reference counts") and out.strip().endswith("ok")
    )
    with objstore.open(data / "objects") as store:
        store.delete_project("a")
        assert store.get("b", "shared") == shared


def test_store_commands_refuse_a_path_with_no_store_and_take_a_cache_dir(tmp_path, capsys):
    import objstore

    for command in ("stats", "verify", "compact"):
        code, _, err = run(capsys, command, "--data", str(tmp_path / "typo"))
        assert code == 2 and err.startswith("objstore: no store in ") and "--data" in err
    with pytest.raises(errors.StoreNotFound):
        cli._open(cli.build_parser().parse_args(["stats", "--data", str(tmp_path / "x")]))
    assert not (tmp_path / "typo").exists()  # nothing was created there
    with objstore.open(tmp_path / "cache") as cache:  # a store dir itself, as a client cache
        cache.put("p", [b'{"id":"a"}'])
    code, out, _ = run(capsys, "verify", "--data", str(tmp_path / "cache"))
    assert code == 0 and "1 objects" in out
    assert not (tmp_path / "cache" / "objects").exists()


def test_project_list_and_delete_work_on_a_cache_and_leave_no_auth_in_it(tmp_path, capsys):
    """A client cache is a store with no users or tokens: ``project list|delete`` act on its
    store, and nothing makes an auth store inside it."""
    import objstore

    cache = tmp_path / "cache"
    with objstore.open(cache) as store:
        store.put("p1", [b'{"id":"a"}', b'{"id":"b"}'])
        store.put("p2", [b'{"id":"a"}'])
    code, out, _ = run(capsys, "project", "list", "--data", str(cache))
    assert code == 0 and out.splitlines() == ["p1\t2 objects", "p2\t1 objects"]
    code, out, _ = run(capsys, "project", "delete", "p1", "--data", str(cache))
    assert code == 0 and "deleted project p1 (2 objects)" in out
    code, _, err = run(capsys, "project", "delete", "p1", "--data", str(cache))
    assert code == 1 and "no project 'p1'" in err
    for argv in (
        ["project", "create", "p3"],
        ["project", "member", "p2", "bob", "reviewer"],
        ["token", "list"],
    ):
        code, _, err = run(capsys, *argv, "--data", str(cache))
        assert code == 2 and "is a client cache" in err and "server's data dir" in err, argv
    assert not (cache / "auth").exists()
    with objstore.open(cache) as store:
        assert store.projects() == ["p2"] and store.get("p2", "a") == b'{"id":"a"}'


def test_stats_and_verify_read_a_store_on_a_read_only_disk(tmp_path, capsys):
    """They open the store read-only (skipped where a tmpfs cannot be mounted); a repair,
    which writes, gets one line saying why it cannot."""
    import objstore

    with tmpfs(tmp_path / "ro", "8m") as mount:
        with objstore.open(mount / "s") as store:
            store.put("p", [b'{"id":"a"}'])
        subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
        code, out, _ = run(capsys, "stats", "--data", str(mount / "s"))
        assert code == 0 and "p: 1 objects" in out
        code, out, _ = run(capsys, "verify", "--data", str(mount / "s"))
        assert code == 0 and out.endswith("ok\n")
        code, _, err = run(capsys, "verify", "--repair", "--data", str(mount / "s"))
        assert code == 2 and "cannot be opened for writing" in err


def test_a_missing_extra_is_one_line_naming_the_install(tmp_path, capsys, monkeypatch):
    for name in list(sys.modules):
        if name == "httpx" or name.startswith(("httpx.", "objstore.client")):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "httpx", None)  # what an install without the extra sees
    doc = tmp_path / "doc.json"
    doc.write_text('{"name": "x"}')
    code, _, err = run(
        capsys, "push", str(doc), "--url", "http://127.0.0.1:9", "--project", "p", "--token", "t"
    )
    assert code == 2
    assert err.strip() == (
        "objstore push needs httpx, from the 'client' extra: pip install 'objstore[client]'"
    )


def test_output_into_a_closed_pipe_ends_quietly(tmp_path, capsys, monkeypatch):
    class ClosedPipe(io.StringIO):
        def write(self, text: str) -> int:
            raise BrokenPipeError(32, "Broken pipe")

        def fileno(self) -> int:
            return 99

    import objstore

    objstore.open(tmp_path / "objects").close()
    redirected: list[int] = []
    monkeypatch.setattr(sys, "stdout", ClosedPipe())
    monkeypatch.setattr(os, "open", lambda *a: 98)
    monkeypatch.setattr(os, "dup2", lambda fd, onto: redirected.append(onto))
    assert cli.main(["stats", "--data", str(tmp_path)]) == 1
    assert redirected == [99]  # stdout pointed at /dev/null, so exit flushes raise nothing
    assert capsys.readouterr().err == ""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/api/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "server did not start"
            assert proc.poll() is None, "server exited"
            time.sleep(0.2)
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
    import argparse

    sock = cli._tcp_socket(argparse.Namespace(host="127.0.0.1", port=0, workers=2))
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


def test_every_argument_of_every_command_says_what_it_is():
    """``--help`` explains each argument: none is listed bare (a positional that could be
    anything, a flag whose default or form only the source tells)."""
    import argparse

    parser = cli.build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert set(commands.choices) >= {"serve", "push", "pull", "cp", "bench", "token", "project"}
    bare = [
        f"{name} {action.dest}"
        for name, sub in commands.choices.items()
        for action in sub._actions
        if not isinstance(action, argparse._HelpAction) and not (action.help or action.choices)
    ]
    assert bare == []


def test_bench_help_lists_the_workloads_the_harness_runs(capsys):
    from objstore import bench

    assert cli.BENCH_WORKLOADS == bench.WORKLOADS
    with pytest.raises(SystemExit):
        cli.main(["bench", "--help"])
    shown = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    assert all(workload in shown for workload in bench.WORKLOADS), shown


def test_the_default_cache_is_in_the_user_data_dir():
    import argparse
    from pathlib import Path

    path = cli._cache_dir(argparse.Namespace(cache=None))
    assert path == Path(os.environ["XDG_DATA_HOME"]) / "objstore" / "cache"  # (the test run's)
