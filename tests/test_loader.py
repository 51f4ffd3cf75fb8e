"""The minibatch loader (issue 4): block-shuffled epochs that cover every row once, batches that
equal the in-memory rows they name, reproducible seeds, obs columns, subsets."""

from __future__ import annotations

import threading

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import sparsezarr

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    rng = np.random.default_rng(0)
    x = sp.random_array((5003, 300), density=0.05, format="csr", dtype=np.float32, rng=rng)
    obs = pd.DataFrame(
        {"label": pd.Categorical(rng.choice(["t", "b", "nk"], 5003)), "depth": rng.random(5003)}, index=[f"cell{i}" for i in range(5003)]
    )
    path = tmp_path_factory.mktemp("loader") / "a.zarr"
    with ad.settings.override(zarr_write_format=3):
        ad.AnnData(X=sp.csr_matrix(x), obs=obs).write_zarr(path)
    return path, x, obs


@pytest.mark.parametrize("prefetch", [0, 2])
def test_epoch_covers_every_row_once(store, prefetch):
    path, x, obs = store
    loader = sparsezarr.Loader(path, batch_size=512, block_size=32, obs=["label"], seed=7, prefetch=prefetch)
    assert len(loader) == 10
    seen = []
    for i, b in enumerate(loader):
        assert b.X.shape == (len(b.index), 300)
        assert (x[b.index] != b.X).nnz == 0
        assert list(b.obs["label"]) == list(obs["label"].iloc[b.index])
        assert len(b.index) == (512 if i < 9 else 5003 - 9 * 512)
        seen.append(b.index)
    rows = np.concatenate(seen)
    assert np.array_equal(np.sort(rows), np.arange(5003))
    assert not np.array_equal(rows, np.arange(5003)), "rows must be shuffled"


def test_seeds_epochs_and_order(store):
    path, _, _ = store
    a = [b.index for b in sparsezarr.Loader(path, batch_size=1000, seed=3)]
    b = [b.index for b in sparsezarr.Loader(path, batch_size=1000, seed=3)]
    assert all(np.array_equal(p, q) for p, q in zip(a, b, strict=True))
    loader = sparsezarr.Loader(path, batch_size=1000, seed=3)
    e1 = np.concatenate([b.index for b in loader])
    e2 = np.concatenate([b.index for b in loader])
    assert not np.array_equal(e1, e2) and np.array_equal(np.sort(e1), np.sort(e2))
    ordered = np.concatenate([b.index for b in sparsezarr.Loader(path, batch_size=700, shuffle=False)])
    assert np.array_equal(ordered, np.arange(5003))
    # block shuffling: a fetch of one 64-row block yields that block's rows (a short last block's
    # rows are carried into the next batch, so a batch spans at most two blocks)
    loader = sparsezarr.Loader(path, batch_size=64, block_size=64, fetch_blocks=1, seed=1)
    assert max(len(np.unique(b.index // 64)) for b in loader) <= 2
    aligned = sparsezarr.Loader(path, batch_size=64, block_size=64, fetch_blocks=1, seed=1, rows=np.arange(64 * 78))
    assert all(len(np.unique(b.index // 64)) == 1 for b in aligned)


def test_subset_drop_last_and_outputs(store):
    path, _, _ = store
    train = np.random.default_rng(1).random(5003) < 0.7
    loader = sparsezarr.Loader(path, batch_size=256, rows=train, drop_last=True, seed=0, output="matrix")
    got = list(loader)
    assert all(b.X.shape[0] == 256 and isinstance(b.X, sp.csr_matrix) for b in got)
    rows = np.concatenate([b.index for b in got])
    assert set(rows) <= set(np.flatnonzero(train)) and len(rows) == (train.sum() // 256) * 256
    with pytest.raises(IndexError):
        sparsezarr.Loader(path, rows=[0, 6000])
    with pytest.raises(KeyError, match="nope"):
        sparsezarr.Loader(path, obs=["nope"])


def test_early_break_stops_the_prefetch_thread(store):
    path, _, _ = store
    before = threading.active_count()
    for _ in range(3):
        for i, _b in enumerate(sparsezarr.Loader(path, batch_size=100, seed=0, prefetch=3)):
            if i == 2:
                break
    import gc
    import time

    gc.collect()
    for _ in range(50):
        if threading.active_count() <= before:
            break
        time.sleep(0.05)
    assert threading.active_count() <= before


def test_loader_on_a_bare_csr_store(tmp_path):
    x = sp.random_array((1000, 40), density=0.1, format="csr", dtype=np.float32, rng=np.random.default_rng(4))
    sparsezarr.write_csr(tmp_path / "x.zarr", x, chunks=64)
    total = 0
    for b in sparsezarr.Loader(tmp_path / "x.zarr", batch_size=128, seed=2):
        assert (x[b.index] != b.X).nnz == 0
        total += len(b.index)
    assert total == 1000
