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
cp "$VM_RESULTS/srptd.log" "$VM_RESULTS/srptd-1.log"

# SIGTERM while the initiator is logged in: srptd logs it out (SRP_T_LOGOUT,
# then disconnect) and exits 0 with every channel freed.
SRPTD_LOG=srptd=debug srptd_start --lun ram:64M --port "$SRP_PORT" --device "$RXE_DEV" --allow ANY
dev=$(SRP_VENDOR=SRPTD srp_login "$SRPTD_ID_EXT" "$SRPTD_IOC_GUID" 2)
dd if="$dev" of=/dev/null bs=64k count=16 iflag=direct 2>/dev/null
srptd_stop || vm_die "srptd exited non-zero on SIGTERM with an initiator logged in"
grep -q 'leaked-channels 0' "$VM_RESULTS/srptd.log" || vm_die "srptd reported leaked channels after target logout"
grep -E 'shutting down|channel closed key|stopped' "$VM_RESULTS/srptd.log" | sed 's/\x1b\[[0-9;]*m//g' | cut -c1-160 >&2 || true
srp_logout_all || true
vm_log "PASS srptd-smoke"
