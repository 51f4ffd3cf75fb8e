"""A quick comparison of zarr-python codec pipelines on generated data (``sparsezarr bench``).

Every available pipeline (zarr-python's default ``BatchedCodecPipeline``, its opt-in
``FusedCodecPipeline`` where the installed zarr has it (3.4 and later), the ``zarrs`` package if it
is installed, and :class:`sparsezarr.Pipeline`) writes and reads the same array in the same
run: a ``size`` x ``size`` float32 array, zstd level 1, in a ``LocalStore``, unsharded
(256 x 256 chunks) and sharded (1024 x 1024 shards of 64 x 64 chunks). The pipelines take turns
round by round, and each case reports the best and the median of ``rounds``.

Two states, so that the comparison cannot flatter anyone:

* ``best``: each pipeline in its steady state, in this process: glibc's malloc thresholds fixed
  (see :func:`steady_malloc`), every write to a fresh directory whose files are flushed and dropped
  from the page cache after the timed call but kept until the end (see :func:`evict`), reads of
  arrays opened once;
* ``naive``: what a user's first call meets: each timed call in a fresh Python process with the
  default allocator, writes over an existing array of the same shape (every chunk replaced), reads
  the first of the process.

The raw codec bound (the same chunks encoded and decoded by the Rust engine in memory, timed inside
Rust: no store, no copy into an array) is measured in the same run, and each pipeline's full
writes and reads are reported as a fraction of it (:func:`codec_bound`).

This is the short version of ``benches/test_bench_pipeline.py`` (``python benches/report.py
pipeline``), which also covers small reads, small writes into a shard and fancy indexing;
``BENCHMARKS.md`` records its results.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import shutil
import statistics
import subprocess
import sys
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
    "codec_bound",
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


STATES = ("best", "naive")


@dataclass(frozen=True)
class BenchResult:
    """One operation with one pipeline: the best time of its rounds, their median, and the raw
    codec bound of the same data (encode for writes, decode for reads), measured in the same run."""

    case: str
    pipeline: str
    seconds: float
    nbytes: int
    median: float | None = None
    bound: float | None = None

    @property
    def of_bound(self) -> float | None:
        """The codec bound's time over this time (1.0: the pipeline runs at the codec's speed)."""
        return None if self.bound is None else self.bound / self.seconds


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


def create(path: str | os.PathLike[str], data: np.ndarray, layout: str | Layout) -> zarr.Array:
    """An empty array shaped and typed like ``data``, zstd level 1, with one of the ``LAYOUTS``
    (or a layout of its own), created with the current codec pipeline."""
    import zarr
    from zarr.codecs import ZstdCodec

    chosen = LAYOUTS[layout] if isinstance(layout, str) else layout
    return zarr.create_array(store=path, shape=data.shape, dtype=data.dtype, compressors=ZstdCodec(level=1), **chosen)


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


def codec_bound(data: np.ndarray, layout: str, rounds: int = 3) -> tuple[float, float]:
    """(encode, decode) seconds of the raw codec bound: every chunk of ``data`` (for ``sharded``:
    every inner chunk, with the inner chunks' codecs; a shard only adds its index, a few KiB)
    encoded, then decoded, by the Rust engine in memory with the array's own codecs, into reused
    buffers, in parallel, best of ``rounds``, timed inside Rust: no store, no copy into an array.

    Sharded arrays are bounded by their inner chunks rather than by whole shards decoded into a
    shard-sized buffer: that buffer is a copy a pipeline need not make (ours decodes inner chunks
    straight into the output), so a shard-level bound could be beaten, and would flatter."""
    from sparsezarr import _lib

    chunks = LAYOUTS[layout]["chunks"]
    with tempfile.TemporaryDirectory() as d, _pipeline("sparsezarr"):
        create(Path(d) / "a", data, {"chunks": chunks})  # the metadata only: no chunk is written
        meta = (Path(d) / "a" / "zarr.json").read_text()
    unit = chunks[0]
    n = data.shape[0] // unit
    units = data.reshape(n, unit, n, unit).transpose(0, 2, 1, 3).reshape(n * n, unit * unit).copy().view(np.uint8)
    enc, dec, _ = _lib.ArrayEngine(meta).codec_bound(units, rounds=rounds)
    return enc, dec


_CHILD = """
import sys, time, numpy as np, zarr
from sparsezarr import bench
name, op, path, data_path = sys.argv[1:5]
data = np.load(data_path)
with bench._pipeline(name):
    arr = zarr.open_array(path, mode="r+" if op == "write" else "r")
    t = time.perf_counter()
    if op == "write":
        arr[:] = data
    else:
        out = arr[:]
    dt = time.perf_counter() - t
    if op == "read" and not np.array_equal(out, data):
        raise SystemExit(name + " read different values")
print(dt)
"""


def _naive(name: str, op: str, path: Path, data_path: Path) -> float:
    """One timed call in a fresh Python process (the default allocator; the first call there)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    proc = subprocess.run([sys.executable, "-c", _CHILD, name, op, str(path), str(data_path)], capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"naive {op} with {name} failed: {proc.stderr[-2000:]}")
    return float(proc.stdout.strip().splitlines()[-1])


def run(
    dataset: str = "field",
    size: int = 4096,
    rounds: int = 3,
    pipelines: list[str] | None = None,
    workdir: str | os.PathLike[str] | None = None,
    progress: bool = True,
    states: tuple[str, ...] = ("best",),
) -> list[BenchResult]:
    """Time full writes and full reads with each pipeline, in each of ``states`` (``best``,
    ``naive``: see the module's docstring); returns one result per case and pipeline, with the
    codec bound measured in the same run. ``workdir`` (default: a temporary directory) must be on
    the file system to measure; everything written there is removed at the end. Fixes this
    process's malloc thresholds (see :func:`steady_malloc`)."""
    import zarr

    if size % 1024:
        raise ValueError("size must be a multiple of 1024 (the shard shape)")
    if rounds < 1:
        raise ValueError("rounds must be at least 1")
    bad_states = sorted(set(states) - set(STATES))
    if not states or bad_states:
        raise ValueError(f"states must be among {STATES}, got {list(states)}")
    names = pipelines or available_pipelines()
    unknown = sorted(set(names) - set(PIPELINES))
    if unknown:
        raise ValueError(f"unknown pipelines {unknown}; choose from {sorted(PIPELINES)}")
    steady_malloc()
    data = make_data(dataset, size)
    root = Path(tempfile.mkdtemp(prefix="sparsezarr-bench-", dir=workdir))
    cases = [(state, layout, op) for state in states for layout in LAYOUTS for op in ("write", "read")]
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
        bounds = {layout: codec_bound(data, layout, rounds) for layout in LAYOUTS}
        data_path = root / "data.npy"
        if "naive" in states:
            np.save(data_path, data)
        for state, layout, op in cases:
            times: dict[str, list[float]] = {name: [] for name in names}
            readers = {}
            targets: dict[str, Path] = {}
            if op == "read" and state == "best":
                for name in names:
                    with _pipeline(name):
                        readers[name] = zarr.open_array(refs[layout], mode="r")
            if op == "write" and state == "naive":
                # The array each pipeline overwrites: written whole (by that pipeline) beforehand.
                for name in names:
                    targets[name] = root / f"naive-{layout}-{name}"
                    with _pipeline(name):
                        create(targets[name], data, layout)[:] = data
            # Pipelines take turns round by round, so that all of them meet the same state of the
            # machine (page cache, file system, other load) on average.
            for _ in range(rounds):
                for name in names:
                    if bar is not None:
                        bar.set_postfix_str(f"{state} {op} {layout} {name}")
                    if state == "naive":
                        os.sync()
                        times[name].append(_naive(name, op, targets[name] if op == "write" else refs[layout], data_path))
                    elif op == "write":
                        path = root / f"w-{layout}-{name}-{next(written)}"
                        with _pipeline(name):
                            arr = create(path, data, layout)
                        os.sync()
                        t = time.perf_counter()
                        arr[:] = data
                        times[name].append(time.perf_counter() - t)
                        # Kept until the end, out of the page cache (see evict).
                        evict(path)
                        if not keep:
                            shutil.rmtree(path, ignore_errors=True)
                    else:
                        t = time.perf_counter()
                        out = readers[name][:]
                        times[name].append(time.perf_counter() - t)
                        if not np.array_equal(out, data):
                            raise AssertionError(f"{name} read different values from the {layout} store")
                        del out
                    if bar is not None:
                        bar.update()
            if op == "write" and state == "naive":
                for name in names:  # what the naive writes stored is what was written
                    with _pipeline("zarr"):
                        if not np.array_equal(zarr.open_array(targets[name], mode="r")[:], data):
                            raise AssertionError(f"{name} stored different values in the {layout} store")
            bound = bounds[layout][0 if op == "write" else 1]
            case = f"full {op} ({layout})" + (", naive" if state == "naive" else "")
            results += [BenchResult(case, name, min(v), data.nbytes, statistics.median(v), bound) for name, v in times.items()]
    finally:
        if bar is not None:
            bar.close()
        shutil.rmtree(root, ignore_errors=True)
    return results


def render(results: list[BenchResult]) -> str:
    """A markdown table: each pipeline's best time (median) and throughput per case, its fraction
    of the raw codec bound, and sparsezarr's speed-up over each other pipeline (best over best;
    above 1 = sparsezarr is faster)."""
    cases = list(dict.fromkeys(r.case for r in results))
    names = list(dict.fromkeys(r.pipeline for r in results))
    by = {(r.case, r.pipeline): r for r in results}
    others = [n for n in names if n != "sparsezarr"]
    head = ["case", *names, "codec bound", *(f"sparsezarr vs {n}" for n in others if "sparsezarr" in names)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for case in cases:
        cells = [case]
        bound = None
        for n in names:
            r = by.get((case, n))
            if r is None:
                cells.append("")
                continue
            median = "" if r.median is None else f" ({r.median * 1e3:.1f})"
            of = "" if r.of_bound is None else f", {r.of_bound:.0%} of bound"
            cells.append(f"{r.seconds * 1e3:.1f} ms{median}, {r.nbytes / r.seconds / 1e6:.0f} MB/s{of}")
            bound = r.bound if r.bound is not None else bound
        cells.append("" if bound is None else f"{bound * 1e3:.1f} ms")
        ours = by.get((case, "sparsezarr"))
        for n in others:
            r = by.get((case, n))
            if ours is not None:
                cells.append("" if r is None else f"**{r.seconds / ours.seconds:.2f}x**")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
