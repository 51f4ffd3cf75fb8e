"""Single-cell stores (issue 4): CSR/CSC groups in the anndata layout (and binsparse), written
and read by sparsezarr, cross-checked against scipy (the in-memory reference), anndata (reading our
stores) and stores anndata wrote (read by us)."""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp
import zarr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sparsezarr
from _helpers import require_data
from sparsezarr import _lib
from sparsezarr.errors import CorruptChunkError, MetadataError

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")


def random_csr(seed: int, shape=(400, 120), density=0.05, dtype=np.float32, empty_rows=True) -> sp.csr_array:
    rng = np.random.default_rng(seed)
    m = sp.random_array(shape, density=density, format="csr", dtype=np.float64, rng=rng)
    m.data = np.round(m.data * 50) + 1
    m = sp.csr_array(m.astype(dtype))
    if empty_rows and shape[0] > 10:
        m = sp.csr_array(m.multiply(sp.csr_array((rng.random(shape[0]) > 0.1).astype(dtype)[:, None])))
    m.sort_indices()
    return m


def _sorted_within_rows(m) -> tuple[np.ndarray, np.ndarray]:
    """Indices and values with each row's (column's, for CSC) entries ordered by index: a stable
    sort that keeps duplicates and explicit zeros."""
    major = np.repeat(np.arange(len(m.indptr) - 1), np.diff(m.indptr))
    order = np.lexsort((m.indices, major))
    return m.indices[order], m.data[order]


def same(got, want, *, ordered: bool = True) -> bool:
    """``got`` (what sparsezarr or anndata returned) holds exactly the entries of ``want`` (the
    reference): same format, shape and value type, the same index pointer, and the same indices and
    values (explicit zeros and duplicates count). The entries of each row are compared in stored
    order; ``ordered=False`` compares them sorted by index, for selections after which neither
    scipy nor sparsezarr promises an order (columns picked in a non-increasing order)."""
    assert sp.issparse(got), f"expected a scipy.sparse result, got {type(got).__name__}"
    if not sp.issparse(want):
        want = sp.csr_array(want)
    if want.format != got.format:
        want = want.asformat(got.format)
    assert got.format in ("csr", "csc"), got.format
    assert got.shape == want.shape, f"shape {got.shape} != {want.shape}"
    assert got.dtype == want.dtype, f"dtype {got.dtype} != {want.dtype}"
    np.testing.assert_array_equal(got.indptr, want.indptr, err_msg="indptr")
    got_indices, got_data = (got.indices, got.data) if ordered else _sorted_within_rows(got)
    want_indices, want_data = (want.indices, want.data) if ordered else _sorted_within_rows(want)
    np.testing.assert_array_equal(got_indices, want_indices, err_msg="indices")
    np.testing.assert_array_equal(got_data, want_data, err_msg="values")
    return True


def tree_digest(path: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(Path(path).rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(path)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def matrix() -> sp.csr_array:
    return random_csr(0, shape=(3000, 500), density=0.04)


@pytest.fixture(scope="module")
def stored(tmp_path_factory, matrix):
    path = tmp_path_factory.mktemp("csr") / "m.zarr"
    sparsezarr.write_csr(path, matrix, chunks=256, shards=2048)
    return path


# ------------------------------------------------------------------------------------------------
# Round trips and gathers against scipy
# ------------------------------------------------------------------------------------------------

row_keys = st.one_of(
    st.builds(slice, st.none() | st.integers(-3500, 3500), st.none() | st.integers(-3500, 3500), st.none() | st.sampled_from([1, 1, 2, 7, -1, -3])),
    st.lists(st.integers(-3000, 2999), max_size=60).map(lambda v: np.array(v, dtype=np.int64)),
    st.integers(-3000, 2999),
    st.lists(st.booleans(), min_size=3000, max_size=3000).map(np.array),
)
col_keys = st.one_of(
    st.just(slice(None)),
    st.builds(slice, st.none() | st.integers(0, 500), st.none() | st.integers(0, 500), st.sampled_from([1, 3, -2])),
    st.lists(st.integers(-500, 499), max_size=40).map(lambda v: np.array(v, dtype=np.int64)),
)


def reference(m: sp.csr_array, rows, cols):
    r = m[[rows]] if isinstance(rows, int) else m[rows]
    if r.ndim == 1:
        r = sp.csr_array(r.reshape(1, -1))
    return sp.csr_array(r)[:, cols] if not (isinstance(cols, slice) and cols == slice(None)) else sp.csr_array(r)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=row_keys, cols=col_keys)
def test_gathers_match_scipy(stored, matrix, rows, cols):
    x = sparsezarr.open_csr(stored)
    got = x[rows, cols]
    assert isinstance(got, sp.csr_array)
    assert same(got, reference(matrix, rows, cols))


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int32, np.int64, np.uint16, np.bool_])
@pytest.mark.parametrize("chunks,shards", [(None, "default"), (64, 512), (100, None), (7, 21)])
def test_roundtrip_dtypes_and_layouts(tmp_path, dtype, chunks, shards):
    m = random_csr(1, shape=(700, 90), dtype=dtype)
    x = sparsezarr.write_csr(tmp_path / "a.zarr", m, chunks=chunks, shards=shards)
    assert x.dtype == np.dtype(dtype) and x.nnz == m.nnz and x.shape == m.shape
    assert same(x[:], m)
    rows = np.random.default_rng(2).integers(0, 700, 200)
    assert same(x[rows], m[rows])
    # anndata reads it unmodified
    g = zarr.open_group(tmp_path / "a.zarr", mode="r")
    assert same(ad.io.read_elem(g), m)
    assert same(ad.io.sparse_dataset(g)[rows[:50]], m[rows[:50]])


def test_explicit_zeros_duplicates_and_stored_order_are_kept(tmp_path):
    """What scipy keeps, the store keeps: explicit zeros, duplicate entries and the stored order of
    each row's entries, through bulk, streaming and appending writes, gathers and anndata."""
    m = random_csr(11, shape=(300, 40), density=0.1)
    m.data[::4] = 0  # explicit zeros
    for i in range(0, m.shape[0], 3):  # some rows in reverse index order
        s, e = m.indptr[i], m.indptr[i + 1]
        m.indices[s:e], m.data[s:e] = m.indices[s:e][::-1].copy(), m.data[s:e][::-1].copy()
    m.has_sorted_indices = False
    assert (m.data == 0).sum() > 50
    dup = sp.csr_array((np.array([1, 2, 0, 4], dtype=np.float32), np.array([3, 3, 1, 0]), np.array([0, 3, 3, 4])), shape=(3, 5))
    x = sparsezarr.write_csr(tmp_path / "a.zarr", m, chunks=16, shards=64)
    assert x.nnz == m.nnz
    rows = np.array([299, 0, 3, 3, 150])
    assert same(x[:], m)
    assert same(x[rows], m[rows])
    assert same(x[10:200:7, [30, 2, 17]], m[10:200:7][:, [30, 2, 17]])
    assert same(x[rows, [5, 5, 1]], m[rows][:, [5, 5, 1]])
    assert same(ad.io.read_elem(zarr.open_group(tmp_path / "a.zarr", mode="r")), m)
    assert same(sparsezarr.write_csr(tmp_path / "d.zarr", dup)[:], dup)
    with sparsezarr.CsrWriter(tmp_path / "s.zarr", n_cols=m.shape[1], chunks=16, shards=64) as w:
        w.extend(m[a : a + 70] for a in range(0, m.shape[0], 70))
    assert w.result is not None and same(w.result[:], m)
    sparsezarr.write_csr(tmp_path / "p.zarr", m[:100], chunks=16, shards=64)
    assert same(sparsezarr.append_rows(tmp_path / "p.zarr", m[100:])[:], m)
    c = sparsezarr.write_csc(tmp_path / "c.zarr", m)
    assert same(c[:], m.tocsc())
    assert same(c[rows, [39, 0, 0]], m.tocsc()[rows][:, [39, 0, 0]])
    # sorted comparison: the order within rows is what differs after a scipy conversion
    assert same(x[:], m.tocsc().tocsr(), ordered=False)


def test_edge_shapes(tmp_path):
    for i, m in enumerate([sp.csr_array((0, 5), dtype=np.float32), sp.csr_array((5, 0), dtype=np.float32), sp.csr_array((4, 4), dtype=np.float32)]):
        x = sparsezarr.write_csr(tmp_path / f"e{i}.zarr", m)
        assert x.shape == m.shape and x.nnz == 0
        assert same(x[:], m)
        assert same(ad.io.read_elem(zarr.open_group(tmp_path / f"e{i}.zarr", mode="r")), m)


def test_output_kinds(stored, matrix):
    import sparse

    x = sparsezarr.open_csr(stored, output="matrix")
    assert isinstance(x[:10], sp.csr_matrix)
    g = x.read([5, 1, 5], output="gcxs")
    assert isinstance(g, sparse.GCXS)
    np.testing.assert_array_equal(g.todense(), matrix[[5, 1, 5]].toarray())
    np.testing.assert_array_equal(x.indptr, matrix.indptr)


def test_csc_reads_by_columns(tmp_path, matrix):
    c = sparsezarr.write_csc(tmp_path / "c.zarr", matrix)
    assert c.format == "csc" and c.shape == matrix.shape
    cols = np.array([499, 0, 17, 17, 250])
    got = c[:, cols]
    assert isinstance(got, sp.csc_array)
    assert same(got, matrix[:, cols])
    assert same(c[100:900:3, cols], matrix[100:900:3][:, cols])
    assert same(ad.io.read_elem(zarr.open_group(tmp_path / "c.zarr", mode="r")), matrix)
    with pytest.raises(MetadataError, match="CSC"):
        sparsezarr.open_csr(tmp_path / "c.zarr")


# ------------------------------------------------------------------------------------------------
# Stores written by anndata, and the binsparse layout
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fmt,shard,kwargs",
    [(2, None, {}), (3, False, {}), (3, True, {}), (3, False, {"chunks": (1000,)}), (2, None, {"chunks": (333,)})],
)
def test_reads_anndata_written_stores(tmp_path, matrix, fmt, shard, kwargs):
    settings = {"zarr_write_format": fmt} | ({} if shard is None else {"auto_shard_zarr_v3": shard})
    with ad.settings.override(**settings):
        g = zarr.open_group(tmp_path / "ad.zarr", mode="w", zarr_format=fmt)
        ad.io.write_elem(g, "X", matrix, dataset_kwargs=kwargs)
    x = sparsezarr.open_csr(tmp_path / "ad.zarr", path="X")
    rows = np.random.default_rng(3).integers(0, matrix.shape[0], 500)
    assert same(x[rows], matrix[rows])
    assert same(x[:], matrix)
    assert same(x[rows, [3, 2, 1]], matrix[rows][:, [3, 2, 1]])


def test_binsparse_layout_both_ways(tmp_path, matrix):
    import binsparse
    from binsparse.conversions import from_scipy, to_scipy

    sparsezarr.write_csr(tmp_path / "ours.zarr", matrix, layout="binsparse")
    assert same(to_scipy(binsparse.load_binsparse(str(tmp_path / "ours.zarr"))), matrix)
    binsparse.save_binsparse(from_scipy(matrix), str(tmp_path / "theirs.zarr"))
    x = sparsezarr.open_csr(tmp_path / "theirs.zarr")
    assert x.layout == "binsparse"
    assert same(x[[7, 3, 2999]], matrix[[7, 3, 2999]])
    # the flat descriptor nesting is accepted too
    g = zarr.open_group(tmp_path / "theirs.zarr", mode="r+")
    g.attrs["binsparse"] = dict(g.attrs["binsparse"]["binsparse"])
    assert same(sparsezarr.open_csr(tmp_path / "theirs.zarr")[:], matrix)


def test_memory_and_zip_stores(tmp_path, matrix):
    ms = zarr.storage.MemoryStore()
    x = sparsezarr.write_csr(ms, matrix, chunks=100, shards=1000)
    assert same(x[[1, 2, 3]], matrix[[1, 2, 3]])
    y = sparsezarr.append_rows(ms, matrix[:50])
    assert same(y[:], sp.vstack([matrix, matrix[:50]]))
    zs = zarr.storage.ZipStore(tmp_path / "m.zip", mode="w")
    sparsezarr.write_csr(zs, matrix, chunks=100, shards=1000)
    zs.close()
    zr = zarr.storage.ZipStore(tmp_path / "m.zip", mode="r")
    assert same(sparsezarr.open_csr(zr)[::3], matrix[::3])


def test_group_targets_and_nested_paths(tmp_path, matrix):
    root = zarr.open_group(tmp_path / "adata.zarr", mode="w")
    sparsezarr.write_csr(root, matrix, path="layers/counts")
    assert same(sparsezarr.open_csr(root, path="layers/counts")[:20], matrix[:20])
    assert same(sparsezarr.open_csr(tmp_path / "adata.zarr", path="layers/counts")[-5:], matrix[-5:])


# ------------------------------------------------------------------------------------------------
# Streaming writes and appends
# ------------------------------------------------------------------------------------------------


def test_streaming_writer_equals_bulk(tmp_path, matrix):
    rng = np.random.default_rng(4)
    cuts = np.sort(rng.choice(np.arange(1, matrix.shape[0]), 12, replace=False))
    with sparsezarr.CsrWriter(tmp_path / "s.zarr", n_cols=matrix.shape[1], chunks=128, shards=1024) as w:
        for a, b in zip([0, *cuts], [*cuts, matrix.shape[0]], strict=True):
            w.append(matrix[a:b] if a % 2 else sp.csr_matrix(matrix[a:b]))
    x = w.result
    assert same(x[:], matrix)
    assert x.group["indptr"].dtype == np.int64
    a = ad.io.read_elem(zarr.open_group(tmp_path / "s.zarr", mode="r"))
    assert same(a, matrix)


def _rss_hwm() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def test_streaming_writer_memory_is_bounded_by_the_block(tmp_path):
    """96M values (770 MB as CSR) streamed in 15k-row blocks (24 MB): the resident memory after 8
    blocks and after 32 blocks is the same (one shard of each array plus a few blocks); a writer
    that kept the matrix would grow four times as much."""
    n_cols, block_rows, blocks = 2000, 15_000, 32
    rng = np.random.default_rng(5)
    Path("/proc/self/clear_refs").write_text("5")
    base = _rss_hwm()
    total, early = 0, 0
    with sparsezarr.CsrWriter(tmp_path / "big.zarr", n_cols=n_cols, shards=1 << 20) as w:
        for i in range(blocks):
            # 200 values per row at columns offset, offset + 10, ... (cheap to generate)
            cols = (rng.integers(0, 10, (block_rows, 1)) + 10 * np.arange(200)).astype(np.int32).ravel()
            indptr = np.arange(0, 200 * block_rows + 1, 200, dtype=np.int64)
            m = sp.csr_array((rng.random(len(cols), dtype=np.float32), cols, indptr), shape=(block_rows, n_cols))
            total += m.nnz
            w.append(m)
            del m, cols
            if i == 7:
                early = _rss_hwm() - base
    grown = _rss_hwm() - base
    assert w.result.nnz == total
    assert total * 8 > 700e6
    assert grown < early * 1.25 + 30e6, f"memory kept growing: {early / 1e6:.0f} MB after 8 blocks, {grown / 1e6:.0f} MB after {blocks}"
    assert grown < 250e6, f"resident memory grew by {grown / 1e6:.0f} MB while streaming {total * 8 / 1e6:.0f} MB"


def test_append_rows_to_ours_and_anndatas(tmp_path, matrix):
    x = sparsezarr.write_csr(tmp_path / "a.zarr", matrix[:1000], chunks=64, shards=512)
    x = sparsezarr.append_rows(tmp_path / "a.zarr", matrix[1000:1777])
    x = sparsezarr.append_rows(tmp_path / "a.zarr", (matrix[a : a + 100] for a in range(1777, 3000, 100)))
    assert same(x[:], matrix)
    assert same(ad.io.read_elem(zarr.open_group(tmp_path / "a.zarr", mode="r")), matrix)
    # anndata's own v3 store, consolidated like an AnnData written by anndata
    with ad.settings.override(zarr_write_format=3):
        ad.AnnData(X=sp.csr_matrix(matrix[:2000])).write_zarr(tmp_path / "ad.zarr")
    sparsezarr.append_rows(tmp_path / "ad.zarr", matrix[2000:], path="X")
    g = zarr.open_group(tmp_path / "ad.zarr", mode="r")  # through the refreshed consolidated metadata
    assert same(ad.io.read_elem(g["X"]), matrix)
    assert same(sparsezarr.open_csr(tmp_path / "ad.zarr", path="X")[1990:2010], matrix[1990:2010])


def test_append_widens_a_narrow_indptr(tmp_path):
    m = random_csr(6, shape=(40, 30), density=0.08)
    g = zarr.open_group(tmp_path / "n.zarr", mode="w", zarr_format=3)
    g.attrs.update({"encoding-type": "csr_matrix", "encoding-version": "0.1.0", "shape": list(m.shape)})
    g.create_array("data", data=m.data)
    g.create_array("indices", data=m.indices.astype(np.int32))
    g.create_array("indptr", data=m.indptr.astype(np.int8))
    assert m.nnz < 127
    extra = random_csr(7, shape=(60, 30), density=0.2)
    x = sparsezarr.append_rows(tmp_path / "n.zarr", extra)
    assert x.nnz > 127 and x.group["indptr"].dtype == np.int64
    assert same(x[:], sp.vstack([m, extra]))


# ------------------------------------------------------------------------------------------------
# Validation, failures and crash safety
# ------------------------------------------------------------------------------------------------


def test_malformed_input_is_refused_before_writing(tmp_path):
    good = random_csr(8, shape=(20, 10))

    def edited(**arrays):
        m = good.copy()
        for name, fix in arrays.items():
            v = getattr(m, name).copy()
            fix(v)
            setattr(m, name, v)
        return m

    def bump(v):
        v[0] = 10

    def dip(v):
        v[5] = v[4] - 1 if v[4] > 0 else 10**6

    def overrun(v):
        v[-1] = v[-1] + 3

    for name, m, match in [
        ("idx", edited(indices=bump), "out of range"),
        ("ptr", edited(indptr=dip), "decreases|ends at"),
        ("short", edited(indptr=overrun), "ends at|index pointer"),
    ]:
        with pytest.raises(ValueError, match=match):
            sparsezarr.write_csr(tmp_path / f"{name}.zarr", m)
        assert not (tmp_path / f"{name}.zarr" / "data").exists(), "nothing may be left behind"
    with pytest.raises(ValueError, match="2-dimensional"):
        sparsezarr.write_csr(tmp_path / "v.zarr", np.zeros(5))
    sparsezarr.write_csr(tmp_path / "e.zarr", good)
    with pytest.raises(FileExistsError):
        sparsezarr.write_csr(tmp_path / "e.zarr", good)


def test_failed_overwrite_keeps_the_old_store(tmp_path, matrix, monkeypatch):
    path = tmp_path / "keep.zarr"
    sparsezarr.write_csr(path, matrix, chunks=100, shards=1000)
    before = tree_digest(path)
    bad = matrix.copy()
    bad.indices = bad.indices.copy()
    bad.indices[-1] = 10_000
    with pytest.raises(ValueError):
        sparsezarr.write_csr(path, bad, overwrite=True)
    assert tree_digest(path) == before
    # an interruption in the middle of the write (simulated) leaves the old store too
    real = _lib.write_compressed

    def interrupted(*args, **kwargs):
        real(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(_lib, "write_compressed", interrupted)
    with pytest.raises(KeyboardInterrupt):
        sparsezarr.write_csr(path, matrix[:10], overwrite=True)
    monkeypatch.undo()
    assert tree_digest(path) == before
    assert not [p for p in tmp_path.iterdir() if "sparsezarr-new" in p.name]
    # a streaming writer that fails half-way leaves the old store too
    with pytest.raises(ValueError, match="columns"), sparsezarr.CsrWriter(path, n_cols=matrix.shape[1], overwrite=True) as w:  # noqa: PT012 - the second append fails inside the writer's block
        w.append(matrix[:100])
        w.append(matrix[:100, :7])
    assert tree_digest(path) == before
    # and a successful overwrite replaces it
    x = sparsezarr.write_csr(path, matrix[:10], overwrite=True)
    assert same(x[:], matrix[:10])


def test_bad_append_leaves_the_store_unchanged(tmp_path, matrix):
    path = tmp_path / "a.zarr"
    sparsezarr.write_csr(path, matrix[:100], chunks=64, shards=512)
    before = tree_digest(path)
    with pytest.raises(ValueError, match="columns"):
        sparsezarr.append_rows(path, matrix[:10, :5])
    bad = matrix[:10].copy()
    bad.indices = bad.indices.copy()
    bad.indices[0] = 9999
    with pytest.raises(ValueError, match="out of range"):
        sparsezarr.append_rows(path, bad)
    with pytest.raises(TypeError):
        sparsezarr.append_rows(path, matrix[:10].astype(np.complex64))
    assert tree_digest(path) == before


def test_broken_stores_and_selections(tmp_path, matrix):
    path = tmp_path / "b.zarr"
    sparsezarr.write_csr(path, matrix, chunks=100, shards=1000)
    x = sparsezarr.open_csr(path)
    with pytest.raises(IndexError):
        x[3000]
    with pytest.raises(IndexError):
        x[[0, -3001]]
    with pytest.raises(IndexError):
        x[np.ones(5, dtype=bool)]
    with pytest.raises(IndexError):
        x[:, [500]]
    g = zarr.open_group(path, mode="r+")
    shape = g.attrs["shape"]
    del g.attrs["shape"]
    with pytest.raises(MetadataError, match="shape"):
        sparsezarr.open_csr(path)
    g.attrs["shape"] = shape
    g.attrs["encoding-type"] = "dataframe"
    with pytest.raises(MetadataError, match="not a compressed sparse matrix"):
        sparsezarr.open_csr(path)
    g.attrs["encoding-type"] = "csr_matrix"
    import shutil

    shutil.rmtree(path / "indices")
    with pytest.raises(MetadataError, match="indices"):
        sparsezarr.open_csr(path)


def test_corrupt_chunks_and_indptr(tmp_path, matrix):
    path = tmp_path / "c.zarr"
    sparsezarr.write_csr(path, matrix, chunks=100, shards=None)
    chunk = path / "data" / "c" / "3"
    chunk.write_bytes(b"garbage" * 10)
    x = sparsezarr.open_csr(path)
    with pytest.raises(CorruptChunkError, match="data/c/3"):
        x[:]
    assert same(x[:10], matrix[:10])  # chunks not involved still read
    # an index pointer that decreases is reported when the store is opened
    sparsezarr.write_csr(path, matrix, chunks=100, shards=None, overwrite=True)
    ptr = zarr.open_array(path / "indptr", mode="r+")
    ptr[5] = 10**6
    with pytest.raises(MetadataError, match="indptr"):
        sparsezarr.open_csr(path)
    # stored indices out of range are reported, not returned
    sparsezarr.write_csr(path, matrix, chunks=100, shards=None, overwrite=True)
    ind = zarr.open_array(path / "indices", mode="r+")
    ind[0] = 12345
    with pytest.raises(CorruptChunkError, match="out of range"):
        sparsezarr.open_csr(path)[:1]


# ------------------------------------------------------------------------------------------------
# Real data
# ------------------------------------------------------------------------------------------------


def test_real_tabula_muris_matrices(tmp_path):
    for f in sorted(require_data("tabula_muris").glob("*.h5ad")):
        a = ad.read_h5ad(f)
        m = sp.csr_array(a.X)
        x = sparsezarr.write_csr(tmp_path / f"{f.stem}.zarr", m)
        assert same(x[:], m)
        rows = np.random.default_rng(9).integers(0, m.shape[0], 1000)
        assert same(x[rows], m[rows])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            assert same(ad.io.sparse_dataset(zarr.open_group(tmp_path / f"{f.stem}.zarr", mode="r"))[rows], m[rows])
        # and by columns (cells, for these genes x cells matrices)
        c = sparsezarr.write_csc(tmp_path / f"{f.stem}-csc.zarr", m)
        cols = np.arange(0, m.shape[1], 7)
        assert same(c[:, cols], m[:, cols])
