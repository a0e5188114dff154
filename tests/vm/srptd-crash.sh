#!/usr/bin/env bash
# Guest script: crash consistency. srptd serves a file LUN (ext4 over a
# loop device) and a block-device LUN (a second loop device); the kernel
# initiator writes every block of both with fio (crc32c verify headers,
# random order, QD 32); srptd is killed with SIGKILL in the middle of the
# writes and started again on the same LUNs. ib_srp reconnects
# (reconnect_delay=2) and the SCSI layer retries what was in flight
# (DID_RESET); then fio reads back everything it wrote: no I/O error and
# zero mismatches, i.e. no acknowledged write was lost and no retried one
# landed wrong. Repeated for <rounds> kills (default 2), at a different
# point of the write phase each time.
#
# Usage (host): scripts/vm-run.sh tests/vm/srptd-crash.sh [rounds]
# vm-cpus: 2
# vm-timeout: 1500
set -euo pipefail
. "$REPO/tests/vm/lib.sh"
vm_trap_failures

ROUNDS=${1:-2}
W=/tmp/crash
MNT=$W/store
mkdir -p "$MNT"

rxe_setup
modprobe loop && modprobe ext4 || vm_die "modprobe loop ext4"
truncate -s 160M "$W/fs.img"
mkfs.ext4 -q -F "$W/fs.img"
FSDEV=$(losetup -f --show "$W/fs.img")
mount "$FSDEV" "$MNT"
truncate -s 48M "$MNT/lun0.img"
truncate -s 48M "$W/blk.img"
BLK=$(losetup -f --show "$W/blk.img")
LUNS=(--lun "file:$MNT/lun0.img" --lun "file:$BLK" --port "$SRP_PORT" --device "$RXE_DEV" --allow ANY)

# writes_done <dev...>: writes completed on these disks so far (sum).
writes_done() {
    local d n=0 r x w
    for d in "$@"; do
        read -r r x x x w x < "/sys/block/${d#/dev/}/stat"
        n=$(( n + w ))
    done
    echo "$n"
}

srptd_start "${LUNS[@]}"
# fast_io_fail_tmo and dev_loss_tmo well beyond the restart: I/O waits for
# the reconnect instead of failing.
SRP_VENDOR=SRPTD srp_login "$SRPTD_ID_EXT" "$SRPTD_IOC_GUID" 2 \
    reconnect_delay=2 fast_io_fail_tmo=60 dev_loss_tmo=120 >/dev/null
D0=$(srp_lun_dev 0)
D1=$(srp_lun_dev 1)
vm_log "LUN 0 (file) $D0, LUN 1 (block device) $D1"

reconnects_before=$(srp_reconnects)
for round in $(seq 1 "$ROUNDS"); do
    out=$VM_RESULTS/fio-crash-$round.txt
    state=$W/state-$round
    mkdir -p "$state"
    # Kill after a different share of the 2 x 12288 writes each round.
    kill_at=$(( 2 * 12288 * round / (ROUNDS + 1) ))
    base=$(writes_done "$D0" "$D1")
    vm_log "round $round: fio writes every 4 KiB block of both LUNs; SIGKILL after $kill_at writes"
    (cd "$state" && fio --direct=1 --ioengine=libaio --rw=randwrite --bs=4k --iodepth=32 \
        --size=48M --verify=crc32c --verify_fatal=1 --do_verify=1 --verify_backlog=0 \
        --name=file --filename="$D0" --name=blk --filename="$D1" \
        --output="$out") &
    fio_pid=$!
    until [ $(( $(writes_done "$D0" "$D1") - base )) -ge "$kill_at" ]; do
        _pid_gone "$fio_pid" && { cat "$out" >&2 || true; vm_die "round $round: fio ended before the kill point"; }
        sleep 0.05
    done
    kill -KILL "$SRPTD_PID"
    wait "$SRPTD_PID" 2>/dev/null || true
    SRPTD_PID=
    vm_log "round $round: srptd killed after $(( $(writes_done "$D0" "$D1") - base )) writes; restarting it"
    cp "$VM_RESULTS/srptd.log" "$VM_RESULTS/srptd-killed-$round.log"
    srptd_start "${LUNS[@]}"
    rc=0
    wait "$fio_pid" || rc=$?
    grep -E 'err=|IOPS=' "$out" >&2 || true
    if [ "$rc" != 0 ] || grep -cE 'err= *[1-9]' "$out" >/dev/null; then
        cat "$out" >&2
        vm_die "round $round: fio failed (rc $rc) after srptd was killed mid-write"
    fi
    vm_log "round $round: every block read back as written"
done
reconnects=$(( $(srp_reconnects) - reconnects_before ))
vm_log "ib_srp reconnected $reconnects times over $ROUNDS kills"
[ "$reconnects" -ge "$ROUNDS" ] || vm_die "expected at least $ROUNDS reconnects, saw $reconnects"

srp_logout_all
srptd_stop || vm_die "srptd exited non-zero at the end"
[ "$(srptd_counter leaked-channels)" = 0 ] || vm_die "srptd leaked channels"
umount "$MNT"
vm_log "PASS srptd-crash ($ROUNDS kills)"
