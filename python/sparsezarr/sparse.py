"""Chunked, sharded N-d sparse arrays in Zarr.

A sparse array is a zarr v3 array whose chunks use the ``sparsezarr.sparse`` codec (see
``docs/spec/sparse-codec.md``): each chunk stores only its entries that differ from the fill value.
Regions are read and written as ``sparse.COO`` / ``scipy.sparse`` objects without ever building
dense chunks; the work (splitting entries over chunks, encoding, assembling shards, decoding,
merging chunk pieces into one result) happens in Rust, in parallel, with the GIL released.

Plain zarr-python can open the same arrays and read them densely (the codec is registered with
it), and so can ``sparsezarr.Pipeline``.

>>> import sparsezarr, scipy.sparse as sp
>>> m = sp.random(1000, 500, density=0.01, format="csr", dtype="float32")
>>> a = sparsezarr.from_scipy(m, "matrix.zarr", chunks=(256, 128))
>>> a.to_scipy()[10:20]                     # scipy.sparse.csr_array
>>> a[:, [3, 7, 11]]                        # sparse.COO
>>> a[0:100, 0:100] = sp.eye(100, format="csr")
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeAlias, cast

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp
import zarr
from zarr.core.metadata import ArrayV3Metadata

from sparsezarr import _lib
from sparsezarr._handles import StoreRef, new_token, pipeline_config, restore
from sparsezarr._indexing import Key, expand, int_index, orthogonal, selection_len
from sparsezarr._metadata import fill_bytes
from sparsezarr._settings import Settings
from sparsezarr._stores import resolve, rust_store
from sparsezarr.codec import CODEC_NAME, SPARSE_KINDS, SparseCodec, default_sub_codecs
from sparsezarr.errors import MetadataError

if TYPE_CHECKING:
    import sparse as pydata_sparse
    from scipy.sparse._base import _spbase
    from zarr.abc.codec import BytesBytesCodec
    from zarr.core.common import AccessModeLiteral
    from zarr.storage import StoreLike

#: What a sparse array stores or is written from: a scipy.sparse array or matrix, a pydata
#: ``sparse`` array, or a dense array (or anything ``numpy.asarray`` turns into one).
SparseValue: TypeAlias = "sp.sparray | sp.spmatrix | pydata_sparse.SparseArray | npt.ArrayLike"

__all__ = ["SparseArray", "SparseInfo", "create_sparse", "from_numpy", "from_scipy", "from_sparse", "open_sparse", "save_sparse"]

#: Elements per chunk aimed at by the default chunk shape of arrays that are not 2-d.
DEFAULT_CHUNK_ELEMENTS = 1 << 20
#: Stored values per chunk aimed at by the default chunk shape of 2-d arrays.
DEFAULT_CHUNK_VALUES = 1 << 16
#: Extent of a 2-d array's default chunks along its shorter axis (genes, in a cells x genes matrix).
DEFAULT_BAND = 256
#: Fraction of stored elements assumed for the default chunk shape when it is not known (an array
#: created empty); single-cell count matrices hold 2-10%.
DEFAULT_DENSITY = 0.05
#: Chunks per shard aimed at by the default shard shape (arrays with more chunks than this).
DEFAULT_CHUNKS_PER_SHARD = 64


def default_chunks(shape: tuple[int, ...], density: float | None = None, target: int = DEFAULT_CHUNK_ELEMENTS) -> tuple[int, ...]:
    """The default chunk shape of a sparse array of ``shape`` holding a fraction ``density`` of
    stored elements (``DEFAULT_DENSITY`` when not known).

    2-d arrays (cells x genes): bands of ``DEFAULT_BAND`` along the shorter axis, and along the
    longer one the power of two that puts about ``DEFAULT_CHUNK_VALUES`` stored values in a chunk
    (256 to 65,536). One gene then reads ``1/(genes/256)`` of the data, in few chunks; a set of
    random cells reads whole chunks of every band it touches, as a CSR layout reads whole chunks of
    its data and indices. Measured against anndata's CSR layout and other shapes in
    ``benches/sparse_defaults.py`` (BENCHMARKS.md, section 10).

    Other ranks: balanced chunks of about ``target`` elements (halve the largest dimension until
    it fits).
    """
    if len(shape) == 2 and all(shape):
        d = DEFAULT_DENSITY if density is None or not density > 0 else min(float(density), 1.0)
        short = 0 if shape[0] < shape[1] else 1
        band = min(shape[short], DEFAULT_BAND)
        along = 2 ** round(math.log2(max(1.0, DEFAULT_CHUNK_VALUES / (band * d))))
        along = min(shape[1 - short], max(256, min(along, 1 << 16)))
        return (band, along) if short == 0 else (along, band)
    chunks = [max(1, n) for n in shape]
    while math.prod(chunks) > target:
        d = int(np.argmax(chunks))
        if chunks[d] == 1:
            break
        chunks[d] = (chunks[d] + 1) // 2
    return tuple(chunks)


def default_shards(shape: tuple[int, ...], chunks: tuple[int, ...]) -> tuple[int, ...] | None:
    """Shards grouping up to ``DEFAULT_CHUNKS_PER_SHARD`` chunks, for arrays with more chunks than that."""
    grid = [math.ceil(n / c) for n, c in zip(shape, chunks, strict=True)]
    if math.prod(grid) <= DEFAULT_CHUNKS_PER_SHARD:
        return None
    per_dim = max(1, round(DEFAULT_CHUNKS_PER_SHARD ** (1 / len(shape))))
    return tuple(c * min(per_dim, g) for c, g in zip(chunks, grid, strict=True))


def _sub_codecs(compressors: Any) -> tuple[Any, ...]:
    if compressors is None:
        return (default_sub_codecs()[0],)
    if isinstance(compressors, str) and compressors == "default":
        return default_sub_codecs()
    if not isinstance(compressors, list | tuple):
        compressors = [compressors]
    return (default_sub_codecs()[0], *compressors)


def create_sparse(
    store: StoreLike,
    *,
    shape: tuple[int, ...] | int,
    dtype: npt.DTypeLike = "float32",
    chunks: tuple[int, ...] | None = None,
    shards: tuple[int, ...] | str | None = "auto",
    fill_value: Any = 0,
    compressors: BytesBytesCodec | list[BytesBytesCodec] | str | None = "default",
    path: str | None = None,
    attributes: dict[str, Any] | None = None,
    dimension_names: list[str] | None = None,
    overwrite: bool = False,
    storage_options: dict[str, Any] | None = None,
    density: float | None = None,
) -> SparseArray:
    """Create an empty sparse array.

    Parameters
    ----------
    store
        A directory path, a zarr ``Store``, or anything ``zarr.create_array`` accepts.
    shape, dtype
        Shape (any number of dimensions) and data type (booleans and numbers).
    chunks
        Shape of the sparse chunks; default (:func:`default_chunks`): for 2-d arrays, bands of 256
        along the shorter axis, tall enough along the longer one for about 65,536 stored values
        per chunk at ``density``; for other ranks, balanced chunks of about 2**20 elements.
    shards
        Shard shape (a multiple of ``chunks``), ``None`` for no sharding, or ``"auto"`` (default):
        shards of up to 64 chunks when the array has more than 64 chunks.
    fill_value
        The value of every element that is not stored (default 0; NaN is refused).
    compressors
        Bytes-to-bytes codecs applied to both the coordinate and the value buffers of every chunk;
        ``"default"`` is zstd level 1, ``None`` stores them uncompressed.
    path
        Path of the array inside the store.
    density
        The fraction of elements expected to be stored, for the default chunk shape (default
        0.05; ``save_sparse`` / ``from_scipy`` / ``from_sparse`` / ``from_numpy`` pass the data's).
    """
    shape = (shape,) if isinstance(shape, int) else tuple(int(n) for n in shape)
    np_dtype = np.dtype(dtype)
    if np_dtype.kind not in SPARSE_KINDS or np_dtype.fields is not None:
        raise TypeError(f"sparse arrays hold booleans and numbers, not {np_dtype}")
    if len(shape) == 0:
        raise ValueError("sparse arrays need at least one dimension")
    if np_dtype.kind in "fc" and np.isnan(np.asarray(fill_value, dtype=np_dtype)).any():
        raise ValueError("a NaN fill value is not allowed for sparse arrays (no value is ever equal to it)")
    chunks = default_chunks(shape, density) if chunks is None else tuple(int(c) for c in chunks)
    if len(chunks) != len(shape) or any(c < 1 for c in chunks):
        raise ValueError(f"chunks {chunks} do not fit shape {shape}")
    if isinstance(shards, str):
        if shards != "auto":
            raise ValueError(f"shards must be a shape, None or 'auto', not {shards!r}")
        shards = default_shards(shape, chunks)
    subs = _sub_codecs(compressors)
    codec = SparseCodec(coordinate_codecs=subs, value_codecs=subs)
    arr = zarr.create_array(
        store=resolve(store, storage_options),
        name=path,
        shape=shape,
        dtype=np_dtype,
        chunks=chunks,
        shards=shards,
        serializer=codec,
        compressors=None,
        filters=None,
        fill_value=fill_value,
        zarr_format=3,
        attributes=attributes,
        dimension_names=dimension_names,
        overwrite=overwrite,
    )
    return SparseArray(arr)


def open_sparse(
    store: StoreLike | zarr.Array,
    *,
    path: str | None = None,
    mode: AccessModeLiteral = "r+",
    storage_options: dict[str, Any] | None = None,
) -> SparseArray:
    """Open an existing sparse array (a path, a URL with fsspec's ``storage_options``, a store or
    a ``zarr.Array``)."""
    if isinstance(store, zarr.Array):
        return SparseArray(store)
    target = resolve(store, storage_options, read_only=mode == "r")
    return SparseArray(zarr.open_array(store=target, path=path or "", mode=mode, zarr_format=3))


def save_sparse(x: SparseValue, store: StoreLike, **kwargs: Any) -> SparseArray:
    """Create a sparse array holding ``x`` (scipy.sparse, pydata ``sparse`` or numpy)."""
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        x = np.asarray(x)
    shape = tuple(int(n) for n in x.shape)
    kwargs.setdefault("dtype", x.dtype)
    size: int = math.prod(shape)
    if kwargs.get("chunks") is None and "density" not in kwargs and size:
        kwargs["density"] = _stored_count(x) / size
    arr = create_sparse(store, shape=shape, **kwargs)
    if shape and all(shape):
        arr[tuple(slice(None) for _ in shape)] = x
    return arr


def _stored_count(x: Any) -> int:
    """Entries ``x`` stores (scipy.sparse / pydata ``sparse``: ``nnz``; dense: non-zeros)."""
    nnz = getattr(x, "nnz", None)
    return int(nnz) if nnz is not None else int(np.count_nonzero(x))


def from_scipy(matrix: sp.sparray | sp.spmatrix, store: StoreLike, **kwargs: Any) -> SparseArray:
    """Create a 2-d sparse array from any scipy.sparse array or matrix."""
    if not sp.issparse(matrix):
        raise TypeError(f"expected a scipy.sparse array or matrix, got {type(matrix).__name__}")
    return save_sparse(matrix, store, **kwargs)


def from_sparse(x: pydata_sparse.SparseArray, store: StoreLike, **kwargs: Any) -> SparseArray:
    """Create a sparse array from a pydata ``sparse`` array (COO, GCXS, DOK)."""
    return save_sparse(x, store, **kwargs)


def from_numpy(x: npt.ArrayLike, store: StoreLike, **kwargs: Any) -> SparseArray:
    """Create a sparse array from a dense numpy array (entries equal to the fill value are not stored)."""
    return save_sparse(np.asarray(x), store, **kwargs)


@dataclass(frozen=True)
class SparseInfo:
    """Summary of a sparse array (``SparseArray.info``)."""

    shape: tuple[int, ...]
    dtype: np.dtype[Any]
    chunks: tuple[int, ...]
    shards: tuple[int, ...] | None
    fill_value: Any
    nnz: int
    stored_bytes: int
    codec: dict[str, Any]

    @property
    def density(self) -> float:
        n = math.prod(self.shape)
        return self.nnz / n if n else 0.0

    @property
    def bytes_per_entry(self) -> float:
        return self.stored_bytes / self.nnz if self.nnz else 0.0

    def __repr__(self) -> str:
        rows = [
            ("Type", "sparsezarr.SparseArray"),
            ("Shape", str(self.shape)),
            ("Data type", str(self.dtype)),
            ("Chunk shape", str(self.chunks)),
            ("Shard shape", str(self.shards)),
            ("Fill value", repr(self.fill_value)),
            ("Stored entries (nnz)", f"{self.nnz:,}"),
            ("Density", f"{self.density:.4%}"),
            ("Stored bytes", f"{self.stored_bytes:,} ({self.bytes_per_entry:.2f} per entry)"),
            ("Codec", CODEC_NAME),
        ]
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"{k:<{width}} : {v}" for k, v in rows)


def _typed(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """The value bytes from Rust as an array of ``dtype``, without a copy.

    ``np.frombuffer`` over a memoryview (rather than ``values.view(dtype)``) gives an array whose
    base is not the byte array: scipy copies arrays that are views of a much larger base.
    """
    return np.frombuffer(memoryview(values), dtype=dtype)


class SparseArray:
    """A sparse array stored in Zarr.

    Indexing is orthogonal (like ``zarr.Array.oindex``): each dimension takes an integer, a slice
    (any step) or an array of integers or booleans, independently. Reading returns ``sparse.COO``
    (integer-indexed dimensions are dropped); ``to_scipy`` returns ``scipy.sparse.csr_array`` or
    ``csc_array`` for 2-d regions. Writing replaces a box (integers and step-1 slices) with the
    entries of a scipy.sparse, pydata ``sparse`` or numpy value; entries equal to the fill value are
    not stored, duplicate coordinates are summed (as scipy does).

    A ``SparseArray`` pickles to a small description (its store, path and settings) and reopens
    on the other side, once per process; :meth:`to_dask` makes a lazy dask array of it.
    """

    def __init__(self, array: zarr.Array) -> None:
        self._token = new_token()
        self._config = pipeline_config()
        metadata = array.metadata
        if metadata.zarr_format != 3:
            raise MetadataError("sparse arrays are zarr v3 arrays")
        codec_names = _codec_names(metadata.codecs)
        if CODEC_NAME not in codec_names:
            raise MetadataError(f"{array.name!r} is not a sparse array (its codecs are {codec_names})")
        self.array = array
        self.settings = Settings.from_config()
        dtype = metadata.data_type.to_native_dtype()
        self._dtype = np.dtype(dtype.newbyteorder("="))
        json_doc = metadata.to_buffer_dict(zarr.core.buffer.cpu.buffer_prototype)["zarr.json"].to_bytes().decode()
        path = array.store_path.path
        self._engine = _lib.SparseArray(
            json_doc,
            fill_bytes=fill_bytes(dtype, metadata.fill_value),
            prefix=f"{path}/" if path else "",
            **self.settings.engine_kwargs(),
        )
        store = array.store_path.store
        self._store = store
        self._rust = rust_store(store)

    # -- properties -------------------------------------------------------------------------

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.array.shape)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def dtype(self) -> np.dtype[Any]:
        return self._dtype

    @property
    def chunks(self) -> tuple[int, ...]:
        return tuple(self._engine.chunk_shape)

    @property
    def shards(self) -> tuple[int, ...] | None:
        s = self._engine.shard_shape
        return None if s is None else tuple(s)

    @property
    def fill_value(self) -> Any:
        return self.array.fill_value

    @property
    def nnz(self) -> int:
        """Number of stored entries (read from chunk headers, without decoding)."""
        return self._stats()[0]

    @property
    def nbytes_stored(self) -> int:
        """Bytes of all stored chunks and shards."""
        return self._stats()[1]

    @property
    def info(self) -> SparseInfo:
        nnz, stored = self._stats()
        metadata = self.array.metadata
        assert isinstance(metadata, ArrayV3Metadata)  # checked when opened
        codec = next(c for c in _all_codecs(metadata.codecs) if isinstance(c, SparseCodec))
        return SparseInfo(self.shape, self.dtype, self.chunks, self.shards, self.fill_value, nnz, stored, codec.to_dict())

    def __repr__(self) -> str:
        return f"<sparsezarr.SparseArray shape={self.shape} dtype={self.dtype} chunks={self.chunks} shards={self.shards} store={self._store}>"

    def __len__(self) -> int:
        return self.shape[0]

    def __reduce__(self) -> tuple[Any, ...]:
        return (_reopen, (StoreRef(self._store), self.array.path, bool(self._store.read_only), self._token, self._config))

    def __dask_tokenize__(self) -> Any:
        return ("sparsezarr.SparseArray", self._token)

    def to_dask(self, chunks: Any = None, *, output: Literal["coo", "csr_matrix", "csr_array"] = "coo") -> Any:
        """A lazy dask array of this array. ``chunks=None`` (default): blocks aligned to the
        shards (or chunks), grown along the first dimensions to about
        :data:`sparsezarr.dask.DEFAULT_BLOCK_ELEMENTS` elements; anything dask's
        ``normalize_chunks`` accepts otherwise. Chunks are ``sparse.COO`` (meta too), or for 2-d
        arrays ``scipy.sparse`` CSR with ``output="csr_matrix"`` / ``"csr_array"``."""
        from sparsezarr.dask import sparse_to_dask

        return sparse_to_dask(self, chunks, output=output)

    # -- reading ----------------------------------------------------------------------------

    def __getitem__(self, key: Key) -> pydata_sparse.COO:
        import sparse

        region, keep = orthogonal(key, self.shape, newaxis_error="sparse arrays do not support adding axes (None / np.newaxis)")
        coords, values, _, nnz = self._read(region, csr=False)
        coords = coords.reshape(len(region), nnz)
        if not all(keep):
            coords = coords[np.asarray(keep)]
        shape = tuple(selection_len(r) for r, k in zip(region, keep, strict=True) if k)
        return sparse.COO(coords, _typed(values, self.dtype), shape=shape, has_duplicates=False, sorted=True, fill_value=self._fill_scalar())

    def to_scipy(
        self, key: Key = None, *, format: Literal["csr", "csc"] = "csr", matrix: bool = False
    ) -> sp.csr_array | sp.csc_array | sp.csr_matrix | sp.csc_matrix:
        """A 2-d region as a scipy.sparse ``csr_array`` / ``csc_array`` (``*_matrix`` with ``matrix=True``)."""
        if format not in ("csr", "csc"):
            raise ValueError(f"format must be 'csr' or 'csc', not {format!r}")
        if self._fill_scalar() != 0:
            raise ValueError("scipy.sparse represents a fill value of 0 only; this array's fill value is " + repr(self.fill_value))
        region, keep = orthogonal(slice(None) if key is None else key, self.shape)
        if self.ndim != 2 or not all(keep):
            raise ValueError("to_scipy needs a 2-dimensional region (integers drop dimensions; use slices)")
        coords, values, indptr, _ = self._read(region, csr=True)
        m: sp.csr_array | sp.csc_array = sp.csr_array(
            (_typed(values, self.dtype), coords, indptr), shape=(selection_len(region[0]), selection_len(region[1]))
        )
        if format == "csc":
            m = m.tocsc()
        if matrix:
            return sp.csr_matrix(m) if format == "csr" else sp.csc_matrix(m)
        return m

    def todense(self) -> np.ndarray:
        """The whole array as a dense numpy array (only for arrays that fit in memory)."""
        return np.asarray(self[...].todense())

    def _fill_scalar(self) -> Any:
        return np.asarray(self.fill_value, dtype=self.dtype)[()]

    def _read(self, region: list[Any], csr: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, int]:
        return self._engine.read(self._rust, region, csr)

    # -- writing ----------------------------------------------------------------------------

    def __setitem__(self, key: Key, value: SparseValue) -> None:
        start, shape, dropped = _normalize_box(key, self.shape)
        kind, payload = _entries(
            value, [n for d, n in enumerate(shape) if d not in dropped], self.dtype, self._fill_scalar(), compressed_ok=not dropped
        )
        if kind == "compressed":
            axis, indptr, indices, values = payload
            self._write(start, shape, values, compressed=(axis, indptr, indices))
            return
        coords, values = payload
        if dropped:
            full = []
            it = iter(coords)
            for d in range(len(shape)):
                full.append(np.zeros(len(values), dtype=np.int64) if d in dropped else next(it))
            coords = full
        self._write(start, shape, values, coords=list(coords))

    def _write(self, start: list[int], shape: list[int], values: np.ndarray, **entries: Any) -> None:
        values = np.ascontiguousarray(values)
        if self._store.read_only:
            raise ValueError("store was opened in read-only mode and does not support writing")
        self._engine.write(self._rust, start, shape, values, **entries)

    def _stats(self) -> tuple[int, int]:
        return self._engine.stats(self._rust)


def _reopen(ref: StoreRef, path: str, read_only: bool, token: str, config: dict[str, Any]) -> SparseArray:
    """A pickled :class:`SparseArray` on the other side: reopened once per process."""
    return restore(token, config, lambda: SparseArray(zarr.open_array(store=ref.store, path=path, mode="r" if read_only else "r+", zarr_format=3)))


# ---------------------------------------------------------------------------------------------
# Keys and values
# ---------------------------------------------------------------------------------------------


def _all_codecs(codecs: Any) -> list[Any]:
    out = []
    for c in codecs:
        out.append(c)
        out.extend(_all_codecs(getattr(c, "codecs", ())))
    return out


def _codec_names(codecs: Any) -> list[str]:
    names = []
    for c in _all_codecs(codecs):
        try:
            names.append(c.to_dict()["name"])
        except Exception:  # noqa: BLE001 - only used for messages and detection
            names.append(type(c).__name__)
    return names


def _normalize_box(key: Any, shape: tuple[int, ...]) -> tuple[list[int], list[int], set[int]]:
    """Start and shape of the written box, and the dimensions given by integers."""
    key = expand(key, len(shape))
    start, size, dropped = [], [], set()
    for d, (k, n) in enumerate(zip(key, shape, strict=True)):
        if isinstance(k, slice):
            a, b, step = k.indices(n)
            if step != 1:
                raise IndexError("writes take a box: slices with step 1 (and integers)")
            start.append(a)
            size.append(max(0, b - a))
        elif isinstance(k, int | np.integer):
            start.append(int_index(k, n, d))
            size.append(1)
            dropped.add(d)
        else:
            raise IndexError("writes take a box: slices with step 1 (and integers), not integer or boolean arrays")
    return start, size, dropped


def _cast_values(values: np.ndarray, dtype: np.dtype[Any]) -> np.ndarray:
    values = np.asarray(values)
    if values.dtype != dtype:
        if not np.can_cast(values.dtype, dtype, casting="same_kind"):
            raise TypeError(f"cannot store values of type {values.dtype} in a sparse array of type {dtype}")
        values = values.astype(dtype)
    return np.ascontiguousarray(values)


def _index_array(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a)
    if a.dtype not in (np.int32, np.int64):
        a = a.astype(np.int64)
    return np.ascontiguousarray(a)


def _entries(value: Any, shape: list[int], dtype: np.dtype[Any], fill: Any, compressed_ok: bool = True) -> tuple[str, Any]:
    """Entries of a written value: ("coo", (coords, values)) or ("compressed", (axis, indptr, indices, values))."""
    shape_t = tuple(shape)
    if sp.issparse(value):
        m = cast("_spbase[Any, Any]", value)  # scipy-stubs narrow issparse() to an abstract class without attributes
        if tuple(m.shape) != shape_t:
            raise ValueError(f"value of shape {tuple(m.shape)} does not match the selection of shape {shape_t}")
        if compressed_ok and isinstance(m, sp.csr_array | sp.csc_array | sp.csr_matrix | sp.csc_matrix):
            return "compressed", (0 if m.format == "csr" else 1, _index_array(m.indptr), _index_array(m.indices), _cast_values(m.data, dtype))
        coo = sp.coo_array(m)
        return "coo", ([_index_array(coo.row), _index_array(coo.col)], _cast_values(coo.data, dtype))
    try:
        import sparse as pydata_sparse
    except ImportError:  # pragma: no cover - sparse is a dependency
        pydata_sparse = None
    if pydata_sparse is not None and isinstance(value, pydata_sparse.SparseArray) and value.ndim == 0:
        value = value.todense()
    if pydata_sparse is not None and isinstance(value, pydata_sparse.SparseArray):
        if tuple(value.shape) != shape_t:
            raise ValueError(f"value of shape {tuple(value.shape)} does not match the selection of shape {shape_t}")
        if value.fill_value != fill and not (np.isnan(fill) if isinstance(fill, float) else False):
            raise ValueError(f"value's fill value {value.fill_value!r} differs from the array's {fill!r}")
        coo = value if isinstance(value, pydata_sparse.COO) else value.asformat("coo")
        return "coo", ([_index_array(c) for c in coo.coords], _cast_values(coo.data, dtype))
    dense = np.asarray(value)
    if dense.shape != shape_t:
        try:
            dense = np.broadcast_to(dense, shape_t)
        except ValueError as e:
            raise ValueError(f"value of shape {dense.shape} does not match the selection of shape {shape_t}") from e
    dense = _cast_values(dense, dtype) if dense.dtype != dtype else dense
    mask = dense != np.asarray(fill, dtype=dtype)
    if dense.ndim == 0:  # one element (every dimension given by an integer)
        return "coo", ([], _cast_values(dense.reshape(1)[mask.reshape(1)], dtype))
    coords = np.nonzero(mask)
    return "coo", ([_index_array(c) for c in coords], _cast_values(dense[mask], dtype))
