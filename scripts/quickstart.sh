#!/usr/bin/env bash
# THE run command of srptd: builds it, and runs it with a RAM LUN on
# soft-RoCE with the Linux initiator logged in. On this kind of machine
# (no RDMA hardware, no RDMA in the host kernel) that happens inside a
# throwaway QEMU VM running Debian's kernel; see README "Quick start".
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/install-deps.sh
cargo build --release --bin srptd
if [ -d /sys/class/infiniband ] && [ -n "$(ls /sys/class/infiniband)" ]; then
    echo "RDMA devices present: $(ls /sys/class/infiniband | tr '\n' ' ')"
    echo "running: target/release/srptd --lun ram:256M   (Ctrl-C to stop)"
    exec target/release/srptd --lun ram:256M
fi
echo "no RDMA device on this host: running srptd on soft-RoCE inside a VM (about 2 minutes)"
exec scripts/vm-run.sh tests/vm/quickstart.sh
