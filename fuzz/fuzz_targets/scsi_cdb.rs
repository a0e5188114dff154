//! CDB decoding and execution on arbitrary bytes against a small RAM LUN:
//! every outcome must be GOOD, CHECK CONDITION with valid fixed sense, or
//! (PERSISTENT RESERVE and RESERVE/RELEASE) RESERVATION CONFLICT without
//! sense.
#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use srptd::mem::DmaBuf;
use srptd::scsi::backstore::BackstoreConfig;
use srptd::scsi::lun::{LunConfig, Nexus, Target, TargetConfig};
use srptd::scsi::{Sense, ScsiStatus};

fn nexus() -> &'static (Arc<Nexus>, DmaBuf) {
    static N: OnceLock<(Arc<Nexus>, DmaBuf)> = OnceLock::new();
    N.get_or_init(|| {
        let bs = BackstoreConfig::parse("ram:1M,bs=512", "lun").unwrap();
        let t = Target::new(TargetConfig { luns: vec![LunConfig::new(0, bs)], ..TargetConfig::default() }).unwrap();
        (t.nexus([1; 16]), DmaBuf::new(1 << 20).unwrap())
    })
}

fuzz_target!(|input: &[u8]| {
    let Some((&lun, cdb)) = input.split_first() else { return };
    let (nexus, buf) = nexus();
    let mut l = [0u8; 8];
    l[1] = lun % 2;
    let done = match nexus.plan(l, cdb) {
        Ok(plan) => nexus.execute(l, cdb, buf, 0, plan.len.min(1 << 20)),
        Err(sense) => {
            let mut b = [0u8; Sense::FIXED_LEN];
            assert_eq!(sense.emit_fixed(&mut b), Sense::FIXED_LEN);
            return;
        }
    };
    assert!(
        done.status == ScsiStatus::GOOD
            || done.status == ScsiStatus::CHECK_CONDITION
            || (done.status == ScsiStatus::RESERVATION_CONFLICT && done.sense.is_none())
    );
    if done.status == ScsiStatus::CHECK_CONDITION {
        let s = done.sense.expect("CHECK CONDITION carries sense");
        let mut b = [0u8; Sense::FIXED_LEN];
        s.emit_fixed(&mut b);
        assert_eq!(b[0] & 0x7f, 0x70);
    }
});
