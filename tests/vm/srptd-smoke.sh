#!/usr/bin/env bash
# Guest script: srptd serving a RAM LUN, the kernel initiator logs in with
# two channels, the disk appears with the right size, a short verified fio
# run, logout, SIGTERM: srptd exits 0 with no leaked channels.
# Then a config file (docs/configuration.md): its identity, LUN numbers,
# serial and ACL are what the initiator sees; a file without [[acl]] lets
# nobody in; a bad value stops srptd with the file, line and key.
set -euo pipefail
. "$REPO/tests/vm/lib.sh"
vm_trap_failures

rxe_setup
# Run as systemd would (Type=notify, WatchdogSec=2): a stand-in socket
# records what srptd tells the service manager.
NOTES=$VM_RESULTS/notify.txt
"$REPO/tests/vm/tools/notify-sink.py" /tmp/notify.sock "$NOTES" &
SINK_PID=$!
wait_until 10 test -S /tmp/notify.sock || vm_die "notify sink did not start"
# systemd names the watched process in WATCHDOG_PID: exec keeps the pid.
printf '#!/bin/sh\nexport WATCHDOG_PID=$$\nexec %s "$@"\n' "$(srptd_bin)" > /tmp/srptd-watched
chmod +x /tmp/srptd-watched
SRPTD=/tmp/srptd-watched NOTIFY_SOCKET=/tmp/notify.sock WATCHDOG_USEC=2000000 \
    SRPTD_LOG=srptd=debug srptd_start --lun ram:64M --port "$SRP_PORT" --device "$RXE_DEV" --allow ANY
dev=$(SRP_VENDOR=SRPTD srp_login "$SRPTD_ID_EXT" "$SRPTD_IOC_GUID" 2)
vm_log "logged in: $dev"
_notified() { grep -c -- "$1" "$NOTES" >/dev/null; }
wait_until 5 _notified "STATUS=serving 1 LUN(s) on $RXE_DEV: 1 session(s), 2 channel(s)" ||
    vm_die "no STATUS with the session: $(cat "$NOTES")"
sed -n 1p "$NOTES" | grep -c '^READY=1 STATUS=serving 1 LUN(s)' >/dev/null ||
    vm_die "the first notification is not READY=1 with a status: $(cat "$NOTES")"
wait_until 5 _notified '^WATCHDOG=1$' || vm_die "no WATCHDOG=1 within 5 s (WatchdogSec=2)"
size=$(blockdev --getsize64 "$dev")
[ "$size" = $((64 << 20)) ] || vm_die "$dev is $size bytes, expected $((64 << 20))"
dmesg | grep -E 'ib_srp|srp' | tail -n 8 >&2 || true
fio_verify "$dev" 3 randwrite 4k
fio_verify "$dev" 2 write 128k 8 32M
srp_logout_all
srptd_stop || vm_die "srptd exited non-zero"
_notified '^STOPPING=1' || vm_die "no STOPPING=1 on SIGTERM: $(cat "$NOTES")"
kill "$SINK_PID" 2>/dev/null || true
vm_log "service manager notifications: $(grep -c . "$NOTES") ($(cut -d' ' -f1 "$NOTES" | sort | uniq -c | tr -s ' \n' ' '))"
grep -E 'stopped|login|error|WARN' "$VM_RESULTS/srptd.log" | tail -n 20 >&2 || true
grep -q 'leaked-channels 0' "$VM_RESULTS/srptd.log" || vm_die "srptd reported leaked channels"
cp "$VM_RESULTS/srptd.log" "$VM_RESULTS/srptd-1.log"

# SIGTERM while the initiator is logged in: srptd logs it out (SRP_T_LOGOUT,
# then disconnect) and exits 0 with every channel freed.
SRPTD_LOG=srptd=debug srptd_start --lun ram:64M --port "$SRP_PORT" --device "$RXE_DEV" --allow ANY --poller-nice 5
dev=$(SRP_VENDOR=SRPTD srp_login "$SRPTD_ID_EXT" "$SRPTD_IOC_GUID" 2)
dd if="$dev" of=/dev/null bs=64k count=16 iflag=direct 2>/dev/null
# --poller-nice 5: the pollers run at nice 5, the other threads at the
# process's own 0 (io_uring's workers inherit their poller's).
nices=$(process_threads "$SRPTD_PID" |
    awk '{ print ($1 ~ /^srptd-poll/ ? "poller" : $1 ~ /^iou-/ ? "io_uring" : "other"), $4 }' | sort | uniq -c)
vm_log "threads by nice value: $(tr -s ' \n' ' ' <<<"$nices")"
# (lines of `uniq -c`: count, kind, nice)
awk '$2 == "poller" { p = 1 } ($2 == "poller" && $3 != 5) || ($2 == "other" && $3 != 0) { bad = 1 }
     END { exit !(p && !bad) }' <<<"$nices" ||
    vm_die "pollers not all at nice 5, or other threads not at 0: $nices"
srptd_stop || vm_die "srptd exited non-zero on SIGTERM with an initiator logged in"
grep -q 'leaked-channels 0' "$VM_RESULTS/srptd.log" || vm_die "srptd reported leaked channels after target logout"
grep -E 'shutting down|channel closed key|stopped' "$VM_RESULTS/srptd.log" | sed 's/\x1b\[[0-9;]*m//g' | cut -c1-160 >&2 || true
srp_logout_all || true

# --config: a fixed identity, LUNs 0 and 5, and an ACL that maps only LUN 5
# to the kernel initiator (initiator_ext 0 + its port GUID, ib_srp's
# initiator port ID over RDMA/CM).
CFG=/tmp/smoke.toml
KERNEL_INI=0000000000000000$RXE_GUID_HEX
cat > "$CFG" <<EOT
[target]
id_ext = "00000000cafe0001"
port = $SRP_PORT
devices = ["$RXE_DEV"]
[[lun]]
number = 0
backstore = "ram:16M"
[[lun]]
number = 5
backstore = "ram:32M"
serial = "smoke-lun5"
[[acl]]
initiator = "$KERNEL_INI"
luns = [5]
[[acl]]
initiator = "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a"
EOT
srptd_start --config "$CFG"
[ "$SRPTD_ID_EXT" = 00000000cafe0001 ] && [ "$SRPTD_IOC_GUID" = 00000000cafe0001 ] ||
    vm_die "identity from the config file not used: id_ext=$SRPTD_ID_EXT ioc_guid=$SRPTD_IOC_GUID"
dev=$(SRP_VENDOR=SRPTD srp_login "$SRPTD_ID_EXT" "$SRPTD_IOC_GUID" 1)
sleep 2 # let the scan finish: a LUN 0 disk would show up now
n=$(srp_disks | grep -c . || true)
[ "$n" = 1 ] || vm_die "the ACL maps one LUN, the initiator sees $n: $(srp_disks | tr '\n' ' ')"
size=$(blockdev --getsize64 "$dev")
[ "$size" = $((32 << 20)) ] || vm_die "$dev is $size bytes: not LUN 5 (32 MiB)"
lun=$(basename "$(readlink -f "/sys/block/${dev#/dev/}/device")")
[ "${lun##*:}" = 5 ] || vm_die "$dev is $lun, expected LUN 5"
serial=$(sg_vpd -p sn "$dev" 2>/dev/null | sed -n 's/.*Unit serial number: *//p')
[ "$serial" = smoke-lun5 ] || vm_die "unit serial '$serial', expected smoke-lun5"
fio_verify "$dev" 2 randwrite 4k 16 16M
vm_log "config file: identity, LUN 5 only, serial as configured"
srp_logout_all
srptd_stop || vm_die "srptd exited non-zero (config file run)"

# No [[acl]]: nobody gets in, and srptd says why at start.
printf '[target]\nport = %s\ndevices = ["%s"]\n[[lun]]\nnumber = 0\nbackstore = "ram:16M"\n' \
    "$SRP_PORT" "$RXE_DEV" > "$CFG"
srptd_start --config "$CFG"
grep -q 'no initiator may log in' "$VM_RESULTS/srptd.log" || vm_die "no warning about the missing ACL"
srp_load ch_count=1
if srp_write_add_target "id_ext=$SRPTD_ID_EXT,ioc_guid=$SRPTD_IOC_GUID,dest=$RXE_ADDR:$SRP_PORT" 2>/dev/null; then
    vm_die "a config file without [[acl]] let the initiator in"
fi
grep -c 'login rejected' "$VM_RESULTS/srptd.log" >/dev/null || vm_die "srptd did not log the rejected login"
srptd_stop || vm_die "srptd exited non-zero (no-ACL run)"
vm_log "config file without [[acl]]: login rejected"

# A bad value: srptd does not start, and names the file, line and key.
printf '[limits]\nqueue_depth = 9999\n' > "$CFG"
rc=0; out=$("$(srptd_bin)" --config "$CFG" 2>&1) || rc=$?
[ "$rc" = 2 ] || vm_die "bad config: exit status $rc, expected 2 ($out)"
case $out in
    *"$CFG:2: limits.queue_depth = 9999: must be between 1 and 4096"*) ;;
    *) vm_die "bad config: unexpected message: $out" ;;
esac
vm_log "bad config file refused: $out"
vm_log "PASS srptd-smoke"
