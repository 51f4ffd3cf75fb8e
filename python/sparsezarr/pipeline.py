"""``sparsezarr.Pipeline``: a zarr-python codec pipeline whose work happens in Rust.

Enable it for every array with::

    zarr.config.set({"codec_pipeline.path": "sparsezarr.Pipeline"})

(or ``ZARR_CODEC_PIPELINE__PATH=sparsezarr.Pipeline`` in the environment). zarr-python still
parses selections and chunk keys; every batch of chunks is then fetched, decoded and scattered into
the output (or gathered, merged, encoded and stored) by the Rust engine with the GIL released.

What runs where:

* Arrays in a ``LocalStore`` or ``MemoryStore`` run entirely in Rust, including partial reads and
  writes of shards.
* Any other store, and any array the engine cannot handle (a data type or codec zarrs does not
  implement, e.g. variable-length strings), goes to zarr-python's ``BatchedCodecPipeline`` for that
  batch. Each fallback is logged at DEBUG level on the ``sparsezarr`` logger with its reason;
  with ``codec_pipeline.strict`` set, it raises :class:`sparsezarr.errors.FallbackError` instead.
* Pipelines built from codecs alone (``Pipeline.from_codecs``; zarr-python's sharding codec builds
  these for inner chunks and shard indexes) run their codecs in Rust on bytes that Python fetched.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import numpy.typing as npt
from zarr.abc.codec import Codec, CodecPipeline
from zarr.core.buffer import cpu
from zarr.core.codec_pipeline import BatchedCodecPipeline, codecs_from_list
from zarr.registry import register_pipeline

from sparsezarr import _lib
from sparsezarr._compat import check_writable, ensure_open, is_local_store, memory_mapping
from sparsezarr._metadata import EMPTY, Unsupported, custom_codec, engine_args, spec_engine_args
from sparsezarr._remote import object_handle
from sparsezarr._settings import Settings
from sparsezarr._stores import rust_store
from sparsezarr.errors import FallbackError, MetadataError, UnsupportedError

if TYPE_CHECKING:
    from typing import Self

    from zarr.abc.store import ByteGetter, ByteSetter, Store
    from zarr.core.array_spec import ArraySpec
    from zarr.core.buffer import Buffer, NDBuffer
    from zarr.core.dtype.wrapper import TBaseDType, TBaseScalar, ZDType
    from zarr.core.indexing import SelectorTuple
    from zarr.core.metadata import ArrayMetadata

    from sparsezarr._compat import ChunkGrid

    BatchInfo = Iterable[tuple[ByteGetter | ByteSetter, ArraySpec, SelectorTuple, SelectorTuple, bool]]

logger = logging.getLogger("sparsezarr")

#: Counts of pipeline calls by how they ran (``read.rust``, ``write.fallback``, ...): a cheap way
#: to check that work really goes through Rust.
STATS: Counter[str] = Counter()

_PRESENT = {"status": "present"}
_MISSING = {"status": "missing"}


def _codecs_of(metadata: ArrayMetadata) -> tuple[Codec, ...]:
    from zarr.core.metadata.v2 import ArrayV2Metadata

    if isinstance(metadata, ArrayV2Metadata):
        from zarr.codecs._v2 import V2Codec

        return (V2Codec(filters=metadata.filters, compressor=metadata.compressor),)
    return tuple(metadata.codecs)


def _swap_unit(dtype: np.dtype[Any]) -> int:
    """Byte-swap unit for arrays of ``dtype`` (0 when the byte order is native)."""
    if dtype.byteorder not in (">", "<") or dtype.isnative or dtype.itemsize == 1:
        return 0
    if dtype.kind == "c":
        return dtype.itemsize // 2
    if dtype.kind == "U":
        return 4
    return dtype.itemsize


def _is_cpu(spec: ArraySpec) -> bool:
    return issubclass(spec.prototype.nd_buffer, cpu.NDBuffer) and issubclass(spec.prototype.buffer, cpu.Buffer)


def _spec_key(spec: ArraySpec) -> tuple[Any, ...]:
    return (tuple(spec.shape), str(spec.dtype), repr(spec.fill_value))


class Pipeline(CodecPipeline):
    """A zarr-python ``CodecPipeline`` running on the sparsezarr Rust engine.

    Instances are built by zarr-python (``from_array_metadata_and_store`` when an array is opened,
    ``from_codecs`` otherwise); users only select the class through zarr's configuration.
    Settings (see the README) are read from ``zarr.config`` when the pipeline is built.
    """

    codecs: tuple[Codec, ...]
    metadata: ArrayMetadata | None
    store: Store | None
    settings: Settings

    def __init__(
        self,
        codecs: Iterable[Codec],
        *,
        metadata: ArrayMetadata | None = None,
        store: Store | None = None,
        settings: Settings | None = None,
    ) -> None:
        self.codecs = tuple(codecs)
        self.metadata = metadata
        self.store = store
        self.settings = settings if settings is not None else Settings.from_config()
        self._engine: _lib.ArrayEngine | None = None
        self._unsupported: str | None = None
        self._fallback: BatchedCodecPipeline | None = None
        self._spec_engines: dict[tuple[Any, ...], _lib.ArrayEngine | str] = {}
        self._local_stores: dict[tuple[str, bool], _lib.Store] = {}
        _lib.set_index_cache_budget(self.settings.index_cache_bytes)
        if metadata is not None:
            self._build_engine()

    # -- construction -----------------------------------------------------------------------

    def _build_engine(self) -> None:
        assert self.metadata is not None
        args = custom_codec(self.codecs) or engine_args(self.metadata)
        if args is EMPTY:
            self._unsupported = str(args)
            return
        try:
            if isinstance(args, Unsupported):
                raise UnsupportedError(args)
            kind, kwargs = args
            if kind == "v3":
                self._engine = _lib.ArrayEngine.from_parts(**kwargs, **self.settings.engine_kwargs())
            else:
                self._engine = _lib.ArrayEngine(**kwargs, **self.settings.engine_kwargs())
        except (UnsupportedError, MetadataError) as e:
            # Not raised here even in strict mode: zarr builds pipelines inside
            # ``except NotImplementedError`` (our errors derive from it) and would quietly retry
            # with ``from_codecs``. The first read or write raises FallbackError with this reason.
            self._unsupported = str(e)
            logger.debug("sparsezarr: array falls back to zarr-python's pipeline: %s", e)

    @classmethod
    def from_codecs(cls, codecs: Iterable[Codec]) -> Self:
        codecs = tuple(codecs)
        if not any(type(c).__name__ == "V2Codec" for c in codecs):
            codecs_from_list(codecs)  # validates the order exactly as zarr-python does
        return cls(codecs)

    @classmethod
    def from_array_metadata_and_store(cls, array_metadata: ArrayMetadata, store: Store) -> Self:
        codecs = _codecs_of(array_metadata)
        if not any(type(c).__name__ == "V2Codec" for c in codecs):
            codecs_from_list(codecs)
        return cls(codecs, metadata=array_metadata, store=store)

    def evolve_from_array_spec(self, array_spec: ArraySpec) -> Self:
        if self.metadata is not None:
            return self
        return type(self).from_codecs(c.evolve_from_array_spec(array_spec=array_spec) for c in self.codecs)

    # -- value semantics and pickling -------------------------------------------------------

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Pipeline):
            return NotImplemented
        return (self.codecs, self.metadata, self.store) == (other.codecs, other.metadata, other.store)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        mode = "array" if self.metadata is not None else "codecs"
        engine = "rust" if (self._engine is not None or self.metadata is None) else "fallback"
        return f"sparsezarr.Pipeline({mode}, {engine}, codecs={self.codecs!r})"

    def __getstate__(self) -> dict[str, Any]:
        return {"codecs": self.codecs, "metadata": self.metadata, "store": self.store}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["codecs"], metadata=state["metadata"], store=state["store"])  # type: ignore[misc]

    def __iter__(self) -> Iterator[Codec]:
        return iter(self.codecs)

    # -- codec-level API --------------------------------------------------------------------

    @property
    def supports_partial_decode(self) -> bool:
        """Whether reading part of a chunk fetches and decodes only what the selection needs.

        True when the array->bytes codec decodes partially (sharding: only the inner chunks a
        selection touches are fetched, by byte range, and decoded) and no array->array or
        bytes->bytes codec has to see the whole chunk; the engine and the fallback pipeline then
        both read partially. This is the same rule zarr's own pipelines apply.
        """
        return self._batched().supports_partial_decode

    @property
    def supports_partial_encode(self) -> bool:
        """Whether writing part of a chunk re-encodes only what the selection touches (sharding:
        the touched inner chunks are re-encoded, all others are copied as stored bytes). Same
        rule as :attr:`supports_partial_decode`."""
        return self._batched().supports_partial_encode

    def validate(self, *, shape: tuple[int, ...], dtype: ZDType[TBaseDType, TBaseScalar], chunk_grid: ChunkGrid) -> None:
        for codec in self.codecs:
            codec.validate(shape=shape, dtype=dtype, chunk_grid=chunk_grid)

    def compute_encoded_size(self, byte_length: int, array_spec: ArraySpec) -> int:
        for codec in self.codecs:
            byte_length = codec.compute_encoded_size(byte_length, array_spec)
            array_spec = codec.resolve_metadata(array_spec)
        return byte_length

    def _batched(self) -> BatchedCodecPipeline:
        if self._fallback is None:
            self._fallback = BatchedCodecPipeline.from_codecs(self.codecs)
        return self._fallback

    def _fall_back(self, reason: str) -> BatchedCodecPipeline:
        if self.settings.strict:
            raise FallbackError(f"sparsezarr.Pipeline cannot run this natively (strict mode): {reason}")
        logger.debug("sparsezarr: batch falls back to zarr-python's pipeline: %s", reason)
        return self._batched()

    def _engine_for_spec(self, spec: ArraySpec) -> _lib.ArrayEngine | str:
        """The engine for chunks of ``spec`` in codec-only mode, or the reason there is none."""
        key = _spec_key(spec)
        engine = self._spec_engines.get(key)
        if engine is not None:
            return engine
        args = spec_engine_args(self.codecs, spec)
        if isinstance(args, Unsupported):
            engine = str(args)
        else:
            try:
                engine = _lib.ArrayEngine.from_parts(**args, **self.settings.engine_kwargs())
            except (UnsupportedError, MetadataError) as e:
                engine = str(e)
        self._spec_engines[key] = engine
        return engine

    async def decode(self, chunk_bytes_and_specs: Iterable[tuple[Buffer | None, ArraySpec]]) -> Iterable[NDBuffer | None]:
        items = list(chunk_bytes_and_specs)
        if not items:
            return []
        spec = items[0][1]
        engine = self._engine_for_spec(spec) if _is_cpu(spec) else "non-CPU buffers"
        if isinstance(engine, str) or any(_spec_key(s) != _spec_key(spec) for _, s in items):
            STATS["decode.fallback"] += 1
            return await self._fall_back(str(engine)).decode(items)
        STATS["decode.rust"] += 1
        decoded = engine.decode([None if b is None else b.as_numpy_array() for b, _ in items])
        out: list[NDBuffer | None] = []
        dtype = spec.dtype.to_native_dtype()
        for arr in decoded:
            if arr is None:
                out.append(None)
                continue
            values = arr.view(dtype.newbyteorder("=")).reshape(spec.shape)
            if not dtype.isnative:
                values = values.astype(dtype)
            out.append(spec.prototype.nd_buffer.from_ndarray_like(values))
        return out

    async def encode(self, chunk_arrays_and_specs: Iterable[tuple[NDBuffer | None, ArraySpec]]) -> Iterable[Buffer | None]:
        items = list(chunk_arrays_and_specs)
        if not items:
            return []
        spec = items[0][1]
        engine = self._engine_for_spec(spec) if _is_cpu(spec) else "non-CPU buffers"
        if isinstance(engine, str) or any(_spec_key(s) != _spec_key(spec) for _, s in items):
            STATS["encode.fallback"] += 1
            return await self._fall_back(str(engine)).encode(items)
        STATS["encode.rust"] += 1
        native = spec.dtype.to_native_dtype().newbyteorder("=")
        arrays: list[npt.NDArray[np.uint8] | None] = []
        for a, _ in items:
            if a is None:
                arrays.append(None)
                continue
            arr = np.ascontiguousarray(a.as_numpy_array(), dtype=native)
            arrays.append(arr.reshape(-1).view(np.uint8))
        encoded = engine.encode(arrays)
        return [None if e is None else spec.prototype.buffer.from_array_like(e) for e in encoded]

    # -- reads and writes -------------------------------------------------------------------

    async def _run(self, work_bytes: int, fn: Any, *args: Any) -> Any:
        """Run a Rust call inline when it is small, in a worker thread otherwise (so that the
        event loop stays free for concurrent work). Calls that wait on the network
        (``work_bytes`` < 0) always run in a worker thread."""
        if 0 <= work_bytes <= self.settings.inline_work_bytes:
            return fn(*args)
        return await asyncio.to_thread(fn, *args)

    def _native_target(self, batch: list[Any], array: object) -> tuple[_lib.ArrayEngine, Any, str] | str:
        """The engine, the store and its route (``local``, ``memory``, ``object`` with the Rust
        object-store handle in place of the store, or ``""`` for values zarr fetches) for a
        batch, or why the batch falls back."""
        spec = batch[0][1]
        if not _is_cpu(spec):
            return "non-CPU buffer prototype"
        if not isinstance(array, np.ndarray):
            return f"array of type {type(array).__name__}"
        found: _lib.ArrayEngine | str | None = self._engine if self.metadata is not None else self._engine_for_spec(spec)
        if found is None:
            return self._unsupported or "unsupported array"
        if isinstance(found, str):
            return found
        engine = found
        native = spec.dtype.to_native_dtype()
        if array.dtype.newbyteorder("=") != native.newbyteorder("=") or array.dtype.itemsize != engine.elem_size:
            return f"array dtype {array.dtype} differs from the stored dtype {native} (field selection?)"
        if self.metadata is None:
            return engine, "values", ""
        # Exact types only: subclasses may change how values are stored or checked.
        store = getattr(batch[0][0], "store", None)
        if is_local_store(store):
            return engine, store, "local"
        if memory_mapping(store) is not None:
            return engine, store, "memory"
        remote = object_handle(store)
        if isinstance(remote, _lib.Store):
            return engine, remote, "object"
        return remote or f"store {type(store).__name__} is not handled in Rust"

    def _store_handle(self, store: Any, kind: str) -> _lib.Store:
        """The Rust view of ``store`` (see ``_stores.rust_store``); local handles are kept, so that
        the directories they created stay known."""
        if kind == "object":
            return cast(_lib.Store, store)
        if kind != "local":
            return rust_store(store)
        key = (str(store.root), store.read_only)
        handle = self._local_stores.get(key)
        if handle is None:
            handle = rust_store(store)
            self._local_stores[key] = handle
        return handle

    # zarr >= 3.3 types the result as a tuple of its GetResult (a dict with a status); 3.1 and 3.2
    # return None. The dicts returned here are what GetResult holds, on every version.
    async def read(  # type: ignore[override]
        self, batch_info: BatchInfo, out: NDBuffer, drop_axes: tuple[int, ...] = ()
    ) -> tuple[dict[str, str], ...]:
        batch = list(batch_info)
        if not batch:
            return ()
        out_arr = cast(np.ndarray, out.as_ndarray_like())  # checked by _native_target before use
        target = self._native_target(batch, out_arr)
        if isinstance(target, str):
            STATS["read.fallback"] += 1
            results: Any = await self._fall_back(target).read(batch, out, drop_axes)
            # zarr >= 3.3 reports per chunk; older zarr returns nothing (and ignores our result).
            return tuple(results) if results is not None else tuple(_PRESENT for _ in batch)
        STATS[f"read.rust.{target[2]}"] += 1
        engine, store, kind = target
        swap = _swap_unit(out_arr.dtype)
        work = out_arr.nbytes + len(batch) * engine.unit_bytes
        axes = list(drop_axes)
        if kind in ("local", "memory", "object"):
            if kind != "object":
                await ensure_open(store)
            if kind == "object":
                work = -1
            present = await self._run(work, engine.read_store, self._store_handle(store, kind), batch, out_arr, axes, swap)
        else:
            values = await asyncio.gather(*(bg.get(prototype=spec.prototype) for bg, spec, *_ in batch))
            arrays = [None if v is None else v.as_numpy_array() for v in values]
            present = await self._run(work, engine.read_values, arrays, batch, out_arr, axes, swap)
        return tuple(_PRESENT if p else _MISSING for p in present)

    async def write(self, batch_info: BatchInfo, value: NDBuffer, drop_axes: tuple[int, ...] = ()) -> None:
        batch = list(batch_info)
        if not batch:
            return
        value_arr = cast(np.ndarray, value.as_ndarray_like())  # checked by _native_target before use
        target = self._native_target(batch, value_arr)
        if isinstance(target, str):
            STATS["write.fallback"] += 1
            # zarr hands writes ByteSetters; BatchInfo is shared with reads.
            await self._fall_back(target).write(cast(Any, batch), value, drop_axes)
            return
        STATS[f"write.rust.{target[2]}"] += 1
        engine, store, kind = target
        if self.supports_partial_encode:
            batch = _partial_at_edges(batch)
        spec = batch[0][1]
        write_empty = bool(spec.config.write_empty_chunks)
        swap = _swap_unit(value_arr.dtype)
        work = value_arr.nbytes + len(batch) * engine.unit_bytes
        axes = list(drop_axes)
        if kind in ("local", "memory", "object"):
            if kind == "object":
                if store.read_only:
                    check_writable(getattr(batch[0][0], "store", None))
            else:
                check_writable(store)
                await ensure_open(store)
            if kind == "object":
                work = -1
            await self._run(work, engine.write_store, self._store_handle(store, kind), batch, value_arr, axes, swap, write_empty)
        else:
            existing = await asyncio.gather(*(_none() if complete else bs.get(prototype=s.prototype) for bs, s, _, _, complete in batch))
            arrays = [None if v is None else v.as_numpy_array() for v in existing]
            new = await self._run(work, engine.write_values, arrays, batch, value_arr, axes, swap, write_empty)
            make = spec.prototype.buffer.from_array_like
            setters = [cast("ByteSetter", bs) for bs, *_ in batch]
            await asyncio.gather(*(bs.delete() if data is None else bs.set(make(data)) for bs, data in zip(setters, new, strict=True)))


def _covers(selection: SelectorTuple, shape: tuple[int, ...]) -> bool:
    """Whether a chunk selection covers every element of a chunk of ``shape``."""
    if not isinstance(selection, tuple):  # zarr gives chunk selections as tuples; anything else counts as partial
        return False
    for sel, n in zip(selection, shape, strict=False):
        if isinstance(sel, slice):
            if (sel.start or 0) != 0 or (sel.step or 1) != 1 or sel.stop is None or sel.stop < n:
                return False
        elif not (n == 1 and isinstance(sel, int | np.integer) and sel == 0):
            return False
    return True


def _partial_at_edges(batch: list[Any]) -> list[Any]:
    """Mark chunks at the array's edge that a write covers only up to the array's end as partial.

    zarr calls such a chunk complete (every in-bounds element is written) and leaves it to a
    partial-encode codec (sharding) to keep what lies beyond the shape: the inner chunks there,
    and the out-of-bounds cells of inner chunks the edge cuts, which come back when the array
    grows again (zarr's ``test_resize_sharded_keeps_cells_beyond_shape``). The engine merges
    with the stored shard for chunks marked partial, so those are marked partial here.
    """
    return [(bs, spec, csel, osel, complete and _covers(csel, spec.shape)) for bs, spec, csel, osel, complete in batch]


async def _none() -> None:
    return None


# zarr looks pipelines up by module and qualified name; users write "sparsezarr.Pipeline".
Pipeline.__module__ = "sparsezarr"
register_pipeline(Pipeline)
