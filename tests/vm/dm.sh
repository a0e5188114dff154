#!/usr/bin/env bash
# Guest script: InfiniBand device management (DevMgt MADs) on soft-RoCE.
#
#   scripts/vm-run.sh tests/vm/dm.sh
#
# 1. srptd answers with its live configuration: `srptd dm-query` against it
#    reports the IOC GUID / id_ext of its `ready` line, the queue depth,
#    it_iu_len and transfer size it was started with, the RDMA READ depth
#    of the device, and the IsDeviceManagementSupported bit stays unset.
# 2. A second srptd cannot register the class (EPERM), says so, and runs.
# 3. The initiator logs in with the RDMA/CM add_target string dm-query
#    prints (max_it_iu_size = the advertised SendMessageSize, as srp_daemon
#    would add) and gets exactly the advertised IU size and credits.
# 4. --no-dm: the kernel answers for the missing agent with status 0x000c.
# 5. After srptd has stopped: kernel ib_srpt answers the same attributes
#    with the same layouts; the fields that differ are printed as a table
#    and must all be in the expected list, as must the differing statuses
#    of the error probes.
# vm-timeout: 1800
set -euo pipefail
. "$REPO/tests/vm/lib.sh"
vm_trap_failures

OUT=$VM_RESULTS/dm
mkdir -p "$OUT"
QD=96
IU=4164
XFER=512K
XFER_BYTES=$((512 << 10))
SRPTD_BIN=$(srptd_bin)
P1=/sys/class/infiniband/$RXE_DEV/ports/1
FAILS=0

dmq() { "$SRPTD_BIN" dm-query --device "$RXE_DEV" --port 1 "$@"; }
nocolor() { sed 's/\x1b\[[0-9;]*m//g' "$@"; }
# check <what> <got> <want>
check() {
    if [ "$2" = "$3" ]; then
        vm_log "ok: $1 = $2"
    else
        vm_log "FAIL: $1: got '$2', want '$3'"
        FAILS=$((FAILS + 1))
    fi
}
# check_grep <what> <file> <fixed string>
check_grep() {
    if nocolor "$2" | grep -cF -- "$3" >/dev/null; then
        vm_log "ok: $1"
    else
        vm_log "FAIL: $1: no '$3' in $2"
        FAILS=$((FAILS + 1))
    fi
}
dm_bit() { echo $(( $(cat "$P1/cap_mask") >> 19 & 1 )); }
dm_bit_set() { [ "$(dm_bit)" = 1 ]; }

rxe_setup
devinfo=$(ibv_devinfo -v -d "$RXE_DEV")
ATOM=$(echo "$devinfo" | awk '$1 == "max_qp_init_rd_atom:" { print $2 }')
VENDOR=$(echo "$devinfo" | awk '$1 == "vendor_id:" { print $2 }')
READ_DEPTH=$(( ATOM < 1 ? 1 : ATOM > 255 ? 255 : ATOM ))
# A software device (rxe: vendor 0xffffff) keeps one READ in flight per
# channel (SOFTWARE_READ_DEPTH, docs/stalls.md), and srptd advertises that.
[ "$((VENDOR))" = "$((0xffffff))" ] && READ_DEPTH=1
SERVICE_ID=$(printf '%016x' $(( 0x013f << 16 | SRP_PORT )))
DGID=$(tr -d : < "$P1/gids/0")
vm_log "rxe: max_qp_init_rd_atom $ATOM vendor_id $VENDOR gid0 $DGID cap_mask $(cat "$P1/cap_mask")"
check "IsDeviceManagementSupported with no agent" "$(dm_bit)" 0

########################################################################
vm_log "== 1. srptd's agent"
srptd_start --lun ram:16M --port "$SRP_PORT" --device "$RXE_DEV" --allow ANY \
    --queue-depth "$QD" --max-it-iu-len "$IU" --max-transfer "$XFER"
cp "$VM_RESULTS/srptd.log" "$OUT/srptd-start.log"
check_grep "srptd logs its agent" "$OUT/srptd-start.log" "answering device-management MADs"
check_grep "srptd logs the RoCE add_target" "$OUT/srptd-start.log" \
    "RoCE (RDMA/CM) add_target: id_ext=$SRPTD_ID_EXT,ioc_guid=$SRPTD_IOC_GUID,dest=$RXE_ADDR:$SRP_PORT"
check "IsDeviceManagementSupported with srptd's agent (cannot be set from userspace)" "$(dm_bit)" 0

dmq --json > "$OUT/srptd.json" || vm_die "dm-query --json against srptd"
dmq --raw > "$OUT/srptd.txt" || vm_die "dm-query --raw against srptd"
dmq --probe > "$OUT/srptd.probe" || vm_die "dm-query --probe against srptd"
cat "$OUT/srptd.txt" >&2
J=$OUT/srptd.json
jqr() { jq -r "$1" "$J"; }
check "controllers" "$(jqr '.controllers | length')" 1
check "slot" "$(jqr '.controllers[0].slot')" 1
check "IOUnitInfo slot 1 present" "$(jqr '.io_unit_info.slots[0]')" 1
check "IOC GUID = ready ioc_guid" "$(jqr '.controllers[0].profile.guid')" "$SRPTD_IOC_GUID"
check "service name" "$(jqr '.controllers[0].services[0].name')" "SRP.T10:$SRPTD_ID_EXT"
check "service ID (RDMA_PS_IB, port $SRP_PORT)" "$(jqr '.controllers[0].services[0].service_id')" "$SERVICE_ID"
check "SendMessageSize = --max-it-iu-len" "$(jqr '.controllers[0].profile.send_size')" "$IU"
check "SendMessageQueueDepth = --queue-depth" "$(jqr '.controllers[0].profile.send_queue_depth')" "$QD"
check "RDMATransferSize = --max-transfer" "$(jqr '.controllers[0].profile.rdma_size')" "$XFER_BYTES"
check "RDMAReadQueueDepth = device max_qp_init_rd_atom (1 on rxe)" "$(jqr '.controllers[0].profile.rdma_read_depth')" "$READ_DEPTH"
check "VendorID = device vendor_id" "$(jqr '.controllers[0].profile.vendor_id')" "$(printf '%06x' $((VENDOR)))"
check "I/O class" "$(jqr '.controllers[0].profile | "\(.io_class)/\(.io_subclass)/\(.protocol)/\(.protocol_version)"')" \
    "0100/609e/0108/0001"
check "operations mask" "$(jqr '.controllers[0].profile.op_cap_mask')" 2b
check "service entries" "$(jqr '.controllers[0].profile.service_entries')" 1
CHANGE_ID=$(jqr '.io_unit_info.change_id')
[ "$CHANGE_ID" != 0 ] || { vm_log "FAIL: change ID 0"; FAILS=$((FAILS + 1)); }
# ib_srp is not loaded: dm-query assumes its defaults (68 + 8192-byte IUs),
# more than srptd accepts, hence max_it_iu_size.
check "add_target (IB CM)" "$(jqr '.add_target[0]')" \
    "id_ext=$SRPTD_ID_EXT,ioc_guid=$SRPTD_IOC_GUID,dgid=$DGID,pkey=ffff,service_id=$SERVICE_ID,max_it_iu_size=$IU"
check "add_target (RDMA/CM)" "$(jqr '.add_target_rdma_cm[0]')" \
    "id_ext=$SRPTD_ID_EXT,ioc_guid=$SRPTD_IOC_GUID,dest=<target IP>:$SRP_PORT,max_it_iu_size=$IU"

########################################################################
vm_log "== 2. a second srptd cannot register the class and runs without it"
log2=$OUT/srptd-second.log
"$SRPTD_BIN" --lun ram:4M --port $((SRP_PORT + 1)) --device "$RXE_DEV" > "$log2" 2>&1 &
PID2=$!
wait_until 30 grep -q '^ready ' "$log2" || { cat "$log2" >&2; vm_die "second srptd not ready"; }
check_grep "second srptd warns" "$log2" "device management disabled on this port (the target runs without it)"
check_grep "second srptd names the owner" "$log2" "is already registered on this port by another agent"
kill -TERM "$PID2"
rc=0; wait "$PID2" || rc=$?
check "second srptd exit status" "$rc" 0
dmq --json > "$OUT/srptd-after-second.json" || vm_die "dm-query after the second srptd"
check "first srptd still answers, same change ID" "$(jq -r .io_unit_info.change_id "$OUT/srptd-after-second.json")" "$CHANGE_ID"

########################################################################
vm_log "== 3. the initiator logs in with the add_target string dm-query prints"
srp_load ch_count=1
dmq > "$OUT/srptd-for-login.txt" || vm_die "dm-query with ib_srp loaded"
line=$(sed -n 's/^add_target (RDMA\/CM, RoCE or IPoIB): //p' "$OUT/srptd-for-login.txt" | sed -n 1p)
check "dm-query's RDMA/CM add_target" "$line" \
    "id_ext=$SRPTD_ID_EXT,ioc_guid=$SRPTD_IOC_GUID,dest=<target IP>:$SRP_PORT,max_it_iu_size=$IU"
line=${line/<target IP>/$RXE_ADDR}
vm_log "add_target $line"
srp_write_add_target "$line" ||
    vm_die "add_target failed: $(dmesg | tail -n 5)"
dev=$(wait_for_disk SRPTD 30)
SEND=$(jqr '.controllers[0].profile.send_size')
dd if="$dev" of=/dev/null bs=64k count=16 iflag=direct 2>/dev/null || vm_die "reading $dev"
login=$(nocolor "$VM_RESULTS/srptd.log" | grep 'login accepted' | tail -n1)
vm_log "srptd: $login"
check "login it_iu_len = advertised send size" "$(echo "$login" | sed -n 's/.*it_iu_len=\([0-9]*\).*/\1/p')" "$SEND"
check "login credits = advertised queue depth" "$(echo "$login" | sed -n 's/.*credits=\([0-9]*\).*/\1/p')" \
    "$(jqr '.controllers[0].profile.send_queue_depth')"
rd=$(echo "$login" | sed -n 's/.*rdma_read_depth=\([0-9]*\).*/\1/p')
if [ -n "$rd" ] && [ "$rd" -le "$READ_DEPTH" ]; then vm_log "ok: login RDMA READ depth $rd <= advertised $READ_DEPTH"
else vm_log "FAIL: login RDMA READ depth '$rd' > advertised $READ_DEPTH"; FAILS=$((FAILS + 1)); fi
dmq --json > "$OUT/srptd-logged-in.json" || vm_die "dm-query while logged in"
srp_logout_all
srp_unload
srptd_stop || vm_die "srptd exited non-zero"
cp "$VM_RESULTS/srptd.log" "$OUT/srptd.log"
check_grep "srptd stops its agent" "$OUT/srptd.log" "device management stopped"
nocolor "$OUT/srptd.log" | grep -E 'device management|DevMgt' | cut -c1-240 >&2 || true

########################################################################
vm_log "== 4. --no-dm"
srptd_start --lun ram:4M --port "$SRP_PORT" --device "$RXE_DEV" --no-dm
check_grep "srptd --no-dm says so" "$VM_RESULTS/srptd.log" "device management disabled (--no-dm)"
rc=0; dmq --json > "$OUT/nodm.json" 2> "$OUT/nodm.err" || rc=$?
cat "$OUT/nodm.err" >&2
[ "$rc" != 0 ] || { vm_log "FAIL: dm-query succeeded against srptd --no-dm"; FAILS=$((FAILS + 1)); }
check_grep "no agent: the kernel answers status 0x000c" "$OUT/nodm.err" "status 0x000c"
srptd_stop || vm_die "srptd --no-dm exited non-zero"

########################################################################
vm_log "== 5. kernel ib_srpt (srptd stopped)"
lio_ramdisk_target 4096
wait_until 10 dm_bit_set || true
check "IsDeviceManagementSupported with ib_srpt" "$(dm_bit)" 1
dmq --json > "$OUT/kernel.json" || vm_die "dm-query --json against ib_srpt"
dmq --raw > "$OUT/kernel.txt" || vm_die "dm-query --raw against ib_srpt"
dmq --probe > "$OUT/kernel.probe" || vm_die "dm-query --probe against ib_srpt"
cat "$OUT/kernel.txt" >&2
lio_teardown
check "IsDeviceManagementSupported after ib_srpt" "$(dm_bit)" 0

# Same exchanges (attribute, modifier, status) in the same order.
xch() { jq -r '.transcript[] | "\(.attr_id) \(.attr_mod) \(.status)"' "$1"; }
check "same attributes, modifiers and statuses" "$(xch "$OUT/kernel.json" | tr '\n' ' ')" \
    "$(xch "$J" | tr '\n' ' ')"

# Field layouts of the four attributes (IBTA 16.3.3): attr name offset
# length. Every byte of the 192-byte data field belongs to one entry
# ("pad": past the attribute).
LAYOUT="
0001 base_version 0 1
0001 class_version 1 1
0001 cap_mask 2 2
0001 cap_mask2_resp_time 4 4
0001 redirect 8 32
0001 trap 40 32
0001 pad 72 120
0010 change_id 0 2
0010 max_controllers 2 1
0010 diag_option_rom 3 1
0010 controller_list 4 128
0010 pad 132 60
0011 guid 0 8
0011 vendor_id 8 4
0011 device_id 12 4
0011 device_version 16 2
0011 reserved_18 18 2
0011 subsystem_vendor_id 20 4
0011 subsystem_id 24 4
0011 io_class 28 2
0011 io_subclass 30 2
0011 protocol 32 2
0011 protocol_version 34 2
0011 reserved_36 36 4
0011 send_queue_depth 40 2
0011 reserved_42 42 1
0011 rdma_read_depth 43 1
0011 send_size 44 4
0011 rdma_size 48 4
0011 op_cap_mask 52 1
0011 svc_cap_mask 53 1
0011 service_entries 54 1
0011 reserved_55 55 9
0011 id_string 64 64
0011 pad 128 64
0012 entry0_name 0 40
0012 entry0_service_id 40 8
0012 entries_1_3 48 144
"
# Fields allowed to differ, and why (docs/device-management.md).
declare -A WHY=(
    [0010.change_id]="srptd: hash of its configuration; ib_srpt: 1"
    [0011.vendor_id]="ib_srpt writes the 24-bit ID as be32 (quirk); srptd per IBTA"
    [0011.subsystem_vendor_id]="same quirk"
    [0011.send_queue_depth]="srptd: --queue-depth; ib_srpt: min(128, max_qp_wr)"
    [0011.rdma_read_depth]="srptd: device max_qp_init_rd_atom (1 on rxe); ib_srpt: 4"
    [0011.send_size]="srptd: --max-it-iu-len; ib_srpt: srp_max_req_size"
    [0011.rdma_size]="srptd: --max-transfer; ib_srpt: srp_max_rdma_size"
    [0011.id_string]="product name"
    [0012.entry0_service_id]="srptd: RDMA_PS_IB service ID; ib_srpt: node GUID"
)
hexstr() { # printable form of a hex byte string: text for names, hex otherwise
    local h=$1 name=$2 s="" i c
    case "$name" in
        id_string | entry0_name)
            for ((i = 0; i < ${#h}; i += 2)); do
                c=${h:i:2}; [ "$c" = 00 ] && break
                s+=$(printf "\\x$c")
            done
            printf '"%s"' "$s" ;;
        *) if [ ${#h} -le 16 ]; then printf '%s (%d)' "$h" "$((16#$h))"; else printf '%s' "$h"; fi ;;
    esac
}
n=$(jq '.transcript | length' "$J")
same=0
diffs=()
for ((i = 0; i < n; i++)); do
    attr=$(jq -r ".transcript[$i].attr_id" "$J")
    od=$(jq -r ".transcript[$i].data" "$J")
    kd=$(jq -r ".transcript[$i].data" "$OUT/kernel.json")
    covered=0
    while read -r a name off len; do
        [ "$a" = "$attr" ] || continue
        covered=$((covered + len))
        o=${od:$((2 * off)):$((2 * len))}
        k=${kd:$((2 * off)):$((2 * len))}
        if [ "$o" = "$k" ]; then same=$((same + 1)); continue; fi
        diffs+=("$attr.$name|$(hexstr "$k" "$name")|$(hexstr "$o" "$name")")
    done <<< "$LAYOUT"
    check "layout covers attribute $attr" "$covered" 192
done
vm_log "identical fields: $same; differing fields:"
{
    printf '%-28s | %-40s | %-40s | %s\n' "attribute.field" "ib_srpt" "srptd" "why"
    for d in "${diffs[@]}"; do
        IFS='|' read -r f k o <<< "$d"
        printf '%-28s | %-40s | %-40s | %s\n' "$f" "$k" "$o" "${WHY[$f]:-UNEXPECTED}"
    done
} | tee "$OUT/differing-fields.txt" >&2
for d in "${diffs[@]}"; do
    f=${d%%|*}
    [ -n "${WHY[$f]:-}" ] || { vm_log "FAIL: field $f differs from ib_srpt"; FAILS=$((FAILS + 1)); }
done

# Error handling: statuses of the probes (without the data bytes).
EXPECTED_PROBE_DIFFS="Get IOControllerProfile slot 2|Get ServiceEntries 1:0-1|Get ServiceEntries 1:1-0|Get ServiceEntries 1:0-3|Get ServiceEntries 2:0-0"
strip() { sed 's/ data\[0\.\.8\].*//' "$1"; }
vm_log "probes whose answers differ:"
paste -d'|' <(strip "$OUT/kernel.probe") <(strip "$OUT/srptd.probe") | while IFS='|' read -r k o; do
    [ "$k" = "$o" ] && continue
    name=$(echo "$k" | sed 's/^probe \(.*[^ ]\) *->.*/\1/')
    printf '%-34s ib_srpt %-28s srptd %s\n' "$name" "${k##*-> }" "${o##*-> }"
    case "|$EXPECTED_PROBE_DIFFS|" in
        *"|$name|"*) ;;
        *) echo "UNEXPECTED: $name" ;;
    esac
done | tee "$OUT/differing-probes.txt" >&2
if grep -q UNEXPECTED "$OUT/differing-probes.txt"; then
    vm_log "FAIL: unexpected probe differences"; FAILS=$((FAILS + 1))
fi
check "probe lines" "$(wc -l < "$OUT/kernel.probe")" "$(wc -l < "$OUT/srptd.probe")"

if [ "$FAILS" != 0 ]; then
    vm_die "$FAILS check(s) failed"
fi
vm_log "PASS dm"
