"""How objstore's long operations treat CPython's cyclic garbage collector.

An application holding a large model (a connector, a script) has millions of containers
alive; each full collection walks all of them, and a transfer's own short-lived objects set
off several. These context managers keep that cost off objstore's work without changing what
is eventually collected.
"""

from __future__ import annotations

import contextlib
import gc
import sys
from collections.abc import Iterator

# CPython 3.12's full collections move the immortal objects they meet (the static types'
# base tuples, 375 in 3.12.1) into the frozen generation, so that many frozen, as counted at
# import, is nobody's freeze (an application's frozen before objstore is imported is taken
# for the interpreter's there)
_interpreters_own = gc.get_freeze_count() if sys.version_info[:2] == (3, 12) else 0


def frozen_by_others() -> bool:
    """Whether objects are frozen out of collections by someone else: an application (a
    pre-fork server), or an enclosing :func:`sparing_heap` block."""
    return gc.get_freeze_count() > _interpreters_own


@contextlib.contextmanager
def paused() -> Iterator[None]:
    """Cyclic GC off, for work that makes no cycles but very many containers (rebuilding a
    document). As Mercurial's ``util.nogc``."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@contextlib.contextmanager
def building() -> Iterator[None]:
    """:func:`paused`, for building a big structure without cycles that the caller keeps (a
    document rebuilt), whose containers then go straight to the oldest generation instead of
    the youngest (``gc.freeze`` and ``gc.unfreeze``): left young, the first collections
    after it walk all of them, the youngest generation's and then the middle one's, before
    they settle where full collections alone look. Other objects young at the end go with
    them, so garbage cycles among those wait for the next full collection. Objects frozen
    by someone else (see :func:`frozen_by_others`) stay frozen: then it is ``paused`` alone."""
    with paused():
        try:
            yield
        finally:
            if not frozen_by_others():
                gc.freeze()
                gc.unfreeze()


@contextlib.contextmanager
def sparing_heap() -> Iterator[None]:
    """Objects alive at the start are left out of collections until the end (``gc.freeze``),
    so collections still run, for what is made meanwhile, without rescanning the caller's
    heap. Garbage among those objects waits until after. An application that froze objects
    itself (a pre-fork server) keeps them frozen: then, and inside another such block,
    nothing is changed."""
    if frozen_by_others():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
