"""Handles that travel: what lets :class:`~sparsezarr.CsrArray`, :class:`~sparsezarr.SparseArray`
and :class:`~sparsezarr.VirtualArray` be sent to other processes (dask.distributed workers,
multiprocessing).

A handle holds Rust objects (readers, an open store, a cached index pointer) that cannot be
pickled, and should not be: a 100M-row index pointer is 800 MB. Instead a handle pickles to a
small description: the zarr store it was opened from (zarr's stores pickle their parameters:
a directory, a bucket and its options), the path inside it, its options, the pipeline settings
it was opened with, and a token naming this opening. Unpickled, it reopens lazily and at most
once per process: :func:`restore` keeps the handles reopened in this process by token (a small
LRU), so the thousand tasks of a dask graph that read one matrix share one reader per worker.

A store that lives in one process's memory (``zarr.storage.MemoryStore``) is refused when
pickled, with an error saying why: zarr would copy it, and what other processes then wrote
would silently go to their copies.
"""

from __future__ import annotations

import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, TypeVar

import zarr

from sparsezarr._settings import DEFAULTS

__all__ = ["StoreRef", "new_token", "pipeline_config", "restore"]

#: Handles kept open per process (by token).
CACHE_SIZE = 32

_cache: OrderedDict[str, Any] = OrderedDict()
T = TypeVar("T")
_lock = threading.Lock()


def new_token() -> str:
    """A token naming one opening of a handle (shared by all its pickled copies)."""
    return uuid.uuid4().hex


def pipeline_config() -> dict[str, Any]:
    """The pipeline settings in force (``codec_pipeline.*`` of zarr's configuration), as they
    travel with a handle so that a worker reopens it with the client's settings."""
    config = {key: zarr.config.get(key, None) for key in DEFAULTS}
    config["codec_pipeline.path"] = zarr.config.get("codec_pipeline.path", None)
    return {k: v for k, v in config.items() if v is not None}


def is_process_local(store: Any) -> bool:
    """Whether a zarr store lives in this process's memory only."""
    from zarr.storage import MemoryStore

    return isinstance(store, MemoryStore)


def check_shippable(store: Any, what: str) -> None:
    """Refuse to send ``what`` (held in ``store``) to another process when the store cannot follow."""
    if is_process_local(store):
        raise TypeError(
            f"{what} is held in a zarr MemoryStore, which lives in this process only: it cannot be sent to "
            "another process (a dask.distributed worker, a multiprocessing pool), where writes would go to a "
            "copy and be lost. Store it in a directory or an object store, or use dask's threaded scheduler "
            "(dask.config.set(scheduler='threads'))."
        )


class StoreRef:
    """A zarr store as it travels to other processes: pickled as the store pickles (its
    parameters), refused for stores that live in one process's memory."""

    __slots__ = ("store",)

    def __init__(self, store: Any) -> None:
        self.store = store

    def __reduce__(self) -> tuple[Any, ...]:
        check_shippable(self.store, f"the store {self.store}")
        return (StoreRef, (self.store,))

    def __dask_tokenize__(self) -> Any:
        from sparsezarr._remote import store_url

        return ("sparsezarr.StoreRef", store_url(self.store))

    def __repr__(self) -> str:
        return f"StoreRef({self.store!r})"


def restore(token: str, config: dict[str, Any], factory: Callable[[], T]) -> T:
    """The handle named ``token`` in this process: reopened by ``factory`` (with the client's
    pipeline ``config``) the first time, then kept (up to :data:`CACHE_SIZE` handles)."""
    with _lock:
        found = _cache.get(token)
        if found is not None:
            _cache.move_to_end(token)
            return found  # type: ignore[no-any-return]
    with zarr.config.set(config):
        handle = factory()
    handle._token = token  # type: ignore[attr-defined]
    with _lock:
        _cache[token] = handle
        while len(_cache) > CACHE_SIZE:
            _cache.popitem(last=False)
    return handle


def clear_cache() -> None:
    """Forget the handles reopened in this process (they are reopened on next use)."""
    with _lock:
        _cache.clear()
