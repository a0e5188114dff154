//! Data path: poller threads that own channels and carry out their actions
//! on real queue pairs. Never on the tokio runtime.
//!
//! A poller busy-polls its completion queues while there is work, then arms
//! them and sleeps on the completion channels (and a wake-up socket for
//! control messages and backstore completions), so an idle target uses no
//! CPU. Each pass gathers the channel's send work requests and posts them
//! with one doorbell.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::sync::mpsc::{Receiver, Sender, SyncSender, TryRecvError};

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc::UnboundedSender;

use crate::proto::{Action, Channel, ChannelStats, CmdId, Region, WorkRequest, WrOpcode};
use crate::rdma::{
    self, CompletionChannel, CompletionQueue, MemoryRegion, QueuePair, RecvScratch, Remote, SendOp,
    SendRequest, SendScratch, Sge, WorkCompletion,
};
use crate::scsi::{Completion, Nexus, WorkerPool};

use super::device::{with_recv_chain, Device, SrqRing, RECV_BATCH};

/// Work request id of the send-queue drain marker (never produced by a
/// channel).
const DRAIN_SQ: u64 = u64::MAX;
/// How long to wait for posted receives to be flushed after the send queue
/// drained. Once the QP is in the error state and its send queue is empty
/// nothing can write into our memory any more, so this is only tidiness.
const RQ_DRAIN_GRACE: Duration = Duration::from_millis(500);

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
    pub key: u64,
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
    /// Draining: when the send-queue marker completed (None: not yet).
    drain: Option<Option<Instant>>,
    /// A poll after the marker completed found the CQ empty.
    cq_empty_after_marker: bool,
    drained_reported: bool,
    closed: bool,
    /// `ibv_post_send` calls (doorbells) made for this channel.
    doorbells: u64,
}

impl ChannelDriver {
    /// Wraps a channel whose resources are set up (QP not yet connected).
    /// `mrs` are the send ring, data pool and table pool regions.
    pub fn new(
        key: u64,
        ch: Channel,
        qp: QueuePair,
        cq: Arc<CompletionQueue>,
        recv: RecvSide,
        mrs: [MemoryRegion; 3],
        device: Arc<Device>,
    ) -> ChannelDriver {
        let [send_mr, pool_mr, table_mr] = mrs;
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
            drain: None,
            cq_empty_after_marker: false,
            drained_reported: false,
            closed: false,
            doorbells: 0,
        }
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

    /// Carries out every queued action. `exec` receives blocking SCSI
    /// commands; non-blocking ones run inline.
    pub fn run_actions(&mut self, exec: &ExecQueue, events: &UnboundedSender<PollerEvent>) {
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
                        stats: self.ch.stats().clone(),
                    });
                }
            }
        }
        self.flush();
    }

    fn execute(&mut self, cmd: CmdId, exec: &ExecQueue) {
        let Some(r) = self.ch.exec_request(cmd) else {
            tracing::error!(cmd, "execute requested for a context that is not executing");
            return;
        };
        if r.nexus.is_blocking(r.lun, r.cdb) {
            let mut cdb = [0u8; 32];
            let n = r.cdb.len().min(32);
            cdb[..n].copy_from_slice(&r.cdb[..n]);
            let job = ExecJob {
                key: self.key,
                cmd,
                nexus: r.nexus.clone(),
                lun: r.lun,
                cdb,
                cdb_len: n as u8,
                buf: r.buf.clone(),
                offset: r.offset,
                len: r.len,
            };
            if let Err(job) = exec.submit(job) {
                // The queue is sized for every context, so this only happens
                // at shutdown: run it here rather than lose it.
                let done = job.run();
                self.ch.handle_exec_done(cmd, done);
            }
        } else {
            let done = r.nexus.execute(r.lun, r.cdb, r.buf, r.offset, r.len);
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
                            if self.drain.is_none() {
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
                if self.drain.is_none() {
                    tracing::error!(error = %e.error, posted = e.posted, "post_send failed");
                }
                failed = true;
                break;
            }
        }
        self.sends = sends;
        self.sends.clear();
        if failed && self.drain.is_none() {
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
    /// used.) With a shared receive queue nothing is flushed per QP: the
    /// marker plus one empty poll of the CQ after it is the whole drain.
    fn start_drain(&mut self, events: &UnboundedSender<PollerEvent>) {
        if self.drain.is_some() {
            return;
        }
        let _ = events.send(PollerEvent::Disconnect { key: self.key });
        tracing::debug!(
            key = self.key,
            recvs = self.recvs_posted,
            "draining the queue pair"
        );
        self.drain = Some(None);
        if let Err(e) = self.qp.to_error() {
            tracing::error!(error = %e, "moving QP to error failed");
        }
        let none: [Sge; 0] = [];
        let marker = [SendRequest::new(DRAIN_SQ, SendOp::Send, &none).signaled(true)];
        if let Err(e) = self.qp.post_send(&marker, &mut self.send_scratch) {
            tracing::warn!(error = %e.error, "posting the drain marker failed; assuming the send queue drained");
            self.drain = Some(Some(Instant::now()));
        }
        self.check_drained();
    }

    /// Reports the drain to the channel once the send queue is drained and
    /// every receive is flushed (or the grace period passed); with a shared
    /// receive queue, once the CQ was seen empty after the marker. Reads the
    /// clock only for the grace period (never on a live channel: it may be
    /// a system call, see `Poller::run`).
    fn check_drained(&mut self) {
        let Some(Some(sq_done)) = self.drain else { return };
        if self.ch.is_closed() || self.drained_reported {
            return;
        }
        let done = match self.recv {
            RecvSide::Srq(_) => self.cq_empty_after_marker,
            RecvSide::Own(_) => self.recvs_posted == 0 || sq_done.elapsed() >= RQ_DRAIN_GRACE,
        };
        if done {
            tracing::debug!(
                key = self.key,
                unflushed_recvs = self.recvs_posted,
                in_flight = self.ch.in_flight(),
                "drained"
            );
            self.drained_reported = true;
            self.ch.handle_drained();
        }
    }

    /// Feeds completions to the channel. `cq_empty`: the poll that
    /// returned them found no more.
    fn on_completions(&mut self, wcs: &[WorkCompletion], cq_empty: bool) {
        for wc in wcs {
            if wc.wr_id == DRAIN_SQ {
                tracing::debug!(key = self.key, status = wc.status.name(), "drain marker");
                if let Some(d) = self.drain.as_mut() {
                    *d = Some(Instant::now());
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
        if cq_empty && matches!(self.drain, Some(Some(_))) {
            self.cq_empty_after_marker = true;
        }
        self.check_drained();
    }
}

/// How long a poller keeps polling after its last work before it arms its
/// completion queues and sleeps, adapted to how soon work comes back, in the
/// manner of Linux's haltpoll cpuidle governor: a sleep that ends within
/// the longest window (`--spin-us`) would have been avoided by spinning
/// longer, so the window doubles (from a quarter of the maximum); a longer
/// sleep means spinning was wasted, so it halves, down to 0. With a real NIC
/// a 4 KiB command's round trip is a few microseconds and the window stays
/// at its maximum; where completions take longer than the window (soft-RoCE
/// under emulation, idle channels) the poller stops burning CPU for nothing.
#[derive(Debug, Clone)]
pub struct SpinPolicy {
    max: u64,
    window: u64,
}

impl SpinPolicy {
    /// `max`: the longest window, in any tick unit (0: never spin).
    pub fn new(max: u64) -> SpinPolicy {
        SpinPolicy { max, window: max }
    }

    /// `d` in ticks of `ticks_per_ms`.
    pub fn ticks(d: Duration, ticks_per_ms: u64) -> u64 {
        (d.as_nanos().saturating_mul(u128::from(ticks_per_ms)) / 1_000_000).min(u128::from(u64::MAX)) as u64
    }

    /// The current window.
    pub fn window(&self) -> u64 {
        self.window
    }

    /// The poller gave up spinning and slept for `slept` ticks (0: it found
    /// work right after giving up).
    pub fn after_sleep(&mut self, slept: u64) {
        let start = self.max / 4;
        if slept <= self.max {
            self.window = self.window.saturating_mul(2).clamp(start, self.max);
        } else {
            self.window /= 2;
            if self.window < start {
                self.window = 0;
            }
        }
    }
}

/// A blocking SCSI command for the worker pool.
#[derive(Debug)]
pub struct ExecJob {
    key: u64,
    cmd: CmdId,
    nexus: Arc<Nexus>,
    lun: [u8; 8],
    cdb: [u8; 32],
    cdb_len: u8,
    buf: Arc<rdma::DmaBuf>,
    offset: usize,
    len: u32,
}

impl ExecJob {
    fn run(&self) -> Completion {
        self.nexus.execute(
            self.lun,
            &self.cdb[..self.cdb_len as usize],
            &self.buf,
            self.offset,
            self.len,
        )
    }
}

/// The worker pool of one poller (results come back on its `done` queue).
pub type ExecQueue = WorkerPool<ExecJob>;

/// What a poller tells the control plane.
#[derive(Debug)]
pub enum PollerEvent {
    /// The channel wants its connection ended (logout, fatal error).
    Disconnect { key: u64 },
    /// The channel is gone; all its resources are freed.
    Closed { key: u64, stats: ChannelStats },
}

/// What the control plane tells a poller.
#[derive(Debug)]
pub enum PollerMsg {
    Add(Box<ChannelDriver>),
    /// The connection is gone (CM event): drain and free.
    Disconnect(u64),
    /// Target shutdown: log the initiator out.
    Logout(u64),
    /// Stop once no channel is left.
    Stop,
}

/// What a poller counts about itself (read by the control plane at exit).
#[derive(Debug, Default)]
pub struct PollerCounters {
    /// Times the poller went to sleep on its completion channels.
    pub sleeps: AtomicU64,
    /// `ibv_post_send` calls of channels that have closed.
    pub doorbells: AtomicU64,
}

/// The control plane's handle on a poller thread.
#[derive(Debug)]
pub struct PollerHandle {
    tx: Mutex<Sender<PollerMsg>>,
    counters: Arc<PollerCounters>,
    wake: Mutex<UnixStream>,
    comp_channels: Arc<Mutex<HashMap<String, Arc<CompletionChannel>>>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl PollerHandle {
    /// Sends a message and wakes the poller.
    pub fn send(&self, m: PollerMsg) {
        if let Ok(tx) = self.tx.lock() {
            let _ = tx.send(m);
        }
        if let Ok(mut w) = self.wake.lock() {
            let _ = w.write(&[1]);
        }
    }

    /// The completion channel this poller sleeps on for `device`.
    pub fn comp_channel(&self, device: &Device) -> rdma::Result<Arc<CompletionChannel>> {
        let mut m = self.comp_channels.lock().expect("poller map poisoned");
        if let Some(c) = cached_channel(&m, device) {
            return Ok(c.clone());
        }
        let c = CompletionChannel::new(device.context())?;
        m.insert(device.name().to_owned(), c.clone());
        Ok(c)
    }

    /// Drops the completion channel of `device` (removed; its channels are
    /// gone), which holds the device context open.
    pub fn forget_device(&self, device: &Device) {
        let removed = {
            let mut m = self.comp_channels.lock().expect("poller map poisoned");
            cached_channel(&m, device).is_some() && m.remove(device.name()).is_some()
        };
        if removed {
            // A sleeping poller holds the channels it waits on (and so the
            // device context, which the kernel's device removal waits for)
            // until it wakes: wake it now.
            if let Ok(mut w) = self.wake.lock() {
                let _ = w.write(&[1]);
            }
        }
    }

    /// The poller's counters.
    pub fn counters(&self) -> &PollerCounters {
        &self.counters
    }

    /// Waits for the thread to end (after `Stop`).
    pub fn join(&self) {
        if let Some(t) = self.thread.lock().ok().and_then(|mut t| t.take()) {
            let _ = t.join();
        }
    }
}

/// The completion channel cached for `device`, if it was made on this very
/// context: a device of the same name may have been removed and added again,
/// and a channel of the old context cannot serve the new one.
fn cached_channel<'a>(
    m: &'a HashMap<String, Arc<CompletionChannel>>,
    device: &Device,
) -> Option<&'a Arc<CompletionChannel>> {
    m.get(device.name())
        .filter(|c| c.context().same_context(device.context()))
}

/// Settings of a poller.
#[derive(Debug, Clone, Copy)]
pub struct PollerConfig {
    /// Keep polling this long after the last completion before sleeping.
    pub spin: Duration,
    /// Worker threads for blocking backstore I/O.
    pub io_threads: usize,
    /// Queue size of the worker pool (covers every context).
    pub io_queue: usize,
}

/// Starts a poller thread.
pub fn spawn(
    index: usize,
    cfg: PollerConfig,
    events: UnboundedSender<PollerEvent>,
) -> std::io::Result<Arc<PollerHandle>> {
    let (tx, rx) = std::sync::mpsc::channel();
    let (wake_tx, wake_rx) = UnixStream::pair()?;
    wake_tx.set_nonblocking(true)?;
    wake_rx.set_nonblocking(true)?;
    let (done_tx, done_rx) = std::sync::mpsc::sync_channel::<(u64, CmdId, Completion)>(cfg.io_queue.max(1));
    let waker = Mutex::new(wake_tx.try_clone()?);
    let handler_done = done_tx.clone();
    let pool = WorkerPool::new(
        cfg.io_threads.max(1),
        cfg.io_queue.max(1),
        &format!("srptd-io{index}"),
        move |job: ExecJob| {
            let done = job.run();
            let _ = handler_done.send((job.key, job.cmd, done));
            if let Ok(mut w) = waker.lock() {
                let _ = w.write(&[1]);
            }
        },
    )?;
    let comp_channels = Arc::new(Mutex::new(HashMap::new()));
    let counters = Arc::new(PollerCounters::default());
    let handle = Arc::new(PollerHandle {
        tx: Mutex::new(tx),
        counters: counters.clone(),
        wake: Mutex::new(wake_tx),
        comp_channels: comp_channels.clone(),
        thread: Mutex::new(None),
    });
    let exec = pool;
    let t = std::thread::Builder::new()
        .name(format!("srptd-poll{index}"))
        .spawn(move || {
            let mut p = Poller {
                rx,
                wake: wake_rx,
                done: done_rx,
                _done_tx: done_tx,
                exec,
                events,
                comp_channels,
                chans: Vec::new(),
                cfg,
                counters,
            };
            p.run();
        })?;
    *handle.thread.lock().expect("fresh mutex") = Some(t);
    Ok(handle)
}

struct Poller {
    rx: Receiver<PollerMsg>,
    wake: UnixStream,
    done: Receiver<(u64, CmdId, Completion)>,
    _done_tx: SyncSender<(u64, CmdId, Completion)>,
    exec: ExecQueue,
    events: UnboundedSender<PollerEvent>,
    comp_channels: Arc<Mutex<HashMap<String, Arc<CompletionChannel>>>>,
    chans: Vec<ChannelDriver>,
    cfg: PollerConfig,
    counters: Arc<PollerCounters>,
}

impl Poller {
    fn find(&mut self, key: u64) -> Option<&mut ChannelDriver> {
        self.chans.iter_mut().find(|c| c.key == key)
    }

    /// One pass over control messages, backstore completions and CQs.
    fn poll_once(&mut self, wcs: &mut [WorkCompletion], stop: &mut bool) -> usize {
        let mut work = 0usize;
        loop {
            let m = match self.rx.try_recv() {
                Ok(m) => m,
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    *stop = true;
                    break;
                }
            };
            work += 1;
            match m {
                PollerMsg::Add(mut d) => {
                    d.run_actions(&self.exec, &self.events);
                    self.chans.push(*d);
                }
                PollerMsg::Disconnect(key) => {
                    if let Some(d) = self.find(key) {
                        d.ch.handle_disconnect();
                    }
                    self.run_key(key);
                }
                PollerMsg::Logout(key) => {
                    if let Some(d) = self.find(key) {
                        d.ch.logout();
                    }
                    self.run_key(key);
                }
                PollerMsg::Stop => *stop = true,
            }
        }
        while let Ok((key, cmd, done)) = self.done.try_recv() {
            work += 1;
            if let Some(d) = self.find(key) {
                d.ch.handle_exec_done(cmd, done);
            }
            self.run_key(key);
        }
        for d in self.chans.iter_mut() {
            match d.cq.poll(wcs) {
                Ok(0) => {
                    if d.drain.is_some() {
                        // An empty CQ may finish a drain.
                        d.on_completions(&[], true);
                        d.run_actions(&self.exec, &self.events);
                    }
                }
                Ok(n) => {
                    work += n;
                    d.on_completions(&wcs[..n], n < wcs.len());
                    d.run_actions(&self.exec, &self.events);
                }
                Err(e) => {
                    tracing::error!(error = %e, "polling a completion queue failed");
                    d.ch.handle_disconnect();
                    d.run_actions(&self.exec, &self.events);
                }
            }
        }
        for d in self
            .chans
            .iter_mut()
            .filter(|d| d.drain.is_some() && !d.drained_reported)
        {
            d.check_drained();
            d.run_actions(&self.exec, &self.events);
            work += 1;
        }
        let counters = &self.counters;
        self.chans.retain(|d| {
            if d.closed {
                counters.doorbells.fetch_add(d.doorbells, Ordering::Relaxed);
            }
            !d.closed
        });
        work
    }

    fn run(&mut self) {
        let mut spin = SpinPolicy::new(SpinPolicy::ticks(self.cfg.spin, rdma::os::ticks_per_ms()));
        let mut wcs = vec![WorkCompletion::default(); 64];
        let mut stop = false;
        // Spinning since (ticks; `rdma::os::ticks`, no system call).
        let mut idle_since: Option<u64> = None;
        let mut chans: Vec<Arc<CompletionChannel>> = Vec::new();
        loop {
            let work = self.poll_once(&mut wcs, &mut stop);
            if stop && self.chans.is_empty() {
                break;
            }
            if work > 0 {
                idle_since = None;
                continue;
            }
            let now = rdma::os::ticks();
            if now.saturating_sub(*idle_since.get_or_insert(now)) < spin.window() {
                std::hint::spin_loop();
                continue;
            }
            idle_since = None;
            // Idle: arm every CQ, then look once more so that a completion
            // that arrived before the arm is not slept through.
            for d in &self.chans {
                if let Err(e) = d.cq.arm(false) {
                    tracing::error!(error = %e, "arming a completion queue failed");
                }
            }
            if self.poll_once(&mut wcs, &mut stop) > 0 {
                // Work right after the spin gave up: it was too short.
                spin.after_sleep(0);
                continue;
            }
            chans.clear();
            if let Ok(m) = self.comp_channels.lock() {
                chans.extend(m.values().cloned());
            }
            // Completion channels past the first WAIT_ANY_MAX - 1 devices
            // are looked at on a 200 ms timeout; otherwise no timeout (and
            // no timer to set up per sleep): every event that needs the
            // poller arrives on one of the descriptors.
            let watched = chans.len().min(rdma::WAIT_ANY_MAX - 1);
            let ready = {
                let mut fds = [self.wake.as_fd(); rdma::WAIT_ANY_MAX];
                for (slot, c) in fds[1..=watched].iter_mut().zip(&chans) {
                    *slot = c.as_fd();
                }
                let timeout = (watched < chans.len()).then_some(Duration::from_millis(200));
                self.counters.sleeps.fetch_add(1, Ordering::Relaxed);
                let t0 = rdma::os::ticks();
                let ready = rdma::wait_any(&fds[..=watched], timeout).unwrap_or_else(|e| {
                    tracing::error!(error = %e, "waiting for completions failed");
                    0
                });
                spin.after_sleep(rdma::os::ticks().saturating_sub(t0));
                ready
            };
            // One event per ready channel (each armed CQ gives at most one;
            // another one pending keeps the descriptor readable for the next
            // sleep), so no read ends in EAGAIN.
            for (i, c) in chans.iter().enumerate() {
                if i >= watched {
                    while let Ok(Some(_)) = c.get_event() {}
                } else if ready & (1 << (i + 1)) != 0 {
                    if let Err(e) = c.get_event() {
                        tracing::error!(error = %e, "reading a completion event failed");
                    }
                }
            }
            if ready & 1 != 0 {
                let mut sink = [0u8; 64];
                while matches!(self.wake.read(&mut sink), Ok(n) if n == sink.len()) {}
            }
            // Hold no channel while awake: one forgotten meanwhile (its
            // device removed) must not keep the device open.
            chans.clear();
        }
        tracing::debug!("poller stopped");
    }

    fn run_key(&mut self, key: u64) {
        let (exec, events) = (&self.exec, &self.events);
        if let Some(d) = self.chans.iter_mut().find(|c| c.key == key) {
            d.run_actions(exec, events);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::SpinPolicy;
    use std::time::Duration;

    #[test]
    fn spin_window_shrinks_to_zero_when_sleeps_are_long() {
        let mut p = SpinPolicy::new(400);
        assert_eq!(p.window(), 400);
        let mut seen = vec![];
        for _ in 0..4 {
            p.after_sleep(10_000);
            seen.push(p.window());
        }
        // Halves until below a quarter of the maximum, then off.
        assert_eq!(seen, [200, 100, 0, 0]);
    }

    #[test]
    fn spin_window_grows_back_when_work_comes_soon_after_sleeping() {
        let mut p = SpinPolicy::new(400);
        for _ in 0..3 {
            p.after_sleep(10_000);
        }
        assert_eq!(p.window(), 0);
        p.after_sleep(50);
        assert_eq!(p.window(), 100, "restarts at a quarter of the maximum");
        p.after_sleep(0);
        assert_eq!(p.window(), 200);
        p.after_sleep(400);
        assert_eq!(p.window(), 400);
        p.after_sleep(1);
        assert_eq!(p.window(), 400, "never beyond the maximum");
    }

    #[test]
    fn zero_maximum_never_spins() {
        let mut p = SpinPolicy::new(0);
        p.after_sleep(0);
        assert_eq!(p.window(), 0);
        p.after_sleep(5);
        assert_eq!(p.window(), 0);
    }

    #[test]
    fn durations_convert_to_ticks() {
        assert_eq!(SpinPolicy::ticks(Duration::from_micros(50), 3_000_000), 150_000);
        assert_eq!(SpinPolicy::ticks(Duration::ZERO, 3_000_000), 0);
        assert_eq!(
            SpinPolicy::ticks(Duration::from_secs(u64::MAX), u64::MAX),
            u64::MAX
        );
    }
}
