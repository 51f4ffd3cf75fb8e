"""Remote object stores in Rust, against a real S3 server on loopback (moto's server).

Every feature runs in strict mode (``codec_pipeline.strict``: a fallback to zarr-python's own
pipeline would raise) and is compared with the same data written to a local store or with numpy /
scipy. A counting proxy between the client and the server checks the requests each read sends.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp
import zarr
from zarr.storage import FsspecStore, LocalStore, ObjectStore

import sparsezarr
from sparsezarr import _lib
from sparsezarr.errors import ConflictError
from sparsezarr.pipeline import STATS
from sparsezarr.testing import LatencyProxy, S3Server, moto_s3

pytest.importorskip("moto")
pytest.importorskip("obstore")
pytest.importorskip("s3fs")


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    with moto_s3("sparsezarr-test") as server:
        yield server


@pytest.fixture
def strict(ours: Any) -> Iterator[None]:
    with zarr.config.set({"codec_pipeline.strict": True}):
        yield


_counter = iter(range(1_000_000))


def _prefix(tag: str) -> str:
    return f"{tag}-{next(_counter)}"


def _zarr_stores(s3: S3Server, tag: str) -> dict[str, Any]:
    """The two ways users reach S3 from zarr-python: obstore and s3fs."""
    return {
        "obstore": ObjectStore(s3.obstore(prefix=_prefix(tag))),
        "s3fs": FsspecStore.from_url(f"s3://{s3.bucket}/{_prefix(tag)}", storage_options=s3.storage_options()),
    }


def _rust(s3: S3Server, prefix: str, **kw: Any) -> _lib.Store:
    opts = {
        "aws_endpoint": s3.endpoint,
        "aws_allow_http": "true",
        "aws_region": s3.region,
        "aws_access_key_id": "testing",
        "aws_secret_access_key": "testing",
    }
    return _lib.Store.object_url(f"s3://{s3.bucket}/{prefix}", opts, **kw)


# -- the store interface ----------------------------------------------------------------------


def test_s3_store_keeps_the_contract(s3: S3Server) -> None:
    store = _rust(s3, _prefix("contract"))
    assert store.kind == "object"
    assert store.capabilities() == {"cheap_ranges": False, "atomic_replace": True, "conditional_writes": True, "listing": True}
    model: dict[str, bytes] = {}
    rng = np.random.default_rng(0)
    keys = ["a/c/0", "a/c/1", "a/zarr.json", "b/0", "ab"]
    for step in range(40):
        key = keys[rng.integers(len(keys))]
        if rng.integers(3) == 0:
            store.delete(key)
            model.pop(key, None)
        else:
            value = rng.bytes(int(rng.integers(0, 40)))
            store.set(key, value)
            model[key] = value
        assert store.get(key) == model.get(key), (step, key)
    for prefix in ("", "a", "a/", "a/c/", "b/", "zz"):
        assert store.list(prefix) == sorted(k for k in model if k.startswith(prefix)), prefix


def test_ranges_suffixes_missing_keys_and_conditions(s3: S3Server) -> None:
    store = _rust(s3, _prefix("ranges"))
    store.set("k", b"hello world")
    assert store.read("k", 6, 5)[:2] == (b"world", 11)
    assert store.read("k", suffix=3)[:2] == (b"rld", 11)
    assert store.read("k", suffix=50)[0] == b"hello world"
    assert store.read("k", 6)[0] == b"world"
    assert store.read("missing") is None
    assert store.read("missing", suffix=4) is None
    with pytest.raises(ValueError, match="outside the stored value"):
        store.read("k", 8, 10)
    # Conditional writes: create-only, and replace-if-version (If-None-Match / If-Match; 412).
    _, _, v1 = store.read("k")
    assert v1 is not None
    with pytest.raises(ConflictError):
        store.put("k", b"other", create_only=True)
    assert store.get("k") == b"hello world"
    v2 = store.put("k", b"HELLO WORLD", if_version=v1)
    assert v2 is not None and v2 != v1
    with pytest.raises(ConflictError):
        store.put("k", b"stale", if_version=v1)
    assert store.get("k") == b"HELLO WORLD"
    store.put("new", b"1", create_only=True)
    assert store.get("new") == b"1"


def test_multipart_uploads(s3: S3Server) -> None:
    prefix = _prefix("multipart")
    big = np.random.default_rng(1).bytes(12 << 20)  # three parts of the minimum S3 part size
    with LatencyProxy(s3.endpoint) as proxy:
        _rust(s3.via(proxy.endpoint), prefix, multipart_threshold=5 << 20).set("big", big)
        t = proxy.reset()
    assert t.requests["POST"] >= 2, t.requests  # create and complete the upload
    assert t.requests["PUT"] >= 1, t.requests
    assert _rust(s3, prefix).get("big") == big


def test_read_only_store_refuses_writes(s3: S3Server) -> None:
    ro = _rust(s3, _prefix("ro"), read_only=True)
    with pytest.raises(Exception, match="read-only"):
        ro.set("x", b"1")


# -- the codec pipeline ---------------------------------------------------------------------


@pytest.mark.parametrize("shards", [None, (64, 64)])
def test_pipeline_reads_and_writes_s3_natively(s3: S3Server, strict: None, tmp_path: Any, shards: Any) -> None:
    rng = np.random.default_rng(2)
    data = rng.poisson(2.0, (160, 192)).astype("float32")
    for name, store in _zarr_stores(s3, "pipe").items():
        local = zarr.create_array(LocalStore(tmp_path / name), shape=data.shape, chunks=(16, 32), shards=shards, dtype="float32")
        local[:] = data
        before = dict(STATS)
        a = zarr.create_array(store, name="x", shape=data.shape, chunks=(16, 32), shards=shards, dtype="float32")
        a[:] = data
        b = zarr.open_array(store, path="x", mode="r+")
        np.testing.assert_array_equal(b[:], data, err_msg=name)
        np.testing.assert_array_equal(b[17:99, 5:150], local[17:99, 5:150], err_msg=name)
        np.testing.assert_array_equal(b.get_orthogonal_selection(([3, 77, 150], slice(None, None, 7))), data[[3, 77, 150], ::7])
        # A partial write (read-modify-write of shards / edge chunks).
        b[10:20, 30:40] = -1
        local[10:20, 30:40] = -1
        np.testing.assert_array_equal(b[:], local[:], err_msg=name)
        # The bytes stored are those zarr-python's own pipeline reads.
        with zarr.config.set({"codec_pipeline.path": "zarr.core.codec_pipeline.BatchedCodecPipeline"}):
            np.testing.assert_array_equal(zarr.open_array(store, path="x", mode="r")[:], local[:], err_msg=name)
        assert STATS["read.fallback"] == before.get("read.fallback", 0)
        assert STATS["read.rust.object"] > before.get("read.rust.object", 0)
        assert STATS["write.rust.object"] > before.get("write.rust.object", 0)


def test_missing_chunks_read_as_fill_value(s3: S3Server, strict: None) -> None:
    store = _zarr_stores(s3, "fill")["obstore"]
    a = zarr.create_array(store, shape=(40, 40), chunks=(10, 10), shards=(20, 20), dtype="int16", fill_value=-3)
    a[0:5, 0:5] = 1
    want = np.full((40, 40), -3, dtype="int16")
    want[0:5, 0:5] = 1
    np.testing.assert_array_equal(zarr.open_array(store, mode="r")[:], want)


def test_a_shard_read_sends_two_requests_and_no_head(s3: S3Server, strict: None) -> None:
    """16 inner chunks of one shard: one suffix GET for the index, one GET for the coalesced
    inner chunks; whole unsharded chunks: one GET each, never a HEAD."""
    prefix = _prefix("requests")
    data = np.arange(256 * 256, dtype="int32").reshape(256, 256)
    with LatencyProxy(s3.endpoint) as proxy:
        via = s3.via(proxy.endpoint)
        store = ObjectStore(via.obstore(prefix=prefix))
        a = zarr.create_array(store, name="s", shape=data.shape, chunks=(16, 16), shards=(256, 256), dtype="int32", compressors=None)
        a[:] = data
        b = zarr.create_array(store, name="u", shape=(256, 256), chunks=(16, 16), dtype="int32")
        b[:] = data
        s = zarr.open_array(store, path="s", mode="r")
        u = zarr.open_array(store, path="u", mode="r")
        proxy.reset()
        np.testing.assert_array_equal(s[0:64, 0:64], data[0:64, 0:64])  # 16 inner chunks
        t = proxy.reset()
        assert t.requests == {"GET-range": 2}, t.requests
        np.testing.assert_array_equal(u[:], data)  # 256 chunks
        t = proxy.reset()
        assert t.requests == {"GET": 256}, t.requests
        assert t.peak_in_flight > 8, t.peak_in_flight


def test_a_cached_index_saves_a_round_trip_and_is_checked(s3: S3Server, strict: None) -> None:
    """A shard read again is one round trip (its index is cached with the ETag it had); when the
    shard was replaced meanwhile (by another client), the answer's ETag differs and the read is
    done again from scratch: never a stale index applied to new bytes."""
    prefix = _prefix("cached")
    data = np.arange(128 * 128, dtype="int32").reshape(128, 128)
    with LatencyProxy(s3.endpoint) as proxy:
        store = ObjectStore(s3.via(proxy.endpoint).obstore(prefix=prefix))
        a = zarr.create_array(store, shape=data.shape, chunks=(16, 16), shards=(128, 128), dtype="int32", compressors=None)
        a[:] = data
        proxy.reset()
        np.testing.assert_array_equal(a[0:32, 0:64], data[0:32, 0:64])
        assert proxy.reset().requests == {"GET-range": 2}
        np.testing.assert_array_equal(a[0:32, 0:64], data[0:32, 0:64])
        assert proxy.reset().requests == {"GET-range": 1}
        # Another client rewrites the shard with other values (its layout changes: compressed).
        other = zarr.open_array(ObjectStore(s3.obstore(prefix=prefix)), mode="r+")
        with zarr.config.set({"codec_pipeline.path": "zarr.core.codec_pipeline.BatchedCodecPipeline"}):
            other[:] = -data
        np.testing.assert_array_equal(a[0:32, 0:64], -data[0:32, 0:64])
        np.testing.assert_array_equal(a[40:100, 3:77], -data[40:100, 3:77])


def test_fsspec_options_that_cannot_be_mapped_fall_back_with_the_reason(s3: S3Server, ours: Any) -> None:
    store = FsspecStore.from_url(
        f"s3://{s3.bucket}/{_prefix('unmapped')}", storage_options={**s3.storage_options(), "client_kwargs": {"verify": False}}
    )
    a = zarr.create_array(store, shape=(10,), chunks=(5,), dtype="int8")
    with zarr.config.set({"codec_pipeline.strict": True}), pytest.raises(sparsezarr.errors.FallbackError, match="verify"):
        zarr.open_array(store, mode="r+")[:] = 1  # settings are read when an array is opened
    a[:] = 1  # without strict mode: written through zarr-python
    assert (a[:] == 1).all()


def _race(write_blocks: Any, writers: int = 4) -> None:
    """Run ``write_blocks(w, wait)`` in ``writers`` threads, each calling ``wait()`` to start
    writing at the same moment as the others; the threads' errors are raised."""
    barrier = threading.Barrier(writers)
    errors: list[BaseException] = []

    def run(w: int) -> None:
        try:
            write_blocks(w, barrier.wait)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(w,)) for w in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors


def test_two_writers_racing_on_one_shard_lose_nothing(s3: S3Server, strict: None) -> None:
    """Disjoint blocks of one shard written at once by four threads, each through its own
    handle: every read-modify-write is conditional (If-Match on the ETag read; retried on 412)."""
    prefix = _prefix("race")
    store = ObjectStore(s3.obstore(prefix=prefix))
    zarr.create_array(store, shape=(64, 64), chunks=(8, 64), shards=(64, 64), dtype="int32", fill_value=0)

    def write_blocks(w: int, wait: Any) -> None:
        mine = zarr.open_array(ObjectStore(s3.obstore(prefix=prefix)), mode="r+")
        wait()
        for block in range(w, 8, 4):
            mine[block * 8 : (block + 1) * 8, :] = block + 1

    _race(write_blocks)
    got = zarr.open_array(store, mode="r")[:]
    want = np.repeat(np.arange(1, 9, dtype="int32"), 8)[:, None] * np.ones((1, 64), dtype="int32")
    np.testing.assert_array_equal(got, want)


def test_sparse_writers_racing_on_one_shard_lose_nothing(s3: S3Server, strict: None) -> None:
    """The same race on a sparse array: its partial shard writes are conditional too."""
    prefix = _prefix("sparse-race")
    sparsezarr.create_sparse(ObjectStore(s3.obstore(prefix=prefix)), shape=(64, 64), dtype="int32", chunks=(8, 64), shards=(64, 64))

    def write_blocks(w: int, wait: Any) -> None:
        mine = sparsezarr.open_sparse(ObjectStore(s3.obstore(prefix=prefix)))
        wait()
        for block in range(w, 8, 4):
            mine[block * 8 : (block + 1) * 8, :] = np.full((8, 64), block + 1, dtype="int32")

    _race(write_blocks)
    got = sparsezarr.open_sparse(ObjectStore(s3.obstore(prefix=prefix)), mode="r").todense()
    want = np.repeat(np.arange(1, 9, dtype="int32"), 8)[:, None] * np.ones((1, 64), dtype="int32")
    np.testing.assert_array_equal(got, want)


# -- sparse arrays, single-cell stores, virtual arrays ----------------------------------------


def test_sparse_arrays_on_s3(s3: S3Server, strict: None) -> None:
    x = sp.random(300, 200, density=0.05, format="csr", random_state=3, dtype="float32")
    store = _zarr_stores(s3, "sparse")["obstore"]
    a = sparsezarr.create_sparse(store, shape=x.shape, dtype="float32", chunks=(64, 64), shards=(128, 128))
    a[:, :] = x
    b = sparsezarr.open_sparse(store, mode="r+")
    np.testing.assert_array_equal(b[:, :].todense(), x.toarray())
    np.testing.assert_array_equal(b[17:200, 5:150].todense(), x.toarray()[17:200, 5:150])
    b[0:10, 0:10] = np.ones((10, 10), dtype="float32")
    want = x.toarray()
    want[0:10, 0:10] = 1
    np.testing.assert_array_equal(sparsezarr.open_sparse(store, mode="r")[:, :].todense(), want)


@pytest.mark.parametrize("via", ["obstore", "s3fs"])
def test_csr_stores_on_s3(s3: S3Server, strict: None, via: str) -> None:
    import anndata as ad

    x = sp.random(500, 80, density=0.1, format="csr", random_state=4, dtype="float32")
    store = _zarr_stores(s3, "csr")[via]
    sparsezarr.write_csr(store, x, chunks=64)
    r = sparsezarr.open_csr(store)
    rows = np.array([499, 3, 250, 3, 0])
    np.testing.assert_array_equal(r[rows].toarray(), x[rows].toarray())
    np.testing.assert_array_equal(r[100:300].toarray(), x[100:300].toarray())
    # anndata reads what we wrote, unmodified, from the bucket.
    g = zarr.open_group(store, mode="r")
    np.testing.assert_array_equal(ad.io.read_elem(g).toarray(), x.toarray())
    # Appends and a streaming writer.
    extra = sp.random(37, 80, density=0.1, format="csr", random_state=5, dtype="float32")
    sparsezarr.append_rows(store, extra)
    np.testing.assert_array_equal(sparsezarr.open_csr(store)[:].toarray(), sp.vstack([x, extra]).toarray())
    other = _zarr_stores(s3, "csrw")[via]
    with sparsezarr.CsrWriter(other, n_cols=80, dtype="float32", chunks=50) as w:
        for i in range(0, 500, 120):
            w.append(x[i : i + 120])
    np.testing.assert_array_equal(sparsezarr.open_csr(other)[:].toarray(), x.toarray())
    # The loader reads batches of rows from the bucket.
    seen = np.concatenate([b.index for b in sparsezarr.Loader(sparsezarr.open_csr(other), batch_size=128, shuffle=True, seed=0)])
    assert sorted(seen.tolist()) == list(range(500))


def test_virtual_views_of_s3_arrays(s3: S3Server, strict: None, tmp_path: Any) -> None:
    store = _zarr_stores(s3, "virt")["obstore"]
    root = zarr.open_group(store, mode="w")
    parts = [np.arange(i * 100, i * 100 + 60, dtype="int32").reshape(6, 10) for i in range(3)]
    for i, p in enumerate(parts):
        arr = root.create_array(f"p{i}", shape=p.shape, chunks=(3, 5), dtype="int32")
        arr[:] = p
    view = sparsezarr.concat([root[f"p{i}"] for i in range(3)], axis=0)
    np.testing.assert_array_equal(view[:], np.concatenate(parts, axis=0))
    np.testing.assert_array_equal(view[4:14, 2:7], np.concatenate(parts, axis=0)[4:14, 2:7])


def test_urls_with_storage_options(s3: S3Server, strict: None, tmp_path: Any) -> None:
    """``s3://`` URLs in the Python API follow zarr's and fsspec's conventions."""
    import anndata as ad

    so = s3.storage_options()
    x = sp.random(400, 60, density=0.1, format="csr", random_state=6, dtype="float32")
    url = f"s3://{s3.bucket}/{_prefix('url')}/x.zarr"
    sparsezarr.write_csr(url, x, chunks=64, storage_options=so)
    r = sparsezarr.open_csr(url, storage_options=so)
    np.testing.assert_array_equal(r[[5, 399, 0]].toarray(), x[[5, 399, 0]].toarray())
    sparsezarr.append_rows(url, x[:10], storage_options=so)
    assert sparsezarr.open_csr(url, storage_options=so).shape == (410, 60)
    with pytest.raises(ValueError, match="URLs only"):
        sparsezarr.open_csr(tmp_path / "nope", storage_options=so)

    surl = f"s3://{s3.bucket}/{_prefix('url')}/s.zarr"
    a = sparsezarr.create_sparse(surl, shape=(50, 40), dtype="float32", chunks=(16, 16), storage_options=so)
    a[:, :] = x[:50, :40]
    np.testing.assert_array_equal(sparsezarr.open_sparse(surl, mode="r", storage_options=so)[:, :].todense(), x[:50, :40].toarray())

    # convert: a local .h5ad to S3, and back from S3 to a local store (obs/var strings use
    # zarr's vlen-utf8 codec, which runs in Python: not strict here).
    adata = ad.AnnData(X=x)
    adata.write_h5ad(tmp_path / "in.h5ad")
    dst = f"s3://{s3.bucket}/{_prefix('url')}/converted.zarr"
    back = tmp_path / "back.zarr"
    with zarr.config.set({"codec_pipeline.strict": False}):
        sparsezarr.convert(tmp_path / "in.h5ad", dst, storage_options=so, progress=False)
        sparsezarr.convert(dst, back, storage_options=so, progress=False)
        np.testing.assert_array_equal(ad.read_zarr(back).X.toarray(), x.toarray())
    np.testing.assert_array_equal(sparsezarr.open_csr(dst, path="X", storage_options=so)[:].toarray(), x.toarray())


def test_virtual_components_in_different_stores(s3: S3Server, strict: None, tmp_path: Any, monkeypatch: Any) -> None:
    """One store per sample (arrays at the roots of their stores): local directories, S3 prefixes
    through obstore and s3fs, and sparse arrays; saved views reopen under ``allow``."""
    parts = [np.arange(i * 100, i * 100 + 60, dtype="int32").reshape(6, 10) for i in range(4)]
    want = np.concatenate(parts, axis=0)
    # The seed's first example: zarr.open_array("array1.zarr"), zarr.open_array("array2.zarr").
    local = []
    for i in range(2):
        a = zarr.create_array(LocalStore(tmp_path / f"array{i}.zarr"), shape=(6, 10), chunks=(3, 5), dtype="int32")
        a[:] = parts[i]
        local.append(zarr.open_array(str(tmp_path / f"array{i}.zarr"), mode="r"))
    np.testing.assert_array_equal(sparsezarr.concat(local)[:], want[:12])
    # Remote samples, one store each, plus a local one.
    stores = [_zarr_stores(s3, f"sample{i}")["obstore" if i % 2 else "s3fs"] for i in range(3)]
    arrays = []
    for i, st in enumerate(stores):
        a = zarr.create_array(st, shape=(6, 10), chunks=(3, 5), dtype="int32")
        a[:] = parts[i + 1]
        arrays.append(a)
    view = sparsezarr.concat([local[0], *arrays])
    np.testing.assert_array_equal(view[:], want)
    np.testing.assert_array_equal(view[5:20, 3:9], want[5:20, 3:9])
    np.testing.assert_array_equal(sparsezarr.stack([arrays[0], arrays[1]])[1], parts[2])
    # Sparse arrays, one store per sample.
    x = [sp.random(20, 30, density=0.2, format="csr", random_state=i, dtype="float32") for i in range(2)]
    sparse_parts = []
    for i in range(2):
        st = _zarr_stores(s3, f"sparse-sample{i}")["obstore"]
        sparsezarr.create_sparse(st, shape=(20, 30), dtype="float32", chunks=(10, 10))[:, :] = x[i]
        sparse_parts.append(sparsezarr.open_sparse(st, mode="r"))
    np.testing.assert_array_equal(sparsezarr.concat(sparse_parts).read().todense(), sp.vstack(x).toarray())
    # A view of S3-only components saved and reopened: allowed by prefix, read with the caller's
    # storage options (or the environment's credentials); refused without the allow-list.
    s3_only = sparsezarr.concat([arrays[0], arrays[2]])
    doc = s3_only.document
    urls = [c["url"] for c in doc["source"]["components"]]
    assert all(u.startswith(f"s3://{s3.bucket}/") for u in urls), urls
    reopened = sparsezarr.open_virtual(doc, root=tmp_path, allow=[f"s3://{s3.bucket}/"], storage_options=s3.storage_options())
    np.testing.assert_array_equal(reopened[:], np.concatenate([parts[1], parts[3]]))
    monkeypatch.setenv("AWS_ENDPOINT", s3.endpoint)
    monkeypatch.setenv("AWS_ALLOW_HTTP", "true")
    from_env = sparsezarr.open_virtual(doc, root=tmp_path, allow=[f"s3://{s3.bucket}/"])
    np.testing.assert_array_equal(from_env[:], np.concatenate([parts[1], parts[3]]))
    with pytest.raises(ValueError, match="allow-list"):
        sparsezarr.open_virtual(doc, root=tmp_path).read()
    with pytest.raises(ValueError, match="allow-list"):
        sparsezarr.open_virtual(doc, root=tmp_path, allow=[f"s3://{s3.bucket}/other"]).read()


def test_http_backend_reads_arrays(s3: S3Server, strict: None) -> None:
    """The HTTP backend (object_store's HttpStore) reads an array served over plain HTTP range
    GETs (moto serves the bucket's objects to unsigned GETs); listing and writes are not part of
    HTTP, so the store is read-only."""
    prefix = _prefix("http")
    data = np.arange(64 * 64, dtype="int16").reshape(64, 64)
    a = zarr.create_array(ObjectStore(s3.obstore(prefix=prefix)), shape=data.shape, chunks=(8, 8), shards=(32, 32), dtype="int16")
    a[:] = data
    import boto3

    client = boto3.client("s3", endpoint_url=s3.endpoint, region_name=s3.region)
    for obj in client.list_objects_v2(Bucket=s3.bucket, Prefix=f"{prefix}/")["Contents"]:
        client.put_object_acl(Bucket=s3.bucket, Key=obj["Key"], ACL="public-read")  # served to anyone over HTTP
    url = f"{s3.endpoint}/{s3.bucket}/{prefix}"
    raw = _lib.Store.object_url(url, {"allow_http": "true"}, read_only=True)
    assert raw.capabilities()["conditional_writes"] is False
    assert raw.read("zarr.json") is not None
    assert raw.read("c/0/0", suffix=16)[1] > 16
    store = FsspecStore.from_url(url, read_only=True)
    b = zarr.open_array(store, mode="r")
    np.testing.assert_array_equal(b[:], data)
    np.testing.assert_array_equal(b[5:40, 3:9], data[5:40, 3:9])


def test_gcs_and_azure_urls_build_clients() -> None:
    """No GCS or Azure server runs here: the builders are checked (configuration accepted,
    errors for what they refuse are clear ValueErrors)."""
    gcs = _lib.Store.object_url("gs://some-bucket/prefix", {"google_skip_signature": "true"}, read_only=True)
    assert gcs.kind == "object" and gcs.capabilities()["conditional_writes"] is True
    az = _lib.Store.object_url("az://container/prefix", {"azure_storage_account_name": "acct", "azure_skip_signature": "true"}, read_only=True)
    assert az.kind == "object"
    with pytest.raises(ValueError, match="unsupported scheme"):
        _lib.Store.object_url("ftp://host/x")
    with pytest.raises(ValueError, match="cannot open object store"):
        _lib.Store.object_url("s3://bucket/x", {"not_an_option": "1"})


def test_fsspec_storage_options_are_mapped_exactly() -> None:
    from sparsezarr._remote import _azure_options, _gcs_options, _s3_options

    got = _s3_options(
        {
            "key": "a",
            "secret": "b",
            "token": "t",
            "endpoint_url": "http://h:9000",
            "client_kwargs": {"region_name": "eu-west-1"},
            "config_kwargs": {"s3": {"addressing_style": "virtual"}},
            "requester_pays": True,
            "asynchronous": True,
        }
    )
    assert got == {
        "aws_access_key_id": "a",
        "aws_secret_access_key": "b",
        "aws_session_token": "t",
        "aws_endpoint": "http://h:9000",
        "aws_allow_http": "true",
        "aws_region": "eu-west-1",
        "aws_virtual_hosted_style_request": "true",
        "aws_request_payer": "true",
    }
    assert _s3_options({"anon": True}) == {"aws_skip_signature": "true"}
    assert "session" in str(_s3_options({"session": object()}))
    assert _gcs_options({"token": "anon", "project": "p"}) == {"google_skip_signature": "true"}
    assert _gcs_options({"token": "/path/key.json"}) == {"google_service_account": "/path/key.json"}
    assert "cannot be mapped" in str(_gcs_options({"token": {"client_email": "x"}}))
    assert _azure_options({"account_name": "acct", "sas_token": "s"}) == {"azure_storage_account_name": "acct", "azure_storage_sas_key": "s"}
    assert "connection_string" in str(_azure_options({"connection_string": "c"}))
