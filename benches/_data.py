"""Realistic synthetic single-cell count matrices for benchmarks.

Cells x genes, CSR, float32 counts, int32 indices. What is sampled from real data
(``../shared/data/10x_mouse_neurons_10k``, 10,000 mouse neurons x 1,000 genes):

* row lengths: each cell's fraction of detected genes is drawn from the real cells' fractions,
  times the number of genes (mean 6.9% of genes per cell);
* which genes: a gene's chance to be detected follows the real genes' detection rates (the 1,000
  real rates, repeated and shuffled over the genes);
* values: drawn from the real non-zero counts.

The matrix is cached under ``benches/.cache`` (keyed by its parameters) because generating it takes
longer than most benchmarks.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import scipy.sparse as sp

HERE = Path(__file__).resolve().parent
DATA = Path(os.environ.get("SPARSEZARR_DATA", HERE.parent.parent / "shared" / "data"))
CACHE = HERE / ".cache"


def real_profile() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(per-cell detected fraction, per-gene detection rate, non-zero values) of the real data."""
    import scipy.io

    path = DATA / "10x_mouse_neurons_10k" / "matrix.mtx.gz"
    if not path.exists():
        raise FileNotFoundError(f"real data not found at {path} (set SPARSEZARR_DATA)")
    genes_by_cells = sp.csc_matrix(scipy.io.mmread(str(path)))
    n_genes, n_cells = genes_by_cells.shape
    cell_frac = np.diff(genes_by_cells.indptr) / n_genes
    gene_rate = np.diff(sp.csr_matrix(genes_by_cells).indptr) / n_cells
    return cell_frac, gene_rate, genes_by_cells.data.astype(np.float32)


def cell_matrix(n_cells: int = 100_000, n_genes: int = 20_000, seed: int = 0) -> sp.csr_array:
    """A cells x genes CSR matrix sampled from the real profile (cached)."""
    CACHE.mkdir(exist_ok=True)
    cached = CACHE / f"cells-{n_cells}x{n_genes}-{seed}.npz"
    if cached.exists():
        return sp.csr_array(sp.load_npz(cached))
    rng = np.random.default_rng(seed)
    cell_frac, gene_rate, values = real_profile()
    lengths = np.minimum(np.round(rng.choice(cell_frac, n_cells) * n_genes).astype(np.int64), n_genes)
    rates = np.resize(gene_rate, n_genes)
    rng.shuffle(rates)
    p = rates / rates.sum()
    cdf = np.cumsum(p)
    rows, cols = [], []
    block = 5_000
    for start in range(0, n_cells, block):
        want = lengths[start : start + block]
        # draw with replacement (1.6x oversampling), keep distinct genes per cell, trim to length
        n_draw = (want * 1.6).astype(np.int64) + 8
        r = np.repeat(np.arange(len(want)), n_draw)
        c = np.searchsorted(cdf, rng.random(len(r)) * cdf[-1]).clip(0, n_genes - 1)
        key = np.unique(r * n_genes + c)
        r, c = key // n_genes, key % n_genes
        # random subset of each cell's distinct genes, of the wanted length
        order = np.lexsort((rng.random(len(r)), r))
        r, c = r[order], c[order]
        first = np.searchsorted(r, np.arange(len(want)))
        rank = np.arange(len(r)) - first[r]
        keep = rank < want[r]
        r, c = r[keep], c[keep]
        rows.append(r + start)
        cols.append(c)
    rows_a = np.concatenate(rows)
    cols_a = np.concatenate(cols)
    data = rng.choice(values, len(rows_a)).astype(np.float32)
    m = sp.csr_array((data, (rows_a, cols_a)), shape=(n_cells, n_genes))
    m.sort_indices()
    m.indices = m.indices.astype(np.int32)
    m.indptr = m.indptr.astype(np.int32 if m.nnz < 2**31 else np.int64)
    sp.save_npz(cached, m, compressed=False)
    return m


if __name__ == "__main__":
    import time

    t = time.perf_counter()
    m = cell_matrix()
    print(m.shape, m.nnz, f"{m.nnz / m.shape[0]:.0f} per cell, {time.perf_counter() - t:.1f}s")
