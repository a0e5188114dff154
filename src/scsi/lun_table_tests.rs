//! Unit attentions and the LUN table: what each initiator sees (access
//! lists, unmapped LUNs, REPORT LUNS) and when it is told of a reset.

use std::collections::HashSet;
use std::sync::Arc;

use super::lun::{encode_lun, Access, LunConfig, TargetConfig};
use super::sense::{Sense, SenseKey};
use super::tests::*;
use super::Target;

// ---------------------------------------------------------------- unit attention

#[test]
fn unit_attention_after_creation_once_per_nexus() {
    let t = target(vec![
        LunConfig::new(0, ram(1 << 20, 512)),
        LunConfig::new(1, ram(1 << 20, 512)),
    ]);
    let a = t.nexus(INI_A);
    assert!(
        Arc::ptr_eq(&a, &t.nexus(INI_A)),
        "channels of one initiator share the nexus"
    );
    let b = t.nexus(INI_B);
    // INQUIRY and REPORT LUNS neither report nor clear it (SAM-5 5.14).
    good(&a, 0, &inquiry(false, 0, 96), &[]);
    good(&a, 0, &report_luns(0, 256), &[]);
    for n in [&a, &b] {
        for lun in [0, 1] {
            fails(n, lun, &tur(), &[], SenseKey::UnitAttention, 0x29, 0x00);
            good(n, lun, &tur(), &[]);
        }
    }
    // REQUEST SENSE reports and clears it.
    let c = t.nexus([0xc; 16]);
    let d = good(&c, 0, &[0x03, 0, 0, 0, 18, 0], &[]);
    assert_eq!(Sense::parse_fixed(&d).unwrap(), Sense::power_on_reset());
    good(&c, 0, &tur(), &[]);
    let d = good(&c, 0, &[0x03, 0, 0, 0, 252, 0], &[]);
    assert_eq!(d.len(), 18);
    assert_eq!(Sense::parse_fixed(&d).unwrap(), Sense::no_sense());
    // A new nexus after the last reference is dropped starts over.
    drop(b);
    let b = t.nexus(INI_B);
    fails(&b, 0, &tur(), &[], SenseKey::UnitAttention, 0x29, 0x00);
}

#[test]
fn lun_reset_sets_unit_attention_for_every_nexus() {
    let t = target(vec![
        LunConfig::new(0, ram(1 << 20, 512)),
        LunConfig::new(1, ram(1 << 20, 512)),
    ]);
    let a = t.nexus(INI_A);
    let b = t.nexus(INI_B);
    for n in [&a, &b] {
        for lun in [0, 1] {
            run(n, lun, &tur(), &[]);
        }
    }
    assert!(a.lun_reset(encode_lun(1)));
    assert!(!a.lun_reset(encode_lun(7)), "unmapped LUN");
    for n in [&a, &b] {
        good(n, 0, &tur(), &[]);
        fails(n, 1, &tur(), &[], SenseKey::UnitAttention, 0x29, 0x03);
        good(n, 1, &tur(), &[]);
    }
    // A reset UA supersedes a pending one: reported once.
    let c = t.nexus([0xc; 16]);
    assert!(c.lun_reset(encode_lun(0)));
    fails(&c, 0, &tur(), &[], SenseKey::UnitAttention, 0x29, 0x03);
    good(&c, 0, &tur(), &[]);
}

// ---------------------------------------------------------------- LUN table

#[test]
fn report_luns_respects_access_lists() {
    let mut only_a = LunConfig::new(1, ram(1 << 20, 512));
    only_a.access = Some(Access::Only(HashSet::from([INI_A])));
    let t = target(vec![
        LunConfig::new(0, ram(1 << 20, 512)),
        only_a,
        LunConfig::new(300, ram(1 << 20, 512)),
    ]);
    let a = t.nexus(INI_A);
    let b = t.nexus(INI_B);
    let d = good(&a, 0, &report_luns(0, 1024), &[]);
    assert_eq!(&d[..4], &24u32.to_be_bytes());
    assert_eq!(&d[8..16], &[0, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(&d[16..24], &[0, 1, 0, 0, 0, 0, 0, 0]);
    assert_eq!(
        &d[24..32],
        &[0x41, 0x2c, 0, 0, 0, 0, 0, 0],
        "flat space for LUN 300"
    );
    let d = good(&b, 0, &report_luns(2, 1024), &[]);
    assert_eq!(&d[..4], &16u32.to_be_bytes());
    assert_eq!(&d[16..24], &encode_lun(300));
    // LUN 1 does not exist for B.
    fails(&b, 1, &tur(), &[], SenseKey::IllegalRequest, 0x25, 0);
    run(&a, 1, &tur(), &[]);
    good(&a, 1, &tur(), &[]);
    // Well-known LUs only: none.
    let d = good(&a, 0, &report_luns(1, 16), &[]);
    assert_eq!(d, vec![0; 8]);
    // Truncated to the allocation length, LUN LIST LENGTH still complete.
    let d = good(&a, 0, &report_luns(0, 16), &[]);
    assert_eq!(d.len(), 16);
    assert_eq!(&d[..4], &24u32.to_be_bytes());
    illegal(&a, &report_luns(3, 64), &[], 0x24);
    illegal(&a, &report_luns(0, 15), &[], 0x24);
    assert_eq!(t.luns().len(), 3);
    assert_eq!(t.luns_for(&INI_B), vec![0, 300]);
    assert!(t.luns()[0].dma_buf.is_some());
}

#[test]
fn target_access_list_and_config_errors() {
    let cfg = TargetConfig {
        access: Access::Only(HashSet::from([INI_A])),
        luns: vec![LunConfig::new(0, ram(1 << 20, 512))],
        ..TargetConfig::default()
    };
    let t = Target::new(cfg).unwrap();
    assert!(t.login_allowed(&INI_A, None));
    assert!(!t.login_allowed(&INI_B, None));
    assert!(t.luns_for(&INI_B).is_empty());
    // An initiator with no LUNs still finds LUN 0 in REPORT LUNS.
    let b = t.nexus(INI_B);
    let d = good(&b, 0, &report_luns(0, 64), &[]);
    assert_eq!(&d[..4], &8u32.to_be_bytes());

    let dup = TargetConfig {
        luns: vec![
            LunConfig::new(3, ram(4096, 512)),
            LunConfig::new(3, ram(4096, 512)),
        ],
        ..TargetConfig::default()
    };
    let e = Target::new(dup).unwrap_err();
    assert!(e.to_string().contains("luns[1].lun"), "{e}");
    let big = TargetConfig {
        luns: vec![LunConfig::new(16384, ram(4096, 512))],
        ..TargetConfig::default()
    };
    assert!(Target::new(big).is_err());
    let zero = TargetConfig {
        luns: vec![LunConfig::new(0, ram(0, 512))],
        ..TargetConfig::default()
    };
    let e = Target::new(zero).unwrap_err();
    assert!(e.to_string().starts_with("luns[0].backstore.size"), "{e}");
    let bad_xfer = TargetConfig {
        max_transfer_bytes: 1000,
        ..TargetConfig::default()
    };
    assert!(Target::new(bad_xfer)
        .unwrap_err()
        .to_string()
        .contains("max_transfer_bytes"));
    let mut bad_serial = LunConfig::new(0, ram(4096, 512));
    bad_serial.serial = Some("has space".into());
    let e = Target::new(TargetConfig {
        luns: vec![bad_serial],
        ..TargetConfig::default()
    })
    .unwrap_err();
    assert!(e.to_string().contains("luns[0].serial"), "{e}");
}

#[test]
fn unmapped_lun() {
    let t = target(vec![LunConfig::new(0, ram(1 << 20, 512))]);
    let n = t.nexus(INI_A);
    let d = good(&n, 5, &inquiry(false, 0, 96), &[]);
    assert_eq!(d[0], 0x7f);
    let d = good(&n, 5, &inquiry(true, 0, 96), &[]);
    assert_eq!(d[0], 0x7f);
    fails(
        &n,
        5,
        &inquiry(true, 0x80, 96),
        &[],
        SenseKey::IllegalRequest,
        0x24,
        0,
    );
    fails(&n, 5, &tur(), &[], SenseKey::IllegalRequest, 0x25, 0);
    fails(
        &n,
        5,
        &rw10(0x28, 0, 1, false),
        &[],
        SenseKey::IllegalRequest,
        0x25,
        0,
    );
    // REQUEST SENSE to a bad LUN: GOOD, with LOGICAL UNIT NOT SUPPORTED data.
    let d = good(&n, 5, &[0x03, 0, 0, 0, 18, 0], &[]);
    let s = Sense::parse_fixed(&d).unwrap();
    assert_eq!((s.key, s.asc), (SenseKey::IllegalRequest, 0x25));
    // Malformed LUN addresses are unmapped too.
    assert!(n.plan([0x80, 0, 0, 0, 0, 0, 0, 0], &tur()).is_err());
    assert!(n.plan([0, 0, 0, 1, 0, 0, 0, 0], &tur()).is_err());
    assert!(!n.is_blocking(encode_lun(5), &rw10(0x28, 0, 1, false)));
}
