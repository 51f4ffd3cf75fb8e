"""Codec pipeline benchmarks: zarr-python's default (Batched) pipeline, its Fused pipeline (zarr >=
3.4), the ``zarrs`` package and sparsezarr.Pipeline, in the same run, on the same stores.

Run (and render the table with ratios)::

    python benches/report.py pipeline

Data: three 4096 x 4096 float32 datasets (``sparsezarr.bench.make_data``): ``field``, a smooth
structure plus measurement-like noise rounded to 0.01 (compresses ~1.5x; zstd itself is the
bottleneck), ``smooth``, the noise-free structure (compresses ~3x, so per-chunk overheads matter),
and ``random``, uniform random numbers (barely compressible; zstd mostly stores literals). zstd
level 1, in a LocalStore on the local disk (warm page cache). Layouts: 256 x 256 chunks
(unsharded) and 1024 x 1024 shards of 64 x 64 chunks (sharded). Writes go to a fresh directory
every round; before each round the previous round's output is flushed (``os.sync()``) and dropped
from the page cache, so that neither writeback nor a growing page cache slows a measurement down
(see ``_Rounds`` for why it is not deleted). ``report.py`` fixes glibc's malloc thresholds so that
every pipeline runs with the allocator in its steady state.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
import zarr

from sparsezarr.bench import DATASETS, LAYOUTS, PIPELINES, create, evict, make_data, pipeline_available

N = 4096


@pytest.fixture(scope="module", params=DATASETS)
def dataset(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def data(dataset) -> np.ndarray:
    return make_data(dataset)


@pytest.fixture(scope="session")
def workdir():
    d = Path(tempfile.mkdtemp(prefix="sparsezarr-bench-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _pipeline_params():
    return [
        pytest.param(p, marks=pytest.mark.skipif(not pipeline_available(p), reason=f"{p} is not available with this zarr / these packages"))
        for p in PIPELINES
    ]


@pytest.fixture(scope="module")
def stores(data, dataset, workdir):
    """One store per layout, written once by zarr-python's default pipeline, read by everyone."""
    out = {}
    with zarr.config.set({"codec_pipeline.path": PIPELINES["zarr"]}):
        for name in LAYOUTS:
            path = workdir / f"ref-{dataset}-{name}"
            a = create(path, data, name)
            a[:] = data
            out[name] = path
    return out


def _open(path, pipeline):
    with zarr.config.set({"codec_pipeline.path": PIPELINES[pipeline]}):
        return zarr.open_array(path, mode="r+")


def _info(benchmark, **kw):
    benchmark.extra_info.update(kw)


# The write benchmarks leave ~5 GB of round outputs behind until the session ends (see _Rounds).
KEEP_BYTES = 5 << 30


class _Rounds:
    """Fresh output directories, one per round. Earlier rounds' outputs are kept (deleted with the
    session's work directory) but flushed and dropped from the page cache: on ext4, creating files
    right after deleting many others is several times slower (the inode allocator skips recently
    freed inodes), which would add tens of milliseconds of file-system work to every unsharded
    write, whichever pipeline runs it. Where the disk has no room for them (less than twice
    ``KEEP_BYTES`` free), they are deleted after all, and a warning says so."""

    def __init__(self, workdir: Path, prefix: str) -> None:
        self.workdir, self.prefix, self.n, self.prev = workdir, prefix, 0, None
        self.keep = shutil.disk_usage(workdir).free > 2 * KEEP_BYTES
        if not self.keep:
            warnings.warn("little free disk space: write rounds delete their outputs, which slows file creation down", stacklevel=2)

    def next(self) -> Path:
        self.close()
        self.n += 1
        self.prev = self.workdir / f"{self.prefix}-{self.n}"
        return self.prev

    def close(self) -> None:
        if self.prev is not None and self.prev.exists():
            evict(self.prev)
            if not self.keep:
                shutil.rmtree(self.prev, ignore_errors=True)


@pytest.mark.parametrize("pipeline", _pipeline_params())
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_full_write(benchmark, data, dataset, workdir, pipeline, layout):
    rounds = _Rounds(workdir, f"w-{dataset}-{pipeline}-{layout}")

    def setup():
        path = rounds.next()
        with zarr.config.set({"codec_pipeline.path": PIPELINES[pipeline]}):
            arr = create(path, data, layout)
        os.sync()
        return (arr,), {}

    def run(arr):
        arr[:] = data

    benchmark.pedantic(run, setup=setup, rounds=5, warmup_rounds=1)
    rounds.close()
    _info(benchmark, case=f"{dataset}: full write ({layout})", pipeline=pipeline, bytes=data.nbytes)


@pytest.mark.parametrize("pipeline", _pipeline_params())
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_full_read(benchmark, data, dataset, stores, pipeline, layout):
    arr = _open(stores[layout], pipeline)
    out = benchmark.pedantic(lambda: arr[:], rounds=7, warmup_rounds=1)
    assert np.array_equal(out, data)
    _info(benchmark, case=f"{dataset}: full read ({layout})", pipeline=pipeline, bytes=data.nbytes)


@pytest.mark.parametrize("pipeline", _pipeline_params())
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_small_reads(benchmark, data, dataset, stores, pipeline, layout):
    """200 reads of random 16 x 16 windows."""
    arr = _open(stores[layout], pipeline)
    rng = np.random.default_rng(1)
    corners = rng.integers(0, N - 16, (200, 2))

    def run():
        return [arr[i : i + 16, j : j + 16] for i, j in corners]

    outs = benchmark.pedantic(run, rounds=5, warmup_rounds=1)
    i, j = corners[7]
    assert np.array_equal(outs[7], data[i : i + 16, j : j + 16])
    _info(benchmark, case=f"{dataset}: 200 small reads ({layout})", pipeline=pipeline, bytes=200 * 16 * 16 * 4)


@pytest.mark.parametrize("pipeline", _pipeline_params())
def test_small_write_into_shard(benchmark, data, dataset, workdir, pipeline):
    """Write a 10 x 10 region into an existing 1024 x 1024 shard of 64 x 64 chunks."""
    src = None
    rounds = _Rounds(workdir, f"sw-{dataset}-{pipeline}")

    def setup():
        nonlocal src
        path = rounds.next()
        if src is None:
            src = workdir / f"sw-src-{dataset}-{pipeline}"
            with zarr.config.set({"codec_pipeline.path": PIPELINES["zarr"]}):
                a = create(src, data[:1024, :1024], "sharded")
                a[:] = data[:1024, :1024]
        shutil.copytree(src, path)
        os.sync()
        return (_open(path, pipeline),), {}

    patch = np.full((10, 10), -1.0, dtype="f4")

    def run(arr):
        arr[500:510, 500:510] = patch

    benchmark.pedantic(run, setup=setup, rounds=10, warmup_rounds=1)
    rounds.close()
    _info(benchmark, case=f"{dataset}: small write into a shard", pipeline=pipeline, bytes=patch.nbytes)


@pytest.mark.parametrize("pipeline", _pipeline_params())
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_fancy_read(benchmark, data, dataset, stores, pipeline, layout):
    """Orthogonal integer-array read: 100 scattered rows x 100 scattered columns."""
    arr = _open(stores[layout], pipeline)
    rng = np.random.default_rng(2)
    rows = np.sort(rng.choice(N, 100, replace=False))
    cols = np.sort(rng.choice(N, 100, replace=False))
    out = benchmark.pedantic(lambda: arr.oindex[rows, cols], rounds=5, warmup_rounds=1)
    assert np.array_equal(out, data[np.ix_(rows, cols)])
    _info(benchmark, case=f"{dataset}: fancy-index read ({layout})", pipeline=pipeline, bytes=out.nbytes)


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_raw_codec_bound(benchmark, data, dataset, layout):
    """The same chunks encoded and decoded by the Rust engine in memory (timed inside Rust, no
    store, no copying into an array): the bound a pipeline can approach."""
    from sparsezarr import _lib

    c = LAYOUTS[layout]["chunks"][0]
    chunks = data.reshape(N // c, c, N // c, c).transpose(0, 2, 1, 3).reshape(-1, c * c).copy().view(np.uint8)
    codecs = json.dumps(
        [{"name": "bytes", "configuration": {"endian": "little"}}, {"name": "zstd", "configuration": {"level": 1, "checksum": False}}]
    )
    engine = _lib.ArrayEngine.from_parts(codecs, [c, c], '"float32"', bytes(4))
    enc, dec, nbytes = engine.codec_bound(chunks, rounds=5)
    # Recorded as two pseudo-benchmarks (the timing happens in Rust).
    benchmark.pedantic(lambda: None, rounds=1)
    benchmark.extra_info.update(
        case=f"{dataset}: raw codec bound ({layout})",
        pipeline="rust in memory",
        bytes=data.nbytes,
        encode_secs=enc,
        decode_secs=dec,
        ratio=data.nbytes / nbytes,
    )
