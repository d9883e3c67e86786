"""Client benchmark: objstore's client vs specklepy's transports, against objstore servers.

    python -m benchmarks.bench_client --objects 100000

On one generated graph, each client against its own spawned server, started empty (a commit
costs more as a store fills, so a client sending second into a shared one would be slowed):
  cold send      objstore.send(objects) through an empty LMDB cache | ServerTransport +
                 SQLiteTransport save/end_write (what operations.send does with its default
                 cache, minus serialisation)
  cold receive   objstore.receive into an empty LMDB cache | ServerTransport
                 .copy_object_and_children into an empty SQLiteTransport (operations.receive)
  half-warm      the cache already holds half the objects (not the root)
  warm receive   everything cached: objstore.receive | SQLiteTransport reads of root + children
Prints objects/s per client and the request count of objstore's warm receive (target: 0).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

from objstore.bench.targets import SpawnedServer

MB = 1e6


def _timed(fn: Any) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")

    import objstore
    from objstore.client import Remote, receive, send
    from objstore.graphgen import batches, generate

    graph = generate(args.objects, seed=args.seed)
    n = len(graph)
    half = [(i, d) for i, d in graph.objects[:-1]][::2]
    print(f"graph: {n:,} objects, {graph.total_bytes / MB:,.1f} MB", flush=True)
    times: dict[str, dict[str, float]] = {}
    extra: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-client-") as tmp_name:
        tmp = Path(tmp_name)
        os.environ["SPECKLE_USERDATA_PATH"] = str(tmp / "speckle")
        from specklepy.transports.server import ServerTransport
        from specklepy.transports.sqlite import SQLiteTransport

        server = SpawnedServer(project="ours", data=tmp / "data").start()
        other = SpawnedServer(project="theirs", data=tmp / "data-theirs")
        try:
            other.start()
            token = server.token
            # -- cold send ----------------------------------------------------------------------
            remote = Remote(server.url, token, "ours")
            with objstore.open(tmp / "send-cache") as send_cache:
                ours = _timed(lambda: send(graph.objects, remote, cache=send_cache))
            texts = [(i, d.decode()) for i, d in graph.objects]

            def speckle_send() -> None:
                cache = SQLiteTransport(base_path=str(tmp / "sq-send"), scope="send")
                transport = ServerTransport("theirs", url=other.url, token=other.token)
                for t in (cache, transport):
                    t.begin_write()
                for object_id, text in texts:
                    cache.save_object(object_id, text)
                    transport.save_object(object_id, text)
                for t in (cache, transport):
                    t.end_write()

            theirs = _timed(speckle_send)
            times["cold send"] = {"objstore": ours, "specklepy": theirs}
            print("  cold send done", flush=True)

            # -- cold receive -------------------------------------------------------------------
            def receive_both(cache: Any, sq: Any) -> tuple[dict[str, float], Remote]:
                """objstore.receive into ``cache``; ServerTransport into SQLite ``sq``."""
                remote = Remote(server.url, token, "ours")
                ours = _timed(lambda: receive(graph.root_id, remote, cache))
                theirs = _timed(
                    lambda: ServerTransport(
                        "theirs", url=other.url, token=other.token
                    ).copy_object_and_children(graph.root_id, sq)
                )
                return {"objstore": ours, "specklepy": theirs}, remote

            cold_cache = objstore.open(tmp / "cold-cache")
            sq_cold = SQLiteTransport(base_path=str(tmp / "sq-cold"), scope="cold")
            cold, _ = receive_both(cold_cache, sq_cold)
            times["cold receive"] = cold
            print("  cold receive done", flush=True)

            # -- half-warm receive --------------------------------------------------------------
            half_cache = objstore.open(tmp / "half-cache")
            for body in batches(half):
                half_cache.put("ours", body)
            sq_half = SQLiteTransport(base_path=str(tmp / "sq-half"), scope="half")
            sq_half.begin_write()
            for object_id, text in ((i, d.decode()) for i, d in half):
                sq_half.save_object(object_id, text)
            sq_half.end_write()
            half_warm, remote = receive_both(half_cache, sq_half)
            extra["half-warm objstore objects downloaded"] = remote.stats.objects_downloaded
            times["half-warm receive"] = half_warm
            print("  half-warm receive done", flush=True)

            # -- warm receive -------------------------------------------------------------------
            remote = Remote(server.url, token, "ours")
            ours = _timed(lambda: receive(graph.root_id, remote, cold_cache))
            extra["warm objstore requests"] = sum(remote.stats.requests.values())

            def speckle_warm() -> None:
                root = sq_cold.get_object(graph.root_id)
                assert root is not None
                for child in json.loads(root)["__closure"]:
                    sq_cold.get_object(child)

            theirs = _timed(speckle_warm)
            times["warm receive"] = {"objstore": ours, "specklepy": theirs}
            cold_cache.close()
            half_cache.close()
        finally:
            server.stop()
            other.stop()

    print(
        f"\n| workload ({n:,} objects) | objstore client | specklepy | ratio |\n|---|---|---|---|"
    )
    for workload, t in times.items():
        print(
            f"| {workload} | {n / t['objstore']:,.0f} obj/s | {n / t['specklepy']:,.0f} obj/s "
            f"| {t['specklepy'] / t['objstore']:.1f}x |"
        )
    for key, value in extra.items():
        print(f"{key}: {value:,}")
    if args.json:
        args.json.write_text(json.dumps({"objects": n, "seconds": times, **extra}, indent=1))


if __name__ == "__main__":
    main()
