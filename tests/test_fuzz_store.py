"""A Python-level fuzzer (hypothesis): real arrays in an in-memory store whose stored values are
damaged (bytes flipped, cut, extended, replaced), then opened and read through sparsezarr.

Every read must give the array's values or one of the exceptions sparsezarr documents for bad
data (``CorruptChunkError``, ``MetadataError``, ``UnsupportedError``, ``MemoryError``, or
zarr-python's own ``ValueError``/``TypeError`` when it parses a document): never an
``InternalError`` (a caught panic), never a crash. The Rust-level fuzz targets (``fuzz/``) cover
the decoders with coverage guidance; this covers the Python paths on top (pipeline, sparse arrays,
CSR groups) with the same kind of input.

``SPARSEZARR_FUZZ_EXAMPLES`` sets the number of examples per target (default 60).
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import scipy.sparse as sp
import zarr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from zarr.codecs import BloscCodec, ZstdCodec
from zarr.core.buffer import cpu

import sparsezarr
from _helpers import OURS
from sparsezarr import errors

EXAMPLES = int(os.environ.get("SPARSEZARR_FUZZ_EXAMPLES", "60"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=EXAMPLES <= 60)
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

#: What damaged data may raise (anything else, an InternalError above all, is a finding).
EXPECTED = (errors.CorruptChunkError, errors.MetadataError, errors.UnsupportedError, MemoryError, ValueError, TypeError, KeyError, IndexError)


@st.composite
def damage(draw, value: bytes) -> bytes:
    """One damaged copy of ``value``."""
    kind = draw(st.sampled_from(["flip", "cut", "extend", "replace", "splice"]))
    b = bytearray(value)
    if kind == "flip" and b:
        for _ in range(draw(st.integers(1, 8))):
            i = draw(st.integers(0, len(b) - 1))
            b[i] ^= 1 << draw(st.integers(0, 7))
    elif kind == "cut":
        b = b[: draw(st.integers(0, len(b)))]
    elif kind == "extend":
        b += draw(st.binary(min_size=1, max_size=64))
    elif kind == "replace":
        b = bytearray(draw(st.binary(max_size=256)))
    elif kind == "splice" and len(b) >= 8:
        # a plausible-looking header value: a large little-endian integer written somewhere
        i = draw(st.integers(0, len(b) - 8))
        b[i : i + 8] = draw(st.sampled_from([2**31, 2**32 + 7, 2**62, 2**64 - 1])).to_bytes(8, "little")
    return bytes(b)


def _store_with(keys: dict[str, bytes]) -> zarr.storage.MemoryStore:
    store = zarr.storage.MemoryStore()
    for k, v in keys.items():
        store._store_dict[k] = cpu.Buffer.from_bytes(v)
    return store


def _dense_source(kind: str) -> tuple[dict[str, bytes], np.ndarray]:
    store = zarr.storage.MemoryStore()
    x = (np.arange(48 * 40, dtype="int32").reshape(48, 40) * 7) % 101
    kw = {
        "sharded-zstd": {"chunks": (8, 8), "shards": (16, 16), "compressors": [ZstdCodec(level=1)]},
        "plain-blosc": {"chunks": (16, 16), "compressors": [BloscCodec(cname="lz4", shuffle="bitshuffle")]},
        "sharded-raw": {"chunks": (8, 8), "shards": (24, 40), "compressors": None},
    }[kind]
    with zarr.config.set({"codec_pipeline.path": OURS}):
        a = zarr.create_array(store, shape=x.shape, dtype="int32", fill_value=0, **kw)
        a[:] = x
    return {k: v.to_bytes() for k, v in store._store_dict.items()}, x


DENSE = {kind: _dense_source(kind) for kind in ("sharded-zstd", "plain-blosc", "sharded-raw")}


@FUZZ
@given(data=st.data(), kind=st.sampled_from(sorted(DENSE)))
def test_damaged_dense_values(data, kind):
    keys, x = DENSE[kind]
    key = data.draw(st.sampled_from(sorted(k for k in keys if k != "zarr.json")))
    bad = dict(keys)
    bad[key] = data.draw(damage(keys[key]))
    with zarr.config.set({"codec_pipeline.path": OURS}):
        try:
            a = zarr.open_array(_store_with(bad), mode="r")
            got = a[...]
            part = a[5:30:3, 7:33]
        except EXPECTED:
            return
    # read without an error: every chunk but the damaged one must be intact, and the damaged one
    # decoded to *something* of the right shape (checksums are not on every codec chain)
    assert got.shape == x.shape
    np.testing.assert_array_equal(part, got[5:30:3, 7:33])


@FUZZ
@given(data=st.data())
def test_damaged_array_metadata(data):
    """The array's own document damaged: parsed by zarr-python first, then planned by us."""
    keys, _ = DENSE["sharded-zstd"]
    doc = json.loads(keys["zarr.json"])
    field = data.draw(st.sampled_from(["shape", "chunk_grid", "codecs", "data_type", "fill_value"]))
    doc[field] = data.draw(
        st.one_of(
            st.integers(-(2**64), 2**64),
            st.lists(st.integers(-5, 2**63), max_size=40),
            st.text(max_size=20),
            st.none(),
            st.just(doc[field]),
            st.recursive(st.integers(0, 9), lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3), max_leaves=30),
        )
    )
    bad = dict(keys)
    bad["zarr.json"] = json.dumps(doc).encode()
    with zarr.config.set({"codec_pipeline.path": OURS}):
        try:
            a = zarr.open_array(_store_with(bad), mode="r")
            a[tuple(slice(0, 4) for _ in a.shape)]
        except EXPECTED:
            return
        except (OverflowError, AttributeError, NotImplementedError, RecursionError):
            return  # raised by zarr-python's own metadata parsing, before our code runs


def _sparse_source() -> tuple[dict[str, bytes], np.ndarray]:
    store = zarr.storage.MemoryStore()
    m = sp.random(40, 40, density=0.15, format="csr", dtype=np.float32, random_state=3)
    sparsezarr.from_scipy(m, store, chunks=(8, 8), shards=(16, 16))
    return {k: v.to_bytes() for k, v in store._store_dict.items()}, m.toarray()


SPARSE = _sparse_source()


@FUZZ
@given(data=st.data())
def test_damaged_sparse_values(data):
    keys, x = SPARSE
    key = data.draw(st.sampled_from(sorted(k for k in keys if k != "zarr.json")))
    bad = dict(keys)
    bad[key] = data.draw(damage(keys[key]))
    try:
        s = sparsezarr.open_sparse(_store_with(bad), mode="r")
        got = s[...]
        s[3:37:2, 5:20]
    except EXPECTED:
        return
    assert got.shape == x.shape


def _csr_source() -> tuple[dict[str, bytes], sp.csr_matrix]:
    store = zarr.storage.MemoryStore()
    m = sp.random(300, 30, density=0.2, format="csr", dtype=np.float32, random_state=4)
    sparsezarr.write_csr(store, m, chunks=64, shards=256)
    return {k: v.to_bytes() for k, v in store._store_dict.items()}, m


CSR = _csr_source()


@FUZZ
@given(data=st.data())
def test_damaged_csr_group(data):
    keys, m = CSR
    key = data.draw(st.sampled_from(sorted(keys)))
    bad = dict(keys)
    bad[key] = data.draw(damage(keys[key]))
    try:
        x = sparsezarr.open_csr(_store_with(bad))
        rows = np.asarray(data.draw(st.lists(st.integers(0, x.shape[0] - 1), max_size=20)), dtype=np.int64) if x.shape[0] else []
        got = x[rows]
        x[:]
    except EXPECTED:
        return
    except json.JSONDecodeError:
        return  # a damaged document that zarr-python refuses to parse
    assert got.shape[1] == m.shape[1]
