"""Translating zarr-python array metadata into what the Rust engine runs.

zarr-python is the reference for the meaning of its arrays, so the engine is not handed the stored
JSON blindly:

* the **fill value** is computed here from zarr-python's own parsed value (as native-order bytes),
  including its defaults for v2 ``null`` fill values;
* the **data type** is mapped to one with the same memory layout that zarrs implements
  (``numpy.datetime64`` -> ``int64``; ``null_terminated_bytes``, ``raw_bytes`` and structured
  types -> raw bits) when that mapping is exact;
* only **codecs** whose Rust implementation is verified against zarr-python / numcodecs (see
  ``tests/test_pipeline_codecs.py``) run in Rust; anything else stays in Python, as do codec
  classes a user registered to replace zarr's own.

Each function returns either what the engine needs or a string: the reason the array (or chunk
spec) stays in zarr-python's pipeline.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import numpy as np

from sparsezarr._compat import regular_chunk_shape, sharding_index_location

if TYPE_CHECKING:
    from collections.abc import Iterable

    from zarr.abc.codec import Codec
    from zarr.core.array_spec import ArraySpec
    from zarr.core.metadata import ArrayMetadata

#: v3 codecs that run in Rust (each verified against zarr-python's implementation).
RUST_CODECS_V3 = frozenset(
    {
        "bytes",
        "transpose",
        "crc32c",
        "gzip",
        "zstd",
        "blosc",
        "sharding_indexed",
        "numcodecs.zlib",
        "numcodecs.bz2",
        "sparsezarr.sparse",
    }
)

#: numcodecs ids (v2 compressors and filters) that run in Rust.
RUST_CODECS_V2 = frozenset({"zlib", "gzip", "bz2", "zstd", "blosc"})

_STOCK_MODULE_PREFIXES = ("zarr.codecs.", "numcodecs.", "sparsezarr.")


class Unsupported(str):
    """The reason an array, codec or data type stays in zarr-python's pipeline."""


#: Returned by :func:`engine_args` for arrays with a zero-length dimension: nothing is ever read or
#: written, so no engine is needed (and this is not a fallback).
EMPTY = Unsupported("the array has no chunks (a zero-length dimension)")


def custom_codec(codecs: Any) -> Unsupported | None:
    """The first codec whose implementation is not zarr-python's or numcodecs' own (users may
    register replacement classes through zarr's configuration), or None."""
    for codec in codecs:
        module = type(codec).__module__ + "."
        if not module.startswith(_STOCK_MODULE_PREFIXES):
            return Unsupported(f"codec {type(codec).__qualname__} is a custom implementation")
        nested = [*getattr(codec, "codecs", ()), *getattr(codec, "index_codecs", ())]
        nested += [c for c in (*(getattr(codec, "filters", None) or ()), getattr(codec, "compressor", None)) if c is not None]
        reason = custom_codec(nested)
        if reason:
            return reason
    return None


def codec_json(codec: Codec) -> dict[str, Any] | Unsupported:
    """The v3 JSON of a codec for the engine, or the reason it does not run in Rust."""
    from zarr.codecs.sharding import ShardingCodec

    if isinstance(codec, ShardingCodec):
        inner = [codec_json(c) for c in codec.codecs]
        index = [codec_json(c) for c in codec.index_codecs]
        for part in (*inner, *index):
            if isinstance(part, Unsupported):
                return part
        return {
            "name": "sharding_indexed",
            "configuration": {
                "chunk_shape": list(codec.chunk_shape),
                "codecs": inner,
                "index_codecs": index,
                "index_location": sharding_index_location(codec),
                # Not stored metadata (zarr >= 3.4 codec attribute; zarr 3.1 always writes
                # Morton order): the engine's physical order of inner chunks in new shards.
                "subchunk_write_order": getattr(codec, "subchunk_write_order", "morton"),
            },
        }
    try:
        d = codec.to_dict()
    except Exception as e:  # noqa: BLE001 - a codec without a v3 form stays in Python
        return Unsupported(f"codec {type(codec).__name__} has no zarr v3 form ({e})")
    name = d.get("name")
    if name not in RUST_CODECS_V3:
        return Unsupported(f"codec {name!r} runs in Python")
    inner_codec = getattr(codec, "_codec", None)
    if name.startswith("numcodecs.") and inner_codec is not None:
        # Spell out numcodecs' defaults (zarr-python stores only what the user gave).
        config = dict(inner_codec.get_config())
        config.pop("id", None)
        d = {"name": name, "configuration": config}
    return d


def codecs_json(codecs: Any) -> list[dict[str, Any]] | Unsupported:
    out = []
    for codec in codecs:
        j = codec_json(codec)
        if isinstance(j, Unsupported):
            return j
        out.append(j)
    return out


def _bytes_endians(codecs: list[dict[str, Any]]) -> set[str]:
    found: set[str] = set()
    for c in codecs:
        cfg = c.get("configuration") or {}
        if c["name"] == "bytes":
            found.add(cfg.get("endian") or "none")
        if c["name"] == "sharding_indexed":
            found |= _bytes_endians(cfg["codecs"])
    return found


def physical_data_type(dtype: np.dtype[Any], codecs: list[dict[str, Any]]) -> Any:
    """A v3 data type zarrs implements with the memory layout of ``dtype``, or a reason."""
    kind = dtype.kind
    if kind in "biufc" and dtype.fields is None and dtype.subdtype is None:
        return np.dtype(dtype.newbyteorder("=")).name if kind != "b" else "bool"
    if kind in "Mm":
        return "int64"
    if kind == "U":
        return {"name": "fixed_length_utf32", "configuration": {"length_bytes": dtype.itemsize}}
    if kind in "SV":
        multibyte_fields = dtype.fields is not None and any(f[0].itemsize > 1 and f[0].byteorder != "|" for f in dtype.fields.values())
        if multibyte_fields and (
            "big" in _bytes_endians(codecs) or not all(f[0].isnative or f[0].byteorder == "|" for f in dtype.fields.values())  # type: ignore[union-attr]
        ):
            return Unsupported(f"structured data type {dtype} needs per-field byte swapping")
        return f"r{8 * dtype.itemsize}"
    return Unsupported(f"data type {dtype} (variable-length) runs in Python")


def fill_bytes(dtype: np.dtype[Any], fill: Any) -> bytes:
    """The fill value as native-order element bytes."""
    native = dtype.newbyteorder("=") if dtype.fields is None else dtype
    return np.asarray(fill, dtype=dtype).astype(native).tobytes()


def _chunk_shape(metadata: ArrayMetadata) -> tuple[int, ...] | Unsupported:
    from zarr.core.metadata.v2 import ArrayV2Metadata

    if isinstance(metadata, ArrayV2Metadata):
        return tuple(metadata.chunks)
    shape = regular_chunk_shape(metadata)
    if shape is None:
        return Unsupported(f"chunk grid {metadata.chunk_grid.to_dict().get('name')!r} runs in Python")
    return shape


def _v2_placeholder_fill(dtype: np.dtype[Any]) -> Any:
    """A v2 fill value zarrs parses for ``dtype`` (the real one is passed as bytes)."""
    import base64

    kind = dtype.kind
    if kind == "b":
        return False
    if kind in "iu":
        return 0
    if kind == "f":
        return 0.0
    if kind == "c":
        return [0.0, 0.0]
    if kind == "U":
        return ""
    return base64.b64encode(bytes(dtype.itemsize)).decode()


def _v2_physical_dtype(dtype: np.dtype[Any]) -> str | None:
    kind = dtype.kind
    order = "<" if dtype.byteorder in ("<", "=", "|") and (dtype.byteorder != "=" or np.little_endian) else ">"
    if kind in "Mm":
        return f"{order}i8"
    if kind in "SV":
        if dtype.fields is not None and any(f[0].itemsize > 1 and not f[0].isnative and f[0].byteorder != "|" for f in dtype.fields.values()):
            return None
        return f"|V{dtype.itemsize}"
    if kind in "biufcU":
        return dtype.str
    return None


def engine_args(metadata: ArrayMetadata) -> tuple[str, dict[str, Any]] | Unsupported:
    """How to build the engine for ``metadata``: ``("v3", kwargs of ArrayEngine.from_parts)``,
    ``("v2", kwargs of ArrayEngine(...))``, ``"empty"`` for arrays without any chunk, or a
    reason to stay in Python."""
    from zarr.core.metadata.v2 import ArrayV2Metadata

    chunk_shape = _chunk_shape(metadata)
    if isinstance(chunk_shape, Unsupported):
        return chunk_shape
    if 0 in chunk_shape or 0 in metadata.shape:
        return EMPTY
    if isinstance(metadata, ArrayV2Metadata):
        dtype = metadata.dtype.to_native_dtype()
        phys = _v2_physical_dtype(dtype)
        if phys is None:
            return Unsupported(f"data type {dtype} runs in Python")
        for c in [*(metadata.filters or ()), *([metadata.compressor] if metadata.compressor else [])]:
            cid = getattr(c, "codec_id", None)
            if cid not in RUST_CODECS_V2:
                return Unsupported(f"numcodecs codec {cid!r} runs in Python")
        fill: Any = metadata.fill_value
        if fill is None:
            fill = metadata.dtype.default_scalar()
        doc = metadata.to_dict()
        doc.pop("attributes", None)
        doc["dtype"] = phys
        doc["fill_value"] = _v2_placeholder_fill(np.dtype(phys))
        return "v2", {"metadata_json": json.dumps(doc), "fill_bytes": fill_bytes(dtype, fill)}
    parts = _parts_args(metadata.codecs, chunk_shape, metadata.data_type.to_native_dtype(), metadata.fill_value)
    return parts if isinstance(parts, Unsupported) else ("v3", parts)


def spec_engine_args(codecs: Any, spec: ArraySpec) -> dict[str, Any] | Unsupported:
    """``ArrayEngine.from_parts`` arguments for chunks of ``spec`` (codec-only pipelines)."""
    if 0 in spec.shape:
        return Unsupported("empty chunk shape")
    custom = custom_codec(codecs)
    if custom is not None:
        return custom
    fill = spec.fill_value
    if fill is None:
        fill = spec.dtype.default_scalar()
    return _parts_args(codecs, spec.shape, spec.dtype.to_native_dtype(), fill)


def _parts_args(codecs: Any, chunk_shape: Iterable[int], dtype: np.dtype[Any], fill: Any) -> dict[str, Any] | Unsupported:
    """``ArrayEngine.from_parts`` arguments: the codec chain as JSON, the chunk shape, the
    physical data type the codecs see, and the fill value as native bytes (or why not)."""
    cj = codecs_json(codecs)
    if isinstance(cj, Unsupported):
        return cj
    phys = physical_data_type(dtype, cj)
    if isinstance(phys, Unsupported):
        return phys
    try:
        fb = fill_bytes(dtype, fill)
    except Exception as e:  # noqa: BLE001 - a fill value numpy cannot hold stays in Python
        return Unsupported(f"fill value {fill!r}: {e}")
    return {"codecs_json": json.dumps(cj), "chunk_shape": list(chunk_shape), "data_type_json": json.dumps(phys), "fill_bytes": fb}
