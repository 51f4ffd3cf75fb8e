//! The `sharding_indexed` codec, implemented for partial reads and partial writes.
//!
//! A shard stores inner chunks back to back plus an index of `(offset, nbytes)` pairs, one per
//! inner chunk in C order (`u64::MAX` twice for a missing chunk). Reads fetch the index (cached
//! across calls, validated by the stored value's version), then only the inner chunks a selection
//! touches, merging nearby byte ranges into one request, and decode them in parallel straight into
//! the output. Writes re-encode only the inner chunks they touch and copy the stored bytes of all
//! others unchanged. Inner chunk codecs may themselves be sharded (nested sharding).
//!
//! Inner chunks are laid out in the shard in the order zarr-python writes them: Morton (Z) order
//! by default, or the `subchunk_write_order` that zarr-python >= 3.4 lets a sharding codec choose
//! (see [`WriteOrder`]). The order is not part of the stored metadata (readers use the index), so
//! the Python side passes it in the configuration the engine gets.
//!
//! [`ShardLayout`] is the codec-independent part (grid, index, fetching inner chunks, assembling a
//! shard) and is shared by dense arrays ([`ShardingPlan`]) and sparse arrays.

use std::sync::{Arc, OnceLock};

use zarrs::array::FillValue;
use zarrs::metadata::v3::MetadataV3;

use crate::engine::bytes_chain::{crc32c_append, crc32c_body};
use crate::engine::repr::{ArrayRepr, EngineOptions, codecs_from_json};
use crate::error::{Error, Result};
use crate::index_cache::IndexCache;
use crate::runtime::try_for_each;
use crate::store::{ByteRange, Encoded, ValueReader, Version};

const MISSING: u64 = u64::MAX;

#[derive(Debug)]
enum IndexPlan {
    /// `bytes` (little endian), optionally followed by `crc32c`.
    Native { crc: bool },
    /// Any other fixed-size index codec chain.
    General(Box<dyn IndexCodec>),
}

/// A codec chain for shard indexes other than the native `bytes` (+ `crc32c`) one: it encodes
/// and decodes the whole index (`u64` entries in native byte order). The engine's codec plans
/// implement it; [`ShardLayout::new`] gets a constructor for one, so this module does not depend
/// on the codec module (which depends on it for sharded chunks).
pub trait IndexCodec: std::fmt::Debug + Send + Sync {
    /// Size of the encoded index, if fixed (it must be).
    fn fixed_encoded_size(&self) -> Option<u64>;
    /// Decode a stored index into native-order `u64` bytes.
    ///
    /// # Errors
    /// Returns [`Error::Decode`] for corrupt bytes.
    fn decode_index(&self, bytes: &[u8]) -> Result<Vec<u8>>;
    /// Encode native-order `u64` bytes.
    ///
    /// # Errors
    /// Returns [`Error::Encode`] if encoding fails.
    fn encode_index(&self, raw: Vec<u8>) -> Result<Vec<u8>>;
}

/// Builds the [`IndexCodec`] of an index codec chain for indexes of the given representation.
pub type IndexCodecBuilder = fn(&[MetadataV3], ArrayRepr, &EngineOptions) -> Result<Box<dyn IndexCodec>>;

/// Linear (C-order) index of grid coordinates.
#[must_use]
pub fn c_linear(coords: &[u64], grid: &[u64]) -> usize {
    let mut lin = 0u64;
    for (&c, &g) in coords.iter().zip(grid) {
        lin = lin * g + c;
    }
    #[allow(clippy::cast_possible_truncation)]
    {
        lin as usize
    }
}

/// Grid coordinates of a linear (C-order) index.
#[must_use]
pub fn c_coords(mut lin: u64, grid: &[u64]) -> Vec<u64> {
    let mut coords = vec![0; grid.len()];
    for d in (0..grid.len()).rev() {
        coords[d] = lin % grid[d];
        lin /= grid[d];
    }
    coords
}

/// The physical order of inner chunks in a shard written by the engine (zarr-python's
/// `subchunk_write_order`). Reads do not depend on it: they follow the shard index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WriteOrder {
    /// Z-order curve, zarr-python's default: the bits of the coordinates interleaved, the first
    /// dimension in the lowest bit of each level, dimensions that run out of bits skipped.
    #[default]
    Morton,
    /// C order (the last dimension varies fastest); zarr's `unordered` writes this too.
    Lexicographic,
    /// Fortran order (the first dimension varies fastest).
    Colexicographic,
}

impl WriteOrder {
    /// Parse zarr-python's name of an order (`morton`, `lexicographic`, `colexicographic`,
    /// `unordered`).
    ///
    /// # Errors
    /// Returns [`Error::InvalidMetadata`] for other names.
    pub fn parse(name: &str) -> Result<Self> {
        match name {
            "morton" => Ok(Self::Morton),
            "lexicographic" | "unordered" => Ok(Self::Lexicographic),
            "colexicographic" => Ok(Self::Colexicographic),
            other => Err(Error::InvalidMetadata(format!("sharding_indexed: unknown subchunk_write_order {other:?}"))),
        }
    }

    /// The C-order linear indices of a `grid`'s chunks in this order.
    #[must_use]
    pub fn permutation(self, grid: &[u64]) -> Vec<usize> {
        let n = usize::try_from(grid.iter().product::<u64>()).unwrap_or(0);
        let mut order: Vec<usize> = (0..n).collect();
        match self {
            Self::Lexicographic => {}
            Self::Colexicographic => {
                let reversed: Vec<u64> = grid.iter().rev().copied().collect();
                for (pos, slot) in order.iter_mut().enumerate() {
                    let mut coords = c_coords(pos as u64, &reversed);
                    coords.reverse();
                    *slot = c_linear(&coords, grid);
                }
            }
            Self::Morton => {
                let bits: Vec<u32> = grid.iter().map(|&g| u64::BITS - g.saturating_sub(1).leading_zeros()).collect();
                let max_bits = bits.iter().copied().max().unwrap_or(0);
                let code = |lin: usize| -> u128 {
                    let coords = c_coords(lin as u64, grid);
                    let (mut z, mut out) = (0u128, 0u32);
                    for bit in 0..max_bits {
                        for (dim, &c) in coords.iter().enumerate() {
                            if bit < bits[dim] {
                                z |= u128::from((c >> bit) & 1) << out;
                                out += 1;
                            }
                        }
                    }
                    z
                };
                order.sort_by_cached_key(|&lin| code(lin));
            }
        }
        order
    }
}

/// The layout of shards: their inner chunk grid and their index.
#[derive(Debug)]
pub struct ShardLayout {
    inner_shape: Vec<u64>,
    grid: Vec<u64>,
    n_inner: usize,
    write_order: WriteOrder,
    /// C-order linear indices of the inner chunks in `write_order` (built on the first write).
    write_permutation: OnceLock<Vec<usize>>,
    index: IndexPlan,
    index_at_start: bool,
    index_size: u64,
    options: EngineOptions,
}

impl ShardLayout {
    /// Parse a `sharding_indexed` configuration for shards of `shard_shape`; returns the layout
    /// and the inner chunks' codec metadata.
    ///
    /// # Errors
    /// Returns [`Error::InvalidMetadata`] for malformed configurations.
    pub fn new(meta: &MetadataV3, shard_shape: &[u64], options: &EngineOptions, index_codec: IndexCodecBuilder) -> Result<(Self, Vec<MetadataV3>)> {
        let bad = |m: &str| Error::InvalidMetadata(format!("sharding_indexed: {m}"));
        let cfg = meta.configuration().ok_or_else(|| bad("missing configuration"))?;
        let inner_shape: Vec<u64> =
            serde_json::from_value(cfg.get("chunk_shape").cloned().ok_or_else(|| bad("missing chunk_shape"))?).map_err(|e| bad(&e.to_string()))?;
        if inner_shape.len() != shard_shape.len() {
            return Err(bad("chunk_shape rank differs from the array rank"));
        }
        if inner_shape.iter().zip(shard_shape).any(|(&c, &s)| c == 0 || s % c != 0) {
            return Err(bad(&format!("inner chunk shape {inner_shape:?} does not divide the shard shape {shard_shape:?}")));
        }
        let grid: Vec<u64> = shard_shape.iter().zip(&inner_shape).map(|(&s, &c)| s / c).collect();
        let n_inner = usize::try_from(grid.iter().product::<u64>()).map_err(|_| bad("too many inner chunks"))?;
        let codecs = codecs_from_json(cfg.get("codecs").ok_or_else(|| bad("missing codecs"))?)?;
        let index_codecs = codecs_from_json(
            cfg.get("index_codecs").unwrap_or(&serde_json::json!([{"name": "bytes", "configuration": {"endian": "little"}}, {"name": "crc32c"}])),
        )?;
        let write_order = match cfg.get("subchunk_write_order") {
            None | Some(serde_json::Value::Null) => WriteOrder::default(),
            Some(v) => WriteOrder::parse(v.as_str().ok_or_else(|| bad("subchunk_write_order must be a string"))?)?,
        };
        let index_at_start = match cfg.get("index_location").and_then(|v| v.as_str()).unwrap_or("end") {
            "start" => true,
            "end" => false,
            other => return Err(bad(&format!("index_location {other:?}"))),
        };
        let native_bytes = |m: &MetadataV3| {
            m.name() == "bytes" && m.configuration().and_then(|c| c.get("endian")).and_then(|e| e.as_str()).is_none_or(|e| e == "little")
        };
        let (index, index_size) = match index_codecs.as_slice() {
            [b] if native_bytes(b) => (IndexPlan::Native { crc: false }, n_inner as u64 * 16),
            [b, c] if native_bytes(b) && c.name() == "crc32c" => (IndexPlan::Native { crc: true }, n_inner as u64 * 16 + 4),
            _ => {
                let mut index_shape = grid.clone();
                index_shape.push(2);
                let repr = ArrayRepr { shape: index_shape, data_type: zarrs::array::data_type::uint64(), fill_value: FillValue::from(MISSING) };
                let plan = index_codec(&index_codecs, repr, options)?;
                let size = plan.fixed_encoded_size().ok_or_else(|| bad("index codecs must produce a fixed-size encoding"))?;
                (IndexPlan::General(plan), size)
            }
        };
        let layout = Self {
            inner_shape,
            grid,
            n_inner,
            write_order,
            write_permutation: OnceLock::new(),
            index,
            index_at_start,
            index_size,
            options: options.clone(),
        };
        Ok((layout, codecs))
    }

    /// Inner chunk shape.
    #[must_use]
    pub fn inner_shape(&self) -> &[u64] {
        &self.inner_shape
    }

    /// Inner chunks per shard along each dimension.
    #[must_use]
    pub fn grid(&self) -> &[u64] {
        &self.grid
    }

    /// Number of inner chunks per shard.
    #[must_use]
    pub fn n_inner(&self) -> usize {
        self.n_inner
    }

    /// Linear index of inner chunk `coords`.
    #[must_use]
    pub fn linear(&self, coords: &[u64]) -> usize {
        c_linear(coords, &self.grid)
    }

    fn decode_index(&self, bytes: &[u8], key: &str, shard_len: u64) -> Result<Vec<u64>> {
        if bytes.len() as u64 != self.index_size {
            return Err(Error::decode(key, "shard index has the wrong size"));
        }
        let entries: Vec<u64> = match &self.index {
            IndexPlan::Native { crc } => {
                let body = if *crc {
                    crc32c_body(bytes, self.options.validate_checksums)
                        .map_err(|_| Error::decode(key, "shard index checksum mismatch (corrupt shard?)"))?
                } else {
                    bytes
                };
                body.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().unwrap_or_default())).collect()
            }
            IndexPlan::General(plan) => {
                let decoded = plan.decode_index(bytes).map_err(|e| e.with_key(key))?;
                decoded.chunks_exact(8).map(|c| u64::from_ne_bytes(c.try_into().unwrap_or_default())).collect()
            }
        };
        for pair in entries.chunks_exact(2) {
            let (off, len) = (pair[0], pair[1]);
            if off == MISSING && len == MISSING {
                continue;
            }
            if off.checked_add(len).is_none_or(|end| end > shard_len) {
                return Err(Error::decode(key, format!("shard index points outside the shard ({off}+{len} > {shard_len})")));
            }
        }
        Ok(entries)
    }

    fn encode_index(&self, entries: &[u64]) -> Result<Vec<u8>> {
        match &self.index {
            IndexPlan::Native { crc } => {
                let mut v: Vec<u8> = Vec::with_capacity(entries.len() * 8 + 4);
                for e in entries {
                    v.extend_from_slice(&e.to_le_bytes());
                }
                if *crc {
                    crc32c_append(&mut v);
                }
                Ok(v)
            }
            IndexPlan::General(plan) => {
                let raw: Vec<u8> = entries.iter().flat_map(|e| e.to_ne_bytes()).collect();
                plan.encode_index(raw)
            }
        }
    }

    /// Where a shard's index lies: the range to read first when opening a shard.
    #[must_use]
    pub fn index_byte_range(&self) -> ByteRange {
        if self.index_at_start { ByteRange::Range { offset: 0, len: self.index_size } } else { ByteRange::Suffix(self.index_size) }
    }

    fn index_range(&self, shard_len: u64) -> (u64, u64) {
        if self.index_at_start { (0, self.index_size) } else { (shard_len - self.index_size, self.index_size) }
    }

    fn check_len(&self, key: &str, len: u64) -> Result<()> {
        if len < self.index_size {
            return Err(Error::decode(key, format!("shard of {len} bytes is smaller than its index ({} bytes)", self.index_size)));
        }
        Ok(())
    }

    /// The index of a shard held in memory.
    ///
    /// # Errors
    /// Returns [`Error::Decode`] if the shard is truncated or its index corrupt.
    pub fn index_from_bytes(&self, key: &str, bytes: &[u8]) -> Result<Vec<u64>> {
        let len = bytes.len() as u64;
        self.check_len(key, len)?;
        let (off, n) = self.index_range(len);
        #[allow(clippy::cast_possible_truncation)]
        self.decode_index(&bytes[off as usize..(off + n) as usize], key, len)
    }

    /// The index of a stored shard, read with one ranged request (or taken from `cache`).
    ///
    /// # Errors
    /// Returns [`Error::Decode`] if the shard is truncated or its index corrupt.
    pub fn load_index(&self, value: &dyn ValueReader, cache: Option<&IndexCache>) -> Result<Arc<Vec<u64>>> {
        let len = value.size();
        self.check_len(value.key(), len)?;
        let cache_key = value.version().map(|v| (value.key().to_string(), v.clone(), self.index_size, self.index_at_start));
        if let (Some(cache), Some(k)) = (cache, &cache_key)
            && let Some(hit) = cache.get(k)
        {
            return Ok(hit);
        }
        let bytes = value.read(self.index_byte_range())?;
        let index = Arc::new(self.decode_index(&bytes, value.key(), len)?);
        if let (Some(cache), Some(k)) = (cache, cache_key) {
            cache.insert(k, index.clone());
        }
        Ok(index)
    }

    /// The cached index of the shard `key` at `version`, if the cache holds it.
    #[must_use]
    pub fn cached_index(&self, cache: &IndexCache, key: &str, version: &Version) -> Option<Arc<Vec<u64>>> {
        cache.get(&(key.to_string(), version.clone(), self.index_size, self.index_at_start))
    }

    /// Byte range of inner chunk `lin`, or `None` if it is missing.
    #[must_use]
    pub fn entry(index: &[u64], lin: usize) -> Option<(u64, u64)> {
        let (off, n) = (index[2 * lin], index[2 * lin + 1]);
        (!(off == MISSING && n == MISSING)).then_some((off, n))
    }

    /// Call `f(item, bytes)` for every `(lin, item)` in `wanted` whose inner chunk is stored, with
    /// its encoded bytes, and `missing(item)` for the others. Bytes come from `whole` (the entire
    /// shard, when the caller read it) or from ranged reads of `value`, nearby ranges merged into
    /// one request. Runs in parallel inside a pool.
    ///
    /// # Errors
    /// The first error of a read or of `f` / `missing`.
    pub fn for_each_inner<T: Sync>(
        &self,
        value: &dyn ValueReader,
        whole: Option<&[u8]>,
        index: &[u64],
        wanted: &[(usize, T)],
        f: impl Fn(&T, &[u8]) -> Result<()> + Sync + Send,
        missing: impl Fn(&T) -> Result<()>,
    ) -> Result<()> {
        let mut present: Vec<(u64, u64, &T)> = Vec::with_capacity(wanted.len());
        for (lin, item) in wanted {
            match Self::entry(index, *lin) {
                Some((off, n)) => present.push((off, n, item)),
                None => missing(item)?,
            }
        }
        if let Some(bytes) = whole {
            #[allow(clippy::cast_possible_truncation)]
            return try_for_each(&present, |(off, n, item)| f(item, &bytes[*off as usize..(*off + *n) as usize]));
        }
        present.sort_by_key(|p| p.0);
        let spans: Vec<(u64, u64)> = present.iter().map(|(off, n, _)| (*off, *n)).collect();
        let groups = self.coalesce(&spans);
        try_for_each(&groups, |(start, len, members)| {
            let bytes = value.read_range(*start, *len)?;
            #[allow(clippy::cast_possible_truncation)]
            try_for_each(&present[members.clone()], |&(off, n, item)| {
                let rel = (off - start) as usize;
                f(item, &bytes[rel..rel + n as usize])
            })
        })
    }

    /// Merge the byte ranges `spans` (sorted by offset) into the requests that read them: nearby
    /// ranges (gaps up to `coalesce_max_gap` bytes, requests up to `coalesce_max_bytes`) become
    /// one. Returns `(start, len, members)`, `members` being indexes into `spans`.
    #[must_use]
    pub fn coalesce(&self, spans: &[(u64, u64)]) -> Vec<(u64, u64, std::ops::Range<usize>)> {
        let mut groups: Vec<(u64, u64, std::ops::Range<usize>)> = Vec::new();
        for (i, &(off, n)) in spans.iter().enumerate() {
            if let Some(g) = groups.last_mut() {
                let end = g.0 + g.1;
                if off >= end && off - end <= self.options.coalesce_max_gap && off + n - g.0 <= self.options.coalesce_max_bytes {
                    g.1 = off + n - g.0;
                    g.2.end = i + 1;
                    continue;
                }
            }
            groups.push((off, n, i..i + 1));
        }
        groups
    }

    /// The byte ranges to read for the inner chunks `lins` of a shard with `index` (missing inner
    /// chunks need none), coalesced as [`for_each_inner`](Self::for_each_inner) reads them.
    #[must_use]
    pub fn inner_ranges(&self, index: &[u64], lins: impl IntoIterator<Item = usize>) -> Vec<(u64, u64)> {
        let mut spans: Vec<(u64, u64)> = lins.into_iter().filter_map(|lin| Self::entry(index, lin)).collect();
        spans.sort_unstable();
        self.coalesce(&spans).into_iter().map(|(start, len, _)| (start, len)).collect()
    }

    /// The pieces of a shard holding `chunks` (indexed by linear inner chunk index).
    ///
    /// # Errors
    /// Returns an error if the index cannot be encoded.
    pub fn assemble(&self, mut chunks: Vec<Option<Vec<u8>>>) -> Result<Encoded> {
        let base = if self.index_at_start { self.index_size } else { 0 };
        let mut entries = vec![MISSING; 2 * self.n_inner];
        let mut pos = base;
        let mut parts = Vec::with_capacity(chunks.len() + 1);
        for &lin in self.write_permutation.get_or_init(|| self.write_order.permutation(&self.grid)) {
            if let Some(c) = chunks.get_mut(lin).and_then(Option::take) {
                entries[2 * lin] = pos;
                entries[2 * lin + 1] = c.len() as u64;
                pos += c.len() as u64;
                parts.push(c);
            }
        }
        let index = self.encode_index(&entries)?;
        if self.index_at_start {
            parts.insert(0, index);
        } else {
            parts.push(index);
        }
        Ok(Encoded::from_parts(parts))
    }

    /// Rebuild a shard: inner chunks in `changes` are replaced (`None` = removed), all others
    /// keep their stored bytes from `old` (the current shard and its decoded index, if any).
    /// Returns `None` if the shard ends up without any inner chunk.
    ///
    /// # Errors
    /// Returns an error if the index cannot be encoded.
    pub fn rebuild(&self, old: Option<(&[u8], &[u64])>, changes: Vec<(usize, Option<Vec<u8>>)>) -> Result<Option<Encoded>> {
        let mut chunks: Vec<Option<Vec<u8>>> = vec![None; self.n_inner];
        let mut touched = vec![false; self.n_inner];
        for (lin, new) in changes {
            touched[lin] = true;
            chunks[lin] = new;
        }
        if let Some((bytes, index)) = old {
            for (lin, slot) in chunks.iter_mut().enumerate() {
                if !touched[lin]
                    && let Some((off, n)) = Self::entry(index, lin)
                {
                    #[allow(clippy::cast_possible_truncation)]
                    {
                        *slot = Some(bytes[off as usize..(off + n) as usize].to_vec());
                    }
                }
            }
        }
        if chunks.iter().all(Option::is_none) {
            return Ok(None);
        }
        self.assemble(chunks).map(Some)
    }

    /// A shard without any inner chunk (only its index).
    ///
    /// # Errors
    /// Returns an error if the index cannot be encoded.
    pub fn empty_shard(&self) -> Result<Vec<u8>> {
        self.encode_index(&vec![MISSING; 2 * self.n_inner])
    }
}
