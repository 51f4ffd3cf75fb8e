//! A directory on the local file system (zarr-python's `LocalStore`).
//!
//! Reads use positioned reads on one open file, so all ranges of one [`ValueReader`] come from
//! the same stored version even if the key is replaced meanwhile. Writes are atomic: the value is
//! written to a uniquely named temporary file beside the key (vectored writes, blocks allocated
//! up front for large values) and renamed over it, so an interrupted write never leaves a
//! truncated value behind. Conditional writes: create-only links the temporary file to the key
//! (which fails if the key exists); replace-if-version locks the stored file (`flock`), checks
//! that it is still the version the writer read and still the one at the key, then renames.
//! Versions are [`Version::File`] (device, inode, modification time, size).
//!
//! Durability is opt-in ([`FsStore::with_durable`]): each value is then flushed to the device
//! (`fdatasync`) before it is renamed into place, and its directory (`fsync`) after, so a write
//! that returned survives a power loss. Without it, a write that returned survives the crash of
//! the process (the kernel holds it) but a power loss may drop the last seconds of writes; the
//! rename still guarantees that a key holds a complete old or a complete new value.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use super::{ByteRange, Capabilities, Encoded, Store, ValueReader, Version, WriteMode, check_key, check_writable};
use crate::error::{Error, Result};

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

/// A directory on the local file system.
#[derive(Debug)]
pub struct FsStore {
    root: PathBuf,
    read_only: bool,
    durable: bool,
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
        Self { root, read_only, durable: false, cache_id: h.finish(), known_dirs: Mutex::new(HashSet::new()) }
    }

    /// Flush every value and its directory to the device before a write returns (see the
    /// module's description; costs one `fdatasync` and one directory `fsync` per value).
    #[must_use]
    pub fn with_durable(mut self, durable: bool) -> Self {
        self.durable = durable;
        self
    }

    /// Whether writes are flushed to the device before they return.
    pub fn durable(&self) -> bool {
        self.durable
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, key: &str) -> Result<PathBuf> {
        check_key(key)?;
        Ok(self.root.join(key))
    }

    fn tmp_path(dir: &Path, path: &Path) -> PathBuf {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("chunk");
        dir.join(format!(".{name}.{}.{}.partial", std::process::id(), TMP_COUNTER.fetch_add(1, Ordering::Relaxed)))
    }

    /// Write `value` to a new temporary file in the key's directory and hand its path to
    /// `commit`, which moves it into place (and removes it on success if it does not consume
    /// it); the temporary file never outlives a failure. Retries
    /// once if the directory vanished meanwhile (an array deleted and recreated).
    fn write_then(&self, key: &str, value: &Encoded, commit: &dyn Fn(&Path, &Path) -> std::io::Result<()>) -> Result<()> {
        let path = self.path(key)?;
        let dir = path.parent().unwrap_or(&self.root).to_path_buf();
        self.ensure_dir(&dir, key)?;
        let tmp = Self::tmp_path(&dir, &path);
        let write = || -> std::io::Result<()> {
            let mut f = File::create(&tmp)?;
            preallocate(&f, value.len());
            write_all_parts(&mut f, value.parts())?;
            if self.durable {
                f.sync_data()?;
            }
            drop(f);
            commit(&tmp, &path)?;
            if self.durable {
                sync_dir(&dir)?;
            }
            Ok(())
        };
        let mut result = write();
        if let Err(e) = &result
            && e.kind() == ErrorKind::NotFound
        {
            let _ = std::fs::remove_file(&tmp);
            self.known_dirs.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&dir);
            self.ensure_dir(&dir, key)?;
            result = write();
        }
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result.map_err(|e| {
            if e.kind() == ErrorKind::AlreadyExists {
                Error::Conflict { key: key.to_string(), message: "the key already has a value".into() }
            } else {
                Error::io(key, e)
            }
        })
    }

    fn list_into(&self, dir: &Path, rel: &str, prefix: &str, out: &mut Vec<String>) -> Result<()> {
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == ErrorKind::NotFound || e.kind() == ErrorKind::NotADirectory => return Ok(()),
            Err(e) => return Err(Error::io(rel, e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| Error::io(rel, e))?;
            let Some(name) = entry.file_name().to_str().map(str::to_string) else { continue };
            if name.starts_with('.') && name.ends_with(".partial") {
                continue; // a write in progress
            }
            let key = if rel.is_empty() { name } else { format!("{rel}/{name}") };
            if !(key.starts_with(prefix) || prefix.starts_with(&format!("{key}/"))) {
                continue;
            }
            let kind = entry.file_type().map_err(|e| Error::io(&key, e))?;
            if kind.is_dir() {
                self.list_into(&entry.path(), &key, prefix, out)?;
            } else if key.starts_with(prefix) {
                out.push(key);
            }
        }
        Ok(())
    }

    fn ensure_dir(&self, dir: &Path, key: &str) -> Result<()> {
        {
            let known = self.known_dirs.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if known.contains(dir) {
                return Ok(());
            }
        }
        if self.durable {
            // Directories created here must outlive a power loss too: each new one is recorded
            // in its parent.
            let mut missing = Vec::new();
            let mut d = dir;
            while !d.exists() {
                missing.push(d.to_path_buf());
                match d.parent() {
                    Some(p) => d = p,
                    None => break,
                }
            }
            std::fs::create_dir_all(dir).map_err(|e| Error::io(key, e))?;
            for m in &missing {
                if let Some(parent) = m.parent() {
                    sync_dir(parent).map_err(|e| Error::io(key, e))?;
                }
            }
        } else {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(key, e))?;
        }
        self.known_dirs.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(dir.to_path_buf());
        Ok(())
    }
}

/// Flush a directory's entries (a rename or unlink in it) to the device.
///
/// # Errors
/// Returns the error of opening or syncing the directory.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
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

fn version_of(meta: &std::fs::Metadata) -> Version {
    Version::File {
        dev: meta.dev(),
        ino: meta.ino(),
        mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
        len: meta.len(),
    }
}

/// An open file.
struct FsValue {
    key: String,
    file: File,
    len: u64,
    version: Version,
}

impl ValueReader for FsValue {
    fn key(&self) -> &str {
        &self.key
    }

    fn size(&self) -> u64 {
        self.len
    }

    fn version(&self) -> Option<&Version> {
        Some(&self.version)
    }

    fn read_all(&self) -> Result<Cow<'_, [u8]>> {
        let mut buf = Vec::with_capacity(usize::try_from(self.len).unwrap_or(0));
        (&self.file).read_to_end(&mut buf).map_err(|e| Error::io(&self.key, e))?;
        Ok(Cow::Owned(buf))
    }

    fn read_range(&self, offset: u64, len: u64) -> Result<Cow<'_, [u8]>> {
        let (offset, len) = ByteRange::Range { offset, len }.resolve(&self.key, self.len)?;
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
}

/// Hold an exclusive `flock` on `f` until dropped.
struct FileLock<'a>(&'a File);

impl<'a> FileLock<'a> {
    fn new(f: &'a File) -> std::io::Result<Self> {
        use std::os::fd::AsRawFd;
        // SAFETY: a valid open file descriptor; flock has no memory effects.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Self(f))
    }
}

impl Drop for FileLock<'_> {
    fn drop(&mut self) {
        use std::os::fd::AsRawFd;
        // SAFETY: as in `new`; unlocking a lock this process holds.
        unsafe { libc::flock(self.0.as_raw_fd(), libc::LOCK_UN) };
    }
}

impl Store for FsStore {
    fn capabilities(&self) -> Capabilities {
        Capabilities { cheap_ranges: true, atomic_replace: true, conditional_writes: true, listing: true }
    }

    fn open(&self, key: &str, _first: ByteRange) -> Result<Option<Box<dyn ValueReader + '_>>> {
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
        Ok(Some(Box::new(FsValue { key: key.to_string(), file, len: meta.len(), version: version_of(&meta) })))
    }

    fn put(&self, key: &str, value: Encoded, mode: WriteMode) -> Result<Option<Version>> {
        check_writable(self.read_only, key)?;
        let conflict = |message: &str| Error::Conflict { key: key.to_string(), message: message.to_string() };
        match mode {
            // The hot path: no extra system call to report the new version.
            WriteMode::Overwrite => {
                self.write_then(key, &value, &|tmp, path| std::fs::rename(tmp, path))?;
                return Ok(None);
            }
            // link(2) fails with EEXIST if the key has a value: atomic create-only.
            WriteMode::CreateOnly => {
                self.write_then(key, &value, &|tmp, path| std::fs::hard_link(tmp, path).and_then(|()| std::fs::remove_file(tmp)))?
            }
            WriteMode::IfVersion(expected) => {
                let path = self.path(key)?;
                let held = match File::open(&path) {
                    Ok(f) => f,
                    Err(e) if e.kind() == ErrorKind::NotFound => return Err(conflict("the value was deleted since it was read")),
                    Err(e) => return Err(Error::io(key, e)),
                };
                let _lock = FileLock::new(&held).map_err(|e| Error::io(key, e))?;
                // Under the lock, no other conditional writer can replace the key; check that the
                // file is the version read and is still the one at the key.
                let mine = version_of(&held.metadata().map_err(|e| Error::io(key, e))?);
                let at_key = std::fs::metadata(&path).map(|m| version_of(&m)).ok();
                if mine != expected || at_key.as_ref() != Some(&expected) {
                    return Err(conflict("the value was replaced since it was read"));
                }
                self.write_then(key, &value, &|tmp, path| std::fs::rename(tmp, path))?;
            }
        }
        let meta = std::fs::metadata(self.path(key)?).map_err(|e| Error::io(key, e))?;
        Ok(Some(version_of(&meta)))
    }

    fn delete(&self, key: &str) -> Result<()> {
        check_writable(self.read_only, key)?;
        let path = self.path(key)?;
        match std::fs::remove_file(&path) {
            Ok(()) if self.durable => path.parent().map_or(Ok(()), |d| sync_dir(d).map_err(|e| Error::io(key, e))),
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound || e.kind() == ErrorKind::NotADirectory => Ok(()),
            Err(e) => Err(Error::io(key, e)),
        }
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>> {
        let mut out = Vec::new();
        self.list_into(&self.root, "", prefix, &mut out)?;
        out.sort_unstable();
        Ok(out)
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
