//! Conversions between Python objects and core types: numpy arrays to raw views, zarr-python's
//! per-chunk `batch_info` tuples to chunk requests, stored buffers to snapshot stores.

use numpy::{PyArray1, PyArrayDescrMethods, PyArrayMethods, PyUntypedArray, PyUntypedArrayMethods, npyffi};
use pyo3::buffer::PyBuffer;
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyInt, PySlice, PyTuple};
use sparsezarr_core::engine::ChunkRequest;
use sparsezarr_core::engine::selection::{DimSel, Selection};
use sparsezarr_core::engine::strided::RawView;
use sparsezarr_core::store::SnapshotStore;

/// Input arrays made read-only while the core reads them with the GIL released, so that no
/// Python thread can change them meanwhile (a write raises numpy's "assignment destination is
/// read-only"). Arrays that were writable become writable again when the guard is dropped, which
/// happens with the GIL held, after the detached call returned.
pub struct Frozen<'py> {
    arrays: Vec<Bound<'py, PyUntypedArray>>,
}

impl<'py> Frozen<'py> {
    /// Freeze `arrays` (those already read-only are left alone).
    pub fn new<'a>(arrays: impl IntoIterator<Item = &'a Bound<'py, PyUntypedArray>>) -> Self
    where
        'py: 'a,
    {
        let mut frozen = Vec::new();
        for arr in arrays {
            let ptr = arr.as_array_ptr();
            // SAFETY: `ptr` is a live numpy array object (borrowed through `arr`) and the GIL is
            // held; clearing WRITEABLE is what numpy's `PyArray_CLEARFLAGS` does.
            unsafe {
                if (*ptr).flags & npyffi::NPY_ARRAY_WRITEABLE != 0 {
                    (*ptr).flags &= !npyffi::NPY_ARRAY_WRITEABLE;
                    frozen.push(arr.clone());
                }
            }
        }
        Self { arrays: frozen }
    }
}

impl Drop for Frozen<'_> {
    fn drop(&mut self) {
        for arr in &self.arrays {
            let ptr = arr.as_array_ptr();
            // SAFETY: as in `new`; the guard holds a reference to the array and, being `!Send`
            // (it holds `Bound`s), is dropped on a thread holding the GIL.
            unsafe { (*ptr).flags |= npyffi::NPY_ARRAY_WRITEABLE };
        }
    }
}

/// A numpy array as a raw view. `writable` requires the array to be writable.
pub fn array_view<'a>(arr: &'a Bound<'_, PyUntypedArray>, writable: bool) -> PyResult<RawView<'a>> {
    let ptr = arr.as_array_ptr();
    // SAFETY: `ptr` is a live numpy array object while `arr` is borrowed.
    let (data, flags) = unsafe { ((*ptr).data, (*ptr).flags) };
    let itemsize = arr.dtype().itemsize();
    if writable && flags & npyffi::NPY_ARRAY_WRITEABLE == 0 {
        return Err(PyValueError::new_err("output array is not writable"));
    }
    let shape: Vec<u64> = arr.shape().iter().map(|&n| n as u64).collect();
    let strides = arr.strides().to_vec();
    // SAFETY: numpy guarantees every in-bounds element is valid memory while the array lives,
    // and `arr` (borrowed for 'a) keeps it alive; a view is writable only if numpy says the
    // array is.
    Ok(unsafe { RawView::new(data.cast(), shape, strides, itemsize, writable) })
}

/// A value array as a write source view, broadcast numpy-style to `ndim` dimensions: missing
/// leading dimensions and length-1 dimensions repeat their single element.
pub fn broadcast_view<'a>(arr: &'a Bound<'_, PyUntypedArray>, ndim: usize) -> PyResult<RawView<'a>> {
    let v = array_view(arr, false)?;
    if v.shape().len() > ndim {
        return Err(PyValueError::new_err(format!("cannot assign a {}-dimensional value to a {ndim}-dimensional selection", v.shape().len())));
    }
    let pad = ndim - v.shape().len();
    let mut shape = vec![u64::MAX; pad];
    let mut strides = vec![0isize; pad];
    for (&n, &s) in v.shape().iter().zip(v.strides()) {
        if n == 1 {
            shape.push(u64::MAX);
            strides.push(0);
        } else {
            shape.push(n);
            strides.push(s);
        }
    }
    // SAFETY: broadcast dimensions have stride 0 (every index maps to the single element), the
    // others are `v`'s; the view is read-only and borrows `arr` like `v`.
    Ok(unsafe { RawView::new(v.ptr(), shape, strides, v.itemsize(), false) })
}

fn slice_range(s: &Bound<'_, PySlice>, len: u64) -> PyResult<DimSel> {
    let ind = s.indices(isize::try_from(len).map_err(|_| PyValueError::new_err("dimension too large"))?)?;
    if ind.step < 1 {
        return Err(PyValueError::new_err("negative or zero slice steps are not supported here"));
    }
    Ok(DimSel::Range { start: ind.start as u64, step: ind.step as u64, len: ind.slicelength as u64 })
}

/// Flatten an integer (or boolean) array-like to indices.
fn index_list(obj: &Bound<'_, PyAny>) -> PyResult<Vec<u64>> {
    let np = obj.py().import("numpy")?;
    let mut arr = np.call_method1("asarray", (obj,))?;
    if arr.getattr("dtype")?.getattr("kind")?.extract::<String>()? == "b" {
        arr = np.call_method1("flatnonzero", (arr,))?;
    }
    let arr = np.call_method1("ascontiguousarray", (arr.call_method0("ravel")?, "int64"))?;
    let arr = arr.cast::<PyArray1<i64>>().map_err(|e| PyTypeError::new_err(e.to_string()))?;
    let ro = arr.readonly();
    let s = ro.as_slice().map_err(|e| PyValueError::new_err(e.to_string()))?;
    s.iter()
        .map(|&i| u64::try_from(i).map_err(|_| pyo3::exceptions::PyIndexError::new_err(format!("negative index {i} in chunk selection"))))
        .collect()
}

enum Item {
    Int(u64),
    Sel(DimSel),
}

fn parse_item(obj: &Bound<'_, PyAny>, len: u64) -> PyResult<Item> {
    if let Ok(s) = obj.cast::<PySlice>() {
        return slice_range(s, len).map(Item::Sel);
    }
    if obj.is_instance_of::<PyInt>() || obj.hasattr("__index__")? && !obj.hasattr("shape")? {
        let i: i64 = obj.extract()?;
        return u64::try_from(i).map(Item::Int).map_err(|_| pyo3::exceptions::PyIndexError::new_err("negative index"));
    }
    if obj.hasattr("shape")? && obj.getattr("shape")?.len()? == 0 {
        let i: i64 = obj.call_method0("item")?.extract()?;
        return u64::try_from(i).map(Item::Int).map_err(|_| pyo3::exceptions::PyIndexError::new_err("negative index"));
    }
    Ok(Item::Sel(DimSel::List(index_list(obj)?)))
}

/// Parse one zarr-python (chunk_selection, out_selection) pair.
pub fn parse_selection(
    chunk_sel: &Bound<'_, PyAny>,
    out_sel: &Bound<'_, PyAny>,
    chunk_shape: &[u64],
    out_shape: &[u64],
    drop_axes: &[usize],
) -> PyResult<Selection> {
    let chunk_items: Vec<Bound<'_, PyAny>> = match chunk_sel.cast::<PyTuple>() {
        Ok(t) => t.iter().collect(),
        Err(_) => vec![chunk_sel.clone()],
    };
    if let Ok(out_t) = out_sel.cast::<PyTuple>() {
        // Orthogonal (basic or outer) selection.
        if chunk_items.len() != chunk_shape.len() {
            return Err(PyValueError::new_err(format!(
                "chunk selection has {} items for a {}-dimensional chunk",
                chunk_items.len(),
                chunk_shape.len()
            )));
        }
        let out_items: Vec<Bound<'_, PyAny>> = out_t.iter().collect();
        let mut chunk = Vec::with_capacity(chunk_shape.len());
        let mut out = Vec::with_capacity(chunk_shape.len());
        let mut od = 0;
        for (d, (item, &len)) in chunk_items.iter().zip(chunk_shape).enumerate() {
            let (sel, dropped) = match parse_item(item, len)? {
                Item::Int(i) => (DimSel::range(i, 1), true),
                Item::Sel(s) => {
                    let dropped = drop_axes.contains(&d);
                    (s, dropped)
                }
            };
            if dropped {
                if sel.len() != 1 {
                    return Err(PyValueError::new_err("a dropped axis must select exactly one index"));
                }
                chunk.push(sel);
                out.push(None);
            } else {
                let o = out_items.get(od).ok_or_else(|| PyValueError::new_err("output selection has too few dimensions"))?;
                let olen = *out_shape.get(od).ok_or_else(|| PyValueError::new_err("output has too few dimensions"))?;
                let o = match parse_item(o, olen)? {
                    Item::Int(i) => DimSel::range(i, 1),
                    Item::Sel(s) => s,
                };
                od += 1;
                chunk.push(sel);
                out.push(Some(o));
            }
        }
        return Ok(Selection::Orthogonal { chunk, out });
    }
    // Coordinate (point) selection: one index array per chunk dimension, 1-d output.
    if chunk_items.len() != chunk_shape.len() {
        return Err(PyValueError::new_err("point selection does not match the chunk rank"));
    }
    let coords: Vec<Vec<u64>> = chunk_items
        .iter()
        .map(|i| match parse_item(i, 0)? {
            Item::Int(x) => Ok(vec![x]),
            Item::Sel(DimSel::List(v)) => Ok(v),
            Item::Sel(s) => Ok((0..s.len()).map(|k| s.get(k)).collect()),
        })
        .collect::<PyResult<_>>()?;
    let olen = out_shape.first().copied().unwrap_or(1);
    let out = match parse_item(out_sel, olen)? {
        Item::Int(i) => DimSel::range(i, 1),
        Item::Sel(s) => s,
    };
    Ok(Selection::Points { coords, out })
}

/// How chunk keys are obtained from `batch_info` entries.
#[derive(Clone, Copy)]
pub enum KeyMode {
    /// `byte_getter.path`.
    Path,
    /// The entry's position in the batch.
    Position,
}

/// Parse zarr-python's `batch_info` list into chunk requests.
pub fn parse_batch(
    batch_info: &Bound<'_, PyAny>,
    chunk_shape: &[u64],
    out_shape: &[u64],
    drop_axes: &[usize],
    keys: KeyMode,
) -> PyResult<Vec<ChunkRequest>> {
    let mut reqs = Vec::new();
    for (i, entry) in batch_info.try_iter()?.enumerate() {
        let entry = entry?;
        let t = entry.cast::<PyTuple>().map_err(|_| PyTypeError::new_err("batch_info entries must be tuples"))?;
        if t.len() != 5 {
            return Err(PyTypeError::new_err("batch_info entries must have 5 items"));
        }
        let key = match keys {
            KeyMode::Path => t.get_item(0)?.getattr("path")?.extract::<String>()?,
            KeyMode::Position => i.to_string(),
        };
        let selection = parse_selection(&t.get_item(2)?, &t.get_item(3)?, chunk_shape, out_shape, drop_axes)?;
        let complete: bool = t.get_item(4)?.is_truthy()?;
        reqs.push(ChunkRequest { key, selection, complete });
    }
    Ok(reqs)
}

/// A snapshot store over values looked up under `keys` in a Python mapping of zarr `Buffer`s
/// (a `MemoryStore`'s dict) or given directly as buffer-protocol objects / `None`.
pub fn snapshot_from_pairs<'py>(pairs: impl Iterator<Item = (String, Option<Bound<'py, PyAny>>)>, read_only: bool) -> PyResult<SnapshotStore> {
    let mut store = SnapshotStore::new(read_only);
    let mut keep: Vec<PyBuffer<u8>> = Vec::new();
    for (key, value) in pairs {
        match value {
            None => store.insert_missing(key),
            Some(v) => {
                let buf = PyBuffer::<u8>::get(&v)?;
                if !buf.is_c_contiguous() {
                    return Err(PyValueError::new_err("stored buffers must be contiguous"));
                }
                // SAFETY: the buffer stays alive (and its exporter keeps the memory) as long as
                // `keep`, which the store owns.
                unsafe { store.insert_borrowed(key, buf.buf_ptr().cast::<u8>().cast_const(), buf.len_bytes()) };
                keep.push(buf);
            }
        }
    }
    store.set_keepalive(Box::new(keep));
    Ok(store)
}
