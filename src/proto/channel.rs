//! One SRP RDMA channel, sans I/O.
//!
//! The channel owns the memory its queue pair uses (receive ring, send ring,
//! data pools) and the state of every command. It consumes events
//! (`handle_recv`, `handle_completion`, `handle_exec_done`,
//! `handle_disconnect`, the drain events, `handle_timeout` with `now` passed
//! in) and queues [`Action`]s for its driver (`poll_action`, and
//! `poll_timeout` for when to call back). It never blocks, allocates on the data path, or
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
//! Each command is a state machine of its own (module `proto::command`).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::action::{Action, CmdId, Generation, LocalSeg, Region, WorkRequest, WrId, WrKind, WrOpcode};
use super::command::{Command, CommandState, CommandTable, DataBuffer, DataTransfer, Resource, WaitQueues};
use super::credits::{Credits, RESERVED_RECVS};
use super::pool::DataPool;
use super::request::{self, CmdError, CmdIu, DataDescriptors, DESC_LEN};
use super::stats::{LunStats, TickScale};
use crate::mem::DmaBuf;
use crate::scsi::lun::decode_lun;
use crate::scsi::task_set::Member;
use crate::scsi::{Completion, DataDir, Nexus, ScsiCommand, ScsiStatus, Sense};
use crate::wire::{self, AerRsp, CredReq, CredRsp, ILogout, Opcode, Rsp, TLogout, Tag, TaskMgmt, TmFunction};

/// Send-queue entries kept free for target-initiated IUs.
pub(super) const TARGET_IU_SLOTS: u32 = 2;

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

pub use super::accounting::ChannelStats;

/// How long a drain waits, once the send queue is drained, for the flush
/// completions of receives still posted to the channel's own receive queue.
/// A receive posted while the queue pair was moving to the error state may
/// never be flushed (rxe, userspace queue pairs); after this the channel
/// gives those slots up rather than never closing.
pub const RECV_FLUSH_GRACE: Duration = Duration::from_millis(500);

/// What a draining channel has heard from its driver. The queue pair is
/// drained when the send queue is and no receive will complete any more,
/// or [`RECV_FLUSH_GRACE`] after the send queue drained.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct DrainProgress {
    /// When the send queue's drain marker completed.
    send_queue_drained_at: Option<Instant>,
    /// No receive of this queue pair will complete any more.
    receives_flushed: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ChannelState {
    Live,
    /// Shutting down: new commands get BUSY; SRP_T_LOGOUT goes out once idle.
    LoggingOut,
    /// SRP_T_LOGOUT posted; disconnect once it completes.
    LogoutSent,
    /// Disconnect requested; the driver is draining the queue pair.
    Draining(DrainProgress),
    /// Drained: waiting only for backstore work to finish.
    Drained,
    Closed,
}

/// One SRP RDMA channel (sans I/O).
#[derive(Debug)]
pub struct Channel {
    pub(super) cfg: ChannelConfig,
    pub(super) nexus: Arc<Nexus>,
    pub(super) state: ChannelState,
    pub(super) recv: Arc<DmaBuf>,
    /// Bytes per receive slot.
    pub(super) recv_slot_size: u32,
    /// Slots in `recv` (the channel's own ring, or the shared one).
    pub(super) recv_slots: u32,
    /// Commands holding a receive slot (not yet responding).
    pub(super) slots_held: u32,
    /// Command (and send slot) capacity: `cfg.max_contexts()`.
    pub(super) max_commands: u32,
    pub(super) send: Arc<DmaBuf>,
    /// Bytes per send slot.
    pub(super) send_slot_size: u32,
    pub(super) pool: DataPool,
    pub(super) tables: DataPool,
    pub(super) cmds: CommandTable,
    pub(super) gen: Generation,
    pub(super) credits: Credits,
    pub(super) actions: VecDeque<Action>,
    /// Commands waiting for a resource, one FIFO per resource.
    pub(super) waiters: WaitQueues,
    /// The waiter being resumed and the resource it waited for: it may
    /// take that resource ahead of the waiters behind it.
    pub(super) resuming: Option<(CmdId, Resource)>,
    pub(super) reads_in_flight: u32,
    pub(super) sq_in_flight: u32,
    /// Target IU send slots in use (bit per slot).
    pub(super) target_iu_busy: u8,
    pub(super) cred_req_outstanding: bool,
    pub(super) stats: ChannelStats,
    /// Figures per LUN addressed (`proto::accounting`).
    pub(super) luns: LunStats,
    /// The driver's clock, in ticks of `tick_scale`.
    pub(super) clock: u64,
    pub(super) tick_scale: TickScale,
    /// This channel's part in the target's task sets (`proto::task_set`).
    pub(super) task_set: Member,
    /// Commands another channel's abort waits for.
    pub(super) remote_pending: u32,
    /// Commands in `CommandState::TaskSetWait`.
    pub(super) task_set_waiters: u32,
    /// Task ordering (`proto::ordering`): arrivals so far, ORDERED tasks
    /// in the task set, dormant tasks.
    pub(super) arrivals: u64,
    pub(super) ordered: u32,
    pub(super) dormant: u32,
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
    /// The CDB as decoded when the command was planned: run it with
    /// `nexus.run(command, ..)` rather than decoding `cdb` again.
    pub command: &'a ScsiCommand,
    /// Data buffer: holds data-out bytes, receives data-in bytes.
    pub buf: &'a Arc<DmaBuf>,
    /// Byte offset in `buf`.
    pub offset: usize,
    /// Bytes available at `offset`.
    pub len: u32,
}

/// Bytes of each buffer a channel works in, fixed by its [`ChannelConfig`]
/// ([`ChannelConfig::memory_layout`]); the driver allocates them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelMemoryLayout {
    /// The channel's own receive ring (0 with a shared ring).
    pub recv: usize,
    /// One send slot per command plus the target-initiated IU slots.
    pub send: usize,
    /// The data buffer pool.
    pub pool: usize,
    /// The pool of fetched external descriptor tables.
    pub tables: usize,
}

impl ChannelMemoryLayout {
    /// Bytes of all the channel's buffers.
    pub fn total(&self) -> u64 {
        [self.recv, self.send, self.pool, self.tables]
            .iter()
            .map(|&b| b as u64)
            .sum()
    }
}

/// The memory a channel works in, allocated by the driver (proto makes no
/// system calls) and registered by it before it runs the channel's first
/// actions.
#[derive(Debug)]
pub struct ChannelMemory {
    /// Own receive ring; `None` with a shared ring.
    pub recv: Option<Arc<DmaBuf>>,
    pub send: Arc<DmaBuf>,
    pub pool: Arc<DmaBuf>,
    pub tables: Arc<DmaBuf>,
}

impl ChannelMemory {
    /// Memory of `layout`, each buffer made by `alloc(bytes)`.
    pub fn with<E>(
        layout: &ChannelMemoryLayout,
        mut alloc: impl FnMut(usize) -> Result<DmaBuf, E>,
    ) -> Result<ChannelMemory, E> {
        Ok(ChannelMemory {
            recv: match layout.recv {
                0 => None,
                n => Some(Arc::new(alloc(n)?)),
            },
            send: Arc::new(alloc(layout.send)?),
            pool: Arc::new(alloc(layout.pool)?),
            tables: Arc::new(alloc(layout.tables)?),
        })
    }
}

impl ChannelConfig {
    /// Send slots: one per command, plus the target-initiated IU slots.
    fn send_slots(&self) -> (u32, u32) {
        let max_commands = self.max_contexts().min(WrId::INDEXES);
        let send_slot_size = self.max_ti_iu_len.max(64).next_multiple_of(64);
        (send_slot_size, max_commands + TARGET_IU_SLOTS)
    }

    /// Bytes of each buffer the channel needs.
    pub fn memory_layout(&self) -> ChannelMemoryLayout {
        let (send_slot_size, n_send) = self.send_slots();
        // Descriptor tables get their own pool so that waiting for data
        // space can never be blocked by tables held by waiting commands.
        let table_bytes = (self.max_desc as usize * DESC_LEN as usize).max(4096);
        ChannelMemoryLayout {
            recv: match self.shared_recv {
                Some(_) => 0,
                None => self.it_iu_len.next_multiple_of(64) as usize * self.recv_slots() as usize,
            },
            send: send_slot_size as usize * n_send as usize,
            pool: DataPool::bytes_for(self.pool_size.max(self.max_transfer as usize)),
            tables: DataPool::bytes_for(table_bytes * (self.queue_depth as usize).min(16)),
        }
    }
}

fn too_small(what: &'static str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidInput, what)
}

impl Channel {
    /// Creates the channel in `mem` (of `cfg.memory_layout()` or larger);
    /// with a ring of its own, queues a `PostRecv` for every receive slot.
    /// The driver registers `recv_buf` (unless shared), `send_buf`,
    /// `pool_buf` and `table_buf` before executing the actions.
    pub fn new(cfg: ChannelConfig, nexus: Arc<Nexus>, mem: ChannelMemory) -> std::io::Result<Channel> {
        let layout = cfg.memory_layout();
        let max_commands = cfg.max_contexts().min(WrId::INDEXES);
        let (send_slot_size, _) = cfg.send_slots();
        if mem.send.len() < layout.send {
            return Err(too_small("send ring smaller than the channel's layout"));
        }
        if mem.pool.len() < layout.pool || mem.tables.len() < layout.tables {
            return Err(too_small("data or table pool smaller than the channel's layout"));
        }
        let (recv, recv_slot_size, recv_slots) = match &cfg.shared_recv {
            Some(s) => {
                // A request IU must fit a slot whole (immediate data too).
                let fits = s.slot_size >= cfg.it_iu_len
                    && s.slots > 0
                    && s.slots <= WrId::INDEXES
                    && (s.slot_size as u64) * (s.slots as u64) <= s.buf.len() as u64;
                if !fits {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidInput,
                        "shared receive ring does not fit the channel's IU length",
                    ));
                }
                (s.buf.clone(), s.slot_size, s.slots)
            }
            None => match mem.recv {
                Some(buf) if buf.len() >= layout.recv => {
                    (buf, cfg.it_iu_len.next_multiple_of(64), cfg.recv_slots())
                }
                _ => return Err(too_small("receive ring smaller than the channel's layout")),
            },
        };
        let send = mem.send;
        let pool = DataPool::new(mem.pool);
        let tables = DataPool::new(mem.tables);
        let mut actions = VecDeque::with_capacity(4 * max_commands as usize + 64);
        if cfg.shared_recv.is_none() {
            for slot in 0..recv_slots {
                actions.push_back(Action::PostRecv { slot });
            }
        }
        let task_set = nexus.target().task_sets().join();
        Ok(Channel {
            task_set,
            remote_pending: 0,
            task_set_waiters: 0,
            arrivals: 0,
            ordered: 0,
            dormant: 0,
            credits: Credits::new(cfg.queue_depth),
            cmds: CommandTable::with_capacity(max_commands as usize),
            waiters: WaitQueues::with_capacity(max_commands as usize),
            cfg,
            nexus,
            state: ChannelState::Live,
            recv,
            recv_slot_size,
            recv_slots,
            slots_held: 0,
            max_commands,
            send,
            send_slot_size,
            pool,
            tables,
            gen: Generation::default(),
            actions,
            reads_in_flight: 0,
            sq_in_flight: 0,
            target_iu_busy: 0,
            cred_req_outstanding: false,
            resuming: None,
            stats: ChannelStats::default(),
            luns: LunStats::default(),
            clock: 0,
            tick_scale: TickScale::default(),
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
        (self.recv_slot_offset(slot), self.recv_slot_size)
    }

    /// Byte offset of receive slot `slot` in [`recv_buf`](Self::recv_buf).
    pub fn recv_slot_offset(&self, slot: u32) -> u64 {
        slot as u64 * self.recv_slot_size as u64
    }

    /// Bytes per receive slot.
    pub fn recv_slot_size(&self) -> u32 {
        self.recv_slot_size
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
    /// Each command's tag, state and wait queue, for test diagnostics.
    #[doc(hidden)]
    pub fn debug_commands(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .cmds
            .iter()
            .map(|(id, c)| {
                format!(
                    "{id:?} {:?} {:?} queued_for={:?} aborted={}",
                    c.tag, c.state, c.queued_for, c.aborted
                )
            })
            .collect();
        v.push(format!(
            "reads_in_flight={} sq_in_flight={}",
            self.reads_in_flight, self.sq_in_flight
        ));
        v
    }

    pub fn in_flight(&self) -> usize {
        self.cmds.len()
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
        if slot >= self.recv_slots {
            tracing::error!(slot, "receive completion for a slot outside the ring");
            return;
        }
        // SRP r16a 6.6: once SRP_T_LOGOUT is sent the channel carries no
        // more requests; what arrives after it is not answered (the
        // disconnect follows). Commands already in flight still finish.
        if !self.serves_commands() || self.state == ChannelState::LogoutSent {
            // Too late to serve it. A shared slot still goes back to the
            // shared ring; an own slot dies with the channel.
            if self.shares_recv() {
                self.actions.push_back(Action::PostRecv { slot });
            }
            return;
        }
        let len = len.min(self.recv_slot_size);
        let off = self.recv_slot_offset(slot);
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
        self.after_event();
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
            if self.shares_recv() && w.index < self.recv_slots {
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
            ChannelState::Draining(_) | ChannelState::Drained | ChannelState::Closed
        ) {
            // Flushed work; everything is reclaimed when the drain ends.
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
            self.after_event();
            return;
        }
        let id = CmdId(w.index as u16);
        match self.cmds.get(id) {
            Some(c) if c.gen.get() == w.gen => {}
            _ => {
                tracing::error!(?w, "completion for a command that is not in flight");
                return;
            }
        }
        match w.kind {
            WrKind::TableRead => {
                self.reads_in_flight = self.reads_in_flight.saturating_sub(w.count as u32);
                self.on_table_fetched(id);
            }
            WrKind::DataRead => self.on_reads_done(id, w.count as u32),
            WrKind::DataWrite => self.on_writes_done(id),
            WrKind::Response => self.free_command(id),
            WrKind::Recv | WrKind::TargetIu | WrKind::Unsignaled => {}
        }
        self.after_event();
    }

    /// The SCSI command of `cmd` finished.
    pub fn handle_exec_done(&mut self, id: CmdId, done: Completion) {
        self.sync_task_sets();
        let Some(c) = self.cmds.get(id) else {
            tracing::error!(
                cmd = id.0,
                "execution finished for a command that is not in flight"
            );
            return;
        };
        if c.state != CommandState::Executing {
            tracing::error!(cmd = id.0, state = ?c.state, "execution finished in the wrong state");
            return;
        }
        // Another I_T nexus's PREEMPT AND ABORT aborted the command (SPC-4
        // 5.13.11.5): before it ran (TASK ABORTED) or while it ran on a
        // backstore. With TAS = 0 an aborted task gets no response (SAM-5
        // 5.6).
        let preempted =
            done.status == ScsiStatus::TASK_ABORTED || c.scsi.is_some_and(|s| self.nexus.is_aborted(&s));
        let aborted = c.aborted;
        let t = &c.transfer;
        let produced = match t.buffer {
            DataBuffer::Backstore { .. } => t.expected_len,
            _ => done.data_in_len.min(t.expected_len),
        };
        let draining = matches!(self.state, ChannelState::Draining(_) | ChannelState::Drained);
        if (preempted || draining) && !aborted {
            self.count(id, |s| s.aborted += 1);
        }
        if aborted || preempted || draining {
            self.finish_silently(id);
            self.after_event();
            return;
        }
        self.complete_scsi(id, done.status, done.sense, produced);
        self.wait_after_preempt_and_abort(id);
        self.step(id);
        self.after_event();
    }

    /// The connection is gone (CM DISCONNECTED, TIMEWAIT_EXIT, device
    /// removal...). The driver then drains the queue pair
    /// (`Action::Disconnect`).
    pub fn handle_disconnect(&mut self) {
        self.disconnect();
    }

    /// Draining: the send queue's drain marker completed at `now` (or could
    /// not be posted), so every send-queue request before it is done.
    pub fn handle_send_queue_drained(&mut self, now: Instant) {
        if let ChannelState::Draining(d) = &mut self.state {
            d.send_queue_drained_at.get_or_insert(now);
            self.check_drained();
        }
    }

    /// Draining: no receive posted to this queue pair will complete any
    /// more. With a receive queue of its own, every posted receive was
    /// flushed; with a shared one (nothing is flushed per queue pair), the
    /// completion queue was seen empty after the send-queue marker.
    pub fn handle_receives_flushed(&mut self) {
        if let ChannelState::Draining(d) = &mut self.state {
            d.receives_flushed = true;
            self.check_drained();
        }
    }

    /// A drain was started and has not ended yet.
    pub fn is_draining(&self) -> bool {
        matches!(self.state, ChannelState::Draining(_))
    }

    /// When [`Channel::handle_timeout`] must next be called: only while a
    /// drain waits for receive flushes after its send queue drained.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            ChannelState::Draining(DrainProgress {
                send_queue_drained_at: Some(at),
                receives_flushed: false,
            }) => Some(at + RECV_FLUSH_GRACE),
            _ => None,
        }
    }

    /// Time has come to `now`: a drain whose receives did not all flush
    /// within [`RECV_FLUSH_GRACE`] of the send queue ends without them.
    /// Also looks again at aborts of other channels this channel waits for
    /// ([`waits_for_task_sets`](Self::waits_for_task_sets)).
    pub fn handle_timeout(&mut self, now: Instant) {
        self.after_event();
        if self.poll_timeout().is_some_and(|t| now >= t) {
            tracing::debug!(
                in_flight = self.in_flight(),
                "receives not flushed within the grace period; the queue pair counts as drained"
            );
            self.finish_drain();
        }
    }

    fn check_drained(&mut self) {
        if let ChannelState::Draining(DrainProgress {
            send_queue_drained_at: Some(_),
            receives_flushed: true,
        }) = self.state
        {
            self.finish_drain();
        }
    }

    /// The queue pair is drained: no work request is outstanding any more.
    /// Frees every command that is not executing on a backstore.
    fn finish_drain(&mut self) {
        if !matches!(self.state, ChannelState::Draining(_)) {
            return;
        }
        self.state = ChannelState::Drained;
        self.waiters.clear();
        for (_, c) in self.cmds.iter_mut() {
            c.queued_for = None;
        }
        self.reads_in_flight = 0;
        self.sq_in_flight = 0;
        let ended: Vec<(CmdId, bool)> = self
            .cmds
            .iter()
            .filter(|(_, c)| c.state != CommandState::Executing)
            .map(|(i, c)| (i, c.is_task_mgmt))
            .collect();
        for (id, is_task_mgmt) in ended {
            if !is_task_mgmt {
                self.count(id, |s| s.aborted += 1);
            }
            self.release(id);
        }
        self.maybe_closed();
    }

    /// Target shutdown (SRP r16a 6.6): answer new commands BUSY, let those in
    /// flight finish, then send SRP_T_LOGOUT and disconnect.
    pub fn logout(&mut self) {
        if self.state == ChannelState::Live {
            self.state = ChannelState::LoggingOut;
            self.after_event();
        }
    }

    // ----- request handling --------------------------------------------

    fn new_command(&mut self, slot: u32, tag: Tag, credit: bool) -> CmdId {
        self.gen = self.gen.next();
        self.slots_held += 1;
        let id = self.cmds.insert(self.gen, slot, tag, credit);
        self.count_entered(id);
        // Counted before the abort generation is looked at (task_set.rs).
        self.task_set.entered();
        self.sync_task_sets();
        id
    }

    fn on_cmd(&mut self, slot: u32, len: u32) {
        self.stats.io.commands += 1;
        let off = self.recv_slot_offset(slot);
        let imm_data_offset = self.cfg.imm_data_offset;
        // Parse inside the borrow and keep only plain values.
        let (tag, parsed) = self.recv.with_bytes(off as usize, len as usize, |b| {
            (
                request::tag(b),
                request::parse_cmd(b, off as u32, imm_data_offset),
            )
        });
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
        let id = self.new_command(slot, tag, credit);
        if !credit {
            // SRP r16a 5.6: a request beyond the request limit; answer it
            // instead of dropping it.
            self.stats.task_set_full += 1;
            self.set_status(id, ScsiStatus::TASK_SET_FULL);
        } else if self.state != ChannelState::Live {
            self.set_status(id, ScsiStatus::BUSY);
        } else {
            match parsed {
                Ok(iu) => self.accept_cmd(id, &iu),
                Err(e) => {
                    self.stats.protocol_errors += 1;
                    tracing::debug!(?e, "rejecting malformed SRP_CMD");
                    let sense = match e {
                        CmdError::CdbTooLong => Sense::invalid_field_in_cdb(),
                        _ => Sense::invalid_field_in_command_iu(),
                    };
                    self.check_condition(id, sense);
                }
            }
        }
        self.step(id);
    }

    /// Sets up command `id` from its SRP_CMD and the SCSI plan of its CDB:
    /// the first state of its data phase, or its response.
    fn accept_cmd(&mut self, id: CmdId, iu: &CmdIu) {
        let Some(c) = self.cmds.get_mut(id) else {
            return;
        };
        c.lun = iu.lun;
        c.cdb = iu.cdb;
        if !super::ordering::supported(iu.task_attr) {
            return self.check_condition(id, Sense::invalid_field_in_command_iu());
        }
        c.transfer = DataTransfer {
            descriptor_dir: iu.descriptor_dir,
            dir: iu.descriptor_dir,
            descriptors: iu.descriptors,
            descriptor_len: iu.descriptor_len,
            indirect_len: iu.indirect_len,
            expected_len: 0,
            buffer: DataBuffer::None,
        };
        match (iu.descriptors, iu.external) {
            (_, Some(_)) => {
                self.stats.indirect += 1;
                self.stats.external_tables += 1;
            }
            (DataDescriptors::Immediate { .. }, _) => self.stats.immediate += 1,
            (DataDescriptors::InIu { .. }, _) => self.stats.indirect += 1,
            _ => {}
        }
        // Decide what the CDB moves; SCSI errors (unmapped LUN, unsupported
        // opcode, LBA out of range, unit attention) end the command here.
        let (scsi, plan) = match self.nexus.plan_command(iu.lun, iu.cdb.as_bytes()) {
            Ok(p) => p,
            Err(sense) => {
                self.count_refused_command_lun(id, iu.lun, &sense);
                return self.check_condition(id, sense);
            }
        };
        self.count_command_lun(id, scsi.unit());
        self.count_direction(id, plan.dir);
        if plan.len > self.cfg.max_transfer {
            return self.check_condition(id, Sense::invalid_field_in_cdb());
        }
        let Some(c) = self.cmds.get_mut(id) else {
            return;
        };
        c.scsi = Some(scsi);
        let t = &mut c.transfer;
        t.expected_len = plan.len;
        if plan.dir != DataDir::None && plan.dir != t.dir && plan.len > 0 {
            // The descriptors point the other way (or are missing): nothing
            // can move. SRP r16a 6.9: report the whole length as overflow.
            let r = &mut c.response;
            if plan.dir == DataDir::In {
                r.flags |= Rsp::DIOVER;
                r.data_in_residual = plan.len;
            } else {
                r.flags |= Rsp::DOOVER;
                r.data_out_residual = plan.len;
            }
            r.status = ScsiStatus::CHECK_CONDITION;
            r.sense = Some(Sense::invalid_field_in_command_iu());
            return;
        }
        if plan.dir == DataDir::None {
            t.dir = DataDir::None;
        }
        if t.dir == DataDir::Out && iu.external.is_none() && t.descriptor_len != plan.len as u64 {
            return self.reject_data_out_length(id);
        }
        if let (Some(d), false) = (plan.direct, t.descriptors.is_immediate()) {
            t.buffer = DataBuffer::Backstore {
                buf: d.buf,
                offset: d.offset,
            };
            self.stats.zero_copy += 1;
        }
        self.enter_task_set(id, iu.task_attr, iu.external);
    }

    fn set_status(&mut self, id: CmdId, status: ScsiStatus) {
        if let Some(c) = self.cmds.get_mut(id) {
            c.response.status = status;
        }
    }

    /// Whether a new request can get a command context. With a ring of its
    /// own the channel never has more requests than receive slots, so this
    /// always holds. With a shared ring an initiator that overdraws its
    /// request limit by more than the reserve would find slots anyway: it
    /// has broken SRP r16a 5.6 flow control beyond what TASK SET FULL can
    /// answer, so the slot goes back and the initiator is logged out.
    fn has_room(&mut self, slot: u32) -> bool {
        if self.slots_held < self.cfg.recv_slots() && self.cmds.len() < self.max_commands as usize {
            return true;
        }
        self.stats.protocol_errors += 1;
        tracing::warn!(
            requests = self.cmds.len(),
            credits = self.cfg.queue_depth,
            "initiator exceeded its request limit; logging it out"
        );
        self.actions.push_back(Action::PostRecv { slot });
        self.send_t_logout(TLogout::NO_REASON);
        false
    }

    fn on_tsk_mgmt(&mut self, slot: u32, len: u32) {
        self.stats.io.task_mgmt += 1;
        let off = self.recv_slot_offset(slot);
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
        let id = self.new_command(slot, tag, credit);
        if let Some(c) = self.cmds.get_mut(id) {
            c.is_task_mgmt = true;
            c.lun = lun;
            c.state = CommandState::TaskMgmtWait { pending: 0 };
        }
        self.count_task_mgmt_lun(id, lun);
        tracing::info!(function = func.0, lun = ?lun, tag = ?tag, "task management");
        // The logical unit, not the LUN's bytes: peripheral (0000h) and
        // flat space (4000h) addressing of LUN 0 name the same task set, as
        // for the other channels (`sync_task_sets`), and a planned task is
        // matched by the table's LUN it was planned for, so a task planned
        // before an ACL's mapping changed is found under the new number.
        // Bytes that address no logical unit address no task.
        let unit = decode_lun(lun);
        let table_unit = self.nexus.unit(lun);
        let is_target = |i: CmdId, c: &Command| {
            i != id
                && !c.is_task_mgmt
                && unit.is_some()
                && match c.scsi.as_ref().and_then(|s| s.unit()) {
                    Some(u) => table_unit == Some(u),
                    None => decode_lun(c.lun) == unit,
                }
        };
        let code = if !credit {
            self.stats.task_set_full += 1;
            Rsp::TM_FAILED
        } else {
            match func {
                TmFunction::ABORT_TASK => {
                    // SAM-5 7.2: abort the task with this tag; a task that no
                    // longer exists is "function complete".
                    let target = self
                        .cmds
                        .iter()
                        .find(|(i, c)| is_target(*i, c) && c.tag == task_tag)
                        .map(|(i, _)| i);
                    if let Some(t) = target {
                        self.abort(t, id);
                    }
                    Rsp::TM_COMPLETE
                }
                TmFunction::ABORT_TASK_SET | TmFunction::CLEAR_TASK_SET | TmFunction::LUN_RESET => {
                    if func == TmFunction::LUN_RESET && !self.nexus.lun_reset(lun) {
                        Rsp::TM_FAILED
                    } else {
                        // The same tasks on the other channels (this
                        // nexus's, or every nexus's: task_set.rs).
                        self.publish_task_set_abort(id, lun, func);
                        let targets: Vec<CmdId> = self
                            .cmds
                            .iter()
                            .filter(|(i, c)| is_target(*i, c))
                            .map(|(i, _)| i)
                            .collect();
                        for t in targets {
                            // This nexus's own tasks: answered TASK ABORTED
                            // (`Channel::answer_aborted`), also when another
                            // channel's function aborted them; not when an
                            // ABORT TASK here did (its initiator is done
                            // with them).
                            if let Some(c) = self.cmds.get_mut(t).filter(|c| !c.aborted || c.remote_abort) {
                                c.answer_abort = true;
                            }
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
        let Some(c) = self.cmds.get_mut(id) else {
            return;
        };
        c.response.rsp_code = Some(code);
        if c.state == (CommandState::TaskMgmtWait { pending: 0 }) {
            self.local_aborts_ended(id);
        }
    }

    /// Send-queue entries free for command work.
    pub(super) fn sq_free(&self) -> u32 {
        self.cfg
            .sq_depth
            .saturating_sub(TARGET_IU_SLOTS)
            .saturating_sub(self.sq_in_flight)
    }

    /// Whether commands are being served (not draining or closed).
    pub(super) fn serves_commands(&self) -> bool {
        matches!(
            self.state,
            ChannelState::Live | ChannelState::LoggingOut | ChannelState::LogoutSent
        )
    }

    /// Frees a command whose response send completed (its receive slot was
    /// reposted when the response was posted).
    fn free_command(&mut self, id: CmdId) {
        self.count_answered(id);
        // An aborted command answered TASK ABORTED: the function waiting
        // for it may answer now.
        let waiter = self.cmds.get_mut(id).and_then(|c| c.abort_waiter.take());
        self.remove_command(id);
        if let Some(t) = waiter {
            self.waited_ended(t);
        }
        self.maybe_closed();
    }

    /// After each event: resumes waiting commands, sends SRP_T_LOGOUT once a
    /// logging-out channel is idle, returns owed credits.
    fn after_event(&mut self) {
        self.sync_task_sets();
        self.check_task_set_waits();
        self.wake_dormant();
        self.resume_waiters();
        if self.state == ChannelState::LoggingOut && self.cmds.is_empty() {
            self.send_t_logout(TLogout::NO_REASON);
        }
        self.maybe_cred_req();
    }

    /// SRP r16a 6.7: return credits with SRP_CRED_REQ when no response is
    /// coming that could carry them.
    pub(super) fn maybe_cred_req(&mut self) {
        if self.state != ChannelState::Live
            || self.credits.owed() == 0
            || self.cred_req_outstanding
            || self.cmds.iter().any(|(_, c)| !c.aborted)
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
        let idx = self.max_commands + slot;
        let off = idx as usize * self.send_slot_size as usize;
        let len = match self.send.with_bytes_mut(off, self.send_slot_size as usize, emit) {
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
            ChannelState::LogoutSent
                | ChannelState::Draining(_)
                | ChannelState::Drained
                | ChannelState::Closed
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
            ChannelState::Draining(_) | ChannelState::Drained | ChannelState::Closed
        ) {
            return;
        }
        self.state = ChannelState::Draining(DrainProgress::default());
        self.actions.push_back(Action::Disconnect);
    }

    pub(super) fn maybe_closed(&mut self) {
        if self.state == ChannelState::Drained && self.cmds.is_empty() {
            self.state = ChannelState::Closed;
            tracing::info!(stats = ?self.stats, "channel closed");
            self.actions.push_back(Action::Closed);
        }
    }
}

#[cfg(test)]
#[path = "channel_tests.rs"]
pub(crate) mod tests;
