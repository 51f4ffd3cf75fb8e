//! # sparsezarr-core
//!
//! The pure-Rust core of sparsezarr: a chunk engine for Zarr arrays built on the
//! [`zarrs`](https://docs.rs/zarrs) crate. It reads and writes batches of chunks (fetch, decode,
//! scatter; gather, encode, store) concurrently, with native fast paths for the hot codecs and a
//! sharding implementation that reads only the inner chunks needed and rewrites only the inner
//! chunks that change.
//!
//! This crate has no Python dependency; `sparsezarr-python` binds it.

pub mod bytes_chain;
pub mod codec;
pub mod csr;
pub mod dtype;
pub mod engine;
pub mod error;
pub mod keys;
pub mod mtx;
pub mod runtime;
pub mod selection;
pub mod sharding;
pub mod sparse;
pub mod store;
pub mod strided;
pub mod virt;

pub use error::{Error, Result};
