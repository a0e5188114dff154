//! The `pr` fuzz harness: the input decodes into PERSISTENT RESERVE OUT
//! commands (well-formed lists built from small key and nexus choices, or
//! raw bytes), PERSISTENT RESERVE IN, RESERVE/RELEASE, nexus loss and LUN
//! reset from four I_T nexuses (three initiator ports, two target ports:
//! one initiator port through both) against one [`Reservations`]. Oracles after
//! every step: the SPC-4 invariants (a holder is registered, an all
//! registrants reservation has registrants, no key is zero, at most
//! MAX_REGISTRATIONS, no I_T nexus registered twice), PRGENERATION moves by one exactly on a successful
//! PR OUT other than RESERVE/RELEASE, who may register, the PR IN data
//! agrees with the state, the holder is never in conflict, and the APTPL
//! file text of every state decodes back to it.

use srptd::scsi::aptpl;
use srptd::scsi::lun::NexusId;
use srptd::scsi::reservations::{
    transport_id, Capabilities, CommandClass, PrInAction, PrOutAction, PrOutCdb, Refusal, Reservations,
    MAX_REGISTRATIONS,
};

const fn nexus(i: u8, port: u16) -> NexusId {
    NexusId {
        initiator: [i; 16],
        port,
    }
}

/// Initiator port 1 through target ports 1 and 2; 2 through 1; 4 through 2.
const NEXUSES: [NexusId; 4] = [nexus(1, 1), nexus(2, 1), nexus(1, 2), nexus(4, 2)];
/// Initiator port 4 may not use the LUN.
const BARRED: [u8; 16] = [4; 16];
const NAA: [u8; 16] = [0x60; 16];

struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let n = n.min(self.0.len());
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a.to_vec()
    }
}

/// A key from a small set so that keys match often.
fn key(r: &Reservations, sel: u8) -> u64 {
    match sel & 3 {
        0 => 0,
        1 => 0x11,
        2 => 0x22,
        _ => r
            .registrant(&NEXUSES[usize::from(sel >> 2) & 3])
            .map_or(0x33, |g| r.registrations[&g].key),
    }
}

fn pr_out_list(r: &Reservations, action: PrOutAction, inp: &mut Input<'_>) -> Vec<u8> {
    let rk = key(r, inp.byte().unwrap_or(0));
    let sark = key(r, inp.byte().unwrap_or(0));
    let flags = inp.byte().unwrap_or(0);
    let mut p = vec![0u8; 24];
    p[..8].copy_from_slice(&rk.to_be_bytes());
    p[8..16].copy_from_slice(&sark.to_be_bytes());
    if action == PrOutAction::RegisterAndMove {
        p[17] = flags & 0x03;
        // Relative target ports 1 and 2 exist, 3 and 4 do not.
        p[19] = 1 + (flags >> 6);
        p[20..24].copy_from_slice(&24u32.to_be_bytes());
        p.extend_from_slice(&transport_id(&NEXUSES[usize::from(flags >> 2) & 3].initiator));
    } else {
        p[20] = flags & 0x0d;
        if flags & 0x08 != 0 {
            let n = usize::from(flags >> 4) % 4;
            p.extend_from_slice(&((n * 24) as u32).to_be_bytes());
            for i in 0..n {
                p.extend_from_slice(&transport_id(&NEXUSES[(usize::from(flags) + i) & 3].initiator));
            }
        }
    }
    p
}

fn check_invariants(r: &Reservations) {
    assert!(r.registrations.len() <= MAX_REGISTRATIONS);
    assert!(
        r.registrations.values().all(|g| g.key != 0),
        "a zero key is registered"
    );
    if let Some(res) = r.reservation {
        assert!(res.rtype.is_valid());
        if res.rtype.all_registrants() {
            assert!(
                !r.registrations.is_empty(),
                "all registrants reservation without registrants"
            );
        } else {
            assert!(
                r.registrations.contains_key(&res.holder),
                "the holder is not registered"
            );
        }
    }
    // An initiator port is registered through each target port at most
    // once, and not also through all of them (ALL_TG_PT).
    for (i, g) in r.registrations.keys().enumerate() {
        for h in r.registrations.keys().skip(i + 1) {
            assert!(!g.overlaps(h), "overlapping registrations {g:?} {h:?}");
        }
    }
    for n in &NEXUSES {
        if r.is_holder(n) && r.scsi2_holder.is_none() {
            for class in [CommandClass::Read, CommandClass::Write, CommandClass::Status] {
                assert!(r.allows(n, class), "the holder meets a conflict");
            }
        }
    }
    let text = aptpl::encode(&NAA, r);
    let back = aptpl::decode(&NAA, &text).expect("the saved state decodes");
    assert_eq!(back.registrations, r.registrations);
    assert_eq!(back.reservation, r.reservation);
    assert_eq!(back.generation, r.generation);
}

fn check_pr_in(r: &Reservations, caps: Capabilities) {
    let keys = r.persistent_reserve_in(PrInAction::ReadKeys, caps);
    assert_eq!(keys.len(), 8 + 8 * r.registrations.len());
    assert_eq!(keys[..4], r.generation.to_be_bytes());
    let listed: Vec<u64> = keys[8..]
        .chunks(8)
        .map(|c| u64::from_be_bytes(c.try_into().unwrap()))
        .collect();
    let have: Vec<u64> = r.registrations.values().map(|g| g.key).collect();
    assert_eq!(listed, have);
    let rr = r.persistent_reserve_in(PrInAction::ReadReservation, caps);
    assert_eq!(rr.len(), if r.reservation.is_some() { 24 } else { 8 });
    let fs = r.persistent_reserve_in(PrInAction::ReadFullStatus, caps);
    assert_eq!(fs.len(), 8 + 48 * r.registrations.len());
    let holders = fs[8..].chunks(48).filter(|d| d[12] & 1 != 0).count();
    let want = r
        .registrations
        .keys()
        .filter(|g| {
            r.reservation
                .is_some_and(|res| res.rtype.all_registrants() || res.holder == **g)
        })
        .count();
    assert_eq!(holders, want);
    assert_eq!(
        r.persistent_reserve_in(PrInAction::ReportCapabilities, caps)
            .len(),
        8
    );
}

/// Runs the harness on `data`.
pub fn run(data: &[u8]) {
    let mut inp = Input(data);
    let caps = Capabilities {
        ptpl: data.first().is_some_and(|b| b & 1 != 0),
    };
    inp.byte();
    let mut r = Reservations::default();
    // A TransportID naming the barred initiator port is refused.
    let allowed = |n: &[u8; 16]| *n != BARRED;
    let port_exists = |p: u16| matches!(p, 1 | 2);
    while let Some(op) = inp.byte() {
        let from = NEXUSES[usize::from(op & 3)];
        match op >> 4 {
            kind @ (0..=7 | 13..=15) => {
                let sa = if kind <= 7 {
                    kind
                } else {
                    inp.byte().unwrap_or(0) & 0x1f
                };
                let type_byte = inp.byte().unwrap_or(0);
                let mut cdb = [0u8; 10];
                cdb[0] = 0x5f;
                cdb[1] = sa;
                cdb[2] = type_byte;
                let Ok(parsed) = PrOutCdb::parse(&cdb) else {
                    assert!(sa > 7);
                    continue;
                };
                let list = if op & 0x04 == 0 {
                    pr_out_list(&r, parsed.action, &mut inp)
                } else {
                    let n = usize::from(inp.byte().unwrap_or(0));
                    inp.bytes(n)
                };
                cdb[5..9].copy_from_slice(&(list.len() as u32).to_be_bytes());
                let parsed = PrOutCdb::parse(&cdb).expect("valid service action");
                let before = r.clone();
                match r.persistent_reserve_out(&from, &parsed, &list, caps, &allowed, &port_exists) {
                    Ok((next, fx)) => {
                        let bumps = !matches!(parsed.action, PrOutAction::Reserve | PrOutAction::Release);
                        assert_eq!(next.generation, before.generation.wrapping_add(u32::from(bumps)));
                        // Only registering service actions add registrations.
                        for n in next.registrations.keys() {
                            if !before.registrations.contains_key(n) {
                                assert!(matches!(
                                    parsed.action,
                                    PrOutAction::Register
                                        | PrOutAction::RegisterAndIgnoreExistingKey
                                        | PrOutAction::RegisterAndMove
                                ));
                                assert!(allowed(&n.initiator) || n.initiator == from.initiator);
                            }
                        }
                        if parsed.action == PrOutAction::Reserve {
                            assert!(next.is_holder(&from));
                        }
                        assert!(fx.unit_attentions.iter().all(|(g, _)| !g.covers(&from)));
                        assert!(fx.aborts.iter().all(|g| !g.covers(&from)));
                        if !caps.ptpl {
                            assert!(!next.aptpl);
                        }
                        r = next;
                    }
                    Err(Refusal::Conflict) => {}
                    Err(Refusal::Check(s)) => assert_eq!(s.key.code(), 0x5, "ILLEGAL REQUEST"),
                }
            }
            8 => {
                let sa = inp.byte().unwrap_or(0);
                let action = [
                    PrInAction::ReadKeys,
                    PrInAction::ReadReservation,
                    PrInAction::ReportCapabilities,
                    PrInAction::ReadFullStatus,
                ][usize::from(sa & 3)];
                r.persistent_reserve_in(action, caps);
            }
            9 => {
                let ok = r.reserve_scsi2(&from).is_ok();
                if ok && r.registrations.is_empty() {
                    assert_eq!(r.scsi2_holder, Some(from));
                }
            }
            10 => r.release_scsi2(&from),
            11 => r.nexus_lost(&from),
            _ => r.lun_reset(),
        }
        check_invariants(&r);
        check_pr_in(&r, caps);
    }
}
