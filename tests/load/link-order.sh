#!/usr/bin/env bash
# Writes deploy/link-order.txt: the functions a running bot executes (start-up, a signed
# command's ack, alarms and runs, the storm), the ack's first and then the rest in the order
# they first ran, for the linker to lay out together at the front of the binary's code (lld's
# --symbol-ordering-file).
#
# Why: the kernel maps a program's code 64 KiB around every page it first runs
# (fault-around), so code spread over the whole text is nearly all resident after start-up
# although a fraction of it ever runs (opt-level "s": 10.3 of 10.9 MiB resident, 2.4 MiB run
# by start-up and the ack). Laid out together, the bot's idle RSS went from 16.1-16.9 to
# 9.3 MiB at "s" and 11.0 MiB at opt-level 3 (the bench, README), and its ack got cheaper
# (fewer instruction-cache and TLB misses).
#
#   tests/load/link-order.sh            # needs valgrind (apt-get install valgrind)
#   tests/load/link-order.sh --refresh  # only renames LLVM's renumbered copies (below)
#
# It ends by building the production binary with it, as deploy/Dockerfile does:
#   cargo rustc --profile production --bin redis-autoscaler -- \
#     -C link-arg=-Wl,--symbol-ordering-file=deploy/link-order.txt \
#     -C link-arg=-Wl,--no-warn-symbol-ordering
# (cargo does not track the list: after changing it by hand, touch src/main.rs first).
#
# A name the build no longer has is skipped by the linker, so a stale list only lays out less
# (one change to the connection loop, with the list from before it: idle 11.0 -> 13.2 MiB). Run
# this again after a dependency or toolchain upgrade (the names carry their crates' hashes;
# LLVM's `.NNNN` copies are renumbered by any change) or a change to what start-up or the ack
# path runs.
#
# A change elsewhere (the simulator, a stand-in) leaves the functions run as they were but
# renumbers LLVM's `.NNNN` copies of internal functions: a list 60 names of 4,593 out of date
# that way gave an idle RSS of 13.3 MiB against 10.7-11.1. `--refresh` puts each such name
# back as every copy of it the build has now, keeping its place, and links again: two builds,
# no valgrind (minutes, not half an hour).
set -euo pipefail
cd "$(dirname "$0")/../.."

out=target/link-order
rm -rf "$out"
mkdir -p "$out/cg"

# 1. The production build, with its symbols (the same code as the image's, only not stripped).
cargo rustc --profile production --bin redis-autoscaler -- -C strip=none
cp target/production/redis-autoscaler "$out/redis-autoscaler"
nm --defined-only "$out/redis-autoscaler" | awk '$2 ~ /^[tTwW]$/ {print $3}' | sort -u >"$out/symbols"

link_in_order() {
    # The production binary in the list's order (cargo does not see the list change: the
    # touch makes it link again).
    touch src/main.rs
    cargo rustc --profile production --bin redis-autoscaler -- \
        -C link-arg=-Wl,--symbol-ordering-file=deploy/link-order.txt \
        -C link-arg=-Wl,--no-warn-symbol-ordering
    echo "target/production/redis-autoscaler: linked in that order"
}

if [ "${1:-}" = "--refresh" ]; then
    cp deploy/link-order.txt "$out/old"
    awk 'NR == FNR { have[$1] = 1; base = $1; sub(/\.[0-9]+$/, "", base)
                     if (base != $1) copies[base] = copies[base] " " $1; next }
         ($1 in have) { if (!out[$1]++) print $1; next }
         { base = $1; sub(/\.[0-9]+$/, "", base)
           n = split(copies[base], c, " "); for (i = 1; i <= n; i++) if (!out[c[i]]++) print c[i] }' \
        "$out/symbols" "$out/old" >deploy/link-order.txt
    echo "deploy/link-order.txt: $(wc -l <deploy/link-order.txt) functions of $(wc -l <"$out/symbols");" \
        "$(awk 'NR == FNR { have[$1] = 1; next } !($1 in have)' "$out/symbols" "$out/old" | wc -l) names of the old list renamed or gone"
    link_in_order
    exit 0
fi

# 2. The load suite's small scenarios against it, each bot under callgrind, which writes down
#    every function that ran, a slice at a time (the suite ends each bot with kill -9, so only
#    what was written by then counts: the slices are small).
cargo test --release --test load --no-run
export LOAD_BOT_BIN="$PWD/$out/redis-autoscaler"
n=0
for scenario in bench::the_benchmark_runs runs::forty_concurrent_runs storm::a_small_storm; do
    n=$((n + 1))
    # Under valgrind a scenario runs some 50 times slower: its figures and limits don't apply.
    LOAD_BOT_WRAPPER="valgrind --tool=callgrind --demangle=no --dump-instr=no --dump-every-bb=2000000 --callgrind-out-file=$PWD/$out/cg/$n-cg.%p" \
        cargo test --release --test load -- --nocapture "$scenario" >"$out/$(echo "$scenario" | tr : _).log" 2>&1 || true
done

# 3. The order. First the functions a signed command's ack runs every time: those in at least
#    half of the bench bot's slices after the one with its first request (that one holds the
#    first request's one-off work). Packed together, an ack after a quiet spell touches as few
#    pages and cache lines of code as it can: at 500 req/s an ack found its code cold, and
#    its latency was the bare route's plus 25-40 us, against 5 us more CPU under load. Then
#    every other function in the order it first ran: the scenarios in turn, each process's
#    slices in order. Names as the linker knows them (callgrind's recursion marks dropped).
functions() { sed -n -E "s/^c?fn=\([0-9]+\) (.*)$/\1/p" "$@" | sed -E "s/'[0-9]+$//"; }
shopt -s nullglob
bench=("$out"/cg/1-cg.*.*)
all=("$out"/cg/*-cg.*.*)
# The bench's bot's slices that hold a signed command's ack, but the first of them.
acks=""
if [ ${#bench[@]} -gt 0 ]; then
    acks=$(printf '%s\n' "${bench[@]}" | sort -t. -k2,2n -k3,3n |
        xargs -r grep -l 'SlackVerified.*from_request' | tail -n +2 || true)
fi
if [ -z "$acks" ]; then
    echo "fewer than two callgrind slices of the bench's bot hold a signed command's ack" \
        "(SlackVerified::from_request): see $out/bench__the_benchmark_runs.log" >&2
    exit 1
fi
slices=$(printf '%s\n' "${all[@]}" | sort -t. -k1,1 -k2,2n -k3,3n)
for f in $acks; do functions "$f" | sort -u; done |
    awk -v slices="$(echo "$acks" | wc -w)" '{ seen[$0]++ } END { for (f in seen) if (2 * seen[f] >= slices) print f }' >"$out/ack"
# valgrind has no SHA-NI: under callgrind the signature's SHA-256 runs the portable code, on
# the machine the sha_ni code, so both are the ack's.
grep -E '^_ZN4sha26sha2567x86_sha' "$out/symbols" >>"$out/ack" || true
[ -s "$out/ack" ] || { echo "no function ran in most of the bench's acks" >&2; exit 1; }
for f in $slices; do functions "$f"; done | awk '!seen[$0]++' >"$out/ran"
# The ack's functions in the order they first ran (those that never ran under callgrind after
# them), then the rest.
awk 'NR == FNR { ack[$1] = 1; next } ($1 in ack)' "$out/ack" "$out/ran" >"$out/order"
awk 'NR == FNR { ran[$1] = 1; next } !($1 in ran)' "$out/ran" "$out/ack" >>"$out/order"
awk 'NR == FNR { ack[$1] = 1; next } !($1 in ack)' "$out/ack" "$out/ran" >>"$out/order"
awk 'NR == FNR { known[$1] = 1; next } ($1 in known)' "$out/symbols" "$out/order" >deploy/link-order.txt
echo "the ack: $(awk 'NR == FNR { known[$1] = 1; next } ($1 in known)' "$out/symbols" "$out/ack" | wc -l) functions first"
echo "deploy/link-order.txt: $(wc -l <deploy/link-order.txt) functions of $(wc -l <"$out/symbols")"

# 4. The production binary in that order.
link_in_order
