"""Sparse arrays (issue 3): a 2-d chunked sparse array versus the anndata CSR layout and a dense
zarr array, on a realistic cell x gene matrix.

Run::

    python benches/report.py sparse

Matrix: 100,000 cells x 20,000 genes, float32 counts, row lengths, gene detection rates and values
sampled from real cells (see ``benches/_data.py``): 137.9M non-zeros (6.9%), 1.1 GB as CSR.

Layouts, all in a LocalStore:

* ``sparsezarr``: the chunked sparse array, chunks 4096 cells x 256 genes, shards 16384 x 2048,
  zstd level 3 on coordinates and values. Narrow gene chunks keep a per-gene read to the 25 chunks
  of one column band; 4096-cell rows keep row blocks cheap too.
* ``anndata+zarrs``: the anndata CSR layout (``data``, ``indices``, ``indptr``), written by anndata
  (zarr v3, auto-sharded, as anndata recommends) and read by anndata with the ``zarrs`` pipeline.
* ``dense+zarrs``: a dense float32 zarr array with the same 4096 x 256 chunks (zstd, zarr's default
  compressor), written and read with the ``zarrs`` pipeline.

Operations: write (from the in-memory scipy CSR matrix), full read (to scipy CSR / numpy), one gene
(a column), 100 random genes, a 1000 x 1000 block; plus stored bytes and the peak memory of each
read (resident-set growth, measured in a fresh process after a warm-up read of a different region).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _data import cell_matrix

CHUNKS = (4096, 256)
SHARDS = (16384, 2048)
GENE = 1234
BLOCK = (slice(50_000, 51_000), slice(7_000, 8_000))
TOOLS = ["sparsezarr", "anndata+zarrs", "dense+zarrs"]


@pytest.fixture(scope="module")
def matrix() -> sp.csr_array:
    return cell_matrix()


@pytest.fixture(scope="module")
def workdir():
    d = Path(tempfile.mkdtemp(prefix="sparsezarr-sparse-bench-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def genes(matrix):
    return np.sort(np.random.default_rng(5).choice(matrix.shape[1], 100, replace=False))


def du(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


# ------------------------------------------------------------------------------------------------
# Writers and readers of the three layouts (also used, as code strings, by the memory probe)
# ------------------------------------------------------------------------------------------------


def write_sparsezarr(m, path):
    import sparsezarr

    sparsezarr.from_scipy(m, path, chunks=CHUNKS, shards=SHARDS, overwrite=True)


def write_anndata(m, path):
    import anndata as ad
    import zarr

    ad.settings.zarr_write_format = 3
    ad.settings.auto_shard_zarr_v3 = True
    with zarr.config.set({"codec_pipeline.path": "zarrs.ZarrsCodecPipeline"}):
        g = zarr.open_group(path, mode="w")
        ad.io.write_elem(g, "X", m)


def write_dense(m, path):
    import zarr

    with zarr.config.set({"codec_pipeline.path": "zarrs.ZarrsCodecPipeline"}):
        z = zarr.create_array(store=path, shape=m.shape, dtype="float32", chunks=CHUNKS, overwrite=True)
        for r in range(0, m.shape[0], CHUNKS[0]):
            z[r : r + CHUNKS[0]] = m[r : r + CHUNKS[0]].toarray()


READERS = {
    "sparsezarr": {
        "open": "import sparsezarr\nx = sparsezarr.open_sparse(PATH)",
        "full read": "out = x.to_scipy()",
        "one gene": "out = x.to_scipy((slice(None), slice(GENE, GENE + 1)))",
        "100 random genes": "out = x.to_scipy((slice(None), GENES))",
        "1000 x 1000 block": "out = x.to_scipy(BLOCK)",
    },
    "anndata+zarrs": {
        "open": (
            "import anndata as ad, zarr, zarrs\n"
            "zarr.config.set({'codec_pipeline.path': 'zarrs.ZarrsCodecPipeline'})\n"
            "g = zarr.open_group(PATH, mode='r')\nx = ad.io.sparse_dataset(g['X'])"
        ),
        "full read": "out = x.to_memory()",
        "one gene": "out = x[:, GENE]",
        "100 random genes": "out = x[:, GENES]",
        "1000 x 1000 block": "out = x[BLOCK]",
    },
    "dense+zarrs": {
        "open": ("import zarr, zarrs\nzarr.config.set({'codec_pipeline.path': 'zarrs.ZarrsCodecPipeline'})\nx = zarr.open_array(PATH, mode='r')"),
        "full read": "out = x[:]",
        "one gene": "out = x[:, GENE]",
        "100 random genes": "out = x.oindex[:, GENES]",
        "1000 x 1000 block": "out = x[BLOCK]",
    },
}

WRITERS = {"sparsezarr": write_sparsezarr, "anndata+zarrs": write_anndata, "dense+zarrs": write_dense}


def _namespace(path, genes):
    return {"PATH": str(path), "GENE": GENE, "GENES": genes, "BLOCK": BLOCK, "np": np}


@pytest.fixture(scope="module")
def stores(matrix, workdir):
    paths = {}
    for tool, write in WRITERS.items():
        path = workdir / f"store-{tool}"
        write(matrix, path)
        paths[tool] = path
    return paths


# ------------------------------------------------------------------------------------------------
# Benchmarks
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("tool", TOOLS)
def test_write(benchmark, matrix, workdir, tool):
    rounds = {"dense+zarrs": 1}.get(tool, 3)
    path = workdir / f"write-{tool}"

    def setup():
        shutil.rmtree(path, ignore_errors=True)
        os.sync()
        return (), {}

    benchmark.pedantic(lambda: WRITERS[tool](matrix, path), setup=setup, rounds=rounds)
    benchmark.extra_info.update(case="write", pipeline=tool, bytes=matrix.data.nbytes + matrix.indices.nbytes)
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.parametrize("op", ["full read", "one gene", "100 random genes", "1000 x 1000 block"])
@pytest.mark.parametrize("tool", TOOLS)
def test_read(benchmark, matrix, stores, genes, tool, op):
    ns = _namespace(stores[tool], genes)
    exec(READERS[tool]["open"], ns)
    code = compile(READERS[tool][op], op, "exec")
    slow = tool != "sparsezarr" and op in ("full read", "100 random genes")
    rounds = 2 if slow or (tool == "dense+zarrs" and op == "full read") else 5

    def run():
        exec(code, ns)
        return ns.pop("out")

    out = benchmark.pedantic(run, rounds=rounds, warmup_rounds=0 if slow else 1)
    # every layout returns the same values
    expected = {
        "full read": lambda: matrix,
        "one gene": lambda: matrix[:, [GENE]],
        "100 random genes": lambda: matrix[:, genes],
        "1000 x 1000 block": lambda: matrix[BLOCK],
    }[op]()
    got = out.toarray() if sp.issparse(out) else np.asarray(out)
    if op == "full read":
        assert (sp.csr_array(out) != matrix).nnz == 0
    else:
        np.testing.assert_array_equal(got.reshape(expected.shape), expected.toarray())
    del out, got
    benchmark.extra_info.update(case=op, pipeline=tool, bytes=0)


_PROBE = """
import json, sys, numpy as np
ns = json.loads(sys.argv[1])
def setup(ns):
    ns["GENES"] = np.array(ns["GENES"]); ns["BLOCK"] = (slice(*ns["BLOCK"][0]), slice(*ns["BLOCK"][1])); ns["np"] = np
    return ns
warm = setup(json.loads(sys.argv[2]))
setup(ns)
exec(sys.argv[3], ns)
warm["x"] = ns["x"]
exec(sys.argv[4], warm)  # one-time costs (thread pools, codec contexts, lazy imports) on another region
del warm["out"]
import gc; gc.collect()
def status(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
base = status("VmRSS")
with open("/proc/self/clear_refs", "w") as f:  # reset the high-water mark to the current RSS
    f.write("5")
exec(sys.argv[5], ns)
print(json.dumps({"peak": status("VmHWM") - base}))
"""


def _probe_ns(path, gene, genes, block) -> dict:
    return {"PATH": str(path), "GENE": gene, "GENES": genes.tolist(), "BLOCK": [[block[0].start, block[0].stop], [block[1].start, block[1].stop]]}


def peak_memory(tool, op, path, genes) -> int:
    """Peak resident-set growth of one read, in a fresh process, after a warm-up read of a
    different region (a different gene, block or gene set; one gene before a full read)."""
    ns = _probe_ns(path, GENE, genes, BLOCK)
    warm = _probe_ns(
        path,
        GENE + 4000,
        np.sort((genes + 57) % 20_000),
        (slice(BLOCK[0].start + 20_000, BLOCK[0].stop + 20_000), slice(BLOCK[1].start - 5_000, BLOCK[1].stop - 5_000)),
    )
    warm_op = READERS[tool]["one gene" if op == "full read" else op]
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps(ns), json.dumps(warm), READERS[tool]["open"], warm_op, READERS[tool][op]],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "OPENBLAS_NUM_THREADS": "1"},
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])["peak"]


@pytest.mark.parametrize("tool", TOOLS)
def test_storage_and_peak_memory(benchmark, matrix, stores, genes, tool):
    """Stored bytes, and the peak resident-set growth of each read (fresh process each, after a warm-up)."""
    benchmark.pedantic(lambda: None, rounds=1)
    peaks = {op: peak_memory(tool, op, stores[tool], genes) for op in ("full read", "one gene", "1000 x 1000 block")}
    payload = {
        "full read": matrix.data.nbytes + matrix.indices.nbytes + matrix.indptr.nbytes,
        "one gene": matrix[:, [GENE]].nnz * 8,
        "1000 x 1000 block": matrix[BLOCK].nnz * 8,
    }
    benchmark.extra_info.update(
        case="storage and peak memory",
        pipeline=tool,
        stored_bytes=du(stores[tool]),
        peaks=peaks,
        payload=payload,
        csr_bytes=matrix.data.nbytes + matrix.indices.nbytes + matrix.indptr.nbytes,
    )
