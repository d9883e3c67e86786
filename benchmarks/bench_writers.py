"""Concurrent writers: many threads putting small batches into one store (a server's uploads).

    python -m benchmarks.bench_writers --objects 50000 --batch 100,570 --writers 1,4,16

Each row puts the same objects, cut into batches of ``--batch`` objects (570 is about
specklepy's 1 MB upload), from ``--writers`` threads into a fresh store, and prints objects/s,
how many transactions the batches took (group commit shares one disk sync among the batches
queued behind a commit) and the speed against one writer with the same batches.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path


def run(objects: list[bytes], batch: int, writers: int, workdir: Path) -> tuple[float, int]:
    """(seconds, transactions) to put ``objects`` in batches of ``batch`` from ``writers``."""
    import objstore

    batches = [objects[i : i + batch] for i in range(0, len(objects), batch)]
    with objstore.open(workdir) as store:
        env = store.backend._env  # type: ignore[attr-defined]
        before = env.info()["last_txnid"]
        failures: list[BaseException] = []

        def write(share: list[list[bytes]]) -> None:
            try:
                for one in share:
                    store.put("p", one)
            except BaseException as exc:
                failures.append(exc)

        threads = [
            threading.Thread(target=write, args=(batches[k::writers],)) for k in range(writers)
        ]
        start = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        seconds = time.perf_counter() - start
        if failures:
            raise failures[0]
        if store.count("p") != len(objects):
            raise AssertionError(f"stored {store.count('p')} of {len(objects)} objects")
        return seconds, env.info()["last_txnid"] - before


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=50_000)
    parser.add_argument("--batch", default="100,570", help="objects per batch, comma-separated")
    parser.add_argument("--writers", default="1,4,16", help="thread counts, comma-separated")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    from objstore.graphgen import generate

    graph = generate(args.objects, seed=args.seed)
    objects = [data for _, data in graph.objects]
    print(f"graph: {len(objects):,} objects, {graph.total_bytes / 1e6:,.1f} MB")
    print(f"{'batch':>6} {'writers':>8} {'objects/s':>10} {'batches':>8} {'txns':>6} {'vs 1':>6}")
    with tempfile.TemporaryDirectory(prefix="bench-writers-") as tmp:
        for batch in map(int, args.batch.split(",")):
            alone: float | None = None
            for writers in map(int, args.writers.split(",")):
                workdir = Path(tmp) / f"{batch}-{writers}"
                seconds, txns = run(objects, batch, writers, workdir)
                rate = len(objects) / seconds
                alone = alone or rate
                count = -(-len(objects) // batch)
                print(
                    f"{batch:>6} {writers:>8} {rate:>10,.0f} {count:>8} {txns:>6}"
                    f" {rate / alone:>5.1f}x"
                )


if __name__ == "__main__":
    main()
