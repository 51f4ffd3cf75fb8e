"""Virtual arrays (issue 5): reading through a view against reading the same data directly, and
against tensorstore's ``concat`` over the same stored arrays; opening a 10,000-component view;
a 1000-row random gather across 100 concatenated single-cell stores against the same gather on
one store of the same total size.

Run::

    python benches/report.py virtual

Dense data: 8192 x 4096 float32 (128 MiB), chunks 256 x 256, zstd level 1, stored either as one
array ("direct") or as 8 arrays of 1024 rows each, concatenated by a view. Reads: the whole
array, and a 3000 x 3000 region crossing 4 component boundaries. "direct" reads the one array
with ``sparsezarr.Pipeline`` (zarr-python's API on our engine); "tensorstore concat" reads the
same 8 arrays through ``ts.concat``.

Single-cell data: the benchmark matrix of ``benches/_data.py`` (100,000 cells x 20,000 genes,
137.9M non-zeros), written with ``sparsezarr.write_csr`` once whole and once as 100 stores of 1000
cells; the same 1000 random cells are gathered from the view and from the whole store.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import zarr
from zarr.codecs import ZstdCodec

sys.path.insert(0, str(Path(__file__).resolve().parent))
import sparsezarr
from _data import cell_matrix

ROWS, COLS, PARTS = 8192, 4096, 8
REGION = (slice(1000, 4000), slice(500, 3500))


@pytest.fixture(scope="module")
def workdir():
    d = Path(tempfile.mkdtemp(prefix="sparsezarr-virtual-bench-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def dense(workdir):
    rng = np.random.default_rng(0)
    data = (rng.standard_normal((ROWS, COLS)) * 10).round().astype(np.float32)
    with zarr.config.set({"codec_pipeline.path": "sparsezarr.Pipeline"}):
        one = zarr.create_array(str(workdir / "one"), shape=data.shape, chunks=(256, 256), dtype="float32", compressors=ZstdCodec(level=1))
        one[...] = data
        g = zarr.open_group(str(workdir / "parts"), mode="w")
        step = ROWS // PARTS
        parts = []
        for i in range(PARTS):
            a = g.create_array(f"p{i}", shape=(step, COLS), chunks=(256, 256), dtype="float32", compressors=ZstdCodec(level=1))
            a[...] = data[i * step : (i + 1) * step]
            parts.append(a)
    view = sparsezarr.concat(parts, axis=0)
    return data, view


def _read_direct(workdir, key):
    with zarr.config.set({"codec_pipeline.path": "sparsezarr.Pipeline"}):
        arr = zarr.open_array(str(workdir / "one"), mode="r")
        return arr[key]


@pytest.mark.parametrize("case", ["full read", "3000 x 3000 region across 4 components"])
@pytest.mark.parametrize("tool", ["sparsezarr", "direct (one array, sparsezarr.Pipeline)", "tensorstore concat"])
def test_dense_view(benchmark, dense, workdir, tool, case):
    data, view = dense
    key = (slice(None), slice(None)) if case == "full read" else REGION
    if tool == "sparsezarr":
        run = lambda: view.read(key)  # noqa: E731
    elif tool.startswith("direct"):
        run = lambda: _read_direct(workdir, key)  # noqa: E731
    else:
        ts = pytest.importorskip("tensorstore")
        layers = [
            ts.open({"driver": "zarr3", "kvstore": {"driver": "file", "path": str(workdir / "parts" / f"p{i}")}}).result() for i in range(PARTS)
        ]
        tview = ts.concat(layers, axis=0)
        run = lambda: tview[key].read().result()  # noqa: E731
    out = benchmark.pedantic(run, rounds=5, warmup_rounds=1)
    np.testing.assert_array_equal(np.asarray(out), data[key])
    benchmark.extra_info.update(case=f"dense view: {case}", pipeline=tool, bytes=int(data[key].nbytes))


def test_open_10000_components(benchmark, workdir):
    """Open a saved view of 10,000 components (none exists: opening must not touch them)."""
    nodes = [{"kind": "array", "path": f"sample{i:05d}", "shape": [1000, 20000], "data_type": "float32"} for i in range(10_000)]
    doc = {
        "virtual_array_format": 1,
        "shape": [10_000_000, 20000],
        "data_type": "float32",
        "fill_value": 0,
        "storage": "csr",
        "source": {"kind": "concat", "axis": 0, "components": nodes},
    }
    (workdir / "big" / "atlas").mkdir(parents=True)
    (workdir / "big" / "atlas" / "virtual.json").write_text(json.dumps(doc))
    view = benchmark.pedantic(lambda: sparsezarr.open_virtual(workdir / "big" / "atlas"), rounds=10, warmup_rounds=1)
    assert view.shape == (10_000_000, 20000) and view.num_opened == 0
    benchmark.extra_info.update(case="open a 10,000-component view (no component I/O)", pipeline="sparsezarr", bytes=0)


@pytest.fixture(scope="module")
def cell_stores(workdir):
    m = cell_matrix()
    sparsezarr.write_csr(str(workdir / "whole"), m)
    n = m.shape[0] // 100
    for i in range(100):
        sparsezarr.write_csr(str(workdir / "samples"), m[i * n : (i + 1) * n], path=f"s{i:03d}")
    view = sparsezarr.concat([sparsezarr.open_csr(str(workdir / "samples"), path=f"s{i:03d}") for i in range(100)], axis=0)
    return m, sparsezarr.open_csr(str(workdir / "whole")), view


@pytest.mark.parametrize("tool", ["sparsezarr", "one store (open_csr)"])
def test_gather_across_100_stores(benchmark, cell_stores, tool):
    m, whole, view = cell_stores
    rows = np.random.default_rng(1).integers(0, m.shape[0], size=1000)
    target = view if tool == "sparsezarr" else whole
    view.read(rows[:10])  # open the components once (their indptr) before timing
    out = benchmark.pedantic(lambda: target.read(rows), rounds=7, warmup_rounds=1)
    assert (out != m[rows]).nnz == 0
    benchmark.extra_info.update(
        case="1000 random cells: 100-store view vs one store", pipeline=tool, bytes=int(out.data.nbytes + out.indices.nbytes + out.indptr.nbytes)
    )


def test_open_100_store_view_cold(benchmark, workdir, cell_stores):
    """First touch of all 100 components (metadata and indptr of each) for a gather."""
    rows = np.random.default_rng(2).integers(0, 100_000, size=1000)

    def run():
        v = sparsezarr.open_virtual(cell_stores[2].document, root=workdir / "samples")
        t = time.perf_counter()
        v.read(rows)
        return time.perf_counter() - t

    benchmark.pedantic(run, rounds=3)
    benchmark.extra_info.update(case="1000 random cells, cold view (opens 100 components)", pipeline="sparsezarr", bytes=0)
