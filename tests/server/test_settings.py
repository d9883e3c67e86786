"""Server settings read from the environment."""

from __future__ import annotations

import pytest

from objstore.server import Settings
from objstore.server.app import create_app_from_env


def test_readahead_follows_the_environment_into_the_store(monkeypatch, tmp_path):
    monkeypatch.setenv("OBJSTORE_DATA", str(tmp_path))
    monkeypatch.delenv("OBJSTORE_READAHEAD", raising=False)
    assert Settings.from_env().readahead is True
    monkeypatch.setenv("OBJSTORE_READAHEAD", "off")
    assert Settings.from_env().readahead is False
    app = create_app_from_env()
    store = app.state.routes.store
    try:
        assert store.backend._env.flags()["readahead"] is False
    finally:
        store.close()
        app.state.auth.close()


def test_a_bad_readahead_value_names_the_variable(monkeypatch):
    monkeypatch.setenv("OBJSTORE_READAHEAD", "maybe")
    with pytest.raises(ValueError, match="OBJSTORE_READAHEAD must be"):
        Settings.from_env()


def test_zstd_level_follows_the_environment_and_is_checked(monkeypatch):
    monkeypatch.setenv("OBJSTORE_ZSTD_LEVEL", "5")
    assert Settings.from_env().zstd_level == 5
    monkeypatch.setenv("OBJSTORE_ZSTD_LEVEL", "40")
    with pytest.raises(ValueError, match="zstd level must be -7 to 19"):
        Settings.from_env()


def test_a_serving_process_collects_young_objects_less_often(monkeypatch, tmp_path):
    import asyncio
    import gc

    from objstore.server.app import SERVING_GC_THRESHOLD

    monkeypatch.setenv("OBJSTORE_DATA", str(tmp_path))
    before = gc.get_threshold()
    app = create_app_from_env()
    seen: list[tuple[tuple[int, ...], int]] = []

    async def serve() -> None:
        async with app.router.lifespan_context(app):  # what uvicorn runs at startup
            seen.append((gc.get_threshold(), gc.get_freeze_count()))

    try:
        asyncio.run(serve())
    finally:
        gc.set_threshold(*before)
        gc.unfreeze()
    assert before != SERVING_GC_THRESHOLD
    assert seen[0][0] == SERVING_GC_THRESHOLD and seen[0][1] > 0


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("OBJSTORE_MAX_REQUEST_MB", "x", "OBJSTORE_MAX_REQUEST_MB must be a number of megabytes"),
        ("OBJSTORE_MAX_REQUEST_MB", "-1", "OBJSTORE_MAX_REQUEST_MB must be positive"),
        ("OBJSTORE_MAX_IDS", "0", "OBJSTORE_MAX_IDS must be 1 or more"),
    ],
)
def test_request_and_id_limits_are_checked_and_named(monkeypatch, name, value, says):
    """A negative request limit refused every upload, an id limit of 0 every diff; a
    non-number was float()'s message, naming no variable."""
    monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=says):
        Settings.from_env()


def test_the_request_limit_follows_the_environment(monkeypatch):
    monkeypatch.setenv("OBJSTORE_MAX_REQUEST_MB", "2.5")
    assert Settings.from_env().max_request_bytes == int(2.5 * 1024 * 1024)
    monkeypatch.delenv("OBJSTORE_MAX_REQUEST_MB")
    assert Settings.from_env().max_request_bytes == Settings.from_env().limits.max_batch_bytes


def test_cors_origins_come_from_the_environment_and_are_checked(monkeypatch):
    monkeypatch.delenv("OBJSTORE_CORS_ORIGINS", raising=False)
    assert Settings.from_env().cors_origins == ("*",)
    for raw, origins in [
        ("none", ()),
        ("", ()),
        (
            "http://localhost:3000, https://app.example",
            ("http://localhost:3000", "https://app.example"),
        ),
    ]:
        monkeypatch.setenv("OBJSTORE_CORS_ORIGINS", raw)
        assert Settings.from_env().cors_origins == origins
    for bad in ("http://localhost:3000/", "localhost:3000", "http://a,,http://b"):
        monkeypatch.setenv("OBJSTORE_CORS_ORIGINS", bad)
        with pytest.raises(ValueError, match=r"OBJSTORE_CORS_ORIGINS: .* is not an origin"):
            Settings.from_env()
