"""Receive into a partly filled cache: getobjects for what it lacks vs the children stream.

    python -m benchmarks.bench_receive_paths --objects 100000

One spawned server holds a generated graph. For each share of its children a cache lacks,
two receives into fresh caches holding the rest: one made to ask getobjects for just the
lacking objects, one made to take the whole object+children stream (every child, held ones
too). Prints seconds and objects downloaded for each, and which one ``receive`` picks at
``transfer.STREAM_SHARE``: the cutover it uses should sit where the two cross.
"""

from __future__ import annotations

import argparse
import gc
import tempfile
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lacking", default="0.5,0.67,0.8,0.9,1.0", help="shares, comma separated")
    args = parser.parse_args(argv)

    import objstore
    from objstore.bench.targets import SpawnedServer
    from objstore.client import Remote, receive, send, transfer
    from objstore.graphgen import batches, generate

    graph = generate(args.objects, seed=args.seed)
    children = graph.objects[:-1]
    share = transfer.STREAM_SHARE
    print(f"graph: {len(graph):,} objects; receive streams at {share:.0%} lacking or more")
    print("| lacking | getobjects | stream | downloaded (getobjects, stream) | receive takes |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="bench-receive-") as tmp_name:
        tmp = Path(tmp_name)
        server = SpawnedServer(project="p", data=tmp / "data").start()
        try:
            send(graph.objects, Remote(server.url, server.token, "p"))
            runs = 0
            for lacking in (float(x) for x in args.lacking.split(",")):
                held = children[: round(len(children) * (1 - lacking))]
                seconds, downloaded = {}, {}
                # STREAM_SHARE above 1 never streams; 0 streams whatever is missing
                for way, forced in (("getobjects", 1.5), ("stream", 0.0)):
                    runs += 1
                    with objstore.open(tmp / f"cache-{runs}") as cache:
                        cache.put_many("p", batches(held))
                        remote = Remote(server.url, server.token, "p")
                        transfer.STREAM_SHARE = forced
                        try:
                            gc.collect()
                            start = time.perf_counter()
                            receive(graph.root_id, remote, cache)
                            seconds[way] = time.perf_counter() - start
                        finally:
                            transfer.STREAM_SHARE = share
                        downloaded[way] = remote.stats.objects_downloaded
                        if cache.count("p") != len(graph):
                            raise SystemExit(f"{way} at {lacking:.0%}: the cache lacks objects")
                picks = "stream" if lacking >= share else "getobjects"
                print(
                    f"| {lacking:.0%} | {seconds['getobjects']:.2f} s | {seconds['stream']:.2f} s"
                    f" | {downloaded['getobjects']:,}, {downloaded['stream']:,} | {picks} |",
                    flush=True,
                )
        finally:
            server.stop()


if __name__ == "__main__":
    main()
