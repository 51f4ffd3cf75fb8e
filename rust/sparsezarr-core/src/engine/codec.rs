//! Codec plans: a zarr codec chain bound to one chunk representation.
//!
//! A [`CodecPlan`] is built once per array from its codec metadata and turns stored bytes into
//! chunk elements and back. Codecs on the hot path run natively with reused per-thread contexts
//! (`bytes` in native byte order, `zstd`, `crc32c`) and `sharding_indexed` is the engine's own
//! (see [`crate::engine::shard_index`]); every other codec zarrs implements (blosc, gzip, zlib, bz2,
//! transpose, bitround, fletcher32, ...) runs through zarrs' codec traits.

use std::borrow::Cow;
use std::num::NonZeroU64;
use std::sync::Arc;

use zarrs::array::{ArrayBytes, ArrayToArrayCodecTraits, ArrayToBytesCodecTraits, BytesRepresentation, Codec, CodecOptions};
pub use zarrs::metadata::v3::MetadataV3;

use crate::engine::bytes_chain::{BytesChain, with_scratch};
use crate::engine::repr::codec_err;
pub use crate::engine::repr::{ArrayRepr, EngineOptions, codecs_from_json, data_type_name};
use crate::engine::selection::Selection;
use crate::engine::shard_index::{IndexCodec, ShardLayout};
use crate::engine::strided::{Direction, RawView, byteswap, copy_selection, fill_buffer, fill_selection};
use crate::error::{Error, Result};
use crate::index_cache::IndexCache;
use crate::runtime::try_map;
pub use crate::store::Encoded;
use crate::store::{ByteRange, BytesValue, ValueReader, Version};

#[derive(Debug)]
struct A2AStage {
    codec: Arc<dyn ArrayToArrayCodecTraits>,
    input: ArrayRepr,
    input_nz: Vec<NonZeroU64>,
}

#[derive(Debug)]
enum A2BStage {
    /// `bytes` codec, native byte order: the encoded bytes are the elements.
    NativeBytes,
    /// The engine's sharding codec.
    Sharding(Box<ShardingPlan>),
    /// Any other array-to-bytes codec (including `bytes` in a foreign byte order).
    Zarrs(Arc<dyn ArrayToBytesCodecTraits>),
}

/// A codec chain bound to one chunk representation.
#[derive(Debug)]
pub struct CodecPlan {
    repr: ArrayRepr,
    repr_nz: Vec<NonZeroU64>,
    elem_size: usize,
    a2a: Vec<A2AStage>,
    a2b_input: ArrayRepr,
    a2b_input_nz: Vec<NonZeroU64>,
    a2b: A2BStage,
    /// Size of the array-to-bytes output, if fixed.
    a2b_encoded: BytesRepresentation,
    b2b: BytesChain,
    codec_options: CodecOptions,
    options: EngineOptions,
}

fn is_native_endian(config: Option<&serde_json::Map<String, serde_json::Value>>) -> bool {
    match config.and_then(|c| c.get("endian")).and_then(|e| e.as_str()) {
        None => true,
        Some(e) => (e == "little") == cfg!(target_endian = "little"),
    }
}

impl CodecPlan {
    /// Build a plan for chunks of `repr` from codec metadata (zarr v3 form).
    ///
    /// # Errors
    /// Returns [`Error::Unsupported`] for codecs or data types the engine cannot run (callers may
    /// fall back), or [`Error::InvalidMetadata`] for malformed metadata.
    pub fn new(codecs: &[MetadataV3], repr: ArrayRepr, options: &EngineOptions) -> Result<Self> {
        let elem_size = repr.elem_size()?;
        let codec_options = CodecOptions::default().with_validate_checksums(options.validate_checksums);
        let mut a2a = Vec::new();
        let mut a2b: Option<A2BStage> = None;
        let mut b2b_meta: Vec<MetadataV3> = Vec::new();
        let mut current = repr.clone();
        for meta in codecs {
            let name = meta.name();
            if a2b.is_none() {
                if name == "sharding_indexed" {
                    a2b = Some(A2BStage::Sharding(Box::new(ShardingPlan::new(meta, current.clone(), options)?)));
                    continue;
                }
                if name == "bytes" && is_native_endian(meta.configuration().map(|c| &**c)) {
                    a2b = Some(A2BStage::NativeBytes);
                    continue;
                }
                match Codec::from_metadata(meta) {
                    Ok(Codec::ArrayToArray(codec)) => {
                        let input_nz = current.nz_shape()?;
                        let (shape, data_type, fill_value) = codec
                            .encoded_representation(&input_nz, &current.data_type, &current.fill_value)
                            .map_err(|e| Error::InvalidMetadata(format!("codec {name}: {e}")))?;
                        let next = ArrayRepr { shape: shape.iter().map(|n| n.get()).collect(), data_type, fill_value };
                        a2a.push(A2AStage { codec, input: current, input_nz });
                        current = next;
                    }
                    Ok(Codec::ArrayToBytes(codec)) => a2b = Some(A2BStage::Zarrs(codec)),
                    Ok(Codec::BytesToBytes(_)) => {
                        return Err(Error::InvalidMetadata(format!("bytes-to-bytes codec {name} before the array-to-bytes codec")));
                    }
                    Err(e) => {
                        if meta.must_understand() {
                            return Err(Error::Unsupported(format!("codec {name}: {e}")));
                        }
                    }
                }
            } else {
                b2b_meta.push(meta.clone());
            }
        }
        let a2b = a2b.ok_or_else(|| Error::InvalidMetadata("no array-to-bytes codec".into()))?;
        if a2b_needs_fixed(&a2b) {
            current.elem_size()?;
        }
        let a2b_input_nz = current.nz_shape()?;
        let a2b_encoded = match &a2b {
            A2BStage::NativeBytes => BytesRepresentation::FixedSize(current.num_bytes()? as u64),
            A2BStage::Sharding(_) => BytesRepresentation::UnboundedSize,
            A2BStage::Zarrs(c) => {
                c.encoded_representation(&a2b_input_nz, &current.data_type, &current.fill_value).map_err(|e| Error::InvalidMetadata(e.to_string()))?
            }
        };
        let b2b = BytesChain::new(&b2b_meta, a2b_encoded, options)?;
        Ok(Self {
            repr_nz: repr.nz_shape()?,
            repr,
            elem_size,
            a2a,
            a2b_input: current,
            a2b_input_nz,
            a2b,
            a2b_encoded,
            b2b,
            codec_options,
            options: options.clone(),
        })
    }

    /// The decoded chunk representation.
    #[must_use]
    pub fn repr(&self) -> &ArrayRepr {
        &self.repr
    }

    /// Element size in bytes.
    #[must_use]
    pub fn elem_size(&self) -> usize {
        self.elem_size
    }

    /// The sharding plan, if this chain is exactly one `sharding_indexed` codec (so that partial
    /// reads and writes of shards are possible).
    #[must_use]
    pub fn as_sharding(&self) -> Option<&ShardingPlan> {
        match (&self.a2b, self.a2a.is_empty(), self.b2b.is_empty()) {
            (A2BStage::Sharding(s), true, true) => Some(s),
            _ => None,
        }
    }

    /// What to read when opening a stored chunk: a shard's index (so that a remote store fetches
    /// it with the request that opens the shard), or the whole chunk.
    #[must_use]
    pub fn first_read(&self) -> ByteRange {
        self.as_sharding().map_or(ByteRange::All, |s| s.layout().index_byte_range())
    }

    /// Encoded size for a fixed-size chain (no compression), if it is fixed.
    #[must_use]
    pub fn fixed_encoded_size(&self) -> Option<u64> {
        match self.a2b_encoded {
            BytesRepresentation::FixedSize(n) => self.b2b.fixed_encoded_size(n),
            _ => None,
        }
    }

    /// Decode one stored chunk to its C-ordered element bytes.
    ///
    /// # Errors
    /// Returns [`Error::Decode`] (without a key; see [`Error::with_key`]) if the bytes are corrupt.
    pub fn decode<'a>(&self, encoded: Cow<'a, [u8]>) -> Result<Cow<'a, [u8]>> {
        let bytes = self.b2b.decode(encoded)?;
        let mut arr: Cow<'a, [u8]> = match &self.a2b {
            A2BStage::NativeBytes => {
                let want = self.a2b_input.num_bytes()?;
                if bytes.len() != want {
                    return Err(codec_err(format!("expected {want} decoded bytes, got {}", bytes.len())));
                }
                bytes
            }
            A2BStage::Sharding(plan) => {
                let value = BytesValue::new("", &bytes);
                let mut buf = crate::error::zeroed(self.a2b_input.num_bytes()?, &format_args!("a shard of shape {:?}", self.a2b_input.shape))?;
                let view = RawView::c_order(&mut buf, &self.a2b_input.shape, self.a2b_input.elem_size()?);
                plan.read_into(&value, &Selection::whole(&self.a2b_input.shape, &vec![0; self.a2b_input.shape.len()]), &view, 0, None)?;
                Cow::Owned(buf)
            }
            A2BStage::Zarrs(codec) => {
                let decoded = codec
                    .decode(bytes, &self.a2b_input_nz, &self.a2b_input.data_type, &self.a2b_input.fill_value, &self.codec_options)
                    .map_err(codec_err)?;
                decoded.into_fixed().map_err(codec_err)?
            }
        };
        for stage in self.a2a.iter().rev() {
            let decoded = stage
                .codec
                .decode(ArrayBytes::new_flen(arr), &stage.input_nz, &stage.input.data_type, &stage.input.fill_value, &self.codec_options)
                .map_err(codec_err)?;
            arr = decoded.into_fixed().map_err(codec_err)?;
        }
        let want = self.repr.num_bytes()?;
        if arr.len() != want {
            return Err(codec_err(format!("decoded chunk has {} bytes, expected {want}", arr.len())));
        }
        Ok(arr)
    }

    /// Encode C-ordered chunk elements.
    ///
    /// # Errors
    /// Returns [`Error::Encode`] (without a key) if a codec fails.
    pub fn encode(&self, chunk: Cow<'_, [u8]>) -> Result<Vec<u8>> {
        let enc = |e: &dyn std::fmt::Display| Error::encode("", e);
        let mut arr = chunk;
        for stage in &self.a2a {
            let encoded = stage
                .codec
                .encode(ArrayBytes::new_flen(arr), &stage.input_nz, &stage.input.data_type, &stage.input.fill_value, &self.codec_options)
                .map_err(|e| enc(&e))?;
            arr = encoded.into_fixed().map_err(|e| enc(&e))?;
        }
        let mut bytes: Cow<'_, [u8]> = match &self.a2b {
            A2BStage::NativeBytes => arr,
            A2BStage::Sharding(plan) => {
                let view = RawView::c_order_const(&arr, &self.a2b_input.shape, self.a2b_input.elem_size()?);
                let sel = Selection::whole(&self.a2b_input.shape, &vec![0; self.a2b_input.shape.len()]);
                match plan.write_from(None, &sel, &ValueSource::Array { view: &view, swap: 0 }, true)? {
                    Some(v) => Cow::Owned(v.into_vec()),
                    // An all-fill shard still needs bytes here (the outer chain encodes it).
                    None => Cow::Owned(plan.empty_shard()?),
                }
            }
            A2BStage::Zarrs(codec) => codec
                .encode(ArrayBytes::new_flen(arr), &self.a2b_input_nz, &self.a2b_input.data_type, &self.a2b_input.fill_value, &self.codec_options)
                .map_err(|e| enc(&e))?,
        };
        bytes = self.b2b.encode(bytes)?;
        Ok(bytes.into_owned())
    }

    /// Read the elements `sel` names from the stored chunk `value` into `out`.
    ///
    /// Sharded chains read only the inner chunks that are needed.
    ///
    /// # Errors
    /// Returns an error if the value is corrupt or the selection does not fit.
    pub fn read_into(&self, value: &dyn ValueReader, sel: &Selection, out: &RawView, swap: usize, cache: Option<&IndexCache>) -> Result<()> {
        if let Some(plan) = self.as_sharding() {
            return plan.read_into(value, sel, out, swap, cache);
        }
        let bytes = value.read_all()?;
        self.with_decoded(bytes, |chunk| {
            let view = RawView::c_order_const(chunk, &self.repr.shape, self.elem_size);
            copy_selection(&view, out, sel, Direction::ChunkToOut, swap)
        })
        .map_err(|e| e.with_key(value.key()))
    }

    /// Decode `encoded` and pass the chunk elements to `f`. The common chains (native `bytes`,
    /// optionally `zstd` and/or `crc32c`) decode into a reused per-thread buffer without
    /// allocating; others go through [`decode`](Self::decode).
    ///
    /// # Errors
    /// Returns the decode error or the error of `f`.
    pub fn with_decoded<R>(&self, encoded: Cow<'_, [u8]>, f: impl FnOnce(&[u8]) -> Result<R>) -> Result<R> {
        if self.a2a.is_empty() && matches!(self.a2b, A2BStage::NativeBytes) {
            let want = self.repr.num_bytes()?;
            return self.b2b.with_decoded(encoded, want, |bytes| {
                if bytes.len() != want {
                    return Err(codec_err(format!("expected {want} decoded bytes, got {}", bytes.len())));
                }
                f(bytes)
            });
        }
        let chunk = self.decode(encoded)?;
        f(&chunk)
    }

    /// Produce the new stored bytes of a chunk after writing `src` to the elements `sel` names.
    ///
    /// `existing` is the currently stored value (if any and if the write does not cover the whole
    /// chunk). Returns `None` if the chunk should be deleted (every element is the fill value and
    /// `write_empty` is false).
    ///
    /// # Errors
    /// Returns an error if the existing value is corrupt or encoding fails.
    pub fn write_from(
        &self,
        existing: Option<&dyn ValueReader>,
        sel: &Selection,
        src: &ValueSource<'_>,
        write_empty: bool,
    ) -> Result<Option<Encoded>> {
        if let Some(plan) = self.as_sharding() {
            return plan.write_from(existing, sel, src, write_empty);
        }
        let n = self.repr.num_bytes()?;
        let covers = sel.covers(&self.repr.shape);
        let merge = |chunk: &mut [u8]| -> Result<Option<Encoded>> {
            {
                let view = RawView::c_order(chunk, &self.repr.shape, self.elem_size);
                src.copy_into(&view, sel)?;
            }
            if !write_empty && self.is_fill(chunk) {
                return Ok(None);
            }
            self.encode(Cow::Borrowed(chunk)).map(|e| Some(Encoded::single(e)))
        };
        match existing {
            Some(v) if !covers => {
                let bytes = v.read_all()?;
                let mut chunk = self.decode(bytes).map_err(|e| e.with_key(v.key()))?.into_owned();
                merge(&mut chunk)
            }
            _ => with_scratch(n, |buf| {
                if !covers {
                    fill_buffer(buf, self.repr.fill_value.as_ne_bytes());
                }
                merge(buf)
            }),
        }
    }

    /// Whether every element of a decoded chunk equals the fill value (as zarr-python decides it:
    /// NaN equals NaN, and zeros are compared bit for bit).
    #[must_use]
    pub fn is_fill(&self, chunk: &[u8]) -> bool {
        crate::dtype::all_fill(chunk, &self.repr.data_type, &self.repr.fill_value)
    }

    /// The decoded fill-value chunk, encoded (the bytes of an all-fill chunk).
    ///
    /// # Errors
    /// Returns an error if encoding fails.
    pub fn encode_fill_chunk(&self) -> Result<Vec<u8>> {
        let mut buf = crate::error::zeroed(self.repr.num_bytes()?, &format_args!("a chunk of shape {:?}", self.repr.shape))?;
        fill_buffer(&mut buf, self.repr.fill_value.as_ne_bytes());
        self.encode(Cow::Owned(buf))
    }

    /// Engine options this plan was built with.
    #[must_use]
    pub fn options(&self) -> &EngineOptions {
        &self.options
    }

    /// Shape as non-zero values (for zarrs APIs).
    #[must_use]
    pub fn shape_nz(&self) -> &[NonZeroU64] {
        &self.repr_nz
    }
}

fn a2b_needs_fixed(stage: &A2BStage) -> bool {
    matches!(stage, A2BStage::NativeBytes | A2BStage::Sharding(_))
}

/// Where written elements come from.
pub enum ValueSource<'a> {
    /// An array (the output-side selection indexes it), with a byte-swap unit (0 = native).
    Array {
        /// The input array.
        view: &'a RawView<'a>,
        /// Byte-swap unit for a foreign byte order, 0 for native.
        swap: usize,
    },
    /// One element (native byte order) written to every selected position.
    Scalar(&'a [u8]),
}

impl ValueSource<'_> {
    /// Copy the selected elements into a chunk view.
    ///
    /// # Errors
    /// Returns [`Error::Selection`] if the selection does not fit.
    pub fn copy_into(&self, chunk: &RawView, sel: &Selection) -> Result<()> {
        match self {
            Self::Array { view, swap } => copy_selection(chunk, view, sel, Direction::OutToChunk, *swap),
            Self::Scalar(elem) => crate::engine::strided::fill_selection(chunk, sel, elem, true),
        }
    }
}

impl IndexCodec for CodecPlan {
    fn fixed_encoded_size(&self) -> Option<u64> {
        CodecPlan::fixed_encoded_size(self)
    }

    fn decode_index(&self, bytes: &[u8]) -> Result<Vec<u8>> {
        Ok(self.decode(Cow::Borrowed(bytes))?.into_owned())
    }

    fn encode_index(&self, raw: Vec<u8>) -> Result<Vec<u8>> {
        self.encode(Cow::Owned(raw))
    }
}

/// The [`IndexCodec`] for a shard index codec chain other than the native one (passed to
/// [`ShardLayout::new`] by every user of shards, dense or sparse).
///
/// # Errors
/// Returns [`Error::Unsupported`] for codecs the engine cannot run.
pub fn index_codec(codecs: &[MetadataV3], repr: ArrayRepr, options: &EngineOptions) -> Result<Box<dyn IndexCodec>> {
    Ok(Box::new(CodecPlan::new(codecs, repr, options)?))
}

/// A `sharding_indexed` codec bound to one shard representation (dense inner chunks).
#[derive(Debug)]
pub struct ShardingPlan {
    shard: ArrayRepr,
    layout: ShardLayout,
    inner: CodecPlan,
}

impl ShardingPlan {
    /// Build from `sharding_indexed` metadata for shards of `shard`.
    ///
    /// # Errors
    /// Returns [`Error::InvalidMetadata`] for malformed configurations and
    /// [`Error::Unsupported`] for inner codecs the engine cannot run.
    pub fn new(meta: &MetadataV3, shard: ArrayRepr, options: &EngineOptions) -> Result<Self> {
        let (layout, codecs) = ShardLayout::new(meta, &shard.shape, options, index_codec)?;
        let inner_repr = ArrayRepr { shape: layout.inner_shape().to_vec(), data_type: shard.data_type.clone(), fill_value: shard.fill_value.clone() };
        let inner = CodecPlan::new(&codecs, inner_repr, options)?;
        Ok(Self { shard, layout, inner })
    }

    /// Inner chunk shape.
    #[must_use]
    pub fn inner_shape(&self) -> &[u64] {
        self.layout.inner_shape()
    }

    /// The inner chunks' codec plan.
    #[must_use]
    pub fn inner(&self) -> &CodecPlan {
        &self.inner
    }

    /// The shard layout.
    #[must_use]
    pub fn layout(&self) -> &ShardLayout {
        &self.layout
    }

    fn wants_whole(&self, touched: usize) -> bool {
        touched * 2 > self.layout.n_inner()
    }

    /// Whether reading `sel` from a shard reads the whole shard (more than half its inner chunks
    /// are touched), so that a remote read fetches it whole at once rather than its index first.
    #[must_use]
    pub fn reads_whole(&self, sel: &Selection) -> bool {
        self.wants_whole(sel.partition(self.layout.inner_shape()).len())
    }

    /// The byte ranges of the shard `value` that [`read_into`](Self::read_into) will read for
    /// `sel` beyond those `value` already holds: the whole shard, or the coalesced ranges of the
    /// inner chunks touched (from the shard's index, which `value` must be able to serve).
    ///
    /// # Errors
    /// Returns an error if the index cannot be read or is corrupt.
    pub fn ranges_needed(&self, value: &dyn ValueReader, sel: &Selection, cache: Option<&IndexCache>) -> Result<Vec<(u64, u64)>> {
        let parts = sel.partition(self.layout.inner_shape());
        if parts.is_empty() || value.resident() {
            return Ok(Vec::new());
        }
        if self.wants_whole(parts.len()) {
            return Ok(vec![(0, value.size())]);
        }
        let index = self.layout.load_index(value, cache)?;
        Ok(self.layout.inner_ranges(&index, parts.iter().map(|(coords, _)| self.layout.linear(coords))))
    }

    /// The byte ranges [`read_into`](Self::read_into) will read for `sel` from the shard `key` if
    /// it is still at `version` and the cache holds that version's index (`None` otherwise, or if
    /// the selection touches no stored inner chunk).
    #[must_use]
    pub fn cached_ranges(&self, cache: &IndexCache, key: &str, version: &Version, sel: &Selection) -> Option<Vec<(u64, u64)>> {
        let index = self.layout.cached_index(cache, key, version)?;
        let parts = sel.partition(self.layout.inner_shape());
        let ranges = self.layout.inner_ranges(&index, parts.iter().map(|(coords, _)| self.layout.linear(coords)));
        (!ranges.is_empty()).then_some(ranges)
    }

    /// Read the elements `sel` names from the shard `value` into `out`.
    ///
    /// # Errors
    /// Returns an error if the shard is corrupt or the selection does not fit.
    pub fn read_into(&self, value: &dyn ValueReader, sel: &Selection, out: &RawView, swap: usize, cache: Option<&IndexCache>) -> Result<()> {
        let layout = &self.layout;
        let parts = sel.partition(layout.inner_shape());
        if parts.is_empty() {
            return Ok(());
        }
        let mut fill = self.shard.fill_value.as_ne_bytes().to_vec();
        byteswap(&mut fill, swap);
        let key = value.key();
        // Everything (or nearly) is needed, or the value is in memory anyway: take it whole.
        let whole: Option<Cow<'_, [u8]>> = if self.wants_whole(parts.len()) || value.resident() { Some(value.read_all()?) } else { None };
        let index: Arc<Vec<u64>> = match &whole {
            Some(bytes) => Arc::new(layout.index_from_bytes(key, bytes)?),
            None => layout.load_index(value, cache)?,
        };
        let wanted: Vec<(usize, Selection)> = parts.into_iter().map(|(coords, sub)| (layout.linear(&coords), sub)).collect();
        layout.for_each_inner(
            value,
            whole.as_deref(),
            &index,
            &wanted,
            |sub, bytes| {
                let v = BytesValue::new(key, bytes);
                self.inner.read_into(&v, sub, out, swap, None).map_err(|e| e.with_key(key))
            },
            |sub| fill_selection(out, sub, &fill, false),
        )
    }

    /// The new stored bytes of a shard after writing `src` into the elements `sel` names, or
    /// `None` if the shard ends up without any inner chunk (it should be deleted).
    ///
    /// Inner chunks the selection does not touch keep their stored bytes; only touched inner
    /// chunks are decoded (if partially written) and re-encoded.
    ///
    /// # Errors
    /// Returns an error if the existing shard is corrupt or encoding fails.
    pub fn write_from(
        &self,
        existing: Option<&dyn ValueReader>,
        sel: &Selection,
        src: &ValueSource<'_>,
        write_empty: bool,
    ) -> Result<Option<Encoded>> {
        let layout = &self.layout;
        let parts = sel.partition(layout.inner_shape());
        let covers = sel.covers(&self.shard.shape);
        let old_bytes: Option<Cow<'_, [u8]>> = match existing {
            Some(v) if !covers => Some(v.read_all()?),
            _ => None,
        };
        let key = existing.map_or("", |v| v.key());
        let old_index = match &old_bytes {
            Some(b) => Some(layout.index_from_bytes(key, b)?),
            None => None,
        };
        let old_chunk = |lin: usize| -> Option<&[u8]> {
            let (b, idx) = (old_bytes.as_deref()?, old_index.as_ref()?);
            #[allow(clippy::cast_possible_truncation)]
            ShardLayout::entry(idx, lin).map(|(off, n)| &b[off as usize..(off + n) as usize])
        };
        let changes: Vec<(usize, Option<Vec<u8>>)> = try_map(&parts, |(coords, sub)| {
            let lin = layout.linear(coords);
            let prev = if sub.covers(layout.inner_shape()) { None } else { old_chunk(lin) };
            let prev_value = prev.map(|b| BytesValue::new(key, b));
            let new =
                self.inner.write_from(prev_value.as_ref().map(|v| v as &dyn ValueReader), sub, src, write_empty).map_err(|e| e.with_key(key))?;
            Ok((lin, new.map(Encoded::into_vec)))
        })?;
        let old = old_bytes.as_deref().zip(old_index.as_deref());
        layout.rebuild(old, changes)
    }

    /// A shard without any inner chunk (only its index).
    ///
    /// # Errors
    /// Returns an error if the index cannot be encoded.
    pub fn empty_shard(&self) -> Result<Vec<u8>> {
        self.layout.empty_shard()
    }
}

#[cfg(test)]
mod tests {
    use zarrs::array::FillValue;

    use super::*;

    fn f32_repr(shape: &[u64]) -> ArrayRepr {
        ArrayRepr { shape: shape.to_vec(), data_type: zarrs::array::data_type::float32(), fill_value: FillValue::from(0f32) }
    }

    fn plan(json: &str, repr: ArrayRepr) -> CodecPlan {
        let v: serde_json::Value = serde_json::from_str(json).unwrap();
        CodecPlan::new(&codecs_from_json(&v).unwrap(), repr, &EngineOptions::default()).unwrap()
    }

    #[test]
    fn roundtrip_chains() {
        let data: Vec<u8> = (0..64u32).flat_map(|i| (i as f32).to_le_bytes()).collect();
        for chain in [
            r#"[{"name":"bytes","configuration":{"endian":"little"}}]"#,
            r#"[{"name":"bytes","configuration":{"endian":"big"}},{"name":"crc32c"}]"#,
            r#"[{"name":"bytes","configuration":{"endian":"little"}},{"name":"zstd","configuration":{"level":1,"checksum":true}}]"#,
            r#"[{"name":"transpose","configuration":{"order":[1,0]}},{"name":"bytes","configuration":{"endian":"little"}},{"name":"gzip","configuration":{"level":1}},{"name":"crc32c"}]"#,
            r#"[{"name":"bytes","configuration":{"endian":"little"}},{"name":"blosc","configuration":{"cname":"lz4","clevel":5,"shuffle":"shuffle","typesize":4,"blocksize":0}}]"#,
        ] {
            let p = plan(chain, f32_repr(&[8, 8]));
            let enc = p.encode(Cow::Borrowed(&data)).unwrap();
            let dec = p.decode(Cow::Owned(enc)).unwrap();
            assert_eq!(&*dec, &data[..], "{chain}");
        }
    }

    #[test]
    fn corrupt_input_is_an_error() {
        let p = plan(
            r#"[{"name":"bytes","configuration":{"endian":"little"}},{"name":"zstd","configuration":{"level":1,"checksum":false}},{"name":"crc32c"}]"#,
            f32_repr(&[4]),
        );
        let mut enc = p.encode(Cow::Owned(vec![1u8; 16])).unwrap();
        enc[2] ^= 0xff;
        assert!(matches!(p.decode(Cow::Owned(enc)), Err(Error::Decode { .. })));
        assert!(p.decode(Cow::Owned(vec![1, 2])).is_err());
        let p = plan(
            r#"[{"name":"bytes","configuration":{"endian":"little"}},{"name":"zstd","configuration":{"level":1,"checksum":false}}]"#,
            f32_repr(&[4]),
        );
        assert!(p.decode(Cow::Owned(vec![0x28, 0xb5, 0x2f, 0xfd, 0, 0, 0])).is_err());
    }
}
