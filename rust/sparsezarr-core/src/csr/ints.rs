//! Integer element types of index arrays (`indices`, `indptr`) and conversions between them.

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::runtime::in_pool;

/// The integer type of a stored index array.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntKind {
    /// `int8`
    I8,
    /// `int16`
    I16,
    /// `int32`
    I32,
    /// `int64`
    I64,
    /// `uint8`
    U8,
    /// `uint16`
    U16,
    /// `uint32`
    U32,
    /// `uint64`
    U64,
}

impl IntKind {
    /// Parse a zarr v3 data type name (`"int32"`) or a numpy type string (`"<i4"`, `"|u1"`).
    #[must_use]
    pub fn from_name(name: &str) -> Option<Self> {
        let numpy = name.trim_start_matches(['<', '>', '|', '=']);
        Some(match (name, numpy) {
            ("int8", _) | (_, "i1") => Self::I8,
            ("int16", _) | (_, "i2") => Self::I16,
            ("int32", _) | (_, "i4") => Self::I32,
            ("int64", _) | (_, "i8") => Self::I64,
            ("uint8", _) | (_, "u1") => Self::U8,
            ("uint16", _) | (_, "u2") => Self::U16,
            ("uint32", _) | (_, "u4") => Self::U32,
            ("uint64", _) | (_, "u8") => Self::U64,
            _ => return None,
        })
    }

    /// The zarr v3 name.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::I8 => "int8",
            Self::I16 => "int16",
            Self::I32 => "int32",
            Self::I64 => "int64",
            Self::U8 => "uint8",
            Self::U16 => "uint16",
            Self::U32 => "uint32",
            Self::U64 => "uint64",
        }
    }

    /// Bytes per element.
    #[must_use]
    pub fn size(self) -> usize {
        match self {
            Self::I8 | Self::U8 => 1,
            Self::I16 | Self::U16 => 2,
            Self::I32 | Self::U32 => 4,
            Self::I64 | Self::U64 => 8,
        }
    }

    /// The largest value the type holds.
    #[must_use]
    pub fn max_value(self) -> u64 {
        match self {
            Self::I8 => i8::MAX as u64,
            Self::I16 => i16::MAX as u64,
            Self::I32 => i32::MAX as u64,
            Self::I64 => i64::MAX as u64,
            Self::U8 => u64::from(u8::MAX),
            Self::U16 => u64::from(u16::MAX),
            Self::U32 => u64::from(u32::MAX),
            Self::U64 => u64::MAX,
        }
    }

    /// Value `i` of a native-order buffer, or `None` if it is negative.
    #[inline]
    #[must_use]
    #[allow(clippy::cast_sign_loss)]
    pub fn get(self, buf: &[u8], i: usize) -> Option<u64> {
        let s = self.size();
        let b = &buf[i * s..(i + 1) * s];
        match self {
            Self::I8 => u64::try_from(i8::from_ne_bytes([b[0]])).ok(),
            Self::I16 => u64::try_from(i16::from_ne_bytes([b[0], b[1]])).ok(),
            Self::I32 => u64::try_from(i32::from_ne_bytes([b[0], b[1], b[2], b[3]])).ok(),
            Self::I64 => u64::try_from(i64::from_ne_bytes(b.try_into().ok()?)).ok(),
            Self::U8 => Some(u64::from(b[0])),
            Self::U16 => Some(u64::from(u16::from_ne_bytes([b[0], b[1]]))),
            Self::U32 => Some(u64::from(u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))),
            Self::U64 => Some(u64::from_ne_bytes(b.try_into().ok()?)),
        }
    }

    /// Write `v` (which must fit) as element `i` of a native-order buffer.
    #[inline]
    #[allow(clippy::cast_possible_truncation, clippy::cast_possible_wrap)]
    pub fn put(self, buf: &mut [u8], i: usize, v: u64) {
        let s = self.size();
        let b = &mut buf[i * s..(i + 1) * s];
        match self {
            Self::I8 => b.copy_from_slice(&(v as i8).to_ne_bytes()),
            Self::I16 => b.copy_from_slice(&(v as i16).to_ne_bytes()),
            Self::I32 => b.copy_from_slice(&(v as i32).to_ne_bytes()),
            Self::I64 => b.copy_from_slice(&(v as i64).to_ne_bytes()),
            Self::U8 => b.copy_from_slice(&(v as u8).to_ne_bytes()),
            Self::U16 => b.copy_from_slice(&(v as u16).to_ne_bytes()),
            Self::U32 => b.copy_from_slice(&(v as u32).to_ne_bytes()),
            Self::U64 => b.copy_from_slice(&v.to_ne_bytes()),
        }
    }
}

/// Elements per parallel piece of the conversions below.
const PIECE: usize = 1 << 16;

/// Convert the integers of `src` (of `from`, native order) to `to` in `dst`, checking that every
/// value is in `0..bound`. `what` names the array in errors.
///
/// # Errors
/// Returns [`Error::Decode`] naming the first offending position if a value is negative or not
/// below `bound`, or [`Error::InvalidArgument`] if the buffer sizes do not match.
pub fn convert_checked(what: &str, from: IntKind, src: &[u8], to: IntKind, dst: &mut [u8], bound: u64) -> Result<()> {
    let n = src.len() / from.size();
    if !src.len().is_multiple_of(from.size()) || dst.len() != n * to.size() {
        return Err(Error::InvalidArgument(format!("{what}: buffer sizes do not match ({} and {} bytes)", src.len(), dst.len())));
    }
    check_range(what, from, src, bound)?;
    if bound > 0 && bound - 1 > to.max_value() {
        return Err(Error::InvalidArgument(format!("{what}: values up to {} do not fit {}", bound - 1, to.name())));
    }
    let piece = |(p, out): (usize, &mut [u8])| {
        let lo = p * PIECE;
        for j in 0..out.len() / to.size() {
            // In range (checked above), so never negative and never wider than `to`.
            to.put(out, j, from.get(src, lo + j).unwrap_or(0));
        }
    };
    if in_pool() && n > PIECE {
        dst.par_chunks_mut(PIECE * to.size()).enumerate().for_each(piece);
    } else {
        dst.chunks_mut(PIECE * to.size()).enumerate().for_each(piece);
    }
    Ok(())
}

/// Whether every value of a piece of `kind` integers lies in `0..bound` (a branch-free scan the
/// compiler vectorises).
fn piece_in_range(kind: IntKind, piece: &[u8], bound: u64) -> bool {
    macro_rules! scan {
        ($t:ty, $n:expr) => {{
            let (mut lo, mut hi) = (<$t>::MAX, <$t>::MIN);
            for c in piece.chunks_exact($n) {
                let v = <$t>::from_ne_bytes(c.try_into().unwrap_or([0; $n]));
                lo = lo.min(v);
                hi = hi.max(v);
            }
            #[allow(clippy::cast_sign_loss, clippy::cast_lossless, unused_comparisons)]
            let ok = piece.is_empty() || (lo >= 0 && (hi as u64) < bound);
            ok
        }};
    }
    match kind {
        IntKind::I8 => scan!(i8, 1),
        IntKind::I16 => scan!(i16, 2),
        IntKind::I32 => scan!(i32, 4),
        IntKind::I64 => scan!(i64, 8),
        IntKind::U8 => scan!(u8, 1),
        IntKind::U16 => scan!(u16, 2),
        IntKind::U32 => scan!(u32, 4),
        IntKind::U64 => scan!(u64, 8),
    }
}

/// Check that every integer of `buf` (of `kind`) is in `0..bound`, without converting.
///
/// # Errors
/// As [`convert_checked`].
pub fn check_range(what: &str, kind: IntKind, buf: &[u8], bound: u64) -> Result<()> {
    let s = kind.size();
    let n = buf.len() / s;
    let piece = |p: usize| -> Result<()> {
        let (a, b) = (p * PIECE, ((p + 1) * PIECE).min(n));
        if piece_in_range(kind, &buf[a * s..b * s], bound) {
            return Ok(());
        }
        for i in a..b {
            match kind.get(buf, i) {
                Some(v) if v < bound => {}
                Some(v) => return Err(Error::decode("", format!("{what}: value {v} at position {i} is out of range 0..{bound}"))),
                None => return Err(Error::decode("", format!("{what}: negative value at position {i}"))),
            }
        }
        Ok(())
    };
    let pieces = n.div_ceil(PIECE);
    if in_pool() && pieces > 1 { (0..pieces).into_par_iter().try_for_each(piece) } else { (0..pieces).try_for_each(piece) }
}

/// Decode an index-pointer array (of `kind`) into `u64` values, checking that it starts at 0 and
/// never decreases.
///
/// # Errors
/// Returns [`Error::Decode`] describing the first violation.
pub fn indptr_values(what: &str, kind: IntKind, buf: &[u8]) -> Result<Vec<u64>> {
    let n = buf.len() / kind.size();
    let mut out = Vec::with_capacity(n);
    let mut prev = 0u64;
    for i in 0..n {
        let v = kind.get(buf, i).ok_or_else(|| Error::decode("", format!("{what}: negative value at position {i}")))?;
        if i == 0 && v != 0 {
            return Err(Error::decode("", format!("{what}: must start at 0, starts at {v}")));
        }
        if v < prev {
            return Err(Error::decode("", format!("{what}: decreases at position {i} ({prev} then {v})")));
        }
        prev = v;
        out.push(v);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_conversion() {
        assert_eq!(IntKind::from_name("<i4"), Some(IntKind::I32));
        assert_eq!(IntKind::from_name("uint16"), Some(IntKind::U16));
        assert_eq!(IntKind::from_name("float32"), None);
        let src: Vec<u8> = [3u16, 0, 9].iter().flat_map(|v| v.to_ne_bytes()).collect();
        let mut dst = vec![0u8; 12];
        convert_checked("indices", IntKind::U16, &src, IntKind::I32, &mut dst, 10).unwrap();
        let got: Vec<i32> = dst.chunks_exact(4).map(|c| i32::from_ne_bytes(c.try_into().unwrap())).collect();
        assert_eq!(got, vec![3, 0, 9]);
        let err = convert_checked("indices", IntKind::U16, &src, IntKind::I32, &mut dst, 9).unwrap_err();
        assert!(err.to_string().contains("value 9 at position 2"), "{err}");
        let neg: Vec<u8> = [1i64, -1].iter().flat_map(|v| v.to_ne_bytes()).collect();
        assert!(check_range("indices", IntKind::I64, &neg, 5).unwrap_err().to_string().contains("negative"));
    }

    #[test]
    fn indptr_checks() {
        let ok: Vec<u8> = [0i32, 2, 2, 5].iter().flat_map(|v| v.to_ne_bytes()).collect();
        assert_eq!(indptr_values("indptr", IntKind::I32, &ok).unwrap(), vec![0, 2, 2, 5]);
        let dec: Vec<u8> = [0i32, 2, 1].iter().flat_map(|v| v.to_ne_bytes()).collect();
        assert!(indptr_values("indptr", IntKind::I32, &dec).unwrap_err().to_string().contains("decreases at position 2"));
        let start: Vec<u8> = [1i32, 2].iter().flat_map(|v| v.to_ne_bytes()).collect();
        assert!(indptr_values("indptr", IntKind::I32, &start).is_err());
    }
}
