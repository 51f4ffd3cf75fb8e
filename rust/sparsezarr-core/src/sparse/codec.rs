//! `sparsezarr.sparse` as a zarrs array-to-bytes codec (registered with zarrs' codec plugins).
//!
//! Through this codec any zarrs-based reader (and `sparsezarr.Pipeline`) reads and writes sparse
//! arrays densely, like any other array. The sparse API ([`super::array`]) uses the same format
//! without ever building dense chunks.

use std::borrow::Cow;
use std::num::NonZeroU64;
use std::sync::{Arc, Mutex};

use zarrs::array::codec::api::{
    ArrayCodecTraits, ArrayToBytesCodecTraits, Codec, CodecError, CodecMetadataOptions, CodecOptions, CodecPluginV3, CodecTraits, CodecTraitsV3,
    PartialDecoderCapability, PartialEncoderCapability, RecommendedConcurrency,
};
use zarrs::array::{ArrayBytes, ArrayBytesRaw, BytesRepresentation, DataType, FillValue};
use zarrs::metadata::Configuration;
use zarrs::metadata::v3::MetadataV3;
use zarrs::plugin::{PluginCreateError, ZarrVersion};

use super::chunk::{SparseChunkCodec, SparseCodecConfig};
use crate::dtype::ElemType;
use crate::engine::codec::EngineOptions;

/// A chunk codec built for (chunk shape, data type, fill value).
type CachedCodec = (Vec<u64>, DataType, Vec<u8>, Arc<SparseChunkCodec>);

/// The `sparsezarr.sparse` codec for zarrs.
#[derive(Debug)]
pub struct SparseCodec {
    config: SparseCodecConfig,
    /// Chunk codecs built per (shape, data type, fill value) on first use.
    cache: Mutex<Vec<CachedCodec>>,
}

zarrs::plugin::impl_extension_aliases!(SparseCodec, v3: "sparsezarr.sparse");

inventory::submit! {
    CodecPluginV3::new::<SparseCodec>()
}

impl CodecTraitsV3 for SparseCodec {
    fn create(metadata: &MetadataV3) -> Result<Codec, PluginCreateError> {
        let cfg = metadata.configuration().map(|c| serde_json::Value::Object(c.clone().into())).unwrap_or_default();
        let config = SparseCodecConfig::from_json(&cfg).map_err(|e| PluginCreateError::Other(e.to_string()))?;
        Ok(Codec::ArrayToBytes(Arc::new(SparseCodec::new(config))))
    }
}

fn err(e: impl std::fmt::Display) -> CodecError {
    CodecError::Other(e.to_string())
}

impl SparseCodec {
    /// A codec with `config`.
    #[must_use]
    pub fn new(config: SparseCodecConfig) -> Self {
        Self { config, cache: Mutex::new(Vec::new()) }
    }

    fn chunk_codec(&self, shape: &[NonZeroU64], data_type: &DataType, fill: &FillValue) -> Result<Arc<SparseChunkCodec>, CodecError> {
        let shape: Vec<u64> = shape.iter().map(|n| n.get()).collect();
        let fill = fill.as_ne_bytes();
        let mut cache = self.cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((_, _, _, c)) = cache.iter().find(|(s, d, f, _)| *s == shape && d == data_type && f.as_slice() == fill) {
            return Ok(c.clone());
        }
        let elem = ElemType::from_data_type(data_type).map_err(err)?;
        let codec = Arc::new(SparseChunkCodec::new(&self.config, &shape, elem, fill, &EngineOptions::default()).map_err(err)?);
        if cache.len() > 16 {
            cache.clear();
        }
        cache.push((shape, data_type.clone(), fill.to_vec(), codec.clone()));
        Ok(codec)
    }
}

impl CodecTraits for SparseCodec {
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn configuration(&self, _version: ZarrVersion, _options: &CodecMetadataOptions) -> Option<Configuration> {
        match serde_json::to_value(&self.config) {
            Ok(serde_json::Value::Object(map)) => Some(map.into()),
            _ => None,
        }
    }

    fn partial_decoder_capability(&self) -> PartialDecoderCapability {
        PartialDecoderCapability { partial_read: false, partial_decode: false }
    }

    fn partial_encoder_capability(&self) -> PartialEncoderCapability {
        PartialEncoderCapability { partial_encode: false }
    }
}

impl ArrayCodecTraits for SparseCodec {
    fn recommended_concurrency(&self, _shape: &[NonZeroU64], _data_type: &DataType) -> Result<RecommendedConcurrency, CodecError> {
        Ok(RecommendedConcurrency::new_maximum(1))
    }
}

impl ArrayToBytesCodecTraits for SparseCodec {
    fn into_dyn(self: Arc<Self>) -> Arc<dyn ArrayToBytesCodecTraits> {
        self as Arc<dyn ArrayToBytesCodecTraits>
    }

    fn encoded_representation(
        &self,
        _shape: &[NonZeroU64],
        _data_type: &DataType,
        _fill_value: &FillValue,
    ) -> Result<BytesRepresentation, CodecError> {
        Ok(BytesRepresentation::UnboundedSize)
    }

    fn encode<'a>(
        &self,
        bytes: ArrayBytes<'a>,
        shape: &[NonZeroU64],
        data_type: &DataType,
        fill_value: &FillValue,
        _options: &CodecOptions,
    ) -> Result<ArrayBytesRaw<'a>, CodecError> {
        let codec = self.chunk_codec(shape, data_type, fill_value)?;
        let dense = bytes.into_fixed()?;
        let chunk = codec.from_dense(&dense);
        Ok(Cow::Owned(codec.encode(&chunk).map_err(err)?))
    }

    fn decode<'a>(
        &self,
        bytes: ArrayBytesRaw<'a>,
        shape: &[NonZeroU64],
        data_type: &DataType,
        fill_value: &FillValue,
        _options: &CodecOptions,
    ) -> Result<ArrayBytes<'a>, CodecError> {
        let codec = self.chunk_codec(shape, data_type, fill_value)?;
        let chunk = codec.decode(&bytes).map_err(err)?;
        let n: u64 = shape.iter().map(|s| s.get()).product();
        #[allow(clippy::cast_possible_truncation)]
        let mut dense = vec![0u8; n as usize * codec.elem().size()];
        crate::engine::strided::fill_buffer(&mut dense, fill_value.as_ne_bytes());
        codec.scatter_dense(&chunk, &mut dense);
        Ok(ArrayBytes::new_flen(dense))
    }
}

#[cfg(test)]
mod tests {
    use crate::engine::codec::{EngineOptions, ValueSource};
    use crate::engine::selection::Selection;
    use crate::engine::strided::RawView;
    use crate::engine::{ArrayEngine, ChunkRequest, Concurrency};
    use crate::store::{SnapshotStore, Store};

    #[test]
    fn registered_with_zarrs_and_usable_densely() {
        let meta = r#"{"zarr_format":3,"node_type":"array","shape":[6,8],"data_type":"float64",
            "chunk_grid":{"name":"regular","configuration":{"chunk_shape":[3,8]}},
            "chunk_key_encoding":{"name":"default"},"fill_value":0.0,
            "codecs":[{"name":"sharding_indexed","configuration":{"chunk_shape":[3,4],
              "codecs":[{"name":"sparsezarr.sparse","configuration":{"layout":"coo",
                 "coordinate_codecs":[{"name":"bytes","configuration":{"endian":"little"}}],
                 "value_codecs":[{"name":"bytes","configuration":{"endian":"little"}},{"name":"zstd","configuration":{"level":1,"checksum":false}}]}}],
              "index_codecs":[{"name":"bytes","configuration":{"endian":"little"}},{"name":"crc32c"}]}}]}"#;
        let engine = ArrayEngine::from_metadata_json(meta, None, EngineOptions::default(), Concurrency::default()).unwrap();
        let mut data = vec![0f64; 48];
        data[7] = 1.0;
        data[40] = -3.5;
        let bytes: Vec<u8> = data.iter().flat_map(|v| v.to_ne_bytes()).collect();
        let view = RawView::c_order_const(&bytes, &[6, 8], 8);
        let store = SnapshotStore::new(false);
        let reqs: Vec<ChunkRequest> =
            (0..2).map(|i| ChunkRequest { key: format!("c/{i}/0"), selection: Selection::whole(&[3, 8], &[3 * i, 0]), complete: true }).collect();
        engine.write(&store, &reqs, &ValueSource::Array { view: &view, swap: 0 }, false).unwrap();
        let writes = store.take_writes();
        assert_eq!(writes.len(), 2);
        let mut back = SnapshotStore::new(true);
        for (k, v) in writes {
            back.insert_owned(k, v.unwrap());
        }
        let mut out = vec![0u8; 48 * 8];
        let ov = RawView::c_order(&mut out, &[6, 8], 8);
        engine.read(&back, &reqs, &ov, 0).unwrap();
        assert_eq!(out, bytes);
        assert!(back.read_only());
    }
}
