"""Limits and their environment overrides."""

from __future__ import annotations

import pytest

from objstore.limits import MB, Limits


def test_defaults_are_speckles():
    assert Limits() == Limits(10 * MB, 50 * MB)


def test_env_overrides(monkeypatch):
    monkeypatch.setenv("OBJSTORE_MAX_OBJECT_MB", "2")
    monkeypatch.setenv("OBJSTORE_MAX_BATCH_MB", "0.5")
    assert Limits.from_env() == Limits(2 * MB, MB // 2)


@pytest.mark.parametrize("value", ["abc", "-1", "0"])
def test_bad_env_values_are_named(monkeypatch, value):
    monkeypatch.setenv("OBJSTORE_MAX_OBJECT_MB", value)
    with pytest.raises(ValueError, match="OBJSTORE_MAX_OBJECT_MB"):
        Limits.from_env()
