"""The collector modes of objstore's long operations."""

from __future__ import annotations

import gc
import weakref

import pytest

from objstore import collector


@pytest.fixture
def unfrozen():
    assert not collector.frozen_by_others(), "some earlier code left objects frozen"
    yield
    gc.unfreeze()  # whatever a failing test left


class _Node:
    def __init__(self) -> None:
        self.me = self  # a cycle: only the cyclic collector frees it


def _generation_of(obj: object) -> int | None:
    return next((g for g in range(3) if any(o is obj for o in gc.get_objects(g))), None)


def _frozen(obj: object) -> bool:
    """Whether ``obj`` (a container the collector tracks) is in the frozen generation: asked
    of the object, since the frozen count also drops whenever any frozen object is freed,
    which another thread may do at any time."""
    return gc.is_tracked(obj) and _generation_of(obj) is None


def test_sparing_heap_freezes_what_is_alive_and_thaws_it_after(unfrozen):
    held = [[n] for n in range(1000)]  # a caller's containers
    old = _Node()
    old_ref = weakref.ref(old)
    with collector.sparing_heap():
        assert _frozen(held) and _frozen(held[0])
        new = _Node()
        new_ref = weakref.ref(new)
        del old, new
        gc.collect()
        assert new_ref() is None  # what is made meanwhile is collected as ever
        assert old_ref() is not None  # the caller's garbage waits ...
    assert not collector.frozen_by_others()  # thawed
    gc.collect()
    assert old_ref() is None  # ... until after


def test_sparing_heap_thaws_on_an_error_too(unfrozen):
    with pytest.raises(KeyError), collector.sparing_heap():
        assert gc.get_freeze_count() > 0
        raise KeyError("x")
    assert not collector.frozen_by_others()  # thawed


def test_sparing_heap_leaves_an_applications_own_freeze_alone(unfrozen):
    kept = [[n] for n in range(10)]
    gc.freeze()  # as a pre-fork server does
    fresh = [[n] for n in range(1000)]
    with collector.sparing_heap():
        assert _frozen(kept) and not _frozen(fresh)  # nothing more frozen ...
    assert _frozen(kept) and not _frozen(fresh)  # ... and nothing thawed


def test_an_inner_sparing_heap_leaves_the_thaw_to_the_outer(unfrozen):
    held = [[n] for n in range(10)]
    with collector.sparing_heap():
        with collector.sparing_heap():
            pass
        assert _frozen(held)  # the inner block thawed nothing
    assert not collector.frozen_by_others()  # thawed
    assert not _frozen(held)


@pytest.mark.parametrize("enabled", [True, False])
def test_paused_turns_the_collector_off_and_back_to_what_it_was(enabled):
    was = gc.isenabled()
    (gc.enable if enabled else gc.disable)()
    try:
        with pytest.raises(KeyError), collector.paused():
            assert not gc.isenabled()
            raise KeyError("x")
        assert gc.isenabled() is enabled
    finally:
        (gc.enable if was else gc.disable)()


def test_the_interpreters_own_frozen_objects_are_nobodys_freeze(unfrozen, monkeypatch):
    """CPython 3.12's full collections freeze its immortal objects: that many frozen does
    not stop a transfer from freezing what is alive (and thawing it after)."""
    gc.freeze()  # stands in for the interpreter's own
    monkeypatch.setattr(collector, "_interpreters_own", gc.get_freeze_count())
    before = gc.get_freeze_count()
    assert before > 0 and not collector.frozen_by_others()
    held = [[n] for n in range(1000)]
    with collector.sparing_heap():
        assert _frozen(held)  # frozen, though that many were frozen already
        assert collector.frozen_by_others()  # an inner block leaves it to this one
    assert gc.get_freeze_count() < before  # thawed


def test_building_hands_what_it_built_to_the_oldest_generation(unfrozen):
    was = gc.isenabled()
    gc.enable()
    try:
        with collector.paused():
            left = [[n] for n in range(100)]
        assert _generation_of(left) in (0, 1)  # paused alone: young, for the next collections
        with collector.building():
            assert not gc.isenabled()
            built = [[n] for n in range(100)]
        assert gc.isenabled()
        assert _generation_of(built) == 2
        assert _generation_of(built[0]) == 2
        assert not collector.frozen_by_others()  # nothing left frozen
        with pytest.raises(KeyError), collector.building():
            raised = [[0]]
            raise KeyError("x")
        assert _generation_of(raised) == 2 and gc.isenabled()
    finally:
        (gc.enable if was else gc.disable)()


def test_building_leaves_an_applications_own_freeze_alone(unfrozen):
    kept = [[n] for n in range(10)]
    gc.freeze()  # as a pre-fork server does
    with collector.building():
        built = [[n] for n in range(100)]
    assert _frozen(kept)  # nothing thawed
    assert _generation_of(built) in (0, 1)  # nothing more frozen
