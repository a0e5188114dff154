#!/usr/bin/env bash
# systemd-analyze verify on contrib/srptd.service, with ExecStart pointing
# at this tree's srptd (verify checks the executable exists). Skipped, with
# a note, where systemd-analyze is missing.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if ! command -v systemd-analyze >/dev/null; then
    echo "check-unit: systemd-analyze not installed; skipped" >&2
    exit 0
fi
bin=$PWD/target/release/srptd
[ -x "$bin" ] || cargo build --release --bin srptd
d=$(mktemp -d)
trap 'rm -rf "$d"' EXIT
sed "s#/usr/local/sbin/srptd#$bin#" contrib/srptd.service > "$d/srptd.service"
systemd-analyze verify "$d/srptd.service"
echo "check-unit: contrib/srptd.service verified" >&2
