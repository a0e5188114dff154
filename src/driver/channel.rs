//! The per-channel driver: one channel's protocol state with its verbs
//! resources, run on a poller thread. It carries out the channel's actions
//! on the queue pair (posting receives and sends, one doorbell per batch),
//! feeds it completions, hands blocking SCSI commands to the poller's
//! worker pool, and drains the queue pair when the channel ends.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc::UnboundedSender;

use crate::mem::DmaBuf;
use crate::os;
use crate::proto::{Action, Channel, CmdId, Region, TickScale, WorkRequest, WrOpcode};
use crate::rdma::{
    CompletionQueue, MemoryRegion, QueuePair, RecvScratch, Remote, SendOp, SendRequest, SendScratch, Sge,
    WorkCompletion,
};
use crate::scsi::{AsyncEngine, Completion, Nexus, RbdEngine, ScsiCommand, Started, WorkerPool};

use super::device::{with_recv_chain, Device, SrqRing, RECV_BATCH};
use super::poller::PollerEvent;

/// Names a channel across the driver's threads (control plane, pollers,
/// worker pools) for its whole life; never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelKey(pub u64);

impl std::fmt::Display for ChannelKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// Work request id of the send-queue drain marker (never produced by a
/// channel).
const DRAIN_SQ: u64 = u64::MAX;

/// Where a channel's receives are posted.
#[derive(Debug)]
pub enum RecvSide {
    /// The queue pair's own receive queue, with the channel's ring.
    Own(MemoryRegion),
    /// The device's shared receive queue and ring.
    Srq(Arc<SrqRing>),
}

/// A channel as the poller runs it: protocol state plus verbs resources.
#[derive(Debug)]
pub struct ChannelDriver {
    pub key: ChannelKey,
    pub ch: Channel,
    pub qp: QueuePair,
    pub cq: Arc<CompletionQueue>,
    pub recv: RecvSide,
    pub send_mr: MemoryRegion,
    pub pool_mr: MemoryRegion,
    pub table_mr: MemoryRegion,
    pub device: Arc<Device>,
    send_scratch: SendScratch,
    recv_scratch: RecvScratch,
    sends: Vec<WorkRequest>,
    recvs: Vec<u32>,
    /// Receives posted to the own receive queue and not yet completed.
    recvs_posted: u32,
    /// The queue pair was moved to the error state to drain it.
    draining: bool,
    /// The send queue's drain marker completed (or could not be posted).
    marker_done: bool,
    /// The channel was told no receive will complete any more.
    receives_reported: bool,
    closed: bool,
    /// `ibv_post_send` calls (doorbells) made for this channel.
    doorbells: u64,
}

impl ChannelDriver {
    /// Wraps a channel whose resources are set up (QP not yet connected).
    /// `mrs` are the send ring, data pool and table pool regions.
    pub fn new(
        key: ChannelKey,
        ch: Channel,
        qp: QueuePair,
        cq: Arc<CompletionQueue>,
        recv: RecvSide,
        mrs: [MemoryRegion; 3],
        device: Arc<Device>,
    ) -> ChannelDriver {
        let [send_mr, pool_mr, table_mr] = mrs;
        let mut ch = ch;
        // Latencies are timed with the TSC (no system call per completion).
        ch.set_tick_scale(TickScale::per_ms(os::ticks_per_ms()));
        let sq = ch.config().sq_depth as usize;
        let rq = ch.config().max_contexts() as usize;
        ChannelDriver {
            key,
            ch,
            qp,
            cq,
            recv,
            send_mr,
            pool_mr,
            table_mr,
            device,
            send_scratch: SendScratch::with_capacity(sq, sq),
            recv_scratch: RecvScratch::with_capacity(rq, rq),
            sends: Vec::with_capacity(sq),
            recvs: Vec::with_capacity(rq),
            recvs_posted: 0,
            draining: false,
            marker_done: false,
            receives_reported: false,
            closed: false,
            doorbells: 0,
        }
    }

    /// Draining: the queue pair was moved to the error state.
    pub(super) fn is_draining(&self) -> bool {
        self.draining
    }

    /// A drain is under way: the poller keeps polling this channel (for
    /// the marker, flushes and the channel's grace period) instead of
    /// sleeping.
    pub(super) fn drain_in_progress(&self) -> bool {
        self.draining && self.ch.is_draining()
    }

    /// Tells the channel the time if its timeout has come. Reads the clock
    /// only while the channel waits for one (it may be a system call, see
    /// `Poller::run`).
    pub(super) fn check_timeout(&mut self) {
        if let Some(t) = self.ch.poll_timeout() {
            let now = Instant::now();
            if now >= t {
                self.ch.handle_timeout(now);
            }
        }
    }

    /// The channel reported `Action::Closed`: the poller drops it.
    pub(super) fn is_finished(&self) -> bool {
        self.closed
    }

    /// `ibv_post_send` calls (doorbells) made for this channel.
    pub(super) fn doorbells(&self) -> u64 {
        self.doorbells
    }

    fn mr(&self, r: Region) -> Option<&MemoryRegion> {
        match r {
            Region::Recv => Some(match &self.recv {
                RecvSide::Own(mr) => mr,
                RecvSide::Srq(ring) => ring.mr(),
            }),
            Region::Send => Some(&self.send_mr),
            Region::Pool => Some(&self.pool_mr),
            Region::Table => Some(&self.table_mr),
            Region::Ram { base } => self.device.ram_mr(base),
        }
    }

    /// Posts the receives a new channel starts with (before accepting).
    pub fn prime(&mut self) {
        while let Some(a) = self.ch.poll_action() {
            match a {
                Action::PostRecv { slot } => self.recvs.push(slot),
                other => tracing::error!(action = ?other, "unexpected first action of a channel"),
            }
        }
        self.flush();
    }

    /// Carries out every queued action. `exec` receives SCSI commands with
    /// backstore I/O; others run inline.
    pub fn run_actions(&mut self, exec: &mut Executor, events: &UnboundedSender<PollerEvent>) {
        while let Some(a) = self.ch.poll_action() {
            match a {
                Action::PostRecv { slot } => self.recvs.push(slot),
                Action::PostSend(wr) => self.sends.push(wr),
                Action::Execute { cmd } => self.execute(cmd, exec),
                Action::Disconnect => {
                    self.flush();
                    self.start_drain(events);
                }
                Action::Closed => {
                    // Receives given back on the way out are posted before
                    // anyone counts the shared queue's slots.
                    self.flush();
                    self.closed = true;
                    let _ = events.send(PollerEvent::Closed {
                        key: self.key,
                        stats: Box::new(self.ch.stats().clone()),
                    });
                }
            }
        }
        self.flush();
    }

    fn execute(&mut self, cmd: CmdId, exec: &mut Executor) {
        let Some(r) = self.ch.exec_request(cmd) else {
            tracing::error!(
                cmd = cmd.0,
                "execute requested for a context that is not executing"
            );
            return;
        };
        if r.nexus.runs_blocking(r.command) {
            let tag = (self.key, cmd);
            let mut started = Started::Blocking;
            if let Some(aio) = exec.aio.as_mut() {
                started = aio.start(tag, r.nexus, r.command, r.buf, r.offset, r.len);
            }
            if let (Started::Blocking, Some(rbd)) = (&started, exec.rbd.as_mut()) {
                started = rbd.start(tag, r.nexus, r.command, r.buf, r.offset, r.len);
            }
            match started {
                Started::Submitted => return,
                Started::Done(done) => {
                    self.ch.handle_exec_done(cmd, done);
                    return;
                }
                Started::Blocking => {}
            }
            exec.worker_jobs += 1;
            let job = ExecJob {
                key: self.key,
                cmd,
                nexus: r.nexus.clone(),
                command: *r.command,
                buf: r.buf.clone(),
                offset: r.offset,
                len: r.len,
            };
            if let Err(job) = exec.pool.submit(job) {
                // The queue is sized for every context, so this only happens
                // at shutdown: run it here rather than lose it.
                let done = job.run();
                self.ch.handle_exec_done(cmd, done);
            }
        } else {
            let done = r.nexus.run(r.command, r.buf, r.offset, r.len);
            self.ch.handle_exec_done(cmd, done);
        }
    }

    /// Posts gathered receives, then sends: one doorbell per batch of up to
    /// [`RECV_BATCH`] / `SEND_BATCH` requests, built in stack arrays (no
    /// allocation).
    fn flush(&mut self) {
        const SEND_BATCH: usize = 32;
        let mut failed = false;
        let recvs = std::mem::take(&mut self.recvs);
        match &self.recv {
            RecvSide::Srq(ring) => {
                // ibv_post_srq_recv is thread-safe: channels on several
                // pollers share the queue. Slots that cannot be posted are
                // logged and counted as lost at shutdown; this channel is
                // not at fault.
                ring.post(&recvs, &mut self.recv_scratch);
            }
            RecvSide::Own(recv_mr) => {
                let slot_size = self.ch.recv_slot(0).1;
                for chunk in recvs.chunks(RECV_BATCH) {
                    let (qp, scratch) = (&self.qp, &mut self.recv_scratch);
                    match with_recv_chain(recv_mr, slot_size, chunk, |reqs| qp.post_recv(reqs, scratch)) {
                        Some(Ok(())) => self.recvs_posted += chunk.len() as u32,
                        Some(Err(e)) => {
                            self.recvs_posted += e.posted as u32;
                            if !self.draining {
                                tracing::error!(error = %e.error, "post_recv failed");
                            }
                            failed = true;
                        }
                        None => {
                            tracing::error!("receive slot outside its memory region");
                            failed = true;
                        }
                    }
                }
            }
        }
        self.recvs = recvs;
        self.recvs.clear();
        let sends = std::mem::take(&mut self.sends);
        for chunk in sends.chunks(SEND_BATCH) {
            let mut sges = [Sge::default(); SEND_BATCH];
            for (s, wr) in sges.iter_mut().zip(chunk) {
                match self
                    .mr(wr.local.region)
                    .and_then(|mr| mr.sge(wr.local.offset as usize, wr.local.len))
                {
                    Some(v) => *s = v,
                    None => {
                        tracing::error!(?wr, "work request outside its memory region");
                        failed = true;
                    }
                }
            }
            let none: [Sge; 0] = [];
            let mut reqs = [SendRequest::new(0, SendOp::Send, &none); SEND_BATCH];
            for (i, wr) in chunk.iter().enumerate() {
                let remote = Remote {
                    addr: wr.remote_addr,
                    rkey: wr.rkey,
                };
                let op = match wr.opcode {
                    WrOpcode::RdmaRead => SendOp::RdmaRead(remote),
                    WrOpcode::RdmaWrite => SendOp::RdmaWrite(remote),
                    WrOpcode::Send => SendOp::Send,
                };
                reqs[i] =
                    SendRequest::new(wr.wr_id, op, std::slice::from_ref(&sges[i])).signaled(wr.signaled);
            }
            if failed {
                break;
            }
            self.doorbells += 1;
            if let Err(e) = self.qp.post_send(&reqs[..chunk.len()], &mut self.send_scratch) {
                if !self.draining {
                    tracing::error!(error = %e.error, posted = e.posted, "post_send failed");
                }
                failed = true;
                break;
            }
        }
        self.sends = sends;
        self.sends.clear();
        if failed && !self.draining {
            // The channel's view of the queues no longer matches the
            // hardware's: end the connection (the next pass drains it).
            self.ch.handle_disconnect();
        }
    }

    /// Moves the QP to the error state and posts a marker on the send queue;
    /// its flush completion means every earlier send-queue request is done.
    /// Receives posted to the QP's own receive queue before the transition
    /// are flushed by it and counted down. (A receive marker posted after
    /// the transition is never flushed by rxe for userspace QPs, so none is
    /// used; the channel's grace period covers receives that are never
    /// flushed.) With a shared receive queue nothing is flushed per QP: the
    /// marker plus one empty poll of the CQ after it is the whole drain.
    fn start_drain(&mut self, events: &UnboundedSender<PollerEvent>) {
        if self.draining {
            return;
        }
        let _ = events.send(PollerEvent::Disconnect { key: self.key });
        tracing::debug!(
            key = self.key.0,
            recvs = self.recvs_posted,
            "draining the queue pair"
        );
        self.draining = true;
        if let Err(e) = self.qp.to_error() {
            tracing::error!(error = %e, "moving QP to error failed");
        }
        let none: [Sge; 0] = [];
        let marker = [SendRequest::new(DRAIN_SQ, SendOp::Send, &none).signaled(true)];
        if let Err(e) = self.qp.post_send(&marker, &mut self.send_scratch) {
            tracing::warn!(error = %e.error, "posting the drain marker failed; assuming the send queue drained");
            self.marker_done = true;
            self.ch.handle_send_queue_drained(Instant::now());
        }
        self.report_receives(false);
    }

    /// Draining: tells the channel once no receive of this queue pair will
    /// complete any more (own receive queue: every posted receive flushed;
    /// shared: the CQ found empty after the send-queue marker).
    fn report_receives(&mut self, cq_empty: bool) {
        if !self.draining || self.receives_reported {
            return;
        }
        let flushed = match self.recv {
            RecvSide::Own(_) => self.recvs_posted == 0,
            RecvSide::Srq(_) => self.marker_done && cq_empty,
        };
        if flushed {
            tracing::debug!(
                key = self.key.0,
                in_flight = self.ch.in_flight(),
                "receives flushed"
            );
            self.receives_reported = true;
            self.ch.handle_receives_flushed();
        }
    }

    /// Feeds completions to the channel. `cq_empty`: the poll that
    /// returned them found no more.
    pub(super) fn on_completions(&mut self, wcs: &[WorkCompletion], cq_empty: bool) {
        if !wcs.is_empty() {
            // One clock read per batch: requests are stamped with it, and
            // response send completions end their latency.
            self.ch.set_clock(os::ticks());
        }
        for wc in wcs {
            if wc.wr_id == DRAIN_SQ {
                tracing::debug!(key = self.key.0, status = wc.status.name(), "drain marker");
                if self.draining && !self.marker_done {
                    self.marker_done = true;
                    self.ch.handle_send_queue_drained(Instant::now());
                }
                continue;
            }
            // The opcode of a failed completion is undefined: tell receives by
            // their work request id.
            let recv = crate::proto::WrId::decode(wc.wr_id).filter(|w| w.kind == crate::proto::WrKind::Recv);
            if let Some(w) = recv {
                match &self.recv {
                    RecvSide::Own(_) => self.recvs_posted = self.recvs_posted.saturating_sub(1),
                    RecvSide::Srq(ring) => {
                        if !ring.completed(w.index) {
                            tracing::error!(slot = w.index, "completion of an SRQ slot that was not posted");
                            continue;
                        }
                    }
                }
            }
            self.ch.handle_completion(wc.wr_id, wc.is_success(), wc.byte_len);
        }
        self.report_receives(cq_empty);
    }
}

/// A blocking SCSI command for the worker pool.
#[derive(Debug)]
pub struct ExecJob {
    pub(super) key: ChannelKey,
    pub(super) cmd: CmdId,
    nexus: Arc<Nexus>,
    /// The CDB as decoded when the command was planned.
    command: ScsiCommand,
    buf: Arc<DmaBuf>,
    offset: usize,
    len: u32,
}

impl ExecJob {
    pub(super) fn run(&self) -> Completion {
        self.nexus.run(&self.command, &self.buf, self.offset, self.len)
    }
}

/// The worker pool of one poller (results come back on its `done` queue).
pub type ExecQueue = WorkerPool<ExecJob>;

/// Where a poller runs SCSI commands with backstore I/O: reads, writes and
/// flushes of file LUNs on its io_uring, and RBD LUNs' reads, writes,
/// flushes, UNMAPs and WRITE SAMEs on librbd (both submitted and reaped by
/// the poller thread itself), everything else that may block on its
/// worker pool (all file I/O where io_uring is unavailable).
#[derive(Debug)]
pub struct Executor {
    pub pool: ExecQueue,
    pub aio: Option<AsyncEngine<(ChannelKey, CmdId)>>,
    pub rbd: Option<RbdEngine<(ChannelKey, CmdId)>>,
    /// Commands handed to the worker pool.
    pub worker_jobs: u64,
}
