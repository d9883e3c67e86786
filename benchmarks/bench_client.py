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
  model send     a model in memory, serialised and sent, each client to a new empty server:
                 graph.decompose of the graph as a nested document + objstore.send through an
                 empty cache | operations.send of the same model as specklepy Base objects
                 (ServerTransport, its default SQLite cache)
  model receive  back into memory: objstore.receive into an empty cache + graph.recompose
                 (shared=True: one dict per object, as specklepy gives one Base per id) |
                 operations.receive (ServerTransport, an empty SQLiteTransport) to Base objects
Prints objects/s per client (the model rows: objects each client's serialiser made) and the
request count of objstore's warm receive (target: 0).
"""

from __future__ import annotations

import argparse
import gc
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
    """Seconds ``fn`` takes, after a full collection: the cyclic GC's debt for what the setup
    built (a model document made with GC off owes a pass over its millions of lists:
    about 1 s at 100k) is not charged to whichever client runs next."""
    gc.collect()
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _document(graph: Any) -> dict[str, Any]:
    """The graph as the nested JSON document a script holds in memory (chunked lists whole)."""
    import objstore
    from objstore.graph import recompose
    from objstore.graphgen import batches

    store = objstore.open_memory()
    store.put_many("model", batches(graph.objects))
    return recompose(graph.root_id, store, "model")


def _speckle_base(doc: dict[str, Any]) -> Any:
    """``doc`` as specklepy Base objects: each dict a Base, its members dynamic attributes."""
    from specklepy.objects.base import Base

    def value(v: Any) -> Any:
        if isinstance(v, dict):
            base = Base()
            for key, member in v.items():
                if key != "speckle_type":  # the class's, not settable
                    base[key] = value(member)
            return base
        if isinstance(v, list):
            return [value(x) for x in v]
        return v

    return value(doc)


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
    counts: dict[str, dict[str, int]] = {}  # objects per client where not the graph's
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
            print("  warm receive done", flush=True)
        finally:
            server.stop()
            other.stop()

        # -- model send and receive: serialising included, each to a new empty server -------
        from specklepy.api import operations

        from objstore.graph import decompose, recompose

        doc = _document(graph)
        base = _speckle_base(doc)
        server = SpawnedServer(project="ours", data=tmp / "model-data").start()
        other = SpawnedServer(project="theirs", data=tmp / "model-data-theirs")
        try:
            other.start()
            remote = Remote(server.url, server.token, "ours")
            sent: list[Any] = []
            with objstore.open(tmp / "model-send-cache") as send_cache:
                ours = _timed(lambda: sent.append(send(decompose(doc)[1], remote, send_cache)))
            root_id, made = sent[0].root_id, sent[0].total
            speckle_id: list[str] = []

            def speckle_model_send() -> None:
                transport = ServerTransport("theirs", url=other.url, token=other.token)
                speckle_id.append(operations.send(base, [transport]))

            theirs = _timed(speckle_model_send)
            their_root = Remote(other.url, other.token, "theirs").get(speckle_id[0])
            if their_root is None:
                raise SystemExit("model send: specklepy's root is not on its server")
            made_theirs = 1 + len(json.loads(their_root)["__closure"])
            times["model send"] = {"objstore": ours, "specklepy": theirs}
            counts["model send"] = counts["model receive"] = {
                "objstore": made,
                "specklepy": made_theirs,
            }
            extra["model objects (objstore, specklepy)"] = f"{made:,}, {made_theirs:,}"
            print("  model send done", flush=True)

            with objstore.open(tmp / "model-receive-cache") as cache:
                got: list[dict[str, Any]] = []

                def model_receive() -> None:
                    receive(root_id, Remote(server.url, server.token, "ours"), cache)
                    got.append(recompose(root_id, cache, "ours", shared=True))

                ours = _timed(model_receive)
                alone = {
                    way: _timed(lambda s=shared: recompose(root_id, cache, "ours", shared=s))
                    for way, shared in (("copies", False), ("shared", True))
                }
                extra["model recompose alone (copies, shared)"] = (
                    f"{alone['copies']:.2f} s, {alone['shared']:.2f} s"
                )
            if got[0] != doc:
                raise SystemExit("model receive: the document recomposed is not the one sent")
            theirs = _timed(
                lambda: operations.receive(
                    speckle_id[0],
                    ServerTransport("theirs", url=other.url, token=other.token),
                    SQLiteTransport(base_path=str(tmp / "sq-model-receive"), scope="receive"),
                )
            )
            times["model receive"] = {"objstore": ours, "specklepy": theirs}
        finally:
            server.stop()
            other.stop()

    print(
        f"\n| workload ({n:,} objects) | objstore client | specklepy | ratio |\n|---|---|---|---|"
    )
    for workload, t in times.items():
        made = counts.get(workload, {"objstore": n, "specklepy": n})
        ours, theirs = (made[client] / t[client] for client in ("objstore", "specklepy"))
        print(f"| {workload} | {ours:,.0f} obj/s | {theirs:,.0f} obj/s | {ours / theirs:.1f}x |")
    for key, value in extra.items():
        print(f"{key}: {value:,}" if isinstance(value, int) else f"{key}: {value}")
    if args.json:
        args.json.write_text(
            json.dumps({"objects": n, "seconds": times, "made": counts, **extra}, indent=1)
        )


if __name__ == "__main__":
    main()
