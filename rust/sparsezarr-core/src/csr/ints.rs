//! Integer element types of index arrays (`indices`, `indptr`) and conversions between them.

use rayon::prelude::*;

use crate::dtype::ElemType;
use crate::error::{Error, Result};
use crate::runtime::in_pool;

/// Elements per parallel piece of the conversions below.
const PIECE: usize = 1 << 16;

/// Convert the integers of `src` (of `from`, native order) to `to` in `dst`, checking that every
/// value is in `0..bound`. `what` names the array in errors.
///
/// # Errors
/// Returns [`Error::Decode`] naming the first offending position if a value is negative or not
/// below `bound`, or [`Error::InvalidArgument`] if the buffer sizes do not match.
pub fn convert_checked(what: &str, from: ElemType, src: &[u8], to: ElemType, dst: &mut [u8], bound: u64) -> Result<()> {
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
fn piece_in_range(kind: ElemType, piece: &[u8], bound: u64) -> bool {
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
        ElemType::I8 => scan!(i8, 1),
        ElemType::I16 => scan!(i16, 2),
        ElemType::I32 => scan!(i32, 4),
        ElemType::I64 => scan!(i64, 8),
        ElemType::U8 => scan!(u8, 1),
        ElemType::U16 => scan!(u16, 2),
        ElemType::U32 => scan!(u32, 4),
        ElemType::U64 => scan!(u64, 8),
        // Index arrays hold integers only (their types come from `ElemType::int_from_name`).
        _ => false,
    }
}

/// Check that every integer of `buf` (of `kind`) is in `0..bound`, without converting.
///
/// # Errors
/// As [`convert_checked`].
pub fn check_range(what: &str, kind: ElemType, buf: &[u8], bound: u64) -> Result<()> {
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
pub fn indptr_values(what: &str, kind: ElemType, buf: &[u8]) -> Result<Vec<u64>> {
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
        assert_eq!(ElemType::int_from_name("<i4"), Some(ElemType::I32));
        assert_eq!(ElemType::int_from_name("uint16"), Some(ElemType::U16));
        assert_eq!(ElemType::int_from_name("float32"), None);
        let src: Vec<u8> = [3u16, 0, 9].iter().flat_map(|v| v.to_ne_bytes()).collect();
        let mut dst = vec![0u8; 12];
        convert_checked("indices", ElemType::U16, &src, ElemType::I32, &mut dst, 10).unwrap();
        let got: Vec<i32> = dst.chunks_exact(4).map(|c| i32::from_ne_bytes(c.try_into().unwrap())).collect();
        assert_eq!(got, vec![3, 0, 9]);
        let err = convert_checked("indices", ElemType::U16, &src, ElemType::I32, &mut dst, 9).unwrap_err();
        assert!(err.to_string().contains("value 9 at position 2"), "{err}");
        let neg: Vec<u8> = [1i64, -1].iter().flat_map(|v| v.to_ne_bytes()).collect();
        assert!(check_range("indices", ElemType::I64, &neg, 5).unwrap_err().to_string().contains("negative"));
    }

    #[test]
    fn indptr_checks() {
        let ok: Vec<u8> = [0i32, 2, 2, 5].iter().flat_map(|v| v.to_ne_bytes()).collect();
        assert_eq!(indptr_values("indptr", ElemType::I32, &ok).unwrap(), vec![0, 2, 2, 5]);
        let dec: Vec<u8> = [0i32, 2, 1].iter().flat_map(|v| v.to_ne_bytes()).collect();
        assert!(indptr_values("indptr", ElemType::I32, &dec).unwrap_err().to_string().contains("decreases at position 2"));
        let start: Vec<u8> = [1i32, 2].iter().flat_map(|v| v.to_ne_bytes()).collect();
        assert!(indptr_values("indptr", ElemType::I32, &start).is_err());
    }
}
