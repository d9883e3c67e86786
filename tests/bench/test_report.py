"""The side-by-side ratios: which rows pair, which way each ratio runs, how they print."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from objstore.bench.report import print_table, ratio_markdown, ratios


def row(target, client, workload, concurrency=4, **figures):
    place = {"target": target, "client": client, "workload": workload}
    return {**place, "concurrency": concurrency, **figures}


SUMMARY = [
    row("engine", "engine", "cold send", objects_per_s=100.0),
    row("engine", "engine", "single GET", p50_ms=1.0, p99_ms=1.0),
    row("srv", "objstore", "cold send", objects_per_s=50.0),
    row("srv", "specklepy", "cold send", objects_per_s=10.0),
    row("srv", "objstore", "single GET", p50_ms=2.0, p99_ms=3.0),
    row("srv", "specklepy", "single GET", p50_ms=8.0, p99_ms=9.0),
    row("srv", "objstore", "download", objects_per_s=0.0),  # nothing measured: no ratio
    row("srv", "specklepy", "download", objects_per_s=30.0),
    row("srv", "objstore", "cold send", concurrency=16, objects_per_s=70.0),  # no peer at c16
]


def found(kind, target, client, workload, concurrency=4):
    hits = [
        r
        for r in ratios(SUMMARY)
        if (r["kind"], r["target"], r["client"], r["workload"], r["concurrency"])
        == (kind, target, client, workload, concurrency)
    ]
    assert len(hits) <= 1
    return hits[0] if hits else None


def test_clients_ratio_is_how_many_times_faster_objstore_is():
    send = found("clients", "srv", "objstore", "cold send")
    assert send["against"] == "specklepy" and send["ratio"] == pytest.approx(5.0)
    get = found("clients", "srv", "objstore", "single GET")  # latency: theirs over ours
    assert get["ratio"] == pytest.approx(4.0)


def test_ceiling_ratio_is_the_share_of_the_engines_speed():
    assert found("ceiling", "srv", "objstore", "cold send")["ratio"] == pytest.approx(0.5)
    assert found("ceiling", "srv", "specklepy", "cold send")["ratio"] == pytest.approx(0.1)
    assert found("ceiling", "srv", "objstore", "single GET")["ratio"] == pytest.approx(0.5)
    assert found("ceiling", "srv", "specklepy", "single GET")["ratio"] == pytest.approx(0.125)
    assert found("ceiling", "srv", "objstore", "cold send")["against"] == "engine"


def test_rows_without_a_figure_or_a_peer_give_no_ratio():
    assert found("clients", "srv", "objstore", "download") is None  # objstore's 0 obj/s
    assert found("ceiling", "srv", "specklepy", "download") is None  # no engine download
    assert found("ceiling", "srv", "objstore", "cold send", concurrency=16) is None
    assert not [r for r in ratios(SUMMARY) if r["client"] == "engine"]
    assert [r for r in ratios(SUMMARY[2:]) if r["kind"] == "ceiling"] == []  # no engine target


def test_the_table_prints_ratios_per_target_clients_first():
    doc = {"graph": {"objects": 1, "bytes": 1}, "summary": SUMMARY}
    text = ratio_markdown(doc).splitlines()
    assert text[0] == "| target / client | cold send | single GET |"
    assert text[2] == "| srv / objstore vs specklepy | 5.0x | 4.0x |"
    assert text[3] == "| srv / objstore of engine | 50% | 50% |"
    assert text[4] == "| srv / specklepy of engine | 10% | 12% |"
    out = io.StringIO()
    print_table(doc, Console(file=out, width=200))
    assert "side by side" in out.getvalue() and "5.0x" in out.getvalue()
    out = io.StringIO()
    print_table({"summary": SUMMARY[:2]}, Console(file=out, width=200))  # the engine alone
    assert "side by side" not in out.getvalue()


def test_rows_group_by_target_then_concurrency_clients_first():
    summary = [
        row(t, c, "cold send", concurrency=n, objects_per_s=v)
        for n in (4, 1)
        for t, c, v in (("e", "engine", 100.0), ("srv", "objstore", 50.0), ("srv", "sk", 10.0))
    ]
    labels = [
        line.split(" | ")[0][2:] for line in ratio_markdown({"summary": summary}).splitlines()[2:]
    ]
    assert labels == [
        "srv / objstore / c1 vs sk",
        "srv / objstore / c1 of e",
        "srv / sk / c1 of e",
        "srv / objstore vs sk",
        "srv / objstore of e",
        "srv / sk of e",
    ]
