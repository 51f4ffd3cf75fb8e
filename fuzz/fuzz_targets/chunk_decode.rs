//! A stored value (a shard: index and inner chunks; or a plain chunk) decoded through a codec
//! chain of a real array: the first byte picks the array's metadata, the rest is the value.
//! It must decode to exactly the chunk's size or fail with an error; never panic, never allocate
//! what a header claims instead of what the metadata implies.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sparsezarr_fuzz::chunk_decode(data));
