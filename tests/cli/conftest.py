"""The client tests' server for push/pull/cp, and running a command as a user would."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest

from objstore import cli
from objstore.cli import progress

from ..client.conftest import server  # noqa: F401  (the fixture, for test_transfer)


def run(capsys, *argv: str) -> tuple[int, str, str]:
    """``objstore ARGV``: its exit code, stdout and stderr."""
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def bars(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Every progress bar the commands open, as {label, total, counted, done}, in order."""
    seen: list[dict[str, Any]] = []

    @contextlib.contextmanager
    def recorded(label: str, total: int | None, counted: bool = True) -> Iterator[Any]:
        bar: dict[str, Any] = {"label": label, "total": total, "counted": counted, "done": 0}
        seen.append(bar)

        class Tick:
            def advance(self, n: int) -> None:
                bar["done"] += n

            def total(self, n: int) -> None:
                bar["total"] = n

        yield Tick()

    monkeypatch.setattr(progress, "bar", recorded)
    return seen
