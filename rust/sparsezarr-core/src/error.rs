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
    /// A bug: an internal invariant was violated (including a caught panic).
    #[error("internal error in sparsezarr: {0}")]
    Internal(String),
}

/// Result type of the core crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

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
