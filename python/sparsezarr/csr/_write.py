"""Bulk writes: a whole matrix as a CSR or CSC group, encoded and stored concurrently in Rust."""

from __future__ import annotations

import uuid
from typing import Any

import numpy as np
import zarr

from sparsezarr import _lib
from sparsezarr._commit import swap_in
from sparsezarr._settings import Settings, durable
from sparsezarr._stores import array_json, fsync_tree, key_prefix, local_dir, native, reconsolidate, refuse_v3_in_v2, resolve, rust_store, staging
from sparsezarr.csr._arrays import (
    Compressed,
    Compressors,
    IndexDType,
    MatrixLike,
    Shards,
    Target,
    as_compressed,
    group_exists,
    indices_dtype,
    indptr_dtype,
    make_array,
    remove,
    store_and_path,
)
from sparsezarr.csr._layout import ARRAY_NAMES, DEFAULT_CHUNK, DEFAULT_SHARD, INDPTR_CHUNK, INDPTR_SHARD, Format, Layout, layout_attrs
from sparsezarr.csr._read import CsrArray
from sparsezarr.dask import is_dask_array


def write_csr(
    target: Target,
    x: MatrixLike,
    *,
    path: str = "",
    layout: Layout = "anndata",
    chunks: int | None = None,
    shards: Shards = "default",
    compressors: Compressors = "default",
    index_dtype: IndexDType = None,
    overwrite: bool = False,
    attributes: dict[str, Any] | None = None,
    storage_options: dict[str, Any] | None = None,
) -> CsrArray:
    """Write a matrix as a CSR group (the anndata on-disk layout, or ``layout="binsparse"``).

    ``x`` is any scipy.sparse array or matrix (CSC is converted), a pydata ``sparse`` array or a
    dense 2-d array. ``target`` is a path, a zarr store or a group; the CSR group is written at
    ``path`` below it (the root by default); a URL (``s3://bucket/x.zarr``, ``gs://``, ``az://``)
    is opened as zarr opens it, with fsspec's ``storage_options``, and written from Rust. ``data`` and ``indices`` get inner chunks of
    ``chunks`` elements (default 8192) in shards of ``shards`` elements (default 4,194,304; None
    for no sharding) and ``compressors`` (default Blosc zstd level 1 with byte shuffle). Indices
    are int32 when they fit (``index_dtype="minimal"`` for the smallest unsigned type), ``indptr``
    int32 when the number of values fits, else int64.

    The input is validated (index pointer starts at 0, never decreases and ends at the number of
    values; indices in range) before anything is stored; a failed write leaves nothing behind,
    and replacing an existing group in a local directory (``overwrite=True``) swaps the new
    group in atomically once it is complete. The root's consolidated metadata is refreshed.

    ``x`` may also be a dask array (of scipy.sparse, ``sparse`` or numpy blocks): it is written
    in parallel on the active dask scheduler, byte-identical to the serial write of the same
    matrix (see :mod:`sparsezarr.dask`).
    """
    return _write(
        resolve(target, storage_options), x, "csr", path=path, layout=layout, chunks=chunks, shards=shards,
        compressors=compressors, index_dtype=index_dtype, overwrite=overwrite, attributes=attributes,
    )  # fmt: skip


def write_csc(
    target: Target,
    x: MatrixLike,
    *,
    path: str = "",
    layout: Layout = "anndata",
    chunks: int | None = None,
    shards: Shards = "default",
    compressors: Compressors = "default",
    index_dtype: IndexDType = None,
    overwrite: bool = False,
    attributes: dict[str, Any] | None = None,
    storage_options: dict[str, Any] | None = None,
) -> CsrArray:
    """Write a matrix as a CSC group (see :func:`write_csr`)."""
    return _write(
        resolve(target, storage_options), x, "csc", path=path, layout=layout, chunks=chunks, shards=shards,
        compressors=compressors, index_dtype=index_dtype, overwrite=overwrite, attributes=attributes,
    )  # fmt: skip


def _write(target: Target, x: Any, fmt: Format, **kwargs: Any) -> CsrArray:
    """``write_csr`` / ``write_csc``: a dask array in parallel (``sparsezarr.dask``), anything
    else from memory."""
    if is_dask_array(x):
        from sparsezarr.dask import write_compressed

        return CsrArray(write_compressed(target, x, fmt, **kwargs))
    return CsrArray(_write_group(target, kwargs.pop("path"), fmt, as_compressed(x, fmt), **kwargs))


class GroupWrite:
    """One write of a CSR/CSC group, in three steps: this constructor validates what it can and
    creates the group and its three member arrays (in a hidden staging group when it replaces
    a group of a local directory), the caller stores the values (:attr:`arrays`), then
    :meth:`commit` writes the attributes and swaps a staged group in (or :meth:`abort` removes
    what was written)."""

    def __init__(
        self,
        target: Target,
        path: str,
        fmt: Format,
        shape: tuple[int, int],
        nnz: int,
        dtype: np.dtype[Any],
        *,
        layout: Layout,
        chunks: int | None,
        shards: Shards,
        compressors: Compressors,
        index_dtype: IndexDType,
        overwrite: bool,
    ) -> None:
        if layout not in ARRAY_NAMES:
            raise ValueError(f"layout must be 'anndata' or 'binsparse', not {layout!r}")
        chunk = DEFAULT_CHUNK if chunks is None else int(chunks)
        shard = DEFAULT_SHARD if shards == "default" else shards
        if chunk < 1 or (shard is not None and shard < chunk):
            raise ValueError(f"chunks must be >= 1 and shards >= chunks (got {chunks}, {shards})")
        if dtype.kind not in "biufc":
            raise TypeError(f"cannot store values of dtype {dtype}")
        self.token = uuid.uuid4().hex[:12]
        self.fmt, self.shape, self.nnz, self.layout = fmt, shape, nnz, layout
        self.parent_store, self.base_path = store_and_path(target, path)
        minor = shape[1] if fmt == "csr" else shape[0]
        n_major = shape[0] if fmt == "csr" else shape[1]
        self.index_dtype = indices_dtype(minor, index_dtype)
        self.indptr_dtype = indptr_dtype(nnz)
        self.dtype = dtype
        refuse_v3_in_v2(self.parent_store, self.base_path)
        self.exists = group_exists(self.parent_store, self.base_path)
        if self.exists and not overwrite:
            raise FileExistsError(f"{self.base_path or 'the store root'} already exists; pass overwrite=True to replace it")
        self.local = local_dir(self.parent_store, self.base_path)
        self.stage = self.exists and self.local is not None
        self.write_store: Any
        self.write_path: str
        self.write_store, self.write_path = staging(self.parent_store, self.base_path) if self.stage else (native(self.parent_store), self.base_path)
        self.group = zarr.open_group(store=self.write_store, path=self.write_path or None, mode="w", zarr_format=3)
        names = ARRAY_NAMES[layout]
        self.arrays = (
            make_array(self.group, names[0], nnz, dtype, chunk, shard, compressors),
            make_array(self.group, names[1], nnz, self.index_dtype, chunk, shard, compressors),
            make_array(self.group, names[2], n_major + 1, self.indptr_dtype, INDPTR_CHUNK, INDPTR_SHARD, compressors),
        )

    def abort(self) -> None:
        """Remove what this write stored (a new or staged group; never the group it replaces)."""
        if self.stage or not self.exists:
            remove(self.write_store, self.write_path)

    def commit(self, attributes: dict[str, Any] | None) -> zarr.Group:
        """Write the attributes, swap a staged group in, refresh consolidated metadata."""
        attrs = {
            **(attributes or {}),
            **layout_attrs(self.layout, self.fmt, self.shape, self.nnz, (self.dtype, self.index_dtype, self.indptr_dtype)),
        }
        self.group.attrs.update(attrs)
        if self.stage:
            swap_in(self.parent_store, self.base_path, self.write_store, self.write_path)
        else:
            reconsolidate(self.parent_store, force=not self.base_path)
            if self.local is not None and durable():
                fsync_tree(self.local)
        return zarr.open_group(store=self.parent_store, path=self.base_path or None, mode="r+")


def _write_group(target: Target, path: str, fmt: Format, m: Compressed, *, attributes: dict[str, Any] | None, **layout: Any) -> zarr.Group:
    """The serial write of a matrix in memory (``layout``: :class:`GroupWrite`'s keywords)."""
    nnz = int(m.indptr[-1]) if len(m.indptr) else 0
    values = np.ascontiguousarray(m.data)
    if not values.dtype.isnative:
        values = values.astype(values.dtype.newbyteorder("="))
    writer = GroupWrite(target, path, fmt, (m.shape[0], m.shape[1]), nnz, values.dtype, **layout)
    data, indices, indptr = writer.arrays
    settings = Settings.from_config()
    try:
        _lib.write_compressed(
            rust_store(writer.write_store),
            (array_json(data), key_prefix(data)),
            (array_json(indices), key_prefix(indices)),
            (array_json(indptr), key_prefix(indptr)),
            np.ascontiguousarray(m.indptr),
            np.ascontiguousarray(m.indices),
            values,
            m.shape[1] if fmt == "csr" else m.shape[0],
            threads=settings.threads,
        )
    except BaseException:
        writer.abort()
        raise
    return writer.commit(attributes)
