//! Sparse arrays: reading and writing regions as coordinates and values, never densifying.
//!
//! A [`SparseArray`] is a zarr v3 array whose chunks (or the inner chunks of its shards) use the
//! `sparsezarr.sparse` codec. [`SparseArray::read`] gathers the entries of a region (slices with
//! steps, integers, integer arrays in any order) into one coordinate list in canonical C order;
//! [`SparseArray::write`] scatters entries into the chunks of a box, merging with what is stored
//! around it. Chunks are decoded and encoded in parallel on the engine's pool.

use std::collections::HashMap;
use std::sync::Arc;

use rayon::prelude::*;
use zarrs::array::{ArrayMetadata, DataType};

use super::chunk::{CODEC_NAME, ElemType, HEADER_LEN, RawChunk, SparseChunk, SparseChunkCodec, SparseCodecConfig, Width};
use crate::engine::Concurrency;
use crate::engine::codec::{Encoded, EngineOptions, index_codec};
use crate::engine::index_cache::IndexCache;
use crate::engine::selection::DimSel;
use crate::engine::shard_index::ShardLayout;
use crate::error::{Error, Result};
pub use crate::keys::ChunkKeys;
use crate::runtime::{in_pool, run_in_pool, try_for_each, try_for_each_owned, try_map, try_map_owned};
use crate::store::{ByteRange, Prefetched, Store, WriteMode};
use crate::with_width;

// ------------------------------------------------------------------------------------------------
// The array
// ------------------------------------------------------------------------------------------------

/// A sparse array's geometry and codecs.
pub struct SparseArray {
    shape: Vec<u64>,
    /// Shape of one stored value: the shard shape, or the chunk shape if unsharded.
    outer: Vec<u64>,
    /// Shape of one sparse chunk (inner chunk of a shard, or the chunk).
    inner: Vec<u64>,
    layout: Option<ShardLayout>,
    codec: SparseChunkCodec,
    keys: ChunkKeys,
    data_type: DataType,
    concurrency: Concurrency,
}

/// Which coordinates a read returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReadFormat {
    /// Every coordinate (`coords` holds `ndim * nnz` values).
    #[default]
    Coo,
    /// For 2-d regions: only column indices in `coords`, with `row_offsets` (CSR).
    Csr,
}

/// Integer arrays of a result: 32-bit where every value fits (as scipy prefers), 64-bit otherwise.
#[derive(Debug, Clone)]
pub enum IndexVec {
    /// 32-bit values.
    I32(Vec<i32>),
    /// 64-bit values.
    I64(Vec<i64>),
}

impl Default for IndexVec {
    fn default() -> Self {
        Self::I64(Vec::new())
    }
}

impl IndexVec {
    /// Value `i` (for tests and small uses).
    #[must_use]
    pub fn get(&self, i: usize) -> i64 {
        match self {
            Self::I32(v) => i64::from(v[i]),
            Self::I64(v) => v[i],
        }
    }

    /// Number of values.
    #[must_use]
    pub fn len(&self) -> usize {
        match self {
            Self::I32(v) => v.len(),
            Self::I64(v) => v.len(),
        }
    }

    /// Whether there are none.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The result of a read: entries of the region, canonical (C order, no duplicates).
#[derive(Debug, Clone, Default)]
pub struct SparseResult {
    /// Shape of the region.
    pub shape: Vec<u64>,
    /// Number of entries.
    pub nnz: usize,
    /// Coordinates in the region, planar: `coords[d * nnz + k]` (for [`ReadFormat::Csr`] only the
    /// last dimension's).
    pub coords: IndexVec,
    /// Values, native byte order.
    pub values: Vec<u8>,
    /// For 2-d results: start of each row in the entry list (`shape[0] + 1` values), the CSR
    /// `indptr`.
    pub row_offsets: Option<IndexVec>,
    /// The coordinate format of `coords`.
    pub format: ReadFormat,
}

/// Integer index arrays as they come from numpy / scipy.
#[derive(Debug, Clone, Copy)]
pub enum Indices<'a> {
    /// 32-bit indices.
    I32(&'a [i32]),
    /// 64-bit indices.
    I64(&'a [i64]),
}

impl Indices<'_> {
    /// Number of indices.
    #[must_use]
    pub fn len(&self) -> usize {
        match self {
            Self::I32(v) => v.len(),
            Self::I64(v) => v.len(),
        }
    }

    /// Whether there are none.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    #[inline]
    fn get(&self, k: usize) -> i64 {
        match self {
            Self::I32(v) => i64::from(v[k]),
            Self::I64(v) => v[k],
        }
    }
}

/// Entries to write.
#[derive(Debug, Clone, Copy)]
pub enum SparseInput<'a> {
    /// Coordinates (one index array per dimension) and values.
    Coo {
        /// One array per dimension, all of the same length.
        coords: &'a [Indices<'a>],
        /// Values, native byte order.
        values: &'a [u8],
    },
    /// A 2-d compressed matrix: CSR (`axis` 0) or CSC (`axis` 1).
    Compressed {
        /// The compressed axis: 0 for CSR, 1 for CSC.
        axis: usize,
        /// Pointers, one more than the length of the compressed axis.
        indptr: Indices<'a>,
        /// Indices along the other axis.
        indices: Indices<'a>,
        /// Values, native byte order.
        values: &'a [u8],
    },
}

/// What to do with repeated coordinates in written input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Duplicates {
    /// Sum them (scipy's convention).
    Sum,
    /// Refuse the input.
    Error,
}

fn ceil_div(a: u64, b: u64) -> u64 {
    a.div_ceil(b)
}

/// Grid coordinates in C order over `grid` (a cartesian product).
fn grid_iter(ranges: &[Vec<u64>]) -> Vec<Vec<u64>> {
    let mut out: Vec<Vec<u64>> = vec![Vec::new()];
    for r in ranges {
        let mut next = Vec::with_capacity(out.len() * r.len());
        for prefix in &out {
            for &x in r {
                let mut p = prefix.clone();
                p.push(x);
                next.push(p);
            }
        }
        out = next;
    }
    out
}

impl SparseArray {
    /// Open from zarr v3 array metadata JSON. `fill` (native element bytes) overrides the
    /// metadata's fill value; `prefix` is the array's key prefix in the store (`""` or `"a/b/"`).
    ///
    /// # Errors
    /// Returns [`Error::InvalidMetadata`] / [`Error::Unsupported`] if this is not a sparse array
    /// this version handles.
    pub fn from_metadata_json(json: &str, fill: Option<Vec<u8>>, prefix: &str, options: EngineOptions, concurrency: Concurrency) -> Result<Self> {
        let metadata: ArrayMetadata = serde_json::from_str(json).map_err(|e| Error::InvalidMetadata(format!("array metadata: {e}")))?;
        let ArrayMetadata::V3(v3) = metadata else {
            return Err(Error::Unsupported("sparse arrays are zarr v3 arrays".into()));
        };
        if v3.chunk_grid.name() != "regular" {
            return Err(Error::Unsupported(format!("chunk grid {:?}", v3.chunk_grid.name())));
        }
        let outer: Vec<u64> = v3
            .chunk_grid
            .configuration()
            .and_then(|c| c.get("chunk_shape"))
            .and_then(|v| serde_json::from_value(v.clone()).ok())
            .ok_or_else(|| Error::InvalidMetadata("regular chunk grid without chunk_shape".into()))?;
        let shape = v3.shape.clone();
        if shape.is_empty() {
            return Err(Error::Unsupported("0-dimensional sparse arrays".into()));
        }
        let data_type = DataType::from_metadata(&v3.data_type).map_err(|e| Error::Unsupported(format!("data type: {e}")))?;
        let elem = ElemType::from_data_type(&data_type)?;
        let fill = match fill {
            Some(f) => f,
            None => data_type.fill_value_v3(&v3.fill_value).map_err(|e| Error::InvalidMetadata(format!("fill value: {e}")))?.as_ne_bytes().to_vec(),
        };
        let not_sparse =
            || Error::InvalidMetadata(format!("not a sparse array: codecs must be [{CODEC_NAME}] or [sharding_indexed with codecs [{CODEC_NAME}]]"));
        let (layout, sparse_meta, inner) = match v3.codecs.as_slice() {
            [c] if c.name() == CODEC_NAME => (None, c.clone(), outer.clone()),
            [s] if s.name() == "sharding_indexed" => {
                let (layout, codecs) = ShardLayout::new(s, &outer, &options, index_codec)?;
                match codecs.as_slice() {
                    [c] if c.name() == CODEC_NAME => {
                        let inner = layout.inner_shape().to_vec();
                        (Some(layout), c.clone(), inner)
                    }
                    _ => return Err(not_sparse()),
                }
            }
            _ => return Err(not_sparse()),
        };
        let cfg_json = sparse_meta.configuration().map(|c| serde_json::Value::Object(c.clone().into())).unwrap_or_default();
        let config = SparseCodecConfig::from_json(&cfg_json)?;
        let codec = SparseChunkCodec::new(&config, &inner, elem, &fill, &options)?;
        let keys = ChunkKeys::new(&v3.chunk_key_encoding, prefix)?;
        Ok(Self { shape, outer, inner, layout, codec, keys, data_type, concurrency })
    }

    /// The fill value (native element bytes).
    #[must_use]
    pub fn fill(&self) -> &[u8] {
        self.codec.fill()
    }

    /// Array shape.
    #[must_use]
    pub fn shape(&self) -> &[u64] {
        &self.shape
    }

    /// Shape of the sparse chunks.
    #[must_use]
    pub fn chunk_shape(&self) -> &[u64] {
        &self.inner
    }

    /// What to read when opening a stored value: a shard's index, or a whole chunk.
    fn first_read(&self) -> ByteRange {
        self.layout.as_ref().map_or(ByteRange::All, ShardLayout::index_byte_range)
    }

    /// Shape of the stored values (shards), if sharded.
    #[must_use]
    pub fn shard_shape(&self) -> Option<&[u64]> {
        self.layout.as_ref().map(|_| self.outer.as_slice())
    }

    /// Element type.
    #[must_use]
    pub fn elem(&self) -> ElemType {
        self.codec.elem()
    }

    /// The data type.
    #[must_use]
    pub fn data_type(&self) -> &DataType {
        &self.data_type
    }

    fn ndim(&self) -> usize {
        self.shape.len()
    }

    /// Keys of every stored value (shard or chunk) a read of `region` may touch.
    ///
    /// # Errors
    /// Returns [`Error::Selection`] if the region does not fit the array.
    pub fn keys_for_read(&self, region: &[DimSel]) -> Result<Vec<String>> {
        self.check_region(region)?;
        let per_dim: Vec<Vec<u64>> = region.iter().zip(&self.outer).map(|(s, &c)| touched(s, c)).collect();
        Ok(grid_iter(&per_dim).iter().map(|g| self.keys.key(g)).collect())
    }

    /// Keys of every stored value a write of the box `start..start+shape` touches.
    ///
    /// # Errors
    /// Returns [`Error::Selection`] if the box does not fit the array.
    pub fn keys_for_write(&self, start: &[u64], shape: &[u64]) -> Result<Vec<String>> {
        let region: Vec<DimSel> = start.iter().zip(shape).map(|(&s, &n)| DimSel::range(s, n)).collect();
        self.keys_for_read(&region)
    }

    /// Keys of every stored value of the array.
    #[must_use]
    pub fn all_keys(&self) -> Vec<String> {
        let per_dim: Vec<Vec<u64>> = self.shape.iter().zip(&self.outer).map(|(&n, &c)| (0..ceil_div(n, c)).collect()).collect();
        grid_iter(&per_dim).iter().map(|g| self.keys.key(g)).collect()
    }

    fn check_region(&self, region: &[DimSel]) -> Result<()> {
        if region.len() != self.ndim() {
            return Err(Error::Selection(format!("selection has {} dimensions, the array {}", region.len(), self.ndim())));
        }
        for (s, &n) in region.iter().zip(&self.shape) {
            s.check_bounds(n)?;
        }
        Ok(())
    }

    // --------------------------------------------------------------------------------------------
    // Reading
    // --------------------------------------------------------------------------------------------

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

    fn read_outer(
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
        let ranges: Vec<Vec<u64>> =
            inner_per_dim.iter().zip(og).zip(grid).map(|((t, &o), &g)| t.iter().copied().filter(|&i| i / g == o).map(|i| i % g).collect()).collect();
        let wanted: Vec<(usize, Vec<u64>)> = grid_iter(&ranges).into_iter().map(|c| (layout.linear(&c), c)).collect();
        if wanted.is_empty() {
            return Ok(Vec::new());
        }
        let whole = if wanted.len() * 2 > layout.n_inner() || value.resident() { Some(value.read_all()?) } else { None };
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
    fn select(&self, chunk: &SparseChunk, origin: &[u64], grid: &[u64], maps: &[DimMap], monotone: bool) -> ChunkEntries {
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

    /// 2-d regions with monotone selections (slices with positive steps, sorted unique index
    /// arrays), the common case of cell x gene matrices. The encoded bytes of every touched chunk
    /// are fetched first (their headers bound the output size); then, band of chunk rows after
    /// band, the band's chunks are decoded in parallel into reused buffers, their entries counted
    /// per output row (and validated), and placed straight into the output (CSR or COO), in
    /// parallel over row ranges. Indices are 32-bit when they fit.
    fn read_2d(&self, store: &dyn Store, region: &[DimSel], format: ReadFormat, cache: Option<&IndexCache>) -> Result<SparseResult> {
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
    fn fetch_encoded(&self, store: &dyn Store, og: &[u64], inner_per_dim: &[Vec<u64>], cache: Option<&IndexCache>) -> Result<Vec<Encoded2d>> {
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
        let ranges: Vec<Vec<u64>> =
            inner_per_dim.iter().zip(og).zip(grid).map(|((t, &o), &g)| t.iter().copied().filter(|&i| i / g == o).map(|i| i % g).collect()).collect();
        let wanted: Vec<(usize, Vec<u64>)> = grid_iter(&ranges).into_iter().map(|c| (layout.linear(&c), c)).collect();
        if wanted.is_empty() {
            return Ok(Vec::new());
        }
        let grid_of = |local: &[u64]| (og[0] * grid[0] + local[0], og[1] * grid[1] + local[1]);
        if wanted.len() * 2 > layout.n_inner() || value.resident() {
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
        run_in_pool(self.concurrency.threads, || self.write_in_pool(store, start, shape, &entries, duplicates))
    }

    fn write_in_pool(&self, store: &dyn Store, start: &[u64], shape: &[u64], entries: &Entries<'_>, duplicates: Duplicates) -> Result<()> {
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
        let fresh = |b: usize| -> Result<SparseChunk> {
            let rc = unravel(b as u64, &rgrid);
            let origin: Vec<u64> = rc.iter().zip(&first).zip(&self.inner).map(|((&r, &f), &c)| (r + f) * c).collect();
            match &source {
                Source::Csr(csr) => Ok(self.csr_chunk(entries, csr, start, shape, &origin)),
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
            outers.entry(group(&unravel(b as u64, &rgrid))).or_default().push(b);
        }
        let mut outers: Vec<(Vec<u64>, Vec<usize>)> = outers.into_iter().collect();
        outers.sort();
        let box_covers = |origin: &[u64], extent: &[u64]| {
            (0..ndim).all(|d| start[d] <= origin[d] && origin[d] + extent[d].min(self.shape[d] - origin[d]) <= start[d] + shape[d])
        };
        // 4. Read and decode everything the box covers only partly (nothing stored yet).
        let prepared: Vec<Prepared> = try_map(&outers, |(og, members)| {
            let key = self.keys.key(og);
            let oorigin: Vec<u64> = og.iter().zip(&self.outer).map(|(&g, &c)| g * c).collect();
            if box_covers(&oorigin, &self.outer) {
                return Ok(Prepared { key, old: None, kept: HashMap::new() });
            }
            let Some(value) = store.open(&key, self.first_read())? else {
                return Ok(Prepared { key, old: None, kept: HashMap::new() });
            };
            let bytes = value.read_all()?.into_owned();
            let mut kept = HashMap::new();
            let old_index = match &self.layout {
                Some(l) => Some(l.index_from_bytes(&key, &bytes)?),
                None => None,
            };
            for &b in members {
                let rc = unravel(b as u64, &rgrid);
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
            Ok(Prepared { key, old: Some((bytes, old_index)), kept })
        })?;
        // 5. Encode every stored value before storing any: building a chunk is also where invalid
        // input is found (repeated coordinates with `Duplicates::Error`), and an error must leave
        // the store unchanged, whichever stored value the parallel workers reach first.
        let fresh = &fresh;
        let items: Vec<_> = outers.iter().zip(prepared).collect();
        let encoded: Vec<(String, Option<Encoded>)> = try_map_owned(items, |((_, members), prep)| {
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
                        let rc = unravel(b as u64, &rgrid);
                        let local: Vec<u64> = rc.iter().zip(&first).zip(l.grid()).map(|((&r, &f), &g)| (r + f) % g).collect();
                        Ok((l.linear(&local), encode_chunk(b)?))
                    })?;
                    let old = prep.old.as_ref().and_then(|(bytes, idx)| idx.as_deref().map(|i| (bytes.as_slice(), i)));
                    l.rebuild(old, changes)?
                }
            };
            Ok((prep.key, new))
        })?;
        // 6. Store them.
        try_for_each_owned(encoded, |(key, new)| match new {
            Some(enc) => store.put(&key, enc, WriteMode::Overwrite).map(drop),
            None => store.delete(&key),
        })
    }

    /// The canonical chunk at `origin` from sorted CSR input (rows `start[0]..`, columns relative
    /// to `start[1]`): per row, the entries whose columns fall in the chunk are one contiguous
    /// range, found by binary search, already in C order.
    fn csr_chunk(&self, entries: &Entries<'_>, csr: &SortedCsr<'_>, start: &[u64], shape: &[u64], origin: &[u64]) -> SparseChunk {
        let es = self.elem().size();
        // Box-relative rows and columns covered by the chunk.
        let r0 = origin[0].max(start[0]) - start[0];
        let r1 = (origin[0] + self.inner[0]).min(start[0] + shape[0]) - start[0];
        let c0 = origin[1].max(start[1]) - start[1];
        let c1 = (origin[1] + self.inner[1]).min(start[1] + shape[1]) - start[1];
        // Per row, the range of entries in the chunk's columns.
        let ranges: Vec<(u64, usize, usize)> = (r0..r1)
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
            .collect();
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
    fn drop_fill(&self, chunk: SparseChunk) -> SparseChunk {
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
    fn outside(&self, chunk: &SparseChunk, origin: &[u64], start: &[u64], shape: &[u64]) -> SparseChunk {
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
    fn merge(&self, a: &SparseChunk, b: &SparseChunk) -> SparseChunk {
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
    fn canonical(&self, entries: &Entries<'_>, perm: &[usize], start: &[u64], origin: &[u64], duplicates: Duplicates) -> Result<SparseChunk> {
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

    fn header_nnz_with_len(&self, head: &[u8], total: u64) -> Result<u64> {
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

/// Where the new entries of each chunk come from.
enum Source<'a> {
    Csr(SortedCsr<'a>),
    Buckets(Buckets),
}

/// CSR input whose column indices are strictly increasing in every row.
struct SortedCsr<'a> {
    indptr: Indices<'a>,
    indices: Indices<'a>,
}

struct Prepared {
    key: String,
    old: Option<(Vec<u8>, Option<Vec<u64>>)>,
    kept: HashMap<usize, SparseChunk>,
}

fn c_strides(shape: &[u64]) -> Vec<u64> {
    let mut s = vec![1u64; shape.len()];
    for d in (0..shape.len().saturating_sub(1)).rev() {
        s[d] = s[d + 1] * shape[d + 1];
    }
    s
}

fn unravel(mut lin: u64, grid: &[u64]) -> Vec<u64> {
    let mut c = vec![0; grid.len()];
    for d in (0..grid.len()).rev() {
        c[d] = lin % grid[d];
        lin /= grid[d];
    }
    c
}

fn take(chunk: &SparseChunk, keep: &[usize], ndim: usize, es: usize) -> SparseChunk {
    let nnz = keep.len();
    let mut coords = vec![0u64; nnz * ndim];
    let mut values = Vec::with_capacity(nnz * es);
    for (k, &i) in keep.iter().enumerate() {
        for d in 0..ndim {
            coords[d * nnz + k] = chunk.coord(d, i);
        }
        values.extend_from_slice(&chunk.values[i * es..(i + 1) * es]);
    }
    SparseChunk { nnz, coords, values }
}

/// Grid indices along one dimension touched by a selection, sorted and unique.
fn touched(sel: &DimSel, chunk: u64) -> Vec<u64> {
    match sel {
        DimSel::Range { start, step, len } => {
            if *len == 0 {
                return Vec::new();
            }
            let last = start + (len - 1) * step;
            if *step <= chunk {
                (start / chunk..=last / chunk).collect()
            } else {
                let mut v: Vec<u64> = (0..*len).map(|k| (start + k * step) / chunk).collect();
                v.dedup();
                v
            }
        }
        DimSel::List(v) => {
            let mut g: Vec<u64> = v.iter().map(|&i| i / chunk).collect();
            g.sort_unstable();
            g.dedup();
            g
        }
    }
}

// ------------------------------------------------------------------------------------------------
// Mapping array indices to output positions
// ------------------------------------------------------------------------------------------------

enum DimMap {
    Range {
        start: u64,
        step: u64,
        len: u64,
    },
    /// `(array index, output position)` sorted by index, then position.
    List {
        pairs: Vec<(u64, u64)>,
        monotone: bool,
    },
}

enum LocalMap {
    Range {
        start: i128,
        step: i128,
        len: i128,
    },
    /// Per local index `i`, the output positions `positions[offsets[i]..offsets[i + 1]]`.
    Table {
        offsets: Vec<u32>,
        positions: Vec<u64>,
    },
}

enum Mapped<'a> {
    None,
    One(u64),
    Many(&'a [u64]),
}

impl DimMap {
    fn new(sel: &DimSel) -> Self {
        match sel {
            DimSel::Range { start, step, len } => Self::Range { start: *start, step: *step, len: *len },
            DimSel::List(v) => {
                let monotone = v.windows(2).all(|w| w[1] > w[0]);
                let mut pairs: Vec<(u64, u64)> = v.iter().enumerate().map(|(p, &i)| (i, p as u64)).collect();
                if !monotone {
                    pairs.sort_unstable();
                }
                Self::List { pairs, monotone }
            }
        }
    }

    fn monotone(&self) -> bool {
        match self {
            Self::Range { .. } => true,
            Self::List { monotone, .. } => *monotone,
        }
    }

    /// The map for local indices `0..n` of a chunk starting at array index `origin`.
    fn local(&self, origin: u64, n: u64) -> LocalMap {
        match self {
            Self::Range { start, step, len } => {
                LocalMap::Range { start: i128::from(*start) - i128::from(origin), step: i128::from(*step), len: i128::from(*len) }
            }
            Self::List { pairs, .. } => {
                let lo = pairs.partition_point(|p| p.0 < origin);
                let hi = pairs.partition_point(|p| p.0 < origin + n);
                let slice = &pairs[lo..hi];
                #[allow(clippy::cast_possible_truncation)]
                let mut offsets = vec![0u32; n as usize + 1];
                for p in slice {
                    #[allow(clippy::cast_possible_truncation)]
                    {
                        offsets[(p.0 - origin) as usize + 1] += 1;
                    }
                }
                for i in 1..offsets.len() {
                    offsets[i] += offsets[i - 1];
                }
                LocalMap::Table { offsets, positions: slice.iter().map(|p| p.1).collect() }
            }
        }
    }
}

impl LocalMap {
    #[inline]
    fn map(&self, local: u64) -> Mapped<'_> {
        match self {
            Self::Range { start, step, len } => {
                let off = i128::from(local) - start;
                if off < 0 || off % step != 0 {
                    return Mapped::None;
                }
                let k = off / step;
                #[allow(clippy::cast_sign_loss, clippy::cast_possible_truncation)]
                if k < *len { Mapped::One(k as u64) } else { Mapped::None }
            }
            Self::Table { offsets, positions } => {
                #[allow(clippy::cast_possible_truncation)]
                let (a, b) = (offsets[local as usize] as usize, offsets[local as usize + 1] as usize);
                match b - a {
                    0 => Mapped::None,
                    1 => Mapped::One(positions[a]),
                    _ => Mapped::Many(&positions[a..b]),
                }
            }
        }
    }
}

// ------------------------------------------------------------------------------------------------
// The 2-d fast path: monotone maps and placement
// ------------------------------------------------------------------------------------------------

struct Band {
    first: usize,
    end: usize,
    row_lo: u64,
    row_hi: u64,
}

/// A monotone selection along one dimension: array index -> output position.
enum Map1 {
    Range {
        start: u64,
        step: u64,
        len: u64,
    },
    /// Sorted, unique indices.
    List(Vec<u64>),
}

impl Map1 {
    fn new(sel: &DimSel) -> Self {
        match sel {
            DimSel::Range { start, step, len } => Self::Range { start: *start, step: *step, len: *len },
            DimSel::List(v) => Self::List(v.clone()),
        }
    }

    /// Output positions of the array indices in `lo..hi` (a contiguous range, as the map is monotone).
    fn out_range(&self, lo: u64, hi: u64) -> (u64, u64) {
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
enum ChunkMap {
    /// Output = local - `sub`, if `0 <= output < len`.
    Offset { sub: i64, len: i64 },
    /// Output per local index (`u64::MAX` = not selected).
    Lut(Vec<u64>),
}

impl ChunkMap {
    fn new(map: &Map1, origin: u64, n: u64) -> Self {
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
    fn map(&self, local: u64) -> Option<u64> {
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
struct Encoded2d {
    gr: u64,
    gc: u64,
    key: Arc<str>,
    buf: Arc<Vec<u8>>,
    start: usize,
    len: usize,
}

impl Encoded2d {
    fn bytes(&self) -> &[u8] {
        &self.buf[self.start..self.start + self.len]
    }
}

/// A decoded chunk of a 2-d read and its row runs.
#[derive(Default)]
struct Slot {
    raw: RawChunk,
    /// `(chunk-local row, first entry)` of every non-empty row, in order; the entries of run `i`
    /// end where run `i + 1` starts (the last run ends at `nnz`).
    runs: Vec<(u64, usize)>,
}

impl Slot {
    /// Entry range of run `i`.
    #[inline]
    fn run(&self, i: usize) -> (u64, usize, usize) {
        let (r, s) = self.runs[i];
        let e = self.runs.get(i + 1).map_or(self.raw.nnz, |x| x.1);
        (r, s, e)
    }
}

/// Check bounds and strict C order of a chunk's entries (it was decoded without validation) and
/// record its row runs.
fn scan_rows<W: Width>(slot: &mut Slot, inner: &[u64; 2]) -> Result<()> {
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
fn col_window(cm: &ChunkMap, ic: u64) -> Option<(u64, u64)> {
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
fn narrow<W: Width>(raw: &RawChunk, s: usize, e: usize, (lo, hi): (u64, u64), ic: u64) -> (usize, usize) {
    if lo == 0 && hi >= ic {
        return (s, e);
    }
    let n = raw.nnz;
    let a = s + partition_point(e - s, |i| W::read(&raw.coords, n + s + i) < lo);
    let b = a + partition_point(e - a, |i| W::read(&raw.coords, n + a + i) < hi);
    (a, b)
}

/// Count the selected entries of a chunk per output row (relative to `row_lo`).
fn count_rows<W: Width>(slot: &Slot, rm: &ChunkMap, cm: &ChunkMap, row_lo: u64, ic: u64, counts: &mut [u32]) {
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
struct Out {
    coords: usize,
    values: usize,
    wide: bool,
    /// Distance between the row and column planes of COO output.
    stride: usize,
    csr: bool,
    es: usize,
}

/// Copy one element of `es` bytes (fixed-size copies for the common sizes).
///
/// # Safety
/// `src` and `dst` must be valid for `es` bytes and not overlap.
#[inline]
unsafe fn copy_elem(src: *const u8, dst: *mut u8, es: usize) {
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
unsafe fn put_coords<T: Copy>(out: &Out, dst: usize, row: T, cols: impl ExactSizeIterator<Item = T>) {
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
unsafe fn place_rows<W: Width>(slot: &Slot, rm: &ChunkMap, cm: &ChunkMap, ic: u64, ra: u64, rb: u64, olo: u64, cursor: &mut [u64], out: &Out) {
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

/// First index in `0..n` for which `pred` is false (`pred` true then false).
fn partition_point(n: usize, pred: impl Fn(usize) -> bool) -> usize {
    let (mut lo, mut hi) = (0, n);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if pred(mid) { lo = mid + 1 } else { hi = mid }
    }
    lo
}

// ------------------------------------------------------------------------------------------------
// Entries of one chunk, and the final assembly
// ------------------------------------------------------------------------------------------------

struct ChunkEntries {
    /// Grid coordinates of the chunk (sparse chunk grid).
    grid: Vec<u64>,
    /// Output coordinates per dimension.
    coords: Vec<Vec<u64>>,
    values: Vec<u8>,
}

impl ChunkEntries {
    fn len(&self) -> usize {
        self.coords.first().map_or(0, Vec::len)
    }

    fn sort(&mut self, es: usize) {
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

fn empty_result(shape: Vec<u64>, format: ReadFormat) -> SparseResult {
    let row_offsets = (shape.len() == 2).then(|| IndexVec::I32(vec![0i32; usize::try_from(shape[0]).unwrap_or(0) + 1]));
    SparseResult { shape, nnz: 0, coords: IndexVec::I32(Vec::new()), values: Vec::new(), row_offsets, format }
}

/// Most rows the counting assembly handles (beyond, it sorts).
const MAX_ROWS: u64 = 1 << 27;

/// Put the entries of every chunk into one canonical list.
fn assemble(mut results: Vec<ChunkEntries>, shape: Vec<u64>, es: usize, monotone: bool, format: ReadFormat, threads: usize) -> Result<SparseResult> {
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

fn row_offsets_from(rows: &[i64], n_rows: u64) -> Vec<i64> {
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

// ------------------------------------------------------------------------------------------------
// Written entries
// ------------------------------------------------------------------------------------------------

/// Written input, validated, with random access to entry `k`.
struct Entries<'a> {
    n: usize,
    ndim: usize,
    coo: Option<&'a [Indices<'a>]>,
    /// For compressed input: the compressed index of every entry, built on first use.
    major: std::sync::OnceLock<Vec<u64>>,
    minor: Option<Indices<'a>>,
    indptr: Option<Indices<'a>>,
    /// Which axis is compressed.
    axis: usize,
    values: &'a [u8],
    /// Compressed row input (CSR) with strictly increasing indices in every row.
    sorted: bool,
}

impl<'a> Entries<'a> {
    fn new(input: &SparseInput<'a>, shape: &[u64], es: usize) -> Result<Self> {
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
    fn coord_signed(&self, d: usize, k: usize) -> i64 {
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

    fn major(&self) -> &[u64] {
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
    fn sorted_csr(&self) -> Option<SortedCsr<'a>> {
        match (self.sorted, self.indptr, self.minor) {
            (true, Some(indptr), Some(indices)) => Some(SortedCsr { indptr, indices }),
            _ => None,
        }
    }

    #[inline]
    #[allow(clippy::cast_sign_loss)]
    fn coord(&self, d: usize, k: usize) -> u64 {
        self.coord_signed(d, k) as u64
    }

    fn value(&self, k: usize, es: usize) -> &[u8] {
        &self.values[k * es..(k + 1) * es]
    }

    fn check(&self, shape: &[u64]) -> Result<()> {
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
    fn bucket(&self, start: &[u64], inner: &[u64], first: &[u64], rgrid: &[u64], nbuckets: usize) -> Result<Buckets> {
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

struct SharedMut(*mut usize);
// SAFETY: used only for disjoint writes (see `bucket`).
unsafe impl Sync for SharedMut {}

struct Buckets {
    perm: Vec<usize>,
    offsets: Vec<usize>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::FsStore;

    fn meta(shape: &[u64], chunks: &[u64], shards: Option<&[u64]>) -> String {
        let sparse = serde_json::json!({"name": "sparsezarr.sparse", "configuration": {"layout": "coo",
            "coordinate_codecs": [{"name": "bytes", "configuration": {"endian": "little"}}, {"name": "zstd", "configuration": {"level": 1, "checksum": false}}],
            "value_codecs": [{"name": "bytes", "configuration": {"endian": "little"}}]}});
        let (grid, codecs) = match shards {
            None => (chunks.to_vec(), serde_json::json!([sparse])),
            Some(s) => (
                s.to_vec(),
                serde_json::json!([{"name": "sharding_indexed", "configuration": {"chunk_shape": chunks, "codecs": [sparse],
                "index_codecs": [{"name": "bytes", "configuration": {"endian": "little"}}, {"name": "crc32c"}], "index_location": "end"}}]),
            ),
        };
        serde_json::json!({"zarr_format": 3, "node_type": "array", "shape": shape, "data_type": "int32",
            "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": grid}},
            "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}}, "fill_value": 0, "codecs": codecs})
        .to_string()
    }

    /// Dense reference of a result.
    fn densify(r: &SparseResult) -> Vec<i32> {
        let n: u64 = r.shape.iter().product();
        let mut out = vec![0i32; n as usize];
        let ndim = r.shape.len();
        for k in 0..r.nnz {
            let mut lin = 0u64;
            for d in 0..ndim {
                lin = lin * r.shape[d] + r.coords.get(d * r.nnz + k) as u64;
            }
            out[lin as usize] = i32::from_ne_bytes(r.values[k * 4..k * 4 + 4].try_into().unwrap());
        }
        out
    }

    fn check_canonical(r: &SparseResult) {
        let ndim = r.shape.len();
        for k in 1..r.nnz {
            let a: Vec<i64> = (0..ndim).map(|d| r.coords.get(d * r.nnz + k - 1)).collect();
            let b: Vec<i64> = (0..ndim).map(|d| r.coords.get(d * r.nnz + k)).collect();
            assert!(a < b, "not canonical at {k}: {a:?} {b:?}");
        }
    }

    #[test]
    fn failed_write_changes_nothing_whichever_chunk_fails() {
        // Repeated coordinates are found while the chunks are built, in parallel. Put them in the
        // last chunk / shard of a write covering the whole array: every other stored value of the
        // write would be replaced (here: erased, since it gets no entries) if any were stored
        // before the error.
        for shards in [None, Some(&[8u64, 10][..])] {
            let dir = std::env::temp_dir().join(format!("szsparse-fail-{}-{}", std::process::id(), shards.is_some()));
            let store = FsStore::new(&dir, false);
            let arr = SparseArray::from_metadata_json(&meta(&[13, 17], &[4, 5], shards), None, "", EngineOptions::default(), Concurrency::default())
                .unwrap();
            let rows: Vec<i64> = (0..13).collect();
            let cols: Vec<i64> = (0..13).collect();
            let vals: Vec<u8> = (1..=13i32).flat_map(i32::to_ne_bytes).collect();
            arr.write(
                &store,
                &[0, 0],
                &[13, 17],
                &SparseInput::Coo { coords: &[Indices::I64(&rows), Indices::I64(&cols)], values: &vals },
                Duplicates::Error,
            )
            .unwrap();
            let before = densify(&arr.read(&store, &[DimSel::range(0, 13), DimSel::range(0, 17)], ReadFormat::Coo, None).unwrap());
            for _ in 0..20 {
                let dup_r = [12i64, 12];
                let dup_c = [16i64, 16];
                let v: Vec<u8> = [5i32, 6].iter().flat_map(|x| x.to_ne_bytes()).collect();
                let input = SparseInput::Coo { coords: &[Indices::I64(&dup_r), Indices::I64(&dup_c)], values: &v };
                assert!(arr.write(&store, &[0, 0], &[13, 17], &input, Duplicates::Error).is_err());
                let after = densify(&arr.read(&store, &[DimSel::range(0, 13), DimSel::range(0, 17)], ReadFormat::Coo, None).unwrap());
                assert_eq!(after, before, "a failed write changed the array (shards: {shards:?})");
            }
            std::fs::remove_dir_all(&dir).ok();
        }
    }

    #[test]
    fn write_and_read_regions() {
        for shards in [None, Some(&[8u64, 10][..])] {
            let dir = std::env::temp_dir().join(format!("szsparse-{}-{}", std::process::id(), shards.is_some()));
            let store = FsStore::new(&dir, false);
            let arr = SparseArray::from_metadata_json(&meta(&[13, 17], &[4, 5], shards), None, "", EngineOptions::default(), Concurrency::default())
                .unwrap();
            // dense reference: value = r*100+c on a pattern
            let mut dense = vec![0i32; 13 * 17];
            let (mut rows, mut cols, mut vals) = (vec![], vec![], vec![]);
            for r in 0..13i64 {
                for c in 0..17i64 {
                    if (r * 7 + c * 3) % 5 == 0 {
                        rows.push(r);
                        cols.push(c);
                        vals.extend_from_slice(&((r * 100 + c) as i32).to_ne_bytes());
                        dense[(r * 17 + c) as usize] = (r * 100 + c) as i32;
                    }
                }
            }
            let coords = [Indices::I64(&rows), Indices::I64(&cols)];
            arr.write(&store, &[0, 0], &[13, 17], &SparseInput::Coo { coords: &coords, values: &vals }, Duplicates::Error).unwrap();
            let all = arr.read(&store, &[DimSel::range(0, 13), DimSel::range(0, 17)], ReadFormat::Coo, None).unwrap();
            check_canonical(&all);
            assert_eq!(densify(&all), dense);
            // stepped, listed (unsorted, repeated) selections
            let sel = [DimSel::List(vec![12, 3, 3, 0]), DimSel::Range { start: 1, step: 3, len: 5 }];
            let got = arr.read(&store, &sel, ReadFormat::Coo, None).unwrap();
            check_canonical(&got);
            let mut want = vec![];
            for &r in &[12u64, 3, 3, 0] {
                for k in 0..5u64 {
                    want.push(dense[(r * 17 + 1 + 3 * k) as usize]);
                }
            }
            assert_eq!(densify(&got), want);
            // CSR output
            let csr = arr.read(&store, &[DimSel::range(2, 9), DimSel::range(3, 11)], ReadFormat::Csr, None).unwrap();
            let ro = csr.row_offsets.clone().unwrap();
            assert_eq!(ro.len(), 10);
            for r in 0..9 {
                let mut row = vec![0i32; 11];
                for k in ro.get(r) as usize..ro.get(r + 1) as usize {
                    row[csr.coords.get(k) as usize] = i32::from_ne_bytes(csr.values[k * 4..k * 4 + 4].try_into().unwrap());
                }
                assert_eq!(row, dense[(r + 2) * 17 + 3..(r + 2) * 17 + 14].to_vec());
            }
            // Overwrite an inner box with CSR input containing duplicates (summed) and a zero.
            let indptr = [0i64, 3, 3];
            let indices = [1i64, 1, 2];
            let v: Vec<u8> = [5i32, 6, 0].iter().flat_map(|x| x.to_ne_bytes()).collect();
            arr.write(
                &store,
                &[5, 6],
                &[2, 4],
                &SparseInput::Compressed { axis: 0, indptr: Indices::I64(&indptr), indices: Indices::I64(&indices), values: &v },
                Duplicates::Sum,
            )
            .unwrap();
            for r in 5..7 {
                for c in 6..10 {
                    dense[r * 17 + c] = 0;
                }
            }
            dense[5 * 17 + 7] = 11;
            let all = arr.read(&store, &[DimSel::range(0, 13), DimSel::range(0, 17)], ReadFormat::Coo, None).unwrap();
            assert_eq!(densify(&all), dense);
            let (nnz, bytes) = arr.stats(&store, None).unwrap();
            assert_eq!(nnz as usize, dense.iter().filter(|&&x| x != 0).count());
            assert!(bytes > 0);
            // Errors: out of range, duplicates refused, nothing changed.
            let bad_r = [0i64, 99];
            let bad_c = [0i64, 0];
            let v2: Vec<u8> = [1i32, 2].iter().flat_map(|x| x.to_ne_bytes()).collect();
            let coords = [Indices::I64(&bad_r), Indices::I64(&bad_c)];
            assert!(arr.write(&store, &[0, 0], &[13, 17], &SparseInput::Coo { coords: &coords, values: &v2 }, Duplicates::Sum).is_err());
            let dup = [1i64, 1];
            let coords = [Indices::I64(&dup), Indices::I64(&dup)];
            assert!(arr.write(&store, &[0, 0], &[13, 17], &SparseInput::Coo { coords: &coords, values: &v2 }, Duplicates::Error).is_err());
            let all = arr.read(&store, &[DimSel::range(0, 13), DimSel::range(0, 17)], ReadFormat::Coo, None).unwrap();
            assert_eq!(densify(&all), dense);
            // Clearing everything deletes every chunk.
            let none: [i64; 0] = [];
            let coords = [Indices::I64(&none), Indices::I64(&none)];
            arr.write(&store, &[0, 0], &[13, 17], &SparseInput::Coo { coords: &coords, values: &[] }, Duplicates::Error).unwrap();
            assert_eq!(arr.stats(&store, None).unwrap(), (0, 0));
            std::fs::remove_dir_all(&dir).ok();
        }
    }
}
