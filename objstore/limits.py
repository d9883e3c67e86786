"""Size limits (Speckle's: 10 MB per object, 50 MB per batch), overridable by environment."""

from __future__ import annotations

import os
from dataclasses import dataclass

MB = 1024 * 1024

DEFAULT_MAX_OBJECT_BYTES = 10 * MB
DEFAULT_MAX_BATCH_BYTES = 50 * MB

ENV_MAX_OBJECT_MB = "OBJSTORE_MAX_OBJECT_MB"
ENV_MAX_BATCH_MB = "OBJSTORE_MAX_BATCH_MB"


def env_megabytes(name: str, default: int) -> int:
    """Bytes from environment variable ``name`` in (positive) megabytes; ``default`` unset."""
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError as exc:
        raise ValueError(f"{name} must be a number of megabytes, got {raw!r}") from exc
    if value <= 0:
        raise ValueError(f"{name} must be positive, got {raw!r}")
    return int(value * MB)


@dataclass(frozen=True, slots=True)
class Limits:
    """Per-object and per-batch byte limits, counted on each object's JSON bytes."""

    max_object_bytes: int = DEFAULT_MAX_OBJECT_BYTES
    max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES

    def __post_init__(self) -> None:
        if self.max_object_bytes <= 0 or self.max_batch_bytes <= 0:
            raise ValueError("limits must be positive")

    @classmethod
    def from_env(cls) -> Limits:
        """Defaults, overridden by OBJSTORE_MAX_OBJECT_MB / OBJSTORE_MAX_BATCH_MB."""
        return cls(
            max_object_bytes=env_megabytes(ENV_MAX_OBJECT_MB, DEFAULT_MAX_OBJECT_BYTES),
            max_batch_bytes=env_megabytes(ENV_MAX_BATCH_MB, DEFAULT_MAX_BATCH_BYTES),
        )
