"""Compare two builds of sparsezarr on the pipeline cases, rounds interleaved, each round in a
fresh process: did a change make anything slower?

Each build is a directory holding a ``sparsezarr`` package with its compiled ``_lib`` (for
example a ``git worktree`` of the old commit with its ``_lib.abi3.so`` copied in). The data and
the stores (written once by zarr's own pipeline) are shared; every round runs every case for one
build in a new process, alternating A, B, A, B, ... Reported: the median and minimum per case and
the ratio B/A of medians (below 1: B is faster).

Suites: ``pipeline`` (full reads and writes and 200 small reads through ``sparsezarr.Pipeline``)
``sparse`` (reads of a 50,000 x 20,000 sparse array at 3% density with the benchmark's chunks:
one gene, 100 random genes, a 1000 x 1000 block, a full read, and a block write) and ``csr``
(gathers from a 100,000 x 20,000 CSR store at 2% written by ``write_csr`` with its defaults).

Usage::

    python benches/ab_builds.py --a /tmp/old/python --b python --rounds 7
    python benches/ab_builds.py --a /tmp/old/python --b python --rounds 7 --suite sparse
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, os, sys, time
import numpy as np
import zarr
import sparsezarr
from sparsezarr.bench import create, make_data
work, dataset = sys.argv[1], sys.argv[2]
data = make_data(dataset)
rng = np.random.default_rng(1)
corners = rng.integers(0, data.shape[0] - 16, (200, 2))
out = {"module": sparsezarr.__file__}
with zarr.config.set({"codec_pipeline.path": "sparsezarr.Pipeline"}):
    for layout in ("unsharded", "sharded"):
        arr = zarr.open_array(os.path.join(work, f"ref-{layout}"), mode="r")
        arr[:16, :16]
        t = time.perf_counter(); full = arr[:]; out[f"full read ({layout})"] = time.perf_counter() - t
        assert np.array_equal(full, data)
        t = time.perf_counter()
        for i, j in corners:
            arr[i : i + 16, j : j + 16]
        out[f"200 small reads ({layout})"] = time.perf_counter() - t
        dst = os.path.join(work, f"w-{os.getpid()}-{layout}")
        w = create(dst, data, layout)
        os.sync()
        t = time.perf_counter(); w[:] = data; out[f"full write ({layout})"] = time.perf_counter() - t
print(json.dumps(out))
"""


SPARSE_CHILD = r"""
import json, os, sys, time
import numpy as np
import scipy.sparse as sp
import sparsezarr
work = sys.argv[1]
x = sparsezarr.open_sparse(os.path.join(work, "sparse"), mode="r+")
rng = np.random.default_rng(3)
genes = np.sort(rng.choice(x.shape[1], 100, replace=False))
out = {"module": sparsezarr.__file__}
x.to_scipy((slice(0, 10), slice(0, 10)))
def timed(name, fn):
    t = time.perf_counter(); fn(); out[name] = time.perf_counter() - t
timed("one gene", lambda: x.to_scipy((slice(None), slice(777, 778))))
timed("100 random genes", lambda: x.to_scipy((slice(None), genes)))
timed("1000 x 1000 block", lambda: x.to_scipy((slice(20000, 21000), slice(5000, 6000))))
timed("full read", lambda: x.to_scipy())
block = sp.random_array((1000, 1000), density=0.03, format="csr", dtype=np.float32, rng=rng)
timed("1000 x 1000 block write", lambda: x.__setitem__((slice(30000, 31000), slice(9000, 10000)), block))
print(json.dumps(out))
"""


CSR_CHILD = r"""
import json, os, sys, time
import numpy as np
import sparsezarr
work = sys.argv[1]
x = sparsezarr.open_csr(os.path.join(work, "csr"))
rng = np.random.default_rng(5)
rows = np.sort(rng.choice(x.shape[0], 1000, replace=False))
starts = np.sort(rng.choice(x.shape[0] - 64, 16, replace=False))
runs = np.concatenate([np.arange(s, s + 64) for s in starts])
out = {"module": sparsezarr.__file__}
x[np.arange(10)]
def timed(name, fn):
    t = time.perf_counter(); fn(); out[name] = time.perf_counter() - t
timed("1000 random rows", lambda: x[rows])
timed("16 runs of 64 rows", lambda: x[runs])
timed("10,000-row slice", lambda: x[20000:30000])
timed("full read", lambda: x[:])
print(json.dumps(out))
"""


def _prepare_csr(work: str) -> None:
    import numpy as np
    import scipy.sparse as sp

    import sparsezarr

    m = sp.random_array((100_000, 20_000), density=0.02, format="csr", dtype=np.float32, rng=np.random.default_rng(0))
    sparsezarr.write_csr(os.path.join(work, "csr"), m)


def _prepare_sparse(work: str) -> None:
    import numpy as np
    import scipy.sparse as sp

    import sparsezarr

    m = sp.random_array((50_000, 20_000), density=0.03, format="csr", dtype=np.float32, rng=np.random.default_rng(0))
    a = sparsezarr.create_sparse(os.path.join(work, "sparse"), shape=m.shape, dtype="float32", chunks=(4096, 256), shards=(16384, 2048))
    a[:, :] = m


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--a", required=True, help="directory holding build A's sparsezarr package")
    ap.add_argument("--b", required=True, help="directory holding build B's sparsezarr package")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--dataset", default="field")
    ap.add_argument("--suite", choices=["pipeline", "sparse", "csr"], default="pipeline")
    args = ap.parse_args()
    import shutil

    import zarr

    from sparsezarr.bench import create, make_data

    with tempfile.TemporaryDirectory(prefix="sparsezarr-ab-") as work:
        if args.suite == "pipeline":
            data = make_data(args.dataset)
            for layout in ("unsharded", "sharded"):
                with zarr.config.set({"codec_pipeline.path": "zarr.core.codec_pipeline.BatchedCodecPipeline"}):
                    create(os.path.join(work, f"ref-{layout}"), data, layout)[:] = data
            child = [CHILD, work, args.dataset]
        elif args.suite == "sparse":
            _prepare_sparse(work)
            child = [SPARSE_CHILD, work]
        else:
            _prepare_csr(work)
            child = [CSR_CHILD, work]
        results: dict[str, dict[str, list[float]]] = {"A": {}, "B": {}}
        for r in range(args.rounds):
            for name, path in (("A", args.a), ("B", args.b)) if r % 2 == 0 else (("B", args.b), ("A", args.a)):
                env = {**os.environ, "PYTHONPATH": str(Path(path).resolve())}
                done = subprocess.run([sys.executable, "-c", *child], env=env, capture_output=True, text=True, check=True)
                row = json.loads(done.stdout.strip().splitlines()[-1])
                if r == 0:
                    print(f"{name}: {row.pop('module')}", file=sys.stderr)
                else:
                    row.pop("module")
                for case, secs in row.items():
                    results[name].setdefault(case, []).append(secs)
                for p in Path(work).glob("w-*"):
                    shutil.rmtree(p, ignore_errors=True)
        label = {"pipeline": args.dataset, "sparse": "sparse 50,000 x 20,000, 3%", "csr": "CSR 100,000 x 20,000, 2%"}[args.suite]
        print(f"| case ({label}, {args.rounds} rounds) | A median (min) | B median (min) | B/A (median) |")
        print("|---|---|---|---|")
        for case in results["A"]:
            a, b = results["A"][case], results["B"][case]
            ma, mb = statistics.median(a), statistics.median(b)
            print(f"| {case} | {ma * 1e3:.1f} ms ({min(a) * 1e3:.1f}) | {mb * 1e3:.1f} ms ({min(b) * 1e3:.1f}) | {mb / ma:.2f} |")


if __name__ == "__main__":
    main()
