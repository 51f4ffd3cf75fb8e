"""Single-cell stores (issue 4): sparsezarr against anndata with the ``zarrs`` pipeline and with
zarr-python's own pipeline, in the same run, on the same matrix and stores; the minibatch loader
against ``annbatch``.

Run::

    python benches/report.py singlecell

Matrix: 100,000 cells x 20,000 genes, float32 counts, 137.9M non-zeros (1.1 GB as CSR), row
lengths, gene detection rates and values sampled from the real 10x data (``benches/_data.py``).

Stores (``X`` of an AnnData-style group, in a LocalStore):

* ``ours``: written by ``sparsezarr.write_csr`` with its defaults (inner chunks of 8192 values in
  shards of 4M values; Blosc zstd level 1 with byte shuffle);
* ``anndata's``: written by anndata 0.12.19 itself (zarr v3, ``auto_shard_zarr_v3=True``, as anndata
  recommends: one shard per array, inner chunks of ~135k values, zstd), with the ``zarrs`` pipeline.

Cases: bulk write of the in-memory matrix; streaming conversion of an ``.h5ad`` of it; 1000 random
rows; 16 runs of 64 consecutive rows; a contiguous 10,000-row slice; the full matrix; 100 random
genes (columns) of all cells; loader throughput (cells/s) for batches of 4096 cells made of 64-row
blocks, 256 blocks per fetch (annbatch: ``chunk_size=64, preload_nchunks=256``), and of 512-row
blocks, 32 per fetch (annbatch's defaults). Every read is checked against scipy on the in-memory
matrix.

``annbatch`` (installed by the ``bench`` extra) needs Python >= 3.12: run the suite in a Python 3.12
or 3.13 environment to get its rows; elsewhere they are skipped with that reason.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import zarr

sys.path.insert(0, str(Path(__file__).resolve().parent))
import sparsezarr
from _data import cell_matrix

PIPELINES = {"anndata+zarrs": "zarrs.ZarrsCodecPipeline", "anndata+zarr": "zarr.core.codec_pipeline.BatchedCodecPipeline"}
ZARRS = PIPELINES["anndata+zarrs"]
TOOLS = ["sparsezarr", *PIPELINES]
STORES = ["ours", "anndata's"]

warnings.filterwarnings("ignore", category=UserWarning)
warnings.filterwarnings("ignore", category=FutureWarning)


@pytest.fixture(scope="module")
def matrix() -> sp.csr_array:
    return cell_matrix()


@pytest.fixture(scope="module")
def workdir():
    d = Path(tempfile.mkdtemp(prefix="sparsezarr-sc-bench-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def payload(m) -> int:
    return m.data.nbytes + m.indices.nbytes + m.indptr.nbytes


def du(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def write_ours(m, path):
    sparsezarr.write_csr(path, m, path="X", overwrite=True)


def write_anndata(m, path, pipeline="zarrs.ZarrsCodecPipeline"):
    import anndata as ad

    ad.settings.zarr_write_format = 3
    ad.settings.auto_shard_zarr_v3 = True
    try:
        with zarr.config.set({"codec_pipeline.path": pipeline}):
            g = zarr.open_group(path, mode="w")
            ad.io.write_elem(g, "X", m)
    finally:
        ad.settings.zarr_write_format = 2
        ad.settings.auto_shard_zarr_v3 = None


@pytest.fixture(scope="module")
def stores(matrix, workdir):
    paths = {"ours": workdir / "ours.zarr", "anndata's": workdir / "anndata.zarr"}
    write_ours(matrix, paths["ours"])
    write_anndata(matrix, paths["anndata's"])
    return paths


def _fresh(path: Path):
    def setup():
        shutil.rmtree(path, ignore_errors=True)
        os.sync()
        return (), {}

    return setup


# ------------------------------------------------------------------------------------------------
# Writes
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("tool", TOOLS)
def test_bulk_write(benchmark, matrix, workdir, tool):
    path = workdir / f"write-{tool}.zarr"
    if tool == "sparsezarr":
        run = lambda: write_ours(matrix, path)  # noqa: E731
    else:
        run = lambda: write_anndata(matrix, path, PIPELINES[tool])  # noqa: E731
    benchmark.pedantic(run, setup=_fresh(path), rounds=3 if tool != "anndata+zarr" else 2)
    benchmark.extra_info.update(case="bulk write", pipeline=tool, bytes=payload(matrix))
    benchmark.extra_info["stored"] = du(path)
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def h5ad(matrix, workdir):
    import anndata as ad

    path = workdir / "cells.h5ad"
    ad.AnnData(X=sp.csr_matrix(matrix)).write_h5ad(path)
    return path


@pytest.mark.parametrize("tool", TOOLS)
def test_h5ad_conversion(benchmark, matrix, h5ad, workdir, tool):
    """sparsezarr converts block by block; anndata reads the whole file and writes it."""
    import anndata as ad

    path = workdir / f"convert-{tool}.zarr"
    if tool == "sparsezarr":
        run = lambda: sparsezarr.convert(h5ad, path, progress=False)  # noqa: E731
    else:

        def run():
            ad.settings.zarr_write_format = 3
            ad.settings.auto_shard_zarr_v3 = True
            try:
                with zarr.config.set({"codec_pipeline.path": PIPELINES[tool]}):
                    ad.read_h5ad(h5ad).write_zarr(path)
            finally:
                ad.settings.zarr_write_format = 2
                ad.settings.auto_shard_zarr_v3 = None

    benchmark.pedantic(run, setup=_fresh(path), rounds=2 if tool == "sparsezarr" else 1)
    benchmark.extra_info.update(case="h5ad -> zarr conversion", pipeline=tool, bytes=payload(matrix))
    shutil.rmtree(path, ignore_errors=True)


def test_storage(benchmark, matrix, stores):
    benchmark.pedantic(lambda: None, rounds=1)
    benchmark.extra_info.update(case="storage", pipeline="sparsezarr", stored_bytes=du(stores["ours"]), label="ours (sparsezarr defaults)")


def test_storage_anndata(benchmark, stores):
    benchmark.pedantic(lambda: None, rounds=1)
    benchmark.extra_info.update(case="storage", pipeline="anndata", stored_bytes=du(stores["anndata's"]), label="anndata's (auto-sharded, zstd)")


# ------------------------------------------------------------------------------------------------
# Reads
# ------------------------------------------------------------------------------------------------

RNG = np.random.default_rng(11)
ROWS = RNG.choice(100_000, 1000, replace=False)
RUNS = np.concatenate([np.arange(s, s + 64) for s in np.sort(RNG.choice(100_000 // 64, 16, replace=False) * 64)])
GENES = np.sort(RNG.choice(20_000, 100, replace=False))
OPS = {
    "1000 random rows": (lambda x: x[ROWS], lambda m: m[ROWS]),
    "16 runs of 64 rows": (lambda x: x[RUNS], lambda m: m[RUNS]),
    "10,000-row slice": (lambda x: x[40_000:50_000], lambda m: m[40_000:50_000]),
    "full read": (None, lambda m: m),
    "100 random genes": (lambda x: x[:, GENES], lambda m: m[:, GENES]),
}


def _reader(tool, path):
    if tool == "sparsezarr":
        x = sparsezarr.open_csr(path, path="X")
        return x, (lambda: x.to_memory())
    import anndata as ad

    zarr.config.set({"codec_pipeline.path": PIPELINES[tool]})
    ds = ad.io.sparse_dataset(zarr.open_group(path, mode="r")["X"])
    return ds, (lambda: ds.to_memory())


@pytest.mark.parametrize("op", list(OPS))
@pytest.mark.parametrize("store", STORES)
@pytest.mark.parametrize("tool", TOOLS)
def test_read(benchmark, matrix, stores, tool, store, op):
    x, full = _reader(tool, stores[store])
    fn, ref = OPS[op]
    run = full if fn is None else (lambda: fn(x))
    slow = tool != "sparsezarr" and op in ("1000 random rows", "full read", "100 random genes")
    try:
        out = benchmark.pedantic(run, rounds=2 if slow else 5, warmup_rounds=0 if slow else 1)
    finally:
        zarr.config.reset()
    assert (sp.csr_array(out) != sp.csr_array(ref(matrix))).nnz == 0
    benchmark.extra_info.update(case=f"{op} ({store} store)", pipeline=tool, bytes=0)


# ------------------------------------------------------------------------------------------------
# Loader throughput
# ------------------------------------------------------------------------------------------------

LOADER_CONFIGS = {"64-row blocks, 256 per fetch": (64, 256), "512-row blocks, 32 per fetch": (512, 32)}
BATCH = 4096


@pytest.mark.parametrize("config", list(LOADER_CONFIGS))
@pytest.mark.parametrize("tool", ["sparsezarr", "annbatch"])
def test_loader(benchmark, matrix, stores, tool, config):
    block, fetch = LOADER_CONFIGS[config]
    path = stores["ours"]
    if tool == "annbatch":
        annbatch = pytest.importorskip("annbatch", reason="annbatch needs Python >= 3.12: run this suite there (pip install '.[bench]')")
        import anndata as ad

        # annbatch as its README sets it up: the zarrs pipeline (selected for the whole epoch, as
        # annbatch opens arrays while it loads), anndata's sparse dataset.
        with zarr.config.set({"codec_pipeline.path": ZARRS}):
            ds = ad.io.sparse_dataset(zarr.open_group(path, mode="r")["X"])
            loader = annbatch.Loader(
                batch_size=BATCH, chunk_size=block, preload_nchunks=fetch, shuffle=True, preload_to_gpu=False, rng=np.random.default_rng(0)
            ).add_dataset(ds)

            def annbatch_epoch():
                n = 0
                for b in loader:
                    n += b["X"].shape[0]
                return n

            n = benchmark.pedantic(annbatch_epoch, rounds=3)
        assert n == matrix.shape[0]
        benchmark.extra_info.update(case=f"loader epoch: {config}", pipeline=tool, cells=n)
        return
    loader = sparsezarr.Loader(path / "X", batch_size=BATCH, block_size=block, fetch_blocks=fetch, seed=0)

    def epoch():
        n = 0
        for b in loader:
            n += b.X.shape[0]
        return n

    n = benchmark.pedantic(epoch, rounds=3)
    assert n == matrix.shape[0]
    benchmark.extra_info.update(case=f"loader epoch: {config}", pipeline=tool, cells=n)
