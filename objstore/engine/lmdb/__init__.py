"""The LMDB backend: the embedded default.

Its rows are laid out as :mod:`objstore.engine.layout` describes; the modules here hold the
transactions that write and read them, one part each: the environment and its transactions
(:mod:`.transactions`), what a write puts (:mod:`.writes`), how writes share commits
(:mod:`.groupcommit`), reads (:mod:`.reads`) and upkeep (:mod:`.maintenance`).

A batch is written whole in one write transaction (fsync'd on commit), so a returned
``write`` survives ``kill -9`` and readers never see half a batch; batches that threads queue
while another commit syncs share the next transaction (group commit). Compression runs before
the write transaction where it can, so the lock is held only for the puts.
"""

from __future__ import annotations

import os
import sys
from typing import TypedDict

from objstore.engine.base import Backend
from objstore.engine.lmdb.checks import Checks
from objstore.engine.lmdb.groupcommit import GroupCommit
from objstore.engine.lmdb.maintenance import Maintenance
from objstore.engine.lmdb.reads import Reads

__all__ = ["WRITEMAP_DEFAULT", "LMDBBackend", "LMDBOptions"]

# A writable map sizes the data file to the whole map. Linux filesystems leave the unused part
# a hole; elsewhere (NTFS, HFS+) it could take the map's full size on disk from the start.
WRITEMAP_DEFAULT = sys.platform.startswith("linux")


class LMDBOptions(TypedDict):
    """The options an environment is opened with that every open of it in a process must
    share (``map_size`` is not one: it is only where the map starts)."""

    compression_level: int
    dictionary_threshold: int
    readonly: bool
    readahead: bool
    writemap: bool


class LMDBBackend(GroupCommit, Reads, Maintenance, Checks, Backend):
    """Objects in one LMDB environment under ``path`` (a directory).

    On Linux writers use a writable memory map (``writemap``): a commit syncs pages the
    transaction wrote in place instead of one ``pwrite`` per dirty page, which at a million
    objects is thousands of calls per batch. Every process writing one store must use the
    same setting.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        map_size: int | None = None,
        compression_level: int = 1,
        dictionary_threshold: int = 4096,
        readonly: bool = False,
        readahead: bool = True,
        writemap: bool | None = None,
    ) -> None:
        if writemap is None:
            writemap = WRITEMAP_DEFAULT
        self._start_writes(dictionary_threshold)
        self._start_queue()
        self._open(
            path,
            map_size=map_size,
            compression_level=compression_level,
            readonly=readonly,
            readahead=readahead,
            writemap=writemap,
        )
