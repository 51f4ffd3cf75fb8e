//! Mapping of core errors to Python exceptions, and the helper that runs work without the GIL.

use pyo3::exceptions::{PyFileNotFoundError, PyIndexError, PyNotImplementedError, PyOSError, PyPermissionError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use sparsezarr_core::Error;

pyo3::create_exception!(
    sparsezarr._lib,
    UnsupportedError,
    PyNotImplementedError,
    "The array or operation is valid Zarr but not handled by the Rust engine."
);
pyo3::create_exception!(sparsezarr._lib, MetadataError, PyValueError, "Array or codec metadata is malformed.");
pyo3::create_exception!(
    sparsezarr._lib,
    CorruptChunkError,
    PyValueError,
    "Stored bytes could not be decoded (corrupt or truncated data, checksum mismatch)."
);
pyo3::create_exception!(sparsezarr._lib, EncodeError, PyValueError, "Data could not be encoded.");
pyo3::create_exception!(sparsezarr._lib, ReadOnlyError, PyValueError, "A write was attempted on a read-only store.");
pyo3::create_exception!(
    sparsezarr._lib,
    ConflictError,
    PyRuntimeError,
    "A conditional write found the stored value changed by another writer; nothing was written."
);
pyo3::create_exception!(
    sparsezarr._lib,
    InternalError,
    PyRuntimeError,
    "A bug in sparsezarr (an internal invariant was violated); please report it."
);

/// Convert a core error into the Python exception a user expects.
pub fn to_pyerr(err: Error) -> PyErr {
    let msg = err.to_string();
    match err {
        Error::Unsupported(_) => UnsupportedError::new_err(msg),
        Error::InvalidMetadata(_) => MetadataError::new_err(msg),
        Error::Decode { .. } => CorruptChunkError::new_err(msg),
        Error::Encode { .. } => EncodeError::new_err(msg),
        Error::Io { source, .. } => match source.kind() {
            std::io::ErrorKind::NotFound => PyFileNotFoundError::new_err(msg),
            std::io::ErrorKind::PermissionDenied => PyPermissionError::new_err(msg),
            _ => PyOSError::new_err(msg),
        },
        Error::ReadOnly(_) => {
            ReadOnlyError::new_err("store was opened in read-only mode and does not support writing (sparsezarr refused to write)".to_string())
        }
        Error::Selection(_) => PyIndexError::new_err(msg),
        Error::InvalidArgument(_) => PyValueError::new_err(msg),
        Error::OutOfMemory(_) => pyo3::exceptions::PyMemoryError::new_err(msg),
        Error::Internal(_) => InternalError::new_err(msg),
        Error::Conflict { .. } => ConflictError::new_err(msg),
        // A Python store's exception comes back as it was raised.
        Error::External { source, .. } => match source.downcast::<PyErr>() {
            Ok(e) => *e,
            Err(other) => PyOSError::new_err(other.to_string()),
        },
    }
}

/// Extension for `Python`: run heavy work with the GIL released, catching panics and mapping
/// errors. Every call into the core that does I/O or decoding goes through this.
pub trait PythonExt {
    /// Run `f` detached from the interpreter.
    ///
    /// # Errors
    /// The mapped error of `f`.
    fn run_detached<T: Send>(self, f: impl FnOnce() -> sparsezarr_core::Result<T> + Send) -> PyResult<T>;
}

impl PythonExt for Python<'_> {
    fn run_detached<T: Send>(self, f: impl FnOnce() -> sparsezarr_core::Result<T> + Send) -> PyResult<T> {
        self.detach(|| sparsezarr_core::error::catch_panic(f)).map_err(to_pyerr)
    }
}

/// Register the exception classes on the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("UnsupportedError", py.get_type::<UnsupportedError>())?;
    m.add("MetadataError", py.get_type::<MetadataError>())?;
    m.add("CorruptChunkError", py.get_type::<CorruptChunkError>())?;
    m.add("EncodeError", py.get_type::<EncodeError>())?;
    m.add("ReadOnlyError", py.get_type::<ReadOnlyError>())?;
    m.add("InternalError", py.get_type::<InternalError>())?;
    m.add("ConflictError", py.get_type::<ConflictError>())?;
    Ok(())
}
