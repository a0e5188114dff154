#!/usr/bin/env bash
# Install everything srptd's build and its VM tests need on Debian bookworm.
#
# Idempotent and quick when everything is already there: it asks dpkg first
# and only runs `apt-get update` + `apt-get install` for what is missing.
# Runs as root without prompts (as CI does); as another user it uses sudo.
#
#   scripts/install-deps.sh            # build + VM test dependencies
#   INSTALL_VM_DEPS=0 scripts/install-deps.sh   # build dependencies only
#
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo -E"
fi

log() { printf 'install-deps: %s\n' "$*" >&2; }

# Needed to build the crates (rdma-sys runs bindgen -> libclang, pkg-config).
BUILD_PKGS=(libclang-dev clang pkg-config libibverbs-dev librdmacm-dev libibumad-dev python3
            librbd-dev librados-dev)
# Needed to boot the throwaway VM and run the end-to-end scenarios in it.
# linux-image-amd64 is the guest kernel (Debian's, with rdma_rxe/ib_srp/ib_srpt).
# ceph-mon, ceph-osd, ceph-common: the single-node cluster of the RBD tests
# (scripts/ceph-test-cluster.sh), on the host and in the VM.
VM_PKGS=(qemu-system-x86 linux-image-amd64 busybox-static kmod iproute2 rdma-core
         ibverbs-utils rdmacm-utils infiniband-diags srptools fio sg3-utils
         e2fsprogs jq multipath-tools
         ceph-mon ceph-osd ceph-common)

pkgs=("${BUILD_PKGS[@]}")
if [ "${INSTALL_VM_DEPS:-1}" != 0 ]; then
    pkgs+=("${VM_PKGS[@]}")
fi

is_installed() {
    [ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null)" = installed ]
}

missing=()
for p in "${pkgs[@]}"; do
    is_installed "$p" || missing+=("$p")
done

# pip is needed only if vng is missing and no pip is available.
need_vng=0
if [ "${INSTALL_VM_DEPS:-1}" != 0 ] && ! command -v vng >/dev/null 2>&1; then
    need_vng=1
    if ! command -v pip3 >/dev/null 2>&1 && ! command -v pip >/dev/null 2>&1; then
        is_installed python3-pip || missing+=(python3-pip)
    fi
fi

if [ "${#missing[@]}" -gt 0 ]; then
    log "installing: ${missing[*]}"
    $SUDO apt-get update -q
    $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
else
    log "all Debian packages present"
fi

if [ "$need_vng" = 1 ]; then
    PIP=$(command -v pip3 || command -v pip)
    log "installing virtme-ng with $PIP"
    # Debian's own python refuses system-wide pip installs (PEP 668); a
    # pyenv/venv pip does not know --break-system-packages' meaning but
    # accepts it since pip 23.0.1. Try the plain form first.
    if ! $SUDO "$PIP" install -q virtme-ng; then
        $SUDO "$PIP" install -q --break-system-packages virtme-ng
    fi
    hash -r
    if ! command -v vng >/dev/null 2>&1; then
        log "virtme-ng installed but 'vng' is not on PATH (PATH=$PATH)"
        log "pip put scripts in: $("$PIP" show -f virtme-ng 2>/dev/null | sed -n 's/^Location: //p')/../../../bin ?"
        exit 1
    fi
else
    [ "${INSTALL_VM_DEPS:-1}" != 0 ] && log "vng present: $(command -v vng)"
fi

# The Rust toolchain is expected on the machine (CI images ship it). Say so
# clearly instead of failing later inside cargo.
if ! command -v cargo >/dev/null 2>&1; then
    if [ "${INSTALL_RUST:-0}" = 1 ]; then
        log "installing Rust with rustup (INSTALL_RUST=1)"
        is_installed curl || { $SUDO apt-get install -y -q --no-install-recommends curl ca-certificates; }
        curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
        log "add \$HOME/.cargo/bin to PATH"
    else
        log "WARNING: cargo not found; install Rust (rustup) or rerun with INSTALL_RUST=1"
    fi
fi

if [ "${INSTALL_VM_DEPS:-1}" != 0 ]; then
    # The guest kernel: the newest installed Debian 6.1 image.
    if ! ls /boot/vmlinuz-6.1.0-*-amd64 >/dev/null 2>&1; then
        log "no /boot/vmlinuz-6.1.0-*-amd64 after installing linux-image-amd64"
        exit 1
    fi
fi
log "done"
