"""``objstore bench``: the harness, and ``bench compare``."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

from objstore import errors
from objstore.cli.stores import writable


def cmd_bench(args: argparse.Namespace) -> int:
    """Benchmark servers and the engine side by side, or compare two result files."""
    import json as _json

    from rich.console import Console

    from objstore import bench

    console = Console(stderr=True)
    if args.words:
        if args.words[0] != "compare" or len(args.words) != 3:
            print("objstore: use 'objstore bench compare OLD.json NEW.json'", file=sys.stderr)
            return 2
        old, new = (bench.report.load(Path(p)) for p in args.words[1:])
        rows, regressions = bench.compare(old, new, args.threshold)
        if not rows:
            raise errors.InvalidResults(
                f"{args.words[1]} and {args.words[2]} measure no target, client, workload and "
                "concurrency in common: nothing to compare"
            )
        bench.report.print_compare(rows)
        if regressions:
            print(f"{len(regressions)} regression(s) beyond {args.threshold:.0%}", file=sys.stderr)
            return 1
        print(f"no regression beyond {args.threshold:.0%}", file=sys.stderr)
        return 0
    specs = [bench.parse_target(t, allow_remote=args.allow_remote) for t in args.target or []]
    if args.spawn:
        specs.append(bench.TargetSpec(f"objstore-{args.spawn}w", "spawn", workers=args.spawn))
    if not specs:
        print("objstore: give at least one --target (or --spawn)", file=sys.stderr)
        return 2
    try:
        chosen = args.workloads.split(",") if args.workloads else bench.WORKLOADS
        workloads = bench.workloads_named(chosen)
    except bench.TargetError as exc:
        print(f"objstore: {exc}", file=sys.stderr)
        return 2
    writable(args.out, "--out")
    writable(args.chart, "--chart")
    if args.chart and importlib.util.find_spec("matplotlib") is None:  # not after the run
        print("objstore: --chart needs matplotlib: pip install 'objstore[bench]'", file=sys.stderr)
        return 2
    with console.status("objstore bench") as status:
        runner = bench.Runner(
            specs,
            bench.GraphSource.parse(args.graph, seed=args.seed),
            workloads=workloads,
            clients=args.clients.split(","),
            concurrency=args.concurrency,
            repeat=args.repeat,
            max_seconds=args.max_seconds,
            keep=args.keep,
            progress=lambda label: status.update(f"objstore bench: {label}"),
        )
        doc = runner.run()
    shape = doc["graph"]
    print(
        f"graph: {shape['objects']:,} objects, {shape['bytes'] / 1e6:,.1f} MB, depth "
        f"{shape['depth']}, object size p50 {shape['size_p50']:,} B, p90 {shape['size_p90']:,}"
        f" B, p99 {shape['size_p99']:,} B, max {shape['size_max']:,} B",
        file=sys.stderr,
    )
    bench.print_table(doc)
    for note in doc["notes"]:
        print(note, file=sys.stderr)
    if args.out:
        Path(args.out).write_text(_json.dumps(doc, indent=1))
    if args.chart:
        bench.chart(doc, Path(args.chart))
    return 0
