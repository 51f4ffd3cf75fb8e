//! The `sharding_indexed` codec, implemented for partial reads and partial writes.
//!
//! A shard stores inner chunks back to back plus an index of `(offset, nbytes)` pairs, one per
//! inner chunk in C order (`u64::MAX` twice for a missing chunk). Reads fetch the index (cached
//! across calls, validated by the file's fingerprint), then only the inner chunks a selection
//! touches, merging nearby byte ranges into one request, and decode them in parallel straight into
//! the output. Writes re-encode only the inner chunks they touch and copy the stored bytes of all
//! others unchanged. Inner chunk codecs may themselves be sharded (nested sharding).

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use zarrs::array::FillValue;
use zarrs::metadata::v3::MetadataV3;

use crate::codec::{ArrayRepr, CodecPlan, Encoded, EngineOptions, ValueSource, codecs_from_json};
use crate::error::{Error, Result};
use crate::selection::Selection;
use crate::store::{BytesValue, Fingerprint, ValueReader};
use crate::strided::{RawView, byteswap, fill_selection};

const MISSING: u64 = u64::MAX;

#[derive(Debug)]
enum IndexPlan {
    /// `bytes` (little endian), optionally followed by `crc32c`.
    Native { crc: bool },
    /// Any other fixed-size index codec chain.
    General(Box<CodecPlan>),
}

/// A `sharding_indexed` codec bound to one shard representation.
#[derive(Debug)]
pub struct ShardingPlan {
    shard: ArrayRepr,
    inner_shape: Vec<u64>,
    grid: Vec<u64>,
    n_inner: usize,
    inner: CodecPlan,
    index: IndexPlan,
    index_at_start: bool,
    index_size: u64,
    options: EngineOptions,
}

fn c_linear(coords: &[u64], grid: &[u64]) -> usize {
    let mut lin = 0u64;
    for (&c, &g) in coords.iter().zip(grid) {
        lin = lin * g + c;
    }
    #[allow(clippy::cast_possible_truncation)]
    {
        lin as usize
    }
}

fn c_coords(mut lin: u64, grid: &[u64]) -> Vec<u64> {
    let mut coords = vec![0; grid.len()];
    for d in (0..grid.len()).rev() {
        coords[d] = lin % grid[d];
        lin /= grid[d];
    }
    coords
}

impl ShardingPlan {
    /// Build from `sharding_indexed` metadata for shards of `shard`.
    ///
    /// # Errors
    /// Returns [`Error::InvalidMetadata`] for malformed configurations and
    /// [`Error::Unsupported`] for inner codecs the engine cannot run.
    pub fn new(meta: &MetadataV3, shard: ArrayRepr, options: &EngineOptions) -> Result<Self> {
        let bad = |m: &str| Error::InvalidMetadata(format!("sharding_indexed: {m}"));
        let cfg = meta.configuration().ok_or_else(|| bad("missing configuration"))?;
        let inner_shape: Vec<u64> = serde_json::from_value(cfg.get("chunk_shape").cloned().ok_or_else(|| bad("missing chunk_shape"))?)
            .map_err(|e| bad(&e.to_string()))?;
        if inner_shape.len() != shard.shape.len() {
            return Err(bad("chunk_shape rank differs from the array rank"));
        }
        if inner_shape.iter().zip(&shard.shape).any(|(&c, &s)| c == 0 || s % c != 0) {
            return Err(bad(&format!("inner chunk shape {inner_shape:?} does not divide the shard shape {:?}", shard.shape)));
        }
        let grid: Vec<u64> = shard.shape.iter().zip(&inner_shape).map(|(&s, &c)| s / c).collect();
        let n_inner = usize::try_from(grid.iter().product::<u64>()).map_err(|_| bad("too many inner chunks"))?;
        let codecs = codecs_from_json(cfg.get("codecs").ok_or_else(|| bad("missing codecs"))?)?;
        let index_codecs = codecs_from_json(
            cfg.get("index_codecs").unwrap_or(&serde_json::json!([{"name": "bytes", "configuration": {"endian": "little"}}, {"name": "crc32c"}])),
        )?;
        let index_at_start = match cfg.get("index_location").and_then(|v| v.as_str()).unwrap_or("end") {
            "start" => true,
            "end" => false,
            other => return Err(bad(&format!("index_location {other:?}"))),
        };
        let inner_repr = ArrayRepr { shape: inner_shape.clone(), data_type: shard.data_type.clone(), fill_value: shard.fill_value.clone() };
        let inner = CodecPlan::new(&codecs, inner_repr, options)?;
        let native_bytes = |m: &MetadataV3| {
            m.name() == "bytes"
                && m.configuration().and_then(|c| c.get("endian")).and_then(|e| e.as_str()).is_none_or(|e| e == "little")
        };
        let (index, index_size) = match index_codecs.as_slice() {
            [b] if native_bytes(b) => (IndexPlan::Native { crc: false }, n_inner as u64 * 16),
            [b, c] if native_bytes(b) && c.name() == "crc32c" => (IndexPlan::Native { crc: true }, n_inner as u64 * 16 + 4),
            _ => {
                let mut index_shape = grid.clone();
                index_shape.push(2);
                let repr = ArrayRepr {
                    shape: index_shape,
                    data_type: zarrs::array::data_type::uint64(),
                    fill_value: FillValue::from(MISSING),
                };
                let plan = CodecPlan::new(&index_codecs, repr, options)?;
                let size = plan.fixed_encoded_size().ok_or_else(|| bad("index codecs must produce a fixed-size encoding"))?;
                (IndexPlan::General(Box::new(plan)), size)
            }
        };
        Ok(Self { shard, inner_shape, grid, n_inner, inner, index, index_at_start, index_size, options: options.clone() })
    }

    /// Inner chunk shape.
    #[must_use]
    pub fn inner_shape(&self) -> &[u64] {
        &self.inner_shape
    }

    /// The inner chunks' codec plan.
    #[must_use]
    pub fn inner(&self) -> &CodecPlan {
        &self.inner
    }

    fn decode_index(&self, bytes: &[u8], key: &str, shard_len: u64) -> Result<Vec<u64>> {
        if bytes.len() as u64 != self.index_size {
            return Err(Error::decode(key, "shard index has the wrong size"));
        }
        let entries: Vec<u64> = match &self.index {
            IndexPlan::Native { crc } => {
                let body = if *crc {
                    let n = bytes.len() - 4;
                    if self.options.validate_checksums {
                        let stored = u32::from_le_bytes(bytes[n..].try_into().unwrap_or_default());
                        if stored != crc32c::crc32c(&bytes[..n]) {
                            return Err(Error::decode(key, "shard index checksum mismatch (corrupt shard?)"));
                        }
                    }
                    &bytes[..n]
                } else {
                    bytes
                };
                body.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().unwrap_or_default())).collect()
            }
            IndexPlan::General(plan) => {
                let decoded = plan.decode(Cow::Borrowed(bytes)).map_err(|e| e.with_key(key))?;
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
                    let c = crc32c::crc32c(&v);
                    v.extend_from_slice(&c.to_le_bytes());
                }
                Ok(v)
            }
            IndexPlan::General(plan) => {
                let raw: Vec<u8> = entries.iter().flat_map(|e| e.to_ne_bytes()).collect();
                plan.encode(Cow::Owned(raw))
            }
        }
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

    fn index_from_bytes(&self, key: &str, bytes: &[u8]) -> Result<Vec<u64>> {
        let len = bytes.len() as u64;
        self.check_len(key, len)?;
        let (off, n) = self.index_range(len);
        #[allow(clippy::cast_possible_truncation)]
        self.decode_index(&bytes[off as usize..(off + n) as usize], key, len)
    }

    fn load_index(&self, value: &dyn ValueReader, cache: Option<&IndexCache>) -> Result<Arc<Vec<u64>>> {
        let len = value.size();
        self.check_len(value.key(), len)?;
        let cache_key = value.fingerprint().map(|fp| (fp, self.index_size, self.index_at_start));
        if let (Some(cache), Some(k)) = (cache, cache_key)
            && let Some(hit) = cache.get(&k)
        {
            return Ok(hit);
        }
        let (off, n) = self.index_range(len);
        let bytes = value.read_range(off, n)?;
        let index = Arc::new(self.decode_index(&bytes, value.key(), len)?);
        if let (Some(cache), Some(k)) = (cache, cache_key) {
            cache.insert(k, index.clone());
        }
        Ok(index)
    }

    /// Read the elements `sel` names from the shard `value` into `out`.
    ///
    /// # Errors
    /// Returns an error if the shard is corrupt or the selection does not fit.
    pub fn read_into(&self, value: &dyn ValueReader, sel: &Selection, out: &RawView, swap: usize, cache: Option<&IndexCache>) -> Result<()> {
        let parts = sel.partition(&self.inner_shape);
        if parts.is_empty() {
            return Ok(());
        }
        let mut fill = self.shard.fill_value.as_ne_bytes().to_vec();
        byteswap(&mut fill, swap);
        let key = value.key();
        // Everything (or nearly) is needed, or the value is in memory anyway: take it whole.
        let whole: Option<Cow<'_, [u8]>> = if parts.len() * 2 > self.n_inner || value.fingerprint().is_none() {
            Some(value.read_all()?)
        } else {
            None
        };
        let index: Arc<Vec<u64>> = match &whole {
            Some(bytes) => Arc::new(self.index_from_bytes(key, bytes)?),
            None => self.load_index(value, cache)?,
        };
        let mut missing = Vec::new();
        let mut present: Vec<(u64, u64, Selection)> = Vec::with_capacity(parts.len());
        for (coords, sub) in parts {
            let lin = c_linear(&coords, &self.grid);
            let (off, n) = (index[2 * lin], index[2 * lin + 1]);
            if off == MISSING && n == MISSING {
                missing.push(sub);
            } else {
                present.push((off, n, sub));
            }
        }
        for sub in &missing {
            fill_selection(out, sub, &fill, false)?;
        }
        let decode_one = |bytes: &[u8], sub: &Selection| -> Result<()> {
            let v = BytesValue::new(key, bytes);
            self.inner.read_into(&v, sub, out, swap, None).map_err(|e| e.with_key(key))
        };
        if let Some(bytes) = &whole {
            #[allow(clippy::cast_possible_truncation)]
            return crate::runtime::try_for_each(&present, |(off, n, sub)| decode_one(&bytes[*off as usize..(*off + *n) as usize], sub));
        }
        // Coalesce byte ranges: sort by offset, merge when the gap is small.
        present.sort_by_key(|p| p.0);
        let mut groups: Vec<(u64, u64, Vec<usize>)> = Vec::new();
        for (i, (off, n, _)) in present.iter().enumerate() {
            if let Some(g) = groups.last_mut() {
                let end = g.0 + g.1;
                if *off >= end && off - end <= self.options.coalesce_max_gap && off + n - g.0 <= self.options.coalesce_max_bytes {
                    g.1 = off + n - g.0;
                    g.2.push(i);
                    continue;
                }
            }
            groups.push((*off, *n, vec![i]));
        }
        crate::runtime::try_for_each(&groups, |(start, len, members)| {
            let bytes = value.read_range(*start, *len)?;
            #[allow(clippy::cast_possible_truncation)]
            crate::runtime::try_for_each(members, |&i| {
                let (off, n, sub) = &present[i];
                let rel = (off - start) as usize;
                decode_one(&bytes[rel..rel + *n as usize], sub)
            })
        })
    }

    /// The new stored bytes of a shard after writing `src` into the elements `sel` names, or
    /// `None` if the shard ends up without any inner chunk (it should be deleted).
    ///
    /// Inner chunks the selection does not touch keep their stored bytes; only touched inner
    /// chunks are decoded (if partially written) and re-encoded.
    ///
    /// # Errors
    /// Returns an error if the existing shard is corrupt or encoding fails.
    pub fn write_from(&self, existing: Option<&dyn ValueReader>, sel: &Selection, src: &ValueSource<'_>, write_empty: bool) -> Result<Option<Encoded>> {
        let parts = sel.partition(&self.inner_shape);
        let covers = sel.covers(&self.shard.shape);
        let old_bytes: Option<Cow<'_, [u8]>> = match existing {
            Some(v) if !covers => Some(v.read_all()?),
            _ => None,
        };
        let key = existing.map_or("", |v| v.key());
        let old_index = match &old_bytes {
            Some(b) => Some(self.index_from_bytes(key, b)?),
            None => None,
        };
        let old_chunk = |lin: usize| -> Option<&[u8]> {
            let (b, idx) = (old_bytes.as_deref()?, old_index.as_ref()?);
            let (off, n) = (idx[2 * lin], idx[2 * lin + 1]);
            #[allow(clippy::cast_possible_truncation)]
            (off != MISSING).then(|| &b[off as usize..(off + n) as usize])
        };
        let updated: Vec<(usize, Option<Encoded>)> = crate::runtime::try_map(&parts, |(coords, sub)| {
                let lin = c_linear(coords, &self.grid);
                let prev = if sub.covers(&self.inner_shape) { None } else { old_chunk(lin) };
                let prev_value = prev.map(|b| BytesValue::new(key, b));
                let new = self
                    .inner
                    .write_from(prev_value.as_ref().map(|v| v as &dyn ValueReader), sub, src, write_empty)
                    .map_err(|e| e.with_key(key))?;
                Ok((lin, new))
            })?;
        let mut new_chunks: Vec<Option<Vec<u8>>> = vec![None; self.n_inner];
        let mut touched = vec![false; self.n_inner];
        for (lin, new) in updated {
            touched[lin] = true;
            new_chunks[lin] = new.map(Encoded::into_vec);
        }
        for (lin, slot) in new_chunks.iter_mut().enumerate() {
            if !touched[lin] {
                *slot = old_chunk(lin).map(<[u8]>::to_vec);
            }
        }
        if new_chunks.iter().all(Option::is_none) {
            return Ok(None);
        }
        self.assemble(new_chunks).map(Some)
    }

    /// The pieces of a shard: index and inner chunks in C order.
    fn assemble(&self, chunks: Vec<Option<Vec<u8>>>) -> Result<Encoded> {
        let base = if self.index_at_start { self.index_size } else { 0 };
        let mut entries = vec![MISSING; 2 * self.n_inner];
        let mut pos = base;
        for (lin, c) in chunks.iter().enumerate() {
            if let Some(c) = c {
                entries[2 * lin] = pos;
                entries[2 * lin + 1] = c.len() as u64;
                pos += c.len() as u64;
            }
        }
        let index = self.encode_index(&entries)?;
        let mut parts = Vec::with_capacity(chunks.len() + 1);
        parts.extend(chunks.into_iter().flatten());
        if self.index_at_start {
            parts.insert(0, index);
        } else {
            parts.push(index);
        }
        Ok(Encoded::from_parts(parts))
    }

    /// A shard without any inner chunk (only its index).
    ///
    /// # Errors
    /// Returns an error if the index cannot be encoded.
    pub fn empty_shard(&self) -> Result<Vec<u8>> {
        self.encode_index(&vec![MISSING; 2 * self.n_inner])
    }

    /// Grid coordinates of inner chunk `lin` (C order).
    #[must_use]
    pub fn inner_coords(&self, lin: u64) -> Vec<u64> {
        c_coords(lin, &self.grid)
    }
}

type CacheKey = (Fingerprint, u64, bool);

/// A cache of decoded shard indexes, keyed by the stored shard's fingerprint (so a changed or
/// rewritten shard is never served a stale index), bounded in bytes.
pub struct IndexCache {
    state: Mutex<CacheState>,
}

struct CacheState {
    map: HashMap<CacheKey, (Arc<Vec<u64>>, u64)>,
    bytes: usize,
    budget: usize,
    tick: u64,
}

impl IndexCache {
    /// A cache holding at most `budget` bytes of indexes (0 disables caching).
    #[must_use]
    pub fn new(budget: usize) -> Self {
        Self { state: Mutex::new(CacheState { map: HashMap::new(), bytes: 0, budget, tick: 0 }) }
    }

    /// Change the budget (0 disables caching and empties the cache).
    pub fn set_budget(&self, budget: usize) {
        let mut s = self.lock();
        s.budget = budget;
        if budget == 0 {
            s.map.clear();
            s.bytes = 0;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CacheState> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn get(&self, key: &CacheKey) -> Option<Arc<Vec<u64>>> {
        let mut s = self.lock();
        s.tick += 1;
        let tick = s.tick;
        s.map.get_mut(key).map(|e| {
            e.1 = tick;
            e.0.clone()
        })
    }

    fn insert(&self, key: CacheKey, value: Arc<Vec<u64>>) {
        let mut s = self.lock();
        let size = value.len() * 8 + 64;
        if size > s.budget / 4 {
            return;
        }
        s.tick += 1;
        let tick = s.tick;
        if let Some(old) = s.map.insert(key, (value, tick)) {
            s.bytes -= old.0.len() * 8 + 64;
        }
        s.bytes += size;
        if s.bytes > s.budget {
            // Evict the least recently used half.
            let mut ticks: Vec<u64> = s.map.values().map(|e| e.1).collect();
            ticks.sort_unstable();
            let cutoff = ticks[ticks.len() / 2];
            s.map.retain(|_, e| e.1 > cutoff);
            s.bytes = s.map.values().map(|e| e.0.len() * 8 + 64).sum();
        }
    }

    /// Number of cached indexes.
    #[must_use]
    pub fn len(&self) -> usize {
        self.lock().map.len()
    }

    /// Whether the cache is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::codecs_from_json;
    use crate::selection::DimSel;

    fn plan(inner: &str, loc: &str) -> CodecPlan {
        let json = format!(
            r#"[{{"name":"sharding_indexed","configuration":{{"chunk_shape":[2,3],"codecs":{inner},"index_codecs":[{{"name":"bytes","configuration":{{"endian":"little"}}}},{{"name":"crc32c"}}],"index_location":"{loc}"}}}}]"#
        );
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        let repr = ArrayRepr { shape: vec![4, 6], data_type: zarrs::array::data_type::uint16(), fill_value: FillValue::from(7u16) };
        CodecPlan::new(&codecs_from_json(&v).unwrap(), repr, &EngineOptions::default()).unwrap()
    }

    fn as_bytes(v: &[u16]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_ne_bytes()).collect()
    }

    #[test]
    fn write_read_partial() {
        for loc in ["start", "end"] {
            for inner in [
                r#"[{"name":"bytes","configuration":{"endian":"little"}},{"name":"zstd","configuration":{"level":1,"checksum":false}}]"#,
                r#"[{"name":"sharding_indexed","configuration":{"chunk_shape":[1,3],"codecs":[{"name":"bytes","configuration":{"endian":"little"}}]}}]"#,
            ] {
                let p = plan(inner, loc);
                let full: Vec<u16> = (0..24).collect();
                let full_b = as_bytes(&full);
                let view = RawView::c_order_const(&full_b, &[4, 6], 2);
                let sel = Selection::whole(&[4, 6], &[0, 0]);
                let shard = p.write_from(None, &sel, &ValueSource::Array { view: &view, swap: 0 }, false).unwrap().unwrap().into_vec();
                // Partial write of one element, the rest must be unchanged.
                let one = Selection::Orthogonal { chunk: vec![DimSel::range(3, 1), DimSel::range(5, 1)], out: vec![None, None] };
                let shard2 = p
                    .write_from(Some(&BytesValue::new("k", &shard)), &one, &ValueSource::Scalar(&99u16.to_ne_bytes()), false)
                    .unwrap()
                    .unwrap()
                    .into_vec();
                let mut got = vec![0u8; 48];
                let out = RawView::c_order(&mut got, &[4, 6], 2);
                p.read_into(&BytesValue::new("k", &shard2), &sel, &out, 0, None).unwrap();
                let mut want = full.clone();
                want[23] = 99;
                assert_eq!(got, as_bytes(&want));
                // All-fill write deletes the shard.
                let gone = p.write_from(None, &sel, &ValueSource::Scalar(&7u16.to_ne_bytes()), false).unwrap();
                assert!(gone.is_none());
            }
        }
    }

    #[test]
    fn corrupt_shard_is_an_error() {
        let p = plan(r#"[{"name":"bytes","configuration":{"endian":"little"}}]"#, "end");
        let sel = Selection::whole(&[4, 6], &[0, 0]);
        let mut got = vec![0u8; 48];
        let out = RawView::c_order(&mut got, &[4, 6], 2);
        assert!(matches!(p.read_into(&BytesValue::new("k", &[1, 2, 3]), &sel, &out, 0, None), Err(Error::Decode { .. })));
        let data = as_bytes(&(0..24).collect::<Vec<_>>());
        let view = RawView::c_order_const(&data, &[4, 6], 2);
        let mut shard = p.write_from(None, &sel, &ValueSource::Array { view: &view, swap: 0 }, false).unwrap().unwrap().into_vec();
        let n = shard.len();
        shard[n - 10] ^= 1;
        assert!(matches!(p.read_into(&BytesValue::new("k", &shard), &sel, &out, 0, None), Err(Error::Decode { .. })));
    }
}
