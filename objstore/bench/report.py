"""Results as a terminal table, a PNG chart, and a comparison between two runs."""

from __future__ import annotations

import json
from collections.abc import Sequence
from numbers import Real
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from objstore import errors

HIGHER_IS_BETTER = ("objects_per_s", "mb_per_s", "writes_per_s")
LOWER_IS_BETTER = ("p50_ms", "p95_ms", "p99_ms")
_KEY_FIELDS = ("target", "client", "workload", "concurrency")


def load(path: Path) -> dict[str, Any]:
    """A result file written by ``objstore bench --out``; InvalidResults for anything else."""
    try:
        doc = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise errors.InvalidResults(f"{path} is not JSON ({exc})") from None
    summary = doc.get("summary") if isinstance(doc, dict) else None
    if (
        not isinstance(doc, dict)
        or not isinstance(summary, list)
        or not all(isinstance(row, dict) and all(k in row for k in _KEY_FIELDS) for row in summary)
    ):
        raise errors.InvalidResults(
            f'{path} is not an objstore bench result (no "summary" of target, client, '
            "workload and concurrency rows; `objstore bench --out FILE` writes one)"
        )
    return doc


def _label(row: dict[str, Any]) -> str:
    return f"{row['target']} / {row['client']}" + (
        f" / c{row['concurrency']}" if row.get("concurrency") not in (None, 4) else ""
    )


def _cell(workload: str, row: dict[str, Any] | None, sep: str) -> str:
    if row is None:
        return "n/a"
    if workload == "single GET":
        return f"p50 {row['p50_ms']:.1f} ms{sep}p99 {row['p99_ms']:.1f} ms"
    if workload == "mixed":
        return f"{row['objects_per_s']:,.0f} reads/s{sep}{row.get('writes_per_s', 0):,.0f} writes/s"
    return f"{row['objects_per_s']:,.0f} obj/s"


_Rows = tuple[list[str], list[tuple[str, list[str]]]]  # (workloads, (label, cells) per row)


def _figure_rows(doc: dict[str, Any], sep: str) -> _Rows:
    """The figures of each target/client per workload (a cell's two lines joined by ``sep``)."""
    summary = doc["summary"]
    workloads = list(dict.fromkeys(r["workload"] for r in summary))
    labels = list(dict.fromkeys(_label(r) for r in summary))
    found = {(_label(r), r["workload"]): r for r in summary}
    return workloads, [
        (lb, [_cell(w, found.get((lb, w)), sep) for w in workloads]) for lb in labels
    ]


def _rich(title: str, grid: _Rows, caption: str = "") -> Table:
    workloads, rows = grid
    t = Table(title=title, caption=caption or None)
    t.add_column("target / client")
    for w in workloads:
        t.add_column(w, justify="right")
    for label, cells in rows:
        t.add_row(label, *cells)
    return t


def table(doc: dict[str, Any]) -> Table:
    """One row per target/client, one column per workload (objects/s; latency for single GET)."""
    shape = doc.get("graph") or {}
    title = (
        f"objstore bench: {shape.get('objects', 0):,} objects, "
        f"{shape.get('bytes', 0) / 1e6:,.1f} MB"
    )
    return _rich(title, _figure_rows(doc, "\n"))


def _console() -> Console:
    console = Console()
    return console if console.is_terminal else Console(width=200)


def print_table(doc: dict[str, Any], console: Console | None = None) -> None:
    console = console or _console()
    console.print(table(doc))
    pairs = side_by_side(doc)
    if pairs.row_count:
        console.print(pairs)


def _speed(row: dict[str, Any]) -> tuple[float, bool] | None:
    """The figure a row's workload is judged by, and whether higher is better."""
    latency = row["workload"] == "single GET"
    value = row.get("p50_ms" if latency else "objects_per_s")
    if not isinstance(value, Real) or float(value) <= 0:
        return None
    return float(value), not latency


def _times_faster(mine: dict[str, Any], theirs: dict[str, Any]) -> float | None:
    a, b = _speed(mine), _speed(theirs)
    if a is None or b is None:
        return None
    return a[0] / b[0] if a[1] else b[0] / a[0]


def ratios(summary: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The run's figures as the ratios targets are stated in, each from rows of one workload
    and concurrency: on every server target, objstore's client against each other client
    (``kind`` "clients": how many times faster), and every server row against the first
    in-process engine target of the run (``kind`` "ceiling": the share of its speed).
    Throughput is compared as objects/s, single GET as p50 latency."""
    rows = [r for r in summary if _speed(r) is not None]
    engines = [r for r in rows if r["client"] == "engine"]
    ceiling = {
        (r["workload"], r["concurrency"]): r for r in engines if r["target"] == engines[0]["target"]
    }
    ours = {
        (r["target"], r["workload"], r["concurrency"]): r for r in rows if r["client"] == "objstore"
    }
    out: list[dict[str, Any]] = []

    def add(kind: str, row: dict[str, Any], client: str, against: str, ratio: float | None) -> None:
        if ratio is not None:
            where = {k: row[k] for k in ("target", "workload", "concurrency")}
            out.append(
                {"kind": kind, **where, "client": client, "against": against, "ratio": ratio}
            )

    for r in rows:
        place = (r["target"], r["workload"], r["concurrency"])
        if r["client"] not in ("engine", "objstore") and place in ours:
            add("clients", r, "objstore", r["client"], _times_faster(ours[place], r))
        top = ceiling.get(place[1:])
        if r["client"] != "engine" and top is not None:
            add("ceiling", r, r["client"], top["target"], _times_faster(r, top))
    return out


def _ratio_rows(doc: dict[str, Any]) -> _Rows:
    """:func:`ratios` as rows: per target and concurrency, clients first."""
    workloads = list(dict.fromkeys(r["workload"] for r in doc["summary"]))
    cells: dict[tuple[str, str], str] = {}
    made: list[tuple[str, dict[str, Any]]] = []
    for r in ratios(doc["summary"]):
        if r["kind"] == "clients":
            label = f"{_label(r)} vs {r['against']}"
            cells[label, r["workload"]] = f"{r['ratio']:.1f}x"
        else:
            label = f"{_label(r)} of {r['against']}"
            cells[label, r["workload"]] = f"{r['ratio']:.0%}"
        made.append((label, r))
    targets = list(dict.fromkeys(r["target"] for r in doc["summary"]))
    first = {
        label: (targets.index(r["target"]), r["concurrency"], r["kind"] != "clients")
        for label, r in made
    }
    labels = sorted(first, key=first.__getitem__)
    workloads = [w for w in workloads if any((lb, w) in cells for lb in labels)]
    return workloads, [(lb, [cells.get((lb, w), "n/a") for w in workloads]) for lb in labels]


def side_by_side(doc: dict[str, Any]) -> Table:
    """The ratios table: times faster than the other client, share of the engine's speed."""
    return _rich(
        "side by side",
        _ratio_rows(doc),
        caption="x: times as fast as the other client on that target; "
        "%: share of the in-process engine's speed",
    )


def _markdown(grid: _Rows) -> str:
    workloads, rows = grid
    lines = [
        "| target / client | " + " | ".join(workloads) + " |",
        "|---" * (len(workloads) + 1) + "|",
    ]
    lines += [f"| {label} | " + " | ".join(cells) + " |" for label, cells in rows]
    return "\n".join(lines)


def markdown(doc: dict[str, Any]) -> str:
    """The same table in Markdown (for README files)."""
    return _markdown(_figure_rows(doc, ", "))


def ratio_markdown(doc: dict[str, Any]) -> str:
    """:func:`side_by_side` in Markdown."""
    return _markdown(_ratio_rows(doc))


def chart(doc: dict[str, Any], path: Path) -> None:
    """A PNG with one panel per workload comparing targets/clients (needs matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import FuncFormatter
    except ImportError as exc:
        raise RuntimeError("--chart needs matplotlib: pip install 'objstore[bench]'") from exc
    summary = doc["summary"]
    workloads = list(dict.fromkeys(r["workload"] for r in summary))
    height = 2.2 * len(workloads) + 0.8
    fig, axes = plt.subplots(len(workloads), 1, figsize=(9, height), squeeze=False)
    for ax, workload in zip(axes[:, 0], workloads, strict=True):
        rows = [r for r in summary if r["workload"] == workload]
        if workload == "single GET":
            values = [r["p50_ms"] for r in rows]
            unit = "p50 latency, ms (lower is better)"
        elif workload == "mixed":
            values = [r["objects_per_s"] for r in rows]
            unit = "objects read/s while one writer sends (higher is better)"
        else:
            values = [r["objects_per_s"] for r in rows]
            unit = "objects/s (higher is better)"
        labels = [_label(r) for r in rows]
        bars = ax.barh(labels, values, color="#3b7dd8")
        ax.bar_label(
            bars,
            labels=[f"{v:,.0f}" if v >= 10 else f"{v:.2f}" for v in values],
            padding=3,
            fontsize=8,
        )
        ax.set_title(f"{workload}: {unit}", fontsize=10, loc="left")
        ax.invert_yaxis()
        ax.tick_params(labelsize=8)
        ax.margins(x=0.2)
        if workload != "single GET":  # whole numbers with separators, not a "1e6" offset
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:,.0f}"))
    shape = doc.get("graph") or {}
    fig.suptitle(
        f"objstore bench: {shape.get('objects', 0):,} objects, "
        f"{shape.get('bytes', 0) / 1e6:,.1f} MB",
        fontsize=11,
    )
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.4 / height))  # keep the first title off the suptitle
    fig.savefig(path, dpi=110)
    plt.close(fig)


def compare(
    old: dict[str, Any], new: dict[str, Any], threshold: float = 0.2
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(every comparison, the regressions): throughput below old x (1 - threshold), or latency
    above old x (1 + threshold), for the same target/client/workload/concurrency."""

    def key(r: dict[str, Any]) -> tuple[Any, ...]:
        return tuple(str(r[k]) for k in _KEY_FIELDS)

    before = {key(r): r for r in old["summary"]}
    rows: list[dict[str, Any]] = []
    regressions: list[dict[str, Any]] = []
    for r in new["summary"]:
        o = before.get(key(r))
        if o is None:
            continue
        for metric in HIGHER_IS_BETTER + LOWER_IS_BETTER:
            was, now = o.get(metric), r.get(metric)
            if not isinstance(was, Real) or not isinstance(now, Real) or not was:
                continue
            ratio = float(now) / float(was)
            worse = (
                (ratio < 1 - threshold) if metric in HIGHER_IS_BETTER else (ratio > 1 + threshold)
            )
            row = {
                "target": r["target"],
                "client": r["client"],
                "workload": r["workload"],
                "concurrency": r["concurrency"],
                "metric": metric,
                "old": was,
                "new": now,
                "ratio": ratio,
                "regression": worse,
            }
            rows.append(row)
            if worse:
                regressions.append(row)
    return rows, regressions


def print_compare(rows: Sequence[dict[str, Any]], console: Console | None = None) -> None:
    t = Table(title="objstore bench compare (new / old)")
    for col in ("target / client", "workload", "metric", "old", "new", "ratio", ""):
        t.add_column(col)
    for r in rows:
        t.add_row(
            f"{r['target']} / {r['client']}",
            r["workload"],
            r["metric"],
            f"{r['old']:,.2f}",
            f"{r['new']:,.2f}",
            f"{r['ratio']:.2f}x",
            "[red]REGRESSION[/red]" if r["regression"] else "",
        )
    (console or _console()).print(t)
