"""Growing stores: how sends and receives hold up as the server's store and the cache fill.

    python -m benchmarks.bench_growth --objects 100000 --rounds 5

Generates ``--rounds`` graphs (different seeds), then against one spawned server (1 worker,
or ``--workers``) sends them one after the other into one project, and receives them one
after the other into one local cache. Prints each round's objects/s (of its graph) and the
round against the first: a commit's cost grows with the B-trees its random keys land in, so
later rounds show what a store that has been in use costs.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args(argv)

    import objstore
    from objstore.bench.targets import SpawnedServer
    from objstore.client import Remote, receive, send
    from objstore.graphgen import generate

    graphs = [generate(args.objects, seed=seed) for seed in range(args.rounds)]
    print(f"{args.rounds} graphs of {args.objects:,} objects; server with {args.workers} worker(s)")
    rates: dict[str, list[float]] = {"send": [], "receive": []}
    with tempfile.TemporaryDirectory(prefix="bench-growth-") as tmp:
        server = SpawnedServer(project="p", data=Path(tmp) / "server", workers=args.workers)
        server.start()
        try:
            for graph in graphs:
                remote = Remote(server.url, server.token, "p")
                start = time.perf_counter()
                send(graph.objects, remote)
                rates["send"].append(len(graph) / (time.perf_counter() - start))
                remote.close()
            with objstore.open(Path(tmp) / "cache") as cache:
                for graph in graphs:
                    remote = Remote(server.url, server.token, "p")
                    start = time.perf_counter()
                    receive(graph.root_id, remote, cache)
                    rates["receive"].append(len(graph) / (time.perf_counter() - start))
                    remote.close()
                distinct = {object_id for graph in graphs for object_id, _ in graph.objects}
                if cache.count("p") != len(distinct):
                    raise AssertionError("the cache does not hold every object received")
        finally:
            server.stop()
    print(f"{'round':>5} {'send/s':>9} {'vs 1st':>7} {'receive/s':>10} {'vs 1st':>7}")
    for n in range(args.rounds):
        send_rate, receive_rate = rates["send"][n], rates["receive"][n]
        print(
            f"{n + 1:>5} {send_rate:>9,.0f}"
            f" {send_rate / rates['send'][0]:>6.0%} {receive_rate:>10,.0f}"
            f" {receive_rate / rates['receive'][0]:>6.0%}"
        )


if __name__ == "__main__":
    main()
