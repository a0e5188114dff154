#!/usr/bin/env bash
# Guest script: the admin socket (JSON-RPC 2.0, `srptd ctl`) on a live
# target, while the kernel initiator runs fio crc32c verify on LUN 0:
#  1. status, luns, sessions and stats answer; sessions shows both I_T
#     nexuses (the second from initiator_ext=1) with their channels; the
#     counters move with the I/O.
#  1b. Statistics: per LUN and per channel, and the Prometheus text of
#     the metrics listener (--metrics), move with the I/O (fio on one LUN,
#     dd writes and reads on the other) between two reads; each latency
#     histogram counts the commands answered; other paths get 404, other
#     methods 405.
#  2. `srptd ctl logout` of the second nexus logs its channels out
#     (SRP_T_LOGOUT, then DREQ): ib_srp reports the target logout and, as
#     its transport does after any disconnect, logs in again after its
#     reconnect delay, on new channels; the first nexus's fio stays clean.
#  3. Bad input gets the JSON-RPC error that names it, and changes nothing:
#     malformed JSON, an unknown method, a wrong parameter type, an unknown
#     parameter, a session that does not exist; the socket is mode 0600 and
#     a non-root user cannot connect (EACCES); with the socket opened up it
#     connects and gets -32001, and nothing changes.
#     The target's totals do not go back when those channels close.
#  4. SIGTERM: srptd exits 0 and removes its socket.
set -euo pipefail
. "$REPO/tests/vm/lib.sh"
vm_trap_failures

SOCK=/run/srptd-test/admin.sock
BIN=$(srptd_bin)
ctl() { "$BIN" ctl --socket "$SOCK" "$@"; }
# rpc <json line>: the raw response line.
rpc() {
    python3 - "$SOCK" "$1" <<'PY'
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.sendall(sys.argv[2].encode() + b"\n")
buf = b""
while not buf.endswith(b"\n"):
    c = s.recv(4096)
    if not c:
        break
    buf += c
print(buf.decode().strip())
PY
}

rxe_setup
METRICS=127.0.0.1:9469
srptd_start --lun ram:64M --lun ram:32M --port "$SRP_PORT" --device "$RXE_DEV" --allow ANY --admin-socket "$SOCK" \
    --metrics "$METRICS"
[ "$(stat -c %a "$SOCK")" = 600 ] || vm_die "admin socket mode $(stat -c %a "$SOCK"), expected 600"
[ "$(stat -c %a "$(dirname "$SOCK")")" = 700 ] || vm_die "admin socket directory not 0700"

a0=$(SRP_VENDOR=SRPTD srp_login "$SRPTD_ID_EXT" "$SRPTD_IOC_GUID" 2)
fio_verify "$a0" 40 randwrite 4k 16 32M &
fio_pid=$!
port_b=$(srp_add_target "$SRPTD_ID_EXT" "$SRPTD_IOC_GUID" initiator_ext=0000000000000001)
vm_log "second nexus: $port_b"

# 1. read-only calls
ctl status >&2
ctl status --json | jq -e '.sessions == 2 and .luns == 2 and .channels == 4' >/dev/null ||
    vm_die "status: $(ctl status --json)"
ctl luns >&2
ctl luns --json | jq -e 'length == 2 and .[1].bytes == 33554432 and .[0].backstore == "ram:64M"' >/dev/null ||
    vm_die "luns: $(ctl luns --json)"
ctl sessions >&2
S=$(ctl sessions --json)
echo "$S" | jq -e 'length == 2 and all(.[]; (.channels | length) == 2)' >/dev/null || vm_die "sessions: $S"
ini_b=$(echo "$S" | jq -r '.[] | select(.initiator | startswith("0000000000000001")) | .initiator')
[ -n "$ini_b" ] || vm_die "no session of initiator_ext 1 in: $S"
echo "$S" | jq -e 'all(.[].channels[]; .credits_granted > 0 and (.peer | type) == "string")' >/dev/null ||
    vm_die "channel fields missing: $S"
c1=$(ctl stats --json | jq '.total.commands')
dd if="$a0" of=/dev/null bs=64k count=64 iflag=direct 2>/dev/null
c2=$(ctl stats --json | jq '.total.commands')
[ "$c2" -ge $((c1 + 64)) ] || vm_die "stats did not move with the I/O (64 reads): $c1 -> $c2"
ctl stats >&2
vm_log "status, luns, sessions, stats: OK (commands $c1 -> $c2)"

# 1b. statistics per LUN and channel, and the Prometheus text, under fio
# metric NAME LABELS: one sample's value from the exposition text.
# From the last scrape (SCRAPE=$(scrape)), so that samples compared with
# each other come from one moment.
scrape() { curl -sf "http://$METRICS/metrics"; }
metric() {
    awk -v n="$1$2" '$1 == n { print $2; found = 1 } END { exit !found }' <<<"$SCRAPE"
}
# Answered commands of a set of figures: the histogram counts each once;
# the rest are in progress, aborted or refused before they had a context.
consistent='(.latency.count <= .commands) and (.commands - .latency.count <= .queue_depth + .aborted + (.protocol_errors // 0))'
# fio runs on whichever LUN ib_srp's first disk is; dd takes the other.
fio_lun=$(basename "$(readlink -f "/sys/block/${a0#/dev/}/device")")
L=$((1 - ${fio_lun##*:}))
lun_dev=$(srp_lun_dev "$L")
vm_log "fio on $a0 (LUN ${fio_lun##*:}), dd on $lun_dev (LUN $L)"
s1=$(ctl stats --json)
SCRAPE=$(scrape)
m1=$(metric srptd_lun_commands_total "{lun=\"$L\"}") || vm_die "no srptd_lun_commands_total for LUN $L"
h1=$(metric srptd_lun_latency_seconds_count "{lun=\"$L\"}") || vm_die "no latency histogram for LUN $L"
t1=$(metric srptd_target_commands_total '')
dd if=/dev/zero of="$lun_dev" bs=64k count=32 seek=64 oflag=direct 2>/dev/null || vm_die "dd write to $lun_dev"
dd if=/dev/zero of="$lun_dev" bs=4k count=64 seek=2048 oflag=direct 2>/dev/null || vm_die "dd write to $lun_dev"
dd if="$lun_dev" of=/dev/null bs=64k count=32 skip=64 iflag=direct 2>/dev/null || vm_die "dd read of $lun_dev"
s2=$(ctl stats --json)
SCRAPE=$(scrape)
m2=$(metric srptd_lun_commands_total "{lun=\"$L\"}")
h2=$(metric srptd_lun_latency_seconds_count "{lun=\"$L\"}")
t2=$(metric srptd_target_commands_total '')
inf=$(metric srptd_lun_latency_seconds_bucket "{lun=\"$L\",le=\"+Inf\"}")
for f in commands writes reads bytes_out bytes_in latency.count; do
    a=$(echo "$s1" | jq ".luns[] | select(.lun == $L) | .$f")
    b=$(echo "$s2" | jq ".luns[] | select(.lun == $L) | .$f")
    [ "$b" -gt "$a" ] || vm_die "LUN $L $f did not move with dd: $a -> $b"
done
# 2 MiB written by RDMA READ, 256 KiB as immediate data; 2 MiB read.
d_out=$(jq -n --argjson L "$L" --argjson a "$s1" --argjson b "$s2" '[$a, $b] | map(.luns[] | select(.lun == $L) | .bytes_out) | .[1] - .[0]')
d_in=$(jq -n --argjson L "$L" --argjson a "$s1" --argjson b "$s2" '[$a, $b] | map(.luns[] | select(.lun == $L) | .bytes_in) | .[1] - .[0]')
[ "$d_out" -ge $((2048 * 1024 + 256 * 1024)) ] || vm_die "LUN $L bytes_out moved by $d_out, expected at least 2.25 MiB"
[ "$d_in" -ge $((2048 * 1024)) ] || vm_die "LUN $L bytes_in moved by $d_in, expected at least 2 MiB"
[ "${t2%.*}" -gt "${t1%.*}" ] || vm_die "srptd_target_commands_total did not move: $t1 -> $t2"
echo "$s2" | jq -e ".total | $consistent" >/dev/null || vm_die "target latency count vs commands: $(echo "$s2" | jq -c .total)"
echo "$s2" | jq -e ".luns | all(.[]; $consistent)" >/dev/null ||
    vm_die "LUN latency counts vs commands: $(echo "$s2" | jq -c '.luns')"
echo "$s2" | jq -e '(.channels | length) == 4 and all(.channels[]; (.initiator | length) == 32 and (.stats.latency.buckets | length) == 24)' >/dev/null ||
    vm_die "per-channel figures: $(echo "$s2" | jq -c '.channels')"
echo "$s2" | jq -e '.luns | map(.lun) == [0, 1]' >/dev/null || vm_die "LUNs with figures: $(echo "$s2" | jq -c '.luns | map(.lun)')"
[ "${m2%.*}" -gt "${m1%.*}" ] || vm_die "srptd_lun_commands_total did not move: $m1 -> $m2"
[ "${h2%.*}" -gt "${h1%.*}" ] || vm_die "srptd_lun_latency_seconds_count did not move: $h1 -> $h2"
[ "$inf" = "$h2" ] || vm_die "the +Inf bucket ($inf) is not the histogram count ($h2)"
text=$(curl -sf "http://$METRICS/metrics") || vm_die "GET /metrics failed"
grep -q '^srptd_channel_commands_total{channel="[0-9]*",initiator="[0-9a-f]\{32\}"' <<<"$text" ||
    vm_die "no per-channel series with an initiator label"
ctype=$(curl -s -o /dev/null -w '%{content_type}' "http://$METRICS/metrics")
[[ $ctype == *version=0.0.4* ]] || vm_die "content type: $ctype"
[ "$(curl -s -o /dev/null -w '%{http_code}' "http://$METRICS/other")" = 404 ] || vm_die "no 404 for another path"
[ "$(curl -s -o /dev/null -w '%{http_code}' -X POST "http://$METRICS/metrics")" = 405 ] || vm_die "no 405 for POST"
ctl stats >&2
vm_log "stats per LUN and channel and Prometheus text move with the I/O (LUN $L commands $m1 -> $m2, histogram $h1 -> $h2)"

# 3. bad input (while both sessions are up)
expect_error() {
    local line=$1 code=$2 text=$3 r
    r=$(rpc "$line")
    echo "$r" | jq -e --argjson c "$code" --arg t "$text" '.error.code == $c and (.error.message | contains($t))' >/dev/null ||
        vm_die "for $line expected error $code '$text', got: $r"
    vm_log "error $code for $line"
}
expect_error '{"jsonrpc":"2.0","method":"status","id":1' -32700 "parse error"
expect_error '{"jsonrpc":"2.0","method":"format_disk","id":2}' -32601 'method not found: "format_disk"'
expect_error '{"jsonrpc":"2.0","method":"session_logout","params":{"initiator":7},"id":3}' -32602 "initiator: expected a string"
expect_error '{"jsonrpc":"2.0","method":"luns","params":{"all":true},"id":4}' -32602 'unknown parameter "all"'
expect_error '{"jsonrpc":"2.0","method":"session_logout","params":{"initiator":"ffffffffffffffffffffffffffffffff"},"id":5}' \
    -32002 "no session of initiator"
rc=0; ctl logout 12 2>/dev/null || rc=$?
[ "$rc" = 1 ] || vm_die "ctl logout of a malformed ID: exit $rc, expected 1"
ctl status --json | jq -e '.sessions == 2' >/dev/null || vm_die "bad requests changed the sessions"
out=$(setpriv --reuid=65534 --regid=65534 --clear-groups "$BIN" ctl --socket "$SOCK" status 2>&1) &&
    vm_die "a non-root user reached the admin socket: $out"
case $out in
    *"cannot connect to $SOCK: Permission denied"*) ;;
    *) vm_die "non-root ctl failed for another reason: $out" ;;
esac
# An administrator opening the socket up does not let others in: srptd
# checks the caller's credentials and answers -32001 (ctl exits 1).
chmod 0755 "$(dirname "$SOCK")"
chmod 0666 "$SOCK"
rc=0
out=$(setpriv --reuid=65534 --regid=65534 --clear-groups "$BIN" ctl --socket "$SOCK" lun remove 1 2>&1) || rc=$?
chmod 0600 "$SOCK"
chmod 0700 "$(dirname "$SOCK")"
[ "$rc" = 1 ] || vm_die "non-root ctl on an opened socket: exit $rc (expected 1): $out"
case $out in
    *"permission denied"*"(JSON-RPC error -32001)"*) ;;
    *) vm_die "non-root ctl on an opened socket: $out" ;;
esac
ctl luns --json | jq -e 'length == 2' >/dev/null || vm_die "a refused non-root call changed the LUNs"
vm_log "bad input refused, nothing changed; non-root user kept out (EACCES, and -32001 on an opened socket)"

# 2. log the second nexus out
before_logout=$(ctl stats --json | jq '.total.commands')
h_b=${port_b#port-}; h_b=${h_b%%:*}
old_keys=$(ctl sessions --json | jq -c --arg i "$ini_b" '[.[] | select(.initiator == $i) | .channels[].key] | sort')
ctl logout "$ini_b" >&2
_b_logged_out() { dmesg | grep -c "host$h_b: ib_srp: Got target logout request" >/dev/null; }
wait_until 10 _b_logged_out || vm_die "ib_srp (host$h_b) got no target logout"
# srptd frees the old channels; ib_srp logs in again on new ones.
_b_on_new_channels() {
    local k
    k=$(ctl sessions --json | jq -c --arg i "$ini_b" '[.[] | select(.initiator == $i) | .channels[].key] | sort')
    [ "$k" != "[]" ] && [ "$(echo "$k $old_keys" | jq -s '.[0] - .[1] | length')" = "$(echo "$k" | jq length)" ]
}
wait_until 60 _b_on_new_channels ||
    vm_die "the second nexus is not on new channels after ctl logout: before $old_keys, now $(ctl sessions --json)"
ctl status --json | jq -e '.sessions == 2' >/dev/null || vm_die "after logout and re-login: $(ctl status --json)"
after_logout=$(ctl stats --json | jq '.total.commands')
[ "$after_logout" -ge "$before_logout" ] ||
    vm_die "closed channels' commands vanished from the totals: $before_logout -> $after_logout"
ctl stats --json | jq -e '.closed_channels.commands > 0' >/dev/null || vm_die "no closed channels' totals after the logout"
wait "$fio_pid" || vm_die "fio on the first nexus failed"
vm_log "ctl logout: second nexus logged out (old channels $old_keys freed, logged in again), first nexus's fio clean"

srp_logout_all
srptd_stop || vm_die "srptd exited non-zero"
[ ! -e "$SOCK" ] || vm_die "the admin socket is left behind"
grep -q 'leaked-channels 0' "$VM_RESULTS/srptd.log" || vm_die "srptd reported leaked channels"
vm_log "PASS srptd-admin"
