"""Sparse arrays: the API against numpy/scipy references, every input type, interoperability with
zarr-python, validation, and real single-cell matrices."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import sparse
import zarr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sparsezarr
from _helpers import OURS, ZARR_DEFAULT, assert_native, require_data, use_pipeline
from sparsezarr.errors import CorruptChunkError

# ---------------------------------------------------------------------------------------------
# Property test
# ---------------------------------------------------------------------------------------------

DTYPES = ["float32", "float64", "int32", "uint16", "int8", "bool", "complex64"]


@st.composite
def arrays(draw):
    ndim = draw(st.integers(1, 4))
    shape = tuple(draw(st.integers(1, 10 if ndim <= 2 else 5)) for _ in range(ndim))
    chunks = tuple(draw(st.integers(1, n)) for n in shape)
    shards = None
    if draw(st.booleans()):
        shards = tuple(c * draw(st.integers(1, 3)) for c in chunks)
    dtype = draw(st.sampled_from(DTYPES))
    density = draw(st.sampled_from([0.0, 0.05, 0.3, 1.0]))
    return shape, chunks, shards, dtype, density


def random_dense(rng, shape, dtype, density):
    mask = rng.random(shape) < density
    dt = np.dtype(dtype)
    if dt.kind == "b":
        vals = np.ones(shape, dtype=bool)
    elif dt.kind == "c":
        vals = (rng.integers(1, 9, shape) + 1j * rng.integers(-5, 5, shape)).astype(dt)
    elif dt.kind == "f":
        vals = rng.standard_normal(shape).astype(dt)
        vals[vals == 0] = 1
    else:
        vals = rng.integers(1, 100, shape).astype(dt)
    return np.where(mask, vals, np.zeros((), dtype=dt))


@st.composite
def regions(draw, shape):
    key = []
    for n in shape:
        kind = draw(st.sampled_from(["slice", "int", "array", "bool", "neg_slice"]))
        if kind == "slice":
            a = draw(st.integers(0, n))
            b = draw(st.integers(a, n))
            key.append(slice(a, b, draw(st.integers(1, 3))))
        elif kind == "neg_slice":
            key.append(slice(None, None, -draw(st.integers(1, 2))))
        elif kind == "int":
            key.append(draw(st.integers(-n, n - 1)))
        elif kind == "bool":
            key.append(np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n)), dtype=bool))
        else:
            key.append(np.array(draw(st.lists(st.integers(-n, n - 1), min_size=0, max_size=6)), dtype=np.int64))
    return tuple(key)


def oindex(dense, key):
    idx = []
    drop = []
    for d, k in enumerate(key):
        n = dense.shape[d]
        if isinstance(k, slice):
            idx.append(np.arange(n)[k])
        elif isinstance(k, int | np.integer):
            idx.append(np.array([k % n]))
            drop.append(d)
        elif k.dtype == bool:
            idx.append(np.flatnonzero(k))
        else:
            idx.append(np.where(k < 0, k + n, k))
    out = dense[np.ix_(*idx)] if idx else dense
    return out.squeeze(axis=tuple(drop)) if drop else out


@st.composite
def boxes(draw, shape):
    key = []
    for n in shape:
        if draw(st.booleans()) and n > 0:
            key.append(draw(st.integers(0, n - 1)))
        else:
            a = draw(st.integers(0, n))
            key.append(slice(a, draw(st.integers(a, n))))
    return tuple(key)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(spec=arrays(), data=st.data(), seed=st.integers(0, 2**31), local=st.booleans())
def test_random_sparse_io_matches_numpy(tmp_path_factory, spec, data, seed, local):
    shape, chunks, shards, dtype, density = spec
    rng = np.random.default_rng(seed)
    store = tmp_path_factory.mktemp("sp") / "a.zarr" if local else zarr.storage.MemoryStore()
    a = sparsezarr.create_sparse(store, shape=shape, dtype=dtype, chunks=chunks, shards=shards)
    model = random_dense(rng, shape, dtype, density)
    a[...] = sparse.COO.from_numpy(model)
    for _ in range(data.draw(st.integers(1, 3))):
        key = data.draw(boxes(shape))
        sub_shape = oindex(model, key).shape
        value = random_dense(rng, sub_shape, dtype, data.draw(st.sampled_from([0.0, 0.2, 0.7])))
        kind = data.draw(st.sampled_from(["numpy", "coo", "scipy"]))
        if kind == "coo":
            a[key] = sparse.COO.from_numpy(value)
        elif kind == "scipy" and value.ndim == 2 and dtype != "bool":
            a[key] = sp.csr_array(value)
        else:
            a[key] = value
        model[key] = value
        rkey = data.draw(regions(shape))
        got = a[rkey]
        want = oindex(model, rkey)
        assert got.shape == want.shape
        np.testing.assert_array_equal(got.todense(), want)
        assert got.nnz == np.count_nonzero(want)
    np.testing.assert_array_equal(a.todense(), model)
    assert a.nnz == np.count_nonzero(model)
    # The same store read densely by zarr-python's own pipeline (its numpy codec) and by ours.
    for pipeline in (ZARR_DEFAULT, OURS):
        with use_pipeline(pipeline):
            np.testing.assert_array_equal(zarr.open_array(store, mode="r")[...], model)


# ---------------------------------------------------------------------------------------------
# Input types and outputs
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def matrix():
    return sp.random(60, 45, density=0.1, format="csr", dtype="float32", random_state=3)


INPUTS = {
    "csr_array": lambda m: sp.csr_array(m),
    "csc_array": lambda m: sp.csc_array(m),
    "coo_array": lambda m: sp.coo_array(m),
    "csr_matrix": lambda m: sp.csr_matrix(m),
    "csc_matrix": lambda m: sp.csc_matrix(m),
    "coo_matrix": lambda m: sp.coo_matrix(m),
    "dok_array": lambda m: sp.dok_array(m),
    "lil_matrix": lambda m: sp.lil_matrix(m),
    "bsr_array": lambda m: sp.bsr_array(m),
    "sparse.COO": lambda m: sparse.COO.from_scipy_sparse(m),
    "sparse.GCXS": lambda m: sparse.GCXS.from_scipy_sparse(m),
    "sparse.DOK": lambda m: sparse.DOK.from_scipy_sparse(m),
    "numpy": lambda m: m.toarray(),
}


@pytest.mark.parametrize("kind", list(INPUTS))
def test_every_input_type_roundtrips(tmp_path, matrix, kind):
    a = sparsezarr.save_sparse(INPUTS[kind](matrix), tmp_path / "m.zarr", chunks=(16, 16), shards=(32, 32))
    assert a.dtype == np.float32
    out = a.to_scipy()
    assert isinstance(out, sp.csr_array)
    assert (out != matrix).nnz == 0
    assert a.nnz == matrix.nnz
    csc = a.to_scipy(format="csc", matrix=True)
    assert isinstance(csc, sp.csc_matrix) and (csc != matrix).nnz == 0
    coo = a[5:50:3, [40, 2, 2]]
    np.testing.assert_array_equal(coo.todense(), matrix.toarray()[5:50:3][:, [40, 2, 2]])


def test_duplicates_are_summed_and_explicit_zeros_dropped(tmp_path):
    rows = np.array([0, 0, 1, 2, 2])
    cols = np.array([1, 1, 0, 2, 2])
    data = np.array([1.0, 2.0, 0.0, 5.0, -5.0], dtype="float32")
    m = sp.coo_array((data, (rows, cols)), shape=(3, 3))
    a = sparsezarr.from_scipy(m, tmp_path / "d.zarr", chunks=(2, 2))
    assert a.nnz == 1  # (0,1)=3; (1,0)=0 and (2,2)=5-5=0 are not stored
    np.testing.assert_array_equal(a.todense(), m.toarray())


def test_partial_box_writes_keep_everything_else(tmp_path):
    rng = np.random.default_rng(1)
    dense = random_dense(rng, (40, 50), "int32", 0.3)
    a = sparsezarr.from_numpy(dense, tmp_path / "p.zarr", chunks=(7, 9), shards=(14, 18))
    patch = random_dense(rng, (13, 21), "int32", 0.5)
    a[5:18, 20:41] = sp.csc_matrix(patch)
    dense[5:18, 20:41] = patch
    a[3] = np.arange(50, dtype="int32")  # integer index: one row
    dense[3] = np.arange(50)
    a[:, 7] = 0  # clear a column
    dense[:, 7] = 0
    np.testing.assert_array_equal(a.todense(), dense)
    assert a.nnz == np.count_nonzero(dense)


def test_nd_and_zero_size_and_huge_coordinates(tmp_path):
    x = sparse.random((6, 5, 4, 3), density=0.2, random_state=2)
    a = sparsezarr.from_sparse(x, tmp_path / "nd.zarr", chunks=(4, 2, 3, 2))
    np.testing.assert_array_equal(a[1:5, :, 2].todense(), x[1:5, :, 2].todense())
    empty = sparsezarr.create_sparse(tmp_path / "e.zarr", shape=(0, 5), dtype="float32", chunks=(1, 5))
    assert empty[...].shape == (0, 5) and empty.nnz == 0
    big = sparsezarr.create_sparse(tmp_path / "big.zarr", shape=(2**40,), dtype="float64", chunks=(2**33,))
    big[2**39 : 2**39 + 3] = np.array([1.0, 0.0, 2.5])
    got = big[2**39 - 1 : 2**39 + 10]
    assert got.coords.tolist() == [[1, 3]] and got.data.tolist() == [1.0, 2.5]
    assert big.nnz == 2


def test_generic_store_and_memory_store(tmp_path, matrix):
    for store in (zarr.storage.MemoryStore(), zarr.storage.ZipStore(tmp_path / "z.zip", mode="w")):
        a = sparsezarr.from_scipy(matrix, store, chunks=(16, 16), shards=(32, 32))
        assert (a.to_scipy() != matrix).nnz == 0
        a[0:10, 0:10] = sp.eye(10, dtype="float32", format="csr")
        expected = matrix.tolil()
        expected[0:10, 0:10] = sp.eye(10)
        assert (a.to_scipy() != expected.tocsr()).nnz == 0
        assert a.nnz == expected.nnz


# ---------------------------------------------------------------------------------------------
# Interoperability
# ---------------------------------------------------------------------------------------------


def test_zarr_python_alone_reads_and_writes_the_format(tmp_path, matrix):
    """The numpy codec (zarr-python's pipeline) and the Rust codec agree both ways."""
    path = tmp_path / "i.zarr"
    a = sparsezarr.from_scipy(matrix, path, chunks=(16, 16), shards=(32, 32))
    with use_pipeline(ZARR_DEFAULT):
        z = zarr.open_array(path, mode="r+")
        np.testing.assert_array_equal(z[:], matrix.toarray())
        z[0:20, 0:20] = np.eye(20, dtype="float32") * 3  # encoded by the Python codec
    expected = matrix.toarray()
    expected[0:20, 0:20] = np.eye(20) * 3
    np.testing.assert_array_equal(sparsezarr.open_sparse(path).todense(), expected)
    with use_pipeline(OURS):
        z2 = zarr.open_array(path, mode="r")
        assert_native(z2)
        np.testing.assert_array_equal(z2[:], expected)
    assert a.nnz == np.count_nonzero(expected)


def test_codec_metadata_roundtrip():
    c = sparsezarr.SparseCodec()
    d = c.to_dict()
    assert d["name"] == "sparsezarr.sparse" and d["configuration"]["layout"] == "coo"
    assert sparsezarr.SparseCodec.from_dict(d) == c
    with pytest.raises(ValueError, match="layout"):
        sparsezarr.SparseCodec(layout="csr")
    assert zarr.registry.get_codec_class("sparsezarr.sparse") is sparsezarr.SparseCodec


# ---------------------------------------------------------------------------------------------
# Validation: clear errors, store unchanged
# ---------------------------------------------------------------------------------------------


def snapshot(path):
    return {p.relative_to(path): p.read_bytes() for p in path.rglob("*") if p.is_file()}


def test_validation_errors_leave_the_store_unchanged(tmp_path, matrix):
    path = tmp_path / "v.zarr"
    a = sparsezarr.from_scipy(matrix, path, chunks=(16, 16), shards=(32, 32))
    before = snapshot(path)
    with pytest.raises(ValueError, match="shape"):
        a[0:10, 0:10] = sp.eye(11, format="csr", dtype="float32")
    with pytest.raises(TypeError, match="cannot store"):
        a[0:2, 0:2] = np.array([[1.5, 2.5], [0, 0]], dtype="complex64")
    bad = sp.csr_array(sp.eye(10, format="csr", dtype="float32"))
    bad.indices[3] = 99  # column index out of range
    with pytest.raises(ValueError, match="outside"):
        a[0:10, 0:10] = bad
    bad = sp.csr_array(sp.eye(10, format="csr", dtype="float32"))
    bad.indptr[4] = 9  # not monotone
    with pytest.raises(ValueError, match="monotone"):
        a[0:10, 0:10] = bad
    with pytest.raises(IndexError):
        a[0:10:2, 0:5] = np.zeros((5, 5), dtype="float32")
    with pytest.raises(IndexError):
        a[100]
    assert snapshot(path) == before
    with pytest.raises(ValueError, match="NaN"):
        sparsezarr.create_sparse(tmp_path / "n.zarr", shape=(3,), dtype="float32", fill_value=np.nan)
    with pytest.raises(TypeError):
        sparsezarr.create_sparse(tmp_path / "s.zarr", shape=(3,), dtype="U3")
    ro = sparsezarr.open_sparse(path, mode="r")
    with pytest.raises(ValueError, match="read-only"):
        ro[0:2, 0:2] = np.zeros((2, 2), dtype="float32")
    assert snapshot(path) == before


def test_corrupt_and_truncated_chunks(tmp_path, matrix):
    path = tmp_path / "c.zarr"
    a = sparsezarr.from_scipy(matrix, path, chunks=(16, 16))
    chunk = path / "c" / "0" / "0"
    good = chunk.read_bytes()
    chunk.write_bytes(good[: len(good) - 3])
    with pytest.raises(CorruptChunkError, match="c/0/0"):
        a[0:5, 0:5]
    chunk.write_bytes(b"SZSP" + b"\x09" + good[5:])
    with pytest.raises(Exception, match="version"):
        a[0:5, 0:5]
    garbage = bytearray(good)
    garbage[40:48] = b"\xff" * 8
    chunk.write_bytes(bytes(garbage))
    with pytest.raises(CorruptChunkError):
        a.to_scipy()
    before = snapshot(path)
    with pytest.raises(CorruptChunkError):
        a[3:5, 3:5] = np.ones((2, 2), dtype="float32")  # partial chunk: must read the corrupt one
    assert snapshot(path) == before
    np.testing.assert_array_equal(a[20:40, 20:40].todense(), matrix.toarray()[20:40, 20:40])


# ---------------------------------------------------------------------------------------------
# Real single-cell matrices
# ---------------------------------------------------------------------------------------------


def _real_matrices():
    import scipy.io

    out = {}
    mtx = require_data("10x_mouse_neurons_10k", "matrix.mtx.gz")
    out["10x_neurons"] = sp.csr_array(scipy.io.mmread(str(mtx)).T.astype("float32"))
    out["10x_v3"] = sp.csr_array(scipy.io.mmread(str(require_data("10x_v3_small", "matrix.mtx.gz"))).T.astype("float32"))
    import anndata

    for name in ("Bladder-10X_P4_3", "Liver-10X_P7_0"):
        ad = anndata.read_h5ad(require_data("tabula_muris", f"{name}.h5ad"))
        out[name] = sp.csr_array(ad.X).T.tocsr()
    return out


def test_real_matrices_roundtrip_exactly(tmp_path):
    for name, m in _real_matrices().items():
        a = sparsezarr.from_scipy(m, tmp_path / f"{name}.zarr", chunks=(1024, 256), shards=(4096, 1024))
        out = a.to_scipy()
        assert out.shape == m.shape and out.nnz == m.nnz, name
        assert (out != m).nnz == 0, name
        np.testing.assert_array_equal(out.indptr, m.indptr)
        # one gene (column) and a block
        col = a.to_scipy((slice(None), slice(17, 18)))
        assert (col != m[:, [17]]).nnz == 0
        blk = a[100:400, 50:300]
        np.testing.assert_array_equal(blk.todense(), m[100:400, 50:300].toarray())


# -- default chunk shapes --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "shape, density",
    [((100_000, 20_000), 0.069), ((100_000, 20_000), 0.03), ((20_000, 100_000), 0.05), ((5_000_000, 30_000), 0.01), ((3000, 3000), 0.9)],
)
def test_default_chunks_of_2d_arrays_follow_the_documented_rule(shape, density):
    """Bands of 256 along the shorter axis; along the longer one a power of two (256-65,536, or
    the whole axis) putting between 2**15.5 and 2**16.5 stored values in a chunk."""
    from sparsezarr.sparse import DEFAULT_BAND, DEFAULT_CHUNK_VALUES, default_chunks

    chunks = default_chunks(shape, density)
    short = 0 if shape[0] < shape[1] else 1
    assert chunks[short] == min(DEFAULT_BAND, shape[short])
    along = chunks[1 - short]
    if along not in (256, 1 << 16, shape[1 - short]):
        assert along & (along - 1) == 0
        values = chunks[0] * chunks[1] * density
        assert DEFAULT_CHUNK_VALUES / 2**0.5 <= values <= DEFAULT_CHUNK_VALUES * 2**0.5, (chunks, values)


def test_from_scipy_chooses_chunks_from_the_datas_density(tmp_path):
    """A sparser matrix gets taller chunks (the same stored values per chunk), and one column of
    the default layout reads few chunks: the count of chunks a gene touches is rows / chunk rows."""
    from sparsezarr.sparse import default_chunks

    dense = sp.random(20_000, 1_000, density=0.05, format="csr", dtype="float32", random_state=3)
    sparse_ = sp.random(20_000, 1_000, density=0.005, format="csr", dtype="float32", random_state=4)
    a = sparsezarr.from_scipy(dense, tmp_path / "a.zarr")
    b = sparsezarr.from_scipy(sparse_, tmp_path / "b.zarr")
    assert a.chunks == default_chunks(dense.shape, dense.nnz / (20_000 * 1_000)) == (4096, 256)
    assert b.chunks == default_chunks(sparse_.shape, sparse_.nnz / (20_000 * 1_000)) == (20_000, 256)
    np.testing.assert_array_equal(b.to_scipy((slice(None), slice(7, 8))).toarray(), sparse_[:, [7]].toarray())
    # Explicit chunks win, and an empty array created without data assumes the documented density.
    assert sparsezarr.from_scipy(dense, tmp_path / "c.zarr", chunks=(1000, 100)).chunks == (1000, 100)
    assert sparsezarr.create_sparse(tmp_path / "d.zarr", shape=(100_000, 20_000)).chunks == (4096, 256)
    assert sparsezarr.create_sparse(tmp_path / "e.zarr", shape=(100_000, 20_000), density=0.01).chunks == (32768, 256)
