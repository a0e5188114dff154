#!/usr/bin/env bash
# Guest script: hot-unplug of every RDMA device under multipath I/O.
#  1. Two soft-RoCE devices (rxe0 on dummy0 169.254.77.1, rxe1 on dummy1
#     169.254.77.2); srptd serves a RAM LUN and a file LUN on both. The
#     kernel initiator logs in through each port to that port's address;
#     two dm-multipath devices (plain dmsetup, queue_if_no_path) group the
#     two paths of each LUN; fio writes with crc32c headers on both.
#  2. While fio runs: `rdma link delete rxe0`, then `rdma link delete rxe1`.
#     Each must return within DEL_BOUND seconds (the second is the last
#     device: srptd must let go of librdmacm's context of it too); srptd
#     keeps running and holds no uverbs file any more.
#  3. Both devices added again: the initiator logs in again through both,
#     the multipath tables are reloaded with the new paths, the queued I/O
#     goes on, and fio's verify pass finds no error.
#     The device-management agents end with their devices and come back
#     with them.
#  4. SIGTERM with the initiator logged in: exit 0, no leaked channel.
# vm-timeout: 600
set -euo pipefail
. "$REPO/tests/vm/lib.sh"
vm_trap_failures

LOG=$VM_RESULTS/srptd.log
DEL_BOUND=${DEL_BOUND:-20}
LUN_FILE=/tmp/unplug-lun1.img
MP=(srptd-mp0 srptd-mp1)
strip() { sed 's/\x1b\[[0-9;]*m//g' "$@"; }

for m in rdma_rxe ib_uverbs rdma_ucm ib_umad dm_multipath; do
    modprobe "$m" || vm_die "modprobe $m"
done

addr() { echo "169.254.77.$(($1 + 1))"; }

# port_add <i>: rxe<i> on dummy<i> (fixed MAC, address 169.254.77.<i+1>).
port_add() {
    local i=$1
    ip link show "dummy$i" >/dev/null 2>&1 || ip link add "dummy$i" type dummy
    ip link set "dummy$i" address "02:00:00:00:77:0$((i + 1))"
    ip addr replace "$(addr "$i")/32" dev "dummy$i"
    ip link set "dummy$i" up
    rdma link add "rxe$i" type rxe netdev "dummy$i" || { vm_die "rdma link add rxe$i"; return 1; }
    RXE_DEV=rxe$i wait_until 20 _rxe_active || { vm_die "rxe$i not ACTIVE"; return 1; }
    # The kernel gives a device added again a new index.
    vm_log "rxe$i up on dummy$i $(addr "$i"), device index $(rdma dev show "rxe$i" | awk -F: 'NR == 1 { print $1 }')"
}

# port_login <i>: the kernel initiator logs in through rxe<i> to that
# port's own address; prints its SCSI host number.
port_login() {
    local i=$1 port
    wait_until 20 test -e "/sys/class/infiniband_srp/srp-rxe$i-1/add_target" ||
        { vm_die "ib_srp has no port on rxe$i"; return 1; }
    port=$(RXE_DEV=rxe$i RXE_ADDR=$(addr "$i") srp_add_target "$SRPTD_ID_EXT" "$SRPTD_IOC_GUID") || return 1
    port=${port#port-}
    echo "${port%%:*}"
}

# mp_table <lun> <host> <host>: a multipath table over the LUN's disk on
# each of the two SCSI hosts.
mp_table() {
    local a b
    a=$(srp_lun_dev "$1" "$2") && b=$(srp_lun_dev "$1" "$3") || return 1
    echo "0 $(blockdev --getsz "$a") multipath 1 queue_if_no_path 0 1 1 round-robin 0 2 1" \
        "$(cat "/sys/block/${a#/dev/}/dev") 1 $(cat "/sys/block/${b#/dev/}/dev") 1"
}

# rdma link delete <dev> in the background, bounded by DEL_BOUND; logs
# how long it took.
DEL_TIMES=()
link_delete() {
    local dev=$1 done=/tmp/del-$1.rc t0 t1 took
    rm -f "$done"
    vm_log "rdma link delete $dev"
    t0=$(date +%s.%N)
    ( rdma link delete "$dev"; echo $? > "$done" ) &
    if ! wait_until "$DEL_BOUND" test -s "$done"; then
        {
            echo "== rdma link delete stack"
            for p in $(pgrep -x rdma || true); do echo "pid $p"; cat "/proc/$p/stack"; done
            echo "== srptd fds"
            ls -l "/proc/$SRPTD_PID/fd"
            echo "== srptd maps"
            grep -E 'uverbs|infiniband' "/proc/$SRPTD_PID/maps" || true
        } > "$VM_RESULTS/removal-$dev.txt" 2>&1 || true
        strip "$LOG" | tail -n 30 | cut -c1-240 >&2
        cat "$VM_RESULTS/removal-$dev.txt" >&2
        vm_die "rdma link delete $dev did not return within ${DEL_BOUND} s"
        return 1
    fi
    t1=$(date +%s.%N)
    [ "$(cat "$done")" = 0 ] || { vm_die "rdma link delete $dev failed"; return 1; }
    took=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')
    DEL_TIMES+=("$dev ${took} s")
    vm_log "rdma link delete $dev returned after ${took} s"
}

########################################################################
vm_log "== 1. two ports, srptd on both, multipath over both paths, fio"
port_add 0
port_add 1
truncate -s 64M "$LUN_FILE"
SRPTD_LOG=srptd=debug srptd_start --lun ram:64M --lun "file:$LUN_FILE" --port "$SRP_PORT" --allow ANY
srp_load ch_count=1
H0=$(port_login 0)
H1=$(port_login 1)
vm_log "logged in: host$H0 through rxe0, host$H1 through rxe1"
for l in 0 1; do
    t=$(mp_table "$l" "$H0" "$H1")
    vm_log "dmsetup create ${MP[$l]}: $t"
    dmsetup --noudevsync create "${MP[$l]}" --table "$t" || vm_die "dmsetup create ${MP[$l]}"
done
dmsetup status >&2

# About 10 s of writes at the rate limit, plus however long the paths are
# gone; then fio reads everything back and checks it.
FIO_OUT=$VM_RESULTS/fio-unplug.txt
fio --direct=1 --ioengine=libaio --bs=4k --iodepth=8 --rw=randwrite --size=16M \
    --rate_iops=400 --verify=crc32c --verify_fatal=1 --do_verify=1 --verify_state_save=0 \
    --name=ram --filename="/dev/mapper/${MP[0]}" \
    --name=file --filename="/dev/mapper/${MP[1]}" \
    --output="$FIO_OUT" &
FIO_PID=$!
sleep 3
_pid_gone "$FIO_PID" && vm_die "fio ended early: $(cat "$FIO_OUT")"

########################################################################
vm_log "== 2. delete both devices while fio runs"
link_delete rxe0
link_delete rxe1
_pid_gone "$SRPTD_PID" && vm_die "srptd exited on device removal"
_pid_gone "$FIO_PID" && vm_die "fio ended while no path was there: $(cat "$FIO_OUT")"
strip "$LOG" | grep -E 'RDMA device removed|removed device|librdmacm' | cut -c1-240 >&2 || true
[ "$(strip "$LOG" | grep -c 'removed device: channels closed, resources freed')" = 2 ] ||
    vm_die "srptd did not free both devices"
[ "$(strip "$LOG" | grep -cE "released librdmacm's context|librdmacm closed its context")" = 2 ] ||
    vm_die "srptd did not release librdmacm's context of both devices"
uv=$(ls -l "/proc/$SRPTD_PID/fd" | grep -c uverbs || true)
[ "$uv" = 0 ] || vm_die "srptd still holds $uv uverbs file(s)"
vm_log "both devices removed; srptd runs and holds no uverbs file"
dmsetup status >&2

########################################################################
vm_log "== 3. devices back, log in again, reload multipath, fio goes on"
port_add 0
port_add 1
H0=$(port_login 0)
H1=$(port_login 1)
vm_log "logged in again: host$H0 through rxe0, host$H1 through rxe1"
for l in 0 1; do
    t=$(mp_table "$l" "$H0" "$H1")
    vm_log "reload ${MP[$l]}: $t"
    t0=$(date +%s.%N)
    dmsetup --noudevsync suspend --noflush "${MP[$l]}" || vm_die "dmsetup suspend ${MP[$l]}"
    dmsetup --noudevsync load "${MP[$l]}" --table "$t" || vm_die "dmsetup load ${MP[$l]}"
    dmsetup --noudevsync resume "${MP[$l]}" || vm_die "dmsetup resume ${MP[$l]}"
    vm_log "reloaded ${MP[$l]} in $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }') s"
done
dmsetup status >&2
wait_until 150 _pid_gone "$FIO_PID" || vm_die "fio did not finish within 150 s of the reload"
fio_rc=0
wait "$FIO_PID" || fio_rc=$?
grep -E 'IOPS=|err=|verify' "$FIO_OUT" >&2 || true
[ "$fio_rc" = 0 ] || { cat "$FIO_OUT" >&2; vm_die "fio failed ($fio_rc)"; }
[ "$(grep -c 'err= 0' "$FIO_OUT")" = 2 ] || { cat "$FIO_OUT" >&2; vm_die "fio reported errors"; }
vm_log "fio: both jobs finished, verify clean"
# The device-management agents ended with their devices and serve the
# devices added again.
[ "$(strip "$LOG" | grep -c 'device management: the device went away')" = 2 ] ||
    vm_die "the device-management agents did not end with their devices"
_agents_back() { [ "$(strip "$LOG" | grep -c 'device management: the device is back')" = 2 ]; }
wait_until 10 _agents_back ||
    vm_die "the device-management agents do not serve the devices added again"

########################################################################
vm_log "== 4. SIGTERM with the initiator logged in"
for l in 0 1; do dmsetup --noudevsync remove "${MP[$l]}" || vm_die "dmsetup remove ${MP[$l]}"; done
srptd_stop || vm_die "srptd exited non-zero"
vm_log "summary: $(strip "$LOG" | grep -o 'srptd: stopped: .*' | tail -n1)"
[ "$(srptd_counter leaked-channels "$LOG")" = 0 ] || vm_die "leaked channels"
srp_logout_all
dmesg > "$VM_RESULTS/dmesg.txt"
vm_log "rdma link delete times: ${DEL_TIMES[*]}"
vm_log "PASS srptd-unplug"
