"""Minibatches of cells for training, read from a single-cell store with block shuffling.

Truly random rows are slow on any chunked store (each row costs a chunk decode); fast loaders
(annbatch, scDataset, cellxgene-census) shuffle *blocks* of consecutive rows instead, gather many
blocks at once, and shuffle the rows again in memory. :class:`Loader` does the same, with the gather
in Rust (each chunk decoded once, GIL released) running in a background thread while the previous
batches are consumed:

1. the rows are cut into blocks of ``block_size`` consecutive rows, and the blocks are shuffled
   (a new order every epoch, reproducible from ``seed``);
2. ``fetch_blocks`` blocks at a time are gathered into one CSR matrix;
3. its rows are shuffled in memory and cut into batches of ``batch_size``.

>>> loader = sparsezarr.Loader("atlas.zarr", batch_size=4096, obs=["cell_type"], seed=0)
>>> for batch in loader:
...     x = batch.X            # scipy.sparse.csr_array, batch_size x n_genes
...     y = batch.obs["cell_type"]
"""

from __future__ import annotations

import math
import queue
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from sparsezarr.csr import CsrArray, open_csr
from sparsezarr.csr._read import CompressedMatrix, Output, as_output

if TYPE_CHECKING:
    import pandas as pd

    from sparsezarr.csr import Target

__all__ = ["Batch", "Loader"]


@dataclass(frozen=True)
class Batch:
    """One minibatch."""

    #: The cells' rows (``scipy.sparse.csr_array``, or what ``output`` asked for).
    X: CompressedMatrix
    #: Their positions in the store.
    index: npt.NDArray[np.int64]
    #: The requested obs columns for these cells (a pandas DataFrame), or None.
    obs: pd.DataFrame | None = None


class Loader:
    """An iterable over shuffled minibatches of rows (cells) of a stored CSR matrix.

    ``source`` is a :class:`~sparsezarr.csr.CsrArray`, or a path / store / group holding an AnnData
    store (its ``X`` is read) or a bare CSR group. ``obs`` names columns of the AnnData store's
    ``obs`` (or is a DataFrame with one row per cell) to yield with every batch. ``rows`` restricts
    the epoch to a subset of rows (e.g. a training split). Each ``iter()`` is one epoch; with
    ``shuffle=False`` the rows come in store order. ``prefetch`` fetches (of ``fetch_blocks`` blocks
    each) are prepared ahead in a background thread.
    """

    def __init__(
        self,
        source: CsrArray | Target,
        *,
        batch_size: int = 4096,
        block_size: int = 64,
        fetch_blocks: int | None = None,
        shuffle: bool = True,
        seed: int | None = None,
        obs: str | Sequence[str] | pd.DataFrame | None = None,
        rows: npt.ArrayLike | None = None,
        drop_last: bool = False,
        prefetch: int = 2,
        output: Output = "array",
        storage_options: dict[str, Any] | None = None,
    ) -> None:
        if batch_size < 1 or block_size < 1 or prefetch < 0:
            raise ValueError("batch_size and block_size must be >= 1 and prefetch >= 0")
        from sparsezarr._stores import resolve

        self.x, obs_frame = _open(source if isinstance(source, CsrArray) else resolve(source, storage_options, read_only=True), obs)
        self.obs = obs_frame
        self.batch_size = int(batch_size)
        self.block_size = int(block_size)
        self.fetch_blocks = int(fetch_blocks) if fetch_blocks else max(1, math.ceil(4 * batch_size / block_size))
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.prefetch = int(prefetch)
        self.output = output
        self.epoch = 0
        self._seed = seed
        n = self.x.shape[0]
        self.rows: npt.NDArray[np.int64]
        if rows is None:
            self.rows = np.arange(n, dtype=np.int64)
        else:
            r = np.asarray(rows)
            self.rows = np.flatnonzero(r) if r.dtype == bool else r.astype(np.int64).ravel()
            if len(self.rows) and (np.min(self.rows) < 0 or np.max(self.rows) >= n):
                raise IndexError(f"rows must lie in 0..{n - 1}")
            self.rows = np.sort(self.rows)

    def __len__(self) -> int:
        """Batches per epoch."""
        n = len(self.rows)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    @property
    def n_cells(self) -> int:
        return len(self.rows)

    def _plan(self, rng: np.random.Generator) -> list[np.ndarray]:
        """The row positions of every fetch of one epoch."""
        rows = self.rows
        starts = np.arange(0, len(rows), self.block_size)
        if self.shuffle:
            rng.shuffle(starts)
        fetches = []
        for i in range(0, len(starts), self.fetch_blocks):
            group = np.sort(starts[i : i + self.fetch_blocks]) if self.shuffle else starts[i : i + self.fetch_blocks]
            idx = np.concatenate([np.arange(s, min(s + self.block_size, len(rows))) for s in group])
            fetches.append(rows[idx])
        return fetches

    def _fetch(self, rows: np.ndarray, rng: np.random.Generator) -> tuple[Any, np.ndarray]:
        # The in-memory shuffle happens before the gather: the rows are gathered straight into
        # their shuffled places (each chunk is still decoded once), and batches are then views.
        if self.shuffle:
            rows = rows[rng.permutation(len(rows))]
        return self.x.read_parts(rows), rows

    def __iter__(self) -> Iterator[Batch]:
        seed = None if self._seed is None else self._seed + self.epoch
        self.epoch += 1
        plan_rng, shuffle_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
        plan = self._plan(plan_rng)
        return self._batches(self._fetches(plan, shuffle_rng))

    def _fetches(self, plan: list[np.ndarray], rng: np.random.Generator) -> Iterator[tuple[Any, np.ndarray]]:
        if self.prefetch == 0:
            for rows in plan:
                yield self._fetch(rows, rng)
            return
        q: queue.Queue[Any] = queue.Queue(maxsize=self.prefetch)
        stop = threading.Event()
        done = object()

        def work() -> None:
            try:
                for rows in plan:
                    if stop.is_set():
                        return
                    item = self._fetch(rows, rng)
                    while not stop.is_set():
                        try:
                            q.put(item, timeout=0.1)
                            break
                        except queue.Full:
                            continue
                q.put(done)
            except BaseException as err:  # noqa: BLE001 - handed to the consumer
                q.put(err)

        t = threading.Thread(target=work, name="sparsezarr-loader", daemon=True)
        t.start()
        try:
            while True:
                item = q.get()
                if item is done:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            while t.is_alive():
                try:
                    q.get_nowait()
                except queue.Empty:
                    t.join(timeout=0.05)

    def _batches(self, fetches: Iterator[tuple[Any, np.ndarray]]) -> Iterator[Batch]:
        carry: tuple[Any, np.ndarray] | None = None
        b = self.batch_size
        for parts, rows in fetches:
            start = 0
            if carry is not None:
                # complete the batch left over from the previous fetch
                need = b - carry[0].shape[0]
                head = parts.rows(0, min(need, len(rows)))
                m = sp.vstack([carry[0], head], format="csr")
                idx = np.concatenate([carry[1], rows[: head.shape[0]]])
                start = head.shape[0]
                carry = None
                if m.shape[0] < b:
                    carry = (m, idx)
                    continue
                yield self._batch(m, idx)
            n = len(rows)
            while start + b <= n:
                yield self._batch(parts.rows(start, start + b), rows[start : start + b])
                start += b
            if start < n:
                carry = (parts.rows(start, n), rows[start:])
        if carry is not None and not self.drop_last and carry[0].shape[0]:
            yield self._batch(carry[0], carry[1])

    def _batch(self, m: sp.csr_array | sp.csc_array, rows: npt.NDArray[np.int64]) -> Batch:
        obs = None if self.obs is None else self.obs.iloc[rows]
        return Batch(as_output(m, self.output), rows, obs)


def _open(source: CsrArray | Target, obs: str | Sequence[str] | pd.DataFrame | None) -> tuple[CsrArray, pd.DataFrame | None]:
    """The matrix and the obs frame of a loader's source."""
    import pandas as pd
    import zarr

    from sparsezarr._stores import open_group

    if isinstance(source, CsrArray):
        x, group = source, None
    else:
        group = open_group(source, "", mode="r")
        node = group.get("X")
        if isinstance(node, zarr.Group):
            x = CsrArray(node)
        else:
            x, group = open_csr(group), None
    if x.format != "csr":
        raise ValueError("the loader reads cells as rows: it needs a CSR matrix")
    if obs is None:
        return x, None
    if isinstance(obs, pd.DataFrame):
        if len(obs) != x.shape[0]:
            raise ValueError(f"obs has {len(obs)} rows; the matrix has {x.shape[0]}")
        return x, obs
    if group is None or "obs" not in group:
        raise ValueError("obs columns need an AnnData store (with an 'obs' dataframe) as the source, or pass a DataFrame")
    import anndata as ad

    columns = [obs] if isinstance(obs, str) else list(obs)
    frame = ad.io.read_elem(group["obs"])
    if not isinstance(frame, pd.DataFrame):
        raise ValueError(f"the store's obs is a {type(frame).__name__}, not a dataframe")
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise KeyError(f"obs has no column(s) {missing}; it has {list(frame.columns)}")
    return x, frame[columns]
