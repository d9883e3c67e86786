"""Random sequences of writes, deletes, compactions, recounts and reopens, checked after every
step against a model of what each project should hold: no object lost, changed or leaked, on
every backend. LMDB packs are cut to a few hundred bytes so deletes leave packs part dead and
compaction has frames to move."""

from __future__ import annotations

import functools
import hashlib
import json
import shutil
import tempfile
from pathlib import Path

import hypothesis
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

import objstore
from objstore.codec import digest_of
from objstore.engine.layout import pack_frames, pack_stops
from objstore.engine.lmdb import maintenance, writes

from ..conftest import BACKENDS, make_store

PROJECTS = ["a", "b", "c"]
PACK_LIMIT = 300  # bytes of frames per pack in these tests: two or three objects each


def _noise(seed: str, blocks: int) -> str:
    """Hex that zstd cannot shrink much: 64 characters a block."""
    return "".join(hashlib.sha256(f"{seed}/{k}".encode()).hexdigest() for k in range(blocks))


def _pool() -> list[bytes]:
    """Objects the steps put: leaves (some ids in two versions, which conflict), and parents
    whose closures name leaves; big enough bodies that a pack holds only a few."""
    leaves = [{"id": f"l{n}", "v": n, "pad": _noise(f"l{n}", 1 + n % 3)} for n in range(10)]
    other = [{"id": f"l{n}", "v": -n, "pad": _noise(f"other{n}", 2)} for n in range(3)]
    parents = [
        {
            "id": f"p{n}",
            "@kids": [{"referencedId": f"l{k}", "speckle_type": "reference"} for k in kids],
            "__closure": {f"l{k}": 1 + (k % 2) for k in kids},
        }
        for n, kids in enumerate([(0, 1, 2), (2, 3, 4, 5), (9, 0, 7), (1,), (6, 8), (4, 3), (5,)])
    ]
    return [json.dumps(o, separators=(",", ":")).encode() for o in leaves + other + parents]


POOL = _pool()
IDS = sorted({json.loads(data)["id"] for data in POOL})


class StoreMachine(RuleBasedStateMachine):
    kind = "memory"

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="objstore-stateful-"))
        self.store = make_store(self.kind, self.dir)
        self.model: dict[str, dict[str, bytes]] = {}
        self.moved = self.rewritten = 0  # by compactions: what the search steers towards
        self.deleted = False  # since the last compaction

    def teardown(self) -> None:
        hypothesis.target(self.moved, label="frames moved")
        hypothesis.target(self.rewritten, label="packs rewritten")
        self.store.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    @rule(
        project=st.sampled_from(PROJECTS),
        picks=st.lists(st.integers(0, len(POOL) - 1), min_size=1, max_size=8),
    )
    def put(self, project: str, picks: list[int]) -> None:
        batch = [POOL[i] for i in picks]
        held = self.model.setdefault(project, {})
        stored = duplicates = conflicts = 0
        for data in batch:  # the first write of an id wins, within a batch too
            object_id = json.loads(data)["id"]
            if object_id not in held:
                held[object_id] = data
                stored += 1
            elif held[object_id] == data:
                duplicates += 1
            else:
                conflicts += 1
        result = self.store.put(project, batch)
        assert (result.received, result.stored, result.duplicates, result.conflicts) == (
            len(batch),
            stored,
            duplicates,
            conflicts,
        )

    @rule(
        source=st.sampled_from(PROJECTS),
        into=st.sampled_from(PROJECTS),
        every=st.sampled_from([1, 2, 3]),
    )
    def share(self, source: str, into: str, every: int) -> None:
        """Put every first, second or third object of one project into another: their bytes
        are stored once for both, so deleting the source leaves its packs part dead."""
        held = list(self.model.get(source, {}).values())[::every]
        if held:
            self.put(into, [POOL.index(data) for data in held])

    @rule(project=st.sampled_from(PROJECTS))
    def delete_project(self, project: str) -> None:
        assert self.store.delete_project(project) == len(self.model.pop(project, {}))
        self.deleted = True

    @precondition(lambda self: self.deleted)  # only then can a pack be part dead
    @rule(min_dead=st.sampled_from([0.01, 0.25, 1.0]))
    def compact(self, min_dead: float) -> None:
        self.deleted = False
        before = self.store.stats()
        planned = self.store.compact(min_dead, dry_run=True)
        assert self.store.stats() == before
        report = self.store.compact(min_dead)
        assert report == planned
        self.moved += report.frames_moved
        self.rewritten += report.packs_rewritten
        assert report.packs_written <= report.packs_rewritten
        assert self.store.stats().stored_bytes <= before.stored_bytes

    @rule()
    def recount(self) -> None:
        assert self.store.recount() == 0  # nothing this machine does may miscount

    @rule()
    def reopen(self) -> None:
        if self.kind == "lmdb":
            self.store.close()
            self.store = make_store(self.kind, self.dir)

    @invariant()
    def every_project_holds_what_was_put(self) -> None:
        for project in PROJECTS:
            held = self.model.get(project, {})
            assert dict(self.store.get_many(project, IDS)) == held
            assert self.store.has(project, IDS) == {i: i in held for i in IDS}
            assert self.store.count(project) == len(held)
            for object_id, data in held.items():
                closure = json.loads(data).get("__closure")
                if closure is None:
                    continue
                assert self.store.closure(project, object_id) == closure
                streamed = list(self.store.iter_with_children(project, object_id))
                present = [(i, held[i]) for i in closure if i in held]
                assert streamed == [(object_id, data), *present]
        assert self.store.projects() == sorted(p for p, held in self.model.items() if held)

    @invariant()
    def nothing_is_leaked_or_damaged(self) -> None:
        stats = self.store.stats()
        distinct = {data for held in self.model.values() for data in held.values()}
        assert stats.objects == sum(map(len, self.model.values()))
        assert stats.blobs == len(distinct)
        assert stats.raw_bytes == sum(map(len, distinct))
        with_closures = {digest_of(d) for d in distinct if b'"__closure"' in d}
        assert stats.closures == len(with_closures)
        report = self.store.verify()
        assert report.ok, report.problems
        assert report.miscounted == 0


def _small_packs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Packs of PACK_LIMIT bytes, for writes and for compaction and its dry run alike."""
    small_frames = functools.partial(pack_frames, limit=PACK_LIMIT)
    monkeypatch.setattr(writes, "pack_frames", small_frames)
    monkeypatch.setattr(maintenance, "pack_frames", small_frames)
    monkeypatch.setattr(maintenance, "pack_stops", functools.partial(pack_stops, limit=PACK_LIMIT))


# the LMDB run (11-16 s; 28-41 s on a slow day) is engine logic on the same libraries under
# 3.12 and 3.13: slow
@pytest.mark.parametrize(
    "kind", [pytest.param(k, marks=pytest.mark.slow) if k == "lmdb" else k for k in BACKENDS]
)
def test_random_sequences_keep_every_project_whole(kind: str, monkeypatch) -> None:
    _small_packs(monkeypatch)
    machine = type(f"StoreMachine_{kind}", (StoreMachine,), {"kind": kind})
    run_state_machine_as_test(
        machine,
        settings=settings(
            max_examples=200,
            stateful_step_count=40,
            deadline=None,
            suppress_health_check=[HealthCheck.function_scoped_fixture],
        ),
    )


def test_the_pool_spans_several_packs(tmp_path: Path, monkeypatch) -> None:
    """The point of PACK_LIMIT: one batch of the pool lands in many packs."""
    _small_packs(monkeypatch)
    with objstore.open(tmp_path / "s") as store:
        store.put("a", POOL[:10])
        backend = store.backend
        with backend._read() as txn:  # type: ignore[attr-defined]
            packs = txn.stat(backend._packs)["entries"]  # type: ignore[attr-defined]
    assert packs >= 4, packs
