"""Metadata changes that span several keys, made all-or-nothing across crashes.

An append changes four metadata documents (``indptr``'s, ``data``'s and ``indices``' lengths and
the group's ``shape``) and the root's consolidated copy of them. No store writes several keys
atomically, so a writer killed between two of them used to leave a group that no longer opened.
Here the change goes through a small journal, the way a database commits:

1. every value the new metadata points to is already stored (beyond the old ends, invisible);
2. the journal ``<group>/.sparsezarr-pending.json`` is written in one atomic put; it holds the
   new and the old text of every document. **Writing it is the commit point**;
3. the documents are written: the root's consolidated metadata first (readers that use it, as
   ``anndata.read_zarr`` does, switch from the old matrix to the new one in one step), then the
   arrays, then the group;
4. the journal is deleted.

A writer killed after step 2 leaves the journal behind: the next :func:`complete` (run by the
next append, and by sparsezarr's readers when they find the documents disagree) writes the new
documents again and deletes it. A writer whose step 3 *fails* (full disk, I/O error) puts the old
documents back before raising, so a failed call leaves the group as it was.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync

try:
    import fcntl
except ImportError:  # pragma: no cover - not on Windows
    fcntl = None  # type: ignore[assignment]

from sparsezarr._settings import durable
from sparsezarr._stores import fsync_path, local_dir

_HAVE_FLOCK = fcntl is not None

#: The journal's key, in the group it commits to.
PENDING = ".sparsezarr-pending.json"

Documents = dict[str, dict[str, Any]]


def _key(group_path: str, name: str) -> str:
    return f"{group_path}/{name}" if group_path else name


def _writable(store: Any) -> Any:
    """The store, or a writable twin of a read-only one (a reader completing a crashed commit)."""
    if not getattr(store, "read_only", False):
        return store
    with_read_only = getattr(store, "with_read_only", None)
    if with_read_only is None:  # pragma: no cover - zarr < 3.1
        raise PermissionError("the store is read-only")
    return with_read_only(False)


def get_json(store: Any, key: str) -> dict[str, Any] | None:
    """A JSON document from the store (None if the key has no value)."""
    buf = sync(store.get(key, prototype=default_buffer_prototype()))
    return None if buf is None else json.loads(buf.to_bytes())


def _put(store: Any, key: str, doc: Any) -> None:
    """One atomic put, through the Rust store (in a local directory: a hidden temporary file
    renamed over the key, so a killed writer leaves nothing that a listing shows)."""
    from sparsezarr._stores import rust_store

    rust_store(store).set(key, json.dumps(doc, indent=2).encode())


def commit(store: Any, group_path: str, new: Documents) -> None:
    """Replace the metadata documents ``new`` (store key -> document) as one unit, through the
    journal of the group at ``group_path`` (see the module's description). The caller holds
    the group's :func:`group_lock`."""
    old = {key: get_json(store, key) for key in new}
    journal = {"sparsezarr_pending": 1, "new": new, "old": old}
    jkey = _key(group_path, PENDING)
    _put(store, jkey, journal)  # the commit point
    try:
        _apply(store, new)
    except BaseException as failure:
        try:
            _apply(store, {k: v for k, v in old.items() if v is not None})
            _delete(store, jkey)
        except Exception as e:  # noqa: BLE001 - the old documents could not be restored either; the first error is raised
            failure.add_note(
                f"sparsezarr: restoring the old metadata failed too ({e!r}); the commit journal {jkey} stays "
                "and the change will be completed when the group is next opened by sparsezarr"
            )
        raise
    _delete_done(store, jkey)


def _delete_done(store: Any, key: str) -> None:
    """Delete the journal of a change that is complete: if that fails, the change stands (a
    later :func:`complete` writes the same documents again and deletes it); say so instead of
    raising."""
    try:
        _delete(store, key)
    except OSError as e:
        warnings.warn(f"sparsezarr: the change is complete but its journal {key} could not be removed ({e})", RuntimeWarning, stacklevel=3)


def _delete(store: Any, key: str) -> None:
    """Delete a journal (and, with ``codec_pipeline.durable``, flush its directory)."""
    sync(store.delete(key))
    d = local_dir(store, key.rpartition("/")[0])
    if d is not None and durable():
        fsync_path(d)


def _apply(store: Any, docs: Documents) -> None:
    """Write documents in commit order: the root's first, then the deepest keys first (arrays
    before their group)."""
    for key in sorted(docs, key=lambda k: (k != "zarr.json", -k.count("/"), k)):
        _put(store, key, docs[key])


def complete(store: Any, group_path: str) -> bool:
    """Finish a commit that a writer left behind when it died (roll it forward: the swap, the
    new documents, the consolidated metadata) and delete its journal. Returns whether there was
    one. Takes the group's lock."""
    if get_json(store, _key(group_path, PENDING)) is None:
        return False
    with group_lock(store, group_path):
        journal = get_json(store, _key(group_path, PENDING))  # again, under the lock
        if journal is None:
            return False
        target = _writable(store)
        _finish(target, journal)
        _delete(target, _key(group_path, PENDING))
    return True


def recover(store: Any, path: str) -> bool:
    """Complete the commits that crashed writers left at the group ``path`` of a local directory
    or at any group above it (a replaced group's journal lives in its parent). A few ``stat``
    calls when there is none; other stores are not searched (their appends are completed when a
    reader finds the documents disagree). Returns whether one was completed."""
    if local_dir(store, "") is None:
        return False
    found = False
    p = path
    while True:
        d = local_dir(store, p)
        if d is not None and (d / PENDING).exists() and complete(store, p):
            found = True
        if not p:
            return found
        p = p.rpartition("/")[0]


def _inode(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_dev, st.st_ino]


def swap_in(store: Any, base: str, staged_store: Any, staged_path: str) -> None:
    """Put a completely written group (``staged_path`` of ``staged_store``, local) in place of the
    group at ``base`` of the local ``store``, and refresh the root's consolidated metadata.

    The root group is exchanged in one atomic ``renameat2(RENAME_EXCHANGE)`` with its consolidated
    metadata inside. A group below the root goes through a journal in its parent (the staged
    directory's inode tells a recovering reader whether the exchange happened) because the root's
    consolidated copy of its metadata is a second change."""
    from sparsezarr._stores import fsync_tree, reconsolidate, replace_dir, root_is_consolidated

    live, staged = local_dir(store, base), local_dir(staged_store, staged_path)
    if live is None or staged is None:
        raise ValueError("swap_in works on local directories only")
    if not base:
        if (get_json(staged_store, "zarr.json") or {}).get("node_type") == "group":
            reconsolidate(staged_store, force=True)
        if durable():
            fsync_tree(staged)
        replace_dir(live, staged)
        if durable():
            fsync_path(live.parent)
        return
    if durable():
        fsync_tree(staged)
    parent = base.rpartition("/")[0]
    journal = {"sparsezarr_pending": 1, "swap": {"live": base, "staged": staged_path, "inode": _inode(staged)}}
    journal["reconsolidate"] = root_is_consolidated(store)
    jkey = _key(parent, PENDING)
    with group_lock(store, parent):
        _put(store, jkey, journal)  # the commit point
        exchanged = False
        try:
            replace_dir(live, staged, remove_old=False)  # the old group is now at `staged`
            exchanged = True
            if durable():
                fsync_path(live.parent)
            if journal["reconsolidate"]:
                reconsolidate(store, force=True)
        except BaseException:
            # A live writer that fails (a full disk, an I/O error) undoes the exchange, which
            # needs no space: the call fails and the group is as it was.
            with contextlib.suppress(Exception):
                if exchanged:
                    replace_dir(staged, live, remove_old=False)
                _delete(store, jkey)
            raise
        shutil.rmtree(staged, ignore_errors=True)
        _delete_done(store, jkey)


def _finish(store: Any, journal: dict[str, Any]) -> None:
    """Carry out a journal's changes; each step can be repeated."""
    from sparsezarr._stores import reconsolidate, replace_dir

    swap = journal.get("swap")
    old: Path | None = None
    if swap is not None:
        live, staged = local_dir(store, swap["live"]), local_dir(store, swap["staged"])
        assert live is not None and staged is not None
        if staged.exists():
            # the staged directory keeps its inode: still there, it was not yet exchanged
            old = replace_dir(live, staged, remove_old=False) if _inode(staged) == swap["inode"] else staged
        if durable():
            fsync_path(live.parent)
    if "new" in journal:
        _apply(store, journal["new"])
    if journal.get("reconsolidate"):
        reconsolidate(store, force=True)
        root = local_dir(store, "")
        if root is not None and durable():
            fsync_path(root)
    if old is not None:  # the replaced group goes last: the window between the exchange and
        shutil.rmtree(old, ignore_errors=True)  # the consolidated metadata stays two calls wide


def consolidated_update(store: Any, group_path: str, changes: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """The root document with its consolidated copies of the nodes in ``changes`` (node path
    relative to the root -> fields to set) updated, or None when the root has no consolidated
    metadata."""
    root = get_json(store, "zarr.json")
    if root is None:
        return None
    cm = root.get("consolidated_metadata")
    if not isinstance(cm, dict) or not isinstance(cm.get("metadata"), dict):
        return None
    entries = cm["metadata"]
    for node, fields in changes.items():
        if node == "":
            root.update(fields)
        elif node in entries:
            entries[node] = {**entries[node], **fields}
    return root


@contextlib.contextmanager
def group_lock(store: Any, path: str) -> Iterator[None]:
    """Serialize writers of one group of a local directory across threads and processes: an
    exclusive ``flock`` on the group's directory, which the kernel releases when its holder
    exits, however it exits (a crashed writer never blocks the next one). Other stores are not
    locked: changes to one group of an object store must come from one writer at a time."""
    directory = local_dir(store, path)
    if directory is None or not directory.is_dir() or not _HAVE_FLOCK:
        yield
        return
    name = str(directory.resolve())
    with _thread_locks_guard:
        thread_lock = _thread_locks.setdefault(name, threading.RLock())
    with thread_lock:
        if _depth.get(name, 0):  # this thread holds it already (an append completing a journal)
            _depth[name] += 1
            try:
                yield
            finally:
                _depth[name] -= 1
            return
        fd = os.open(directory, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            _depth[name] = 1
            yield
        finally:
            _depth[name] = 0
            os.close(fd)  # releases the lock


_thread_locks: dict[str, threading.RLock] = {}
_thread_locks_guard = threading.Lock()
_depth: dict[str, int] = {}  # per directory: how deep its holder (one thread at a time) is
