//! A store that calls back into Python (any zarr-python store, through two callables), and the
//! one argument type that accepts it or a local directory.

use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};

use numpy::PyArray1;
use pyo3::prelude::*;
use sparsezarr_core::error::{Error, Result};
use sparsezarr_core::store::{ChunkStore, Fingerprint, ValueReader};

use crate::PyLocalStore;

/// Any zarr-python store, through `get(key) -> bytes-like | None` and
/// `set(key, numpy.uint8 array | None)` (None deletes). The callables run with the GIL held on the
/// engine's worker threads; decoding and encoding still run in parallel without it.
#[pyclass(frozen, name = "CallbackStore", module = "sparsezarr._lib")]
pub struct PyCallbackStore {
    get: Py<PyAny>,
    set: Py<PyAny>,
    read_only: bool,
    id: u64,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1 << 40);

#[pymethods]
impl PyCallbackStore {
    #[new]
    #[pyo3(signature = (get, set, read_only = false))]
    fn new(get: Py<PyAny>, set: Py<PyAny>, read_only: bool) -> Self {
        Self { get, set, read_only, id: NEXT_ID.fetch_add(1, Ordering::Relaxed) }
    }

    /// Whether writes are refused.
    #[getter]
    fn read_only(&self) -> bool {
        self.read_only
    }
}

fn py_io(key: &str, e: &PyErr) -> Error {
    Error::io(key, std::io::Error::other(e.to_string()))
}

struct OwnedValue {
    key: String,
    bytes: Vec<u8>,
}

impl ValueReader for OwnedValue {
    fn key(&self) -> &str {
        &self.key
    }

    fn size(&self) -> u64 {
        self.bytes.len() as u64
    }

    fn read_all(&self) -> Result<Cow<'_, [u8]>> {
        Ok(Cow::Borrowed(&self.bytes))
    }

    #[allow(clippy::cast_possible_truncation)]
    fn read_range(&self, offset: u64, len: u64) -> Result<Cow<'_, [u8]>> {
        match offset.checked_add(len) {
            Some(end) if end <= self.bytes.len() as u64 => Ok(Cow::Borrowed(&self.bytes[offset as usize..end as usize])),
            _ => Err(Error::decode(
                &self.key,
                format!("byte range {offset}..{} is outside the stored value of {} bytes", offset.saturating_add(len), self.bytes.len()),
            )),
        }
    }

    fn fingerprint(&self) -> Option<Fingerprint> {
        None
    }
}

impl ChunkStore for PyCallbackStore {
    fn open(&self, key: &str) -> Result<Option<Box<dyn ValueReader + '_>>> {
        Python::attach(|py| -> Result<Option<Box<dyn ValueReader + '_>>> {
            let v = self.get.bind(py).call1((key,)).map_err(|e| py_io(key, &e))?;
            if v.is_none() {
                return Ok(None);
            }
            let buf = pyo3::buffer::PyBuffer::<u8>::get(&v).map_err(|e| py_io(key, &e))?;
            let bytes = buf.to_vec(py).map_err(|e| py_io(key, &e))?;
            Ok(Some(Box::new(OwnedValue { key: key.to_string(), bytes })))
        })
    }

    fn set(&self, key: &str, value: Vec<u8>) -> Result<()> {
        if self.read_only {
            return Err(Error::ReadOnly(key.to_string()));
        }
        Python::attach(|py| {
            let arr = PyArray1::from_vec(py, value);
            self.set.bind(py).call1((key, arr)).map(|_| ()).map_err(|e| py_io(key, &e))
        })
    }

    fn erase(&self, key: &str) -> Result<()> {
        if self.read_only {
            return Err(Error::ReadOnly(key.to_string()));
        }
        Python::attach(|py| self.set.bind(py).call1((key, py.None())).map(|_| ()).map_err(|e| py_io(key, &e)))
    }

    fn read_only(&self) -> bool {
        self.read_only
    }

    fn cache_id(&self) -> u64 {
        self.id
    }
}

/// A store argument: a `LocalStore` or a `CallbackStore`.
pub enum AnyStore<'py> {
    /// A local directory.
    Local(PyRef<'py, PyLocalStore>),
    /// Python callbacks.
    Callback(PyRef<'py, PyCallbackStore>),
}

impl<'py> AnyStore<'py> {
    /// Extract from a Python object.
    ///
    /// # Errors
    /// `TypeError` for anything else.
    pub fn extract(obj: &Bound<'py, PyAny>) -> PyResult<Self> {
        if let Ok(s) = obj.extract::<PyRef<'py, PyLocalStore>>() {
            return Ok(Self::Local(s));
        }
        if let Ok(s) = obj.extract::<PyRef<'py, PyCallbackStore>>() {
            return Ok(Self::Callback(s));
        }
        Err(pyo3::exceptions::PyTypeError::new_err("store must be a sparsezarr._lib.LocalStore or CallbackStore"))
    }

    /// The store as the core sees it.
    pub fn get(&self) -> &dyn ChunkStore {
        match self {
            Self::Local(s) => &s.inner,
            Self::Callback(s) => &**s,
        }
    }
}

/// A callback store shared by long-lived core objects (a virtual array keeps its store).
pub struct SharedCallback(pub Py<PyCallbackStore>);

impl ChunkStore for SharedCallback {
    fn open(&self, key: &str) -> Result<Option<Box<dyn ValueReader + '_>>> {
        self.0.get().open(key)
    }

    fn set(&self, key: &str, value: Vec<u8>) -> Result<()> {
        self.0.get().set(key, value)
    }

    fn erase(&self, key: &str) -> Result<()> {
        self.0.get().erase(key)
    }

    fn read_only(&self) -> bool {
        self.0.get().read_only
    }

    fn cache_id(&self) -> u64 {
        self.0.get().id
    }
}
