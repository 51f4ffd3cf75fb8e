//! Element types: the one enum of the core ([`ElemType`]) and the fill-value rules.

use std::borrow::Cow;

use zarrs::array::{DataType, FillValue};

use crate::error::{Error, Result};

/// The element types of the core (one enum): sparse values (comparison with the fill value,
/// summing duplicates), integer index arrays of CSR stores (reading, writing and range checks),
/// and the fill-value rules of the dense engine (NaN).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum ElemType {
    Bool,
    I8,
    I16,
    I32,
    I64,
    U8,
    U16,
    U32,
    U64,
    F16,
    BF16,
    F32,
    F64,
    C64,
    C128,
}

impl ElemType {
    /// The element type of a zarrs data type.
    ///
    /// # Errors
    /// Returns [`Error::Unsupported`] for data types sparse arrays do not hold.
    pub fn from_data_type(dt: &DataType) -> Result<Self> {
        let name = dt.name_v3().map(Cow::into_owned).unwrap_or_default();
        Ok(match name.as_str() {
            "bool" => Self::Bool,
            "int8" => Self::I8,
            "int16" => Self::I16,
            "int32" => Self::I32,
            "int64" => Self::I64,
            "uint8" => Self::U8,
            "uint16" => Self::U16,
            "uint32" => Self::U32,
            "uint64" => Self::U64,
            "float16" => Self::F16,
            "bfloat16" => Self::BF16,
            "float32" => Self::F32,
            "float64" => Self::F64,
            "complex64" => Self::C64,
            "complex128" => Self::C128,
            other => return Err(Error::Unsupported(format!("data type {other:?}"))),
        })
    }

    /// Size in bytes.
    #[must_use]
    pub fn size(self) -> usize {
        match self {
            Self::Bool | Self::I8 | Self::U8 => 1,
            Self::I16 | Self::U16 | Self::F16 | Self::BF16 => 2,
            Self::I32 | Self::U32 | Self::F32 => 4,
            Self::I64 | Self::U64 | Self::F64 | Self::C64 => 8,
            Self::C128 => 16,
        }
    }

    /// Byte-swap unit (for big-endian encodings).
    #[must_use]
    pub fn swap_unit(self) -> usize {
        match self {
            Self::C64 => 4,
            Self::C128 => 8,
            _ => self.size(),
        }
    }

    /// Whether the native-order element `e` equals `fill` (numerically for floats: -0.0 equals 0.0).
    #[must_use]
    #[inline]
    pub fn equals(self, e: &[u8], fill: &[u8]) -> bool {
        let f32_eq =
            |a: &[u8], b: &[u8]| f32::from_ne_bytes(a.try_into().unwrap_or_default()) == f32::from_ne_bytes(b.try_into().unwrap_or_default());
        let f64_eq =
            |a: &[u8], b: &[u8]| f64::from_ne_bytes(a.try_into().unwrap_or_default()) == f64::from_ne_bytes(b.try_into().unwrap_or_default());
        match self {
            Self::F32 => f32_eq(e, fill),
            Self::F64 => f64_eq(e, fill),
            Self::C64 => f32_eq(&e[..4], &fill[..4]) && f32_eq(&e[4..], &fill[4..]),
            Self::C128 => f64_eq(&e[..8], &fill[..8]) && f64_eq(&e[8..], &fill[8..]),
            Self::F16 | Self::BF16 => {
                let (a, b) = (u16::from_ne_bytes([e[0], e[1]]), u16::from_ne_bytes([fill[0], fill[1]]));
                a == b || (a & 0x7fff == 0 && b & 0x7fff == 0)
            }
            _ => e == fill,
        }
    }

    /// Whether the native-order element is NaN (for floats).
    #[must_use]
    pub fn is_nan(self, e: &[u8]) -> bool {
        match self {
            Self::F32 => f32::from_ne_bytes(e.try_into().unwrap_or_default()).is_nan(),
            Self::F64 => f64::from_ne_bytes(e.try_into().unwrap_or_default()).is_nan(),
            Self::C64 => self_nan32(&e[..4]) || self_nan32(&e[4..]),
            Self::C128 => {
                f64::from_ne_bytes(e[..8].try_into().unwrap_or_default()).is_nan()
                    || f64::from_ne_bytes(e[8..].try_into().unwrap_or_default()).is_nan()
            }
            Self::F16 => {
                let v = u16::from_ne_bytes([e[0], e[1]]);
                v & 0x7c00 == 0x7c00 && v & 0x03ff != 0
            }
            Self::BF16 => {
                let v = u16::from_ne_bytes([e[0], e[1]]);
                v & 0x7f80 == 0x7f80 && v & 0x007f != 0
            }
            _ => false,
        }
    }

    /// `acc += e` (native order; integers wrap, booleans or).
    pub fn add_assign(self, acc: &mut [u8], e: &[u8]) {
        macro_rules! int {
            ($t:ty) => {{
                let v =
                    <$t>::from_ne_bytes(acc[..].try_into().unwrap_or_default()).wrapping_add(<$t>::from_ne_bytes(e.try_into().unwrap_or_default()));
                acc.copy_from_slice(&v.to_ne_bytes());
            }};
        }
        macro_rules! float {
            ($t:ty, $n:expr) => {{
                for (a, b) in acc.chunks_exact_mut($n).zip(e.chunks_exact($n)) {
                    let v = <$t>::from_ne_bytes(a[..].try_into().unwrap_or_default()) + <$t>::from_ne_bytes(b.try_into().unwrap_or_default());
                    a.copy_from_slice(&v.to_ne_bytes());
                }
            }};
        }
        match self {
            Self::Bool => acc[0] = u8::from(acc[0] != 0 || e[0] != 0),
            Self::I8 | Self::U8 => acc[0] = acc[0].wrapping_add(e[0]),
            Self::I16 | Self::U16 => int!(u16),
            Self::I32 | Self::U32 => int!(u32),
            Self::I64 | Self::U64 => int!(u64),
            Self::F16 => {
                let a = half::f16::from_ne_bytes([acc[0], acc[1]]);
                let b = half::f16::from_ne_bytes([e[0], e[1]]);
                acc.copy_from_slice(&(a + b).to_ne_bytes());
            }
            Self::BF16 => {
                let a = half::bf16::from_ne_bytes([acc[0], acc[1]]);
                let b = half::bf16::from_ne_bytes([e[0], e[1]]);
                acc.copy_from_slice(&(a + b).to_ne_bytes());
            }
            Self::F32 | Self::C64 => float!(f32, 4),
            Self::F64 | Self::C128 => float!(f64, 8),
        }
    }

    /// The integer type named by a zarr v3 data type name (`"int32"`) or a numpy type string
    /// (`"<i4"`, `"|u1"`); `None` for anything else.
    #[must_use]
    pub fn int_from_name(name: &str) -> Option<Self> {
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
            Self::Bool => "bool",
            Self::F16 => "float16",
            Self::BF16 => "bfloat16",
            Self::F32 => "float32",
            Self::F64 => "float64",
            Self::C64 => "complex64",
            Self::C128 => "complex128",
        }
    }

    /// The largest value an integer type holds (0 for other types).
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
            _ => 0,
        }
    }

    /// Value `i` of a native-order integer buffer, or `None` if it is negative (or not an
    /// integer type).
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
            _ => None,
        }
    }

    /// Write `v` (which must fit) as element `i` of a native-order integer buffer.
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
            _ => debug_assert!(false, "put on a non-integer type"),
        }
    }
}

fn self_nan32(b: &[u8]) -> bool {
    f32::from_ne_bytes(b.try_into().unwrap_or_default()).is_nan()
}

/// Integer arrays of a result: 32-bit where every value fits (as scipy prefers), 64-bit otherwise.
#[derive(Debug, Clone)]
pub enum IndexVec {
    /// 32-bit values.
    I32(Vec<i32>),
    /// 64-bit values.
    I64(Vec<i64>),
}

impl Default for IndexVec {
    fn default() -> Self {
        Self::I64(Vec::new())
    }
}

impl IndexVec {
    /// The values as a borrowed [`Indices`].
    #[must_use]
    pub fn view(&self) -> Indices<'_> {
        match self {
            Self::I32(v) => Indices::I32(v),
            Self::I64(v) => Indices::I64(v),
        }
    }

    /// Value `i` (for tests and small uses).
    #[must_use]
    pub fn get(&self, i: usize) -> i64 {
        self.view().get(i)
    }

    /// Number of values.
    #[must_use]
    pub fn len(&self) -> usize {
        self.view().len()
    }

    /// Whether there are none.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Integer index arrays as they come from numpy / scipy.
#[derive(Debug, Clone, Copy)]
pub enum Indices<'a> {
    /// 32-bit indices.
    I32(&'a [i32]),
    /// 64-bit indices.
    I64(&'a [i64]),
}

impl Indices<'_> {
    /// Number of indices.
    #[must_use]
    pub fn len(&self) -> usize {
        match self {
            Self::I32(v) => v.len(),
            Self::I64(v) => v.len(),
        }
    }

    /// Whether there are none.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Value `k`.
    #[inline]
    #[must_use]
    pub fn get(&self, k: usize) -> i64 {
        match self {
            Self::I32(v) => i64::from(v[k]),
            Self::I64(v) => v[k],
        }
    }
}

/// Whether every element of `chunk` (native byte order) equals `fill`, with zarr-python's rules:
/// a NaN fill value matches any NaN, otherwise elements are compared bit for bit.
#[must_use]
pub fn all_fill(chunk: &[u8], data_type: &DataType, fill: &FillValue) -> bool {
    let f = fill.as_ne_bytes();
    if f.is_empty() {
        return false;
    }
    if let Ok(kind) = ElemType::from_data_type(data_type)
        && kind.size() == f.len()
        && kind.is_nan(f)
    {
        return chunk.chunks_exact(f.len()).all(|e| kind.is_nan(e));
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

/// The v3 name of a data type (e.g. `float32`).
#[must_use]
pub fn data_type_name(dt: &DataType) -> String {
    dt.name_v3().map_or_else(|| dt.to_string(), |n| n.into_owned())
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
