"""Reading stored CSR/CSC matrices: :class:`CsrArray` (random row or column gathers in Rust) and
the one assembly of gathered pieces into scipy.sparse matrices, which CSR/CSC virtual arrays
share (:func:`read_compressed`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import partial
from typing import TYPE_CHECKING, Any, Literal, TypeAlias, overload

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp
import zarr

from sparsezarr import _lib
from sparsezarr._commit import complete, recover
from sparsezarr._handles import StoreRef, new_token, pipeline_config, restore
from sparsezarr._indexing import Key, Positions, major_selection, minor_selection, split_2d
from sparsezarr._settings import Settings
from sparsezarr._stores import array_json, key_prefix, open_group, resolve, rust_store
from sparsezarr.csr._layout import Format, Layout, detect, members
from sparsezarr.errors import MetadataError

if TYPE_CHECKING:
    from sparse import GCXS

    from sparsezarr.csr._arrays import Target

#: The kind of matrix a read returns: a scipy.sparse ``csr_array``/``csc_array`` (``"array"``),
#: ``csr_matrix``/``csc_matrix`` (``"matrix"``) or a pydata ``sparse.GCXS`` (``"gcxs"``).
Output = Literal["array", "matrix", "gcxs"]
#: What a read returns (which of them: see :data:`Output`).
CompressedMatrix: TypeAlias = "sp.csr_array | sp.csc_array | sp.csr_matrix | sp.csc_matrix | GCXS"
#: A gather as the Rust readers run it: ``(values as bytes, indices, indptr, nnz)`` of rows
#: ``start..stop`` or of the positions ``rows``, columns filtered through ``lut``.
Gather: TypeAlias = Callable[..., tuple[npt.NDArray[np.uint8], npt.NDArray[Any], npt.NDArray[Any], int]]


def _minor_lut(sel: Positions | None, n: int) -> tuple[Positions | None, Positions | None]:
    """A lookup table for the Rust filter (``lut[j]`` = new position or -1), or, for selections
    with repeats (which a table cannot express), ``(None, sel)``: scipy applies them afterwards."""
    if sel is None:
        return None, None
    if len(np.unique(sel)) != len(sel):
        return None, sel
    lut = np.full(n, -1, dtype=np.int64)
    lut[sel] = np.arange(len(sel), dtype=np.int64)
    return lut, None


def gather_major(
    gather: Gather, major: tuple[int, int] | Positions, **kwargs: Any
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[Any], npt.NDArray[Any], int]:
    """Run ``gather`` for a contiguous range ``(start, stop)`` or for positions."""
    if isinstance(major, tuple):
        return gather(start=major[0], stop=major[1], **kwargs)
    return gather(rows=major, **kwargs)


def read_compressed(gather: Gather, fmt: Format, shape: tuple[int, int], dtype: np.dtype[Any], key: Key, output: Output) -> CompressedMatrix:
    """Read ``key`` of a CSR (CSC) matrix of ``shape`` whose rows (columns) ``gather`` fetches:
    the key is split into a major and a minor selection, the major one is gathered in Rust with the
    minor one applied as a lookup table (or by scipy afterwards when it repeats positions), and the
    pieces become a matrix of kind ``output``."""
    rows, cols = split_2d(key)
    major_axis = 0 if fmt == "csr" else 1
    n_major, n_minor = shape[major_axis], shape[1 - major_axis]
    major_key, minor_key = (rows, cols) if fmt == "csr" else (cols, rows)
    major = major_selection(major_key, n_major, major_axis)
    minor = minor_selection(minor_key, n_minor, 1 - major_axis)
    lut, fix = _minor_lut(minor, n_minor)
    # Outputs of 4 MiB and more ask for transparent huge pages, as numpy does for its arrays: one
    # page fault per 2 MiB instead of per 4 KiB (a 10,000-row slice: 143 -> 103 ms; the full
    # 1.1 GB matrix: 1.43 -> 0.99 s, BENCHMARKS.md section 12). SPARSEZARR_HUGE_PAGES=0 turns it off.
    data, indices, indptr, _ = gather_major(gather, major, lut=lut, huge_pages=True)
    n_out = major[1] - major[0] if isinstance(major, tuple) else len(major)
    values = np.frombuffer(memoryview(data), dtype=dtype)
    m_out = n_minor if minor is None or fix is not None else len(minor)
    m: sp.csr_array | sp.csc_array
    if fmt == "csr":
        m = sp.csr_array((values, indices, indptr), shape=(n_out, m_out))
        if fix is not None:
            m = m[:, fix]
    else:
        m = sp.csc_array((values, indices, indptr), shape=(m_out, n_out))
        if fix is not None:
            m = m[fix, :]
    return as_output(m, output)


@overload
def as_output(m: sp.csr_array | sp.csc_array, output: Literal["array"]) -> sp.csr_array | sp.csc_array: ...
@overload
def as_output(m: sp.csr_array | sp.csc_array, output: Literal["matrix"]) -> sp.csr_matrix | sp.csc_matrix: ...
@overload
def as_output(m: sp.csr_array | sp.csc_array, output: Literal["gcxs"]) -> GCXS: ...
@overload
def as_output(m: sp.csr_array | sp.csc_array, output: Output) -> CompressedMatrix: ...
def as_output(m: sp.csr_array | sp.csc_array, output: Output) -> CompressedMatrix:
    """A gathered matrix as the kind of matrix ``output`` asks for."""
    if output == "array":
        return m
    if output == "matrix":
        return sp.csr_matrix(m) if m.format == "csr" else sp.csc_matrix(m)
    if output == "gcxs":
        import sparse

        return sparse.GCXS.from_scipy_sparse(m)
    raise ValueError(f"output must be 'array', 'matrix' or 'gcxs', not {output!r}")


def _reopen_group(group: zarr.Group) -> zarr.Group:
    """The group opened again from its own metadata documents (after a commit was completed)."""
    store = group.store_path.store
    return zarr.open_group(store=store, path=group.store_path.path or None, mode="r" if store.read_only else "r+", use_consolidated=False)


def _check_lengths(group: zarr.Group, lay: Any, data: zarr.Array, indices: zarr.Array, indptr: zarr.Array) -> None:
    """The lengths that the metadata documents must agree on (indptr with the shape, data with
    indices)."""
    major = lay.shape[0] if lay.format == "csr" else lay.shape[1]
    if indptr.shape[0] != major + 1:
        raise MetadataError(
            f"{group.path or '/'}: indptr has {indptr.shape[0]} values; a {lay.format.upper()} matrix of shape {lay.shape} needs {major + 1}"
        )
    if data.shape != indices.shape:
        raise MetadataError(f"{group.path or '/'}: data has {data.shape[0]} values but indices {indices.shape[0]}")


class CsrArray:
    """A stored CSR (or CSC) matrix, read by rows (columns for CSC).

    ``x[rows]`` and ``x[rows, cols]`` accept integers, slices (any step), integer arrays (any
    order, repeats allowed) and boolean masks on each axis, and return a ``scipy.sparse``
    ``csr_array`` (``csc_array`` for CSC stores), a ``csr_matrix`` with ``output="matrix"`` or a
    ``sparse.GCXS`` with ``output="gcxs"``. An integer keeps its axis (a 1 x n result), as
    scipy.sparse matrices do. The gather runs in Rust with the GIL released; ``indptr`` is read
    once, when the store is opened.

    A ``CsrArray`` pickles to a small description (its store, path and options) and reopens on
    the other side, once per process (see ``sparsezarr._handles``); :meth:`to_dask` makes a lazy
    dask array of it.
    """

    def __init__(self, group: zarr.Group, *, output: Output = "array") -> None:
        self._token = new_token()
        self._config = pipeline_config()
        store, path = group.store_path.store, group.store_path.path
        # A write that a killed writer committed but left unfinished is finished first (see
        # sparsezarr._commit): in a local directory whenever its journal is there, elsewhere when
        # the documents disagree.
        if recover(store, path):
            group = _reopen_group(group)
        try:
            lay = detect(group)
            data, indices, indptr = members(group, lay.layout)
            _check_lengths(group, lay, data, indices, indptr)
        except MetadataError:
            if not complete(store, path):
                raise
            group = _reopen_group(group)
            lay = detect(group)
            data, indices, indptr = members(group, lay.layout)
        self.group = group
        self.layout: Layout = lay.layout
        self.format: Format = lay.format
        self._shape = lay.shape
        self.output: Output = output
        self._dtype = np.dtype(data.dtype).newbyteorder("=")
        settings = Settings.from_config()
        self._threads = settings.threads
        store = group.store_path.store
        self._store = store
        self._rust = rust_store(store)
        minor = self._shape[1] if self.format == "csr" else self._shape[0]
        if not np.issubdtype(indices.dtype, np.integer) or not np.issubdtype(indptr.dtype, np.integer):
            raise MetadataError(f"{group.path or '/'}: indices and indptr must hold integers ({indices.dtype}, {indptr.dtype})")
        ptr_bytes = _lib.read_array(
            self._rust, array_json(indptr), key_prefix(indptr), threads=self._threads, validate_checksums=settings.validate_checksums
        )
        ptr = np.frombuffer(memoryview(ptr_bytes), dtype=np.dtype(indptr.dtype).newbyteorder("="))
        self._reader = _lib.CsrReader(
            array_json(data),
            key_prefix(data),
            array_json(indices),
            key_prefix(indices),
            np.ascontiguousarray(ptr),
            minor,
            threads=self._threads,
            validate_checksums=settings.validate_checksums,
        )

    # -- properties -------------------------------------------------------------------------

    @property
    def shape(self) -> tuple[int, int]:
        return self._shape

    @property
    def dtype(self) -> np.dtype[Any]:
        return self._dtype

    @property
    def nnz(self) -> int:
        return int(self._reader.nnz)

    @property
    def indptr(self) -> npt.NDArray[np.int64]:
        """The index pointer (int64), read once when the store was opened."""
        return self._reader.indptr()

    def __len__(self) -> int:
        return self._shape[0]

    def __repr__(self) -> str:
        where = f"{self._store}{'/' + self.group.path if self.group.path else ''}"
        return f"<sparsezarr.CsrArray {self.format.upper()} ({self.layout} layout) shape={self.shape} dtype={self.dtype} nnz={self.nnz} at {where}>"

    def __reduce__(self) -> tuple[Any, ...]:
        return (_reopen, (StoreRef(self._store), self.group.path, self.output, self._token, self._config))

    def __dask_tokenize__(self) -> Any:
        return ("sparsezarr.CsrArray", self._token, self.output)

    def to_dask(
        self,
        chunks: int | tuple[int, ...] | Literal["auto"] = "auto",
        *,
        output: Literal["matrix", "array"] = "matrix",
        block_values: int | None = None,
    ) -> Any:
        """A lazy dask array of this matrix, in blocks of rows (columns for CSC) holding
        ``scipy.sparse`` ``csr_matrix`` chunks (``csc_matrix`` for CSC; ``*_array`` with
        ``output="array"``), with a meta of the same type (what scanpy dispatches on).

        ``chunks`` is a number of rows per block, a tuple of block sizes, or ``"auto"``: blocks cut
        from the index pointer so that each holds about ``block_values`` stored values (default
        :data:`sparsezarr.dask.DEFAULT_BLOCK_VALUES`). Each task reads its rows through the Rust
        gather; the graph holds only this handle's small description and the block bounds."""
        from sparsezarr.dask import compressed_to_dask

        return compressed_to_dask(self, chunks, output=output, block_values=block_values)

    # -- reading ----------------------------------------------------------------------------

    def _gather(self) -> Gather:
        return partial(self._reader.gather, self._rust)

    def __getitem__(self, key: Key) -> CompressedMatrix:
        return self.read(key)

    @overload
    def read(self, key: Key = ..., *, output: Literal["array"]) -> sp.csr_array | sp.csc_array: ...
    @overload
    def read(self, key: Key = ..., *, output: Literal["matrix"]) -> sp.csr_matrix | sp.csc_matrix: ...
    @overload
    def read(self, key: Key = ..., *, output: Literal["gcxs"]) -> GCXS: ...
    @overload
    def read(self, key: Key = ..., *, output: None = None) -> CompressedMatrix: ...
    def read(self, key: Key = slice(None), *, output: Output | None = None) -> CompressedMatrix:
        """Read a selection (see the class docstring); ``output`` overrides the default kind."""
        return read_compressed(self._gather(), self.format, self._shape, self._dtype, key, output or self.output)

    def read_parts(self, rows: Key) -> Rows:
        """Gather ``rows`` (any order) into one buffer and return it as :class:`Rows`, from which
        consecutive ranges of the gathered rows are taken as matrices without copying (the
        minibatch loader's path)."""
        major_axis = 0 if self.format == "csr" else 1
        major = major_selection(rows, self._shape[major_axis], major_axis)
        data, indices, indptr, _ = gather_major(self._gather(), major, huge_pages=True)
        return Rows(data, indices, indptr, self._dtype, self._shape[1 - major_axis], self.format)

    @overload
    def to_memory(self, *, output: Literal["array"]) -> sp.csr_array | sp.csc_array: ...
    @overload
    def to_memory(self, *, output: Literal["matrix"]) -> sp.csr_matrix | sp.csc_matrix: ...
    @overload
    def to_memory(self, *, output: Literal["gcxs"]) -> GCXS: ...
    @overload
    def to_memory(self, *, output: None = None) -> CompressedMatrix: ...
    def to_memory(self, *, output: Output | None = None) -> CompressedMatrix:
        """The whole matrix."""
        return self.read(slice(None), output=output)

    def iter_blocks(self, block_rows: int = 65536) -> Iterator[tuple[int, CompressedMatrix]]:
        """``(start, block)`` for consecutive blocks of ``block_rows`` rows (columns for CSC)."""
        n = self._shape[0] if self.format == "csr" else self._shape[1]
        for a in range(0, n, block_rows):
            b = min(n, a + block_rows)
            yield a, (self.read(slice(a, b)) if self.format == "csr" else self.read((slice(None), slice(a, b))))


class Rows:
    """Gathered rows (columns for CSC) in one buffer; :meth:`rows` cuts matrices out of it without
    copying the values or indices."""

    def __init__(
        self, data: npt.NDArray[np.uint8], indices: npt.NDArray[Any], indptr: npt.NDArray[Any], dtype: np.dtype[Any], n_minor: int, fmt: Format
    ) -> None:
        self._data = memoryview(data)
        self._indices = memoryview(indices).cast("B")
        self._isize = indices.dtype.itemsize
        self._idtype = indices.dtype
        self.indptr = indptr
        self.dtype = dtype
        self.n_minor = n_minor
        self.format = fmt

    def __len__(self) -> int:
        return len(self.indptr) - 1

    def rows(self, a: int, b: int) -> sp.csr_array | sp.csc_array:
        """Gathered rows ``a..b`` as a matrix (values and indices are views of the buffer).

        The views are made with ``np.frombuffer`` over memoryview slices, so their base is not the
        whole buffer (scipy would copy a view of a much larger array)."""
        s, e = int(self.indptr[a]), int(self.indptr[b])
        es = self.dtype.itemsize
        data = np.frombuffer(self._data[s * es : e * es], dtype=self.dtype)
        indices = np.frombuffer(self._indices[s * self._isize : e * self._isize], dtype=self._idtype)
        ptr = self.indptr[a : b + 1] - self.indptr[a]
        if self.format == "csr":
            return sp.csr_array((data, indices, ptr), shape=(b - a, self.n_minor))
        return sp.csc_array((data, indices, ptr), shape=(self.n_minor, b - a))


def _reopen(ref: StoreRef, path: str, output: Output, token: str, config: dict[str, Any]) -> CsrArray:
    """A pickled :class:`CsrArray` on the other side: reopened once per process."""
    return restore(token, config, lambda: CsrArray(open_group(ref.store, path, mode="r"), output=output))


def open_csr(target: Target, *, path: str = "", output: Output = "array", storage_options: dict[str, Any] | None = None) -> CsrArray:
    """Open a stored CSR matrix (a path, store or group; ``path`` inside it), written by
    sparsezarr or anndata, zarr v2 or v3, in the anndata or binsparse layout."""
    x = CsrArray(open_group(resolve(target, storage_options, read_only=True), path, mode="r"), output=output)
    if x.format != "csr":
        raise MetadataError(f"{x.group.path or '/'} holds a CSC matrix; use open_csc")
    return x


def open_csc(target: Target, *, path: str = "", output: Output = "array", storage_options: dict[str, Any] | None = None) -> CsrArray:
    """Open a stored CSC matrix (see :func:`open_csr`); it is read by columns."""
    x = CsrArray(open_group(resolve(target, storage_options, read_only=True), path, mode="r"), output=output)
    if x.format != "csc":
        raise MetadataError(f"{x.group.path or '/'} holds a CSR matrix; use open_csr")
    return x
