//! Whole SRP sessions against the sans-I/O channel with the simulated
//! initiator: data integrity for every descriptor layout, residuals,
//! credits, task management, logout and protocol errors.

mod common;

use std::sync::Arc;

use common::*;
use srptd::proto::{negotiate, LoginLimits};
use srptd::scsi::lun::Target;
use srptd::wire::{DirectDesc, Rsp, Tag, TmFunction};

const TASK_ABORTED: u8 = 0x40;
const GOOD: u8 = 0;
const CHECK_CONDITION: u8 = 2;
const BUSY: u8 = 8;
const TASK_SET_FULL: u8 = 0x28;

fn ram_target(block: u32, size: u64) -> Arc<Target> {
    target_with(&format!("ram:{size},bs={block}"))
}

fn file_target(block: u32, size: u64) -> (Arc<Target>, std::path::PathBuf) {
    let path = std::env::temp_dir().join(format!(
        "srptd-session-{}-{}-{}.img",
        std::process::id(),
        block,
        rand_suffix()
    ));
    let f = std::fs::File::create(&path).unwrap();
    f.set_len(size).unwrap();
    let t = target_with(&format!("file:{},bs={block}", path.display()));
    (t, path)
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// Clears the power-on unit attention every new nexus reports first.
fn clear_ua(sim: &mut Sim) {
    let (r, _) = sim.command(0, &[0u8; 6], None, 0, Layout::Direct);
    assert_eq!(
        r.status, CHECK_CONDITION,
        "first command reports the power-on unit attention"
    );
    assert_eq!(r.sense_key_asc(), Some((0x6, 0x29, 0x00)));
    let (r, _) = sim.command(0, &[0u8; 6], None, 0, Layout::Direct);
    assert_eq!(r.status, GOOD);
}

fn round_trip(sim: &mut Sim, block: u32, len: u32, layout_w: Layout, layout_r: Layout, seed: u64) {
    let data = pattern(len as usize, seed);
    let lba = seed % 64;
    let r = sim.write(0, lba, &data, block, layout_w);
    assert_eq!(
        (r.status, r.flags),
        (GOOD, 0),
        "write {len} bytes {layout_w:?}: {r:?}"
    );
    let (r, back) = sim.read(0, lba, len, block, layout_r);
    assert_eq!(
        (r.status, r.flags),
        (GOOD, 0),
        "read {len} bytes {layout_r:?}: {r:?}"
    );
    assert!(
        back == data,
        "data read back differs ({len} bytes, {layout_w:?} -> {layout_r:?})"
    );
}

fn layouts_for(len: u32, block: u32) -> Vec<Layout> {
    let mut v = vec![
        Layout::Direct,
        Layout::Indirect(3),
        Layout::External { n: 9, in_iu: 2 },
    ];
    if len >= 64 * block {
        v.push(Layout::Indirect(64));
        v.push(Layout::External { n: 300, in_iu: 0 });
    }
    v
}

#[test]
fn write_read_every_layout_ram_and_file() {
    for block in [512u32, 4096] {
        let ram = ram_target(block, 16 << 20);
        let (file, path) = file_target(block, 16 << 20);
        for (name, t) in [("ram", &ram), ("file", &file)] {
            let mut sim = Sim::login(t, |_| {});
            clear_ua(&mut sim);
            let mut seed = 1;
            for len in [block, 8 * block, 128 << 10, 1 << 20] {
                if len < block {
                    continue;
                }
                for lw in layouts_for(len, block) {
                    for lr in [Layout::Direct, lw] {
                        if lr == Layout::Immediate {
                            continue;
                        }
                        seed += 1;
                        round_trip(&mut sim, block, len, lw, lr, seed);
                    }
                }
                // Immediate data: the Linux initiator uses it for writes up
                // to 8 KiB (it_iu_len 8260 - offset 68).
                if len <= 8192 {
                    seed += 1;
                    round_trip(&mut sim, block, len, Layout::Immediate, Layout::Direct, seed);
                }
            }
            let s = sim.ch.stats();
            assert!(
                s.immediate > 0 && s.external_tables > 0 && s.indirect > 0,
                "{name}: {s:?}"
            );
            if name == "ram" {
                assert!(s.zero_copy > 0, "RAM LUN moves data with zero copies");
            }
            assert_eq!(sim.req_lim, 32, "{name}: every credit returned");
            assert_eq!(sim.ch.in_flight(), 0);
        }
        std::fs::remove_file(path).ok();
    }
}

#[test]
fn data_survives_a_new_login() {
    let t = ram_target(512, 4 << 20);
    let data = pattern(64 << 10, 99);
    {
        let mut sim = Sim::login(&t, |_| {});
        clear_ua(&mut sim);
        assert_eq!(sim.write(0, 100, &data, 512, Layout::Indirect(5)).status, GOOD);
        sim.logout();
        assert!(sim.closed);
    }
    // The nexus ended with its last channel: the new login is a new I_T
    // nexus, which first reports a unit attention (SAM-5 5.14).
    let mut sim = Sim::login(&t, |_| {});
    clear_ua(&mut sim);
    let (r, back) = sim.read(0, 100, 64 << 10, 512, Layout::Direct);
    assert_eq!(r.status, GOOD);
    assert!(back == data);
}

#[test]
fn many_commands_in_flight() {
    let t = ram_target(4096, 16 << 20);
    let (file, path) = file_target(4096, 16 << 20);
    for t in [&t, &file] {
        let mut sim = Sim::login(t, |_| {});
        clear_ua(&mut sim);
        sim.auto_exec = false;
        let mut tags = Vec::new();
        for i in 0..30u64 {
            let data = pattern(16 << 10, i);
            let tag = sim.submit(0, &rw16(0x8a, i * 4, 4), Some(&data), 0, Layout::Indirect(2));
            tags.push(tag);
        }
        // Zero-copy RAM writes finish without executing; file writes wait.
        sim.release_all();
        for tag in tags {
            assert_eq!(sim.take_response(tag).status, GOOD);
        }
        let mut tags = Vec::new();
        for i in 0..30u64 {
            tags.push((
                i,
                sim.submit(
                    0,
                    &rw16(0x88, i * 4, 4),
                    None,
                    16 << 10,
                    Layout::External { n: 4, in_iu: 1 },
                ),
            ));
        }
        sim.release_all();
        for (i, tag) in tags {
            assert_eq!(sim.take_response(tag).status, GOOD);
            assert!(sim.data_in(tag, 16 << 10) == pattern(16 << 10, i));
        }
        assert!(
            sim.max_reads_outstanding <= 4,
            "RDMA READ depth respected: {}",
            sim.max_reads_outstanding
        );
        assert_eq!(sim.req_lim, 32);
    }
    std::fs::remove_file(path).ok();
}

#[test]
fn rdma_read_depth_is_never_exceeded() {
    let t = ram_target(512, 16 << 20);
    for depth in [1u32, 2, 4] {
        let mut sim = Sim::login(&t, |c| c.rdma_read_depth = depth);
        clear_ua(&mut sim);
        let data = pattern(256 << 10, depth as u64);
        // 64 descriptors: 64 RDMA READs, posted at most `depth` at a time.
        let r = sim.write(0, 0, &data, 512, Layout::Indirect(64));
        assert_eq!(r.status, GOOD);
        assert!(
            sim.max_reads_outstanding <= depth,
            "depth {depth}: saw {}",
            sim.max_reads_outstanding
        );
        let (_, back) = sim.read(0, 0, 256 << 10, 512, Layout::Indirect(64));
        assert!(back == data);
    }
}

#[test]
fn small_send_queue_splits_data_in() {
    let t = ram_target(512, 4 << 20);
    // A send queue with room for only a few work requests: a 64-descriptor
    // READ must be split into signaled batches.
    let mut sim = Sim::login(&t, |c| c.sq_depth = 8);
    clear_ua(&mut sim);
    let data = pattern(128 << 10, 5);
    assert_eq!(sim.write(0, 8, &data, 512, Layout::Indirect(64)).status, GOOD);
    let (r, back) = sim.read(0, 8, 128 << 10, 512, Layout::Indirect(64));
    assert_eq!(r.status, GOOD);
    assert!(back == data);
}

#[test]
fn residuals() {
    let t = ram_target(512, 4 << 20);
    let mut sim = Sim::login(&t, |_| {});
    clear_ua(&mut sim);

    // INQUIRY allocation 255 into a 255-byte buffer: the target returns
    // less, so data-in underflow with the difference as residual.
    let (r, data) = sim.command(0, &[0x12, 0, 0, 0, 255, 0], None, 255, Layout::Direct);
    assert_eq!(r.status, GOOD);
    assert_eq!(r.flags, Rsp::DIUNDER);
    let returned = 255 - r.di_res;
    assert!(returned >= 36, "standard INQUIRY data is at least 36 bytes");
    assert_eq!(data.len() as u32, returned);
    assert_eq!(&data[8..13], b"SRPTD");

    // READ of 4 blocks into an 8-block buffer: DIUNDER 2048.
    let (r, _) = sim.command(0, &rw16(0x88, 0, 4), None, 4096, Layout::Direct);
    assert_eq!((r.status, r.flags, r.di_res), (GOOD, Rsp::DIUNDER, 2048));

    // READ of 8 blocks into a 2-block buffer: DIOVER 3072, the first 1024
    // bytes delivered.
    sim.write(0, 0, &pattern(4096, 3), 512, Layout::Direct);
    let tag = sim.submit(0, &rw16(0x88, 0, 8), None, 1024, Layout::Direct);
    let r = sim.take_response(tag);
    assert_eq!((r.status, r.flags, r.di_res), (GOOD, Rsp::DIOVER, 3072));
    assert!(sim.data_in(tag, 1024) == pattern(4096, 3)[..1024]);

    // WRITE whose buffer is shorter than the CDB: refused, nothing written.
    let before = sim.read(0, 40, 2048, 512, Layout::Direct).1;
    let tag = sim.new_tag();
    let iu = sim.build_cmd(
        tag,
        0,
        &rw16(0x8a, 40, 4),
        Some(&pattern(1024, 8)),
        0,
        Layout::Direct,
    );
    sim.send_request(&iu);
    let r = sim.take_response(tag);
    assert_eq!(
        (r.status, r.flags, r.do_res),
        (CHECK_CONDITION, Rsp::DOOVER | Rsp::SNSVALID, 1024)
    );
    assert_eq!(r.sense_key_asc(), Some((0x5, 0x0e, 0x03)));
    assert_eq!(
        sim.read(0, 40, 2048, 512, Layout::Direct).1,
        before,
        "refused write changed nothing"
    );

    // WRITE whose buffer is longer than the CDB: refused too.
    let tag = sim.new_tag();
    let iu = sim.build_cmd(
        tag,
        0,
        &rw16(0x8a, 40, 1),
        Some(&pattern(1024, 8)),
        0,
        Layout::Indirect(2),
    );
    sim.send_request(&iu);
    let r = sim.take_response(tag);
    assert_eq!(
        (r.status, r.flags & !Rsp::SNSVALID, r.do_res),
        (CHECK_CONDITION, Rsp::DOUNDER, 1024)
    );

    // TEST UNIT READY with a data-in buffer: nothing moves, DIUNDER.
    let (r, _) = sim.command(0, &[0u8; 6], None, 512, Layout::Direct);
    assert_eq!((r.status, r.flags, r.di_res), (GOOD, Rsp::DIUNDER, 512));

    // An error before any transfer reports the whole buffer as residual.
    let (r, _) = sim.command(0, &rw16(0x88, 1 << 40, 1), None, 512, Layout::Direct);
    assert_eq!(r.status, CHECK_CONDITION);
    assert_eq!(r.sense_key_asc(), Some((0x5, 0x21, 0x00)));
    assert_eq!((r.flags & Rsp::DIUNDER, r.di_res), (Rsp::DIUNDER, 512));
    assert_eq!(sim.req_lim, 32);
}

#[test]
fn scsi_errors_reach_the_initiator() {
    let t = ram_target(512, 1 << 20);
    let mut sim = Sim::login(&t, |_| {});
    clear_ua(&mut sim);
    // Unsupported opcode.
    let (r, _) = sim.command(0, &[0xee, 0, 0, 0, 0, 0], None, 0, Layout::Direct);
    assert_eq!(
        (r.status, r.sense_key_asc()),
        (CHECK_CONDITION, Some((0x5, 0x20, 0x00)))
    );
    // Unmapped LUN.
    let (r, _) = sim.command(5, &[0u8; 6], None, 0, Layout::Direct);
    assert_eq!(
        (r.status, r.sense_key_asc()),
        (CHECK_CONDITION, Some((0x5, 0x25, 0x00)))
    );
    // INQUIRY to an unmapped LUN: peripheral qualifier 3.
    let (r, d) = sim.command(5, &[0x12, 0, 0, 0, 36, 0], None, 36, Layout::Direct);
    assert_eq!(r.status, GOOD);
    assert_eq!(d[0], 0x7f);
}

#[test]
fn credit_exhaustion_answers_task_set_full() {
    let t = ram_target(512, 1 << 20);
    let mut sim = Sim::login(&t, |_| {});
    clear_ua(&mut sim);
    sim.auto_exec = false;
    // INQUIRY executes (not zero copy), so it can be held.
    let inq = [0x12, 0, 0, 0, 36, 0];
    let mut tags: Vec<Tag> = (0..32)
        .map(|_| sim.submit(0, &inq, None, 36, Layout::Direct))
        .collect();
    assert_eq!(sim.req_lim, 0);
    assert_eq!(sim.ch.credits().in_use(), 32);
    // One beyond the limit lands in a reserved receive buffer.
    let over = sim.submit(0, &inq, None, 36, Layout::Direct);
    let r = sim.take_response(over);
    assert_eq!(r.status, TASK_SET_FULL);
    assert_eq!(r.req_lim_delta, 0, "no credit was consumed, none returned");
    assert_eq!(sim.ch.stats().task_set_full, 1);
    sim.req_lim += 1; // the over-limit request did not really consume one
    sim.release_all();
    for tag in tags.drain(..) {
        assert_eq!(sim.take_response(tag).status, GOOD);
    }
    assert_eq!(sim.req_lim, 32, "all credits back");
    assert_eq!(sim.ch.credits().initiator_limit(), 32);
}

#[test]
fn abort_task_of_a_held_command() {
    let t = ram_target(512, 1 << 20);
    let mut sim = Sim::login(&t, |_| {});
    clear_ua(&mut sim);
    sim.auto_exec = false;
    let victim = sim.submit(0, &[0x12, 0, 0, 0, 36, 0], None, 36, Layout::Direct);
    let other = sim.submit(0, &[0x12, 0, 0, 0, 36, 0], None, 36, Layout::Direct);
    let tmf = sim.task_mgmt(0, TmFunction::ABORT_TASK, victim);
    // The victim is executing: the TMF waits for it.
    assert!(!sim.has_response(tmf));
    sim.release_exec(); // victim finishes executing; no response for it
    let r = sim.take_response(tmf);
    assert_eq!(r.resp_data, vec![0, 0, 0, 0], "TASK MANAGEMENT FUNCTION COMPLETE");
    assert_eq!(r.flags & Rsp::RSPVALID, Rsp::RSPVALID);
    assert!(!sim.has_response(victim), "aborted commands send no response");
    sim.release_exec();
    assert_eq!(sim.take_response(other).status, GOOD);
    assert_eq!(sim.req_lim, 32, "the aborted command's credit came back");
    assert_eq!(sim.ch.stats().io.aborted, 1);
}

/// A second task management function over a command that an earlier one
/// already aborted and that still executes: it too waits for the command to
/// end. Answered at once, it told the initiator the task was gone while its
/// WRITE was still to land, and that WRITE then overwrote data written after
/// the answer (found by the `channel_sim` fuzz target).
#[test]
fn second_task_management_waits_for_a_command_already_aborted() {
    for second in [
        TmFunction::ABORT_TASK,
        TmFunction::ABORT_TASK_SET,
        TmFunction::LUN_RESET,
    ] {
        let t = ram_target(512, 1 << 20);
        let mut sim = Sim::login(&t, |_| {});
        clear_ua(&mut sim);
        sim.auto_exec = false;
        // Immediate data goes through a pool buffer and an execution.
        let old = pattern(1024, 1);
        let victim = sim.submit(0, &rw16(0x8a, 8, 2), Some(&old), 0, Layout::Immediate);
        assert_eq!(sim.held.len(), 1, "the WRITE is executing");
        let first = sim.task_mgmt(0, TmFunction::ABORT_TASK_SET, Tag(0));
        let tmf = sim.task_mgmt(0, second, victim);
        // Like an initiator: wait for the answer, then write anew.
        while !sim.has_response(tmf) {
            sim.release_exec();
        }
        sim.auto_exec = true;
        let new = pattern(1024, 2);
        let mut r = sim.write(0, 8, &new, 512, Layout::Direct);
        if r.status == CHECK_CONDITION && r.sense_key_asc().map(|s| s.0) == Some(6) {
            r = sim.write(0, 8, &new, 512, Layout::Direct);
        }
        assert_eq!(r.status, GOOD);
        sim.release_all();
        let got = sim.read(0, 8, 1024, 512, Layout::Direct).1;
        assert!(
            got == new,
            "{second:?}: the aborted WRITE landed after the answer (old data: {})",
            got == old
        );
        assert_eq!(sim.take_response(first).resp_data, vec![0, 0, 0, 0]);
        assert_eq!(sim.take_response(tmf).resp_data, vec![0, 0, 0, 0]);
        assert_eq!(
            sim.take_response(victim).status,
            TASK_ABORTED,
            "the nexus's own task set function answers it TASK ABORTED"
        );
        assert_eq!(sim.req_lim, 32);
        assert_eq!(sim.ch.in_flight(), 0);
    }
}

/// A function over commands that two earlier functions aborted waits for
/// both; each earlier one answers when its own command ends.
#[test]
fn task_management_waits_for_commands_of_two_earlier_functions() {
    let t = ram_target(512, 1 << 20);
    let mut sim = Sim::login(&t, |_| {});
    clear_ua(&mut sim);
    sim.auto_exec = false;
    let inquiry = [0x12, 0, 0, 0, 36, 0];
    let a = sim.submit(0, &inquiry, None, 36, Layout::Direct);
    let b = sim.submit(0, &inquiry, None, 36, Layout::Direct);
    let ta = sim.task_mgmt(0, TmFunction::ABORT_TASK, a);
    let tb = sim.task_mgmt(0, TmFunction::ABORT_TASK, b);
    let set = sim.task_mgmt(0, TmFunction::ABORT_TASK_SET, Tag(0));
    let again = sim.task_mgmt(0, TmFunction::ABORT_TASK, a);
    assert!(![ta, tb, set, again].iter().any(|&t| sim.has_response(t)));
    sim.release_exec(); // a
    assert_eq!(sim.take_response(ta).resp_data, vec![0, 0, 0, 0]);
    assert!(
        ![tb, set].iter().any(|&t| sim.has_response(t)),
        "b still executes"
    );
    sim.release_exec(); // b
    for t in [tb, set, again] {
        assert_eq!(sim.take_response(t).resp_data, vec![0, 0, 0, 0]);
    }
    assert!(!sim.has_response(a) && !sim.has_response(b));
    assert_eq!(sim.req_lim, 32);
    assert_eq!(sim.ch.in_flight(), 0);
    assert_eq!(sim.ch.stats().io.aborted, 2);
}

#[test]
fn abort_task_racing_its_completion() {
    let t = ram_target(512, 1 << 20);
    let mut sim = Sim::login(&t, |_| {});
    clear_ua(&mut sim);
    // The command completes first; the abort finds nothing and still
    // reports FUNCTION COMPLETE (SAM-5: the task no longer exists).
    let tag = sim.submit(0, &[0x12, 0, 0, 0, 36, 0], None, 36, Layout::Direct);
    assert!(sim.has_response(tag));
    let tmf = sim.task_mgmt(0, TmFunction::ABORT_TASK, tag);
    assert_eq!(sim.take_response(tmf).resp_data, vec![0, 0, 0, 0]);
    assert_eq!(sim.take_response(tag).status, GOOD);
    assert_eq!(sim.req_lim, 32);
}

#[test]
fn abort_task_of_waiting_and_reading_commands() {
    let t = ram_target(512, 4 << 20);
    // A single-request-deep READ queue and a tiny pool make commands wait.
    let mut sim = Sim::login(&t, |c| {
        c.rdma_read_depth = 1;
    });
    clear_ua(&mut sim);
    sim.auto_exec = false;
    let (file, path) = file_target(512, 4 << 20);
    drop(file);
    let data = pattern(8192, 1);
    let held = sim.submit(0, &[0x12, 0, 0, 0, 36, 0], None, 36, Layout::Direct);
    let w = sim.submit(0, &rw16(0x8a, 0, 16), Some(&data), 0, Layout::Indirect(4));
    // The zero-copy write completed (no execution needed).
    assert_eq!(sim.take_response(w).status, GOOD);
    let tmf = sim.task_mgmt(0, TmFunction::ABORT_TASK_SET, Tag(0));
    sim.release_all();
    assert_eq!(sim.take_response(tmf).resp_data, vec![0, 0, 0, 0]);
    assert_eq!(sim.take_response(held).status, TASK_ABORTED);
    assert_eq!(sim.req_lim, 32);
    std::fs::remove_file(path).ok();
}

#[test]
fn lun_reset_sets_unit_attention() {
    let t = ram_target(512, 1 << 20);
    let mut sim = Sim::login(&t, |_| {});
    clear_ua(&mut sim);
    sim.auto_exec = false;
    let held = sim.submit(0, &[0x12, 0, 0, 0, 36, 0], None, 36, Layout::Direct);
    let tmf = sim.task_mgmt(0, TmFunction::LUN_RESET, Tag(0));
    sim.release_all();
    // The aborted task is answered TASK ABORTED before the function.
    let pos = |sim: &Sim, tag| sim.responses.iter().position(|r| r.tag == tag).unwrap();
    assert!(pos(&sim, held) < pos(&sim, tmf));
    assert_eq!(sim.take_response(tmf).resp_data, vec![0, 0, 0, 0]);
    assert_eq!(sim.take_response(held).status, TASK_ABORTED);
    sim.auto_exec = true;
    let (r, _) = sim.command(0, &[0u8; 6], None, 0, Layout::Direct);
    assert_eq!(r.status, CHECK_CONDITION);
    assert_eq!(
        r.sense_key_asc().map(|(k, a, _)| (k, a)),
        Some((0x6, 0x29)),
        "unit attention after reset"
    );
    let (r, _) = sim.command(0, &[0u8; 6], None, 0, Layout::Direct);
    assert_eq!(r.status, GOOD, "reported once");
    // LUN RESET of an unmapped LUN fails.
    let tmf = sim.task_mgmt(7, TmFunction::LUN_RESET, Tag(0));
    assert_eq!(sim.take_response(tmf).resp_data, vec![0, 0, 0, 5]);
}

#[test]
fn clear_task_set_clear_aca_and_unknown_functions() {
    let t = ram_target(512, 1 << 20);
    let mut sim = Sim::login(&t, |_| {});
    clear_ua(&mut sim);
    let tmf = sim.task_mgmt(0, TmFunction::CLEAR_TASK_SET, Tag(0));
    assert_eq!(sim.take_response(tmf).resp_data, vec![0, 0, 0, 0]);
    let tmf = sim.task_mgmt(0, TmFunction::CLEAR_ACA, Tag(0));
    assert_eq!(
        sim.take_response(tmf).resp_data,
        vec![0, 0, 0, 4],
        "no ACA support: not supported"
    );
    let tmf = sim.task_mgmt(0, TmFunction(0x99), Tag(0));
    assert_eq!(sim.take_response(tmf).resp_data, vec![0, 0, 0, 4]);
    assert_eq!(sim.req_lim, 32);
}

#[test]
fn initiator_logout_closes_the_channel() {
    let t = ram_target(512, 1 << 20);
    let mut sim = Sim::login(&t, |_| {});
    sim.logout();
    assert!(sim.disconnect_requested);
    assert!(sim.closed);
    assert!(sim.ch.is_closed());
}

#[test]
fn target_logout_waits_for_commands_then_sends_t_logout() {
    let t = ram_target(512, 1 << 20);
    let mut sim = Sim::login(&t, |_| {});
    clear_ua(&mut sim);
    sim.auto_exec = false;
    let running = sim.submit(0, &[0x12, 0, 0, 0, 36, 0], None, 36, Layout::Direct);
    sim.ch.logout();
    sim.pump();
    // New commands are turned away while shutting down.
    let late = sim.submit(0, &[0u8; 6], None, 0, Layout::Direct);
    assert_eq!(sim.take_response(late).status, BUSY);
    assert!(sim.others.is_empty(), "no SRP_T_LOGOUT while a command runs");
    sim.release_all();
    assert_eq!(sim.take_response(running).status, GOOD);
    assert!(matches!(sim.others.as_slice(), [Other::TLogout(t)] if t.reason == 0));
    assert!(sim.disconnect_requested && sim.closed);
}

#[test]
fn disconnect_with_commands_executing_frees_everything() {
    let t = ram_target(512, 1 << 20);
    let mut sim = Sim::login(&t, |_| {});
    clear_ua(&mut sim);
    sim.auto_exec = false;
    let a = sim.submit(0, &[0x12, 0, 0, 0, 36, 0], None, 36, Layout::Direct);
    let _b = sim.submit(
        0,
        &rw16(0x88, 0, 8),
        None,
        4096,
        Layout::External { n: 4, in_iu: 1 },
    );
    sim.ch.handle_disconnect();
    sim.pump();
    assert!(sim.disconnect_requested);
    assert!(!sim.closed, "a command is still executing on the backstore");
    sim.release_all();
    assert!(sim.closed, "closed once the backstore finished");
    assert!(!sim.has_response(a));
}

/// Receives the queue pair never flushes (rxe may leave some posted during
/// the error transition): the channel still closes, RECV_FLUSH_GRACE after
/// the send queue drained, with the commands on the backstore finished.
#[test]
fn drain_without_receive_flushes_ends_after_the_grace_period() {
    use srptd::proto::RECV_FLUSH_GRACE;
    use std::time::Duration;
    let t = ram_target(512, 1 << 20);
    let mut sim = Sim::login(&t, |_| {});
    clear_ua(&mut sim);
    sim.unflushed_recvs = true;
    sim.auto_exec = false;
    // INQUIRY runs on the backstore (a RAM READ would be zero-copy and
    // answered at once).
    let a = sim.submit(0, &[0x12, 0, 0, 0, 36, 0], None, 36, Layout::Indirect(2));
    assert_eq!(sim.held.len(), 1);
    sim.ch.handle_disconnect();
    sim.pump();
    assert!(sim.disconnect_requested);
    sim.release_all();
    assert!(!sim.closed, "waits for the receives to flush");
    sim.advance(RECV_FLUSH_GRACE - Duration::from_millis(1));
    assert!(!sim.closed, "closed before the grace period ended");
    sim.advance(Duration::from_millis(1));
    assert!(sim.closed, "the grace period ends the drain");
    assert!(!sim.has_response(a), "no response after a disconnect");
}

#[test]
fn bad_rkey_ends_the_channel_cleanly() {
    let t = ram_target(512, 1 << 20);
    let mut sim = Sim::login(&t, |_| {});
    clear_ua(&mut sim);
    let tag = sim.new_tag();
    let mut iu = sim.build_cmd(tag, 0, &rw16(0x8a, 0, 1), Some(&[7u8; 512]), 0, Layout::Direct);
    // Corrupt the R_Key of the direct descriptor (bytes 48+8..48+12).
    iu[56] ^= 0xff;
    sim.send_request(&iu);
    assert!(
        sim.disconnect_requested,
        "a failed RDMA READ breaks the queue pair"
    );
    assert!(sim.closed);
}

#[test]
fn unknown_iu_type_logs_the_initiator_out() {
    let t = ram_target(512, 1 << 20);
    let mut sim = Sim::login(&t, |_| {});
    let mut iu = [0u8; 64];
    iu[0] = 0xc1; // SRP_RSP is a target-to-initiator IU
    sim.send_raw(&iu);
    assert!(matches!(sim.others.as_slice(), [Other::TLogout(t)] if t.reason == 2));
    assert!(sim.disconnect_requested);
}

#[test]
fn malformed_command_gets_check_condition() {
    let t = ram_target(512, 1 << 20);
    let mut sim = Sim::login(&t, |_| {});
    let tag = sim.new_tag();
    let mut iu = sim.build_cmd(tag, 0, &rw16(0x88, 0, 1), None, 512, Layout::Direct);
    iu[5] = 0x0f; // data-in descriptor format 15: reserved
    sim.send_request(&iu);
    let r = sim.take_response(tag);
    assert_eq!(r.status, CHECK_CONDITION);
    assert_eq!(r.sense_key_asc(), Some((0x5, 0x0e, 0x03)));
    assert_eq!(sim.req_lim, 32);
}

/// An external descriptor table (fetched by RDMA READ) whose descriptors
/// add up to another length than the CDB's: answered like the same mismatch
/// in an in-IU table, and nothing of the command stays behind.
#[test]
fn external_table_with_wrong_data_length_is_answered() {
    let t = ram_target(512, 1 << 20);
    let mut sim = Sim::login(&t, |_| {});
    clear_ua(&mut sim);
    let before = sim.read(0, 0, 2048, 512, Layout::Direct).1;
    // (CDB blocks, bytes the table describes, expected flag, residual)
    for (blocks, bytes, flag, res) in [
        (2u16, 512usize, Rsp::DOOVER, 512u32),
        (1, 1024, Rsp::DOUNDER, 1024),
    ] {
        let tag = sim.new_tag();
        let data = pattern(bytes, 5);
        let layout = Layout::External { n: 2, in_iu: 1 };
        let iu = sim.build_cmd(tag, 0, &rw10(0x2a, 0, blocks), Some(&data), 0, layout);
        sim.send_request(&iu);
        assert!(
            sim.has_response(tag),
            "WRITE({blocks} blocks) over a {bytes}-byte external table hung"
        );
        let r = sim.take_response(tag);
        assert_eq!(
            (r.status, r.flags & !Rsp::SNSVALID, r.do_res),
            (CHECK_CONDITION, flag, res)
        );
        assert_eq!(r.sense_key_asc(), Some((0x5, 0x0e, 0x03)));
        assert_eq!(sim.ch.in_flight(), 0, "the refused command still holds a context");
        assert_eq!(sim.req_lim, 32, "its credit came back");
    }
    assert_eq!(
        sim.read(0, 0, 2048, 512, Layout::Direct).1,
        before,
        "nothing was written"
    );
    // The channel still moves data through external tables.
    let data = pattern(1024, 6);
    let r = sim.write(0, 0, &data, 512, Layout::External { n: 2, in_iu: 1 });
    assert_eq!(r.status, GOOD);
    assert_eq!(
        sim.read(0, 0, 1024, 512, Layout::External { n: 2, in_iu: 1 }).1,
        data
    );
}

/// Bytes after an in-IU indirect table: the descriptors are where the
/// header puts them, whatever follows (zeros, or bytes shaped like one more
/// descriptor pointing at other data).
#[test]
fn bytes_after_an_in_iu_table_are_not_descriptors() {
    let t = ram_target(512, 1 << 20);
    let mut sim = Sim::login(&t, |_| {});
    clear_ua(&mut sim);
    for (seed, decoy_desc) in [(11u64, false), (12, true)] {
        let data = pattern(1024, seed);
        let tag = sim.new_tag();
        let mut iu = sim.build_cmd(tag, 0, &rw16(0x8a, 0, 2), Some(&data), 0, Layout::Indirect(2));
        let mut trailer = [0u8; 16];
        if decoy_desc {
            let va = sim.alloc(Arena::DataOut, 512);
            sim.write_remote(va, &pattern(512, 99));
            DirectDesc {
                va,
                rkey: RKEY,
                len: 512,
            }
            .emit(&mut trailer)
            .unwrap();
        }
        iu.extend_from_slice(&trailer);
        sim.send_request(&iu);
        assert!(
            sim.has_response(tag),
            "WRITE with a 16-byte trailer hung (decoy {decoy_desc})"
        );
        assert_eq!(sim.take_response(tag).status, GOOD);
        assert_eq!(
            sim.read(0, 0, 1024, 512, Layout::Direct).1,
            data,
            "decoy {decoy_desc}"
        );
        assert_eq!(sim.ch.in_flight(), 0);
    }
    // The same for data-in: a READ whose table is followed by a decoy.
    let tag = sim.new_tag();
    let mut iu = sim.build_cmd(tag, 0, &rw16(0x88, 0, 2), None, 1024, Layout::Indirect(2));
    let va = sim.alloc(Arena::DataIn, 512);
    let mut trailer = [0u8; 16];
    DirectDesc {
        va,
        rkey: RKEY,
        len: 512,
    }
    .emit(&mut trailer)
    .unwrap();
    iu.extend_from_slice(&trailer);
    sim.send_request(&iu);
    assert_eq!(sim.take_response(tag).status, GOOD);
    assert_eq!(sim.data_in(tag, 1024), pattern(1024, 12));
    assert_eq!(
        sim.read_remote(va, 512),
        vec![0u8; 512],
        "nothing written through the decoy"
    );
}

#[test]
fn login_rejects_reach_the_wire() {
    let t = ram_target(512, 1 << 20);
    let mut req = linux_login(8260);
    req.target_port_id[0] ^= 1;
    let rej = negotiate(
        &req,
        TARGET_PORT,
        &LoginLimits::default(),
        t.login_allowed(&INITIATOR, None),
        0,
    )
    .unwrap_err();
    let mut b = [0u8; 32];
    assert_eq!(rej.emit(&mut b).unwrap(), 32);
    assert_eq!(b[0], 0xc2);
    assert_eq!(
        &b[4..8],
        &[0, 1, 0, 3],
        "UNABLE TO ASSOCIATE RDMA CHANNEL WITH I_T NEXUS"
    );
}

/// Shared receive queue mode: two channels of one nexus receive into one
/// ring. Immediate data written through one channel reads back through the
/// other, slots held by commands in flight come back when they finish, and
/// logout or disconnect return every slot to the ring (none posted twice:
/// the simulator asserts that on every `PostRecv`).
#[test]
fn two_channels_share_a_receive_ring() {
    let t = ram_target(512, 16 << 20);
    // 8260-byte IUs (the Linux initiator with immediate data), 64-aligned.
    let ring = SharedRing::new(100, 8320);
    let mut a = Sim::login_shared(&t, &ring, |_| {});
    let mut b = Sim::login_shared(&t, &ring, |_| {});
    assert_eq!(ring.posted(), 100, "channels post nothing of a shared ring");
    clear_ua(&mut a);
    // The unit attention belongs to the nexus: b sees GOOD (or the rest).
    let (r, _) = b.command(0, &[0u8; 6], None, 0, Layout::Direct);
    assert!(r.status == GOOD || r.status == CHECK_CONDITION);

    // Immediate data both ways, read back through the other channel.
    for (i, len) in [512u32, 4096, 8192].into_iter().enumerate() {
        let data = pattern(len as usize, 70 + i as u64);
        let lba = 16 * i as u64;
        assert_eq!(a.write(0, lba, &data, 512, Layout::Immediate).status, GOOD);
        let (r, back) = b.read(0, lba, len, 512, Layout::Direct);
        assert_eq!(r.status, GOOD);
        assert!(back == data, "{len} bytes written through a, read through b");
        let data = pattern(len as usize, 80 + i as u64);
        assert_eq!(b.write(0, lba + 100, &data, 512, Layout::Immediate).status, GOOD);
        let (_, back) = a.read(0, lba + 100, len, 512, Layout::Indirect(3));
        assert!(back == data, "{len} bytes written through b, read through a");
    }
    assert!(a.ch.stats().immediate >= 3 && b.ch.stats().immediate >= 3);

    // Commands in flight on both channels hold slots of the one ring.
    a.auto_exec = false;
    b.auto_exec = false;
    let mut tags = Vec::new();
    for i in 0..20u64 {
        let data = pattern(4096, 200 + i);
        tags.push((
            0,
            i,
            a.submit(0, &rw16(0x8a, 300 + i * 8, 8), Some(&data), 0, Layout::Immediate),
        ));
        let data = pattern(4096, 300 + i);
        tags.push((
            1,
            i,
            b.submit(0, &rw16(0x8a, 600 + i * 8, 8), Some(&data), 0, Layout::Immediate),
        ));
    }
    assert_eq!(ring.posted(), 100 - 40, "each executing command holds its slot");
    a.release_all();
    b.release_all();
    for (which, _, tag) in &tags {
        let sim = if *which == 0 { &mut a } else { &mut b };
        assert_eq!(sim.take_response(*tag).status, GOOD);
    }
    assert!(ring.all_posted());
    a.auto_exec = true;
    b.auto_exec = true;
    for i in 0..20u64 {
        let (_, back) = b.read(0, 300 + i * 8, 4096, 512, Layout::Direct);
        assert!(back == pattern(4096, 200 + i));
        let (_, back) = a.read(0, 600 + i * 8, 4096, 512, Layout::Direct);
        assert!(back == pattern(4096, 300 + i));
    }
    assert_eq!((a.req_lim, b.req_lim), (32, 32), "credits stay per channel");

    // Initiator logout of a: its slots are all back, b carries on.
    a.logout();
    assert!(a.closed);
    assert!(ring.all_posted());
    round_trip(&mut b, 512, 8192, Layout::Immediate, Layout::Direct, 5);

    // Disconnect of b with commands executing: drained contexts give their
    // slots back at once, executing ones when the backstore finishes; an
    // IU that still lands for the closing channel goes back as well.
    b.auto_exec = false;
    for i in 0..5u64 {
        let data = pattern(2048, 400 + i);
        b.submit(0, &rw16(0x8a, 900 + i * 4, 4), Some(&data), 0, Layout::Immediate);
    }
    b.ch.handle_disconnect();
    b.pump();
    assert!(!b.closed);
    assert_eq!(ring.posted(), 95);
    let data = pattern(1024, 9);
    let tag = b.new_tag();
    let iu = b.build_cmd(tag, 0, &rw16(0x8a, 0, 2), Some(&data), 0, Layout::Immediate);
    b.send_raw(&iu);
    assert_eq!(ring.posted(), 95, "the late IU's slot went back");
    b.release_all();
    assert!(b.closed);
    assert!(ring.all_posted());
}
