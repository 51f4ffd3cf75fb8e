"""sparsezarr._compat: what we take from zarr-python beyond its public API, on the installed zarr.

.ci/run runs these on zarr 3.1.6 and on the newest zarr; a zarr release that moves one of these
names fails here first, with the function that needs updating in the test name.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import zarr
from zarr.codecs import BytesCodec, ShardingCodec

from _helpers import OURS, ZARR_DEFAULT, assert_native, pipeline_of, use_pipeline
from sparsezarr import _compat


def test_zarr_version_is_parsed_and_within_the_supported_range():
    assert tuple(int(p) for p in zarr.__version__.split(".")[:2]) == _compat.ZARR_VERSION
    assert (3, 1) <= _compat.ZARR_VERSION < (3, 5)


@pytest.mark.parametrize("shards,expected", [(None, (10, 20)), ((40, 60), (40, 60))])
def test_regular_chunk_shape_is_the_grid_shape(shards, expected):
    a = zarr.create_array(zarr.storage.MemoryStore(), shape=(80, 120), chunks=(10, 20), shards=shards, dtype="f4")
    assert _compat.regular_chunk_shape(a.metadata) == expected


@pytest.mark.skipif(_compat.ZARR_VERSION < (3, 4), reason="rectilinear chunk grids are new in zarr 3.4")
def test_rectilinear_grids_fall_back_and_match_zarr():
    data = np.arange(6000, dtype="i4").reshape(60, 100)
    with zarr.config.set({"array.rectilinear_chunks": True}):
        with use_pipeline(ZARR_DEFAULT):
            ref = zarr.create_array(zarr.storage.MemoryStore(), shape=(60, 100), chunks=[[10, 20, 30], [50, 50]], dtype="i4")
            ref[:] = data
        assert _compat.regular_chunk_shape(ref.metadata) is None
        with use_pipeline(OURS):
            a = zarr.create_array(zarr.storage.MemoryStore(), shape=(60, 100), chunks=[[10, 20, 30], [50, 50]], dtype="i4")
            assert "rectilinear" in pipeline_of(a)._unsupported
            a[:] = data
            a[5:25, 40:60] = -1
            ref[5:25, 40:60] = -1
            np.testing.assert_array_equal(a[:], ref[:])


@pytest.mark.parametrize("location", ["start", "end"])
def test_sharding_index_location_is_the_json_string(location):
    codec = ShardingCodec(chunk_shape=(4,), codecs=[BytesCodec()], index_location=location)
    assert _compat.sharding_index_location(codec) == location


def test_memory_mapping_only_for_plain_memory_stores(tmp_path):
    store = zarr.storage.MemoryStore()
    a = zarr.create_array(store, shape=(4,), chunks=(2,), dtype="i1")
    a[:] = 1
    mapping = _compat.memory_mapping(store)
    assert isinstance(mapping, dict) and "c/0" in mapping
    assert _compat.memory_mapping(zarr.storage.LocalStore(tmp_path)) is None

    class MyStore(zarr.storage.MemoryStore):
        pass

    assert _compat.memory_mapping(MyStore()) is None


def test_ensure_open_opens_a_local_store_like_zarr(tmp_path):
    store = zarr.storage.LocalStore(tmp_path / "s")
    asyncio.run(_compat.ensure_open(store))
    assert (tmp_path / "s").is_dir()


def test_check_writable_raises_zarrs_error_on_read_only_stores(tmp_path):
    _compat.check_writable(zarr.storage.MemoryStore())
    with pytest.raises(ValueError, match="read-only"):
        _compat.check_writable(zarr.storage.MemoryStore(read_only=True))
    with pytest.raises(ValueError, match="read-only"):
        _compat.check_writable(zarr.storage.LocalStore(tmp_path, read_only=True))


def test_sharded_array_native_in_strict_mode(tmp_path):
    """The issue's acceptance case: a sharded array written and read natively in strict mode."""
    data = np.random.default_rng(0).random((256, 192)).astype("f4")
    with zarr.config.set({"codec_pipeline.path": OURS, "codec_pipeline.strict": True}):
        a = zarr.create_array(tmp_path / "s.zarr", shape=data.shape, chunks=(32, 32), shards=(128, 96), dtype="f4")
        assert_native(a)
        a[:] = data
        a[10:50, 7:100] = 0.5
        data[10:50, 7:100] = 0.5
        b = zarr.open_array(tmp_path / "s.zarr", mode="r")
        np.testing.assert_array_equal(b[:], data)
        np.testing.assert_array_equal(b.oindex[[3, 200, 77], ::5], data[[3, 200, 77], ::5])
    with use_pipeline(ZARR_DEFAULT):  # zarr's own pipeline reads what we wrote
        np.testing.assert_array_equal(zarr.open_array(tmp_path / "s.zarr", mode="r")[:], data)
