"""Compare two builds of sparsezarr on the pipeline cases, rounds interleaved, each round in a
fresh process: did a change make anything slower?

Each build is a directory holding a ``sparsezarr`` package with its compiled ``_lib`` (for
example a ``git worktree`` of the old commit with its ``_lib.abi3.so`` copied in). The data and
the stores (written once by zarr's own pipeline) are shared; every round runs every case for one
build in a new process, alternating A, B, A, B, ... Reported: the median and minimum per case and
the ratio B/A of medians (below 1: B is faster).

Usage::

    python benches/ab_builds.py --a /tmp/old/python --b python --rounds 7
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--a", required=True, help="directory holding build A's sparsezarr package")
    ap.add_argument("--b", required=True, help="directory holding build B's sparsezarr package")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--dataset", default="field")
    args = ap.parse_args()
    import shutil

    import zarr

    from sparsezarr.bench import create, make_data

    with tempfile.TemporaryDirectory(prefix="sparsezarr-ab-") as work:
        data = make_data(args.dataset)
        for layout in ("unsharded", "sharded"):
            with zarr.config.set({"codec_pipeline.path": "zarr.core.codec_pipeline.BatchedCodecPipeline"}):
                create(os.path.join(work, f"ref-{layout}"), data, layout)[:] = data
        results: dict[str, dict[str, list[float]]] = {"A": {}, "B": {}}
        for r in range(args.rounds):
            for name, path in (("A", args.a), ("B", args.b)) if r % 2 == 0 else (("B", args.b), ("A", args.a)):
                env = {**os.environ, "PYTHONPATH": str(Path(path).resolve())}
                done = subprocess.run([sys.executable, "-c", CHILD, work, args.dataset], env=env, capture_output=True, text=True, check=True)
                row = json.loads(done.stdout.strip().splitlines()[-1])
                if r == 0:
                    print(f"{name}: {row.pop('module')}", file=sys.stderr)
                else:
                    row.pop("module")
                for case, secs in row.items():
                    results[name].setdefault(case, []).append(secs)
                for p in Path(work).glob("w-*"):
                    shutil.rmtree(p, ignore_errors=True)
        print(f"| case ({args.dataset}, {args.rounds} rounds) | A median (min) | B median (min) | B/A (median) |")
        print("|---|---|---|---|")
        for case in results["A"]:
            a, b = results["A"][case], results["B"][case]
            ma, mb = statistics.median(a), statistics.median(b)
            print(f"| {case} | {ma * 1e3:.1f} ms ({min(a) * 1e3:.1f}) | {mb * 1e3:.1f} ms ({min(b) * 1e3:.1f}) | {mb / ma:.2f} |")


if __name__ == "__main__":
    main()
