#!/usr/bin/env bash
# Guest script: srptd end to end with the kernel initiator (ib_srp).
#
#  1. Four LUNs (RAM, file on ext4, raw block device, read-only file);
#     ch_count=2 with immediate data; sizes, sg_inq / sg_readcap -l /
#     sg_vpd / sg_luns answers; a write to the read-only LUN gets DATA
#     PROTECT; fio crc32c verify at 4k, 128k and 1M, QD32; mkfs.ext4,
#     files, unmount, logout, login, fsck + checksums.
#  2. Indirect tables that do not fit in the IU (ib_srp allow_ext_sg=1,
#     cmd_sg_entries=2, never_register=1: one descriptor per page): verified fio, srptd's
#     external-tables counter > 0.
#  3. ch_count=4; fio verify on one login while a second I_T nexus
#     (initiator_ext=1) logs in and out in a loop.
#  4. SINGLE: a second login from the kernel's initiator port (userspace
#     srp_initiator) terminates the kernel's channels; the kernel
#     reconnects and terminates it back; its disk still works.
#  5. Many logins (srp_initiator, I/O on each): no growth in srptd's file
#     descriptors, memory or RDMA resources.
# srptd exits 0 on SIGTERM after every phase, with leaked-channels 0.
#
# Usage (host): scripts/vm-run.sh tests/vm/srptd-e2e.sh [many-logins-count] [phases, e.g. "1 2"]
# ib_srp opens at most one channel per CPU; phase 3 wants ch_count=4:
# vm-cpus: 4
# About 20 minutes under TCG on a loaded 2-core host:
# vm-timeout: 3000
set -euo pipefail
. "$REPO/tests/vm/lib.sh"
vm_trap_failures

MANY=${1:-300}
ini=$(srp_initiator_bin)
PHASES=" ${2:-1 2 3 4 5} "
want() { [[ "$PHASES" == *" $1 "* ]]; }
W=/tmp/e2e
MNT=$W/store
mkdir -p "$W" "$MNT" "$W/m"

srptd_args() { echo --port "$SRP_PORT" --device "$RXE_DEV" --allow ANY; }

# srptd_stop_check <phase>: SIGTERM, exit 0, no leaks; keep the log.
srptd_stop_check() {
    srptd_stop || vm_die "$1: srptd exited non-zero"
    cp "$VM_RESULTS/srptd.log" "$VM_RESULTS/srptd-$1.log"
    sed 's/\x1b\[[0-9;]*m//g' "$VM_RESULTS/srptd.log" | grep -o 'srptd: stopped: .*' >&2 ||
        vm_die "$1: no exit summary"
    [ "$(srptd_counter leaked-channels)" = 0 ] || vm_die "$1: srptd leaked channels"
}

expect_in() { # expect_in <text> <pattern> <what>
    grep -qiE "$2" <<<"$1" || { printf '%s\n' "$1" >&2; vm_die "$3: no match for /$2/"; }
}

rxe_setup

# Backing storage. tmpfs has no O_DIRECT on 6.1, so the file LUNs live on
# ext4 over a loop device; a second loop device is a raw block-device LUN.
modprobe loop && modprobe ext4 || vm_die "modprobe loop ext4"
truncate -s 320M "$W/fs.img"
mkfs.ext4 -q -F "$W/fs.img"
FSDEV=$(losetup -f --show "$W/fs.img")
mount "$FSDEV" "$MNT"
truncate -s 96M "$MNT/lun1.img"
truncate -s 32M "$W/blk.img"
BLK=$(losetup -f --show "$W/blk.img")
head -c 8M /dev/urandom > "$MNT/ro.img"
RO_SUM=$(sha256sum < "$MNT/ro.img" | cut -d' ' -f1)
LUNS=(--lun ram:64M --lun "file:$MNT/lun1.img" --lun "file:$BLK" --lun "file:$MNT/ro.img,ro")
SIZES=($((64 << 20)) $((96 << 20)) $((32 << 20)) $((8 << 20)))

########################################################################
if want 1; then
vm_log "=== phase 1: four LUNs, ch_count=2, immediate data"
# shellcheck disable=SC2046
SRPTD_LOG=srptd=debug srptd_start "${LUNS[@]}" $(srptd_args)
SRP_VENDOR=SRPTD SRP_DYNDBG=1 SRP_TARGET_OPTS=max_sect=2048 \
    srp_login "$SRPTD_ID_EXT" "$SRPTD_IOC_GUID" 2 >/dev/null
[ "$(srp_ch_count)" = 2 ] || vm_die "ch_count $(srp_ch_count), expected 2"
dmesg | grep -ci 'using immediate data' >/dev/null || vm_die "ib_srp does not use immediate data"
echo "module ib_srp -p" > /sys/kernel/debug/dynamic_debug/control 2>/dev/null || true
declare -a DEV SERIAL
for l in 0 1 2 3; do
    DEV[l]=$(srp_lun_dev $l)
    sz=$(blockdev --getsize64 "${DEV[l]}")
    [ "$sz" = "${SIZES[l]}" ] || vm_die "LUN $l (${DEV[l]}) is $sz bytes, expected ${SIZES[l]}"
    vm_log "LUN $l: ${DEV[l]} $sz bytes"
done

for l in 0 1 2 3; do
    d=${DEV[l]}
    out=$(sg_inq "$d")
    expect_in "$out" 'Vendor identification: SRPTD' "sg_inq LUN $l vendor"
    expect_in "$out" 'Product identification: srptd disk' "sg_inq LUN $l product"
    expect_in "$out" 'Peripheral device type: disk' "sg_inq LUN $l type"
    out=$(sg_readcap -l --readonly "$d")
    expect_in "$out" 'Logical block length=512 bytes' "sg_readcap LUN $l block length"
    expect_in "$out" "Number of logical blocks=$((SIZES[l] / 512))\$" "sg_readcap LUN $l blocks"
    expect_in "$out" "Device size: ${SIZES[l]} bytes" "sg_readcap LUN $l size"
    out=$(sg_vpd -p sv "$d")
    for p in 'Supported VPD pages' 'Unit serial number' 'Device identification' 'Block limits' \
        'Block device characteristics' 'Logical block provisioning'; do
        expect_in "$out" "$p" "sg_vpd -p sv LUN $l"
    done
    SERIAL[l]=$(sg_vpd -p sn "$d" | sed -n 's/.*Unit serial number: *//p')
    [ -n "${SERIAL[l]}" ] || vm_die "LUN $l: empty unit serial number"
    out=$(sg_vpd -p di "$d")
    expect_in "$out" 'designator type: NAA' "sg_vpd -p di LUN $l NAA designator"
    expect_in "$out" '0x6001405[0-9a-f]{25}' "sg_vpd -p di LUN $l NAA 6 identifier"
    expect_in "$out" "vendor specific: ${SERIAL[l]}|${SERIAL[l]}" "sg_vpd -p di LUN $l T10 designator"
    out=$(sg_vpd -p bl "$d")
    expect_in "$out" 'Maximum transfer length: 2048 blocks' "sg_vpd -p bl LUN $l"
    out=$(sg_vpd -p bdc "$d")
    expect_in "$out" 'Non-rotating medium' "sg_vpd -p bdc LUN $l"
    out=$(sg_luns --readonly "$d")
    [ "$(grep -cE '^ +000[0-3]000000000000$' <<<"$out")" = 4 ] ||
        { echo "$out" >&2; vm_die "sg_luns on LUN $l does not list LUNs 0-3"; }
done
[ "$(printf '%s\n' "${SERIAL[@]}" | sort -u | wc -l)" = 4 ] || vm_die "serial numbers not unique: ${SERIAL[*]}"
# Mode pages and WRITE AND VERIFY (SBC-3 5.43/5.45) on a RAM and a file LUN.
out=$(sg_modes -a "${DEV[0]}")
for p in '>> read-write error recovery,' '>> caching,' '>> control,' '>> informational exceptions control,'; do
    expect_in "$out" "$p" "sg_modes -a LUN 0"
done
head -c 4096 /dev/urandom > "$W/wv.bin"
for l in 0 1; do
    sg_write_verify --bytchk=1 --lba=64 --num=8 --in="$W/wv.bin" "${DEV[l]}" ||
        vm_die "WRITE AND VERIFY(10) BYTCHK=1 on LUN $l"
    sg_write_verify --16 --lba=72 --num=8 --in="$W/wv.bin" "${DEV[l]}" || vm_die "WRITE AND VERIFY(16) on LUN $l"
    dd if="${DEV[l]}" of="$W/wv.back" bs=512 skip=64 count=16 iflag=direct 2>/dev/null
    cmp "$W/wv.back" <(cat "$W/wv.bin" "$W/wv.bin") || vm_die "LUN $l: WRITE AND VERIFY data does not read back"
done
vm_log "mode pages 01h 08h 0Ah 1Ch; WRITE AND VERIFY (10, 16) on the RAM and a file LUN"
# Thin provisioning on the file LUN: UNMAP supported, and the kernel uses it.
out=$(sg_vpd -p lbpv "${DEV[1]}")
expect_in "$out" 'Unmap command supported \(LBPU\): 1' "sg_vpd -p lbpv LUN 1"
[ "$(cat "/sys/block/${DEV[1]#/dev/}/queue/discard_max_bytes")" -gt 0 ] || vm_die "LUN 1: no discard"
vm_log "sg_inq/sg_readcap/sg_vpd/sg_luns answers OK on 4 LUNs (serials ${SERIAL[*]})"

# Read-only LUN: contents match; the kernel sees it write-protected; a raw
# WRITE(10) is refused with DATA PROTECT.
[ "$(blockdev --getro "${DEV[3]}")" = 1 ] || vm_die "LUN 3 not read-only for the kernel"
[ "$(sha256sum < "${DEV[3]}" | cut -d' ' -f1)" = "$RO_SUM" ] || vm_die "LUN 3 contents differ from the file"
head -c 512 /dev/zero > "$W/zero512"
if out=$(sg_raw --readonly -s 512 -i "$W/zero512" "${DEV[3]}" 2a 00 00 00 00 00 00 00 01 00 2>&1); then
    echo "$out" >&2; vm_die "WRITE to the read-only LUN succeeded"
fi
expect_in "$out" 'Data protect' "WRITE to the read-only LUN"
vm_log "read-only LUN: contents match, WRITE refused with DATA PROTECT"

for bs in 4k 128k 1M; do
    fio_verify "${DEV[0]}" 3 randwrite "$bs" 32 64M
    fio_verify "${DEV[1]}" 3 randwrite "$bs" 32 96M
done
fio_verify "${DEV[2]}" 3 randwrite 4k 32 32M
blkdiscard -o 0 -l $((1 << 20)) "${DEV[1]}"

# File system on the file LUN, across a logout and login.
mkfs.ext4 -q -F "${DEV[1]}"
mount "${DEV[1]}" "$W/m"
mkdir -p "$W/m/dir/sub"
for f in a b c; do head -c $((3 << 20)) /dev/urandom > "$W/m/dir/$f"; done
seq 1 100000 > "$W/m/dir/sub/seq.txt"
(cd "$W/m" && find dir -type f -print0 | sort -z | xargs -0 sha256sum) > "$W/sums"
umount "$W/m"
srp_logout_all
SRP_VENDOR=SRPTD srp_login "$SRPTD_ID_EXT" "$SRPTD_IOC_GUID" 2 >/dev/null
d=$(srp_lun_dev 1)
[ "$(sg_vpd -p sn "$d" | sed -n 's/.*Unit serial number: *//p')" = "${SERIAL[1]}" ] ||
    vm_die "LUN 1 serial changed across login"
e2fsck -fn "$d" >&2 || vm_die "e2fsck on LUN 1 after re-login"
mount "$d" "$W/m"
(cd "$W/m" && sha256sum -c --quiet "$W/sums") || vm_die "checksums differ after logout/login"
umount "$W/m"
vm_log "ext4 on LUN 1: checksums match after logout/login"
srp_logout_all
srptd_stop_check phase1
for c in immediate indirect zero-copy; do vm_log "phase 1 counter $c: $(srptd_counter $c)"; done
[ "$(srptd_counter immediate)" -gt 0 ] || vm_die "no command used immediate data"
[ "$(srptd_counter protocol-errors)" = 0 ] || vm_die "protocol errors in phase 1"
fi

########################################################################
if want 2; then
vm_log "=== phase 2: external indirect tables"
# The file LUN keeps its contents across srptd restarts.
# shellcheck disable=SC2046
srptd_start "${LUNS[@]}" $(srptd_args)
SRP_VENDOR=SRPTD srp_login "$SRPTD_ID_EXT" "$SRPTD_IOC_GUID" 2 \
    allow_ext_sg=1 cmd_sg_entries=2 indirect_sg_entries=256 never_register=1 >/dev/null
d=$(srp_lun_dev 1)
if [ -f "$W/sums" ]; then
    mount -o ro "$d" "$W/m"
    (cd "$W/m" && sha256sum -c --quiet "$W/sums") || vm_die "checksums differ after srptd restart"
    umount "$W/m"
fi
d=$(srp_lun_dev 0)
fio_verify "$d" 3 randwrite 128k 16 64M
fio_verify "$d" 3 write 1M 8 64M
srp_logout_all
srptd_stop_check phase2
ext=$(srptd_counter external-tables)
vm_log "phase 2: external-tables $ext, indirect $(srptd_counter indirect)"
[ "$ext" -gt 0 ] || vm_die "no external indirect table was fetched"
[ "$(srptd_counter protocol-errors)" = 0 ] || vm_die "protocol errors in phase 2"
fi

########################################################################
if want 3; then
vm_log "=== phase 3: ch_count=4; logins and logouts of a second nexus under fio"
# shellcheck disable=SC2046
srptd_start --lun ram:64M --lun "file:$MNT/lun1.img" $(srptd_args)
SRP_VENDOR=SRPTD srp_login "$SRPTD_ID_EXT" "$SRPTD_IOC_GUID" 4 >/dev/null
[ "$(srp_ch_count)" = 4 ] || vm_die "ch_count $(srp_ch_count), expected 4"
a0=$(srp_lun_dev 0)
fio_verify "$a0" 25 randwrite 4k 32 64M &
fio_pid=$!
for i in 1 2 3 4 5; do
    port=$(srp_add_target "$SRPTD_ID_EXT" "$SRPTD_IOC_GUID" initiator_ext=0000000000000001)
    h=${port#port-}; h=${h%%:*}
    b1=$(srp_lun_dev 1 "$h")
    dd if="$b1" of=/dev/null bs=64k count=32 iflag=direct 2>/dev/null || vm_die "read via the second nexus"
    srp_port_delete "$port"
    vm_log "second nexus login/logout $i OK (host$h, $b1)"
done
wait "$fio_pid" || vm_die "fio on the first nexus failed during the login loop"
srp_logout_all
srptd_stop_check phase3
[ "$(srptd_counter logins)" -ge $((4 + 5)) ] || vm_die "fewer logins than expected"
fi

########################################################################
if want 4; then
vm_log "=== phase 4: a SINGLE login from the same initiator port replaces the kernel's channels"
# shellcheck disable=SC2046
SRPTD_LOG=srptd=debug srptd_start --lun ram:64M $(srptd_args)
k0=$(SRP_VENDOR=SRPTD srp_login "$SRPTD_ID_EXT" "$SRPTD_IOC_GUID" 2)
"$ini" --dest "$RXE_ADDR:$SRP_PORT" --id-ext "$SRPTD_ID_EXT" --ioc-guid "$SRPTD_IOC_GUID" \
    --io --hold 60 > "$W/single.txt" 2>&1 || { cat "$W/single.txt" >&2; vm_die "srp_initiator failed"; }
cat "$W/single.txt" >&2
grep -q 'multichannel result 1' "$W/single.txt" ||
    vm_die "LOGIN_RSP did not report existing channels terminated"
grep -q 'disconnected by the target' "$W/single.txt" ||
    vm_die "the kernel's SINGLE re-login did not terminate the userspace login"
dmesg | grep -iE 'srp.*(DREQ|reconnect)' | tail -n 4 >&2 || true
wait_until 60 dd if="$k0" of=/dev/null bs=4k count=1 iflag=direct || vm_die "kernel disk dead after reconnect"
fio_verify "$k0" 3 randwrite 4k 16 64M
srp_logout_all
srptd_stop_check phase4
fi

########################################################################
if want 5; then
vm_log "=== phase 5: $MANY logins with I/O; no resource growth"
res() { rdma resource show 2>/dev/null | awk '{ for (i = 1; i < NF; i++) if ($i ~ /^(pd|cq|qp|cm_id|mr|ctx)$/) printf "%s=%s ", $i, $(i+1) }'; }
SOCK=/run/srptd-e2e.sock
# shellcheck disable=SC2046
srptd_start --lun ram:64M $(srptd_args) --admin-socket "$SOCK"
"$ini" --dest "$RXE_ADDR:$SRP_PORT" --id-ext "$SRPTD_ID_EXT" --ioc-guid "$SRPTD_IOC_GUID" --io --count 20 >&2
fds0=$(ls "/proc/$SRPTD_PID/fd" | wc -l)
rss0=$(awk '/VmRSS/ { print $2 }' "/proc/$SRPTD_PID/status")
bufs0=$(srptd_status "$SOCK" buffer_memory); heap0=$(srptd_status "$SOCK" heap_in_use)
res0=$(res)
"$ini" --dest "$RXE_ADDR:$SRP_PORT" --id-ext "$SRPTD_ID_EXT" --ioc-guid "$SRPTD_IOC_GUID" --io --count "$MANY" >&2 ||
    vm_die "srp_initiator login loop"
"$ini" --dest "$RXE_ADDR:$SRP_PORT" --id-ext "$SRPTD_ID_EXT" --ioc-guid "$SRPTD_IOC_GUID" --multi --no-imm --io \
    --count 20 >&2 || vm_die "srp_initiator MULTI / no immediate data"
# The last channel's buffers go when its poller has drained it.
bufs_back() { [ "$(srptd_status "$SOCK" buffer_memory)" = "$bufs0" ]; }
wait_until 30 bufs_back || true
fds1=$(ls "/proc/$SRPTD_PID/fd" | wc -l)
rss1=$(awk '/VmRSS/ { print $2 }' "/proc/$SRPTD_PID/status")
bufs1=$(srptd_status "$SOCK" buffer_memory); heap1=$(srptd_status "$SOCK" heap_in_use)
res1=$(res)
vm_log "after 20 logins: fds $fds0 rss ${rss0}k buffers $bufs0 heap $heap0 rdma [$res0]"
vm_log "after $((MANY + 40)): fds $fds1 rss ${rss1}k buffers $bufs1 heap $heap1 rdma [$res1]"
[ "$fds1" -le "$fds0" ] || vm_die "srptd file descriptors grew: $fds0 -> $fds1"
[ "$res1" = "$res0" ] || vm_die "RDMA resources grew: [$res0] -> [$res1]"
# RSS is logged only: it grows with LUN pages the I/O touches first.
[ "$bufs1" = "$bufs0" ] || vm_die "srptd's mapped buffers changed: $bufs0 -> $bufs1 bytes"
[ "$heap1" -le $((heap0 + (1 << 20))) ] ||
    vm_die "srptd's heap in use grew by more than 1 MiB: $heap0 -> $heap1 bytes"
srptd_stop_check phase5
[ "$(srptd_counter logins)" = $((MANY + 40)) ] || vm_die "srptd counted $(srptd_counter logins) logins"
fi

umount "$MNT"; losetup -d "$BLK" "$FSDEV"
vm_log "PASS srptd-e2e"
