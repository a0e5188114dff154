#!/usr/bin/env bash
# Guest script (opt-in, not in scripts/test.sh): a soak. srptd serves a RAM
# LUN and a file LUN (ext4 over a loop device); for <minutes> the kernel
# initiator (ch_count=2) runs fio crc32c verify passes on both at once
# (4 KiB random writes on LUN 0, 128 KiB sequential writes on LUN 1, 32 MiB
# each, 15-40 s under TCG), logs out and in again after every pass, and
# every <tmf-every> passes a second nexus (examples/srp_hostile, tmf-storm,
# on a third LUN of its own) fires a task-management storm during the pass.
# Each minute srptd's RSS, heap in use (glibc mallinfo2, from `srptd ctl
# status`), file descriptors and RDMA resources go to
# $VM_RESULTS/soak.tsv (the heap is logged, not bounded). Passes when
# every fio pass is clean, srptd stays up, and from the second minute on
# RSS grows by less than 16 MiB, descriptors and `rdma res` not at all.
#
# Usage (host): scripts/vm-run.sh tests/vm/srptd-soak.sh [minutes=30] [tmf-every=5 passes]
# vm-cpus: 2
# vm-timeout: 3600
set -euo pipefail
. "$REPO/tests/vm/lib.sh"
vm_trap_failures

MINUTES=${1:-30}
TMF_EVERY=${2:-5}
[ $((MINUTES * 60 + 600)) -le 3600 ] || vm_log "note: raise VM_TIMEOUT for $MINUTES minutes"
W=/tmp/soak
MNT=$W/store
mkdir -p "$MNT"
hostile=
for b in "$REPO/target/release/examples/srp_hostile" "$REPO/target/debug/examples/srp_hostile"; do
    [ -x "$b" ] && { hostile=$b; break; }
done
[ -n "$hostile" ] || vm_die "no srp_hostile binary (cargo build --release --example srp_hostile)"

rxe_setup
modprobe loop && modprobe ext4 || vm_die "modprobe loop ext4"
truncate -s 160M "$W/fs.img"
mkfs.ext4 -q -F "$W/fs.img"
FSDEV=$(losetup -f --show "$W/fs.img")
mount "$FSDEV" "$MNT"
truncate -s 64M "$MNT/lun1.img"
# LUN 2 is the TMF storms' own: their WRITEs must not land on fio's data.
SOCK=$W/admin.sock
srptd_start --lun ram:64M --lun "file:$MNT/lun1.img" --lun ram:64M --port "$SRP_PORT" --device "$RXE_DEV" --allow ANY \
    --admin-socket "$SOCK"
TGT=(--dest "$RXE_ADDR:$SRP_PORT" --id-ext "$SRPTD_ID_EXT" --ioc-guid "$SRPTD_IOC_GUID")

res() { rdma resource show 2>/dev/null | awk '{ for (i = 1; i < NF; i++) if ($i ~ /^(pd|cq|qp|cm_id|mr|ctx)$/) printf "%s=%s ", $i, $(i+1) }'; }
fds() { ls "/proc/$SRPTD_PID/fd" | wc -l; }
rss() { awk '/VmRSS/ { print $2 }' "/proc/$SRPTD_PID/status"; }
heap() { srptd_status "$SOCK" heap_in_use; }
alive() { _pid_gone "$SRPTD_PID" && vm_die "srptd died ($1)"; return 0; }

login() {
    SRP_VENDOR=SRPTD srp_login "$SRPTD_ID_EXT" "$SRPTD_IOC_GUID" 2 >/dev/null
    D0=$(srp_lun_dev 0)
    D1=$(srp_lun_dev 1)
}

# fio_pass <n>: both LUNs at once, about 40 s; fails on any error.
fio_pass() {
    local n=$1 rc=0
    fio --direct=1 --ioengine=libaio --verify=crc32c --verify_fatal=1 --do_verify=1 \
        --runtime=20 --size=32M \
        --name=ram --filename="$D0" --rw=randwrite --bs=4k --iodepth=16 \
        --name=file --filename="$D1" --rw=write --bs=128k --iodepth=8 \
        --output="$VM_RESULTS/fio-soak-$n.txt" >/dev/null 2>"$VM_RESULTS/fio-soak-$n.err" || rc=$?
    if [ "$rc" != 0 ] || [ "$(grep -c 'err= 0' "$VM_RESULTS/fio-soak-$n.txt" || true)" != 2 ]; then
        cat "$VM_RESULTS/fio-soak-$n.txt" "$VM_RESULTS/fio-soak-$n.err" >&2 || true
        vm_die "soak pass $n: fio failed (rc $rc)"
    fi
}

login
printf 'minute\tpass\trss_kib\theap_bytes\tfds\trdma\n' > "$VM_RESULTS/soak.tsv"
end=$(( $(date +%s) + MINUTES * 60 ))
pass=0 minute=0 storms=0 next_minute=$(date +%s)
base_rss= base_fds= base_res=
while [ "$(date +%s)" -lt "$end" ]; do
    pass=$((pass + 1))
    storm_pid=
    if [ $(( pass % (TMF_EVERY > 0 ? TMF_EVERY : 1) )) = 0 ]; then
        storms=$((storms + 1))
        "$hostile" "${TGT[@]}" --lun 2 --case tmf-storm > "$VM_RESULTS/tmf-storm-$storms.txt" 2>&1 &
        storm_pid=$!
    fi
    fio_pass "$pass"
    if [ -n "$storm_pid" ]; then
        wait "$storm_pid" || { cat "$VM_RESULTS/tmf-storm-$storms.txt" >&2; vm_die "pass $pass: TMF storm failed"; }
    fi
    alive "pass $pass"
    srp_logout_all
    login
    if [ "$(date +%s)" -ge "$next_minute" ]; then
        minute=$((minute + 1))
        next_minute=$(( $(date +%s) + 60 ))
        # The heap last: its admin connection must not be among the fds.
        r=$(rss) f=$(fds) x=$(res) h=$(heap)
        printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$minute" "$pass" "$r" "$h" "$f" "$x" >> "$VM_RESULTS/soak.tsv"
        vm_log "minute $minute: $pass passes, $storms TMF storms, rss ${r}k heap $h fds $f rdma [$x]"
        # The second minute is the baseline: the first one warms up.
        if [ "$minute" = 2 ]; then base_rss=$r base_fds=$f base_res=$x; fi
    fi
done
# Measured logged in, like every minute's sample.
r=$(rss) f=$(fds) x=$(res)
vm_log "end: $pass passes, $storms TMF storms; rss ${r}k fds $f rdma [$x] (baseline ${base_rss:-?}k, ${base_fds:-?}, [${base_res:-?}])"
if [ -n "$base_rss" ]; then
    [ "$r" -le $((base_rss + 16384)) ] || vm_die "srptd RSS grew by more than 16 MiB: ${base_rss}k -> ${r}k"
    [ "$f" -le "$base_fds" ] || vm_die "srptd file descriptors grew: $base_fds -> $f"
    [ "$x" = "$base_res" ] || vm_die "RDMA resources changed: [$base_res] -> [$x]"
else
    vm_log "shorter than two minutes: no baseline, nothing compared"
fi
srp_logout_all
srptd_stop || vm_die "srptd exited non-zero"
[ "$(srptd_counter leaked-channels)" = 0 ] || vm_die "srptd leaked channels"
vm_log "PASS srptd-soak ($MINUTES min, $pass passes, $storms TMF storms)"
