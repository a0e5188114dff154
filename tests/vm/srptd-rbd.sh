#!/usr/bin/env bash
# Guest script: a Ceph RBD LUN with the kernel initiator.
#
# A single-node Ceph (scripts/ceph-test-cluster.sh: one monitor, one
# memstore OSD, on 127.0.0.1 inside the VM) holds image rbd/test; srptd
# serves it as LUN 0 (rbd:rbd/test,conf=...). Checked:
#  - bad input first: a missing image, a missing pool and an unreachable
#    cluster (a conf naming a dead port) each stop srptd at start with an
#    error naming the LUN;
#  - fio crc32c verify at 4k, 128k and 1M, QD32;
#  - the thin-provisioning answers (LBPME, LBPRZ = 1) and that blkdiscard
#    and sg_write_same (--unmap, and a pattern) read back as promised;
#  - `rbd resize` by another client: READ CAPACITY follows, the initiator
#    got CAPACITY DATA HAS CHANGED;
#  - ext4 keeps its files across a logout/login and an srptd restart;
#  - srptd's exit line counts the commands the pollers sent to librbd;
#  - `rbd bench` (librbd alone) figures beside fio's through srptd, the
#    exclusive lock moving to it and back; srptd's `ctl stats` and what
#    its threads wait in during a fio run (stats.txt, srptd-threads.txt).
#
# Usage (host): scripts/vm-run.sh tests/vm/srptd-rbd.sh
# vm-cpus: 2
# vm-timeout: 2400
set -euo pipefail
. "$REPO/tests/vm/lib.sh"
vm_trap_failures

W=/tmp/rbd
mkdir -p "$W/m"
ip link set lo up
rxe_setup
modprobe ext4 || vm_die "modprobe ext4"

CEPH_DIR=$W/ceph
cluster() { CEPH_TEST_IMAGE_SIZE=256M "$REPO/scripts/ceph-test-cluster.sh" "$@" "$CEPH_DIR"; }
stop_cluster() {
    cluster stop || true
    cp -r "$CEPH_DIR/log" "$VM_RESULTS/ceph-log" 2>/dev/null || true
}
vm_on_exit stop_cluster
t0=$(cut -d. -f1 /proc/uptime)
CONF=$(cluster start | sed -n 's/^conf=//p')
[ -n "$CONF" ] || vm_die "the test cluster did not start"
vm_log "Ceph test cluster up in $(( $(cut -d. -f1 /proc/uptime) - t0 )) s: $CONF"
RBD() { timeout 120 rbd -c "$CONF" "$@"; }

# --- bad input first (srptd must refuse to start) -----------------------
bad_start() {
    local want=$1; shift
    local log=$VM_RESULTS/srptd-bad.log rc=0 s0
    s0=$(cut -d. -f1 /proc/uptime)
    timeout 120 "$(srptd_bin)" "$@" --port "$SRP_PORT" --device "$RXE_DEV" --allow ANY > "$log" 2>&1 || rc=$?
    [ "$rc" != 0 ] && [ "$rc" != 124 ] || { cat "$log" >&2; vm_die "srptd started (or hung) with $*"; }
    grep -q -- "$want" "$log" || { cat "$log" >&2; vm_die "srptd's error for $* does not say '$want'"; }
    vm_log "refused in $(( $(cut -d. -f1 /proc/uptime) - s0 )) s ($*): $(grep -m1 -- "$want" "$log")"
}
bad_start 'image "nope" does not exist in pool "rbd"' --lun "rbd:rbd/nope,conf=$CONF"
bad_start 'pool "nopool" does not exist' --lun "rbd:nopool/test,conf=$CONF"
printf '[global]\nmon host = 127.0.0.1:9\nauth client required = none\n' > "$W/dead.conf"
bad_start 'cannot connect to the Ceph cluster' --lun "rbd:rbd/test,conf=$W/dead.conf"
grep -q -- '--lun "rbd:rbd/test,conf=' "$VM_RESULTS/srptd-bad.log" || vm_die "the error does not name the LUN (its --lun flag)"

LUNS=(--lun "rbd:rbd/test,conf=$CONF")
SOCK=$W/admin.sock
start() {
    srptd_start "${LUNS[@]}" --port "$SRP_PORT" --device "$RXE_DEV" --allow ANY --admin-socket "$SOCK"
    SRP_VENDOR=SRPTD srp_login "$SRPTD_ID_EXT" "$SRPTD_IOC_GUID" 2 >/dev/null
    D0=$(srp_lun_dev 0)
}
start
vm_log "LUN 0 $D0 on rbd/test: $(sg_readcap -l "$D0" | grep -i 'device size' | sed -n 1p)"

# --- data integrity ------------------------------------------------------
fio_verify "$D0" 4 randwrite 4k 32 128M
fio_verify "$D0" 4 randwrite 128k 32 128M
fio_verify "$D0" 4 write 1M 32 128M

# Where srptd's time goes: its own latency figures, and what its threads
# wait in while fio runs (a poller blocked in librbd would show a futex).
"$(srptd_bin)" ctl --socket "$SOCK" stats > "$VM_RESULTS/stats.txt" 2>&1 || true
fio --name=sample --filename="$D0" --direct=1 --ioengine=libaio --rw=randwrite --bs=4k \
    --iodepth=32 --size=64M --runtime=6 --time_based --output="$VM_RESULTS/fio-sample.txt" &
fio_pid=$!
sleep 2
for i in 1 2 3 4 5; do
    for t in /proc/"$SRPTD_PID"/task/*; do
        printf '%s %s %s\n' "$(cat "$t/comm")" "$(cut -d' ' -f3 "$t/stat")" "$(cat "$t/wchan")"
    done
    sleep 0.5
done | sort | uniq -c | sort -rn > "$VM_RESULTS/srptd-threads.txt"
wait "$fio_pid" || vm_die "fio sample run"
vm_log "fio sample: $(grep -E 'IOPS=' "$VM_RESULTS/fio-sample.txt" | sed -n 1p)"
vm_log "srptd threads during it (count comm state wchan): $(grep -E 'srptd-poll' "$VM_RESULTS/srptd-threads.txt" | tr '\n' ';')"

# librbd alone, for comparison (`rbd bench` takes the exclusive lock from
# srptd and srptd takes it back at its next write: a hand-over each way).
for b in "4K 4M rand" "1M 32M seq"; do
    set -- $b
    r=$(RBD bench --io-type write --io-size "$1" --io-threads 32 --io-total "$2" --io-pattern "$3" rbd/test 2>&1 |
        grep -i "elapsed" || true)
    vm_log "rbd bench write $1 $3 QD32: $r"
done

# --- thin provisioning answers -------------------------------------------
sg_vpd -p bl "$D0" > "$VM_RESULTS/vpd-b0.txt"
sg_vpd -p lbpv "$D0" > "$VM_RESULTS/vpd-b2.txt"
vm_log "lbpme=$(lbpme "$D0") lbprz=$(lbprz "$D0")"
[ "$(lbprz "$D0")" = 1 ] && [ "$(lbpme "$D0")" = 1 ] || vm_die "an RBD LUN must report LBPME=1 LBPRZ=1"
nonzero() { # <dev> <offset_bytes> <len_bytes>: count of non-zero bytes
    dd if="$1" bs=4096 skip=$(( $2 / 4096 )) count=$(( $3 / 4096 )) iflag=direct status=none |
        tr -d '\0' | wc -c
}
dd if=/dev/urandom of="$D0" bs=1M count=8 oflag=direct status=none
used0=$(RBD du --format json rbd/test | jq '.images[0].used_size')
blkdiscard -o 0 -l $((4 << 20)) "$D0" || vm_die "blkdiscard"
[ "$(nonzero "$D0" 0 $((4 << 20)))" = 0 ] || vm_die "the discarded range does not read as zeros (LBPRZ=1)"
# Partial objects are zeroed too (write-zeroes, not a skipped discard).
blkdiscard -o $((5 << 20)) -l 8192 "$D0" || vm_die "blkdiscard of 8 KiB"
[ "$(nonzero "$D0" $((5 << 20)) 8192)" = 0 ] || vm_die "an 8 KiB discard does not read as zeros"
used1=$(RBD du --format json rbd/test | jq '.images[0].used_size')
vm_log "blkdiscard: rbd du used $used0 -> $used1 bytes"
[ "$used1" -lt "$used0" ] || vm_die "blkdiscard deallocated nothing"
sg_write_same --16 --unmap --lba=4096 --num=256 --in=/dev/zero "$D0" || vm_die "sg_write_same --unmap"
[ "$(nonzero "$D0" $((4096 * 512)) $((256 * 512)))" = 0 ] || vm_die "WRITE SAME(UNMAP) range is not zeros"
head -c 512 /dev/urandom > "$W/blk"
sg_write_same --16 --lba=8192 --num=16 --in="$W/blk" "$D0" || vm_die "sg_write_same"
for i in 0 5 15; do
    dd if="$D0" bs=512 skip=$((8192 + i)) count=1 iflag=direct status=none | cmp -s - "$W/blk" ||
        vm_die "WRITE SAME block $i differs"
done

# --- a resize by another client ----------------------------------------------
blocks() { sg_readcap -l "$D0" | sed -n 's/.*Last LBA=\([0-9]*\).*/\1/p' | sed -n 1p; }
b0=$(blocks)
RBD resize --size 320M rbd/test
grow() { [ "$(blocks)" -gt "$b0" ]; }
wait_until 30 grow || vm_die "READ CAPACITY still says last LBA $(blocks) after rbd resize"
vm_log "rbd resize: last LBA $b0 -> $(blocks)"
dmesg | grep -i "capacity data has changed" | tail -n 2 >&2 ||
    vm_log "(no CAPACITY DATA HAS CHANGED in dmesg: sg_readcap may have taken the unit attention)"

# --- ext4 across logout/login and a restart --------------------------------
ext4_fill "$D0" "$W"
check_fs() { ext4_check "$D0" "$W" "$1"; }
srp_logout_all
SRP_VENDOR=SRPTD srp_login "$SRPTD_ID_EXT" "$SRPTD_IOC_GUID" 2 >/dev/null
D0=$(srp_lun_dev 0)
check_fs "after logout/login"
srp_logout_all
srptd_stop || vm_die "srptd exited non-zero"
cp "$VM_RESULTS/srptd.log" "$VM_RESULTS/srptd-1.log"
n=$(srptd_counter rbd-commands)
w=$(srptd_counter worker-jobs)
vm_log "first srptd: rbd-commands $n, worker-jobs $w"
[ "$n" -gt 1000 ] && [ "$w" -lt "$n" ] || vm_die "only $n commands went to librbd ($w on the worker pool)"
[ "$(srptd_counter leaked-channels)" = 0 ] || vm_die "srptd leaked channels"
start
check_fs "after an srptd restart"
srp_logout_all
srptd_stop || vm_die "srptd exited non-zero"
vm_log "PASS"
