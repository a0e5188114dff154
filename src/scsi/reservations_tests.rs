//! Unit tests of the reservation state machine: parameter list parsing,
//! every PERSISTENT RESERVE OUT service action, and the SPC-4 conflict
//! table as a table over every command class and reservation type.

use super::*;

/// Three initiator ports, each through relative target port 1.
const A: NexusId = through(0xa, 1);
const B: NexusId = through(0xb, 1);
const C: NexusId = through(0xc, 1);
/// Their registrations (ALL_TG_PT = 0).
const RA: RegistrantId = reg(A);
const RB: RegistrantId = reg(B);
const RC: RegistrantId = reg(C);

const fn through(i: u8, port: u16) -> NexusId {
    NexusId {
        initiator: [i; 16],
        port,
    }
}

const fn reg(n: NexusId) -> RegistrantId {
    RegistrantId {
        initiator: n.initiator,
        port: Some(n.port),
    }
}

/// Relative target ports 1 and 2 exist.
fn ports_1_2(p: u16) -> bool {
    matches!(p, 1 | 2)
}
const CAPS: Capabilities = Capabilities { ptpl: true };
const NO_PTPL: Capabilities = Capabilities { ptpl: false };

fn any(_: &InitiatorPortId) -> bool {
    true
}

fn cdb(action: u8, rtype: u8, len: u32) -> PrOutCdb {
    let mut b = [0u8; 10];
    b[0] = 0x5f;
    b[1] = action;
    b[2] = rtype;
    b[5..9].copy_from_slice(&len.to_be_bytes());
    PrOutCdb::parse(&b).unwrap()
}

fn params(key: u64, sa_key: u64, flags: u8) -> Vec<u8> {
    let mut p = vec![0u8; 24];
    p[..8].copy_from_slice(&key.to_be_bytes());
    p[8..16].copy_from_slice(&sa_key.to_be_bytes());
    p[20] = flags;
    p
}

const REGISTER: u8 = 0;
const RESERVE: u8 = 1;
const RELEASE: u8 = 2;
const CLEAR: u8 = 3;
const PREEMPT: u8 = 4;
const PREEMPT_AND_ABORT: u8 = 5;
const REGISTER_IGNORE: u8 = 6;
const REGISTER_AND_MOVE: u8 = 7;

/// Runs one PERSISTENT RESERVE OUT and commits it.
fn out(r: &mut Reservations, from: &NexusId, action: u8, rtype: u8, p: &[u8]) -> Result<Effects, Refusal> {
    let c = cdb(action, rtype, p.len() as u32);
    let before = r.clone();
    match r.persistent_reserve_out(from, &c, p, CAPS, &any, &ports_1_2) {
        Ok((next, fx)) => {
            *r = next;
            Ok(fx)
        }
        Err(e) => {
            assert_eq!(*r, before, "a refused command changes nothing");
            Err(e)
        }
    }
}

fn register(r: &mut Reservations, n: &NexusId, key: u64) {
    out(r, n, REGISTER, 0, &params(0, key, 0)).unwrap();
}

fn check(r: Result<Effects, Refusal>) -> (u8, u8) {
    match r {
        Err(Refusal::Check(s)) => (s.asc, s.ascq),
        other => panic!("expected CHECK CONDITION, got {other:?}"),
    }
}

#[test]
fn cdbs_decode() {
    let c = PrInCdb::parse(&[0x5e, 0x03, 0, 0, 0, 0, 0, 0x12, 0x34, 0]).unwrap();
    assert_eq!(c.action, PrInAction::ReadFullStatus);
    assert_eq!(c.alloc, 0x1234);
    let c = cdb(PREEMPT_AND_ABORT, 0x06, 24);
    assert_eq!(c.action, PrOutAction::PreemptAndAbort);
    assert_eq!(
        (c.scope, c.rtype),
        (0, ReservationType::EXCLUSIVE_ACCESS_REGISTRANTS_ONLY)
    );
    assert!(c.check_length().is_ok());
    assert_eq!(cdb(0, 0, 23).check_length().unwrap_err().asc, 0x1a);
    assert_eq!(
        cdb(0, 0, MAX_PARAMETER_LIST + 1).check_length().unwrap_err().asc,
        0x1a
    );
    assert!(PrOutCdb::parse(&[0x5f, 0x08, 0, 0, 0, 0, 0, 0, 24, 0]).is_err());
}

#[test]
fn transport_ids() {
    let id = [0x42; 16];
    let t = transport_id(&id);
    assert_eq!(t[0], 0x04);
    assert_eq!(parse_transport_id(&t, 28), Ok(id));
    // iSCSI (5h), format code 01b, reserved bytes, truncation.
    let mut bad = t;
    bad[0] = 0x05;
    assert_eq!(parse_transport_id(&bad, 28), Err(bad_param(28, Some(3))));
    bad[0] = 0x44;
    assert_eq!(parse_transport_id(&bad, 28), Err(bad_param(28, Some(7))));
    let mut bad = t;
    bad[3] = 1;
    assert_eq!(parse_transport_id(&bad, 28), Err(bad_param(31, None)));
    assert_eq!(parse_transport_id(&t[..23], 28), Err(list_length_error()));
}

#[test]
fn parameter_lists() {
    let p = PrOutParams::parse(&params(1, 2, 0x05), PrOutAction::Register).unwrap();
    assert_eq!(
        (p.key, p.sa_key, p.all_tg_pt, p.aptpl, p.spec_i_pt),
        (1, 2, true, true, false)
    );
    // Wrong lengths.
    assert_eq!(
        PrOutParams::parse(&[0; 23], PrOutAction::Register),
        Err(list_length_error())
    );
    assert_eq!(
        PrOutParams::parse(&[0; 25], PrOutAction::Register),
        Err(list_length_error())
    );
    // Reserved bits.
    assert_eq!(
        PrOutParams::parse(&params(0, 0, 0x02), PrOutAction::Register),
        Err(bad_param(20, Some(1)))
    );
    let mut p = params(0, 0, 0);
    p[21] = 1;
    assert_eq!(
        PrOutParams::parse(&p, PrOutAction::Register),
        Err(bad_param(21, None))
    );
    // SPEC_I_PT: only REGISTER, exact TransportID length.
    let mut p = params(0, 5, 0x08);
    p.extend_from_slice(&48u32.to_be_bytes());
    p.extend_from_slice(&transport_id(&B.initiator));
    p.extend_from_slice(&transport_id(&C.initiator));
    assert_eq!(
        PrOutParams::parse(&p, PrOutAction::Register)
            .unwrap()
            .transport_ids,
        vec![B.initiator, C.initiator]
    );
    assert_eq!(
        PrOutParams::parse(&p, PrOutAction::RegisterAndIgnoreExistingKey),
        Err(bad_param(20, Some(3)))
    );
    assert_eq!(
        PrOutParams::parse(&p[..p.len() - 1], PrOutAction::Register),
        Err(list_length_error())
    );
    let mut dup = p.clone();
    dup[52..76].copy_from_slice(&transport_id(&B.initiator));
    assert_eq!(
        PrOutParams::parse(&dup, PrOutAction::Register),
        Err(bad_param(52, None))
    );
    assert_eq!(
        PrOutParams::parse(&params(0, 5, 0x08), PrOutAction::Register),
        Err(list_length_error())
    );
    // REGISTER AND MOVE.
    let mut m = params(1, 2, 0);
    m[17] = 0x03;
    m[18..20].copy_from_slice(&1u16.to_be_bytes());
    m[20..24].copy_from_slice(&24u32.to_be_bytes());
    m.extend_from_slice(&transport_id(&B.initiator));
    let rm = RegisterAndMoveParams::parse(&m).unwrap();
    assert_eq!(
        (rm.unreg, rm.aptpl, rm.relative_target_port, rm.transport_id),
        (true, true, 1, B.initiator)
    );
    let mut short = m.clone();
    short[20..24].copy_from_slice(&20u32.to_be_bytes());
    assert_eq!(RegisterAndMoveParams::parse(&short), Err(list_length_error()));
    let mut other = m.clone();
    other[24] = 0x05;
    assert_eq!(RegisterAndMoveParams::parse(&other), Err(bad_param(24, Some(3))));
}

#[test]
fn register_unregister_and_keys() {
    let mut r = Reservations::default();
    // Unregistered with a nonzero RESERVATION KEY: conflict.
    assert_eq!(
        out(&mut r, &A, REGISTER, 0, &params(9, 1, 0)),
        Err(Refusal::Conflict)
    );
    // SARK zero from an unregistered nexus: GOOD, nothing registered.
    out(&mut r, &A, REGISTER, 0, &params(0, 0, 0)).unwrap();
    assert!(r.registrations.is_empty());
    register(&mut r, &A, 0x1111);
    register(&mut r, &B, 0x2222);
    assert_eq!(r.generation, 3);
    // Registered, wrong key: conflict; right key: key changes.
    assert_eq!(
        out(&mut r, &A, REGISTER, 0, &params(1, 5, 0)),
        Err(Refusal::Conflict)
    );
    out(&mut r, &A, REGISTER, 0, &params(0x1111, 0x3333, 0)).unwrap();
    assert_eq!(r.registrations[&RA].key, 0x3333);
    // REGISTER AND IGNORE EXISTING KEY ignores RESERVATION KEY.
    out(&mut r, &A, REGISTER_IGNORE, 0, &params(0xdead, 0x4444, 0)).unwrap();
    assert_eq!(r.registrations[&RA].key, 0x4444);
    // SPEC_I_PT from a registered nexus.
    let mut p = params(0x4444, 5, 0x08);
    p.extend_from_slice(&24u32.to_be_bytes());
    p.extend_from_slice(&transport_id(&C.initiator));
    assert_eq!(check(out(&mut r, &A, REGISTER, 0, &p)), (0x26, 0));
    // SPEC_I_PT from C (unregistered) naming B (registered): invalid.
    let mut p = params(0, 7, 0x08);
    p.extend_from_slice(&24u32.to_be_bytes());
    p.extend_from_slice(&transport_id(&B.initiator));
    assert_eq!(check(out(&mut r, &C, REGISTER, 0, &p)), (0x26, 0));
    // PREEMPT, RESERVE... from an unregistered nexus: conflict.
    for sa in [RESERVE, RELEASE, CLEAR, PREEMPT, PREEMPT_AND_ABORT] {
        assert_eq!(
            out(&mut r, &C, sa, 1, &params(0, 0x2222, 0)),
            Err(Refusal::Conflict)
        );
    }
    // Unregister.
    out(&mut r, &B, REGISTER, 0, &params(0x2222, 0, 0)).unwrap();
    assert!(!r.is_registered(&B));
}

#[test]
fn spec_i_pt_registers_each_port() {
    let mut r = Reservations::default();
    let mut p = params(0, 7, 0x08 | 0x04);
    p.extend_from_slice(&48u32.to_be_bytes());
    p.extend_from_slice(&transport_id(&B.initiator));
    p.extend_from_slice(&transport_id(&C.initiator));
    out(&mut r, &A, REGISTER, 0, &p).unwrap();
    assert_eq!(r.registrations.len(), 3);
    assert!(r.registrations.iter().all(|(g, r)| r.key == 7 && g.all_tg_pt()));
    // A TransportID the target would not let log in is refused.
    let mut r = Reservations::default();
    let c = cdb(REGISTER, 0, p.len() as u32);
    let only_a = |n: &InitiatorPortId| *n == A.initiator;
    assert_eq!(
        r.persistent_reserve_out(&A, &c, &p, CAPS, &only_a, &ports_1_2)
            .unwrap_err(),
        bad_param(28, None)
    );
    register(&mut r, &A, 1);
}

#[test]
fn reserve_release_each_type() {
    for t in ReservationType::ALL {
        let mut r = Reservations::default();
        register(&mut r, &A, 1);
        register(&mut r, &B, 2);
        register(&mut r, &C, 3);
        let g = r.generation;
        out(&mut r, &A, RESERVE, t.0, &params(1, 0, 0)).unwrap();
        assert_eq!(r.generation, g, "RESERVE does not bump PRGENERATION");
        // Again, same type: GOOD; another type: conflict.
        out(&mut r, &A, RESERVE, t.0, &params(1, 0, 0)).unwrap();
        let other = if t.0 == 1 { 3 } else { 1 };
        assert_eq!(
            out(&mut r, &A, RESERVE, other, &params(1, 0, 0)),
            Err(Refusal::Conflict)
        );
        // Another registrant: conflict unless all registrants with same type.
        let b = out(&mut r, &B, RESERVE, t.0, &params(2, 0, 0));
        assert_eq!(b.is_ok(), t.all_registrants(), "{t:?}");
        // RELEASE with the wrong type: INVALID RELEASE OF PERSISTENT RESERVATION.
        assert_eq!(
            check(out(&mut r, &A, RELEASE, other, &params(1, 0, 0))),
            (0x26, 0x04)
        );
        // RELEASE from a non-holder: GOOD, nothing happens.
        if !t.all_registrants() {
            out(&mut r, &B, RELEASE, t.0, &params(2, 0, 0)).unwrap();
            assert!(r.reservation.is_some());
        }
        let fx = out(&mut r, &A, RELEASE, t.0, &params(1, 0, 0)).unwrap();
        assert!(r.reservation.is_none());
        let told: Vec<RegistrantId> = fx.unit_attentions.iter().map(|(n, _)| *n).collect();
        if t.registrants_allowed() {
            assert_eq!(told, vec![RB, RC]);
            assert!(fx
                .unit_attentions
                .iter()
                .all(|(_, s)| *s == reservations_released()));
        } else {
            assert!(told.is_empty());
        }
    }
    // Bad SCOPE / TYPE: INVALID FIELD IN CDB.
    let mut r = Reservations::default();
    register(&mut r, &A, 1);
    assert_eq!(check(out(&mut r, &A, RESERVE, 0x02, &params(1, 0, 0))), (0x24, 0));
    assert_eq!(check(out(&mut r, &A, RESERVE, 0x11, &params(1, 0, 0))), (0x24, 0));
}

#[test]
fn holder_unregistering_releases() {
    let mut r = Reservations::default();
    register(&mut r, &A, 1);
    register(&mut r, &B, 2);
    out(&mut r, &A, RESERVE, 5, &params(1, 0, 0)).unwrap();
    let fx = out(&mut r, &A, REGISTER, 0, &params(1, 0, 0)).unwrap();
    assert!(r.reservation.is_none());
    assert_eq!(fx.unit_attentions, vec![(RB, reservations_released())]);
    // All registrants: the reservation lasts until the last one leaves.
    register(&mut r, &A, 1);
    out(&mut r, &A, RESERVE, 8, &params(1, 0, 0)).unwrap();
    out(&mut r, &A, REGISTER, 0, &params(1, 0, 0)).unwrap();
    assert!(r.reservation.is_some());
    assert!(r.is_holder(&B));
    out(&mut r, &B, REGISTER, 0, &params(2, 0, 0)).unwrap();
    assert!(r.reservation.is_none());
}

#[test]
fn clear_and_preempt() {
    let mut r = Reservations::default();
    register(&mut r, &A, 1);
    register(&mut r, &B, 2);
    register(&mut r, &C, 2);
    out(&mut r, &B, RESERVE, 1, &params(2, 0, 0)).unwrap();
    // PREEMPT AND ABORT of the holder's key: B and C (same key) preempted
    // and aborted, A holds a new reservation of the type it asked for.
    let fx = out(&mut r, &A, PREEMPT_AND_ABORT, 3, &params(1, 2, 0)).unwrap();
    assert_eq!(
        r.reservation,
        Some(Reservation {
            holder: RA,
            rtype: ReservationType(3)
        })
    );
    assert_eq!(r.registrations.keys().copied().collect::<Vec<_>>(), vec![RA]);
    assert_eq!(fx.aborts, vec![RB, RC]);
    assert!(fx.unit_attentions.contains(&(RB, registrations_preempted())));
    // PREEMPT with SARK zero and a reservation that is not all registrants.
    assert_eq!(check(out(&mut r, &A, PREEMPT, 3, &params(1, 0, 0))), (0x26, 0));
    // A key nobody has: conflict.
    assert_eq!(
        out(&mut r, &A, PREEMPT, 3, &params(1, 99, 0)),
        Err(Refusal::Conflict)
    );
    // Preempting registrations only (no reservation).
    register(&mut r, &B, 5);
    out(&mut r, &A, RELEASE, 3, &params(1, 0, 0)).unwrap();
    let fx = out(&mut r, &A, PREEMPT, 0, &params(1, 5, 0)).unwrap();
    assert!(fx.aborts.is_empty());
    assert!(!r.is_registered(&B) && r.reservation.is_none());
    // All registrants, SARK zero: everyone else goes.
    register(&mut r, &B, 5);
    register(&mut r, &C, 6);
    out(&mut r, &B, RESERVE, 7, &params(5, 0, 0)).unwrap();
    out(&mut r, &A, PREEMPT, 1, &params(1, 0, 0)).unwrap();
    assert_eq!(
        r.reservation,
        Some(Reservation {
            holder: RA,
            rtype: ReservationType(1)
        })
    );
    assert_eq!(r.registrations.len(), 1);
    // CLEAR.
    register(&mut r, &B, 5);
    let fx = out(&mut r, &B, CLEAR, 0, &params(5, 0, 0)).unwrap();
    assert!(r.registrations.is_empty() && r.reservation.is_none());
    assert_eq!(fx.unit_attentions, vec![(RA, reservations_preempted())]);
}

#[test]
fn register_and_move() {
    let mut r = Reservations::default();
    register(&mut r, &A, 1);
    out(&mut r, &A, RESERVE, 1, &params(1, 0, 0)).unwrap();
    let mv = |sa_key: u64, unreg: bool, port: u16, dest: NexusId| {
        let mut m = params(1, sa_key, 0);
        m[17] = u8::from(unreg) << 1;
        m[18..20].copy_from_slice(&port.to_be_bytes());
        m[20..24].copy_from_slice(&24u32.to_be_bytes());
        m.extend_from_slice(&transport_id(&dest.initiator));
        m
    };
    assert_eq!(
        check(out(&mut r, &A, REGISTER_AND_MOVE, 0, &mv(0, false, 1, B))),
        (0x26, 0)
    );
    // Relative target port 3 does not exist.
    assert_eq!(
        check(out(&mut r, &A, REGISTER_AND_MOVE, 0, &mv(7, false, 3, B))),
        (0x26, 0)
    );
    assert_eq!(
        check(out(&mut r, &A, REGISTER_AND_MOVE, 0, &mv(7, false, 1, A))),
        (0x26, 0)
    );
    out(&mut r, &A, REGISTER_AND_MOVE, 0, &mv(7, true, 1, B)).unwrap();
    assert_eq!(
        r.reservation,
        Some(Reservation {
            holder: RB,
            rtype: ReservationType(1)
        })
    );
    assert_eq!(r.registrations.keys().copied().collect::<Vec<_>>(), vec![RB]);
    // A is no longer the holder (nor registered): conflict.
    assert_eq!(
        out(&mut r, &A, REGISTER_AND_MOVE, 0, &mv(7, false, 1, C)),
        Err(Refusal::Conflict)
    );
    // The destination is an I_T nexus: B through port 2 is not B through
    // port 1, and may receive the reservation from it (SPC-4 5.13.8).
    let b2 = through(0xb, 2);
    let mv7 = |unreg: bool, dest: NexusId| {
        let mut m = mv(7, unreg, dest.port, dest);
        m[..8].copy_from_slice(&7u64.to_be_bytes());
        m
    };
    out(&mut r, &B, REGISTER_AND_MOVE, 0, &mv7(false, b2)).unwrap();
    assert_eq!(r.reservation.map(|v| v.holder), Some(reg(b2)));
    assert!(r.is_holder(&b2) && !r.is_holder(&B) && r.is_registered(&B));
}

#[test]
fn all_tg_pt_registers_every_target_port() {
    let mut r = Reservations::default();
    let a2 = through(0xa, 2);
    // ALL_TG_PT = 1: registered through port 1, port 2 and any other.
    out(&mut r, &A, REGISTER, 0, &params(0, 5, 0x04)).unwrap();
    assert!(r.is_registered(&A) && r.is_registered(&a2) && r.is_registered(&through(0xa, 9)));
    assert_eq!(r.registrations.len(), 1);
    // Through port 2 it is registered: a REGISTER there changes that
    // one registration's key (ALL_TG_PT ignored).
    out(&mut r, &a2, REGISTER, 0, &params(5, 6, 0)).unwrap();
    assert_eq!(r.registrations[&RegistrantId::all_ports(A.initiator)].key, 6);
    // READ FULL STATUS: ALL_TG_PT set, relative target port zero.
    let fs = r.persistent_reserve_in(PrInAction::ReadFullStatus, CAPS);
    assert_eq!((fs[8 + 12], &fs[8 + 18..8 + 20]), (0x02, &[0u8, 0][..]));
    // A reservation through port 2 is held through port 1 too.
    out(&mut r, &a2, RESERVE, 1, &params(6, 0, 0)).unwrap();
    assert!(r.is_holder(&A) && r.allows(&A, CommandClass::Write));
    // Unregistering through port 1 ends it everywhere.
    out(&mut r, &A, REGISTER, 0, &params(6, 0, 0)).unwrap();
    assert!(!r.is_registered(&a2) && r.reservation.is_none());
    // ALL_TG_PT = 0 through port 1, then ALL_TG_PT = 1 through port 2:
    // INVALID FIELD IN PARAMETER LIST (byte 20, bit 2), nothing changes.
    register(&mut r, &A, 1);
    assert_eq!(
        out(&mut r, &a2, REGISTER, 0, &params(0, 2, 0x04)),
        Err(bad_param(20, Some(2)))
    );
    // PREEMPT AND ABORT of an ALL_TG_PT registration aborts it as a
    // whole: the registrant covers every port.
    register(&mut r, &B, 3);
    out(&mut r, &through(0xc, 1), REGISTER, 0, &params(0, 4, 0x04)).unwrap();
    out(&mut r, &B, RESERVE, 1, &params(3, 0, 0)).unwrap();
    let fx = out(&mut r, &A, PREEMPT_AND_ABORT, 1, &params(1, 4, 0)).unwrap();
    assert_eq!(fx.aborts, vec![RegistrantId::all_ports([0xc; 16])]);
    assert!(fx.aborts[0].covers(&through(0xc, 7)));
}

#[test]
fn aptpl_persist_decisions() {
    let mut r = Reservations::default();
    // APTPL without PTPL_C.
    let p = params(0, 1, 0x01);
    let c = cdb(REGISTER, 0, 24);
    assert_eq!(
        r.persistent_reserve_out(&A, &c, &p, NO_PTPL, &any, &ports_1_2)
            .unwrap_err(),
        bad_param(20, Some(0))
    );
    let fx = out(&mut r, &A, REGISTER, 0, &p).unwrap();
    assert_eq!(fx.persist, Persist::Save);
    assert!(r.aptpl);
    let fx = out(&mut r, &A, RESERVE, 1, &params(1, 0, 0)).unwrap();
    assert_eq!(fx.persist, Persist::Save);
    // Reserving again changes nothing: nothing to save.
    let fx = out(&mut r, &A, RESERVE, 1, &params(1, 0, 0)).unwrap();
    assert_eq!(fx.persist, Persist::Unchanged);
    // REGISTER with APTPL = 0 turns it off.
    let fx = out(&mut r, &A, REGISTER, 0, &params(1, 2, 0)).unwrap();
    assert_eq!(fx.persist, Persist::Remove);
    let fx = out(&mut r, &A, REGISTER, 0, &params(2, 3, 0)).unwrap();
    assert_eq!(fx.persist, Persist::Unchanged);
}

#[test]
fn scsi2_reservations() {
    let mut r = Reservations::default();
    r.reserve_scsi2(&A).unwrap();
    r.reserve_scsi2(&A).unwrap();
    assert_eq!(r.reserve_scsi2(&B), Err(Refusal::Conflict));
    assert!(!r.allows(&B, CommandClass::Read));
    assert!(!r.allows(&B, CommandClass::Status));
    assert!(r.allows(&B, CommandClass::Unrestricted));
    assert!(r.allows(&B, CommandClass::Release));
    assert!(r.allows(&A, CommandClass::Write));
    // SPC-4 5.13.3: PR commands conflict while an SPC-2 reservation exists.
    assert!(!r.allows(&A, CommandClass::PersistentReserve));
    let c = cdb(REGISTER, 0, 24);
    assert_eq!(
        r.persistent_reserve_out(&A, &c, &params(0, 1, 0), CAPS, &any, &ports_1_2)
            .unwrap_err(),
        Refusal::Conflict
    );
    // RELEASE from another nexus does nothing; from the holder it releases.
    r.release_scsi2(&B);
    assert_eq!(r.scsi2_holder, Some(A));
    r.nexus_lost(&A);
    assert_eq!(r.scsi2_holder, None);
    r.reserve_scsi2(&B).unwrap();
    r.lun_reset();
    assert!(!r.restricts());
    // With registrations: RESERVE conflicts, except from a PR holder (CRH).
    register(&mut r, &A, 1);
    assert_eq!(r.reserve_scsi2(&B), Err(Refusal::Conflict));
    assert_eq!(r.reserve_scsi2(&A), Err(Refusal::Conflict));
    out(&mut r, &A, RESERVE, 1, &params(1, 0, 0)).unwrap();
    r.reserve_scsi2(&A).unwrap();
    assert_eq!(r.scsi2_holder, None);
    r.release_scsi2(&B);
    assert!(r.reservation.is_some());
}

/// Who sends the command, relative to the reservation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Holder,
    Registered,
    Unregistered,
}

/// The expected answer of SPC-4 table 62 / SBC-3 table 13: true when
/// allowed.
fn expected(t: ReservationType, class: CommandClass, role: Role) -> bool {
    use CommandClass::*;
    // Under all registrants types every registrant is a holder.
    let role = if t.all_registrants() && role == Role::Registered {
        Role::Holder
    } else {
        role
    };
    match (class, role) {
        (_, Role::Holder) => true,
        (Unrestricted | Status | PersistentReserve | Reserve | Release, _) => true,
        // Exclusive Access does not let registrants read.
        (Read, Role::Registered) => t != ReservationType::EXCLUSIVE_ACCESS,
        (Read, Role::Unregistered) => matches!(t.0, 0x1 | 0x5 | 0x7),
        (Write, Role::Registered) => matches!(t.0, 0x5..=0x8),
        (Write, Role::Unregistered) => false,
    }
}

#[test]
fn conflict_table() {
    use CommandClass::*;
    let classes = [
        Unrestricted,
        Status,
        Read,
        Write,
        PersistentReserve,
        Reserve,
        Release,
    ];
    // Written out for the two classes that depend on the type, as the
    // columns of SBC-3 table 13 read (WE, EA, WE-RO, EA-RO, WE-AR, EA-AR).
    let read_unreg = [true, false, true, false, true, false];
    let read_reg = [true, false, true, true, true, true];
    let write_reg = [false, false, true, true, true, true];
    for (i, t) in ReservationType::ALL.into_iter().enumerate() {
        assert_eq!(expected(t, Read, Role::Unregistered), read_unreg[i]);
        assert_eq!(expected(t, Read, Role::Registered), read_reg[i]);
        assert_eq!(expected(t, Write, Role::Registered), write_reg[i]);
        let mut r = Reservations::default();
        register(&mut r, &A, 1);
        register(&mut r, &B, 2);
        out(&mut r, &A, RESERVE, t.0, &params(1, 0, 0)).unwrap();
        for class in classes {
            for (n, role) in [(A, Role::Holder), (B, Role::Registered), (C, Role::Unregistered)] {
                assert_eq!(
                    r.allows(&n, class),
                    expected(t, class, role),
                    "{t:?} {class:?} {role:?}"
                );
            }
        }
    }
    // No reservation: nothing conflicts, registered or not.
    let mut r = Reservations::default();
    register(&mut r, &A, 1);
    assert!(!r.restricts());
    for class in classes {
        assert!(r.allows(&A, class) && r.allows(&C, class));
    }
}

#[test]
fn pr_in_data() {
    let mut r = Reservations::default();
    register(&mut r, &A, 0x0102);
    register(&mut r, &B, 0x0304);
    out(&mut r, &B, RESERVE, 6, &params(0x0304, 0, 0)).unwrap();
    let k = r.persistent_reserve_in(PrInAction::ReadKeys, CAPS);
    assert_eq!(&k[..8], &[0, 0, 0, 2, 0, 0, 0, 16]);
    assert_eq!(&k[8..16], &0x0102u64.to_be_bytes());
    let rr = r.persistent_reserve_in(PrInAction::ReadReservation, CAPS);
    assert_eq!(rr.len(), 24);
    assert_eq!(&rr[8..16], &0x0304u64.to_be_bytes());
    assert_eq!(rr[21], 0x06);
    let cap = r.persistent_reserve_in(PrInAction::ReportCapabilities, CAPS);
    assert_eq!(cap, vec![0, 8, 0x1d, 0x80, 0xea, 0x01, 0, 0]);
    let fs = r.persistent_reserve_in(PrInAction::ReadFullStatus, CAPS);
    assert_eq!(fs.len(), 8 + 2 * 48);
    assert_eq!(&fs[4..8], &96u32.to_be_bytes());
    // B's descriptor: R_HOLDER, type, relative port 1, its TransportID.
    let d = &fs[56..104];
    assert_eq!((d[12], d[13]), (0x01, 0x06));
    assert_eq!(&d[18..20], &[0, 1]);
    assert_eq!(&d[20..24], &24u32.to_be_bytes());
    assert_eq!(&d[24..48], &transport_id(&B.initiator));
    // All registrants: key zero in READ RESERVATION.
    out(&mut r, &B, RELEASE, 6, &params(0x0304, 0, 0)).unwrap();
    out(&mut r, &B, RESERVE, 8, &params(0x0304, 0, 0)).unwrap();
    let rr = r.persistent_reserve_in(PrInAction::ReadReservation, CAPS);
    assert_eq!(&rr[8..16], &[0; 8]);
}

#[test]
fn registration_limit() {
    let mut r = Reservations::default();
    for i in 0..MAX_REGISTRATIONS {
        let mut n = through(0, 1);
        n.initiator[..8].copy_from_slice(&(i as u64).to_be_bytes());
        register(&mut r, &n, 1);
    }
    assert_eq!(
        check(out(&mut r, &through(0xff, 1), REGISTER, 0, &params(0, 1, 0))),
        (0x55, 0x04)
    );
}
