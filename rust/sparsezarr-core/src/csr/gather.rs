//! Gathering rows (the major axis) of a compressed sparse matrix stored as `data`, `indices` and
//! `indptr` arrays, as anndata and binsparse store CSR and CSC matrices.
//!
//! The requested rows become element ranges of `data` and `indices` (from the cached `indptr`);
//! the ranges are grouped by chunk and inner chunk, every touched (inner) chunk is fetched and
//! decoded once, and its pieces are copied straight into the preallocated outputs. Both arrays
//! are read at the same time, each in parallel over its chunks.

use rayon::prelude::*;

use super::array1d::Array1d;
use super::ints::{check_range, convert_checked, indptr_values};
use crate::dtype::ElemType;
use crate::dtype::IndexVec;
use crate::error::{Error, Result};
use crate::runtime::{in_pool, run_in_pool};
use crate::store::Store;

/// Rows to gather.
#[derive(Debug, Clone, Copy)]
pub enum Major<'a> {
    /// Rows `start..stop`.
    Range {
        /// First row.
        start: u64,
        /// One past the last row.
        stop: u64,
    },
    /// Rows in this order (repeats allowed).
    List(&'a [u64]),
}

/// Gathered rows: a compressed sparse matrix with as many rows as were requested.
#[derive(Debug, Default)]
pub struct Gathered {
    /// Values, native byte order.
    pub data: Vec<u8>,
    /// Minor-axis index of every value.
    pub indices: IndexVec,
    /// Row offsets (`rows + 1` values).
    pub indptr: IndexVec,
    /// Number of values.
    pub nnz: usize,
}

/// A stored compressed sparse matrix, with its `indptr` in memory.
pub struct CsrSource {
    data: Array1d,
    indices: Array1d,
    index_kind: ElemType,
    indptr: Vec<u64>,
    minor: u64,
    threads: usize,
}

/// The integer type of an index array, from its metadata.
///
/// # Errors
/// Returns [`Error::InvalidMetadata`] if the array does not hold integers.
pub fn int_kind(a: &Array1d, what: &str) -> Result<ElemType> {
    ElemType::int_from_name(a.data_type()).ok_or_else(|| Error::InvalidMetadata(format!("{what} must hold integers, not {:?}", a.data_type())))
}

/// Read a whole `indptr` array, checking that it starts at 0 and never decreases.
///
/// # Errors
/// Returns [`Error::InvalidMetadata`] for a non-integer array, a decode error for stored values
/// that are not an index pointer.
pub fn read_indptr(indptr: &Array1d, store: &dyn Store, threads: usize) -> Result<Vec<u64>> {
    let kind = int_kind(indptr, "indptr")?;
    let mut buf = vec![0u8; usize::try_from(indptr.len()).unwrap_or(usize::MAX) * kind.size()];
    run_in_pool(threads, || indptr.read_runs(store, &[(0, indptr.len())], &mut buf))?;
    indptr_values("indptr", kind, &buf)
}

/// View a vector of plain integers as bytes.
fn as_bytes_mut<T: Copy>(v: &mut [T]) -> &mut [u8] {
    // SAFETY: `T` is a plain integer type (i32 or i64) without padding; every byte pattern is valid.
    unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr().cast::<u8>(), std::mem::size_of_val(v)) }
}

impl CsrSource {
    /// A stored matrix of `minor` columns (rows for CSC) with the given `data` and `indices`
    /// arrays and `indptr` values (see [`read_indptr`]).
    ///
    /// # Errors
    /// Returns [`Error::InvalidMetadata`] if `indices` does not hold integers, `indptr` is empty,
    /// or `indptr` points past the end of `data` or `indices`.
    pub fn new(data: Array1d, indices: Array1d, indptr: Vec<u64>, minor: u64, threads: usize) -> Result<Self> {
        let index_kind = int_kind(&indices, "indices")?;
        let Some(&nnz) = indptr.last() else {
            return Err(Error::InvalidMetadata("indptr is empty (it needs one value more than there are rows)".into()));
        };
        if nnz > data.len() || nnz > indices.len() {
            return Err(Error::InvalidMetadata(format!("indptr ends at {nnz}, but data has {} and indices {} elements", data.len(), indices.len())));
        }
        Ok(Self { data, indices, index_kind, indptr, minor, threads })
    }

    /// Number of rows (columns for CSC).
    #[must_use]
    pub fn major_len(&self) -> u64 {
        self.indptr.len() as u64 - 1
    }

    /// Number of columns (rows for CSC).
    #[must_use]
    pub fn minor_len(&self) -> u64 {
        self.minor
    }

    /// Number of stored values.
    #[must_use]
    pub fn nnz(&self) -> u64 {
        self.indptr.last().copied().unwrap_or(0)
    }

    /// The index pointer.
    #[must_use]
    pub fn indptr(&self) -> &[u64] {
        &self.indptr
    }

    /// The stored `data` array.
    #[must_use]
    pub fn data(&self) -> &Array1d {
        &self.data
    }

    /// The `indices` array.
    #[must_use]
    pub fn indices(&self) -> &Array1d {
        &self.indices
    }

    /// The integer type of the stored indices.
    #[must_use]
    pub fn index_kind(&self) -> ElemType {
        self.index_kind
    }

    /// Gather rows into a new compressed matrix. Indices and the index pointer are 32-bit when the
    /// result's size and the number of columns allow (as scipy prefers), 64-bit otherwise.
    ///
    /// `huge_pages` asks for transparent huge pages for outputs of 4 MiB and more (see
    /// [`hint_huge_pages`](crate::runtime::hint_huge_pages)), as numpy does for its arrays: one
    /// page fault per 2 MiB instead of per 4 KiB, 25-35% faster large reads; where the kernel
    /// compacts memory to find huge pages a read can occasionally take longer.
    ///
    /// # Errors
    /// Returns [`Error::Selection`] for a row out of range, a decode error (naming the key) for
    /// corrupt chunks or stored indices out of range.
    pub fn gather(&self, store: &dyn Store, major: Major<'_>, huge_pages: bool) -> Result<Gathered> {
        let n_major = self.major_len();
        // Element ranges and the output index pointer.
        let (runs, offsets): (Vec<(u64, u64)>, Vec<u64>) = match major {
            Major::Range { start, stop } => {
                if start > stop || stop > n_major {
                    return Err(Error::Selection(format!("rows {start}..{stop} out of range for {n_major} rows")));
                }
                #[allow(clippy::cast_possible_truncation)]
                let ip = &self.indptr[start as usize..=stop as usize];
                (vec![(ip[0], ip[ip.len() - 1] - ip[0])], ip.iter().map(|&v| v - ip[0]).collect())
            }
            Major::List(rows) => {
                let mut runs: Vec<(u64, u64)> = Vec::with_capacity(rows.len());
                let mut offsets = Vec::with_capacity(rows.len() + 1);
                let mut acc = 0u64;
                offsets.push(0);
                for &r in rows {
                    if r >= n_major {
                        return Err(Error::Selection(format!("row {r} out of range for {n_major} rows")));
                    }
                    #[allow(clippy::cast_possible_truncation)]
                    let (s, e) = (self.indptr[r as usize], self.indptr[r as usize + 1]);
                    match runs.last_mut() {
                        Some(last) if last.0 + last.1 == s => last.1 += e - s,
                        _ if e > s => runs.push((s, e - s)),
                        _ => {}
                    }
                    acc += e - s;
                    offsets.push(acc);
                }
                (runs, offsets)
            }
        };
        let total = offsets.last().copied().unwrap_or(0);
        let wide = total > i32::MAX as u64 || self.minor > i32::MAX as u64;
        let n = usize::try_from(total).map_err(|_| Error::InvalidArgument("result too large".into()))?;
        let es = self.data.elem_size();
        let hint = |ptr: *const u8, len: usize| {
            if huge_pages {
                crate::runtime::hint_huge_pages(ptr, len);
            }
        };
        let mut data = vec![0u8; n * es];
        hint(data.as_ptr(), data.len());
        let indices_key = self.indices.path();
        let read_indices = |out: &mut [u8], out_kind: ElemType| -> Result<()> {
            if self.index_kind == out_kind {
                self.indices.read_runs(store, &runs, out)?;
                check_range("stored indices", out_kind, out, self.minor)
            } else {
                let mut tmp = vec![0u8; n * self.index_kind.size()];
                self.indices.read_runs(store, &runs, &mut tmp)?;
                convert_checked("stored indices", self.index_kind, &tmp, out_kind, out, self.minor)
            }
            .map_err(|e| e.with_key(indices_key))
        };
        let indices = run_in_pool(self.threads, || {
            let (d, i) = rayon::join(
                || self.data.read_runs(store, &runs, &mut data),
                || -> Result<IndexVec> {
                    if wide {
                        let mut v = vec![0i64; n];
                        hint(v.as_ptr().cast(), std::mem::size_of_val(v.as_slice()));
                        read_indices(as_bytes_mut(&mut v), ElemType::I64)?;
                        Ok(IndexVec::I64(v))
                    } else {
                        let mut v = vec![0i32; n];
                        hint(v.as_ptr().cast(), std::mem::size_of_val(v.as_slice()));
                        read_indices(as_bytes_mut(&mut v), ElemType::I32)?;
                        Ok(IndexVec::I32(v))
                    }
                },
            );
            d?;
            i
        })?;
        #[allow(clippy::cast_possible_truncation, clippy::cast_possible_wrap)]
        let indptr = if wide {
            IndexVec::I64(offsets.iter().map(|&v| v as i64).collect())
        } else {
            IndexVec::I32(offsets.iter().map(|&v| v as i32).collect())
        };
        Ok(Gathered { data, indices, indptr, nnz: n })
    }
}

/// Values per block of [`CsrSource::gather_minor`]: the stored values of a block of rows are
/// decoded into reused buffers and filtered before the next block is read, so a column subset of
/// a large matrix never holds the whole matrix in memory.
const MINOR_BLOCK: u64 = 1 << 22;

/// A block reads only the `data` values it keeps (as element runs) when it keeps fewer than one
/// value in this many; otherwise it decodes the block's `data` whole and picks from it.
const SPARSE_PICK: usize = 32;

/// Integers as stored in an `indices` array, read from native-order bytes.
trait StoredInt {
    /// Bytes per value.
    const N: usize;
    /// The `i`-th value of `b`, or `None` if it is negative.
    fn at(b: &[u8], i: usize) -> Option<u64>;
}

macro_rules! stored_int {
    ($($t:ty),*) => {$(
        impl StoredInt for $t {
            const N: usize = std::mem::size_of::<$t>();
            #[inline]
            fn at(b: &[u8], i: usize) -> Option<u64> {
                let mut a = [0u8; std::mem::size_of::<$t>()];
                a.copy_from_slice(&b[i * Self::N..(i + 1) * Self::N]);
                #[allow(clippy::cast_lossless, clippy::useless_conversion)]
                u64::try_from(<$t>::from_ne_bytes(a)).ok()
            }
        }
    )*};
}
stored_int!(i8, i16, i32, i64, u8, u16, u32, u64);

/// What one piece of a block keeps: block-relative positions, new minor indices, kept per row.
#[derive(Default)]
struct KeptPiece {
    pos: Vec<usize>,
    ind: Vec<u32>,
    per_row: Vec<u64>,
}

/// Filter the rows `rows` (lengths, starting at block offset `offset`) of a block's indices.
fn keep_piece<T: StoredInt>(ind: &[u8], lens: &[u64], offset: usize, lut: &[u32], key: &str) -> Result<KeptPiece> {
    let mut out = KeptPiece { per_row: Vec::with_capacity(lens.len()), ..KeptPiece::default() };
    let mut k = offset;
    for &len in lens {
        let before = out.ind.len();
        #[allow(clippy::cast_possible_truncation)]
        for p in k..k + len as usize {
            let v = T::at(ind, p);
            let new = v.and_then(|j| usize::try_from(j).ok()).and_then(|j| lut.get(j).copied());
            match new {
                Some(u32::MAX) => {}
                Some(n) => {
                    out.pos.push(p);
                    out.ind.push(n);
                }
                None => {
                    let shown = v.map_or_else(|| "a negative value".to_string(), |j| format!("value {j}"));
                    return Err(Error::decode(key, format!("stored indices: {shown} is out of range 0..{}", lut.len())));
                }
            }
        }
        k += len as usize;
        out.per_row.push((out.ind.len() - before) as u64);
    }
    Ok(out)
}

impl CsrSource {
    /// Gather rows keeping only the minor positions `lut` maps (`lut[j]` = new index of column
    /// `j`, or -1 to drop it; one entry per column), renumbered; rows keep their order and their
    /// values' stored order. The same result as [`gather`](Self::gather) followed by
    /// [`filter_minor`], without holding the gathered rows: blocks of about four million stored
    /// values are decoded into reused buffers and filtered in turn, and a block that keeps few
    /// values decodes only the `data` chunks holding them.
    ///
    /// # Errors
    /// Returns [`Error::InvalidArgument`] for a `lut` of the wrong length or with new indices of
    /// 2^32 or more, [`Error::Selection`] for a row out of range, a decode error (naming the key)
    /// for corrupt chunks or stored indices out of range.
    pub fn gather_minor(&self, store: &dyn Store, major: Major<'_>, lut: &[i64]) -> Result<Gathered> {
        self.gather_minor_in_blocks(store, major, lut, MINOR_BLOCK)
    }

    /// [`gather_minor`](Self::gather_minor) with blocks of about `block` values.
    fn gather_minor_in_blocks(&self, store: &dyn Store, major: Major<'_>, lut: &[i64], block: u64) -> Result<Gathered> {
        if lut.len() as u64 != self.minor {
            return Err(Error::InvalidArgument(format!("the column map has {} entries for {} columns", lut.len(), self.minor)));
        }
        let lut32: Vec<u32> = lut
            .iter()
            .map(|&v| if v < 0 { Ok(u32::MAX) } else { u32::try_from(v).ok().filter(|&v| v < u32::MAX).ok_or(()) })
            .collect::<std::result::Result<_, ()>>()
            .map_err(|()| Error::InvalidArgument("new column indices must be below 2^32 - 1".into()))?;
        let new_minor = lut32.iter().filter(|&&v| v != u32::MAX).map(|&v| u64::from(v) + 1).max().unwrap_or(0);
        let n_major = self.major_len();
        #[allow(clippy::cast_possible_truncation)]
        let span = |r: u64| (self.indptr[r as usize], self.indptr[r as usize + 1] - self.indptr[r as usize]);
        let spans: Vec<(u64, u64)> = match major {
            Major::Range { start, stop } => {
                if start > stop || stop > n_major {
                    return Err(Error::Selection(format!("rows {start}..{stop} out of range for {n_major} rows")));
                }
                (start..stop).map(span).collect()
            }
            Major::List(rows) => rows
                .iter()
                .map(|&r| if r < n_major { Ok(span(r)) } else { Err(Error::Selection(format!("row {r} out of range for {n_major} rows"))) })
                .collect::<Result<_>>()?,
        };
        let es = self.data.elem_size();
        let isz = self.index_kind.size();
        let key = self.indices.path();
        let mut data: Vec<u8> = Vec::new();
        let mut ind: Vec<u32> = Vec::new();
        let mut per_row: Vec<u64> = Vec::with_capacity(spans.len());
        let (mut ind_buf, mut data_buf): (Vec<u8>, Vec<u8>) = (Vec::new(), Vec::new());
        let mut a = 0usize;
        run_in_pool(self.threads, || {
            while a < spans.len() {
                // The next block: rows a..b, about `block` values (at least one row).
                let mut b = a;
                let mut total = 0u64;
                while b < spans.len() && (b == a || total + spans[b].1 <= block) {
                    total += spans[b].1;
                    b += 1;
                }
                let rows = &spans[a..b];
                let mut runs: Vec<(u64, u64)> = Vec::new();
                for &(s, n) in rows {
                    match runs.last_mut() {
                        Some(last) if last.0 + last.1 == s => last.1 += n,
                        _ if n > 0 => runs.push((s, n)),
                        _ => {}
                    }
                }
                let n = usize::try_from(total).map_err(|_| Error::InvalidArgument("rows too large".into()))?;
                ind_buf.resize(n * isz, 0);
                self.indices.read_runs(store, &runs, &mut ind_buf)?;
                // Pieces of rows with about equal value counts, filtered in parallel.
                let want = (total / 64).max(1 << 14);
                let mut pieces: Vec<(usize, usize, usize)> = Vec::new(); // (first row, end row, block offset)
                let (mut r0, mut off, mut acc) = (0usize, 0usize, 0u64);
                for (i, &(_, len)) in rows.iter().enumerate() {
                    acc += len;
                    if acc >= want || i + 1 == rows.len() {
                        pieces.push((r0, i + 1, off));
                        #[allow(clippy::cast_possible_truncation)]
                        {
                            off += acc as usize;
                        }
                        r0 = i + 1;
                        acc = 0;
                    }
                }
                let lens: Vec<u64> = rows.iter().map(|r| r.1).collect();
                let filter = |&(r0, r1, off): &(usize, usize, usize)| -> Result<KeptPiece> {
                    let l = &lens[r0..r1];
                    match self.index_kind {
                        ElemType::I8 => keep_piece::<i8>(&ind_buf, l, off, &lut32, key),
                        ElemType::I16 => keep_piece::<i16>(&ind_buf, l, off, &lut32, key),
                        ElemType::I32 => keep_piece::<i32>(&ind_buf, l, off, &lut32, key),
                        ElemType::I64 => keep_piece::<i64>(&ind_buf, l, off, &lut32, key),
                        ElemType::U8 => keep_piece::<u8>(&ind_buf, l, off, &lut32, key),
                        ElemType::U16 => keep_piece::<u16>(&ind_buf, l, off, &lut32, key),
                        ElemType::U32 => keep_piece::<u32>(&ind_buf, l, off, &lut32, key),
                        ElemType::U64 => keep_piece::<u64>(&ind_buf, l, off, &lut32, key),
                        other => Err(Error::InvalidMetadata(format!("indices must hold integers, not {}", other.name()))),
                    }
                };
                let kept: Vec<KeptPiece> = pieces.par_iter().map(filter).collect::<Result<_>>()?;
                let n_kept: usize = kept.iter().map(|k| k.ind.len()).sum();
                let base = data.len();
                data.resize(base + n_kept * es, 0);
                let tail = &mut data[base..];
                if n_kept == 0 {
                    // Nothing of this block is kept: its `data` is not read at all.
                } else if n_kept * SPARSE_PICK < n {
                    // Few values kept: read just those (runs of neighbours merged).
                    let mut kr: Vec<(u64, u64)> = Vec::new();
                    let mut row = 0usize;
                    let mut row_off = 0usize; // block offset of `row`
                    for k in &kept {
                        for &p in &k.pos {
                            #[allow(clippy::cast_possible_truncation)]
                            while p >= row_off + rows[row].1 as usize {
                                row_off += rows[row].1 as usize;
                                row += 1;
                            }
                            let at = rows[row].0 + (p - row_off) as u64;
                            match kr.last_mut() {
                                Some(last) if last.0 + last.1 == at => last.1 += 1,
                                _ => kr.push((at, 1)),
                            }
                        }
                    }
                    self.data.read_runs(store, &kr, tail)?;
                } else {
                    data_buf.resize(n * es, 0);
                    self.data.read_runs(store, &runs, &mut data_buf)?;
                    let mut parts: Vec<(&KeptPiece, &mut [u8])> = Vec::with_capacity(kept.len());
                    let mut rest = tail;
                    for k in &kept {
                        let (head, r) = rest.split_at_mut(k.pos.len() * es);
                        parts.push((k, head));
                        rest = r;
                    }
                    let src = &data_buf;
                    parts.into_par_iter().for_each(|(k, out)| {
                        for (o, &p) in out.chunks_exact_mut(es).zip(&k.pos) {
                            o.copy_from_slice(&src[p * es..(p + 1) * es]);
                        }
                    });
                }
                for k in kept {
                    ind.extend_from_slice(&k.ind);
                    per_row.extend_from_slice(&k.per_row);
                }
                a = b;
            }
            Ok(())
        })?;
        let nnz = ind.len();
        let wide = nnz as u64 > i32::MAX as u64 || new_minor > i32::MAX as u64;
        let mut acc = 0u64;
        let offsets: Vec<u64> = std::iter::once(0)
            .chain(per_row.iter().map(|&c| {
                acc += c;
                acc
            }))
            .collect();
        #[allow(clippy::cast_possible_wrap, clippy::cast_possible_truncation)]
        let (indices, indptr) = if wide {
            (IndexVec::I64(ind.into_iter().map(i64::from).collect()), IndexVec::I64(offsets.iter().map(|&v| v as i64).collect()))
        } else {
            (IndexVec::I32(ind.into_iter().map(|v| v as i32).collect()), IndexVec::I32(offsets.iter().map(|&v| v as i32).collect()))
        };
        Ok(Gathered { data, indices, indptr, nnz })
    }
}

/// Keep only the minor-axis positions `lut` maps (`lut[j]` = new index of column `j`, or -1 to
/// drop it), renumbering them; rows keep their order and their values' stored order.
///
/// # Errors
/// Returns [`Error::InvalidArgument`] if an index is outside `lut`.
pub fn filter_minor(g: &Gathered, lut: &[i64], es: usize) -> Result<Gathered> {
    match (&g.indices, &g.indptr) {
        (IndexVec::I32(ind), IndexVec::I32(ptr)) => {
            let (data, ind, ptr, nnz) = filter_typed(&g.data, ind, ptr, lut, es)?;
            Ok(Gathered { data, indices: IndexVec::I32(ind), indptr: IndexVec::I32(ptr), nnz })
        }
        (IndexVec::I64(ind), IndexVec::I64(ptr)) => {
            let (data, ind, ptr, nnz) = filter_typed(&g.data, ind, ptr, lut, es)?;
            Ok(Gathered { data, indices: IndexVec::I64(ind), indptr: IndexVec::I64(ptr), nnz })
        }
        _ => Err(Error::Internal("indices and indptr of different widths".into())),
    }
}

/// Rows per parallel piece of [`filter_minor`].
const ROWS_PER_PIECE: usize = 4096;

type Filtered<T> = (Vec<u8>, Vec<T>, Vec<T>, usize);

#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
fn filter_typed<T>(data: &[u8], ind: &[T], ptr: &[T], lut: &[i64], es: usize) -> Result<Filtered<T>>
where
    T: Copy + Send + Sync + Default + TryFrom<i64> + Into<i64>,
{
    let rows = ptr.len().saturating_sub(1);
    let pieces: Vec<(usize, usize)> = (0..rows).step_by(ROWS_PER_PIECE).map(|a| (a, (a + ROWS_PER_PIECE).min(rows))).collect();
    let keep = |k: usize| -> Result<Option<i64>> {
        let j: i64 = ind[k].into();
        match lut.get(j as usize) {
            Some(&v) if v >= 0 => Ok(Some(v)),
            Some(_) => Ok(None),
            None => Err(Error::InvalidArgument(format!("index {j} outside the {} columns", lut.len()))),
        }
    };
    // Pass 1: kept values per row.
    let count_piece = |&(a, b): &(usize, usize)| -> Result<Vec<usize>> {
        (a..b)
            .map(|r| {
                let (s, e) = (ptr[r].into() as usize, ptr[r + 1].into() as usize);
                let mut c = 0;
                for k in s..e {
                    c += usize::from(keep(k)?.is_some());
                }
                Ok(c)
            })
            .collect()
    };
    let counts: Vec<Vec<usize>> =
        if in_pool() { pieces.par_iter().map(count_piece).collect::<Result<_>>()? } else { pieces.iter().map(count_piece).collect::<Result<_>>()? };
    let mut new_ptr: Vec<T> = Vec::with_capacity(rows + 1);
    let mut acc = 0usize;
    new_ptr.push(T::default());
    for c in &counts {
        for &n in c {
            acc += n;
            new_ptr.push(T::try_from(acc as i64).map_err(|_| Error::Internal("index overflow".into()))?);
        }
    }
    let nnz = acc;
    // Pass 2: copy the kept values into disjoint slices of the outputs.
    let mut new_data = vec![0u8; nnz * es];
    let mut new_ind = vec![T::default(); nnz];
    {
        let mut data_parts: Vec<&mut [u8]> = Vec::with_capacity(pieces.len());
        let mut ind_parts: Vec<&mut [T]> = Vec::with_capacity(pieces.len());
        let (mut dr, mut ir): (&mut [u8], &mut [T]) = (&mut new_data, &mut new_ind);
        for c in &counts {
            let n: usize = c.iter().sum();
            let (d0, d1) = dr.split_at_mut(n * es);
            let (i0, i1) = ir.split_at_mut(n);
            data_parts.push(d0);
            ind_parts.push(i0);
            dr = d1;
            ir = i1;
        }
        type Piece<'a, T> = (((usize, usize), &'a mut [u8]), &'a mut [T]);
        let place = |(((a, b), dd), ii): Piece<'_, T>| -> Result<()> {
            let mut o = 0usize;
            for k in ptr[a].into() as usize..ptr[b].into() as usize {
                if let Some(v) = keep(k)? {
                    ii[o] = T::try_from(v).map_err(|_| Error::Internal("index overflow".into()))?;
                    dd[o * es..(o + 1) * es].copy_from_slice(&data[k * es..(k + 1) * es]);
                    o += 1;
                }
            }
            Ok(())
        };
        let items: Vec<_> = pieces.iter().copied().zip(data_parts).zip(ind_parts).collect();
        if in_pool() {
            items.into_par_iter().try_for_each(place)?;
        } else {
            items.into_iter().try_for_each(place)?;
        }
    }
    Ok((new_data, new_ind, new_ptr, nnz))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Concurrency;
    use crate::engine::codec::EngineOptions;
    use crate::store::FsStore;

    fn meta(len: u64, dt: &str, shard: u64, inner: u64) -> String {
        crate::csr::test_meta(len, dt, shard, inner)
    }

    /// A 50 x 40 matrix with row `r` holding columns `r % 7, r % 7 + 5, ...`.
    #[allow(clippy::type_complexity)]
    fn matrix() -> (Vec<u64>, Vec<u16>, Vec<f32>) {
        let mut indptr = vec![0u64];
        let (mut ind, mut val) = (Vec::new(), Vec::new());
        for r in 0..50u64 {
            let mut c = r % 7;
            while c < 40 && r % 9 != 4 {
                ind.push(c as u16);
                val.push((r * 100 + c) as f32);
                c += 5;
            }
            indptr.push(ind.len() as u64);
        }
        (indptr, ind, val)
    }

    #[test]
    fn gather_rows_in_any_order_with_repeats() {
        let dir = std::env::temp_dir().join(format!("sz-gather-{}", std::process::id()));
        let store = FsStore::new(&dir, false);
        let (indptr, ind, val) = matrix();
        let nnz = ind.len() as u64;
        let o = EngineOptions::default;
        let c = Concurrency::default;
        let data = Array1d::from_metadata_json(&meta(nnz, "float32", 64, 8), "X/data/", o(), c()).unwrap();
        let indices = Array1d::from_metadata_json(&meta(nnz, "uint16", 64, 8), "X/indices/", o(), c()).unwrap();
        data.write_range(&store, 0, &val.iter().flat_map(|v| v.to_ne_bytes()).collect::<Vec<u8>>()).unwrap();
        indices.write_range(&store, 0, &ind.iter().flat_map(|v| v.to_ne_bytes()).collect::<Vec<u8>>()).unwrap();
        let src = CsrSource::new(data, indices, indptr.clone(), 40, 2).unwrap();
        let rows = [7u64, 3, 3, 49, 4, 0, 13, 12];
        let g = src.gather(&store, Major::List(&rows), false).unwrap();
        let mut want_ptr = vec![0i64];
        let (mut want_ind, mut want_val) = (Vec::new(), Vec::new());
        for &r in &rows {
            let (s, e) = (indptr[r as usize] as usize, indptr[r as usize + 1] as usize);
            want_ind.extend(ind[s..e].iter().map(|&v| i64::from(v)));
            want_val.extend_from_slice(&val[s..e]);
            want_ptr.push(want_ind.len() as i64);
        }
        let got_val: Vec<f32> = g.data.chunks_exact(4).map(|c| f32::from_ne_bytes(c.try_into().unwrap())).collect();
        assert_eq!(got_val, want_val);
        assert_eq!((0..g.nnz).map(|i| g.indices.get(i)).collect::<Vec<_>>(), want_ind);
        assert_eq!((0..rows.len() + 1).map(|i| g.indptr.get(i)).collect::<Vec<_>>(), want_ptr);
        // A range, and a column filter keeping columns 5..10 renumbered from 0.
        let g = src.gather(&store, Major::Range { start: 10, stop: 20 }, true).unwrap();
        assert_eq!(g.nnz as u64, indptr[20] - indptr[10]);
        let lut: Vec<i64> = (0..40).map(|j| if (5..10).contains(&j) { j - 5 } else { -1 }).collect();
        let f = filter_minor(&g, &lut, 4).unwrap();
        for r in 0..10 {
            let (s, e) = (f.indptr.get(r) as usize, f.indptr.get(r + 1) as usize);
            let want: Vec<i64> = (indptr[10 + r] as usize..indptr[11 + r] as usize)
                .map(|k| i64::from(ind[k]))
                .filter(|j| (5..10).contains(j))
                .map(|j| j - 5)
                .collect();
            assert_eq!((s..e).map(|k| f.indices.get(k)).collect::<Vec<_>>(), want);
        }
        assert!(src.gather(&store, Major::List(&[50]), false).is_err());
        // gather_minor gives what gather + filter_minor give: for ranges and lists with repeats,
        // keeping many columns (whole data blocks decoded) or one (only the kept values read).
        let one: Vec<i64> = (0..40).map(|j| if j == 12 { 0 } else { -1 }).collect();
        let shuffled: Vec<i64> = (0..40).map(|j| if j % 3 == 0 { 39 - j } else { -1 }).collect();
        for lut in [&lut, &one, &shuffled] {
            for major in [Major::Range { start: 0, stop: 50 }, Major::Range { start: 10, stop: 20 }, Major::List(&rows), Major::List(&[])] {
                let want = filter_minor(&src.gather(&store, major, false).unwrap(), lut, 4).unwrap();
                // One block, and blocks of a few values (rows cut across chunks, several blocks).
                for block in [MINOR_BLOCK, 1, 5, 17] {
                    let got = src.gather_minor_in_blocks(&store, major, lut, block).unwrap();
                    assert_eq!(got.nnz, want.nnz);
                    assert_eq!(got.data, want.data);
                    let ind = |g: &Gathered| (0..g.nnz).map(|i| g.indices.get(i)).collect::<Vec<_>>();
                    let ptr = |g: &Gathered| (0..g.indptr.len()).map(|i| g.indptr.get(i)).collect::<Vec<_>>();
                    assert_eq!(ind(&got), ind(&want));
                    assert_eq!(ptr(&got), ptr(&want));
                }
            }
        }
        assert!(src.gather_minor(&store, Major::List(&[50]), &lut).is_err());
        assert!(src.gather_minor(&store, Major::Range { start: 0, stop: 5 }, &lut[..39]).unwrap_err().to_string().contains("40 columns"));
        // Stored indices out of range are reported, not returned.
        let (indptr2, _, _) = matrix();
        let data2 = Array1d::from_metadata_json(&meta(nnz, "float32", 64, 8), "X/data/", o(), c()).unwrap();
        let indices2 = Array1d::from_metadata_json(&meta(nnz, "uint16", 64, 8), "X/indices/", o(), c()).unwrap();
        let narrow = CsrSource::new(data2, indices2, indptr2, 30, 2).unwrap();
        assert!(narrow.gather(&store, Major::Range { start: 0, stop: 50 }, false).unwrap_err().to_string().contains("out of range"));
        let lut30: Vec<i64> = (0..30).collect();
        let err = narrow.gather_minor(&store, Major::Range { start: 0, stop: 50 }, &lut30).unwrap_err();
        assert!(err.to_string().contains("out of range") && err.to_string().contains("X/indices"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
