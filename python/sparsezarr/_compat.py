"""Everything sparsezarr needs from zarr-python that its public API does not give, in one place.

sparsezarr supports zarr-python 3.1.6 through 3.4.x. Each function below says which zarr versions
it was checked against and why the public API is not enough. Nothing else in the package touches
private names of zarr or branches on zarr's version: when a new zarr release moves something, this
module is the only one to change (and ``tests/test_compat.py`` is the test that notices).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import zarr
from zarr.storage import LocalStore, MemoryStore

if TYPE_CHECKING:
    from typing import TypeAlias

    from zarr.core.metadata import ArrayV3Metadata
    from zarr.core.metadata.v3 import ChunkGridMetadata

    #: What ``Codec.validate`` / ``CodecPipeline.validate`` take as ``chunk_grid``: the grid's
    #: metadata in zarr 3.4 (``zarr.core.chunk_grids.ChunkGrid`` in zarr 3.1 to 3.3). The type
    #: checker runs against the newest zarr.
    ChunkGrid: TypeAlias = ChunkGridMetadata

#: The installed zarr-python as ``(major, minor)``.
ZARR_VERSION: tuple[int, int] = tuple(int(part) for part in zarr.__version__.split(".")[:2])  # type: ignore[assignment]


def regular_chunk_shape(metadata: ArrayV3Metadata) -> tuple[int, ...] | None:
    """The chunk (for sharded arrays: shard) shape of a v3 array on a regular grid, or None for
    any other grid.

    zarr 3.1/3.2 model the grid as ``zarr.core.chunk_grids.RegularChunkGrid``; zarr 3.4 replaced it
    with ``zarr.core.metadata.v3.RegularChunkGridMetadata`` (and added rectilinear grids), and
    ``ArrayV3Metadata.chunks`` changed meaning (the inner chunk shape of sharded arrays in 3.4).
    The grid's JSON form (``Metadata.to_dict``) is the same in every version, so that is what is
    read here.
    """
    doc: dict[str, Any] = dict(metadata.chunk_grid.to_dict())  # JSON, whose shape is checked below
    if doc.get("name") != "regular":
        return None
    config = doc.get("configuration") or {}
    shape = config.get("chunk_shape")
    if not isinstance(shape, Sequence):
        return None
    return tuple(int(s) for s in shape)


def sharding_index_location(codec: Any) -> str:
    """A sharding codec's index location as its JSON string (``"start"`` or ``"end"``).

    zarr 3.1 holds an enum (``ShardingCodecIndexLocation``), zarr 3.4 the plain string.
    """
    location = codec.index_location
    return str(getattr(location, "value", location))


def memory_mapping(store: Any) -> dict[str, Any] | None:
    """The dict behind a plain ``MemoryStore`` (exact type, holding a plain ``dict``), else None.

    The engine reads and writes it directly instead of going through one coroutine per key.
    ``MemoryStore._store_dict`` is private but has the same name and meaning in zarr 3.1 to 3.4
    (3.4 copies buffers on ``set``; we always store fresh buffers, so that is kept).
    Subclasses (``ManagedMemoryStore``, ``GpuMemoryStore``) and other mappings are excluded.
    """
    if type(store) is not MemoryStore:
        return None
    mapping = getattr(store, "_store_dict", None)
    return mapping if type(mapping) is dict else None


def is_local_store(store: Any) -> bool:
    """Whether ``store`` is exactly zarr's ``LocalStore`` (subclasses may change how values are
    stored or checked, so they are not handled natively)."""
    return type(store) is LocalStore


async def ensure_open(store: Any) -> None:
    """Open a store before the engine touches its files or mapping behind zarr's back.

    zarr opens stores lazily on first I/O through the store's own methods (``_is_open`` and the
    coroutine ``_open``, private in 3.1 to 3.4; a ``LocalStore`` opened in mode ``w`` clears its
    directory there). The engine bypasses those methods, so it opens the store the same way first.
    """
    if not getattr(store, "_is_open", True):
        await store._open()


def check_writable(store: Any) -> None:
    """Raise zarr's own error for writes to a read-only store (``Store._check_writable``, private
    in 3.1 to 3.4, raises ``ValueError`` with zarr's message)."""
    store._check_writable()
