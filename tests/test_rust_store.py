"""``sparsezarr.RustStore`` against zarr-python's own ``StoreTests`` (the contract every zarr store
keeps), on a local directory and on a real S3 server on loopback (moto), and under zarr arrays
with both pipelines."""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr
from zarr.core.buffer import Buffer, cpu, default_buffer_prototype
from zarr.testing.store import StoreTests

import sparsezarr
from sparsezarr import RustStore
from sparsezarr.testing import CREDENTIALS, S3Server, moto_s3

_counter = iter(range(1_000_000))


class TestRustStoreLocal(StoreTests[RustStore, cpu.Buffer]):
    """zarr's store contract on a local directory. ``set``/``get`` of the test class bypass the
    store under test: they use the file system directly."""

    store_cls = RustStore
    buffer_cls = cpu.Buffer

    async def set(self, store: RustStore, key: str, value: Buffer) -> None:
        assert store.root is not None
        path = store.root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(value.to_bytes())

    async def get(self, store: RustStore, key: str) -> Buffer:
        assert store.root is not None
        return self.buffer_cls.from_bytes((store.root / key).read_bytes())

    @pytest.fixture
    def store_kwargs(self, tmp_path: Path) -> dict[str, Any]:
        return {"location": str(tmp_path / "store")}

    def test_store_repr(self, store: RustStore) -> None:
        assert repr(store) == f"RustStore({str(store.root)!r})"

    def test_store_supports_writes(self, store: RustStore) -> None:
        assert store.supports_writes

    def test_store_supports_listing(self, store: RustStore) -> None:
        assert store.supports_listing


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    pytest.importorskip("moto")
    with moto_s3("sparsezarr-rust-store") as server:
        yield server


def _s3_options(s3: S3Server) -> dict[str, str]:
    return {
        "aws_endpoint": s3.endpoint,
        "aws_region": s3.region,
        "aws_access_key_id": CREDENTIALS["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        "aws_allow_http": "true",
    }


class TestRustStoreS3(StoreTests[RustStore, cpu.Buffer]):
    """zarr's store contract on S3 (moto's server); ``set``/``get`` of the test class use boto3."""

    store_cls = RustStore
    buffer_cls = cpu.Buffer

    @pytest.fixture
    def store_kwargs(self, s3: S3Server) -> dict[str, Any]:
        return {"location": f"s3://{s3.bucket}/t{next(_counter)}", "options": _s3_options(s3)}

    @staticmethod
    def _client_and_key(store: RustStore, key: str) -> tuple[Any, str, str]:
        import boto3

        bucket, _, prefix = store.location.removeprefix("s3://").partition("/")
        client = boto3.client("s3", endpoint_url=store._options["aws_endpoint"], region_name="us-east-1")
        return client, bucket, f"{prefix}/{key}" if prefix else key

    async def set(self, store: RustStore, key: str, value: Buffer) -> None:
        client, bucket, name = self._client_and_key(store, key)
        client.put_object(Bucket=bucket, Key=name, Body=value.to_bytes())

    async def get(self, store: RustStore, key: str) -> Buffer:
        client, bucket, name = self._client_and_key(store, key)
        return self.buffer_cls.from_bytes(client.get_object(Bucket=bucket, Key=name)["Body"].read())

    def test_store_repr(self, store: RustStore) -> None:
        assert repr(store).startswith("RustStore('s3://")

    def test_store_supports_writes(self, store: RustStore) -> None:
        assert store.supports_writes

    def test_store_supports_listing(self, store: RustStore) -> None:
        assert store.supports_listing


# ---------------------------------------------------------------------------- under zarr arrays
@pytest.fixture(params=["local", "s3"])
def rust_store(request: pytest.FixtureRequest, tmp_path: Path) -> RustStore:
    if request.param == "local":
        return RustStore(tmp_path / "z")
    s3 = request.getfixturevalue("s3")
    return RustStore(f"s3://{s3.bucket}/arrays{next(_counter)}", options=_s3_options(s3))


@pytest.mark.parametrize("pipeline", ["sparsezarr.Pipeline", "zarr.core.codec_pipeline.BatchedCodecPipeline"])
@pytest.mark.parametrize("shards", [None, (64, 64)])
def test_arrays_on_a_rust_store_match_numpy_and_zarrs_local_store(rust_store: RustStore, pipeline: str, shards: Any, tmp_path: Path) -> None:
    """Arrays written through a RustStore read back equal (by both pipelines) and hold the keys
    zarr's own LocalStore holds for the same writes; written by zarr's pipeline, the same bytes
    (our pipeline's zstd frames differ from numcodecs' in their header flags, not in value)."""
    rng = np.random.default_rng(5)
    values = rng.poisson(0.3, size=(200, 130)).astype("float32")
    kwargs: dict[str, Any] = {"shape": values.shape, "chunks": (32, 32), "shards": shards, "dtype": "float32"}
    with zarr.config.set({"codec_pipeline.path": pipeline, "codec_pipeline.strict": pipeline.startswith("sparsezarr")}):
        a = zarr.create_array(rust_store, name="x", **kwargs)
        a[:] = values
        a[10:50, 100:130] = 7.0
    expected = values.copy()
    expected[10:50, 100:130] = 7.0
    reference = zarr.create_array(zarr.storage.LocalStore(tmp_path / "ref"), name="x", **kwargs)
    reference[:] = values
    reference[10:50, 100:130] = 7.0
    for read_pipeline in ("sparsezarr.Pipeline", "zarr.core.codec_pipeline.BatchedCodecPipeline"):
        with zarr.config.set({"codec_pipeline.path": read_pipeline}):
            got = zarr.open_array(rust_store, path="x", mode="r")
            np.testing.assert_array_equal(got[:], expected)
            np.testing.assert_array_equal(got[5:77, 3:99], expected[5:77, 3:99])
    keys = sorted(k for k in zarr.core.sync.sync(_collect(rust_store.list_prefix("x/"))) if not k.endswith("zarr.json"))
    ref_store = reference.store
    ref_keys = sorted(k for k in zarr.core.sync.sync(_collect(ref_store.list_prefix("x/"))) if not k.endswith("zarr.json"))
    assert keys == ref_keys
    proto = default_buffer_prototype()
    for key in keys if pipeline.startswith("zarr.") else []:
        mine = zarr.core.sync.sync(rust_store.get(key, proto))
        theirs = zarr.core.sync.sync(ref_store.get(key, proto))
        assert mine is not None and theirs is not None
        assert mine.to_bytes() == theirs.to_bytes(), key


async def _collect(it: Any) -> list[str]:
    return [k async for k in it]


def test_the_pipeline_uses_the_store_handle_directly(tmp_path: Path) -> None:
    """With sparsezarr.Pipeline, chunk I/O on a RustStore runs in Rust (strict mode: any fallback
    to zarr-python's pipeline would raise)."""
    store = RustStore(tmp_path / "s")
    with zarr.config.set({"codec_pipeline.path": "sparsezarr.Pipeline", "codec_pipeline.strict": True}):
        a = zarr.create_array(store, name="y", shape=(100,), chunks=(10,), dtype="int64")
        before = dict(sparsezarr.pipeline.STATS)
        a[:] = np.arange(100)
        np.testing.assert_array_equal(a[:], np.arange(100))
        after = dict(sparsezarr.pipeline.STATS)
    assert after.get("write.rust.object", 0) > before.get("write.rust.object", 0)
    assert after.get("read.rust.object", 0) > before.get("read.rust.object", 0)


def test_read_only_store_refuses_pipeline_writes(tmp_path: Path) -> None:
    RustStore(tmp_path / "r")
    zarr.create_array(RustStore(tmp_path / "r"), name="a", shape=(10,), chunks=(5,), dtype="int8")[:] = 1
    ro = RustStore(tmp_path / "r", read_only=True)
    with zarr.config.set({"codec_pipeline.path": "sparsezarr.Pipeline"}):
        a = zarr.open_array(ro, path="a")
        np.testing.assert_array_equal(a[:], np.ones(10, "int8"))
        with pytest.raises(ValueError, match="read-only"):
            a[:] = 2
    np.testing.assert_array_equal(zarr.open_array(ro, path="a")[:], np.ones(10, "int8"))


def test_pickled_store_reads_the_same_values(tmp_path: Path) -> None:
    store = RustStore(tmp_path / "p")
    zarr.create_array(store, name="a", shape=(6,), chunks=(4,), dtype="int32")[:] = np.arange(6)
    again = pickle.loads(pickle.dumps(store))
    assert again == store and again.read_only is False
    np.testing.assert_array_equal(zarr.open_array(again, path="a")[:], np.arange(6))


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="options are for object stores"):
        RustStore(tmp_path, options={"aws_region": "x"})
    with pytest.raises(ValueError, match="local directories only"):
        RustStore("s3://bucket/x", durable=True)


def test_single_cell_writes_on_a_local_rust_store(tmp_path: Path) -> None:
    """write_csr (and its overwrite, which swaps a staged group in), append_rows (journaled) and
    open_csr on a RustStore over a local directory, read back by anndata through zarr's own
    LocalStore; no staged directory or journal is left behind."""
    import anndata as ad
    import scipy.sparse as sp

    root = tmp_path / "a.zarr"
    store = RustStore(root)
    m = sp.random(300, 40, density=0.1, format="csr", dtype="float32", random_state=1)
    sparsezarr.write_csr(store, m * 2, path="X")
    sparsezarr.write_csr(store, m, path="X", overwrite=True)
    sparsezarr.append_rows(store, m[:25], path="X")
    expected = sp.vstack([m, m[:25]]).toarray()
    np.testing.assert_array_equal(sparsezarr.open_csr(store, path="X")[:].toarray(), expected)
    theirs = ad.io.read_elem(zarr.open_group(zarr.storage.LocalStore(root), mode="r")["X"])
    np.testing.assert_array_equal(theirs.toarray(), expected)
    leftovers = [p.name for p in root.rglob("*") if p.name.startswith(".")]
    assert leftovers == [], leftovers
