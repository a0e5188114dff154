#!/usr/bin/env bash
# A throwaway single-node Ceph (16.2, Debian bookworm's packages) for
# srptd's RBD tests: one monitor and one OSD bound to 127.0.0.1 only, a
# pool `rbd` with one replica and one test image.
#
#   scripts/ceph-test-cluster.sh start  [DIR]   # prints conf=DIR/ceph.conf
#   scripts/ceph-test-cluster.sh status [DIR]
#   scripts/ceph-test-cluster.sh stop   [DIR]
#
# DIR (default /tmp/srptd-ceph) holds everything: ceph.conf, the keyring
# (client.admin), the daemons' data, logs, admin sockets and pid files.
# `start` on a running cluster only prints its conf= line; `stop` ends the
# daemons named by DIR's pid files (nothing else) and is a no-op when none
# runs. No manager daemon: RBD I/O does not need one (`ceph -s` then warns
# "no active mgr").
#
# Environment:
#   CEPH_TEST_STORE       memstore (default: the OSD keeps objects in RAM,
#                         lost at stop) or bluestore (on a file in DIR)
#   CEPH_TEST_IMAGE       image name (default test)
#   CEPH_TEST_IMAGE_SIZE  its size for `rbd create` (default 256M)
#   CEPH_TEST_PORT        the monitor's msgr2 port on 127.0.0.1 (default 40789)
#   CEPH_TEST_STORE_BYTES memstore/bluestore capacity (default 1G)
#
# It needs ceph-mon, ceph-osd and ceph-common (scripts/install-deps.sh).
set -euo pipefail

cmd=${1:-}
DIR=${2:-/tmp/srptd-ceph}
STORE=${CEPH_TEST_STORE:-memstore}
IMAGE=${CEPH_TEST_IMAGE:-test}
IMAGE_SIZE=${CEPH_TEST_IMAGE_SIZE:-256M}
PORT=${CEPH_TEST_PORT:-40789}
STORE_BYTES=${CEPH_TEST_STORE_BYTES:-1G}

log() { printf 'ceph-test-cluster: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }
usage() { echo "usage: $0 start|stop|status [DIR]" >&2; exit 2; }

case "$STORE" in memstore | bluestore) ;; *) die "CEPH_TEST_STORE must be memstore or bluestore" ;; esac
case "$DIR" in /*) ;; *) DIR=$(pwd)/$DIR ;; esac
CONF=$DIR/ceph.conf
RUN=$DIR/run

bytes() { numfmt --from=iec "$1"; }

# A cephx secret as ceph-authtool --gen-print-key makes it: base64 of
# type 1 (AES, le16), creation time 0 (le32 seconds, le32 nanoseconds),
# length 16 (le16), then 16 random bytes.
gen_key() {
    { printf '\001\000\000\000\000\000\000\000\000\000\020\000'; head -c 16 /dev/urandom; } | base64 -w0
}

# Runs a ceph client command against this cluster, never waiting long.
ceph_() { timeout 120 ceph -c "$CONF" --connect-timeout 60 "$@"; }

# Sends monitor commands, one JSON object per argument (an "inbuf" key is
# the input), through librados' Python module in one process and prints
# the last output: the `ceph` command starts much slower (it fetches every
# command's description from the monitor first), which costs tens of
# seconds per call under emulation.
mon_cmds() {
    timeout 120 /usr/bin/python3 - "$CONF" "$@" <<'PY'
import json, sys
import rados
c = rados.Rados(conffile=sys.argv[1])
c.connect(timeout=60)
out = b""
for a in sys.argv[2:]:
    cmd = json.loads(a)
    inbuf = cmd.pop("inbuf", "").encode()
    ret, out, err = c.mon_command(json.dumps(cmd), inbuf, timeout=60)
    if ret != 0:
        sys.exit("%s: %s (%d)" % (cmd["prefix"], err, ret))
sys.stdout.write(out.decode())
PY
}

# The pid in DIR/run/<name>.pid if that process is alive and is one of
# ours (a ceph daemon started with this conf).
daemon_pid() {
    local f=$RUN/$1.pid pid
    [ -s "$f" ] || return 1
    pid=$(cat "$f")
    [ -r "/proc/$pid/cmdline" ] || return 1
    case "$(tr '\0' ' ' < "/proc/$pid/cmdline")" in
        *"$CONF"*) ;;
        *) return 1 ;;
    esac
    echo "$pid"
}

running() { daemon_pid mon.a >/dev/null && daemon_pid osd.0 >/dev/null; }

wait_for() { # seconds, command...
    local n=$(($1 * 5)); shift
    while ! "$@" >/dev/null 2>&1; do
        n=$((n - 1))
        [ "$n" -gt 0 ] || return 1
        sleep 0.2
    done
}

write_conf() {
    local fsid=$1
    cat > "$CONF" <<EOF
# Written by scripts/ceph-test-cluster.sh: a single-node test cluster on
# 127.0.0.1, not for data anyone needs.
[global]
fsid = $fsid
mon host = [v2:127.0.0.1:$PORT]
public addr = 127.0.0.1
public network = 127.0.0.0/8
ms bind ipv4 = true
ms bind ipv6 = false
ms bind msgr1 = false
ms bind port min = $((PORT + 1))
ms bind port max = $((PORT + 40))
keyring = $DIR/keyring
run dir = $RUN
pid file = $RUN/\$name.pid
log file = $DIR/log/\$name.\$pid.log
crash dir = $DIR/crash
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
auth allow insecure global id reclaim = false
# One OSD: one replica, placement over OSDs rather than hosts.
osd pool default size = 1
osd pool default min size = 1
osd crush chooseleaf type = 0
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
osd pool default pg autoscale mode = off
# Clients give up rather than hang (srptd sets its own bound too).
client mount timeout = 30
# Small: a test machine or a 2 GiB VM.
osd memory target = 939524096
osd memory cache min = 134217728
bluestore cache autotune = false
bluestore cache size = 67108864
bluestore block path = $DIR/osd.0/block.file
bluestore block size = $(bytes "$STORE_BYTES")
bluestore block create = true
bluestore block db create = false
bluestore block wal create = false
memstore device bytes = $(bytes "$STORE_BYTES")
osd objectstore = $STORE
osd op num shards = 1
osd op num threads per shard = 2
osd max object size = 134217728
mon data avail warn = 1
mon data avail crit = 0

[mon]
admin socket = $RUN/\$name.asok
log file = $DIR/log/\$name.log
mon data = $DIR/mon.\$id
mon initial members = a
mon cluster log file = $DIR/log/cluster.log
keyring = $DIR/mon.\$id/keyring

[osd]
admin socket = $RUN/\$name.asok
log file = $DIR/log/\$name.log
osd data = $DIR/osd.\$id
osd crush update on start = true
keyring = $DIR/osd.\$id/keyring
EOF
}

start() {
    if running; then
        log "already running in $DIR"
        echo "conf=$CONF"
        return 0
    fi
    command -v ceph-mon >/dev/null && command -v ceph-osd >/dev/null && command -v ceph >/dev/null ||
        die "ceph-mon, ceph-osd and ceph-common are needed (scripts/install-deps.sh)"
    stop_daemons
    if [ "$(ss -Hltn "sport = :$PORT" 2>/dev/null | wc -l)" -gt 0 ]; then
        die "port $PORT on 127.0.0.1 is taken (another cluster?): set CEPH_TEST_PORT"
    fi
    rm -rf "$DIR"
    mkdir -p "$DIR" "$RUN" "$DIR/log" "$DIR/crash" "$DIR/mon.a" "$DIR/osd.0"
    local t0=$SECONDS fsid uuid secret
    fsid=$(cat /proc/sys/kernel/random/uuid)
    write_conf "$fsid"

    # Keys without ceph-authtool: each Ceph tool takes seconds to start
    # under emulation.
    printf '[mon.]\n\tkey = %s\n\tcaps mon = "allow *"\n' "$(gen_key)" > "$DIR/keyring"
    printf '[client.admin]\n\tkey = %s\n\tcaps mon = "allow *"\n\tcaps osd = "allow *"\n\tcaps mgr = "allow *"\n' \
        "$(gen_key)" >> "$DIR/keyring"
    monmaptool --create --fsid "$fsid" --addv a "[v2:127.0.0.1:$PORT]" "$DIR/monmap" >/dev/null
    ceph-mon -c "$CONF" --mkfs -i a --monmap "$DIR/monmap" --keyring "$DIR/keyring"
    ceph-mon -c "$CONF" -i a 2>> "$DIR/log/daemons.err"

    uuid=$(cat /proc/sys/kernel/random/uuid)
    secret=$(gen_key)
    local id new
    # osd new's input is {"cephx_secret": ...}, a JSON string in the command.
    new=$(printf '{"prefix": "osd new", "uuid": "%s", "inbuf": "{\\"cephx_secret\\": \\"%s\\"}"}' "$uuid" "$secret")
    id=$(mon_cmds "$new") ||
        die "the monitor did not answer (see $DIR/log/mon.a.log)"
    [ "$id" = 0 ] || die "expected osd id 0, got '$id'"
    printf '[osd.0]\n\tkey = %s\n' "$secret" > "$DIR/osd.0/keyring"
    ceph-osd -c "$CONF" -i 0 --mkfs --key "$secret" --osd-uuid "$uuid" > "$DIR/log/osd.0-mkfs.log" 2>&1 ||
        { cat "$DIR/log/osd.0-mkfs.log" >&2; die "ceph-osd --mkfs failed"; }
    ceph-osd -c "$CONF" -i 0 2>> "$DIR/log/daemons.err"
    wait_for 120 osd_up || die "the OSD did not come up (see $DIR/log/osd.0.log)"

    # Size 1 comes from `osd pool default size`.
    mon_cmds '{"prefix": "osd pool create", "pool": "rbd", "pg_num": 8, "pgp_num": 8, "pool_type": "replicated"}' \
        '{"prefix": "osd pool application enable", "pool": "rbd", "app": "rbd"}' ||
        die "creating the pool failed"
    timeout 120 rbd -c "$CONF" create --size "$IMAGE_SIZE" "rbd/$IMAGE" ||
        die "rbd create rbd/$IMAGE failed"
    log "started in $((SECONDS - t0)) s: mon.a on 127.0.0.1:$PORT, osd.0 ($STORE), image rbd/$IMAGE ($IMAGE_SIZE)"
    echo "conf=$CONF"
}

# The OSD logs its move to active once the monitor has marked it up.
osd_up() { [ "$(grep -c 'state: booting -> active' "$DIR/log/osd.0.log")" -gt 0 ]; }

# Ends the daemons named by DIR's pid files: TERM, then KILL after 10 s.
stop_daemons() {
    local name pid n
    for name in osd.0 mon.a; do
        pid=$(daemon_pid "$name") || continue
        kill -TERM "$pid" 2>/dev/null || true
        n=50
        while [ -d "/proc/$pid" ] && [ "$n" -gt 0 ]; do sleep 0.2; n=$((n - 1)); done
        if [ -d "/proc/$pid" ]; then
            log "$name ($pid) did not stop; killing it"
            kill -KILL "$pid" 2>/dev/null || true
        fi
        rm -f "$RUN/$name.pid"
    done
}

stop() {
    stop_daemons
    # The store is worth nothing without its daemons (memstore's is gone).
    [ -f "$CONF" ] && rm -rf "$DIR/mon.a" "$DIR/osd.0"
    log "stopped ($DIR)"
}

status() {
    local name pid rc=0
    for name in mon.a osd.0; do
        if pid=$(daemon_pid "$name"); then
            echo "$name running (pid $pid)"
        else
            echo "$name not running"
            rc=1
        fi
    done
    if [ "$rc" = 0 ]; then
        ceph_ health 2>&1 || rc=1
        echo "conf=$CONF"
    fi
    return "$rc"
}

case "$cmd" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    *) usage ;;
esac
