//! Bindings of the Matrix Market reader (`sparsezarr._lib.MtxReader`).

use numpy::PyArray1;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};
use sparsezarr_core::mtx::{Field, MtxHeader, MtxReader, Symmetry};

use crate::errors::PythonExt;

/// Streams the entries of a Matrix Market coordinate file (gzip or plain) in blocks.
///
/// The reader is taken out of its slot while a block is read with the GIL released, so no lock
/// is held across a GIL release: another thread calling `read` meanwhile gets a `RuntimeError`,
/// and `header` / `entries_read` never wait for a read.
#[pyclass(name = "MtxReader", module = "sparsezarr._lib")]
pub struct PyMtxReader {
    header: MtxHeader,
    entries_read: AtomicU64,
    slot: Mutex<Option<MtxReader>>,
}

impl PyMtxReader {
    fn slot(&self) -> std::sync::MutexGuard<'_, Option<MtxReader>> {
        self.slot.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[pymethods]
impl PyMtxReader {
    /// Open the file and read its header.
    #[new]
    fn new(py: Python<'_>, path: std::path::PathBuf) -> PyResult<Self> {
        let reader = py.run_detached(|| MtxReader::open(&path))?;
        Ok(Self { header: *reader.header(), entries_read: AtomicU64::new(0), slot: Mutex::new(Some(reader)) })
    }

    /// `{"rows", "cols", "entries", "field", "symmetry"}`.
    #[getter]
    fn header<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let h = &self.header;
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
        self.entries_read.load(Ordering::Relaxed)
    }

    /// The next block of up to `max_entries` entries as `(rows, cols, values)` (0-based int64,
    /// int64, float64), or None at the end.
    fn read<'py>(&self, py: Python<'py>, max_entries: usize) -> PyResult<Option<Bound<'py, PyTuple>>> {
        let Some(mut reader) = self.slot().take() else {
            return Err(PyRuntimeError::new_err("this MtxReader is being read by another thread"));
        };
        let result = py.run_detached(|| reader.next_block(max_entries));
        self.entries_read.store(reader.entries_read(), Ordering::Relaxed);
        *self.slot() = Some(reader);
        let Some(b) = result? else {
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
