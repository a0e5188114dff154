#!/usr/bin/env bash
# Guest script: srptd in shared receive queue mode (--srq) with a RAM LUN.
#  1. The kernel initiator logs in with two channels and uses immediate
#     data; fio verifies 4k and 128k random writes at QD 32.
#  2. Logout / login a few times; SIGTERM: exit 0, no leaked channels, no
#     SRQ slot lost.
#  3. Device removal: `rdma link delete rxe0` while logged in, with a
#     second idle device present (3a) and as the only device (3b). srptd
#     must neither crash nor hang, must free the device (and librdmacm's
#     context of it) so that the delete finishes while srptd runs, and must
#     serve the device again once it is added back. SIGTERM with the
#     initiator logged in: exit 0, nothing leaked.
# Argument `removal`: part 3 only (quicker when working on it).
# vm-timeout: 1800
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
    srp_write_add_target "$line" ||
        { vm_die "add_target failed: $(dmesg | tail -n 5)"; return 1; }
    wait_for_disk SRPTD 30
}

check_summary() {
    local what=$1
    vm_log "$what: $(strip "$LOG" | grep -o 'srptd: stopped: .*' | tail -n1)"
    [ "$(srptd_counter leaked-channels "$LOG")" = 0 ] || { vm_die "$what: leaked channels"; return 1; }
    [ "$(srptd_counter leaked-srq-slots "$LOG")" = 0 ] || { vm_die "$what: SRQ slots lost"; return 1; }
}

rxe_setup
ONLY=${1:-all}

if [ "$ONLY" = all ]; then
########################################################################
vm_log "== 1. login, immediate data, fio verify"
SRPTD_LOG=srptd=debug srptd_start "${SRPTD_ARGS[@]}"
dev=$(SRP_VENDOR=SRPTD srp_login "$SRPTD_ID_EXT" "$SRPTD_IOC_GUID" 2)
# The device state (and its SRQ) is set up at the first login on it.
strip "$LOG" | grep 'shared receive queue' | sed -n 1p | cut -c1-200 >&2 ||
    vm_die "srptd did not create a shared receive queue"
vm_log "logged in: $dev, $(srp_ch_count) channels"
[ "$(srp_ch_count)" = 2 ] || vm_die "expected 2 channels"
dmesg | grep -c 'ib_srp: using immediate data' >/dev/null || vm_die "ib_srp does not use immediate data"
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
imm=$(srptd_counter immediate "$LOG")
[ "${imm:-0}" -gt 0 ] || vm_die "no command carried immediate data"
vm_log "commands with immediate data: $imm"
cp "$LOG" "$VM_RESULTS/srptd-1.log"
else
    srp_load ch_count=2
fi

########################################################################
# Device removal. The kernel finishes removing an rxe device only once every
# process has closed its verbs contexts of it (rxe cannot disassociate
# them). srptd frees its own on DEVICE_REMOVAL, then releases librdmacm's
# cached context of it, which librdmacm itself would close only on
# re-reading a non-empty device list (docs/architecture.md, "Devices going
# away"). 3a with a second, idle device (rxe1) present, 3b with rxe0 alone:
# the last device.

# rdma link delete in the background; sets DEL_DONE_FILE when it returns.
DEL_DONE_FILE=/tmp/rxe-del.rc
start_delete() {
    rm -f "$DEL_DONE_FILE"
    vm_log "rdma link delete $1"
    ( rdma link delete "$1"; echo $? > "$DEL_DONE_FILE" ) &
}
delete_diag() {
    {
        echo "== rdma link delete stack"
        for p in $(pgrep -x rdma); do echo "pid $p"; cat "/proc/$p/stack"; done
        echo "== srptd fds"
        ls -l "/proc/$SRPTD_PID/fd"
    } > "$VM_RESULTS/removal-$1.txt" 2>&1 || true
}

vm_log "== 3a. device removal while logged in (a second, idle device present)"
ip link add dummy1 type dummy 2>/dev/null || true
ip link set dummy1 address 02:00:00:00:77:02
ip link set dummy1 up
rdma link add rxe1 type rxe netdev dummy1
SRPTD_LOG=srptd=debug srptd_start "${SRPTD_ARGS[@]}"
dev=$(srp_add)
dd if="$dev" of=/dev/null bs=64k count=16 iflag=direct 2>/dev/null
# ib_srp is removed from the device before RDMA/CM and disconnects first;
# a userspace peer (examples/srp_initiator, its own initiator port, MULTI)
# keeps a channel live until srptd sees DEVICE_REMOVAL.
"$(srp_initiator_bin)" --dest "$RXE_ADDR:$SRP_PORT" --id-ext "$SRPTD_ID_EXT" --ioc-guid "$SRPTD_IOC_GUID" \
    --port-id 5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a --multi --hold 300 > "$VM_RESULTS/srp-hold.log" 2>&1 &
HOLD_PID=$!
wait_until 30 grep -q 'accepted' "$VM_RESULTS/srp-hold.log" ||
    vm_die "srp_initiator did not log in: $(cat "$VM_RESULTS/srp-hold.log")"
vm_log "srp_initiator holds a channel (pid $HOLD_PID)"
start_delete "$RXE_DEV"
if ! wait_until 90 test -e "$DEL_DONE_FILE"; then
    delete_diag 3a
    strip "$LOG" | tail -n 20 | cut -c1-220 >&2
    cat "$VM_RESULTS/removal-3a.txt" >&2
    vm_die "rdma link delete $RXE_DEV did not finish within 90 s"
fi
[ "$(cat "$DEL_DONE_FILE")" = 0 ] || vm_die "rdma link delete failed"
_pid_gone "$SRPTD_PID" && vm_die "srptd exited on device removal"
vm_log "device removed; srptd still running"
strip "$LOG" | grep -E 'device removed|removed device|let go|connection ending' | cut -c1-200 >&2 || true
strip "$LOG" | grep -c 'removed device: channels closed, resources freed' >/dev/null ||
    vm_die "srptd did not free the removed device"
wait "$HOLD_PID" || vm_die "srp_initiator failed: $(cat "$VM_RESULTS/srp-hold.log")"
grep 'event' "$VM_RESULTS/srp-hold.log" | tail -n 2 >&2
strip "$LOG" | grep 'RDMA device removed' | grep -c 'channels=[1-9]' >/dev/null ||
    vm_die "no channel was live when srptd saw the device removal"

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
strip "$LOG" | grep -E 'shutting down|channel closed key' | cut -c1-160 >&2 || true
cp "$LOG" "$VM_RESULTS/srptd-3a.log"
srp_logout_all
rdma link delete rxe1 || vm_die "rdma link delete rxe1"

vm_log "== 3b. device removal while logged in (the only device)"
SRPTD_LOG=srptd=debug srptd_start "${SRPTD_ARGS[@]}"
dev=$(srp_add)
dd if="$dev" of=/dev/null bs=64k count=16 iflag=direct 2>/dev/null
"$(srp_initiator_bin)" --dest "$RXE_ADDR:$SRP_PORT" --id-ext "$SRPTD_ID_EXT" --ioc-guid "$SRPTD_IOC_GUID" \
    --port-id 5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5b --multi --hold 300 > "$VM_RESULTS/srp-hold-3b.log" 2>&1 &
HOLD_PID=$!
wait_until 30 grep -q 'accepted' "$VM_RESULTS/srp-hold-3b.log" ||
    vm_die "srp_initiator did not log in: $(cat "$VM_RESULTS/srp-hold-3b.log")"
start_delete "$RXE_DEV"
if ! wait_until 30 test -e "$DEL_DONE_FILE"; then
    delete_diag 3b
    strip "$LOG" | tail -n 20 | cut -c1-220 >&2
    cat "$VM_RESULTS/removal-3b.txt" >&2
    vm_die "rdma link delete of the only device did not finish within 30 s"
fi
[ "$(cat "$DEL_DONE_FILE")" = 0 ] || vm_die "rdma link delete failed"
_pid_gone "$SRPTD_PID" && vm_die "srptd exited on device removal"
vm_log "the only device removed; srptd still running"
strip "$LOG" | grep -E 'device removed|removed device|librdmacm' | cut -c1-220 >&2 || true
strip "$LOG" | grep -c "released librdmacm's context of the removed device" >/dev/null ||
    vm_die "srptd did not release librdmacm's context of the last device"
strip "$LOG" | grep 'RDMA device removed' | tail -n1 | grep -c 'channels=[1-9]' >/dev/null ||
    vm_die "no channel was live when srptd saw the removal of the last device"
wait "$HOLD_PID" || vm_die "srp_initiator failed: $(cat "$VM_RESULTS/srp-hold-3b.log")"
rdma link add "$RXE_DEV" type rxe netdev "$RXE_NETDEV"
wait_until 20 _rxe_active || vm_die "$RXE_DEV not active again"
wait_until 20 test -e "/sys/class/infiniband_srp/srp-$RXE_DEV-1/add_target" ||
    vm_die "ib_srp did not come back on $RXE_DEV"
dev=$(srp_add)
vm_log "logged in again after re-adding the only device: $dev"
fio_verify "$dev" 2 randwrite 4k 32 16M
srptd_stop || vm_die "srptd exited non-zero after the removal of its only device"
check_summary "after removing the only device"
cp "$LOG" "$VM_RESULTS/srptd-3b.log"
srp_logout_all
vm_log "PASS srptd-srq"
