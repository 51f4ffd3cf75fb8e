//! Chains of bytes-to-bytes codecs (compressors and checksums).
//!
//! A [`BytesChain`] runs the bytes-to-bytes part of a codec chain on a buffer of any length: the
//! part after the array-to-bytes codec of an array, and the sub-chains of the sparse codec. `zstd`
//! and `crc32c` run natively with per-thread contexts (no allocation of compression contexts per
//! chunk, checksums verified and stripped without copying); every other codec zarrs implements runs
//! through its codec traits.

use std::borrow::Cow;
use std::cell::RefCell;
use std::sync::Arc;

use zarrs::array::{BytesRepresentation, BytesToBytesCodecTraits, Codec, CodecOptions};
use zarrs::metadata::v3::MetadataV3;

use crate::engine::repr::{EngineOptions, codec_err};
use crate::error::{Error, Result};

#[derive(Debug)]
enum Stage {
    Zstd {
        level: i32,
        checksum: bool,
    },
    Crc32c,
    /// A codec run by zarrs (encoding always; decoding unless `guard` takes it over).
    Zarrs {
        codec: Arc<dyn BytesToBytesCodecTraits>,
        decoded: BytesRepresentation,
        guard: Guard,
    },
}

/// What keeps a codec run by zarrs from allocating more than the array's codecs imply when it
/// decodes (`decoded`, the stage's output: the chunk's bytes, or a bound).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Guard {
    /// Nothing to check: the codec's output is as long as its input, or shorter.
    None,
    /// zarrs allocates the decoded size a Blosc header claims (up to 4 GiB): checked first.
    Blosc,
    /// zarrs decodes streams (`read_to_end`), so output grows by whatever the input inflates to
    /// (deflate: about 1000 times, bzip2 far more). Where the output's size is known, the stream
    /// is decoded here, with the same decoder, and stops one byte past it.
    Stream(StreamCodec),
}

/// The streaming decoders [`Guard::Stream`] bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StreamCodec {
    Gzip,
    Zlib,
    Bz2,
}

impl Guard {
    fn of(name: &str) -> Self {
        match name.strip_prefix("numcodecs.").unwrap_or(name) {
            "blosc" => Self::Blosc,
            "gzip" => Self::Stream(StreamCodec::Gzip),
            "zlib" => Self::Stream(StreamCodec::Zlib),
            "bz2" => Self::Stream(StreamCodec::Bz2),
            _ => Self::None,
        }
    }
}

/// A chain of bytes-to-bytes codecs.
#[derive(Debug)]
pub struct BytesChain {
    stages: Vec<Stage>,
    validate_checksums: bool,
    codec_options: CodecOptions,
}

impl BytesChain {
    /// Build from codec metadata; `decoded` is the representation of the chain's input.
    ///
    /// # Errors
    /// Returns [`Error::Unsupported`] for codecs the engine cannot run, [`Error::InvalidMetadata`]
    /// for codecs that are not bytes-to-bytes codecs.
    pub fn new(metas: &[MetadataV3], decoded: BytesRepresentation, options: &EngineOptions) -> Result<Self> {
        let mut stages = Vec::with_capacity(metas.len());
        let mut decoded = decoded;
        for meta in metas {
            let name = meta.name();
            let stage = match name {
                "zstd" => {
                    let cfg = meta.configuration();
                    let level = cfg.and_then(|c| c.get("level")).and_then(serde_json::Value::as_i64).unwrap_or(0);
                    let checksum = cfg.and_then(|c| c.get("checksum")).and_then(serde_json::Value::as_bool).unwrap_or(false);
                    Stage::Zstd { level: i32::try_from(level).map_err(|_| Error::InvalidMetadata("zstd level".into()))?, checksum }
                }
                "crc32c" => Stage::Crc32c,
                _ => match Codec::from_metadata(meta) {
                    Ok(Codec::BytesToBytes(codec)) => Stage::Zarrs { codec, decoded, guard: Guard::of(name) },
                    Ok(_) => return Err(Error::InvalidMetadata(format!("codec {name} is not a bytes-to-bytes codec"))),
                    Err(e) => {
                        if meta.must_understand() {
                            return Err(Error::Unsupported(format!("codec {name}: {e}")));
                        }
                        continue;
                    }
                },
            };
            decoded = match &stage {
                Stage::Zstd { .. } => BytesRepresentation::UnboundedSize,
                Stage::Crc32c => match decoded {
                    BytesRepresentation::FixedSize(n) => BytesRepresentation::FixedSize(n + 4),
                    BytesRepresentation::BoundedSize(n) => BytesRepresentation::BoundedSize(n + 4),
                    BytesRepresentation::UnboundedSize => BytesRepresentation::UnboundedSize,
                },
                Stage::Zarrs { codec, decoded, .. } => codec.encoded_representation(decoded),
            };
            stages.push(stage);
        }
        Ok(Self {
            stages,
            validate_checksums: options.validate_checksums,
            codec_options: CodecOptions::default().with_validate_checksums(options.validate_checksums),
        })
    }

    /// Whether the chain has no codec.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.stages.is_empty()
    }

    /// Encoded size of an input of `size` bytes, if every stage has a fixed-size output.
    #[must_use]
    pub fn fixed_encoded_size(&self, size: u64) -> Option<u64> {
        let mut size = size;
        for stage in &self.stages {
            size = match stage {
                Stage::Crc32c => size + 4,
                Stage::Zarrs { codec, decoded, .. } => match codec.encoded_representation(decoded) {
                    BytesRepresentation::FixedSize(n) => n,
                    _ => return None,
                },
                Stage::Zstd { .. } => return None,
            };
        }
        Some(size)
    }

    /// Decode (stages in reverse order).
    ///
    /// # Errors
    /// Returns [`Error::Decode`] (without a key) for corrupt input.
    pub fn decode<'a>(&self, encoded: Cow<'a, [u8]>) -> Result<Cow<'a, [u8]>> {
        let mut bytes = encoded;
        for stage in self.stages.iter().rev() {
            bytes = self.decode_stage(stage, bytes)?;
        }
        Ok(bytes)
    }

    /// Decode and pass the result to `f`. When the last decoding step is `zstd` and the decoded
    /// size is known (`expected`), it decompresses into a reused per-thread buffer.
    ///
    /// # Errors
    /// The decode error or the error of `f`.
    pub fn with_decoded<R>(&self, encoded: Cow<'_, [u8]>, expected: usize, f: impl FnOnce(&[u8]) -> Result<R>) -> Result<R> {
        let mut bytes = encoded;
        let mut stages = self.stages.iter().rev().peekable();
        while let Some(stage) = stages.next() {
            if stages.peek().is_none()
                && let Stage::Zstd { .. } = stage
            {
                return with_scratch(expected, |buf| {
                    zstd_decode_into(&bytes, buf)?;
                    f(buf)
                });
            }
            bytes = self.decode_stage(stage, bytes)?;
        }
        f(&bytes)
    }

    /// Decode into `out`, reusing its allocation. When the last decoding step is `zstd` with a
    /// known frame size, it decompresses straight into `out`.
    ///
    /// # Errors
    /// Returns [`Error::Decode`] (without a key) for corrupt input, including a decoded size other
    /// than `expected` for a final `zstd` step.
    pub fn decode_into(&self, encoded: &[u8], expected: usize, out: &mut Vec<u8>) -> Result<()> {
        let mut bytes: Cow<'_, [u8]> = Cow::Borrowed(encoded);
        let mut stages = self.stages.iter().rev().peekable();
        while let Some(stage) = stages.next() {
            if stages.peek().is_none()
                && let Stage::Zstd { .. } = stage
            {
                return zstd_decode_vec(&bytes, expected, out);
            }
            bytes = self.decode_stage(stage, bytes)?;
        }
        out.clear();
        out.extend_from_slice(&bytes);
        Ok(())
    }

    fn decode_stage<'a>(&self, stage: &Stage, bytes: Cow<'a, [u8]>) -> Result<Cow<'a, [u8]>> {
        match stage {
            Stage::Zstd { .. } => zstd_decode(&bytes).map(Cow::Owned),
            Stage::Crc32c => {
                let n = crc32c_body(&bytes, self.validate_checksums)?.len();
                Ok(match bytes {
                    Cow::Borrowed(b) => Cow::Borrowed(&b[..n]),
                    Cow::Owned(mut v) => {
                        v.truncate(n);
                        Cow::Owned(v)
                    }
                })
            }
            Stage::Zarrs { codec, decoded, guard } => {
                match guard {
                    Guard::Blosc => check_blosc_size(&bytes, *decoded)?,
                    Guard::Stream(stream) => match *decoded {
                        BytesRepresentation::FixedSize(n) => return decode_stream_bounded(*stream, &bytes, n, true).map(Cow::Owned),
                        BytesRepresentation::BoundedSize(n) => return decode_stream_bounded(*stream, &bytes, n, false).map(Cow::Owned),
                        BytesRepresentation::UnboundedSize => {}
                    },
                    Guard::None => {}
                }
                codec.decode(bytes, decoded, &self.codec_options).map_err(codec_err)
            }
        }
    }

    /// Encode (stages in order).
    ///
    /// # Errors
    /// Returns [`Error::Encode`] (without a key) if a codec fails.
    pub fn encode<'a>(&self, decoded: Cow<'a, [u8]>) -> Result<Cow<'a, [u8]>> {
        let mut bytes = decoded;
        for stage in &self.stages {
            bytes = match stage {
                Stage::Zstd { level, checksum } => Cow::Owned(zstd_encode(&bytes, *level, *checksum)?),
                Stage::Crc32c => {
                    let mut v = bytes.into_owned();
                    crc32c_append(&mut v);
                    Cow::Owned(v)
                }
                Stage::Zarrs { codec, .. } => codec.encode(bytes, &self.codec_options).map_err(|e| Error::encode("", e))?,
            };
        }
        Ok(bytes)
    }
}

/// Refuse a Blosc frame whose header claims a decoded size other than the one the codec chain
/// implies (`decoded`: the chunk's bytes, or a bound): zarrs allocates whatever the header claims
/// (up to 4 GiB) before decompressing. Frames too short for a header are left to Blosc's checks.
fn check_blosc_size(bytes: &[u8], decoded: BytesRepresentation) -> Result<()> {
    let Some(h) = bytes.get(4..8) else {
        return Ok(());
    };
    let claimed = u64::from(u32::from_le_bytes([h[0], h[1], h[2], h[3]]));
    let fits = match decoded {
        BytesRepresentation::FixedSize(n) => claimed == n,
        BytesRepresentation::BoundedSize(n) => claimed <= n,
        BytesRepresentation::UnboundedSize => true,
    };
    if fits { Ok(()) } else { Err(Error::decode("", format!("blosc header claims {claimed} decoded bytes; the array's codecs give {decoded}"))) }
}

/// Decode a gzip, zlib or bzip2 stream (the decoders zarrs uses, so the same streams are accepted)
/// whose output is at most `limit` bytes (exactly `limit` if `exact`): decoding stops one byte
/// past it, and a stream that decodes to more, or to another size than an exact one, is corrupt.
fn decode_stream_bounded(stream: StreamCodec, bytes: &[u8], limit: u64, exact: bool) -> Result<Vec<u8>> {
    use std::io::Read;
    /// Room reserved up front at most; larger outputs grow as they decode.
    const RESERVE: u64 = 16 << 20;
    let (name, reader): (&str, Box<dyn Read + '_>) = match stream {
        StreamCodec::Gzip => ("gzip", Box::new(flate2::bufread::GzDecoder::new(bytes))),
        StreamCodec::Zlib => ("zlib", Box::new(flate2::read::ZlibDecoder::new(bytes))),
        StreamCodec::Bz2 => ("bz2", Box::new(bzip2::read::BzDecoder::new(bytes))),
    };
    let mut out = Vec::with_capacity(usize::try_from(limit.min(RESERVE)).unwrap_or(0));
    reader.take(limit.saturating_add(1)).read_to_end(&mut out).map_err(|e| Error::decode("", format!("{name}: {e}")))?;
    let got = out.len() as u64;
    if got > limit {
        return Err(Error::decode("", format!("{name}: the stream decodes to more than the {limit} bytes the array's codecs give")));
    }
    if exact && got != limit {
        return Err(Error::decode("", format!("{name}: the stream decodes to {got} bytes; the array's codecs give {limit}")));
    }
    Ok(out)
}

// ------------------------------------------------------------------------------------------------
// zstd with per-thread contexts
// ------------------------------------------------------------------------------------------------

thread_local! {
    static ZSTD_D: RefCell<Option<zstd::zstd_safe::DCtx<'static>>> = const { RefCell::new(None) };
    static ZSTD_C: RefCell<Option<zstd::zstd_safe::CCtx<'static>>> = const { RefCell::new(None) };
}

thread_local! {
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Run `f` on a per-thread buffer of `len` bytes (contents unspecified). Falls back to a fresh
/// allocation if the buffer is already in use on this thread (re-entrant use).
pub(crate) fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [u8]) -> Result<R>) -> Result<R> {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => {
            if buf.len() < len {
                *buf = crate::error::zeroed(len, &"a decoded chunk")?;
            }
            let r = f(&mut buf[..len]);
            if buf.len() > (64 << 20) {
                // Do not keep huge buffers alive on idle threads.
                *buf = Vec::new();
            }
            r
        }
        Err(_) => {
            let mut buf = crate::error::zeroed(len, &"a decoded chunk")?;
            f(&mut buf)
        }
    })
}

/// Decompress a zstd frame into exactly `dst`.
fn zstd_decode_into(src: &[u8], dst: &mut [u8]) -> Result<()> {
    let expected = dst.len();
    zstd_decode_exact(src, expected, dst, |d, v| d.copy_from_slice(&v))
}

/// Decompress a zstd frame of `expected` decoded bytes into `out` (reusing its allocation, without
/// initialising it first).
fn zstd_decode_vec(src: &[u8], expected: usize, out: &mut Vec<u8>) -> Result<()> {
    out.clear();
    out.reserve(expected);
    zstd_decode_exact(src, expected, out, |o, v| *o = v)
}

/// The one zstd decoder for values of a known decoded size: the frame must say it holds
/// `expected` bytes (a header claiming more is refused before anything is allocated), and the
/// thread's reused context decodes it straight into `out`. Frames without a size go through
/// [`zstd_decode`] and must come out at `expected` bytes; `fill` puts them into `out`.
fn zstd_decode_exact<B: zstd::zstd_safe::WriteBuf + ?Sized>(
    src: &[u8],
    expected: usize,
    out: &mut B,
    fill: impl FnOnce(&mut B, Vec<u8>),
) -> Result<()> {
    use zstd::zstd_safe;
    match zstd_safe::get_frame_content_size(src) {
        Ok(Some(n)) if n == expected as u64 => {}
        Ok(Some(n)) => return Err(codec_err(format!("zstd: frame holds {n} bytes, expected {expected}"))),
        Ok(None) => {
            let v = zstd_decode(src)?;
            if v.len() != expected {
                return Err(codec_err(format!("zstd: decoded {} bytes, expected {expected}", v.len())));
            }
            fill(out, v);
            return Ok(());
        }
        Err(_) => return Err(codec_err("zstd: not a zstd frame (corrupt data?)")),
    }
    let r = ZSTD_D.with(|cell| {
        let mut guard = cell.borrow_mut();
        let ctx = guard.get_or_insert_with(zstd_safe::DCtx::create);
        ctx.decompress(out, src)
    });
    match r {
        Ok(got) if got == expected => Ok(()),
        Ok(got) => Err(codec_err(format!("zstd: decoded {got} bytes, expected {expected}"))),
        Err(code) => Err(codec_err(format!("zstd: {}", zstd_safe::get_error_name(code)))),
    }
}

/// The body of a value that ends in its little-endian crc32c (the `crc32c` codec's layout, also
/// used by shard indexes), checked if `validate`.
///
/// # Errors
/// [`Error::Decode`] (without a key) for a value shorter than its checksum or a mismatch.
pub(crate) fn crc32c_body(bytes: &[u8], validate: bool) -> Result<&[u8]> {
    if bytes.len() < 4 {
        return Err(codec_err("crc32c: value shorter than its checksum"));
    }
    let (body, tail) = bytes.split_at(bytes.len() - 4);
    if validate {
        let stored = u32::from_le_bytes(tail.try_into().unwrap_or_default());
        let actual = crc32c::crc32c(body);
        if stored != actual {
            return Err(codec_err(format!("crc32c checksum mismatch (stored {stored:#010x}, computed {actual:#010x})")));
        }
    }
    Ok(body)
}

/// Append the little-endian crc32c of `v` to it.
pub(crate) fn crc32c_append(v: &mut Vec<u8>) {
    let crc = crc32c::crc32c(v);
    v.extend_from_slice(&crc.to_le_bytes());
}

/// Largest decompressed size trusted from a frame header without other evidence (16 GiB).
const MAX_FRAME_CONTENT: u64 = 16 << 30;

pub(crate) fn zstd_decode(src: &[u8]) -> Result<Vec<u8>> {
    use zstd::zstd_safe;
    let size = match zstd_safe::get_frame_content_size(src) {
        Ok(Some(n)) if n <= MAX_FRAME_CONTENT => Some(n),
        Ok(_) => None,
        Err(_) => return Err(codec_err("zstd: not a zstd frame (corrupt data?)")),
    };
    if let Some(n) = size
        && zstd_safe::find_frame_compressed_size(src).is_ok_and(|c| c == src.len())
    {
        #[allow(clippy::cast_possible_truncation)]
        let mut out: Vec<u8> = Vec::with_capacity(n as usize);
        let r = ZSTD_D.with(|cell| {
            let mut guard = cell.borrow_mut();
            let ctx = guard.get_or_insert_with(zstd_safe::DCtx::create);
            ctx.decompress(&mut out, src)
        });
        return match r {
            Ok(_) if out.len() as u64 == n => Ok(out),
            Ok(got) => Err(codec_err(format!("zstd: frame declares {n} bytes but decoded {got}"))),
            Err(code) => Err(codec_err(format!("zstd: {}", zstd_safe::get_error_name(code)))),
        };
    }
    // Unknown content size or several frames: stream.
    zstd::stream::decode_all(src).map_err(|e| codec_err(format!("zstd: {e}")))
}

fn zstd_encode(src: &[u8], level: i32, checksum: bool) -> Result<Vec<u8>> {
    use zstd::zstd_safe::{self, CParameter};
    let mut out: Vec<u8> = Vec::with_capacity(zstd_safe::compress_bound(src.len()));
    let r = ZSTD_C.with(|cell| {
        let mut guard = cell.borrow_mut();
        let ctx = guard.get_or_insert_with(zstd_safe::CCtx::create);
        ctx.set_parameter(CParameter::CompressionLevel(level))?;
        ctx.set_parameter(CParameter::ChecksumFlag(checksum))?;
        ctx.set_parameter(CParameter::ContentSizeFlag(true))?;
        ctx.compress2(&mut out, src)
    });
    match r {
        Ok(_) => Ok(out),
        Err(code) => Err(Error::encode("", format!("zstd: {}", zstd_safe::get_error_name(code)))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_blosc_header_claiming_another_size_is_refused_before_allocating() {
        let meta: MetadataV3 =
            serde_json::from_str(r#"{"name":"blosc","configuration":{"cname":"zstd","clevel":1,"shuffle":"shuffle","typesize":4,"blocksize":0}}"#)
                .unwrap();
        let chain = BytesChain::new(&[meta], BytesRepresentation::FixedSize(4096), &EngineOptions::default()).unwrap();
        let value: Vec<u8> = (0..4096u32).map(|i| (i % 251) as u8).collect();
        let encoded = chain.encode(Cow::Borrowed(&value)).unwrap().into_owned();
        assert_eq!(chain.decode(Cow::Borrowed(&encoded)).unwrap().as_ref(), value.as_slice());
        for claim in [u32::MAX, 4095, 4097] {
            let mut hostile = encoded.clone();
            hostile[4..8].copy_from_slice(&claim.to_le_bytes());
            let err = chain.decode(Cow::Borrowed(&hostile)).unwrap_err().to_string();
            assert!(err.contains(&format!("blosc header claims {claim} decoded bytes")), "{err}");
        }
    }

    /// A stream that inflates past what the chain implies is refused after decoding one byte past
    /// it, for each streaming codec, while streams of the right size decode as zarrs decodes them.
    #[test]
    fn streams_decode_no_further_than_the_chunk() {
        for (name, config) in [("gzip", r#"{"level":6}"#), ("numcodecs.zlib", r#"{"level":6}"#), ("numcodecs.bz2", r#"{"level":9}"#)] {
            let meta: MetadataV3 = serde_json::from_str(&format!(r#"{{"name":"{name}","configuration":{config}}}"#)).unwrap();
            let chain = |n| BytesChain::new(std::slice::from_ref(&meta), BytesRepresentation::FixedSize(n), &EngineOptions::default()).unwrap();
            let value: Vec<u8> = (0..4096u32).map(|i| (i % 251) as u8).collect();
            let small = chain(4096);
            let encoded = small.encode(Cow::Borrowed(&value)).unwrap().into_owned();
            assert_eq!(small.decode(Cow::Borrowed(&encoded)).unwrap().as_ref(), value.as_slice(), "{name}");
            // The same stream under zarrs alone (no bound) decodes to the same bytes.
            let Stage::Zarrs { codec, decoded, .. } = &small.stages[0] else { panic!("{name} is not run by zarrs") };
            assert_eq!(codec.decode(Cow::Borrowed(&encoded), decoded, &CodecOptions::default()).unwrap().as_ref(), value.as_slice());
            // A bomb: 64 MiB of zeros where the chunk has 4096 bytes.
            let bomb = chain(64 << 20).encode(Cow::Owned(vec![0u8; 64 << 20])).unwrap().into_owned();
            assert!(bomb.len() < 1 << 20, "{name}: {} bytes", bomb.len());
            let err = small.decode(Cow::Borrowed(&bomb)).unwrap_err().to_string();
            assert!(err.contains("decodes to more than the 4096 bytes"), "{name}: {err}");
            // Short of the chunk, and within a bound.
            let err = chain(4097).decode(Cow::Borrowed(&encoded)).unwrap_err().to_string();
            assert!(err.contains("decodes to 4096 bytes; the array's codecs give 4097"), "{name}: {err}");
            let bounded = BytesChain::new(std::slice::from_ref(&meta), BytesRepresentation::BoundedSize(5000), &EngineOptions::default()).unwrap();
            assert_eq!(bounded.decode(Cow::Borrowed(&encoded)).unwrap().as_ref(), value.as_slice(), "{name}");
        }
    }
}
