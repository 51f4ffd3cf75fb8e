//! What a codec chain works on: a chunk's representation, the engine's options, and codec
//! metadata parsing shared by the dense and sparse engines.

use std::num::NonZeroU64;

use zarrs::array::{DataType, FillValue};
use zarrs::metadata::v3::MetadataV3;

pub use crate::dtype::data_type_name;
use crate::error::{Error, Result};

/// Options that affect decoding and encoding.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Verify checksums (crc32c and others) when decoding.
    pub validate_checksums: bool,
    /// Largest gap (bytes) between two inner chunks of a shard read with one request.
    pub coalesce_max_gap: u64,
    /// Largest size (bytes) of one coalesced request.
    pub coalesce_max_bytes: u64,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self { validate_checksums: true, coalesce_max_gap: 1 << 16, coalesce_max_bytes: 16 << 20 }
    }
}

/// Shape, data type and fill value of a chunk at one stage of a codec chain.
#[derive(Debug, Clone)]
pub struct ArrayRepr {
    /// Chunk shape.
    pub shape: Vec<u64>,
    /// Data type.
    pub data_type: DataType,
    /// Fill value.
    pub fill_value: FillValue,
}

impl ArrayRepr {
    /// Element size in bytes.
    ///
    /// # Errors
    /// Returns [`Error::Unsupported`] for variable-size data types.
    pub fn elem_size(&self) -> Result<usize> {
        self.data_type.fixed_size().ok_or_else(|| Error::Unsupported(format!("variable-size data type {}", self.data_type)))
    }

    /// Number of elements (`u64::MAX` if the product overflows; array metadata with such chunks
    /// is refused when it is parsed).
    #[must_use]
    pub fn num_elements(&self) -> u64 {
        self.shape.iter().try_fold(1u64, |n, &d| n.checked_mul(d)).unwrap_or(u64::MAX)
    }

    /// Size of the decoded chunk in bytes.
    ///
    /// # Errors
    /// Returns [`Error::Unsupported`] for variable-size data types, [`Error::OutOfMemory`] for a
    /// chunk that this platform cannot address.
    pub fn num_bytes(&self) -> Result<usize> {
        let elem = self.elem_size()?;
        self.shape
            .iter()
            .try_fold(1u64, |n, &d| n.checked_mul(d))
            .and_then(|n| n.checked_mul(elem as u64))
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| {
                Error::OutOfMemory(format!("a chunk of shape {:?} ({elem}-byte elements): more bytes than this platform addresses", self.shape))
            })
    }

    pub(crate) fn nz_shape(&self) -> Result<Vec<NonZeroU64>> {
        self.shape.iter().map(|&n| NonZeroU64::new(n).ok_or_else(|| Error::InvalidMetadata("chunk shape has a zero dimension".into()))).collect()
    }
}

/// A decode error from a codec (the key is attached by the caller).
pub(crate) fn codec_err(e: impl std::fmt::Display) -> Error {
    Error::decode("", e)
}

/// Build codec metadata from a JSON list (`[{"name": ..., "configuration": ...}, ...]`).
///
/// # Errors
/// Returns [`Error::InvalidMetadata`] if the JSON is not a codec list.
pub fn codecs_from_json(value: &serde_json::Value) -> Result<Vec<MetadataV3>> {
    serde_json::from_value(value.clone()).map_err(|e| Error::InvalidMetadata(format!("codec list: {e}")))
}
