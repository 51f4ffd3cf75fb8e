"""sparsezarr: fast Zarr I/O from a Rust core.

* :class:`sparsezarr.Pipeline` is a zarr-python codec pipeline running on the Rust engine;
  enable it with ``zarr.config.set({"codec_pipeline.path": "sparsezarr.Pipeline"})``.
"""

from __future__ import annotations

from sparsezarr import errors
from sparsezarr._lib import version as _version
from sparsezarr.pipeline import Pipeline

__version__: str = _version()

__all__ = ["Pipeline", "__version__", "errors"]
