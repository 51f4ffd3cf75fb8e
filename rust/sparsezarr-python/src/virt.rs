//! Bindings of virtual arrays: conversions of selections, arrays and results only.

use std::sync::Arc;

use numpy::{PyArray1, PyArray2, PyArrayMethods, PyUntypedArray};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyTuple};
use sparsezarr_core::csr::{Major, filter_minor};
use sparsezarr_core::engine::Concurrency;
use sparsezarr_core::engine::codec::{EngineOptions, ValueSource};
use sparsezarr_core::engine::selection::DimSel;
use sparsezarr_core::sparse::Duplicates;
use sparsezarr_core::store::Store;
use sparsezarr_core::virt::{Location, OpenOptions, VirtualArray, sort_entries};

use crate::convert::{Frozen, array_view};
use crate::csr::{gathered_to_py, ints, rows_and_lut};
use crate::errors::PythonExt;
use crate::pystore::PyStore;

/// A virtual array (document compiled; components opened on first touch).
#[pyclass(frozen, name = "VirtualArray", module = "sparsezarr._lib")]
pub struct PyVirtualArray {
    inner: Arc<VirtualArray>,
}

fn shared_store(store: &Bound<'_, PyAny>) -> PyResult<Arc<dyn Store>> {
    let s = store.extract::<PyRef<'_, PyStore>>().map_err(|_| PyTypeError::new_err("store must be a sparsezarr._lib.Store"))?;
    Ok(s.inner.clone())
}

/// Selections from Python: per dimension `(start, step, len)` or an integer array.
fn selections(sels: &Bound<'_, PyAny>) -> PyResult<Vec<DimSel>> {
    let mut out = Vec::new();
    for item in sels.try_iter()? {
        let item = item?;
        if let Ok((start, step, len)) = item.extract::<(u64, u64, u64)>() {
            if step == 0 {
                return Err(PyValueError::new_err("step must be positive"));
            }
            out.push(DimSel::Range { start, step, len });
        } else {
            let arr = item.cast::<PyUntypedArray>().map_err(|_| PyTypeError::new_err("each selection is (start, step, len) or an integer array"))?;
            let (kind, bytes) = ints(arr, "index")?;
            let n = bytes.len() / kind.size();
            let v: Vec<u64> = (0..n)
                .map(|i| kind.get(bytes, i).ok_or_else(|| pyo3::exceptions::PyIndexError::new_err("negative index")))
                .collect::<PyResult<_>>()?;
            out.push(DimSel::List(v));
        }
    }
    Ok(out)
}

fn outs(sels: &[DimSel], keep: &[bool]) -> PyResult<Vec<Option<DimSel>>> {
    if keep.len() != sels.len() {
        return Err(PyValueError::new_err("keep must have one flag per dimension"));
    }
    Ok(sels.iter().zip(keep).map(|(s, &k)| k.then(|| DimSel::range(0, s.len()))).collect())
}

#[pymethods]
impl PyVirtualArray {
    /// Open the document `document` (JSON text) found in directory `dir` (a key prefix, `""` or
    /// `"a/b/"`) of `store`. Parses and checks the document; opens no component.
    ///
    /// `mounts` maps URL prefixes (`s3://bucket/sample1.zarr`) to stores: components named by
    /// URLs below one are read through it.
    #[new]
    #[pyo3(signature = (store, document, dir = "", *, allow = Vec::new(), mounts = Vec::new(), threads = 0, validate_checksums = true))]
    fn new(
        store: &Bound<'_, PyAny>,
        document: &str,
        dir: &str,
        allow: Vec<String>,
        mounts: Vec<(String, Bound<'_, PyAny>)>,
        threads: usize,
        validate_checksums: bool,
    ) -> PyResult<Self> {
        let store = shared_store(store)?;
        let mounts = mounts.into_iter().map(|(url, s)| shared_store(&s).map(|s| (url, s))).collect::<PyResult<Vec<_>>>()?;
        let options = OpenOptions {
            allow,
            mounts,
            engine: EngineOptions { validate_checksums, ..EngineOptions::default() },
            concurrency: Concurrency { threads },
        };
        let loc = Location { store, dir: dir.to_string() };
        let inner =
            sparsezarr_core::error::catch_panic(|| VirtualArray::open(document, loc, options, Vec::new())).map_err(crate::errors::to_pyerr)?;
        Ok(Self { inner: Arc::new(inner) })
    }

    /// The view's shape.
    #[getter]
    fn shape(&self) -> Vec<u64> {
        self.inner.shape().to_vec()
    }

    /// Zarr v3 data type name.
    #[getter]
    fn data_type(&self) -> String {
        self.inner.data_type().to_string()
    }

    /// `"dense"`, `"sparse"`, `"csr"` or `"csc"`.
    #[getter]
    fn storage(&self) -> String {
        format!("{:?}", self.inner.storage()).to_lowercase()
    }

    /// The fill value as native element bytes.
    #[getter]
    fn fill_bytes<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, self.inner.fill())
    }

    /// Number of components.
    #[getter]
    fn num_components(&self) -> usize {
        self.inner.num_components()
    }

    /// Number of components opened so far.
    #[getter]
    fn num_opened(&self) -> usize {
        self.inner.num_opened()
    }

    /// The document as JSON text.
    fn to_json(&self) -> PyResult<String> {
        self.inner.document().to_json().map_err(crate::errors::to_pyerr)
    }

    /// Read a dense orthogonal selection into `out` (shape: the lengths of the kept dimensions).
    fn read(&self, py: Python<'_>, sels: &Bound<'_, PyAny>, keep: Vec<bool>, out: &Bound<'_, PyUntypedArray>) -> PyResult<()> {
        let sels = selections(sels)?;
        let outs = outs(&sels, &keep)?;
        let view = array_view(out, true)?;
        let inner = &self.inner;
        py.run_detached(|| inner.read_into(&sels, &outs, &view))
    }

    /// Write a dense orthogonal selection from `value` (C-contiguous, shaped like a read's output).
    fn write(&self, py: Python<'_>, sels: &Bound<'_, PyAny>, keep: Vec<bool>, value: &Bound<'_, PyUntypedArray>) -> PyResult<()> {
        let sels = selections(sels)?;
        let outs = outs(&sels, &keep)?;
        let _frozen = Frozen::new([value]);
        let view = array_view(value, false)?;
        let inner = &self.inner;
        py.run_detached(|| inner.write_from(&sels, &outs, &ValueSource::Array { view: &view, swap: 0 }))
    }

    /// Read the stored entries of a sparse orthogonal selection, in C order: returns
    /// `(coords int64 (kept dims, nnz), values as uint8 bytes)`.
    fn read_sparse<'py>(&self, py: Python<'py>, sels: &Bound<'py, PyAny>, keep: Vec<bool>) -> PyResult<Bound<'py, PyTuple>> {
        let sels = selections(sels)?;
        let outs = outs(&sels, &keep)?;
        let shape: Vec<u64> = outs.iter().flatten().map(DimSel::len).collect();
        let inner = &self.inner;
        let es = inner.fill().len();
        let e = py.run_detached(|| sort_entries(inner.read_entries(&sels, &outs)?, &shape, es))?;
        let nnz = e.values.len() / es.max(1);
        #[allow(clippy::cast_possible_wrap)]
        let flat: Vec<i64> = e.coords.iter().flat_map(|c| c.iter().map(|&x| x as i64)).collect();
        let coords = PyArray1::from_vec(py, flat).reshape([shape.len(), nnz])?;
        PyTuple::new(py, [coords.into_any().unbind(), PyArray1::from_vec(py, e.values).into_any().unbind()])
    }

    /// Replace the box `start..start+shape` of a sparse view with entries (`coords` int64
    /// `(ndim, nnz)`, relative to `start`; `values` native bytes). `duplicates`: `"sum"` or `"error"`.
    #[pyo3(signature = (start, shape, coords, values, duplicates = "sum"))]
    fn write_sparse(
        &self,
        py: Python<'_>,
        start: Vec<u64>,
        shape: Vec<u64>,
        coords: &Bound<'_, PyArray2<i64>>,
        values: &Bound<'_, PyUntypedArray>,
        duplicates: &str,
    ) -> PyResult<()> {
        let dup = match duplicates {
            "sum" => Duplicates::Sum,
            "error" => Duplicates::Error,
            other => return Err(PyValueError::new_err(format!("duplicates must be 'sum' or 'error', not {other:?}"))),
        };
        let c = coords.readonly();
        let c = c.as_array();
        if c.iter().any(|&x| x < 0) {
            return Err(pyo3::exceptions::PyIndexError::new_err("negative coordinate"));
        }
        #[allow(clippy::cast_sign_loss)]
        let cs: Vec<Vec<u64>> = c.rows().into_iter().map(|r| r.iter().map(|&x| x as u64).collect()).collect();
        let v = array_view(values, false)?;
        let n = v.shape().iter().product::<u64>() as usize * v.itemsize();
        // SAFETY: `values` is a live, C-contiguous array (the Python layer passes one) of `n` bytes.
        let bytes = unsafe { std::slice::from_raw_parts(v.ptr().cast_const(), n) }.to_vec();
        let inner = &self.inner;
        py.run_detached(|| inner.write_entries(&start, &shape, &cs, &bytes, dup))
    }

    /// Number of stored values of a CSR/CSC view (opens every component).
    fn nnz(&self, py: Python<'_>) -> PyResult<u64> {
        let inner = &self.inner;
        py.run_detached(|| inner.nnz())
    }

    /// Gather rows (CSR) or columns (CSC) across components: `rows` (integer array) or
    /// `start..stop`, optionally keeping only the minor positions `lut` maps. Returns
    /// `(data_bytes, indices, indptr, nnz)`.
    #[pyo3(signature = (rows = None, start = 0, stop = 0, lut = None, huge_pages = false))]
    fn gather<'py>(
        &self,
        py: Python<'py>,
        rows: Option<&Bound<'py, PyUntypedArray>>,
        start: u64,
        stop: u64,
        lut: Option<&Bound<'py, PyUntypedArray>>,
        huge_pages: bool,
    ) -> PyResult<Bound<'py, PyTuple>> {
        let (rows, lut) = rows_and_lut(rows, lut)?;
        let major = match &rows {
            Some(r) => Major::List(r),
            None => Major::Range { start, stop },
        };
        let inner = &self.inner;
        let es = inner.fill().len();
        let g = py.run_detached(|| {
            let g = inner.gather(major, huge_pages)?;
            match &lut {
                Some(l) => sparsezarr_core::runtime::run_in_pool(0, || filter_minor(&g, l, es)),
                None => Ok(g),
            }
        })?;
        gathered_to_py(py, g)
    }
}
