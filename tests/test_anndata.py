"""anndata's own ``write_zarr`` / ``read_zarr`` running through sparsezarr.Pipeline.

For each zarr format anndata writes (v2; v3 with one chunk per array; v3 auto-sharded), an AnnData
with sparse and dense matrices, data frames of every common column type and nested ``uns`` is
written once with zarr's default pipeline and once with ours, and each store is read back with
both pipelines: all four reads must equal the in-memory original (and so each other). The
numeric arrays really run in Rust (counted), string columns go through zarr's pipeline by design.
Runs against whatever anndata is installed (0.12 on Python 3.11, 0.13 on 3.13 in .ci/run).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import zarr

from _helpers import OURS, ZARR_DEFAULT, use_pipeline
from sparsezarr.pipeline import STATS

ad = pytest.importorskip("anndata")

FORMATS = {
    "v2": {"zarr_write_format": 2},
    "v3": {"zarr_write_format": 3, "auto_shard_zarr_v3": False},
    "v3-sharded": {"zarr_write_format": 3, "auto_shard_zarr_v3": True},
}


@pytest.fixture(scope="module")
def adata():
    rng = np.random.default_rng(11)
    n_obs, n_var = 3000, 700
    counts = sp.random(n_obs, n_var, density=0.08, format="csr", dtype="float32", random_state=rng)
    counts.data = rng.poisson(3, counts.nnz).astype("float32") + 1
    obs = pd.DataFrame(
        {
            "cell_type": pd.Categorical(rng.choice(["T", "B", "NK", "Mono"], n_obs)),
            "n_genes": np.diff(counts.indptr).astype("int64"),
            "total": np.asarray(counts.sum(axis=1)).ravel().astype("float64"),
            "is_doublet": rng.random(n_obs) < 0.05,
            "batch": rng.choice(["a", "b", "c"], n_obs),
        },
        index=[f"cell{i}" for i in range(n_obs)],
    )
    var = pd.DataFrame(
        {"highly_variable": rng.random(n_var) < 0.2, "mean": rng.random(n_var)},
        index=[f"gene{j}" for j in range(n_var)],
    )
    return ad.AnnData(
        X=counts,
        obs=obs,
        var=var,
        layers={"dense": counts[:, :50].toarray().astype("float64").repeat(14, axis=1), "csc": counts.tocsc()},
        obsm={"X_pca": rng.standard_normal((n_obs, 20)).astype("float32")},
        varm={"loadings": rng.standard_normal((n_var, 20))},
        uns={"params": {"n_pcs": 20, "method": "arpack"}, "colors": np.array(["#ff0000", "#00ff00"]), "weights": np.arange(5.0)},
    )


def _same_matrix(a, b) -> None:
    if sp.issparse(a) or sp.issparse(b):
        assert sp.issparse(a) and sp.issparse(b), (type(a), type(b))
        assert a.shape == b.shape and a.format == b.format
        assert (sp.csr_array(a) != sp.csr_array(b)).nnz == 0
    else:
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def _assert_same(got, want) -> None:
    _same_matrix(got.X, want.X)
    for k in want.layers:
        _same_matrix(got.layers[k], want.layers[k])
    for k in want.obsm:
        _same_matrix(got.obsm[k], want.obsm[k])
    for k in want.varm:
        _same_matrix(got.varm[k], want.varm[k])
    pd.testing.assert_frame_equal(got.obs, want.obs)
    pd.testing.assert_frame_equal(got.var, want.var)
    assert got.uns["params"] == want.uns["params"]
    np.testing.assert_array_equal(got.uns["colors"], want.uns["colors"])
    np.testing.assert_array_equal(got.uns["weights"], want.uns["weights"])


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_write_zarr_and_read_zarr_through_our_pipeline_equal_zarrs(tmp_path, adata, fmt):
    stores = {}
    for name, path in (("zarr", ZARR_DEFAULT), ("ours", OURS)):
        stores[name] = tmp_path / f"{name}.zarr"
        before = STATS["write.rust.local"]
        with use_pipeline(path), ad.settings.override(**FORMATS[fmt]):
            adata.write_zarr(stores[name])
        if name == "ours":
            assert STATS["write.rust.local"] > before, "no array was written in Rust"
    if fmt == "v3-sharded":
        x = zarr.open_group(stores["ours"], mode="r")["X/data"]
        assert x.shards is not None, "anndata did not shard: the case would not test sharding"
    for name, store in stores.items():
        for reader, path in (("zarr", ZARR_DEFAULT), ("ours", OURS)):
            before = STATS["read.rust.local"]
            with use_pipeline(path):
                got = ad.read_zarr(store)
            if reader == "ours":
                assert STATS["read.rust.local"] > before, "no array was read in Rust"
            try:
                _assert_same(got, adata)
            except AssertionError as e:
                raise AssertionError(f"store written by {name}, read by {reader} ({fmt}): {e}") from e


def test_sparse_dataset_row_reads_match(tmp_path, adata):
    """anndata's backed sparse dataset (what its lazy and loader paths use) reads the same rows
    through our pipeline as through zarr's, from a sharded v3 store."""
    with ad.settings.override(**FORMATS["v3-sharded"]):
        adata.write_zarr(tmp_path / "s.zarr")
    rows = np.sort(np.random.default_rng(5).choice(adata.n_obs, 400, replace=False))
    out = {}
    for name, path in (("zarr", ZARR_DEFAULT), ("ours", OURS)):
        with use_pipeline(path):
            ds = ad.io.sparse_dataset(zarr.open_group(tmp_path / "s.zarr", mode="r")["X"])
            out[name] = (ds[rows], ds[100:1900])
    for i in range(2):
        _same_matrix(out["ours"][i], out["zarr"][i])
    _same_matrix(out["ours"][0], adata.X[rows])
