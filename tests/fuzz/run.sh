#!/usr/bin/env bash
# Fuzz every parser an untrusted sender reaches, one target after another, each for RUNS inputs
# (default 1,000,000), and stop at the first target that panics (libFuzzer writes the input to
# tests/fuzz/artifacts/<target>/). Needs the nightly toolchain and cargo-fuzz:
#   cargo install cargo-fuzz --locked
#   tests/fuzz/run.sh [RUNS] [TARGET...]
#
# The seed corpus (tests/fuzz/corpus/<target>/, replayed on stable by tests/it/fuzz_corpus.rs)
# and the dictionary of the tokens each format is made of (tests/fuzz/dict/<target>.dict) are
# read, never written: inputs the fuzzer finds go to target/fuzz/corpus/<target>/. Builds go
# to target/fuzz, so the main debug build is left alone. No sanitizer: the code under test is
# safe Rust and the bug sought is a panic (debug assertions and overflow checks are on).
set -euo pipefail
cd "$(dirname "$0")/../.."
runs=${1:-1000000}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(slash_command interaction eventbridge sns signature config)
fi
# The fuzz crate is its own workspace: resolve it to the versions the main build uses.
cp Cargo.lock tests/fuzz/Cargo.lock
flags=(--fuzz-dir tests/fuzz --target-dir target/fuzz --sanitizer none --debug-assertions)
cargo +nightly fuzz build "${flags[@]}"
for t in "${targets[@]}"; do
  mkdir -p "target/fuzz/corpus/$t"
  echo "== $t: $runs runs (log: target/fuzz/$t.log)"
  start=$(date +%s)
  status=0
  cargo +nightly fuzz run "${flags[@]}" "$t" "target/fuzz/corpus/$t" "tests/fuzz/corpus/$t" -- \
    -runs="$runs" -dict="tests/fuzz/dict/$t.dict" -max_len=8192 -timeout=10 -print_final_stats=1 \
    > "target/fuzz/$t.log" 2>&1 ||
    status=$?
  grep -E '^(#[0-9]+ +DONE|Done [0-9]+ runs|stat::number_of_executed_units|stat::peak_rss_mb)' \
    "target/fuzz/$t.log" || true
  echo "-- $t: exit $status after $(( $(date +%s) - start )) s"
  if [ "$status" -ne 0 ]; then
    tail -n 40 "target/fuzz/$t.log"
    exit "$status"
  fi
done
