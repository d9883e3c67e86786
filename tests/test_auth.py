"""Projects, tokens and access decisions (framework-free)."""

from __future__ import annotations

import pytest

from objstore import errors
from objstore.auth import Access, AuthStore


@pytest.fixture
def auth(tmp_path):
    a = AuthStore(tmp_path / "auth")
    yield a
    a.close()


def test_token_secret_is_not_stored(auth, tmp_path):
    token, secret = auth.create_token("alice")
    assert len(secret) == 42 and secret.startswith(token.id)
    raw = b"".join(p.read_bytes() for p in (tmp_path / "auth").iterdir())
    assert secret[10:].encode() not in raw
    assert auth.authenticate(secret) == token
    assert auth.authenticate(secret[:-1] + ("a" if secret[-1] != "a" else "b")) is None
    assert auth.authenticate("short") is None


def test_expiry_and_revocation(auth):
    _, expired = auth.create_token("alice", expires_in=-1)
    assert auth.authenticate(expired) is None
    token, live = auth.create_token("alice", expires_in=3600)
    assert auth.authenticate(live) is not None
    assert auth.revoke_token(token.id)
    assert auth.authenticate(live) is None


def test_decisions(auth):
    auth.create_project("p", owner="o", members={"c": "contributor", "r": "reviewer"})
    auth.create_project("pub", owner="o", public=True)
    tok = {u: auth.create_token(u)[0] for u in ("o", "c", "r", "x")}
    ro = auth.create_token("o", scopes=["streams:read"])[0]
    limited = auth.create_token("o", projects=["pub"])[0]
    assert auth.check(tok["o"], "p", write=True) is Access.ALLOWED
    assert auth.check(tok["c"], "p", write=True) is Access.ALLOWED
    assert auth.check(tok["r"], "p", write=True) is Access.NOT_PERMITTED
    assert auth.check(tok["r"], "p", write=False) is Access.ALLOWED
    assert auth.check(tok["x"], "p", write=False) is Access.NOT_PERMITTED
    assert auth.check(None, "p", write=False) is Access.NOT_PERMITTED
    assert auth.check(None, "pub", write=False) is Access.ALLOWED
    assert auth.check(None, "pub", write=True) is Access.NOT_PERMITTED
    assert auth.check(ro, "p", write=True) is Access.NOT_PERMITTED
    assert auth.check(limited, "p", write=False) is Access.NOT_PERMITTED
    assert auth.check(limited, "pub", write=True) is Access.ALLOWED
    assert auth.check(tok["o"], "missing", write=False) is Access.NO_PROJECT


def test_project_admin_errors(auth):
    auth.create_project("p")
    with pytest.raises(errors.ObjstoreError, match="already exists"):
        auth.create_project("p")
    with pytest.raises(errors.ObjstoreError, match="unknown role"):
        auth.create_project("q", members={"u": "admin"})
    with pytest.raises(errors.InvalidProject):
        auth.create_project("bad name")
    assert auth.update_project("p", members={"u": "reviewer"}).members == {"u": "reviewer"}
    assert auth.update_project("p", members={"u": None}).members == {}
    assert auth.delete_project("p") and not auth.delete_project("p")


def test_a_cut_short_auth_store_is_store_corrupt(tmp_path):
    auth = AuthStore(tmp_path / "auth")
    for n in range(300):
        auth.create_project(f"project-{n}", owner="alice")
    auth.close()
    data = tmp_path / "auth" / "data.mdb"
    data.write_bytes(data.read_bytes()[: 2 * 4096])
    with pytest.raises(errors.StoreCorrupt, match="auth is damaged"):
        AuthStore(tmp_path / "auth")


def test_a_damaged_record_is_store_corrupt_not_a_decode_error(tmp_path):
    """A record whose bytes are not what was written (a flipped byte on disk: LMDB keeps no
    checksums) fails every use of it with StoreCorrupt naming the auth store, which the
    server answers as 500 STORE_CORRUPT and the CLI as one line; the others still work."""
    import lmdb

    auth = AuthStore(tmp_path / "auth")
    token, presented = auth.create_token("alice")
    auth.create_project("p", owner="alice")
    auth.create_project("q", owner="alice")
    auth.close()
    env = lmdb.open(str(tmp_path / "auth"), max_dbs=4)
    with env.begin(write=True) as txn:
        txn.put(token.id.encode(), b'{"id": "\xff\xfe', db=env.open_db(b"tokens", txn=txn))
        txn.put(
            b"p", b'{"name": "p", "members": {"alice": 3}}', db=env.open_db(b"projects", txn=txn)
        )
    env.close()
    auth = AuthStore(tmp_path / "auth")
    try:
        for use in (
            lambda: auth.authenticate(presented),
            auth.list_tokens,
            lambda: auth.get_project("p"),
            lambda: auth.check(None, "p", write=False),
            lambda: auth.update_project("p", public=True),
            auth.list_projects,
        ):
            with pytest.raises(errors.StoreCorrupt, match=r"auth is damaged .*\); a cache"):
                use()
        assert auth.get_project("q") is not None and auth.delete_project("p")
        assert [p.name for p in auth.list_projects()] == ["q"]
    finally:
        auth.close()
