#!/usr/bin/env python
"""The sweep behind the default chunk shape of 2-d sparse arrays (``sparsezarr.sparse.default_chunks``).

One cells x genes matrix (``benches/_data.py``: 100,000 x 20,000, 6.9% stored, values and row
lengths sampled from real cells), written

* by ``sparsezarr.from_scipy`` with **default** chunks (the rule), and with the chunk shapes around
  it, plus the balanced ~2**20-element chunks that were the default before (782 x 1250);
* by anndata as its CSR group (zarr v3, ``auto_shard_zarr_v3=True`` as anndata recommends), written
  and read (``sparse_dataset``) with zarr's default pipeline (naive) and with the ``zarrs`` pipeline
  (best, where installed).

Reads, each checked against scipy in memory: one gene (a column; a different gene each round),
1000 random cells (sorted; a different set each round), and the full matrix. Rounds are
interleaved (every layout once per round); medians and minimums are reported, with each layout's
ratio to anndata's best.

    python benches/sparse_defaults.py [--rounds 3] [--dir DIR] [--json out.json] [--quick]

``--quick`` sweeps the rule's chunks and anndata only. Takes ~10 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _data import cell_matrix


def _write_ours(m: sp.csr_array, path: Path, chunks: tuple[int, int] | None) -> float:
    import sparsezarr

    t = time.perf_counter()
    sparsezarr.from_scipy(m, path, chunks=chunks, overwrite=True)
    return time.perf_counter() - t


def _write_anndata(m: sp.csr_array, path: Path) -> float:
    import anndata as ad
    import zarr

    ad.settings.zarr_write_format = 3
    ad.settings.auto_shard_zarr_v3 = True
    t = time.perf_counter()
    g = zarr.open_group(path, mode="w")
    ad.io.write_elem(g, "X", m)
    return time.perf_counter() - t


def _pipeline(name: str) -> Any:
    import zarr

    path = {"zarr": "zarr.core.codec_pipeline.BatchedCodecPipeline", "zarrs": "zarrs.ZarrsCodecPipeline"}[name]
    return zarr.config.set({"codec_pipeline.path": path})


def _du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--dir", default=None, help="where the stores go (default: a temporary directory)")
    ap.add_argument("--json", default=None, help="write the measurements here")
    ap.add_argument("--quick", action="store_true", help="the rule's chunks and anndata only")
    args = ap.parse_args()

    import anndata as ad
    import zarr

    import sparsezarr
    from sparsezarr.sparse import default_chunks

    m = cell_matrix()
    density = m.nnz / (m.shape[0] * m.shape[1])
    rule = default_chunks(m.shape, density)
    layouts: dict[str, tuple[int, int] | None] = {f"sparsezarr default {rule[0]}x{rule[1]}": None}
    if not args.quick:
        for c in [(rule[0] // 2, rule[1]), (rule[0] * 2, rule[1]), (rule[0], rule[1] * 2), (rule[0], rule[1] // 2), (782, 1250)]:
            layouts[f"sparsezarr {c[0]}x{c[1]}" + (" (old default)" if c == (782, 1250) else "")] = c
    peers = ["anndata (zarr)"]
    try:
        import zarrs  # noqa: F401

        peers.append("anndata (zarrs)")
    except ImportError:
        pass

    root = Path(tempfile.mkdtemp(prefix="sparsezarr-defaults-", dir=args.dir))
    rng = np.random.default_rng(7)
    results: dict[str, dict[str, Any]] = {}
    try:
        # Writes: every layout once per round, in turns (the first write of a process pays for
        # growing the heap, whoever makes it); the last round's stores are read below.
        paths: dict[str, Path] = {name: root / f"ours{i}.zarr" for i, name in enumerate(layouts)}
        stores: dict[str, Path] = {p: root / f"anndata{i}.zarr" for i, p in enumerate(peers)}
        writes: dict[str, list[float]] = {name: [] for name in [*layouts, *peers]}
        for r in range(args.rounds):
            for name, chunks in layouts.items():
                writes[name].append(_write_ours(m, paths[name], chunks))
            for p in peers:
                shutil.rmtree(stores[p], ignore_errors=True)
                with _pipeline("zarrs" if "zarrs" in p else "zarr"):
                    writes[p].append(_write_anndata(m, stores[p]))
            print(f"write round {r + 1}/{args.rounds} done", file=sys.stderr)
        for name in layouts:
            x = sparsezarr.open_sparse(paths[name])
            results[name] = {"chunks": list(x.chunks), "shards": list(x.shards or []), "stored_bytes": _du(paths[name])}
        for p in peers:
            results[p] = {"stored_bytes": _du(stores[p])}
        for name, v in writes.items():
            results[name].update(write_s=statistics.median(v), write_min_s=min(v), write_all_s=v)

        times: dict[str, dict[str, list[float]]] = {k: {"one gene": [], "1000 random cells": [], "full read": []} for k in results}
        for r in range(args.rounds):
            gene = int(rng.integers(m.shape[1]))
            cells = np.sort(rng.choice(m.shape[0], 1000, replace=False))
            want_gene = m[:, [gene]].toarray().ravel()
            want_cells = m[cells]
            for name in results:
                if name in layouts:
                    x = sparsezarr.open_sparse(paths[name])
                    reads = {
                        "one gene": lambda x=x, g=gene: x.to_scipy((slice(None), slice(g, g + 1))),
                        "1000 random cells": lambda x=x, c=cells: x.to_scipy((c, slice(None))),
                        "full read": lambda x=x: x.to_scipy(),
                    }
                    ctx = None
                else:
                    ctx = _pipeline("zarrs" if "zarrs" in name else "zarr")
                    ctx.__enter__()
                    xa = ad.io.sparse_dataset(zarr.open_group(stores[name], mode="r")["X"])
                    reads = {
                        "one gene": lambda xa=xa, g=gene: xa[:, g],
                        "1000 random cells": lambda xa=xa, c=cells: xa[c],
                        "full read": lambda xa=xa: xa.to_memory(),
                    }
                try:
                    for op, fn in reads.items():
                        t = time.perf_counter()
                        out = fn()
                        times[name][op].append(time.perf_counter() - t)
                        if op == "one gene":
                            got = np.asarray(out.toarray()).ravel()
                            assert np.array_equal(got, want_gene), (name, op)
                        elif op == "1000 random cells":
                            assert (sp.csr_array(out) != want_cells).nnz == 0, (name, op)
                        else:
                            assert (sp.csr_array(out) != m).nnz == 0, (name, op)
                        del out
                finally:
                    if ctx is not None:
                        ctx.__exit__(None, None, None)
            print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
        for name, ops in times.items():
            results[name]["reads"] = {op: {"median_s": statistics.median(v), "min_s": min(v), "all_s": v} for op, v in ops.items()}
    finally:
        shutil.rmtree(root, ignore_errors=True)

    best_peer = {op: min(results[p]["reads"][op]["median_s"] for p in peers) for op in ("one gene", "1000 random cells", "full read")}
    best_write = min(results[p]["write_s"] for p in peers)  # medians
    print(
        f"\nMatrix {m.shape[0]:,} x {m.shape[1]:,}, {m.nnz:,} stored ({density:.1%}); medians (min) of {args.rounds} rounds; ratio: anndata's best median / this median\n"
    )
    print("| layout | chunks | one gene | 1000 random cells | full read | write | stored |")
    print("|---|---|---|---|---|---|---|")
    for name, r in results.items():
        cells_ = []
        for op in ("one gene", "1000 random cells", "full read"):
            v = r["reads"][op]
            ratio = best_peer[op] / v["median_s"]
            cells_.append(f"{v['median_s'] * 1e3:.1f} ms ({v['min_s'] * 1e3:.1f}), **{ratio:.2f}x**")
        chunks = "x".join(map(str, r["chunks"])) if "chunks" in r else "CSR"
        write = f"{r['write_s']:.2f} s ({r['write_min_s']:.2f}), **{best_write / r['write_s']:.2f}x**"
        print(f"| {name} | {chunks} | {' | '.join(cells_)} | {write} | {r['stored_bytes'] / 1e6:.0f} MB |")
    if args.json:
        Path(args.json).write_text(json.dumps({"shape": list(m.shape), "nnz": int(m.nnz), "rounds": args.rounds, "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
