"""Virtual arrays: concatenated, stacked, sliced and padded views over Zarr arrays, described by a
JSON document (``docs/spec/virtual-arrays.md``), opened lazily, read and written through.

A view composes dense zarr arrays, sparsezarr sparse arrays, anndata CSR/CSC groups or other views
without copying them::

    atlas = sparsezarr.concat([sparsezarr.open_csr(p) for p in sample_paths], axis=0)
    atlas.read(np.arange(0, 100_000, 100))        # rows gathered across samples, in Rust
    atlas.save("atlas_dir", "atlas")               # writes atlas_dir/atlas/virtual.json
    sparsezarr.open_virtual("atlas_dir/atlas")     # no component is touched until read

Basic indexing (integers, slices with any step, ``None``, ``...``) of a view returns a new view;
``view.read(key)`` returns data (numpy for dense views, ``sparse.COO`` for sparse views,
``scipy.sparse`` for CSR/CSC views) and also takes integer arrays and boolean masks (orthogonal
indexing, like ``zarr.Array.oindex``); ``view[key] = value`` writes through to the components.
"""

from __future__ import annotations

import copy
import json
import os
import posixpath
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

import numpy as np
import numpy.typing as npt
import zarr
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync
from zarr.storage import LocalStore

from sparsezarr import _lib
from sparsezarr._commit import swap_in
from sparsezarr._handles import StoreRef, new_token, pipeline_config, restore
from sparsezarr._indexing import Key, Selection, expand, int_index, orthogonal, selection_len
from sparsezarr._remote import store_url
from sparsezarr._settings import Settings
from sparsezarr._stores import is_url, local_dir, resolve, rust_store, staging
from sparsezarr.csr._layout import Format
from sparsezarr.csr._read import CompressedMatrix, CsrArray, Output, read_compressed

if TYPE_CHECKING:
    import sparse as pydata_sparse
    from zarr.storage import StoreLike

    from sparsezarr.sparse import SparseArray, SparseValue

    #: What a view is made of: dense zarr arrays, sparse arrays and CSR/CSC matrices (and views).
    Component: TypeAlias = zarr.Array | SparseArray | CsrArray

__all__ = ["VirtualArray", "concat", "open_virtual", "stack"]

FORMAT_VERSION = 1
DOCUMENT_KEY = "virtual.json"
Storage = Literal["dense", "sparse", "csr", "csc"]


# ------------------------------------------------------------------------------------------------
# Locations
# ------------------------------------------------------------------------------------------------


def _same_store(a: Any, b: Any) -> bool:
    if a is b:
        return True
    return type(a) is LocalStore and type(b) is LocalStore and Path(a.root).resolve() == Path(b.root).resolve()


def _store_of(target: Any, *, mode: str = "r") -> Any:
    """A zarr store from a path or a store."""
    if isinstance(target, str | os.PathLike):
        return LocalStore(str(target), read_only=mode == "r")
    if isinstance(target, zarr.Group):
        return target.store
    return target


def _map_leaves(node: dict[str, Any], rename: Any) -> dict[str, Any]:
    """A copy of a node tree with ``rename(leaf)`` applied to every array leaf named by a path."""
    node = copy.deepcopy(node)

    def walk(n: dict[str, Any]) -> None:
        if n["kind"] == "array" and "path" in n:
            rename(n)
        for c in n.get("components", ()):
            walk(c)
        if "source" in n:
            walk(n["source"])

    walk(node)
    return node


def _key_in_store(dir: str, path: str) -> str:
    """The key of a component at ``path`` relative to ``dir``; refused if it leaves the store."""
    key = posixpath.normpath(posixpath.join(dir, path))
    if key.startswith(".."):
        raise ValueError(f"component path {path!r} escapes the store root")
    return key


def _rebase(node: dict[str, Any], old_dir: str, new_dir: str) -> dict[str, Any]:
    """Rewrite the component paths of a node tree from one document directory to another."""

    def rename(n: dict[str, Any]) -> None:
        n["path"] = posixpath.relpath(_key_in_store(old_dir, n["path"]), new_dir or ".")

    return _map_leaves(node, rename)


def _to_urls(node: dict[str, Any], dir: str, base_url: str) -> dict[str, Any]:
    """Name the components of a node tree (paths relative to ``dir`` of a store) by URLs below
    ``base_url`` (the store's URL)."""

    def rename(n: dict[str, Any]) -> None:
        key = _key_in_store(dir, n.pop("path"))
        n["url"] = base_url if key in ("", ".") else f"{base_url}/{key}"

    return _map_leaves(node, rename)


def _names_root(node: dict[str, Any], dir: str) -> bool:
    """Whether a component of a node tree (paths relative to ``dir``) is the store's root."""
    found = []
    _map_leaves(node, lambda n: found.append(_key_in_store(dir, n["path"]) in ("", ".")))
    return any(found)


def _parent(path: str) -> str:
    path = path.strip("/")
    return path.rsplit("/", 1)[0] if "/" in path else ""


# ------------------------------------------------------------------------------------------------
# Components
# ------------------------------------------------------------------------------------------------


def _v3_dtype(dtype: npt.DTypeLike) -> str:
    dt: np.dtype[Any] = np.dtype(dtype)
    if dt.kind not in "biufc":
        raise TypeError(f"virtual arrays support numeric and boolean data types, not {dt}")
    return dt.newbyteorder("=").name


def _leaf(x: Component) -> tuple[Any, str, dict[str, Any], Storage, Any]:
    """(store, key, node with an absolute key as path, storage, fill value) of a component."""
    from sparsezarr.sparse import SparseArray

    if isinstance(x, SparseArray):
        arr = x.array
        storage: Storage = "sparse"
        fill = arr.fill_value
    elif isinstance(x, CsrArray):
        g = x.group
        node = {"kind": "array", "path": g.path, "shape": list(x.shape), "data_type": _v3_dtype(x.dtype)}
        return g.store, g.path, node, x.format, 0
    elif isinstance(x, zarr.Array):
        arr = x
        from sparsezarr.codec import CODEC_NAME
        from sparsezarr.sparse import _codec_names

        storage = "sparse" if arr.metadata.zarr_format == 3 and CODEC_NAME in _codec_names(arr.metadata.codecs) else "dense"
        fill = arr.fill_value
    else:
        raise TypeError(f"cannot use {type(x).__name__} as a virtual array component (expected a zarr.Array, SparseArray, CsrArray or VirtualArray)")
    store, path = arr.store_path.store, arr.store_path.path
    if not path and type(store) is LocalStore:
        # An array at the root of its own directory: named by its path in the parent directory.
        root = Path(store.root).resolve()
        store, path = LocalStore(str(root.parent), read_only=store.read_only), root.name
    node = {"kind": "array", "path": path, "shape": list(arr.shape), "data_type": _v3_dtype(arr.dtype)}
    return store, path, node, storage, fill


def _fill_json(value: Any, dtype: np.dtype[Any]) -> Any:
    v = np.asarray(value if value is not None else 0, dtype=dtype)[()]
    if dtype.kind == "b":
        return bool(v)
    if dtype.kind in "iu":
        return int(v)
    if dtype.kind == "c":
        return [_float_json(v.real), _float_json(v.imag)]
    return _float_json(v)


def _float_json(v: Any) -> Any:
    f = float(v)
    if np.isnan(f):
        return "NaN"
    if np.isinf(f):
        return "Infinity" if f > 0 else "-Infinity"
    return f


def _combine(parts: Sequence[Component | VirtualArray], kind: str, axis: int) -> VirtualArray:
    if not parts:
        raise ValueError(f"{kind} needs at least one array")
    items: list[tuple[Any, str, dict[str, Any], Storage, Any]] = []
    for p in parts:
        if isinstance(p, VirtualArray):
            items.append((p._store, p._dir, p._doc["source"], p.storage, p.fill_value))
        else:
            store, _, node, storage, fill = _leaf(p)
            items.append((store, "", node, storage, fill))
    store = items[0][0]
    stores = [it[0] for it in items]
    # Views keep the stores mounted for their components.
    mounts: dict[str, Any] = {url: s for p in parts if isinstance(p, VirtualArray) for url, s in p._mounts.items()}
    # A component at the root of its store cannot be named from that root (a view's components
    # lie below its root): such views are rooted above, as views over different stores are.
    at_root = any(_names_root(n, d) for _, d, n, _, _ in items)
    if at_root or not all(_same_store(store, s) for s in stores):
        if all(type(s) is LocalStore for s in stores):
            # Different directories: the view's root is their common ancestor (its parent when a
            # component is that ancestor).
            roots = [Path(s.root).resolve() for s in stores]
            common = Path(os.path.commonpath(roots))
            if any(r == common and _names_root(n, d) for r, (_, d, n, _, _) in zip(roots, items, strict=True)):
                common = common.parent
            store = LocalStore(str(common), read_only=stores[0].read_only)
            items = [
                (store, posixpath.join(str(r.relative_to(common)).replace(os.sep, "/"), d) if str(r.relative_to(common)) != "." else d, n, st, f)
                for r, (_, d, n, st, f) in zip(roots, items, strict=True)
            ]
        else:
            # Components in different stores (one bucket prefix per sample, ...): each is named by
            # the URL of its store, and read through that store (mounted for this view).
            named = []
            for s, d, n, st, f in items:
                url = store_url(s)
                mounts[url] = s
                named.append((store, "", _to_urls(n, d, url), st, f))
            items = named
    storages = {it[3] for it in items}
    if len(storages) != 1:
        raise ValueError(f"cannot combine components of different storage kinds: {sorted(storages)}")
    storage = storages.pop()
    dtypes = {_node_dtype(it[2]) for it in items}
    if len(dtypes) != 1:
        raise TypeError(f"components have different data types {sorted(dtypes)}; cast them first (views do not convert)")
    dtype = dtypes.pop()
    nodes = [_rebase(n, d, "") for _, d, n, _, _ in items]
    fill = items[0][4]
    for it in items[1:]:
        if storage == "sparse" and not _same_fill(it[4], fill):
            raise ValueError(f"sparse components have different fill values ({fill!r}, {it[4]!r})")
    doc = {
        "virtual_array_format": FORMAT_VERSION,
        "shape": [],
        "data_type": dtype,
        "fill_value": _fill_json(fill if storage == "sparse" else 0, np.dtype(dtype)),
        "source": {"kind": kind, "axis": axis, "components": nodes},
    }
    if storage != "dense":
        doc["storage"] = storage
    doc["shape"] = _infer_shape(doc["source"])
    return VirtualArray(doc, store, "", mounts=mounts)


def _same_fill(a: Any, b: Any) -> bool:
    return bool(a == b or (isinstance(a, float) and isinstance(b, float) and np.isnan(a) and np.isnan(b)))


def _node_dtype(node: dict[str, Any]) -> str:
    if node["kind"] == "array":
        return str(node["data_type"])
    if node["kind"] == "fill":
        return "*"
    if node["kind"] == "index":
        return _node_dtype(node["source"])
    kinds = {_node_dtype(c) for c in node["components"]} - {"*"}
    return kinds.pop() if len(kinds) == 1 else "*" if not kinds else "mixed"


def _infer_shape(node: dict[str, Any]) -> list[int]:
    k = node["kind"]
    if k in ("array", "fill"):
        return list(node["shape"])
    if k == "index":
        out = []
        d = 0
        for s in node["selection"]:
            if s == "newaxis":
                out.append(1)
            elif isinstance(s, int):
                d += 1
            else:
                out.append(s["size"])
                d += 1
        if "transpose" in node:
            out = [out[p] for p in node["transpose"]]
        return out
    shapes = [_infer_shape(c) for c in node["components"]]
    axis = node["axis"]
    if k == "concat":
        base = list(shapes[0])
        if not 0 <= axis < len(base):
            raise ValueError(f"axis {axis} is out of range for {len(base)}-dimensional arrays")
        for i, s in enumerate(shapes):
            if len(s) != len(base) or any(a != b for j, (a, b) in enumerate(zip(s, base, strict=True)) if j != axis):
                raise ValueError(f"concat: array {i} has shape {tuple(s)}, which does not match {tuple(base)} except along axis {axis}")
        base[axis] = sum(s[axis] for s in shapes)
        return base
    base = list(shapes[0])
    if not 0 <= axis <= len(base):
        raise ValueError(f"axis {axis} is out of range for stacking {len(base)}-dimensional arrays")
    for i, s in enumerate(shapes):
        if s != base:
            raise ValueError(f"stack: array {i} has shape {tuple(s)}, array 0 {tuple(base)}")
    return [*base[:axis], len(shapes), *base[axis:]]


def concat(arrays: Iterable[Component | VirtualArray], axis: int = 0) -> VirtualArray:
    """A view joining ``arrays`` along ``axis``, like ``numpy.concatenate`` (no data is copied).

    Components may be ``zarr.Array`` (dense), sparsezarr :class:`~sparsezarr.SparseArray`,
    :class:`~sparsezarr.CsrArray` (CSR groups join along rows, CSC along columns) or other views,
    all in one store (or in local directories; the view's root is then their common parent) and
    of one data type. They may differ in chunking, codecs, sharding and zarr version.
    """
    parts = list(arrays)
    if parts and axis < 0:
        axis += _ndim_of(parts[0])
    return _combine(parts, "concat", axis)


def stack(arrays: Iterable[Component | VirtualArray], axis: int = 0) -> VirtualArray:
    """A view stacking equally shaped ``arrays`` along a new ``axis``, like ``numpy.stack``."""
    parts = list(arrays)
    if parts and axis < 0:
        axis += _ndim_of(parts[0]) + 1
    return _combine(parts, "stack", axis)


def _ndim_of(x: Any) -> int:
    return len(x.shape)


# ------------------------------------------------------------------------------------------------
# Opening
# ------------------------------------------------------------------------------------------------


def open_virtual(
    source: Any,
    path: str = "",
    *,
    root: str | os.PathLike[str] | None = None,
    allow: Iterable[str] = (),
    mode: Literal["r", "r+"] = "r",
    storage_options: dict[str, Any] | None = None,
) -> VirtualArray:
    """Open a view without touching any component.

    ``source`` is one of:

    * a directory path holding ``virtual.json`` (a saved view; components resolve against the
      directory that contains it, which is also the root they may not leave);
    * a path to a ``.json`` document (root: the file's directory);
    * a zarr store or group, with ``path`` the view's path in it (root: the store);
    * a JSON string or dict, with ``root`` the directory its paths are relative to.

    ``allow`` lists absolute URL prefixes (``file:///data/``, ``s3://bucket/atlas/``) that
    components named by ``url`` may use; others are refused. Remote prefixes are opened with
    fsspec's ``storage_options`` (as zarr opens URLs), or with credentials from the environment
    when none are given. ``mode="r+"`` allows writes through the view.
    """
    read_only = mode == "r"
    allow = list(allow)
    mounts = (
        {prefix.rstrip("/"): resolve(prefix.rstrip("/"), storage_options, read_only=read_only) for prefix in allow if is_url(prefix)}
        if storage_options
        else {}
    )
    if isinstance(source, dict) or (isinstance(source, str) and source.lstrip().startswith("{")):
        if root is None:
            raise ValueError("pass root= (the directory the document's paths are relative to) with a document")
        doc = source if isinstance(source, dict) else json.loads(source)
        return VirtualArray(doc, LocalStore(str(root), read_only=read_only), "", allow=allow, mounts=mounts)
    if isinstance(source, str | os.PathLike) and not path:
        p = Path(source)
        if p.is_file():
            text = p.read_text()
            return VirtualArray(
                json.loads(text), LocalStore(str(root or p.parent), read_only=read_only), _dir_in_root(p.parent, root), allow=allow, mounts=mounts
            )
        if (p / DOCUMENT_KEY).is_file():
            base = Path(root) if root is not None else p.parent
            text = (p / DOCUMENT_KEY).read_text()
            return VirtualArray(
                json.loads(text), LocalStore(str(base), read_only=read_only), _dir_in_root(p.parent, root), allow=allow, mounts=mounts
            )
        raise FileNotFoundError(f"{str(source)!r} is neither a virtual array directory (holding {DOCUMENT_KEY}) nor a .json document")
    store = _store_of(source, mode=mode)
    if isinstance(source, zarr.Group) and source.path:
        path = posixpath.join(source.path, path)
    key = posixpath.join(path.strip("/"), DOCUMENT_KEY) if path.strip("/") else DOCUMENT_KEY
    buf = sync(store.get(key, prototype=default_buffer_prototype()))
    if buf is None:
        raise FileNotFoundError(f"no virtual array at {path!r} (missing key {key!r})")
    return VirtualArray(json.loads(buf.to_bytes()), store, _parent(path) + "/" if _parent(path) else "", allow=allow, mounts=mounts)


def _dir_in_root(directory: Path, root: Any) -> str:
    if root is None:
        return ""
    rel = os.path.relpath(directory.resolve(), Path(root).resolve())
    if rel.startswith(".."):
        raise ValueError(f"the document's directory {directory} is outside root {root}")
    return "" if rel == "." else rel.replace(os.sep, "/") + "/"


# ------------------------------------------------------------------------------------------------
# The view
# ------------------------------------------------------------------------------------------------


def _is_fancy(k: Any) -> bool:
    return isinstance(k, list | np.ndarray) or (hasattr(k, "__array__") and not np.isscalar(k))


class VirtualArray:
    """A virtual array: a JSON document over stored components (see the module docstring)."""

    def __init__(
        self, document: dict[str, Any], store: Any, dir: str = "", *, allow: Iterable[str] = (), mounts: dict[str, Any] | None = None
    ) -> None:
        self._token = new_token()
        self._config = pipeline_config()
        self._doc = document
        self._store = store
        self._dir = dir
        self._allow = list(allow)
        self._mounts = dict(mounts or {})
        settings = Settings.from_config()
        self._rust_store = rust_store(store)
        self._lib = _lib.VirtualArray(
            self._rust_store,
            json.dumps(document),
            dir,
            allow=self._allow,
            mounts=[(url, rust_store(s)) for url, s in self._mounts.items()],
            threads=settings.threads,
            validate_checksums=settings.validate_checksums,
        )
        self._shape = tuple(int(n) for n in self._lib.shape)
        self._dtype = np.dtype(self._lib.data_type)
        self._fill = np.frombuffer(self._lib.fill_bytes, dtype=self._dtype)[0]

    # -- properties -----------------------------------------------------------------------------

    @property
    def shape(self) -> tuple[int, ...]:
        return self._shape

    @property
    def ndim(self) -> int:
        return len(self._shape)

    @property
    def dtype(self) -> np.dtype[Any]:
        return self._dtype

    @property
    def size(self) -> int:
        return int(np.prod(self._shape, dtype=np.int64))

    @property
    def storage(self) -> Storage:
        """``"dense"``, ``"sparse"``, ``"csr"`` or ``"csc"``: what the components are."""
        return self._lib.storage

    @property
    def fill_value(self) -> Any:
        return self._fill

    @property
    def attrs(self) -> dict[str, Any]:
        return dict(self._doc.get("attributes", {}))

    @property
    def dimension_names(self) -> tuple[str | None, ...] | None:
        names = self._doc.get("dimension_names")
        return None if names is None else tuple(names)

    @property
    def num_components(self) -> int:
        return int(self._lib.num_components)

    @property
    def num_opened(self) -> int:
        """Components opened so far (they open on first touch)."""
        return int(self._lib.num_opened)

    @property
    def document(self) -> dict[str, Any]:
        """A copy of the document (paths relative to the view's directory)."""
        return copy.deepcopy(self._doc)

    @property
    def nnz(self) -> int:
        """Stored values of a CSR/CSC view (touches every component's index pointer)."""
        return int(self._lib.nnz())

    def __len__(self) -> int:
        if not self._shape:
            raise TypeError("len() of a 0-dimensional view")
        return self._shape[0]

    def __repr__(self) -> str:
        return f"<sparsezarr.VirtualArray shape={self.shape} dtype={self.dtype} storage={self.storage} components={self.num_components}>"

    def __reduce__(self) -> tuple[Any, ...]:
        mounts = {url: StoreRef(s) for url, s in self._mounts.items()}
        return (_reopen, (self._doc, StoreRef(self._store), self._dir, self._allow, mounts, self._token, self._config))

    def __dask_tokenize__(self) -> Any:
        return ("sparsezarr.VirtualArray", self._token)

    def to_dask(self, chunks: Any = None, *, output: Literal["coo", "matrix", "array"] | None = None) -> Any:
        """A lazy dask array of this view: numpy blocks for dense views, ``sparse.COO`` for
        sparse views, ``scipy.sparse`` row blocks (column blocks for CSC) for CSR views
        (``csr_matrix`` by default, ``output="array"`` for ``csr_array``). ``chunks=None`` picks
        blocks of about :data:`sparsezarr.dask.DEFAULT_BLOCK_ELEMENTS` elements (CSR: about
        :data:`sparsezarr.dask.DEFAULT_BLOCK_VALUES` values); otherwise anything dask's
        ``normalize_chunks`` accepts (CSR: rows per block or a tuple of block sizes)."""
        from sparsezarr.dask import virtual_to_dask

        return virtual_to_dask(self, chunks, output=output)

    def to_json(self, indent: int | None = None) -> str:
        """The document as JSON text."""
        return json.dumps(self._doc, indent=indent)

    def with_attrs(self, attributes: dict[str, Any] | None = None, dimension_names: Sequence[str | None] | None = None) -> VirtualArray:
        """A copy of the view with new attributes and/or dimension names."""
        doc = self.document
        if attributes is not None:
            doc["attributes"] = dict(attributes)
        if dimension_names is not None:
            doc["dimension_names"] = list(dimension_names)
        return VirtualArray(doc, self._store, self._dir, allow=self._allow, mounts=self._mounts)

    # -- views ----------------------------------------------------------------------------------

    def __getitem__(self, key: Key) -> VirtualArray:
        """Basic indexing (integers, slices with any step, ``None``, ``...``) returns a new view,
        without I/O. Use :meth:`read` for data and for integer-array or boolean indexing."""
        items = expand(key, self.ndim, newaxis=True)
        if any(_is_fancy(k) for k in items):
            raise TypeError("integer-array and boolean indexing return data, not a view: use view.read(key)")
        selection: list[Any] = []
        d = 0
        for k in items:
            if k is None:
                selection.append("newaxis")
                continue
            n = self._shape[d]
            if isinstance(k, slice):
                r = range(*k.indices(n))
                selection.append({"start": r.start if len(r) else 0, "step": r.step, "size": len(r)})
            elif isinstance(k, int | np.integer):
                selection.append(int_index(k, n, d))
            else:
                raise TypeError(f"unsupported index {k!r}")
            d += 1
        doc = self.document
        source = {"kind": "index", "source": doc["source"], "selection": selection}
        doc["source"] = source
        doc["shape"] = _infer_shape(source)
        doc.pop("dimension_names", None) if len(doc["shape"]) != self.ndim else None
        return VirtualArray(doc, self._store, self._dir, allow=self._allow, mounts=self._mounts)

    def transpose(self, *axes: int) -> VirtualArray:
        """A view with permuted dimensions (reversed when no axes are given)."""
        perm = list(axes[0] if len(axes) == 1 and isinstance(axes[0], Sequence) else axes) or list(range(self.ndim))[::-1]
        doc = self.document
        selection = [{"start": 0, "step": 1, "size": n} for n in self._shape]
        doc["source"] = {"kind": "index", "source": doc["source"], "selection": selection, "transpose": [int(p) % max(self.ndim, 1) for p in perm]}
        doc["shape"] = _infer_shape(doc["source"])
        return VirtualArray(doc, self._store, self._dir, allow=self._allow, mounts=self._mounts)

    @property
    def T(self) -> VirtualArray:  # noqa: N802 - numpy's name
        return self.transpose()

    # -- reading --------------------------------------------------------------------------------

    def _orthogonal(self, key: Key) -> tuple[list[Selection], list[bool]]:
        return orthogonal(key, self._shape, newaxis_error="None (newaxis) is only allowed when making a view (view[...])")

    def read(self, key: Key = ..., *, output: Output | None = None) -> npt.NDArray[Any] | np.generic | pydata_sparse.COO | CompressedMatrix:
        """Read data: a numpy array (dense views), ``sparse.COO`` (sparse views) or a
        ``scipy.sparse`` array (CSR/CSC views; ``output`` as for :func:`open_csr`).

        Each dimension takes an integer, a slice (any step), or an integer or boolean array,
        independently (orthogonal indexing)."""
        if self.storage in ("csr", "csc"):
            return self._read_compressed(key, output)
        sels, keep = self._orthogonal(key)
        shape = tuple(selection_len(s) for s, k in zip(sels, keep, strict=True) if k)
        if self.storage == "sparse":
            import sparse as pydata_sparse

            coords, values = self._lib.read_sparse(sels, keep)
            vals = np.frombuffer(memoryview(values), dtype=self._dtype)
            return pydata_sparse.COO(coords, vals, shape=shape, fill_value=self._fill, has_duplicates=False, sorted=True)
        out = np.empty(shape, dtype=self._dtype)
        self._lib.read(sels, keep, out)
        return out[()] if out.ndim == 0 else out

    def _read_compressed(self, key: Key, output: Output | None) -> CompressedMatrix:
        fmt: Format = "csr" if self.storage == "csr" else "csc"
        return read_compressed(self._lib.gather, fmt, (self._shape[0], self._shape[1]), self._dtype, key, output or "array")

    def __array__(self, dtype: npt.DTypeLike | None = None, copy: bool | None = None) -> npt.NDArray[Any]:
        if self.storage != "dense":
            raise TypeError(
                f"a {self.storage} view is not converted to a dense numpy array implicitly; use view.read() (and .todense() if you mean it)"
            )
        out = np.asarray(self.read())
        return out.astype(dtype) if dtype is not None else out

    # -- writing --------------------------------------------------------------------------------

    def __setitem__(self, key: Key, value: SparseValue) -> None:
        """Write through to the components (dense: any orthogonal key; sparse: a box of integers
        and step-1 slices, from scipy.sparse / pydata sparse / numpy). Writes into ``fill``
        regions raise; a write spanning components is not atomic across them."""
        if self.storage in ("csr", "csc"):
            raise NotImplementedError("CSR/CSC views are read-only: write their components with write_csr / append_rows")
        sels, keep = self._orthogonal(key)
        shape = tuple(selection_len(s) for s, k in zip(sels, keep, strict=True) if k)
        if self.storage == "sparse":
            self._write_sparse(sels, keep, shape, value)
            return
        arr = np.asarray(value)
        if arr.dtype != self._dtype:
            arr = arr.astype(self._dtype)
        arr = np.ascontiguousarray(np.broadcast_to(arr, shape))
        self._lib.write(sels, keep, arr)

    def _write_sparse(self, sels: list[Any], keep: list[bool], shape: tuple[int, ...], value: Any) -> None:
        from sparsezarr.sparse import _entries

        if not all(isinstance(s, tuple) and s[1] == 1 for s in sels):
            raise IndexError("sparse writes take integers and step-1 slices (a box)")
        start = [s[0] for s in sels]
        box = [s[2] for s in sels]
        _, payload = _entries(value, list(shape), self._dtype, self._fill, compressed_ok=False)
        coords_kept, values = payload
        nnz = len(values)
        coords = np.zeros((self.ndim, nnz), dtype=np.int64)
        it = iter(coords_kept)
        for d, k in enumerate(keep):
            if k:
                coords[d] = np.asarray(next(it), dtype=np.int64)
        vals = np.ascontiguousarray(np.asarray(values, dtype=self._dtype))
        self._lib.write_sparse(start, box, coords, vals)

    # -- storing --------------------------------------------------------------------------------

    def save(self, target: StoreLike | zarr.Group, path: str) -> None:
        """Store the view's document at ``path/virtual.json`` of ``target`` (a store, group or
        directory path), with component paths rewritten relative to ``path``'s parent. The target
        must be the view's store (components stay where they are)."""
        store = _store_of(target, mode="w")
        if isinstance(target, zarr.Group) and target.path:
            path = posixpath.join(target.path, path)
        path = path.strip("/")
        if not path:
            raise ValueError("a view needs a path (its document is stored at <path>/virtual.json)")
        if _same_store(store, self._store):
            new_dir = _parent(path)
            doc = self.document
            doc["source"] = _rebase(doc["source"], self._dir, new_dir)
        elif type(store) is LocalStore and type(self._store) is LocalStore:
            old_root = Path(self._store.root).resolve()
            new_root = Path(store.root).resolve()
            try:
                shift = str(old_root.relative_to(new_root)).replace(os.sep, "/")
            except ValueError:
                raise ValueError(f"the view's components live in {old_root}, outside the target {new_root}: save it there or below") from None
            doc = self.document
            base = posixpath.join(shift, self._dir) if shift != "." else self._dir
            doc["source"] = _rebase(doc["source"], base, _parent(path))
        else:
            raise ValueError("save the view into the store that holds its components")
        sync(store.set(f"{path}/{DOCUMENT_KEY}", default_buffer_prototype().buffer.from_bytes(json.dumps(doc, indent=1).encode())))

    def materialize(
        self,
        target: Any,
        path: str = "",
        *,
        chunks: Any = None,
        shards: Any = None,
        compressors: Any = "auto",
        overwrite: bool = False,
        block_bytes: int = 256 << 20,
        progress: bool = False,
    ) -> zarr.Array | SparseArray | CsrArray:
        """Copy the view into a real array at ``target``/``path``, block by block through the Rust
        engine: a zarr array (dense views; written with :class:`sparsezarr.Pipeline`), a sparse
        array (sparse views) or a CSR/CSC group (compressed views). Returns the new array."""
        if self.storage in ("csr", "csc"):
            return self._materialize_compressed(
                target, path, chunks=chunks, shards=shards, compressors=compressors, overwrite=overwrite, progress=progress
            )
        n0 = self._shape[0] if self._shape else 1
        row_bytes = max(1, self.size // max(n0, 1)) * self._dtype.itemsize
        dest: SparseArray | zarr.Array
        store = _store_of(target, mode="w")
        # An array that exists in a local directory is replaced only once its copy is complete:
        # the copy is written beside it and swapped in (sparsezarr._commit.swap_in).
        live = local_dir(store, path)
        staged = overwrite and live is not None and (live / "zarr.json").exists()
        wstore, wpath = staging(store, path) if staged else (store, path)
        if self.storage == "sparse":
            from sparsezarr.sparse import create_sparse

            kwargs: dict[str, Any] = {"shape": self.shape, "dtype": self.dtype, "fill_value": self._fill}
            kwargs.update(_layout_kwargs(chunks, shards, compressors))
            dest = create_sparse(wstore, path=wpath or None, overwrite=overwrite, **kwargs)
            step = _block_rows(dest.shards or dest.chunks, n0, row_bytes, block_bytes)
        else:
            with zarr.config.set({"codec_pipeline.path": "sparsezarr.Pipeline"}):
                dest = zarr.create_array(
                    store=wstore,
                    name=wpath or None,
                    shape=self.shape,
                    dtype=self.dtype,
                    chunks=chunks if chunks is not None else "auto",
                    shards=shards,
                    fill_value=self._fill,
                    compressors=compressors,
                    overwrite=overwrite,
                    dimension_names=self.dimension_names,
                    attributes=self.attrs or None,
                )
            step = _block_rows(dest.shards or dest.chunks, n0, row_bytes, block_bytes)
        bar = _bar(progress, n0, "materializing")
        try:
            with zarr.config.set({"codec_pipeline.path": "sparsezarr.Pipeline"}):
                if not self._shape:
                    dest[...] = self.read()
                for a in range(0, n0 if self._shape else 0, step):
                    b = min(n0, a + step)
                    dest[a:b] = self.read(slice(a, b))
                    if bar is not None:
                        bar.update(b - a)
            if staged:
                swap_in(store, path, wstore, wpath)
        except BaseException:
            written = local_dir(wstore, wpath)
            if staged and written is not None:
                shutil.rmtree(written, ignore_errors=True)
            raise
        finally:
            if bar is not None:
                bar.close()
        if not staged:
            return dest
        if self.storage == "sparse":
            from sparsezarr.sparse import open_sparse

            return open_sparse(store, path=path or None)
        with zarr.config.set({"codec_pipeline.path": "sparsezarr.Pipeline"}):
            return zarr.open_array(store=store, path=path, mode="r+")

    def _materialize_compressed(
        self, target: Any, path: str, *, chunks: Any, shards: Any, compressors: Any, overwrite: bool, progress: bool
    ) -> CsrArray:
        from sparsezarr.csr import CsrWriter

        fmt: Format = "csr" if self.storage == "csr" else "csc"
        n_major = self._shape[0] if fmt == "csr" else self._shape[1]
        n_minor = self._shape[1] if fmt == "csr" else self._shape[0]
        kwargs = _layout_kwargs(chunks, shards, compressors)
        writer = CsrWriter(target, n_cols=n_minor, dtype=self._dtype, path=path, format=fmt, overwrite=overwrite, progress=progress, **kwargs)
        step = 16384
        try:
            for a in range(0, n_major, step):
                b = min(n_major, a + step)
                block = self.read((slice(a, b), slice(None)) if fmt == "csr" else (slice(None), slice(a, b)))
                writer.append(block)
        except BaseException:
            writer.abort()
            raise
        return writer.close()


def _reopen(
    doc: dict[str, Any], ref: StoreRef, dir: str, allow: list[str], mounts: dict[str, StoreRef], token: str, config: dict[str, Any]
) -> VirtualArray:
    """A pickled :class:`VirtualArray` on the other side: reopened once per process."""
    return restore(token, config, lambda: VirtualArray(doc, ref.store, dir, allow=allow, mounts={u: r.store for u, r in mounts.items()}))


def _block_rows(grid: Sequence[int] | None, n0: int, row_bytes: int, block_bytes: int) -> int:
    unit = int(grid[0]) if grid else 1
    rows = max(1, block_bytes // max(row_bytes, 1))
    return max(unit, rows // unit * unit) if n0 else 1


def _bar(progress: bool, total: int, desc: str) -> Any:
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="rows", desc=desc)


def _layout_kwargs(chunks: Any, shards: Any, compressors: Any) -> dict[str, Any]:
    """The chunk/shard/compressor arguments a caller set (``None`` / ``"auto"`` = the writer's own
    defaults), as keyword arguments for the writer."""
    given = {"chunks": chunks, "shards": shards}
    kwargs = {k: v for k, v in given.items() if v is not None}
    if compressors != "auto":
        kwargs["compressors"] = compressors
    return kwargs
