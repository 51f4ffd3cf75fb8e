//! Bindings of the sparse array engine (`sparsezarr._lib.SparseArray`).

use std::sync::Arc;

use numpy::{PyArray1, PyArrayDescrMethods, PyArrayMethods, PyUntypedArray, PyUntypedArrayMethods};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyList, PyTuple};
use sparsezarr_core::engine::Concurrency;
use sparsezarr_core::engine::codec::EngineOptions;
use sparsezarr_core::engine::selection::DimSel;
use sparsezarr_core::sparse::array::IndexVec;
use sparsezarr_core::sparse::{Duplicates, Indices, ReadFormat, SparseArray, SparseInput, SparseResult};
use sparsezarr_core::store::Store;

use crate::convert::Frozen;
use crate::errors::PythonExt;
use crate::pystore::PyStore;

/// A sparse array's engine: regions in and out as coordinates and values.
#[pyclass(frozen, name = "SparseArray", module = "sparsezarr._lib")]
pub struct PySparseArray {
    inner: Arc<SparseArray>,
}

/// One dimension of a region: `(start, step, length)` or a 1-d integer array.
fn parse_region(region: &Bound<'_, PyList>) -> PyResult<Vec<DimSel>> {
    region
        .iter()
        .map(|item| {
            if let Ok(t) = item.cast::<PyTuple>() {
                let (start, step, len): (u64, u64, u64) = t.extract()?;
                if step == 0 {
                    return Err(PyValueError::new_err("slice step must be positive"));
                }
                return Ok(DimSel::Range { start, step, len });
            }
            let arr = item.cast::<PyArray1<i64>>().map_err(|_| PyTypeError::new_err("region items must be (start, step, len) or int64 arrays"))?;
            let ro = arr.readonly();
            let v = ro.as_slice().map_err(|e| PyValueError::new_err(e.to_string()))?;
            let v: Vec<u64> = v
                .iter()
                .map(|&i| u64::try_from(i).map_err(|_| pyo3::exceptions::PyIndexError::new_err(format!("negative index {i}"))))
                .collect::<PyResult<_>>()?;
            Ok(DimSel::List(v))
        })
        .collect()
}

/// An integer index array (int32 or int64, contiguous) as `Indices`.
fn indices<'a>(arr: &'a Bound<'_, PyUntypedArray>) -> PyResult<Indices<'a>> {
    if !arr.is_c_contiguous() || arr.ndim() != 1 {
        return Err(PyValueError::new_err("index arrays must be 1-dimensional and contiguous"));
    }
    let kind = arr.dtype().kind();
    let size = arr.dtype().itemsize();
    let ptr = arr.as_array_ptr();
    // SAFETY: `ptr` is a live numpy array object, borrowed through `arr`.
    let (data, flags) = unsafe { ((*ptr).data, (*ptr).flags) };
    if flags & numpy::npyffi::NPY_ARRAY_ALIGNED == 0 {
        return Err(PyValueError::new_err("index arrays must be aligned"));
    }
    let n = arr.len();
    match (kind, size) {
        // SAFETY: a contiguous, aligned 1-d array of `n` int32 at `data`, kept alive by `arr` for 'a.
        (b'i', 4) => Ok(Indices::I32(unsafe { std::slice::from_raw_parts(data.cast::<i32>().cast_const(), n) })),
        // SAFETY: as above, int64.
        (b'i', 8) => Ok(Indices::I64(unsafe { std::slice::from_raw_parts(data.cast::<i64>().cast_const(), n) })),
        _ => Err(PyTypeError::new_err("index arrays must be int32 or int64")),
    }
}

/// The bytes of a contiguous numpy array.
fn raw_bytes<'a>(arr: &'a Bound<'_, PyUntypedArray>) -> PyResult<&'a [u8]> {
    if !arr.is_c_contiguous() {
        return Err(PyValueError::new_err("value arrays must be contiguous"));
    }
    let ptr = arr.as_array_ptr();
    let n = arr.len() * arr.dtype().itemsize();
    // SAFETY: a contiguous numpy array of `n` bytes, kept alive by `arr` for 'a.
    Ok(unsafe { std::slice::from_raw_parts((*ptr).data.cast::<u8>().cast_const(), n) })
}

fn index_array(py: Python<'_>, v: IndexVec) -> Py<PyAny> {
    match v {
        IndexVec::I32(v) => PyArray1::from_vec(py, v).into_any().unbind(),
        IndexVec::I64(v) => PyArray1::from_vec(py, v).into_any().unbind(),
    }
}

fn result_to_py<'py>(py: Python<'py>, r: SparseResult) -> PyResult<Bound<'py, PyTuple>> {
    let coords = index_array(py, r.coords);
    let values = PyArray1::from_vec(py, r.values);
    let offsets: Py<PyAny> = match r.row_offsets {
        Some(o) => index_array(py, o),
        None => py.None(),
    };
    PyTuple::new(py, [coords, values.into_any().unbind(), offsets, r.nnz.into_pyobject(py)?.into_any().unbind()])
}

impl PySparseArray {
    fn read_with<'py>(&self, py: Python<'py>, store: &dyn Store, region: &Bound<'py, PyList>, csr: bool) -> PyResult<Bound<'py, PyTuple>> {
        let region = parse_region(region)?;
        let format = if csr { ReadFormat::Csr } else { ReadFormat::Coo };
        let arr = &self.inner;
        let cache = sparsezarr_core::engine::shared_index_cache();
        let r = py.run_detached(|| arr.read(store, &region, format, Some(cache)))?;
        result_to_py(py, r)
    }

    #[allow(clippy::too_many_arguments)]
    fn write_with(
        &self,
        py: Python<'_>,
        store: &dyn Store,
        start: Vec<u64>,
        shape: Vec<u64>,
        coords: Option<&Bound<'_, PyList>>,
        compressed: Option<(usize, &Bound<'_, PyUntypedArray>, &Bound<'_, PyUntypedArray>)>,
        values: &Bound<'_, PyUntypedArray>,
        sum_duplicates: bool,
    ) -> PyResult<()> {
        if values.dtype().itemsize() != self.inner.elem().size() {
            return Err(PyTypeError::new_err("value dtype does not match the array's data type"));
        }
        let vals = raw_bytes(values)?;
        let dup = if sum_duplicates { Duplicates::Sum } else { Duplicates::Error };
        let arr = &self.inner;
        match (coords, compressed) {
            (Some(list), None) => {
                let owned: Vec<Bound<'_, PyUntypedArray>> = list
                    .iter()
                    .map(|c| c.cast_into::<PyUntypedArray>().map_err(|_| PyTypeError::new_err("coordinates must be numpy arrays")))
                    .collect::<PyResult<_>>()?;
                let _frozen = Frozen::new(owned.iter().chain([values]));
                let idx: Vec<Indices<'_>> = owned.iter().map(indices).collect::<PyResult<_>>()?;
                let input = SparseInput::Coo { coords: &idx, values: vals };
                py.run_detached(|| arr.write(store, &start, &shape, &input, dup))
            }
            (None, Some((axis, indptr, ind))) => {
                let _frozen = Frozen::new([indptr, ind, values]);
                let input = SparseInput::Compressed { axis, indptr: indices(indptr)?, indices: indices(ind)?, values: vals };
                py.run_detached(|| arr.write(store, &start, &shape, &input, dup))
            }
            _ => Err(PyValueError::new_err("give either coordinates or a compressed (indptr, indices) pair")),
        }
    }
}

#[pymethods]
impl PySparseArray {
    /// Open the engine for a sparse array from its v3 metadata JSON.
    #[new]
    #[pyo3(signature = (metadata_json, *, fill_bytes = None, prefix = String::new(), validate_checksums = true, threads = 0, coalesce_max_gap = 1 << 16, coalesce_max_bytes = 16 << 20))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        metadata_json: &str,
        fill_bytes: Option<Vec<u8>>,
        prefix: String,
        validate_checksums: bool,
        threads: usize,
        coalesce_max_gap: u64,
        coalesce_max_bytes: u64,
    ) -> PyResult<Self> {
        let opts = EngineOptions { validate_checksums, coalesce_max_gap, coalesce_max_bytes };
        let arr = py.run_detached(|| SparseArray::from_metadata_json(metadata_json, fill_bytes, &prefix, opts, Concurrency { threads }))?;
        Ok(Self { inner: Arc::new(arr) })
    }

    /// Shape of the sparse chunks.
    #[getter]
    fn chunk_shape(&self) -> Vec<u64> {
        self.inner.chunk_shape().to_vec()
    }

    /// Shape of the shards, or None.
    #[getter]
    fn shard_shape(&self) -> Option<Vec<u64>> {
        self.inner.shard_shape().map(<[u64]>::to_vec)
    }

    /// Read a region: `(coords, values_bytes, row_offsets | None, nnz)`.
    #[pyo3(signature = (store, region, csr = false))]
    fn read<'py>(&self, py: Python<'py>, store: &PyStore, region: &Bound<'py, PyList>, csr: bool) -> PyResult<Bound<'py, PyTuple>> {
        self.read_with(py, store.core(), region, csr)
    }

    /// Replace the box `start..start+shape`. Give `coords` (a list of index arrays) or
    /// `compressed=(axis, indptr, indices)`.
    #[pyo3(signature = (store, start, shape, values, *, coords = None, compressed = None, sum_duplicates = true))]
    #[allow(clippy::too_many_arguments)]
    fn write(
        &self,
        py: Python<'_>,
        store: &PyStore,
        start: Vec<u64>,
        shape: Vec<u64>,
        values: &Bound<'_, PyUntypedArray>,
        coords: Option<&Bound<'_, PyList>>,
        compressed: Option<(usize, Bound<'_, PyUntypedArray>, Bound<'_, PyUntypedArray>)>,
        sum_duplicates: bool,
    ) -> PyResult<()> {
        let c = compressed.as_ref().map(|(a, p, i)| (*a, p, i));
        self.write_with(py, store.core(), start, shape, coords, c, values, sum_duplicates)
    }

    /// `(nnz, stored_bytes)` of the array.
    fn stats(&self, py: Python<'_>, store: &PyStore) -> PyResult<(u64, u64)> {
        let arr = &self.inner;
        let cache = sparsezarr_core::engine::shared_index_cache();
        let store = store.core();
        py.run_detached(|| arr.stats(store, Some(cache)))
    }
}
