"""Bulk writes: a whole matrix as a CSR or CSC group, encoded and stored concurrently in Rust."""

from __future__ import annotations

from typing import Any

import numpy as np
import zarr

from sparsezarr import _lib
from sparsezarr._settings import Settings
from sparsezarr._stores import array_json, key_prefix, local_dir, reconsolidate, replace_dir, resolve, rust_store, staging
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
    """
    m = as_compressed(x, "csr")
    g = _write_group(
        resolve(target, storage_options),
        path,
        "csr",
        m,
        layout=layout,
        chunks=chunks,
        shards=shards,
        compressors=compressors,
        index_dtype=index_dtype,
        overwrite=overwrite,
        attributes=attributes,
    )
    return CsrArray(g)


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
    m = as_compressed(x, "csc")
    g = _write_group(
        resolve(target, storage_options),
        path,
        "csc",
        m,
        layout=layout,
        chunks=chunks,
        shards=shards,
        compressors=compressors,
        index_dtype=index_dtype,
        overwrite=overwrite,
        attributes=attributes,
    )
    return CsrArray(g)


def _write_group(
    target: Target,
    path: str,
    fmt: Format,
    m: Compressed,
    *,
    layout: Layout,
    chunks: int | None,
    shards: Shards,
    compressors: Compressors,
    index_dtype: IndexDType,
    overwrite: bool,
    attributes: dict[str, Any] | None,
) -> zarr.Group:
    if layout not in ARRAY_NAMES:
        raise ValueError(f"layout must be 'anndata' or 'binsparse', not {layout!r}")
    chunk = DEFAULT_CHUNK if chunks is None else int(chunks)
    shard = DEFAULT_SHARD if shards == "default" else shards
    if chunk < 1 or (shard is not None and shard < chunk):
        raise ValueError(f"chunks must be >= 1 and shards >= chunks (got {chunks}, {shards})")
    parent_store, base_path = store_and_path(target, path)
    minor = m.shape[1] if fmt == "csr" else m.shape[0]
    nnz = int(m.indptr[-1]) if len(m.indptr) else 0
    idx_dt = indices_dtype(minor, index_dtype)
    ptr_dt = indptr_dtype(nnz)
    # Validate cheap things before anything touches the store.
    if m.dtype.kind not in "biufc":
        raise TypeError(f"cannot store values of dtype {m.dtype}")
    exists = group_exists(parent_store, base_path)
    if exists and not overwrite:
        raise FileExistsError(f"{base_path or 'the store root'} already exists; pass overwrite=True to replace it")
    local = local_dir(parent_store, base_path)
    stage = exists and local is not None
    write_store, write_path = staging(parent_store, base_path) if stage else (parent_store, base_path)
    group = zarr.open_group(store=write_store, path=write_path or None, mode="w", zarr_format=3)
    values = np.ascontiguousarray(m.data)
    if not values.dtype.isnative:
        values = values.astype(values.dtype.newbyteorder("="))
    names = ARRAY_NAMES[layout]
    data = make_array(group, names[0], nnz, values.dtype, chunk, shard, compressors)
    indices = make_array(group, names[1], nnz, idx_dt, chunk, shard, compressors)
    indptr = make_array(group, names[2], len(m.indptr), ptr_dt, INDPTR_CHUNK, INDPTR_SHARD, compressors)
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
            remove(write_store, write_path)
        raise
    attrs = {**(attributes or {}), **layout_attrs(layout, fmt, (m.shape[0], m.shape[1]), nnz, (values.dtype, idx_dt, ptr_dt))}
    group.attrs.update(attrs)
    if stage:
        staged = local_dir(write_store, write_path)
        assert local is not None and staged is not None  # both stores are local when staging
        if not base_path:
            reconsolidate(write_store, force=True)
        replace_dir(local, staged)
    reconsolidate(parent_store, force=not base_path)
    return zarr.open_group(store=parent_store, path=base_path or None, mode="r+")
