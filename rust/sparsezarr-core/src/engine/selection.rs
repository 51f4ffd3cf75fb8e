//! Selections: which elements of a chunk are read or written, and where they go.
//!
//! zarr-python's indexers describe, for every chunk, a selection inside the chunk and a selection
//! in the output (or input) array. This module holds the normalised form of both and the one
//! operation the engine needs on them: splitting a selection over a grid of inner chunks (shards
//! and their inner chunks, nested to any depth), so that only the inner chunks that are touched
//! are fetched and decoded, and each one is copied straight into its place in the output.

use std::collections::BTreeMap;

use crate::error::{Error, Result};

/// A selection along one dimension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DimSel {
    /// `start, start + step, ...`: `len` items (`step >= 1`).
    Range {
        /// First index.
        start: u64,
        /// Distance between indices (at least 1).
        step: u64,
        /// Number of indices.
        len: u64,
    },
    /// Explicit indices, in output order (repeats allowed).
    List(Vec<u64>),
}

impl DimSel {
    /// A contiguous range `start..start+len`.
    #[must_use]
    pub fn range(start: u64, len: u64) -> Self {
        Self::Range { start, step: 1, len }
    }

    /// Number of selected indices.
    #[must_use]
    pub fn len(&self) -> u64 {
        match self {
            Self::Range { len, .. } => *len,
            Self::List(v) => v.len() as u64,
        }
    }

    /// Whether nothing is selected.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The `k`-th selected index.
    #[must_use]
    pub fn get(&self, k: u64) -> u64 {
        match self {
            Self::Range { start, step, .. } => start + k * step,
            #[allow(clippy::cast_possible_truncation)]
            Self::List(v) => v[k as usize],
        }
    }

    /// Largest selected index, if any.
    #[must_use]
    pub fn max(&self) -> Option<u64> {
        match self {
            Self::Range { start, step, len } => (*len > 0).then(|| start + (len - 1) * step),
            Self::List(v) => v.iter().copied().max(),
        }
    }

    /// Whether this selects exactly `0..n`.
    #[must_use]
    pub fn is_full(&self, n: u64) -> bool {
        match self {
            Self::Range { start, step, len } => *start == 0 && *len == n && (*step == 1 || n <= 1),
            Self::List(v) => v.len() as u64 == n && v.iter().enumerate().all(|(i, &x)| i as u64 == x),
        }
    }

    /// Items `k_lo..k_hi` of this selection.
    #[must_use]
    pub fn sub(&self, k_lo: u64, k_hi: u64) -> Self {
        match self {
            Self::Range { start, step, .. } => Self::Range { start: start + k_lo * step, step: *step, len: k_hi - k_lo },
            #[allow(clippy::cast_possible_truncation)]
            Self::List(v) => Self::List(v[k_lo as usize..k_hi as usize].to_vec()),
        }
    }

    /// The items at `positions` (which index into this selection).
    #[must_use]
    pub fn pick(&self, positions: &[u64]) -> Self {
        if let (Some(&first), true) = (positions.first(), is_run(positions)) {
            return self.sub(first, first + positions.len() as u64);
        }
        Self::List(positions.iter().map(|&k| self.get(k)).collect())
    }

    /// Check that every index is below `n`.
    ///
    /// # Errors
    /// Returns [`Error::Selection`] if an index is out of bounds.
    pub fn check_bounds(&self, n: u64) -> Result<()> {
        match self.max() {
            Some(m) if m >= n => Err(Error::Selection(format!("index {m} out of bounds for length {n}"))),
            _ => Ok(()),
        }
    }
}

/// Whether `v` is `a, a+1, a+2, ...`.
fn is_run(v: &[u64]) -> bool {
    v.windows(2).all(|w| w[1] == w[0] + 1)
}

/// Which elements of a chunk take part in a read or write, and where they go in the array that
/// is read into (or written from).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// An outer-product selection. `chunk[d]` selects along chunk dimension `d`; `out[d]` is the
    /// matching selection along the next dimension of the output, or `None` when the dimension
    /// is dropped from the output (an integer index; then `chunk[d]` has length 1).
    Orthogonal {
        /// Per chunk dimension.
        chunk: Vec<DimSel>,
        /// Per chunk dimension; `None` = dropped.
        out: Vec<Option<DimSel>>,
    },
    /// Individual points: point `k` is `coords[d][k]` in the chunk and goes to position
    /// `out.get(k)` of a one-dimensional output.
    Points {
        /// Per chunk dimension, the coordinate of every point.
        coords: Vec<Vec<u64>>,
        /// Output positions, one per point.
        out: DimSel,
    },
    /// Contiguous runs of a one-dimensional chunk, each going to a contiguous range of a
    /// one-dimensional output: run `(c, o, n)` is chunk elements `c..c + n` at output elements
    /// `o..o + n`. Runs may come in any order; the gather of many ranges of a 1-d array (the rows of
    /// a CSR matrix) decodes each chunk once.
    Runs(Vec<Run>),
}

/// One run of a [`Selection::Runs`]: chunk start, output start, length.
pub type Run = (u64, u64, u64);

impl Selection {
    /// The whole chunk of `shape`, placed at `offset` of an output with the same rank.
    #[must_use]
    pub fn whole(shape: &[u64], offset: &[u64]) -> Self {
        Self::Orthogonal {
            chunk: shape.iter().map(|&n| DimSel::range(0, n)).collect(),
            out: shape.iter().zip(offset).map(|(&n, &o)| Some(DimSel::range(o, n))).collect(),
        }
    }

    /// Number of selected elements.
    #[must_use]
    pub fn num_elements(&self) -> u64 {
        match self {
            Self::Orthogonal { chunk, .. } => chunk.iter().map(DimSel::len).product(),
            Self::Points { out, .. } => out.len(),
            Self::Runs(runs) => runs.iter().map(|r| r.2).sum(),
        }
    }

    /// Whether the selection covers every element of a chunk of `shape` (each exactly once).
    #[must_use]
    pub fn covers(&self, shape: &[u64]) -> bool {
        match self {
            Self::Orthogonal { chunk, .. } => chunk.len() == shape.len() && chunk.iter().zip(shape).all(|(s, &n)| s.is_full(n)),
            Self::Points { .. } => false,
            Self::Runs(runs) => {
                if shape.len() != 1 {
                    return false;
                }
                let mut spans: Vec<(u64, u64)> = runs.iter().filter(|r| r.2 > 0).map(|r| (r.0, r.2)).collect();
                spans.sort_unstable();
                let mut next = 0;
                for (c, n) in spans {
                    if c != next {
                        return false;
                    }
                    next = c + n;
                }
                next == shape[0]
            }
        }
    }

    /// Check the selection against a chunk of `shape`.
    ///
    /// # Errors
    /// Returns [`Error::Selection`] if the rank differs or an index is out of bounds.
    pub fn check(&self, shape: &[u64]) -> Result<()> {
        match self {
            Self::Orthogonal { chunk, out } => {
                if chunk.len() != shape.len() || out.len() != shape.len() {
                    return Err(Error::Selection(format!("selection has {} dimensions, chunk has {}", chunk.len(), shape.len())));
                }
                for ((c, o), &n) in chunk.iter().zip(out).zip(shape) {
                    c.check_bounds(n)?;
                    match o {
                        Some(o) if o.len() != c.len() => {
                            return Err(Error::Selection(format!(
                                "chunk selection of {} items maps to an output selection of {} items",
                                c.len(),
                                o.len()
                            )));
                        }
                        None if c.len() != 1 => {
                            return Err(Error::Selection("a dropped dimension must select one index".into()));
                        }
                        _ => {}
                    }
                }
                Ok(())
            }
            Self::Points { coords, out } => {
                if coords.len() != shape.len() {
                    return Err(Error::Selection(format!("point selection has {} dimensions, chunk has {}", coords.len(), shape.len())));
                }
                for (c, &n) in coords.iter().zip(shape) {
                    if c.len() as u64 != out.len() {
                        return Err(Error::Selection("point coordinate arrays differ in length".into()));
                    }
                    if let Some(&m) = c.iter().max()
                        && m >= n
                    {
                        return Err(Error::Selection(format!("index {m} out of bounds for length {n}")));
                    }
                }
                Ok(())
            }
            Self::Runs(runs) => {
                if shape.len() != 1 {
                    return Err(Error::Selection(format!("a run selection needs a one-dimensional chunk, not {} dimensions", shape.len())));
                }
                for &(c, _, n) in runs {
                    if c.checked_add(n).is_none_or(|end| end > shape[0]) {
                        return Err(Error::Selection(format!("run {c}..{} out of bounds for length {}", c.saturating_add(n), shape[0])));
                    }
                }
                Ok(())
            }
        }
    }

    /// Split this selection (within a chunk of `inner_shape * grid`) over the inner chunks of
    /// shape `inner_shape`. Returns, for every inner chunk that is touched, its grid coordinates
    /// and the selection within it, whose output positions are those of this selection.
    #[must_use]
    pub fn partition(&self, inner_shape: &[u64]) -> Vec<(Vec<u64>, Selection)> {
        match self {
            Self::Orthogonal { chunk, out } => partition_orthogonal(chunk, out, inner_shape),
            Self::Points { coords, out } => partition_points(coords, out, inner_shape),
            Self::Runs(runs) => partition_runs(runs, inner_shape),
        }
    }
}

fn partition_runs(runs: &[Run], inner: &[u64]) -> Vec<(Vec<u64>, Selection)> {
    let Some(&c) = inner.first() else { return Vec::new() };
    let mut buckets: BTreeMap<u64, Vec<Run>> = BTreeMap::new();
    for &(mut s, mut o, mut n) in runs {
        while n > 0 {
            let j = s / c;
            let local = s % c;
            let take = n.min(c - local);
            buckets.entry(j).or_default().push((local, o, take));
            s += take;
            o += take;
            n -= take;
        }
    }
    buckets.into_iter().map(|(j, r)| (vec![j], Selection::Runs(r))).collect()
}

/// One inner chunk's share of a dimension selection: inner chunk index, local selection, and the
/// positions (into the parent selection) of the items.
struct DimPart {
    index: u64,
    local: DimSel,
    k_lo: u64,
    k_hi: u64,
    positions: Option<Vec<u64>>,
}

fn split_dim(sel: &DimSel, c: u64) -> Vec<DimPart> {
    let mut parts = Vec::new();
    match sel {
        DimSel::Range { start, step, len } => {
            if *len == 0 {
                return parts;
            }
            let last = start + (len - 1) * step;
            for j in start / c..=last / c {
                let lo = j * c;
                let hi = lo + c;
                let k_lo = if lo <= *start { 0 } else { (lo - start).div_ceil(*step) };
                let k_hi = if hi <= *start { 0 } else { ((hi - start).div_ceil(*step)).min(*len) };
                if k_hi > k_lo {
                    parts.push(DimPart {
                        index: j,
                        local: DimSel::Range { start: start + k_lo * step - lo, step: *step, len: k_hi - k_lo },
                        k_lo,
                        k_hi,
                        positions: None,
                    });
                }
            }
        }
        DimSel::List(v) => {
            let mut buckets: BTreeMap<u64, (Vec<u64>, Vec<u64>)> = BTreeMap::new();
            for (k, &x) in v.iter().enumerate() {
                let e = buckets.entry(x / c).or_default();
                e.0.push(x % c);
                e.1.push(k as u64);
            }
            for (j, (local, positions)) in buckets {
                let (k_lo, k_hi) = (positions[0], positions[positions.len() - 1] + 1);
                let run = is_run(&positions);
                let local = if is_run(&local) { DimSel::range(local[0], local.len() as u64) } else { DimSel::List(local) };
                parts.push(DimPart { index: j, local, k_lo, k_hi, positions: (!run).then_some(positions) });
            }
        }
    }
    parts
}

fn partition_orthogonal(chunk: &[DimSel], out: &[Option<DimSel>], inner: &[u64]) -> Vec<(Vec<u64>, Selection)> {
    let per_dim: Vec<Vec<DimPart>> = chunk.iter().zip(inner).map(|(s, &c)| split_dim(s, c)).collect();
    if per_dim.iter().any(Vec::is_empty) {
        return Vec::new();
    }
    let mut result = Vec::with_capacity(per_dim.iter().map(Vec::len).product());
    let mut idx = vec![0usize; per_dim.len()];
    loop {
        let mut coords = Vec::with_capacity(per_dim.len());
        let mut sel_chunk = Vec::with_capacity(per_dim.len());
        let mut sel_out = Vec::with_capacity(per_dim.len());
        for (d, parts) in per_dim.iter().enumerate() {
            let p = &parts[idx[d]];
            coords.push(p.index);
            sel_chunk.push(p.local.clone());
            sel_out.push(out[d].as_ref().map(|o| match &p.positions {
                None => o.sub(p.k_lo, p.k_hi),
                Some(pos) => o.pick(pos),
            }));
        }
        result.push((coords, Selection::Orthogonal { chunk: sel_chunk, out: sel_out }));
        // Advance the odometer (last dimension fastest).
        let mut d = per_dim.len();
        loop {
            if d == 0 {
                return result;
            }
            d -= 1;
            idx[d] += 1;
            if idx[d] < per_dim[d].len() {
                break;
            }
            idx[d] = 0;
        }
    }
}

fn partition_points(coords: &[Vec<u64>], out: &DimSel, inner: &[u64]) -> Vec<(Vec<u64>, Selection)> {
    let n = out.len();
    // Per inner chunk: local coordinates per dimension, and output positions.
    type Bucket = (Vec<Vec<u64>>, Vec<u64>);
    let mut buckets: BTreeMap<Vec<u64>, Bucket> = BTreeMap::new();
    for k in 0..n {
        #[allow(clippy::cast_possible_truncation)]
        let key: Vec<u64> = coords.iter().zip(inner).map(|(c, &s)| c[k as usize] / s).collect();
        let e = buckets.entry(key).or_insert_with(|| (vec![Vec::new(); coords.len()], Vec::new()));
        for (d, (c, &s)) in coords.iter().zip(inner).enumerate() {
            #[allow(clippy::cast_possible_truncation)]
            e.0[d].push(c[k as usize] % s);
        }
        e.1.push(k);
    }
    buckets.into_iter().map(|(key, (local, positions))| (key, Selection::Points { coords: local, out: out.pick(&positions) })).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expand(sel: &Selection) -> Vec<(Vec<u64>, Vec<u64>)> {
        // (chunk coords, out coords) of every element, in iteration order.
        let mut v = Vec::new();
        match sel {
            Selection::Orthogonal { chunk, out } => {
                let n: Vec<u64> = chunk.iter().map(DimSel::len).collect();
                let total: u64 = n.iter().product();
                for lin in 0..total {
                    let mut rem = lin;
                    let mut ks = vec![0; n.len()];
                    for d in (0..n.len()).rev() {
                        ks[d] = rem % n[d];
                        rem /= n[d];
                    }
                    let c = ks.iter().zip(chunk).map(|(&k, s)| s.get(k)).collect();
                    let o = ks.iter().zip(out).filter_map(|(&k, s)| s.as_ref().map(|s| s.get(k))).collect();
                    v.push((c, o));
                }
            }
            Selection::Points { coords, out } => {
                for k in 0..out.len() {
                    v.push((coords.iter().map(|c| c[k as usize]).collect(), vec![out.get(k)]));
                }
            }
            Selection::Runs(runs) => {
                for &(c, o, n) in runs {
                    for i in 0..n {
                        v.push((vec![c + i], vec![o + i]));
                    }
                }
            }
        }
        v
    }

    fn check_partition(sel: &Selection, inner: &[u64]) {
        let mut want: Vec<_> = expand(sel);
        let mut got = Vec::new();
        for (coords, part) in sel.partition(inner) {
            for (c, o) in expand(&part) {
                let global: Vec<u64> = c.iter().zip(&coords).zip(inner).map(|((&x, &j), &s)| j * s + x).collect();
                got.push((global, o));
            }
        }
        want.sort();
        got.sort();
        assert_eq!(want, got);
    }

    #[test]
    fn partition_ranges_lists_points() {
        let sel = Selection::Orthogonal {
            chunk: vec![DimSel::Range { start: 1, step: 3, len: 7 }, DimSel::List(vec![9, 0, 4, 4, 11])],
            out: vec![Some(DimSel::range(0, 7)), Some(DimSel::Range { start: 2, step: 2, len: 5 })],
        };
        check_partition(&sel, &[4, 5]);
        let dropped = Selection::Orthogonal { chunk: vec![DimSel::range(5, 1), DimSel::range(0, 12)], out: vec![None, Some(DimSel::range(3, 12))] };
        check_partition(&dropped, &[4, 5]);
        let pts = Selection::Points { coords: vec![vec![0, 7, 3, 7], vec![11, 2, 2, 2]], out: DimSel::List(vec![5, 1, 2, 0]) };
        check_partition(&pts, &[4, 5]);
        let runs = Selection::Runs(vec![(3, 0, 9), (20, 9, 1), (0, 10, 2), (3, 12, 9)]);
        check_partition(&runs, &[4]);
        check_partition(&runs, &[64]);
    }

    #[test]
    fn run_coverage() {
        assert!(Selection::Runs(vec![(4, 0, 4), (0, 4, 4)]).covers(&[8]));
        assert!(!Selection::Runs(vec![(4, 0, 4), (0, 4, 3)]).covers(&[8]));
        assert!(!Selection::Runs(vec![(0, 0, 4), (3, 4, 5)]).covers(&[8]));
        assert!(Selection::Runs(vec![(6, 0, 3)]).check(&[8]).is_err());
        assert!(Selection::Runs(vec![(5, 0, 3)]).check(&[8]).is_ok());
    }

    #[test]
    fn coverage_and_bounds() {
        assert!(Selection::whole(&[3, 4], &[0, 0]).covers(&[3, 4]));
        let s = Selection::Orthogonal { chunk: vec![DimSel::range(0, 3)], out: vec![Some(DimSel::range(0, 3))] };
        assert!(s.check(&[2]).is_err());
        assert!(s.check(&[3]).is_ok());
    }
}
