"""What the three writers (bulk, streaming, append) share: taking their inputs (matrices,
targets), choosing stored types, creating the member arrays, and cleaning up after a failure."""

from __future__ import annotations

import contextlib
import math
import os
import shutil
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Literal, TypeAlias, TypeGuard

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp
import zarr
from zarr.abc.codec import BytesBytesCodec
from zarr.abc.store import Store
from zarr.core.sync import sync
from zarr.storage import LocalStore

from sparsezarr._stores import local_dir
from sparsezarr.csr._layout import Format, default_compressors

if TYPE_CHECKING:
    import sparse as pydata_sparse

#: What the writers take as a matrix: any scipy.sparse array or matrix, a pydata ``sparse`` array
#: or a dense 2-d array (or anything ``numpy.asarray`` turns into one).
MatrixLike: TypeAlias = "sp.sparray | sp.spmatrix | pydata_sparse.SparseArray | npt.ArrayLike"
#: Where a writer writes: a directory path, a zarr store or a group.
Target: TypeAlias = str | os.PathLike[str] | Store | zarr.Group
#: Compressors of ``data`` and ``indices``: ``"default"`` (Blosc zstd level 1, byte shuffle), None
#: or zarr bytes-to-bytes codecs.
Compressors: TypeAlias = Literal["default"] | BytesBytesCodec | Iterable[BytesBytesCodec | dict[str, Any]] | None
#: Shard size of ``data`` and ``indices``: ``"default"``, a number of elements, or None (unsharded).
Shards: TypeAlias = int | Literal["default"] | None
#: The stored type of ``indices``: None (int32 when it fits, else int64), ``"minimal"`` or a type.
IndexDType: TypeAlias = npt.DTypeLike | Literal["minimal"] | None

Compressed: TypeAlias = sp.csr_array | sp.csc_array


def indices_dtype(n: int, choice: IndexDType) -> np.dtype[Any]:
    """Stored type of ``indices`` for ``n`` positions: int32 when it fits (as scipy and anndata),
    else int64; ``"minimal"`` picks the smallest unsigned type (anndata's
    ``write_csr_csc_indices_with_min_possible_dtype``)."""
    if choice is None:
        return np.dtype(np.int32 if n <= np.iinfo(np.int32).max + 1 else np.int64)
    if isinstance(choice, str) and choice == "minimal":
        for t in (np.uint8, np.uint16, np.uint32, np.uint64):
            if n <= np.iinfo(t).max + 1:
                return np.dtype(t)
    dt = np.dtype(choice)
    if not np.issubdtype(dt, np.integer) or n > np.iinfo(dt).max + 1:
        raise ValueError(f"index dtype {dt} cannot index {n} positions")
    return dt


def indptr_dtype(nnz: int) -> np.dtype[Any]:
    """Stored type of ``indptr`` for ``nnz`` values: int32 when it fits, else int64."""
    return np.dtype(np.int32 if nnz <= np.iinfo(np.int32).max else np.int64)


def compressor_list(compressors: Compressors) -> Any:
    """``compressors`` as ``zarr.create_array`` takes them."""
    return default_compressors() if isinstance(compressors, str) and compressors == "default" else compressors


def make_array(
    group: zarr.Group, name: str, n: int, dt: npt.DTypeLike, chunk: int, shard: int | None, compressors: Compressors, *, fit: bool = True
) -> zarr.Array:
    """A 1-d array of ``n`` elements with inner chunks of ``chunk`` elements in shards of ``shard``
    (a multiple of ``chunk``; None or ``shard <= chunk``: unsharded). With ``fit``, chunks and shards
    are shrunk to the array's length (the length is final)."""
    if fit:
        chunk = max(1, min(chunk, n))
        if shard is not None:
            shard = min(shard, math.ceil(max(n, 1) / chunk) * chunk)
    if shard is not None:
        shard = shard // chunk * chunk
    return group.create_array(
        name,
        shape=(n,),
        dtype=dt,
        chunks=(chunk,),
        shards=(shard,) if shard is not None and shard > chunk else None,
        compressors=compressor_list(compressors),
        fill_value=0,
        overwrite=True,
    )


def _is_pydata_sparse(x: object) -> TypeGuard[pydata_sparse.SparseArray]:
    try:
        import sparse as pydata_sparse
    except ImportError:  # pragma: no cover - sparse is a dependency
        return False
    return isinstance(x, pydata_sparse.SparseArray)


def as_compressed(x: MatrixLike, fmt: Format) -> Compressed:
    """``x`` as a scipy ``csr_array`` (``csc_array`` for ``fmt="csc"``), checked to be 2-d."""
    src: sp.sparray | sp.spmatrix | npt.NDArray[Any]
    if isinstance(x, sp.sparray | sp.spmatrix):
        src = x
    elif _is_pydata_sparse(x):
        src = x.to_scipy_sparse()
    else:
        src = np.asarray(x)
        if src.ndim != 2:
            raise ValueError(f"expected a 2-dimensional matrix, got {src.ndim} dimensions")
    m = sp.csr_array(src) if fmt == "csr" else sp.csc_array(src)
    if m.ndim != 2:
        raise ValueError(f"expected a 2-dimensional matrix, got shape {m.shape}")
    return m


def store_and_path(target: Target, path: str) -> tuple[Store, str]:
    """The store and the full path of the group to write (``path`` below ``target``)."""
    if isinstance(target, zarr.Group):
        base = target.store_path.path
        return target.store_path.store, "/".join(p for p in (base, path.strip("/")) if p)
    if isinstance(target, str | os.PathLike):
        return LocalStore(str(target)), path.strip("/")
    return target, path.strip("/")


def group_exists(store: Store, path: str) -> bool:
    """Whether a group is stored at ``path``."""
    try:
        zarr.open_group(store=store, path=path or None, mode="r", use_consolidated=False)
        return True
    except (FileNotFoundError, zarr.errors.GroupNotFoundError, zarr.errors.NodeTypeValidationError, ValueError, KeyError):
        return False


def remove(store: Store, path: str) -> None:
    """Delete everything below ``path`` (best effort, after a failed write)."""
    local = local_dir(store, path)
    if local is not None:
        shutil.rmtree(local, ignore_errors=True)
        return
    with contextlib.suppress(Exception):  # cleanup only: the caller raises the original error
        sync(store.delete_dir(path))
