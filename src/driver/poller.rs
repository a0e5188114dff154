//! Data path: poller threads that own channels and carry out their actions
//! on real queue pairs. Never on the tokio runtime.
//!
//! A poller busy-polls its completion queues while there is work, then arms
//! them and sleeps on the completion channels (and a wake-up socket for
//! control messages and worker-pool completions, and its io_uring's
//! eventfd), so an idle target uses no CPU. File LUNs' reads, writes and
//! flushes go to the poller's own io_uring: queued while it runs the
//! channels' actions, submitted once per pass, reaped at the start of the
//! next with no system call. RBD LUNs' I/O goes to librbd from the poller;
//! librbd's completion callbacks queue the results and signal the RBD
//! engine's eventfd, and the poller reaps them like the io_uring's. Each
//! pass gathers the channel's send work requests and posts them with one
//! doorbell (see [`super::channel`], which runs one channel).

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::sync::mpsc::{Receiver, Sender, SyncSender, TryRecvError};

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc::UnboundedSender;

use crate::os;
use crate::proto::{ChannelStats, CmdId, LunStats, TASK_SET_POLL};
use crate::rdma::{self, CompletionChannel, WorkCompletion};
use crate::scsi::{AsyncEngine, Completion, RbdEngine, WorkerPool};

use super::channel::{ChannelDriver, ChannelKey, ExecJob, Executor};
use super::device::Device;

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

/// What a poller tells the control plane.
#[derive(Debug)]
pub enum PollerEvent {
    /// The channel wants its connection ended (logout, fatal error).
    Disconnect { key: ChannelKey },
    /// The channel is gone; all its resources are freed.
    Closed {
        key: ChannelKey,
        stats: Box<ChannelStats>,
    },
}

/// What the control plane tells a poller.
#[derive(Debug)]
pub enum PollerMsg {
    Add(Box<ChannelDriver>),
    /// The connection is gone (CM event): drain and free.
    Disconnect(ChannelKey),
    /// Target shutdown: log the initiator out.
    Logout(ChannelKey),
    /// Stop once no channel is left.
    Stop,
    /// Report every channel's counters and queue state, and the totals of
    /// the channels closed on this poller (admin socket, metrics).
    Snapshot(tokio::sync::oneshot::Sender<PollerSnapshot>),
}

/// A poller's figures at a moment: its channels, and what the channels it
/// has closed counted (folded in as each closes, so a figure never goes
/// missing between the two).
#[derive(Debug, Clone, Default)]
pub struct PollerSnapshot {
    pub channels: Vec<ChannelSnapshot>,
    pub closed: ChannelStats,
    pub closed_luns: LunStats,
}

/// One channel's counters and queue state at a moment.
#[derive(Debug, Clone)]
pub struct ChannelSnapshot {
    pub key: ChannelKey,
    pub stats: ChannelStats,
    /// Its figures per LUN.
    pub luns: LunStats,
    /// Commands received and not yet answered.
    pub in_flight: usize,
    /// Credits granted at login, and how many the initiator holds in
    /// outstanding requests.
    pub credits_granted: u32,
    pub credits_in_use: u32,
}

/// What a poller counts about itself (read by the control plane at exit).
#[derive(Debug, Default)]
pub struct PollerCounters {
    /// Times the poller went to sleep on its completion channels.
    pub sleeps: AtomicU64,
    /// `ibv_post_send` calls of channels that have closed.
    pub doorbells: AtomicU64,
    /// Commands whose backstore I/O ran on the poller's io_uring.
    pub uring_commands: AtomicU64,
    /// `io_uring_enter` calls made to submit them.
    pub uring_enters: AtomicU64,
    /// Commands on RBD LUNs submitted to librbd by the poller.
    pub rbd_commands: AtomicU64,
    /// Commands handed to the worker pool.
    pub worker_jobs: AtomicU64,
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
    /// Use an io_uring for file I/O where the kernel allows it.
    pub io_uring: bool,
    /// Queue size of the worker pool (covers every context).
    pub io_queue: usize,
    /// The CPU the poller thread is bound to (`None`: unbound).
    pub cpu: Option<usize>,
    /// The poller thread's nice value (`setpriority(2)`; 0: left as the
    /// process's). Above 0 the scheduler runs other runnable work on the
    /// poller's CPU first when both want it: where an initiator, or the
    /// soft-RoCE work that feeds the poller, shares the CPU, more
    /// commands then arrive per wake-up and go out per doorbell
    /// (docs/performance.md). It changes nothing on an otherwise idle CPU.
    pub nice: i32,
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
    let (done_tx, done_rx) =
        std::sync::mpsc::sync_channel::<(ChannelKey, CmdId, Completion)>(cfg.io_queue.max(1));
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
    let t = std::thread::Builder::new()
        .name(format!("srptd-poll{index}"))
        .spawn(move || {
            if let Some(cpu) = cfg.cpu {
                match os::pin_current_thread(cpu) {
                    Ok(()) => tracing::debug!(poller = index, cpu, "poller bound to a CPU"),
                    Err(e) => tracing::warn!(poller = index, cpu, error = %e, "poller left unbound"),
                }
            }
            if cfg.nice != 0 {
                if let Err(e) = os::set_current_thread_nice(cfg.nice) {
                    tracing::warn!(poller = index, nice = cfg.nice, error = %e, "poller's nice value not set (data_path.poller_nice)");
                }
            }
            let exec = Executor {
                pool,
                aio: async_engine(cfg.io_uring, cfg.io_queue),
                rbd: RbdEngine::new(cfg.io_queue)
                    .map_err(|e| tracing::error!(error = %e, "no RBD engine: RBD LUNs' I/O runs on the worker pool"))
                    .ok(),
                worker_jobs: 0,
            };
            let mut p = Poller {
                rx,
                wake: wake_rx,
                done: done_rx,
                _done_tx: done_tx,
                exec,
                events,
                comp_channels,
                aio_done: Vec::with_capacity(cfg.io_queue),
                reaped_since_clear: false,
                chans: Vec::new(),
                cfg,
                counters,
                closed: ChannelStats::default(),
                closed_luns: LunStats::default(),
            };
            p.run();
        })?;
    *handle.thread.lock().expect("fresh mutex") = Some(t);
    Ok(handle)
}

/// The poller's io_uring engine, or `None` (said once per process) where
/// io_uring is unavailable or turned off (`want`).
fn async_engine(want: bool, entries: usize) -> Option<AsyncEngine<(ChannelKey, CmdId)>> {
    static SAID: std::sync::Once = std::sync::Once::new();
    if !want {
        SAID.call_once(|| tracing::info!("io_uring turned off: file I/O runs on the worker pool"));
        return None;
    }
    match AsyncEngine::new(entries.clamp(64, 1024) as u32) {
        Ok(e) => {
            SAID.call_once(|| tracing::info!("file I/O on io_uring, submitted and reaped by the pollers"));
            Some(e)
        }
        Err(e) => {
            SAID.call_once(
                || tracing::warn!(error = %e, "io_uring unavailable: file I/O runs on the worker pool"),
            );
            None
        }
    }
}

struct Poller {
    rx: Receiver<PollerMsg>,
    wake: UnixStream,
    done: Receiver<(ChannelKey, CmdId, Completion)>,
    _done_tx: SyncSender<(ChannelKey, CmdId, Completion)>,
    exec: Executor,
    /// Commands the io_uring finished, taken from it each pass.
    aio_done: Vec<((ChannelKey, CmdId), Completion)>,
    /// io_uring or RBD completions were reaped since their eventfds were
    /// last reset: reset them before sleeping (otherwise they are quiet,
    /// and a stale signal would only cost one early wake-up).
    reaped_since_clear: bool,
    events: UnboundedSender<PollerEvent>,
    comp_channels: Arc<Mutex<HashMap<String, Arc<CompletionChannel>>>>,
    chans: Vec<ChannelDriver>,
    cfg: PollerConfig,
    counters: Arc<PollerCounters>,
    /// Totals of the channels closed on this poller.
    closed: ChannelStats,
    closed_luns: LunStats,
}

impl Poller {
    fn find(&mut self, key: ChannelKey) -> Option<&mut ChannelDriver> {
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
                    if let Some(aio) = self.exec.aio.as_mut() {
                        // Data-out and data-in move through these: pinned
                        // once for the channel's life, not per operation.
                        aio.register_buffer(d.ch.pool_buf());
                        aio.register_buffer(d.ch.recv_buf());
                    }
                    d.run_actions(&mut self.exec, &self.events);
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
                PollerMsg::Snapshot(reply) => {
                    let channels = self
                        .chans
                        .iter()
                        .map(|d| ChannelSnapshot {
                            key: d.key,
                            stats: d.ch.stats().clone(),
                            luns: d.ch.lun_stats().clone(),
                            in_flight: d.ch.in_flight(),
                            credits_granted: d.ch.credits().granted(),
                            credits_in_use: d.ch.credits().in_use(),
                        })
                        .collect();
                    let _ = reply.send(PollerSnapshot {
                        channels,
                        closed: self.closed.clone(),
                        closed_luns: self.closed_luns.clone(),
                    });
                }
            }
        }
        // Backstore completions (worker pool, io_uring, RBD) are handed to
        // their channels first; each channel then carries out its actions
        // once with those of its CQ below, so the responses of a pass share
        // one doorbell.
        let mut delivered = 0usize;
        while let Ok((key, cmd, done)) = self.done.try_recv() {
            delivered += 1;
            self.exec_done(key, cmd, done);
        }
        work += delivered;
        let mut done = std::mem::take(&mut self.aio_done);
        let mut reaped = 0;
        if let Some(aio) = self.exec.aio.as_mut() {
            reaped += aio.reap(&mut done);
        }
        if let Some(rbd) = self.exec.rbd.as_mut() {
            reaped += rbd.reap(&mut done);
        }
        self.reaped_since_clear |= reaped > 0;
        // Every completion reaped counts as work, finished or resubmitted.
        work += reaped;
        delivered += done.len();
        for ((key, cmd), c) in done.drain(..) {
            self.exec_done(key, cmd, c);
        }
        self.aio_done = done;
        for d in self.chans.iter_mut() {
            match d.cq.poll(wcs) {
                Ok(0) => {
                    if d.is_draining() {
                        // An empty CQ may finish a drain.
                        d.on_completions(&[], true);
                        d.run_actions(&mut self.exec, &self.events);
                    } else if delivered > 0 {
                        d.run_actions(&mut self.exec, &self.events);
                    }
                }
                Ok(n) => {
                    work += n;
                    d.on_completions(&wcs[..n], n < wcs.len());
                    d.run_actions(&mut self.exec, &self.events);
                }
                Err(e) => {
                    tracing::error!(error = %e, "polling a completion queue failed");
                    d.ch.handle_disconnect();
                    d.run_actions(&mut self.exec, &self.events);
                }
            }
        }
        for d in self.chans.iter_mut().filter(|d| d.drain_in_progress()) {
            d.check_timeout();
            d.run_actions(&mut self.exec, &self.events);
            work += 1;
        }
        // A request waiting for other channels' aborted tasks looks again
        // (not counted as work: the poller sleeps at most TASK_SET_POLL).
        for d in self.chans.iter_mut().filter(|d| d.ch.waits_for_task_sets()) {
            d.ch.handle_timeout(Instant::now());
            d.run_actions(&mut self.exec, &self.events);
        }
        self.submit_io();
        let (counters, closed, closed_luns) = (&self.counters, &mut self.closed, &mut self.closed_luns);
        let aio = &mut self.exec.aio;
        self.chans.retain(|d| {
            if d.is_finished() {
                if let Some(aio) = aio.as_mut() {
                    aio.unregister_buffer(d.ch.pool_buf());
                    aio.unregister_buffer(d.ch.recv_buf());
                }
                counters.doorbells.fetch_add(d.doorbells(), Ordering::Relaxed);
                *closed += d.ch.stats();
                closed_luns.merge(d.ch.lun_stats());
            }
            !d.is_finished()
        });
        work
    }

    fn run(&mut self) {
        let mut spin = SpinPolicy::new(SpinPolicy::ticks(self.cfg.spin, os::ticks_per_ms()));
        let mut wcs = vec![WorkCompletion::default(); 64];
        let mut stop = false;
        // Spinning since (ticks; `os::ticks`, no system call).
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
            let now = os::ticks();
            if now.saturating_sub(*idle_since.get_or_insert(now)) < spin.window() {
                std::hint::spin_loop();
                continue;
            }
            idle_since = None;
            // Idle: arm every CQ not armed yet (and reset the engines'
            // eventfds, signalled by every completion reaped while busy),
            // then look once more so that a completion that arrived before
            // is not slept through.
            if std::mem::take(&mut self.reaped_since_clear) {
                if let Some(aio) = &self.exec.aio {
                    aio.clear_event();
                }
                if let Some(rbd) = &self.exec.rbd {
                    rbd.clear_event();
                }
            }
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
            // The wake-up socket, the io_uring's and the RBD engine's
            // eventfds if there are, then the completion channels: those
            // past the first WAIT_ANY_MAX - base devices are looked at on a 200 ms
            // timeout; otherwise no timeout (and no timer to set up per
            // sleep): every event that needs the poller arrives on one of
            // the descriptors.
            let aio_bit = usize::from(self.exec.aio.is_some());
            let rbd_bit = aio_bit + usize::from(self.exec.rbd.is_some());
            let base = 1 + rbd_bit;
            let watched = chans.len().min(os::WAIT_ANY_MAX - base);
            let ready = {
                let mut fds = [self.wake.as_fd(); os::WAIT_ANY_MAX];
                if let Some(aio) = &self.exec.aio {
                    fds[aio_bit] = aio.eventfd();
                }
                if let Some(rbd) = &self.exec.rbd {
                    fds[rbd_bit] = rbd.eventfd();
                }
                for (slot, c) in fds[base..base + watched].iter_mut().zip(&chans) {
                    *slot = c.as_fd();
                }
                let timeout = if self.chans.iter().any(|d| d.ch.waits_for_task_sets()) {
                    Some(TASK_SET_POLL)
                } else {
                    (watched < chans.len()).then_some(Duration::from_millis(200))
                };
                self.counters.sleeps.fetch_add(1, Ordering::Relaxed);
                let t0 = os::ticks();
                let ready = os::wait_any(&fds[..base + watched], timeout).unwrap_or_else(|e| {
                    tracing::error!(error = %e, "waiting for completions failed");
                    0
                });
                spin.after_sleep(os::ticks().saturating_sub(t0));
                ready
            };
            // One event per ready channel (each armed CQ gives at most one;
            // another one pending keeps the descriptor readable for the next
            // sleep), so no read ends in EAGAIN.
            for (i, c) in chans.iter().enumerate() {
                if i >= watched {
                    while let Ok(Some(_)) = c.get_event() {}
                } else if ready & (1 << (i + base)) != 0 {
                    if let Err(e) = c.get_event() {
                        tracing::error!(error = %e, "reading a completion event failed");
                    }
                }
            }
            if let Some(aio) = self.exec.aio.as_ref().filter(|_| ready & (1 << aio_bit) != 0) {
                aio.clear_event();
            }
            if let Some(rbd) = self.exec.rbd.as_ref().filter(|_| ready & (1 << rbd_bit) != 0) {
                rbd.clear_event();
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

    /// Hands a backstore completion to its channel; the channel's actions
    /// run later in the same pass (`poll_once`).
    fn exec_done(&mut self, key: ChannelKey, cmd: CmdId, done: Completion) {
        if let Some(d) = self.find(key) {
            d.ch.handle_exec_done(cmd, done);
        }
    }

    /// Submits the io_uring operations the pass queued (one system call)
    /// and publishes the executor's counts.
    fn submit_io(&mut self) {
        let c = &self.counters;
        c.worker_jobs.store(self.exec.worker_jobs, Ordering::Relaxed);
        if let Some(rbd) = &self.exec.rbd {
            c.rbd_commands.store(rbd.counts().0, Ordering::Relaxed);
        }
        let Some(aio) = self.exec.aio.as_mut() else {
            return;
        };
        if let Err(e) = aio.submit() {
            // Left queued: the next pass submits them again.
            tracing::error!(error = %e, "io_uring submission failed");
        }
        let n = aio.counts();
        c.uring_commands.store(n.commands, Ordering::Relaxed);
        c.uring_enters.store(n.enters, Ordering::Relaxed);
    }

    fn run_key(&mut self, key: ChannelKey) {
        let (exec, events) = (&mut self.exec, &self.events);
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
