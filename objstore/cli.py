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

DEFAULT_DATA = os.environ.get("OBJSTORE_DATA", "data")

Handler = Callable[[argparse.Namespace], int]


def _open(args: argparse.Namespace) -> objstore.Store:
    return objstore.open(Path(args.data))


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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except objstore.ObjstoreError as exc:
        print(f"objstore: {exc}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
