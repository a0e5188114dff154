#!/usr/bin/env bash
# Guest script: file and block-device LUNs on the pollers' io_uring, with
# the kernel initiator.
#
# srptd serves LUN 0 = a memory-backed null_blk device (discard on, no
# write-zeroes: UNMAP is BLKDISCARD and LBPRZ = 0) and LUN 1 = a file on
# ext4 (UNMAP punches holes, LBPRZ = 1). Checked:
#  - fio crc32c verify at 4k, 128k and 1M, QD32, on both LUNs;
#  - the thin-provisioning answers (VPD B2, READ CAPACITY(16)) and that
#    blkdiscard and sg_write_same --unmap behave as they promise (zeros
#    where LBPRZ = 1; WRITE SAME with UNMAP still writes zeros where
#    LBPRZ = 0; the file's blocks are freed);
#  - the device's block limits reach VPD B0 (optimal transfer length);
#  - ext4 on each LUN keeps its files across a logout/login, across an
#    srptd restart and on the worker pool;
#  - srptd's exit line counts the commands the io_uring ran, and with
#    --no-io-uring everything runs on the worker pool, as it does when
#    io_uring_setup fails (a seccomp filter, examples/deny_io_uring.rs),
#    which srptd says once; the file LUN's data never enters the page
#    cache on either path (misaligned immediate data is bounced);
#  - bad input: a character device, and a read-only device without ,ro,
#    are refused with an error naming the LUN's field.
#
# Usage (host): scripts/vm-run.sh tests/vm/srptd-uring.sh
# vm-cpus: 2
# vm-timeout: 1800
set -euo pipefail
. "$REPO/tests/vm/lib.sh"
vm_trap_failures

W=/tmp/uring
mkdir -p "$W/fs" "$W/m"
rxe_setup
modprobe ext4 || vm_die "modprobe ext4"

# Two memory-backed null_blk devices through configfs: nullb0 for LUN 0
# (discard on), nullb1 holds the ext4 with LUN 1's file.
modprobe null_blk nr_devices=0 || vm_die "modprobe null_blk"
mountpoint -q /sys/kernel/config || mount -t configfs none /sys/kernel/config
for i in 0 1; do
    d=/sys/kernel/config/nullb/nullb$i
    mkdir "$d"
    echo 512 > "$d/size"           # MiB
    echo 1 > "$d/memory_backed"
    echo 4096 > "$d/blocksize"
    [ "$i" = 0 ] && echo 1 > "$d/discard"
    echo 1 > "$d/power"
done
wait_until 10 test -b /dev/nullb1 || vm_die "no /dev/nullb1"
vm_log "nullb0: lbs $(cat /sys/block/nullb0/queue/logical_block_size) discard_max $(cat /sys/block/nullb0/queue/discard_max_bytes) write_zeroes_max $(cat /sys/block/nullb0/queue/write_zeroes_max_bytes) optimal_io $(cat /sys/block/nullb0/queue/optimal_io_size)"
mkfs.ext4 -q -F /dev/nullb1
mount /dev/nullb1 "$W/fs"
IMG=$W/fs/lun1.img
truncate -s 256M "$IMG"
# Part of the file written through the page cache and left there dirty, as
# a freshly copied image would be: srptd writes it back and drops it at
# open, or non-blocking O_DIRECT on io_uring would refuse those ranges.
dd if=/dev/urandom of="$IMG" bs=1M count=16 conv=notrunc status=none
cached() { fincore --bytes --noheadings --output RES "$IMG" | tr -d " "; }
[ "$(cached)" -gt 0 ] || vm_die "the image has no pages in the page cache to begin with"

# --- bad input first (srptd must refuse to start) -----------------------
bad_start() {
    local want=$1; shift
    local log=$VM_RESULTS/srptd-bad.log rc=0
    timeout 30 "$(srptd_bin)" "$@" --port "$SRP_PORT" --device "$RXE_DEV" --allow ANY > "$log" 2>&1 || rc=$?
    [ "$rc" != 0 ] || vm_die "srptd started with $*"
    grep -q -- "$want" "$log" || { cat "$log" >&2; vm_die "srptd's error for $* does not say '$want'"; }
    vm_log "refused as expected ($*): $(grep -m1 -- "$want" "$log")"
}
bad_start "not a regular file or block device" --lun file:/dev/null
blockdev --setro /dev/nullb0
bad_start "add ,ro" --lun file:/dev/nullb0
blockdev --setrw /dev/nullb0

LUNS=(--lun file:/dev/nullb0,bs=4096 --lun "file:$IMG,bs=4096")
start() {
    srptd_start "${LUNS[@]}" --port "$SRP_PORT" --device "$RXE_DEV" --allow ANY
    grep -q "file I/O on io_uring" "$VM_RESULTS/srptd.log" ||
        { cat "$VM_RESULTS/srptd.log" >&2; vm_die "srptd does not say it uses io_uring"; }
    SRP_VENDOR=SRPTD srp_login "$SRPTD_ID_EXT" "$SRPTD_IOC_GUID" 2 >/dev/null
    D0=$(srp_lun_dev 0)
    D1=$(srp_lun_dev 1)
}
start
vm_log "LUN 0 $D0 (null_blk), LUN 1 $D1 (file on ext4)"
[ "$(cached)" = 0 ] || vm_die "srptd left $(cached) bytes of $IMG in the page cache"

# --- data integrity ------------------------------------------------------
for d in "$D0" "$D1"; do
    fio_verify "$d" 4 randwrite 4k 32 128M
    fio_verify "$d" 4 randwrite 128k 32 128M
    fio_verify "$d" 4 write 1M 32 128M
done

# --- thin provisioning answers -------------------------------------------
vm_log "LUN 0: lbpme=$(lbpme "$D0") lbprz=$(lbprz "$D0"); LUN 1: lbpme=$(lbpme "$D1") lbprz=$(lbprz "$D1")"
sg_vpd -p bl "$D0" > "$VM_RESULTS/vpd-b0-lun0.txt"
sg_vpd -p lbpv "$D0" > "$VM_RESULTS/vpd-b2-lun0.txt"
sg_vpd -p bl "$D1" > "$VM_RESULTS/vpd-b0-lun1.txt"
[ "$(lbprz "$D0")" = 0 ] || vm_die "LUN 0 (discard only) must report LBPRZ=0"
[ "$(lbprz "$D1")" = 1 ] || vm_die "LUN 1 (file) must report LBPRZ=1"
[ "$(lbpme "$D0")" = 1 ] && [ "$(lbpme "$D1")" = 1 ] || vm_die "both LUNs must be thin (LBPME=1)"
grep -qi "maximum unmap lba count: [1-9]" "$VM_RESULTS/vpd-b0-lun0.txt" || vm_die "LUN 0: no MAXIMUM UNMAP LBA COUNT"

nonzero() { # <dev> <offset_bytes> <len_bytes>: count of non-zero bytes
    dd if="$1" bs=4096 skip=$(( $2 / 4096 )) count=$(( $3 / 4096 )) iflag=direct status=none |
        tr -d '\0' | wc -c
}
for d in "$D0" "$D1"; do
    dd if=/dev/urandom of="$d" bs=1M count=8 oflag=direct status=none
done
used0=$(stat -c %b "$IMG")
blkdiscard -o 0 -l $((4 << 20)) "$D1" || vm_die "blkdiscard on the file LUN"
[ "$(nonzero "$D1" 0 $((4 << 20)))" = 0 ] || vm_die "file LUN: discarded range does not read as zeros (LBPRZ=1)"
used1=$(stat -c %b "$IMG")
vm_log "file LUN: blkdiscard of 4 MiB: $used0 -> $used1 blocks allocated"
[ "$used1" -lt "$used0" ] || vm_die "blkdiscard freed no space in the file"
blkdiscard -o 0 -l $((4 << 20)) "$D0" || vm_die "blkdiscard on the null_blk LUN"
# WRITE SAME(16) with UNMAP and a zero block: zeros on both (LUN 0 must
# write them, LBPRZ being 0).
for d in "$D0" "$D1"; do
    sg_write_same --16 --unmap --lba=2048 --num=256 --in=/dev/zero "$d" ||
        vm_die "sg_write_same --unmap on $d"
    [ "$(nonzero "$d" $((2048 * 4096)) $((256 * 4096)))" = 0 ] || vm_die "$d: WRITE SAME(UNMAP) range is not zeros"
    head -c 4096 /dev/urandom > "$W/blk"
    sg_write_same --16 --lba=4096 --num=16 --in="$W/blk" "$d" || vm_die "sg_write_same on $d"
    for i in 0 5 15; do
        dd if="$d" bs=4096 skip=$((4096 + i)) count=1 iflag=direct status=none | cmp -s - "$W/blk" ||
            vm_die "$d: WRITE SAME block $i differs"
    done
done

# --- ext4 across logout/login and a restart --------------------------------
ext4_fill "$D0" "$W/lun0"
ext4_fill "$D1" "$W/lun1"
check_fs() {
    ext4_check "$D0" "$W/lun0" "$1 (LUN 0, null_blk)"
    ext4_check "$D1" "$W/lun1" "$1 (LUN 1, file)"
}
srp_logout_all
SRP_VENDOR=SRPTD srp_login "$SRPTD_ID_EXT" "$SRPTD_IOC_GUID" 2 >/dev/null
D0=$(srp_lun_dev 0); D1=$(srp_lun_dev 1)
check_fs "after logout/login"
srp_logout_all
srptd_stop || vm_die "srptd exited non-zero"
cp "$VM_RESULTS/srptd.log" "$VM_RESULTS/srptd-1.log"
n=$(srptd_counter uring-commands)
w=$(srptd_counter worker-jobs)
vm_log "first srptd: uring-commands $n, worker-jobs $w"
[ "$n" -gt 1000 ] && [ "$w" -lt "$n" ] || vm_die "only $n commands ran on io_uring ($w on the worker pool)"
[ "$(srptd_counter leaked-channels)" = 0 ] || vm_die "srptd leaked channels"
start
check_fs "after an srptd restart"
srp_logout_all
srptd_stop || vm_die "srptd exited non-zero"

# --- the worker pool where io_uring is turned off ---------------------------
srptd_start "${LUNS[@]}" --no-io-uring --port "$SRP_PORT" --device "$RXE_DEV" --allow ANY
SRP_VENDOR=SRPTD srp_login "$SRPTD_ID_EXT" "$SRPTD_IOC_GUID" 2 >/dev/null
D0=$(srp_lun_dev 0); D1=$(srp_lun_dev 1)
check_fs "on the worker pool"
# ext4's small writes come as immediate data, misaligned in the receive
# slot: the worker pool bounces them to O_DIRECT, never the page cache.
[ "$(cached)" = 0 ] || vm_die "the worker pool left $(cached) bytes of $IMG in the page cache"
srp_logout_all
srptd_stop || vm_die "srptd exited non-zero"
[ "$(srptd_counter uring-commands)" = 0 ] || vm_die "--no-io-uring: commands still went to io_uring"

# --- io_uring refused by the system (seccomp, as in a container) ------------
# io_uring_setup fails with EPERM: srptd says so once (two pollers try)
# and serves the same LUNs on the worker pool.
SRPTD_WRAPPER=$(example_bin deny_io_uring) srptd_start "${LUNS[@]}" --port "$SRP_PORT" --device "$RXE_DEV" --allow ANY
n=$(grep -c "io_uring unavailable" "$VM_RESULTS/srptd.log" || true)
[ "$n" = 1 ] || { cat "$VM_RESULTS/srptd.log" >&2; vm_die "srptd said 'io_uring unavailable' $n times, expected once"; }
vm_log "seccomp: $(grep -m1 "io_uring unavailable" "$VM_RESULTS/srptd.log" | sed 's/\x1b\[[0-9;]*m//g')"
SRP_VENDOR=SRPTD srp_login "$SRPTD_ID_EXT" "$SRPTD_IOC_GUID" 2 >/dev/null
D0=$(srp_lun_dev 0); D1=$(srp_lun_dev 1)
check_fs "with io_uring refused"
fio_verify "$D1" 2 randwrite 4k 32 32M
[ "$(cached)" = 0 ] || vm_die "io_uring refused: $(cached) bytes of $IMG in the page cache"
srp_logout_all
srptd_stop || vm_die "srptd exited non-zero"
[ "$(srptd_counter uring-commands)" = 0 ] || vm_die "io_uring refused: commands still went to io_uring"
w=$(srptd_counter worker-jobs)
[ "$w" -gt 1000 ] || vm_die "io_uring refused: only $w commands on the worker pool"
vm_log "io_uring refused: worker-jobs $w"
umount "$W/fs"
vm_log "PASS"
