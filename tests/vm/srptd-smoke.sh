#!/usr/bin/env bash
# Guest script: srptd serving a RAM LUN, the kernel initiator logs in with
# two channels, the disk appears with the right size, a short verified fio
# run, logout, SIGTERM: srptd exits 0 with no leaked channels.
set -euo pipefail
. "$REPO/tests/vm/lib.sh"
vm_trap_failures

rxe_setup
SRPTD_LOG=srptd=debug srptd_start --lun ram:64M --port "$SRP_PORT" --device "$RXE_DEV" --allow ANY
dev=$(SRP_VENDOR=SRPTD srp_login "$SRPTD_ID_EXT" "$SRPTD_IOC_GUID" 2)
vm_log "logged in: $dev"
size=$(blockdev --getsize64 "$dev")
[ "$size" = $((64 << 20)) ] || vm_die "$dev is $size bytes, expected $((64 << 20))"
dmesg | grep -E 'ib_srp|srp' | tail -n 8 >&2 || true
fio_verify "$dev" 3 randwrite 4k
fio_verify "$dev" 2 write 128k 8 32M
srp_logout_all
srptd_stop || vm_die "srptd exited non-zero"
grep -E 'stopped|login|error|WARN' "$VM_RESULTS/srptd.log" | tail -n 20 >&2 || true
grep -q 'leaked-channels 0' "$VM_RESULTS/srptd.log" || vm_die "srptd reported leaked channels"
vm_log "PASS srptd-smoke"
