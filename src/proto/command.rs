//! The per-command state machine of a channel.
//!
//! A command (an SRP_CMD, or an SRP_TSK_MGMT) moves through
//! [`CommandState`]s; each state carries the data that only it needs, and
//! every transition replaces the state with the next one (SCST ib_srpt and
//! SPDK's `nvmf_rdma_request_process` use the same shape):
//!
//! ```text
//! received ─► [NeedTable ─► FetchingTable] ─► NeedBuffer ─► [Reading] ─► ReadyToExecute
//!          ─► Executing ─► [Writing] ─► Respond ─► Responding ─► free (receive reposted)
//! task management ─► TaskMgmtWait ─► Respond ─► Responding ─► free
//! ```
//! States in brackets are skipped when not needed; any state before
//! `Respond` may end the command early with a CHECK CONDITION response.
//! [`Channel::step`] runs back-to-back transitions and reports whether it
//! made progress. A state that lacks a resource ([`Resource`]) parks the
//! command on that resource's FIFO queue ([`WaitQueues`]); a command never
//! takes a resource ahead of an earlier waiter for it.

use std::sync::Arc;

use super::action::{Action, CmdId, Generation, LocalSeg, Region, WorkRequest, WrId, WrKind, WrOpcode};
use super::channel::{Channel, ExecRequest};
use super::pool::Extent;
use super::request::{Cdb, DataDescriptors, ExternalTable, DESC_LEN};
pub(super) use super::table::{CommandTable, Removed, Resource, WaitQueues};
use crate::mem::DmaBuf;
use crate::scsi::{DataDir, ScsiCommand, ScsiStatus, Sense};
use crate::wire::{DirectDesc, Rsp, Tag};

/// Where a command is, with the data of that state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum CommandState {
    /// An indirect table that is not all in the IU must be fetched; waits
    /// for an RDMA READ credit, a send-queue slot and table pool space.
    NeedTable(ExternalTable),
    /// The table's RDMA READ is posted into `table` of the table pool.
    FetchingTable { table: Extent, count: u32 },
    /// Descriptors known; waits for data buffer space when the data does
    /// not move straight to a backstore or sit in the IU.
    NeedBuffer,
    /// Data-out RDMA READs: `cursor` is the next byte to fetch, `batches`
    /// the signaled READ batches not completed yet.
    Reading { cursor: TransferCursor, batches: u32 },
    /// Data-out is in place; run the SCSI command.
    ReadyToExecute,
    /// On the backstore (`Action::Execute` was emitted).
    Executing,
    /// Data-in RDMA WRITEs: `cursor` is the next byte to send, `batches`
    /// the signaled WRITE batches not completed yet.
    Writing { cursor: TransferCursor, batches: u32 },
    /// The response is to be posted. `batches`: signaled WRITE batches
    /// still outstanding; `unsignaled_writes`: WRITEs posted unsignaled
    /// right ahead of the response, whose completion retires them.
    Respond { batches: u32, unsignaled_writes: u32 },
    /// The response SEND is posted; its completion frees the command.
    Responding { batches: u32 },
    /// Task management waiting for `pending` aborted commands to end (or
    /// earlier functions to answer, see `Channel::wait_for_aborted`): its
    /// response follows theirs.
    TaskMgmtWait { pending: u32 },
    /// Waiting for the other channels to end the tasks of the abort
    /// published as generation `gen` (`proto::task_set`).
    TaskSetWait { gen: u64 },
    /// Dormant (SAM-5 8.6): an ORDERED task waits for the tasks before it,
    /// a SIMPLE one for the ORDERED tasks before it; then `NeedTable` with
    /// the table, or `NeedBuffer` (`proto::ordering`).
    Dormant(Option<ExternalTable>),
}

impl CommandState {
    /// The response state with no data-in in flight.
    pub(super) const RESPOND: CommandState = CommandState::Respond {
        batches: 0,
        unsignaled_writes: 0,
    };
}

/// Progress of an RDMA transfer across a command's descriptor list.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct TransferCursor {
    /// Descriptor the next piece starts in.
    desc_index: u32,
    /// Bytes of that descriptor already posted.
    offset_in_desc: u32,
    /// Bytes posted so far (also the offset in the local buffer).
    posted: u64,
    /// Bytes to move in all.
    total: u64,
}

impl TransferCursor {
    /// A transfer of `total` bytes from the first descriptor.
    pub(super) fn new(total: u64) -> TransferCursor {
        TransferCursor {
            total,
            ..TransferCursor::default()
        }
    }

    pub(super) fn is_done(&self) -> bool {
        self.posted >= self.total
    }

    /// The next remote piece (one descriptor at most) and its offset in
    /// the local buffer, advancing the cursor; `None` when done or when
    /// the descriptors end first. `descriptor(i)` reads descriptor `i`.
    fn next_piece(&mut self, descriptor: impl Fn(u32) -> Option<DirectDesc>) -> Option<(DirectDesc, u64)> {
        loop {
            if self.is_done() {
                return None;
            }
            let d = descriptor(self.desc_index)?;
            if self.offset_in_desc >= d.len {
                self.desc_index += 1;
                self.offset_in_desc = 0;
                continue;
            }
            let take = ((d.len - self.offset_in_desc) as u64).min(self.total - self.posted) as u32;
            let piece = DirectDesc {
                va: d.va.wrapping_add(self.offset_in_desc as u64),
                rkey: d.rkey,
                len: take,
            };
            let local = self.posted;
            self.offset_in_desc += take;
            self.posted += take as u64;
            return Some((piece, local));
        }
    }
}

/// The local memory a command's data moves through.
#[derive(Debug, Clone)]
pub(super) enum DataBuffer {
    /// None (no data, immediate data, or not allocated yet).
    None,
    /// An extent of the channel's data pool.
    Pool(Extent),
    /// A RAM backstore's buffer at `offset`: zero copy.
    Backstore { buf: Arc<DmaBuf>, offset: u64 },
}

/// A command's data phase, as the IU and the CDB describe it.
#[derive(Debug, Clone)]
pub(super) struct DataTransfer {
    /// Direction the initiator's descriptors point (`None`: none).
    pub(super) descriptor_dir: DataDir,
    /// Direction data moves after reconciling CDB and descriptors.
    pub(super) dir: DataDir,
    pub(super) descriptors: DataDescriptors,
    /// Sum of the descriptor lengths (the initiator's buffer size).
    pub(super) descriptor_len: u64,
    /// TOTAL LENGTH of an indirect header, checked against the table.
    pub(super) indirect_len: Option<u32>,
    /// Bytes the CDB moves (or may move, for data-in).
    pub(super) expected_len: u32,
    pub(super) buffer: DataBuffer,
}

impl DataTransfer {
    const NONE: DataTransfer = DataTransfer {
        descriptor_dir: DataDir::None,
        dir: DataDir::None,
        descriptors: DataDescriptors::None,
        descriptor_len: 0,
        indirect_len: None,
        expected_len: 0,
        buffer: DataBuffer::None,
    };

    /// Bytes of the data pool the command needs.
    fn pool_bytes(&self) -> u64 {
        let in_place = self.descriptors.is_immediate() || !matches!(self.buffer, DataBuffer::None);
        if self.dir == DataDir::None || in_place {
            0
        } else {
            self.expected_len as u64
        }
    }
}

/// What the SRP_RSP will say (SRP r16a 6.9).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Response {
    pub(super) status: ScsiStatus,
    pub(super) sense: Option<Sense>,
    /// DOOVER / DOUNDER / DIOVER / DIUNDER.
    pub(super) flags: u8,
    pub(super) data_out_residual: u32,
    pub(super) data_in_residual: u32,
    /// Task management response code (RSPVALID).
    pub(super) rsp_code: Option<u8>,
}

/// One command (or task management request) of a channel.
#[derive(Debug)]
pub(super) struct Command {
    pub(super) gen: Generation,
    /// The receive slot holding the request IU.
    pub(super) recv_slot: u32,
    pub(super) tag: Tag,
    pub(super) lun: [u8; 8],
    /// The clock when the request arrived (`Channel::set_clock`).
    pub(super) arrived: u64,
    /// Its LUN's slot in the channel's `LunStats`, once known.
    pub(super) stats_slot: Option<u16>,
    pub(super) cdb: Cdb,
    /// The CDB decoded by the SCSI layer, once planned.
    pub(super) scsi: Option<ScsiCommand>,
    pub(super) is_task_mgmt: bool,
    /// Whether the request consumed a credit not returned yet.
    pub(super) holds_credit: bool,
    /// The wait queue the command is on.
    pub(super) queued_for: Option<Resource>,
    pub(super) aborted: bool,
    /// Task management request waiting for this aborted command to end.
    pub(super) abort_waiter: Option<CmdId>,
    /// Another channel's abort waits for this command to end.
    pub(super) remote_abort: bool,
    /// Aborted by a task set function (LUN RESET, ABORT/CLEAR TASK SET) of
    /// its own I_T nexus: answered TASK ABORTED once its work in flight has
    /// ended, ahead of the function's response (`docs/task-management.md`).
    pub(super) answer_abort: bool,
    /// Task management whose abort reaches other channels: the
    /// generation it published, waited for after its own channel's.
    pub(super) task_set_gen: Option<u64>,
    /// Task attribute once the command entered the task set (SIMPLE before).
    pub(super) attr: u8,
    /// Arrival order on the channel.
    pub(super) seq: u64,
    pub(super) transfer: DataTransfer,
    pub(super) response: Response,
    pub(super) state: CommandState,
}

impl Response {
    const GOOD: Response = Response {
        status: ScsiStatus::GOOD,
        sense: None,
        flags: 0,
        data_out_residual: 0,
        data_in_residual: 0,
        rsp_code: None,
    };
}

impl Command {
    /// A request about to be answered (`Respond`) unless its IU leads
    /// elsewhere.
    pub(super) fn new(gen: Generation, recv_slot: u32, tag: Tag, holds_credit: bool) -> Command {
        Command {
            gen,
            recv_slot,
            tag,
            lun: [0; 8],
            arrived: 0,
            stats_slot: None,
            cdb: Cdb::EMPTY,
            scsi: None,
            is_task_mgmt: false,
            holds_credit,
            queued_for: None,
            aborted: false,
            abort_waiter: None,
            remote_abort: false,
            answer_abort: false,
            task_set_gen: None,
            attr: 0,
            seq: 0,
            transfer: DataTransfer::NONE,
            response: Response::GOOD,
            state: CommandState::RESPOND,
        }
    }

    /// Makes a used entry [`new`](Self::new) again, field by field (in
    /// place, with no copy of the whole command).
    pub(super) fn reset(&mut self, gen: Generation, recv_slot: u32, tag: Tag, holds_credit: bool) {
        self.gen = gen;
        self.recv_slot = recv_slot;
        self.tag = tag;
        self.lun = [0; 8];
        self.arrived = 0;
        self.stats_slot = None;
        self.scsi = None;
        self.is_task_mgmt = false;
        self.holds_credit = holds_credit;
        self.queued_for = None;
        self.aborted = false;
        self.abort_waiter = None;
        self.remote_abort = false;
        self.answer_abort = false;
        self.task_set_gen = None;
        self.attr = 0;
        self.seq = 0;
        self.transfer = DataTransfer::NONE;
        self.response = Response::GOOD;
        self.state = CommandState::RESPOND;
    }
}

/// What a state handler did.
enum Flow {
    /// Moved on (or posted work); run the handler of the (new) state.
    Continue,
    /// Moved on and now waits for an event.
    Done,
    /// Waits for an event (a completion, the backstore); nothing done.
    Wait,
    /// Lacks `Resource`; nothing done.
    Blocked(Resource),
}

/// Whether a command in state `s` has work on the queue pair or the
/// backstore: aborted, it ends (and the task management function that
/// aborted it answers) only when that work is done.
pub(super) fn has_work_in_flight(s: &CommandState) -> bool {
    match *s {
        CommandState::FetchingTable { .. } | CommandState::Executing => true,
        CommandState::Reading { batches, .. } | CommandState::Writing { batches, .. } => batches > 0,
        _ => false,
    }
}

impl Channel {
    // ----- stepping -----------------------------------------------------

    /// Drives command `id` through as many states as resources allow.
    /// Returns whether it changed state or posted work.
    pub(super) fn step(&mut self, id: CmdId) -> bool {
        if !self.serves_commands() {
            return false;
        }
        let mut progressed = false;
        loop {
            let Some(c) = self.cmds.get(id) else {
                return progressed;
            };
            // An aborted command only posts its TASK ABORTED answer.
            if c.aborted && !(c.answer_abort && matches!(c.state, CommandState::Respond { .. })) {
                return progressed;
            }
            let flow = match c.state {
                CommandState::NeedTable(table) => self.need_table(id, table),
                CommandState::NeedBuffer => self.need_buffer(id),
                CommandState::Reading { cursor, batches } => self.reading(id, cursor, batches),
                CommandState::ReadyToExecute => self.ready_to_execute(id),
                CommandState::Writing { cursor, batches } => self.writing(id, cursor, batches),
                CommandState::Respond {
                    batches,
                    unsignaled_writes,
                } => self.respond(id, batches, unsignaled_writes),
                CommandState::FetchingTable { .. }
                | CommandState::Executing
                | CommandState::Responding { .. }
                | CommandState::TaskMgmtWait { .. }
                | CommandState::TaskSetWait { .. }
                | CommandState::Dormant(_) => Flow::Wait,
            };
            match flow {
                Flow::Continue => progressed = true,
                Flow::Done => return true,
                Flow::Wait => return progressed,
                Flow::Blocked(r) => {
                    self.park(id, r);
                    return progressed;
                }
            }
        }
    }

    /// Whether command `id` may take `r` now: nobody waits for it, or `id`
    /// is the waiter being resumed.
    /// Whether `id` may take resource `r` now: nobody waits for it, or `id`
    /// is the waiter being resumed. A resumed waiter may take every
    /// resource it needs, also those others queue for: resumption goes in
    /// the global order of parking, and a command that needs two resources
    /// (an RDMA READ credit and a send-queue slot) must not wait at the
    /// head of one queue for the head of the other, which may wait for it.
    fn may_take(&self, id: CmdId, r: Resource) -> bool {
        !self.waiters.has_waiters(r) || self.resuming.is_some_and(|(who, _)| who == id)
    }

    fn set_state(&mut self, id: CmdId, state: CommandState) {
        if let Some(c) = self.cmds.get_mut(id) {
            c.state = state;
        }
    }

    fn park(&mut self, id: CmdId, r: Resource) {
        let Some(c) = self.cmds.get_mut(id) else {
            return;
        };
        match c.queued_for {
            Some(q) if q == r => return,
            Some(q) => self.waiters.remove(q, id),
            None => {}
        }
        c.queued_for = Some(r);
        self.waiters.push_back(r, id);
    }

    /// Resumes waiting commands in the order they were parked, each queue
    /// in FIFO order: a waiter that cannot move keeps its place at the
    /// head of its queue, which then stops for this round.
    pub(super) fn resume_waiters(&mut self) {
        if self.waiters.is_empty() {
            return;
        }
        // Moving a waiter only takes resources, so rounds end.
        loop {
            let mut progressed = false;
            // Each waiter is tried at most once per round.
            let mut budget = Resource::ALL.map(|r| self.waiters.len(r));
            loop {
                let next = Resource::ALL
                    .into_iter()
                    .filter(|&r| budget[r as usize] > 0)
                    .filter_map(|r| Some((self.waiters.head_seq(r)?, r)))
                    .min_by_key(|&(seq, _)| seq);
                let Some((_, r)) = next else {
                    break;
                };
                budget[r as usize] -= 1;
                let Some((seq, id)) = self.waiters.pop_front(r) else {
                    continue;
                };
                match self.cmds.get_mut(id) {
                    Some(c) => c.queued_for = None,
                    None => continue,
                }
                self.resuming = Some((id, r));
                let moved = self.step(id);
                self.resuming = None;
                if moved {
                    progressed = true;
                } else if self.cmds.get(id).is_some_and(|c| c.queued_for == Some(r)) {
                    // Back to the head: later waiters stay behind it.
                    self.waiters.back_to_head(r, seq);
                    budget[r as usize] = 0;
                }
            }
            if !progressed {
                return;
            }
        }
    }

    // ----- state handlers ------------------------------------------------

    fn need_table(&mut self, id: CmdId, ext: ExternalTable) -> Flow {
        let ExternalTable { table, count } = ext;
        // The table descriptor covers the whole table: one 16-byte
        // descriptor (SRP r16a 5.5.2.1) per descriptor counted.
        if count == 0 || count > self.cfg.max_desc || table.len != count * DESC_LEN {
            self.check_condition(id, Sense::invalid_field_in_command_iu());
            return Flow::Continue;
        }
        if !self.may_take(id, Resource::ReadCredit) || self.reads_in_flight >= self.cfg.rdma_read_depth {
            return Flow::Blocked(Resource::ReadCredit);
        }
        if !self.may_take(id, Resource::SendSlot) || self.sq_free() < 1 {
            return Flow::Blocked(Resource::SendSlot);
        }
        if !self.may_take(id, Resource::TableBuffer) {
            return Flow::Blocked(Resource::TableBuffer);
        }
        let Some(c) = self.cmds.get_mut(id) else {
            return Flow::Wait;
        };
        let Some(extent) = self.tables.alloc(table.len as u64) else {
            return Flow::Blocked(Resource::TableBuffer);
        };
        let wr = WorkRequest {
            wr_id: WrId {
                index: u32::from(id.0),
                kind: WrKind::TableRead,
                count: 1,
                gen: c.gen.get(),
            }
            .encode(),
            opcode: WrOpcode::RdmaRead,
            local: LocalSeg {
                region: Region::Table,
                offset: extent.offset,
                len: table.len,
            },
            remote_addr: table.va,
            rkey: table.rkey,
            signaled: true,
        };
        c.state = CommandState::FetchingTable { table: extent, count };
        self.reads_in_flight += 1;
        self.sq_in_flight += 1;
        self.actions.push_back(Action::PostSend(wr));
        Flow::Done
    }

    fn need_buffer(&mut self, id: CmdId) -> Flow {
        let Some(need) = self.cmds.get(id).map(|c| c.transfer.pool_bytes()) else {
            return Flow::Wait;
        };
        if need > 0 {
            if !self.pool.fits(need) {
                self.check_condition(id, Sense::invalid_field_in_cdb());
                return Flow::Continue;
            }
            if !self.may_take(id, Resource::DataBuffer) {
                return Flow::Blocked(Resource::DataBuffer);
            }
            let Some(extent) = self.pool.alloc(need) else {
                return Flow::Blocked(Resource::DataBuffer);
            };
            if let Some(c) = self.cmds.get_mut(id) {
                c.transfer.buffer = DataBuffer::Pool(extent);
            }
        }
        let Some(c) = self.cmds.get_mut(id) else {
            return Flow::Wait;
        };
        let t = &c.transfer;
        let immediate = t.dir == DataDir::Out && t.descriptors.is_immediate();
        let len = u64::from(t.expected_len);
        c.state = if t.dir == DataDir::Out && !immediate && len > 0 {
            CommandState::Reading {
                cursor: TransferCursor::new(len),
                batches: 0,
            }
        } else {
            CommandState::ReadyToExecute
        };
        if immediate {
            // The data came in the IU.
            self.count(id, |s| s.bytes_out += len);
        }
        Flow::Continue
    }

    fn reading(&mut self, id: CmdId, cursor: TransferCursor, batches: u32) -> Flow {
        if cursor.is_done() {
            // The last batch's completion moves on.
            return Flow::Wait;
        }
        if !self.may_take(id, Resource::ReadCredit) {
            return Flow::Blocked(Resource::ReadCredit);
        }
        if !self.may_take(id, Resource::SendSlot) {
            return Flow::Blocked(Resource::SendSlot);
        }
        let reads = self.cfg.rdma_read_depth.saturating_sub(self.reads_in_flight);
        if reads == 0 {
            return Flow::Blocked(Resource::ReadCredit);
        }
        let room = reads.min(self.sq_free());
        if room == 0 {
            return Flow::Blocked(Resource::SendSlot);
        }
        let (n, cursor) = self.post_rdma(id, WrOpcode::RdmaRead, cursor, room, false);
        if n == 0 {
            // The descriptors end before the data-out does (their lengths
            // were checked against the CDB, so this does not happen).
            self.check_condition(id, Sense::invalid_field_in_command_iu());
            return Flow::Continue;
        }
        self.reads_in_flight += n;
        self.set_state(
            id,
            CommandState::Reading {
                cursor,
                batches: batches + 1,
            },
        );
        if cursor.is_done() {
            // All posted: the last batch's completion moves on.
            Flow::Done
        } else {
            Flow::Continue
        }
    }

    fn ready_to_execute(&mut self, id: CmdId) -> Flow {
        let Some(c) = self.cmds.get_mut(id) else {
            return Flow::Wait;
        };
        if let DataBuffer::Backstore { .. } = c.transfer.buffer {
            // Zero copy: the data already sits in (or is read straight
            // from) the backstore. Another I_T nexus's PREEMPT AND ABORT
            // since the command was planned still takes its response away
            // (SPC-4 5.13.11.5; TAS = 0).
            if c.scsi.is_some_and(|s| self.nexus.is_aborted(&s)) {
                self.count(id, |s| s.aborted += 1);
                self.finish_silently(id);
                return Flow::Done;
            }
            let len = c.transfer.expected_len;
            self.complete_scsi(id, ScsiStatus::GOOD, None, len);
            return Flow::Continue;
        }
        c.state = CommandState::Executing;
        self.actions.push_back(Action::Execute { cmd: id });
        Flow::Done
    }

    fn writing(&mut self, id: CmdId, cursor: TransferCursor, batches: u32) -> Flow {
        if !self.may_take(id, Resource::SendSlot) {
            return Flow::Blocked(Resource::SendSlot);
        }
        let free = self.sq_free();
        if free == 0 {
            return Flow::Blocked(Resource::SendSlot);
        }
        let remaining = self.remaining_wrs(id, cursor);
        if remaining < free {
            // All remaining WRITEs plus the response in one chain.
            let (n, cursor) = self.post_rdma(id, WrOpcode::RdmaWrite, cursor, remaining, true);
            let total = cursor.total;
            self.count(id, |s| s.bytes_in += total);
            self.set_state(
                id,
                CommandState::Respond {
                    batches,
                    unsignaled_writes: n,
                },
            );
            return Flow::Continue;
        }
        let (n, cursor) = self.post_rdma(id, WrOpcode::RdmaWrite, cursor, free, false);
        self.set_state(
            id,
            CommandState::Writing {
                cursor,
                batches: batches + u32::from(n > 0),
            },
        );
        Flow::Continue
    }

    fn respond(&mut self, id: CmdId, batches: u32, unsignaled_writes: u32) -> Flow {
        if !self.may_take(id, Resource::SendSlot) || self.sq_free() < 1 {
            return Flow::Blocked(Resource::SendSlot);
        }
        // The receive buffer goes back before the credit it backs is
        // returned in this response.
        let Some(c) = self.cmds.get_mut(id) else {
            return Flow::Wait;
        };
        let slot = c.recv_slot;
        let credit = std::mem::take(&mut c.holds_credit);
        self.slots_held = self.slots_held.saturating_sub(1);
        self.actions.push_back(Action::PostRecv { slot });
        if credit {
            self.credits.on_release();
        }
        self.count_response(id);
        let len = self.build_rsp(id);
        let Some(c) = self.cmds.get_mut(id) else {
            return Flow::Wait;
        };
        // A response chained behind data-in WRITEs retires them.
        let wr = WorkRequest {
            wr_id: WrId {
                index: u32::from(id.0),
                kind: WrKind::Response,
                count: (1 + unsignaled_writes) as u16,
                gen: c.gen.get(),
            }
            .encode(),
            opcode: WrOpcode::Send,
            local: LocalSeg {
                region: Region::Send,
                offset: u64::from(id.0) * self.send_slot_size as u64,
                len,
            },
            remote_addr: 0,
            rkey: 0,
            signaled: true,
        };
        c.state = CommandState::Responding { batches };
        self.sq_in_flight += 1;
        self.actions.push_back(Action::PostSend(wr));
        Flow::Done
    }

    // ----- events of the command path --------------------------------------

    /// The RDMA READ of the external table of `id` completed.
    pub(super) fn on_table_fetched(&mut self, id: CmdId) {
        let Some(c) = self.cmds.get_mut(id) else {
            return;
        };
        let CommandState::FetchingTable { table, count } = c.state else {
            tracing::error!(cmd = id.0, state = ?c.state, "table read completed for a command not fetching one");
            return;
        };
        c.transfer.descriptors = DataDescriptors::Fetched { table, count };
        c.state = CommandState::NeedBuffer;
        if c.aborted {
            return self.finish_silently(id);
        }
        let descriptors = c.transfer.descriptors;
        let total: u64 = (0..count)
            .filter_map(|i| self.descriptor(&descriptors, i))
            .map(|d| d.len as u64)
            .sum();
        let Some(c) = self.cmds.get_mut(id) else {
            return;
        };
        let t = &mut c.transfer;
        t.descriptor_len = total;
        if t.indirect_len.is_some_and(|h| h as u64 != total) {
            // TOTAL LENGTH of the indirect header is the sum of the
            // table's descriptor lengths.
            self.check_condition(id, Sense::invalid_field_in_command_iu());
        } else if t.dir == DataDir::Out && total != t.expected_len as u64 {
            self.reject_data_out_length(id);
        }
        self.step(id);
    }

    /// A signaled batch of data-out READs of `id` completed, retiring
    /// `reads` RDMA READs.
    pub(super) fn on_reads_done(&mut self, id: CmdId, reads: u32) {
        self.reads_in_flight = self.reads_in_flight.saturating_sub(reads);
        let Some(c) = self.cmds.get_mut(id) else {
            return;
        };
        let CommandState::Reading { cursor, batches } = &mut c.state else {
            tracing::error!(cmd = id.0, state = ?c.state, "data-out READs completed for a command not reading");
            return;
        };
        *batches = batches.saturating_sub(1);
        let (cursor, batches) = (*cursor, *batches);
        if c.aborted {
            if batches == 0 {
                self.finish_silently(id);
            }
        } else if batches == 0 && cursor.is_done() {
            c.state = CommandState::ReadyToExecute;
            let total = cursor.total;
            self.count(id, |s| s.bytes_out += total);
            self.step(id);
        }
    }

    /// A signaled batch of data-in WRITEs of `id` completed.
    pub(super) fn on_writes_done(&mut self, id: CmdId) {
        let Some(c) = self.cmds.get_mut(id) else {
            return;
        };
        let (CommandState::Writing { batches, .. }
        | CommandState::Respond { batches, .. }
        | CommandState::Responding { batches }) = &mut c.state
        else {
            tracing::error!(cmd = id.0, state = ?c.state, "data-in WRITEs completed for a command not writing");
            return;
        };
        *batches = batches.saturating_sub(1);
        if c.aborted && *batches == 0 {
            self.finish_silently(id);
        }
    }

    /// The SCSI command of `id` finished with `status`; `produced` bytes
    /// of data-in are ready. Moves to the data-in phase or the response.
    pub(super) fn complete_scsi(
        &mut self,
        id: CmdId,
        status: ScsiStatus,
        sense: Option<Sense>,
        produced: u32,
    ) {
        let Some(c) = self.cmds.get_mut(id) else {
            return;
        };
        let r = &mut c.response;
        r.status = status;
        r.sense = sense;
        c.state = CommandState::RESPOND;
        if c.transfer.dir != DataDir::In {
            return;
        }
        // SRP r16a 6.9: DIOVER when the command had more data than the
        // buffer takes, DIUNDER when it sent less than the buffer holds.
        let good = status == ScsiStatus::GOOD || status == ScsiStatus::CONDITION_MET;
        let avail = c.transfer.descriptor_len;
        let sent = if good { (produced as u64).min(avail) } else { 0 };
        if good && produced as u64 > avail {
            r.flags |= Rsp::DIOVER;
            r.data_in_residual = (produced as u64 - avail) as u32;
        } else if sent < avail {
            r.flags |= Rsp::DIUNDER;
            r.data_in_residual = (avail - sent).min(u32::MAX as u64) as u32;
        }
        if sent > 0 {
            c.state = CommandState::Writing {
                cursor: TransferCursor::new(sent),
                batches: 0,
            };
        }
    }

    /// Ends the command with CHECK CONDITION and `sense`, moving no data.
    pub(super) fn check_condition(&mut self, id: CmdId, sense: Sense) {
        let Some(c) = self.cmds.get_mut(id) else {
            return;
        };
        c.response.status = ScsiStatus::CHECK_CONDITION;
        c.response.sense = Some(sense);
        c.transfer.dir = DataDir::None;
        c.state = CommandState::RESPOND;
    }

    /// SRP r16a 6.9 / SAM-5: a data-out buffer whose length differs from
    /// the CDB's transfer length is refused rather than partly written (the
    /// kernel target does the same for WRITE-type commands).
    pub(super) fn reject_data_out_length(&mut self, id: CmdId) {
        let Some(c) = self.cmds.get_mut(id) else {
            return;
        };
        let have = c.transfer.descriptor_len;
        let need = c.transfer.expected_len as u64;
        let r = &mut c.response;
        if have < need {
            r.flags |= Rsp::DOOVER;
            r.data_out_residual = (need - have) as u32;
        } else {
            r.flags |= Rsp::DOUNDER;
            r.data_out_residual = have.min(u32::MAX as u64) as u32;
        }
        self.check_condition(id, Sense::invalid_field_in_command_iu());
    }

    // ----- aborting and ending ---------------------------------------------

    /// Aborts command `t` on behalf of task management request `tmf`.
    pub(super) fn abort(&mut self, t: CmdId, tmf: CmdId) {
        let Some(c) = self.cmds.get_mut(t) else {
            return;
        };
        if matches!(c.state, CommandState::Responding { .. }) {
            // The response is on the wire ahead of ours.
            return;
        }
        if c.aborted {
            // An earlier function aborted it and waits for its work in
            // flight: this one must not answer before that work is done
            // either (a late WRITE would land after our answer).
            self.wait_for_aborted(t, tmf);
            return;
        }
        c.aborted = true;
        self.count(t, |s| s.aborted += 1);
        let Some(c) = self.cmds.get_mut(t) else {
            return;
        };
        let in_flight = has_work_in_flight(&c.state);
        if in_flight || c.answer_abort {
            // Its answer (TASK ABORTED) goes ahead of the function's.
            c.abort_waiter = Some(tmf);
            self.add_pending(tmf);
        }
        if !in_flight {
            self.finish_silently(t);
        }
    }

    /// Makes task management request `tmf` wait for command `t`, aborted
    /// earlier and still in flight. A command names one waiter and so does a
    /// waiting function (the task management request it holds back): `tmf`
    /// waits for the last function of the chain that starts at `t`'s
    /// waiter, which answers only after `t` has ended. Waiting that long
    /// may be longer than needed, never shorter.
    fn wait_for_aborted(&mut self, t: CmdId, tmf: CmdId) {
        let Some(mut w) = self.cmds.get(t).and_then(|c| c.abort_waiter) else {
            if let Some(c) = self.cmds.get_mut(t) {
                c.abort_waiter = Some(tmf);
                self.add_pending(tmf);
            }
            return;
        };
        loop {
            if w == tmf {
                return; // already waiting for this chain
            }
            match self.cmds.get(w).and_then(|c| c.abort_waiter) {
                Some(next) => w = next,
                None => break,
            }
        }
        if let Some(c) = self.cmds.get_mut(w) {
            // Every function of a chain still waits: each leaves it when it
            // answers, and a command when it ends.
            debug_assert!(matches!(c.state, CommandState::TaskMgmtWait { .. }));
            c.abort_waiter = Some(tmf);
            self.add_pending(tmf);
        }
    }

    fn add_pending(&mut self, tmf: CmdId) {
        if let Some(CommandState::TaskMgmtWait { pending }) = self.cmds.get_mut(tmf).map(|c| &mut c.state) {
            *pending += 1;
        }
    }

    /// One of the commands (or earlier functions) task management request
    /// `tmf` waits for ended; when it was the last, `tmf` answers and the
    /// function waiting for it, if any, is told.
    pub(super) fn waited_ended(&mut self, tmf: CmdId) {
        let mut next = Some(tmf);
        while let Some(t) = next.take() {
            let Some(c) = self.cmds.get_mut(t) else {
                return;
            };
            let CommandState::TaskMgmtWait { pending } = &mut c.state else {
                return;
            };
            *pending = pending.saturating_sub(1);
            if *pending == 0 {
                next = c.abort_waiter.take();
                self.local_aborts_ended(t);
            }
        }
    }

    /// Ends an aborted (or orphaned) command without a response: its
    /// buffer returns to the ring and its credit is owed to the initiator.
    /// A command the function of its own nexus aborted is answered TASK
    /// ABORTED instead (`answer_abort`), moving no more data.
    pub(super) fn finish_silently(&mut self, id: CmdId) {
        if self.answer_aborted(id) {
            return;
        }
        let waiter = self.cmds.get_mut(id).and_then(|c| c.abort_waiter.take());
        self.release(id);
        if let Some(t) = waiter {
            self.waited_ended(t);
        }
        self.maybe_cred_req();
        self.maybe_closed();
    }

    /// Frees a command and its buffers; reposts its receive slot unless the
    /// channel is going away with its own ring (a shared slot always goes
    /// back).
    pub(super) fn release(&mut self, id: CmdId) {
        let Some(c) = self.remove_command(id) else {
            return;
        };
        let live = self.serves_commands();
        // A responding command gave its slot back when it posted the
        // response (see `respond`).
        if !c.responding {
            self.slots_held = self.slots_held.saturating_sub(1);
            if live || self.shares_recv() {
                self.actions.push_back(Action::PostRecv { slot: c.recv_slot });
            }
        }
        if live && c.holds_credit {
            self.credits.on_release();
        }
    }

    /// Removes a command from the channel and its wait queue and returns
    /// its pool extents; says what else releasing it involves.
    pub(super) fn remove_command(&mut self, id: CmdId) -> Option<Removed> {
        self.cmds.get(id)?;
        self.count_left(id);
        self.task_set.left();
        self.left_task_set(id);
        let c = self.cmds.get_mut(id)?;
        if std::mem::take(&mut c.remote_abort) {
            self.remote_pending = self.remote_pending.saturating_sub(1);
        }
        if let CommandState::TaskSetWait { .. } = c.state {
            self.task_set_waiters = self.task_set_waiters.saturating_sub(1);
        }
        if let Some(r) = c.queued_for {
            self.waiters.remove(r, id);
        }
        if let DataBuffer::Pool(e) = std::mem::replace(&mut c.transfer.buffer, DataBuffer::None) {
            self.pool.free(e);
        }
        if let DataDescriptors::Fetched { table, .. } = c.transfer.descriptors {
            self.tables.free(table);
        }
        if let CommandState::FetchingTable { table, .. } = c.state {
            self.tables.free(table);
        }
        let removed = Removed {
            recv_slot: c.recv_slot,
            holds_credit: c.holds_credit,
            responding: matches!(c.state, CommandState::Responding { .. }),
        };
        self.cmds.vacate(id);
        Some(removed)
    }

    // ----- transfers -------------------------------------------------------

    fn descriptor(&self, d: &DataDescriptors, i: u32) -> Option<DirectDesc> {
        match *d {
            DataDescriptors::Direct(d) if i == 0 => Some(d),
            DataDescriptors::InIu { offset, count } if i < count => {
                Some(read_desc(&self.recv, offset as u64 + (i * DESC_LEN) as u64))
            }
            DataDescriptors::Fetched { table, count } if i < count => {
                Some(read_desc(self.tables.buf(), table.offset + (i * DESC_LEN) as u64))
            }
            _ => None,
        }
    }

    /// Number of RDMA work requests still to post from `cursor`.
    fn remaining_wrs(&self, id: CmdId, mut cursor: TransferCursor) -> u32 {
        let Some(c) = self.cmds.get(id) else {
            return 0;
        };
        let d = &c.transfer.descriptors;
        let mut n = 0;
        while cursor.next_piece(|i| self.descriptor(d, i)).is_some() {
            n += 1;
        }
        n
    }

    /// Posts up to `max` RDMA requests of command `id` from `cursor`. The
    /// last one is signaled unless `then_response` (the response SEND that
    /// follows retires them). Returns how many were posted and the cursor
    /// after them.
    fn post_rdma(
        &mut self,
        id: CmdId,
        op: WrOpcode,
        mut cursor: TransferCursor,
        max: u32,
        then_response: bool,
    ) -> (u32, TransferCursor) {
        let Some(c) = self.cmds.get(id) else {
            return (0, cursor);
        };
        let (region, base) = match &c.transfer.buffer {
            DataBuffer::Backstore { buf, offset } => (Region::Ram { base: buf.addr() }, *offset),
            DataBuffer::Pool(e) => (Region::Pool, e.offset),
            DataBuffer::None => (Region::Pool, 0),
        };
        let gen = c.gen.get();
        let descriptors = &c.transfer.descriptors;
        let mut n = 0u32;
        while n < max {
            let Some((piece, local)) = cursor.next_piece(|i| self.descriptor(descriptors, i)) else {
                break;
            };
            n += 1;
            let signaled = !then_response && (n == max || cursor.is_done());
            let (kind, count) = match (signaled, op) {
                (false, _) => (WrKind::Unsignaled, 0),
                (true, WrOpcode::RdmaRead) => (WrKind::DataRead, n as u16),
                (true, _) => (WrKind::DataWrite, n as u16),
            };
            self.actions.push_back(Action::PostSend(WorkRequest {
                wr_id: WrId {
                    index: u32::from(id.0),
                    kind,
                    count,
                    gen,
                }
                .encode(),
                opcode: op,
                local: LocalSeg {
                    region,
                    offset: base + local,
                    len: piece.len,
                },
                remote_addr: piece.va,
                rkey: piece.rkey,
                signaled,
            }));
        }
        self.sq_in_flight += n;
        (n, cursor)
    }

    // ----- the response ----------------------------------------------------

    /// Emits the SRP_RSP of `id` into its send slot; returns its length.
    fn build_rsp(&mut self, id: CmdId) -> u32 {
        let Some(c) = self.cmds.get_mut(id) else {
            return 0;
        };
        let (t, r) = (&c.transfer, &mut c.response);
        // Residuals for a buffer the command never used (SRP r16a 6.9).
        let unused = t
            .descriptor_len
            .max(t.indirect_len.unwrap_or(0) as u64)
            .min(u32::MAX as u64) as u32;
        let residual_flags = Rsp::DOOVER | Rsp::DOUNDER | Rsp::DIOVER | Rsp::DIUNDER;
        if t.dir == DataDir::None && r.flags & residual_flags == 0 && unused > 0 {
            match t.descriptor_dir {
                DataDir::Out => {
                    r.flags |= Rsp::DOUNDER;
                    r.data_out_residual = unused;
                }
                DataDir::In => {
                    r.flags |= Rsp::DIUNDER;
                    r.data_in_residual = unused;
                }
                DataDir::None => {}
            }
        }
        let delta = self.credits.take_delta();
        let Some(c) = self.cmds.get(id) else {
            return 0;
        };
        let r = &c.response;
        let mut sense_buf = [0u8; Sense::FIXED_LEN];
        let sense_len = r.sense.as_ref().map_or(0, |s| s.emit_fixed(&mut sense_buf));
        let rsp_data = r.rsp_code.map(|code| [0, 0, 0, code]);
        let mut flags = r.flags;
        if sense_len > 0 {
            flags |= Rsp::SNSVALID;
        }
        if rsp_data.is_some() {
            flags |= Rsp::RSPVALID;
        }
        let rsp = Rsp {
            tag: c.tag,
            sol_not: 0,
            req_lim_delta: delta,
            flags,
            status: r.status.0,
            data_out_res_cnt: r.data_out_residual,
            data_in_res_cnt: r.data_in_residual,
            sense: &sense_buf[..sense_len],
            resp_data: rsp_data.as_ref().map_or(&[][..], |r| &r[..]),
        };
        let off = id.index() * self.send_slot_size as usize;
        let emitted = self
            .send
            .with_bytes_mut(off, self.send_slot_size as usize, |b| rsp.emit(b));
        match emitted {
            Ok(n) => n as u32,
            Err(e) => {
                // Cannot happen with a 64-byte minimum slot and 18-byte sense.
                tracing::error!(?e, "SRP_RSP does not fit its send slot");
                0
            }
        }
    }

    /// What the driver needs to execute command `id` (after `Action::Execute`).
    pub fn exec_request(&self, id: CmdId) -> Option<ExecRequest<'_>> {
        let c = self.cmds.get(id)?;
        if c.state != CommandState::Executing {
            return None;
        }
        let command = c.scsi.as_ref()?;
        let t = &c.transfer;
        let (buf, offset, len) = match (t.descriptors, &t.buffer) {
            (DataDescriptors::Immediate { offset, len }, _) => (&self.recv, offset as usize, len),
            (_, DataBuffer::Pool(e)) => (self.pool.buf(), e.offset as usize, t.expected_len),
            _ => (self.pool.buf(), 0, 0),
        };
        Some(ExecRequest {
            nexus: &self.nexus,
            lun: c.lun,
            cdb: c.cdb.as_bytes(),
            command,
            buf,
            offset,
            len,
        })
    }
}

fn read_desc(buf: &DmaBuf, offset: u64) -> DirectDesc {
    let mut b = [0u8; DirectDesc::LEN];
    buf.read(offset as usize, &mut b);
    DirectDesc::decode(&b)
}

#[cfg(test)]
#[path = "command_tests.rs"]
mod tests;
