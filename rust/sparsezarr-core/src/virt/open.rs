//! Finding and opening the components of a virtual array: path confinement, URL allow-lists,
//! cycle and depth checks, and the check of each component's metadata against the document.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::csr::array1d::Array1d;
use crate::csr::gather::{CsrSource, read_indptr};
use crate::engine::codec::EngineOptions;
use crate::engine::{ArrayEngine, Concurrency};
use crate::error::{Error, Result};
use crate::metadata::{ArrayMeta, ChunkKeys};
use crate::sparse::array::SparseArray;
use crate::store::{ByteRange, FsStore, ObjectBackend, ObjectOptions, Store};

use super::spec::{LeafSpec, MAX_DEPTH, Storage};
use super::view::VirtualArray;

/// Key of the document of a stored view, below the view's path.
pub const DOCUMENT_KEY: &str = "virtual.json";

/// Where a document lives: a store and the key prefix of the directory (group) holding it, against
/// which component paths resolve.
#[derive(Clone)]
pub struct Location {
    /// The store; components may not leave it (its root is the view's root).
    pub store: Arc<dyn Store>,
    /// Key prefix of the directory holding the document (`""` or `"a/b/"`).
    pub dir: String,
}

/// What the opener allows and how components are read.
#[derive(Clone, Default)]
pub struct OpenOptions {
    /// Absolute URL prefixes components may use (`file:///data/atlas/`, `s3://bucket/atlas/`);
    /// empty = none.
    pub allow: Vec<String>,
    /// Stores the caller opened for URL prefixes (`s3://bucket/sample1.zarr`): a component whose
    /// URL lies below one is read through it (credentials and endpoint as the caller set them),
    /// and is allowed without an `allow` entry. Remote URLs under `allow` without a mount are
    /// opened with credentials from the environment.
    pub mounts: Vec<(String, Arc<dyn Store>)>,
    /// Codec options for components.
    pub engine: EngineOptions,
    /// Threads.
    pub concurrency: Concurrency,
}

impl std::fmt::Debug for OpenOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mounts: Vec<&str> = self.mounts.iter().map(|(url, _)| url.as_str()).collect();
        f.debug_struct("OpenOptions")
            .field("allow", &self.allow)
            .field("mounts", &mounts)
            .field("engine", &self.engine)
            .field("concurrency", &self.concurrency)
            .finish()
    }
}

/// An opened component.
// Components are few and long-lived (one per leaf, behind an `Arc`): boxing would save nothing.
#[allow(clippy::large_enum_variant)]
pub enum Component {
    /// A dense Zarr array.
    Dense {
        /// Its engine.
        engine: ArrayEngine,
        /// Chunk keys.
        keys: ChunkKeys,
        /// Chunk (shard) shape.
        chunk: Vec<u64>,
        /// Array shape.
        shape: Vec<u64>,
        /// Its store.
        store: Arc<dyn Store>,
    },
    /// A sparsezarr sparse array.
    Sparse {
        /// The array.
        array: SparseArray,
        /// Its store.
        store: Arc<dyn Store>,
    },
    /// A compressed sparse matrix group (CSR or CSC).
    Compressed {
        /// The matrix with its index pointer in memory.
        source: CsrSource,
        /// Its store.
        store: Arc<dyn Store>,
    },
    /// Another virtual array.
    View(VirtualArray),
}

fn confine(msg: String) -> Error {
    Error::InvalidArgument(format!("unsafe virtual array component: {msg}"))
}

/// Resolve `rel` (a relative `/`-separated path) against `dir` lexically, refusing anything that
/// leaves the store root.
///
/// # Errors
/// Returns [`Error::InvalidArgument`] for absolute paths, empty paths, backslashes or `..` that
/// climbs above the root.
pub fn join_confined(dir: &str, rel: &str) -> Result<String> {
    if rel.is_empty() || rel.starts_with('/') || rel.contains('\\') || rel.contains('\0') || rel.contains("://") {
        return Err(confine(format!("path {rel:?} must be relative (use \"url\" with an allow-list for absolute locations)")));
    }
    let mut parts: Vec<&str> = dir.split('/').filter(|p| !p.is_empty()).collect();
    for p in rel.split('/') {
        match p {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    return Err(confine(format!("path {rel:?} (from {dir:?}) escapes the view's root")));
                }
            }
            p => parts.push(p),
        }
    }
    if parts.is_empty() {
        return Err(confine(format!("path {rel:?} (from {dir:?}) names the view's root itself")));
    }
    Ok(parts.join("/"))
}

/// For a store on the local file system, refuse a component whose real location (after
/// following symbolic links) is outside the real root.
fn check_real_path(root: &Path, key: &str) -> Result<()> {
    let real_root = std::fs::canonicalize(root).map_err(|e| Error::io(root.display().to_string(), e))?;
    let target = root.join(key);
    let real = match std::fs::canonicalize(&target) {
        Ok(p) => p,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::io(key, std::io::Error::new(std::io::ErrorKind::NotFound, format!("virtual array component {key:?} does not exist"))));
        }
        Err(e) => return Err(Error::io(key, e)),
    };
    if !real.starts_with(&real_root) {
        return Err(confine(format!(
            "{key:?} resolves to {} through a symbolic link, outside the view's root {}",
            real.display(),
            real_root.display()
        )));
    }
    Ok(())
}

/// Lexically normalise an absolute file path (no `.`/`..`).
fn normalise_abs(path: &str) -> Result<PathBuf> {
    let mut out = PathBuf::from("/");
    for p in path.split('/') {
        match p {
            "" | "." => {}
            ".." => return Err(confine(format!("URL path {path:?} must not contain '..'"))),
            p => out.push(p),
        }
    }
    Ok(out)
}

/// A component's store, key prefix and identity (for cycle checks).
pub struct Resolved {
    /// The store holding it.
    pub store: Arc<dyn Store>,
    /// Key prefix of the component (`"a/b/"`).
    pub prefix: String,
    /// The directory holding it (for nested documents).
    pub dir: String,
    /// Identity: store id and key.
    pub id: String,
}

/// Resolve a component named by `leaf` from a document at `loc`.
///
/// # Errors
/// Confinement and allow-list violations as [`Error::InvalidArgument`].
pub fn resolve(leaf: &LeafSpec, loc: &Location, options: &OpenOptions) -> Result<Resolved> {
    if let Some(rel) = &leaf.path {
        let key = join_confined(&loc.dir, rel)?;
        if let Some(root) = loc.store.local_root() {
            check_real_path(root, &key)?;
        }
        let dir = match key.rfind('/') {
            Some(i) => format!("{}/", &key[..i]),
            None => String::new(),
        };
        return Ok(Resolved { id: format!("{}:{key}", loc.store.cache_id()), prefix: format!("{key}/"), dir, store: loc.store.clone() });
    }
    let url = leaf.url.as_deref().unwrap_or_default();
    if let Some(r) = resolve_mounted(url, options)? {
        return Ok(r);
    }
    let Some(path) = url.strip_prefix("file://") else {
        return resolve_remote(url, loc, options);
    };
    let norm = normalise_abs(path)?;
    let allowed = options.allow.iter().find_map(|prefix| {
        let p = prefix.strip_prefix("file://")?;
        let p = normalise_abs(p).ok()?;
        norm.starts_with(&p).then_some(p)
    });
    let Some(allowed) = allowed else {
        return Err(confine(format!("absolute URL {url:?} is not in the allow-list; pass allow=[...] with a prefix of it to open it")));
    };
    // Symbolic links must not lead out of the allowed prefix either.
    let real = std::fs::canonicalize(&norm).map_err(|e| Error::io(url, e))?;
    let real_allowed = std::fs::canonicalize(&allowed).map_err(|e| Error::io(url, e))?;
    if !real.starts_with(&real_allowed) {
        return Err(confine(format!(
            "URL {url:?} resolves to {} through a symbolic link, outside the allowed {}",
            real.display(),
            real_allowed.display()
        )));
    }
    let parent = norm.parent().unwrap_or_else(|| Path::new("/")).to_path_buf();
    let name = norm.file_name().and_then(|n| n.to_str()).ok_or_else(|| confine(format!("URL {url:?} names no array")))?.to_string();
    let store: Arc<dyn Store> = Arc::new(FsStore::new(parent, loc.store.read_only()));
    Ok(Resolved { id: format!("file:{}", norm.display()), prefix: format!("{name}/"), dir: String::new(), store })
}

/// Whether `url` is `base` or lies below it (whole path segments).
fn below(url: &str, base: &str) -> Option<String> {
    let base = base.trim_end_matches('/');
    let rest = url.strip_prefix(base)?;
    if rest.is_empty() {
        return Some(String::new());
    }
    rest.strip_prefix('/').map(|r| r.trim_end_matches('/').to_string())
}

/// Keys below a URL must stay below it: no `.`, `..` or empty segments.
fn check_relative(url: &str, rest: &str) -> Result<()> {
    if !rest.is_empty() && rest.split('/').any(|p| p.is_empty() || p == "." || p == "..") {
        return Err(confine(format!("URL {url:?} must not contain '.', '..' or empty path segments")));
    }
    Ok(())
}

fn in_store(url: &str, store: Arc<dyn Store>, rest: &str) -> Resolved {
    let (prefix, dir) = match rest.rfind('/') {
        _ if rest.is_empty() => (String::new(), String::new()),
        Some(i) => (format!("{rest}/"), format!("{}/", &rest[..i])),
        None => (format!("{rest}/"), String::new()),
    };
    Resolved { id: format!("url:{url}"), prefix, dir, store }
}

/// A component below a store the caller mounted (the longest matching mount wins).
fn resolve_mounted(url: &str, options: &OpenOptions) -> Result<Option<Resolved>> {
    let best = options.mounts.iter().filter_map(|(base, store)| below(url, base).map(|rest| (base.len(), rest, store))).max_by_key(|m| m.0);
    let Some((_, rest, store)) = best else { return Ok(None) };
    check_relative(url, &rest)?;
    Ok(Some(in_store(url, store.clone(), &rest)))
}

/// A component on a remote object store (`s3://`, `gs://`, `az://`, `http(s)://`), allowed by a
/// prefix in `allow`; opened with credentials from the environment.
fn resolve_remote(url: &str, loc: &Location, options: &OpenOptions) -> Result<Resolved> {
    let scheme = url.split("://").next().unwrap_or_default();
    if !url.contains("://") || !matches!(scheme, "s3" | "s3a" | "gs" | "gcs" | "az" | "abfs" | "abfss" | "http" | "https") {
        return Err(Error::Unsupported(format!("component URL {url:?}: only file://, s3://, gs://, az:// and http(s):// URLs are supported")));
    }
    let Some(rest) = options.allow.iter().find_map(|base| below(url, base)) else {
        return Err(confine(format!("absolute URL {url:?} is not in the allow-list; pass allow=[...] with a prefix of it to open it")));
    };
    check_relative(url, &rest)?;
    let store: Arc<dyn Store> = Arc::new(ObjectBackend::from_url(url, &[], loc.store.read_only(), ObjectOptions::default())?);
    Ok(in_store(url, store, ""))
}

fn read_json(store: &dyn Store, key: &str) -> Result<Option<serde_json::Value>> {
    let Some(v) = store.open(key, ByteRange::All)? else { return Ok(None) };
    let bytes = v.read_all()?;
    serde_json::from_slice(&bytes).map(Some).map_err(|e| Error::InvalidMetadata(format!("{key}: {e}")))
}

fn read_text(store: &dyn Store, key: &str) -> Result<Option<String>> {
    let Some(v) = store.open(key, ByteRange::All)? else { return Ok(None) };
    let bytes = v.read_all()?;
    String::from_utf8(bytes.into_owned()).map(Some).map_err(|e| Error::InvalidMetadata(format!("{key}: {e}")))
}

/// The Zarr v3 name of a numpy dtype string (`"<i4"` -> `"int32"`), for zarr v2 metadata.
#[must_use]
pub fn v3_name(numpy: &str) -> String {
    let t = numpy.trim_start_matches(['<', '>', '|', '=']);
    match t {
        "b1" => "bool",
        "i1" => "int8",
        "i2" => "int16",
        "i4" => "int32",
        "i8" => "int64",
        "u1" => "uint8",
        "u2" => "uint16",
        "u4" => "uint32",
        "u8" => "uint64",
        "f2" => "float16",
        "f4" => "float32",
        "f8" => "float64",
        "c8" => "complex64",
        "c16" => "complex128",
        _ => numpy,
    }
    .to_string()
}

fn json_dtype(meta: &serde_json::Value) -> String {
    if let Some(dt) = meta.get("data_type") {
        return match dt {
            serde_json::Value::String(s) => s.clone(),
            other => other.get("name").and_then(|n| n.as_str()).map_or_else(|| other.to_string(), str::to_string),
        };
    }
    meta.get("dtype").and_then(|d| d.as_str()).map(v3_name).unwrap_or_default()
}

fn json_shape(v: Option<&serde_json::Value>) -> Option<Vec<u64>> {
    v.and_then(|s| serde_json::from_value(s.clone()).ok())
}

fn mismatch(id: &str, what: &str, doc: &str, real: &str) -> Error {
    Error::InvalidMetadata(format!("virtual array component {id:?}: the document says {what} {doc}, the stored component has {real}"))
}

fn check_meta(leaf: &LeafSpec, key: &str, shape: &[u64], dtype: &str) -> Result<()> {
    if shape != leaf.shape.as_slice() {
        return Err(mismatch(key, "shape", &format!("{:?}", leaf.shape), &format!("{shape:?}")));
    }
    if dtype != leaf.data_type {
        return Err(mismatch(key, "data type", &leaf.data_type, dtype));
    }
    Ok(())
}

fn kind_error(key: &str, storage: Storage, found: &str) -> Error {
    Error::InvalidMetadata(format!("virtual array component {key:?} is {found}, but the view's storage is {}", format!("{storage:?}").to_lowercase()))
}

/// Open one component: read its metadata, check it against the document, and build its reader.
///
/// `chain` holds the identities of the documents being opened (for cycle detection).
///
/// # Errors
/// Missing components, mismatched metadata, wrong kinds, cycles, excessive depth.
pub fn open_component(leaf: &LeafSpec, loc: &Location, storage: Storage, options: &OpenOptions, chain: &[String]) -> Result<Component> {
    let r = resolve(leaf, loc, options)?;
    let store = r.store.clone();
    let key = r.prefix.trim_end_matches('/');
    let threads = options.concurrency.threads;
    if let Some(meta) = read_json(&*store, &format!("{}zarr.json", r.prefix))? {
        match meta.get("node_type").and_then(|v| v.as_str()) {
            Some("array") => {
                let text = meta.to_string();
                let is_sparse = meta.get("codecs").is_some_and(|c| c.to_string().contains(&format!("\"{}\"", crate::sparse::CODEC_NAME)));
                let shape = json_shape(meta.get("shape")).unwrap_or_default();
                check_meta(leaf, key, &shape, &json_dtype(&meta))?;
                return match (storage, is_sparse) {
                    (Storage::Dense, false) => dense(&text, &r, options),
                    (Storage::Sparse, true) => {
                        let array = SparseArray::from_metadata_json(&text, None, &r.prefix, options.engine.clone(), options.concurrency)?;
                        Ok(Component::Sparse { array, store })
                    }
                    (_, true) => Err(kind_error(key, storage, "a sparse array")),
                    _ => Err(kind_error(key, storage, "a dense array")),
                };
            }
            Some("group") => {
                let attrs = meta.get("attributes").cloned().unwrap_or_default();
                return compressed(leaf, &attrs, &r, storage, options, threads);
            }
            _ => return Err(Error::InvalidMetadata(format!("{}zarr.json: node_type must be array or group", r.prefix))),
        }
    }
    if let Some(text) = read_text(&*store, &format!("{}{DOCUMENT_KEY}", r.prefix))? {
        if chain.contains(&r.id) {
            let mut path: Vec<&str> = chain.iter().map(String::as_str).collect();
            path.push(&r.id);
            return Err(Error::InvalidMetadata(format!("virtual array cycle: {}", path.join(" -> "))));
        }
        if chain.len() >= MAX_DEPTH {
            return Err(Error::InvalidMetadata(format!("virtual arrays nest deeper than {MAX_DEPTH} levels at {key:?}")));
        }
        let mut sub_chain = chain.to_vec();
        sub_chain.push(r.id.clone());
        let view = VirtualArray::open(&text, Location { store, dir: r.dir.clone() }, options.clone(), sub_chain)?;
        check_meta(leaf, key, view.shape(), view.data_type())?;
        if view.storage() != storage {
            return Err(kind_error(key, storage, &format!("a {} virtual array", format!("{:?}", view.storage()).to_lowercase())));
        }
        if matches!(storage, Storage::Csr | Storage::Csc) {
            return Err(Error::Unsupported(format!(
                "{key:?} is a stored CSR/CSC view; this version gathers rows only from CSR/CSC groups (inline its document instead)"
            )));
        }
        return Ok(Component::View(view));
    }
    if let Some(meta) = read_json(&*store, &format!("{}.zarray", r.prefix))? {
        if storage != Storage::Dense {
            return Err(kind_error(key, storage, "a dense zarr v2 array"));
        }
        let shape = json_shape(meta.get("shape")).unwrap_or_default();
        check_meta(leaf, key, &shape, &json_dtype(&meta))?;
        return dense(&meta.to_string(), &r, options);
    }
    if read_json(&*store, &format!("{}.zgroup", r.prefix))?.is_some() {
        let attrs = read_json(&*store, &format!("{}.zattrs", r.prefix))?.unwrap_or_default();
        return compressed(leaf, &attrs, &r, storage, options, threads);
    }
    Err(Error::io(
        key,
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("virtual array component {key:?} does not exist (no zarr.json, .zarray, .zgroup or {DOCUMENT_KEY})"),
        ),
    ))
}

fn dense(text: &str, r: &Resolved, options: &OpenOptions) -> Result<Component> {
    let meta = ArrayMeta::parse(text, &r.prefix).map_err(|e| match e {
        Error::InvalidMetadata(m) => Error::InvalidMetadata(format!("{}: {m}", r.prefix)),
        other => other,
    })?;
    let engine = ArrayEngine::from_meta(&meta, None, options.engine.clone(), options.concurrency)?;
    Ok(Component::Dense { engine, keys: meta.keys, chunk: meta.chunk_shape, shape: meta.shape, store: r.store.clone() })
}

fn compressed(
    leaf: &LeafSpec,
    attrs: &serde_json::Value,
    r: &Resolved,
    storage: Storage,
    options: &OpenOptions,
    threads: usize,
) -> Result<Component> {
    let key = r.prefix.trim_end_matches('/');
    let enc = attrs.get("encoding-type").and_then(|v| v.as_str()).unwrap_or_default();
    let want = match storage {
        Storage::Csr => "csr_matrix",
        Storage::Csc => "csc_matrix",
        _ => return Err(kind_error(key, storage, if enc.is_empty() { "a group" } else { enc })),
    };
    if enc != want {
        return Err(kind_error(
            key,
            storage,
            &if enc.is_empty() { "a group without an anndata encoding-type".to_string() } else { format!("a {enc} group") },
        ));
    }
    let shape = json_shape(attrs.get("shape")).ok_or_else(|| Error::InvalidMetadata(format!("{key}: group attribute shape is missing")))?;
    let member = |name: &str| -> Result<(String, String, serde_json::Value)> {
        let prefix = format!("{}{name}/", r.prefix);
        let meta = match read_json(&*r.store, &format!("{prefix}zarr.json"))? {
            Some(m) => m,
            None => read_json(&*r.store, &format!("{prefix}.zarray"))?
                .ok_or_else(|| Error::InvalidMetadata(format!("{key}: array {name:?} is missing")))?,
        };
        Ok((meta.to_string(), prefix, meta))
    };
    let (dj, dp, dm) = member("data")?;
    let (ij, ip, _) = member("indices")?;
    let (pj, pp, _) = member("indptr")?;
    check_meta(leaf, key, &shape, &json_dtype(&dm))?;
    let data = Array1d::from_metadata_json(&dj, &dp, options.engine.clone(), options.concurrency)?;
    let indices = Array1d::from_metadata_json(&ij, &ip, options.engine.clone(), options.concurrency)?;
    let indptr = Array1d::from_metadata_json(&pj, &pp, options.engine.clone(), options.concurrency)?;
    let (major, minor) = if storage == Storage::Csr { (shape[0], shape[1]) } else { (shape[1], shape[0]) };
    let ptr = read_indptr(&indptr, &*r.store, threads).map_err(|e| e.with_key(&pp))?;
    if ptr.len() as u64 != major + 1 {
        return Err(Error::InvalidMetadata(format!("{key}: indptr has {} values for {major} rows", ptr.len())));
    }
    let source = CsrSource::new(data, indices, ptr, minor, threads)?;
    Ok(Component::Compressed { source, store: r.store.clone() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joins_stay_inside_the_root() {
        assert_eq!(join_confined("", "a/b").unwrap(), "a/b");
        assert_eq!(join_confined("views/", "../a").unwrap(), "a");
        assert_eq!(join_confined("x/y/", "./../z/./w").unwrap(), "x/z/w");
        for bad in ["../a", "/etc/passwd", "a/../../b", "", "..", "file:///x", "a\\b"] {
            assert!(join_confined("", bad).is_err(), "{bad}");
        }
        assert!(join_confined("v/", "../../a").is_err());
    }
}
