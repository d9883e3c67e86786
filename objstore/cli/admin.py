"""The commands that look after a store and its server's projects and tokens: project,
token, demo, stats, verify, compact."""

from __future__ import annotations

import argparse
import sys
import time

import objstore
from objstore import errors, graphgen
from objstore.auth import ROLES, AuthStore
from objstore.cli import progress
from objstore.cli.stores import admin_auth, is_cache, open_store


def _cache_project(args: argparse.Namespace) -> int:
    """``project list|delete`` on a client cache: its store's projects, no auth (``create``
    and ``member`` are refused, naming why)."""
    if args.action not in ("list", "delete"):
        admin_auth(args).close()  # raises
    with open_store(args) as store:
        if args.action == "list":
            for project in store.projects():
                print(f"{project}\t{store.count(project):,} objects")
            return 0
        if args.name not in store.projects():
            print(f"no project {args.name!r} in {args.data}", file=sys.stderr)
            return 1
        removed = store.delete_project(args.name)
    print(f"deleted project {args.name} ({removed:,} objects)")
    return 0


_DURATION = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _duration(text: str) -> float:
    """'90s', '15m', '12h', '30d' or plain seconds."""
    unit = text[-1:].lower()
    try:
        seconds = float(text[:-1]) * _DURATION[unit] if unit in _DURATION else float(text)
    except ValueError:
        raise ValueError(
            f"--expires takes a duration such as 90s, 15m, 12h, 30d or seconds, got {text!r}"
        ) from None
    if seconds <= 0:
        raise ValueError(f"--expires must be more than 0, got {text!r}")
    return seconds


def cmd_project(args: argparse.Namespace) -> int:
    if is_cache(args):
        return _cache_project(args)
    auth = admin_auth(args)
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
            with open_store(args, create=True) as store:
                removed = store.delete_project(args.name)
            if not existed and not removed:
                print(f"no project {args.name!r}", file=sys.stderr)
                return 1
            print(f"deleted project {args.name} ({removed:,} objects)")
        elif args.action == "member":
            if args.role != "none" and args.role not in ROLES:
                roles = ", ".join([*ROLES, "none"])
                raise errors.ObjstoreError(f"unknown role {args.role!r}: use one of {roles}")
            role = None if args.role == "none" else args.role
            project = auth.update_project(args.name, members={args.user: role})
            print(f"{project.name} members: {project.members}")
    finally:
        auth.close()
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    auth = admin_auth(args)
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
            for note in _token_reach(auth, token.user, token.projects):
                print(f"note: {note}", file=sys.stderr)
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


def _token_reach(auth: AuthStore, user: str, projects: list[str] | None) -> list[str]:
    """What a new token's projects do not give its user yet: a token reaches a project only
    as far as the user's role there (or its public read) lets it, so an admin is told."""
    notes = []
    if projects is None and not any(user in p.members for p in auth.list_projects()):
        notes.append(
            f"{user!r} is a member of no project yet: the token can only read public ones "
            f"(objstore project member NAME {user} ROLE)"
        )
    for name in projects or []:
        project = auth.get_project(name)
        if project is None:
            notes.append(f"there is no project {name!r} yet")
        elif user not in project.members:
            reach = "can only read it (it is public)" if project.public else "cannot use it"
            notes.append(
                f"{user!r} is not a member of {name!r}: the token {reach} until {user!r} has a "
                f"role there (objstore project member {name} {user} ROLE)"
            )
    return notes


def cmd_demo(args: argparse.Namespace) -> int:
    """Ingest a generated model into a store and print what the engine did."""
    graph = graphgen.generate(args.objects, seed=args.seed)
    print(
        f"generated {len(graph):,} objects, {graph.total_bytes / 1e6:.1f} MB, root {graph.root_id}"
    )
    with open_store(args, create=True) as store:
        start = time.perf_counter()
        stored = store.put_many(args.project, graphgen.batches(graph.objects)).stored
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
    with open_store(args, readonly=True) as store:
        _print_stats(store)
        for project in store.projects():
            print(f"  {project}: {store.count(project):,} objects")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    with open_store(args, readonly=not args.repair) as store:
        if args.repair:  # one write transaction each, which cannot count as it goes
            with progress.bar("repair rows", None, counted=False):
                rows = store.repair_rows()  # first: a row moved back changes what counts find
            with progress.bar("recount", None, counted=False):
                counts = store.recount()
            print(f"repaired {rows:,} closure or object rows, {counts:,} reference counts")
        try:
            total: int | None = store.stats().blobs
        except errors.ObjstoreError:  # damage where stats reads: verify says what and where
            total = None
        with progress.bar("verify", total) as tick:
            report = store.verify(tick.advance)
    print(f"checked {report.blobs_checked:,} blobs, {report.objects_checked:,} objects")
    for problem in report.problems:
        print(f"PROBLEM: {problem}")
    print("ok" if report.ok else f"{len(report.problems)} problems")
    if report.disagreeing:
        print(
            f"{report.disagreeing:,} closure or object rows disagree with their objects: "
            "`objstore verify --repair` rewrites them from the objects"
        )
    if report.miscounted:
        print(
            f"{report.miscounted:,} reference counts are wrong: `objstore verify --repair` "
            "sets them from the objects"
        )
    return 0 if report.ok else 1


def cmd_compact(args: argparse.Namespace) -> int:
    if not 0 < args.min_dead <= 1:
        print("error: --min-dead must be more than 0 and at most 1", file=sys.stderr)
        return 2
    with open_store(args, readonly=args.dry_run) as store:
        before = store.stats().stored_bytes
        report = store.compact(args.min_dead, dry_run=args.dry_run)
    rewrote, moved, freed = (
        ("would rewrite", "move", "free") if args.dry_run else ("rewrote", "moved", "freed")
    )
    print(
        f"{rewrote} {report.packs_rewritten:,} packs into {report.packs_written:,}, {moved} "
        f"{report.frames_moved:,} objects, {freed} {report.bytes_freed / 1e6:,.1f} MB of "
        f"{before / 1e6:,.1f} MB stored"
    )
    return 0
