#!/usr/bin/env bash
# Boot a throwaway QEMU VM with Debian's 6.1 kernel (via virtme-ng) and run a
# guest script in it; bring back its exit code and output.
#
#   scripts/vm-run.sh <guest-script> [args...]
#
# The guest sees the host's root filesystem read-only over 9p (so the
# checkout, target/debug/srptd etc. are visible at the same paths) and runs
# the script as root with the repository root as working directory.
#
# Inside the guest these variables are set:
#   VM_RESULTS   a directory shared read-write with the host (files written
#                there survive the VM)
#   REPO         absolute path of the repository root
#
# Environment knobs (host side):
#   VM_TIMEOUT   overall limit in seconds, boot included (default: a
#                "# vm-timeout: N" line in the guest script, else 900)
#   VM_KERNEL    kernel image (default: newest /boot/vmlinuz-6.1.0-*-amd64)
#   VM_MEMORY    guest memory (default 2G)
#   VM_CPUS      guest vCPUs (default: a "# vm-cpus: N" line in the guest
#                script, else 2; ib_srp opens at most one channel per CPU)
#   VM_RESULTS_DIR  host directory for results (default:
#                target/vm-results/<script>-<timestamp>); console output is
#                saved there as console.log
#   VM_KVM=1     try KVM instead of TCG (nested KVM hangs at boot on our
#                machines, hence the default --disable-kvm)
#   VM_APPEND    extra guest kernel command-line options (e.g.
#                "clocksource=tsc tsc=reliable")
#
# Exit status: the guest script's exit status; 124 on timeout; 125 if the VM
# did not boot or the script could not be started.
set -euo pipefail

usage() { echo "usage: $0 <guest-script> [args...]" >&2; exit 2; }
[ $# -ge 1 ] || usage

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
script=$1; shift
case "$script" in
    /*) ;;
    *) if [ -e "$script" ]; then script=$(cd "$(dirname "$script")" && pwd)/$(basename "$script")
       else script=$REPO/$script; fi ;;
esac
[ -f "$script" ] || { echo "vm-run: no such guest script: $script" >&2; exit 2; }

log() { printf 'vm-run: %s\n' "$*" >&2; }

if ! command -v vng >/dev/null 2>&1; then
    log "vng (virtme-ng) not found; run scripts/install-deps.sh"
    exit 125
fi

kernel=${VM_KERNEL:-}
if [ -z "$kernel" ]; then
    kernel=$(ls /boot/vmlinuz-6.1.0-*-amd64 2>/dev/null | sort -V | tail -n1 || true)
fi
if [ -z "$kernel" ] || [ ! -r "$kernel" ]; then
    log "no readable guest kernel (looked for /boot/vmlinuz-6.1.0-*-amd64; install linux-image-amd64, need root to read it)"
    exit 125
fi
kver=$(basename "$kernel"); kver=${kver#vmlinuz-}
if [ ! -d "/lib/modules/$kver" ]; then
    log "kernel modules for $kver missing in /lib/modules"
    exit 125
fi

timeout_s=${VM_TIMEOUT:-$(sed -n 's/^# vm-timeout: *\([0-9][0-9]*\)$/\1/p' "$script" | sed -n 1p)}
timeout_s=${timeout_s:-900}
cpus=${VM_CPUS:-$(sed -n 's/^# vm-cpus: *\([0-9][0-9]*\)$/\1/p' "$script" | sed -n 1p)}
cpus=${cpus:-2}
name=$(basename "$script" .sh)
results=${VM_RESULTS_DIR:-$REPO/target/vm-results/$name-$(date +%Y%m%d-%H%M%S)-$$}
mkdir -p "$results"
results=$(cd "$results" && pwd)
rm -f "$results/.booted" "$results/.rc"
console=$results/console.log

# The command run inside the guest. It records that the guest came up and
# the script's exit status in files, so that the host can tell a failed boot
# or a hung VM from a failing script, independent of vng's own exit status.
q() { printf '%q ' "$@"; }
guest_cmd="export VM_RESULTS=$(q "$results")REPO=$(q "$REPO"); \
cd \"\$REPO\"; echo booted > \"\$VM_RESULTS/.booted\"; \
bash $(q "$script" "$@"); rc=\$?; echo \$rc > \"\$VM_RESULTS/.rc\"; exit \$rc"

kvm_flag=(--disable-kvm)
[ "${VM_KVM:-0}" = 1 ] && kvm_flag=()

vng_cmd=(vng -r "$kernel" "${kvm_flag[@]}" --force-9p
         --memory "${VM_MEMORY:-2G}" --cpus "$cpus"
         --rwdir "$results" --cwd "$REPO"
         ${VM_APPEND:+--append "$VM_APPEND"}
         -e "$guest_cmd")

log "kernel $kernel, $cpus vCPUs, results in $results, timeout ${timeout_s}s"
start=$(date +%s)
set +e
# No tty is needed: with stdin not a terminal vng runs QEMU headless with the
# console on stdout. stdin is detached so that QEMU's stdio monitor can never
# eat the caller's input. `timeout` runs the VM in its own process group and
# kills QEMU with it.
timeout -k 15 "$timeout_s" "${vng_cmd[@]}" </dev/null 2>&1 | tee "$console"
vng_rc=${PIPESTATUS[0]}
set -e
elapsed=$(( $(date +%s) - start ))

if [ -f "$results/.rc" ]; then
    rc=$(cat "$results/.rc")
    log "guest script exited with $rc after ${elapsed}s (vng exit $vng_rc)"
    exit "$rc"
fi
if [ "$vng_rc" = 124 ] || [ "$vng_rc" = 137 ]; then
    if [ -f "$results/.booted" ]; then
        log "TIMEOUT after ${elapsed}s: guest script did not finish within ${timeout_s}s"
    else
        log "TIMEOUT after ${elapsed}s: VM did not boot within ${timeout_s}s"
    fi
    exit 124
fi
if [ ! -f "$results/.booted" ]; then
    log "VM FAILED TO BOOT (vng exit $vng_rc after ${elapsed}s); last console lines:"
    tail -n 30 "$console" >&2 || true
    exit 125
fi
log "guest script did not report an exit status (guest crashed or panicked?) vng exit $vng_rc after ${elapsed}s"
exit 125
