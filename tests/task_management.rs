//! Task management across channels and I_T nexuses (SAM-5 7,
//! `docs/task-management.md`): simulated initiators on one target, with
//! tasks held on the backstore while a function from another channel
//! aborts them.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use common::*;
use srptd::proto::TASK_SET_POLL;
use srptd::scsi::backstore::BackstoreConfig;
use srptd::scsi::lun::{Access, LunConfig, Target, TargetConfig};
use srptd::wire::{Rsp, Tag, TmFunction};

const GOOD: u8 = 0x00;
const TASK_ABORTED: u8 = 0x40;
const A: [u8; 16] = [0xa1; 16];
const B: [u8; 16] = [0xb2; 16];
const TUR: [u8; 6] = [0; 6];

/// One target with RAM LUNs 0 and 1 (512-byte blocks).
fn target() -> Arc<Target> {
    let lun = |n| LunConfig::new(n, BackstoreConfig::parse("ram:1M,bs=512", "lun").unwrap());
    Target::new(TargetConfig {
        luns: vec![lun(0), lun(1)],
        ..TargetConfig::default()
    })
    .unwrap()
}

/// A channel of initiator port `ini` (a second one of the same port is the
/// same I_T nexus); its pending unit attentions are consumed.
fn login(t: &Arc<Target>, ini: [u8; 16]) -> Sim {
    let mut s = Sim::login_as(t, ini, 32);
    clear_ua(&mut s);
    s
}

fn clear_ua(s: &mut Sim) {
    for lun in [0, 1] {
        while s.command(lun, &TUR, None, 0, Layout::Direct).0.status != GOOD {}
    }
}

/// A WRITE of one block that fetches its data and then waits, held, to
/// run on the backstore (immediate data goes through an execution).
fn held_write(s: &mut Sim, lun: u16, lba: u64, seed: u64) -> Tag {
    s.auto_exec = false;
    let before = s.held.len();
    let tag = s.submit(
        lun,
        &rw16(0x8a, lba, 1),
        Some(&pattern(512, seed)),
        0,
        Layout::Immediate,
    );
    assert_eq!(s.held.len(), before + 1, "the WRITE waits on the backstore");
    tag
}

fn function_complete(s: &mut Sim, tmf: Tag) {
    let r = s.take_response(tmf);
    assert_eq!(r.flags & Rsp::RSPVALID, Rsp::RSPVALID);
    assert_eq!(r.resp_data, vec![0, 0, 0, 0], "TASK MANAGEMENT FUNCTION COMPLETE");
}

/// The next TEST UNIT READY on `lun` reports BUS DEVICE RESET FUNCTION
/// OCCURRED (29h/03h), the unit attention a reset leaves.
fn assert_reset_ua(s: &mut Sim, lun: u16, why: &str) {
    let (r, _) = s.command(lun, &TUR, None, 0, Layout::Direct);
    assert_eq!(r.sense_key_asc(), Some((0x6, 0x29, 0x03)), "{why}");
}

fn read_block(s: &mut Sim, lun: u16, lba: u64) -> Vec<u8> {
    let (r, d) = s.read(lun, lba, 512, 512, Layout::Direct);
    assert_eq!(r.status, GOOD, "{:?}", r.sense_key_asc());
    d
}

#[test]
fn lun_reset_waits_for_the_tasks_of_every_channel_and_nexus() {
    let t = target();
    let mut a1 = login(&t, A);
    let mut a2 = login(&t, A); // the same I_T nexus on a second channel
    let mut b = login(&t, B);
    let wa = held_write(&mut a2, 0, 8, 1);
    let wb = held_write(&mut b, 0, 16, 2);
    let other_lun = held_write(&mut b, 1, 16, 3);

    let tmf = a1.task_mgmt(0, TmFunction::LUN_RESET, Tag(0));
    assert!(!a1.has_response(tmf), "A's second channel and B still hold tasks");
    a1.advance(TASK_SET_POLL);
    assert!(!a1.has_response(tmf));
    // B's held tasks reach the backstore: the one on LUN 0 is aborted and
    // writes nothing; the one on LUN 1 is not covered and completes.
    b.release_all();
    assert!(!b.has_response(wb), "an aborted task gets no response (TAS = 0)");
    assert_eq!(b.take_response(other_lun).status, GOOD);
    a1.advance(TASK_SET_POLL);
    assert!(!a1.has_response(tmf), "A's second channel still holds one");
    a2.release_all();
    assert_eq!(
        a2.take_response(wa).status,
        TASK_ABORTED,
        "A's own task: answered, so the initiator retries it"
    );
    a1.advance(TASK_SET_POLL);
    function_complete(&mut a1, tmf);

    // Nothing aborted landed; the task on the other LUN did.
    a1.auto_exec = true;
    assert_reset_ua(&mut a1, 0, "BUS DEVICE RESET FUNCTION OCCURRED");
    assert_eq!(read_block(&mut a1, 0, 8), vec![0; 512]);
    assert_eq!(read_block(&mut a1, 0, 16), vec![0; 512]);
    assert_eq!(read_block(&mut a1, 1, 16), pattern(512, 3));
    b.auto_exec = true;
    assert_reset_ua(&mut b, 0, "B is told of the reset");
    assert_eq!(b.ch.stats().io.aborted, 1);
    assert_eq!(a2.ch.stats().io.aborted, 1);
    // The aborted tasks' credits came back (SRP_CRED_REQ).
    assert_eq!(b.req_lim, 32);
    assert_eq!(a2.req_lim, 32);
    // New tasks run normally.
    assert_eq!(b.write(0, 16, &pattern(512, 9), 512, Layout::Direct).status, GOOD);
    assert_eq!(read_block(&mut a1, 0, 16), pattern(512, 9));
}

#[test]
fn lun_reset_with_idle_channels_answers_at_once() {
    let t = target();
    let mut a = login(&t, A);
    let _b = login(&t, B);
    let _a2 = login(&t, A);
    a.auto_exec = false;
    let tmf = a.task_mgmt(0, TmFunction::LUN_RESET, Tag(0));
    function_complete(&mut a, tmf);
}

#[test]
fn a_task_after_the_reset_is_a_new_task() {
    let t = target();
    let mut a = login(&t, A);
    let mut b = login(&t, B);
    b.auto_exec = false;
    let mut iu = Vec::new();
    let tag = b.new_tag();
    iu.extend(b.build_cmd(
        tag,
        0,
        &rw16(0x8a, 4, 1),
        Some(&pattern(512, 5)),
        0,
        Layout::Direct,
    ));
    let tmf = a.task_mgmt(0, TmFunction::LUN_RESET, Tag(0));
    function_complete(&mut a, tmf); // B held nothing yet
    b.send_request(&iu);
    b.release_all();
    // Planned after the reset: it is a new task and runs.
    assert_eq!(
        b.take_response(tag).status,
        0x02,
        "the reset's unit attention comes first"
    );
}

#[test]
fn abort_task_set_reaches_the_nexus_s_other_channels_only() {
    let t = target();
    let mut a1 = login(&t, A);
    let mut a2 = login(&t, A);
    let mut b = login(&t, B);
    let wa = held_write(&mut a2, 0, 8, 1);
    let wb = held_write(&mut b, 0, 16, 2);
    let tmf = a1.task_mgmt(0, TmFunction::ABORT_TASK_SET, Tag(0));
    assert!(!a1.has_response(tmf));
    a2.release_all();
    assert_eq!(a2.take_response(wa).status, TASK_ABORTED);
    a1.advance(TASK_SET_POLL);
    // B's task is another nexus's (SAM-5 7.3): not aborted, not waited
    // for once B's channel has looked.
    b.release_all();
    assert_eq!(b.take_response(wb).status, GOOD);
    a1.advance(TASK_SET_POLL);
    function_complete(&mut a1, tmf);
    assert_eq!(read_block(&mut b, 0, 16), pattern(512, 2));
    assert_eq!(read_block(&mut b, 0, 8), vec![0; 512]);
}

#[test]
fn clear_task_set_clears_every_nexus_s_tasks_with_tst_000b() {
    let t = target();
    let mut a = login(&t, A);
    let mut b = login(&t, B);
    let wb = held_write(&mut b, 0, 16, 2);
    let tmf = a.task_mgmt(0, TmFunction::CLEAR_TASK_SET, Tag(0));
    assert!(!a.has_response(tmf));
    b.release_all();
    assert!(!b.has_response(wb));
    a.advance(TASK_SET_POLL);
    function_complete(&mut a, tmf);
    b.auto_exec = true;
    let (r, _) = b.command(0, &TUR, None, 0, Layout::Direct);
    assert_eq!(
        r.sense_key_asc(),
        Some((0x6, 0x2f, 0x00)),
        "COMMANDS CLEARED BY ANOTHER INITIATOR"
    );
    let (r, _) = a.command(0, &TUR, None, 0, Layout::Direct);
    assert_eq!(r.status, GOOD, "no unit attention for the nexus that cleared");
    assert_eq!(read_block(&mut a, 0, 16), vec![0; 512]);
}

#[test]
fn preempt_and_abort_waits_for_the_preempted_tasks_on_every_channel() {
    let t = target();
    let mut a = login(&t, A);
    let mut b1 = login(&t, B);
    let mut b2 = login(&t, B);
    let pr_out = |s: &mut Sim, sa: u8, rtype: u8, key: u64, sa_key: u64| {
        let mut p = vec![0u8; 24];
        p[..8].copy_from_slice(&key.to_be_bytes());
        p[8..16].copy_from_slice(&sa_key.to_be_bytes());
        let mut c = [0u8; 10];
        c[0] = 0x5f;
        c[1] = sa;
        c[2] = rtype;
        c[8] = 24;
        s.submit(0, &c, Some(&p), 0, Layout::Direct)
    };
    for (s, key) in [(&mut a, 0xa), (&mut b1, 0xb)] {
        let tag = pr_out(s, 0, 0, 0, key);
        assert_eq!(s.take_response(tag).status, GOOD);
    }
    let w1 = held_write(&mut b1, 0, 8, 1);
    let w2 = held_write(&mut b2, 0, 16, 2);
    // PREEMPT AND ABORT, Exclusive Access.
    let tag = pr_out(&mut a, 5, 3, 0xa, 0xb);
    assert!(!a.has_response(tag), "B's tasks are still on the backstore");
    b1.release_all();
    a.advance(TASK_SET_POLL);
    assert!(!a.has_response(tag), "B's second channel still holds one");
    b2.release_all();
    a.advance(TASK_SET_POLL);
    assert_eq!(a.take_response(tag).status, GOOD);
    assert!(!b1.has_response(w1) && !b2.has_response(w2));
    assert_eq!(read_block(&mut a, 0, 8), vec![0; 512]);
    assert_eq!(read_block(&mut a, 0, 16), vec![0; 512]);
}

#[test]
fn a_reset_on_each_of_two_channels_does_not_deadlock() {
    let t = target();
    let mut a = login(&t, A);
    let mut b = login(&t, B);
    let wa = held_write(&mut a, 0, 8, 1);
    let wb = held_write(&mut b, 0, 16, 2);
    let ta = a.task_mgmt(0, TmFunction::LUN_RESET, Tag(0));
    let tb = b.task_mgmt(0, TmFunction::LUN_RESET, Tag(0));
    a.release_all();
    b.release_all();
    for _ in 0..3 {
        a.advance(TASK_SET_POLL);
        b.advance(TASK_SET_POLL);
    }
    function_complete(&mut a, ta);
    function_complete(&mut b, tb);
    // Each nexus's task is aborted by its own reset (answered) and by the
    // other's (no response): answered once.
    assert_eq!(a.take_response(wa).status, TASK_ABORTED);
    assert_eq!(b.take_response(wb).status, TASK_ABORTED);
}

/// What `sg_reset -d` under fio showed (Linux 6.1, ib_srp): after a
/// successful LOGICAL UNIT RESET the initiator does not complete the LUN's
/// outstanding requests itself (outside SCSI error recovery), so tasks
/// aborted without a response waited for the 30 s SCSI timeout and ABORT
/// TASK. The issuing nexus's aborted tasks, on every channel, in every
/// state, are answered TASK ABORTED before the function; another nexus's
/// get none (TAS = 0); credits come back; later tasks run at once.
#[test]
fn lun_reset_answers_the_issuing_nexus_s_aborted_tasks_before_itself() {
    let t = target();
    let mut a1 = login(&t, A);
    let mut a2 = login(&t, A);
    let mut b = login(&t, B);
    let executing = held_write(&mut a1, 0, 8, 1);
    let queued = held_write(&mut a1, 0, 9, 2); // also on the backstore
    let other = held_write(&mut a2, 0, 10, 3);
    let wb = held_write(&mut b, 0, 11, 4);
    let tmf = a1.task_mgmt(0, TmFunction::LUN_RESET, Tag(0));
    assert!(!a1.has_response(tmf));
    a1.release_all();
    a2.release_all();
    b.release_all();
    for _ in 0..3 {
        a1.advance(TASK_SET_POLL);
    }
    let pos = |s: &Sim, tag| s.responses.iter().position(|r| r.tag == tag);
    let at = pos(&a1, tmf).expect("the reset is answered");
    for w in [executing, queued] {
        assert!(pos(&a1, w).expect("answered") < at, "answered before the reset");
        assert_eq!(a1.take_response(w).status, TASK_ABORTED);
    }
    function_complete(&mut a1, tmf);
    assert_eq!(a2.take_response(other).status, TASK_ABORTED);
    assert!(!b.has_response(wb), "another nexus's task: no response (TAS = 0)");
    for s in [&a1, &a2, &b] {
        assert_eq!(s.req_lim, 32, "credits came back");
        assert_eq!(s.ch.in_flight(), 0);
    }
    // Nothing aborted landed; new tasks on both channels run at once.
    a1.auto_exec = true;
    a2.auto_exec = true;
    let (r, _) = a1.command(0, &TUR, None, 0, Layout::Direct);
    assert_eq!(r.sense_key_asc(), Some((0x6, 0x29, 0x03)), "once per nexus");
    for lba in 8..12 {
        assert_eq!(read_block(&mut a1, 0, lba), vec![0; 512]);
    }
    assert_eq!(
        a1.write(0, 8, &pattern(512, 5), 512, Layout::Immediate).status,
        GOOD
    );
    assert_eq!(
        a2.write(0, 9, &pattern(512, 6), 512, Layout::Immediate).status,
        GOOD
    );
    assert_eq!(read_block(&mut a2, 0, 8), pattern(512, 5));
    // A channel that joins after the reset (a re-login) is not touched by
    // it, and a second reset there answers its tasks the same way.
    drop(a2);
    let mut a3 = login(&t, A);
    assert_eq!(
        a3.write(0, 10, &pattern(512, 7), 512, Layout::Immediate).status,
        GOOD
    );
    let w3 = held_write(&mut a3, 0, 12, 8);
    let tmf = a1.task_mgmt(0, TmFunction::LUN_RESET, Tag(0));
    a3.release_all();
    a1.advance(TASK_SET_POLL);
    function_complete(&mut a1, tmf);
    assert_eq!(a3.take_response(w3).status, TASK_ABORTED);
    assert_eq!(a3.req_lim, 32);
}

/// Sends a one-block WRITE with task attribute `attr` (SRP_CMD byte 29).
fn write_with_attr(s: &mut Sim, lba: u64, seed: u64, attr: u8) -> Tag {
    let tag = s.new_tag();
    let mut iu = s.build_cmd(
        tag,
        0,
        &rw16(0x8a, lba, 1),
        Some(&pattern(512, seed)),
        0,
        Layout::Immediate,
    );
    iu[29] = attr;
    s.send_request(&iu);
    tag
}

#[test]
fn ordered_tasks_wait_for_earlier_ones_and_hold_later_simple_ones() {
    const SIMPLE: u8 = 0;
    const HEAD_OF_QUEUE: u8 = 1;
    const ORDERED: u8 = 2;
    let t = target();
    let mut s = login(&t, A);
    s.auto_exec = false;
    let w1 = write_with_attr(&mut s, 1, 1, SIMPLE);
    let w2 = write_with_attr(&mut s, 1, 2, ORDERED);
    let w3 = write_with_attr(&mut s, 1, 3, SIMPLE);
    assert_eq!(
        s.held.len(),
        1,
        "the ORDERED task and the one after it are dormant"
    );
    let hq = write_with_attr(&mut s, 2, 4, HEAD_OF_QUEUE);
    assert_eq!(s.held.len(), 2, "HEAD OF QUEUE is enabled at once");
    s.release_nth(1);
    assert_eq!(s.take_response(hq).status, GOOD);
    assert_eq!(s.held.len(), 1, "the ORDERED task still waits for the first");
    s.release_exec();
    assert_eq!(s.take_response(w1).status, GOOD);
    assert_eq!(s.held.len(), 1, "now the ORDERED one runs, alone");
    assert!(!s.has_response(w3));
    s.release_exec();
    assert_eq!(s.take_response(w2).status, GOOD);
    assert_eq!(s.held.len(), 1, "and then the SIMPLE one after it");
    s.release_exec();
    assert_eq!(s.take_response(w3).status, GOOD);
    assert_eq!(
        read_block_held(&mut s, 1),
        pattern(512, 3),
        "writes landed in order"
    );
    // ACA (NACA is not supported) and reserved attributes.
    for attr in [4, 3, 7] {
        let tag = write_with_attr(&mut s, 5, 5, attr);
        let r = s.take_response(tag);
        assert_eq!(r.sense_key_asc(), Some((0x5, 0x0e, 0x03)), "attribute {attr}");
    }
    assert_eq!(read_block_held(&mut s, 5), vec![0; 512]);
}

fn read_block_held(s: &mut Sim, lba: u64) -> Vec<u8> {
    s.auto_exec = true;
    let d = read_block(s, 0, lba);
    s.auto_exec = false;
    d
}

/// A task and a function may address one logical unit in two ways (LUN 0
/// as peripheral 0000h or flat space 4000h, SAM-5 4.7.7): the function's
/// own channel aborts the task like the other channels do, before it
/// answers. (It compared the LUN's bytes, so the function answered at
/// once; the channel then aborted the task for its own published abort,
/// which decodes the LUN, and answered it TASK ABORTED after the function.
/// channel_chaos finding.)
#[test]
fn a_function_covers_its_logical_unit_however_the_lun_is_addressed() {
    let t = target();
    let mut a = login(&t, A);
    a.auto_exec = false;
    let flat = a.new_tag();
    let mut iu = a.build_cmd(
        flat,
        0,
        &rw16(0x8a, 8, 1),
        Some(&pattern(512, 1)),
        0,
        Layout::Immediate,
    );
    iu[20..28].copy_from_slice(&[0x40, 0, 0, 0, 0, 0, 0, 0]);
    a.send_request(&iu);
    let other_lun = held_write(&mut a, 1, 8, 2);
    assert_eq!(a.held.len(), 2);

    let tmf = a.task_mgmt(0, TmFunction::LUN_RESET, Tag(0));
    assert!(!a.has_response(tmf), "the reset waits for the task it aborts");
    a.release_all();
    let order: Vec<Tag> = a.responses.iter().map(|r| r.tag).collect();
    let pos = |t: Tag| order.iter().position(|&x| x == t).expect("answered");
    assert!(
        pos(flat) < pos(tmf),
        "the aborted task is answered first: {order:?}"
    );
    assert_eq!(a.take_response(flat).status, TASK_ABORTED);
    function_complete(&mut a, tmf);
    assert_eq!(a.take_response(other_lun).status, GOOD);
    assert!(a.responses.is_empty(), "{:?}", a.responses);

    a.auto_exec = true;
    clear_ua(&mut a);
    assert_eq!(
        read_block(&mut a, 0, 8),
        vec![0; 512],
        "the aborted WRITE wrote nothing"
    );
    assert_eq!(read_block(&mut a, 1, 8), pattern(512, 2));

    // ABORT TASK names the task by LUN and tag, however addressed.
    a.auto_exec = false;
    let tag = a.new_tag();
    let mut iu = a.build_cmd(
        tag,
        0,
        &rw16(0x8a, 9, 1),
        Some(&pattern(512, 3)),
        0,
        Layout::Immediate,
    );
    iu[20..28].copy_from_slice(&[0x40, 0, 0, 0, 0, 0, 0, 0]);
    a.send_request(&iu);
    let abort = a.task_mgmt(0, TmFunction::ABORT_TASK, tag);
    a.release_all();
    function_complete(&mut a, abort);
    assert!(!a.has_response(tag), "ABORT TASK's task gets no response");
}

#[test]
fn a_function_on_a_mapped_lun_reaches_that_lun_through_every_nexus() {
    // The table's LUN 1 is B's LUN 0 (an ACL's mapping); LUN 0 is A's only.
    let lun = |n| LunConfig::new(n, BackstoreConfig::parse("ram:1M,bs=512", "lun").unwrap());
    let (mut l0, mut l1) = (lun(0), lun(1));
    l0.access = Some(Access::Only(HashSet::from([A])));
    l1.access = Some(Access::Only(HashSet::from([A, B])));
    l1.mapped_as = BTreeMap::from([(B, 0)]);
    let t = Target::new(TargetConfig {
        luns: vec![l0, l1],
        ..TargetConfig::default()
    })
    .unwrap();
    let mut a = login(&t, A);
    let mut b = Sim::login_as(&t, B, 32);
    while b.command(0, &TUR, None, 0, Layout::Direct).0.status != GOOD {}
    let on_1 = held_write(&mut a, 1, 8, 1);
    let on_0 = held_write(&mut a, 0, 8, 2);
    let tmf = b.task_mgmt(0, TmFunction::LUN_RESET, Tag(0));
    assert!(!b.has_response(tmf), "A holds a task of the table's LUN 1");
    a.release_all();
    assert!(!a.has_response(on_1), "aborted: no response (TAS = 0)");
    assert_eq!(a.take_response(on_0).status, GOOD, "LUN 0 is not B's LUN 0");
    b.advance(TASK_SET_POLL);
    function_complete(&mut b, tmf);
    a.auto_exec = true;
    assert_reset_ua(&mut a, 1, "the reset, on A's LUN 1");
    assert_eq!(read_block(&mut a, 1, 8), vec![0; 512]);
    assert_eq!(read_block(&mut a, 0, 8), pattern(512, 2));
    // B's commands count for the table's LUN 1.
    assert!(b.ch.lun_stats().get(1).is_some_and(|s| s.commands >= 1));
    assert!(b.ch.lun_stats().get(0).is_none());
}

#[test]
fn a_function_under_a_changed_mapping_reaches_tasks_planned_under_the_old_one() {
    // The table's LUN 1 is B's LUN 0, then (mapping changed while B's
    // WRITE waits) B's LUN 5: a LUN RESET B sends to its LUN 5 is for the
    // same logical unit and aborts that WRITE on B's own channel too.
    let t = Target::new(lun_1_for_b_as(0)).unwrap();
    let mut b = Sim::login_as(&t, B, 32);
    while b.command(0, &TUR, None, 0, Layout::Direct).0.status != GOOD {}
    let w = held_write(&mut b, 0, 8, 4);
    t.apply(&lun_1_for_b_as(5)).unwrap();
    let tmf = b.task_mgmt(5, TmFunction::LUN_RESET, Tag(0));
    b.release_all();
    b.advance(TASK_SET_POLL);
    let r = b.take_response(w);
    assert_eq!(
        r.status, TASK_ABORTED,
        "the WRITE planned under LUN 0 is LUN 5's task"
    );
    function_complete(&mut b, tmf);
    b.auto_exec = true;
    while b.command(5, &TUR, None, 0, Layout::Direct).0.status != GOOD {}
    assert_eq!(
        read_block(&mut b, 5, 8),
        vec![0; 512],
        "the aborted WRITE wrote nothing"
    );
}

#[test]
fn abort_task_under_a_changed_mapping_finds_the_task() {
    // As above, with ABORT TASK: the task is named by tag and logical
    // unit (SAM-5 7.2), whatever number the mapping gave the unit when
    // the task was planned.
    let t = Target::new(lun_1_for_b_as(0)).unwrap();
    let mut b = Sim::login_as(&t, B, 32);
    while b.command(0, &TUR, None, 0, Layout::Direct).0.status != GOOD {}
    let w = held_write(&mut b, 0, 8, 4);
    t.apply(&lun_1_for_b_as(5)).unwrap();
    let tmf = b.task_mgmt(5, TmFunction::ABORT_TASK, w);
    b.release_all();
    function_complete(&mut b, tmf);
    assert!(!b.has_response(w), "ABORT TASK's task gets no response");
    b.auto_exec = true;
    while b.command(5, &TUR, None, 0, Layout::Direct).0.status != GOOD {}
    assert_eq!(
        read_block(&mut b, 5, 8),
        vec![0; 512],
        "the aborted WRITE wrote nothing"
    );
}

/// The table's LUN 1, seen by initiator B only, as its LUN `mapped`.
fn lun_1_for_b_as(mapped: u16) -> TargetConfig {
    let mut l1 = LunConfig::new(1, BackstoreConfig::parse("ram:1M,bs=512", "lun").unwrap());
    l1.access = Some(Access::Only(HashSet::from([B])));
    l1.mapped_as = BTreeMap::from([(B, mapped)]);
    TargetConfig {
        luns: vec![l1],
        ..TargetConfig::default()
    }
}
