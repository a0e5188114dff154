#!/usr/bin/env bash
# Guest script: record what the 6.1 kernel SRP initiator (ib_srp) sends at
# login over RDMA/CM on rxe, for the people writing the target. Not a
# pass/fail test; output goes to stdout and $VM_RESULTS/facts.txt.
#   1. cm-probe (tests/vm/tools/cm-probe.c, compiled in the guest) listens
#      on the SRP port and dumps the RDMA/CM CONNECT_REQUEST
#      (conn params as the passive side sees them + SRP_LOGIN_REQ bytes),
#      for several ib_srp parameter sets.
#   2. A real login to ib_srpt with ib_srp dynamic debug on, dmesg kept.
#   3. Whether allow_ext_sg=1 cmd_sg_entries=255 loads and logs in.
set -uo pipefail
. "$REPO/tests/vm/lib.sh"
OUT=$VM_RESULTS/facts.txt
exec > >(tee "$OUT") 2>&1
# Built here, in the guest's writable /tmp, with the host's compiler.
PROBE=/tmp/cm-probe
cc -O2 -o "$PROBE" "$REPO/tests/vm/tools/cm-probe.c" -lrdmacm -libverbs ||
    echo "== could not build cm-probe (needs gcc, librdmacm-dev, libibverbs-dev)"

rxe_setup
echo "== /dev/infiniband: $(ls /dev/infiniband | tr '\n' ' ')"
echo "== host checkout from guest: $(ls "$REPO" | tr '\n' ' ')"
ibv_devinfo -v -d rxe0 | grep -E 'max_qp_rd_atom|max_qp_init_rd_atom|max_sge|max_qp_wr|max_mr_size|max_cqe|active_mtu|fw_ver|phys_port_cnt' || true
echo "== debugfs: $(ls /sys/kernel/debug/dynamic_debug/control 2>&1)"

probe() {   # probe <label> <ib_srp params...>
    local label=$1; shift
    echo "== cm-probe: ib_srp $*  ($label)"
    "$PROBE" "$RXE_ADDR" "$SRP_PORT" 1 > /tmp/probe.out 2>&1 &
    local pp=$!
    wait_until 10 grep -q listening /tmp/probe.out
    srp_load "$@" || return
    echo "  params: $(cd /sys/module/ib_srp/parameters && grep -H . * | tr '\n' ' ')"
    echo "id_ext=1122334455667788,ioc_guid=99aabbccddeeff00,dest=$RXE_ADDR:$SRP_PORT" \
        > /sys/class/infiniband_srp/srp-rxe0-1/add_target 2>/tmp/add.err
    echo "  add_target (expected to fail, probe rejects): $(cat /tmp/add.err)"
    wait_until 10 sh -c "! kill -0 $pp 2>/dev/null || grep -q '^srp_login' /tmp/probe.out"
    kill "$pp" 2>/dev/null; wait "$pp" 2>/dev/null
    sed 's/^/  /' /tmp/probe.out
}

if [ -x "$PROBE" ]; then
    probe default
    probe "ch_count=2" ch_count=2
    probe "no immediate data" use_imm_data=0
    probe "ext sg" allow_ext_sg=1 cmd_sg_entries=255 indirect_sg_entries=2048
    probe "max_imm_data=65536" max_imm_data=65536
    srp_unload
else
    echo "== no cm-probe, skipping the CONNECT_REQUEST dumps"
fi

echo "== real login to ib_srpt with dyndbg, ch_count=2"
lio_ramdisk_target 65536
echo 'module ib_srpt +p' > /sys/kernel/debug/dynamic_debug/control || true
dmesg -C
export SRP_DYNDBG=1
dev=$(srp_login "$LIO_ID_EXT" "$LIO_IOC_GUID" 2) && echo "disk $dev"
unset SRP_DYNDBG
dd if="$dev" of=/dev/null bs=64k count=4 iflag=direct 2>&1 | tail -n1
dd if=/dev/zero of="$dev" bs=4k count=4 oflag=direct 2>&1 | tail -n1
dmesg | grep -vE 'dummy0 speed' | sed -n 1,80p
for h in /sys/class/scsi_host/host*; do
    [ "$(cat $h/proc_name)" = ib_srp ] || continue
    for a in ch_count comp_vector tl_retry_count cmd_sg_entries allow_ext_sg req_lim sgid dgid can_queue sg_tablesize max_sectors cmd_per_lun; do
        [ -r "$h/$a" ] && echo "  scsi_host $a = $(cat $h/$a)"
    done
done
echo "  queue max_sectors_kb=$(cat /sys/block/${dev#/dev/}/queue/max_sectors_kb) max_segments=$(cat /sys/block/${dev#/dev/}/queue/max_segments)"
srp_logout_all

echo "== allow_ext_sg=1 cmd_sg_entries=255 indirect_sg_entries=2048 login to ib_srpt"
dmesg -C
if dev=$(srp_login "$LIO_ID_EXT" "$LIO_IOC_GUID" 2 allow_ext_sg=1 cmd_sg_entries=255 indirect_sg_entries=2048); then
    echo "  login ok: $dev; params $(cd /sys/module/ib_srp/parameters && grep -H . * | tr '\n' ' ')"
    echo "  queue max_sectors_kb=$(cat /sys/block/${dev#/dev/}/queue/max_sectors_kb) max_segments=$(cat /sys/block/${dev#/dev/}/queue/max_segments)"
    fio_verify "$dev" 2 randwrite 128k 8 && echo "  fio 128k verify ok"
else
    echo "  login FAILED"
fi
dmesg | grep -vE 'dummy0 speed' | grep -iE 'srp|error|fail' | sed -n 1,30p
srp_logout_all
srp_unload
lio_teardown && echo "== teardown ok"
exit 0
