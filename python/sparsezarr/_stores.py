"""Store plumbing shared by the single-cell and virtual-array modules: the Rust view of a
zarr-python store, resolving user targets to groups, and crash-safe replacement of groups.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import zarr
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync
from zarr.storage import LocalStore, WrapperStore

from sparsezarr import _lib
from sparsezarr._compat import memory_mapping
from sparsezarr._remote import logger, object_handle
from sparsezarr._settings import durable

if TYPE_CHECKING:
    from zarr.abc.store import Store as ZarrStore
    from zarr.core.common import AccessModeLiteral


def rust_store(store: ZarrStore) -> _lib.Store:
    """The one bridge from a zarr-python store to the Rust core.

    A ``LocalStore`` becomes a native local store (the core does its own I/O, without the GIL);
    an ``ObjectStore`` (obstore) or ``FsspecStore`` on S3, GCS, Azure or HTTP becomes a native
    object store (``_remote.object_handle``; what cannot be mapped is logged); any other store is reached through four callables (``get_many``, ``set``, ``delete``,
    ``list``): a ``MemoryStore``'s dict directly, any other store through its async API. Reads
    through callables come in batches (the core fetches what an operation needs with one
    ``get_many`` call, which runs the store's reads concurrently); exceptions the store raises
    reach the caller unchanged.
    """
    if type(store) is LocalStore:
        return _lib.Store.local(str(store.root), read_only=store.read_only, durable=durable())
    remote = object_handle(store)
    if isinstance(remote, _lib.Store):
        return remote
    if remote is not None:
        logger.info("store %r is reached through zarr-python: %s", store, remote)
    proto = default_buffer_prototype()
    d = memory_mapping(store)
    if d is not None:
        mapping = d

        def get_mem(keys: list[str]) -> list[np.ndarray | None]:
            out = []
            for key in keys:
                buf = mapping.get(key)
                out.append(None if buf is None else buf.as_numpy_array())
            return out

        def set_mem(key: str, value: np.ndarray) -> None:
            mapping[key] = proto.buffer.from_array_like(value)

        def delete_mem(key: str) -> None:
            mapping.pop(key, None)

        def list_mem(prefix: str) -> list[str]:
            return [k for k in mapping if k.startswith(prefix)]

        return _lib.Store.python(get_mem, set_mem, delete_mem, list_mem, read_only=store.read_only)

    def get_many(keys: list[str]) -> list[np.ndarray | None]:
        async def fetch() -> list[Any]:
            return await asyncio.gather(*(store.get(k, prototype=proto) for k in keys))

        return [None if b is None else b.as_numpy_array() for b in sync(fetch())]

    def put(key: str, value: np.ndarray) -> None:
        sync(store.set(key, proto.buffer.from_array_like(np.asarray(value))))

    def delete(key: str) -> None:
        sync(store.delete(key))

    def list_prefix(prefix: str) -> list[str]:
        async def collect() -> list[str]:
            return [k async for k in store.list_prefix(prefix)]

        return sync(collect())

    return _lib.Store.python(get_many, put, delete, list_prefix, read_only=store.read_only)


def is_url(target: Any) -> bool:
    """Whether ``target`` is a URL of a remote store (``s3://``, ``gs://``, ``az://``,
    ``https://``, ...) rather than a local path."""
    return isinstance(target, str) and "://" in target and not target.startswith("file://")


def resolve(target: Any, storage_options: dict[str, Any] | None = None, *, read_only: bool = False) -> Any:
    """A URL becomes a zarr store as zarr itself makes one (``FsspecStore.from_url`` with
    ``storage_options``; the core then reaches S3, GCS, Azure or HTTP natively); anything else is
    returned unchanged. ``storage_options`` only apply to URLs."""
    if is_url(target):
        from zarr.storage import FsspecStore

        return FsspecStore.from_url(target, storage_options=storage_options, read_only=read_only)
    if storage_options:
        raise ValueError(f"storage_options apply to URLs only, not to {target!r}")
    return target


def array_json(array: zarr.Array) -> str:
    """The metadata document of an array (``zarr.json`` or ``.zarray``) as JSON text."""
    docs = array.metadata.to_buffer_dict(default_buffer_prototype())
    key = "zarr.json" if array.metadata.zarr_format == 3 else ".zarray"
    return docs[key].to_bytes().decode()


def key_prefix(node: zarr.Array | zarr.Group) -> str:
    """The prefix of the keys below a node (its path and ``/``, or empty at the root)."""
    path = node.store_path.path
    return f"{path}/" if path else ""


def open_group(target: Any, path: str = "", mode: AccessModeLiteral = "r") -> zarr.Group:
    """A group from a path, a store or a group (``path`` below it)."""
    if isinstance(target, zarr.Group):
        if not path:
            return target
        if mode != "r":
            return _sub_group(target, path, mode)
        node = target[path]
        if not isinstance(node, zarr.Group):
            raise ValueError(f"{path!r} in {target} is an array, not a group")
        return node
    if isinstance(target, str | os.PathLike):
        target = str(target)
    return zarr.open_group(store=target, path=path or None, mode=mode)


def _sub_group(group: zarr.Group, path: str, mode: AccessModeLiteral) -> zarr.Group:
    if mode in ("w", "w-") or path not in group:
        return group.create_group(path, overwrite=mode == "w")
    node = group[path]
    if not isinstance(node, zarr.Group):
        raise ValueError(f"{path!r} in {group} is an array, not a group")
    return node


def local_dir(store: Any, path: str) -> Path | None:
    """The directory of ``path`` in a local store: zarr's ``LocalStore`` or a ``RustStore`` on a
    local directory (None for other stores)."""
    if type(store) is LocalStore:
        return Path(store.root) / path if path else Path(store.root)
    from sparsezarr.store import RustStore

    if type(store) is RustStore and store.root is not None:
        return store.root / path if path else store.root
    return None


def native(store: Any) -> Any:
    """The store to create groups and arrays through: for a writable local directory, a
    ``RustStore`` on it, so that every document zarr-python writes while creating them goes
    through the core's atomic writes (hidden temporary files), and a writer killed midway leaves
    nothing visible. zarr's ``LocalStore`` writes ``zarr.<uuid>.partial`` files beside the
    documents, even for parents that exist, which a killed writer leaves in the store."""
    if type(store) is LocalStore and not store.read_only:
        from sparsezarr.store import RustStore

        return RustStore(store.root)
    return store


def staging(store: Any, path: str) -> tuple[Any, str]:
    """Where to build a replacement of the group at ``path`` of a local store: a hidden, unique
    sibling (for the store's root: a sibling directory of the root, as a store of its own),
    reached through :func:`native`."""
    tag = f"sparsezarr-new-{uuid.uuid4().hex[:12]}"
    root = local_dir(store, "")
    assert root is not None, "staging is for local directories"
    if not path:
        from sparsezarr.store import RustStore

        return RustStore(root.with_name(f".{root.name}.{tag}")), ""
    head, _, name = path.rpartition("/")
    staged = f".{name}.{tag}"
    return native(store), f"{head}/{staged}" if head else staged


def replace_dir(old: Path, new: Path, *, remove_old: bool = True) -> Path | None:
    """Make ``new`` (a fully written directory) take the place of ``old``, atomically where the
    file system allows: readers see the old or the new contents, never neither. The old contents
    are removed, or with ``remove_old=False`` left where this returns (None if there were none)."""
    if not old.exists():
        os.replace(new, old)
        return None
    try:
        _lib.exchange_paths(str(new), str(old))
    except NotImplementedError:
        trash = old.with_name(f".{old.name}.sparsezarr-old-{uuid.uuid4().hex[:12]}")
        os.replace(old, trash)
        os.replace(new, old)
        new = trash
    if remove_old:
        shutil.rmtree(new, ignore_errors=True)
    return new


def fsync_tree(root: Path) -> None:
    """Flush every file and directory below ``root`` (and ``root`` in its parent) to the device:
    what zarr-python wrote there (it does not flush) survives a power loss once this returns."""
    for dirpath, _, files in os.walk(root):
        for name in files:
            fsync_path(Path(dirpath) / name)
        fsync_path(Path(dirpath))
    fsync_path(root.parent)


def fsync_path(path: Path) -> None:
    """Flush one file or directory to the device."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def refuse_v3_in_v2(store: Any, path: str) -> None:
    """Refuse to write a zarr v3 group below the root of a zarr v2 hierarchy (anndata < 0.13
    writes v2 by default): zarr-python would add a v3 root document beside the v2 one, after
    which readers see the v3 root and lose every other member of the store."""
    if not path:
        return
    proto = default_buffer_prototype()
    if sync(store.get("zarr.json", prototype=proto)) is None and sync(store.get(".zgroup", prototype=proto)) is not None:
        raise ValueError(
            f"the store is a zarr v2 hierarchy; writing {path!r} as a zarr v3 group would hide its other members "
            "(write to a store of its own, or convert the store to zarr v3 first, e.g. anndata.settings.zarr_write_format = 3)"
        )


def root_is_consolidated(store: Any) -> bool:
    """Whether the store's root group carries consolidated metadata (v3 inline, or v2
    ``.zmetadata``)."""
    import json

    proto = default_buffer_prototype()
    doc = sync(store.get("zarr.json", prototype=proto))
    if doc is not None:
        try:
            meta = json.loads(doc.to_bytes())
        except ValueError:
            return False
        return meta.get("node_type") == "group" and meta.get("consolidated_metadata") is not None
    return sync(store.get(".zmetadata", prototype=proto)) is not None


def reconsolidate(store: Any, force: bool = False) -> None:
    """Refresh the root's consolidated metadata (if it has some, or if ``force``). In a local
    directory the root document is put by the Rust store (a hidden temporary file renamed over
    it: a writer killed meanwhile leaves nothing that a listing shows)."""
    if force or root_is_consolidated(store):
        with warnings.catch_warnings():
            # zarr warns that consolidated metadata is not in the v3 spec: the store has it already
            # (anndata writes it), and refreshing it is not the user's call to warn about.
            warnings.filterwarnings("ignore", message="Consolidated metadata is currently not part", category=UserWarning)
            # ... and that our commit journal or a staged directory (hidden names), when there is
            # one, is not a zarr node.
            warnings.filterwarnings("ignore", message=r"Object at (.*/)?\.[^/]*sparsezarr[^/]* is not recognized", category=UserWarning)
            zarr.consolidate_metadata(_RustPuts(store) if type(store) is LocalStore else store)


class _RustPuts(WrapperStore[Any]):
    """A local store whose puts go through the Rust store."""

    async def set(self, key: str, value: Any) -> None:
        rust_store(self._store).set(key, value.to_bytes())
