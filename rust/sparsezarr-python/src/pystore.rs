//! The one store handle Python passes to the core (`sparsezarr._lib.Store`), and the one bridge
//! to any zarr-python store.
//!
//! A `Store` wraps a core [`Store`]: a local directory ([`FsStore`]), values in memory
//! ([`MemoryStore`]), or a Python store reached through four callables ([`PythonStore`]). Every
//! binding that touches storage (the pipeline's engine, sparse arrays, CSR readers and writers,
//! virtual arrays) takes this one type.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use numpy::PyArray1;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList};
use sparsezarr_core::error::{Error, Result};
use sparsezarr_core::store::{
    ByteRange, Capabilities, Encoded, FsStore, HeldValue, MemoryStore, ObjectBackend, ObjectOptions, ReadRequest, ReadResult, Store, ValueReader,
    Version, WriteMode,
};

use crate::errors::PythonExt;

/// A store the core reads and writes: `Store.local(root)`, `Store.memory()`,
/// `Store.object_url(url, options)`, `Store.obstore(store)` or
/// `Store.python(get_many, set, delete, list)`.
#[pyclass(frozen, name = "Store", module = "sparsezarr._lib")]
pub struct PyStore {
    pub(crate) inner: Arc<dyn Store>,
    kind: &'static str,
}

impl PyStore {
    /// The store as the core sees it.
    pub fn core(&self) -> &dyn Store {
        &*self.inner
    }
}

#[pymethods]
impl PyStore {
    /// A directory on the local file system; with `durable`, every value and its directory are
    /// flushed to the device before a write returns.
    #[staticmethod]
    #[pyo3(signature = (root, read_only = false, durable = false))]
    fn local(root: std::path::PathBuf, read_only: bool, durable: bool) -> Self {
        Self { inner: Arc::new(FsStore::new(root, read_only).with_durable(durable)), kind: "local" }
    }

    /// Values held in memory by the core (versioned; conditional writes enforced).
    #[staticmethod]
    #[pyo3(signature = (read_only = false))]
    fn memory(read_only: bool) -> Self {
        Self { inner: Arc::new(MemoryStore::new(read_only)), kind: "memory" }
    }

    /// A remote object store by URL (`s3://bucket/prefix`, `gs://…`, `az://…`, `https://…`), with
    /// `object_store` configuration keys as `options` (`aws_endpoint`, `aws_region`,
    /// `aws_access_key_id`, `aws_skip_signature`, …); credentials not given come from the
    /// environment. `max_in_flight` bounds the concurrent requests of one batch;
    /// `multipart_threshold` is the size from which values are uploaded in parts.
    #[staticmethod]
    #[pyo3(signature = (url, options = None, read_only = false, max_in_flight = None, multipart_threshold = None))]
    fn object_url(
        py: Python<'_>,
        url: &str,
        options: Option<std::collections::BTreeMap<String, String>>,
        read_only: bool,
        max_in_flight: Option<usize>,
        multipart_threshold: Option<u64>,
    ) -> PyResult<Self> {
        let options: Vec<(String, String)> = options.unwrap_or_default().into_iter().collect();
        let tuning = tuning(max_in_flight, multipart_threshold);
        let backend = py.run_detached(|| ObjectBackend::from_url(url, &options, read_only, tuning))?;
        Ok(Self { inner: Arc::new(backend), kind: "object" })
    }

    /// A store of the `obstore` package (`S3Store`, `GCSStore`, `AzureStore`, `HTTPStore`),
    /// rebuilt here from its configuration (bucket, prefix, credentials, client and retry
    /// options). `url` names it in messages and cache keys.
    #[staticmethod]
    #[pyo3(signature = (store, url, read_only = false, max_in_flight = None, multipart_threshold = None))]
    fn obstore(
        store: &Bound<'_, PyAny>,
        url: &str,
        read_only: bool,
        max_in_flight: Option<usize>,
        multipart_threshold: Option<u64>,
    ) -> PyResult<Self> {
        let class: String = store.get_type().name()?.extract()?;
        let conditional = matches!(class.as_str(), "S3Store" | "GCSStore" | "AzureStore");
        let rebuilt: pyo3_object_store::PyExternalObjectStore = store.extract()?;
        let inner: Arc<dyn object_store::ObjectStore> = rebuilt.into();
        let backend = ObjectBackend::new(inner, "", url, read_only, conditional, tuning(max_in_flight, multipart_threshold));
        Ok(Self { inner: Arc::new(backend), kind: "object" })
    }

    /// Any Python store, through `get_many(keys) -> list[buffer | None]`,
    /// `set(key, numpy.uint8 array)`, `delete(key)` and `list(prefix) -> list[str]` (or None).
    /// Exceptions the callables raise reach the caller unchanged.
    #[staticmethod]
    #[pyo3(signature = (get_many, set, delete, list = None, read_only = false))]
    fn python(get_many: Py<PyAny>, set: Py<PyAny>, delete: Py<PyAny>, list: Option<Py<PyAny>>, read_only: bool) -> Self {
        let bridge = PythonStore { get_many, set, delete, list, read_only, id: NEXT_ID.fetch_add(1, Ordering::Relaxed) };
        Self { inner: Arc::new(bridge), kind: "python" }
    }

    /// Whether writes are refused.
    #[getter]
    fn read_only(&self) -> bool {
        self.inner.read_only()
    }

    /// `"local"`, `"memory"`, `"object"` or `"python"`.
    #[getter]
    fn kind(&self) -> &'static str {
        self.kind
    }

    /// What the store can do: `{"cheap_ranges", "atomic_replace", "conditional_writes", "listing"}`.
    fn capabilities<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let c: Capabilities = self.inner.capabilities();
        let d = PyDict::new(py);
        d.set_item("cheap_ranges", c.cheap_ranges)?;
        d.set_item("atomic_replace", c.atomic_replace)?;
        d.set_item("conditional_writes", c.conditional_writes)?;
        d.set_item("listing", c.listing)?;
        Ok(d)
    }

    /// The value at `key` as bytes, or None.
    fn get<'py>(&self, py: Python<'py>, key: &str) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let store = self.inner.clone();
        let v = py.run_detached(|| store.get(key))?;
        Ok(v.map(|b| PyBytes::new(py, &b)))
    }

    /// Store `value` at `key`, atomically replacing any previous value.
    fn set(&self, py: Python<'_>, key: &str, value: Vec<u8>) -> PyResult<()> {
        let store = self.inner.clone();
        py.run_detached(|| store.set(key, value))
    }

    /// `length` bytes of the value at `key` from `offset` (all of it from `offset` if `length` is
    /// None), or its last `suffix` bytes: `(bytes, total size, version)`, or None if absent. One
    /// request on an object store.
    #[pyo3(signature = (key, offset = 0, length = None, suffix = None))]
    fn read<'py>(&self, py: Python<'py>, key: &str, offset: u64, length: Option<u64>, suffix: Option<u64>) -> PyResult<Option<ReadAnswer<'py>>> {
        let store = self.inner.clone();
        let got = py.run_detached(|| -> Result<Option<ReadResult>> {
            let range = match (suffix, length) {
                (Some(n), _) => ByteRange::Suffix(n),
                (None, Some(len)) => ByteRange::Range { offset, len },
                (None, None) if offset == 0 => ByteRange::All,
                (None, None) => {
                    let Some(v) = store.open(key, ByteRange::All)? else { return Ok(None) };
                    let size = v.size();
                    ByteRange::Range { offset, len: size.saturating_sub(offset) }
                }
            };
            store.read_batch(&[ReadRequest { key, range }]).pop().unwrap_or(Ok(None))
        })?;
        Ok(got.map(|r| (PyBytes::new(py, &r.bytes), r.total_size, r.version.map(StoreVersion))))
    }

    /// Store `value` at `key` on a condition: only if absent (`create_only`), or only if the
    /// stored value is still `if_version` (from `read`). Returns the new version where the store
    /// reports one; raises `sparsezarr.errors.ConflictError` if the condition does not hold.
    #[pyo3(signature = (key, value, *, create_only = false, if_version = None))]
    fn put(&self, py: Python<'_>, key: &str, value: Vec<u8>, create_only: bool, if_version: Option<&StoreVersion>) -> PyResult<Option<StoreVersion>> {
        let mode = match (create_only, if_version) {
            (true, None) => WriteMode::CreateOnly,
            (false, Some(v)) => WriteMode::IfVersion(v.0.clone()),
            (false, None) => WriteMode::Overwrite,
            (true, Some(_)) => return Err(pyo3::exceptions::PyValueError::new_err("give create_only or if_version, not both")),
        };
        let store = self.inner.clone();
        Ok(py.run_detached(|| store.put(key, Encoded::single(value), mode))?.map(StoreVersion))
    }

    /// Remove the value at `key` (no error if absent).
    fn delete(&self, py: Python<'_>, key: &str) -> PyResult<()> {
        let store = self.inner.clone();
        py.run_detached(|| store.delete(key))
    }

    /// Every key starting with `prefix`, sorted.
    #[pyo3(signature = (prefix = ""))]
    fn list(&self, py: Python<'_>, prefix: &str) -> PyResult<Vec<String>> {
        let store = self.inner.clone();
        py.run_detached(|| store.list(prefix))
    }

    fn __repr__(&self) -> String {
        match self.inner.local_root() {
            Some(root) => format!("<sparsezarr._lib.Store local {}>", root.display()),
            None => format!("<sparsezarr._lib.Store {}>", self.kind),
        }
    }
}

/// What `Store.read` returns: the bytes, the value's total size and its version.
type ReadAnswer<'py> = (Bound<'py, PyBytes>, u64, Option<StoreVersion>);

/// One stored version of a value (an object's ETag, a file's identity), for conditional writes.
#[pyclass(frozen, eq, name = "StoreVersion", module = "sparsezarr._lib")]
#[derive(PartialEq, Eq)]
pub struct StoreVersion(Version);

#[pymethods]
impl StoreVersion {
    fn __repr__(&self) -> String {
        match &self.0 {
            Version::Tag { tag, .. } => format!("<StoreVersion {tag}>"),
            Version::File { ino, mtime_ns, len, .. } => format!("<StoreVersion inode {ino} mtime {mtime_ns} size {len}>"),
        }
    }
}

fn tuning(max_in_flight: Option<usize>, multipart_threshold: Option<u64>) -> ObjectOptions {
    let default = ObjectOptions::default();
    ObjectOptions {
        max_in_flight: max_in_flight.unwrap_or(default.max_in_flight).max(1),
        multipart_threshold: multipart_threshold.unwrap_or(default.multipart_threshold),
        ..default
    }
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1 << 40);

/// Any zarr-python store, through Python callables. Reads come in batches (one interpreter lock
/// and one `get_many` call per batch, so the Python side can fetch concurrently); ranges are not
/// cheap, so the engines fetch what an operation needs up front. Writes replace values as the
/// Python store does; conditional writes are not offered.
struct PythonStore {
    get_many: Py<PyAny>,
    set: Py<PyAny>,
    delete: Py<PyAny>,
    list: Option<Py<PyAny>>,
    read_only: bool,
    id: u64,
}

/// A Python exception raised by a callable, carried through the core unchanged.
fn external(key: &str, e: PyErr) -> Error {
    Error::External { key: key.to_string(), source: Box::new(e) }
}

impl PythonStore {
    /// Whole values of `keys` (one call of `get_many`).
    fn fetch(&self, keys: &[&str]) -> Result<Vec<Option<Vec<u8>>>> {
        let first = keys.first().copied().unwrap_or("");
        Python::attach(|py| {
            let got = self.get_many.bind(py).call1((keys.to_vec(),)).map_err(|e| external(first, e))?;
            let got = got.cast_into::<PyList>().map_err(|e| external(first, PyErr::from(e)))?;
            if got.len() != keys.len() {
                return Err(Error::Internal(format!("get_many returned {} values for {} keys", got.len(), keys.len())));
            }
            got.iter()
                .zip(keys)
                .map(|(v, key)| {
                    if v.is_none() {
                        return Ok(None);
                    }
                    let buf = pyo3::buffer::PyBuffer::<u8>::get(&v).map_err(|e| external(key, e))?;
                    buf.to_vec(py).map(Some).map_err(|e| external(key, e))
                })
                .collect()
        })
    }
}

impl Store for PythonStore {
    fn capabilities(&self) -> Capabilities {
        Capabilities { cheap_ranges: false, atomic_replace: false, conditional_writes: false, listing: self.list.is_some() }
    }

    fn open(&self, key: &str, _first: ByteRange) -> Result<Option<Box<dyn ValueReader + '_>>> {
        let value = self.fetch(&[key])?.pop().flatten();
        Ok(value.map(|bytes| Box::new(HeldValue::new(key, Arc::new(bytes), None)) as Box<dyn ValueReader>))
    }

    fn read_batch(&self, requests: &[ReadRequest<'_>]) -> Vec<Result<Option<ReadResult>>> {
        let keys: Vec<&str> = requests.iter().map(|r| r.key).collect();
        let values = match self.fetch(&keys) {
            Ok(v) => v,
            Err(e) => {
                // One failure fails the batch: report it on the first request, the others as
                // not attempted.
                let mut out = vec![Err(e)];
                out.extend(requests[1..].iter().map(|r| Err(Error::Internal(format!("{:?} not read: an earlier read of the batch failed", r.key)))));
                return out;
            }
        };
        requests
            .iter()
            .zip(values)
            .map(|(r, v)| {
                let Some(bytes) = v else { return Ok(None) };
                let total_size = bytes.len() as u64;
                let (offset, len) = r.range.resolve(r.key, total_size)?;
                #[allow(clippy::cast_possible_truncation)]
                let bytes = if offset == 0 && len == total_size { bytes } else { bytes[offset as usize..(offset + len) as usize].to_vec() };
                Ok(Some(ReadResult { bytes, total_size, version: None }))
            })
            .collect()
    }

    fn put(&self, key: &str, value: Encoded, mode: WriteMode) -> Result<Option<Version>> {
        if self.read_only {
            return Err(Error::ReadOnly(key.to_string()));
        }
        if mode != WriteMode::Overwrite {
            return Err(Error::Unsupported(format!("conditional writes to a Python store ({key:?})")));
        }
        Python::attach(|py| {
            let arr = PyArray1::from_vec(py, value.into_vec());
            self.set.bind(py).call1((key, arr)).map(|_| None).map_err(|e| external(key, e))
        })
    }

    fn delete(&self, key: &str) -> Result<()> {
        if self.read_only {
            return Err(Error::ReadOnly(key.to_string()));
        }
        Python::attach(|py| self.delete.bind(py).call1((key,)).map(|_| ()).map_err(|e| external(key, e)))
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>> {
        let Some(list) = &self.list else {
            return Err(Error::Unsupported("this Python store was given no list callable".into()));
        };
        Python::attach(|py| {
            let mut keys: Vec<String> = list.bind(py).call1((prefix,)).and_then(|v| v.extract()).map_err(|e| external(prefix, e))?;
            keys.sort_unstable();
            Ok(keys)
        })
    }

    fn read_only(&self) -> bool {
        self.read_only
    }

    fn cache_id(&self) -> u64 {
        self.id
    }
}
