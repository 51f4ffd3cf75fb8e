//! A streaming reader of Matrix Market coordinate files (`.mtx`, optionally gzip-compressed), the
//! format of 10x Genomics count matrices: entries come out in blocks, never all at once.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use flate2::read::MultiGzDecoder;

use crate::error::{Error, Result};

/// The value field of a Matrix Market file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// Floating-point values.
    Real,
    /// Integer values.
    Integer,
    /// No values (every entry is 1).
    Pattern,
}

/// The symmetry of a Matrix Market file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Symmetry {
    /// Every entry is listed.
    General,
    /// Only the lower triangle is listed; `(j, i)` mirrors `(i, j)`.
    Symmetric,
    /// Only the strict lower triangle is listed; `(j, i)` is `-(i, j)`.
    SkewSymmetric,
}

/// The header of a Matrix Market coordinate file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MtxHeader {
    /// Number of rows.
    pub rows: u64,
    /// Number of columns.
    pub cols: u64,
    /// Number of entries listed in the file.
    pub entries: u64,
    /// The value field.
    pub field: Field,
    /// The symmetry.
    pub symmetry: Symmetry,
}

/// A block of entries (0-based coordinates).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct MtxBlock {
    /// Row of every entry.
    pub rows: Vec<u64>,
    /// Column of every entry.
    pub cols: Vec<u64>,
    /// Value of every entry.
    pub values: Vec<f64>,
}

/// Reads the entries of a Matrix Market coordinate file block by block.
pub struct MtxReader {
    input: Box<dyn BufRead + Send>,
    header: MtxHeader,
    name: String,
    line_no: u64,
    read: u64,
    line: Vec<u8>,
}

fn bad(name: &str, line: u64, msg: impl std::fmt::Display) -> Error {
    Error::InvalidArgument(format!("{name}, line {line}: {msg}"))
}

impl MtxReader {
    /// Open a file (gzip-compressed or not, detected from its first bytes) and read its header.
    ///
    /// # Errors
    /// Returns [`Error::Io`] if the file cannot be read, [`Error::InvalidArgument`] for a
    /// malformed header, or [`Error::Unsupported`] for dense (`array`) or complex files.
    pub fn open(path: &Path) -> Result<Self> {
        let name = path.display().to_string();
        let mut file = File::open(path).map_err(|e| Error::io(&name, e))?;
        let mut magic = [0u8; 2];
        let n = file.read(&mut magic).map_err(|e| Error::io(&name, e))?;
        drop(file);
        let file = File::open(path).map_err(|e| Error::io(&name, e))?;
        let input: Box<dyn BufRead + Send> = if n == 2 && magic == [0x1f, 0x8b] {
            Box::new(BufReader::with_capacity(1 << 20, MultiGzDecoder::new(BufReader::with_capacity(1 << 20, file))))
        } else {
            Box::new(BufReader::with_capacity(1 << 20, file))
        };
        Self::from_reader(input, &name)
    }

    /// Read the header from any buffered input (`name` is used in error messages).
    ///
    /// # Errors
    /// As [`open`](Self::open).
    pub fn from_reader(input: Box<dyn BufRead + Send>, name: &str) -> Result<Self> {
        let mut r = Self {
            input,
            header: MtxHeader { rows: 0, cols: 0, entries: 0, field: Field::Real, symmetry: Symmetry::General },
            name: name.to_string(),
            line_no: 0,
            read: 0,
            line: Vec::with_capacity(256),
        };
        if !r.next_line()? {
            return Err(bad(name, 1, "empty file"));
        }
        let banner = String::from_utf8_lossy(&r.line).to_lowercase();
        let words: Vec<&str> = banner.split_whitespace().collect();
        if words.len() != 5 || words[0] != "%%matrixmarket" || words[1] != "matrix" {
            return Err(bad(name, 1, format!("not a Matrix Market file (banner {:?})", banner.trim())));
        }
        if words[2] != "coordinate" {
            return Err(Error::Unsupported(format!("{name}: Matrix Market format {:?} (only sparse 'coordinate' files)", words[2])));
        }
        let field = match words[3] {
            "real" | "double" => Field::Real,
            "integer" => Field::Integer,
            "pattern" => Field::Pattern,
            other => return Err(Error::Unsupported(format!("{name}: Matrix Market field {other:?}"))),
        };
        let symmetry = match words[4] {
            "general" => Symmetry::General,
            "symmetric" => Symmetry::Symmetric,
            "skew-symmetric" => Symmetry::SkewSymmetric,
            other => return Err(Error::Unsupported(format!("{name}: Matrix Market symmetry {other:?}"))),
        };
        loop {
            if !r.next_line()? {
                return Err(bad(name, r.line_no, "missing size line"));
            }
            let t = r.line.trim_ascii();
            if !t.is_empty() && t[0] != b'%' {
                break;
            }
        }
        let nums: Vec<u64> = std::str::from_utf8(&r.line)
            .map_err(|_| bad(name, r.line_no, "size line is not text"))?
            .split_whitespace()
            .map(str::parse)
            .collect::<std::result::Result<_, _>>()
            .map_err(|_| bad(name, r.line_no, "size line must hold three integers"))?;
        let [rows, cols, entries] = nums[..] else {
            return Err(bad(name, r.line_no, "size line must hold three integers: rows, columns, entries"));
        };
        if symmetry != Symmetry::General && rows != cols {
            return Err(bad(name, r.line_no, "a symmetric matrix must be square"));
        }
        r.header = MtxHeader { rows, cols, entries, field, symmetry };
        Ok(r)
    }

    /// The header.
    #[must_use]
    pub fn header(&self) -> &MtxHeader {
        &self.header
    }

    /// Entries read so far (as listed in the file).
    #[must_use]
    pub fn entries_read(&self) -> u64 {
        self.read
    }

    fn next_line(&mut self) -> Result<bool> {
        self.line.clear();
        let n = self.input.read_until(b'\n', &mut self.line).map_err(|e| Error::io(&self.name, e))?;
        self.line_no += 1;
        Ok(n > 0)
    }

    /// Up to `max` listed entries (symmetric files add the mirrored ones); `None` once every
    /// entry has been read.
    ///
    /// # Errors
    /// Returns [`Error::InvalidArgument`] for a malformed line, an index out of range or fewer
    /// entries than the header declares.
    pub fn next_block(&mut self, max: usize) -> Result<Option<MtxBlock>> {
        if self.read >= self.header.entries {
            return Ok(None);
        }
        #[allow(clippy::cast_possible_truncation)]
        let want = (self.header.entries - self.read).min(max.max(1) as u64) as usize;
        let mut b = MtxBlock { rows: Vec::with_capacity(want), cols: Vec::with_capacity(want), values: Vec::with_capacity(want) };
        let mut got = 0;
        while got < want {
            if !self.next_line()? {
                return Err(bad(&self.name, self.line_no, format!("the file ends after {} of {} entries", self.read, self.header.entries)));
            }
            let line = self.line.trim_ascii();
            if line.is_empty() || line[0] == b'%' {
                continue;
            }
            let (i, j, v) = self.parse_entry(line)?;
            b.rows.push(i);
            b.cols.push(j);
            b.values.push(v);
            if i != j {
                match self.header.symmetry {
                    Symmetry::General => {}
                    Symmetry::Symmetric => {
                        b.rows.push(j);
                        b.cols.push(i);
                        b.values.push(v);
                    }
                    Symmetry::SkewSymmetric => {
                        b.rows.push(j);
                        b.cols.push(i);
                        b.values.push(-v);
                    }
                }
            }
            got += 1;
            self.read += 1;
        }
        Ok(Some(b))
    }

    fn parse_entry(&self, line: &[u8]) -> Result<(u64, u64, f64)> {
        let mut it = line.split(u8::is_ascii_whitespace).filter(|w| !w.is_empty());
        let mut index = |what: &str, n: u64| -> Result<u64> {
            let w = it.next().ok_or_else(|| bad(&self.name, self.line_no, format!("missing {what} index")))?;
            let v = parse_u64(w)
                .ok_or_else(|| bad(&self.name, self.line_no, format!("{what} index {:?} is not a positive integer", String::from_utf8_lossy(w))))?;
            if v == 0 || v > n {
                return Err(bad(&self.name, self.line_no, format!("{what} index {v} is out of range 1..={n}")));
            }
            Ok(v - 1)
        };
        let i = index("row", self.header.rows)?;
        let j = index("column", self.header.cols)?;
        let v = match self.header.field {
            Field::Pattern => 1.0,
            Field::Integer => {
                let w = it.next().ok_or_else(|| bad(&self.name, self.line_no, "missing value"))?;
                let s = std::str::from_utf8(w).map_err(|_| bad(&self.name, self.line_no, "value is not text"))?;
                #[allow(clippy::cast_precision_loss)]
                s.parse::<i64>().map(|x| x as f64).map_err(|_| bad(&self.name, self.line_no, format!("value {s:?} is not an integer")))?
            }
            Field::Real => {
                let w = it.next().ok_or_else(|| bad(&self.name, self.line_no, "missing value"))?;
                let s = std::str::from_utf8(w).map_err(|_| bad(&self.name, self.line_no, "value is not text"))?;
                s.parse::<f64>().map_err(|_| bad(&self.name, self.line_no, format!("value {s:?} is not a number")))?
            }
        };
        if it.next().is_some() {
            return Err(bad(&self.name, self.line_no, "too many fields"));
        }
        Ok((i, j, v))
    }
}

fn parse_u64(w: &[u8]) -> Option<u64> {
    if w.is_empty() || w.len() > 19 {
        return None;
    }
    let mut v = 0u64;
    for &c in w {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v * 10 + u64::from(c - b'0');
    }
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reader(text: &str) -> Result<MtxReader> {
        MtxReader::from_reader(Box::new(std::io::Cursor::new(text.as_bytes().to_vec())), "test.mtx")
    }

    #[test]
    fn general_integer_in_blocks() {
        let mut r = reader("%%MatrixMarket matrix coordinate integer general\n% comment\n3 4 3\n1 1 5\n3 4 -2\n\n2 2 7\n").unwrap();
        assert_eq!(r.header().rows, 3);
        let a = r.next_block(2).unwrap().unwrap();
        assert_eq!((a.rows, a.cols, a.values), (vec![0, 2], vec![0, 3], vec![5.0, -2.0]));
        let b = r.next_block(2).unwrap().unwrap();
        assert_eq!((b.rows, b.cols, b.values), (vec![1], vec![1], vec![7.0]));
        assert!(r.next_block(2).unwrap().is_none());
    }

    #[test]
    fn symmetric_pattern_and_errors() {
        let mut r = reader("%%MatrixMarket matrix coordinate pattern symmetric\n2 2 2\n1 1\n2 1\n").unwrap();
        let a = r.next_block(10).unwrap().unwrap();
        assert_eq!((a.rows, a.cols, a.values), (vec![0, 1, 0], vec![0, 0, 1], vec![1.0, 1.0, 1.0]));
        let e = reader("%%MatrixMarket matrix coordinate real general\n2 2 2\n1 3 1.5\n").unwrap().next_block(5).unwrap_err();
        assert!(e.to_string().contains("line 3: column index 3 is out of range"), "{e}");
        let e = reader("%%MatrixMarket matrix coordinate real general\n2 2 2\n1 1 1.5\n").unwrap().next_block(5).unwrap_err();
        assert!(e.to_string().contains("ends after 1 of 2 entries"), "{e}");
        assert!(matches!(reader("%%MatrixMarket matrix array real general\n2 2\n").err(), Some(Error::Unsupported(_))));
        assert!(reader("hello\n").is_err());
    }
}
