//! Every input of the fuzz targets' checked-in corpora (`fuzz/corpus/`, seeds and whatever the
//! fuzzer kept) replayed through the same target bodies on every `cargo test`: none may panic.

#[path = "../../../fuzz/src/lib.rs"]
mod bodies;

use std::path::Path;

fn replay(target: &str, body: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus").join(target);
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("corpus entry").path();
        body(&std::fs::read(&path).expect("corpus file"));
        n += 1;
    }
    assert!(n > 0, "no corpus for {target}");
}

#[test]
fn chunk_decode_corpus() {
    replay("chunk_decode", bodies::chunk_decode);
}

#[test]
fn sparse_decode_corpus() {
    replay("sparse_decode", bodies::sparse_decode);
}

#[test]
fn metadata_json_corpus() {
    replay("metadata_json", bodies::metadata_json);
}

#[test]
fn virtual_json_corpus() {
    replay("virtual_json", bodies::virtual_json);
}
