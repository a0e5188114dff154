#!/bin/sh
# Guest script: soft-RoCE on a dummy netdev, then examples/rdma_loopback.
# Run from the host (TCG, ~17 s to boot):
#   cargo build --example rdma_loopback
#   vng -r /boot/vmlinuz-6.1.0-56-amd64 --disable-kvm --force-9p --memory 2G --cpus 2 \
#       -e "$PWD/tests/vm/rdma-loopback.sh"
# Environment: CONNS (default 50), BIN (default target/debug/examples/rdma_loopback).
set -eu
HERE=$(cd "$(dirname "$0")/../.." && pwd)
BIN=${BIN:-$HERE/target/debug/examples/rdma_loopback}
CONNS=${CONNS:-50}
ADDR=169.254.77.1

echo "== guest kernel $(uname -r)"
modprobe rdma_rxe
modprobe rdma_ucm
modprobe ib_umad
ip link add dummy0 type dummy
ip link set dummy0 address 02:00:00:00:77:01
ip link show dummy0
ip addr add $ADDR/32 dev dummy0
ip link set dummy0 up
rdma link add rxe0 type rxe netdev dummy0
rdma link show
echo "node_guid $(cat /sys/class/infiniband/rxe0/node_guid)"

rc=0
RUST_LOG=${RUST_LOG:-warn} "$BIN" "$ADDR:7471" "$CONNS" || rc=$?
echo "== resources after exit"
rdma resource show
dmesg | grep -iE "rxe|rdma|infiniband" | tail -n 20 || true
echo "RDMA_LOOPBACK_RC=$rc"
exit $rc
