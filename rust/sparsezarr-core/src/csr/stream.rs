//! Writing compressed sparse matrices: a whole matrix at once, or a stream of row blocks whose
//! total size is not known in advance (memory bounded by one shard plus one block).

use super::array1d::Array1d;
use super::gather::int_kind;
use super::ints::{check_range, convert_checked, indptr_values};
use crate::dtype::ElemType;
use crate::error::{Error, Result};
use crate::runtime::run_in_pool;
use crate::store::Store;

/// An integer array from the caller: its type and native-order bytes.
pub type IntsIn<'a> = (ElemType, &'a [u8]);

/// `values` (u64) as native-order bytes of `kind`, checking that the largest fits.
fn encode_ints(what: &str, values: &[u64], kind: ElemType) -> Result<Vec<u8>> {
    if let Some(&m) = values.iter().max()
        && m > kind.max_value()
    {
        return Err(Error::InvalidArgument(format!("{what}: value {m} does not fit the stored type {}", kind.name())));
    }
    let mut out = vec![0u8; values.len() * kind.size()];
    for (i, &v) in values.iter().enumerate() {
        kind.put(&mut out, i, v);
    }
    Ok(out)
}

/// Indices from the caller in the stored type, checked to be below `minor` (borrowed when no
/// conversion is needed).
fn stored_indices<'a>(input: IntsIn<'a>, stored: ElemType, minor: u64) -> Result<std::borrow::Cow<'a, [u8]>> {
    let (kind, bytes) = input;
    if kind == stored {
        check_range("indices", kind, bytes, minor).map_err(Error::into_input_error)?;
        return Ok(std::borrow::Cow::Borrowed(bytes));
    }
    if minor > 0 && minor - 1 > stored.max_value() {
        return Err(Error::InvalidArgument(format!("{minor} columns do not fit the stored index type {}", stored.name())));
    }
    let mut out = vec![0u8; bytes.len() / kind.size() * stored.size()];
    convert_checked("indices", kind, bytes, stored, &mut out, minor).map_err(Error::into_input_error)?;
    Ok(std::borrow::Cow::Owned(out))
}

/// Check an index pointer from the caller: non-negative, never decreasing; returns its values.
fn input_indptr(input: IntsIn<'_>) -> Result<Vec<u64>> {
    let (kind, bytes) = input;
    let n = bytes.len() / kind.size();
    let mut out = Vec::with_capacity(n);
    let mut prev = 0u64;
    for i in 0..n {
        let v = kind.get(bytes, i).ok_or_else(|| Error::InvalidArgument(format!("indptr: negative value at position {i}")))?;
        if i > 0 && v < prev {
            return Err(Error::InvalidArgument(format!("indptr: decreases at position {i} ({prev} then {v})")));
        }
        prev = v;
        out.push(v);
    }
    Ok(out)
}

/// Write a whole compressed matrix (`minor` columns for CSR, rows for CSC) into its three arrays,
/// which must already have the right lengths: `data` and `indices` `nnz`, `indptr` `major + 1`.
/// The input is validated first (nothing is written if it is malformed), then the three arrays
/// are encoded and stored concurrently.
///
/// # Errors
/// Returns [`Error::InvalidArgument`] for malformed input (an index pointer that does not start at
/// 0, decreases or does not end at the number of values; indices out of range; lengths that do
/// not match the arrays), or the first write error.
#[allow(clippy::too_many_arguments)]
pub fn write_matrix(
    store: &dyn Store,
    data: &Array1d,
    indices: &Array1d,
    indptr: &Array1d,
    ptr_in: IntsIn<'_>,
    ind_in: IntsIn<'_>,
    values: &[u8],
    minor: u64,
    threads: usize,
) -> Result<()> {
    let ptr = indptr_values("indptr", ptr_in.0, ptr_in.1).map_err(Error::into_input_error)?;
    let nnz = ptr.last().copied().unwrap_or(0);
    let n_ind = (ind_in.1.len() / ind_in.0.size()) as u64;
    let n_val = (values.len() / data.elem_size()) as u64;
    if ptr.is_empty() || nnz != n_ind || nnz != n_val {
        return Err(Error::InvalidArgument(format!(
            "indptr ends at {}, but there are {n_ind} indices and {n_val} values",
            ptr.last().map_or_else(|| "nothing".to_string(), u64::to_string)
        )));
    }
    if data.len() != nnz || indices.len() != nnz || indptr.len() != ptr.len() as u64 {
        return Err(Error::InvalidArgument(format!(
            "arrays have lengths {}, {}, {}; the matrix needs {nnz}, {nnz}, {}",
            data.len(),
            indices.len(),
            indptr.len(),
            ptr.len()
        )));
    }
    let ind_kind = int_kind(indices, "indices")?;
    let ptr_bytes = encode_ints("indptr", &ptr, int_kind(indptr, "indptr")?)?;
    run_in_pool(threads, || {
        let ind = stored_indices(ind_in, ind_kind, minor)?;
        let ((d, i), p) = rayon::join(
            || rayon::join(|| data.write_range(store, 0, values), || indices.write_range(store, 0, &ind)),
            || indptr.write_range(store, 0, &ptr_bytes),
        );
        d.and(i).and(p)
    })
}

/// A stream of row blocks written into `data` and `indices` as they come; the index pointer is
/// kept in memory (8 bytes per row) and returned by [`finish`](Self::finish) for the caller to
/// store (its type depends on the final number of values).
///
/// Whole shards (outer chunks) are written as soon as enough values have arrived; at most one
/// shard of each array plus the current block is held in memory. Appending to an existing matrix
/// starts with its index pointer: its last partial shard is merged with the new values.
pub struct CsrWriter {
    data: Array1d,
    indices: Array1d,
    index_kind: ElemType,
    minor: u64,
    indptr: Vec<u64>,
    data_done: u64,
    indices_done: u64,
    pending_data: Vec<u8>,
    pending_indices: Vec<u8>,
    threads: usize,
}

impl CsrWriter {
    /// A writer continuing after the rows of `indptr` (`[0]` for a new matrix).
    ///
    /// # Errors
    /// Returns [`Error::InvalidArgument`] if `indptr` is empty, or [`Error::InvalidMetadata`] if
    /// `indices` does not hold integers.
    pub fn new(data: Array1d, indices: Array1d, minor: u64, indptr: Vec<u64>, threads: usize) -> Result<Self> {
        let index_kind = int_kind(&indices, "indices")?;
        let Some(&done) = indptr.last() else {
            return Err(Error::InvalidArgument("indptr must hold at least one value".into()));
        };
        if minor > 0 && minor - 1 > index_kind.max_value() {
            return Err(Error::InvalidArgument(format!("{minor} columns do not fit the stored index type {}", index_kind.name())));
        }
        Ok(Self {
            data,
            indices,
            index_kind,
            minor,
            indptr,
            data_done: done,
            indices_done: done,
            pending_data: Vec::new(),
            pending_indices: Vec::new(),
            threads,
        })
    }

    /// Rows so far.
    #[must_use]
    pub fn rows(&self) -> u64 {
        self.indptr.len() as u64 - 1
    }

    /// Values so far.
    #[must_use]
    pub fn nnz(&self) -> u64 {
        self.indptr.last().copied().unwrap_or(0)
    }

    /// Append a block of rows: its index pointer (any start, not decreasing), and the indices and
    /// values it points into. The block is validated before anything is kept.
    ///
    /// # Errors
    /// Returns [`Error::InvalidArgument`] for a malformed block, or the first write error (the
    /// values written so far stay written; the caller's metadata decides what is visible).
    pub fn append(&mut self, store: &dyn Store, ptr_in: IntsIn<'_>, ind_in: IntsIn<'_>, values: &[u8]) -> Result<()> {
        let ptr = input_indptr(ptr_in)?;
        let (Some(&first), Some(&last)) = (ptr.first(), ptr.last()) else {
            return Err(Error::InvalidArgument("a block's indptr needs at least one value".into()));
        };
        let es = self.data.elem_size();
        let n_ind = (ind_in.1.len() / ind_in.0.size()) as u64;
        let n_val = (values.len() / es) as u64;
        if last > n_ind || last > n_val {
            return Err(Error::InvalidArgument(format!("the block's indptr ends at {last}, but it has {n_ind} indices and {n_val} values")));
        }
        #[allow(clippy::cast_possible_truncation)]
        let (a, b) = (first as usize, last as usize);
        let k = ind_in.0.size();
        let ind = stored_indices((ind_in.0, &ind_in.1[a * k..b * k]), self.index_kind, self.minor)?;
        self.pending_indices.extend_from_slice(&ind);
        self.pending_data.extend_from_slice(&values[a * es..b * es]);
        let base = self.nnz();
        self.indptr.extend(ptr[1..].iter().map(|&p| base + (p - first)));
        self.flush(store, false)
    }

    /// Write everything still pending; returns the index pointer of all rows.
    ///
    /// # Errors
    /// The first write error.
    pub fn finish(&mut self, store: &dyn Store) -> Result<&[u64]> {
        self.flush(store, true)?;
        Ok(&self.indptr)
    }

    fn flush(&mut self, store: &dyn Store, last: bool) -> Result<()> {
        let (data, indices) = (&mut self.data, &mut self.indices);
        let (pd, pi) = (&mut self.pending_data, &mut self.pending_indices);
        let (dd, di) = (&mut self.data_done, &mut self.indices_done);
        let ik = self.index_kind.size();
        run_in_pool(self.threads, || {
            let (a, b) = rayon::join(|| flush_one(store, data, pd, dd, last), || flush_one(store, indices, pi, di, last));
            a.and(b)
        })?;
        debug_assert_eq!(self.pending_indices.len() / ik, self.pending_data.len() / self.data.elem_size());
        Ok(())
    }
}

/// Write the whole shards of `pending` (all of it if `last`) at element `done` of `array`.
fn flush_one(store: &dyn Store, array: &mut Array1d, pending: &mut Vec<u8>, done: &mut u64, last: bool) -> Result<()> {
    let es = array.elem_size();
    let have = *done + (pending.len() / es) as u64;
    let s = array.chunk_len();
    let end = if last { have } else { have / s * s };
    if end <= *done {
        return Ok(());
    }
    array.set_len(end.max(array.len()));
    #[allow(clippy::cast_possible_truncation)]
    let n = ((end - *done) as usize) * es;
    array.write_range(store, *done, &pending[..n])?;
    pending.drain(..n);
    *done = end;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::csr::gather::{CsrSource, Major};
    use crate::engine::Concurrency;
    use crate::engine::codec::EngineOptions;
    use crate::store::FsStore;

    fn meta(len: u64, dt: &str, shard: u64, inner: u64) -> String {
        crate::csr::test_meta(len, dt, shard, inner)
    }

    fn bytes<T: Copy>(v: &[T]) -> Vec<u8> {
        // SAFETY: plain integers / floats.
        unsafe { std::slice::from_raw_parts(v.as_ptr().cast::<u8>(), std::mem::size_of_val(v)) }.to_vec()
    }

    #[test]
    fn stream_of_blocks_then_append() {
        let dir = std::env::temp_dir().join(format!("sz-stream-{}", std::process::id()));
        let store = FsStore::new(&dir, false);
        let o = EngineOptions::default;
        let c = Concurrency::default;
        // 300 rows, row r has (r % 5) values at columns 0, 3, 6, ...
        let rows: Vec<Vec<(i64, f64)>> = (0..300i64).map(|r| (0..r % 5).map(|k| (3 * k, (r * 10 + k) as f64)).collect()).collect();
        let open = |len: u64| {
            (
                Array1d::from_metadata_json(&meta(len, "float64", 32, 8), "X/data/", o(), c()).unwrap(),
                Array1d::from_metadata_json(&meta(len, "int32", 32, 8), "X/indices/", o(), c()).unwrap(),
            )
        };
        let block = |rs: &[Vec<(i64, f64)>]| {
            let mut ptr = vec![0i64];
            let (mut ind, mut val) = (Vec::new(), Vec::new());
            for r in rs {
                for &(j, v) in r {
                    ind.push(j);
                    val.push(v);
                }
                ptr.push(ind.len() as i64);
            }
            (ptr, ind, val)
        };
        let (d, i) = open(0);
        let mut w = CsrWriter::new(d, i, 20, vec![0], 2).unwrap();
        for part in rows[..200].chunks(37) {
            let (p, ind, val) = block(part);
            w.append(&store, (ElemType::I64, &bytes(&p)), (ElemType::I64, &bytes(&ind)), &bytes(&val)).unwrap();
        }
        let ptr = w.finish(&store).unwrap().to_vec();
        assert_eq!(ptr.len(), 201);
        // Append 100 more rows to the stored 200.
        let (d, i) = open(ptr[200]);
        let mut w = CsrWriter::new(d, i, 20, ptr, 2).unwrap();
        let (p, ind, val) = block(&rows[200..]);
        // A bad block is refused and changes nothing.
        let bad: Vec<i64> = ind.iter().map(|&j| j + 100).collect();
        assert!(w.append(&store, (ElemType::I64, &bytes(&p)), (ElemType::I64, &bytes(&bad)), &bytes(&val)).is_err());
        w.append(&store, (ElemType::I64, &bytes(&p)), (ElemType::I64, &bytes(&ind)), &bytes(&val)).unwrap();
        let ptr = w.finish(&store).unwrap().to_vec();
        let (d, i) = open(ptr[300]);
        let src = CsrSource::new(d, i, ptr, 20, 2).unwrap();
        let g = src.gather(&store, Major::Range { start: 0, stop: 300 }, false).unwrap();
        let (wp, wi, wv) = block(&rows);
        assert_eq!((0..301).map(|k| g.indptr.get(k)).collect::<Vec<_>>(), wp);
        assert_eq!((0..g.nnz).map(|k| g.indices.get(k)).collect::<Vec<_>>(), wi);
        assert_eq!(g.data, bytes(&wv));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn whole_matrix_validation() {
        let dir = std::env::temp_dir().join(format!("sz-whole-{}", std::process::id()));
        let store = FsStore::new(&dir, false);
        let o = EngineOptions::default;
        let c = Concurrency::default;
        let data = Array1d::from_metadata_json(&meta(3, "float32", 32, 8), "d/", o(), c()).unwrap();
        let indices = Array1d::from_metadata_json(&meta(3, "int32", 32, 8), "i/", o(), c()).unwrap();
        let indptr = Array1d::from_metadata_json(&meta(3, "int32", 32, 8), "p/", o(), c()).unwrap();
        let vals = bytes(&[1f32, 2., 3.]);
        let ind = bytes(&[0i32, 4, 1]);
        for (ptr, err) in
            [(vec![0i32, 2, 1], "decreases"), (vec![1i32, 2, 3], "start at 0"), (vec![0i32, 2, 2], "ends at 2"), (vec![-1i32, 2, 3], "negative")]
        {
            let e = write_matrix(&store, &data, &indices, &indptr, (ElemType::I32, &bytes(&ptr)), (ElemType::I32, &ind), &vals, 5, 2).unwrap_err();
            assert!(e.to_string().contains(err), "{e}");
        }
        let e =
            write_matrix(&store, &data, &indices, &indptr, (ElemType::I32, &bytes(&[0i32, 2, 3])), (ElemType::I32, &ind), &vals, 4, 2).unwrap_err();
        assert!(matches!(e, Error::InvalidArgument(_)) && e.to_string().contains("out of range"), "{e}");
        assert!(!dir.exists(), "nothing may be written for invalid input");
        write_matrix(&store, &data, &indices, &indptr, (ElemType::I32, &bytes(&[0i32, 2, 3])), (ElemType::I32, &ind), &vals, 5, 2).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
