//! Store keys of chunks (zarr v3 `chunk_key_encoding`, zarr v2 `dimension_separator`).

use zarrs::metadata::v3::MetadataV3;

use crate::error::{Error, Result};

/// How chunk grid coordinates become store keys.
#[derive(Debug, Clone)]
pub struct ChunkKeys {
    prefix: String,
    v2: bool,
    separator: String,
}

impl ChunkKeys {
    /// Parse a `chunk_key_encoding`; keys get `prefix` (the array's path in the store plus `/`,
    /// or empty) in front.
    ///
    /// # Errors
    /// Returns [`Error::Unsupported`] for unknown encodings.
    pub fn new(meta: &MetadataV3, prefix: &str) -> Result<Self> {
        let sep = meta.configuration().and_then(|c| c.get("separator")).and_then(|s| s.as_str());
        let (v2, separator) = match meta.name() {
            "default" => (false, sep.unwrap_or("/")),
            "v2" => (true, sep.unwrap_or(".")),
            other => return Err(Error::Unsupported(format!("chunk key encoding {other:?}"))),
        };
        Ok(Self { prefix: prefix.to_string(), v2, separator: separator.to_string() })
    }

    /// The keys of a zarr v2 array (`dimension_separator`, `.` or `/`), with `prefix` in front.
    #[must_use]
    pub fn v2(separator: &str, prefix: &str) -> Self {
        Self { prefix: prefix.to_string(), v2: true, separator: separator.to_string() }
    }

    /// The key of the chunk at grid coordinates `coords`.
    #[must_use]
    pub fn key(&self, coords: &[u64]) -> String {
        let mut k = self.prefix.clone();
        if self.v2 {
            if coords.is_empty() {
                k.push('0');
            }
        } else {
            k.push('c');
            if !coords.is_empty() {
                k.push_str(&self.separator);
            }
        }
        for (i, c) in coords.iter().enumerate() {
            if i > 0 {
                k.push_str(&self.separator);
            }
            k.push_str(&c.to_string());
        }
        k
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings() {
        let k = ChunkKeys::new(&serde_json::from_str(r#"{"name":"default","configuration":{"separator":"."}}"#).unwrap(), "a/b/").unwrap();
        assert_eq!(k.key(&[1, 2]), "a/b/c.1.2");
        let k = ChunkKeys::new(&serde_json::from_str(r#"{"name":"default"}"#).unwrap(), "").unwrap();
        assert_eq!(k.key(&[3]), "c/3");
        assert_eq!(k.key(&[]), "c");
        let k = ChunkKeys::new(&serde_json::from_str(r#"{"name":"v2"}"#).unwrap(), "").unwrap();
        assert_eq!(k.key(&[1, 2]), "1.2");
        assert_eq!(k.key(&[]), "0");
        assert_eq!(ChunkKeys::v2("/", "x/").key(&[4, 5]), "x/4/5");
    }
}
