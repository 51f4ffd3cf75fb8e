//! A process-wide cache of decoded shard indexes, keyed by the stored shard's key and
//! [`Version`] (so a changed or rewritten shard is never served a stale index), bounded in bytes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::store::Version;

/// What identifies one decoded index: the shard's key and stored version, and the index's size
/// and position (two arrays may read the same bytes with different layouts).
pub(crate) type CacheKey = (String, Version, u64, bool);

/// A cache of decoded shard indexes, bounded in bytes (least recently used half evicted).
pub struct IndexCache {
    state: Mutex<CacheState>,
}

struct CacheState {
    map: HashMap<CacheKey, (Arc<Vec<u64>>, u64)>,
    /// The version of each shard (by store and key) whose index was read last: a remote read can
    /// then fetch inner chunks with the cached index at once, and check the version it gets.
    latest: HashMap<(u64, String), Version>,
    bytes: usize,
    budget: usize,
    tick: u64,
}

impl IndexCache {
    /// A cache holding at most `budget` bytes of indexes (0 disables caching).
    #[must_use]
    pub fn new(budget: usize) -> Self {
        Self { state: Mutex::new(CacheState { map: HashMap::new(), latest: HashMap::new(), bytes: 0, budget, tick: 0 }) }
    }

    /// Change the budget (0 disables caching and empties the cache).
    pub fn set_budget(&self, budget: usize) {
        let mut s = self.lock();
        s.budget = budget;
        if budget == 0 {
            s.map.clear();
            s.latest.clear();
            s.bytes = 0;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CacheState> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn get(&self, key: &CacheKey) -> Option<Arc<Vec<u64>>> {
        let mut s = self.lock();
        s.tick += 1;
        let tick = s.tick;
        s.map.get_mut(key).map(|e| {
            e.1 = tick;
            e.0.clone()
        })
    }

    pub(crate) fn insert(&self, key: CacheKey, value: Arc<Vec<u64>>) {
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

    /// Remember that `version` is the latest seen of the shard `key` of the store `store_id`.
    pub(crate) fn note_version(&self, store_id: u64, key: &str, version: &Version) {
        let mut s = self.lock();
        if s.budget == 0 {
            return;
        }
        if s.latest.len() > 4 * s.map.len() + 1024 {
            s.latest.clear();
        }
        s.latest.insert((store_id, key.to_string()), version.clone());
    }

    /// The latest version seen of the shard `key` of the store `store_id`.
    pub(crate) fn latest_version(&self, store_id: u64, key: &str) -> Option<Version> {
        self.lock().latest.get(&(store_id, key.to_string())).cloned()
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
