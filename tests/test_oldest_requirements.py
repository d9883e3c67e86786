"""scripts/oldest-requirements.txt pins the floors pyproject.toml states (test.sh runs the
whole suite on them), so a floor raised or added there is tested at once."""

from __future__ import annotations

import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent


def _floors() -> dict[str, Version]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    groups = [project["dependencies"], *project["optional-dependencies"].values()]
    floors: dict[str, Version] = {}
    for text in (t for group in groups for t in group):
        req = Requirement(text)
        if req.name == "objstore":
            continue
        [floor] = [Version(s.version) for s in req.specifier if s.operator == ">="]
        floors[req.name] = floor
    return floors


def _pins() -> dict[str, Version]:
    pins: dict[str, Version] = {}
    for line in (ROOT / "scripts" / "oldest-requirements.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            req = Requirement(line)
            [pin] = [Version(s.version) for s in req.specifier if s.operator == "=="]
            pins[req.name] = pin
    return pins


DEV_TOOLS = {"pytest", "pytest-xdist", "hypothesis", "pytest-benchmark", "psutil", "ruff", "mypy"}


def test_every_runtime_floor_is_pinned_at_its_oldest_release():
    floors = {name: v for name, v in _floors().items() if name not in DEV_TOOLS}
    pins = _pins()
    assert set(floors) <= set(pins), f"no oldest pin for {sorted(set(floors) - set(pins))}"
    for name, floor in floors.items():
        pin = pins[name]
        # the pin is the floor, or the first release under it (3.4 -> 3.4.1)
        assert pin >= floor and pin.release[: len(floor.release)] == floor.release, name
