"""Shared fixtures: pipelines to compare and stores to run on."""

from __future__ import annotations

import pytest
import zarr

from _helpers import OURS


@pytest.fixture(autouse=True)
def _reset_zarr_config():
    zarr.config.reset()
    yield
    zarr.config.reset()


@pytest.fixture
def ours():
    """Select sparsezarr.Pipeline for arrays opened inside the test."""
    with zarr.config.set({"codec_pipeline.path": OURS}):
        yield


@pytest.fixture(params=["local", "memory"])
def store_kind(request):
    return request.param


@pytest.fixture
def make_store(tmp_path, store_kind):
    """A factory of fresh stores of the parametrised kind."""
    counter = iter(range(1_000_000))

    def make(read_only: bool = False):
        if store_kind == "local":
            return zarr.storage.LocalStore(tmp_path / f"s{next(counter)}", read_only=read_only)
        return zarr.storage.MemoryStore(read_only=read_only)

    return make
