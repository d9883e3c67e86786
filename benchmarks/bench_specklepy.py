"""specklepy with objstore's LMDBTransport as its cache, against its own SQLiteTransport.

    python -m benchmarks.bench_specklepy --objects 20000

What a specklepy user gets by swapping the cache, in one run on one generated graph. Each
cache is new and empty where a row says cold, and holds the graph where it says warm:
  save            begin_write, save_object of every object (as text), end_write
  has_objects     has_objects of every id, in one call
  get_object      get_object of every id, one at a time
  children        the root and every id of its __closure read back: LMDBTransport's
                  copy_object_and_children into a sink | get_object of each (SQLiteTransport's
                  own copy_object_and_children raises NotImplementedError)
  send (local)    operations.send of the model as Base objects to the cache alone
                  (use_default_cache=False)
  receive (warm)  operations.receive of that model from the cache alone (local_transport=)
  send (server)   operations.send to a ServerTransport and the cache, each cache's run to its
                  own new objstore server
  receive (cold)  operations.receive from a ServerTransport into a new empty cache
Prints seconds per cache (the best of ``--repeat`` rounds, the caches' order flipped each
round: the first to run a row can pay for the second's heap) and the ratio (SQLite's time
over LMDB's: above 1, objstore's is faster). Every operations.receive is checked to give
back the model that was sent, and every round uses new caches and servers.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import warnings
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from benchmarks.bench_client import _document, _speckle_base, _timed
from objstore.bench.targets import SpawnedServer

CACHES = ("SQLiteTransport", "LMDBTransport")


def _sqlite(root: Path, name: str) -> Any:
    from specklepy.transports.sqlite import SQLiteTransport

    return SQLiteTransport(base_path=str(root / "sqlite" / name), scope=name)


def _lmdb(root: Path, name: str) -> Any:
    from objstore.integrations.specklepy import LMDBTransport

    return LMDBTransport(root / "lmdb" / name)


class _Sink:
    """A target transport that only counts what it is given: the cost measured is the
    source's."""

    def __init__(self) -> None:
        self.saved = 0

    def begin_write(self) -> None:
        pass

    def end_write(self) -> None:
        pass

    def save_object(self, _id: str, _text: str) -> None:
        self.saved += 1


def _transport_rows(
    make: Callable[[str], Any], texts: list[tuple[str, str]], root_id: str
) -> dict[str, float]:
    ids = [object_id for object_id, _ in texts]
    cache = make("transport")

    def save() -> None:
        cache.begin_write()
        for object_id, text in texts:
            cache.save_object(object_id, text)
        cache.end_write()

    read: list[int] = []

    def children() -> None:
        if hasattr(cache, "store"):  # objstore's: one ordered stream of the graph
            sink = _Sink()
            cache.copy_object_and_children(root_id, sink)
            read.append(sink.saved)
            return
        root = cache.get_object(root_id)
        kids = [cache.get_object(child) for child in json.loads(root)["__closure"]]
        read.append(1 + sum(text is not None for text in kids))

    rows = {"save": _timed(save)}
    found: list[dict[str, bool]] = []
    rows["has_objects"] = _timed(lambda: found.append(cache.has_objects(ids)))
    if not all(found[0].values()):
        raise SystemExit("has_objects: a saved object is missing")
    got: list[str | None] = []
    rows["get_object"] = _timed(lambda: got.extend(map(cache.get_object, ids)))
    if got != [text for _, text in texts]:
        raise SystemExit("get_object: an object read back differs from the one saved")
    rows["children"] = _timed(children)
    if read != [len(texts)]:
        raise SystemExit(f"children: {read[0]:,} objects read back of {len(texts):,}")
    cache.close()
    return rows


def _local_model(cache: Any, base: Any) -> tuple[float, float, str]:
    """operations.send of the model to ``cache`` alone, then operations.receive of it from
    there: (send seconds, receive seconds, the model's id)."""
    from specklepy.api import operations

    sent: list[str] = []
    send = _timed(lambda: sent.append(operations.send(base, [cache], use_default_cache=False)))
    received: list[Any] = []
    receive = _timed(lambda: received.append(operations.receive(sent[0], local_transport=cache)))
    if received[0].id != sent[0]:
        raise SystemExit(f"receive (warm) from {cache}: not the model sent")
    cache.close()
    return send, receive, sent[0]


def _server_model(
    make: Callable[[str], Any], base: Any, model_id: str, data: Path
) -> tuple[float, float]:
    """operations.send of the model to a new objstore server and a new cache, then
    operations.receive of it from that server into another new cache: (send, receive)."""
    from specklepy.api import operations
    from specklepy.transports.server import ServerTransport

    server = SpawnedServer(project="model", data=data).start()
    try:

        def remote() -> Any:
            return ServerTransport("model", url=server.url, token=server.token)

        sender, receiver = make("send-server"), make("receive-cold")
        send = _timed(lambda: operations.send(base, [remote(), sender], use_default_cache=False))
        received: list[Any] = []
        receive = _timed(lambda: received.append(operations.receive(model_id, remote(), receiver)))
        if received[0].id != model_id:
            raise SystemExit(f"receive (cold) into {receiver}: not the model sent")
        sender.close()
        receiver.close()
        return send, receive
    finally:
        server.stop()


def _round(
    order: Sequence[tuple[str, Callable[[str], Any]]],
    texts: list[tuple[str, str]],
    root_id: str,
    base: Any,
    tmp: Path,
) -> Iterator[tuple[str, str, float]]:
    """(row, cache, seconds) of every row, each row run for the caches in ``order``."""
    for cache_name, make in order:
        for row, seconds in _transport_rows(make, texts, root_id).items():
            yield row, cache_name, seconds
    model_ids: set[str] = set()
    for cache_name, make in order:
        send, receive, model_id = _local_model(make("model"), base)
        yield "send (local)", cache_name, send
        yield "receive (warm)", cache_name, receive
        model_ids.add(model_id)
    if len(model_ids) != 1:
        raise SystemExit(f"the two caches' sends gave different ids: {model_ids}")
    (model_id,) = model_ids
    for cache_name, make in order:
        send, receive = _server_model(make, base, model_id, tmp / f"server-{cache_name}")
        yield "send (server)", cache_name, send
        yield "receive (cold)", cache_name, receive


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=2, help="rounds (order flipped each)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")  # specklepy 2026.9 marks its JSON pipeline deprecated

    from objstore.bench.drivers import quiet_specklepy
    from objstore.graphgen import generate

    graph = generate(args.objects, seed=args.seed)
    texts = [(object_id, data.decode()) for object_id, data in graph.objects]
    print(f"graph: {len(graph):,} objects, {graph.total_bytes / 1e6:,.1f} MB", flush=True)
    times: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-specklepy-") as tmp_name:
        tmp = Path(tmp_name)
        os.environ["SPECKLE_USERDATA_PATH"] = str(tmp / "speckle")
        quiet_specklepy()
        base = _speckle_base(_document(graph))
        for number in range(args.repeat):
            round_dir = tmp / f"round-{number}"
            makers = {
                "SQLiteTransport": partial(_sqlite, round_dir),
                "LMDBTransport": partial(_lmdb, round_dir),
            }
            order = list(makers.items())[:: -1 if number % 2 else 1]
            for row, cache_name, seconds in _round(order, texts, graph.root_id, base, round_dir):
                best = times.setdefault(row, {})
                best[cache_name] = min(best.get(cache_name, seconds), seconds)
            print(f"  round {number + 1} of {args.repeat} done", flush=True)

    n = len(graph)
    print(f"\n| {n:,} objects | {' | '.join(CACHES)} | ratio |\n|---|---|---|---|")
    for row, by_cache in times.items():
        sqlite, lmdb = (by_cache[c] for c in CACHES)
        print(f"| {row} | {sqlite:.2f} s | {lmdb:.2f} s | {sqlite / lmdb:.1f}x |")
    if args.json:
        args.json.write_text(json.dumps({"objects": n, "seconds": times}, indent=1))


if __name__ == "__main__":
    main()
