"""Store plumbing shared by the single-cell and virtual-array modules: the Rust view of a
zarr-python store, resolving user targets to groups, and crash-safe replacement of groups.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync
from zarr.storage import LocalStore

from sparsezarr import _lib
from sparsezarr._compat import memory_mapping


def rust_store(store: Any) -> Any:
    """The store as the Rust engine sees it: a local directory natively, anything else through
    callbacks into zarr-python (correct for every store; I/O then holds the GIL)."""
    if type(store) is LocalStore:
        return _lib.LocalStore(str(store.root), read_only=store.read_only)
    proto = default_buffer_prototype()
    d = memory_mapping(store)
    if d is not None:

        def get_mem(key: str) -> Any:
            buf = d.get(key)
            return None if buf is None else buf.as_numpy_array()

        def set_mem(key: str, value: Any) -> None:
            if value is None:
                d.pop(key, None)
            else:
                d[key] = proto.buffer.from_array_like(value)

        return _lib.CallbackStore(get_mem, set_mem, read_only=store.read_only)

    def get(key: str) -> Any:
        buf = sync(store.get(key, prototype=proto))
        return None if buf is None else buf.as_numpy_array()

    def put(key: str, value: Any) -> None:
        if value is None:
            sync(store.delete(key))
        else:
            sync(store.set(key, proto.buffer.from_array_like(np.asarray(value))))

    return _lib.CallbackStore(get, put, read_only=store.read_only)


def array_json(array: zarr.Array) -> str:
    """The metadata document of an array (``zarr.json`` or ``.zarray``) as JSON text."""
    docs = array.metadata.to_buffer_dict(default_buffer_prototype())
    key = "zarr.json" if array.metadata.zarr_format == 3 else ".zarray"
    return docs[key].to_bytes().decode()


def key_prefix(node: zarr.Array | zarr.Group) -> str:
    """The prefix of the keys below a node (its path and ``/``, or empty at the root)."""
    path = node.store_path.path
    return f"{path}/" if path else ""


def open_group(target: Any, path: str = "", mode: str = "r") -> zarr.Group:
    """A group from a path, a store or a group (``path`` below it)."""
    if isinstance(target, zarr.Group):
        return target if not path else target[path] if mode == "r" else _sub_group(target, path, mode)
    if isinstance(target, str | os.PathLike):
        target = str(target)
    return zarr.open_group(store=target, path=path or None, mode=mode)


def _sub_group(group: zarr.Group, path: str, mode: str) -> zarr.Group:
    if mode in ("w", "w-") or path not in group:
        return group.create_group(path, overwrite=mode == "w")
    node = group[path]
    if not isinstance(node, zarr.Group):
        raise ValueError(f"{path!r} in {group} is an array, not a group")
    return node


def local_dir(store: Any, path: str) -> Path | None:
    """The directory of ``path`` in a local store (None for other stores)."""
    if type(store) is LocalStore:
        return Path(store.root) / path if path else Path(store.root)
    return None


def staging(store: Any, path: str) -> tuple[Any, str]:
    """Where to build a replacement of the group at ``path`` of a local store: a hidden, unique
    sibling (for the store's root: a sibling directory of the root, as a store of its own)."""
    tag = f"sparsezarr-new-{uuid.uuid4().hex[:12]}"
    if not path:
        root = Path(store.root)
        return LocalStore(str(root.with_name(f".{root.name}.{tag}"))), ""
    head, _, name = path.rpartition("/")
    staged = f".{name}.{tag}"
    return store, f"{head}/{staged}" if head else staged


def replace_dir(old: Path, new: Path) -> None:
    """Make ``new`` (a fully written directory) take the place of ``old``, atomically where the
    file system allows: readers see the old or the new contents, never neither."""
    if not old.exists():
        os.replace(new, old)
        return
    try:
        _lib.exchange_paths(str(new), str(old))
    except NotImplementedError:
        trash = old.with_name(f".{old.name}.sparsezarr-old-{uuid.uuid4().hex[:12]}")
        os.replace(old, trash)
        os.replace(new, old)
        new = trash
    shutil.rmtree(new, ignore_errors=True)


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
    """Refresh the root's consolidated metadata (if it has some, or if ``force``)."""
    if force or root_is_consolidated(store):
        zarr.consolidate_metadata(store)
