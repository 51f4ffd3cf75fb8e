//! The one metadata model: array metadata (zarr v3 `zarr.json` or v2 `.zarray`) is parsed here,
//! once, with the `zarrs` crate's [`ArrayMetadata`] and [`Array`], and chunk keys come from
//! zarrs' chunk key encodings (v3 `chunk_key_encoding`, v2 `dimension_separator`). The dense
//! engine, CSR arrays, sparse arrays and virtual-array components all start from an
//! [`ArrayMeta`].
//!
//! Errors: text that is not array metadata (invalid JSON, missing or malformed fields) is
//! [`Error::InvalidMetadata`]; valid Zarr the engine does not handle (storage transformers,
//! chunk grids other than `regular`, data types or codecs zarrs cannot build) is
//! [`Error::Unsupported`], which callers may answer by falling back.

use std::sync::Arc;

use zarrs::array::{Array, ArrayMetadata, CodecMetadataOptions, DataType, FillValue};
use zarrs::metadata::v3::MetadataV3;

use crate::dtype::data_type_name;
use crate::error::{Error, Result};

/// How chunk grid coordinates become store keys: the array's key prefix (its path in the store
/// and `/`, or empty) and zarrs' chunk key encoding.
#[derive(Debug, Clone)]
pub struct ChunkKeys {
    prefix: String,
    encoding: zarrs::array::ChunkKeyEncoding,
}

impl ChunkKeys {
    /// The key of the chunk at grid coordinates `coords`.
    #[must_use]
    pub fn key(&self, coords: &[u64]) -> String {
        let key = self.encoding.encode(coords);
        let mut k = String::with_capacity(self.prefix.len() + key.as_str().len());
        k.push_str(&self.prefix);
        k.push_str(key.as_str());
        k
    }
}

/// An array's metadata as the core uses it.
#[derive(Debug, Clone)]
pub struct ArrayMeta {
    /// 2 or 3.
    pub zarr_format: u8,
    /// Array shape.
    pub shape: Vec<u64>,
    /// Shape of the chunks of the regular chunk grid (the shards, for sharded arrays).
    pub chunk_shape: Vec<u64>,
    /// Data type.
    pub data_type: DataType,
    /// Fill value as zarrs reads it.
    pub fill_value: FillValue,
    /// The codec chain as v3 codec metadata (a v2 array's filters and compressor converted by
    /// zarrs).
    pub codecs: Vec<MetadataV3>,
    /// Chunk keys, with the array's prefix.
    pub keys: ChunkKeys,
}

/// The most dimensions an array may have (tensorstore's limit; zarr sets none).
pub const MAX_RANK: usize = 32;

/// The largest element a data type may declare (16 MiB: a fixed-length string of 4M characters).
/// zarrs builds the fill value when it parses metadata, so `"dtype": "<U68973482"` alone would
/// allocate 276 MB, and a longer one abort the process (found by the `metadata_json` fuzzer).
pub const MAX_ELEMENT_BYTES: u64 = 16 << 20;

/// The element size a data type declares, where it declares one: v2 `<U{n}` (4n bytes),
/// `|S{n}` and `|V{n}` (n bytes); v3 `r{bits}` and a `length_bytes` configuration.
fn declared_element_bytes(metadata: &ArrayMetadata) -> Option<u64> {
    match metadata {
        ArrayMetadata::V2(v2) => {
            let serde_json::Value::String(dtype) = serde_json::to_value(&v2.dtype).ok()? else { return None };
            let body = dtype.trim_start_matches(['<', '>', '|', '=']);
            let (kind, n) = body.split_at_checked(1)?;
            let n: u64 = n.parse().ok()?;
            match kind {
                "U" => Some(n.saturating_mul(4)),
                "S" | "V" => Some(n),
                _ => None,
            }
        }
        ArrayMetadata::V3(v3) => {
            let from_config = v3.data_type.configuration().and_then(|c| c.get("length_bytes")).and_then(serde_json::Value::as_u64);
            let raw_bits = v3.data_type.name().strip_prefix('r').and_then(|b| b.parse::<u64>().ok()).map(|bits| bits.div_ceil(8));
            from_config.or(raw_bits)
        }
    }
}

impl ArrayMeta {
    /// Parse array metadata JSON; chunk keys get `prefix` (the array's path in the store
    /// followed by `/`, or empty) in front.
    ///
    /// # Errors
    /// [`Error::InvalidMetadata`] for text that is not valid array metadata;
    /// [`Error::Unsupported`] for arrays the engine does not handle.
    pub fn parse(json: &str, prefix: &str) -> Result<Self> {
        let metadata: ArrayMetadata = serde_json::from_str(json).map_err(|e| Error::InvalidMetadata(format!("array metadata: {e}")))?;
        Self::from_metadata(metadata, prefix)
    }

    /// As [`parse`](Self::parse), from parsed metadata.
    ///
    /// # Errors
    /// As [`parse`](Self::parse).
    pub fn from_metadata(mut metadata: ArrayMetadata, prefix: &str) -> Result<Self> {
        // A zarr v2 array without dimensions has nothing to transpose, so its order is moot; zarrs
        // 0.23 builds an empty transpose for `"order": "F"` through `unwrap_unchecked` on an error
        // (undefined behaviour, found by the `metadata_json` fuzzer): hand it `"C"` instead.
        if let ArrayMetadata::V2(v2) = &mut metadata
            && v2.shape.is_empty()
        {
            v2.order = zarrs::metadata::v2::ArrayMetadataV2Order::C;
        }
        if let Some(n) = declared_element_bytes(&metadata)
            && n > MAX_ELEMENT_BYTES
        {
            return Err(Error::InvalidMetadata(format!("elements of {n} bytes; at most {MAX_ELEMENT_BYTES} are supported")));
        }
        let (zarr_format, chunk_shape) = match &metadata {
            ArrayMetadata::V3(v3) => {
                if !v3.storage_transformers.is_empty() {
                    return Err(Error::Unsupported("storage transformers".into()));
                }
                if v3.chunk_grid.name() != "regular" {
                    return Err(Error::Unsupported(format!("chunk grid {:?}", v3.chunk_grid.name())));
                }
                let shape: Vec<u64> = v3
                    .chunk_grid
                    .configuration()
                    .and_then(|c| c.get("chunk_shape"))
                    .and_then(|v| serde_json::from_value(v.clone()).ok())
                    .ok_or_else(|| Error::InvalidMetadata("regular chunk grid without chunk_shape".into()))?;
                (3, shape)
            }
            ArrayMetadata::V2(v2) => (2, v2.chunks.iter().map(|c| c.get()).collect()),
        };
        let v3_codecs = match &metadata {
            ArrayMetadata::V3(v3) => Some(v3.codecs.clone()),
            ArrayMetadata::V2(_) => None,
        };
        let array = Array::new_with_metadata(Arc::new(zarrs::storage::store::MemoryStore::new()), "/", metadata)
            .map_err(|e| Error::Unsupported(e.to_string()))?;
        let shape = array.shape().to_vec();
        if shape.len() > MAX_RANK {
            return Err(Error::InvalidMetadata(format!("{} dimensions; at most {MAX_RANK} are supported", shape.len())));
        }
        // Products of the shape are computed everywhere: they must fit in 64 bits.
        let product = |s: &[u64]| s.iter().try_fold(1u64, |n, &d| n.checked_mul(d));
        if product(&shape).is_none() {
            return Err(Error::InvalidMetadata(format!("shape {shape:?} holds more than 2^64 elements")));
        }
        let elem = array.data_type().fixed_size().unwrap_or(1) as u64;
        if product(&chunk_shape).and_then(|n| n.checked_mul(elem)).is_none() {
            return Err(Error::InvalidMetadata(format!("chunk shape {chunk_shape:?} holds more than 2^64 bytes")));
        }
        if chunk_shape.len() != shape.len() || chunk_shape.contains(&0) {
            return Err(Error::InvalidMetadata(format!("chunk shape {chunk_shape:?} does not fit the array shape {shape:?}")));
        }
        let codecs = v3_codecs.unwrap_or_else(|| array.codecs().create_metadatas(&CodecMetadataOptions::default()));
        let keys = ChunkKeys { prefix: prefix.to_string(), encoding: array.chunk_key_encoding().clone() };
        Ok(Self { zarr_format, shape, chunk_shape, data_type: array.data_type().clone(), fill_value: array.fill_value().clone(), codecs, keys })
    }

    /// The v3 name of the data type (e.g. `int32`; a v2 `<i4` is `int32` too).
    #[must_use]
    pub fn data_type_name(&self) -> String {
        data_type_name(&self.data_type)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v3(encoding: &str) -> String {
        format!(
            r#"{{"zarr_format":3,"node_type":"array","shape":[10,20],"data_type":"int32","chunk_grid":{{"name":"regular","configuration":{{"chunk_shape":[5,5]}}}},"chunk_key_encoding":{encoding},"fill_value":7,"codecs":[{{"name":"bytes","configuration":{{"endian":"little"}}}}]}}"#
        )
    }

    #[test]
    fn chunk_keys_follow_the_encodings() {
        let m = ArrayMeta::parse(&v3(r#"{"name":"default","configuration":{"separator":"."}}"#), "a/b/").unwrap();
        assert_eq!(m.keys.key(&[1, 2]), "a/b/c.1.2");
        let m = ArrayMeta::parse(&v3(r#"{"name":"default"}"#), "").unwrap();
        assert_eq!(m.keys.key(&[3, 0]), "c/3/0");
        let m = ArrayMeta::parse(&v3(r#"{"name":"v2"}"#), "").unwrap();
        assert_eq!(m.keys.key(&[1, 2]), "1.2");
        let v2 = r#"{"zarr_format":2,"shape":[10],"chunks":[4],"dtype":"<i8","compressor":null,"fill_value":0,"filters":null,"order":"C","dimension_separator":"/"}"#;
        let m = ArrayMeta::parse(v2, "x/").unwrap();
        assert_eq!((m.zarr_format, m.keys.key(&[4]), m.data_type_name()), (2, "x/4".to_string(), "int64".to_string()));
        assert_eq!(m.chunk_shape, vec![4]);
    }

    #[test]
    fn data_types_declaring_huge_elements_are_refused_before_zarrs_builds_their_fill_value() {
        let v2 = |dtype: &str| format!(r#"{{"shape":[2],"chunks":[2],"dtype":"{dtype}","fill_value":null,"order":"C","zarr_format":2}}"#);
        for dtype in ["<U68973482", "|S999999999999", "|V17000000"] {
            let err = ArrayMeta::parse(&v2(dtype), "").unwrap_err();
            assert!(matches!(err, Error::InvalidMetadata(_)) && err.to_string().contains("bytes; at most"), "{dtype}: {err}");
        }
        // A short string type is not refused by the size check (whatever else zarrs says of it).
        assert!(!ArrayMeta::parse(&v2("<U16"), "").is_err_and(|e| e.to_string().contains("bytes; at most")));
        let v3 = v3(r#"{"name":"default"}"#)
            .replace(r#""data_type":"int32""#, r#""data_type":"r536870912""#)
            .replace(r#""fill_value":7"#, r#""fill_value":"0x00""#);
        assert!(ArrayMeta::parse(&v3, "").unwrap_err().to_string().contains("bytes; at most"));
    }

    #[test]
    fn a_zarr_v2_array_without_dimensions_in_f_order_is_read_as_c_order() {
        // Found by the metadata_json fuzzer: zarrs reached `unreachable_unchecked` on it.
        let doc = |order: &str| format!(r#"{{"shape":[],"chunks":[],"dtype":"<f4","fill_value":0,"order":"{order}","zarr_format":2}}"#);
        let f = ArrayMeta::parse(&doc("F"), "").unwrap();
        let c = ArrayMeta::parse(&doc("C"), "").unwrap();
        assert_eq!((f.shape.len(), f.chunk_shape.len()), (0, 0));
        assert_eq!(serde_json::to_string(&f.codecs).unwrap(), serde_json::to_string(&c.codecs).unwrap());
        // With dimensions, F order still becomes a transpose.
        let f2 = ArrayMeta::parse(&doc("F").replace(r#""shape":[],"chunks":[]"#, r#""shape":[4,6],"chunks":[2,3]"#), "").unwrap();
        assert!(serde_json::to_string(&f2.codecs).unwrap().contains("transpose"));
    }

    #[test]
    fn one_error_for_invalid_metadata_and_one_for_unsupported_arrays() {
        assert!(matches!(ArrayMeta::parse("{not json", ""), Err(Error::InvalidMetadata(_))));
        assert!(matches!(ArrayMeta::parse(r#"{"zarr_format":3}"#, ""), Err(Error::InvalidMetadata(_))));
        let rect = v3(r#"{"name":"default"}"#).replace(
            r#"{"name":"regular","configuration":{"chunk_shape":[5,5]}}"#,
            r#"{"name":"rectilinear","configuration":{"chunk_shapes":[[5,5],[20]]}}"#,
        );
        assert!(matches!(ArrayMeta::parse(&rect, ""), Err(Error::Unsupported(_))));
        let m = ArrayMeta::parse(&v3(r#"{"name":"default"}"#), "").unwrap();
        assert_eq!((m.shape.clone(), m.chunk_shape.clone(), m.data_type_name()), (vec![10, 20], vec![5, 5], "int32".to_string()));
    }
}
