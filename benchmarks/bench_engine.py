"""Engine benchmark: objstore vs the raw-LMDB ceiling vs specklepy's SQLiteTransport.

    python -m benchmarks.bench_engine --objects 100000

Generates one graph, writes it to a dump, then runs each peer in its own process on the same
objects (so peak RSS is per peer) and prints one table: ingest, has, random get, get_many and
object+children read, in objects/s and MB/s, plus stored size vs raw JSON and peak RSS.
objstore ingests with put_many (batches of 10k, each its own transaction) and, into a store of
its own, once more with one put() per batch.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

PEERS = ("objstore", "lmdb-raw", "sqlite")
ONE_BY_ONE = "ingest, put() per batch"  # objstore only: "ingest" is its put_many
BATCH_OBJECTS = 10_000
RANDOM_GETS = 20_000
MB = 1e6


COLD = False  # set in a worker by --cold


def drop_page_cache() -> None:
    """Write back and drop the OS page cache, so the next read comes from disk (needs root).

    Pages a process still maps stay: callers close their store first and reopen it after.
    """
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


def _timed(fn: Callable[[], int], reopen: Callable[[], None] | None = None) -> tuple[float, int]:
    """Time ``fn``. Under --cold, ``reopen`` first closes the peer's store, drops the page
    cache and opens the store again, so the workload reads from disk as after a restart."""
    if COLD and reopen is not None:
        reopen()
    start = time.perf_counter()
    count = fn()
    return time.perf_counter() - start, count


def _load(dump: Path) -> tuple[list[tuple[str, bytes]], str]:
    from objstore.graphgen import read_dump

    objects = list(read_dump(dump))
    return objects, objects[-1][0]


def _closure_ids(objects: list[tuple[str, bytes]], root: str) -> list[str]:
    data = dict(objects)[root]
    return list(json.loads(data)["__closure"])


def run_objstore(objects: list[tuple[str, bytes]], root: str, workdir: Path) -> dict[str, Any]:
    import objstore
    from objstore.graphgen import batches
    from objstore.limits import Limits

    total = sum(len(d) for _, d in objects)
    ids = [i for i, _ in objects]
    # A 1M-object model's root lists every descendant and passes 10 MB: raise the limits here.
    limits = Limits(1 << 30, 1 << 31)
    store = objstore.open(workdir / "objstore", limits=limits)

    def reopen() -> None:
        nonlocal store
        store.close()
        drop_page_cache()
        store = objstore.open(workdir / "objstore", limits=limits)

    bodies = list(batches(objects, max_objects=BATCH_OBJECTS))
    out: dict[str, Any] = {}
    # put() batch after batch, into a store of its own (then dropped), for comparison
    with objstore.open(workdir / "one-by-one", limits=limits) as one:
        out[ONE_BY_ONE] = _timed(lambda: sum(one.put("bench", b).stored for b in bodies))
    shutil.rmtree(workdir / "one-by-one")
    # the bulk API: each batch its own fsync'd transaction, the next checked while one commits
    out["ingest"] = _timed(lambda: store.put_many("bench", bodies).stored)
    bodies.clear()
    out["has"] = _timed(
        lambda: sum(
            sum(store.has("bench", ids[i : i + 1000]).values()) for i in range(0, len(ids), 1000)
        ),
        reopen,
    )
    sample = random.Random(1).sample(ids, min(RANDOM_GETS, len(ids)))
    out["random get"] = _timed(
        lambda: sum(1 for i in sample if store.get("bench", i) is not None), reopen
    )
    shuffled = random.Random(2).sample(ids, len(ids))
    out["get_many"] = _timed(lambda: sum(1 for _ in store.get_many("bench", shuffled)), reopen)
    out["object+children"] = _timed(
        lambda: sum(1 for _ in store.iter_with_children("bench", root)), reopen
    )
    stats = store.stats()
    out["stored_bytes"] = stats.stored_bytes
    out["file_bytes"] = stats.file_bytes
    out["raw_bytes"] = total
    store.close()
    return out


def run_lmdb_raw(objects: list[tuple[str, bytes]], root: str, workdir: Path) -> dict[str, Any]:
    import lmdb

    env = lmdb.open(str(workdir / "raw"), map_size=1 << 40)

    def reopen() -> None:
        nonlocal env
        env.close()
        drop_page_cache()
        env = lmdb.open(str(workdir / "raw"), map_size=1 << 40)

    ids = [i for i, _ in objects]
    encoded = [(i.encode(), d) for i, d in objects]
    out: dict[str, Any] = {}

    def ingest() -> int:
        n = 0
        for start in range(0, len(encoded), BATCH_OBJECTS):
            with env.begin(write=True) as txn:
                n += txn.cursor().putmulti(sorted(encoded[start : start + BATCH_OBJECTS]))[1]
        return n

    out["ingest"] = _timed(ingest)

    def has() -> int:
        n = 0
        for start in range(0, len(ids), 1000):
            keys = sorted(i.encode() for i in ids[start : start + 1000])
            with env.begin() as txn:
                n += len(txn.cursor().getmulti(keys))
        return n

    out["has"] = _timed(has, reopen)
    sample = random.Random(1).sample(ids, min(RANDOM_GETS, len(ids)))

    def random_get() -> int:
        n = 0
        for i in sample:
            with env.begin() as txn:
                n += txn.get(i.encode()) is not None
        return n

    out["random get"] = _timed(random_get, reopen)
    shuffled = random.Random(2).sample(ids, len(ids))

    def get_many() -> int:
        n = 0
        for start in range(0, len(shuffled), 1000):
            with env.begin() as txn:
                n += len(
                    txn.cursor().getmulti([i.encode() for i in shuffled[start : start + 1000]])
                )
        return n

    out["get_many"] = _timed(get_many, reopen)
    children = _closure_ids(objects, root)

    def with_children() -> int:
        with env.begin() as txn:
            n = int(txn.get(root.encode()) is not None)
            cur = txn.cursor()
            for start in range(0, len(children), 2048):
                keys = sorted(c.encode() for c in children[start : start + 2048])
                n += len(cur.getmulti(keys))
        return n

    out["object+children"] = _timed(with_children, reopen)
    out["stored_bytes"] = env.info()["last_pgno"] * env.stat()["psize"]
    out["file_bytes"] = (workdir / "raw" / "data.mdb").stat().st_size
    out["raw_bytes"] = sum(len(d) for _, d in objects)
    env.close()
    return out


def run_sqlite(objects: list[tuple[str, bytes]], root: str, workdir: Path) -> dict[str, Any]:
    warnings.simplefilter("ignore")
    from specklepy.transports.sqlite import SQLiteTransport

    transport = SQLiteTransport(base_path=str(workdir / "sqlite"), scope="bench")

    def reopen() -> None:
        nonlocal transport
        transport.close()
        drop_page_cache()
        transport = SQLiteTransport(base_path=str(workdir / "sqlite"), scope="bench")

    texts = [(i, d.decode()) for i, d in objects]
    ids = [i for i, _ in objects]
    out: dict[str, Any] = {}

    def ingest() -> int:
        transport.begin_write()
        for i, text in texts:
            transport.save_object(i, text)
        transport.end_write()
        return len(texts)

    out["ingest"] = _timed(ingest)
    out["has"] = _timed(
        lambda: sum(
            sum(transport.has_objects(ids[i : i + 1000]).values()) for i in range(0, len(ids), 1000)
        ),
        reopen,
    )
    sample = random.Random(1).sample(ids, min(RANDOM_GETS, len(ids)))
    out["random get"] = _timed(
        lambda: sum(transport.get_object(i) is not None for i in sample), reopen
    )
    shuffled = random.Random(2).sample(ids, len(ids))
    out["get_many"] = _timed(
        lambda: sum(transport.get_object(i) is not None for i in shuffled), reopen
    )

    def with_children() -> int:
        # what specklepy does: read the root, parse its __closure, fetch each child
        root_text = transport.get_object(root)
        assert root_text is not None
        closure = json.loads(root_text).get("__closure", {})
        return 1 + sum(transport.get_object(c) is not None for c in closure)

    out["object+children"] = _timed(with_children, reopen)
    db = workdir / "sqlite" / "bench.db"
    out["stored_bytes"] = db.stat().st_size
    out["file_bytes"] = db.stat().st_size
    out["raw_bytes"] = sum(len(d) for _, d in objects)
    transport.close()
    return out


RUNNERS: dict[str, Callable[[list[tuple[str, bytes]], str, Path], dict[str, Any]]] = {
    "objstore": run_objstore,
    "lmdb-raw": run_lmdb_raw,
    "sqlite": run_sqlite,
}


def worker(peer: str, dump: Path, cold: bool) -> None:
    global COLD
    COLD = cold
    objects, root = _load(dump)
    rss_loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with tempfile.TemporaryDirectory(prefix=f"bench-{peer}-") as tmp:
        result = RUNNERS[peer](objects, root, Path(tmp))
    result["objects"] = len(objects)
    result["cold"] = cold
    result["children"] = len(_closure_ids(objects, root)) + 1
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result["rss_after_load_mb"] = rss_loaded / 1024
    print(json.dumps(result))


WORKLOADS = ("ingest", ONE_BY_ONE, "has", "random get", "get_many", "object+children")


def _rates(result: dict[str, Any], workload: str, total_bytes: int) -> tuple[float, float]:
    seconds, count = result[workload]
    per_object = total_bytes / max(result["objects"], 1)
    return count / seconds, count * per_object / seconds / MB


def render(results: dict[str, dict[str, Any]]) -> str:
    """A markdown table of every peer and workload."""
    peers = list(results)
    total = next(iter(results.values()))["raw_bytes"]
    lines = ["| workload | " + " | ".join(peers) + " |", "|---" * (len(peers) + 1) + "|"]
    for workload in WORKLOADS:
        cells = []
        for peer in peers:
            if workload not in results[peer]:
                cells.append("-")
                continue
            rate, mbs = _rates(results[peer], workload, total)
            cells.append(f"{rate:,.0f} obj/s ({mbs:,.0f} MB/s)")
        lines.append(f"| {workload} | " + " | ".join(cells) + " |")
    lines.append(
        "| stored value bytes / raw JSON | "
        + " | ".join(f"{r['stored_bytes'] / r['raw_bytes']:.0%}" for r in results.values())
        + " |"
    )
    lines.append(
        "| file on disk / raw JSON | "
        + " | ".join(f"{r['file_bytes'] / r['raw_bytes']:.0%}" for r in results.values())
        + " |"
    )
    lines.append(
        "| peak RSS (after loading the graph) | "
        + " | ".join(
            f"{r['peak_rss_mb']:,.0f} MB ({r['rss_after_load_mb']:,.0f} MB)"
            for r in results.values()
        )
        + " |"
    )
    return "\n".join(lines)


def ratios(results: dict[str, dict[str, Any]]) -> list[str]:
    """The issue's targets, computed from this run (objstore's two ingests both against the
    peers' one)."""
    out: list[str] = []
    if "objstore" not in results:
        return out
    total = results["objstore"]["raw_bytes"]
    for peer in ("lmdb-raw", "sqlite"):
        if peer not in results:
            continue
        for w in WORKLOADS:
            theirs_key = "ingest" if w == ONE_BY_ONE else w
            if w in results["objstore"] and theirs_key in results[peer]:
                ours = _rates(results["objstore"], w, total)[0]
                theirs = _rates(results[peer], theirs_key, total)[0]
                out.append(f"{w}: objstore / {peer} = {ours / theirs:.2f}x")
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--peers", default=",".join(PEERS))
    parser.add_argument(
        "--cold",
        action="store_true",
        help="drop the OS page cache before each read workload (root only): reads from disk, "
        "as after a restart",
    )
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--from-json", type=Path, help="re-print the table of a saved run")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--dump", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.worker, args.dump, args.cold)
        return
    if args.cold and not os.access("/proc/sys/vm/drop_caches", os.W_OK):
        parser.error("--cold drops the page cache through /proc/sys/vm/drop_caches: run as root")
    if args.from_json:
        saved = json.loads(args.from_json.read_text())
        print(render(saved))
        print("\n".join(ratios(saved)))
        return

    from objstore.graphgen import generate, write_dump

    start = time.perf_counter()
    graph = generate(args.objects, seed=args.seed)
    sizes = sorted(len(d) for _, d in graph.objects)
    print(
        f"graph: {len(graph):,} objects, {graph.total_bytes / MB:,.1f} MB, median object "
        f"{sizes[len(sizes) // 2]} B, largest {sizes[-1]:,} B "
        f"(generated in {time.perf_counter() - start:.1f}s)",
        flush=True,
    )
    if args.cold:
        print("reads start from a dropped page cache (--cold)", flush=True)
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-engine-") as tmp:
        dump = Path(tmp) / "graph.dump"
        write_dump(graph.objects, dump)
        del graph
        for peer in args.peers.split(","):
            proc = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "benchmarks.bench_engine",
                    "--worker",
                    peer,
                    "--dump",
                    str(dump),
                    *(["--cold"] if args.cold else []),
                ],
                capture_output=True,
                text=True,
                cwd=Path(__file__).resolve().parent.parent,
                env={**os.environ, "PYTHONWARNINGS": "ignore"},
            )
            if proc.returncode != 0:
                print(f"{peer} failed:\n{proc.stderr}", file=sys.stderr)
                continue
            results[peer] = json.loads(proc.stdout.strip().splitlines()[-1])
            print(f"  {peer} done", flush=True)
    print(render(results))
    for line in ratios(results):
        print(line)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
