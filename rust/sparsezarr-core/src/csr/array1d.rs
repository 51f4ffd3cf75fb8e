//! One-dimensional Zarr arrays read as sets of element ranges and written range by range.

use std::collections::BTreeMap;

use crate::engine::codec::{EngineOptions, ValueSource};
use crate::engine::selection::{DimSel, Run, Selection};
use crate::engine::strided::RawView;
use crate::engine::{ArrayEngine, ChunkRequest, Concurrency};
use crate::error::{Error, Result};
use crate::metadata::{ArrayMeta, ChunkKeys};
use crate::store::Store;

/// A one-dimensional Zarr array (v2 or v3, any codecs, sharded or not) in a store.
pub struct Array1d {
    engine: ArrayEngine,
    keys: ChunkKeys,
    len: u64,
    chunk: u64,
    data_type: String,
    path: String,
}

impl Array1d {
    /// Open from array metadata JSON (`zarr.json` or `.zarray`); chunk keys get `prefix` (the
    /// array's path in the store followed by `/`, or empty) in front.
    ///
    /// # Errors
    /// Returns [`Error::InvalidMetadata`] if the metadata is malformed or not one-dimensional, or
    /// [`Error::Unsupported`] if the engine does not handle the array.
    pub fn from_metadata_json(json: &str, prefix: &str, options: EngineOptions, concurrency: Concurrency) -> Result<Self> {
        let meta = ArrayMeta::parse(json, prefix)?;
        let (&[len], &[chunk]) = (meta.shape.as_slice(), meta.chunk_shape.as_slice()) else {
            return Err(Error::InvalidMetadata(format!("expected a one-dimensional array, the shape is {:?}", meta.shape)));
        };
        let engine = ArrayEngine::from_meta(&meta, None, options, concurrency)?;
        Ok(Self { engine, data_type: meta.data_type_name(), keys: meta.keys, len, chunk, path: prefix.trim_end_matches('/').to_string() })
    }

    /// The array's path in the store (the key prefix without its trailing `/`).
    #[must_use]
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Number of elements.
    #[must_use]
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the array has no elements.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Change the length the array is treated as having (its metadata is the caller's business).
    pub fn set_len(&mut self, len: u64) {
        self.len = len;
    }

    /// Elements per (outer) chunk: the shard length of a sharded array.
    #[must_use]
    pub fn chunk_len(&self) -> u64 {
        self.chunk
    }

    /// Element size in bytes.
    #[must_use]
    pub fn elem_size(&self) -> usize {
        self.engine.elem_size()
    }

    /// The data type as written in the metadata (`"int32"`, `"<i4"`, ...).
    #[must_use]
    pub fn data_type(&self) -> &str {
        &self.data_type
    }

    /// Read the concatenation of the element ranges `runs` (`(start, len)`, any order, overlaps
    /// allowed) into `out` (native byte order). Each chunk, and each inner chunk of a shard, that
    /// the ranges touch is fetched and decoded once, in parallel.
    ///
    /// # Errors
    /// Returns [`Error::Selection`] if a range is out of bounds or `out` has the wrong size, or the
    /// first read or decode error (naming the key).
    pub fn read_runs(&self, store: &dyn Store, runs: &[(u64, u64)], out: &mut [u8]) -> Result<()> {
        let es = self.elem_size() as u64;
        let total: u64 = runs.iter().map(|r| r.1).sum();
        if out.len() as u64 != total * es {
            return Err(Error::Selection(format!("output has {} bytes, the ranges need {}", out.len(), total * es)));
        }
        let mut o = 0u64;
        let placed: Vec<Run> = runs
            .iter()
            .map(|&(start, n)| {
                o += n;
                (start, o - n, n)
            })
            .collect();
        let view = RawView::c_order(out, &[total], es as usize);
        self.read_runs_at(store, &placed, &view)
    }

    /// Read element runs `(start, out_start, len)` into the one-dimensional view `out` (native
    /// byte order) at the given output positions. Several arrays may fill disjoint parts of one
    /// output concurrently (the virtual-array row gather does).
    ///
    /// # Errors
    /// Returns [`Error::Selection`] if a run is out of bounds (of the array or of `out`), or the
    /// first read or decode error (naming the key).
    pub fn read_runs_at(&self, store: &dyn Store, runs: &[Run], out: &RawView) -> Result<()> {
        let mut per_chunk: BTreeMap<u64, Vec<Run>> = BTreeMap::new();
        let out_len = out.shape().first().copied().unwrap_or(0);
        for &(start, o, n) in runs {
            if start.checked_add(n).is_none_or(|end| end > self.len) || o.checked_add(n).is_none_or(|end| end > out_len) {
                return Err(Error::Selection(format!("run {start}..{} -> {o} out of bounds", start.saturating_add(n))));
            }
            let (mut s, mut o, mut left) = (start, o, n);
            while left > 0 {
                let j = s / self.chunk;
                let local = s % self.chunk;
                let take = left.min(self.chunk - local);
                let list = per_chunk.entry(j).or_default();
                match list.last_mut() {
                    Some(last) if last.0 + last.2 == local && last.1 + last.2 == o => last.2 += take,
                    _ => list.push((local, o, take)),
                }
                s += take;
                o += take;
                left -= take;
            }
        }
        let requests: Vec<ChunkRequest> = per_chunk
            .into_iter()
            .map(|(j, runs)| ChunkRequest { key: self.keys.key(&[j]), selection: Selection::Runs(runs), complete: false })
            .collect();
        self.engine.read(store, &requests, out, 0)?;
        Ok(())
    }

    /// Write `data` (native byte order) to the elements `start..`. Chunks the range covers
    /// entirely (up to the array's length) are encoded from `data` alone; partly covered chunks
    /// are merged with what is stored. Chunks that end up holding only the fill value are not
    /// stored.
    ///
    /// # Errors
    /// Returns [`Error::Selection`] if the range passes the array's length, or the first write error.
    pub fn write_range(&self, store: &dyn Store, start: u64, data: &[u8]) -> Result<()> {
        let es = self.elem_size();
        if !data.len().is_multiple_of(es) {
            return Err(Error::InvalidArgument(format!("{} bytes is not a whole number of {es}-byte elements", data.len())));
        }
        let n = (data.len() / es) as u64;
        if n == 0 {
            return Ok(());
        }
        let end = start + n;
        if end > self.len {
            return Err(Error::Selection(format!("range {start}..{end} out of bounds for length {}", self.len)));
        }
        let c = self.chunk;
        let requests: Vec<ChunkRequest> = (start / c..=(end - 1) / c)
            .map(|j| {
                let lo = start.max(j * c);
                let hi = end.min((j + 1) * c);
                ChunkRequest {
                    key: self.keys.key(&[j]),
                    selection: Selection::Orthogonal {
                        chunk: vec![DimSel::range(lo - j * c, hi - lo)],
                        out: vec![Some(DimSel::range(lo - start, hi - lo))],
                    },
                    complete: lo == j * c && (hi == (j + 1) * c || hi == self.len),
                }
            })
            .collect();
        let view = RawView::c_order_const(data, &[n], es);
        self.engine.write(store, &requests, &ValueSource::Array { view: &view, swap: 0 }, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::FsStore;

    fn meta(len: u64, shard: u64, inner: u64) -> String {
        crate::csr::test_meta(len, "int32", shard, inner)
    }

    fn ints(b: &[u8]) -> Vec<i32> {
        b.chunks_exact(4).map(|c| i32::from_ne_bytes(c.try_into().unwrap())).collect()
    }

    #[test]
    fn ranges_roundtrip_and_partial_writes() {
        let dir = std::env::temp_dir().join(format!("sz-a1d-{}", std::process::id()));
        let store = FsStore::new(&dir, false);
        let a = Array1d::from_metadata_json(&meta(1000, 128, 16), "x/", EngineOptions::default(), Concurrency::default()).unwrap();
        let values: Vec<i32> = (1..=1000).collect();
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_ne_bytes()).collect();
        // Written in two unaligned pieces: the second merges with the first's last shard.
        a.write_range(&store, 0, &bytes[..300 * 4]).unwrap();
        a.write_range(&store, 300, &bytes[300 * 4..]).unwrap();
        let runs = [(990u64, 10u64), (0, 3), (127, 2), (500, 0), (0, 3)];
        let mut out = vec![0u8; 18 * 4];
        a.read_runs(&store, &runs, &mut out).unwrap();
        let want: Vec<i32> = runs.iter().flat_map(|&(s, n)| values[s as usize..(s + n) as usize].to_vec()).collect();
        assert_eq!(ints(&out), want);
        let mut all = vec![0u8; 4000];
        a.read_runs(&store, &[(0, 1000)], &mut all).unwrap();
        assert_eq!(ints(&all), values);
        assert!(a.read_runs(&store, &[(999, 2)], &mut [0u8; 8]).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
