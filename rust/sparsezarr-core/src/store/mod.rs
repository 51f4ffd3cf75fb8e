//! The one store interface: every path of the core (dense engine, sharding, sparse arrays, CSR
//! readers and writers, virtual arrays) reads and writes stored values through [`Store`].
//!
//! Modelled on batched key-value layers (tensorstore's kvstore drivers, `zarrs_storage`'s
//! capability flags):
//!
//! - **Reads** name a key and a [`ByteRange`] (the whole value, `len` bytes at an offset, or the
//!   last `n` bytes) and return the bytes with the value's total size and its [`Version`];
//!   [`Store::read_batch`] takes many at once, so a backend with latency can issue them
//!   concurrently. [`Store::open`] returns a [`ValueReader`], one stored version of a value to read
//!   further ranges from (a shard: its index, then the inner chunks a selection needs); the first
//!   range is read on opening, so a remote backend needs no separate request to find the size.
//! - **Writes** carry a [`WriteMode`]: overwrite, create only if absent, or replace only if the
//!   stored version is still the one the writer read (the base of read-modify-write without lost
//!   updates). A backend says in its [`Capabilities`] which modes it enforces atomically.
//! - **Listing** by prefix and **deletion**.
//!
//! Backends: [`FsStore`] (a local directory), [`MemoryStore`] (values owned in memory, with
//! versions), [`SnapshotStore`] (values borrowed from memory another owner keeps, writes handed
//! back to it), [`ObjectBackend`] (S3, GCS, Azure Blob Storage and HTTP through `object_store`);
//! the Python bindings add one bridge to any zarr-python store.
//!
//! Callers that know which values an operation needs wrap a store without cheap ranges in
//! [`Prefetched`]: one [`Store::read_batch`] fetches them all (one round of requests, one
//! interpreter lock for a Python store), then decoding runs from memory.

mod fs;
mod memory;
mod object;
mod prefetch;

use std::borrow::Cow;
use std::path::Path;
use std::sync::Arc;

pub use fs::{FsStore, exchange_paths};
pub use memory::{BytesValue, HeldValue, MemoryStore, PendingWrite, SnapshotStore};
pub use object::{ObjectBackend, ObjectOptions};
pub use prefetch::Prefetched;

use crate::error::{Error, Result};

/// The encoded bytes of one stored value, possibly in pieces (a shard's index and its inner
/// chunks) that a store can write without concatenating them first.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Encoded(Vec<Vec<u8>>);

impl Encoded {
    /// One contiguous piece.
    #[must_use]
    pub fn single(bytes: Vec<u8>) -> Self {
        Self(vec![bytes])
    }

    /// Several pieces, stored back to back.
    #[must_use]
    pub fn from_parts(parts: Vec<Vec<u8>>) -> Self {
        Self(parts)
    }

    /// The pieces.
    #[must_use]
    pub fn parts(&self) -> &[Vec<u8>] {
        &self.0
    }

    /// Total size in bytes.
    #[must_use]
    pub fn len(&self) -> usize {
        self.0.iter().map(Vec::len).sum()
    }

    /// Whether there are no bytes.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes as one vector (no copy for a single piece).
    #[must_use]
    pub fn into_vec(mut self) -> Vec<u8> {
        if self.0.len() == 1 {
            return self.0.pop().unwrap_or_default();
        }
        let mut out = Vec::with_capacity(self.len());
        for p in &self.0 {
            out.extend_from_slice(p);
        }
        out
    }
}

/// Identity of one stored version of a value: while it is unchanged, data derived from the value
/// (a decoded shard index) stays valid, and a conditional write can tell whether someone else
/// replaced the value since it was read.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Version {
    /// A file: device, inode (an atomic replace creates a new inode), modification time in
    /// nanoseconds and size.
    File {
        /// Device number.
        dev: u64,
        /// Inode number.
        ino: u64,
        /// Modification time in nanoseconds.
        mtime_ns: i128,
        /// Size in bytes.
        len: u64,
    },
    /// A version assigned by the store itself: a generation counter, or an object store's ETag or
    /// generation. `scope` identifies the store (tags are only unique within one).
    Tag {
        /// Identifies the store the tag belongs to.
        scope: u64,
        /// The tag.
        tag: Arc<str>,
    },
}

/// Which bytes of a value a read wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteRange {
    /// The whole value.
    All,
    /// `len` bytes starting at `offset`.
    Range {
        /// First byte.
        offset: u64,
        /// Number of bytes.
        len: u64,
    },
    /// The last `n` bytes (all of them if the value is shorter).
    Suffix(u64),
}

impl ByteRange {
    /// The byte range `(offset, len)` this names in a value of `size` bytes.
    ///
    /// # Errors
    /// Returns [`Error::Decode`] if an explicit range lies outside the value (a truncated value).
    pub fn resolve(self, key: &str, size: u64) -> Result<(u64, u64)> {
        match self {
            Self::All => Ok((0, size)),
            Self::Suffix(n) => Ok((size.saturating_sub(n), n.min(size))),
            Self::Range { offset, len } => match offset.checked_add(len) {
                Some(end) if end <= size => Ok((offset, len)),
                _ => Err(Error::decode(
                    key,
                    format!("byte range {offset}..{} is outside the stored value of {size} bytes (truncated data?)", offset.saturating_add(len)),
                )),
            },
        }
    }
}

/// One read of a batch.
#[derive(Debug, Clone, Copy)]
pub struct ReadRequest<'a> {
    /// The key.
    pub key: &'a str,
    /// The bytes wanted.
    pub range: ByteRange,
}

/// The answer to one read: the bytes, the value's total size and its version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadResult {
    /// The bytes the request named.
    pub bytes: Vec<u8>,
    /// Size of the whole stored value.
    pub total_size: u64,
    /// The stored version, where the store has versions.
    pub version: Option<Version>,
}

/// How a write treats an existing value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteMode {
    /// Replace whatever is stored (atomically where [`Capabilities::atomic_replace`]).
    Overwrite,
    /// Store only if the key has no value; [`Error::Conflict`] otherwise.
    CreateOnly,
    /// Replace only if the stored value still has this version; [`Error::Conflict`] otherwise.
    IfVersion(Version),
}

/// What a store can do, so callers choose how to use it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(clippy::struct_excessive_bools)]
pub struct Capabilities {
    /// Reading a byte range costs about as much as the bytes it returns (local files, memory),
    /// rather than a round trip each (object stores: coalesce ranges, prefer fewer requests).
    pub cheap_ranges: bool,
    /// An overwrite replaces the value atomically: readers see the old or the new value, whole.
    pub atomic_replace: bool,
    /// [`WriteMode::CreateOnly`] and [`WriteMode::IfVersion`] are enforced atomically.
    pub conditional_writes: bool,
    /// [`Store::list`] works.
    pub listing: bool,
}

/// One stored version of a value, open for reading byte ranges.
pub trait ValueReader: Send + Sync {
    /// The key this value is stored under.
    fn key(&self) -> &str;
    /// Size of the value in bytes.
    fn size(&self) -> u64;
    /// The stored version, if the store has versions (used to validate caches).
    fn version(&self) -> Option<&Version>;
    /// Whether the whole value is already in memory, so reading all of it costs no I/O.
    fn resident(&self) -> bool {
        false
    }
    /// The whole value.
    ///
    /// # Errors
    /// Returns an error if the value cannot be read.
    fn read_all(&self) -> Result<Cow<'_, [u8]>>;
    /// `len` bytes starting at `offset`.
    ///
    /// # Errors
    /// Returns [`Error::Decode`] if the range lies outside the value (a truncated value).
    fn read_range(&self, offset: u64, len: u64) -> Result<Cow<'_, [u8]>>;
    /// The bytes a [`ByteRange`] names.
    ///
    /// # Errors
    /// As [`read_range`](Self::read_range).
    fn read(&self, range: ByteRange) -> Result<Cow<'_, [u8]>> {
        match range {
            ByteRange::All => self.read_all(),
            _ => {
                let (offset, len) = range.resolve(self.key(), self.size())?;
                self.read_range(offset, len)
            }
        }
    }
}

/// A key-value store of chunks, shards and metadata documents.
pub trait Store: Send + Sync {
    /// What this store can do.
    fn capabilities(&self) -> Capabilities;

    /// Open the value at `key` for reading, reading `first` with the opening request where that
    /// saves a request (a shard's index); `None` if there is no value.
    ///
    /// # Errors
    /// Returns an error if the store cannot be accessed.
    fn open(&self, key: &str, first: ByteRange) -> Result<Option<Box<dyn ValueReader + '_>>>;

    /// Read a batch of values or byte ranges; one answer per request, in order (`None` for a
    /// missing value). Backends with latency issue the requests concurrently.
    fn read_batch(&self, requests: &[ReadRequest<'_>]) -> Vec<Result<Option<ReadResult>>> {
        requests
            .iter()
            .map(|r| {
                let Some(v) = self.open(r.key, r.range)? else { return Ok(None) };
                let bytes = v.read(r.range)?.into_owned();
                Ok(Some(ReadResult { bytes, total_size: v.size(), version: v.version().cloned() }))
            })
            .collect()
    }

    /// Store `value` (pieces written back to back) at `key` as `mode` allows; returns the new
    /// version where the store reports it without extra I/O (`FsStore`: conditional modes only,
    /// so a plain overwrite costs no extra system call; `MemoryStore`: always).
    ///
    /// # Errors
    /// [`Error::ReadOnly`] for read-only stores, [`Error::Conflict`] when `mode`'s condition does
    /// not hold, [`Error::Unsupported`] for a conditional mode the store cannot enforce, or an
    /// I/O error.
    fn put(&self, key: &str, value: Encoded, mode: WriteMode) -> Result<Option<Version>>;

    /// Store a batch of values; one answer per write, in order. Backends with latency issue the
    /// writes concurrently; the default stores them one after another.
    fn put_batch(&self, writes: Vec<(&str, Encoded, WriteMode)>) -> Vec<Result<Option<Version>>> {
        writes.into_iter().map(|(key, value, mode)| self.put(key, value, mode)).collect()
    }

    /// Remove the value at `key` (no error if absent).
    ///
    /// # Errors
    /// Returns [`Error::ReadOnly`] for read-only stores, or an I/O error.
    fn delete(&self, key: &str) -> Result<()>;

    /// Every key that starts with `prefix`, sorted.
    ///
    /// # Errors
    /// [`Error::Unsupported`] if the store cannot list, or an I/O error.
    fn list(&self, prefix: &str) -> Result<Vec<String>>;

    /// Whether writes are refused.
    fn read_only(&self) -> bool;

    /// A number identifying this store's contents location (used in cache keys).
    fn cache_id(&self) -> u64;

    /// The directory this store keeps its keys in, for stores on the local file system (used to
    /// refuse symbolic links that lead out of a virtual array's root).
    fn local_root(&self) -> Option<&Path> {
        None
    }

    /// The whole value at `key`, if any.
    ///
    /// # Errors
    /// As [`read_batch`](Self::read_batch).
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let Some(v) = self.open(key, ByteRange::All)? else { return Ok(None) };
        Ok(Some(v.read_all()?.into_owned()))
    }

    /// Store `value` at `key`, replacing any previous value.
    ///
    /// # Errors
    /// As [`put`](Self::put).
    fn set(&self, key: &str, value: Vec<u8>) -> Result<()> {
        self.put(key, Encoded::single(value), WriteMode::Overwrite).map(drop)
    }
}

/// Check that a write is allowed on a store that is `read_only`.
pub(crate) fn check_writable(read_only: bool, key: &str) -> Result<()> {
    if read_only { Err(Error::ReadOnly(key.to_string())) } else { Ok(()) }
}

/// Refuse keys that could leave a store's root or are not plain relative keys.
pub(crate) fn check_key(key: &str) -> Result<()> {
    if key.is_empty() || key.split('/').any(|c| c.is_empty() || c == "." || c == "..") {
        return Err(Error::InvalidArgument(format!("invalid store key {key:?}")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Barrier;

    use super::*;

    fn temp_dir(tag: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("sz-store-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    /// The contract every backend keeps, checked on each.
    fn contract(store: &dyn Store) {
        assert!(store.open("a/b/c", ByteRange::All).unwrap().is_none());
        store.set("a/b/c", b"hello world".to_vec()).unwrap();
        let v = store.open("a/b/c", ByteRange::Suffix(5)).unwrap().unwrap();
        assert_eq!(v.size(), 11);
        assert_eq!(&*v.read_all().unwrap(), b"hello world");
        assert_eq!(&*v.read_range(6, 5).unwrap(), b"world");
        assert_eq!(&*v.read(ByteRange::Suffix(5)).unwrap(), b"world");
        assert_eq!(&*v.read(ByteRange::Suffix(50)).unwrap(), b"hello world");
        assert!(matches!(v.read_range(6, 6), Err(Error::Decode { .. })));
        let first = v.version().cloned().expect("versioned store");
        drop(v);

        // Batched reads: ranges, suffixes, missing keys, in order.
        let got = store.read_batch(&[
            ReadRequest { key: "a/b/c", range: ByteRange::Range { offset: 0, len: 5 } },
            ReadRequest { key: "nope", range: ByteRange::All },
            ReadRequest { key: "a/b/c", range: ByteRange::Suffix(3) },
        ]);
        let got: Vec<Option<ReadResult>> = got.into_iter().map(Result::unwrap).collect();
        assert_eq!(got[0].as_ref().unwrap().bytes, b"hello");
        assert_eq!(got[0].as_ref().unwrap().total_size, 11);
        assert_eq!(got[0].as_ref().unwrap().version.as_ref(), Some(&first));
        assert!(got[1].is_none());
        assert_eq!(got[2].as_ref().unwrap().bytes, b"rld");

        // Conditional writes.
        assert!(matches!(store.put("a/b/c", Encoded::single(b"x".to_vec()), WriteMode::CreateOnly), Err(Error::Conflict { .. })));
        assert_eq!(store.get("a/b/c").unwrap().unwrap(), b"hello world", "a refused create-only write changes nothing");
        store.put("a/b/new", Encoded::single(b"new".to_vec()), WriteMode::CreateOnly).unwrap();
        // Some file systems keep mtime at coarse resolution: the inode alone tells rewrites apart.
        store.put("a/b/c", Encoded::from_parts(vec![b"HELLO ".to_vec(), b"WORLD".to_vec()]), WriteMode::IfVersion(first.clone())).unwrap();
        let second = store.open("a/b/c", ByteRange::All).unwrap().unwrap().version().cloned().unwrap();
        assert_ne!(first, second, "a rewrite must change the version");
        assert!(matches!(store.put("a/b/c", Encoded::single(b"stale".to_vec()), WriteMode::IfVersion(first)), Err(Error::Conflict { .. })));
        assert_eq!(store.get("a/b/c").unwrap().unwrap(), b"HELLO WORLD");

        // Listing.
        store.set("a/x", b"1".to_vec()).unwrap();
        store.set("ab", b"2".to_vec()).unwrap();
        assert_eq!(store.list("a/").unwrap(), vec!["a/b/c", "a/b/new", "a/x"]);
        assert_eq!(store.list("a").unwrap(), vec!["a/b/c", "a/b/new", "a/x", "ab"]);
        assert_eq!(store.list("a/b/").unwrap(), vec!["a/b/c", "a/b/new"]);
        assert!(store.list("zzz").unwrap().is_empty());

        store.delete("a/b/c").unwrap();
        store.delete("a/b/c").unwrap();
        assert!(store.open("a/b/c", ByteRange::All).unwrap().is_none());
        assert!(matches!(store.put("a/b/c", Encoded::single(vec![1]), WriteMode::IfVersion(second)), Err(Error::Conflict { .. })));
        assert!(store.set("../escape", vec![]).is_err());
        assert!(store.set("a/./b", vec![]).is_err());
    }

    /// Writers that each read a counter and write it back incremented with `IfVersion`, retrying
    /// on conflict: no increment may be lost.
    fn no_lost_updates(store: &(dyn Store + Sync)) {
        store.set("counter", 0u64.to_le_bytes().to_vec()).unwrap();
        let (threads, per_thread) = (4, 25);
        let barrier = Barrier::new(threads);
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(|| {
                    barrier.wait();
                    for _ in 0..per_thread {
                        loop {
                            let v = store.open("counter", ByteRange::All).unwrap().unwrap();
                            let n = u64::from_le_bytes(v.read_all().unwrap()[..8].try_into().unwrap());
                            let version = v.version().cloned().unwrap();
                            drop(v);
                            match store.put("counter", Encoded::single((n + 1).to_le_bytes().to_vec()), WriteMode::IfVersion(version)) {
                                Ok(_) => break,
                                Err(Error::Conflict { .. }) => {}
                                Err(e) => panic!("{e}"),
                            }
                        }
                    }
                });
            }
        });
        let n = u64::from_le_bytes(store.get("counter").unwrap().unwrap()[..8].try_into().unwrap());
        assert_eq!(n, (threads * per_thread) as u64);
    }

    #[test]
    fn fs_store_keeps_the_contract() {
        let dir = temp_dir("contract");
        let store = FsStore::new(&dir, false);
        contract(&store);
        no_lost_updates(&store);
        // No temporary file is left behind, and none is listed.
        let mut names = Vec::new();
        for e in walk(&dir) {
            names.push(e);
        }
        assert!(names.iter().all(|n| !n.ends_with(".partial")), "{names:?}");
        let ro = FsStore::new(&dir, true);
        assert!(matches!(ro.set("x", vec![]), Err(Error::ReadOnly(_))));
        assert!(matches!(ro.delete("a/x"), Err(Error::ReadOnly(_))));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn walk(dir: &Path) -> Vec<String> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                out.extend(walk(&e.path()));
            } else {
                out.push(e.file_name().to_string_lossy().into_owned());
            }
        }
        out
    }

    #[test]
    fn memory_store_keeps_the_contract() {
        let store = MemoryStore::new(false);
        contract(&store);
        no_lost_updates(&store);
        let ro = MemoryStore::new(true);
        assert!(matches!(ro.set("x", vec![]), Err(Error::ReadOnly(_))));
    }

    #[test]
    fn vectored_writes_keep_every_piece() {
        let dir = temp_dir("vec");
        let store = FsStore::new(&dir, false);
        let parts: Vec<Vec<u8>> = (0..3000u32).map(|i| vec![(i % 251) as u8; (i % 7) as usize]).collect();
        let want: Vec<u8> = parts.concat();
        store.put("k", Encoded::from_parts(parts), WriteMode::Overwrite).unwrap();
        assert_eq!(store.get("k").unwrap().unwrap(), want);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn snapshot_store() {
        let data = b"abcdef".to_vec();
        let mut s = SnapshotStore::new(false);
        // SAFETY: `data` outlives `s`.
        unsafe { s.insert_borrowed("k".into(), data.as_ptr(), data.len()) };
        s.insert_missing("m".into());
        let v = s.open("k", ByteRange::All).unwrap().unwrap();
        assert!(v.resident());
        assert_eq!(&*v.read_range(1, 2).unwrap(), b"bc");
        drop(v);
        assert!(s.open("m", ByteRange::All).unwrap().is_none());
        assert!(s.open("zzz", ByteRange::All).is_err());
        s.set("k", vec![1]).unwrap();
        s.delete("m").unwrap();
        assert!(matches!(s.put("k", Encoded::single(vec![2]), WriteMode::CreateOnly), Err(Error::Unsupported(_))));
        assert_eq!(s.take_writes(), vec![("k".to_string(), Some(vec![1])), ("m".to_string(), None)]);
    }
}
