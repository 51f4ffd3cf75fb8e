"""Appends: new rows (columns for CSC) at the end of a stored matrix, without rewriting it."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from typing import Any, cast

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp
import zarr
from zarr.abc.codec import BytesBytesCodec

from sparsezarr import _lib
from sparsezarr._commit import commit, complete, consolidated_update, get_json, group_lock
from sparsezarr._settings import Settings
from sparsezarr._stores import array_json, key_prefix, local_dir, open_group, replace_dir, resolve, rust_store
from sparsezarr.csr._arrays import MatrixLike, Target, as_compressed, make_array, remove
from sparsezarr.csr._layout import INDPTR_CHUNK, INDPTR_SHARD, binsparse_header, detect, members
from sparsezarr.csr._read import CsrArray
from sparsezarr.dask import is_dask_array
from sparsezarr.errors import MetadataError


def _is_one_matrix(x: object) -> bool:
    return sp.issparse(x) or isinstance(x, np.ndarray) or hasattr(x, "to_scipy_sparse")


def append_rows(
    target: Target,
    x: MatrixLike | Iterable[MatrixLike],
    *,
    path: str = "",
    progress: bool = False,
    storage_options: dict[str, Any] | None = None,
) -> CsrArray:
    """Append rows (columns for a CSC store) at the end of a stored matrix without rewriting it.

    ``x`` is one matrix (any type :func:`write_csr` takes), an iterable of blocks, or a dask
    array (its blocks computed one after the other, on the scheduler in force). The new values
    are stored first (the last, partly filled shard of ``data`` and ``indices`` is merged with
    them; each stored object is replaced atomically), then ``indptr``, then the metadata: until
    the metadata is updated, readers see the old matrix, unchanged. Works on stores written by
    sparsezarr or by anndata (zarr v3).

    Appends to one group of a local directory are serialized (threads and processes; see
    :func:`append_lock`): concurrent appenders each add all their rows, one after the other.
    """
    found = open_group(resolve(target, storage_options), path, mode="r+")
    store = found.store_path.store
    gpath = found.store_path.path
    with append_lock(store, gpath):
        # An append that a killed writer committed but did not finish is finished first.
        complete(store, gpath)
        # Opened again under the lock: another process may have appended since.
        group = zarr.open_group(store=store, path=gpath or None, mode="r+", use_consolidated=False)
        return _append(group, x, progress)


#: Appends to one group are serialized by the group's lock (see :func:`sparsezarr._commit.group_lock`).
append_lock = group_lock


def _append(group: zarr.Group, x: Any, progress: bool) -> CsrArray:
    lay = detect(group)
    data, indices, indptr = members(group, lay.layout)
    if data.metadata.zarr_format != 3:
        raise MetadataError("appending needs a zarr v3 store (this one is zarr v2; convert it first)")
    store = group.store_path.store
    rust = rust_store(store)
    settings = Settings.from_config()
    minor = lay.shape[1] if lay.format == "csr" else lay.shape[0]
    old_ptr = np.frombuffer(
        memoryview(_lib.read_array(rust, array_json(indptr), key_prefix(indptr), threads=settings.threads)),
        dtype=np.dtype(indptr.dtype).newbyteorder("="),
    )
    if len(old_ptr) == 0:
        raise MetadataError(f"{group.path or '/'}: indptr is empty")
    writer = _lib.CsrWriter(
        array_json(data),
        key_prefix(data),
        array_json(indices),
        key_prefix(indices),
        minor,
        np.ascontiguousarray(old_ptr.astype(np.int64)),
        threads=settings.threads,
    )
    dtype = np.dtype(data.dtype).newbyteorder("=")
    blocks: Iterable[Any]
    if is_dask_array(x):
        # a dask array: its blocks along the major axis, computed one at a time, in order
        major_axis = 0 if lay.format == "csr" else 1
        whole = x.rechunk({1 - major_axis: -1})
        n_blocks = len(whole.chunks[major_axis])
        blocks = (whole.blocks[i if major_axis == 0 else (0, i)].compute() for i in range(n_blocks))
    else:
        blocks = [x] if _is_one_matrix(x) else cast("Iterable[Any]", x)
    bar: Any = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(unit=" rows", desc="appending")
    for b in blocks:
        m = as_compressed(b, lay.format)
        m_minor = m.shape[1] if lay.format == "csr" else m.shape[0]
        if m_minor != minor:
            raise ValueError(f"block has {m_minor} {'columns' if lay.format == 'csr' else 'rows'}; the matrix has {minor}")
        if not np.can_cast(m.dtype, dtype, casting="same_kind"):
            raise TypeError(f"cannot store {m.dtype} values in a {dtype} matrix")
        writer.append(rust, np.ascontiguousarray(m.indptr), np.ascontiguousarray(m.indices), np.ascontiguousarray(m.data, dtype=dtype))
        if bar is not None:
            bar.update(len(m.indptr) - 1)
    if bar is not None:
        bar.close()
    ptr = writer.finish(rust)
    nnz = int(ptr[-1])
    major = len(ptr) - 1
    ptr_dtype = np.dtype(indptr.dtype)
    if nnz > np.iinfo(ptr_dtype).max:
        _widen_indptr(group, indptr, ptr, rust, settings.threads)
        indptr = members(group, lay.layout)[2]
    else:
        # The old values are rewritten unchanged; the new ones follow. The array's metadata is
        # not yet updated, so readers still see the old length.
        start = len(old_ptr) - 1
        new = np.ascontiguousarray(ptr[start:].astype(ptr_dtype.newbyteorder("=")))
        _lib.write_array(rust, _with_length(indptr, len(ptr)), key_prefix(indptr), start, new, threads=settings.threads)
    # Every value is stored; the new metadata is committed as one unit (sparsezarr._commit).
    shape = (major, minor) if lay.format == "csr" else (minor, major)
    attrs = dict(group.attrs)
    if lay.layout == "anndata":
        attrs["shape"] = list(shape)
    else:
        header = binsparse_header(attrs) or {}
        header = {**header, "shape": list(shape), "number_of_stored_values": nnz}
        if isinstance(header.get("data_types"), dict):  # the index pointer may have been widened
            header["data_types"] = {**header["data_types"], indptr.basename: np.dtype(indptr.dtype).name}
        attrs["binsparse"] = {"binsparse": header}
    gpath = group.store_path.path
    docs: dict[str, dict[str, Any]] = {}
    nodes: dict[str, dict[str, Any]] = {}
    for arr, n in ((data, nnz), (indices, nnz), (indptr, len(ptr))):
        doc = json.loads(_with_length(arr, n))
        docs[f"{key_prefix(arr)}zarr.json"] = doc
        nodes[arr.store_path.path] = {"shape": [n], "data_type": doc["data_type"]}
    group_doc = get_json(store, f"{key_prefix(group)}zarr.json") or {}
    docs[f"{key_prefix(group)}zarr.json"] = {**group_doc, "attributes": attrs}
    nodes[gpath] = {"attributes": attrs}
    root = consolidated_update(store, gpath, nodes)
    if root is not None:
        if gpath == "":
            root["attributes"] = attrs
        docs["zarr.json"] = root
    commit(store, gpath, docs)
    return CsrArray(zarr.open_group(store=store, path=gpath or None, mode="r+"))


def _with_length(array: zarr.Array, n: int) -> str:
    """The array's metadata JSON with its length changed (for writing past the current end)."""
    doc = json.loads(array_json(array))
    doc["shape"] = [n]
    return json.dumps(doc)


def _widen_indptr(group: zarr.Group, indptr: zarr.Array, ptr: npt.NDArray[np.int64], rust: _lib.AnyStore, threads: int) -> None:
    """Rewrite ``indptr`` as int64 (the number of values outgrew int32): the new array is written
    beside the old one and swapped in; its length is the old one until the commit."""
    name = indptr.basename
    tmp = f".{name}.sparsezarr-new-{uuid.uuid4().hex[:8]}"
    # a v3 array (checked by append_rows): its compressors are bytes-to-bytes codecs
    compressors = [c for c in indptr.compressors if isinstance(c, BytesBytesCodec)]
    new = make_array(group, tmp, len(ptr), np.int64, INDPTR_CHUNK, INDPTR_SHARD, compressors)
    _lib.write_array(rust, array_json(new), key_prefix(new), 0, np.ascontiguousarray(ptr, dtype=np.int64), threads=threads)
    store = group.store_path.store
    old_dir, new_dir = local_dir(store, indptr.store_path.path), local_dir(store, new.store_path.path)
    if old_dir is None or new_dir is None:
        remove(store, new.store_path.path)
        raise NotImplementedError("widening indptr to int64 is supported in local stores only")
    # Until the commit, the widened array must read as the old one: its old values (int64 reads
    # of int32 values are the same numbers) and the old length.
    doc = json.loads(array_json(new))
    doc["shape"] = [int(indptr.shape[0])]
    (new_dir / "zarr.json").write_text(json.dumps(doc, indent=2))
    replace_dir(old_dir, new_dir)
