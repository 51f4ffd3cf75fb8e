//! Mapping array indices to output positions, per dimension and per chunk.

use super::*;

// ------------------------------------------------------------------------------------------------
// Mapping array indices to output positions
// ------------------------------------------------------------------------------------------------

pub(super) enum DimMap {
    Range {
        start: u64,
        step: u64,
        len: u64,
    },
    /// `(array index, output position)` sorted by index, then position.
    List {
        pairs: Vec<(u64, u64)>,
        monotone: bool,
    },
}

pub(super) enum LocalMap {
    Range {
        start: i128,
        step: i128,
        len: i128,
    },
    /// Per local index `i`, the output positions `positions[offsets[i]..offsets[i + 1]]`.
    Table {
        offsets: Vec<u32>,
        positions: Vec<u64>,
    },
}

pub(super) enum Mapped<'a> {
    None,
    One(u64),
    Many(&'a [u64]),
}

impl DimMap {
    pub(super) fn new(sel: &DimSel) -> Self {
        match sel {
            DimSel::Range { start, step, len } => Self::Range { start: *start, step: *step, len: *len },
            DimSel::List(v) => {
                let monotone = v.windows(2).all(|w| w[1] > w[0]);
                let mut pairs: Vec<(u64, u64)> = v.iter().enumerate().map(|(p, &i)| (i, p as u64)).collect();
                if !monotone {
                    pairs.sort_unstable();
                }
                Self::List { pairs, monotone }
            }
        }
    }

    pub(super) fn monotone(&self) -> bool {
        match self {
            Self::Range { .. } => true,
            Self::List { monotone, .. } => *monotone,
        }
    }

    /// The map for local indices `0..n` of a chunk starting at array index `origin`.
    pub(super) fn local(&self, origin: u64, n: u64) -> LocalMap {
        match self {
            Self::Range { start, step, len } => {
                LocalMap::Range { start: i128::from(*start) - i128::from(origin), step: i128::from(*step), len: i128::from(*len) }
            }
            Self::List { pairs, .. } => {
                let lo = pairs.partition_point(|p| p.0 < origin);
                let hi = pairs.partition_point(|p| p.0 < origin + n);
                let slice = &pairs[lo..hi];
                #[allow(clippy::cast_possible_truncation)]
                let mut offsets = vec![0u32; n as usize + 1];
                for p in slice {
                    #[allow(clippy::cast_possible_truncation)]
                    {
                        offsets[(p.0 - origin) as usize + 1] += 1;
                    }
                }
                for i in 1..offsets.len() {
                    offsets[i] += offsets[i - 1];
                }
                LocalMap::Table { offsets, positions: slice.iter().map(|p| p.1).collect() }
            }
        }
    }
}

impl LocalMap {
    #[inline]
    pub(super) fn map(&self, local: u64) -> Mapped<'_> {
        match self {
            Self::Range { start, step, len } => {
                let off = i128::from(local) - start;
                if off < 0 || off % step != 0 {
                    return Mapped::None;
                }
                let k = off / step;
                #[allow(clippy::cast_sign_loss, clippy::cast_possible_truncation)]
                if k < *len { Mapped::One(k as u64) } else { Mapped::None }
            }
            Self::Table { offsets, positions } => {
                #[allow(clippy::cast_possible_truncation)]
                let (a, b) = (offsets[local as usize] as usize, offsets[local as usize + 1] as usize);
                match b - a {
                    0 => Mapped::None,
                    1 => Mapped::One(positions[a]),
                    _ => Mapped::Many(&positions[a..b]),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every local index of a chunk maps to exactly the output positions whose selected index
    /// lies at it, for ranges with steps and for index lists in any order with repeats.
    #[test]
    fn local_maps_match_a_brute_force_search() {
        let sels = [
            DimSel::Range { start: 3, step: 1, len: 20 },
            DimSel::Range { start: 1, step: 4, len: 9 },
            DimSel::List(vec![0, 5, 9, 17, 30]),
            DimSel::List(vec![17, 2, 2, 31, 0, 17, 9]),
        ];
        for sel in &sels {
            let selected: Vec<u64> = match sel {
                DimSel::Range { start, step, len } => (0..*len).map(|k| start + k * step).collect(),
                DimSel::List(v) => v.clone(),
            };
            let map = DimMap::new(sel);
            assert_eq!(map.monotone(), selected.windows(2).all(|w| w[1] > w[0]));
            for (origin, n) in [(0u64, 8u64), (8, 8), (16, 16), (30, 5)] {
                let local = map.local(origin, n);
                for i in 0..n {
                    let mut want: Vec<u64> = (0..selected.len() as u64).filter(|&p| selected[p as usize] == origin + i).collect();
                    let mut got: Vec<u64> = match local.map(i) {
                        Mapped::None => vec![],
                        Mapped::One(p) => vec![p],
                        Mapped::Many(ps) => ps.to_vec(),
                    };
                    want.sort_unstable();
                    got.sort_unstable();
                    assert_eq!(got, want, "{sel:?} origin {origin} local {i}");
                }
            }
        }
    }
}
