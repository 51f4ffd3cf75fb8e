//! Stores the engine reads chunks from and writes chunks to.
//!
//! A [`ChunkStore`] hands out [`ValueReader`]s: an open value that can be read whole or by byte
//! ranges (sharded reads fetch only the inner chunks they need). Two implementations live here:
//!
//! - [`FsStore`]: a directory on the local file system (zarr-python's `LocalStore`). Reads use
//!   positioned reads on one open file; writes are atomic (a temporary file renamed over the key),
//!   so an interrupted write never leaves a truncated chunk behind.
//! - [`SnapshotStore`]: values that already live in memory (zarr-python's `MemoryStore`, or bytes
//!   fetched by Python for a codec-only pipeline). Reads borrow the memory; writes are collected
//!   and handed back to the caller, who applies them.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::codec::Encoded;
use crate::error::{Error, Result};

/// Identity of one stored version of a value: if it is unchanged, cached derived data (a shard
/// index) is still valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint {
    /// Size in bytes.
    pub len: u64,
    /// Modification time in nanoseconds.
    pub mtime_ns: i128,
    /// Inode number (atomic rewrites create a new inode).
    pub ino: u64,
    /// Device number.
    pub dev: u64,
}

/// An open stored value.
pub trait ValueReader: Send + Sync {
    /// The key this value is stored under.
    fn key(&self) -> &str;
    /// Size of the value in bytes.
    fn size(&self) -> u64;
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
    /// A fingerprint for cache validation, if this store has cheap ones.
    fn fingerprint(&self) -> Option<Fingerprint>;
}

/// A key-value store of chunks.
pub trait ChunkStore: Send + Sync {
    /// Open the value at `key`; `None` if there is none.
    ///
    /// # Errors
    /// Returns an error if the store cannot be accessed.
    fn open(&self, key: &str) -> Result<Option<Box<dyn ValueReader + '_>>>;
    /// Store `value` at `key`, replacing any previous value atomically.
    ///
    /// # Errors
    /// Returns [`Error::ReadOnly`] for read-only stores, or an I/O error.
    fn set(&self, key: &str, value: Vec<u8>) -> Result<()>;
    /// Store encoded pieces back to back at `key` (stores may avoid concatenating them).
    ///
    /// # Errors
    /// As [`set`](Self::set).
    fn set_encoded(&self, key: &str, value: Encoded) -> Result<()> {
        self.set(key, value.into_vec())
    }
    /// Remove the value at `key` (no error if absent).
    ///
    /// # Errors
    /// Returns [`Error::ReadOnly`] for read-only stores, or an I/O error.
    fn erase(&self, key: &str) -> Result<()>;
    /// Whether writes are refused.
    fn read_only(&self) -> bool;
    /// A number identifying this store's contents location (used in cache keys).
    fn cache_id(&self) -> u64;
    /// The directory this store keeps its keys in, for stores on the local file system (used to
    /// refuse symbolic links that lead out of a virtual array's root).
    fn local_root(&self) -> Option<&Path> {
        None
    }
}

/// Atomically exchange two paths (directories or files) on the same file system, so that a
/// reader sees either the old or the new one, never neither (Linux `renameat2(RENAME_EXCHANGE)`).
///
/// # Errors
/// Returns [`Error::Io`] if the exchange fails (both paths must exist), or
/// [`Error::Unsupported`] where the kernel or file system cannot exchange atomically.
pub fn exchange_paths(a: &Path, b: &Path) -> Result<()> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let c =
        |p: &Path| CString::new(p.as_os_str().as_bytes()).map_err(|_| Error::InvalidArgument(format!("path {} contains a NUL byte", p.display())));
    let (ca, cb) = (c(a)?, c(b)?);
    #[cfg(target_os = "linux")]
    {
        // SAFETY: both are valid NUL-terminated strings; AT_FDCWD resolves them like open(2).
        let r = unsafe { libc::renameat2(libc::AT_FDCWD, ca.as_ptr(), libc::AT_FDCWD, cb.as_ptr(), libc::RENAME_EXCHANGE) };
        if r == 0 {
            return Ok(());
        }
        let err = std::io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINVAL | libc::ENOSYS | libc::ENOTSUP) => {
                Err(Error::Unsupported(format!("atomic exchange of {} and {}: {err}", a.display(), b.display())))
            }
            _ => Err(Error::io(a.display().to_string(), err)),
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (ca, cb);
        Err(Error::Unsupported("atomic exchange of paths needs Linux".into()))
    }
}

fn check_range(key: &str, size: u64, offset: u64, len: u64) -> Result<()> {
    match offset.checked_add(len) {
        Some(end) if end <= size => Ok(()),
        _ => Err(Error::decode(
            key,
            format!("byte range {offset}..{} is outside the stored value of {size} bytes (truncated data?)", offset.saturating_add(len)),
        )),
    }
}

// ------------------------------------------------------------------------------------------------
// File system
// ------------------------------------------------------------------------------------------------

/// A directory on the local file system.
#[derive(Debug)]
pub struct FsStore {
    root: PathBuf,
    read_only: bool,
    cache_id: u64,
    known_dirs: Mutex<HashSet<PathBuf>>,
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

impl FsStore {
    /// A store rooted at `root`.
    pub fn new(root: impl Into<PathBuf>, read_only: bool) -> Self {
        use std::hash::{Hash, Hasher};
        let root = root.into();
        let mut h = std::collections::hash_map::DefaultHasher::new();
        root.hash(&mut h);
        Self { root, read_only, cache_id: h.finish(), known_dirs: Mutex::new(HashSet::new()) }
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, key: &str) -> Result<PathBuf> {
        let rel = Path::new(key);
        if key.is_empty() || rel.components().any(|c| !matches!(c, Component::Normal(_))) {
            return Err(Error::InvalidArgument(format!("invalid store key {key:?}")));
        }
        Ok(self.root.join(rel))
    }

    fn ensure_dir(&self, dir: &Path, key: &str) -> Result<()> {
        {
            let known = self.known_dirs.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if known.contains(dir) {
                return Ok(());
            }
        }
        std::fs::create_dir_all(dir).map_err(|e| Error::io(key, e))?;
        self.known_dirs.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(dir.to_path_buf());
        Ok(())
    }
}

/// Values at least this large get their blocks allocated before they are written.
const PREALLOCATE_BYTES: usize = 1 << 20;

/// Allocate the blocks of a new file of `len` bytes in one request before writing it (large
/// values only). On ext4 this replaces a delayed-allocation reservation per page with one extent
/// (measured here: 16 files of 2.7 MB written in 6.9 ms instead of 9.0 ms) and keeps the file in
/// one piece. Only a hint: file systems without `fallocate` simply skip it.
fn preallocate(f: &File, len: usize) {
    #[cfg(target_os = "linux")]
    if len >= PREALLOCATE_BYTES {
        use std::os::fd::AsRawFd;
        #[allow(clippy::cast_possible_wrap)]
        // SAFETY: a valid open file descriptor; mode 0 only allocates blocks, never changes data.
        let _ = unsafe { libc::fallocate(f.as_raw_fd(), 0, 0, len as libc::off_t) };
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (f, len);
}

/// Write every piece, in order, with vectored writes.
fn write_all_parts(f: &mut File, parts: &[Vec<u8>]) -> std::io::Result<()> {
    use std::io::IoSlice;
    let mut idx = 0; // first piece not fully written
    let mut off = 0; // bytes of that piece already written
    while idx < parts.len() {
        let slices: Vec<IoSlice<'_>> =
            std::iter::once(&parts[idx][off..]).chain(parts[idx + 1..].iter().map(Vec::as_slice)).take(1024).map(IoSlice::new).collect();
        let mut n = f.write_vectored(&slices)?;
        if n == 0 && slices.iter().any(|s| !s.is_empty()) {
            return Err(ErrorKind::WriteZero.into());
        }
        while idx < parts.len() && n >= parts[idx].len() - off {
            n -= parts[idx].len() - off;
            idx += 1;
            off = 0;
        }
        off += n;
    }
    Ok(())
}

/// An open file.
struct FsValue {
    key: String,
    file: File,
    fingerprint: Fingerprint,
}

impl ValueReader for FsValue {
    fn key(&self) -> &str {
        &self.key
    }

    fn size(&self) -> u64 {
        self.fingerprint.len
    }

    fn read_all(&self) -> Result<Cow<'_, [u8]>> {
        let mut buf = Vec::with_capacity(usize::try_from(self.fingerprint.len).unwrap_or(0));
        (&self.file).read_to_end(&mut buf).map_err(|e| Error::io(&self.key, e))?;
        Ok(Cow::Owned(buf))
    }

    fn read_range(&self, offset: u64, len: u64) -> Result<Cow<'_, [u8]>> {
        check_range(&self.key, self.fingerprint.len, offset, len)?;
        let mut buf = vec![0u8; usize::try_from(len).map_err(|_| Error::decode(&self.key, "range too large"))?];
        self.file.read_exact_at(&mut buf, offset).map_err(|e| {
            if e.kind() == ErrorKind::UnexpectedEof {
                Error::decode(&self.key, "stored value is shorter than expected (truncated?)")
            } else {
                Error::io(&self.key, e)
            }
        })?;
        Ok(Cow::Owned(buf))
    }

    fn fingerprint(&self) -> Option<Fingerprint> {
        Some(self.fingerprint)
    }
}

impl ChunkStore for FsStore {
    fn open(&self, key: &str) -> Result<Option<Box<dyn ValueReader + '_>>> {
        let path = self.path(key)?;
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::NotFound || e.kind() == ErrorKind::NotADirectory => return Ok(None),
            Err(e) => return Err(Error::io(key, e)),
        };
        let meta = file.metadata().map_err(|e| Error::io(key, e))?;
        if meta.is_dir() {
            return Ok(None);
        }
        let fingerprint = Fingerprint {
            len: meta.len(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
            ino: meta.ino(),
            dev: meta.dev(),
        };
        Ok(Some(Box::new(FsValue { key: key.to_string(), file, fingerprint })))
    }

    fn set(&self, key: &str, value: Vec<u8>) -> Result<()> {
        self.set_encoded(key, Encoded::single(value))
    }

    fn set_encoded(&self, key: &str, value: Encoded) -> Result<()> {
        if self.read_only {
            return Err(Error::ReadOnly(key.to_string()));
        }
        let path = self.path(key)?;
        let dir = path.parent().unwrap_or(&self.root).to_path_buf();
        self.ensure_dir(&dir, key)?;
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("chunk");
        let tmp = dir.join(format!(".{name}.{}.{}.partial", std::process::id(), TMP_COUNTER.fetch_add(1, Ordering::Relaxed)));
        let write = || -> std::io::Result<()> {
            let mut f = File::create(&tmp)?;
            preallocate(&f, value.parts().iter().map(Vec::len).sum());
            write_all_parts(&mut f, value.parts())?;
            drop(f);
            std::fs::rename(&tmp, &path)
        };
        let mut result = write();
        if let Err(e) = &result
            && e.kind() == ErrorKind::NotFound
        {
            // The directory vanished (e.g. the array was deleted and recreated): retry once.
            let _ = std::fs::remove_file(&tmp);
            self.known_dirs.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&dir);
            self.ensure_dir(&dir, key)?;
            result = write();
        }
        if let Err(e) = result {
            let _ = std::fs::remove_file(&tmp);
            return Err(Error::io(key, e));
        }
        Ok(())
    }

    fn erase(&self, key: &str) -> Result<()> {
        if self.read_only {
            return Err(Error::ReadOnly(key.to_string()));
        }
        let path = self.path(key)?;
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound || e.kind() == ErrorKind::NotADirectory => Ok(()),
            Err(e) => Err(Error::io(key, e)),
        }
    }

    fn read_only(&self) -> bool {
        self.read_only
    }

    fn local_root(&self) -> Option<&Path> {
        Some(&self.root)
    }

    fn cache_id(&self) -> u64 {
        self.cache_id
    }
}

// ------------------------------------------------------------------------------------------------
// In-memory snapshot
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
        check_range(&self.key, self.bytes.len() as u64, offset, len)?;
        #[allow(clippy::cast_possible_truncation)]
        Ok(Cow::Borrowed(&self.bytes[offset as usize..(offset + len) as usize]))
    }

    fn fingerprint(&self) -> Option<Fingerprint> {
        None
    }
}

impl ChunkStore for SnapshotStore {
    fn open(&self, key: &str) -> Result<Option<Box<dyn ValueReader + '_>>> {
        Ok(self.lookup(key)?.map(|bytes| Box::new(BytesValue { key: key.to_string(), bytes }) as Box<dyn ValueReader>))
    }

    fn set(&self, key: &str, value: Vec<u8>) -> Result<()> {
        if self.read_only {
            return Err(Error::ReadOnly(key.to_string()));
        }
        self.writes.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push((key.to_string(), Some(value)));
        Ok(())
    }

    fn erase(&self, key: &str) -> Result<()> {
        if self.read_only {
            return Err(Error::ReadOnly(key.to_string()));
        }
        self.writes.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push((key.to_string(), None));
        Ok(())
    }

    fn read_only(&self) -> bool {
        self.read_only
    }

    fn cache_id(&self) -> u64 {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fs_roundtrip_and_ranges() {
        let dir = std::env::temp_dir().join(format!("szfs-{}", std::process::id()));
        let store = FsStore::new(&dir, false);
        assert!(store.open("a/b/c").unwrap().is_none());
        store.set("a/b/c", b"hello world".to_vec()).unwrap();
        let v = store.open("a/b/c").unwrap().unwrap();
        assert_eq!(v.size(), 11);
        assert_eq!(&*v.read_all().unwrap(), b"hello world");
        assert_eq!(&*v.read_range(6, 5).unwrap(), b"world");
        assert!(matches!(v.read_range(6, 6), Err(Error::Decode { .. })));
        let fp = v.fingerprint().unwrap();
        drop(v);
        store.set("a/b/c", b"HELLO WORLD".to_vec()).unwrap();
        let fp2 = store.open("a/b/c").unwrap().unwrap().fingerprint().unwrap();
        assert_ne!(fp, fp2, "atomic rewrite must change the fingerprint");
        store.erase("a/b/c").unwrap();
        store.erase("a/b/c").unwrap();
        assert!(store.open("a/b/c").unwrap().is_none());
        assert!(store.set("../escape", vec![]).is_err());
        let ro = FsStore::new(&dir, true);
        assert!(matches!(ro.set("x", vec![]), Err(Error::ReadOnly(_))));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn vectored_writes_keep_every_piece() {
        let dir = std::env::temp_dir().join(format!("szvec-{}", std::process::id()));
        let store = FsStore::new(&dir, false);
        let parts: Vec<Vec<u8>> = (0..3000u32).map(|i| vec![(i % 251) as u8; (i % 7) as usize]).collect();
        let want: Vec<u8> = parts.concat();
        store.set_encoded("k", Encoded::from_parts(parts)).unwrap();
        assert_eq!(&*store.open("k").unwrap().unwrap().read_all().unwrap(), &want[..]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn snapshot_store() {
        let data = b"abcdef".to_vec();
        let mut s = SnapshotStore::new(false);
        // SAFETY: `data` outlives `s`.
        unsafe { s.insert_borrowed("k".into(), data.as_ptr(), data.len()) };
        s.insert_missing("m".into());
        assert_eq!(&*s.open("k").unwrap().unwrap().read_range(1, 2).unwrap(), b"bc");
        assert!(s.open("m").unwrap().is_none());
        assert!(s.open("zzz").is_err());
        s.set("k", vec![1]).unwrap();
        s.erase("m").unwrap();
        assert_eq!(s.take_writes(), vec![("k".to_string(), Some(vec![1])), ("m".to_string(), None)]);
    }
}
