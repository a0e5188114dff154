//! ALUA (SPC-4 5.16): target ports and groups, the answers of each
//! asymmetric access state, REPORT TARGET PORT GROUPS, the VPD 83h port
//! designators, and ASYMMETRIC ACCESS STATE CHANGED.

use std::sync::Arc;

use super::alua::{check_groups, AccessState, Alua, GroupField, PortGroupConfig, TargetPort};
use super::lun::{LunConfig, Nexus, Target, TargetConfig};
use super::sense::{Sense, SenseKey};
use super::tests::{fails, good, inquiry, ram, run, rw10, tur, INI_A, INI_B};
use super::ScsiStatus;

fn rtpg(extended: bool, alloc: u32) -> [u8; 12] {
    let a = alloc.to_be_bytes();
    [
        0xa3,
        0x0a | u8::from(extended) << 5,
        0,
        0,
        0,
        0,
        a[0],
        a[1],
        a[2],
        a[3],
        0,
        0,
    ]
}

/// A target with LUN 0 (RAM) and LUN 1, and two ports seen in order:
/// rxe0/1 (relative port 1, group 1) and rxe1/1 (2, group 2).
fn two_ports(groups: Vec<PortGroupConfig>) -> (Arc<Target>, Arc<TargetPort>, Arc<TargetPort>) {
    let t = Target::new(TargetConfig {
        luns: vec![
            LunConfig::new(0, ram(1 << 20, 512)),
            LunConfig::new(1, ram(1 << 20, 512)),
        ],
        port_groups: groups,
        ..TargetConfig::default()
    })
    .unwrap();
    let p0 = t.alua().port("rxe0/1").unwrap();
    let p1 = t.alua().port("rxe1/1").unwrap();
    (t, p0, p1)
}

/// A nexus with its creation unit attentions consumed.
fn nexus(t: &Arc<Target>, ini: [u8; 16], p: &Arc<TargetPort>) -> Arc<Nexus> {
    let n = t.nexus_on(ini, Arc::clone(p));
    for lun in [0, 1] {
        let (c, _) = run(&n, lun, &inquiry(false, 0, 96), &[]);
        assert_eq!(c.status, ScsiStatus::GOOD);
        let (c, _) = run(&n, lun, &[0x03, 0, 0, 0, 18, 0], &[]);
        assert_eq!(c.status, ScsiStatus::GOOD);
    }
    n
}

#[test]
fn ports_get_stable_identifiers_and_a_group_each() {
    let (t, p0, p1) = two_ports(Vec::new());
    assert_eq!((p0.relative_id(), p0.group_id()), (1, 1));
    assert_eq!((p1.relative_id(), p1.group_id()), (2, 2));
    assert!(Arc::ptr_eq(&p0, &t.alua().port("rxe0/1").unwrap()));
    // The nexus of tools and tests is relative port 1.
    assert_eq!(t.nexus(INI_A).port().relative_id(), 1);
    let g = t.alua().groups();
    assert_eq!(g.len(), 2);
    assert_eq!(
        (g[1].id, g[1].state, g[1].ports[0].name.as_str()),
        (2, "active/optimized", "rxe1/1")
    );
}

#[test]
fn configured_groups_come_first_and_others_get_free_identifiers() {
    let cfg = vec![
        PortGroupConfig {
            id: 1,
            ports: vec!["mlx5_0/1".into()],
            state: AccessState::ActiveOptimized,
        },
        PortGroupConfig {
            id: 2,
            ports: vec!["rxe1/1".into(), "mlx5_0/2".into()],
            state: AccessState::Standby,
        },
    ];
    let (t, p0, p1) = two_ports(cfg);
    // Configured ports are numbered in the order listed.
    let a = t.alua().port("mlx5_0/2").unwrap();
    assert_eq!((a.relative_id(), a.group_id()), (3, 2));
    assert_eq!(
        (p1.relative_id(), p1.group_id(), p1.state()),
        (2, 2, AccessState::Standby)
    );
    // An unconfigured port: the next relative port, the smallest free group.
    assert_eq!((p0.relative_id(), p0.group_id()), (4, 3));
    assert_eq!(t.nexus(INI_A).port().name(), "mlx5_0/1");
}

#[test]
fn configured_groups_are_checked() {
    let g = |id, ports: &[&str]| PortGroupConfig {
        id,
        ports: ports.iter().map(|p| p.to_string()).collect(),
        state: AccessState::ActiveOptimized,
    };
    let e = |cfg: &[PortGroupConfig]| check_groups(cfg).unwrap_err();
    assert_eq!(e(&[g(0, &["rxe0/1"])]).field, GroupField::Id);
    let d = e(&[g(1, &["rxe0/1"]), g(1, &["rxe1/1"])]);
    assert_eq!((d.group, d.field), (1, GroupField::Id));
    assert_eq!(e(&[g(1, &[])]).field, GroupField::Ports);
    for bad in ["rxe0", "rxe0/0", "rxe0/256", "/1", "rx e0/1", "rxe0/01", "a/b/1"] {
        assert_eq!(e(&[g(1, &[bad])]).field, GroupField::Port(0), "{bad}");
    }
    let d = e(&[g(1, &["rxe0/1"]), g(2, &["rxe1/1", "rxe0/1"])]);
    assert_eq!((d.group, d.field), (1, GroupField::Port(1)));
    assert_eq!(e(&[g(1, &["rxe0/1", "rxe0/1"])]).field, GroupField::Port(1));
    assert!(check_groups(&[g(7, &["rxe0/1", "rxe0/2"]), g(3, &["mlx5_1/1"])]).is_ok());
    // Target::new names the field.
    let err = Alua::new(&[g(1, &["rxe0"])]).unwrap_err().to_string();
    assert!(err.contains("port_groups[0].ports[0]"), "{err}");
}

#[test]
fn inquiry_reports_implicit_alua() {
    let (t, p0, _) = two_ports(Vec::new());
    let n = nexus(&t, INI_A, &p0);
    let d = good(&n, 0, &inquiry(false, 0, 96), &[]);
    assert_eq!(d[5] >> 4 & 3, 0b01, "TPGS = 01b");
}

#[test]
fn device_identification_names_the_port_and_group() {
    let (t, p0, p1) = two_ports(Vec::new());
    for (p, id) in [(&p0, 1u8), (&p1, 2)] {
        let n = nexus(&t, INI_A, p);
        let d = good(&n, 0, &inquiry(true, 0x83, 255), &[]);
        assert_eq!(usize::from(u16::from_be_bytes([d[2], d[3]])) + 4, d.len());
        let tail = &d[d.len() - 16..];
        // Relative target port (type 4h) and target port group (type 5h):
        // SRP (4h), binary, PIV = 1, association 01b.
        assert_eq!(
            tail,
            &[0x41, 0x94, 0, 4, 0, 0, 0, id, 0x41, 0x95, 0, 4, 0, 0, 0, id]
        );
    }
}

#[test]
fn report_target_port_groups_layout() {
    let (t, p0, p1) = two_ports(Vec::new());
    let n = nexus(&t, INI_A, &p0);
    t.set_alua_state(2, AccessState::Standby).unwrap();
    let n2 = nexus(&t, INI_A, &p1);
    let _ = n2;
    let (c, _) = run(&n, 0, &tur(), &[]);
    assert_eq!(c.sense.unwrap(), Sense::asymmetric_access_state_changed());
    let d = good(&n, 0, &rtpg(false, 1024), &[]);
    #[rustfmt::skip]
    let want = [
        0, 0, 0, 24,
        // Group 1: active/optimized; T_SUP U_SUP S_SUP AN_SUP AO_SUP.
        0x00, 0x8f, 0, 1, 0, 0x00, 0, 1,  0, 0, 0, 1,
        // Group 2: standby, changed implicitly (status 02h).
        0x02, 0x8f, 0, 2, 0, 0x02, 0, 1,  0, 0, 0, 2,
    ];
    assert_eq!(d, want);
    let e = good(&n, 0, &rtpg(true, 1024), &[]);
    assert_eq!(&e[..8], &[0, 0, 0, 28, 0x10, 0, 0, 0], "extended header");
    assert_eq!(&e[8..], &want[4..]);
    // Allocation length truncates; reserved formats are refused.
    assert_eq!(good(&n, 0, &rtpg(false, 6), &[]), &want[..6]);
    let mut bad = rtpg(false, 64);
    bad[1] = 0x4a;
    fails(&n, 0, &bad, &[], SenseKey::IllegalRequest, 0x24, 0);
    // Through the standby port too (allowed in every state).
    assert_eq!(good(&n2, 1, &rtpg(false, 1024), &[]), want);
}

fn read10() -> [u8; 10] {
    rw10(0x28, 0, 1, false)
}

fn write10() -> [u8; 10] {
    rw10(0x2a, 0, 1, false)
}

#[test]
fn active_states_serve_everything() {
    let (t, p0, _) = two_ports(Vec::new());
    let n = nexus(&t, INI_A, &p0);
    for s in [AccessState::ActiveOptimized, AccessState::ActiveNonOptimized] {
        t.set_alua_state(1, s).unwrap();
        let _ = run(&n, 0, &tur(), &[]); // the unit attention of the change
        let _ = run(&n, 1, &tur(), &[]);
        good(&n, 0, &tur(), &[]);
        good(&n, 0, &write10(), &[0x5a; 512]);
        assert_eq!(good(&n, 0, &read10(), &[]), vec![0x5a; 512]);
        good(&n, 0, &[0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0], &[]);
    }
}

/// Commands the non-active states look at, and whether each state serves
/// them: (cdb, standby, unavailable, transitioning).
fn probes() -> Vec<(Vec<u8>, bool, bool, bool)> {
    vec![
        (inquiry(false, 0, 96).to_vec(), true, true, true),
        (inquiry(true, 0x83, 255).to_vec(), true, true, true),
        (
            [0xa0, 0, 0, 0, 0, 0, 0, 0, 0, 64, 0, 0].to_vec(),
            true,
            true,
            true,
        ),
        ([0x03, 0, 0, 0, 18, 0].to_vec(), true, true, true),
        (rtpg(true, 256).to_vec(), true, true, true),
        (
            [0xa3, 0x0c, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0].to_vec(),
            true,
            true,
            true,
        ),
        ([0x1a, 0, 0x3f, 0, 255, 0].to_vec(), true, false, false),
        ([0x5e, 0, 0, 0, 0, 0, 0, 0, 64, 0].to_vec(), true, false, false),
        (tur().to_vec(), false, false, false),
        ([0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0].to_vec(), false, false, false),
        (read10().to_vec(), false, false, false),
        (write10().to_vec(), false, false, false),
        ([0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0].to_vec(), false, false, false),
    ]
}

#[test]
fn each_state_answers_as_spc4_says() {
    let (t, p0, p1) = two_ports(Vec::new());
    let n = nexus(&t, INI_A, &p0);
    let other = nexus(&t, INI_A, &p1);
    for (state, ascq) in [
        (AccessState::Standby, 0x0b),
        (AccessState::Unavailable, 0x0c),
        (AccessState::Transitioning, 0x0a),
    ] {
        let c = t.set_alua_state(1, state).unwrap();
        assert!(c.changed);
        assert_eq!(c.nexuses_notified, 2, "every nexus, through every port");
        for lun in [0, 1] {
            let s = fails(&n, lun, &tur(), &[], SenseKey::UnitAttention, 0x2a, 0x06);
            assert_eq!(s, Sense::asymmetric_access_state_changed());
            fails(&other, lun, &tur(), &[], SenseKey::UnitAttention, 0x2a, 0x06);
        }
        for (cdb, sb, un, tr) in probes() {
            let served = match state {
                AccessState::Standby => sb,
                AccessState::Unavailable => un,
                _ => tr,
            };
            let out = if cdb[0] == 0x2a {
                vec![0u8; 512]
            } else {
                Vec::new()
            };
            if served {
                good(&n, 0, &cdb, &out);
            } else {
                fails(&n, 0, &cdb, &out, SenseKey::NotReady, 0x04, ascq);
            }
            // The other port's group is still active/optimized.
            let (c, _) = run(&other, 0, &cdb, &out);
            assert_eq!(c.status, ScsiStatus::GOOD, "{cdb:02x?} {:?}", c.sense);
        }
    }
    // Back to active: everything again.
    t.set_alua_state(1, AccessState::ActiveOptimized).unwrap();
    fails(&n, 0, &tur(), &[], SenseKey::UnitAttention, 0x2a, 0x06);
    good(&n, 0, &tur(), &[]);
    good(&n, 0, &read10(), &[]);
}

#[test]
fn a_change_between_plan_and_run_is_seen() {
    let (t, p0, _) = two_ports(Vec::new());
    let n = nexus(&t, INI_A, &p0);
    let (cmd, _) = n.plan_command(super::lun::encode_lun(0), &tur()).unwrap();
    t.set_alua_state(1, AccessState::Unavailable).unwrap();
    let buf = crate::mem::DmaBuf::new(4096).unwrap();
    let c = n.run(&cmd, &buf, 0, 0);
    assert_eq!(c.status, ScsiStatus::CHECK_CONDITION);
    assert_eq!(c.sense.unwrap(), Sense::port_unavailable());
}

#[test]
fn no_change_no_unit_attention_and_unknown_groups() {
    let (t, p0, _) = two_ports(Vec::new());
    let n = nexus(&t, INI_A, &p0);
    let c = t.set_alua_state(1, AccessState::ActiveOptimized).unwrap();
    assert!(!c.changed);
    assert_eq!(c.nexuses_notified, 0);
    good(&n, 0, &tur(), &[]);
    assert!(t.set_alua_state(9, AccessState::Standby).is_err());
    assert_eq!(AccessState::parse("standby"), Some(AccessState::Standby));
    assert_eq!(AccessState::parse("Standby"), None);
    for s in AccessState::ALL {
        assert_eq!(AccessState::parse(s.name()), Some(s));
    }
}

#[test]
fn one_initiator_through_two_ports_is_two_nexuses() {
    let (t, p0, p1) = two_ports(Vec::new());
    let a0 = nexus(&t, INI_A, &p0);
    let a1 = t.nexus_on(INI_A, Arc::clone(&p1));
    assert!(!Arc::ptr_eq(&a0, &a1));
    assert!(Arc::ptr_eq(&a1, &t.nexus_on(INI_A, Arc::clone(&p1))));
    // The new I_T nexus has its own reset unit attention; the first has none.
    fails(&a1, 0, &tur(), &[], SenseKey::UnitAttention, 0x29, 0);
    good(&a0, 0, &tur(), &[]);
    // An SPC-2 reservation is of one I_T nexus (SPC-2 5.5.1): through
    // port 1 it conflicts with the same initiator port through port 2, and
    // only the loss of its own nexus ends it.
    let b = nexus(&t, INI_B, &p0);
    good(&a0, 0, &[0x16, 0, 0, 0, 0, 0], &[]);
    for n in [&b, &a1] {
        let (c, _) = run(n, 0, &read10(), &[]);
        assert_eq!(c.status, ScsiStatus::RESERVATION_CONFLICT);
    }
    drop(a1);
    let (c, _) = run(&b, 0, &read10(), &[]);
    assert_eq!(c.status, ScsiStatus::RESERVATION_CONFLICT);
    drop(a0);
    good(&b, 0, &read10(), &[]);
}

/// PERSISTENT RESERVE OUT with service action `sa`, type `rtype` and the
/// basic parameter list.
fn pr_out(n: &Nexus, sa: u8, rtype: u8, key: u64, sa_key: u64, flags: u8) -> ScsiStatus {
    let mut p = [0u8; 24];
    p[..8].copy_from_slice(&key.to_be_bytes());
    p[8..16].copy_from_slice(&sa_key.to_be_bytes());
    p[20] = flags;
    let (c, _) = run(n, 0, &[0x5f, sa, rtype, 0, 0, 0, 0, 0, 24, 0], &p);
    c.status
}

/// Registrations are per I_T nexus (SPC-4 5.13.7): with ALL_TG_PT = 0 a
/// registration through port 1 does not register the same initiator port
/// through port 2; with ALL_TG_PT = 1 it does, through both.
#[test]
fn registrations_are_per_i_t_nexus_unless_all_tg_pt() {
    const WRITE_EXCLUSIVE_REGISTRANTS_ONLY: u8 = 5;
    let (t, p0, p1) = two_ports(Vec::new());
    let a0 = nexus(&t, INI_A, &p0);
    let a1 = nexus(&t, INI_A, &p1);
    let b = nexus(&t, INI_B, &p0);
    // A through port 1 registers (ALL_TG_PT = 0) and reserves WE-RO.
    assert_eq!(pr_out(&a0, 0, 0, 0, 0xa0, 0), ScsiStatus::GOOD);
    assert_eq!(
        pr_out(&a0, 1, WRITE_EXCLUSIVE_REGISTRANTS_ONLY, 0xa0, 0, 0),
        ScsiStatus::GOOD
    );
    good(&a0, 0, &write10(), &[0x5a; 512]);
    // A through port 2 is another, unregistered I_T nexus: its write
    // conflicts, its reads do not (Write Exclusive).
    let (c, _) = run(&a1, 0, &write10(), &[0x5a; 512]);
    assert_eq!(c.status, ScsiStatus::RESERVATION_CONFLICT);
    good(&a1, 0, &read10(), &[]);
    // It registers on its own (RESERVATION KEY zero: it was not
    // registered) and may write; READ KEYS lists both registrations.
    assert_eq!(pr_out(&a1, 0, 0, 0, 0xa1, 0), ScsiStatus::GOOD);
    good(&a1, 0, &write10(), &[0x5a; 512]);
    let keys = good(&a1, 0, &[0x5e, 0, 0, 0, 0, 0, 0, 0x10, 0, 0], &[]);
    assert_eq!(&keys[4..8], &16u32.to_be_bytes());
    // B registers through both ports at once (ALL_TG_PT = 1).
    let b1 = nexus(&t, INI_B, &p1);
    assert_eq!(pr_out(&b, 0, 0, 0, 0xb0, 0x04), ScsiStatus::GOOD);
    good(&b, 0, &write10(), &[0x5a; 512]);
    good(&b1, 0, &write10(), &[0x5a; 512]);
    // Unregistering through one nexus ends the ALL_TG_PT registration.
    assert_eq!(pr_out(&b1, 0, 0, 0xb0, 0, 0), ScsiStatus::GOOD);
    let (c, _) = run(&b, 0, &write10(), &[0x5a; 512]);
    assert_eq!(c.status, ScsiStatus::RESERVATION_CONFLICT);
    // ALL_TG_PT = 1 for an initiator port registered through one port
    // already: INVALID FIELD IN PARAMETER LIST, nothing changes.
    const INI_C: [u8; 16] = [0xc; 16];
    let a2 = nexus(&t, INI_C, &p0);
    assert_eq!(pr_out(&a2, 0, 0, 0, 0xc0, 0), ScsiStatus::GOOD);
    let c2 = nexus(&t, INI_C, &p1);
    let (c, _) = run(&c2, 0, &[0x5f, 0, 0, 0, 0, 0, 0, 0, 24, 0], &{
        let mut p = [0u8; 24];
        p[8..16].copy_from_slice(&0xc1u64.to_be_bytes());
        p[20] = 0x04;
        p
    });
    assert_eq!(c.status, ScsiStatus::CHECK_CONDITION);
    let s = c.sense.unwrap();
    assert_eq!((s.key, s.asc, s.ascq), (SenseKey::IllegalRequest, 0x26, 0));
    let (c, _) = run(&c2, 0, &write10(), &[0x5a; 512]);
    assert_eq!(c.status, ScsiStatus::RESERVATION_CONFLICT);
}
