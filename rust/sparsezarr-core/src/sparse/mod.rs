//! Sparse arrays: a chunked, sharded N-d sparse array stored with the `sparsezarr.sparse`
//! array-to-bytes codec (specified in `docs/spec/sparse-codec.md`).
//!
//! - [`chunk`]: the chunk format (encode, decode, validate) and element types.
//! - [`codec`]: the codec registered with zarrs, a dense view for any zarrs-based reader.
//! - [`array`]: reading and writing regions as coordinates and values, never densifying.

pub mod chunk;
pub mod codec;

pub use crate::dtype::ElemType;
pub use chunk::{CODEC_NAME, SparseChunk, SparseChunkCodec, SparseCodecConfig};
pub mod array;

pub use array::{ChunkKeys, Duplicates, Indices, ReadFormat, SparseArray, SparseInput, SparseResult};
