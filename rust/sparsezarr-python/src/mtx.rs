//! Bindings of the Matrix Market reader (`sparsezarr._lib.MtxReader`).

use numpy::PyArray1;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};
use sparsezarr_core::mtx::{Field, MtxReader, Symmetry};

use crate::errors::PythonExt;

/// Streams the entries of a Matrix Market coordinate file (gzip or plain) in blocks.
#[pyclass(name = "MtxReader", module = "sparsezarr._lib")]
pub struct PyMtxReader {
    inner: std::sync::Mutex<MtxReader>,
}

impl PyMtxReader {
    fn lock(&self) -> std::sync::MutexGuard<'_, MtxReader> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[pymethods]
impl PyMtxReader {
    /// Open the file and read its header.
    #[new]
    fn new(py: Python<'_>, path: std::path::PathBuf) -> PyResult<Self> {
        Ok(Self { inner: std::sync::Mutex::new(py.run_detached(|| MtxReader::open(&path))?) })
    }

    /// `{"rows", "cols", "entries", "field", "symmetry"}`.
    #[getter]
    fn header<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let guard = self.lock();
        let h = guard.header();
        let d = PyDict::new(py);
        d.set_item("rows", h.rows)?;
        d.set_item("cols", h.cols)?;
        d.set_item("entries", h.entries)?;
        d.set_item(
            "field",
            match h.field {
                Field::Real => "real",
                Field::Integer => "integer",
                Field::Pattern => "pattern",
            },
        )?;
        d.set_item(
            "symmetry",
            match h.symmetry {
                Symmetry::General => "general",
                Symmetry::Symmetric => "symmetric",
                Symmetry::SkewSymmetric => "skew-symmetric",
            },
        )?;
        Ok(d)
    }

    /// Entries read so far.
    #[getter]
    fn entries_read(&self) -> u64 {
        self.lock().entries_read()
    }

    /// The next block of up to `max_entries` entries as `(rows, cols, values)` (0-based int64,
    /// int64, float64), or None at the end.
    fn read<'py>(&self, py: Python<'py>, max_entries: usize) -> PyResult<Option<Bound<'py, PyTuple>>> {
        let mut guard = self.lock();
        let r = &mut *guard;
        let Some(b) = py.run_detached(|| r.next_block(max_entries))? else {
            return Ok(None);
        };
        #[allow(clippy::cast_possible_wrap)]
        let rows: Vec<i64> = b.rows.iter().map(|&v| v as i64).collect();
        #[allow(clippy::cast_possible_wrap)]
        let cols: Vec<i64> = b.cols.iter().map(|&v| v as i64).collect();
        let t = PyTuple::new(
            py,
            [PyArray1::from_vec(py, rows).into_any(), PyArray1::from_vec(py, cols).into_any(), PyArray1::from_vec(py, b.values).into_any()],
        )?;
        Ok(Some(t))
    }
}
