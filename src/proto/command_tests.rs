use super::*;
use crate::proto::channel::{ChannelConfig, TARGET_IU_SLOTS};
use crate::scsi::backstore::BackstoreConfig;
use crate::scsi::lun::{LunConfig, Target, TargetConfig};
use crate::scsi::Completion;
use crate::wire::{self, DataDesc, IndirectDesc, TaskMgmt, TmFunction};

/// A channel on a 1 MiB RAM LUN (512-byte blocks) whose power-on unit
/// attention is already reported.
fn channel(edit: impl FnOnce(&mut ChannelConfig)) -> Channel {
    let bs = BackstoreConfig::parse("ram:1M,bs=512", "lun").unwrap();
    let t = Target::new(TargetConfig {
        luns: vec![LunConfig::new(0, bs)],
        ..TargetConfig::default()
    })
    .unwrap();
    let nexus = t.nexus([7; 16]);
    assert!(nexus.plan([0; 8], &[0; 6]).is_err(), "the unit attention");
    let mut cfg = ChannelConfig::new(8260, Some(68), 8);
    edit(&mut cfg);
    let mem = crate::proto::channel::tests::memory(&cfg);
    let mut ch = Channel::new(cfg, nexus, mem).unwrap();
    actions(&mut ch);
    ch
}

fn actions(ch: &mut Channel) -> Vec<Action> {
    std::iter::from_fn(|| ch.poll_action()).collect()
}

fn sends(acts: &[Action]) -> Vec<WorkRequest> {
    acts.iter()
        .filter_map(|a| match a {
            Action::PostSend(w) => Some(*w),
            _ => None,
        })
        .collect()
}

fn kind(w: &WorkRequest) -> WrKind {
    WrId::decode(w.wr_id).unwrap().kind
}

/// Lands `iu` in receive slot `slot`.
fn land(ch: &mut Channel, slot: u32, iu: &[u8]) {
    ch.recv_buf().write(ch.recv_slot_offset(slot) as usize, iu);
    ch.handle_completion(WrId::recv(slot), true, iu.len() as u32);
}

fn cmd(tag: u64, cdb: &[u8], out: bool, desc: DataDesc<'_>) -> Vec<u8> {
    let mut b = vec![0u8; 1024];
    let c = wire::Cmd::new(Tag(tag), [0; 8], cdb);
    let c = if out {
        c.with_data_out(desc)
    } else {
        c.with_data_in(desc)
    };
    let n = c.emit(&mut b).unwrap();
    b.truncate(n);
    b
}

fn rw10(op: u8, lba: u32, blocks: u16) -> [u8; 10] {
    let mut c = [0u8; 10];
    c[0] = op;
    c[2..6].copy_from_slice(&lba.to_be_bytes());
    c[7..9].copy_from_slice(&blocks.to_be_bytes());
    c
}

fn inquiry(alloc: u16) -> [u8; 6] {
    let a = alloc.to_be_bytes();
    [0x12, 0, 0, a[0], a[1], 0]
}

fn direct(len: u32) -> DataDesc<'static> {
    DataDesc::Direct(DirectDesc {
        va: 0x10_0000,
        rkey: 5,
        len,
    })
}

/// `n` descriptors of `len` bytes, as table bytes.
fn table(n: usize, len: u32) -> Vec<u8> {
    let mut t = vec![0u8; n * DirectDesc::LEN];
    for i in 0..n {
        DirectDesc {
            va: 0x20_0000 + (i as u64) * 0x1000,
            rkey: 5,
            len,
        }
        .emit(&mut t[i * DirectDesc::LEN..])
        .unwrap();
    }
    t
}

fn in_iu(t: &[u8], total_len: u32) -> DataDesc<'_> {
    DataDesc::Indirect(IndirectDesc {
        table: DirectDesc {
            va: 0x30_0000,
            rkey: 5,
            len: t.len() as u32,
        },
        total_len,
        partial: t,
    })
}

/// An indirect descriptor whose table (`table_len / 16` descriptors)
/// is all in initiator memory.
fn external(table_len: u32, total_len: u32) -> DataDesc<'static> {
    DataDesc::Indirect(IndirectDesc {
        table: DirectDesc {
            va: 0x30_0000,
            rkey: 5,
            len: table_len,
        },
        total_len,
        partial: &[],
    })
}

fn state(ch: &Channel, id: u16) -> CommandState {
    ch.cmds[id as usize].state
}

fn queued(ch: &Channel, id: u16) -> Option<Resource> {
    ch.cmds[id as usize].queued_for
}

fn complete(ch: &mut Channel, w: &WorkRequest) {
    ch.handle_completion(w.wr_id, true, 0);
}

#[test]
fn need_table_fetches_the_table_then_reads_the_data() {
    let mut ch = channel(|_| {});
    let t = table(2, 512);
    land(&mut ch, 0, &cmd(1, &rw10(0x2a, 0, 2), true, external(32, 1024)));
    let acts = sends(&actions(&mut ch));
    assert_eq!(acts.len(), 1);
    assert_eq!(
        (kind(&acts[0]), acts[0].opcode, acts[0].local.len),
        (WrKind::TableRead, WrOpcode::RdmaRead, 32)
    );
    let CommandState::FetchingTable { table: ext, count: 2 } = state(&ch, 0) else {
        panic!("{:?}", state(&ch, 0));
    };
    ch.table_buf().write(ext.offset as usize, &t);
    complete(&mut ch, &acts[0]);
    // Zero copy to the RAM LUN: no data buffer; both READs in one batch.
    let reads = sends(&actions(&mut ch));
    assert_eq!(reads.len(), 2);
    assert!(matches!(reads[0].local.region, Region::Ram { .. }));
    assert_eq!((reads[0].signaled, kind(&reads[1])), (false, WrKind::DataRead));
    assert_eq!((reads[1].remote_addr, reads[1].local.offset), (0x20_1000, 512));
    assert!(matches!(state(&ch, 0), CommandState::Reading { batches: 1, cursor } if cursor.is_done()));
    complete(&mut ch, &reads[1]);
    let rsp = sends(&actions(&mut ch));
    assert_eq!(rsp.len(), 1);
    assert_eq!(kind(&rsp[0]), WrKind::Response);
    assert_eq!(state(&ch, 0), CommandState::Responding { batches: 0 });
    complete(&mut ch, &rsp[0]);
    assert_eq!(ch.in_flight(), 0);
    assert_eq!(ch.tables.free_bytes(), ch.tables.capacity());
}

#[test]
fn need_table_answers_a_table_of_the_wrong_size() {
    let mut ch = channel(|_| {});
    // 40 bytes is not a whole number of descriptors.
    land(&mut ch, 0, &cmd(1, &rw10(0x2a, 0, 2), true, external(40, 1024)));
    let acts = sends(&actions(&mut ch));
    assert_eq!(acts.iter().map(kind).collect::<Vec<_>>(), vec![WrKind::Response]);
    assert_eq!(ch.cmds[0].response.status, ScsiStatus::CHECK_CONDITION);
}

#[test]
fn need_table_waits_for_a_read_credit_in_order() {
    let mut ch = channel(|c| c.rdma_read_depth = 1);
    let t = table(2, 512);
    land(&mut ch, 0, &cmd(1, &rw10(0x2a, 0, 2), true, external(32, 1024)));
    land(&mut ch, 1, &cmd(2, &rw10(0x2a, 8, 2), true, external(32, 1024)));
    let first = sends(&actions(&mut ch));
    assert_eq!(first.len(), 1);
    assert!(matches!(state(&ch, 1), CommandState::NeedTable(_)));
    assert_eq!(queued(&ch, 1), Some(Resource::ReadCredit));
    let CommandState::FetchingTable { table: ext, .. } = state(&ch, 0) else {
        panic!()
    };
    ch.table_buf().write(ext.offset as usize, &t);
    complete(&mut ch, &first[0]);
    // The credit goes to the earlier waiter (the second table), not to
    // the first command's data READs.
    let next = sends(&actions(&mut ch));
    assert_eq!(next.iter().map(kind).collect::<Vec<_>>(), vec![WrKind::TableRead]);
    assert!(matches!(state(&ch, 1), CommandState::FetchingTable { .. }));
    assert!(matches!(state(&ch, 0), CommandState::Reading { batches: 0, .. }));
    assert_eq!(queued(&ch, 0), Some(Resource::ReadCredit));
    let CommandState::FetchingTable { table: ext, .. } = state(&ch, 1) else {
        panic!()
    };
    ch.table_buf().write(ext.offset as usize, &t);
    complete(&mut ch, &next[0]);
    // Now the first command's READ (one credit: one READ per batch).
    let reads = sends(&actions(&mut ch));
    assert_eq!(reads.len(), 1);
    assert_eq!(WrId::decode(reads[0].wr_id).unwrap().index, 0);
    assert_eq!(queued(&ch, 0), Some(Resource::ReadCredit));
    assert_eq!(queued(&ch, 1), Some(Resource::ReadCredit));
}

#[test]
fn need_buffer_waits_in_order_for_pool_space() {
    let mut ch = channel(|c| {
        c.pool_size = 8192;
        c.max_transfer = 8192;
    });
    land(&mut ch, 0, &cmd(1, &inquiry(4096), false, direct(4096)));
    land(&mut ch, 1, &cmd(2, &inquiry(4096), false, direct(4096)));
    land(&mut ch, 2, &cmd(3, &inquiry(8192), false, direct(8192)));
    land(&mut ch, 3, &cmd(4, &inquiry(4096), false, direct(4096)));
    let acts = actions(&mut ch);
    assert_eq!(
        acts.iter()
            .filter(|a| matches!(a, Action::Execute { .. }))
            .count(),
        2
    );
    assert_eq!(state(&ch, 2), CommandState::NeedBuffer);
    assert_eq!(queued(&ch, 2), Some(Resource::DataBuffer));
    assert_eq!(queued(&ch, 3), Some(Resource::DataBuffer));
    // The first ends: 4 KiB free, not enough for the head of the queue;
    // the smaller request behind it does not overtake it.
    ch.handle_exec_done(CmdId(0), Completion::good(36));
    let rsp = sends(&actions(&mut ch));
    complete(&mut ch, rsp.last().unwrap());
    assert_eq!(state(&ch, 3), CommandState::NeedBuffer);
    assert_eq!(ch.waiters.ids(Resource::DataBuffer), [CmdId(2), CmdId(3)]);
    ch.handle_exec_done(CmdId(1), Completion::good(36));
    let rsp = sends(&actions(&mut ch));
    complete(&mut ch, rsp.last().unwrap());
    assert_eq!(state(&ch, 2), CommandState::Executing);
    assert_eq!(state(&ch, 3), CommandState::NeedBuffer);
}

#[test]
fn a_transfer_beyond_the_channel_maximum_is_answered() {
    let mut ch = channel(|c| {
        c.pool_size = 4096;
        c.max_transfer = 4096;
    });
    land(&mut ch, 0, &cmd(1, &inquiry(8192), false, direct(8192)));
    let acts = sends(&actions(&mut ch));
    assert_eq!(acts.iter().map(kind).collect::<Vec<_>>(), vec![WrKind::Response]);
    assert_eq!(ch.cmds[0].response.sense, Some(Sense::invalid_field_in_cdb()));
}

#[test]
fn reading_posts_batches_within_the_read_depth() {
    let mut ch = channel(|c| c.rdma_read_depth = 2);
    let t = table(4, 512);
    land(&mut ch, 0, &cmd(1, &rw10(0x2a, 0, 4), true, in_iu(&t, 2048)));
    let b1 = sends(&actions(&mut ch));
    assert_eq!(b1.len(), 2);
    assert_eq!(
        (kind(&b1[0]), kind(&b1[1])),
        (WrKind::Unsignaled, WrKind::DataRead)
    );
    assert!(matches!(state(&ch, 0), CommandState::Reading { batches: 1, cursor } if !cursor.is_done()));
    assert_eq!(queued(&ch, 0), Some(Resource::ReadCredit));
    complete(&mut ch, &b1[1]);
    let b2 = sends(&actions(&mut ch));
    assert_eq!(b2.len(), 2);
    assert_eq!(b2[1].local.offset - b1[0].local.offset, 3 * 512);
    assert!(matches!(state(&ch, 0), CommandState::Reading { batches: 1, cursor } if cursor.is_done()));
    assert_eq!(queued(&ch, 0), None);
    complete(&mut ch, &b2[1]);
    assert_eq!(ch.stats().io.bytes_out, 2048);
    assert_eq!(
        sends(&actions(&mut ch)).iter().map(kind).collect::<Vec<_>>(),
        vec![WrKind::Response]
    );
}

#[test]
fn executing_until_the_backstore_reports_then_writing_chains_the_response() {
    let mut ch = channel(|_| {});
    land(&mut ch, 0, &cmd(1, &inquiry(96), false, direct(96)));
    let acts = actions(&mut ch);
    assert_eq!(acts, vec![Action::Execute { cmd: CmdId(0) }]);
    assert_eq!(state(&ch, 0), CommandState::Executing);
    let r = ch.exec_request(CmdId(0)).unwrap();
    assert_eq!((&r.cdb[..6], r.len), (&inquiry(96)[..], 96));
    assert!(matches!(
        r.command.cmd(),
        crate::scsi::cdb::Cmd::Inquiry { alloc: 96, .. }
    ));
    let done = r.nexus.run(r.command, r.buf, r.offset, r.len);
    ch.handle_exec_done(CmdId(0), done);
    // One unsignaled WRITE, retired by the response chained behind it.
    let w = sends(&actions(&mut ch));
    assert_eq!(
        w.iter().map(kind).collect::<Vec<_>>(),
        vec![WrKind::Unsignaled, WrKind::Response]
    );
    assert_eq!((w[0].opcode, w[0].signaled), (WrOpcode::RdmaWrite, false));
    assert_eq!(WrId::decode(w[1].wr_id).unwrap().count, 2);
    assert_eq!(state(&ch, 0), CommandState::Responding { batches: 0 });
    // A late report is ignored.
    ch.handle_exec_done(CmdId(0), Completion::good(0));
    assert!(ch.exec_request(CmdId(0)).is_none());
}

#[test]
fn writing_waits_for_send_slots() {
    let mut ch = channel(|c| c.sq_depth = TARGET_IU_SLOTS + 2);
    let t = table(4, 512);
    // READ(10) of 4 blocks, zero copy, into four 512-byte buffers.
    land(&mut ch, 0, &cmd(1, &rw10(0x28, 0, 4), false, in_iu(&t, 2048)));
    let b1 = sends(&actions(&mut ch));
    assert_eq!(
        b1.iter().map(kind).collect::<Vec<_>>(),
        vec![WrKind::Unsignaled, WrKind::DataWrite]
    );
    assert!(matches!(state(&ch, 0), CommandState::Writing { batches: 1, .. }));
    assert_eq!(queued(&ch, 0), Some(Resource::SendSlot));
    complete(&mut ch, &b1[1]);
    // Two more WRITEs fill the queue again; the response waits.
    let b2 = sends(&actions(&mut ch));
    assert_eq!(
        b2.iter().map(kind).collect::<Vec<_>>(),
        vec![WrKind::Unsignaled, WrKind::DataWrite]
    );
    complete(&mut ch, &b2[1]);
    let rsp = sends(&actions(&mut ch));
    assert_eq!(rsp.iter().map(kind).collect::<Vec<_>>(), vec![WrKind::Response]);
    assert_eq!(WrId::decode(rsp[0].wr_id).unwrap().count, 1);
    assert_eq!(ch.stats().io.bytes_in, 2048);
}

#[test]
fn respond_waits_for_a_send_slot() {
    let mut ch = channel(|c| c.sq_depth = TARGET_IU_SLOTS + 1);
    land(&mut ch, 0, &cmd(1, &[0; 6], false, DataDesc::None));
    land(&mut ch, 1, &cmd(2, &[0; 6], false, DataDesc::None));
    ch.handle_exec_done(CmdId(0), Completion::good(0));
    ch.handle_exec_done(CmdId(1), Completion::good(0));
    let first = sends(&actions(&mut ch));
    assert_eq!(first.len(), 1);
    assert_eq!(state(&ch, 1), CommandState::RESPOND);
    assert_eq!(queued(&ch, 1), Some(Resource::SendSlot));
    complete(&mut ch, &first[0]);
    let second = sends(&actions(&mut ch));
    assert_eq!(WrId::decode(second[0].wr_id).unwrap().index, 1);
    assert_eq!(state(&ch, 1), CommandState::Responding { batches: 0 });
}

fn abort_task(tag: u64, task_tag: u64) -> Vec<u8> {
    let mut b = vec![0u8; TaskMgmt::LEN];
    TaskMgmt {
        tag: Tag(tag),
        sol_not: 0,
        lun: [0; 8],
        function: TmFunction::ABORT_TASK,
        task_tag: Tag(task_tag),
    }
    .emit(&mut b)
    .unwrap();
    b
}

#[test]
fn task_mgmt_waits_for_an_executing_command() {
    let mut ch = channel(|_| {});
    land(&mut ch, 0, &cmd(1, &inquiry(96), false, direct(96)));
    actions(&mut ch);
    land(&mut ch, 1, &abort_task(2, 1));
    assert!(actions(&mut ch).is_empty());
    assert_eq!(state(&ch, 1), CommandState::TaskMgmtWait { pending: 1 });
    ch.handle_exec_done(CmdId(0), Completion::good(96));
    let acts = actions(&mut ch);
    // The aborted command's slot goes back; only the TMF answers.
    assert!(acts.contains(&Action::PostRecv { slot: 0 }));
    let rsp = sends(&acts);
    assert_eq!(rsp.len(), 1);
    assert_eq!(WrId::decode(rsp[0].wr_id).unwrap().index, 1);
    assert_eq!(ch.cmds[1].response.rsp_code, Some(Rsp::TM_COMPLETE));
    assert_eq!(ch.stats().io.aborted, 1);
}

#[test]
fn aborted_reads_end_after_their_batch() {
    let mut ch = channel(|_| {});
    land(&mut ch, 0, &cmd(1, &rw10(0x2a, 0, 2), true, direct(1024)));
    let reads = sends(&actions(&mut ch));
    assert_eq!(reads.len(), 1);
    land(&mut ch, 1, &abort_task(2, 1));
    assert_eq!(state(&ch, 1), CommandState::TaskMgmtWait { pending: 1 });
    complete(&mut ch, &reads[0]);
    assert!(!ch.cmds.contains(CmdId(0)));
    assert_eq!(state(&ch, 1), CommandState::Responding { batches: 0 });
    assert_eq!(ch.reads_in_flight, 0);
}

#[test]
fn an_aborted_waiter_leaves_its_queue() {
    let mut ch = channel(|c| c.sq_depth = TARGET_IU_SLOTS + 1);
    land(&mut ch, 0, &cmd(1, &[0; 6], false, DataDesc::None));
    land(&mut ch, 1, &cmd(2, &[0; 6], false, DataDesc::None));
    ch.handle_exec_done(CmdId(0), Completion::good(0));
    ch.handle_exec_done(CmdId(1), Completion::good(0));
    actions(&mut ch);
    assert_eq!(queued(&ch, 1), Some(Resource::SendSlot));
    // Aborting a queued command that has nothing in flight ends it.
    land(&mut ch, 2, &abort_task(3, 2));
    assert!(!ch.cmds.contains(CmdId(1)));
    assert_eq!(ch.waiters.ids(Resource::SendSlot), [CmdId(2)]);
}

#[test]
fn waiters_for_different_resources_resume_in_the_order_they_parked() {
    let mut ch = channel(|c| {
        c.sq_depth = TARGET_IU_SLOTS + 1;
        c.pool_size = 4096;
        c.max_transfer = 4096;
    });
    land(&mut ch, 0, &cmd(1, &inquiry(4096), false, direct(4096)));
    land(&mut ch, 1, &cmd(2, &inquiry(4096), false, direct(4096)));
    land(&mut ch, 2, &cmd(3, &[0; 6], false, DataDesc::None));
    actions(&mut ch);
    assert_eq!(queued(&ch, 1), Some(Resource::DataBuffer));
    // The first answers with no data; its response fills the send queue.
    ch.handle_exec_done(CmdId(0), Completion::good(0));
    let rsp = sends(&actions(&mut ch));
    ch.handle_exec_done(CmdId(2), Completion::good(0));
    assert_eq!(queued(&ch, 2), Some(Resource::SendSlot));
    // Its completion frees both a send slot and the pool: the earlier
    // waiter (for the pool) moves first.
    complete(&mut ch, &rsp[0]);
    let acts = actions(&mut ch);
    let exec = acts.iter().position(|a| *a == Action::Execute { cmd: CmdId(1) });
    let send = acts.iter().position(|a| matches!(a, Action::PostSend(_)));
    assert!(exec.is_some() && exec < send, "{acts:?}");
    assert!(ch.waiters.is_empty());
}

#[test]
fn cursor_walks_descriptors_piece_by_piece() {
    let descs = [
        DirectDesc {
            va: 0x1000,
            rkey: 1,
            len: 100,
        },
        DirectDesc {
            va: 0x5000,
            rkey: 2,
            len: 0,
        },
        DirectDesc {
            va: 0x9000,
            rkey: 3,
            len: 300,
        },
    ];
    let get = |i: u32| descs.get(i as usize).copied();
    let mut c = TransferCursor::new(250);
    let (p, local) = c.next_piece(get).unwrap();
    assert_eq!((p.va, p.len, local), (0x1000, 100, 0));
    // The empty descriptor is skipped; the transfer ends mid-descriptor.
    let (p, local) = c.next_piece(get).unwrap();
    assert_eq!((p.va, p.rkey, p.len, local), (0x9000, 3, 150, 100));
    assert!(c.is_done());
    assert_eq!(c.next_piece(get), None);
    // Descriptors that end first end the walk.
    let mut c = TransferCursor::new(1000);
    assert_eq!(std::iter::from_fn(|| c.next_piece(get)).count(), 2);
    assert!(!c.is_done());
}
