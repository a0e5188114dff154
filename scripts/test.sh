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

step "cargo test --workspace (with the single-node Ceph of tests/rbd.rs)"
# tests/rbd.rs runs against it (SRPTD_TEST_CEPH_CONF, or a cluster of
# its own: only its daemons, stopped by pid file whatever happens).
if [ -z "${SRPTD_TEST_CEPH_CONF:-}" ]; then
    CEPH_TEST_DIR=$(mktemp -d /tmp/srptd-ceph-ci.XXXXXX)
    trap 'scripts/ceph-test-cluster.sh stop "$CEPH_TEST_DIR" || true' EXIT
    SRPTD_TEST_CEPH_CONF=$(scripts/ceph-test-cluster.sh start "$CEPH_TEST_DIR" | sed -n 's/^conf=//p')
    export SRPTD_TEST_CEPH_CONF
fi
cargo test --workspace
if [ -n "${CEPH_TEST_DIR:-}" ]; then
    scripts/ceph-test-cluster.sh stop "$CEPH_TEST_DIR"
fi

step "systemd unit: systemd-analyze verify contrib/srptd.service"
scripts/check-unit.sh

step "fuzz smoke (each cargo-fuzz target briefly from its seeds; skipped without nightly/cargo-fuzz)"
scripts/fuzz-smoke.sh

if [ "${SKIP_VM_TESTS:-0}" = 1 ]; then
    step "VM tests skipped (SKIP_VM_TESTS=1)"
else
    step "build srptd for the VM tests"
    cargo build --release --bin srptd --example srp_initiator --example srp_hostile --example deny_io_uring
    for t in ${VM_TESTS:-srptd-smoke srptd-admin srptd-live srptd-e2e srptd-1m-writes srptd-srq srptd-unplug srptd-alua srptd-hostile srptd-crash srptd-flush srptd-uring srptd-rbd srptd-pr srptd-tmf dm kernel-target-smoke bench-smoke}; do
        step "VM test: $t"
        case $t in
            bench-smoke) bench/smoke.sh ;;   # host side: boots its own VM
            *) scripts/vm-run.sh "tests/vm/$t.sh" ;;
        esac
    done
fi
step "all tests passed"
