"""Single-cell stores: compressed sparse matrices in the anndata on-disk layout (or binsparse).

A CSR (or CSC) matrix is a group holding three one-dimensional arrays: ``data`` (the values),
``indices`` (column of each value; row for CSC) and ``indptr`` (where each row starts), with the
group attributes ``encoding-type`` (``"csr_matrix"`` / ``"csc_matrix"``), ``encoding-version``
(``"0.1.0"``) and ``shape``. This is what anndata writes for ``X`` and layers, so what these
functions write, anndata reads unmodified (``anndata.read_zarr``, ``anndata.io.sparse_dataset``),
and :func:`open_csr` reads stores written by anndata (zarr v2 or v3, any chunking, sharded or not).

* :func:`write_csr` / :func:`write_csc`: a whole scipy matrix, encoded and stored concurrently in Rust.
* :class:`CsrWriter`: a stream of row blocks (total size unknown), memory bounded by one shard.
* :func:`append_rows`: new rows at the end of an existing store, without rewriting it.
* :func:`open_csr` / :func:`open_csc`: random row (column) gathers: the requested rows are mapped
  to element ranges with the cached ``indptr``, grouped by (inner) chunk, each chunk is fetched and
  decoded once, and the pieces are copied into preallocated outputs, in Rust with the GIL released.

The binsparse layout (``layout="binsparse"``: arrays ``pointers_to_1``, ``indices_1``, ``values`` and
a ``binsparse`` descriptor attribute, as the ``binsparse`` package writes it) is written on request
and read like the anndata layout.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp
import zarr
from zarr.codecs import BloscCodec

from sparsezarr import _lib
from sparsezarr._settings import Settings
from sparsezarr._stores import (
    array_json,
    key_prefix,
    local_dir,
    open_group,
    reconsolidate,
    replace_dir,
    rust_store,
    staging,
)
from sparsezarr.errors import MetadataError

__all__ = [
    "CsrArray",
    "CsrWriter",
    "append_rows",
    "open_csc",
    "open_csr",
    "write_csc",
    "write_csr",
]

Layout = Literal["anndata", "binsparse"]
Format = Literal["csr", "csc"]

#: Names of the (values, indices, index pointer) arrays in each layout.
ARRAY_NAMES: dict[str, tuple[str, str, str]] = {
    "anndata": ("data", "indices", "indptr"),
    "binsparse": ("values", "indices_1", "pointers_to_1"),
}
#: Elements per inner chunk of ``data`` and ``indices`` (see ``docs/single-cell.md`` for the
#: measurements behind it).
DEFAULT_CHUNK = 1 << 13
#: Elements per shard of ``data`` and ``indices``.
DEFAULT_SHARD = 1 << 22
#: Elements per inner chunk and per shard of ``indptr``.
INDPTR_CHUNK = 1 << 16
INDPTR_SHARD = 1 << 22
ENCODING_VERSION = "0.1.0"
BINSPARSE_VERSION = "0.1.0"


def default_compressors() -> list[BloscCodec]:
    """Blosc with zstd level 1 and byte shuffling: smaller than anndata's default zstd on both
    values and indices, and several times faster to write (see ``docs/single-cell.md``)."""
    return [BloscCodec(cname="zstd", clevel=1, shuffle="shuffle")]


# ------------------------------------------------------------------------------------------------
# Layout detection
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Layout:
    layout: str
    format: str
    shape: tuple[int, int]


def _binsparse_header(attrs: dict[str, Any]) -> dict[str, Any] | None:
    """The binsparse descriptor, flat (``attrs.binsparse = {...}``) or nested as the binsparse
    package writes it (``attrs.binsparse.binsparse = {...}``); a JSON string is accepted too."""
    h = attrs.get("binsparse")
    if isinstance(h, str):
        import json

        h = json.loads(h)
    if isinstance(h, dict) and isinstance(h.get("binsparse"), dict):
        h = h["binsparse"]
    return h if isinstance(h, dict) and "format" in h else None


def _detect(group: zarr.Group) -> _Layout:
    attrs = dict(group.attrs)
    kind = attrs.get("encoding-type") or attrs.get("h5sparse_format")
    if kind in ("csr_matrix", "csc_matrix", "csr", "csc"):
        shape = attrs.get("shape") or attrs.get("h5sparse_shape")
        if shape is None or len(shape) != 2:
            raise MetadataError(f"{group.path or '/'}: attribute 'shape' is missing or not 2-dimensional")
        return _Layout("anndata", kind[:3], (int(shape[0]), int(shape[1])))
    header = _binsparse_header(attrs)
    if header is not None:
        fmt = str(header["format"]).upper()
        if fmt not in ("CSR", "CSC"):
            raise MetadataError(f"{group.path or '/'}: binsparse format {fmt!r} is not CSR or CSC")
        shape = header.get("shape")
        if shape is None or len(shape) != 2:
            raise MetadataError(f"{group.path or '/'}: binsparse descriptor has no 2-d 'shape'")
        return _Layout("binsparse", fmt.lower(), (int(shape[0]), int(shape[1])))
    raise MetadataError(
        f"{group.path or '/'} is not a compressed sparse matrix: expected the anndata attribute "
        f"'encoding-type' ('csr_matrix' or 'csc_matrix') or a binsparse descriptor; found {sorted(attrs)}"
    )


def _member(group: zarr.Group, name: str) -> zarr.Array:
    try:
        node = group[name]
    except KeyError:
        raise MetadataError(f"{group.path or '/'}: the array {name!r} is missing") from None
    if not isinstance(node, zarr.Array) or node.ndim != 1:
        raise MetadataError(f"{group.path or '/'}: {name!r} must be a one-dimensional array")
    # Consolidated metadata may still list an array whose own metadata is gone (its chunks would
    # then silently read as zeros): check the array's metadata document itself.
    from zarr.core.sync import sync

    key = f"{node.store_path.path}/{'zarr.json' if node.metadata.zarr_format == 3 else '.zarray'}".lstrip("/")
    if not sync(group.store_path.store.exists(key)):
        raise MetadataError(f"{group.path or '/'}: the array {name!r} is missing (only listed in the consolidated metadata)")
    return node


# ------------------------------------------------------------------------------------------------
# Reading
# ------------------------------------------------------------------------------------------------

Output = Literal["array", "matrix", "gcxs"]


class CsrArray:
    """A stored CSR (or CSC) matrix, read by rows (columns for CSC).

    ``x[rows]`` and ``x[rows, cols]`` accept integers, slices (any step), integer arrays (any
    order, repeats allowed) and boolean masks on each axis, and return a ``scipy.sparse``
    ``csr_array`` (``csc_array`` for CSC stores), a ``csr_matrix`` with ``output="matrix"`` or a
    ``sparse.GCXS`` with ``output="gcxs"``. An integer keeps its axis (a 1 x n result), as
    scipy.sparse matrices do. The gather runs in Rust with the GIL released; ``indptr`` is read
    once, when the store is opened.
    """

    def __init__(self, group: zarr.Group, *, output: Output = "array") -> None:
        lay = _detect(group)
        names = ARRAY_NAMES[lay.layout]
        data, indices, indptr = (_member(group, n) for n in names)
        self.group = group
        self.layout = lay.layout
        self.format: Format = lay.format  # type: ignore[assignment]
        self._shape = lay.shape
        self.output = output
        self._dtype = np.dtype(data.dtype).newbyteorder("=")
        settings = Settings.from_config()
        self._threads = settings.threads
        store = group.store_path.store
        self._store = store
        self._rust = rust_store(store)
        minor = self._shape[1] if self.format == "csr" else self._shape[0]
        major = self._shape[0] if self.format == "csr" else self._shape[1]
        if indptr.shape[0] != major + 1:
            raise MetadataError(f"{group.path or '/'}: indptr has {indptr.shape[0]} values; a {self.format.upper()} matrix of shape {self._shape} needs {major + 1}")
        if not np.issubdtype(indices.dtype, np.integer) or not np.issubdtype(indptr.dtype, np.integer):
            raise MetadataError(f"{group.path or '/'}: indices and indptr must hold integers ({indices.dtype}, {indptr.dtype})")
        ptr_bytes = _lib.read_array(self._rust, array_json(indptr), key_prefix(indptr), threads=self._threads, validate_checksums=settings.validate_checksums)
        ptr = np.frombuffer(memoryview(ptr_bytes), dtype=np.dtype(indptr.dtype).newbyteorder("="))
        self._reader = _lib.CsrReader(
            array_json(data),
            key_prefix(data),
            array_json(indices),
            key_prefix(indices),
            np.ascontiguousarray(ptr),
            minor,
            threads=self._threads,
            validate_checksums=settings.validate_checksums,
        )

    # -- properties -------------------------------------------------------------------------

    @property
    def shape(self) -> tuple[int, int]:
        return self._shape

    @property
    def dtype(self) -> np.dtype[Any]:
        return self._dtype

    @property
    def nnz(self) -> int:
        return int(self._reader.nnz)

    @property
    def indptr(self) -> np.ndarray:
        """The index pointer (int64), read once when the store was opened."""
        return self._reader.indptr()

    def __len__(self) -> int:
        return self._shape[0]

    def __repr__(self) -> str:
        return f"<sparsezarr.CsrArray {self.format.upper()} ({self.layout} layout) shape={self.shape} dtype={self.dtype} nnz={self.nnz} at {self._store}{'/' + self.group.path if self.group.path else ''}>"

    # -- reading ----------------------------------------------------------------------------

    def __getitem__(self, key: Any) -> Any:
        return self.read(key)

    def read(self, key: Any = slice(None), *, output: Output | None = None) -> Any:
        """Read a selection (see the class docstring); ``output`` overrides the default kind."""
        rows, cols = _split_key(key)
        n_major = self._shape[0] if self.format == "csr" else self._shape[1]
        n_minor = self._shape[1] if self.format == "csr" else self._shape[0]
        major_key, minor_key = (rows, cols) if self.format == "csr" else (cols, rows)
        major = _major_selection(major_key, n_major)
        minor = _minor_selection(minor_key, n_minor)
        lut, fix = _minor_lut(minor, n_minor)
        if isinstance(major, tuple):
            data, indices, indptr, _ = self._reader.gather(self._rust, start=major[0], stop=major[1], lut=lut)
            n_out = major[1] - major[0]
        else:
            data, indices, indptr, _ = self._reader.gather(self._rust, rows=major, lut=lut)
            n_out = len(major)
        values = np.frombuffer(memoryview(data), dtype=self._dtype)
        m_out = n_minor if minor is None else len(minor)
        if self.format == "csr":
            m = sp.csr_array((values, indices, indptr), shape=(n_out, n_minor if fix is not None else m_out))
            if fix is not None:
                m = m[:, fix]
        else:
            m = sp.csc_array((values, indices, indptr), shape=(n_minor if fix is not None else m_out, n_out))
            if fix is not None:
                m = m[fix, :]
        return _as_output(m, output or self.output)

    def read_parts(self, rows: Any) -> _Rows:
        """Gather ``rows`` (any order) into one buffer and return it as a :class:`_Rows`, from which
        consecutive ranges of the gathered rows are taken as matrices without copying (the
        minibatch loader's path)."""
        major = _major_selection(rows, self._shape[0] if self.format == "csr" else self._shape[1])
        if isinstance(major, tuple):
            data, indices, indptr, _ = self._reader.gather(self._rust, start=major[0], stop=major[1], huge_pages=True)
        else:
            data, indices, indptr, _ = self._reader.gather(self._rust, rows=major, huge_pages=True)
        n_minor = self._shape[1] if self.format == "csr" else self._shape[0]
        return _Rows(data, indices, indptr, self._dtype, n_minor, self.format)

    def to_memory(self, *, output: Output | None = None) -> Any:
        """The whole matrix."""
        return self.read(slice(None), output=output)

    def iter_blocks(self, block_rows: int = 65536) -> Iterator[tuple[int, Any]]:
        """``(start, block)`` for consecutive blocks of ``block_rows`` rows (columns for CSC)."""
        n = self._shape[0] if self.format == "csr" else self._shape[1]
        for a in range(0, n, block_rows):
            b = min(n, a + block_rows)
            yield a, (self.read(slice(a, b)) if self.format == "csr" else self.read((slice(None), slice(a, b))))


class _Rows:
    """Gathered rows (columns for CSC) in one buffer; :meth:`rows` cuts matrices out of it without
    copying the values or indices."""

    def __init__(self, data: np.ndarray, indices: np.ndarray, indptr: np.ndarray, dtype: np.dtype[Any], n_minor: int, fmt: str) -> None:
        self._data = memoryview(data)
        self._indices = memoryview(indices).cast("B")
        self._isize = indices.dtype.itemsize
        self._idtype = indices.dtype
        self.indptr = indptr
        self.dtype = dtype
        self.n_minor = n_minor
        self.format = fmt

    def __len__(self) -> int:
        return len(self.indptr) - 1

    def rows(self, a: int, b: int) -> sp.csr_array | sp.csc_array:
        """Gathered rows ``a..b`` as a matrix (values and indices are views of the buffer).

        The views are made with ``np.frombuffer`` over memoryview slices, so their base is not the
        whole buffer (scipy would copy a view of a much larger array)."""
        s, e = int(self.indptr[a]), int(self.indptr[b])
        es = self.dtype.itemsize
        data = np.frombuffer(self._data[s * es : e * es], dtype=self.dtype)
        indices = np.frombuffer(self._indices[s * self._isize : e * self._isize], dtype=self._idtype)
        ptr = self.indptr[a : b + 1] - self.indptr[a]
        if self.format == "csr":
            return sp.csr_array((data, indices, ptr), shape=(b - a, self.n_minor))
        return sp.csc_array((data, indices, ptr), shape=(self.n_minor, b - a))


def _as_output(m: Any, output: str) -> Any:
    if output == "array":
        return m
    if output == "matrix":
        return sp.csr_matrix(m) if m.format == "csr" else sp.csc_matrix(m)
    if output == "gcxs":
        import sparse

        return sparse.GCXS.from_scipy_sparse(m)
    raise ValueError(f"output must be 'array', 'matrix' or 'gcxs', not {output!r}")


def _split_key(key: Any) -> tuple[Any, Any]:
    if isinstance(key, tuple):
        if len(key) == 1:
            return key[0], slice(None)
        if len(key) == 2:
            return key
        if len(key) == 0:
            return slice(None), slice(None)
        raise IndexError(f"a matrix takes at most 2 indices, got {len(key)}")
    if key is Ellipsis:
        return slice(None), slice(None)
    return key, slice(None)


def _index_array(key: Any, n: int, axis: str) -> np.ndarray:
    arr = np.asarray(key)
    if arr.dtype == bool:
        if arr.shape != (n,):
            raise IndexError(f"boolean {axis} mask has shape {arr.shape}, expected ({n},)")
        return np.flatnonzero(arr)
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64)
    if not np.issubdtype(arr.dtype, np.integer):
        raise IndexError(f"{axis} indices must be integers, slices or boolean masks, not {arr.dtype}")
    arr = arr.astype(np.int64, copy=False).ravel()
    bad = (arr < -n) | (arr >= n)
    if bad.any():
        raise IndexError(f"{axis} index {int(arr[np.argmax(bad)])} is out of range for {n} {axis}s")
    return np.where(arr < 0, arr + n, arr)


def _major_selection(key: Any, n: int) -> tuple[int, int] | np.ndarray:
    """``(start, stop)`` for a contiguous range, else an int64 array of positions."""
    if key is Ellipsis:
        key = slice(None)
    if isinstance(key, slice):
        start, stop, step = key.indices(n)
        if step == 1:
            return (start, max(start, stop))
        return np.arange(start, stop, step, dtype=np.int64)
    if isinstance(key, int | np.integer):
        i = int(key)
        if not -n <= i < n:
            raise IndexError(f"row index {i} is out of range for {n} rows")
        i = i + n if i < 0 else i
        return (i, i + 1)
    return np.ascontiguousarray(_index_array(key, n, "row"))


def _minor_selection(key: Any, n: int) -> np.ndarray | None:
    """None for everything, else the selected positions."""
    if key is Ellipsis or (isinstance(key, slice) and key == slice(None)):
        return None
    if isinstance(key, slice):
        return np.arange(*key.indices(n), dtype=np.int64)
    if isinstance(key, int | np.integer):
        return _index_array([key], n, "column")
    return _index_array(key, n, "column")


def _minor_lut(sel: np.ndarray | None, n: int) -> tuple[np.ndarray | None, np.ndarray | None]:
    """A lookup table for the Rust filter (``lut[j]`` = new position or -1), or, for selections
    with repeats (which a table cannot express), ``(None, sel)``: scipy applies them afterwards."""
    if sel is None:
        return None, None
    if len(np.unique(sel)) != len(sel):
        return None, sel
    lut = np.full(n, -1, dtype=np.int64)
    lut[sel] = np.arange(len(sel), dtype=np.int64)
    return lut, None


def open_csr(target: Any, *, path: str = "", output: Output = "array") -> CsrArray:
    """Open a stored CSR matrix (a path, store or group; ``path`` inside it), written by
    sparsezarr or anndata, zarr v2 or v3, in the anndata or binsparse layout."""
    x = CsrArray(open_group(target, path, mode="r"), output=output)
    if x.format != "csr":
        raise MetadataError(f"{x.group.path or '/'} holds a CSC matrix; use open_csc")
    return x


def open_csc(target: Any, *, path: str = "", output: Output = "array") -> CsrArray:
    """Open a stored CSC matrix (see :func:`open_csr`); it is read by columns."""
    x = CsrArray(open_group(target, path, mode="r"), output=output)
    if x.format != "csc":
        raise MetadataError(f"{x.group.path or '/'} holds a CSR matrix; use open_csr")
    return x


# ------------------------------------------------------------------------------------------------
# Writing
# ------------------------------------------------------------------------------------------------


def _index_dtype(n: int, index_dtype: Any) -> np.dtype[Any]:
    """Stored type of ``indices``: int32 when it fits (as scipy and anndata), else int64;
    ``"minimal"`` picks the smallest unsigned type (anndata's
    ``write_csr_csc_indices_with_min_possible_dtype``)."""
    if index_dtype is None:
        return np.dtype(np.int32 if n <= np.iinfo(np.int32).max + 1 else np.int64)
    if isinstance(index_dtype, str) and index_dtype == "minimal":
        for t in (np.uint8, np.uint16, np.uint32, np.uint64):
            if n <= np.iinfo(t).max + 1:
                return np.dtype(t)
    dt = np.dtype(index_dtype)
    if not np.issubdtype(dt, np.integer) or n > np.iinfo(dt).max + 1:
        raise ValueError(f"index dtype {dt} cannot index {n} positions")
    return dt


def _indptr_dtype(nnz: int) -> np.dtype[Any]:
    return np.dtype(np.int32 if nnz <= np.iinfo(np.int32).max else np.int64)


def _layout_attrs(layout: str, fmt: str, shape: tuple[int, int], nnz: int, dtypes: tuple[Any, Any, Any]) -> dict[str, Any]:
    if layout == "anndata":
        return {"encoding-type": f"{fmt}_matrix", "encoding-version": ENCODING_VERSION, "shape": [int(shape[0]), int(shape[1])]}
    names = ARRAY_NAMES["binsparse"]
    header = {
        "version": BINSPARSE_VERSION,
        "format": fmt.upper(),
        "shape": [int(shape[0]), int(shape[1])],
        "number_of_stored_values": int(nnz),
        "data_types": {names[0]: np.dtype(dtypes[0]).name, names[1]: np.dtype(dtypes[1]).name, names[2]: np.dtype(dtypes[2]).name},
    }
    return {"binsparse": {"binsparse": header}}


def _compressors(compressors: Any) -> Any:
    return default_compressors() if isinstance(compressors, str) and compressors == "default" else compressors


def _make_array(group: zarr.Group, name: str, n: int, dt: Any, chunk: int, shard: int | None, compressors: Any, *, fit: bool = True) -> zarr.Array:
    """A 1-d array of ``n`` elements with inner chunks of ``chunk`` elements in shards of ``shard``
    (a multiple of ``chunk``; None or ``shard <= chunk``: unsharded). With ``fit``, chunks and shards
    are shrunk to the array's length (the length is final)."""
    if fit:
        chunk = max(1, min(chunk, n))
        if shard is not None:
            shard = min(shard, math.ceil(max(n, 1) / chunk) * chunk)
    if shard is not None:
        shard = shard // chunk * chunk
    sharded = shard is not None and shard > chunk
    return group.create_array(
        name, shape=(n,), dtype=dt, chunks=(chunk,), shards=(shard,) if sharded else None, compressors=_compressors(compressors), fill_value=0, overwrite=True
    )


def _create_arrays(
    group: zarr.Group,
    layout: str,
    nnz: int,
    n_ptr: int,
    dtype: np.dtype[Any],
    index_dtype: np.dtype[Any],
    indptr_dtype: np.dtype[Any],
    chunks: int,
    shards: int | None,
    compressors: Any,
) -> tuple[zarr.Array, zarr.Array, zarr.Array]:
    names = ARRAY_NAMES[layout]
    return (
        _make_array(group, names[0], nnz, dtype, chunks, shards, compressors),
        _make_array(group, names[1], nnz, index_dtype, chunks, shards, compressors),
        _make_array(group, names[2], n_ptr, indptr_dtype, INDPTR_CHUNK, INDPTR_SHARD, compressors),
    )


def _as_compressed(x: Any, fmt: str) -> sp.csr_array | sp.csc_array:
    if isinstance(x, np.ndarray) or not sp.issparse(x):
        try:
            import sparse as pydata_sparse

            if isinstance(x, pydata_sparse.SparseArray):
                x = x.to_scipy_sparse()
        except ImportError:
            pass
    if not sp.issparse(x):
        x = np.asarray(x)
        if x.ndim != 2:
            raise ValueError(f"expected a 2-dimensional matrix, got {x.ndim} dimensions")
    m = sp.csr_array(x) if fmt == "csr" else sp.csc_array(x)
    if m.ndim != 2:
        raise ValueError(f"expected a 2-dimensional matrix, got shape {m.shape}")
    return m


def _write_group(
    target: Any,
    path: str,
    fmt: str,
    m: sp.csr_array | sp.csc_array,
    *,
    layout: str,
    chunks: int | None,
    shards: int | None | Literal["default"],
    compressors: Any,
    index_dtype: Any,
    overwrite: bool,
    attributes: dict[str, Any] | None,
) -> zarr.Group:
    if layout not in ARRAY_NAMES:
        raise ValueError(f"layout must be 'anndata' or 'binsparse', not {layout!r}")
    chunk = DEFAULT_CHUNK if chunks is None else int(chunks)
    shard = DEFAULT_SHARD if shards == "default" else shards
    if chunk < 1 or (shard is not None and shard < chunk):
        raise ValueError(f"chunks must be >= 1 and shards >= chunks (got {chunks}, {shards})")
    parent_store, base_path = _store_and_path(target, path)
    minor = m.shape[1] if fmt == "csr" else m.shape[0]
    nnz = int(m.indptr[-1]) if len(m.indptr) else 0
    idx_dt = _index_dtype(minor, index_dtype)
    ptr_dt = _indptr_dtype(nnz)
    # Validate cheap things before anything touches the store.
    if m.dtype.kind not in "biufc":
        raise TypeError(f"cannot store values of dtype {m.dtype}")
    exists = _group_exists(parent_store, base_path)
    if exists and not overwrite:
        raise FileExistsError(f"{base_path or 'the store root'} already exists; pass overwrite=True to replace it")
    local = local_dir(parent_store, base_path)
    stage = exists and local is not None
    write_store, write_path = staging(parent_store, base_path) if stage else (parent_store, base_path)
    group = zarr.open_group(store=write_store, path=write_path or None, mode="w", zarr_format=3)
    values = np.ascontiguousarray(m.data)
    if not values.dtype.isnative:
        values = values.astype(values.dtype.newbyteorder("="))
    data, indices, indptr = _create_arrays(group, layout, nnz, len(m.indptr), values.dtype, idx_dt, ptr_dt, chunk, shard, compressors)
    settings = Settings.from_config()
    try:
        _lib.write_compressed(
            rust_store(write_store),
            (array_json(data), key_prefix(data)),
            (array_json(indices), key_prefix(indices)),
            (array_json(indptr), key_prefix(indptr)),
            np.ascontiguousarray(m.indptr),
            np.ascontiguousarray(m.indices),
            values,
            minor,
            threads=settings.threads,
        )
    except BaseException:
        if stage or not exists:
            _remove(write_store, write_path)
        raise
    attrs = {**(attributes or {}), **_layout_attrs(layout, fmt, m.shape, nnz, (values.dtype, idx_dt, ptr_dt))}
    group.attrs.update(attrs)
    if stage:
        assert local is not None
        if not base_path:
            reconsolidate(write_store, force=True)
        replace_dir(local, local_dir(write_store, write_path))  # type: ignore[arg-type]
    reconsolidate(parent_store, force=not base_path)
    return zarr.open_group(store=parent_store, path=base_path or None, mode="r+")


def _store_and_path(target: Any, path: str) -> tuple[Any, str]:
    """The store and the full path of the group to write (``path`` below ``target``)."""
    if isinstance(target, zarr.Group):
        base = target.store_path.path
        return target.store_path.store, "/".join(p for p in (base, path.strip("/")) if p)
    if isinstance(target, str) or hasattr(target, "__fspath__"):
        from zarr.storage import LocalStore

        store: Any = LocalStore(str(target))
    else:
        store = target
    return store, path.strip("/")


def _group_exists(store: Any, path: str) -> bool:
    try:
        zarr.open_group(store=store, path=path or None, mode="r", use_consolidated=False)
        return True
    except (FileNotFoundError, zarr.errors.GroupNotFoundError, zarr.errors.NodeTypeValidationError, ValueError, KeyError):
        return False


def _remove(store: Any, path: str) -> None:
    """Delete everything below ``path`` (best effort, after a failed write)."""
    local = local_dir(store, path)
    if local is not None:
        import shutil

        shutil.rmtree(local, ignore_errors=True)
        return
    from zarr.core.sync import sync

    async def delete() -> None:
        await store.delete_dir(path)

    try:
        sync(delete())
    except Exception:  # noqa: BLE001 - cleanup only
        pass


def write_csr(
    target: Any,
    x: Any,
    *,
    path: str = "",
    layout: Layout = "anndata",
    chunks: int | None = None,
    shards: int | None | Literal["default"] = "default",
    compressors: Any = "default",
    index_dtype: Any = None,
    overwrite: bool = False,
    attributes: dict[str, Any] | None = None,
) -> CsrArray:
    """Write a matrix as a CSR group (the anndata on-disk layout, or ``layout="binsparse"``).

    ``x`` is any scipy.sparse array or matrix (CSC is converted), a pydata ``sparse`` array or a
    dense 2-d array. ``target`` is a path, a zarr store or a group; the CSR group is written at
    ``path`` below it (the root by default). ``data`` and ``indices`` get inner chunks of
    ``chunks`` elements (default 8192) in shards of ``shards`` elements (default 4,194,304; None
    for no sharding) and ``compressors`` (default Blosc zstd level 1 with byte shuffle). Indices
    are int32 when they fit (``index_dtype="minimal"`` for the smallest unsigned type), ``indptr``
    int32 when the number of values fits, else int64.

    The input is validated (index pointer starts at 0, never decreases and ends at the number of
    values; indices in range) before anything is stored; a failed write leaves nothing behind,
    and replacing an existing group in a local directory (``overwrite=True``) swaps the new
    group in atomically once it is complete. The root's consolidated metadata is refreshed.
    """
    m = _as_compressed(x, "csr")
    g = _write_group(target, path, "csr", m, layout=layout, chunks=chunks, shards=shards, compressors=compressors, index_dtype=index_dtype, overwrite=overwrite, attributes=attributes)
    return CsrArray(g)


def write_csc(
    target: Any,
    x: Any,
    *,
    path: str = "",
    layout: Layout = "anndata",
    chunks: int | None = None,
    shards: int | None | Literal["default"] = "default",
    compressors: Any = "default",
    index_dtype: Any = None,
    overwrite: bool = False,
    attributes: dict[str, Any] | None = None,
) -> CsrArray:
    """Write a matrix as a CSC group (see :func:`write_csr`)."""
    m = _as_compressed(x, "csc")
    g = _write_group(target, path, "csc", m, layout=layout, chunks=chunks, shards=shards, compressors=compressors, index_dtype=index_dtype, overwrite=overwrite, attributes=attributes)
    return CsrArray(g)


# ------------------------------------------------------------------------------------------------
# Streaming writes and appends
# ------------------------------------------------------------------------------------------------


class CsrWriter:
    """Write a CSR (or CSC) matrix from a stream of row (column) blocks of unknown total size.

    >>> with sparsezarr.CsrWriter("atlas.zarr", n_cols=20_000, dtype="float32") as w:
    ...     for block in blocks:            # scipy.sparse row blocks, any number of rows
    ...         w.append(block)
    >>> x = w.result                         # a CsrArray

    Values are encoded and stored in Rust as soon as a whole shard of them has arrived, so memory
    holds at most one shard of ``data`` and of ``indices`` plus the current block, whatever the
    size of the matrix (and 8 bytes per row for the index pointer). ``indptr`` is stored as int64
    (the final number of values is unknown until the end). Nothing is visible as a matrix until
    :meth:`close` writes the metadata; an existing group is replaced only then, atomically in a
    local directory. With ``progress=True`` a progress bar counts rows (``total`` rows, if known).
    """

    def __init__(
        self,
        target: Any,
        *,
        n_cols: int,
        dtype: Any = "float32",
        path: str = "",
        format: Format = "csr",
        layout: Layout = "anndata",
        chunks: int | None = None,
        shards: int | None | Literal["default"] = "default",
        compressors: Any = "default",
        index_dtype: Any = None,
        overwrite: bool = False,
        attributes: dict[str, Any] | None = None,
        progress: bool = False,
        total: int | None = None,
    ) -> None:
        if format not in ("csr", "csc"):
            raise ValueError(f"format must be 'csr' or 'csc', not {format!r}")
        if layout not in ARRAY_NAMES:
            raise ValueError(f"layout must be 'anndata' or 'binsparse', not {layout!r}")
        self.format = format
        self.layout = layout
        self.n_minor = int(n_cols)
        if self.n_minor < 0:
            raise ValueError("n_cols must be non-negative")
        self.dtype = np.dtype(dtype)
        if self.dtype.kind not in "biufc":
            raise TypeError(f"cannot store values of dtype {self.dtype}")
        self._attributes = attributes
        self._store, self._base = _store_and_path(target, path)
        exists = _group_exists(self._store, self._base)
        if exists and not overwrite:
            raise FileExistsError(f"{self._base or 'the store root'} already exists; pass overwrite=True to replace it")
        local = local_dir(self._store, self._base)
        self._stage = exists and local is not None
        self._wstore, self._path = staging(self._store, self._base) if self._stage else (self._store, self._base)
        self._created_fresh = not exists
        chunk = DEFAULT_CHUNK if chunks is None else int(chunks)
        shard = DEFAULT_SHARD if shards == "default" else shards
        self._index_dtype = _index_dtype(self.n_minor, index_dtype)
        self._group = zarr.open_group(store=self._wstore, path=self._path or None, mode="w", zarr_format=3)
        self._compressors = compressors
        # data and indices are created empty (their length is set by close()); chunks and shards
        # keep their full size.
        names = ARRAY_NAMES[layout]
        self._data = _make_array(self._group, names[0], 0, self.dtype, chunk, shard, compressors, fit=False)
        self._indices = _make_array(self._group, names[1], 0, self._index_dtype, chunk, shard, compressors, fit=False)
        self._rust = rust_store(self._wstore)
        self._threads = Settings.from_config().threads
        self._writer = _lib.CsrWriter(array_json(self._data), key_prefix(self._data), array_json(self._indices), key_prefix(self._indices), self.n_minor, np.zeros(1, dtype=np.int64), threads=self._threads)
        self._closed = False
        self.result: CsrArray | None = None
        self._bar = None
        if progress:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, unit=" rows", desc="writing", smoothing=0.1)

    @property
    def rows(self) -> int:
        """Rows (columns for CSC) written so far."""
        return int(self._writer.rows)

    @property
    def nnz(self) -> int:
        return int(self._writer.nnz)

    def append(self, block: Any) -> None:
        """Append a block of rows (columns for CSC): any scipy.sparse matrix or array with
        ``n_cols`` columns (``n_cols`` rows for CSC), or a dense 2-d array."""
        if self._closed:
            raise ValueError("the writer is closed")
        m = _as_compressed(block, self.format)
        minor = m.shape[1] if self.format == "csr" else m.shape[0]
        if minor != self.n_minor:
            axis = "columns" if self.format == "csr" else "rows"
            raise ValueError(f"block has {minor} {axis}; the matrix has {self.n_minor}")
        data = np.ascontiguousarray(m.data, dtype=self.dtype)
        if not np.can_cast(m.dtype, self.dtype, casting="same_kind"):
            raise TypeError(f"cannot store {m.dtype} values in a {self.dtype} matrix")
        self._writer.append(self._rust, np.ascontiguousarray(m.indptr), np.ascontiguousarray(m.indices), data)
        if self._bar is not None:
            self._bar.update(len(m.indptr) - 1)

    def extend(self, blocks: Iterable[Any]) -> None:
        """Append every block of an iterable."""
        for b in blocks:
            self.append(b)

    def close(self) -> CsrArray:
        """Write what is pending, the index pointer and the metadata; returns the stored matrix."""
        if self._closed:
            assert self.result is not None
            return self.result
        try:
            ptr = self._writer.finish(self._rust)
            nnz = int(ptr[-1])
            self._data.resize((nnz,))
            self._indices.resize((nnz,))
            indptr = _make_array(self._group, ARRAY_NAMES[self.layout][2], len(ptr), np.int64, INDPTR_CHUNK, INDPTR_SHARD, self._compressors)
            _lib.write_array(self._rust, array_json(indptr), key_prefix(indptr), 0, ptr, threads=self._threads)
            rows = len(ptr) - 1
            shape = (rows, self.n_minor) if self.format == "csr" else (self.n_minor, rows)
            attrs = {**(self._attributes or {}), **_layout_attrs(self.layout, self.format, shape, nnz, (self.dtype, self._index_dtype, np.int64))}
            self._group.attrs.update(attrs)
            if self._stage:
                if not self._base:
                    reconsolidate(self._wstore, force=True)
                replace_dir(local_dir(self._store, self._base), local_dir(self._wstore, self._path))  # type: ignore[arg-type]
            reconsolidate(self._store, force=not self._base)
        except BaseException:
            self.abort()
            raise
        finally:
            if self._bar is not None:
                self._bar.close()
        self._closed = True
        self.result = CsrArray(zarr.open_group(store=self._store, path=self._base or None, mode="r+"))
        return self.result

    def abort(self) -> None:
        """Give up: remove what was written (an existing group that was being replaced stays)."""
        self._closed = True
        if self._stage or self._created_fresh:
            _remove(self._wstore, self._path)

    def __enter__(self) -> CsrWriter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def append_rows(target: Any, x: Any | Iterable[Any], *, path: str = "", progress: bool = False) -> CsrArray:
    """Append rows (columns for a CSC store) at the end of a stored matrix without rewriting it.

    ``x`` is one matrix (any type :func:`write_csr` takes) or an iterable of blocks. The new values
    are stored first (the last, partly filled shard of ``data`` and ``indices`` is merged with
    them; each stored object is replaced atomically), then ``indptr``, then the metadata: until
    the metadata is updated, readers see the old matrix, unchanged. Works on stores written by
    sparsezarr or by anndata (zarr v3).
    """
    group = open_group(target, path, mode="r+")
    lay = _detect(group)
    names = ARRAY_NAMES[lay.layout]
    data, indices, indptr = (_member(group, n) for n in names)
    if data.metadata.zarr_format != 3:
        raise MetadataError("appending needs a zarr v3 store (this one is zarr v2; convert it first)")
    store = group.store_path.store
    rust = rust_store(store)
    settings = Settings.from_config()
    minor = lay.shape[1] if lay.format == "csr" else lay.shape[0]
    old_ptr = np.frombuffer(memoryview(_lib.read_array(rust, array_json(indptr), key_prefix(indptr), threads=settings.threads)), dtype=np.dtype(indptr.dtype).newbyteorder("="))
    if len(old_ptr) == 0:
        raise MetadataError(f"{group.path or '/'}: indptr is empty")
    writer = _lib.CsrWriter(array_json(data), key_prefix(data), array_json(indices), key_prefix(indices), minor, np.ascontiguousarray(old_ptr.astype(np.int64)), threads=settings.threads)
    dtype = np.dtype(data.dtype).newbyteorder("=")
    blocks = [x] if sp.issparse(x) or isinstance(x, np.ndarray) or hasattr(x, "to_scipy_sparse") else x
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(unit=" rows", desc="appending")
    for b in blocks:
        m = _as_compressed(b, lay.format)
        m_minor = m.shape[1] if lay.format == "csr" else m.shape[0]
        if m_minor != minor:
            raise ValueError(f"block has {m_minor} {'columns' if lay.format == 'csr' else 'rows'}; the matrix has {minor}")
        if not np.can_cast(m.dtype, dtype, casting="same_kind"):
            raise TypeError(f"cannot store {m.dtype} values in a {dtype} matrix")
        writer.append(rust, np.ascontiguousarray(m.indptr), np.ascontiguousarray(m.indices), np.ascontiguousarray(m.data, dtype=dtype))
        if bar is not None:
            bar.update(len(m.indptr) - 1)
    if bar is not None:
        bar.close()
    ptr = writer.finish(rust)
    nnz = int(ptr[-1])
    major = len(ptr) - 1
    ptr_dtype = np.dtype(indptr.dtype)
    if nnz > np.iinfo(ptr_dtype).max:
        indptr = _widen_indptr(group, indptr, ptr, rust, settings.threads)
    else:
        # The old values are rewritten unchanged; the new ones follow. The array's metadata is
        # not yet updated, so readers still see the old length.
        start = len(old_ptr) - 1
        new = np.ascontiguousarray(ptr[start:].astype(ptr_dtype.newbyteorder("=")))
        _lib.write_array(rust, _with_length(indptr, len(ptr)), key_prefix(indptr), start, new, threads=settings.threads)
        indptr.resize((len(ptr),))
    data.resize((nnz,))
    indices.resize((nnz,))
    shape = (major, minor) if lay.format == "csr" else (minor, major)
    if lay.layout == "anndata":
        group.attrs["shape"] = list(shape)
    else:
        header = _binsparse_header(dict(group.attrs)) or {}
        header = {**header, "shape": list(shape), "number_of_stored_values": nnz}
        group.attrs["binsparse"] = {"binsparse": header}
    reconsolidate(store)
    return CsrArray(zarr.open_group(store=store, path=group.store_path.path or None, mode="r+"))


def _with_length(array: zarr.Array, n: int) -> str:
    """The array's metadata JSON with its length changed (for writing past the current end)."""
    import json

    doc = json.loads(array_json(array))
    doc["shape"] = [n]
    return json.dumps(doc)


def _widen_indptr(group: zarr.Group, indptr: zarr.Array, ptr: np.ndarray, rust: Any, threads: int) -> zarr.Array:
    """Rewrite ``indptr`` as int64 (the number of values outgrew int32)."""
    name = indptr.basename
    tmp = f"{name}.sparsezarr-new-{uuid.uuid4().hex[:8]}"
    new = _make_array(group, tmp, len(ptr), np.int64, INDPTR_CHUNK, INDPTR_SHARD, list(indptr.compressors))
    _lib.write_array(rust, array_json(new), key_prefix(new), 0, np.ascontiguousarray(ptr, dtype=np.int64), threads=threads)
    store = group.store_path.store
    old_dir, new_dir = local_dir(store, indptr.store_path.path), local_dir(store, new.store_path.path)
    if old_dir is None or new_dir is None:
        raise NotImplementedError("widening indptr to int64 is supported in local stores only")
    replace_dir(old_dir, new_dir)
    return group[name]  # type: ignore[return-value]
