//! Copying selected elements between N-dimensional buffers (gather and scatter).
//!
//! Decoded chunks are C-ordered byte buffers; the arrays Python hands us may have any strides
//! (F order, views, broadcasts with zero strides). A [`RawView`] describes such memory, and
//! [`copy_selection`] moves the elements a [`Selection`] names between a chunk and an array,
//! in either direction, optionally byte-swapping (for non-native byte orders). Contiguous runs are
//! copied with `memcpy`; adjacent dimensions that are contiguous on both sides are merged first, so
//! a whole chunk landing in a C-ordered output costs one `memcpy` per output row segment.

use std::marker::PhantomData;

use crate::engine::selection::{DimSel, Selection};
use crate::error::{Error, Result};

/// N-dimensional memory borrowed for `'a`: base pointer, shape, strides in bytes, element size,
/// and whether it may be written.
///
/// The lifetime ties a view to the buffer it describes, so a view cannot outlive it; a view made
/// from a shared slice ([`c_order_const`](Self::c_order_const)) is read-only, and every function
/// that writes through a view ([`copy_selection`] towards it, [`fill_selection`], [`fill_all`])
/// refuses a read-only one with an error instead of writing.
///
/// A writable view may be shared between threads (the engine scatters chunks into one output
/// from several workers); writers through a shared view must write disjoint elements. The
/// engine's requests name disjoint output regions (each output element belongs to one chunk).
#[derive(Debug, Clone)]
pub struct RawView<'a> {
    ptr: *mut u8,
    shape: Vec<u64>,
    strides: Vec<isize>,
    itemsize: usize,
    writable: bool,
    _borrow: PhantomData<&'a mut [u8]>,
}

// SAFETY: a RawView is a borrow of memory for 'a (like `&'a mut [u8]`, which is Send); the
// memory is not freed while the view lives.
unsafe impl Send for RawView<'_> {}
// SAFETY: shared use only reads through `&RawView`, except by the writing functions of this
// module, whose callers write disjoint elements from different threads (see the type's docs).
unsafe impl Sync for RawView<'_> {}

impl<'a> RawView<'a> {
    /// Describe strided memory.
    ///
    /// # Safety
    /// Every element reachable with in-bounds indices (`0 <= i[d] < shape[d]`) must be valid
    /// memory of `itemsize` bytes for `'a`, and if `writable`, writable for `'a` and not read or
    /// written through any other reference while the view lives (except through other views
    /// that write disjoint elements).
    #[must_use]
    pub unsafe fn new(ptr: *mut u8, shape: Vec<u64>, strides: Vec<isize>, itemsize: usize, writable: bool) -> Self {
        debug_assert_eq!(shape.len(), strides.len());
        Self { ptr, shape, strides, itemsize, writable, _borrow: PhantomData }
    }

    /// A writable C-ordered view of `buf`.
    ///
    /// # Panics
    /// Panics if `buf` is smaller than `shape` requires.
    #[must_use]
    pub fn c_order(buf: &'a mut [u8], shape: &[u64], itemsize: usize) -> Self {
        let n: u64 = shape.iter().product();
        assert!(buf.len() as u64 >= n * itemsize as u64, "buffer too small for view");
        Self { ptr: buf.as_mut_ptr(), shape: shape.to_vec(), strides: c_strides(shape, itemsize), itemsize, writable: true, _borrow: PhantomData }
    }

    /// A read-only C-ordered view of `buf`.
    ///
    /// # Panics
    /// Panics if `buf` is smaller than `shape` requires.
    #[must_use]
    pub fn c_order_const(buf: &'a [u8], shape: &[u64], itemsize: usize) -> Self {
        let n: u64 = shape.iter().product();
        assert!(buf.len() as u64 >= n * itemsize as u64, "buffer too small for view");
        Self {
            ptr: buf.as_ptr().cast_mut(),
            shape: shape.to_vec(),
            strides: c_strides(shape, itemsize),
            itemsize,
            writable: false,
            _borrow: PhantomData,
        }
    }

    /// Shape of the view.
    #[must_use]
    pub fn shape(&self) -> &[u64] {
        &self.shape
    }

    /// Element size in bytes.
    #[must_use]
    pub fn itemsize(&self) -> usize {
        self.itemsize
    }

    /// Strides in bytes.
    #[must_use]
    pub fn strides(&self) -> &[isize] {
        &self.strides
    }

    /// Whether the view may be written through.
    #[must_use]
    pub fn writable(&self) -> bool {
        self.writable
    }

    /// Base pointer (for reading; writing through it needs [`writable`](Self::writable)).
    #[must_use]
    pub fn ptr(&self) -> *mut u8 {
        self.ptr
    }

    fn check_writable(&self) -> Result<()> {
        if self.writable { Ok(()) } else { Err(Error::InvalidArgument("the destination buffer is read-only".into())) }
    }
}

/// Byte strides of a C-ordered array.
#[must_use]
pub fn c_strides(shape: &[u64], itemsize: usize) -> Vec<isize> {
    let mut strides = vec![0isize; shape.len()];
    let mut acc = itemsize as isize;
    for d in (0..shape.len()).rev() {
        strides[d] = acc;
        #[allow(clippy::cast_possible_wrap, clippy::cast_possible_truncation)]
        {
            acc *= shape[d] as isize;
        }
    }
    strides
}

/// Byte offsets along one axis of the iteration.
#[derive(Debug, Clone)]
enum Offsets {
    Arith { start: isize, step: isize },
    List(Vec<isize>),
}

impl Offsets {
    #[inline]
    fn at(&self, k: usize) -> isize {
        match self {
            #[allow(clippy::cast_possible_wrap)]
            Self::Arith { start, step } => start + step * k as isize,
            Self::List(v) => v[k],
        }
    }

    #[allow(clippy::cast_possible_wrap, clippy::cast_possible_truncation)]
    fn of(sel: &DimSel, stride: isize) -> Self {
        match sel {
            DimSel::Range { start, step, .. } => Self::Arith { start: *start as isize * stride, step: *step as isize * stride },
            DimSel::List(v) => Self::List(v.iter().map(|&i| i as isize * stride).collect()),
        }
    }
}

#[derive(Debug, Clone)]
struct Axis {
    len: usize,
    src: Offsets,
    dst: Offsets,
}

/// Which way elements move in [`copy_selection`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From a chunk into the output array (a read).
    ChunkToOut,
    /// From the input array into a chunk (a write).
    OutToChunk,
}

/// Per-axis (chunk offsets, out offsets) for `sel`, checking bounds against both views.
fn axes_for(sel: &Selection, chunk: &RawView, out: &RawView) -> Result<Vec<(usize, Offsets, Offsets)>> {
    sel.check(&chunk.shape)?;
    #[allow(clippy::cast_possible_truncation)]
    match sel {
        Selection::Orthogonal { chunk: cs, out: os } => {
            let kept = os.iter().filter(|o| o.is_some()).count();
            if kept != out.shape.len() {
                return Err(Error::Selection(format!("selection keeps {kept} dimensions but the array has {}", out.shape.len())));
            }
            let mut od = 0;
            let mut axes = Vec::with_capacity(cs.len());
            for (d, (c, o)) in cs.iter().zip(os).enumerate() {
                let co = Offsets::of(c, chunk.strides[d]);
                let oo = match o {
                    Some(o) => {
                        o.check_bounds(out.shape[od])?;
                        let off = Offsets::of(o, out.strides[od]);
                        od += 1;
                        off
                    }
                    None => Offsets::Arith { start: 0, step: 0 },
                };
                axes.push((c.len() as usize, co, oo));
            }
            Ok(axes)
        }
        Selection::Points { coords, out: o } => {
            if out.shape.len() != 1 {
                return Err(Error::Selection("a point selection needs a one-dimensional array".into()));
            }
            o.check_bounds(out.shape[0])?;
            let n = o.len() as usize;
            let mut co = vec![0isize; n];
            for (d, c) in coords.iter().enumerate() {
                let s = chunk.strides[d];
                for (acc, &x) in co.iter_mut().zip(c) {
                    #[allow(clippy::cast_possible_wrap)]
                    {
                        *acc += x as isize * s;
                    }
                }
            }
            Ok(vec![(n, Offsets::List(co), Offsets::of(o, out.strides[0]))])
        }
        Selection::Runs(_) => Err(Error::Internal("run selections are copied run by run".into())),
    }
}

/// Copy the elements named by `sel` between `chunk` and `out`.
///
/// `swap` is the byte-swap unit (0 = none; e.g. 4 for a big-endian `int32` array on a
/// little-endian machine, 8 for `complex128`).
///
/// # Errors
/// Returns [`Error::Selection`] if the selection does not fit either view, or
/// [`Error::InvalidArgument`] if the element sizes differ.
pub fn copy_selection(chunk: &RawView, out: &RawView, sel: &Selection, dir: Direction, swap: usize) -> Result<()> {
    if chunk.itemsize != out.itemsize {
        return Err(Error::InvalidArgument(format!("element size mismatch: {} vs {}", chunk.itemsize, out.itemsize)));
    }
    match dir {
        Direction::ChunkToOut => out.check_writable()?,
        Direction::OutToChunk => chunk.check_writable()?,
    }
    if let Selection::Runs(runs) = sel {
        sel.check(&chunk.shape)?;
        check_runs_out(runs, out)?;
        for &(c, o, n) in runs {
            let (cs, os) = (run_axis(chunk, c), run_axis(out, o));
            let (src, dst, axis) = match dir {
                Direction::ChunkToOut => (chunk.ptr.cast_const(), out.ptr, Axis { len: n as usize, src: cs, dst: os }),
                Direction::OutToChunk => (out.ptr.cast_const(), chunk.ptr, Axis { len: n as usize, src: os, dst: cs }),
            };
            // SAFETY: both sides were bounds-checked above.
            unsafe { run(src, dst, vec![axis], chunk.itemsize, swap) };
        }
        return Ok(());
    }
    let axes = axes_for(sel, chunk, out)?;
    let (src, dst, axes): (*const u8, *mut u8, Vec<Axis>) = match dir {
        Direction::ChunkToOut => (chunk.ptr, out.ptr, axes.into_iter().map(|(len, c, o)| Axis { len, src: c, dst: o }).collect()),
        Direction::OutToChunk => (out.ptr, chunk.ptr, axes.into_iter().map(|(len, c, o)| Axis { len, src: o, dst: c }).collect()),
    };
    // SAFETY: all offsets were bounds-checked against both views above.
    unsafe { run(src, dst, axes, chunk.itemsize, swap) };
    Ok(())
}

/// Write the element `value` to every element of `view` that `sel` names (its chunk side if
/// `chunk_side`, its output side otherwise).
///
/// # Errors
/// Returns [`Error::Selection`] if the selection does not fit the view.
pub fn fill_selection(view: &RawView, sel: &Selection, value: &[u8], chunk_side: bool) -> Result<()> {
    if value.len() != view.itemsize {
        return Err(Error::InvalidArgument("fill value size differs from the element size".into()));
    }
    view.check_writable()?;
    if let Selection::Runs(runs) = sel {
        if chunk_side {
            sel.check(&view.shape)?;
        } else {
            check_runs_out(runs, view)?;
        }
        for &(c, o, n) in runs {
            let axis = Axis { len: n as usize, src: Offsets::Arith { start: 0, step: 0 }, dst: run_axis(view, if chunk_side { c } else { o }) };
            // SAFETY: bounds-checked above; the source offsets are all zero into `value`.
            unsafe { run(value.as_ptr(), view.ptr, vec![axis], view.itemsize, 0) };
        }
        return Ok(());
    }
    let axes: Vec<Axis> = if chunk_side {
        sel.check(&view.shape)?;
        let dummy = RawView { shape: vec![u64::MAX; out_rank(sel)], strides: vec![0; out_rank(sel)], ..view.clone() };
        axes_for(sel, view, &dummy)?.into_iter().map(|(len, c, _)| Axis { len, src: Offsets::Arith { start: 0, step: 0 }, dst: c }).collect()
    } else {
        let dummy = RawView { shape: chunk_extent(sel), strides: vec![0; chunk_rank(sel)], ..view.clone() };
        axes_for(sel, &dummy, view)?.into_iter().map(|(len, _, o)| Axis { len, src: Offsets::Arith { start: 0, step: 0 }, dst: o }).collect()
    };
    // SAFETY: offsets were bounds-checked; the source offsets are all zero into `value`.
    unsafe { run(value.as_ptr(), view.ptr, axes, view.itemsize, 0) };
    Ok(())
}

/// Write the element `value` to every element of `view`.
///
/// # Errors
/// Returns [`Error::InvalidArgument`] for a read-only view or a value of another size.
pub fn fill_all(view: &RawView, value: &[u8]) -> Result<()> {
    let sel = Selection::whole(&view.shape.clone(), &vec![0; view.shape.len()]);
    fill_selection(view, &sel, value, true)
}

/// Fill a C-ordered buffer with copies of `value`.
pub fn fill_buffer(buf: &mut [u8], value: &[u8]) {
    if value.iter().all(|&b| b == value[0]) {
        buf.fill(value[0]);
    } else {
        for c in buf.chunks_exact_mut(value.len()) {
            c.copy_from_slice(value);
        }
    }
}

fn out_rank(sel: &Selection) -> usize {
    match sel {
        Selection::Orthogonal { out, .. } => out.iter().filter(|o| o.is_some()).count(),
        Selection::Points { .. } | Selection::Runs(_) => 1,
    }
}

fn chunk_rank(sel: &Selection) -> usize {
    match sel {
        Selection::Orthogonal { chunk, .. } => chunk.len(),
        Selection::Points { coords, .. } => coords.len(),
        Selection::Runs(_) => 1,
    }
}

fn chunk_extent(sel: &Selection) -> Vec<u64> {
    match sel {
        Selection::Orthogonal { chunk, .. } => chunk.iter().map(|c| c.max().map_or(1, |m| m + 1)).collect(),
        Selection::Points { coords, .. } => coords.iter().map(|c| c.iter().max().map_or(1, |m| m + 1)).collect(),
        Selection::Runs(runs) => vec![runs.iter().map(|r| r.0 + r.2).max().unwrap_or(1)],
    }
}

/// Check the output side of runs against a one-dimensional view.
fn check_runs_out(runs: &[crate::engine::selection::Run], view: &RawView) -> Result<()> {
    if view.shape.len() != 1 {
        return Err(Error::Selection("a run selection needs a one-dimensional array".into()));
    }
    for &(_, o, n) in runs {
        if o.checked_add(n).is_none_or(|end| end > view.shape[0]) {
            return Err(Error::Selection(format!("output run {o}..{} out of bounds for length {}", o.saturating_add(n), view.shape[0])));
        }
    }
    Ok(())
}

/// The offsets of a run starting at element `start` of a one-dimensional view.
#[allow(clippy::cast_possible_wrap)]
fn run_axis(view: &RawView, start: u64) -> Offsets {
    Offsets::Arith { start: start as isize * view.strides[0], step: view.strides[0] }
}

/// Simplify the iteration: drop length-1 axes (folding their offsets into the bases) and merge
/// adjacent axes that are contiguous on both sides.
fn simplify(src: &mut *const u8, dst: &mut *mut u8, axes: Vec<Axis>) -> Vec<Axis> {
    let mut out: Vec<Axis> = Vec::with_capacity(axes.len());
    for a in axes {
        if a.len == 1 {
            // SAFETY: offsets were bounds-checked by the caller.
            unsafe {
                *src = src.offset(a.src.at(0));
                *dst = dst.offset(a.dst.at(0));
            }
            continue;
        }
        if let Some(prev) = out.last_mut()
            && let (
                Offsets::Arith { start: ps, step: pst },
                Offsets::Arith { start: pd, step: pdt },
                Offsets::Arith { start: s, step: st },
                Offsets::Arith { start: d, step: dt },
            ) = (&prev.src, &prev.dst, &a.src, &a.dst)
        {
            #[allow(clippy::cast_possible_wrap)]
            let n = a.len as isize;
            if *pst == st * n && *pdt == dt * n {
                let merged = Axis {
                    len: prev.len * a.len,
                    src: Offsets::Arith { start: ps + s, step: *st },
                    dst: Offsets::Arith { start: pd + d, step: *dt },
                };
                *prev = merged;
                continue;
            }
        }
        out.push(a);
    }
    out
}

/// # Safety
/// Every offset combination must address valid memory on both sides.
unsafe fn run(mut src: *const u8, mut dst: *mut u8, axes: Vec<Axis>, itemsize: usize, swap: usize) {
    if axes.iter().any(|a| a.len == 0) {
        return;
    }
    let axes = simplify(&mut src, &mut dst, axes);
    // SAFETY: forwarded contract.
    unsafe {
        if axes.is_empty() {
            std::ptr::copy_nonoverlapping(src, dst, itemsize);
            swap_in_place(dst, itemsize, swap);
            return;
        }
        rec(src, dst, &axes, itemsize, swap);
    }
}

/// # Safety
/// See [`run`].
unsafe fn rec(src: *const u8, dst: *mut u8, axes: &[Axis], itemsize: usize, swap: usize) {
    // SAFETY: forwarded contract.
    unsafe {
        if axes.len() == 1 {
            inner(src, dst, &axes[0], itemsize, swap);
            return;
        }
        let a = &axes[0];
        // Rows of a strided block usually lie on different pages, out of reach of the hardware
        // prefetcher: request the rows (of whichever side is strided) a few iterations ahead.
        let (src_row, dst_row) = match axes {
            [_, row] => (strided_row_bytes(&a.src, &row.src, row.len, itemsize), strided_row_bytes(&a.dst, &row.dst, row.len, itemsize)),
            _ => (0, 0),
        };
        for k in 0..a.len {
            if (src_row | dst_row) != 0 && k + PREFETCH_ROWS < a.len {
                let ahead = k + PREFETCH_ROWS;
                prefetch(src.offset(a.src.at(ahead) + axes[1].src.at(0)), src_row);
                prefetch(dst.offset(a.dst.at(ahead) + axes[1].dst.at(0)), dst_row);
            }
            rec(src.offset(a.src.at(k)), dst.offset(a.dst.at(k)), &axes[1..], itemsize, swap);
        }
    }
}

/// How many rows ahead [`rec`] prefetches.
const PREFETCH_ROWS: usize = 8;

/// Bytes of one row worth prefetching: the row (`len` elements along `row`) must be contiguous
/// and short (long rows keep the hardware prefetcher busy by themselves), and consecutive rows
/// (`outer`) must not follow each other in memory. 0 otherwise.
#[allow(clippy::cast_possible_wrap)]
fn strided_row_bytes(outer: &Offsets, row: &Offsets, len: usize, itemsize: usize) -> usize {
    let bytes = len * itemsize;
    match (outer, row) {
        (Offsets::Arith { step: o, .. }, Offsets::Arith { step, .. }) if *step == itemsize as isize && bytes <= 4096 && *o != bytes as isize => bytes,
        _ => 0,
    }
}

/// Hint that the `len` bytes at `p` will be read or written soon.
#[inline]
fn prefetch(p: *const u8, len: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        let mut off = 0;
        while off < len {
            // SAFETY: prefetching never faults, whatever the address.
            unsafe { std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.wrapping_add(off).cast::<i8>()) };
            off += 64;
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (p, len);
}

/// # Safety
/// See [`run`].
#[inline]
unsafe fn inner(src: *const u8, dst: *mut u8, a: &Axis, itemsize: usize, swap: usize) {
    // SAFETY: forwarded contract.
    unsafe {
        #[allow(clippy::cast_possible_wrap)]
        if let (Offsets::Arith { start: s, step: st }, Offsets::Arith { start: d, step: dt }) = (&a.src, &a.dst)
            && *st == itemsize as isize
            && *dt == itemsize as isize
        {
            std::ptr::copy_nonoverlapping(src.offset(*s), dst.offset(*d), a.len * itemsize);
            if swap != 0 {
                for k in 0..a.len {
                    swap_in_place(dst.offset(*d + (k * itemsize) as isize), itemsize, swap);
                }
            }
            return;
        }
        match itemsize {
            1 => elems::<1>(src, dst, a, swap),
            2 => elems::<2>(src, dst, a, swap),
            4 => elems::<4>(src, dst, a, swap),
            8 => elems::<8>(src, dst, a, swap),
            16 => elems::<16>(src, dst, a, swap),
            _ => {
                for k in 0..a.len {
                    let t = dst.offset(a.dst.at(k));
                    std::ptr::copy_nonoverlapping(src.offset(a.src.at(k)), t, itemsize);
                    swap_in_place(t, itemsize, swap);
                }
            }
        }
    }
}

/// # Safety
/// See [`run`].
#[inline]
unsafe fn elems<const N: usize>(src: *const u8, dst: *mut u8, a: &Axis, swap: usize) {
    // SAFETY: forwarded contract.
    unsafe {
        match (&a.src, &a.dst) {
            (Offsets::Arith { start: s, step: st }, Offsets::Arith { start: d, step: dt }) => {
                let (mut sp, mut dp) = (src.offset(*s), dst.offset(*d));
                for _ in 0..a.len {
                    std::ptr::copy_nonoverlapping(sp, dp, N);
                    swap_in_place(dp, N, swap);
                    sp = sp.offset(*st);
                    dp = dp.offset(*dt);
                }
            }
            _ => {
                for k in 0..a.len {
                    let t = dst.offset(a.dst.at(k));
                    std::ptr::copy_nonoverlapping(src.offset(a.src.at(k)), t, N);
                    swap_in_place(t, N, swap);
                }
            }
        }
    }
}

/// # Safety
/// `p..p+itemsize` must be valid and writable.
#[inline]
unsafe fn swap_in_place(p: *mut u8, itemsize: usize, unit: usize) {
    if unit > 1 {
        // SAFETY: forwarded contract.
        let s = unsafe { std::slice::from_raw_parts_mut(p, itemsize) };
        for c in s.chunks_exact_mut(unit) {
            c.reverse();
        }
    }
}

/// Reverse the bytes of every `unit`-byte group of `buf` (endianness conversion).
pub fn byteswap(buf: &mut [u8], unit: usize) {
    if unit > 1 {
        for c in buf.chunks_exact_mut(unit) {
            c.reverse();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_only_views_refuse_writes() {
        let data = vec![7u8; 16];
        let ro = RawView::c_order_const(&data, &[4, 4], 1);
        assert!(!ro.writable());
        assert!(matches!(fill_all(&ro, &[0]), Err(Error::InvalidArgument(_))));
        let mut other = vec![1u8; 16];
        let rw = RawView::c_order(&mut other, &[4, 4], 1);
        let sel = Selection::whole(&[4, 4], &[0, 0]);
        assert!(copy_selection(&rw, &ro, &sel, Direction::ChunkToOut, 0).is_err(), "a read must not write into a read-only output");
        assert!(copy_selection(&ro, &rw, &sel, Direction::OutToChunk, 0).is_err(), "a write must not write into a read-only chunk");
        assert_eq!(data, vec![7u8; 16]);
        copy_selection(&ro, &rw, &sel, Direction::ChunkToOut, 0).unwrap();
        assert_eq!(other, vec![7u8; 16]);
    }

    #[test]
    fn scatter_chunk_into_f_order_output() {
        // chunk 2x3 of u16 into a 4x5 F-ordered output at rows 1..3, cols 2..5
        let chunk: Vec<u16> = (0..6).collect();
        let mut out = vec![0u16; 20];
        let cv = RawView::c_order_const(bytemuck(&chunk), &[2, 3], 2);
        // SAFETY: `out` is 4x5 u16 in F order.
        let ov = unsafe { RawView::new(out.as_mut_ptr().cast(), vec![4, 5], vec![2, 8], 2, true) };
        let sel = Selection::whole(&[2, 3], &[1, 2]);
        copy_selection(&cv, &ov, &sel, Direction::ChunkToOut, 0).unwrap();
        for i in 0..2 {
            for j in 0..3 {
                assert_eq!(out[(j + 2) * 4 + (i + 1)], (i * 3 + j) as u16);
            }
        }
        // out of bounds is an error, not a crash
        let bad = Selection::whole(&[2, 3], &[3, 2]);
        assert!(copy_selection(&cv, &ov, &bad, Direction::ChunkToOut, 0).is_err());
    }

    #[test]
    fn gather_with_lists_steps_and_swap() {
        let src: Vec<u32> = (0..24).collect(); // 4x6 "value" array
        let mut chunk = vec![0u32; 6]; // 2x3 chunk
        let vv = RawView::c_order_const(bytemuck(&src), &[4, 6], 4);
        let cv = RawView::c_order(bytemuck_mut(&mut chunk), &[2, 3], 4);
        let sel = Selection::Orthogonal {
            chunk: vec![DimSel::range(0, 2), DimSel::List(vec![2, 0, 1])],
            out: vec![Some(DimSel::List(vec![3, 1])), Some(DimSel::Range { start: 0, step: 2, len: 3 })],
        };
        copy_selection(&cv, &vv, &sel, Direction::OutToChunk, 4).unwrap();
        // chunk[0][2]=v[3][0], chunk[0][0]=v[3][2], chunk[0][1]=v[3][4], chunk[1][..] from row 1
        let want = [20u32, 22, 18, 8, 10, 6].map(u32::swap_bytes);
        assert_eq!(chunk, want);
    }

    #[test]
    fn strided_blocks_both_ways_match_naive_copy() {
        // A 30 x 24 block (rows of 96 bytes, 256 bytes apart in the array: the prefetching path)
        // out of a 40 x 64 u32 array into a chunk and back, at an offset; then the same with
        // stepped rows.
        let n = (40usize, 64usize);
        let src: Vec<u32> = (0..(n.0 * n.1) as u32).collect();
        let sv = RawView::c_order_const(bytemuck(&src), &[40, 64], 4);
        let mut chunk = vec![0u32; 30 * 24];
        let sel = Selection::whole(&[30, 24], &[7, 33]);
        copy_selection(&RawView::c_order(bytemuck_mut(&mut chunk), &[30, 24], 4), &sv, &sel, Direction::OutToChunk, 0).unwrap();
        for i in 0..30 {
            for j in 0..24 {
                assert_eq!(chunk[i * 24 + j], src[(i + 7) * 64 + j + 33]);
            }
        }
        let mut back = vec![0u32; n.0 * n.1];
        let bv = RawView::c_order(bytemuck_mut(&mut back), &[40, 64], 4);
        copy_selection(&RawView::c_order_const(bytemuck(&chunk), &[30, 24], 4), &bv, &sel, Direction::ChunkToOut, 0).unwrap();
        for (k, (&b, &s)) in back.iter().zip(&src).enumerate() {
            let (i, j) = (k / 64, k % 64);
            let inside = (7..37).contains(&i) && (33..57).contains(&j);
            assert_eq!(b, if inside { s } else { 0 });
        }
        // Every third array row into consecutive chunk rows.
        let stepped = Selection::Orthogonal {
            chunk: vec![DimSel::range(0, 12), DimSel::range(0, 24)],
            out: vec![Some(DimSel::Range { start: 2, step: 3, len: 12 }), Some(DimSel::range(5, 24))],
        };
        copy_selection(&RawView::c_order(bytemuck_mut(&mut chunk), &[30, 24], 4), &sv, &stepped, Direction::OutToChunk, 0).unwrap();
        for i in 0..12 {
            for j in 0..24 {
                assert_eq!(chunk[i * 24 + j], src[(2 + 3 * i) * 64 + 5 + j]);
            }
        }
    }

    #[test]
    fn points_and_fill() {
        let chunk: Vec<u8> = (0..12).collect(); // 3x4
        let mut out = vec![0u8; 5];
        let cv = RawView::c_order_const(&chunk, &[3, 4], 1);
        let sel = Selection::Points { coords: vec![vec![2, 0, 1], vec![3, 1, 0]], out: DimSel::List(vec![4, 0, 2]) };
        copy_selection(&cv, &RawView::c_order(&mut out, &[5], 1), &sel, Direction::ChunkToOut, 0).unwrap();
        assert_eq!(out, vec![1, 0, 4, 0, 11]);
        fill_selection(
            &RawView::c_order(&mut out, &[5], 1),
            &Selection::Points { coords: vec![vec![0], vec![0]], out: DimSel::List(vec![1]) },
            &[9],
            false,
        )
        .unwrap();
        assert_eq!(out[1], 9);
        let mut buf = vec![0u8; 8];
        fill_buffer(&mut buf, &[1, 2]);
        assert_eq!(buf, vec![1, 2, 1, 2, 1, 2, 1, 2]);
    }

    fn bytemuck<T>(v: &[T]) -> &[u8] {
        // SAFETY: plain integer data.
        unsafe { std::slice::from_raw_parts(v.as_ptr().cast(), std::mem::size_of_val(v)) }
    }
    fn bytemuck_mut<T>(v: &mut [T]) -> &mut [u8] {
        // SAFETY: plain integer data.
        unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr().cast(), std::mem::size_of_val(v)) }
    }
}
