//! [`Prefetched`]: the values an operation will read, fetched with one batch up front.

use std::collections::HashMap;
use std::path::Path;

use super::{ByteRange, BytesValue, Capabilities, Encoded, ReadRequest, ReadResult, Store, ValueReader, Version, WriteMode};
use crate::error::Result;

/// A store whose listed values were read with one [`Store::read_batch`]; reads of those keys are
/// served from memory, anything else (and every write) goes to the store underneath.
///
/// Used by the engines for stores where each read costs a round trip or an interpreter lock
/// ([`Capabilities::cheap_ranges`] false): the batch lets the store fetch concurrently, and the
/// decoding that follows runs in parallel without touching the store.
pub struct Prefetched<'s> {
    inner: &'s dyn Store,
    values: HashMap<String, Option<ReadResult>>,
}

impl<'s> Prefetched<'s> {
    /// Fetch the whole values of `keys` (duplicates are fetched once).
    ///
    /// # Errors
    /// The first error of the batch.
    pub fn new<'k>(inner: &'s dyn Store, keys: impl IntoIterator<Item = &'k str>) -> Result<Self> {
        let mut unique: Vec<&str> = keys.into_iter().collect();
        unique.sort_unstable();
        unique.dedup();
        let requests: Vec<ReadRequest<'_>> = unique.iter().map(|&key| ReadRequest { key, range: ByteRange::All }).collect();
        let results = inner.read_batch(&requests);
        let mut values = HashMap::with_capacity(unique.len());
        for (key, result) in unique.into_iter().zip(results) {
            values.insert(key.to_string(), result?);
        }
        Ok(Self { inner, values })
    }

    /// Wrap `inner` only if its ranges are expensive; `None` means: use `inner` directly.
    ///
    /// # Errors
    /// As [`new`](Self::new).
    pub fn if_needed<'k>(inner: &'s dyn Store, keys: impl IntoIterator<Item = &'k str>) -> Result<Option<Self>> {
        if inner.capabilities().cheap_ranges { Ok(None) } else { Self::new(inner, keys).map(Some) }
    }
}

impl Store for Prefetched<'_> {
    fn capabilities(&self) -> Capabilities {
        Capabilities { cheap_ranges: true, ..self.inner.capabilities() }
    }

    fn open(&self, key: &str, first: ByteRange) -> Result<Option<Box<dyn ValueReader + '_>>> {
        match self.values.get(key) {
            Some(None) => Ok(None),
            Some(Some(r)) => Ok(Some(Box::new(BytesValue::new(key, &r.bytes)))),
            None => self.inner.open(key, first),
        }
    }

    fn put(&self, key: &str, value: Encoded, mode: WriteMode) -> Result<Option<Version>> {
        self.inner.put(key, value, mode)
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
