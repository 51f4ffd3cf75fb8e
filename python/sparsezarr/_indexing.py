"""Indexing keys, normalised in one place for every array type of the package.

* N-d orthogonal keys (:class:`~sparsezarr.SparseArray` reads, :meth:`VirtualArray.read
  <sparsezarr.VirtualArray.read>` and writes): each dimension takes an integer (the dimension is
  dropped), a slice (any step) or a 1-d integer or boolean array, independently. :func:`orthogonal`
  turns a key into one :data:`Selection` per dimension, the form the Rust engines take.
* 2-d keys of compressed matrices (:class:`~sparsezarr.CsrArray`, CSR/CSC views): an integer keeps
  its axis (a 1 x n result, as scipy.sparse matrices do); :func:`split_2d`, :func:`major_selection`
  and :func:`minor_selection` turn a key into the row (major) and column (minor) selections of the
  gather.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import EllipsisType
from typing import TypeAlias

import numpy as np
import numpy.typing as npt

#: What one dimension of a key may be: an integer, a slice, ``...``, ``None`` (views only), or an
#: integer or boolean array (or anything ``numpy.asarray`` turns into one).
AxisKey: TypeAlias = int | np.integer | slice | EllipsisType | npt.ArrayLike | None
#: A whole key: one :data:`AxisKey` or a tuple of them.
Key: TypeAlias = AxisKey | tuple[AxisKey, ...]
#: One dimension of a normalised key: ``(start, step, count)`` for an integer or a slice with a
#: positive step, else the selected positions (non-negative int64, any order, repeats allowed).
Selection: TypeAlias = tuple[int, int, int] | npt.NDArray[np.int64]
Positions: TypeAlias = npt.NDArray[np.int64]

NO_NEWAXIS = "None (np.newaxis) adds a dimension, which a read or write cannot do"


def expand(key: Key, ndim: int, *, newaxis: bool = False) -> list[AxisKey]:
    """``key`` as a list with one item per dimension: ``...`` expanded and the trailing dimensions
    it does not name filled with full slices. With ``newaxis``, ``None`` items are kept (they
    name no dimension); otherwise they raise ``IndexError``."""
    items: list[AxisKey] = list(key) if isinstance(key, tuple) else [key]
    if not newaxis and any(k is None for k in items):
        raise IndexError(NO_NEWAXIS)
    n_ell = sum(1 for k in items if k is Ellipsis)
    if n_ell > 1:
        raise IndexError("an index can only have a single ellipsis ('...')")
    real = sum(1 for k in items if k is not None and k is not Ellipsis)
    if real > ndim:
        raise IndexError(f"too many indices: {ndim} dimensions, {real} indexed")
    fill: list[AxisKey] = [slice(None)] * (ndim - real)
    if n_ell:
        i = next(i for i, k in enumerate(items) if k is Ellipsis)
        items[i : i + 1] = fill
    else:
        items += fill
    return items


def int_index(k: int | np.integer, n: int, d: int) -> int:
    """An integer index of dimension ``d`` (of length ``n``), negative counting from the end."""
    i = int(k)
    if not -n <= i < n:
        raise IndexError(f"index {i} is out of bounds for dimension {d} of length {n}")
    return i + n if i < 0 else i


def positions(k: npt.ArrayLike, n: int, d: int, *, ravel: bool = False) -> Positions:
    """An integer or boolean array key of dimension ``d`` (of length ``n``) as non-negative int64
    positions. A boolean mask must have shape ``(n,)``; integer arrays must be 1-d (``ravel``:
    any shape, flattened); an empty array of any type selects nothing."""
    a = np.asarray(k)
    if a.dtype == bool:
        if a.shape != (n,):
            raise IndexError(f"boolean index of shape {a.shape} does not match dimension {d} of length {n}")
        return np.flatnonzero(a).astype(np.int64, copy=False)
    if ravel:
        a = a.ravel()
    if a.ndim != 1 or (a.size and not np.issubdtype(a.dtype, np.integer)):
        raise IndexError(
            f"index for dimension {d} must be an integer, a slice or a 1-d array of integers or booleans, not {a.dtype} of shape {a.shape}"
        )
    a = a.astype(np.int64, copy=False)
    if a.size:
        bad = (a < -n) | (a >= n)
        if bad.any():
            raise IndexError(f"index {int(a[np.argmax(bad)])} is out of bounds for dimension {d} of length {n}")
    return np.where(a < 0, a + n, a)


def slice_selection(k: slice, n: int) -> Selection:
    """A slice of a dimension of length ``n``: ``(start, step, count)`` for a positive step (start
    0 when it selects nothing), else the positions in order."""
    r = range(*k.indices(n))
    if r.step > 0:
        return (r.start if len(r) else 0, r.step, len(r))
    return np.arange(r.start, r.stop, r.step, dtype=np.int64)


def orthogonal(key: Key, shape: Sequence[int], *, newaxis_error: str = NO_NEWAXIS) -> tuple[list[Selection], list[bool]]:
    """One :data:`Selection` per dimension of an orthogonal key, and which dimensions the result
    keeps (integers drop theirs)."""
    items = expand(key, len(shape), newaxis=True)
    if any(k is None for k in items):
        raise IndexError(newaxis_error)
    sels: list[Selection] = []
    keep: list[bool] = []
    for d, (k, n) in enumerate(zip(items, shape, strict=True)):
        if isinstance(k, slice):
            sels.append(slice_selection(k, n))
            keep.append(True)
        elif isinstance(k, int | np.integer):
            sels.append((int_index(k, n, d), 1, 1))
            keep.append(False)
        else:
            sels.append(positions(k, n, d))
            keep.append(True)
    return sels, keep


def selection_len(s: Selection) -> int:
    """The number of positions a :data:`Selection` selects."""
    return int(s[2]) if isinstance(s, tuple) else len(s)


# ------------------------------------------------------------------------------------------------
# Compressed (CSR / CSC) matrices
# ------------------------------------------------------------------------------------------------


def split_2d(key: Key) -> tuple[AxisKey, AxisKey]:
    """The row and column parts of a matrix key (missing parts: everything)."""
    if isinstance(key, tuple):
        if len(key) == 0:
            return slice(None), slice(None)
        if len(key) == 1:
            return key[0], slice(None)
        if len(key) == 2:
            return key[0], key[1]
        raise IndexError(f"a matrix takes at most 2 indices, got {len(key)}")
    if key is Ellipsis:
        return slice(None), slice(None)
    return key, slice(None)


def major_selection(key: AxisKey, n: int, d: int) -> tuple[int, int] | Positions:
    """The gathered rows (columns for CSC; dimension ``d`` of length ``n``): ``(start, stop)`` for
    a contiguous range (an integer is the range of one), else int64 positions."""
    if key is Ellipsis:
        key = slice(None)
    if isinstance(key, slice):
        start, stop, step = key.indices(n)
        if step == 1:
            return (start, max(start, stop))
        return np.arange(start, stop, step, dtype=np.int64)
    if isinstance(key, int | np.integer):
        i = int_index(key, n, d)
        return (i, i + 1)
    if key is None:
        raise IndexError(NO_NEWAXIS)
    return np.ascontiguousarray(positions(key, n, d, ravel=True))


def minor_selection(key: AxisKey, n: int, d: int) -> Positions | None:
    """The selected columns (rows for CSC; dimension ``d`` of length ``n``): None for all of them,
    else int64 positions."""
    if key is Ellipsis or (isinstance(key, slice) and key == slice(None)):
        return None
    if isinstance(key, slice):
        return np.arange(*key.indices(n), dtype=np.int64)
    if isinstance(key, int | np.integer):
        return np.array([int_index(key, n, d)], dtype=np.int64)
    if key is None:
        raise IndexError(NO_NEWAXIS)
    return positions(key, n, d, ravel=True)
