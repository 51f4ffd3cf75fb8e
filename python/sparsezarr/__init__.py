"""sparsezarr: fast Zarr I/O from a Rust core.

* :class:`sparsezarr.Pipeline` is a zarr-python codec pipeline running on the Rust engine;
  enable it with ``zarr.config.set({"codec_pipeline.path": "sparsezarr.Pipeline"})``.
* :func:`create_sparse` / :func:`open_sparse` / :func:`from_scipy`: chunked, sharded N-d sparse
  arrays (the ``sparsezarr.sparse`` codec), read and written as ``sparse.COO`` and ``scipy.sparse``.
* :func:`write_csr` / :class:`CsrWriter` / :func:`append_rows` / :func:`open_csr` / :class:`Loader`:
  single-cell stores in the anndata layout (bulk and streaming writes, random row gathers,
  minibatches); :func:`convert` (``sparsezarr convert``) turns .h5ad / 10x / .mtx inputs into them.
* :func:`concat` / :func:`stack` / :func:`open_virtual` / :class:`VirtualArray`: lazy JSON-described
  views over stored arrays (dense, sparse or CSR), read and written through.
* :class:`RustStore`: a zarr-python store (local directory, S3, GCS, Azure, HTTP) whose I/O runs
  in the Rust core.
"""

from __future__ import annotations

from sparsezarr import errors
from sparsezarr._lib import version as _version
from sparsezarr.codec import SparseCodec
from sparsezarr.convert import ConversionReport, convert
from sparsezarr.csr import CsrArray, CsrWriter, append_rows, open_csc, open_csr, write_csc, write_csr
from sparsezarr.loader import Batch, Loader
from sparsezarr.pipeline import Pipeline
from sparsezarr.sparse import (
    SparseArray,
    SparseInfo,
    create_sparse,
    from_numpy,
    from_scipy,
    from_sparse,
    open_sparse,
    save_sparse,
)
from sparsezarr.store import RustStore
from sparsezarr.virtual import VirtualArray, concat, open_virtual, stack

__version__: str = _version()

__all__ = [
    "Batch",
    "ConversionReport",
    "CsrArray",
    "CsrWriter",
    "Loader",
    "Pipeline",
    "RustStore",
    "SparseArray",
    "SparseCodec",
    "SparseInfo",
    "VirtualArray",
    "__version__",
    "append_rows",
    "concat",
    "convert",
    "create_sparse",
    "errors",
    "from_numpy",
    "from_scipy",
    "from_sparse",
    "open_csc",
    "open_csr",
    "open_sparse",
    "open_virtual",
    "save_sparse",
    "stack",
    "write_csc",
    "write_csr",
]
