#!/usr/bin/env bash
# Guest script: SYNCHRONIZE CACHE and FUA writes reach stable storage before
# srptd answers GOOD (SBC-3 5.27 and 5.41, the FUA bit).
#
# srptd serves a block-device LUN that is a dm-log-writes target over a loop
# device. dm-log-writes logs a write only once it is durable: a write that
# completes without FUA is logged just before the next FLUSH that completes
# after it, a FUA write on completion, and a mark at once. The kernel
# initiator puts ext4 on the LUN and, <files> times, writes a file, syncs
# the file system (ext4 sends SYNCHRONIZE CACHE and FUA writes through
# ib_srp) and drops a mark in the log. Afterwards the log is replayed onto
# a blank image up to each mark (tests/vm/tools/log-writes-replay.py): that
# is what a power cut right after the sync would have left on a disk with a
# volatile cache. Each such image must mount, hold every file synced before
# the mark with its checksum, and pass e2fsck. A SYNCHRONIZE CACHE answered
# without flushing leaves the file's blocks out of the image.
#
# Usage (host): scripts/vm-run.sh tests/vm/srptd-flush.sh [files]
# vm-cpus: 2
# vm-timeout: 1200
set -euo pipefail
. "$REPO/tests/vm/lib.sh"
vm_trap_failures

N=${1:-5}
W=/tmp/flush
REPLAY=$REPO/tests/vm/tools/log-writes-replay.py
mkdir -p "$W/m" "$W/r"

rxe_setup
modprobe loop && modprobe ext4 && modprobe dm-log-writes || vm_die "modprobe loop ext4 dm-log-writes"
truncate -s 64M "$W/data.img"
truncate -s 512M "$W/log.img"
DATA=$(losetup -f --show "$W/data.img")
LOGDEV=$(losetup -f --show "$W/log.img")
dmsetup create srptd-lw --table "0 $(blockdev --getsz "$DATA") log-writes $DATA $LOGDEV" ||
    vm_die "dmsetup create log-writes"
LW=/dev/mapper/srptd-lw

srptd_start --lun "file:$LW" --port "$SRP_PORT" --device "$RXE_DEV" --allow ANY
SRP_VENDOR=SRPTD srp_login "$SRPTD_ID_EXT" "$SRPTD_IOC_GUID" 1 >/dev/null
D=$(srp_lun_dev 0)
cache=$(cat "/sys/block/${D#/dev/}/queue/write_cache")
vm_log "LUN 0 $D over $LW; the initiator sees a '$cache' cache"
[ "$cache" = "write back" ] ||
    vm_die "the initiator sees no volatile write cache, so it would send no SYNCHRONIZE CACHE"

mkfs.ext4 -q -F -E nodiscard,lazy_itable_init=0,lazy_journal_init=0 "$D"
mount "$D" "$W/m"
for i in $(seq 1 "$N"); do
    head -c $(( (256 + 64 * i) * 1024 )) /dev/urandom > "$W/m/f$i"
    sha256sum < "$W/m/f$i" > "$W/sum$i"
    sync -f "$W/m"
    dmsetup message srptd-lw 0 mark "sync$i"
    vm_log "file f$i written and synced; mark sync$i"
done
umount "$W/m"
srp_logout_all
srptd_stop || vm_die "srptd exited non-zero"
[ "$(srptd_counter leaked-channels)" = 0 ] || vm_die "srptd leaked channels"
# Removing the target logs what is still unflushed and a last mark.
if ! wait_until 30 dmsetup remove srptd-lw; then
    dmsetup info srptd-lw >&2 || true
    ls -l /proc/[0-9]*/fd 2>/dev/null | grep -E 'dm-|srptd-lw' >&2 || true
    vm_die "dmsetup remove srptd-lw: still busy"
fi
losetup -d "$LOGDEV" "$DATA"

python3 "$REPLAY" "$W/log.img" --list > "$W/list.txt"
counts=$(tail -n 1 "$W/list.txt")
vm_log "log: $counts"
cp "$W/list.txt" "$VM_RESULTS/log-writes-list.txt"
flushes=$(sed -n 's/.*flush=\([0-9]*\).*/\1/p' <<<"$counts")
[ "${flushes:-0}" -ge "$N" ] || vm_die "only ${flushes:-0} flushes reached the backing device for $N syncs"

for i in $(seq 1 "$N"); do
    rm -f "$W/replay.img"
    truncate -s 64M "$W/replay.img"
    python3 "$REPLAY" "$W/log.img" --replay "$W/replay.img" --until-mark "sync$i" >&2
    mount -o loop "$W/replay.img" "$W/r" || vm_die "mark sync$i: the durable image does not mount"
    for j in $(seq 1 "$i"); do
        [ -e "$W/r/f$j" ] || vm_die "mark sync$i: file f$j, synced before the mark, is missing"
        sha256sum < "$W/r/f$j" | cmp -s - "$W/sum$j" ||
            vm_die "mark sync$i: file f$j, synced before the mark, has other contents"
    done
    umount "$W/r"
    e2fsck -fn "$W/replay.img" >&2 || vm_die "mark sync$i: e2fsck found errors in the durable image"
    vm_log "mark sync$i: durable image mounts, f1..f$i intact, e2fsck clean"
done
vm_log "PASS srptd-flush ($N syncs)"
