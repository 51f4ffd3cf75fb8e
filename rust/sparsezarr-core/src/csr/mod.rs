//! Compressed sparse matrices stored as three one-dimensional Zarr arrays (`data`, `indices`,
//! `indptr`), the layout of anndata's `csr_matrix` / `csc_matrix` groups and of binsparse's CSR /
//! CSC formats: concurrent gathers of rows, and writes of whole matrices or streams of row blocks.

pub mod array1d;
pub mod gather;
pub mod ints;
pub mod stream;

pub use array1d::Array1d;
pub use gather::{CsrSource, Gathered, Major, filter_minor, read_indptr};
pub use ints::IntKind;
pub use stream::{CsrWriter, IntsIn, write_matrix};
