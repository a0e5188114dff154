#!/bin/sh
# Device-management check on soft-RoCE, run INSIDE a throwaway VM:
#
#   cargo build --examples
#   vng -r /boot/vmlinuz-6.1.0-56-amd64 --disable-kvm --force-9p \
#       --memory 2G --cpus 2 -e /abs/path/tests/vm/dm-kernel.sh
#
# Boots nothing itself. Sets up rxe0 as docs/softroce-vm.md says, then:
#   0. no DevMgt agent: the kernel answers Get with status 0x000c;
#   1. srptd's agent (examples/dm_agent) answers; dm_query decodes it;
#   2. kernel ib_srpt + LIO target answers; dm_query decodes it;
#      registering our agent fails while ib_srpt owns class 0x06;
#   3. prints both transcripts side by side for the field comparison.
# Exit status 0 when every check passed.
set -u
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN=${BIN:-$ROOT/target/debug/examples}
OUT=/tmp/dm
mkdir -p $OUT
FAIL=0
ok() { echo "PASS: $*"; }
bad() { echo "FAIL: $*"; FAIL=1; }
# expect FILE PATTERN DESCRIPTION
expect() { if grep -qF -- "$2" "$1"; then ok "$3"; else bad "$3 (no '$2' in $1)"; fi; }

echo "== kernel $(uname -r)"
modprobe rdma_rxe && modprobe rdma_ucm && modprobe ib_umad || { echo "FAIL: modules"; exit 1; }
ip link add dummy0 type dummy
ip link set dummy0 address 02:00:00:00:77:01
ip addr add 169.254.77.1/32 dev dummy0
ip link set dummy0 up
rdma link add rxe0 type rxe netdev dummy0 || { echo "FAIL: rdma link add"; exit 1; }
P1=/sys/class/infiniband/rxe0/ports/1
for i in 1 2 3 4 5 6 7 8 9 10; do
    [ "$(cat $P1/state 2>/dev/null)" = "4: ACTIVE" ] && break
    sleep 1
done
GUID=$(cat /sys/class/infiniband/rxe0/node_guid)
IDEXT=$(echo "$GUID" | tr -d :)
echo "== rxe0 node_guid $GUID state '$(cat $P1/state)' link_layer $(cat $P1/link_layer)"
echo "== gids: $(cat $P1/gids/0) | $(cat $P1/gids/1 2>/dev/null)"
echo "== cap_mask before any agent: $(cat $P1/cap_mask)"
ls -l /dev/infiniband/ 2>&1

echo
echo "== 0. no DevMgt agent registered"
$BIN/dm_query rxe0 1 --probe > $OUT/none.probe 2>&1
cat $OUT/none.probe
expect $OUT/none.probe "Get IOUnitInfo                     -> method 0x81 status 000c" \
    "no agent: kernel answers Get(IOUnitInfo) with 0x000c"

echo
echo "== 1. srptd DmAgent (examples/dm_agent)"
$BIN/dm_agent rxe0 1 25 > $OUT/agent.log 2>&1 &
AGENT=$!
sleep 2
echo "== cap_mask with our agent: $(cat $P1/cap_mask)"
$BIN/dm_query rxe0 1 --raw > $OUT/ours.txt 2>&1; echo "dm_query exit $?" >> $OUT/ours.txt
$BIN/dm_query rxe0 1 --json > $OUT/ours.json 2>&1
$BIN/dm_query rxe0 1 --probe > $OUT/ours.probe 2>&1
cat $OUT/ours.txt $OUT/ours.json $OUT/ours.probe
expect $OUT/ours.txt "dm_query exit 0" "ours: query succeeded"
expect $OUT/ours.txt "controller[  1]: present" "ours: slot 1 present"
expect $OUT/ours.txt "GUID:             $IDEXT" "ours: IOC GUID is the node GUID"
expect $OUT/ours.txt "IO class:         0100 subclass 609e protocol 0108 version 0001" "ours: SRP class/subclass/protocol"
expect $OUT/ours.txt "/ SRP.T10:$IDEXT" "ours: service entry SRP.T10:<id_ext>"
expect $OUT/ours.txt "add_target: id_ext=$IDEXT,ioc_guid=$IDEXT,dgid=fe80000000000000${IDEXT},pkey=ffff,service_id=$IDEXT" \
    "ours: add_target string"
kill $AGENT 2>/dev/null; wait $AGENT 2>/dev/null
cat $OUT/agent.log

echo
echo "== 2. kernel ib_srpt + LIO"
modprobe target_core_mod && modprobe ib_srpt || bad "loading ib_srpt"
mount -t configfs none /sys/kernel/config 2>/dev/null
C=/sys/kernel/config/target
mkdir -p $C/core/rd_mcp_0/ramdisk
echo rd_pages=65536 > $C/core/rd_mcp_0/ramdisk/control
echo 1 > $C/core/rd_mcp_0/ramdisk/enable
mkdir -p $C/srpt
echo 5555 > $C/srpt/discovery_auth/rdma_cm_port
P=$C/srpt/$GUID/$GUID
mkdir -p $P/lun/lun_0
ln -s $C/core/rd_mcp_0/ramdisk $P/lun/lun_0/ramdisk
for A in 169.254.77.1 $GUID; do
    mkdir -p $P/acls/$A/lun_0 && ln -s $P/lun/lun_0 $P/acls/$A/lun_0/
done
echo 1 > $P/enable
sleep 1
echo "== cap_mask with ib_srpt: $(cat $P1/cap_mask)"
$BIN/dm_query rxe0 1 --raw > $OUT/kernel.txt 2>&1; echo "dm_query exit $?" >> $OUT/kernel.txt
$BIN/dm_query rxe0 1 --json > $OUT/kernel.json 2>&1
$BIN/dm_query rxe0 1 --probe > $OUT/kernel.probe 2>&1
cat $OUT/kernel.txt $OUT/kernel.json $OUT/kernel.probe
expect $OUT/kernel.txt "dm_query exit 0" "kernel: query succeeded"
expect $OUT/kernel.txt "controller[  1]: present" "kernel: slot 1 present"
expect $OUT/kernel.txt "GUID:             $IDEXT" "kernel: IOC GUID is the node GUID"
expect $OUT/kernel.txt "IO class:         0100 subclass 609e protocol 0108 version 0001" "kernel: SRP class/subclass/protocol"
expect $OUT/kernel.txt "/ SRP.T10:$IDEXT" "kernel: service entry SRP.T10:<id_ext>"

echo "== registering class 0x06 Get/Set while ib_srpt is loaded (must fail):"
$BIN/dm_agent rxe0 1 1 > $OUT/agent-eperm.log 2>&1
cat $OUT/agent-eperm.log
expect $OUT/agent-eperm.log "umad_register(class 0x06" "ours cannot register while ib_srpt owns class 0x06"

echo
echo "== 3. comparison (kernel vs ours)"
for f in txt probe; do
    echo "--- diff kernel.$f ours.$f"
    diff $OUT/kernel.$f $OUT/ours.$f
done
# Same layouts: the ClassPortInfo and IOUnitInfo data must be identical
# byte for byte (raw attr 0001 and 0010 blocks).
for attr in 0001 0010; do
    k=$(sed -n "/^raw attr $attr/,/^raw attr/p" $OUT/kernel.txt | grep '^ ')
    o=$(sed -n "/^raw attr $attr/,/^raw attr/p" $OUT/ours.txt | grep '^ ')
    if [ -n "$k" ] && [ "$k" = "$o" ]; then ok "attribute $attr identical"; else bad "attribute $attr differs"; fi
done

echo
if [ $FAIL = 0 ]; then echo "DM-KERNEL: ALL PASSED"; else echo "DM-KERNEL: FAILURES"; fi
exit $FAIL
