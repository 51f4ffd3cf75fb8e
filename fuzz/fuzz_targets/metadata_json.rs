//! Zarr array metadata JSON (v3 and v2) parsed and turned into the engine's plan for a dense
//! 1-d array and for a sparse array: any text must give a value or an error, bounded in memory
//! (shapes near 2^64, huge chunk shapes, deep nesting, unknown codecs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sparsezarr_fuzz::metadata_json(data));
