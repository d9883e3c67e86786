"""The ``objstore`` command line's arguments."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable

import objstore
from objstore.cli.admin import cmd_compact, cmd_demo, cmd_project, cmd_stats, cmd_token, cmd_verify
from objstore.cli.bench import cmd_bench
from objstore.cli.serve import cmd_serve
from objstore.cli.transfer import cmd_cp, cmd_pull, cmd_push

DEFAULT_DATA = os.environ.get("OBJSTORE_DATA", "data")
# bench.WORKLOADS, for --help without importing the bench package (httpx, rich)
BENCH_WORKLOADS = (
    "cold send", "re-send", "download", "getobjects", "single GET", "diff 100k", "mixed",
)  # fmt: skip

Handler = Callable[[argparse.Namespace], int]


def _positive(text: str) -> int:
    """An argparse type: a whole number of at least 1."""
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"give a whole number of at least 1, not {text!r}")
    return int(text)


def _port(text: str) -> int:
    """An argparse type: a TCP port, 0 (any free one) to 65535."""
    if not text.strip().isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"give a port from 0 to 65535, not {text!r}")
    return int(text)


def _origins(text: str) -> str:
    """An argparse type: OBJSTORE_CORS_ORIGINS' value, checked (passed on as given)."""
    from objstore.server.settings import cors_origins  # the server's imports: serve's alone

    try:
        cors_origins(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _positives(text: str) -> list[int]:
    """An argparse type: comma separated whole numbers of at least 1 (``1,4,16``)."""
    try:
        return [_positive(part) for part in text.split(",")]
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"give whole numbers of at least 1, comma separated (1,4,16), not {text!r}"
        ) from None


def _seconds(text: str) -> float:
    """An argparse type: a number of seconds above 0."""
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"give a number of seconds above 0, not {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="objstore", description="objstore object store")
    parser.add_argument("--version", action="version", version=objstore.__version__)
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, fn: Handler, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--data", default=DEFAULT_DATA, help="store directory (env OBJSTORE_DATA)")
        p.set_defaults(func=fn)
        return p

    demo = add("demo", cmd_demo, "ingest a generated model and print stats")
    demo.add_argument(
        "--objects", type=int, default=20_000, help="about this many objects (default 20000)"
    )
    demo.add_argument("--seed", type=int, default=0, help="generator seed: same seed, same model")
    demo.add_argument("--project", default="demo", help="project to ingest into (default demo)")
    add("stats", cmd_stats, "print store statistics")
    verify = add("verify", cmd_verify, "re-check every checksum and reference")
    verify.add_argument(
        "--repair",
        action="store_true",
        help="first rewrite closure and object rows that disagree with their objects, and set "
        "every reference count from the objects that use it",
    )
    compact = add(
        "compact",
        cmd_compact,
        "give back the space deleted projects left among objects other projects still use",
    )
    compact.add_argument(
        "--min-dead",
        type=float,
        default=0.25,
        help="rewrite packs at least this share dead (default 0.25)",
    )
    compact.add_argument(
        "--dry-run", action="store_true", help="say what it would do, and change nothing"
    )

    serve = add("serve", cmd_serve, "serve Speckle's object REST routes over HTTP")
    serve.add_argument(
        "--host",
        default=os.environ.get("OBJSTORE_HOST", "127.0.0.1"),
        help="address to bind (OBJSTORE_HOST; default 127.0.0.1)",
    )
    # string defaults go through the type too: a bad OBJSTORE_PORT is named, not a traceback
    serve.add_argument(
        "--port",
        type=_port,
        default=os.environ.get("OBJSTORE_PORT", "8000"),
        help="port to listen on (OBJSTORE_PORT; default 8000)",
    )
    serve.add_argument(
        "--workers",
        type=_positive,
        default=os.environ.get("OBJSTORE_WORKERS", "1"),
        help="worker processes (OBJSTORE_WORKERS; default 1)",
    )
    serve.add_argument(
        "--cors-origins",
        type=_origins,
        default=os.environ.get("OBJSTORE_CORS_ORIGINS", "*"),
        help="origins whose browser apps may call the routes, comma separated; 'none' for "
        "none (OBJSTORE_CORS_ORIGINS; default *, as Speckle's server)",
    )
    serve.add_argument(
        "--log-level",
        default="info",
        choices=("critical", "error", "warning", "info", "debug", "trace"),
        help="uvicorn's log level (default info)",
    )

    project = add("project", cmd_project, "create, list, delete projects or set members")
    project.add_argument("action", choices=["create", "list", "delete", "member"])
    project.add_argument("name", nargs="?", help="the project (all but list)")
    project.add_argument("user", nargs="?", help="member: the user")
    project.add_argument("role", nargs="?", help="member: owner|contributor|reviewer|none")
    project.add_argument("--owner", help="create: the owning user")
    project.add_argument("--member", action="append", help="create: USER=ROLE (repeatable)")
    project.add_argument("--public", action="store_true", help="create: anyone may read")

    token = add("token", cmd_token, "create, list or revoke API tokens")
    token.add_argument("action", choices=["create", "list", "revoke"])
    token.add_argument("token_id", nargs="?", help="revoke: the token (or its 10-char id)")
    token.add_argument("--user", default="admin", help="create: the token's user (default admin)")
    token.add_argument(
        "--scopes",
        default="streams:read,streams:write",
        help="create: comma separated (default streams:read,streams:write)",
    )
    token.add_argument("--projects", help="limit to these projects (comma separated)")
    token.add_argument("--expires", help="e.g. 30d, 12h, 3600")
    token.add_argument("--name", help="create: a label shown by list")
    token.add_argument(
        "--replace",
        action="store_true",
        help="create: revoke this user's tokens of the same --name first",
    )

    def remote_flags(p: argparse.ArgumentParser, url: bool = True) -> None:
        if url:
            p.add_argument("--url", required=True, help="server base URL")
        p.add_argument("--token", help="API token (env OBJSTORE_TOKEN)")
        p.add_argument("--project", required=True, help="the project on the server")
        p.add_argument(
            "--cache", help="local cache store (env OBJSTORE_CACHE; default: the user data dir)"
        )
        p.add_argument(
            "--compression",
            choices=("auto", "on", "off"),  # remote.COMPRESSIONS; the CLI imports httpx lazily
            default="auto",
            help="compress request and response bodies (auto: unless the server is on loopback)",
        )

    push = sub.add_parser("push", help="upload a JSON document, array of objects or dump")
    push.add_argument(
        "file",
        help="a JSON document, a JSON array of objects with the root first (the download "
        "route's application/json), or an id<TAB>json dump (root first, as pull writes it, "
        "or last); - for stdin",
    )
    remote_flags(push)
    push.set_defaults(func=cmd_push)
    pull = sub.add_parser("pull", help="download a graph through the local cache")
    pull.add_argument("root_id", help="the graph's root object id")
    pull.add_argument("-o", "--output", help="file to write (default, or -: stdout)")
    pull.add_argument(
        "--format",
        choices=["dump", "json"],
        help="id<TAB>json lines, or the recomposed document (default: json when OUTPUT ends "
        "in .json, else dump)",
    )
    remote_flags(pull)
    pull.set_defaults(func=cmd_pull)
    cp = sub.add_parser(
        "cp", help="copy a graph between a local store dir and a server URL, or two servers"
    )
    cp.add_argument("src", help="a local store directory or a server URL")
    cp.add_argument("dst", help="a server URL, or a local store directory if src is a URL")
    cp.add_argument("--root", required=True, help="root object id")
    cp.add_argument(
        "--local-project", help="the graph's project in the local store (default: --project)"
    )
    cp.add_argument("--to-project", help="between servers: the project on dst (default: --project)")
    cp.add_argument("--to-token", help="between servers: the token for dst (default: --token)")
    remote_flags(cp, url=False)
    cp.set_defaults(func=cmd_cp)

    bench = sub.add_parser(
        "bench",
        help="benchmark object transport of servers and the engine, or compare two runs",
        description="objstore bench --target NAME=URL[,token=T,project=P] | NAME=lmdb:DIR | "
        "NAME=spawn[:WORKERS] ... ;  objstore bench compare OLD.json NEW.json",
    )
    bench.add_argument("words", nargs="*", help="'compare OLD.json NEW.json'")
    bench.add_argument(
        "--target",
        action="append",
        help="NAME=URL[,token=T,project=P], NAME=lmdb:DIR or NAME=spawn[:WORKERS]; repeatable",
    )
    bench.add_argument(
        "--spawn",
        type=_positive,
        nargs="?",
        const=1,
        metavar="WORKERS",
        help="also start a local objstore server with a temp store",
    )
    bench.add_argument(
        "--graph",
        default="small",
        help="small|medium|large (10k, 100k, 1M objects), a size (5000, 50k, 2M) or a dump",
    )
    bench.add_argument("--seed", type=int, default=0, help="generator seed (default 0)")
    bench.add_argument("--workloads", help=f"comma separated, of: {', '.join(BENCH_WORKLOADS)}")
    bench.add_argument(
        "--clients",
        default="objstore,specklepy",
        help="comma separated, of: objstore, specklepy (where installed); default both",
    )
    bench.add_argument("--concurrency", type=_positives, default=[4], help="e.g. 1,4,16")
    bench.add_argument(
        "--repeat", type=_positive, default=1, help="runs of each workload (the table: medians)"
    )
    bench.add_argument(
        "--max-seconds", type=_seconds, default=300.0, help="cap per workload (default 300)"
    )
    bench.add_argument("--out", help="write every figure as JSON here")
    bench.add_argument("--chart", help="write a PNG chart here (needs matplotlib)")
    bench.add_argument("--allow-remote", action="store_true", help="allow non-loopback target URLs")
    bench.add_argument("--keep", action="store_true", help="keep spawned stores and projects")
    bench.add_argument(
        "--threshold",
        type=float,
        default=0.2,
        help="compare: flag changes worse than this fraction",
    )
    bench.set_defaults(func=cmd_bench)
    return parser
