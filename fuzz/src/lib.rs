//! The bodies of the fuzz targets, shared by `fuzz_targets/` (libFuzzer) and by
//! `rust/sparsezarr-core/tests/fuzz_corpus.rs`, which replays the checked-in corpora on every
//! `cargo test`. Each takes arbitrary bytes and must return (errors are fine): a panic, a crash
//! or an allocation that the metadata does not imply is a finding.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};

use sparsezarr_core::csr::array1d::Array1d;
use sparsezarr_core::engine::codec::EngineOptions;
use sparsezarr_core::engine::selection::DimSel;
use sparsezarr_core::engine::{ArrayEngine, Concurrency};
use sparsezarr_core::metadata::ArrayMeta;
use sparsezarr_core::sparse::{ReadFormat, SparseArray};
use sparsezarr_core::store::{Encoded, MemoryStore, Store, WriteMode};
use sparsezarr_core::virt::Document;

/// The most memory an input may hold allocated at once, in one allocation or several (the
/// fuzzer's own corpus, a few MiB, included). The seed arrays' chunks are a few KiB decoded, and
/// parsing metadata or a virtual document must not allocate by what it declares.
pub const LIMIT: usize = 256 << 20;

/// The system allocator with a limit: an allocation that would take the bytes held above
/// [`LIMIT`] aborts the process, and libFuzzer keeps the input as a crash. libFuzzer's own
/// `-malloc_limit_mb` needs a sanitizer's malloc hooks, which a `--sanitizer none` build does not
/// have, and `-rss_limit_mb` only samples the RSS once a second; this catches both kinds of
/// allocation in every build of these bodies (the fuzzers and `cargo test`'s corpus replay).
pub struct Limited;

static LIVE: AtomicUsize = AtomicUsize::new(0);

impl Limited {
    fn admit(size: usize) {
        let live = LIVE.fetch_add(size, Ordering::Relaxed).saturating_add(size);
        if live > LIMIT {
            // No formatting: nothing here may allocate.
            let _ = std::io::stderr().write_all(b"sparsezarr-fuzz: allocation over the limit (LIMIT in fuzz/src/lib.rs)\n");
            std::process::abort();
        }
    }
}

// SAFETY: every call is forwarded to the system allocator unchanged; the bookkeeping only counts.
unsafe impl GlobalAlloc for Limited {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        Self::admit(layout.size());
        // SAFETY: the caller's contract, forwarded.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        Self::admit(layout.size());
        // SAFETY: the caller's contract, forwarded.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's contract, forwarded.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        Self::admit(new_size);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's contract, forwarded.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Limited = Limited;

/// Metadata of real dense arrays (written by zarr-python; `fuzz/make_corpus.py`).
pub const DENSE_METADATA: [&str; 5] = [
    include_str!("../metadata/sharded_zstd.json"),
    include_str!("../metadata/sharded_blosc.json"),
    include_str!("../metadata/plain_zstd.json"),
    include_str!("../metadata/plain_gzip_crc.json"),
    include_str!("../metadata/plain_blosc.json"),
];

/// Metadata of real sparse arrays (sharded, and not).
pub const SPARSE_METADATA: [&str; 2] = [include_str!("../metadata/sparse.json"), include_str!("../metadata/sparse_plain.json")];

/// A stored value (a shard: index and inner chunks; or a plain chunk) decoded through the codec
/// chain of a real array: the first byte picks the array (and, with its top bit, turns checksum
/// validation off), the rest is the value. Read whole, then in part (a partial shard read).
pub fn chunk_decode(data: &[u8]) {
    let Some((&pick, value)) = data.split_first() else { return };
    let json = DENSE_METADATA[usize::from(pick & 0x7f) % DENSE_METADATA.len()];
    let options = EngineOptions { validate_checksums: pick & 0x80 == 0, ..EngineOptions::default() };
    let array = Array1d::from_metadata_json(json, "", options, Concurrency { threads: 1 }).expect("the seed metadata is valid");
    let store = MemoryStore::new(false);
    store.put("c/0", Encoded::single(value.to_vec()), WriteMode::Overwrite).expect("memory put");
    let n = array.chunk_len();
    let elem = array.elem_size();
    let mut out = vec![0u8; usize::try_from(n).expect("small chunk") * elem];
    let _ = array.read_runs(&store, &[(0, n)], &mut out);
    let part = n / 5;
    let _ = array.read_runs(&store, &[(n / 3, part)], &mut out[..usize::try_from(part).expect("small chunk") * elem]);
}

/// A stored value of a sparse array (the `sparsezarr.sparse` chunk codec, sharded or not) read
/// whole and in part, as COO and as CSR.
pub fn sparse_decode(data: &[u8]) {
    let Some((&pick, value)) = data.split_first() else { return };
    let json = SPARSE_METADATA[usize::from(pick) % SPARSE_METADATA.len()];
    let array =
        SparseArray::from_metadata_json(json, None, "", EngineOptions::default(), Concurrency { threads: 1 }).expect("the seed metadata is valid");
    let store = MemoryStore::new(false);
    store.put("c/0/0", Encoded::single(value.to_vec()), WriteMode::Overwrite).expect("memory put");
    let whole = [DimSel::Range { start: 0, step: 1, len: 64 }, DimSel::Range { start: 0, step: 1, len: 64 }];
    let part = [DimSel::Range { start: 3, step: 2, len: 10 }, DimSel::Range { start: 1, step: 1, len: 20 }];
    for format in [ReadFormat::Coo, ReadFormat::Csr] {
        let _ = array.read(&store, &whole, format, None);
        let _ = array.read(&store, &part, format, None);
    }
}

/// Zarr array metadata (v3 or v2 JSON) parsed and planned as a dense 1-d array, a sparse array
/// and an N-d dense array.
pub fn metadata_json(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = ArrayMeta::parse(text, "a/");
    let c = Concurrency { threads: 1 };
    let _ = Array1d::from_metadata_json(text, "", EngineOptions::default(), c);
    let _ = SparseArray::from_metadata_json(text, None, "", EngineOptions::default(), c);
    let _ = ArrayEngine::from_metadata_json(text, None, EngineOptions::default(), c);
}

/// A virtual-array document parsed and compiled (shapes, selections, layers).
pub fn virtual_json(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(doc) = Document::from_json(text) {
        let _ = doc.compile();
    }
}
