//! Compressed sparse matrices stored as three one-dimensional Zarr arrays (`data`, `indices`,
//! `indptr`), the layout of anndata's `csr_matrix` / `csc_matrix` groups and of binsparse's CSR /
//! CSC formats: concurrent gathers of rows, and writes of whole matrices or streams of row blocks.

pub mod array1d;
pub mod gather;
pub mod ints;
pub mod stream;

pub use crate::dtype::ElemType;
pub use array1d::Array1d;
pub use gather::{CsrSource, Gathered, Major, filter_minor, read_indptr};
pub use stream::{CsrWriter, IntsIn, write_matrix};

/// Metadata of a sharded one-dimensional test array (zstd inner chunks, crc32c index).
#[cfg(test)]
pub(crate) fn test_meta(len: u64, dt: &str, shard: u64, inner: u64) -> String {
    format!(
        r#"{{"zarr_format":3,"node_type":"array","shape":[{len}],"data_type":"{dt}",
        "chunk_grid":{{"name":"regular","configuration":{{"chunk_shape":[{shard}]}}}},
        "chunk_key_encoding":{{"name":"default"}},"fill_value":0,
        "codecs":[{{"name":"sharding_indexed","configuration":{{"chunk_shape":[{inner}],
            "codecs":[{{"name":"bytes","configuration":{{"endian":"little"}}}},{{"name":"zstd","configuration":{{"level":1,"checksum":false}}}}],
            "index_codecs":[{{"name":"bytes","configuration":{{"endian":"little"}}}},{{"name":"crc32c"}}]}}}}]}}"#
    )
}
