"""What every command shares: one-line errors for a missing extra or a closed pipe, and
help that says what each argument is."""

from __future__ import annotations

import argparse
import io
import os
import sys

import pytest

import objstore
from objstore import cli
from objstore.cli import parser

from .conftest import run


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

    objstore.open(tmp_path / "objects").close()
    redirected: list[int] = []
    monkeypatch.setattr(sys, "stdout", ClosedPipe())
    monkeypatch.setattr(os, "open", lambda *a: 98)
    monkeypatch.setattr(os, "dup2", lambda fd, onto: redirected.append(onto))
    assert cli.main(["stats", "--data", str(tmp_path)]) == 1
    assert redirected == [99]  # stdout pointed at /dev/null, so exit flushes raise nothing
    assert capsys.readouterr().err == ""


def test_every_argument_of_every_command_says_what_it_is():
    """``--help`` explains each argument: none is listed bare (a positional that could be
    anything, a flag whose default or form only the source tells)."""

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

    assert parser.BENCH_WORKLOADS == bench.WORKLOADS
    with pytest.raises(SystemExit):
        cli.main(["bench", "--help"])
    shown = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    assert all(workload in shown for workload in bench.WORKLOADS), shown
