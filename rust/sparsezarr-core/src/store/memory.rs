//! Stores in memory: [`MemoryStore`] owns its values (with versions and conditional writes);
//! [`SnapshotStore`] borrows values another owner keeps (zarr-python's `MemoryStore` dict, bytes
//! Python fetched) and collects writes for that owner to apply.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::{ByteRange, Capabilities, Encoded, Store, ValueReader, Version, WriteMode, check_key, check_writable};
use crate::error::{Error, Result};

// ------------------------------------------------------------------------------------------------
// Owned values
// ------------------------------------------------------------------------------------------------

/// Each key's value and the generation that wrote it.
type Values = BTreeMap<String, (Arc<Vec<u8>>, u64)>;

static NEXT_SCOPE: AtomicU64 = AtomicU64::new(1 << 48);

/// Values owned in memory, each with a generation number as its version. Every write is atomic
/// and conditional writes are enforced.
#[derive(Debug)]
pub struct MemoryStore {
    values: Mutex<Values>,
    generation: AtomicU64,
    scope: u64,
    read_only: bool,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new(false)
    }
}

impl MemoryStore {
    /// An empty store.
    #[must_use]
    pub fn new(read_only: bool) -> Self {
        Self { values: Mutex::new(BTreeMap::new()), generation: AtomicU64::new(0), scope: NEXT_SCOPE.fetch_add(1, Ordering::Relaxed), read_only }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Values> {
        self.values.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn version(&self, generation: u64) -> Version {
        Version::Tag { scope: self.scope, tag: Arc::from(generation.to_string()) }
    }
}

/// A value held in memory: one version of a [`MemoryStore`] value, or bytes a bridge fetched.
pub struct HeldValue {
    key: String,
    bytes: Arc<Vec<u8>>,
    version: Option<Version>,
}

impl HeldValue {
    /// `bytes` stored under `key`, with their version if the store has one.
    #[must_use]
    pub fn new(key: &str, bytes: Arc<Vec<u8>>, version: Option<Version>) -> Self {
        Self { key: key.to_string(), bytes, version }
    }
}

impl ValueReader for HeldValue {
    fn key(&self) -> &str {
        &self.key
    }

    fn size(&self) -> u64 {
        self.bytes.len() as u64
    }

    fn version(&self) -> Option<&Version> {
        self.version.as_ref()
    }

    fn resident(&self) -> bool {
        true
    }

    fn read_all(&self) -> Result<Cow<'_, [u8]>> {
        Ok(Cow::Borrowed(&self.bytes))
    }

    #[allow(clippy::cast_possible_truncation)]
    fn read_range(&self, offset: u64, len: u64) -> Result<Cow<'_, [u8]>> {
        let (offset, len) = ByteRange::Range { offset, len }.resolve(&self.key, self.bytes.len() as u64)?;
        Ok(Cow::Borrowed(&self.bytes[offset as usize..(offset + len) as usize]))
    }
}

impl Store for MemoryStore {
    fn capabilities(&self) -> Capabilities {
        Capabilities { cheap_ranges: true, atomic_replace: true, conditional_writes: true, listing: true }
    }

    fn open(&self, key: &str, _first: ByteRange) -> Result<Option<Box<dyn ValueReader + '_>>> {
        let map = self.lock();
        Ok(map
            .get(key)
            .map(|(bytes, generation)| Box::new(HeldValue::new(key, bytes.clone(), Some(self.version(*generation)))) as Box<dyn ValueReader>))
    }

    fn put(&self, key: &str, value: Encoded, mode: WriteMode) -> Result<Option<Version>> {
        check_writable(self.read_only, key)?;
        check_key(key)?;
        let value = Arc::new(value.into_vec());
        let mut map = self.lock();
        let current = map.get(key).map(|(_, g)| self.version(*g));
        let conflict = |message: &str| Error::Conflict { key: key.to_string(), message: message.to_string() };
        match &mode {
            WriteMode::Overwrite => {}
            WriteMode::CreateOnly if current.is_some() => return Err(conflict("the key already has a value")),
            WriteMode::CreateOnly => {}
            WriteMode::IfVersion(v) if current.as_ref() != Some(v) => return Err(conflict("the value was replaced since it was read")),
            WriteMode::IfVersion(_) => {}
        }
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        map.insert(key.to_string(), (value, generation));
        Ok(Some(self.version(generation)))
    }

    fn delete(&self, key: &str) -> Result<()> {
        check_writable(self.read_only, key)?;
        self.lock().remove(key);
        Ok(())
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>> {
        Ok(self.lock().range(prefix.to_string()..).map(|(k, _)| k).take_while(|k| k.starts_with(prefix)).cloned().collect())
    }

    fn read_only(&self) -> bool {
        self.read_only
    }

    fn cache_id(&self) -> u64 {
        self.scope
    }
}

// ------------------------------------------------------------------------------------------------
// Borrowed values
// ------------------------------------------------------------------------------------------------

/// A borrowed byte slice whose owner outlives the [`SnapshotStore`] holding it.
#[derive(Debug, Clone, Copy)]
struct RawSlice {
    ptr: *const u8,
    len: usize,
}

// SAFETY: the memory is immutable while the snapshot lives (its owner is kept alive by the
// snapshot's keep-alive object and is never written through).
unsafe impl Send for RawSlice {}
// SAFETY: see above.
unsafe impl Sync for RawSlice {}

/// One write collected by a [`SnapshotStore`]: `Some(bytes)` to store, `None` to delete.
pub type PendingWrite = (String, Option<Vec<u8>>);

/// Values already in memory, looked up by key; writes are collected for the caller.
pub struct SnapshotStore {
    values: HashMap<String, Option<RawSlice>>,
    owned: HashMap<String, Vec<u8>>,
    _keepalive: Box<dyn std::any::Any + Send + Sync>,
    writes: Mutex<Vec<PendingWrite>>,
    read_only: bool,
}

impl SnapshotStore {
    /// An empty snapshot.
    pub fn new(read_only: bool) -> Self {
        Self { values: HashMap::new(), owned: HashMap::new(), _keepalive: Box::new(()), writes: Mutex::new(Vec::new()), read_only }
    }

    /// Keep `owner` alive as long as this snapshot (the owner of borrowed values).
    pub fn set_keepalive(&mut self, owner: Box<dyn std::any::Any + Send + Sync>) {
        self._keepalive = owner;
    }

    /// Record that `key` has no value.
    pub fn insert_missing(&mut self, key: String) {
        self.values.insert(key, None);
    }

    /// Record an owned value for `key`.
    pub fn insert_owned(&mut self, key: String, value: Vec<u8>) {
        self.values.remove(&key);
        self.owned.insert(key, value);
    }

    /// Record a borrowed value for `key`.
    ///
    /// # Safety
    /// `ptr..ptr+len` must be valid, immutable memory for as long as this snapshot lives
    /// (typically guaranteed by [`set_keepalive`](Self::set_keepalive)).
    pub unsafe fn insert_borrowed(&mut self, key: String, ptr: *const u8, len: usize) {
        self.owned.remove(&key);
        self.values.insert(key, Some(RawSlice { ptr, len }));
    }

    /// Take the writes collected so far.
    pub fn take_writes(&self) -> Vec<PendingWrite> {
        std::mem::take(&mut *self.writes.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    fn lookup(&self, key: &str) -> Result<Option<&[u8]>> {
        if let Some(v) = self.owned.get(key) {
            return Ok(Some(v.as_slice()));
        }
        match self.values.get(key) {
            // SAFETY: guaranteed by the contract of `insert_borrowed`.
            Some(Some(raw)) => Ok(Some(unsafe { std::slice::from_raw_parts(raw.ptr, raw.len) })),
            Some(None) => Ok(None),
            None => Err(Error::Internal(format!("key {key:?} was not prefetched"))),
        }
    }
}

/// A value held in memory (a whole stored value, or an inner shard read from one).
pub struct BytesValue<'a> {
    key: String,
    bytes: &'a [u8],
}

impl<'a> BytesValue<'a> {
    /// Wrap `bytes`, stored under `key`.
    #[must_use]
    pub fn new(key: &str, bytes: &'a [u8]) -> Self {
        Self { key: key.to_string(), bytes }
    }
}

impl ValueReader for BytesValue<'_> {
    fn key(&self) -> &str {
        &self.key
    }

    fn size(&self) -> u64 {
        self.bytes.len() as u64
    }

    fn read_all(&self) -> Result<Cow<'_, [u8]>> {
        Ok(Cow::Borrowed(self.bytes))
    }

    fn read_range(&self, offset: u64, len: u64) -> Result<Cow<'_, [u8]>> {
        let (offset, len) = ByteRange::Range { offset, len }.resolve(&self.key, self.bytes.len() as u64)?;
        #[allow(clippy::cast_possible_truncation)]
        Ok(Cow::Borrowed(&self.bytes[offset as usize..(offset + len) as usize]))
    }

    fn version(&self) -> Option<&Version> {
        None
    }

    fn resident(&self) -> bool {
        true
    }
}

impl Store for SnapshotStore {
    fn capabilities(&self) -> Capabilities {
        Capabilities { cheap_ranges: true, atomic_replace: true, conditional_writes: false, listing: false }
    }

    fn open(&self, key: &str, _first: ByteRange) -> Result<Option<Box<dyn ValueReader + '_>>> {
        Ok(self.lookup(key)?.map(|bytes| Box::new(BytesValue { key: key.to_string(), bytes }) as Box<dyn ValueReader>))
    }

    fn put(&self, key: &str, value: Encoded, mode: WriteMode) -> Result<Option<Version>> {
        check_writable(self.read_only, key)?;
        if mode != WriteMode::Overwrite {
            return Err(Error::Unsupported("conditional writes to a snapshot of values (the caller applies the writes)".into()));
        }
        self.writes.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push((key.to_string(), Some(value.into_vec())));
        Ok(None)
    }

    fn delete(&self, key: &str) -> Result<()> {
        check_writable(self.read_only, key)?;
        self.writes.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push((key.to_string(), None));
        Ok(())
    }

    fn list(&self, _prefix: &str) -> Result<Vec<String>> {
        Err(Error::Unsupported("listing a snapshot of values".into()))
    }

    fn read_only(&self) -> bool {
        self.read_only
    }

    fn cache_id(&self) -> u64 {
        0
    }
}
