"""Built-in example data: realistic synthetic single-cell count matrices.

The matrices are sampled from the profile of a real 10x Genomics dataset (10,000 mouse neurons x
1,000 genes, integer UMI counts; the ``10x-10k-subset`` test data of scanpy, derived from a public
10x Genomics dataset, CC BY 4.0), bundled as ``data/neurons_profile.npz``:

* each cell's number of detected genes: the fraction of genes detected in a real cell, drawn at
  random, times the number of genes (6.9% on average);
* which genes: each gene's detection rate is one of the real genes' rates (repeated and shuffled
  over the genes), and a cell detects gene ``g`` with probability proportional to it;
* values: drawn from the real non-zero counts.

>>> from sparsezarr import datasets
>>> x = datasets.synthetic_counts(n_cells=10_000, n_genes=2_000)   # scipy.sparse.csr_array
>>> datasets.write_example_h5ad("example.h5ad", n_cells=100_000)
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

__all__ = ["neurons_profile", "profile_from_counts", "synthetic_counts", "write_example_h5ad"]


def profile_from_counts(genes_by_cells: Any) -> dict[str, np.ndarray]:
    """The profile of a genes x cells count matrix: per-cell detected fraction, per-gene detection
    rate, and the distinct non-zero values with their frequencies."""
    m = sp.csc_array(genes_by_cells)
    n_genes, n_cells = m.shape
    values, counts = np.unique(m.data, return_counts=True)
    return {
        "cell_fraction": (np.diff(m.indptr) / n_genes).astype(np.float32),
        "gene_rate": (np.diff(sp.csr_array(m).indptr) / n_cells).astype(np.float32),
        "values": values.astype(np.float32),
        "value_counts": counts.astype(np.int64),
    }


def neurons_profile() -> dict[str, np.ndarray]:
    """The bundled profile of the 10x mouse-neuron data."""
    with resources.files("sparsezarr").joinpath("data/neurons_profile.npz").open("rb") as f, np.load(f) as z:
        return {k: z[k] for k in z.files}


def synthetic_counts(
    n_cells: int = 100_000,
    n_genes: int = 20_000,
    *,
    seed: int = 0,
    dtype: Any = np.float32,
    profile: dict[str, np.ndarray] | None = None,
    block: int = 2_000,
) -> sp.csr_array:
    """A cells x genes CSR count matrix sampled from a real profile (see the module docstring).

    Each cell ``c`` detects gene ``g`` with probability ``min(1, rate[g] * scale[c])``, where
    ``scale[c]`` makes the expected number of detected genes equal the cell's drawn length.
    """
    p = neurons_profile() if profile is None else profile
    rng = np.random.default_rng(seed)
    lengths = rng.choice(p["cell_fraction"], n_cells) * n_genes
    rates = np.resize(p["gene_rate"], n_genes).astype(np.float64)
    rng.shuffle(rates)
    rates = np.maximum(rates, 1e-6)
    scale = lengths / rates.sum()
    probs = p["value_counts"] / p["value_counts"].sum()
    indptr = np.zeros(n_cells + 1, dtype=np.int64)
    indices_parts, data_parts = [], []
    for a in range(0, n_cells, block):
        b = min(n_cells, a + block)
        pr = np.minimum(rates[None, :] * scale[a:b, None], 1.0)
        hit = rng.random(pr.shape, dtype=np.float32) < pr
        r, c = np.nonzero(hit)
        indptr[a + 1 : b + 1] = np.cumsum(np.bincount(r, minlength=b - a)) + indptr[a]
        indices_parts.append(c.astype(np.int32))
        data_parts.append(rng.choice(p["values"], len(c), p=probs).astype(dtype))
    nnz = int(indptr[-1])
    indptr = indptr.astype(np.int32 if nnz < 2**31 else np.int64)
    return sp.csr_array((np.concatenate(data_parts), np.concatenate(indices_parts), indptr), shape=(n_cells, n_genes))


def write_example_h5ad(path: str | Path, n_cells: int = 100_000, n_genes: int = 20_000, *, seed: int = 0) -> Path:
    """Write an example ``.h5ad`` (cells x genes counts, with cell and gene annotations)."""
    import anndata as ad
    import pandas as pd

    x = synthetic_counts(n_cells, n_genes, seed=seed)
    rng = np.random.default_rng(seed + 1)
    obs = pd.DataFrame(
        {
            "n_counts": np.asarray(x.sum(axis=1)).ravel().astype(np.float32),
            "n_genes": np.diff(x.indptr).astype(np.int32),
            "sample": pd.Categorical(rng.choice([f"sample_{i}" for i in range(8)], n_cells)),
        },
        index=[f"cell_{i:07d}" for i in range(n_cells)],
    )
    var = pd.DataFrame({"gene_ids": [f"ENSG{i:011d}" for i in range(n_genes)]}, index=[f"gene_{i}" for i in range(n_genes)])
    path = Path(path)
    ad.AnnData(X=x, obs=obs, var=var).write_h5ad(path)
    return path
