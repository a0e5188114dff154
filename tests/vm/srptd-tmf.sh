#!/usr/bin/env bash
# Guest script: task management under I/O. The kernel initiator logs in to
# srptd with two channels (a block LUN on dm-delay, so WRITEs wait at
# srptd);
# while fio writes with crc32c verification, sg_reset sends a LOGICAL UNIT
# RESET (-d, ib_srp srp_reset_device) and a target reset (-t) on the disk.
# fio must see no error and no command may stall (max latency < 5 s, no
# ib_srp abort after a SCSI timeout), srptd must log the task management
# functions, and leak no channel at exit.
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
# The LUN is a block device that delays each WRITE (dm-delay, 10 ms), served
# O_DIRECT through io_uring (ib_srp's misaligned immediate data goes through
# a bounce chunk, not the page cache): fio's WRITEs sit at srptd for at
# least 10 ms each, so every reset finds tasks there to abort, however fast
# or loaded the host is. (Not the worker pool: it writes misaligned
# immediate data through the page cache, which absorbs the delay.)
modprobe loop && modprobe dm-delay || vm_die "modprobe loop dm-delay"
LOOP=$(losetup -f --show "$W/lun0.img")
dmsetup create srptd-slow --table "0 $(blockdev --getsz "$LOOP") delay $LOOP 0 0 $LOOP 0 10" ||
    vm_die "dmsetup create delay"
vm_on_exit "dmsetup remove srptd-slow; losetup -d $LOOP"
srptd_start --lun "file:/dev/mapper/srptd-slow" --port "$SRP_PORT" --device "$RXE_DEV" --allow ANY
SRP_VENDOR=SRPTD srp_login "$SRPTD_ID_EXT" "$SRPTD_IOC_GUID" 2 >/dev/null
D=$(srp_lun_dev 0)
vm_log "LUN 0 is $D"

# fio as fio_verify runs it, with JSON output for the latency check.
FIO_OUT=$VM_RESULTS/fio-tmf.json
vm_log "fio verify randwrite bs=4k qd=32 runtime=30s on $D"
fio --name=verify --filename="$D" --direct=1 --ioengine=libaio \
    --rw=randwrite --bs=4k --iodepth=32 --size=64M --runtime=30 \
    --verify=crc32c --verify_fatal=1 --do_verify=1 --verify_state_save=0 \
    --output-format=json --output="$FIO_OUT" >&2 &
FIO=$!
DMESG_START=$(dmesg | wc -l)
# Each reset goes out while WRITEs are in flight, so that it aborts some.
writes_in_flight() {
    local i r w
    for i in $(seq 200); do
        read -r r w <"/sys/block/${D#/dev/}/inflight"
        [ "$w" -gt 0 ] && return 0
        sleep 0.05
    done
    vm_log "no WRITE in flight before the reset"
}
sleep 4
for r in -d -t -d; do
    writes_in_flight
    vm_log "sg_reset $r $D"
    if ! sg_reset "$r" "$D" >&2; then
        vm_log "sg_reset $r failed: $(dmesg | tail -n 3)"
        [ "$r" = -t ] || vm_die "sg_reset $r"
    fi
    sleep 4
done
wait "$FIO" || vm_die "fio saw errors across the resets"
# No task may stall across the resets: a LUN's tasks aborted by a reset
# are answered (TASK ABORTED) and retried at once, not left to the 30 s
# SCSI timeout and ib_srp's ABORT TASK.
read -r ferr lat_max_ms < <(python3 -c '
import json, sys
j = json.load(open(sys.argv[1]))["jobs"][0]
print(j["error"], max(j[d]["lat_ns"]["max"] for d in ("read", "write")) // 1000000)
' "$FIO_OUT")
vm_log "fio err=$ferr max latency ${lat_max_ms} ms"
[ "$ferr" = 0 ] || vm_die "fio err=$ferr"
[ "$lat_max_ms" -lt 5000 ] || vm_die "a command took ${lat_max_ms} ms across the resets (stalled)"
aborts=$(dmesg | tail -n +"$((DMESG_START + 1))" | grep -cE 'SRP abort|ABORT' || true)
[ "$aborts" = 0 ] || { dmesg | tail -n +"$((DMESG_START + 1))" | grep -E 'SRP abort|ABORT' | sed -n 1,10p >&2; vm_die "ib_srp sent $aborts aborts after the resets (commands timed out)"; }
resets=$(sed 's/\x1b\[[0-9;]*m//g' "$VM_RESULTS/srptd.log" | grep -c 'task management function=8' || true)
vm_log "srptd logged $resets LUN RESETs"
[ "$resets" -ge 2 ] || vm_die "srptd logged $resets LUN RESETs, expected at least 2"
dmesg | grep -iE 'srp|reset' | tail -n 20 >&2 || true

srp_logout_all
srptd_stop || vm_die "srptd exited non-zero"
[ "$(srptd_counter leaked-channels)" = 0 ] || vm_die "srptd leaked channels"
# The delay reached srptd only if io_uring wrote (see the LUN above).
u=$(srptd_counter uring-commands)
[ "$u" -gt 1000 ] || vm_die "only $u commands ran on io_uring: the page cache may have absorbed the delay"
# The resets did abort tasks (else the stall check above proves nothing).
aborted=$(sed 's/\x1b\[[0-9;]*m//g' "$VM_RESULTS/srptd.log" | grep 'driver::control: channel closed' |
    grep -oE 'task_mgmt: [0-9]+, aborted: [0-9]+' | awk '{ s += $4 } END { print s + 0 }')
vm_log "the resets aborted $aborted tasks"
[ "$aborted" -gt 0 ] || vm_die "the resets aborted no task: nothing was in flight"
vm_log "PASS"
