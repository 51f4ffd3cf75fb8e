//! # sparsezarr-core
//!
//! The pure-Rust core of sparsezarr: a chunk engine for Zarr arrays built on the
//! [`zarrs`](https://docs.rs/zarrs) crate. It reads and writes batches of chunks (fetch, decode,
//! scatter; gather, encode, store) concurrently, with native fast paths for the hot codecs and a
//! sharding implementation that reads only the inner chunks needed and rewrites only the inner
//! chunks that change.
//!
//! Layers, bottom up (no module imports one above it; `docs/architecture.md` has the picture):
//! - [`error`], [`dtype`]: the error type and element types.
//! - [`store`]: the one store interface ([`store::Store`]) and its backends.
//! - [`runtime`]: the process-wide thread pools.
//! - [`engine`]: the dense chunk engine (codec plans, sharding, selections, strided copies).
//! - [`sparse`], [`csr`], [`virt`], [`mtx`]: sparse arrays, CSR/CSC stores, virtual arrays, Matrix
//!   Market input, all built on the engine and the store interface.
//!
//! This crate has no Python dependency; `sparsezarr-python` binds it.

pub mod csr;
pub mod dtype;
pub mod engine;
pub mod error;
pub mod index_cache;
pub mod metadata;
pub mod mtx;
pub mod runtime;
pub mod sparse;
pub mod store;
pub mod virt;

pub use error::{Error, Result};
