"""Single-cell stores: compressed sparse matrices in the anndata on-disk layout (or binsparse).

A CSR (or CSC) matrix is a group holding three one-dimensional arrays: ``data`` (the values),
``indices`` (column of each value; row for CSC) and ``indptr`` (where each row starts), with the
group attributes ``encoding-type`` (``"csr_matrix"`` / ``"csc_matrix"``), ``encoding-version``
(``"0.1.0"``) and ``shape``. This is what anndata writes for ``X`` and layers, so what these
functions write, anndata reads unmodified (``anndata.read_zarr``, ``anndata.io.sparse_dataset``),
and :func:`open_csr` reads stores written by anndata (zarr v2 or v3, any chunking, sharded or not).

* :func:`write_csr` / :func:`write_csc`: a whole scipy matrix, encoded and stored concurrently in
  Rust (``_write.py``).
* :class:`CsrWriter`: a stream of row blocks (total size unknown), memory bounded by one shard
  (``_stream.py``).
* :func:`append_rows`: new rows at the end of an existing store, without rewriting it
  (``_append.py``).
* :func:`open_csr` / :func:`open_csc`: random row (column) gathers: the requested rows are mapped
  to element ranges with the cached ``indptr``, grouped by (inner) chunk, each chunk is fetched and
  decoded once, and the pieces are copied into preallocated outputs, in Rust with the GIL released
  (``_read.py``).

The layouts (names, detection, attributes) are in ``_layout.py``; what the writers share (inputs,
stored types, member arrays) in ``_arrays.py``. The binsparse layout (``layout="binsparse"``:
arrays ``pointers_to_1``, ``indices_1``, ``values`` and a ``binsparse`` descriptor attribute, as
the ``binsparse`` package writes it) is written on request and read like the anndata layout.
"""

from __future__ import annotations

from sparsezarr.csr._append import append_rows
from sparsezarr.csr._arrays import Compressors, IndexDType, MatrixLike, Shards, Target
from sparsezarr.csr._layout import (
    ARRAY_NAMES,
    BINSPARSE_VERSION,
    DEFAULT_CHUNK,
    DEFAULT_SHARD,
    ENCODING_VERSION,
    INDPTR_CHUNK,
    INDPTR_SHARD,
    Format,
    Layout,
    default_compressors,
)
from sparsezarr.csr._read import CompressedMatrix, CsrArray, Output, Rows, open_csc, open_csr
from sparsezarr.csr._stream import CsrWriter
from sparsezarr.csr._write import write_csc, write_csr

__all__ = [
    "ARRAY_NAMES",
    "BINSPARSE_VERSION",
    "DEFAULT_CHUNK",
    "DEFAULT_SHARD",
    "ENCODING_VERSION",
    "INDPTR_CHUNK",
    "INDPTR_SHARD",
    "CompressedMatrix",
    "Compressors",
    "CsrArray",
    "CsrWriter",
    "Format",
    "IndexDType",
    "Layout",
    "MatrixLike",
    "Output",
    "Rows",
    "Shards",
    "Target",
    "append_rows",
    "default_compressors",
    "open_csc",
    "open_csr",
    "write_csc",
    "write_csr",
]
