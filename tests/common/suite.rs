//! The read/write suite every backstore engine runs through a channel
//! (`tests/uring.rs`, `tests/rbd.rs`): data in every descriptor layout
//! reads back, and FUA writes and SYNCHRONIZE CACHE complete.

use std::sync::Arc;
use std::time::Duration;

use srptd::scsi::lun::{Target, TargetConfig};

use super::{pattern, pattern_fast, rw16, Layout, Response, Sim};

/// Asserts GOOD status, showing the sense otherwise.
pub fn good(r: &Response) {
    assert_eq!(r.status, 0x00, "{:?}", r.sense_key_asc());
}

/// Writes of one block to 256 KiB in every descriptor layout (direct,
/// in-IU indirect, external table, immediate data up to 4 KiB) on LUN 0,
/// each read back. `seed` varies the data and LBAs between callers.
pub fn write_read_every_layout(s: &mut Sim, block: u32, seed: u64) {
    let layouts = [
        Layout::Direct,
        Layout::Indirect(3),
        Layout::External { n: 6, in_iu: 2 },
        Layout::Immediate,
    ];
    for (i, layout) in layouts.into_iter().enumerate() {
        for (j, len) in [block, 8 * block, 64 * block, 256 * 1024].into_iter().enumerate() {
            let len = if layout == Layout::Immediate {
                len.min(4096)
            } else {
                len
            };
            let seed = (i * 10 + j) as u64 + seed;
            let lba = seed * 600 / u64::from(block) * 8;
            let data = pattern_fast(len as usize, seed);
            good(&s.write(0, lba, &data, block, layout));
            let (r, got) = s.read(0, lba, len, block, Layout::Direct);
            good(&r);
            assert!(got == data, "block {block} layout {layout:?} len {len}");
        }
    }
}

/// WRITE(10) with FUA of 4 blocks at LBA 100h, SYNCHRONIZE CACHE(10) and
/// (16), and the blocks read back.
pub fn fua_write_and_sync(s: &mut Sim, block: u32) {
    let data = pattern_fast(4 * block as usize, 99);
    let w10 = [0x2a, 0x08, 0, 0, 0x01, 0, 0, 0, 4, 0];
    good(&s.command(0, &w10, Some(&data), 0, Layout::Direct).0);
    let sync10 = [0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    good(&s.command(0, &sync10, None, 0, Layout::Direct).0);
    let sync16 = [0x91, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    good(&s.command(0, &sync16, None, 0, Layout::Direct).0);
    let (r, got) = s.read(0, 0x100, 4 * block, block, Layout::Direct);
    good(&r);
    assert!(got == data);
}

/// A LUN removed while a write of it is held in the engine (`hold_aio`)
/// is flushed only after that write completed: the removal (on another
/// thread) waits for it (`drain.rs`). `in_flight`: the engine's count.
pub fn removal_waits_for_a_held_write(s: &mut Sim, t: &Arc<Target>, in_flight: fn(&Sim) -> usize) {
    s.hold_aio = true;
    let data = pattern(64 * 1024, 11);
    let tag = s.submit(0, &rw16(0x8a, 0, 128), Some(&data), 0, Layout::Direct);
    assert_eq!(in_flight(s), 1);
    let remover = {
        let t = Arc::clone(t);
        std::thread::spawn(move || t.apply(&TargetConfig::default()))
    };
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !remover.is_finished(),
        "the removal must wait for the write in flight"
    );
    s.hold_aio = false;
    s.pump();
    good(&s.take_response(tag));
    let applied = remover.join().unwrap().unwrap();
    assert_eq!(applied.removed, vec![0]);
    assert!(
        applied.flush_pending.is_empty() && applied.flush_failed.is_empty(),
        "{applied:?}"
    );
}
