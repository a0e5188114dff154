//! A channel fed arbitrary IUs by a driver that completes every work
//! request: no input may panic it or unbalance its credits.
#![no_main]

#[path = "../../tests/common/mod.rs"]
mod common;

use libfuzzer_sys::fuzz_target;
use srptd::proto::{Action, Channel, ChannelConfig, ChannelMemory, WrId};
use srptd::scsi::backstore::BackstoreConfig;
use srptd::scsi::lun::{LunConfig, Target, TargetConfig};

fuzz_target!(|input: &[u8]| {
    let bs = BackstoreConfig::parse("ram:256K,bs=512", "lun").unwrap();
    let t = Target::new(TargetConfig { luns: vec![LunConfig::new(0, bs)], ..TargetConfig::default() }).unwrap();
    let mut cfg = ChannelConfig::new(1024, Some(68), 4);
    cfg.pool_size = 1 << 20;
    cfg.max_transfer = 256 << 10;
    // Buffers reused from earlier inputs, zero again (the writes below are
    // recorded); `bufs` is dropped after `ch`.
    let mem = ChannelMemory::with(&cfg.memory_layout(), common::channel_buf).unwrap();
    let mut bufs = common::ChannelBufs::new(&mem);
    let mut ch = Channel::new(cfg, t.nexus([1; 16]), mem).unwrap();
    let mut posted = std::collections::VecDeque::new();
    // Inputs: IUs separated by a length byte.
    let mut rest = input;
    loop {
        while let Some(a) = ch.poll_action() {
            match a {
                Action::PostRecv { slot } => posted.push_back(slot),
                // Complete everything, successfully, without moving data.
                Action::PostSend(wr) if wr.signaled => ch.handle_completion(wr.wr_id, true, 0),
                Action::PostSend(_) => {}
                Action::Execute { cmd } => {
                    let done = {
                        let r = ch.exec_request(cmd).unwrap();
                        bufs.touch(r.buf, r.offset, r.len as usize);
                        r.nexus.run(r.command, r.buf, r.offset, r.len)
                    };
                    ch.handle_exec_done(cmd, done);
                }
                Action::Disconnect => {
                    posted.clear();
                    ch.handle_send_queue_drained(std::time::Instant::now());
                    ch.handle_receives_flushed();
                }
                Action::Closed => return,
            }
        }
        let c = ch.credits();
        assert_eq!(c.initiator_limit() + c.in_use() + c.owed(), c.granted());
        let Some((&n, tail)) = rest.split_first() else { return };
        let n = (n as usize).min(tail.len());
        let (iu, tail) = tail.split_at(n);
        rest = tail;
        let Some(slot) = posted.pop_front() else { return };
        let (off, size) = ch.recv_slot(slot);
        let iu = &iu[..iu.len().min(size as usize)];
        ch.recv_buf().write(off as usize, iu);
        bufs.touch(ch.recv_buf(), off as usize, iu.len());
        ch.handle_completion(WrId::recv(slot), true, iu.len() as u32);
    }
});
