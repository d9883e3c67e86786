"""Run every workload against every target with every client; collect one results document.

Workloads (each bounded by count and by ``max_seconds``):
  cold send          every object of a freshly salted graph into the project
  re-send            the same objects again: the server has them all (diff only)
  download           object + children of the root, as a cold client receives it
  getobjects         every id in batches
  single GET         latency of one-object GETs (p50/p95/p99)
  diff 100k          100k ids, half known, half not
  mixed              N readers (getobjects of random batches) while one writer sends
"""

from __future__ import annotations

import contextlib
import itertools
import platform
import random
import re
import statistics
import threading
import time
import uuid
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import xxhash

import objstore
from objstore import errors, graphgen
from objstore.bench.drivers import (
    Driver,
    EngineDriver,
    ObjstoreClientDriver,
    SpecklepyDriver,
    specklepy_available,
)
from objstore.bench.report import ratios
from objstore.bench.targets import SpawnedServer, TargetError, TargetSpec
from objstore.limits import Limits

WORKLOADS = (
    "cold send", "re-send", "download", "getobjects", "single GET", "diff 100k", "mixed",
)  # fmt: skip
PRESETS = {"small": 10_000, "medium": 100_000, "large": 1_000_000}
_SIZE = re.compile(r"(\d+)([kKmM]?)")  # 5000, 50k, 2M objects
_SIZE_UNITS = {"": 1, "k": 1_000, "m": 1_000_000}


def _squashed(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum())


def workloads_named(names: Iterable[str]) -> list[str]:
    """The workloads ``names`` mean, written as shown or in any case with dashes, underscores
    or no spaces, or by a unique start ("cold-send", "resend", "single", "diff"); raises
    TargetError naming those that match none or several."""
    found: list[str] = []
    for name in names:
        key = _squashed(name)
        matches = [w for w in WORKLOADS if _squashed(w) == key]
        matches = matches or [w for w in WORKLOADS if key and _squashed(w).startswith(key)]
        if len(matches) != 1:
            problem = "matches several" if matches else "is unknown"
            raise TargetError(f"workload {name!r} {problem}; choose from {', '.join(WORKLOADS)}")
        found.append(matches[0])
    return found


@dataclass
class GraphSource:
    """A preset size (generated, salted per run) or a user's dump file."""

    size: int | None = None
    dump: Path | None = None
    seed: int = 0
    unsalted: bool = field(default=False, init=False)  # a file loaded under its own ids

    @classmethod
    def parse(cls, text: str, seed: int = 0) -> GraphSource:
        if text in PRESETS:
            return cls(size=PRESETS[text], seed=seed)
        path = Path(text)
        sized = _SIZE.fullmatch(text.replace("_", "").replace(",", ""))
        if sized and not path.exists():
            size = int(sized.group(1)) * _SIZE_UNITS[sized.group(2).lower()]
            if size < graphgen.MIN_OBJECTS:
                raise objstore.ObjstoreError(
                    f"--graph {text!r}: a generated graph has at least "
                    f"{graphgen.MIN_OBJECTS} objects"
                )
            return cls(size=size, seed=seed)
        if not path.exists():
            raise objstore.ObjstoreError(
                f"--graph {text!r}: not a preset ({', '.join(PRESETS)}), a size (such as 5000 "
                "or 50k), or a dump file"
            )
        return cls(dump=path, seed=seed)

    def load(self, salt: str) -> graphgen.Graph:
        """The graph under ids of its own for ``salt``: a generated one made with it, a
        file's with its ids replaced (see :func:`graphgen.salted`; one that cannot be is
        loaded as it is, and ``unsalted`` set)."""
        if self.size is not None:
            return graphgen.generate(self.size, seed=self.seed, salt=salt)
        graph = self._read()
        fresh = graphgen.salted(graph, salt)
        if fresh is None:
            self.unsalted = True
            return graph
        return fresh

    def _read(self) -> graphgen.Graph:
        assert self.dump is not None
        if _starts_array(self.dump):  # a download's JSON array
            array = graphgen.read_array(self.dump.read_bytes(), str(self.dump))
            return graphgen.Graph(array.objects, array.objects[-1][0])
        lines = list(graphgen.read_dump_lines(self.dump))
        if not lines:
            raise objstore.InvalidBatch(f"{self.dump}: empty dump")
        objects = [(object_id, data) for _, object_id, data in lines]
        try:  # each line one JSON object under its id, or the run measures nonsense
            objstore.codec.check_pairs(objects)
        except objstore.InvalidObject as exc:
            if exc.index is None:
                raise
            raise exc.located(f"{self.dump} line {lines[exc.index][0]}") from None
        return graphgen.Graph(objects, objects[-1][0])


def _starts_array(path: Path) -> bool:
    with path.open("rb") as fh:
        return fh.read(1 << 16).lstrip()[:1] == b"["


def _root_closure(graph: graphgen.Graph, by_id: dict[str, bytes]) -> dict[str, int]:
    root = by_id.get(graph.root_id, b"{}")
    return objstore.codec.decode_record(root, 0, Limits(1 << 31, 1 << 31)).closure or {}


def with_children(graph: graphgen.Graph) -> int:
    """How many objects the object+children route holds for the graph's root: the root and
    each id of its ``__closure`` the graph has (a dump may hold others, or lack some)."""
    by_id = dict(graph.objects)
    closure = _root_closure(graph, by_id)
    return 1 + sum(1 for i in closure if i in by_id and i != graph.root_id)


def graph_shape(graph: graphgen.Graph) -> dict[str, Any]:
    """Objects, bytes, depth and size percentiles of a graph."""
    sizes = sorted(len(d) for _, d in graph.objects)
    closure = _root_closure(graph, dict(graph.objects))

    def pct(p: float) -> int:
        return sizes[min(len(sizes) - 1, int(p * len(sizes)))]

    return {
        "objects": len(sizes),
        "bytes": sum(sizes),
        "depth": max(closure.values(), default=0),
        "size_p50": pct(0.5),
        "size_p90": pct(0.9),
        "size_p99": pct(0.99),
        "size_max": sizes[-1],
    }


@dataclass
class Measure:
    seconds: float
    objects: int
    bytes: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    extra: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "seconds": round(self.seconds, 6),
            "objects": self.objects,
            "bytes": self.bytes,
            "objects_per_s": self.objects / self.seconds if self.seconds else 0.0,
            "mb_per_s": self.bytes / self.seconds / 1e6 if self.seconds else 0.0,
        }
        if self.latencies_ms:
            ordered = sorted(self.latencies_ms)
            for p in (50, 95, 99):
                out[f"p{p}_ms"] = ordered[min(len(ordered) - 1, len(ordered) * p // 100)]
        out.update(self.extra)
        return out


def _count(pairs: Iterable[tuple[str, bytes]], deadline: float, expected: int) -> tuple[int, int]:
    """Objects and bytes of ``pairs`` read until ``deadline``; TargetMisbehaved when, read
    to the end, they are not the ``expected`` number of objects."""
    n = size = 0
    for _, data in pairs:
        n += 1
        size += len(data)
        if time.monotonic() > deadline:
            return n, size
    if n != expected:
        raise errors.TargetMisbehaved(f"returned {n:,} of the {expected:,} objects sent")
    return n, size


class Runner:
    """One benchmark run; ``progress(label)`` is called before each measurement."""

    def __init__(
        self,
        targets: list[TargetSpec],
        graph: GraphSource,
        *,
        workloads: Iterable[str] = WORKLOADS,
        clients: Iterable[str] = ("objstore", "specklepy"),
        concurrency: Iterable[int] = (4,),
        repeat: int = 1,
        max_seconds: float = 300.0,
        mixed_seconds: float = 5.0,
        single_requests: int = 300,
        keep: bool = False,
        progress: Callable[[str], None] | None = None,
    ) -> None:
        self.targets = targets
        self.graph_source = graph
        self.workloads = [w for w in WORKLOADS if w in set(workloads)]
        self.clients = list(clients)
        if "specklepy" in self.clients and not specklepy_available():
            self.clients.remove("specklepy")
        self.concurrency = list(concurrency)
        self.repeat = max(1, repeat)
        self.max_seconds = max_seconds
        self.mixed_seconds = mixed_seconds
        self.single_requests = single_requests
        self.keep = keep
        self.progress = progress or (lambda label: None)
        self.run_id = uuid.uuid4().hex[:12]
        self.notes: list[str] = []

    # -- drivers per target --------------------------------------------------------------------

    def _drivers(
        self, spec: TargetSpec, stores: dict[str, Any], concurrency: int, rep: int
    ) -> Generator[Driver, None, None]:
        if spec.kind == "lmdb":
            store = stores.get(spec.name)
            if store is None:
                assert spec.path is not None
                store = stores[spec.name] = objstore.open(
                    spec.path, limits=Limits(1 << 30, 1 << 31)
                )
            project = f"bench-{self.run_id}-{rep}-{concurrency}"
            try:
                yield EngineDriver(store, project)
            finally:  # a run stopped by an error leaves no project behind either
                if not self.keep:
                    store.delete_project(project)
            return
        for client in self.clients:
            if spec.kind != "spawn":
                yield self._client(client, spec, spec.url, spec.token, spec.project, concurrency)
                continue
            # a fresh server for each client and repeat: every cold send starts from an empty
            # store (commits cost more as a store fills), so later ones are not penalised
            server = SpawnedServer(workers=spec.workers, keep=self.keep).start()
            try:
                yield self._client(
                    client, spec, server.url, server.token, server.project, concurrency
                )
            finally:
                server.stop()
                if self.keep:
                    self.notes.append(f"kept spawned store {server.data}")

    def _client(
        self,
        client: str,
        spec: TargetSpec,
        url: str,
        token: str | None,
        project: str,
        concurrency: int,
    ) -> Driver:
        if client == "objstore":
            return ObjstoreClientDriver(url, token, project, concurrency, spec.compression)
        if client == "specklepy":
            return SpecklepyDriver(url, token, project)
        raise TargetError(f"unknown client {client!r}: objstore or specklepy")

    # -- the run -------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        results: list[dict[str, Any]] = []
        stores: dict[str, Any] = {}
        shape: dict[str, Any] | None = None
        try:
            for rep, concurrency, spec in itertools.product(
                range(self.repeat), self.concurrency, self.targets
            ):
                with contextlib.closing(self._drivers(spec, stores, concurrency, rep)) as drivers:
                    for driver in drivers:
                        graph = self._measure(driver, spec, concurrency, rep, results)
                        if shape is None:
                            shape = graph_shape(graph)
                        del graph  # before the next is made: one graph held at a time
        finally:
            for store in stores.values():
                store.close()
        if self.graph_source.unsalted:
            self.notes.append(
                f"{self.graph_source.dump} was sent under its own ids, which could not be "
                "replaced (each must be 32 hex characters and appear in its object): on a "
                "server that already held it the cold send was a re-send; point such targets "
                "at a new project"
            )
        summary = summarize(results)
        return {
            "run_id": self.run_id,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "machine": machine_info(),
            "graph": shape,
            "targets": [
                {
                    "name": t.name,
                    "kind": t.kind,
                    "url": t.url or None,
                    "workers": t.workers if t.kind == "spawn" else None,
                    "compression": t.compression if t.kind != "lmdb" else None,
                }
                for t in self.targets
            ],
            "results": results,
            "summary": summary,
            "ratios": ratios(summary),
            "notes": self.notes,
        }

    def _measure(
        self, driver: Driver, spec: TargetSpec, concurrency: int, rep: int, results: list[Any]
    ) -> graphgen.Graph:
        """Run every workload with ``driver`` on its own salted graph; return the graph."""
        salt = xxhash.xxh3_64_hexdigest(  # fixed length: same bytes per run
            f"{self.run_id}-{spec.name}-{driver.client}-{rep}-{concurrency}".encode()
        )
        graph = self.graph_source.load(salt)
        try:
            for workload, measure in self._workloads(driver, graph, spec.name, concurrency):
                results.append(
                    {
                        "target": spec.name,
                        "kind": spec.kind,
                        "workers": spec.workers if spec.kind == "spawn" else None,
                        "client": driver.client,
                        "compression": driver.compression,
                        "workload": workload,
                        "concurrency": concurrency,
                        "repeat": rep,
                        **measure.as_dict(),
                    }
                )
        finally:
            driver.close()
        return graph

    def _workloads(
        self, driver: Driver, graph: graphgen.Graph, target: str, concurrency: int
    ) -> Iterator[tuple[str, Measure]]:
        objects = graph.objects
        ids = list(dict.fromkeys(i for i, _ in objects))  # a dump may hold an id twice
        total_bytes = graph.total_bytes
        label = f"{target}/{driver.client}/c{concurrency}"
        sent = False
        for workload in self.workloads:
            self.progress(f"{label}: {workload}")
            deadline = time.monotonic() + self.max_seconds
            try:
                if workload == "cold send":
                    start = time.perf_counter()
                    driver.cold_send(objects)
                    sent = True
                    yield workload, Measure(time.perf_counter() - start, len(objects), total_bytes)
                    continue
                if not sent:  # every other workload reads the graph: make sure it is there
                    driver.cold_send(objects)
                    sent = True
                if workload == "re-send":
                    start = time.perf_counter()
                    checked = driver.resend(objects)
                    yield workload, Measure(time.perf_counter() - start, checked, total_bytes)
                elif workload == "download":
                    expected = with_children(graph)  # (outside the time measured)
                    start = time.perf_counter()
                    n, size = _count(driver.download(graph.root_id), deadline, expected)
                    yield workload, Measure(time.perf_counter() - start, n, size)
                elif workload == "getobjects":
                    shuffled = random.Random(1).sample(ids, len(ids))
                    start = time.perf_counter()
                    n, size = _count(driver.getobjects(shuffled), deadline, len(shuffled))
                    yield workload, Measure(time.perf_counter() - start, n, size)
                elif workload == "single GET":
                    sample = random.Random(2).sample(ids, min(self.single_requests, len(ids)))
                    latencies = []
                    size = 0
                    start = time.perf_counter()
                    for object_id in sample:
                        t0 = time.perf_counter()
                        data = driver.single(object_id)
                        latencies.append((time.perf_counter() - t0) * 1000)
                        size += len(data or b"")
                        if time.monotonic() > deadline:
                            break
                    yield (
                        workload,
                        Measure(time.perf_counter() - start, len(latencies), size, latencies),
                    )
                elif workload == "diff 100k":
                    known = ids[:50_000]
                    fake = [f"{self.run_id}{i:020x}" for i in range(100_000 - len(known))]
                    start = time.perf_counter()
                    answer = driver.diff(known + fake)
                    found = sum(answer.values())
                    if found != len(known):
                        raise errors.TargetMisbehaved(
                            f"found {found:,} of the {len(known):,} ids sent before"
                        )
                    yield (
                        workload,
                        Measure(
                            time.perf_counter() - start, len(answer), 0, extra={"found": found}
                        ),
                    )
                elif workload == "mixed":
                    yield workload, self._mixed(driver, graph, concurrency, target)
            except NotImplementedError:
                continue
            except errors.TargetMisbehaved as exc:
                raise errors.TargetMisbehaved(f"{label}: {workload}: {exc}") from None

    def _mixed(self, driver: Driver, graph: graphgen.Graph, readers: int, target: str) -> Measure:
        """``readers`` threads of getobjects on random batches while one writer sends; the
        first failure stops them all and is raised."""
        ids = [i for i, _ in graph.objects]
        list(driver.getobjects(ids[:1]))  # one without getobjects says so before any work
        extra = graphgen.generate(
            max(10, min(len(graph), 20_000)),
            seed=7,
            salt=xxhash.xxh3_64_hexdigest(
                f"{self.run_id}-mixed-{target}-{driver.client}-{readers}".encode()
            ),
        )
        stop = threading.Event()
        read_counts = [0] * readers
        written = [0]
        failures: list[BaseException] = []

        def reader(slot: int) -> None:
            rng = random.Random(slot)
            try:
                while not stop.is_set():
                    batch = rng.sample(ids, min(1000, len(ids)))
                    read_counts[slot] += sum(1 for _ in driver.getobjects(batch))
            except BaseException as exc:
                failures.append(exc)
                stop.set()

        def writer() -> None:
            w = driver.writer()
            try:
                for start in range(0, len(extra.objects), 1000):
                    if stop.is_set():
                        break
                    part = extra.objects[start : start + 1000]
                    w.cold_send(part)
                    written[0] += len(part)
            except BaseException as exc:
                failures.append(exc)
                stop.set()
            finally:
                if w is not driver:
                    w.close()

        threads = [threading.Thread(target=reader, args=(i,)) for i in range(readers)]
        threads.append(threading.Thread(target=writer))
        start = time.perf_counter()
        for t in threads:
            t.start()
        stop.wait(self.mixed_seconds)
        stop.set()
        for t in threads:
            t.join(timeout=self.max_seconds)
        seconds = time.perf_counter() - start
        if failures:
            try:
                raise failures[0]
            finally:  # kept here, its traceback would hold this frame, and the graph, in a cycle
                failures.clear()
        reads = sum(read_counts)
        return Measure(
            seconds,
            reads,
            0,
            extra={
                "writes": written[0],
                "writes_per_s": written[0] / seconds,
                "readers": readers,
            },
        )


def summarize(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Median over repeats per (target, client, workload, concurrency)."""
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for r in results:
        key = (r["target"], r["client"], r["workload"], r["concurrency"])
        groups.setdefault(key, []).append(r)
    out = []
    for (target, client, workload, concurrency), runs in groups.items():
        row: dict[str, Any] = {
            "target": target,
            "client": client,
            "compression": runs[0].get("compression"),
            "workload": workload,
            "concurrency": concurrency,
            "runs": len(runs),
        }
        for metric in (
            "objects_per_s",
            "mb_per_s",
            "p50_ms",
            "p95_ms",
            "p99_ms",
            "objects",
            "bytes",
            "writes_per_s",
        ):
            values = [r[metric] for r in runs if metric in r]
            if values:
                row[metric] = statistics.median(values)
        out.append(row)
    return out


def machine_info() -> dict[str, Any]:
    import os

    info: dict[str, Any] = {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "objstore": objstore.__version__,
    }
    try:
        from importlib.metadata import version

        info["specklepy"] = version("specklepy")
    except Exception:
        info["specklepy"] = None
    try:
        with open("/proc/meminfo") as fh:
            info["memory_kb"] = int(fh.readline().split()[1])
    except OSError:
        pass
    return info
