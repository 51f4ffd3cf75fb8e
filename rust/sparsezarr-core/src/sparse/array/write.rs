//! Writing boxes: validating input, building canonical chunks, merging with what is stored.

use std::collections::HashMap;

use rayon::prelude::*;

use super::*;

impl SparseArray {
    // --------------------------------------------------------------------------------------------
    // Writing
    // --------------------------------------------------------------------------------------------

    /// Replace the content of the box `start..start+shape` with `input` (coordinates relative to
    /// `start`). Entries equal to the fill value are not stored; chunks left empty are deleted.
    ///
    /// Chunks the box covers only partly are read and decoded first, and every stored value is
    /// encoded (which validates the input chunk by chunk) before any is stored: invalid input or a
    /// corrupt existing chunk changes nothing. The encoded values of one call are held in memory
    /// together until they are stored.
    ///
    /// # Errors
    /// Returns [`Error::InvalidArgument`] for input outside the box, mismatched lengths or (with
    /// [`Duplicates::Error`]) repeated coordinates; [`Error::ReadOnly`]; decode and store errors.
    pub fn write(&self, store: &dyn Store, start: &[u64], shape: &[u64], input: &SparseInput<'_>, duplicates: Duplicates) -> Result<()> {
        let keys = if store.capabilities().cheap_ranges || store.read_only() { Vec::new() } else { self.keys_for_write(start, shape)? };
        let prefetched = Prefetched::if_needed(store, keys.iter().map(String::as_str))?;
        let origin = store;
        let store: &dyn Store = prefetched.as_ref().map_or(store, |p| p as &dyn Store);
        if store.read_only() {
            return Err(Error::ReadOnly(self.keys.key(&vec![0; self.ndim()])));
        }
        let ndim = self.ndim();
        if start.len() != ndim || shape.len() != ndim {
            return Err(Error::Selection(format!("the written box has {} dimensions, the array {ndim}", start.len())));
        }
        for d in 0..ndim {
            if start[d].checked_add(shape[d]).is_none_or(|e| e > self.shape[d]) {
                return Err(Error::Selection(format!(
                    "box {}..{} exceeds dimension {d} of length {}",
                    start[d],
                    start[d].saturating_add(shape[d]),
                    self.shape[d]
                )));
            }
        }
        if shape.contains(&0) {
            return Ok(());
        }
        let entries = Entries::new(input, shape, self.elem().size())?;
        run_in_pool(self.concurrency.threads, || self.write_in_pool(origin, store, start, shape, &entries, duplicates))
    }

    pub(super) fn write_in_pool(
        &self,
        origin_store: &dyn Store,
        store: &dyn Store,
        start: &[u64],
        shape: &[u64],
        entries: &Entries<'_>,
        duplicates: Duplicates,
    ) -> Result<()> {
        let ndim = self.ndim();
        // Sparse chunks (global inner grid) touched by the box.
        let first: Vec<u64> = start.iter().zip(&self.inner).map(|(&s, &c)| s / c).collect();
        let last: Vec<u64> = start.iter().zip(shape).zip(&self.inner).map(|((&s, &n), &c)| (s + n - 1) / c).collect();
        let rgrid: Vec<u64> = first.iter().zip(&last).map(|(&f, &l)| l - f + 1).collect();
        let nbuckets = usize::try_from(rgrid.iter().product::<u64>()).map_err(|_| Error::InvalidArgument("box spans too many chunks".into()))?;
        // 1. Where each chunk's new entries come from: row ranges of sorted CSR input directly, or
        //    a stable counting sort of the entries by chunk. Chunks are built when encoded.
        let source = match entries.sorted_csr() {
            Some(csr) => Source::Csr(csr),
            None => Source::Buckets(entries.bucket(start, &self.inner, &first, &rgrid, nbuckets)?),
        };
        let bands = match &source {
            Source::Csr(_) => Some(CsrBands::new(start, shape, &self.inner, &first, &rgrid)),
            Source::Buckets(_) => None,
        };
        let fresh = |b: usize| -> Result<SparseChunk> {
            let rc = c_coords(b as u64, &rgrid);
            let origin: Vec<u64> = rc.iter().zip(&first).zip(&self.inner).map(|((&r, &f), &c)| (r + f) * c).collect();
            match &source {
                Source::Csr(csr) => {
                    #[allow(clippy::cast_possible_truncation)]
                    let at = bands.as_ref().map(|bands| (bands, rc[0] as usize, rc[1] as usize));
                    Ok(self.csr_chunk(entries, csr, start, shape, &origin, at))
                }
                Source::Buckets(buckets) => {
                    self.canonical(entries, &buckets.perm[buckets.offsets[b]..buckets.offsets[b + 1]], start, &origin, duplicates)
                }
            }
        };
        // 3. Group chunks by stored value.
        let group = |rc: &[u64]| -> Vec<u64> {
            match &self.layout {
                None => rc.iter().zip(&first).map(|(&r, &f)| r + f).collect(),
                Some(l) => rc.iter().zip(&first).zip(l.grid()).map(|((&r, &f), &g)| (r + f) / g).collect(),
            }
        };
        let mut outers: HashMap<Vec<u64>, Vec<usize>> = HashMap::new();
        for b in 0..nbuckets {
            outers.entry(group(&c_coords(b as u64, &rgrid))).or_default().push(b);
        }
        let mut outers: Vec<(Vec<u64>, Vec<usize>)> = outers.into_iter().collect();
        outers.sort();
        let box_covers = |origin: &[u64], extent: &[u64]| {
            (0..ndim).all(|d| start[d] <= origin[d] && origin[d] + extent[d].min(self.shape[d] - origin[d]) <= start[d] + shape[d])
        };
        // 4. Read and decode everything the box covers only partly (nothing stored yet). Where the
        //    store enforces conditions, the version read is kept: the write back only succeeds if
        //    no other writer replaced (or created) the value in between.
        let conditional = origin_store.capabilities().conditional_writes;
        let prepare = |og: &[u64], members: &[usize], from: &dyn Store, first_range: ByteRange| -> Result<Prepared> {
            let key = self.keys.key(og);
            let oorigin: Vec<u64> = og.iter().zip(&self.outer).map(|(&g, &c)| g * c).collect();
            if box_covers(&oorigin, &self.outer) {
                return Ok(Prepared { key, old: None, kept: HashMap::new(), mode: WriteMode::Overwrite });
            }
            let Some(value) = from.open(&key, first_range)? else {
                let mode = if conditional { WriteMode::CreateOnly } else { WriteMode::Overwrite };
                return Ok(Prepared { key, old: None, kept: HashMap::new(), mode });
            };
            let mode = match (conditional, value.version()) {
                (true, Some(v)) => WriteMode::IfVersion(v.clone()),
                _ => WriteMode::Overwrite,
            };
            let bytes = value.read_all()?.into_owned();
            let mut kept = HashMap::new();
            let old_index = match &self.layout {
                Some(l) => Some(l.index_from_bytes(&key, &bytes)?),
                None => None,
            };
            for &b in members {
                let rc = c_coords(b as u64, &rgrid);
                let gc: Vec<u64> = rc.iter().zip(&first).map(|(&r, &f)| r + f).collect();
                let origin: Vec<u64> = gc.iter().zip(&self.inner).map(|(&g, &c)| g * c).collect();
                if box_covers(&origin, &self.inner) {
                    continue;
                }
                let chunk_bytes: Option<&[u8]> = match (&self.layout, &old_index) {
                    (Some(l), Some(idx)) => {
                        let local: Vec<u64> = gc.iter().zip(l.grid()).map(|(&g, &n)| g % n).collect();
                        #[allow(clippy::cast_possible_truncation)]
                        ShardLayout::entry(idx, l.linear(&local)).map(|(o, n)| &bytes[o as usize..(o + n) as usize])
                    }
                    _ => Some(&bytes[..]),
                };
                if let Some(cb) = chunk_bytes {
                    let old = self.codec.decode(cb).map_err(|e| e.with_key(&key))?;
                    kept.insert(b, self.outside(&old, &origin, start, shape));
                }
            }
            Ok(Prepared { key, old: Some((bytes, old_index)), kept, mode })
        };
        let prepared: Vec<Prepared> = try_map(&outers, |(og, members)| prepare(og, members, store, self.first_read()))?;
        // 5. Encode every stored value before storing any: building a chunk is also where invalid
        // input is found (repeated coordinates with `Duplicates::Error`), and an error must leave
        // the store unchanged, whichever stored value the parallel workers reach first.
        let fresh = &fresh;
        let encode = |members: &[usize], prep: Prepared| -> Result<ToStore> {
            let encode_chunk = |b: usize| -> Result<Option<Vec<u8>>> {
                let new = fresh(b)?;
                let merged = match prep.kept.get(&b) {
                    Some(kept) => self.merge(kept, &new),
                    None => new,
                };
                if merged.nnz == 0 { Ok(None) } else { self.codec.encode(&merged).map(Some) }
            };
            let new: Option<Encoded> = match &self.layout {
                None => encode_chunk(members[0])?.map(Encoded::single),
                Some(l) => {
                    let changes: Vec<(usize, Option<Vec<u8>>)> = try_map(members, |&b| {
                        let rc = c_coords(b as u64, &rgrid);
                        let local: Vec<u64> = rc.iter().zip(&first).zip(l.grid()).map(|((&r, &f), &g)| (r + f) % g).collect();
                        Ok((l.linear(&local), encode_chunk(b)?))
                    })?;
                    let old = prep.old.as_ref().and_then(|(bytes, idx)| idx.as_deref().map(|i| (bytes.as_slice(), i)));
                    l.rebuild(old, changes)?
                }
            };
            Ok((prep.key, new, prep.mode))
        };
        let items: Vec<_> = outers.iter().zip(prepared).collect();
        let encoded: Vec<(usize, ToStore)> =
            try_map_owned(items.into_iter().enumerate().collect(), |(i, ((_, members), prep))| Ok((i, encode(members, prep)?)))?;
        // 6. Store them. A conditional write that finds the value replaced by another writer
        //    starts that value over (read whole, merged, encoded again), with a growing pause.
        let store_value = |key: &str, new: Option<Encoded>, mode: WriteMode| -> Result<()> {
            match (new, mode) {
                (Some(enc), mode) => origin_store.put(key, enc, mode).map(drop),
                (None, WriteMode::Overwrite) => origin_store.delete(key),
                (None, mode) => {
                    let current = origin_store.open(key, ByteRange::All)?;
                    match (current.as_ref().and_then(|v| v.version().cloned()), &mode) {
                        (Some(now), WriteMode::IfVersion(read)) if now == *read => origin_store.delete(key),
                        (None, WriteMode::CreateOnly) => Ok(()),
                        _ => Err(Error::Conflict { key: key.to_string(), message: "replaced by another writer".into() }),
                    }
                }
            }
        };
        try_for_each_owned(encoded, |(i, (key, new, mode))| {
            let mut result = store_value(&key, new, mode);
            for attempt in 0..MAX_WRITE_ATTEMPTS {
                match result {
                    Err(Error::Conflict { .. }) if attempt + 1 < MAX_WRITE_ATTEMPTS => {
                        std::thread::sleep(std::time::Duration::from_millis(1 << attempt.min(6)));
                        let (og, members) = &outers[i];
                        result = prepare(og, members, origin_store, ByteRange::All)
                            .and_then(|prep| encode(members, prep))
                            .and_then(|(key, new, mode)| store_value(&key, new, mode));
                    }
                    other => return other,
                }
            }
            Err(Error::Conflict { key, message: format!("still contended after {MAX_WRITE_ATTEMPTS} attempts") })
        })
    }

    /// The canonical chunk at `origin` from sorted CSR input (rows `start[0]..`, columns relative
    /// to `start[1]`): per row, the entries whose columns fall in the chunk are one contiguous
    /// range, found by binary search, already in C order.
    ///
    /// With `bands` (the box's [`CsrBands`], and the chunk's row band and column band in the
    /// box's chunk grid), the ranges come from the row band's table, built once for all of its
    /// chunks by one pass over its entries; without, from two binary searches per row.
    pub(super) fn csr_chunk(
        &self,
        entries: &Entries<'_>,
        csr: &SortedCsr<'_>,
        start: &[u64],
        shape: &[u64],
        origin: &[u64],
        bands: Option<(&CsrBands, usize, usize)>,
    ) -> SparseChunk {
        let es = self.elem().size();
        // Box-relative rows and columns covered by the chunk.
        let r0 = origin[0].max(start[0]) - start[0];
        let r1 = (origin[0] + self.inner[0]).min(start[0] + shape[0]) - start[0];
        let c0 = origin[1].max(start[1]) - start[1];
        let c1 = (origin[1] + self.inner[1]).min(start[1] + shape[1]) - start[1];
        // Per row, the range of entries in the chunk's columns.
        let ranges: Vec<(u64, usize, usize)> = if let Some((bands, rb, cb)) = bands {
            let table = bands.table(rb, r0, r1, csr);
            let w = bands.cols.len();
            let found = (r0..r1)
                .zip(table.chunks_exact(w))
                .filter_map(|(r, row)| {
                    let (lo, hi) = (row[cb], row[cb + 1]);
                    (hi > lo).then_some((r, lo, hi))
                })
                .collect();
            bands.done(rb);
            found
        } else {
            (r0..r1)
                .filter_map(|r| {
                    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                    let (a, b) = (csr.indptr.get(r as usize) as usize, csr.indptr.get(r as usize + 1) as usize);
                    if a == b {
                        return None;
                    }
                    #[allow(clippy::cast_sign_loss)]
                    let lo = a + partition_point(b - a, |k| (csr.indices.get(a + k) as u64) < c0);
                    #[allow(clippy::cast_sign_loss)]
                    let hi = lo + partition_point(b - lo, |k| (csr.indices.get(lo + k) as u64) < c1);
                    (hi > lo).then_some((r, lo, hi))
                })
                .collect()
        };
        let nnz: usize = ranges.iter().map(|&(_, lo, hi)| hi - lo).sum();
        let mut coords: Vec<u64> = Vec::with_capacity(2 * nnz);
        let mut values: Vec<u8> = Vec::with_capacity(nnz * es);
        for &(r, lo, hi) in &ranges {
            coords.extend(std::iter::repeat_n(start[0] + r - origin[0], hi - lo));
        }
        let shift = start[1] - origin[1];
        for &(_, lo, hi) in &ranges {
            match csr.indices {
                #[allow(clippy::cast_sign_loss)]
                Indices::I32(v) => coords.extend(v[lo..hi].iter().map(|&c| c as u64 + shift)),
                #[allow(clippy::cast_sign_loss)]
                Indices::I64(v) => coords.extend(v[lo..hi].iter().map(|&c| c as u64 + shift)),
            }
            values.extend_from_slice(&entries.values[lo * es..hi * es]);
        }
        let chunk = SparseChunk { nnz, coords, values };
        self.drop_fill(chunk)
    }

    /// Remove entries equal to the fill value (a scan that copies nothing when there are none).
    pub(super) fn drop_fill(&self, chunk: SparseChunk) -> SparseChunk {
        let es = self.elem().size();
        let elem = self.elem();
        let fill = self.codec.fill();
        if !chunk.values.chunks_exact(es).any(|v| elem.equals(v, fill)) {
            return chunk;
        }
        let keep: Vec<usize> = (0..chunk.nnz).filter(|&k| !elem.equals(&chunk.values[k * es..(k + 1) * es], fill)).collect();
        take(&chunk, &keep, self.ndim(), es)
    }

    /// Entries of `chunk` (at `origin`) outside the box.
    pub(super) fn outside(&self, chunk: &SparseChunk, origin: &[u64], start: &[u64], shape: &[u64]) -> SparseChunk {
        let ndim = self.ndim();
        let es = self.elem().size();
        let keep: Vec<usize> = (0..chunk.nnz)
            .filter(|&k| {
                (0..ndim).any(|d| {
                    let g = origin[d] + chunk.coord(d, k);
                    g < start[d] || g >= start[d] + shape[d]
                })
            })
            .collect();
        take(chunk, &keep, ndim, es)
    }

    /// Merge two canonical chunks with disjoint coordinates.
    pub(super) fn merge(&self, a: &SparseChunk, b: &SparseChunk) -> SparseChunk {
        if a.nnz == 0 {
            return b.clone();
        }
        if b.nnz == 0 {
            return a.clone();
        }
        let ndim = self.ndim();
        let es = self.elem().size();
        let key = |c: &SparseChunk, k: usize| self.codec.linear((0..ndim).map(|d| c.coord(d, k)));
        let nnz = a.nnz + b.nnz;
        let mut out = SparseChunk { nnz, coords: vec![0; nnz * ndim], values: Vec::with_capacity(nnz * es) };
        let (mut i, mut j) = (0, 0);
        for k in 0..nnz {
            let from_a = j >= b.nnz || (i < a.nnz && key(a, i) < key(b, j));
            let (src, s) = if from_a {
                i += 1;
                (a, i - 1)
            } else {
                j += 1;
                (b, j - 1)
            };
            for d in 0..ndim {
                out.coords[d * nnz + k] = src.coord(d, s);
            }
            out.values.extend_from_slice(&src.values[s * es..(s + 1) * es]);
        }
        out
    }

    /// Canonical chunk from the input entries `perm` (global coordinates `start + c`) of the chunk
    /// at `origin`.
    pub(super) fn canonical(
        &self,
        entries: &Entries<'_>,
        perm: &[usize],
        start: &[u64],
        origin: &[u64],
        duplicates: Duplicates,
    ) -> Result<SparseChunk> {
        let ndim = self.ndim();
        let es = self.elem().size();
        let fill = self.codec.fill();
        let elem = self.elem();
        let mut keyed: Vec<(u64, usize)> = perm
            .iter()
            .map(|&k| {
                let lin = self.codec.linear((0..ndim).map(|d| start[d] + entries.coord(d, k) - origin[d]));
                (lin, k)
            })
            .collect();
        if keyed.windows(2).any(|w| w[1].0 < w[0].0) {
            keyed.sort_by_key(|e| e.0); // stable: duplicates keep input order
        }
        let mut lin_out: Vec<u64> = Vec::with_capacity(keyed.len());
        let mut values: Vec<u8> = Vec::with_capacity(keyed.len() * es);
        for (lin, k) in keyed {
            let v = entries.value(k, es);
            if lin_out.last() == Some(&lin) {
                if duplicates == Duplicates::Error {
                    let coords: Vec<i64> = (0..ndim).map(|d| entries.coord_signed(d, k)).collect();
                    return Err(Error::InvalidArgument(format!("duplicate coordinates {coords:?} in the written entries")));
                }
                let n = values.len();
                elem.add_assign(&mut values[n - es..], v);
            } else {
                lin_out.push(lin);
                values.extend_from_slice(v);
            }
        }
        // Drop entries equal to the fill value (after summing duplicates).
        let keep: Vec<usize> = (0..lin_out.len()).filter(|&i| !elem.equals(&values[i * es..(i + 1) * es], fill)).collect();
        let nnz = keep.len();
        let mut coords = vec![0u64; nnz * ndim];
        let mut vals = Vec::with_capacity(nnz * es);
        let strides = c_strides(&self.inner);
        for (k, &i) in keep.iter().enumerate() {
            let mut rem = lin_out[i];
            for d in 0..ndim {
                coords[d * nnz + k] = rem / strides[d];
                rem %= strides[d];
            }
            vals.extend_from_slice(&values[i * es..(i + 1) * es]);
        }
        Ok(SparseChunk { nnz, coords, values: vals })
    }
}

/// Where the new entries of each chunk come from.
pub(super) enum Source<'a> {
    Csr(SortedCsr<'a>),
    Buckets(Buckets),
}

/// Where each row of sorted CSR input crosses the column boundaries of the written box's chunk
/// grid: per band of chunk rows, a table of `rows x (column bands + 1)` entry positions, built by
/// one linear pass over the band's entries when its first chunk is built, and dropped when its
/// last one is (a table lives only while its band is being encoded). Building a chunk then takes
/// two table lookups per row instead of two binary searches over the row's entries.
pub(super) struct CsrBands {
    /// Box-relative column boundaries: the first column of each chunk column band, and the end.
    cols: Vec<u64>,
    tables: Vec<std::sync::Mutex<Option<std::sync::Arc<Vec<usize>>>>>,
    /// Chunks of each row band not built yet.
    left: Vec<std::sync::atomic::AtomicUsize>,
}

impl CsrBands {
    fn new(start: &[u64], shape: &[u64], inner: &[u64], first: &[u64], rgrid: &[u64]) -> Self {
        let cols = (0..=rgrid[1]).map(|k| ((first[1] + k) * inner[1]).clamp(start[1], start[1] + shape[1]) - start[1]).collect();
        #[allow(clippy::cast_possible_truncation)]
        let (nrb, ncb) = (rgrid[0] as usize, rgrid[1] as usize);
        Self {
            cols,
            tables: (0..nrb).map(|_| std::sync::Mutex::new(None)).collect(),
            left: (0..nrb).map(|_| std::sync::atomic::AtomicUsize::new(ncb)).collect(),
        }
    }

    /// The table of row band `rb` (box-relative rows `r0..r1`), built if needed.
    fn table(&self, rb: usize, r0: u64, r1: u64, csr: &SortedCsr<'_>) -> std::sync::Arc<Vec<usize>> {
        let mut slot = self.tables[rb].lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(t) = slot.as_ref() {
            return t.clone();
        }
        #[allow(clippy::cast_possible_truncation)]
        let mut t = Vec::with_capacity((r1 - r0) as usize * self.cols.len());
        match csr.indices {
            Indices::I32(v) => self.fill(&mut t, r0, r1, csr, v),
            Indices::I64(v) => self.fill(&mut t, r0, r1, csr, v),
        }
        let t = std::sync::Arc::new(t);
        *slot = Some(t.clone());
        t
    }

    fn fill<T: Copy + Into<i64>>(&self, t: &mut Vec<usize>, r0: u64, r1: u64, csr: &SortedCsr<'_>, indices: &[T]) {
        for r in r0..r1 {
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let (a, b) = (csr.indptr.get(r as usize) as usize, csr.indptr.get(r as usize + 1) as usize);
            let mut j = a;
            for &c in &self.cols {
                #[allow(clippy::cast_sign_loss)]
                while j < b && (indices[j].into() as u64) < c {
                    j += 1;
                }
                t.push(j);
            }
        }
    }

    /// One chunk of row band `rb` is built: drop the band's table after its last one. (A chunk
    /// built again, after a conflicting write, rebuilds the table if it was dropped.)
    fn done(&self, rb: usize) {
        use std::sync::atomic::Ordering;
        let left = self.left[rb].fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
        if left == Ok(1) {
            *self.tables[rb].lock().unwrap_or_else(std::sync::PoisonError::into_inner) = None;
        }
    }
}

/// CSR input whose column indices are strictly increasing in every row.
pub(super) struct SortedCsr<'a> {
    pub(super) indptr: Indices<'a>,
    pub(super) indices: Indices<'a>,
}

/// A stored value ready to store: its key, its new value (None: delete) and how to store it.
type ToStore = (String, Option<Encoded>, WriteMode);

pub(super) struct Prepared {
    pub(super) key: String,
    pub(super) old: Option<(Vec<u8>, Option<Vec<u64>>)>,
    pub(super) kept: HashMap<usize, SparseChunk>,
    /// How the new value is stored: unconditionally, or only over the version read.
    pub(super) mode: WriteMode,
}

// ------------------------------------------------------------------------------------------------
// Written entries
// ------------------------------------------------------------------------------------------------

/// Written input, validated, with random access to entry `k`.
pub(super) struct Entries<'a> {
    pub(super) n: usize,
    pub(super) ndim: usize,
    pub(super) coo: Option<&'a [Indices<'a>]>,
    /// For compressed input: the compressed index of every entry, built on first use.
    pub(super) major: std::sync::OnceLock<Vec<u64>>,
    pub(super) minor: Option<Indices<'a>>,
    pub(super) indptr: Option<Indices<'a>>,
    /// Which axis is compressed.
    pub(super) axis: usize,
    pub(super) values: &'a [u8],
    /// Compressed row input (CSR) with strictly increasing indices in every row.
    pub(super) sorted: bool,
}

impl<'a> Entries<'a> {
    pub(super) fn new(input: &SparseInput<'a>, shape: &[u64], es: usize) -> Result<Self> {
        let ndim = shape.len();
        let bad = |m: String| Error::InvalidArgument(m);
        match *input {
            SparseInput::Coo { coords, values } => {
                if coords.len() != ndim {
                    return Err(bad(format!("{} coordinate arrays for a {ndim}-dimensional region", coords.len())));
                }
                let n = values.len() / es.max(1);
                if values.len() != n * es || coords.iter().any(|c| c.len() != n) {
                    return Err(bad("coordinate and value arrays differ in length".into()));
                }
                let e =
                    Self { n, ndim, coo: Some(coords), major: std::sync::OnceLock::new(), minor: None, indptr: None, axis: 0, values, sorted: false };
                e.check(shape)?;
                Ok(e)
            }
            SparseInput::Compressed { axis, indptr, indices, values } => {
                if ndim != 2 || axis > 1 {
                    return Err(bad("compressed (CSR/CSC) input needs a 2-dimensional region".into()));
                }
                let n_major = usize::try_from(shape[axis]).map_err(|_| bad("region too large".into()))?;
                if indptr.len() != n_major + 1 {
                    return Err(bad(format!("indptr has {} entries, expected {}", indptr.len(), n_major + 1)));
                }
                let n = indices.len();
                if values.len() != n * es {
                    return Err(bad("indices and values differ in length".into()));
                }
                if indptr.get(0) != 0 || indptr.get(n_major) != n as i64 {
                    return Err(bad(format!("indptr must start at 0 and end at nnz ({n})")));
                }
                let mut sorted = axis == 0;
                let n_minor = shape[1 - axis];
                for r in 0..n_major {
                    let (a, b) = (indptr.get(r), indptr.get(r + 1));
                    if b < a {
                        return Err(bad(format!("indptr is not monotone at {r} ({a} > {b})")));
                    }
                    #[allow(clippy::cast_sign_loss, clippy::cast_possible_truncation)]
                    for k in a as usize..b as usize {
                        let c = indices.get(k);
                        #[allow(clippy::cast_possible_wrap)]
                        if c < 0 || c >= n_minor as i64 {
                            return Err(bad(format!("entry {k} at index {c} of row/column {r} is outside the written region of shape {shape:?}")));
                        }
                        if k > a as usize && indices.get(k - 1) >= c {
                            sorted = false;
                        }
                    }
                }
                Ok(Self { n, ndim, coo: None, major: std::sync::OnceLock::new(), minor: Some(indices), indptr: Some(indptr), axis, values, sorted })
            }
        }
    }

    #[inline]
    pub(super) fn coord_signed(&self, d: usize, k: usize) -> i64 {
        match self.coo {
            Some(c) => c[d].get(k),
            None =>
            {
                #[allow(clippy::cast_possible_wrap)]
                if d == self.axis {
                    self.major()[k] as i64
                } else {
                    self.minor.map_or(0, |m| m.get(k))
                }
            }
        }
    }

    pub(super) fn major(&self) -> &[u64] {
        self.major.get_or_init(|| {
            let Some(indptr) = self.indptr else { return Vec::new() };
            let mut major = Vec::with_capacity(self.n);
            for r in 0..indptr.len().saturating_sub(1) {
                #[allow(clippy::cast_sign_loss)]
                major.extend(std::iter::repeat_n(r as u64, (indptr.get(r + 1) - indptr.get(r)) as usize));
            }
            major
        })
    }

    /// The sorted-CSR view of the input, if it is CSR with sorted, unique indices per row.
    pub(super) fn sorted_csr(&self) -> Option<SortedCsr<'a>> {
        match (self.sorted, self.indptr, self.minor) {
            (true, Some(indptr), Some(indices)) => Some(SortedCsr { indptr, indices }),
            _ => None,
        }
    }

    #[inline]
    #[allow(clippy::cast_sign_loss)]
    pub(super) fn coord(&self, d: usize, k: usize) -> u64 {
        self.coord_signed(d, k) as u64
    }

    pub(super) fn value(&self, k: usize, es: usize) -> &[u8] {
        &self.values[k * es..(k + 1) * es]
    }

    pub(super) fn check(&self, shape: &[u64]) -> Result<()> {
        let bad_at = (0..self.ndim).find_map(|d| {
            let n = shape[d];
            #[allow(clippy::cast_possible_wrap)]
            (0..self.n)
                .find(|&k| {
                    let c = self.coord_signed(d, k);
                    c < 0 || c >= n as i64
                })
                .map(|k| (d, k))
        });
        if let Some((d, k)) = bad_at {
            let coords: Vec<i64> = (0..self.ndim).map(|dd| self.coord_signed(dd, k)).collect();
            return Err(Error::InvalidArgument(format!("entry {k} at {coords:?} is outside the written region of shape {shape:?} (dimension {d})")));
        }
        Ok(())
    }

    /// Stable counting sort of the entries by chunk of the box's chunk grid.
    pub(super) fn bucket(&self, start: &[u64], inner: &[u64], first: &[u64], rgrid: &[u64], nbuckets: usize) -> Result<Buckets> {
        let ndim = self.ndim;
        let bucket_of = |k: usize| -> usize {
            let mut b = 0u64;
            for d in 0..ndim {
                let g = start[d] + self.coord(d, k);
                b = b * rgrid[d] + (g / inner[d] - first[d]);
            }
            #[allow(clippy::cast_possible_truncation)]
            {
                b as usize
            }
        };
        let threads = rayon::current_num_threads().max(1);
        let block = self.n.div_ceil(threads).max(1);
        let blocks: Vec<(usize, usize)> = (0..self.n).step_by(block).map(|s| (s, (s + block).min(self.n))).collect();
        let ids: Vec<Vec<u32>> = blocks
            .par_iter()
            .map(|&(s, e)| {
                #[allow(clippy::cast_possible_truncation)]
                (s..e).map(|k| bucket_of(k) as u32).collect()
            })
            .collect();
        let mut counts: Vec<Vec<usize>> = ids
            .par_iter()
            .map(|ids| {
                let mut c = vec![0usize; nbuckets];
                for &b in ids {
                    c[b as usize] += 1;
                }
                c
            })
            .collect();
        // offsets[b] = start of bucket b; within a bucket, block t starts after blocks < t.
        let mut offsets = vec![0usize; nbuckets + 1];
        for b in 0..nbuckets {
            offsets[b + 1] = offsets[b] + counts.iter().map(|c| c[b]).sum::<usize>();
        }
        let mut starts = offsets[..nbuckets].to_vec();
        for c in &mut counts {
            for (cb, sb) in c.iter_mut().zip(starts.iter_mut()) {
                let n = *cb;
                *cb = *sb;
                *sb += n;
            }
        }
        let mut perm = vec![0usize; self.n];
        let out = SharedMut(perm.as_mut_ptr());
        blocks.par_iter().zip(ids.par_iter()).zip(counts.par_iter_mut()).for_each(|((&(s, _), ids), cursor)| {
            let out = &out;
            for (i, &b) in ids.iter().enumerate() {
                let dst = cursor[b as usize];
                cursor[b as usize] += 1;
                // SAFETY: every destination index is written by exactly one entry (disjoint per
                // block and bucket by construction of the cursors).
                unsafe { *out.0.add(dst) = s + i };
            }
        });
        Ok(Buckets { perm, offsets })
    }
}

pub(super) struct SharedMut(*mut usize);
// SAFETY: used only for disjoint writes (see `bucket`).
unsafe impl Sync for SharedMut {}

pub(super) struct Buckets {
    pub(super) perm: Vec<usize>,
    pub(super) offsets: Vec<usize>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_checked_against_the_written_box() {
        let rows = [0i64, 3, 1];
        let cols = [2i64, 0, 4];
        let vals = [0u8; 12];
        let coords = [Indices::I64(&rows), Indices::I64(&cols)];
        let input = SparseInput::Coo { coords: &coords, values: &vals };
        let e = Entries::new(&input, &[4, 5], 4).unwrap();
        assert_eq!((e.coord(0, 1), e.coord(1, 2)), (3, 4));
        // Column 4 is outside a box of 4 columns; a negative index is outside any box.
        assert!(matches!(Entries::new(&input, &[4, 4], 4), Err(Error::InvalidArgument(m)) if m.contains("entry 2")));
        let neg = [0i64, -1, 1];
        let coords = [Indices::I64(&neg), Indices::I64(&cols)];
        assert!(Entries::new(&SparseInput::Coo { coords: &coords, values: &vals }, &[4, 5], 4).is_err());
        // Lengths must agree, and the rank must be the box's.
        assert!(Entries::new(&SparseInput::Coo { coords: &coords[..1], values: &vals }, &[4, 5], 4).is_err());
        assert!(Entries::new(&SparseInput::Coo { coords: &coords, values: &vals[..8] }, &[4, 5], 4).is_err());
    }
}
