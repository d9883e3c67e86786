"""HTTP benchmark: objstore's server over loopback, beside the in-process engine it wraps.

    python -m benchmarks.bench_server --objects 100000 [--workers 1]

One run, one generated graph, one store:
  1. upload over HTTP (gzip multipart batches, 4 uploads in flight), with a plain httpx client;
  2. download object+children over HTTP (text lines, zstd as objstore's client asks) and the
     same read in-process (the ceiling for the HTTP layer);
  3. getobjects in 25k-id batches;
  4. specklepy's ServerTransport against the same server: save_object/end_write (its send path)
     into a second project and copy_object_and_children into a SQLiteTransport (its receive path).
Peak server RSS is read from /proc for the server process and its workers.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import gzip
import json
import os
import tempfile
import threading
import time
import warnings
from functools import partial
from pathlib import Path
from typing import Any

import httpx

from objstore.bench.targets import SpawnedServer
from objstore.client.remote import ACCEPT_ENCODING, iter_decoded

MB = 1e6


LIMITS_ENV = {
    "OBJSTORE_MAX_OBJECT_MB": "64",
    "OBJSTORE_MAX_BATCH_MB": "64",
    "OBJSTORE_MAX_REQUEST_MB": "64",
}  # a 1M-object model's root passes 10 MB


class MemorySampler:
    """Samples anonymous (heap) and file-mapped RSS every ``every`` seconds, of the server's
    processes or (``server`` None) of this one; keeps the peaks."""

    def __init__(self, server: SpawnedServer | None = None, every: float = 0.05) -> None:
        self.read = partial(server.memory_mb if server else own_memory_mb, "RssAnon", "RssFile")
        self.every = every
        self.peak = {"RssAnon": 0.0, "RssFile": 0.0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            for key, value in self.read().items():
                self.peak[key] = max(self.peak[key], value)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def own_memory_mb(*fields: str) -> dict[str, float]:
    """Fields of /proc/self/status (RssAnon, RssFile...) in MB (Linux)."""
    totals = dict.fromkeys(fields, 0.0)
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in totals:
            totals[key] = int(value.split()[0]) / 1024
    return totals


def _rate(count: int, nbytes: int, seconds: float) -> dict[str, float]:
    return {
        "objects": count,
        "seconds": seconds,
        "objects_per_s": count / seconds,
        "mb_per_s": nbytes / seconds / MB,
    }


def upload(url: str, token: str, project: str, bodies: list[bytes]) -> None:
    headers = {"Authorization": f"Bearer {token}"}

    def send(body: bytes) -> None:
        packed = gzip.compress(body, 1)
        with httpx.Client(timeout=300) as c:
            r = c.post(
                f"{url}/objects/{project}",
                headers=headers,
                files={"batch-1": ("batch-1", packed, "application/gzip")},
            )
            if r.status_code != 201:
                raise RuntimeError(f"upload failed: {r.status_code} {r.text[:300]}")

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        list(pool.map(send, bodies))


def download(url: str, token: str, project: str, root: str) -> tuple[int, int]:
    headers = {
        "Authorization": f"Bearer {token}",
        "Accept": "text/plain",
        "Accept-Encoding": ACCEPT_ENCODING,
    }
    count = nbytes = 0
    with (
        httpx.Client(timeout=600) as c,
        c.stream("GET", f"{url}/objects/{project}/{root}", headers=headers) as r,
    ):
        if r.status_code != 200:
            raise RuntimeError(f"download failed: {r.status_code}")
        for chunk in iter_decoded(r):  # decoded as objstore's client does (zstd or gzip)
            count += chunk.count(b"\n")
            nbytes += len(chunk)
    return count, nbytes


def getobjects(url: str, token: str, project: str, ids: list[str]) -> tuple[int, int]:
    headers = {
        "Authorization": f"Bearer {token}",
        "Accept": "text/plain",
        "Accept-Encoding": ACCEPT_ENCODING,
    }
    count = nbytes = 0
    with httpx.Client(timeout=600) as c:
        for start in range(0, len(ids), 25_000):
            body = {"objects": json.dumps(ids[start : start + 25_000])}
            with c.stream(
                "POST", f"{url}/api/getobjects/{project}", data=body, headers=headers
            ) as r:
                for chunk in iter_decoded(r):
                    count += chunk.count(b"\n")
                    nbytes += len(chunk)
    return count, nbytes


def specklepy_send_receive(
    url: str, token: str, project: str, objects: list[tuple[str, bytes]], root: str, workdir: Path
) -> dict[str, Any]:
    os.environ["SPECKLE_USERDATA_PATH"] = str(workdir / "speckle")
    warnings.simplefilter("ignore")
    from specklepy.transports.server import ServerTransport
    from specklepy.transports.sqlite import SQLiteTransport

    texts = [(i, d.decode()) for i, d in objects]
    total = sum(len(d) for _, d in objects)
    transport = ServerTransport(project, url=url, token=token)
    start = time.perf_counter()
    transport.begin_write()
    for object_id, text in texts:
        transport.save_object(object_id, text)
    transport.end_write()
    send = _rate(len(texts), total, time.perf_counter() - start)
    cache = SQLiteTransport(base_path=str(workdir / "sqlite-cache"), scope="bench")
    start = time.perf_counter()
    ServerTransport(project, url=url, token=token).copy_object_and_children(root, cache)
    receive = _rate(len(texts), total, time.perf_counter() - start)
    return {"specklepy send": send, "specklepy receive": receive}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--no-specklepy", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    import objstore
    from objstore.graphgen import batches, generate
    from objstore.limits import Limits

    graph = generate(args.objects, seed=args.seed)
    total = graph.total_bytes
    print(f"graph: {len(graph):,} objects, {total / MB:,.1f} MB", flush=True)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-server-") as tmp:
        server = SpawnedServer(
            workers=args.workers,
            extra_projects=("bench-speckle",),
            env=LIMITS_ENV,
            data=Path(tmp) / "data",
        ).start()
        token, data = server.token, server.data
        try:
            bodies = list(batches(graph.objects, max_objects=10_000, max_bytes=20 << 20))
            with MemorySampler(server) as mem:
                start = time.perf_counter()
                upload(server.url, token, "bench", bodies)
                results["http upload"] = _rate(len(graph), total, time.perf_counter() - start)
            results["server memory MB (upload)"] = mem.peak
            del bodies
            print("  upload done", flush=True)
            server.restart()  # a fresh process: the download's memory is measured alone
            with MemorySampler(server) as mem:
                start = time.perf_counter()
                count, wire = download(server.url, token, "bench", graph.root_id)
                results["http object+children"] = _rate(count, total, time.perf_counter() - start)
            results["http object+children"]["wire_mb"] = wire / MB
            results["server memory MB (object+children download)"] = mem.peak
            ids = [i for i, _ in graph.objects]
            start = time.perf_counter()
            count, wire = getobjects(server.url, token, "bench", ids)
            results["http getobjects (25k ids/request)"] = _rate(
                count, total, time.perf_counter() - start
            )
            store = objstore.open(data / "objects", limits=Limits(1 << 30, 1 << 31))
            start = time.perf_counter()
            count = sum(1 for _ in store.iter_with_children("bench", graph.root_id))
            results["engine object+children (in-process)"] = _rate(
                count, total, time.perf_counter() - start
            )
            store.close()
            if not args.no_specklepy:
                results.update(
                    specklepy_send_receive(
                        server.url, token, "bench-speckle", graph.objects, graph.root_id, Path(tmp)
                    )
                )

        finally:
            server.stop()
    print(f"\n| workload ({args.workers} worker(s)) | objects/s | MB/s |\n|---|---|---|")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    for name, r in results.items():
        if isinstance(r, dict) and "objects_per_s" in r:
            print(f"| {name} | {r['objects_per_s']:,.0f} | {r['mb_per_s']:,.0f} |")
    for key, value in results.items():
        if key.startswith("server memory"):
            print(
                f"{key}: peak heap (RssAnon) {value['RssAnon']:,.0f}, peak mapped store pages "
                f"(RssFile) {value['RssFile']:,.0f}"
            )
    http = results["http object+children"]["objects_per_s"]
    engine = results["engine object+children (in-process)"]["objects_per_s"]
    print(f"HTTP object+children / engine object+children = {http / engine:.0%}")
    if "specklepy send" in results:
        up = results["http upload"]["objects_per_s"]
        print(
            f"objstore HTTP upload / specklepy send = "
            f"{up / results['specklepy send']['objects_per_s']:.1f}x"
        )
        print(
            f"objstore HTTP download / specklepy receive = "
            f"{http / results['specklepy receive']['objects_per_s']:.1f}x"
        )


if __name__ == "__main__":
    main()
