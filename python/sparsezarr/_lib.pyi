"""Type stubs of the compiled extension (``sparsezarr._lib``)."""

from os import PathLike
from typing import Any

import numpy as np
import numpy.typing as npt

class UnsupportedError(NotImplementedError): ...
class MetadataError(ValueError): ...
class CorruptChunkError(ValueError): ...
class EncodeError(ValueError): ...
class ReadOnlyError(ValueError): ...
class InternalError(RuntimeError): ...

class LocalStore:
    def __init__(self, root: str | PathLike[str], read_only: bool = False) -> None: ...
    @property
    def read_only(self) -> bool: ...

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
    def read_local(
        self, store: LocalStore, batch_info: BatchInfo, out: npt.NDArray[Any], drop_axes: list[int], swap: int = 0
    ) -> list[bool]: ...
    def write_local(
        self,
        store: LocalStore,
        batch_info: BatchInfo,
        value: npt.NDArray[Any],
        drop_axes: list[int],
        swap: int = 0,
        write_empty_chunks: bool = False,
    ) -> None: ...
    def read_mapping(
        self, mapping: dict[str, Any], batch_info: BatchInfo, out: npt.NDArray[Any], drop_axes: list[int], swap: int = 0
    ) -> list[bool]: ...
    def write_mapping(
        self,
        mapping: dict[str, Any],
        batch_info: BatchInfo,
        value: npt.NDArray[Any],
        drop_axes: list[int],
        swap: int = 0,
        write_empty_chunks: bool = False,
    ) -> list[tuple[str, U8 | None]]: ...
    def read_values(
        self, values: list[Any], batch_info: BatchInfo, out: npt.NDArray[Any], drop_axes: list[int], swap: int = 0
    ) -> list[bool]: ...
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
