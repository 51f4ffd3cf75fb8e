"""Settings of the codec pipeline, read from zarr's configuration.

All keys live in zarr's own configuration (``zarr.config``), so they can be set with
``zarr.config.set({...})`` or with environment variables (``ZARR_CODEC_PIPELINE__STRICT=1``).
They are read when a pipeline is built (when an array is opened, or unpickled).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import zarr

#: Defaults of every setting, keyed by their name in ``zarr.config``.
DEFAULTS: dict[str, Any] = {
    "codec_pipeline.strict": False,
    "codec_pipeline.validate_checksums": True,
    "codec_pipeline.coalesce_max_gap_bytes": 64 * 1024,
    "codec_pipeline.coalesce_max_bytes": 16 * 1024 * 1024,
    "codec_pipeline.index_cache_bytes": 64 * 1024 * 1024,
    "codec_pipeline.inline_work_bytes": 1024 * 1024,
    # Remote object stores: requests of one batch in flight at once (sized for latency), and the
    # value size from which writes are multipart uploads.
    "codec_pipeline.remote_max_in_flight": 64,
    "codec_pipeline.multipart_threshold_bytes": 64 * 1024 * 1024,
    # Local directories: flush every value and its directory to the device before a write
    # returns (survives a power loss; see docs/reliability.md for the cost).
    "codec_pipeline.durable": False,
}


def durable() -> bool:
    """Whether local writes are flushed to the device before they return (``codec_pipeline.durable``)."""
    return _as_bool(_get("codec_pipeline.durable"))


def _get(key: str) -> Any:
    value = zarr.config.get(key, DEFAULTS.get(key))
    return DEFAULTS.get(key) if value is None else value


def _as_bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in {"1", "true", "yes", "on"}
    return bool(value)


@dataclass(frozen=True)
class Settings:
    """A snapshot of the pipeline settings."""

    strict: bool
    validate_checksums: bool
    threads: int
    coalesce_max_gap_bytes: int
    coalesce_max_bytes: int
    index_cache_bytes: int
    inline_work_bytes: int
    remote_max_in_flight: int = 64
    multipart_threshold_bytes: int = 64 * 1024 * 1024

    @classmethod
    def from_config(cls) -> Settings:
        workers = zarr.config.get("threading.max_workers", None)
        return cls(
            strict=_as_bool(_get("codec_pipeline.strict")),
            validate_checksums=_as_bool(_get("codec_pipeline.validate_checksums")),
            threads=int(workers) if workers else 0,
            coalesce_max_gap_bytes=int(_get("codec_pipeline.coalesce_max_gap_bytes")),
            coalesce_max_bytes=int(_get("codec_pipeline.coalesce_max_bytes")),
            index_cache_bytes=int(_get("codec_pipeline.index_cache_bytes")),
            inline_work_bytes=int(_get("codec_pipeline.inline_work_bytes")),
            remote_max_in_flight=int(_get("codec_pipeline.remote_max_in_flight")),
            multipart_threshold_bytes=int(_get("codec_pipeline.multipart_threshold_bytes")),
        )

    def engine_kwargs(self) -> dict[str, Any]:
        return {
            "validate_checksums": self.validate_checksums,
            "threads": self.threads,
            "coalesce_max_gap": self.coalesce_max_gap_bytes,
            "coalesce_max_bytes": self.coalesce_max_bytes,
        }
