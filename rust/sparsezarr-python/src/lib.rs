//! Python bindings of sparsezarr (`sparsezarr._lib`).
//!
//! This crate only converts between Python and core types, releases the GIL around heavy work
//! and maps errors; all logic lives in `sparsezarr-core`.

use std::sync::Arc;

use numpy::{PyArray1, PyUntypedArray, PyUntypedArrayMethods};
use pyo3::prelude::*;
use pyo3::types::PyList;
use sparsezarr_core::engine::codec::{EngineOptions, ValueSource};
use sparsezarr_core::engine::strided::{RawView, byteswap};
use sparsezarr_core::engine::{ArrayEngine, ChunkRequest, Concurrency};
use sparsezarr_core::store::{SnapshotStore, Store};

mod convert;
mod csr;
mod errors;
mod mtx;
mod pystore;
mod sparse;
mod virt;

use convert::{Frozen, KeyMode, array_view, broadcast_view, parse_batch, snapshot_from_pairs};
use errors::{PythonExt, to_pyerr};
use pystore::PyStore;

/// The Rust engine for one array (or one codec chain with a fixed chunk shape).
#[pyclass(frozen, name = "ArrayEngine", module = "sparsezarr._lib")]
struct PyArrayEngine {
    inner: Arc<ArrayEngine>,
}

fn options(validate_checksums: bool, coalesce_max_gap: u64, coalesce_max_bytes: u64) -> EngineOptions {
    EngineOptions { validate_checksums, coalesce_max_gap, coalesce_max_bytes }
}

fn kept_dims(reqs: &[ChunkRequest]) -> usize {
    match reqs.first().map(|r| &r.selection) {
        Some(sparsezarr_core::engine::selection::Selection::Orthogonal { out, .. }) => out.iter().filter(|o| o.is_some()).count(),
        Some(sparsezarr_core::engine::selection::Selection::Points { .. } | sparsezarr_core::engine::selection::Selection::Runs(_)) => 1,
        None => 0,
    }
}

/// A write source: a 0-d array becomes a scalar (swapped to native order), anything else a
/// broadcast view.
enum Source<'a> {
    Scalar(Vec<u8>),
    View(RawView<'a>),
}

fn source<'a>(value: &'a Bound<'_, PyUntypedArray>, reqs: &[ChunkRequest], swap: usize) -> PyResult<Source<'a>> {
    if value.ndim() == 0 {
        let v = array_view(value, false)?;
        // SAFETY: a 0-d array holds exactly one element at its data pointer.
        let mut elem = unsafe { std::slice::from_raw_parts(v.ptr(), v.itemsize()) }.to_vec();
        byteswap(&mut elem, swap);
        return Ok(Source::Scalar(elem));
    }
    Ok(Source::View(broadcast_view(value, kept_dims(reqs))?))
}

impl Source<'_> {
    fn as_value_source(&self, swap: usize) -> ValueSource<'_> {
        match self {
            Self::Scalar(e) => ValueSource::Scalar(e),
            Self::View(v) => ValueSource::Array { view: v, swap },
        }
    }
}

fn check_itemsize(engine: &ArrayEngine, view_itemsize: usize) -> PyResult<()> {
    if view_itemsize != engine.elem_size() {
        return Err(pyo3::exceptions::PyValueError::new_err(format!(
            "array element size {view_itemsize} differs from the stored element size {}",
            engine.elem_size()
        )));
    }
    Ok(())
}

/// The index space of a write's value: its shape, or unbounded for a scalar (whose output
/// selection is not used).
fn value_shape(value: &Bound<'_, PyUntypedArray>) -> Vec<u64> {
    if value.ndim() == 0 { vec![1 << 62; 64] } else { value.shape().iter().map(|&n| n as u64).collect() }
}

fn u8_array(py: Python<'_>, v: Vec<u8>) -> Bound<'_, PyArray1<u8>> {
    PyArray1::from_vec(py, v)
}

impl PyArrayEngine {
    fn read_with(
        &self,
        py: Python<'_>,
        store: &dyn Store,
        reqs: &[ChunkRequest],
        out: &Bound<'_, PyUntypedArray>,
        swap: usize,
    ) -> PyResult<Vec<bool>> {
        let view = array_view(out, true)?;
        check_itemsize(&self.inner, view.itemsize())?;
        let engine = &self.inner;
        py.run_detached(|| engine.read(store, reqs, &view, swap))
    }

    #[allow(clippy::too_many_arguments)]
    fn write_with(
        &self,
        py: Python<'_>,
        store: &dyn Store,
        reqs: &[ChunkRequest],
        value: &Bound<'_, PyUntypedArray>,
        swap: usize,
        write_empty_chunks: bool,
    ) -> PyResult<()> {
        let _frozen = Frozen::new([value]);
        let src = source(value, reqs, swap)?;
        if let Source::View(v) = &src {
            check_itemsize(&self.inner, v.itemsize())?;
        }
        let engine = &self.inner;
        py.run_detached(|| engine.write(store, reqs, &src.as_value_source(swap), write_empty_chunks))
    }

    fn chunk_shape_vec(&self) -> Vec<u64> {
        self.inner.chunk_shape().to_vec()
    }
}

#[pymethods]
impl PyArrayEngine {
    /// Build the engine from array metadata JSON (zarr v2 `.zarray` or v3 `zarr.json` content),
    /// optionally overriding the fill value with native-order element bytes.
    #[new]
    #[pyo3(signature = (metadata_json, *, fill_bytes = None, validate_checksums = true, threads = 0, coalesce_max_gap = 1 << 16, coalesce_max_bytes = 16 << 20))]
    fn new(
        py: Python<'_>,
        metadata_json: &str,
        fill_bytes: Option<Vec<u8>>,
        validate_checksums: bool,
        threads: usize,
        coalesce_max_gap: u64,
        coalesce_max_bytes: u64,
    ) -> PyResult<Self> {
        let opts = options(validate_checksums, coalesce_max_gap, coalesce_max_bytes);
        let engine = py.run_detached(|| ArrayEngine::from_metadata_json(metadata_json, fill_bytes, opts, Concurrency { threads }))?;
        Ok(Self { inner: Arc::new(engine) })
    }

    /// Build the engine from a v3 codec list (JSON), a chunk shape, a v3 data type (JSON) and the
    /// fill value as native-order element bytes.
    #[staticmethod]
    #[pyo3(signature = (codecs_json, chunk_shape, data_type_json, fill_bytes, *, validate_checksums = true, threads = 0, coalesce_max_gap = 1 << 16, coalesce_max_bytes = 16 << 20))]
    #[allow(clippy::too_many_arguments)]
    fn from_parts(
        py: Python<'_>,
        codecs_json: &str,
        chunk_shape: Vec<u64>,
        data_type_json: &str,
        fill_bytes: Vec<u8>,
        validate_checksums: bool,
        threads: usize,
        coalesce_max_gap: u64,
        coalesce_max_bytes: u64,
    ) -> PyResult<Self> {
        let bad = |e: serde_json::Error| errors::MetadataError::new_err(e.to_string());
        let codecs: Vec<sparsezarr_core::engine::codec::MetadataV3> = serde_json::from_str(codecs_json).map_err(bad)?;
        let data_type: sparsezarr_core::engine::codec::MetadataV3 = serde_json::from_str(data_type_json).map_err(bad)?;
        let opts = options(validate_checksums, coalesce_max_gap, coalesce_max_bytes);
        let engine = py.run_detached(|| ArrayEngine::from_parts(&codecs, &chunk_shape, &data_type, fill_bytes, opts, Concurrency { threads }))?;
        Ok(Self { inner: Arc::new(engine) })
    }

    /// Chunk shape the engine decodes to.
    #[getter]
    fn chunk_shape(&self) -> Vec<u64> {
        self.chunk_shape_vec()
    }

    /// Element size in bytes.
    #[getter]
    fn elem_size(&self) -> usize {
        self.inner.elem_size()
    }

    /// Fill value as native-order bytes.
    #[getter]
    fn fill_bytes<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<u8>> {
        u8_array(py, self.inner.fill_bytes().to_vec())
    }

    /// Decoded size in bytes of the smallest independently decodable unit: an inner chunk of a
    /// shard for sharded arrays, a chunk otherwise (used to estimate the work of a batch).
    #[getter]
    fn unit_bytes(&self) -> u64 {
        let mut plan = self.inner.plan();
        while let Some(s) = plan.as_sharding() {
            plan = s.inner();
        }
        plan.repr().num_bytes().map_or(u64::MAX, |n| n as u64)
    }

    /// Whether the chain is exactly one sharding codec (partial shard reads/writes).
    #[getter]
    fn is_sharded(&self) -> bool {
        self.inner.plan().as_sharding().is_some()
    }

    /// Read a batch from a store into `out`; returns per chunk whether it was stored.
    #[pyo3(signature = (store, batch_info, out, drop_axes, swap = 0))]
    fn read_store(
        &self,
        py: Python<'_>,
        store: &PyStore,
        batch_info: &Bound<'_, PyAny>,
        out: &Bound<'_, PyUntypedArray>,
        drop_axes: Vec<usize>,
        swap: usize,
    ) -> PyResult<Vec<bool>> {
        let out_shape: Vec<u64> = out.shape().iter().map(|&n| n as u64).collect();
        let reqs = parse_batch(batch_info, &self.chunk_shape_vec(), &out_shape, &drop_axes, KeyMode::Path)?;
        self.read_with(py, store.core(), &reqs, out, swap)
    }

    /// Write a batch to a store from `value`.
    #[pyo3(signature = (store, batch_info, value, drop_axes, swap = 0, write_empty_chunks = false))]
    #[allow(clippy::too_many_arguments)]
    fn write_store(
        &self,
        py: Python<'_>,
        store: &PyStore,
        batch_info: &Bound<'_, PyAny>,
        value: &Bound<'_, PyUntypedArray>,
        drop_axes: Vec<usize>,
        swap: usize,
        write_empty_chunks: bool,
    ) -> PyResult<()> {
        let shape = value_shape(value);
        let reqs = parse_batch(batch_info, &self.chunk_shape_vec(), &shape, &drop_axes, KeyMode::Path)?;
        self.write_with(py, store.core(), &reqs, value, swap, write_empty_chunks)
    }

    /// Read a batch whose stored values (one per entry, `None` if missing) were fetched already.
    #[pyo3(signature = (values, batch_info, out, drop_axes, swap = 0))]
    fn read_values(
        &self,
        py: Python<'_>,
        values: &Bound<'_, PyList>,
        batch_info: &Bound<'_, PyAny>,
        out: &Bound<'_, PyUntypedArray>,
        drop_axes: Vec<usize>,
        swap: usize,
    ) -> PyResult<Vec<bool>> {
        let out_shape: Vec<u64> = out.shape().iter().map(|&n| n as u64).collect();
        let reqs = parse_batch(batch_info, &self.chunk_shape_vec(), &out_shape, &drop_axes, KeyMode::Position)?;
        let store = snapshot_from_values(values, true)?;
        self.read_with(py, &store, &reqs, out, swap)
    }

    /// Write a batch whose current stored values were fetched already; returns the new value of
    /// every entry (`None` = delete).
    #[pyo3(signature = (values, batch_info, value, drop_axes, swap = 0, write_empty_chunks = false))]
    #[allow(clippy::too_many_arguments)]
    fn write_values<'py>(
        &self,
        py: Python<'py>,
        values: &Bound<'py, PyList>,
        batch_info: &Bound<'py, PyAny>,
        value: &Bound<'py, PyUntypedArray>,
        drop_axes: Vec<usize>,
        swap: usize,
        write_empty_chunks: bool,
    ) -> PyResult<Bound<'py, PyList>> {
        let shape = value_shape(value);
        let reqs = parse_batch(batch_info, &self.chunk_shape_vec(), &shape, &drop_axes, KeyMode::Position)?;
        let store = snapshot_from_values(values, false)?;
        self.write_with(py, &store, &reqs, value, swap, write_empty_chunks)?;
        let mut by_pos: Vec<Option<Option<Vec<u8>>>> = vec![None; reqs.len()];
        for (key, v) in store.take_writes() {
            if let Ok(i) = key.parse::<usize>()
                && i < by_pos.len()
            {
                by_pos[i] = Some(v);
            }
        }
        let out = PyList::empty(py);
        for entry in by_pos {
            match entry.flatten() {
                Some(v) => out.append(u8_array(py, v))?,
                None => out.append(py.None())?,
            }
        }
        Ok(out)
    }

    /// The raw codec bound for `chunks` (a 2-d uint8 array, one whole chunk per row): best
    /// seconds to encode and to decode them all in memory, and the encoded size.
    #[pyo3(signature = (chunks, rounds = 3))]
    fn codec_bound(&self, py: Python<'_>, chunks: numpy::PyReadonlyArray2<'_, u8>, rounds: usize) -> PyResult<(f64, f64, u64)> {
        let arr = chunks.as_array();
        let rows: Vec<&[u8]> = arr
            .rows()
            .into_iter()
            .map(|r| r.to_slice().ok_or_else(|| pyo3::exceptions::PyValueError::new_err("chunks must be C-contiguous")))
            .collect::<PyResult<_>>()?;
        let engine = &self.inner;
        let b = py.run_detached(|| engine.codec_bound(&rows, rounds))?;
        Ok((b.encode_secs, b.decode_secs, b.encoded_bytes))
    }

    /// Decode whole stored chunks (buffer-protocol objects or `None`) to element bytes.
    fn decode<'py>(&self, py: Python<'py>, chunks: &Bound<'py, PyList>) -> PyResult<Bound<'py, PyList>> {
        let store = snapshot_from_values(chunks, true)?;
        let n = chunks.len();
        let keys: Vec<String> = (0..n).map(|i| i.to_string()).collect();
        let engine = &self.inner;
        let decoded = py.run_detached(|| {
            let values: Vec<Option<std::borrow::Cow<'_, [u8]>>> = keys
                .iter()
                .map(|k| {
                    store
                        .open(k, sparsezarr_core::store::ByteRange::All)
                        .and_then(|v| v.map(|v| v.read_all().map(|b| std::borrow::Cow::Owned(b.into_owned()))).transpose())
                })
                .collect::<sparsezarr_core::Result<_>>()?;
            let refs: Vec<Option<&[u8]>> = values.iter().map(|v| v.as_deref()).collect();
            engine.decode_chunks(&refs).map_err(|e| e.with_key("chunk"))
        })?;
        let out = PyList::empty(py);
        for d in decoded {
            match d {
                Some(v) => out.append(u8_array(py, v))?,
                None => out.append(py.None())?,
            }
        }
        Ok(out)
    }

    /// Encode whole chunks (C-ordered element buffers or `None`).
    fn encode<'py>(&self, py: Python<'py>, chunks: &Bound<'py, PyList>) -> PyResult<Bound<'py, PyList>> {
        let store = snapshot_from_values(chunks, true)?;
        let n = chunks.len();
        let engine = &self.inner;
        let encoded = py.run_detached(|| {
            let values: Vec<Option<Vec<u8>>> = (0..n)
                .map(|i| {
                    store
                        .open(&i.to_string(), sparsezarr_core::store::ByteRange::All)
                        .and_then(|v| v.map(|v| v.read_all().map(|b| b.into_owned())).transpose())
                })
                .collect::<sparsezarr_core::Result<_>>()?;
            let refs: Vec<Option<&[u8]>> = values.iter().map(|v| v.as_deref()).collect();
            engine.encode_chunks(&refs)
        })?;
        let out = PyList::empty(py);
        for e in encoded {
            match e {
                Some(v) => out.append(u8_array(py, v))?,
                None => out.append(py.None())?,
            }
        }
        Ok(out)
    }
}

fn snapshot_from_values(values: &Bound<'_, PyList>, read_only: bool) -> PyResult<SnapshotStore> {
    let pairs = values.iter().enumerate().map(|(i, v)| (i.to_string(), if v.is_none() { None } else { Some(v) }));
    snapshot_from_pairs(pairs, read_only)
}

/// Set the byte budget of the process-wide shard index cache (0 disables it).
#[pyfunction]
fn set_index_cache_budget(bytes: usize) {
    sparsezarr_core::engine::set_index_cache_budget(bytes);
}

/// Atomically exchange two paths (directories or files) on the same file system.
#[pyfunction]
fn exchange_paths(py: Python<'_>, a: std::path::PathBuf, b: std::path::PathBuf) -> PyResult<()> {
    py.run_detached(|| sparsezarr_core::store::exchange_paths(&a, &b))
}

/// Version of the compiled extension.
#[pyfunction]
fn version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

#[pymodule]
fn _lib(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyArrayEngine>()?;
    m.add_class::<pystore::PyStore>()?;
    m.add_class::<pystore::StoreVersion>()?;
    m.add_class::<sparse::PySparseArray>()?;
    m.add_class::<csr::PyCsrReader>()?;
    m.add_class::<csr::PyCsrWriter>()?;
    m.add_class::<mtx::PyMtxReader>()?;
    m.add_class::<virt::PyVirtualArray>()?;
    m.add_function(wrap_pyfunction!(csr::read_array, m)?)?;
    m.add_function(wrap_pyfunction!(csr::write_array, m)?)?;
    m.add_function(wrap_pyfunction!(csr::write_compressed, m)?)?;
    m.add_function(wrap_pyfunction!(set_index_cache_budget, m)?)?;
    m.add_function(wrap_pyfunction!(version, m)?)?;
    m.add_function(wrap_pyfunction!(exchange_paths, m)?)?;
    errors::register(m)?;
    let _ = to_pyerr;
    Ok(())
}
