"""Differential state machines (hypothesis): long random sequences of writes, resizes, appends and
reads, each checked against an independent model after every step.

* dense: one array written through ``sparsezarr.Pipeline`` and the same array through zarr-python's
  own pipeline (sharded or not, compressed or not, partial writes), against a numpy model;
* sparse: a sparse array (the ``sparsezarr.sparse`` codec, sharded) written by regions from
  scipy.sparse values, against a dense numpy model;
* CSR: a matrix grown by ``append_rows`` and read by row gathers, against scipy, and read by
  anndata at the end.

``SPARSEZARR_STATEFUL_EXAMPLES`` sets the number of examples (default 25; the long run recorded in
docs/reliability.md used 500).
"""

from __future__ import annotations

import itertools
import os
import warnings

import numpy as np
import pytest
import scipy.sparse as sp
import zarr
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule
from zarr.codecs import BloscCodec, ZstdCodec

import sparsezarr
from _helpers import OURS, ZARR_DEFAULT

EXAMPLES = int(os.environ.get("SPARSEZARR_STATEFUL_EXAMPLES", "25"))
SETTINGS = settings(max_examples=EXAMPLES, stateful_step_count=20, deadline=None, suppress_health_check=list(HealthCheck), derandomize=EXAMPLES <= 25)
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _box(draw_int, shape):
    """A random box (tuple of slices, step 1) inside ``shape``."""
    out = []
    for n in shape:
        a = draw_int(0, n)
        b = draw_int(a, n)
        out.append(slice(a, b))
    return tuple(out)


class DenseMachine(RuleBasedStateMachine):
    """sparsezarr.Pipeline vs zarr's pipeline vs numpy, step by step.

    The model follows zarr's semantics for resizes: shrinking deletes the chunks (shards) that
    lie wholly outside the new shape and keeps edge chunks as they are, so growing again shows
    their old values (zarr-python #1017; both pipelines agree on it). The model is therefore a
    larger "shadow" array of which the array is the top-left corner."""

    @initialize(
        shape=st.tuples(st.integers(1, 40), st.integers(1, 40)),
        chunk=st.tuples(st.integers(1, 8), st.integers(1, 8)),
        shard_mult=st.sampled_from([None, (1, 2), (3, 2)]),
        compressor=st.sampled_from(["none", "zstd", "blosc"]),
        dtype=st.sampled_from(["int32", "float64", "uint8"]),
    )
    def setup(self, shape, chunk, shard_mult, compressor, dtype):
        self.shadow = np.zeros((64, 64), dtype=dtype)
        self.shape = shape
        comp = {"none": None, "zstd": ZstdCodec(level=1), "blosc": BloscCodec(cname="lz4", shuffle="shuffle")}[compressor]
        shards = None if shard_mult is None else (chunk[0] * shard_mult[0], chunk[1] * shard_mult[1])
        self.grid = shards or chunk  # the keys that a shrink deletes
        self.arrays = {}
        for name, pipeline in (("ours", OURS), ("zarr", ZARR_DEFAULT)):
            with zarr.config.set({"codec_pipeline.path": pipeline}):
                self.arrays[name] = zarr.create_array(
                    zarr.storage.MemoryStore(), shape=shape, chunks=chunk, shards=shards, dtype=dtype, compressors=comp, fill_value=0
                )
        self.pipeline = {"ours": OURS, "zarr": ZARR_DEFAULT}

    @property
    def model(self) -> np.ndarray:
        return self.shadow[: self.shape[0], : self.shape[1]]

    def _each(self, fn):
        for name, a in self.arrays.items():
            with zarr.config.set({"codec_pipeline.path": self.pipeline[name]}):
                fn(a)

    @rule(data=st.data())
    def write_box(self, data):
        box = _box(lambda a, b: data.draw(st.integers(a, b)), self.model.shape)
        region = self.model[box]
        values = data.draw(st.integers(0, 100)) + np.arange(region.size, dtype="int64").reshape(region.shape) % 7
        values = values.astype(self.model.dtype)
        self.model[box] = values
        self._each(lambda a: a.__setitem__(box, values))

    @rule(data=st.data())
    def write_scalar(self, data):
        idx = tuple(data.draw(st.integers(0, n - 1)) for n in self.model.shape)
        v = data.draw(st.integers(0, 255))
        self.model[idx] = v
        self._each(lambda a: a.__setitem__(idx, v))

    @rule(rows=st.integers(1, 50), cols=st.integers(1, 50))
    def resize(self, rows, cols):
        g0, g1 = self.grid
        # chunks of the old shape wholly outside the new one are deleted (read as fill again)
        for i in range(0, self.shape[0], g0):
            for j in range(0, self.shape[1], g1):
                if i >= rows or j >= cols:
                    self.shadow[i : i + g0, j : j + g1] = 0
        # what lies beyond the old shape was never written since its chunk was deleted
        self.shape = (rows, cols)
        self._each(lambda a: a.resize((rows, cols)))

    @rule(data=st.data())
    def read_box(self, data):
        box = _box(lambda a, b: data.draw(st.integers(a, b)), self.model.shape)
        for name, a in self.arrays.items():
            with zarr.config.set({"codec_pipeline.path": self.pipeline[name]}):
                np.testing.assert_array_equal(a[box], self.model[box], err_msg=name)

    @invariant()
    def whole_arrays_agree(self):
        if not hasattr(self, "arrays"):
            return
        for name, a in self.arrays.items():
            with zarr.config.set({"codec_pipeline.path": self.pipeline[name]}):
                np.testing.assert_array_equal(a[...], self.model, err_msg=name)
        # each store read by the other pipeline too: the bytes are interchangeable
        with zarr.config.set({"codec_pipeline.path": ZARR_DEFAULT}):
            np.testing.assert_array_equal(zarr.open_array(self.arrays["ours"].store, mode="r")[...], self.model)


class SparseMachine(RuleBasedStateMachine):
    """A sharded sparse array written by regions vs a dense numpy model."""

    @initialize(
        shape=st.tuples(st.integers(1, 60), st.integers(1, 60)),
        chunk=st.tuples(st.integers(1, 16), st.integers(1, 16)),
        sharded=st.booleans(),
    )
    def setup(self, shape, chunk, sharded):
        self.model = np.zeros(shape, dtype="float32")
        shards = (chunk[0] * 2, chunk[1] * 2) if sharded else None
        self.array = sparsezarr.create_sparse(zarr.storage.MemoryStore(), shape=shape, dtype="float32", chunks=chunk, shards=shards)

    @rule(data=st.data(), density=st.floats(0, 0.5))
    def write_region(self, data, density):
        box = _box(lambda a, b: data.draw(st.integers(a, b)), self.model.shape)
        r = box[0].stop - box[0].start
        c = box[1].stop - box[1].start
        seed = data.draw(st.integers(0, 2**31 - 1))
        value = sp.random(r, c, density=density, format="csr", dtype=np.float32, random_state=seed)
        self.model[box] = value.toarray()
        self.array[box] = value

    @rule(data=st.data())
    def read_region(self, data):
        box = _box(lambda a, b: data.draw(st.integers(a, b)), self.model.shape)
        got = self.array[box]
        np.testing.assert_array_equal(got.todense() if hasattr(got, "todense") else np.asarray(got), self.model[box])

    @invariant()
    def whole_array_agrees(self):
        if hasattr(self, "array"):
            np.testing.assert_array_equal(self.array[...].todense(), self.model)


class CsrMachine(RuleBasedStateMachine):
    """A CSR group grown by appends and read by gathers, vs scipy; anndata reads it at the end."""

    def __init__(self):
        super().__init__()
        import tempfile

        self.tmp = tempfile.mkdtemp(prefix="sparsezarr-stateful-")
        self.path = os.path.join(self.tmp, "m.zarr")

    @initialize(rows=st.integers(0, 30), cols=st.integers(1, 20), seed=st.integers(0, 2**31 - 1), shard=st.sampled_from([8, 64, None]))
    def setup(self, rows, cols, seed, shard):
        self.model = sp.random(rows, cols, density=0.3, format="csr", dtype=np.float32, random_state=seed)
        kw = {"chunks": 4, "shards": shard} if shard else {"chunks": 16, "shards": None}
        sparsezarr.write_csr(self.path, self.model, **kw)

    @rule(rows=st.integers(0, 25), seed=st.integers(0, 2**31 - 1), density=st.floats(0, 0.6), pieces=st.integers(1, 3))
    def append(self, rows, seed, density, pieces):
        block = sp.random(rows, self.model.shape[1], density=density, format="csr", dtype=np.float32, random_state=seed)
        cut = np.linspace(0, rows, pieces + 1).astype(int)
        sparsezarr.append_rows(self.path, [block[a:b] for a, b in itertools.pairwise(cut)])
        self.model = sp.vstack([self.model, block]).tocsr()

    @rule(data=st.data())
    def gather(self, data):
        n = self.model.shape[0]
        if n == 0:
            return
        rows = data.draw(st.lists(st.integers(0, n - 1), max_size=12))
        got = sparsezarr.open_csr(self.path)[np.asarray(rows, dtype=np.int64)]
        np.testing.assert_array_equal(got.toarray(), self.model[rows].toarray())

    @invariant()
    def shape_agrees(self):
        if hasattr(self, "model"):
            assert sparsezarr.open_csr(self.path).shape == self.model.shape

    def teardown(self):
        import shutil

        if hasattr(self, "model"):
            import anndata as ad

            try:
                from anndata.io import read_elem
            except ImportError:  # anndata < 0.11
                from anndata.experimental import read_elem
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                x = read_elem(zarr.open_group(self.path, mode="r"))
            assert isinstance(x, sp.spmatrix | sp.sparray) and ad is not None
            np.testing.assert_array_equal(x.toarray(), self.model.toarray())
        shutil.rmtree(self.tmp, ignore_errors=True)


TestDense = DenseMachine.TestCase
TestDense.settings = SETTINGS
TestSparse = SparseMachine.TestCase
TestSparse.settings = SETTINGS
TestCsr = CsrMachine.TestCase
TestCsr.settings = SETTINGS
