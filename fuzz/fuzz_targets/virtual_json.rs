//! Virtual-array documents parsed and compiled (shapes, selections, layers): any text must give
//! a compiled view or an error, bounded in memory and depth.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sparsezarr_fuzz::virtual_json(data));
