//! Live changes of a served target ([`Target::apply`], [`Target::resize`]):
//! what each initiator sees, the unit attentions they get, and what
//! happens to commands of a LUN that goes away.

use std::collections::HashSet;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::backstore::tests::TempFile;
use super::lun::{encode_lun, Access, LunConfig, Target, TargetConfig};
use super::sense::{Sense, SenseKey};
use super::tests::{
    fails, file, good, inquiry, pattern, ram, read_cap16, report_luns, run, rw10, target, tur, INI_A, INI_B,
};
use super::{ChangeError, ScsiStatus};
use crate::mem::DmaBuf;

fn config(luns: Vec<LunConfig>) -> TargetConfig {
    TargetConfig {
        luns,
        ..TargetConfig::default()
    }
}

fn reported(n: &super::Nexus) -> Vec<u16> {
    let d = good(n, 0, &report_luns(0, 1024), &[]);
    d[8..]
        .chunks(8)
        .map(|c| super::lun::decode_lun(c.try_into().unwrap()).unwrap())
        .collect()
}

/// Consumes the creation unit attention.
fn settle(n: &super::Nexus, lun: u16) {
    fails(n, lun, &tur(), &[], SenseKey::UnitAttention, 0x29, 0);
}

#[test]
fn add_and_remove_raise_reported_luns_changed() {
    let l0 = LunConfig::new(0, ram(1 << 20, 512));
    let t = target(vec![l0.clone()]);
    let a = t.nexus(INI_A);
    settle(&a, 0);
    let l1 = LunConfig::new(1, ram(2 << 20, 512));
    let applied = t.apply(&config(vec![l0.clone(), l1.clone()])).unwrap();
    assert_eq!(applied.added, vec![1]);
    assert_eq!(applied.nexuses_notified, 1);
    // SPC-4 6.33 / SAM-5 5.14: the next command on any LUN reports it once.
    fails(&a, 0, &tur(), &[], SenseKey::UnitAttention, 0x3f, 0x0e);
    good(&a, 0, &tur(), &[]);
    fails(&a, 1, &tur(), &[], SenseKey::UnitAttention, 0x3f, 0x0e);
    assert_eq!(reported(&a), vec![0, 1]);
    let data = pattern(1024, 7);
    good(&a, 1, &rw10(0x2a, 3, 2, false), &data);
    assert_eq!(good(&a, 1, &rw10(0x28, 3, 2, false), &[]), data);
    // A nexus formed after the change sees the new table with its reset UA.
    let b = t.nexus(INI_B);
    settle(&b, 1);

    let applied = t.apply(&config(vec![l1.clone()])).unwrap();
    assert_eq!(applied.removed, vec![0]);
    assert_eq!(applied.nexuses_notified, 2);
    fails(&a, 0, &tur(), &[], SenseKey::IllegalRequest, 0x25, 0);
    fails(&a, 1, &tur(), &[], SenseKey::UnitAttention, 0x3f, 0x0e);
    assert_eq!(reported(&a), vec![1]);
    // LUN 1 kept its data across both changes.
    assert_eq!(good(&a, 1, &rw10(0x28, 3, 2, false), &[]), data);
    // Applying the same configuration again changes nothing.
    let applied = t.apply(&config(vec![l1])).unwrap();
    assert!(applied.is_empty());
    assert_eq!(applied.nexuses_notified, 0);
    fails(&b, 1, &tur(), &[], SenseKey::UnitAttention, 0x3f, 0x0e);
    good(&b, 1, &tur(), &[]);
}

#[test]
fn a_command_planned_before_its_lun_went_away_does_not_run() {
    let tf = TempFile::new("live-rm", 1 << 20);
    let l0 = LunConfig::new(0, ram(1 << 20, 512));
    let l1 = LunConfig::new(1, file(&tf, 512));
    let t = target(vec![l0.clone(), l1.clone()]);
    let a = t.nexus(INI_A);
    settle(&a, 1);
    let cdb = rw10(0x2a, 0, 1, false);
    let (cmd, plan) = a.plan_command(encode_lun(1), &cdb).unwrap();
    t.apply(&config(vec![l0.clone()])).unwrap();
    let buf = DmaBuf::new(plan.len as usize).unwrap();
    buf.write(0, &[0x5a; 512]);
    let c = a.run(&cmd, &buf, 0, plan.len);
    assert_eq!(c.status, ScsiStatus::CHECK_CONDITION);
    assert_eq!(c.sense.unwrap(), Sense::lun_not_supported());
    // Added again (same file): the old command still does not run on it,
    // and nothing was written.
    t.apply(&config(vec![l0, l1])).unwrap();
    let c = a.run(&cmd, &buf, 0, plan.len);
    assert_eq!(c.sense.unwrap(), Sense::lun_not_supported());
    assert_eq!(std::fs::read(&tf.0).unwrap()[..512], [0u8; 512]);
}

#[test]
fn resize_raises_capacity_changed_and_read_capacity_follows() {
    let tf = TempFile::new("live-resize", 1 << 20);
    let t = target(vec![LunConfig::new(0, file(&tf, 512))]);
    let a = t.nexus(INI_A);
    settle(&a, 0);
    let blocks = |n: &super::Nexus| {
        let d = good(n, 0, &read_cap16(32), &[]);
        u64::from_be_bytes(d[..8].try_into().unwrap()) + 1
    };
    assert_eq!(blocks(&a), 2048);
    assert_eq!(t.resize(0, Some(4 << 20)).unwrap(), 8192);
    // SBC-3 4.6: CAPACITY DATA HAS CHANGED, then the new size.
    fails(&a, 0, &read_cap16(32), &[], SenseKey::UnitAttention, 0x2a, 0x09);
    assert_eq!(blocks(&a), 8192);
    assert_eq!(std::fs::metadata(&tf.0).unwrap().len(), 4 << 20);
    good(&a, 0, &rw10(0x2a, 8000, 8, false), &pattern(4096, 1));
    // Bad sizes and RAM are refused, nothing changes.
    assert!(matches!(
        t.resize(0, Some(1000)),
        Err(ChangeError::Backstore { lun: 0, .. })
    ));
    assert!(matches!(t.resize(0, None), Err(ChangeError::Backstore { .. })));
    assert!(matches!(
        t.resize(7, Some(1 << 20)),
        Err(ChangeError::NoSuchLun(7))
    ));
    assert_eq!(blocks(&a), 8192);
    let r = target(vec![LunConfig::new(0, ram(1 << 20, 512))]);
    let e = r.resize(0, Some(2 << 20)).unwrap_err();
    assert!(e.to_string().contains("RAM LUN keeps the size"), "{e}");
}

#[test]
fn read_only_live_and_per_initiator() {
    let l0 = LunConfig::new(0, ram(1 << 20, 512));
    let t = target(vec![l0.clone()]);
    let (a, b) = (t.nexus(INI_A), t.nexus(INI_B));
    settle(&a, 0);
    settle(&b, 0);
    let w = rw10(0x2a, 0, 1, false);
    good(&a, 0, &w, &[1; 512]);
    let mut ro = l0.clone();
    ro.backstore.read_only = true;
    assert_eq!(t.apply(&config(vec![ro])).unwrap().read_only, vec![0]);
    fails(&a, 0, &w, &[2; 512], SenseKey::DataProtect, 0x27, 0);
    assert_eq!(good(&a, 0, &rw10(0x28, 0, 1, false), &[]), vec![1; 512]);
    t.apply(&config(vec![l0.clone()])).unwrap();
    good(&a, 0, &w, &[3; 512]);
    // An ACL's read-only mapping: B sees the LUN write-protected, A does not.
    let mut per = l0.clone();
    per.access = Some(Access::Only(HashSet::from([INI_A, INI_B])));
    per.read_only_for = HashSet::from([INI_B]);
    let applied = t.apply(&config(vec![per])).unwrap();
    assert!(applied.access_changed);
    assert_eq!(applied.nexuses_notified, 0, "the inventory did not change");
    fails(&b, 0, &w, &[4; 512], SenseKey::DataProtect, 0x27, 0);
    good(&a, 0, &w, &[5; 512]);
    assert_eq!(good(&b, 0, &rw10(0x28, 0, 1, false), &[]), vec![5; 512]);
    // A file opened read-only cannot be made writable live.
    let tf = TempFile::new("live-ro", 1 << 20);
    let mut f = LunConfig::new(0, file(&tf, 512));
    f.backstore.read_only = true;
    let t = target(vec![f.clone()]);
    f.backstore.read_only = false;
    let e = t.apply(&config(vec![f])).unwrap_err();
    assert!(e.to_string().contains("opened read-only"), "{e}");
}

#[test]
fn access_changes_notify_only_affected_nexuses() {
    let l0 = LunConfig::new(0, ram(1 << 20, 512));
    let mut l1 = LunConfig::new(1, ram(1 << 20, 512));
    l1.access = Some(Access::Only(HashSet::from([INI_A])));
    let t = target(vec![l0.clone(), l1.clone()]);
    let (a, b) = (t.nexus(INI_A), t.nexus(INI_B));
    settle(&a, 0);
    settle(&b, 0);
    // Map LUN 1 for B as well: only B's inventory changes.
    l1.access = Some(Access::Only(HashSet::from([INI_A, INI_B])));
    let applied = t.apply(&config(vec![l0, l1])).unwrap();
    assert_eq!(applied.nexuses_notified, 1);
    good(&a, 0, &tur(), &[]);
    fails(&b, 0, &tur(), &[], SenseKey::UnitAttention, 0x3f, 0x0e);
    assert_eq!(reported(&b), vec![0, 1]);
}

#[test]
fn refused_changes_change_nothing() {
    let tf = TempFile::new("live-refuse", 1 << 20);
    let l0 = LunConfig::new(0, ram(1 << 20, 512));
    let t = target(vec![l0.clone()]);
    let a = t.nexus(INI_A);
    settle(&a, 0);
    // The backstore of a served LUN cannot change.
    let other = LunConfig::new(0, file(&tf, 512));
    let e = t.apply(&config(vec![other])).unwrap_err();
    assert!(
        matches!(
            e,
            ChangeError::NotLive {
                lun: 0,
                what: "backstore"
            }
        ),
        "{e}"
    );
    // A new LUN that cannot open: the whole change is refused.
    let missing = LunConfig::new(
        2,
        super::BackstoreConfig::parse("file:/nonexistent/srptd-x", "x").unwrap(),
    );
    let e = t
        .apply(&config(vec![LunConfig::new(1, ram(1 << 20, 512)), missing]))
        .unwrap_err();
    assert!(e.to_string().contains("no such file"), "{e}");
    assert_eq!(t.luns_for(&INI_A), vec![0]);
    good(&a, 0, &tur(), &[]);
    let (c, _) = run(&a, 1, &tur(), &[]);
    assert_eq!(c.sense.unwrap(), Sense::lun_not_supported());
}

#[test]
fn configured_naa_and_full_provisioning() {
    let naa = [
        0x60, 1, 0x40, 0x5a, 0xaa, 0xbb, 0xcc, 0xdd, 0, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77,
    ];
    let mut l0 = LunConfig::new(0, ram(1 << 20, 512));
    l0.naa = Some(naa);
    l0.thin = false;
    let t = target(vec![l0.clone()]);
    let a = t.nexus(INI_A);
    settle(&a, 0);
    assert_eq!(t.luns()[0].naa, naa);
    let d = good(&a, 0, &inquiry(true, 0x83, 255), &[]);
    assert!(
        d.windows(16).any(|w| w == naa),
        "VPD 83h lacks the configured NAA: {d:02x?}"
    );
    // Fully provisioned: READ CAPACITY(16) LBPME = 0, UNMAP not supported.
    let d = good(&a, 0, &read_cap16(32), &[]);
    assert_eq!(d[14] & 0x80, 0);
    fails(
        &a,
        0,
        &[0x42, 0, 0, 0, 0, 0, 0, 0, 24, 0],
        &[0; 24],
        SenseKey::IllegalRequest,
        0x20,
        0,
    );
    // A second LUN with the same designator is refused (multipath would
    // take both for one device).
    let mut l1 = LunConfig::new(1, ram(1 << 20, 512));
    l1.naa = Some(naa);
    let e = t.apply(&config(vec![l0, l1])).unwrap_err();
    assert!(e.to_string().contains("same serial number or NAA"), "{e}");
}

/// Storage that records the order of writes and flushes; a write waits at
/// a gate until the test opens it (a command running on the LUN).
#[derive(Debug)]
struct Recorder {
    ram: super::RamBackstore,
    log: Mutex<Vec<&'static str>>,
    open: Mutex<bool>,
    opened: Condvar,
}

impl Recorder {
    fn new() -> Arc<Recorder> {
        Arc::new(Recorder {
            ram: super::RamBackstore::new(1 << 20, 512, false).unwrap(),
            log: Mutex::new(Vec::new()),
            open: Mutex::new(false),
            opened: Condvar::new(),
        })
    }

    fn log(&self) -> Vec<&'static str> {
        self.log.lock().unwrap().clone()
    }

    fn open_gate(&self) {
        *self.open.lock().unwrap() = true;
        self.opened.notify_all();
    }

    /// Waits (up to 10 s) until the log holds `what`.
    fn wait_for(&self, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.log().contains(&what) {
            assert!(Instant::now() < deadline, "no {what}: {:?}", self.log());
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

impl super::Backstore for Recorder {
    fn block_size(&self) -> u32 {
        self.ram.block_size()
    }
    fn num_blocks(&self) -> u64 {
        self.ram.num_blocks()
    }
    fn read_only(&self) -> bool {
        false
    }
    fn set_read_only(&self, _: bool) -> Result<(), super::ResizeError> {
        Err(super::ResizeError::Refused("test double"))
    }
    fn resize(&self, _: Option<u64>) -> Result<u64, super::ResizeError> {
        Err(super::ResizeError::Refused("test double"))
    }
    fn read(&self, lba: u64, buf: &DmaBuf, off: usize, len: usize) -> std::io::Result<()> {
        self.ram.read(lba, buf, off, len)
    }
    fn write(&self, lba: u64, buf: &DmaBuf, off: usize, len: usize, fua: bool) -> std::io::Result<()> {
        self.log.lock().unwrap().push("write started");
        let mut open = self.open.lock().unwrap();
        while !*open {
            open = self.opened.wait(open).unwrap();
        }
        drop(open);
        self.ram.write(lba, buf, off, len, fua)?;
        self.log.lock().unwrap().push("write done");
        Ok(())
    }
    fn flush(&self) -> std::io::Result<()> {
        self.log.lock().unwrap().push("flush");
        Ok(())
    }
    fn unmap(&self, lba: u64, blocks: u64) -> std::io::Result<()> {
        self.ram.unmap(lba, blocks)
    }
    fn write_same(&self, lba: u64, blocks: u64, pattern: &[u8]) -> std::io::Result<()> {
        self.ram.write_same(lba, blocks, pattern)
    }
    fn dma_buf(&self) -> Option<&Arc<DmaBuf>> {
        None
    }
    fn is_blocking(&self) -> bool {
        true
    }
    fn thin_provisioned(&self) -> bool {
        false
    }
    fn write_cache(&self) -> bool {
        true
    }
    fn identity(&self) -> Option<String> {
        None
    }
}

/// A target with LUN 0 (RAM) and LUN 1 on a [`Recorder`]; nexus A has
/// consumed its creation unit attentions and has a WRITE running on LUN 1,
/// held at the gate. `bound`: how long a removal waits for it.
fn write_running_on_lun1(bound: Duration) -> (Arc<Target>, Arc<Recorder>, JoinHandle<()>) {
    let l0 = LunConfig::new(0, ram(1 << 20, 512));
    let cfg = TargetConfig {
        luns: vec![l0],
        ..TargetConfig::default()
    };
    let t = Target::with_drain_bound(cfg, bound).unwrap();
    let rec = Recorder::new();
    t.insert_store(1, Arc::clone(&rec) as Arc<dyn super::Backstore>);
    let a = t.nexus(INI_A);
    settle(&a, 0);
    settle(&a, 1);
    let w = std::thread::spawn(move || {
        // Acknowledged GOOD: it must be in the flush that follows.
        good(&a, 1, &rw10(0x2a, 4, 1, false), &[0x5a; 512]);
    });
    rec.wait_for("write started");
    (t, rec, w)
}

#[test]
fn removal_flushes_after_the_write_running_on_the_lun() {
    let (t, rec, w) = write_running_on_lun1(Duration::from_secs(60));
    let remover = Arc::clone(&t);
    let l0 = LunConfig::new(0, ram(1 << 20, 512));
    let rm = std::thread::spawn(move || remover.apply(&config(vec![l0])).unwrap());
    // The removal waits for the write; other LUNs do not.
    std::thread::sleep(Duration::from_millis(50));
    assert!(!rm.is_finished());
    assert_eq!(rec.log(), ["write started"]);
    let b = t.nexus(INI_B);
    settle(&b, 0);
    good(&b, 0, &rw10(0x2a, 0, 1, false), &[1; 512]);
    // A command that would start on the LUN now is refused: it is gone.
    let (c, _) = run(&b, 1, &tur(), &[]);
    assert_eq!(c.sense.unwrap(), Sense::lun_not_supported());
    rec.open_gate();
    w.join().unwrap();
    let applied = rm.join().unwrap();
    assert_eq!(applied.removed, vec![1]);
    assert!(applied.flush_pending.is_empty() && applied.flush_failed.is_empty());
    assert_eq!(rec.log(), ["write started", "write done", "flush"]);
}

#[test]
fn past_the_wait_the_last_command_flushes() {
    let (t, rec, w) = write_running_on_lun1(Duration::from_millis(10));
    let applied = t
        .apply(&config(vec![LunConfig::new(0, ram(1 << 20, 512))]))
        .unwrap();
    assert_eq!(applied.removed, vec![1]);
    assert_eq!(applied.flush_pending, vec![1]);
    assert_eq!(rec.log(), ["write started"]);
    rec.open_gate();
    w.join().unwrap();
    rec.wait_for("flush");
    assert_eq!(rec.log(), ["write started", "write done", "flush"]);
}
