//! [`ObjectBackend`]: the store interface on a remote object store (S3, GCS, Azure Blob Storage,
//! HTTP), through the `object_store` crate.
//!
//! - **Reads** are single GETs: a whole value, a byte range or a suffix (a shard's index), never a
//!   HEAD first: a GET's response carries the value's total size and its ETag. A batch runs its
//!   GETs concurrently on the process's I/O runtime, at most
//!   [`ObjectOptions::max_in_flight`] at once.
//! - A value opened with [`Store::open`] remembers the ETag of its first read; later range reads
//!   of it send `If-Match`, so a value replaced between two reads is an error
//!   ([`Error::Conflict`]), never a mix of two versions.
//! - **Writes** are single PUTs (atomic: readers see the old or the new object), or multipart
//!   uploads above [`ObjectOptions::multipart_threshold`] (the object appears whole when the upload
//!   completes). [`WriteMode::CreateOnly`] sends `If-None-Match: *` and [`WriteMode::IfVersion`]
//!   sends `If-Match` with the ETag that was read; a failed precondition is [`Error::Conflict`].

use std::borrow::Cow;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use object_store::path::Path as ObjectPath;
use object_store::{GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion, WriteMultipart};

use super::{ByteRange, Capabilities, Encoded, ReadRequest, ReadResult, Store, ValueReader, Version, WriteMode, check_key, check_writable};
use crate::error::{Error, Result};

/// Tuning of an [`ObjectBackend`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectOptions {
    /// Most requests of one batch in flight at once. Sized for latency, not for the core count:
    /// at 20 ms per round trip, 64 requests in flight move 64 chunks per round trip.
    pub max_in_flight: usize,
    /// Values at least this large are written with a multipart upload (unconditional writes only:
    /// object stores take conditions on single PUTs).
    pub multipart_threshold: u64,
    /// Size of one part of a multipart upload.
    pub part_size: usize,
}

impl Default for ObjectOptions {
    fn default() -> Self {
        Self { max_in_flight: 64, multipart_threshold: 64 << 20, part_size: 16 << 20 }
    }
}

/// A store on a remote object store; keys live below a prefix.
pub struct ObjectBackend {
    store: Arc<dyn ObjectStore>,
    prefix: String,
    url: String,
    read_only: bool,
    conditional: bool,
    options: ObjectOptions,
    scope: u64,
}

impl std::fmt::Debug for ObjectBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectBackend")
            .field("url", &self.url)
            .field("prefix", &self.prefix)
            .field("read_only", &self.read_only)
            .finish_non_exhaustive()
    }
}

impl ObjectBackend {
    /// Wrap `store`; keys are stored below `prefix` (no leading or trailing `/` needed). `url`
    /// names the location in messages and identifies it in cache keys; `conditional` says whether
    /// the store enforces `If-None-Match` / `If-Match` on PUTs (S3, GCS and Azure do; HTTP
    /// servers do not).
    #[must_use]
    pub fn new(store: Arc<dyn ObjectStore>, prefix: &str, url: &str, read_only: bool, conditional: bool, options: ObjectOptions) -> Self {
        let prefix = prefix.trim_matches('/').to_string();
        let mut h = std::collections::hash_map::DefaultHasher::new();
        ("object", url, &prefix).hash(&mut h);
        Self { store, prefix, url: url.to_string(), read_only, conditional, options, scope: h.finish() }
    }

    /// Open `url` (`s3://bucket/prefix`, `gs://…`, `az://container/…`, `abfs://…`,
    /// `http(s)://…`) with builder options (`object_store`'s configuration keys, for example
    /// `aws_endpoint`, `aws_region`, `aws_access_key_id`, `aws_skip_signature`). Credentials not
    /// given are taken from the environment (`AWS_*`, `GOOGLE_*`, `AZURE_*`) as each cloud's own
    /// tools do.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a URL or option the builder refuses.
    pub fn from_url(url: &str, options: &[(String, String)], read_only: bool, tuning: ObjectOptions) -> Result<Self> {
        let bad = |e: &dyn std::fmt::Display| Error::InvalidArgument(format!("cannot open object store {url:?}: {e}"));
        let parsed = url::Url::parse(url).map_err(|e| bad(&e))?;
        let (scheme, conditional) = match parsed.scheme() {
            "s3" | "s3a" => ("s3", true),
            "gs" | "gcs" => ("gs", true),
            "az" | "abfs" | "abfss" | "adl" | "azure" => ("az", true),
            "http" | "https" => ("http", false),
            other => return Err(bad(&format!("unsupported scheme {other:?}"))),
        };
        let path = parsed.path().to_string();
        let built: std::result::Result<(Arc<dyn ObjectStore>, String), String> = match scheme {
            "s3" => {
                configure(object_store::aws::AmazonS3Builder::from_env().with_url(url), options, |b, k: object_store::aws::AmazonS3ConfigKey, v| {
                    b.with_config(k, v)
                })
                .and_then(|b| b.build().map_err(|e| e.to_string()))
                .map(|s| (Arc::new(s) as Arc<dyn ObjectStore>, path))
            }
            "gs" => configure(
                object_store::gcp::GoogleCloudStorageBuilder::from_env().with_url(url),
                options,
                |b, k: object_store::gcp::GoogleConfigKey, v| b.with_config(k, v),
            )
            .and_then(|b| b.build().map_err(|e| e.to_string()))
            .map(|s| (Arc::new(s) as Arc<dyn ObjectStore>, path)),
            "az" => configure(
                object_store::azure::MicrosoftAzureBuilder::from_env().with_url(url),
                options,
                |b, k: object_store::azure::AzureConfigKey, v| b.with_config(k, v),
            )
            .and_then(|b| b.build().map_err(|e| e.to_string()))
            .map(|s| (Arc::new(s) as Arc<dyn ObjectStore>, path)),
            // The HTTP store is rooted at the URL; keys are relative to it.
            _ => {
                configure(object_store::http::HttpBuilder::new().with_url(url), options, |b, k: object_store::ClientConfigKey, v| b.with_config(k, v))
                    .and_then(|b| b.build().map_err(|e| e.to_string()))
                    .map(|s| (Arc::new(s) as Arc<dyn ObjectStore>, String::new()))
            }
        };
        let (store, prefix) = built.map_err(|e| bad(&e))?;
        Ok(Self::new(store, &prefix, url, read_only, conditional, tuning))
    }

    /// The URL this store was opened with.
    #[must_use]
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The tuning in effect.
    #[must_use]
    pub fn options(&self) -> ObjectOptions {
        self.options
    }

    fn path(&self, key: &str) -> ObjectPath {
        if self.prefix.is_empty() { ObjectPath::from(key) } else { ObjectPath::from(format!("{}/{key}", self.prefix)) }
    }

    fn version(&self, meta_etag: Option<String>, meta_version: Option<String>) -> Option<Version> {
        meta_etag.or(meta_version).map(|tag| Version::Tag { scope: self.scope, tag: Arc::from(tag) })
    }

    fn error(&self, key: &str, e: object_store::Error) -> Error {
        match e {
            object_store::Error::Precondition { .. } | object_store::Error::AlreadyExists { .. } | object_store::Error::NotModified { .. } => {
                Error::Conflict { key: key.to_string(), message: format!("{} changed or exists: {e}", self.url) }
            }
            object_store::Error::NotImplemented { .. } | object_store::Error::NotSupported { .. } => {
                Error::Unsupported(format!("{} ({key}): {e}", self.url))
            }
            other => Error::External { key: key.to_string(), source: Box::new(other) },
        }
    }

    /// One GET; `None` if the value does not exist. `if_match` makes a changed value a conflict.
    async fn get(&self, key: &str, range: ByteRange, if_match: Option<&str>) -> Result<Option<ReadResult>> {
        // An empty range or suffix is not a valid HTTP range: read the metadata only.
        let head = matches!(range, ByteRange::Suffix(0) | ByteRange::Range { len: 0, .. });
        let range_opt = match range {
            _ if head => None,
            ByteRange::All => None,
            ByteRange::Range { offset, len } => {
                let end = offset.checked_add(len).ok_or_else(|| Error::InvalidArgument(format!("byte range overflows for {key:?}")))?;
                Some(GetRange::Bounded(offset..end))
            }
            ByteRange::Suffix(n) => Some(GetRange::Suffix(n)),
        };
        let opts = GetOptions { range: range_opt, if_match: if_match.map(str::to_string), head, ..GetOptions::default() };
        let result = match self.store.get_opts(&self.path(key), opts).await {
            Ok(r) => r,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) if matches!(range, ByteRange::Range { .. }) && is_range_error(&e) => {
                return Err(Error::decode(key, format!("byte range {range:?} is outside the stored value (truncated data?): {e}")));
            }
            Err(e) => return Err(self.error(key, e)),
        };
        let total_size = result.meta.size;
        let version = self.version(result.meta.e_tag.clone(), result.meta.version.clone());
        let returned = result.range.clone();
        let bytes: Vec<u8> = if head { Vec::new() } else { Vec::from(result.bytes().await.map_err(|e| self.error(key, e))?) };
        if let ByteRange::Range { offset, len } = range
            && !head
            && (returned.start != offset || bytes.len() as u64 != len)
        {
            return Err(Error::decode(
                key,
                format!("byte range {offset}..{} is outside the stored value of {total_size} bytes (truncated data?)", offset.saturating_add(len)),
            ));
        }
        Ok(Some(ReadResult { bytes, total_size, version }))
    }

    async fn put_async(&self, key: &str, value: Encoded, mode: WriteMode) -> Result<Option<Version>> {
        let path = self.path(key);
        let size = value.len() as u64;
        let put_mode = match mode {
            WriteMode::Overwrite => PutMode::Overwrite,
            WriteMode::CreateOnly => PutMode::Create,
            WriteMode::IfVersion(Version::Tag { scope, tag }) if scope == self.scope => {
                PutMode::Update(UpdateVersion { e_tag: Some(tag.to_string()), version: None })
            }
            WriteMode::IfVersion(_) => {
                return Err(Error::Conflict { key: key.to_string(), message: "the version read belongs to another store".into() });
            }
        };
        if !matches!(put_mode, PutMode::Overwrite) && !self.conditional {
            return Err(Error::Unsupported(format!("{} cannot enforce conditional writes ({key})", self.url)));
        }
        if size >= self.options.multipart_threshold {
            if !matches!(put_mode, PutMode::Overwrite) {
                if size > 5 << 30 {
                    return Err(Error::Unsupported(format!("conditional writes above 5 GiB ({key}: {size} bytes)")));
                }
            } else {
                let upload = self.store.put_multipart(&path).await.map_err(|e| self.error(key, e))?;
                let mut writer = WriteMultipart::new_with_chunk_size(upload, self.options.part_size);
                for part in value.0 {
                    writer.put(bytes::Bytes::from(part));
                }
                let r = writer.finish().await.map_err(|e| self.error(key, e))?;
                return Ok(self.version(r.e_tag, r.version));
            }
        }
        let payload: PutPayload = value.0.into_iter().map(bytes::Bytes::from).collect();
        let r = self.store.put_opts(&path, payload, PutOptions { mode: put_mode, ..PutOptions::default() }).await.map_err(|e| self.error(key, e))?;
        Ok(self.version(r.e_tag, r.version))
    }
}

/// Apply `object_store` configuration options (`key`, `value`) to a builder through `with`;
/// an option the builder does not know is an error naming it.
fn configure<B, K>(builder: B, options: &[(String, String)], with: impl Fn(B, K, &str) -> B) -> std::result::Result<B, String>
where
    K: std::str::FromStr,
    K::Err: std::fmt::Display,
{
    options.iter().try_fold(builder, |b, (k, v)| k.parse::<K>().map(|key| with(b, key, v)).map_err(|e| e.to_string()))
}

/// Whether the server refused a range that starts past the end of the value (HTTP 416; the
/// `object_store` error carries the status only in its text).
fn is_range_error(e: &object_store::Error) -> bool {
    e.to_string().contains("416")
}

/// The process's I/O runtime: a small tokio runtime whose threads only wait on the network (the
/// requests in flight are bounded per store, not by this runtime's threads). Like the thread
/// pools of the runtime module, it is made anew in a forked child, and the parent's is leaked
/// there (its threads do not exist in the child).
///
/// # Errors
/// Returns [`Error::Internal`] if the operating system refuses to start its threads.
pub fn io_runtime() -> Result<&'static tokio::runtime::Runtime> {
    static IO: std::sync::Mutex<Option<(u32, &'static tokio::runtime::Runtime)>> = std::sync::Mutex::new(None);
    let pid = std::process::id();
    let mut slot = IO.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some((owner, rt)) = *slot
        && owner == pid
    {
        return Ok(rt);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("sparsezarr-io")
        .enable_all()
        .build()
        .map_err(|e| Error::Internal(format!("cannot start the I/O runtime: {e}")))?;
    let rt: &'static tokio::runtime::Runtime = Box::leak(Box::new(rt));
    *slot = Some((pid, rt));
    Ok(rt)
}

/// Run `f` on the process's I/O runtime and wait for it.
fn block_on<T>(f: impl Future<Output = Result<T>>) -> Result<T> {
    io_runtime()?.block_on(f)
}

impl Store for ObjectBackend {
    fn capabilities(&self) -> Capabilities {
        Capabilities { cheap_ranges: false, atomic_replace: true, conditional_writes: self.conditional, listing: true }
    }

    fn open(&self, key: &str, first: ByteRange) -> Result<Option<Box<dyn ValueReader + '_>>> {
        check_key(key)?;
        let Some(r) = block_on(self.get(key, first, None))? else { return Ok(None) };
        let (offset, _) = first.resolve(key, r.total_size)?;
        Ok(Some(Box::new(ObjectValue { backend: self, key: key.to_string(), size: r.total_size, version: r.version, offset, bytes: r.bytes })))
    }

    fn read_batch(&self, requests: &[ReadRequest<'_>]) -> Vec<Result<Option<ReadResult>>> {
        if let Some(bad) = requests.iter().find_map(|r| check_key(r.key).err()) {
            let message = bad.to_string();
            return requests.iter().map(|_| Err(Error::InvalidArgument(message.clone()))).collect();
        }
        let run = async {
            futures::stream::iter(requests.iter().map(|r| self.get(r.key, r.range, None)))
                .buffered(self.options.max_in_flight.max(1))
                .collect::<Vec<_>>()
                .await
        };
        match io_runtime() {
            Ok(rt) => rt.block_on(run),
            Err(e) => {
                let message = e.to_string();
                requests.iter().map(|_| Err(Error::Internal(message.clone()))).collect()
            }
        }
    }

    fn put(&self, key: &str, value: Encoded, mode: WriteMode) -> Result<Option<Version>> {
        check_writable(self.read_only, key)?;
        check_key(key)?;
        block_on(self.put_async(key, value, mode))
    }

    fn put_batch(&self, writes: Vec<(&str, Encoded, WriteMode)>) -> Vec<Result<Option<Version>>> {
        let run = async {
            futures::stream::iter(writes.into_iter().map(|(key, value, mode)| async move {
                check_writable(self.read_only, key)?;
                check_key(key)?;
                self.put_async(key, value, mode).await
            }))
            .buffered(self.options.max_in_flight.max(1))
            .collect::<Vec<_>>()
            .await
        };
        match io_runtime() {
            Ok(rt) => rt.block_on(run),
            Err(e) => vec![Err(e)],
        }
    }

    fn delete(&self, key: &str) -> Result<()> {
        check_writable(self.read_only, key)?;
        check_key(key)?;
        block_on(async {
            match self.store.delete(&self.path(key)).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(self.error(key, e)),
            }
        })
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>> {
        // Object stores list by whole path segments: list the directory the prefix ends in and
        // keep the keys that start with it.
        let dir = prefix.rfind('/').map_or("", |i| &prefix[..i]);
        let full = match (self.prefix.is_empty(), dir.is_empty()) {
            (true, _) => dir.to_string(),
            (false, true) => self.prefix.clone(),
            (false, false) => format!("{}/{dir}", self.prefix),
        };
        let strip = if self.prefix.is_empty() { 0 } else { self.prefix.len() + 1 };
        let listed: Vec<String> = block_on(async {
            let root = (!full.is_empty()).then(|| ObjectPath::from(full.as_str()));
            self.store.list(root.as_ref()).map_ok(|m| m.location.as_ref().to_string()).try_collect().await.map_err(|e| self.error(prefix, e))
        })?;
        let mut keys: Vec<String> = listed.into_iter().filter_map(|p| p.get(strip..).map(str::to_string)).filter(|k| k.starts_with(prefix)).collect();
        keys.sort_unstable();
        Ok(keys)
    }

    fn read_only(&self) -> bool {
        self.read_only
    }

    fn cache_id(&self) -> u64 {
        self.scope
    }
}

/// A value opened on an object store: the bytes of its first read, then one GET per further
/// range, each with `If-Match` on the version first read.
struct ObjectValue<'a> {
    backend: &'a ObjectBackend,
    key: String,
    size: u64,
    version: Option<Version>,
    offset: u64,
    bytes: Vec<u8>,
}

impl ObjectValue<'_> {
    fn fetch(&self, range: ByteRange) -> Result<Vec<u8>> {
        let tag = match &self.version {
            Some(Version::Tag { tag, .. }) => Some(tag.as_ref()),
            _ => None,
        };
        match block_on(self.backend.get(&self.key, range, tag))? {
            Some(r) => Ok(r.bytes),
            None => Err(Error::Conflict { key: self.key.clone(), message: "the value was deleted while it was being read".into() }),
        }
    }
}

impl ValueReader for ObjectValue<'_> {
    fn key(&self) -> &str {
        &self.key
    }

    fn size(&self) -> u64 {
        self.size
    }

    fn version(&self) -> Option<&Version> {
        self.version.as_ref()
    }

    fn resident(&self) -> bool {
        self.offset == 0 && self.bytes.len() as u64 == self.size
    }

    fn read_all(&self) -> Result<Cow<'_, [u8]>> {
        if self.resident() {
            return Ok(Cow::Borrowed(&self.bytes));
        }
        self.fetch(ByteRange::All).map(Cow::Owned)
    }

    fn read_range(&self, offset: u64, len: u64) -> Result<Cow<'_, [u8]>> {
        let (offset, len) = ByteRange::Range { offset, len }.resolve(&self.key, self.size)?;
        let end = self.offset + self.bytes.len() as u64;
        if offset >= self.offset && offset + len <= end {
            #[allow(clippy::cast_possible_truncation)]
            let start = (offset - self.offset) as usize;
            #[allow(clippy::cast_possible_truncation)]
            return Ok(Cow::Borrowed(&self.bytes[start..start + len as usize]));
        }
        if len == 0 {
            return Ok(Cow::Borrowed(&[]));
        }
        self.fetch(ByteRange::Range { offset, len }).map(Cow::Owned)
    }
}
