//! Sparse arrays: reading and writing regions as coordinates and values, never densifying.
//!
//! A [`SparseArray`] is a zarr v3 array whose chunks (or the inner chunks of its shards) use the
//! `sparsezarr.sparse` codec. [`SparseArray::read`] gathers the entries of a region (slices with
//! steps, integers, integer arrays in any order) into one coordinate list in canonical C order;
//! [`SparseArray::write`] scatters entries into the chunks of a box, merging with what is stored
//! around it. Chunks are decoded and encoded in parallel on the engine's pool.

use zarrs::array::DataType;

use super::chunk::{CODEC_NAME, HEADER_LEN, RawChunk, SparseChunk, SparseChunkCodec, SparseCodecConfig, Width};
use crate::dtype::ElemType;
pub use crate::dtype::{IndexVec, Indices};
use crate::engine::codec::{Encoded, EngineOptions, index_codec};
use crate::engine::selection::DimSel;
use crate::engine::shard_index::{ShardLayout, c_coords};
use crate::engine::{Concurrency, MAX_WRITE_ATTEMPTS};
use crate::error::{Error, Result};
use crate::index_cache::IndexCache;
use crate::metadata::ArrayMeta;
pub use crate::metadata::ChunkKeys;
use crate::runtime::{in_pool, run_in_pool, try_for_each, try_for_each_owned, try_map, try_map_owned};
use crate::store::{ByteRange, Prefetched, Store, ValueReader, WriteMode};
use crate::with_width;

mod maps;
mod read;
mod read2d;
mod write;

use maps::{DimMap, LocalMap, Mapped};

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
        let meta = ArrayMeta::parse(json, prefix)?;
        if meta.zarr_format != 3 {
            return Err(Error::Unsupported("sparse arrays are zarr v3 arrays".into()));
        }
        let outer = meta.chunk_shape.clone();
        let shape = meta.shape.clone();
        if shape.is_empty() {
            return Err(Error::Unsupported("0-dimensional sparse arrays".into()));
        }
        let data_type = meta.data_type.clone();
        let elem = ElemType::from_data_type(&data_type)?;
        let fill = fill.unwrap_or_else(|| meta.fill_value.as_ne_bytes().to_vec());
        let not_sparse =
            || Error::InvalidMetadata(format!("not a sparse array: codecs must be [{CODEC_NAME}] or [sharding_indexed with codecs [{CODEC_NAME}]]"));
        let (layout, sparse_meta, inner) = match meta.codecs.as_slice() {
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
        let keys = meta.keys;
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
}

/// Element strides of a C-ordered array of `shape`.
#[allow(clippy::cast_sign_loss)]
fn c_strides(shape: &[u64]) -> Vec<u64> {
    crate::engine::strided::c_strides(shape, 1).into_iter().map(|s| s as u64).collect()
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

/// The inner chunks of the shard at outer grid position `og` that a read touches: their linear
/// index in the shard and their coordinates in its inner grid. `inner_per_dim` lists the touched
/// inner chunks per dimension in the array's global inner grid.
fn wanted_inner(layout: &ShardLayout, inner_per_dim: &[Vec<u64>], og: &[u64]) -> Vec<(usize, Vec<u64>)> {
    let grid = layout.grid();
    let ranges: Vec<Vec<u64>> =
        inner_per_dim.iter().zip(og).zip(grid).map(|((t, &o), &g)| t.iter().copied().filter(|&i| i / g == o).map(|i| i % g).collect()).collect();
    grid_iter(&ranges).into_iter().map(|c| (layout.linear(&c), c)).collect()
}

/// Whether to read a whole shard rather than its touched inner chunks: when most of them are
/// wanted, or when the shard is in memory already (no I/O either way).
fn read_whole(layout: &ShardLayout, wanted: usize, value: &dyn ValueReader) -> bool {
    wanted * 2 > layout.n_inner() || value.resident()
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
