"""Response content codings: which one a request accepts, and the compressors that make them.

zstd is offered first because it costs both ends less CPU for a smaller body than gzip: on a
200 MB object stream here, zstd level 1 compressed at 567 MB/s to 29% and decompressed at
1.9 GB/s, ISA-L gzip level 1 at 434 MB/s to 35% and 755 MB/s. Clients that do not list zstd
(Speckle's own, older objstore clients) keep getting gzip.
"""

from __future__ import annotations

import threading
from typing import Literal, Protocol

import zstandard
from isal import igzip, isal_zlib

Coding = Literal["zstd", "gzip"]
_PREFERENCE: tuple[Coding, ...] = ("zstd", "gzip")


def pick(accept_encoding: str) -> Coding | None:
    """The coding to answer with: the client's highest-q coding we offer (zstd on a tie), or
    None for identity. ``*`` stands for any coding not named; ``q=0`` refuses one."""
    weights: dict[str, float] = {}
    for item in accept_encoding.lower().split(","):
        name, _, params = item.strip().partition(";")
        q = 1.0
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if name:
            weights[name.strip()] = q
    best: Coding | None = None
    best_q = 0.0
    for coding in _PREFERENCE:
        q = weights.get(coding, weights.get("*", 0.0))
        if q > best_q:
            best, best_q = coding, q
    return best


class Encoder(Protocol):
    def compress(self, block: bytes) -> bytes: ...

    def flush(self) -> bytes: ...


class _Zstd:
    """One zstd frame for the whole response; each block is flushed so the client can decode
    it as soon as it arrives."""

    def __init__(self, level: int) -> None:
        self._obj = zstandard.ZstdCompressor(level=level).compressobj()

    def compress(self, block: bytes) -> bytes:
        return self._obj.compress(block) + self._obj.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK)

    def flush(self) -> bytes:
        return self._obj.flush()


def encoder(coding: Coding, *, gzip_level: int, zstd_level: int) -> Encoder:
    """A streaming compressor for one response body."""
    if coding == "zstd":
        return _Zstd(zstd_level)
    deflater: Encoder = isal_zlib.compressobj(gzip_level, isal_zlib.DEFLATED, 31)
    return deflater


_local = threading.local()  # zstd contexts are not thread-safe, and cost 15 us to make here


def compress(data: bytes, coding: Coding, *, gzip_level: int, zstd_level: int) -> bytes:
    """A whole body in one call (small responses)."""
    if coding == "zstd":
        contexts: dict[int, zstandard.ZstdCompressor] = _local.__dict__.setdefault("zstd", {})
        ctx = contexts.get(zstd_level)
        if ctx is None:
            ctx = contexts[zstd_level] = zstandard.ZstdCompressor(level=zstd_level)
        return ctx.compress(data)
    return igzip.compress(data, gzip_level)
