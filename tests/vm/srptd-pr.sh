#!/usr/bin/env bash
# Guest script: SCSI-3 persistent reservations with sg3_utils from two I_T
# nexuses of the kernel initiator (the second logged in with
# initiator_ext=1, so it has its own initiator port ID):
#   1. REPORT CAPABILITIES; both nexuses register; READ KEYS, READ FULL
#      STATUS (SRP TransportIDs);
#   2. each of the six reservation types: nexus 1 reserves, nexus 2's WRITE
#      and READ (sg_raw) get RESERVATION CONFLICT exactly where SPC-4
#      table 62 / SBC-3 table 13 say, nexus 1 releases;
#   3. nexus 2 reserves Write Exclusive, nexus 1 PREEMPT AND ABORTs it into
#      Exclusive Access: nexus 2 is unregistered and its reads and writes
#      conflict; CLEAR empties everything;
#   4. bad input (parameter list length 23 and 25, an iSCSI TransportID,
#      a bad TYPE and SCOPE) gets its sense and leaves PRgeneration alone;
#   5. APTPL: registrations and a reservation, srptd killed (SIGKILL) and
#      started again: the state is back and still enforced;
#   6. a corrupted state file: srptd refuses to start and names the file;
#   7. COMPARE AND WRITE (sg_compare_and_write): the block limits VPD's
#      maximum length, a match writes (seen from the other nexus), a
#      miscompare (exit status 14) reports MISCOMPARE with the offset of
#      the first differing byte and writes nothing;
#   8. EXTENDED COPY with sg_xcopy, srptd restarted with a second LUN
#      (RAM): INQUIRY 3PC=1, sg_copy_results reads OPERATING PARAMETERS;
#      4 MiB copied within LUN 0 and from LUN 0 to LUN 1 (the command sent
#      to the destination and to the source) read back equal, nothing
#      around the ranges changed; COPY STATUS of sg_xcopy's list
#      identifier; a copy past the end is COPY ABORTED and writes nothing.
#
# Usage (host): scripts/vm-run.sh tests/vm/srptd-pr.sh
# vm-timeout: 720
set -euo pipefail
. "$REPO/tests/vm/lib.sh"
vm_trap_failures

W=/tmp/pr
STATE=$W/state
mkdir -p "$W"
rxe_setup
truncate -s 32M "$W/lun0.img"
ARGS=(--lun "file:$W/lun0.img,bs=512" --port "$SRP_PORT" --device "$RXE_DEV" --allow ANY --state-dir "$STATE")
head -c 512 /dev/urandom > "$W/block"

ok() {
    local out
    out=$(sgx "$@") || { printf '%s\n' "$out" >&2; vm_die "failed: $*"; return 1; }
    printf '%s\n' "$out"
}

# (The status is not checked: the output says what happened.)
conflict() {
    local out
    out=$(sgx "$@") || true
    grep -qi 'reservation conflict' <<<"$out" ||
        { printf '%s\n' "$out" >&2; vm_die "expected RESERVATION CONFLICT: $*"; return 1; }
}

# sense <pattern> <command...>: fails with sense data matching <pattern>.
sense() {
    local pat=$1 out
    shift
    out=$(sgx "$@") || true
    grep -qi "$pat" <<<"$out" || { printf '%s\n' "$out" >&2; vm_die "expected '$pat': $*"; return 1; }
}

write16() { sg_raw -s 512 -i "$W/block" "$1" 2a 00 00 00 00 10 00 00 01 00; }
read16() { sg_raw -r 512 -o /dev/null "$1" 28 00 00 00 00 10 00 00 01 00; }
prin() { sg_persist -n --in "$@"; }
prout() { sg_persist -n --out "$@"; }

# generation <dev>: PRgeneration from READ KEYS.
generation() {
    local out
    out=$(ok prin -k "$1") || return 1
    sed -n 's/.*PR generation=\(0x[0-9a-fA-F]*\).*/\1/p' <<<"$out"
}

# hexfile <file> <hex digits>: write those bytes.
hexfile() {
    local h=${2// /}
    printf '%b' "$(sed 's/../\\x&/g' <<<"$h")" > "$1"
}

login_both() {
    D1=$(SRP_VENDOR=SRPTD srp_login "$SRPTD_ID_EXT" "$SRPTD_IOC_GUID" 1)
    local p2 h2
    p2=$(srp_add_target "$SRPTD_ID_EXT" "$SRPTD_IOC_GUID" initiator_ext=0000000000000001)
    h2=${p2#port-}
    h2=${h2%%:*}
    D2=$(srp_lun_dev 0 "$h2")
    [ "$D1" != "$D2" ] || { vm_die "one disk for both nexuses"; return 1; }
    vm_log "nexus 1: $D1, nexus 2 (initiator_ext=1): $D2"
}

srptd_start "${ARGS[@]}"
login_both

vm_log "1. capabilities, registration"
caps=$(ok prin -c "$D1")
grep -qi 'PTPL_C): *1' <<<"$caps" || { echo "$caps" >&2; vm_die "PTPL_C"; }
grep -qi 'SIP_C): *1' <<<"$caps" || { echo "$caps" >&2; vm_die "SIP_C"; }
ok prout --register --param-sark=a1 "$D1" >/dev/null
ok prout --register --param-sark=b2 "$D2" >/dev/null
keys=$(ok prin -k "$D1")
grep -q '0xa1' <<<"$keys" && grep -q '0xb2' <<<"$keys" || { echo "$keys" >&2; vm_die "READ KEYS"; }
full=$(ok prin -s "$D2")
grep -qi 'srp\|rdma' <<<"$full" || { echo "$full" >&2; vm_die "READ FULL STATUS without SRP TransportIDs"; }
ok write16 "$D2" >/dev/null

vm_log "2. every reservation type against the other (registered) nexus"
for t in 1 3 5 6 7 8; do
    ok prout --reserve --param-rk=a1 --prout-type=$t "$D1" >/dev/null
    res=$(ok prin -r "$D2")
    grep -q "type: " <<<"$res" || { echo "$res" >&2; vm_die "type $t: READ RESERVATION"; }
    ok write16 "$D1" >/dev/null
    case $t in
        1 | 3) conflict write16 "$D2" ;;
        *) ok write16 "$D2" >/dev/null ;;
    esac
    case $t in
        3) conflict read16 "$D2" ;;
        *) ok read16 "$D2" >/dev/null ;;
    esac
    vm_log "type $t: holder writes; the registrant's write/read as SPC-4 says"
    ok prout --release --param-rk=a1 --prout-type=$t "$D1" >/dev/null
done

vm_log "3. preempt and abort, clear"
ok prout --reserve --param-rk=b2 --prout-type=1 "$D2" >/dev/null
conflict write16 "$D1"
ok prout --preempt-abort --param-rk=a1 --param-sark=b2 --prout-type=3 "$D1" >/dev/null
keys=$(ok prin -k "$D1")
grep -q '0xb2' <<<"$keys" && { echo "$keys" >&2; vm_die "0xb2 still registered"; }
conflict write16 "$D2"
conflict read16 "$D2"
ok write16 "$D1" >/dev/null
# The preempted nexus may not release or reserve: it is not registered.
conflict prout --reserve --param-rk=b2 --prout-type=3 "$D2"
ok prout --clear --param-rk=a1 "$D1" >/dev/null
keys=$(ok prin -k "$D2")
grep -qi 'NO registered reservation keys' <<<"$keys" || { echo "$keys" >&2; vm_die "CLEAR left keys"; }
ok write16 "$D2" >/dev/null

vm_log "4. bad input changes nothing"
ok prout --register --param-sark=a1 "$D1" >/dev/null
g0=$(generation "$D1")
params=00000000000000a1$(printf '0%.0s' {1..32})
hexfile "$W/p23" "${params:0:46}"
sense 'parameter list length' sg_raw -s 23 -i "$W/p23" "$D1" 5f 01 01 00 00 00 00 00 17 00
hexfile "$W/p25" "${params}00"
sense 'parameter list length' sg_raw -s 25 -i "$W/p25" "$D1" 5f 01 01 00 00 00 00 00 19 00
# REGISTER from nexus 2 with SPEC_I_PT and an iSCSI TransportID (5h).
hexfile "$W/piscsi" "0000000000000000 00000000000000c3 00000000 0800 0000 00000018 05000000000000000102030405060708090a0b0c0d0e0f10"
sense 'invalid field in parameter list' sg_raw -s 52 -i "$W/piscsi" "$D2" 5f 00 00 00 00 00 00 00 34 00
hexfile "$W/pres" "$params"
sense 'invalid field in cdb' sg_raw -s 24 -i "$W/pres" "$D1" 5f 01 02 00 00 00 00 00 18 00
sense 'invalid field in cdb' sg_raw -s 24 -i "$W/pres" "$D1" 5f 01 11 00 00 00 00 00 18 00
g1=$(generation "$D1")
[ "$g0" = "$g1" ] || vm_die "PRgeneration moved from $g0 to $g1 on refused commands"
res=$(ok prin -r "$D1")
grep -qi 'NO reservation held' <<<"$res" || { echo "$res" >&2; vm_die "a refused RESERVE reserved"; }

vm_log "5. APTPL across an srptd crash"
ok prout --register --param-rk=a1 --param-sark=a1 --param-aptpl "$D1" >/dev/null
ok prout --register --param-sark=b2 --param-aptpl "$D2" >/dev/null
ok prout --reserve --param-rk=a1 --prout-type=1 "$D1" >/dev/null
files=("$STATE"/pr-*.state)
[ -f "${files[0]}" ] || vm_die "no state file in $STATE"
vm_log "state file ${files[0]}: $(tr '\n' ' ' < "${files[0]}")"
gen_before=$(generation "$D1")
srp_logout_all
kill -KILL "$SRPTD_PID"
wait "$SRPTD_PID" 2>/dev/null || true
SRPTD_PID=
srptd_start "${ARGS[@]}"
login_both
caps=$(ok prin -c "$D1")
grep -qi 'PTPL_A): *1' <<<"$caps" || { echo "$caps" >&2; vm_die "PTPL_A after restart"; }
keys=$(ok prin -k "$D2")
grep -q '0xa1' <<<"$keys" && grep -q '0xb2' <<<"$keys" || { echo "$keys" >&2; vm_die "keys lost across the restart"; }
[ "$(generation "$D1")" = "$gen_before" ] || vm_die "PRgeneration changed across the restart"
res=$(ok prin -r "$D2")
grep -q 'Key=0xa1' <<<"$res" && grep -qi 'Write Exclusive' <<<"$res" || { echo "$res" >&2; vm_die "reservation lost"; }
conflict write16 "$D2"
ok write16 "$D1" >/dev/null

vm_log "6. a corrupted state file"
srp_logout_all
srptd_stop
sed -i 's/^generation .*/generation 999/' "${files[0]}"
rc=0
timeout 30 "$(srptd_bin)" "${ARGS[@]}" > "$W/corrupt.log" 2>&1 || rc=$?
cat "$W/corrupt.log" >&2
[ "$rc" = 2 ] || vm_die "srptd with a corrupt state file: exit $rc, expected 2"
grep -q 'checksum mismatch' "$W/corrupt.log" && grep -qF "${files[0]}" "$W/corrupt.log" ||
    vm_die "the error does not name the file and the problem"
rm -f "${files[0]}"
srptd_start "${ARGS[@]}"
login_both

vm_log "7. COMPARE AND WRITE"
bl=$(ok sg_vpd -p bl "$D1")
grep -qi 'maximum compare and write length: *255' <<<"$bl" || { echo "$bl" >&2; vm_die "MAXIMUM COMPARE AND WRITE LENGTH"; }
read64() { sg_raw -r 512 -o "$2" "$1" 28 00 00 00 00 40 00 00 01 00; }
ok sg_raw -s 512 -i "$W/block" "$D1" 2a 00 00 00 00 40 00 00 01 00 >/dev/null
head -c 512 /dev/urandom > "$W/new"
cat "$W/block" "$W/new" > "$W/caw_ok"
ok sg_compare_and_write --in="$W/caw_ok" --lba=0x40 --num=1 "$D1" >/dev/null
ok read64 "$D2" "$W/got" >/dev/null
cmp "$W/got" "$W/new" || vm_die "COMPARE AND WRITE match: block 0x40 does not hold the write data"
# The verify data differs first at byte 188 (and again at 300).
cp "$W/new" "$W/verify_bad"
for at in 188 300; do
    v=$(od -An -tu1 -j"$at" -N1 "$W/new")
    printf "\\x$(printf %02x $(((v + 1) % 256)))" | dd of="$W/verify_bad" bs=1 seek="$at" conv=notrunc status=none
done
cat "$W/verify_bad" "$W/block" > "$W/caw_bad"
rc=0
out=$(sg_compare_and_write -v --in="$W/caw_bad" --lba=0x40 --num=1 "$D1" 2>&1) || rc=$?
printf '%s\n' "$out"
[ "$rc" = 14 ] || vm_die "COMPARE AND WRITE miscompare: exit $rc, expected 14"
grep -qi 'miscompare' <<<"$out" || vm_die "no MISCOMPARE in the output"
sense 'info fld=0xbc' sg_raw -s 1024 -i "$W/caw_bad" "$D1" 89 00 00 00 00 00 00 00 00 40 00 00 00 01 00 00
ok read64 "$D1" "$W/got" >/dev/null
cmp "$W/got" "$W/new" || vm_die "a COMPARE AND WRITE that miscompared wrote"
srp_logout_all
srptd_stop

vm_log "8. EXTENDED COPY (sg_xcopy)"
srptd_start "${ARGS[@]}" --lun "ram:32M,bs=512"
SRP_VENDOR=SRPTD srp_login "$SRPTD_ID_EXT" "$SRPTD_IOC_GUID" 1 >/dev/null
X0=$(srp_lun_dev 0)
X1=$(srp_lun_dev 1)
vm_log "LUN 0: $X0, LUN 1: $X1"
# sg_xcopy reopens its devices as /dev/block/MAJ:MIN, links udev makes
# (there is no udev in the guest).
mkdir -p /dev/block
for d in "$X0" "$X1"; do ln -sf "$d" "/dev/block/$(cat "/sys/class/block/${d##*/}/dev")"; done
inq=$(ok sg_inq "$X0")
grep -q '3PC=1' <<<"$inq" || { echo "$inq" >&2; vm_die "INQUIRY: no 3PC=1"; }
params=$(ok sg_copy_results --params "$X1")
printf '%s\n' "$params"
grep -qi 'maximum segment length: *16777216' <<<"$params" &&
    grep -qi 'segment descriptor 0x02' <<<"$params" && grep -qi 'target descriptor 0xe4' <<<"$params" ||
    vm_die "OPERATING PARAMETERS"
# 4 MiB of random data at LBA 2048 of LUN 0; LBA 0-2047 stay zero.
head -c 4M /dev/urandom > "$W/x4m"
dd if=/dev/zero of="$X0" bs=1M count=16 oflag=direct status=none
dd if="$W/x4m" of="$X0" bs=1M seek=1 oflag=direct status=none
# blocks <dev> <lba> <count> <file>: read them past the page cache.
blocks() { dd if="$1" of="$4" bs=512 skip="$2" count="$3" iflag=direct status=none; }
# Within LUN 0: LBA 2048 to 20480 (the command goes to LUN 0 both ways).
ok sg_xcopy if="$X0" of="$X0" bs=512 skip=2048 seek=20480 count=8192
blocks "$X0" 20480 8192 "$W/got"
cmp "$W/got" "$W/x4m" || vm_die "sg_xcopy within LUN 0: the copy differs"
blocks "$X0" 0 2048 "$W/got"
cmp "$W/got" <(head -c 1M /dev/zero) || vm_die "sg_xcopy within LUN 0 wrote before the range"
# LUN 0 to LUN 1 at LBA 100, sent to the destination (sg_xcopy's default)
# and to the source.
ok sg_xcopy if="$X0" of="$X1" bs=512 skip=2048 seek=100 count=8192
blocks "$X1" 100 8192 "$W/got"
cmp "$W/got" "$W/x4m" || vm_die "sg_xcopy LUN 0 to LUN 1: the copy differs"
copy_on_src() {
    ok sg_xcopy --on_src if="$X0" of="$X1" bs=512 skip=2048 seek=40000 count=8192 bpt=1000
    blocks "$X1" 40000 8192 "$W/got"
    [ "$(sha256sum < "$W/got")" = "$(sha256sum < "$W/x4m")" ] || vm_die "sg_xcopy --on_src: checksums differ"
}
reconnects=$(srp_reconnects)
copy_on_src
blocks "$X1" 0 100 "$W/got"
cmp "$W/got" <(head -c 51200 /dev/zero) || vm_die "sg_xcopy to LUN 1 wrote before the range"
blocks "$X1" 8292 100 "$W/got"
cmp "$W/got" <(head -c 51200 /dev/zero) || vm_die "sg_xcopy to LUN 1 wrote after the range"
# sg_xcopy uses list identifier 1 (LIST ID USAGE 10b: no held data).
# The status belongs to the I_T nexus, which srptd ends with its last
# channel: when rxe's retry defect (docs/stalls.md) made ib_srp log in
# again meanwhile, the status is gone and the copy is run once more.
if ! st=$(sgx sg_copy_results --status --list_id=1 "$X0"); then
    printf '%s\n' "$st"
    [ "$(srp_reconnects)" -gt "$reconnects" ] || vm_die "COPY STATUS of list identifier 1 refused"
    vm_log "ib_srp reconnected during the copies (a new I_T nexus): copying again"
    copy_on_src
    st=$(ok sg_copy_results --status --list_id=1 "$X0")
fi
printf '%s\n' "$st"
grep -qi 'completed without errors' <<<"$st" || vm_die "COPY STATUS of list identifier 1"
# Past the end of LUN 1 (65536 blocks): COPY ABORTED, nothing written.
blocks "$X1" 65000 536 "$W/before"
out=$(sgx sg_xcopy -v if="$X0" of="$X1" bs=512 skip=2048 seek=65000 count=1000 bpt=1000) && vm_die "a copy past the end succeeded"
printf '%s\n' "$out"
grep -qi 'copy aborted' <<<"$out" || vm_die "a copy past the end: no COPY ABORTED"
blocks "$X1" 65000 536 "$W/after"
cmp "$W/before" "$W/after" || vm_die "a refused copy wrote"
srp_logout_all
srptd_stop
vm_log "PASS: persistent reservations, COMPARE AND WRITE, EXTENDED COPY"
