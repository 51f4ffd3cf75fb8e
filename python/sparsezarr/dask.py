"""Dask: sparse, single-cell and virtual arrays as lazy dask arrays, parallel writes from dask,
and the pipeline on dask.distributed workers.

* :meth:`CsrArray.to_dask <sparsezarr.CsrArray.to_dask>` (row blocks of ``scipy.sparse``
  ``csr_matrix``; column blocks of ``csc_matrix`` for CSC), :meth:`SparseArray.to_dask
  <sparsezarr.SparseArray.to_dask>` (``sparse.COO`` blocks aligned to shards),
  :meth:`VirtualArray.to_dask <sparsezarr.VirtualArray.to_dask>`, :func:`zarr_to_dask` (dense
  zarr arrays) and :func:`read_lazy` (an ``AnnData`` whose ``X`` and layers are such arrays).
  Graphs are built without reading data on the client: each task holds the handle's small
  pickled description (store, path, options; ``sparsezarr._handles``) and its block bounds,
  reopens the handle once per worker process and reads its block in Rust.
* :func:`write_csr` / :func:`write_csc` (``sparsezarr.write_csr`` with a dask array) write a
  dask array of sparse blocks in parallel on the active scheduler: one small pass counts each
  block's values, the client places the blocks, then every shard of ``data``, ``indices`` and
  ``indptr`` is written by exactly one task. The result is byte-identical to the serial write.
* :func:`store` writes a dask array into a sparse array or a dense zarr array with blocks
  aligned to shards (rechunking misaligned input, or raising).
* :class:`PipelinePlugin` / :func:`use_pipeline`: dask.distributed workers read zarr arrays
  through ``sparsezarr.Pipeline`` when the client does.

Stores held in one process's memory (``zarr.storage.MemoryStore``) work with dask's threaded
scheduler and are refused, with an error saying so, when a graph is sent to other processes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal, TypeGuard, cast

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp
import zarr

from sparsezarr._handles import StoreRef, check_shippable, new_token, pipeline_config, restore

if TYPE_CHECKING:
    import anndata
    import dask.array as da

    from sparsezarr.csr._layout import Format
    from sparsezarr.csr._read import CsrArray
    from sparsezarr.sparse import SparseArray
    from sparsezarr.virtual import VirtualArray

try:  # dask.distributed is optional: the plugin exists where it is installed
    from distributed import WorkerPlugin as _WorkerPlugin
except ImportError:  # pragma: no cover - distributed is a test dependency
    _WorkerPlugin = object  # type: ignore[assignment,misc]

__all__ = [
    "DEFAULT_BLOCK_BYTES",
    "DEFAULT_BLOCK_ELEMENTS",
    "DEFAULT_BLOCK_VALUES",
    "PipelinePlugin",
    "read_lazy",
    "store",
    "use_pipeline",
    "zarr_to_dask",
]

#: Stored values per block of a CSR/CSC dask array (``to_dask(chunks="auto")``): 16 Mi values
#: are 128 MB of float32 values and int32 indices, a few times that while scanpy works on them.
DEFAULT_BLOCK_VALUES = 1 << 24
#: Most rows (columns) per block of a CSR (CSC) dask array, however sparse the rows.
MAX_BLOCK_ROWS = 1 << 20
#: Elements per block aimed at for sparse arrays and sparse views (blocks grow from the shard).
DEFAULT_BLOCK_ELEMENTS = 1 << 26
#: Bytes per block aimed at for dense arrays and dense views.
DEFAULT_BLOCK_BYTES = 128 << 20


def _dask_array() -> Any:
    try:
        import dask.array as da
    except ImportError as e:  # pragma: no cover - dask is a test dependency
        raise ImportError("dask arrays need dask: pip install 'dask[array]' (and 'distributed' for a cluster)") from e
    return da


def _distributed_active() -> bool:
    """Whether dask's scheduler in force is a dask.distributed client (tasks run elsewhere)."""
    from dask.base import get_scheduler

    owner = getattr(get_scheduler(), "__self__", None)
    return type(owner).__name__ == "Client"


def check_stores(stores: Sequence[Any], what: str) -> None:
    """Refuse, when the scheduler in force is dask.distributed, stores that live in this
    process's memory (they would be refused when the graph is sent anyway, with a less direct
    message)."""
    if _distributed_active():
        for s in stores:
            check_shippable(s, what)


def _from_tasks(prefix: str, token: str, tasks: dict[Any, tuple[Any, ...]], chunks: tuple[tuple[int, ...], ...], meta: Any) -> da.Array:
    """A dask array from one layer of tasks (keys ``(name, i, j, ...)``)."""
    array_module = _dask_array()
    from dask.base import tokenize
    from dask.highlevelgraph import HighLevelGraph

    name = f"{prefix}-{tokenize(token, chunks)}"
    dsk = {(name, *k): v for k, v in tasks.items()}
    graph = HighLevelGraph.from_collections(name, cast("Any", dsk), dependencies=())
    out: da.Array = array_module.Array(graph, name, chunks, meta=meta)
    return out


# ------------------------------------------------------------------------------------------------
# Block shapes
# ------------------------------------------------------------------------------------------------


def row_blocks(indptr: npt.NDArray[Any], block_values: int = DEFAULT_BLOCK_VALUES, max_rows: int = MAX_BLOCK_ROWS) -> tuple[int, ...]:
    """Block sizes cutting rows ``0..len(indptr)-1`` so that each block holds at most
    ``block_values`` values (a row holding more is a block of its own) and at most ``max_rows``
    rows."""
    n = len(indptr) - 1
    if n <= 0:
        return (0,)
    ptr = np.asarray(indptr, dtype=np.int64)
    bounds = [0]
    while bounds[-1] < n:
        a = bounds[-1]
        b = int(np.searchsorted(ptr, ptr[a] + block_values, side="right")) - 1
        bounds.append(min(n, a + max_rows, max(b, a + 1)))
    return tuple(int(d) for d in np.diff(bounds))


def _even_blocks(n: int, size: int) -> tuple[int, ...]:
    size = max(1, int(size))
    if n == 0:
        return (0,)
    return (size,) * (n // size) + ((n % size,) if n % size else ())


def _grown_blocks(shape: Sequence[int], unit: Sequence[int], budget: int) -> tuple[tuple[int, ...], ...]:
    """Blocks that are multiples of ``unit`` (a shard or chunk shape), grown dimension after
    dimension (the first first) until a block holds about ``budget`` elements."""
    block = [min(max(1, u), max(1, n)) for u, n in zip(unit, shape, strict=True)]
    for d in range(len(block)):
        while math.prod(block) * 2 <= budget and block[d] < shape[d]:
            block[d] = min(block[d] * 2, max(shape[d], 1))
    return tuple(_even_blocks(n, b) for n, b in zip(shape, block, strict=True))


def _slices(chunks: tuple[tuple[int, ...], ...]) -> list[tuple[tuple[int, ...], tuple[slice, ...]]]:
    """Every block of a chunk grid: its index and its region."""
    import itertools

    starts = [np.concatenate([[0], np.cumsum(c)[:-1]]).astype(int) for c in chunks]
    out = []
    for idx in itertools.product(*(range(len(c)) for c in chunks)):
        out.append((idx, tuple(slice(int(starts[d][i]), int(starts[d][i]) + chunks[d][i]) for d, i in enumerate(idx))))
    return out


# ------------------------------------------------------------------------------------------------
# Reading
# ------------------------------------------------------------------------------------------------


def _read_major(x: Any, a: int, b: int, fmt: str, output: str) -> Any:
    """Task: rows (columns for CSC) ``a..b`` of a CSR handle or view, as ``output``."""
    key = slice(a, b) if fmt == "csr" else (slice(None), slice(a, b))
    return x.read(key, output=output)


def _compressed_meta(fmt: str, dtype: np.dtype[Any], output: str) -> Any:
    if output == "matrix":
        return sp.csr_matrix((0, 0), dtype=dtype) if fmt == "csr" else sp.csc_matrix((0, 0), dtype=dtype)
    return sp.csr_array((0, 0), dtype=dtype) if fmt == "csr" else sp.csc_array((0, 0), dtype=dtype)


def _major_blocks(chunks: Any, n: int) -> tuple[int, ...] | None:
    if isinstance(chunks, int | np.integer):
        return _even_blocks(n, int(chunks))
    if isinstance(chunks, tuple | list):
        sizes = tuple(int(c) for c in chunks)
        if sum(sizes) != n or any(c < 0 for c in sizes):
            raise ValueError(f"block sizes {sizes} do not add up to {n}")
        return sizes
    if chunks in ("auto", None):
        return None
    raise ValueError(f"chunks must be 'auto', a number of rows or a tuple of block sizes, not {chunks!r}")


def compressed_to_dask(
    x: CsrArray, chunks: Any = "auto", *, output: Literal["matrix", "array"] = "matrix", block_values: int | None = None
) -> da.Array:
    """See :meth:`sparsezarr.CsrArray.to_dask`."""
    if output not in ("matrix", "array"):
        raise ValueError(f"output must be 'matrix' or 'array', not {output!r}")
    check_stores([x._store], "this matrix")
    fmt = x.format
    n_major, n_minor = (x.shape[0], x.shape[1]) if fmt == "csr" else (x.shape[1], x.shape[0])
    blocks = _major_blocks(chunks, n_major) or row_blocks(x.indptr, block_values or DEFAULT_BLOCK_VALUES)
    return _compressed_graph(x, fmt, blocks, n_minor, x.dtype, output, x._token)


def _compressed_graph(x: Any, fmt: str, blocks: tuple[int, ...], n_minor: int, dtype: np.dtype[Any], output: str, token: str) -> da.Array:
    bounds = np.concatenate([[0], np.cumsum(blocks)]).astype(int)
    tasks = {}
    for i in range(len(blocks)):
        key = (i, 0) if fmt == "csr" else (0, i)
        tasks[key] = (_read_major, x, int(bounds[i]), int(bounds[i + 1]), fmt, output)
    chunks = (blocks, (n_minor,)) if fmt == "csr" else ((n_minor,), blocks)
    return _from_tasks(f"sparsezarr-{fmt}", token, tasks, chunks, _compressed_meta(fmt, dtype, output))


def _read_sparse(x: Any, region: tuple[slice, ...], output: str) -> Any:
    """Task: a region of a sparse array or sparse view, as ``sparse.COO`` or scipy CSR."""
    if output == "coo":
        return x[region] if not hasattr(x, "storage") else x.read(region)
    m = x.to_scipy(region)
    return sp.csr_matrix(m) if output == "csr_matrix" else m


def sparse_to_dask(x: SparseArray, chunks: Any = None, *, output: str = "coo") -> da.Array:
    """See :meth:`sparsezarr.SparseArray.to_dask`."""
    import sparse as pydata_sparse

    if output not in ("coo", "csr_matrix", "csr_array"):
        raise ValueError(f"output must be 'coo', 'csr_matrix' or 'csr_array', not {output!r}")
    if output != "coo" and x.ndim != 2:
        raise ValueError(f"scipy.sparse blocks need a 2-dimensional array, not {x.ndim} dimensions")
    check_stores([x._store], "this sparse array")
    if chunks is None:
        grid = _grown_blocks(x.shape, x.shards or x.chunks, DEFAULT_BLOCK_ELEMENTS)
    else:
        from dask.array.core import normalize_chunks

        grid = normalize_chunks(chunks, x.shape, dtype=x.dtype)
    tasks = {idx: (_read_sparse, x, region, output) for idx, region in _slices(grid)}
    meta: Any
    if output == "coo":
        meta = pydata_sparse.COO.from_numpy(np.zeros((0,) * x.ndim, dtype=x.dtype), fill_value=x._fill_scalar())
    else:
        meta = _compressed_meta("csr", x.dtype, "matrix" if output == "csr_matrix" else "array")
    return _from_tasks("sparsezarr-sparse", x._token, tasks, grid, meta)


def _read_dense(x: Any, region: tuple[slice, ...]) -> Any:
    """Task: a region of a dense view or zarr array."""
    return np.asarray(x.read(region)) if hasattr(x, "storage") else x.array[region]


def virtual_to_dask(v: VirtualArray, chunks: Any = None, *, output: str | None = None) -> da.Array:
    """See :meth:`sparsezarr.VirtualArray.to_dask`."""
    import sparse as pydata_sparse

    check_stores([v._store, *v._mounts.values()], "this view")
    if v.storage in ("csr", "csc"):
        fmt = v.storage
        n_major, n_minor = (v.shape[0], v.shape[1]) if fmt == "csr" else (v.shape[1], v.shape[0])
        blocks = _major_blocks("auto" if chunks is None else chunks, n_major)
        if blocks is None:
            per_value = v.nnz / max(n_major, 1)
            blocks = _even_blocks(n_major, max(1, min(MAX_BLOCK_ROWS, int(DEFAULT_BLOCK_VALUES / max(per_value, 1e-9)))))
        out = output or "matrix"
        if out not in ("matrix", "array"):
            raise ValueError(f"output must be 'matrix' or 'array' for a {fmt} view, not {out!r}")
        return _compressed_graph(v, fmt, blocks, n_minor, v.dtype, out, v._token)
    from dask.array.core import normalize_chunks

    if chunks is None:
        budget = DEFAULT_BLOCK_ELEMENTS if v.storage == "sparse" else max(1, DEFAULT_BLOCK_BYTES // max(v.dtype.itemsize, 1))
        grid = _grown_blocks(v.shape, [1] * v.ndim, budget) if v.ndim else ()
    else:
        grid = normalize_chunks(chunks, v.shape, dtype=v.dtype)
    if v.storage == "sparse":
        sparse_tasks: dict[Any, tuple[Any, ...]] = {idx: (_read_sparse, v, region, "coo") for idx, region in _slices(grid)}
        meta = pydata_sparse.COO.from_numpy(np.zeros((0,) * v.ndim, dtype=v.dtype), fill_value=v.fill_value)
        return _from_tasks("sparsezarr-virtual", v._token, sparse_tasks, grid, meta)
    tasks: dict[Any, tuple[Any, ...]] = {idx: (_read_dense, v, region) for idx, region in _slices(grid)}
    return _from_tasks("sparsezarr-virtual", v._token, tasks, grid, np.empty((0,) * v.ndim, dtype=v.dtype))


class ZarrHandle:
    """A zarr array as dask tasks hold it: pickled as its store and path (refused for a
    ``MemoryStore``), reopened once per process with the client's pipeline settings."""

    def __init__(self, array: zarr.Array) -> None:
        self.array = array
        self._token = new_token()
        self._config = pipeline_config()

    def __reduce__(self) -> tuple[Any, ...]:
        store = self.array.store_path.store
        return (_reopen_zarr, (StoreRef(store), self.array.path, bool(store.read_only), self._token, self._config))

    def __dask_tokenize__(self) -> Any:
        return ("sparsezarr.ZarrHandle", self._token)


def _reopen_zarr(ref: StoreRef, path: str, read_only: bool, token: str, config: dict[str, Any]) -> ZarrHandle:
    def factory() -> ZarrHandle:
        return ZarrHandle(zarr.open_array(store=ref.store, path=path, mode="r" if read_only else "r+"))

    return restore(token, config, factory)


def _storage_unit(array: zarr.Array) -> tuple[int, ...]:
    shards = getattr(array, "shards", None)
    return tuple(shards) if shards else tuple(array.chunks)


def zarr_to_dask(array: zarr.Array, chunks: Any = None) -> da.Array:
    """A lazy dask array of a dense zarr array: blocks aligned to its shards (or chunks), grown
    to about :data:`DEFAULT_BLOCK_BYTES`, read through the pipeline configured on each worker
    (the client's ``codec_pipeline`` settings travel with the tasks). Unlike
    ``dask.array.from_zarr``, an array in a ``MemoryStore`` is refused when sent to another
    process instead of being copied."""
    from dask.array.core import normalize_chunks

    check_stores([array.store_path.store], "this array")
    if chunks is None:
        grid = _grown_blocks(array.shape, _storage_unit(array), max(1, DEFAULT_BLOCK_BYTES // max(array.dtype.itemsize, 1)))
    else:
        grid = normalize_chunks(chunks, array.shape, dtype=array.dtype)
    h = ZarrHandle(array)
    tasks = {idx: (_read_dense, h, region) for idx, region in _slices(grid)}
    return _from_tasks("sparsezarr-zarr", h._token, tasks, grid, np.empty((0,) * array.ndim, dtype=array.dtype))


def _lazy_elem(node: Any, chunks: Any, output: Literal["matrix", "array"]) -> Any:
    from sparsezarr.csr._read import CsrArray

    if isinstance(node, zarr.Group):
        kind = node.attrs.get("encoding-type")
        if kind in ("csr_matrix", "csc_matrix"):
            return CsrArray(node).to_dask(chunks, output=output)
        import anndata

        return anndata.io.read_elem(node)
    return zarr_to_dask(node)


def read_lazy(
    target: Any,
    path: str = "",
    *,
    chunks: Any = "auto",
    output: Literal["matrix", "array"] = "matrix",
    storage_options: dict[str, Any] | None = None,
) -> anndata.AnnData:
    """An ``anndata.AnnData`` over a stored AnnData (written by anndata or sparsezarr; a path,
    URL, store or group) whose ``X`` and ``layers`` are lazy dask arrays (CSR/CSC matrices as
    :meth:`CsrArray.to_dask <sparsezarr.CsrArray.to_dask>`, dense arrays as
    :func:`zarr_to_dask`) and whose other members (``obs``, ``var``, ``obsm``, ``varm``,
    ``obsp``, ``varp``, ``uns``) are read into memory, so scanpy's dask paths run on it unchanged.
    ``chunks`` and ``output`` are passed to ``CsrArray.to_dask``."""
    import anndata

    from sparsezarr._stores import open_group, resolve

    group = open_group(resolve(target, storage_options, read_only=True), path, mode="r")
    members = set(group.keys())
    kwargs: dict[str, Any] = {}
    if "X" in members:
        kwargs["X"] = _lazy_elem(group["X"], chunks, output)
    if "layers" in members:
        layers = group["layers"]
        assert isinstance(layers, zarr.Group)
        kwargs["layers"] = {name: _lazy_elem(layers[name], chunks, output) for name in sorted(layers.keys())}
    for name in ("obs", "var", "obsm", "varm", "obsp", "varp", "uns"):
        if name in members:
            kwargs[name] = anndata.io.read_elem(group[name])
    return anndata.AnnData(**kwargs)


# ------------------------------------------------------------------------------------------------
# Writing: dask arrays of CSR blocks
# ------------------------------------------------------------------------------------------------


def is_dask_array(x: Any) -> TypeGuard[da.Array]:
    """Whether ``x`` is a dask array (without importing dask when it is not loaded)."""
    import sys

    if "dask.array" not in sys.modules:
        return False
    import dask.array as da

    return isinstance(x, da.Array)


def _block_nnz(block: Any, fmt: Format) -> npt.NDArray[np.int64]:
    """Task: the number of stored values of a block (as a 1 x 1 array)."""
    from sparsezarr.csr._arrays import as_compressed

    return np.array([[as_compressed(block, fmt).nnz]], dtype=np.int64)


def stored_counts(x: da.Array, fmt: Format) -> npt.NDArray[np.int64] | None:
    """The values of each block of ``x`` when ``x`` is a store read as it is (the array
    :meth:`CsrArray.to_dask` made, unmodified): taken from the store's index pointer, so the
    counting pass need not read the store. None for any other array."""
    from sparsezarr.csr._read import CsrArray

    layers = cast("Any", x.__dask_graph__()).layers
    if len(layers) != 1 or x.name not in layers:
        return None
    layer = layers[x.name]
    counts = []
    for key in _flat_keys(x.__dask_keys__()):
        task = layer.get(key)
        if not (isinstance(task, tuple) and len(task) == 6 and task[0] is _read_major and isinstance(task[1], CsrArray) and task[4] == fmt):
            return None
        ptr = task[1].indptr
        counts.append(int(ptr[task[3]] - ptr[task[2]]))
    return np.asarray(counts, dtype=np.int64)


def _flat_keys(keys: Any) -> list[Any]:
    if isinstance(keys, list):
        return [k for sub in keys for k in _flat_keys(sub)]
    return [keys]


def _units(offset: int, stop: int, unit: int, total: int) -> tuple[tuple[int, int] | None, list[tuple[int, int, int]]]:
    """Which stored units (shards, or chunks of unsharded arrays) of ``unit`` elements of an
    array of ``total`` elements the range ``offset..stop`` covers completely (one range of them,
    or None), and the pieces it covers partly: ``(unit index, start, stop)``."""
    if stop <= offset:
        return None, []
    first = -(-offset // unit)
    last = (-(-total // unit) - 1) if stop == total else (stop // unit - 1)
    owned = (first * unit, min((last + 1) * unit, total)) if last >= first else None
    pieces = []
    head, tail = offset // unit, (stop - 1) // unit
    for u in sorted({head, tail}):
        if owned is not None and first <= u <= last:
            continue
        pieces.append((u, max(offset, u * unit), min(stop, (u + 1) * unit)))
    return owned, pieces


class _Target:
    """Where a parallel compressed write goes: the store and the three member arrays."""

    def __init__(self, store: Any, arrays: Sequence[zarr.Array], minor: int, dtypes: Sequence[np.dtype[Any]], totals: Sequence[int]) -> None:
        from sparsezarr._stores import array_json, key_prefix

        self.store = StoreRef(store)
        self.arrays = [(array_json(a), key_prefix(a)) for a in arrays]
        self.units = [int(_storage_unit(a)[0]) for a in arrays]
        self.minor = minor
        self.dtypes = [np.dtype(d).str for d in dtypes]
        self.totals = list(totals)

    def __dask_tokenize__(self) -> Any:
        return ("sparsezarr._Target", self.arrays)

    def write(self, which: int, start: int, values: npt.NDArray[Any]) -> None:
        from sparsezarr import _lib
        from sparsezarr._settings import Settings
        from sparsezarr._stores import rust_store

        meta, prefix = self.arrays[which]
        values = np.ascontiguousarray(values, dtype=np.dtype(self.dtypes[which]))
        _lib.write_array(rust_store(self.store.store), meta, prefix, start, values, threads=Settings.from_config().threads)


def _write_block(block: Any, fmt: Format, offset: int, major0: int, n_major: int, nnz: int, target: _Target) -> dict[tuple[int, int], Any]:
    """Task: validate one block, write the units of ``data``/``indices``/``indptr`` it covers
    completely, and return the pieces of the units it shares with its neighbours."""
    from sparsezarr.csr._arrays import as_compressed

    m = as_compressed(block, fmt)
    major = m.shape[0] if fmt == "csr" else m.shape[1]
    if major != n_major or (m.shape[1] if fmt == "csr" else m.shape[0]) != target.minor:
        raise ValueError(f"a block of shape {m.shape} does not fit its place ({n_major} {'rows' if fmt == 'csr' else 'columns'} of {target.minor})")
    if m.nnz != nnz:
        raise ValueError(f"a block holds {m.nnz} values, {nnz} when counted: the input is not deterministic")
    m.check_format(full_check=True)
    ptr = m.indptr.astype(np.int64) + offset
    # indptr positions: major0 + 1 .. major0 + n + 1 (block 0 also writes position 0).
    ptr_values, ptr_start = (ptr, 0) if major0 == 0 else (ptr[1:], major0 + 1)
    pieces: dict[tuple[int, int], Any] = {}
    for which, (vals, start) in enumerate(((m.data, offset), (m.indices, offset), (ptr_values, ptr_start))):
        stop = start + len(vals)
        owned, parts = _units(start, stop, target.units[which], target.totals[which])
        if owned is not None:
            target.write(which, owned[0], vals[owned[0] - start : owned[1] - start])
        for u, a, b in parts:
            # a copy: a view would keep the whole block alive until the piece is written
            pieces[(which, u)] = (a, np.array(vals[a - start : b - start], copy=True))
    return pieces


def _piece(pieces: dict[tuple[int, int], Any], which: int, unit: int) -> Any:
    """Task: one piece of a block's result."""
    return pieces[(which, unit)]


def _done(pieces: dict[tuple[int, int], Any]) -> int:
    """Task: a block is written (its result no longer needed once its pieces are taken)."""
    return len(pieces)


def _write_unit(target: _Target, which: int, unit: int, parts_in: list[tuple[int, Any]]) -> int:
    """Task: assemble one shared unit from the pieces of the blocks covering it, and write it."""
    parts = sorted(parts_in, key=lambda p: p[0])
    size = target.units[which]
    start, stop = unit * size, min((unit + 1) * size, target.totals[which])
    pos = start
    for a, vals in parts:
        if a != pos:
            raise RuntimeError(f"internal error: pieces of unit {unit} leave a gap at {pos}")
        pos = a + len(vals)
    if pos != stop:
        raise RuntimeError(f"internal error: pieces of unit {unit} end at {pos}, not {stop}")
    target.write(which, start, np.concatenate([v for _, v in parts]))
    return stop - start


def _count(*results: Any) -> int:
    return len(results)


def write_compressed(
    target: Any,
    x: da.Array,
    fmt: Literal["csr", "csc"],
    *,
    path: str,
    layout: Any,
    chunks: int | None,
    shards: Any,
    compressors: Any,
    index_dtype: Any,
    overwrite: bool,
    attributes: dict[str, Any] | None,
) -> zarr.Group:
    """``write_csr`` / ``write_csc`` of a dask array (see the module docstring)."""
    from dask.base import annotate, compute
    from dask.delayed import delayed

    from sparsezarr.csr._write import GroupWrite

    if x.ndim != 2:
        raise ValueError(f"expected a 2-dimensional matrix, got {x.ndim} dimensions")
    major_axis = 0 if fmt == "csr" else 1
    x = x.rechunk({1 - major_axis: -1})
    n_major, minor = x.shape[major_axis], x.shape[1 - major_axis]
    sizes = x.chunks[major_axis]
    counted = cast("Any", x).map_blocks(
        _block_nnz, fmt, chunks=tuple(((1,) * len(c)) for c in x.chunks), dtype=np.int64, meta=np.empty((0, 0), np.int64)
    )
    counts = np.asarray(counted.compute(), dtype=np.int64).reshape(-1)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    nnz = int(offsets[-1])
    dtype = np.dtype(x.dtype).newbyteorder("=")
    writer = GroupWrite(
        target, path, fmt, (int(x.shape[0]), int(x.shape[1])), nnz, dtype,
        layout=layout, chunks=chunks, shards=shards, compressors=compressors, index_dtype=index_dtype, overwrite=overwrite,
    )  # fmt: skip
    try:
        check_stores([writer.write_store], "the target group")
        dest = _Target(writer.write_store, writer.arrays, minor, (dtype, writer.index_dtype, writer.indptr_dtype), (nnz, nnz, n_major + 1))
        blocks = x.to_delayed().reshape(-1)
        starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        written = []
        shared: dict[tuple[int, int], list[int]] = {}
        for i, blk in enumerate(blocks):
            written.append(
                delayed(_write_block, pure=False)(
                    blk,
                    fmt,
                    int(offsets[i]),
                    int(starts[i]),
                    int(sizes[i]),
                    int(counts[i]),
                    dest,
                    dask_key_name=f"sparsezarr-write-block-{writer.token}-{i}",
                )
            )
            ranges = ((offsets[i], offsets[i + 1]), (offsets[i], offsets[i + 1]), (0 if i == 0 else starts[i] + 1, starts[i + 1] + 1))
            for which, (a, b) in enumerate(ranges):
                for u, _, _ in _units(int(a), int(b), dest.units[which], dest.totals[which])[1]:
                    shared.setdefault((which, u), []).append(i)
        # Each piece is taken out of its block's result at once (so the result, and every other
        # piece in it, is released as soon as possible), and shared units are written as soon as
        # their pieces are in: these small tasks go first.
        with annotate(priority=10):
            taken = {
                (which, u, i): delayed(_piece, pure=True)(
                    written[i], which, u, dask_key_name=f"sparsezarr-write-piece-{writer.token}-{which}-{u}-{i}"
                )
                for (which, u), members in shared.items()
                for i in members
            }
            done = [delayed(_done, pure=True)(w, dask_key_name=f"sparsezarr-write-done-{writer.token}-{i}") for i, w in enumerate(written)]
            units = [
                delayed(_write_unit, pure=False)(
                    dest, which, u, [taken[(which, u, i)] for i in members], dask_key_name=f"sparsezarr-write-unit-{writer.token}-{which}-{u}"
                )
                for (which, u), members in sorted(shared.items())
            ]
        if n_major == 0:
            dest.write(2, 0, np.zeros(1, dtype=np.int64))
        compute(delayed(_count)(*units, *done))
    except BaseException:
        writer.abort()
        raise
    return writer.commit(attributes)


# ------------------------------------------------------------------------------------------------
# Writing: dask arrays into sparse and dense arrays
# ------------------------------------------------------------------------------------------------


def _store_block(block: Any, target: Any, region: tuple[slice, ...]) -> int:
    """Task: write one block into a sparse array or a zarr array."""
    if isinstance(target, ZarrHandle):
        if sp.issparse(block) or hasattr(block, "todense"):
            block = block.todense()
        target.array[region] = np.asarray(block)
    else:
        target[region] = block
    return 1


def aligned_chunks(chunks: tuple[tuple[int, ...], ...], unit: Sequence[int], shape: Sequence[int]) -> tuple[tuple[int, ...], ...]:
    """Blocks like ``chunks`` (about the same sizes) whose boundaries fall on multiples of ``unit``."""
    out = []
    for c, u, n in zip(chunks, unit, shape, strict=True):
        typical = int(np.median(c)) if len(c) else u
        size = max(u, round(typical / u) * u)
        out.append(_even_blocks(n, size))
    return tuple(out)


def is_aligned(chunks: tuple[tuple[int, ...], ...], unit: Sequence[int]) -> bool:
    """Whether every block boundary (but the array's end) is a multiple of ``unit``."""
    return all(all(int(s) % u == 0 for s in np.cumsum(c)[:-1]) for c, u in zip(chunks, unit, strict=True))


def store(x: da.Array, target: SparseArray | zarr.Array, *, align: Literal["rechunk", "raise"] = "rechunk", compute: bool = True) -> Any:
    """Write the dask array ``x`` into ``target`` (a :class:`~sparsezarr.SparseArray` or a dense
    ``zarr.Array`` of the same shape), one task per block, on the active scheduler.

    Blocks must not share a shard (a shard is written whole: two tasks writing parts of one shard
    at once would need to read and merge each other's work): blocks whose boundaries do not fall
    on shard boundaries (chunk boundaries for unsharded arrays) are rechunked to the nearest
    aligned sizes with ``align="rechunk"`` (default), or refused with ``align="raise"``. Blocks
    may hold numpy, ``sparse`` or ``scipy.sparse`` values. With ``compute=False`` the write is
    returned as a ``dask.delayed`` object."""
    from dask.delayed import delayed

    from sparsezarr.sparse import SparseArray

    if tuple(x.shape) != tuple(target.shape):
        raise ValueError(f"shapes differ: the dask array is {x.shape}, the target {tuple(target.shape)}")
    if isinstance(target, SparseArray):
        unit: tuple[int, ...] = target.shards or target.chunks
        handle: Any = target
        check_stores([target._store], "the target")
    elif isinstance(target, zarr.Array):
        unit = _storage_unit(target)
        handle = ZarrHandle(target)
        check_stores([target.store_path.store], "the target")
    else:
        raise TypeError(f"store writes into a SparseArray or a zarr.Array, not {type(target).__name__}")
    if not is_aligned(x.chunks, unit):
        if align == "raise":
            raise ValueError(
                f"the blocks {x.chunks} of the dask array do not fall on the target's shard boundaries (shards of {unit}): "
                f"rechunk to multiples of {unit}, or pass align='rechunk'"
            )
        if align != "rechunk":
            raise ValueError(f"align must be 'rechunk' or 'raise', not {align!r}")
        x = x.rechunk(aligned_chunks(x.chunks, unit, x.shape))
    blocks = x.to_delayed()
    token = new_token()
    parts = [
        delayed(_store_block, pure=False)(blocks[idx], handle, region, dask_key_name=f"sparsezarr-store-{token}-{'-'.join(map(str, idx))}")
        for idx, region in _slices(x.chunks)
    ]
    done = delayed(_count)(*parts)
    return done.compute() if compute else done


# ------------------------------------------------------------------------------------------------
# dask.distributed workers
# ------------------------------------------------------------------------------------------------


class PipelinePlugin(_WorkerPlugin):
    """A ``distributed.WorkerPlugin`` that sets zarr's ``codec_pipeline`` configuration on every
    worker (present and future) to the client's (by default, as it is when the plugin is made),
    so zarr arrays that workers open (``dask.array.from_zarr``, anndata, xarray) run through
    ``sparsezarr.Pipeline`` too. Register it with :func:`use_pipeline` or
    ``client.register_plugin(PipelinePlugin())``. sparsezarr's own handles do not need it: they
    carry the client's settings."""

    name = "sparsezarr-pipeline"

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        self.config = dict(config if config is not None else pipeline_config())
        self.config.setdefault("codec_pipeline.path", "sparsezarr.Pipeline")

    def setup(self, worker: Any) -> None:
        zarr.config.set(self.config)


def use_pipeline(client: Any, config: dict[str, Any] | None = None) -> PipelinePlugin:
    """Make every worker of ``client`` read and write zarr arrays through ``sparsezarr.Pipeline``
    (with the client's pipeline settings, or ``config``)."""
    plugin = PipelinePlugin(config)
    client.register_plugin(plugin)
    return plugin
