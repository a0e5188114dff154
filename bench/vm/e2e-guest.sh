#!/usr/bin/env bash
# Guest side of bench/e2e.sh (run it through that script, or
# scripts/vm-run.sh bench/vm/e2e-guest.sh [options]).
#
# In rounds (one per run): srptd serving a LUN, then the kernel ib_srpt
# with the LIO backstore of the same kind (never both loaded at once): by
# --mode, a RAM LUN against a LIO ramdisk of the same size (ram), srptd
# file:/dev/nullb0 against LIO iblock on the same null_blk device (block),
# or srptd on a file (,buffered unless --file-direct) against LIO fileio
# (fd_buffered_io=1) on the same file, on ext4 over a
# memory-backed null_blk (file), or srptd rbd: on an RBD image against LIO
# iblock on the same image mapped by the kernel rbd driver (rbd; a
# single-node Ceph on 127.0.0.1 in the guest, scripts/ceph-test-cluster.sh,
# the image mapped only while the kernel target runs, so that librbd and
# krbd never pass its exclusive lock back and forth). Each
# logged into by the kernel initiator ib_srp with ch_count=2 and driven by
# the fio jobs of bench/fio/srp-bench.fio. Alternating the targets round by
# round keeps slow drifts of the (shared, emulated) machine from favouring
# one of them. With --interleave both targets are logged in at once and
# take turns case by case (see phase_both), so that the two runs of a case
# are minutes closer in time.
#
# For every fio run it records, in $VM_RESULTS/samples.tsv, the I/Os done
# (from /sys/block/<disk>/stat) in a window of the run's steady state
# (see run_case) and, over the same window: guest CPU time
# by /proc/stat category, the utime+stime of every kernel thread, and
# srptd's own utime+stime (all its threads). fio's JSON goes to
# $VM_RESULTS/fio/. bench/e2e-report.py turns that into the tables.
#
# Options:
#   --runs N             rounds (default 3)
#   --runtime S          seconds per fio job (default 10)
#   --size SIZE          LUN size for both targets, e.g. 256M (default 256M)
#   --cases "C:J ..."    fio sections (bench/fio/srp-bench.fio) with numjobs
#                        (default: every section with numjobs 1 and 2)
#   --profile CASE       after the last round of each target, one more run
#                        of CASE (numjobs 1) under `perf record -a -g`;
#                        reports in $VM_RESULTS/perf-<target>-*.txt
#   --srptd-args "..."   extra srptd options (e.g. "--pollers 2 --spin-us 0")
#   --rbd-client "..."   rbd mode: "key = value" lines (";"-separated) for
#                        the [client] section of the cluster's ceph.conf
#   --scrape HZ          the metrics-scrape comparison instead of srptd vs
#                        kernel: srptd runs with --metrics $METRICS_ADDR and
#                        every case runs twice per round, once plain (target
#                        "srptd") and once while bench/vm/scrape-loop.py GETs
#                        /metrics HZ times a second (target "srptd-scraped"),
#                        plain first in odd rounds, scraped first in even
#                        ones; no kernel target, no profile. Scrapes per run
#                        go to $VM_RESULTS/scrapes.tsv.
#   --mode ram|block|file|rbd  the backstores compared (default ram)
#   --file-direct        file mode: srptd's LUN without ,buffered (O_DIRECT)
#   --interleave         both targets logged in at once (srptd on port
#                        SRP_PORT+1 with --no-dm, as ib_srpt holds the
#                        device-management class; its login told apart by
#                        initiator_ext, as both targets use the port GUID
#                        for id_ext); in each round every case runs on both,
#                        srptd first in odd rounds, the kernel first in even
#                        ones. Not with rbd (librbd and krbd would pass the
#                        image's exclusive lock back and forth) or --scrape.
set -euo pipefail
. "$REPO/tests/vm/lib.sh"
vm_trap_failures

JOBFILE=$REPO/bench/fio/srp-bench.fio
RUNS=3
RUNTIME=10
SIZE=256M
CASES=
PROFILE_CASE=
SRPTD_EXTRA=
SCRAPE_HZ=
METRICS_ADDR=127.0.0.1:9469
MODE=ram
RBD_CLIENT=
FILE_OPTS=,buffered
INTERLEAVE=0

die_usage() { echo "e2e-guest: $*" >&2; exit 2; }
while [ $# -gt 0 ]; do
    case "$1" in
        --runs) RUNS=${2:?}; shift 2 ;;
        --runtime) RUNTIME=${2:?}; shift 2 ;;
        --size) SIZE=${2:?}; shift 2 ;;
        --cases) CASES=${2:?}; shift 2 ;;
        --profile) PROFILE_CASE=${2:?}; shift 2 ;;
        --srptd-args) SRPTD_EXTRA=${2-}; shift 2 ;;
        --rbd-client) RBD_CLIENT=${2-}; shift 2 ;;
        --scrape) SCRAPE_HZ=${2:?}; shift 2 ;;
        --mode) MODE=${2:?}; shift 2 ;;
        --file-direct) FILE_OPTS=; shift ;;
        --interleave) INTERLEAVE=1; shift ;;
        *) die_usage "unknown option $1" ;;
    esac
done
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die_usage "--runs $RUNS: not a positive number"
[[ $RUNTIME =~ ^[1-9][0-9]*$ ]] || die_usage "--runtime $RUNTIME: not a positive number"
[ -r "$JOBFILE" ] || die_usage "no fio job file $JOBFILE"
if [ -n "$SCRAPE_HZ" ]; then
    [[ $SCRAPE_HZ =~ ^[0-9]+(\.[0-9]+)?$ ]] && awk -v h="$SCRAPE_HZ" 'BEGIN { exit !(h > 0 && h <= 1000) }' ||
        die_usage "--scrape $SCRAPE_HZ: expected a rate in scrapes per second (0 < HZ <= 1000)"
    [ -z "$PROFILE_CASE" ] || die_usage "--profile does not combine with --scrape"
    command -v python3 >/dev/null || die_usage "--scrape needs python3 in the guest"
    SRPTD_EXTRA="--metrics $METRICS_ADDR $SRPTD_EXTRA"
fi
case "$MODE" in ram|block|file|rbd) ;; *) die_usage "--mode $MODE: expected ram, block, file or rbd" ;; esac
if [ "$INTERLEAVE" = 1 ]; then
    [ "$MODE" != rbd ] || die_usage "--interleave does not combine with --mode rbd (the image's exclusive lock)"
    [ -z "$SCRAPE_HZ" ] || die_usage "--interleave does not combine with --scrape"
fi
# Where srptd listens: beside ib_srpt (--interleave) on the next port and
# without the device-management agent, as ib_srpt holds that class.
SRPTD_LISTEN=(--port "$SRP_PORT")
[ "$INTERLEAVE" = 0 ] || SRPTD_LISTEN=(--port $(( SRP_PORT + 1 )) --no-dm)
sections=$(sed -n 's/^\[\([^]]*\)\]$/\1/p' "$JOBFILE" | grep -vx global)
if [ -z "$CASES" ]; then
    for nj in 1 2; do for s in $sections; do CASES+="$s:$nj "; done; done
fi
for c in $CASES; do
    grep -qx "${c%%:*}" <<<"$sections" || die_usage "case $c: no section ${c%%:*} in $JOBFILE"
    [[ ${c##*:} =~ ^[12]$ ]] || die_usage "case $c: numjobs must be 1 or 2"
done

size_bytes=$(numfmt --from=iec "$SIZE") || die_usage "--size $SIZE: not a size"
[ $(( size_bytes % 4096 )) -eq 0 ] && [ "$size_bytes" -ge $((16 << 20)) ] ||
    die_usage "--size $SIZE: must be a multiple of 4 KiB and at least 16M"
pages=$(( size_bytes / 4096 ))
# ib_srp opens at most one channel per CPU
CHANNELS=$(( $(nproc) < 2 ? $(nproc) : 2 ))
# seconds between counter snapshots during a run (see run_case)
STEP=$(awk -v r="$RUNTIME" 'BEGIN { printf "%.2f", (r >= 5 ? 1 : r / 5) }')

OUT=$VM_RESULTS
mkdir -p "$OUT/fio"
SAMPLES=$OUT/samples.tsv
CLK_TCK=$(getconf CLK_TCK)
printf '%s\n' "target case numjobs round status window_ok window_s requests bytes user nice system idle iowait irq softirq steal kthread_ticks proc_ticks self_ticks clk_tck json reconnects qp_errors" |
    tr ' ' '\t' > "$SAMPLES"
# The backing of block and file modes: null_blk nullb0 of $SIZE (block:
# no memory behind it, the null device both targets are measured on), or
# for file mode a memory-backed null_blk with ext4 holding a $SIZE file,
# written in full (so reads are not of holes).
BENCH_FILE=/tmp/e2e-fs/lun.img
srptd_lun() {
    case "$MODE" in
        ram) echo "ram:$SIZE" ;;
        block) echo "file:/dev/nullb0" ;;
        file) echo "file:$BENCH_FILE$FILE_OPTS" ;;
        rbd) echo "rbd:rbd/bench,conf=$CEPH_DIR/ceph.conf" ;;
    esac
}
# rbd mode: the test cluster's image rbd/bench of $SIZE, written in full
# (reads of objects that do not exist would cost neither target anything).
CEPH_DIR=/tmp/e2e-ceph
RBD() { timeout 300 rbd -c "$CEPH_DIR/ceph.conf" "$@"; }
setup_rbd() {
    ip link set lo up
    modprobe rbd || vm_die "modprobe rbd"
    vm_on_exit '"$REPO/scripts/ceph-test-cluster.sh" stop "$CEPH_DIR"'
    CEPH_TEST_IMAGE=bench CEPH_TEST_IMAGE_SIZE=$SIZE CEPH_TEST_STORE_BYTES=$(( size_bytes + (512 << 20) )) \
        "$REPO/scripts/ceph-test-cluster.sh" start "$CEPH_DIR" > /dev/null || vm_die "the Ceph test cluster did not start"
    if [ -n "$RBD_CLIENT" ]; then
        printf '[client]\n' >> "$CEPH_DIR/ceph.conf"
        tr ';' '\n' <<<"$RBD_CLIENT" | sed 's/^ *//' >> "$CEPH_DIR/ceph.conf"
        vm_log "librbd options for srptd: $RBD_CLIENT"
    fi
    RBD bench --io-type write --io-pattern seq --io-size 4M --io-threads 4 --io-total "$size_bytes" rbd/bench > "$OUT/rbd-fill.txt" 2>&1 ||
        vm_die "filling rbd/bench failed: $(tail -n 3 "$OUT/rbd-fill.txt")"
    vm_log "backing for rbd mode: $(srptd_lun), $(RBD du rbd/bench 2>&1 | tail -n 1)"
}
# Maps rbd/bench with the kernel driver (msgr2 as the cluster speaks only
# that) and prints the device.
rbd_map() {
    RBD device map -o ms_mode=crc rbd/bench || vm_die "rbd device map rbd/bench failed"
}
setup_backing() {
    [ "$MODE" = ram ] && return 0
    [ "$MODE" = rbd ] && { setup_rbd; return 0; }
    modprobe null_blk nr_devices=0 || vm_die "modprobe null_blk"
    mountpoint -q /sys/kernel/config || mount -t configfs none /sys/kernel/config
    local d=/sys/kernel/config/nullb/nullb0 mib=$(( size_bytes >> 20 ))
    mkdir "$d"
    if [ "$MODE" = file ]; then
        echo $(( mib + mib / 8 + 64 )) > "$d/size"
        echo 1 > "$d/memory_backed"
    else
        echo "$mib" > "$d/size"
    fi
    echo 1 > "$d/power"
    wait_until 10 test -b /dev/nullb0 || vm_die "no /dev/nullb0"
    if [ "$MODE" = file ]; then
        modprobe ext4
        mkfs.ext4 -q -F /dev/nullb0
        mkdir -p /tmp/e2e-fs
        mount /dev/nullb0 /tmp/e2e-fs
        dd if=/dev/zero of="$BENCH_FILE" bs=1M count="$mib" conv=fsync status=none
    fi
    vm_log "backing for $MODE mode: $(srptd_lun)"
}

{
    echo "guest_kernel $(uname -r)"
    echo "guest_cpus $(nproc)"
    echo "guest_clocksource $(cat /sys/devices/system/clocksource/clocksource0/current_clocksource 2>/dev/null || echo '?')"
    echo "guest_mem_kib $(awk '/^MemTotal/ {print $2}' /proc/meminfo)"
    echo "cpu_model $(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)"
    echo "runs $RUNS"
    echo "runtime_s $RUNTIME"
    echo "snapshot_step_s $STEP"
    echo "size $SIZE"
    echo "size_bytes $size_bytes"
    echo "cases $CASES"
    echo "srptd $(srptd_bin) $("$(srptd_bin)" --version 2>&1 | sed -n 1p)"
    echo "mode $MODE"
    echo "srptd_args --lun $(srptd_lun) ${SRPTD_LISTEN[*]} --device $RXE_DEV --allow ANY $SRPTD_EXTRA"
    echo "fio $(fio --version)"
    echo "initiator ib_srp ch_count=2, $CHANNELS channels (other parameters default)"
    echo "interleave $INTERLEAVE"
    [ -z "$SCRAPE_HZ" ] || echo "scrape_hz $SCRAPE_HZ"
    [ -z "$RBD_CLIENT" ] || echo "rbd_client $RBD_CLIENT"
} > "$OUT/meta.txt"
SCRAPES=$OUT/scrapes.tsv
if [ -n "$SCRAPE_HZ" ]; then
    printf '%s\n' "target case numjobs round hz window_ok window_s scrapes_window ok_window bad_window scrapes ok bad scrape_ms_mean scrape_ms_max scraper_s scraper_ticks_window clk_tck" |
        tr ' ' '\t' > "$SCRAPES"
fi

########################################################################
# Counters. A snapshot must cost next to nothing and take no time (under
# TCG on a busy host a fork+exec can take a second), so everything here is
# bash builtins reading /proc and /sys: no subshells, results in globals.

# The utime+stime (clock ticks) in a /proc/<pid>/stat line. comm may hold
# spaces and parentheses: fields are counted after the last ") " (they are
# numbers and a state letter, nothing a glob would expand). Sets _F (fields
# from state on) and _T (utime+stime). An array assignment: a here-string
# costs 4 times as much.
_stat_fields() {
    # shellcheck disable=SC2206
    _F=(${1##*) })
    _T=$(( _F[11] + _F[12] ))
}

# snap: append one snapshot to SNAPS as "t ios sectors proc kthr user nice
# system idle iowait irq softirq steal self": EPOCHREALTIME; reads+writes
# completed and sectors moved on $SNAP_DISK; utime+stime of $SNAP_PID (all
# its threads, "-" without one); utime+stime of all kernel threads alive
# (flags & PF_KTHREAD 0x00200000); the /proc/stat "cpu" line; utime+stime
# of this shell, i.e. what the snapshots themselves cost (subtracted from
# the guest's busy time). While a scraper runs ($SCRAPER_PID, --scrape), a
# 15th field: its utime+stime+cutime+cstime ("-" if it is gone).
snap() {
    local line f kthr=0 proc=- x u n sy id io irq si st r rs w ws t self scr=
    t=$EPOCHREALTIME
    read -r x u n sy id io irq si st x < /proc/stat
    read -r r x rs x w x ws x < "/sys/block/$SNAP_DISK/stat"
    if [ -n "$SNAP_PID" ] && { read -r line < "/proc/$SNAP_PID/stat"; } 2>/dev/null; then
        _stat_fields "$line"; proc=$_T
    fi
    for f in /proc/[0-9]*/stat; do
        { read -r line < "$f"; } 2>/dev/null || continue
        # shellcheck disable=SC2206
        _F=(${line##*) })
        (( (_F[6] >> 21) & 1 )) && kthr=$(( kthr + _F[11] + _F[12] ))
    done
    read -r line < "/proc/$BASHPID/stat"
    _stat_fields "$line"; self=$_T
    if [ -n "${SCRAPER_PID:-}" ]; then
        scr=" -"
        if { read -r line < "/proc/$SCRAPER_PID/stat"; } 2>/dev/null; then
            _stat_fields "$line"; scr=" $(( _T + _F[13] + _F[14] ))"
        fi
    fi
    SNAPS+=("$t $(( r + w )) $(( rs + ws )) $proc $kthr $u $n $sy $id $io $irq $si $st $self$scr")
}

# _alive <pid>: the process exists and is not a zombie
_alive() {
    local line
    { read -r line < "/proc/$1/stat"; } 2>/dev/null || return 1
    _stat_fields "$line"
    [ "${_F[0]}" != Z ]
}

# _nap <seconds>: sleep without a fork (a read with a timeout on a pipe
# nobody writes to)
exec {_NAP_FD}<> <(:)
_nap() { read -r -t "$1" -u "$_NAP_FD" _ || true; }

# sets DISK_IOS: reads + writes completed on $SNAP_DISK
disk_ios() {
    local r w x
    read -r r x x x w x < "/sys/block/$SNAP_DISK/stat"
    DISK_IOS=$(( r + w ))
}

# srp_trouble: sets SRP_RECONNECTS and SRP_QP_ERRORS to the number of
# ib_srp reconnects ("reconnect succeeded/failed") and failed work requests
# ("failed RECV status WR flushed (5)" ...) in the kernel log so far, and
# SRP_ZERO_REQ_LIM to the times ib_srp found no credit (req_lim) left for a
# command, summed over its SCSI hosts (each such command went back to the
# SCSI midlayer as busy). Read before and after each run, outside its
# measurement window (it forks).
srp_trouble() {
    local log f v
    log=$(dmesg)
    SRP_RECONNECTS=$(grep -cE 'ib_srp: reconnect (succeeded|failed)' <<<"$log" || true)
    SRP_QP_ERRORS=$(grep -cE 'ib_srp: failed [A-Z_ ]+ status' <<<"$log" || true)
    SRP_ZERO_REQ_LIM=0
    for f in /sys/class/scsi_host/host*/zero_req_lim; do
        { read -r v < "$f"; } 2>/dev/null || continue
        SRP_ZERO_REQ_LIM=$(( SRP_ZERO_REQ_LIM + v ))
    done
}

########################################################################

# run_case <target> <dev> <case> <numjobs> <round> <pid or "">: one fio run,
# one line in samples.tsv.
#
# The counters are read over a window of the run's steady state, not over
# the whole fio process (fio takes seconds to start and exit under TCG;
# that must not count as I/O cost): a snapshot when the first I/O
# completes, then one every $STEP s while fio lives; the window ends at
# the last snapshot after which I/O still completed. Snapshots and naps are
# bash builtins reading /proc and /sys (no fork: under TCG on a busy host a
# fork+exec can take a second). window_ok is 0 when no such window exists
# (then the run's CPU figures are not used). A failing fio is logged and
# recorded with status "fio-exit-<rc>"; it does not stop the benchmark (the
# report flags the missing figures and fails).
#
# With SCRAPE_NOW=1 bench/vm/scrape-loop.py scrapes srptd's metrics from
# before fio's launch (it has made its first scrape) until fio has exited;
# its scrapes (fio/*.scrapes: start, duration, verdict) and its CPU time
# over the window go to scrapes.tsv.
run_case() {
    local target=$1 dev=$2 case=$3 nj=$4 round=$5
    local json rel rc=0 fpid idle scrape_log= t_scraper0=
    SNAP_DISK=${dev#/dev/} SNAP_PID=$6 SNAPS=() SCRAPER_PID=
    rel=fio/$target-$case-nj$nj-r$round.json
    json=$OUT/$rel
    srp_trouble
    local reconnects0=$SRP_RECONNECTS qp_errors0=$SRP_QP_ERRORS zero_req_lim0=$SRP_ZERO_REQ_LIM
    disk_ios; idle=$DISK_IOS
    if [ "${SCRAPE_NOW:-0}" = 1 ]; then
        scrape_log=/tmp/$target-$case-nj$nj-r$round.scrapes
        : > "$scrape_log"
        t_scraper0=$EPOCHREALTIME
        python3 "$REPO/bench/vm/scrape-loop.py" "$METRICS_ADDR" "$SCRAPE_HZ" "$scrape_log" &
        SCRAPER_PID=$!
        # python starts slowly under TCG: fio goes once the first scrape is in
        local t_ready=$(( ${EPOCHREALTIME/./} + 60000000 ))
        while [ ! -s "$scrape_log" ] && _alive "$SCRAPER_PID" && (( ${EPOCHREALTIME/./} < t_ready )); do
            _nap 0.05
        done
        [ -s "$scrape_log" ] || vm_log "SCRAPER NOT READY: no scrape within 60 s ($target $case numjobs=$nj round $round)"
    fi
    DEV=$dev RUNTIME=$RUNTIME NUMJOBS=$nj timeout -k 10 $(( RUNTIME + 120 )) \
        fio --section="$case" --output-format=json --output="$json" "$JOBFILE" \
        >/dev/null 2>"$json.err" &
    fpid=$!
    local t_launch=$EPOCHREALTIME
    while disk_ios; [ "$DISK_IOS" = "$idle" ] && _alive "$fpid"; do _nap 0.02; done
    # The snapshots must not starve when softirqs keep both vCPUs busy,
    # or the window is lost; they cost little (and their cost is measured).
    renice -n -10 -p "$BASHPID" >/dev/null 2>&1 || true
    while _alive "$fpid"; do
        snap
        _nap "$STEP"
    done
    renice -n 0 -p "$BASHPID" >/dev/null 2>&1 || true
    local t_exit=$EPOCHREALTIME
    wait "$fpid" || rc=$?
    local t_scraper1=
    if [ -n "$SCRAPER_PID" ]; then
        kill -TERM "$SCRAPER_PID" 2>/dev/null || true
        wait "$SCRAPER_PID" || true
        t_scraper1=$EPOCHREALTIME
    fi
    srp_trouble
    local reconnects=$(( SRP_RECONNECTS - reconnects0 )) qp_errors=$(( SRP_QP_ERRORS - qp_errors0 ))
    [ "$SRP_ZERO_REQ_LIM" = "$zero_req_lim0" ] ||
        vm_log "$target $case numjobs=$nj round $round: ib_srp out of credit $(( SRP_ZERO_REQ_LIM - zero_req_lim0 )) times"
    # the raw snapshots, for a closer look at a run
    {
        echo "# fio launched $t_launch, exited by $t_exit; t ios sectors proc kthr user nice system idle iowait irq softirq steal self${SCRAPER_PID:+ scraper}"
        printf '%s\n' "${SNAPS[@]}"
    } > "$json.snaps"
    local status=ok
    if [ "$rc" != 0 ]; then
        status=fio-exit-$rc
        vm_log "FIO FAILED ($rc): $target $case numjobs=$nj round $round: $(tail -n 3 "$json.err" | tr '\n' ' ')"
    fi
    [ -s "$json.err" ] || rm -f "$json.err"
    # the window: SNAPS[0] .. SNAPS[k], k the last with I/O after it
    local -a a b c
    local k=0 i window_ok=0
    for (( i = 1; i + 1 < ${#SNAPS[@]}; i++ )); do
        read -ra b <<<"${SNAPS[i]}"; read -ra c <<<"${SNAPS[i + 1]}"
        (( c[1] > b[1] )) && k=$i
    done
    read -ra a <<<"${SNAPS[0]:-0 0 0 - 0 0 0 0 0 0 0 0 0 0}"
    read -ra b <<<"${SNAPS[k]:-0 0 0 - 0 0 0 0 0 0 0 0 0 0}"
    [ "$k" -ge 1 ] && window_ok=1
    local cpu="" pt=-
    for i in 5 6 7 8 9 10 11 12; do cpu+="$(( b[i] - a[i] ))"$'\t'; done
    [ "${a[3]}" = - ] || [ "${b[3]}" = - ] || pt=$(( b[3] - a[3] ))
    local secs
    secs=$(awk -v a="${a[0]}" -v b="${b[0]}" 'BEGIN { printf "%.3f", b - a }')
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$target" "$case" "$nj" "$round" "$status" \
        "$window_ok" "$secs" "$(( b[1] - a[1] ))" "$(( (b[2] - a[2]) * 512 ))" \
        "$cpu" "$(( b[4] - a[4] ))" "$pt" "$(( b[13] - a[13] ))" "$CLK_TCK" "$rel" \
        "$reconnects" "$qp_errors" >> "$SAMPLES"
    [ "$reconnects" = 0 ] && [ "$qp_errors" = 0 ] ||
        vm_log "INITIATOR TROUBLE: $target $case numjobs=$nj round $round: $reconnects reconnects, $qp_errors failed work requests"
    if [ -n "$SCRAPER_PID" ]; then
        # scrapes in the window [SNAPS[0], SNAPS[k]] and over the scraper's life
        local sw st=- scr_s
        [ "${a[14]:--}" = - ] || [ "${b[14]:--}" = - ] || st=$(( b[14] - a[14] ))
        scr_s=$(awk -v a="$t_scraper0" -v b="$t_scraper1" 'BEGIN { printf "%.3f", b - a }')
        sw=$(awk -v a="${a[0]}" -v b="${b[0]}" '
            NF != 3 { next }
            { n++; ok += ($3 == "ok") }
            $1 >= a && $1 <= b { wn++; wok += ($3 == "ok"); d += $2; if ($2 > dmax) dmax = $2 }
            END { printf "%d\t%d\t%d\t%d\t%d\t%d\t%.2f\t%.2f", wn, wok, wn - wok, n, ok, n - ok,
                  wn ? d / wn * 1000 : 0, dmax * 1000 }' "$scrape_log")
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$target" "$case" "$nj" "$round" "$SCRAPE_HZ" \
            "$window_ok" "$secs" "$sw" "$scr_s" "$st" "$CLK_TCK" >> "$SCRAPES"
        cp "$scrape_log" "$json.scrapes"
        rm -f "$scrape_log"
        vm_log "$target $case numjobs=$nj round $round: scrapes in window, ok, bad, all, ok, bad, ms mean, max in window: $(tr '\t' ' ' <<<"$sw") over ${scr_s}s of scraping"
        SCRAPER_PID=
    fi
    vm_log "$target $case numjobs=$nj round $round: $status; first I/O $(awk -v a="$t_launch" -v b="${SNAPS[0]%% *}" 'BEGIN { printf "%.1f", b - a }')s after launch, fio exited $(awk -v a="$t_launch" -v b="$t_exit" 'BEGIN { printf "%.1f", b - a }')s after launch; window ${secs}s (${#SNAPS[@]} snapshots): $(( b[1] - a[1] )) requests, $(( (b[2] - a[2]) / 2 )) KiB"
}

# warm_up <dev> [pid]: what one counter snapshot costs here (it runs once a
# second during the measurements), then an unmeasured fio run: the first
# run pages fio and the modules in over 9p.
warm_up() {
    local dev=$1 pid=${2:-} t
    SNAP_DISK=${dev#/dev/} SNAP_PID=$pid SNAPS=()
    t=$EPOCHREALTIME; snap
    vm_log "one counter snapshot takes $(awk -v a="$t" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", (b - a) * 1000 }') ms"
    DEV=$dev RUNTIME=2 NUMJOBS=1 fio --section=randread-4k-qd32 --output=/dev/null "$JOBFILE" >/dev/null 2>&1 ||
        vm_log "warm-up fio failed on $dev"
}

run_all_cases() {
    local target=$1 dev=$2 round=$3 pid=${4:-} c
    warm_up "$dev" "$pid"
    for c in $CASES; do
        if [ -z "$SCRAPE_HZ" ]; then
            run_case "$target" "$dev" "${c%%:*}" "${c##*:}" "$round" "$pid"
            continue
        fi
        # plain, then scraped in odd rounds; the other way round in even ones
        local s order="plain scraped"
        (( round % 2 )) || order="scraped plain"
        for s in $order; do
            if [ "$s" = scraped ]; then
                SCRAPE_NOW=1
                run_case "$target-scraped" "$dev" "${c%%:*}" "${c##*:}" "$round" "$pid"
                SCRAPE_NOW=0
            else
                run_case "$target" "$dev" "${c%%:*}" "${c##*:}" "$round" "$pid"
            fi
        done
    done
}

# profile <target> <dev>: one run of $PROFILE_CASE under perf, system wide
# (software cpu-clock event: there is no PMU under TCG). Best effort.
profile() {
    local target=$1 dev=$2 data=/tmp/perf-$1.data perf section=${PROFILE_CASE%%:*} jobs=1
    [ -n "$PROFILE_CASE" ] || return 0
    [[ $PROFILE_CASE == *:* ]] && jobs=${PROFILE_CASE#*:}
    perf=$(command -v perf) || { vm_log "no perf: skipping the profile"; return 0; }
    vm_log "profiling $target: $PROFILE_CASE under perf record -a -g"
    if ! DEV=$dev RUNTIME=$RUNTIME NUMJOBS=$jobs "$perf" record --no-buildid-cache -a -g -e cpu-clock -F 999 -o "$data" -- \
        fio --section="$section" --output-format=json --output="$OUT/fio/$target-profile.json" "$JOBFILE" \
        > "$OUT/perf-$target-record.log" 2>&1; then
        vm_log "perf record failed: $(tail -n 3 "$OUT/perf-$target-record.log" | tr '\n' ' ')"
        return 0
    fi
    local r=("$perf" report -i "$data" --stdio --no-children)
    "${r[@]}" --sort comm,dso -g none --percent-limit 0.5 > "$OUT/perf-$target-by-dso.txt" 2>&1 || true
    "${r[@]}" --sort comm,dso,sym -g none --percent-limit 0.02 > "$OUT/perf-$target-by-sym.txt" 2>&1 || true
    "${r[@]}" --sort comm,sym -g caller,0.5,callee,function,percent --percent-limit 2 \
        > "$OUT/perf-$target-callers.txt" 2>&1 || true
    if [ -n "${SRPTD_PID:-}" ] && [ "$target" = srptd ]; then
        # srptd's threads, time including callees: which system calls cost
        local comms
        comms=$(cat /proc/"$SRPTD_PID"/task/*/comm 2>/dev/null | sort -u | paste -sd, -)
        "$perf" report -i "$data" --stdio --children --comm "$comms" --sort sym -g none --percent-limit 1 \
            > "$OUT/perf-srptd-threads-inclusive.txt" 2>&1 || true
    fi
    rm -f "$data"
    vm_log "profile of $target in $OUT/perf-$target-*.txt"
}

# io_uring operations the kernel handed to its worker threads (io-wq)
# instead of completing them in the submitting call, by thread, over a
# round of srptd, by thread and opcode: $OUT/uring-punts-r<round>.txt
# (tracepoint histogram).
PUNT_EV=
uring_punts_start() {
    PUNT_EV=$(tracefs)/events/io_uring/io_uring_queue_async_work
    echo 'hist:keys=common_pid.execname,opcode' > "$PUNT_EV/trigger" 2>/dev/null ||
        vm_log "no io_uring tracepoint histogram: punts not counted"
}
uring_punts_stop() {
    [ -r "$PUNT_EV/hist" ] || return 0
    cp "$PUNT_EV/hist" "$OUT/uring-punts-r$1.txt" || true
    echo '!hist:keys=common_pid.execname,opcode' > "$PUNT_EV/trigger" 2>/dev/null || true
    vm_log "round $1: io_uring operations punted to io-wq: $(sed -n 's/^ *Hits: *//p' "$OUT/uring-punts-r$1.txt")"
}

srptd_up() {
    # shellcheck disable=SC2086 # SRPTD_EXTRA is a list of options
    srptd_start --lun "$(srptd_lun)" "${SRPTD_LISTEN[@]}" --device "$RXE_DEV" --allow ANY $SRPTD_EXTRA
}

phase_srptd() {
    local round=$1 dev
    srptd_up
    dev=$(SRP_VENDOR=SRPTD srp_login "$SRPTD_ID_EXT" "$SRPTD_IOC_GUID" 2)
    check_disk "$dev" srptd
    vm_log "round $round: srptd on $dev (pid $SRPTD_PID)"
    if [ -n "$SCRAPE_HZ" ]; then
        local once
        once=$(python3 "$REPO/bench/vm/scrape-loop.py" "$METRICS_ADDR" --once) ||
            vm_die "GET http://$METRICS_ADDR/metrics: $once"
        vm_log "metrics at http://$METRICS_ADDR/metrics: $once; scraping at ${SCRAPE_HZ}/s in half of the runs"
    fi
    uring_punts_start
    run_all_cases srptd "$dev" "$round" "$SRPTD_PID"
    uring_punts_stop "$round"
    if [ "$round" = "$RUNS" ]; then
        profile srptd "$dev"
        srptd_threads
    fi
    srp_logout_all
    srp_unload
    srptd_down "$round"
}

# The LIO backstore and export of $MODE; rbd mode maps the image (KRBD).
KRBD=
lio_setup() {
    case "$MODE" in
        ram) lio_ramdisk_target "$pages" ;;
        block) lio_iblock_target /dev/nullb0 ;;
        file) lio_fileio_target "$BENCH_FILE" "$size_bytes" ;;
        rbd)
            KRBD=$(rbd_map)
            lio_iblock_target "$KRBD"
            ;;
    esac
}
lio_down() {
    lio_teardown
    if [ -n "$KRBD" ]; then
        RBD device unmap "$KRBD" || vm_die "rbd device unmap $KRBD failed"
        KRBD=
    fi
}
# check_disk <dev> <what>: the LUN's size and the login's channel count.
check_disk() {
    local size
    size=$(blockdev --getsize64 "$1")
    [ "$size" = "$size_bytes" ] || vm_die "$2 disk $1 is $size bytes, expected $size_bytes"
    [ "$(srp_ch_count)" = "$CHANNELS" ] || vm_die "$2 login has $(srp_ch_count) channels, expected $CHANNELS"
}
# srptd's exit: the initiator logged out first; its summary saved.
srptd_down() {
    srptd_stop || vm_die "srptd exited non-zero"
    grep -q 'leaked-channels 0' "$VM_RESULTS/srptd.log" || vm_die "srptd reported leaked channels"
    cp "$VM_RESULTS/srptd.log" "$OUT/srptd-r$1.log"
}
srptd_threads() {
    process_threads "$SRPTD_PID" | awk -v clk="$CLK_TCK" \
        '{ printf "%-16s utime %8.2f s  stime %8.2f s  nice %3d\n", $1, $2 / clk, $3 / clk, $4 }' \
        > "$OUT/srptd-threads.txt" 2>/dev/null || true
}

phase_kernel() {
    local round=$1 dev
    lio_setup
    dev=$(srp_login "$LIO_ID_EXT" "$LIO_IOC_GUID" 2)
    check_disk "$dev" ib_srpt
    vm_log "round $round: kernel ib_srpt on $dev"
    run_all_cases kernel "$dev" "$round" ""
    [ "$round" = "$RUNS" ] && profile kernel "$dev"
    srp_logout_all
    srp_unload
    lio_down
}

# --interleave: srptd first (it refuses to start beside ib_srpt), then
# LIO; the kernel target's login, then srptd's with another initiator_ext
# (ib_srp refuses a second login with the same id_ext, ioc_guid and
# initiator_ext).
phase_both() {
    local round=$1 sdev kdev c t order="srptd kernel"
    srptd_up
    lio_setup
    kdev=$(srp_login "$LIO_ID_EXT" "$LIO_IOC_GUID" 2)
    check_disk "$kdev" ib_srpt
    srp_write_add_target "id_ext=$SRPTD_ID_EXT,ioc_guid=$SRPTD_IOC_GUID,dest=$RXE_ADDR:$SRPTD_PORT,initiator_ext=0000000000000001" ||
        vm_die "add_target for srptd failed: $(dmesg | tail -n 5)"
    sdev=$(wait_for_disk SRPTD 30)
    check_disk "$sdev" srptd
    vm_log "round $round: srptd on $sdev (pid $SRPTD_PID), kernel ib_srpt on $kdev, case by case"
    (( round % 2 )) || order="kernel srptd"
    uring_punts_start
    warm_up "$sdev" "$SRPTD_PID"
    warm_up "$kdev"
    for c in $CASES; do
        for t in $order; do
            case $t in
                srptd) run_case srptd "$sdev" "${c%%:*}" "${c##*:}" "$round" "$SRPTD_PID" ;;
                kernel) run_case kernel "$kdev" "${c%%:*}" "${c##*:}" "$round" "" ;;
            esac
        done
    done
    uring_punts_stop "$round"
    if [ "$round" = "$RUNS" ]; then
        profile srptd "$sdev"
        profile kernel "$kdev"
        srptd_threads
    fi
    srp_logout_all
    srp_unload
    srptd_down "$round"
    lio_down
}

t_start=$(date +%s)
rxe_setup
setup_backing
for round in $(seq 1 "$RUNS"); do
    vm_log "=== round $round of $RUNS"
    if [ "$INTERLEAVE" = 1 ]; then
        phase_both "$round"
        continue
    fi
    phase_srptd "$round"
    # --scrape compares srptd with itself: no kernel target
    [ -n "$SCRAPE_HZ" ] || phase_kernel "$round"
done
failed=$(awk -F'\t' 'NR > 1 && $5 != "ok"' "$SAMPLES" | wc -l)
vm_log "benchmark done in $(( $(date +%s) - t_start ))s (guest time), $failed failed fio runs"
[ "$failed" = 0 ] || vm_die "$failed fio runs failed (see samples.tsv and fio/*.err)"
