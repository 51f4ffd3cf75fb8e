"""Exceptions raised by sparsezarr.

Every error the Rust engine reports arrives as one of these (or as a builtin exception where
Python users expect one: ``IndexError`` for bad selections, ``OSError`` and its subclasses for
storage failures, ``ValueError`` for bad arguments). An exception raised by a zarr-python store
the core reads through reaches the caller as that store raised it.
"""

from __future__ import annotations

from sparsezarr._lib import (
    ConflictError,
    CorruptChunkError,
    EncodeError,
    InternalError,
    MetadataError,
    ReadOnlyError,
    UnsupportedError,
)


class FallbackError(UnsupportedError):
    """Raised in strict mode instead of silently falling back to zarr-python's own pipeline."""


__all__ = [
    "ConflictError",
    "CorruptChunkError",
    "EncodeError",
    "FallbackError",
    "InternalError",
    "MetadataError",
    "ReadOnlyError",
    "UnsupportedError",
]
