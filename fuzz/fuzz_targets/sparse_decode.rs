//! A stored value of a sparse array (the `sparsezarr.sparse` chunk codec, sharded or not) read
//! as COO and as CSR: errors are fine, panics and header-driven allocations are not.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sparsezarr_fuzz::sparse_decode(data));
