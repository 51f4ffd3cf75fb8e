"""``sparsezarr convert`` (issue 4): every input kind becomes an AnnData Zarr store that
``anndata.read_zarr`` opens and that equals the source, checked against independent readers
(scipy.io.mmread, anndata.read_h5ad, h5py)."""

from __future__ import annotations

import gzip
import shutil
import subprocess
import sys
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import pytest
import scipy.io
import scipy.sparse as sp
import zarr

import sparsezarr
from _helpers import require_data
from sparsezarr.convert import detect_source

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")


def same(a, b) -> bool:
    a, b = sp.csr_array(a), sp.csr_array(b)
    return a.shape == b.shape and (a != b).nnz == 0


def read_tsv(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, sep="\t", header=None, dtype=str)


@pytest.mark.parametrize("name", ["10x_mouse_neurons_10k", "10x_v3_small"])
def test_10x_directories(tmp_path, name):
    src = require_data(name)
    report = sparsezarr.convert(src, tmp_path / "out.zarr", progress=False)
    a = ad.read_zarr(tmp_path / "out.zarr")
    mtx = next(src.glob("matrix.mtx*"))
    genes_by_cells = sp.csr_array(scipy.io.mmread(mtx))
    assert same(a.X, genes_by_cells.T)
    assert a.X.dtype == np.float32
    barcodes = read_tsv(next(src.glob("barcodes.tsv*")))[0]
    features = read_tsv(next(p for p in src.iterdir() if p.name.startswith(("features", "genes"))))
    assert list(a.obs_names) == list(barcodes)
    assert list(a.var["gene_ids"]) == list(features[0])
    assert list(a.var_names) == list(ad.utils.make_index_unique(pd.Index(features[1])))
    if features.shape[1] > 2:
        assert list(a.var["feature_types"]) == list(features[2])
    assert report.nnz == genes_by_cells.nnz and report.shape == a.shape and report.stored_bytes > 0


def test_h5ad_files(tmp_path):
    for f in sorted(require_data("tabula_muris").glob("*.h5ad")):
        out = tmp_path / f"{f.stem}.zarr"
        sparsezarr.convert(f, out, progress=False)
        a, b = ad.read_zarr(out), ad.read_h5ad(f)
        assert same(a.X, b.X)
        assert a.obs.equals(b.obs) and a.var.equals(b.var)
        # the matrix is stored with sparsezarr's layout and reads back through the CSR reader too
        assert same(sparsezarr.open_csr(out, path="X")[:], b.X)


def test_h5ad_with_layers_annotations_and_csc(tmp_path):
    rng = np.random.default_rng(0)
    x = sp.random_array((300, 80), density=0.1, format="csr", dtype=np.float32, rng=rng)
    counts = sp.csc_matrix(np.round(x * 10))
    obs = pd.DataFrame({"n": rng.integers(0, 9, 300), "kind": pd.Categorical(rng.choice(["a", "b"], 300))}, index=[f"c{i}" for i in range(300)])
    var = pd.DataFrame({"gene": [f"g{i}" for i in range(80)]}, index=[f"g{i}" for i in range(80)])
    src = ad.AnnData(X=sp.csr_matrix(x), obs=obs, var=var, layers={"counts": counts}, obsm={"pca": rng.random((300, 5))}, uns={"note": "hi", "n": 3})
    src.write_h5ad(tmp_path / "in.h5ad")
    sparsezarr.convert(tmp_path / "in.h5ad", tmp_path / "out.zarr", progress=False, chunks=64, shards=512)
    a = ad.read_zarr(tmp_path / "out.zarr")
    assert same(a.X, x) and same(a.layers["counts"], counts)
    assert sp.issparse(a.layers["counts"]) and a.layers["counts"].format == "csc"
    assert a.obs.equals(src.obs) and a.var.equals(src.var)
    np.testing.assert_array_equal(a.obsm["pca"], src.obsm["pca"])
    assert a.uns["note"] == "hi" and a.uns["n"] == 3


def _write_mtx(path: Path, m: sp.coo_array, *, header="integer general", order=None, gz=False) -> Path:
    rows, cols, vals = m.row, m.col, m.data
    if order is not None:
        rows, cols, vals = rows[order], cols[order], vals[order]
    lines = [f"%%MatrixMarket matrix coordinate {header}", "% written by the test", f"{m.shape[0]} {m.shape[1]} {len(vals)}"]
    fmt = "{} {} {:g}" if not header.startswith("pattern") else "{} {}"
    lines += [fmt.format(r + 1, c + 1, v) for r, c, v in zip(rows, cols, vals, strict=True)]
    text = "\n".join(lines) + "\n"
    if gz:
        path = path.with_suffix(".mtx.gz")
        with gzip.open(path, "wt") as f:
            f.write(text)
    else:
        path.write_text(text)
    return path


@pytest.mark.parametrize("order", ["sorted", "shuffled"])
@pytest.mark.parametrize("transpose", [False, True])
def test_plain_mtx_sorted_and_unsorted(tmp_path, order, transpose):
    rng = np.random.default_rng(1)
    m = sp.random_array((500, 70), density=0.08, format="coo", rng=rng)
    m.data = np.round(m.data * 100) + 1
    perm = None if order == "sorted" else rng.permutation(m.nnz)
    if order == "sorted":
        o = np.lexsort((m.col, m.row)) if not transpose else np.lexsort((m.row, m.col))
        perm = o
    path = _write_mtx(tmp_path / "m.mtx", m, order=perm, gz=True)
    sparsezarr.convert(path, tmp_path / "out.zarr", progress=False, transpose=transpose, block_entries=997)
    a = ad.read_zarr(tmp_path / "out.zarr")
    want = sp.csr_array(scipy.io.mmread(path))
    assert same(a.X, want.T if transpose else want)


def test_mtx_symmetric_pattern_and_duplicates(tmp_path):
    text = "%%MatrixMarket matrix coordinate pattern symmetric\n3 3 3\n1 1\n3 1\n2 2\n"
    (tmp_path / "s.mtx").write_text(text)
    sparsezarr.convert(tmp_path / "s.mtx", tmp_path / "s.zarr", progress=False)
    assert same(ad.read_zarr(tmp_path / "s.zarr").X, sp.csr_array(scipy.io.mmread(tmp_path / "s.mtx")))
    (tmp_path / "d.mtx").write_text("%%MatrixMarket matrix coordinate integer general\n2 2 3\n1 2 3\n2 1 1\n1 2 4\n")
    sparsezarr.convert(tmp_path / "d.mtx", tmp_path / "d.zarr", progress=False)
    np.testing.assert_array_equal(ad.read_zarr(tmp_path / "d.zarr").X.toarray(), [[0, 7], [1, 0]])


def test_values_that_float32_cannot_hold_are_refused(tmp_path):
    (tmp_path / "r.mtx").write_text("%%MatrixMarket matrix coordinate real general\n2 2 2\n1 1 0.1\n2 2 16777217\n")
    with pytest.raises(ValueError, match="exactly"):
        sparsezarr.convert(tmp_path / "r.mtx", tmp_path / "r.zarr", progress=False)
    assert not (tmp_path / "r.zarr").exists()
    sparsezarr.convert(tmp_path / "r.mtx", tmp_path / "r.zarr", progress=False, dtype="float64")
    np.testing.assert_array_equal(ad.read_zarr(tmp_path / "r.zarr").X.toarray(), [[0.1, 0], [0, 16777217]])


def _write_10x_h5(path: Path, genes_by_cells: sp.csc_array, version: int) -> None:
    n_genes, n_cells = genes_by_cells.shape
    with h5py.File(path, "w") as f:
        g = f.create_group("matrix" if version == 3 else "GRCh38")
        g["data"] = genes_by_cells.data.astype(np.int32)
        g["indices"] = genes_by_cells.indices.astype(np.int64)
        g["indptr"] = genes_by_cells.indptr.astype(np.int64)
        g["shape"] = np.array([n_genes, n_cells], dtype=np.int32)
        g["barcodes"] = np.array([f"AAAC{i:05d}-1".encode() for i in range(n_cells)])
        ids = np.array([f"ENSG{i:08d}".encode() for i in range(n_genes)])
        names = np.array([f"GENE{i % (n_genes - 3)}".encode() for i in range(n_genes)])  # a few repeats
        if version == 3:
            feats = g.create_group("features")
            feats["id"] = ids
            feats["name"] = names
            feats["feature_type"] = np.array([b"Gene Expression"] * n_genes)
            feats["genome"] = np.array([b"GRCh38"] * n_genes)
        else:
            g["genes"] = ids
            g["gene_names"] = names


@pytest.mark.parametrize("version", [2, 3])
def test_10x_h5(tmp_path, version):
    rng = np.random.default_rng(2)
    m = sp.random_array((60, 400), density=0.1, format="csc", rng=rng)
    m.data = np.round(m.data * 20) + 1
    _write_10x_h5(tmp_path / "f.h5", m, version)
    assert detect_source(tmp_path / "f.h5") == "10x-h5"
    sparsezarr.convert(tmp_path / "f.h5", tmp_path / "f.zarr", progress=False)
    a = ad.read_zarr(tmp_path / "f.zarr")
    assert same(a.X, m.T)
    assert a.obs_names[0] == "AAAC00000-1" and a.var["gene_ids"].iloc[5] == "ENSG00000005"
    assert a.var_names.is_unique


def test_zarr_relayout_of_an_anndata_store(tmp_path):
    rng = np.random.default_rng(3)
    x = sp.random_array((400, 50), density=0.1, format="csr", dtype=np.float32, rng=rng)
    src = ad.AnnData(X=sp.csr_matrix(x), obs=pd.DataFrame(index=[f"c{i}" for i in range(400)]))
    src.write_zarr(tmp_path / "v2.zarr")  # anndata's default: zarr v2, one chunk per array
    sparsezarr.convert(tmp_path / "v2.zarr", tmp_path / "v3.zarr", progress=False, chunks=100)
    a = ad.read_zarr(tmp_path / "v3.zarr")
    assert same(a.X, x) and list(a.obs_names) == list(src.obs_names)
    data = zarr.open_array(tmp_path / "v3.zarr" / "X" / "data", mode="r")
    assert data.metadata.zarr_format == 3 and data.chunks == (100,)


def test_overwrite_is_atomic_and_refused_without_flag(tmp_path):
    src = require_data("10x_v3_small")
    out = tmp_path / "o.zarr"
    sparsezarr.convert(src, out, progress=False)
    with pytest.raises(FileExistsError):
        sparsezarr.convert(src, out, progress=False)
    (tmp_path / "bad.mtx").write_text("%%MatrixMarket matrix coordinate integer general\n2 2 2\n1 1 1\n9 9 9\n")
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    with pytest.raises(ValueError, match="out of range"):
        sparsezarr.convert(tmp_path / "bad.mtx", out, overwrite=True, progress=False)
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before
    assert ad.read_zarr(out).shape == (1107, 507)
    assert not [p for p in tmp_path.iterdir() if "sparsezarr-new" in p.name]


def test_cli(tmp_path):
    src = require_data("10x_v3_small")
    run = [sys.executable, "-m", "sparsezarr"]
    r = subprocess.run([*run, "convert", str(src), str(tmp_path / "c.zarr"), "-q", "--chunks", "4k"], capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr
    assert "10x-mtx" in r.stdout and "MB/s" in r.stdout
    assert ad.read_zarr(tmp_path / "c.zarr").shape == (1107, 507)
    r = subprocess.run([*run, "convert", str(src), str(tmp_path / "c.zarr"), "-q"], capture_output=True, text=True, check=False)
    assert r.returncode == 2 and "already exists" in r.stderr
    r = subprocess.run([*run, "info", str(tmp_path / "c.zarr")], capture_output=True, text=True, check=False)
    assert r.returncode == 0 and "X: CSR" in r.stdout and "23,866 values" in r.stdout
    r = subprocess.run([*run, "example", str(tmp_path / "e.h5ad"), "--cells", "500", "--genes", "300"], capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr
    e = ad.read_h5ad(tmp_path / "e.h5ad")
    assert e.shape == (500, 300) and e.X.nnz > 0
    shutil.rmtree(tmp_path / "c.zarr")
    r = subprocess.run([*run, "convert", str(tmp_path / "nope.h5ad"), str(tmp_path / "c.zarr")], capture_output=True, text=True, check=False)
    assert r.returncode == 2 and "does not exist" in r.stderr


def test_example_data_is_realistic():
    from sparsezarr.datasets import neurons_profile, synthetic_counts

    x = synthetic_counts(2000, 1000, seed=1)
    p = neurons_profile()
    density = x.nnz / (x.shape[0] * x.shape[1])
    assert abs(density - p["cell_fraction"].mean()) < 0.01
    assert set(np.unique(x.data)) <= set(p["values"])
    assert x.has_canonical_format
