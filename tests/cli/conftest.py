"""The client tests' server for push/pull/cp, and running a command as a user would."""

from __future__ import annotations

from objstore import cli

from ..client.conftest import server  # noqa: F401  (the fixture, for test_transfer)


def run(capsys, *argv: str) -> tuple[int, str, str]:
    """``objstore ARGV``: its exit code, stdout and stderr."""
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err
