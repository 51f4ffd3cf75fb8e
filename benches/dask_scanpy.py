#!/usr/bin/env python
"""scanpy preprocessing on a dask.distributed cluster, and dask -> CSR writes: sparsezarr against
anndata's lazy path with each zarr pipeline.

Usage::

    OPENBLAS_NUM_THREADS=1 python benches/dask_scanpy.py --cells 1000000 --genes 20000 \\
        [--rounds 1] [--arms a,b,c,d] [--memory-cells 1000000] [--json out.json]

Data: the built-in single-cell profile (``sparsezarr.datasets.synthetic_counts``) at
``--cells`` x ``--genes``, written once into ``--workdir`` twice: anndata's store
(``AnnData.write_zarr``, anndata's defaults) and ours (the same store with ``X`` written by
``sparsezarr.write_csr`` with its defaults).

Arms (each round starts every arm in a fresh ``distributed.LocalCluster(n_workers=2,
threads_per_worker=1, processes=True)``; arms take turns within a round):

* (a) ``anndata.experimental.read_elem_lazy`` on anndata's store, zarr's own pipeline;
* (b) the same with the ``zarrs`` pipeline on the client and the workers;
* (c) the same with ``sparsezarr.Pipeline``;
* (d) ``sparsezarr.dask.read_lazy`` on our store (default blocks).

Each runs ``normalize_total``, ``log1p`` (lazy), ``highly_variable_genes(n_top_genes=2000)`` and
``pca(n_comps=50, svd_solver="covariance_eigh", mask_var="highly_variable")``; reported: wall
time per step and end to end, cells/s, the peak resident memory of each worker (``ru_maxrss``),
the read graph's task count and pickled size. Each arm's HVG mask is compared with scanpy in
memory (run once, at ``--memory-cells``, when that equals ``--cells``) and its PCA variance ratios
with memory's. The write arm writes the same dask array (our store's ``X`` as 20,000-row blocks
of CSR) with ``sparsezarr.write_csr`` and with anndata's ``write_elem`` (``write_dask_sparse``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pickle
import resource
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

PIPELINES = {
    "a": "zarr.core.codec_pipeline.BatchedCodecPipeline",
    "b": "zarrs.ZarrsCodecPipeline",
    "c": "sparsezarr.Pipeline",
    "d": "zarr.core.codec_pipeline.BatchedCodecPipeline",
}
LABELS = {
    "a": "(a) anndata read_elem_lazy, zarr pipeline",
    "b": "(b) anndata read_elem_lazy, zarrs",
    "c": "(c) anndata read_elem_lazy, sparsezarr.Pipeline",
    "d": "(d) sparsezarr.read_lazy",
    "memory": "scanpy in memory",
}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def prepare(workdir: Path, cells: int, genes: int) -> tuple[Path, Path]:
    """anndata's store and ours, written once per size."""
    import anndata as ad
    import pandas as pd
    import scipy.sparse as sp

    import sparsezarr
    from sparsezarr.datasets import synthetic_counts

    theirs, ours = workdir / f"anndata-{cells}x{genes}.zarr", workdir / f"sparsezarr-{cells}x{genes}.zarr"
    if (theirs / "X" / "zarr.json").exists() and (theirs / "var" / "zarr.json").exists() and (ours / "X" / "zarr.json").exists():
        return theirs, ours
    log(f"writing {cells:,} x {genes:,} (anndata's store and ours) ...")
    if cells > STREAM_ABOVE:
        return prepare_streaming(theirs, ours, cells, genes)
    x = synthetic_counts(cells, genes, seed=0)
    obs = pd.DataFrame(index=[f"cell_{i:07d}" for i in range(cells)])
    var = pd.DataFrame(index=[f"gene_{i}" for i in range(genes)])
    shutil.rmtree(theirs, ignore_errors=True)
    shutil.rmtree(ours, ignore_errors=True)
    t = time.perf_counter()
    ad.AnnData(X=sp.csr_matrix(x), obs=obs, var=var).write_zarr(theirs)
    log(f"  anndata's store: {time.perf_counter() - t:.1f} s, {x.nnz:,} values")
    ad.AnnData(obs=obs, var=var, X=sp.csr_matrix((cells, genes), dtype=np.float32)).write_zarr(ours)
    t = time.perf_counter()
    sparsezarr.write_csr(ours, x, path="X", overwrite=True)
    log(f"  our store: {time.perf_counter() - t:.1f} s")
    return theirs, ours


#: Larger matrices are generated and written block by block (they do not fit in memory twice).
STREAM_ABOVE = 200_000
STREAM_BLOCK = 20_000


def _synthetic_block(block: Any, genes: int, block_info: Any = None) -> Any:
    import scipy.sparse as sp

    from sparsezarr.datasets import synthetic_counts

    i = block_info[None]["chunk-location"][0]
    n = block_info[None]["chunk-shape"][0]
    return sp.csr_matrix(synthetic_counts(n, genes, seed=1000 + i))


def prepare_streaming(theirs: Path, ours: Path, cells: int, genes: int) -> tuple[Path, Path]:
    """The same stores for matrices that do not fit in memory: blocks of 20,000 cells drawn from
    the profile (a seed per block), written by anndata's ``write_elem`` of a dask array
    (``write_dask_sparse``) and by ``sparsezarr.write_csr`` of the same dask array."""
    import anndata as ad
    import dask
    import dask.array as da
    import pandas as pd
    import scipy.sparse as sp
    import zarr

    import sparsezarr

    obs = pd.DataFrame(index=[f"cell_{i:07d}" for i in range(cells)])
    var = pd.DataFrame(index=[f"gene_{i}" for i in range(genes)])
    x = da.map_blocks(
        _synthetic_block, da.zeros((cells, genes), chunks=(STREAM_BLOCK, genes), dtype=np.float32), genes,
        dtype=np.float32, meta=sp.csr_matrix((0, 0), dtype=np.float32),
    )  # fmt: skip
    with dask.config.set(scheduler="threads", num_workers=2):
        if not (ours / "X" / "zarr.json").exists():
            shutil.rmtree(ours, ignore_errors=True)
            ad.AnnData(obs=obs, var=var).write_zarr(ours)
            t = time.perf_counter()
            sparsezarr.write_csr(ours, x, path="X", overwrite=True)
            log(f"  our store: {time.perf_counter() - t:.1f} s, {sparsezarr.open_csr(ours, path='X').nnz:,} values")
        # anndata refuses to add to a store with consolidated metadata: X first, then the rest
        shutil.rmtree(theirs, ignore_errors=True)
        t = time.perf_counter()
        g = zarr.open_group(theirs, mode="w")
        ad.io.write_elem(g, "X", x)
        log(f"  anndata's store: {time.perf_counter() - t:.1f} s")
        ad.io.write_elem(g, "obs", obs)
        ad.io.write_elem(g, "var", var)
        g.attrs.update({"encoding-type": "anndata", "encoding-version": "0.1.0"})
    return theirs, ours


def _cluster() -> Any:
    import distributed

    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, memory_limit="10GiB")
    return cluster, distributed.Client(cluster)


class PeakRss:
    """The peak resident memory of each worker process, sampled every 50 ms from the client
    (``ru_maxrss`` would report the client's peak: Linux keeps it across fork and exec)."""

    def __init__(self, client: Any) -> None:
        import threading

        import psutil

        self.procs = [psutil.Process(pid) for pid in client.run(os.getpid).values()]
        self.peak = [0] * len(self.procs)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for i, p in enumerate(self.procs):
                with contextlib.suppress(Exception):  # a worker that exited keeps its last peak
                    self.peak[i] = max(self.peak[i], p.memory_info().rss)
            self._stop.wait(0.05)

    def stop(self) -> list[float]:
        self._stop.set()
        self._thread.join()
        return [round(v / 1024**3, 2) for v in self.peak]


def _graph_stats(x: Any) -> tuple[int, int]:
    graph = dict(x.__dask_graph__())
    return len(graph), len(pickle.dumps(graph))


def open_arm(arm: str, theirs: Path, ours: Path, block_rows: int) -> Any:
    import anndata as ad
    import zarr

    if arm == "d":
        from sparsezarr.dask import read_lazy

        return read_lazy(ours)
    g = zarr.open_group(theirs, mode="r")
    x = ad.experimental.read_elem_lazy(g["X"], chunks=(block_rows, -1))
    return ad.AnnData(X=x, obs=ad.io.read_elem(g["obs"]), var=ad.io.read_elem(g["var"]))


def preprocess(adata: Any, client: Any | None) -> dict[str, float]:
    import scanpy as sc

    steps: dict[str, float] = {}
    t = time.perf_counter()
    sc.pp.normalize_total(adata, target_sum=1e4)
    steps["normalize_total"] = time.perf_counter() - t
    t = time.perf_counter()
    sc.pp.log1p(adata)
    steps["log1p"] = time.perf_counter() - t
    t = time.perf_counter()
    sc.pp.highly_variable_genes(adata, n_top_genes=2000)
    steps["highly_variable_genes"] = time.perf_counter() - t
    t = time.perf_counter()
    sc.pp.pca(adata, n_comps=50, svd_solver="covariance_eigh", mask_var="highly_variable")
    steps["pca"] = time.perf_counter() - t
    return steps


def run_arm(arm: str, theirs: Path, ours: Path, block_rows: int) -> dict[str, Any]:
    import dask
    import zarr

    from sparsezarr.dask import use_pipeline

    cluster, client = _cluster()
    try:
        with zarr.config.set({"codec_pipeline.path": PIPELINES[arm]}), dask.config.set(scheduler=client.get):
            if arm in "bc":
                use_pipeline(client, {"codec_pipeline.path": PIPELINES[arm]})
            sampler = PeakRss(client)
            t0 = time.perf_counter()
            adata = open_arm(arm, theirs, ours, block_rows)
            opened = time.perf_counter() - t0
            t1 = time.perf_counter()
            steps = {"open": opened, **preprocess(adata, client)}
            total = opened + time.perf_counter() - t1
            tasks, graph_bytes = _graph_stats(open_arm(arm, theirs, ours, block_rows).X)
            rss = sampler.stop()
        return {
            "arm": arm,
            "steps": steps,
            "total": total,
            "cells_per_s": adata.n_obs / total,
            "peak_rss_gb": rss,
            "tasks": tasks,
            "graph_bytes": graph_bytes,
            "blocks": len(adata.X.chunks[0]),
            "hvg": np.flatnonzero(adata.var["highly_variable"].to_numpy()).tolist(),
            "variance_ratio": np.asarray(adata.uns["pca"]["variance_ratio"]).tolist(),
        }
    finally:
        client.close()
        cluster.close()


def run_memory(theirs: Path) -> dict[str, Any]:
    import anndata as ad

    t0 = time.perf_counter()
    adata = ad.read_zarr(theirs)
    steps = {"open": time.perf_counter() - t0, **preprocess(adata, None)}
    total = time.perf_counter() - t0
    return {
        "arm": "memory",
        "steps": steps,
        "total": total,
        "cells_per_s": adata.n_obs / total,
        "peak_rss_gb": [round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2, 2)],
        "hvg": np.flatnonzero(adata.var["highly_variable"].to_numpy()).tolist(),
        "variance_ratio": np.asarray(adata.uns["pca"]["variance_ratio"]).tolist(),
    }


def _copy_block(block: Any) -> Any:
    return block.copy()


def run_write(ours: Path, workdir: Path, block_rows: int) -> list[dict[str, Any]]:
    """The same dask array (our store's X in row blocks) written by each writer on the cluster."""
    import anndata as ad
    import dask
    import zarr

    import sparsezarr

    out = []
    for writer, source in (("sparsezarr", "store"), ("sparsezarr", "computed"), ("anndata", "store"), ("anndata", "computed")):
        cluster, client = _cluster()
        target = workdir / f"write-{writer}.zarr"
        shutil.rmtree(target, ignore_errors=True)
        try:
            with dask.config.set(scheduler=client.get):
                src = sparsezarr.open_csr(ours, path="X").to_dask(chunks=block_rows)
                if source == "computed":  # a computed array: the writer cannot know its block sizes
                    src = src.map_blocks(_copy_block, dtype=src.dtype)
                sampler = PeakRss(client)
                t = time.perf_counter()
                if writer == "sparsezarr":
                    sparsezarr.write_csr(target, src)
                else:
                    ad.io.write_elem(zarr.open_group(target, mode="w"), "/", src)
                elapsed = time.perf_counter() - t
                rss = sampler.stop()
            check = sparsezarr.open_csr(target)
            probe = np.arange(0, src.shape[0], max(1, src.shape[0] // 1000))
            ok = bool((check[probe] != sparsezarr.open_csr(ours, path="X")[probe]).nnz == 0)
            out.append(
                {"arm": f"{writer}, {source} source", "total": elapsed, "cells_per_s": src.shape[0] / elapsed, "peak_rss_gb": rss, "equal": ok}
            )
        finally:
            client.close()
            cluster.close()
            shutil.rmtree(target, ignore_errors=True)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cells", type=int, default=100_000)
    p.add_argument("--genes", type=int, default=20_000)
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--arms", default="a,b,c,d", help="comma-separated arms, or 'none' (only the write comparison)")
    p.add_argument("--block-rows", type=int, default=20_000, help="row blocks of the peers' lazy arrays and of the write input")
    p.add_argument("--memory-cells", type=int, default=None, help="scanpy in memory at this size (default: --cells; 0: skip)")
    p.add_argument("--no-write", action="store_true")
    p.add_argument("--workdir", default=os.environ.get("SPARSEZARR_BENCH_DIR", "/tmp/sparsezarr-bench-dask"))
    p.add_argument("--json", default=None)
    p.add_argument("--our-block-values", type=int, default=None, help="override sparsezarr.dask.DEFAULT_BLOCK_VALUES (for sweeps)")
    args = p.parse_args()
    if args.our_block_values:
        import sparsezarr.dask

        sparsezarr.dask.DEFAULT_BLOCK_VALUES = args.our_block_values
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    theirs, ours = prepare(workdir, args.cells, args.genes)
    arms = [] if args.arms in ("", "none") else args.arms.split(",")
    results: dict[str, list[dict[str, Any]]] = {a: [] for a in arms}
    for r in range(args.rounds):
        for arm in arms if r % 2 == 0 else arms[::-1]:
            log(f"round {r + 1}: {LABELS[arm]} ...")
            res = run_arm(arm, theirs, ours, args.block_rows)
            log(f"  {res['total']:.1f} s  steps { ({k: round(v, 2) for k, v in res['steps'].items()}) }  rss {res['peak_rss_gb']} GB")
            results[arm].append(res)
    memory_cells = args.cells if args.memory_cells is None else args.memory_cells
    reference = None
    if memory_cells == args.cells:
        log("scanpy in memory ...")
        reference = run_memory(theirs)
        log(f"  {reference['total']:.1f} s")
    writes = [] if args.no_write else run_write(ours, workdir, args.block_rows)
    report(results, reference, writes, args)


def report(results: dict[str, list[dict[str, Any]]], reference: dict[str, Any] | None, writes: list[dict[str, Any]], args: Any) -> None:
    print(f"\n## scanpy preprocessing, {args.cells:,} cells x {args.genes:,} genes, 2 workers x 1 thread ({args.rounds} round(s), medians)\n")
    print(
        "| arm | open | normalize_total | log1p | HVG | PCA | end to end | cells/s | peak RSS per worker (GB) | tasks / graph bytes | HVG = memory | max |Δ variance ratio| |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    medians = {}
    # without scanpy in memory at this size, every arm is compared with the first arm
    compare = reference if reference is not None else (next(iter(results.values()))[-1] if results else None)
    for arm, runs in results.items():
        med = {k: statistics.median(r["steps"][k] for r in runs) for k in runs[0]["steps"]}
        total = statistics.median(r["total"] for r in runs)
        medians[arm] = total
        last = runs[-1]
        same = dvr = "-"
        if compare is not None:
            same = str(last["hvg"] == compare["hvg"])
            dvr = f"{np.max(np.abs(np.asarray(last['variance_ratio']) - np.asarray(compare['variance_ratio']))):.1e}"
        print(
            f"| {LABELS[arm]} | {med['open']:.2f} | {med['normalize_total']:.2f} | {med['log1p']:.2f} | {med['highly_variable_genes']:.2f} | "
            f"{med['pca']:.2f} | **{total:.2f}** | {args.cells / total:,.0f} | {max(max(r['peak_rss_gb']) for r in runs)} | "
            f"{last['tasks']} / {last['graph_bytes']:,} | {same} | {dvr} |"
        )
    if reference is not None:
        s = reference["steps"]
        print(
            f"| {LABELS['memory']} | {s['open']:.2f} | {s['normalize_total']:.2f} | {s['log1p']:.2f} | {s['highly_variable_genes']:.2f} | {s['pca']:.2f} | "
            f"**{reference['total']:.2f}** | {args.cells / reference['total']:,.0f} | {reference['peak_rss_gb'][0]} (one process) | - | - | - |"
        )
    if "d" in medians:
        peers = [medians[a] for a in ("a", "b") if a in medians]
        if peers:
            print(f"\n(d) vs the faster of (a), (b): {min(peers) / medians['d']:.2f}x", end="")
        if "c" in medians:
            print(f"; vs (c): {medians['c'] / medians['d']:.2f}x", end="")
        print()
    if writes:
        print("\n## dask -> CSR write (the same dask array of 20,000-row CSR blocks: our store's X as read, or copied by a map_blocks), 2 workers\n")
        print("| writer | seconds | cells/s | peak RSS per worker (GB) | equal |")
        print("|---|---|---|---|---|")
        for w in writes:
            print(f"| {w['arm']} | {w['total']:.2f} | {w['cells_per_s']:,.0f} | {max(w['peak_rss_gb'])} | {w['equal']} |")
        by = {w["arm"]: w["total"] for w in writes}
        for source in ("store", "computed"):
            ours_s, theirs_s = by.get(f"sparsezarr, {source} source"), by.get(f"anndata, {source} source")
            if ours_s and theirs_s:
                print(f"\nsparsezarr.write_csr vs anndata write_dask_sparse, {source} source: {theirs_s / ours_s:.2f}x")
    print(f"\ncommand: {' '.join(sys.argv)}")
    if args.json:
        Path(args.json).write_text(json.dumps({"results": results, "reference": reference, "writes": writes, "args": vars(args)}, indent=1))


if __name__ == "__main__":
    main()
