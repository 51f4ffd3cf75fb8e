"""The one store interface as Python sees it: ``sparsezarr._lib.Store`` and the bridge from any
zarr-python store (``sparsezarr._stores.rust_store``).

Each backend keeps the same contract (checked against a plain dict as the model); every API that
stores data reads and writes through the bridge, on a ``MemoryStore`` and on a store the bridge
only knows through zarr's async API; a store's own exception reaches the caller unchanged.
"""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp
import zarr
from zarr.abc.store import ByteRequest
from zarr.core.buffer import Buffer, BufferPrototype
from zarr.storage import LocalStore, MemoryStore, WrapperStore

import sparsezarr
from sparsezarr import _lib
from sparsezarr._stores import rust_store


def _contract(store: _lib.Store) -> None:
    model: dict[str, bytes] = {}
    rng = np.random.default_rng(0)
    keys = ["a/c/0", "a/c/1", "a/zarr.json", "b/0", "ab"]
    for step in range(60):
        key = keys[rng.integers(len(keys))]
        op = rng.integers(3)
        if op == 0:
            value = rng.bytes(int(rng.integers(0, 40)))
            store.set(key, value)
            model[key] = value
        elif op == 1:
            store.delete(key)
            model.pop(key, None)
        assert store.get(key) == model.get(key), (step, key)
        for prefix in ("", "a", "a/", "a/c/", "b/", "zz"):
            assert store.list(prefix) == sorted(k for k in model if k.startswith(prefix)), (step, prefix)


def test_every_backend_keeps_the_contract(tmp_path: Any) -> None:
    _contract(_lib.Store.local(tmp_path / "local"))
    _contract(_lib.Store.memory())
    zmem = MemoryStore()
    bridge = rust_store(zmem)
    assert bridge.kind == "python"
    _contract(bridge)
    # The bridge wrote into the zarr store itself.
    assert sorted(zmem._store_dict) == bridge.list("")
    generic = rust_store(_Counting(MemoryStore()))
    _contract(generic)
    assert rust_store(LocalStore(tmp_path / "z")).kind == "local"


def test_capabilities_say_what_each_backend_enforces(tmp_path: Any) -> None:
    local = _lib.Store.local(tmp_path).capabilities()
    assert local == {"cheap_ranges": True, "atomic_replace": True, "conditional_writes": True, "listing": True}
    bridge = rust_store(MemoryStore()).capabilities()
    assert bridge["cheap_ranges"] is False and bridge["conditional_writes"] is False


def test_read_only_stores_refuse_writes(tmp_path: Any) -> None:
    for store in (_lib.Store.local(tmp_path, read_only=True), _lib.Store.memory(read_only=True), rust_store(MemoryStore(read_only=True))):
        assert store.read_only
        with pytest.raises(sparsezarr.errors.ReadOnlyError):
            store.set("k", b"1")
        with pytest.raises(sparsezarr.errors.ReadOnlyError):
            store.delete("k")


class _Counting(WrapperStore[Any]):
    """A store the bridge only knows through zarr's async API; counts reads."""

    def __init__(self, store: Any) -> None:
        super().__init__(store)
        self.gets = 0

    async def get(self, key: str, prototype: BufferPrototype, byte_range: ByteRequest | None = None) -> Buffer | None:
        self.gets += 1
        return await self._store.get(key, prototype, byte_range)


class StoreBrokeError(Exception):
    """A store-specific exception that must reach the caller as it is."""


class _Failing(WrapperStore[Any]):
    """Fails every read of a chunk of the arrays the Rust core reads (``data``, ``indices``, the
    sparse array's shards); metadata and ``indptr`` (read by zarr in Python) work."""

    async def get(self, key: str, prototype: BufferPrototype, byte_range: ByteRequest | None = None) -> Buffer | None:
        if "/c/" in key and not key.startswith("x/indptr/"):
            raise StoreBrokeError(f"cannot read {key}")
        return await self._store.get(key, prototype, byte_range)


def _sparse_matrix() -> sp.csr_array:
    return sp.random_array((300, 200), density=0.05, format="csr", dtype=np.float32, rng=np.random.default_rng(1))


@pytest.mark.parametrize("kind", ["memory", "generic"])
def test_sparse_and_csr_apis_read_and_write_through_the_bridge(kind: str) -> None:
    inner = MemoryStore()
    store = inner if kind == "memory" else _Counting(inner)
    m = _sparse_matrix()
    a = sparsezarr.create_sparse(store, shape=m.shape, dtype="float32", chunks=(64, 64), shards=(128, 128), path="sp")
    a[:, :] = m
    a[10:20, 5:50] = sp.csr_array(np.ones((10, 45), dtype=np.float32))
    want = m.toarray()
    want[10:20, 5:50] = 1
    np.testing.assert_array_equal(a.to_scipy().toarray(), want)
    np.testing.assert_array_equal(sparsezarr.open_sparse(store, path="sp").to_scipy()[50:250].toarray(), want[50:250])
    assert a.nnz == np.count_nonzero(want)
    if kind == "generic":
        assert store.gets > 0, "the generic path must read through the store's own API"
    sparsezarr.write_csr(store, m, path="x", chunks=64)
    rows = np.array([299, 0, 17, 17, 150])
    np.testing.assert_array_equal(sparsezarr.open_csr(store, path="x")[rows].toarray(), m[rows].toarray())


def test_a_stores_exception_reaches_the_caller_unchanged() -> None:
    inner = MemoryStore()
    m = _sparse_matrix()
    sparsezarr.write_csr(inner, m, path="x", chunks=64)
    a = sparsezarr.create_sparse(inner, shape=m.shape, dtype="float32", chunks=(64, 64), shards=None, path="sp")
    a[:, :] = m
    failing = _Failing(inner)
    x = sparsezarr.open_csr(failing, path="x")  # indptr is read by zarr; the gather goes through the bridge
    with pytest.raises(StoreBrokeError, match=r"cannot read x/(data|indices)/"):
        x[np.array([1, 2])]
    with pytest.raises(StoreBrokeError, match="cannot read sp/c/"):
        sparsezarr.open_sparse(failing, path="sp", mode="r").to_scipy()


def test_pipeline_on_a_memory_store_matches_zarrs_own_pipeline() -> None:
    data = np.random.default_rng(2).poisson(3, size=(100, 90)).astype("int32")
    out = {}
    for name, path in (("ours", "sparsezarr.Pipeline"), ("zarr", "zarr.core.codec_pipeline.BatchedCodecPipeline")):
        with zarr.config.set({"codec_pipeline.path": path, "codec_pipeline.strict": name == "ours"}):
            store = MemoryStore()
            z = zarr.create_array(store, shape=data.shape, chunks=(16, 16), shards=(32, 48), dtype="int32", fill_value=-1)
            z[:] = data
            z[5:40, 3:77] = 7
            z[90:, :] = -1  # back to the fill value: inner chunks disappear
            out[name] = (z[:], {k: v.to_bytes() for k, v in store._store_dict.items()})
    np.testing.assert_array_equal(out["ours"][0], out["zarr"][0])
    assert out["ours"][1] == out["zarr"][1], "stored bytes differ from zarr's own"


def test_python_callables_are_called_in_batches() -> None:
    calls: list[list[str]] = []
    values = {f"c/{i}": bytes([i]) * 4 for i in range(10)}

    def get_many(keys: list[str]) -> list[Any]:
        calls.append(list(keys))
        return [np.frombuffer(values[k], dtype=np.uint8) if k in values else None for k in keys]

    store = _lib.Store.python(get_many, lambda k, v: None, lambda k: None)
    assert store.get("c/3") == bytes([3]) * 4
    assert store.get("missing") is None
    assert calls == [["c/3"], ["missing"]]
    with pytest.raises(NotImplementedError):
        store.list("")
    asyncio.run(asyncio.sleep(0))


def test_input_arrays_are_read_only_while_the_core_uses_them() -> None:
    """No Python thread can change an input array while the core reads it without the GIL: the
    array is read-only for the duration of the call (checked from inside it, by a Python store
    the core calls while writing), and writable again afterwards."""
    values = np.arange(100, dtype="int32")
    flags_seen: list[bool] = []
    stored: dict[str, bytes] = {}

    def put(key: str, value: np.ndarray) -> None:
        flags_seen.append(bool(values.flags.writeable))
        with pytest.raises(ValueError, match="read-only"):
            values[0] = -1
        stored[key] = bytes(value)

    store = _lib.Store.python(lambda keys: [stored.get(k) for k in keys], put, lambda k: stored.pop(k, None))
    meta = '{"zarr_format":3,"node_type":"array","shape":[100],"data_type":"int32","chunk_grid":{"name":"regular","configuration":{"chunk_shape":[30]}},"chunk_key_encoding":{"name":"default"},"fill_value":0,"codecs":[{"name":"bytes","configuration":{"endian":"little"}}]}'
    _lib.write_array(store, meta, "", 0, values)
    assert flags_seen == [False] * 4
    assert values.flags.writeable and values[0] == 0
    assert np.frombuffer(_lib.read_array(store, meta, ""), dtype="int32").tolist() == list(range(100))
    # An array that was read-only stays read-only.
    frozen = np.arange(100, dtype="int32")
    frozen.flags.writeable = False
    _lib.write_array(_lib.Store.memory(), meta, "", 0, frozen)
    assert not frozen.flags.writeable
