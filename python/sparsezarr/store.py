"""``RustStore``: a zarr-python store whose I/O runs in sparsezarr's Rust core.

zarr-python's stores do their I/O in Python (``LocalStore`` through ``asyncio.to_thread`` and
file objects, ``FsspecStore`` through aiohttp). A ``RustStore`` hands every get, set, delete and
listing to the core's store layer (``sparsezarr._lib.Store``): a local directory, or an object
store (S3 and S3-compatible servers, Google Cloud Storage, Azure Blob Storage, plain HTTP) reached
natively through the ``object_store`` crate, with the GIL released. It is a complete
``zarr.abc.store.Store`` (zarr's own ``StoreTests`` run against it, ``tests/test_rust_store.py``),
so anything that takes a zarr store takes it::

    store = sparsezarr.RustStore("s3://bucket/atlas.zarr", options={"aws_region": "eu-west-1"})
    arr = zarr.open_array(store, path="X/data")

With ``sparsezarr.Pipeline`` configured, chunk I/O on a ``RustStore`` never leaves Rust: the
pipeline uses the store's handle directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Iterable, Mapping
from pathlib import Path
from typing import Any

from zarr.abc.store import ByteRequest, OffsetByteRequest, RangeByteRequest, Store, SuffixByteRequest
from zarr.core.buffer import Buffer, BufferPrototype, default_buffer_prototype

from sparsezarr import _lib
from sparsezarr._settings import Settings, durable

__all__ = ["RustStore"]

_SCHEMES = ("s3://", "s3a://", "gs://", "gcs://", "az://", "azure://", "abfs://", "abfss://", "http://", "https://")


def _range(byte_range: ByteRequest | None) -> tuple[int, int | None, int | None]:
    """(offset, length, suffix) for the core's ``Store.read`` from a zarr byte request."""
    if byte_range is None:
        return 0, None, None
    if isinstance(byte_range, RangeByteRequest):
        if byte_range.start < 0 or byte_range.end < byte_range.start:
            raise ValueError(f"invalid byte range {byte_range.start}..{byte_range.end}")
        return byte_range.start, byte_range.end - byte_range.start, None
    if isinstance(byte_range, OffsetByteRequest):
        if byte_range.offset < 0:
            raise ValueError(f"invalid byte offset {byte_range.offset}")
        return byte_range.offset, None, None
    if isinstance(byte_range, SuffixByteRequest):
        if byte_range.suffix < 0:
            raise ValueError(f"invalid byte suffix {byte_range.suffix}")
        return 0, None, byte_range.suffix
    raise TypeError(f"Unexpected byte_range, got {byte_range}.")


class RustStore(Store):
    """A zarr-python store backed by sparsezarr's Rust store layer.

    Parameters
    ----------
    location
        A local directory (a path, or a ``file://`` URL), or an object-store URL:
        ``s3://bucket/prefix``, ``gs://bucket/prefix``, ``az://container/prefix``,
        ``http(s)://host/path``.
    options
        Object-store configuration, as the ``object_store`` crate names it (for example
        ``aws_endpoint``, ``aws_region``, ``aws_access_key_id``, ``aws_secret_access_key``,
        ``aws_allow_http``, ``google_service_account``, ``azure_storage_account_name``). Values
        not given are taken from the environment (``AWS_*``, ``GOOGLE_*``, ``AZURE_*``). Not
        allowed for local directories.
    read_only
        Refuse every write and delete (zarr's ``ValueError``).
    durable
        Local directories only: fsync each value and its directory before a write returns
        (default: the ``codec_pipeline.durable`` setting; docs/reliability.md).

    Values are written whole and atomically (a local write goes through a hidden temporary file
    and a rename; an object store's PUT is atomic); a missing key reads as ``None``; deleting a
    missing key is not an error.
    """

    supports_writes: bool = True
    supports_deletes: bool = True
    supports_listing: bool = True

    def __init__(
        self,
        location: str | os.PathLike[str],
        *,
        options: Mapping[str, str] | None = None,
        read_only: bool = False,
        durable: bool | None = None,
    ) -> None:
        super().__init__(read_only=read_only)
        text = os.fspath(location)
        self._options = {str(k): str(v) for k, v in (options or {}).items()}
        self._durable = durable
        if text.lower().startswith(_SCHEMES):
            if durable:
                raise ValueError("durable=True applies to local directories only (an object store's PUT is durable when it returns)")
            self._local: Path | None = None
            self.location = text
        else:
            if self._options:
                raise ValueError(f"options are for object stores; {text!r} is a local directory")
            path = Path(text.removeprefix("file://")) if text.startswith("file://") else Path(text)
            self._local = path.expanduser().absolute()
            self.location = str(self._local)
        self._handle: _lib.Store | None = None

    # ------------------------------------------------------------------ identity
    @property
    def handle(self) -> _lib.Store:
        """The core's store handle (created on first use; shared by zarr-python and the pipeline)."""
        if self._handle is None:
            if self._local is not None:
                self._handle = _lib.Store.local(
                    str(self._local), read_only=self.read_only, durable=durable() if self._durable is None else self._durable
                )
            else:
                s = Settings.from_config()
                self._handle = _lib.Store.object_url(
                    self.location,
                    self._options,
                    read_only=self.read_only,
                    max_in_flight=s.remote_max_in_flight,
                    multipart_threshold=s.multipart_threshold_bytes,
                )
        return self._handle

    @property
    def root(self) -> Path | None:
        """The local directory, or ``None`` for an object store."""
        return self._local

    def __repr__(self) -> str:
        return f"RustStore({self.location!r})"

    def __str__(self) -> str:
        return self._local.as_uri() if self._local is not None else self.location

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RustStore) and (self.location, self._options) == (other.location, other._options)

    def __hash__(self) -> int:
        return hash((self.location, tuple(sorted(self._options.items()))))

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_handle"] = None  # rebuilt on first use where unpickled
        state["_is_open"] = False
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def with_read_only(self, read_only: bool = False) -> RustStore:
        """The same location, opened read-only (or writable)."""
        return type(self)(self.location, options=self._options, read_only=read_only, durable=self._durable)

    async def _open(self) -> None:
        if self._local is not None and not self.read_only:
            self._local.mkdir(parents=True, exist_ok=True)
        await super()._open()

    # ------------------------------------------------------------------ reads
    def _read(self, key: str, byte_range: ByteRequest | None) -> bytes | None:
        offset, length, suffix = _range(byte_range)
        handle = self.handle
        if suffix is not None or length is not None or offset:
            try:
                got = handle.read(key, offset, length, suffix)
            except _lib.CorruptChunkError:
                # A range past the end of the value: what remains of it, as zarr's stores return.
                whole = handle.get(key)
                if whole is None:
                    return None
                end = len(whole) if length is None else offset + length
                return bytes(whole[offset:end])
            return None if got is None else got[0]
        return handle.get(key)

    async def get(self, key: str, prototype: BufferPrototype | None = None, byte_range: ByteRequest | None = None) -> Buffer | None:
        """The value of ``key`` (or the requested bytes of it); ``None`` if it is missing."""
        _range(byte_range)  # invalid requests fail here, before any I/O
        prototype = prototype or default_buffer_prototype()
        if not self._is_open:
            await self._open()
        data = await asyncio.to_thread(self._read, key, byte_range)
        return None if data is None else prototype.buffer.from_bytes(data)

    async def get_partial_values(self, prototype: BufferPrototype, key_ranges: Iterable[tuple[str, ByteRequest | None]]) -> list[Buffer | None]:
        """Values for several (key, range) pairs, read concurrently."""
        return list(await asyncio.gather(*(self.get(key, prototype, byte_range) for key, byte_range in key_ranges)))

    def get_sync(self, key: str, *, prototype: BufferPrototype | None = None, byte_range: ByteRequest | None = None) -> Buffer | None:
        """Synchronous :meth:`get` (zarr's ``SupportsGetSync``)."""
        data = self._read(key, byte_range)
        return None if data is None else (prototype or default_buffer_prototype()).buffer.from_bytes(data)

    async def exists(self, key: str) -> bool:
        return await self.getsize_or_none(key) is not None

    async def getsize_or_none(self, key: str) -> int | None:
        """The size of ``key`` in bytes, or ``None`` if it is missing (one metadata request)."""
        got = await asyncio.to_thread(self.handle.read, key, 0, 0, None)
        return None if got is None else int(got[1])

    async def getsize(self, key: str) -> int:
        size = await self.getsize_or_none(key)
        if size is None:
            raise FileNotFoundError(key)
        return size

    # ------------------------------------------------------------------ writes
    async def set(self, key: str, value: Buffer) -> None:
        """Store ``value`` under ``key``, whole and atomically."""
        self._check_writable()
        if not self._is_open:
            await self._open()
        if not isinstance(value, Buffer):
            raise TypeError(f"RustStore.set(): `value` must be a Buffer instance. Got an instance of {type(value)} instead.")
        await asyncio.to_thread(self.handle.set, key, value.to_bytes())

    def set_sync(self, key: str, value: Buffer) -> None:
        """Synchronous :meth:`set` (zarr's ``SupportsSetSync``)."""
        self._check_writable()
        self.handle.set(key, value.to_bytes())

    async def set_if_not_exists(self, key: str, value: Buffer) -> None:
        """Store ``value`` unless ``key`` exists (one conditional write: no race between check and write)."""
        self._check_writable()
        with contextlib.suppress(_lib.ConflictError):
            await asyncio.to_thread(self.handle.put, key, value.to_bytes(), create_only=True)

    async def delete(self, key: str) -> None:
        """Delete ``key``; a missing key is not an error."""
        self._check_writable()
        await asyncio.to_thread(self.handle.delete, key)

    def delete_sync(self, key: str) -> None:
        """Synchronous :meth:`delete` (zarr's ``SupportsDeleteSync``)."""
        self._check_writable()
        self.handle.delete(key)

    async def delete_dir(self, prefix: str) -> None:
        """Delete every key below ``prefix`` (as a directory: ``prefix/...``)."""
        self._check_writable()
        base = prefix.rstrip("/")
        keys = await self._keys(f"{base}/" if base else "")
        await asyncio.gather(*(asyncio.to_thread(self.handle.delete, k) for k in keys))

    async def clear(self) -> None:
        """Delete every key of the store."""
        await self.delete_dir("")

    # ------------------------------------------------------------------ listing
    async def _keys(self, prefix: str) -> list[str]:
        """Keys starting with ``prefix`` (a string prefix, as zarr's ``list_prefix``)."""
        directory = prefix[: prefix.rfind("/") + 1]
        keys = await asyncio.to_thread(self.handle.list, directory)
        return sorted(k for k in keys if k.startswith(prefix))

    async def list(self) -> AsyncIterator[str]:
        for key in await self._keys(""):
            yield key

    async def list_prefix(self, prefix: str) -> AsyncIterator[str]:
        for key in await self._keys(prefix):
            yield key

    async def list_dir(self, prefix: str) -> AsyncIterator[str]:
        base = prefix.rstrip("/")
        base = f"{base}/" if base else ""
        seen: dict[str, None] = {}
        for key in await self._keys(base):
            seen.setdefault(key[len(base) :].split("/", 1)[0], None)
        for name in seen:
            yield name
