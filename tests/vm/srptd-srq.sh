#!/usr/bin/env bash
# Guest script: srptd in shared receive queue mode (--srq) with a RAM LUN.
#  1. The kernel initiator logs in with two channels and uses immediate
#     data; fio verifies 4k and 128k random writes at QD 32.
#  2. Logout / login a few times; SIGTERM: exit 0, no leaked channels, no
#     SRQ slot lost.
#  3. Device removal: `rdma link delete rxe0` while logged in. srptd must
#     neither crash nor hang, must free the device so that the delete can
#     finish, and must serve the device again once it is added back.
#     SIGTERM with the initiator logged in: exit 0, nothing leaked.
set -euo pipefail
. "$REPO/tests/vm/lib.sh"
vm_trap_failures

LOG=$VM_RESULTS/srptd.log
SRPTD_ARGS=(--srq --lun ram:256M --port "$SRP_PORT" --device "$RXE_DEV" --allow ANY)
strip() { sed 's/\x1b\[[0-9;]*m//g' "$@"; }

# add_target again (ib_srp loaded) and wait for the disk.
srp_add() {
    local line="id_ext=$SRPTD_ID_EXT,ioc_guid=$SRPTD_IOC_GUID,dest=$RXE_ADDR:$SRP_PORT"
    vm_log "add_target $line"
    echo "$line" > "/sys/class/infiniband_srp/srp-$RXE_DEV-1/add_target" ||
        { vm_die "add_target failed: $(dmesg | tail -n 5)"; return 1; }
    wait_for_disk SRPTD 30
}

check_summary() {
    local what=$1 line
    line=$(grep 'srptd: stopped:' "$LOG" | tail -n1)
    vm_log "$what: $line"
    echo "$line" | grep -q 'leaked-channels 0 ' || { vm_die "$what: leaked channels"; return 1; }
    echo "$line" | grep -q 'leaked-srq-slots 0$' || { vm_die "$what: SRQ slots lost"; return 1; }
}

rxe_setup

########################################################################
vm_log "== 1. login, immediate data, fio verify"
SRPTD_LOG=srptd=debug srptd_start "${SRPTD_ARGS[@]}"
strip "$LOG" | grep -m1 'shared receive queue' >&2 || vm_die "srptd did not create a shared receive queue"
dev=$(SRP_VENDOR=SRPTD srp_login "$SRPTD_ID_EXT" "$SRPTD_IOC_GUID" 2)
vm_log "logged in: $dev, $(srp_ch_count) channels"
[ "$(srp_ch_count)" = 2 ] || vm_die "expected 2 channels"
dmesg | grep -q 'ib_srp: using immediate data' || vm_die "ib_srp does not use immediate data"
[ "$(strip "$LOG" | grep 'login accepted' | grep -c 'immediate_data=true.*srq=true')" = 2 ] ||
    vm_die "srptd did not accept two SRQ logins with immediate data: $(strip "$LOG" | grep 'login accepted')"
fio_verify "$dev" 4 randwrite 4k 32
fio_verify "$dev" 4 randwrite 128k 32

vm_log "== 2. logout / login cycles"
for i in 1 2 3; do
    srp_logout_all
    dev=$(srp_add)
    dd if="$dev" of=/dev/null bs=64k count=64 iflag=direct 2>/dev/null
    fio_verify "$dev" 1 randwrite 4k 32 16M
    vm_log "cycle $i: $dev, $(srp_ch_count) channels"
done
srp_logout_all
srptd_stop || vm_die "srptd exited non-zero"
check_summary "after logout cycles"
imm=$(grep 'srptd: stopped:' "$LOG" | sed -n 's/.* immediate \([0-9]*\) .*/\1/p')
[ "${imm:-0}" -gt 0 ] || vm_die "no command carried immediate data"
vm_log "commands with immediate data: $imm"
cp "$LOG" "$VM_RESULTS/srptd-1.log"

########################################################################
vm_log "== 3. device removal while logged in"
SRPTD_LOG=srptd=debug srptd_start "${SRPTD_ARGS[@]}"
dev=$(srp_add)
dd if="$dev" of=/dev/null bs=64k count=16 iflag=direct 2>/dev/null
rm -f /tmp/rxe-del.rc
( rdma link delete "$RXE_DEV"; echo $? > /tmp/rxe-del.rc ) &
if ! wait_until 90 test -e /tmp/rxe-del.rc; then
    strip "$LOG" | tail -n 30 >&2
    vm_die "rdma link delete $RXE_DEV did not finish within 90 s (srptd holds the device)"
fi
[ "$(cat /tmp/rxe-del.rc)" = 0 ] || vm_die "rdma link delete failed"
_pid_gone "$SRPTD_PID" && vm_die "srptd exited on device removal"
vm_log "device removed; srptd still running"
strip "$LOG" | grep -E 'device removed|removed device|released|DeviceRemoval|connection ending' | cut -c1-200 >&2 || true
strip "$LOG" | grep -q 'removed device: channels closed, resources freed' ||
    vm_die "srptd did not free the removed device"

# Back again: the wildcard listener serves the new device.
rdma link add "$RXE_DEV" type rxe netdev "$RXE_NETDEV"
wait_until 20 _rxe_active || vm_die "$RXE_DEV not active again"
wait_until 20 test -e "/sys/class/infiniband_srp/srp-$RXE_DEV-1/add_target" ||
    vm_die "ib_srp did not come back on $RXE_DEV"
dev=$(srp_add)
vm_log "logged in again after re-adding $RXE_DEV: $dev"
fio_verify "$dev" 2 randwrite 4k 32 16M

# SIGTERM with the initiator logged in.
srptd_stop || vm_die "srptd exited non-zero"
check_summary "after device removal"
strip "$LOG" | grep -E 'shutting down|channel closed key|stopped' | cut -c1-160 >&2 || true
srp_logout_all || true
vm_log "PASS srptd-srq"
