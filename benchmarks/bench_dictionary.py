"""A store's first zstd dictionary: fixed fastCOVER parameters vs zstd's own parameter search.

    python -m benchmarks.bench_dictionary --objects 10000

For each seed's generated graph, a dictionary trained on its first half both ways
(``compression.DICT_K``/``DICT_D`` as set, and 0/0, which has zstd search k and d), with the
training time and the second half's compressed size under each. Then a new store's put_many
of the whole graph with each, alternating, ``--repeat`` times: a new store trains its first
dictionary before its first batch can compress, so a small first write waits for it.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=10_000)
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=8)
    args = parser.parse_args(argv)

    import objstore
    from objstore import compression
    from objstore.compression import Codec, dictionary_samples, train_dictionary
    from objstore.graphgen import batches, generate

    fixed = (compression.DICT_K, compression.DICT_D)
    ways = {f"k {fixed[0]}, d {fixed[1]}": fixed, "zstd's search": (0, 0)}

    @contextlib.contextmanager
    def training_with(way: tuple[int, int]) -> Iterator[None]:
        """compression's k and d set to ``way`` meanwhile, the fixed ones again after."""
        compression.DICT_K, compression.DICT_D = way
        try:
            yield
        finally:
            compression.DICT_K, compression.DICT_D = fixed

    def trained(way: tuple[int, int], samples: list[bytes]) -> tuple[bytes, float]:
        with training_with(way):
            start = time.perf_counter()
            made = train_dictionary(samples)
            seconds = time.perf_counter() - start
        if made is None:
            raise SystemExit("zstd trained no dictionary from these samples")
        return made, seconds

    def compressed(dictionary: bytes, items: list[bytes]) -> int:
        codec = Codec()
        codec.add_dictionary(1, dictionary)
        return sum(map(len, codec.compress_many(items, 1)))

    print(f"| graph ({args.objects:,} objects) | " + " | ".join(ways) + " | size ratio |")
    print("|---|" + "---|" * (len(ways) + 1))
    for seed in range(args.seeds):
        objects = [data for _, data in generate(args.objects, seed=seed).objects]
        half = len(objects) // 2
        unseen = dictionary_samples(objects[half:])
        cells, sizes = [], []
        for way in ways.values():
            dictionary, took = trained(way, objects[:half])
            size = compressed(dictionary, unseen)
            sizes.append(size)
            cells.append(f"{took * 1000:.0f} ms, {size:,} B")
        print(f"| seed {seed} | " + " | ".join(cells) + f" | {sizes[0] / sizes[1]:.4f} |")

    graph = generate(args.objects, seed=0)
    given = list(batches(graph.objects))
    seconds: dict[str, list[float]] = {name: [] for name in ways}
    with tempfile.TemporaryDirectory(prefix="bench-dictionary-") as tmp:
        for run in range(args.repeat):
            for name, way in ways.items():
                with training_with(way), objstore.open(Path(tmp) / f"{run}-{way[0]}") as store:
                    gc.collect()
                    start = time.perf_counter()
                    store.put_many("p", given)
                    seconds[name].append(time.perf_counter() - start)
    runs = f"{args.repeat} runs each, alternating"
    print(f"\nnew store, put_many of {len(graph):,} objects ({runs}):")
    for name, times in seconds.items():
        print(
            f"  {name}: median {statistics.median(times):.3f} s "
            f"(min {min(times):.3f}, max {max(times):.3f})"
        )


if __name__ == "__main__":
    main()
