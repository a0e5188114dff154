//! Statistics move with the I/O: per channel and per LUN, by status and
//! sense key, with one latency per answered command on the clock the
//! driver (here the test) sets.

mod common;

use common::*;
use srptd::proto::TickScale;
use srptd::wire::TmFunction;

const INQUIRY: [u8; 6] = [0x12, 0, 0, 0, 36, 0];

#[test]
fn reads_writes_and_errors_count_per_channel_and_lun() {
    let t = target_with("ram:1M,bs=512");
    let mut sim = Sim::login(&t, |_| {});
    // The first command meets the power-on unit attention.
    let (r, _) = sim.command(0, &[0; 6], None, 0, Layout::Direct);
    assert_eq!(r.sense_key_asc().map(|k| k.0), Some(6));
    let data = pattern(4096, 1);
    assert_eq!(sim.write(0, 0, &data, 512, Layout::Direct).status, 0);
    assert_eq!(sim.write(0, 8, &data, 512, Layout::Indirect(2)).status, 0);
    assert_eq!(sim.write(0, 16, &data[..1024], 512, Layout::Immediate).status, 0);
    let (r, _) = sim.read(0, 0, 4096, 512, Layout::Direct);
    assert_eq!(r.status, 0);
    // An unmapped LUN: CHECK CONDITION, ILLEGAL REQUEST, counted for the
    // channel only.
    let (r, _) = sim.read(7, 0, 512, 512, Layout::Direct);
    assert_eq!(r.status, 2);
    // Past the end of LUN 0: ILLEGAL REQUEST on LUN 0 (refused when
    // planned, so neither a read nor a write).
    let (r, _) = sim.read(0, 1 << 20, 512, 512, Layout::Direct);
    assert_eq!(r.status, 2);
    let st = sim.ch.stats().io.clone();
    assert_eq!((st.commands, st.reads, st.writes), (7, 1, 3));
    assert_eq!((st.bytes_out, st.bytes_in), (9216, 4096));
    assert_eq!(st.errors.check_condition[5], 2);
    assert_eq!(st.errors.check_condition[6], 1);
    assert_eq!(st.errors.total(), 3);
    assert_eq!(st.queue_depth, 0);
    assert_eq!(st.max_queue_depth, 1);
    assert_eq!(st.latency.count(), 7, "every answered command has a latency");
    let luns: Vec<u16> = sim.ch.lun_stats().iter().map(|(l, _)| l).collect();
    assert_eq!(luns, [0], "no figures for an unmapped LUN");
    let l0 = sim.ch.lun_stats().get(0).unwrap();
    assert_eq!((l0.commands, l0.reads, l0.writes), (6, 1, 3));
    assert_eq!((l0.bytes_out, l0.bytes_in), (9216, 4096));
    assert_eq!(
        (l0.errors.check_condition[5], l0.errors.check_condition[6]),
        (1, 1)
    );
    assert_eq!(l0.latency.count(), 6);
}

#[test]
fn latency_runs_from_the_request_to_the_response_send() {
    let t = target_with("ram:1M,bs=512");
    let mut sim = Sim::login(&t, |_| {});
    sim.ch.set_tick_scale(TickScale::per_ms(1_000)); // a tick is 1 µs
    sim.auto_exec = false;
    sim.ch.set_clock(100);
    let a = sim.submit(0, &INQUIRY, None, 36, Layout::Direct);
    let b = sim.submit(0, &INQUIRY, None, 36, Layout::Direct);
    let st = sim.ch.stats().io.clone();
    assert_eq!((st.queue_depth, st.max_queue_depth), (2, 2));
    assert_eq!(sim.ch.lun_stats().get(0).unwrap().queue_depth, 2);
    // Answered 3 ms and 100 ms later (the send completes in the same pump).
    sim.ch.set_clock(3_100);
    sim.release_exec();
    sim.ch.set_clock(100_100);
    sim.release_exec();
    assert_eq!((sim.take_response(a).status, sim.take_response(b).status), (0, 0));
    let h = sim.ch.stats().io.latency;
    assert_eq!(h.count(), 2);
    assert_eq!(h.sum_ns(), 103_000_000);
    assert_eq!(h.buckets()[11], 1, "3 ms: [2048, 4096) µs");
    assert_eq!(h.buckets()[16], 1, "100 ms: [65536, 131072) µs");
    assert_eq!(sim.ch.lun_stats().get(0).unwrap().latency, h);
    assert_eq!(sim.ch.stats().io.queue_depth, 0);
}

#[test]
fn task_management_and_aborts_count_for_the_lun() {
    let t = target_with("ram:1M,bs=512");
    let mut sim = Sim::login(&t, |_| {});
    sim.auto_exec = false;
    let a = sim.submit(0, &INQUIRY, None, 36, Layout::Direct);
    let tm = sim.task_mgmt(0, TmFunction::ABORT_TASK, a);
    sim.release_all();
    assert!(sim.has_response(tm));
    let st = sim.ch.stats().io.clone();
    assert_eq!((st.task_mgmt, st.aborted), (1, 1));
    assert_eq!(st.latency.count(), 0, "no latency for an aborted command");
    let l0 = sim.ch.lun_stats().get(0).unwrap();
    assert_eq!((l0.task_mgmt, l0.aborted, l0.queue_depth), (1, 1, 0));
    assert_eq!(l0.max_queue_depth, 2);
}
