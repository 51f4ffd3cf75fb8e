//! The array engine: batched, concurrent chunk reads and writes for one Zarr array.
//!
//! An [`ArrayEngine`] is built from an array's metadata (zarr v2 or v3 JSON, as zarr-python writes
//! it). [`ArrayEngine::read`] fetches, decodes and scatters a batch of chunks into an output array;
//! [`ArrayEngine::write`] merges, encodes and stores a batch. All chunks of a batch (and all inner
//! chunks of every shard) are processed in parallel on the engine's thread pool.
//!
//! Writes run in two phases: every new chunk is encoded in memory first, and only then stored.
//! A failure while reading an existing chunk or encoding (corrupt data, bad input) therefore
//! changes nothing; each stored chunk is replaced atomically.

pub mod bytes_chain;
pub mod codec;
pub mod repr;
pub mod selection;
pub mod shard_index;
#[cfg(test)]
mod sharding_tests;
pub mod strided;

use std::borrow::Cow;

use rayon::prelude::*;
use zarrs::array::{DataType, FillValue};
use zarrs::metadata::v3::MetadataV3;

use crate::engine::codec::{ArrayRepr, CodecPlan, Encoded, EngineOptions, ValueSource};
use crate::engine::selection::Selection;
use crate::engine::strided::{RawView, byteswap, fill_selection};
use crate::error::{Error, Result};
use crate::index_cache::IndexCache;
use crate::metadata::ArrayMeta;
use crate::runtime::run_in_pool;
use crate::store::{ByteRange, Prefetched, Store, Version, WriteMode};

/// Best times of encoding and decoding a set of chunks in memory (see [`ArrayEngine::codec_bound`]).
#[derive(Debug, Clone, Copy)]
pub struct CodecBound {
    /// Seconds to encode every chunk (best round).
    pub encode_secs: f64,
    /// Seconds to decode every chunk (best round).
    pub decode_secs: f64,
    /// Total encoded size in bytes.
    pub encoded_bytes: u64,
}

/// How often a read-modify-write of one chunk is tried when other writers keep replacing it.
pub(crate) const MAX_WRITE_ATTEMPTS: u32 = 16;

/// A chunk's new stored bytes (`None`: delete it) and the condition to store them under.
struct Merged {
    new: Option<Encoded>,
    mode: WriteMode,
}

/// One chunk taking part in a read or write.
#[derive(Debug, Clone)]
pub struct ChunkRequest {
    /// Store key of the chunk.
    pub key: String,
    /// Elements of the chunk involved, and where they go.
    pub selection: Selection,
    /// Whether the write replaces every in-bounds element of the chunk (the existing chunk need
    /// not be read). Ignored by reads.
    pub complete: bool,
}

/// Concurrency settings.
#[derive(Debug, Clone, Copy, Default)]
pub struct Concurrency {
    /// Worker threads (0 = one per core).
    pub threads: usize,
}

/// The engine for one array.
pub struct ArrayEngine {
    plan: CodecPlan,
    options: EngineOptions,
    concurrency: Concurrency,
}

/// The process-wide shard index cache (per process: a forked child gets a fresh one).
pub fn shared_index_cache() -> &'static IndexCache {
    &crate::runtime::Runtime::get().index_cache
}

/// Set the byte budget of the process-wide shard index cache (0 disables it).
pub fn set_index_cache_budget(bytes: usize) {
    crate::runtime::set_index_cache_budget(bytes);
}

fn checked_fill(data_type: &DataType, bytes: Vec<u8>) -> Result<FillValue> {
    match data_type.fixed_size() {
        Some(n) if n == bytes.len() => Ok(FillValue::new(bytes)),
        Some(n) => Err(Error::InvalidArgument(format!("fill value has {} bytes, the data type {n}", bytes.len()))),
        None => Err(Error::Unsupported(format!("variable-size data type {data_type}"))),
    }
}

impl ArrayEngine {
    /// Build an engine from array metadata JSON (`zarr.json` or `.zarray` content).
    ///
    /// `fill_override` replaces the fill value parsed from the metadata (native-order element
    /// bytes): zarr-python's reading of the fill value is authoritative for its arrays.
    ///
    /// # Errors
    /// Returns [`Error::Unsupported`] if the array uses a data type, codec, chunk grid or storage
    /// transformer the engine does not handle, or [`Error::InvalidMetadata`] if it is malformed.
    pub fn from_metadata_json(json: &str, fill_override: Option<Vec<u8>>, options: EngineOptions, concurrency: Concurrency) -> Result<Self> {
        Self::from_meta(&ArrayMeta::parse(json, "")?, fill_override, options, concurrency)
    }

    /// Build an engine from parsed metadata (see [`from_metadata_json`](Self::from_metadata_json)).
    ///
    /// # Errors
    /// As [`from_metadata_json`](Self::from_metadata_json).
    pub fn from_meta(meta: &ArrayMeta, fill_override: Option<Vec<u8>>, options: EngineOptions, concurrency: Concurrency) -> Result<Self> {
        let fill_value = match fill_override {
            Some(bytes) => checked_fill(&meta.data_type, bytes)?,
            None => meta.fill_value.clone(),
        };
        let repr = ArrayRepr { shape: meta.chunk_shape.clone(), data_type: meta.data_type.clone(), fill_value };
        let plan = CodecPlan::new(&meta.codecs, repr, &options)?;
        Ok(Self { plan, options, concurrency })
    }

    /// Build an engine from a v3 codec list, a chunk shape, a v3 data type and the fill value as
    /// native-order element bytes.
    ///
    /// # Errors
    /// As [`from_metadata_json`](Self::from_metadata_json).
    pub fn from_parts(
        codecs: &[MetadataV3],
        chunk_shape: &[u64],
        data_type: &MetadataV3,
        fill_value: Vec<u8>,
        options: EngineOptions,
        concurrency: Concurrency,
    ) -> Result<Self> {
        let data_type = DataType::from_metadata(data_type).map_err(|e| Error::Unsupported(format!("data type: {e}")))?;
        let fill_value = checked_fill(&data_type, fill_value)?;
        let repr = ArrayRepr { shape: chunk_shape.to_vec(), data_type, fill_value };
        let plan = CodecPlan::new(codecs, repr, &options)?;
        Ok(Self { plan, options, concurrency })
    }

    /// The codec plan.
    #[must_use]
    pub fn plan(&self) -> &CodecPlan {
        &self.plan
    }

    /// Chunk shape.
    #[must_use]
    pub fn chunk_shape(&self) -> &[u64] {
        &self.plan.repr().shape
    }

    /// Element size in bytes.
    #[must_use]
    pub fn elem_size(&self) -> usize {
        self.plan.elem_size()
    }

    /// Fill value bytes (native byte order).
    #[must_use]
    pub fn fill_bytes(&self) -> &[u8] {
        self.plan.repr().fill_value.as_ne_bytes()
    }

    /// Options.
    #[must_use]
    pub fn options(&self) -> &EngineOptions {
        &self.options
    }

    /// Whether a batch is small enough to run on the calling thread (handing it to the pool costs
    /// more than it saves): one chunk that is not sharded, or one shard of which at most a few inner
    /// chunks are touched.
    fn is_small(&self, requests: &[ChunkRequest]) -> bool {
        const FEW: usize = 4;
        match requests {
            [] => true,
            [r] => match self.plan.as_sharding() {
                None => true,
                Some(s) => {
                    let mut plan = s;
                    let mut sel = r.selection.partition(plan.inner_shape());
                    while sel.len() == 1 && plan.inner().as_sharding().is_some() {
                        let inner = plan.inner().as_sharding().unwrap_or(plan);
                        sel = sel[0].1.partition(inner.inner_shape());
                        plan = inner;
                    }
                    sel.len() <= FEW
                }
            },
            _ => false,
        }
    }

    /// Read a batch of chunks into `out`. Returns, per request, whether the chunk was stored
    /// (missing chunks read as the fill value).
    ///
    /// `swap` is the byte-swap unit if `out` has a foreign byte order (0 otherwise).
    ///
    /// # Errors
    /// Returns the first error met (a corrupt chunk names its key).
    pub fn read(&self, store: &dyn Store, requests: &[ChunkRequest], out: &RawView, swap: usize) -> Result<Vec<bool>> {
        let mut fill = self.fill_bytes().to_vec();
        byteswap(&mut fill, swap);
        let cache = shared_index_cache();
        let prefetched = self.prefetch_for_read(store, requests, cache)?;
        let store: &dyn Store = prefetched.as_ref().map_or(store, |p| p as &dyn Store);
        let one = |r: &ChunkRequest| -> Result<bool> {
            match store.open(&r.key, self.plan.first_read())? {
                None => {
                    fill_selection(out, &r.selection, &fill, false)?;
                    Ok(false)
                }
                Some(value) => {
                    self.plan.read_into(&*value, &r.selection, out, swap, Some(cache)).map_err(|e| e.with_key(&r.key))?;
                    Ok(true)
                }
            }
        };
        if self.is_small(requests) {
            return requests.iter().map(one).collect();
        }
        run_in_pool(self.concurrency.threads, || requests.par_iter().map(one).collect())
    }

    /// For a store without cheap ranges, everything a read of `requests` needs, fetched in at
    /// most two rounds of concurrent requests: each chunk whole, or each shard's index and then
    /// the (coalesced) inner chunks the selections touch. `None` for stores with cheap ranges.
    fn prefetch_for_read<'s>(&self, store: &'s dyn Store, requests: &[ChunkRequest], cache: &IndexCache) -> Result<Option<Prefetched<'s>>> {
        if store.capabilities().cheap_ranges {
            return Ok(None);
        }
        let first = self.plan.first_read();
        let Some(sharding) = self.plan.as_sharding() else {
            return Prefetched::with_first(store, requests.iter().map(|r| r.key.as_str()), first).map(Some);
        };
        // Round one: a shard the selection mostly covers is fetched whole; a shard whose index
        // the cache holds for the version last seen is read at once at the ranges that index
        // gives (the answers carry the version, checked below); any other shard's index.
        let store_id = store.cache_id();
        let mut pre = Prefetched::empty(store);
        let mut round: Vec<(&str, ByteRange)> = Vec::new();
        let mut guessed: Vec<(&str, Version)> = Vec::new();
        for r in requests {
            if sharding.reads_whole(&r.selection) {
                round.push((&r.key, ByteRange::All));
                continue;
            }
            let cached =
                cache.latest_version(store_id, &r.key).and_then(|v| sharding.cached_ranges(cache, &r.key, &v, &r.selection).map(|rs| (v, rs)));
            match cached {
                Some((version, ranges)) => {
                    round.extend(ranges.into_iter().map(|(offset, len)| (r.key.as_str(), ByteRange::Range { offset, len })));
                    guessed.push((&r.key, version));
                }
                None => round.push((&r.key, first)),
            }
        }
        let mut again = pre.fetch(&round)?;
        // A shard replaced since its index was cached (or while the round ran) is read again.
        again.extend(guessed.iter().filter(|(k, v)| pre.version_of(k) != Some(v)).map(|(k, _)| (*k).to_string()));
        again.sort_unstable();
        again.dedup();
        for key in &again {
            pre.forget(key);
        }
        // Round two: the inner chunks the indexes locate, and whole the shards read again.
        let mut wanted: Vec<(String, u64, u64)> = Vec::new();
        for r in requests {
            if again.contains(&r.key) || guessed.iter().any(|(k, _)| *k == r.key) {
                continue;
            }
            if let Some(Some(value)) = pre.fetched(&r.key) {
                if let Some(v) = value.version() {
                    cache.note_version(store_id, &r.key, v);
                }
                let ranges = sharding.ranges_needed(&*value, &r.selection, Some(cache)).map_err(|e| e.with_key(&r.key))?;
                wanted.extend(ranges.into_iter().map(|(off, len)| (r.key.clone(), off, len)));
            }
        }
        pre.fetch_ranges(&wanted)?;
        if !again.is_empty() {
            pre.fetch(&again.iter().map(|k| (k.as_str(), ByteRange::All)).collect::<Vec<_>>())?;
        }
        Ok(Some(pre))
    }

    /// Write a batch of chunks from `src`. Chunks (and inner chunks of shards) that end up
    /// holding only the fill value are deleted unless `write_empty` is set.
    ///
    /// Chunks the write covers only partly are read, merged and encoded first, all of them,
    /// before anything is stored: a corrupt existing chunk aborts the write with nothing changed.
    /// Then the merged chunks are stored and the fully covered chunks are encoded and stored,
    /// in parallel. Every chunk is replaced atomically.
    ///
    /// # Errors
    /// Returns [`Error::ReadOnly`] for read-only stores (before anything is written), or the first
    /// error met.
    pub fn write(&self, store: &dyn Store, requests: &[ChunkRequest], src: &ValueSource<'_>, write_empty: bool) -> Result<()> {
        if store.read_only() {
            return Err(Error::ReadOnly(requests.first().map_or_else(String::new, |r| r.key.clone())));
        }
        let origin = store;
        let conditional = store.capabilities().conditional_writes;
        let prefetched = Prefetched::if_needed(store, requests.iter().filter(|r| !r.complete).map(|r| r.key.as_str()))?;
        let store: &dyn Store = prefetched.as_ref().map_or(store, |p| p as &dyn Store);
        // A chunk the write covers only partly is read, merged and written back; where the store
        // enforces conditions, the write back only succeeds if no other writer replaced (or
        // created) the chunk in between, and otherwise starts over from a fresh read.
        let merge = |r: &ChunkRequest, from: &dyn Store, first: ByteRange| -> Result<Merged> {
            let existing = if r.complete { None } else { from.open(&r.key, first)? };
            let mode = match (&existing, conditional && !r.complete) {
                (_, false) => WriteMode::Overwrite,
                (None, true) => WriteMode::CreateOnly,
                (Some(v), true) => v.version().cloned().map_or(WriteMode::Overwrite, WriteMode::IfVersion),
            };
            let new = self.plan.write_from(existing.as_deref(), &r.selection, src, write_empty).map_err(|e| e.with_key(&r.key))?;
            Ok(Merged { new, mode })
        };
        let encode = |r: &ChunkRequest| -> Result<Merged> { merge(r, store, self.plan.first_read()) };
        let store_merged = |r: &ChunkRequest, merged: Merged| -> Result<()> {
            match (merged.new, merged.mode) {
                (Some(bytes), mode) => store.put(&r.key, bytes, mode).map(drop),
                (None, WriteMode::Overwrite) => store.delete(&r.key),
                // An emptied chunk is deleted only if it is still the version read.
                (None, mode) => {
                    let current = origin.open(&r.key, self.plan.first_read())?;
                    match (current.as_ref().and_then(|v| v.version().cloned()), &mode) {
                        (Some(now), WriteMode::IfVersion(read)) if now == *read => origin.delete(&r.key),
                        (None, WriteMode::CreateOnly) => Ok(()),
                        _ => Err(Error::Conflict { key: r.key.clone(), message: "replaced by another writer".into() }),
                    }
                }
            }
        };
        let store_one = |r: &ChunkRequest, merged: Merged| -> Result<()> {
            let mut merged = Ok(merged);
            for attempt in 0..MAX_WRITE_ATTEMPTS {
                match merged.and_then(|m| store_merged(r, m)) {
                    // Another writer replaced the chunk between our read and our write (or while
                    // we read it): read it again, whole, in one request, and merge again.
                    Err(Error::Conflict { .. }) if attempt + 1 < MAX_WRITE_ATTEMPTS => {
                        std::thread::sleep(std::time::Duration::from_millis(1 << attempt.min(6)));
                        merged = merge(r, origin, ByteRange::All);
                    }
                    other => return other,
                }
            }
            Err(Error::Conflict { key: r.key.clone(), message: format!("still contended after {MAX_WRITE_ATTEMPTS} attempts") })
        };
        let batched = !origin.capabilities().cheap_ranges;
        // Stores where each write is a round trip: encode everything, then store it with one
        // batch of concurrent writes; writes that meet a conflict start over one by one.
        let work_batched = || -> Result<()> {
            let merged: Vec<Merged> = requests.par_iter().map(&encode).collect::<Result<_>>()?;
            let mut puts: Vec<(&ChunkRequest, WriteMode)> = Vec::new();
            let mut values: Vec<(&str, Encoded, WriteMode)> = Vec::new();
            let mut rest: Vec<(&ChunkRequest, Merged)> = Vec::new();
            for (r, m) in requests.iter().zip(merged) {
                match m.new {
                    Some(bytes) => {
                        puts.push((r, m.mode.clone()));
                        values.push((r.key.as_str(), bytes, m.mode));
                    }
                    None => rest.push((r, m)),
                }
            }
            let results = store.put_batch(values);
            for ((r, _), result) in puts.into_iter().zip(results) {
                match result {
                    Ok(_) => {}
                    Err(Error::Conflict { .. }) => store_one(r, merge(r, origin, ByteRange::All)?)?,
                    Err(e) => return Err(e),
                }
            }
            rest.into_iter().try_for_each(|(r, m)| store_one(r, m))
        };
        if batched {
            return run_in_pool(self.concurrency.threads, work_batched);
        }
        let (partial, complete): (Vec<&ChunkRequest>, Vec<&ChunkRequest>) = requests.iter().partition(|r| !r.complete);
        let work = || -> Result<()> {
            let merged: Vec<Merged> = if partial.len() > 1 {
                partial.par_iter().map(|r| encode(r)).collect::<Result<_>>()?
            } else {
                partial.iter().map(|r| encode(r)).collect::<Result<_>>()?
            };
            let merged: Vec<(&ChunkRequest, Merged)> = partial.into_iter().zip(merged).collect();
            if merged.len() + complete.len() <= 1 {
                for (r, new) in merged {
                    store_one(r, new)?;
                }
                return complete.iter().try_for_each(|r| store_one(r, encode(r)?));
            }
            let (stored, written) = rayon::join(
                || merged.into_par_iter().try_for_each(|(r, new)| store_one(r, new)),
                || complete.par_iter().try_for_each(|r| store_one(r, encode(r)?)),
            );
            stored.and(written)
        };
        if self.is_small(requests) {
            return work();
        }
        run_in_pool(self.concurrency.threads, work)
    }

    /// The raw codec bound: encode and then decode `chunks` (whole chunks of element bytes)
    /// in memory on the engine's thread pool, `rounds` times, without any store or copying into an
    /// array; returns the best times. A pipeline cannot be faster than this for the same chunks.
    ///
    /// # Errors
    /// Returns the first codec error.
    pub fn codec_bound(&self, chunks: &[&[u8]], rounds: usize) -> Result<CodecBound> {
        let want = self.plan.repr().num_bytes()?;
        if chunks.iter().any(|c| c.len() != want) {
            return Err(Error::InvalidArgument(format!("every chunk must have {want} bytes")));
        }
        run_in_pool(self.concurrency.threads, || {
            let mut best = CodecBound { encode_secs: f64::INFINITY, decode_secs: f64::INFINITY, encoded_bytes: 0 };
            for _ in 0..rounds.max(1) {
                let t = std::time::Instant::now();
                let encoded: Vec<Vec<u8>> = chunks.par_iter().map(|c| self.plan.encode(Cow::Borrowed(c))).collect::<Result<_>>()?;
                best.encode_secs = best.encode_secs.min(t.elapsed().as_secs_f64());
                best.encoded_bytes = encoded.iter().map(|e| e.len() as u64).sum();
                let t = std::time::Instant::now();
                encoded.par_iter().try_for_each(|e| self.plan.with_decoded(Cow::Borrowed(e), |_| Ok(())))?;
                best.decode_secs = best.decode_secs.min(t.elapsed().as_secs_f64());
            }
            Ok(best)
        })
    }

    /// Decode whole stored chunks to C-ordered element bytes (`None` stays `None`).
    ///
    /// # Errors
    /// Returns the first decode error.
    pub fn decode_chunks(&self, chunks: &[Option<&[u8]>]) -> Result<Vec<Option<Vec<u8>>>> {
        run_in_pool(self.concurrency.threads, || {
            chunks.par_iter().map(|c| c.map(|b| self.plan.decode(Cow::Borrowed(b)).map(Cow::into_owned)).transpose()).collect()
        })
    }

    /// Encode whole chunks from C-ordered element bytes (`None` stays `None`).
    ///
    /// # Errors
    /// Returns the first encode error, or [`Error::InvalidArgument`] for a wrongly sized chunk.
    pub fn encode_chunks(&self, chunks: &[Option<&[u8]>]) -> Result<Vec<Option<Vec<u8>>>> {
        let want = self.plan.repr().num_bytes()?;
        run_in_pool(self.concurrency.threads, || {
            chunks
                .par_iter()
                .map(|c| {
                    c.map(|b| {
                        if b.len() != want {
                            return Err(Error::InvalidArgument(format!("chunk has {} bytes, expected {want}", b.len())));
                        }
                        self.plan.encode(Cow::Borrowed(b))
                    })
                    .transpose()
                })
                .collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::selection::DimSel;
    use crate::store::FsStore;

    #[test]
    fn v3_sharded_roundtrip_through_fs() {
        let meta = r#"{"zarr_format":3,"node_type":"array","shape":[8,8],"data_type":"int32",
            "chunk_grid":{"name":"regular","configuration":{"chunk_shape":[4,8]}},
            "chunk_key_encoding":{"name":"default"},"fill_value":-1,
            "codecs":[{"name":"sharding_indexed","configuration":{"chunk_shape":[2,2],
                "codecs":[{"name":"bytes","configuration":{"endian":"little"}},{"name":"zstd","configuration":{"level":1,"checksum":false}}],
                "index_codecs":[{"name":"bytes","configuration":{"endian":"little"}},{"name":"crc32c"}]}}]}"#;
        let engine = ArrayEngine::from_metadata_json(meta, None, EngineOptions::default(), Concurrency::default()).unwrap();
        let dir = std::env::temp_dir().join(format!("szeng-{}", std::process::id()));
        let store = FsStore::new(&dir, false);
        let data: Vec<i32> = (0..64).collect();
        let bytes: Vec<u8> = data.iter().flat_map(|x| x.to_ne_bytes()).collect();
        let view = RawView::c_order_const(&bytes, &[8, 8], 4);
        let reqs: Vec<ChunkRequest> =
            (0..2).map(|i| ChunkRequest { key: format!("c/{i}/0"), selection: Selection::whole(&[4, 8], &[4 * i, 0]), complete: true }).collect();
        engine.write(&store, &reqs, &ValueSource::Array { view: &view, swap: 0 }, false).unwrap();
        let mut out = vec![0u8; 256];
        let ov = RawView::c_order(&mut out, &[8, 8], 4);
        let present = engine.read(&store, &reqs, &ov, 0).unwrap();
        assert_eq!(present, vec![true, true]);
        assert_eq!(out, bytes);
        // A stepped read of column 3 through both shards, partially.
        let mut col = vec![0u8; 16];
        let cv = RawView::c_order(&mut col, &[4], 4);
        let reqs2: Vec<ChunkRequest> = (0..2)
            .map(|i| ChunkRequest {
                key: format!("c/{i}/0"),
                selection: Selection::Orthogonal {
                    chunk: vec![DimSel::Range { start: 0, step: 2, len: 2 }, DimSel::range(3, 1)],
                    out: vec![Some(DimSel::range(2 * i, 2)), None],
                },
                complete: false,
            })
            .collect();
        engine.read(&store, &reqs2, &cv, 0).unwrap();
        let got: Vec<i32> = col.chunks_exact(4).map(|c| i32::from_ne_bytes(c.try_into().unwrap())).collect();
        assert_eq!(got, vec![3, 19, 35, 51]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
