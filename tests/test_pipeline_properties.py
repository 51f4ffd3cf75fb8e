"""Property test: random arrays, layouts and selections, written and read through both pipelines.

Every example builds the same array twice (sparsezarr.Pipeline and zarr-python's default
pipeline), applies the same random sequence of writes, and checks every read against a numpy model
of the array, and the two stores against each other.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import zarr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from zarr.codecs import BloscCodec, GzipCodec, ZstdCodec

from _helpers import OURS, ZARR_DEFAULT, assert_native, use_pipeline

DTYPES = ["uint8", "int16", "int32", "uint64", "float32", "float64", "complex64", "bool", ">i4", "<M8[s]"]
COMPRESSORS = {
    "none": None,
    "zstd": lambda: ZstdCodec(level=1),
    "gzip": lambda: GzipCodec(level=1),
    "blosc": lambda: BloscCodec(cname="lz4", shuffle="shuffle"),
}


@st.composite
def layouts(draw):
    ndim = draw(st.integers(1, 3))
    shape = tuple(draw(st.integers(1, 9)) for _ in range(ndim))
    chunks = tuple(draw(st.integers(1, max(1, n))) for n in shape)
    zarr_format = draw(st.sampled_from([2, 3]))
    shards = None
    if zarr_format == 3 and draw(st.booleans()):
        shards = tuple(c * draw(st.integers(1, 3)) for c in chunks)
    dtype = draw(st.sampled_from(DTYPES))
    order = draw(st.sampled_from(["C", "F"]))
    compressor = draw(st.sampled_from(list(COMPRESSORS)))
    if zarr_format == 2 and compressor in ("zstd", "gzip", "blosc"):
        compressor = "default"
    return dict(shape=shape, chunks=chunks, shards=shards, dtype=dtype, order=order, zarr_format=zarr_format, compressor=compressor)


def _slice(draw, n):
    start = draw(st.integers(0, n))
    stop = draw(st.integers(start, n))
    step = draw(st.integers(1, 3))
    return slice(start, stop, step)


@st.composite
def selections(draw, shape, for_write):
    kind = draw(st.sampled_from(["basic", "oindex", "vindex", "mask", "oindex_mask"]))
    if kind == "basic":
        sel = tuple(draw(st.integers(0, n - 1)) if draw(st.booleans()) and n else _slice(draw, n) for n in shape)
        return kind, sel
    if kind in ("oindex", "oindex_mask"):
        sel = []
        for n in shape:
            choice = draw(st.sampled_from(["slice", "int", "array", "bool"] if kind == "oindex_mask" else ["slice", "int", "array"]))
            if choice == "slice":
                sel.append(_slice(draw, n))
            elif choice == "int":
                sel.append(draw(st.integers(0, n - 1)))
            elif choice == "bool":
                sel.append(np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n)), dtype=bool))
            else:
                idx = draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=6, unique=for_write))
                sel.append(np.array(idx, dtype=np.intp))
        return "oindex", tuple(sel)
    if kind == "vindex":
        npts = draw(st.integers(1, 8))
        pts = draw(st.lists(st.tuples(*[st.integers(0, n - 1) for n in shape]), min_size=1, max_size=npts, unique=for_write))
        return kind, tuple(np.array([p[d] for p in pts], dtype=np.intp) for d in range(len(shape)))
    mask = np.array(draw(st.lists(st.booleans(), min_size=int(np.prod(shape)), max_size=int(np.prod(shape))))).reshape(shape)
    return "mask", mask


def _model_get(model, kind, sel):
    if kind == "basic":
        return model[sel]
    if kind == "oindex":
        drop = tuple(i for i, s in enumerate(sel) if isinstance(s, int))
        idx = tuple(
            np.arange(model.shape[i])[s] if isinstance(s, slice) else ([s] if isinstance(s, int) else (np.nonzero(s)[0] if s.dtype == bool else s))
            for i, s in enumerate(sel)
        )
        out = model[np.ix_(*idx)]
        return out.squeeze(axis=drop) if drop else out
    if kind == "vindex":
        return model[sel]
    return model[sel]


def _model_set(model, kind, sel, value):
    if kind == "oindex":
        idx = tuple(
            np.arange(model.shape[i])[s] if isinstance(s, slice) else ([s] if isinstance(s, int) else (np.nonzero(s)[0] if s.dtype == bool else s))
            for i, s in enumerate(sel)
        )
        drop = tuple(i for i, s in enumerate(sel) if isinstance(s, int))
        v = np.expand_dims(value, drop) if drop and np.ndim(value) else value
        model[np.ix_(*idx)] = v
    else:
        model[sel] = value


def _zarr_get(arr, kind, sel):
    if kind == "basic":
        return arr[sel]
    if kind == "oindex":
        return arr.oindex[sel]
    return arr.vindex[sel]


def _zarr_set(arr, kind, sel, value):
    if kind == "basic":
        arr[sel] = value
    elif kind == "oindex":
        arr.oindex[sel] = value
    else:
        arr.vindex[sel] = value


def _values(rng, dtype, shape):
    dt = np.dtype(dtype)
    if dt.kind == "b":
        return rng.random(shape) > 0.5
    if dt.kind == "M":
        return rng.integers(0, 10**9, shape).astype(dt)
    if dt.kind == "c":
        return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(dt)
    if dt.kind == "f":
        return rng.standard_normal(shape).astype(dt)
    info = np.iinfo(dt)
    return rng.integers(max(info.min, -1000), min(info.max, 1000), shape).astype(dt)


def _make(store, layout, pipeline):
    comp = layout["compressor"]
    kwargs = {}
    if comp != "default":
        kwargs["compressors"] = None if comp == "none" else COMPRESSORS[comp]()
    if layout["zarr_format"] == 2:
        kwargs["order"] = layout["order"]
    else:
        kwargs["config"] = {"order": layout["order"]}
    with use_pipeline(pipeline), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return zarr.create_array(
            store=store,
            shape=layout["shape"],
            chunks=layout["chunks"],
            shards=layout["shards"],
            dtype=layout["dtype"],
            zarr_format=layout["zarr_format"],
            **kwargs,
        )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(layout=layouts(), data=st.data(), seed=st.integers(0, 2**32 - 1), local=st.booleans())
def test_random_io_matches_numpy_and_zarr(tmp_path_factory, layout, data, seed, local):
    rng = np.random.default_rng(seed)
    if local:
        base = tmp_path_factory.mktemp("prop")
        stores = [zarr.storage.LocalStore(base / "ours"), zarr.storage.LocalStore(base / "ref")]
    else:
        stores = [zarr.storage.MemoryStore(), zarr.storage.MemoryStore()]
    ours = _make(stores[0], layout, OURS)
    ref = _make(stores[1], layout, ZARR_DEFAULT)
    assert_native(ours)
    dtype = ours.dtype
    model = np.zeros(layout["shape"], dtype=dtype)
    model[...] = ours.fill_value
    for _ in range(data.draw(st.integers(1, 4))):
        kind, sel = data.draw(selections(layout["shape"], for_write=True))
        target_shape = _model_get(model, kind, sel).shape
        if data.draw(st.booleans()) or target_shape == ():
            value = _values(rng, dtype, ())[()]  # scalar
        else:
            value = _values(rng, dtype, target_shape)
        _model_set(model, kind, sel, value)
        _zarr_set(ours, kind, sel, value)
        if ref is not None:
            try:
                _zarr_set(ref, kind, sel, value)
            except (ValueError, IndexError):
                # zarr-python 3.1.6's own pipeline fails some orthogonal writes into shards
                # (zarr-python#2834); the numpy model remains the reference.
                ref = None
        rkind, rsel = data.draw(selections(layout["shape"], for_write=False))
        want = _model_get(model, rkind, rsel)
        got = _zarr_get(ours, rkind, rsel)
        np.testing.assert_array_equal(got, want)
        if ref is not None:
            np.testing.assert_array_equal(_zarr_get(ref, rkind, rsel), want)
    np.testing.assert_array_equal(ours[...], model)
    # What sparsezarr stored reads identically with zarr-python's own pipeline.
    with use_pipeline(ZARR_DEFAULT):
        np.testing.assert_array_equal(zarr.open_array(stores[0], mode="r")[...], model)


@pytest.mark.parametrize("shape,chunks", [((7,), (3,)), ((5, 6), (2, 4)), ((3, 4, 5), (2, 3, 2))])
def test_every_basic_slice_1d_2d_3d(shape, chunks):
    """Exhaustive over a grid of starts/stops/steps on small arrays (complements hypothesis)."""
    data = np.arange(int(np.prod(shape)), dtype="i4").reshape(shape)
    with use_pipeline(OURS):
        a = zarr.create_array(store=zarr.storage.MemoryStore(), shape=shape, chunks=chunks, dtype="i4")
        a[...] = data
        for d in range(len(shape)):
            n = shape[d]
            for start in range(n):
                for stop in range(start, n + 1):
                    for step in (1, 2, 3):
                        sel = [slice(None)] * len(shape)
                        sel[d] = slice(start, stop, step)
                        np.testing.assert_array_equal(a[tuple(sel)], data[tuple(sel)])
