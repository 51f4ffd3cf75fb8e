"""Streaming writes: :class:`CsrWriter` stores a matrix from a stream of row (column) blocks of
unknown total size, with memory bounded by one shard."""

from __future__ import annotations

from collections.abc import Iterable
from types import TracebackType
from typing import Any

import numpy as np
import numpy.typing as npt
import zarr
from zarr.abc.store import Store

from sparsezarr import _lib
from sparsezarr._commit import swap_in
from sparsezarr._settings import Settings, durable
from sparsezarr._stores import array_json, fsync_tree, key_prefix, local_dir, native, reconsolidate, refuse_v3_in_v2, resolve, rust_store, staging
from sparsezarr.csr._arrays import (
    Compressors,
    IndexDType,
    MatrixLike,
    Shards,
    Target,
    as_compressed,
    group_exists,
    indices_dtype,
    make_array,
    remove,
    store_and_path,
)
from sparsezarr.csr._layout import ARRAY_NAMES, DEFAULT_CHUNK, DEFAULT_SHARD, INDPTR_CHUNK, INDPTR_SHARD, Format, Layout, layout_attrs
from sparsezarr.csr._read import CsrArray


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
        target: Target,
        *,
        n_cols: int,
        dtype: npt.DTypeLike = "float32",
        path: str = "",
        format: Format = "csr",
        layout: Layout = "anndata",
        chunks: int | None = None,
        shards: Shards = "default",
        compressors: Compressors = "default",
        index_dtype: IndexDType = None,
        overwrite: bool = False,
        attributes: dict[str, Any] | None = None,
        progress: bool = False,
        total: int | None = None,
        storage_options: dict[str, Any] | None = None,
    ) -> None:
        if format not in ("csr", "csc"):
            raise ValueError(f"format must be 'csr' or 'csc', not {format!r}")
        if layout not in ARRAY_NAMES:
            raise ValueError(f"layout must be 'anndata' or 'binsparse', not {layout!r}")
        self.format: Format = format
        self.layout: Layout = layout
        self.n_minor = int(n_cols)
        if self.n_minor < 0:
            raise ValueError("n_cols must be non-negative")
        self.dtype = np.dtype(dtype)
        if self.dtype.kind not in "biufc":
            raise TypeError(f"cannot store values of dtype {self.dtype}")
        self._attributes = attributes
        self._store, self._base = store_and_path(resolve(target, storage_options), path)
        refuse_v3_in_v2(self._store, self._base)
        exists = group_exists(self._store, self._base)
        if exists and not overwrite:
            raise FileExistsError(f"{self._base or 'the store root'} already exists; pass overwrite=True to replace it")
        local = local_dir(self._store, self._base)
        self._stage = exists and local is not None
        self._wstore: Store
        self._wstore, self._path = staging(self._store, self._base) if self._stage else (native(self._store), self._base)
        self._created_fresh = not exists
        chunk = DEFAULT_CHUNK if chunks is None else int(chunks)
        shard = DEFAULT_SHARD if shards == "default" else shards
        self._index_dtype = indices_dtype(self.n_minor, index_dtype)
        self._group = zarr.open_group(store=self._wstore, path=self._path or None, mode="w", zarr_format=3)
        self._compressors = compressors
        # data and indices are created empty (their length is set by close()); chunks and shards
        # keep their full size.
        names = ARRAY_NAMES[layout]
        self._data = make_array(self._group, names[0], 0, self.dtype, chunk, shard, compressors, fit=False)
        self._indices = make_array(self._group, names[1], 0, self._index_dtype, chunk, shard, compressors, fit=False)
        self._rust = rust_store(self._wstore)
        self._threads = Settings.from_config().threads
        self._writer = _lib.CsrWriter(
            array_json(self._data),
            key_prefix(self._data),
            array_json(self._indices),
            key_prefix(self._indices),
            self.n_minor,
            np.zeros(1, dtype=np.int64),
            threads=self._threads,
        )
        self._closed = False
        self.result: CsrArray | None = None
        self._bar: Any = None
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

    def append(self, block: MatrixLike) -> None:
        """Append a block of rows (columns for CSC): any scipy.sparse matrix or array with
        ``n_cols`` columns (``n_cols`` rows for CSC), or a dense 2-d array."""
        if self._closed:
            raise ValueError("the writer is closed")
        m = as_compressed(block, self.format)
        minor = m.shape[1] if self.format == "csr" else m.shape[0]
        if minor != self.n_minor:
            axis = "columns" if self.format == "csr" else "rows"
            raise ValueError(f"block has {minor} {axis}; the matrix has {self.n_minor}")
        if not np.can_cast(m.dtype, self.dtype, casting="same_kind"):
            raise TypeError(f"cannot store {m.dtype} values in a {self.dtype} matrix")
        data = np.ascontiguousarray(m.data, dtype=self.dtype)
        self._writer.append(self._rust, np.ascontiguousarray(m.indptr), np.ascontiguousarray(m.indices), data)
        if self._bar is not None:
            self._bar.update(len(m.indptr) - 1)

    def extend(self, blocks: Iterable[MatrixLike]) -> None:
        """Append every block of an iterable."""
        for b in blocks:
            self.append(b)

    def close(self) -> CsrArray:
        """Write what is pending, the index pointer and the metadata; returns the stored matrix."""
        if self._closed:
            if self.result is None:
                raise ValueError("the writer was aborted")
            return self.result
        try:
            ptr = self._writer.finish(self._rust)
            nnz = int(ptr[-1])
            self._data.resize((nnz,))
            self._indices.resize((nnz,))
            indptr = make_array(self._group, ARRAY_NAMES[self.layout][2], len(ptr), np.int64, INDPTR_CHUNK, INDPTR_SHARD, self._compressors)
            _lib.write_array(self._rust, array_json(indptr), key_prefix(indptr), 0, ptr, threads=self._threads)
            rows = len(ptr) - 1
            shape = (rows, self.n_minor) if self.format == "csr" else (self.n_minor, rows)
            attrs = {**(self._attributes or {}), **layout_attrs(self.layout, self.format, shape, nnz, (self.dtype, self._index_dtype, np.int64))}
            self._group.attrs.update(attrs)
            if self._stage:
                swap_in(self._store, self._base, self._wstore, self._path)
            else:
                reconsolidate(self._store, force=not self._base)
                written = local_dir(self._store, self._base)
                if written is not None and durable():
                    fsync_tree(written)
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
            remove(self._wstore, self._path)

    def __enter__(self) -> CsrWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
