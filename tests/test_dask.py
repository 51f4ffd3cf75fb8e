"""Dask scale-out: handles that pickle and reopen, lazy dask arrays of CSR / sparse / virtual /
dense arrays, parallel writes from dask, and writers sharing shards that lose nothing.

Every result is compared with scipy / numpy / anndata on the same data, under dask's threaded
scheduler and under a real ``distributed.LocalCluster`` with two worker processes.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import zarr

import sparsezarr
from sparsezarr import _contention, _handles
from sparsezarr.dask import read_lazy, row_blocks, store, use_pipeline, zarr_to_dask

da = pytest.importorskip("dask.array")
dask = pytest.importorskip("dask")
distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def client():
    """Two worker processes with one thread each, as the issue's benchmarks use."""
    with (
        distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, memory_limit="3GiB") as cluster,
        distributed.Client(cluster) as c,
    ):
        yield c


@pytest.fixture(params=["threads", "cluster"])
def scheduler(request):
    """Run the body under dask's threaded scheduler, or under the cluster's client."""
    if request.param == "threads":
        with dask.config.set(scheduler="threads"):
            yield "threads"
    else:
        c = request.getfixturevalue("client")
        with dask.config.set(scheduler=c.get):
            yield "cluster"


def _matrix(n: int = 3000, m: int = 200, density: float = 0.05, seed: int = 0) -> sp.csr_array:
    rng = np.random.default_rng(seed)
    x = sp.random_array((n, m), density=density, format="csr", dtype=np.float32, rng=rng)
    x.data[:] = rng.integers(1, 50, x.nnz)
    lil = x.tolil()
    lil[100:140] = 0  # empty rows
    return sp.csr_array(lil)


def _chain(e: BaseException | None) -> str:
    """The messages of an exception and of every exception it was raised from or during."""
    seen = []
    while e is not None and e not in seen:
        seen.append(e)
        e = e.__cause__ or e.__context__
    return " | ".join(str(x) for x in seen)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------------------------------------
# Handles that travel
# ------------------------------------------------------------------------------------------------


def test_handles_pickle_small_and_reopen_once_per_process(tmp_path):
    m = _matrix()
    x = sparsezarr.write_csr(tmp_path / "m.zarr", m)
    s = sparsezarr.from_scipy(m, str(tmp_path / "s.zarr"), chunks=(512, 64))
    v = sparsezarr.concat([x, x])
    for h in (x, s, v):
        blob = pickle.dumps(h)
        assert len(blob) < 4000, (type(h).__name__, len(blob))  # a description, no index pointer or data
        assert b"indptr" not in blob or isinstance(h, sparsezarr.VirtualArray)
    x2, s2, v2 = (pickle.loads(pickle.dumps(h)) for h in (x, s, v))
    assert (x2[:] != m).nnz == 0
    assert (s2.to_scipy() != m).nnz == 0
    assert (v2.read() != sp.vstack([m, m])).nnz == 0
    # One opening per process: every copy of a handle shares its reader.
    assert pickle.loads(pickle.dumps(x)) is x2
    _handles.clear_cache()
    assert pickle.loads(pickle.dumps(x)) is not x2


def test_memory_store_is_refused_when_sent_to_another_process(client):
    m = _matrix(500, 40)
    mem = zarr.storage.MemoryStore()
    x = sparsezarr.write_csr(mem, m)
    with pytest.raises(TypeError, match="MemoryStore, which lives in this process only"):
        pickle.dumps(x)
    # the threaded scheduler shares the process: it works there
    with dask.config.set(scheduler="threads"):
        assert (x.to_dask(chunks=100).compute() != m).nnz == 0
    with dask.config.set(scheduler=client.get), pytest.raises(TypeError, match="MemoryStore, which lives in this process only"):
        x.to_dask(chunks=100)
    # built under the threaded scheduler, sent to the cluster: refused when pickled
    with dask.config.set(scheduler="threads"):
        d = x.to_dask(chunks=100)
    with pytest.raises(TypeError) as e:
        client.compute(d).result()
    assert "MemoryStore, which lives in this process only" in _chain(e.value)


# ------------------------------------------------------------------------------------------------
# Lazy dask arrays
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("chunks", [1, 333, 1000, 5000, "auto"])
def test_csr_to_dask_equals_scipy(tmp_path, scheduler, chunks):
    m = _matrix()
    x = sparsezarr.write_csr(tmp_path / "m.zarr", m, chunks=1024, shards=8192)
    if chunks == 1 and scheduler == "cluster":
        chunks = 97  # 3000 one-row tasks are slow on two processes, not wrong
    d = x.to_dask(chunks=chunks)
    assert isinstance(d._meta, sp.csr_matrix)
    got = d.compute()
    assert isinstance(got, sp.csr_matrix)
    assert (got != m).nnz == 0 and got.dtype == m.dtype
    # what scanpy does with it
    rows = np.array([5, 2999, 120, 0, 1500])
    assert np.allclose(d[rows].compute().toarray(), m[rows].toarray())
    assert np.allclose(da.map_blocks(lambda b: b.multiply(2.0), d, dtype=d.dtype).compute().toarray(), (m * 2).toarray())


def test_csr_to_dask_csr_array_output_and_csc(tmp_path, scheduler):
    m = _matrix(800, 150)
    x = sparsezarr.write_csr(tmp_path / "m.zarr", m)
    d = x.to_dask(chunks=250, output="array")
    assert isinstance(d._meta, sp.csr_array) and (d.compute() != m).nnz == 0
    c = sparsezarr.write_csc(tmp_path / "c.zarr", m)
    dc = c.to_dask(chunks=40)
    assert dc.chunks == ((800,), (40, 40, 40, 30))
    assert isinstance(dc._meta, sp.csc_matrix)
    assert (dc.compute() != m).nnz == 0


def test_default_blocks_hold_a_bounded_number_of_values(tmp_path):
    m = _matrix(4000, 300, density=0.1)
    x = sparsezarr.write_csr(tmp_path / "m.zarr", m)
    d = x.to_dask(block_values=10_000)
    starts = np.concatenate([[0], np.cumsum(d.chunks[0])])
    per_block = np.diff(m.indptr[starts])
    longest_row = np.diff(m.indptr).max()
    assert per_block.max() <= 10_000
    assert per_block[:-1].min() > 10_000 - longest_row  # a block ends only where the next row would not fit
    assert d.chunks[0] == row_blocks(m.indptr, 10_000)
    assert (d.compute(scheduler="threads") != m).nnz == 0


def test_graphs_stay_small_for_ten_million_rows(tmp_path):
    n = 10_000_000
    rows = np.array([0, 17, 4_000_000, n - 1])
    m = sp.csr_array((np.ones(4, np.float32), (rows, np.array([1, 2, 3, 4]))), shape=(n, 10))
    x = sparsezarr.write_csr(tmp_path / "big.zarr", m)
    d = x.to_dask()
    graph = pickle.dumps(dict(d.__dask_graph__()))
    assert len(d.chunks[0]) == 10  # at most 2**20 rows per block
    assert len(graph) < 20_000, len(graph)  # 80 MB of indptr stays out of it
    got = d[rows].compute(scheduler="threads")
    assert np.array_equal(got.toarray(), m[rows].toarray())


def test_sparse_array_to_dask(tmp_path, scheduler):
    import sparse

    m = _matrix(1500, 300)
    s = sparsezarr.from_scipy(m, str(tmp_path / "s.zarr"), chunks=(128, 64), shards=(512, 128))
    d = s.to_dask()
    assert all(c % 512 == 0 for c in d.chunks[0][:-1]) and all(c % 128 == 0 for c in d.chunks[1][:-1])
    assert isinstance(d._meta, sparse.COO)
    assert (d.compute().to_scipy_sparse() != m).nnz == 0
    d2 = s.to_dask(chunks=(400, 300), output="csr_matrix")
    assert isinstance(d2._meta, sp.csr_matrix) and (d2.compute() != m).nnz == 0
    # 3-d
    rng = np.random.default_rng(1)
    dense = rng.integers(0, 3, (40, 30, 20)).astype(np.int16) * (rng.random((40, 30, 20)) < 0.1)
    s3 = sparsezarr.from_numpy(dense, str(tmp_path / "s3.zarr"), chunks=(8, 8, 8), shards=(16, 16, 8))
    assert np.array_equal(s3.to_dask(chunks=(16, 30, 8)).compute().todense(), dense)
    assert np.array_equal(s3.to_dask().sum(axis=0).compute().todense(), dense.sum(axis=0))


def test_virtual_array_to_dask(tmp_path, scheduler):
    import sparse

    m = _matrix(600, 80)
    a = sparsezarr.write_csr(tmp_path / "a.zarr", m)
    b = sparsezarr.write_csr(tmp_path / "b.zarr", m[::-1])
    v = sparsezarr.concat([a, b])
    dv = v.to_dask(chunks=250)
    assert isinstance(dv._meta, sp.csr_matrix) and (dv.compute() != sp.vstack([m, m[::-1]])).nnz == 0
    dense = np.arange(60 * 50, dtype=np.float64).reshape(60, 50)
    z1 = zarr.create_array(str(tmp_path / "d1.zarr"), data=dense, chunks=(16, 16))
    z2 = zarr.create_array(str(tmp_path / "d2.zarr"), data=-dense, chunks=(16, 16))
    dd = sparsezarr.stack([z1, z2], axis=1)[:, :, ::2].to_dask(chunks=(25, 2, 10))
    assert np.array_equal(dd.compute(), np.stack([dense, -dense], axis=1)[:, :, ::2])
    s1 = sparsezarr.from_scipy(m, str(tmp_path / "s1.zarr"), chunks=(128, 32))
    ds = sparsezarr.concat([s1, s1], axis=1).to_dask()
    assert isinstance(ds._meta, sparse.COO)
    assert (ds.compute().to_scipy_sparse() != sp.hstack([m, m])).nnz == 0


def test_zarr_to_dask_uses_the_clients_pipeline(tmp_path, scheduler):
    dense = np.random.default_rng(2).random((300, 70))
    z = zarr.create_array(str(tmp_path / "z.zarr"), data=dense, chunks=(32, 32), shards=(64, 64))
    d = zarr_to_dask(z)
    assert all(c % 64 == 0 for c in d.chunks[0][:-1])
    assert np.array_equal(d.compute(), dense)


def test_read_lazy_matches_anndata(tmp_path, scheduler):
    import anndata as ad
    import pandas as pd

    m = _matrix(1200, 90)
    obs = pd.DataFrame(
        {"cell_type": pd.Categorical(np.array(["a", "b", "c"])[np.arange(1200) % 3]), "n": np.arange(1200)}, index=[f"c{i}" for i in range(1200)]
    )
    var = pd.DataFrame({"gene": [f"g{i}" for i in range(90)]}, index=[f"g{i}" for i in range(90)])
    adata = ad.AnnData(X=sp.csr_matrix(m), obs=obs, var=var, layers={"counts": sp.csr_matrix(m * 2)}, obsm={"X_pca": np.ones((1200, 3))})
    adata.write_zarr(tmp_path / "a.zarr")
    lazy = read_lazy(tmp_path / "a.zarr", chunks=400)
    assert isinstance(lazy.X, da.Array) and isinstance(lazy.X._meta, sp.csr_matrix)
    assert isinstance(lazy.layers["counts"], da.Array)
    pd.testing.assert_frame_equal(lazy.obs, adata.obs)
    pd.testing.assert_frame_equal(lazy.var, adata.var)
    assert np.array_equal(lazy.obsm["X_pca"], adata.obsm["X_pca"])
    assert (lazy.X.compute() != adata.X).nnz == 0
    assert (lazy.layers["counts"].compute() != adata.layers["counts"]).nnz == 0
    sub = lazy[lazy.obs["cell_type"] == "b"]
    assert (sub.X.compute() != adata[adata.obs["cell_type"] == "b"].X).nnz == 0


def test_pipeline_plugin_sets_workers_config(client):
    with zarr.config.set({"codec_pipeline.path": "sparsezarr.Pipeline", "codec_pipeline.coalesce_max_gap_bytes": 12345}):
        use_pipeline(client)
    got = client.run(lambda: (zarr.config.get("codec_pipeline.path"), zarr.config.get("codec_pipeline.coalesce_max_gap_bytes")))
    assert set(got.values()) == {("sparsezarr.Pipeline", 12345)}


# ------------------------------------------------------------------------------------------------
# Parallel writes
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("block_rows", [1, 7, 100, 450, 1200])
def test_dask_write_csr_is_byte_identical_to_the_serial_write(tmp_path, scheduler, block_rows):
    import anndata as ad

    m = _matrix(1200)
    if block_rows == 1 and scheduler == "cluster":
        block_rows = 13  # 1200 one-row tasks are slow on two processes, not wrong
    serial = tmp_path / "serial.zarr"
    parallel = tmp_path / "parallel.zarr"
    # small shards, so that blocks share shards of data, indices and indptr
    kw = {"chunks": 256, "shards": 1024}
    sparsezarr.write_csr(serial, m, **kw)
    d = da.from_array(sp.csr_matrix(m), chunks=(block_rows, 200), asarray=False)
    assert len(d.chunks[0]) > 1 or block_rows == 1200
    out = sparsezarr.write_csr(parallel, d, **kw)
    assert (out[:] != m).nnz == 0
    a, b = _files(serial), _files(parallel)
    assert sorted(a) == sorted(b)
    assert [k for k in a if a[k] != b[k]] == []
    assert (ad.io.read_elem(zarr.open_group(parallel, mode="r")) != m).nnz == 0


def test_dask_write_csc_and_overwrite_from_a_stored_matrix(tmp_path, scheduler):
    m = _matrix(900, 120)
    src = sparsezarr.write_csr(tmp_path / "src.zarr", m)
    sparsezarr.write_csc(tmp_path / "ref.zarr", m, chunks=128, shards=512)
    col_blocks = da.from_array(sp.csc_matrix(m), chunks=(900, 17), asarray=False)
    sparsezarr.write_csc(tmp_path / "c.zarr", col_blocks, chunks=128, shards=512)
    assert _files(tmp_path / "ref.zarr") == _files(tmp_path / "c.zarr")
    # a store read as it is: block sizes come from its indptr (no counting pass); same bytes
    from sparsezarr.dask import stored_counts

    direct = src.to_dask(chunks=64)
    assert stored_counts(direct, "csr").tolist() == [m[i : i + 64].nnz for i in range(0, 900, 64)]
    assert stored_counts(direct * 2, "csr") is None and stored_counts(direct[:100], "csr") is None
    sparsezarr.write_csr(tmp_path / "ref-csr.zarr", m, chunks=128, shards=512)
    sparsezarr.write_csr(tmp_path / "copy.zarr", direct, chunks=128, shards=512)
    assert _files(tmp_path / "ref-csr.zarr") == _files(tmp_path / "copy.zarr")
    # replace an existing group from another store's dask array (with row blocks of 64)
    target = tmp_path / "t.zarr"
    sparsezarr.write_csr(target, sp.eye(5, format="csr"))
    out = sparsezarr.write_csr(target, src.to_dask(chunks=64) * 2, overwrite=True)
    assert (out[:] != m * 2).nnz == 0
    with pytest.raises(FileExistsError):
        sparsezarr.write_csr(target, src.to_dask(chunks=64))


def test_append_rows_takes_a_dask_array(tmp_path):
    m = _matrix(500, 60)
    sparsezarr.write_csr(tmp_path / "a.zarr", m[:100])
    with dask.config.set(scheduler="threads"):
        out = sparsezarr.append_rows(tmp_path / "a.zarr", da.from_array(sp.csr_matrix(m[100:]), chunks=(70, 20), asarray=False))
    assert (out[:] != m).nnz == 0
    sparsezarr.write_csc(tmp_path / "c.zarr", m[:, :10])
    with dask.config.set(scheduler="threads"):
        out = sparsezarr.append_rows(tmp_path / "c.zarr", da.from_array(sp.csc_matrix(m[:, 10:]), chunks=(100, 15), asarray=False))
    assert (out[:] != m).nnz == 0


def test_dask_write_failure_leaves_nothing(tmp_path):
    m = _matrix(300, 20)

    def bad(block, block_info=None):
        if block_info[0]["chunk-location"][0] == 2:
            raise RuntimeError("boom")
        return block

    d = da.from_array(sp.csr_matrix(m), chunks=(50, 20), asarray=False).map_blocks(bad, dtype=np.float32)
    with pytest.raises(RuntimeError, match="boom"), dask.config.set(scheduler="threads"):
        sparsezarr.write_csr(tmp_path / "x.zarr", d)
    assert not (tmp_path / "x.zarr" / "data").exists()


@pytest.mark.parametrize("kind", ["sparse", "dense"])
def test_store_aligns_blocks_to_shards(tmp_path, scheduler, kind):
    m = _matrix(1000, 96)
    if kind == "sparse":
        target = sparsezarr.create_sparse(str(tmp_path / "s.zarr"), shape=m.shape, dtype="float32", chunks=(64, 32), shards=(128, 96))
        x = da.from_array(sp.csr_matrix(m), chunks=(70, 96), asarray=False)
    else:
        target = zarr.create_array(str(tmp_path / "d.zarr"), shape=m.shape, dtype="float32", chunks=(64, 32), shards=(128, 96))
        x = da.from_array(m.toarray(), chunks=(70, 50))
    with pytest.raises(ValueError, match=r"shards of \(128, 96\)"):
        store(x, target, align="raise")
    assert store(x, target) > 0
    got = target.to_scipy() if kind == "sparse" else sp.csr_array(target[:])
    assert (got != m).nnz == 0


def test_store_refuses_a_memory_store_on_the_cluster(client):
    target = zarr.create_array(zarr.storage.MemoryStore(), shape=(100, 10), dtype="float32", chunks=(10, 10))
    x = da.ones((100, 10), chunks=(10, 10), dtype="float32")
    with dask.config.set(scheduler=client.get), pytest.raises(TypeError, match="MemoryStore"):
        store(x, target)
    with dask.config.set(scheduler="threads"):
        store(x, target)
    assert np.array_equal(target[:], np.ones((100, 10)))


# ------------------------------------------------------------------------------------------------
# Writers sharing shards
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["dense", "sparse", "append"])
@pytest.mark.parametrize("threads", [False, True], ids=["processes", "threads"])
def test_writers_sharing_shards_lose_nothing(tmp_path, kind, threads):
    rows = 256 if kind == "append" else 1024  # appends are one transaction each: fewer of them
    s = _contention.Scenario(kind, str(tmp_path / "a.zarr"), writers=4, rows=rows)
    assert _contention.run(s, threads=threads) == 0


def test_the_shared_shard_scenario_finds_lost_writes(tmp_path):
    """zarr's own pipeline loses writes in the same scenario: the scenario can fail."""
    s = _contention.Scenario("dense", str(tmp_path / "a.zarr"), pipeline="zarr.core.codec_pipeline.BatchedCodecPipeline")
    assert _contention.run(s, threads=True) > 0


# ------------------------------------------------------------------------------------------------
# scanpy on read_lazy
# ------------------------------------------------------------------------------------------------


def test_scanpy_on_read_lazy_matches_memory(tmp_path, client):
    sc = pytest.importorskip("scanpy")
    import anndata as ad

    rng = np.random.default_rng(7)
    n, g = 6000, 600
    # counts with gene-specific rates (so HVG has something to find)
    rates = rng.gamma(0.3, 2.0, g)
    counts = rng.poisson(rates[None, :] * rng.gamma(2.0, 0.5, n)[:, None]).astype(np.float32)
    m = sp.csr_matrix(counts)
    mem = ad.AnnData(X=m.copy())
    mem.obs_names = [f"c{i}" for i in range(n)]
    mem.var_names = [f"g{i}" for i in range(g)]
    mem.write_zarr(tmp_path / "a.zarr")
    sparsezarr.write_csr(tmp_path / "a.zarr", m, path="X", overwrite=True)  # our layout under anndata's obs/var

    lazy = read_lazy(tmp_path / "a.zarr", chunks=1000)
    with dask.config.set(scheduler=client.get):
        for a in (mem, lazy):
            sc.pp.normalize_total(a, target_sum=1e4)
            sc.pp.log1p(a)
            sc.pp.highly_variable_genes(a, n_top_genes=200)
        assert np.array_equal(lazy.var["highly_variable"].to_numpy(), mem.var["highly_variable"].to_numpy())
        for a in (mem, lazy):
            sc.pp.pca(a, n_comps=20, svd_solver="covariance_eigh", mask_var="highly_variable")
    lazy_pcs = np.asarray(lazy.varm["PCs"])
    assert np.allclose(lazy.uns["pca"]["variance_ratio"], mem.uns["pca"]["variance_ratio"], atol=1e-5)
    hv = mem.var["highly_variable"].to_numpy()
    for k in range(20):
        corr = np.corrcoef(lazy_pcs[hv, k], mem.varm["PCs"][hv, k])[0, 1]
        assert abs(corr) > 0.9999, (k, corr)


def test_env_has_no_leftover_staging(tmp_path):
    """Parallel writes stage replacements next to the target and leave nothing behind."""
    m = _matrix(200, 10)
    target = tmp_path / "t.zarr"
    sparsezarr.write_csr(target, m)
    with dask.config.set(scheduler="threads"):
        sparsezarr.write_csr(target, da.from_array(sp.csr_matrix(m), chunks=(30, 10), asarray=False), overwrite=True)
    assert sorted(os.listdir(tmp_path)) == ["t.zarr"]
