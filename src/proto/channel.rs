//! One SRP RDMA channel, sans I/O.
//!
//! The channel owns the memory its queue pair uses (receive ring, send ring,
//! data pools) and the state of every command. It consumes events
//! (`handle_recv`, `handle_completion`, `handle_exec_done`,
//! `handle_disconnect`, `handle_drained`) and queues [`Action`]s for its
//! driver (`poll_action`). It never blocks, allocates on the data path, or
//! touches hardware: the same code runs under the RDMA driver and under the
//! in-memory test initiator.
//!
//! Receive buffers come from the channel's own ring (one receive queue per
//! queue pair, the default) or from a ring shared by every channel of a
//! device ([`SharedRecv`], for a shared receive queue): then slot numbers
//! are global to the shared ring, the channel posts nothing at start, and
//! every slot it is handed goes back (`Action::PostRecv`) whatever state the
//! channel is in, so a closing channel never keeps a slot of the shared
//! queue. Credits stay per channel either way.
//!
//! Command life cycle (SCST ib_srpt and SPDK use the same shape):
//!
//! ```text
//! received ─► [NeedTable ─► FetchingTable] ─► NeedBuffer ─► [Reading] ─► Executing
//!          ─► [Writing] ─► Respond ─► Responding ─► free (receive reposted)
//! ```
//! States in brackets are skipped when not needed. A state that lacks a
//! resource (pool space, RDMA READ depth, send-queue room) parks the context
//! on one FIFO wait list; completions kick the list in order.

use std::collections::VecDeque;
use std::sync::Arc;

use slab::Slab;

use super::action::{Action, CmdId, LocalSeg, Region, WorkRequest, WrId, WrKind, WrOpcode};
use super::credits::{Credits, RESERVED_RECVS};
use super::pool::{DataPool, Extent};
use crate::mem::DmaBuf;
use crate::scsi::{Completion, DataDir, Nexus, ScsiStatus, Sense};
use crate::wire::{
    self, AerRsp, CredReq, CredRsp, DataDesc, DirectDesc, ILogout, Opcode, Rsp, TLogout, Tag, TaskMgmt,
    TmFunction,
};

/// Send-queue entries kept free for target-initiated IUs.
const TARGET_IU_SLOTS: u32 = 2;
/// Longest CDB kept (16 bytes + additional CDB); longer ones are rejected.
const MAX_CDB: usize = 32;
/// Size of one descriptor in a table (SRP r16a 5.5.2.1).
const DESC_LEN: u32 = DirectDesc::LEN as u32;

/// A receive ring shared by several channels (shared receive queue mode):
/// `slots` receive slots of `slot_size` bytes in `buf`. The driver owns the
/// posting; channels only name slots in `Action::PostRecv`.
#[derive(Debug, Clone)]
pub struct SharedRecv {
    /// The ring memory (registered once for the whole device).
    pub buf: Arc<DmaBuf>,
    /// Bytes per slot: at least the largest request IU any login is granted.
    pub slot_size: u32,
    /// Number of slots.
    pub slots: u32,
}

impl PartialEq for SharedRecv {
    fn eq(&self, o: &SharedRecv) -> bool {
        Arc::ptr_eq(&self.buf, &o.buf) && self.slot_size == o.slot_size && self.slots == o.slots
    }
}

impl Eq for SharedRecv {}

/// Per-channel settings fixed at login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelConfig {
    /// Granted request IU length (receive slot size).
    pub it_iu_len: u32,
    /// Immediate data offset, when negotiated.
    pub imm_data_offset: Option<u16>,
    /// Send slot size (max target-to-initiator IU length).
    pub max_ti_iu_len: u32,
    /// Credits granted at login.
    pub queue_depth: u32,
    /// Data pool size in bytes (bounce buffers).
    pub pool_size: usize,
    /// Largest data transfer of one command, in bytes.
    pub max_transfer: u32,
    /// Most data descriptors one command may use (external tables).
    pub max_desc: u32,
    /// RDMA READs the channel may have outstanding (negotiated initiator depth).
    pub rdma_read_depth: u32,
    /// Send queue size of the queue pair.
    pub sq_depth: u32,
    /// Receive into this shared ring instead of a ring of the channel's own.
    pub shared_recv: Option<SharedRecv>,
}

impl ChannelConfig {
    /// Settings used by the tests and as defaults by the target.
    pub fn new(it_iu_len: u32, imm_data_offset: Option<u16>, queue_depth: u32) -> ChannelConfig {
        ChannelConfig {
            it_iu_len,
            imm_data_offset,
            max_ti_iu_len: 256,
            queue_depth,
            pool_size: 32 << 20,
            max_transfer: 8 << 20,
            max_desc: 4096,
            rdma_read_depth: 4,
            sq_depth: queue_depth * 4 + 16,
            shared_recv: None,
        }
    }

    /// Receive slots of a channel's own ring: credits plus the reserve. With
    /// a shared ring, the most receive slots the channel holds at once.
    pub fn recv_slots(&self) -> u32 {
        self.queue_depth + RESERVED_RECVS
    }

    /// Most command contexts alive at once (each owns a send slot): those
    /// holding a receive slot ([`recv_slots`](Self::recv_slots)) plus those
    /// whose response is on the send queue. A response gives its receive
    /// slot (and credit) back when it is posted, so the initiator may reuse
    /// the credit before the send completion is polled; such contexts are
    /// bounded by the send queue, which each holds an entry of.
    pub fn max_contexts(&self) -> u32 {
        self.recv_slots() + self.sq_depth
    }
}

/// Counters, logged when the channel closes.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ChannelStats {
    /// SRP_CMDs received.
    pub commands: u64,
    /// Commands that carried immediate data.
    pub immediate: u64,
    /// Commands with an indirect descriptor table.
    pub indirect: u64,
    /// Indirect tables that did not fit in the IU and were fetched by RDMA READ.
    pub external_tables: u64,
    /// Commands answered TASK SET FULL (initiator exceeded its credits).
    pub task_set_full: u64,
    /// Task management requests.
    pub task_mgmt: u64,
    /// Commands aborted by task management or disconnect.
    pub aborted: u64,
    /// Bytes fetched from the initiator (RDMA READ, data only).
    pub bytes_out: u64,
    /// Bytes sent to the initiator (RDMA WRITE).
    pub bytes_in: u64,
    /// Commands that moved data with zero copies to a RAM backstore.
    pub zero_copy: u64,
    /// SRP_CRED_REQs sent.
    pub cred_reqs: u64,
    /// IUs rejected as malformed or of an unexpected type.
    pub protocol_errors: u64,
}

impl std::ops::AddAssign<&ChannelStats> for ChannelStats {
    fn add_assign(&mut self, o: &ChannelStats) {
        let ChannelStats {
            commands,
            immediate,
            indirect,
            external_tables,
            task_set_full,
            task_mgmt,
            aborted,
            bytes_out,
            bytes_in,
            zero_copy,
            cred_reqs,
            protocol_errors,
        } = o;
        self.commands += commands;
        self.immediate += immediate;
        self.indirect += indirect;
        self.external_tables += external_tables;
        self.task_set_full += task_set_full;
        self.task_mgmt += task_mgmt;
        self.aborted += aborted;
        self.bytes_out += bytes_out;
        self.bytes_in += bytes_in;
        self.zero_copy += zero_copy;
        self.cred_reqs += cred_reqs;
        self.protocol_errors += protocol_errors;
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChannelState {
    Live,
    /// Shutting down: new commands get BUSY; SRP_T_LOGOUT goes out once idle.
    LoggingOut,
    /// SRP_T_LOGOUT posted; disconnect once it completes.
    LogoutSent,
    /// Disconnect requested; waiting for the driver to drain the QP.
    Draining,
    /// Drained: waiting only for backstore work to finish.
    Drained,
    Closed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum St {
    NeedTable,
    FetchingTable,
    NeedBuffer,
    Reading,
    Executing,
    Writing,
    Respond,
    Responding,
    /// Task management waiting for aborted commands to finish.
    TmfWait,
}

/// Where a command's descriptors are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Descs {
    None,
    One(DirectDesc),
    /// `count` descriptors at byte `offset` of the receive ring.
    InIu {
        offset: u32,
        count: u32,
    },
    /// Full table in initiator memory, not fetched yet.
    External {
        table: DirectDesc,
        count: u32,
    },
    /// `count` descriptors at byte `offset` of the table pool.
    Table {
        offset: u32,
        count: u32,
    },
    /// Immediate data at byte `offset` of the receive ring.
    Immediate {
        offset: u32,
        len: u32,
    },
}

/// Progress of an RDMA transfer across the descriptor list.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Xfer {
    next: u32,
    within: u32,
    posted: u64,
    total: u64,
}

#[derive(Debug)]
struct Ctx {
    gen: u32,
    slot: u32,
    tag: Tag,
    lun: [u8; 8],
    cdb: [u8; MAX_CDB],
    cdb_len: u8,
    state: St,
    /// Whether this request consumed a credit.
    credit: bool,
    queued: bool,
    /// Data phase direction (after reconciling CDB and descriptors).
    dir: DataDir,
    descs: Descs,
    desc_total: u64,
    /// TOTAL LENGTH of an indirect header, checked against the table.
    hdr_total: Option<u32>,
    /// Bytes the CDB moves (or may move, for data-in).
    plan_len: u32,
    /// Zero-copy backstore buffer and the byte offset in it.
    direct: Option<(Arc<DmaBuf>, u64)>,
    data: Option<Extent>,
    table: Option<Extent>,
    xfer: Xfer,
    /// Signaled chains posted and not completed.
    chains: u32,
    /// Unsignaled data-in WRITEs the response SEND will retire.
    unretired: u32,
    /// Direction the initiator's descriptors point (None: no descriptors).
    side: DataDir,
    // Response.
    status: ScsiStatus,
    sense: Option<Sense>,
    flags: u8,
    do_res: u32,
    di_res: u32,
    rsp_data: Option<u8>,
    // Task management.
    aborted: bool,
    waiter: Option<CmdId>,
    tmf_pending: u32,
    is_tmf: bool,
}

/// One SRP RDMA channel (sans I/O).
#[derive(Debug)]
pub struct Channel {
    cfg: ChannelConfig,
    nexus: Arc<Nexus>,
    state: ChannelState,
    recv: Arc<DmaBuf>,
    recv_slot: u32,
    /// Slots in `recv` (the channel's own ring, or the shared one).
    n_recv: u32,
    /// Contexts holding a receive slot (not yet responding).
    held: u32,
    /// Context (and send slot) capacity: `cfg.max_contexts()`.
    max_ctxs: u32,
    send: Arc<DmaBuf>,
    send_slot: u32,
    pool: DataPool,
    tables: DataPool,
    ctxs: Slab<Ctx>,
    gen: u32,
    credits: Credits,
    actions: VecDeque<Action>,
    waiting: VecDeque<CmdId>,
    rd_in_flight: u32,
    sq_in_flight: u32,
    /// Target IU send slots in use (bit per slot).
    target_iu_busy: u8,
    cred_req_outstanding: bool,
    /// The context `kick` is resuming (it may take resources first).
    kicking: Option<CmdId>,
    stats: ChannelStats,
}

/// What the driver needs to run a SCSI command.
#[derive(Debug)]
pub struct ExecRequest<'a> {
    /// The I_T nexus the command belongs to.
    pub nexus: &'a Arc<Nexus>,
    /// SAM LUN from the SRP_CMD.
    pub lun: [u8; 8],
    /// CDB.
    pub cdb: &'a [u8],
    /// Data buffer: holds data-out bytes, receives data-in bytes.
    pub buf: &'a Arc<DmaBuf>,
    /// Byte offset in `buf`.
    pub offset: usize,
    /// Bytes available at `offset`.
    pub len: u32,
}

fn read_desc(buf: &DmaBuf, offset: u64) -> DirectDesc {
    let mut b = [0u8; DirectDesc::LEN];
    buf.read(offset as usize, &mut b);
    DirectDesc::decode(&b)
}

impl Channel {
    /// Creates the channel and its rings; with a ring of its own, queues a
    /// `PostRecv` for every receive slot. The driver registers `recv_buf`
    /// (unless shared), `send_buf`, `pool_buf` and `table_buf` before
    /// executing the actions.
    pub fn new(cfg: ChannelConfig, nexus: Arc<Nexus>) -> std::io::Result<Channel> {
        let max_ctxs = cfg.max_contexts().min(u32::from(CmdId::MAX) + 1);
        let send_slot = cfg.max_ti_iu_len.max(64).next_multiple_of(64);
        let n_send = max_ctxs + TARGET_IU_SLOTS;
        let (recv, recv_slot, n_recv) = match &cfg.shared_recv {
            Some(s) => {
                // A request IU must fit a slot whole (immediate data too).
                let fits = s.slot_size >= cfg.it_iu_len
                    && s.slots > 0
                    && s.slots <= u32::from(u16::MAX) + 1
                    && (s.slot_size as u64) * (s.slots as u64) <= s.buf.len() as u64;
                if !fits {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidInput,
                        "shared receive ring does not fit the channel's IU length",
                    ));
                }
                (s.buf.clone(), s.slot_size, s.slots)
            }
            None => {
                let slot = cfg.it_iu_len.next_multiple_of(64);
                let n = cfg.recv_slots();
                let buf = Arc::new(DmaBuf::new(slot as usize * n as usize)?);
                (buf, slot, n)
            }
        };
        let send = Arc::new(DmaBuf::new(send_slot as usize * n_send as usize)?);
        let pool = DataPool::new(cfg.pool_size.max(cfg.max_transfer as usize))?;
        // Descriptor tables get their own pool so that waiting for data
        // space can never be blocked by tables held by waiting commands.
        let table_bytes = (cfg.max_desc as usize * DESC_LEN as usize).max(4096);
        let tables = DataPool::new(table_bytes * (cfg.queue_depth as usize).min(16))?;
        let mut actions = VecDeque::with_capacity(4 * max_ctxs as usize + 64);
        if cfg.shared_recv.is_none() {
            for slot in 0..n_recv {
                actions.push_back(Action::PostRecv { slot });
            }
        }
        Ok(Channel {
            credits: Credits::new(cfg.queue_depth),
            ctxs: Slab::with_capacity(max_ctxs as usize),
            waiting: VecDeque::with_capacity(max_ctxs as usize),
            cfg,
            nexus,
            state: ChannelState::Live,
            recv,
            recv_slot,
            n_recv,
            held: 0,
            max_ctxs,
            send,
            send_slot,
            pool,
            tables,
            gen: 0,
            actions,
            rd_in_flight: 0,
            sq_in_flight: 0,
            target_iu_busy: 0,
            cred_req_outstanding: false,
            kicking: None,
            stats: ChannelStats::default(),
        })
    }

    /// Settings of this channel.
    pub fn config(&self) -> &ChannelConfig {
        &self.cfg
    }

    /// Receive ring memory (register for local write; with a shared ring,
    /// that ring, registered by whoever owns it).
    pub fn recv_buf(&self) -> &Arc<DmaBuf> {
        &self.recv
    }

    /// Whether the channel receives into a shared ring.
    pub fn shares_recv(&self) -> bool {
        self.cfg.shared_recv.is_some()
    }

    /// Byte offset and length of receive slot `slot` in [`recv_buf`](Self::recv_buf).
    pub fn recv_slot(&self, slot: u32) -> (u64, u32) {
        (slot as u64 * self.recv_slot as u64, self.recv_slot)
    }

    /// Send ring memory (register for local access).
    pub fn send_buf(&self) -> &Arc<DmaBuf> {
        &self.send
    }

    /// Data pool memory (register for local write, the adapter reads into it).
    pub fn pool_buf(&self) -> &Arc<DmaBuf> {
        self.pool.buf()
    }

    /// Descriptor table pool memory (register for local write).
    pub fn table_buf(&self) -> &Arc<DmaBuf> {
        self.tables.buf()
    }

    /// The I_T nexus this channel belongs to.
    pub fn nexus(&self) -> &Arc<Nexus> {
        &self.nexus
    }

    /// Counters.
    pub fn stats(&self) -> &ChannelStats {
        &self.stats
    }

    /// Credit state (for tests and diagnostics).
    pub fn credits(&self) -> &Credits {
        &self.credits
    }

    /// Commands and task management requests in progress.
    pub fn in_flight(&self) -> usize {
        self.ctxs.len()
    }

    /// Whether everything is torn down.
    pub fn is_closed(&self) -> bool {
        self.state == ChannelState::Closed
    }

    /// Next action for the driver.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    // ----- events -------------------------------------------------------

    /// An IU of `len` bytes arrived in receive slot `slot`.
    pub fn handle_recv(&mut self, slot: u32, len: u32) {
        if slot >= self.n_recv {
            tracing::error!(slot, "receive completion for a slot outside the ring");
            return;
        }
        if !matches!(
            self.state,
            ChannelState::Live | ChannelState::LoggingOut | ChannelState::LogoutSent
        ) {
            // Too late to serve it. A shared slot still goes back to the
            // shared ring; an own slot dies with the channel.
            if self.shares_recv() {
                self.actions.push_back(Action::PostRecv { slot });
            }
            return;
        }
        let len = len.min(self.recv_slot);
        let (off, _) = self.recv_slot(slot);
        let op = self
            .recv
            .with_bytes(off as usize, len as usize, wire::peek_opcode);
        match op {
            Ok(Opcode::CMD) => self.on_cmd(slot, len),
            Ok(Opcode::TSK_MGMT) => self.on_tsk_mgmt(slot, len),
            Ok(Opcode::I_LOGOUT) => {
                // SRP r16a 6.5: the initiator ends the channel; no response.
                let ok = self
                    .recv
                    .with_bytes(off as usize, len as usize, |b| ILogout::parse(b).is_ok());
                if !ok {
                    self.stats.protocol_errors += 1;
                }
                tracing::info!("initiator logout");
                if self.shares_recv() {
                    self.actions.push_back(Action::PostRecv { slot });
                }
                self.disconnect();
            }
            Ok(op @ (Opcode::CRED_RSP | Opcode::AER_RSP)) => {
                // Answers to our SRP_CRED_REQ / SRP_AER_REQ; they use a
                // reserved receive slot, not a credit (SRP r16a 5.6).
                let ok = self.recv.with_bytes(off as usize, len as usize, |b| {
                    if op == Opcode::CRED_RSP {
                        CredRsp::parse(b).is_ok()
                    } else {
                        AerRsp::parse(b).is_ok()
                    }
                });
                if !ok {
                    self.stats.protocol_errors += 1;
                }
                self.cred_req_outstanding = false;
                self.actions.push_back(Action::PostRecv { slot });
            }
            _ => {
                // SRP r16a 6.6: an IU of an unknown or unexpected type ends
                // the channel with SRP_T_LOGOUT, reason "invalid IU type".
                self.stats.protocol_errors += 1;
                tracing::warn!(opcode = ?op, "unexpected IU; logging the initiator out");
                self.actions.push_back(Action::PostRecv { slot });
                self.send_t_logout(TLogout::INVALID_IU_TYPE);
            }
        }
        self.kick();
    }

    /// A work completion from the queue pair. `ok` is false for any status
    /// other than success (flushes included).
    pub fn handle_completion(&mut self, wr_id: u64, ok: bool, byte_len: u32) {
        let Some(w) = WrId::decode(wr_id) else {
            tracing::error!(wr_id, "completion with an unknown work request id");
            return;
        };
        if w.kind == WrKind::Recv {
            if ok {
                self.handle_recv(w.index, byte_len);
                return;
            }
            // A shared receive queue never flushes its receives to a queue
            // pair: a failed one was consumed (e.g. an IU longer than the
            // slot) and goes back to the ring.
            if self.shares_recv() && w.index < self.n_recv {
                self.actions.push_back(Action::PostRecv { slot: w.index });
            }
            if matches!(self.state, ChannelState::Live | ChannelState::LoggingOut) {
                tracing::warn!(slot = w.index, "receive failed; disconnecting");
                self.disconnect();
            }
            return;
        }
        if matches!(
            self.state,
            ChannelState::Draining | ChannelState::Drained | ChannelState::Closed
        ) {
            // Flushed work; everything is reclaimed in handle_drained.
            return;
        }
        if !ok {
            // Any failed work request moves an RC queue pair to the error
            // state (IB spec 10.8.3.3): the channel cannot continue.
            tracing::warn!(?w, "work request failed; disconnecting");
            self.disconnect();
            return;
        }
        self.sq_in_flight = self.sq_in_flight.saturating_sub(w.count as u32);
        if w.kind == WrKind::TargetIu {
            self.target_iu_busy &= !(1 << w.index);
            if self.state == ChannelState::LogoutSent {
                self.disconnect();
            }
            self.kick();
            return;
        }
        let id = w.index as CmdId;
        match self.ctxs.get(id as usize) {
            Some(c) if c.gen & 0xff_ffff == w.gen => {}
            _ => {
                tracing::error!(?w, "completion for a context that is not in flight");
                return;
            }
        }
        match w.kind {
            WrKind::TableRead => {
                self.rd_in_flight -= w.count as u32;
                self.on_table_fetched(id);
            }
            WrKind::DataRead => {
                self.rd_in_flight -= w.count as u32;
                let c = &mut self.ctxs[id as usize];
                c.chains -= 1;
                if c.aborted {
                    if c.chains == 0 {
                        self.finish_silently(id);
                    }
                } else if c.chains == 0 && c.xfer.posted == c.xfer.total {
                    self.stats.bytes_out += c.xfer.total;
                    c.state = St::Executing;
                    self.step(id);
                }
            }
            WrKind::DataWrite => {
                let c = &mut self.ctxs[id as usize];
                c.chains -= 1;
                if c.aborted && c.chains == 0 {
                    self.finish_silently(id);
                }
            }
            WrKind::Response => self.free_ctx(id),
            WrKind::Recv | WrKind::TargetIu | WrKind::Unsignaled => {}
        }
        self.kick();
    }

    /// The SCSI command of `cmd` finished.
    pub fn handle_exec_done(&mut self, id: CmdId, done: Completion) {
        let Some(c) = self.ctxs.get_mut(id as usize) else {
            tracing::error!(cmd = id, "execution finished for a context that is not in flight");
            return;
        };
        if c.state != St::Executing {
            tracing::error!(cmd = id, state = ?c.state, "execution finished in the wrong state");
            return;
        }
        if c.aborted || matches!(self.state, ChannelState::Draining | ChannelState::Drained) {
            self.finish_silently(id);
            self.kick();
            return;
        }
        let produced = if c.direct.is_some() {
            c.plan_len
        } else {
            done.data_in_len.min(c.plan_len)
        };
        self.complete_scsi(id, done.status, done.sense, produced);
        self.step(id);
        self.kick();
    }

    /// The connection is gone (CM DISCONNECTED, TIMEWAIT_EXIT, device
    /// removal...). The driver then drains the queue pair.
    pub fn handle_disconnect(&mut self) {
        self.disconnect();
    }

    /// The queue pair is drained: no work request is outstanding any more.
    /// Frees every context that is not executing on a backstore.
    pub fn handle_drained(&mut self) {
        if self.state == ChannelState::Closed {
            return;
        }
        self.state = ChannelState::Drained;
        self.waiting.clear();
        self.rd_in_flight = 0;
        self.sq_in_flight = 0;
        let ids: Vec<usize> = self.ctxs.iter().map(|(i, _)| i).collect();
        for i in ids {
            if self.ctxs[i].state != St::Executing {
                self.stats.aborted += u64::from(!self.ctxs[i].is_tmf);
                self.release(i as CmdId);
            }
        }
        self.maybe_closed();
    }

    /// Target shutdown (SRP r16a 6.6): answer new commands BUSY, let those in
    /// flight finish, then send SRP_T_LOGOUT and disconnect.
    pub fn logout(&mut self) {
        if self.state == ChannelState::Live {
            self.state = ChannelState::LoggingOut;
            self.kick();
        }
    }

    // ----- request handling --------------------------------------------

    fn new_ctx(&mut self, slot: u32, tag: Tag, credit: bool) -> CmdId {
        self.gen = self.gen.wrapping_add(1);
        self.held += 1;
        let id = self.ctxs.insert(Ctx {
            gen: self.gen,
            slot,
            tag,
            lun: [0; 8],
            cdb: [0; MAX_CDB],
            cdb_len: 0,
            state: St::Respond,
            credit,
            queued: false,
            dir: DataDir::None,
            descs: Descs::None,
            desc_total: 0,
            hdr_total: None,
            plan_len: 0,
            direct: None,
            data: None,
            table: None,
            xfer: Xfer::default(),
            chains: 0,
            unretired: 0,
            side: DataDir::None,
            status: ScsiStatus::GOOD,
            sense: None,
            flags: 0,
            do_res: 0,
            di_res: 0,
            rsp_data: None,
            aborted: false,
            waiter: None,
            tmf_pending: 0,
            is_tmf: false,
        });
        id as CmdId
    }

    fn on_cmd(&mut self, slot: u32, len: u32) {
        self.stats.commands += 1;
        let (off, _) = self.recv_slot(slot);
        let base = off as u32;
        let imm_off = self.cfg.imm_data_offset;
        // Parse inside the borrow and keep only plain values.
        let parsed = self.recv.with_bytes(off as usize, len as usize, |b| {
            let tag = if b.len() >= 16 {
                Some(Tag(u64::from_be_bytes(b[8..16].try_into().unwrap_or_default())))
            } else {
                None
            };
            let r = wire::Cmd::parse(b).map_err(CmdError::Wire).and_then(|cmd| {
                let mut cdb = [0u8; MAX_CDB];
                if cmd.cdb.len() > MAX_CDB {
                    return Err(CmdError::CdbTooLong);
                }
                cdb[..cmd.cdb.len()].copy_from_slice(cmd.cdb);
                let (dir, d) = match (&cmd.data_out, &cmd.data_in) {
                    (DataDesc::None, DataDesc::None) => (DataDir::None, &cmd.data_in),
                    (d, DataDesc::None) => (DataDir::Out, d),
                    (DataDesc::None, d) => (DataDir::In, d),
                    // Bidirectional commands are not supported (SBC has none
                    // the Linux initiator sends to a disk).
                    _ => return Err(CmdError::Bidirectional),
                };
                let (descs, total, hdr) = match d {
                    DataDesc::None => (Descs::None, 0u64, None),
                    DataDesc::Direct(dd) => (Descs::One(*dd), dd.len as u64, None),
                    DataDesc::Indirect(ind) => {
                        let count = ind.total_count() as u32;
                        if ind.is_complete_in_iu() {
                            // Where the header fields put the table (SRP
                            // r16a 6.8), not where the received bytes end:
                            // bytes may follow it.
                            let first = cmd.in_iu_table_offset(dir == DataDir::In);
                            let total: u64 = (0..ind.in_iu_count())
                                .filter_map(|i| ind.in_iu(i))
                                .map(|d| d.len as u64)
                                .sum();
                            (
                                Descs::InIu {
                                    offset: base + first as u32,
                                    count,
                                },
                                total,
                                Some(ind.total_len),
                            )
                        } else {
                            (
                                Descs::External {
                                    table: ind.table,
                                    count,
                                },
                                0,
                                Some(ind.total_len),
                            )
                        }
                    }
                    DataDesc::Immediate(im) => {
                        // Immediate data (SRP-2 as used by Linux): only when
                        // negotiated, after the descriptor, inside the IU.
                        let Some(io) = imm_off else {
                            return Err(CmdError::ImmediateNotNegotiated);
                        };
                        let io = io as usize;
                        if im.desc_end > io || io + im.len as usize > b.len() {
                            return Err(CmdError::ImmediateOutOfBounds);
                        }
                        (
                            Descs::Immediate {
                                offset: base + io as u32,
                                len: im.len,
                            },
                            im.len as u64,
                            None,
                        )
                    }
                };
                Ok((cmd.lun, cdb, cmd.cdb.len() as u8, dir, descs, total, hdr))
            });
            (tag, r)
        });
        let (tag, parsed) = parsed;
        let Some(tag) = tag else {
            // Not even a tag to answer: protocol violation.
            self.stats.protocol_errors += 1;
            self.actions.push_back(Action::PostRecv { slot });
            self.send_t_logout(TLogout::INVALID_IU_TYPE);
            return;
        };
        if !self.has_room(slot) {
            return;
        }
        let credit = self.credits.on_request().is_ok();
        let id = self.new_ctx(slot, tag, credit);
        if !credit {
            // SRP r16a 5.6: a request beyond the request limit; answer it
            // instead of dropping it.
            self.stats.task_set_full += 1;
            self.ctxs[id as usize].status = ScsiStatus::TASK_SET_FULL;
            return self.step(id);
        }
        if self.state != ChannelState::Live {
            self.ctxs[id as usize].status = ScsiStatus::BUSY;
            return self.step(id);
        }
        let (lun, cdb, cdb_len, dir, descs, total, hdr) = match parsed {
            Ok(v) => v,
            Err(e) => {
                self.stats.protocol_errors += 1;
                tracing::debug!(?e, "rejecting malformed SRP_CMD");
                let sense = match e {
                    CmdError::CdbTooLong => Sense::invalid_field_in_cdb(),
                    _ => Sense::invalid_field_in_command_iu(),
                };
                self.check_condition(id, sense);
                return self.step(id);
            }
        };
        {
            let c = &mut self.ctxs[id as usize];
            c.lun = lun;
            c.cdb = cdb;
            c.cdb_len = cdb_len;
            c.descs = descs;
            c.desc_total = total;
            c.hdr_total = hdr;
            c.dir = dir;
            c.side = dir;
        }
        match descs {
            Descs::Immediate { .. } => self.stats.immediate += 1,
            Descs::InIu { .. } => self.stats.indirect += 1,
            Descs::External { .. } => {
                self.stats.indirect += 1;
                self.stats.external_tables += 1;
            }
            _ => {}
        }
        // Decide what the CDB moves; SCSI errors (unmapped LUN, unsupported
        // opcode, LBA out of range, unit attention) end the command here.
        let plan = match self.nexus.plan(lun, &cdb[..cdb_len as usize]) {
            Ok(p) => p,
            Err(sense) => {
                self.check_condition(id, sense);
                return self.step(id);
            }
        };
        if plan.len > self.cfg.max_transfer {
            self.check_condition(id, Sense::invalid_field_in_cdb());
            return self.step(id);
        }
        let c = &mut self.ctxs[id as usize];
        c.plan_len = plan.len;
        if plan.dir != DataDir::None && plan.dir != c.dir && plan.len > 0 {
            // The descriptors point the other way (or are missing): nothing
            // can move. SRP r16a 6.9: report the whole length as overflow.
            let (flags, res) = if plan.dir == DataDir::In {
                (Rsp::DIOVER, &mut c.di_res)
            } else {
                (Rsp::DOOVER, &mut c.do_res)
            };
            c.flags |= flags;
            *res = plan.len;
            c.status = ScsiStatus::CHECK_CONDITION;
            c.sense = Some(Sense::invalid_field_in_command_iu());
            return self.step(id);
        }
        if plan.dir == DataDir::None {
            c.dir = DataDir::None;
        }
        if c.dir == DataDir::Out
            && matches!(
                c.descs,
                Descs::None | Descs::One(_) | Descs::InIu { .. } | Descs::Immediate { .. }
            )
            && c.desc_total != plan.len as u64
        {
            return self.reject_data_out_length(id);
        }
        if let (Some(d), false) = (plan.direct, matches!(c.descs, Descs::Immediate { .. })) {
            c.direct = Some((d.buf, d.offset));
            self.stats.zero_copy += 1;
        }
        c.state = if matches!(c.descs, Descs::External { .. }) {
            St::NeedTable
        } else {
            St::NeedBuffer
        };
        self.step(id)
    }

    /// Whether a new request can get a context. With a ring of its own the
    /// channel never has more requests than receive slots, so this always
    /// holds. With a shared ring an initiator that overdraws its request
    /// limit by more than the reserve would find slots anyway: it has broken
    /// SRP r16a 5.6 flow control beyond what TASK SET FULL can answer, so
    /// the slot goes back and the initiator is logged out.
    fn has_room(&mut self, slot: u32) -> bool {
        // Own ring: `held` never exceeds the slots posted, and responding
        // contexts never exceed the send queue, so this always holds.
        if self.held < self.cfg.recv_slots() && self.ctxs.len() < self.max_ctxs as usize {
            return true;
        }
        self.stats.protocol_errors += 1;
        tracing::warn!(
            requests = self.ctxs.len(),
            credits = self.cfg.queue_depth,
            "initiator exceeded its request limit; logging it out"
        );
        self.actions.push_back(Action::PostRecv { slot });
        self.send_t_logout(TLogout::NO_REASON);
        false
    }

    /// SRP r16a 6.9 / SAM-5: a data-out buffer whose length differs from the
    /// CDB's transfer length is refused rather than partly written (the
    /// kernel target does the same for WRITE-type commands).
    fn reject_data_out_length(&mut self, id: CmdId) {
        let c = &mut self.ctxs[id as usize];
        let have = c.desc_total;
        let need = c.plan_len as u64;
        if have < need {
            c.flags |= Rsp::DOOVER;
            c.do_res = (need - have) as u32;
        } else {
            c.flags |= Rsp::DOUNDER;
            c.do_res = have.min(u32::MAX as u64) as u32;
        }
        // Straight to the response, whatever state the command was in
        // (after an external table fetch it is `FetchingTable`).
        self.check_condition(id, Sense::invalid_field_in_command_iu());
        self.step(id);
    }

    fn check_condition(&mut self, id: CmdId, sense: Sense) {
        let c = &mut self.ctxs[id as usize];
        c.status = ScsiStatus::CHECK_CONDITION;
        c.sense = Some(sense);
        c.dir = DataDir::None;
        c.state = St::Respond;
    }

    fn on_tsk_mgmt(&mut self, slot: u32, len: u32) {
        self.stats.task_mgmt += 1;
        let (off, _) = self.recv_slot(slot);
        let parsed = self.recv.with_bytes(off as usize, len as usize, |b| {
            TaskMgmt::parse(b).map(|t| (t.tag, t.lun, t.function, t.task_tag))
        });
        let Ok((tag, lun, func, task_tag)) = parsed else {
            self.stats.protocol_errors += 1;
            self.actions.push_back(Action::PostRecv { slot });
            self.send_t_logout(TLogout::INVALID_IU_TYPE);
            return;
        };
        if !self.has_room(slot) {
            return;
        }
        let credit = self.credits.on_request().is_ok();
        let id = self.new_ctx(slot, tag, credit);
        {
            let c = &mut self.ctxs[id as usize];
            c.is_tmf = true;
            c.lun = lun;
            c.state = St::TmfWait;
        }
        let code = if !credit {
            self.stats.task_set_full += 1;
            Rsp::TM_FAILED
        } else {
            match func {
                TmFunction::ABORT_TASK => {
                    // SAM-5 7.2: abort the task with this tag; a task that no
                    // longer exists is "function complete".
                    let target = self
                        .ctxs
                        .iter()
                        .find(|(i, c)| *i != id as usize && !c.is_tmf && c.tag == task_tag && c.lun == lun)
                        .map(|(i, _)| i as CmdId);
                    if let Some(t) = target {
                        self.abort(t, id);
                    }
                    Rsp::TM_COMPLETE
                }
                TmFunction::ABORT_TASK_SET | TmFunction::CLEAR_TASK_SET | TmFunction::LUN_RESET => {
                    if func == TmFunction::LUN_RESET && !self.nexus.lun_reset(lun) {
                        Rsp::TM_FAILED
                    } else {
                        let targets: Vec<CmdId> = self
                            .ctxs
                            .iter()
                            .filter(|(i, c)| *i != id as usize && !c.is_tmf && c.lun == lun)
                            .map(|(i, _)| i as CmdId)
                            .collect();
                        for t in targets {
                            self.abort(t, id);
                        }
                        Rsp::TM_COMPLETE
                    }
                }
                // We never establish an ACA condition (NACA is not supported),
                // so CLEAR ACA is rejected as SAM-5 7.4 requires.
                TmFunction::CLEAR_ACA => Rsp::TM_NOT_SUPPORTED,
                _ => Rsp::TM_NOT_SUPPORTED,
            }
        };
        let c = &mut self.ctxs[id as usize];
        c.rsp_data = Some(code);
        if c.tmf_pending == 0 {
            c.state = St::Respond;
            self.step(id);
        }
    }

    /// Aborts command `t` on behalf of task management request `tmf`.
    fn abort(&mut self, t: CmdId, tmf: CmdId) {
        let c = &mut self.ctxs[t as usize];
        if c.aborted || matches!(c.state, St::Responding) {
            // Already going, or the response is on the wire ahead of ours.
            return;
        }
        self.stats.aborted += 1;
        c.aborted = true;
        let busy = match c.state {
            St::FetchingTable | St::Executing => true,
            St::Reading | St::Writing => c.chains > 0,
            _ => false,
        };
        if busy {
            c.waiter = Some(tmf);
            self.ctxs[tmf as usize].tmf_pending += 1;
        } else {
            self.finish_silently(t);
        }
    }

    // ----- the state machine --------------------------------------------

    fn park(&mut self, id: CmdId) {
        let c = &mut self.ctxs[id as usize];
        if !c.queued {
            c.queued = true;
            self.waiting.push_back(id);
        }
    }

    fn sq_free(&self) -> u32 {
        self.cfg
            .sq_depth
            .saturating_sub(TARGET_IU_SLOTS)
            .saturating_sub(self.sq_in_flight)
    }

    /// Drives context `id` as far as resources allow.
    fn step(&mut self, id: CmdId) {
        if !matches!(
            self.state,
            ChannelState::Live | ChannelState::LoggingOut | ChannelState::LogoutSent
        ) {
            return;
        }
        loop {
            let Some(c) = self.ctxs.get(id as usize) else {
                return;
            };
            if c.aborted {
                return;
            }
            match c.state {
                St::NeedTable => {
                    let Descs::External { table, count } = c.descs else {
                        unreachable_state(id)
                    };
                    if count == 0 || count > self.cfg.max_desc || table.len != count * DESC_LEN {
                        self.check_condition(id, Sense::invalid_field_in_command_iu());
                        continue;
                    }
                    if self.rd_in_flight >= self.cfg.rdma_read_depth || self.sq_free() < 1 {
                        return self.park(id);
                    }
                    let Some(ext) = self.tables.alloc(table.len as u64) else {
                        return self.park(id);
                    };
                    let gen = c.gen;
                    let wr = WorkRequest {
                        wr_id: WrId {
                            index: id as u32,
                            kind: WrKind::TableRead,
                            count: 1,
                            gen,
                        }
                        .encode(),
                        opcode: WrOpcode::RdmaRead,
                        local: LocalSeg {
                            region: Region::Table,
                            offset: ext.offset,
                            len: table.len,
                        },
                        remote_addr: table.va,
                        rkey: table.rkey,
                        signaled: true,
                    };
                    self.rd_in_flight += 1;
                    self.sq_in_flight += 1;
                    self.actions.push_back(Action::PostSend(wr));
                    let c = &mut self.ctxs[id as usize];
                    c.table = Some(ext);
                    c.state = St::FetchingTable;
                    return;
                }
                St::FetchingTable | St::Responding | St::TmfWait => return,
                St::NeedBuffer => {
                    let need = match (c.dir, c.descs) {
                        (_, Descs::Immediate { .. }) | (DataDir::None, _) => 0,
                        _ if c.direct.is_some() => 0,
                        (DataDir::Out, _) | (DataDir::In, _) => c.plan_len as u64,
                    };
                    let c = &mut self.ctxs[id as usize];
                    if need > 0 {
                        if !self.pool.fits(need) {
                            self.check_condition(id, Sense::invalid_field_in_cdb());
                            continue;
                        }
                        // Strict FIFO: never overtake an earlier waiter.
                        if self.kicking != Some(id) && !self.waiting.is_empty() {
                            return self.park(id);
                        }
                        let Some(ext) = self.pool.alloc(need) else {
                            return self.park(id);
                        };
                        c.data = Some(ext);
                    }
                    if c.dir == DataDir::Out && !matches!(c.descs, Descs::Immediate { .. }) && c.plan_len > 0
                    {
                        c.xfer = Xfer {
                            total: c.plan_len as u64,
                            ..Xfer::default()
                        };
                        c.state = St::Reading;
                    } else {
                        c.state = St::Executing;
                    }
                }
                St::Reading => {
                    if c.xfer.posted < c.xfer.total {
                        let room = self
                            .cfg
                            .rdma_read_depth
                            .saturating_sub(self.rd_in_flight)
                            .min(self.sq_free());
                        if room == 0 {
                            return self.park(id);
                        }
                        let n = self.post_rdma(id, WrOpcode::RdmaRead, room, false);
                        self.rd_in_flight += n;
                        if self.ctxs[id as usize].xfer.posted < self.ctxs[id as usize].xfer.total {
                            return self.park(id);
                        }
                    }
                    // Wait for the last READ batch; its completion moves on.
                    return;
                }
                St::Executing => {
                    if c.direct.is_some() {
                        // Zero copy: the data already sits in (or is read
                        // straight from) the backstore.
                        self.complete_scsi(id, ScsiStatus::GOOD, None, c.plan_len);
                        continue;
                    }
                    self.actions.push_back(Action::Execute { cmd: id });
                    return;
                }
                St::Writing => {
                    let remaining = self.remaining_wrs(id);
                    let free = self.sq_free();
                    if free == 0 {
                        return self.park(id);
                    }
                    if remaining < free {
                        // All remaining WRITEs plus the response in one chain.
                        let n = self.post_rdma(id, WrOpcode::RdmaWrite, remaining, true);
                        debug_assert_eq!(n, remaining);
                        let c = &mut self.ctxs[id as usize];
                        self.stats.bytes_in += c.xfer.total;
                        c.state = St::Respond;
                        continue;
                    }
                    self.post_rdma(id, WrOpcode::RdmaWrite, free, false);
                    return self.park(id);
                }
                St::Respond => {
                    if self.sq_free() < 1 {
                        return self.park(id);
                    }
                    // The receive buffer goes back before the credit it backs
                    // is returned in this response.
                    let slot = c.slot;
                    let credit = c.credit;
                    debug_assert!(self.held > 0, "receive slot count underflow");
                    self.held = self.held.saturating_sub(1);
                    self.actions.push_back(Action::PostRecv { slot });
                    if credit {
                        self.credits.on_release();
                        self.ctxs[id as usize].credit = false;
                    }
                    let len = self.build_rsp(id);
                    let c = &mut self.ctxs[id as usize];
                    // A response chained behind data-in WRITEs retires them.
                    let count = 1 + std::mem::take(&mut c.unretired);
                    let wr = WorkRequest {
                        wr_id: WrId {
                            index: id as u32,
                            kind: WrKind::Response,
                            count: count as u16,
                            gen: c.gen,
                        }
                        .encode(),
                        opcode: WrOpcode::Send,
                        local: LocalSeg {
                            region: Region::Send,
                            offset: id as u64 * self.send_slot as u64,
                            len,
                        },
                        remote_addr: 0,
                        rkey: 0,
                        signaled: true,
                    };
                    c.state = St::Responding;
                    self.sq_in_flight += 1;
                    self.actions.push_back(Action::PostSend(wr));
                    return;
                }
            }
        }
    }

    /// Number of RDMA work requests still to post for the current transfer.
    fn remaining_wrs(&self, id: CmdId) -> u32 {
        let c = &self.ctxs[id as usize];
        let mut x = c.xfer;
        let mut n = 0;
        while x.posted < x.total {
            match self.next_piece(c, &mut x) {
                Some(_) => n += 1,
                None => break,
            }
        }
        n
    }

    /// The next (remote, length) piece of a transfer, advancing `x`.
    fn next_piece(&self, c: &Ctx, x: &mut Xfer) -> Option<(DirectDesc, u32)> {
        loop {
            if x.posted >= x.total {
                return None;
            }
            let d = self.desc(c, x.next)?;
            if x.within >= d.len {
                x.next += 1;
                x.within = 0;
                continue;
            }
            let take = ((d.len - x.within) as u64).min(x.total - x.posted) as u32;
            let piece = DirectDesc {
                va: d.va.wrapping_add(x.within as u64),
                rkey: d.rkey,
                len: take,
            };
            x.within += take;
            x.posted += take as u64;
            return Some((piece, take));
        }
    }

    fn desc(&self, c: &Ctx, i: u32) -> Option<DirectDesc> {
        match c.descs {
            Descs::One(d) if i == 0 => Some(d),
            Descs::InIu { offset, count } if i < count => {
                Some(read_desc(&self.recv, offset as u64 + (i * DESC_LEN) as u64))
            }
            Descs::Table { offset, count } if i < count => Some(read_desc(
                self.tables.buf(),
                offset as u64 + (i * DESC_LEN) as u64,
            )),
            _ => None,
        }
    }

    /// Posts up to `max` RDMA requests of the current transfer. The last
    /// one is signaled unless `then_response` (the response SEND that
    /// follows retires them). Returns how many were posted.
    fn post_rdma(&mut self, id: CmdId, op: WrOpcode, max: u32, then_response: bool) -> u32 {
        let (local_region, local_base) = self.local_base(id);
        let c = &self.ctxs[id as usize];
        let gen = c.gen;
        let mut x = c.xfer;
        let mut n = 0u32;
        while n < max {
            let before = x.posted;
            let Some((piece, take)) = self.next_piece(c, &mut x) else {
                break;
            };
            n += 1;
            let last = n == max || x.posted >= x.total;
            let signaled = last && !then_response;
            let kind = if signaled {
                if op == WrOpcode::RdmaRead {
                    WrKind::DataRead
                } else {
                    WrKind::DataWrite
                }
            } else {
                WrKind::Unsignaled
            };
            let count = if signaled { n as u16 } else { 0 };
            self.actions.push_back(Action::PostSend(WorkRequest {
                wr_id: WrId {
                    index: id as u32,
                    kind,
                    count,
                    gen,
                }
                .encode(),
                opcode: op,
                local: LocalSeg {
                    region: local_region,
                    offset: local_base + before,
                    len: take,
                },
                remote_addr: piece.va,
                rkey: piece.rkey,
                signaled,
            }));
        }
        let c = &mut self.ctxs[id as usize];
        c.xfer = x;
        if n > 0 {
            self.sq_in_flight += n;
            if !then_response {
                c.chains += 1;
            } else {
                c.unretired += n;
            }
        }
        n
    }

    fn local_base(&self, id: CmdId) -> (Region, u64) {
        let c = &self.ctxs[id as usize];
        if let Some((buf, off)) = &c.direct {
            (Region::Ram { base: buf.addr() }, *off)
        } else if let Some(e) = c.data {
            (Region::Pool, e.offset)
        } else {
            (Region::Pool, 0)
        }
    }

    fn on_table_fetched(&mut self, id: CmdId) {
        let c = &mut self.ctxs[id as usize];
        let (Descs::External { count, .. }, Some(ext)) = (c.descs, c.table) else {
            unreachable_state(id)
        };
        c.descs = Descs::Table {
            offset: ext.offset as u32,
            count,
        };
        if c.aborted {
            return self.finish_silently(id);
        }
        let total: u64 = (0..count)
            .filter_map(|i| self.desc(&self.ctxs[id as usize], i))
            .map(|d| d.len as u64)
            .sum();
        let c = &mut self.ctxs[id as usize];
        c.desc_total = total;
        if c.hdr_total.is_some_and(|h| h as u64 != total) {
            self.check_condition(id, Sense::invalid_field_in_command_iu());
            return self.step(id);
        }
        if c.dir == DataDir::Out && total != c.plan_len as u64 {
            return self.reject_data_out_length(id);
        }
        c.state = St::NeedBuffer;
        self.step(id);
    }

    /// Records the SCSI outcome and moves to the data-in phase or response.
    fn complete_scsi(&mut self, id: CmdId, status: ScsiStatus, sense: Option<Sense>, produced: u32) {
        let c = &mut self.ctxs[id as usize];
        c.status = status;
        c.sense = sense;
        let good = status == ScsiStatus::GOOD || status == ScsiStatus::CONDITION_MET;
        match c.dir {
            DataDir::In => {
                let avail = c.desc_total;
                let sent = if good { (produced as u64).min(avail) } else { 0 };
                if good && produced as u64 > avail {
                    c.flags |= Rsp::DIOVER;
                    c.di_res = (produced as u64 - avail) as u32;
                } else if sent < avail {
                    c.flags |= Rsp::DIUNDER;
                    c.di_res = (avail - sent).min(u32::MAX as u64) as u32;
                }
                if sent > 0 {
                    c.xfer = Xfer {
                        total: sent,
                        ..Xfer::default()
                    };
                    c.state = St::Writing;
                } else {
                    c.state = St::Respond;
                }
            }
            DataDir::Out | DataDir::None => c.state = St::Respond,
        }
    }

    fn build_rsp(&mut self, id: CmdId) -> u32 {
        // Residuals for a buffer the command never used (SRP r16a 6.9).
        let c = &mut self.ctxs[id as usize];
        let unused = c
            .desc_total
            .max(c.hdr_total.unwrap_or(0) as u64)
            .min(u32::MAX as u64) as u32;
        let residual_flags = Rsp::DOOVER | Rsp::DOUNDER | Rsp::DIOVER | Rsp::DIUNDER;
        if c.dir == DataDir::None && c.flags & residual_flags == 0 && unused > 0 {
            match c.side {
                DataDir::Out => {
                    c.flags |= Rsp::DOUNDER;
                    c.do_res = unused;
                }
                DataDir::In => {
                    c.flags |= Rsp::DIUNDER;
                    c.di_res = unused;
                }
                DataDir::None => {}
            }
        }
        let delta = self.credits.take_delta();
        let c = &self.ctxs[id as usize];
        let mut sense_buf = [0u8; Sense::FIXED_LEN];
        let sense_len = c.sense.as_ref().map_or(0, |s| s.emit_fixed(&mut sense_buf));
        let rsp_data = c.rsp_data.map(|code| [0, 0, 0, code]);
        let mut flags = c.flags;
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
            status: c.status.0,
            data_out_res_cnt: c.do_res,
            data_in_res_cnt: c.di_res,
            sense: &sense_buf[..sense_len],
            resp_data: rsp_data.as_ref().map_or(&[][..], |r| &r[..]),
        };
        let off = id as usize * self.send_slot as usize;
        let r = self
            .send
            .with_bytes_mut(off, self.send_slot as usize, |b| rsp.emit(b));
        match r {
            Ok(n) => n as u32,
            Err(e) => {
                // Cannot happen with a 64-byte minimum slot and 18-byte sense.
                tracing::error!(?e, "SRP_RSP does not fit its send slot");
                0
            }
        }
    }

    /// Ends an aborted (or orphaned) command without a response: its buffer
    /// returns to the ring and its credit is owed to the initiator.
    fn finish_silently(&mut self, id: CmdId) {
        let waiter = self.ctxs[id as usize].waiter.take();
        self.release(id);
        if let Some(t) = waiter {
            if let Some(tmf) = self.ctxs.get_mut(t as usize) {
                tmf.tmf_pending -= 1;
                if tmf.tmf_pending == 0 && tmf.state == St::TmfWait {
                    tmf.state = St::Respond;
                    self.step(t);
                }
            }
        }
        self.maybe_cred_req();
        self.maybe_closed();
    }

    /// Frees a context and its buffers; reposts its receive slot unless the
    /// channel is going away with its own ring (a shared slot always goes
    /// back).
    fn release(&mut self, id: CmdId) {
        let c = self.remove_ctx(id);
        if c.queued {
            self.waiting.retain(|&w| w != id);
        }
        let live = matches!(
            self.state,
            ChannelState::Live | ChannelState::LoggingOut | ChannelState::LogoutSent
        );
        // A context that is Responding gave its slot back when it built the
        // response (see `St::Respond`).
        if c.state != St::Responding {
            debug_assert!(self.held > 0, "receive slot count underflow");
            self.held = self.held.saturating_sub(1);
            if live || self.shares_recv() {
                self.actions.push_back(Action::PostRecv { slot: c.slot });
            }
        }
        if live && c.credit {
            self.credits.on_release();
        }
    }

    /// Removes a context and returns its pool extents.
    fn remove_ctx(&mut self, id: CmdId) -> Ctx {
        let c = self.ctxs.remove(id as usize);
        if let Some(e) = c.data {
            self.pool.free(e);
        }
        if let Some(e) = c.table {
            self.tables.free(e);
        }
        c
    }

    /// Frees a context whose response send completed (its receive slot was
    /// reposted when the response was posted).
    fn free_ctx(&mut self, id: CmdId) {
        self.remove_ctx(id);
        self.maybe_closed();
    }

    /// Resumes parked contexts in FIFO order.
    fn kick(&mut self) {
        let mut budget = self.waiting.len();
        while budget > 0 {
            budget -= 1;
            let Some(&id) = self.waiting.front() else { break };
            let before = self
                .ctxs
                .get(id as usize)
                .map(|c| (c.state, c.xfer.posted, c.data.is_some(), c.table.is_some()));
            self.waiting.pop_front();
            if let Some(c) = self.ctxs.get_mut(id as usize) {
                c.queued = false;
            } else {
                continue;
            }
            self.kicking = Some(id);
            self.step(id);
            self.kicking = None;
            let after = self
                .ctxs
                .get(id as usize)
                .map(|c| (c.state, c.xfer.posted, c.data.is_some(), c.table.is_some()));
            if before == after && self.ctxs.get(id as usize).is_some_and(|c| c.queued) {
                // No progress: keep strict FIFO order and stop.
                self.waiting.rotate_right(1);
                break;
            }
        }
        if self.state == ChannelState::LoggingOut && self.ctxs.is_empty() {
            self.send_t_logout(TLogout::NO_REASON);
        }
        self.maybe_cred_req();
    }

    /// SRP r16a 6.7: return credits with SRP_CRED_REQ when no response is
    /// coming that could carry them.
    fn maybe_cred_req(&mut self) {
        if self.state != ChannelState::Live
            || self.credits.owed() == 0
            || self.cred_req_outstanding
            || self.ctxs.iter().any(|(_, c)| !c.aborted)
        {
            return;
        }
        let Some(slot) = self.target_iu_slot() else { return };
        let delta = self.credits.take_delta();
        let iu = CredReq {
            tag: Tag(0x5352_5054_0000_0000 | self.stats.cred_reqs),
            sol_not: 0,
            req_lim_delta: delta,
        };
        if self.post_target_iu(slot, |b| iu.emit(b)) {
            self.cred_req_outstanding = true;
            self.stats.cred_reqs += 1;
        }
    }

    fn target_iu_slot(&self) -> Option<u32> {
        (0..TARGET_IU_SLOTS).find(|i| self.target_iu_busy & (1 << i) == 0)
    }

    fn post_target_iu(
        &mut self,
        slot: u32,
        emit: impl FnOnce(&mut [u8]) -> Result<usize, wire::WireError>,
    ) -> bool {
        let idx = self.max_ctxs + slot;
        let off = idx as usize * self.send_slot as usize;
        let len = match self.send.with_bytes_mut(off, self.send_slot as usize, emit) {
            Ok(n) => n as u32,
            Err(e) => {
                tracing::error!(?e, "target IU does not fit its send slot");
                return false;
            }
        };
        self.target_iu_busy |= 1 << slot;
        self.sq_in_flight += 1;
        self.actions.push_back(Action::PostSend(WorkRequest {
            wr_id: WrId {
                index: slot,
                kind: WrKind::TargetIu,
                count: 1,
                gen: 0,
            }
            .encode(),
            opcode: WrOpcode::Send,
            local: LocalSeg {
                region: Region::Send,
                offset: off as u64,
                len,
            },
            remote_addr: 0,
            rkey: 0,
            signaled: true,
        }));
        true
    }

    fn send_t_logout(&mut self, reason: u32) {
        if matches!(
            self.state,
            ChannelState::LogoutSent | ChannelState::Draining | ChannelState::Drained | ChannelState::Closed
        ) {
            return;
        }
        let Some(slot) = self.target_iu_slot() else {
            self.disconnect();
            return;
        };
        let iu = TLogout {
            tag: Tag(0x5352_5054_4c4f_0000),
            sol_not: 0,
            reason,
        };
        if self.post_target_iu(slot, |b| iu.emit(b)) {
            self.state = ChannelState::LogoutSent;
        } else {
            self.disconnect();
        }
    }

    fn disconnect(&mut self) {
        if matches!(
            self.state,
            ChannelState::Draining | ChannelState::Drained | ChannelState::Closed
        ) {
            return;
        }
        self.state = ChannelState::Draining;
        self.actions.push_back(Action::Disconnect);
    }

    fn maybe_closed(&mut self) {
        if self.state == ChannelState::Drained && self.ctxs.is_empty() {
            self.state = ChannelState::Closed;
            tracing::info!(stats = ?self.stats, "channel closed");
            self.actions.push_back(Action::Closed);
        }
    }

    /// What the driver needs to execute context `id` (after `Action::Execute`).
    pub fn exec_request(&self, id: CmdId) -> Option<ExecRequest<'_>> {
        let c = self.ctxs.get(id as usize)?;
        if c.state != St::Executing {
            return None;
        }
        let (buf, offset, len) = match (c.descs, c.data) {
            (Descs::Immediate { offset, len }, _) => (&self.recv, offset as usize, len),
            (_, Some(e)) => (self.pool.buf(), e.offset as usize, c.plan_len),
            _ => (self.pool.buf(), 0, 0),
        };
        Some(ExecRequest {
            nexus: &self.nexus,
            lun: c.lun,
            cdb: &c.cdb[..c.cdb_len as usize],
            buf,
            offset,
            len,
        })
    }
}

#[derive(Debug)]
enum CmdError {
    #[allow(dead_code, reason = "read through Debug in the log line")]
    Wire(wire::WireError),
    CdbTooLong,
    Bidirectional,
    ImmediateNotNegotiated,
    ImmediateOutOfBounds,
}

#[track_caller]
fn unreachable_state(id: CmdId) -> ! {
    panic!("context {id} in an impossible state")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    use crate::scsi::backstore::BackstoreConfig;
    use crate::scsi::lun::{LunConfig, Target, TargetConfig};

    fn nexus() -> Arc<Nexus> {
        let bs = BackstoreConfig::parse("ram:1M", "lun").unwrap();
        let t = Target::new(TargetConfig {
            luns: vec![LunConfig::new(0, bs)],
            ..TargetConfig::default()
        })
        .unwrap();
        t.nexus([7; 16])
    }

    fn shared(slots: u32, slot_size: u32) -> SharedRecv {
        SharedRecv {
            buf: Arc::new(DmaBuf::new(slots as usize * slot_size as usize).unwrap()),
            slot_size,
            slots,
        }
    }

    /// Lands a TEST UNIT READY in `slot` and completes the receive.
    fn tur(ch: &mut Channel, slot: u32, tag: u64) {
        let mut iu = [0u8; 64];
        let n = wire::Cmd::new(Tag(tag), [0; 8], &[0u8; 6]).emit(&mut iu).unwrap();
        let (off, _) = ch.recv_slot(slot);
        ch.recv_buf().write(off as usize, &iu[..n]);
        ch.handle_completion(WrId::recv(slot), true, n as u32);
    }

    fn drain_actions(ch: &mut Channel) -> Vec<Action> {
        std::iter::from_fn(|| ch.poll_action()).collect()
    }

    fn posted(actions: &[Action]) -> Vec<u32> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::PostRecv { slot } => Some(*slot),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn shared_ring_posts_nothing_at_start_and_checks_its_geometry() {
        let mut cfg = ChannelConfig::new(8260, Some(68), 4);
        cfg.shared_recv = Some(shared(16, 8320));
        let mut ch = Channel::new(cfg.clone(), nexus()).unwrap();
        assert!(ch.shares_recv());
        assert_eq!(ch.poll_action(), None, "the shared ring is posted by its owner");
        assert_eq!(ch.recv_slot(15), (15 * 8320, 8320));
        // A slot smaller than the granted IU length cannot work.
        cfg.shared_recv = Some(shared(16, 4096));
        assert!(Channel::new(cfg.clone(), nexus()).is_err());
        // A ring shorter than its geometry says.
        let mut bad = shared(16, 8320);
        bad.slots = 17;
        cfg.shared_recv = Some(bad);
        assert!(Channel::new(cfg, nexus()).is_err());
    }

    fn executes(actions: &[Action]) -> Vec<CmdId> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Execute { cmd } => Some(*cmd),
                _ => None,
            })
            .collect()
    }

    /// Every slot the channel is handed goes back exactly once, also for
    /// requests whose response was posted before the queue pair drained;
    /// an initiator that overdraws while the send queue is full (its
    /// TASK SET FULL answers wait, holding slots) is logged out once it
    /// holds more slots than credits plus the reserve.
    #[test]
    fn shared_slots_go_back_once_and_overdraw_is_bounded() {
        let mut cfg = ChannelConfig::new(8260, Some(68), 4);
        cfg.shared_recv = Some(shared(64, 8320));
        // Room for two responses on the send queue.
        cfg.sq_depth = 2 + TARGET_IU_SLOTS;
        let mut ch = Channel::new(cfg, nexus()).unwrap();
        let mut all = Vec::new();
        // 1: unit attention, answered at once (response on the send queue);
        // 2-5: executing, holding the 4 credits; 6: TASK SET FULL, answered;
        // 7, 8: TASK SET FULL waiting for send-queue room.
        for i in 0..8 {
            tur(&mut ch, 10 + i, i as u64);
            all.extend(drain_actions(&mut ch));
        }
        assert_eq!(ch.in_flight(), 8);
        assert_eq!(ch.stats().task_set_full, 3);
        let running = executes(&all);
        assert_eq!(running.len(), 4);
        // 9: no receive slot left to hold it.
        tur(&mut ch, 40, 99);
        let acts = drain_actions(&mut ch);
        assert_eq!(posted(&acts), vec![40]);
        assert!(acts.iter().any(|a| matches!(a, Action::PostSend(w)
            if WrId::decode(w.wr_id).unwrap().kind == WrKind::TargetIu)));
        assert_eq!(ch.in_flight(), 8);
        assert_eq!(ch.stats().protocol_errors, 1);
        all.extend(acts);
        // Drain with responses still on the send queue and commands still
        // executing: nothing is posted twice; a receive completing late
        // goes straight back; executing commands give theirs back when the
        // backstore finishes.
        ch.handle_disconnect();
        ch.handle_drained();
        assert!(!ch.is_closed());
        tur(&mut ch, 50, 100);
        all.extend(drain_actions(&mut ch));
        for id in running {
            ch.handle_exec_done(id, crate::scsi::Completion::good(0));
        }
        all.extend(drain_actions(&mut ch));
        assert!(ch.is_closed());
        let mut slots = posted(&all);
        slots.sort_unstable();
        assert_eq!(slots, vec![10, 11, 12, 13, 14, 15, 16, 17, 40, 50]);
        // A failed shared receive was consumed: it goes back too.
        ch.handle_completion(WrId::recv(51), false, 0);
        assert_eq!(posted(&drain_actions(&mut ch)), vec![51]);
        // A slot outside the ring is ignored.
        ch.handle_completion(WrId::recv(64), true, 64);
        assert_eq!(ch.poll_action(), None);
    }

    /// Responses give their slot and credit back when posted: an initiator
    /// reusing the credit before the send completion is polled must never
    /// run the channel out of contexts or send slots.
    #[test]
    fn credits_reused_before_send_completions() {
        let mut ch = Channel::new(ChannelConfig::new(8260, Some(68), 4), nexus()).unwrap();
        let mut free: VecDeque<u32> = posted(&drain_actions(&mut ch)).into();
        let mut tag = 0;
        // TEST UNIT READYs, executed at once; no send ever completes, and
        // every slot given back is used again right away, as a fast
        // initiator may do with the credit the response returns.
        for _ in 0..40 {
            let Some(slot) = free.pop_front() else { break };
            tag += 1;
            tur(&mut ch, slot, tag);
            let acts = drain_actions(&mut ch);
            free.extend(posted(&acts));
            for id in executes(&acts) {
                ch.handle_exec_done(id, crate::scsi::Completion::good(0));
                free.extend(posted(&drain_actions(&mut ch)));
            }
        }
        assert!(ch.in_flight() as u32 <= ch.config().max_contexts());
        assert_eq!(ch.stats().protocol_errors, 0);
    }

    #[test]
    fn own_ring_keeps_its_slots_when_closing() {
        let mut ch = Channel::new(ChannelConfig::new(8260, Some(68), 4), nexus()).unwrap();
        let initial = posted(&drain_actions(&mut ch));
        assert_eq!(initial, (0..6).collect::<Vec<_>>());
        tur(&mut ch, 0, 1);
        drain_actions(&mut ch);
        ch.handle_disconnect();
        ch.handle_drained();
        tur(&mut ch, 1, 2);
        let acts = drain_actions(&mut ch);
        assert!(posted(&acts).is_empty(), "{acts:?}");
        assert!(ch.is_closed());
    }
}
