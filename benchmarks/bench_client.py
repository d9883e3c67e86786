"""Client benchmark: objstore's client vs specklepy's transports, against objstore servers.

    python -m benchmarks.bench_client --objects 100000 [--rounds 3]

On one generated graph, each client against its own spawned server, started empty (a commit
costs more as a store fills, so a client sending second into a shared one would be slowed):
  cold send      objstore.send(objects) through an empty LMDB cache | ServerTransport +
                 SQLiteTransport save/end_write (what operations.send does with its default
                 cache, minus serialisation)
  half-warm send the same, each to a new empty server, through a cache that already holds
                 half the objects (every other one; not the root)
  warm send      the same through a cache that holds the whole graph
  cold receive   objstore.receive into an empty LMDB cache | ServerTransport
                 .copy_object_and_children into an empty SQLiteTransport (operations.receive)
  half-warm receive  the cache already holds half the objects (not the root)
  warm receive   everything cached: objstore.receive | SQLiteTransport reads of root + children
  model send     a model in memory, serialised and sent, each client to a new empty server:
                 graph.decompose of the graph as a nested document + objstore.send through an
                 empty cache | operations.send of the same model as specklepy Base objects
                 (ServerTransport, its default SQLite cache)
  model receive  back into memory: objstore.receive into an empty cache + graph.recompose
                 (shared=True: one dict per object, as specklepy gives one Base per id) |
                 operations.receive (ServerTransport, an empty SQLiteTransport) to Base objects
Prints objects/s per client (the model rows: objects each client's serialiser made) and the
request count of objstore's warm receive (target: 0). With ``--rounds N`` every row runs N
times on new servers and caches, specklepy first in every other round; the table gives the
medians and each round's ratio.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
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


def _shown(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{key} {_shown(v)}" for key, v in value.items())
    return f"{value:,}" if isinstance(value, int) else str(value)


def _pair(ours: Callable[[], Any], theirs: Callable[[], Any], flip: bool) -> dict[str, float]:
    """Seconds each client's run takes, specklepy's first when ``flip``: whichever runs
    second in a row can pay for the first's heap, so rounds alternate the order."""
    runs = [("objstore", ours), ("specklepy", theirs)]
    return {client: _timed(fn) for client, fn in (runs[::-1] if flip else runs)}


def _speckle_send(texts: list[tuple[str, str]], cache: Any, server: SpawnedServer) -> None:
    """What operations.send does with the objects once serialised: each saved to the SQLite
    cache and to ServerTransport, then both flushed."""
    from specklepy.transports.server import ServerTransport

    transport = ServerTransport("theirs", url=server.url, token=server.token)
    for t in (cache, transport):
        t.begin_write()
    for object_id, text in texts:
        cache.save_object(object_id, text)
        transport.save_object(object_id, text)
    for t in (cache, transport):
        t.end_write()


def _caches_holding(held: list[Any], tmp: Path, name: str) -> tuple[Any, Any]:
    """An LMDB cache and a SQLiteTransport under ``tmp``, each already holding ``held``."""
    from specklepy.transports.sqlite import SQLiteTransport

    import objstore
    from objstore.graphgen import batches

    cache = objstore.open(tmp / f"{name}-cache")
    sq = SQLiteTransport(base_path=str(tmp / f"sq-{name}"), scope=name)
    if held:
        cache.put_many("ours", batches(held))
        sq.begin_write()
        for object_id, data in held:
            sq.save_object(object_id, data.decode())
        sq.end_write()
    return cache, sq


def _send_through_held(
    graph: Any, texts: list[tuple[str, str]], held: list[Any], tmp: Path, flip: bool
) -> dict[str, float]:
    """Each client sends the graph to a new empty server through a cache that already holds
    ``held`` (an LMDB cache | a SQLiteTransport, filled untimed)."""
    from objstore.client import Remote, send

    name = f"held-{len(held)}"
    server = SpawnedServer(project="ours", data=tmp / f"{name}-data").start()
    other = SpawnedServer(project="theirs", data=tmp / f"{name}-data-theirs")
    try:
        other.start()
        cache, sq = _caches_holding(held, tmp, name)
        remote = Remote(server.url, server.token, "ours")
        with cache:
            return _pair(
                lambda: send(graph.objects, remote, cache=cache),
                lambda: _speckle_send(texts, sq, other),
                flip,
            )
    finally:
        server.stop()
        other.stop()


def _round(graph: Any, tmp: Path, flip: bool) -> tuple[dict[str, dict[str, float]], dict[str, Any]]:
    """One round of every workload, on new servers and caches: seconds per client per
    workload, and figures about the round (request counts, model object counts)."""
    import objstore
    from objstore.bench.drivers import quiet_specklepy
    from objstore.client import Remote, receive, send
    from objstore.graph import decompose, recompose

    os.environ["SPECKLE_USERDATA_PATH"] = str(tmp / "speckle")
    quiet_specklepy()
    from specklepy.api import operations
    from specklepy.transports.server import ServerTransport
    from specklepy.transports.sqlite import SQLiteTransport

    half = graph.objects[:-1][::2]
    times: dict[str, dict[str, float]] = {}
    extra: dict[str, Any] = {}
    server = SpawnedServer(project="ours", data=tmp / "data").start()
    other = SpawnedServer(project="theirs", data=tmp / "data-theirs")
    try:
        other.start()
        token = server.token
        # -- cold send --------------------------------------------------------------------------
        remote = Remote(server.url, token, "ours")
        texts = [(i, d.decode()) for i, d in graph.objects]
        send_cache = objstore.open(tmp / "send-cache")
        sq_send = SQLiteTransport(base_path=str(tmp / "sq-send"), scope="send")
        times["cold send"] = _pair(
            lambda: send(graph.objects, remote, cache=send_cache),
            lambda: _speckle_send(texts, sq_send, other),
            flip,
        )
        send_cache.close()
        print("  cold send done", flush=True)

        # -- cold and half-warm receive ---------------------------------------------------------
        def receive_both(cache: Any, sq: Any) -> tuple[dict[str, float], Remote]:
            """objstore.receive into ``cache``; ServerTransport into SQLite ``sq``."""
            remote = Remote(server.url, token, "ours")
            return _pair(
                lambda: receive(graph.root_id, remote, cache),
                lambda: ServerTransport(
                    "theirs", url=other.url, token=other.token
                ).copy_object_and_children(graph.root_id, sq),
                flip,
            ), remote

        cold_cache = objstore.open(tmp / "cold-cache")
        sq_cold = SQLiteTransport(base_path=str(tmp / "sq-cold"), scope="cold")
        times["cold receive"], _ = receive_both(cold_cache, sq_cold)
        print("  cold receive done", flush=True)

        half_cache, sq_half = _caches_holding(half, tmp, "half")
        times["half-warm receive"], remote = receive_both(half_cache, sq_half)
        extra["half-warm objstore objects downloaded"] = remote.stats.objects_downloaded
        print("  half-warm receive done", flush=True)

        # -- warm receive -----------------------------------------------------------------------
        remote = Remote(server.url, token, "ours")

        def speckle_warm() -> None:
            root = sq_cold.get_object(graph.root_id)
            assert root is not None
            for child in json.loads(root)["__closure"]:
                sq_cold.get_object(child)

        times["warm receive"] = _pair(
            lambda: receive(graph.root_id, remote, cold_cache), speckle_warm, flip
        )
        extra["warm objstore requests"] = sum(remote.stats.requests.values())
        cold_cache.close()
        half_cache.close()
        print("  warm receive done", flush=True)
    finally:
        server.stop()
        other.stop()

    # -- half-warm and warm send: the cache holds half / all of the graph, the server nothing -
    times["half-warm send"] = _send_through_held(graph, texts, half, tmp, flip)
    print("  half-warm send done", flush=True)
    times["warm send"] = _send_through_held(graph, texts, graph.objects, tmp, flip)
    print("  warm send done", flush=True)
    order = ["cold send", "half-warm send", "warm send"]
    times = {w: times[w] for w in order} | {w: t for w, t in times.items() if w not in order}

    # -- model send and receive: serialising included, each to a new empty server -------------
    doc = _document(graph)
    base = _speckle_base(doc)
    server = SpawnedServer(project="ours", data=tmp / "model-data").start()
    other = SpawnedServer(project="theirs", data=tmp / "model-data-theirs")
    try:
        other.start()
        remote = Remote(server.url, server.token, "ours")
        sent: list[Any] = []
        speckle_id: list[str] = []
        model_send_cache = objstore.open(tmp / "model-send-cache")
        times["model send"] = _pair(
            lambda: sent.append(send(decompose(doc)[1], remote, model_send_cache)),
            lambda: speckle_id.append(
                operations.send(base, [ServerTransport("theirs", url=other.url, token=other.token)])
            ),
            flip,
        )
        model_send_cache.close()
        root_id, made = sent[0].root_id, sent[0].total
        their_root = Remote(other.url, other.token, "theirs").get(speckle_id[0])
        if their_root is None:
            raise SystemExit("model send: specklepy's root is not on its server")
        extra["model objects"] = {
            "objstore": made,
            "specklepy": 1 + len(json.loads(their_root)["__closure"]),
        }
        print("  model send done", flush=True)

        got: list[dict[str, Any]] = []
        with objstore.open(tmp / "model-receive-cache") as cache:

            def model_receive() -> None:
                receive(root_id, Remote(server.url, server.token, "ours"), cache)
                got.append(recompose(root_id, cache, "ours", shared=True))

            times["model receive"] = _pair(
                model_receive,
                lambda: operations.receive(
                    speckle_id[0],
                    ServerTransport("theirs", url=other.url, token=other.token),
                    SQLiteTransport(base_path=str(tmp / "sq-model-receive"), scope="receive"),
                ),
                flip,
            )
            if got[0] != doc:
                raise SystemExit("model receive: the document recomposed is not the one sent")
            alone = {
                way: _timed(lambda s=shared: recompose(root_id, cache, "ours", shared=s))
                for way, shared in (("copies", False), ("shared", True))
            }
            extra["model recompose alone (copies, shared)"] = (
                f"{alone['copies']:.2f} s, {alone['shared']:.2f} s"
            )
    finally:
        server.stop()
        other.stop()
    return times, extra


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=100_000, help="graph size")
    parser.add_argument("--seed", type=int, default=0, help="graph generator seed")
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="rounds of every workload, each on new servers and caches, the clients' order "
        "flipped each round; the table gives medians",
    )
    parser.add_argument("--json", type=Path, help="write every round's figures here")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be 1 or more")
    warnings.simplefilter("ignore")

    from objstore.graphgen import generate

    graph = generate(args.objects, seed=args.seed)
    n = len(graph)
    print(f"graph: {n:,} objects, {graph.total_bytes / MB:,.1f} MB", flush=True)
    rounds: list[tuple[dict[str, dict[str, float]], dict[str, Any]]] = []
    for number in range(args.rounds):
        flip = number % 2 == 1
        print(f"round {number + 1} ({'specklepy' if flip else 'objstore'} first)", flush=True)
        with tempfile.TemporaryDirectory(prefix="bench-client-") as tmp_name:
            rounds.append(_round(graph, Path(tmp_name), flip))
    print(
        f"\n| workload ({n:,} objects) | objstore client | specklepy | ratio "
        f"({'median; each round' if len(rounds) > 1 else 'one round'}) |\n|---|---|---|---|"
    )
    for workload in rounds[0][0]:
        rates: dict[str, list[float]] = {client: [] for client in ("objstore", "specklepy")}
        ratios = []
        for times, extra in rounds:
            made = extra["model objects"] if workload.startswith("model") else None
            rate = {c: (made[c] if made else n) / times[workload][c] for c in rates}
            for client in rates:
                rates[client].append(rate[client])
            ratios.append(rate["objstore"] / rate["specklepy"])
        each = f" ({', '.join(f'{r:.1f}x' for r in ratios)})" if len(rounds) > 1 else ""
        print(
            f"| {workload} | {statistics.median(rates['objstore']):,.0f} obj/s "
            f"| {statistics.median(rates['specklepy']):,.0f} obj/s "
            f"| {statistics.median(ratios):.1f}x{each} |"
        )
    for key in rounds[0][1]:
        values = [extra[key] for _, extra in rounds]
        shown = [_shown(v) for v in values]
        print(f"{key}: {'; '.join(shown)}")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "objects": n,
                    "rounds": [{"seconds": t, **extra} for t, extra in rounds],
                },
                indent=1,
            )
        )


if __name__ == "__main__":
    main()
