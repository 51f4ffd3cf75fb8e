"""Convert single-cell matrices into Zarr stores that anndata opens (``sparsezarr convert``).

Sources (detected from the path):

* ``.h5ad``: ``X`` and every layer (and ``obsp``/``varp``/``raw``) stream block by block into CSR/CSC
  groups; ``obs``, ``var``, ``obsm``, ``varm`` and ``uns`` are copied with anndata's own element
  reader and writer, so the result is a complete AnnData store;
* a 10x Genomics Matrix Market directory (``matrix.mtx[.gz]``, ``features.tsv[.gz]`` or
  ``genes.tsv[.gz]``, ``barcodes.tsv[.gz]``): cells x genes, var names = gene symbols (made
  unique), ``var["gene_ids"]`` (and ``feature_types``), obs names = barcodes, as scanpy reads it;
* a plain ``.mtx[.gz]``: the matrix as stored (``transpose=True`` to swap the axes);
* a 10x ``.h5`` (Cell Ranger v2 or v3);
* an existing Zarr store: an AnnData store (any chunking, zarr v2 or v3) or a bare CSR/CSC group,
  rewritten with sparsezarr's layout.

Matrices are read in blocks of about ``block_entries`` values and never held whole: CSR inputs and
sorted Matrix Market files stream straight through; unsorted Matrix Market files are first
bucketed by row into temporary files on disk. A progress bar shows the values converted, and the
throughput is reported at the end.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import zarr

from sparsezarr import _lib
from sparsezarr._settings import durable
from sparsezarr._stores import fsync_tree, is_url, local_dir, reconsolidate, replace_dir, resolve, staging
from sparsezarr.csr import CsrArray, CsrWriter
from sparsezarr.csr._layout import binsparse_header, shape_2d
from sparsezarr.errors import MetadataError

__all__ = ["ConversionReport", "convert", "detect_source"]

#: Values per block read from the source.
DEFAULT_BLOCK_ENTRIES = 1 << 24
ANNDATA_ATTRS = {"encoding-type": "anndata", "encoding-version": "0.1.0"}
#: Temporary directories of the running conversion (removed when it ends).
_TEMPORARY: list[Path] = []


@dataclass
class ConversionReport:
    """What a conversion did."""

    source: str
    kind: str
    destination: str
    shape: tuple[int, int] = (0, 0)
    nnz: int = 0
    matrices: list[str] = field(default_factory=list)
    input_bytes: int = 0
    stored_bytes: int = 0
    seconds: float = 0.0

    @property
    def mb_per_s(self) -> float:
        """Values and indices converted per second (MB/s)."""
        return self.input_bytes / self.seconds / 1e6 if self.seconds else 0.0

    def summary(self) -> str:
        return (
            f"{self.kind} {self.source} -> {self.destination}: {self.shape[0]:,} x {self.shape[1]:,}, "
            f"{self.nnz:,} values in {len(self.matrices)} matri{'x' if len(self.matrices) == 1 else 'ces'} "
            f"({', '.join(self.matrices)}); {self.input_bytes / 1e6:,.1f} MB in {self.seconds:.2f} s = "
            f"{self.mb_per_s:,.0f} MB/s; stored {self.stored_bytes / 1e6:,.1f} MB"
        )


def _find(d: Path, *names: str) -> Path | None:
    for n in names:
        for suffix in ("", ".gz"):
            p = d / f"{n}{suffix}"
            if p.exists():
                return p
    return None


def detect_source(src: str | os.PathLike[str]) -> str:
    """``"h5ad"``, ``"10x-mtx"``, ``"mtx"``, ``"10x-h5"`` or ``"zarr"`` (a URL is a Zarr store)."""
    if is_url(src):
        return "zarr"
    p = Path(src)
    name = p.name.lower()
    if p.is_dir():
        if _find(p, "matrix.mtx"):
            return "10x-mtx"
        if (p / "zarr.json").exists() or (p / ".zgroup").exists() or (p / ".zattrs").exists():
            return "zarr"
        raise ValueError(f"{src}: a directory without matrix.mtx[.gz] or Zarr metadata")
    if not p.exists():
        raise FileNotFoundError(f"{src} does not exist")
    if name.endswith(".h5ad"):
        return "h5ad"
    if name.endswith((".mtx", ".mtx.gz")):
        return "mtx"
    if name.endswith((".h5", ".hdf5")):
        return "10x-h5"
    raise ValueError(f"{src}: unknown source type (expected .h5ad, .mtx[.gz], a 10x directory or .h5, or a Zarr store)")


# ------------------------------------------------------------------------------------------------
# Sparse matrix sources: row blocks of (indptr, indices, data)
# ------------------------------------------------------------------------------------------------


@dataclass
class _Compressed:
    """A stored compressed matrix (h5py datasets or a CsrArray) read by blocks of major positions."""

    fmt: str
    shape: tuple[int, int]
    indptr: np.ndarray
    read: Callable[[int, int], sp.csr_array | sp.csc_array]
    dtype: np.dtype[Any]

    @property
    def nnz(self) -> int:
        return int(self.indptr[-1])

    def blocks(self, budget: int) -> Iterator[Any]:
        n = len(self.indptr) - 1
        a = 0
        while a < n:
            b = int(np.searchsorted(self.indptr, self.indptr[a] + budget, side="right")) - 1
            b = min(n, max(b, a + 1))
            yield self.read(a, b)
            a = b


def _h5_compressed(group: Any, fmt: str, shape: tuple[int, int], names: tuple[str, str, str] = ("data", "indices", "indptr")) -> _Compressed:
    data, indices = group[names[0]], group[names[1]]
    indptr = np.asarray(group[names[2]][()], dtype=np.int64)
    minor = shape[1] if fmt == "csr" else shape[0]

    def read(a: int, b: int) -> Any:
        s, e = int(indptr[a]), int(indptr[b])
        ptr = indptr[a : b + 1] - s
        m = (b - a, minor) if fmt == "csr" else (minor, b - a)
        cls = sp.csr_array if fmt == "csr" else sp.csc_array
        return cls((data[s:e], indices[s:e], ptr), shape=m)

    return _Compressed(fmt, shape, indptr, read, np.dtype(data.dtype))


def _zarr_compressed(group: zarr.Group) -> _Compressed:
    x = CsrArray(group)

    def read(a: int, b: int) -> Any:
        return x.read(slice(a, b)) if x.format == "csr" else x.read((slice(None), slice(a, b)))

    return _Compressed(x.format, x.shape, x.indptr, read, x.dtype)


# ------------------------------------------------------------------------------------------------
# The conversion
# ------------------------------------------------------------------------------------------------


class _Job:
    def __init__(self, report: ConversionReport, options: dict[str, Any], progress: bool, total: int) -> None:
        self.report = report
        self.options = options
        self.bar = None
        if progress:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total or None, unit="B", unit_scale=True, unit_divisor=1000, desc="converting", smoothing=0.1)

    def advance(self, m: Any) -> None:
        # Input bytes are counted as values plus 32-bit indices, whatever the source's index type.
        n = int(m.nnz) * (m.data.dtype.itemsize + 4)
        self.report.input_bytes += n
        if self.bar is not None:
            self.bar.update(n)

    def write_compressed(self, group: zarr.Group, name: str, src: _Compressed, label: str) -> None:
        opts = self.options
        with CsrWriter(
            group,
            path=name,
            n_cols=src.shape[1] if src.fmt == "csr" else src.shape[0],
            dtype=opts.get("dtype") or src.dtype,
            format=src.fmt,  # type: ignore[arg-type]
            layout=opts["layout"],
            chunks=opts["chunks"],
            shards=opts["shards"],
            compressors=opts["compressors"],
            overwrite=True,
        ) as w:
            for m in src.blocks(opts["block_entries"]):
                w.append(m)
                self.advance(m)
        self.report.matrices.append(label)
        self.report.nnz += src.nnz

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _write_elem(dst: zarr.Group, name: str, value: Any) -> None:
    """anndata's element writer (its notice about future zarr v3 auto-sharding silenced)."""
    import warnings

    import anndata as ad

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="zarr v3 autosharding", category=UserWarning)
        ad.io.write_elem(dst, name, value)


def _copy_elem(src: Any, dst: zarr.Group, name: str) -> None:
    import anndata as ad

    _write_elem(dst, name, ad.io.read_elem(src))


def _is_h5_group(x: Any) -> bool:
    import h5py

    return isinstance(x, h5py.Group)


def _is_group(x: Any) -> bool:
    return isinstance(x, zarr.Group) or _is_h5_group(x)


def _attrs(x: Any) -> dict[str, Any]:
    out = {}
    for k, v in x.attrs.items():
        out[k] = v.tolist() if isinstance(v, np.ndarray) else (v.decode() if isinstance(v, bytes) else v)
    return out


def _copy_all(src: Any, store: Any, job: _Job) -> None:
    """Copy the whole tree of ``src`` (an h5py file or a zarr group) to the root of ``store``."""
    try:
        _copy_tree(src, _root(store), job)
    finally:
        job.close()


def _copy_tree(src: Any, dst: zarr.Group, job: _Job, prefix: str = "") -> None:
    """Copy an AnnData tree: compressed matrices stream through the CSR writer, containers are
    recreated, everything else goes through anndata's element reader and writer."""
    for key in src:
        elem = src[key]
        attrs = _attrs(elem)
        enc = attrs.get("encoding-type")
        label = f"{prefix}{key}"
        if enc in ("csr_matrix", "csc_matrix") and _is_group(elem):
            shape = tuple(int(n) for n in attrs["shape"])
            source = _h5_compressed(elem, enc[:3], shape) if _is_h5_group(elem) else _zarr_compressed(elem)  # type: ignore[arg-type]
            job.write_compressed(dst, key, source, label)
        elif enc in ("dict", "raw") and _is_group(elem):
            sub = dst.create_group(key, overwrite=True)
            sub.attrs.update(attrs)
            _copy_tree(elem, sub, job, f"{label}/")
        else:
            _copy_elem(elem, dst, key)


def _stored_bytes(store: Any) -> int:
    d = local_dir(store, "")
    if d is None:
        return 0
    return sum(f.stat().st_size for f in d.rglob("*") if f.is_file())


def convert(
    src: str | os.PathLike[str],
    dst: Any,
    *,
    overwrite: bool = False,
    layout: str = "anndata",
    chunks: int | None = None,
    shards: int | str | None = "default",
    compressors: Any = "default",
    dtype: Any = None,
    transpose: bool = False,
    block_entries: int = DEFAULT_BLOCK_ENTRIES,
    progress: bool = True,
    storage_options: dict[str, Any] | None = None,
) -> ConversionReport:
    """Convert ``src`` (see the module docstring) into an AnnData Zarr store at ``dst`` (a path or
    a store). Either may be a URL (``s3://bucket/x.zarr``: a Zarr source, or the destination),
    opened as zarr opens URLs with fsspec's ``storage_options``. ``dtype`` overrides the value type (Matrix Market and 10x inputs default to float32,
    as scanpy reads them; a value that float32 cannot hold exactly is an error). An existing
    ``dst`` is replaced only with ``overwrite=True``, and only once the new store is complete."""
    kind = detect_source(src)
    if is_url(src) and is_url(dst) and str(src).rstrip("/") == str(dst).rstrip("/"):
        raise ValueError("the destination must differ from the source")
    if is_url(dst):
        store: Any = resolve(dst, storage_options)
    elif isinstance(dst, str | os.PathLike):
        from zarr.storage import LocalStore

        dst_path = Path(dst)
        if not is_url(src) and dst_path.resolve() == Path(src).resolve():
            raise ValueError("the destination must differ from the source")
        store = LocalStore(str(dst_path))
    else:
        store = dst
    exists = _root_exists(store)
    if exists and not overwrite:
        raise FileExistsError(f"{dst} already exists; pass overwrite=True (--overwrite) to replace it")
    stage = exists and local_dir(store, "") is not None
    wstore, _ = staging(store, "") if stage else (store, "")
    if exists and not stage:
        zarr.open_group(store=store, mode="w")
    report = ConversionReport(str(src), kind, str(dst))
    options = {
        "layout": layout,
        "chunks": chunks,
        "shards": shards,
        "compressors": compressors,
        "dtype": dtype,
        "block_entries": int(block_entries),
        "storage_options": storage_options,
    }
    t0 = time.perf_counter()
    try:
        converter = {"h5ad": _from_h5ad, "10x-mtx": _from_10x_mtx, "mtx": _from_mtx, "10x-h5": _from_10x_h5, "zarr": _from_zarr}[kind]
        converter(src if is_url(src) else Path(src), wstore, report, options, progress, transpose)
        reconsolidate(wstore, force=True)
    except BaseException:
        d = local_dir(wstore, "")
        if d is not None and (stage or not exists):
            shutil.rmtree(d, ignore_errors=True)
        raise
    finally:
        while _TEMPORARY:
            shutil.rmtree(_TEMPORARY.pop(), ignore_errors=True)
    written = local_dir(wstore, "")
    if written is not None and durable():
        fsync_tree(written)
    if stage:
        replace_dir(local_dir(store, ""), local_dir(wstore, ""))  # type: ignore[arg-type]
        if durable():
            fsync_tree(written.parent)  # type: ignore[union-attr]
    report.seconds = time.perf_counter() - t0
    report.stored_bytes = _stored_bytes(store)
    return report


def _root_exists(store: Any) -> bool:
    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.sync import sync

    proto = default_buffer_prototype()
    return any(sync(store.get(k, prototype=proto)) is not None for k in ("zarr.json", ".zgroup", ".zarray"))


def _root(store: Any) -> zarr.Group:
    g = zarr.open_group(store=store, mode="w", zarr_format=3)
    g.attrs.update(ANNDATA_ATTRS)
    return g


def _empty_containers(g: zarr.Group, names: tuple[str, ...] = ("layers", "obsm", "varm", "obsp", "varp", "uns")) -> None:
    for n in names:
        if n not in g:
            sub = g.create_group(n)
            sub.attrs.update({"encoding-type": "dict", "encoding-version": "0.1.0"})


# -- h5ad ----------------------------------------------------------------------------------------


def _from_h5ad(src: Path, store: Any, report: ConversionReport, options: dict[str, Any], progress: bool, transpose: bool) -> None:
    import h5py

    if transpose:
        raise ValueError("transpose is only available for Matrix Market inputs")
    with h5py.File(src, "r") as f:
        total = _compressed_bytes(f)
        shape = _h5ad_shape(f)
        report.shape = shape
        _copy_all(f, store, _Job(report, options, progress, total))


def _compressed_bytes(f: Any) -> int:
    total = 0

    def visit(_: str, obj: Any) -> None:
        nonlocal total
        if obj.attrs.get("encoding-type") in ("csr_matrix", "csc_matrix"):
            total += obj["data"].shape[0] * (obj["data"].dtype.itemsize + 4)

    f.visititems(visit)
    return total


def _h5ad_shape(f: Any) -> tuple[int, int]:
    if "X" in f:
        x = f["X"]
        s = x.attrs.get("shape") if hasattr(x, "attrs") and "shape" in x.attrs else getattr(x, "shape", None)
        if s is not None:
            return (int(s[0]), int(s[1]))
    return (0, 0)


# -- zarr ----------------------------------------------------------------------------------------


def _from_zarr(src: Any, store: Any, report: ConversionReport, options: dict[str, Any], progress: bool, transpose: bool) -> None:
    if transpose:
        raise ValueError("transpose is only available for Matrix Market inputs")
    g = zarr.open_group(store=src if is_url(src) else str(src), mode="r", storage_options=options.get("storage_options"))
    attrs = dict(g.attrs)
    if attrs.get("encoding-type") in ("csr_matrix", "csc_matrix") or binsparse_header(attrs) is not None:
        source = _zarr_compressed(g)
        report.shape = source.shape
        job = _Job(report, options, progress, source.nnz * (source.dtype.itemsize + 4))
        out = zarr.open_group(store=store, mode="w", zarr_format=3)
        try:
            job.write_compressed(out, "", source, "matrix")
        finally:
            job.close()
        return
    if attrs.get("encoding-type") != "anndata" and "X" not in g:
        raise ValueError(f"{src} is neither an AnnData store nor a CSR/CSC group")
    total = 0
    for _, node in g.members(max_depth=None):
        if isinstance(node, zarr.Group) and node.attrs.get("encoding-type") in ("csr_matrix", "csc_matrix"):
            d = node["data"]
            if isinstance(d, zarr.Array):
                total += d.shape[0] * (d.dtype.itemsize + 4)
    if "X" in g:
        x = g["X"]
        shape = shape_2d(x.attrs.get("shape") if isinstance(x, zarr.Group) else x.shape)
        if shape is None:
            raise MetadataError(f"{src}: X has no 2-dimensional shape")
        report.shape = shape
    _copy_all(g, store, _Job(report, options, progress, total))


# -- 10x .h5 -------------------------------------------------------------------------------------


def _decode(a: Any) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in np.asarray(a)]


def _from_10x_h5(src: Path, store: Any, report: ConversionReport, options: dict[str, Any], progress: bool, transpose: bool) -> None:
    import h5py
    import pandas as pd

    with h5py.File(src, "r") as f:
        if "matrix" in f:  # Cell Ranger v3
            g = f["matrix"]
            feats = g["features"]
            var = pd.DataFrame({"gene_ids": _decode(feats["id"][()])}, index=_decode(feats["name"][()]))
            if "feature_type" in feats:
                var["feature_types"] = _decode(feats["feature_type"][()])
            if "genome" in feats:
                var["genome"] = _decode(feats["genome"][()])
        else:  # Cell Ranger v2: one group per genome
            genomes = [k for k in f if isinstance(f[k], h5py.Group)]
            if len(genomes) != 1:
                raise ValueError(f"{src}: expected one genome group, found {genomes}")
            g = f[genomes[0]]
            var = pd.DataFrame({"gene_ids": _decode(g["genes"][()])}, index=_decode(g["gene_names"][()]))
        obs = pd.DataFrame(index=_decode(g["barcodes"][()]))
        genes, cells = (int(v) for v in g["shape"][()])
        # Stored genes x cells in CSC: that is cells x genes in CSR.
        source = _h5_compressed(g, "csr", (cells, genes))
        _write_annotated(store, report, options, progress, source, obs, var, transpose=transpose, default_dtype=np.float32)


def _unique(index: Any) -> Any:
    import anndata as ad
    import pandas as pd

    return ad.utils.make_index_unique(pd.Index(index))


def _write_annotated(
    store: Any,
    report: ConversionReport,
    options: dict[str, Any],
    progress: bool,
    source: _Compressed,
    obs: Any,
    var: Any,
    *,
    transpose: bool,
    default_dtype: Any,
) -> None:
    if transpose:
        raise ValueError("transpose is only available for Matrix Market inputs")
    obs.index = _unique(obs.index.astype(str))
    var.index = _unique(var.index.astype(str))
    obs.index.name = var.index.name = None
    report.shape = source.shape
    opts = {**options, "dtype": options.get("dtype") or default_dtype}
    root = _root(store)
    job = _Job(report, opts, progress, source.nnz * (np.dtype(opts["dtype"]).itemsize + 4))
    try:
        job.write_compressed(root, "X", _exact(source, np.dtype(opts["dtype"])), "X")
    finally:
        job.close()
    _write_elem(root, "obs", obs)
    _write_elem(root, "var", var)
    _empty_containers(root)


def _exact(source: _Compressed, dtype: np.dtype[Any]) -> _Compressed:
    """The source with values cast to ``dtype``, refusing casts that change a value."""
    read = source.read

    def checked(a: int, b: int) -> Any:
        m = read(a, b)
        data = np.asarray(m.data)
        cast = data.astype(dtype)
        if data.dtype != dtype and not np.array_equal(cast, data, equal_nan=data.dtype.kind in "fc"):
            raise ValueError(f"values cannot be stored exactly as {dtype} (e.g. {data[cast != data][0]!r}); choose another dtype (--dtype)")
        m.data = cast
        return m

    return _Compressed(source.fmt, source.shape, source.indptr, checked, dtype)


# -- Matrix Market -------------------------------------------------------------------------------


def _read_tsv(path: Path) -> Any:
    import pandas as pd

    return pd.read_csv(path, sep="\t", header=None, dtype=str, keep_default_na=False)


def _from_10x_mtx(src: Path, store: Any, report: ConversionReport, options: dict[str, Any], progress: bool, transpose: bool) -> None:
    import pandas as pd

    mtx = _find(src, "matrix.mtx")
    features = _find(src, "features.tsv", "genes.tsv")
    barcodes = _find(src, "barcodes.tsv")
    if mtx is None or features is None or barcodes is None:
        raise ValueError(f"{src}: a 10x directory needs matrix.mtx, features.tsv (or genes.tsv) and barcodes.tsv (optionally .gz)")
    f = _read_tsv(features)
    var = pd.DataFrame({"gene_ids": f[0].to_numpy()}, index=f[1] if f.shape[1] > 1 else f[0])
    if f.shape[1] > 2:
        var["feature_types"] = f[2].to_numpy()
    obs = pd.DataFrame(index=_read_tsv(barcodes)[0].to_numpy())
    # 10x matrices are genes x cells: the output rows (cells) are the file's columns.
    source = _mtx_source(mtx, major=1, options=options, tmp_near=store)
    if source.shape != (len(obs), len(var)):
        raise ValueError(
            f"{src}: the matrix is {source.shape[1]} x {source.shape[0]} (genes x cells), but there are {len(var)} features and {len(obs)} barcodes"
        )
    _write_annotated(store, report, options, progress, source, obs, var, transpose=False, default_dtype=np.float32)


def _from_mtx(src: Path, store: Any, report: ConversionReport, options: dict[str, Any], progress: bool, transpose: bool) -> None:
    import pandas as pd

    source = _mtx_source(src, major=1 if transpose else 0, options=options, tmp_near=store)
    obs = pd.DataFrame(index=[str(i) for i in range(source.shape[0])])
    var = pd.DataFrame(index=[str(i) for i in range(source.shape[1])])
    _write_annotated(store, report, options, progress, source, obs, var, transpose=False, default_dtype=np.float32)


def _mtx_source(path: Path, major: int, options: dict[str, Any], tmp_near: Any) -> _Compressed:
    """A Matrix Market file as row blocks (rows = the file's axis ``major``). Sorted files stream
    directly; others are bucketed by row into temporary files first (bounded memory)."""
    reader = _lib.MtxReader(str(path))
    h = reader.header
    n_major, n_minor = (h["rows"], h["cols"]) if major == 0 else (h["cols"], h["rows"])
    budget = int(options["block_entries"])
    # Pass 1: entries per output row, and whether the file lists them in row order.
    counts = np.zeros(n_major, dtype=np.int64)
    ordered, last = True, -1
    while (block := reader.read(budget)) is not None:
        r = block[0] if major == 0 else block[1]
        if len(r):
            ordered = ordered and bool(r[0] >= last) and bool(np.all(r[1:] >= r[:-1]))
            last = int(r[-1])
            counts += np.bincount(r, minlength=n_major)
    indptr = np.zeros(n_major + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    shape = (int(n_major), int(n_minor))
    minor_axis = 1 - major
    if ordered:
        return _Compressed("csr", shape, indptr, _sorted_mtx_reader(path, major, minor_axis, indptr, n_minor, budget), np.dtype(np.float64))
    return _bucketed_mtx(path, major, minor_axis, indptr, shape, budget, tmp_near)


def _canonical(m: sp.csr_array) -> sp.csr_array:
    m.sum_duplicates()
    return m


def _sorted_mtx_reader(path: Path, major: int, minor_axis: int, indptr: np.ndarray, n_minor: int, budget: int) -> Callable[[int, int], Any]:
    """Blocks of consecutive rows from a file listing entries in row order (read once, in order)."""
    state: dict[str, Any] = {"reader": _lib.MtxReader(str(path)), "buf": None}

    def read(a: int, b: int) -> Any:
        need = int(indptr[b] - indptr[a])
        parts = [] if state["buf"] is None else [state["buf"]]
        have = 0 if state["buf"] is None else len(state["buf"][0])
        while have < need:
            block = state["reader"].read(max(budget, need - have))
            if block is None:
                raise ValueError(f"{path}: fewer entries than the first pass counted")
            parts.append((block[major], block[minor_axis], block[2]))
            have += len(block[0])
        rows = np.concatenate([p[0] for p in parts])
        cols = np.concatenate([p[1] for p in parts])
        vals = np.concatenate([p[2] for p in parts])
        state["buf"] = (rows[need:], cols[need:], vals[need:]) if have > need else None
        rows, cols, vals = rows[:need], cols[:need], vals[:need]
        ptr = indptr[a : b + 1] - indptr[a]
        return _canonical(sp.csr_array((vals, cols, ptr), shape=(b - a, n_minor)))

    return read


def _bucketed_mtx(path: Path, major: int, minor_axis: int, indptr: np.ndarray, shape: tuple[int, int], budget: int, near: Any) -> _Compressed:
    """Scatter the entries into row order in temporary files (memory-mapped, so bounded by the
    page cache, not by RAM), then read row blocks from them."""
    base = local_dir(near, "")
    tmpdir = Path(tempfile.mkdtemp(prefix=".sparsezarr-mtx-", dir=str(base.parent) if base is not None and base.parent.exists() else None))
    nnz = int(indptr[-1])
    idx_dt = np.int32 if shape[1] <= np.iinfo(np.int32).max else np.int64
    cols = np.lib.format.open_memmap(tmpdir / "indices.npy", mode="w+", dtype=idx_dt, shape=(max(nnz, 1),))
    vals = np.lib.format.open_memmap(tmpdir / "values.npy", mode="w+", dtype=np.float64, shape=(max(nnz, 1),))
    fill = indptr[:-1].copy()
    reader = _lib.MtxReader(str(path))
    while (block := reader.read(budget)) is not None:
        r = block[major]
        order = np.argsort(r, kind="stable")
        rs = r[order]
        first = np.searchsorted(rs, rs, side="left")
        pos = fill[rs] + (np.arange(len(rs)) - first)
        cols[pos] = block[minor_axis][order]
        vals[pos] = block[2][order]
        fill += np.bincount(rs, minlength=len(fill))

    def read(a: int, b: int) -> Any:
        s, e = int(indptr[a]), int(indptr[b])
        return _canonical(sp.csr_array((np.asarray(vals[s:e]), np.asarray(cols[s:e]), indptr[a : b + 1] - s), shape=(b - a, shape[1])))

    _TEMPORARY.append(tmpdir)
    return _Compressed("csr", shape, indptr, read, np.dtype(np.float64))
