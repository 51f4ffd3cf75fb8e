"""The on-disk layouts of a compressed sparse matrix group: names, constants, detection and the
group attributes that describe a matrix (shared by the reader and the writers)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import zarr
from zarr.codecs import BloscCodec
from zarr.core.sync import sync

from sparsezarr.errors import MetadataError

Layout = Literal["anndata", "binsparse"]
Format = Literal["csr", "csc"]

#: Names of the (values, indices, index pointer) arrays in each layout.
ARRAY_NAMES: dict[str, tuple[str, str, str]] = {
    "anndata": ("data", "indices", "indptr"),
    "binsparse": ("values", "indices_1", "pointers_to_1"),
}
#: Elements per inner chunk of ``data`` and ``indices`` (see ``docs/single-cell.md`` for the
#: measurements behind it).
DEFAULT_CHUNK = 1 << 13
#: Elements per shard of ``data`` and ``indices``.
DEFAULT_SHARD = 1 << 22
#: Elements per inner chunk and per shard of ``indptr``.
INDPTR_CHUNK = 1 << 16
INDPTR_SHARD = 1 << 22
ENCODING_VERSION = "0.1.0"
BINSPARSE_VERSION = "0.1.0"


def default_compressors() -> list[BloscCodec]:
    """Blosc with zstd level 1 and byte shuffling: smaller than anndata's default zstd on both
    values and indices, and several times faster to write (see ``docs/single-cell.md``)."""
    return [BloscCodec(cname="zstd", clevel=1, shuffle="shuffle")]


@dataclass(frozen=True)
class GroupLayout:
    """What a group's attributes say it holds."""

    layout: Layout
    format: Format
    shape: tuple[int, int]


def binsparse_header(attrs: dict[str, Any]) -> dict[str, Any] | None:
    """The binsparse descriptor, flat (``attrs.binsparse = {...}``) or nested as the binsparse
    package writes it (``attrs.binsparse.binsparse = {...}``); a JSON string is accepted too."""
    h = attrs.get("binsparse")
    if isinstance(h, str):
        h = json.loads(h)
    if isinstance(h, dict) and isinstance(h.get("binsparse"), dict):
        h = h["binsparse"]
    return h if isinstance(h, dict) and "format" in h else None


def shape_2d(shape: Any) -> tuple[int, int] | None:
    """A 2-d shape from metadata (a JSON list or a tuple), or None when it is not one."""
    if not isinstance(shape, list | tuple) or len(shape) != 2:
        return None
    return int(shape[0]), int(shape[1])


def detect(group: zarr.Group) -> GroupLayout:
    """The layout, format and shape of a matrix group, from its attributes."""
    attrs = dict(group.attrs)
    kind = attrs.get("encoding-type") or attrs.get("h5sparse_format")
    if kind in ("csr_matrix", "csc_matrix", "csr", "csc"):
        shape = shape_2d(attrs.get("shape") or attrs.get("h5sparse_shape"))
        if shape is None:
            raise MetadataError(f"{group.path or '/'}: attribute 'shape' is missing or not 2-dimensional")
        return GroupLayout("anndata", "csr" if str(kind).startswith("csr") else "csc", shape)
    header = binsparse_header(attrs)
    if header is not None:
        fmt = str(header["format"]).upper()
        if fmt not in ("CSR", "CSC"):
            raise MetadataError(f"{group.path or '/'}: binsparse format {fmt!r} is not CSR or CSC")
        shape = shape_2d(header.get("shape"))
        if shape is None:
            raise MetadataError(f"{group.path or '/'}: binsparse descriptor has no 2-d 'shape'")
        return GroupLayout("binsparse", "csr" if fmt == "CSR" else "csc", shape)
    raise MetadataError(
        f"{group.path or '/'} is not a compressed sparse matrix: expected the anndata attribute "
        f"'encoding-type' ('csr_matrix' or 'csc_matrix') or a binsparse descriptor; found {sorted(attrs)}"
    )


def member(group: zarr.Group, name: str) -> zarr.Array:
    """One of the group's three arrays, checked to exist and to be one-dimensional."""
    try:
        node = group[name]
    except KeyError:
        raise MetadataError(f"{group.path or '/'}: the array {name!r} is missing") from None
    if not isinstance(node, zarr.Array) or node.ndim != 1:
        raise MetadataError(f"{group.path or '/'}: {name!r} must be a one-dimensional array")
    # Consolidated metadata may still list an array whose own metadata is gone (its chunks would
    # then silently read as zeros): check the array's metadata document itself.
    key = f"{node.store_path.path}/{'zarr.json' if node.metadata.zarr_format == 3 else '.zarray'}".lstrip("/")
    if not sync(group.store_path.store.exists(key)):
        raise MetadataError(f"{group.path or '/'}: the array {name!r} is missing (only listed in the consolidated metadata)")
    return node


def members(group: zarr.Group, layout: Layout) -> tuple[zarr.Array, zarr.Array, zarr.Array]:
    """The (values, indices, index pointer) arrays of a matrix group."""
    data, indices, indptr = ARRAY_NAMES[layout]
    return member(group, data), member(group, indices), member(group, indptr)


def layout_attrs(
    layout: Layout, fmt: Format, shape: tuple[int, int], nnz: int, dtypes: tuple[npt.DTypeLike, npt.DTypeLike, npt.DTypeLike]
) -> dict[str, Any]:
    """The group attributes describing a matrix of ``shape`` with ``nnz`` values; ``dtypes`` are
    those of (values, indices, index pointer)."""
    if layout == "anndata":
        return {"encoding-type": f"{fmt}_matrix", "encoding-version": ENCODING_VERSION, "shape": [int(shape[0]), int(shape[1])]}
    names = ARRAY_NAMES["binsparse"]
    header = {
        "version": BINSPARSE_VERSION,
        "format": fmt.upper(),
        "shape": [int(shape[0]), int(shape[1])],
        "number_of_stored_values": int(nnz),
        "data_types": {name: np.dtype(dt).name for name, dt in zip(names, dtypes, strict=True)},
    }
    return {"binsparse": {"binsparse": header}}
