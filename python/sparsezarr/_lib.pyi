"""Type stubs of the compiled extension (``sparsezarr._lib``)."""

from collections.abc import Callable
from os import PathLike
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

class UnsupportedError(NotImplementedError): ...
class MetadataError(ValueError): ...
class CorruptChunkError(ValueError): ...
class EncodeError(ValueError): ...
class ReadOnlyError(ValueError): ...
class InternalError(RuntimeError): ...
class ConflictError(RuntimeError): ...

class Store:
    """The one store handle of the core: a local directory, values in memory, a remote object
    store (S3, GCS, Azure, HTTP), or a Python store."""

    @staticmethod
    def local(root: str | PathLike[str], read_only: bool = False, durable: bool = False) -> Store: ...
    @staticmethod
    def memory(read_only: bool = False) -> Store: ...
    @staticmethod
    def object_url(
        url: str,
        options: dict[str, str] | None = None,
        read_only: bool = False,
        max_in_flight: int | None = None,
        multipart_threshold: int | None = None,
    ) -> Store: ...
    @staticmethod
    def obstore(
        store: Any,
        url: str,
        read_only: bool = False,
        max_in_flight: int | None = None,
        multipart_threshold: int | None = None,
    ) -> Store: ...
    @staticmethod
    def python(
        get_many: Callable[[list[str]], list[Any]],
        set: Callable[[str, U8], None],
        delete: Callable[[str], None],
        list: Callable[[str], list[str]] | None = None,
        read_only: bool = False,
    ) -> Store: ...
    @property
    def read_only(self) -> bool: ...
    @property
    def kind(self) -> Literal["local", "memory", "object", "python"]: ...
    def capabilities(self) -> dict[str, bool]: ...
    def get(self, key: str) -> bytes | None: ...
    def set(self, key: str, value: bytes) -> None: ...
    def read(
        self, key: str, offset: int = 0, length: int | None = None, suffix: int | None = None
    ) -> tuple[bytes, int, StoreVersion | None] | None: ...
    def put(self, key: str, value: bytes, *, create_only: bool = False, if_version: StoreVersion | None = None) -> StoreVersion | None: ...
    def delete(self, key: str) -> None: ...
    def list(self, prefix: str = "") -> list[str]: ...

class StoreVersion:
    """One stored version of a value (an object's ETag, a file's identity)."""

BatchInfo = Any
U8 = npt.NDArray[np.uint8]

class ArrayEngine:
    def __init__(
        self,
        metadata_json: str,
        *,
        validate_checksums: bool = True,
        threads: int = 0,
        coalesce_max_gap: int = 65536,
        coalesce_max_bytes: int = 16777216,
    ) -> None: ...
    @staticmethod
    def from_parts(
        codecs_json: str,
        chunk_shape: list[int],
        data_type_json: str,
        fill_value_json: str,
        *,
        validate_checksums: bool = True,
        threads: int = 0,
        coalesce_max_gap: int = 65536,
        coalesce_max_bytes: int = 16777216,
    ) -> ArrayEngine: ...
    @property
    def chunk_shape(self) -> list[int]: ...
    @property
    def elem_size(self) -> int: ...
    @property
    def fill_bytes(self) -> U8: ...
    @property
    def is_sharded(self) -> bool: ...
    @property
    def unit_bytes(self) -> int: ...
    def codec_bound(self, chunks: npt.NDArray[np.uint8], rounds: int = 3) -> tuple[float, float, int]: ...
    def read_store(self, store: Store, batch_info: BatchInfo, out: npt.NDArray[Any], drop_axes: list[int], swap: int = 0) -> list[bool]: ...
    def write_store(
        self,
        store: Store,
        batch_info: BatchInfo,
        value: npt.NDArray[Any],
        drop_axes: list[int],
        swap: int = 0,
        write_empty_chunks: bool = False,
    ) -> None: ...
    def read_values(self, values: list[Any], batch_info: BatchInfo, out: npt.NDArray[Any], drop_axes: list[int], swap: int = 0) -> list[bool]: ...
    def write_values(
        self,
        values: list[Any],
        batch_info: BatchInfo,
        value: npt.NDArray[Any],
        drop_axes: list[int],
        swap: int = 0,
        write_empty_chunks: bool = False,
    ) -> list[U8 | None]: ...
    def decode(self, chunks: list[Any]) -> list[U8 | None]: ...
    def encode(self, chunks: list[Any]) -> list[U8 | None]: ...

def set_index_cache_budget(bytes: int) -> None: ...
def version() -> str: ...
def exchange_paths(a: str, b: str) -> None: ...

AnyStore = Store

class CsrReader:
    def __init__(
        self,
        data_json: str,
        data_prefix: str,
        indices_json: str,
        indices_prefix: str,
        indptr: npt.NDArray[Any],
        minor: int,
        *,
        threads: int = 0,
        validate_checksums: bool = True,
    ) -> None: ...
    @property
    def n_major(self) -> int: ...
    @property
    def nnz(self) -> int: ...
    def indptr(self) -> npt.NDArray[np.int64]: ...
    def gather(
        self,
        store: AnyStore,
        rows: npt.NDArray[Any] | None = None,
        start: int = 0,
        stop: int = 0,
        lut: npt.NDArray[np.int64] | None = None,
        huge_pages: bool = False,
    ) -> tuple[U8, npt.NDArray[Any], npt.NDArray[Any], int]: ...

class CsrWriter:
    def __init__(
        self, data_json: str, data_prefix: str, indices_json: str, indices_prefix: str, minor: int, indptr: npt.NDArray[Any], *, threads: int = 0
    ) -> None: ...
    @property
    def rows(self) -> int: ...
    @property
    def nnz(self) -> int: ...
    def append(self, store: AnyStore, indptr: npt.NDArray[Any], indices: npt.NDArray[Any], data: npt.NDArray[Any]) -> None: ...
    def finish(self, store: AnyStore) -> npt.NDArray[np.int64]: ...

class MtxReader:
    def __init__(self, path: str) -> None: ...
    @property
    def header(self) -> dict[str, Any]: ...
    @property
    def entries_read(self) -> int: ...
    def read(self, max_entries: int) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.float64]] | None: ...

def read_array(store: AnyStore, metadata_json: str, prefix: str, *, threads: int = 0, validate_checksums: bool = True) -> U8: ...
def write_array(store: AnyStore, metadata_json: str, prefix: str, start: int, values: npt.NDArray[Any], *, threads: int = 0) -> None: ...
def write_compressed(
    store: AnyStore,
    data: tuple[str, str],
    indices: tuple[str, str],
    indptr: tuple[str, str],
    indptr_values: npt.NDArray[Any],
    indices_values: npt.NDArray[Any],
    data_values: npt.NDArray[Any],
    minor: int,
    *,
    threads: int = 0,
) -> None: ...

class VirtualArray:
    """A virtual array document, compiled; components open on first touch."""

    def __init__(
        self,
        store: Store,
        document: str,
        dir: str = "",
        *,
        allow: list[str] = ...,
        mounts: list[tuple[str, Store]] = ...,
        threads: int = 0,
        validate_checksums: bool = True,
    ) -> None: ...
    @property
    def shape(self) -> list[int]: ...
    @property
    def data_type(self) -> str: ...
    @property
    def storage(self) -> Literal["dense", "sparse", "csr", "csc"]: ...
    @property
    def fill_bytes(self) -> bytes: ...
    @property
    def num_components(self) -> int: ...
    @property
    def num_opened(self) -> int: ...
    def to_json(self) -> str: ...
    def read(self, sels: list[tuple[int, int, int] | np.ndarray], keep: list[bool], out: np.ndarray) -> None: ...
    def write(self, sels: list[tuple[int, int, int] | np.ndarray], keep: list[bool], value: np.ndarray) -> None: ...
    def read_sparse(self, sels: list[tuple[int, int, int] | np.ndarray], keep: list[bool]) -> tuple[np.ndarray, np.ndarray]: ...
    def write_sparse(self, start: list[int], shape: list[int], coords: np.ndarray, values: np.ndarray, duplicates: str = "sum") -> None: ...
    def nnz(self) -> int: ...
    def gather(
        self,
        rows: np.ndarray | None = None,
        start: int = 0,
        stop: int = 0,
        lut: np.ndarray | None = None,
        huge_pages: bool = False,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]: ...

Region = list[tuple[int, int, int] | npt.NDArray[np.int64]]
SparseRead = tuple[npt.NDArray[Any], U8, npt.NDArray[Any] | None, int]

class SparseArray:
    """The engine of a sparse array (the ``sparsezarr.sparse`` codec), from its v3 metadata."""

    def __init__(
        self,
        metadata_json: str,
        *,
        fill_bytes: bytes | None = None,
        prefix: str = "",
        validate_checksums: bool = True,
        threads: int = 0,
        coalesce_max_gap: int = 65536,
        coalesce_max_bytes: int = 16777216,
    ) -> None: ...
    @property
    def chunk_shape(self) -> list[int]: ...
    @property
    def shard_shape(self) -> list[int] | None: ...
    def read(self, store: Store, region: Region, csr: bool = False) -> SparseRead: ...
    def write(
        self,
        store: Store,
        start: list[int],
        shape: list[int],
        values: npt.NDArray[Any],
        *,
        coords: list[npt.NDArray[Any]] | None = None,
        compressed: tuple[int, npt.NDArray[Any], npt.NDArray[Any]] | None = None,
        sum_duplicates: bool = True,
    ) -> None: ...
    def stats(self, store: Store) -> tuple[int, int]: ...
