//! Reading regions (any selections, any rank) and the final assembly of entries; statistics.

use std::sync::Arc;

use rayon::prelude::*;

use super::*;

impl SparseArray {
    /// The entries of `region` (one selection per dimension), with coordinates in the region.
    ///
    /// # Errors
    /// Returns an error for selections that do not fit, corrupt chunks (naming their key), or
    /// store failures.
    pub fn read(&self, store: &dyn Store, region: &[DimSel], format: ReadFormat, cache: Option<&IndexCache>) -> Result<SparseResult> {
        self.check_region(region)?;
        let keys = if store.capabilities().cheap_ranges { Vec::new() } else { self.keys_for_read(region)? };
        let prefetched = Prefetched::if_needed(store, keys.iter().map(String::as_str))?;
        let store: &dyn Store = prefetched.as_ref().map_or(store, |p| p as &dyn Store);
        if format == ReadFormat::Csr && self.ndim() != 2 {
            return Err(Error::InvalidArgument("CSR output needs a 2-dimensional array".into()));
        }
        let out_shape: Vec<u64> = region.iter().map(DimSel::len).collect();
        if out_shape.contains(&0) {
            return Ok(empty_result(out_shape, format));
        }
        let maps: Vec<DimMap> = region.iter().map(DimMap::new).collect();
        let monotone = maps.iter().all(DimMap::monotone);
        if monotone && self.ndim() == 2 {
            return self.read_2d(store, region, format, cache);
        }
        // Stored values (outer chunks) touched, then the sparse chunks within each.
        let per_dim: Vec<Vec<u64>> = region.iter().zip(&self.outer).map(|(s, &c)| touched(s, c)).collect();
        let outers = grid_iter(&per_dim);
        let inner_per_dim: Vec<Vec<u64>> = region.iter().zip(&self.inner).map(|(s, &c)| touched(s, c)).collect();
        let work = || -> Result<Vec<ChunkEntries>> {
            let per_outer: Vec<Vec<ChunkEntries>> = try_map(&outers, |og| self.read_outer(store, og, &inner_per_dim, &maps, monotone, cache))?;
            Ok(per_outer.into_iter().flatten().collect())
        };
        let results = if outers.len() == 1 && self.layout.is_none() { work()? } else { run_in_pool(self.concurrency.threads, work)? };
        let threads = self.concurrency.threads;
        assemble(results, out_shape, self.elem().size(), monotone, format, threads)
    }

    pub(super) fn read_outer(
        &self,
        store: &dyn Store,
        og: &[u64],
        inner_per_dim: &[Vec<u64>],
        maps: &[DimMap],
        monotone: bool,
        cache: Option<&IndexCache>,
    ) -> Result<Vec<ChunkEntries>> {
        let key = self.keys.key(og);
        let Some(value) = store.open(&key, self.first_read())? else {
            return Ok(Vec::new());
        };
        let with_key = |e: Error| e.with_key(&key);
        let Some(layout) = &self.layout else {
            let bytes = value.read_all()?;
            let chunk = self.codec.decode(&bytes).map_err(with_key)?;
            let origin: Vec<u64> = og.iter().zip(&self.outer).map(|(&g, &c)| g * c).collect();
            return Ok(vec![self.select(&chunk, &origin, og, maps, monotone)]);
        };
        // Inner chunks of this shard that the region touches.
        let grid = layout.grid();
        let wanted = wanted_inner(layout, inner_per_dim, og);
        if wanted.is_empty() {
            return Ok(Vec::new());
        }
        let whole = if read_whole(layout, wanted.len(), &*value) { Some(value.read_all()?) } else { None };
        let index: Arc<Vec<u64>> = match &whole {
            Some(b) => Arc::new(layout.index_from_bytes(&key, b)?),
            None => layout.load_index(&*value, cache)?,
        };
        let results = std::sync::Mutex::new(Vec::with_capacity(wanted.len()));
        layout.for_each_inner(
            &*value,
            whole.as_deref(),
            &index,
            &wanted,
            |local, bytes| {
                let chunk = self.codec.decode(bytes).map_err(with_key)?;
                let global: Vec<u64> = og.iter().zip(grid).zip(local).map(|((&o, &g), &l)| o * g + l).collect();
                let origin: Vec<u64> = global.iter().zip(&self.inner).map(|(&g, &c)| g * c).collect();
                let r = self.select(&chunk, &origin, &global, maps, monotone);
                results.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(r);
                Ok(())
            },
            |_| Ok(()),
        )?;
        Ok(results.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    /// The entries of one decoded chunk that the region selects, in output coordinates.
    pub(super) fn select(&self, chunk: &SparseChunk, origin: &[u64], grid: &[u64], maps: &[DimMap], monotone: bool) -> ChunkEntries {
        let ndim = self.ndim();
        let es = self.elem().size();
        let locals: Vec<LocalMap> = maps.iter().zip(origin).zip(&self.inner).map(|((m, &o), &n)| m.local(o, n)).collect();
        let mut coords: Vec<Vec<u64>> = vec![Vec::new(); ndim];
        let mut values: Vec<u8> = Vec::new();
        let mut pos: Vec<&[u64]> = vec![&[]; ndim];
        let mut single = vec![0u64; ndim];
        'entries: for k in 0..chunk.nnz {
            let mut multi = false;
            for d in 0..ndim {
                match locals[d].map(chunk.coord(d, k)) {
                    Mapped::None => continue 'entries,
                    Mapped::One(p) => {
                        single[d] = p;
                        pos[d] = &[];
                    }
                    Mapped::Many(ps) => {
                        pos[d] = ps;
                        multi = true;
                    }
                }
            }
            let value = &chunk.values[k * es..(k + 1) * es];
            if !multi {
                for d in 0..ndim {
                    coords[d].push(single[d]);
                }
                values.extend_from_slice(value);
                continue;
            }
            // Repeated indices: one output entry per combination.
            let lists: Vec<Vec<u64>> = (0..ndim).map(|d| if pos[d].is_empty() { vec![single[d]] } else { pos[d].to_vec() }).collect();
            for combo in grid_iter(&lists) {
                for d in 0..ndim {
                    coords[d].push(combo[d]);
                }
                values.extend_from_slice(value);
            }
        }
        let mut e = ChunkEntries { grid: grid.to_vec(), coords, values };
        if !monotone {
            e.sort(es);
        }
        e
    }

    // --------------------------------------------------------------------------------------------
    // Statistics
    // --------------------------------------------------------------------------------------------

    /// Number of stored entries and stored bytes, from chunk headers and shard indexes.
    ///
    /// # Errors
    /// Returns an error for corrupt chunks or store failures.
    pub fn stats(&self, store: &dyn Store, cache: Option<&IndexCache>) -> Result<(u64, u64)> {
        let keys = if store.capabilities().cheap_ranges { Vec::new() } else { self.all_keys() };
        let prefetched = Prefetched::if_needed(store, keys.iter().map(String::as_str))?;
        let store: &dyn Store = prefetched.as_ref().map_or(store, |p| p as &dyn Store);
        let keys = self.all_keys();
        let work = || -> Result<Vec<(u64, u64)>> {
            try_map(&keys, |key| {
                let Some(value) = store.open(key, self.first_read())? else {
                    return Ok((0, 0));
                };
                let size = value.size();
                let Some(layout) = &self.layout else {
                    let head = value.read_range(0, (HEADER_LEN as u64).min(size))?;
                    return self.header_nnz_with_len(&head, size).map(|n| (n, size)).map_err(|e| e.with_key(key));
                };
                let index = layout.load_index(&*value, cache)?;
                let mut nnz = 0;
                for lin in 0..layout.n_inner() {
                    if let Some((off, n)) = ShardLayout::entry(&index, lin) {
                        let head = value.read_range(off, (HEADER_LEN as u64).min(n))?;
                        nnz += self.header_nnz_with_len(&head, n).map_err(|e| e.with_key(key))?;
                    }
                }
                Ok((nnz, size))
            })
        };
        let parts = if in_pool() { work()? } else { run_in_pool(self.concurrency.threads, work)? };
        Ok(parts.into_iter().fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1)))
    }

    pub(super) fn header_nnz_with_len(&self, head: &[u8], total: u64) -> Result<u64> {
        // Validate the header against the chunk's full length without reading the chunk.
        if head.len() < HEADER_LEN {
            return Err(Error::decode("", "sparse chunk shorter than its header"));
        }
        let mut fake = head.to_vec();
        let field = |i: usize| u64::from_le_bytes(head[i..i + 8].try_into().unwrap_or_default());
        if HEADER_LEN as u64 + field(16) + field(24) != total {
            return Err(Error::decode("", "sparse chunk header does not match the chunk length (truncated?)"));
        }
        // Pretend the body is empty to reuse the header checks.
        fake[16..32].fill(0);
        let _ = self.codec.header_nnz(&fake)?;
        Ok(field(8))
    }
}

// ------------------------------------------------------------------------------------------------
// Entries of one chunk, and the final assembly
// ------------------------------------------------------------------------------------------------

pub(super) struct ChunkEntries {
    /// Grid coordinates of the chunk (sparse chunk grid).
    pub(super) grid: Vec<u64>,
    /// Output coordinates per dimension.
    pub(super) coords: Vec<Vec<u64>>,
    pub(super) values: Vec<u8>,
}

impl ChunkEntries {
    pub(super) fn len(&self) -> usize {
        self.coords.first().map_or(0, Vec::len)
    }

    pub(super) fn sort(&mut self, es: usize) {
        let n = self.len();
        let ndim = self.coords.len();
        let mut perm: Vec<usize> = (0..n).collect();
        perm.sort_by(|&a, &b| (0..ndim).map(|d| self.coords[d][a].cmp(&self.coords[d][b])).find(|o| o.is_ne()).unwrap_or(std::cmp::Ordering::Equal));
        for d in 0..ndim {
            self.coords[d] = perm.iter().map(|&i| self.coords[d][i]).collect();
        }
        self.values = perm.iter().flat_map(|&i| self.values[i * es..(i + 1) * es].iter().copied()).collect();
    }
}

pub(super) fn empty_result(shape: Vec<u64>, format: ReadFormat) -> SparseResult {
    let row_offsets = (shape.len() == 2).then(|| IndexVec::I32(vec![0i32; usize::try_from(shape[0]).unwrap_or(0) + 1]));
    SparseResult { shape, nnz: 0, coords: IndexVec::I32(Vec::new()), values: Vec::new(), row_offsets, format }
}

/// Most rows the counting assembly handles (beyond, it sorts).
pub(super) const MAX_ROWS: u64 = 1 << 27;

/// Put the entries of every chunk into one canonical list.
pub(super) fn assemble(
    mut results: Vec<ChunkEntries>,
    shape: Vec<u64>,
    es: usize,
    monotone: bool,
    format: ReadFormat,
    threads: usize,
) -> Result<SparseResult> {
    results.retain(|r| r.len() > 0);
    let ndim = shape.len();
    let nnz: usize = results.iter().map(ChunkEntries::len).sum();
    if nnz == 0 {
        return Ok(empty_result(shape, format));
    }
    let csr = format == ReadFormat::Csr && ndim == 2;
    let coord_dims = if csr { 1 } else { ndim };
    let mut coords = vec![0i64; nnz * coord_dims];
    let mut values = vec![0u8; nnz * es];
    let rows: u64 = shape[..ndim - 1].iter().product();
    let row_of = |r: &ChunkEntries, k: usize| -> u64 {
        let mut row = 0u64;
        for (d, &n) in shape.iter().enumerate().take(ndim - 1) {
            row = row * n + r.coords[d][k];
        }
        row
    };
    let put = |coords: &mut [i64], values: &mut [u8], dst: usize, r: &ChunkEntries, k: usize| {
        for (i, d) in (ndim - coord_dims..ndim).enumerate() {
            #[allow(clippy::cast_possible_wrap)]
            {
                coords[i * nnz + dst] = r.coords[d][k] as i64;
            }
        }
        values[dst * es..(dst + 1) * es].copy_from_slice(&r.values[k * es..(k + 1) * es]);
    };
    if !(monotone && rows <= MAX_ROWS) {
        // General case (unsorted or repeated indices): sort every entry by its coordinates.
        let mut all: Vec<(usize, usize)> = results.iter().enumerate().flat_map(|(i, r)| (0..r.len()).map(move |k| (i, k))).collect();
        let cmp = |a: &(usize, usize), b: &(usize, usize)| {
            (0..ndim).map(|d| results[a.0].coords[d][a.1].cmp(&results[b.0].coords[d][b.1])).find(|o| o.is_ne()).unwrap_or(std::cmp::Ordering::Equal)
        };
        run_in_pool(threads, || {
            all.par_sort_unstable_by(cmp);
            Ok(())
        })?;
        for (k, &(i, j)) in all.iter().enumerate() {
            put(&mut coords, &mut values, k, &results[i], j);
        }
        let row_offsets = (ndim == 2).then(|| {
            let rows: Vec<i64> = all.iter().map(|&(i, j)| i64::try_from(results[i].coords[0][j]).unwrap_or(i64::MAX)).collect();
            IndexVec::I64(row_offsets_from(&rows, shape[0]))
        });
        return Ok(SparseResult { shape, nnz, coords: IndexVec::I64(coords), values, row_offsets, format });
    }
    // Monotone selections, any rank: every chunk's entries are in output order and chunks that
    // share rows differ only in their last-dimension chunk. Count per row, then place runs.
    #[allow(clippy::cast_possible_truncation)]
    let mut offsets = vec![0u64; rows as usize + 1];
    for r in &results {
        for k in 0..r.len() {
            #[allow(clippy::cast_possible_truncation)]
            {
                offsets[row_of(r, k) as usize + 1] += 1;
            }
        }
    }
    for i in 1..offsets.len() {
        offsets[i] += offsets[i - 1];
    }
    let mut cursor = offsets.clone();
    results.sort_by_key(|r| r.grid[ndim - 1]);
    for r in &results {
        for k in 0..r.len() {
            #[allow(clippy::cast_possible_truncation)]
            let row = row_of(r, k) as usize;
            #[allow(clippy::cast_possible_truncation)]
            let dst = cursor[row] as usize;
            cursor[row] += 1;
            put(&mut coords, &mut values, dst, r, k);
        }
    }
    Ok(SparseResult { shape, nnz, coords: IndexVec::I64(coords), values, row_offsets: None, format })
}

pub(super) fn row_offsets_from(rows: &[i64], n_rows: u64) -> Vec<i64> {
    #[allow(clippy::cast_possible_truncation)]
    let mut off = vec![0i64; n_rows as usize + 1];
    for &r in rows {
        #[allow(clippy::cast_sign_loss, clippy::cast_possible_truncation)]
        {
            off[r as usize + 1] += 1;
        }
    }
    for i in 1..off.len() {
        off[i] += off[i - 1];
    }
    off
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_offsets_count_rows_cumulatively() {
        let rows = [0i64, 0, 2, 2, 2, 4];
        assert_eq!(row_offsets_from(&rows, 6), vec![0, 2, 2, 5, 5, 6, 6]);
        assert_eq!(row_offsets_from(&[], 3), vec![0, 0, 0, 0]);
    }
}
