"""Projects, members and API tokens: who may read or write which project.

Kept in a small LMDB environment beside the object store (``DATA/auth``), so every server
worker and the CLI see the same state, and a revoked token stops working at once.

Tokens follow Speckle's shape: a 10-character public id followed by a 32-character secret.
Only a SHA-256 of the secret is stored (a fast hash is right for high-entropy random secrets;
bcrypt per request is what makes Speckle's server slow), and it is compared in constant time.
"""

from __future__ import annotations

import contextlib
import enum
import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import msgspec

from objstore import errors
from objstore.engine import lockwake
from objstore.engine.environment import DAMAGED, damaged, open_environment, refusing_damage
from objstore.store import check_project

ROLES = {"reviewer": 1, "contributor": 2, "owner": 3}
SCOPES = ("streams:read", "streams:write")
TOKEN_ID_CHARS = 10
TOKEN_SECRET_CHARS = 32


class Project(msgspec.Struct):
    """A project's access rules: public read and members' roles."""

    name: str
    public: bool = False
    members: dict[str, str] = {}
    created: float = 0.0


class Token(msgspec.Struct):
    """An API token (its secret is never stored, only its hash)."""

    id: str
    user: str
    secret_hash: str
    scopes: list[str]
    projects: list[str] | None = None
    expires: float | None = None
    name: str = ""
    created: float = 0.0

    def expired(self, now: float | None = None) -> bool:
        return self.expires is not None and (now or time.time()) >= self.expires


class Access(enum.Enum):
    """Outcome of a permission check, mapped to HTTP status codes by the server."""

    ALLOWED = "allowed"
    NO_PROJECT = "no such project"
    NOT_PERMITTED = "not permitted"


_ID_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class AuthStore:
    """Projects and tokens in an LMDB environment at ``path``."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self._env = open_environment(self.path, map_size=1 << 30, max_dbs=4, max_readers=1024)
        with refusing_damage(self.path, self._env):
            self._projects = self._env.open_db(b"projects")
            self._tokens = self._env.open_db(b"tokens")
        # closed before the env: see lockwake
        self._lockwatch = lockwake.watch(self.path, self._env)
        self._lock = threading.Lock()

    def close(self) -> None:
        self._lockwatch.close()
        self._env.close()

    @contextlib.contextmanager
    def _undamaged(self) -> Iterator[None]:
        """Around every use of the environment: damaged pages, or a record that is not what
        was written, raise StoreCorrupt naming the auth store (as the object store does)."""
        try:
            yield
        except (*DAMAGED, msgspec.DecodeError) as exc:
            raise damaged(self.path, exc) from exc

    # -- projects --------------------------------------------------------------------------------

    def create_project(
        self,
        name: str,
        *,
        owner: str | None = None,
        public: bool = False,
        members: dict[str, str] | None = None,
    ) -> Project:
        """Register a project; raises ObjstoreError if it exists or a role is unknown."""
        check_project(name)
        roles = dict(members or {})
        if owner:
            roles[owner] = "owner"
        for user, role in roles.items():
            if role not in ROLES:
                raise errors.ObjstoreError(f"unknown role {role!r} for {user!r}: use {list(ROLES)}")
        project = Project(name=name, public=public, members=roles, created=time.time())
        with self._undamaged(), self._lock, self._env.begin(write=True) as txn:
            if not txn.put(
                name.encode(), msgspec.json.encode(project), db=self._projects, overwrite=False
            ):
                raise errors.ObjstoreError(f"project {name!r} already exists")
        return project

    def get_project(self, name: str) -> Project | None:
        with self._undamaged(), self._env.begin() as txn:
            raw = txn.get(name.encode(), db=self._projects)
            return msgspec.json.decode(raw, type=Project) if raw else None

    def update_project(
        self, name: str, *, public: bool | None = None, members: dict[str, str | None] | None = None
    ) -> Project:
        """Change public flag and/or members (a role of None removes the member)."""
        with self._undamaged(), self._lock, self._env.begin(write=True) as txn:
            raw = txn.get(name.encode(), db=self._projects)
            if raw is None:
                raise errors.ObjstoreError(f"project {name!r} does not exist")
            project = msgspec.json.decode(raw, type=Project)
            if public is not None:
                project.public = public
            for user, role in (members or {}).items():
                if role is None:
                    project.members.pop(user, None)
                elif role not in ROLES:
                    raise errors.ObjstoreError(f"unknown role {role!r}: use {list(ROLES)}")
                else:
                    project.members[user] = role
            txn.put(name.encode(), msgspec.json.encode(project), db=self._projects)
        return project

    def list_projects(self) -> list[Project]:
        with self._undamaged(), self._env.begin() as txn:
            return [msgspec.json.decode(v, type=Project) for _, v in txn.cursor(self._projects)]

    def delete_project(self, name: str) -> bool:
        with self._undamaged(), self._lock, self._env.begin(write=True) as txn:
            return bool(txn.delete(name.encode(), db=self._projects))

    # -- tokens ----------------------------------------------------------------------------------

    def create_token(
        self,
        user: str,
        *,
        scopes: Iterable[str] = SCOPES,
        projects: Iterable[str] | None = None,
        expires_in: float | None = None,
        name: str = "",
    ) -> tuple[Token, str]:
        """Create a token; returns the record and the token string (shown once, never stored)."""
        scope_list = sorted(set(scopes))
        for scope in scope_list:
            if scope not in SCOPES:
                raise errors.ObjstoreError(f"unknown scope {scope!r}: use {list(SCOPES)}")
        token_id = "".join(secrets.choice(_ID_ALPHABET) for _ in range(TOKEN_ID_CHARS))
        secret = secrets.token_urlsafe(24)[:TOKEN_SECRET_CHARS]
        now = time.time()
        token = Token(
            id=token_id,
            user=user,
            secret_hash=_hash(secret),
            scopes=scope_list,
            projects=sorted(projects) if projects is not None else None,
            expires=now + expires_in if expires_in is not None else None,
            name=name,
            created=now,
        )
        with self._undamaged(), self._lock, self._env.begin(write=True) as txn:
            txn.put(token_id.encode(), msgspec.json.encode(token), db=self._tokens)
        return token, token_id + secret

    def list_tokens(self) -> list[Token]:
        with self._undamaged(), self._env.begin() as txn:
            return [msgspec.json.decode(v, type=Token) for _, v in txn.cursor(self._tokens)]

    def revoke_token(self, token_id: str) -> bool:
        with self._undamaged(), self._lock, self._env.begin(write=True) as txn:
            return bool(txn.delete(token_id.encode(), db=self._tokens))

    def authenticate(self, presented: str) -> Token | None:
        """The live token matching ``presented``, or None (unknown, wrong, revoked, expired)."""
        if len(presented) != TOKEN_ID_CHARS + TOKEN_SECRET_CHARS:
            return None
        token_id, secret = presented[:TOKEN_ID_CHARS], presented[TOKEN_ID_CHARS:]
        with self._undamaged(), self._env.begin() as txn:
            raw = txn.get(token_id.encode(), db=self._tokens)
            if raw is None:
                return None
            token = msgspec.json.decode(raw, type=Token)
        if not hmac.compare_digest(token.secret_hash, _hash(secret)):
            return None
        if token.expired():
            return None
        return token

    # -- decisions -------------------------------------------------------------------------------

    def check(self, token: Token | None, project_name: str, write: bool) -> Access:
        """May ``token`` (None: anonymous) read, or with ``write`` write, the project?"""
        project = self.get_project(project_name)
        if project is None:
            return Access.NO_PROJECT
        if not write and project.public:
            return Access.ALLOWED
        if token is None:
            return Access.NOT_PERMITTED
        scope = "streams:write" if write else "streams:read"
        if scope not in token.scopes:
            return Access.NOT_PERMITTED
        if token.projects is not None and project_name not in token.projects:
            return Access.NOT_PERMITTED
        needed = ROLES["contributor"] if write else ROLES["reviewer"]
        if ROLES.get(project.members.get(token.user, ""), 0) < needed:
            return Access.NOT_PERMITTED
        return Access.ALLOWED
