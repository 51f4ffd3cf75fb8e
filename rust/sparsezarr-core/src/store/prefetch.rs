//! [`Prefetched`]: the values (or byte ranges of values) an operation will read, fetched in
//! batches up front.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::Path;

use super::{ByteRange, Capabilities, Encoded, ReadRequest, ReadResult, Store, ValueReader, Version, WriteMode};
use crate::error::{Error, Result};

/// What is known of one value: its size, its version and the byte ranges fetched so far.
struct Fetched {
    total_size: u64,
    version: Option<Version>,
    /// `(offset, bytes)`, in the order fetched.
    segments: Vec<(u64, Vec<u8>)>,
}

impl Fetched {
    fn from_result(key: &str, range: ByteRange, r: ReadResult) -> Result<Self> {
        let (offset, _) = range.resolve(key, r.total_size)?;
        Ok(Self { total_size: r.total_size, version: r.version, segments: vec![(offset, r.bytes)] })
    }

    fn covering(&self, offset: u64, len: u64) -> Option<&[u8]> {
        self.segments.iter().find_map(|(start, bytes)| {
            let end = start + bytes.len() as u64;
            #[allow(clippy::cast_possible_truncation)]
            (offset >= *start && offset + len <= end).then(|| &bytes[(offset - start) as usize..(offset - start + len) as usize])
        })
    }
}

/// A store whose listed values (or ranges of them) were read with batched
/// [`Store::read_batch`] calls; reads those cover are served from memory, anything else (and
/// every write) goes to the store underneath.
///
/// Used by the engines for stores where each read costs a round trip or an interpreter lock
/// ([`Capabilities::cheap_ranges`] false): a batch lets the store fetch concurrently, and the
/// decoding that follows runs in parallel without touching the store. Shards are fetched in two
/// rounds: every shard's index first ([`with_first`](Self::with_first)), then the inner chunks the
/// indexes locate ([`fetch_ranges`](Self::fetch_ranges)).
pub struct Prefetched<'s> {
    inner: &'s dyn Store,
    values: HashMap<String, Option<Fetched>>,
}

impl<'s> Prefetched<'s> {
    /// Fetch the whole values of `keys` (duplicates are fetched once).
    ///
    /// # Errors
    /// The first error of the batch.
    pub fn new<'k>(inner: &'s dyn Store, keys: impl IntoIterator<Item = &'k str>) -> Result<Self> {
        Self::with_first(inner, keys, ByteRange::All)
    }

    /// Fetch `first` (the whole value, or a shard's index) of each of `keys`.
    ///
    /// # Errors
    /// The first error of the batch.
    pub fn with_first<'k>(inner: &'s dyn Store, keys: impl IntoIterator<Item = &'k str>, first: ByteRange) -> Result<Self> {
        Self::with_ranges(inner, keys.into_iter().map(|k| (k, first)))
    }

    /// Fetch one range of each key (a key named twice is fetched once: whole if either asks for
    /// the whole value).
    ///
    /// # Errors
    /// The first error of the batch.
    pub fn with_ranges<'k>(inner: &'s dyn Store, wanted: impl IntoIterator<Item = (&'k str, ByteRange)>) -> Result<Self> {
        let mut unique: Vec<(&str, ByteRange)> = wanted.into_iter().collect();
        // Whole values sort first among requests for one key, so they are the ones kept.
        unique.sort_by_key(|(k, r)| (*k, !matches!(r, ByteRange::All)));
        unique.dedup_by_key(|(k, _)| *k);
        let requests: Vec<ReadRequest<'_>> = unique.iter().map(|&(key, range)| ReadRequest { key, range }).collect();
        let results = inner.read_batch(&requests);
        let mut values = HashMap::with_capacity(unique.len());
        for ((key, range), result) in unique.into_iter().zip(results) {
            let fetched = match result? {
                Some(r) => Some(Fetched::from_result(key, range, r)?),
                None => None,
            };
            values.insert(key.to_string(), fetched);
        }
        Ok(Self { inner, values })
    }

    /// Nothing fetched yet (see [`fetch`](Self::fetch)).
    #[must_use]
    pub fn empty(inner: &'s dyn Store) -> Self {
        Self { inner, values: HashMap::new() }
    }

    /// Fetch any number of ranges of any keys in one batch, added to what was fetched before.
    /// Returns the keys whose answers came from different versions of the value (replaced while
    /// the batch ran); the caller should [`forget`](Self::forget) and fetch those again.
    ///
    /// # Errors
    /// The first error of the batch.
    pub fn fetch(&mut self, wanted: &[(&str, ByteRange)]) -> Result<Vec<String>> {
        let requests: Vec<ReadRequest<'_>> = wanted.iter().map(|&(key, range)| ReadRequest { key, range }).collect();
        let results = self.inner.read_batch(&requests);
        let mut stale: Vec<String> = Vec::new();
        for (&(key, range), result) in wanted.iter().zip(results) {
            let got = result?;
            match (self.values.get_mut(key), got) {
                (None, got) => {
                    let fetched = got.map(|r| Fetched::from_result(key, range, r)).transpose()?;
                    self.values.insert(key.to_string(), fetched);
                }
                (Some(Some(entry)), Some(r)) if r.version == entry.version && r.total_size == entry.total_size => {
                    let (offset, _) = range.resolve(key, r.total_size)?;
                    entry.segments.push((offset, r.bytes));
                }
                (Some(None), None) => {}
                _ => stale.push(key.to_string()),
            }
        }
        stale.sort_unstable();
        stale.dedup();
        Ok(stale)
    }

    /// Drop what was fetched of `key`.
    pub fn forget(&mut self, key: &str) {
        self.values.remove(key);
    }

    /// The version of the value fetched for `key` (`None` if not fetched, missing or unversioned).
    #[must_use]
    pub fn version_of(&self, key: &str) -> Option<&Version> {
        self.values.get(key).and_then(Option::as_ref).and_then(|f| f.version.as_ref())
    }

    /// Wrap `inner` only if its ranges are expensive; `None` means: use `inner` directly.
    ///
    /// # Errors
    /// As [`new`](Self::new).
    pub fn if_needed<'k>(inner: &'s dyn Store, keys: impl IntoIterator<Item = &'k str>) -> Result<Option<Self>> {
        if inner.capabilities().cheap_ranges { Ok(None) } else { Self::new(inner, keys).map(Some) }
    }

    /// Fetch more byte ranges `(key, offset, len)` of values fetched before, in one batch. A value
    /// found replaced since its first fetch is fetched again whole (its new version), so that
    /// everything served for one key comes from one version.
    ///
    /// # Errors
    /// The first error of the batch.
    pub fn fetch_ranges(&mut self, wanted: &[(String, u64, u64)]) -> Result<()> {
        let wanted: Vec<&(String, u64, u64)> = wanted
            .iter()
            .filter(|(k, off, len)| self.values.get(k).and_then(Option::as_ref).is_some_and(|f| f.covering(*off, *len).is_none()))
            .collect();
        if wanted.is_empty() {
            return Ok(());
        }
        let requests: Vec<ReadRequest<'_>> =
            wanted.iter().map(|(key, offset, len)| ReadRequest { key, range: ByteRange::Range { offset: *offset, len: *len } }).collect();
        let results = self.inner.read_batch(&requests);
        let mut stale: Vec<&str> = Vec::new();
        for ((key, offset, _), result) in wanted.iter().zip(results) {
            let Some(entry) = self.values.get_mut(key.as_str()).and_then(Option::as_mut) else { continue };
            match result? {
                Some(r) if r.version == entry.version && r.total_size == entry.total_size => entry.segments.push((*offset, r.bytes)),
                _ => stale.push(key),
            }
        }
        stale.sort_unstable();
        stale.dedup();
        if !stale.is_empty() {
            let again = Self::new(self.inner, stale.iter().copied())?;
            self.values.extend(again.values);
        }
        Ok(())
    }

    /// The value fetched for `key`: `None` if it was not fetched, `Some(None)` if it is missing.
    #[must_use]
    pub fn fetched(&self, key: &str) -> Option<Option<Box<dyn ValueReader + '_>>> {
        self.values
            .get(key)
            .map(|v| v.as_ref().map(|f| Box::new(SegmentValue { key: key.to_string(), fetched: f, inner: self.inner }) as Box<dyn ValueReader>))
    }
}

impl Store for Prefetched<'_> {
    fn capabilities(&self) -> Capabilities {
        Capabilities { cheap_ranges: true, ..self.inner.capabilities() }
    }

    fn open(&self, key: &str, first: ByteRange) -> Result<Option<Box<dyn ValueReader + '_>>> {
        match self.fetched(key) {
            Some(value) => Ok(value),
            None => self.inner.open(key, first),
        }
    }

    fn put(&self, key: &str, value: Encoded, mode: WriteMode) -> Result<Option<Version>> {
        self.inner.put(key, value, mode)
    }

    fn put_batch(&self, writes: Vec<(&str, Encoded, WriteMode)>) -> Vec<Result<Option<Version>>> {
        self.inner.put_batch(writes)
    }

    fn delete(&self, key: &str) -> Result<()> {
        self.inner.delete(key)
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>> {
        self.inner.list(prefix)
    }

    fn read_only(&self) -> bool {
        self.inner.read_only()
    }

    fn cache_id(&self) -> u64 {
        self.inner.cache_id()
    }

    fn local_root(&self) -> Option<&Path> {
        self.inner.local_root()
    }
}

/// A prefetched value: ranges fetched before are served from memory; any other range is read
/// from the store underneath and must come from the same version.
struct SegmentValue<'a> {
    key: String,
    fetched: &'a Fetched,
    inner: &'a dyn Store,
}

impl SegmentValue<'_> {
    fn fetch(&self, range: ByteRange) -> Result<Vec<u8>> {
        let got = self.inner.read_batch(&[ReadRequest { key: &self.key, range }]).pop().unwrap_or(Ok(None))?;
        match got {
            Some(r) if r.version == self.fetched.version && r.total_size == self.fetched.total_size => Ok(r.bytes),
            _ => Err(Error::Conflict { key: self.key.clone(), message: "the value was replaced while it was being read".into() }),
        }
    }
}

impl ValueReader for SegmentValue<'_> {
    fn key(&self) -> &str {
        &self.key
    }

    fn size(&self) -> u64 {
        self.fetched.total_size
    }

    fn version(&self) -> Option<&Version> {
        self.fetched.version.as_ref()
    }

    fn resident(&self) -> bool {
        self.fetched.covering(0, self.fetched.total_size).is_some()
    }

    fn read_all(&self) -> Result<Cow<'_, [u8]>> {
        match self.fetched.covering(0, self.fetched.total_size) {
            Some(b) => Ok(Cow::Borrowed(b)),
            None => self.fetch(ByteRange::All).map(Cow::Owned),
        }
    }

    fn read_range(&self, offset: u64, len: u64) -> Result<Cow<'_, [u8]>> {
        let (offset, len) = ByteRange::Range { offset, len }.resolve(&self.key, self.fetched.total_size)?;
        match self.fetched.covering(offset, len) {
            Some(b) => Ok(Cow::Borrowed(b)),
            None => self.fetch(ByteRange::Range { offset, len }).map(Cow::Owned),
        }
    }
}
