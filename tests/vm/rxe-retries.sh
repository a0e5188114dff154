#!/usr/bin/env bash
# Measures, asserts nothing: rxe transport retries (the trigger of the
# fast-registration replay in docs/stalls.md) under queue-depth-1
# 512-byte direct reads, 8192 per round, one channel: srptd with a RAM
# LUN, srptd with a file LUN, then LIO with a ramdisk, in one VM. Each
# round logs rxe's completer_retry_err and ib_srp's reconnects; the
# device's non-zero counters at the end.
# Usage: scripts/vm-run.sh tests/vm/rxe-retries.sh [rounds] [srptd option...]
# vm-timeout: 1500
set -euo pipefail
. "$REPO/tests/vm/lib.sh"
vm_trap_failures
ROUNDS=${1:-3}; shift || true
rxe_setup
C=/sys/class/infiniband/$RXE_DEV/ports/1/hw_counters
load() {
    local dev=$1 name=$2 i r0 c0 s e
    for i in $(seq "$ROUNDS"); do
        r0=$(cat "$C/completer_retry_err"); c0=$(srp_reconnects); s=$(date +%s%N)
        dd if="$dev" of=/dev/null bs=512 count=8192 iflag=direct status=none
        e=$(( ($(date +%s%N) - s) / 1000000 ))
        vm_log "$name round $i: 8192 reads of 512 B in $e ms, completer_retry_err +$(( $(cat "$C/completer_retry_err") - r0 )), reconnects +$(( $(srp_reconnects) - c0 ))"
    done
}
mkdir -p /tmp/rxe-retries; truncate -s 32M /tmp/rxe-retries/lun0.img
for lun in ram:32M file:/tmp/rxe-retries/lun0.img; do
    srptd_start --lun "$lun,bs=512" --port "$SRP_PORT" --device "$RXE_DEV" --allow ANY "$@"
    d=$(SRP_VENDOR=SRPTD srp_login "$SRPTD_ID_EXT" "$SRPTD_IOC_GUID" 1)
    load "$d" "srptd-${lun%%:*}"
    srp_logout_all; srp_unload; srptd_stop
done
lio_ramdisk_target 8192
d=$(srp_login "$LIO_ID_EXT" "$LIO_IOC_GUID" 1)
load "$d" lio
srp_logout_all; srp_unload; lio_teardown
vm_log "rxe0's non-zero counters:"
for f in "$C"/*; do
    v=$(cat "$f")
    if [ "$v" != 0 ]; then echo "  ${f##*/} $v" >&2; fi
done
