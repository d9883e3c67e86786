"""Shared fixtures: every engine test runs against each storage backend."""

from __future__ import annotations

import contextlib
import subprocess
import threading
import warnings
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import pytest

import objstore
from objstore.limits import Limits

from . import loopback

loopback.install()

BACKENDS = ["lmdb", "memory"]


def make_store(
    kind: str, path: Path, limits: Limits | None = None, **opts: object
) -> objstore.Store:
    if kind == "lmdb":
        return objstore.open(path / "store", limits=limits or Limits(), **opts)  # type: ignore[arg-type]
    return objstore.open_memory(limits or Limits())


@pytest.fixture(scope="session", autouse=True)
def _no_default_dirs_of_the_user(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The user data dir (the CLI's default cache) points into the test run, so a command
    run without --cache writes nothing in the home of whoever runs the tests."""
    import os

    saved = {key: os.environ.pop(key, None) for key in ("XDG_DATA_HOME", "OBJSTORE_CACHE")}
    os.environ["XDG_DATA_HOME"] = str(tmp_path_factory.mktemp("home") / "data")
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def _no_tries_since(before: int) -> None:
    """Fail where anything tried to reach an address off this machine since ``before`` (the
    guard refused it: nothing left); reported once."""
    tried = loopback.attempts[before:]
    del loopback.attempts[before:]
    assert not tried, f"tried to reach beyond 127.0.0.1: {', '.join(tried)}"


@pytest.fixture(scope="session", autouse=True)
def _loopback_only_in_the_run() -> Iterator[None]:
    """The tries no test was running for: in a module's fixture, or a thread's later on."""
    yield
    _no_tries_since(0)


@pytest.fixture(autouse=True)
def _loopback_only() -> Iterator[None]:
    """The tries made while a test ran fail that test."""
    before = len(loopback.attempts)
    yield
    _no_tries_since(before)


@pytest.fixture
def speckle_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """specklepy as the tests run it (skipped where it is not installed): its user data
    folder (accounts, its default SQLite cache) at ``tmp_path / "userdata"``, its deprecation
    warnings quiet, and its usage telemetry off, which 2.x posts to Speckle's analytics from a
    thread on every send and receive (refused by the loopback guard, failing the test).
    Returns ``tmp_path``."""
    pytest.importorskip("specklepy")
    from specklepy.logging import metrics

    monkeypatch.setenv("SPECKLE_USERDATA_PATH", str(tmp_path / "userdata"))
    monkeypatch.setattr(metrics, "TRACK", False)
    warnings.simplefilter("ignore", DeprecationWarning)
    return tmp_path


@pytest.fixture(params=BACKENDS)
def backend_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def store(backend_kind: str, tmp_path: Path) -> Iterator[objstore.Store]:
    s = make_store(backend_kind, tmp_path)
    yield s
    s.close()


def run_threads(
    fn: Callable[..., object], calls: Iterable[tuple[object, ...]], timeout: float = 120
) -> list[BaseException]:
    """Run ``fn(*args)`` for each args on its own thread at once, join each (bounded) and
    return what they raised."""
    raised: list[BaseException] = []

    def run(args: tuple[object, ...]) -> None:
        try:
            fn(*args)
        except BaseException as exc:
            raised.append(exc)

    threads = [threading.Thread(target=run, args=(args,)) for args in calls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
    assert not any(thread.is_alive() for thread in threads), "a thread did not finish in time"
    return raised


@contextlib.contextmanager
def tmpfs(mount: Path, size: str) -> Iterator[Path]:
    """A real small filesystem at ``mount`` (a new dir), unmounted after; the test is skipped
    where one cannot be mounted (mount needs root)."""
    mount.mkdir()
    try:
        made = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)],
            capture_output=True,
        )
    except FileNotFoundError:  # a minimal system (a container) without mount(8)
        pytest.skip("cannot mount a tmpfs here: no mount command")
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)
