"""The ``objstore`` command line."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import objstore
from objstore import graphgen
from objstore.auth import AuthStore

DEFAULT_DATA = os.environ.get("OBJSTORE_DATA", "data")

Handler = Callable[[argparse.Namespace], int]


def _store_dir(data: str) -> Path:
    """Objects live in DATA/objects, auth state in DATA/auth."""
    return Path(data) / "objects"


def _open(args: argparse.Namespace) -> objstore.Store:
    return objstore.open(_store_dir(args.data))


def _auth(args: argparse.Namespace) -> AuthStore:
    return AuthStore(Path(args.data) / "auth")


_DURATION = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _duration(text: str) -> float:
    """'90s', '15m', '12h', '30d' or plain seconds."""
    unit = text[-1:].lower()
    if unit in _DURATION:
        return float(text[:-1]) * _DURATION[unit]
    return float(text)


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the HTTP server (uvicorn) on the store in --data."""
    import uvicorn

    os.environ["OBJSTORE_DATA"] = str(args.data)
    objstore.open(_store_dir(args.data)).close()  # create it (and fail early) in this process
    _auth(args).close()
    uvicorn.run(
        "objstore.server:create_app_from_env",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level=args.log_level,
    )
    return 0


def cmd_project(args: argparse.Namespace) -> int:
    auth = _auth(args)
    try:
        if args.action == "create":
            members = dict(m.split("=", 1) for m in args.member or [])
            project = auth.create_project(
                args.name, owner=args.owner, public=args.public, members=members
            )
            print(
                f"created project {project.name} (public={project.public}, "
                f"members={project.members})"
            )
        elif args.action == "list":
            for project in auth.list_projects():
                print(f"{project.name}\tpublic={project.public}\tmembers={project.members}")
        elif args.action == "delete":
            existed = auth.delete_project(args.name)
            with _open(args) as store:
                removed = store.delete_project(args.name)
            if not existed and not removed:
                print(f"no project {args.name!r}", file=sys.stderr)
                return 1
            print(f"deleted project {args.name} ({removed:,} objects)")
        elif args.action == "member":
            role = None if args.role == "none" else args.role
            project = auth.update_project(args.name, members={args.user: role})
            print(f"{project.name} members: {project.members}")
    finally:
        auth.close()
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    auth = _auth(args)
    try:
        if args.action == "create":
            if args.replace:
                for old in auth.list_tokens():
                    if old.user == args.user and old.name == (args.name or ""):
                        auth.revoke_token(old.id)
            token, secret = auth.create_token(
                args.user,
                scopes=args.scopes.split(","),
                projects=args.projects.split(",") if args.projects else None,
                expires_in=_duration(args.expires) if args.expires else None,
                name=args.name or "",
            )
            print(secret)
            print(
                f"token {token.id} for {token.user}: scopes {','.join(token.scopes)}"
                + (f", projects {','.join(token.projects)}" if token.projects else "")
                + (f", expires in {args.expires}" if args.expires else ""),
                file=sys.stderr,
            )
        elif args.action == "list":
            for token in auth.list_tokens():
                state = "expired" if token.expired() else "live"
                print(
                    f"{token.id}\t{token.user}\t{','.join(token.scopes)}\t"
                    f"{','.join(token.projects or ['*'])}\t{state}\t{token.name}"
                )
        elif args.action == "revoke":
            if not auth.revoke_token(args.token_id[:10]):
                print(f"no token {args.token_id!r}", file=sys.stderr)
                return 1
            print(f"revoked {args.token_id[:10]}")
    finally:
        auth.close()
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Ingest a generated model into a store and print what the engine did."""
    graph = graphgen.generate(args.objects, seed=args.seed)
    print(
        f"generated {len(graph):,} objects, {graph.total_bytes / 1e6:.1f} MB, root {graph.root_id}"
    )
    with _open(args) as store:
        start = time.perf_counter()
        stored = 0
        for batch in graphgen.batches(graph.objects):
            stored += store.put(args.project, batch).stored
        took = time.perf_counter() - start
        print(
            f"ingested into {args.data!s}/ project {args.project!r}: {stored:,} new objects "
            f"in {took:.2f}s ({len(graph) / took:,.0f} objects/s)"
        )
        start = time.perf_counter()
        stream = store.iter_with_children(args.project, graph.root_id)
        count = sum(1 for _ in stream)
        took = time.perf_counter() - start
        print(
            f"read root + children: {count:,} objects in {took:.2f}s "
            f"({count / took:,.0f} objects/s), {stream.missing} missing"
        )
        _print_stats(store)
    return 0


def _print_stats(store: objstore.Store) -> None:
    s = store.stats()
    print(
        f"projects {s.projects}, objects {s.objects:,}, distinct blobs {s.blobs:,}, "
        f"closures {s.closures:,}\nraw JSON {s.raw_bytes / 1e6:,.1f} MB, stored "
        f"{s.stored_bytes / 1e6:,.1f} MB ({s.ratio:.0%}), file {s.file_bytes / 1e6:,.1f} MB, "
        f"dictionaries {s.dictionaries}"
    )


def cmd_stats(args: argparse.Namespace) -> int:
    with _open(args) as store:
        _print_stats(store)
        for project in store.projects():
            print(f"  {project}: {store.count(project):,} objects")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    with _open(args) as store:
        report = store.verify()
    print(f"checked {report.blobs_checked:,} blobs, {report.objects_checked:,} objects")
    for problem in report.problems:
        print(f"PROBLEM: {problem}")
    print("ok" if report.ok else f"{len(report.problems)} problems")
    return 0 if report.ok else 1


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
    demo.add_argument("--objects", type=int, default=20_000)
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--project", default="demo")
    add("stats", cmd_stats, "print store statistics")
    add("verify", cmd_verify, "re-check every checksum and reference")

    serve = add("serve", cmd_serve, "serve Speckle's object REST routes over HTTP")
    serve.add_argument("--host", default=os.environ.get("OBJSTORE_HOST", "127.0.0.1"))
    serve.add_argument("--port", type=int, default=int(os.environ.get("OBJSTORE_PORT", "8000")))
    serve.add_argument("--workers", type=int, default=int(os.environ.get("OBJSTORE_WORKERS", "1")))
    serve.add_argument("--log-level", default="info")

    project = add("project", cmd_project, "create, list, delete projects or set members")
    project.add_argument("action", choices=["create", "list", "delete", "member"])
    project.add_argument("name", nargs="?")
    project.add_argument("user", nargs="?", help="member: the user")
    project.add_argument("role", nargs="?", help="member: owner|contributor|reviewer|none")
    project.add_argument("--owner", help="create: the owning user")
    project.add_argument("--member", action="append", help="create: USER=ROLE (repeatable)")
    project.add_argument("--public", action="store_true", help="create: anyone may read")

    token = add("token", cmd_token, "create, list or revoke API tokens")
    token.add_argument("action", choices=["create", "list", "revoke"])
    token.add_argument("token_id", nargs="?", help="revoke: the token (or its 10-char id)")
    token.add_argument("--user", default="admin")
    token.add_argument("--scopes", default="streams:read,streams:write")
    token.add_argument("--projects", help="limit to these projects (comma separated)")
    token.add_argument("--expires", help="e.g. 30d, 12h, 3600")
    token.add_argument("--name")
    token.add_argument(
        "--replace",
        action="store_true",
        help="create: revoke this user's tokens of the same --name first",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "project" and args.action != "list" and not args.name:
        parser.error(f"project {args.action} needs a project name")
    if args.command == "project" and args.action == "member" and not (args.user and args.role):
        parser.error("project member NAME USER ROLE")
    if args.command == "token" and args.action == "revoke" and not args.token_id:
        parser.error("token revoke needs the token or its id")
    try:
        code: int = args.func(args)
    except (objstore.ObjstoreError, ValueError) as exc:
        print(f"objstore: {exc}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
