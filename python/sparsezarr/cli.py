"""The ``sparsezarr`` command line.

``sparsezarr convert SRC DST``
    Convert an ``.h5ad``, a 10x Matrix Market directory, a ``.mtx[.gz]``, a 10x ``.h5`` or a Zarr
    store into an AnnData Zarr store (progress bar, throughput at the end).
``sparsezarr example DST.h5ad``
    Write built-in example data: a realistic synthetic cells x genes count matrix (sampled from a
    real 10x dataset's profile) with cell and gene annotations.
``sparsezarr info PATH``
    Describe a store (the CSR/CSC matrices in it: shape, values, chunks, stored bytes).
``sparsezarr bench``
    Compare zarr-python's default codec pipeline (and its Fused pipeline on zarr >= 3.4), the
    ``zarrs`` package (if installed) and
    ``sparsezarr.Pipeline`` on generated data: full writes and reads, unsharded and sharded.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from typing import Any

__all__ = ["main"]


def _int(text: str) -> int:
    """An integer, also as ``2**20``, ``1<<20``, ``16M`` or ``4k``."""
    t = text.strip().lower().replace("_", "")
    mult = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}.get(t[-1:], 1)
    if mult != 1:
        t = t[:-1]
    if "**" in t:
        a, b = t.split("**")
        power: int = int(a) ** int(b)  # typeshed types int ** int as Any (negative exponents give floats)
        return power * mult
    if "<<" in t:
        a, b = t.split("<<")
        return (int(a) << int(b)) * mult
    return int(t) * mult


def _storage_options(pairs: list[str] | None) -> dict[str, Any] | None:
    """``KEY=VALUE`` pairs as fsspec ``storage_options`` (``true`` / ``false`` become booleans)."""
    if not pairs:
        return None
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"--storage-option takes KEY=VALUE, not {pair!r}")
        out[key] = {"true": True, "false": False}.get(value.lower(), value)
    return out


def _convert(args: argparse.Namespace) -> int:
    from sparsezarr.convert import convert

    shards: int | str | None = "default" if args.shards is None else (None if args.shards == 0 else args.shards)
    report = convert(
        args.src,
        args.dst,
        overwrite=args.overwrite,
        layout=args.layout,
        chunks=args.chunks,
        shards=shards,
        dtype=args.dtype,
        transpose=args.transpose,
        block_entries=args.block_entries,
        progress=not args.quiet,
        storage_options=_storage_options(args.storage_option),
    )
    print(report.summary())
    return 0


def _example(args: argparse.Namespace) -> int:
    from sparsezarr.datasets import write_example_h5ad

    t = time.perf_counter()
    path = write_example_h5ad(args.dst, n_cells=args.cells, n_genes=args.genes, seed=args.seed)
    print(f"wrote {path} ({args.cells:,} cells x {args.genes:,} genes, {path.stat().st_size / 1e6:,.1f} MB) in {time.perf_counter() - t:.1f} s")
    return 0


def _bench(args: argparse.Namespace) -> int:
    from sparsezarr import bench

    names = bench.available_pipelines()
    print(f"{args.size} x {args.size} float32 ({args.dataset} data), zstd level 1, LocalStore; {args.rounds} rounds; pipelines: {', '.join(names)}")
    if "zarrs" not in names:
        print("(the zarrs package is not installed: pip install 'sparsezarr[bench]' to compare with it)")
    if "zarr-fused" not in names:
        import zarr

        print(f"(zarr {zarr.__version__} has no FusedCodecPipeline: zarr >= 3.4 adds it to the comparison)")
    states = ("best", "naive") if args.state == "both" else (args.state,)
    print("each cell: best time (median) of the rounds, throughput, and the fraction of the raw codec bound (Rust, in memory, same run)")
    if "naive" in states:
        print("naive: each call in a fresh process, default allocator, writes over an existing array")
    results = bench.run(args.dataset, size=args.size, rounds=args.rounds, pipelines=names, workdir=args.dir, progress=not args.quiet, states=states)
    print(bench.render(results))
    return 0


def _info(args: argparse.Namespace) -> int:
    import zarr

    from sparsezarr.csr import CsrArray
    from sparsezarr.csr._layout import members

    root = zarr.open_group(args.path, mode="r")
    found = 0
    groups = [("", root), *((p, g) for p, g in root.members(max_depth=None) if isinstance(g, zarr.Group))]
    for path, g in groups:
        try:
            x = CsrArray(g)
        except Exception:  # noqa: BLE001 - not a matrix group
            continue
        found += 1
        arrays = members(x.group, x.layout)
        stored = sum(a.nbytes_stored() for a in arrays)
        data = arrays[0]
        print(
            f"{path or '/'}: {x.format.upper()} ({x.layout} layout) {x.shape[0]:,} x {x.shape[1]:,} {x.dtype}, {x.nnz:,} values; "
            f"data chunks {data.chunks} shards {data.shards}; {stored / 1e6:,.1f} MB stored"
        )
    if not found:
        print(f"{args.path}: no CSR/CSC matrices found")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the command line."""
    p = argparse.ArgumentParser(prog="sparsezarr", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    c = sub.add_parser("convert", help="convert a single-cell matrix into an AnnData Zarr store")
    c.add_argument("src", help=".h5ad, 10x directory, .mtx[.gz], 10x .h5 or Zarr store")
    c.add_argument("dst", help="the Zarr store to write (a directory, or a URL such as s3://bucket/out.zarr)")
    c.add_argument(
        "--storage-option",
        action="append",
        metavar="KEY=VALUE",
        help="an fsspec storage option for a URL source or destination (e.g. endpoint_url=http://127.0.0.1:9000, anon=true); repeatable",
    )
    c.add_argument("--overwrite", action="store_true", help="replace DST if it exists (atomically, once the new store is complete)")
    c.add_argument(
        "--layout", choices=["anndata", "binsparse"], default="anndata", help="array names and metadata of the matrices (default: anndata)"
    )
    c.add_argument("--chunks", type=_int, default=None, help="values per inner chunk of data/indices (default 8192)")
    c.add_argument("--shards", type=_int, default=None, help="values per shard (default 4M; 0 = no sharding)")
    c.add_argument("--dtype", default=None, help="value type (default: as stored; float32 for Matrix Market and 10x inputs)")
    c.add_argument("--transpose", action="store_true", help="swap the axes of a plain .mtx (rows become columns)")
    c.add_argument("--block-entries", type=_int, default=1 << 24, help="values read from the source per block (memory bound; default 16M)")
    c.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    c.set_defaults(func=_convert)

    e = sub.add_parser("example", help="write built-in example data (.h5ad)")
    e.add_argument("dst", help="the .h5ad file to write")
    e.add_argument("--cells", type=_int, default=100_000)
    e.add_argument("--genes", type=_int, default=20_000)
    e.add_argument("--seed", type=int, default=0)
    e.set_defaults(func=_example)

    b = sub.add_parser("bench", help="compare zarr codec pipelines (zarr-python Batched and Fused, zarrs, sparsezarr) on generated data")
    b.add_argument(
        "--dataset", choices=["field", "smooth", "random"], default="field", help="generated data (default: field, noisy measurements, zstd-bound)"
    )
    b.add_argument("--size", type=_int, default=4096, help="array side, a multiple of 1024 (default 4096: 64 MiB)")
    b.add_argument("--rounds", type=int, default=3, help="rounds per case; the best and the median are reported (default 3)")
    b.add_argument(
        "--state",
        choices=["best", "naive", "both"],
        default="best",
        help="best: steady state in one process; naive: each call in a fresh process, default allocator, overwriting (default: best)",
    )
    b.add_argument("--dir", default=None, help="directory for the stores (default: the system's temporary directory)")
    b.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    b.set_defaults(func=_bench)

    i = sub.add_parser("info", help="describe the matrices in a Zarr store")
    i.add_argument("path")
    i.set_defaults(func=_info)

    args = p.parse_args(argv)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Cc]onsolidated metadata.*")
        try:
            return int(args.func(args))
        except (FileExistsError, FileNotFoundError, ValueError, TypeError, NotImplementedError) as err:
            print(f"sparsezarr {args.command}: error: {err}", file=sys.stderr)
            return 2


if __name__ == "__main__":
    sys.exit(main())
