//! The control loop on the tokio runtime: RDMA/CM events, poller events,
//! signals and the timers (periodic tick, shutdown deadline) are dispatched
//! to the listeners ([`super::listen`]), devices ([`super::devices`]),
//! logins ([`super::login`]) and the connection table ([`super::conns`]).
//! It never touches a channel's data path: pollers do that, told by
//! messages.

use super::channel::ChannelKey;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::Instant;

use crate::config::LiveConfig;
use crate::proto::TargetPortId;
use crate::rdma::{CmEvent, CmEventKind, EventChannel};
use crate::scsi::Target;

use super::admin::AdminRequest;
use super::conns::Conns;
use super::devices::{lost_srq_slots, Devices};
use super::listen::Listeners;
use super::notify::{status_line, ServiceNotifier};
use super::poller::{PollerEvent, PollerHandle, PollerMsg};
use super::{Options, StartError, Summary};

const TICK: Duration = Duration::from_secs(1);
/// How long a shutdown waits for channels after forcing them off.
const FORCED_GRACE: Duration = Duration::from_secs(5);

/// Set once shutting down: when to stop waiting for logouts, and whether
/// channels were already forced off.
#[derive(Debug)]
struct Shutdown {
    deadline: Instant,
    forced: bool,
}

/// The control plane's state.
#[derive(Debug)]
pub(super) struct Control {
    pub opts: Options,
    pub target: Arc<Target>,
    pub port_id: TargetPortId,
    pub events: Arc<EventChannel>,
    pub pollers: Vec<Arc<PollerHandle>>,
    pub listeners: Listeners,
    pub devices: Devices,
    pub conns: Conns,
    pub summary: Summary,
    /// When the periodic tick runs next (None: nothing pending).
    tick_at: Option<Instant>,
    /// A channel closed since the last tick: its freed memory goes back to
    /// the system at the next one.
    release_heap: bool,
    shutdown: Option<Shutdown>,
    /// The service manager (systemd), if srptd runs under one.
    notifier: ServiceNotifier,
    /// When the control loop started (uptime).
    pub started: Instant,
    /// The effective settings, which admin calls change.
    pub live: Arc<std::sync::Mutex<LiveConfig>>,
}

impl Control {
    pub fn new(
        opts: Options,
        target: Arc<Target>,
        port_id: TargetPortId,
        events: Arc<EventChannel>,
        pollers: Vec<Arc<PollerHandle>>,
        listeners: Listeners,
        live: LiveConfig,
    ) -> Control {
        Control {
            opts,
            target,
            port_id,
            events,
            pollers,
            listeners,
            devices: Devices::default(),
            conns: Conns::new(),
            summary: Summary::default(),
            tick_at: None,
            release_heap: false,
            shutdown: None,
            notifier: ServiceNotifier::from_env(),
            started: Instant::now(),
            live: Arc::new(std::sync::Mutex::new(live)),
        }
    }

    /// Tells the service manager that srptd accepts logins.
    pub fn notify_ready(&mut self) {
        let status = self.status_line();
        self.notifier.ready(status);
    }

    fn status_line(&self) -> String {
        status_line(
            self.conns.nexus_count(),
            self.conns.len(),
            self.target.luns().len(),
            &self.opts.devices,
        )
    }

    /// Runs until shut down and every channel closed (or the shutdown
    /// deadline passed twice); returns the totals.
    pub async fn main_loop(
        &mut self,
        mut ev_rx: UnboundedReceiver<PollerEvent>,
        mut admin_rx: tokio::sync::mpsc::Receiver<AdminRequest>,
    ) -> Result<Summary, StartError> {
        let afd = self.events.to_async()?;
        let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let mut sighup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
        let watchdog = self.notifier.watchdog_interval();
        let mut watchdog_at = Instant::now();
        loop {
            if self.shutdown.is_some() && self.conns.is_empty() {
                break;
            }
            let far = Instant::now() + Duration::from_secs(3600);
            let shutting_down = self.shutting_down();
            let wake_at = self.shutdown.as_ref().map_or(far, |s| s.deadline);
            let tick_at = self.tick_at;
            tokio::select! {
                r = afd.readable() => {
                    let mut guard = r?;
                    self.drain_cm_events(&mut ev_rx);
                    guard.clear_ready();
                    self.drain_cm_events(&mut ev_rx);
                }
                Some(ev) = ev_rx.recv() => self.on_poller_event(ev),
                Some(r) = admin_rx.recv() => self.on_admin(r),
                _ = tokio::signal::ctrl_c(), if !shutting_down => self.begin_shutdown(),
                _ = sigterm.recv(), if !shutting_down => self.begin_shutdown(),
                _ = sighup.recv() => self.on_sighup(),
                _ = tokio::time::sleep_until(tick_at.unwrap_or(far)), if tick_at.is_some() => self.tick(),
                _ = tokio::time::sleep_until(watchdog_at), if watchdog.is_some() => {
                    self.notifier.watchdog();
                    watchdog_at = Instant::now() + watchdog.unwrap_or(TICK);
                }
                _ = tokio::time::sleep_until(wake_at), if shutting_down => {
                    if !self.force_logouts() {
                        break;
                    }
                }
            }
            if self.notifier.is_active() && !self.shutting_down() {
                let status = self.status_line();
                self.notifier.status(status);
            }
        }
        Ok(self.finish())
    }

    /// Whether a shutdown has begun.
    pub fn shutting_down(&self) -> bool {
        self.shutdown.is_some()
    }

    /// Stops accepting logins and logs every initiator out (SRP_T_LOGOUT
    /// once its commands finish), with a deadline for that.
    fn begin_shutdown(&mut self) {
        self.notifier.stopping();
        tracing::info!(
            channels = self.conns.len(),
            "shutting down: logging initiators out"
        );
        self.listeners.close();
        for c in self.conns.iter() {
            self.pollers[c.poller].send(PollerMsg::Logout(c.key));
        }
        self.shutdown = Some(Shutdown {
            deadline: Instant::now() + self.opts.shutdown_timeout,
            forced: false,
        });
    }

    /// The shutdown deadline passed: the first time, disconnects every
    /// channel and waits a little longer (true); the second time, gives up
    /// (false).
    fn force_logouts(&mut self) -> bool {
        let Some(s) = self.shutdown.as_mut() else {
            return true;
        };
        if s.forced {
            return false;
        }
        tracing::warn!(
            channels = self.conns.len(),
            "initiators did not log out in time; disconnecting"
        );
        s.forced = true;
        s.deadline = Instant::now() + FORCED_GRACE;
        let keys: Vec<ChannelKey> = self.conns.iter().map(|c| c.key).collect();
        for key in keys {
            self.disconnect(key);
        }
        true
    }

    /// Stops the pollers and adds up the totals.
    fn finish(&mut self) -> Summary {
        for p in &self.pollers {
            p.send(PollerMsg::Stop);
        }
        if self.conns.is_empty() {
            for p in &self.pollers {
                p.join();
            }
        }
        self.summary.leaked_channels = self.conns.len();
        for p in &self.pollers {
            let c = p.counters();
            self.summary.poller_sleeps += c.sleeps.load(Ordering::Relaxed);
            self.summary.doorbells += c.doorbells.load(Ordering::Relaxed);
            self.summary.uring_commands += c.uring_commands.load(Ordering::Relaxed);
            self.summary.uring_enters += c.uring_enters.load(Ordering::Relaxed);
            self.summary.rbd_commands += c.rbd_commands.load(Ordering::Relaxed);
            self.summary.worker_jobs += c.worker_jobs.load(Ordering::Relaxed);
        }
        for d in self.devices.held() {
            self.summary.leaked_srq_slots += lost_srq_slots(d, "at exit");
        }
        self.summary.clone()
    }

    /// Handles every pending RDMA/CM event. Channels that closed meanwhile
    /// (`poller_events`) are taken in before each one, so that a login is
    /// weighed against the memory of the channels still open, not of those
    /// whose close is only queued behind a burst of logins.
    fn drain_cm_events(&mut self, poller_events: &mut UnboundedReceiver<PollerEvent>) {
        loop {
            while let Ok(ev) = poller_events.try_recv() {
                self.on_poller_event(ev);
            }
            match self.events.get_event() {
                Ok(Some(ev)) => self.on_cm_event(ev),
                Ok(None) => break,
                Err(e) => {
                    tracing::error!(error = %e, "reading RDMA/CM events failed");
                    break;
                }
            }
        }
    }

    fn on_cm_event(&mut self, mut ev: CmEvent) {
        match ev.kind {
            CmEventKind::ConnectRequest => {
                if let Some(id) = ev.new_id.take() {
                    self.on_connect_request(id, &ev);
                }
            }
            CmEventKind::Established => {
                if let Some(c) = self.conns.get(&ev.id) {
                    tracing::debug!(key = c.key.0, "connection established");
                }
            }
            CmEventKind::DeviceRemoval => self.on_device_removal(ev.id),
            CmEventKind::AddrChange => self.on_addr_change(ev.id),
            CmEventKind::Disconnected
            | CmEventKind::Rejected
            | CmEventKind::Unreachable
            | CmEventKind::ConnectError => {
                if let Some(c) = self.conns.get_mut(&ev.id) {
                    tracing::info!(key = c.key.0, event = ?ev.kind, "connection ending");
                    // Answer the initiator's DREQ (or tell it we are gone).
                    c.send_disconnect();
                    self.pollers[c.poller].send(PollerMsg::Disconnect(c.key));
                }
            }
            CmEventKind::TimewaitExit => {}
            other => tracing::debug!(event = ?other, "RDMA/CM event ignored"),
        }
    }

    fn on_poller_event(&mut self, ev: PollerEvent) {
        match ev {
            PollerEvent::Disconnect { key } => self.disconnect(key),
            PollerEvent::Closed { key, stats } => {
                self.summary.stats += &*stats;
                if let Some(c) = self.conns.remove(key) {
                    tracing::info!(key = key.0, ?stats, "channel closed");
                    self.release_heap = true;
                    self.schedule_tick();
                    // Dropping `c.id` destroys the RDMA/CM id.
                    if self.devices.is_removing(&c.device) {
                        self.maybe_release(&c.device);
                    }
                }
            }
        }
    }

    /// Ends channel `key`: disconnects its connection (once) and tells its
    /// poller to drain and free it.
    pub fn disconnect(&mut self, key: ChannelKey) {
        let Some(c) = self.conns.by_key_mut(key) else {
            return;
        };
        c.send_disconnect();
        self.pollers[c.poller].send(PollerMsg::Disconnect(key));
    }

    /// The poller with the fewest channels (the lowest index on a tie), so
    /// that the channels of one login land on different threads: on
    /// soft-RoCE every posting thread also carries the queue pair's protocol
    /// work.
    pub fn least_loaded_poller(&self) -> usize {
        least_loaded(self.pollers.len(), self.conns.iter().map(|c| c.poller))
    }

    /// The poller for a new channel on `device`: the least loaded one, or,
    /// with `data_path.software_one_poller`, the one already running the
    /// channels of a software RDMA device (rxe, siw). On soft-RoCE each
    /// `ibv_post_send` runs rxe's protocol work in the calling thread; with
    /// the initiator's full RDMA READ depth and the device's channels on
    /// several pollers the Linux initiator's requests were sometimes
    /// acknowledged late, its retransmission made rxe 6.1 replay a memory
    /// registration and fail the queue pair (10 s stalls). With one READ in
    /// flight ([`super::SOFTWARE_READ_DEPTH`]) spreading the channels showed
    /// no such retry and doubled 1 MiB write bandwidth (docs/stalls.md), so
    /// one poller is a setting, off by default.
    pub fn poller_for(&self, device: &super::device::Device) -> usize {
        if device.attr().is_software() && self.opts.software.one_poller {
            if let Some(c) = self.conns.on_device(device.name()).next() {
                return c.poller;
            }
        }
        self.least_loaded_poller()
    }

    pub fn schedule_tick(&mut self) {
        if self.tick_at.is_none() {
            self.tick_at = Some(Instant::now() + TICK);
        }
    }

    /// Periodic work, only while something is pending: re-creating a lost
    /// listener, letting librdmacm release removed devices, looking for IB
    /// ports after a removal, giving closed channels' heap memory back.
    fn tick(&mut self) {
        self.tick_at = None;
        let now = Instant::now();
        if std::mem::take(&mut self.release_heap) {
            crate::os::release_free_heap();
        }
        if self.listeners.ip_lost() && !self.shutting_down() {
            self.relisten();
        }
        if self.release_devices(now) {
            self.listeners.rescan_from(now);
        }
        self.rescan_ib_ports(now);
        if (self.listeners.ip_lost() && !self.shutting_down())
            || self.devices.releasing()
            || self.listeners.rescanning()
        {
            self.schedule_tick();
        }
    }
}

/// Of `n` pollers, the one with the fewest of the `assigned` channels (each
/// given by its poller's index); the lowest index on a tie.
fn least_loaded(n: usize, assigned: impl Iterator<Item = usize>) -> usize {
    let mut load = vec![0usize; n.max(1)];
    for p in assigned {
        if let Some(l) = load.get_mut(p) {
            *l += 1;
        }
    }
    (0..load.len()).min_by_key(|&i| load[i]).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_go_to_the_least_loaded_poller() {
        assert_eq!(least_loaded(1, [].into_iter()), 0);
        assert_eq!(least_loaded(2, [].into_iter()), 0);
        // The second channel of a login goes to the other poller.
        assert_eq!(least_loaded(2, [0].into_iter()), 1);
        assert_eq!(least_loaded(4, [0, 1, 3].into_iter()), 2);
        // A poller freed by a logout is refilled first.
        assert_eq!(least_loaded(3, [0, 0, 2, 2].into_iter()), 1);
        assert_eq!(least_loaded(2, [1, 1, 0].into_iter()), 0);
        // Stale indices (never produced) are ignored, not a panic.
        assert_eq!(least_loaded(2, [0, 7].into_iter()), 1);
        assert_eq!(least_loaded(0, [].into_iter()), 0);
    }
}
