"""objstore bench: a real run against a spawned server and the engine, chart, compare, safety."""

from __future__ import annotations

import copy
import itertools
import json
from pathlib import Path

import pytest

import objstore
from objstore import bench, cli, errors
from objstore.bench import GraphSource, Runner, TargetError, compare, parse_target
from objstore.bench import runner as runner_module
from objstore.bench.report import chart
from objstore.bench.runner import WORKLOADS
from objstore.bench.targets import SpawnedServer, TargetSpec


@pytest.fixture(scope="module")
def doc(tmp_path_factory):
    """A run with both clients, which leaves the process's environment and /tmp as it found
    them (specklepy's user data folder is the driver's own, set and removed with it)."""
    import os
    import tempfile

    tmp = tmp_path_factory.mktemp("bench")
    env_before = os.environ.get("SPECKLE_USERDATA_PATH")
    os.environ.pop("SPECKLE_USERDATA_PATH", None)
    leftovers = set(Path(tempfile.gettempdir()).glob("bench-speckle-*"))
    runner = Runner(
        [TargetSpec("spawned", "spawn"), TargetSpec("engine", "lmdb", path=tmp / "engine")],
        GraphSource(size=300),
        clients=("objstore", "specklepy"),
        mixed_seconds=1.0,
        single_requests=50,
    )
    try:
        result = runner.run()
        assert "SPECKLE_USERDATA_PATH" not in os.environ
        assert set(Path(tempfile.gettempdir()).glob("bench-speckle-*")) == leftovers
    finally:
        if env_before is not None:
            os.environ["SPECKLE_USERDATA_PATH"] = env_before
    return result


def rows(doc, target, client):
    return {
        r["workload"]: r for r in doc["results"] if r["target"] == target and r["client"] == client
    }


def test_every_workload_with_sane_figures(doc):
    shape = doc["graph"]
    assert shape["objects"] >= 300 and shape["depth"] >= 3
    for target, client in (("spawned", "objstore"), ("engine", "engine")):
        got = rows(doc, target, client)
        assert set(got) == set(WORKLOADS), (target, client)
        for workload in ("cold send", "download", "getobjects"):
            assert got[workload]["objects"] == shape["objects"], (target, workload)
            assert got[workload]["bytes"] == shape["bytes"], (target, workload)
            assert got[workload]["objects_per_s"] > 0
        assert got["re-send"]["objects"] == shape["objects"]
        assert (got["diff 100k"]["objects"] == 100_000 and got["diff 100k"]["found"] == 300) or (
            got["diff 100k"]["found"] == shape["objects"]
        )
        assert 0 < got["single GET"]["p50_ms"] <= got["single GET"]["p99_ms"]
        assert got["single GET"]["objects"] == 50
        assert got["mixed"]["objects"] > 0 and got["mixed"]["writes"] > 0
    # objstore's client on auto: a loopback server gets its bodies uncompressed, and says so
    assert {r["compression"] for r in rows(doc, "spawned", "objstore").values()} == {"off"}
    assert {r["compression"] for r in doc["summary"] if r["client"] == "engine"} == {None}
    speckle = rows(doc, "spawned", "specklepy")
    assert speckle["cold send"]["objects"] == shape["objects"]
    assert speckle["download"]["objects"] == shape["objects"]
    assert speckle["download"]["bytes"] == shape["bytes"]
    assert doc["machine"]["cpus"] and doc["machine"]["objstore"]


def test_the_run_states_its_side_by_side_ratios(doc):
    summary = {(r["target"], r["client"], r["workload"]): r for r in doc["summary"]}
    got = {(r["kind"], r["client"], r["workload"]): r for r in doc["ratios"]}
    for workload in ("cold send", "download"):
        ours = summary["spawned", "objstore", workload]["objects_per_s"]
        theirs = summary["spawned", "specklepy", workload]["objects_per_s"]
        engine = summary["engine", "engine", workload]["objects_per_s"]
        assert got["clients", "objstore", workload]["ratio"] == pytest.approx(ours / theirs)
        assert got["ceiling", "objstore", workload]["ratio"] == pytest.approx(ours / engine)
        assert got["ceiling", "specklepy", workload]["ratio"] == pytest.approx(theirs / engine)
    assert {w for kind, client, w in got if kind == "ceiling" and client == "objstore"} == set(
        WORKLOADS
    )


def test_chart_is_a_png(doc, tmp_path):
    path = tmp_path / "chart.png"
    chart(doc, path)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def test_compare_flags_an_injected_slowdown(doc, tmp_path, capsys):
    slower = copy.deepcopy(doc)
    for row in slower["summary"]:
        if row["target"] == "spawned" and row["workload"] == "download":
            row["objects_per_s"] /= 2
    rows_, regressions = compare(doc, slower, threshold=0.2)
    assert rows_ and [r["workload"] for r in regressions] == ["download"] * len(regressions)
    assert {r["client"] for r in regressions} == {"objstore", "specklepy"}
    assert compare(doc, doc)[1] == []
    old, new = tmp_path / "old.json", tmp_path / "new.json"
    old.write_text(json.dumps(doc))
    new.write_text(json.dumps(slower))
    assert cli.main(["bench", "compare", str(old), str(new)]) == 1
    assert "REGRESSION" in capsys.readouterr().out
    assert cli.main(["bench", "compare", str(old), str(old)]) == 0


def test_targets_take_the_clients_compression():
    assert parse_target("a=spawn:2,compression=on").compression == "on"
    assert parse_target("a=spawn").compression == "auto"
    spec = parse_target("b=http://127.0.0.1:9,project=p,compression=off")
    assert (spec.url, spec.project, spec.compression) == ("http://127.0.0.1:9", "p", "off")
    with pytest.raises(TargetError, match="compression must be auto, on or off"):
        parse_target("c=spawn,compression=zstd")
    with pytest.raises(TargetError, match="unknown option 'token'"):
        parse_target("d=spawn,token=t")


def test_non_loopback_urls_are_refused_without_the_flag(capsys):
    for url in ("http://10.1.2.3:8000", "http://example.com", "https://192.168.0.10"):
        with pytest.raises(TargetError, match="--allow-remote"):
            parse_target(f"far={url}")
        assert cli.main(["bench", "--target", f"far={url}"]) == 2
        assert "not a loopback address" in capsys.readouterr().err
    assert parse_target("far=http://10.1.2.3:8000", allow_remote=True).url == "http://10.1.2.3:8000"
    for url in ("http://127.0.0.1:8000", "http://localhost:1", "http://[::1]:8000"):
        assert parse_target(f"near={url},token=t,project=p").project == "p"
    with pytest.raises(TargetError):
        parse_target("nonsense")


def test_cli_run_writes_json_and_chart(tmp_path, capsys):
    out, png = tmp_path / "r.json", tmp_path / "r.png"
    code = cli.main(
        [
            "bench",
            "--target",
            f"e=lmdb:{tmp_path / 's'}",
            "--graph",
            "200",
            "--workloads",
            "cold send,download",
            "--out",
            str(out),
            "--chart",
            str(png),
        ]
    )
    assert code == 0
    doc = json.loads(out.read_text())
    assert {r["workload"] for r in doc["results"]} == {"cold send", "download"}
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert "cold send" in capsys.readouterr().out


def test_each_client_and_repeat_gets_a_fresh_spawned_server(monkeypatch):
    """Commits cost more as a store fills: a server shared by the clients and repeats would
    give the later cold sends a fuller store than the first."""
    started: list[SpawnedServer] = []
    live: list[SpawnedServer] = []

    class Recorded(SpawnedServer):
        def start(self, timeout: float = 60) -> SpawnedServer:
            assert not live, "a spawned server was still running"
            started.append(self)
            live.append(self)
            return super().start(timeout)

        def stop(self) -> None:
            super().stop()
            if self in live:
                live.remove(self)

    monkeypatch.setattr(runner_module, "SpawnedServer", Recorded)
    doc = Runner(
        [TargetSpec("spawned", "spawn")],
        GraphSource(size=100),
        workloads=("cold send",),
        clients=("objstore", "specklepy"),
        repeat=2,
    ).run()
    sends = [r for r in doc["results"] if r["workload"] == "cold send"]
    assert [(r["client"], r["repeat"]) for r in sends] == [
        ("objstore", 0),
        ("specklepy", 0),
        ("objstore", 1),
        ("specklepy", 1),
    ]
    assert all(r["objects"] == doc["graph"]["objects"] for r in sends)
    assert len(started) == 4 and not live
    assert not any(server.data.exists() for server in started)


def test_workloads_are_named_loosely_but_never_ambiguously():
    assert bench.workloads_named(["cold-send", "RESEND", "single", "diff_100k", "get"]) == [
        "cold send",
        "re-send",
        "single GET",
        "diff 100k",
        "getobjects",
    ]
    with pytest.raises(bench.TargetError, match="'upload' is unknown; choose from cold send"):
        bench.workloads_named(["upload"])
    with pytest.raises(bench.TargetError, match="'d' matches several"):
        bench.workloads_named(["d"])  # download, diff 100k


def test_cli_names_an_unknown_workload(capsys):
    code = cli.main(["bench", "--target", "e=lmdb:/nonexistent", "--workloads", "cold,upload"])
    assert code == 2 and "workload 'upload' is unknown" in capsys.readouterr().err


def test_compare_refuses_files_that_are_not_results(doc, tmp_path, capsys):
    good = tmp_path / "good.json"
    good.write_text(json.dumps(doc))
    other = copy.deepcopy(doc)
    for row in other["summary"]:
        row["target"] = "elsewhere"
    cases = {
        "not-json.json": ("{oops", "is not JSON"),
        "empty.json": ("{}", "is not an objstore bench result"),
        "list.json": ("[1, 2]", "is not an objstore bench result"),
        "rows.json": ('{"summary": [{"target": "a"}]}', "is not an objstore bench result"),
        "other.json": (json.dumps(other), "nothing to compare"),
    }
    for name, (text, says) in cases.items():
        (tmp_path / name).write_text(text)
        assert cli.main(["bench", "compare", str(good), str(tmp_path / name)]) == 2
        err = capsys.readouterr().err
        assert says in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (["--concurrency", "0"], "argument --concurrency: give whole numbers of at least 1"),
        (["--concurrency", "1,x"], "argument --concurrency: give whole numbers of at least 1"),
        (["--repeat", "0"], "argument --repeat: give a whole number of at least 1"),
        (["--spawn", "0"], "argument --spawn: give a whole number of at least 1"),
        (["--max-seconds", "-1"], "argument --max-seconds: give a number of seconds above 0"),
    ],
)
def test_cli_refuses_counts_below_one(flags, says, tmp_path, capsys):
    with pytest.raises(SystemExit) as stopped:
        cli.main(["bench", "--target", f"e=lmdb:{tmp_path / 's'}", *flags])
    assert stopped.value.code == 2 and says in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


def test_targets_refuse_no_workers_or_no_directory():
    for text in ("a=spawn:0", "a=spawn:x", "a=spawn:"):
        with pytest.raises(TargetError, match="spawn:N takes N workers, 1 or more"):
            parse_target(text)
    with pytest.raises(TargetError, match="lmdb: needs a directory"):
        parse_target("a=lmdb:")


def test_outputs_that_cannot_be_written_are_refused_before_the_run(tmp_path, capsys):
    for flag, path, says in (
        ("--out", tmp_path / "nowhere" / "r.json", "no directory"),
        ("--chart", tmp_path, "it is a directory"),
    ):
        code = cli.main(["bench", "--target", f"e=lmdb:{tmp_path / 's'}", flag, str(path)])
        assert code == 2 and f"{flag} {path}: {says}" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()  # nothing was run


def test_a_dump_graph_with_a_bad_line_is_named_by_it(tmp_path):
    dump = tmp_path / "g.dump"
    dump.write_text('a\t{"id": "a"}\nb\t{"id": "zz"}\nr\t{"id": "r"}\n')
    with pytest.raises(errors.IdMismatch, match=r"g\.dump line 2 id 'b': given as 'b'"):
        GraphSource.parse(str(dump)).load("salt")
    dump.write_text("")
    with pytest.raises(errors.InvalidBatch, match="empty dump"):
        GraphSource.parse(str(dump)).load("salt")


def test_a_downloaded_json_array_is_a_graph_as_its_dump_is(tmp_path):
    """The object+children route's application/json (root first) is a graph file too: the
    same objects, the root last, as its id<TAB>json dump gives."""
    from objstore import graphgen

    g = graphgen.generate(400, seed=8)
    graphgen.write_dump(g.objects, tmp_path / "g.dump")
    ordered = [g.objects[-1], *g.objects[:-1]]  # as the route streams them: root first
    (tmp_path / "g.json").write_bytes(b"[" + b",".join(data for _, data in ordered) + b"]")
    from_dump = GraphSource.parse(str(tmp_path / "g.dump")).load("salt")
    from_array = GraphSource.parse(str(tmp_path / "g.json")).load("salt")
    moved = graphgen.salted(g, "salt")  # each run sends the file under ids of its own
    assert moved is not None
    assert from_array.root_id == from_dump.root_id == moved.root_id
    assert sorted(from_array.objects) == sorted(from_dump.objects) == sorted(moved.objects)
    (tmp_path / "bad.json").write_text('[{"id": "r"}, {"id": "x" ')
    with pytest.raises(errors.InvalidObject, match=r"bad\.json: element 1"):
        GraphSource.parse(str(tmp_path / "bad.json")).load("salt")


def test_a_dump_is_sent_cold_in_every_repeat(tmp_path):
    """A server that held a user's graph already would have objstore's client upload nothing
    and time a re-send as the cold send: each repeat sends the file under ids of its own, as
    generated graphs are."""
    import objstore
    from objstore import graphgen

    g = graphgen.generate(300, seed=4)
    graphgen.write_dump(g.objects, tmp_path / "g.dump")
    server = SpawnedServer(data=tmp_path / "server", keep=True).start()
    try:
        doc = Runner(
            [TargetSpec("url", "http", url=server.url, token=server.token, project="bench")],
            GraphSource.parse(str(tmp_path / "g.dump")),
            workloads=["cold send", "download"],
            clients=("objstore",),
            repeat=2,
        ).run()
    finally:
        server.stop()
    assert not doc["notes"]
    with objstore.open(tmp_path / "server" / "objects") as store:
        assert store.count("bench") == 2 * len(g.objects)  # both repeats' objects, new ids
        assert not any(store.has("bench", [i for i, _ in g.objects]).values())
    downloads = [r for r in doc["results"] if r["workload"] == "download"]
    assert [r["objects"] for r in downloads] == [len(g.objects)] * 2


def test_a_dump_whose_ids_cannot_be_moved_is_sent_as_it_is_and_said_so(tmp_path):
    dump = tmp_path / "g.dump"
    dump.write_text('a\t{"id": "a"}\nroot\t{"id": "root", "@x": {"referencedId": "a"}}\n')
    runner = Runner(
        [TargetSpec("e", "lmdb", path=tmp_path / "e")],
        GraphSource.parse(str(dump)),
        workloads=["cold send"],
    )
    doc = runner.run()
    assert [r["objects"] for r in doc["results"]] == [2]
    assert len(doc["notes"]) == 1 and "sent under its own ids" in doc["notes"][0]


def test_graph_sizes_read_as_people_write_them(tmp_path, monkeypatch):
    for text, size in {"small": 10_000, "5000": 5_000, "50k": 50_000, "2M": 2_000_000}.items():
        assert GraphSource.parse(text).size == size
    assert GraphSource.parse("1_500").size == GraphSource.parse("1,500").size == 1_500
    with pytest.raises(errors.ObjstoreError, match="'5': a generated graph has at least 10"):
        GraphSource.parse("5")
    with pytest.raises(errors.ObjstoreError, match=r"'50q': not a preset .* or a dump file"):
        GraphSource.parse("50q")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "50k").write_text('r\t{"id": "r"}\n')
    assert GraphSource.parse("50k").dump == Path("50k")  # a file of that name is a dump


def test_a_chart_without_matplotlib_is_refused_before_the_run(tmp_path, capsys, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib" else real(name)
    )
    code = cli.main(
        ["bench", "--target", f"e=lmdb:{tmp_path / 's'}", "--chart", str(tmp_path / "c.png")]
    )
    assert code == 2 and "--chart needs matplotlib" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("getobjects_from", [None, 0, 1])
def test_a_run_holds_one_graph_at_a_time(tmp_path, monkeypatch, getobjects_from):
    """Each run makes its own salted graph; a large one is gigabytes, so the last must be
    freed before the next is made, by reference counting alone: the last run's stayed bound
    until the next was made (6.4 GB peak for `large`), and a driver without getobjects (as
    specklepy's) failed the mixed workload with an exception whose traceback held the graph
    in a cycle until a full collection (a medium run grew 0.5 GB a repeat).
    ``getobjects_from``: the engine's getobjects fails (NotImplementedError) from that call."""
    import gc
    import itertools
    import weakref

    from objstore import graphgen
    from objstore.bench.drivers import EngineDriver

    class Tracked(graphgen.Graph):  # (a subclass without slots takes weak references)
        pass

    made: list[weakref.ref[Tracked]] = []
    held_at_load: list[int] = []
    load = GraphSource.load

    def tracked_load(self: GraphSource, salt: str) -> graphgen.Graph:
        held_at_load.append(sum(ref() is not None for ref in made))
        graph = load(self, salt)
        kept = Tracked(graph.objects, graph.root_id)
        made.append(weakref.ref(kept))
        return kept

    monkeypatch.setattr(GraphSource, "load", tracked_load)
    if getobjects_from is not None:
        calls = itertools.count()
        getobjects = EngineDriver.getobjects

        def failing(self, ids):
            if next(calls) >= getobjects_from:
                raise NotImplementedError
            return getobjects(self, ids)

        monkeypatch.setattr(EngineDriver, "getobjects", failing)
    runner = Runner(
        [TargetSpec(name, "lmdb", path=tmp_path / name) for name in ("a", "b")],
        GraphSource(size=200),
        workloads=["cold send", "mixed"],
        repeat=2,
        mixed_seconds=0.3,
    )
    enabled = gc.isenabled()
    gc.disable()  # what is freed is freed when its last reference goes
    try:
        doc = runner.run()
    finally:
        if enabled:
            gc.enable()
    assert len(made) == 4 and held_at_load == [0, 0, 0, 0]
    mixed = [r for r in doc["results"] if r["workload"] == "mixed"]
    assert len(mixed) == (4 if getobjects_from is None else 0)


def _lose_one(method):
    def losing(self, *args):
        return itertools.islice(method(self, *args), 1, None)  # every object but the first

    return losing


@pytest.mark.parametrize(
    ("workload", "method", "broken", "says"),
    [
        ("download", "download", _lose_one, "download: returned {less} of the {n} objects sent"),
        ("getobjects", "getobjects", _lose_one, "getobjects: returned {less} of the {n} objects"),
        (
            "diff 100k",
            "diff",
            lambda m: lambda self, ids: dict.fromkeys(ids, False),
            "diff 100k: found 0 of the {n} ids sent before",
        ),
    ],
)
def test_a_target_that_loses_what_it_took_stops_the_run_naming_it(
    tmp_path, monkeypatch, workload, method, broken, says
):
    """A target whose answers lose objects would give figures that mean nothing: the run
    stops with TargetMisbehaved (a one-line error in the CLI) naming target, client and
    workload; the same run with nothing broken gives its figures."""
    spec = TargetSpec("engine", "lmdb", path=tmp_path / "engine")
    fine = Runner([spec], GraphSource(size=300), workloads=[workload]).run()
    n = fine["graph"]["objects"]
    assert [r["objects"] for r in fine["results"]] == [n if method != "diff" else 100_000]
    driver = bench.drivers.EngineDriver
    monkeypatch.setattr(driver, method, broken(getattr(driver, method)))
    spec = TargetSpec("engine", "lmdb", path=tmp_path / "engine2")
    said = "^engine/engine/c4: " + says.format(n=n, less=n - 1)
    with pytest.raises(errors.TargetMisbehaved, match=said):
        Runner([spec], GraphSource(size=300), workloads=[workload]).run()
    with objstore.open(tmp_path / "engine2") as store:
        assert store.projects() == []  # the stopped run's project deleted, as a whole run's


def test_a_server_that_uploads_on_a_re_send_is_named(monkeypatch):
    """objstore's client re-sending a graph the server took must upload nothing; a server
    whose diff forgets what it took is named, not measured."""
    from objstore.client.remote import Remote

    server = SpawnedServer(project="p").start()
    try:
        spec = parse_target(f"srv={server.url},token={server.token},project=p")
        monkeypatch.setattr(Remote, "diff", lambda self, ids: dict.fromkeys(ids, False))
        says = r"^srv/objstore/c4: re-send: uploaded \d+ of the \d+ objects it had taken before"
        with pytest.raises(errors.TargetMisbehaved, match=says):
            Runner([spec], GraphSource(size=300), workloads=["re-send"]).run()
    finally:
        server.stop()


def test_a_dump_with_strays_and_repeats_is_measured_not_called_misbehaving(tmp_path):
    """A user's dump may hold objects outside its root's closure and an id twice: a
    download is checked against the root and the closure ids the dump has, getobjects
    against its distinct ids, so a target serving them rightly is measured."""
    lines = [
        ("a", {"id": "a", "v": 1}),
        ("b", {"id": "b", "v": 2}),
        ("a", {"id": "a", "v": 1}),  # the same object twice
        ("stray", {"id": "stray", "v": 3}),  # in no closure
        ("r", {"id": "r", "__closure": {"a": 1, "b": 1, "gone": 1}}),  # "gone": not in it
    ]
    dump = tmp_path / "g.dump"
    dump.write_text("".join(f"{i}\t{json.dumps(o)}\n" for i, o in lines))
    spec = TargetSpec("engine", "lmdb", path=tmp_path / "engine")
    workloads = ["download", "getobjects", "re-send"]
    doc = Runner([spec], GraphSource.parse(str(dump)), workloads=workloads).run()
    got = {r["workload"]: r["objects"] for r in doc["results"]}
    assert got == {"download": 3, "getobjects": 4, "re-send": 4}  # the engine: distinct ids
