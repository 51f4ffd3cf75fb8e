//! Bindings of the compressed-sparse-matrix engine (`sparsezarr._lib.CsrReader`, `CsrWriter`,
//! `write_matrix`, `read_array`, `write_array`).

use numpy::{PyArray1, PyArrayDescrMethods, PyUntypedArray, PyUntypedArrayMethods};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyTuple;
use sparsezarr_core::csr::{Array1d, CsrSource, CsrWriter, ElemType, Gathered, IntsIn, Major, write_matrix};
use sparsezarr_core::engine::Concurrency;
use sparsezarr_core::engine::codec::EngineOptions;
use sparsezarr_core::sparse::array::IndexVec;

use crate::convert::Frozen;
use crate::errors::PythonExt;
use crate::pystore::PyStore;

fn open_array(json: &str, prefix: &str, validate_checksums: bool, threads: usize) -> sparsezarr_core::Result<Array1d> {
    let options = EngineOptions { validate_checksums, ..EngineOptions::default() };
    Array1d::from_metadata_json(json, prefix, options, Concurrency { threads })
}

/// The bytes of a contiguous, native-order numpy array.
fn raw<'a>(arr: &'a Bound<'_, PyUntypedArray>, what: &str) -> PyResult<&'a [u8]> {
    if !arr.is_c_contiguous() || arr.ndim() != 1 {
        return Err(PyValueError::new_err(format!("{what} must be a contiguous 1-dimensional array")));
    }
    if !arr.dtype().is_native_byteorder().unwrap_or(true) {
        return Err(PyValueError::new_err(format!("{what} must be in native byte order")));
    }
    let ptr = arr.as_array_ptr();
    let n = arr.len() * arr.dtype().itemsize();
    // SAFETY: a contiguous numpy array of `n` bytes, kept alive by `arr` for 'a.
    Ok(unsafe { std::slice::from_raw_parts((*ptr).data.cast::<u8>().cast_const(), n) })
}

/// An integer numpy array as `(kind, bytes)`.
pub(crate) fn ints<'a>(arr: &'a Bound<'_, PyUntypedArray>, what: &str) -> PyResult<IntsIn<'a>> {
    let d = arr.dtype();
    let kind = match (d.kind(), d.itemsize()) {
        (b'i', 1) => ElemType::I8,
        (b'i', 2) => ElemType::I16,
        (b'i', 4) => ElemType::I32,
        (b'i', 8) => ElemType::I64,
        (b'u', 1) => ElemType::U8,
        (b'u', 2) => ElemType::U16,
        (b'u', 4) => ElemType::U32,
        (b'u', 8) => ElemType::U64,
        _ => return Err(PyTypeError::new_err(format!("{what} must be an integer array"))),
    };
    Ok((kind, raw(arr, what)?))
}

/// A gather's optional row list and minor-axis lookup table.
type RowsAndLut = (Option<Vec<u64>>, Option<Vec<i64>>);

/// The optional row list (non-negative integers) and minor-axis lookup table (int64) of a gather.
pub(crate) fn rows_and_lut(rows: Option<&Bound<'_, PyUntypedArray>>, lut: Option<&Bound<'_, PyUntypedArray>>) -> PyResult<RowsAndLut> {
    let rows: Option<Vec<u64>> = match rows {
        None => None,
        Some(r) => {
            let (kind, bytes) = ints(r, "rows")?;
            let n = bytes.len() / kind.size();
            Some(
                (0..n)
                    .map(|i| kind.get(bytes, i).ok_or_else(|| pyo3::exceptions::PyIndexError::new_err("negative row index")))
                    .collect::<PyResult<_>>()?,
            )
        }
    };
    let lut: Option<Vec<i64>> = match lut {
        None => None,
        Some(l) => {
            let (kind, bytes) = ints(l, "lut")?;
            if kind != ElemType::I64 {
                return Err(PyTypeError::new_err("lut must be int64"));
            }
            Some(bytes.chunks_exact(8).map(|c| i64::from_ne_bytes(c.try_into().unwrap_or_default())).collect())
        }
    };
    Ok((rows, lut))
}

pub(crate) fn index_array(py: Python<'_>, v: IndexVec) -> Py<PyAny> {
    match v {
        IndexVec::I32(v) => PyArray1::from_vec(py, v).into_any().unbind(),
        IndexVec::I64(v) => PyArray1::from_vec(py, v).into_any().unbind(),
    }
}

pub(crate) fn gathered_to_py(py: Python<'_>, g: Gathered) -> PyResult<Bound<'_, PyTuple>> {
    let nnz = g.nnz.into_pyobject(py)?.into_any().unbind();
    PyTuple::new(py, [PyArray1::from_vec(py, g.data).into_any().unbind(), index_array(py, g.indices), index_array(py, g.indptr), nnz])
}

/// Read rows (the major axis) of a stored compressed sparse matrix.
#[pyclass(frozen, name = "CsrReader", module = "sparsezarr._lib")]
pub struct PyCsrReader {
    inner: CsrSource,
}

#[pymethods]
impl PyCsrReader {
    /// `data` and `indices` array metadata JSON with their key prefixes, the index pointer (any
    /// integer array; it is validated), and the length of the minor axis.
    #[new]
    #[pyo3(signature = (data_json, data_prefix, indices_json, indices_prefix, indptr, minor, *, threads = 0, validate_checksums = true))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        data_json: &str,
        data_prefix: &str,
        indices_json: &str,
        indices_prefix: &str,
        indptr: &Bound<'_, PyUntypedArray>,
        minor: u64,
        threads: usize,
        validate_checksums: bool,
    ) -> PyResult<Self> {
        let (kind, bytes) = ints(indptr, "indptr")?;
        let inner = py.run_detached(|| {
            let data = open_array(data_json, data_prefix, validate_checksums, threads)?;
            let indices = open_array(indices_json, indices_prefix, validate_checksums, threads)?;
            let ptr = sparsezarr_core::csr::ints::indptr_values("indptr", kind, bytes).map_err(|e| match e {
                sparsezarr_core::Error::Decode { message, .. } => sparsezarr_core::Error::InvalidMetadata(message),
                other => other,
            })?;
            CsrSource::new(data, indices, ptr, minor, threads)
        })?;
        Ok(Self { inner })
    }

    /// Number of rows (columns of a CSC matrix).
    #[getter]
    fn n_major(&self) -> u64 {
        self.inner.major_len()
    }

    /// Number of stored values.
    #[getter]
    fn nnz(&self) -> u64 {
        self.inner.nnz()
    }

    /// The index pointer as int64.
    fn indptr<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<i64>> {
        #[allow(clippy::cast_possible_wrap)]
        PyArray1::from_vec(py, self.inner.indptr().iter().map(|&v| v as i64).collect())
    }

    /// Gather `rows` (an int64 array, any order, repeats allowed) or the rows `start..stop`,
    /// optionally keeping only the minor positions `lut` maps (`lut[j]` = new index, -1 = drop).
    /// Returns `(data_bytes, indices, indptr, nnz)`.
    #[pyo3(signature = (store, rows = None, start = 0, stop = 0, lut = None, huge_pages = false))]
    #[allow(clippy::too_many_arguments)]
    fn gather<'py>(
        &self,
        py: Python<'py>,
        store: &Bound<'py, PyAny>,
        rows: Option<&Bound<'py, PyUntypedArray>>,
        start: u64,
        stop: u64,
        lut: Option<&Bound<'py, PyUntypedArray>>,
        huge_pages: bool,
    ) -> PyResult<Bound<'py, PyTuple>> {
        let store =
            store.extract::<PyRef<'_, PyStore>>().map_err(|_| pyo3::exceptions::PyTypeError::new_err("store must be a sparsezarr._lib.Store"))?;
        let (rows, lut) = rows_and_lut(rows, lut)?;
        let major = match &rows {
            Some(r) => Major::List(r),
            None => Major::Range { start, stop },
        };
        let src = &self.inner;
        let s = store.core();
        let g = py.run_detached(|| match &lut {
            Some(l) => src.gather_minor(s, major, l),
            None => src.gather(s, major, huge_pages),
        })?;
        gathered_to_py(py, g)
    }
}

/// Read a whole one-dimensional array (e.g. an `indptr`); returns its native-order bytes.
#[pyfunction]
#[pyo3(signature = (store, metadata_json, prefix, *, threads = 0, validate_checksums = true))]
pub fn read_array<'py>(
    py: Python<'py>,
    store: &Bound<'py, PyAny>,
    metadata_json: &str,
    prefix: &str,
    threads: usize,
    validate_checksums: bool,
) -> PyResult<Bound<'py, PyArray1<u8>>> {
    let store = store.extract::<PyRef<'_, PyStore>>().map_err(|_| pyo3::exceptions::PyTypeError::new_err("store must be a sparsezarr._lib.Store"))?;
    let s = store.core();
    let bytes = py.run_detached(|| {
        let a = open_array(metadata_json, prefix, validate_checksums, threads)?;
        let bytes = usize::try_from(a.len()).ok().and_then(|n| n.checked_mul(a.elem_size())).unwrap_or(usize::MAX);
        let mut out = sparsezarr_core::error::zeroed(bytes, &format_args!("an array of {} elements", a.len()))?;
        sparsezarr_core::runtime::run_in_pool(threads, || a.read_runs(s, &[(0, a.len())], &mut out))?;
        Ok(out)
    })?;
    Ok(PyArray1::from_vec(py, bytes))
}

/// Write `values` into a one-dimensional array from element `start` (chunks partly covered are
/// merged with what is stored).
#[pyfunction]
#[pyo3(signature = (store, metadata_json, prefix, start, values, *, threads = 0))]
pub fn write_array(
    py: Python<'_>,
    store: &Bound<'_, PyAny>,
    metadata_json: &str,
    prefix: &str,
    start: u64,
    values: &Bound<'_, PyUntypedArray>,
    threads: usize,
) -> PyResult<()> {
    let store = store.extract::<PyRef<'_, PyStore>>().map_err(|_| pyo3::exceptions::PyTypeError::new_err("store must be a sparsezarr._lib.Store"))?;
    let s = store.core();
    let _frozen = Frozen::new([values]);
    let bytes = raw(values, "values")?;
    py.run_detached(|| {
        let a = open_array(metadata_json, prefix, true, threads)?;
        if bytes.len() % a.elem_size() != 0 {
            return Err(sparsezarr_core::Error::InvalidArgument("value size does not match the array's element size".into()));
        }
        sparsezarr_core::runtime::run_in_pool(threads, || a.write_range(s, start, bytes))
    })
}

/// Validate and write a whole compressed matrix into its three arrays, concurrently.
#[pyfunction]
#[pyo3(signature = (store, data, indices, indptr, indptr_values, indices_values, data_values, minor, *, threads = 0))]
#[allow(clippy::too_many_arguments)]
pub fn write_compressed(
    py: Python<'_>,
    store: &Bound<'_, PyAny>,
    data: (String, String),
    indices: (String, String),
    indptr: (String, String),
    indptr_values: &Bound<'_, PyUntypedArray>,
    indices_values: &Bound<'_, PyUntypedArray>,
    data_values: &Bound<'_, PyUntypedArray>,
    minor: u64,
    threads: usize,
) -> PyResult<()> {
    let store = store.extract::<PyRef<'_, PyStore>>().map_err(|_| pyo3::exceptions::PyTypeError::new_err("store must be a sparsezarr._lib.Store"))?;
    let s = store.core();
    let _frozen = Frozen::new([indptr_values, indices_values, data_values]);
    let p = ints(indptr_values, "indptr")?;
    let i = ints(indices_values, "indices")?;
    let v = raw(data_values, "data")?;
    let itemsize = data_values.dtype().itemsize();
    py.run_detached(|| {
        let d = open_array(&data.0, &data.1, true, threads)?;
        if itemsize != d.elem_size() {
            return Err(sparsezarr_core::Error::InvalidArgument(format!(
                "data has {itemsize}-byte elements, the stored data type {}-byte ones",
                d.elem_size()
            )));
        }
        let ia = open_array(&indices.0, &indices.1, true, threads)?;
        let pa = open_array(&indptr.0, &indptr.1, true, threads)?;
        write_matrix(s, &d, &ia, &pa, p, i, v, minor, threads)
    })
}

/// A stream of row blocks written into `data` and `indices`; `finish` returns the index pointer.
#[pyclass(name = "CsrWriter", module = "sparsezarr._lib")]
pub struct PyCsrWriter {
    inner: CsrWriter,
    es: usize,
}

#[pymethods]
impl PyCsrWriter {
    /// Continue a matrix of `minor` columns after the rows of `indptr` (`[0]` for a new one).
    #[new]
    #[pyo3(signature = (data_json, data_prefix, indices_json, indices_prefix, minor, indptr, *, threads = 0))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        data_json: &str,
        data_prefix: &str,
        indices_json: &str,
        indices_prefix: &str,
        minor: u64,
        indptr: &Bound<'_, PyUntypedArray>,
        threads: usize,
    ) -> PyResult<Self> {
        let (kind, bytes) = ints(indptr, "indptr")?;
        let (inner, es) = py.run_detached(|| {
            let ptr = sparsezarr_core::csr::ints::indptr_values("indptr", kind, bytes).map_err(sparsezarr_core::Error::into_input_error)?;
            let mut data = open_array(data_json, data_prefix, true, threads)?;
            let mut indices = open_array(indices_json, indices_prefix, true, threads)?;
            let nnz = ptr.last().copied().unwrap_or(0);
            data.set_len(nnz);
            indices.set_len(nnz);
            let es = data.elem_size();
            Ok((CsrWriter::new(data, indices, minor, ptr, threads)?, es))
        })?;
        Ok(Self { inner, es })
    }

    /// Rows written so far.
    #[getter]
    fn rows(&self) -> u64 {
        self.inner.rows()
    }

    /// Values written so far.
    #[getter]
    fn nnz(&self) -> u64 {
        self.inner.nnz()
    }

    /// Append a block of rows (its `indptr`, `indices` and `data` arrays).
    fn append(
        &mut self,
        py: Python<'_>,
        store: &Bound<'_, PyAny>,
        indptr: &Bound<'_, PyUntypedArray>,
        indices: &Bound<'_, PyUntypedArray>,
        data: &Bound<'_, PyUntypedArray>,
    ) -> PyResult<()> {
        let store =
            store.extract::<PyRef<'_, PyStore>>().map_err(|_| pyo3::exceptions::PyTypeError::new_err("store must be a sparsezarr._lib.Store"))?;
        let s = store.core();
        let _frozen = Frozen::new([indptr, indices, data]);
        let p = ints(indptr, "indptr")?;
        let i = ints(indices, "indices")?;
        let v = raw(data, "data")?;
        if data.dtype().itemsize() != self.es {
            return Err(PyTypeError::new_err("data dtype does not match the stored data type"));
        }
        let w = &mut self.inner;
        py.run_detached(|| w.append(s, p, i, v))
    }

    /// Write everything pending; returns the index pointer of all rows (int64).
    fn finish<'py>(&mut self, py: Python<'py>, store: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyArray1<i64>>> {
        let store =
            store.extract::<PyRef<'_, PyStore>>().map_err(|_| pyo3::exceptions::PyTypeError::new_err("store must be a sparsezarr._lib.Store"))?;
        let s = store.core();
        let w = &mut self.inner;
        #[allow(clippy::cast_possible_wrap)]
        let ptr: Vec<i64> = py.run_detached(|| w.finish(s).map(|p| p.iter().map(|&v| v as i64).collect()))?;
        Ok(PyArray1::from_vec(py, ptr))
    }
}
