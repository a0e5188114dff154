#!/usr/bin/env bash
# CI check that the benchmarks run (scripts/test.sh, VM test "bench-smoke").
# Nothing is timed or compared:
#   1. every criterion micro benchmark runs once (`-- --test`);
#   2. bench/e2e.sh --smoke: one short VM run of srptd and the kernel
#      ib_srpt, failing unless every row has a figure for both targets.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

echo "bench/smoke.sh: micro benchmarks, one iteration each" >&2
cargo bench --bench command_path --bench dm_agent -- --test
echo "bench/smoke.sh: end-to-end smoke" >&2
bench/e2e.sh --smoke "$@"
