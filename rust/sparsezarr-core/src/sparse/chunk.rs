//! The sparse chunk format (`sparsezarr.sparse`, version 1): see `docs/spec/sparse-codec.md`.
//!
//! An encoded chunk is a 32-byte header followed by two sub-encoded buffers:
//!
//! ```text
//! 0..4    magic "SZSP"
//! 4       format version (1)
//! 5       coordinate width in bytes (1, 2, 4 or 8)
//! 6..8    number of dimensions (u16, little endian)
//! 8..16   nnz: number of stored entries (u64 LE)
//! 16..24  length of the encoded coordinates (u64 LE)
//! 24..32  length of the encoded values (u64 LE)
//! 32..    encoded coordinates, then encoded values
//! ```
//!
//! Coordinates are chunk-local, planar (all coordinates along dimension 0, then dimension 1, ...),
//! in the smallest unsigned width that holds `max(chunk_shape) - 1`, for entries in strictly
//! increasing C order. Values are the array's elements at those coordinates; none equals the fill
//! value.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use zarrs::array::BytesRepresentation;
use zarrs::metadata::v3::MetadataV3;

use crate::dtype::ElemType;
use crate::engine::bytes_chain::BytesChain;
use crate::engine::codec::EngineOptions;
use crate::error::{Error, Result};

/// The codec's name in array metadata.
pub const CODEC_NAME: &str = "sparsezarr.sparse";
/// First bytes of every encoded chunk.
pub const MAGIC: [u8; 4] = *b"SZSP";
/// The format version this implementation writes (and the only one it reads).
pub const VERSION: u8 = 1;
/// Size of the fixed header.
pub const HEADER_LEN: usize = 32;

/// The codec configuration (`configuration` of the codec's metadata).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SparseCodecConfig {
    /// Coordinate layout; `"coo"` (planar, chunk-local coordinates) is the only one in version 1.
    pub layout: String,
    /// Codecs of the coordinate buffer: `bytes`, then bytes-to-bytes codecs.
    pub coordinate_codecs: Vec<MetadataV3>,
    /// Codecs of the value buffer: `bytes`, then bytes-to-bytes codecs.
    pub value_codecs: Vec<MetadataV3>,
}

impl SparseCodecConfig {
    /// Parse from a metadata configuration object.
    ///
    /// # Errors
    /// Returns [`Error::InvalidMetadata`] if it is malformed.
    pub fn from_json(value: &serde_json::Value) -> Result<Self> {
        let cfg: Self = serde_json::from_value(value.clone()).map_err(|e| Error::InvalidMetadata(format!("{CODEC_NAME}: {e}")))?;
        if cfg.layout != "coo" {
            return Err(Error::Unsupported(format!("{CODEC_NAME}: layout {:?} (this version reads \"coo\")", cfg.layout)));
        }
        Ok(cfg)
    }
}

/// Width in bytes of chunk-local coordinates for chunks of `shape`.
#[must_use]
pub fn coord_width(shape: &[u64]) -> usize {
    let max = shape.iter().copied().max().unwrap_or(1).saturating_sub(1);
    if max <= u64::from(u8::MAX) {
        1
    } else if max <= u64::from(u16::MAX) {
        2
    } else if max <= u64::from(u32::MAX) {
        4
    } else {
        8
    }
}

/// A decoded chunk in canonical form: entries in strictly increasing C order, none equal to fill.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SparseChunk {
    /// Number of entries.
    pub nnz: usize,
    /// Chunk-local coordinates, planar: `coords[d * nnz + k]`.
    pub coords: Vec<u64>,
    /// Values (native byte order), `nnz` elements.
    pub values: Vec<u8>,
}

impl SparseChunk {
    /// Coordinate of entry `k` along dimension `d`.
    #[must_use]
    #[inline]
    pub fn coord(&self, d: usize, k: usize) -> u64 {
        self.coords[d * self.nnz + k]
    }
}

/// A decoded chunk in its stored, compact form: coordinates of `width` bytes (planar, little
/// endian), values in native order.
#[derive(Debug, Clone, Default)]
pub struct RawChunk {
    /// Number of entries.
    pub nnz: usize,
    /// Bytes per coordinate.
    pub width: usize,
    /// Planar coordinates: coordinate `d * nnz + k`.
    pub coords: Vec<u8>,
    /// Values, `nnz` elements.
    pub values: Vec<u8>,
}

impl RawChunk {
    /// Coordinate number `i` of the planar buffer.
    #[must_use]
    #[inline]
    pub fn coord_at(&self, i: usize) -> u64 {
        match self.width {
            1 => u64::from(self.coords[i]),
            2 => u64::from(u16::from_le_bytes([self.coords[2 * i], self.coords[2 * i + 1]])),
            4 => u64::from(u32::from_le_bytes(self.coords[4 * i..4 * i + 4].try_into().unwrap_or_default())),
            _ => u64::from_le_bytes(self.coords[8 * i..8 * i + 8].try_into().unwrap_or_default()),
        }
    }
}

/// Reading coordinates of a fixed width (monomorphised hot loops).
pub trait Width {
    /// Bytes per coordinate.
    const BYTES: usize;
    /// Coordinate `i` of a planar little-endian buffer.
    fn read(buf: &[u8], i: usize) -> u64;
}

/// 1-byte coordinates.
pub struct W1;
/// 2-byte coordinates.
pub struct W2;
/// 4-byte coordinates.
pub struct W4;
/// 8-byte coordinates.
pub struct W8;

impl Width for W1 {
    const BYTES: usize = 1;
    #[inline]
    fn read(buf: &[u8], i: usize) -> u64 {
        u64::from(buf[i])
    }
}
impl Width for W2 {
    const BYTES: usize = 2;
    #[inline]
    fn read(buf: &[u8], i: usize) -> u64 {
        u64::from(u16::from_le_bytes([buf[2 * i], buf[2 * i + 1]]))
    }
}
impl Width for W4 {
    const BYTES: usize = 4;
    #[inline]
    fn read(buf: &[u8], i: usize) -> u64 {
        u64::from(u32::from_le_bytes([buf[4 * i], buf[4 * i + 1], buf[4 * i + 2], buf[4 * i + 3]]))
    }
}
impl Width for W8 {
    const BYTES: usize = 8;
    #[inline]
    fn read(buf: &[u8], i: usize) -> u64 {
        u64::from_le_bytes(buf[8 * i..8 * i + 8].try_into().unwrap_or_default())
    }
}

/// Evaluate `$e` with `$W` bound to the [`Width`] type of `$w` bytes.
#[macro_export]
macro_rules! with_width {
    ($w:expr, $W:ident, $e:expr) => {
        match $w {
            1 => {
                type $W = $crate::sparse::chunk::W1;
                $e
            }
            2 => {
                type $W = $crate::sparse::chunk::W2;
                $e
            }
            4 => {
                type $W = $crate::sparse::chunk::W4;
                $e
            }
            _ => {
                type $W = $crate::sparse::chunk::W8;
                $e
            }
        }
    };
}
pub use with_width;

/// A sub-chain: `bytes` (endianness of the elements), then bytes-to-bytes codecs.
#[derive(Debug)]
struct SubChain {
    swap: usize,
    chain: BytesChain,
}

impl SubChain {
    fn new(codecs: &[MetadataV3], swap_unit: usize, what: &str, options: &EngineOptions) -> Result<Self> {
        let (first, rest) =
            codecs.split_first().ok_or_else(|| Error::InvalidMetadata(format!("{CODEC_NAME}: {what} must start with the bytes codec")))?;
        if first.name() != "bytes" {
            return Err(Error::Unsupported(format!("{CODEC_NAME}: {what} must start with the bytes codec, not {:?}", first.name())));
        }
        let big = match first.configuration().and_then(|c| c.get("endian")).and_then(|e| e.as_str()) {
            None | Some("little") => false,
            Some("big") => true,
            Some(other) => return Err(Error::InvalidMetadata(format!("bytes codec endian {other:?}"))),
        };
        let swap = if big == cfg!(target_endian = "little") && swap_unit > 1 { swap_unit } else { 0 };
        let chain = BytesChain::new(rest, BytesRepresentation::UnboundedSize, options)?;
        Ok(Self { swap, chain })
    }

    fn encode(&self, native: &[u8]) -> Result<Vec<u8>> {
        let bytes: Cow<'_, [u8]> = if self.swap > 1 {
            let mut v = native.to_vec();
            crate::engine::strided::byteswap(&mut v, self.swap);
            Cow::Owned(v)
        } else {
            Cow::Borrowed(native)
        };
        Ok(self.chain.encode(bytes)?.into_owned())
    }

    /// Decode into `out` (reusing its allocation); `expected` is the decoded size.
    fn decode_into(&self, encoded: &[u8], expected: usize, out: &mut Vec<u8>) -> Result<()> {
        self.chain.decode_into(encoded, expected, out)?;
        if self.swap > 1 {
            crate::engine::strided::byteswap(out, self.swap);
        }
        Ok(())
    }
}

/// Encoder and decoder of sparse chunks for one element type and chunk shape.
#[derive(Debug)]
pub struct SparseChunkCodec {
    shape: Vec<u64>,
    strides: Vec<u64>,
    width: usize,
    elem: ElemType,
    fill: Vec<u8>,
    coords: SubChain,
    values: SubChain,
}

fn corrupt(msg: impl std::fmt::Display) -> Error {
    Error::decode("", format!("sparse chunk: {msg}"))
}

impl SparseChunkCodec {
    /// A codec for chunks of `shape` holding `elem` values with `fill` as the fill value.
    ///
    /// # Errors
    /// Returns [`Error::InvalidMetadata`] / [`Error::Unsupported`] for bad configurations, and
    /// [`Error::InvalidArgument`] for a NaN fill value (every value would differ from it).
    pub fn new(config: &SparseCodecConfig, shape: &[u64], elem: ElemType, fill: &[u8], options: &EngineOptions) -> Result<Self> {
        if fill.len() != elem.size() {
            return Err(Error::InvalidArgument(format!("fill value has {} bytes, the data type {}", fill.len(), elem.size())));
        }
        if elem.is_nan(fill) {
            return Err(Error::InvalidArgument("sparse arrays need a fill value that values can equal; NaN is never equal to anything".into()));
        }
        if shape.is_empty() || shape.contains(&0) {
            return Err(Error::InvalidMetadata(format!("sparse chunks need a non-empty chunk shape, got {shape:?}")));
        }
        let mut strides = vec![1u64; shape.len()];
        for d in (0..shape.len().saturating_sub(1)).rev() {
            strides[d] = strides[d + 1].checked_mul(shape[d + 1]).ok_or_else(|| Error::InvalidMetadata("chunk has too many elements".into()))?;
        }
        strides[0].checked_mul(shape[0]).ok_or_else(|| Error::InvalidMetadata("chunk has too many elements".into()))?;
        let width = coord_width(shape);
        Ok(Self {
            shape: shape.to_vec(),
            strides,
            width,
            elem,
            fill: fill.to_vec(),
            coords: SubChain::new(&config.coordinate_codecs, width, "coordinate_codecs", options)?,
            values: SubChain::new(&config.value_codecs, elem.swap_unit(), "value_codecs", options)?,
        })
    }

    /// Chunk shape.
    #[must_use]
    pub fn shape(&self) -> &[u64] {
        &self.shape
    }

    /// Element type.
    #[must_use]
    pub fn elem(&self) -> ElemType {
        self.elem
    }

    /// Fill value (native order bytes).
    #[must_use]
    pub fn fill(&self) -> &[u8] {
        &self.fill
    }

    /// C-order linear index of chunk-local coordinates.
    #[must_use]
    #[inline]
    pub fn linear(&self, coords: impl Iterator<Item = u64>) -> u64 {
        coords.zip(&self.strides).map(|(c, s)| c * s).sum()
    }

    /// Encode a canonical chunk.
    ///
    /// # Errors
    /// Returns an error if a sub-codec fails.
    pub fn encode(&self, chunk: &SparseChunk) -> Result<Vec<u8>> {
        let ndim = self.shape.len();
        if chunk.coords.len() != ndim * chunk.nnz || chunk.values.len() != chunk.nnz * self.elem.size() {
            return Err(Error::Internal("sparse chunk buffers have inconsistent sizes".into()));
        }
        let mut raw = Vec::with_capacity(chunk.coords.len() * self.width);
        for &c in &chunk.coords {
            raw.extend_from_slice(&c.to_ne_bytes()[..self.width]);
        }
        #[cfg(target_endian = "big")]
        compile_error!("sparse chunk coordinates assume a little-endian host");
        let coords = self.coords.encode(&raw)?;
        let values = self.values.encode(&chunk.values)?;
        let mut out = Vec::with_capacity(HEADER_LEN + coords.len() + values.len());
        out.extend_from_slice(&MAGIC);
        out.push(VERSION);
        #[allow(clippy::cast_possible_truncation)]
        out.push(self.width as u8);
        #[allow(clippy::cast_possible_truncation)]
        out.extend_from_slice(&(ndim as u16).to_le_bytes());
        out.extend_from_slice(&(chunk.nnz as u64).to_le_bytes());
        out.extend_from_slice(&(coords.len() as u64).to_le_bytes());
        out.extend_from_slice(&(values.len() as u64).to_le_bytes());
        out.extend_from_slice(&coords);
        out.extend_from_slice(&values);
        Ok(out)
    }

    /// The number of entries of an encoded chunk, from its header alone.
    ///
    /// # Errors
    /// Returns [`Error::Decode`] if the header is invalid.
    pub fn header_nnz(&self, bytes: &[u8]) -> Result<u64> {
        Ok(self.parse_header(bytes)?.0)
    }

    fn parse_header(&self, bytes: &[u8]) -> Result<(u64, usize, usize)> {
        if bytes.len() < HEADER_LEN {
            return Err(corrupt(format!("{} bytes is shorter than the {HEADER_LEN}-byte header", bytes.len())));
        }
        if bytes[..4] != MAGIC {
            return Err(corrupt("bad magic (not a sparsezarr.sparse chunk)"));
        }
        if bytes[4] != VERSION {
            return Err(Error::Unsupported(format!("sparse chunk format version {} (this version reads {VERSION})", bytes[4])));
        }
        if usize::from(bytes[5]) != self.width {
            return Err(corrupt(format!("coordinate width {} does not match the chunk shape (expected {})", bytes[5], self.width)));
        }
        let ndim = u16::from_le_bytes([bytes[6], bytes[7]]);
        if usize::from(ndim) != self.shape.len() {
            return Err(corrupt(format!("{ndim} dimensions, expected {}", self.shape.len())));
        }
        let field = |i: usize| u64::from_le_bytes(bytes[i..i + 8].try_into().unwrap_or_default());
        let (nnz, nc, nv) = (field(8), field(16), field(24));
        let total: u128 = HEADER_LEN as u128 + u128::from(nc) + u128::from(nv);
        if total != bytes.len() as u128 {
            return Err(corrupt(format!("header declares {total} bytes, the chunk has {} (truncated?)", bytes.len())));
        }
        let capacity: u128 = self.shape.iter().map(|&n| u128::from(n)).product();
        if u128::from(nnz) > capacity {
            return Err(corrupt(format!("{nnz} entries in a chunk of {capacity} elements")));
        }
        #[allow(clippy::cast_possible_truncation)]
        Ok((nnz, nc as usize, nv as usize))
    }

    /// Decode and validate an encoded chunk into its compact form.
    ///
    /// # Errors
    /// Returns [`Error::Decode`] (without a key) for corrupt or non-canonical chunks.
    pub fn decode_raw(&self, bytes: &[u8]) -> Result<RawChunk> {
        let mut raw = RawChunk::default();
        self.decode_raw_into(bytes, &mut raw, true)?;
        Ok(raw)
    }

    /// Decode into `raw`, reusing its buffers. With `validate` false, bounds and order are not
    /// checked (the caller must check them, e.g. with [`check_entry`](Self::check_entry), before
    /// trusting them).
    ///
    /// # Errors
    /// Returns [`Error::Decode`] (without a key) for corrupt chunks.
    pub fn decode_raw_into(&self, bytes: &[u8], raw: &mut RawChunk, validate: bool) -> Result<()> {
        let (nnz, nc, _) = self.parse_header(bytes)?;
        #[allow(clippy::cast_possible_truncation)]
        let nnz = nnz as usize;
        let ndim = self.shape.len();
        self.coords.decode_into(&bytes[HEADER_LEN..HEADER_LEN + nc], nnz * ndim * self.width, &mut raw.coords)?;
        self.values.decode_into(&bytes[HEADER_LEN + nc..], nnz * self.elem.size(), &mut raw.values)?;
        if raw.coords.len() != nnz * ndim * self.width {
            return Err(corrupt(format!("coordinate buffer has {} bytes, expected {}", raw.coords.len(), nnz * ndim * self.width)));
        }
        if raw.values.len() != nnz * self.elem.size() {
            return Err(corrupt(format!("value buffer has {} bytes, expected {}", raw.values.len(), nnz * self.elem.size())));
        }
        raw.nnz = nnz;
        raw.width = self.width;
        if validate {
            with_width!(self.width, W, self.validate_raw::<W>(raw))?;
        }
        Ok(())
    }

    /// The number of entries declared by a chunk's header.
    ///
    /// # Errors
    /// Returns [`Error::Decode`] if the header is invalid.
    pub fn declared_nnz(&self, bytes: &[u8]) -> Result<u64> {
        Ok(self.parse_header(bytes)?.0)
    }

    /// Chunk-local strides (C order) used for validation.
    #[must_use]
    pub fn strides(&self) -> &[u64] {
        &self.strides
    }

    /// Decode and validate an encoded chunk.
    ///
    /// # Errors
    /// Returns [`Error::Decode`] (without a key) for corrupt or non-canonical chunks.
    pub fn decode(&self, bytes: &[u8]) -> Result<SparseChunk> {
        let raw = self.decode_raw(bytes)?;
        let coords: Vec<u64> = (0..raw.nnz * self.shape.len()).map(|i| raw.coord_at(i)).collect();
        Ok(SparseChunk { nnz: raw.nnz, coords, values: raw.values })
    }

    /// Check bounds and strict C order.
    fn validate_raw<W: Width>(&self, raw: &RawChunk) -> Result<()> {
        let ndim = self.shape.len();
        let nnz = raw.nnz;
        for d in 0..ndim {
            let n = self.shape[d];
            if let Some(bad) = (d * nnz..(d + 1) * nnz).map(|i| W::read(&raw.coords, i)).find(|&c| c >= n) {
                return Err(corrupt(format!("coordinate {bad} out of bounds for chunk dimension {d} of length {n}")));
            }
        }
        let mut prev: Option<u64> = None;
        for k in 0..nnz {
            let lin: u64 = (0..ndim).map(|d| W::read(&raw.coords, d * nnz + k) * self.strides[d]).sum();
            if prev.is_some_and(|p| lin <= p) {
                return Err(corrupt("entries are not in strictly increasing C order (unsorted or duplicated)"));
            }
            prev = Some(lin);
        }
        Ok(())
    }

    /// The canonical sparse form of a dense C-ordered chunk.
    #[must_use]
    pub fn from_dense(&self, dense: &[u8]) -> SparseChunk {
        let es = self.elem.size();
        let ndim = self.shape.len();
        let mut lin: Vec<u64> = Vec::new();
        let mut values = Vec::new();
        for (i, e) in dense.chunks_exact(es).enumerate() {
            if !self.elem.equals(e, &self.fill) {
                lin.push(i as u64);
                values.extend_from_slice(e);
            }
        }
        let nnz = lin.len();
        let mut coords = vec![0u64; nnz * ndim];
        for (k, &l) in lin.iter().enumerate() {
            let mut rem = l;
            for d in 0..ndim {
                coords[d * nnz + k] = rem / self.strides[d];
                rem %= self.strides[d];
            }
        }
        SparseChunk { nnz, coords, values }
    }

    /// Write a chunk into a dense C-ordered buffer (which the caller filled with the fill value).
    pub fn scatter_dense(&self, chunk: &SparseChunk, dense: &mut [u8]) {
        let es = self.elem.size();
        let ndim = self.shape.len();
        for k in 0..chunk.nnz {
            #[allow(clippy::cast_possible_truncation)]
            let lin = self.linear((0..ndim).map(|d| chunk.coord(d, k))) as usize;
            dense[lin * es..(lin + 1) * es].copy_from_slice(&chunk.values[k * es..(k + 1) * es]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> SparseCodecConfig {
        serde_json::from_str(
            r#"{"layout":"coo",
                "coordinate_codecs":[{"name":"bytes","configuration":{"endian":"little"}},{"name":"zstd","configuration":{"level":3,"checksum":false}}],
                "value_codecs":[{"name":"bytes","configuration":{"endian":"big"}},{"name":"crc32c"}]}"#,
        )
        .unwrap()
    }

    #[test]
    fn dense_sparse_roundtrip_and_validation() {
        let codec = SparseChunkCodec::new(&config(), &[3, 300], ElemType::F32, &0f32.to_ne_bytes(), &EngineOptions::default()).unwrap();
        let mut dense = vec![0u8; 3 * 300 * 4];
        for (i, v) in [(5usize, 1.5f32), (299, -2.0), (300, 3.0), (899, 4.0), (10, -0.0)] {
            dense[i * 4..i * 4 + 4].copy_from_slice(&v.to_ne_bytes());
        }
        let chunk = codec.from_dense(&dense);
        assert_eq!(chunk.nnz, 4, "-0.0 equals the fill value 0.0");
        let enc = codec.encode(&chunk).unwrap();
        assert_eq!(&enc[..4], b"SZSP");
        assert_eq!(enc[5], 2, "300 needs 16-bit coordinates");
        let dec = codec.decode(&enc).unwrap();
        assert_eq!(dec, chunk);
        let mut back = vec![0u8; dense.len()];
        codec.scatter_dense(&dec, &mut back);
        let mut expect = dense.clone();
        expect[40..44].copy_from_slice(&0f32.to_ne_bytes());
        assert_eq!(back, expect);
        // Truncation, bad magic and unsorted entries are all errors.
        assert!(codec.decode(&enc[..enc.len() - 1]).is_err());
        let mut bad = enc.clone();
        bad[0] = b'X';
        assert!(codec.decode(&bad).is_err());
        let unsorted = SparseChunk { nnz: 2, coords: vec![1, 0, 0, 0], values: vec![0, 0, 128, 63, 0, 0, 128, 63] };
        assert!(codec.decode(&codec.encode(&unsorted).unwrap()).is_err());
        assert_eq!(codec.header_nnz(&enc).unwrap(), 4);
    }

    #[test]
    fn nan_fill_is_refused() {
        assert!(SparseChunkCodec::new(&config(), &[4], ElemType::F64, &f64::NAN.to_ne_bytes(), &EngineOptions::default()).is_err());
    }

    #[test]
    fn half_floats_add() {
        let mut a = 0x3c00u16.to_ne_bytes(); // 1.0
        ElemType::F16.add_assign(&mut a, &0x4000u16.to_ne_bytes()); // + 2.0
        assert_eq!(u16::from_ne_bytes(a), 0x4200); // 3.0
        assert_eq!(coord_width(&[256]), 1);
        assert_eq!(coord_width(&[257]), 2);
        assert_eq!(coord_width(&[65537, 2]), 4);
    }
}
