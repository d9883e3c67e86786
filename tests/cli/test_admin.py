"""project, token, demo, stats, verify and compact, on a server's data dir and on a cache."""

from __future__ import annotations

import json
import subprocess

import pytest

import objstore
from objstore import cli, errors
from objstore.cli import stores

from ..conftest import tmpfs
from ..engine.damage import raw_put
from .conftest import run


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


def test_token_create_replace_revokes_only_that_users_token_of_that_name(tmp_path, capsys):
    """What scripts/serve.sh does at each start: a fresh token for its user, the one it made
    before no longer valid, every other token untouched."""
    from objstore.auth import AuthStore

    data = str(tmp_path)
    assert run(capsys, "project", "create", "p1", "--owner", "alice", "--data", data)[0] == 0

    def token(*more: str) -> str:
        code, out, _ = run(capsys, "token", "create", "--data", data, *more)
        assert code == 0
        return out.strip()

    first = token("--user", "alice", "--name", "readme")
    other_name = token("--user", "alice", "--name", "ci")
    other_user = token("--user", "bob", "--name", "readme")
    second = token("--user", "alice", "--name", "readme", "--replace")
    auth = AuthStore(tmp_path / "auth")
    try:
        assert auth.authenticate(first) is None
        live = {secret: auth.authenticate(secret) for secret in (second, other_name, other_user)}
    finally:
        auth.close()
    assert all(live.values()), live
    code, out, _ = run(capsys, "token", "list", "--data", data)
    names = sorted(line.split("\t")[-1] for line in out.splitlines())
    assert code == 0 and names == ["ci", "readme", "readme"]


def test_deleting_a_project_that_is_not_there_says_so(tmp_path, capsys):
    data = str(tmp_path)
    assert run(capsys, "project", "create", "p1", "--owner", "alice", "--data", data)[0] == 0
    code, out, err = run(capsys, "project", "delete", "p2", "--data", data)
    assert (code, out) == (1, "") and "no project 'p2'" in err
    assert run(capsys, "project", "list", "--data", data)[1].startswith("p1\t")


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
    assert list(tmp_path.iterdir()) == []  # nothing was made


@pytest.mark.parametrize(
    "argv",
    [
        ("project", "list"),
        ("project", "delete", "p1"),
        ("project", "member", "p1", "bob", "reviewer"),
        ("token", "list"),
        ("token", "revoke", "abc"),
    ],
)
def test_admin_commands_on_no_data_say_so_and_make_nothing(tmp_path, capsys, argv):
    """A mistyped --data given to a listing got a new, empty auth store and printed nothing,
    as if the server had no projects; only a create makes one."""
    data = tmp_path / "typo"
    code, out, err = run(capsys, *argv, "--data", str(data))
    assert (code, out) == (2, "")
    assert err == (
        f"objstore: no server data in {data} (no {data / 'auth'}; `objstore serve` or a "
        "create makes it): check --data or OBJSTORE_DATA\n"
    )
    assert not data.exists()
    assert run(capsys, "project", "create", "p1", "--owner", "a", "--data", str(data))[0] == 0
    assert run(capsys, "project", "list", "--data", str(data))[1].startswith("p1\t")


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


def test_verify_shows_its_progress(tmp_path, capsys, bars):
    """verify of a big store runs for minutes: it has a bar, told of every blob it checks."""
    data = tmp_path / "d"
    with objstore.open(data / "objects") as store:
        store.put("p", [b'{"id":"o%d"}' % n for n in range(300)])
    code, out, _ = run(capsys, "verify", "--data", str(data))
    assert code == 0 and out.startswith("checked 300 blobs, 300 objects")
    assert [(b["label"], b["total"], b["done"]) for b in bars] == [("verify", 300, 300)]


def test_compact_reports_what_it_freed(tmp_path, capsys):

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
        code == 0
        and out.startswith("repaired 0 closure or object rows, 1 reference counts")
        and out.strip().endswith("ok")
    )
    with objstore.open(data / "objects") as store:
        store.delete_project("a")
        assert store.get("b", "shared") == shared


def test_verify_repair_rewrites_a_closure_row_from_its_object(tmp_path, capsys, bars):
    data = tmp_path / "d"
    with objstore.open(data / "objects") as store:
        store.put("p", [b'{"id":"c"}', b'{"id":"r","__closure":{"c":1}}'])
        backend = store.backend
        with backend._read() as txn:  # type: ignore[attr-defined]
            row = txn.get(b"\0\0\0\1r", db=backend._objects)  # type: ignore[attr-defined]
        raw_put(backend, "closures", bytes(row[16:28]), b'\x02{"x":1}')
    code, out, _ = run(capsys, "verify", "--data", str(data))
    assert code == 1 and "its closure row disagrees with its __closure" in out
    assert "1 closure or object rows disagree with their objects: `objstore verify --repair`" in out
    code, out, _ = run(capsys, "verify", "--repair", "--data", str(data))
    assert code == 0 and out.startswith("repaired 1 closure or object rows, 0 reference counts")
    # each repair pass is one write transaction on a store of any size: it shows that it runs
    assert [(b["label"], b["counted"]) for b in bars[1:]] == [
        ("repair rows", False),
        ("recount", False),
        ("verify", True),
    ]
    with objstore.open(data / "objects") as store:
        assert store.closure("p", "r") == {"c": 1}


def test_store_commands_refuse_a_path_with_no_store_and_take_a_cache_dir(tmp_path, capsys):

    for command in ("stats", "verify", "compact"):
        code, _, err = run(capsys, command, "--data", str(tmp_path / "typo"))
        assert code == 2 and err.startswith("objstore: no store in ") and "--data" in err
    with pytest.raises(errors.StoreNotFound):
        stores.open_store(cli.build_parser().parse_args(["stats", "--data", str(tmp_path / "x")]))
    assert not (tmp_path / "typo").exists()  # nothing was created there
    with objstore.open(tmp_path / "cache") as cache:  # a store dir itself, as a client cache
        cache.put("p", [b'{"id":"a"}'])
    code, out, _ = run(capsys, "verify", "--data", str(tmp_path / "cache"))
    assert code == 0 and "1 objects" in out
    assert not (tmp_path / "cache" / "objects").exists()


def test_project_list_and_delete_work_on_a_cache_and_leave_no_auth_in_it(tmp_path, capsys):
    """A client cache is a store with no users or tokens: ``project list|delete`` act on its
    store, and nothing makes an auth store inside it."""

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
