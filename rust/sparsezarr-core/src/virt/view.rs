//! A virtual array opened from its document: region reads and writes split over the components
//! they touch and dispatched concurrently; components opened lazily, on first touch.

use std::sync::{Arc, Mutex};

use zarrs::array::{ArrayMetadata, DataType};

use crate::csr::gather::{Gathered, Major};
use crate::csr::ints::{check_range, convert_checked};
use crate::dtype::ElemType;
use crate::engine::codec::ValueSource;
use crate::engine::selection::{DimSel, Run, Selection};
use crate::engine::strided::{RawView, fill_selection};
use crate::engine::{ChunkRequest, shared_index_cache};
use crate::error::{Error, Result};
use crate::runtime::{run_in_pool, try_for_each, try_map};
use crate::sparse::array::{Duplicates, IndexVec, Indices, ReadFormat, SparseInput};

use super::open::{Component, Location, OpenOptions, open_component};
use super::spec::{Compiled, DimMap, Document, Layer, Storage, slice_window};

/// A virtual array: a document, compiled, with its components opened on demand.
pub struct VirtualArray {
    doc: Document,
    compiled: Compiled,
    loc: Location,
    options: OpenOptions,
    chain: Vec<String>,
    fill: Vec<u8>,
    components: Vec<Mutex<Option<Arc<Component>>>>,
    /// For CSR/CSC views: `(lo, hi, layer)` along the major axis, sorted.
    major_index: Vec<(u64, u64, usize)>,
}

/// Entries of a sparse read: coordinates per output dimension, and values (native bytes).
#[derive(Debug, Default)]
pub struct Entries {
    /// One coordinate vector per output dimension.
    pub coords: Vec<Vec<u64>>,
    /// Values, native byte order.
    pub values: Vec<u8>,
}

/// Positions `k` of a request selection that fall into a layer along one dimension.
enum Pos {
    Range(u64, u64),
    List(Vec<u64>),
}

impl Pos {
    fn len(&self) -> u64 {
        match self {
            Self::Range(a, b) => b - a,
            Self::List(v) => v.len() as u64,
        }
    }

    fn to_vec(&self) -> Vec<u64> {
        match self {
            Self::Range(a, b) => (*a..*b).collect(),
            Self::List(v) => v.clone(),
        }
    }
}

/// A request selection along one dimension, with its values sorted for lookups.
struct DimReq<'a> {
    sel: &'a DimSel,
    out: Option<&'a DimSel>,
    /// For lists: `(value, k)` sorted by value.
    sorted: Option<Vec<(u64, u64)>>,
}

impl DimReq<'_> {
    #[allow(clippy::cast_possible_wrap)]
    fn positions(&self, lo: u64, hi: u64) -> Pos {
        match (self.sel, &self.sorted) {
            (DimSel::Range { start, step, len }, _) => {
                let (a, b) = slice_window(*start, *step as i64, *len, lo, hi);
                Pos::Range(a, b)
            }
            (_, Some(sorted)) => {
                let a = sorted.partition_point(|e| e.0 < lo);
                let b = sorted.partition_point(|e| e.0 < hi);
                Pos::List(sorted[a..b].iter().map(|e| e.1).collect())
            }
            (DimSel::List(_), None) => unreachable!("lists are sorted when the request is built"),
        }
    }
}

/// One component's share of a request.
struct Part {
    leaf: usize,
    sels: Vec<DimSel>,
    outs: Vec<Option<DimSel>>,
    /// Request output dimension of each component dimension that has an output.
    out_dims: Vec<usize>,
    /// Output dimensions not backed by a component dimension, at one position each.
    consts: Vec<(usize, u64)>,
}

/// A layer's share of a request that is backed by the fill value.
struct FillPart {
    outs: Vec<Option<DimSel>>,
}

/// Selection of the component indices `offset + stride * sel[k]` for positions `pos`, and the
/// matching output selection. Reversed maps read ascending and place in reverse.
#[allow(clippy::cast_possible_wrap, clippy::cast_sign_loss)]
fn map_dim(sel: &DimSel, out: Option<&DimSel>, pos: &Pos, offset: i64, stride: i64) -> (DimSel, Option<DimSel>) {
    let at = |v: u64| (offset + stride * v as i64) as u64;
    if let (DimSel::Range { start, step, .. }, Pos::Range(a, b)) = (sel, pos) {
        let (a, b) = (*a, *b);
        let leaf_step = stride * *step as i64;
        if leaf_step > 0 || b - a == 1 {
            let first = at(start + step * a);
            return (DimSel::Range { start: first, step: leaf_step.unsigned_abs().max(1), len: b - a }, out.map(|o| o.sub(a, b)));
        }
        let last = at(start + step * (b - 1));
        let rev: Vec<u64> = (a..b).rev().collect();
        return (DimSel::Range { start: last, step: leaf_step.unsigned_abs(), len: b - a }, out.map(|o| o.pick(&rev)));
    }
    let ks = pos.to_vec();
    (DimSel::List(ks.iter().map(|&k| at(sel.get(k))).collect()), out.map(|o| o.pick(&ks)))
}

fn view_fill(data_type: &str, fill: &serde_json::Value) -> Result<(Vec<u8>, DataType)> {
    let fill = if fill.is_null() { serde_json::json!(0) } else { fill.clone() };
    let meta = serde_json::json!({
        "zarr_format": 3, "node_type": "array", "shape": [1], "data_type": data_type,
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [1]}},
        "chunk_key_encoding": {"name": "default"}, "fill_value": fill,
        "codecs": [{"name": "bytes", "configuration": {"endian": "little"}}]
    });
    let bad = |e: String| Error::InvalidMetadata(format!("virtual array: {e}"));
    let ArrayMetadata::V3(v3) =
        serde_json::from_value::<ArrayMetadata>(meta).map_err(|e| bad(format!("data type {data_type:?} / fill value {fill}: {e}")))?
    else {
        return Err(Error::Internal("v3 metadata parsed as v2".into()));
    };
    let dt = DataType::from_metadata(&v3.data_type).map_err(|e| bad(format!("data type {data_type:?}: {e}")))?;
    if dt.fixed_size().is_none() {
        return Err(Error::Unsupported(format!("virtual arrays of the variable-size data type {data_type}")));
    }
    let fv = dt.fill_value_v3(&v3.fill_value).map_err(|e| bad(format!("fill value {fill} for {data_type}: {e}")))?;
    Ok((fv.as_ne_bytes().to_vec(), dt))
}

fn csr_axes(storage: Storage) -> (usize, usize) {
    if storage == Storage::Csc { (1, 0) } else { (0, 1) }
}

impl VirtualArray {
    /// Open a view from its document text at `loc`. Parses and compiles the document; opens no
    /// component and reads nothing from the store.
    ///
    /// `chain` holds the identities of the views being opened around this one (cycle checks).
    ///
    /// # Errors
    /// Returns [`Error::InvalidMetadata`] for malformed or inconsistent documents.
    pub fn open(text: &str, loc: Location, options: OpenOptions, chain: Vec<String>) -> Result<Self> {
        let doc = Document::from_json(text)?;
        let compiled = doc.compile()?;
        let (fill, _) = view_fill(&doc.data_type, &doc.fill_value)?;
        let components = (0..compiled.leaves.len()).map(|_| Mutex::new(None)).collect();
        let mut major_index = Vec::new();
        if matches!(doc.storage, Storage::Csr | Storage::Csc) {
            let (major, _) = csr_axes(doc.storage);
            major_index = compiled.layers.iter().enumerate().map(|(i, l)| (l.lo[major], l.hi[major], i)).collect();
            major_index.sort_unstable();
            if fill.iter().any(|&b| b != 0) {
                return Err(Error::InvalidMetadata("virtual array: a CSR/CSC view's fill value must be zero".into()));
            }
        }
        Ok(Self { doc, compiled, loc, options, chain, fill, components, major_index })
    }

    /// The document.
    #[must_use]
    pub fn document(&self) -> &Document {
        &self.doc
    }

    /// The view's shape.
    #[must_use]
    pub fn shape(&self) -> &[u64] {
        &self.compiled.shape
    }

    /// The data type name.
    #[must_use]
    pub fn data_type(&self) -> &str {
        &self.doc.data_type
    }

    /// How the components store values.
    #[must_use]
    pub fn storage(&self) -> Storage {
        self.doc.storage
    }

    /// The fill value (native element bytes).
    #[must_use]
    pub fn fill(&self) -> &[u8] {
        &self.fill
    }

    /// Number of components.
    #[must_use]
    pub fn num_components(&self) -> usize {
        self.components.len()
    }

    /// Number of components opened so far.
    #[must_use]
    pub fn num_opened(&self) -> usize {
        self.components.iter().filter(|c| c.lock().is_ok_and(|g| g.is_some())).count()
    }

    /// The compiled layers.
    #[must_use]
    pub fn layers(&self) -> &[Layer] {
        &self.compiled.layers
    }

    /// Component `i`, opened (and checked against the document) on first use.
    ///
    /// # Errors
    /// Any error of opening it; nothing is cached then, so a later call tries again.
    pub fn component(&self, i: usize) -> Result<Arc<Component>> {
        let mut slot = self.components[i].lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(c) = &*slot {
            return Ok(c.clone());
        }
        let leaf = &self.compiled.leaves[i];
        let c = open_component(leaf, &self.loc, self.doc.storage, &self.options, &self.chain)?;
        let sparse_fill = match &c {
            Component::Sparse { array, .. } => Some(array.fill().to_vec()),
            Component::View(v) if v.storage() == Storage::Sparse => Some(v.fill().to_vec()),
            _ => None,
        };
        if let Some(f) = sparse_fill
            && f != self.fill
        {
            let name = leaf.path.as_deref().or(leaf.url.as_deref()).unwrap_or_default();
            return Err(Error::InvalidMetadata(format!(
                "virtual array component {name:?} has a different fill value than the view (sparse components must share it)"
            )));
        }
        let c = Arc::new(c);
        *slot = Some(c.clone());
        Ok(c)
    }

    fn open_all(&self, leaves: &[usize]) -> Result<Vec<Option<Arc<Component>>>> {
        let mut uniq = leaves.to_vec();
        uniq.sort_unstable();
        uniq.dedup();
        let opened = run_in_pool(self.options.concurrency.threads, || try_map(&uniq, |&i| self.component(i)))?;
        let mut all: Vec<Option<Arc<Component>>> = vec![None; self.components.len()];
        for (i, c) in uniq.into_iter().zip(opened) {
            all[i] = Some(c);
        }
        Ok(all)
    }

    fn check_request(&self, sels: &[DimSel], outs: &[Option<DimSel>]) -> Result<()> {
        let shape = self.shape();
        if sels.len() != shape.len() || outs.len() != shape.len() {
            return Err(Error::Selection(format!("selection has {} dimensions, the view {}", sels.len(), shape.len())));
        }
        for (d, (s, &n)) in sels.iter().zip(shape).enumerate() {
            s.check_bounds(n)?;
            if outs[d].is_none() && s.len() != 1 {
                return Err(Error::Selection("a dropped dimension must select exactly one index".into()));
            }
        }
        Ok(())
    }

    /// Split a request over the layers.
    fn split(&self, sels: &[DimSel], outs: &[Option<DimSel>]) -> (Vec<Part>, Vec<FillPart>) {
        let reqs: Vec<DimReq<'_>> = sels
            .iter()
            .zip(outs)
            .map(|(s, o)| {
                let sorted = match s {
                    DimSel::List(v) => {
                        let mut p: Vec<(u64, u64)> = v.iter().enumerate().map(|(k, &x)| (x, k as u64)).collect();
                        p.sort_unstable();
                        Some(p)
                    }
                    DimSel::Range { .. } => None,
                };
                DimReq { sel: s, out: o.as_ref(), sorted }
            })
            .collect();
        let mut od = vec![usize::MAX; outs.len()];
        let mut n = 0;
        for (d, o) in outs.iter().enumerate() {
            if o.is_some() {
                od[d] = n;
                n += 1;
            }
        }
        let (mut parts, mut fills) = (Vec::new(), Vec::new());
        'layers: for layer in &self.compiled.layers {
            let mut pos = Vec::with_capacity(reqs.len());
            for (d, r) in reqs.iter().enumerate() {
                let p = r.positions(layer.lo[d], layer.hi[d]);
                if p.len() == 0 {
                    continue 'layers;
                }
                pos.push(p);
            }
            let Some(leaf) = layer.leaf else {
                let outs = reqs.iter().zip(&pos).map(|(r, p)| r.out.map(|o| o.pick(&p.to_vec()))).collect();
                fills.push(FillPart { outs });
                continue;
            };
            let mut mapped = vec![false; reqs.len()];
            let (mut lsels, mut louts, mut out_dims) = (Vec::new(), Vec::new(), Vec::new());
            for m in &layer.maps {
                match *m {
                    DimMap::Fixed(c) => {
                        lsels.push(DimSel::range(c, 1));
                        louts.push(None);
                    }
                    DimMap::Affine { view_dim, offset, stride } => {
                        mapped[view_dim] = true;
                        let r = &reqs[view_dim];
                        let (s, o) = map_dim(r.sel, r.out, &pos[view_dim], offset, stride);
                        if o.is_some() {
                            out_dims.push(od[view_dim]);
                        }
                        lsels.push(s);
                        louts.push(o);
                    }
                }
            }
            // Output positions of view dimensions no component dimension backs (stack axes,
            // new axes): one part per combination (usually exactly one).
            let mut combos: Vec<Vec<(usize, u64)>> = vec![vec![]];
            for (d, r) in reqs.iter().enumerate() {
                if mapped[d] {
                    continue;
                }
                if let Some(o) = r.out {
                    let ps = pos[d].to_vec();
                    let dim = od[d];
                    combos = combos.into_iter().flat_map(|c| ps.iter().map(move |&k| [c.clone(), vec![(dim, o.get(k))]].concat())).collect();
                }
            }
            for consts in combos {
                parts.push(Part { leaf, sels: lsels.clone(), outs: louts.clone(), out_dims: out_dims.clone(), consts });
            }
        }
        (parts, fills)
    }

    fn need(&self, storage: &[Storage], what: &str) -> Result<()> {
        if storage.contains(&self.doc.storage) {
            Ok(())
        } else {
            Err(Error::InvalidArgument(format!("{what} is not available for a {} virtual array", format!("{:?}", self.doc.storage).to_lowercase())))
        }
    }

    // --------------------------------------------------------------------------------------------
    // Dense reads and writes
    // --------------------------------------------------------------------------------------------

    /// Read an orthogonal selection of a dense view into `out` (same conventions as
    /// [`Selection::Orthogonal`]: `outs[d]` places dimension `d` along the next output
    /// dimension, `None` drops it).
    ///
    /// # Errors
    /// Selections out of bounds, component errors (opening, checking, decoding).
    pub fn read_into(&self, sels: &[DimSel], outs: &[Option<DimSel>], out: &RawView) -> Result<()> {
        self.need(&[Storage::Dense], "a dense read")?;
        self.check_request(sels, outs)?;
        let (parts, fills) = self.split(sels, outs);
        let comps = self.open_all(&parts.iter().map(|p| p.leaf).collect::<Vec<_>>())?;
        for f in &fills {
            fill_selection(out, &fill_sel(&f.outs), &self.fill, false)?;
        }
        run_in_pool(self.options.concurrency.threads, || {
            try_for_each(&parts, |p| {
                let sub = sub_view(out, p);
                read_component(get(&comps, p.leaf)?, &p.sels, &p.outs, &sub)
            })
        })
    }

    /// Write an orthogonal selection of a dense view from `src` (an array laid out like a read's
    /// output, or one scalar). Writes into `fill` regions are refused before anything is written;
    /// a write spanning several components is not atomic across them.
    ///
    /// # Errors
    /// As [`read_into`](Self::read_into), plus writes into fill regions and read-only stores.
    pub fn write_from(&self, sels: &[DimSel], outs: &[Option<DimSel>], src: &ValueSource<'_>) -> Result<()> {
        self.need(&[Storage::Dense], "a dense write")?;
        self.check_request(sels, outs)?;
        let (parts, fills) = self.split(sels, outs);
        if !fills.is_empty() {
            return Err(Error::InvalidArgument("the write touches a fill region of the virtual array (fill blocks have no storage)".into()));
        }
        let comps = self.open_all(&parts.iter().map(|p| p.leaf).collect::<Vec<_>>())?;
        check_writable(&parts, &comps)?;
        run_in_pool(self.options.concurrency.threads, || {
            try_for_each(&parts, |p| match src {
                ValueSource::Array { view, swap } => {
                    let sub = sub_view(view, p);
                    write_component(get(&comps, p.leaf)?, &p.sels, &p.outs, &ValueSource::Array { view: &sub, swap: *swap })
                }
                ValueSource::Scalar(v) => write_component(get(&comps, p.leaf)?, &p.sels, &p.outs, &ValueSource::Scalar(v)),
            })
        })
    }

    // --------------------------------------------------------------------------------------------
    // Sparse reads and writes
    // --------------------------------------------------------------------------------------------

    /// The stored entries of an orthogonal selection of a sparse view, with coordinates in the
    /// output (one vector per output dimension), unordered.
    ///
    /// # Errors
    /// As [`read_into`](Self::read_into).
    pub fn read_entries(&self, sels: &[DimSel], outs: &[Option<DimSel>]) -> Result<Entries> {
        self.need(&[Storage::Sparse], "a sparse read")?;
        self.check_request(sels, outs)?;
        let n_out = outs.iter().filter(|o| o.is_some()).count();
        let (parts, _) = self.split(sels, outs);
        let comps = self.open_all(&parts.iter().map(|p| p.leaf).collect::<Vec<_>>())?;
        let pieces =
            run_in_pool(self.options.concurrency.threads, || try_map(&parts, |p| entries_component(get(&comps, p.leaf)?, &p.sels, &p.outs)))?;
        let mut all = Entries { coords: vec![Vec::new(); n_out], values: Vec::new() };
        for (p, piece) in parts.iter().zip(pieces) {
            let nnz = piece.coords.first().map_or_else(|| piece.values.len() / self.fill.len().max(1), Vec::len);
            for (j, c) in piece.coords.into_iter().enumerate() {
                all.coords[p.out_dims[j]].extend(c);
            }
            for &(d, v) in &p.consts {
                all.coords[d].extend(std::iter::repeat_n(v, nnz));
            }
            all.values.extend_from_slice(&piece.values);
        }
        Ok(all)
    }

    /// Replace the box `start..start + shape` of a sparse view with the entries `coords`
    /// (relative to `start`, one vector per dimension) and `values`. The box is split over the
    /// components (each write replaces its part of the box); fill regions and components reached
    /// through steps other than +1 are refused before anything is written.
    ///
    /// # Errors
    /// Boxes out of bounds, entries outside the box, refused regions, component errors.
    pub fn write_entries(&self, start: &[u64], shape: &[u64], coords: &[Vec<u64>], values: &[u8], duplicates: Duplicates) -> Result<()> {
        self.need(&[Storage::Sparse], "a sparse write")?;
        let vshape = self.shape();
        let nd = vshape.len();
        if start.len() != nd || shape.len() != nd || coords.len() != nd {
            return Err(Error::Selection(format!("the written box has {} dimensions, the view {nd}", start.len())));
        }
        for d in 0..nd {
            if start[d] + shape[d] > vshape[d] {
                return Err(Error::Selection(format!(
                    "box {}..{} out of bounds for length {} (dimension {d})",
                    start[d],
                    start[d] + shape[d],
                    vshape[d]
                )));
            }
        }
        let es = self.fill.len();
        let nnz = values.len() / es.max(1);
        if coords.iter().any(|c| c.len() != nnz) {
            return Err(Error::InvalidArgument("coordinate arrays and values differ in length".into()));
        }
        for (d, c) in coords.iter().enumerate() {
            if let Some(&m) = c.iter().max()
                && m >= shape[d]
            {
                return Err(Error::InvalidArgument(format!("coordinate {m} is outside the written box (length {} along dimension {d})", shape[d])));
            }
        }
        let mut jobs = Vec::new();
        for layer in &self.compiled.layers {
            let lo: Vec<u64> = (0..nd).map(|d| start[d].max(layer.lo[d])).collect();
            let hi: Vec<u64> = (0..nd).map(|d| (start[d] + shape[d]).min(layer.hi[d])).collect();
            if (0..nd).any(|d| lo[d] >= hi[d]) {
                continue;
            }
            let Some(leaf) = layer.leaf else {
                return Err(Error::InvalidArgument("the write touches a fill region of the virtual array (fill blocks have no storage)".into()));
            };
            let (mut lstart, mut lshape) = (Vec::new(), Vec::new());
            for m in &layer.maps {
                match *m {
                    DimMap::Fixed(c) => {
                        lstart.push(c);
                        lshape.push(1);
                    }
                    DimMap::Affine { view_dim, offset, stride: 1 } => {
                        lstart.push(m.apply(lo[view_dim]));
                        let _ = offset;
                        lshape.push(hi[view_dim] - lo[view_dim]);
                    }
                    DimMap::Affine { .. } => {
                        return Err(Error::Unsupported(
                            "sparse writes through a view that steps or reverses a component (write the component directly)".into(),
                        ));
                    }
                }
            }
            let keep: Vec<usize> = (0..nnz).filter(|&k| (0..nd).all(|d| (lo[d]..hi[d]).contains(&(start[d] + coords[d][k])))).collect();
            let lcoords: Vec<Vec<i64>> = layer
                .maps
                .iter()
                .map(|m| match *m {
                    DimMap::Fixed(_) => vec![0i64; keep.len()],
                    #[allow(clippy::cast_possible_wrap)]
                    DimMap::Affine { view_dim, .. } => keep.iter().map(|&k| (start[view_dim] + coords[view_dim][k] - lo[view_dim]) as i64).collect(),
                })
                .collect();
            let lvalues: Vec<u8> = keep.iter().flat_map(|&k| values[k * es..(k + 1) * es].iter().copied()).collect();
            jobs.push((leaf, lstart, lshape, lcoords, lvalues));
        }
        let comps = self.open_all(&jobs.iter().map(|j| j.0).collect::<Vec<_>>())?;
        for (leaf, ..) in &jobs {
            if let Component::Sparse { store, .. } = get(&comps, *leaf)?
                && store.read_only()
            {
                return Err(Error::ReadOnly(String::new()));
            }
        }
        for (leaf, lstart, lshape, lcoords, lvalues) in jobs {
            match get(&comps, leaf)? {
                Component::Sparse { array, store } => {
                    let idx: Vec<Indices<'_>> = lcoords.iter().map(|c| Indices::I64(c)).collect();
                    array.write(&**store, &lstart, &lshape, &SparseInput::Coo { coords: &idx, values: &lvalues }, duplicates)?;
                }
                Component::View(v) => {
                    #[allow(clippy::cast_sign_loss)]
                    let uc: Vec<Vec<u64>> = lcoords.iter().map(|c| c.iter().map(|&x| x as u64).collect()).collect();
                    v.write_entries(&lstart, &lshape, &uc, &lvalues, duplicates)?;
                }
                _ => return Err(Error::Internal("sparse view with a non-sparse component".into())),
            }
        }
        Ok(())
    }

    // --------------------------------------------------------------------------------------------
    // CSR / CSC gathers
    // --------------------------------------------------------------------------------------------

    /// Number of stored values (opens every component).
    ///
    /// # Errors
    /// Component errors.
    pub fn nnz(&self) -> Result<u64> {
        self.need(&[Storage::Csr, Storage::Csc], "nnz")?;
        let (major, _) = csr_axes(self.doc.storage);
        let leaves: Vec<usize> = (0..self.components.len()).collect();
        let comps = self.open_all(&leaves)?;
        let mut total = 0;
        for layer in &self.compiled.layers {
            let Some(leaf) = layer.leaf else { continue };
            for r in layer.lo[major]..layer.hi[major] {
                total += row_len(get(&comps, leaf)?, layer.maps[major].apply(r));
            }
        }
        Ok(total)
    }

    /// Gather major-axis slices (rows of a CSR view, columns of a CSC view) across components
    /// into one compressed matrix, each component's share read concurrently straight into place.
    ///
    /// # Errors
    /// Rows out of range, component errors, stored indices out of range.
    #[allow(clippy::too_many_lines, clippy::cast_possible_truncation)]
    pub fn gather(&self, rows: Major<'_>, huge_pages: bool) -> Result<Gathered> {
        self.need(&[Storage::Csr, Storage::Csc], "a row gather")?;
        let (major, minor) = csr_axes(self.doc.storage);
        let n_major = self.shape()[major];
        let n_minor = self.shape()[minor];
        let owned: Vec<u64>;
        let rows: &[u64] = match rows {
            Major::Range { start, stop } => {
                if start > stop || stop > n_major {
                    return Err(Error::Selection(format!("rows {start}..{stop} out of range for {n_major} rows")));
                }
                owned = (start..stop).collect();
                &owned
            }
            Major::List(r) => r,
        };
        // Locate each row: (layer, component row).
        let mut where_: Vec<(usize, u64)> = Vec::with_capacity(rows.len());
        for &r in rows {
            if r >= n_major {
                return Err(Error::Selection(format!("row {r} out of range for {n_major} rows")));
            }
            let i = self.major_index.partition_point(|e| e.0 <= r);
            let (lo, hi, layer) = self.major_index[i.checked_sub(1).ok_or_else(|| Error::Internal("row before the first layer".into()))?];
            if r < lo || r >= hi {
                return Err(Error::Internal(format!("row {r} has no layer")));
            }
            let l = &self.compiled.layers[layer];
            where_.push((layer, if l.leaf.is_some() { l.maps[major].apply(r) } else { 0 }));
        }
        let leaves: Vec<usize> = where_.iter().filter_map(|&(l, _)| self.compiled.layers[l].leaf).collect();
        let comps = self.open_all(&leaves)?;
        // Output offsets and, per component, runs (source start, output start, length).
        let mut offsets = Vec::with_capacity(rows.len() + 1);
        offsets.push(0u64);
        let mut runs: Vec<Vec<(u64, u64, u64)>> = vec![Vec::new(); self.components.len()];
        let mut acc = 0u64;
        for &(layer, crow) in &where_ {
            if let Some(leaf) = self.compiled.layers[layer].leaf
                && let Component::Compressed { source, .. } = get(&comps, leaf)?
            {
                let ip = source.indptr();
                let (s, e) = (ip[crow as usize], ip[crow as usize + 1]);
                if e > s {
                    let list = &mut runs[leaf];
                    match list.last_mut() {
                        Some(last) if last.0 + last.2 == s && last.1 + last.2 == acc => last.2 += e - s,
                        _ => list.push((s, acc, e - s)),
                    }
                }
                acc += e - s;
            }
            offsets.push(acc);
        }
        let total = acc;
        let wide = total > i32::MAX as u64 || n_minor > i32::MAX as u64;
        let n = usize::try_from(total).map_err(|_| Error::InvalidArgument("result too large".into()))?;
        let es = self.fill.len();
        let out_kind = if wide { ElemType::I64 } else { ElemType::I32 };
        let mut data = vec![0u8; n * es];
        let mut ind = vec![0u8; n * out_kind.size()];
        if huge_pages {
            crate::runtime::hint_huge_pages(data.as_ptr(), data.len());
            crate::runtime::hint_huge_pages(ind.as_ptr(), ind.len());
        }
        let data_view = RawView::c_order(&mut data, &[total], es);
        let ind_view = RawView::c_order(&mut ind, &[total], out_kind.size());
        let jobs: Vec<(usize, &Vec<Run>)> = runs.iter().enumerate().filter(|(_, r)| !r.is_empty()).collect();
        run_in_pool(self.options.concurrency.threads, || {
            try_for_each(&jobs, |&(leaf, rs)| {
                let Component::Compressed { source, store } = get(&comps, leaf)? else {
                    return Err(Error::Internal("CSR view with a non-CSR component".into()));
                };
                if source.data().elem_size() != es {
                    return Err(Error::InvalidMetadata("a component's data has another element size than the view".into()));
                }
                let (d, i) = rayon::join(
                    || source.data().read_runs_at(&**store, rs, &data_view),
                    || -> Result<()> {
                        let kind = source.index_kind();
                        if kind == out_kind {
                            return source.indices().read_runs_at(&**store, rs, &ind_view);
                        }
                        let m: u64 = rs.iter().map(|r| r.2).sum();
                        let mut tmp = vec![0u8; m as usize * kind.size()];
                        let mut o = 0;
                        let packed: Vec<(u64, u64, u64)> = rs
                            .iter()
                            .map(|&(s, _, len)| {
                                o += len;
                                (s, o - len, len)
                            })
                            .collect();
                        source.indices().read_runs_at(&**store, &packed, &RawView::c_order(&mut tmp, &[m], kind.size()))?;
                        let mut conv = vec![0u8; m as usize * out_kind.size()];
                        convert_checked("stored indices", kind, &tmp, out_kind, &mut conv, n_minor)
                            .map_err(|e| e.with_key(source.indices().path()))?;
                        let sz = out_kind.size();
                        for (&(_, dst, len), &(_, src, _)) in rs.iter().zip(&packed) {
                            // SAFETY: `dst..dst+len` lies inside the index output (checked when the
                            // runs were built) and belongs to this component alone.
                            unsafe {
                                std::ptr::copy_nonoverlapping(
                                    conv.as_ptr().add(src as usize * sz),
                                    ind_view.ptr().add(dst as usize * sz),
                                    len as usize * sz,
                                );
                            }
                        }
                        Ok(())
                    },
                );
                d.and(i)
            })
        })?;
        check_range("stored indices", out_kind, &ind, n_minor)?;
        #[allow(clippy::cast_possible_wrap)]
        let (indices, indptr) = if wide {
            (
                IndexVec::I64(ind.chunks_exact(8).map(|c| i64::from_ne_bytes(c.try_into().unwrap_or_default())).collect()),
                IndexVec::I64(offsets.iter().map(|&v| v as i64).collect()),
            )
        } else {
            (
                IndexVec::I32(ind.chunks_exact(4).map(|c| i32::from_ne_bytes(c.try_into().unwrap_or_default())).collect()),
                IndexVec::I32(offsets.iter().map(|&v| v as i32).collect()),
            )
        };
        Ok(Gathered { data, indices, indptr, nnz: n })
    }
}

fn get(comps: &[Option<Arc<Component>>], i: usize) -> Result<&Component> {
    comps.get(i).and_then(|c| c.as_deref()).ok_or_else(|| Error::Internal(format!("component {i} was not opened")))
}

fn row_len(c: &Component, row: u64) -> u64 {
    match c {
        #[allow(clippy::cast_possible_truncation)]
        Component::Compressed { source, .. } => source.indptr()[row as usize + 1] - source.indptr()[row as usize],
        _ => 0,
    }
}

fn fill_sel(outs: &[Option<DimSel>]) -> Selection {
    let chunk = outs.iter().map(|o| DimSel::range(0, o.as_ref().map_or(1, DimSel::len))).collect();
    Selection::Orthogonal { chunk, out: outs.to_vec() }
}

/// The part of `out` a component part fills: output dimensions backed by component dimensions,
/// in component order (a transpose is a permutation of strides), with fixed positions applied.
fn sub_view<'a>(out: &RawView<'a>, p: &Part) -> RawView<'a> {
    let mut ptr = out.ptr();
    for &(d, v) in &p.consts {
        #[allow(clippy::cast_possible_wrap)]
        let off = out.strides()[d] * v as isize;
        ptr = ptr.wrapping_offset(off);
    }
    let shape = p.out_dims.iter().map(|&d| out.shape()[d]).collect();
    let strides = p.out_dims.iter().map(|&d| out.strides()[d]).collect();
    // SAFETY: a sub-view of `out` (same memory and lifetime, a subset of its dimensions at
    // positions inside it), writable exactly when `out` is.
    unsafe { RawView::new(ptr, shape, strides, out.itemsize(), out.writable()) }
}

fn requests(keys: &crate::metadata::ChunkKeys, chunk: &[u64], shape: &[u64], sels: &[DimSel], outs: &[Option<DimSel>]) -> Result<Vec<ChunkRequest>> {
    for (s, &n) in sels.iter().zip(shape) {
        s.check_bounds(n)?;
    }
    let whole = Selection::Orthogonal { chunk: sels.to_vec(), out: outs.to_vec() };
    Ok(whole
        .partition(chunk)
        .into_iter()
        .map(|(coords, selection)| {
            let extent: Vec<u64> = coords.iter().zip(chunk).zip(shape).map(|((&c, &k), &n)| k.min(n - c * k)).collect();
            let complete = selection.covers(&extent);
            ChunkRequest { key: keys.key(&coords), selection, complete }
        })
        .collect())
}

fn read_component(c: &Component, sels: &[DimSel], outs: &[Option<DimSel>], out: &RawView) -> Result<()> {
    match c {
        Component::Dense { engine, keys, chunk, shape, store } => {
            let reqs = requests(keys, chunk, shape, sels, outs)?;
            engine.read(&**store, &reqs, out, 0).map(|_| ())
        }
        Component::View(v) => v.read_into(sels, outs, out),
        _ => Err(Error::Internal("dense view with a non-dense component".into())),
    }
}

fn write_component(c: &Component, sels: &[DimSel], outs: &[Option<DimSel>], src: &ValueSource<'_>) -> Result<()> {
    match c {
        Component::Dense { engine, keys, chunk, shape, store } => {
            let reqs = requests(keys, chunk, shape, sels, outs)?;
            engine.write(&**store, &reqs, src, false)
        }
        Component::View(v) => v.write_from(sels, outs, src),
        _ => Err(Error::Internal("dense view with a non-dense component".into())),
    }
}

fn check_writable(parts: &[Part], comps: &[Option<Arc<Component>>]) -> Result<()> {
    for p in parts {
        if let Component::Dense { store, .. } = get(comps, p.leaf)?
            && store.read_only()
        {
            return Err(Error::ReadOnly(String::new()));
        }
    }
    Ok(())
}

fn entries_component(c: &Component, sels: &[DimSel], outs: &[Option<DimSel>]) -> Result<Entries> {
    match c {
        Component::Sparse { array, store } => {
            let r = array.read(&**store, sels, ReadFormat::Coo, Some(shared_index_cache()))?;
            let nnz = r.nnz;
            let mut coords = Vec::new();
            for (i, o) in outs.iter().enumerate() {
                let Some(o) = o else { continue };
                #[allow(clippy::cast_sign_loss)]
                let c: Vec<u64> = (0..nnz).map(|k| o.get(r.coords.get(i * nnz + k) as u64)).collect();
                coords.push(c);
            }
            Ok(Entries { coords, values: r.values })
        }
        Component::View(v) => v.read_entries(sels, outs),
        _ => Err(Error::Internal("sparse view with a non-sparse component".into())),
    }
}

/// Put entries in canonical C order over an output of `shape` (`es`-byte values).
///
/// # Errors
/// Returns [`Error::Unsupported`] if the output has more than 2^64 elements.
#[allow(clippy::cast_possible_truncation)]
pub fn sort_entries(e: Entries, shape: &[u64], es: usize) -> Result<Entries> {
    let nnz = e.values.len() / es.max(1);
    let mut strides = vec![1u64; shape.len()];
    let mut total: u64 = 1;
    for d in (0..shape.len()).rev() {
        strides[d] = total;
        total = total.checked_mul(shape[d].max(1)).ok_or_else(|| Error::Unsupported("sparse results with more than 2^64 elements".into()))?;
    }
    let keys: Vec<u64> = (0..nnz).map(|k| e.coords.iter().zip(&strides).map(|(c, s)| c[k] * s).sum()).collect();
    if keys.windows(2).all(|w| w[0] < w[1]) {
        return Ok(e);
    }
    let mut order: Vec<usize> = (0..nnz).collect();
    order.sort_unstable_by_key(|&i| keys[i]);
    let coords = e.coords.iter().map(|c| order.iter().map(|&i| c[i]).collect()).collect();
    let mut values = Vec::with_capacity(e.values.len());
    for &i in &order {
        values.extend_from_slice(&e.values[i * es..(i + 1) * es]);
    }
    Ok(Entries { coords, values })
}
