"""objstore push / pull / cp against a real server, and their one-line errors."""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
from pathlib import Path

import httpx

import objstore
from objstore import cli, graphgen
from objstore.cli import stores, transfer
from objstore.cli.source import Source
from objstore.client import Remote, receive

from .conftest import run


def test_push_pull_json_document(server, tmp_path, capsys, monkeypatch):
    doc = {
        "name": "tower",
        "@floors": [
            {"level": i, "@(50)heights": list(range(i * 10, i * 10 + 120))} for i in range(30)
        ],
        "meta": {"author": "é"},
    }
    path = tmp_path / "doc.json"
    path.write_text(json.dumps(doc))
    common = ["--url", server.url, "--token", server.tokens["alice"], "--project", "other"]
    code, out, err = run(capsys, "push", str(path), *common, "--cache", str(tmp_path / "c1"))
    assert code == 0, err
    root = out.strip()
    assert len(root) == 32 and "uploaded" in err
    code, out, err = run(capsys, "push", str(path), *common, "--cache", str(tmp_path / "c1"))
    assert "0 uploaded" in err
    target = tmp_path / "back.json"
    code, _, err = run(
        capsys, "pull", root, *common, "--cache", str(tmp_path / "c2"), "-o", str(target)
    )
    assert code == 0, err
    assert json.loads(target.read_text()) == doc
    code, out, err = run(capsys, "pull", root, *common, "--cache", str(tmp_path / "c2"))
    assert "0 downloaded" in err  # served from the cache
    lines = out.splitlines()
    assert lines[0].split("\t")[0] == root and len(lines) > 30
    monkeypatch.chdir(tmp_path)
    code, dashed, err = run(capsys, "pull", root, *common, "--cache", "c2", "-o", "-")
    assert code == 0 and dashed == out, err  # "-" is stdout, not a file named "-"
    assert not (tmp_path / "-").exists()


def test_push_dump_and_cp_both_ways(server, tmp_path, capsys):
    g = graphgen.generate(800, seed=21)
    graphgen.write_dump(g.objects, tmp_path / "g.dump")
    common = ["--token", server.tokens["alice"], "--project", "other"]
    code, out, err = run(
        capsys,
        "push",
        str(tmp_path / "g.dump"),
        "--url",
        server.url,
        *common,
        "--cache",
        str(tmp_path / "c"),
    )
    assert code == 0 and out.strip() == g.root_id
    code, _, err = run(
        capsys, "cp", server.url, str(tmp_path / "local"), "--root", g.root_id, *common
    )
    assert code == 0 and f"{len(g):,} objects" in err
    code, _, err = run(
        capsys, "cp", str(tmp_path / "local"), server.url, "--root", g.root_id, *common
    )
    assert code == 0 and f"{len(g):,} already on the server" in err
    # into another project: the local store holds the graph under "other"
    to_priv = ["cp", str(tmp_path / "local"), server.url, "--root", g.root_id]
    to_priv += ["--token", server.tokens["alice"], "--project", "priv"]
    code, _, err = run(capsys, *to_priv)
    assert code == 2 and f"project 'priv' of the local store {tmp_path / 'local'}" in err
    code, _, err = run(capsys, *to_priv, "--local-project", "other")
    assert code == 0 and f"{len(g):,} objects" in err
    assert server.store.count("priv") >= len(g)
    code, _, err = run(capsys, "cp", str(tmp_path / "none"), server.url, "--root", "x", *common)
    assert code == 2 and err.startswith("objstore: no store in ")
    assert not (tmp_path / "none").exists()


def test_ctrl_c_ends_a_push_with_one_line_and_code_130(tmp_path, capsys, monkeypatch):
    import objstore.client

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(objstore.client, "send", interrupted)
    path = tmp_path / "d.json"
    path.write_text('{"a": 1}')
    argv = ["push", str(path), "--url", "http://127.0.0.1:9", "--project", "p"]
    code, _, err = run(capsys, *argv, "--cache", str(tmp_path / "c"))
    assert code == 130 and err == (
        "objstore: interrupted (run it again: it moves only what is still missing)\n"
    )


def test_errors_are_one_line(server, tmp_path, capsys):
    path = tmp_path / "d.json"
    path.write_text('{"a": 1}')
    base = ["--project", "priv", "--cache", str(tmp_path / "c")]
    code, _, err = run(capsys, "push", str(path), "--url", "http://127.0.0.1:9", *base)
    assert code == 2 and err.startswith("objstore: cannot reach") and err.count("\n") == 1
    code, _, err = run(capsys, "push", str(path), "--url", server.url, "--token", "x" * 42, *base)
    assert code == 2 and "HTTP 403" in err and "Traceback" not in err
    assert f"POST {server.url}/api/diff/priv: HTTP 403" in err  # names the request refused
    code, _, err = run(capsys, "push", str(path), "--url", server.url, *base)
    assert code == 2 and "HTTP 401" in err
    code, _, err = run(
        capsys, "pull", "f" * 32, "--url", server.url, "--token", server.tokens["alice"], *base
    )
    assert code == 2 and f"not found in project 'priv' on {server.url}" in err
    for url in ("127.0.0.1:9", "ftp://127.0.0.1", "http://"):  # said so, not "cannot reach"
        code, _, err = run(capsys, "pull", "f" * 32, "--url", url, *base)
        assert code == 2 and err == (
            f"objstore: server URL {url!r} is not an http:// or https:// URL with a host\n"
        )


def test_pushing_an_empty_file_says_so_and_sends_nothing(server, tmp_path, capsys):
    empty = tmp_path / "empty.tsv"
    empty.write_bytes(b"")
    code, out, err = run(
        capsys,
        "push",
        str(empty),
        "--url",
        server.url,
        "--token",
        server.tokens["alice"],
        "--project",
        "priv",
        "--cache",
        str(tmp_path / "c"),
    )
    assert (code, out, err) == (2, "", f"objstore: {empty}: empty dump\n")


def test_compression_flag_reaches_the_client():
    common = ["pull", "root", "--url", "http://127.0.0.1:9", "--project", "p"]
    parser = cli.build_parser()
    for flag, compressed in ((), False), (("--compression", "on"), True):
        with transfer._remote(parser.parse_args([*common, *flag])) as remote:
            assert remote.compress is compressed  # auto: loopback goes uncompressed


def test_a_server_data_dir_is_refused_as_a_cache(server, tmp_path, capsys):
    """A cache written at the top of a server's data dir would sit beside its auth/ and
    objects/ (and make the dir look like a cache to the admin commands)."""
    data = tmp_path / "data"
    assert cli.main(["project", "create", "p1", "--owner", "alice", "--data", str(data)]) == 0
    (data / "objects").mkdir()
    import objstore

    objstore.open(data / "objects").close()
    capsys.readouterr()
    common = ["--url", server.url, "--token", server.tokens["alice"], "--project", "other"]
    code, _, err = run(capsys, "pull", "abc", *common, "--cache", str(data))
    assert code == 2 and "is a server's data dir, not a cache" in err
    assert str(data / "objects") in err
    assert not (data / "data.mdb").exists()
    code, out, _ = run(capsys, "project", "list", "--data", str(data))
    assert code == 0 and out.startswith("p1\tpublic=False")
    cache = tmp_path / "cache"  # a cache with an auth/ in it (older objstores made one)
    objstore.open(cache).close()
    (cache / "auth").mkdir()
    code, _, err = run(capsys, "pull", "abc", *common, "--cache", str(cache))
    assert "server's data dir" not in err and "abc" in err


def test_cp_with_a_server_data_dir_uses_its_store(server, tmp_path, capsys):
    g = graphgen.generate(300, seed=5)
    data = tmp_path / "data"
    assert cli.main(["project", "create", "other", "--owner", "alice", "--data", str(data)]) == 0
    import objstore

    with objstore.open(data / "objects") as store:
        store.put_many("other", graphgen.batches(g.objects))
    capsys.readouterr()
    common = ["--root", g.root_id, "--token", server.tokens["alice"], "--project", "other"]
    code, _, err = run(capsys, "cp", str(data), server.url, *common)
    assert code == 0 and f"{len(g):,} objects" in err, err
    code, _, err = run(capsys, "cp", server.url, str(data), *common)
    assert code == 0 and f"{len(g):,} from the cache" in err, err
    assert not (data / "data.mdb").exists()


def test_serve_opens_its_auth_store_even_where_data_holds_a_store_itself(tmp_path):
    """``serve`` keeps using DATA/objects and DATA/auth even when DATA holds a store itself."""
    import objstore

    objstore.open(tmp_path).close()  # DATA is a store itself (a cache, say)
    args = cli.build_parser().parse_args(["serve", "--data", str(tmp_path)])
    stores.auth_store(args).close()  # no AttributeError on the command's missing action
    assert (tmp_path / "auth").is_dir()


def test_push_names_a_bad_dump_line_or_document_member(server, tmp_path, capsys):
    """A dump's bad line fails the push named by the file and line (blank lines counted), not
    by its place in some batch or the server's 400, and its root is not uploaded; a JSON
    document's member the decomposer refuses is named by its path."""
    common = ["--url", server.url, "--token", server.tokens["alice"], "--project", "other"]
    cache = ["--cache", str(tmp_path / "c")]
    cases = {
        "bad.dump": (
            'dl-a\t{"id": "dl-a"}\n\ndl-b\t{"id": "dl-b", "x":\n',
            "bad.dump line 3 id 'dl-b': ",
        ),
        "other-id.dump": (
            'dl-c\t{"id": "dl-zz"}\ndl-root\t{"id": "dl-root"}\n',
            "other-id.dump line 1 id 'dl-c': given as 'dl-c', but its JSON says id 'dl-zz'",
        ),
        "no-tab.dump": ('dl-d\t{"id": "dl-d"}\njust text\n', "no-tab.dump line 2 is not an id"),
    }
    cases["doc.json"] = (
        '{"name": "tower", "@floors": [{"level": 0}, {"level": 1, "id": "mine"}]}',
        "doc.json: $.@floors[1]: key 'id' is reserved for the decomposer",
    )
    cases["deep.json"] = (  # past msgspec's guard on any Python (10000 levels on 3.13)
        '{"v": ' + "[" * 20_000 + "]" * 20_000 + "}",
        "deep.json: the document nests too deeply to read",
    )
    cases["chain.json"] = (  # read on any Python, but past the recursion decompose walks by
        '{"@c": ' * 600 + "{}" + "}" * 600,
        "chain.json: the document nests deeper than Python's recursion limit",
    )
    cases["cut.json"] = ('{"name": "tower", "@floors": [', "cut.json is not valid JSON: ")
    cases["array.json"] = (
        '[{"id": "ar-root", "__closure": {"ar-a": 1}}, {"id": "ar-a", "x": }]',
        "array.json: element 1 id 'ar-a': ",
    )
    cases["numbers.json"] = ("[1, 2]", "numbers.json: element 0: batch elements must be JSON")
    cases["bad-id.json"] = ('[{"id": "ar b"}]', "bad-id.json: element 0 id 'ar b': id must not")
    cases["empty.json"] = (" [ ] ", "empty.json: empty array")
    for scalar in ('"tower"', "42", "-1.5", "true", "null"):
        cases[f"scalar-{scalar}.json"] = (
            scalar + "\n",
            f"scalar-{scalar}.json is neither a JSON document (an object), a JSON array",
        )
    for name, (text, expected) in cases.items():
        (tmp_path / name).write_text(text)
        code, out, err = run(capsys, "push", str(tmp_path / name), *common, *cache)
        assert code == 2 and out == "", err
        assert expected in err and len(err.strip().splitlines()) == 1, err
    # good objects may have gone up while the cache checked; the bad ones and roots never
    assert not any(server.store.has("other", ["dl-b", "dl-c", "dl-root", "ar-root"]).values())


def test_push_takes_the_json_array_the_download_route_serves(server, tmp_path, capsys):
    """What ``GET /objects/P/ROOT`` serves as application/json (root first) pushes as the
    graph it is: the same bytes under the same ids, the root reported and sent last, each
    object after everything its ``__closure`` lists; objects without an id go up under
    their hash, as the server names them."""

    g = graphgen.generate(1_500, seed=31)
    with objstore.open(tmp_path / "src") as src:
        src.put("p", [data for _, data in g.objects])
    token = server.tokens["alice"]
    common = ["--token", token, "--project", "priv", "--local-project", "p", "--root", g.root_id]
    code, _, err = run(capsys, "cp", str(tmp_path / "src"), server.url, *common)
    assert code == 0, err
    got = httpx.get(
        f"{server.url}/objects/priv/{g.root_id}",
        headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
    )
    assert got.status_code == 200
    (tmp_path / "graph.json").write_bytes(got.content)
    assert json.loads(got.content)[0]["id"] == g.root_id

    with (tmp_path / "graph.json").open("rb") as fh:
        source = Source(tmp_path / "graph.json", fh)
    sent = [object_id for object_id, _ in source.objects]
    assert sent[-1] == g.root_id and sorted(sent) == sorted(i for i, _ in g.objects)
    place = {object_id: n for n, object_id in enumerate(sent)}
    for object_id, data in g.objects:
        for child in json.loads(data).get("__closure", {}):
            assert place[child] < place[object_id], (child, object_id)

    code, out, err = run(
        capsys, "push", str(tmp_path / "graph.json"), "--url", server.url, "--token", token,
        "--project", "other", "--cache", str(tmp_path / "c"),
    )  # fmt: skip
    assert code == 0 and out.strip() == g.root_id, err
    assert err.startswith(f"{len(g.objects):,} objects: ")  # (other tests' may be there)

    listed = json.loads(got.content)  # getobjects' array: no root first, said so; all go up
    (tmp_path / "listed.json").write_text(json.dumps([listed[5], listed[0], listed[9]]))
    code, out, err = run(
        capsys, "push", str(tmp_path / "listed.json"), "--url", server.url, "--token", token,
        "--project", "other", "--cache", str(tmp_path / "c"),
    )  # fmt: skip
    assert code == 0 and out.strip() == listed[5]["id"], err
    assert "note: 2 of the 3 objects in" in err and "not in its first object's __closure" in err
    for object_id, data in g.objects:
        assert server.store.get("other", object_id) == data

    (tmp_path / "plain.json").write_text('[{"speckle_type": "Base", "x": "ar-plain"}]')
    code, out, err = run(
        capsys, "push", str(tmp_path / "plain.json"), "--url", server.url, "--token", token,
        "--project", "other", "--cache", str(tmp_path / "c"),
    )  # fmt: skip
    assert code == 0 and "note:" not in err, err  # one object: a graph by itself
    stored = server.store.get("other", out.strip())
    assert stored is not None and json.loads(stored) == {
        "id": out.strip(), "speckle_type": "Base", "x": "ar-plain",
    }  # fmt: skip


def test_pull_writes_its_file_whole_or_not_at_all(server, tmp_path, capsys, monkeypatch):
    """-o names a file that appears complete or not at all: a pull that fails leaves nothing
    behind (no half file, no temporary one), and a place that cannot take the file is refused
    before anything is downloaded."""
    g = graphgen.generate(300, seed=23)
    graphgen.write_dump(g.objects, tmp_path / "g.dump")
    common = ["--url", server.url, "--token", server.tokens["alice"], "--project", "other"]
    cache = ["--cache", str(tmp_path / "c")]
    assert run(capsys, "push", str(tmp_path / "g.dump"), *common, *cache)[0] == 0
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    target = out_dir / "model.dump"
    code, _, err = run(capsys, "pull", "no-such-root", *common, *cache, "-o", str(target))
    assert code == 2 and "not found" in err, err
    assert list(out_dir.iterdir()) == []
    code, _, err = run(capsys, "pull", g.root_id, *common, *cache, "-o", str(target))
    assert code == 0, err
    assert [p.name for p in out_dir.iterdir()] == ["model.dump"]
    assert dict(graphgen.read_dump(target)) == dict(g.objects)
    fresh = ["--cache", str(tmp_path / "never-made")]
    for bad, says in ((tmp_path / "nowhere" / "m.dump", "no directory"), (out_dir, "directory")):
        code, _, err = run(capsys, "pull", g.root_id, *common, *fresh, "-o", str(bad))
        assert code == 2 and f"cannot write {bad}: " in err and says in err, err
    assert not (tmp_path / "never-made").exists()  # refused before the cache was even opened
    long_name = out_dir / ("m" * 245 + ".dump")  # a legal name, its temporary one no longer
    code, _, err = run(capsys, "pull", g.root_id, *common, *cache, "-o", str(long_name))
    assert code == 0 and dict(graphgen.read_dump(long_name)) == dict(g.objects), err
    long_name.unlink()
    code, _, err = run(capsys, "pull", "", *common, *cache)
    assert code == 2 and err == "objstore: an object id is needed, got an empty one\n", err
    if Path("/proc/self").is_dir():  # a directory that refuses new files, even to root
        code, _, err = run(capsys, "pull", g.root_id, *common, *cache, "-o", "/proc/m.dump")
        assert code == 2 and err.startswith("objstore: cannot write /proc/m.dump: "), err
        assert ".part" not in err

    def breaks_midway(self, project, object_id):
        yield from list(real(self, project, object_id))[:2]
        raise objstore.CorruptObject("ab" * 16, "checksum mismatch")

    real = objstore.Store.iter_with_children
    monkeypatch.setattr(objstore.Store, "iter_with_children", breaks_midway)
    again = out_dir / "again.dump"
    code, _, err = run(capsys, "pull", g.root_id, *common, *cache, "-o", str(again))
    assert code == 2 and "corrupt" in err, err
    assert [p.name for p in out_dir.iterdir()] == ["model.dump"]  # no half of again.dump


def test_push_reads_a_dump_from_a_pipe_once_naming_a_bad_line(server, tmp_path, capsys):
    """A dump is read as it is sent, once: a named pipe (or /dev/stdin) works, and a bad line
    in it is still named by its number."""
    import os
    import threading

    g = graphgen.generate(2_000, seed=24)
    lines = [f"{i}\t{d.decode()}\n" for i, d in g.objects]
    common = ["--url", server.url, "--token", server.tokens["alice"], "--project", "other"]
    cache = ["--cache", str(tmp_path / "c")]

    def push_through_fifo(text: str) -> tuple[int, str, str]:
        fifo = tmp_path / "in.fifo"
        if fifo.exists():
            fifo.unlink()
        os.mkfifo(fifo)
        writer = threading.Thread(target=lambda: fifo.write_text(text), daemon=True)
        writer.start()
        try:
            return run(capsys, "push", str(fifo), *common, *cache)
        finally:
            writer.join(timeout=10)

    broken = [*lines[:5], "\n", 'x\t{"id": "x", \n', *lines[5:]]
    code, out, err = push_through_fifo("".join(broken))
    assert code == 2 and "in.fifo line 7 id 'x': " in err, err
    code, out, err = push_through_fifo("".join(lines))
    assert code == 0 and out.strip() == g.root_id, err
    assert server.store.get("other", g.root_id) == g.objects[-1][1]


def test_cp_names_a_missing_root_or_a_missing_part_of_its_graph(server, tmp_path, capsys):
    import objstore

    closure = {"cpm-a": 1, "cpm-gone": 1}
    with objstore.open(tmp_path / "local") as store:
        store.put(
            "p", [b'{"id": "cpm-a"}', json.dumps({"id": "cpm-root", "__closure": closure}).encode()]
        )
    common = ["--token", server.tokens["alice"], "--project", "other", "--local-project", "p"]
    code, _, err = run(capsys, "cp", str(tmp_path / "local"), server.url, "--root", "nope", *common)
    assert code == 2 and "'nope' not found" in err
    assert "--local-project picks another project" in err
    code, _, err = run(
        capsys, "cp", str(tmp_path / "local"), server.url, "--root", "cpm-root", *common
    )
    assert code == 2 and "'cpm-gone' not found" in err, err
    assert "holds 'cpm-root' without 1 of its closure" in err and "--local-project" not in err
    assert server.store.get("other", "cpm-root") is None


def test_push_dash_reads_stdin(server, tmp_path, capsys, monkeypatch):
    """``push -`` reads the document or dump from stdin (even with a file named "-" about),
    and names a bad line as ``<stdin>``'s."""

    common = ["--url", server.url, "--token", server.tokens["alice"], "--project", "other"]
    cache = ["--cache", str(tmp_path / "c")]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "-").write_text('dash\t{"id": "dash"}\n')

    def push_stdin(data: bytes) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BufferedReader(io.BytesIO(data))))
        return run(capsys, "push", "-", *common, *cache)

    code, out, err = push_stdin(b'{"x": 5, "@y": {"z": "stdin"}}')
    assert code == 0, err
    root = out.strip()
    assert json.loads(server.store.get("other", root) or b"{}")["x"] == 5
    code, out, err = push_stdin(b'si-a\t{"id": "si-a"}\nsi-b\t{"id": "si-b", x}\n')
    assert code == 2 and "<stdin> line 2 id 'si-b': " in err, err
    assert not any(server.store.has("other", ["dash", "si-b"]).values())


def test_every_step_of_push_and_pull_shows_its_progress(server, tmp_path, capsys, bars):
    """Reading and decomposing a document, pushing it, pulling it, rebuilding or writing it:
    each step of seconds on a big model has its bar, told of every object it handles."""
    seen = bars
    doc = {"name": "yard", "@cranes": [{"n": i, "@hook": {"w": i}} for i in range(1200)]}
    (tmp_path / "yard.json").write_text(json.dumps(doc))
    common = ["--url", server.url, "--token", server.tokens["alice"], "--project", "other"]
    code, out, err = run(
        capsys, "push", str(tmp_path / "yard.json"), *common, "--cache", str(tmp_path / "c1")
    )
    assert code == 0, err
    objects = 2 * 1200 + 1
    by_label = {bar["label"]: bar for bar in seen}
    assert by_label["read yard.json"]["counted"] is False
    assert by_label["decompose"]["done"] == objects
    assert by_label["push"]["done"] == by_label["push"]["total"] == objects
    seen.clear()
    root = out.strip()
    cache = ["--cache", str(tmp_path / "c2")]
    code, _, err = run(capsys, "pull", root, *common, *cache, "-o", str(tmp_path / "back.json"))
    assert code == 0 and json.loads((tmp_path / "back.json").read_text()) == doc, err
    assert [(b["label"], b["done"], b["total"]) for b in seen] == [
        ("pull", objects, objects), ("rebuild", objects, objects),
    ]  # fmt: skip
    seen.clear()
    code, _, err = run(capsys, "pull", root, *common, *cache, "-o", str(tmp_path / "back.dump"))
    assert code == 0, err
    assert [(b["label"], b["done"], b["total"]) for b in seen][1] == ("write", objects, objects)
    assert len((tmp_path / "back.dump").read_text().splitlines()) == objects


def test_cp_between_two_servers_goes_through_the_cache_and_resumes(server, tmp_path, capsys):
    """``cp URL URL`` copies a graph from one server to another (a migration): received
    into the local cache, sent from it, each half moving only what its side lacks; the
    destination's project and token may differ from the source's."""
    from ..server.conftest import start_server

    g = graphgen.generate(900, seed=29)
    graphgen.write_dump(g.objects, tmp_path / "g.dump")
    src = ["--token", server.tokens["alice"], "--project", "other"]
    code, _, err = run(capsys, "push", str(tmp_path / "g.dump"), "--url", server.url, *src,
                       "--cache", str(tmp_path / "c0"))  # fmt: skip
    assert code == 0, err
    gen = start_server(tmp_path / "second")
    second = next(gen)
    try:
        second.auth.create_project("landing", owner="zoe")
        zoe = second.auth.create_token("zoe")[1]
        to = ["--to-project", "landing", "--to-token", zoe, "--cache", str(tmp_path / "c1")]
        argv = ["cp", server.url, second.url, "--root", g.root_id, *src, *to]
        code, _, err = run(capsys, *argv)
        assert code == 0, err
        assert f"from {server.url}: {len(g):,} objects: {len(g):,} downloaded" in err
        assert f"to {second.url}: {len(g):,} objects: {len(g):,} uploaded" in err
        for object_id, data in g.objects:
            assert second.store.get("landing", object_id) == data
        code, _, err = run(capsys, *argv)  # again: nothing moves either way
        assert code == 0 and f"0 downloaded, {len(g):,} from the cache" in err, err
        assert f"0 uploaded, {len(g):,} already on the server" in err
        cache = ["--cache", str(tmp_path / "c2")]  # no --to-*: alice's token, "other", there
        code, _, err = run(capsys, "cp", server.url, second.url, "--root", g.root_id, *src, *cache)
        assert code == 2 and f"{second.url}/api/diff/other: HTTP 403" in err, err
        code, _, err = run(capsys, *argv, "--local-project", "x")
        assert code == 2 and "--local-project is for cp with a local store" in err
    finally:
        gen.close()
    code, _, err = run(capsys, "cp", server.url, str(tmp_path / "l"), "--root", "r", *src,
                       "--to-project", "x")  # fmt: skip
    assert code == 2 and "are for cp between two servers" in err
    code, _, err = run(capsys, "cp", str(tmp_path / "a"), str(tmp_path / "b"), "--root", "r", *src)
    assert code == 2 and "an http(s) URL on at least one side" in err


def test_a_pulled_dump_pushes_back_with_its_root_sent_last(server, tmp_path, capsys):
    """``pull`` writes a dump root first, as the download route serves it; ``push`` of that
    file sends the root last and prints it (it took the last line for the root, printed a
    child's id and sent the root first). A dump in send order (root last) keeps its order."""
    g = graphgen.generate(300, seed=37, salt="pulled-dump")
    common = ["--url", server.url, "--token", server.tokens["alice"]]
    graphgen.write_dump(g.objects, tmp_path / "sent.dump")
    code, out, err = run(
        capsys, "push", str(tmp_path / "sent.dump"), *common, "--project", "other",
        "--cache", str(tmp_path / "c1"),
    )  # fmt: skip
    assert code == 0 and out.strip() == g.root_id, err
    code, _, err = run(
        capsys, "pull", g.root_id, *common, "--project", "other", "--cache", str(tmp_path / "c2"),
        "-o", str(tmp_path / "pulled.dump"),
    )  # fmt: skip
    assert code == 0, err
    assert (tmp_path / "pulled.dump").read_bytes().startswith(g.root_id.encode() + b"\t")

    with (tmp_path / "pulled.dump").open("rb") as fh:
        source = Source(tmp_path / "pulled.dump", fh)
        sent = [object_id for object_id, _ in source.objects]
    assert sent[-1] == g.root_id and sorted(sent) == sorted(i for i, _ in g.objects)
    assert source.where(len(sent) - 1).endswith("pulled.dump line 1")
    assert source.where(0).endswith("pulled.dump line 2")
    with (tmp_path / "sent.dump").open("rb") as fh:
        kept = [object_id for object_id, _ in Source(tmp_path / "sent.dump", fh).objects]
    assert kept == [object_id for object_id, _ in g.objects]

    code, out, err = run(
        capsys, "push", str(tmp_path / "pulled.dump"), *common, "--project", "priv",
        "--cache", str(tmp_path / "c3"),
    )  # fmt: skip
    assert code == 0 and out.strip() == g.root_id, err
    with objstore.open(tmp_path / "c4") as cache:
        got = receive(g.root_id, Remote(server.url, server.tokens["alice"], "priv"), cache)
        assert got.total == len(g.objects)
        assert dict(cache.iter_with_children("priv", g.root_id)) == dict(g.objects)


def test_push_skips_a_byte_order_mark(server, tmp_path, capsys):
    """A JSON document or dump saved with a UTF-8 byte order mark (as Windows editors and
    PowerShell save them) pushes as it would without one."""
    doc = {"name": "bom", "@parts": [{"n": 1}, {"n": 2}]}
    plain = tmp_path / "plain.json"
    plain.write_text(json.dumps(doc))
    marked = tmp_path / "marked.json"
    marked.write_bytes(b"\xef\xbb\xbf" + plain.read_bytes())
    common = ["--url", server.url, "--token", server.tokens["alice"], "--project", "other"]
    roots = []
    for path in (plain, marked):
        code, out, err = run(capsys, "push", str(path), *common, "--cache", str(tmp_path / "c"))
        assert code == 0, err
        roots.append(out.strip())
    assert roots[0] == roots[1] and len(roots[0]) == 32
    dump = tmp_path / "marked.dump"
    dump.write_bytes(b"\xef\xbb\xbfone\t" + json.dumps({"id": "one", "v": 1}).encode() + b"\n")
    code, out, err = run(capsys, "push", str(dump), *common, "--cache", str(tmp_path / "c"))
    assert code == 0 and out.strip() == "one", err


def test_push_of_an_edited_dump_under_the_same_ids_says_the_first_bytes_were_kept(
    server, tmp_path, capsys
):
    common = ["--url", server.url, "--token", server.tokens["alice"], "--project", "other"]
    common += ["--cache", str(tmp_path / "c")]
    dump = tmp_path / "beam.dump"
    for span in (6, 7):  # the same ids, the beam's span edited
        beam = json.dumps({"id": "beam-9", "span": span})
        root = json.dumps({"id": "frame-9", "__closure": {"beam-9": 1}})
        dump.write_text(f"beam-9\t{beam}\nframe-9\t{root}\n")
        code, out, err = run(capsys, "push", str(dump), *common)
        assert code == 0 and out.strip() == "frame-9", err
    assert "2 objects: 0 uploaded, 2 already on the server; 1 came under an id the cache" in err
    code, out, err = run(capsys, "pull", "frame-9", *common)
    assert json.loads(out.splitlines()[1].split("\t")[1]) == {"id": "beam-9", "span": 6}


def test_the_default_cache_is_in_the_user_data_dir():

    path = transfer._cache_dir(argparse.Namespace(cache=None))
    assert path == Path(os.environ["XDG_DATA_HOME"]) / "objstore" / "cache"  # (the test run's)
