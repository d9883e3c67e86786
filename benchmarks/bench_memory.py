"""Memory benchmark: what reading a model of big objects holds, beside the model's size.

    python -m benchmarks.bench_memory --objects 500 --object-mb 1

One model of ``--objects`` meshes of ``--object-mb`` each (random hex: compresses ~2x) under
one root, read four ways, each with the most this process allocated at once during the read
(tracemalloc, so figures slow down) and, for HTTP reads, the server's peak heap (RssAnon,
sampled every 10 ms) above its start:
  1. the engine's children stream in this process, with the bulk-read budget
     (``CHUNK_STORED_BYTES``) and, as the peer, with no budget (a whole 2,048-id chunk decoded
     at once, as bulk reads did before the budget);
  2. a spawned server's object+children download and getobjects, read by objstore's client:
     this process's peak heap and the server's, sampled during the same read.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import objstore
from benchmarks.bench_server import MemorySampler
from objstore.bench.targets import SpawnedServer
from objstore.client import Remote
from objstore.engine.lmdb import reads as lmdb_reads

MB = 1e6


def _model(count: int, size: int) -> list[tuple[str, bytes]]:
    meshes = [
        (f"mesh{i:05d}", json.dumps({"id": f"mesh{i:05d}", "v": os.urandom(size // 2).hex()}))
        for i in range(count)
    ]
    root = json.dumps({"id": "root", "__closure": {i: 1 for i, _ in meshes}})
    return [(i, text.encode()) for i, text in [*meshes, ("root", root)]]


def _measure(
    read: Callable[[], Iterator[tuple[str, bytes]]], server: SpawnedServer | None = None
) -> tuple[int, float, float, float | None]:
    """(objects, seconds, peak MB this process allocated, peak server heap MB above its start)
    of one read. This process is measured with tracemalloc (exact, whatever the allocator kept
    from earlier work), the server by its RssAnon."""
    server_base = server.memory_mb("RssAnon")["RssAnon"] if server else 0.0
    with MemorySampler(server, every=0.01) if server else contextlib.nullcontext() as mem:
        tracemalloc.start()
        try:
            start = time.perf_counter()
            count = sum(1 for _ in read())
            seconds = time.perf_counter() - start
            peak = tracemalloc.get_traced_memory()[1] / MB
        finally:
            tracemalloc.stop()
    served = mem.peak["RssAnon"] - server_base if mem else None
    return count, seconds, peak, served


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=500)
    parser.add_argument("--object-mb", type=float, default=1.0)
    args = parser.parse_args(argv)
    model = _model(args.objects, int(args.object_mb * MB))
    total = sum(len(d) for _, d in model)
    print(f"model: {len(model):,} objects, {total / MB:,.0f} MB", flush=True)
    rows: list[tuple[str, int, float, float, float | None]] = []
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        with objstore.open(Path(tmp) / "engine") as store:
            store.put_many(
                "p", ([d for _, d in model[i : i + 20]] for i in range(0, len(model), 20))
            )
            budget = lmdb_reads.CHUNK_STORED_BYTES
            for label, limit in [
                (f"engine, {budget >> 20} MB budget", budget),
                ("engine, no budget", 1 << 62),
            ]:
                lmdb_reads.CHUNK_STORED_BYTES = limit
                try:
                    rows.append((label, *_measure(lambda: store.iter_with_children("p", "root"))))
                finally:
                    lmdb_reads.CHUNK_STORED_BYTES = budget
        server = SpawnedServer(data=Path(tmp) / "server").start()
        reads: dict[str, Callable[[Remote], Iterator[tuple[str, bytes]]]] = {
            "download": lambda remote: remote.download("root"),
            "getobjects": lambda remote: remote.get_many([i for i, _ in model]),
        }
        try:
            with Remote(server.url, server.token, server.project) as remote:
                remote.upload(model)
            for label, read in reads.items():
                server.restart()  # a fresh process on the same store: this read's heap alone
                with Remote(server.url, server.token, server.project) as remote:
                    measured = _measure(partial(read, remote), server)
                rows.append((f"objstore client, {label}", *measured))
        finally:
            server.stop()
    print("\n| read | objects/s | MB/s | reader peak MB (tracemalloc) | server peak heap MB |")
    print("|---|---|---|---|---|")
    for label, count, seconds, peak, served in rows:
        server_peak = "" if served is None else f"{served:,.0f}"
        print(
            f"| {label} | {count / seconds:,.0f} | {total / seconds / MB:,.0f} | {peak:,.0f} "
            f"| {server_peak} |"
        )


if __name__ == "__main__":
    main()
