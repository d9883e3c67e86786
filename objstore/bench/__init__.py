"""The benchmark harness behind ``objstore bench``: targets, drivers, runner, report."""

from objstore.bench.report import chart, compare, markdown, print_table, ratio_markdown, ratios
from objstore.bench.runner import PRESETS, WORKLOADS, GraphSource, Runner, workloads_named
from objstore.bench.targets import TargetError, TargetSpec, parse_target

__all__ = [
    "PRESETS",
    "WORKLOADS",
    "GraphSource",
    "Runner",
    "TargetError",
    "TargetSpec",
    "chart",
    "compare",
    "markdown",
    "parse_target",
    "print_table",
    "ratio_markdown",
    "ratios",
    "workloads_named",
]
