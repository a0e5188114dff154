#!/usr/bin/env bash
# Guest script: task management under I/O. The kernel initiator logs in to
# srptd with two channels (a file LUN, so WRITEs run on the worker pool);
# while fio writes with crc32c verification, sg_reset sends a LOGICAL UNIT
# RESET (-d, ib_srp srp_reset_device) and a target reset (-t) on the disk.
# fio must see no error, srptd must log the task management functions,
# and leak no channel at exit.
#
# Usage (host): scripts/vm-run.sh tests/vm/srptd-tmf.sh
# vm-cpus: 2
# vm-timeout: 600
set -euo pipefail
. "$REPO/tests/vm/lib.sh"
vm_trap_failures

W=/tmp/tmf
mkdir -p "$W"
rxe_setup
truncate -s 128M "$W/lun0.img"
srptd_start --lun "file:$W/lun0.img,bs=512" --port "$SRP_PORT" --device "$RXE_DEV" --allow ANY
SRP_VENDOR=SRPTD srp_login "$SRPTD_ID_EXT" "$SRPTD_IOC_GUID" 2 >/dev/null
D=$(srp_lun_dev 0)
vm_log "LUN 0 is $D"

fio_verify "$D" 20 randwrite 4k 32 64M &
FIO=$!
sleep 4
for r in -d -t -d; do
    vm_log "sg_reset $r $D"
    if ! sg_reset "$r" "$D" >&2; then
        vm_log "sg_reset $r failed: $(dmesg | tail -n 3)"
        [ "$r" = -t ] || vm_die "sg_reset $r"
    fi
    sleep 4
done
wait "$FIO" || vm_die "fio saw errors across the resets"
resets=$(sed 's/\x1b\[[0-9;]*m//g' "$VM_RESULTS/srptd.log" | grep -c 'task management function=8' || true)
vm_log "srptd logged $resets LUN RESETs"
[ "$resets" -ge 2 ] || vm_die "srptd logged $resets LUN RESETs, expected at least 2"
dmesg | grep -iE 'srp|reset' | tail -n 20 >&2 || true

srp_logout_all
srptd_stop || vm_die "srptd exited non-zero"
[ "$(srptd_counter leaked-channels)" = 0 ] || vm_die "srptd leaked channels"
vm_log "PASS"
