//! File LUNs on the io_uring engine, through whole SRP channels: the
//! simulated initiator's write/read/UNMAP/WRITE SAME/FUA/SYNCHRONIZE CACHE
//! suite with the engine doing the reads, writes and flushes as a poller
//! does (the rest on the blocking path), and aborts of commands whose
//! operation is in flight.

mod common;

use std::os::unix::fs::OpenOptionsExt;
use std::sync::Arc;

use common::suite::*;
use common::*;
use srptd::scsi::lun::Target;
use srptd::wire::{Rsp, TmFunction};

const CHECK_CONDITION: u8 = 0x02;

struct TempPath(std::path::PathBuf);
impl Drop for TempPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn file_target(test: &str, block: u32, size: u64) -> (Arc<Target>, TempPath) {
    file_target_with(test, block, size, "")
}

/// A file LUN with the spec options `opts` (`,buffered`).
fn file_target_with(test: &str, block: u32, size: u64, opts: &str) -> (Arc<Target>, TempPath) {
    let path =
        TempPath(std::env::temp_dir().join(format!("srptd-uring-{}-{test}-{block}.img", std::process::id())));
    std::fs::File::create(&path.0).unwrap().set_len(size).unwrap();
    (
        target_with(&format!("file:{},bs={block}{opts}", path.0.display())),
        path,
    )
}

/// A logged-in channel on the engine with the power-on unit attention
/// taken; `None` where io_uring is unavailable (the test then passes
/// vacuously, saying so).
fn login(t: &Arc<Target>) -> Option<Sim> {
    let mut s = Sim::login(t, |_| {});
    if !s.use_io_uring() {
        return None;
    }
    let (r, _) = s.command(0, &[0; 6], None, 0, Layout::Direct);
    assert_eq!(r.status, CHECK_CONDITION);
    Some(s)
}

fn commands(s: &Sim) -> u64 {
    s.aio.as_ref().map_or(0, |a| a.counts().commands)
}

#[test]
fn write_read_fua_and_sync_go_through_the_ring() {
    for block in [512u32, 4096] {
        let (t, _p) = file_target("rw", block, 8 << 20);
        let Some(mut s) = login(&t) else { return };
        write_read_every_layout(&mut s, block, 0);
        fua_write_and_sync(&mut s, block);
        assert!(commands(&s) >= 36, "the ring ran them: {}", commands(&s));
        let direct = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECT)
            .open(&_p.0)
            .is_ok();
        if direct {
            let bounced = s.aio.as_ref().unwrap().counts().bounced;
            assert!(
                bounced >= 4,
                "immediate data is copied to an aligned chunk: {bounced}"
            );
            // Never beside direct I/O in the page cache (`direct_io.rs`).
            let f = std::fs::File::open(&_p.0).unwrap();
            let cached = srptd::os::cached_pages(std::os::fd::AsFd::as_fd(&f), 8 << 20).unwrap();
            assert_eq!(cached, 0, "pages of an O_DIRECT LUN in the page cache");
        }
    }
}

#[test]
fn a_buffered_file_serves_the_suite_through_the_page_cache() {
    for block in [512u32, 4096] {
        let (t, _p) = file_target_with("buffered", block, 8 << 20, ",buffered");
        let Some(mut s) = login(&t) else { return };
        write_read_every_layout(&mut s, block, 0);
        fua_write_and_sync(&mut s, block);
        let c = s.aio.as_ref().unwrap().counts();
        assert!(c.commands >= 36, "the ring ran them: {}", c.commands);
        assert_eq!(c.bounced, 0, "buffered I/O takes any alignment");
    }
}

#[test]
fn unmap_and_write_same_agree_with_ring_reads() {
    let block = 4096u32;
    let (t, _p) = file_target("unmap", block, 8 << 20);
    let Some(mut s) = login(&t) else { return };
    let data = pattern_fast(16 * block as usize, 5);
    good(&s.write(0, 100, &data, block, Layout::Direct));
    // UNMAP blocks 102..106 (one descriptor).
    let p = unmap_list(&[(102, 4)]);
    let unmap = [0x42, 0, 0, 0, 0, 0, 0, 0, p.len() as u8, 0];
    good(&s.command(0, &unmap, Some(&p), 0, Layout::Direct).0);
    let (r, got) = s.read(0, 100, 16 * block, block, Layout::Direct);
    good(&r);
    let bs = block as usize;
    assert!(got[..2 * bs] == data[..2 * bs]);
    assert!(
        got[2 * bs..6 * bs].iter().all(|&b| b == 0),
        "unmapped blocks read as zeros (LBPRZ)"
    );
    assert!(got[6 * bs..] == data[6 * bs..]);
    // WRITE SAME(16) of a pattern over 8 blocks, then WRITE SAME with
    // UNMAP (zeros) over 4 of them.
    let pat = vec![0xc3u8; bs];
    good(
        &s.command(0, &write_same16(200, 8, 0), Some(&pat), 0, Layout::Direct)
            .0,
    );
    let unmap = write_same16(202, 4, 0x08);
    good(&s.command(0, &unmap, Some(&vec![0u8; bs]), 0, Layout::Direct).0);
    let (r, got) = s.read(0, 200, 8 * block, block, Layout::Direct);
    good(&r);
    assert!(got[..2 * bs].iter().all(|&b| b == 0xc3));
    assert!(got[2 * bs..6 * bs].iter().all(|&b| b == 0));
    assert!(got[6 * bs..].iter().all(|&b| b == 0xc3));
}

#[test]
fn read_past_a_shrunken_file_is_zeros_and_errors_map_to_sense() {
    let (t, p) = file_target("short", 512, 1 << 20);
    let Some(mut s) = login(&t) else { return };
    good(&s.write(0, 0, &pattern(8192, 1), 512, Layout::Direct));
    std::fs::OpenOptions::new()
        .write(true)
        .open(&p.0)
        .unwrap()
        .set_len(4096)
        .unwrap();
    let (r, got) = s.read(0, 0, 8192, 512, Layout::Direct);
    good(&r);
    assert!(got[..4096] == pattern(8192, 1)[..4096]);
    assert!(got[4096..].iter().all(|&b| b == 0));
    // Out of range: refused before any I/O.
    let (r, _) = s.read(0, 4096, 512, 512, Layout::Direct);
    assert_eq!(r.sense_key_asc(), Some((0x5, 0x21, 0x00)));
}

#[test]
fn an_aborted_command_is_answered_only_after_its_operation_completes() {
    let (t, _p) = file_target("abort", 512, 1 << 20);
    let Some(mut s) = login(&t) else { return };
    s.hold_aio = true;
    let data = pattern(64 * 1024, 7);
    let cdb = rw16(0x8a, 0, 128);
    let tag = s.submit(0, &cdb, Some(&data), 0, Layout::Direct);
    assert!(!s.has_response(tag));
    assert_eq!(s.aio.as_ref().unwrap().in_flight(), 1);
    let abort = s.task_mgmt(0, TmFunction::ABORT_TASK, tag);
    assert!(
        !s.has_response(abort),
        "the abort waits for the operation in flight"
    );
    s.hold_aio = false;
    s.pump();
    let r = s.take_response(abort);
    assert_eq!(r.flags & Rsp::RSPVALID, Rsp::RSPVALID);
    assert_eq!(r.resp_data, vec![0, 0, 0, 0], "TASK MANAGEMENT FUNCTION COMPLETE");
    assert!(!s.has_response(tag), "the aborted task gets no response");
    assert_eq!(s.aio.as_ref().unwrap().in_flight(), 0);
    // The channel goes on.
    let (r, _) = s.read(0, 0, 512, 512, Layout::Direct);
    good(&r);
}

#[test]
fn many_commands_in_flight_complete_out_of_order() {
    let (t, _p) = file_target("qd", 4096, 16 << 20);
    let Some(mut s) = login(&t) else { return };
    s.hold_aio = true;
    let mut tags = vec![];
    for i in 0..24u64 {
        let data = pattern_fast(16 * 1024, i);
        tags.push((
            i,
            s.submit(0, &rw16(0x8a, i * 4, 4), Some(&data), 0, Layout::Direct),
        ));
    }
    assert_eq!(s.aio.as_ref().unwrap().in_flight(), 24);
    s.hold_aio = false;
    s.pump();
    for (_, tag) in &tags {
        good(&s.take_response(*tag));
    }
    for (i, _) in tags {
        let (r, got) = s.read(0, i * 4, 16 * 1024, 4096, Layout::Direct);
        good(&r);
        assert!(got == pattern_fast(16 * 1024, i));
    }
}

#[test]
fn writes_after_a_compare_and_write_leave_the_ring_for_the_lock() {
    let (t, _p) = file_target("caw", 512, 1 << 20);
    let Some(mut s) = login(&t) else { return };
    let old = pattern(512, 1);
    good(&s.write(0, 8, &old, 512, Layout::Direct));
    let before = commands(&s);
    assert!(before > 0);
    let mut cdb = [0u8; 16];
    cdb[0] = 0x89;
    cdb[2..10].copy_from_slice(&8u64.to_be_bytes());
    cdb[13] = 1;
    let new = pattern(512, 2);
    let out = [old.clone(), new.clone()].concat();
    good(&s.command(0, &cdb, Some(&out), 0, Layout::Direct).0);
    // From now on this LUN's writes take the COMPARE AND WRITE lock on
    // the blocking path; reads stay on the ring.
    good(&s.write(0, 9, &pattern(512, 3), 512, Layout::Direct));
    assert_eq!(commands(&s), before, "the write did not go to the ring");
    let (r, got) = s.read(0, 8, 1024, 512, Layout::Direct);
    good(&r);
    assert!(got == [new, pattern(512, 3)].concat());
    assert_eq!(commands(&s), before + 1);
}

/// A LUN removed while a write of it is in flight on the ring is flushed
/// only after that write completed: the removal waits for it (`drain.rs`).
#[test]
fn removing_a_lun_waits_for_its_write_on_the_ring() {
    let (t, _p) = file_target("remove", 512, 1 << 20);
    let Some(mut s) = login(&t) else { return };
    removal_waits_for_a_held_write(&mut s, &t, |s| s.aio.as_ref().unwrap().in_flight());
}

/// Immediate data longer than a bounce chunk (16 KiB) leaves the ring for
/// the worker pool, which bounces it to `O_DIRECT` too: on neither path
/// does a direct LUN's data enter the page cache (`direct_io.rs`).
#[test]
fn long_immediate_data_is_bounced_on_the_worker_pool() {
    let (t, p) = file_target("imm-long", 512, 1 << 20);
    let limits = srptd::proto::LoginLimits::default();
    let mut s = Sim::login_req(&t, None, &linux_login(32 * 1024 + 68), &limits, |_| {}).expect("login");
    if !s.use_io_uring() {
        return;
    }
    let (r, _) = s.command(0, &[0; 6], None, 0, Layout::Direct);
    assert_eq!(r.status, CHECK_CONDITION);
    let before = commands(&s);
    let data = pattern(24 * 1024, 5);
    good(&s.write(0, 16, &data, 512, Layout::Immediate));
    assert_eq!(
        commands(&s),
        before,
        "a 24 KiB immediate write stayed on the ring"
    );
    good(&s.write(0, 80, &data[..8192], 512, Layout::Immediate));
    assert_eq!(commands(&s), before + 1, "an 8 KiB immediate write left the ring");
    let (r, got) = s.read(0, 16, 24 * 1024, 512, Layout::Direct);
    good(&r);
    assert!(got == data, "the bounced write reads back");
    let direct = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(&p.0)
        .is_ok();
    if direct {
        let f = std::fs::File::open(&p.0).unwrap();
        let cached = srptd::os::cached_pages(std::os::fd::AsFd::as_fd(&f), 1 << 20).unwrap();
        assert_eq!(cached, 0, "pages of an O_DIRECT LUN in the page cache");
    }
}
