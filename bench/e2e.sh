#!/usr/bin/env bash
# The end-to-end benchmark: srptd against the kernel's ib_srpt (the LIO
# backstore of the same kind and size), both driven by the kernel SRP
# initiator with fio, in one soft-RoCE QEMU VM run (see docs/performance.md).
#
#   bench/e2e.sh [--mode ram|block|file|rbd] [--runs N] [--runtime S] [--size SIZE] [--smoke]
#                [--no-profile|--profile CASE] [--cases "case:numjobs ..."]
#                [--srptd-args "..."] [--rbd-client "..."] [--scrape HZ] [--file-direct]
#                [--interleave] [--out DIR]
#
#   --mode M        ram: srptd ram: vs LIO rd_mcp (default); block: srptd
#                   file:/dev/nullb0 vs LIO iblock on the same null_blk;
#                   file: srptd file:<path>,buffered vs LIO fileio
#                   (fd_buffered_io=1, WCE) on the same file, both through
#                   the page cache, on ext4 over a memory-backed null_blk;
#                   rbd: srptd rbd: vs LIO iblock on the same RBD image
#                   mapped by the kernel rbd driver (a single-node Ceph on
#                   127.0.0.1 in the guest, scripts/ceph-test-cluster.sh)
#   --runs N        runs of every figure, median and min–max reported (3)
#   --runtime S     seconds per fio job (10)
#   --size SIZE     LUN size of both targets (256M; smoke: 64M); VM_MEMORY is raised
#                   when the LUN needs it
#   --smoke         what CI runs: 1 run of 5 s, three cases, no profile;
#                   fails unless every row has a positive figure for both
#                   targets (timings are never checked)
#   --no-profile    skip the perf profile (default: one extra run of
#                   randread-4k-qd32 per target under `perf record -a -g`)
#   --profile CASE[:JOBS]  profile this fio section instead (e.g. randread-4k-qd1,
#                   randwrite-4k-qd32:2)
#   --cases LIST    fio sections of bench/fio/srp-bench.fio with numjobs,
#                   e.g. "randread-4k-qd1:1 write-1m-qd8:2" (default: all
#                   sections with numjobs 1 and 2)
#   --srptd-args S  extra srptd options, e.g. "--pollers 2"
#   --rbd-client S  rbd mode: librbd options for srptd, "key = value" lines
#                   separated by ";" in the [client] section of the cluster's
#                   ceph.conf, e.g. "rbd cache = false" (krbd reads none)
#   --scrape HZ     does a metrics scrape slow I/O? srptd only (no kernel
#                   target, no profile), started with --metrics 127.0.0.1:9469;
#                   every case runs twice per round, plain and while the guest
#                   GETs /metrics HZ times a second (bench/vm/scrape-loop.py),
#                   the order alternating between rounds; the table compares
#                   the two and counts the valid scrapes achieved
#   --file-direct   file mode: srptd with O_DIRECT (no ,buffered) against the
#                   same buffered LIO fileio
#   --interleave    both targets logged in at once, each case run on one and
#                   then the other (the order alternating between rounds)
#                   instead of all cases on srptd, then all on the kernel:
#                   the two runs compared are seconds apart, not minutes
#                   (ram, block and file modes)
#   --out DIR       results directory (default target/bench/e2e-<time>)
#
# Builds target/release/srptd, runs bench/vm/e2e-guest.sh in the VM
# (scripts/vm-run.sh; VM_TIMEOUT, VM_MEMORY, VM_CPUS, VM_KERNEL apply) and
# prints the tables, also saved as <out>/table.md. Exit status: non-zero if
# the VM run failed or any figure is missing.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2; }
die() { echo "bench/e2e.sh: $*" >&2; exit 2; }

mode=ram runs=3 runtime=10 size= smoke=0 profile=randread-4k-qd32 profile_set=0 cases= srptd_args= rbd_client= scrape= out=
file_direct=0 interleave=0
while [ $# -gt 0 ]; do
    case "$1" in
        --mode) mode=${2:?--mode needs a value}; shift 2 ;;
        --file-direct) file_direct=1; shift ;;
        --interleave) interleave=1; shift ;;
        --runs) runs=${2:?--runs needs a value}; shift 2 ;;
        --runtime) runtime=${2:?--runtime needs a value}; shift 2 ;;
        --size) size=${2:?--size needs a value}; shift 2 ;;
        --smoke) smoke=1; shift ;;
        --no-profile) profile=; profile_set=1; shift ;;
        --profile) profile=${2:?--profile needs a fio section}; profile_set=1; shift 2 ;;
        --cases) cases=${2:?--cases needs a value}; shift 2 ;;
        --srptd-args) srptd_args=${2?--srptd-args needs a value}; shift 2 ;;
        --rbd-client) rbd_client=${2?--rbd-client needs a value}; shift 2 ;;
        --scrape) scrape=${2:?--scrape needs a rate (scrapes per second)}; shift 2 ;;
        --out) out=${2:?--out needs a value}; shift 2 ;;
        -h|--help) usage ;;
        *) echo "bench/e2e.sh: unknown option $1" >&2; usage ;;
    esac
done
if [ "$smoke" = 1 ]; then
    runs=1 runtime=5 profile=
    size=${size:-64M}
    cases=${cases:-"randread-4k-qd1:1 randwrite-4k-qd32:2 write-128k-qd8:1"}
fi
if [ -n "$scrape" ]; then
    [ "$smoke" = 0 ] || die "--scrape does not combine with --smoke"
    [ "$mode" = ram ] || die "--scrape runs with RAM LUNs only (--mode ram)"
    [[ $scrape =~ ^[0-9]+(\.[0-9]+)?$ ]] && awk -v h="$scrape" 'BEGIN { exit !(h > 0 && h <= 1000) }' ||
        die "--scrape $scrape: expected scrapes per second, e.g. 20 (0 < HZ <= 1000)"
    [ "$profile_set" = 0 ] || [ -z "$profile" ] || die "--profile does not combine with --scrape"
    profile=
fi
if [ "$interleave" = 1 ]; then
    [ "$mode" != rbd ] || die "--interleave does not combine with --mode rbd (librbd and krbd would pass the image's exclusive lock back and forth)"
    [ -z "$scrape" ] || die "--interleave does not combine with --scrape (no kernel target)"
fi
size=${size:-256M}
[[ $runs =~ ^[1-9][0-9]*$ ]] || die "--runs $runs: expected a positive integer"
[[ $runtime =~ ^[1-9][0-9]*$ ]] || die "--runtime $runtime: expected a positive integer (seconds)"
size_bytes=$(numfmt --from=iec "$size" 2>/dev/null) || die "--size $size: not a size (e.g. 256M)"
[ $(( size_bytes % 4096 )) -eq 0 ] && [ "$size_bytes" -ge $((16 << 20)) ] ||
    die "--size $size: must be a multiple of 4 KiB and at least 16M"
command -v python3 >/dev/null || die "python3 is needed for the report"

# Cases: count them for the time limit (default: 8 sections x numjobs 1, 2).
if [ -n "$cases" ]; then
    ncases=$(wc -w <<<"$cases")
else
    ncases=$(( $(grep -c '^\[' bench/fio/srp-bench.fio) - 1 ))
    ncases=$(( ncases * 2 ))
fi

# The guest holds one LUN at a time (srptd's, then LIO's; both at once
# with --interleave in RAM mode), plus the kernel, fio and srptd's pools:
# keep 1.5 GiB besides the LUNs.
# rbd mode: the memstore OSD holds the image too, and the Ceph daemons
# take about another GiB.
size_mib=$(( size_bytes >> 20 ))
need_mib=$(( size_mib + 1536 ))
[ "$mode" = ram ] && [ "$interleave" = 1 ] && need_mib=$(( 2 * size_mib + 1536 ))
[ "$mode" = rbd ] && need_mib=$(( 2 * size_mib + 2560 ))
if [ -z "${VM_MEMORY:-}" ] && [ "$need_mib" -gt 2048 ]; then
    export VM_MEMORY=${need_mib}M
fi
# Boot and setup ~10 min worst case on a busy host, then every run with
# its fio start-up and 9p writes.
: "${VM_TIMEOUT:=$(( 600 + ncases * runs * 2 * (runtime + 25) + (runs * 120) ))}"
export VM_TIMEOUT

out=${out:-$REPO/target/bench/e2e-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$out"
out=$(cd "$out" && pwd)
{
    echo "host_cpus $(nproc)"
    echo "host_load_start $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "host_kernel $(uname -r)"
    echo "git $(git -C "$REPO" describe --always --dirty 2>/dev/null || echo unknown)"
} > "$out/host.txt"

echo "bench/e2e.sh: building target/release/srptd" >&2
cargo build --release --bin srptd

guest_args=(--mode "$mode" --runs "$runs" --runtime "$runtime" --size "$size")
[ -n "$cases" ] && guest_args+=(--cases "$cases")
[ -n "$profile" ] && guest_args+=(--profile "$profile")
[ -n "$srptd_args" ] && guest_args+=(--srptd-args "$srptd_args")
if [ -n "$rbd_client" ]; then
    [ "$mode" = rbd ] || die "--rbd-client applies to --mode rbd only"
    guest_args+=(--rbd-client "$rbd_client")
fi
[ -n "$scrape" ] && guest_args+=(--scrape "$scrape")
if [ "$file_direct" = 1 ]; then
    [ "$mode" = file ] || die "--file-direct applies to --mode file only"
    guest_args+=(--file-direct)
fi
[ "$interleave" = 1 ] && guest_args+=(--interleave)

if [ -n "$scrape" ]; then
    echo "bench/e2e.sh: $ncases cases x $runs runs x srptd plain and scraped at ${scrape}/s x ${runtime}s; results in $out (VM_TIMEOUT=${VM_TIMEOUT}s)" >&2
else
    echo "bench/e2e.sh: $ncases cases x $runs runs x 2 targets x ${runtime}s; results in $out (VM_TIMEOUT=${VM_TIMEOUT}s)" >&2
fi
vm_rc=0
VM_RESULTS_DIR=$out scripts/vm-run.sh bench/vm/e2e-guest.sh "${guest_args[@]}" || vm_rc=$?
echo "host_load_end $(cut -d' ' -f1-3 /proc/loadavg)" >> "$out/host.txt"

if [ ! -s "$out/samples.tsv" ]; then
    echo "bench/e2e.sh: the VM run produced no samples (exit $vm_rc); see $out/console.log" >&2
    exit 1
fi
report_args=("$out")
[ "$smoke" = 1 ] && report_args+=(--check)
report_rc=0
python3 bench/e2e-report.py "${report_args[@]}" > "$out/table.md" || report_rc=$?
echo
cat "$out/table.md"
echo
echo "bench/e2e.sh: table saved as $out/table.md" >&2
if [ "$vm_rc" != 0 ]; then
    echo "bench/e2e.sh: FAILED: the VM run exited with $vm_rc (see $out/console.log)" >&2
    exit 1
fi
if [ "$report_rc" != 0 ]; then
    echo "bench/e2e.sh: FAILED: figures missing (report exit $report_rc; reasons above)" >&2
    exit 1
fi
[ "$smoke" = 1 ] && echo "bench/e2e.sh: smoke OK: every row has a figure for both targets" >&2
exit 0
