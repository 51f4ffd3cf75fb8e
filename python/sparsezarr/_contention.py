"""The shared-shard scenario: several writers (processes or threads) rewriting the same shards at
once, and how many written elements survive. Used by the tests and the benchmarks; it runs any
pipeline, so the peers can be measured with it too.

The array is ``rows x cols`` int32 with inner chunks of ``block`` rows in shards of ``shard``
rows; writer ``w`` of ``n`` writes every ``n``-th block of ``block`` rows (so every shard is
rewritten by every writer), each element a value unique to it. Kinds:

* ``"dense"``: a zarr array written through zarr-python with the pipeline ``pipeline`` (a
  ``codec_pipeline.path``; default ``sparsezarr.Pipeline``);
* ``"sparse"``: a sparsezarr sparse array;
* ``"append"``: a CSR matrix that every writer extends with ``append_rows`` (one block at a time).

:func:`run` returns the number of elements lost (0 when every write landed).
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

Kind = Literal["dense", "sparse", "append"]


@dataclass(frozen=True)
class Scenario:
    """One shared-shard scenario (see the module docstring)."""

    kind: Kind
    path: str
    writers: int = 4
    rows: int = 1024
    cols: int = 64
    block: int = 16
    shard: int = 256
    pipeline: str = "sparsezarr.Pipeline"

    def expected(self) -> npt.NDArray[np.int32]:
        """What the array holds once every write has landed."""
        return np.arange(1, self.rows * self.cols + 1, dtype=np.int32).reshape(self.rows, self.cols)

    def blocks(self, writer: int) -> range:
        return range(writer, self.rows // self.block, self.writers)


def _create(s: Scenario) -> None:
    import scipy.sparse as sp
    import zarr

    import sparsezarr

    if s.kind == "dense":
        with zarr.config.set({"codec_pipeline.path": s.pipeline}):
            zarr.create_array(s.path, shape=(s.rows, s.cols), chunks=(s.block, s.cols), shards=(s.shard, s.cols), dtype="int32", fill_value=0)
    elif s.kind == "sparse":
        sparsezarr.create_sparse(s.path, shape=(s.rows, s.cols), dtype="int32", chunks=(s.block, s.cols), shards=(s.shard, s.cols))
    else:
        sparsezarr.write_csr(s.path, sp.csr_array((0, s.cols), dtype=np.int32), chunks=s.block * s.cols, shards=s.shard * s.cols)


def _write(s: Scenario, writer: int) -> None:
    import zarr

    import sparsezarr

    full = s.expected()
    if s.kind == "dense":
        with zarr.config.set({"codec_pipeline.path": s.pipeline}):
            a = zarr.open_array(s.path, mode="r+")
            for b in s.blocks(writer):
                a[b * s.block : (b + 1) * s.block] = full[b * s.block : (b + 1) * s.block]
    elif s.kind == "sparse":
        x = sparsezarr.open_sparse(s.path)
        for b in s.blocks(writer):
            x[b * s.block : (b + 1) * s.block] = full[b * s.block : (b + 1) * s.block]
    else:
        for b in s.blocks(writer):
            sparsezarr.append_rows(s.path, full[b * s.block : (b + 1) * s.block])


def _read(s: Scenario) -> tuple[npt.NDArray[np.int32], int]:
    """What the array holds, and the elements it holds beyond the expected shape."""
    import zarr

    import sparsezarr

    if s.kind == "dense":
        with zarr.config.set({"codec_pipeline.path": "zarr.core.codec_pipeline.BatchedCodecPipeline"}):
            return np.asarray(zarr.open_array(s.path, mode="r")[:]), 0
    if s.kind == "sparse":
        return sparsezarr.open_sparse(s.path, mode="r").todense(), 0
    m = sparsezarr.open_csr(s.path)[:]
    # Appended blocks land in any order: put each back in its place (its first value names it).
    out = np.zeros((s.rows, s.cols), dtype=np.int32)
    dense = np.asarray(m.todense())
    for r in range(0, dense.shape[0] - dense.shape[0] % s.block, s.block):
        first = int(dense[r, 0])
        if first > 0 and (first - 1) % (s.block * s.cols) == 0:
            place = (first - 1) // s.cols
            out[place : place + s.block] = dense[r : r + s.block]
    return out, abs(dense.shape[0] - s.rows) * s.cols


def run(s: Scenario, *, threads: bool = False) -> int:
    """Run the scenario with ``s.writers`` processes (spawned) or threads; the number of
    elements lost."""
    _create(s)
    if threads:
        with ThreadPoolExecutor(s.writers) as pool:
            list(pool.map(_write, [s] * s.writers, range(s.writers)))
    else:
        with ProcessPoolExecutor(s.writers, mp_context=multiprocessing.get_context("spawn")) as pool:
            list(pool.map(_write, [s] * s.writers, range(s.writers)))
    got, extra = _read(s)
    return int((got != s.expected()).sum()) + extra
