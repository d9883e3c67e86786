"""Benchmark targets: what the harness measures, parsed from ``--target`` and opened for a run.

Forms:
  NAME=http://HOST:PORT[,token=T][,project=P]   any server speaking Speckle's object routes
  NAME=lmdb:DIR                                 objstore's engine in-process (the ceiling)
  NAME=spawn[:WORKERS]                          a local objstore server on a free 127.0.0.1
                                                port with a temporary store, stopped afterwards
Server targets also take ``compression=auto|on|off`` for objstore's client (auto, the
client's default, compresses unless the server is on loopback).
URLs must be loopback (127.0.0.0/8, ::1, localhost) unless ``allow_remote``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from objstore import errors
from objstore.client.remote import COMPRESSIONS, Compression, is_loopback


class TargetError(errors.ObjstoreError):
    """A --target that cannot be used (bad syntax, non-loopback URL, server did not start)."""


@dataclass
class TargetSpec:
    name: str
    kind: str  # "http" | "lmdb" | "spawn"
    url: str = ""
    token: str | None = None
    project: str = "bench"
    path: Path | None = None
    workers: int = 1
    compression: Compression = "auto"  # objstore's client


def parse_target(text: str, *, allow_remote: bool = False) -> TargetSpec:
    """Parse one ``--target`` value; refuse non-loopback URLs unless ``allow_remote``."""
    name, sep, rest = text.partition("=")
    if not sep or not name or not rest:
        raise TargetError(f"--target {text!r}: use NAME=URL, NAME=lmdb:DIR or NAME=spawn[:N]")
    if rest.startswith("lmdb:"):
        if not rest[5:]:
            raise TargetError(f"--target {name}: lmdb: needs a directory (lmdb:DIR)")
        return TargetSpec(name, "lmdb", path=Path(rest[5:]))
    url, *options = rest.split(",")
    if url == "spawn" or url.startswith("spawn:"):
        count = url[6:] if url.startswith("spawn:") else "1"
        if not count.isdigit() or int(count) < 1:
            raise TargetError(f"--target {name}: spawn:N takes N workers, 1 or more, not {count!r}")
        spec = TargetSpec(name, "spawn", workers=int(count))
    else:
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise TargetError(f"--target {name}: {url!r} is not an http(s) URL")
        if not allow_remote and not is_loopback(parsed.hostname):
            raise TargetError(
                f"--target {name}: {parsed.hostname} is not a loopback address; "
                "pass --allow-remote to benchmark another machine"
            )
        spec = TargetSpec(name, "http", url=url.rstrip("/"))
    for option in options:
        key, _, value = option.partition("=")
        if key == "token" and spec.kind == "http":
            spec.token = value
        elif key == "project" and spec.kind == "http":
            spec.project = value
        elif key == "compression" and value in COMPRESSIONS:
            spec.compression = value  # narrowed by the check above
        elif key == "compression":
            raise TargetError(f"--target {name}: compression must be auto, on or off")
        else:
            known = "token=, project=, compression=" if spec.kind == "http" else "compression="
            raise TargetError(f"--target {name}: unknown option {key!r} ({known})")
    return spec


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class SpawnedServer:
    """``objstore serve`` in a subprocess over a temporary store, with project and token."""

    workers: int = 1
    keep: bool = False
    project: str = "bench"
    extra_projects: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    data: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="objstore-bench-")))
    url: str = ""
    token: str = ""
    proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60) -> SpawnedServer:
        from objstore.auth import AuthStore

        auth = AuthStore(self.data / "auth")
        for project in (self.project, *self.extra_projects):
            auth.create_project(project, owner="bench")
        self.token = auth.create_token("bench", name="objstore-bench")[1]
        auth.close()
        return self._launch(timeout)

    def restart(self, timeout: float = 60) -> SpawnedServer:
        """A fresh server process on the same store (to measure one phase's memory alone)."""
        keep, self.keep = self.keep, True
        self.stop()
        self.keep = keep
        return self._launch(timeout)

    def _launch(self, timeout: float) -> SpawnedServer:
        port = _free_port()
        self.url = f"http://127.0.0.1:{port}"
        # its banner and log go to a file in its store dir, not into the harness's terminal
        with (self.data / "server.log").open("ab") as log:
            self.proc = self._popen(port, log)
        import httpx

        deadline = time.monotonic() + timeout
        while True:
            try:
                if httpx.get(f"{self.url}/api/health", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                said = self.log_tail()
                self.stop()
                raise TargetError(
                    "the spawned objstore server did not start" + (f": {said}" if said else "")
                )
            time.sleep(0.2)

    def log_tail(self, lines: int = 5) -> str:
        """The last lines the server wrote (its log is ``server.log`` in its store dir)."""
        try:
            text = (self.data / "server.log").read_text(errors="replace")
        except OSError:
            return ""
        return " | ".join(text.strip().splitlines()[-lines:])

    def _popen(self, port: int, log: Any) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "objstore.cli",
                "serve",
                "--data",
                str(self.data),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                str(self.workers),
                "--log-level",
                "warning",
            ],
            env={
                **os.environ,
                "OBJSTORE_MAX_OBJECT_MB": os.environ.get("OBJSTORE_MAX_OBJECT_MB", "64"),
                **self.env,
            },
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def _pids(self) -> list[int]:
        if self.proc is None:
            return []
        pid = self.proc.pid
        try:
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except OSError:
            children = []
        return [pid, *(int(c) for c in children)]

    def memory_mb(self, *fields: str) -> dict[str, float]:
        """Fields of /proc/PID/status (VmHWM, RssAnon, RssFile...) summed over the server and
        its workers, in MB (Linux). RssFile is mostly the LMDB map: reclaimable page cache."""
        totals = dict.fromkeys(fields, 0.0)
        for pid in self._pids():
            with contextlib.suppress(OSError):
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    key, _, value = line.partition(":")
                    if key in totals:
                        totals[key] += int(value.split()[0]) / 1024
        return totals

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if not self.keep:
            shutil.rmtree(self.data, ignore_errors=True)
