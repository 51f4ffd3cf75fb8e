//! Data-type helpers the engine needs beyond element sizes.

use zarrs::array::{DataType, FillValue};
use zarrs::plugin::ExtensionName;

/// How elements compare to the fill value when deciding whether a chunk is empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FloatKind {
    F16,
    BF16,
    F32,
    F64,
}

fn float_parts(data_type: &DataType) -> Option<(FloatKind, usize)> {
    let name = data_type.name_v3()?;
    Some(match &*name {
        "float16" => (FloatKind::F16, 1),
        "bfloat16" => (FloatKind::BF16, 1),
        "float32" => (FloatKind::F32, 1),
        "float64" => (FloatKind::F64, 1),
        "complex64" => (FloatKind::F32, 2),
        "complex128" => (FloatKind::F64, 2),
        _ => return None,
    })
}

fn is_nan(kind: FloatKind, b: &[u8]) -> bool {
    match kind {
        FloatKind::F16 => {
            let v = u16::from_ne_bytes([b[0], b[1]]);
            v & 0x7c00 == 0x7c00 && v & 0x03ff != 0
        }
        FloatKind::BF16 => {
            let v = u16::from_ne_bytes([b[0], b[1]]);
            v & 0x7f80 == 0x7f80 && v & 0x007f != 0
        }
        FloatKind::F32 => f32::from_ne_bytes([b[0], b[1], b[2], b[3]]).is_nan(),
        FloatKind::F64 => f64::from_ne_bytes(b[..8].try_into().unwrap_or([0; 8])).is_nan(),
    }
}

fn any_nan(kind: FloatKind, parts: usize, elem: &[u8]) -> bool {
    let w = elem.len() / parts;
    elem.chunks_exact(w).any(|p| is_nan(kind, p))
}

/// Whether every element of `chunk` (native byte order) equals `fill`, with zarr-python's rules:
/// a NaN fill value matches any NaN, otherwise elements are compared bit for bit.
#[must_use]
pub fn all_fill(chunk: &[u8], data_type: &DataType, fill: &FillValue) -> bool {
    let f = fill.as_ne_bytes();
    if f.is_empty() {
        return false;
    }
    if let Some((kind, parts)) = float_parts(data_type)
        && f.len().is_multiple_of(parts)
        && any_nan(kind, parts, f)
    {
        return chunk.chunks_exact(f.len()).all(|e| any_nan(kind, parts, e));
    }
    bytes_all_equal(chunk, f)
}

/// Whether `buf` is `pattern` repeated.
#[must_use]
pub fn bytes_all_equal(buf: &[u8], pattern: &[u8]) -> bool {
    if !buf.len().is_multiple_of(pattern.len()) {
        return false;
    }
    if pattern.iter().all(|&b| b == pattern[0]) {
        let b = pattern[0];
        return buf.iter().all(|&x| x == b);
    }
    buf.chunks_exact(pattern.len()).all(|c| c == pattern)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nan_and_zero_rules() {
        let dt = zarrs::array::data_type::float32();
        let nan = FillValue::from(f32::NAN);
        let other_nan = f32::from_bits(0x7fc0_0001).to_ne_bytes();
        let buf: Vec<u8> = [other_nan, f32::NAN.to_ne_bytes()].concat();
        assert!(all_fill(&buf, &dt, &nan));
        let zero = FillValue::from(0f32);
        assert!(all_fill(&[0; 8], &dt, &zero));
        assert!(!all_fill(&(-0f32).to_ne_bytes(), &dt, &zero));
        assert!(!all_fill(&1f32.to_ne_bytes(), &dt, &zero));
    }
}
