"""The ingest floor: what the libraries alone cost to store a graph, beside the engine's put_many.

    python -m benchmarks.bench_floor --objects 100000 --repeat 3

"floor" does only what any store meeting the engine's rules must do with the libraries it
uses, and nothing else: msgspec decodes each object's id and __closure, xxh3 hashes it, zstd
compresses it with a dictionary trained on the first batch (level 1, one thread), frames are
laid end to end in 64 KB packs and py-lmdb puts an object row, an index row, the packs and
the closures, one fsync'd transaction per batch. No checks (ids, sizes, UTF-8, depths), no
deduplication across batches or projects, no reference counts, no overlap of stages. The
engine's put_many does all of those, with zstd on a helper thread beside the row puts.

Both run in this process on the same batches (the client cache's: 50k objects / 32 MB),
alternating, each into a new store; the table gives medians of wall and CPU seconds (this
process's, all threads). A cold send through a cache moves every object through two such
ingests (the local cache's and the server's), so with client and server on one machine twice
the floor's CPU over its cores bounds how fast such a send can be there.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path


def _floor(path: Path, batches: list[list[bytes]], parts: dict[str, float]) -> None:
    """Store ``batches`` the least way (see the module docstring), adding each stage's
    seconds to ``parts``."""
    import lmdb
    import msgspec
    import xxhash

    from objstore.codec import _head_decoder  # the engine's own head: id and __closure
    from objstore.compression import Codec, train_dictionary
    from objstore.engine.layout import PACK_BYTES, pack_frames  # the engine's own packing

    env = lmdb.open(str(path), map_size=1 << 34, max_dbs=4, writemap=True)
    objects, index, packs, closures = (env.open_db(name) for name in (b"o", b"i", b"p", b"c"))
    compressor = Codec()  # the engine's zstd settings: level 1, a trained dictionary
    pack_number = 1
    try:
        for datas in batches:
            start = time.perf_counter()
            heads = list(map(_head_decoder.decode, datas))
            digests = list(map(xxhash.xxh3_128_digest, datas))
            heads_done = time.perf_counter()
            if not compressor.has_dictionary(1):
                trained = train_dictionary(datas)
                assert trained is not None
                compressor.add_dictionary(1, trained)
            frames = [bytes(f) for f in compressor.compress_frames(datas, 1, threads=1)]
            zstd_done = time.perf_counter()
            by_digest = dict(zip(digests, frames, strict=True))
            packs_made, _, placed = pack_frames(list(by_digest), by_digest, pack_number, PACK_BYTES)
            pack_number += len(packs_made)
            locations = list(map(placed.__getitem__, digests))
            keys = [b"\0\0\0\1" + str(head.id).encode() for head in heads]
            with env.begin(write=True) as txn:
                txn.cursor(objects).putmulti(
                    sorted(zip(keys, map(bytes.__add__, digests, locations), strict=True))
                )
                txn.cursor(index).putmulti(sorted(zip(digests, locations, strict=True)))
                txn.cursor(packs).putmulti(packs_made, append=True)
                txn.cursor(closures).putmulti(
                    [
                        (place[:12], msgspec.json.encode(head.closure))
                        for place, head in zip(locations, heads, strict=True)
                        if head.closure
                    ]
                )
            done = time.perf_counter()
            parts["heads, hashes"] += heads_done - start
            parts["zstd"] += zstd_done - heads_done
            parts["packs, rows, commit"] += done - zstd_done
    finally:
        env.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=100_000, help="graph size")
    parser.add_argument("--seed", type=int, default=0, help="graph generator seed")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each, alternating")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be 1 or more")

    import objstore
    from objstore import codec
    from objstore.client.transfer import CACHE_BATCH, CACHE_BATCH_BYTES
    from objstore.graphgen import generate, groups

    graph = generate(args.objects, seed=args.seed)
    batches = [
        [data for _, data in group]
        for group in groups(graph.objects, CACHE_BATCH, CACHE_BATCH_BYTES)
    ]
    print(
        f"graph: {len(graph):,} objects, {graph.total_bytes / 1e6:,.1f} MB, {len(batches)} batches"
    )

    def engine(path: Path) -> None:
        with objstore.open(path) as store:
            records = (codec.prepare(batch, store.limits) for batch in batches)
            for _ in store.iter_put_records("bench", records):
                pass

    parts: dict[str, float] = dict.fromkeys(("heads, hashes", "zstd", "packs, rows, commit"), 0.0)
    ways: dict[str, Callable[[Path], None]] = {
        "engine put_many": engine,
        "floor": lambda path: _floor(path, batches, parts),
    }
    seconds: dict[str, list[tuple[float, float]]] = {name: [] for name in ways}
    for run in range(args.repeat):
        for name in list(ways)[:: 1 if run % 2 == 0 else -1]:
            with tempfile.TemporaryDirectory(prefix="bench-floor-") as tmp:
                gc.collect()
                wall, cpu = time.perf_counter(), time.process_time()
                ways[name](Path(tmp) / "s")
                seconds[name].append((time.perf_counter() - wall, time.process_time() - cpu))
    print(f"\n| {len(graph):,} objects | wall s (median) | CPU s (median) | objects/s |")
    print("|---|---|---|---|")
    for name, runs in seconds.items():
        wall = statistics.median(w for w, _ in runs)
        cpu = statistics.median(c for _, c in runs)
        print(f"| {name} | {wall:.2f} | {cpu:.2f} | {len(graph) / wall:,.0f} |")
    split = ", ".join(f"{k} {v / args.repeat:.2f} s" for k, v in parts.items())
    print(f"floor, per run: {split}")


if __name__ == "__main__":
    main()
