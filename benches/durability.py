"""What ``codec_pipeline.durable`` costs: the same writes with and without it, rounds interleaved.

    python benches/durability.py [--rounds 5] [--dir DIR]

Writes (into DIR, default a temporary directory: put it on the disk you care about):
a 4096 x 4096 float32 array through sparsezarr.Pipeline, unsharded (256 chunks of 256 x 256) and
sharded (16 shards); ``write_csr`` of a 100,000 x 2,000 matrix (10M values); ten ``append_rows``
of 1,000 rows each. Prints the median and minimum seconds of each, and the ratio.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import zarr

import sparsezarr


def cases(root: Path) -> dict[str, Callable[[], None]]:
    rng = np.random.default_rng(0)
    dense = rng.poisson(3, (4096, 4096)).astype("float32")
    m = sp.random(100_000, 2_000, density=0.05, format="csr", dtype=np.float32, random_state=0)
    rows = sp.random(1_000, 2_000, density=0.05, format="csr", dtype=np.float32, random_state=1)

    def dense_write(shards: tuple[int, int] | None) -> Callable[[], None]:
        def run() -> None:
            path = root / f"dense-{shards is not None}"
            shutil.rmtree(path, ignore_errors=True)
            a = zarr.create_array(str(path), shape=dense.shape, dtype="float32", chunks=(256, 256), shards=shards)
            a[:] = dense

        return run

    def csr_write() -> None:
        sparsezarr.write_csr(root / "csr.zarr", m, overwrite=True)

    def appends() -> None:
        sparsezarr.write_csr(root / "app.zarr", rows, overwrite=True)
        for _ in range(10):
            sparsezarr.append_rows(root / "app.zarr", rows)

    return {
        "dense unsharded (256 chunks)": dense_write(None),
        "dense sharded (16 shards)": dense_write((1024, 1024)),
        "write_csr 100k x 2k (10M values)": csr_write,
        "10 x append_rows of 1,000 rows": appends,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--dir", default=None)
    args = p.parse_args()
    root = Path(args.dir or tempfile.mkdtemp(prefix="sparsezarr-durable-"))
    times: dict[tuple[str, bool], list[float]] = {}
    with zarr.config.set({"codec_pipeline.path": "sparsezarr.Pipeline"}):
        work = cases(root)
        for _ in range(args.rounds):
            for name, fn in work.items():
                for durable in (False, True):
                    with zarr.config.set({"codec_pipeline.durable": durable}):
                        t = time.perf_counter()
                        fn()
                        times.setdefault((name, durable), []).append(time.perf_counter() - t)
    print(f"{args.rounds} rounds, interleaved; seconds (median / min)\n")
    print("| write | without durable | with durable | ratio (medians) |")
    print("|---|---|---|---|")
    for name in work:
        off, on = times[(name, False)], times[(name, True)]
        print(
            f"| {name} | {statistics.median(off):.3f} / {min(off):.3f} | {statistics.median(on):.3f} / {min(on):.3f} | "
            f"{statistics.median(on) / statistics.median(off):.2f}x |"
        )
    if args.dir is None:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
