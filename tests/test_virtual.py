"""Virtual arrays: compositions checked against numpy and tensorstore on the same stored arrays,
writes through views, sparse and CSR views (Tabula Muris vs anndata.concat), laziness, and every
safety rule (each test fails if its check is removed)."""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp
import zarr
from zarr.storage import LocalStore, MemoryStore

import sparsezarr as sz
from sparsezarr.errors import MetadataError

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


# ------------------------------------------------------------------------------------------------
# A numpy evaluator of documents: the independent reference
# ------------------------------------------------------------------------------------------------


def evaluate(node: dict[str, Any], root: zarr.Group, dtype: Any, fill: Any) -> np.ndarray:
    k = node["kind"]
    if k == "array":
        return np.asarray(zarr.open_array(root.store, path=node["path"], mode="r")[...])
    if k == "fill":
        return np.full(node["shape"], fill, dtype=dtype)
    if k == "concat":
        return np.concatenate([evaluate(c, root, dtype, fill) for c in node["components"]], axis=node["axis"])
    if k == "stack":
        return np.stack([evaluate(c, root, dtype, fill) for c in node["components"]], axis=node["axis"])
    src = evaluate(node["source"], root, dtype, fill)
    key: list[Any] = []
    for s in node["selection"]:
        if s == "newaxis":
            key.append(None)
        elif isinstance(s, int):
            key.append(s)
        else:
            idx = s["start"] + s["step"] * np.arange(s["size"])
            key.append(idx)
    # Apply one axis at a time (orthogonal), then insert new axes, then transpose.
    out = src
    axis = 0
    for entry in key:
        if entry is None:
            out = np.expand_dims(out, axis)
            axis += 1
        elif isinstance(entry, int):
            out = np.take(out, entry, axis=axis)
        else:
            out = np.take(out, entry, axis=axis)
            axis += 1
    if "transpose" in node:
        out = np.transpose(out, node["transpose"])
    return out


def random_array(group: zarr.Group, name: str, shape: tuple[int, ...], rng: np.random.Generator, dtype: str = "int32") -> zarr.Array:
    chunks = tuple(int(rng.integers(1, max(2, n) + 1)) for n in shape)
    kind = rng.integers(0, 3)
    if kind == 0:
        arr = group.create_array(name, shape=shape, chunks=chunks, dtype=dtype, fill_value=int(rng.integers(-3, 3)))
    elif kind == 1:
        shards = tuple(c * int(rng.integers(1, 3)) for c in chunks)
        arr = group.create_array(name, shape=shape, chunks=chunks, shards=shards, dtype=dtype)
    else:
        arr = zarr.create_array(
            group.store, name=f"{group.path}/{name}" if group.path else name, shape=shape, chunks=chunks, dtype=dtype, zarr_format=2
        )
    arr[...] = rng.integers(-1000, 1000, size=shape).astype(dtype)
    if rng.random() < 0.3 and shape and shape[0] > 1:
        arr[0] = arr.fill_value  # some chunks empty: read as the component's own fill value
    return arr


def random_node(group: zarr.Group, shape: list[int], rng: np.random.Generator, depth: int, counter: list[int]) -> dict[str, Any]:
    """A random node of the given shape (concat/stack/index/fill/array)."""
    choice = rng.integers(0, 6) if depth < 3 else 0
    ndim = len(shape)
    if choice == 0 or (choice == 2 and ndim == 0):
        counter[0] += 1
        name = f"c{counter[0]}"
        random_array(group, name, tuple(shape), rng)
        return {"kind": "array", "path": name, "shape": shape, "data_type": "int32"}
    if choice == 1:
        return {"kind": "fill", "shape": shape}
    if choice == 2:  # concat along a random axis, split into 1-3 parts
        axis = int(rng.integers(0, ndim))
        n = shape[axis]
        cuts = sorted(rng.integers(0, n + 1, size=int(rng.integers(0, 3))).tolist())
        bounds = [0, *cuts, n]
        parts = []
        for a, b in itertools.pairwise(bounds):
            s = list(shape)
            s[axis] = b - a
            parts.append(random_node(group, s, rng, depth + 1, counter))
        return {"kind": "concat", "axis": axis, "components": parts}
    if choice == 3 and ndim > 0 and 1 <= shape[0] <= 3:  # stack along axis 0
        base = shape[1:]
        return {"kind": "stack", "axis": 0, "components": [random_node(group, list(base), rng, depth + 1, counter) for _ in range(shape[0])]}
    if choice in (3, 4):  # index: a bigger source sliced (maybe reversed) to this shape
        src_shape = []
        selection: list[Any] = []
        for n in shape:
            step = int(rng.choice([1, 2, -1, -3]))
            size = n
            extent = (size - 1) * abs(step) + 1 if size else 0
            m = extent + int(rng.integers(0, 3))
            lo = int(rng.integers(0, m - extent + 1)) if size else 0
            start = lo if step > 0 else lo + extent - 1
            src_shape.append(max(m, 1))
            selection.append({"start": start if size else 0, "step": step, "size": size})
        # an integer index on a new leading source dimension
        extra = int(rng.integers(1, 3))
        src_shape.insert(0, extra)
        selection.insert(0, int(rng.integers(0, extra)))
        source = random_node(group, src_shape, rng, depth + 1, counter)
        node: dict[str, Any] = {"kind": "index", "source": source, "selection": selection}
        if ndim > 1 and rng.random() < 0.5:
            perm = rng.permutation(ndim).tolist()
            inv = np.argsort(perm).tolist()
            # the index result has shape permuted by inv; make transpose bring it to `shape`
            node["selection"] = [selection[0]] + [selection[1 + i] for i in inv]
            node["source"] = random_node(group, [src_shape[0]] + [src_shape[1 + i] for i in inv], rng, depth + 1, counter)
            node["transpose"] = perm
        return node
    counter[0] += 1
    name = f"c{counter[0]}"
    random_array(group, name, tuple(shape), rng)
    return {"kind": "array", "path": name, "shape": shape, "data_type": "int32"}


def random_key(shape: tuple[int, ...], rng: np.random.Generator) -> tuple[Any, ...]:
    key: list[Any] = []
    for n in shape:
        r = rng.integers(0, 4)
        if r == 0 and n:
            key.append(int(rng.integers(-n, n)))
        elif r == 1 and n:
            key.append(rng.integers(0, n, size=int(rng.integers(0, 5))))
        else:
            a, b = sorted(rng.integers(0, n + 1, size=2).tolist())
            step = int(rng.choice([1, 1, 2, -1, -2]))
            key.append(slice(a, b, step) if step > 0 else slice(b - 1 if b else None, a - 1 if a else None, step))
    return tuple(key)


def oindex(ref: np.ndarray, key: tuple[Any, ...]) -> np.ndarray:
    out = ref
    axis = 0
    for k in key:
        if isinstance(k, int):
            out = np.take(out, k, axis=axis)
        elif isinstance(k, slice):
            out = out[(slice(None),) * axis + (k,)]
            axis += 1
        else:
            out = np.take(out, k, axis=axis)
            axis += 1
    return out


@pytest.mark.parametrize("seed", range(30))
def test_random_compositions_match_numpy(tmp_path: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    store = LocalStore(str(tmp_path)) if seed % 2 else MemoryStore()
    group = zarr.open_group(store, mode="w")
    shape = [int(n) for n in rng.integers(1, 7, size=int(rng.integers(1, 4)))]
    source = random_node(group, shape, rng, 0, [0])
    doc = {"virtual_array_format": 1, "shape": shape, "data_type": "int32", "fill_value": -5, "source": source}
    view = sz.VirtualArray(doc, store)
    assert view.num_opened == 0
    ref = evaluate(source, group, np.int32, -5)
    assert ref.shape == tuple(shape)
    np.testing.assert_array_equal(view.read(), ref)
    for _ in range(8):
        key = random_key(view.shape, rng)
        np.testing.assert_array_equal(view.read(key), oindex(ref, key), err_msg=str(key))
    # A basic-indexed view of the view is a view (no I/O) with numpy's result.
    sub = view[tuple(slice(None, None, -1) if i % 2 else slice(1, None) for i in range(view.ndim))]
    np.testing.assert_array_equal(sub.read(), ref[tuple(slice(None, None, -1) if i % 2 else slice(1, None) for i in range(view.ndim))])
    # The document round-trips.
    again = sz.VirtualArray(json.loads(view.to_json()), store)
    np.testing.assert_array_equal(again.read(), ref)


def contains_fill(node: dict[str, Any]) -> bool:
    if node["kind"] == "fill":
        return True
    return any(contains_fill(c) for c in node.get("components", ())) or ("source" in node and contains_fill(node["source"]))


@pytest.mark.parametrize("seed", range(20))
def test_random_writes_land_in_components(seed: int) -> None:
    rng = np.random.default_rng(1000 + seed)
    store = MemoryStore()
    group = zarr.open_group(store, mode="w")
    shape = [int(n) for n in rng.integers(1, 7, size=int(rng.integers(1, 4)))]
    source = random_node(group, shape, rng, 0, [0])
    view = sz.VirtualArray({"virtual_array_format": 1, "shape": shape, "data_type": "int32", "fill_value": 0, "source": source}, store)
    expected = evaluate(source, group, np.int32, 0)
    for _ in range(4):
        key = random_key(view.shape, rng)
        # Repeated integer indices make the written value ambiguous: use unique ones.
        key = tuple(np.unique(k) if isinstance(k, np.ndarray) else k for k in key)
        target = oindex(expected, key)
        value = rng.integers(-50, 50, size=target.shape).astype(np.int32)
        before = evaluate(source, group, np.int32, 0)
        touched = np.zeros(expected.shape, dtype=np.int64)
        idx = np.arange(touched.size).reshape(touched.shape)
        hit = np.atleast_1d(oindex(idx, key)).ravel()
        fill_mask = evaluate_fill_mask(source, tuple(shape))
        if fill_mask.ravel()[hit].any():
            with pytest.raises(ValueError, match="fill region"):
                view[key] = value
            np.testing.assert_array_equal(evaluate(source, group, np.int32, 0), before)  # nothing written
            continue
        view[key] = value
        flat = expected.ravel().copy()
        flat[hit] = np.broadcast_to(value, target.shape).ravel()
        expected = flat.reshape(expected.shape)
        np.testing.assert_array_equal(evaluate(source, group, np.int32, 0), expected)
        np.testing.assert_array_equal(view.read(), expected)


def evaluate_fill_mask(node: dict[str, Any], shape: tuple[int, ...]) -> np.ndarray:
    """Where a node's elements come from fill blocks."""
    k = node["kind"]
    if k == "array":
        return np.zeros(node["shape"], dtype=bool)
    if k == "fill":
        return np.ones(node["shape"], dtype=bool)
    if k == "concat":
        return np.concatenate([evaluate_fill_mask(c, ()) for c in node["components"]], axis=node["axis"])
    if k == "stack":
        return np.stack([evaluate_fill_mask(c, ()) for c in node["components"]], axis=node["axis"])
    src = evaluate_fill_mask(node["source"], ())
    out = src
    axis = 0
    for s in node["selection"]:
        if s == "newaxis":
            out = np.expand_dims(out, axis)
            axis += 1
        elif isinstance(s, int):
            out = np.take(out, s, axis=axis)
        else:
            out = np.take(out, s["start"] + s["step"] * np.arange(s["size"]), axis=axis)
            axis += 1
    return np.transpose(out, node["transpose"]) if "transpose" in node else out


# ------------------------------------------------------------------------------------------------
# tensorstore as a second oracle
# ------------------------------------------------------------------------------------------------


def test_concat_and_stack_match_tensorstore(tmp_path: Path) -> None:
    ts = pytest.importorskip("tensorstore")
    rng = np.random.default_rng(7)
    group = zarr.open_group(str(tmp_path), mode="w")
    a = group.create_array("a", shape=(3, 4), chunks=(2, 3), dtype="int32")
    b = group.create_array("b", shape=(5, 4), chunks=(2, 2), shards=(4, 4), dtype="int32", compressors=zarr.codecs.GzipCodec())
    c = group.create_array("c", shape=(3, 4), chunks=(3, 1), dtype="int32", fill_value=7)
    a[...] = rng.integers(0, 100, size=(3, 4))
    b[...] = rng.integers(100, 200, size=(5, 4))
    c[1:] = rng.integers(200, 300, size=(2, 4))

    def open_ts(name: str) -> Any:
        return ts.open({"driver": "zarr3", "kvstore": {"driver": "file", "path": str(tmp_path / name)}}).result()

    ta, tb, tc = open_ts("a"), open_ts("b"), open_ts("c")
    cases = [
        (sz.concat([a, b, c], axis=0), ts.concat([ta, tb, tc], axis=0)),
        (sz.stack([a, c], axis=1), ts.stack([ta, tc], axis=1)),
        (sz.concat([sz.concat([a, c], axis=1), sz.concat([b])[:3]], axis=1), None),
    ]
    ref3 = np.concatenate([np.concatenate([a[...], c[...]], axis=1), b[:3]], axis=1)
    cases[2] = (cases[2][0], ts.concat([ts.concat([ta, tc], axis=1), tb[:3].translate_to[0, 0]], axis=1))
    for view, tview in cases:
        full = tview.read().result()
        np.testing.assert_array_equal(view.read(), full)
        np.testing.assert_array_equal(view.read(), np.asarray(view))
        for _ in range(20):
            key = tuple(slice(*sorted(rng.integers(0, n + 1, size=2).tolist())) for n in view.shape)
            np.testing.assert_array_equal(view.read(key), tview[key].read().result())
        # Reversed, stepped views: tensorstore keeps origins, so re-zero them.
        key = tuple(slice(None, None, -2) for _ in view.shape)
        np.testing.assert_array_equal(view[key].read(), tview[key].translate_to[(0,) * view.ndim].read().result())
    np.testing.assert_array_equal(cases[2][0].read(), ref3)
    # A write through the concat reaches the same cells tensorstore would write.
    view = sz.concat([a, b], axis=0)
    view[2:4, 1:3] = np.array([[-7, -7], [-8, -8]], dtype=np.int32)
    assert a[2, 1:3].tolist() == [-7, -7] and b[0, 1:3].tolist() == [-8, -8]
    np.testing.assert_array_equal(ts.concat([ta, tb], axis=0)[2:4, 1:3].read().result(), [[-7, -7], [-8, -8]])


# ------------------------------------------------------------------------------------------------
# Saving, opening, laziness
# ------------------------------------------------------------------------------------------------


def test_save_open_and_no_io_at_open(tmp_path: Path) -> None:
    group = zarr.open_group(str(tmp_path), mode="w")
    for i in range(3):
        group.create_array(f"s{i}", shape=(2, 3), dtype="float64")[...] = i
    view = sz.concat([group[f"s{i}"] for i in range(3)])
    view.save(str(tmp_path), "views/all")
    assert not (tmp_path / "views" / "all" / "zarr.json").exists()  # zarr-python never sees an all-fill array
    opened = sz.open_virtual(LocalStore(str(tmp_path)), "views/all")
    assert opened.num_opened == 0 and opened.shape == (6, 3)
    np.testing.assert_array_equal(opened.read()[:, 0], [0, 0, 1, 1, 2, 2])
    assert opened.num_opened == 3
    # Opened by directory: the root defaults to the view's parent directory; the components are
    # in the grandparent, so the caller names it.
    with pytest.raises(ValueError, match="escapes"):
        sz.open_virtual(tmp_path / "views" / "all").read()
    np.testing.assert_array_equal(sz.open_virtual(tmp_path / "views" / "all", root=tmp_path).read(), opened.read())
    # A view in the same group as its components opens with no root argument.
    view.save(str(tmp_path), "flat")
    np.testing.assert_array_equal(sz.open_virtual(tmp_path / "flat").read(), opened.read())


def test_ten_thousand_components_open_without_io(tmp_path: Path) -> None:
    calls: list[str] = []

    class Counting(MemoryStore):
        async def get(self, key: str, *args: Any, **kwargs: Any) -> Any:
            calls.append(key)
            return await super().get(key, *args, **kwargs)

    store = Counting()
    nodes = [{"kind": "array", "path": f"missing/{i}", "shape": [1, 4], "data_type": "float32"} for i in range(10_000)]
    doc = {
        "virtual_array_format": 1,
        "shape": [10_000, 4],
        "data_type": "float32",
        "fill_value": 0.0,
        "source": {"kind": "concat", "axis": 0, "components": nodes},
    }
    view = sz.VirtualArray(doc, store)
    assert view.shape == (10_000, 4) and view.num_components == 10_000 and view.num_opened == 0
    assert calls == []
    # Touching one component opens just that one (and it does not exist).
    with pytest.raises(FileNotFoundError, match="missing/5"):
        view.read((5, slice(None)))
    assert all(k.startswith("missing/5/") for k in calls)


def test_components_may_differ_in_format_and_codecs(tmp_path: Path) -> None:
    store = LocalStore(str(tmp_path))
    v2 = zarr.create_array(store, name="v2", shape=(4, 3), chunks=(3, 2), dtype="<f8", zarr_format=2, order="F")
    v3 = zarr.create_array(store, name="v3", shape=(4, 3), chunks=(1, 3), shards=(2, 3), dtype="float64")
    nested = zarr.create_array(store, name="n", shape=(2, 3), chunks=(2, 3), dtype="float64")
    v2[...] = np.arange(12.0).reshape(4, 3)
    v3[...] = -np.arange(12.0).reshape(4, 3)
    nested[...] = 0.5
    inner = sz.concat([v2, v3])
    inner.save(str(tmp_path), "inner")
    outer = sz.concat([sz.open_virtual(store, "inner"), nested])
    ref = np.concatenate([v2[...], v3[...], nested[...]])
    np.testing.assert_array_equal(outer.read(), ref)
    # A saved view used as a component of another saved view is resolved recursively.
    doc = {
        "virtual_array_format": 1,
        "shape": [10, 3],
        "data_type": "float64",
        "fill_value": "NaN",
        "source": {
            "kind": "concat",
            "axis": 0,
            "components": [{"kind": "array", "path": "inner", "shape": [8, 3], "data_type": "float64"}, {"kind": "fill", "shape": [2, 3]}],
        },
    }
    v = sz.VirtualArray(doc, store)
    got = v.read()
    np.testing.assert_array_equal(got[:8], ref[:8])
    assert np.isnan(got[8:]).all()


def test_materialize_dense(tmp_path: Path) -> None:
    src = zarr.open_group(str(tmp_path / "src"), mode="w")
    a = src.create_array("a", shape=(50, 7), chunks=(8, 7), dtype="int16")
    b = src.create_array("b", shape=(30, 7), chunks=(16, 4), dtype="int16")
    a[...] = np.arange(350).reshape(50, 7)
    b[...] = -np.arange(210).reshape(30, 7)
    view = sz.concat([a, b])[::-1]
    out = view.materialize(str(tmp_path / "dst"), "copy", chunks=(16, 7), block_bytes=200)
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "dst"), path="copy")[...], np.concatenate([a[...], b[...]])[::-1])
    assert out.shape == (80, 7)


# ------------------------------------------------------------------------------------------------
# Sparse and CSR views
# ------------------------------------------------------------------------------------------------


def test_sparse_views_stay_sparse(tmp_path: Path) -> None:
    import sparse as pydata_sparse

    rng = np.random.default_rng(3)
    mats = [sp.random(20 + 5 * i, 30, density=0.1, format="csr", random_state=i, dtype=np.float32) for i in range(3)]
    arrs = [sz.from_scipy(m, str(tmp_path / "s"), path=f"m{i}", chunks=(8, 16)) for i, m in enumerate(mats)]
    view = sz.concat(arrs, axis=0)
    assert view.storage == "sparse"
    ref = sp.vstack(mats).toarray()
    got = view.read()
    assert isinstance(got, pydata_sparse.COO)
    np.testing.assert_array_equal(got.todense(), ref)
    for _ in range(10):
        key = random_key(view.shape, rng)
        np.testing.assert_array_equal(np.asarray(view.read(key).todense()), oindex(ref, key))
    stacked = sz.stack([arrs[0], arrs[0]], axis=2)[3:9, ::-2]
    np.testing.assert_array_equal(stacked.read().todense(), np.stack([ref[:20], ref[:20]], axis=2)[3:9, ::-2])
    # Writing a scipy block across the boundary of two components.
    block = sp.random(10, 30, density=0.2, format="coo", random_state=9, dtype=np.float32)
    view[15:25] = block
    ref[15:25] = block.toarray()
    np.testing.assert_array_equal(view.read().todense(), ref)
    np.testing.assert_array_equal(sz.open_sparse(str(tmp_path / "s"), path="m1")[...].todense(), ref[20:45])
    copy = view.materialize(str(tmp_path / "copy"), chunks=(16, 16))
    np.testing.assert_array_equal(copy[...].todense(), ref)


def _tabula_cells(path: Path) -> Any:
    import anndata as ad

    a = ad.read_h5ad(path)
    # X is genes x cells: cells are the rows of X.T
    return ad.AnnData(X=sp.csr_matrix(a.X.T, dtype=np.float32))


@pytest.mark.skipif(not (DATA / "tabula_muris").is_dir(), reason="shared data not present")
def test_tabula_muris_atlas_view_matches_anndata_concat(tmp_path: Path) -> None:
    import anndata as ad

    files = sorted((DATA / "tabula_muris").glob("*.h5ad"))
    assert len(files) == 3
    samples = [_tabula_cells(f) for f in files]
    stores = []
    for i, s in enumerate(samples):
        # Different chunkings per sample, as independently written stores would have.
        sz.write_csr(str(tmp_path / "atlas"), s.X, path=f"sample{i}", chunks=[4096, 1000, 30000][i])
        stores.append(sz.open_csr(str(tmp_path / "atlas"), path=f"sample{i}"))
    view = sz.concat(stores, axis=0)
    expected = ad.concat(samples).X.tocsr()
    assert view.storage == "csr" and view.shape == expected.shape
    assert view.nnz == expected.nnz
    got = view.read()
    assert isinstance(got, sp.csr_array)
    assert (got != expected).nnz == 0
    rng = np.random.default_rng(0)
    rows = rng.integers(0, view.shape[0], size=300)
    cols = np.sort(rng.choice(view.shape[1], size=500, replace=False))
    assert (view.read(rows) != expected[rows]).nnz == 0
    assert (view.read((rows, cols)) != expected[rows][:, cols]).nnz == 0
    assert (view.read(slice(100, 900)) != expected[100:900]).nnz == 0
    # Saved and reopened, then sliced to a sub-view of every other cell, reversed.
    view.save(str(tmp_path / "atlas"), "all")
    reopened = sz.open_virtual(tmp_path / "atlas" / "all", root=tmp_path / "atlas")
    sub = reopened[::-2]
    assert (sub.read() != expected[::-2]).nnz == 0
    # And copied into a real store that anndata reads.
    reopened.materialize(str(tmp_path / "copy"), "X", overwrite=True)
    back = ad.io.sparse_dataset(zarr.open_group(str(tmp_path / "copy"), mode="r")["X"])[...]
    assert (back != expected).nnz == 0
    with pytest.raises(NotImplementedError):
        view[0] = 1


def test_csc_views_join_along_columns(tmp_path: Path) -> None:
    mats = [sp.random(40, 10 + i, density=0.2, format="csc", random_state=i, dtype=np.float64) for i in range(3)]
    arrs = []
    for i, m in enumerate(mats):
        sz.write_csc(str(tmp_path), m, path=f"m{i}")
        arrs.append(sz.open_csc(str(tmp_path), path=f"m{i}"))
    view = sz.concat(arrs, axis=1)
    ref = sp.hstack(mats).tocsc()
    assert view.storage == "csc"
    assert (view.read() != ref).nnz == 0
    cols = np.array([30, 0, 12, 12, 5])
    assert (view.read((slice(None), cols)) != ref[:, cols]).nnz == 0
    with pytest.raises(MetadataError, match="only be combined"):
        sz.concat(arrs[:1] + arrs[:1], axis=0).read()


def test_csr_components_combine_along_rows_only(tmp_path: Path) -> None:
    m = sp.random(10, 6, density=0.3, format="csr", random_state=1, dtype=np.float32)
    sz.write_csr(str(tmp_path), m, path="x")
    x = sz.open_csr(str(tmp_path), path="x")
    with pytest.raises(MetadataError, match="only be combined"):
        sz.concat([x, x], axis=1)
    with pytest.raises(MetadataError, match="only be combined"):
        sz.concat([x, x], axis=0)[:, 1:3]


# ------------------------------------------------------------------------------------------------
# Safety: each test fails if its check is removed
# ------------------------------------------------------------------------------------------------


def _arr_doc(node: dict[str, Any], shape: list[int], dtype: str = "int32") -> dict[str, Any]:
    return {"virtual_array_format": 1, "shape": shape, "data_type": dtype, "fill_value": 0, "source": node}


@pytest.fixture
def layout(tmp_path: Path) -> dict[str, Path]:
    """root/ holds the view's components; outside/ holds a valid array the view must not reach."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    for d, value in ((root, 1), (outside, 666)):
        g = zarr.open_group(str(d), mode="w")
        g.create_array("arr", shape=(2, 2), dtype="int32")[...] = value
        g.create_array("secret", shape=(2, 2), dtype="int32")[...] = value
    return {"root": root, "outside": outside}


def test_dotdot_cannot_escape_the_root(layout: dict[str, Path]) -> None:
    doc = _arr_doc({"kind": "array", "path": "../outside/secret", "shape": [2, 2], "data_type": "int32"}, [2, 2])
    view = sz.open_virtual(doc, root=layout["root"])
    with pytest.raises(ValueError, match="escapes the view's root"):
        view.read()
    # Also when the escape is hidden after a detour through a real directory.
    doc["source"]["path"] = "arr/../../outside/secret"
    with pytest.raises(ValueError, match="escapes the view's root"):
        sz.open_virtual(doc, root=layout["root"]).read()


def test_absolute_paths_are_refused(layout: dict[str, Path]) -> None:
    doc = _arr_doc({"kind": "array", "path": str(layout["outside"] / "secret"), "shape": [2, 2], "data_type": "int32"}, [2, 2])
    with pytest.raises(ValueError, match="must be relative"):
        sz.open_virtual(doc, root=layout["root"]).read()


def test_symlinks_cannot_escape_the_root(layout: dict[str, Path]) -> None:
    os.symlink(layout["outside"] / "secret", layout["root"] / "link")
    doc = _arr_doc({"kind": "array", "path": "link", "shape": [2, 2], "data_type": "int32"}, [2, 2])
    with pytest.raises(ValueError, match="symbolic link"):
        sz.open_virtual(doc, root=layout["root"]).read()
    # A link to a directory that contains the array is caught too.
    os.symlink(layout["outside"], layout["root"] / "dirlink")
    doc["source"]["path"] = "dirlink/secret"
    with pytest.raises(ValueError, match="symbolic link"):
        sz.open_virtual(doc, root=layout["root"]).read()
    # Links that stay inside the root are fine.
    os.symlink(layout["root"] / "arr", layout["root"] / "inner_link")
    doc["source"]["path"] = "inner_link"
    assert sz.open_virtual(doc, root=layout["root"]).read().tolist() == [[1, 1], [1, 1]]


def test_urls_need_an_allow_list(layout: dict[str, Path]) -> None:
    url = (layout["outside"] / "secret").resolve().as_uri()
    doc = _arr_doc({"kind": "array", "url": url, "shape": [2, 2], "data_type": "int32"}, [2, 2])
    with pytest.raises(ValueError, match="allow-list"):
        sz.open_virtual(doc, root=layout["root"]).read()
    with pytest.raises(ValueError, match="allow-list"):
        sz.open_virtual(doc, root=layout["root"], allow=[layout["root"].resolve().as_uri() + "/"]).read()
    ok = sz.open_virtual(doc, root=layout["root"], allow=[layout["outside"].resolve().as_uri() + "/"])
    assert ok.read().tolist() == [[666, 666], [666, 666]]
    # A symlink inside the allowed prefix that leads out of it is refused.
    allowed = layout["root"].parent / "allowed"
    allowed.mkdir()
    os.symlink(layout["outside"] / "secret", allowed / "sneaky")
    doc["source"]["url"] = (allowed / "sneaky").as_uri()
    with pytest.raises(ValueError, match="symbolic link"):
        sz.open_virtual(doc, root=layout["root"], allow=[allowed.as_uri() + "/"]).read()
    # '..' inside a URL is refused rather than normalised past the prefix.
    doc["source"]["url"] = allowed.as_uri() + "/../outside/secret"
    with pytest.raises(ValueError, match=r"'\.\.'"):
        sz.open_virtual(doc, root=layout["root"], allow=[allowed.as_uri() + "/"]).read()


def test_cycles_are_detected(tmp_path: Path) -> None:
    store = LocalStore(str(tmp_path))
    zarr.open_group(store, mode="w")

    def save(name: str, target: str) -> None:
        doc = _arr_doc({"kind": "array", "path": target, "shape": [2], "data_type": "int32"}, [2])
        (tmp_path / name).mkdir()
        (tmp_path / name / "virtual.json").write_text(json.dumps(doc))

    save("a", "b")
    save("b", "a")
    with pytest.raises(MetadataError, match="cycle"):
        sz.open_virtual(store, "a").read()
    save("self", "self")
    with pytest.raises(MetadataError, match="cycle"):
        sz.open_virtual(store, "self").read()


def test_depth_is_limited(tmp_path: Path) -> None:
    store = LocalStore(str(tmp_path))
    zarr.open_group(store, mode="w").create_array("base", shape=(2,), dtype="int32")
    prev = "base"
    for i in range(40):  # a chain of views, each wrapping the previous one (no cycle)
        doc = _arr_doc({"kind": "array", "path": prev, "shape": [2], "data_type": "int32"}, [2])
        (tmp_path / f"v{i}").mkdir()
        (tmp_path / f"v{i}" / "virtual.json").write_text(json.dumps(doc))
        prev = f"v{i}"
    assert sz.open_virtual(store, "v20").read().tolist() == [0, 0]
    with pytest.raises(MetadataError, match="deeper than"):
        sz.open_virtual(store, "v39").read()
    node: dict[str, Any] = {"kind": "array", "path": "base", "shape": [2], "data_type": "int32"}
    for _ in range(40):
        node = {"kind": "concat", "axis": 0, "components": [node]}
    with pytest.raises(MetadataError, match="deeper than"):
        sz.VirtualArray(_arr_doc(node, [2]), store)


def test_mismatches_are_detected_on_first_touch(tmp_path: Path) -> None:
    store = LocalStore(str(tmp_path))
    g = zarr.open_group(store, mode="w")
    g.create_array("a", shape=(3, 4), dtype="int32")
    g.create_array("f", shape=(3, 4), dtype="float32")
    wrong_shape = sz.VirtualArray(_arr_doc({"kind": "array", "path": "a", "shape": [3, 5], "data_type": "int32"}, [3, 5]), store)
    with pytest.raises(MetadataError, match="shape"):
        wrong_shape.read()
    wrong_type = sz.VirtualArray(_arr_doc({"kind": "array", "path": "f", "shape": [3, 4], "data_type": "int32"}, [3, 4]), store)
    with pytest.raises(MetadataError, match="data type"):
        wrong_type.read()
    with pytest.raises(TypeError, match="different data types"):
        sz.concat([g["a"], g["f"]])


def test_malformed_documents_fail_clearly(tmp_path: Path) -> None:
    store = MemoryStore()
    leaf = {"kind": "array", "path": "a", "shape": [3, 4], "data_type": "int32"}
    bad = [
        ({**_arr_doc(leaf, [3, 4]), "virtual_array_format": 2}, "version"),
        ({**_arr_doc(leaf, [3, 4]), "extra": 1}, "unknown field"),
        (_arr_doc({"kind": "concat", "axis": 0, "components": [leaf, {**leaf, "shape": [3, 5]}]}, [6, 4]), "does not match"),
        (_arr_doc({"kind": "concat", "axis": 2, "components": [leaf]}, [3, 4]), "out of range"),
        (_arr_doc({"kind": "stack", "axis": 0, "components": []}, [0]), "at least one"),
        (_arr_doc(leaf, [4, 4]), "differs from the shape"),
        (_arr_doc({"kind": "index", "source": leaf, "selection": [{"start": 0, "step": 1, "size": 4}, 0]}, [4]), "leaves dimension"),
        (_arr_doc({"kind": "index", "source": leaf, "selection": [{"start": 0, "step": 0, "size": 1}, 0]}, [1]), "zero"),
        (_arr_doc({**leaf, "url": "file:///x"}, [3, 4]), "either path or url"),
        (_arr_doc({"kind": "array", "shape": [3, 4], "data_type": "int32"}, [3, 4]), "path or a url"),
    ]
    for doc, msg in bad:
        with pytest.raises(MetadataError, match=msg):
            sz.VirtualArray(doc, store)


def test_fill_regions_and_read_only_stores_refuse_writes(tmp_path: Path) -> None:
    g = zarr.open_group(str(tmp_path), mode="w")
    a = g.create_array("a", shape=(2, 3), dtype="int32")
    a[...] = 5
    doc = _arr_doc(
        {
            "kind": "concat",
            "axis": 0,
            "components": [{"kind": "array", "path": "a", "shape": [2, 3], "data_type": "int32"}, {"kind": "fill", "shape": [2, 3]}],
        },
        [4, 3],
    )
    view = sz.open_virtual(doc, root=tmp_path, mode="r+")
    with pytest.raises(ValueError, match="fill region"):
        view[1:3] = 9
    assert (a[...] == 5).all()  # the part that had storage was not written either
    view[0:2] = 9
    assert (a[...] == 9).all()
    ro = sz.open_virtual(doc, root=tmp_path, mode="r")
    with pytest.raises(sz.errors.ReadOnlyError):
        ro[0] = 1
    assert (a[...] == 9).all()


def test_index_errors() -> None:
    store = MemoryStore()
    g = zarr.open_group(store, mode="w")
    g.create_array("a", shape=(3, 4), dtype="int32")
    view = sz.concat([g["a"]])
    with pytest.raises(IndexError):
        view.read((3, 0))
    with pytest.raises(IndexError):
        view.read(
            np.array([0, 4]),
        )
    with pytest.raises(IndexError):
        view[0, 0, 0]
    with pytest.raises(TypeError, match="read"):
        view[[0, 1]]


def test_csr_views_of_views(tmp_path: Path) -> None:
    m = sp.random(12, 5, density=0.4, format="csr", random_state=4, dtype=np.float32)
    sz.write_csr(str(tmp_path), m, path="x")
    x = sz.open_csr(str(tmp_path), path="x")
    inner = sz.concat([x, x])
    outer = sz.concat([inner, x])  # inlined: works
    assert (outer.read() != sp.vstack([m, m, m]).tocsr()).nnz == 0
    inner.save(str(tmp_path), "inner")
    doc = outer.document
    doc["source"]["components"][0] = {"kind": "array", "path": "inner", "shape": [24, 5], "data_type": "float32"}
    stored = sz.VirtualArray(doc, LocalStore(str(tmp_path)))
    with pytest.raises(sz.errors.UnsupportedError, match="stored CSR/CSC view"):
        stored.read()
