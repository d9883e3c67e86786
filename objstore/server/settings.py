"""Server settings: defaults, overridden by environment variables, overridden by CLI flags."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from objstore.limits import MB, Limits, env_megabytes


def _env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{name} must be 1/0, true/false, yes/no or on/off, got {raw!r}")


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from exc


_ORIGIN = re.compile(r"\*|https?://[^/\s]+")  # what a browser sends in Origin: no path


def cors_origins(raw: str) -> tuple[str, ...]:
    """OBJSTORE_CORS_ORIGINS' value: comma-separated origins (``*``: any; empty or ``none``:
    no cross-origin access). ValueError naming an entry a browser's Origin never equals (the
    caller says where the value came from)."""
    if raw.strip().lower() in ("", "none"):
        return ()
    origins = tuple(part.strip() for part in raw.split(","))
    for origin in origins:
        if not _ORIGIN.fullmatch(origin):
            raise ValueError(
                f"{origin!r} is not an origin: give * or "
                "scheme://host[:port] with no path (a browser sends http://localhost:3000)"
            )
    return origins


@dataclass(frozen=True)
class Settings:
    """Everything the HTTP layer needs to know; the store brings its own object limits."""

    data: Path = Path("data")
    limits: Limits = field(default_factory=Limits)
    max_request_bytes: int = 50 * MB  # an upload body as sent (compressed or not)
    max_ids: int = 2_000_000  # ids in one diff/getobjects request
    max_ids_body_bytes: int = 160 * MB  # the body carrying those ids
    gzip_level: int = 1  # ISA-L levels 0-3; 1 deflates ~270 MB/s here at zlib-9-like ratios
    zstd_level: int = 1  # for clients that accept zstd: faster than gzip at both ends, smaller
    block_bytes: int = 1 << 20  # streamed responses are built and compressed in blocks
    readahead: bool = True  # OS readahead on the store's pages; off for stores far beyond RAM
    # Browser apps on these origins may call the routes, as Speckle's server lets any (its
    # viewer and web SDKs send tokens in a header, never cookies, so no page can borrow one)
    cors_origins: tuple[str, ...] = ("*",)

    def __post_init__(self) -> None:
        if not 0 <= self.gzip_level <= 3:
            raise ValueError(f"gzip level must be 0-3 (ISA-L levels), got {self.gzip_level}")
        if not -7 <= self.zstd_level <= 19:
            raise ValueError(f"zstd level must be -7 to 19, got {self.zstd_level}")
        if self.max_ids < 1:
            raise ValueError(f"OBJSTORE_MAX_IDS must be 1 or more, got {self.max_ids}")

    @classmethod
    def from_env(cls) -> Settings:
        """OBJSTORE_DATA, OBJSTORE_MAX_OBJECT_MB, OBJSTORE_MAX_BATCH_MB, OBJSTORE_MAX_REQUEST_MB,
        OBJSTORE_MAX_IDS, OBJSTORE_GZIP_LEVEL, OBJSTORE_ZSTD_LEVEL, OBJSTORE_READAHEAD,
        OBJSTORE_CORS_ORIGINS."""
        limits = Limits.from_env()
        max_request = env_megabytes("OBJSTORE_MAX_REQUEST_MB", limits.max_batch_bytes)
        try:
            origins = cors_origins(os.environ.get("OBJSTORE_CORS_ORIGINS", "*"))
        except ValueError as exc:
            raise ValueError(f"OBJSTORE_CORS_ORIGINS: {exc}") from None
        return cls(
            data=Path(os.environ.get("OBJSTORE_DATA", "data")),
            limits=limits,
            max_request_bytes=max_request,
            max_ids=_env_int("OBJSTORE_MAX_IDS", cls.max_ids),
            gzip_level=_env_int("OBJSTORE_GZIP_LEVEL", cls.gzip_level),
            zstd_level=_env_int("OBJSTORE_ZSTD_LEVEL", cls.zstd_level),
            readahead=_env_bool("OBJSTORE_READAHEAD", cls.readahead),
            cors_origins=origins,
        )
