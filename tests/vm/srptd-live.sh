#!/usr/bin/env bash
# Guest script: live changes through the admin socket while the kernel
# initiator runs fio crc32c verify on LUN 0 throughout (srptd started from a
# config file):
#  1. `ctl lun add` of LUN 1 (a file): seen after a SCSI rescan, written and
#     verified; `ctl lun resize`: CAPACITY DATA HAS CHANGED, the new size
#     after a rescan of the disk; `ctl lun read-only on`: writes fail with
#     DATA PROTECT / WRITE PROTECTED, reads work; off again; `ctl lun
#     remove` while fio and dd write to it: every block dd saw acknowledged
#     is in the backing file, and the LUN is gone from REPORT LUNS. The
#     kernel logs the REPORTED LUNS DATA HAS CHANGED and CAPACITY DATA HAS
#     CHANGED unit attentions.
#  2. ACLs: the ANY ACL is replaced by one for the first initiator (its
#     I/O goes on); a second nexus (initiator_ext=1) whose ACL allows
#     another network is rejected at login; with an ACL for its address
#     that maps only LUN 1, read-only, it sees LUN 1 and not LUN 0, and
#     cannot write it; `ctl sessions` shows both nexuses. Then its ACL
#     maps LUN 1 as its LUN 0 (`ctl acl map --as`): it sees LUN 0 only, and
#     what it writes there is on LUN 1 as the first nexus reads it.
#  3. save-config writes the configuration in effect; a reload of it
#     changes nothing; a broken file is refused by `ctl reload` and by
#     SIGHUP, and srptd keeps serving; a valid edit applied by SIGHUP
#     (LUN 2 added) shows up.
#  4. Bad input: a LUN number in use, removing a LUN that does not exist,
#     a backstore that does not open: each a JSON-RPC error, nothing
#     changed.
#  5. `ctl logout` of the second session leaves the first one's fio clean;
#     zero fio errors; SIGTERM exits 0.
set -euo pipefail
. "$REPO/tests/vm/lib.sh"
vm_trap_failures

DIR=/run/srptd-live
SOCK=$DIR/admin.sock
CFG=$DIR/srptd.toml
STOP=$DIR/stop-fio
BIN=$(srptd_bin)
ctl() { "$BIN" ctl --socket "$SOCK" "$@"; }
mkdir -p "$DIR"
rm -f "$STOP"

rxe_setup
cat >"$CFG" <<EOF
[target]
port = $SRP_PORT
devices = ["$RXE_DEV"]
state_dir = "none"

[admin]
socket = "$SOCK"

[[lun]]
number = 0
backstore = "ram:64M"

[[acl]]
initiator = "ANY"
EOF
srptd_start --config "$CFG"

a0=$(SRP_VENDOR=SRPTD srp_login "$SRPTD_ID_EXT" "$SRPTD_IOC_GUID" 2)
sd_host() { local a; a=$(basename "$(readlink -f "/sys/block/${1#/dev/}/device")"); echo "${a%%:*}"; }
HA=$(sd_host "$a0")
ini_a=$(ctl sessions --json | jq -r '.[0].initiator')
vm_log "first nexus: $ini_a on host$HA, LUN 0 is $a0"

# fio crc32c verify on LUN 0 for the whole test.
(
    n=0
    while [ ! -e "$STOP" ]; do
        fio_verify "$a0" 20 randwrite 4k 16 16M || exit 1
        n=$((n + 1))
    done
    vm_log "fio on LUN 0: $n clean rounds"
) &
fio_a=$!

rescan() { echo "- - -" > "/sys/class/scsi_host/host$1/scan"; }
_no_lun_dev() { ! _srp_lun_dev "$@"; }

# 1. add, write, resize, read-only, remove
truncate -s 32M "$DIR/lun1.img"
ctl lun add 1 "file:$DIR/lun1.img" >&2
ctl luns --json | jq -e 'length == 2 and .[1].lun == 1 and .[1].bytes == 33554432' >/dev/null ||
    vm_die "luns after add: $(ctl luns --json)"
# SPC-4 / SAM-5 5.14: LUN 0's next command gets REPORTED LUNS DATA HAS
# CHANGED, which Linux logs (scsi_report_sense).
_kernel_logged() { dmesg | grep -c "$1" >/dev/null; }
wait_until 10 _kernel_logged 'LUN assignments on this target have changed' ||
    vm_die "the initiator did not report REPORTED LUNS DATA HAS CHANGED after lun add"
rescan "$HA"
a1=$(srp_lun_dev 1 "$HA")
vm_log "LUN 1 appeared as $a1 (REPORTED LUNS DATA HAS CHANGED seen by the initiator)"
fio_verify "$a1" 10 randwrite 4k 16 8M
ctl lun resize 1 64M >&2
# SBC-3 4.6: the next command gets CAPACITY DATA HAS CHANGED; the disk's
# size follows after a rescan of it.
echo 1 > "/sys/block/${a1#/dev/}/device/rescan"
_size_is() { [ "$(cat "/sys/block/${1#/dev/}/size")" = "$2" ]; }
wait_until 10 _size_is "$a1" 131072 || vm_die "LUN 1 size after resize: $(cat "/sys/block/${a1#/dev/}/size") sectors"
wait_until 10 _kernel_logged 'Capacity data has changed' ||
    vm_die "the initiator did not report CAPACITY DATA HAS CHANGED after lun resize"
dd if=/dev/urandom of="$DIR/blk" bs=4k count=1 2>/dev/null
dd if="$DIR/blk" of="$a1" bs=4k seek=16000 oflag=direct conv=notrunc 2>/dev/null ||
    vm_die "write beyond the old end of LUN 1 failed"
vm_log "resize: LUN 1 is 64 MiB and writable beyond its old end"

ctl lun read-only 1 on >&2
ctl luns --json | jq -e '.[1].read_only == true' >/dev/null || vm_die "luns: LUN 1 not read-only"
if dd if="$DIR/blk" of="$a1" bs=4k count=1 oflag=direct conv=notrunc 2>/dev/null; then
    vm_die "a write to the write-protected LUN 1 succeeded"
fi
_write_protected_logged() { dmesg | grep -c 'Write protected' >/dev/null; }
wait_until 5 _write_protected_logged || vm_die "no DATA PROTECT / Write protected sense in the kernel log"
dd if="$a1" of=/dev/null bs=4k count=16 iflag=direct 2>/dev/null || vm_die "read of the read-only LUN 1 failed"
ctl lun read-only 1 off >&2
# sd took the WP bit of MODE SENSE and made the disk read-only on its side:
# a rescan reads it again.
echo 1 > "/sys/block/${a1#/dev/}/device/rescan"
_writable() { [ "$(cat "/sys/block/${1#/dev/}/ro")" = 0 ]; }
wait_until 10 _writable "$a1" || vm_die "$a1 still read-only for the kernel after read-only off and a rescan"
dd if="$DIR/blk" of="$a1" bs=4k count=1 oflag=direct conv=notrunc 2>/dev/null || vm_die "write after read-only off failed"
vm_log "read-only: writes refused with WRITE PROTECTED, reads served; writable again"

# Removal under I/O: fio writes LUN 1's first 16 MiB while dd writes a
# known pattern into its last 32 MiB, one 4 KiB O_DIRECT write at a time,
# pass after pass, and LUN 1 is removed meanwhile. Both then fail (the LUN
# is gone); every block dd counted as written was acknowledged GOOD and
# must be in the backing file.
dd if=/dev/urandom of="$DIR/pattern" bs=1M count=32 2>/dev/null
timeout 150 fio --name=removed --filename="$a1" --direct=1 --ioengine=libaio --rw=randwrite \
    --bs=4k --iodepth=16 --size=16M --time_based --runtime=120 \
    --output="$VM_RESULTS/fio-lun1-removed.txt" >&2 &
fio_1=$!
(
    passes=0
    while timeout 150 dd if="$DIR/pattern" of="$a1" bs=4k seek=8192 oflag=direct conv=notrunc 2>"$DIR/dd.err"; do
        passes=$((passes + 1))
    done
    echo "$passes" >"$DIR/dd.passes"
) &
dd_1=$!
sleep 2
r=$(ctl --json lun remove 1)
echo "$r" | jq -e '.removed == [1] and (has("flush_pending") or has("flush_failed") | not)' >/dev/null ||
    vm_die "lun remove under I/O: $r"
wait "$dd_1"
wait "$fio_1" || true
passes=$(cat "$DIR/dd.passes")
blocks=$(sed -n 's/^\([0-9]*\)+[0-9]* records out$/\1/p' "$DIR/dd.err")
[ -n "$blocks" ] || vm_die "no dd record count: $(cat "$DIR/dd.err")"
[ "$passes" -eq 0 ] || blocks=8192
[ "$blocks" -gt 0 ] || vm_die "dd wrote nothing before the removal: $(cat "$DIR/dd.err")"
dd if="$DIR/pattern" of="$DIR/want" bs=4k count="$blocks" 2>/dev/null
dd if="$DIR/lun1.img" of="$DIR/got" bs=4k skip=8192 count="$blocks" 2>/dev/null
cmp "$DIR/want" "$DIR/got" || vm_die "an acknowledged write is missing from LUN 1's backing file ($passes passes, $blocks blocks)"
grep -E 'err=' "$VM_RESULTS/fio-lun1-removed.txt" >&2 || true
vm_log "remove under I/O: $passes full dd passes, $blocks acknowledged blocks all in the backing file"
echo 1 > "/sys/block/${a1#/dev/}/device/delete"
rescan "$HA"
sleep 1
_no_lun_dev 1 "$HA" || vm_die "LUN 1 is back after remove and rescan"
ctl luns --json | jq -e 'length == 1' >/dev/null || vm_die "luns after remove: $(ctl luns --json)"
vm_log "remove: LUN 1 gone"

# 4. bad input changes nothing
expect_fail() {
    local want=$1 out rc=0
    shift
    out=$(ctl "$@" 2>&1) || rc=$?
    [ "$rc" = 1 ] || vm_die "ctl $* exited $rc (expected a refusal): $out"
    case $out in *"$want"*) ;; *) vm_die "ctl $*: expected '$want', got: $out" ;; esac
    vm_log "refused as expected: ctl $* -> $out"
}
expect_fail "number = 0: this LUN number is already used" lun add 0 ram:1M
expect_fail "number = 9: no such LUN" lun remove 9
expect_fail "no such file or device" lun add 3 file:/nonexistent/disk.img
expect_fail "RAM LUN keeps the size" lun resize 0 128M
ctl luns --json | jq -e 'length == 1 and .[0].bytes == 67108864' >/dev/null || vm_die "bad input changed the LUNs"

# 2. ACLs: narrow ANY to the first initiator, then a read-only second nexus on LUN 1 only
ctl lun add 1 ram:32M >&2
ctl acl add "$ini_a" >&2
ctl acl remove ANY >&2
ini_b=0000000000000001${ini_a:16}
# An ACL limited to another network: the login is rejected.
ctl acl add "$ini_b" --luns 1 --address 169.254.99.0/24 >&2
if srp_write_add_target "id_ext=$SRPTD_ID_EXT,ioc_guid=$SRPTD_IOC_GUID,dest=$RXE_ADDR:$SRP_PORT,initiator_ext=0000000000000001"; then
    vm_die "a login from outside the ACL's network was accepted"
fi
_rejected_logged() { grep -c 'login rejected' "$VM_RESULTS/srptd.log" >/dev/null; }
wait_until 5 _rejected_logged || vm_die "srptd did not log the rejected login"
ctl acl remove "$ini_b" >&2
ctl acl add "$ini_b" --luns 1 --read-only --address "$RXE_ADDR/32" >&2
port_b=$(srp_add_target "$SRPTD_ID_EXT" "$SRPTD_IOC_GUID" initiator_ext=0000000000000001)
HB=${port_b#port-}; HB=${HB%%:*}
b1=$(srp_lun_dev 1 "$HB")
vm_log "second nexus $ini_b on host$HB sees LUN 1 as $b1"
# LUN 0 is not reported to it (ib_srp may still probe LUN 0: it answers
# with no device there, peripheral qualifier 011b).
_srp_lun_dev 0 "$HB" && vm_die "the second nexus sees LUN 0"
dd if="$b1" of=/dev/null bs=64k count=16 iflag=direct 2>/dev/null || vm_die "read by the second nexus failed"
if dd if="$DIR/blk" of="$b1" bs=4k count=1 oflag=direct conv=notrunc 2>/dev/null; then
    vm_die "the read-only ACL let the second nexus write"
fi
S=$(ctl sessions --json)
echo "$S" | jq -e --arg a "$ini_a" --arg b "$ini_b" 'length == 2 and ([.[].initiator] | sort) == ([$a, $b] | sort)' >/dev/null ||
    vm_die "sessions: $S"
ctl sessions >&2
vm_log "ACLs: first initiator kept its I/O, second sees only LUN 1, read-only"

# Mapped LUN: the second nexus, writable now, sees LUN 1 as its LUN 0; what
# it writes there lands on LUN 1 (read back through the first nexus).
ctl acl remove "$ini_b" >&2
ctl acl add "$ini_b" --luns 1 --address "$RXE_ADDR/32" >&2
r=$(ctl --json acl map "$ini_b" 1 --as 0)
echo "$r" | jq -e '.access_changed and .nexuses_notified == 1' >/dev/null || vm_die "acl map --as: $r"
ctl luns --json | jq -e --arg b "$ini_b" '.[] | select(.lun == 1) | .mapped_as[$b] == 0' >/dev/null ||
    vm_die "luns: LUN 1 not mapped as 0 for the second nexus: $(ctl luns --json)"
echo 1 > "/sys/block/${b1#/dev/}/device/delete"
rescan "$HB"
b0=$(srp_lun_dev 0 "$HB")
sg_luns "$b0" >&2
_srp_lun_dev 1 "$HB" && vm_die "the second nexus still sees a LUN 1"
dd if=/dev/urandom of="$DIR/mapped" bs=4k count=16 2>/dev/null
dd if="$DIR/mapped" of="$b0" bs=4k seek=100 oflag=direct conv=notrunc 2>/dev/null ||
    vm_die "write through the mapped LUN 0 of the second nexus failed"
rescan "$HA"
a1=$(srp_lun_dev 1 "$HA")
dd if="$a1" of="$DIR/mapped.back" bs=4k skip=100 count=16 iflag=direct 2>/dev/null
cmp "$DIR/mapped" "$DIR/mapped.back" || vm_die "what the second nexus wrote to its LUN 0 is not on LUN 1"
vm_log "mapped LUN: LUN 1 is $b0 (LUN 0) for the second nexus; its write landed on LUN 1 ($a1)"

# 3. save-config, reload, broken files, SIGHUP
ctl save-config >&2
grep -q "initiator = \"$ini_b\"" "$CFG" || vm_die "saved config lacks the second ACL: $(cat "$CFG")"
grep -q "address = \"$RXE_ADDR/32\"" "$CFG" || vm_die "saved config lacks the ACL's address: $(cat "$CFG")"
grep -q 'backstore = "ram:32M"' "$CFG" || vm_die "saved config lacks LUN 1: $(cat "$CFG")"
grep -q 'luns = \[{ lun = 1, mapped_lun = 0 }\]' "$CFG" || vm_die "saved config lacks the mapped LUN: $(cat "$CFG")"
r=$(ctl reload --json)
echo "$r" | jq -e '.applied.added == [] and .applied.removed == [] and (.applied.access_changed | not)' >/dev/null ||
    vm_die "reload of the saved file changed something: $r"
cp "$CFG" "$DIR/good.toml"
printf '\n[[lun]]\nnumber = "two"\n' >> "$CFG"
expect_fail "srptd.toml:" reload
kill -HUP "$SRPTD_PID"
_hup_refused() { grep -c 'reload refused' "$VM_RESULTS/srptd.log" >/dev/null; }
wait_until 10 _hup_refused || vm_die "SIGHUP with a broken file: no refusal logged"
ctl status --json | jq -e '.luns == 2 and .sessions == 2' >/dev/null || vm_die "after the broken reload: $(ctl status --json)"
cp "$DIR/good.toml" "$CFG"
printf '\n[[lun]]\nnumber = 2\nbackstore = "ram:16M"\n' >> "$CFG"
kill -HUP "$SRPTD_PID"
_three_luns() { ctl luns --json | jq -e 'length == 3' >/dev/null; }
wait_until 10 _three_luns || vm_die "SIGHUP did not add LUN 2: $(ctl luns --json)"
rescan "$HA"
srp_lun_dev 2 "$HA" >/dev/null
vm_log "save-config, reload, broken reloads refused (ctl and SIGHUP), SIGHUP added LUN 2"

# 5. log the second session out; the first one's fio stays clean
ctl logout "$ini_b" >&2
srp_port_delete "$port_b"
touch "$STOP"
wait "$fio_a" || vm_die "fio on LUN 0 failed"
ctl stats >&2
srp_logout_all
srptd_stop || vm_die "srptd exited non-zero"
grep -q 'leaked-channels 0' "$VM_RESULTS/srptd.log" || vm_die "srptd reported leaked channels"
vm_log "PASS srptd-live"
