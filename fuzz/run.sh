#!/usr/bin/env bash
# The fuzz campaign: each target for SECONDS (default 60) on the checked-in corpus, with memory
# limits (a decoded size must be what the metadata implies): the targets' allocator aborts when an
# input makes them hold more than 256 MiB (fuzz/src/lib.rs; libFuzzer's -malloc_limit_mb needs a
# sanitizer), and libFuzzer's -rss_limit_mb=2048 stays as a backstop. Needs cargo-fuzz (`cargo
# install cargo-fuzz`); stable Rust works with `--sanitizer none` (no ASan: Rust's own checks, the
# UB checks of debug assertions, and the limits catch what this code can get wrong).
#   bash fuzz/run.sh [SECONDS] [TARGET...]
# New inputs go to $FUZZ_WORK/<target> (default fuzz/target/fuzz-work); crashes to fuzz/artifacts/.
set -euo pipefail
cd "$(dirname "$0")"
seconds=${1:-60}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(chunk_decode sparse_decode metadata_json virtual_json)
cargo fuzz build -s none
status=0
for t in "${targets[@]}"; do
    work=${FUZZ_WORK:-target/fuzz-work}/$t
    mkdir -p "$work"
    echo "== $t: $seconds s"
    log=$work.log
    rc=0
    cargo fuzz run -s none "$t" "$work" "corpus/$t" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 >"$log" 2>&1 || rc=$?
    grep -E "stat::number_of_executed_units|stat::peak_rss_mb|^Done|ERROR|panicked|SUMMARY" "$log" || true
    if [ "$rc" -ne 0 ]; then
        echo "$t: the fuzzer stopped with status $rc (a finding: see $log and fuzz/artifacts/$t)"
        status=1
    fi
done
exit $status
