#!/usr/bin/env bash
# THE test command of srptd (CI runs exactly this, via .ci/run):
#   1. install build + VM dependencies (fast no-op when present)
#   2. scripts/lint-pipelines.py (no pipeline whose reader exits early),
#      cargo test --workspace            (unit and integration tests),
#      scripts/check-unit.sh             (systemd-analyze verify of the unit),
#      scripts/fuzz-smoke.sh             (every fuzz target ~15 s from its
#                                         seeds, when nightly + cargo-fuzz exist)
#   3. end-to-end tests in a throwaway QEMU VM with soft-RoCE and the real
#      Linux SRP initiator (tests/vm/*.sh, listed below), and bench-smoke
#      (bench/smoke.sh: the benchmarks run and produce figures; no timing)
#
# SKIP_VM_TESTS=1 skips step 3 (quick local runs). VM_TIMEOUT etc. are
# passed on to scripts/vm-run.sh.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf '\n=== %s\n' "$*" >&2; }

step "install dependencies"
scripts/install-deps.sh

step "lint: shell pipelines that SIGPIPE under pipefail"
scripts/lint-pipelines.py --self-test
scripts/lint-pipelines.py

step "cargo test --workspace"
cargo test --workspace

step "systemd unit: systemd-analyze verify contrib/srptd.service"
scripts/check-unit.sh

step "fuzz smoke (each cargo-fuzz target briefly from its seeds; skipped without nightly/cargo-fuzz)"
scripts/fuzz-smoke.sh

if [ "${SKIP_VM_TESTS:-0}" = 1 ]; then
    step "VM tests skipped (SKIP_VM_TESTS=1)"
else
    step "build srptd for the VM tests"
    cargo build --release --bin srptd --example srp_initiator --example srp_hostile
    for t in ${VM_TESTS:-srptd-smoke srptd-admin srptd-live srptd-e2e srptd-srq srptd-unplug srptd-alua srptd-hostile srptd-crash srptd-flush srptd-pr srptd-tmf dm kernel-target-smoke bench-smoke}; do
        step "VM test: $t"
        case $t in
            bench-smoke) bench/smoke.sh ;;   # host side: boots its own VM
            # 200 logins in the loop instead of 1000 (about 0.7 s each under
            # TCG on a loaded host); run the script directly for 1000.
            srptd-hostile) scripts/vm-run.sh tests/vm/srptd-hostile.sh 200 ;;
            # Opt-in (VM_TESTS=srptd-1m-writes): five minutes of 1 MiB writes,
            # no reconnect or QP error, a 2 s latency bound (the stall is
            # ~11 s). Out of the default list while the rxe-triggered
            # stall still happens in about one run in two (docs/stalls.md).
            srptd-1m-writes) scripts/vm-run.sh tests/vm/srptd-1m-writes.sh 300 srptd maxlat=2000 ;;
            *) scripts/vm-run.sh "tests/vm/$t.sh" ;;
        esac
    done
fi
step "all tests passed"
