"""sparsezarr: fast Zarr I/O from a Rust core.

* :class:`sparsezarr.Pipeline` is a zarr-python codec pipeline running on the Rust engine;
  enable it with ``zarr.config.set({"codec_pipeline.path": "sparsezarr.Pipeline"})``.
* :func:`create_sparse` / :func:`open_sparse` / :func:`from_scipy`: chunked, sharded N-d sparse
  arrays (the ``sparsezarr.sparse`` codec), read and written as ``sparse.COO`` and ``scipy.sparse``.
"""

from __future__ import annotations

from sparsezarr import errors
from sparsezarr._lib import version as _version
from sparsezarr.codec import SparseCodec
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

__version__: str = _version()

__all__ = [
    "Pipeline",
    "SparseArray",
    "SparseCodec",
    "SparseInfo",
    "__version__",
    "create_sparse",
    "errors",
    "from_numpy",
    "from_scipy",
    "from_sparse",
    "open_sparse",
    "save_sparse",
]
