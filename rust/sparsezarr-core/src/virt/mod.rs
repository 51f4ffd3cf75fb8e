//! Virtual arrays: JSON-described concatenated, stacked, sliced and padded views over Zarr arrays
//! (dense arrays, sparsezarr sparse arrays, anndata CSR/CSC groups, and other views), opened
//! lazily and read and written through. The document format is specified in
//! `docs/spec/virtual-arrays.md`.
//!
//! - [`spec`]: the document, its checks, and its compilation into flat layers (no I/O).
//! - [`open`]: resolving and opening components (path confinement, URL allow-lists, cycles).
//! - [`view`]: reads and writes split over components and dispatched concurrently.

pub mod open;
pub mod spec;
pub mod view;

pub use open::{Component, DOCUMENT_KEY, Location, OpenOptions};
pub use spec::{Compiled, DimMap, Document, FORMAT_VERSION, Layer, Node, Sel, Storage};
pub use view::{Entries, VirtualArray, sort_entries};
