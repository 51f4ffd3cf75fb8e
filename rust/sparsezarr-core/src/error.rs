//! The error type of the core crate.
//!
//! Every fallible operation returns [`Result`]. The bindings map each variant to one Python
//! exception class, so the variants are chosen by what a Python user must be able to tell apart.

use std::fmt;

/// Errors raised by the sparsezarr core.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The array (data type, codec, chunk grid, selection kind, ...) is valid Zarr but not handled
    /// by the Rust engine. Callers may fall back to another implementation.
    #[error("not supported by the sparsezarr engine: {0}")]
    Unsupported(String),
    /// The array or codec metadata is malformed.
    #[error("invalid metadata: {0}")]
    InvalidMetadata(String),
    /// Stored bytes could not be decoded (corrupt, truncated, checksum mismatch).
    #[error("cannot decode {key:?}: {message}")]
    Decode {
        /// Store key of the chunk or shard.
        key: String,
        /// What went wrong.
        message: String,
    },
    /// Data could not be encoded.
    #[error("cannot encode {key:?}: {message}")]
    Encode {
        /// Store key of the chunk or shard.
        key: String,
        /// What went wrong.
        message: String,
    },
    /// A storage operation failed.
    #[error("storage error on {key:?}: {source}")]
    Io {
        /// Store key involved.
        key: String,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A conditional write found the stored value changed (or present, for create-only): another
    /// writer got there first. Nothing was written; the caller may read again and retry.
    #[error("conflicting write to {key:?}: {message}")]
    Conflict {
        /// Store key involved.
        key: String,
        /// What was found.
        message: String,
    },
    /// An error raised by code outside the core (a Python store's exception), carried through
    /// unchanged so the bindings can re-raise it as it was.
    #[error("{key:?}: {source}")]
    External {
        /// Store key involved.
        key: String,
        /// The original error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A write was attempted on a read-only store.
    #[error("store is read-only; cannot write {0:?}")]
    ReadOnly(String),
    /// A selection does not fit the array or chunk it is applied to.
    #[error("invalid selection: {0}")]
    Selection(String),
    /// An argument is invalid (shape or dtype mismatch, bad value).
    #[error("{0}")]
    InvalidArgument(String),
    /// A buffer that the metadata implies could not be allocated (a chunk, shard or array larger
    /// than memory); nothing was changed.
    #[error("cannot allocate {0}")]
    OutOfMemory(String),
    /// A bug: an internal invariant was violated (including a caught panic).
    #[error("internal error in sparsezarr: {0}")]
    Internal(String),
}

/// Result type of the core crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A zero-filled buffer of `len` bytes, or [`Error::OutOfMemory`] (naming `what`) if the
/// allocator refuses it, instead of aborting the process. Every buffer whose size comes from
/// stored metadata (a chunk, a shard, a whole array) is allocated through this, so that a
/// hostile or simply huge array raises an exception. Zeroed by the allocator (`calloc`: fresh
/// pages from the kernel are not written twice).
///
/// # Errors
/// [`Error::OutOfMemory`] if `len` bytes cannot be allocated.
pub fn zeroed(len: usize, what: &dyn std::fmt::Display) -> Result<Vec<u8>> {
    if len == 0 {
        return Ok(Vec::new());
    }
    let too_large = || Error::OutOfMemory(format!("{len} bytes for {what}"));
    let layout = std::alloc::Layout::array::<u8>(len).map_err(|_| too_large())?;
    // SAFETY: the layout has a non-zero size (len > 0).
    let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
    if ptr.is_null() {
        return Err(too_large());
    }
    // SAFETY: `ptr` comes from the global allocator with the layout of `[u8; len]`, all `len`
    // bytes are initialized (zeroed), and the capacity is exactly `len`.
    Ok(unsafe { Vec::from_raw_parts(ptr, len, len) })
}

impl Error {
    /// A decode error for `key`.
    pub fn decode(key: impl Into<String>, message: impl fmt::Display) -> Self {
        Self::Decode { key: key.into(), message: message.to_string() }
    }

    /// An encode error for `key`.
    pub fn encode(key: impl Into<String>, message: impl fmt::Display) -> Self {
        Self::Encode { key: key.into(), message: message.to_string() }
    }

    /// An I/O error for `key`.
    pub fn io(key: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io { key: key.into(), source }
    }

    /// A decode error raised while checking caller-supplied data becomes
    /// [`Error::InvalidArgument`] (bad input, not corrupt storage).
    #[must_use]
    pub fn into_input_error(self) -> Self {
        match self {
            Self::Decode { message, .. } => Self::InvalidArgument(message),
            other => other,
        }
    }

    /// Attach a store key to a decode error that was raised without one.
    #[must_use]
    pub fn with_key(self, key: &str) -> Self {
        match self {
            Self::Decode { key: k, message } if k.is_empty() => Self::Decode { key: key.to_string(), message },
            Self::Encode { key: k, message } if k.is_empty() => Self::Encode { key: key.to_string(), message },
            other => other,
        }
    }
}

/// Run `f`, turning a panic into [`Error::Internal`] so that no panic crosses an FFI boundary.
pub fn catch_panic<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(payload) => {
            let msg = if let Some(s) = payload.downcast_ref::<&str>() {
                (*s).to_string()
            } else if let Some(s) = payload.downcast_ref::<String>() {
                s.clone()
            } else {
                "unknown panic".to_string()
            };
            Err(Error::Internal(msg))
        }
    }
}
