//! The 2-d fast path: monotone selections of cell x gene matrices, placed straight into CSR or
//! COO output in parallel over row ranges.

use std::sync::Arc;

use rayon::prelude::*;

use super::*;

impl SparseArray {
    /// 2-d regions with monotone selections (slices with positive steps, sorted unique index
    /// arrays), the common case of cell x gene matrices. The encoded bytes of every touched chunk
    /// are fetched first (their headers bound the output size); then, band of chunk rows after
    /// band, the band's chunks are decoded in parallel into reused buffers, their entries counted
    /// per output row (and validated), and placed straight into the output (CSR or COO), in
    /// parallel over row ranges. Indices are 32-bit when they fit.
    pub(super) fn read_2d(&self, store: &dyn Store, region: &[DimSel], format: ReadFormat, cache: Option<&IndexCache>) -> Result<SparseResult> {
        let out_shape = vec![region[0].len(), region[1].len()];
        let maps = [Map1::new(&region[0]), Map1::new(&region[1])];
        let (ir, ic) = (self.inner[0], self.inner[1]);
        let threads = self.concurrency.threads;
        let es = self.elem().size();
        // 1. Encoded bytes of every touched chunk.
        let per_dim: Vec<Vec<u64>> = region.iter().zip(&self.outer).map(|(s, &c)| touched(s, c)).collect();
        let outers = grid_iter(&per_dim);
        let inner_per_dim: Vec<Vec<u64>> = region.iter().zip(&self.inner).map(|(s, &c)| touched(s, c)).collect();
        let mut encoded: Vec<Encoded2d> = run_in_pool(threads, || {
            let parts = try_map(&outers, |og| self.fetch_encoded(store, og, &inner_per_dim, cache))?;
            Ok(parts.into_iter().flatten().collect())
        })?;
        encoded.sort_unstable_by_key(|c| (c.gr, c.gc));
        let mut upper = 0u64;
        for c in &encoded {
            upper += self.codec.declared_nnz(c.bytes()).map_err(|e| e.with_key(&c.key))?;
        }
        // 2. Bands of chunks sharing a row of chunks.
        let mut bands: Vec<Band> = Vec::new();
        let mut i = 0;
        while i < encoded.len() {
            let j = i + encoded[i..].iter().take_while(|c| c.gr == encoded[i].gr).count();
            let gr = encoded[i].gr;
            let (lo, hi) = maps[0].out_range(gr * ir, ((gr + 1) * ir).min(self.shape[0]));
            bands.push(Band { first: i, end: j, row_lo: lo, row_hi: hi });
            i = j;
        }
        // 3. Outputs, sized by the headers (pages are only touched as entries are placed).
        let csr = format == ReadFormat::Csr;
        let per_entry = if csr { 1 } else { 2 };
        let wide = !(upper <= i32::MAX as u64 && out_shape.iter().all(|&n| n <= i32::MAX as u64));
        #[allow(clippy::cast_possible_truncation)]
        let upper = upper as usize;
        let mut values: Vec<u8> = Vec::with_capacity(upper * es);
        let mut coords32: Vec<i32> = Vec::with_capacity(if wide { 0 } else { upper * per_entry });
        let mut coords64: Vec<i64> = Vec::with_capacity(if wide { upper * per_entry } else { 0 });
        // Large outputs ask for transparent huge pages, as numpy does for its arrays (a hint; see
        // `hint_huge_pages`): far fewer page faults while the entries are placed.
        crate::runtime::hint_huge_pages(values.as_ptr(), values.capacity());
        crate::runtime::hint_huge_pages(coords32.as_ptr().cast(), coords32.capacity() * 4);
        crate::runtime::hint_huge_pages(coords64.as_ptr().cast(), coords64.capacity() * 8);
        #[allow(clippy::cast_possible_truncation)]
        let n_rows = out_shape[0] as usize;
        let mut row_counts = vec![0u64; n_rows];
        let out = Out {
            coords: if wide { coords64.as_mut_ptr() as usize } else { coords32.as_mut_ptr() as usize },
            values: values.as_mut_ptr() as usize,
            wide,
            stride: upper,
            csr,
            es,
        };
        let mut pool: Vec<Slot> = Vec::new();
        let mut total = 0u64;
        let inner = [ir, ic];
        for b in &bands {
            let members = &encoded[b.first..b.end];
            if pool.len() < members.len() {
                pool.resize_with(members.len(), Slot::default);
            }
            let slots = &mut pool[..members.len()];
            #[allow(clippy::cast_possible_truncation)]
            let band_rows = (b.row_hi - b.row_lo) as usize;
            let counted: Vec<(Vec<u32>, ChunkMap, ChunkMap)> = run_in_pool(threads, || {
                slots
                    .par_iter_mut()
                    .zip(members.par_iter())
                    .map(|(slot, c)| {
                        self.codec.decode_raw_into(c.bytes(), &mut slot.raw, false).map_err(|e| e.with_key(&c.key))?;
                        with_width!(slot.raw.width, W, scan_rows::<W>(slot, &inner)).map_err(|e| e.with_key(&c.key))?;
                        let rm = ChunkMap::new(&maps[0], c.gr * ir, ir);
                        let cm = ChunkMap::new(&maps[1], c.gc * ic, ic);
                        let mut counts = vec![0u32; band_rows];
                        with_width!(slot.raw.width, W, count_rows::<W>(slot, &rm, &cm, b.row_lo, ic, &mut counts));
                        Ok((counts, rm, cm))
                    })
                    .collect()
            })?;
            // Start of every output row of the band.
            let mut starts = Vec::with_capacity(band_rows + 1);
            let mut acc = total;
            for r in 0..band_rows {
                starts.push(acc);
                let n: u64 = counted.iter().map(|c| u64::from(c.0[r])).sum();
                #[allow(clippy::cast_possible_truncation)]
                {
                    row_counts[b.row_lo as usize + r] = n;
                }
                acc += n;
            }
            starts.push(acc);
            if acc as usize > upper {
                return Err(Error::decode("", "sparse chunks hold more entries than their headers declare"));
            }
            total = acc;
            // Place, in parallel over ranges of array rows (disjoint output rows).
            let slots: &[Slot] = slots;
            let (a0, a1) = (members[0].gr * ir, ((members[0].gr + 1) * ir).min(self.shape[0]));
            let parts = (threads.max(crate::runtime::available_cores()) * 4) as u64;
            let step = (a1 - a0).div_ceil(parts).max(1);
            let ranges: Vec<(u64, u64)> = (a0..a1).step_by(usize::try_from(step).unwrap_or(usize::MAX)).map(|s| (s, (s + step).min(a1))).collect();
            run_in_pool(threads, || {
                try_for_each(&ranges, |&(ra, rb)| {
                    let (olo, ohi) = maps[0].out_range(ra, rb);
                    #[allow(clippy::cast_possible_truncation)]
                    let mut cursor: Vec<u64> = starts[(olo - b.row_lo) as usize..(ohi - b.row_lo) as usize].to_vec();
                    for ((c, slot), (_, rm, cm)) in members.iter().zip(slots).zip(&counted) {
                        // SAFETY: the entries of rows `olo..ohi` go to the slots counted for those
                        // rows, which no other range writes, all below `upper` (checked above).
                        with_width!(slot.raw.width, W, unsafe {
                            place_rows::<W>(slot, rm, cm, ic, ra - c.gr * ir, rb - c.gr * ir, olo, &mut cursor, &out)
                        });
                    }
                    Ok(())
                })
            })?;
        }
        #[allow(clippy::cast_possible_truncation)]
        let total_us = total as usize;
        // SAFETY: exactly `total` entries were written at slots 0..total (the rows' counts sum to
        // `total`); for COO the column plane starts at `upper` and is first moved down to `total`.
        unsafe {
            values.set_len(total_us * es);
            if csr {
                coords32.set_len(if wide { 0 } else { total_us });
                coords64.set_len(if wide { total_us } else { 0 });
            } else if wide {
                std::ptr::copy(coords64.as_ptr().add(upper), coords64.as_mut_ptr().add(total_us), total_us);
                coords64.set_len(2 * total_us);
            } else {
                std::ptr::copy(coords32.as_ptr().add(upper), coords32.as_mut_ptr().add(total_us), total_us);
                coords32.set_len(2 * total_us);
            }
        }
        let mut offsets = Vec::with_capacity(n_rows + 1);
        let mut acc = 0u64;
        offsets.push(0);
        for n in &row_counts {
            acc += n;
            offsets.push(acc);
        }
        #[allow(clippy::cast_possible_truncation, clippy::cast_possible_wrap)]
        let (coords, row_offsets) = if wide {
            (IndexVec::I64(coords64), IndexVec::I64(offsets.iter().map(|&o| o as i64).collect()))
        } else {
            (IndexVec::I32(coords32), IndexVec::I32(offsets.iter().map(|&o| o as i32).collect()))
        };
        Ok(SparseResult { shape: out_shape, nnz: total_us, coords, values, row_offsets: Some(row_offsets), format })
    }

    /// Encoded bytes of the touched chunks of one stored value.
    pub(super) fn fetch_encoded(
        &self,
        store: &dyn Store,
        og: &[u64],
        inner_per_dim: &[Vec<u64>],
        cache: Option<&IndexCache>,
    ) -> Result<Vec<Encoded2d>> {
        let key = self.keys.key(og);
        let Some(value) = store.open(&key, self.first_read())? else {
            return Ok(Vec::new());
        };
        let key: Arc<str> = Arc::from(key.as_str());
        let Some(layout) = &self.layout else {
            let buf = Arc::new(value.read_all()?.into_owned());
            let len = buf.len();
            return Ok(vec![Encoded2d { gr: og[0], gc: og[1], key, buf, start: 0, len }]);
        };
        let grid = layout.grid();
        let wanted = wanted_inner(layout, inner_per_dim, og);
        if wanted.is_empty() {
            return Ok(Vec::new());
        }
        let grid_of = |local: &[u64]| (og[0] * grid[0] + local[0], og[1] * grid[1] + local[1]);
        if read_whole(layout, wanted.len(), &*value) {
            // Most of the shard: read it once and keep the chunks as ranges of it.
            let buf = Arc::new(value.read_all()?.into_owned());
            let index = layout.index_from_bytes(&key, &buf)?;
            #[allow(clippy::cast_possible_truncation)]
            return Ok(wanted
                .iter()
                .filter_map(|(lin, local)| {
                    ShardLayout::entry(&index, *lin).map(|(off, n)| {
                        let (gr, gc) = grid_of(local);
                        Encoded2d { gr, gc, key: key.clone(), buf: buf.clone(), start: off as usize, len: n as usize }
                    })
                })
                .collect());
        }
        let index = layout.load_index(&*value, cache)?;
        let out = std::sync::Mutex::new(Vec::with_capacity(wanted.len()));
        layout.for_each_inner(
            &*value,
            None,
            &index,
            &wanted,
            |local, bytes| {
                let (gr, gc) = grid_of(local);
                let entry = Encoded2d { gr, gc, key: key.clone(), buf: Arc::new(bytes.to_vec()), start: 0, len: bytes.len() };
                out.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(entry);
                Ok(())
            },
            |_| Ok(()),
        )?;
        Ok(out.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner))
    }
}

// ------------------------------------------------------------------------------------------------
// The 2-d fast path: monotone maps and placement
// ------------------------------------------------------------------------------------------------

pub(super) struct Band {
    pub(super) first: usize,
    pub(super) end: usize,
    pub(super) row_lo: u64,
    pub(super) row_hi: u64,
}

/// A monotone selection along one dimension: array index -> output position.
pub(super) enum Map1 {
    Range {
        start: u64,
        step: u64,
        len: u64,
    },
    /// Sorted, unique indices.
    List(Vec<u64>),
}

impl Map1 {
    pub(super) fn new(sel: &DimSel) -> Self {
        match sel {
            DimSel::Range { start, step, len } => Self::Range { start: *start, step: *step, len: *len },
            DimSel::List(v) => Self::List(v.clone()),
        }
    }

    /// Output positions of the array indices in `lo..hi` (a contiguous range, as the map is monotone).
    pub(super) fn out_range(&self, lo: u64, hi: u64) -> (u64, u64) {
        match self {
            Self::Range { start, step, len } => {
                let first = if lo <= *start { 0 } else { (lo - start).div_ceil(*step) };
                let end = if hi <= *start { 0 } else { (hi - start).div_ceil(*step) };
                (first.min(*len), end.min(*len))
            }
            Self::List(v) => (v.partition_point(|&i| i < lo) as u64, v.partition_point(|&i| i < hi) as u64),
        }
    }
}

/// The map for the local indices `0..n` of one chunk.
pub(super) enum ChunkMap {
    /// Output = local - `sub`, if `0 <= output < len`.
    Offset { sub: i64, len: i64 },
    /// Output per local index (`u64::MAX` = not selected).
    Lut(Vec<u64>),
}

impl ChunkMap {
    pub(super) fn new(map: &Map1, origin: u64, n: u64) -> Self {
        match map {
            #[allow(clippy::cast_possible_wrap)]
            Map1::Range { start, step: 1, len } => Self::Offset { sub: *start as i64 - origin as i64, len: *len as i64 },
            Map1::Range { start, step, len } => Self::Lut(
                (origin..origin + n)
                    .map(|i| if i < *start || (i - start) % step != 0 || (i - start) / step >= *len { u64::MAX } else { (i - start) / step })
                    .collect(),
            ),
            Map1::List(v) => {
                let mut lut = vec![u64::MAX; usize::try_from(n).unwrap_or(0)];
                let lo = v.partition_point(|&i| i < origin);
                for (p, &i) in v.iter().enumerate().skip(lo) {
                    if i >= origin + n {
                        break;
                    }
                    #[allow(clippy::cast_possible_truncation)]
                    {
                        lut[(i - origin) as usize] = p as u64;
                    }
                }
                Self::Lut(lut)
            }
        }
    }

    #[inline]
    pub(super) fn map(&self, local: u64) -> Option<u64> {
        match self {
            #[allow(clippy::cast_possible_wrap, clippy::cast_sign_loss)]
            Self::Offset { sub, len } => {
                let v = local as i64 - sub;
                (v >= 0 && v < *len).then_some(v as u64)
            }
            #[allow(clippy::cast_possible_truncation)]
            Self::Lut(l) => {
                let v = l[local as usize];
                (v != u64::MAX).then_some(v)
            }
        }
    }
}

/// The encoded bytes of one sparse chunk of a 2-d array (a range of a shared buffer).
pub(super) struct Encoded2d {
    pub(super) gr: u64,
    pub(super) gc: u64,
    pub(super) key: Arc<str>,
    pub(super) buf: Arc<Vec<u8>>,
    pub(super) start: usize,
    pub(super) len: usize,
}

impl Encoded2d {
    pub(super) fn bytes(&self) -> &[u8] {
        &self.buf[self.start..self.start + self.len]
    }
}

/// A decoded chunk of a 2-d read and its row runs.
#[derive(Default)]
pub(super) struct Slot {
    pub(super) raw: RawChunk,
    /// `(chunk-local row, first entry)` of every non-empty row, in order; the entries of run `i`
    /// end where run `i + 1` starts (the last run ends at `nnz`).
    pub(super) runs: Vec<(u64, usize)>,
}

impl Slot {
    /// Entry range of run `i`.
    #[inline]
    pub(super) fn run(&self, i: usize) -> (u64, usize, usize) {
        let (r, s) = self.runs[i];
        let e = self.runs.get(i + 1).map_or(self.raw.nnz, |x| x.1);
        (r, s, e)
    }
}

/// Check bounds and strict C order of a chunk's entries (it was decoded without validation) and
/// record its row runs.
pub(super) fn scan_rows<W: Width>(slot: &mut Slot, inner: &[u64; 2]) -> Result<()> {
    let raw = &slot.raw;
    let n = raw.nnz;
    slot.runs.clear();
    let (rows, cols) = raw.coords.split_at(n * W::BYTES);
    // Entries as linear keys `r * inner[1] + c`: C order is strictly increasing keys.
    let mut next_min = 0u64;
    let mut current = u64::MAX;
    for (k, (rb, cb)) in rows.chunks_exact(W::BYTES).zip(cols.chunks_exact(W::BYTES)).enumerate() {
        let (r, c) = (W::read(rb, 0), W::read(cb, 0));
        if r >= inner[0] || c >= inner[1] {
            return Err(Error::decode("", "sparse chunk: coordinate out of bounds"));
        }
        let key = r * inner[1] + c;
        if key < next_min {
            return Err(Error::decode("", "sparse chunk: entries are not in strictly increasing C order"));
        }
        next_min = key + 1;
        if r != current {
            slot.runs.push((r, k));
            current = r;
        }
    }
    Ok(())
}

/// Columns selected by a chunk's column map, when they are one contiguous range of local columns.
pub(super) fn col_window(cm: &ChunkMap, ic: u64) -> Option<(u64, u64)> {
    match cm {
        #[allow(clippy::cast_sign_loss, clippy::cast_possible_wrap)]
        ChunkMap::Offset { sub, len } => {
            let lo = (*sub).max(0) as u64;
            let hi = (sub + len).clamp(0, ic as i64) as u64;
            Some((lo.min(hi), hi))
        }
        ChunkMap::Lut(_) => None,
    }
}

/// Entries `s..e` of one row narrowed to the local columns `lo..hi` (columns are sorted in a row).
#[inline]
pub(super) fn narrow<W: Width>(raw: &RawChunk, s: usize, e: usize, (lo, hi): (u64, u64), ic: u64) -> (usize, usize) {
    if lo == 0 && hi >= ic {
        return (s, e);
    }
    let n = raw.nnz;
    let a = s + partition_point(e - s, |i| W::read(&raw.coords, n + s + i) < lo);
    let b = a + partition_point(e - a, |i| W::read(&raw.coords, n + a + i) < hi);
    (a, b)
}

/// Count the selected entries of a chunk per output row (relative to `row_lo`).
pub(super) fn count_rows<W: Width>(slot: &Slot, rm: &ChunkMap, cm: &ChunkMap, row_lo: u64, ic: u64, counts: &mut [u32]) {
    let raw = &slot.raw;
    let n = raw.nnz;
    let window = col_window(cm, ic);
    for i in 0..slot.runs.len() {
        let (r, s, e) = slot.run(i);
        let Some(or) = rm.map(r) else { continue };
        let k = match window {
            Some(w) => {
                let (a, b) = narrow::<W>(raw, s, e, w, ic);
                b - a
            }
            None => (s..e).filter(|&k| cm.map(W::read(&raw.coords, n + k)).is_some()).count(),
        };
        #[allow(clippy::cast_possible_truncation)]
        {
            counts[(or - row_lo) as usize] += k as u32;
        }
    }
}

/// Output buffers (addresses, so that closures are `Send`).
pub(super) struct Out {
    pub(super) coords: usize,
    pub(super) values: usize,
    pub(super) wide: bool,
    /// Distance between the row and column planes of COO output.
    pub(super) stride: usize,
    pub(super) csr: bool,
    pub(super) es: usize,
}

/// Copy one element of `es` bytes (fixed-size copies for the common sizes).
///
/// # Safety
/// `src` and `dst` must be valid for `es` bytes and not overlap.
#[inline]
pub(super) unsafe fn copy_elem(src: *const u8, dst: *mut u8, es: usize) {
    // SAFETY: the caller's contract.
    unsafe {
        match es {
            4 => std::ptr::copy_nonoverlapping(src, dst, 4),
            8 => std::ptr::copy_nonoverlapping(src, dst, 8),
            2 => std::ptr::copy_nonoverlapping(src, dst, 2),
            1 => *dst = *src,
            16 => std::ptr::copy_nonoverlapping(src, dst, 16),
            _ => std::ptr::copy_nonoverlapping(src, dst, es),
        }
    }
}

/// Write output coordinates `dst..dst + cols.len()`: the column of each (and, for COO, the row).
///
/// # Safety
/// The slots must be inside the output buffers and owned by the caller.
#[inline]
#[allow(clippy::cast_possible_truncation, clippy::cast_possible_wrap)]
pub(super) unsafe fn put_coords<T: Copy>(out: &Out, dst: usize, row: T, cols: impl ExactSizeIterator<Item = T>) {
    let n = cols.len();
    // SAFETY: the caller's contract.
    unsafe {
        let p = out.coords as *mut T;
        if out.csr {
            let d = std::slice::from_raw_parts_mut(p.add(dst), n);
            for (slot, c) in d.iter_mut().zip(cols) {
                *slot = c;
            }
        } else {
            std::slice::from_raw_parts_mut(p.add(dst), n).fill(row);
            let d = std::slice::from_raw_parts_mut(p.add(out.stride + dst), n);
            for (slot, c) in d.iter_mut().zip(cols) {
                *slot = c;
            }
        }
    }
}

/// Place the selected entries whose chunk-local row is in `ra..rb`.
///
/// # Safety
/// `cursor[i]` must be a free output slot of output row `olo + i`, slots of different rows and of
/// different callers must not overlap, and all must be below `out.stride`.
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn place_rows<W: Width>(
    slot: &Slot,
    rm: &ChunkMap,
    cm: &ChunkMap,
    ic: u64,
    ra: u64,
    rb: u64,
    olo: u64,
    cursor: &mut [u64],
    out: &Out,
) {
    let raw = &slot.raw;
    let n = raw.nnz;
    let es = out.es;
    let first = slot.runs.partition_point(|x| x.0 < ra);
    let last = slot.runs.partition_point(|x| x.0 < rb);
    let window = col_window(cm, ic);
    for i in first..last {
        let (r, s, e) = slot.run(i);
        let Some(or) = rm.map(r) else { continue };
        #[allow(clippy::cast_possible_truncation)]
        let cur = &mut cursor[(or - olo) as usize];
        #[allow(clippy::cast_possible_truncation)]
        let dst = *cur as usize;
        if let Some(w) = window {
            let (a, b) = narrow::<W>(raw, s, e, w, ic);
            if a == b {
                continue;
            }
            let ChunkMap::Offset { sub, .. } = cm else { unreachable!() };
            let sub = *sub;
            let cols = raw.coords[(n + a) * W::BYTES..(n + b) * W::BYTES].chunks_exact(W::BYTES);
            // SAFETY: see the function's contract; `b - a` slots were counted for this row.
            #[allow(clippy::cast_possible_truncation, clippy::cast_possible_wrap)]
            unsafe {
                if out.wide {
                    put_coords::<i64>(out, dst, or as i64, cols.map(|c| W::read(c, 0) as i64 - sub));
                } else {
                    put_coords::<i32>(out, dst, or as i32, cols.map(|c| (W::read(c, 0) as i64 - sub) as i32));
                }
                std::ptr::copy_nonoverlapping(raw.values.as_ptr().add(a * es), (out.values as *mut u8).add(dst * es), (b - a) * es);
            }
            *cur += (b - a) as u64;
        } else {
            let mut d = dst;
            for k in s..e {
                let Some(oc) = cm.map(W::read(&raw.coords, n + k)) else { continue };
                // SAFETY: see the function's contract.
                #[allow(clippy::cast_possible_truncation, clippy::cast_possible_wrap)]
                unsafe {
                    if out.wide {
                        put_coords::<i64>(out, d, or as i64, std::iter::once(oc as i64));
                    } else {
                        put_coords::<i32>(out, d, or as i32, std::iter::once(oc as i32));
                    }
                    copy_elem(raw.values.as_ptr().add(k * es), (out.values as *mut u8).add(d * es), es);
                }
                d += 1;
            }
            *cur = d as u64;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The per-chunk maps of monotone selections agree with the selection itself, and the output
    /// range of an index range is exactly the positions selected inside it.
    #[test]
    fn chunk_maps_and_output_ranges_match_the_selection() {
        for sel in
            [DimSel::Range { start: 5, step: 1, len: 30 }, DimSel::Range { start: 2, step: 3, len: 11 }, DimSel::List(vec![0, 4, 5, 19, 20, 33])]
        {
            let selected: Vec<u64> = match &sel {
                DimSel::Range { start, step, len } => (0..*len).map(|k| start + k * step).collect(),
                DimSel::List(v) => v.clone(),
            };
            let map = Map1::new(&sel);
            for (origin, n) in [(0u64, 10u64), (10, 10), (20, 16)] {
                let cm = ChunkMap::new(&map, origin, n);
                for i in 0..n {
                    let want = selected.iter().position(|&s| s == origin + i).map(|p| p as u64);
                    assert_eq!(cm.map(i), want, "{sel:?} origin {origin} local {i}");
                }
                let (a, b) = map.out_range(origin, origin + n);
                let inside: Vec<u64> = (0..selected.len() as u64).filter(|&p| (origin..origin + n).contains(&selected[p as usize])).collect();
                assert_eq!((a..b).collect::<Vec<_>>(), inside, "{sel:?} {origin}..{}", origin + n);
            }
        }
    }
}
