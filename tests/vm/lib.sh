# shellcheck shell=bash
# Helpers for end-to-end scenarios run INSIDE the throwaway VM started by
# scripts/vm-run.sh (Debian 6.1 kernel, root, host root fs read-only over 9p).
#
#   . "$REPO/tests/vm/lib.sh"
#   rxe_setup                           # soft-RoCE rxe0 on dummy0, 169.254.77.1
#   lio_ramdisk_target 65536            # kernel ib_srpt + LIO rd_mcp, port 5555
#   dev=$(srp_login "$LIO_ID_EXT" "$LIO_IOC_GUID" 2)   # -> /dev/sdX
#   fio_verify "$dev" 3
#   srp_logout_all; srp_unload
#   lio_teardown                        # ib_srpt + target_core_mod unloaded
#
# Everything logs to stderr; functions that "return" something print it on
# stdout. On failure, call vm_collect_logs (vm_trap_failures does that for
# you) to save dmesg and state to $VM_RESULTS.
#
# Facts (checked on 6.1.0 under TCG, see README "Testing"):
#  - rxe must sit on a real-ish netdev with a non-loopback address: dummy0
#    with a 169.254.x.x/32 address works; lo/127.x, veth pairs and other
#    network namespaces do not.
#  - ib_srpt on 6.1 takes its RDMA/CM port from
#    /sys/kernel/config/target/srpt/discovery_auth/rdma_cm_port, not from a
#    module parameter.
#  - While ib_srpt is loaded it owns the RDMA/CM port and the DevMgt MAD
#    class on rxe0; lio_teardown removes the configfs objects and unloads
#    ib_srpt and target_core_mod so that our userspace target can take over.

: "${VM_RESULTS:=/tmp}"
: "${REPO:=$(pwd)}"

RXE_DEV=${RXE_DEV:-rxe0}
RXE_NETDEV=${RXE_NETDEV:-dummy0}
RXE_MAC=${RXE_MAC:-02:00:00:00:77:01}
RXE_ADDR=${RXE_ADDR:-169.254.77.1}
SRP_PORT=${SRP_PORT:-5555}
LIO_VENDOR=LIO-ORG
CFS=/sys/kernel/config
LIO=$CFS/target

vm_log() { printf '[%6s] %s\n' "$(cut -d' ' -f1 /proc/uptime)" "$*" >&2; }
vm_die() { vm_log "FAIL: $*"; return 1; }

# wait_until <timeout_s> <command...>: poll every 0.2 s until the command
# succeeds; non-zero if it never does.
wait_until() {
    local t=$1; shift
    local end=$(( $(date +%s) + t ))
    until "$@" >/dev/null 2>&1; do
        [ "$(date +%s)" -lt "$end" ] || return 1
        sleep 0.2
    done
}

# Save dmesg and some state into $VM_RESULTS (best effort).
vm_collect_logs() {
    local d=${VM_RESULTS:-/tmp}
    dmesg > "$d/dmesg.txt" 2>/dev/null || true
    {
        echo "== lsmod"; lsmod
        echo "== rdma link"; rdma link show
        echo "== ip addr"; ip addr
        echo "== scsi"; ls -l /sys/class/scsi_disk 2>&1
        echo "== srp ports"; ls -l /sys/class/srp_remote_ports 2>&1
    } > "$d/state.txt" 2>&1 || true
    vm_log "dmesg and state saved to $d/{dmesg,state}.txt"
}

# Install an EXIT trap that saves logs when the script fails, then runs
# the cleanups registered with vm_on_exit (a script never sets its own
# EXIT trap: it would replace this one).
VM_EXIT_HOOKS=()
vm_on_exit() { VM_EXIT_HOOKS+=("$1"); }
_vm_exit() {
    local rc=$? h
    if [ $rc -ne 0 ]; then vm_log "script failed (exit $rc)"; vm_collect_logs; dmesg | tail -n 40 >&2; fi
    for h in "${VM_EXIT_HOOKS[@]}"; do eval "$h" || true; done
    return $rc
}
vm_trap_failures() {
    trap _vm_exit EXIT
}

# tracefs: prints the tracing directory, mounting tracefs there if needed.
tracefs() {
    local tr=/sys/kernel/tracing
    [ -d "$tr/events" ] || mount -t tracefs nodev "$tr" 2>/dev/null || true
    echo "$tr"
}

########################################################################
# soft-RoCE

_rxe_active() {
    grep -q ACTIVE "/sys/class/infiniband/$RXE_DEV/ports/1/state" &&
        # the IPv4-mapped GID (index 1) shows the address is in the GID table
        grep -qv '^0000:0000:0000:0000:0000:0000:0000:0000$' \
            "/sys/class/infiniband/$RXE_DEV/ports/1/gids/1"
}

# rxe_setup: rdma_rxe on dummy0 (fixed MAC, so the node GUID is always
# 0000:00ff:fe00:7701) with 169.254.77.1/32. Exports RXE_GUID (with colons)
# and RXE_GUID_HEX (16 hex digits).
rxe_setup() {
    local m
    for m in rdma_rxe ib_uverbs rdma_ucm ib_umad; do
        modprobe "$m" || { vm_die "modprobe $m"; return 1; }
    done
    if ! ip link show "$RXE_NETDEV" >/dev/null 2>&1; then
        ip link add "$RXE_NETDEV" type dummy
    fi
    ip link set "$RXE_NETDEV" address "$RXE_MAC"
    ip addr replace "$RXE_ADDR/32" dev "$RXE_NETDEV"
    ip link set "$RXE_NETDEV" up
    if [ ! -e "/sys/class/infiniband/$RXE_DEV" ]; then
        rdma link add "$RXE_DEV" type rxe netdev "$RXE_NETDEV" ||
            { vm_die "rdma link add $RXE_DEV"; return 1; }
    fi
    wait_until 20 _rxe_active || { vm_die "$RXE_DEV port not ACTIVE with an IPv4 GID"; return 1; }
    # device nodes come from devtmpfs (no udev in the guest)
    wait_until 10 test -c /dev/infiniband/uverbs0 ||
        { vm_die "/dev/infiniband/uverbs0 missing"; return 1; }
    RXE_GUID=$(cat "/sys/class/infiniband/$RXE_DEV/node_guid")
    RXE_GUID_HEX=$(echo "$RXE_GUID" | tr -d :)
    export RXE_GUID RXE_GUID_HEX
    vm_log "rxe: $RXE_DEV on $RXE_NETDEV $RXE_ADDR node_guid $RXE_GUID"
}

########################################################################
# Kernel reference target: ib_srpt + LIO ramdisk

_lio_mount_configfs() {
    grep -q " $CFS configfs" /proc/mounts || mount -t configfs none "$CFS"
}

# lio_ramdisk_target <size_pages> [serial]: one rd_mcp LUN of size_pages
# 4 KiB pages behind kernel ib_srpt on $SRP_PORT (5555). ACLs for the
# initiator's IPv4 address and for the node GUID. Exports LIO_ID_EXT and
# LIO_IOC_GUID (16 hex digits, both the node GUID) for srp_login.
lio_ramdisk_target() {
    local pages=${1:-65536} serial=${2:-srptd-lio-ref-0001}
    _lio_backstore rd_mcp_0/ramdisk "rd_pages=$pages" "$serial" || return 1
    _lio_export "$LIO/core/rd_mcp_0/ramdisk" "rd_mcp $pages pages"
}

# lio_iblock_target <block device> [serial]: as lio_ramdisk_target, with a
# LIO iblock backstore on the device.
lio_iblock_target() {
    local dev=$1 serial=${2:-srptd-lio-ref-0001}
    _lio_backstore iblock_0/blk "udev_path=$dev" "$serial" || return 1
    _lio_export "$LIO/core/iblock_0/blk" "iblock $dev"
}

# lio_fileio_target <file> <size_bytes> [serial]: as lio_ramdisk_target,
# with a LIO fileio backstore on the file, buffered with write-back
# caching (fd_buffered_io=1: WCE=1, as srptd reports for a file).
lio_fileio_target() {
    local file=$1 size=$2 serial=${3:-srptd-lio-ref-0001}
    _lio_backstore fileio_0/file "fd_dev_name=$file,fd_dev_size=$size,fd_buffered_io=1" "$serial" || return 1
    _lio_export "$LIO/core/fileio_0/file" "fileio $file"
}

# _lio_backstore <hba/name> <control string> <serial>: create and enable
# a LIO backstore (loading ib_srpt and the target core).
_lio_backstore() {
    modprobe target_core_mod && modprobe ib_srpt || { vm_die "modprobe ib_srpt"; return 1; }
    _lio_mount_configfs
    local d=$LIO/core/$1
    mkdir -p "$d"
    echo "$2" > "$d/control"
    echo 1 > "$d/enable" || { vm_die "enabling LIO backstore $1 ($2)"; return 1; }
    echo "$3" > "$d/wwn/vpd_unit_serial"
}

# _lio_export <backstore dir> <description>: LUN 0 of ib_srpt's target
# port on $SRP_PORT with ACLs for the initiator's address and node GUID.
_lio_export() {
    local bs=$1 a guid
    mkdir -p "$LIO/srpt"
    echo "$SRP_PORT" > "$LIO/srpt/discovery_auth/rdma_cm_port"
    guid=$(cat "/sys/class/infiniband/$RXE_DEV/node_guid")
    local p=$LIO/srpt/$guid/$guid
    mkdir -p "$p/lun/lun_0"
    ln -s "$bs" "$p/lun/lun_0/$(basename "$bs")"
    for a in "$RXE_ADDR" "$guid"; do
        mkdir -p "$p/acls/$a/lun_0"
        ln -s "$p/lun/lun_0" "$p/acls/$a/lun_0/"
    done
    echo 1 > "$p/enable"
    LIO_ID_EXT=$(echo "$guid" | tr -d :)
    LIO_IOC_GUID=$LIO_ID_EXT
    export LIO_ID_EXT LIO_IOC_GUID
    vm_log "lio: ib_srpt $2 on port $SRP_PORT, id_ext=$LIO_ID_EXT"
}

# lio_teardown: remove every srpt/LIO configfs object in reverse order of
# creation, then unload ib_srpt and the target core. Log out initiators
# first (srp_logout_all), otherwise sessions keep the modules busy.
# Fails if ib_srpt or target_core_mod is still loaded at the end.
lio_teardown() {
    local f d
    if [ -d "$LIO/srpt" ]; then
        # srpt/<wwn>/<tpg>
        for d in "$LIO"/srpt/*/*/; do
            [ -e "$d/enable" ] || continue
            echo 0 > "$d/enable" 2>/dev/null || true
            for f in "$d"/acls/*/lun_*/*; do [ -L "$f" ] && rm -f "$f"; done
            for f in "$d"/acls/*/lun_*; do [ -d "$f" ] && rmdir "$f"; done
            for f in "$d"/acls/*; do [ -d "$f" ] && rmdir "$f"; done
            for f in "$d"/lun/*/*; do [ -L "$f" ] && rm -f "$f"; done
            for f in "$d"/lun/*; do [ -d "$f" ] && rmdir "$f"; done
            rmdir "$d"
        done
        for d in "$LIO"/srpt/*/; do
            case "$d" in */discovery_auth/) continue ;; esac
            rmdir "$d" 2>/dev/null || true
        done
        # The fabric's own group holds a reference on ib_srpt.
        rmdir "$LIO/srpt" || { vm_die "rmdir $LIO/srpt: $(ls "$LIO/srpt")"; return 1; }
    fi
    if [ -d "$LIO/core" ]; then
        for d in "$LIO"/core/*/*/; do
            [ -e "$d/control" ] && rmdir "$d"
        done
        for d in "$LIO"/core/*/; do
            case "$d" in */alua/) continue ;; esac
            rmdir "$d" 2>/dev/null || true
        done
    fi
    if lsmod | grep -c '^ib_srpt ' >/dev/null; then
        wait_until 20 rmmod ib_srpt || { vm_die "rmmod ib_srpt: $(lsmod | grep ib_srpt)"; return 1; }
    fi
    # target_core_{iblock,file,pscsi,user} may have been pulled in; rd is
    # built into target_core_mod on Debian.
    for m in target_core_user target_core_pscsi target_core_file target_core_iblock; do
        lsmod | grep -c "^$m " >/dev/null && rmmod "$m"
    done
    if lsmod | grep -c '^target_core_mod ' >/dev/null; then
        wait_until 20 rmmod target_core_mod ||
            { vm_die "rmmod target_core_mod: $(lsmod | grep target_core)"; return 1; }
    fi
    if lsmod | grep -cE '^(ib_srpt|target_core_mod) ' >/dev/null; then
        vm_die "kernel target still loaded"; return 1
    fi
    vm_log "lio: torn down, ib_srpt and target_core_mod unloaded"
}

########################################################################
# Kernel initiator: ib_srp

# SCSI disks behind ib_srp hosts, one "sdX VENDOR" per line.
srp_disks() {
    local h d host proc
    for d in /sys/block/sd*; do
        [ -e "$d/device" ] || continue
        [[ $(readlink -f "$d/device") =~ /host([0-9]+)/ ]] || continue
        host=host${BASH_REMATCH[1]}
        proc=$(cat "/sys/class/scsi_host/$host/proc_name" 2>/dev/null || true)
        [ "$proc" = ib_srp ] || continue
        printf '%s %s\n' "${d##*/}" "$(tr -d ' ' < "$d/device/vendor")"
    done
}

# The first SRP disk whose vendor is $1 ("" = any). srp_disks runs to the
# end before anything is selected (an early-exiting reader would SIGPIPE it
# under pipefail: scripts/lint-pipelines.py).
_srp_disk_with_vendor() {
    local disks
    disks=$(srp_disks)
    awk -v v="$1" 'NF && !f && ($2 == v || v == "") { print $1; f = 1 } END { exit !f }' <<<"$disks"
}

# wait_for_disk <vendor> [timeout_s]: wait for a SCSI disk behind ib_srp
# whose INQUIRY vendor (spaces stripped) is <vendor> ("" = any), print
# /dev/sdX.
wait_for_disk() {
    local vendor=$1 t=${2:-30} sd
    wait_until "$t" _srp_disk_with_vendor "$vendor" ||
        { vm_die "no SRP disk with vendor '$vendor' after ${t}s (have: $(srp_disks | tr '\n' ' '))"; return 1; }
    sd=$(_srp_disk_with_vendor "$vendor")
    # size is known once the disk has been revalidated
    wait_until 10 _disk_has_size "$sd" || true
    echo "/dev/$sd"
}

_disk_has_size() { [ "$(cat "/sys/block/$1/size" 2>/dev/null || echo 0)" -gt 0 ]; }

# srp_load [ib_srp module params...]: (re)load ib_srp with these params.
# SRP_DYNDBG=1 also enables its pr_debug/dev_dbg output (dyndbg=+p).
srp_load() {
    if lsmod | grep -c '^ib_srp ' >/dev/null; then
        srp_logout_all
        rmmod ib_srp || { vm_die "rmmod ib_srp"; return 1; }
    fi
    local dbg=()
    [ "${SRP_DYNDBG:-0}" = 1 ] && dbg=(dyndbg=+p)
    vm_log "modprobe ib_srp $* ${dbg[*]}"
    modprobe ib_srp "$@" "${dbg[@]}" || { vm_die "modprobe ib_srp $*"; return 1; }
    wait_until 10 test -e "/sys/class/infiniband_srp/srp-$RXE_DEV-1/add_target" ||
        { vm_die "no /sys/class/infiniband_srp/srp-$RXE_DEV-1"; return 1; }
}

srp_unload() {
    lsmod | grep -c '^ib_srp ' >/dev/null || return 0
    srp_logout_all
    rmmod ib_srp
}

# srp_write_add_target <line>: write one add_target line. ib_srp refuses a
# login (EEXIST, "Already connected to target port") while an earlier one
# with the same id_ext, ioc_guid and initiator_ext is still on its target
# list, and its removal work takes the target off that list last, after the
# remote port and the SCSI host have left sysfs: no sysfs entry says when a
# re-login will be accepted. So EEXIST means "not yet": retry for 30 s.
srp_write_add_target() {
    local line=$1 end=$(( $(date +%s) + 30 )) err
    while :; do
        if err=$( { echo "$line" > "/sys/class/infiniband_srp/srp-$RXE_DEV-1/add_target"; } 2>&1 ); then
            return 0
        fi
        case $err in
            *"File exists"*) ;;
            *) vm_log "add_target refused: $err"; return 1 ;;
        esac
        if [ "$(date +%s)" -ge "$end" ]; then
            vm_log "add_target: the initiator still lists the earlier login after 30 s"; return 1
        fi
        sleep 0.2
    done
}

# srp_login <id_ext> <ioc_guid> [ch_count] [extra ib_srp module params...]
# Loads ib_srp with ch_count (default 1) and the extra params, logs in to
# dest=$RXE_ADDR:$SRP_PORT through RDMA/CM, waits for the disk whose vendor
# is $SRP_VENDOR (default LIO-ORG; "" = any) and prints /dev/sdX.
# SRP_TARGET_OPTS may add add_target options (e.g. "queue_size=32").
srp_login() {
    local id_ext=$1 ioc_guid=$2 ch=${3:-1}
    shift 2; [ $# -gt 0 ] && shift
    srp_load "ch_count=$ch" "$@" || return 1
    local line="id_ext=$id_ext,ioc_guid=$ioc_guid,dest=$RXE_ADDR:$SRP_PORT"
    [ -n "${SRP_TARGET_OPTS:-}" ] && line="$line,$SRP_TARGET_OPTS"
    vm_log "add_target $line"
    if ! srp_write_add_target "$line"; then
        vm_die "add_target failed: $(dmesg | tail -n 5)"; return 1
    fi
    wait_for_disk "${SRP_VENDOR-$LIO_VENDOR}" 30
}

# srp_logout_all: delete every SRP remote port and wait for the remote
# ports, their SCSI hosts and the disks to go. (The initiator may still be
# tearing the connection down after that: re-login through
# srp_write_add_target.)
srp_logout_all() {
    local p
    for p in /sys/class/srp_remote_ports/port-*; do
        [ -e "$p/delete" ] || continue
        vm_log "logout ${p##*/}"
        echo 1 > "$p/delete" || true
    done
    wait_until 30 _no_srp_ports ||
        { vm_die "SRP remote ports still present: $(srp_ports | tr '\n' ' ')"; return 1; }
    wait_until 30 _no_srp_hosts || { vm_die "ib_srp SCSI hosts still present: $(srp_hosts | tr '\n' ' ')"; return 1; }
    wait_until 30 _no_srp_disks || { vm_die "SRP disks still present"; return 1; }
}
# The conditions are functions: wait_until re-runs its command, but a
# $(...) in its arguments would be expanded once, before the first try.
_no_srp_ports() { [ -z "$(srp_ports)" ]; }
_no_srp_hosts() { [ -z "$(srp_hosts)" ]; }
_no_srp_disks() { [ -z "$(srp_disks)" ]; }

# How many times ib_srp has logged a channel in again after losing it
# (QP error, target restart) since boot.
srp_reconnects() { dmesg | grep -c 'ib_srp: reconnect succeeded' || true; }

# srp_hosts: the SCSI hosts of ib_srp ("hostH"), one per line.
srp_hosts() {
    local h
    for h in /sys/class/scsi_host/host*; do
        [ "$(cat "$h/proc_name" 2>/dev/null)" = ib_srp ] && echo "${h##*/}"
    done
    return 0
}

# Number of connected RDMA channels of the (single) SRP SCSI host.
srp_ch_count() {
    local h
    for h in /sys/class/scsi_host/host*; do
        [ "$(cat "$h/proc_name" 2>/dev/null)" = ib_srp ] || continue
        cat "$h/ch_count"; return 0
    done
    return 1
}

########################################################################
# fio

# fio_verify <dev> [runtime_s] [rw] [bs] [iodepth] [size]: write with crc32c
# verification headers, then read everything back and check it
# (verify_fatal). Default: randwrite 4k, iodepth 16, ~3 s of writes over a
# 64 MiB region. Output goes to stderr and $VM_RESULTS/fio-<n>.txt.
fio_verify() {
    local dev=$1 rt=${2:-3} rw=${3:-randwrite} bs=${4:-4k} qd=${5:-16} size=${6:-64M}
    local out=$VM_RESULTS/fio-verify-$rw-$bs-$$-$RANDOM.txt
    vm_log "fio verify $rw bs=$bs qd=$qd runtime=${rt}s on $dev"
    if fio --name=verify --filename="$dev" --direct=1 --ioengine=libaio \
        --rw="$rw" --bs="$bs" --iodepth="$qd" --size="$size" --runtime="$rt" \
        --verify=crc32c --verify_fatal=1 --do_verify=1 --verify_state_save=0 \
        --output="$out" >&2; then
        grep -E 'IOPS=|err=' "$out" >&2 || true
        return 0
    fi
    cat "$out" >&2 || true
    vm_die "fio verify on $dev"
}

# fio_run <dev> <rw> <bs> [runtime_s] [iodepth]: timed job, prints IOPS
# and bandwidth as "iops=<n> bw_kib=<n>".
fio_run() {
    local dev=$1 rw=$2 bs=$3 rt=${4:-8} qd=${5:-32}
    fio --name=run --filename="$dev" --direct=1 --ioengine=libaio --rw="$rw" \
        --bs="$bs" --iodepth="$qd" --numjobs=1 --runtime="$rt" --time_based \
        --output-format=terse --terse-version=3 |
        awk -F';' -v rw="$rw" '{
            if (rw ~ /write/) print "iops=" $49 " bw_kib=" $48;
            else print "iops=" $8 " bw_kib=" $7 }'
}

########################################################################
# Our userspace target

# srptd_bin: path of the srptd binary built on the host (release preferred,
# override with SRPTD).
srptd_bin() {
    local b
    for b in ${SRPTD:-} "$REPO/target/release/srptd" "$REPO/target/debug/srptd"; do
        [ -x "$b" ] && { echo "$b"; return 0; }
    done
    vm_die "no srptd binary (build it on the host first)"
}

# srptd_start [args...]: start srptd (default args: --lun ram:256M --port
# $SRP_PORT --device $RXE_DEV --allow ANY), wait for its
# "ready id_ext=.. ioc_guid=.. port=.." line, export SRPTD_PID,
# SRPTD_ID_EXT, SRPTD_IOC_GUID, SRPTD_PORT. Log: $VM_RESULTS/srptd.log.
# The kernel target must not be loaded (lio_teardown).
srptd_start() {
    local bin log=$VM_RESULTS/srptd.log line
    bin=$(srptd_bin) || return 1
    if lsmod | grep -c '^ib_srpt ' >/dev/null; then vm_die "ib_srpt is loaded; run lio_teardown first"; return 1; fi
    [ $# -gt 0 ] || set -- --lun ram:256M --port "$SRP_PORT" --device "$RXE_DEV" --allow ANY
    vm_log "starting $bin $*"
    : > "$log"
    # SRPTD_WRAPPER: a command that execs srptd (same PID), e.g. the
    # seccomp filter of examples/deny_io_uring.rs.
    ${SRPTD_WRAPPER:+"$SRPTD_WRAPPER"} "$bin" "$@" >> "$log" 2>&1 &
    SRPTD_PID=$!
    local end=$(( $(date +%s) + ${SRPTD_READY_TIMEOUT:-30} ))
    until grep -q '^ready ' "$log"; do
        if _pid_gone "$SRPTD_PID"; then
            local rc=0; wait "$SRPTD_PID" || rc=$?
            cat "$log" >&2; SRPTD_PID=
            vm_die "srptd exited with status $rc before reporting ready"; return 1
        fi
        if [ "$(date +%s)" -ge "$end" ]; then
            kill "$SRPTD_PID" 2>/dev/null || true
            cat "$log" >&2
            vm_die "srptd did not report ready within ${SRPTD_READY_TIMEOUT:-30}s"; return 1
        fi
        sleep 0.2
    done
    line=$(grep -m1 '^ready ' "$log")
    SRPTD_ID_EXT=$(echo "$line" | sed -n 's/.*id_ext=\([0-9a-fA-F]*\).*/\1/p')
    SRPTD_IOC_GUID=$(echo "$line" | sed -n 's/.*ioc_guid=\([0-9a-fA-F]*\).*/\1/p')
    SRPTD_PORT=$(echo "$line" | sed -n 's/.*port=\([0-9]*\).*/\1/p')
    export SRPTD_PID SRPTD_ID_EXT SRPTD_IOC_GUID SRPTD_PORT
    vm_log "srptd ready: $line (pid $SRPTD_PID)"
}

# true once <pid> has exited (a zombie child counts as exited)
_pid_gone() {
    [ ! -e "/proc/$1" ] || [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" = Z ]
}

# srptd_stop: SIGTERM, then SIGKILL after 10 s; returns srptd's exit status.
srptd_stop() {
    [ -n "${SRPTD_PID:-}" ] || return 0
    kill -TERM "$SRPTD_PID" 2>/dev/null || true
    if ! wait_until 10 _pid_gone "$SRPTD_PID"; then
        vm_log "srptd did not exit on SIGTERM; killing"
        kill -KILL "$SRPTD_PID" 2>/dev/null || true
    fi
    local rc=0
    wait "$SRPTD_PID" || rc=$?
    SRPTD_PID=
    return $rc
}

########################################################################
# More ib_srp helpers: several logins, disks by LUN, srptd's counters

# srp_ports: the SRP remote ports ("port-H:N"), one per line.
srp_ports() { ls /sys/class/srp_remote_ports 2>/dev/null | sort; }

# sgx <command...>: an sg3_utils command, run again (at most 3 times) while
# it reports a unit attention: reservation and ALUA changes queue them for
# other nexuses. Prints the output, returns the last status.
sgx() {
    local out rc i
    for i in 1 2 3; do
        rc=0
        out=$("$@" 2>&1) || rc=$?
        grep -qi 'unit attention' <<<"$out" || break
        vm_log "unit attention (try $i): $*"
    done
    printf '%s\n' "$out"
    return "$rc"
}

# srp_add_target <id_ext> <ioc_guid> [extra add_target options]: one more
# login through the already loaded ib_srp (no module reload), e.g. with
# "initiator_ext=0000000000000001" for a second I_T nexus. Prints the new
# remote port's name (port-H:N); its SCSI host is hostH.
srp_add_target() {
    local before n after line="id_ext=$1,ioc_guid=$2,dest=$RXE_ADDR:$SRP_PORT"
    [ -n "${3:-}" ] && line="$line,$3"
    before=$(srp_ports)
    n=$(echo "$before" | grep -c . || true)
    vm_log "add_target $line"
    srp_write_add_target "$line" ||
        { vm_die "add_target failed: $(dmesg | tail -n 3)"; return 1; }
    wait_until 20 _srp_ports_more_than "$n" ||
        { vm_die "no new SRP remote port"; return 1; }
    after=$(srp_ports)
    comm -13 <(echo "$before") <(echo "$after") | sed -n 1p
}

_srp_ports_more_than() { [ "$(srp_ports | wc -l)" -gt "$1" ]; }

# srp_port_delete <port-H:N>: log that remote port out, wait until it and
# its SCSI host hostH are gone. (A re-login of the same nexus may still be
# refused for a moment after: srp_write_add_target retries.)
srp_port_delete() {
    local host=${1#port-}
    host=host${host%%:*}
    vm_log "logout $1"
    echo 1 > "/sys/class/srp_remote_ports/$1/delete" || return 1
    wait_until 30 test ! -e "/sys/class/srp_remote_ports/$1" || { vm_die "$1 still present"; return 1; }
    wait_until 30 test ! -e "/sys/class/scsi_host/$host" || { vm_die "$host of $1 still present"; return 1; }
}

# srp_lun_dev <lun> [scsi host number]: /dev/sdX of that LUN behind ib_srp
# (any ib_srp host, or only host H), waiting up to 30 s for it to appear.
_srp_lun_dev() {
    local lun=$1 host=${2:-} d addr h
    for d in /sys/block/sd*; do
        [ -e "$d/device" ] || continue
        addr=$(basename "$(readlink -f "$d/device")") # H:C:T:L
        h=${addr%%:*}
        [ "${addr##*:}" = "$lun" ] || continue
        [ -z "$host" ] || [ "$h" = "$host" ] || continue
        [ "$(cat "/sys/class/scsi_host/host$h/proc_name" 2>/dev/null)" = ib_srp ] || continue
        [ "$(cat "$d/size")" -gt 0 ] || continue
        echo "/dev/${d##*/}"; return 0
    done
    return 1
}
srp_lun_dev() {
    wait_until 30 _srp_lun_dev "$@" || { vm_die "no disk for LUN $1 ${2:+on host$2}"; return 1; }
    _srp_lun_dev "$@"
}

# srptd_counter <name> [log]: a counter from srptd's exit summary line
# ("srptd: stopped: logins N ... external-tables N ..."), e.g. immediate.
srptd_counter() {
    local log=${2:-$VM_RESULTS/srptd.log}
    sed 's/\x1b\[[0-9;]*m//g' "$log" | grep -o "stopped: .*" | tail -n1 |
        grep -o " $1 [0-9]*" | awk '{ print $2 }' | grep . ||
        { vm_die "no counter '$1' in srptd's exit summary"; return 1; }
}

# process_threads <pid>: one line per thread of <pid>: its name (comm,
# spaces turned to _), utime and stime in clock ticks, and nice value
# (fields 14, 15 and 19 of /proc/<pid>/task/<tid>/stat, counted after the
# name's closing parenthesis since a name may hold spaces and parentheses).
process_threads() {
    local t
    for t in /proc/"$1"/task/*; do
        awk '{ i = length($0); while (substr($0, i, 1) != ")") i--
               c = substr($0, index($0, "(") + 1, i - index($0, "(") - 1); gsub(/ /, "_", c)
               split(substr($0, i + 2), f, " "); print c, f[12], f[13], f[17] }' "$t/stat" 2>/dev/null || true
    done
}

# srptd_status <socket> <field>: one field of `srptd ctl status --json`,
# e.g. buffer_memory (bytes of mapped buffers: RAM LUNs, rings, pools) or
# heap_in_use (glibc's heap bytes in use): the leak measures tests compare,
# since RSS also moves with LUN pages first touched and freed heap kept.
srptd_status() {
    "$(srptd_bin)" ctl --socket "$1" status --json | jq -e ".$2"
}

# example_bin <name>: the binary of examples/<name> (release, else debug)
example_bin() {
    local b
    for b in "$REPO/target/release/examples/$1" "$REPO/target/debug/examples/$1"; do
        [ -x "$b" ] && { echo "$b"; return 0; }
    done
    vm_die "no $1 binary (cargo build --release --example $1 on the host)"
}

# srp_initiator_bin: the userspace test initiator (examples/srp_initiator.rs)
srp_initiator_bin() { example_bin srp_initiator; }

# A disk's thin-provisioning answers: LBPRZ of VPD B2h and LBPME of READ
# CAPACITY(16) (every line read, so no writer dies of SIGPIPE).
lbprz() { sg_vpd -p lbpv "$1" | awk -F': *' '/LBPRZ/ && !n { print $2; n = 1 }'; }
lbpme() { sg_readcap -l "$1" | sed -n 's/.*lbpme=\([01]\).*/\1/p' | sed -n 1p; }

# ext4_fill <disk> <dir>: a fresh ext4 on <disk> with three files of random
# data (3, 6 and 9 MiB), their checksums kept in <dir>/sums; <dir>/m is the
# mount point.
ext4_fill() {
    local dev=$1 dir=$2 i
    mkdir -p "$dir/m"
    mkfs.ext4 -q -F "$dev"
    mount "$dev" "$dir/m" || vm_die "ext4 on $dev does not mount"
    for i in 1 2 3; do
        head -c $(( i * 3 << 20 )) /dev/urandom > "$dir/m/f$i"
    done
    (cd "$dir/m" && sha256sum f* > "$dir/sums")
    umount "$dir/m"
}

# ext4_check <disk> <dir> <when>: the files ext4_fill wrote are intact and
# fsck finds nothing (<when> names the moment in messages).
ext4_check() {
    local dev=$1 dir=$2 when=$3
    mount "$dev" "$dir/m" || vm_die "$when: ext4 does not mount"
    (cd "$dir/m" && sha256sum -c --quiet "$dir/sums") || vm_die "$when: files differ"
    umount "$dir/m"
    fsck.ext4 -n -f "$dev" >&2 || vm_die "$when: fsck finds errors"
    vm_log "$when: ext4 files intact"
}
