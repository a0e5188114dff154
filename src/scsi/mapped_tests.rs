//! Mapped LUNs: an ACL presents a LUN of the table to one initiator under
//! another number. Every path that takes a LUN from the initiator (commands,
//! REPORT LUNS, unit attentions, resets and task set aborts, reservations,
//! EXTENDED COPY) reaches the table's LUN.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use super::lun::{decode_lun, encode_lun, Access, LunConfig, Nexus, Target, TargetConfig};
use super::sense::{Sense, SenseKey};
use super::task_set::AbortScope;
use super::tests::{fails, good, inquiry, pattern, ram, report_luns, run, rw10, target, tur, INI_A, INI_B};
use super::xcopy::{CopyList, Cscd, ListIdUsage, Segment};
use super::ScsiStatus;

/// LUN 0 for A only; LUN 3 for A (as 3) and B (as 0).
fn luns(b_sees_3_as: Option<u16>) -> Vec<LunConfig> {
    let mut l0 = LunConfig::new(0, ram(1 << 20, 512));
    l0.access = Some(Access::Only(HashSet::from([INI_A])));
    let mut l3 = LunConfig::new(3, ram(1 << 20, 512));
    l3.access = Some(Access::Only(HashSet::from([INI_A, INI_B])));
    l3.mapped_as = b_sees_3_as
        .map(|n| BTreeMap::from([(INI_B, n)]))
        .unwrap_or_default();
    vec![l0, l3]
}

fn config(luns: Vec<LunConfig>) -> TargetConfig {
    TargetConfig {
        luns,
        ..TargetConfig::default()
    }
}

/// The target, and nexuses A and B with their creation unit attentions
/// consumed.
fn setup() -> (Arc<Target>, Arc<Nexus>, Arc<Nexus>) {
    let t = target(luns(Some(0)));
    let (a, b) = (t.nexus(INI_A), t.nexus(INI_B));
    for (n, l) in [(&a, 0), (&a, 3), (&b, 0)] {
        fails(n, l, &tur(), &[], SenseKey::UnitAttention, 0x29, 0);
    }
    (t, a, b)
}

fn reported(n: &Nexus) -> Vec<u16> {
    let d = good(n, 0, &report_luns(0, 1024), &[]);
    d[8..]
        .chunks(8)
        .map(|c| decode_lun(c.try_into().unwrap()).unwrap())
        .collect()
}

#[test]
fn an_acl_presents_a_lun_under_another_number() {
    let (t, a, b) = setup();
    // SPC-4 6.33: REPORT LUNS lists the numbers the initiator uses.
    assert_eq!(reported(&b), vec![0]);
    assert_eq!(reported(&a), vec![0, 3]);
    assert_eq!(t.lun_map(&INI_B), vec![(0, 3)]);
    assert_eq!(t.luns_for(&INI_B), vec![3]);
    // B's LUN 0 is the table's LUN 3.
    let data = pattern(512, 9);
    good(&b, 0, &rw10(0x2a, 5, 1, false), &data);
    assert_eq!(good(&a, 3, &rw10(0x28, 5, 1, false), &[]), data);
    assert_eq!(good(&a, 0, &rw10(0x28, 5, 1, false), &[]), vec![0; 512]);
    // The same logical unit: the same device identification.
    assert_eq!(
        good(&b, 0, &inquiry(true, 0x83, 255), &[]),
        good(&a, 3, &inquiry(true, 0x83, 255), &[])
    );
    // Under its own number, LUN 3 is not there for B.
    let (c, _) = run(&b, 3, &tur(), &[]);
    assert_eq!(c.sense.unwrap(), Sense::lun_not_supported());
    // What the transport keeps of a command: the table's number.
    let (cmd, _) = b.plan_command(encode_lun(0), &tur()).unwrap();
    assert_eq!(cmd.unit(), Some(3));
    assert_eq!(b.unit(encode_lun(0)), Some(3));
    assert_eq!(b.unit(encode_lun(3)), None);
    assert_eq!(a.unit(encode_lun(3)), Some(3));
}

#[test]
fn resets_aborts_and_reservations_reach_the_mapped_lun() {
    let (t, a, b) = setup();
    // LOGICAL UNIT RESET by B on its LUN 0 resets the table's LUN 3: every
    // nexus that sees it gets 29h/03h there (SAM-5 7.7), A on its LUN 3.
    assert!(b.lun_reset(encode_lun(0)));
    good(&a, 0, &tur(), &[]);
    fails(&a, 3, &tur(), &[], SenseKey::UnitAttention, 0x29, 0x03);
    fails(&b, 0, &tur(), &[], SenseKey::UnitAttention, 0x29, 0x03);
    // A task set abort of the table's LUN 3 covers B's commands on its 0,
    // not A's on LUN 0.
    let read = rw10(0x28, 0, 1, false);
    let (on_b0, _) = b.plan_command(encode_lun(0), &read).unwrap();
    let (on_a0, _) = a.plan_command(encode_lun(0), &read).unwrap();
    t.task_sets().publish(AbortScope::Lun(3), None);
    assert!(b.is_aborted(&on_b0));
    assert!(!a.is_aborted(&on_a0));
    // An SPC-2 RESERVE by B through its LUN 0 reserves the table's LUN 3.
    good(&b, 0, &[0x16, 0, 0, 0, 0, 0], &[]);
    let (c, _) = run(&a, 3, &rw10(0x2a, 0, 1, false), &[1; 512]);
    assert_eq!(c.status, ScsiStatus::RESERVATION_CONFLICT);
    good(&a, 0, &rw10(0x2a, 0, 1, false), &[1; 512]);
}

#[test]
fn changing_a_mapping_tells_that_initiator_its_luns_changed() {
    let (t, a, b) = setup();
    let applied = t.apply(&config(luns(Some(5)))).unwrap();
    assert!(applied.access_changed);
    assert_eq!(applied.nexuses_notified, 1, "only B's inventory changed");
    good(&a, 0, &tur(), &[]);
    good(&a, 3, &tur(), &[]);
    // SPC-4 / SAM-5 5.14: REPORTED LUNS DATA HAS CHANGED, on its new number.
    fails(&b, 5, &tur(), &[], SenseKey::UnitAttention, 0x3f, 0x0e);
    assert_eq!(reported(&b), vec![5]);
    let (c, _) = run(&b, 0, &tur(), &[]);
    assert_eq!(c.sense.unwrap(), Sense::lun_not_supported());
    // Without the mapping B sees LUN 3 as 3.
    let applied = t.apply(&config(luns(None))).unwrap();
    assert_eq!(applied.nexuses_notified, 1);
    fails(&b, 3, &tur(), &[], SenseKey::UnitAttention, 0x3f, 0x0e);
    assert_eq!(reported(&b), vec![3]);
}

#[test]
fn extended_copy_finds_the_luns_the_initiator_sees_whatever_their_numbers() {
    let (t, a, b) = setup();
    let naa = |lun: u16| t.luns().into_iter().find(|l| l.lun == lun).unwrap().naa;
    let copy = |dst: u16| {
        CopyList {
            list_id: 0,
            usage: ListIdUsage::NoList,
            cscds: vec![Cscd::naa(naa(3), 512), Cscd::naa(naa(dst), 512)],
            segments: vec![Segment::blocks(0, 1, 1, 5, 7)],
        }
        .emit()
    };
    let xcopy = |list: &[u8]| {
        let mut c = [0u8; 16];
        c[0] = 0x83;
        c[10..14].copy_from_slice(&(list.len() as u32).to_be_bytes());
        c
    };
    let data = pattern(512, 4);
    good(&b, 0, &rw10(0x2a, 5, 1, false), &data);
    // Within the table's LUN 3, which B knows as 0 (CSCDs name LUNs by
    // designator, SPC-4 6.4.5).
    let l = copy(3);
    good(&b, 0, &xcopy(&l), &l);
    assert_eq!(good(&a, 3, &rw10(0x28, 7, 1, false), &[]), data);
    // The table's LUN 0 is not B's to copy into.
    let l = copy(0);
    let (c, _) = run(&b, 0, &xcopy(&l), &l);
    assert_eq!(c.status, ScsiStatus::CHECK_CONDITION);
    assert_eq!(good(&a, 0, &rw10(0x28, 7, 1, false), &[]), vec![0; 512]);
}
