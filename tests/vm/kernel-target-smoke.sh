#!/usr/bin/env bash
# Guest script (run it with scripts/vm-run.sh): proves the VM test
# infrastructure with the kernel's own SRP target (ib_srpt + LIO ramdisk)
# and the kernel SRP initiator over soft-RoCE, then tears the kernel target
# down completely, as our own target's scenarios will need.
set -euo pipefail
. "$REPO/tests/vm/lib.sh"
vm_trap_failures

PAGES=65536                       # 256 MiB ramdisk
t0=$(date +%s)

vm_log "guest kernel $(uname -r)"
rxe_setup

# Environment facts for the log (not fatal).
vm_log "/dev/infiniband: $(ls /dev/infiniband | tr '\n' ' ')"
ibv_devinfo -d "$RXE_DEV" 2>&1 | grep -E 'hca_id|node_guid|state|active_mtu|link_layer' >&2 || true
if bin=$(srptd_bin 2>/dev/null); then
    vm_log "host-built $bin runs in the guest, says: $("$bin" --version 2>&1 | sed -n 1p)"
fi

lio_ramdisk_target "$PAGES"

dev=$(srp_login "$LIO_ID_EXT" "$LIO_IOC_GUID" 2)
vm_log "logged in: $dev"

size=$(blockdev --getsize64 "$dev")
want=$(( PAGES * 4096 ))
[ "$size" = "$want" ] || vm_die "$dev is $size bytes, expected $want"
vm_log "size ok: $size bytes"

ch=$(srp_ch_count)
[ "$ch" = 2 ] || vm_die "ch_count is $ch, expected 2"
vm_log "channels ok: $ch"

dmesg | grep -E 'it_iu_len|immediate data|ib_srp' | tail -n 8 >&2 || true

fio_verify "$dev" 3 randwrite 4k

srp_logout_all
srp_unload
lio_teardown

# The port must now be free for our userspace target: the DevMgt agent of
# ib_srpt is gone from rxe0 (IsDeviceManagementSupported, 0x80000).
capmask=$(cat "/sys/class/infiniband/$RXE_DEV/ports/1/cap_mask")
if [ $(( capmask & 0x80000 )) -ne 0 ]; then
    vm_die "cap_mask $capmask still has DevMgt bit after teardown"
fi
vm_log "teardown ok (cap_mask $capmask)"

vm_log "PASS kernel-target-smoke in $(( $(date +%s) - t0 ))s (guest time)"
