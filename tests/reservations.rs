//! Persistent reservations and RESERVE/RELEASE through whole SRP channels:
//! several I_T nexuses (simulated initiators with their own initiator port
//! IDs) on one target. The SPC-4 conflict table over real CDBs of every
//! command class and every reservation type, PREEMPT AND ABORT with tasks
//! in flight, APTPL across a restart, and malformed input that must get
//! its sense and change nothing.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::*;
use srptd::scsi::backstore::BackstoreConfig;
use srptd::scsi::lun::{LunConfig, Target, TargetConfig};
use srptd::scsi::reservations::{transport_id, ReservationType};
use srptd::wire::Rsp;

const GOOD: u8 = 0x00;
const CHECK_CONDITION: u8 = 0x02;
const RESERVATION_CONFLICT: u8 = 0x18;

const A: [u8; 16] = [0xa1; 16];
const B: [u8; 16] = [0xb2; 16];
const C: [u8; 16] = [0xc3; 16];

const REGISTER: u8 = 0;
const RESERVE: u8 = 1;
const RELEASE: u8 = 2;
const CLEAR: u8 = 3;
const PREEMPT_AND_ABORT: u8 = 5;

fn target(state_dir: Option<&Path>) -> Arc<Target> {
    let bs = BackstoreConfig::parse("ram:1M,bs=512", "lun").unwrap();
    Target::new(TargetConfig {
        luns: vec![LunConfig::new(0, bs)],
        state_dir: state_dir.map(Path::to_path_buf),
        ..TargetConfig::default()
    })
    .unwrap()
}

/// Logs `ini` in and consumes the power-on unit attention.
fn login(t: &Arc<Target>, ini: [u8; 16]) -> Sim {
    let mut s = Sim::login_as(t, ini, 32);
    let (r, _) = s.command(0, &[0; 6], None, 0, Layout::Direct);
    assert_eq!(r.sense_key_asc(), Some((0x6, 0x29, 0x00)));
    s
}

fn pr_out_cdb(sa: u8, rtype: u8, len: u32) -> [u8; 10] {
    let mut c = [0u8; 10];
    c[0] = 0x5f;
    c[1] = sa;
    c[2] = rtype;
    c[5..9].copy_from_slice(&len.to_be_bytes());
    c
}

fn params(key: u64, sa_key: u64, flags: u8) -> Vec<u8> {
    let mut p = vec![0u8; 24];
    p[..8].copy_from_slice(&key.to_be_bytes());
    p[8..16].copy_from_slice(&sa_key.to_be_bytes());
    p[20] = flags;
    p
}

fn pr_out(s: &mut Sim, sa: u8, rtype: u8, p: &[u8]) -> Response {
    s.command(
        0,
        &pr_out_cdb(sa, rtype, p.len() as u32),
        Some(p),
        0,
        Layout::Direct,
    )
    .0
}

fn pr_in(s: &mut Sim, sa: u8) -> Vec<u8> {
    let (r, d) = s.command(
        0,
        &[0x5e, sa, 0, 0, 0, 0, 0, 0x10, 0, 0],
        None,
        4096,
        Layout::Direct,
    );
    assert_eq!(r.status, GOOD, "PR IN {sa}: {:?}", r.sense_key_asc());
    d
}

fn ok(r: Response) {
    assert_eq!(r.status, GOOD, "sense {:?}", r.sense_key_asc());
}

fn sense(r: &Response) -> (u8, u8, u8) {
    assert_eq!(r.status, CHECK_CONDITION);
    r.sense_key_asc().unwrap()
}

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("srptd-pr-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// A command of one class, with the data it moves.
struct Probe {
    name: &'static str,
    class: Class,
    cdb: Vec<u8>,
    out: Option<Vec<u8>>,
    in_len: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Class {
    Unrestricted,
    Status,
    Read,
    Write,
    PersistentReserveIn,
}

fn probes() -> Vec<Probe> {
    let p = |name, class, cdb: &[u8], out: Option<Vec<u8>>, in_len| Probe {
        name,
        class,
        cdb: cdb.to_vec(),
        out,
        in_len,
    };
    let mut sync10 = [0u8; 10];
    sync10[0] = 0x35;
    let mut ws16 = [0u8; 16];
    ws16[0] = 0x93;
    ws16[13] = 1;
    let mut verify16 = [0u8; 16];
    verify16[0] = 0x8f;
    verify16[13] = 1;
    vec![
        p("INQUIRY", Class::Unrestricted, &[0x12, 0, 0, 0, 96, 0], None, 96),
        p(
            "REPORT LUNS",
            Class::Unrestricted,
            &[0xa0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0],
            None,
            256,
        ),
        p(
            "REPORT SUPPORTED OPERATION CODES",
            Class::Unrestricted,
            &[0xa3, 0x0c, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0],
            None,
            4096,
        ),
        p(
            "REQUEST SENSE",
            Class::Unrestricted,
            &[0x03, 0, 0, 0, 18, 0],
            None,
            18,
        ),
        p("TEST UNIT READY", Class::Status, &[0; 6], None, 0),
        p(
            "READ CAPACITY(10)",
            Class::Status,
            &[0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            None,
            8,
        ),
        p("READ(16)", Class::Read, &rw16(0x88, 4, 1), None, 512),
        p("READ(10)", Class::Read, &rw10(0x28, 4, 1), None, 512),
        p("VERIFY(16)", Class::Read, &verify16, None, 0),
        p(
            "MODE SENSE(6)",
            Class::Read,
            &[0x1a, 0, 0x3f, 0, 255, 0],
            None,
            255,
        ),
        p(
            "WRITE(16)",
            Class::Write,
            &rw16(0x8a, 4, 1),
            Some(pattern(512, 4)),
            0,
        ),
        p(
            "WRITE(10)",
            Class::Write,
            &rw10(0x2a, 5, 1),
            Some(pattern(512, 5)),
            0,
        ),
        p("WRITE SAME(16)", Class::Write, &ws16, Some(pattern(512, 6)), 0),
        p("SYNCHRONIZE CACHE(10)", Class::Write, &sync10, None, 0),
        p("MODE SELECT(6)", Class::Write, &[0x15, 0x10, 0, 0, 0, 0], None, 0),
        p("START STOP UNIT", Class::Write, &[0x1b, 0, 0, 0, 1, 0], None, 0),
        p(
            "PERSISTENT RESERVE IN",
            Class::PersistentReserveIn,
            &[0x5e, 0, 0, 0, 0, 0, 0, 0x10, 0, 0],
            None,
            4096,
        ),
    ]
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Holder,
    Registered,
    Unregistered,
}

/// SPC-4 5.13.1 table 62 and SBC-3 4.17.1 table 13, per column: whether a
/// command of `class` from an I_T nexus in `role` is allowed under `t`.
fn allowed(t: ReservationType, class: Class, role: Role) -> bool {
    let all_registrants = matches!(t.0, 7 | 8);
    let role = match role {
        Role::Registered if all_registrants => Role::Holder,
        r => r,
    };
    match (class, role) {
        (_, Role::Holder) => true,
        (Class::Unrestricted | Class::Status | Class::PersistentReserveIn, _) => true,
        // Reads: only the Exclusive Access types shut them out, and their
        // registrants only / all registrants forms let registrants in.
        (Class::Read, Role::Registered) => t.0 != 3,
        (Class::Read, Role::Unregistered) => matches!(t.0, 1 | 5 | 7),
        // Writes: registrants only / all registrants let registrants in.
        (Class::Write, Role::Registered) => matches!(t.0, 5..=8),
        (Class::Write, Role::Unregistered) => false,
    }
}

#[test]
fn conflict_table_every_class_and_type() {
    let t = target(None);
    let mut a = login(&t, A);
    let mut b = login(&t, B);
    let mut c = login(&t, C);
    ok(pr_out(&mut a, REGISTER, 0, &params(0, 0xa, 0)));
    ok(pr_out(&mut b, REGISTER, 0, &params(0, 0xb, 0)));
    // Without a reservation nothing conflicts.
    for s in [&mut a, &mut b, &mut c] {
        for p in probes() {
            let (r, _) = s.command(0, &p.cdb, p.out.as_deref(), p.in_len, Layout::Direct);
            assert_eq!(
                r.status,
                GOOD,
                "{} without reservation: {:?}",
                p.name,
                r.sense_key_asc()
            );
        }
    }
    let mut checked = 0;
    for rt in ReservationType::ALL {
        ok(pr_out(&mut a, RESERVE, rt.0, &params(0xa, 0, 0)));
        for (s, role) in [
            (&mut a, Role::Holder),
            (&mut b, Role::Registered),
            (&mut c, Role::Unregistered),
        ] {
            for p in probes() {
                let (r, _) = s.command(0, &p.cdb, p.out.as_deref(), p.in_len, Layout::Direct);
                let want = if allowed(rt, p.class, role) {
                    GOOD
                } else {
                    RESERVATION_CONFLICT
                };
                assert_eq!(
                    r.status,
                    want,
                    "{} from {role:?} under type {:#x}: {:?}",
                    p.name,
                    rt.0,
                    r.sense_key_asc()
                );
                if want == RESERVATION_CONFLICT {
                    // Nothing moved: no sense, no data-in.
                    assert!(r.sense.is_empty());
                    assert_eq!(r.flags & Rsp::DIUNDER != 0, p.in_len > 0);
                }
                checked += 1;
            }
        }
        ok(pr_out(&mut a, RELEASE, rt.0, &params(0xa, 0, 0)));
        // Registrants only / all registrants: the others learn
        // RESERVATIONS RELEASED.
        if matches!(rt.0, 5..=8) {
            let (r, _) = b.command(0, &[0; 6], None, 0, Layout::Direct);
            assert_eq!(r.sense_key_asc(), Some((0x6, 0x2a, 0x04)));
        }
    }
    assert_eq!(checked, 6 * 3 * probes().len());
    // The write from an unregistered nexus never reached the medium.
    let (_, d) = a.read(0, 4, 512, 512, Layout::Direct);
    assert_eq!(d, pattern(512, 4), "only allowed writes landed");
}

#[test]
fn preempt_and_abort_with_tasks_in_flight() {
    let t = target(None);
    let mut a = login(&t, A);
    let mut b = login(&t, B);
    ok(pr_out(&mut a, REGISTER, 0, &params(0, 0xa, 0)));
    ok(pr_out(&mut b, REGISTER, 0, &params(0, 0xb, 0)));
    // B holds Write Exclusive, Registrants Only and writes.
    ok(pr_out(&mut b, RESERVE, 5, &params(0xb, 0, 0)));
    b.auto_exec = false;
    let tags: Vec<_> = (0..3)
        .map(|i| {
            b.submit(
                0,
                &rw16(0x8a, 16 + i, 1),
                Some(&pattern(512, 100 + i)),
                0,
                Layout::Direct,
            )
        })
        .collect();
    b.pump();
    assert_eq!(
        b.held.len(),
        3,
        "B's writes fetched their data and wait to run: {:?}",
        b.responses
    );
    // A preempts B's key and aborts its tasks; A now holds Exclusive Access.
    // Its GOOD waits until B's tasks have ended (SPC-4 5.13.11.2.4).
    let p = params(0xa, 0xb, 0);
    let tag = a.submit(
        0,
        &pr_out_cdb(PREEMPT_AND_ABORT, 3, 24),
        Some(&p),
        0,
        Layout::Direct,
    );
    assert!(!a.has_response(tag), "B's tasks are still on the backstore");
    b.release_all();
    a.advance(srptd::proto::TASK_SET_POLL);
    ok(a.take_response(tag));
    for tag in &tags {
        assert!(
            !b.has_response(*tag),
            "an aborted task gets no response (TAS = 0)"
        );
    }
    assert_eq!(b.ch.stats().io.aborted, 3);
    let (_, d) = a.read(0, 16, 3 * 512, 512, Layout::Direct);
    assert_eq!(d, vec![0; 3 * 512], "no aborted write landed");
    // B learns what happened, then meets the new reservation.
    b.auto_exec = true;
    let (r, _) = b.command(0, &[0; 6], None, 0, Layout::Direct);
    assert_eq!(
        r.sense_key_asc(),
        Some((0x6, 0x2a, 0x05)),
        "REGISTRATIONS PREEMPTED"
    );
    let (r, _) = b.command(0, &[0; 6], None, 0, Layout::Direct);
    assert_eq!(
        r.sense_key_asc(),
        Some((0x6, 0x2f, 0x00)),
        "COMMANDS CLEARED BY ANOTHER INITIATOR"
    );
    let r = b.write(0, 16, &pattern(512, 1), 512, Layout::Direct);
    assert_eq!(r.status, RESERVATION_CONFLICT);
    // Commands B sends after the abort run normally (TEST UNIT READY).
    let (r, _) = b.command(0, &[0; 6], None, 0, Layout::Direct);
    assert_eq!(r.status, GOOD);
    let rr = pr_in(&mut a, 1);
    assert_eq!(&rr[8..16], &0xau64.to_be_bytes());
    assert_eq!(rr[21], 0x03);
    let keys = pr_in(&mut a, 0);
    assert_eq!(&keys[4..8], &8u32.to_be_bytes(), "only A's key is left");
    // A's own commands were not touched.
    ok(a.write(0, 16, &pattern(512, 7), 512, Layout::Direct));
}

#[test]
fn aptpl_survives_a_restart() {
    let dir = temp_dir("restart");
    let t = target(Some(&dir));
    let mut a = login(&t, A);
    let mut b = login(&t, B);
    // APTPL = 1 on A's registration; B registers by SPEC_I_PT-free REGISTER.
    ok(pr_out(&mut a, REGISTER, 0, &params(0, 0x1234, 0x01)));
    ok(pr_out(&mut b, REGISTER, 0, &params(0, 0x5678, 0x01)));
    ok(pr_out(&mut a, RESERVE, 6, &params(0x1234, 0, 0)));
    let cap = pr_in(&mut a, 2);
    assert_eq!(cap[2] & 1, 1, "PTPL_C");
    assert_eq!(cap[3] & 1, 1, "PTPL_A");
    let before = t.reservations(0).unwrap();
    let files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(files.len(), 1, "one state file, no temporary left: {files:?}");
    drop((a, b, t));

    // "Restart": a new target on the same state directory.
    let t = target(Some(&dir));
    let after = t.reservations(0).unwrap();
    assert_eq!(after.registrations, before.registrations);
    assert_eq!(after.reservation, before.reservation);
    assert_eq!(after.generation, before.generation);
    assert!(after.aptpl);
    let mut c = login(&t, C);
    let r = c.read(0, 0, 512, 512, Layout::Direct).0;
    assert_eq!(r.status, RESERVATION_CONFLICT, "the restored reservation applies");
    let mut a = login(&t, A);
    let rr = pr_in(&mut a, 1);
    assert_eq!(&rr[8..16], &0x1234u64.to_be_bytes());
    assert_eq!(rr[21], 0x06);
    // APTPL = 0 removes the saved state: the next restart starts empty.
    ok(pr_out(&mut a, REGISTER, 0, &params(0x1234, 0x1234, 0)));
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
    drop((a, c, t));
    let t = target(Some(&dir));
    assert!(t.reservations(0).unwrap().registrations.is_empty());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn corrupt_state_file_refuses_to_start() {
    let dir = temp_dir("corrupt");
    let t = target(Some(&dir));
    let mut a = login(&t, A);
    ok(pr_out(&mut a, REGISTER, 0, &params(0, 1, 0x01)));
    drop((a, t));
    let file = std::fs::read_dir(&dir).unwrap().next().unwrap().unwrap().path();
    let mut text = std::fs::read_to_string(&file).unwrap();
    text = text.replace("generation 1", "generation 2");
    std::fs::write(&file, &text).unwrap();
    let bs = BackstoreConfig::parse("ram:1M,bs=512", "lun").unwrap();
    let e = Target::new(TargetConfig {
        luns: vec![LunConfig::new(0, bs)],
        state_dir: Some(dir.clone()),
        ..TargetConfig::default()
    })
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("checksum mismatch") && e.contains(&*file.to_string_lossy()),
        "{e}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn unwritable_state_changes_nothing() {
    let dir = temp_dir("unwritable");
    let t = target(Some(&dir));
    let mut a = login(&t, A);
    // The state directory becomes unusable while srptd runs.
    std::fs::write(&dir, b"not a directory").unwrap();
    let r = pr_out(&mut a, REGISTER, 0, &params(0, 1, 0x01));
    assert_eq!(
        sense(&r),
        (0x5, 0x55, 0x04),
        "INSUFFICIENT REGISTRATION RESOURCES"
    );
    assert_eq!(&pr_in(&mut a, 0)[..8], &[0; 8], "no registration, generation 0");
    // Without APTPL nothing is written and it works.
    ok(pr_out(&mut a, REGISTER, 0, &params(0, 1, 0)));
    std::fs::remove_file(&dir).unwrap();
}

/// A name, the CDB, its parameter list, the expected sense key/ASC/ASCQ.
type BadCase = (&'static str, [u8; 10], Vec<u8>, (u8, u8, u8));

#[test]
fn malformed_input_gets_its_sense_and_changes_nothing() {
    let t = target(None);
    let mut a = login(&t, A);
    ok(pr_out(&mut a, REGISTER, 0, &params(0, 0xa, 0)));
    let state = t.reservations(0).unwrap();
    let mut cases: Vec<BadCase> = Vec::new();
    // PARAMETER LIST LENGTH 23 (refused before any data moves) and 25.
    cases.push((
        "short list",
        pr_out_cdb(RESERVE, 1, 23),
        params(0xa, 0, 0)[..23].to_vec(),
        (5, 0x1a, 0),
    ));
    let mut long = params(0xa, 0, 0);
    long.push(0);
    cases.push(("long list", pr_out_cdb(RESERVE, 1, 25), long, (5, 0x1a, 0)));
    // SPEC_I_PT with an iSCSI TransportID (protocol identifier 5h).
    let mut iscsi = params(0, 7, 0x08);
    iscsi.extend_from_slice(&24u32.to_be_bytes());
    let mut tid = transport_id(&B);
    tid[0] = 0x05;
    iscsi.extend_from_slice(&tid);
    cases.push((
        "iSCSI TransportID",
        pr_out_cdb(REGISTER, 0, 52),
        iscsi.clone(),
        (5, 0x26, 0),
    ));
    // Format code 01b.
    let mut fmt = iscsi.clone();
    fmt[28] = 0x44;
    cases.push((
        "TransportID format code",
        pr_out_cdb(REGISTER, 0, 52),
        fmt,
        (5, 0x26, 0),
    ));
    // TransportID length disagreeing with the list length.
    let mut tl = iscsi.clone();
    tl[28] = 0x04;
    tl[27] = 20;
    cases.push((
        "TransportID length",
        pr_out_cdb(REGISTER, 0, 52),
        tl,
        (5, 0x1a, 0),
    ));
    // Bad SCOPE, bad TYPE.
    cases.push((
        "scope",
        pr_out_cdb(RESERVE, 0x21, 24),
        params(0xa, 0, 0),
        (5, 0x24, 0),
    ));
    cases.push((
        "type 2",
        pr_out_cdb(RESERVE, 0x02, 24),
        params(0xa, 0, 0),
        (5, 0x24, 0),
    ));
    cases.push((
        "type 9",
        pr_out_cdb(RESERVE, 0x09, 24),
        params(0xa, 0, 0),
        (5, 0x24, 0),
    ));
    // Reserved bits in the list, APTPL without a state directory.
    cases.push((
        "reserved bit",
        pr_out_cdb(REGISTER, 0, 24),
        params(0xa, 3, 0x02),
        (5, 0x26, 0),
    ));
    cases.push((
        "APTPL",
        pr_out_cdb(REGISTER, 0, 24),
        params(0xa, 3, 0x01),
        (5, 0x26, 0),
    ));
    // Unknown service action (REPLACE LOST RESERVATION) and reserved CDB bits.
    let mut sa8 = pr_out_cdb(REGISTER, 0, 24);
    sa8[1] = 0x08;
    cases.push(("service action 8", sa8, params(0xa, 3, 0), (5, 0x24, 0)));
    let mut rsv = pr_out_cdb(REGISTER, 0, 24);
    rsv[3] = 1;
    cases.push(("reserved CDB byte", rsv, params(0xa, 3, 0), (5, 0x24, 0)));
    for (name, cdb, p, want) in cases {
        let len = u32::from_be_bytes([cdb[5], cdb[6], cdb[7], cdb[8]]);
        let out = (len as usize == p.len()).then_some(p.as_slice());
        let (r, _) = a.command(0, &cdb, out, 0, Layout::Direct);
        assert_eq!(sense(&r), want, "{name}");
        assert_eq!(t.reservations(0).unwrap(), state, "{name} changed nothing");
    }
    // Wrong key: RESERVATION CONFLICT, nothing changes.
    let r = pr_out(&mut a, CLEAR, 0, &params(0xbad, 0, 0));
    assert_eq!(r.status, RESERVATION_CONFLICT);
    assert_eq!(t.reservations(0).unwrap(), state);
    // PR IN with an unknown service action.
    let (r, _) = a.command(
        0,
        &[0x5e, 0x04, 0, 0, 0, 0, 0, 0x10, 0, 0],
        None,
        4096,
        Layout::Direct,
    );
    assert_eq!(sense(&r), (5, 0x24, 0));
}

#[test]
fn reserve_release_6_and_10() {
    let t = target(None);
    let mut a = login(&t, A);
    let mut b = login(&t, B);
    ok(a.command(0, &[0x16, 0, 0, 0, 0, 0], None, 0, Layout::Direct).0);
    // B: reads, TEST UNIT READY and PR commands conflict; INQUIRY and
    // RELEASE (which does nothing) do not.
    assert_eq!(
        b.read(0, 0, 512, 512, Layout::Direct).0.status,
        RESERVATION_CONFLICT
    );
    assert_eq!(
        b.command(0, &[0; 6], None, 0, Layout::Direct).0.status,
        RESERVATION_CONFLICT
    );
    let (r, _) = b.command(
        0,
        &[0x5e, 0, 0, 0, 0, 0, 0, 0x10, 0, 0],
        None,
        4096,
        Layout::Direct,
    );
    assert_eq!(r.status, RESERVATION_CONFLICT);
    ok(b.command(0, &[0x12, 0, 0, 0, 96, 0], None, 96, Layout::Direct).0);
    ok(
        b.command(0, &[0x57, 0, 0, 0, 0, 0, 0, 0, 0, 0], None, 0, Layout::Direct)
            .0,
    );
    assert_eq!(
        b.command(0, &[0x56, 0, 0, 0, 0, 0, 0, 0, 0, 0], None, 0, Layout::Direct)
            .0
            .status,
        RESERVATION_CONFLICT
    );
    // SPC-4 5.13.3: PR commands conflict even for the holder.
    let r = pr_out(&mut a, REGISTER, 0, &params(0, 1, 0));
    assert_eq!(r.status, RESERVATION_CONFLICT);
    ok(a.write(0, 0, &pattern(512, 9), 512, Layout::Direct));
    // A's nexus is lost (logout): its reservation ends.
    drop(a);
    ok(b.read(0, 0, 512, 512, Layout::Direct).0);
    // RESERVE(10) by B, LUN RESET releases it.
    ok(
        b.command(0, &[0x56, 0, 0, 0, 0, 0, 0, 0, 0, 0], None, 0, Layout::Direct)
            .0,
    );
    let mut a = login(&t, A);
    assert_eq!(
        a.read(0, 0, 512, 512, Layout::Direct).0.status,
        RESERVATION_CONFLICT
    );
    let tag = b.task_mgmt(0, srptd::wire::TmFunction::LUN_RESET, srptd::wire::Tag(0));
    b.take_response(tag);
    let (r, _) = a.command(0, &[0; 6], None, 0, Layout::Direct);
    assert_eq!(r.sense_key_asc(), Some((0x6, 0x29, 0x03)));
    ok(a.read(0, 0, 512, 512, Layout::Direct).0);
    // With registrations: RESERVE conflicts, RELEASE is GOOD and does nothing.
    ok(pr_out(&mut a, REGISTER, 0, &params(0, 1, 0)));
    ok(pr_out(&mut a, RESERVE, 1, &params(1, 0, 0)));
    let (r, _) = b.command(0, &[0; 6], None, 0, Layout::Direct);
    assert_eq!(r.sense_key_asc(), Some((0x6, 0x29, 0x03)));
    assert_eq!(
        b.command(0, &[0x16, 0, 0, 0, 0, 0], None, 0, Layout::Direct)
            .0
            .status,
        RESERVATION_CONFLICT
    );
    ok(b.command(0, &[0x17, 0, 0, 0, 0, 0], None, 0, Layout::Direct).0);
    ok(a.command(0, &[0x16, 0, 0, 0, 0, 0], None, 0, Layout::Direct).0);
    assert!(
        t.reservations(0).unwrap().scsi2_holder.is_none(),
        "CRH: the PR holder's RESERVE does nothing"
    );
}

#[test]
fn spec_i_pt_and_register_and_move_over_srp() {
    let t = target(None);
    let mut a = login(&t, A);
    let mut b = login(&t, B);
    let mut p = params(0, 0x77, 0x08 | 0x04);
    p.extend_from_slice(&24u32.to_be_bytes());
    p.extend_from_slice(&transport_id(&B));
    ok(pr_out(&mut a, REGISTER, 0, &p));
    let fs = pr_in(&mut a, 3);
    assert_eq!(&fs[4..8], &96u32.to_be_bytes(), "A and B registered");
    assert_eq!(fs[8 + 12] & 0x02, 0x02, "ALL_TG_PT remembered");
    ok(pr_out(&mut a, RESERVE, 1, &params(0x77, 0, 0)));
    // REGISTER AND MOVE the reservation to B with a new key, A unregistered.
    let mut m = params(0x77, 0x88, 0);
    m[17] = 0x02;
    m[18..20].copy_from_slice(&1u16.to_be_bytes());
    m[20..24].copy_from_slice(&24u32.to_be_bytes());
    m.extend_from_slice(&transport_id(&B));
    ok(pr_out(&mut a, 7, 0, &m));
    let rr = pr_in(&mut b, 1);
    assert_eq!(&rr[8..16], &0x88u64.to_be_bytes());
    assert_eq!(
        a.write(0, 0, &pattern(512, 1), 512, Layout::Direct).status,
        RESERVATION_CONFLICT
    );
    ok(b.write(0, 0, &pattern(512, 1), 512, Layout::Direct));
}
