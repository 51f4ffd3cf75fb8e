"""A quick comparison of zarr-python codec pipelines on generated data (``sparsezarr bench``).

Every available pipeline (zarr-python's default ``BatchedCodecPipeline``, its opt-in
``FusedCodecPipeline`` where the installed zarr has it (3.4 and later), the ``zarrs`` package if it
is installed, and :class:`sparsezarr.Pipeline`) writes and reads the same array in the same
run: a ``size`` x ``size`` float32 array, zstd level 1, in a ``LocalStore``, unsharded
(256 x 256 chunks) and sharded (1024 x 1024 shards of 64 x 64 chunks). Times are the best of
``rounds``; the pipelines take turns round by round, with glibc's malloc thresholds fixed (see
:func:`steady_malloc`). Every write goes to a fresh directory whose files are flushed and dropped
from the page cache after the timed call but kept until the end (see :func:`evict`); every
pipeline reads the stores zarr-python wrote.

This is the short version of ``benches/test_bench_pipeline.py`` (``python benches/report.py
pipeline``), which also covers small reads, small writes into a shard, fancy indexing and the raw
codec bound; ``BENCHMARKS.md`` records its results.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    import zarr

__all__ = [
    "DATASETS",
    "LAYOUTS",
    "PIPELINES",
    "BenchResult",
    "available_pipelines",
    "create",
    "evict",
    "make_data",
    "pipeline_available",
    "render",
    "run",
    "steady_malloc",
]

#: Pipelines compared, by the name shown in the table: zarr-python's default (Batched) pipeline,
#: its opt-in Fused pipeline (zarr >= 3.4), the ``zarrs`` package and ours.
PIPELINES: dict[str, str] = {
    "zarr": "zarr.core.codec_pipeline.BatchedCodecPipeline",
    "zarr-fused": "zarr.core.codec_pipeline.FusedCodecPipeline",
    "zarrs": "zarrs.ZarrsCodecPipeline",
    "sparsezarr": "sparsezarr.Pipeline",
}


class Layout(TypedDict, total=False):
    """Chunk (and shard) shape of the benchmark arrays."""

    chunks: tuple[int, int]
    shards: tuple[int, int]


LAYOUTS: dict[str, Layout] = {
    "unsharded": {"chunks": (256, 256)},
    "sharded": {"chunks": (64, 64), "shards": (1024, 1024)},
}

DATASETS = ("field", "smooth", "random")


@dataclass(frozen=True)
class BenchResult:
    """The best time of one operation with one pipeline."""

    case: str
    pipeline: str
    seconds: float
    nbytes: int


def make_data(kind: str = "field", n: int = 4096) -> np.ndarray:
    """Generated test data: ``field`` (smooth structure plus noise rounded to 0.01, compresses
    ~1.5x with zstd: compression is the bottleneck), ``smooth`` (the structure alone, ~3x) or
    ``random`` (uniform, barely compressible)."""
    if kind not in DATASETS:
        raise ValueError(f"unknown dataset {kind!r}; choose one of {', '.join(DATASETS)}")
    if kind == "random":
        return np.random.default_rng(7).random((n, n), dtype=np.float32)
    grid: npt.NDArray[np.float32] = np.mgrid[0:n, 0:n].astype(np.float32)
    y, x = grid[0], grid[1]
    structure: npt.NDArray[np.float64] = np.sin(x / 97.0) * np.cos(y / 131.0) * 100.0
    if kind == "smooth":
        return structure.astype(np.float32)
    rng = np.random.default_rng(42)
    return np.round(structure + rng.normal(0.0, 1.0, (n, n)), 2).astype(np.float32)


def pipeline_available(name: str) -> bool:
    """Whether pipeline ``name`` can run here: ``zarrs`` needs its package, ``zarr-fused`` a zarr
    that has ``FusedCodecPipeline`` (3.4 and later)."""
    module, _, cls = PIPELINES[name].rpartition(".")
    if importlib.util.find_spec(module.partition(".")[0]) is None:
        return False
    try:
        return hasattr(importlib.import_module(module), cls)
    except ImportError:
        return False


def available_pipelines() -> list[str]:
    """The pipelines that can run here (see :func:`pipeline_available`)."""
    return [p for p in PIPELINES if pipeline_available(p)]


@contextmanager
def _pipeline(name: str) -> Iterator[None]:
    import zarr

    with zarr.config.set({"codec_pipeline.path": PIPELINES[name]}):
        yield


def create(path: str | os.PathLike[str], data: np.ndarray, layout: str) -> zarr.Array:
    """An empty array shaped and typed like ``data``, zstd level 1, with one of the ``LAYOUTS``,
    created with the current codec pipeline."""
    import zarr
    from zarr.codecs import ZstdCodec

    return zarr.create_array(store=path, shape=data.shape, dtype=data.dtype, compressors=ZstdCodec(level=1), **LAYOUTS[layout])


def steady_malloc() -> bool:
    """Fix glibc's malloc thresholds (mmap above 32 MiB, trim above 256 MiB) for this process.

    glibc moves its mmap threshold up to the largest block freed so far, so whether a pipeline's
    multi-megabyte buffers are fresh mmaps (a page fault per 4 KiB page, on every call) or reused
    heap memory would depend on what ran earlier in the process (the ``zarrs`` package's sharded
    writes took 155 or 190 ms depending on it). Fixed thresholds put every pipeline in the steady
    state. Returns False where the C library is not glibc (nothing changed).
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(mallopt(m_mmap_threshold, 32 << 20)) and bool(mallopt(m_trim_threshold, 256 << 20))


def evict(path: str | os.PathLike[str]) -> None:
    """Flush the files under ``path`` to disk and drop them from the page cache, without deleting
    them: on ext4, creating files right after deleting many others is several times slower (the
    inode allocator skips recently freed inodes), which would add tens of milliseconds of
    file-system work to every unsharded write, whichever pipeline ran it."""
    os.sync()
    if not hasattr(os, "posix_fadvise"):  # not on macOS: the files just stay cached
        return
    for f in Path(path).rglob("*"):
        if f.is_file():
            fd = os.open(f, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def run(
    dataset: str = "field",
    size: int = 4096,
    rounds: int = 3,
    pipelines: list[str] | None = None,
    workdir: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> list[BenchResult]:
    """Time full writes and full reads with each pipeline; returns one result per case and
    pipeline. ``workdir`` (default: a temporary directory) must be on the file system to measure;
    everything written there is removed at the end. Fixes this process's malloc thresholds (see
    :func:`steady_malloc`)."""
    import zarr

    if size % 1024:
        raise ValueError("size must be a multiple of 1024 (the shard shape)")
    if rounds < 1:
        raise ValueError("rounds must be at least 1")
    names = pipelines or available_pipelines()
    unknown = sorted(set(names) - set(PIPELINES))
    if unknown:
        raise ValueError(f"unknown pipelines {unknown}; choose from {sorted(PIPELINES)}")
    steady_malloc()
    data = make_data(dataset, size)
    root = Path(tempfile.mkdtemp(prefix="sparsezarr-bench-", dir=workdir))
    cases = [(layout, op) for layout in LAYOUTS for op in ("write", "read")]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(cases) * rounds * len(names), desc="sparsezarr bench", unit="run")
    results: list[BenchResult] = []
    written = iter(range(1 << 30))
    # Outputs are kept until the end (see evict) where the disk has room for them twice over.
    keep = shutil.disk_usage(root).free > 2 * rounds * len(names) * len(LAYOUTS) * data.nbytes
    try:
        refs: dict[str, Path] = {}
        with _pipeline("zarr"):
            for layout in LAYOUTS:
                refs[layout] = root / f"ref-{layout}"
                create(refs[layout], data, layout)[:] = data
        for layout, op in cases:
            best = dict.fromkeys(names, float("inf"))
            readers = {}
            if op == "read":
                for name in names:
                    with _pipeline(name):
                        readers[name] = zarr.open_array(refs[layout], mode="r")
            # Pipelines take turns round by round, so that all of them meet the same state of the
            # machine (page cache, file system, other load) on average.
            for _ in range(rounds):
                for name in names:
                    if bar is not None:
                        bar.set_postfix_str(f"{op} {layout} {name}")
                    if op == "write":
                        path = root / f"w-{layout}-{name}-{next(written)}"
                        with _pipeline(name):
                            arr = create(path, data, layout)
                        os.sync()
                        t = time.perf_counter()
                        arr[:] = data
                        best[name] = min(best[name], time.perf_counter() - t)
                        # Kept until the end, out of the page cache (see evict).
                        evict(path)
                        if not keep:
                            shutil.rmtree(path, ignore_errors=True)
                    else:
                        t = time.perf_counter()
                        out = readers[name][:]
                        best[name] = min(best[name], time.perf_counter() - t)
                        if not np.array_equal(out, data):
                            raise AssertionError(f"{name} read different values from the {layout} store")
                        del out
                    if bar is not None:
                        bar.update()
            results += [BenchResult(f"full {op} ({layout})", name, best[name], data.nbytes) for name in names]
    finally:
        if bar is not None:
            bar.close()
        shutil.rmtree(root, ignore_errors=True)
    return results


def render(results: list[BenchResult]) -> str:
    """A markdown table: each pipeline's time and throughput per case, and sparsezarr's speed-up
    over each other pipeline (above 1 = sparsezarr is faster)."""
    cases = list(dict.fromkeys(r.case for r in results))
    names = list(dict.fromkeys(r.pipeline for r in results))
    by = {(r.case, r.pipeline): r for r in results}
    others = [n for n in names if n != "sparsezarr"]
    head = ["case", *names, *(f"sparsezarr vs {n}" for n in others if "sparsezarr" in names)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for case in cases:
        cells = [case]
        for n in names:
            r = by.get((case, n))
            cells.append("" if r is None else f"{r.seconds * 1e3:.1f} ms, {r.nbytes / r.seconds / 1e6:.0f} MB/s")
        ours = by.get((case, "sparsezarr"))
        for n in others:
            r = by.get((case, n))
            if ours is not None:
                cells.append("" if r is None else f"**{r.seconds / ours.seconds:.2f}x**")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
