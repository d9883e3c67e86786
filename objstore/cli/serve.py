"""``objstore serve``: the HTTP server on the store in --data."""

from __future__ import annotations

import argparse
import copy
import inspect
import os
import socket
import sys
from pathlib import Path
from typing import Any

import objstore
from objstore.cli.stores import auth_store


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the HTTP server (uvicorn) on the store in --data."""
    import uvicorn

    os.environ["OBJSTORE_DATA"] = str(args.data)
    os.environ["OBJSTORE_CORS_ORIGINS"] = args.cors_origins  # read by each worker's app
    # create it (and fail early) in this process; the server's store is always DATA/objects
    objstore.open(Path(args.data) / "objects").close()
    auth_store(args).close()
    config = uvicorn.Config(
        "objstore.server:create_app_from_env",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level=args.log_level,
        log_config=log_config(args.log_level),
    )
    from uvicorn.supervisors import Multiprocess

    sock = _tcp_socket(args)  # bound here: a port in use is one line, with any worker count
    try:
        if args.workers <= 1:
            uvicorn.Server(config).run(sockets=[sock])
        elif "target" in inspect.signature(Multiprocess).parameters:  # older uvicorn
            legacy: Any = Multiprocess
            legacy(config, target=uvicorn.Server(config).run, sockets=[sock]).run()
        else:
            Multiprocess(config, sockets=[sock]).run()
    except KeyboardInterrupt:
        pass
    return 0


def log_config(level: str) -> dict[str, Any]:
    """uvicorn's logging, with objstore's own loggers (a failure a response cannot report, a
    lost lock wake-up) on its stderr handler in its format, at ``level`` (uvicorn's names)."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    ours = "DEBUG" if level == "trace" else level.upper()
    config["loggers"]["objstore"] = {"handlers": ["default"], "level": ours, "propagate": False}
    return config


def _tcp_socket(args: argparse.Namespace) -> socket.socket:
    """The listening socket (shared by workers), created with proto=IPPROTO_TCP.

    uvicorn binds workers' socket with proto 0, and asyncio sets TCP_NODELAY only on accepted
    sockets whose proto is TCP: without it every small response waited ~40 ms (Nagle +
    delayed ACK). A port that cannot be had is an OSError naming it (uvicorn's own bind
    logged an error and a shutdown, and exited 3).
    """
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((args.host, args.port))
    except OSError as exc:
        sock.close()
        raise type(exc)(
            exc.errno, f"cannot listen on {args.host}:{args.port}: {exc.strerror}"
        ) from None
    sock.set_inheritable(True)
    workers = f"{args.workers} workers" if args.workers > 1 else "1 worker"
    print(
        f"objstore serving http://{args.host}:{sock.getsockname()[1]} with {workers} "
        "(Ctrl+C to stop)",
        file=sys.stderr,
    )
    return sock
