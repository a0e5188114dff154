#!/usr/bin/env bash
# Short fuzz run of every cargo-fuzz target from its committed seeds
# (fuzz/seeds/<target>/): FUZZ_SMOKE_SECS seconds each (default 15), one
# target at a time, under nice. Fails on any crash, panic or oracle
# failure (the crashing input is left in fuzz/artifacts/<target>/).
# Without a nightly toolchain and cargo-fuzz it prints "skipped" and
# succeeds. scripts/test.sh runs it after `cargo test --workspace`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if ! cargo +nightly --version >/dev/null 2>&1 || ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz-smoke: skipped: no nightly/cargo-fuzz"
    exit 0
fi
secs=${FUZZ_SMOKE_SECS:-15}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cd fuzz
nice -n 19 cargo +nightly fuzz build
mapfile -t targets < <(cargo +nightly fuzz list)
failed=()
for t in "${targets[@]}"; do
    mkdir -p "$work/corpus/$t" "$work/tmp"
    log="$work/$t.log"
    seeds=()
    [ -d "seeds/$t" ] && seeds=("seeds/$t")
    # New inputs go to the scratch corpus; the committed seeds stay as they are.
    if TMPDIR="$work/tmp" nice -n 19 cargo +nightly fuzz run "$t" "$work/corpus/$t" "${seeds[@]}" -- \
        -max_total_time="$secs" -rss_limit_mb=3072 -print_final_stats=1 >"$log" 2>&1; then
        runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
        echo "fuzz-smoke: $t: ${runs:-?} executions, no crash"
    else
        echo "fuzz-smoke: $t: FAILED; last lines of its log:" >&2
        tail -n 40 "$log" >&2
        failed+=("$t")
    fi
    rm -rf "$work/tmp"
done
if [ "${#failed[@]}" -gt 0 ]; then
    echo "fuzz-smoke: failing targets: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
    exit 1
fi
echo "fuzz-smoke: all ${#targets[@]} targets ran ${secs}s without a crash"
