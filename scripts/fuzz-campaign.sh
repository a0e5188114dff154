#!/usr/bin/env bash
# Opt-in fuzz campaign: every cargo-fuzz target (or those named) for
# SECONDS each (default 600), one at a time, under nice, growing the
# persistent corpus fuzz/corpus/<target>/ (git-ignored) from the committed
# seeds. Prints a table of executions and crashes per target, the figures
# docs/fuzzing.md records. Needs a nightly toolchain and cargo-fuzz.
#
#   scripts/fuzz-campaign.sh [SECONDS] [TARGET ...]
#
# FUZZ_SANITIZER=none builds without AddressSanitizer: the targets drive
# safe Rust only (no FFI, no src/rdma), so ASan finds nothing there that
# a panic would not, and without it they run 5-50 times faster.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

secs=${1:-600}
shift || true
if ! cargo +nightly --version >/dev/null 2>&1 || ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz-campaign: needs a nightly toolchain and cargo-fuzz (cargo install cargo-fuzz)" >&2
    exit 2
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cd fuzz
san=${FUZZ_SANITIZER:-address}
nice -n 19 cargo +nightly fuzz build -s "$san"
if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo +nightly fuzz list)
fi
rows=()
status=0
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t" "$work/tmp"
    log="$work/$t.log"
    seeds=()
    [ -d "seeds/$t" ] && seeds=("seeds/$t")
    rc=0
    TMPDIR="$work/tmp" nice -n 19 cargo +nightly fuzz run -s "$san" "$t" "corpus/$t" "${seeds[@]}" -- \
        -max_total_time="$secs" -rss_limit_mb=3072 -print_final_stats=1 >"$log" 2>&1 || rc=$?
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    crashes=0
    if [ "$rc" -ne 0 ]; then
        crashes=1
        status=1
        echo "fuzz-campaign: $t crashed; last lines of its log:" >&2
        tail -n 40 "$log" >&2
    fi
    corpus=$(find "corpus/$t" -type f -printf . | wc -c)
    rows+=("| $t | ${runs:-?} | ${secs} | $crashes | $corpus |")
    rm -rf "$work/tmp"
done
echo "| target | executions | seconds | crashes | corpus files |"
echo "|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
exit "$status"
