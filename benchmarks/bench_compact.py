"""Compaction benchmark: space a deleted project leaves behind, and what compact() gives back.

    python -m benchmarks.bench_compact --objects 200000 --share 0.01

Puts a generated model into project ``a``, a random ``--share`` of its objects into project
``b`` (deduplicated: b's rows point at a's frames), deletes ``a`` and compacts. Prints stored
bytes at each step and how long delete, compact and verify took.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

MB = 1e6


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=200_000)
    parser.add_argument("--share", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    import objstore
    from objstore.graphgen import batches, generate
    from objstore.limits import Limits

    graph = generate(args.objects, seed=args.seed)
    shared = random.Random(args.seed).sample(graph.objects, int(len(graph) * args.share))
    print(
        f"graph: {len(graph):,} objects, {graph.total_bytes / MB:,.1f} MB; b shares {len(shared):,}"
    )
    with (
        tempfile.TemporaryDirectory(prefix="bench-compact-") as tmp,
        objstore.open(Path(tmp) / "s", limits=Limits(1 << 30, 1 << 31)) as store,
    ):
        for body in batches(graph.objects):
            store.put("a", body)
        for body in batches(shared):
            store.put("b", body)
        full = store.stats().stored_bytes
        start = time.perf_counter()
        store.delete_project("a")
        deleted = time.perf_counter() - start
        left = store.stats().stored_bytes
        start = time.perf_counter()
        report = store.compact()
        compacted = time.perf_counter() - start
        after = store.stats().stored_bytes
        start = time.perf_counter()
        ok = store.verify().ok
        verified = time.perf_counter() - start
        if not all(store.get("b", i) == d for i, d in shared):
            raise SystemExit("b reads back differently after compaction")
    print("| step | stored | took |\n|---|---|---|")
    print(f"| a and b stored | {full / MB:,.1f} MB | |")
    print(f"| a deleted | {left / MB:,.1f} MB | {deleted:.2f} s |")
    print(f"| compacted | {after / MB:,.1f} MB | {compacted:.2f} s |")
    print(f"| verify ({'ok' if ok else 'PROBLEMS'}) | | {verified:.2f} s |")
    print(
        f"compact rewrote {report.packs_rewritten:,} packs into {report.packs_written:,}, "
        f"moved {report.frames_moved:,} objects, freed {report.bytes_freed / MB:,.1f} MB"
    )


if __name__ == "__main__":
    main()
