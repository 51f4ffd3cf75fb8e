"""Helpers shared by the tests (imported as a plain module; pytest puts tests/ on sys.path)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import zarr

OURS = "sparsezarr.Pipeline"
ZARR_DEFAULT = "zarr.core.codec_pipeline.BatchedCodecPipeline"

#: Real single-cell data beside the project (see ../shared/data/README.md); optional.
DATA_DIR = Path(os.environ.get("SPARSEZARR_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def require_data(*parts: str) -> Path:
    path = DATA_DIR.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data not available at {path} (set SPARSEZARR_DATA)")
    return path


def use_pipeline(path: str):
    return zarr.config.set({"codec_pipeline.path": path})


def pipeline_of(arr) -> object:
    return arr._async_array.codec_pipeline


def assert_native(arr) -> None:
    """The array really runs on the Rust engine (not a fallback)."""
    p = pipeline_of(arr)
    assert type(p).__name__ == "Pipeline" and type(p).__module__ == "sparsezarr", p
    assert p._engine is not None, f"array fell back: {p._unsupported}"


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)
