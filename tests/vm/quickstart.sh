#!/usr/bin/env bash
# Guest script for scripts/quickstart.sh: srptd on soft-RoCE, the kernel
# initiator logged in, the disk shown, a short fio run, and what to do next.
set -euo pipefail
. "$REPO/tests/vm/lib.sh"
vm_trap_failures

say() { printf '\n>>> %s\n' "$*"; }
rxe_setup
say "soft-RoCE device rxe0 on dummy0, 169.254.77.1 (node GUID $(cat /sys/class/infiniband/rxe0/node_guid))"
say "starting: srptd --lun ram:256M --port 5555 --device rxe0 --allow ANY"
srptd_start --lun ram:256M --port "$SRP_PORT" --device "$RXE_DEV" --allow ANY
grep -m1 '^ready ' "$VM_RESULTS/srptd.log"
say "logging the Linux initiator in: echo id_ext=$SRPTD_ID_EXT,ioc_guid=$SRPTD_IOC_GUID,dest=$RXE_ADDR:$SRPTD_PORT > /sys/class/infiniband_srp/srp-rxe0-1/add_target"
dev=$(SRP_VENDOR=SRPTD srp_login "$SRPTD_ID_EXT" "$SRPTD_IOC_GUID" 2)
lsblk -o NAME,SIZE,VENDOR,MODEL "$dev"
say "fio: 4 KiB random reads, queue depth 16, 5 seconds"
fio --name=quickstart --filename="$dev" --direct=1 --ioengine=libaio --rw=randread --bs=4k \
    --iodepth=16 --runtime=5 --time_based --size=64M 2>&1 | grep -E 'IOPS=|lat \(usec\): min|cpu'
srp_logout_all
srptd_stop
tail -n 1 "$VM_RESULTS/srptd.log"
cat <<MSG

>>> srptd works. Next steps:
    - on a machine with an RDMA NIC or the rdma_rxe module:
        target/release/srptd --lun ram:256M        (or --lun file:/path/disk.img)
      and on the initiator:
        modprobe ib_srp
        echo id_ext=<id_ext>,ioc_guid=<ioc_guid>,dest=<target IP>:5555 > /sys/class/infiniband_srp/srp-<dev>-1/add_target
      with id_ext/ioc_guid from srptd's "ready" line.
    - srptd --help lists every option; docs/ explains the design.
    - scripts/test.sh runs the test suite (unit tests and these VM scenarios).
MSG
