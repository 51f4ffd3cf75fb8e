//! The virtual array document (format version 1) and its compilation into flat layers.
//!
//! A document describes a view as a tree of nodes (`array`, `fill`, `concat`, `stack`, `index`).
//! Every leaf carries its shape, so the whole tree is checked and compiled without any I/O into a
//! list of non-overlapping [`Layer`]s: boxes of the view, each backed by one component (or by the
//! fill value), with an affine map from view coordinates to component coordinates. Reads and
//! writes intersect their selection with these boxes. The format is specified in
//! `docs/spec/virtual-arrays.md`.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The format version this crate writes and reads.
pub const FORMAT_VERSION: u64 = 1;

/// Deepest nesting of nodes (and of virtual arrays inside virtual arrays) accepted.
pub const MAX_DEPTH: usize = 32;

/// How the view's components store their values, and so what reads return.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Storage {
    /// Ordinary (dense) Zarr arrays; reads return dense arrays.
    #[default]
    Dense,
    /// sparsezarr sparse arrays (the `sparsezarr.sparse` codec); reads stay sparse.
    Sparse,
    /// anndata CSR groups (`data`, `indices`, `indptr`), composed along rows.
    Csr,
    /// anndata CSC groups, composed along columns.
    Csc,
}

/// A virtual array document.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Document {
    /// Format version; must be [`FORMAT_VERSION`].
    pub virtual_array_format: u64,
    /// Shape of the view (must equal the shape the tree implies).
    pub shape: Vec<u64>,
    /// Zarr v3 data type name; every component must have exactly this type.
    pub data_type: String,
    /// Fill value (Zarr v3 JSON encoding), for `fill` nodes.
    #[serde(default)]
    pub fill_value: serde_json::Value,
    /// How the components store values.
    #[serde(default, skip_serializing_if = "is_dense")]
    pub storage: Storage,
    /// Optional names of the dimensions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dimension_names: Option<Vec<Option<String>>>,
    /// User attributes.
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub attributes: serde_json::Map<String, serde_json::Value>,
    /// The root node.
    pub source: Node,
}

#[allow(clippy::trivially_copy_pass_by_ref)]
fn is_dense(s: &Storage) -> bool {
    *s == Storage::Dense
}

/// A node of the tree.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum Node {
    /// A stored component: a Zarr array (or group, or another virtual array).
    Array {
        /// Path relative to the directory (group) that holds the document.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        path: Option<String>,
        /// Absolute URL (`file://...`), only opened when the opener allows its prefix.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        url: Option<String>,
        /// The component's shape.
        shape: Vec<u64>,
        /// The component's data type (Zarr v3 name).
        data_type: String,
    },
    /// A block of the fill value.
    Fill {
        /// Shape of the block.
        shape: Vec<u64>,
    },
    /// `numpy.concatenate(components, axis)`.
    Concat {
        /// Axis along which the components are joined.
        axis: usize,
        /// The parts, at least one.
        components: Vec<Node>,
    },
    /// `numpy.stack(components, axis)`.
    Stack {
        /// Position of the new axis.
        axis: usize,
        /// The parts, at least one, all of one shape.
        components: Vec<Node>,
    },
    /// Basic indexing of `source`, then an optional transpose.
    Index {
        /// The node indexed.
        source: Box<Node>,
        /// One entry per source dimension, plus `"newaxis"` entries.
        selection: Vec<Sel>,
        /// Permutation of the result's dimensions (result dim `k` is dim `transpose[k]`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        transpose: Option<Vec<usize>>,
    },
}

/// One entry of an `index` selection.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum Sel {
    /// `size` indices `start, start + step, ...` (`step` may be negative, never zero).
    Slice {
        /// First index.
        start: u64,
        /// Distance between indices.
        step: i64,
        /// Number of indices.
        size: u64,
    },
    /// One index; the dimension is dropped.
    Int(u64),
    /// The string `"newaxis"`: a new dimension of length 1.
    Word(String),
}

/// How one component dimension is addressed from the view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DimMap {
    /// Always this index (the view has no dimension for it).
    Fixed(u64),
    /// `offset + stride * v` for index `v` of view dimension `view_dim`.
    Affine {
        /// The view dimension.
        view_dim: usize,
        /// Component index at view index 0.
        offset: i64,
        /// Component step per view step (never zero).
        stride: i64,
    },
}

impl DimMap {
    /// The component index for view index `v` (only for [`DimMap::Affine`]).
    #[must_use]
    #[allow(clippy::cast_possible_wrap, clippy::cast_sign_loss)]
    pub fn apply(&self, v: u64) -> u64 {
        match *self {
            Self::Fixed(c) => c,
            Self::Affine { offset, stride, .. } => (offset + stride * v as i64) as u64,
        }
    }
}

/// A box of the view backed by one component (or the fill value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    /// Index of the component in [`Compiled::leaves`], `None` for fill.
    pub leaf: Option<usize>,
    /// Lower corner (inclusive), view coordinates.
    pub lo: Vec<u64>,
    /// Upper corner (exclusive).
    pub hi: Vec<u64>,
    /// One map per component dimension (empty for fill).
    pub maps: Vec<DimMap>,
}

/// A component as the document names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeafSpec {
    /// Relative path, if given.
    pub path: Option<String>,
    /// Absolute URL, if given.
    pub url: Option<String>,
    /// Shape the document declares.
    pub shape: Vec<u64>,
    /// Data type the document declares.
    pub data_type: String,
}

/// A document checked and compiled.
#[derive(Debug, Clone)]
pub struct Compiled {
    /// The view's shape.
    pub shape: Vec<u64>,
    /// Components in document order.
    pub leaves: Vec<LeafSpec>,
    /// Non-overlapping boxes covering the view.
    pub layers: Vec<Layer>,
}

fn bad(msg: impl Into<String>) -> Error {
    Error::InvalidMetadata(format!("virtual array: {}", msg.into()))
}

impl Document {
    /// Parse a document from JSON text (without checking it; see [`Document::compile`]).
    ///
    /// # Errors
    /// Returns [`Error::InvalidMetadata`] for malformed JSON or unknown fields.
    pub fn from_json(text: &str) -> Result<Self> {
        let doc: Self = serde_json::from_str(text).map_err(|e| bad(e.to_string()))?;
        if doc.virtual_array_format != FORMAT_VERSION {
            return Err(bad(format!("format version {} is not supported (this version reads {FORMAT_VERSION})", doc.virtual_array_format)));
        }
        Ok(doc)
    }

    /// The document as JSON text.
    ///
    /// # Errors
    /// Never in practice (serialisation of plain data).
    pub fn to_json(&self) -> Result<String> {
        serde_json::to_string(self).map_err(|e| Error::Internal(e.to_string()))
    }

    /// Check the tree (ranks, extents, data types, depth, selections) and compile it into layers.
    ///
    /// # Errors
    /// Returns [`Error::InvalidMetadata`] naming the offending node.
    pub fn compile(&self) -> Result<Compiled> {
        let mut leaves = Vec::new();
        let (shape, layers) = compile_node(&self.source, &self.data_type, &mut leaves, 0, "source")?;
        if shape != self.shape {
            return Err(bad(format!("the document's shape {:?} differs from the shape its source implies, {shape:?}", self.shape)));
        }
        if let Some(names) = &self.dimension_names
            && names.len() != shape.len()
        {
            return Err(bad(format!("{} dimension names for {} dimensions", names.len(), shape.len())));
        }
        if matches!(self.storage, Storage::Csr | Storage::Csc) {
            check_compressed(self.storage, &shape, &leaves, &layers)?;
        }
        Ok(Compiled { shape, leaves, layers })
    }
}

/// CSR (CSC) views stay 2-d and compose their components along rows (columns) only: every layer
/// spans all columns (rows), mapped one to one.
fn check_compressed(storage: Storage, shape: &[u64], leaves: &[LeafSpec], layers: &[Layer]) -> Result<()> {
    let (major, minor) = if storage == Storage::Csr { (0, 1) } else { (1, 0) };
    let what = if storage == Storage::Csr { "rows" } else { "columns" };
    if shape.len() != 2 {
        return Err(bad(format!("a {storage:?} view must be 2-dimensional, not {}-dimensional", shape.len()).to_lowercase()));
    }
    for layer in layers {
        if layer.lo[minor] != 0 || layer.hi[minor] != shape[minor] {
            return Err(bad(format!(
                "{storage:?} components may only be combined along {what}: a part covers only {}..{} of the other axis",
                layer.lo[minor], layer.hi[minor]
            )));
        }
        let Some(leaf) = layer.leaf else { continue };
        let ok = leaves[leaf].shape.len() == 2
            && leaves[leaf].shape[minor] == shape[minor]
            && layer.maps.len() == 2
            && layer.maps[minor] == DimMap::Affine { view_dim: minor, offset: 0, stride: 1 }
            && matches!(layer.maps[major], DimMap::Affine { view_dim, .. } if view_dim == major);
        if !ok {
            return Err(bad(format!(
                "{storage:?} components may only be combined, sliced and reordered along {what}; component {leaf} is used otherwise"
            )));
        }
    }
    Ok(())
}

type NodeOut = (Vec<u64>, Vec<Layer>);

fn compile_node(node: &Node, dtype: &str, leaves: &mut Vec<LeafSpec>, depth: usize, at: &str) -> Result<NodeOut> {
    if depth > MAX_DEPTH {
        return Err(bad(format!("nodes nest deeper than {MAX_DEPTH} levels at {at}")));
    }
    match node {
        Node::Array { path, url, shape, data_type } => {
            match (path, url) {
                (Some(_), Some(_)) => return Err(bad(format!("{at}: give either path or url, not both"))),
                (None, None) => return Err(bad(format!("{at}: an array node needs a path or a url"))),
                _ => {}
            }
            if data_type != dtype {
                return Err(bad(format!("{at}: component data type {data_type} differs from the view's {dtype}")));
            }
            let leaf = leaves.len();
            leaves.push(LeafSpec { path: path.clone(), url: url.clone(), shape: shape.clone(), data_type: data_type.clone() });
            #[allow(clippy::cast_possible_wrap)]
            let maps = (0..shape.len()).map(|d| DimMap::Affine { view_dim: d, offset: 0, stride: 1 }).collect();
            let layers =
                if shape.contains(&0) { vec![] } else { vec![Layer { leaf: Some(leaf), lo: vec![0; shape.len()], hi: shape.clone(), maps }] };
            Ok((shape.clone(), layers))
        }
        Node::Fill { shape } => {
            let layers =
                if shape.contains(&0) { vec![] } else { vec![Layer { leaf: None, lo: vec![0; shape.len()], hi: shape.clone(), maps: vec![] }] };
            Ok((shape.clone(), layers))
        }
        Node::Concat { axis, components } => {
            let parts = compile_parts(components, dtype, leaves, depth, at, "concat")?;
            let rank = parts[0].0.len();
            if *axis >= rank {
                return Err(bad(format!("{at}: concat axis {axis} is out of range for {rank}-dimensional components")));
            }
            let mut shape = parts[0].0.clone();
            shape[*axis] = 0;
            let mut layers = Vec::new();
            for (i, (s, ls)) in parts.into_iter().enumerate() {
                let same = s.len() == rank && (0..rank).all(|d| d == *axis || s[d] == shape[d]);
                if !same {
                    return Err(bad(format!(
                        "{at}: concat component {i} has shape {s:?}, which does not match {:?} except along axis {axis}",
                        shape
                    )));
                }
                let shift = shape[*axis];
                for mut l in ls {
                    l.lo[*axis] += shift;
                    l.hi[*axis] += shift;
                    for m in &mut l.maps {
                        if let DimMap::Affine { view_dim, offset, stride } = m
                            && *view_dim == *axis
                        {
                            #[allow(clippy::cast_possible_wrap)]
                            let sh = shift as i64;
                            *offset -= *stride * sh;
                        }
                    }
                    layers.push(l);
                }
                shape[*axis] += s[*axis];
            }
            Ok((shape, layers))
        }
        Node::Stack { axis, components } => {
            let parts = compile_parts(components, dtype, leaves, depth, at, "stack")?;
            let base = parts[0].0.clone();
            if *axis > base.len() {
                return Err(bad(format!("{at}: stack axis {axis} is out of range for {}-dimensional components", base.len())));
            }
            let mut layers = Vec::new();
            let n = parts.len() as u64;
            for (i, (s, ls)) in parts.into_iter().enumerate() {
                if s != base {
                    return Err(bad(format!("{at}: stack component {i} has shape {s:?}, component 0 {base:?}")));
                }
                for mut l in ls {
                    l.lo.insert(*axis, i as u64);
                    l.hi.insert(*axis, i as u64 + 1);
                    for m in &mut l.maps {
                        if let DimMap::Affine { view_dim, .. } = m
                            && *view_dim >= *axis
                        {
                            *view_dim += 1;
                        }
                    }
                    layers.push(l);
                }
            }
            let mut shape = base;
            shape.insert(*axis, n);
            Ok((shape, layers))
        }
        Node::Index { source, selection, transpose } => {
            let (src_shape, src_layers) = compile_node(source, dtype, leaves, depth + 1, &format!("{at}.source"))?;
            index_layers(&src_shape, src_layers, selection, transpose.as_deref(), at)
        }
    }
}

fn compile_parts(components: &[Node], dtype: &str, leaves: &mut Vec<LeafSpec>, depth: usize, at: &str, what: &str) -> Result<Vec<NodeOut>> {
    if components.is_empty() {
        return Err(bad(format!("{at}: {what} needs at least one component")));
    }
    components.iter().enumerate().map(|(i, c)| compile_node(c, dtype, leaves, depth + 1, &format!("{at}.components[{i}]"))).collect()
}

/// The range of `j` in `0..size` with `lo <= start + step * j < hi`.
#[allow(clippy::cast_possible_wrap, clippy::cast_sign_loss, clippy::cast_possible_truncation)]
pub(crate) fn slice_window(start: u64, step: i64, size: u64, lo: u64, hi: u64) -> (u64, u64) {
    let (start, step, size, lo, hi) = (i128::from(start), i128::from(step), i128::from(size), i128::from(lo), i128::from(hi));
    // Smallest j with start + step*j >= lo (step > 0) or < hi (step < 0), etc.
    let (a, b) = if step > 0 {
        // j >= (lo - start)/step, j < (hi - start)/step
        (
            (lo - start).div_euclid(step) + i128::from((lo - start).rem_euclid(step) != 0),
            (hi - start).div_euclid(step) + i128::from((hi - start).rem_euclid(step) != 0),
        )
    } else {
        let s = -step;
        // start - s*j < hi  <=>  j > (start - hi)/s ; start - s*j >= lo <=> j <= (start - lo)/s
        ((start - hi).div_euclid(s) + 1, (start - lo).div_euclid(s) + 1)
    };
    let a = a.clamp(0, size);
    let b = b.clamp(0, size);
    if b <= a { (0, 0) } else { (a as u64, b as u64) }
}

fn index_layers(src_shape: &[u64], src_layers: Vec<Layer>, selection: &[Sel], transpose: Option<&[usize]>, at: &str) -> Result<NodeOut> {
    // Validate the selection and work out the result's shape.
    let mut shape = Vec::new();
    let mut sd = 0usize;
    for s in selection {
        match s {
            Sel::Word(w) if w == "newaxis" => shape.push(1),
            Sel::Word(w) => return Err(bad(format!("{at}: unknown selection entry {w:?} (expected a slice object, an integer or \"newaxis\")"))),
            Sel::Int(i) => {
                let n = *src_shape.get(sd).ok_or_else(|| bad(format!("{at}: selection has more entries than the source has dimensions")))?;
                if *i >= n {
                    return Err(bad(format!("{at}: index {i} is out of range for length {n} (dimension {sd})")));
                }
                sd += 1;
            }
            Sel::Slice { start, step, size } => {
                let n = *src_shape.get(sd).ok_or_else(|| bad(format!("{at}: selection has more entries than the source has dimensions")))?;
                if *step == 0 {
                    return Err(bad(format!("{at}: slice step must not be zero")));
                }
                if *size > 0 {
                    #[allow(clippy::cast_possible_wrap)]
                    let last = i128::from(*start) + i128::from(*step) * (i128::from(*size) - 1);
                    if *start >= n || last < 0 || last >= i128::from(n) {
                        return Err(bad(format!("{at}: slice start {start} step {step} size {size} leaves dimension {sd} of length {n}")));
                    }
                }
                shape.push(*size);
                sd += 1;
            }
        }
    }
    if sd != src_shape.len() {
        return Err(bad(format!("{at}: selection has {sd} entries for source dimensions, the source has {}", src_shape.len())));
    }
    let perm: Vec<usize> = match transpose {
        None => (0..shape.len()).collect(),
        Some(p) => {
            let mut seen = vec![false; shape.len()];
            if p.len() != shape.len() || p.iter().any(|&k| k >= shape.len() || std::mem::replace(&mut seen[k], true)) {
                return Err(bad(format!("{at}: transpose {p:?} is not a permutation of {} dimensions", shape.len())));
            }
            p.to_vec()
        }
    };
    // inv[old result dim] = new result dim
    let mut inv = vec![0usize; perm.len()];
    for (k, &p) in perm.iter().enumerate() {
        inv[p] = k;
    }
    let new_shape: Vec<u64> = perm.iter().map(|&p| shape[p]).collect();
    let mut layers = Vec::with_capacity(src_layers.len());
    'layers: for l in src_layers {
        let rank = new_shape.len();
        let (mut lo, mut hi) = (vec![0u64; rank], vec![0u64; rank]);
        // Per source dim: how it maps now (None = fixed at index c; Some(new dim, start, step)).
        let mut fixed: Vec<Option<u64>> = vec![None; src_shape.len()];
        let mut affine: Vec<Option<(usize, u64, i64)>> = vec![None; src_shape.len()];
        let (mut sd, mut rd) = (0usize, 0usize);
        for s in selection {
            match s {
                Sel::Word(_) => {
                    lo[inv[rd]] = 0;
                    hi[inv[rd]] = 1;
                    rd += 1;
                }
                Sel::Int(i) => {
                    if *i < l.lo[sd] || *i >= l.hi[sd] {
                        continue 'layers;
                    }
                    fixed[sd] = Some(*i);
                    sd += 1;
                }
                Sel::Slice { start, step, size } => {
                    let (a, b) = slice_window(*start, *step, *size, l.lo[sd], l.hi[sd]);
                    if a == b {
                        continue 'layers;
                    }
                    lo[inv[rd]] = a;
                    hi[inv[rd]] = b;
                    affine[sd] = Some((inv[rd], *start, *step));
                    sd += 1;
                    rd += 1;
                }
            }
        }
        let maps = l
            .maps
            .iter()
            .map(|m| match *m {
                DimMap::Fixed(c) => DimMap::Fixed(c),
                DimMap::Affine { view_dim, offset, stride } => {
                    if let Some(c) = fixed[view_dim] {
                        #[allow(clippy::cast_possible_wrap, clippy::cast_sign_loss)]
                        return DimMap::Fixed((offset + stride * c as i64) as u64);
                    }
                    let (nd, start, step) = affine[view_dim].expect("every source dimension is either fixed or sliced");
                    #[allow(clippy::cast_possible_wrap)]
                    DimMap::Affine { view_dim: nd, offset: offset + stride * start as i64, stride: stride * step }
                }
            })
            .collect();
        layers.push(Layer { leaf: l.leaf, lo, hi, maps });
    }
    Ok((new_shape, layers))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(source: serde_json::Value, shape: &[u64]) -> Document {
        Document::from_json(
            &serde_json::json!({"virtual_array_format": 1, "shape": shape, "data_type": "int32", "fill_value": 0, "source": source}).to_string(),
        )
        .unwrap()
    }

    fn arr(p: &str, shape: &[u64]) -> serde_json::Value {
        serde_json::json!({"kind": "array", "path": p, "shape": shape, "data_type": "int32"})
    }

    #[test]
    fn concat_stack_index_compile() {
        let d = doc(serde_json::json!({"kind": "concat", "axis": 0, "components": [arr("a", &[3, 4]), arr("b", &[5, 4])]}), &[8, 4]);
        let c = d.compile().unwrap();
        assert_eq!(c.layers.len(), 2);
        assert_eq!(c.layers[1].lo, vec![3, 0]);
        assert_eq!(c.layers[1].maps[0].apply(3), 0);
        // Reversed rows 6..1 of the concat: view row 0 = concat row 6 = b row 3.
        let d = doc(
            serde_json::json!({"kind": "index", "selection": [{"start": 6, "step": -1, "size": 6}, 2],
                "source": {"kind": "concat", "axis": 0, "components": [arr("a", &[3, 4]), arr("b", &[5, 4])]}}),
            &[6],
        );
        let c = d.compile().unwrap();
        let b = c.layers.iter().find(|l| l.leaf == Some(1)).unwrap();
        assert_eq!((b.lo.clone(), b.hi.clone()), (vec![0], vec![4]));
        assert_eq!(b.maps[0].apply(0), 3);
        assert_eq!(b.maps[1], DimMap::Fixed(2));
        let a = c.layers.iter().find(|l| l.leaf == Some(0)).unwrap();
        assert_eq!((a.lo.clone(), a.hi.clone()), (vec![4], vec![6]));
        assert_eq!(a.maps[0].apply(4), 2);
        // Stack inserts an axis no component dimension maps to.
        let d = doc(serde_json::json!({"kind": "stack", "axis": 1, "components": [arr("a", &[3, 4]), arr("b", &[3, 4])]}), &[3, 2, 4]);
        let c = d.compile().unwrap();
        assert_eq!(c.layers[1].lo, vec![0, 1, 0]);
        assert_eq!(c.layers[1].maps[1], DimMap::Affine { view_dim: 2, offset: 0, stride: 1 });
    }

    #[test]
    fn rejects_bad_documents() {
        let bad_shape = doc(serde_json::json!({"kind": "concat", "axis": 0, "components": [arr("a", &[3, 4]), arr("b", &[5, 3])]}), &[8, 4]);
        assert!(bad_shape.compile().is_err());
        let wrong_total = doc(arr("a", &[3, 4]), &[3, 5]);
        assert!(wrong_total.compile().is_err());
        let mut deep = arr("a", &[2]);
        for _ in 0..40 {
            deep = serde_json::json!({"kind": "concat", "axis": 0, "components": [deep]});
        }
        assert!(doc(deep, &[2]).compile().unwrap_err().to_string().contains("deeper"));
        assert!(
            Document::from_json(r#"{"virtual_array_format": 2, "shape": [], "data_type": "int32", "source": {"kind": "fill", "shape": []}}"#)
                .is_err()
        );
        assert!(
            doc(serde_json::json!({"kind": "index", "selection": [{"start": 0, "step": 1, "size": 4}], "source": arr("a", &[3])}), &[4])
                .compile()
                .is_err()
        );
    }

    #[test]
    fn slice_windows() {
        for (start, step, size) in [(0u64, 1i64, 10u64), (9, -1, 10), (1, 3, 3), (8, -3, 3), (5, -2, 3)] {
            for lo in 0..10 {
                for hi in lo..=10 {
                    let want: Vec<u64> = (0..size)
                        .filter(|&j| {
                            #[allow(clippy::cast_possible_wrap)]
                            let v = start as i64 + step * j as i64;
                            v >= lo as i64 && v < hi as i64
                        })
                        .collect();
                    let (a, b) = slice_window(start, step, size, lo, hi);
                    assert_eq!((a..b).collect::<Vec<_>>(), want, "{start} {step} {size} {lo} {hi}");
                }
            }
        }
    }
}
