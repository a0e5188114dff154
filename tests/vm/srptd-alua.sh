#!/usr/bin/env bash
# Guest script: ALUA under dm-multipath (docs/alua.md).
#  1. Two soft-RoCE devices (rxe0 on dummy0 169.254.77.1, rxe1 on dummy1
#     169.254.77.2); srptd serves a RAM LUN on both, so each RDMA port is a
#     target port (relative ports 1 and 2, groups 1 and 2). The kernel
#     initiator logs in through each port to that port's own address.
#     INQUIRY says TPGS = 01b; `sg_vpd -p di` shows each path's relative
#     target port and group; `sg_rtpg` both groups; group 2 is made
#     active/non-optimized through `srptd ctl alua set`.
#  2. multipathd (multipath-tools: group_by_prio, the alua prioritizer,
#     hardware handler alua, tur checker) makes one map of the two paths;
#     fio randwrite + crc32c verify runs on it in a loop.
#  3. (a) Group 1 goes standby, then unavailable, and back each time:
#     through that path TEST UNIT READY gets the state's NOT READY, sg_rtpg
#     through the other path shows the state, multipathd sees the path
#     ghost / faulty and then ready again; I/O goes on.
#  4. (b) The path through rxe1 is logged out and in again, twice.
#  5. (c) sg_reset sends a LOGICAL UNIT RESET and a target reset through
#     each path in turn while fio runs on the map; both paths come back.
#  6. fio stops: every round's verify clean.
#  7. fence_scsi-style persistent reservations: a second host
#     (initiator_ext=2) through both ports; each host registers its key
#     on each of its paths, A reserves Write Exclusive Registrants Only and
#     fences B with PREEMPT AND ABORT: B's writes are refused through both
#     ports, its reads pass, A's writes pass; B re-registers through one
#     path only and only that path may write; CLEAR. SIGTERM clean.
# vm-timeout: 480
set -euo pipefail
. "$REPO/tests/vm/lib.sh"
vm_trap_failures

LOG=$VM_RESULTS/srptd.log
SOCK=/run/srptd-alua.sock
OUT=$VM_RESULTS/alua
mkdir -p "$OUT"
strip() { sed 's/\x1b\[[0-9;]*m//g' "$@"; }
ctl() { "$(srptd_bin)" ctl --socket "$SOCK" "$@"; }

for m in rdma_rxe ib_uverbs rdma_ucm ib_umad dm_multipath scsi_dh_alua; do
    modprobe "$m" || vm_die "modprobe $m"
done
command -v multipathd >/dev/null || vm_die "multipathd missing (scripts/install-deps.sh installs multipath-tools)"

addr() { echo "169.254.77.$(($1 + 1))"; }

# port_add <i>: rxe<i> on dummy<i> (fixed MAC, address 169.254.77.<i+1>).
port_add() {
    local i=$1
    ip link add "dummy$i" type dummy
    ip link set "dummy$i" address "02:00:00:00:77:0$((i + 1))"
    ip addr add "$(addr "$i")/32" dev "dummy$i"
    ip link set "dummy$i" up
    rdma link add "rxe$i" type rxe netdev "dummy$i" || { vm_die "rdma link add rxe$i"; return 1; }
    RXE_DEV=rxe$i wait_until 20 _rxe_active || { vm_die "rxe$i not ACTIVE"; return 1; }
}

# port_login <i>: the kernel initiator logs in through rxe<i> to that
# port's own address; prints the remote port's name (port-H:N).
port_login() {
    local i=$1
    wait_until 20 test -e "/sys/class/infiniband_srp/srp-rxe$i-1/add_target" ||
        { vm_die "ib_srp has no port on rxe$i"; return 1; }
    RXE_DEV=rxe$i RXE_ADDR=$(addr "$i") srp_add_target "$SRPTD_ID_EXT" "$SRPTD_IOC_GUID"
}
host_of() { local h=${1#port-}; echo "${h%%:*}"; }

# The path checker's view of a path: "<dm state> <checker state> <prio>".
path_state() {
    multipathd show paths format "%d %t %T %p" 2>/dev/null | awk -v d="${1#/dev/}" '$1 == d { print $2, $3, $4 }'
}
_path_is() { [[ "$(path_state "$1")" == $2 ]]; }
wait_path() {
    wait_until "${3:-40}" _path_is "$1" "$2" || {
        multipathd show paths format "%d %t %T %p" >&2 || true
        vm_die "path $1 is not '$2' (it is '$(path_state "$1")')"
    }
}

fio_failed() { [ -e /tmp/fio-failed ]; }
check_fio() {
    fio_failed && { cat /tmp/fio-failed >&2; vm_die "fio failed"; }
    _pid_gone "$FIO_LOOP" && vm_die "the fio loop ended early"
    return 0
}

########################################################################
vm_log "== 1. two ports, srptd on both, both paths logged in"
port_add 0
port_add 1
srptd_start --lun ram:64M --port "$SRP_PORT" --allow ANY --admin-socket "$SOCK"
srp_load ch_count=1
P0=$(port_login 0)
P1=$(port_login 1)
D0=$(srp_lun_dev 0 "$(host_of "$P0")")
D1=$(srp_lun_dev 0 "$(host_of "$P1")")
vm_log "logged in: $P0 ($D0) through rxe0, $P1 ($D1) through rxe1"

sg_inq "$D0" > "$OUT/sg_inq.txt"
grep -q 'TPGS=1' "$OUT/sg_inq.txt" || { cat "$OUT/sg_inq.txt" >&2; vm_die "INQUIRY does not say TPGS=1"; }
for i in 0 1; do
    d=D$i
    sg_vpd -p di "${!d}" > "$OUT/sg_vpd-di-path$i.txt"
    n=$((i + 1))
    grep -qi "Relative target port: 0x$n\b" "$OUT/sg_vpd-di-path$i.txt" &&
        grep -qi "Target port group: 0x$n\b" "$OUT/sg_vpd-di-path$i.txt" ||
        { cat "$OUT/sg_vpd-di-path$i.txt" >&2; vm_die "VPD 83h through path $i lacks relative port / group $n"; }
done
ctl alua set 2 active/non-optimized | tee "$OUT/ctl-set.txt" >&2
ctl alua | tee "$OUT/ctl-alua.txt" >&2
grep -q 'rxe0/1' "$OUT/ctl-alua.txt" && grep -q 'active/non-optimized' "$OUT/ctl-alua.txt" ||
    vm_die "srptd ctl alua does not show the groups"
# The first command through each path reports ASYMMETRIC ACCESS STATE
# CHANGED (unit attention); sg_rtpg retries past it.
sg_turs "$D0" >/dev/null 2>&1 || true
sg_turs "$D1" >/dev/null 2>&1 || true
sg_rtpg -d "$D0" > "$OUT/sg_rtpg.txt"
cat "$OUT/sg_rtpg.txt" >&2
grep -qi 'target port group id : 0x1' "$OUT/sg_rtpg.txt" &&
    grep -qi 'target port group id : 0x2' "$OUT/sg_rtpg.txt" &&
    grep -qi 'active/non.optimized' "$OUT/sg_rtpg.txt" ||
    vm_die "sg_rtpg does not show both groups"
vm_log "sg_inq, sg_vpd -p di, sg_rtpg and srptd ctl alua show the ports and groups"

########################################################################
vm_log "== 2. multipathd over both paths, fio verify in a loop"
mkdir -p /etc/multipath
cat > /etc/multipath.conf <<'EOF'
defaults {
    user_friendly_names no
    find_multipaths no
    polling_interval 1
    max_polling_interval 2
}
blacklist {
    devnode "^(ram|loop|fd|md|dm-|sr|scd|st|vd)[0-9]*"
}
devices {
    device {
        vendor "SRPTD"
        product ".*"
        path_grouping_policy group_by_prio
        prio alua
        hardware_handler "1 alua"
        path_checker tur
        failback immediate
        no_path_retry queue
    }
}
EOF
multipathd -d -s -v3 > "$OUT/multipathd.log" 2>&1 &
MPD=$!
_two_paths() { [ "$(multipathd show paths format "%d %t %T" 2>/dev/null | grep -c 'active ready')" = 2 ]; }
if ! wait_until 30 _two_paths; then
    multipath -v3 > "$OUT/multipath-v3.txt" 2>&1 || true
    multipathd show paths >&2 || true
    tail -n 40 "$OUT/multipathd.log" >&2
    vm_die "multipathd did not make a map of both paths"
fi
MAP=$(multipathd show maps format "%n" | tail -n1)
MP=/dev/mapper/$MAP
multipath -ll > "$OUT/multipath-ll.txt" 2>&1
cat "$OUT/multipath-ll.txt" >&2
grep -q 'prio=50' "$OUT/multipath-ll.txt" && grep -q 'prio=10' "$OUT/multipath-ll.txt" ||
    vm_die "the alua prioritizer did not see active/optimized and active/non-optimized"
wait_path "$D0" "active ready 50"
wait_path "$D1" "active ready 10"

rm -f /tmp/fio-failed /tmp/fio-stop
(
    r=0
    while [ ! -e /tmp/fio-stop ]; do
        r=$((r + 1))
        if ! fio --direct=1 --ioengine=libaio --bs=4k --iodepth=4 --rw=randwrite --size=8M \
            --rate_iops=300 --verify=crc32c --verify_fatal=1 --do_verify=1 --verify_state_save=0 \
            --name=alua --filename="$MP" --output="$OUT/fio-$r.txt"; then
            echo "round $r: $(cat "$OUT/fio-$r.txt")" > /tmp/fio-failed
            break
        fi
        grep -q 'err= 0' "$OUT/fio-$r.txt" || { echo "round $r: errors" > /tmp/fio-failed; break; }
        echo "$r" > /tmp/fio-rounds
    done
) &
FIO_LOOP=$!
sleep 3
check_fio

########################################################################
vm_log "== 3. (a) group 1 standby / unavailable and back"
for st in standby:ghost:0b unavailable:faulty:0c; do
    IFS=: read -r state checker ascq <<< "$st"
    ctl alua set 1 "$state" >&2
    # A standby path is reinstated as a ghost (usable when nothing else
    # is); an unavailable one stays failed.
    wait_path "$D0" "* $checker *"
    prio=$(path_state "$D0")
    sense=$(sg_turs -vv "$D0" 2>&1 || true)
    echo "$sense" > "$OUT/sg_turs-$state.txt"
    grep -qiE "04/$ascq|0x4,0x$ascq|asc=0x4, ascq=0x$ascq|$state" "$OUT/sg_turs-$state.txt" ||
        { echo "$sense" >&2; vm_die "TEST UNIT READY through a $state port: not the state's sense"; }
    sg_rtpg -d "$D1" > "$OUT/sg_rtpg-$state.txt"
    grep -A1 -i 'target port group id : 0x1' "$OUT/sg_rtpg-$state.txt" | grep -ci "$state" >/dev/null ||
        { cat "$OUT/sg_rtpg-$state.txt" >&2; vm_die "sg_rtpg does not show group 1 $state"; }
    sleep 2
    check_fio
    ctl alua set 1 active/optimized >&2
    wait_path "$D0" "active ready 50"
    vm_log "group 1 was $state (path: $prio) and is back; fio rounds $(cat /tmp/fio-rounds 2>/dev/null || echo 0)"
    check_fio
done

########################################################################
vm_log "== 4. (b) the path through rxe1 logged out and in again, twice"
for i in 1 2; do
    multipathd del path "${D1#/dev/}" >&2 || true
    srp_port_delete "$P1"
    sleep 1
    check_fio
    P1=$(port_login 1)
    D1=$(srp_lun_dev 0 "$(host_of "$P1")")
    multipathd add path "${D1#/dev/}" >&2 || true
    wait_path "$D1" "active ready 10"
    vm_log "round $i: $P1 ($D1) back in the map"
    check_fio
done

########################################################################
vm_log "== 5. (c) LUN reset and target reset through each path under I/O"
for d in "$D0" "$D1"; do
    for r in -d -t; do
        vm_log "sg_reset $r $d"
        # ib_srp may refuse a target reset while its error handler is busy
        # (as in srptd-tmf.sh); a LUN reset must succeed.
        sg_reset "$r" "$d" >&2 || [ "$r" = -t ] || vm_die "sg_reset $r $d"
        sleep 2
        check_fio
    done
done
wait_path "$D0" "active ready 50"
wait_path "$D1" "active ready 10"
vm_log "resets through both paths; fio rounds $(cat /tmp/fio-rounds 2>/dev/null || echo 0)"
check_fio

########################################################################
vm_log "== 6. fio stops; every verify clean; SIGTERM"
touch /tmp/fio-stop
wait_until 90 _pid_gone "$FIO_LOOP" || vm_die "the fio loop did not end"
wait "$FIO_LOOP" || true
fio_failed && { cat /tmp/fio-failed >&2; vm_die "fio failed"; }
rounds=$(cat /tmp/fio-rounds 2>/dev/null || echo 0)
[ "$rounds" -ge 2 ] || vm_die "only $rounds fio rounds finished"
vm_log "fio: $rounds rounds of write + crc32c verify, all clean"
strip "$LOG" | grep -c 'admin: ALUA state set' >&2 || true
multipathd shutdown >&2 || kill "$MPD" 2>/dev/null || true
wait "$MPD" 2>/dev/null || true
multipath -F >&2 || dmsetup --noudevsync remove "$MAP" || true

########################################################################
vm_log "== 7. fence_scsi-style reservations: two hosts, each through both ports"
# Host A is the initiator ports of the two paths above; host B logs in
# through both ports with initiator_ext=2. Each path is its own I_T nexus
# (SPC-4 5.13.7), so each host registers its key on each of its paths, as
# fence_scsi and mpathpersist do; A reserves Write Exclusive Registrants
# Only, then fences B with PREEMPT AND ABORT of B's key.
B0=$(RXE_DEV=rxe0 RXE_ADDR=$(addr 0) srp_add_target "$SRPTD_ID_EXT" "$SRPTD_IOC_GUID" initiator_ext=0000000000000002)
B1=$(RXE_DEV=rxe1 RXE_ADDR=$(addr 1) srp_add_target "$SRPTD_ID_EXT" "$SRPTD_IOC_GUID" initiator_ext=0000000000000002)
E0=$(srp_lun_dev 0 "$(host_of "$B0")")
E1=$(srp_lun_dev 0 "$(host_of "$B1")")
vm_log "host B: $B0 ($E0) through rxe0, $B1 ($E1) through rxe1"
head -c 512 /dev/urandom > "$OUT/block"
pr() { sgx sg_persist -n "$@" >/dev/null || vm_die "sg_persist $*"; }
write10() { sgx sg_raw -s 512 -i "$OUT/block" "$1" 2a 00 00 00 01 00 00 00 01 00; }
read10() { sgx sg_raw -r 512 -o /dev/null "$1" 28 00 00 00 01 00 00 00 01 00; }
writes() { write10 "$1" >/dev/null || vm_die "write through $1 refused"; }
conflicts() {
    local out
    out=$(write10 "$1") || true
    grep -qi 'reservation conflict' <<<"$out" ||
        { printf '%s\n' "$out" >&2; vm_die "a write through $1 was not refused with RESERVATION CONFLICT"; }
}
for d in "$D0" "$D1"; do pr --out --register --param-sark=0xa1 "$d"; done
for d in "$E0" "$E1"; do pr --out --register --param-sark=0xb1 "$d"; done
sgx sg_persist -n --in --read-keys "$D1" > "$OUT/pr-keys.txt"
[ "$(grep -c '0xa1\|0xb1' "$OUT/pr-keys.txt")" = 4 ] ||
    { cat "$OUT/pr-keys.txt" >&2; vm_die "READ KEYS does not list the four registrations"; }
sgx sg_persist -n --in --read-full-status "$D0" > "$OUT/pr-full-status.txt"
pr --out --reserve --param-rk=0xa1 --prout-type=5 "$D0"
for d in "$D0" "$D1" "$E0" "$E1"; do writes "$d"; done
# Fencing B: its registrations through both ports go, its writes are
# refused through both, its reads still pass (Write Exclusive); A's
# writes pass through both of its paths.
pr --out --preempt-abort --param-rk=0xa1 --param-sark=0xb1 --prout-type=5 "$D1"
for d in "$E0" "$E1"; do
    conflicts "$d"
    read10 "$d" >/dev/null || vm_die "a read through fenced $d was refused"
done
for d in "$D0" "$D1"; do writes "$d"; done
sgx sg_persist -n --in --read-keys "$D0" > "$OUT/pr-keys-fenced.txt"
[ "$(grep -c '0xb1' "$OUT/pr-keys-fenced.txt")" = 0 ] && [ "$(grep -c '0xa1' "$OUT/pr-keys-fenced.txt")" = 2 ] ||
    { cat "$OUT/pr-keys-fenced.txt" >&2; vm_die "B's keys survived the preempt"; }
# B registers again (unfencing) through one port only: that path writes,
# the other (another I_T nexus, unregistered) is still refused.
pr --out --register --param-sark=0xb2 "$E0"
writes "$E0"
conflicts "$E1"
pr --out --clear --param-rk=0xa1 "$D0"
for d in "$D0" "$E1"; do writes "$d"; done
vm_log "fence_scsi flow: 4 registrations, WE-RO, B fenced through both ports by PREEMPT AND ABORT, re-registered per path, CLEAR"

srptd_stop || vm_die "srptd exited non-zero"
vm_log "summary: $(strip "$LOG" | grep -o 'srptd: stopped: .*' | tail -n1)"
[ "$(srptd_counter leaked-channels "$LOG")" = 0 ] || vm_die "leaked channels"
srp_logout_all
dmesg > "$VM_RESULTS/dmesg.txt"
vm_log "PASS srptd-alua"
